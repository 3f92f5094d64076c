//! Policy enforcement with `PolicyHook`: a stacked policy compiled into the CLI's flags, a
//! denied tool that cancels the run, a budget that only warns, a duration limit that stops a
//! silent provider, and the cost every run record carries.
//!
//! `cargo run -p agent-session-manager --features store-memory,runtime,policy --example policy_enforcement`
//!
//! Offline, a scripted adapter named `claude` plays the provider. Against the real Claude Code
//! CLI, build the manager with `ClaudeAdapter::builder().build()` instead (feature
//! `provider-claude`, `claude` on PATH and `ANTHROPIC_API_KEY` set): the same hook then turns
//! the policy into `--disallowedTools`, `--allowedTools`, `--max-turns` and the permission
//! mode, and the reactive checks below still apply to what the CLI reports.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use agent_session_manager::policy::CliTarget;
use agent_session_manager::prelude::*;
use asm_testkit::{ScriptEnd, ScriptedAdapter};

async fn run(adapter: ScriptedAdapter, hook: PolicyHook) -> Result<(ScriptedAdapter, Result<RunResult>, Run)> {
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone());
    let session = manager.start_session(NewSession::new("policy-demo")).await?;
    manager.activate_session(&session.id).await?;
    let run = manager.start_run(&session.id, RunInput::user("Fix the failing test"), RunOptions::default()).await?;
    let result = manager.execute_run(&run.id, RunOptions::new().hook(hook)).await;
    let stored = manager.get_run(&run.id).await?;
    Ok((adapter, result, stored))
}

fn tool(id: &str, name: &str) -> ProviderEvent {
    ProviderEvent::new(EventKind::ToolCallStarted).data("tool_call_id", id).data("tool_name", name)
}

fn usage(input: u64, output: u64) -> ProviderEvent {
    ProviderEvent::new(EventKind::TokenUsageUpdated)
        .data("input_tokens", input)
        .data("output_tokens", output)
        .data("usage_mode", "cumulative")
        .data("model", "claude-sonnet-4-5")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    // An organisation policy and a task policy, stacked: the strictest action (cancel) wins,
    // limits are replaced per kind, every tool rule applies.
    let org = Policy::builder("org").deny(["WebFetch"]).limit(Limit::MaxCostUsd(1.0)).build()?;
    let task = Policy::builder("task")
        .allow(["Read", "Grep", "Edit"])
        .limit(Limit::MaxToolCalls(8))
        .on_violation(ViolationAction::Warn)
        .build()?;
    let policy = Policy::stack([org, task]);
    println!("policy {:?}: action {}", policy.name(), policy.on_violation());

    // 1. A denied tool: the provider is stopped and the run fails with policy_violation.
    let adapter = ScriptedAdapter::new()
        .named("claude")
        .emit(usage(1_200, 80))
        .emit(tool("toolu_1", "Bash"))
        .end(ScriptEnd::Succeed(ExecuteOutcome::text("done")));
    let (adapter, result, stored) = run(adapter, PolicyHook::checked(policy.clone())?).await?;
    let options = &adapter.requests()[0].options;
    println!("1. compiled for claude: {options:?}");
    let error = result.expect_err("the denied tool cancels the run");
    println!(
        "   run {}: {} ({}), cost ${:.6}",
        stored.status,
        error.code(),
        error.message(),
        stored.cost_usd.unwrap_or(0.0)
    );

    // 2. A warn policy over its token budget: the run succeeds and carries the verdict.
    let warn = Policy::builder("soft-budget")
        .limit(Limit::MaxTotalTokens(1_000))
        .on_violation(ViolationAction::Warn)
        .build()?;
    let adapter = ScriptedAdapter::new()
        .named("codex")
        .emit(usage(900, 50))
        .emit(usage(1_500, 90))
        .end(ScriptEnd::Succeed(ExecuteOutcome::text("done")));
    let (_, result, stored) = run(adapter, PolicyHook::new(warn)).await?;
    let result = result?;
    let verdict = &result.run.output.as_ref().map(|o| o.extra["policy"].clone()).unwrap_or_default();
    println!("2. run {} with verdict {verdict}", stored.status);
    println!("   usage as measured (cumulative reports, not summed): {}", stored.metadata["policy"]["usage"]);

    // 3. A provider that goes silent: the duration timer stops it.
    let limit = Policy::builder("deadline").limit(Limit::MaxDurationMs(200)).build()?;
    let adapter = ScriptedAdapter::new().named("amp").hanging();
    let started = std::time::Instant::now();
    let (_, result, stored) = run(adapter, PolicyHook::new(limit).target(CliTarget::Amp)).await?;
    let error = result.expect_err("the timer stops the run");
    println!(
        "3. silent provider stopped after {:?}: run {} with {}",
        started.elapsed().min(Duration::from_secs(60)),
        stored.status,
        error.code()
    );
    Ok(())
}
