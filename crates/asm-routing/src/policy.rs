//! [`RoutingPolicy`]: which adapters a run may use, in which order, and how often to fail over.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RoutingError;

/// How candidates are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// The `prefer` list first (in its order), then the other candidates in registration order.
    #[default]
    Prefer,
    /// A weighted random order: the chance of coming first is proportional to the candidate's
    /// score, `weight` (default 1.0) − 0.5 × its recorded consecutive failures. Candidates whose
    /// score is not positive come after the others, by score, then by `prefer` rank, then in
    /// registration order.
    Weighted,
}

asm_core::string_enum! {
    /// The wire name (`prefer`, `weighted`).
    Strategy {
        Prefer => "prefer",
        Weighted => "weighted",
    }
    /// Parses `prefer` or `weighted`; anything else is
    /// [`RoutingError::UnknownStrategy`] (the original silently fell back to `prefer`).
    impl FromStr(text) -> Result<Self, RoutingError> {
        Err(RoutingError::UnknownStrategy(text.to_owned()))
    }
}

/// Which adapters a run may use and in which order (a pure value).
///
/// Defaults: no `prefer`, no `exclude`, `max_attempts` 3, no weights, strategy `prefer`.
///
/// ```
/// use asm_routing::{RoutingPolicy, Strategy};
/// let policy = RoutingPolicy::new().prefer(["claude", "codex"]).exclude(["amp"]).max_attempts(2);
/// let registered = ["amp".to_owned(), "codex".to_owned(), "claude".to_owned(), "shell".to_owned()];
/// let ordered = policy.order(&registered, |_| 0, &mut rand::rng());
/// assert_eq!(ordered, ["claude", "codex", "shell"]);
/// assert_eq!(policy.attempt_limit(ordered.len()), 2);
/// assert_eq!(policy.strategy, Strategy::Prefer);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RoutingPolicy {
    /// Adapter ids to try first, in this order (ids not registered are skipped).
    pub prefer: Vec<String>,
    /// Adapter ids never to use.
    pub exclude: Vec<String>,
    /// Most attempts per run, failovers included (at least 1).
    pub max_attempts: u32,
    /// Weights for the `weighted` strategy (non-negative; default 1.0).
    pub weights: BTreeMap<String, f64>,
    /// How candidates are ordered.
    pub strategy: Strategy,
}

impl Default for RoutingPolicy {
    fn default() -> Self {
        Self {
            prefer: Vec::new(),
            exclude: Vec::new(),
            max_attempts: 3,
            weights: BTreeMap::new(),
            strategy: Strategy::Prefer,
        }
    }
}

fn dedup(ids: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        let id = id.into();
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

impl RoutingPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }
    asm_core::builder_setters! {
        /// Sets the `prefer` list (duplicates dropped).
        fn prefer(ids: impl IntoIterator<Item = impl Into<String>>) { prefer = dedup(ids) }
        /// Sets the `exclude` list (duplicates dropped).
        fn exclude(ids: impl IntoIterator<Item = impl Into<String>>) { exclude = dedup(ids) }
    }
    /// Sets the attempt limit (0 is taken as 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }
    /// Sets one weight (negative or non-finite values are taken as 0).
    #[must_use]
    pub fn weight(mut self, id: impl Into<String>, weight: f64) -> Self {
        self.weights.insert(id.into(), if weight.is_finite() { weight.max(0.0) } else { 0.0 });
        self
    }
    asm_core::builder_setters! {
        /// Sets the strategy.
        fn strategy(strategy: Strategy) { strategy = strategy }
    }

    /// The weight of `id` (1.0 when not set).
    pub fn weight_of(&self, id: &str) -> f64 {
        self.weights.get(id).copied().unwrap_or(1.0)
    }

    /// `overrides` applied over `self`: each field set in `overrides` replaces this one.
    #[must_use]
    pub fn merged(&self, overrides: &PolicyOverrides) -> RoutingPolicy {
        let mut policy = self.clone();
        if let Some(prefer) = &overrides.prefer {
            policy.prefer = dedup(prefer.iter().cloned());
        }
        if let Some(exclude) = &overrides.exclude {
            policy.exclude = dedup(exclude.iter().cloned());
        }
        if let Some(attempts) = overrides.max_attempts {
            policy.max_attempts = attempts.max(1);
        }
        if let Some(weights) = &overrides.weights {
            policy.weights = weights.clone();
        }
        if let Some(strategy) = overrides.strategy {
            policy.strategy = strategy;
        }
        policy
    }

    /// `min(max_attempts, candidates)`.
    pub fn attempt_limit(&self, candidates: usize) -> usize {
        usize::try_from(self.max_attempts).unwrap_or(usize::MAX).min(candidates)
    }

    /// Orders `candidates` (registration order) by the strategy, after dropping excluded ids.
    /// `failures` gives an adapter's recorded consecutive failures (the weighted score's
    /// penalty); `rng` draws the weighted order.
    pub fn order<R: Rng + ?Sized>(
        &self,
        candidates: &[String],
        failures: impl Fn(&str) -> u32,
        rng: &mut R,
    ) -> Vec<String> {
        let kept: Vec<&String> = candidates.iter().filter(|id| !self.exclude.contains(id)).collect();
        match self.strategy {
            Strategy::Prefer => {
                let mut ordered: Vec<String> = self.prefer.iter().filter(|id| kept.contains(id)).cloned().collect();
                ordered.extend(kept.iter().filter(|id| !self.prefer.contains(id)).map(|id| (*id).clone()));
                ordered
            }
            Strategy::Weighted => {
                let rank = |id: &str| self.prefer.iter().position(|p| p == id).unwrap_or(usize::MAX);
                let mut drawn: Vec<(f64, &String)> = Vec::new();
                let mut rest: Vec<(f64, usize, usize, &String)> = Vec::new();
                for (position, id) in kept.iter().enumerate() {
                    let score = self.weight_of(id) - 0.5 * f64::from(failures(id));
                    if score > 0.0 {
                        // Efraimidis–Spirakis: sorting by u^(1/w) descending draws a weighted
                        // order without replacement; ln(u)/w is the same order, numerically safer.
                        let u: f64 = rng.random::<f64>();
                        drawn.push((u.ln() / score, id));
                    } else {
                        rest.push((score, rank(id), position, id));
                    }
                }
                drawn.sort_by(|a, b| b.0.total_cmp(&a.0));
                rest.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
                drawn.into_iter().map(|(_, id)| id.clone()).chain(rest.into_iter().map(|r| r.3.clone())).collect()
            }
        }
    }
}

