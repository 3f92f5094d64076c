//! One run's execution: preparation (validation before anything is written), the event sink,
//! hooks, deadline and cancellation, and the single terminal write.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use parking_lot::Mutex;

use asm_core::{
    Error, ErrorCode, Event, EventKind, JsonMap, Result, Run, RunId, RunStatus, Session, SessionId, SessionStatus,
    StoredEvent, Transcript, TranscriptBuilder, UsageTotals, keys,
};
use asm_ports::{
    EventQuery, EventSink, ExecuteOutcome, ExecuteRequest, ExecutionRecord, HookAction, ProviderEvent, RunContext,
    RunControl, RunFinish, RunHook, SessionStoreExt,
};

use crate::approval::{ApprovalRecorder, RunGate};
use crate::manager::{ActiveRun, CancelRequest, RUNTIME_PROVIDER, SessionManager};
use crate::options::{Continuation, EventCallback, RunOptions, RunResult};

/// How long a cancelled adapter may take to stop before its future is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(10);
/// Longest error message (and provider stderr) stored with a run's end, in bytes.
const MAX_ERROR_TEXT_BYTES: usize = 64 * 1024;
/// Most error detail bytes stored with a run's end.
const MAX_ERROR_DETAILS_BYTES: usize = 256 * 1024;
/// Page size when reading a whole session log for a transcript.
const TRANSCRIPT_PAGE: usize = 1_000;

pub(crate) struct Execution {
    manager: SessionManager,
    session: Session,
    run: Run,
    options: RunOptions,
    transcript: Option<Transcript>,
    resume: Option<String>,
    /// `resume` is the parent's handle of a fork, to branch from (see `fork.rs`).
    fork: bool,
    active: Arc<ActiveRun>,
    _registration: Registration,
}

/// Removes the run from the manager's active set however the execution ends (even when the
/// caller drops the future).
struct Registration {
    manager: SessionManager,
    run_id: RunId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.manager.inner.active.lock().remove(&self.run_id);
    }
}

/// The accumulated non-event parts of the hooks' [`HookAction`]s.
#[derive(Default)]
struct HookRequests {
    adapter_options: JsonMap,
    run_metadata: JsonMap,
    output_extra: JsonMap,
    cost_usd: Option<f64>,
}

/// State shared between the execution and the event sink handed to the adapter.
struct Shared {
    manager: SessionManager,
    ctx: RunContext,
    hooks: Vec<Arc<dyn RunHook>>,
    on_event: Option<EventCallback>,
    cancel: asm_ports::CancellationToken,
    /// Shared with [`RunContext::control`], so a hook may abort from any task.
    abort: Arc<Mutex<Option<Error>>>,
    /// What the hooks asked for beyond events (see [`HookAction`]).
    requested: Mutex<HookRequests>,
    events: Mutex<Vec<StoredEvent>>,
    correlation_id: Option<String>,
}

