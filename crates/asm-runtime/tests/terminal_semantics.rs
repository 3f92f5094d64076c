//! Cancel and terminal-state semantics of `SessionManager`, on every store: a cancel racing the
//! start of an execution, a cancel racing its end, cancelling a finished run, and a provider
//! error too large to store.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use asm_core::{
    Error, ErrorCode, Event, EventKind, Result, Run, RunId, RunInput, RunStatus, Session, SessionId, StoredEvent,
};
use asm_ports::{
    DynSessionStore, EventQuery, ExecutionRecord, HookAction, Layered, RunContext, RunFinish, RunHook, SessionStore,
    StoreLayer,
};
use asm_runtime::{NewSession, RunOptions, SessionManager};
use asm_store_memory::InMemorySessionStore;
use asm_store_redb::RedbSessionStore;
use asm_store_sled::SledSessionStore;
use asm_testkit::ScriptedAdapter;

const WAIT: Duration = Duration::from_secs(20);

/// A pass-through layer that yields to the scheduler a few times before every write and read
/// of a run (a "slow" store that widens every window between a read and the write that follows
/// it), and can fail the next N terminal flushes (except minimal terminal records).
#[derive(Debug)]
struct Intercept {
    calls: AtomicUsize,
    yielding: bool,
    terminal_flush_failures: AtomicUsize,
    /// When armed, the next `get_run` says so and then waits until a flush stores `run_started`.
    held_read: parking_lot::Mutex<Option<Arc<HeldRead>>>,
    /// The armed hold, kept so that the flush that stores `run_started` can release it.
    hold: parking_lot::Mutex<Option<Arc<HeldRead>>>,
}

type InterceptingStore = Layered<DynSessionStore, Intercept>;

#[derive(Debug, Default)]
struct HeldRead {
    waiting: Notify,
    run_started: Notify,
}

impl Intercept {
    fn yielding(inner: DynSessionStore) -> DynSessionStore {
        Arc::new(Self::store(inner, true, 0))
    }
    fn store(inner: DynSessionStore, yielding: bool, failures: usize) -> InterceptingStore {
        Layered::new(
            inner,
            Self {
                calls: AtomicUsize::new(0),
                yielding,
                terminal_flush_failures: AtomicUsize::new(failures),
                held_read: parking_lot::Mutex::new(None),
                hold: parking_lot::Mutex::new(None),
            },
        )
    }
    /// Holds the next `get_run` until `run_started` is stored.
    fn hold_next_run_read(&self) -> Arc<HeldRead> {
        let held = Arc::new(HeldRead::default());
        *self.held_read.lock() = Some(held.clone());
        *self.hold.lock() = Some(held.clone());
        held
    }
    fn failing_terminal_flushes(inner: DynSessionStore, failures: usize) -> DynSessionStore {
        Arc::new(Self::store(inner, false, failures))
    }
    async fn pause(&self) {
        if !self.yielding {
            return;
        }
        let n = self.calls.fetch_add(1, Ordering::Relaxed) % 7;
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }
}

#[async_trait]
impl StoreLayer for Intercept {
    async fn save_session(&self, inner: &dyn SessionStore, session: &Session) -> Result<()> {
        self.pause().await;
        inner.save_session(session).await
    }
    async fn get_session(&self, inner: &dyn SessionStore, id: &SessionId) -> Result<Session> {
        self.pause().await;
        inner.get_session(id).await
    }
    async fn save_run(&self, inner: &dyn SessionStore, run: &Run) -> Result<()> {
        self.pause().await;
        inner.save_run(run).await
    }
    async fn get_run(&self, inner: &dyn SessionStore, id: &RunId) -> Result<Run> {
        self.pause().await;
        let held = self.held_read.lock().take();
        if let Some(held) = held {
            held.waiting.notify_one();
            held.run_started.notified().await;
        }
        inner.get_run(id).await
    }
    async fn append(
        &self,
        inner: &dyn SessionStore,
        events: Vec<Event>,
        expected_last_sequence: Option<u64>,
    ) -> Result<Vec<StoredEvent>> {
        self.pause().await;
        inner.append(events, expected_last_sequence).await
    }
    async fn flush(&self, inner: &dyn SessionStore, record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        self.pause().await;
        let minimal = record.run.error.as_ref().is_some_and(|e| e.details().contains_key("terminal_record"));
        if record.run.status.is_terminal()
            && !minimal
            && self
                .terminal_flush_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(Error::new(ErrorCode::StorageWriteFailed, "injected failure"));
        }
        let starts = record.events.iter().any(|e| e.kind == EventKind::RunStarted);
        let stored = inner.flush(record).await;
        if starts
            && stored.is_ok()
            && let Some(held) = self.hold.lock().take()
        {
            held.run_started.notify_one();
        }
        stored
    }
}

