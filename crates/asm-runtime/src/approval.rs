//! Live tool approvals: the per-run gate the runtime hands to adapters in
//! [`ExecuteRequest::approvals`](asm_ports::ExecuteRequest::approvals), the per-session memory
//! of `*_always` decisions, and [`ApprovalQueue`], the handler an application answers.
//!
//! Configure a handler on the manager ([`SessionManager::approvals`](crate::SessionManager::approvals),
//! or [`ServerConfig::approvals`](crate::ServerConfig::approvals)); without one, adapters get
//! `approvals: None` and keep their own configured answer.
//!
//! What the gate does for one tool call the adapter asks about:
//!
//! 1. a `*_always` decision remembered for the session and the tool answers at once
//!    (`decided_by: "session_memory"`), recorded as `tool_approval_granted` / `_denied` with
//!    `wait_ms: 0` (no `tool_approval_requested`: nobody was asked). The memory is the
//!    session's log: on first use in a process the gate reads the session's earlier
//!    `tool_approval_granted` / `_denied` events, so remembered decisions survive restarts;
//! 2. otherwise it records `tool_approval_requested` (`approval_id`, `tool_name`,
//!    `tool_call_id`, `tool_input`) through the run's event path (sequenced, stored, seen by the
//!    hooks, the run's callback and the session's subscribers), and awaits the handler, bounded by
//!    the timeout (then `deny_once`, `decided_by: "timeout"`) and raced against the run's
//!    cancellation (then `deny_once`, `decided_by: "cancelled"`; the run ends `cancelled`); a
//!    handler error is a `deny_once` with the error's message as the reason
//!    (`decided_by: "error"`);
//! 3. it records `tool_approval_granted` or `tool_approval_denied` with `decision`,
//!    `decided_by`, `reason`, `wait_ms`, `tool_name`, `tool_call_id` and `approval_id`, and
//!    remembers a `*_always` decision for the session.
//!
//! The run stays `running` throughout. The gate's own records are accepted while the run is
//! being cancelled (the denial is part of the cancelled run's story, before `run_cancelled`).
//! A gate whose records cannot be stored returns the store's error: adapters answer an error
//! with a denial (fail closed).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{OnceCell, oneshot, watch};

use asm_core::{ApprovalId, Error, ErrorCode, EventKind, JsonMap, Result, RunId, SessionId, StoredEvent, keys};
use asm_ports::{
    ApprovalDecision, ApprovalHandler, ApprovalRequest, ApprovalVerdict, CancellationToken, DynApprovalHandler,
    DynSessionStore, EventQuery,
};

/// How long the gate waits for a decision when the application did not say (5 minutes).
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);

/// `decided_by` of an answer from the session's remembered `*_always` decisions.
pub const DECIDED_BY_SESSION_MEMORY: &str = "session_memory";
/// `decided_by` of a denial because the handler did not answer in time.
pub const DECIDED_BY_TIMEOUT: &str = "timeout";
/// `decided_by` of a denial because the run was cancelled while waiting.
pub const DECIDED_BY_CANCELLED: &str = "cancelled";
/// `decided_by` of a denial because the handler failed.
pub const DECIDED_BY_ERROR: &str = "error";

/// Page size when reading a session's earlier approval decisions.
const MEMORY_PAGE: usize = 1_000;

/// The approval configuration of a manager: the application's handler, the timeout and the
/// sessions' remembered decisions (shared by every clone of the manager).
#[derive(Clone)]
pub(crate) struct ApprovalConfig {
    pub(crate) handler: Option<DynApprovalHandler>,
    pub(crate) timeout: Duration,
    pub(crate) memory: Arc<ApprovalMemory>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self { handler: None, timeout: DEFAULT_APPROVAL_TIMEOUT, memory: Arc::default() }
    }
}

impl fmt::Debug for ApprovalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalConfig")
            .field("handler", &self.handler)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The `*_always` decisions of each session, per tool name.
#[derive(Default)]
pub(crate) struct ApprovalMemory {
    sessions: Mutex<HashMap<SessionId, Arc<SessionMemory>>>,
}

#[derive(Default)]
struct SessionMemory {
    /// Filled from the session's log on first use.
    loaded: OnceCell<()>,
    decisions: Mutex<HashMap<String, ApprovalDecision>>,
}

