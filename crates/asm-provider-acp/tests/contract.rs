#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared adapter contract suite (asm-testkit) against the ACP adapter, with the fake CLI in
//! JSON-RPC mode (`ASM_FAKE_CLI_JSONRPC`) as the agent: it replays the scripted agent side of
//! an ACP exchange, each response once its request has arrived.

use std::sync::Arc;
use std::time::Duration;

use asm_ports::ProviderAdapter;
use asm_provider_acp::AcpAdapter;
use asm_provider_cli::{CliEnv, CliLimits};
use asm_testkit::adapter_contract::in_process::{self, InProcessContract};
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
    let mut env = CliEnv::minimal().set(JSONRPC_ENV, "1");
    for (k, v) in &inv.env {
        env = env.set(k, v);
    }
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

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            contract::$name(&acp_contract()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_suite() {
    let c = acp_contract();
    let text = contract::prepare(&c, &c.text);
    let tool = contract::prepare(&c, &c.tool);
    let hanging = FakeScript::new().lines(c.stream_prefix.clone()).hang_after(c.stream_prefix.len());
    let streaming = contract::prepare(&c, &hanging);
    let ip = InProcessContract::new(Arc::clone(&text.adapter), "Hello world")
        .tool(Arc::clone(&tool.adapter))
        .streaming(Arc::clone(&streaming.adapter));
    in_process::run_all(&ip).await;
}
