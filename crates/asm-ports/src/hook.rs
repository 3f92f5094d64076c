use std::fmt::Debug;

use async_trait::async_trait;

use asm_core::{Error, Event, Result, Run, Session};

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
}

impl RunContext {
    /// A context.
    pub fn new(session: Session, run: Run, provider: impl Into<String>) -> Self {
        Self { session, run, provider: provider.into() }
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
}

impl HookAction {
    /// Nothing to do.
    pub fn none() -> Self {
        Self::default()
    }
    /// Adds an event to persist.
    #[must_use]
    pub fn emit(mut self, event: ProviderEvent) -> Self {
        self.events.push(event);
        self
    }
    /// Aborts the run with `error`.
    #[must_use]
    pub fn abort(mut self, error: Error) -> Self {
        self.abort = Some(error);
        self
    }
}
