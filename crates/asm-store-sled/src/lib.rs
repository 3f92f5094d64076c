//! Embedded [`SessionStore`] for agent-session-manager on [sled] 0.34, with group commit.
//!
//! [`SledSessionStore`] keeps sessions, runs and the per-session event logs in one sled database
//! directory. It passes the store conformance suite of `asm-testkit`, supports long-poll reads
//! (in-process notification on commit) and batches concurrent writers into one transaction.
//!
//! # Durability: what sled 0.34 does and does not promise
//!
//! - **Crash-consistent after flush.** Every write request becomes part of one atomic sled
//!   transaction; sled recovers a prefix of committed transactions, never half of one. With
//!   [`Durability::Immediate`] (the default) a caller is acknowledged only after
//!   `sled::Db::flush` returned, so an acknowledged write survives a crash or `SIGKILL` of the
//!   process (this is tested by killing a writing child process at random moments).
//! - **Not power-loss durable.** On Linux, sled 0.34 makes its log stable with
//!   `sync_file_range`, which does not flush the drive's volatile write cache nor file metadata,
//!   and sled 0.34 has known recovery bugs upstream. A power failure or kernel crash may lose
//!   acknowledged writes (the store still recovers to a consistent prefix in the cases sled
//!   handles). Use the redb store when acknowledged writes must survive power loss.
//! - [`Durability::Eventual`] acknowledges after the transaction is applied in memory; sled
//!   writes it out within its background flush interval (500 ms). A crash may lose the last
//!   acknowledged writes, never part of one.
//!
//! [`StoreCapabilities::durable`] is `true` only with [`Durability::Immediate`], in the sense
//! above (process crashes). `multi_process` is `false`: sled takes an exclusive file lock, and
//! a second process gets a [`ErrorCode::StorageError`] whose message names the lock.
//!
//! # Damaged files
//!
//! sled's log is a sequence of checksummed messages. When a message is truncated or damaged,
//! sled takes it for a torn write and recovers the transactions before it: the store opens as a
//! consistent prefix of what was written, and the data after the damage is gone without an
//! error (the store cannot tell this from a crash before the writes). Damage sled cannot step
//! over (its `conf` file, headers) is a typed error on open: [`ErrorCode::StorageReadFailed`]
//! (detail `corrupted: true`) or [`ErrorCode::StorageError`]. A database whose log is damaged
//! from its very start would be recovered *empty*; a marker file written at initialisation
//! (`asm_store_sled.initialised`) turns that into [`ErrorCode::StorageReadFailed`] instead of a
//! silently new store. Panics inside sled on open or on reads are caught and reported the same
//! way.
//!
//! # Layout (format version 1)
//!
//! One sled tree per table; ids are fixed-width, numbers big-endian, so every read is a range
//! scan (`O(log n + k)`):
//!
//! | tree            | key                                   | value                          |
//! |-----------------|---------------------------------------|--------------------------------|
//! | `sessions`      | session id                            | order key + number + JSON      |
//! | `session_order` | `created_at` µs + session id          | –                              |
//! | `last_sequence` | session number                        | last sequence (u64 BE)         |
//! | `events`        | session number + sequence (u64 BE)    | event (compact binary)         |
//! | `event_ids`     | event id                              | session id + number + sequence |
//! | `run_events`    | session number + run id + sequence    | –                              |
//! | `runs`          | run id                                | session id + run JSON          |
//! | `session_runs`  | session id + `created_at` + run id    | –                              |
//! | `meta`          | `next_session_number`                 | u64 BE                         |
//!
//! A session number (u64) is given to a session id when it is first saved and never reused, so
//! event keys are 16 bytes (sled stores keys up to 22 bytes inline). Events are stored in a
//! compact binary form, not JSON, which decodes several times faster and keeps every number
//! exactly.
//!
//! The last sequence of a session is written in the same transaction as its events. The
//! default tree holds the format version under [`FORMAT_VERSION_KEY`]; opening a database
//! whose version is newer or unknown, or a non-empty database without one, fails with
//! [`ErrorCode::MigrationRequired`] instead of misreading it.
//!
//! # Group commit
//!
//! Reads go straight to the trees. Writes go to one writer thread over a channel: it drains
//! every pending request, validates and applies each one on a staging overlay (a request that
//! fails is left out without failing the others), commits the group in ONE multi-tree
//! transaction, flushes (with [`Durability::Immediate`]) and then acknowledges each caller. A
//! caller's batch is contiguous and in order. Events are serialised, and their size checked, on
//! the caller's task before they reach the writer.
//!
//! # Example
//!
//! ```
//! use asm_core::{Event, EventKind, Session};
//! use asm_ports::{EventQuery, SessionStore, SessionStoreExt};
//! use asm_store_sled::{Durability, SledOptions, SledSessionStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = SledSessionStore::open_with(dir.path().join("db"), SledOptions::new().durability(Durability::Immediate))?;
//! let session = Session::new("my-agent")?;
//! store.save_session(&session).await?;
//!
//! let first = store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await?;
//! assert_eq!(first.sequence, Some(1));
//! // Re-appending the same event is idempotent.
//! assert_eq!(store.append_event(first.clone()).await?.sequence, Some(1));
//! store.append_event(Event::new(EventKind::MessageReceived, session.id.clone())).await?;
//!
//! let newer = store.get_events(&session.id, &EventQuery::new().after(1)).await?;
//! assert_eq!(newer.len(), 1);
//! assert_eq!(newer[0].sequence, Some(2));
//! # Ok::<(), asm_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! Architecture invariant: this crate knows the ports and the domain values, nothing of the
//! runtime or of any provider; only this crate knows its storage format.
#![deny(missing_docs)]

