//! Retry with exponential backoff for transient database failures.

use std::time::Duration;

use asm_core::Error;
use tokio::time::Instant;

use crate::error::{Class, DbError};
use crate::options::RetryPolicy;

/// The retry state of one call: `attempt` the call, and on failure ask [`Retry::next`] whether
/// to go again.
///
/// ```text
/// let mut retry = Retry::new(policy, "get_session");
/// loop {
///     match attempt().await {
///         Ok(v) => return Ok(v),
///         Err(e) => retry.next(e).await?,
///     }
/// }
/// ```
#[derive(Debug)]
pub(crate) struct Retry {
    policy: RetryPolicy,
    what: &'static str,
    started: Instant,
    backoff: Duration,
    attempts: u32,
}

impl Retry {
    pub(crate) fn new(policy: RetryPolicy, what: &'static str) -> Self {
        Self { policy, what, started: Instant::now(), backoff: policy.first_backoff, attempts: 0 }
    }

    /// How many attempts failed so far.
    pub(crate) fn failures(&self) -> u32 {
        self.attempts
    }

    /// After a failed attempt: `Ok(())` (having slept the backoff) to go again, or the public
    /// error to return.
    pub(crate) async fn next(&mut self, error: DbError) -> Result<(), Error> {
        self.attempts += 1;
        if error.class() == Class::Permanent {
            return Err(error.into_error(self.what));
        }
        let elapsed = self.started.elapsed();
        if elapsed + self.backoff > self.policy.max_elapsed {
            return Err(error
                .into_error(self.what)
                .with_detail("attempts", self.attempts)
                .with_detail("elapsed_ms", u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)));
        }
        tracing::debug!(what = self.what, attempt = self.attempts, error = %error, backoff = ?self.backoff, "retrying");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(self.policy.max_backoff).max(Duration::from_millis(1));
        Ok(())
    }
}
