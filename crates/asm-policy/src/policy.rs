//! [`Policy`]: limits, tool rules, the action on a violation; validation, merging, stacking and
//! the preflight check.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Value, json};

use asm_core::{Error, ErrorCode, JsonMap};

/// What happens when a policy is violated. Ordered by strictness: `Warn < RequestApproval <
/// Cancel` (stacking keeps the strictest, see [`Policy::stack`]).
///
/// ```
/// use asm_policy::ViolationAction;
/// assert_eq!(ViolationAction::parse("request_approval").unwrap(), ViolationAction::RequestApproval);
/// assert!(ViolationAction::Cancel > ViolationAction::Warn);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ViolationAction {
    /// Record the violation; the run keeps its outcome and carries the verdict.
    Warn,
    /// Record the violation and emit `tool_approval_requested`; the run is not cancelled.
    RequestApproval,
    /// Stop the run: it fails with `policy_violation`, even if the provider succeeded.
    #[default]
    Cancel,
}

asm_core::string_enum! {
    /// The snake_case name.
    ViolationAction {
        Warn => "warn",
        RequestApproval => "request_approval",
        Cancel => "cancel",
    }
    /// Every action, least strict first.
    pub const ALL;
    /// Parses `cancel`, `request_approval` or `warn`.
    ///
    /// # Errors
    /// [`PolicyError::InvalidAction`] for anything else.
    pub fn parse(text) -> Result<Self, PolicyError> {
        Err(PolicyError::InvalidAction(text.to_owned()))
    }
}

/// The kind of a [`Limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// `max_total_tokens`: input plus output tokens of the run.
    MaxTotalTokens,
    /// `max_duration_ms`: wall time since the run's start hook.
    MaxDurationMs,
    /// `max_tool_calls`: distinct tool calls.
    MaxToolCalls,
    /// `max_cost_usd`: the run's cost in USD.
    MaxCostUsd,
}

asm_core::string_enum! {
    /// The key (`max_total_tokens`, ...).
    LimitKind {
        MaxTotalTokens => "max_total_tokens",
        MaxDurationMs => "max_duration_ms",
        MaxToolCalls => "max_tool_calls",
        MaxCostUsd => "max_cost_usd",
    }
    /// Every kind.
    pub const ALL;
    /// The kind named `key`, if it is one.
    pub fn from_key(key) -> Option<Self>;
}

impl LimitKind {
    /// The metric a violation of this kind reports (`total_tokens`, `duration_ms`,
    /// `tool_calls`, `cost_usd`).
    pub const fn metric(self) -> &'static str {
        match self {
            Self::MaxTotalTokens => "total_tokens",
            Self::MaxDurationMs => "duration_ms",
            Self::MaxToolCalls => "tool_calls",
            Self::MaxCostUsd => "cost_usd",
        }
    }
}

/// One budget. A run violates it when its measure is strictly greater than the value.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Limit {
    /// At most this many input + output tokens.
    MaxTotalTokens(u64),
    /// At most this many milliseconds (enforced by a timer, not only when events arrive).
    MaxDurationMs(u64),
    /// At most this many tool calls (each call id counted once).
    MaxToolCalls(u64),
    /// At most this many USD (finite, not negative).
    MaxCostUsd(f64),
}

impl Limit {
    /// Its kind.
    pub const fn kind(&self) -> LimitKind {
        match self {
            Self::MaxTotalTokens(_) => LimitKind::MaxTotalTokens,
            Self::MaxDurationMs(_) => LimitKind::MaxDurationMs,
            Self::MaxToolCalls(_) => LimitKind::MaxToolCalls,
            Self::MaxCostUsd(_) => LimitKind::MaxCostUsd,
        }
    }

    /// The value as JSON (an integer, or a number for cost).
    pub fn value_json(&self) -> Value {
        match *self {
            Self::MaxTotalTokens(v) | Self::MaxDurationMs(v) | Self::MaxToolCalls(v) => v.into(),
            Self::MaxCostUsd(v) => v.into(),
        }
    }

