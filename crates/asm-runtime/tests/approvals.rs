//! Live tool approvals through the runtime: the per-run gate (events, timeout, cancellation,
//! session memory of `*_always` decisions) and the `ApprovalQueue` an application answers.
//! Memory store, the scripted adapter asking for approval like a provider that asks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::json;

use asm_core::{Error, ErrorCode, EventKind, Result, RunInput, RunStatus, SessionId, StoredEvent};
use asm_ports::{
    ApprovalDecision, ApprovalHandler, ApprovalRequest, ApprovalVerdict, DynSessionStore, EventQuery, SessionStore,
};
use asm_runtime::{AnswerError, ApprovalQueue, NewSession, RunOptions, ServerConfig, SessionManager, SessionServer};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;

mod common;
use common::spawn_execute_run;

/// How long anything a test waits for may take.
const WAIT: Duration = Duration::from_secs(10);

fn asking(tool: &str) -> ScriptedAdapter {
    ScriptedAdapter::new().ask_approval(tool, "call_1", json!({"command": "cargo test"})).emit(
        asm_ports::ProviderEvent::new(EventKind::MessageReceived).data("role", "assistant").data("content", "done"),
    )
}

async fn new_session(manager: &SessionManager) -> SessionId {
    let session = manager.start_session(NewSession::new("agent")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    session.id
}

async fn pending(queue: &ApprovalQueue, session: &SessionId) -> ApprovalRequest {
    tokio::time::timeout(WAIT, queue.wait_for_pending(Some(session))).await.expect("a request was queued in time")
}

async fn events(store: &DynSessionStore, session: &SessionId) -> Vec<StoredEvent> {
    store.get_events(session, &EventQuery::new()).await.unwrap()
}

fn of_kind(events: &[StoredEvent], kind: EventKind) -> Vec<&StoredEvent> {
    events.iter().filter(|e| e.kind == kind).collect()
}

fn kinds(events: &[StoredEvent]) -> Vec<EventKind> {
    events.iter().filter(|e| e.run_id.is_some()).map(|e| e.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_waits_while_the_run_stays_running_then_the_answer_goes_through() {
    let adapter = asking("Bash");
    let queue = ApprovalQueue::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone()).approvals(queue.clone());
    let session = new_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("test it"), RunOptions::new()).await.unwrap();
    let options = {
        let seen = seen.clone();
        RunOptions::new().on_event(move |e| seen.lock().push(e.kind))
    };
    let execution = spawn_execute_run(&manager, &run.id, options);

    let request = pending(&queue, &session).await;
    assert_eq!(request.tool_name, "Bash");
    assert_eq!(request.tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(request.tool_input, json!({"command": "cargo test"}));
    assert_eq!(request.run_id, run.id);
    assert_eq!(request.provider, "scripted");
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Running, "the run waits running");
    assert_eq!(queue.pending().len(), 1);
    assert!(queue.pending_for(&SessionId::new()).is_empty());
    let asked = events(manager.store(), &session).await;
    let requested = of_kind(&asked, EventKind::ToolApprovalRequested);
    assert_eq!(requested.len(), 1, "recorded before the handler is asked");
    assert_eq!(requested[0].data["approval_id"], request.id.as_str());
    assert_eq!(requested[0].data["tool_name"], "Bash");
    assert_eq!(requested[0].data["tool_input"], json!({"command": "cargo test"}));

    queue.answer(&request.id, ApprovalVerdict::new(ApprovalDecision::AllowOnce, "alice").reason("looks safe")).unwrap();
    let result = tokio::time::timeout(WAIT, execution).await.unwrap().unwrap().unwrap();
    assert_eq!(result.run.status, RunStatus::Completed);
    assert!(queue.pending().is_empty());
    assert_eq!(adapter.verdicts()[0].decided_by, "alice");

    let all = events(manager.store(), &session).await;
    assert_eq!(
        kinds(&all),
        [
            EventKind::RunStarted,
            EventKind::MessageSent,
            EventKind::ToolApprovalRequested,
            EventKind::ToolApprovalGranted,
            EventKind::ToolCallStarted,
            EventKind::ToolCallCompleted,
            EventKind::MessageReceived,
            EventKind::RunCompleted,
        ]
    );
    for (i, event) in all.iter().enumerate() {
        assert_eq!(event.sequence, Some(i as u64 + 1), "sequenced like any run event");
    }
    let granted = of_kind(&all, EventKind::ToolApprovalGranted)[0];
    assert_eq!(granted.data["decision"], "allow_once");
    assert_eq!(granted.data["decided_by"], "alice");
    assert_eq!(granted.data["reason"], "looks safe");
    assert_eq!(granted.data["tool_call_id"], "call_1");
    assert_eq!(granted.data["approval_id"], request.id.as_str());
    assert!(granted.data["wait_ms"].as_u64().is_some());
    assert!(seen.lock().contains(&EventKind::ToolApprovalGranted), "the run's callback sees them");

    assert!(matches!(
        queue.answer(&request.id, ApprovalVerdict::new(ApprovalDecision::DenyOnce, "bob")),
        Err(AnswerError::AlreadyAnswered { .. })
    ));
    let unknown = asm_core::ApprovalId::new();
    assert_eq!(
        queue.answer(&unknown, ApprovalVerdict::new(ApprovalDecision::DenyOnce, "bob")),
        Err(AnswerError::Unknown(unknown.clone()))
    );
    assert_eq!(Error::from(AnswerError::Unknown(unknown)).code(), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_in_time_is_a_denial_and_the_request_leaves_the_queue() {
    let adapter = asking("Bash");
    let queue = ApprovalQueue::new();
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone())
        .approvals(queue.clone())
        .approval_timeout(Duration::from_millis(100));
    let session = new_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::new()).await.unwrap();
    let result = tokio::time::timeout(WAIT, manager.execute_run(&run.id, RunOptions::new())).await.unwrap().unwrap();
    assert_eq!(result.run.status, RunStatus::Completed, "a denied tool call does not end the run");
    assert!(queue.pending().is_empty(), "the waiter went away");
    let verdict = &adapter.verdicts()[0];
    assert_eq!((verdict.decision, verdict.decided_by.as_str()), (ApprovalDecision::DenyOnce, "timeout"));

    let all = events(manager.store(), &session).await;
    let denied = of_kind(&all, EventKind::ToolApprovalDenied);
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].data["decided_by"], "timeout");
    assert_eq!(denied[0].data["decision"], "deny_once");
    assert!(denied[0].data["wait_ms"].as_u64().unwrap() >= 100);
    let id = asm_core::ApprovalId::parse(denied[0].data["approval_id"].as_str().unwrap()).unwrap();
    assert_eq!(
        queue.answer(&id, ApprovalVerdict::new(ApprovalDecision::AllowOnce, "late")),
        Err(AnswerError::NoLongerWaiting(id))
    );
    assert!(of_kind(&all, EventKind::ToolCallStarted).is_empty(), "the tool never ran");
    assert_eq!(of_kind(&all, EventKind::ToolCallFailed).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_while_waiting_denies_and_cancels_the_run() {
    let queue = ApprovalQueue::new();
    let manager = SessionManager::new(InMemorySessionStore::new(), asking("Bash")).approvals(queue.clone());
    let session = new_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::new()).await.unwrap();
    let execution = spawn_execute_run(&manager, &run.id, RunOptions::new());
    let request = pending(&queue, &session).await;
    manager.cancel_run(&run.id).await.unwrap();
    let error = tokio::time::timeout(WAIT, execution).await.unwrap().unwrap().unwrap_err();
    assert_eq!(error.code(), ErrorCode::Cancelled);
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Cancelled);
    assert!(queue.pending().is_empty());
    assert_eq!(
        queue.answer(&request.id, ApprovalVerdict::new(ApprovalDecision::AllowOnce, "late")),
        Err(AnswerError::NoLongerWaiting(request.id.clone()))
    );
    let all = events(manager.store(), &session).await;
    assert_eq!(
        kinds(&all),
        [
            EventKind::RunStarted,
            EventKind::MessageSent,
            EventKind::ToolApprovalRequested,
            EventKind::ToolApprovalDenied,
            EventKind::RunCancelled,
        ]
    );
    let denied = of_kind(&all, EventKind::ToolApprovalDenied)[0];
    assert_eq!(denied.data["decided_by"], "cancelled");
    assert_eq!(denied.data["approval_id"], request.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_decisions_hold_for_later_runs_of_the_session_and_survive_a_new_manager() {
    let adapter = ScriptedAdapter::new()
        .ask_approval("Bash", "call_1", json!({}))
        .ask_approval("Edit", "call_2", json!({}))
        .ask_approval("Bash", "call_3", json!({}));
    let queue = ApprovalQueue::new();
    let store: DynSessionStore = Arc::new(InMemorySessionStore::new());
    let manager = SessionManager::from_shared(store.clone(), Arc::new(adapter.clone())).approvals(queue.clone());
    let session = new_session(&manager).await;

    // Run 1: Bash allowed always, Edit denied always; the second Bash is not asked.
    let run = manager.start_run(&session, RunInput::user("1"), RunOptions::new()).await.unwrap();
    let execution = spawn_execute_run(&manager, &run.id, RunOptions::new());
    let bash = pending(&queue, &session).await;
    assert_eq!(bash.tool_name, "Bash");
    queue.answer(&bash.id, ApprovalVerdict::new(ApprovalDecision::AllowAlways, "alice")).unwrap();
    let edit = pending(&queue, &session).await;
    assert_eq!(edit.tool_name, "Edit");
    queue.answer(&edit.id, ApprovalVerdict::new(ApprovalDecision::DenyAlways, "alice")).unwrap();
    tokio::time::timeout(WAIT, execution).await.unwrap().unwrap().unwrap();
    let by: Vec<_> = adapter.verdicts().iter().map(|v| (v.decision, v.decided_by.clone())).collect();
    assert_eq!(
        by,
        [
            (ApprovalDecision::AllowAlways, "alice".to_owned()),
            (ApprovalDecision::DenyAlways, "alice".to_owned()),
            (ApprovalDecision::AllowAlways, "session_memory".to_owned()),
        ]
    );

    // Run 2, through a fresh manager over the same store (a restarted process): nobody asked.
    let restarted = SessionManager::from_shared(store.clone(), Arc::new(adapter.clone())).approvals(queue.clone());
    let run = restarted.start_run(&session, RunInput::user("2"), RunOptions::new()).await.unwrap();
    tokio::time::timeout(WAIT, restarted.execute_run(&run.id, RunOptions::new())).await.unwrap().unwrap();
    let later: Vec<_> = adapter.verdicts()[3..].iter().map(|v| (v.decision, v.decided_by.clone())).collect();
    assert_eq!(
        later,
        [
            (ApprovalDecision::AllowAlways, "session_memory".to_owned()),
            (ApprovalDecision::DenyAlways, "session_memory".to_owned()),
            (ApprovalDecision::AllowAlways, "session_memory".to_owned()),
        ]
    );
    let run_events = store.get_events(&session, &EventQuery::new().run(run.id.clone())).await.unwrap();
    assert!(of_kind(&run_events, EventKind::ToolApprovalRequested).is_empty(), "remembered: nobody asked");
    let answered = of_kind(&run_events, EventKind::ToolApprovalGranted);
    assert_eq!(answered.len(), 2);
    assert!(answered.iter().all(|e| e.data["decided_by"] == "session_memory" && e.data["wait_ms"] == 0));

    // Another session of the same manager is asked again.
    let other = new_session(&manager).await;
    let run = manager.start_run(&other, RunInput::user("3"), RunOptions::new()).await.unwrap();
    let execution = spawn_execute_run(&manager, &run.id, RunOptions::new());
    let asked = pending(&queue, &other).await;
    assert_eq!(asked.session_id, other);
    manager.cancel_run(&run.id).await.unwrap();
    assert!(tokio::time::timeout(WAIT, execution).await.unwrap().unwrap().is_err());
}

/// A handler that fails.
#[derive(Debug)]
struct Broken;

#[async_trait]
impl ApprovalHandler for Broken {
    async fn decide(&self, _request: &ApprovalRequest) -> Result<ApprovalVerdict> {
        Err(Error::new(ErrorCode::DependencyNotAvailable, "the approval service is down"))
    }
}

#[tokio::test]
async fn a_failing_handler_denies_with_its_error_as_the_reason() {
    let adapter = asking("Bash");
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone()).approvals(Broken);
    let session = new_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::new()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::new()).await.unwrap();
    let verdict = &adapter.verdicts()[0];
    assert_eq!(verdict.decision, ApprovalDecision::DenyOnce);
    assert_eq!(verdict.decided_by, "error");
    assert!(verdict.reason.as_deref().unwrap().contains("the approval service is down"));
    let all = events(manager.store(), &session).await;
    assert_eq!(of_kind(&all, EventKind::ToolApprovalDenied)[0].data["decided_by"], "error");
}

