//! SessionManager behaviour, through the public API, on the in-memory store with scripted adapters.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use asm_core::{
    Capability, CapabilityType, Error, ErrorCode, Event, EventKind, Result, RunInput, RunStatus, SessionId,
    SessionStatus, StoredEvent, keys,
};
use asm_ports::{
    EventQuery, ExecuteOutcome, HookAction, ProviderEvent, RunContext, RunFinish, RunHook, RunQuery, SessionQuery,
    SessionStore,
};
use asm_runtime::{Continuation, NewSession, RunOptions, SessionManager, StreamOptions};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;

mod common;

const WAIT: Duration = Duration::from_secs(10);

/// Executes `run_id` on a spawned task whose `on_event` callback sends the kind of every event
/// the run records to the returned receiver.
fn execute_run_sending_event_kinds(
    manager: &SessionManager,
    run_id: &asm_core::RunId,
) -> (tokio::task::JoinHandle<Result<asm_runtime::RunResult>>, mpsc::UnboundedReceiver<EventKind>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let options = RunOptions::default().on_event(move |e| {
        let _ = tx.send(e.kind);
    });
    (common::spawn_execute_run(manager, run_id, options), rx)
}

async fn active_session(manager: &SessionManager) -> SessionId {
    let session = manager.start_session(NewSession::new("agent")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    session.id
}

async fn all_events(manager: &SessionManager, id: &SessionId) -> Vec<StoredEvent> {
    manager.session_events(id, EventQuery::new()).await.unwrap()
}

fn kinds(events: &[StoredEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

fn count(events: &[StoredEvent], pred: impl Fn(EventKind) -> bool) -> usize {
    events.iter().filter(|e| pred(e.kind)).count()
}

/// Asserts the log is numbered 1..=n and every run has exactly one run_started and one terminal.
fn assert_log_invariants(events: &[StoredEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.sequence, Some(i as u64 + 1), "sequence gap at position {i}: {:?}", kinds(events));
    }
    let mut runs: Vec<_> = events.iter().filter_map(|e| e.run_id.clone()).collect();
    runs.dedup();
    for run in runs {
        let of_run: Vec<_> = events.iter().filter(|e| e.run_id.as_ref() == Some(&run)).cloned().collect();
        let starts = count(&of_run, |k| k == EventKind::RunStarted);
        let terminals = count(&of_run, EventKind::is_run_terminal);
        assert!(starts <= 1, "run {run} has {starts} run_started");
        assert_eq!(terminals, 1, "run {run} must have exactly one terminal event: {:?}", kinds(&of_run));
        let last_terminal = of_run.iter().rposition(|e| e.kind.is_run_terminal()).unwrap();
        assert!(
            of_run[last_terminal + 1..].iter().all(|e| e.kind == EventKind::ToolApprovalRequested),
            "no provider event may follow the terminal event: {:?}",
            kinds(&of_run)
        );
    }
}

#[tokio::test]
async fn a_run_persists_every_event_in_order_before_the_callback_sees_it() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("Hello there world"));
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("Hi"), RunOptions::default()).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let result = manager
        .execute_run(&run.id, RunOptions::default().on_event(move |e| sink.lock().push(e.clone())))
        .await
        .unwrap();

    assert_eq!(result.run.status, RunStatus::Completed);
    assert_eq!(result.output().content, "Hello there world");
    assert_eq!(result.token_usage().input_tokens, 12);
    assert_eq!(result.run.provider.as_deref(), Some("scripted"));

    let events = all_events(&manager, &session).await;
    assert_log_invariants(&events);
    assert_eq!(
        kinds(&events),
        vec![
            EventKind::SessionCreated,
            EventKind::SessionStarted,
            EventKind::RunStarted,
            EventKind::MessageSent,
            EventKind::MessageStreamed,
            EventKind::MessageStreamed,
            EventKind::MessageStreamed,
            EventKind::MessageReceived,
            EventKind::TokenUsageUpdated,
            EventKind::RunCompleted,
        ]
    );
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 8, "callback sees every run event");
    for e in &seen {
        let stored = &events[(e.sequence.expect("callback events carry their sequence") - 1) as usize];
        assert_eq!(stored, e, "the callback sees exactly what was stored");
    }
    assert_eq!(result.events, seen);
    let completed = events.last().unwrap();
    assert_eq!(completed.data[keys::STOP_REASON], "end_turn");
    assert_eq!(completed.data[keys::MODEL], "scripted-1");
    assert_eq!(events[3].data[keys::CONTENT], "Hi");
    assert_eq!(events[4].provider.as_deref(), Some("scripted"));
    assert_eq!(events[2].provider.as_deref(), Some("session_manager"));
}