/// The three stores, each in its own temporary directory where it has one.
fn stores() -> Vec<(&'static str, DynSessionStore, Option<tempfile::TempDir>)> {
    let redb_dir = tempfile::tempdir().unwrap();
    let sled_dir = tempfile::tempdir().unwrap();
    let redb: DynSessionStore = Arc::new(RedbSessionStore::open(redb_dir.path().join("s.redb")).unwrap());
    let sled: DynSessionStore = Arc::new(SledSessionStore::open(sled_dir.path().join("s.sled")).unwrap());
    vec![
        ("memory", Arc::new(InMemorySessionStore::new()), None),
        ("redb", redb, Some(redb_dir)),
        ("sled", sled, Some(sled_dir)),
    ]
}

async fn active_session(manager: &SessionManager) -> SessionId {
    let session = manager.start_session(NewSession::new("agent")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    session.id
}

/// Starts a run, spawns its execution, then yields `yields` times (a different interleaving for
/// each iteration of a race test).
async fn start_and_spawn(
    manager: &SessionManager,
    session: &SessionId,
    yields: usize,
) -> (Run, tokio::task::JoinHandle<Result<asm_runtime::RunResult>>) {
    let run = manager.start_run(session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let execution = {
        let manager = manager.clone();
        let run_id = run.id.clone();
        tokio::spawn(async move { manager.execute_run(&run_id, RunOptions::default()).await })
    };
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
    (run, execution)
}

/// The run's events, and the checks every log must pass: one terminal event, nothing of the run
/// after it, at most one `run_started` and only before any provider event.
async fn assert_run_log(store: &DynSessionStore, session: &SessionId, run: &RunId, what: &str) -> Vec<EventKind> {
    let events = store.get_events(session, &EventQuery::new().run(run.clone())).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    let terminals = kinds.iter().filter(|k| k.is_run_terminal()).count();
    assert_eq!(terminals, 1, "{what}: exactly one terminal event expected: {kinds:?}");
    let terminal_at = kinds.iter().position(|k| k.is_run_terminal()).unwrap();
    assert!(
        kinds[terminal_at + 1..].iter().all(|k| *k == EventKind::ToolApprovalRequested),
        "{what}: events of the run after its terminal event: {kinds:?}"
    );
    assert!(kinds.iter().filter(|k| **k == EventKind::RunStarted).count() <= 1, "{what}: {kinds:?}");
    kinds
}

/// A1: a cancel racing the start of `execute_run` on a slow store. An acknowledged cancel means
/// the execution returns `cancelled`; if the provider was never called, no `run_started` exists;
/// nothing of the run is appended after its terminal event; a hanging provider is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_the_start_of_an_execution_always_wins() {
    for (name, store, _dir) in stores() {
        let store = Intercept::yielding(store);
        let adapter = ScriptedAdapter::replying("partial").hanging();
        let manager = SessionManager::from_shared(store.clone(), Arc::new(adapter.clone()));
        let session = active_session(&manager).await;
        for i in 0..60 {
            let (run, execution) = start_and_spawn(&manager, &session, i % 5).await;
            manager.cancel_run(&run.id).await.unwrap_or_else(|e| panic!("{name} #{i}: cancel refused: {e}"));
            // Read after the acknowledgement: if the run had not started then, it had not when
            // the cancel was acknowledged.
            let started = EventQuery::new().run(run.id.clone()).kind(EventKind::RunStarted);
            let not_started_at_ack = store.get_events(&session, &started).await.unwrap().is_empty();
            let calls_at_ack = adapter.requests().len();
            let result = tokio::time::timeout(WAIT, execution)
                .await
                .unwrap_or_else(|_| panic!("{name} #{i}: execute_run never returned after an acknowledged cancel"))
                .unwrap();
            assert_eq!(result.unwrap_err().code(), ErrorCode::Cancelled, "{name} #{i}");
            if not_started_at_ack {
                assert_eq!(
                    adapter.requests().len(),
                    calls_at_ack,
                    "{name} #{i}: a run cancelled before it started reached the provider"
                );
            }
            assert_eq!(store.get_run(&run.id).await.unwrap().status, RunStatus::Cancelled, "{name} #{i}");
            assert_run_log(&store, &session, &run.id, &format!("{name} #{i}")).await;
        }
    }
}

/// A hook whose `on_finish` waits until the test lets it go, after saying it got there.
#[derive(Debug, Default)]
struct GatedFinish {
    reached: Notify,
    release: Notify,
}

#[async_trait]
impl RunHook for GatedFinish {
    async fn on_finish(&self, _ctx: &RunContext, _finish: &RunFinish) -> Result<HookAction> {
        self.reached.notify_one();
        self.release.notified().await;
        Ok(HookAction::none())
    }
}

/// A2: a cancel acknowledged while the run is still `running` (here: while a finish hook runs
/// after the provider succeeded) wins: the run ends `cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_acknowledged_during_the_finish_hooks_wins() {
    for (name, store, _dir) in stores() {
        let manager = SessionManager::from_shared(store.clone(), Arc::new(ScriptedAdapter::replying("done")));
        let session = active_session(&manager).await;
        let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
        let gate = Arc::new(GatedFinish::default());
        let execution = {
            let manager = manager.clone();
            let run_id = run.id.clone();
            let hook: Arc<dyn RunHook> = gate.clone();
            tokio::spawn(async move { manager.execute_run(&run_id, RunOptions::default().hook(hook)).await })
        };
        tokio::time::timeout(WAIT, gate.reached.notified()).await.expect("the finish hook never ran");
        manager.cancel_run(&run.id).await.unwrap_or_else(|e| panic!("{name}: cancel of a running run refused: {e}"));
        gate.release.notify_one();
        let result = tokio::time::timeout(WAIT, execution).await.unwrap().unwrap();
        assert_eq!(result.unwrap_err().code(), ErrorCode::Cancelled, "{name}: an acknowledged cancel was ignored");
        assert_eq!(store.get_run(&run.id).await.unwrap().status, RunStatus::Cancelled, "{name}");
        let kinds = assert_run_log(&store, &session, &run.id, name).await;
        assert_eq!(kinds.last(), Some(&EventKind::RunCancelled), "{name}");
    }
}

