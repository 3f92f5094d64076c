//! The router's monotonic clock, injectable so tests control time without sleeping.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock: milliseconds since an arbitrary origin that never goes backwards.
///
/// The router reads it for health cooldowns, circuit breaker cooldowns and sticky session
/// expiry. [`SystemClock`] is the default; tests use [`ManualClock`].
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the clock's origin.
    fn now_ms(&self) -> u64;
}

/// The real monotonic clock ([`Instant`]), with its origin at construction.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock starting at 0 now.
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use asm_routing::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// let seen_by_router = clock.clone();
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(seen_by_router.now_ms(), 30_000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `ms` (it must not go backwards for the router's sake; callers decide).
    pub fn set_ms(&self, ms: u64) {
        self.now.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