impl ApprovalMemory {
    async fn session(&self, store: &DynSessionStore, session_id: &SessionId) -> Result<Arc<SessionMemory>> {
        let memory = self.sessions.lock().entry(session_id.clone()).or_default().clone();
        memory
            .loaded
            .get_or_try_init(|| async {
                let remembered = remembered_decisions(store, session_id).await?;
                let mut decisions = memory.decisions.lock();
                for (tool, decision) in remembered {
                    // A decision made in this process meanwhile is newer than the log read.
                    decisions.entry(tool).or_insert(decision);
                }
                Ok::<(), Error>(())
            })
            .await?;
        Ok(memory)
    }
}

/// The session's `*_always` decisions by tool, from its `tool_approval_granted` / `_denied`
/// events (the latest per tool wins).
async fn remembered_decisions(
    store: &DynSessionStore,
    session_id: &SessionId,
) -> Result<HashMap<String, ApprovalDecision>> {
    let mut found = HashMap::new();
    let mut after = 0;
    loop {
        let mut query = EventQuery::new().after(after).limit(MEMORY_PAGE);
        query.kinds = vec![EventKind::ToolApprovalGranted, EventKind::ToolApprovalDenied];
        let page = store.get_events(session_id, &query).await?;
        let Some(last) = page.last().map(StoredEvent::sequence) else { break };
        after = last;
        for event in &page {
            let tool = event.data.get(keys::TOOL_NAME).and_then(|v| v.as_str());
            let decision =
                event.data.get(keys::DECISION).and_then(|v| v.as_str()).and_then(|d| ApprovalDecision::parse(d).ok());
            if let (Some(tool), Some(decision)) = (tool, decision)
                && decision.is_always()
            {
                found.insert(tool.to_owned(), decision);
            }
        }
        if page.len() < MEMORY_PAGE {
            break;
        }
    }
    Ok(found)
}

/// Where the gate records its events: the run's event path (see `execution.rs`).
#[async_trait]
pub(crate) trait ApprovalRecorder: Send + Sync {
    /// Persists a runtime event of the run (sequenced, hooked, observed), also while the run is
    /// being cancelled.
    async fn record(&self, kind: EventKind, data: JsonMap) -> Result<StoredEvent>;
}

/// The handler the runtime hands to the adapter for one run.
pub(crate) struct RunGate {
    pub(crate) handler: DynApprovalHandler,
    pub(crate) timeout: Duration,
    pub(crate) memory: Arc<ApprovalMemory>,
    pub(crate) store: DynSessionStore,
    pub(crate) recorder: Arc<dyn ApprovalRecorder>,
    pub(crate) cancel: CancellationToken,
    pub(crate) session_id: SessionId,
    pub(crate) run_id: RunId,
}

impl fmt::Debug for RunGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunGate")
            .field("handler", &self.handler)
            .field("timeout", &self.timeout)
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ApprovalHandler for RunGate {
    async fn decide(&self, request: &ApprovalRequest) -> Result<ApprovalVerdict> {
        let mut request = request.clone();
        // The run's own ids, whatever the adapter filled in.
        request.session_id = self.session_id.clone();
        request.run_id = self.run_id.clone();
        let memory = self.memory.session(&self.store, &self.session_id).await?;
        let remembered = memory.decisions.lock().get(&request.tool_name).copied();
        if let Some(decision) = remembered {
            let verdict = ApprovalVerdict::new(decision, DECIDED_BY_SESSION_MEMORY)
                .reason(format!("{decision} was decided earlier in this session for {}", request.tool_name));
            self.record_verdict(&request, &verdict, Duration::ZERO).await?;
            return Ok(verdict);
        }

        let mut asked = JsonMap::new();
        asked.insert(keys::APPROVAL_ID.into(), request.id.as_str().into());
        asked.insert(keys::TOOL_NAME.into(), request.tool_name.clone().into());
        if let Some(id) = &request.tool_call_id {
            asked.insert(keys::TOOL_CALL_ID.into(), id.clone().into());
        }
        asked.insert(keys::TOOL_INPUT.into(), request.tool_input.clone());
        asked.insert(keys::PROVIDER.into(), request.provider.clone().into());
        self.recorder.record(EventKind::ToolApprovalRequested, asked).await?;

        let started = Instant::now();
        let verdict = tokio::select! {
            biased;
            () = self.cancel.cancelled() => ApprovalVerdict::new(ApprovalDecision::DenyOnce, DECIDED_BY_CANCELLED)
                .reason("the run was cancelled while the tool call waited for approval"),
            decided = tokio::time::timeout(self.timeout, self.handler.decide(&request)) => match decided {
                Ok(Ok(verdict)) => verdict,
                Ok(Err(error)) => ApprovalVerdict::new(ApprovalDecision::DenyOnce, DECIDED_BY_ERROR)
                    .reason(format!("the approval handler failed: {}", error.message())),
                Err(_) => ApprovalVerdict::new(ApprovalDecision::DenyOnce, DECIDED_BY_TIMEOUT).reason(format!(
                    "no decision within {} ms",
                    self.timeout.as_millis()
                )),
            },
        };
        if verdict.decision.is_always() {
            memory.decisions.lock().insert(request.tool_name.clone(), verdict.decision);
        }
        self.record_verdict(&request, &verdict, started.elapsed()).await?;
        Ok(verdict)
    }
}

