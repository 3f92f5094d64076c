//! The agent in process, driven by the `agent-client-protocol` crate's client over an
//! in-memory pipe, on scripted adapters and real stores (memory, redb reopened).
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema::{
    CancelNotification, ContentBlock, ImageContent, InitializeRequest, LoadSessionRequest, NewSessionRequest,
    PromptRequest, StopReason, TextContent,
};
use agent_client_protocol::{ErrorCode as RpcCode, UntypedMessage};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use asm_acp_agent::AcpAgentServer;
use asm_core::{Error, ErrorCode, EventKind};
use asm_ports::{DynProviderAdapter, DynSessionStore, ProviderEvent};
use asm_runtime::SessionManager;
use asm_testkit::ScriptedAdapter;
use support::{Updates, drive, updates_only};

type Cx = agent_client_protocol::v1::ConnectionTo<agent_client_protocol::Agent>;

/// Serves `server` on one end of a pipe and runs `body` as the client on the other.
async fn connect<F, Fut, T>(server: AcpAgentServer, body: F) -> T
where
    F: FnOnce(Cx, Updates) -> Fut,
    Fut: Future<Output = Result<T, agent_client_protocol::Error>>,
{
    let (agent_end, client_end) = tokio::io::duplex(1 << 16);
    let serving = tokio::spawn(async move {
        let (read, write) = tokio::io::split(agent_end);
        server.serve(read, write).await
    });
    let (read, write) = tokio::io::split(client_end);
    let out = drive(write.compat_write(), read.compat(), body).await.expect("the client ran");
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("the agent ends with its input")
        .expect("the agent task did not panic")
        .expect("the agent ended cleanly");
    out
}

fn text(t: &str) -> ContentBlock {
    ContentBlock::Text(TextContent::new(t))
}

fn scripted_turn() -> ScriptedAdapter {
    ScriptedAdapter::replying("Hello there world")
        .emit(ProviderEvent::new(EventKind::ReasoningStreamed).data("content", "thinking").data("delta", "thinking"))
        .emit(ProviderEvent::new(EventKind::ReasoningCompleted).data("content", "thinking"))
        .emit(
            ProviderEvent::new(EventKind::ToolCallStarted)
                .data("tool_call_id", "toolu_1")
                .data("tool_name", "Bash")
                .data("tool_input", json!({"command": "ls"})),
        )
        .emit(
            ProviderEvent::new(EventKind::ToolCallCompleted)
                .data("tool_call_id", "toolu_1")
                .data("tool_name", "Bash")
                .data("tool_output", "a.txt"),
        )
        .emit(
            ProviderEvent::new(EventKind::ProviderRaw)
                .data("raw", "{}")
                .data("raw_type", "plan")
                .data("plan", json!([{"content": "step", "priority": "high", "status": "in_progress"}])),
        )
}

fn manager(store: DynSessionStore, adapter: ScriptedAdapter) -> SessionManager {
    SessionManager::from_shared(store, Arc::new(adapter) as DynProviderAdapter)
}

