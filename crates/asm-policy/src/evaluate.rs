//! The pure evaluator ([`evaluate`]) and the per-run measuring state ([`PolicyTracker`]).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use asm_core::{Error, ErrorCode, Event, EventKind, JsonMap, TokenUsage, UsageTotals, keys};

use crate::policy::{Limit, LimitKind, Policy, RuleKind, ViolationAction};
use crate::pricing::PricingTable;

/// What a violation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// A tool a rule does not permit (`tool_denied`).
    ToolDenied,
    /// A limit exceeded (`budget_exceeded`).
    BudgetExceeded,
}

asm_core::string_enum! {
    /// `tool_denied` or `budget_exceeded`.
    ViolationKind {
        ToolDenied => "tool_denied",
        BudgetExceeded => "budget_exceeded",
    }
}

/// One violation: `{policy, kind, action, details}` (spec 7.3). Details of a `tool_denied`:
/// `{tool_name, rule, denied_tools | allowed_tools}` (plus `tool_call_id` when the event had
/// one); of a `budget_exceeded`: `{metric, actual, limit}`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Violation {
    /// The policy's name.
    pub policy: String,
    /// What it is about.
    pub kind: ViolationKind,
    /// The policy's action.
    pub action: ViolationAction,
    /// The particulars.
    pub details: JsonMap,
}

impl Violation {
    /// `{policy, kind, action, details}`: the data of a `policy_violation` event.
    pub fn to_json(&self) -> Value {
        json!({
            keys::POLICY: self.policy,
            keys::KIND: self.kind.as_str(),
            keys::ACTION: self.action.as_str(),
            keys::DETAILS: self.details,
        })
    }

    /// The payload of the `policy_violation` event.
    pub fn event_data(&self) -> JsonMap {
        match self.to_json() {
            Value::Object(map) => map,
            _ => JsonMap::new(),
        }
    }

    /// The tool a `tool_denied` violation is about.
    pub fn tool_name(&self) -> Option<&str> {
        self.details.get(keys::TOOL_NAME).and_then(Value::as_str)
    }

    /// The metric a `budget_exceeded` violation is about.
    pub fn metric(&self) -> Option<&str> {
        self.details.get("metric").and_then(Value::as_str)
    }
}

/// The measures of one run so far, as [`evaluate`] reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RuntimeState {
    /// Milliseconds since the run started.
    pub elapsed_ms: u64,
    /// Distinct tool calls.
    pub tool_calls: u64,
    /// Input + output tokens.
    pub total_tokens: u64,
    /// The run's cost so far; `None` when it cannot be known (no rates, none reported): then
    /// `max_cost_usd` is not checked.
    pub cost_usd: Option<f64>,
}

impl RuntimeState {
    /// A state with these measures.
    pub fn new(elapsed_ms: u64, tool_calls: u64, total_tokens: u64, cost_usd: Option<f64>) -> Self {
        Self { elapsed_ms, tool_calls, total_tokens, cost_usd }
    }
}

/// The tool an event is about: `data.tool_name`, or `data.name`, when a string.
pub fn tool_name_of(event: &Event) -> Option<&str> {
    event.data.get(keys::TOOL_NAME).or_else(|| event.data.get("name")).and_then(Value::as_str)
}

/// The violations of `policy` given the run's `state` and the `event` just seen (spec 7.3).
/// Pure: the same inputs give the same violations.
///
/// * Tool rules apply to an event carrying a tool name (any kind): each deny rule listing
///   it, and each allow rule not listing it, is a `tool_denied` violation.
/// * Limits are checked on every call: a measure strictly greater than its limit is a
///   `budget_exceeded` violation (cost only when [`RuntimeState::cost_usd`] is known).
///
/// [`PolicyTracker`] calls this and reports each cause once (per limit, per tool call and
/// rule); this function reports what holds now.
///
/// ```
/// use asm_core::{Event, EventKind, SessionId};
/// use asm_policy::{Limit, Policy, RuntimeState, ViolationKind, evaluate};
/// let policy = Policy::builder("p").deny(["Bash"]).limit(Limit::MaxToolCalls(1)).build().unwrap();
/// let event = Event::new(EventKind::ToolCallStarted, SessionId::new()).with_data("tool_name", "Bash");
/// let found = evaluate(&policy, &RuntimeState::new(0, 2, 0, None), &event);
/// let kinds: Vec<_> = found.iter().map(|v| v.kind).collect();
/// assert_eq!(kinds, [ViolationKind::ToolDenied, ViolationKind::BudgetExceeded]);
/// ```
pub fn evaluate(policy: &Policy, state: &RuntimeState, event: &Event) -> Vec<Violation> {
    let mut found = Vec::new();
    evaluate_into(policy, state, event, &mut |_| false, &mut |v| found.push(v));
    found
}

