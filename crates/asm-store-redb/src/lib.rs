//! Durable embedded [`SessionStore`] for agent-session-manager on [redb](https://www.redb.org).
//!
//! [`RedbSessionStore`] keeps sessions, runs and the per-session event logs in one redb file. It
//! passes the conformance suite of `asm-testkit`, supports long-poll reads, and batches
//! concurrent writers into shared transactions (group commit).
//!
//! # Durability
//!
//! With the default [`Durability::Immediate`], every write is acknowledged only after the redb
//! transaction holding it has committed with an `fsync`: a write that returned `Ok` survives a
//! crash of the process (tested by killing a writer process with `SIGKILL` at random moments)
//! and a power loss, as far as the disk honours `fsync`. That is what
//! [`StoreCapabilities::durable`] means here. A crash never leaves a partial transaction behind:
//! redb recovers to the last commit when it reopens the file.
//!
//! With [`Durability::Eventual`], commits are acknowledged before their `fsync`; the writer
//! makes them durable at least every [`RedbOptions::EVENTUAL_SYNC_INTERVAL`], when
//! [`RedbSessionStore::sync`] is called and when the store is dropped. A crash may lose the
//! acknowledged writes of that last interval; the file still reopens consistent (at the last
//! durable commit). `capabilities().durable` is then `false`.
//!
//! # Group commit
//!
//! redb allows one write transaction at a time and a durable commit blocks on `fsync`, so all
//! writes go to one dedicated OS thread over a channel. The thread takes every request that is
//! queued (up to 1024), applies them in order in ONE write transaction, commits once, and only
//! then acknowledges each caller. Each request checks everything that can fail (unknown session,
//! compare-and-append precondition, terminal run, ...) before its first change, so one refused
//! request does not fail the others of its group; if redb itself fails in the middle, the group
//! is replayed one request per transaction. A caller's batch is contiguous and in order. The
//! events are encoded by the caller, before they reach the writer, so the writer does nothing but
//! index look-ups and inserts. Reads do not go through the writer: each read opens its own redb
//! read transaction (a consistent snapshot) on the caller's thread.
//!
//! [`SessionStore::flush`] is one request: the run, its events and the session metadata merge
//! patch ([`asm_ports::merge_patch`]) are checked together and written in the same transaction.
//!
//! Long-poll readers ([`EventQuery::wait`]) register for their session before they read; the
//! writer wakes the sessions it changed after each commit, so no append is missed.
//!
//! # Layout and format version
//!
//! Ids are stored as their 16 bytes; composite keys are fixed-width byte strings whose byte
//! order is the sort order:
//!
//! | table | key | value |
//! |---|---|---|
//! | `asm_meta` | name | `format_version` = 1 |
//! | `asm_sessions` | session | session JSON |
//! | `asm_session_order` | (created_at µs, session) | - (listing order) |
//! | `asm_events` | (session, sequence) | event, compact binary encoding |
//! | `asm_events` | (session, `u64::MAX`) | the session's last sequence (written with the events) |
//! | `asm_event_ids` | event id | (session, sequence) |
//! | `asm_run_starts` | (session, run) | first sequence of the run (`run_id` reads) |
//! | `asm_runs` | run | run JSON |
//! | `asm_session_runs` | (session, created_at, run) | - (`list_runs` order) |
//!
//! A cursor read is one range scan over `(session, sequence)` in a single read transaction:
//! `O(log n + k)` for `k` scanned events. `after`/`before` bound the scan; `kinds`, `since`
//! and `run_id` are checked on each event's header (id, run, timestamp, kind come first in the
//! encoding) before the rest is decoded. A `run_id` read starts at the run's first event
//! (`asm_run_starts`), so reading the latest run of a session scans that run only; a per-event
//! run index was measured to cost one more page write per event under concurrent appenders and
//! was left out. The session head lives at `(session, u64::MAX)` in the events table, next to
//! the newest events, so an append usually rewrites a single leaf for both.
//!
//! Opening a store checks `format_version`: a newer or unknown version, or a redb file with
//! tables but no version record, is [`ErrorCode::MigrationRequired`]; the store never guesses
//! at a layout it does not know. An empty file is initialised with the current version.
//!
//! # Performance notes
//!
//! A durable commit costs an `fsync` plus the pages it rewrites (redb is copy-on-write, 4 KiB
//! pages). Appends to one session share their leaf; the event-id index is keyed by random
//! UUIDs, so each new event usually rewrites one leaf of it. Group commit amortises the `fsync`
//! over every queued request, not the page writes. Reads return owned [`Event`]s; decoding (a
//! few small allocations per event) costs about as much as redb's own range scan.

