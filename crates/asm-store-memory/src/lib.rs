//! In-memory [`SessionStore`] for agent-session-manager.
//!
//! [`InMemorySessionStore`] is the reference store: it passes the conformance suite of
//! `asm-testkit`, supports long-poll reads, and is safe under any number of concurrent writers.
//! It grants session leases in-process ([`asm_ports::SessionLeases`]), so the runtime's ownership
//! logic can be tested without a database; it is not shared between processes.
//! Nothing is persisted: the data lives as long as the last handle.
//!
//! Architecture invariant: this crate knows the ports and the domain values, nothing of the
//! runtime or of any provider.
#![deny(missing_docs)]

mod batch;
mod event_index;
mod lease;
mod query;
mod slot;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use asm_core::{Error, ErrorCode, Event, Result, Run, RunId, Session, SessionId, StoredEvent};
use asm_ports::backend::{
    batch_session, check_event_size, check_expected_status, check_flush_record, check_run_overwrite,
};
use asm_ports::{
    EventQuery, ExecutionRecord, MAX_EVENT_BYTES, Page, RunQuery, SessionQuery, SessionStore, StoreCapabilities,
};

use batch::PreparedBatch;
use event_index::EventIndex;
use slot::{SessionSlot, SessionState, session_not_found};

/// A [`SessionStore`] that keeps everything in memory.
///
/// Cloning is cheap: every clone is a handle to the same data.
///
/// How it is organised (so that reads cost `O(log n + k)` and writers on different sessions do
/// not wait for each other):
///
/// - a catalog `session id -> slot` (plus the `(created_at, id)` listing order) behind one
///   `RwLock`, held only to find or add a slot;
/// - per session, a slot with its own lock holding the session record, its events in a `Vec`
///   where `sequence == index + 1` (a cursor range is a slice), a `run id -> sequences` index for
///   `run_id` queries, and its runs;
/// - a global `run id -> slot` index for [`SessionStore::get_run`];
/// - a sharded global `event id -> stored event` index that makes re-appends idempotent.
///
/// `EventQuery::after`, `before` and `run_id` are answered from the indexes; `kinds` and `since`
/// filter within the selected range. Long-poll readers wait on a per-session notification that
/// they register for before they look, so no append is missed. Long-poll reads
/// ([`EventQuery::wait`]) need a Tokio runtime with the time driver enabled.
///
/// ```
/// use asm_core::{Event, EventKind, Session};
/// use asm_ports::{EventQuery, SessionStore, SessionStoreExt};
/// use asm_store_memory::InMemorySessionStore;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = InMemorySessionStore::new();
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
/// # Ok::<(), asm_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct InMemorySessionStore {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: RwLock<Catalog>,
    /// Run id -> the slot of its session.
    runs: RwLock<foldhash::HashMap<RunId, Arc<SessionSlot>>>,
    events: EventIndex,
    /// In-process session leases.
    leases: lease::Leases,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            catalog: RwLock::new(Catalog::default()),
            runs: RwLock::new(foldhash::HashMap::default()),
            events: EventIndex::new(),
            leases: lease::Leases::default(),
        }
    }
}

#[derive(Default)]
struct Catalog {
    slots: foldhash::HashMap<SessionId, Arc<SessionSlot>>,
    /// `(created_at in µs, id)`: the listing order of [`SessionStore::list_sessions`].
    order: BTreeSet<(i64, SessionId)>,
}

impl InMemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, id: &SessionId) -> Result<Arc<SessionSlot>> {
        self.inner.catalog.read().slots.get(id).cloned().ok_or_else(|| session_not_found(id))
    }

    /// Checks that `run` may be written into `slot` and registers it in the run index. Nothing
    /// that can fail may follow this step in a write.
    fn claim_run(&self, slot: &Arc<SessionSlot>, state: &SessionState, run: &Run) -> Result<()> {
        if let Some(stored) = state.runs.get(&run.id) {
            return check_run_overwrite(stored, run);
        }
        let mut runs = self.inner.runs.write();
        match runs.get(&run.id) {
            Some(owner) if !Arc::ptr_eq(owner, slot) && !owner.is_deleted() => {
                Err(Error::new(ErrorCode::SessionMismatch, format!("run {} belongs to another session", run.id))
                    .with_detail("run_id", run.id.as_str()))
            }
            _ => {
                runs.insert(run.id.clone(), Arc::clone(slot));
                Ok(())
            }
        }
    }
}

fn run_not_found(id: &RunId) -> Error {
    Error::new(ErrorCode::RunNotFound, format!("run {id} not found")).with_detail("run_id", id.as_str())
}

