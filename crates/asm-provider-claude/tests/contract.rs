#![allow(clippy::unwrap_used)]
//! The adapter contract suite, run against the fake CLI.

use std::sync::Arc;

use asm_provider_claude::ClaudeAdapter;
use asm_provider_cli::{CliEnv, CliLimits};
use asm_testkit::adapter_contract::{AdapterContract, FakeCliInvocation};
use asm_testkit::fake_cli::FakeScript;

const MAX_LINE: usize = 1 << 20;

fn make(inv: &FakeCliInvocation) -> Arc<dyn asm_ports::ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    Arc::new(
        ClaudeAdapter::builder()
            .cli_path(&inv.program)
            .env(env)
            .limits(CliLimits::default().max_line_bytes(MAX_LINE))
            .build(),
    )
}

fn claude_contract() -> AdapterContract {
    let sigint = FakeScript::fixture("claude_sigint_midstream").stdout_lines().unwrap();
    // Up to and including the third text delta, as in the captured SIGINT run.
    let prefix: Vec<String> = sigint[..7].to_vec();
    let after: Vec<String> = sigint[7..].to_vec();
    AdapterContract::new(make, FakeScript::fixture("claude_text"), "Hello from the fake model!")
        .tool(FakeScript::fixture("claude_tool_use"))
        .stream_prefix(prefix)
        .on_sigint(after, 0)
        .max_line_bytes(MAX_LINE)
}

asm_testkit::cli_contract_tests!(claude_contract());