    fn from_json(kind: &str, value: &Value) -> Result<Self, PolicyError> {
        let invalid = |reason: &'static str| PolicyError::InvalidLimit { kind: kind.to_owned(), reason };
        let kind = LimitKind::from_key(kind).ok_or_else(|| invalid("unknown limit kind"))?;
        let limit = match kind {
            LimitKind::MaxCostUsd => Limit::MaxCostUsd(value.as_f64().ok_or_else(|| invalid("must be a number"))?),
            _ => {
                let v = value.as_u64().ok_or_else(|| invalid("must be an integer >= 0"))?;
                match kind {
                    LimitKind::MaxTotalTokens => Limit::MaxTotalTokens(v),
                    LimitKind::MaxDurationMs => Limit::MaxDurationMs(v),
                    _ => Limit::MaxToolCalls(v),
                }
            }
        };
        limit.validate()?;
        Ok(limit)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        match *self {
            Self::MaxCostUsd(v) if !v.is_finite() || v < 0.0 => Err(PolicyError::InvalidLimit {
                kind: LimitKind::MaxCostUsd.as_str().to_owned(),
                reason: "must be a finite number >= 0",
            }),
            _ => Ok(()),
        }
    }
}

/// Whether a [`ToolRule`] allows or denies its tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuleKind {
    /// Only the listed tools may be used (every allow rule must list the tool).
    Allow,
    /// The listed tools may not be used.
    Deny,
}

asm_core::string_enum! {
    /// `allow` or `deny`.
    RuleKind {
        Allow => "allow",
        Deny => "deny",
    }
}

/// A tool rule. Tool names match exactly and case-sensitively (`Bash` is not `bash`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolRule {
    kind: RuleKind,
    tools: Vec<String>,
}

impl ToolRule {
    /// A rule of `kind` over `tools`: empty names are dropped and duplicates removed (first
    /// occurrence kept), so `allow([""])` is an empty allow list (which
    /// [`Policy::preflight`] refuses).
    pub fn new<I, S>(kind: RuleKind, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut seen = BTreeSet::new();
        let tools = tools.into_iter().map(Into::into).filter(|t| !t.is_empty() && seen.insert(t.clone())).collect();
        Self { kind, tools }
    }
    /// An allow rule.
    pub fn allow<I, S>(tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(RuleKind::Allow, tools)
    }
    /// A deny rule.
    pub fn deny<I, S>(tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(RuleKind::Deny, tools)
    }
    /// Allow or deny.
    pub fn kind(&self) -> RuleKind {
        self.kind
    }
    /// The tools, in first-seen order.
    pub fn tools(&self) -> &[String] {
        &self.tools
    }
    /// Whether the rule lists `tool` (exact match).
    pub fn contains(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
    }
    fn to_json(&self) -> Value {
        json!({ self.kind.as_str(): self.tools })
    }
}

/// Why a policy is invalid. Converts into [`asm_core::Error`] with
/// [`ErrorCode::ValidationError`] and `details.field` / `details.reason`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The name is empty ("policy name is required").
    MissingName,
    /// A limit has an unknown kind or a bad value.
    InvalidLimit {
        /// The kind as given.
        kind: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two limits of the same kind in one policy.
    DuplicateLimit(LimitKind),
    /// A tool rule has the wrong shape.
    InvalidToolRule(String),
    /// `on_violation` is not `cancel`, `request_approval` or `warn`.
    InvalidAction(String),
    /// A field has the wrong JSON shape, or is unknown.
    InvalidField {
        /// The field.
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl PolicyError {
    fn field(&self) -> &str {
        match self {
            Self::MissingName => "name",
            Self::InvalidLimit { .. } | Self::DuplicateLimit(_) => "limits",
            Self::InvalidToolRule(_) => "tool_rules",
            Self::InvalidAction(_) => "on_violation",
            Self::InvalidField { field, .. } => field,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingName => f.write_str("policy name is required"),
            Self::InvalidLimit { kind, reason } => write!(f, "invalid policy limit {kind:?}: {reason}"),
            Self::DuplicateLimit(kind) => write!(f, "invalid policy limit {kind}: given twice"),
            Self::InvalidToolRule(reason) => write!(f, "invalid tool rule: {reason}"),
            Self::InvalidAction(action) => {
                write!(f, "invalid on_violation {action:?}: expected cancel, request_approval or warn")
            }
            Self::InvalidField { field, reason } => write!(f, "invalid policy field {field:?}: {reason}"),
        }
    }
}

impl std::error::Error for PolicyError {}

impl From<PolicyError> for Error {
    fn from(error: PolicyError) -> Self {
        let reason = match &error {
            PolicyError::MissingName => "missing_name",
            PolicyError::InvalidLimit { .. } => "invalid_limit",
            PolicyError::DuplicateLimit(_) => "duplicate_limit",
            PolicyError::InvalidToolRule(_) => "invalid_tool_rule",
            PolicyError::InvalidAction(_) => "invalid_action",
            PolicyError::InvalidField { .. } => "invalid_field",
        };
        Error::new(ErrorCode::ValidationError, error.to_string())
            .with_detail("field", error.field().to_owned())
            .with_detail("reason", reason)
    }
}

/// Why [`Policy::preflight`] refused a policy before the provider ran. Converts into
/// [`asm_core::Error`] with [`ErrorCode::PolicyViolation`] and `details.check`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreflightFailure {
    /// An allow rule lists no tool: nothing could ever be used (`check: empty_allow_list`).
    EmptyAllowList,
    /// A token or tool-call budget of 0 (`check: zero_budget`, `kind`). Zero duration and cost
    /// budgets are allowed.
    ZeroBudget(LimitKind),
    /// Tools both allowed and denied (`check: contradictory_rules`, `tools`).
    ContradictoryRules(Vec<String>),
}

impl PreflightFailure {
    /// The check's name.
    pub const fn check(&self) -> &'static str {
        match self {
            Self::EmptyAllowList => "empty_allow_list",
            Self::ZeroBudget(_) => "zero_budget",
            Self::ContradictoryRules(_) => "contradictory_rules",
        }
    }
}