impl fmt::Debug for InMemorySessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("InMemorySessionStore");
        match self.inner.catalog.try_read() {
            Some(catalog) => d.field("sessions", &catalog.slots.len()),
            None => d.field("sessions", &"<locked>"),
        };
        d.finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for InMemorySessionStore {
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session.id))]
    async fn save_session(&self, session: &Session) -> Result<()> {
        let key = SessionQuery::order_key(session);
        // Fast path: an update that keeps the listing key needs only the catalog's read lock.
        {
            let catalog = self.inner.catalog.read();
            if let Some(slot) = catalog.slots.get(&session.id) {
                let mut state = slot.state.write();
                if SessionQuery::order_key(&state.session) == key {
                    state.session = session.clone();
                    return Ok(());
                }
            }
        }
        let mut catalog = self.inner.catalog.write();
        let Catalog { slots, order } = &mut *catalog;
        match slots.get(&session.id) {
            Some(slot) => {
                let mut state = slot.state.write();
                order.remove(&SessionQuery::order_key(&state.session));
                state.session = session.clone();
            }
            None => {
                slots.insert(session.id.clone(), Arc::new(SessionSlot::new(session.clone())));
            }
        }
        order.insert(key);
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %id))]
    async fn get_session(&self, id: &SessionId) -> Result<Session> {
        let slot = self.slot(id)?;
        let state = slot.state.read();
        if state.deleted {
            return Err(session_not_found(id));
        }
        Ok(state.session.clone())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Page<Session>> {
        let page_size = query.page_size()?;
        let start = query.decode_cursor()?;
        let catalog = self.inner.catalog.read();
        let keys: Box<dyn Iterator<Item = &(i64, SessionId)>> = match &start {
            Some(after) => {
                Box::new(catalog.order.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)))
            }
            None => Box::new(catalog.order.iter()),
        };
        let mut items = Vec::new();
        let mut more = false;
        for (_, id) in keys {
            let Some(slot) = catalog.slots.get(id) else { continue };
            let state = slot.state.read();
            if !query.matches(&state.session) {
                continue;
            }
            if items.len() == page_size {
                more = true;
                break;
            }
            items.push(state.session.clone());
        }
        let next_cursor = if more { items.last().map(SessionQuery::encode_cursor) } else { None };
        Ok(Page::new(items, next_cursor))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %id))]
    async fn delete_session(&self, id: &SessionId) -> Result<()> {
        // One critical section makes the session, its runs and its events disappear together.
        let (slot, events, runs) = {
            let mut catalog = self.inner.catalog.write();
            let slot = catalog.slots.remove(id).ok_or_else(|| session_not_found(id))?;
            let mut state = slot.state.write();
            slot.mark_deleted(&mut state);
            let key = SessionQuery::order_key(&state.session);
            catalog.order.remove(&key);
            state.run_events.clear();
            state.run_order.clear();
            state.pruned = 0;
            let events: Vec<StoredEvent> = std::mem::take(&mut state.events).into_iter().flatten().collect();
            let taken = (events, std::mem::take(&mut state.runs));
            drop(state);
            (slot, taken.0, taken.1)
        };
        // The slot is unreachable and marked deleted: clean the global indexes outside the
        // catalog lock (readers that still find an entry see the deleted slot). Entries are
        // removed only while they still point at this slot.
        {
            let mut index = self.inner.runs.write();
            for run_id in runs.keys() {
                if index.get(run_id).is_some_and(|owner| Arc::ptr_eq(owner, &slot)) {
                    index.remove(run_id);
                }
            }
        }
        self.inner.events.remove_owned(&slot, &events);
        // Long-poll readers of the session re-check and get `SessionNotFound`.
        slot.wake();
        tracing::debug!(events = events.len(), runs = runs.len(), "session deleted");
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %run.session_id, run_id = %run.id))]
    async fn save_run(&self, run: &Run) -> Result<()> {
        let slot = self.slot(&run.session_id)?;
        let mut state = slot.state.write();
        if state.deleted {
            return Err(session_not_found(&run.session_id));
        }
        self.claim_run(&slot, &state, run)?;
        store_run(&mut state, run.clone());
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(run_id = %id))]
    async fn get_run(&self, id: &RunId) -> Result<Run> {
        let slot = self.inner.runs.read().get(id).cloned().ok_or_else(|| run_not_found(id))?;
        let state = slot.state.read();
        if state.deleted {
            return Err(run_not_found(id));
        }
        state.runs.get(id).cloned().ok_or_else(|| run_not_found(id))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn list_runs(&self, session_id: &SessionId, query: &RunQuery) -> Result<Vec<Run>> {
        query.validate()?;
        let slot = self.slot(session_id)?;
        let state = slot.state.read();
        if state.deleted {
            return Err(session_not_found(session_id));
        }
        Ok(state
            .run_order
            .iter()
            .filter_map(|(_, id)| state.runs.get(id))
            .filter(|run| query.matches(run))
            .take(query.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id, count = events.len()))]
    async fn append(&self, events: Vec<Event>, expected_last_sequence: Option<u64>) -> Result<Vec<StoredEvent>> {
        let session_id = batch_session(&events)?.clone();
        check_sizes(&events)?;
        tracing::Span::current().record("session_id", tracing::field::display(&session_id));
        let slot = self.slot(&session_id)?;
        let mut batch = PreparedBatch::new(&self.inner.events, events);
        {
            let mut state = slot.state.write();
            if state.deleted {
                return Err(session_not_found(&session_id));
            }
            batch.commit(&self.inner.events, &slot, &mut state, expected_last_sequence)?;
        }
        slot.wake();
        batch.into_events()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn get_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        query.validate()?;
        let slot = self.slot(session_id)?;
        match query.wait.filter(|wait| !wait.is_zero()) {
            Some(wait) => slot.read_waiting(session_id, query, wait).await,
            None => slot.read(session_id, query),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn latest_sequence(&self, session_id: &SessionId) -> Result<u64> {
        let slot = self.slot(session_id)?;
        let state = slot.state.read();
        if state.deleted {
            return Err(session_not_found(session_id));
        }
        Ok(state.last_sequence())
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(session_id = %record.run.session_id, run_id = %record.run.id, count = record.events.len())
    )]
    async fn flush(&self, record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        check_flush_record(&record)?;
        check_sizes(&record.events)?;
        let ExecutionRecord { run, events, session_metadata, expected_status, .. } = record;
        let slot = self.slot(&run.session_id)?;
        let mut batch = PreparedBatch::new(&self.inner.events, events);
        {
            let mut state = slot.state.write();
            if state.deleted {
                return Err(session_not_found(&run.session_id));
            }
            // Every check that can fail happens before the first change: the run is checked
            // (and claimed) first, then the batch (which checks runs before it stores anything).
            check_expected_status(&run.id, state.runs.get(&run.id), expected_status)?;
            self.claim_run(&slot, &state, &run)?;
            batch.commit(&self.inner.events, &slot, &mut state, None)?;
            store_run(&mut state, run);
            asm_ports::backend::merge_patch(&mut state.session.metadata, &session_metadata);
        }
        slot.wake();
        batch.into_events()
    }

    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::new().long_poll(true).durable(false).multi_process(false).session_leases(true)
    }

    fn leases(&self) -> Option<&dyn asm_ports::SessionLeases> {
        Some(self)
    }
}

