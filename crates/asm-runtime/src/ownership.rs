//! Session ownership across processes: [`Ownership`], the lease keeper (heartbeat, release) and
//! the fenced store an owning [`SessionServer`](crate::SessionServer) writes through.
//!
//! An owning server holds its session's lease ([`asm_ports::SessionLeases`]) for as long as it
//! runs: it takes the lease before it touches the session (refused with
//! [`ErrorCode::SessionOwned`], naming the owner, unless asked to wait), renews it every
//! `lease_ttl / 3`, and releases it when it stops. Every append, run write and session save of
//! the session goes through the store's fenced writes, which the store refuses ([`ErrorCode::LeaseLost`]) once
//! another process took the session over. A server whose lease is lost cancels what it runs and
//! stops.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use asm_core::{Error, ErrorCode, Event, Result, Run, RunId, RunStatus, Session, SessionId, StoredEvent};
use asm_ports::backend::{batch_session, leases_unsupported};
use asm_ports::{
    CancellationToken, DynSessionStore, ExecutionRecord, Layered, Lease, RunQuery, SessionLeases, SessionStore,
    StoreLayer,
};

use crate::manager::SessionManager;

/// How a [`SessionServer`](crate::SessionServer) owns its session across processes
/// ([`ServerConfig::ownership`](crate::ServerConfig::ownership)).
///
/// ```
/// use std::time::Duration;
/// use asm_runtime::Ownership;
/// let ownership = Ownership::new("worker-7")
///     .lease_ttl(Duration::from_secs(10))
///     .wait_for_lease(Duration::from_secs(30));
/// assert_eq!(ownership.owner(), "worker-7");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ownership {
    pub(crate) owner: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) wait: Option<Duration>,
    pub(crate) recovery: RecoveryPolicy,
}

/// What a server that takes a session over does with the runs a crashed (or stalled) owner left
/// `running` ([`Ownership::recovery`]). Such a run has no execution anywhere any more: its
/// provider call died with its owner. `pending` runs are always queued and executed.
///
/// Every choice writes the run's end through the new owner's fenced store, with a
/// compare-and-set on `running` (a run that ended meanwhile is left as it is), keeps the usage
/// its provider reported before it was left, and records `reason: owner_lost` in the terminal
/// event.
///
/// ```
/// use asm_core::ErrorCode;
/// use asm_runtime::{Ownership, RecoveryPolicy};
/// let ownership = Ownership::new("worker-7").recovery(RecoveryPolicy::Fail(ErrorCode::LeaseLost));
/// assert_eq!(ownership.recovery_policy(), RecoveryPolicy::Fail(ErrorCode::LeaseLost));
/// assert_eq!(RecoveryPolicy::default(), RecoveryPolicy::Cancel);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryPolicy {
    /// Marked `cancelled` (`run_cancelled`, the orphan rule of
    /// [`SessionManager::cancel_run`]). The default.
    #[default]
    Cancel,
    /// Marked ended by an error of this code (`run_failed`; the run's `error` has the code and
    /// `reason: owner_lost`), so callers can tell an owner's loss from other failures. As
    /// [`Run::fail`] does, [`ErrorCode::Cancelled`] makes the run `cancelled` and
    /// [`ErrorCode::Timeout`] `timeout`; every other code `failed`.
    Fail(ErrorCode),
    /// Tried again: the left run is marked `cancelled` (`reason: requeued`) and a new `pending`
    /// run with the same input is created (its metadata `requeued_from` names the left run) and
    /// queued first, before the session's other pending runs, with the server's default run
    /// options. A provider call the left run had made may so be made twice: choose this only
    /// for idempotent work.
    Requeue,
}

/// The metadata key of a requeued run naming the run it replaces ([`RecoveryPolicy::Requeue`]).
pub const REQUEUED_FROM_KEY: &str = "requeued_from";

impl Ownership {
    /// Default lease duration.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

    /// Ownership under the name `owner` (unique per process: a host name and process id, a pod
    /// name), with a 15 s lease, refusing at once when another owner holds the session.
    pub fn new(owner: impl Into<String>) -> Self {
        Self { owner: owner.into(), lease_ttl: Self::DEFAULT_LEASE_TTL, wait: None, recovery: RecoveryPolicy::Cancel }
    }

    asm_core::builder_setters! {
        /// What to do on takeover with the runs the previous owner left `running` (default
        /// [`RecoveryPolicy::Cancel`]).
        fn recovery(policy: RecoveryPolicy) { recovery = policy }
    }

    /// The recovery policy.
    pub fn recovery_policy(&self) -> RecoveryPolicy {
        self.recovery
    }

