//! `GET /v1/approvals` and `POST /v1/approvals/{id}` against a real server on 127.0.0.1
//! (memory store, the scripted adapter asking for approval).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::json;

use asm_http::ApiServer;
use asm_runtime::ApprovalQueue;
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;
use common::{Running, SseClient, await_terminal, json};

const WAIT: Duration = Duration::from_secs(20);

fn asking() -> ScriptedAdapter {
    ScriptedAdapter::new().ask_approval("Bash", "call_1", json!({"command": "make deploy"}))
}

async fn submit(server: &Running) -> (String, String) {
    let (status, session) = json(server.addr, "POST", "/v1/sessions", Some(json!({"agent_id": "a"}))).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let (status, accepted) =
        json(server.addr, "POST", &format!("/v1/sessions/{id}/runs"), Some(json!({"input": "deploy"}))).await;
    assert_eq!(status, 202, "{accepted}");
    (id, accepted["run_id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_answer_and_the_error_answers() {
    let queue = ApprovalQueue::new();
    let server = Running::start(
        ApiServer::builder().store(InMemorySessionStore::new()).adapter("scripted", asking()).approvals(queue.clone()),
    )
    .await;
    let (session, run) = submit(&server).await;
    // Follow the session's approval events as a client would.
    let mut stream = SseClient::connect(
        server.addr,
        &format!("/v1/sessions/{session}/events/stream?kind=tool_approval_requested"),
        None,
    )
    .await;
    let frame = stream.next_event(WAIT).await;
    assert_eq!(frame.event.as_deref(), Some("tool_approval_requested"));

    let (status, list) = json(server.addr, "GET", "/v1/approvals", None).await;
    assert_eq!(status, 200, "{list}");
    let approvals = list["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1);
    let approval = &approvals[0];
    assert_eq!(approval["session_id"], session.as_str());
    assert_eq!(approval["run_id"], run.as_str());
    assert_eq!(approval["tool_name"], "Bash");
    assert_eq!(approval["tool_call_id"], "call_1");
    assert_eq!(approval["tool_input"], json!({"command": "make deploy"}));
    assert_eq!(approval["provider"], "scripted");
    let id = approval["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("apr_"));

    let (_, filtered) = json(server.addr, "GET", &format!("/v1/approvals?session_id={session}"), None).await;
    assert_eq!(filtered["approvals"].as_array().unwrap().len(), 1);
    let other = asm_core::SessionId::new();
    let (_, none) = json(server.addr, "GET", &format!("/v1/approvals?session_id={other}"), None).await;
    assert!(none["approvals"].as_array().unwrap().is_empty());
    let (status, bad) = json(server.addr, "GET", "/v1/approvals?session_id=nope", None).await;
    assert_eq!(status, 400, "{bad}");

    let (status, run_view) = json(server.addr, "GET", &format!("/v1/runs/{run}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(run_view["status"], "running", "the run waits running");

    let (status, bad) =
        json(server.addr, "POST", &format!("/v1/approvals/{id}"), Some(json!({"decision": "maybe"}))).await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("validation_error")), "{bad}");
    let (status, bad) =
        json(server.addr, "POST", &format!("/v1/approvals/{id}"), Some(json!({"verdict": "yes"}))).await;
    assert_eq!(status, 400, "{bad}");

    let (status, answered) = json(
        server.addr,
        "POST",
        &format!("/v1/approvals/{id}"),
        Some(json!({"decision": "deny_once", "reason": "not on a Friday"})),
    )
    .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered, json!({"id": id, "decision": "deny_once", "decided_by": "http", "reason": "not on a Friday"}));

    let (status, again) =
        json(server.addr, "POST", &format!("/v1/approvals/{id}"), Some(json!({"decision": "allow_once"}))).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["code"], "invalid_transition");
    assert_eq!(again["details"]["reason"], "already_answered");
    assert_eq!(again["details"]["decision"], "deny_once");

    let unknown = asm_core::ApprovalId::new();
    let (status, missing) =
        json(server.addr, "POST", &format!("/v1/approvals/{unknown}"), Some(json!({"decision": "allow_once"}))).await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("not_found")), "{missing}");
    let (status, _) =
        json(server.addr, "POST", "/v1/approvals/not-an-id", Some(json!({"decision": "allow_once"}))).await;
    assert_eq!(status, 404);

    let run_view = await_terminal(server.addr, &session, &run).await;
    assert_eq!(run_view["status"], "completed");
    let (_, events) =
        json(server.addr, "GET", &format!("/v1/sessions/{session}/events?kind=tool_approval_denied"), None).await;
    let denied = &events.as_array().unwrap()[0];
    assert_eq!(denied["data"]["decided_by"], "http");
    assert_eq!(denied["data"]["reason"], "not on a Friday");
    let (_, list) = json(server.addr, "GET", "/v1/approvals", None).await;
    assert!(list["approvals"].as_array().unwrap().is_empty());
    drop(queue);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_timed_out_is_a_conflict_and_approvals_off_is_503() {
    let queue = ApprovalQueue::new();
    let server = Running::start(
        ApiServer::builder()
            .store(InMemorySessionStore::new())
            .adapter("scripted", asking())
            .approvals(queue.clone())
            .approval_timeout(Duration::from_millis(100)),
    )
    .await;
    let (session, run) = submit(&server).await;
    let run_view = await_terminal(server.addr, &session, &run).await;
    assert_eq!(run_view["status"], "completed");
    let (_, events) =
        json(server.addr, "GET", &format!("/v1/sessions/{session}/events?kind=tool_approval_denied"), None).await;
    let denied = &events.as_array().unwrap()[0];
    assert_eq!(denied["data"]["decided_by"], "timeout");
    let id = denied["data"]["approval_id"].as_str().unwrap();
    let (status, late) =
        json(server.addr, "POST", &format!("/v1/approvals/{id}"), Some(json!({"decision": "allow_once"}))).await;
    assert_eq!(status, 409, "{late}");
    assert_eq!(late["details"]["reason"], "no_longer_waiting");
    server.stop().await;

    let off =
        Running::start(ApiServer::builder().store(InMemorySessionStore::new()).adapter("scripted", asking())).await;
    let (status, body) = json(off.addr, "GET", "/v1/approvals", None).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("dependency_not_available")), "{body}");
    // Without approvals the run is not asked about: the adapter's own answer holds.
    let (session, run) = submit(&off).await;
    assert_eq!(await_terminal(off.addr, &session, &run).await["status"], "completed");
    off.stop().await;
}
