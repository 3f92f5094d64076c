use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::Instrument;

use asm_core::{
    CapabilityResolver, Error, ErrorCode, Event, EventKind, JsonMap, Result, Run, RunId, RunInput, RunStatus, Session,
    SessionId, SessionStatus, StoredEvent, keys,
};
use asm_ports::{
    ApprovalHandler, CancellationToken, DynApprovalHandler, DynProviderAdapter, DynSessionStore, EventQuery,
    ExecutionRecord, ProviderAdapter, RunQuery, SessionStore, SessionStoreExt,
};

use crate::approval::ApprovalConfig;
use crate::execution::Execution;
use crate::options::{NewSession, RunOnceResult, RunOptions, RunResult, StreamOptions};
use crate::stream::EventStream;

/// The provider name the runtime records on the events it writes itself.
pub(crate) const RUNTIME_PROVIDER: &str = "session_manager";

/// Orchestrates sessions and runs over one store and one provider adapter.
///
/// A cheap, cloneable, `Send + Sync` handle. Runs executing through a manager can be cancelled
/// through any clone of it; runs that no live manager owns any more (a crashed process) are
/// cancelled in the store.
#[derive(Clone)]
pub struct SessionManager {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: DynSessionStore,
    pub(crate) adapter: DynProviderAdapter,
    /// Shared with the managers derived by [`SessionManager::with_store`].
    pub(crate) active: Arc<Mutex<HashMap<RunId, Arc<ActiveRun>>>>,
    /// Live tool approvals (see [`SessionManager::approvals`]).
    pub(crate) approvals: ApprovalConfig,
}

/// A run executing in this process (registered before its execution reads anything).
#[derive(Debug, Default)]
pub(crate) struct ActiveRun {
    pub(crate) cancel: CancellationToken,
    control: Mutex<RunControl>,
}

#[derive(Debug, Default)]
struct RunControl {
    /// Why the run is being cancelled; the first request wins.
    request: Option<CancelRequest>,
    /// The outcome is decided (the terminal write is under way or done): cancels are refused.
    closed: bool,
}

impl ActiveRun {
    /// Records a cancel request (the first one wins) and fires the token.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidTransition`] once the outcome is decided: a cancel is either part of
    /// the terminal write or refused, never acknowledged and ignored.
    pub(crate) fn request_cancel(&self, run_id: &RunId, request: CancelRequest) -> Result<()> {
        let mut control = self.control.lock();
        if control.closed {
            return Err(Error::new(ErrorCode::InvalidTransition, format!("run {run_id} has already finished"))
                .with_detail("run_id", run_id.as_str()));
        }
        control.request.get_or_insert(request);
        drop(control);
        self.cancel.cancel();
        Ok(())
    }

    /// The cancel request received so far.
    pub(crate) fn cancel_request(&self) -> Option<CancelRequest> {
        self.control.lock().request.clone()
    }

    /// Decides: from now on cancels are refused. Returns the request that arrived before.
    pub(crate) fn close(&self) -> Option<CancelRequest> {
        let mut control = self.control.lock();
        control.closed = true;
        control.request.clone()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct CancelRequest {
    pub(crate) reason: Option<String>,
    pub(crate) approval: Option<JsonMap>,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("store", &self.inner.store)
            .field("adapter", &self.inner.adapter.name())
            .field("active_runs", &self.inner.active.lock().len())
            .finish()
    }
}

impl SessionManager {
    /// A manager over `store` and `adapter`.
    pub fn new(store: impl SessionStore, adapter: impl ProviderAdapter) -> Self {
        Self::from_shared(Arc::new(store), Arc::new(adapter))
    }