#[tokio::test]
async fn capability_negotiation() {
    let adapter = ScriptedAdapter::replying("ok")
        .with_capabilities(vec![Capability::new("shell", CapabilityType::CodeExecution).unwrap()]);
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let session = active_session(&manager).await;

    let err = manager
        .start_run(&session, RunInput::user("x"), RunOptions::new().require(CapabilityType::FileAccess))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::MissingRequiredCapability);
    assert!(manager.session_runs(&session).await.unwrap().is_empty(), "nothing is written");

    let run = manager
        .start_run(
            &session,
            RunInput::user("x"),
            RunOptions::new().require(CapabilityType::CodeExecution).prefer(CapabilityType::NetworkAccess),
        )
        .await
        .unwrap();
    assert_eq!(run.metadata["capability_negotiation"]["status"], "degraded");
    let run = manager
        .start_run(&session, RunInput::user("x"), RunOptions::new().require(CapabilityType::CodeExecution))
        .await
        .unwrap();
    assert_eq!(run.metadata["capability_negotiation"]["status"], "full");
}

#[tokio::test]
async fn provider_failure_fails_the_run_with_one_terminal_event() {
    let adapter = ScriptedAdapter::new()
        .emit(ProviderEvent::new(EventKind::MessageStreamed).data("content", "par").data("delta", "par"))
        .failing(Error::new(ErrorCode::ProviderRateLimited, "429 Too Many Requests"));
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let err = manager.execute_run(&run.id, RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderRateLimited);
    assert!(err.is_retryable());

    let stored = manager.get_run(&run.id).await.unwrap();
    assert_eq!(stored.status, RunStatus::Failed);
    assert_eq!(stored.error.as_ref().map(Error::code), Some(ErrorCode::ProviderRateLimited));
    let events = all_events(&manager, &session).await;
    assert_log_invariants(&events);
    let failed = events.last().unwrap();
    assert_eq!(failed.kind, EventKind::RunFailed);
    assert_eq!(failed.data[keys::ERROR_CODE], "provider_rate_limited");
    assert_eq!(
        manager.get_session(&session).await.unwrap().status,
        SessionStatus::Active,
        "execute_run leaves the session alone"
    );
}

#[tokio::test]
async fn deadline_ends_the_run_as_timeout() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::new().hanging());
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let err = manager.execute_run(&run.id, RunOptions::default().timeout(Duration::from_millis(50))).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Timeout);
    let events = all_events(&manager, &session).await;
    assert_log_invariants(&events);
    assert_eq!(events.last().unwrap().kind, EventKind::RunTimeout);
}

#[tokio::test]
async fn cancelling_an_in_flight_run_stops_the_provider() {
    let adapter = ScriptedAdapter::new()
        .emit(ProviderEvent::new(EventKind::MessageStreamed).data("content", "a").data("delta", "a"))
        .hanging();
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();

    let (task, mut rx) = execute_run_sending_event_kinds(&manager, &run.id);
    loop {
        let kind = tokio::time::timeout(WAIT, rx.recv()).await.expect("the run never streamed").unwrap();
        if kind == EventKind::MessageStreamed {
            break;
        }
    }
    manager.cancel_run(&run.id).await.unwrap();
    let err = tokio::time::timeout(WAIT, task).await.expect("cancel did not stop the run").unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled);
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Cancelled);
    let events = all_events(&manager, &session).await;
    assert_log_invariants(&events);
    assert_eq!(events.last().unwrap().kind, EventKind::RunCancelled);
    // a run whose end is stored cannot be cancelled again (and nothing is written)
    assert_eq!(manager.cancel_run(&run.id).await.unwrap_err().code(), ErrorCode::InvalidTransition);
    assert_eq!(all_events(&manager, &session).await.len(), events.len());
}

