//! PostgreSQL [`SessionStore`] for agent-session-manager: the store for many processes and many
//! machines.
//!
//! [`PostgresSessionStore`] passes the conformance suite of `asm-testkit` and adds what an
//! embedded store cannot: any number of processes may use one database at once, and a long-poll
//! reader in one process is woken by a writer in another (LISTEN/NOTIFY, no polling loop).
//!
//! How the rules are kept (details in `migrations/0001_initial.sql`):
//!
//! - every write of a session is **one call of a server-side function** (`asm_write`), so an
//!   append costs one round trip, and every rule is checked inside the write transaction, in
//!   SQL: the session's counter row (`asm_session_heads`) is taken and the batch's range reserved
//!   by one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`; then compare-and-append, the run
//!   rules (compare-and-set of `expected_status`, terminal runs final, forward-only status) and
//!   "no event after a run's end" are checked while that row is held; refusals write nothing;
//! - event ids are unique (`UNIQUE (id)`), `(session_id, sequence)` is the primary key, and a
//!   duplicate id returns the stored event, also across sessions;
//! - concurrent writes are **group-committed**: writer tasks commit every append waiting in
//!   one set-based statement (`asm_append_group`: one round trip, one WAL flush), falling back to
//!   `asm_write` per write (in one pipelined transaction) when one of them needs its own answer
//!   or is a flush; fenced and unfenced writes share that one path;
//! - transient failures (a lost connection, the server restarting) are retried with backoff
//!   ([`RetryPolicy`]); when the server stays unreachable the call fails with
//!   [`ErrorCode::StorageConnectionFailed`](asm_core::ErrorCode::StorageConnectionFailed)
//!   (retryable), and the pool reconnects by itself once the server is back;
//! - session ownership: [`SessionLeases`](asm_ports::SessionLeases) grants one lease per
//!   session (owner, fencing token, expiry on the server's clock, heartbeat); fenced appends,
//!   flushes and session saves carry the token into the group-commit writer, which checks it in
//!   SQL in the same transaction as the write, so a stale owner's write is
//!   [`ErrorCode::LeaseLost`](asm_core::ErrorCode::LeaseLost) and writes nothing;
//! - the schema is created and upgraded by embedded, versioned migrations; a schema that is
//!   newer than this build, or unknown, is
//!   [`ErrorCode::MigrationRequired`](asm_core::ErrorCode::MigrationRequired).
//!
//! Architecture invariant: this crate knows the ports, the domain values and PostgreSQL; nothing
//! of the runtime or of any provider.
//!
//! ```no_run
//! use asm_core::{Event, EventKind, Session};
//! use asm_ports::{EventQuery, SessionStore, SessionStoreExt};
//! use asm_store_postgres::PostgresSessionStore;
//! use std::time::Duration;
//!
//! # async fn demo() -> asm_core::Result<()> {
//! let store = PostgresSessionStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
//! let session = Session::new("my-agent")?;
//! store.save_session(&session).await?;
//! let first = store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await?;
//! assert_eq!(first.sequence, Some(1));
//! // Waits until another process (or this one) appends after sequence 1, up to 30 s.
//! let next = store.get_events(&session.id, &EventQuery::new().after(1).wait(Duration::from_secs(30))).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod codec;
mod db;
mod error;
mod lease;
mod listener;
mod migrate;
mod options;
mod query;
mod retry;
#[cfg(feature = "test-util")]
pub mod test_util;
mod write;
mod writer;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use asm_core::{Error, ErrorCode, Event, Result, Run, RunId, Session, SessionId, StoredEvent};
use asm_ports::backend::batch_session;
use asm_ports::{EventQuery, ExecutionRecord, Page, RunQuery, SessionQuery, SessionStore, StoreCapabilities};

use db::Db;
use error::{DbError, run_not_found, session_not_found};
use listener::Waiters;
pub use options::{PostgresOptions, RetryPolicy};
use retry::Retry;
use write::{Batch, Write};
use writer::Queue;

/// A [`SessionStore`] on PostgreSQL (15 or newer).
///
/// Cloning is cheap: every clone is a handle to the same pool, writer tasks and listener. The
/// store spawns its tasks (group-commit writers, the LISTEN connection, the pool's connection
/// drivers) on the Tokio runtime that connects it; they end when the last handle is dropped.
///
/// Capabilities: long-poll (through LISTEN/NOTIFY, across processes), durable (an
/// acknowledged write is committed; with the server's default `synchronous_commit = on` it is
/// flushed to its WAL), multi-process.
///
/// ```no_run
/// use asm_store_postgres::{PostgresOptions, PostgresSessionStore, RetryPolicy};
/// use std::time::Duration;
/// # async fn demo() -> asm_core::Result<()> {
/// let options = PostgresOptions::new("postgres://postgres@127.0.0.1:5432/test")?
///     .schema("agents")?
///     .retry(RetryPolicy::new().max_elapsed(Duration::from_secs(30)));
/// let store = PostgresSessionStore::connect_with(options).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresSessionStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Db>,
    queue: Queue,
    options: PostgresOptions,
    /// The runtime that connected the store: every database call runs there, so the store can
    /// be used from any runtime (or none).
    runtime: tokio::runtime::Handle,
    /// Dropped with the last handle: stops the listener task.
    _stop: watch::Sender<()>,
}

