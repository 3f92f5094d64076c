//! [`SessionServer`], the handle: every public operation sends a command to the task.

use super::*;

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
    pub(super) handle: Arc<Handle>,
}

/// Shared by the clones of one [`SessionServer`]; dropping the last one shuts the server down.
pub(super) struct Handle {
    pub(super) core: Arc<Core>,
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
    /// and [`ErrorCode::InvalidOperation`] (finished session) when attaching, store errors;
    /// with [`ServerConfig::ownership`]: [`ErrorCode::SessionOwned`] (another owner holds the
    /// session) and [`ErrorCode::CapabilityNotSupported`] (the store provides no leases).
    #[tracing::instrument(name = "session_server.start", skip_all)]
    pub async fn start(config: ServerConfig) -> Result<SessionServer> {
        config.validate()?;
        let Some(bootstrap) = config.bootstrap.clone() else {
            return Err(Error::new(ErrorCode::ValidationError, "a session server needs a session"));
        };
        let store = config.manager.store().clone();
        if config.ownership.is_some() {
            crate::ownership::check_supported(&store)?;
        }
        // Attaching with ownership: the lease first, before anything touches the session.
        let mut lease = match (&config.ownership, config.attached_session()) {
            (Some(ownership), Some(session_id)) => {
                Some(crate::ownership::acquire(&store, session_id, ownership).await?)
            }
            _ => None,
        };
        let owned = async {
            let session = bootstrap_session(&config.manager, &bootstrap).await?;
            if let (Some(ownership), None) = (&config.ownership, &lease) {
                lease = Some(crate::ownership::acquire(&store, &session.id, ownership).await?);
            }
            let manager = match &lease {
                Some(lease) => config.manager.with_store(Arc::new(fenced(store.clone(), lease.clone()))),
                None => config.manager.clone(),
            };
            let mut recovered = match (&lease, &config.ownership) {
                (Some(_), Some(ownership)) => {
                    crate::ownership::recover_orphaned_running(&manager, &session.id, ownership.recovery).await?
                }
                _ => Vec::new(),
            };
            if config.recover_pending_runs || lease.is_some() {
                for run_id in pending_runs(&manager, &session.id).await? {
                    if !recovered.contains(&run_id) {
                        recovered.push(run_id);
                    }
                }
            }
            Ok::<_, Error>((session, manager, recovered))
        }
        .await;
        let (session, manager, recovered) = match owned {
            Ok(started) => started,
            Err(error) => {
                if let Some(lease) = &lease {
                    crate::ownership::release_quietly(&store, lease).await;
                }
                return Err(error);
            }
        };
        let long_poll = store.capabilities().long_poll;
        let (tx, rx) = mpsc::unbounded_channel();
        let core = Arc::new(Core {
            session_id: session.id.clone(),
            hub: Arc::new(Hub::new(store.clone(), session.id, config.subscription_buffer, config.poll_interval)),
            cache: TranscriptCache::new(),
            lease: Mutex::new(None),
            settings: Settings {
                manager,
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
        if let (Some(lease), Some(ownership)) = (lease, &config.ownership) {
            let weak = Arc::downgrade(&core);
            let keeper = LeaseKeeper::start(store, lease, ownership, move |_lost| {
                // Another process owns the session now: nothing this server writes is kept.
                if let Some(core) = weak.upgrade() {
                    core.send(Command::Shutdown { policy: Some(ShutdownPolicy::Cancel), reply: None });
                }
            });
            *core.lease.lock() = Some(keeper);
        }
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

    /// The manager runs execute through (for an owning server, one whose writes of the
    /// session are fenced by its lease).
    pub fn manager(&self) -> &SessionManager {
        &self.core().settings.manager
    }

    /// The session's lease while this server owns it ([`ServerConfig::ownership`]); `None`
    /// without ownership or once stopped.
    pub fn lease(&self) -> Option<asm_ports::Lease> {
        self.core().lease.lock().as_ref().map(|keeper| keeper.lease.clone())
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
        let mut execute = options.merge_over(&core.settings.defaults);
        execute.validate()?;
        if execute.transcript_cache.is_none() {
            execute.transcript_cache = Some(core.cache.clone());
        }
        if !core.settings.long_poll {
            let hub = core.hub.clone();
            let user = execute.on_event.take();
            execute.on_event = Some(Arc::new(move |event: &asm_core::StoredEvent| {
                if let Some(user) = &user {
                    user(event);
                }
                hub.kick();
            }));
        }
        let (reply, answer) = oneshot::channel();
        core.request(Command::Submit(Box::new(Submission { input, options: execute, reply })))?;
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
    pub(super) async fn shutdown_inner(&self, policy: Option<ShutdownPolicy>) -> Result<()> {
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
pub(super) const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

pub(super) fn timeout_error(operation: &str, timeout: Duration) -> Error {
    Error::new(ErrorCode::Timeout, format!("{operation} timed out after {} ms", timeout.as_millis()))
        .with_detail("timeout_ms", u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
}

pub(super) async fn bootstrap_session(manager: &SessionManager, bootstrap: &Bootstrap) -> Result<Session> {
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
pub(super) async fn pending_runs(manager: &SessionManager, session_id: &SessionId) -> Result<Vec<RunId>> {
    let runs = manager.store().list_runs(session_id, &RunQuery::new().status(RunStatus::Pending)).await?;
    let active = manager.inner.active.lock();
    Ok(runs.into_iter().map(|run| run.id).filter(|id| !active.contains_key(id)).collect())
}