    /// A manager over already shared handles.
    pub fn from_shared(store: DynSessionStore, adapter: DynProviderAdapter) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                adapter,
                active: Arc::new(Mutex::new(HashMap::new())),
                approvals: ApprovalConfig::default(),
            }),
        }
    }

    /// The same manager (store, adapter, executing runs) whose runs ask `handler` about the
    /// tool calls their providers want approved: adapters get a per-run gate in
    /// [`ExecuteRequest::approvals`](asm_ports::ExecuteRequest::approvals) that records the
    /// `tool_approval_*` events, applies the [timeout](Self::approval_timeout) and the
    /// session's `*_always` decisions, and denies when the run is cancelled (see
    /// [`ApprovalQueue`](crate::ApprovalQueue) and the `approval` module docs). Without a
    /// handler adapters keep their own configured answer.
    #[must_use]
    pub fn approvals(self, handler: impl ApprovalHandler + 'static) -> Self {
        self.shared_approvals(Arc::new(handler))
    }

    /// [`approvals`](Self::approvals) with a shared handler.
    #[must_use]
    pub fn shared_approvals(self, handler: DynApprovalHandler) -> Self {
        let mut approvals = self.inner.approvals.clone();
        approvals.handler = Some(handler);
        self.with_approval_config(approvals)
    }

    /// How long a tool call waits for the handler's decision before it is denied
    /// (`decided_by: "timeout"`; default [`DEFAULT_APPROVAL_TIMEOUT`](crate::DEFAULT_APPROVAL_TIMEOUT), 5 minutes).
    #[must_use]
    pub fn approval_timeout(self, timeout: Duration) -> Self {
        let mut approvals = self.inner.approvals.clone();
        approvals.timeout = timeout;
        self.with_approval_config(approvals)
    }

    /// The configured approval handler, if any.
    pub fn approval_handler(&self) -> Option<&DynApprovalHandler> {
        self.inner.approvals.handler.as_ref()
    }

    fn with_approval_config(self, approvals: ApprovalConfig) -> Self {
        let inner = Inner {
            store: self.inner.store.clone(),
            adapter: self.inner.adapter.clone(),
            active: self.inner.active.clone(),
            approvals,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The same manager (adapter, executing runs) writing through `store`: how an owning
    /// session server fences its writes.
    pub(crate) fn with_store(&self, store: DynSessionStore) -> Self {
        let inner = Inner {
            store,
            adapter: self.inner.adapter.clone(),
            active: self.inner.active.clone(),
            approvals: self.inner.approvals.clone(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The store.
    pub fn store(&self) -> &DynSessionStore {
        &self.inner.store
    }

    /// The provider adapter.
    pub fn adapter(&self) -> &DynProviderAdapter {
        &self.inner.adapter
    }

    // ----- sessions -------------------------------------------------------------------------

    /// Creates a pending session (metadata `provider` = the adapter's name) and records
    /// `session_created`.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for an empty agent id (nothing is written); store errors.
    #[tracing::instrument(skip_all, fields(agent_id = %new.agent_id))]
    pub async fn start_session(&self, new: NewSession) -> Result<Session> {
        let mut session = Session::new(new.agent_id)?;
        let provider = self.inner.adapter.name().to_owned();
        session.metadata = new.metadata;
        session.metadata.insert(keys::PROVIDER.into(), provider.clone().into());
        session.context = new.context;
        session.tags = new.tags;
        session.parent_session_id = new.parent;
        self.inner.store.save_session(&session).await?;
        self.append_session_event(
            &session.id,
            EventKind::SessionCreated,
            [(keys::PROVIDER.to_owned(), provider.into())].into_iter().collect(),
        )
        .await?;
        Ok(session)
    }

    /// `pending|paused -> active` (`session_started`, or `session_resumed` from paused). Already
    /// active: a no-op that writes nothing.
    ///
    /// # Errors
    /// [`ErrorCode::SessionNotFound`], [`ErrorCode::InvalidTransition`].
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn activate_session(&self, id: &SessionId) -> Result<Session> {
        let session = self.inner.store.get_session(id).await?;
        let kind =
            if session.status == SessionStatus::Paused { EventKind::SessionResumed } else { EventKind::SessionStarted };
        self.transition_session(session, SessionStatus::Active, kind, JsonMap::new()).await
    }

    /// `active -> paused` (`session_paused`).
    ///
    /// # Errors
    /// [`ErrorCode::SessionNotFound`], [`ErrorCode::InvalidTransition`].
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn pause_session(&self, id: &SessionId) -> Result<Session> {
        let session = self.inner.store.get_session(id).await?;
        self.transition_session(session, SessionStatus::Paused, EventKind::SessionPaused, JsonMap::new()).await
    }

    /// `active|paused -> completed` (`session_completed`).
    ///
    /// # Errors
    /// [`ErrorCode::SessionNotFound`], [`ErrorCode::InvalidTransition`].
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn complete_session(&self, id: &SessionId) -> Result<Session> {
        let session = self.inner.store.get_session(id).await?;
        self.transition_session(session, SessionStatus::Completed, EventKind::SessionCompleted, JsonMap::new()).await
    }

    /// `active|paused -> failed` (`session_failed` with the error payload).
    ///
    /// # Errors
    /// [`ErrorCode::SessionNotFound`], [`ErrorCode::InvalidTransition`].
    #[tracing::instrument(skip_all, fields(session_id = %id, error_code = %error.code()))]
    pub async fn fail_session(&self, id: &SessionId, error: &Error) -> Result<Session> {
        let session = self.inner.store.get_session(id).await?;
        self.transition_session(session, SessionStatus::Failed, EventKind::SessionFailed, error.to_event_data()).await
    }

    /// `active|paused -> cancelled` (`session_cancelled`).
    ///
    /// # Errors
    /// [`ErrorCode::SessionNotFound`], [`ErrorCode::InvalidTransition`].
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn cancel_session(&self, id: &SessionId) -> Result<Session> {
        let session = self.inner.store.get_session(id).await?;
        self.transition_session(session, SessionStatus::Cancelled, EventKind::SessionCancelled, JsonMap::new()).await
    }

    async fn transition_session(
        &self,
        mut session: Session,
        to: SessionStatus,
        kind: EventKind,
        data: JsonMap,
    ) -> Result<Session> {
        if !session.transition(to)? {
            return Ok(session);
        }
        self.inner.store.save_session(&session).await?;
        self.append_session_event(&session.id, kind, data).await?;
        Ok(session)
    }

    async fn append_session_event(&self, id: &SessionId, kind: EventKind, data: JsonMap) -> Result<StoredEvent> {
        let event = Event::new(kind, id.clone()).with_payload(data).with_provider(RUNTIME_PROVIDER);
        self.inner.store.append_event(event).await
    }

    /// Reads a session.
    ///
    /// # Errors
    /// [`ErrorCode::SessionNotFound`].
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn get_session(&self, id: &SessionId) -> Result<Session> {
        self.inner.store.get_session(id).await
    }

    /// Reads a run.
    ///
    /// # Errors
    /// [`ErrorCode::RunNotFound`].
    #[tracing::instrument(skip_all, fields(run_id = %id))]
    pub async fn get_run(&self, id: &RunId) -> Result<Run> {
        self.inner.store.get_run(id).await
    }

    /// A cursor read of a session's events (see [`EventQuery`]).
    ///
    /// # Errors
    /// [`ErrorCode::SessionNotFound`], [`ErrorCode::InvalidInput`] for an invalid query.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn session_events(&self, id: &SessionId, query: EventQuery) -> Result<Vec<StoredEvent>> {
        self.inner.store.get_events(id, &query).await
    }

    /// The session's runs, oldest first.
    ///
    /// # Errors
    /// [`ErrorCode::SessionNotFound`].
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn session_runs(&self, id: &SessionId) -> Result<Vec<Run>> {
        self.inner.store.list_runs(id, &RunQuery::new()).await
    }

    /// The session's events after `options.after`, in sequence order, each exactly once: a
    /// named, boxed, `Unpin` stream that follows the log forever, or ends when caught up
    /// ([`StreamOptions::until_caught_up`]). Store errors are yielded and end the stream.
    pub fn stream_session_events(&self, id: &SessionId, options: StreamOptions) -> EventStream {
        crate::stream::session_events(self.inner.store.clone(), id.clone(), options)
    }

    // ----- runs -------------------------------------------------------------------------------

    /// Creates a pending run in an active session, after checking capability requirements.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidInput`] for empty input, [`ErrorCode::SessionNotFound`],
    /// [`ErrorCode::InvalidOperation`] when the session is not active,
    /// [`ErrorCode::MissingRequiredCapability`]. Nothing is written on error.
    #[tracing::instrument(skip_all, fields(session_id = %session_id))]
    pub async fn start_run(&self, session_id: &SessionId, input: RunInput, options: RunOptions) -> Result<Run> {
        input.validate()?;
        let session = self.inner.store.get_session(session_id).await?;
        if session.status != SessionStatus::Active {
            return Err(Error::new(
                ErrorCode::InvalidOperation,
                format!("session {} is {}; runs need an active session", session.id, session.status),
            ));
        }
        let mut run = Run::new(session.id.clone(), input);
        if !options.required.is_empty() || !options.optional.is_empty() {
            let resolver = CapabilityResolver::new(options.required, options.optional);
            let negotiation = resolver.negotiate(&self.inner.adapter.capabilities())?;
            run.metadata.insert(
                "capability_negotiation".into(),
                serde_json::to_value(&negotiation).unwrap_or(serde_json::Value::Null),
            );
        }
        self.inner.store.save_run(&run).await?;
        tracing::debug!(run_id = %run.id, "run created");
        Ok(run)
    }

    /// Executes a pending run to its end.
    ///
    /// Writes `run_started`, one `message_sent` per input message, every provider event (each
    /// persisted with its sequence before hooks and the callback see it), and exactly one
    /// terminal event: `run_completed`, `run_failed`, `run_cancelled` or `run_timeout`.
    ///
    /// # Errors
    /// Before anything is written: [`ErrorCode::InvalidInput`] (options),
    /// [`ErrorCode::RunNotFound`], [`ErrorCode::Cancelled`] (the run was cancelled before it
    /// started: a cancel racing this call wins), [`ErrorCode::InvalidTransition`] (run otherwise
    /// not pending), [`ErrorCode::InvalidOperation`] (session not active, native continuation
    /// impossible). After the run started, the error that ended it (the run is stored in its
    /// terminal state).
    pub async fn execute_run(&self, run_id: &RunId, options: RunOptions) -> Result<RunResult> {
        let span = tracing::info_span!("execute_run", run_id = %run_id, provider = self.inner.adapter.name());
        Execution::prepare(self.clone(), run_id, options, None)
            .instrument(span.clone())
            .await?
            .run()
            .instrument(span)
            .await
    }

    /// Registers `run_id` as executing in this process before its execution starts, so that a
    /// cancel arriving in between takes the token path (the execution then ends `cancelled`
    /// without `run_started` or a provider call) instead of racing it in the store.
    ///
    /// Pass the claim to [`execute_claimed`](Self::execute_claimed), which releases it; drop it
    /// with [`release_claim`](Self::release_claim) if the execution never happens.
    pub(crate) fn claim_run(&self, run_id: &RunId) -> Result<Arc<ActiveRun>> {
        let mut registry = self.inner.active.lock();
        if registry.contains_key(run_id) {
            return Err(Error::new(ErrorCode::InvalidOperation, format!("run {run_id} is already executing")));
        }
        let active = Arc::new(ActiveRun::default());
        registry.insert(run_id.clone(), active.clone());
        Ok(active)
    }

    /// Removes a claim made by [`claim_run`](Self::claim_run) if it is still registered.
    pub(crate) fn release_claim(&self, run_id: &RunId, claim: &Arc<ActiveRun>) {
        let mut registry = self.inner.active.lock();
        if registry.get(run_id).is_some_and(|active| Arc::ptr_eq(active, claim)) {
            registry.remove(run_id);
        }
    }

    /// [`execute_run`](Self::execute_run) for a run claimed with [`claim_run`](Self::claim_run).
    pub(crate) async fn execute_claimed(
        &self,
        run_id: &RunId,
        options: RunOptions,
        claim: Arc<ActiveRun>,
    ) -> Result<RunResult> {
        let span = tracing::info_span!("execute_run", run_id = %run_id, provider = self.inner.adapter.name());
        Execution::prepare(self.clone(), run_id, options, Some(claim))
            .instrument(span.clone())
            .await?
            .run()
            .instrument(span)
            .await
    }

    /// Cancels a run.
    ///
    /// - executing in this process (from the moment `execute_run` is called): its provider is
    ///   stopped through its token, or never called if it had not been yet, and the run ends
    ///   `cancelled`; this call returns once cancellation is requested, the executing call
    ///   returns the outcome. An acknowledged cancel always wins: it is decided before the
    ///   terminal write;
    /// - pending: it is marked `cancelled` without any provider call;
    /// - `running` but owned by no live manager (orphaned): it is marked `cancelled` in the store,
    ///   after which the store refuses every further event of the run.
    ///
    /// The store writes compare the stored status in the same atomic write, so a cancel never
    /// overwrites a run that moved on since it was read.
    ///
    /// # Errors
    /// [`ErrorCode::RunNotFound`]; [`ErrorCode::InvalidTransition`] for a run whose outcome is
    /// already decided or stored (whatever it is, `cancelled` included).
    #[tracing::instrument(skip_all, fields(run_id = %run_id))]
    pub async fn cancel_run(&self, run_id: &RunId) -> Result<()> {
        self.cancel_with(run_id, CancelRequest { reason: None, approval: None }).await
    }

    /// Cancels a run because a tool call needs human approval: the `run_cancelled` event carries
    /// `reason: approval_requested` and is followed by `tool_approval_requested` with
    /// `approval` as its payload.
    ///
    /// # Errors
    /// As [`cancel_run`](Self::cancel_run).
    #[tracing::instrument(skip_all, fields(run_id = %run_id))]
    pub async fn cancel_for_approval(&self, run_id: &RunId, approval: JsonMap) -> Result<()> {
        self.cancel_with(run_id, CancelRequest { reason: Some("approval_requested".into()), approval: Some(approval) })
            .await
    }

    async fn cancel_with(&self, run_id: &RunId, request: CancelRequest) -> Result<()> {
        // A stale read loses the compare-and-set below; the retry reads again (and finds the run
        // registered if this process started executing it meanwhile). Each retry means the run
        // moved forward (pending -> running -> terminal), so two retries always suffice.
        for _ in 0..3 {
            let run = self.inner.store.get_run(run_id).await?;
            // Looked up after the read: an execution registers before it reads the run, so if
            // the run read `running` belongs to an execution of this process, it is registered
            // by now and is stopped through its token (never ended behind its back).
            let active = self.inner.active.lock().get(run_id).cloned();
            if let Some(active) = active {
                return active.request_cancel(run_id, request);
            }
            if run.status.is_terminal() {
                return Err(Error::new(
                    ErrorCode::InvalidTransition,
                    format!("run {run_id} has already ended as {}", run.status),
                )
                .with_detail("run_id", run_id.as_str())
                .with_detail("status", run.status.as_str()));
            }
            let read_status = run.status;
            let error = crate::execution::cancelled_error(&request);
            let mut cancelled = run;
            cancelled.fail(error.clone())?;
            let mut terminal = crate::execution::terminal_event(&cancelled, &error, request.reason.as_deref());
            if read_status == RunStatus::Running {
                // An orphaned run keeps the usage its provider reported before it was left.
                let reported = crate::execution::stored_usage_events(&self.inner.store, &cancelled).await?;
                crate::execution::keep_reported_usage(&mut cancelled, &mut terminal, &reported);
            }
            let mut events = vec![terminal];
            if let Some(approval) = &request.approval {
                events.push(
                    Event::new(EventKind::ToolApprovalRequested, cancelled.session_id.clone())
                        .with_run(cancelled.id.clone())
                        .with_payload(approval.clone())
                        .with_provider(RUNTIME_PROVIDER),
                );
            }
            let record = ExecutionRecord::new(cancelled).events(events).expect_status(read_status);
            match self.inner.store.flush(record).await {
                Ok(_) => return Ok(()),
                Err(error) if error.code() == ErrorCode::InvalidTransition => continue,
                Err(error) => return Err(error),
            }
        }
        Err(Error::new(ErrorCode::InvalidOperation, format!("run {run_id} kept changing while being cancelled"))
            .with_detail("run_id", run_id.as_str()))
    }

    /// Creates a session (agent id: the adapter's name), runs `input` once with `options` and
    /// completes the session (fails it when the run fails). See
    /// [`run_once_in`](Self::run_once_in) to describe the session.
    ///
    /// # Errors
    /// The first error of the steps; the session is marked failed when a run step failed.
    pub async fn run_once(&self, input: RunInput, options: RunOptions) -> Result<RunOnceResult> {
        self.run_once_in(NewSession::new(self.inner.adapter.name()), input, options).await
    }

    /// [`run_once`](Self::run_once) in a session described by `new`.
    ///
    /// # Errors
    /// As [`run_once`](Self::run_once).
    #[tracing::instrument(skip_all, fields(agent_id = %new.agent_id))]
    pub async fn run_once_in(&self, new: NewSession, input: RunInput, options: RunOptions) -> Result<RunOnceResult> {
        input.validate()?;
        options.validate()?;
        let session = self.start_session(new).await?;
        self.activate_session(&session.id).await?;
        let outcome = async {
            let run = self.start_run(&session.id, input, options.clone()).await?;
            self.execute_run(&run.id, options).await
        }
        .await;
        match outcome {
            Ok(result) => {
                self.complete_session(&session.id).await?;
                Ok(RunOnceResult { session_id: session.id, result })
            }
            Err(error) => {
                if let Err(fail_error) = self.fail_session(&session.id, &error).await {
                    tracing::warn!(%fail_error, "could not mark the session failed");
                }
                Err(error)
            }
        }
    }
}