#[tokio::test]
async fn cancelling_a_pending_run_never_calls_the_provider() {
    let adapter = ScriptedAdapter::replying("never");
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone());
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    manager.cancel_run(&run.id).await.unwrap();
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Cancelled);
    // executing it afterwards reports the cancel that won
    let err = manager.execute_run(&run.id, RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled);
    assert!(adapter.requests().is_empty());
    let events = all_events(&manager, &session).await;
    assert_log_invariants(&events);
    assert_eq!(count(&events, |k| k == EventKind::RunStarted), 0);
}

#[tokio::test]
async fn an_orphaned_running_run_is_cancelled_in_the_store() {
    let store = InMemorySessionStore::new();
    let manager = SessionManager::new(store.clone(), ScriptedAdapter::new());
    let session = active_session(&manager).await;
    let mut run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    // A process that died mid-run left it `running`.
    run.transition(RunStatus::Running).unwrap();
    store.save_run(&run).await.unwrap();

    let other_process = SessionManager::new(store, ScriptedAdapter::new());
    other_process.cancel_run(&run.id).await.unwrap();
    assert_eq!(other_process.get_run(&run.id).await.unwrap().status, RunStatus::Cancelled);
    assert_eq!(all_events(&other_process, &session).await.last().unwrap().kind, EventKind::RunCancelled);
}

#[tokio::test]
async fn a_completed_run_cannot_be_cancelled() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("done"));
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::default()).await.unwrap();
    let err = manager.cancel_run(&run.id).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidTransition);
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Completed);
    assert_log_invariants(&all_events(&manager, &session).await);
    let missing = manager.cancel_run(&asm_core::RunId::new()).await.unwrap_err();
    assert_eq!(missing.code(), ErrorCode::RunNotFound);
}

#[tokio::test]
async fn cancel_for_approval_records_the_reason_and_the_request() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::new().hanging());
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let (task, mut rx) = execute_run_sending_event_kinds(&manager, &run.id);
    tokio::time::timeout(WAIT, rx.recv()).await.expect("run never started");
    let approval = serde_json::json!({"tool_name": "bash", "tool_call_id": "t1", "policy_name": "no-shell"});
    manager.cancel_for_approval(&run.id, approval.as_object().unwrap().clone()).await.unwrap();
    let err = tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled);
    let events = all_events(&manager, &session).await;
    assert_log_invariants(&events);
    let n = events.len();
    assert_eq!(events[n - 2].kind, EventKind::RunCancelled);
    assert_eq!(events[n - 2].data[keys::REASON], "approval_requested");
    assert_eq!(events[n - 1].kind, EventKind::ToolApprovalRequested);
    assert_eq!(events[n - 1].data[keys::TOOL_NAME], "bash");
}

#[tokio::test]
async fn a_panicking_adapter_fails_the_run_and_the_manager_keeps_working() {
    let store = InMemorySessionStore::new();
    let manager = SessionManager::new(store.clone(), ScriptedAdapter::new().panicking("adapter bug"));
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let err = manager.execute_run(&run.id, RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InternalError);
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Failed);
    assert_log_invariants(&all_events(&manager, &session).await);

    let run = manager.start_run(&session, RunInput::user("again"), RunOptions::default()).await.unwrap();
    manager.cancel_run(&run.id).await.unwrap();
}

#[tokio::test]
async fn adapters_cannot_emit_lifecycle_events() {
    let adapter = ScriptedAdapter::new().emit(ProviderEvent::new(EventKind::RunCompleted).data("stop_reason", "x"));
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let err = manager.execute_run(&run.id, RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
    let events = all_events(&manager, &session).await;
    assert_log_invariants(&events);
    assert_eq!(count(&events, |k| k == EventKind::RunCompleted), 0);
}

#[tokio::test]
async fn replay_continuation_hands_the_transcript_to_the_adapter() {
    let adapter = ScriptedAdapter::replying("first answer");
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone());
    let session = active_session(&manager).await;
    for prompt in ["first question", "second question"] {
        let run = manager.start_run(&session, RunInput::user(prompt), RunOptions::default()).await.unwrap();
        manager.execute_run(&run.id, RunOptions::default().continuation(Continuation::Auto)).await.unwrap();
    }
    let requests = adapter.requests();
    let first = requests[0].transcript.as_ref().expect("auto without a native handle replays");
    assert!(first.messages.is_empty(), "the first run has no history");
    let second = requests[1].transcript.as_ref().unwrap();
    let contents: Vec<_> = second.messages.iter().filter_map(|m| m.content.clone()).collect();
    assert_eq!(
        contents,
        vec!["first question".to_owned(), "first answer".to_owned()],
        "the current input is not part of the transcript"
    );
    assert!(requests[1].resume.is_none());
}