/// A2 and A3: cancelling as the run finishes. Either the cancel is acknowledged and the run ends
/// `cancelled`, or it is refused with `invalid_transition` and the run ended otherwise; a run
/// whose end is stored can never be cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_as_the_run_finishes_is_never_acknowledged_and_ignored() {
    for (name, store, _dir) in stores() {
        let manager = SessionManager::from_shared(store.clone(), Arc::new(ScriptedAdapter::replying("done")));
        let session = active_session(&manager).await;
        let (mut acknowledged, mut refused) = (0, 0);
        for i in 0..60 {
            let (run, execution) = start_and_spawn(&manager, &session, i % 9).await;
            let cancel = manager.cancel_run(&run.id).await;
            let result = tokio::time::timeout(WAIT, execution).await.unwrap().unwrap();
            let stored = store.get_run(&run.id).await.unwrap();
            match cancel {
                Ok(()) => {
                    acknowledged += 1;
                    assert_eq!(
                        stored.status,
                        RunStatus::Cancelled,
                        "{name} #{i}: cancel acknowledged, run not cancelled"
                    );
                    assert_eq!(result.unwrap_err().code(), ErrorCode::Cancelled, "{name} #{i}");
                }
                Err(error) => {
                    refused += 1;
                    assert_eq!(error.code(), ErrorCode::InvalidTransition, "{name} #{i}: {error}");
                    assert_eq!(stored.status, RunStatus::Completed, "{name} #{i}");
                    assert!(result.is_ok(), "{name} #{i}");
                }
            }
            assert_run_log(&store, &session, &run.id, &format!("{name} #{i}")).await;
            let again = manager.cancel_run(&run.id).await.unwrap_err();
            assert_eq!(again.code(), ErrorCode::InvalidTransition, "{name} #{i}: cancelling a finished run");
        }
        assert!(acknowledged + refused == 60, "{name}");
    }
}

