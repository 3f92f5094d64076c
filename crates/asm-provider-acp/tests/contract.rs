#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared adapter contract suite (asm-testkit) against the ACP adapter, with the fake CLI in
//! JSON-RPC mode (`ASM_FAKE_CLI_JSONRPC`) as the agent: it replays the scripted agent side of
//! an ACP exchange, each response once its request has arrived.

use std::sync::Arc;
use std::time::Duration;

use asm_ports::ProviderAdapter;
use asm_provider_acp::AcpAdapter;
use asm_provider_cli::{CliEnv, CliLimits};
use asm_testkit::adapter_contract::{self as contract, AdapterContract, FakeCliInvocation};
use asm_testkit::fake_cli::{FakeScript, JSONRPC_ENV};

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":true},"authMethods":[]}}"#;
const NEW: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"sessionId":"sess-1"}}"#;
const END: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"stopReason":"end_turn"}}"#;

fn chunk(text: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"session/update","params":{{"sessionId":"sess-1","update":{{"sessionUpdate":"agent_message_chunk","content":{{"type":"text","text":"{text}"}}}}}}}}"#
    )
}

fn update(update: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","method":"session/update","params":{{"sessionId":"sess-1","update":{update}}}}}"#)
}

const MAX_LINE: usize = 64 * 1024;

fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
    let env = CliEnv::minimal().set(JSONRPC_ENV, "1").set_all(inv.env.clone());
    Arc::new(
        AcpAdapter::builder()
            .agent(&inv.program)
            .env(env)
            .cancel_grace(Duration::from_millis(300))
            .limits(
                CliLimits::default()
                    .graces(Duration::from_millis(500), Duration::from_millis(500))
                    .max_line_bytes(MAX_LINE),
            )
            .build(),
    )
}

fn acp_contract() -> AdapterContract {
    let text =
        FakeScript::new().lines([INIT.to_owned(), NEW.to_owned(), chunk("Hello"), chunk(" world"), END.to_owned()]);
    let tool = FakeScript::new().lines([
        INIT.to_owned(),
        NEW.to_owned(),
        update(r#"{"sessionUpdate":"tool_call","toolCallId":"t1","title":"List files","kind":"execute","status":"pending","rawInput":{"command":"ls"}}"#),
        update(r#"{"sessionUpdate":"tool_call_update","toolCallId":"t1","status":"completed","rawOutput":{"stdout":"a.txt"}}"#),
        chunk("Done"),
        END.to_owned(),
    ]);
    AdapterContract::new(make, text, "Hello world")
        .tool(tool)
        .stream_prefix([INIT.to_owned(), NEW.to_owned(), chunk("partial")])
        .max_line_bytes(MAX_LINE)
}

asm_testkit::cli_contract_tests!(acp_contract());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_suite() {
    contract::run_in_process_suite(&acp_contract()).await;
}
