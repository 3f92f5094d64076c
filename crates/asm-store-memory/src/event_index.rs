//! The global event-id index that makes appends idempotent across sessions.
//!
//! Sharded so that writers on different sessions rarely meet on one lock. A batch locks every
//! shard it needs in ascending order (and always after its session's lock), so two batches can
//! never deadlock and the "is this id stored? if not, store it" step is atomic per batch.
//!
//! Each id is hashed once, outside every lock, into an [`IdKey`]; the shard maps reuse that hash
//! (also when they grow), so a lookup or insert never hashes the id's text again.

use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use asm_core::{EventId, StoredEvent};
use parking_lot::{Mutex, MutexGuard};

use crate::slot::SessionSlot;

/// Number of shards: a power of two, at most 32 (the shard set of a batch is a `u32` mask).
const SHARDS: usize = 16;

/// An event id with its hash, computed once.
#[derive(Clone)]
pub(crate) struct IdKey {
    hash: u64,
    id: EventId,
}

impl IdKey {
    /// The shard: bits 32.. of the hash, which the shard map uses neither for the bucket (low
    /// bits) nor for the tag (top 7 bits), so every shard map still sees a uniform hash.
    fn shard(&self) -> usize {
        ((self.hash >> 32) as usize) & (SHARDS - 1)
    }
}

impl PartialEq for IdKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.id == other.id
    }
}

impl Eq for IdKey {}

impl Hash for IdKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A hasher that passes the precomputed hash of an [`IdKey`] through.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `IdKey`; fold anything else in so it is still a hash.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by [`IdKey`] (for example the in-batch duplicate check).
pub(crate) type IdKeyMap<V> = std::collections::HashMap<IdKey, V, BuildHasherDefault<PassThrough>>;

/// A stored event and the session slot that owns it.
///
/// The owner lets a writer tell a live entry from one whose session is being deleted (its slot is
/// marked deleted before the index is cleaned), so a deleted id is never resurrected as a
/// duplicate.
pub(crate) struct IndexedEvent {
    event: StoredEvent,
    owner: Arc<SessionSlot>,
}

type Shard = IdKeyMap<IndexedEvent>;

/// Event id -> stored event, for every session.
pub(crate) struct EventIndex {
    shards: [Mutex<Shard>; SHARDS],
    /// Randomly seeded per store, so ids cannot be chosen to collide.
    hasher: foldhash::fast::RandomState,
}

impl EventIndex {
    pub(crate) fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub(crate) fn key(&self, id: &EventId) -> IdKey {
        IdKey { hash: self.hasher.hash_one(id), id: id.clone() }
    }

    /// Locks every shard that holds one of `keys`, in ascending shard order.
    pub(crate) fn lock<'a>(&self, keys: impl Iterator<Item = &'a IdKey>) -> LockedShards<'_> {
        let mut wanted = 0u32;
        for key in keys {
            wanted |= 1 << key.shard();
        }
        let mut guards: [Option<MutexGuard<'_, Shard>>; SHARDS] = std::array::from_fn(|_| None);
        for (i, (guard, shard)) in guards.iter_mut().zip(&self.shards).enumerate() {
            if wanted & (1 << i) != 0 {
                *guard = Some(shard.lock());
            }
        }
        LockedShards { guards }
    }

    /// Removes the entries of `events` that still belong to `owner` (a deleted session).
    pub(crate) fn remove_owned(&self, owner: &Arc<SessionSlot>, events: &[StoredEvent]) {
        let mut buckets: [Vec<IdKey>; SHARDS] = std::array::from_fn(|_| Vec::new());
        for event in events {
            let key = self.key(&event.id);
            if let Some(bucket) = buckets.get_mut(key.shard()) {
                bucket.push(key);
            }
        }
        for (shard, keys) in self.shards.iter().zip(buckets) {
            if keys.is_empty() {
                continue;
            }
            let mut shard = shard.lock();
            for key in keys {
                if shard.get(&key).is_some_and(|e| Arc::ptr_eq(&e.owner, owner)) {
                    shard.remove(&key);
                }
            }
        }
    }

    /// Number of indexed ids (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// The shards a batch needs, locked. Dropping it unlocks them.
pub(crate) struct LockedShards<'a> {
    guards: [Option<MutexGuard<'a, Shard>>; SHARDS],
}

impl LockedShards<'_> {
    /// The live stored event with this id, if any. `key`'s shard must be locked.
    pub(crate) fn get(&self, key: &IdKey) -> Option<&StoredEvent> {
        let shard = self.guards.get(key.shard())?.as_ref()?;
        shard.get(key).filter(|e| !e.owner.is_deleted()).map(|e| &e.event)
    }

    /// Records a newly stored event (replacing a dead entry with the same id, if any).
    /// `key`'s shard must be locked.
    pub(crate) fn insert(&mut self, key: IdKey, event: StoredEvent, owner: Arc<SessionSlot>) {
        let shard = self.guards.get_mut(key.shard()).and_then(Option::as_mut);
        debug_assert!(shard.is_some(), "event-id shard not locked");
        if let Some(shard) = shard {
            shard.insert(key, IndexedEvent { event, owner });
        }
    }
}
