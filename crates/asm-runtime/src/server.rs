//! [`SessionServer`]: one task per session that queues, schedules and tracks its runs, and fans
//! its events out to subscribers.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use futures::FutureExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use asm_core::{
    CapabilityType, Error, ErrorCode, Event, EventKind, JsonMap, Result, Run, RunId, RunInput, RunStatus, Session,
    SessionId, SessionStatus, TranscriptOptions,
};
use asm_ports::{DynSessionStore, EventQuery, ExecutionRecord, ProviderAdapter, RunHook, RunQuery, SessionStore};

use crate::execution::terminal_event;
use crate::limiter::{ConcurrencyLimiter, RunPermit};
use crate::manager::{ActiveRun, SessionManager};
use crate::options::{Continuation, EventCallback, ExecuteOptions, NewSession, RunResult, StartRunOptions};
use crate::subscription::{EventSubscription, Hub, SubscribeOptions};
use crate::{ControlOperations, TranscriptCache};

const RUNNING: u8 = 0;
const STOPPED: u8 = 1;

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
    fn strictness(self) -> u8 {
        match self {
            ShutdownPolicy::Finish => 0,
            ShutdownPolicy::FinishInFlight => 1,
            ShutdownPolicy::Cancel => 2,
        }
    }
}

#[derive(Clone, Debug)]
enum Bootstrap {
    Create(NewSession),
    Attach(SessionId),
}

