use std::fmt;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::future::BoxFuture;

use asm_core::{
    Capability, EventKind, JsonMap, Result, Run, RunOutput, Session, StoredEvent, Timestamp, TokenUsage, Transcript,
};

use crate::CancellationToken;

/// Executes runs against one provider (a CLI, an API, a router over several providers).
///
/// The runtime owns the run lifecycle: it emits `run_started` before calling
/// [`execute`](ProviderAdapter::execute) and exactly one terminal event after it returns, mapped
/// from the returned `Result`. Adapters report everything in between through the [`EventSink`]
/// and must not emit lifecycle kinds (`run_started`, `run_completed`, `run_failed`,
/// `run_cancelled`, `run_timeout`): the sink rejects them.
///
/// Cancellation: when `request.cancel` fires, the adapter stops the provider, emits nothing more
/// and returns `Err` with [`ErrorCode::Cancelled`](asm_core::ErrorCode::Cancelled). It never
/// leaves a child process behind.
///
/// Usage and cost: a successful execution returns the run's totals in [`ExecuteOutcome`]. For
/// a run that ends without an outcome (an `Err`, a cancel, the runtime's deadline, a hook
/// abort) the runtime records what the adapter reported in `token_usage_updated` events,
/// folded by [`UsageTotals`](asm_core::UsageTotals): `usage_mode: "delta"` adds to the run's
/// total, `"cumulative"` is the run's total so far (the run's, not a provider thread's), and
/// `total_cost_usd` is the run's cost so far. Adapters therefore report usage as soon as the
/// provider does, so a failed run keeps it.
#[async_trait]
pub trait ProviderAdapter: Send + Sync + Debug + 'static {
    /// The provider name recorded on events and runs (`claude`, `codex`, `amp`, ...).
    fn name(&self) -> &str;

    /// What the provider can do, for capability negotiation.
    fn capabilities(&self) -> Vec<Capability>;

    /// Runs `request` to completion, streaming events into `sink`.
    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome>;

    /// Checks the adapter's configuration without running anything.
    fn validate_config(&self) -> Result<()> {
        Ok(())
    }

    /// Whether the adapter can resume a provider-side session from a handle
    /// ([`ExecuteRequest::resume`]) instead of replaying the transcript.
    fn supports_native_resume(&self) -> bool {
        false
    }

    /// Whether the adapter can branch a new provider-side session off another session's handle
    /// ([`ExecuteRequest::fork`]) and leave that one untouched, as `fork_session` needs to
    /// continue a forked session natively. Adapters that cannot are continued by transcript
    /// replay instead.
    fn supports_native_fork(&self) -> bool {
        false
    }
}

/// Everything an adapter needs to execute one run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ExecuteRequest {
    /// The session, as stored when the run started.
    pub session: Session,
    /// The run, in status `running`.
    pub run: Run,
    /// Prior conversation to replay, for continuation runs.
    pub transcript: Option<Transcript>,
    /// A provider-side session handle to resume natively (Claude session id, Codex thread id).
    pub resume: Option<String>,
    /// With [`resume`](Self::resume): the handle is another (parent) session's. The provider must
    /// branch a **new** provider-side session from it (Claude `--resume <id> --fork-session`,
    /// Codex `exec fork <thread id>`), report the new handle in
    /// [`ExecuteOutcome::provider_session_id`], and leave the parent's session untouched. The
    /// runtime sets it only for adapters whose [`ProviderAdapter::supports_native_fork`] is true;
    /// an adapter that cannot fork must fail such a request rather than resume the parent.
    pub fork: bool,
    /// Adapter-specific options for this run.
    pub options: JsonMap,
    /// When the run must be finished; the runtime enforces it too.
    pub deadline: Option<Instant>,
    /// Fires when the run must stop.
    pub cancel: CancellationToken,
    /// Who decides the tool calls the provider asks about (ACP `session/request_permission`,
    /// Claude Code `can_use_tool`). The runtime sets a handler that records the
    /// `tool_approval_*` events, applies the timeout and the session's `*_always` decisions,
    /// and denies when the run is cancelled. `None`: the adapter keeps its own configured
    /// answer (its permission mode or static rules), as without live approvals.
    pub approvals: Option<crate::DynApprovalHandler>,
}

