//! [`PolicyHook`]: a policy enforced on runs through the `RunHook` port.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use asm_core::{Event, EventKind, Result, RunId, keys};
use asm_ports::{HookAction, ProviderEvent, RunContext, RunFinish, RunHook};

use crate::compile::{CliTarget, CompiledPolicy, compile};
use crate::evaluate::{PolicyTracker, Violation, ViolationKind, violation_error};
use crate::policy::{Limit, LimitKind, Policy, ViolationAction};
use crate::pricing::PricingTable;

/// The state of one run under the hook.
struct RunState {
    tracker: PolicyTracker,
    started: Instant,
    /// Violations found outside an event (the duration timer), not yet emitted.
    pending: Vec<Violation>,
    cancel_requested: bool,
    budget_approval_requested: bool,
    timer: Option<AbortHandle>,
    compiled: CompiledPolicy,
}

impl Drop for RunState {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

/// Enforces a [`Policy`] on every run it is added to (`RunOptions::hook`); one hook may serve
/// many runs at once (its state is per run id). The runtime does not know this crate: it
/// calls the `RunHook` port.
///
/// * **Start**: the [preflight](Policy::preflight) runs first; a refusal fails the run with
///   `policy_violation` before the provider is called and before the hook writes anything.
///   Then the policy is [compiled](compile) into the CLI's per-run options
///   ([`CliTarget::for_provider`] of the adapter's name, or [`target`](Self::target)), and a
///   duration limit arms a timer that stops a silent provider too.
/// * **Each event**: measured ([`PolicyTracker`]) and evaluated; each new violation becomes a
///   `policy_violation` event. `cancel`: the run is stopped at the first violation.
///   `request_approval`: a `tool_approval_requested` event per denied tool call (and one for
///   the first exceeded budget); the run goes on.
/// * **Finish**: the provider's final usage and the elapsed time are checked once more.
///   `cancel` with any violation: the run fails with `policy_violation` even if the provider
///   succeeded. `warn` / `request_approval`: a successful run keeps its success and carries
///   `output.extra.policy = {action, violations, metadata{warnings, cost_supported}}`. Every
///   outcome carries `metadata.policy` (the tracker's status and the compiled enforcement)
///   and the run's cost from the [`PricingTable`] when the provider reported none.
///
/// ```no_run
/// # async fn demo(manager: asm_runtime::SessionManager, run: asm_core::RunId) -> asm_core::Result<()> {
/// use asm_policy::{Limit, Policy, PolicyHook};
/// let policy = Policy::builder("ci").limit(Limit::MaxCostUsd(0.25)).deny(["WebFetch"]).build()?;
/// let options = asm_runtime::RunOptions::new().hook(PolicyHook::new(policy));
/// manager.execute_run(&run, options).await?;
/// # Ok(()) }
/// ```
pub struct PolicyHook {
    policy: Arc<Policy>,
    pricing: Arc<PricingTable>,
    target: Option<CliTarget>,
    model: Option<String>,
    runs: Mutex<HashMap<RunId, Arc<Mutex<RunState>>>>,
}

impl fmt::Debug for PolicyHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHook")
            .field("policy", &self.policy.name())
            .field("target", &self.target)
            .field("active_runs", &self.runs.lock().len())
            .finish_non_exhaustive()
    }
}