impl RunGate {
    async fn record_verdict(
        &self,
        request: &ApprovalRequest,
        verdict: &ApprovalVerdict,
        waited: Duration,
    ) -> Result<()> {
        let kind =
            if verdict.decision.allows() { EventKind::ToolApprovalGranted } else { EventKind::ToolApprovalDenied };
        let mut data = JsonMap::new();
        data.insert(keys::APPROVAL_ID.into(), request.id.as_str().into());
        data.insert(keys::TOOL_NAME.into(), request.tool_name.clone().into());
        if let Some(id) = &request.tool_call_id {
            data.insert(keys::TOOL_CALL_ID.into(), id.clone().into());
        }
        data.insert(keys::DECISION.into(), verdict.decision.as_str().into());
        data.insert(keys::DECIDED_BY.into(), verdict.decided_by.clone().into());
        if let Some(reason) = &verdict.reason {
            data.insert(keys::REASON.into(), reason.clone().into());
        }
        data.insert(keys::WAIT_MS.into(), u64::try_from(waited.as_millis()).unwrap_or(u64::MAX).into());
        self.recorder.record(kind, data).await.map(drop)
    }
}

// ----- the queue ------------------------------------------------------------------------------

/// Why [`ApprovalQueue::answer`] refused an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerError {
    /// No request with this id was ever queued here (or it is too old to be remembered).
    Unknown(ApprovalId),
    /// The request was answered before; `verdict` is the answer that stands.
    AlreadyAnswered {
        /// The request.
        id: ApprovalId,
        /// The first answer.
        verdict: ApprovalVerdict,
    },
    /// The request no longer waits: its run stopped waiting (the approval timed out, the run
    /// was cancelled or ended).
    NoLongerWaiting(ApprovalId),
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(id) => write!(f, "approval request {id} not found"),
            Self::AlreadyAnswered { id, verdict } => {
                write!(f, "approval request {id} was already answered ({} by {})", verdict.decision, verdict.decided_by)
            }
            Self::NoLongerWaiting(id) => {
                write!(f, "approval request {id} no longer waits (timed out, or its run was cancelled or ended)")
            }
        }
    }
}

impl std::error::Error for AnswerError {}

impl From<AnswerError> for Error {
    /// [`ErrorCode::NotFound`] for an unknown id, [`ErrorCode::InvalidTransition`] for a request
    /// already answered or no longer waiting; `details.approval_id` and `details.reason`
    /// (`unknown`, `already_answered` with `decision` and `decided_by`, `no_longer_waiting`).
    fn from(error: AnswerError) -> Self {
        let message = error.to_string();
        match error {
            AnswerError::Unknown(id) => Error::new(ErrorCode::NotFound, message)
                .with_detail(keys::APPROVAL_ID, id.as_str())
                .with_detail(keys::REASON, "unknown"),
            AnswerError::AlreadyAnswered { id, verdict } => Error::new(ErrorCode::InvalidTransition, message)
                .with_detail(keys::APPROVAL_ID, id.as_str())
                .with_detail(keys::REASON, "already_answered")
                .with_detail(keys::DECISION, verdict.decision.as_str())
                .with_detail(keys::DECIDED_BY, verdict.decided_by),
            AnswerError::NoLongerWaiting(id) => Error::new(ErrorCode::InvalidTransition, message)
                .with_detail(keys::APPROVAL_ID, id.as_str())
                .with_detail(keys::REASON, "no_longer_waiting"),
        }
    }
}