/// How to start a [`SessionServer`]: the store and adapter (or a [`SessionManager`]), the
/// session (create one or attach to a stored one), limits and defaults.
///
/// ```
/// use std::time::Duration;
/// use asm_runtime::{ExecuteOptions, NewSession, ServerConfig, ShutdownPolicy};
/// # use asm_store_memory::InMemorySessionStore;
/// # use asm_testkit::ScriptedAdapter;
/// let config = ServerConfig::new(InMemorySessionStore::new(), ScriptedAdapter::new())
///     .create(NewSession::new("agent"))
///     .max_concurrent_runs(3)
///     .max_queued_runs(100)
///     .default_execute_options(ExecuteOptions::default().timeout(Duration::from_secs(600)))
///     .shutdown_policy(ShutdownPolicy::FinishInFlight);
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    manager: SessionManager,
    bootstrap: Option<Bootstrap>,
    max_concurrent_runs: usize,
    max_queued_runs: usize,
    limiter: Option<ConcurrencyLimiter>,
    control: Option<ControlOperations>,
    defaults: ExecuteOptions,
    shutdown_policy: ShutdownPolicy,
    shutdown_timeout: Duration,
    result_capacity: usize,
    recover_pending_runs: bool,
    subscription_buffer: usize,
    poll_interval: Duration,
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
            defaults: ExecuteOptions::default(),
            shutdown_policy: ShutdownPolicy::default(),
            shutdown_timeout: Duration::from_secs(30),
            result_capacity: Self::DEFAULT_RESULT_CAPACITY,
            recover_pending_runs: false,
            subscription_buffer: Self::DEFAULT_SUBSCRIPTION_BUFFER,
            poll_interval: Duration::from_millis(100),
        }
    }

    /// Creates a session (`start_session`) and activates it.
    #[must_use]
    pub fn create(mut self, session: NewSession) -> Self {
        self.bootstrap = Some(Bootstrap::Create(session));
        self
    }

    /// Attaches to a stored session: a pending session is activated, an active (or paused)
    /// one is used as it is, a finished one is refused ([`ErrorCode::InvalidOperation`]).
    #[must_use]
    pub fn attach(mut self, session_id: SessionId) -> Self {
        self.bootstrap = Some(Bootstrap::Attach(session_id));
        self
    }

    /// Runs executing at once (default 1; 0 is refused with [`ErrorCode::ValidationError`]).
    #[must_use]
    pub fn max_concurrent_runs(mut self, slots: usize) -> Self {
        self.max_concurrent_runs = slots;
        self
    }

    /// Runs waiting for a slot (default 100). A submit beyond it fails with
    /// [`ErrorCode::MaxRunsExceeded`] and persists nothing.
    #[must_use]
    pub fn max_queued_runs(mut self, capacity: usize) -> Self {
        self.max_queued_runs = capacity;
        self
    }

    /// Takes a run slot of `limiter` before each run starts (released when it ends, before its
    /// awaiters wake). While the limiter is full, queued runs wait.
    #[must_use]
    pub fn limiter(mut self, limiter: ConcurrencyLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Registers runs with `control` and routes [`SessionServer::interrupt_run`] through it.
    #[must_use]
    pub fn control(mut self, control: ControlOperations) -> Self {
        self.control = Some(control);
        self
    }

    /// Execute options every run starts from; a run's [`RunOptions`] are merged over them
    /// (see [`RunOptions`] for the rules).
    #[must_use]
    pub fn default_execute_options(mut self, options: ExecuteOptions) -> Self {
        self.defaults = options;
        self
    }

    /// What [`SessionServer::shutdown`] (and dropping the last handle) does with unfinished runs
    /// (default [`ShutdownPolicy::Finish`]).
    #[must_use]
    pub fn shutdown_policy(mut self, policy: ShutdownPolicy) -> Self {
        self.shutdown_policy = policy;
        self
    }

    /// How long a shutdown lets runs finish before it cancels them (default 30 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How many finished results are kept in memory for [`SessionServer::await_run`] (default
    /// 1,024; older ones are read back from the store).
    #[must_use]
    pub fn result_capacity(mut self, capacity: usize) -> Self {
        self.result_capacity = capacity;
        self
    }

    /// On start, queue the session's `pending` runs (oldest first, with the default options),
    /// as a restart after a crash does. Default: off.
    #[must_use]
    pub fn recover_pending_runs(mut self, recover: bool) -> Self {
        self.recover_pending_runs = recover;
        self
    }

    /// Broadcast buffer of the live event feed (default 1,024 events). A subscriber that falls
    /// further behind re-reads from the store.
    #[must_use]
    pub fn subscription_buffer(mut self, events: usize) -> Self {
        self.subscription_buffer = events;
        self
    }

    /// How often the live feed polls a store without long-poll (default 100 ms; appends made
    /// through this server are delivered at once regardless).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The attached session, if the configuration attaches.
    pub(crate) fn attached_session(&self) -> Option<&SessionId> {
        match &self.bootstrap {
            Some(Bootstrap::Attach(id)) => Some(id),
            _ => None,
        }
    }

    fn validate(&self) -> Result<()> {
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

/// Per-run options of [`SessionServer::submit_run`], merged over the server's default
/// [`ExecuteOptions`]:
///
/// - `continuation`, `transcript_options` and `timeout`: the run's value when set, else the
///   default's;
/// - `adapter_option`s: the union; for a key set on both sides the run's value wins, except that
///   two JSON objects are merged one level deep (the run's keys win inside);
/// - hooks: the default hooks first, then the run's;
/// - `on_event`: both callbacks are called, the default's first.
///
/// `require` / `prefer` are capability requirements checked when the run is created.
///
/// ```
/// use std::time::Duration;
/// use asm_runtime::{Continuation, RunOptions};
/// let options = RunOptions::new()
///     .continuation(Continuation::Auto)
///     .timeout(Duration::from_secs(300))
///     .adapter_option("model", "claude-sonnet-4-5");
/// # let _ = options;
/// ```
#[derive(Clone, Default)]
pub struct RunOptions {
    continuation: Option<Continuation>,
    transcript: Option<TranscriptOptions>,
    timeout: Option<Duration>,
    adapter_options: JsonMap,
    hooks: Vec<Arc<dyn RunHook>>,
    on_event: Option<EventCallback>,
    start: StartRunOptions,
}

impl RunOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the continuation mode.
    #[must_use]
    pub fn continuation(mut self, continuation: Continuation) -> Self {
        self.continuation = Some(continuation);
        self
    }
    /// Sets the bounds of the replayed transcript.
    #[must_use]
    pub fn transcript_options(mut self, options: TranscriptOptions) -> Self {
        self.transcript = Some(options);
        self
    }
    /// The run's execution deadline (not the wait of [`SessionServer::await_run`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// Adds an adapter option.
    #[must_use]
    pub fn adapter_option(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.adapter_options.insert(key.into(), value.into());
        self
    }
    /// Adds a hook (a shared `Arc<dyn RunHook>` is a hook too).
    #[must_use]
    pub fn hook(mut self, hook: impl RunHook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }
    /// Sets the run's event callback.
    #[must_use]
    pub fn on_event(mut self, callback: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(callback));
        self
    }
    /// The adapter must have an enabled capability of this type, or the run is not created.
    #[must_use]
    pub fn require(mut self, kind: CapabilityType) -> Self {
        self.start = self.start.require(kind);
        self
    }
    /// Nice to have: when missing, the run is created in degraded mode.
    #[must_use]
    pub fn prefer(mut self, kind: CapabilityType) -> Self {
        self.start = self.start.prefer(kind);
        self
    }

    /// The execute options of a run: `self` merged over `defaults` (see the type's docs).
    fn merge_over(self, defaults: &ExecuteOptions) -> (StartRunOptions, ExecuteOptions) {
        let mut options = defaults.clone();
        if let Some(continuation) = self.continuation {
            options.continuation = continuation;
        }
        if let Some(transcript) = self.transcript {
            options.transcript = transcript;
        }
        if let Some(timeout) = self.timeout {
            options.timeout = Some(timeout);
        }
        for (key, value) in self.adapter_options {
            match (options.adapter_options.get_mut(&key), value) {
                (Some(serde_json::Value::Object(base)), serde_json::Value::Object(over)) => base.extend(over),
                (_, value) => {
                    options.adapter_options.insert(key, value);
                }
            }
        }
        options.hooks.extend(self.hooks);
        options.on_event = match (options.on_event.take(), self.on_event) {
            (Some(first), Some(second)) => Some(Arc::new(move |event: &Event| {
                first(event);
                second(event);
            })),
            (first, second) => second.or(first),
        };
        (self.start, options)
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("continuation", &self.continuation)
            .field("transcript", &self.transcript)
            .field("timeout", &self.timeout)
            .field("adapter_options", &self.adapter_options)
            .field("hooks", &self.hooks)
            .field("on_event", &self.on_event.as_ref().map(|_| "Fn(&Event)"))
            .field("start", &self.start)
            .finish()
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

// ----- the handle ------------------------------------------------------------------------------

/// One session's runtime: a FIFO queue of runs, `max_concurrent_runs` execution slots, awaitable
/// results and live event subscriptions.
///
/// A cheap, cloneable, `Send + Sync` handle to one tokio task that owns the queue and the
/// bookkeeping; each run executes in a task of its own (through
/// [`SessionManager::execute_run`]), and a dispatcher task follows the store while the server
/// has subscribers. Dropping the last handle shuts the server down with its
/// [`ShutdownPolicy`].
///
/// - [`submit_run`](Self::submit_run) persists a `pending` run and queues it; when the queue is
///   full (`max_queued_runs` waiting and every slot busy) it fails with
///   [`ErrorCode::MaxRunsExceeded`] and persists nothing. Runs start in FIFO order as slots free
///   up; a slot is released however the run ends (success, failure, cancel, timeout, panic).
/// - [`await_run`](Self::await_run) returns a run's result, also long after it finished (from
///   memory, or rebuilt from the store); an id the store does not know fails at once with
///   [`ErrorCode::RunNotFound`].
/// - [`subscribe`](Self::subscribe) delivers every matching event exactly once, in order,
///   including events other writers append to the session.
///
/// ```
/// use std::time::Duration;
/// use futures::StreamExt;
/// use asm_core::{EventKind, RunInput};
/// use asm_runtime::{NewSession, RunOptions, ServerConfig, SessionServer, SubscribeOptions};
/// # use asm_store_memory::InMemorySessionStore;
/// # use asm_testkit::ScriptedAdapter;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
/// let store = InMemorySessionStore::new();
/// let server = SessionServer::start(
///     ServerConfig::new(store, ScriptedAdapter::replying("Hello!"))
///         .create(NewSession::new("agent"))
///         .max_concurrent_runs(2),
/// )
/// .await?;
/// let mut events = server.subscribe(SubscribeOptions::after(0).kind(EventKind::RunCompleted)).await?;
///
/// let run_id = server.submit_run(RunInput::user("Hi"), RunOptions::default()).await?;
/// let result = server.await_run(&run_id, Duration::from_secs(10)).await?;
/// assert_eq!(result.output().content, "Hello!");
///
/// let completed = events.next().await.expect("a live subscription does not end")?;
/// assert_eq!(completed.run_id.as_ref(), Some(&run_id));
///
/// server.drain(Duration::from_secs(10)).await?;
/// server.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionServer {
    handle: Arc<Handle>,
}

/// Shared by the clones of one [`SessionServer`]; dropping the last one shuts the server down.
struct Handle {
    core: Arc<Core>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.core.send(Command::Shutdown { policy: None, reply: None });
    }
}