impl fmt::Display for PreflightFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyAllowList => f.write_str("policy preflight: an allow rule lists no tools"),
            Self::ZeroBudget(kind) => write!(f, "policy preflight: {kind} is 0"),
            Self::ContradictoryRules(tools) => {
                write!(f, "policy preflight: tools both allowed and denied: {}", tools.join(", "))
            }
        }
    }
}

impl std::error::Error for PreflightFailure {}

impl From<PreflightFailure> for Error {
    fn from(failure: PreflightFailure) -> Self {
        let error = Error::new(ErrorCode::PolicyViolation, failure.to_string()).with_detail("check", failure.check());
        match failure {
            PreflightFailure::EmptyAllowList => error,
            PreflightFailure::ZeroBudget(kind) => error.with_detail("kind", kind.as_str()),
            PreflightFailure::ContradictoryRules(tools) => error.with_detail("tools", tools),
        }
    }
}

/// A run policy: limits, tool rules, what to do on a violation, and free metadata.
///
/// Build one with [`Policy::builder`] (typed) or [`Policy::from_json`] (the map form of a
/// configuration file); both validate. Defaults: name `default`, no limits, no rules,
/// `cancel`.
///
/// ```
/// use asm_policy::{Limit, Policy, ViolationAction};
/// let policy = Policy::builder("ci")
///     .limit(Limit::MaxTotalTokens(50_000))
///     .limit(Limit::MaxCostUsd(0.50))
///     .allow(["Read", "Grep", "Bash"])
///     .deny(["WebFetch"])
///     .on_violation(ViolationAction::Cancel)
///     .build()?;
/// assert_eq!(policy.limit(asm_policy::LimitKind::MaxTotalTokens), Some(Limit::MaxTotalTokens(50_000)));
/// policy.preflight()?;
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    name: String,
    limits: Vec<Limit>,
    tool_rules: Vec<ToolRule>,
    on_violation: ViolationAction,
    metadata: JsonMap,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            limits: Vec::new(),
            tool_rules: Vec::new(),
            on_violation: ViolationAction::Cancel,
            metadata: JsonMap::new(),
        }
    }
}

impl Policy {
    /// A builder for a policy named `name`.
    pub fn builder(name: impl Into<String>) -> PolicyBuilder {
        PolicyBuilder { policy: Policy { name: name.into(), ..Policy::default() }, error: None }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The limits, one per kind, in the order given.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }
    /// The limit of `kind`, if set.
    pub fn limit(&self, kind: LimitKind) -> Option<Limit> {
        self.limits.iter().copied().find(|l| l.kind() == kind)
    }
    /// The tool rules (all apply).
    pub fn tool_rules(&self) -> &[ToolRule] {
        &self.tool_rules
    }
    /// The action on a violation.
    pub fn on_violation(&self) -> ViolationAction {
        self.on_violation
    }
    /// The metadata.
    pub fn metadata(&self) -> &JsonMap {
        &self.metadata
    }