#[tokio::test]
async fn native_continuation_resumes_the_recorded_provider_session() {
    let adapter = ScriptedAdapter::new()
        .with_native_resume()
        .end(asm_testkit::ScriptEnd::Succeed(ExecuteOutcome::text("ok").provider_session("thread-42").model("m1")));
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone());
    let session = active_session(&manager).await;

    let run = manager.start_run(&session, RunInput::user("one"), RunOptions::default()).await.unwrap();
    let err = manager.execute_run(&run.id, RunOptions::default().continuation(Continuation::Native)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation, "no handle recorded yet");
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Pending, "bad input writes nothing");

    manager.execute_run(&run.id, RunOptions::default()).await.unwrap();
    let stored = manager.get_session(&session).await.unwrap();
    assert_eq!(stored.metadata["provider_sessions"]["scripted"]["provider_session_id"], "thread-42");
    assert_eq!(stored.status, SessionStatus::Active);

    let run = manager.start_run(&session, RunInput::user("two"), RunOptions::default()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::default().continuation(Continuation::Auto)).await.unwrap();
    let last = adapter.requests().pop().unwrap();
    assert_eq!(last.resume.as_deref(), Some("thread-42"));
    assert!(last.transcript.is_none());
}

#[tokio::test]
async fn finishing_a_run_does_not_overwrite_a_concurrent_session_change() {
    let adapter = ScriptedAdapter::new()
        .delay(Duration::from_millis(20))
        .end(asm_testkit::ScriptEnd::Succeed(ExecuteOutcome::text("ok").provider_session("s-1")));
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let (task, mut rx) = execute_run_sending_event_kinds(&manager, &run.id);
    tokio::time::timeout(WAIT, rx.recv()).await.expect("run never started");
    manager.pause_session(&session).await.unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    let stored = manager.get_session(&session).await.unwrap();
    assert_eq!(stored.status, SessionStatus::Paused, "the run's finish must not restore a stale status");
    assert_eq!(stored.metadata["provider_sessions"]["scripted"]["provider_session_id"], "s-1");
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_writes_nothing() {
    let store = InMemorySessionStore::new();
    let manager = SessionManager::new(store.clone(), ScriptedAdapter::replying("x"));

    assert_eq!(manager.start_session(NewSession::new("")).await.unwrap_err().code(), ErrorCode::ValidationError);
    assert!(store.list_sessions(&SessionQuery::new()).await.unwrap().items.is_empty());

    let pending = manager.start_session(NewSession::new("a")).await.unwrap();
    let err = manager.start_run(&pending.id, RunInput::user("x"), RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation, "runs need an active session");
    assert_eq!(manager.complete_session(&pending.id).await.unwrap_err().code(), ErrorCode::InvalidTransition);

    let session = active_session(&manager).await;
    let before = all_events(&manager, &session).await.len();
    assert_eq!(
        manager.start_run(&session, RunInput::user("  "), RunOptions::default()).await.unwrap_err().code(),
        ErrorCode::InvalidInput
    );
    assert_eq!(
        manager.start_run(&SessionId::new(), RunInput::user("x"), RunOptions::default()).await.unwrap_err().code(),
        ErrorCode::SessionNotFound
    );
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let err = manager.execute_run(&run.id, RunOptions::default().timeout(Duration::ZERO)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Pending);
    assert_eq!(all_events(&manager, &session).await.len(), before, "no event was written");
    assert_eq!(
        manager.execute_run(&asm_core::RunId::new(), RunOptions::default()).await.unwrap_err().code(),
        ErrorCode::RunNotFound
    );
    assert_eq!(store.list_runs(&session, &RunQuery::new()).await.unwrap().len(), 1);

    // activating twice is a no-op
    manager.activate_session(&session).await.unwrap();
    let events = all_events(&manager, &session).await;
    assert_eq!(count(&events, |k| k == EventKind::SessionStarted), 1);
}

#[derive(Debug)]
struct DenyTool(&'static str);

#[async_trait]
impl RunHook for DenyTool {
    async fn on_event(&self, _ctx: &RunContext, event: &Event) -> Result<HookAction> {
        if event.kind == EventKind::ToolCallStarted && event.data_str(keys::TOOL_NAME) == Some(self.0) {
            return Ok(HookAction::none()
                .emit(ProviderEvent::new(EventKind::PolicyViolation).data("policy", "deny").data("kind", "tool_denied"))
                .abort(Error::new(ErrorCode::PolicyViolation, format!("tool {} is denied", self.0))));
        }
        Ok(HookAction::none())
    }
}

#[tokio::test]
async fn a_hook_can_abort_a_run_right_after_the_triggering_event() {
    let adapter = ScriptedAdapter::new()
        .emit(ProviderEvent::new(EventKind::ToolCallStarted).data("tool_name", "bash").data("tool_call_id", "t1"))
        .emit(ProviderEvent::new(EventKind::ToolCallCompleted).data("tool_name", "bash").data("tool_call_id", "t1"))
        .end(asm_testkit::ScriptEnd::Succeed(ExecuteOutcome::text("done")));
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let err = manager.execute_run(&run.id, RunOptions::default().hook(DenyTool("bash"))).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::PolicyViolation);
    let events = all_events(&manager, &session).await;
    assert_log_invariants(&events);
    let tail: Vec<_> = kinds(&events).into_iter().skip(4).collect();
    assert_eq!(tail, vec![EventKind::ToolCallStarted, EventKind::PolicyViolation, EventKind::RunFailed]);
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Failed);
}

