//! The server's task: queue, slots, results, awaiters and shutdown.

use super::*;

// ----- the task --------------------------------------------------------------------------------

pub(super) struct Queued {
    pub(super) run_id: RunId,
    pub(super) options: Box<RunOptions>,
}

pub(super) struct InFlight {
    pub(super) run_id: RunId,
    /// The limiter slot, released when the entry is dropped.
    pub(super) _permit: Option<RunPermit>,
}

pub(super) struct ShutdownState {
    pub(super) policy: ShutdownPolicy,
    /// When a `Finish*` policy stops waiting and cancels what is left.
    pub(super) deadline: Option<Instant>,
    pub(super) waiters: Vec<oneshot::Sender<()>>,
    pub(super) in_flight_cancelled: bool,
}

/// Owns the queue, the slots and the results. Never awaits anything but its inbox (and the
/// limiter / shutdown timers): store work happens in tasks it spawns.
pub(super) struct Actor {
    pub(super) core: Arc<Core>,
    pub(super) rx: mpsc::UnboundedReceiver<Command>,
    pub(super) queue: VecDeque<Queued>,
    pub(super) in_flight: Vec<InFlight>,
    /// Queued runs being cancelled in the store.
    pub(super) cancelling: Vec<RunId>,
    /// Submits being persisted.
    pub(super) reserved: usize,
    pub(super) results: HashMap<RunId, Result<RunResult>>,
    pub(super) result_order: VecDeque<RunId>,
    pub(super) awaiters: HashMap<RunId, Vec<oneshot::Sender<AwaitReply>>>,
    pub(super) drain_waiters: Vec<oneshot::Sender<()>>,
    pub(super) shutdown: Option<ShutdownState>,
    pub(super) limiter_rx: Option<watch::Receiver<u64>>,
    /// The queue head is waiting for a limiter slot.
    pub(super) blocked: bool,
}

pub(super) enum Wake {
    Command(Option<Command>),
    LimiterReleased,
    ShutdownDeadline,
}

impl Actor {
    pub(super) fn new(core: Arc<Core>, rx: mpsc::UnboundedReceiver<Command>, recovered: Vec<RunId>) -> Self {
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

    pub(super) async fn run(mut self) {
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
        // Releases the session's lease: every write of this server is done.
        let keeper = self.core.lease.lock().take();
        if let Some(keeper) = keeper {
            keeper.finish().await;
        }
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

    pub(super) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty() && self.cancelling.is_empty() && self.reserved == 0
    }

    pub(super) fn handle(&mut self, command: Command) {
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

    pub(super) fn status(&self) -> ServerStatus {
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

    pub(super) fn on_submit(&mut self, submission: Box<Submission>) {
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
            let Submission { input, options, reply } = *submission;
            let result = core.settings.manager.start_run(&core.session_id, input, options.clone()).await;
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

    pub(super) fn on_persisted(&mut self, persisted: Persisted) {
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

    pub(super) fn owns(&self, run_id: &RunId) -> bool {
        self.queue.iter().any(|q| &q.run_id == run_id)
            || self.in_flight.iter().any(|r| &r.run_id == run_id)
            || self.cancelling.contains(run_id)
    }

    /// Starts queued runs, FIFO, while slots (and limiter slots) are free.
    pub(super) fn start_ready(&mut self) {
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

    pub(super) fn launch(&mut self, queued: Queued, permit: Option<RunPermit>) {
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

    pub(super) fn on_finished(&mut self, finished: Finished) {
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
    pub(super) fn record(&mut self, run_id: RunId, result: Result<RunResult>) {
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

    pub(super) fn on_await(&mut self, run_id: RunId, reply: oneshot::Sender<AwaitReply>) {
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

    pub(super) fn on_cancel(&mut self, run_id: RunId, reply: oneshot::Sender<CancelTarget>) {
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
    pub(super) fn cancel_queued(&mut self, run_id: RunId, done: Option<oneshot::Sender<Result<()>>>) {
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

    pub(super) fn on_shutdown(&mut self, policy: Option<ShutdownPolicy>, reply: Option<oneshot::Sender<()>>) {
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
    pub(super) fn apply_shutdown(&mut self) {
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

    pub(super) fn escalate_shutdown(&mut self) {
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
    pub(super) fn run_defaults(&self) -> RunOptions {
        let mut options = self.settings.defaults.clone();
        options.transcript_cache.get_or_insert_with(|| self.cache.clone());
        options
    }
}
