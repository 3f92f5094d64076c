//! The recent events: appended to the commit-order log and not yet compacted into the
//! `(session, sequence)` tables.
//!
//! The writer keeps them in [`Recent`] (its own state: the log positions, the event-id index
//! of the recent events, the sessions' heads) and publishes each commit to the [`Tail`] the
//! readers share: per session, the recent events as decoded [`Event`] handles. A read of a
//! session's newest events (most reads follow the tail) copies handles instead of decoding.
//!
//! Ordering, so a reader never sees a gap or an event twice:
//! - an append is published after its commit, and acknowledged after it is published;
//! - a compaction commits (the events are then in the tables) before the tail forgets them;
//! - a reader takes the tail's read lock, copies what it needs and notes where the session's
//!   tail starts, and takes its engine snapshot *before* releasing the lock; it reads from the
//!   tables only what lies before the tail's start;
//! - a group that deletes a session holds the tail's write lock from before its commit until
//!   it has published, so no reader pairs the old tail with the new tables.

use std::collections::HashMap;

use asm_core::StoredEvent;
use parking_lot::RwLock;

use crate::keys::Id;

/// One session's recent events: `events[i]` has sequence `first + i`.
#[derive(Debug, Default, Clone)]
pub(crate) struct SessionTail {
    pub(crate) first: u64,
    pub(crate) events: Vec<StoredEvent>,
}

impl SessionTail {
    /// The last sequence in the tail (`first - 1` when it is empty).
    pub(crate) fn last(&self) -> u64 {
        (self.first + self.events.len() as u64).saturating_sub(1)
    }
}

/// The recent events the readers see.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    pub(crate) sessions: RwLock<HashMap<Id, SessionTail>>,
}

/// What a commit changed in the tail, applied by [`Tail::publish`] once it is committed.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Sessions whose recent events grew: how many of their events were published before.
    pub(crate) grown: HashMap<Id, usize>,
    /// Sessions deleted.
    pub(crate) deleted: Vec<Id>,
    /// Everything was compacted.
    pub(crate) compacted: bool,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.grown.is_empty() && self.deleted.is_empty() && !self.compacted
    }
}

impl Tail {
    /// Applies `changes` (committed) from the writer's `recent` state.
    pub(crate) fn publish(&self, changes: &Changes, recent: &Recent) {
        if changes.is_empty() {
            return;
        }
        let mut sessions = self.sessions.write();
        Self::publish_locked(&mut sessions, changes, recent);
    }

    /// [`Tail::publish`] under a write lock the caller holds.
    pub(crate) fn publish_locked(sessions: &mut HashMap<Id, SessionTail>, changes: &Changes, recent: &Recent) {
        if changes.compacted {
            sessions.clear();
        }
        for session in &changes.deleted {
            sessions.remove(session);
        }
        for (session, &published) in &changes.grown {
            let Some(source) = recent.sessions.get(session) else { continue };
            let target =
                sessions.entry(*session).or_insert_with(|| SessionTail { first: source.first, events: Vec::new() });
            if target.first != source.first || target.events.len() != published {
                // Out of step (a session deleted and re-created in one group): copy it whole.
                target.first = source.first;
                target.events.clear();
                target.events.extend(source.events.iter().cloned());
            } else {
                target.events.extend(source.events.get(published..).unwrap_or_default().iter().cloned());
            }
        }
    }
}

/// The writer's state of the recent events.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// The log positions `[first_lsn, next_lsn)` hold the recent events.
    pub(crate) first_lsn: u64,
    pub(crate) next_lsn: u64,
    /// Per session: the recent events and their log positions.
    pub(crate) sessions: HashMap<Id, RecentSession>,
    /// Event id -> (session, sequence) of the recent events.
    pub(crate) ids: HashMap<Id, (Id, u64)>,
    /// How many recent events, and their encoded bytes (the compaction trigger).
    pub(crate) count: usize,
    pub(crate) bytes: usize,
}

/// One session's recent events, as the writer keeps them.
#[derive(Debug, Default)]
pub(crate) struct RecentSession {
    pub(crate) first: u64,
    pub(crate) events: Vec<StoredEvent>,
    pub(crate) lsns: Vec<u64>,
}

impl RecentSession {
    pub(crate) fn last(&self) -> u64 {
        (self.first + self.events.len() as u64).saturating_sub(1)
    }

    pub(crate) fn get(&self, sequence: u64) -> Option<&StoredEvent> {
        let index = usize::try_from(sequence.checked_sub(self.first)?).ok()?;
        self.events.get(index)
    }
}

impl Recent {
    /// Records an event appended at log position `lsn`.
    pub(crate) fn push(&mut self, session: Id, event_id: Id, lsn: u64, event: StoredEvent, bytes: usize) {
        let sequence = event.sequence();
        let entry = self
            .sessions
            .entry(session)
            .or_insert_with(|| RecentSession { first: sequence, ..RecentSession::default() });
        entry.events.push(event);
        entry.lsns.push(lsn);
        self.ids.insert(event_id, (session, sequence));
        self.count += 1;
        self.bytes += bytes;
        self.next_lsn = self.next_lsn.max(lsn + 1);
    }

    /// Forgets a deleted session's recent events.
    pub(crate) fn remove_session(&mut self, session: &Id) {
        if let Some(removed) = self.sessions.remove(session) {
            for event in &removed.events {
                if let Ok(id) = crate::keys::event_key(&event.id) {
                    self.ids.remove(&id);
                }
            }
            self.count = self.count.saturating_sub(removed.events.len());
        }
    }

    /// Forgets every recent event (they are compacted).
    pub(crate) fn clear(&mut self) {
        self.sessions.clear();
        self.ids.clear();
        self.count = 0;
        self.bytes = 0;
        self.first_lsn = self.next_lsn;
    }
}
