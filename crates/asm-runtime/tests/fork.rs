//! `SessionManager::fork_session`: copies, fork points, native fork vs replay, the parent left
//! alone, and what a failure leaves behind. On the in-memory store, with a conversation-keeping
//! fake provider whose replies show what history each run really had.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;

use asm_core::{
    Capability, Error, ErrorCode, Event, EventKind, JsonMap, Result, Role, Run, RunId, RunInput, RunStatus, Session,
    SessionId, SessionStatus, StoredEvent, TranscriptBuilder, TranscriptOptions, keys,
};
use asm_ports::{
    EventQuery, EventSink, ExecuteOutcome, ExecuteRequest, Layered, ProviderAdapter, ProviderEvent, SessionQuery,
    SessionStore, StoreLayer,
};
use asm_runtime::{
    Continuation, FORK_METADATA_KEY, FORKED_FROM_KEY, ForkContinuation, ForkPoint, NewSession, ReplayReason,
    RunOptions, RunResult, SessionManager,
};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;

const WAIT: Duration = Duration::from_secs(10);

// ----- a provider that keeps conversations -------------------------------------------------

/// What one execution was given.
#[derive(Clone, Debug)]
struct Call {
    resume: Option<String>,
    fork: bool,
    transcript: Vec<String>,
    handle: String,
    /// `metadata.provider_sessions` of the session the run was given.
    state_seen: Option<serde_json::Value>,
}

/// Provider-side state: conversations by handle, like Claude's session files.
#[derive(Debug, Default)]
struct Conversations {
    by_handle: Mutex<HashMap<String, Vec<String>>>,
    next: AtomicUsize,
    calls: Mutex<Vec<Call>>,
}

impl Conversations {
    fn last_call(&self) -> Call {
        self.calls.lock().last().cloned().unwrap()
    }
}

/// Replies `heard <every user message it knows, in order>`. Resume continues a conversation,
/// a fork copies it under a new handle, and without a handle it starts from the transcript.
/// The prompt `fail` fails the run.
#[derive(Clone, Debug)]
struct ChatAdapter {
    state: Arc<Conversations>,
    can_fork: bool,
}

impl ChatAdapter {
    fn new(state: &Arc<Conversations>, can_fork: bool) -> Self {
        Self { state: state.clone(), can_fork }
    }
}

#[async_trait]
impl ProviderAdapter for ChatAdapter {
    fn name(&self) -> &str {
        "chat"
    }
    fn capabilities(&self) -> Vec<Capability> {
        Vec::new()
    }
    fn supports_native_resume(&self) -> bool {
        true
    }
    fn supports_native_fork(&self) -> bool {
        self.can_fork
    }
    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let prompt = request.run.input.prompt();
        let transcript: Vec<String> = request
            .transcript
            .iter()
            .flat_map(|t| t.messages.iter())
            .filter_map(|m| m.content.as_ref().map(|c| format!("{}: {c}", m.role.as_str())))
            .collect();
        let fresh = || format!("conv-{}", self.state.next.fetch_add(1, Ordering::SeqCst));
        let (handle, mut history) = match &request.resume {
            Some(handle) => {
                let history = self.state.by_handle.lock().get(handle).cloned().ok_or_else(|| {
                    Error::new(ErrorCode::ProviderError, format!("no conversation found with id {handle}"))
                })?;
                if request.fork { (fresh(), history) } else { (handle.clone(), history) }
            }
            None => (fresh(), transcript.clone()),
        };
        self.state.calls.lock().push(Call {
            resume: request.resume.clone(),
            fork: request.fork,
            transcript,
            handle: handle.clone(),
            state_seen: request.session.metadata.get("provider_sessions").cloned(),
        });
        history.push(format!("user: {prompt}"));
        if prompt == "fail" {
            return Err(Error::new(ErrorCode::ProviderError, "asked to fail"));
        }
        let heard: Vec<&str> = history.iter().filter_map(|line| line.strip_prefix("user: ")).collect();
        let reply = format!("heard {}", heard.join(" + "));
        history.push(format!("assistant: {reply}"));
        let lines = history.len();
        self.state.by_handle.lock().insert(handle.clone(), history);
        sink.emit(
            ProviderEvent::new(EventKind::MessageReceived).data("role", "assistant").data("content", reply.clone()),
        )
        .await?;
        // Provider state beside the handle, like Codex's thread-cumulative usage.
        Ok(ExecuteOutcome::text(reply).provider_session(handle).state("lines", lines))
    }
}

