//! [`ControlOperations`]: interrupt, cancel, pause and resume of executing runs, with a per-run
//! operation history.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use asm_core::{Error, ErrorCode, Result, RunId, RunStatus, SessionId, Timestamp};

use crate::SessionManager;

/// How many runs a [`ControlOperations`] remembers; the oldest finished ones are forgotten first.
const DEFAULT_HISTORY_RUNS: usize = 4_096;

/// A control operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Stop the run now (modelled as a cancel of its provider call).
    Interrupt,
    /// Cancel the run.
    Cancel,
    /// Pause the provider.
    Pause,
    /// Resume a paused provider.
    Resume,
}

asm_core::string_enum! {
    /// The snake_case name.
    Operation {
        Interrupt => "interrupt",
        Cancel => "cancel",
        Pause => "pause",
        Resume => "resume",
    }
}

/// What [`ControlOperations`] knows of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OperationState {
    /// Never registered nor touched.
    Unknown,
    /// Registered (or resumed) and not stopped.
    Running,
    /// Interrupted.
    Interrupted,
    /// Cancelled.
    Cancelled,
    /// Paused.
    Paused,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Exceeded its deadline.
    Timeout,
}

impl OperationState {
    /// Whether the run can no longer be controlled: cancelled, completed, failed or timeout.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            OperationState::Cancelled | OperationState::Completed | OperationState::Failed | OperationState::Timeout
        )
    }

    fn from_run_status(status: RunStatus) -> Self {
        match status {
            RunStatus::Completed => OperationState::Completed,
            RunStatus::Cancelled => OperationState::Cancelled,
            RunStatus::Timeout => OperationState::Timeout,
            RunStatus::Failed => OperationState::Failed,
            _ => OperationState::Running,
        }
    }
}

/// One entry of a run's operation history.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct OperationRecord {
    /// What was asked.
    pub operation: Operation,
    /// When.
    pub timestamp: Timestamp,
    /// How it went.
    pub result: std::result::Result<(), Error>,
}

/// [`ControlOperations::status`] of one run.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct OperationStatus {
    /// The most recent operation, if any.
    pub last_operation: Option<Operation>,
    /// The run's control state.
    pub state: OperationState,
    /// Every operation, oldest first.
    pub history: Vec<OperationRecord>,
}

/// Pauses and resumes provider executions.
///
/// The [`ProviderAdapter`](asm_ports::ProviderAdapter) port has no pause or resume operation, so
/// an application whose provider can pause supplies one of these to
/// [`ControlOperations::with_handler`].
#[async_trait]
pub trait ControlHandler: Send + Sync + fmt::Debug + 'static {
    /// Pauses the provider executing `run_id`.
    async fn pause(&self, run_id: &RunId) -> Result<()>;
    /// Resumes the provider executing `run_id`.
    async fn resume(&self, run_id: &RunId) -> Result<()>;
}

/// Interrupt, cancel, pause and resume executing runs, with a per-run operation history.
///
/// - `interrupt` and `cancel` stop a run through the [`SessionManager`] that executes it (the
///   one a [`SessionServer`](crate::SessionServer) registered it with, else the manager given
///   to [`new`](Self::new)); repeating the same operation on a run already in that state is a
///   no-op that returns `Ok`.
/// - `pause` and `resume` need an enabled adapter capability named `"pause"` / `"resume"`
///   (else [`ErrorCode::CapabilityNotSupported`]) and a [`ControlHandler`] (else
///   [`ErrorCode::ProviderError`]); a run in a terminal state cannot be paused or resumed
///   ([`ErrorCode::InvalidOperation`]); resuming a running run is a no-op.
/// - Every operation is recorded with its time and result. The history of the most recent 4,096
///   runs is kept.
///
/// A cheap, cloneable, `Send + Sync` handle.
///
/// ```
/// use asm_core::{ErrorCode, RunId};
/// use asm_runtime::{ControlOperations, OperationState, SessionManager};
/// # use asm_store_memory::InMemorySessionStore;
/// # use asm_testkit::ScriptedAdapter;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
/// let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::new());
/// let control = ControlOperations::new(manager);
/// let run = RunId::new();
/// // The scripted adapter advertises no "pause" capability.
/// assert_eq!(control.pause(&run).await.unwrap_err().code(), ErrorCode::CapabilityNotSupported);
/// assert_eq!(control.status(&run).state, OperationState::Unknown);
/// assert_eq!(control.history(&run).len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ControlOperations {
    inner: Arc<Inner>,
}

struct Inner {
    manager: SessionManager,
    handler: Option<Arc<dyn ControlHandler>>,
    history_runs: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    runs: HashMap<RunId, RunRecord>,
    /// Insertion order, for forgetting the oldest runs.
    order: VecDeque<RunId>,
}

struct RunRecord {
    session_id: Option<SessionId>,
    manager: Option<SessionManager>,
    state: OperationState,
    history: Vec<OperationRecord>,
}