//! # Errors
//!
//! redb failures become [`ErrorCode::StorageReadFailed`] / [`ErrorCode::StorageWriteFailed`]
//! ([`ErrorCode::StorageError`] for corruption). Opening a file that another process holds is
//! [`ErrorCode::StorageConnectionFailed`] with a message naming the lock; a truncated or damaged
//! file is [`ErrorCode::StorageError`] from [`RedbSessionStore::open`] (with
//! [`RedbOptions::verify_on_open`], the default, every page checksum is verified on open). The
//! store does not panic on bad input or a damaged file.
//!
//! One process owns a store file at a time (`multi_process` is `false`).
//!
//! Architecture invariant: this crate knows the ports and the domain values, nothing of the
//! runtime or of any provider; only this crate knows its storage format.
#![deny(missing_docs)]

mod codec;
mod error;
mod keys;
mod options;
mod schema;
mod waiters;
mod writer;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{Database, ReadTransaction, ReadableDatabase};
use tokio::sync::oneshot;

use asm_core::{Error, ErrorCode, Event, Result, Run, RunId, Session, SessionId};
use asm_ports::{
    EventQuery, ExecutionRecord, Page, RunQuery, SessionQuery, SessionStore, StoreCapabilities, batch_session,
    check_flush_record,
};

pub use options::{Durability, RedbOptions};

use codec::Decoder;
use error::{Op, storage};
use keys::Id;
use waiters::Waiters;
use writer::{Command, Reply, Request, Slot, Writer};

/// A [`SessionStore`] in one redb file, durable by default.
///
/// Cloning is cheap: every clone is a handle to the same open database and writer. The file is
/// closed (and its lock released) when the last handle is dropped; the drop waits for the writer
/// thread to finish the transaction it is committing.
///
/// ```
/// use asm_core::{Event, EventKind, Session};
/// use asm_ports::{EventQuery, SessionStore, SessionStoreExt};
/// use asm_store_redb::RedbSessionStore;
///
/// # let dir = tempfile::tempdir().unwrap();
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = RedbSessionStore::open(dir.path().join("sessions.redb"))?;
/// let session = Session::new("my-agent")?;
/// store.save_session(&session).await?;
///
/// let first = store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await?;
/// assert_eq!(first.sequence, Some(1));
/// // Re-appending the same event is idempotent: same sequence, nothing new stored.
/// assert_eq!(store.append_event(first.clone()).await?.sequence, Some(1));
///
/// store.append_event(Event::new(EventKind::MessageReceived, session.id.clone())).await?;
/// let newer = store.get_events(&session.id, &EventQuery::new().after(1)).await?;
/// assert_eq!(newer.len(), 1);
/// assert_eq!(newer[0].sequence, Some(2));
/// assert!(store.capabilities().durable);
/// # Ok::<(), asm_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct RedbSessionStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    options: RedbOptions,
    waiters: Arc<Waiters>,
    /// `None` only while dropping.
    sender: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel stops the writer; joining it makes sure the file is unlocked when
        // the last handle is gone.
        self.sender.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the redb writer thread panicked");
        }
    }
}

impl RedbSessionStore {
    /// Opens (or creates) the store at `path` with the default [`RedbOptions`].
    ///
    /// # Errors
    /// See [`RedbSessionStore::open_with`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens (or creates) the store at `path`. The parent directory must exist.
    ///
    /// # Errors
    /// - [`ErrorCode::StorageConnectionFailed`] when the file is locked by another process (the
    ///   message says so) or cannot be opened (missing directory, permissions);
    /// - [`ErrorCode::StorageError`] for a truncated or damaged file;
    /// - [`ErrorCode::MigrationRequired`] for a newer or unknown format version.
    pub fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let span = tracing::debug_span!("redb_open", path = %path.display());
        let _entered = span.enter();
        let started = std::time::Instant::now();
        let with_path = |e: Error| e.with_detail("path", path.display().to_string());

        let mut builder = redb::Builder::new();
        builder.set_cache_size(options.cache_bytes).set_check_integrity_on_open(options.verify_on_open);
        let db = match catch_unwind(AssertUnwindSafe(|| builder.create(&path))) {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(error::open(&path, e)),
            Err(payload) => return Err(with_path(error::panicked("open", &*payload))),
        };
        match catch_unwind(AssertUnwindSafe(|| schema::check_or_init(&db))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(with_path(e)),
            Err(payload) => return Err(with_path(error::panicked("the format check", &*payload))),
        }