    /// Parses the map form:
    /// `{"name", "limits": {kind: value} | [[kind, value], ...], "tool_rules": [{"allow": [...]}
    /// | {"deny": [...]} | ["allow", [...]], ...], "on_violation", "metadata": {...}}`; every
    /// field is optional. Non-string and empty tool names are dropped, duplicates removed.
    ///
    /// ```
    /// use asm_policy::{Policy, ViolationAction};
    /// let p = Policy::from_json(&serde_json::json!({
    ///     "name": "review", "limits": {"max_tool_calls": 10}, "tool_rules": [{"deny": ["Bash"]}],
    ///     "on_violation": "warn"
    /// })).unwrap();
    /// assert_eq!(p.on_violation(), ViolationAction::Warn);
    /// assert!(Policy::from_json(&serde_json::json!({"limits": {"max_tokens": 1}})).is_err());
    /// ```
    ///
    /// # Errors
    /// A [`PolicyError`] naming the first invalid field.
    pub fn from_json(value: &Value) -> Result<Self, PolicyError> {
        let Value::Object(map) = value else {
            return Err(PolicyError::InvalidField { field: "policy".into(), reason: "must be an object" });
        };
        let mut policy = Policy::default();
        for (key, value) in map {
            match key.as_str() {
                "name" => {
                    policy.name = value
                        .as_str()
                        .ok_or(PolicyError::InvalidField { field: "name".into(), reason: "must be a string" })?
                        .to_owned();
                }
                "limits" => policy.limits = limits_from_json(value)?,
                "tool_rules" => policy.tool_rules = rules_from_json(value)?,
                "on_violation" => {
                    let text = value.as_str().ok_or_else(|| PolicyError::InvalidAction(value.to_string()))?;
                    policy.on_violation = ViolationAction::parse(text)?;
                }
                "metadata" => {
                    policy.metadata = value
                        .as_object()
                        .ok_or(PolicyError::InvalidField { field: "metadata".into(), reason: "must be an object" })?
                        .clone();
                }
                other => return Err(PolicyError::InvalidField { field: other.to_owned(), reason: "unknown field" }),
            }
        }
        policy.validate()?;
        Ok(policy)
    }

    /// The map form [`from_json`](Self::from_json) reads.
    pub fn to_json(&self) -> Value {
        // A list of pairs keeps the order the limits were given in.
        let limits: Vec<Value> = self.limits.iter().map(|l| json!([l.kind().as_str(), l.value_json()])).collect();
        json!({
            "name": self.name,
            "limits": limits,
            "tool_rules": self.tool_rules.iter().map(ToolRule::to_json).collect::<Vec<_>>(),
            "on_violation": self.on_violation.as_str(),
            "metadata": self.metadata,
        })
    }

    /// This policy with the fields present in `overrides` (map form, see
    /// [`from_json`](Self::from_json)) replaced whole, re-validated.
    ///
    /// Unlike v0.8.0, which silently returned the base policy when the merge was invalid, an
    /// invalid override is an error.
    ///
    /// ```
    /// use asm_policy::{Policy, ViolationAction};
    /// let base = Policy::builder("base").build().unwrap();
    /// let over = serde_json::json!({"on_violation": "warn"});
    /// assert_eq!(base.merge(over.as_object().unwrap()).unwrap().on_violation(), ViolationAction::Warn);
    /// let bad = serde_json::json!({"on_violation": "explode"});
    /// assert!(base.merge(bad.as_object().unwrap()).is_err());
    /// ```
    ///
    /// # Errors
    /// A [`PolicyError`] when the merged policy is invalid.
    pub fn merge(&self, overrides: &JsonMap) -> Result<Self, PolicyError> {
        let mut attrs = match self.to_json() {
            Value::Object(map) => map,
            _ => JsonMap::new(),
        };
        for (key, value) in overrides {
            attrs.insert(key.clone(), value.clone());
        }
        Self::from_json(&Value::Object(attrs))
    }

