#![allow(clippy::unwrap_used)]
//! The in-process half of the adapter contract, run by the scripted adapter: the checks any
//! adapter must pass, with no process involved.

use std::sync::Arc;

use asm_core::EventKind;
use asm_ports::{ExecuteOutcome, ProviderEvent};
use asm_testkit::adapter_contract::in_process::{self, InProcessContract};
use asm_testkit::{ScriptEnd, ScriptedAdapter};

fn contract() -> InProcessContract {
    let tool = ScriptedAdapter::new()
        .emit(
            ProviderEvent::new(EventKind::ToolCallStarted)
                .data("tool_call_id", "t1")
                .data("tool_name", "bash")
                .data("tool_input", serde_json::json!({"command": "ls"})),
        )
        .emit(
            ProviderEvent::new(EventKind::ToolCallCompleted)
                .data("tool_call_id", "t1")
                .data("tool_name", "bash")
                .data("tool_output", "a.txt"),
        )
        .end(ScriptEnd::Succeed(ExecuteOutcome::text("done")));
    InProcessContract::new(Arc::new(ScriptedAdapter::replying("Hello, world")), "Hello, world")
        .tool(Arc::new(tool))
        .streaming(Arc::new(ScriptedAdapter::replying("Hel").hanging()))
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            in_process::$name(&contract()).await;
        }
    )*};
}

contract_tests!(
    check_identity,
    check_text_run,
    check_tool_call_keys,
    check_cancel_before_start,
    check_cancel_mid_stream
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all() {
    in_process::run_all(&contract()).await;
}