impl Execution {
    /// Validates and loads everything the run needs. With `claimed` (see
    /// [`SessionManager::claim_run`]), the run is already registered as active; the claim is
    /// released however preparation ends.
    pub(crate) async fn prepare(
        manager: SessionManager,
        run_id: &RunId,
        options: RunOptions,
        claimed: Option<Arc<ActiveRun>>,
    ) -> Result<Self> {
        // Registered before the first read, so that a cancel arriving at any point from here on
        // takes the token path: no provider call, and the execution ends `cancelled`.
        let (active, registration) = match claimed {
            Some(active) => (active, Registration { manager: manager.clone(), run_id: run_id.clone() }),
            None => {
                let active = Arc::new(ActiveRun::default());
                {
                    let mut registry = manager.inner.active.lock();
                    if registry.contains_key(run_id) {
                        return Err(Error::new(
                            ErrorCode::InvalidOperation,
                            format!("run {run_id} is already executing"),
                        ));
                    }
                    registry.insert(run_id.clone(), active.clone());
                }
                (active, Registration { manager: manager.clone(), run_id: run_id.clone() })
            }
        };
        options.validate()?;
        let store = &manager.inner.store;
        let adapter = &manager.inner.adapter;
        let run = store.get_run(run_id).await?;
        if run.status == RunStatus::Cancelled {
            // A cancel won the race with this call (the caller cannot tell whether it came just
            // before or just after): the execution's outcome is `cancelled`.
            return Err(run.error.unwrap_or_else(|| Error::new(ErrorCode::Cancelled, "run cancelled")));
        }
        if run.status != RunStatus::Pending {
            return Err(Error::new(
                ErrorCode::InvalidTransition,
                format!("run {} is {}; only pending runs can be executed", run.id, run.status),
            ));
        }
        let session = store.get_session(&run.session_id).await?;
        if session.status != SessionStatus::Active {
            return Err(Error::new(
                ErrorCode::InvalidOperation,
                format!("session {} is {}; runs need an active session", session.id, session.status),
            ));
        }
        let mut handle = provider_handle(&session, adapter.name());
        let parent_handle =
            crate::fork::fork_handle(&manager, &session, handle.is_some(), options.continuation_mode()).await?;
        let fork = parent_handle.is_some();
        handle = handle.or(parent_handle);
        let native = adapter.supports_native_resume() && handle.is_some();
        let (replay, resume) = match options.continuation_mode() {
            Continuation::None => (false, None),
            Continuation::Replay => (true, None),
            Continuation::Auto if native => (false, handle),
            Continuation::Auto => (true, None),
            Continuation::Native if native => (false, handle),
            Continuation::Native => {
                return Err(Error::new(
                    ErrorCode::InvalidOperation,
                    format!(
                        "native continuation needs an adapter that resumes natively and a recorded {} session handle",
                        adapter.name()
                    ),
                ));
            }
        };
        let transcript = match (&options.transcript_cache, replay) {
            (_, false) => None,
            (Some(cache), true) => Some(cache.transcript(&**store, &session.id, options.transcript_bounds()).await?),
            (None, true) => Some(build_transcript(&manager, &session.id, &options).await?),
        };

        let fork = fork && resume.is_some();
        Ok(Self { manager, session, run, options, transcript, resume, fork, active, _registration: registration })
    }

    pub(crate) async fn run(mut self) -> Result<RunResult> {
        let store = self.manager.inner.store.clone();
        let provider = self.manager.inner.adapter.name().to_owned();

        if let Some(request) = self.active.cancel_request() {
            // Cancelled before it started: no run_started, no provider call.
            return self.finish_without_start(&request).await;
        }
        self.run.transition(RunStatus::Running)?;

        let abort = Arc::new(Mutex::new(None));
        let control = {
            let (abort, cancel) = (abort.clone(), self.active.cancel.clone());
            RunControl::new(move |error| {
                abort.lock().get_or_insert(error);
                cancel.cancel();
            })
        };
        let shared = Arc::new(Shared {
            manager: self.manager.clone(),
            ctx: RunContext::new(self.session.clone(), self.run.clone(), provider.clone()).with_control(control),
            hooks: std::mem::take(&mut self.options.hooks),
            on_event: self.options.on_event.clone(),
            cancel: self.active.cancel.clone(),
            abort,
            requested: Mutex::new(HookRequests::default()),
            events: Mutex::new(Vec::new()),
            correlation_id: self
                .run
                .metadata
                .get("correlation_id")
                .or_else(|| self.session.metadata.get("correlation_id"))
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        });

        if let Err(error) = self.start(&shared, &provider).await {
            if error.code() == ErrorCode::InvalidTransition {
                // A cancel that found the run still pending (another manager) wrote its terminal
                // state first: nothing of this execution was stored.
                let stored = store.get_run(&self.run.id).await?;
                if stored.status.is_terminal() {
                    return Err(stored.error.unwrap_or(error));
                }
            }
            return Err(error);
        }
        let result = match self.start_hooks(&shared).await {
            // A cancel acknowledged before the provider is called means no provider call.
            Ok(()) if self.active.cancel.is_cancelled() => Err(Error::new(ErrorCode::Cancelled, "run cancelled")),
            Ok(()) => self.call_provider(&shared).await,
            Err(error) => Err(error),
        };
        let (result, aborted) = self.settle(&shared, result).await;
        self.finalize(&shared, result, aborted).await
    }