/// A4: a provider error whose message and details exceed the stores' event cap still ends the
/// run with exactly one terminal event; the stored error is bounded and marked, the caller gets
/// the provider's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_provider_error_still_ends_the_run() {
    let huge = "e".repeat(20 * 1024 * 1024);
    for (name, store, _dir) in stores() {
        let error = Error::new(ErrorCode::ProviderRateLimited, huge.clone()).with_detail("dump", huge.clone());
        let manager = SessionManager::from_shared(store.clone(), Arc::new(ScriptedAdapter::new().failing(error)));
        let session = active_session(&manager).await;
        let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
        let err = manager.execute_run(&run.id, RunOptions::default()).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ProviderRateLimited, "{name}: the caller must get the provider's code");
        let stored = store.get_run(&run.id).await.unwrap();
        assert_eq!(stored.status, RunStatus::Failed, "{name}");
        let stored_error = stored.error.unwrap();
        assert_eq!(stored_error.code(), ErrorCode::ProviderRateLimited, "{name}");
        assert!(stored_error.message().len() < 1024 * 1024, "{name}: message not bounded");
        assert_eq!(stored_error.details()["message_truncated"], true, "{name}");
        assert_eq!(stored_error.details()["details_truncated"], true, "{name}");
        let kinds = assert_run_log(&store, &session, &run.id, name).await;
        assert_eq!(kinds.last(), Some(&EventKind::RunFailed), "{name}");
    }
}

/// A4: when the terminal write fails, the run still gets exactly one terminal event, from a
/// minimal record with the provider's code.
#[tokio::test]
async fn a_failed_terminal_write_is_retried_with_a_minimal_record() {
    let store = Intercept::failing_terminal_flushes(Arc::new(InMemorySessionStore::new()), 1);
    let error = Error::new(ErrorCode::ProviderAuthenticationFailed, "401").with_detail("body", "x");
    let manager = SessionManager::from_shared(store.clone(), Arc::new(ScriptedAdapter::new().failing(error)));
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let err = manager.execute_run(&run.id, RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderAuthenticationFailed);
    let stored = store.get_run(&run.id).await.unwrap();
    assert_eq!(stored.status, RunStatus::Failed);
    assert_eq!(stored.error.unwrap().code(), ErrorCode::ProviderAuthenticationFailed);
    let kinds = assert_run_log(&store, &session, &run.id, "minimal").await;
    assert_eq!(kinds.last(), Some(&EventKind::RunFailed));
}

/// A1, the exact interleaving: the cancel is held just before it reads the run, the execution starts meanwhile (`running`, with a
/// provider that hangs until cancelled), then the cancel reads `running`. It must stop the
/// execution through its token, not end the run in the store behind the execution's back
/// (which left the hanging provider running forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_reads_a_running_run_of_this_process_stops_it_through_its_token() {
    let store = Arc::new(Intercept::store(Arc::new(InMemorySessionStore::new()), false, 0));
    let adapter = ScriptedAdapter::new().hanging();
    let manager = SessionManager::from_shared(store.clone(), Arc::new(adapter.clone()));
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let held = store.layer().hold_next_run_read();
    let cancel = {
        let manager = manager.clone();
        let run_id = run.id.clone();
        tokio::spawn(async move { manager.cancel_run(&run_id).await })
    };
    tokio::time::timeout(WAIT, held.waiting.notified()).await.expect("the cancel never read the run");
    let execution = {
        let manager = manager.clone();
        let run_id = run.id.clone();
        tokio::spawn(async move { manager.execute_run(&run_id, RunOptions::default()).await })
    };
    tokio::time::timeout(WAIT, cancel).await.expect("cancel_run hung").unwrap().unwrap();
    let result = tokio::time::timeout(WAIT, execution).await.expect("execute_run never returned").unwrap();
    assert_eq!(result.unwrap_err().code(), ErrorCode::Cancelled);
    let store: DynSessionStore = store;
    let kinds = assert_run_log(&store, &session, &run.id, "held read").await;
    assert_eq!(kinds.last(), Some(&EventKind::RunCancelled));
}