impl fmt::Debug for SessionServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionServer")
            .field("session_id", &self.core().session_id)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl SessionServer {
    /// Starts a server: creates or attaches to its session, then spawns its task. Needs a
    /// Tokio runtime.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for `max_concurrent_runs` 0 or no session choice,
    /// [`ErrorCode::InvalidInput`] for invalid default options, [`ErrorCode::SessionNotFound`]
    /// and [`ErrorCode::InvalidOperation`] (finished session) when attaching, store errors.
    #[tracing::instrument(name = "session_server.start", skip_all)]
    pub async fn start(config: ServerConfig) -> Result<SessionServer> {
        config.validate()?;
        let Some(bootstrap) = config.bootstrap.clone() else {
            return Err(Error::new(ErrorCode::ValidationError, "a session server needs a session"));
        };
        let session = bootstrap_session(&config.manager, &bootstrap).await?;
        let recovered =
            if config.recover_pending_runs { pending_runs(&config.manager, &session.id).await? } else { Vec::new() };
        let store = config.manager.store().clone();
        let long_poll = store.capabilities().long_poll;
        let (tx, rx) = mpsc::unbounded_channel();
        let core = Arc::new(Core {
            session_id: session.id.clone(),
            hub: Arc::new(Hub::new(store, session.id.clone(), config.subscription_buffer, config.poll_interval)),
            cache: TranscriptCache::new(),
            settings: Settings {
                manager: config.manager,
                max_concurrent: config.max_concurrent_runs,
                max_queued: config.max_queued_runs,
                limiter: config.limiter,
                control: config.control,
                defaults: config.defaults,
                shutdown_policy: config.shutdown_policy,
                shutdown_timeout: config.shutdown_timeout,
                result_capacity: config.result_capacity,
                long_poll,
            },
            tx: RwLock::new(tx),
            task: Mutex::new(None),
            lifecycle: AtomicU8::new(RUNNING),
        });
        core.spawn_actor(rx, recovered);
        tracing::debug!(session_id = %core.session_id, "session server started");
        Ok(SessionServer { handle: Arc::new(Handle { core }) })
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.handle.core
    }

    /// The session this server runs.
    pub fn session_id(&self) -> &SessionId {
        &self.core().session_id
    }

    /// The manager runs execute through.
    pub fn manager(&self) -> &SessionManager {
        &self.core().settings.manager
    }

    /// The transcript cache continuation runs of this server use.
    pub fn transcript_cache(&self) -> &TranscriptCache {
        &self.core().cache
    }

    /// Whether the server's task is running (false after a shutdown or a crash).
    pub fn is_running(&self) -> bool {
        self.core().lifecycle.load(Ordering::Acquire) == RUNNING && !self.core().tx.read().is_closed()
    }

    /// Persists a `pending` run and queues it; it starts as soon as a slot is free.
    ///
    /// # Errors
    /// Nothing is persisted on any of these: [`ErrorCode::InvalidInput`] (empty input, invalid
    /// options), [`ErrorCode::MaxRunsExceeded`] (queue full), [`ErrorCode::InvalidOperation`]
    /// (shutting down, or the session is not active),
    /// [`ErrorCode::MissingRequiredCapability`]; store errors.
    #[tracing::instrument(name = "session_server.submit_run", skip_all, fields(session_id = %self.session_id()))]
    pub async fn submit_run(&self, input: RunInput, options: RunOptions) -> Result<RunId> {
        input.validate()?;
        let core = self.core();
        let (start, mut execute) = options.merge_over(&core.settings.defaults);
        execute.validate()?;
        if execute.transcript_cache.is_none() {
            execute.transcript_cache = Some(core.cache.clone());
        }
        if !core.settings.long_poll {
            let hub = core.hub.clone();
            let user = execute.on_event.take();
            execute.on_event = Some(Arc::new(move |event: &Event| {
                if let Some(user) = &user {
                    user(event);
                }
                hub.kick();
            }));
        }
        let (reply, answer) = oneshot::channel();
        core.request(Command::Submit(Box::new(Submission { input, start, options: execute, reply })))?;
        answer.await.map_err(|_| core.gone())?
    }

    /// Waits up to `timeout` for `run_id` to finish and returns its result: the
    /// [`RunResult`] of a completed run, the error that ended any other. Results can be awaited
    /// any number of times, also after they left memory (then rebuilt from the store), and for
    /// runs of this session that another executor runs (followed through the store).
    ///
    /// # Errors
    /// [`ErrorCode::RunNotFound`] at once for a run the store does not know (or of another
    /// session); [`ErrorCode::Timeout`] when `timeout` passes first; the run's own error.
    #[tracing::instrument(name = "session_server.await_run", skip_all, fields(session_id = %self.session_id(), run_id = %run_id))]
    pub async fn await_run(&self, run_id: &RunId, timeout: Duration) -> Result<RunResult> {
        let deadline = Instant::now() + timeout.min(MAX_WAIT);
        let core = self.core();
        let (reply, answer) = oneshot::channel();
        if core.request(Command::Await { run_id: run_id.clone(), reply }).is_ok() {
            match tokio::time::timeout_at(deadline, answer).await {
                Err(_) => return Err(timeout_error("await_run", timeout)),
                Ok(Ok(AwaitReply::Ready(result))) => return *result,
                // Not one of ours, or the server task died meanwhile: follow the store.
                Ok(Ok(AwaitReply::NotOwned) | Err(_)) => {}
            }
        }
        core.await_in_store(run_id, deadline, timeout).await
    }

    /// [`submit_run`](Self::submit_run), then [`await_run`](Self::await_run) with `timeout`.
    ///
    /// # Errors
    /// Those of both.
    #[tracing::instrument(name = "session_server.execute_run", skip_all, fields(session_id = %self.session_id()))]
    pub async fn execute_run(&self, input: RunInput, options: RunOptions, timeout: Duration) -> Result<RunResult> {
        let run_id = self.submit_run(input, options).await?;
        self.await_run(&run_id, timeout).await
    }

    /// Cancels a run of this session.
    ///
    /// - queued: removed from the queue and marked `cancelled` with a `run_cancelled` event,
    ///   without any provider call; returns once that is stored;
    /// - in flight: its provider is stopped through its cancellation token; returns once
    ///   cancellation is requested (the run then ends `cancelled`, unless it finished first);
    /// - already cancelled: `Ok`.
    ///
    /// # Errors
    /// [`ErrorCode::RunNotFound`] (unknown, or of another session);
    /// [`ErrorCode::InvalidTransition`] for a run that already ended otherwise.
    #[tracing::instrument(name = "session_server.cancel_run", skip_all, fields(session_id = %self.session_id(), run_id = %run_id))]
    pub async fn cancel_run(&self, run_id: &RunId) -> Result<()> {
        let core = self.core();
        let (reply, answer) = oneshot::channel();
        let target = match core.request(Command::Cancel { run_id: run_id.clone(), reply }) {
            Ok(()) => answer.await.unwrap_or(CancelTarget::NotOwned),
            Err(_) => CancelTarget::NotOwned,
        };
        match target {
            CancelTarget::Queued(done) => {
                done.await.unwrap_or_else(|_| Err(Error::new(ErrorCode::InternalError, "queued cancel was lost")))
            }
            CancelTarget::InFlight => core.settings.manager.cancel_run(run_id).await,
            CancelTarget::Cancelling => Ok(()),
            CancelTarget::Finished(status) => {
                Err(Error::new(ErrorCode::InvalidTransition, format!("run {run_id} already ended as {status}")))
            }
            CancelTarget::NotOwned => {
                core.check_run_of_session(run_id).await?;
                core.settings.manager.cancel_run(run_id).await
            }
        }
    }

    /// Interrupts an in-flight run: through the configured [`ControlOperations`] (recorded in
    /// its history), else like [`cancel_run`](Self::cancel_run).
    ///
    /// # Errors
    /// [`ErrorCode::RunNotFound`] when the run is not in flight on this server; the control
    /// operation's error.
    #[tracing::instrument(name = "session_server.interrupt_run", skip_all, fields(session_id = %self.session_id(), run_id = %run_id))]
    pub async fn interrupt_run(&self, run_id: &RunId) -> Result<()> {
        let core = self.core();
        let (reply, answer) = oneshot::channel();
        core.request(Command::Locate { run_id: run_id.clone(), reply })?;
        let in_flight = answer.await.map_err(|_| core.gone())?;
        if !in_flight {
            return Err(Error::new(ErrorCode::RunNotFound, format!("run {run_id} is not in flight"))
                .with_detail("run_id", run_id.as_str()));
        }
        match &core.settings.control {
            Some(control) => control.interrupt(run_id).await.map(|_| ()),
            None => core.settings.manager.cancel_run(run_id).await,
        }
    }

    /// In-flight and queued runs, limits and subscriber count.
    ///
    /// # Errors
    /// When the server's task is not running.
    #[tracing::instrument(name = "session_server.status", skip_all, fields(session_id = %self.session_id()))]
    pub async fn status(&self) -> Result<ServerStatus> {
        let core = self.core();
        let (reply, answer) = oneshot::channel();
        core.request(Command::Status(reply))?;
        answer.await.map_err(|_| core.gone())
    }

    /// Waits until nothing is queued or in flight.
    ///
    /// # Errors
    /// [`ErrorCode::Timeout`] when `timeout` passes first; an error when the task crashed.
    #[tracing::instrument(name = "session_server.drain", skip_all, fields(session_id = %self.session_id()))]
    pub async fn drain(&self, timeout: Duration) -> Result<()> {
        let core = self.core();
        let (reply, answer) = oneshot::channel();
        if core.request(Command::Drain(reply)).is_err() {
            return if core.stopped() { Ok(()) } else { Err(core.gone()) };
        }
        match tokio::time::timeout(timeout.min(MAX_WAIT), answer).await {
            Err(_) => Err(timeout_error("drain", timeout)),
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) if core.stopped() => Ok(()),
            Ok(Err(_)) => Err(core.gone()),
        }
    }

    /// Shuts the server down with its configured [`ShutdownPolicy`] and waits until its task
    /// has stopped. Idempotent.
    ///
    /// # Errors
    /// When the task crashed instead of stopping.
    pub async fn shutdown(&self) -> Result<()> {
        self.shutdown_inner(None).await
    }

    /// Shuts the server down with `policy` (a stricter policy than one already in progress
    /// takes over) and waits until its task has stopped.
    ///
    /// # Errors
    /// When the task crashed instead of stopping.
    pub async fn shutdown_with(&self, policy: ShutdownPolicy) -> Result<()> {
        self.shutdown_inner(Some(policy)).await
    }

    #[tracing::instrument(name = "session_server.shutdown", skip_all, fields(session_id = %self.session_id()))]
    async fn shutdown_inner(&self, policy: Option<ShutdownPolicy>) -> Result<()> {
        let core = self.core();
        let (reply, answer) = oneshot::channel();
        if core.request(Command::Shutdown { policy, reply: Some(reply) }).is_err() {
            return if core.stopped() { Ok(()) } else { Err(core.gone()) };
        }
        match answer.await {
            Ok(()) => Ok(()),
            Err(_) if core.stopped() => Ok(()),
            Err(_) => Err(core.gone()),
        }
    }

    /// Subscribes to the session's events: every event with sequence `> after` that
    /// passes the filters, exactly once, in sequence order, without gaps: first what the store
    /// holds, then live, including events other writers append. A subscriber that falls behind
    /// re-reads from the store; dropping the stream unsubscribes.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidOperation`] once the server stopped; store errors.
    #[tracing::instrument(name = "session_server.subscribe", skip_all, fields(session_id = %self.session_id()))]
    pub async fn subscribe(&self, options: SubscribeOptions) -> Result<EventSubscription> {
        self.core().hub.subscribe(options).await
    }

    /// Makes the server's task panic, to test supervision (a [`SessionSupervisor`] restarts it
    /// from the store). Only with the `test-util` feature.
    ///
    /// [`SessionSupervisor`]: crate::SessionSupervisor
    #[cfg(feature = "test-util")]
    pub fn crash_for_tests(&self) {
        self.core().send(Command::Crash);
    }
}

