//! [`ConcurrencyLimiter`]: process-wide caps on parallel sessions and runs, with RAII permits.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use asm_core::{Error, ErrorCode, Result, RunId, SessionId};

/// Limits of a [`ConcurrencyLimiter`]. `None` means unlimited.
///
/// ```
/// use asm_runtime::LimiterConfig;
/// let config = LimiterConfig::default().max_parallel_sessions(10).unlimited_runs();
/// assert_eq!(config.sessions(), Some(10));
/// assert_eq!(config.runs(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterConfig {
    max_parallel_sessions: Option<usize>,
    max_parallel_runs: Option<usize>,
}

impl Default for LimiterConfig {
    /// 100 sessions and 50 runs, as the original's configuration defaults.
    fn default() -> Self {
        Self { max_parallel_sessions: Some(Self::DEFAULT_SESSIONS), max_parallel_runs: Some(Self::DEFAULT_RUNS) }
    }
}

impl LimiterConfig {
    /// Default session limit.
    pub const DEFAULT_SESSIONS: usize = 100;
    /// Default run limit.
    pub const DEFAULT_RUNS: usize = 50;

    asm_core::builder_setters! {
        /// At most `limit` sessions hold a permit at once (0 is rejected by
        /// [`ConcurrencyLimiter::new`]).
        fn max_parallel_sessions(limit: usize) { max_parallel_sessions = Some(limit) }
    }
    /// No session limit.
    #[must_use]
    pub fn unlimited_sessions(mut self) -> Self {
        self.max_parallel_sessions = None;
        self
    }
    asm_core::builder_setters! {
        /// At most `limit` runs hold a permit at once, across all sessions (0 is rejected).
        fn max_parallel_runs(limit: usize) { max_parallel_runs = Some(limit) }
    }
    /// No run limit.
    #[must_use]
    pub fn unlimited_runs(mut self) -> Self {
        self.max_parallel_runs = None;
        self
    }
    /// The session limit (`None`: unlimited).
    pub fn sessions(&self) -> Option<usize> {
        self.max_parallel_sessions
    }
    /// The run limit (`None`: unlimited).
    pub fn runs(&self) -> Option<usize> {
        self.max_parallel_runs
    }
}

/// A snapshot of a [`ConcurrencyLimiter`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterStatus {
    /// Sessions holding a slot.
    pub active_sessions: usize,
    /// Runs holding a slot.
    pub active_runs: usize,
    /// The session limit (`None`: unlimited).
    pub max_parallel_sessions: Option<usize>,
    /// The run limit (`None`: unlimited).
    pub max_parallel_runs: Option<usize>,
    /// Free session slots (`None`: unlimited).
    pub available_session_slots: Option<usize>,
    /// Free run slots (`None`: unlimited).
    pub available_run_slots: Option<usize>,
}

/// Caps the number of sessions and runs that are active at once in this process.
///
/// Fail fast: acquiring a slot never waits; at the limit it fails with
/// [`ErrorCode::MaxSessionsExceeded`] or [`ErrorCode::MaxRunsExceeded`]. A slot is held by a
/// permit and released when the last permit for the same id is dropped; acquiring a slot for an
/// id that already holds one is idempotent (it returns another permit for the same slot). Session
/// and run slots are independent: a run slot does not need a session slot.
///
/// A cheap, cloneable, `Send + Sync` handle; share one between the
/// [`SessionServer`](crate::SessionServer)s (run slots) and the
/// [`SessionSupervisor`](crate::SessionSupervisor) (session slots) of a process.
///
/// ```
/// use asm_core::{ErrorCode, RunId, SessionId};
/// use asm_runtime::{ConcurrencyLimiter, LimiterConfig};
///
/// let limiter = ConcurrencyLimiter::new(LimiterConfig::default().max_parallel_runs(1))?;
/// let session = SessionId::new();
/// let permit = limiter.acquire_run(&session, &RunId::new())?;
/// let err = limiter.acquire_run(&session, &RunId::new()).unwrap_err();
/// assert_eq!(err.code(), ErrorCode::MaxRunsExceeded);
/// drop(permit);
/// assert_eq!(limiter.status().active_runs, 0);
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ConcurrencyLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    config: LimiterConfig,
    state: Mutex<State>,
    /// Bumped whenever a run slot is released, so waiting servers can retry.
    run_released: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Session -> number of live permits.
    sessions: HashMap<SessionId, usize>,
    /// Run -> number of live permits.
    runs: HashMap<RunId, usize>,
}

impl fmt::Debug for ConcurrencyLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimiter").field("status", &self.status()).finish()
    }
}

impl Default for ConcurrencyLimiter {
    /// A limiter with [`LimiterConfig::default`].
    fn default() -> Self {
        Self::build(LimiterConfig::default())
    }
}

impl ConcurrencyLimiter {
    /// A limiter with these limits.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for a limit of 0.
    pub fn new(config: LimiterConfig) -> Result<Self> {
        if config.max_parallel_sessions == Some(0) || config.max_parallel_runs == Some(0) {
            return Err(Error::new(ErrorCode::ValidationError, "concurrency limits must be positive (or unlimited)"));
        }
        Ok(Self::build(config))
    }