    /// Stacks policies left to right (spec 7.2): no policy is the default policy, one is
    /// itself; otherwise names are joined with `" + "` (unless equal), limits replaced per
    /// kind by later policies, tool rules concatenated (all apply), the strictest action wins
    /// (`cancel` > `request_approval` > `warn`) and metadata merged (later keys win).
    ///
    /// Every input is a valid policy, so the result is one too: there is no failure case to
    /// swallow (v0.8.0 returned the base silently when a step failed validation).
    ///
    /// ```
    /// use asm_policy::{Limit, LimitKind, Policy, ViolationAction};
    /// let org = Policy::builder("org").limit(Limit::MaxTotalTokens(100_000)).deny(["WebFetch"]).build().unwrap();
    /// let team = Policy::builder("team")
    ///     .limit(Limit::MaxTotalTokens(20_000))
    ///     .deny(["Bash"])
    ///     .on_violation(ViolationAction::Warn)
    ///     .build()
    ///     .unwrap();
    /// let p = Policy::stack([org, team]);
    /// assert_eq!(p.name(), "org + team");
    /// assert_eq!(p.limit(LimitKind::MaxTotalTokens), Some(Limit::MaxTotalTokens(20_000)));
    /// assert_eq!(p.tool_rules().len(), 2);
    /// assert_eq!(p.on_violation(), ViolationAction::Cancel, "cancel is sticky");
    /// ```
    pub fn stack(policies: impl IntoIterator<Item = Policy>) -> Policy {
        let mut policies = policies.into_iter();
        let Some(mut acc) = policies.next() else { return Policy::default() };
        for next in policies {
            if acc.name != next.name {
                acc.name = format!("{} + {}", acc.name, next.name);
            }
            for limit in next.limits {
                match acc.limits.iter_mut().find(|l| l.kind() == limit.kind()) {
                    Some(slot) => *slot = limit,
                    None => acc.limits.push(limit),
                }
            }
            acc.tool_rules.extend(next.tool_rules);
            acc.on_violation = acc.on_violation.max(next.on_violation);
            acc.metadata.extend(next.metadata);
        }
        acc
    }

    /// The checks run before the provider is called (spec 7.5), first failure wins: an empty
    /// allow list, a zero token or tool-call budget, a tool both allowed and denied.
    ///
    /// ```
    /// use asm_policy::{Policy, PreflightFailure};
    /// let p = Policy::builder("p").allow(["Bash"]).deny(["Bash"]).build().unwrap();
    /// assert_eq!(p.check_preflight(), Err(PreflightFailure::ContradictoryRules(vec!["Bash".into()])));
    /// ```
    ///
    /// # Errors
    /// The first [`PreflightFailure`].
    pub fn check_preflight(&self) -> Result<(), PreflightFailure> {
        if self.tool_rules.iter().any(|r| r.kind == RuleKind::Allow && r.tools.is_empty()) {
            return Err(PreflightFailure::EmptyAllowList);
        }
        for limit in &self.limits {
            if matches!(limit, Limit::MaxTotalTokens(0) | Limit::MaxToolCalls(0)) {
                return Err(PreflightFailure::ZeroBudget(limit.kind()));
            }
        }
        let denied: BTreeSet<&str> =
            self.rules_of(RuleKind::Deny).flat_map(|r| r.tools.iter().map(String::as_str)).collect();
        let mut both = Vec::new();
        for tool in self.rules_of(RuleKind::Allow).flat_map(|r| r.tools.iter()) {
            if denied.contains(tool.as_str()) && !both.contains(tool) {
                both.push(tool.clone());
            }
        }
        if !both.is_empty() {
            return Err(PreflightFailure::ContradictoryRules(both));
        }
        Ok(())
    }

    /// [`check_preflight`](Self::check_preflight) as an [`asm_core::Error`]
    /// ([`ErrorCode::PolicyViolation`], `details.check`, `details.policy`).
    ///
    /// # Errors
    /// See [`check_preflight`](Self::check_preflight).
    pub fn preflight(&self) -> asm_core::Result<()> {
        self.check_preflight().map_err(|f| Error::from(f).with_detail("policy", self.name.clone()))
    }

