//! The server's configuration, per-run options and status.

use super::*;

pub(super) const RUNNING: u8 = 0;
pub(super) const STOPPED: u8 = 1;

/// How a [`SessionServer`] stops (see [`SessionServer::shutdown`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownPolicy {
    /// Stop accepting runs; let queued and in-flight runs finish. When the shutdown timeout
    /// passes first, whatever is left is cancelled.
    #[default]
    Finish,
    /// Cancel queued runs; let in-flight runs finish (up to the shutdown timeout, then cancel
    /// them).
    FinishInFlight,
    /// Cancel queued and in-flight runs at once.
    Cancel,
}

impl ShutdownPolicy {
    pub(super) fn strictness(self) -> u8 {
        match self {
            ShutdownPolicy::Finish => 0,
            ShutdownPolicy::FinishInFlight => 1,
            ShutdownPolicy::Cancel => 2,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) enum Bootstrap {
    Create(NewSession),
    Attach(SessionId),
}

/// How to start a [`SessionServer`]: the store and adapter (or a [`SessionManager`]), the
/// session (create one or attach to a stored one), limits and defaults.
///
/// ```
/// use std::time::Duration;
/// use asm_runtime::{NewSession, RunOptions, ServerConfig, ShutdownPolicy};
/// # use asm_store_memory::InMemorySessionStore;
/// # use asm_testkit::ScriptedAdapter;
/// let config = ServerConfig::new(InMemorySessionStore::new(), ScriptedAdapter::new())
///     .create(NewSession::new("agent"))
///     .max_concurrent_runs(3)
///     .max_queued_runs(100)
///     .defaults(RunOptions::new().timeout(Duration::from_secs(600)))
///     .shutdown_policy(ShutdownPolicy::FinishInFlight);
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub(super) manager: SessionManager,
    pub(super) bootstrap: Option<Bootstrap>,
    pub(super) max_concurrent_runs: usize,
    pub(super) max_queued_runs: usize,
    pub(super) limiter: Option<ConcurrencyLimiter>,
    pub(super) control: Option<ControlOperations>,
    pub(super) defaults: RunOptions,
    pub(super) shutdown_policy: ShutdownPolicy,
    pub(super) shutdown_timeout: Duration,
    pub(super) result_capacity: usize,
    pub(super) recover_pending_runs: bool,
    pub(super) subscription_buffer: usize,
    pub(super) poll_interval: Duration,
    pub(super) ownership: Option<Ownership>,
}

impl ServerConfig {
    /// Default `max_queued_runs`.
    pub const DEFAULT_MAX_QUEUED_RUNS: usize = 100;
    /// Default number of finished results kept in memory.
    pub const DEFAULT_RESULT_CAPACITY: usize = 1_024;
    /// Default broadcast buffer of the live event feed, in events.
    pub const DEFAULT_SUBSCRIPTION_BUFFER: usize = 1_024;

    /// A configuration over `store` and `adapter` (a [`SessionManager`] is built from them).
    /// Choose the session with [`create`](Self::create) or [`attach`](Self::attach).
    pub fn new(store: impl SessionStore, adapter: impl ProviderAdapter) -> Self {
        Self::from_manager(SessionManager::new(store, adapter))
    }

    /// A configuration that executes runs through `manager` (share it with
    /// [`ControlOperations::new`] so both see the same executing runs).
    pub fn from_manager(manager: SessionManager) -> Self {
        Self {
            manager,
            bootstrap: None,
            max_concurrent_runs: 1,
            max_queued_runs: Self::DEFAULT_MAX_QUEUED_RUNS,
            limiter: None,
            control: None,
            defaults: RunOptions::default(),
            shutdown_policy: ShutdownPolicy::default(),
            shutdown_timeout: Duration::from_secs(30),
            result_capacity: Self::DEFAULT_RESULT_CAPACITY,
            recover_pending_runs: false,
            subscription_buffer: Self::DEFAULT_SUBSCRIPTION_BUFFER,
            poll_interval: Duration::from_millis(100),
            ownership: None,
        }
    }

    asm_core::builder_setters! {
        /// Creates a session (`start_session`) and activates it.
        fn create(session: NewSession) { bootstrap = Some(Bootstrap::Create(session)) }
        /// Attaches to a stored session: a pending session is activated, an active (or paused)
        /// one is used as it is, a finished one is refused ([`ErrorCode::InvalidOperation`]).
        fn attach(session_id: SessionId) { bootstrap = Some(Bootstrap::Attach(session_id)) }
        /// Runs executing at once (default 1; 0 is refused with [`ErrorCode::ValidationError`]).
        fn max_concurrent_runs(slots: usize) { max_concurrent_runs = slots }
        /// Runs waiting for a slot (default 100). A submit beyond it fails with
        /// [`ErrorCode::MaxRunsExceeded`] and persists nothing.
        fn max_queued_runs(capacity: usize) { max_queued_runs = capacity }
        /// Takes a run slot of `limiter` before each run starts (released when it ends, before its
        /// awaiters wake). While the limiter is full, queued runs wait.
        fn limiter(limiter: ConcurrencyLimiter) { limiter = Some(limiter) }
        /// Registers runs with `control` and routes [`SessionServer::interrupt_run`] through it.
        fn control(control: ControlOperations) { control = Some(control) }
    }
    /// Asks `handler` about the tool calls the session's providers want approved (see
    /// [`SessionManager::approvals`]).
    #[must_use]
    pub fn approvals(mut self, handler: impl asm_ports::ApprovalHandler + 'static) -> Self {
        self.manager = self.manager.approvals(handler);
        self
    }

