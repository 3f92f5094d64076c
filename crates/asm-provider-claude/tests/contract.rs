#![allow(clippy::unwrap_used)]
//! The adapter contract suite, run against the fake CLI.

use std::sync::Arc;

use asm_provider_claude::ClaudeAdapter;
use asm_provider_cli::{CliEnv, CliLimits};
use asm_testkit::adapter_contract::{self as contract, AdapterContract, FakeCliInvocation};
use asm_testkit::fake_cli::{FakeScript, fixtures_dir};

const MAX_LINE: usize = 1 << 20;

fn make(inv: &FakeCliInvocation) -> Arc<dyn asm_ports::ProviderAdapter> {
    let mut env = CliEnv::minimal();
    for (k, v) in &inv.env {
        env = env.set(k, v);
    }
    Arc::new(
        ClaudeAdapter::builder()
            .cli_path(&inv.program)
            .env(env)
            .limits(CliLimits::default().max_line_bytes(MAX_LINE))
            .build(),
    )
}

fn fixture_lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(fixtures_dir().join(format!("{name}.jsonl"))).unwrap().lines().map(str::to_owned).collect()
}

fn claude_contract() -> AdapterContract {
    let sigint = fixture_lines("claude_sigint_midstream");
    // Up to and including the third text delta, as in the captured SIGINT run.
    let prefix: Vec<String> = sigint[..7].to_vec();
    let after: Vec<String> = sigint[7..].to_vec();
    AdapterContract::new(make, FakeScript::fixture("claude_text"), "Hello from the fake model!")
        .tool(FakeScript::fixture("claude_tool_use"))
        .stream_prefix(prefix)
        .on_sigint(after, 0)
        .max_line_bytes(MAX_LINE)
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            contract::$name(&claude_contract()).await;
        }
    )*};
}

contract_tests!(
    check_text_run,
    check_tool_call_keys,
    check_cancel_before_start,
    check_run_options_are_validated,
    check_unknown_lines_are_raw_events,
    check_raw_lines_never_change_the_transcript,
    check_cancel_mid_stream,
    check_cancel_escalates,
    check_dropped_future_leaves_no_child,
    check_nonzero_exit,
    check_stderr_is_truncated,
    check_eof_without_result,
    check_killed_by_signal,
    check_deadline,
    check_oversized_line,
    check_validate_config,
);
