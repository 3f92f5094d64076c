#![allow(clippy::unwrap_used)]
//! The adapter contract suite, run against the fake CLI.

use std::sync::Arc;

use asm_provider_cli::{CliEnv, CliLimits};
use asm_provider_codex::CodexAdapter;
use asm_testkit::adapter_contract::{self as contract, AdapterContract, FakeCliInvocation};
use asm_testkit::fake_cli::{FakeScript, fixtures_dir};

const MAX_LINE: usize = 1 << 20;

fn make(inv: &FakeCliInvocation) -> Arc<dyn asm_ports::ProviderAdapter> {
    let mut env = CliEnv::minimal();
    for (k, v) in &inv.env {
        env = env.set(k, v);
    }
    Arc::new(
        CodexAdapter::builder()
            .cli_path(&inv.program)
            .model("gpt-5.5")
            .env(env)
            .limits(CliLimits::default().max_line_bytes(MAX_LINE))
            .build(),
    )
}

fn fixture_lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(fixtures_dir().join(format!("{name}.jsonl"))).unwrap().lines().map(str::to_owned).collect()
}

fn codex_contract() -> AdapterContract {
    // thread.started, turn.started, item.started + item.completed of a command: tool events but
    // no turn.completed. Codex prints nothing more on SIGINT and exits 1 (spec section 2).
    let prefix: Vec<String> = fixture_lines("codex_tool_call")[..4].to_vec();
    AdapterContract::new(make, FakeScript::fixture("codex_text"), "Hello from the fake model!")
        .tool(FakeScript::fixture("codex_tool_call"))
        .stream_prefix(prefix)
        .on_sigint(Vec::<String>::new(), 1)
        .max_line_bytes(MAX_LINE)
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            contract::$name(&codex_contract()).await;
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

/// The whole suite in one go, as `run_all` runs it for any adapter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all() {
    contract::run_all(&codex_contract()).await;
}