    /// The rules of `kind`.
    pub(crate) fn rules_of(&self, kind: RuleKind) -> impl Iterator<Item = &ToolRule> {
        self.tool_rules.iter().filter(move |r| r.kind == kind)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        if self.name.trim().is_empty() {
            return Err(PolicyError::MissingName);
        }
        let mut kinds = BTreeSet::new();
        for limit in &self.limits {
            limit.validate()?;
            if !kinds.insert(limit.kind()) {
                return Err(PolicyError::DuplicateLimit(limit.kind()));
            }
        }
        Ok(())
    }
}

/// Builds a [`Policy`] (see [`Policy::builder`]).
#[derive(Clone, Debug)]
#[must_use]
pub struct PolicyBuilder {
    policy: Policy,
    error: Option<PolicyError>,
}

impl PolicyBuilder {
    /// Adds a limit (one per kind; a second of the same kind is an error at build).
    pub fn limit(mut self, limit: Limit) -> Self {
        self.policy.limits.push(limit);
        self
    }
    /// Adds a rule.
    pub fn rule(mut self, rule: ToolRule) -> Self {
        self.policy.tool_rules.push(rule);
        self
    }
    /// Adds an allow rule.
    pub fn allow<I, S>(self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rule(ToolRule::allow(tools))
    }
    /// Adds a deny rule.
    pub fn deny<I, S>(self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rule(ToolRule::deny(tools))
    }
    /// Sets the action on a violation.
    pub fn on_violation(mut self, action: ViolationAction) -> Self {
        self.policy.on_violation = action;
        self
    }
    /// Sets `on_violation` from its name (an unknown name is an error at build).
    pub fn on_violation_str(mut self, action: &str) -> Self {
        match ViolationAction::parse(action) {
            Ok(action) => self.policy.on_violation = action,
            Err(error) => self.error = self.error.or(Some(error)),
        }
        self
    }
    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.policy.metadata.insert(key.into(), value.into());
        self
    }
    /// Validates and returns the policy.
    ///
    /// # Errors
    /// [`PolicyError`]: empty name, a negative or non-finite cost, a limit kind given twice,
    /// an unknown action name.
    pub fn build(self) -> Result<Policy, PolicyError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        self.policy.validate()?;
        Ok(self.policy)
    }
}

fn limits_from_json(value: &Value) -> Result<Vec<Limit>, PolicyError> {
    let mut limits = Vec::new();
    match value {
        Value::Object(map) => {
            for (kind, value) in map {
                limits.push(Limit::from_json(kind, value)?);
            }
        }
        Value::Array(items) => {
            for item in items {
                let (kind, value) = match item {
                    Value::Array(pair) if pair.len() == 2 => (pair[0].as_str(), &pair[1]),
                    Value::Object(o) => (o.get("kind").and_then(Value::as_str), o.get("value").unwrap_or(&Value::Null)),
                    _ => (None, &Value::Null),
                };
                let kind = kind.ok_or(PolicyError::InvalidLimit {
                    kind: item.to_string(),
                    reason: "expected [kind, value] or {kind, value}",
                })?;
                limits.push(Limit::from_json(kind, value)?);
            }
        }
        _ => return Err(PolicyError::InvalidField { field: "limits".into(), reason: "must be an object or a list" }),
    }
    Ok(limits)
}

fn rules_from_json(value: &Value) -> Result<Vec<ToolRule>, PolicyError> {
    let Value::Array(items) = value else {
        return Err(PolicyError::InvalidToolRule("tool_rules must be a list".into()));
    };
    items
        .iter()
        .map(|item| {
            let (kind, tools) = match item {
                Value::Object(o) if o.len() == 1 => o.iter().next().map(|(k, v)| (k.as_str(), v)).unzip(),
                Value::Array(pair) if pair.len() == 2 => (pair[0].as_str(), Some(&pair[1])),
                _ => (None, None),
            };
            let kind = match kind {
                Some("allow") => RuleKind::Allow,
                Some("deny") => RuleKind::Deny,
                _ => return Err(PolicyError::InvalidToolRule(format!("expected {{allow|deny: [...]}}, got {item}"))),
            };
            let Some(Value::Array(tools)) = tools else {
                return Err(PolicyError::InvalidToolRule(format!("the tools of a rule must be a list, got {item}")));
            };
            Ok(ToolRule::new(kind, tools.iter().filter_map(Value::as_str)))
        })
        .collect()
}
