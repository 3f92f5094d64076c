#![allow(clippy::unwrap_used)]
//! The adapter contract suite, run against the fake CLI replaying the SYNTHETIC Amp
//! stream-json fixture (Amp cannot run offline, see `spec/provider-clis.md` section 3).

use std::sync::Arc;

use asm_provider_amp::{AmpAdapter, AmpBuilderExt};
use asm_provider_cli::{CliEnv, CliLimits};
use asm_testkit::adapter_contract::{self as contract, AdapterContract, FakeCliInvocation};
use asm_testkit::fake_cli::FakeScript;

const MAX_LINE: usize = 1 << 20;
const SYNTHETIC: &str = "amp_stream_json_SYNTHETIC_from_source";

fn make(inv: &FakeCliInvocation) -> Arc<dyn asm_ports::ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    Arc::new(
        AmpAdapter::builder()
            .cli_path(&inv.program)
            .env(env)
            .api_key("sgamp_fake_key")
            .limits(CliLimits::default().max_line_bytes(MAX_LINE))
            .build(),
    )
}

fn amp_contract() -> AdapterContract {
    let lines = FakeScript::fixture(SYNTHETIC).stdout_lines().unwrap();
    // init + the first assistant message (text, tool_use, usage): events but no result.
    let prefix = lines[..2].to_vec();
    // What Amp prints on SIGINT/SIGTERM in stream-json mode (error string from its source).
    let cancelled = r#"{"type":"result","subtype":"error_during_execution","duration_ms":10,"is_error":true,"num_turns":1,"error":"User cancelled (SIGINT/SIGTERM)","session_id":"T-00000000-0000-4000-8000-000000000001"}"#;
    AdapterContract::new(make, FakeScript::fixture(SYNTHETIC), "The command printed: hi.")
        .tool(FakeScript::fixture(SYNTHETIC))
        .stream_prefix(prefix)
        .on_sigint([cancelled], 1)
        .failing(FakeScript::fixture("amp_fake_server_websocket_refused"))
        .max_line_bytes(MAX_LINE)
}

asm_testkit::cli_contract_tests!(amp_contract());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes() {
    contract::run_all(&amp_contract()).await;
}
