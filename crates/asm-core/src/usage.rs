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