impl PolicyHook {
    /// A hook enforcing `policy`, with the [built-in pricing table](PricingTable::builtin).
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: Arc::new(policy),
            pricing: Arc::new(PricingTable::builtin()),
            target: None,
            model: None,
            runs: Mutex::new(HashMap::new()),
        }
    }

    /// [`new`](Self::new) after the [preflight](Policy::preflight): a refused policy never
    /// reaches a run, so nothing at all is written.
    ///
    /// ```
    /// use asm_policy::{Limit, Policy, PolicyHook};
    /// let zero = Policy::builder("p").limit(Limit::MaxToolCalls(0)).build().unwrap();
    /// let error = PolicyHook::checked(zero).unwrap_err();
    /// assert_eq!(error.code(), asm_core::ErrorCode::PolicyViolation);
    /// assert_eq!(error.details()["check"], "zero_budget");
    /// ```
    ///
    /// # Errors
    /// The preflight's `policy_violation`.
    pub fn checked(policy: Policy) -> Result<Self> {
        policy.preflight()?;
        Ok(Self::new(policy))
    }

    asm_core::builder_setters! {
        /// Prices runs with `pricing` instead of the built-in table.
        fn pricing(pricing: PricingTable) { pricing = Arc::new(pricing) }
        /// Compiles for `target` whatever the adapter is called (a router known to serve only
        /// Claude, a wrapped adapter).
        fn target(target: CliTarget) { target = Some(target) }
        /// The model to price runs with until an event or the outcome names one (the model the
        /// adapter is configured with).
        fn model(model: impl Into<String>) { model = Some(model.into()) }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The current status of an active run (`None` when the hook does not track it).
    pub fn status(&self, run_id: &RunId) -> Option<Value> {
        let state = self.runs.lock().get(run_id).cloned()?;
        let state = state.lock();
        Some(state.tracker.status())
    }

    fn state(&self, run_id: &RunId) -> Option<Arc<Mutex<RunState>>> {
        self.runs.lock().get(run_id).cloned()
    }

    /// Turns new violations into an action: the events, and a cancel or approval request.
    fn act(&self, state: &mut RunState, violations: &[Violation], event: Option<&Event>) -> HookAction {
        let mut action = HookAction::none();
        if violations.is_empty() {
            return action;
        }
        for violation in violations {
            action = action.emit(ProviderEvent::new(EventKind::PolicyViolation).payload(violation.event_data()));
        }
        match self.policy.on_violation() {
            ViolationAction::Cancel if !state.cancel_requested => {
                state.cancel_requested = true;
                action = action.abort(violation_error(&self.policy, state.tracker.violations()));
            }
            ViolationAction::RequestApproval => {
                for violation in violations {
                    let tool = violation.kind == ViolationKind::ToolDenied;
                    if !tool && state.budget_approval_requested {
                        continue;
                    }
                    state.budget_approval_requested |= !tool;
                    action = action.emit(approval_request(&self.policy, violation, event));
                }
            }
            _ => {}
        }
        action
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn approval_request(policy: &Policy, violation: &Violation, event: Option<&Event>) -> ProviderEvent {
    let tool_name = violation.tool_name().unwrap_or_default();
    let mut request = ProviderEvent::new(EventKind::ToolApprovalRequested)
        .data(keys::TOOL_NAME, tool_name)
        .data(keys::POLICY_NAME, policy.name())
        .data(keys::VIOLATION_KIND, violation.kind.as_str())
        .data(keys::DETAILS, violation.details.clone());
    if let Some(event) = event.filter(|_| violation.kind == ViolationKind::ToolDenied) {
        for key in [keys::TOOL_CALL_ID, keys::TOOL_INPUT] {
            if let Some(value) = event.data.get(key) {
                request = request.data(key, value.clone());
            }
        }
    }
    request
}

#[async_trait]
impl RunHook for PolicyHook {
    async fn on_start(&self, ctx: &RunContext) -> Result<HookAction> {
        let span = tracing::debug_span!("policy_start", policy = self.policy.name(), run_id = %ctx.run.id);
        let _enter = span.enter();
        // First, before anything else: a refused policy writes nothing.
        self.policy.preflight()?;

        let target = self.target.unwrap_or_else(|| CliTarget::for_provider(&ctx.provider));
        let compiled = compile(&self.policy, target);
        let mut tracker = PolicyTracker::new(self.policy.clone(), ctx.provider.clone(), self.pricing.clone());
        if let Some(model) = &self.model {
            tracker = tracker.model(model.clone());
        }
        let state = Arc::new(Mutex::new(RunState {
            tracker,
            started: Instant::now(),
            pending: Vec::new(),
            cancel_requested: false,
            budget_approval_requested: false,
            timer: None,
            compiled: compiled.clone(),
        }));
        if let Some(Limit::MaxDurationMs(max)) = self.policy.limit(LimitKind::MaxDurationMs) {
            let (weak, policy, control) = (Arc::downgrade(&state), self.policy.clone(), ctx.control.clone());
            let timer = tokio::spawn(async move {
                // Strictly greater than the limit is a violation.
                tokio::time::sleep(Duration::from_millis(max.saturating_add(1))).await;
                let Some(state) = weak.upgrade() else { return };
                let error = {
                    let mut state = state.lock();
                    let elapsed = elapsed_ms(state.started);
                    let new = state.tracker.check_elapsed(elapsed);
                    if new.is_empty() {
                        return;
                    }
                    state.pending.extend(new);
                    if policy.on_violation() != ViolationAction::Cancel || state.cancel_requested {
                        return;
                    }
                    state.cancel_requested = true;
                    violation_error(&policy, state.tracker.violations())
                };
                tracing::info!(policy = policy.name(), "max_duration_ms exceeded; stopping the run");
                control.abort(error);
            });
            state.lock().timer = Some(timer.abort_handle());
        }
        self.runs.lock().insert(ctx.run.id.clone(), state);

        let mut action = HookAction::none();
        for (key, value) in compiled.options {
            action = action.adapter_option(key, value);
        }
        Ok(action)
    }

    async fn on_event(&self, ctx: &RunContext, event: &Event) -> Result<HookAction> {
        let Some(state) = self.state(&ctx.run.id) else { return Ok(HookAction::none()) };
        let mut state = state.lock();
        let elapsed = elapsed_ms(state.started);
        let mut violations = std::mem::take(&mut state.pending);
        violations.extend(state.tracker.observe(event, elapsed));
        Ok(self.act(&mut state, &violations, Some(event)))
    }

    async fn on_finish(&self, ctx: &RunContext, finish: &RunFinish) -> Result<HookAction> {
        let Some(state) = self.runs.lock().remove(&ctx.run.id) else { return Ok(HookAction::none()) };
        let mut state = state.lock();
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        let elapsed = elapsed_ms(state.started);
        let mut violations = std::mem::take(&mut state.pending);
        violations.extend(state.tracker.check_elapsed(elapsed));
        if let Ok(outcome) = &finish.result {
            violations.extend(state.tracker.finish(outcome.token_usage, outcome.model.as_deref(), outcome.cost_usd));
        }
        // Events (and an approval request) for what was found now; the abort of a `cancel`
        // policy is decided below from every violation of the run.
        let mut action = self.act(&mut state, &violations, None);
        action.abort = None;

        let all = state.tracker.violations().to_vec();
        if !all.is_empty() {
            match self.policy.on_violation() {
                ViolationAction::Cancel => {
                    if finish.result.is_ok() {
                        action = action.abort(violation_error(&self.policy, &all));
                    }
                }
                _ => {
                    let verdict = json!({
                        "action": self.policy.on_violation().as_str(),
                        "violations": all.iter().map(Violation::to_json).collect::<Vec<_>>(),
                        "metadata": {
                            "warnings": state.tracker.warnings(),
                            "cost_supported": state.tracker.cost_supported(),
                        },
                    });
                    action = action.output_extra("policy", verdict);
                }
            }
        }
        let mut status = state.tracker.status();
        if let Value::Object(map) = &mut status {
            map.insert("enforcement".into(), state.compiled.to_json());
        }
        action = action.run_metadata("policy", status);
        if let Some(cost) = state.tracker.cost_usd() {
            action = action.cost_usd(cost);
        }
        Ok(action)
    }
}