/// The store's event cap: [`MAX_EVENT_BYTES`] for every event of a batch.
fn check_sizes(events: &[Event]) -> Result<()> {
    events.iter().try_for_each(|event| check_event_size(event, MAX_EVENT_BYTES))
}

/// Inserts or replaces `run` in the session's run table and listing order.
fn store_run(state: &mut SessionState, run: Run) {
    if let Some(previous) = state.runs.get(&run.id)
        && previous.created_at != run.created_at
    {
        let key = (previous.created_at, run.id.clone());
        state.run_order.remove(&key);
    }
    state.run_order.insert((run.created_at, run.id.clone()));
    state.runs.insert(run.id.clone(), run);
}

#[cfg(test)]
mod tests {
    //! Behaviour specific to this store; the shared contract is in `tests/conformance.rs`.

    use std::time::Duration;

    use asm_core::{EventKind, RunInput, Timestamp};
    use asm_ports::SessionStoreExt;

    use super::*;

    async fn session(store: &InMemorySessionStore) -> Session {
        let session = Session::new("unit").unwrap();
        store.save_session(&session).await.unwrap();
        session
    }

    #[tokio::test]
    async fn deleting_a_session_ends_its_long_polls_with_session_not_found() {
        let store = InMemorySessionStore::new();
        let s = session(&store).await;
        let query = EventQuery::new().wait(Duration::from_secs(30));
        let reader = store.get_events(&s.id, &query);
        let deleter = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            store.delete_session(&s.id).await
        };
        let (read, deleted) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(reader, deleter) }).await.unwrap();
        deleted.unwrap();
        assert_eq!(read.unwrap_err().code(), ErrorCode::SessionNotFound);
    }

    #[tokio::test]
    async fn an_unrepresentable_wait_waits_for_an_append() {
        let store = InMemorySessionStore::new();
        let s = session(&store).await;
        let query = EventQuery::new().wait(Duration::MAX);
        let reader = store.get_events(&s.id, &query);
        let writer = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            store.append_event(Event::new(EventKind::MessageSent, s.id.clone())).await
        };
        let (read, appended) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(reader, writer) }).await.unwrap();
        assert_eq!(read.unwrap(), vec![appended.unwrap()]);
    }

    #[tokio::test]
    async fn a_cancelled_long_poll_unregisters() {
        let store = InMemorySessionStore::new();
        let s = session(&store).await;
        let slot = store.slot(&s.id).unwrap();
        let query = EventQuery::new().wait(Duration::from_secs(30));
        let timed_out = tokio::time::timeout(Duration::from_millis(20), store.get_events(&s.id, &query)).await;
        assert!(timed_out.is_err());
        assert_eq!(slot.waiter_count(), 0);
    }

    #[tokio::test]
    async fn duplicate_ids_are_global_across_sessions() {
        let store = InMemorySessionStore::new();
        let a = session(&store).await;
        let b = session(&store).await;
        let stored = store.append_event(Event::new(EventKind::MessageSent, a.id.clone())).await.unwrap();
        let mut again = stored.clone().into_event();
        again.session_id = b.id.clone();
        again.sequence = None;
        assert_eq!(store.append_event(again).await.unwrap(), stored);
        assert_eq!(store.latest_sequence(&b.id).await.unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_appends_of_the_same_ids_to_two_sessions_store_each_id_once() {
        let store = InMemorySessionStore::new();
        let a = session(&store).await;
        let b = session(&store).await;
        for _ in 0..200 {
            let for_a: Vec<Event> = (0..3).map(|_| Event::new(EventKind::MessageSent, a.id.clone())).collect();
            let for_b: Vec<Event> = for_a
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    e.session_id = b.id.clone();
                    e
                })
                .collect();
            let (sa, sb) = (store.clone(), store.clone());
            let ta = tokio::spawn(async move { sa.append_events(for_a).await });
            let tb = tokio::spawn(async move { sb.append_events(for_b).await });
            let (ra, rb) = (ta.await.unwrap().unwrap(), tb.await.unwrap().unwrap());
            // Both see the same stored events: the batch that won stored all three.
            assert_eq!(ra, rb);
            assert!(ra.iter().all(|e| e.session_id == ra[0].session_id));
        }
        let stored = store.latest_sequence(&a.id).await.unwrap() + store.latest_sequence(&b.id).await.unwrap();
        assert_eq!(stored, 600);
        assert_eq!(store.inner.events.len(), 600);
    }

    #[tokio::test]
    async fn a_run_cannot_move_to_another_session() {
        let store = InMemorySessionStore::new();
        let a = session(&store).await;
        let b = session(&store).await;
        let run = Run::new(a.id.clone(), RunInput::user("x"));
        store.save_run(&run).await.unwrap();
        let mut moved = run.clone();
        moved.session_id = b.id.clone();
        assert_eq!(store.save_run(&moved).await.unwrap_err().code(), ErrorCode::SessionMismatch);
        assert_eq!(store.flush(ExecutionRecord::new(moved)).await.unwrap_err().code(), ErrorCode::SessionMismatch);
        assert_eq!(store.get_run(&run.id).await.unwrap(), run);
        assert!(store.list_runs(&b.id, &RunQuery::new()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn delete_cleans_the_global_indexes() {
        let store = InMemorySessionStore::new();
        let keep = session(&store).await;
        let gone = session(&store).await;
        for s in [&keep, &gone] {
            let run = Run::new(s.id.clone(), RunInput::user("x"));
            store.save_run(&run).await.unwrap();
            let events = (0..50).map(|_| Event::new(EventKind::MessageSent, s.id.clone()).with_run(run.id.clone()));
            store.append_events(events.collect()).await.unwrap();
        }
        assert_eq!(store.inner.events.len(), 100);
        store.delete_session(&gone.id).await.unwrap();
        assert_eq!(store.inner.events.len(), 50);
        assert_eq!(store.inner.runs.read().len(), 1);
        assert_eq!(store.inner.catalog.read().order.len(), 1);
    }

    #[tokio::test]
    async fn save_session_moves_the_listing_key_when_created_at_changes() {
        let store = InMemorySessionStore::new();
        let mut s = session(&store).await;
        s.created_at = Timestamp::from_timestamp_micros(1_000).unwrap();
        store.save_session(&s).await.unwrap();
        assert_eq!(store.inner.catalog.read().order.len(), 1);
        let page = store.list_sessions(&SessionQuery::new()).await.unwrap();
        assert_eq!(page.items, vec![s]);
    }
}
