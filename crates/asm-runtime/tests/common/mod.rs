//! Helpers shared by the runtime's integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};

use asm_core::{Capability, Error, ErrorCode, EventKind, Result, RunId, SessionId, StoredEvent};
use asm_ports::{EventQuery, EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent, SessionStore};

/// The bound of every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// How a gated run ends once released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeed,
    Fail,
    Panic,
}

/// A provider adapter driven by the run's prompt:
///
/// - `ok ...`: emits one `message_received` and succeeds at once;
/// - `fail`: fails with `provider_error`; `panic`: panics; `hang`: waits until cancelled;
/// - `wait ...`: announces itself, then waits until the test releases it with an [`Outcome`]
///   (or until cancelled).
///
/// Every execution announces its run id on the `started` channel first.
#[derive(Clone, Debug)]
pub struct GatedAdapter {
    started: mpsc::UnboundedSender<RunId>,
    gates: Arc<Gates>,
    calls: Arc<AtomicUsize>,
    capabilities: Vec<Capability>,
}

type Gate = (Arc<Semaphore>, Arc<Mutex<Outcome>>);

#[derive(Debug, Default)]
pub struct Gates {
    gates: Mutex<HashMap<RunId, Gate>>,
}

impl Gates {
    fn gate(&self, run_id: &RunId) -> Gate {
        self.gates
            .lock()
            .entry(run_id.clone())
            .or_insert_with(|| (Arc::new(Semaphore::new(0)), Arc::new(Mutex::new(Outcome::Succeed))))
            .clone()
    }

    /// Lets a `wait` run finish with `outcome` (before or after it started).
    pub fn release(&self, run_id: &RunId, outcome: Outcome) {
        let (semaphore, slot) = self.gate(run_id);
        *slot.lock() = outcome;
        semaphore.add_permits(1);
    }
}

pub struct Started(pub mpsc::UnboundedReceiver<RunId>);

impl Started {
    /// The next run that reached the adapter.
    pub async fn next(&mut self) -> RunId {
        tokio::time::timeout(WAIT, self.0.recv()).await.expect("no run reached the adapter in time").unwrap()
    }

    /// No run reached the adapter so far.
    pub fn none_yet(&mut self) -> bool {
        self.0.try_recv().is_err()
    }
}

impl GatedAdapter {
    pub fn new() -> (Self, Arc<Gates>, Started) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gates = Arc::new(Gates::default());
        let adapter =
            Self { started: tx, gates: gates.clone(), calls: Arc::new(AtomicUsize::new(0)), capabilities: Vec::new() };
        (adapter, gates, Started(rx))
    }

    pub fn with_capabilities(mut self, capabilities: Vec<Capability>) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// How many executions reached the adapter.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn cancelled() -> Error {
    Error::new(ErrorCode::Cancelled, "run cancelled")
}

#[async_trait]
impl ProviderAdapter for GatedAdapter {
    fn name(&self) -> &str {
        "gated"
    }

    fn capabilities(&self) -> Vec<Capability> {
        self.capabilities.clone()
    }

    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let prompt = request.run.input.prompt();
        let _ = self.started.send(request.run.id.clone());
        let cancel = request.cancel.clone();
        let outcome = if prompt.starts_with("wait") {
            let (semaphore, outcome) = self.gates.gate(&request.run.id);
            tokio::select! {
                permit = semaphore.acquire() => permit.map(|p| p.forget()).map_err(|_| cancelled())?,
                () = cancel.cancelled() => return Err(cancelled()),
            }
            *outcome.lock()
        } else if prompt.starts_with("fail") {
            Outcome::Fail
        } else if prompt.starts_with("panic") {
            Outcome::Panic
        } else if prompt.starts_with("hang") {
            cancel.cancelled().await;
            return Err(cancelled());
        } else {
            Outcome::Succeed
        };
        match outcome {
            Outcome::Succeed => {
                sink.emit(
                    ProviderEvent::new(EventKind::MessageReceived)
                        .data("role", "assistant")
                        .data("content", prompt.clone()),
                )
                .await?;
                Ok(ExecuteOutcome::text(prompt))
            }
            Outcome::Fail => Err(Error::new(ErrorCode::ProviderError, "scripted failure")),
            Outcome::Panic => panic!("gated adapter panics on request"),
        }
    }
}

pub async fn all_events(store: &dyn SessionStore, session: &SessionId) -> Vec<StoredEvent> {
    store.get_events(session, &EventQuery::new()).await.unwrap()
}

pub fn kinds(events: &[StoredEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

/// The log is numbered 1..=n; every run has at most one `run_started`, exactly one terminal
/// event, and nothing but approval requests after it.
pub fn assert_log_invariants(events: &[StoredEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.sequence, Some(i as u64 + 1), "sequence gap at position {i}");
    }
    let mut runs: Vec<RunId> = Vec::new();
    for e in events {
        if let Some(run) = &e.run_id
            && !runs.contains(run)
        {
            runs.push(run.clone());
        }
    }
    for run in runs {
        let of_run: Vec<&StoredEvent> = events.iter().filter(|e| e.run_id.as_ref() == Some(&run)).collect();
        let starts = of_run.iter().filter(|e| e.kind == EventKind::RunStarted).count();
        let terminals = of_run.iter().filter(|e| e.kind.is_run_terminal()).count();
        let kinds: Vec<EventKind> = of_run.iter().map(|e| e.kind).collect();
        assert!(starts <= 1, "run {run} has {starts} run_started: {kinds:?}");
        assert_eq!(terminals, 1, "run {run} must have exactly one terminal event: {kinds:?}");
        let last_terminal = of_run.iter().rposition(|e| e.kind.is_run_terminal()).unwrap();
        assert!(
            of_run[last_terminal + 1..].iter().all(|e| e.kind == EventKind::ToolApprovalRequested),
            "nothing may follow the terminal event of run {run}: {kinds:?}"
        );
    }
}

/// Polls `condition` (a bounded wait, for state that has no notification).
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A session server on `store` for a new session "a", whose runs a [`ScriptedAdapter`] that
/// succeeds at once executes.
///
/// [`ScriptedAdapter`]: asm_testkit::ScriptedAdapter
pub async fn scripted_server_on(store: &asm_store_memory::InMemorySessionStore) -> asm_runtime::SessionServer {
    asm_runtime::SessionServer::start(
        asm_runtime::ServerConfig::new(store.clone(), asm_testkit::ScriptedAdapter::new())
            .create(asm_runtime::NewSession::new("a")),
    )
    .await
    .unwrap()
}

/// Executes `run_id` with `options` on a spawned task.
pub fn spawn_execute_run(
    manager: &asm_runtime::SessionManager,
    run_id: &RunId,
    options: asm_runtime::RunOptions,
) -> tokio::task::JoinHandle<Result<asm_runtime::RunResult>> {
    let manager = manager.clone();
    let run_id = run_id.clone();
    tokio::spawn(async move { manager.execute_run(&run_id, options).await })
}
