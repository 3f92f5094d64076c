//! Store options.

use crate::Durability;

/// Options of [`RedbSessionStore::open_with`](crate::RedbSessionStore::open_with).
///
/// ```
/// use asm_store_redb::{Durability, RedbOptions};
/// let options = RedbOptions::new().durability(Durability::Eventual).max_event_bytes(1 << 20);
/// assert_eq!(options.durability, Durability::Eventual);
/// assert_eq!(RedbOptions::default().max_event_bytes, 16 * 1024 * 1024);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedbOptions {
    /// When acknowledged writes reach the disk. Default [`Durability::Immediate`].
    pub durability: Durability,
    /// The largest event, in bytes as [`asm_ports::backend::event_size`] measures it (about the size of
    /// its JSON). A batch holding a larger event is refused with
    /// [`ErrorCode::InvalidInput`](asm_core::ErrorCode::InvalidInput) and nothing of it is
    /// written. Default 16 MiB.
    pub max_event_bytes: usize,
    /// Verify the checksum of every page when opening, so a file damaged outside the store is
    /// reported as an error by [`RedbSessionStore::open`](crate::RedbSessionStore::open)
    /// instead of failing later reads (redb may even panic on a damaged page; the store turns
    /// that into an error too). Reads the whole file: about 0.25-0.35 s for a 1M-event, 500 MB
    /// store from the OS page cache. Default `true`.
    pub verify_on_open: bool,
    /// Memory redb may use to cache pages, in bytes (used as pages are read, not reserved).
    /// Default 1 GiB, redb's default.
    pub cache_bytes: usize,
    /// New events go to a commit-order log and are kept decoded in memory (reads of a session's
    /// newest events are served from there); once the log holds this many events (or 16 MiB),
    /// they are compacted into the per-session tables. Fewer hold less memory; more make
    /// concurrent appends to many sessions cheaper. Default 8192.
    pub compact_after_events: usize,
}

impl RedbOptions {
    /// The default cap on one event: 16 MiB (the cap of every store on `asm-store-kv`).
    pub const DEFAULT_MAX_EVENT_BYTES: usize = asm_store_kv::DEFAULT_MAX_EVENT_BYTES;
    /// The default page cache: 1 GiB.
    pub const DEFAULT_CACHE_BYTES: usize = 1024 * 1024 * 1024;
    /// With [`Durability::Eventual`], the longest an acknowledged write waits for its fsync.
    pub const EVENTUAL_SYNC_INTERVAL: std::time::Duration = asm_store_kv::EVENTUAL_SYNC_INTERVAL;

    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    asm_core::builder_setters! {
        /// Sets [`RedbOptions::durability`].
        fn durability(durability: Durability) { durability = durability }
        /// Sets [`RedbOptions::max_event_bytes`].
        fn max_event_bytes(bytes: usize) { max_event_bytes = bytes }
        /// Sets [`RedbOptions::verify_on_open`].
        fn verify_on_open(verify: bool) { verify_on_open = verify }
        /// Sets [`RedbOptions::cache_bytes`].
        fn cache_bytes(bytes: usize) { cache_bytes = bytes }
        /// Sets [`RedbOptions::compact_after_events`] (at least 1).
        fn compact_after_events(events: usize) { compact_after_events = events.max(1) }
    }

    /// What the shared engine needs of these options.
    pub(crate) fn kv(&self) -> asm_store_kv::KvOptions {
        asm_store_kv::KvOptions::new(self.durability, self.max_event_bytes)
            .compact_after(self.compact_after_events, asm_store_kv::COMPACT_BYTES)
    }
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Immediate,
            max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES,
            verify_on_open: true,
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
            compact_after_events: asm_store_kv::COMPACT_EVENTS,
        }
    }
}
