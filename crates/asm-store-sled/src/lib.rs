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
//! - [`Durability::Eventual`] acknowledges after the transaction is applied in memory; the
//!   writer flushes at least every `asm_store_kv::EVENTUAL_SYNC_INTERVAL` (and sled in the
//!   background every 500 ms). A crash may lose the last acknowledged writes, never part of one.
//!
//! [`StoreCapabilities::durable`] is `true` only with [`Durability::Immediate`], in the sense
//! above (process crashes). `multi_process` is `false`: sled takes an exclusive file lock, and
//! a second process (or a second open in this one) gets a
//! [`ErrorCode::StorageConnectionFailed`] whose message names the lock.
//!
//! # Damaged files
//!
//! sled's log is a sequence of checksummed messages. When a message is truncated or damaged,
//! sled takes it for a torn write and recovers the transactions before it: the store opens as a
//! consistent prefix of what was written, and the data after the damage is gone without an
//! error (the store cannot tell this from a crash before the writes). Damage sled cannot step
//! over (its `conf` file, headers) is a typed error on open: corruption is
//! [`ErrorCode::StorageError`] with detail `corrupted: true`, as in every store on
//! `asm-store-kv` (one error mapping: `asm_store_kv::KvError`). A database whose log is damaged
//! from its very start would be recovered *empty*; a marker file written at initialisation
//! (`asm_store_sled.initialised`) turns that into the same corruption error instead of a
//! silently new store. Panics inside sled on open or on reads are caught and reported the same
//! way.
//!
//! # Engine, layout and format version
//!
//! Everything but sled itself is the shared KV engine of `asm-store-kv`: group commit on one
//! writer thread, request validation, the event codec, the key layout, long-poll wake-ups, the
//! limits and the error codes are the same as in the redb store. This crate maps the layout's
//! tables onto sled trees named `asm_kv_<table>`; a write transaction is a staging overlay over
//! the trees (a request sees the writes of the requests before it in its group), written in ONE
//! multi-tree sled transaction and then flushed (with [`Durability::Immediate`]) before any
//! caller of the group is acknowledged. Reads go straight to the trees (sled has no multi-tree
//! snapshots; every write is atomic across trees).
//!
//! The default tree holds the format version under [`FORMAT_VERSION_KEY`] (a `u32`,
//! big-endian), where the layout before the shared engine (format version 1) kept it too;
//! version 2 (the layout without the commit-order log) is upgraded in place; opening a
//! database whose version is newer, older or unknown, or a non-empty database without one,
//! fails with [`ErrorCode::MigrationRequired`] instead of misreading it.
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
//! Architecture invariant: this crate knows the ports, the domain values and the engine trait
//! of `asm-store-kv`, nothing of the runtime or of any provider; only this crate knows sled
//! (the layout above it is `asm-store-kv`'s).
//!
//! [`SessionStore`]: asm_ports::SessionStore
//! [`StoreCapabilities::durable`]: asm_ports::StoreCapabilities::durable
//! [`ErrorCode::MigrationRequired`]: asm_core::ErrorCode::MigrationRequired
//! [`ErrorCode::StorageError`]: asm_core::ErrorCode::StorageError
//! [`ErrorCode::StorageConnectionFailed`]: asm_core::ErrorCode::StorageConnectionFailed
#![deny(missing_docs)]

mod engine;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use asm_core::Result;
use asm_store_kv::{KvError, KvOptions, KvStore};

pub use asm_store_kv::Durability;

use engine::SledEngine;

/// The storage format this build reads and writes (the layout of `asm-store-kv`).
pub const FORMAT_VERSION: u32 = 3;
const _: () = assert!(FORMAT_VERSION as u64 == asm_store_kv::FORMAT_VERSION);

/// The key of the format version record (a `u32`, big-endian) in sled's default tree.
pub const FORMAT_VERSION_KEY: &[u8] = engine::FORMAT_VERSION_KEY;

/// The file in the database directory that says the store was initialised.
const MARKER_FILE: &str = "asm_store_sled.initialised";

/// sled's own background flush interval (with [`Durability::Eventual`] the writer also flushes
/// at least every `asm_store_kv::EVENTUAL_SYNC_INTERVAL`).
const BACKGROUND_FLUSH_MS: u64 = 500;

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
    /// The largest event accepted, in bytes as [`asm_ports::backend::event_size`] measures it (about the
    /// size of its JSON). A larger event fails its whole batch with
    /// [`ErrorCode::InvalidInput`](asm_core::ErrorCode::InvalidInput). Default 16 MiB.
    pub max_event_bytes: usize,
    /// New events go to a commit-order log and are kept decoded in memory (reads of a session's
    /// newest events are served from there); once the log holds this many events (or 16 MiB),
    /// they are compacted into the per-session trees. Default 8192.
    pub compact_after_events: usize,
}

impl SledOptions {
    /// The default of [`SledOptions::max_event_bytes`]: 16 MiB (the cap of every store on
    /// `asm-store-kv`).
    pub const DEFAULT_MAX_EVENT_BYTES: usize = asm_store_kv::DEFAULT_MAX_EVENT_BYTES;

    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    asm_core::builder_setters! {
        /// Sets [`SledOptions::durability`].
        fn durability(durability: Durability) { durability = durability }
        /// Sets [`SledOptions::max_event_bytes`].
        fn max_event_bytes(bytes: usize) { max_event_bytes = bytes }
        /// Sets [`SledOptions::compact_after_events`] (at least 1).
        fn compact_after_events(events: usize) { compact_after_events = events.max(1) }
    }