    /// How long a tool call waits for the approval handler (see
    /// [`SessionManager::approval_timeout`]).
    #[must_use]
    pub fn approval_timeout(mut self, timeout: Duration) -> Self {
        self.manager = self.manager.approval_timeout(timeout);
        self
    }

    asm_core::builder_setters! {
        /// The options every run starts from; a run's own [`RunOptions`] are merged over them (see
        /// [`RunOptions`] for the rules).
        fn defaults(options: RunOptions) { defaults = options }
        /// What [`SessionServer::shutdown`] (and dropping the last handle) does with unfinished runs
        /// (default [`ShutdownPolicy::Finish`]).
        fn shutdown_policy(policy: ShutdownPolicy) { shutdown_policy = policy }
        /// How long a shutdown lets runs finish before it cancels them (default 30 s).
        fn shutdown_timeout(timeout: Duration) { shutdown_timeout = timeout }
        /// How many finished results are kept in memory for [`SessionServer::await_run`] (default
        /// 1,024; older ones are read back from the store).
        fn result_capacity(capacity: usize) { result_capacity = capacity }
        /// On start, queue the session's `pending` runs (oldest first, with the default options),
        /// as a restart after a crash does. Default: off.
        fn recover_pending_runs(recover: bool) { recover_pending_runs = recover }
        /// Broadcast buffer of the live event feed (default 1,024 events). A subscriber that falls
        /// further behind re-reads from the store.
        fn subscription_buffer(events: usize) { subscription_buffer = events }
        /// How often the live feed polls a store without long-poll (default 100 ms; appends made
        /// through this server are delivered at once regardless).
        fn poll_interval(interval: Duration) { poll_interval = interval }
        /// Owns the session across processes: the server takes the session's lease in the store
        /// before it touches the session and holds it while it runs (see [`Ownership`]). Only on
        /// stores that provide leases ([`StoreCapabilities::session_leases`]); on others the start
        /// fails with [`ErrorCode::CapabilityNotSupported`] rather than pretending.
        ///
        /// Another owner holding the lease: the start fails with [`ErrorCode::SessionOwned`] (details
        /// name the `owner`), or waits for the lease with [`Ownership::wait_for_lease`]. On start the
        /// server recovers what a crashed owner left: `running` runs no execution of this process owns
        /// end as [`Ownership::recovery`] says (default: marked `cancelled`, the orphan rule of
        /// [`SessionManager::cancel_run`]; or failed with a typed error code, or requeued as a new
        /// pending run: [`RecoveryPolicy`](crate::RecoveryPolicy)), `pending` runs are queued (as
        /// [`recover_pending_runs`](Self::recover_pending_runs)). Every append, run write and session
        /// save of the session is fenced by the lease's token: once another process took the
        /// session over, the store refuses them ([`ErrorCode::LeaseLost`]) and the server cancels its
        /// runs and stops.
        ///
        /// [`StoreCapabilities::session_leases`]: asm_ports::StoreCapabilities::session_leases
        fn ownership(ownership: Ownership) { ownership = Some(ownership) }
    }

    /// The attached session, if the configuration attaches.
    pub(crate) fn attached_session(&self) -> Option<&SessionId> {
        match &self.bootstrap {
            Some(Bootstrap::Attach(id)) => Some(id),
            _ => None,
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.max_concurrent_runs == 0 {
            return Err(Error::new(ErrorCode::ValidationError, "max_concurrent_runs must be at least 1"));
        }
        if self.bootstrap.is_none() {
            return Err(Error::new(
                ErrorCode::ValidationError,
                "a session server needs a session: call create(NewSession) or attach(session_id)",
            ));
        }
        self.defaults.validate()
    }
}

/// A snapshot of a [`SessionServer`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStatus {
    /// The session.
    pub session_id: SessionId,
    /// Runs executing, in start order.
    pub in_flight_runs: Vec<RunId>,
    /// `in_flight_runs.len()`.
    pub in_flight_count: usize,
    /// Runs waiting for a slot, in FIFO order.
    pub queued_runs: Vec<RunId>,
    /// `queued_runs.len()`.
    pub queued_count: usize,
    /// The slot count.
    pub max_concurrent_runs: usize,
    /// The queue capacity.
    pub max_queued_runs: usize,
    /// Live subscriptions.
    pub subscribers: usize,
    /// Whether new runs are accepted (false once a shutdown began).
    pub accepting_runs: bool,
}
