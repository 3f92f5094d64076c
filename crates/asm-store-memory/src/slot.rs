//! One session's state: its record, its event log with indexes, its runs, and its waiters.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use asm_core::{Error, ErrorCode, Run, RunId, Session, SessionId, StoredEvent, Timestamp};
use asm_ports::EventQuery;
use parking_lot::RwLock;
use tokio::sync::Notify;

/// A session and everything that belongs to it, behind its own lock.
///
/// Lock order (always, everywhere): catalog -> slot state -> run index -> event-id shards.
pub(crate) struct SessionSlot {
    pub(crate) state: RwLock<SessionState>,
    /// Set (under the state lock) when the session is deleted; read without it by the event-id
    /// index to skip entries of a session whose cleanup is in progress.
    deleted: AtomicBool,
    /// Long-poll readers currently registered; appends skip the notification when it is 0.
    waiters: AtomicUsize,
    notify: Notify,
}

/// The data of one session.
pub(crate) struct SessionState {
    pub(crate) session: Session,
    /// `events[i]` has sequence `i + 1`: a cursor range is a slice. A pruned event
    /// (maintenance) leaves `None` in its place, so the numbering stays and the gap is skipped.
    pub(crate) events: Vec<Option<StoredEvent>>,
    /// How many entries of `events` are pruned (`None`); 0 keeps the plain-slice fast path.
    pub(crate) pruned: usize,
    /// Run id -> ascending sequences of that run's events.
    pub(crate) run_events: foldhash::HashMap<RunId, Vec<u64>>,
    pub(crate) runs: foldhash::HashMap<RunId, Run>,
    /// `(created_at, id)` of every run: the listing order.
    pub(crate) run_order: BTreeSet<(Timestamp, RunId)>,
    pub(crate) deleted: bool,
}

impl SessionSlot {
    pub(crate) fn new(session: Session) -> Self {
        Self {
            state: RwLock::new(SessionState {
                session,
                events: Vec::new(),
                pruned: 0,
                run_events: foldhash::HashMap::default(),
                runs: foldhash::HashMap::default(),
                run_order: BTreeSet::new(),
                deleted: false,
            }),
            deleted: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            notify: Notify::new(),
        }
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Marks the slot deleted. Call with the state lock held (`state` is its guarded data).
    pub(crate) fn mark_deleted(&self, state: &mut SessionState) {
        state.deleted = true;
        self.deleted.store(true, Ordering::Release);
    }

    /// Long-poll readers currently registered (for tests).
    #[cfg(test)]
    pub(crate) fn waiter_count(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }

    /// Wakes long-poll readers, if there are any.
    ///
    /// Called after the write lock is released. A reader increments `waiters` before it reads
    /// under the lock, so either it sees the write or this load sees the reader.
    pub(crate) fn wake(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// The matching stored events, without waiting.
    pub(crate) fn read(&self, session_id: &SessionId, query: &EventQuery) -> asm_core::Result<Vec<StoredEvent>> {
        let state = self.state.read();
        if state.deleted {
            return Err(session_not_found(session_id));
        }
        Ok(state.query(query))
    }

    /// Like [`SessionSlot::read`], but when nothing matches waits until an append makes the
    /// query match or `wait` has passed (then returns what matches at that point: usually `[]`).
    pub(crate) async fn read_waiting(
        &self,
        session_id: &SessionId,
        query: &EventQuery,
        wait: std::time::Duration,
    ) -> asm_core::Result<Vec<StoredEvent>> {
        // A wait too long to represent (e.g. `Duration::MAX`) means "until an append".
        let deadline = tokio::time::Instant::now().checked_add(wait);
        let _registered = WaiterRegistration::new(self);
        loop {
            // Register for the next notification *before* checking, so an append between the
            // check and the await is never missed.
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let events = self.read(session_id, query)?;
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

/// Counts a long-poll reader for as long as it lives.
struct WaiterRegistration<'a>(&'a SessionSlot);

impl<'a> WaiterRegistration<'a> {
    fn new(slot: &'a SessionSlot) -> Self {
        slot.waiters.fetch_add(1, Ordering::SeqCst);
        Self(slot)
    }
}

impl Drop for WaiterRegistration<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SessionState {
    pub(crate) fn last_sequence(&self) -> u64 {
        self.events.len() as u64
    }

    /// The stored events matching `query`, oldest first, at most `query.limit`.
    ///
    /// `after`/`before` select a slice of the log (or of the run's sequence list, found by binary
    /// search); `kinds` and `since` filter within it. So the cost is `O(log n + scanned)`.
    pub(crate) fn query(&self, query: &EventQuery) -> Vec<StoredEvent> {
        let range = query.sequence_range(self.last_sequence());
        if range.is_empty() {
            return Vec::new();
        }
        let limit = query.limit.unwrap_or(usize::MAX);
        if let Some(run_id) = &query.run_id {
            let Some(sequences) = self.run_events.get(run_id) else { return Vec::new() };
            let lo = sequences.partition_point(|&s| s < range.start);
            let hi = sequences.partition_point(|&s| s < range.end);
            let sequences = sequences.get(lo..hi).unwrap_or_default();
            return sequences
                .iter()
                .filter_map(|&s| self.event_at(s))
                .filter(|e| query.matches(e))
                .take(limit)
                .cloned()
                .collect();
        }
        // range.start >= 1 and range.end <= len + 1 (see EventQuery::sequence_range).
        let (Ok(first), Ok(end)) = (usize::try_from(range.start - 1), usize::try_from(range.end - 1)) else {
            return Vec::new();
        };
        let slice = self.events.get(first..end).unwrap_or_default();
        if query.kinds.is_empty() && query.since.is_none() && self.pruned == 0 {
            return slice.get(..limit.min(slice.len())).unwrap_or_default().iter().flatten().cloned().collect();
        }
        slice.iter().flatten().filter(|e| query.matches(e)).take(limit).cloned().collect()
    }

    fn event_at(&self, sequence: u64) -> Option<&StoredEvent> {
        let index = usize::try_from(sequence.checked_sub(1)?).ok()?;
        self.events.get(index)?.as_ref()
    }
}

pub(crate) fn session_not_found(id: &SessionId) -> Error {
    Error::new(ErrorCode::SessionNotFound, format!("session {id} not found")).with_detail("session_id", id.as_str())
}