    /// What the shared engine needs of these options.
    fn kv(&self) -> KvOptions {
        KvOptions::new(self.durability, self.max_event_bytes)
            .compact_after(self.compact_after_events, asm_store_kv::COMPACT_BYTES)
    }
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES,
            compact_after_events: asm_store_kv::COMPACT_EVENTS,
        }
    }
}

/// A [`SessionStore`](asm_ports::SessionStore) in a sled database directory. See the
/// [crate docs](crate) for the durability guarantees, the layout and the group commit.
///
/// Cloning is cheap: every clone is a handle to the same open database. The database is closed
/// (and its file lock released) when the last handle is dropped.
#[derive(Clone)]
pub struct SledSessionStore {
    inner: KvStore<SledEngine>,
}

asm_store_kv::forward_session_store!(SledSessionStore, inner);

impl fmt::Debug for SledSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledSessionStore")
            .field("path", &self.path())
            .field("options", self.options())
            .finish_non_exhaustive()
    }
}

/// Runs `f`, turning a panic inside sled into a corruption error (sled 0.34 panics on some
/// corruptions instead of returning an error).
fn guard<T>(what: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(KvError::panicked(what, &*payload).into()),
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
    /// - [`ErrorCode::StorageConnectionFailed`](asm_core::ErrorCode::StorageConnectionFailed),
    ///   whose message names the file lock, when another process (or another handle in this
    ///   one) has the database open, and when the directory cannot be opened;
    /// - [`ErrorCode::StorageError`](asm_core::ErrorCode::StorageError) (detail `corrupted:
    ///   true`) when sled finds the files corrupted (also when sled panics on them: the panic is
    ///   caught);
    /// - [`ErrorCode::MigrationRequired`](asm_core::ErrorCode::MigrationRequired) when the
    ///   database was written in a newer, older or unknown format, or is a non-empty sled
    ///   database without a format record.
    #[tracing::instrument(level = "debug", skip_all, fields(path = %path.as_ref().display()))]
    pub fn open_with(path: impl AsRef<Path>, options: SledOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let with_path = |e: asm_core::Error| e.with_detail("path", path.display().to_string());
        let config = sled::Config::new().path(&path).flush_every_ms(Some(BACKGROUND_FLUSH_MS));
        let db = open_waiting_for_lock(&config, &path).map_err(with_path)?;
        let kv = options.kv();
        let kv_durability = kv.durability;
        let engine =
            guard("opening the trees", || Ok(SledEngine::new(db, path.clone(), options)?)).map_err(with_path)?;
        guard("checking the database", || check_not_lost(&engine, &path))?;
        let inner = KvStore::open(engine, kv).map_err(with_path)?;
        write_marker(&path)?;
        tracing::debug!(durability = ?kv_durability, "sled store opened");
        Ok(Self { inner })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.inner.engine().path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SledOptions {
        &self.inner.engine().options
    }

    /// Flushes everything written so far to disk (blocking). Only useful with
    /// [`Durability::Eventual`]; with [`Durability::Immediate`] every acknowledged write is
    /// already flushed.
    ///
    /// # Errors
    /// [`ErrorCode::StorageWriteFailed`](asm_core::ErrorCode::StorageWriteFailed) when sled
    /// cannot write its log.
    pub fn sync(&self) -> Result<()> {
        guard("flushing", || Ok(asm_store_kv::KvEngine::sync(self.inner.engine())?))
    }
}

/// sled recovers a database whose log was truncated or damaged at its start as an *empty*
/// database. The marker file, written once a store is initialised, tells that apart from a new
/// database, so lost data is reported instead of silently starting over.
fn check_not_lost(engine: &SledEngine, path: &Path) -> Result<()> {
    let marker = path.join(MARKER_FILE);
    if marker.exists() && engine.is_blank()? {
        return Err(asm_core::Error::from(KvError::corrupted(format!(
            "the sled store at {} was initialised ({MARKER_FILE} exists) but sled recovered an empty database: \
             its files are truncated or corrupted",
            path.display()
        )))
        .with_detail("path", path.display().to_string()));
    }
    Ok(())
}

/// Writes the marker file (see [`check_not_lost`]) if it is not there yet.
fn write_marker(path: &Path) -> Result<()> {
    let marker: PathBuf = path.join(MARKER_FILE);
    if marker.exists() {
        return Ok(());
    }
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&marker)?;
        std::io::Write::write_all(&mut file, format!("asm-store-sled format {FORMAT_VERSION}\n").as_bytes())?;
        file.sync_all()
    };
    write().map_err(|e| {
        asm_core::Error::from(KvError::write("writing the marker file", e))
            .with_detail("path", marker.display().to_string())
    })
}

/// How long [`SledSessionStore::open`] waits for the database's file lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the database, waiting up to [`LOCK_WAIT`] for its file lock: sled releases the lock
/// only when its background flusher thread has stopped, which happens shortly *after* the last
/// handle of a store is dropped, so a store closed and reopened in one process would otherwise
/// find its own lock still held. A lock held longer (another process, another open store) is
/// the typed error it was before (`storage_connection_failed`, with the path).
fn open_waiting_for_lock(config: &sled::Config, path: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io))
                if io.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => return guard("opening the database", || Err(engine::open_err(path, error).into())),
        }
    }
}