mod codec;
mod errors;
mod waiters;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use sled::IVec;

use asm_core::{Error, ErrorCode, Event, JsonMap, Result, Run, RunId, Session, SessionId};
use asm_ports::{
    EventQuery, ExecutionRecord, Page, RunQuery, SessionQuery, SessionStore, StoreCapabilities, batch_session,
    check_flush_record,
};

use errors::{guard, open_err, read_err, run_not_found, session_not_found, writer_stopped};
use waiters::Waiters;
use writer::{Op, Prepared, Reply, Request, Resolved, T, Trees, Writer};

/// The storage format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The key of the format version record (a `u32`, big-endian) in sled's default tree.
pub const FORMAT_VERSION_KEY: &[u8] = b"asm_store_sled.format_version";

/// The file in the database directory that says the store was initialised.
const MARKER_FILE: &str = "asm_store_sled.initialised";

/// The name of sled's default tree, which holds nothing but the format record.
const DEFAULT_TREE: &[u8] = b"__sled__default";

/// How long sled may keep acknowledged writes in memory with [`Durability::Eventual`].
const EVENTUAL_FLUSH_MS: u64 = 500;

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// After the group's transaction has been flushed to the log (`sled::Db::flush`): survives a
    /// crash of the process, not necessarily a power loss (see the crate docs). The default.
    #[default]
    Immediate,
    /// After the group's transaction is applied; sled flushes in the background within 500 ms.
    /// A crash may lose recently acknowledged writes (whole transactions only).
    Eventual,
}

/// Options of [`SledSessionStore::open_with`].
///
/// ```
/// use asm_store_sled::{Durability, SledOptions};
/// let options = SledOptions::new().durability(Durability::Eventual).max_event_bytes(1 << 20);
/// assert_eq!(options.durability, Durability::Eventual);
/// assert_eq!(SledOptions::default().max_event_bytes, SledOptions::DEFAULT_MAX_EVENT_BYTES);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SledOptions {
    /// When writes are acknowledged. Default [`Durability::Immediate`].
    pub durability: Durability,
    /// The largest event accepted, in bytes of its stored form (about the size of its JSON).
    /// A larger event fails its whole batch with [`ErrorCode::InvalidInput`]. Default 16 MiB.
    pub max_event_bytes: usize,
}

impl SledOptions {
    /// The default of [`SledOptions::max_event_bytes`]: 16 MiB.
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 << 20;

    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`SledOptions::durability`].
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`SledOptions::max_event_bytes`].
    #[must_use]
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }
}

impl Default for SledOptions {
    fn default() -> Self {
        Self { durability: Durability::default(), max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES }
    }
}

/// A [`SessionStore`] in a sled database directory. See the [crate docs](crate) for the
/// durability guarantees, the layout and the group commit.
///
/// Cloning is cheap: every clone is a handle to the same open database. The database is closed
/// (and its file lock released) when the last handle is dropped.
#[derive(Clone)]
pub struct SledSessionStore {
    inner: Arc<Inner>,
}

