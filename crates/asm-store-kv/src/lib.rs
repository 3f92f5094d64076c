//! The one engine under the embedded key-value [`SessionStore`](asm_ports::SessionStore)s of
//! agent-session-manager (`asm-store-redb`, `asm-store-sled`).
//!
//! Everything a KV store does that is not the engine itself is here, written once: request
//! validation, sequencing, the event codec, the key layout, group commit on one writer thread,
//! long-poll wake-ups, the durability option, the limits, and the mapping of every failure onto
//! one [`ErrorCode`](asm_core::ErrorCode). A store crate implements the small transaction trait
//! [`KvEngine`] (a snapshot read, one write transaction, a sync, the format record) and wraps a
//! [`KvStore`] in its public type; nothing else.
//!
//! # Group commit
//!
//! An embedded engine allows one write transaction at a time and a durable commit waits for the
//! disk, so all writes go to one dedicated OS thread over a channel. The thread takes every
//! request that is queued (up to [`MAX_GROUP_REQUESTS`], or [`MAX_GROUP_BYTES`] of events),
//! applies them in order in ONE transaction, commits once, and only then acknowledges each
//! caller. Each request checks everything that can fail (unknown session, compare-and-append
//! precondition, the run's compare-and-set status, terminal run, ...) before its first change,
//! so one refused request does not fail the others of its group; if the engine itself fails in
//! the middle, the group is replayed one request per transaction. A caller's batch is contiguous
//! and in order. Events are encoded (and their size checked) by the caller, before they reach
//! the writer. Reads do not go through the writer: each read takes its own snapshot on the
//! caller's thread.
//!
//! [`SessionStore::flush`](asm_ports::SessionStore::flush) is one request: the run, its events
//! and the session metadata merge patch ([`asm_ports::backend::merge_patch`]) are checked together and
//! written in the same transaction.
//!
//! Long-poll readers register for their session before they read; the writer wakes the
//! sessions it changed after each commit, so no append is missed.
//!
//! # Layout (format version 3)
//!
//! Ids are stored as their 16 bytes; composite keys are fixed-width byte strings whose byte
//! order is the sort order (numbers big-endian, signed numbers with the sign bit flipped):
//!
//! | table | key | value |
//! |---|---|---|
//! | [`Table::Sessions`] | session | created_at order key (8) + session JSON |
//! | [`Table::SessionOrder`] | (created_at µs, session) | - (listing order) |
//! | [`Table::Log`] | commit-order position | (session, sequence) + event: the recent events |
//! | [`Table::Events`] | (session, sequence) | event, compact binary encoding (compacted events) |
//! | [`Table::Events`] | (session, `u64::MAX`) | the session's last compacted sequence (0 when new) |
//! | [`Table::EventIds`] | event id | (session, sequence) (compacted events) |
//! | [`Table::RunStarts`] | (session, run) | first sequence of the run (`run_id` reads) |
//! | [`Table::Runs`] | run | run JSON |
//! | [`Table::SessionRuns`] | (session, created_at, run) | - (`list_runs` order) |
//!
//! **New events go to the commit-order log**, whatever their session: a group commit of 64
//! appenders on 64 sessions appends 64 entries at the log's end (a few pages) instead of
//! rewriting the newest page of 64 sessions, and writes no index entry. The writer keeps the
//! recent events' indexes in memory (event ids, each session's head and log positions), and the
//! readers share the recent events themselves, decoded, per session (the *tail*): a read of a
//! session's newest events, what followers of a live session do, copies `Event` handles instead
//! of decoding. Once the log holds [`COMPACT_EVENTS`] events or [`COMPACT_BYTES`] bytes, one
//! **compaction** moves them, sorted, into the `(session, sequence)`, event-id and run-start
//! tables and advances the sessions' heads, so each session's pages are written once per
//! compaction. A compaction is one atomic transaction that does not wait for the disk: a crash
//! before the next durable commit leaves the events in the log, where the next open finds them
//! (opening rebuilds the recent events from the log, and checks that every session's entries
//! continue its sequence).
//!
//! A session's last sequence is its newest recent event, else its head record; the head record
//! exists exactly while the session does.
//!
//! The format record itself lives where each engine kept it before (so a store of an older
//! layout is recognised): [`FORMAT_VERSION`] is checked on open. Version 2 (this layout
//! without the log) is upgraded in place; a newer, an older (1: the layouts before this engine)
//! or an unknown version, or a database with data but no record, is
//! [`ErrorCode::MigrationRequired`](asm_core::ErrorCode::MigrationRequired).
//!
//! Group commit also waits a little for a group to fill up again when many writers take turns
//! (see the writer), so 64 appenders that each wait for their previous append commit in groups
//! of about 64, not in alternating small and large groups.
//!
//! A cursor read takes the tail's read lock, copies the matching recent events, notes where the
//! session's tail starts and takes its engine snapshot before it lets go (see the `tail`
//! module for why that order is gap-free); below the tail's start it is one range scan over
//! `(session, sequence)`: `O(log n + k)` for `k` scanned events. `after`/`before` bound the
//! scan; `kinds`, `since` and `run_id` are checked on each event's header (id, run, timestamp,
//! kind come first in the encoding) before the rest is decoded. A `run_id` read starts at the
//! run's first compacted event.
//!
//! # Limits
//!
//! The same in every store: [`DEFAULT_MAX_EVENT_BYTES`] per event (configurable per store, as
//! measured by [`asm_ports::backend::event_size`]), [`MAX_JSON_DEPTH`] levels of JSON nesting,
//! [`MAX_GROUP_REQUESTS`] / [`MAX_GROUP_BYTES`] per group commit,
//! [`COMPACT_EVENTS`] / [`COMPACT_BYTES`] of recent events (configurable per store), and
//! [`EVENTUAL_SYNC_INTERVAL`] with [`Durability::Eventual`].
//!
//! # Errors
//!
//! Engines report failures as [`KvError`]; its one conversion into [`asm_core::Error`] (see
//! the [`KvError`] docs for the table) gives the same failure the same code in every store.
//! Panics inside an engine (redb and sled both panic on some damaged files) are caught and
//! reported as corruption. Decoding never panics.
//!
//! Architecture invariant: this crate knows the ports, the domain values and the traits an
//! engine implements; it knows no concrete engine.
#![deny(missing_docs)]