/// A snapshot of a store's connections, for monitoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresStatus {
    /// How many times the LISTEN connection was established (1 after a clean start; each
    /// reconnect after a lost connection adds one).
    pub listen_connects: u64,
    /// Connections the pool holds now.
    pub pool_connections: usize,
    /// Of those, idle.
    pub pool_idle: usize,
    /// Long-poll reads waiting now.
    pub long_poll_readers: usize,
}

impl PostgresSessionStore {
    /// Connects with default options (schema `public`), creating or upgrading the schema.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidInput`] for a bad connection string,
    /// [`ErrorCode::StorageConnectionFailed`] when the server stays unreachable,
    /// [`ErrorCode::MigrationRequired`] for a schema newer than this build or unknown.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PostgresOptions::new(url)?).await
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// As [`PostgresSessionStore::connect`].
    pub async fn connect_with(options: PostgresOptions) -> Result<Self> {
        let mut config = options.config.clone();
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("asm-store-postgres");
        }
        let channel = options.channel();

        // The schema first, on a connection of its own.
        let mut retry = Retry::new(options.retry, "connect");
        loop {
            match migrate_once(&config, &options, &channel).await {
                Ok(()) => break,
                Err(e) => retry.next(e).await?,
            }
        }

        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(options.pool_size.max(options.writers + 1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(options.connect_timeout))
            .wait_timeout(Some(options.connect_timeout.max(std::time::Duration::from_secs(30))))
            .build()
            .map_err(|e| Error::new(ErrorCode::InternalError, format!("cannot build the connection pool: {e}")))?;

        let waiters = Arc::new(Waiters::default());
        let db = Arc::new(Db::new(pool, &options.schema, Arc::clone(&waiters)));
        let queue = Queue::start(&db, options.writers, options.max_group, options.retry);
        let (stop, stopped) = watch::channel(());
        tokio::spawn(listener::run(config, channel, waiters, options.retry, stopped));
        let runtime = tokio::runtime::Handle::current();
        Ok(Self { inner: Arc::new(Inner { db, queue, options, runtime, _stop: stop }) })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &PostgresOptions {
        &self.inner.options
    }

    /// The state of the store's connections.
    pub fn status(&self) -> PostgresStatus {
        let pool = self.inner.db.pool_status();
        PostgresStatus {
            listen_connects: self.inner.db.waiters.connects(),
            pool_connections: pool.size,
            pool_idle: pool.available,
            long_poll_readers: self.inner.db.waiters.readers(),
        }
    }

    /// Runs `task` on the store's runtime; dropping the returned future aborts it.
    async fn spawn<T, F>(&self, task: impl FnOnce(Arc<Inner>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let handle = AbortOnDrop(self.inner.runtime.spawn(task(Arc::clone(&self.inner))));
        handle.await
    }

    /// Runs `attempt` on the store's runtime ([`Self::spawn`]), retried on transient errors as
    /// `what` ([`Inner::retrying`]). `args` moves into the task; every try borrows it and the
    /// store's state, so a method only says which statement it runs with what.
    async fn spawn_retrying<A, T>(
        &self,
        what: &'static str,
        args: A,
        attempt: for<'a> fn(&'a Inner, &'a A) -> Attempt<'a, T>,
    ) -> Result<T>
    where
        A: Send + Sync + 'static,
        T: Send + 'static,
    {
        self.spawn(move |inner| async move {
            let i = &*inner;
            inner.retrying(what, || attempt(i, &args)).await
        })
        .await
    }
}

/// One boxed try of a database call, borrowing the store's state and its arguments.
type Attempt<'a, T> = std::pin::Pin<Box<dyn Future<Output = std::result::Result<T, DbError>> + Send + 'a>>;

/// A spawned task that is aborted when its awaiting future is dropped (a caller that gives up on
/// a long-poll ends its wait).
struct AbortOnDrop<T>(tokio::task::JoinHandle<Result<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<T>> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| match joined {
            Ok(result) => result,
            Err(e) => Err(Error::new(ErrorCode::InternalError, format!("a store task failed: {e}"))),
        })
    }
}

