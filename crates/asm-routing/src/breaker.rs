//! A circuit breaker per adapter: closed, open, half-open, with counted probes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls pass; failures are counted.
    Closed,
    /// Calls are refused until the cooldown has passed.
    Open,
    /// A limited number of probe calls may pass; the first result decides.
    HalfOpen,
}

/// A breaker's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker (at least 1) (default 5).
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before letting probes through (default 30 s).
    #[serde(with = "duration_ms", rename = "cooldown_ms")]
    pub cooldown: Duration,
    /// Probe calls allowed at once while half-open (at least 1) (default 1).
    pub half_open_max_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, cooldown: Duration::from_secs(30), half_open_max_probes: 1 }
    }
}

impl BreakerConfig {
    /// Sets the failure threshold (0 is taken as 1).
    #[must_use]
    pub fn failure_threshold(mut self, threshold: u32) -> Self {
        self.failure_threshold = threshold.max(1);
        self
    }
    asm_core::builder_setters! {
        /// Sets the cooldown.
        fn cooldown(cooldown: Duration) { cooldown = cooldown }
    }
    /// Sets the number of concurrent half-open probes (0 is taken as 1).
    #[must_use]
    pub fn half_open_max_probes(mut self, probes: u32) -> Self {
        self.half_open_max_probes = probes.max(1);
        self
    }
}

/// A circuit breaker (a pure value; the caller passes the time in milliseconds of a monotonic
/// clock).
///
/// | state | event | next |
/// |---|---|---|
/// | closed | failure, count < threshold | closed |
/// | closed | failure, count reaches threshold | open (timer starts) |
/// | closed | success | closed (count reset) |
/// | open | cooldown not passed | open, calls refused |
/// | open | cooldown passed, [`try_acquire`](Self::try_acquire) | half-open, that call is probe 1 |
/// | open | failure | open (timer restarted) |
/// | open | success | closed |
/// | half-open | probes in flight < max, [`try_acquire`](Self::try_acquire) | half-open, one more probe |
/// | half-open | probes in flight = max | refused |
/// | half-open | success | closed |
/// | half-open | failure | open (timer restarted) |
/// | half-open | probe released (cancelled, neither success nor failure) | half-open, one probe fewer |
///
/// Unlike the original, probes are counted: only `half_open_max_probes` calls pass while
/// half-open, however many runs arrive at once.
///
/// ```
/// use std::time::Duration;
/// use asm_routing::{BreakerConfig, BreakerState, CircuitBreaker};
/// let mut breaker = CircuitBreaker::new(BreakerConfig::default().failure_threshold(1).cooldown(Duration::from_secs(10)));
/// breaker.record_failure(0);
/// assert_eq!(breaker.state(), BreakerState::Open);
/// assert!(!breaker.try_acquire(5_000));
/// assert!(breaker.try_acquire(10_000)); // the probe
/// assert!(!breaker.try_acquire(10_001)); // only one probe at a time
/// breaker.record_success();
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    failure_count: u32,
    probes_in_flight: u32,
    opened_at_ms: Option<u64>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            half_open_max_probes: config.half_open_max_probes.max(1),
            ..config
        };
        Self { config, state: BreakerState::Closed, failure_count: 0, probes_in_flight: 0, opened_at_ms: None }
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state as last changed (an open breaker whose cooldown has passed stays `Open` here
    /// until [`check_state`](Self::check_state) or [`try_acquire`](Self::try_acquire)).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Consecutive failures counted.
    pub fn failure_count(&self) -> u32 {
        self.failure_count
    }

    /// Probes in flight while half-open.
    pub fn probes_in_flight(&self) -> u32 {
        self.probes_in_flight
    }

    /// When the breaker last opened (clock milliseconds).
    pub fn opened_at_ms(&self) -> Option<u64> {
        self.opened_at_ms
    }

    fn cooldown_passed(&self, now_ms: u64) -> bool {
        let cooldown = u64::try_from(self.config.cooldown.as_millis()).unwrap_or(u64::MAX);
        self.opened_at_ms.is_none_or(|opened| now_ms.saturating_sub(opened) >= cooldown)
    }

    /// Whether a call would be let through now (no state change).
    pub fn allowed(&self, now_ms: u64) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => self.cooldown_passed(now_ms),
            BreakerState::HalfOpen => self.probes_in_flight < self.config.half_open_max_probes,
        }
    }

    /// Moves an open breaker whose cooldown has passed to half-open (no probe in flight).
    pub fn check_state(&mut self, now_ms: u64) {
        if self.state == BreakerState::Open && self.cooldown_passed(now_ms) {
            self.state = BreakerState::HalfOpen;
            self.probes_in_flight = 0;
        }
    }

    /// Asks to make a call: `true` lets it through (counting it as a probe when half-open).
    pub fn try_acquire(&mut self, now_ms: u64) -> bool {
        self.check_state(now_ms);
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if self.probes_in_flight < self.config.half_open_max_probes => {
                self.probes_in_flight += 1;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    /// A call succeeded: closed, counts reset.
    pub fn record_success(&mut self) {
        self.state = BreakerState::Closed;
        self.failure_count = 0;
        self.probes_in_flight = 0;
        self.opened_at_ms = None;
    }

    /// A call failed at `now_ms`.
    pub fn record_failure(&mut self, now_ms: u64) {
        match self.state {
            BreakerState::Closed => {
                self.failure_count = self.failure_count.saturating_add(1);
                if self.failure_count >= self.config.failure_threshold {
                    self.state = BreakerState::Open;
                    self.opened_at_ms = Some(now_ms);
                }
            }
            BreakerState::HalfOpen => {
                self.state = BreakerState::Open;
                self.opened_at_ms = Some(now_ms);
                self.probes_in_flight = 0;
            }
            BreakerState::Open => {
                self.failure_count = self.failure_count.saturating_add(1);
                self.opened_at_ms = Some(now_ms);
            }
        }
    }

    /// A call let through ended with neither success nor failure (cancelled): frees its probe.
    pub fn release(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    /// A serialisable snapshot, as of `now_ms`.
    pub fn status(&self, now_ms: u64) -> BreakerStatus {
        BreakerStatus {
            state: self.state,
            allowed: self.allowed(now_ms),
            failure_count: self.failure_count,
            failure_threshold: self.config.failure_threshold,
            cooldown_ms: u64::try_from(self.config.cooldown.as_millis()).unwrap_or(u64::MAX),
            half_open_max_probes: self.config.half_open_max_probes,
            half_open_probe_count: self.probes_in_flight,
            opened_ms_ago: self.opened_at_ms.map(|at| now_ms.saturating_sub(at)),
        }
    }
}

/// A breaker's state for [`RouterStatus`](crate::RouterStatus).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BreakerStatus {
    /// The state.
    pub state: BreakerState,
    /// Whether a call would pass now.
    pub allowed: bool,
    /// Consecutive failures.
    pub failure_count: u32,
    /// Failures that open the breaker.
    pub failure_threshold: u32,
    /// The cooldown in milliseconds.
    pub cooldown_ms: u64,
    /// Probes allowed at once while half-open.
    pub half_open_max_probes: u32,
    /// Probes in flight.
    pub half_open_probe_count: u32,
    /// How long ago the breaker opened, if it is open or half-open.
    pub opened_ms_ago: Option<u64>,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