/// The longest wait any call accepts (longer waits are capped, so deadlines never overflow).
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

fn timeout_error(operation: &str, timeout: Duration) -> Error {
    Error::new(ErrorCode::Timeout, format!("{operation} timed out after {} ms", timeout.as_millis()))
        .with_detail("timeout_ms", u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
}

async fn bootstrap_session(manager: &SessionManager, bootstrap: &Bootstrap) -> Result<Session> {
    match bootstrap {
        Bootstrap::Create(new) => {
            let session = manager.start_session(new.clone()).await?;
            manager.activate_session(&session.id).await
        }
        Bootstrap::Attach(id) => {
            let session = manager.get_session(id).await?;
            match session.status {
                SessionStatus::Pending => manager.activate_session(id).await,
                status if status.is_terminal() => Err(Error::new(
                    ErrorCode::InvalidOperation,
                    format!("session {id} is {status}; a server needs a pending, active or paused session"),
                )),
                _ => Ok(session),
            }
        }
    }
}

/// The session's pending runs that nobody in this process is executing, oldest first.
async fn pending_runs(manager: &SessionManager, session_id: &SessionId) -> Result<Vec<RunId>> {
    let runs = manager.store().list_runs(session_id, &RunQuery::new().status(RunStatus::Pending)).await?;
    let active = manager.inner.active.lock();
    Ok(runs.into_iter().map(|run| run.id).filter(|id| !active.contains_key(id)).collect())
}

// ----- the core: what the handle, the task and the run tasks share -------------------------------

pub(crate) struct Core {
    session_id: SessionId,
    settings: Settings,
    pub(crate) hub: Arc<Hub>,
    cache: TranscriptCache,
    /// The current task's inbox (replaced when a supervisor restarts the task).
    tx: RwLock<mpsc::UnboundedSender<Command>>,
    task: Mutex<Option<JoinHandle<()>>>,
    lifecycle: AtomicU8,
}

struct Settings {
    manager: SessionManager,
    max_concurrent: usize,
    max_queued: usize,
    limiter: Option<ConcurrencyLimiter>,
    control: Option<ControlOperations>,
    defaults: ExecuteOptions,
    shutdown_policy: ShutdownPolicy,
    shutdown_timeout: Duration,
    result_capacity: usize,
    long_poll: bool,
}

impl Core {
    /// Sends to the current task; false when it is gone.
    fn send(&self, command: Command) -> bool {
        self.tx.read().send(command).is_ok()
    }

    fn request(&self, command: Command) -> Result<()> {
        if self.send(command) { Ok(()) } else { Err(self.gone()) }
    }

    fn stopped(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == STOPPED
    }

    /// The error for a call that found no task.
    fn gone(&self) -> Error {
        if self.stopped() {
            Error::new(ErrorCode::InvalidOperation, format!("the session server of {} has stopped", self.session_id))
        } else {
            Error::new(ErrorCode::InternalError, format!("the session server task of {} died", self.session_id))
        }
    }

    fn spawn_actor(self: &Arc<Self>, rx: mpsc::UnboundedReceiver<Command>, recovered: Vec<RunId>) {
        let actor = Actor::new(self.clone(), rx, recovered);
        let handle = tokio::spawn(actor.run());
        *self.task.lock() = Some(handle);
    }

    /// The task's join handle, for a supervisor to watch.
    pub(crate) fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().take()
    }

    /// Starts a fresh task after the previous one died: attaches to the session again and
    /// queues its pending runs. Existing handles keep working.
    pub(crate) async fn restart(self: &Arc<Self>) -> Result<()> {
        let manager = &self.settings.manager;
        bootstrap_session(manager, &Bootstrap::Attach(self.session_id.clone())).await?;
        let recovered = pending_runs(manager, &self.session_id).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        *self.tx.write() = tx;
        self.lifecycle.store(RUNNING, Ordering::Release);
        self.spawn_actor(rx, recovered);
        tracing::info!(session_id = %self.session_id, "session server task restarted");
        Ok(())
    }

    /// Shuts the task down with the configured policy, without waiting.
    pub(crate) fn request_shutdown(&self) {
        self.send(Command::Shutdown { policy: None, reply: None });
    }

    async fn check_run_of_session(&self, run_id: &RunId) -> Result<Run> {
        let run = self.settings.manager.store().get_run(run_id).await?;
        if run.session_id != self.session_id {
            return Err(Error::new(
                ErrorCode::RunNotFound,
                format!("run {run_id} does not belong to session {}", self.session_id),
            )
            .with_detail("run_id", run_id.as_str()));
        }
        Ok(run)
    }

    /// Follows a run through the store until it is terminal or `deadline` passes.
    async fn await_in_store(&self, run_id: &RunId, deadline: Instant, timeout: Duration) -> Result<RunResult> {
        let store = self.settings.manager.store();
        let mut run = self.check_run_of_session(run_id).await?;
        let mut terminal = EventQuery::new().run(run_id.clone());
        terminal.kinds =
            vec![EventKind::RunCompleted, EventKind::RunFailed, EventKind::RunCancelled, EventKind::RunTimeout];
        loop {
            if run.status.is_terminal() {
                return result_from_store(store, run).await;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(timeout_error("await_run", timeout));
            }
            if self.settings.long_poll {
                let query = terminal.clone().wait(deadline - now);
                store.get_events(&self.session_id, &query).await?;
            } else {
                tokio::time::sleep_until(deadline.min(now + Duration::from_millis(50))).await;
            }
            run = store.get_run(run_id).await?;
        }
    }
}