// ----- helpers -------------------------------------------------------------------------------

async fn active_session(manager: &SessionManager) -> SessionId {
    let session = manager.start_session(NewSession::new("agent").tag("t1").system_prompt("Be brief.")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    session.id
}

/// A manager over a fresh memory store whose provider is a [`ChatAdapter`] (forking natively
/// when `can_fork`), its conversations, and an active session of it: the parent.
async fn chat_with_active_parent(can_fork: bool) -> (Arc<Conversations>, SessionManager, SessionId) {
    let provider = Arc::new(Conversations::default());
    let manager = SessionManager::new(InMemorySessionStore::new(), ChatAdapter::new(&provider, can_fork));
    let parent = active_session(&manager).await;
    (provider, manager, parent)
}

async fn say_with(
    manager: &SessionManager,
    session: &SessionId,
    prompt: &str,
    mode: Continuation,
) -> Result<RunResult> {
    let run = manager.start_run(session, RunInput::user(prompt), RunOptions::default()).await?;
    manager.execute_run(&run.id, RunOptions::default().continuation(mode)).await
}

async fn say(manager: &SessionManager, session: &SessionId, prompt: &str) -> RunResult {
    say_with(manager, session, prompt, Continuation::Auto).await.unwrap()
}

async fn all_events(manager: &SessionManager, id: &SessionId) -> Vec<StoredEvent> {
    manager.session_events(id, EventQuery::new()).await.unwrap()
}

/// The user messages of the session's transcript, built from its events.
async fn user_turns(manager: &SessionManager, id: &SessionId) -> Vec<String> {
    let events = all_events(manager, id).await;
    let transcript = TranscriptBuilder::new(TranscriptOptions::default()).from_events(id, &events);
    transcript.messages.iter().filter(|m| m.role == Role::User).filter_map(|m| m.content.clone()).collect()
}

fn continuation_of(result: &RunResult) -> String {
    let started = result.events.iter().find(|e| e.kind == EventKind::RunStarted).unwrap();
    started.data_str("continuation").unwrap().to_owned()
}

fn handle_of(session: &Session, provider: &str) -> Option<String> {
    session.metadata.get("provider_sessions")?.get(provider)?.get(keys::PROVIDER_SESSION_ID)?.as_str().map(Into::into)
}

async fn session_count(store: &dyn SessionStore) -> usize {
    store.list_sessions(&SessionQuery::new()).await.unwrap().items.len()
}

/// Everything stored about a session, to prove it did not change.
async fn snapshot(manager: &SessionManager, id: &SessionId) -> (Session, Vec<StoredEvent>, Vec<Run>) {
    (manager.get_session(id).await.unwrap(), all_events(manager, id).await, manager.session_runs(id).await.unwrap())
}

async fn wait_until_running(manager: &SessionManager, run: &RunId) {
    let start = std::time::Instant::now();
    while manager.get_run(run).await.unwrap().status != RunStatus::Running {
        assert!(start.elapsed() < WAIT, "run never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // run_started is written right after the status.
    while manager
        .session_events(&manager.get_run(run).await.unwrap().session_id, EventQuery::new().run(run.clone()))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(start.elapsed() < WAIT, "run_started never written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ----- native fork and both branches --------------------------------------------------------

#[tokio::test]
async fn fork_then_continue_both_branches_natively_each_branch_keeps_its_own_history() {
    let (provider, manager, parent) = chat_with_active_parent(true).await;
    let first = say(&manager, &parent, "alpha").await;
    assert_eq!(first.output().content, "heard alpha");
    let parent_handle = handle_of(&manager.get_session(&parent).await.unwrap(), "chat").unwrap();

    let before = snapshot(&manager, &parent).await;
    let fork = manager.fork_session(&parent, ForkPoint::Latest).await.unwrap();
    assert_eq!(snapshot(&manager, &parent).await, before, "forking only reads the parent");
    assert_eq!(
        fork.continuation,
        ForkContinuation::Native { provider: "chat".into(), provider_session_id: parent_handle.clone() }
    );
    let fork_id = fork.session.id.clone();
    assert_eq!(fork.session.status, SessionStatus::Pending);
    assert_eq!(handle_of(&fork.session, "chat"), None, "the fork has no provider session of its own yet");
    assert_eq!(
        fork.session.metadata["provider_sessions"],
        json!({"chat": {"lines": 2}}),
        "the state beside the parent's handle comes along, the handle does not"
    );
    manager.activate_session(&fork_id).await.unwrap();

    // The fork's first run branches the parent's provider session.
    let branched = say(&manager, &fork_id, "beta").await;
    assert_eq!(branched.output().content, "heard alpha + beta");
    let call = provider.last_call();
    assert_eq!((call.resume.as_deref(), call.fork), (Some(parent_handle.as_str()), true));
    assert!(call.transcript.is_empty(), "a native fork replays nothing");
    assert_eq!(call.state_seen, Some(json!({"chat": {"lines": 2}})));
    assert_eq!(continuation_of(&branched), "native_fork");
    let fork_handle = handle_of(&manager.get_session(&fork_id).await.unwrap(), "chat").unwrap();
    assert_eq!(fork_handle, call.handle);
    assert_ne!(fork_handle, parent_handle);

    // The parent continues its own provider session, which never saw "beta".
    let parent_next = say(&manager, &parent, "gamma").await;
    assert_eq!(parent_next.output().content, "heard alpha + gamma");
    assert_eq!((provider.last_call().resume, provider.last_call().fork), (Some(parent_handle.clone()), false));
    assert_eq!(continuation_of(&parent_next), "native");

    // The fork now resumes its own provider session, which never saw "gamma".
    let fork_next = say(&manager, &fork_id, "delta").await;
    assert_eq!(fork_next.output().content, "heard alpha + beta + delta");
    assert_eq!((provider.last_call().resume, provider.last_call().fork), (Some(fork_handle.clone()), false));
    assert_eq!(continuation_of(&fork_next), "native");

    // Each transcript is its own.
    assert_eq!(user_turns(&manager, &parent).await, ["alpha", "gamma"]);
    assert_eq!(user_turns(&manager, &fork_id).await, ["alpha", "beta", "delta"]);
    assert_eq!(handle_of(&manager.get_session(&parent).await.unwrap(), "chat"), Some(parent_handle));
    let parent_log = all_events(&manager, &parent).await;
    assert!(parent_log.iter().all(|e| e.session_id == parent && !e.metadata.contains_key(FORKED_FROM_KEY)));
    assert_eq!(parent_log[..before.1.len()], before.1[..], "the parent's earlier log is unchanged");
}

#[tokio::test]
async fn a_fork_whose_parent_ran_again_replays_instead_of_forking_the_newer_provider_session() {
    let (provider, manager, parent) = chat_with_active_parent(true).await;
    say(&manager, &parent, "alpha").await;
    let fork = manager.fork_session(&parent, ForkPoint::Latest).await.unwrap();
    assert!(matches!(fork.continuation, ForkContinuation::Native { .. }));
    // The parent's provider session moves past the fork point before the fork runs.
    say(&manager, &parent, "gamma").await;

    manager.activate_session(&fork.session.id).await.unwrap();
    let result = say(&manager, &fork.session.id, "beta").await;
    assert_eq!(result.output().content, "heard alpha + beta", "gamma must not leak into the fork");
    let call = provider.last_call();
    assert_eq!((call.resume, call.fork), (None, false));
    assert_eq!(call.transcript, ["user: alpha", "assistant: heard alpha"]);
    assert_eq!(continuation_of(&result), "replay");
    // From then on the fork has its own handle and resumes it.
    let next = say(&manager, &fork.session.id, "delta").await;
    assert_eq!(next.output().content, "heard alpha + beta + delta");
    assert_eq!(continuation_of(&next), "native");
}

#[tokio::test]
async fn a_fork_whose_first_run_failed_replays_its_own_log_next() {
    let (provider, manager, parent) = chat_with_active_parent(true).await;
    say(&manager, &parent, "alpha").await;
    let fork = manager.fork_session(&parent, ForkPoint::Latest).await.unwrap();
    manager.activate_session(&fork.session.id).await.unwrap();
    let failed = say_with(&manager, &fork.session.id, "fail", Continuation::Auto).await.unwrap_err();
    assert_eq!(failed.code(), ErrorCode::ProviderError);
    assert!(provider.last_call().fork, "the failed run tried the native fork");

    let result = say(&manager, &fork.session.id, "beta").await;
    assert_eq!(continuation_of(&result), "replay", "the failed turn is in the fork's log, not in any provider session");
    assert_eq!(result.output().content, "heard alpha + fail + beta");
}

#[tokio::test]
async fn forking_after_an_earlier_run_copies_up_to_it_and_replays() {
    let (provider, manager, parent) = chat_with_active_parent(true).await;
    let first = say(&manager, &parent, "alpha").await;
    say(&manager, &parent, "gamma").await;

    let fork = manager.fork_session(&parent, ForkPoint::after_run(first.run.id.clone())).await.unwrap();
    assert_eq!(fork.continuation, ForkContinuation::Replay(ReplayReason::NotLatestTurn));
    assert!(!fork.session.metadata.contains_key("provider_sessions"), "a replayed fork starts without provider state");
    let terminal = first.events.iter().find(|e| e.kind == EventKind::RunCompleted).unwrap();
    assert_eq!(Some(fork.parent_sequence), terminal.sequence);
    assert_eq!(fork.events_copied, fork.parent_sequence);
    assert_eq!(fork.runs_copied, 1);
    assert_eq!(user_turns(&manager, &fork.session.id).await, ["alpha"]);

    manager.activate_session(&fork.session.id).await.unwrap();
    let result = say(&manager, &fork.session.id, "beta").await;
    assert_eq!(result.output().content, "heard alpha + beta");
    assert_eq!(continuation_of(&result), "replay");
    assert_eq!(provider.last_call().transcript, ["user: alpha", "assistant: heard alpha"]);
    // Continuation::Native has nothing to resume on such a fork's first run.
    let fork2 = manager.fork_session(&parent, ForkPoint::after_run(first.run.id)).await.unwrap();
    manager.activate_session(&fork2.session.id).await.unwrap();
    let err = say_with(&manager, &fork2.session.id, "x", Continuation::Native).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
}

#[tokio::test]
async fn an_adapter_that_cannot_fork_continues_the_fork_by_replay() {
    let (provider, manager, parent) = chat_with_active_parent(false).await;
    say(&manager, &parent, "alpha").await;
    let fork = manager.fork_session(&parent, ForkPoint::Latest).await.unwrap();
    assert_eq!(fork.continuation, ForkContinuation::Replay(ReplayReason::AdapterCannotFork));
    assert!(fork.session.metadata[FORK_METADATA_KEY].get("native").is_none());

    manager.activate_session(&fork.session.id).await.unwrap();
    let result = say(&manager, &fork.session.id, "beta").await;
    assert_eq!(result.output().content, "heard alpha + beta");
    assert_eq!((provider.last_call().resume, provider.last_call().fork), (None, false));
    assert_eq!(continuation_of(&result), "replay");
}

// ----- the copies ------------------------------------------------------------------------------

#[tokio::test]
async fn copies_are_renumbered_from_one_in_several_batches_and_point_to_their_originals() {
    // 1 200 streamed chunks: more than two copy batches.
    let words: Vec<String> = (0..1_200).map(|i| format!("w{i}")).collect();
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying(&words.join(" ")));
    let parent = active_session(&manager).await;
    for prompt in ["one", "two"] {
        let run = manager.start_run(&parent, RunInput::user(prompt), RunOptions::default()).await.unwrap();
        manager.execute_run(&run.id, RunOptions::default()).await.unwrap();
    }
    let parent_session = manager.get_session(&parent).await.unwrap();
    let originals = all_events(&manager, &parent).await;
    assert!(originals.len() > 2_400);

    let fork = manager.fork_session(&parent, ForkPoint::Latest).await.unwrap();
    assert_eq!(fork.continuation, ForkContinuation::Replay(ReplayReason::AdapterCannotFork));
    assert_eq!(fork.events_copied, originals.len() as u64);
    assert_eq!(fork.parent_sequence, originals.len() as u64);
    let fork_id = fork.session.id.clone();
    let copies = all_events(&manager, &fork_id).await;
    assert_eq!(copies.len(), originals.len() + 1);

    let fork_runs = manager.session_runs(&fork_id).await.unwrap();
    assert_eq!(fork_runs.len(), 2);
    assert_eq!(fork.runs_copied, 2);
    let run_copy: HashMap<RunId, RunId> = fork_runs
        .iter()
        .map(|r| (RunId::parse(r.metadata[FORKED_FROM_KEY]["run_id"].as_str().unwrap()).unwrap(), r.id.clone()))
        .collect();
    let mut seen_ids = HashSet::new();
    for (i, (copy, original)) in copies.iter().zip(&originals).enumerate() {
        assert_eq!(copy.sequence, Some(i as u64 + 1));
        assert_ne!(copy.id, original.id);
        assert!(seen_ids.insert(copy.id.clone()));
        assert_eq!(copy.session_id, fork_id);
        assert_eq!((copy.kind, &copy.data, copy.timestamp), (original.kind, &original.data, original.timestamp));
        assert_eq!(copy.provider, original.provider);
        assert_eq!(
            copy.metadata[FORKED_FROM_KEY],
            json!({"session_id": parent.as_str(), "event_id": original.id.as_str(), "sequence": original.sequence})
        );
        assert_eq!(copy.run_id, original.run_id.as_ref().map(|r| run_copy[r].clone()));
    }
    for copy in &fork_runs {
        let original_id = RunId::parse(copy.metadata[FORKED_FROM_KEY]["run_id"].as_str().unwrap()).unwrap();
        let original = manager.get_run(&original_id).await.unwrap();
        assert_eq!(original.session_id, parent);
        assert_eq!(copy.session_id, fork_id);
        assert_ne!(copy.id, original.id);
        assert_eq!((copy.status, &copy.input, &copy.output), (RunStatus::Completed, &original.input, &original.output));
        assert_eq!(copy.token_usage, original.token_usage);
    }

    let marker = copies.last().unwrap();
    assert_eq!(marker, &fork.fork_event);
    assert_eq!(marker.kind, EventKind::SessionCreated);
    assert_eq!(marker.sequence, Some(originals.len() as u64 + 1));
    assert_eq!(marker.run_id, None);
    assert_eq!(marker.data["parent_session_id"], parent.as_str());
    assert_eq!(marker.data["parent_sequence"], originals.len());
    assert_eq!(marker.data["events_copied"], originals.len());
    assert_eq!(marker.data["runs_copied"], 2);
    assert_eq!(marker.data["fork_point"], "latest");
    assert_eq!(marker.data["continuation"], json!({"mode": "replay", "reason": "adapter_cannot_fork"}));
    assert_eq!(marker.metadata[FORK_METADATA_KEY], true);

    let stored = manager.get_session(&fork_id).await.unwrap();
    assert_eq!(stored, fork.session);
    assert_eq!(stored.parent_session_id.as_ref(), Some(&parent));
    assert_eq!(
        (stored.agent_id.as_str(), &stored.tags, &stored.context),
        ("agent", &parent_session.tags, &parent_session.context)
    );
    let record = &stored.metadata[FORK_METADATA_KEY];
    assert_eq!(record["state"], "ready");
    assert_eq!(record["parent_session_id"], parent.as_str());
    assert_eq!(record["events_copied"], originals.len());
    assert_eq!(record["fork_sequence"], originals.len() + 1);

    // The same transcript, built from either log.
    let builder = TranscriptBuilder::new(TranscriptOptions::default());
    let strip = |events: &[StoredEvent], id: &SessionId| -> Vec<(Role, Option<String>)> {
        builder.from_events(id, events).messages.into_iter().map(|m| (m.role, m.content)).collect()
    };
    assert_eq!(strip(&copies, &fork_id), strip(&originals, &parent));
}

#[tokio::test]
async fn a_fork_after_a_run_cancelled_for_approval_keeps_the_approval_request() {
    let store: Arc<dyn SessionStore> = Arc::new(InMemorySessionStore::new());
    let manager = SessionManager::from_shared(store, Arc::new(ScriptedAdapter::new().hanging()));
    let parent = active_session(&manager).await;
    let run = manager.start_run(&parent, RunInput::user("rm -rf"), RunOptions::default()).await.unwrap();
    let task = tokio::spawn({
        let (manager, run) = (manager.clone(), run.id.clone());
        async move { manager.execute_run(&run, RunOptions::default()).await }
    });
    wait_until_running(&manager, &run.id).await;
    let mut approval = JsonMap::new();
    approval.insert(keys::TOOL_NAME.into(), "Bash".into());
    approval.insert(keys::POLICY_NAME.into(), "no-rm".into());
    manager.cancel_for_approval(&run.id, approval).await.unwrap();
    assert_eq!(task.await.unwrap().unwrap_err().code(), ErrorCode::Cancelled);

    let fork = manager.fork_session(&parent, ForkPoint::after_run(run.id)).await.unwrap();
    let kinds: Vec<EventKind> = all_events(&manager, &fork.session.id).await.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds[kinds.len() - 3..],
        [EventKind::RunCancelled, EventKind::ToolApprovalRequested, EventKind::SessionCreated]
    );
    assert_eq!(manager.session_runs(&fork.session.id).await.unwrap()[0].status, RunStatus::Cancelled);
}

// ----- fork points --------------------------------------------------------------------------

#[tokio::test]
async fn forking_inside_an_unfinished_run_is_invalid_operation_and_writes_nothing() {
    let store: Arc<dyn SessionStore> = Arc::new(InMemorySessionStore::new());
    let hanging = SessionManager::from_shared(store.clone(), Arc::new(ScriptedAdapter::new().hanging()));
    let quick = SessionManager::from_shared(store.clone(), Arc::new(ScriptedAdapter::replying("ok")));
    let parent = active_session(&quick).await;
    let done = quick.start_run(&parent, RunInput::user("first"), RunOptions::default()).await.unwrap();
    quick.execute_run(&done.id, RunOptions::default()).await.unwrap();

    // A pending run.
    let pending = quick.start_run(&parent, RunInput::user("later"), RunOptions::default()).await.unwrap();
    let err = quick.fork_session(&parent, ForkPoint::after_run(pending.id.clone())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
    quick.cancel_run(&pending.id).await.unwrap();

    // A running run, and a run that finished while it was in flight.
    let slow = hanging.start_run(&parent, RunInput::user("slow"), RunOptions::default()).await.unwrap();
    let task = tokio::spawn({
        let (manager, run) = (hanging.clone(), slow.id.clone());
        async move { manager.execute_run(&run, RunOptions::default()).await }
    });
    wait_until_running(&hanging, &slow.id).await;
    let during = quick.start_run(&parent, RunInput::user("meanwhile"), RunOptions::default()).await.unwrap();
    quick.execute_run(&during.id, RunOptions::default()).await.unwrap();
    let sessions = session_count(&*store).await;
    let parent_before = snapshot(&quick, &parent).await;

    let err = quick.fork_session(&parent, ForkPoint::after_run(slow.id.clone())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
    let err = quick.fork_session(&parent, ForkPoint::after_run(during.id.clone())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
    assert_eq!(err.details().get("unfinished_run_id").and_then(|v| v.as_str()), Some(slow.id.as_str()));
    assert_eq!(session_count(&*store).await, sessions, "nothing is written on a bad fork point");
    assert_eq!(snapshot(&quick, &parent).await, parent_before);

    // Latest stops before the run in flight started.
    let slow_started = all_events(&quick, &parent)
        .await
        .into_iter()
        .find(|e| e.kind == EventKind::RunStarted && e.run_id.as_ref() == Some(&slow.id))
        .unwrap();
    let fork = quick.fork_session(&parent, ForkPoint::Latest).await.unwrap();
    assert_eq!(Some(fork.parent_sequence + 1), slow_started.sequence);
    assert_eq!(fork.continuation, ForkContinuation::Replay(ReplayReason::NotLatestTurn));
    let copied = all_events(&quick, &fork.session.id).await;
    assert_eq!(copied.iter().filter(|e| e.kind == EventKind::RunStarted).count(), 1, "only the first run");

    hanging.cancel_run(&slow.id).await.unwrap();
    assert_eq!(tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap_err().code(), ErrorCode::Cancelled);
    // The run that ended inside the slow one is still no boundary; the slow one's end is.
    let err = quick.fork_session(&parent, ForkPoint::after_run(during.id)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
    let fork = quick.fork_session(&parent, ForkPoint::after_run(slow.id)).await.unwrap();
    assert_eq!(fork.runs_copied, 4, "first, the cancelled pending one, slow and meanwhile");
}

#[tokio::test]
async fn unknown_sessions_and_foreign_runs_are_typed_errors() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("ok"));
    let a = active_session(&manager).await;
    let b = active_session(&manager).await;
    let run = manager.start_run(&b, RunInput::user("x"), RunOptions::default()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::default()).await.unwrap();

    let err = manager.fork_session(&SessionId::new(), ForkPoint::Latest).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SessionNotFound);
    let err = manager.fork_session(&a, ForkPoint::after_run(RunId::new())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::RunNotFound);
    let err = manager.fork_session(&a, ForkPoint::after_run(run.id)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SessionMismatch);
    assert_eq!(session_count(&**manager.store()).await, 2);
}

#[tokio::test]
async fn a_fork_of_a_fork_and_of_a_finished_session() {
    let (_provider, manager, parent) = chat_with_active_parent(true).await;
    say(&manager, &parent, "alpha").await;
    manager.complete_session(&parent).await.unwrap();
    let child = manager.fork_session(&parent, ForkPoint::Latest).await.unwrap();
    manager.activate_session(&child.session.id).await.unwrap();
    say(&manager, &child.session.id, "beta").await;

    let grandchild = manager.fork_session(&child.session.id, ForkPoint::Latest).await.unwrap();
    let child_handle = handle_of(&manager.get_session(&child.session.id).await.unwrap(), "chat").unwrap();
    assert_eq!(
        grandchild.continuation,
        ForkContinuation::Native { provider: "chat".into(), provider_session_id: child_handle }
    );
    assert_eq!(grandchild.session.parent_session_id.as_ref(), Some(&child.session.id));
    manager.activate_session(&grandchild.session.id).await.unwrap();
    let result = say(&manager, &grandchild.session.id, "gamma").await;
    assert_eq!(result.output().content, "heard alpha + beta + gamma");
    assert_eq!(user_turns(&manager, &grandchild.session.id).await, ["alpha", "beta", "gamma"]);
    // Copies of copies point to their direct original.
    let copies = all_events(&manager, &grandchild.session.id).await;
    assert!(
        copies[..grandchild.events_copied as usize]
            .iter()
            .all(|e| { e.metadata[FORKED_FROM_KEY]["session_id"] == child.session.id.as_str() })
    );
}

// ----- failures ---------------------------------------------------------------------------------

/// Appends to a session other than `allowed` fail once `budget` of them succeeded, and deletes
/// fail on demand (over the in-memory store: [`FlakyStore`]).
#[derive(Debug)]
struct Flaky {
    allowed: Mutex<Option<SessionId>>,
    budget: AtomicUsize,
    fail_delete: AtomicBool,
}

type FlakyStore = Layered<InMemorySessionStore, Flaky>;

fn flaky_store() -> FlakyStore {
    let flaky =
        Flaky { allowed: Mutex::new(None), budget: AtomicUsize::new(usize::MAX), fail_delete: AtomicBool::new(false) };
    Layered::new(InMemorySessionStore::new(), flaky)
}

#[async_trait]
impl StoreLayer for Flaky {
    async fn delete_session(&self, inner: &dyn SessionStore, id: &SessionId) -> Result<()> {
        if self.fail_delete.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorCode::StorageWriteFailed, "disk gone"));
        }
        inner.delete_session(id).await
    }
    async fn append(
        &self,
        inner: &dyn SessionStore,
        events: Vec<Event>,
        expected: Option<u64>,
    ) -> Result<Vec<StoredEvent>> {
        let foreign = self.allowed.lock().as_ref().is_some_and(|a| events.first().is_some_and(|e| &e.session_id != a));
        if foreign && self.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1)).is_err() {
            return Err(Error::new(ErrorCode::StorageWriteFailed, "disk full"));
        }
        inner.append(events, expected).await
    }
}