#[derive(Debug)]
struct RejectAtFinish;

#[async_trait]
impl RunHook for RejectAtFinish {
    async fn on_finish(&self, _ctx: &RunContext, finish: &RunFinish) -> Result<HookAction> {
        assert!(finish.result.is_ok());
        Err(Error::new(ErrorCode::ToolError, "post-run check failed"))
    }
}

#[tokio::test]
async fn a_finish_hook_can_fail_a_successful_run() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("ok"));
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let err = manager.execute_run(&run.id, RunOptions::default().hook(RejectAtFinish)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ToolError);
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Failed);
    assert_log_invariants(&all_events(&manager, &session).await);
}

#[tokio::test]
async fn run_once_completes_or_fails_the_session() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("all good"));
    let once = manager.run_once(RunInput::user("go"), RunOptions::default()).await.unwrap();
    assert_eq!(once.output().content, "all good");
    let session = manager.get_session(&once.session_id).await.unwrap();
    assert_eq!(session.status, SessionStatus::Completed);
    assert_eq!(session.agent_id, "scripted");
    let events = all_events(&manager, &once.session_id).await;
    assert_log_invariants(&events);
    assert_eq!(events.last().unwrap().kind, EventKind::SessionCompleted);

    let failing = SessionManager::new(
        InMemorySessionStore::new(),
        ScriptedAdapter::new().failing(Error::new(ErrorCode::ProviderAuthenticationFailed, "401")),
    );
    let err = failing.run_once(RunInput::user("go"), RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderAuthenticationFailed);
    let sessions = failing.store().list_sessions(&SessionQuery::new()).await.unwrap();
    assert_eq!(sessions.items[0].status, SessionStatus::Failed);
    let events = all_events(&failing, &sessions.items[0].id).await;
    assert_eq!(events.last().unwrap().kind, EventKind::SessionFailed);
    assert_eq!(events.last().unwrap().data[keys::ERROR_CODE], "provider_authentication_failed");
}

