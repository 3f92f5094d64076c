//! Durability and the limits every KV store shares.

use std::time::Duration;

/// When an acknowledged write is on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// Every commit is made durable (redb: `fsync`; sled: `Db::flush`) before any of its writers
    /// is acknowledged. The default.
    #[default]
    Immediate,
    /// Commits are acknowledged before they are made durable; the writer makes them durable at
    /// least every [`EVENTUAL_SYNC_INTERVAL`], when the store's `sync` is called and when the
    /// store is dropped. A crash loses at most the acknowledged writes of that last interval
    /// (whole commits only), never the consistency of the database.
    Eventual,
}

/// With [`Durability::Eventual`], the longest an acknowledged write waits to be made durable.
pub const EVENTUAL_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The default cap on one event ([`asm_ports::backend::event_size`]): 16 MiB, the cap every store applies.
pub const DEFAULT_MAX_EVENT_BYTES: usize = asm_ports::MAX_EVENT_BYTES;

/// The most write requests the writer puts into one transaction.
pub const MAX_GROUP_REQUESTS: usize = 1024;

/// A group stops taking requests once their encoded events add up to this many bytes (a single
/// larger request still commits, alone).
pub const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;

/// A compaction starts once the commit-order log holds this many events...
pub const COMPACT_EVENTS: usize = 8192;

/// ... or this many bytes of encoded events. The recent events are also kept decoded in memory
/// (the tail readers are served from), so these bound that memory too.
pub const COMPACT_BYTES: usize = 16 * 1024 * 1024;

/// The deepest JSON nesting of an event's `data` / `metadata`: deeper payloads are refused with
/// `invalid_input` on write (and reported as corrupt on read, which protects the stack).
pub const MAX_JSON_DEPTH: usize = 256;

/// What the engine needs to know of a store's options.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvOptions {
    /// When acknowledged writes reach the disk.
    pub durability: Durability,
    /// The cap on one event, as measured by [`asm_ports::backend::event_size`].
    pub max_event_bytes: usize,
    /// Compact the commit-order log once it holds this many events (default
    /// [`COMPACT_EVENTS`]).
    pub compact_events: usize,
    /// ... or this many bytes of encoded events (default [`COMPACT_BYTES`]).
    pub compact_bytes: usize,
}

impl KvOptions {
    /// Options with this durability and event cap, and the default compaction thresholds.
    pub fn new(durability: Durability, max_event_bytes: usize) -> Self {
        Self { durability, max_event_bytes, compact_events: COMPACT_EVENTS, compact_bytes: COMPACT_BYTES }
    }

    /// Sets the compaction thresholds: fewer recent events hold less memory and make reads of
    /// the tail decode more; more make commits cheaper (each session's pages are written once
    /// per compaction). Values below 1 are taken as 1.
    #[must_use]
    pub fn compact_after(mut self, events: usize, bytes: usize) -> Self {
        self.compact_events = events.max(1);
        self.compact_bytes = bytes.max(1);
        self
    }
}

impl Default for KvOptions {
    fn default() -> Self {
        Self::new(Durability::Immediate, DEFAULT_MAX_EVENT_BYTES)
    }
}