    fn build(config: LimiterConfig) -> Self {
        let (run_released, _) = watch::channel(0);
        Self { inner: Arc::new(Inner { config, state: Mutex::new(State::default()), run_released }) }
    }

    /// The limits.
    pub fn limits(&self) -> LimiterConfig {
        self.inner.config
    }

    /// Takes a session slot (or another permit for the slot `session_id` already holds).
    ///
    /// # Errors
    /// [`ErrorCode::MaxSessionsExceeded`] at the limit (details `limit`, `active`).
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    pub fn acquire_session(&self, session_id: &SessionId) -> Result<SessionPermit> {
        let mut state = self.inner.state.lock();
        if let Some(holders) = state.sessions.get_mut(session_id) {
            *holders += 1;
        } else {
            let active = state.sessions.len();
            if let Some(limit) = self.inner.config.max_parallel_sessions
                && active >= limit
            {
                return Err(Error::new(
                    ErrorCode::MaxSessionsExceeded,
                    format!("Maximum parallel sessions exceeded ({active}/{limit})"),
                )
                .with_detail("limit", limit)
                .with_detail("active", active));
            }
            state.sessions.insert(session_id.clone(), 1);
        }
        Ok(SessionPermit { limiter: self.inner.clone(), session_id: session_id.clone() })
    }

    /// Takes a run slot (or another permit for the slot `run_id` already holds). The limit is
    /// global across sessions; `session_id` is recorded for diagnostics only.
    ///
    /// # Errors
    /// [`ErrorCode::MaxRunsExceeded`] at the limit (details `limit`, `active`).
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id, run_id = %run_id))]
    pub fn acquire_run(&self, session_id: &SessionId, run_id: &RunId) -> Result<RunPermit> {
        let mut state = self.inner.state.lock();
        if let Some(holders) = state.runs.get_mut(run_id) {
            *holders += 1;
        } else {
            let active = state.runs.len();
            if let Some(limit) = self.inner.config.max_parallel_runs
                && active >= limit
            {
                return Err(Error::new(
                    ErrorCode::MaxRunsExceeded,
                    format!("Maximum parallel runs exceeded ({active}/{limit})"),
                )
                .with_detail("limit", limit)
                .with_detail("active", active));
            }
            state.runs.insert(run_id.clone(), 1);
        }
        Ok(RunPermit { limiter: self.inner.clone(), run_id: run_id.clone() })
    }

    /// Current usage.
    pub fn status(&self) -> LimiterStatus {
        let state = self.inner.state.lock();
        let config = self.inner.config;
        LimiterStatus {
            active_sessions: state.sessions.len(),
            active_runs: state.runs.len(),
            max_parallel_sessions: config.max_parallel_sessions,
            max_parallel_runs: config.max_parallel_runs,
            available_session_slots: config.max_parallel_sessions.map(|m| m.saturating_sub(state.sessions.len())),
            available_run_slots: config.max_parallel_runs.map(|m| m.saturating_sub(state.runs.len())),
        }
    }

    /// A receiver that changes whenever a run slot is released.
    pub(crate) fn run_releases(&self) -> watch::Receiver<u64> {
        self.inner.run_released.subscribe()
    }
}

/// Holds a session slot of a [`ConcurrencyLimiter`]; dropping it releases the slot (once every
/// permit for the same session is dropped).
#[must_use = "the slot is released when the permit is dropped"]
pub struct SessionPermit {
    limiter: Arc<Inner>,
    session_id: SessionId,
}

impl SessionPermit {
    /// The session holding the slot.
    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }
}

impl fmt::Debug for SessionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionPermit").field("session_id", &self.session_id).finish()
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut state = self.limiter.state.lock();
        if let Some(holders) = state.sessions.get_mut(&self.session_id) {
            *holders = holders.saturating_sub(1);
            if *holders == 0 {
                state.sessions.remove(&self.session_id);
            }
        }
    }
}

/// Holds a run slot of a [`ConcurrencyLimiter`]; dropping it releases the slot (once every
/// permit for the same run is dropped).
#[must_use = "the slot is released when the permit is dropped"]
pub struct RunPermit {
    limiter: Arc<Inner>,
    run_id: RunId,
}

impl RunPermit {
    /// The run holding the slot.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }
}

impl fmt::Debug for RunPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunPermit").field("run_id", &self.run_id).finish()
    }
}

impl Drop for RunPermit {
    fn drop(&mut self) {
        let released = {
            let mut state = self.limiter.state.lock();
            match state.runs.get_mut(&self.run_id) {
                Some(holders) if *holders > 1 => {
                    *holders -= 1;
                    false
                }
                Some(_) => {
                    state.runs.remove(&self.run_id);
                    true
                }
                None => false,
            }
        };
        if released {
            self.limiter.run_released.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }
}