/// The result of a finished run, rebuilt from the store.
async fn result_from_store(store: &DynSessionStore, run: Run) -> Result<RunResult> {
    match run.status {
        RunStatus::Completed => {
            let events = store.get_events(&run.session_id, &EventQuery::new().run(run.id.clone())).await?;
            Ok(RunResult { run, events, negotiation: None })
        }
        status => Err(run.error.unwrap_or_else(|| {
            Error::new(ErrorCode::InternalError, format!("run {} ended as {status} without an error", run.id))
        })),
    }
}

fn status_of(result: &Result<RunResult>) -> RunStatus {
    match result {
        Ok(_) => RunStatus::Completed,
        Err(error) => match error.code() {
            ErrorCode::Cancelled => RunStatus::Cancelled,
            ErrorCode::Timeout => RunStatus::Timeout,
            _ => RunStatus::Failed,
        },
    }
}

// ----- commands --------------------------------------------------------------------------------

enum Command {
    Submit(Box<Submission>),
    Persisted(Box<Persisted>),
    Await {
        run_id: RunId,
        reply: oneshot::Sender<AwaitReply>,
    },
    Cancel {
        run_id: RunId,
        reply: oneshot::Sender<CancelTarget>,
    },
    Locate {
        run_id: RunId,
        reply: oneshot::Sender<bool>,
    },
    Finished(Box<Finished>),
    Status(oneshot::Sender<ServerStatus>),
    Drain(oneshot::Sender<()>),
    Shutdown {
        policy: Option<ShutdownPolicy>,
        reply: Option<oneshot::Sender<()>>,
    },
    #[cfg(feature = "test-util")]
    Crash,
}