    /// Marks the run `running` together with `run_started` and the input messages, in one
    /// atomic flush that expects the stored run still `pending`.
    async fn start(&self, shared: &Arc<Shared>, provider: &str) -> Result<()> {
        let mut batch = vec![
            shared.event(
                EventKind::RunStarted,
                [
                    (keys::PROVIDER.to_owned(), provider.into()),
                    ("continuation".to_owned(), continuation_name(self).into()),
                ]
                .into_iter()
                .collect(),
                RUNTIME_PROVIDER,
            ),
        ];
        for message in self.run.input.messages.iter().filter(|m| !m.content.is_empty()) {
            let data = [
                (keys::ROLE.to_owned(), message.role.as_str().into()),
                (keys::CONTENT.to_owned(), message.content.clone().into()),
            ]
            .into_iter()
            .collect();
            batch.push(shared.event(EventKind::MessageSent, data, RUNTIME_PROVIDER));
        }
        let record = ExecutionRecord::new(self.run.clone()).events(batch).expect_status(RunStatus::Pending);
        let stored = self.manager.inner.store.flush(record).await?;
        for event in stored {
            shared.observed(event);
        }
        Ok(())
    }

    /// The start hooks; an abort ends the run before the provider is called.
    async fn start_hooks(&self, shared: &Arc<Shared>) -> Result<()> {
        for hook in &shared.hooks {
            let action = hook.on_start(&shared.ctx).await?;
            shared.apply(action).await?;
        }
        match shared.abort.lock().take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn call_provider(&self, shared: &Arc<Shared>) -> Result<ExecuteOutcome> {
        let adapter = self.manager.inner.adapter.clone();
        let timeout = self.options.effective_timeout();
        let mut options = self.options.adapter_options.clone();
        options.extend(std::mem::take(&mut shared.requested.lock().adapter_options));
        let mut request = ExecuteRequest::new(self.session.clone(), self.run.clone())
            .options(options)
            .deadline(Instant::now() + timeout)
            .cancel_token(self.active.cancel.clone());
        request.transcript = self.transcript.clone();
        request.resume = self.resume.clone();
        request.fork = self.fork;
        let approvals = &self.manager.inner.approvals;
        if let Some(handler) = &approvals.handler {
            request.approvals = Some(Arc::new(RunGate {
                handler: handler.clone(),
                timeout: approvals.timeout,
                memory: approvals.memory.clone(),
                store: self.manager.inner.store.clone(),
                recorder: shared.clone(),
                cancel: self.active.cancel.clone(),
                session_id: self.session.id.clone(),
                run_id: self.run.id.clone(),
            }));
        }

        let sink_shared = shared.clone();
        let sink = EventSink::new(move |event| {
            let shared = sink_shared.clone();
            async move { shared.emit(event).await }.boxed()
        });

        let provider_call = async {
            match tokio::time::timeout(timeout, AssertUnwindSafe(adapter.execute(request, sink)).catch_unwind()).await {
                Ok(Ok(result)) => result,
                Ok(Err(panic)) => Err(Error::new(
                    ErrorCode::InternalError,
                    format!("provider adapter panicked: {}", panic_message(panic.as_ref())),
                )),
                Err(_) => {
                    Err(Error::new(ErrorCode::Timeout, format!("run exceeded its {} ms deadline", timeout.as_millis()))
                        .with_detail("timeout_ms", u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)))
                }
            }
        };
        let cancel = self.active.cancel.clone();
        let grace_expired = async move {
            cancel.cancelled().await;
            tokio::time::sleep(CANCEL_GRACE).await;
        };
        let result = tokio::select! {
            result = provider_call => result,
            () = grace_expired => Err(Error::new(ErrorCode::Cancelled, "provider did not stop within the cancel grace period")),
        };
        // Whatever happened, nothing of this run may keep going.
        self.active.cancel.cancel();
        result
    }