impl ExecuteRequest {
    /// A request for `run` in `session` with no transcript, options or deadline.
    pub fn new(session: Session, run: Run) -> Self {
        Self {
            session,
            run,
            transcript: None,
            resume: None,
            fork: false,
            options: JsonMap::new(),
            deadline: None,
            cancel: CancellationToken::new(),
            approvals: None,
        }
    }
    asm_core::builder_setters! {
        /// Sets the transcript.
        fn transcript(transcript: Transcript) { transcript = Some(transcript) }
        /// Sets the native resume handle.
        fn resume(handle: impl Into<String>) { resume = Some(handle.into()) }
    }
    /// Resumes natively from another session's `handle` as a fork: sets
    /// [`resume`](Self::resume) and [`fork`](Self::fork).
    ///
    /// ```
    /// use asm_core::{Run, RunInput, Session};
    /// use asm_ports::ExecuteRequest;
    /// let session = Session::new("agent").unwrap();
    /// let run = Run::new(session.id.clone(), RunInput::user("hi"));
    /// let request = ExecuteRequest::new(session, run).fork_from("parent-handle");
    /// assert_eq!(request.resume.as_deref(), Some("parent-handle"));
    /// assert!(request.fork);
    /// ```
    #[must_use]
    pub fn fork_from(mut self, handle: impl Into<String>) -> Self {
        self.resume = Some(handle.into());
        self.fork = true;
        self
    }
    asm_core::builder_setters! {
        /// Sets the adapter options.
        fn options(options: JsonMap) { options = options }
        /// Sets the deadline.
        fn deadline(deadline: Instant) { deadline = Some(deadline) }
        /// Sets the cancellation token.
        fn cancel_token(cancel: CancellationToken) { cancel = cancel }
        /// Sets the approval handler (see [`approvals`](Self::approvals)).
        fn approvals(handler: crate::DynApprovalHandler) { approvals = Some(handler) }
    }
}

/// An event as an adapter reports it, before the runtime stamps ids, run, provider and sequence.
///
/// ```
/// use asm_core::EventKind;
/// use asm_ports::ProviderEvent;
/// let e = ProviderEvent::new(EventKind::MessageStreamed).data("delta", "Hel").data("content", "Hel");
/// assert_eq!(e.data["delta"], "Hel");
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ProviderEvent {
    /// What happened.
    pub kind: EventKind,
    /// The payload, with canonical keys.
    pub data: JsonMap,
    /// Free-form metadata.
    pub metadata: JsonMap,
    /// The provider's own timestamp, if it reported one.
    pub timestamp: Option<Timestamp>,
    /// The provider the event came from, when it is not the adapter the runtime called (a
    /// router's attempt names the adapter serving it); the stored event's `provider`.
    pub provider: Option<String>,
}

impl ProviderEvent {
    /// An event with an empty payload.
    pub fn new(kind: EventKind) -> Self {
        Self { kind, data: JsonMap::new(), metadata: JsonMap::new(), timestamp: None, provider: None }
    }
    /// Adds a payload entry.
    #[must_use]
    pub fn data(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }
    asm_core::builder_setters! {
        /// Replaces the payload.
        fn payload(data: JsonMap) { data = data }
    }
    /// Adds a metadata entry.
    #[must_use]
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    asm_core::builder_setters! {
        /// Sets the provider timestamp.
        fn at(timestamp: Timestamp) { timestamp = Some(timestamp) }
        /// Sets [`ProviderEvent::provider`]: the adapter the event came from, for an adapter that
        /// delegates (a router).
        fn from_provider(provider: impl Into<String>) { provider = Some(provider.into()) }
    }
}

