//! The small transaction trait a key-value engine implements.
//!
//! Everything the stores share (validation, sequencing, the codec, the key layout, group commit,
//! long-poll wake-ups) is written once against these traits; an engine only says how to read a
//! consistent snapshot, how to run one write transaction, how to make commits durable, and where
//! its format record lives.

use std::ops::Bound;

use asm_core::Result;

use crate::error::KvError;

/// The tables of the layout (see the crate docs). An engine maps each onto its own namespace
/// (a redb table, a sled tree) holding byte keys and byte values in byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Table {
    /// `session -> created_at order key + session JSON`.
    Sessions,
    /// `(created_at order key, session) -> ()`: the listing order of sessions.
    SessionOrder,
    /// `(session, sequence) -> encoded event` of the compacted events, and the session head at
    /// `(session, u64::MAX)`: the last compacted sequence (0 for a new session).
    Events,
    /// `event id -> (session, sequence)` of the compacted events: idempotent appends.
    EventIds,
    /// `(session, run) -> first sequence of the run` (compacted events): where `run_id` reads
    /// start.
    RunStarts,
    /// `run -> run JSON`.
    Runs,
    /// `(session, created_at, run) -> ()`: a session's runs in listing order.
    SessionRuns,
    /// `commit-order position -> (session, sequence, encoded event)`: the events appended since
    /// the last compaction.
    Log,
}

impl Table {
    /// Every table, in [`Table::index`] order.
    pub const ALL: [Table; Table::COUNT] = [
        Table::Sessions,
        Table::SessionOrder,
        Table::Events,
        Table::EventIds,
        Table::RunStarts,
        Table::Runs,
        Table::SessionRuns,
        Table::Log,
    ];
    /// How many tables there are.
    pub const COUNT: usize = 8;

    /// A stable name for the engine's namespace (`sessions`, `events`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Table::Sessions => "sessions",
            Table::SessionOrder => "session_order",
            Table::Events => "events",
            Table::EventIds => "event_ids",
            Table::RunStarts => "run_starts",
            Table::Runs => "runs",
            Table::SessionRuns => "session_runs",
            Table::Log => "log",
        }
    }

    /// The position of the table in [`Table::ALL`] (for arrays indexed by table).
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What a write closure wants done with its transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finish {
    /// Commit the transaction.
    Commit,
    /// Nothing changed: abort it (cheaper than an empty commit).
    Abort,
}

/// The key range of a scan: lower and upper bound.
pub type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Reads of one consistent state (a snapshot, or a write transaction's own view).
pub trait KvRead {
    /// Calls `f` with the value stored at `key`, if any.
    ///
    /// # Errors
    /// A [`KvError`] when the engine fails.
    fn get<R>(&self, table: Table, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> std::result::Result<Option<R>, KvError>;

    /// Calls `f` with every `(key, value)` in `range`, in ascending key order, until `f`
    /// returns `Ok(false)` or an error.
    ///
    /// # Errors
    /// A [`KvError`] when the engine fails (converted into `E`), or the first error of `f`.
    fn scan<E: From<KvError>>(
        &self,
        table: Table,
        range: KeyRange<'_>,
        f: impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E>;
}

/// A write transaction: its reads see its own writes.
pub trait KvWrite: KvRead {
    /// Stores `value` at `key`, replacing what was there.
    ///
    /// # Errors
    /// A [`KvError`] when the engine fails; the transaction must then be abandoned.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> std::result::Result<(), KvError>;

    /// Removes `key` (nothing happens if it is absent).
    ///
    /// # Errors
    /// A [`KvError`] when the engine fails; the transaction must then be abandoned.
    fn delete(&mut self, table: Table, key: &[u8]) -> std::result::Result<(), KvError>;

    /// Removes every key in `range`.
    ///
    /// # Errors
    /// A [`KvError`] when the engine fails; the transaction must then be abandoned.
    fn delete_range(&mut self, table: Table, range: KeyRange<'_>) -> std::result::Result<(), KvError> {
        let mut keys = Vec::new();
        self.scan::<KvError>(table, range, |key, _| {
            keys.push(key.to_vec());
            Ok(true)
        })?;
        for key in &keys {
            self.delete(table, key)?;
        }
        Ok(())
    }
}

/// What an engine's format record says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatRecord {
    /// The record holds this layout version.
    Version(u64),
    /// There is a record, but it cannot be read as a version.
    Unreadable(String),
    /// There is no record. `empty` says whether the database holds nothing at all (a new
    /// database, which gets initialised) or data of someone else (refused).
    Absent {
        /// Whether the database holds no data at all.
        empty: bool,
    },
}

/// An embedded key-value engine: the one thing each store crate implements.
///
/// All methods may be called from any thread; [`KvEngine::write`] is only ever called by the
/// store's single writer thread. An engine that may panic on damaged files does not need to
/// catch the panics: the store does.
pub trait KvEngine: Send + Sync + 'static {
    /// A consistent read-only view of the database.
    type Snapshot<'s>: KvRead;
    /// A write transaction.
    type Txn<'t>: KvWrite;

    /// The engine's name, for messages and thread names (`"redb"`, `"sled"`).
    const NAME: &'static str;

    /// Runs `f` on a consistent snapshot.
    ///
    /// # Errors
    /// A [`KvError`] (as `asm_core::Error`) when the snapshot cannot be taken, or what `f` returns.
    fn read<R>(&self, f: impl FnOnce(&Self::Snapshot<'_>) -> Result<R>) -> Result<R>;

    /// Runs `f` in one write transaction, then commits it (when `f` says [`Finish::Commit`]) or
    /// abandons it. A commit with `durable` is on disk when this returns (as far as the engine
    /// promises it); without, it is made durable by a later durable commit or
    /// [`KvEngine::sync`]. An error of `f` abandons the transaction: nothing of it is stored.
    ///
    /// # Errors
    /// A [`KvError`] (as `asm_core::Error`) when the engine fails, or what `f` returns.
    fn write<R>(&self, durable: bool, f: impl FnOnce(&mut Self::Txn<'_>) -> Result<(R, Finish)>) -> Result<R>;

    /// Makes every earlier commit durable.
    ///
    /// # Errors
    /// A [`KvError`] when the engine fails.
    fn sync(&self) -> std::result::Result<(), KvError>;

    /// Reads the format record.
    ///
    /// # Errors
    /// A [`KvError`] when the engine fails.
    fn read_format(&self) -> std::result::Result<FormatRecord, KvError>;

    /// Initialises a new, empty database, or upgrades one whose layout is a subset of this one:
    /// creates every [`Table`] that does not exist yet (keeping those that do) and writes the
    /// format record with `version`, durably.
    ///
    /// # Errors
    /// A [`KvError`] when the engine fails.
    fn init(&self, version: u64) -> std::result::Result<(), KvError>;
}