    /// Decides the outcome: a hook abort wins, then a cancel request, then the provider result;
    /// the finish hooks may still add events or turn a success into a failure. Also returns
    /// whether a hook aborted the run (a cancel arriving later does not override that).
    async fn settle(&self, shared: &Arc<Shared>, result: Result<ExecuteOutcome>) -> (Result<ExecuteOutcome>, bool) {
        let mut result = result;
        let mut aborted = false;
        if let Some(error) = shared.abort.lock().take() {
            result = Err(error);
            aborted = true;
        } else if let Some(request) = self.active.cancel_request() {
            result = Err(with_served_by(cancelled_error(&request), &result));
        }
        let finish = RunFinish::new(result.clone());
        for hook in &shared.hooks {
            let action = match hook.on_finish(&shared.ctx, &finish).await {
                Ok(action) => action,
                Err(error) => HookAction::none().abort(error),
            };
            if let Err(error) = shared.apply(action).await {
                result = Err(error);
            }
            if let Some(error) = shared.abort.lock().take()
                && result.is_ok()
            {
                result = Err(error);
                aborted = true;
            }
        }
        (result, aborted)
    }

    async fn finalize(
        mut self,
        shared: &Arc<Shared>,
        result: Result<ExecuteOutcome>,
        aborted: bool,
    ) -> Result<RunResult> {
        // The decision point: a cancel acknowledged up to here wins (unless a hook aborted the
        // run); from here on cancels are refused with `invalid_transition`.
        let cancel_request = self.active.close();
        let result = match (&cancel_request, result) {
            (Some(request), result @ Ok(_)) => Err(with_served_by(cancelled_error(request), &result)),
            (Some(request), Err(error)) if !aborted && error.code() != ErrorCode::Cancelled => {
                Err(with_served_by(cancelled_error(request), &Err(error)))
            }
            (_, result) => result,
        };
        let requested = std::mem::take(&mut *shared.requested.lock());
        let provider = served_by(&result).unwrap_or_else(|| self.manager.inner.adapter.name().to_owned());
        self.run.provider = Some(provider.clone());
        self.run.metadata.extend(requested.run_metadata);
        let mut session_patch = JsonMap::new();
        let (terminal, mut outcome_error) = match result {
            Ok(mut outcome) => {
                outcome.output.extra.extend(requested.output_extra);
                if outcome.cost_usd.is_none() {
                    outcome.cost_usd = requested.cost_usd;
                }
                let mut data = JsonMap::new();
                data.insert(
                    keys::STOP_REASON.into(),
                    outcome.stop_reason.clone().unwrap_or_else(|| "end_turn".into()).into(),
                );
                data.insert(keys::TOKEN_USAGE.into(), serde_json::to_value(outcome.token_usage).unwrap_or_default());
                if let Some(id) = &outcome.provider_session_id {
                    data.insert(keys::PROVIDER_SESSION_ID.into(), id.clone().into());
                    self.run.metadata.insert(keys::PROVIDER_SESSION_ID.into(), id.clone().into());
                }
                if let Some(model) = &outcome.model {
                    data.insert(keys::MODEL.into(), model.clone().into());
                    self.run.metadata.insert(keys::MODEL.into(), model.clone().into());
                }
                if let Some(cost) = outcome.cost_usd {
                    data.insert(keys::TOTAL_COST_USD.into(), cost.into());
                }
                if outcome.provider_session_id.is_some()
                    || outcome.model.is_some()
                    || !outcome.provider_state.is_empty()
                {
                    let mut handle = outcome.provider_state.clone();
                    if let Some(id) = &outcome.provider_session_id {
                        handle.insert(keys::PROVIDER_SESSION_ID.into(), id.clone().into());
                    }
                    if let Some(model) = &outcome.model {
                        handle.insert(keys::MODEL.into(), model.clone().into());
                    }
                    let mut per_provider = JsonMap::new();
                    per_provider.insert(provider.clone(), handle.into());
                    session_patch.insert("provider_sessions".into(), per_provider.into());
                }
                self.run.metadata.extend(outcome.metadata.clone());
                self.run.token_usage = outcome.token_usage;
                self.run.cost_usd = outcome.cost_usd;
                self.run.turn_count = outcome.turns;
                self.run.complete(outcome.output)?;
                (shared.event(EventKind::RunCompleted, data, RUNTIME_PROVIDER), None)
            }
            Err(error) => {
                // Bounded before it is stored: whatever the provider returned, the terminal
                // write must fit the store (the code is kept).
                let error = error.bounded(MAX_ERROR_TEXT_BYTES, MAX_ERROR_DETAILS_BYTES);
                let request = cancel_request.clone();
                let reason = request.as_ref().and_then(|r| r.reason.clone());
                self.run.fail(error.clone())?;
                let mut terminal = terminal_event(&self.run, &error, reason.as_deref());
                keep_reported_usage(&mut self.run, &mut terminal, &shared.events.lock());
                if self.run.cost_usd.is_none()
                    && let Some(cost) = requested.cost_usd
                {
                    self.run.cost_usd = Some(cost);
                    terminal.data.insert(keys::TOTAL_COST_USD.into(), cost.into());
                }
                terminal.correlation_id = shared.correlation_id.clone();
                (terminal, Some((error, request)))
            }
        };
        let mut events = vec![terminal];
        if let Some((_, Some(CancelRequest { approval: Some(approval), .. }))) = &outcome_error {
            events.push(shared.event(EventKind::ToolApprovalRequested, approval.clone(), RUNTIME_PROVIDER));
        }
        let record = ExecutionRecord::new(self.run.clone())
            .events(events)
            .session_metadata(session_patch)
            .expect_status(RunStatus::Running);
        let flushed = match self.manager.inner.store.flush(record).await {
            Err(error) if error.code() != ErrorCode::InvalidTransition => {
                // The terminal write must happen: retry with a minimal record of the same outcome.
                tracing::warn!(%error, "terminal write failed; retrying with a minimal record");
                let minimal_error = match &outcome_error {
                    Some((outcome, _)) => {
                        Error::new(outcome.code(), outcome.message().chars().take(1024).collect::<String>())
                            .with_detail("terminal_record", "minimal")
                    }
                    None => Error::new(
                        ErrorCode::StorageWriteFailed,
                        format!("the run's result could not be stored: {}", error.message()),
                    )
                    .with_detail("terminal_record", "minimal"),
                };
                let mut run = self.run.clone();
                run.status = RunStatus::Running;
                run.output = None;
                run.error = None;
                run.fail(minimal_error.clone())?;
                let mut terminal = terminal_event(&run, &minimal_error, None);
                terminal.correlation_id = shared.correlation_id.clone();
                let record = ExecutionRecord::new(run.clone()).events(vec![terminal]).expect_status(RunStatus::Running);
                let flushed = self.manager.inner.store.flush(record).await;
                if flushed.is_ok() {
                    self.run = run;
                    if outcome_error.is_none() {
                        outcome_error = Some((minimal_error, None));
                    }
                }
                flushed
            }
            flushed => flushed,
        };
        match flushed {
            Ok(stored) => {
                for event in stored {
                    shared.observed(event);
                }
            }
            Err(error) if error.code() == ErrorCode::InvalidTransition => {
                // Someone else (a cancel from another process) ended the run first; theirs stands.
                let stored = self.manager.inner.store.get_run(&self.run.id).await?;
                return Err(stored.error.clone().unwrap_or_else(|| {
                    Error::new(
                        ErrorCode::InvalidTransition,
                        format!("run {} was ended elsewhere as {}", stored.id, stored.status),
                    )
                }));
            }
            Err(error) => return Err(error),
        }
        match outcome_error {
            Some((error, _)) => Err(error),
            None => {
                Ok(RunResult { run: self.run, events: std::mem::take(&mut *shared.events.lock()), negotiation: None })
            }
        }
    }