type EmitFn = dyn Fn(ProviderEvent) -> BoxFuture<'static, Result<StoredEvent>> + Send + Sync;

/// Where an adapter reports events. `emit` returns once the event is persisted (it has its
/// sequence number before anyone else sees it), so a slow store slows the adapter down
/// (back-pressure) instead of buffering without bound.
#[derive(Clone)]
pub struct EventSink {
    emit: Arc<EmitFn>,
}

impl EventSink {
    /// A sink that hands every event to `emit`.
    pub fn new<F>(emit: F) -> Self
    where
        F: Fn(ProviderEvent) -> BoxFuture<'static, Result<StoredEvent>> + Send + Sync + 'static,
    {
        Self { emit: Arc::new(emit) }
    }

    /// Reports one event and waits until it is persisted.
    ///
    /// # Errors
    /// Whatever the runtime rejects: a lifecycle kind
    /// ([`ErrorCode::InvalidOperation`](asm_core::ErrorCode::InvalidOperation)), a store failure,
    /// or [`ErrorCode::Cancelled`](asm_core::ErrorCode::Cancelled) once the run is being cancelled.
    pub async fn emit(&self, event: ProviderEvent) -> Result<StoredEvent> {
        (self.emit)(event).await
    }
}

impl Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSink").finish_non_exhaustive()
    }
}

/// What a successful execution returns.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ExecuteOutcome {
    /// The final output.
    pub output: RunOutput,
    /// Total tokens of the run.
    pub token_usage: TokenUsage,
    /// Provider-side session handle, for native resume.
    pub provider_session_id: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// Cost reported by the provider.
    pub cost_usd: Option<f64>,
    /// Why the provider stopped.
    pub stop_reason: Option<String>,
    /// Provider turns.
    pub turns: u32,
    /// Extra data for the run record.
    pub metadata: JsonMap,
    /// The adapter that actually served the run, when it is not the adapter the runtime called
    /// (a router serving through one of its adapters). The run records it as its provider, and
    /// the session handle and [`provider_state`](Self::provider_state) are kept under its name.
    /// A failing router says the same with the error detail `provider`.
    pub provider: Option<String>,
    /// Provider state kept beside the session handle, in the stored session's
    /// `metadata.provider_sessions.<provider>`, and so handed back to the adapter on the next run
    /// in [`ExecuteRequest::session`] (for example Codex's thread-cumulative usage, needed to
    /// report a resumed run's own tokens).
    pub provider_state: JsonMap,
}

impl ExecuteOutcome {
    /// An outcome with the given final text.
    pub fn text(content: impl Into<String>) -> Self {
        Self { output: RunOutput::text(content), ..Self::default() }
    }
    asm_core::builder_setters! {
        /// Sets the usage.
        fn usage(usage: TokenUsage) { token_usage = usage }
        /// Sets the provider session handle.
        fn provider_session(id: impl Into<String>) { provider_session_id = Some(id.into()) }
        /// Sets the model.
        fn model(model: impl Into<String>) { model = Some(model.into()) }
        /// Sets the cost.
        fn cost(cost_usd: f64) { cost_usd = Some(cost_usd) }
        /// Sets the stop reason.
        fn stop_reason(reason: impl Into<String>) { stop_reason = Some(reason.into()) }
        /// Sets [`ExecuteOutcome::provider`]: the adapter that served the run.
        fn served_by(provider: impl Into<String>) { provider = Some(provider.into()) }
    }
    /// Adds an entry to [`ExecuteOutcome::provider_state`].
    #[must_use]
    pub fn state(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.provider_state.insert(key.into(), value.into());
        self
    }
}

/// The provider state a previous run left for `provider` on `session`
/// (see [`ExecuteOutcome::provider_state`]).
pub fn provider_state<'a>(session: &'a Session, provider: &str) -> Option<&'a JsonMap> {
    session.metadata.get("provider_sessions")?.get(provider)?.as_object()
}