        let db = Arc::new(db);
        let waiters = Arc::new(Waiters::default());
        let (sender, receiver) = mpsc::channel();
        let writer = Writer::new(Arc::clone(&db), options.durability, Arc::clone(&waiters), receiver);
        let writer =
            std::thread::Builder::new().name("asm-redb-writer".into()).spawn(move || writer.run()).map_err(|e| {
                with_path(Error::new(ErrorCode::StorageError, format!("cannot start the writer thread: {e}")))
            })?;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "redb store opened");
        Ok(Self { inner: Arc::new(Inner { db, path, options, waiters, sender: Some(sender), writer: Some(writer) }) })
    }

    /// The file of the store.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &RedbOptions {
        &self.inner.options
    }

    /// Makes every acknowledged write durable. With [`Durability::Immediate`] they all are
    /// already, and this returns at once (after the writer's current commit).
    ///
    /// # Errors
    /// [`ErrorCode::StorageWriteFailed`] when the commit fails.
    pub async fn sync(&self) -> Result<()> {
        self.submit(Command::Sync).await.map(|_| ())
    }

    async fn submit(&self, command: Command) -> Result<Reply> {
        let (reply, answer) = oneshot::channel();
        let sender = self.inner.sender.as_ref().ok_or_else(error::writer_gone)?;
        sender.send(Request { command, reply }).map_err(|_| error::writer_gone())?;
        answer.await.map_err(|_| error::writer_gone())?
    }

    fn encode_all(&self, events: &[Event]) -> Result<Vec<codec::EncodedEvent>> {
        events.iter().map(|e| codec::encode_event(e, self.inner.options.max_event_bytes)).collect()
    }

    /// Runs a read, turning a redb panic (possible on a damaged file) into an error.
    fn read<T>(&self, what: &'static str, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        match catch_unwind(AssertUnwindSafe(|| {
            let txn = self.inner.db.begin_read().map_err(|e| storage(Op::Read, "begin_read", e))?;
            f(&txn)
        })) {
            Ok(result) => result,
            Err(payload) => Err(error::panicked(what, &*payload)),
        }
    }

    fn read_events(&self, key: &Id, session_id: &SessionId, query: &EventQuery) -> Result<Vec<Event>> {
        self.read("get_events", |txn| {
            let r = |what: &'static str| move |e: redb::StorageError| storage(Op::Read, what, e);
            let events = txn.open_table(schema::EVENTS).map_err(|e| storage(Op::Read, "open events", e))?;
            // No stored sequence reaches u64::MAX, so the range needs no look-up of the head;
            // the session's existence is checked only when nothing matched.
            let range = query.sequence_range(u64::MAX - 1);
            let mut out = Vec::new();
            // A `run_id` read starts at the run's first event (runs of a session are mostly
            // sequential) and checks the run in each event's header, without decoding the rest.
            let (first, run) = match &query.run_id {
                Some(run) => {
                    let run = keys::run_key(run)?;
                    let starts =
                        txn.open_table(schema::RUN_STARTS).map_err(|e| storage(Op::Read, "open run starts", e))?;
                    let start = starts.get(&keys::run_start_key(key, &run)).map_err(r("read run starts"))?;
                    (start.map(|g| range.start.max(g.value())), Some(run))
                }
                None => (Some(range.start), None),
            };
            if let Some(first) = first.filter(|&first| first < range.end) {
                let limit = query.limit.unwrap_or(usize::MAX);
                let filtered = !query.kinds.is_empty() || query.since.is_some() || run.is_some();
                out.reserve(if filtered { limit.min(64) } else { limit.min(1024) });
                let mut decoder = Decoder::new(*key, session_id.clone());
                let low = keys::event_pos(key, first);
                let high = keys::event_pos(key, range.end);
                for entry in events.range::<&keys::EventPos>(&low..&high).map_err(r("read events"))? {
                    let (k, bytes) = entry.map_err(r("read events"))?;
                    let (_, sequence) = keys::split_pos(k.value());
                    let header = decoder.header(bytes.value())?;
                    let matches = (run.is_none() || header.run == run)
                        && (query.kinds.is_empty() || query.kinds.contains(&header.kind))
                        && query.since.is_none_or(|since| header.timestamp >= since);
                    if matches {
                        out.push(decoder.finish(key, sequence, header)?);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            if out.is_empty() && events.get(&keys::head_pos(key)).map_err(r("read head"))?.is_none() {
                return Err(error::session_not_found(session_id));
            }
            Ok(out)
        })
    }

    /// Like [`RedbSessionStore::read_events`], but when nothing matches waits until a commit
    /// makes the query match or `wait` has passed (then returns what matches: usually `[]`).
    async fn read_events_waiting(
        &self,
        key: &Id,
        session_id: &SessionId,
        query: &EventQuery,
        wait: std::time::Duration,
    ) -> Result<Vec<Event>> {
        // A wait too long to be a deadline (`Duration::MAX`) waits without one.
        let deadline = tokio::time::Instant::now().checked_add(wait);
        let registration = self.inner.waiters.register(*key);
        loop {
            // Arm the notification *before* reading, so a commit between the read and the await
            // is never missed.
            let notified = registration.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let events = self.read_events(key, session_id, query)?;
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

/// Builds what an append returns from the input events and where the writer put them.
fn assemble(events: Vec<Event>, slots: Vec<Slot>, key: Id, session_id: &SessionId) -> Result<Vec<Event>> {
    if events.len() != slots.len() {
        return Err(Error::new(ErrorCode::InternalError, "the writer answered a batch with another length"));
    }
    let mut decoder = Decoder::new(key, session_id.clone());
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    for (mut event, slot) in events.into_iter().zip(slots) {
        let stored = match slot {
            Slot::New(sequence) => {
                event.sequence = Some(sequence);
                event
            }
            Slot::Stored { pos, bytes } => {
                let (session, sequence) = keys::split_pos(&pos);
                decoder.decode(&session, sequence, &bytes)?
            }
            Slot::Same(earlier) => out
                .get(earlier)
                .cloned()
                .ok_or_else(|| Error::new(ErrorCode::InternalError, "batch duplicate resolved forward"))?,
        };
        out.push(stored);
    }
    Ok(out)
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| error::corrupt_record(what, &e))
}

fn encode_json<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::new(ErrorCode::InvalidInput, format!("cannot encode the {what}: {e}")))
}

impl fmt::Debug for RedbSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbSessionStore")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.options.durability)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for RedbSessionStore {
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session.id))]
    async fn save_session(&self, session: &Session) -> Result<()> {
        let command = Command::SaveSession {
            key: keys::session_key(&session.id)?,
            created_at_micros: session.created_at.timestamp_micros(),
            json: encode_json("session", session)?,
        };
        self.submit(command).await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %id))]
    async fn get_session(&self, id: &SessionId) -> Result<Session> {
        let key = keys::session_key(id)?;
        self.read("get_session", |txn| {
            let sessions = txn.open_table(schema::SESSIONS).map_err(|e| storage(Op::Read, "open sessions", e))?;
            let guard = sessions.get(&key).map_err(|e| storage(Op::Read, "read session", e))?;
            let guard = guard.ok_or_else(|| error::session_not_found(id))?;
            decode_json("session", guard.value())
        })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Page<Session>> {
        let page_size = query.page_size()?;
        let start = match query.decode_cursor()? {
            Some((micros, id)) => Some(keys::session_order_key(micros, &keys::session_key(&id)?)),
            None => None,
        };
        self.read("list_sessions", |txn| {
            let r = |e: redb::StorageError| storage(Op::Read, "list sessions", e);
            let order =
                txn.open_table(schema::SESSION_ORDER).map_err(|e| storage(Op::Read, "open session order", e))?;
            let sessions = txn.open_table(schema::SESSIONS).map_err(|e| storage(Op::Read, "open sessions", e))?;
            let range = match &start {
                Some(after) => order
                    .range::<&keys::SessionOrderKey>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
                None => order.range::<&keys::SessionOrderKey>(..),
            }
            .map_err(r)?;
            let mut items = Vec::new();
            let mut more = false;
            for entry in range {
                let (k, _) = entry.map_err(r)?;
                let key = keys::session_of_order_key(k.value());
                let Some(bytes) = sessions.get(&key).map_err(r)? else { continue };
                let session: Session = decode_json("session", bytes.value())?;
                if !query.matches(&session) {
                    continue;
                }
                if items.len() == page_size {
                    more = true;
                    break;
                }
                items.push(session);
            }
            let next_cursor = if more { items.last().map(SessionQuery::encode_cursor) } else { None };
            Ok(Page::new(items, next_cursor))
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %id))]
    async fn delete_session(&self, id: &SessionId) -> Result<()> {
        self.submit(Command::DeleteSession { key: keys::session_key(id)?, id: id.clone() }).await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %run.session_id, run_id = %run.id))]
    async fn save_run(&self, run: &Run) -> Result<()> {
        let command = Command::SaveRun {
            run_key: keys::run_key(&run.id)?,
            session_key: keys::session_key(&run.session_id)?,
            run: run.clone(),
            json: encode_json("run", run)?,
        };
        self.submit(command).await.map(|_| ())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(run_id = %id))]
    async fn get_run(&self, id: &RunId) -> Result<Run> {
        let key = keys::run_key(id)?;
        self.read("get_run", |txn| {
            let runs = txn.open_table(schema::RUNS).map_err(|e| storage(Op::Read, "open runs", e))?;
            let guard = runs.get(&key).map_err(|e| storage(Op::Read, "read run", e))?;
            let guard = guard.ok_or_else(|| error::run_not_found(id))?;
            decode_json("run", guard.value())
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn list_runs(&self, session_id: &SessionId, query: &RunQuery) -> Result<Vec<Run>> {
        if query.limit == Some(0) {
            return Err(Error::new(ErrorCode::InvalidInput, "run query limit must be at least 1"));
        }
        let key = keys::session_key(session_id)?;
        self.read("list_runs", |txn| {
            let r = |e: redb::StorageError| storage(Op::Read, "list runs", e);
            let events = txn.open_table(schema::EVENTS).map_err(|e| storage(Op::Read, "open events", e))?;
            if events.get(&keys::head_pos(&key)).map_err(r)?.is_none() {
                return Err(error::session_not_found(session_id));
            }
            let order = txn.open_table(schema::SESSION_RUNS).map_err(|e| storage(Op::Read, "open session runs", e))?;
            let runs = txn.open_table(schema::RUNS).map_err(|e| storage(Op::Read, "open runs", e))?;
            let (low, high) = keys::prefix_bounds::<44>(&key);
            let limit = query.limit.unwrap_or(usize::MAX);
            let mut out = Vec::new();
            for entry in order.range::<&keys::SessionRunKey>(&low..=&high).map_err(r)? {
                let (k, _) = entry.map_err(r)?;
                let run_key = keys::run_of_session_run_key(k.value());
                let Some(bytes) = runs.get(&run_key).map_err(r)? else { continue };
                let run: Run = decode_json("run", bytes.value())?;
                if query.status.is_none_or(|status| run.status == status) {
                    out.push(run);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id, count = events.len()))]
    async fn append(&self, events: Vec<Event>, expected_last_sequence: Option<u64>) -> Result<Vec<Event>> {
        let session_id = batch_session(&events)?.clone();
        tracing::Span::current().record("session_id", tracing::field::display(&session_id));
        let key = keys::session_key(&session_id)?;
        let encoded = self.encode_all(&events)?;
        let command = Command::Append { key, id: session_id.clone(), events: encoded, expected_last_sequence };
        match self.submit(command).await? {
            Reply::Appended(slots) => assemble(events, slots, key, &session_id),
            Reply::Done => Err(Error::new(ErrorCode::InternalError, "the writer answered an append without events")),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn get_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<Event>> {
        query.validate()?;
        let key = keys::session_key(session_id)?;
        match query.wait.filter(|wait| !wait.is_zero()) {
            Some(wait) => self.read_events_waiting(&key, session_id, query, wait).await,
            None => self.read_events(&key, session_id, query),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn latest_sequence(&self, session_id: &SessionId) -> Result<u64> {
        let key = keys::session_key(session_id)?;
        self.read("latest_sequence", |txn| {
            let events = txn.open_table(schema::EVENTS).map_err(|e| storage(Op::Read, "open events", e))?;
            let head = events.get(&keys::head_pos(&key)).map_err(|e| storage(Op::Read, "read head", e))?;
            let head = head.ok_or_else(|| error::session_not_found(session_id))?;
            keys::decode_head(head.value())
        })
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(session_id = %record.run.session_id, run_id = %record.run.id, count = record.events.len())
    )]
    async fn flush(&self, record: ExecutionRecord) -> Result<Vec<Event>> {
        check_flush_record(&record)?;
        let ExecutionRecord { run, events, session_metadata, expected_status, .. } = record;
        let session_key = keys::session_key(&run.session_id)?;
        let encoded = self.encode_all(&events)?;
        let session_id = run.session_id.clone();
        let command = Command::Flush {
            session_key,
            run_key: keys::run_key(&run.id)?,
            run_json: encode_json("run", &run)?,
            run,
            events: encoded,
            metadata: session_metadata,
            expected_status,
        };
        match self.submit(command).await? {
            Reply::Appended(slots) => assemble(events, slots, session_key, &session_id),
            Reply::Done => Err(Error::new(ErrorCode::InternalError, "the writer answered a flush without events")),
        }
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::new()
            .long_poll(true)
            .durable(self.inner.options.durability == Durability::Immediate)
            .multi_process(false)
    }
}
