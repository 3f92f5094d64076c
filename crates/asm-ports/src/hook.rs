use std::fmt::{self, Debug};
use std::sync::Arc;

use async_trait::async_trait;

use asm_core::{Error, Event, JsonMap, Result, Run, Session};

use crate::{ExecuteOutcome, ProviderEvent};

/// Observes and steers one run: called at start, after every persisted event, and at finish.
///
/// Hooks wrap a run the way tower layers wrap a service: the runtime knows this trait, not the
/// policy or workspace crates that implement it. Write your own for audit, redaction or metrics.
/// Every method has a do-nothing default.
///
/// Returning `Err` fails the run with that error (at start: before the provider is called).
#[async_trait]
pub trait RunHook: Send + Sync + Debug + 'static {
    /// Before the provider is called (after `run_started` is persisted).
    async fn on_start(&self, ctx: &RunContext) -> Result<HookAction> {
        let _ = ctx;
        Ok(HookAction::none())
    }

    /// After each provider event is persisted, before the user callback sees it.
    async fn on_event(&self, ctx: &RunContext, event: &Event) -> Result<HookAction> {
        let _ = (ctx, event);
        Ok(HookAction::none())
    }

    /// After the provider returned, before the terminal event.
    async fn on_finish(&self, ctx: &RunContext, finish: &RunFinish) -> Result<HookAction> {
        let _ = (ctx, finish);
        Ok(HookAction::none())
    }
}

/// What a hook sees of the run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunContext {
    /// The session.
    pub session: Session,
    /// The run (status `running`).
    pub run: Run,
    /// The provider executing it.
    pub provider: String,
    /// Stops the run from outside a hook call (a budget timer, a watchdog task).
    pub control: RunControl,
}

impl RunContext {
    /// A context whose [`control`](Self::control) is detached (aborting does nothing); the
    /// runtime builds contexts with [`with_control`](Self::with_control).
    pub fn new(session: Session, run: Run, provider: impl Into<String>) -> Self {
        Self { session, run, provider: provider.into(), control: RunControl::detached() }
    }
    asm_core::builder_setters! {
        /// Sets the control handle.
        fn with_control(control: RunControl) { control = control }
    }
}

/// A handle a hook keeps to stop its run later, from any task: the same as returning
/// [`HookAction::abort`], but without waiting for the next event. The first abort wins; the
/// provider is cancelled and the run fails with that error (the finish hooks still run and
/// see it as the result).
///
/// ```
/// use asm_core::{Error, ErrorCode};
/// use asm_ports::RunControl;
/// use std::sync::{Arc, Mutex};
///
/// let seen = Arc::new(Mutex::new(None));
/// let sink = seen.clone();
/// let control = RunControl::new(move |error| *sink.lock().unwrap() = Some(error.code()));
/// control.abort(Error::new(ErrorCode::PolicyViolation, "max_duration_ms exceeded"));
/// assert_eq!(*seen.lock().unwrap(), Some(ErrorCode::PolicyViolation));
/// ```
#[derive(Clone)]
pub struct RunControl {
    abort: Arc<dyn Fn(Error) + Send + Sync>,
}

impl RunControl {
    /// A control that calls `abort` with the error.
    pub fn new(abort: impl Fn(Error) + Send + Sync + 'static) -> Self {
        Self { abort: Arc::new(abort) }
    }
    /// A control that does nothing (for contexts built outside a runtime, in tests).
    pub fn detached() -> Self {
        Self::new(|_| {})
    }
    /// Stops the run and fails it with `error`.
    pub fn abort(&self, error: Error) {
        (self.abort)(error);
    }
}

impl Debug for RunControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunControl").finish_non_exhaustive()
    }
}

/// How the provider call ended, as hooks see it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunFinish {
    /// The provider's result.
    pub result: std::result::Result<ExecuteOutcome, Error>,
}

impl RunFinish {
    /// A finish record.
    pub fn new(result: std::result::Result<ExecuteOutcome, Error>) -> Self {
        Self { result }
    }
}

/// What a hook asks the runtime to do.
///
/// ```
/// use asm_core::{Error, ErrorCode, EventKind};
/// use asm_ports::{HookAction, ProviderEvent};
/// let action = HookAction::none()
///     .emit(ProviderEvent::new(EventKind::PolicyViolation).data("policy", "budget").data("kind", "budget_exceeded"))
///     .abort(Error::new(ErrorCode::PolicyViolation, "token budget exceeded"));
/// assert!(action.abort.is_some());
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct HookAction {
    /// Events to persist right after the triggering point (run-scoped, provider
    /// `session_manager`).
    pub events: Vec<ProviderEvent>,
    /// Stop the run and fail it with this error (the provider is cancelled).
    pub abort: Option<Error>,
    /// Adapter options for this run, merged over the run's own (a hook's value wins; a later
    /// hook wins over an earlier one). Honoured from [`RunHook::on_start`] only: that is before
    /// the provider is called (a policy compiling its tool rules into CLI flags).
    pub adapter_options: JsonMap,
    /// Entries merged into the stored run's `metadata` at its end, whatever the outcome (a
    /// workspace diff summary).
    pub run_metadata: JsonMap,
    /// Entries merged into the run output's `extra` when the run completes (a policy verdict,
    /// the workspace result).
    pub output_extra: JsonMap,
    /// The run's cost when the provider reported none (a pricing table's figure); recorded on
    /// every outcome.
    pub cost_usd: Option<f64>,
}

impl HookAction {
    /// Nothing to do.
    pub fn none() -> Self {
        Self::default()
    }
    asm_core::builder_setters! {
        /// Adds an event to persist.
        fn emit(event: ProviderEvent) { events.push(event) }
        /// Aborts the run with `error`.
        fn abort(error: Error) { abort = Some(error) }
    }
    /// Sets an adapter option for this run (see [`HookAction::adapter_options`]).
    #[must_use]
    pub fn adapter_option(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.adapter_options.insert(key.into(), value.into());
        self
    }
    /// Sets a run metadata entry (see [`HookAction::run_metadata`]).
    #[must_use]
    pub fn run_metadata(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.run_metadata.insert(key.into(), value.into());
        self
    }
    /// Sets an output entry (see [`HookAction::output_extra`]).
    #[must_use]
    pub fn output_extra(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.output_extra.insert(key.into(), value.into());
        self
    }
    asm_core::builder_setters! {
        /// Sets the run's cost (see [`HookAction::cost_usd`]).
        fn cost_usd(cost_usd: f64) { cost_usd = Some(cost_usd) }
    }
}