async fn flaky_parent() -> (Arc<FlakyStore>, SessionManager, SessionId) {
    let store = Arc::new(flaky_store());
    let words: Vec<String> = (0..700).map(|i| format!("w{i}")).collect();
    let manager = SessionManager::from_shared(store.clone(), Arc::new(ScriptedAdapter::replying(&words.join(" "))));
    let parent = active_session(&manager).await;
    let run = manager.start_run(&parent, RunInput::user("go"), RunOptions::default()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::default()).await.unwrap();
    *store.layer().allowed.lock() = Some(parent.clone());
    store.layer().budget.store(1, Ordering::SeqCst); // the first batch lands, the second fails
    (store, manager, parent)
}

#[tokio::test]
async fn a_copy_that_fails_halfway_leaves_no_fork_behind() {
    let (store, manager, parent) = flaky_parent().await;
    let before = snapshot(&manager, &parent).await;
    let err = manager.fork_session(&parent, ForkPoint::Latest).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageWriteFailed);
    let sessions = store.list_sessions(&SessionQuery::new()).await.unwrap().items;
    assert_eq!(sessions.iter().map(|s| &s.id).collect::<Vec<_>>(), [&parent]);
    assert_eq!(snapshot(&manager, &parent).await, before);
}

#[tokio::test]
async fn a_fork_left_incomplete_cannot_run_or_be_forked() {
    let (store, manager, parent) = flaky_parent().await;
    store.layer().fail_delete.store(true, Ordering::SeqCst);
    manager.fork_session(&parent, ForkPoint::Latest).await.unwrap_err();
    let leftover = store
        .list_sessions(&SessionQuery::new())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|s| s.id != parent)
        .expect("the half-made fork stays when it cannot be deleted");
    assert_eq!(leftover.metadata[FORK_METADATA_KEY]["state"], "copying");
    assert_eq!(leftover.status, SessionStatus::Pending);

    store.layer().budget.store(usize::MAX, Ordering::SeqCst);
    manager.activate_session(&leftover.id).await.unwrap();
    let err = say_with(&manager, &leftover.id, "hello", Continuation::None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
    let err = manager.fork_session(&leftover.id, ForkPoint::Latest).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
    assert!(manager.session_runs(&leftover.id).await.unwrap().iter().all(|r| r.status == RunStatus::Pending));
}

#[tokio::test]
async fn a_user_metadata_key_named_fork_is_not_a_fork() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("ok"));
    let session = manager.start_session(NewSession::new("a").metadata(FORK_METADATA_KEY, "yes")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    let result = say_with(&manager, &session.id, "hi", Continuation::Auto).await.unwrap();
    assert_eq!(result.run.status, RunStatus::Completed);
    manager.fork_session(&session.id, ForkPoint::Latest).await.unwrap();
}