fn kinds(updates: &[Value]) -> Vec<String> {
    updates.iter().map(|u| u["sessionUpdate"].as_str().unwrap_or("?").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_new_prompt_then_load_is_exact_after_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acp.redb");
    let cwd = dir.path().to_path_buf();
    let adapter = scripted_turn();
    let store: DynSessionStore = Arc::new(asm_store_redb::RedbSessionStore::open(&path).unwrap());
    let server = AcpAgentServer::new(manager(store, adapter.clone()));

    let (session_id, live) = connect(server.clone(), {
        let cwd = cwd.clone();
        async move |cx: Cx, mut updates: Updates| {
            let init = cx.send_request(InitializeRequest::new(ProtocolVersion::V1)).block_task().await?;
            assert_eq!(init.protocol_version, ProtocolVersion::V1);
            assert!(init.agent_capabilities.load_session);
            assert!(init.agent_capabilities.prompt_capabilities.embedded_context);
            assert!(!init.agent_capabilities.prompt_capabilities.image);
            assert!(init.auth_methods.is_empty());
            let new = cx.send_request(NewSessionRequest::new(&cwd)).block_task().await?;
            let id = new.session_id.clone();
            let answer = cx.send_request(PromptRequest::new(id.clone(), vec![text("hi")])).block_task().await?;
            assert_eq!(answer.stop_reason, StopReason::EndTurn);
            Ok((id.to_string(), updates.drain()))
        }
    })
    .await;
    assert!(session_id.starts_with("ses_"), "{session_id}");
    let live_updates = updates_only(&live);
    assert_eq!(
        kinds(&live_updates),
        [
            "agent_message_chunk",
            "agent_message_chunk",
            "agent_message_chunk",
            "agent_thought_chunk",
            "tool_call",
            "tool_call_update",
            "plan"
        ],
        "{live_updates:#?}"
    );
    let reply: String = live_updates[..3].iter().map(|u| u["content"]["text"].as_str().unwrap()).collect();
    assert_eq!(reply, "Hello there world", "streamed chunks only, the final message not repeated");
    assert_eq!(live_updates[4]["kind"], "execute");
    assert_eq!(live_updates[4]["rawInput"], json!({"command": "ls"}));
    assert_eq!(live_updates[5]["status"], "completed");
    assert_eq!(live_updates[6]["entries"][0]["priority"], "high");
    let request = &adapter.requests()[0];
    assert_eq!(request.options.get("cwd").and_then(Value::as_str), cwd.to_str(), "the session's cwd is the run's");

    let load = |server: AcpAgentServer, id: String, cwd: std::path::PathBuf| {
        connect(server, async move |cx: Cx, mut updates: Updates| {
            cx.send_request(InitializeRequest::new(ProtocolVersion::V1)).block_task().await?;
            cx.send_request(LoadSessionRequest::new(id, &cwd)).block_task().await?;
            Ok(updates.drain())
        })
    };
    let loaded = load(server.clone(), session_id.clone(), cwd.clone()).await;
    assert_eq!(loaded[0]["update"]["sessionUpdate"], "user_message_chunk");
    assert_eq!(loaded[0]["update"]["content"]["text"], "hi");
    assert_eq!(&loaded[1..], &live[..], "a load replays exactly what the prompt streamed (metadata included)");

    drop(server);
    let reopened: DynSessionStore = Arc::new(asm_store_redb::RedbSessionStore::open(&path).unwrap());
    let again = load(AcpAgentServer::new(manager(reopened, ScriptedAdapter::new())), session_id, cwd).await;
    assert_eq!(again, loaded, "the same replay after reopening the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_running_prompt_and_the_queued_one() {
    let store: DynSessionStore = Arc::new(asm_store_memory::InMemorySessionStore::new());
    let adapter = ScriptedAdapter::new()
        .emit(ProviderEvent::new(EventKind::MessageStreamed).data("content", "working"))
        .hanging();
    let manager = manager(store, adapter);
    let server = AcpAgentServer::new(manager.clone());
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = cwd.path().to_path_buf();
    let id = connect(server, async move |cx: Cx, mut updates: Updates| {
        cx.send_request(InitializeRequest::new(ProtocolVersion::V1)).block_task().await?;
        let id = cx.send_request(NewSessionRequest::new(&cwd_path)).block_task().await?.session_id;
        let first = cx.send_request(PromptRequest::new(id.clone(), vec![text("one")]));
        let update = updates.next("the first prompt's chunk").await;
        assert_eq!(update["update"]["content"]["text"], "working");
        let second = cx.send_request(PromptRequest::new(id.clone(), vec![text("two")]));
        cx.send_notification(CancelNotification::new(id.clone()))?;
        assert_eq!(first.block_task().await?.stop_reason, StopReason::Cancelled);
        assert_eq!(second.block_task().await?.stop_reason, StopReason::Cancelled, "queued behind it, never run");
        // A prompt after the cancel runs again (and is cancelled by the end of the connection).
        let third = cx.send_request(PromptRequest::new(id.clone(), vec![text("three")]));
        updates.next("the third prompt's chunk").await;
        cx.send_notification(CancelNotification::new(id.clone()))?;
        assert_eq!(third.block_task().await?.stop_reason, StopReason::Cancelled);
        Ok(id.to_string())
    })
    .await;
    let runs = manager.session_runs(&asm_core::SessionId::parse(&id).unwrap()).await.unwrap();
    let statuses: Vec<_> = runs.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["cancelled", "cancelled"], "the queued prompt never became a run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_the_input_cancels_running_prompts() {
    let store: DynSessionStore = Arc::new(asm_store_memory::InMemorySessionStore::new());
    let adapter = ScriptedAdapter::new()
        .emit(ProviderEvent::new(EventKind::MessageStreamed).data("content", "working"))
        .hanging();
    let manager = manager(store, adapter);
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = cwd.path().to_path_buf();
    let id = connect(AcpAgentServer::new(manager.clone()), async move |cx: Cx, mut updates: Updates| {
        cx.send_request(InitializeRequest::new(ProtocolVersion::V1)).block_task().await?;
        let id = cx.send_request(NewSessionRequest::new(&cwd_path)).block_task().await?.session_id;
        let _pending = cx.send_request(PromptRequest::new(id.clone(), vec![text("one")]));
        updates.next("the chunk").await;
        Ok(id.to_string())
    })
    .await;
    let runs = manager.session_runs(&asm_core::SessionId::parse(&id).unwrap()).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status.as_str(), "cancelled", "the agent stopped the run when the client left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed() {
    let store: DynSessionStore = Arc::new(asm_store_memory::InMemorySessionStore::new());
    let failing = ScriptedAdapter::new().failing(Error::new(ErrorCode::ProviderRateLimited, "slow down"));
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = cwd.path().to_path_buf();
    connect(AcpAgentServer::new(manager(store, failing)), async move |cx: Cx, _updates: Updates| {
        cx.send_request(InitializeRequest::new(ProtocolVersion::V1)).block_task().await?;
        let unknown = cx.send_request(UntypedMessage::new("session/teleport", json!({}))?).block_task().await;
        assert_eq!(unknown.unwrap_err().code, RpcCode::METHOD_NOT_FOUND);

        let missing = "ses_0123456789abcdef0123456789abcdef";
        let error = cx.send_request(PromptRequest::new(missing, vec![text("x")])).block_task().await.unwrap_err();
        assert_eq!(error.code, RpcCode::from(-32002));
        assert!(error.message.contains(missing), "{}", error.message);
        let error = cx.send_request(LoadSessionRequest::new("nonsense", &cwd_path)).block_task().await.unwrap_err();
        assert_eq!(error.code, RpcCode::from(-32002));
        assert_eq!(error.data.unwrap()["sessionId"], "nonsense");

        let relative = cx.send_request(NewSessionRequest::new("relative/dir")).block_task().await.unwrap_err();
        assert_eq!(relative.code, RpcCode::INVALID_PARAMS);

        let id = cx.send_request(NewSessionRequest::new(&cwd_path)).block_task().await?.session_id;
        let image = ContentBlock::Image(ImageContent::new("AAAA", "image/png"));
        let error = cx.send_request(PromptRequest::new(id.clone(), vec![image])).block_task().await.unwrap_err();
        assert_eq!(error.code, RpcCode::INVALID_PARAMS);
        assert_eq!(error.data.unwrap()["reason"], "unsupported_content");

        let error = cx.send_request(PromptRequest::new(id.clone(), vec![text("x")])).block_task().await.unwrap_err();
        assert_eq!(error.code, RpcCode::INTERNAL_ERROR);
        let data = error.data.unwrap();
        assert_eq!(data["code"], "provider_rate_limited", "our error code travels in data");
        assert!(data["runId"].as_str().unwrap().starts_with("run_"));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_become_stop_reasons() {
    let store: DynSessionStore = Arc::new(asm_store_memory::InMemorySessionStore::new());
    let max_turns = ScriptedAdapter::new()
        .failing(Error::new(ErrorCode::ProviderError, "too many").with_detail("reason", "max_turns"));
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = cwd.path().to_path_buf();
    connect(AcpAgentServer::new(manager(store, max_turns)), async move |cx: Cx, _updates: Updates| {
        let id = cx.send_request(NewSessionRequest::new(&cwd_path)).block_task().await?.session_id;
        let answer = cx.send_request(PromptRequest::new(id, vec![text("x")])).block_task().await?;
        assert_eq!(answer.stop_reason, StopReason::MaxTurnRequests);
        Ok(())
    })
    .await;
}

/// Lines the crate's client would never send: answered on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_get_json_rpc_errors() {
    let store: DynSessionStore = Arc::new(asm_store_memory::InMemorySessionStore::new());
    let server = AcpAgentServer::new(manager(store, ScriptedAdapter::new()));
    let (agent_end, client_end) = tokio::io::duplex(1 << 16);
    let serving = tokio::spawn(async move {
        let (read, write) = tokio::io::split(agent_end);
        server.serve(read, write).await
    });
    let (read, mut write) = tokio::io::split(client_end);
    write
        .write_all(b"this is not json\n{\"id\":3,\"method\":\"initialize\"}\n{\"jsonrpc\":\"2.0\",\"id\":4}\n{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"initialize\",\"params\":{\"protocolVersion\":7}}\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(read).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let parse = next().await;
    assert_eq!((parse["id"].clone(), parse["error"]["code"].clone()), (Value::Null, json!(-32700)));
    let no_version = next().await;
    assert_eq!((no_version["id"].clone(), no_version["error"]["code"].clone()), (json!(3), json!(-32600)));
    let no_method = next().await;
    assert_eq!((no_method["id"].clone(), no_method["error"]["code"].clone()), (json!(4), json!(-32600)));
    let negotiated = next().await;
    assert_eq!(negotiated["result"]["protocolVersion"], 1, "an unsupported version is answered with ours");
    let _ = next;
    // Both halves of the client end must go for the agent to see the end of its input.
    drop(lines);
    drop(write);
    tokio::time::timeout(Duration::from_secs(10), serving).await.unwrap().unwrap().unwrap();
}