struct Inner {
    trees: Trees,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    waiters: Arc<Waiters>,
    options: SledOptions,
    path: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered what is queued.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the sled writer thread panicked");
        }
    }
}

impl fmt::Debug for SledSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledSessionStore")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .field("long_poll_sessions", &self.inner.waiters.len())
            .finish_non_exhaustive()
    }
}

impl SledSessionStore {
    /// Opens (or creates) the store in directory `path` with the default [`SledOptions`].
    ///
    /// # Errors
    /// See [`SledSessionStore::open_with`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SledOptions::default())
    }

    /// Opens (or creates) the store in directory `path`.
    ///
    /// # Errors
    /// - [`ErrorCode::StorageError`] whose message names the file lock when another process
    ///   has the database open, and for other failures to open it;
    /// - [`ErrorCode::StorageReadFailed`] (detail `corrupted: true`) when sled finds the files
    ///   corrupted (also when sled panics on them: the panic is caught);
    /// - [`ErrorCode::MigrationRequired`] when the database was written in a newer or unknown
    ///   format, or is a non-empty sled database without a format record.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %path.as_ref().display()))]
    pub fn open_with(path: impl AsRef<Path>, options: SledOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let config = sled::Config::new().path(&path).flush_every_ms(Some(EVENTUAL_FLUSH_MS));
        let db = guard(ErrorCode::StorageReadFailed, "opening the database", || {
            config.open().map_err(|e| open_err(&path, e))
        })?;
        guard(ErrorCode::StorageReadFailed, "checking the format version", || check_format(&db, &path))?;
        let trees = guard(ErrorCode::StorageReadFailed, "opening the trees", || {
            Trees::open(&db).map_err(|e| open_err(&path, e))
        })?;
        drop(db);

        let waiters = Arc::new(Waiters::default());
        let (requests, receiver) = mpsc::channel();
        let writer = Writer { trees: trees.clone(), waiters: Arc::clone(&waiters), durability: options.durability };
        let writer = std::thread::Builder::new()
            .name("asm-sled-writer".to_owned())
            .spawn(move || writer.run(&receiver))
            .map_err(|e| {
                Error::new(ErrorCode::StorageError, format!("cannot start the sled writer thread: {e}")).with_source(e)
            })?;
        tracing::debug!(durability = ?options.durability, "sled store opened");
        Ok(Self {
            inner: Arc::new(Inner { trees, requests: Some(requests), writer: Some(writer), waiters, options, path }),
        })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SledOptions {
        &self.inner.options
    }

    /// Flushes everything written so far to disk (blocking). Only useful with
    /// [`Durability::Eventual`]; with [`Durability::Immediate`] every acknowledged write is
    /// already flushed.
    ///
    /// # Errors
    /// [`ErrorCode::StorageWriteFailed`] when sled cannot write its log.
    pub fn sync(&self) -> Result<()> {
        guard(ErrorCode::StorageWriteFailed, "flushing", || {
            self.inner.trees.db.flush().map(drop).map_err(errors::write_err)
        })
    }

    async fn submit(&self, op: Op) -> Result<Reply> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let requests = self.inner.requests.as_ref().ok_or_else(writer_stopped)?;
        requests.send(Request { op, reply }).map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }

    /// Serialises a batch and checks every event's size.
    fn prepare(&self, events: &[Event]) -> Result<Vec<Prepared>> {
        let max = self.inner.options.max_event_bytes;
        events
            .iter()
            .map(|event| {
                asm_ports::check_event_size(event, max)?;
                let bytes = codec::encode_event(event)?;
                Ok(Prepared { id: event.id.clone(), run_id: event.run_id.clone(), bytes: IVec::from(bytes) })
            })
            .collect()
    }

    fn session_exists(&self, id: &SessionId) -> Result<()> {
        match self.inner.trees.tree(T::Sessions).contains_key(id.as_str().as_bytes()).map_err(read_err)? {
            true => Ok(()),
            false => Err(session_not_found(id)),
        }
    }

    /// The internal number of a stored session (see the layout).
    fn session_number(&self, id: &SessionId) -> Result<u64> {
        match self.inner.trees.tree(T::Sessions).get(id.as_str().as_bytes()).map_err(read_err)? {
            Some(record) => codec::session_record_number(&record),
            None => Err(session_not_found(id)),
        }
    }

    /// The matching events, without waiting.
    fn read_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<Event>> {
        guard(ErrorCode::StorageReadFailed, "reading events", || {
            let number = self.session_number(session_id)?;
            let first = query.after.map_or(1, |a| a.saturating_add(1)).max(1);
            let end = query.before.unwrap_or(u64::MAX);
            if first >= end {
                return Ok(Vec::new());
            }
            let limit = query.limit.unwrap_or(usize::MAX);
            let filtered = !query.kinds.is_empty() || query.since.is_some();
            let trees = &self.inner.trees;
            let events = trees.tree(T::Events);
            let mut out = Vec::new();
            match &query.run_id {
                Some(run) => {
                    let range = codec::run_event_key(number, run, first)..codec::run_event_key(number, run, end);
                    for item in trees.tree(T::RunEvents).range(range) {
                        let (key, _) = item.map_err(read_err)?;
                        let sequence = codec::trailing_sequence(&key)?;
                        // Gone only if the session was deleted meanwhile.
                        let Some(bytes) = events.get(codec::event_key(number, sequence)).map_err(read_err)? else {
                            continue;
                        };
                        if let Some(event) = decode_matching(&bytes, session_id, sequence, query)? {
                            out.push(event);
                            if out.len() >= limit {
                                break;
                            }
                        }
                    }
                }
                None if !filtered => {
                    // Unfiltered: exactly the first `limit` records are the answer. Collect them
                    // first, decode after, so sled's and the decoder's allocations do not
                    // interleave (with glibc's allocator that halves the cost of a read).
                    let range = codec::event_key(number, first)..codec::event_key(number, end);
                    out.reserve_exact(limit.min(256));
                    let mut raw = Vec::with_capacity(limit.min(256));
                    for item in events.range(range).take(limit) {
                        let (key, bytes) = item.map_err(read_err)?;
                        raw.push((codec::trailing_sequence(&key)?, bytes));
                    }
                    for (sequence, bytes) in raw {
                        out.push(codec::decode_event(&bytes, session_id.clone(), sequence)?);
                    }
                }
                None => {
                    let range = codec::event_key(number, first)..codec::event_key(number, end);
                    for item in events.range(range) {
                        let (key, bytes) = item.map_err(read_err)?;
                        let sequence = codec::trailing_sequence(&key)?;
                        if let Some(event) = decode_matching(&bytes, session_id, sequence, query)? {
                            out.push(event);
                            if out.len() >= limit {
                                break;
                            }
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    async fn read_waiting(&self, session_id: &SessionId, query: &EventQuery, wait: Duration) -> Result<Vec<Event>> {
        let now = tokio::time::Instant::now();
        // A wait too long to represent is as good as forever.
        let deadline = now.checked_add(wait).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        let registration = self.inner.waiters.register(session_id);
        loop {
            // Register for the next notification *before* looking, so a commit between the look
            // and the await is never missed.
            let notified = registration.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let events = self.read_events(session_id, query)?;
            if !events.is_empty() {
                return Ok(events);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}

/// Decodes a stored event if it passes the query's `kinds` and `since` filters (the range or
/// the run index already applied `after`, `before` and `run_id`); the kind and timestamp are
/// checked before the rest is decoded.
fn decode_matching(bytes: &[u8], session_id: &SessionId, sequence: u64, query: &EventQuery) -> Result<Option<Event>> {
    if !query.kinds.is_empty() || query.since.is_some() {
        let header = codec::decode_event_header(bytes)?;
        if !query.kinds.is_empty() && !query.kinds.contains(&header.kind) {
            return Ok(None);
        }
        if query.since.is_some_and(|since| header.timestamp < since) {
            return Ok(None);
        }
    }
    let event = codec::decode_event(bytes, session_id.clone(), sequence)?;
    Ok(query.matches(&event).then_some(event))
}

/// Applies a flush's session metadata patch (JSON merge patch, as every store does).
fn apply_session_metadata(metadata: &mut JsonMap, patch: &JsonMap) {
    asm_ports::merge_patch(metadata, patch);
}

/// Checks (or, in a new database, writes) the format version record.
///
/// Besides the record inside sled, the directory gets a marker file once the record is
/// durable. sled recovers a database whose log was truncated or damaged at its start as an
/// *empty* database; the marker tells that apart from a new one, so lost data is reported
/// instead of silently starting over.
fn check_format(db: &sled::Db, path: &Path) -> Result<()> {
    let migration = |message: String| Error::new(ErrorCode::MigrationRequired, message);
    match db.get(FORMAT_VERSION_KEY).map_err(read_err)? {
        Some(value) => {
            let version = <[u8; 4]>::try_from(value.as_ref()).map(u32::from_be_bytes).map_err(|_| {
                migration(format!("the sled store's format record is unreadable ({} bytes)", value.len()))
                    .with_detail("found_version", serde_json::Value::Null)
            })?;
            if version == FORMAT_VERSION {
                return write_marker(path);
            }
            let why = if version > FORMAT_VERSION { "a newer" } else { "an unknown" };
            Err(migration(format!(
                "the sled store was written in {why} format (version {version}); this build reads version \
                 {FORMAT_VERSION}"
            ))
            .with_detail("found_version", version)
            .with_detail("supported_version", FORMAT_VERSION))
        }
        None => {
            let mut non_empty = !db.is_empty();
            for name in db.tree_names() {
                if non_empty {
                    break;
                }
                if name.as_ref() != DEFAULT_TREE {
                    non_empty = !db.open_tree(&name).map_err(read_err)?.is_empty();
                }
            }
            let marker = path.join(MARKER_FILE);
            if !non_empty && marker.exists() {
                return Err(Error::new(
                    ErrorCode::StorageReadFailed,
                    format!(
                        "the sled store at {} was initialised ({} exists) but sled recovered an empty database: its \
                         files are truncated or corrupted",
                        path.display(),
                        MARKER_FILE
                    ),
                )
                .with_detail("corrupted", true)
                .with_detail("path", path.display().to_string()));
            }
            if non_empty {
                return Err(migration(
                    "the sled database holds data but no format record: it was not written by this store, or by a \
                     version before format records"
                        .to_owned(),
                ));
            }
            db.insert(FORMAT_VERSION_KEY, &FORMAT_VERSION.to_be_bytes()[..]).map_err(errors::write_err)?;
            db.flush().map_err(errors::write_err)?;
            write_marker(path)
        }
    }
}

/// Writes the marker file (see [`check_format`]) if it is not there yet.
fn write_marker(path: &Path) -> Result<()> {
    let marker = path.join(MARKER_FILE);
    if marker.exists() {
        return Ok(());
    }
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&marker)?;
        std::io::Write::write_all(&mut file, format!("asm-store-sled format {FORMAT_VERSION}\n").as_bytes())?;
        file.sync_all()
    };
    write().map_err(|e| {
        Error::new(ErrorCode::StorageWriteFailed, format!("cannot write {}: {e}", marker.display())).with_source(e)
    })
}

/// Rebuilds the caller's batch from the writer's answer.
fn assemble(events: Vec<Event>, resolved: Vec<Resolved>) -> Result<Vec<Event>> {
    if events.len() != resolved.len() {
        return Err(Error::new(ErrorCode::InternalError, "the sled writer answered for another batch size"));
    }
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    for (mut event, resolved) in events.into_iter().zip(resolved) {
        let stored = match resolved {
            Resolved::New(sequence) => {
                event.sequence = Some(sequence);
                event
            }
            Resolved::Stored { session, sequence, bytes } => codec::decode_event(&bytes, session, sequence)?,
            Resolved::SameAs(earlier) => out
                .get(earlier)
                .cloned()
                .ok_or_else(|| Error::new(ErrorCode::InternalError, "batch duplicate resolved forward"))?,
        };
        out.push(stored);
    }
    Ok(out)
}

fn appended(reply: Reply) -> Result<Vec<Resolved>> {
    match reply {
        Reply::Appended(resolved) => Ok(resolved),
        Reply::Done => Err(Error::new(ErrorCode::InternalError, "the sled writer answered an append without events")),
    }
}

#[async_trait]
impl SessionStore for SledSessionStore {
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session.id))]
    async fn save_session(&self, session: &Session) -> Result<()> {
        let record = codec::encode_session(session, 0)?;
        self.submit(Op::SaveSession { id: session.id.clone(), record }).await.map(drop)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %id))]
    async fn get_session(&self, id: &SessionId) -> Result<Session> {
        guard(ErrorCode::StorageReadFailed, "reading a session", || {
            let record = self.inner.trees.tree(T::Sessions).get(id.as_str().as_bytes()).map_err(read_err)?;
            codec::decode_session(&record.ok_or_else(|| session_not_found(id))?)
        })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Page<Session>> {
        let page_size = query.page_size()?;
        let start = query.decode_cursor()?;
        guard(ErrorCode::StorageReadFailed, "listing sessions", || {
            let trees = &self.inner.trees;
            let sessions = trees.tree(T::Sessions);
            let order = trees.tree(T::SessionOrder);
            let keys = match &start {
                Some((micros, id)) => {
                    let after = codec::session_order_key(&codec::order_key(*micros), id.as_str().as_bytes());
                    order.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                }
                None => order.iter(),
            };
            let mut items = Vec::new();
            let mut more = false;
            for item in keys {
                let (key, _) = item.map_err(read_err)?;
                let id = key.get(codec::ORDER_LEN..).ok_or_else(|| codec::corrupt("a session order key too short"))?;
                // Absent only if deleted since the key was read.
                let Some(record) = sessions.get(id).map_err(read_err)? else { continue };
                let session = codec::decode_session(&record)?;
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
        self.submit(Op::DeleteSession(id.clone())).await.map(drop)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %run.session_id, run_id = %run.id))]
    async fn save_run(&self, run: &Run) -> Result<()> {
        let record = IVec::from(codec::encode_run(run)?);
        self.submit(Op::SaveRun { run: Box::new(run.clone()), record }).await.map(drop)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(run_id = %id))]
    async fn get_run(&self, id: &RunId) -> Result<Run> {
        guard(ErrorCode::StorageReadFailed, "reading a run", || {
            let record = self.inner.trees.tree(T::Runs).get(id.as_str().as_bytes()).map_err(read_err)?;
            codec::decode_run(&record.ok_or_else(|| run_not_found(id))?)
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn list_runs(&self, session_id: &SessionId, query: &RunQuery) -> Result<Vec<Run>> {
        if query.limit == Some(0) {
            return Err(Error::new(ErrorCode::InvalidInput, "run query limit must be at least 1"));
        }
        guard(ErrorCode::StorageReadFailed, "listing runs", || {
            self.session_exists(session_id)?;
            let trees = &self.inner.trees;
            let runs = trees.tree(T::Runs);
            let limit = query.limit.unwrap_or(usize::MAX);
            let mut out = Vec::new();
            for item in trees.tree(T::SessionRuns).scan_prefix(session_id.as_str().as_bytes()) {
                let (key, _) = item.map_err(read_err)?;
                let run_key = key
                    .get(codec::ID_LEN + codec::TIME_LEN..)
                    .ok_or_else(|| codec::corrupt("a run index key too short"))?;
                let Some(record) = runs.get(run_key).map_err(read_err)? else { continue };
                let run = codec::decode_run(&record)?;
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
        let session = batch_session(&events)?.clone();
        tracing::Span::current().record("session_id", tracing::field::display(&session));
        let prepared = self.prepare(&events)?;
        let reply = self.submit(Op::Append { session, events: prepared, expected: expected_last_sequence }).await?;
        assemble(events, appended(reply)?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn get_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<Event>> {
        query.validate()?;
        match query.wait.filter(|wait| !wait.is_zero()) {
            Some(wait) => self.read_waiting(session_id, query, wait).await,
            None => self.read_events(session_id, query),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn latest_sequence(&self, session_id: &SessionId) -> Result<u64> {
        guard(ErrorCode::StorageReadFailed, "reading the latest sequence", || {
            let number = self.session_number(session_id)?;
            match self.inner.trees.tree(T::LastSequence).get(number.to_be_bytes()).map_err(read_err)? {
                Some(value) => codec::decode_u64(&value),
                None => Ok(0),
            }
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
        let prepared = self.prepare(&events)?;
        let run_record = IVec::from(codec::encode_run(&run)?);
        let op = Op::Flush {
            run: Box::new(run),
            record: run_record,
            events: prepared,
            patch: session_metadata,
            expected_status,
        };
        let reply = self.submit(op).await?;
        assemble(events, appended(reply)?)
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::new()
            .long_poll(true)
            .durable(self.inner.options.durability == Durability::Immediate)
            .multi_process(false)
    }
}