    async fn finish_without_start(mut self, request: &CancelRequest) -> Result<RunResult> {
        self.active.close();
        let error = cancelled_error(request);
        self.run.fail(error.clone())?;
        let mut events = vec![terminal_event(&self.run, &error, request.reason.as_deref())];
        if let Some(approval) = &request.approval {
            events.push(
                Event::new(EventKind::ToolApprovalRequested, self.run.session_id.clone())
                    .with_run(self.run.id.clone())
                    .with_payload(approval.clone())
                    .with_provider(RUNTIME_PROVIDER),
            );
        }
        let record = ExecutionRecord::new(self.run.clone()).events(events).expect_status(RunStatus::Pending);
        match self.manager.inner.store.flush(record).await {
            Ok(_) => Err(error),
            Err(store_error) if store_error.code() == ErrorCode::InvalidTransition => {
                // Ended elsewhere first (a cancel through another manager): theirs stands.
                let stored = self.manager.inner.store.get_run(&self.run.id).await?;
                Err(stored.error.unwrap_or(store_error))
            }
            Err(store_error) => Err(store_error),
        }
    }
}

impl Shared {
    fn event(&self, kind: EventKind, data: JsonMap, provider: &str) -> Event {
        let mut event = Event::new(kind, self.ctx.run.session_id.clone())
            .with_run(self.ctx.run.id.clone())
            .with_payload(data)
            .with_provider(provider);
        event.correlation_id = self.correlation_id.clone();
        event
    }