impl Inner {
    /// Runs `attempt` with the store's retry policy.
    async fn retrying<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, DbError>>,
    {
        let mut retry = Retry::new(self.options.retry, what);
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) => retry.next(e).await?,
            }
        }
    }

    async fn read_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        let db = &self.db;
        self.retrying("get_events", || db.get_events(session_id, query))
            .await?
            .ok_or_else(|| session_not_found(session_id))
    }

    async fn get_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        let Some(wait) = query.wait.filter(|wait| !wait.is_zero()) else {
            return self.read_events(session_id, query).await;
        };
        // A wait too long to represent (e.g. `Duration::MAX`) means "until an append".
        let deadline = tokio::time::Instant::now().checked_add(wait);
        let registration = self.db.waiters.register(codec::uuid_of(session_id.as_str()));
        loop {
            // Registered for the next wake-up *before* reading: a commit between the read and
            // the await is not missed.
            let notified = registration.slot().notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let events = self.read_events(session_id, query).await?;
            if !events.is_empty() {
                return Ok(events);
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Ok(Vec::new());
                    }
                }
                None => notified.await,
            }
        }
    }
}

async fn migrate_once(
    config: &tokio_postgres::Config,
    options: &PostgresOptions,
    channel: &str,
) -> std::result::Result<(), DbError> {
    let (mut client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "migration connection ended");
        }
    });
    let result = migrate::migrate(&mut client, &options.schema, channel, options.migrate).await;
    drop(client);
    let _ = driver.await;
    result
}

impl fmt::Debug for PostgresSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSessionStore")
            .field("schema", &self.inner.options.schema)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for PostgresSessionStore {
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session.id))]
    async fn save_session(&self, session: &Session) -> Result<()> {
        let refusal = self
            .spawn_retrying("save_session", session.clone(), |i, session| Box::pin(i.db.save_session(session, None)))
            .await?;
        refusal.map_or(Ok(()), Err)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %id))]
    async fn get_session(&self, id: &SessionId) -> Result<Session> {
        self.spawn_retrying("get_session", id.clone(), |i, id| Box::pin(i.db.get_session(id)))
            .await?
            .ok_or_else(|| session_not_found(id))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Page<Session>> {
        let args = (query.clone(), query.page_size()?, query.decode_cursor()?);
        self.spawn_retrying("list_sessions", args, |i, (query, page_size, after)| {
            Box::pin(i.db.list_sessions(query, *page_size, after.as_ref()))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %id))]
    async fn delete_session(&self, id: &SessionId) -> Result<()> {
        let id = id.clone();
        self.spawn(|inner| async move {
            let db = &inner.db;
            if inner.retrying("delete_session", || db.delete_session(&id)).await? {
                db.waiters.wake(&codec::uuid_of(id.as_str()));
                Ok(())
            } else {
                Err(session_not_found(&id))
            }
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %run.session_id, run_id = %run.id))]
    async fn save_run(&self, run: &Run) -> Result<()> {
        let write = Write::flush(ExecutionRecord::new(run.clone()), self.inner.options.max_event_bytes)?;
        self.inner.queue.submit(write).await.map(drop)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(run_id = %id))]
    async fn get_run(&self, id: &RunId) -> Result<Run> {
        self.spawn_retrying("get_run", id.clone(), |i, id| Box::pin(i.db.get_run(id)))
            .await?
            .ok_or_else(|| run_not_found(id))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn list_runs(&self, session_id: &SessionId, query: &RunQuery) -> Result<Vec<Run>> {
        query.validate()?;
        self.spawn_retrying("list_runs", (session_id.clone(), query.clone()), |i, (session_id, query)| {
            Box::pin(i.db.list_runs(session_id, query))
        })
        .await?
        .ok_or_else(|| session_not_found(session_id))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id, count = events.len()))]
    async fn append(&self, events: Vec<Event>, expected_last_sequence: Option<u64>) -> Result<Vec<StoredEvent>> {
        let session_id = batch_session(&events)?.clone();
        tracing::Span::current().record("session_id", tracing::field::display(&session_id));
        let batch = Batch::new(session_id, events, self.inner.options.max_event_bytes)?;
        // The writer tasks run on the store's runtime; this only queues and waits.
        self.inner.queue.submit(Write::append(batch, expected_last_sequence)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn get_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        query.validate()?;
        let (session_id, query) = (session_id.clone(), query.clone());
        self.spawn(|inner| async move { inner.get_events(&session_id, &query).await }).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn latest_sequence(&self, session_id: &SessionId) -> Result<u64> {
        self.spawn_retrying("latest_sequence", session_id.clone(), |i, id| Box::pin(i.db.latest_sequence(id)))
            .await?
            .ok_or_else(|| session_not_found(session_id))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(session_id = %record.run.session_id, run_id = %record.run.id, count = record.events.len())
    )]
    async fn flush(&self, record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        let write = Write::flush(record, self.inner.options.max_event_bytes)?;
        self.inner.queue.submit(write).await
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::new().long_poll(true).durable(true).multi_process(true).session_leases(true)
    }

    fn leases(&self) -> Option<&dyn asm_ports::SessionLeases> {
        Some(self)
    }
}