/// How a request left the queue without an answer, or the answer it got.
#[derive(Clone, Debug)]
enum Closed {
    Answered(ApprovalVerdict),
    Abandoned,
}

struct Waiting {
    request: ApprovalRequest,
    answer: oneshot::Sender<ApprovalVerdict>,
}

#[derive(Default)]
struct QueueState {
    /// Waiting requests in arrival order.
    waiting: Vec<(ApprovalId, Waiting)>,
    /// The most recent closed requests (bounded), to tell "answered" from "unknown".
    closed: HashMap<ApprovalId, Closed>,
    closed_order: VecDeque<ApprovalId>,
}

impl QueueState {
    fn close(&mut self, id: ApprovalId, how: Closed, capacity: usize) {
        if self.closed.insert(id.clone(), how).is_none() {
            self.closed_order.push_back(id);
        }
        while self.closed_order.len() > capacity {
            if let Some(old) = self.closed_order.pop_front() {
                self.closed.remove(&old);
            }
        }
    }
}

struct QueueInner {
    state: Mutex<QueueState>,
    /// Bumped on every change of the waiting set.
    changes: watch::Sender<u64>,
    closed_capacity: usize,
}

/// An [`ApprovalHandler`] that parks each request until the application answers it: list the
/// waiting requests ([`pending`](Self::pending)), answer one ([`answer`](Self::answer)). A
/// cheap, cloneable, `Send + Sync` handle; the HTTP API's `/v1/approvals` is one over it.
///
/// A request leaves the queue when it is answered or when its waiter goes away (the runtime's
/// timeout passed, the run was cancelled or ended); answering it then is refused with
/// [`AnswerError::NoLongerWaiting`]. The queue remembers the last
/// [`DEFAULT_CLOSED_CAPACITY`](Self::DEFAULT_CLOSED_CAPACITY) closed requests to tell a repeated
/// answer ([`AnswerError::AlreadyAnswered`]) from an unknown id ([`AnswerError::Unknown`]).
///
/// ```
/// use asm_core::{RunId, SessionId};
/// use asm_ports::{ApprovalDecision, ApprovalHandler, ApprovalRequest, ApprovalVerdict};
/// use asm_runtime::ApprovalQueue;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
/// let queue = ApprovalQueue::new();
/// let request = ApprovalRequest::new(SessionId::new(), RunId::new(), "acp", "execute");
/// let id = request.id.clone();
/// let approver = {
///     let queue = queue.clone();
///     async move {
///         let waiting = queue.wait_for_pending(None).await;
///         queue.answer(&waiting.id, ApprovalVerdict::new(ApprovalDecision::AllowOnce, "alice")).unwrap();
///     }
/// };
/// let (verdict, ()) = tokio::join!(queue.decide(&request), approver);
/// assert_eq!(verdict?.decided_by, "alice");
/// assert!(queue.pending().is_empty());
/// assert!(queue.answer(&id, ApprovalVerdict::new(ApprovalDecision::DenyOnce, "bob")).is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ApprovalQueue {
    inner: Arc<QueueInner>,
}

impl Default for ApprovalQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ApprovalQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalQueue").field("pending", &self.inner.state.lock().waiting.len()).finish()
    }
}

/// Removes its request from the waiting set when the waiter goes away unanswered.
struct WaitGuard<'a> {
    queue: &'a ApprovalQueue,
    id: ApprovalId,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let inner = &self.queue.inner;
        let mut state = inner.state.lock();
        if let Some(at) = state.waiting.iter().position(|(id, _)| id == &self.id) {
            state.waiting.remove(at);
            state.close(self.id.clone(), Closed::Abandoned, inner.closed_capacity);
            drop(state);
            inner.changes.send_modify(|n| *n += 1);
        }
    }
}