struct Submission {
    input: RunInput,
    start: StartRunOptions,
    options: ExecuteOptions,
    reply: oneshot::Sender<Result<RunId>>,
}

struct Persisted {
    result: Result<Run>,
    options: ExecuteOptions,
    reply: Option<oneshot::Sender<Result<RunId>>>,
}

struct Finished {
    run_id: RunId,
    result: Result<RunResult>,
}

enum AwaitReply {
    Ready(Box<Result<RunResult>>),
    NotOwned,
}

enum CancelTarget {
    /// Removed from the queue; the receiver says how storing the cancel went.
    Queued(oneshot::Receiver<Result<()>>),
    InFlight,
    Cancelling,
    Finished(RunStatus),
    NotOwned,
}

// ----- the task --------------------------------------------------------------------------------

struct Queued {
    run_id: RunId,
    options: Box<ExecuteOptions>,
}

struct InFlight {
    run_id: RunId,
    /// The limiter slot, released when the entry is dropped.
    _permit: Option<RunPermit>,
}

struct ShutdownState {
    policy: ShutdownPolicy,
    /// When a `Finish*` policy stops waiting and cancels what is left.
    deadline: Option<Instant>,
    waiters: Vec<oneshot::Sender<()>>,
    in_flight_cancelled: bool,
}

/// Owns the queue, the slots and the results. Never awaits anything but its inbox (and the
/// limiter / shutdown timers): store work happens in tasks it spawns.
struct Actor {
    core: Arc<Core>,
    rx: mpsc::UnboundedReceiver<Command>,
    queue: VecDeque<Queued>,
    in_flight: Vec<InFlight>,
    /// Queued runs being cancelled in the store.
    cancelling: Vec<RunId>,
    /// Submits being persisted.
    reserved: usize,
    results: HashMap<RunId, Result<RunResult>>,
    result_order: VecDeque<RunId>,
    awaiters: HashMap<RunId, Vec<oneshot::Sender<AwaitReply>>>,
    drain_waiters: Vec<oneshot::Sender<()>>,
    shutdown: Option<ShutdownState>,
    limiter_rx: Option<watch::Receiver<u64>>,
    /// The queue head is waiting for a limiter slot.
    blocked: bool,
}

enum Wake {
    Command(Option<Command>),
    LimiterReleased,
    ShutdownDeadline,
}

impl Actor {
    fn new(core: Arc<Core>, rx: mpsc::UnboundedReceiver<Command>, recovered: Vec<RunId>) -> Self {
        let limiter_rx = core.settings.limiter.as_ref().map(ConcurrencyLimiter::run_releases);
        let queue =
            recovered.into_iter().map(|run_id| Queued { run_id, options: Box::new(core.run_defaults()) }).collect();
        Self {
            core,
            rx,
            queue,
            in_flight: Vec::new(),
            cancelling: Vec::new(),
            reserved: 0,
            results: HashMap::new(),
            result_order: VecDeque::new(),
            awaiters: HashMap::new(),
            drain_waiters: Vec::new(),
            shutdown: None,
            limiter_rx,
            blocked: false,
        }
    }

    async fn run(mut self) {
        self.start_ready();
        loop {
            if self.shutdown.is_some() && self.is_idle() {
                break;
            }
            let wake = {
                let blocked = self.blocked;
                let limiter_rx = &mut self.limiter_rx;
                let limiter_released = async move {
                    match limiter_rx {
                        Some(rx) if blocked => {
                            if rx.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        _ => std::future::pending::<()>().await,
                    }
                };
                let deadline = self.shutdown.as_ref().and_then(|s| s.deadline);
                let shutdown_deadline = async move {
                    match deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    biased;
                    command = self.rx.recv() => Wake::Command(command),
                    () = limiter_released => Wake::LimiterReleased,
                    () = shutdown_deadline => Wake::ShutdownDeadline,
                }
            };
            match wake {
                Wake::Command(None) => break,
                Wake::Command(Some(command)) => self.handle(command),
                Wake::LimiterReleased => self.start_ready(),
                Wake::ShutdownDeadline => self.escalate_shutdown(),
            }
            if self.is_idle() {
                for waiter in self.drain_waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
        }
        self.core.lifecycle.store(STOPPED, Ordering::Release);
        self.core.hub.close();
        if let Some(shutdown) = self.shutdown.take() {
            for waiter in shutdown.waiters {
                let _ = waiter.send(());
            }
        }
        for waiter in self.drain_waiters.drain(..) {
            let _ = waiter.send(());
        }
        tracing::debug!(session_id = %self.core.session_id, "session server stopped");
    }

    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty() && self.cancelling.is_empty() && self.reserved == 0
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Submit(submission) => self.on_submit(submission),
            Command::Persisted(persisted) => self.on_persisted(*persisted),
            Command::Await { run_id, reply } => self.on_await(run_id, reply),
            Command::Cancel { run_id, reply } => self.on_cancel(run_id, reply),
            Command::Locate { run_id, reply } => {
                let _ = reply.send(self.in_flight.iter().any(|r| r.run_id == run_id));
            }
            Command::Finished(finished) => self.on_finished(*finished),
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Drain(reply) => {
                if self.is_idle() {
                    let _ = reply.send(());
                } else {
                    self.drain_waiters.push(reply);
                }
            }
            Command::Shutdown { policy, reply } => self.on_shutdown(policy, reply),
            #[cfg(feature = "test-util")]
            Command::Crash => panic!("session server task crashed on request (test hook)"),
        }
    }

    fn status(&self) -> ServerStatus {
        let settings = &self.core.settings;
        ServerStatus {
            session_id: self.core.session_id.clone(),
            in_flight_runs: self.in_flight.iter().map(|r| r.run_id.clone()).collect(),
            in_flight_count: self.in_flight.len(),
            queued_runs: self.queue.iter().map(|q| q.run_id.clone()).collect(),
            queued_count: self.queue.len(),
            max_concurrent_runs: settings.max_concurrent,
            max_queued_runs: settings.max_queued,
            subscribers: self.core.hub.subscriber_count(),
            accepting_runs: self.shutdown.is_none(),
        }
    }