    fn observed(&self, event: StoredEvent) {
        if let Some(callback) = &self.on_event {
            callback(&event);
        }
        self.events.lock().push(event);
    }

    async fn persist(&self, event: Event) -> Result<StoredEvent> {
        let stored = self.manager.inner.store.append_event(event).await?;
        self.observed(stored.clone());
        Ok(stored)
    }

    /// The sink: reject lifecycle kinds and late events, persist, then run the event hooks.
    async fn emit(&self, provider_event: ProviderEvent) -> Result<StoredEvent> {
        if provider_event.kind.is_run_lifecycle() {
            return Err(Error::new(
                ErrorCode::InvalidOperation,
                format!("adapters may not emit {}: the runtime owns run lifecycle events", provider_event.kind),
            ));
        }
        if self.cancel.is_cancelled() {
            return Err(Error::new(ErrorCode::Cancelled, "run is being cancelled; no more events are accepted"));
        }
        let provider = provider_event.provider.as_deref().unwrap_or(&self.ctx.provider);
        let mut event = self.event(provider_event.kind, provider_event.data, provider);
        event.metadata = provider_event.metadata;
        if let Some(timestamp) = provider_event.timestamp {
            event.timestamp = timestamp;
        }
        self.persist_and_hook(event).await
    }

    /// Persists a run event, then runs the event hooks on it.
    async fn persist_and_hook(&self, event: Event) -> Result<StoredEvent> {
        let stored = match self.persist(event).await {
            Ok(stored) => stored,
            Err(error) => {
                if error.code() == ErrorCode::InvalidTransition {
                    // The store holds the run's end (a cancel from elsewhere): stop the provider.
                    self.cancel.cancel();
                }
                return Err(error);
            }
        };
        for hook in &self.hooks {
            let action = match hook.on_event(&self.ctx, &stored).await {
                Ok(action) => action,
                Err(error) => HookAction::none().abort(error),
            };
            self.apply(action).await?;
        }
        Ok(stored)
    }