#[tokio::test]
async fn without_a_handler_adapters_get_none() {
    let adapter = asking("Bash");
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone());
    assert!(manager.approval_handler().is_none());
    let once = manager.run_once(RunInput::user("x"), RunOptions::new()).await.unwrap();
    assert_eq!(once.result.run.status, RunStatus::Completed);
    assert!(adapter.requests()[0].approvals.is_none());
    assert!(adapter.verdicts().is_empty());
    let all = events(manager.store(), &once.session_id).await;
    assert!(of_kind(&all, EventKind::ToolApprovalRequested).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_server_hands_its_runs_the_gate_and_subscribers_see_the_approval() {
    let queue = ApprovalQueue::new();
    let config = ServerConfig::new(InMemorySessionStore::new(), asking("Bash"))
        .create(NewSession::new("agent"))
        .approvals(queue.clone())
        .approval_timeout(Duration::from_secs(30));
    let server = SessionServer::start(config).await.unwrap();
    let mut subscription = server.subscribe(asm_runtime::SubscribeOptions::default()).await.unwrap();
    let run_id = server.submit_run(RunInput::user("x"), RunOptions::new()).await.unwrap();
    let request = pending(&queue, server.session_id()).await;
    assert_eq!(request.run_id, run_id);
    queue.answer(&request.id, ApprovalVerdict::new(ApprovalDecision::DenyOnce, "ops").reason("not now")).unwrap();
    let result = server.await_run(&run_id, WAIT).await.unwrap();
    assert_eq!(result.run.status, RunStatus::Completed);
    let mut seen = Vec::new();
    while !seen.contains(&EventKind::RunCompleted) {
        let event = tokio::time::timeout(WAIT, subscription.next()).await.unwrap().unwrap().unwrap();
        seen.push(event.kind);
    }
    assert!(
        seen.contains(&EventKind::ToolApprovalRequested) && seen.contains(&EventKind::ToolApprovalDenied),
        "{seen:?}"
    );
    server.shutdown().await.unwrap();
}
