//! The per-run routing options, read from the request's adapter option `routing`.

use serde_json::{Map, Value, json};

use crate::capability::CapabilityRequirement;
use crate::error::RoutingError;
use crate::policy::{PolicyOverrides, Strategy};

/// The adapter option key the router reads its per-run options from (and removes before
/// calling an adapter; every other option is forwarded unchanged).
pub const ROUTING_OPTION: &str = "routing";

/// Per-run routing options: the JSON object under the adapter option [`ROUTING_OPTION`].
///
/// | key | value | meaning |
/// |---|---|---|
/// | `prefer`, `exclude`, `max_attempts`, `weights`, `strategy` | as in [`RoutingPolicy`](crate::RoutingPolicy) | replace the router's value for this run |
/// | `policy` | an object of the keys above | applied after the top-level keys |
/// | `required_capabilities` | list of `"tool"` / `{"type": "tool", "name": "bash"}` | only adapters whose current capabilities satisfy all |
/// | `sticky_session_id` | string | route to the adapter that last served this id, while its binding lasts |
/// | `sticky` | bool | `true`: the session id is the sticky id |
/// | `native_resume` | bool (default true) | `false`: always replay the transcript, never resume an adapter's own provider session |
///
/// Unknown keys and values of the wrong shape are typed errors, nothing is run.
///
/// ```
/// use asm_routing::{RoutingOptions, Strategy};
/// let options = RoutingOptions::new().prefer(["codex"]).max_attempts(2).strategy(Strategy::Weighted).sticky_session_id("user-7");
/// let json = options.to_json();
/// assert_eq!(json["prefer"][0], "codex");
/// assert_eq!(RoutingOptions::from_json(&json, "ignored").unwrap(), options);
/// assert!(RoutingOptions::from_json(&serde_json::json!({"strategy": "round_robin"}), "s").is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RoutingOptions {
    /// Policy fields that replace the router's for this run.
    pub overrides: PolicyOverrides,
    /// Capabilities the serving adapter must have.
    pub required_capabilities: Vec<CapabilityRequirement>,
    /// The sticky id, if the run is sticky.
    pub sticky_session_id: Option<String>,
    /// Whether an adapter's own native session handle may be resumed (default `true`).
    pub native_resume: bool,
}

impl Default for RoutingOptions {
    fn default() -> Self {
        Self {
            overrides: PolicyOverrides::default(),
            required_capabilities: Vec::new(),
            sticky_session_id: None,
            native_resume: true,
        }
    }
}

const KEYS: &[&str] = &[
    "prefer",
    "exclude",
    "max_attempts",
    "weights",
    "strategy",
    "policy",
    "required_capabilities",
    "sticky_session_id",
    "sticky",
    "native_resume",
];

impl RoutingOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }
    /// Replaces `prefer` for this run.
    #[must_use]
    pub fn prefer(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.overrides.prefer = Some(ids.into_iter().map(Into::into).collect());
        self
    }
    /// Replaces `exclude` for this run.
    #[must_use]
    pub fn exclude(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.overrides.exclude = Some(ids.into_iter().map(Into::into).collect());
        self
    }
    /// Replaces `max_attempts` for this run (0 is taken as 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.overrides.max_attempts = Some(attempts.max(1));
        self
    }
    /// Replaces the strategy for this run.
    #[must_use]
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.overrides.strategy = Some(strategy);
        self
    }
    asm_core::builder_setters! {
        /// Adds a required capability.
        fn require(requirement: CapabilityRequirement) { required_capabilities.push(requirement) }
        /// Makes the run sticky under `id`.
        fn sticky_session_id(id: impl Into<String>) { sticky_session_id = Some(id.into()) }
        /// Allows or forbids resuming an adapter's own provider session.
        fn native_resume(allowed: bool) { native_resume = allowed }
    }

    /// The JSON object to put under the adapter option [`ROUTING_OPTION`].
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        let o = &self.overrides;
        if let Some(prefer) = &o.prefer {
            object.insert("prefer".into(), json!(prefer));
        }
        if let Some(exclude) = &o.exclude {
            object.insert("exclude".into(), json!(exclude));
        }
        if let Some(attempts) = o.max_attempts {
            object.insert("max_attempts".into(), attempts.into());
        }
        if let Some(weights) = &o.weights {
            object.insert("weights".into(), json!(weights));
        }
        if let Some(strategy) = o.strategy {
            object.insert("strategy".into(), strategy.as_str().into());
        }
        if !self.required_capabilities.is_empty() {
            object.insert("required_capabilities".into(), json!(self.required_capabilities));
        }
        if let Some(id) = &self.sticky_session_id {
            object.insert("sticky_session_id".into(), id.clone().into());
        }
        if !self.native_resume {
            object.insert("native_resume".into(), false.into());
        }
        Value::Object(object)
    }

    /// Reads the options; `session_id` is the sticky id when `sticky` is `true`.
    ///
    /// # Errors
    /// [`RoutingError::InvalidOption`] for a non-object, an unknown key or a value of the wrong
    /// shape; [`RoutingError::UnknownStrategy`].
    pub fn from_json(value: &Value, session_id: &str) -> Result<Self, RoutingError> {
        let invalid = |key: &str, reason: &str| RoutingError::InvalidOption { key: key.into(), reason: reason.into() };
        let object = value.as_object().ok_or_else(|| invalid(ROUTING_OPTION, "must be an object"))?;
        if let Some(unknown) = object.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(invalid(unknown, "unknown routing option"));
        }
        let mut options = Self::new();
        options.overrides.read(object)?;
        if let Some(policy) = object.get("policy") {
            let policy = policy.as_object().ok_or_else(|| invalid("policy", "must be an object"))?;
            options.overrides.read(policy)?;
        }
        if let Some(requirements) = object.get("required_capabilities") {
            let list = requirements.as_array().ok_or_else(|| invalid("required_capabilities", "must be a list"))?;
            options.required_capabilities =
                list.iter().map(CapabilityRequirement::from_json).collect::<Result<_, _>>()?;
        }
        match object.get("sticky_session_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) if !id.is_empty() => options.sticky_session_id = Some(id.clone()),
            Some(_) => return Err(invalid("sticky_session_id", "must be a non-empty string")),
        }
        match object.get("sticky") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => {
                options.sticky_session_id.get_or_insert_with(|| session_id.to_owned());
            }
            Some(_) => return Err(invalid("sticky", "must be a boolean")),
        }
        match object.get("native_resume") {
            None => {}
            Some(Value::Bool(allowed)) => options.native_resume = *allowed,
            Some(_) => return Err(invalid("native_resume", "must be a boolean")),
        }
        Ok(options)
    }
}
