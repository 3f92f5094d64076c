use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

/// Token counts of a run or of one usage report.
///
/// ```
/// use asm_core::TokenUsage;
/// let mut total = TokenUsage::default();
/// total += TokenUsage { input_tokens: 10, output_tokens: 5, ..Default::default() };
/// total += TokenUsage { input_tokens: 1, output_tokens: 2, ..Default::default() };
/// assert_eq!(total.total_tokens(), 18);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Input (prompt) tokens, not counting cache reads.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output (completion) tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens served from the prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_tokens: u64,
}

impl TokenUsage {
    /// Input plus output tokens (cache counts excluded).
    pub const fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Whether every count is zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl Add for TokenUsage {
    type Output = TokenUsage;
    fn add(self, rhs: TokenUsage) -> TokenUsage {
        TokenUsage {
            input_tokens: self.input_tokens.saturating_add(rhs.input_tokens),
            output_tokens: self.output_tokens.saturating_add(rhs.output_tokens),
            cache_read_tokens: self.cache_read_tokens.saturating_add(rhs.cache_read_tokens),
            cache_creation_tokens: self.cache_creation_tokens.saturating_add(rhs.cache_creation_tokens),
        }
    }
}

impl AddAssign for TokenUsage {
    fn add_assign(&mut self, rhs: TokenUsage) {
        *self = *self + rhs;
    }
}

/// How a usage report relates to earlier ones. Run totals are correct only if every report says
/// which it is: Claude reports per message (a delta per distinct message id), Codex reports
/// thread-cumulative totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UsageMode {
    /// Adds to the previous total.
    #[default]
    Delta,
    /// Replaces the previous total.
    Cumulative,
}

/// The usage and cost a provider reported for one run, folded from its `token_usage_updated`
/// events: how a run that ended without an outcome (failed, cancelled, timed out) keeps what
/// the provider reported up to that point.
///
/// Rules (the contract of the `token_usage_updated` payload):
/// * `usage_mode: "delta"` (the default when absent) adds the counts to the total;
/// * `usage_mode: "cumulative"` is the run's total so far and replaces it;
/// * `total_cost_usd`, when present, is the run's cost so far (the latest report wins);
/// * other events, and counts that are not non-negative integers, are ignored.
///
/// ```
/// use asm_core::{Event, EventKind, SessionId, UsageTotals};
/// let s = SessionId::new();
/// let events = [
///     Event::new(EventKind::TokenUsageUpdated, s.clone()).with_data("input_tokens", 100).with_data("output_tokens", 1),
///     Event::new(EventKind::TokenUsageUpdated, s.clone()).with_data("input_tokens", 100).with_data("output_tokens", 1),
///     Event::new(EventKind::TokenUsageUpdated, s)
///         .with_data("input_tokens", 200)
///         .with_data("output_tokens", 24)
///         .with_data("usage_mode", "cumulative")
///         .with_data("total_cost_usd", 0.0016),
/// ];
/// let totals = UsageTotals::from_events(&events);
/// assert_eq!((totals.usage.input_tokens, totals.usage.output_tokens), (200, 24));
/// assert_eq!(totals.cost_usd, Some(0.0016));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct UsageTotals {
    /// Tokens reported so far.
    pub usage: TokenUsage,
    /// Cost reported so far, if any report carried one.
    pub cost_usd: Option<f64>,
}

impl UsageTotals {
    /// Folds the `token_usage_updated` events among `events`, in order.
    pub fn from_events<E: AsRef<crate::Event>>(events: impl IntoIterator<Item = E>) -> Self {
        let mut totals = Self::default();
        for event in events {
            totals.record(event.as_ref());
        }
        totals
    }

    /// Applies one event (anything but `token_usage_updated` is ignored).
    pub fn record(&mut self, event: &crate::Event) {
        if event.kind != crate::EventKind::TokenUsageUpdated {
            return;
        }
        let data = &event.data;
        let count = |key: &str| data.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let report = TokenUsage {
            input_tokens: count(crate::keys::INPUT_TOKENS),
            output_tokens: count(crate::keys::OUTPUT_TOKENS),
            cache_read_tokens: count(crate::keys::CACHE_READ_TOKENS),
            cache_creation_tokens: count(crate::keys::CACHE_CREATION_TOKENS),
        };
        match data.get(crate::keys::USAGE_MODE).and_then(serde_json::Value::as_str) {
            Some("cumulative") => self.usage = report,
            _ => self.usage += report,
        }
        if let Some(cost) = data.get(crate::keys::TOTAL_COST_USD).and_then(serde_json::Value::as_f64)
            && cost.is_finite()
            && cost >= 0.0
        {
            self.cost_usd = Some(cost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, EventKind, SessionId};

    fn usage_event(s: &SessionId, input: u64, output: u64, mode: Option<&str>) -> Event {
        let e = Event::new(EventKind::TokenUsageUpdated, s.clone())
            .with_data("input_tokens", input)
            .with_data("output_tokens", output);
        match mode {
            Some(m) => e.with_data("usage_mode", m),
            None => e,
        }
    }

    #[test]
    fn deltas_add_cumulatives_replace_and_the_latest_cost_wins() {
        let s = SessionId::new();
        let events = [
            usage_event(&s, 10, 1, None),
            usage_event(&s, 5, 2, Some("delta")),
            Event::new(EventKind::MessageStreamed, s.clone()).with_data("input_tokens", 1000),
            usage_event(&s, 30, 4, Some("cumulative")).with_data("total_cost_usd", 0.5),
            usage_event(&s, 1, 1, Some("delta")).with_data("total_cost_usd", 0.75),
            usage_event(&s, 1, 1, Some("delta")).with_data("total_cost_usd", "free").with_data("output_tokens", -3),
        ];
        let totals = UsageTotals::from_events(&events);
        assert_eq!(totals.usage, TokenUsage { input_tokens: 32, output_tokens: 5, ..TokenUsage::default() });
        assert_eq!(totals.cost_usd, Some(0.75));
        assert_eq!(UsageTotals::from_events(&[] as &[crate::Event]), UsageTotals::default());
    }
}