mod codec;
mod engine;
mod error;
mod format;
mod keys;
mod options;
mod query;
mod store;
mod tail;
mod waiters;
mod writer;

#[cfg(feature = "checks")]
pub mod checks;

pub use engine::{Finish, FormatRecord, KeyRange, KvEngine, KvRead, KvWrite, Table};
pub use error::{Cause, KvError};
pub use options::{
    COMPACT_BYTES, COMPACT_EVENTS, DEFAULT_MAX_EVENT_BYTES, Durability, EVENTUAL_SYNC_INTERVAL, KvOptions,
    MAX_GROUP_BYTES, MAX_GROUP_REQUESTS, MAX_JSON_DEPTH,
};
pub use store::KvStore;

/// The layout version this build reads and writes.
pub const FORMAT_VERSION: u64 = 3;

/// What [`forward_session_store!`] expands to needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use asm_core::{Event, Result, Run, RunId, Session, SessionId, StoredEvent};
    pub use asm_ports::backend::run_cycle;
    pub use asm_ports::{
        EventQuery, EventSearch, ExecutionRecord, HealthReport, MaintenanceReport, MaintenanceStore, Page, QueryStore,
        RetentionPolicy, RunQuery, RunSearch, SessionQuery, SessionSearch, SessionStats, SessionStore,
        StoreCapabilities, UsageQuery, UsageReport,
    };
    pub use async_trait::async_trait;
}
