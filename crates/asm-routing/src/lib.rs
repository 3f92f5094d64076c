//! Provider routing for agent-session-manager.
//!
//! [`ProviderRouter`] is itself a [`ProviderAdapter`](asm_ports::ProviderAdapter): it holds named
//! adapters and serves each run through one of them, chosen by a [`RoutingPolicy`] (`prefer` or
//! `weighted`, `exclude`, `max_attempts`, `weights`, per-run [`RoutingOptions`] merged over the
//! router's policy), filtered by capability requirements ([`CapabilityRequirement`]), health
//! cooldown and a [`CircuitBreaker`] per adapter, with sticky sessions and failover on retryable
//! errors. The runtime does not know it is talking to a router: the run records the adapter that
//! actually served it.
//!
//! ```
//! use asm_core::{ErrorCode, Error, RunInput};
//! use asm_routing::{ProviderRouter, RoutingPolicy};
//! use asm_runtime::{RunOptions, SessionManager};
//! use asm_store_memory::InMemorySessionStore;
//! use asm_testkit::ScriptedAdapter;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
//! let router = ProviderRouter::builder()
//!     .adapter(ScriptedAdapter::new().named("claude").failing(Error::new(ErrorCode::ProviderRateLimited, "429")))
//!     .adapter(ScriptedAdapter::replying("Done.").named("codex"))
//!     .policy(RoutingPolicy::new().prefer(["claude", "codex"]))
//!     .build()?;
//! let manager = SessionManager::new(InMemorySessionStore::new(), router);
//! let once = manager.run_once(RunInput::user("Fix the failing test"), RunOptions::default()).await?;
//! assert_eq!(once.output().content, "Done.");
//! assert_eq!(once.result.run.provider.as_deref(), Some("codex"));
//! assert_eq!(once.result.run.metadata["routing"]["failover_from"], "claude");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod breaker;
mod capability;
mod clock;
mod error;
mod options;
mod policy;
mod router;

pub use breaker::{BreakerConfig, BreakerState, BreakerStatus, CircuitBreaker};
pub use capability::{CapabilityRequirement, matches_all};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{FailedAttempt, RoutingError};
pub use options::{ROUTING_OPTION, RoutingOptions};
pub use policy::{PolicyOverrides, RoutingPolicy, Strategy};
pub use router::{
    ActiveRunStatus, AdapterStatus, DEFAULT_ROUTER_NAME, FAILOVER_FROM, FAILOVER_REASON, HealthStatus, ProviderRouter,
    ProviderRouterBuilder, ROUTED_PROVIDER, ROUTING_ATTEMPT, ROUTING_CANDIDATES, ROUTING_METADATA, RouterStatus,
    StickyBinding,
};