    fn on_submit(&mut self, submission: Box<Submission>) {
        if self.shutdown.is_some() {
            let error = Error::new(ErrorCode::InvalidOperation, "the session server is shutting down");
            let _ = submission.reply.send(Err(error));
            return;
        }
        let settings = &self.core.settings;
        let accepted = self.in_flight.len() + self.queue.len() + self.reserved;
        if accepted >= settings.max_concurrent.saturating_add(settings.max_queued) {
            let error = Error::new(
                ErrorCode::MaxRunsExceeded,
                format!("Maximum queued runs exceeded ({})", settings.max_queued),
            )
            .with_detail("max_queued_runs", settings.max_queued)
            .with_detail("max_concurrent_runs", settings.max_concurrent);
            let _ = submission.reply.send(Err(error));
            return;
        }
        self.reserved += 1;
        let core = self.core.clone();
        tokio::spawn(async move {
            let Submission { input, start, options, reply } = *submission;
            let result = core.settings.manager.start_run(&core.session_id, input, start).await;
            let persisted = Persisted { result, options, reply: Some(reply) };
            if let Err(mpsc::error::SendError(Command::Persisted(persisted))) =
                core.tx.read().send(Command::Persisted(Box::new(persisted)))
            {
                // The task died meanwhile; tell the caller (the run, if stored, stays pending and
                // is recovered by a restart).
                if let Some(reply) = persisted.reply {
                    let _ = reply.send(Err(core.gone()));
                }
            }
        });
    }

    fn on_persisted(&mut self, persisted: Persisted) {
        self.reserved = self.reserved.saturating_sub(1);
        let Persisted { result, options, reply } = persisted;
        match result {
            Err(error) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
            }
            Ok(run) => {
                if !self.owns(&run.id) {
                    tracing::debug!(run_id = %run.id, queued = self.queue.len(), "run queued");
                    self.queue.push_back(Queued { run_id: run.id.clone(), options: Box::new(options) });
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(run.id));
                }
                self.apply_shutdown();
                self.start_ready();
            }
        }
    }

    fn owns(&self, run_id: &RunId) -> bool {
        self.queue.iter().any(|q| &q.run_id == run_id)
            || self.in_flight.iter().any(|r| &r.run_id == run_id)
            || self.cancelling.contains(run_id)
    }

    /// Starts queued runs, FIFO, while slots (and limiter slots) are free.
    fn start_ready(&mut self) {
        self.blocked = false;
        if self.shutdown.as_ref().is_some_and(|s| s.policy != ShutdownPolicy::Finish) {
            return;
        }
        while self.in_flight.len() < self.core.settings.max_concurrent {
            let Some(head) = self.queue.front() else { return };
            let permit = match &self.core.settings.limiter {
                None => None,
                Some(limiter) => {
                    if let Some(rx) = &mut self.limiter_rx {
                        rx.borrow_and_update();
                    }
                    match limiter.acquire_run(&self.core.session_id, &head.run_id) {
                        Ok(permit) => Some(permit),
                        Err(error) => {
                            tracing::debug!(%error, run_id = %head.run_id, "waiting for a limiter slot");
                            self.blocked = true;
                            return;
                        }
                    }
                }
            };
            let Some(queued) = self.queue.pop_front() else { return };
            self.launch(queued, permit);
        }
    }

    fn launch(&mut self, queued: Queued, permit: Option<RunPermit>) {
        let Queued { run_id, options } = queued;
        let manager = &self.core.settings.manager;
        let claim = match manager.claim_run(&run_id) {
            Ok(claim) => claim,
            Err(error) => {
                // Something else in this process executes it already.
                drop(permit);
                self.record(run_id, Err(error));
                return;
            }
        };
        if let Some(control) = &self.core.settings.control {
            control.register_with(&self.core.session_id, &run_id, manager);
        }
        tracing::debug!(%run_id, in_flight = self.in_flight.len() + 1, "run starting");
        self.in_flight.push(InFlight { run_id: run_id.clone(), _permit: permit });
        tokio::spawn(run_task(self.core.clone(), run_id, *options, claim));
    }

    fn on_finished(&mut self, finished: Finished) {
        let Finished { run_id, result } = finished;
        if let Some(position) = self.in_flight.iter().position(|r| r.run_id == run_id) {
            // Releases the limiter slot before any awaiter is woken.
            drop(self.in_flight.remove(position));
        } else if let Some(position) = self.cancelling.iter().position(|r| *r == run_id) {
            self.cancelling.remove(position);
        }
        if let Some(control) = &self.core.settings.control {
            control.finish_run(&run_id, status_of(&result));
        }
        tracing::debug!(%run_id, status = %status_of(&result), "run finished");
        self.record(run_id, result);
        self.start_ready();
    }

    /// Keeps the result (bounded) and wakes the run's awaiters.
    fn record(&mut self, run_id: RunId, result: Result<RunResult>) {
        if let Some(waiters) = self.awaiters.remove(&run_id) {
            for waiter in waiters {
                let _ = waiter.send(AwaitReply::Ready(Box::new(result.clone())));
            }
        }
        let capacity = self.core.settings.result_capacity;
        if capacity == 0 {
            return;
        }
        if self.results.insert(run_id.clone(), result).is_none() {
            self.result_order.push_back(run_id);
        }
        while self.result_order.len() > capacity {
            if let Some(oldest) = self.result_order.pop_front() {
                self.results.remove(&oldest);
            }
        }
    }

    fn on_await(&mut self, run_id: RunId, reply: oneshot::Sender<AwaitReply>) {
        if let Some(result) = self.results.get(&run_id) {
            let _ = reply.send(AwaitReply::Ready(Box::new(result.clone())));
        } else if self.owns(&run_id) {
            let waiters = self.awaiters.entry(run_id).or_default();
            waiters.retain(|w| !w.is_closed());
            waiters.push(reply);
        } else {
            let _ = reply.send(AwaitReply::NotOwned);
        }
    }

    fn on_cancel(&mut self, run_id: RunId, reply: oneshot::Sender<CancelTarget>) {
        let target = if let Some(position) = self.queue.iter().position(|q| q.run_id == run_id) {
            self.queue.remove(position);
            let (done, receiver) = oneshot::channel();
            self.cancel_queued(run_id, Some(done));
            CancelTarget::Queued(receiver)
        } else if self.in_flight.iter().any(|r| r.run_id == run_id) {
            CancelTarget::InFlight
        } else if self.cancelling.contains(&run_id) {
            CancelTarget::Cancelling
        } else if let Some(result) = self.results.get(&run_id) {
            CancelTarget::Finished(status_of(result))
        } else {
            CancelTarget::NotOwned
        };
        let _ = reply.send(target);
    }

    /// Cancels a run just taken off the queue: stored as `cancelled` (with `run_cancelled`)
    /// without any provider call, then reported as finished.
    fn cancel_queued(&mut self, run_id: RunId, done: Option<oneshot::Sender<Result<()>>>) {
        self.cancelling.push(run_id.clone());
        let core = self.core.clone();
        tokio::spawn(async move {
            let outcome = core.settings.manager.cancel_run(&run_id).await;
            let result = match &outcome {
                Ok(()) => Err(Error::new(ErrorCode::Cancelled, "run cancelled")),
                Err(error) => match core.settings.manager.store().get_run(&run_id).await {
                    Ok(run) if run.status.is_terminal() => result_from_store(core.settings.manager.store(), run).await,
                    _ => Err(error.clone()),
                },
            };
            // Finished first, so that whatever the caller does next sees the run as finished.
            core.send(Command::Finished(Box::new(Finished { run_id, result })));
            if let Some(done) = done {
                let _ = done.send(outcome);
            }
        });
    }

    fn on_shutdown(&mut self, policy: Option<ShutdownPolicy>, reply: Option<oneshot::Sender<()>>) {
        let settings = &self.core.settings;
        let policy = policy.unwrap_or(settings.shutdown_policy);
        match &mut self.shutdown {
            Some(state) => {
                if policy.strictness() > state.policy.strictness() {
                    state.policy = policy;
                }
                state.waiters.extend(reply);
            }
            None => {
                tracing::debug!(?policy, "session server shutting down");
                self.shutdown = Some(ShutdownState {
                    policy,
                    deadline: Instant::now().checked_add(settings.shutdown_timeout.min(MAX_WAIT)),
                    waiters: reply.into_iter().collect(),
                    in_flight_cancelled: false,
                });
            }
        }
        self.apply_shutdown();
    }

    /// Cancels what the shutdown policy says must not run.
    fn apply_shutdown(&mut self) {
        let Some(policy) = self.shutdown.as_ref().map(|s| s.policy) else { return };
        if policy == ShutdownPolicy::Finish {
            return;
        }
        while let Some(queued) = self.queue.pop_front() {
            self.cancel_queued(queued.run_id, None);
        }
        if policy == ShutdownPolicy::Cancel
            && let Some(state) = self.shutdown.as_mut()
            && !state.in_flight_cancelled
        {
            state.in_flight_cancelled = true;
            state.deadline = None;
            for run in &self.in_flight {
                let manager = self.core.settings.manager.clone();
                let run_id = run.run_id.clone();
                tokio::spawn(async move {
                    if let Err(error) = manager.cancel_run(&run_id).await {
                        tracing::debug!(%error, %run_id, "cancel at shutdown failed (the run probably just ended)");
                    }
                });
            }
        }
    }

    fn escalate_shutdown(&mut self) {
        if let Some(state) = self.shutdown.as_mut() {
            tracing::debug!("shutdown timeout passed; cancelling what is left");
            state.policy = ShutdownPolicy::Cancel;
            state.deadline = None;
        }
        self.apply_shutdown();
    }
}

