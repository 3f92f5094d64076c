//! One adapter over several: a `ProviderRouter` prefers "claude", which answers with a rate
//! limit (429), fails over to "codex", and the run records codex as its provider. Runs offline
//! with scripted adapters.
//!
//! `cargo run --example provider_routing --features routing`
//!
//! Against the real CLIs (`claude` and `codex` on PATH, logged in), build the router from the
//! real adapters instead, with `--features routing,provider-claude,provider-codex`:
//!
//! ```text
//! use agent_session_manager::prelude::*;
//! let router = ProviderRouter::builder()
//!     .adapter(ClaudeAdapter::builder().model("claude-sonnet-4-5").build())
//!     .adapter(CodexAdapter::builder().build())
//!     .policy(RoutingPolicy::new().prefer(["claude", "codex"]))
//!     .build()?;
//! ```
//!
//! A real rate limit, overload or timeout from Claude then fails the run over to Codex the same
//! way, and the next runs skip Claude for the health cooldown.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use agent_session_manager::prelude::*;
use agent_session_manager::routing::{BreakerConfig, ROUTING_OPTION};
use asm_testkit::ScriptedAdapter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let claude = ScriptedAdapter::new()
        .named("claude")
        .failing(Error::new(ErrorCode::ProviderRateLimited, "429 Too Many Requests"));
    let codex = ScriptedAdapter::replying("All tests pass now.").named("codex");

    let router = ProviderRouter::builder()
        .adapter(claude)
        .adapter(codex)
        .policy(RoutingPolicy::new().prefer(["claude", "codex"]).max_attempts(2))
        .health_cooldown(Duration::from_secs(30))
        .circuit_breaker(BreakerConfig::default().failure_threshold(3))
        .build()?;
    let manager = SessionManager::new(InMemorySessionStore::new(), router.clone());

    let session = manager.start_session(NewSession::new("router-demo")).await?;
    manager.activate_session(&session.id).await?;
    let run = manager.start_run(&session.id, RunInput::user("Fix the failing test"), RunOptions::default()).await?;
    // Per-run routing options ride in the adapter option `routing`; here: make the session sticky.
    let options = RunOptions::new()
        .continuation(Continuation::Auto)
        .adapter_option(ROUTING_OPTION, RoutingOptions::new().sticky_session_id(session.id.as_str()).to_json());
    let result = manager.execute_run(&run.id, options).await?;

    println!("output:    {}", result.output().content);
    println!("served by: {}", result.run.provider.as_deref().unwrap_or("-"));
    println!("routing:   {}", result.run.metadata["routing"]);
    for event in manager.session_events(&session.id, EventQuery::new().run(run.id.clone())).await? {
        let routed = event.metadata.get("routed_provider").map(ToString::to_string).unwrap_or_default();
        println!("  #{:<2} {:<22} {}", event.sequence(), event.kind.to_string(), routed);
    }
    let status = router.status();
    println!("status:    {}", serde_json::to_string_pretty(&status).unwrap_or_default());

    assert_eq!(result.run.provider.as_deref(), Some("codex"));
    assert_eq!(result.run.metadata["routing"]["failover_from"], "claude");
    assert_eq!(result.run.metadata["routing"]["failover_reason"], "provider_rate_limited");
    Ok(())
}