/// Per-run changes to a [`RoutingPolicy`]: each field that is set replaces the router's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PolicyOverrides {
    /// Replaces `prefer`.
    pub prefer: Option<Vec<String>>,
    /// Replaces `exclude`.
    pub exclude: Option<Vec<String>>,
    /// Replaces `max_attempts`.
    pub max_attempts: Option<u32>,
    /// Replaces `weights`.
    pub weights: Option<BTreeMap<String, f64>>,
    /// Replaces `strategy`.
    pub strategy: Option<Strategy>,
}

impl PolicyOverrides {
    /// Reads the policy keys (`prefer`, `exclude`, `max_attempts`, `weights`, `strategy`) of a
    /// JSON object into `self`, replacing what is already set; other keys are left to the
    /// caller. Returns whether any key was read.
    ///
    /// # Errors
    /// [`RoutingError::InvalidOption`] for a value of the wrong shape (a non-string id, a
    /// `max_attempts` that is not a positive integer, a negative or non-numeric weight) and
    /// [`RoutingError::UnknownStrategy`].
    pub fn read(&mut self, object: &serde_json::Map<String, Value>) -> Result<(), RoutingError> {
        if let Some(value) = object.get("prefer") {
            self.prefer = Some(id_list("prefer", value)?);
        }
        if let Some(value) = object.get("exclude") {
            self.exclude = Some(id_list("exclude", value)?);
        }
        if let Some(value) = object.get("max_attempts") {
            let attempts = value
                .as_u64()
                .filter(|n| *n > 0)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid("max_attempts", "must be a positive integer"))?;
            self.max_attempts = Some(attempts);
        }
        if let Some(value) = object.get("weights") {
            let map = value.as_object().ok_or_else(|| invalid("weights", "must be an object of id -> number"))?;
            let mut weights = BTreeMap::new();
            for (id, weight) in map {
                let weight = weight
                    .as_f64()
                    .filter(|w| w.is_finite() && *w >= 0.0)
                    .ok_or_else(|| invalid("weights", &format!("weight of {id} must be a number >= 0")))?;
                weights.insert(id.clone(), weight);
            }
            self.weights = Some(weights);
        }
        if let Some(value) = object.get("strategy") {
            let name = value.as_str().ok_or_else(|| invalid("strategy", "must be a string"))?;
            self.strategy = Some(name.parse()?);
        }
        Ok(())
    }
}

fn invalid(key: &str, reason: &str) -> RoutingError {
    RoutingError::InvalidOption { key: key.to_owned(), reason: reason.to_owned() }
}

fn id_list(key: &str, value: &Value) -> Result<Vec<String>, RoutingError> {
    let items = value.as_array().ok_or_else(|| invalid(key, "must be a list of adapter ids"))?;
    let ids = items
        .iter()
        .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| invalid(key, "adapter ids must be strings")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(dedup(ids))
}