impl Core {
    /// Execute options for a run with no per-run options (recovered runs).
    fn run_defaults(&self) -> ExecuteOptions {
        let mut options = self.settings.defaults.clone();
        options.transcript_cache.get_or_insert_with(|| self.cache.clone());
        options
    }
}

// ----- run tasks -------------------------------------------------------------------------------

/// Reports a run as finished (with an internal error) if its task ends without reporting, for
/// example when it is aborted.
struct FinishGuard {
    core: Arc<Core>,
    run_id: RunId,
    claim: Arc<ActiveRun>,
    reported: bool,
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.core.settings.manager.release_claim(&self.run_id, &self.claim);
        if !self.reported {
            let error = Error::new(ErrorCode::InternalError, "run task ended without a result");
            self.core.send(Command::Finished(Box::new(Finished { run_id: self.run_id.clone(), result: Err(error) })));
        }
    }
}

async fn run_task(core: Arc<Core>, run_id: RunId, options: ExecuteOptions, claim: Arc<ActiveRun>) {
    let mut guard = FinishGuard { core: core.clone(), run_id: run_id.clone(), claim: claim.clone(), reported: false };
    let manager = core.settings.manager.clone();
    let outcome = AssertUnwindSafe(manager.execute_claimed(&run_id, options, claim.clone())).catch_unwind().await;
    let result = match outcome {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(error)) => reconcile(&core, &run_id, error, &claim).await,
        Err(panic) => {
            let error =
                Error::new(ErrorCode::InternalError, format!("run task panicked: {}", panic_message(panic.as_ref())));
            tracing::error!(%run_id, %error, "run task panicked");
            end_in_store(&core, &run_id, &error).await;
            // The panic may have come after the run's end was stored: the store has the truth.
            let store = core.settings.manager.store();
            match store.get_run(&run_id).await {
                Ok(run) if run.status.is_terminal() => result_from_store(store, run).await,
                _ => Err(error),
            }
        }
    };
    guard.reported = true;
    core.send(Command::Finished(Box::new(Finished { run_id, result })));
}

/// The outcome of a run whose execution returned `error`, as the store has it: a cancel or
/// another executor may have ended it first; a run whose execution never started must not stay
/// pending.
async fn reconcile(core: &Core, run_id: &RunId, error: Error, claim: &ActiveRun) -> Result<RunResult> {
    let store = core.settings.manager.store();
    match store.get_run(run_id).await {
        Ok(run) if run.status.is_terminal() => result_from_store(store, run).await,
        Ok(run) if run.status == RunStatus::Pending => {
            let error = if claim.cancel_request().is_some() {
                Error::new(ErrorCode::Cancelled, "run cancelled")
            } else {
                error
            };
            end_in_store(core, run_id, &error).await;
            Err(error)
        }
        _ => Err(error),
    }
}

/// Best effort: ends a run that is not terminal yet with `error` and its terminal event.
async fn end_in_store(core: &Core, run_id: &RunId, error: &Error) {
    let store = core.settings.manager.store();
    let Ok(mut run) = store.get_run(run_id).await else { return };
    let read_status = run.status;
    if run.status.is_terminal() || run.fail(error.clone()).is_err() {
        return;
    }
    let event = terminal_event(&run, error, None);
    if let Err(store_error) =
        store.flush(ExecutionRecord::new(run).events(vec![event]).expect_status(read_status)).await
    {
        tracing::warn!(%store_error, %run_id, "could not record the end of a run");
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