    /// How long the lease lasts without a heartbeat (renewed every third of it): after a crash
    /// of the owner, the session can be taken over this long after its last heartbeat. At
    /// least 30 ms.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    asm_core::builder_setters! {
        /// When another owner holds the session, wait up to `timeout` for its lease to end (it
        /// releases it, or it expires) instead of failing at once.
        fn wait_for_lease(timeout: Duration) { wait = Some(timeout) }
    }

    /// The owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn heartbeat(&self) -> Duration {
        self.lease_ttl / 3
    }
}

/// The leases of `store`, or the typed refusal for a store that cannot provide them.
fn leases_of(store: &dyn SessionStore) -> Result<&dyn SessionLeases> {
    if !store.capabilities().session_leases {
        return Err(leases_unsupported(store));
    }
    store.leases().ok_or_else(|| leases_unsupported(store))
}

/// `Ok` when `store` can provide leases; the typed refusal otherwise.
pub(crate) fn check_supported(store: &DynSessionStore) -> Result<()> {
    leases_of(store).map(drop)
}

/// The longest wait for a lease (longer waits are capped, so deadlines never overflow).
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Takes the lease of `session_id` (waiting if asked).
pub(crate) async fn acquire(store: &DynSessionStore, session_id: &SessionId, ownership: &Ownership) -> Result<Lease> {
    let leases = leases_of(store)?;
    let deadline = ownership.wait.map(|wait| Instant::now() + wait.min(MAX_WAIT));
    // Looking again at this pace while waiting: often enough to take over soon after expiry.
    let pace = (ownership.lease_ttl / 10).clamp(Duration::from_millis(10), Duration::from_millis(500));
    loop {
        match leases.acquire(session_id, &ownership.owner, ownership.lease_ttl).await {
            Ok(lease) => {
                tracing::info!(%session_id, owner = %lease.owner, token = lease.token, "session lease taken");
                return Ok(lease);
            }
            Err(error) if error.code() == ErrorCode::SessionOwned => {
                let Some(deadline) = deadline else { return Err(error) };
                let now = Instant::now();
                if now >= deadline {
                    let waited = ownership.wait.map_or(0, |w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX));
                    return Err(error.with_detail("waited_ms", waited));
                }
                tokio::time::sleep_until(deadline.min(now + pace)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The held lease of an owning server: renewed by a keeper task until stopped, then released.
pub(crate) struct LeaseKeeper {
    pub(crate) lease: Lease,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseKeeper").field("lease", &self.lease).finish_non_exhaustive()
    }
}

impl LeaseKeeper {
    /// Starts the heartbeat; `lost` is called once if the lease is lost to another owner.
    pub(crate) fn start(
        store: DynSessionStore,
        lease: Lease,
        ownership: &Ownership,
        lost: impl FnOnce(Error) + Send + 'static,
    ) -> Self {
        let stop = CancellationToken::new();
        let (ttl, every) = (ownership.lease_ttl, ownership.heartbeat());
        let task = tokio::spawn(keep(store, lease.clone(), ttl, every, stop.clone(), lost));
        Self { lease, stop, task: Some(task) }
    }

    /// Stops the heartbeat and waits until the lease is released.
    pub(crate) async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn keep(
    store: DynSessionStore,
    mut lease: Lease,
    ttl: Duration,
    every: Duration,
    stop: CancellationToken,
    lost: impl FnOnce(Error) + Send + 'static,
) {
    let session_id = lease.session_id.clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        let Some(leases) = store.leases() else { return };
        match leases.renew(&lease, ttl).await {
            Ok(renewed) => lease = renewed,
            Err(error) if matches!(error.code(), ErrorCode::LeaseLost | ErrorCode::SessionNotFound) => {
                tracing::error!(%session_id, %error, "session lease lost; the server stops");
                lost(error);
                return;
            }
            // A transient failure: the next heartbeat tries again (the lease lasts three).
            Err(error) => tracing::warn!(%session_id, %error, "session lease heartbeat failed"),
        }
    }
    if let Some(leases) = store.leases()
        && let Err(error) = leases.release(&lease).await
    {
        tracing::warn!(%session_id, %error, "could not release the session lease (it expires by itself)");
    }
    tracing::info!(%session_id, token = lease.token, "session lease released");
}

/// Ends `lease` at once, best effort (a failure only means it expires by itself).
pub(crate) async fn release_quietly(store: &DynSessionStore, lease: &Lease) {
    if let Some(leases) = store.leases()
        && let Err(error) = leases.release(lease).await
    {
        tracing::warn!(session_id = %lease.session_id, %error, "could not release the session lease");
    }
}

/// Recovery after taking a session over: the session's `running` runs that no execution of this
/// process owns were left by a crashed owner; they end as `policy` says. Returns the runs to
/// queue before the session's pending ones (the new runs of [`RecoveryPolicy::Requeue`]); the
/// pending runs are queued by the caller.
pub(crate) async fn recover_orphaned_running(
    manager: &SessionManager,
    session_id: &SessionId,
    policy: RecoveryPolicy,
) -> Result<Vec<RunId>> {
    let running = manager.store().list_runs(session_id, &RunQuery::new().status(RunStatus::Running)).await?;
    let mut requeued = Vec::new();
    for run in running {
        if manager.inner.active.lock().contains_key(&run.id) {
            continue;
        }
        let (error, reason) = match policy {
            RecoveryPolicy::Cancel => {
                match manager.cancel_run(&run.id).await {
                    Ok(()) => {
                        tracing::info!(%session_id, run_id = %run.id, "orphaned running run cancelled on takeover")
                    }
                    // It ended meanwhile.
                    Err(error) if error.code() == ErrorCode::InvalidTransition => {}
                    Err(error) => return Err(error),
                }
                continue;
            }
            RecoveryPolicy::Fail(code) => (
                Error::new(code, format!("run {} was left running by an owner that lost session {session_id}", run.id)),
                OWNER_LOST,
            ),
            RecoveryPolicy::Requeue => (Error::new(ErrorCode::Cancelled, "run cancelled"), REQUEUED),
        };
        let input = run.input.clone();
        let left = run.id.clone();
        if !end_orphan(manager, run, error.with_detail(REASON, reason), reason).await? {
            continue;
        }
        tracing::info!(%session_id, run_id = %left, ?policy, "orphaned running run ended on takeover");
        if policy == RecoveryPolicy::Requeue {
            let mut again = Run::new(session_id.clone(), input);
            again.metadata.insert(REQUEUED_FROM_KEY.into(), left.as_str().into());
            manager.store().save_run(&again).await?;
            tracing::info!(%session_id, run_id = %again.id, requeued_from = %left, "orphaned run requeued");
            requeued.push(again.id);
        }
    }
    Ok(requeued)
}

const REASON: &str = "reason";
const OWNER_LOST: &str = "owner_lost";
const REQUEUED: &str = "requeued";

/// Ends a run left `running` with `error` (compare-and-set on `running`, usage reported so far
/// kept). `false`: it ended meanwhile, nothing written.
async fn end_orphan(manager: &SessionManager, mut run: Run, error: Error, reason: &str) -> Result<bool> {
    run.fail(error.clone())?;
    let mut terminal = crate::execution::terminal_event(&run, &error, Some(reason));
    let reported = crate::execution::stored_usage_events(manager.store(), &run).await?;
    crate::execution::keep_reported_usage(&mut run, &mut terminal, &reported);
    let record = ExecutionRecord::new(run).events(vec![terminal]).expect_status(RunStatus::Running);
    match manager.store().flush(record).await {
        Ok(_) => Ok(true),
        Err(error) if error.code() == ErrorCode::InvalidTransition => Ok(false),
        Err(error) => Err(error),
    }
}

/// The layer that fences one session's appends and run writes by a lease (the store is
/// `Layered<DynSessionStore, Fence>`); other sessions' writes pass through.
#[derive(Debug)]
pub(crate) struct Fence {
    lease: Lease,
}

/// A store whose appends and run writes of one session are fenced by a lease.
pub(crate) type FencedStore = Layered<DynSessionStore, Fence>;

/// `inner` with `lease`'s session fenced.
pub(crate) fn fenced(inner: DynSessionStore, lease: Lease) -> FencedStore {
    Layered::new(inner, Fence { lease })
}

#[async_trait]
impl StoreLayer for Fence {
    async fn save_session(&self, inner: &dyn SessionStore, session: &Session) -> Result<()> {
        if session.id == self.lease.session_id {
            return leases_of(inner)?.save_session_fenced(&self.lease, session).await;
        }
        inner.save_session(session).await
    }
    async fn save_run(&self, inner: &dyn SessionStore, run: &Run) -> Result<()> {
        if run.session_id == self.lease.session_id {
            return leases_of(inner)?.flush_fenced(&self.lease, ExecutionRecord::new(run.clone())).await.map(drop);
        }
        inner.save_run(run).await
    }
    async fn append(
        &self,
        inner: &dyn SessionStore,
        events: Vec<Event>,
        expected_last_sequence: Option<u64>,
    ) -> Result<Vec<StoredEvent>> {
        if batch_session(&events)? == &self.lease.session_id {
            return leases_of(inner)?.append_fenced(&self.lease, events, expected_last_sequence).await;
        }
        inner.append(events, expected_last_sequence).await
    }
    async fn flush(&self, inner: &dyn SessionStore, record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        if record.run.session_id == self.lease.session_id {
            return leases_of(inner)?.flush_fenced(&self.lease, record).await;
        }
        inner.flush(record).await
    }
}
