//! What the handle, the task and the run tasks share, and the commands between them.

use super::*;

// ----- the core: what the handle, the task and the run tasks share -------------------------------

pub(crate) struct Core {
    pub(super) session_id: SessionId,
    pub(super) settings: Settings,
    pub(crate) hub: Arc<Hub>,
    pub(super) cache: TranscriptCache,
    /// The current task's inbox (replaced when a supervisor restarts the task).
    pub(super) tx: RwLock<mpsc::UnboundedSender<Command>>,
    pub(super) task: Mutex<Option<JoinHandle<()>>>,
    pub(super) lifecycle: AtomicU8,
    /// The session's lease while this server owns it (dropped, so released, when it stops).
    pub(super) lease: Mutex<Option<LeaseKeeper>>,
}

pub(super) struct Settings {
    pub(super) manager: SessionManager,
    pub(super) max_concurrent: usize,
    pub(super) max_queued: usize,
    pub(super) limiter: Option<ConcurrencyLimiter>,
    pub(super) control: Option<ControlOperations>,
    pub(super) defaults: RunOptions,
    pub(super) shutdown_policy: ShutdownPolicy,
    pub(super) shutdown_timeout: Duration,
    pub(super) result_capacity: usize,
    pub(super) long_poll: bool,
}

impl Core {
    /// Sends to the current task; false when it is gone.
    pub(super) fn send(&self, command: Command) -> bool {
        self.tx.read().send(command).is_ok()
    }

    pub(super) fn request(&self, command: Command) -> Result<()> {
        if self.send(command) { Ok(()) } else { Err(self.gone()) }
    }

    pub(super) fn stopped(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == STOPPED
    }

    /// The error for a call that found no task.
    pub(super) fn gone(&self) -> Error {
        if self.stopped() {
            Error::new(ErrorCode::InvalidOperation, format!("the session server of {} has stopped", self.session_id))
        } else {
            Error::new(ErrorCode::InternalError, format!("the session server task of {} died", self.session_id))
        }
    }

    pub(super) fn spawn_actor(self: &Arc<Self>, rx: mpsc::UnboundedReceiver<Command>, recovered: Vec<RunId>) {
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

    pub(super) async fn check_run_of_session(&self, run_id: &RunId) -> Result<Run> {
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
    pub(super) async fn await_in_store(
        &self,
        run_id: &RunId,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<RunResult> {
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
pub(super) async fn result_from_store(store: &DynSessionStore, run: Run) -> Result<RunResult> {
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

pub(super) fn status_of(result: &Result<RunResult>) -> RunStatus {
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

pub(super) enum Command {
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

pub(super) struct Submission {
    pub(super) input: RunInput,
    pub(super) options: RunOptions,
    pub(super) reply: oneshot::Sender<Result<RunId>>,
}

pub(super) struct Persisted {
    pub(super) result: Result<Run>,
    pub(super) options: RunOptions,
    pub(super) reply: Option<oneshot::Sender<Result<RunId>>>,
}

pub(super) struct Finished {
    pub(super) run_id: RunId,
    pub(super) result: Result<RunResult>,
}

pub(super) enum AwaitReply {
    Ready(Box<Result<RunResult>>),
    NotOwned,
}

pub(super) enum CancelTarget {
    /// Removed from the queue; the receiver says how storing the cancel went.
    Queued(oneshot::Receiver<Result<()>>),
    InFlight,
    Cancelling,
    Finished(RunStatus),
    NotOwned,
}