impl ApprovalQueue {
    /// How many closed (answered or abandoned) requests a queue remembers by default.
    pub const DEFAULT_CLOSED_CAPACITY: usize = 4_096;

    /// An empty queue.
    pub fn new() -> Self {
        Self::with_closed_capacity(Self::DEFAULT_CLOSED_CAPACITY)
    }

    /// An empty queue that remembers the last `capacity` closed requests.
    pub fn with_closed_capacity(capacity: usize) -> Self {
        let (changes, _) = watch::channel(0);
        Self { inner: Arc::new(QueueInner { state: Mutex::default(), changes, closed_capacity: capacity.max(1) }) }
    }

    /// The waiting requests, oldest first.
    pub fn pending(&self) -> Vec<ApprovalRequest> {
        self.inner.state.lock().waiting.iter().map(|(_, w)| w.request.clone()).collect()
    }

    /// The waiting requests of one session, oldest first.
    pub fn pending_for(&self, session_id: &SessionId) -> Vec<ApprovalRequest> {
        self.inner
            .state
            .lock()
            .waiting
            .iter()
            .filter(|(_, w)| &w.request.session_id == session_id)
            .map(|(_, w)| w.request.clone())
            .collect()
    }

    /// One waiting request.
    pub fn get(&self, id: &ApprovalId) -> Option<ApprovalRequest> {
        self.inner.state.lock().waiting.iter().find(|(i, _)| i == id).map(|(_, w)| w.request.clone())
    }

    /// Answers a waiting request: its run goes on with `verdict`.
    ///
    /// # Errors
    /// [`AnswerError::Unknown`], [`AnswerError::AlreadyAnswered`],
    /// [`AnswerError::NoLongerWaiting`] (converts into an [`asm_core::Error`]).
    pub fn answer(&self, id: &ApprovalId, verdict: ApprovalVerdict) -> std::result::Result<(), AnswerError> {
        let inner = &self.inner;
        let mut state = inner.state.lock();
        let Some(at) = state.waiting.iter().position(|(i, _)| i == id) else {
            return Err(match state.closed.get(id) {
                Some(Closed::Answered(first)) => {
                    AnswerError::AlreadyAnswered { id: id.clone(), verdict: first.clone() }
                }
                Some(Closed::Abandoned) => AnswerError::NoLongerWaiting(id.clone()),
                None => AnswerError::Unknown(id.clone()),
            });
        };
        let (_, waiting) = state.waiting.remove(at);
        let delivered = waiting.answer.send(verdict.clone()).is_ok();
        let how = if delivered { Closed::Answered(verdict) } else { Closed::Abandoned };
        state.close(id.clone(), how, inner.closed_capacity);
        drop(state);
        inner.changes.send_modify(|n| *n += 1);
        if delivered { Ok(()) } else { Err(AnswerError::NoLongerWaiting(id.clone())) }
    }

    /// Waits until a request is waiting (of `session_id`, when given) and returns the oldest.
    /// Unbounded: race it against a timeout where that matters.
    pub async fn wait_for_pending(&self, session_id: Option<&SessionId>) -> ApprovalRequest {
        let mut changes = self.inner.changes.subscribe();
        loop {
            let found = match session_id {
                Some(id) => self.pending_for(id).into_iter().next(),
                None => self.pending().into_iter().next(),
            };
            if let Some(request) = found {
                return request;
            }
            if changes.changed().await.is_err() {
                // The sender lives as long as the queue, and `self` is the queue.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[async_trait]
impl ApprovalHandler for ApprovalQueue {
    async fn decide(&self, request: &ApprovalRequest) -> Result<ApprovalVerdict> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.inner.state.lock();
            if state.waiting.iter().any(|(id, _)| id == &request.id) || state.closed.contains_key(&request.id) {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("approval request {} was queued before", request.id),
                )
                .with_detail(keys::APPROVAL_ID, request.id.as_str()));
            }
            state.waiting.push((request.id.clone(), Waiting { request: request.clone(), answer: tx }));
        }
        self.inner.changes.send_modify(|n| *n += 1);
        let _guard = WaitGuard { queue: self, id: request.id.clone() };
        rx.await.map_err(|_| Error::new(ErrorCode::InternalError, "the approval queue dropped the request"))
    }
}