    /// Persists a hook's events; an abort is recorded and cancels the provider.
    async fn apply(&self, action: HookAction) -> Result<()> {
        for provider_event in action.events {
            let mut event = self.event(provider_event.kind, provider_event.data, RUNTIME_PROVIDER);
            event.metadata = provider_event.metadata;
            self.persist(event).await?;
        }
        {
            let mut requested = self.requested.lock();
            requested.adapter_options.extend(action.adapter_options);
            requested.run_metadata.extend(action.run_metadata);
            requested.output_extra.extend(action.output_extra);
            if action.cost_usd.is_some() {
                requested.cost_usd = action.cost_usd;
            }
        }
        if let Some(error) = action.abort {
            self.abort.lock().get_or_insert(error);
            self.cancel.cancel();
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ApprovalRecorder for Shared {
    async fn record(&self, kind: EventKind, data: JsonMap) -> Result<StoredEvent> {
        // Not refused while the run is being cancelled: a denial because of the cancel belongs
        // to the run's story (the store still takes events until the terminal write).
        self.persist_and_hook(self.event(kind, data, RUNTIME_PROVIDER)).await
    }
}

/// The adapter that served the run when the called one delegated (a router): from the outcome,
/// or from a failure's `provider` detail.
fn served_by(result: &Result<ExecuteOutcome>) -> Option<String> {
    match result {
        Ok(outcome) => outcome.provider.clone(),
        Err(error) => error.details().get(keys::PROVIDER).and_then(|v| v.as_str()).map(str::to_owned),
    }
}

/// `error` with the `provider` detail naming the adapter that served `result`, when a delegating
/// adapter (a router) said so: a cancel keeps the served provider on the run.
fn with_served_by(error: Error, result: &Result<ExecuteOutcome>) -> Error {
    match served_by(result) {
        Some(provider) => error.with_detail(keys::PROVIDER, provider),
        None => error,
    }
}

/// The terminal event for a run that ended with `error` (status already set on `run`).
pub(crate) fn terminal_event(run: &Run, error: &Error, reason: Option<&str>) -> Event {
    let kind = match run.status {
        RunStatus::Cancelled => EventKind::RunCancelled,
        RunStatus::Timeout => EventKind::RunTimeout,
        _ => EventKind::RunFailed,
    };
    let mut data = error.to_event_data();
    if let Some(reason) = reason {
        data.insert(keys::REASON.into(), reason.into());
    }
    Event::new(kind, run.session_id.clone()).with_run(run.id.clone()).with_payload(data).with_provider(RUNTIME_PROVIDER)
}

pub(crate) fn cancelled_error(request: &CancelRequest) -> Error {
    let error = Error::new(ErrorCode::Cancelled, "run cancelled");
    match &request.reason {
        Some(reason) => error.with_detail(keys::REASON, reason.clone()),
        None => error,
    }
}

fn continuation_name(execution: &Execution) -> &'static str {
    if execution.fork {
        "native_fork"
    } else if execution.resume.is_some() {
        "native"
    } else if execution.transcript.is_some() {
        "replay"
    } else {
        "none"
    }
}

/// The provider-side session handle recorded for `provider` on the session.
fn provider_handle(session: &Session, provider: &str) -> Option<String> {
    session
        .metadata
        .get("provider_sessions")?
        .get(provider)?
        .get(keys::PROVIDER_SESSION_ID)?
        .as_str()
        .map(str::to_owned)
}

async fn build_transcript(
    manager: &SessionManager,
    session_id: &SessionId,
    options: &RunOptions,
) -> Result<Transcript> {
    let builder = TranscriptBuilder::new(options.transcript_bounds());
    let mut transcript = builder.from_events::<Event>(session_id, &[]);
    let mut after = 0;
    loop {
        let page =
            manager.inner.store.get_events(session_id, &EventQuery::new().after(after).limit(TRANSCRIPT_PAGE)).await?;
        let Some(last) = page.last().map(StoredEvent::sequence) else { break };
        after = last;
        builder.update(&mut transcript, &page);
        if page.len() < TRANSCRIPT_PAGE {
            break;
        }
    }
    Ok(transcript)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// The run's `token_usage_updated` events as stored, for a run ended outside its execution (an
/// orphaned run cancelled in the store, a run task that died).
pub(crate) async fn stored_usage_events(store: &asm_ports::DynSessionStore, run: &Run) -> Result<Vec<StoredEvent>> {
    let query = EventQuery::new().run(run.id.clone()).kind(EventKind::TokenUsageUpdated);
    store.get_events(&run.session_id, &query).await
}

/// For a run that ends without an outcome (failed, cancelled, timed out): keeps the usage and
/// cost its provider reported in `token_usage_updated` events ([`UsageTotals`]) in the run
/// record and in the terminal event (`token_usage`, and `total_cost_usd` when reported).
pub(crate) fn keep_reported_usage<E: AsRef<Event>>(run: &mut Run, terminal: &mut Event, events: &[E]) {
    let reported = events
        .iter()
        .map(AsRef::as_ref)
        .filter(|e| e.run_id.as_ref() == Some(&run.id) && e.provider.as_deref() != Some(RUNTIME_PROVIDER));
    let totals = UsageTotals::from_events(reported);
    run.token_usage = totals.usage;
    run.cost_usd = totals.cost_usd;
    terminal.data.insert(keys::TOKEN_USAGE.into(), serde_json::to_value(totals.usage).unwrap_or_default());
    if let Some(cost) = totals.cost_usd {
        terminal.data.insert(keys::TOTAL_COST_USD.into(), cost.into());
    }
}