/// What a violation is caused by: the [`PolicyTracker`] reports each cause once.
#[derive(Clone, Copy)]
enum Cause<'a> {
    Limit(LimitKind),
    /// Rule `rule` broken by the tool call `call` (its id, else the tool's name).
    Tool {
        rule: usize,
        call: &'a str,
    },
}

/// [`evaluate`], skipping the causes `skip` says were reported (before anything is built for
/// them: an exceeded limit costs nothing on every later event), handing the rest to `out`.
fn evaluate_into(
    policy: &Policy,
    state: &RuntimeState,
    event: &Event,
    skip: &mut dyn FnMut(Cause<'_>) -> bool,
    out: &mut dyn FnMut(Violation),
) {
    if let Some(tool) = tool_name_of(event) {
        evaluate_tool(policy, tool, event.data.get(keys::TOOL_CALL_ID).and_then(Value::as_str), skip, out);
    }
    evaluate_limits(policy, state, skip, out);
}

fn evaluate_tool(
    policy: &Policy,
    tool: &str,
    call_id: Option<&str>,
    skip: &mut dyn FnMut(Cause<'_>) -> bool,
    out: &mut dyn FnMut(Violation),
) {
    for (index, rule) in policy.tool_rules().iter().enumerate() {
        let (violated, list_key) = match rule.kind() {
            RuleKind::Deny => (rule.contains(tool), "denied_tools"),
            RuleKind::Allow => (!rule.contains(tool), "allowed_tools"),
        };
        if violated && !skip(Cause::Tool { rule: index, call: call_id.unwrap_or(tool) }) {
            let mut details = JsonMap::new();
            details.insert(keys::TOOL_NAME.into(), tool.into());
            details.insert("rule".into(), rule.kind().as_str().into());
            details.insert(list_key.into(), rule.tools().into());
            if let Some(id) = call_id {
                details.insert(keys::TOOL_CALL_ID.into(), id.into());
            }
            out(violation(policy, ViolationKind::ToolDenied, details));
        }
    }
}

fn evaluate_limits(
    policy: &Policy,
    state: &RuntimeState,
    skip: &mut dyn FnMut(Cause<'_>) -> bool,
    out: &mut dyn FnMut(Violation),
) {
    for limit in policy.limits() {
        let exceeded = match *limit {
            Limit::MaxTotalTokens(max) => state.total_tokens > max,
            Limit::MaxDurationMs(max) => state.elapsed_ms > max,
            Limit::MaxToolCalls(max) => state.tool_calls > max,
            Limit::MaxCostUsd(max) => state.cost_usd.is_some_and(|cost| cost > max),
        };
        if !exceeded || skip(Cause::Limit(limit.kind())) {
            continue;
        }
        let actual: Value = match limit.kind() {
            LimitKind::MaxTotalTokens => state.total_tokens.into(),
            LimitKind::MaxDurationMs => state.elapsed_ms.into(),
            LimitKind::MaxToolCalls => state.tool_calls.into(),
            LimitKind::MaxCostUsd => state.cost_usd.unwrap_or_default().into(),
        };
        let mut details = JsonMap::new();
        details.insert("metric".into(), limit.kind().metric().into());
        details.insert("actual".into(), actual);
        details.insert("limit".into(), limit.value_json());
        out(violation(policy, ViolationKind::BudgetExceeded, details));
    }
}

fn violation(policy: &Policy, kind: ViolationKind, details: JsonMap) -> Violation {
    Violation { policy: policy.name().to_owned(), kind, action: policy.on_violation(), details }
}

/// The error a run fails with when a `cancel` policy was violated: [`ErrorCode::PolicyViolation`]
/// "Policy violation triggered run cancellation", `details {policy, violations}`.
pub fn violation_error(policy: &Policy, violations: &[Violation]) -> Error {
    Error::new(ErrorCode::PolicyViolation, "Policy violation triggered run cancellation")
        .with_detail(keys::POLICY, policy.name().to_owned())
        .with_detail("violations", violations.iter().map(Violation::to_json).collect::<Vec<_>>())
}

/// Whether `cause` was reported before; records it if not.
fn once(limits: &mut Vec<LimitKind>, tools: &mut HashSet<(usize, String)>, cause: Cause<'_>) -> bool {
    match cause {
        Cause::Limit(kind) if limits.contains(&kind) => true,
        Cause::Limit(kind) => {
            limits.push(kind);
            false
        }
        Cause::Tool { rule, call } => !tools.insert((rule, call.to_owned())),
    }
}

/// One run's measures under a policy, fed event by event: the counting rules of spec 7.4,
/// corrected.
///
/// * Tokens: each `token_usage_updated` is folded by its `usage_mode` ([`UsageTotals`]):
///   `delta` adds, `cumulative` replaces, so cumulative reports (Codex) are not counted twice.
/// * Tool calls: each `tool_call_id` of a tool event counts once (`tool_call_started`,
///   `_completed` or `_failed`, whichever arrives first); a tool event without an id counts
///   only as `tool_call_started`.
/// * Cost: the provider's reported `total_cost_usd` when it reports one, else the usage
///   (cache reads and writes included) priced by the [`PricingTable`] for the run's model
///   (from any event's `model`, or the one given with [`model`](Self::model)).
/// * Duration: the elapsed time the caller passes (the hook runs a timer too).
/// * Each violation cause is reported once: a limit once, a tool rule once per tool call.
///
/// ```
/// use std::sync::Arc;
/// use asm_core::{Event, EventKind, SessionId};
/// use asm_policy::{Limit, Policy, PolicyTracker, PricingTable};
/// let policy = Arc::new(Policy::builder("p").limit(Limit::MaxTotalTokens(100)).build().unwrap());
/// let mut tracker = PolicyTracker::new(policy, "codex", Arc::new(PricingTable::builtin()));
/// let s = SessionId::new();
/// let report = |n: u64| Event::new(EventKind::TokenUsageUpdated, s.clone())
///     .with_data("input_tokens", n).with_data("output_tokens", 0).with_data("usage_mode", "cumulative");
/// assert!(tracker.observe(&report(60), 0).is_empty());
/// assert!(tracker.observe(&report(90), 0).is_empty(), "cumulative: 90 in all, not 150");
/// assert_eq!(tracker.observe(&report(120), 0).len(), 1);
/// assert!(tracker.observe(&report(130), 0).is_empty(), "reported once");
/// ```
#[derive(Clone, Debug)]
pub struct PolicyTracker {
    policy: Arc<Policy>,
    provider: String,
    pricing: Arc<PricingTable>,
    model: Option<String>,
    /// The rates of (provider, model), resolved when the model changes.
    rates: Option<crate::pricing::Rates>,
    usage: UsageTotals,
    estimated_cost: Option<f64>,
    elapsed_ms: u64,
    tool_calls: u64,
    call_ids: HashSet<String>,
    reported_limits: Vec<LimitKind>,
    reported_tools: HashSet<(usize, String)>,
    violations: Vec<Violation>,
    warnings: Vec<String>,
}

impl PolicyTracker {
    /// A tracker for one run of `provider` (the pricing table's provider key).
    pub fn new(policy: Arc<Policy>, provider: impl Into<String>, pricing: Arc<PricingTable>) -> Self {
        let mut tracker = Self {
            policy,
            provider: provider.into(),
            pricing,
            model: None,
            rates: None,
            usage: UsageTotals::default(),
            estimated_cost: None,
            elapsed_ms: 0,
            tool_calls: 0,
            call_ids: HashSet::new(),
            reported_limits: Vec::new(),
            reported_tools: HashSet::new(),
            violations: Vec::new(),
            warnings: Vec::new(),
        };
        tracker.rerate();
        tracker
    }

    /// Sets the model used for pricing until an event names one.
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self.rerate();
        self
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Updates the measures with `event` (seen `elapsed_ms` after the run started) and returns
    /// the violations not reported before.
    pub fn observe(&mut self, event: &Event, elapsed_ms: u64) -> Vec<Violation> {
        self.elapsed_ms = self.elapsed_ms.max(elapsed_ms);
        if let Some(model) = event.data.get(keys::MODEL).and_then(Value::as_str)
            && self.model.as_deref() != Some(model)
        {
            self.model = Some(model.to_owned());
            self.rerate();
        }
        let call_id = event.data.get(keys::TOOL_CALL_ID).and_then(Value::as_str);
        match event.kind {
            EventKind::ToolCallStarted | EventKind::ToolCallCompleted | EventKind::ToolCallFailed => match call_id {
                Some(id) if !self.call_ids.contains(id) => {
                    self.call_ids.insert(id.to_owned());
                    self.tool_calls += 1;
                }
                Some(_) => {}
                None if event.kind == EventKind::ToolCallStarted => self.tool_calls += 1,
                None => {}
            },
            EventKind::TokenUsageUpdated => {
                self.usage.record(event);
                self.reprice();
            }
            _ => {}
        }
        let state = self.state();
        let mut new = Vec::new();
        let (limits, tools) = (&mut self.reported_limits, &mut self.reported_tools);
        evaluate_into(&self.policy, &state, event, &mut |cause| once(limits, tools, cause), &mut |v| new.push(v));
        self.violations.extend(new.iter().cloned());
        new
    }

    /// Updates the elapsed time (a timer, the run's end) and returns new limit violations.
    pub fn check_elapsed(&mut self, elapsed_ms: u64) -> Vec<Violation> {
        self.elapsed_ms = self.elapsed_ms.max(elapsed_ms);
        self.check_limits()
    }

    /// Takes the provider's final figures (an outcome's usage, model and cost replace what the
    /// events said) and returns new limit violations.
    pub fn finish(&mut self, usage: TokenUsage, model: Option<&str>, cost_usd: Option<f64>) -> Vec<Violation> {
        if let Some(model) = model {
            self.model = Some(model.to_owned());
        }
        if !usage.is_zero() {
            self.usage.usage = usage;
        }
        if cost_usd.is_some() {
            self.usage.cost_usd = cost_usd;
        }
        self.rerate();
        self.check_limits()
    }

    fn check_limits(&mut self) -> Vec<Violation> {
        let state = self.state();
        let mut new = Vec::new();
        let (limits, tools) = (&mut self.reported_limits, &mut self.reported_tools);
        evaluate_limits(&self.policy, &state, &mut |cause| once(limits, tools, cause), &mut |v| new.push(v));
        self.violations.extend(new.iter().cloned());
        new
    }

    /// Resolves the rates for the current model, then reprices.
    fn rerate(&mut self) {
        self.rates = self.pricing.resolve(&self.provider, self.model.as_deref());
        self.reprice();
    }

    fn reprice(&mut self) {
        self.estimated_cost = self.rates.map(|r| r.cost(&self.usage.usage));
        if self.estimated_cost.is_none()
            && self.usage.cost_usd.is_none()
            && self.policy.limit(LimitKind::MaxCostUsd).is_some()
            && !self.warnings.iter().any(|w| w == "missing_cost_rates")
        {
            self.warnings.push("missing_cost_rates".to_owned());
        }
    }

    /// The measures as [`evaluate`] reads them.
    pub fn state(&self) -> RuntimeState {
        RuntimeState {
            elapsed_ms: self.elapsed_ms,
            tool_calls: self.tool_calls,
            total_tokens: self.usage.usage.total_tokens(),
            cost_usd: self.cost_usd(),
        }
    }

    /// The run's cost: reported by the provider, else priced from the table; `None` when
    /// neither is known.
    pub fn cost_usd(&self) -> Option<f64> {
        self.usage.cost_usd.or(self.estimated_cost)
    }

    /// Whether the cost is known (so `max_cost_usd` is checked).
    pub fn cost_supported(&self) -> bool {
        self.cost_usd().is_some()
    }

    /// Tokens so far.
    pub fn usage(&self) -> TokenUsage {
        self.usage.usage
    }

    /// Distinct tool calls so far.
    pub fn tool_calls(&self) -> u64 {
        self.tool_calls
    }

    /// Every violation so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Warnings (`missing_cost_rates` when the policy has a cost limit the run cannot price).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `{policy, action, violated, violations, usage{...}, metadata{warnings, cost_supported}}`.
    pub fn status(&self) -> Value {
        let usage = self.usage.usage;
        json!({
            "policy": self.policy.name(),
            "action": self.policy.on_violation().as_str(),
            "violated": !self.violations.is_empty(),
            "violations": self.violations.iter().map(Violation::to_json).collect::<Vec<_>>(),
            "usage": {
                "tool_calls": self.tool_calls,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_creation_tokens": usage.cache_creation_tokens,
                "total_tokens": usage.total_tokens(),
                "elapsed_ms": self.elapsed_ms,
                "model": self.model,
                "cost_usd": self.cost_usd(),
            },
            "metadata": { "warnings": self.warnings, "cost_supported": self.cost_supported() },
        })
    }
}