#[tokio::test]
async fn an_until_caught_up_stream_ends_after_the_last_stored_event() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("a b c"));
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::default()).await.unwrap();
    let total = manager.store().latest_sequence(&session).await.unwrap();
    let stream = manager.stream_session_events(&session, StreamOptions::after(2).page_size(3).until_caught_up());
    let events: Vec<StoredEvent> = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("an until-caught-up stream must end")
        .into_iter()
        .collect::<Result<_>>()
        .unwrap();
    let sequences: Vec<u64> = events.iter().filter_map(|e| e.sequence).collect();
    assert_eq!(sequences, (3..=total).collect::<Vec<_>>(), "after is exclusive; every later event once");
}

#[tokio::test]
async fn the_event_stream_pages_then_follows_new_appends() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("a b c"));
    let session = active_session(&manager).await;
    let mut stream = manager.stream_session_events(&session, StreamOptions::after(1).page_size(2));
    let first = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.sequence, Some(2));

    // The stream is now caught up and long-polling; a run appends more.
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::default()).await.unwrap();
    let total = manager.store().latest_sequence(&session).await.unwrap();
    let mut expected = 3;
    while expected <= total {
        let event = tokio::time::timeout(WAIT, stream.next()).await.expect("stream stalled").unwrap().unwrap();
        assert_eq!(event.sequence, Some(expected), "each event exactly once, in order");
        expected += 1;
    }
}

#[tokio::test]
async fn concurrent_runs_in_one_session_keep_the_log_gap_free() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("one two three four"));
    let session = active_session(&manager).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let manager = manager.clone();
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            let run = manager.start_run(&session, RunInput::user(format!("task {i}")), RunOptions::default()).await?;
            manager.execute_run(&run.id, RunOptions::default()).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let events = all_events(&manager, &session).await;
    assert_log_invariants(&events);
    assert_eq!(count(&events, |k| k == EventKind::RunCompleted), 8);
}

/// A store without long-poll: the event stream must fall back to polling.
#[derive(Debug, Clone)]
struct PollOnly;

#[async_trait]
impl asm_ports::StoreLayer for PollOnly {
    async fn get_events(&self, inner: &dyn SessionStore, s: &SessionId, q: &EventQuery) -> Result<Vec<StoredEvent>> {
        assert!(q.wait.is_none(), "a store without long-poll must not be asked to wait");
        inner.get_events(s, q).await
    }
    fn capabilities(&self, _inner: &dyn SessionStore) -> asm_ports::StoreCapabilities {
        asm_ports::StoreCapabilities::new()
    }
}

#[tokio::test]
async fn the_event_stream_polls_stores_without_long_poll() {
    let manager = SessionManager::new(
        asm_ports::Layered::new(InMemorySessionStore::new(), PollOnly),
        ScriptedAdapter::replying("x y"),
    );
    let session = active_session(&manager).await;
    let mut stream =
        manager.stream_session_events(&session, StreamOptions::after(0).poll_interval(Duration::from_millis(5)));
    for expected in 1..=2 {
        let event = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(event.sequence, Some(expected));
    }
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::default()).await.unwrap();
    let event =
        tokio::time::timeout(WAIT, stream.next()).await.expect("polling never saw the new events").unwrap().unwrap();
    assert_eq!(event.sequence, Some(3));
    assert_eq!(event.kind, EventKind::RunStarted);
}

#[tokio::test]
async fn the_event_stream_yields_a_store_error_and_ends() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::new());
    let mut stream = Box::pin(manager.stream_session_events(&SessionId::new(), StreamOptions::default()));
    let err = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::SessionNotFound);
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn provider_state_is_kept_with_the_session_handle_and_handed_back() {
    let adapter = ScriptedAdapter::new().end(asm_testkit::ScriptEnd::Succeed(
        ExecuteOutcome::text("ok")
            .provider_session("t-1")
            .state("thread_usage", serde_json::json!({"input_tokens": 7})),
    ));
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone());
    let session = active_session(&manager).await;
    for prompt in ["one", "two"] {
        let run = manager.start_run(&session, RunInput::user(prompt), RunOptions::default()).await.unwrap();
        manager.execute_run(&run.id, RunOptions::default()).await.unwrap();
    }
    let second = adapter.requests().pop().unwrap();
    let state = asm_ports::provider_state(&second.session, "scripted").expect("state recorded for the provider");
    assert_eq!(state["thread_usage"]["input_tokens"], 7);
    assert_eq!(state["provider_session_id"], "t-1");
}