impl fmt::Debug for ControlOperations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlOperations")
            .field("adapter", &self.inner.manager.adapter().name())
            .field("handler", &self.inner.handler)
            .field("runs", &self.inner.state.lock().runs.len())
            .finish()
    }
}

impl ControlOperations {
    /// Control operations over the runs `manager` executes (and any run registered with its own
    /// manager by a [`SessionServer`](crate::SessionServer)). Capabilities are those of
    /// `manager`'s adapter.
    pub fn new(manager: SessionManager) -> Self {
        Self {
            inner: Arc::new(Inner {
                manager,
                handler: None,
                history_runs: DEFAULT_HISTORY_RUNS,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The same operations with a pause / resume handler.
    #[must_use]
    pub fn with_handler(self, handler: impl ControlHandler) -> Self {
        let inner = Inner {
            manager: self.inner.manager.clone(),
            handler: Some(Arc::new(handler)),
            history_runs: self.inner.history_runs,
            state: Mutex::new(std::mem::take(&mut *self.inner.state.lock())),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Records that `run_id` of `session_id` is executing (state `running`).
    pub fn register_run(&self, session_id: &SessionId, run_id: &RunId) {
        self.register(session_id, run_id, None);
    }

    pub(crate) fn register_with(&self, session_id: &SessionId, run_id: &RunId, manager: &SessionManager) {
        self.register(session_id, run_id, Some(manager.clone()));
    }

    fn register(&self, session_id: &SessionId, run_id: &RunId, manager: Option<SessionManager>) {
        let mut state = self.inner.state.lock();
        let record = self.record(&mut state, run_id);
        record.session_id = Some(session_id.clone());
        if manager.is_some() {
            record.manager = manager;
        }
        if !record.state.is_terminal() {
            record.state = OperationState::Running;
        }
    }

    /// Records that `run_id` ended with `status` (a terminal status; others are ignored).
    pub fn finish_run(&self, run_id: &RunId, status: RunStatus) {
        if !status.is_terminal() {
            return;
        }
        let mut state = self.inner.state.lock();
        if let Some(record) = state.runs.get_mut(run_id) {
            record.manager = None;
            if !record.state.is_terminal() {
                record.state = OperationState::from_run_status(status);
            }
        }
    }

    /// Interrupts `run_id`: cancels its provider call. Already interrupted: `Ok` without doing
    /// anything again.
    ///
    /// # Errors
    /// Those of [`SessionManager::cancel_run`] (for example [`ErrorCode::RunNotFound`]).
    #[tracing::instrument(skip_all, fields(run_id = %run_id))]
    pub async fn interrupt(&self, run_id: &RunId) -> Result<RunId> {
        self.stop(run_id, Operation::Interrupt, OperationState::Interrupted).await
    }

    /// Cancels `run_id`. Already cancelled: `Ok` without doing anything again.
    ///
    /// # Errors
    /// Those of [`SessionManager::cancel_run`].
    #[tracing::instrument(skip_all, fields(run_id = %run_id))]
    pub async fn cancel(&self, run_id: &RunId) -> Result<RunId> {
        self.stop(run_id, Operation::Cancel, OperationState::Cancelled).await
    }

    async fn stop(&self, run_id: &RunId, operation: Operation, target: OperationState) -> Result<RunId> {
        let manager = {
            let mut state = self.inner.state.lock();
            let record = self.record(&mut state, run_id);
            if record.state == target {
                record.history.push(OperationRecord::new(operation, Ok(())));
                return Ok(run_id.clone());
            }
            record.manager.clone().unwrap_or_else(|| self.inner.manager.clone())
        };
        let result = manager.cancel_run(run_id).await;
        let mut state = self.inner.state.lock();
        let record = self.record(&mut state, run_id);
        record.history.push(OperationRecord::new(operation, result.clone()));
        result?;
        record.state = target;
        Ok(run_id.clone())
    }

    /// Pauses `run_id`. Already paused: `Ok`.
    ///
    /// # Errors
    /// [`ErrorCode::CapabilityNotSupported`] without an enabled `"pause"` capability,
    /// [`ErrorCode::InvalidOperation`] for a run in a terminal state, [`ErrorCode::ProviderError`]
    /// without a [`ControlHandler`], or the handler's error.
    #[tracing::instrument(skip_all, fields(run_id = %run_id))]
    pub async fn pause(&self, run_id: &RunId) -> Result<RunId> {
        self.pause_or_resume(run_id, Operation::Pause).await
    }

    /// Resumes `run_id`. Running: `Ok`.
    ///
    /// # Errors
    /// As [`pause`](Self::pause), with the `"resume"` capability.
    #[tracing::instrument(skip_all, fields(run_id = %run_id))]
    pub async fn resume(&self, run_id: &RunId) -> Result<RunId> {
        self.pause_or_resume(run_id, Operation::Resume).await
    }

    async fn pause_or_resume(&self, run_id: &RunId, operation: Operation) -> Result<RunId> {
        let (done_state, capability) = match operation {
            Operation::Pause => (OperationState::Paused, "pause"),
            _ => (OperationState::Running, "resume"),
        };
        let precheck = {
            let mut state = self.inner.state.lock();
            let current = state.runs.get(run_id).map_or(OperationState::Unknown, |r| r.state);
            let check = if current == done_state {
                Some(Ok(()))
            } else if current.is_terminal() {
                Some(Err(Error::new(
                    ErrorCode::InvalidOperation,
                    format!("cannot {} run {run_id}: it is {current:?}", operation.as_str()),
                )))
            } else if !self.has_capability(capability) {
                Some(Err(Error::new(
                    ErrorCode::CapabilityNotSupported,
                    format!("adapter {} does not advertise the {capability:?} capability", self.adapter_name()),
                )))
            } else {
                None
            };
            if let Some(result) = &check {
                self.record(&mut state, run_id).history.push(OperationRecord::new(operation, result.clone()));
            }
            check
        };
        if let Some(result) = precheck {
            return result.map(|()| run_id.clone());
        }
        let result = match &self.inner.handler {
            Some(handler) if operation == Operation::Pause => handler.pause(run_id).await,
            Some(handler) => handler.resume(run_id).await,
            None => Err(Error::new(
                ErrorCode::ProviderError,
                format!("Adapter does not support {}: no control handler is configured", operation.as_str()),
            )),
        };
        let mut state = self.inner.state.lock();
        let record = self.record(&mut state, run_id);
        record.history.push(OperationRecord::new(operation, result.clone()));
        result?;
        record.state = done_state;
        Ok(run_id.clone())
    }

    /// Cancels every run of `run_ids`; one result per run, in order.
    pub async fn cancel_all(&self, run_ids: &[RunId]) -> Vec<(RunId, Result<RunId>)> {
        let mut results = Vec::with_capacity(run_ids.len());
        for run_id in run_ids {
            results.push((run_id.clone(), self.cancel(run_id).await));
        }
        results
    }

    /// Interrupts every registered, not yet finished run of `session_id`.
    pub async fn interrupt_session(&self, session_id: &SessionId) -> Vec<(RunId, Result<RunId>)> {
        let runs: Vec<RunId> = {
            let state = self.inner.state.lock();
            state
                .order
                .iter()
                .filter(|id| {
                    state
                        .runs
                        .get(*id)
                        .is_some_and(|r| r.session_id.as_ref() == Some(session_id) && !r.state.is_terminal())
                })
                .cloned()
                .collect()
        };
        let mut results = Vec::with_capacity(runs.len());
        for run_id in runs {
            let result = self.interrupt(&run_id).await;
            results.push((run_id, result));
        }
        results
    }

    /// The control state and history of `run_id` (state [`OperationState::Unknown`] for a run
    /// never seen).
    pub fn status(&self, run_id: &RunId) -> OperationStatus {
        let state = self.inner.state.lock();
        match state.runs.get(run_id) {
            Some(record) => OperationStatus {
                last_operation: record.history.last().map(|r| r.operation),
                state: record.state,
                history: record.history.clone(),
            },
            None => OperationStatus { last_operation: None, state: OperationState::Unknown, history: Vec::new() },
        }
    }

    /// The operations applied to `run_id`, oldest first.
    pub fn history(&self, run_id: &RunId) -> Vec<OperationRecord> {
        self.inner.state.lock().runs.get(run_id).map(|r| r.history.clone()).unwrap_or_default()
    }

    fn has_capability(&self, name: &str) -> bool {
        self.inner.manager.adapter().capabilities().iter().any(|c| c.enabled && c.name == name)
    }

    fn adapter_name(&self) -> String {
        self.inner.manager.adapter().name().to_owned()
    }

    /// The record of `run_id`, created if needed (forgetting the oldest runs beyond the limit).
    fn record<'a>(&self, state: &'a mut State, run_id: &RunId) -> &'a mut RunRecord {
        if !state.runs.contains_key(run_id) {
            while state.order.len() >= self.inner.history_runs {
                match state.order.pop_front() {
                    Some(oldest) => {
                        state.runs.remove(&oldest);
                    }
                    None => break,
                }
            }
            state.order.push_back(run_id.clone());
        }
        state.runs.entry(run_id.clone()).or_insert_with(|| RunRecord {
            session_id: None,
            manager: None,
            state: OperationState::Unknown,
            history: Vec::new(),
        })
    }
}

impl OperationRecord {
    fn new(operation: Operation, result: std::result::Result<(), Error>) -> Self {
        Self { operation, timestamp: asm_core::now(), result }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states() {
        assert!(OperationState::Cancelled.is_terminal());
        assert!(OperationState::Timeout.is_terminal());
        assert!(!OperationState::Interrupted.is_terminal());
        assert!(!OperationState::Paused.is_terminal());
        assert_eq!(OperationState::from_run_status(RunStatus::Failed), OperationState::Failed);
    }
}
