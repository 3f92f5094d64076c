#![allow(clippy::unwrap_used)]
//! The adapter contract suite, run against the fake CLI.

use std::sync::Arc;

use asm_provider_cli::{CliEnv, CliLimits};
use asm_provider_codex::CodexAdapter;
use asm_testkit::adapter_contract::{self as contract, AdapterContract, FakeCliInvocation};
use asm_testkit::fake_cli::FakeScript;

const MAX_LINE: usize = 1 << 20;

fn make(inv: &FakeCliInvocation) -> Arc<dyn asm_ports::ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    Arc::new(
        CodexAdapter::builder()
            .cli_path(&inv.program)
            .model("gpt-5.5")
            .env(env)
            .limits(CliLimits::default().max_line_bytes(MAX_LINE))
            .build(),
    )
}

fn codex_contract() -> AdapterContract {
    // thread.started, turn.started, item.started + item.completed of a command: tool events but
    // no turn.completed. Codex prints nothing more on SIGINT and exits 1 (spec section 2).
    let prefix: Vec<String> = FakeScript::fixture("codex_tool_call").stdout_lines().unwrap()[..4].to_vec();
    AdapterContract::new(make, FakeScript::fixture("codex_text"), "Hello from the fake model!")
        .tool(FakeScript::fixture("codex_tool_call"))
        .stream_prefix(prefix)
        .on_sigint(Vec::<String>::new(), 1)
        .max_line_bytes(MAX_LINE)
}

asm_testkit::cli_contract_tests!(codex_contract());

/// The whole suite in one go, as `run_all` runs it for any adapter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all() {
    contract::run_all(&codex_contract()).await;
}
