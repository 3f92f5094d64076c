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
//! # Engine
//!
//! Everything but redb itself is the shared KV engine of `asm-store-kv`: group commit on one
//! writer thread (each group one redb write transaction, one `fsync`), request validation, the
//! event codec, the key layout, long-poll wake-ups, the limits and the error codes are the same
//! as in the sled store. This crate maps the layout's tables onto redb tables, a snapshot onto
//! a redb read transaction, and a group onto a redb write transaction
//! (`redb::Durability::None` for the non-durable commits of [`Durability::Eventual`]). Reads do
//! not go through the writer: each read opens its own redb read transaction (a consistent
//! snapshot) on the caller's thread.
//!
//! # Layout and format version
//!
//! The tables of the `asm-store-kv` layout are redb tables named `asm_kv_<table>` (byte keys,
//! byte values); the format version is in `asm_meta` (`format_version`, a `u64`), where the
//! layout before the shared engine (format version 1) kept it too. Opening a store checks it:
//! version 2 (the layout without the commit-order log) is upgraded in place; a newer, older (1)
//! or unknown version, or a redb file with tables but no version record, is
//! [`ErrorCode::MigrationRequired`]; the store never guesses at a layout it does not know. An
//! empty file is initialised with the current version.
//!
//! # Performance notes
//!
//! A durable commit costs an `fsync` plus the pages it rewrites (redb is copy-on-write, 4 KiB
//! pages). Group commit amortises the `fsync` over every queued request; new events go to one
//! commit-order log, so a group on many sessions rewrites a few pages at the log's end, and a
//! compaction ([`RedbOptions::compact_after_events`]) later writes each session's pages once
//! for many events, in a commit that does not wait for the disk. See `docs/PERFORMANCE.md` for
//! the measurements.
//!
//! # Errors
//!
//! As in every store on `asm-store-kv` (one mapping, see `asm_store_kv::KvError`): corruption
//! (reported by redb, a record that does not decode, a panic inside redb) is
//! [`ErrorCode::StorageError`] with detail `corrupted: true`; I/O failures are
//! [`ErrorCode::StorageReadFailed`] / [`ErrorCode::StorageWriteFailed`]. Opening a file that
//! another process holds is [`ErrorCode::StorageConnectionFailed`] with a message naming the
//! lock; a truncated or damaged file is [`ErrorCode::StorageError`] from
//! [`RedbSessionStore::open`] (with [`RedbOptions::verify_on_open`], the default, every page
//! checksum is verified on open). The store does not panic on bad input or a damaged file.
//!
//! One process owns a store file at a time (`multi_process` is `false`).
//!
//! Architecture invariant: this crate knows the ports, the domain values and the engine trait
//! of `asm-store-kv`, nothing of the runtime or of any provider; only this crate knows redb
//! (the layout above it is `asm-store-kv`'s).
//!
//! [`SessionStore`]: asm_ports::SessionStore
//! [`StoreCapabilities::durable`]: asm_ports::StoreCapabilities::durable
//! [`ErrorCode::MigrationRequired`]: asm_core::ErrorCode::MigrationRequired
//! [`ErrorCode::StorageError`]: asm_core::ErrorCode::StorageError
//! [`ErrorCode::StorageReadFailed`]: asm_core::ErrorCode::StorageReadFailed
//! [`ErrorCode::StorageWriteFailed`]: asm_core::ErrorCode::StorageWriteFailed
//! [`ErrorCode::StorageConnectionFailed`]: asm_core::ErrorCode::StorageConnectionFailed
#![deny(missing_docs)]

mod engine;
mod options;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use asm_core::Result;
use asm_store_kv::{KvError, KvStore};

pub use asm_store_kv::Durability;
pub use options::RedbOptions;

use engine::RedbEngine;

/// A [`SessionStore`](asm_ports::SessionStore) in one redb file, durable by default.
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
    inner: KvStore<RedbEngine>,
}

asm_store_kv::forward_session_store!(RedbSessionStore, inner);

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
    /// - [`ErrorCode::StorageConnectionFailed`](asm_core::ErrorCode::StorageConnectionFailed) when the file is locked by another process (the
    ///   message says so) or cannot be opened (missing directory, permissions);
    /// - [`ErrorCode::StorageError`](asm_core::ErrorCode::StorageError) for a truncated or damaged file;
    /// - [`ErrorCode::MigrationRequired`](asm_core::ErrorCode::MigrationRequired) for a newer, older
    ///   or unknown format version.
    pub fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let span = tracing::debug_span!("redb_open", path = %path.display());
        let _entered = span.enter();
        let started = std::time::Instant::now();
        let with_path = |e: asm_core::Error| e.with_detail("path", path.display().to_string());

        let mut builder = redb::Builder::new();
        builder.set_cache_size(options.cache_bytes).set_check_integrity_on_open(options.verify_on_open);
        let db = match catch_unwind(AssertUnwindSafe(|| builder.create(&path))) {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(with_path(engine::open_err(&path, e).into())),
            Err(payload) => return Err(with_path(KvError::panicked("open", &*payload).into())),
        };
        let kv = options.kv();
        let engine = RedbEngine { db, path: path.clone(), options };
        let inner = KvStore::open(engine, kv).map_err(with_path)?;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "redb store opened");
        Ok(Self { inner })
    }

    /// The file of the store.
    pub fn path(&self) -> &Path {
        &self.inner.engine().path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &RedbOptions {
        &self.inner.engine().options
    }

    /// Makes every acknowledged write durable. With [`Durability::Immediate`] they all are
    /// already, and this returns at once (after the writer's current commit).
    ///
    /// # Errors
    /// [`ErrorCode::StorageWriteFailed`](asm_core::ErrorCode::StorageWriteFailed) when the commit fails.
    pub async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }
}

impl fmt::Debug for RedbSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbSessionStore")
            .field("path", &self.path())
            .field("durability", &self.options().durability)
            .finish_non_exhaustive()
    }
}
