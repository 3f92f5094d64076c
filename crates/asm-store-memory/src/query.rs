//! The query and maintenance ports of the in-memory store.
//!
//! Cross-session queries scan every session (the store has no cross-session index): `O(n log n)`
//! in the sessions (or runs) of the store, with the rules of
//! [`SessionSearch::page`] / [`RunSearch::page`], so pagination is the same keyset pagination as
//! in every store. Pruning leaves a `None` in the pruned event's place of the session's log, so
//! sequence numbers keep their positions and cursor reads skip the gaps.

use std::sync::Arc;

use async_trait::async_trait;

use asm_core::{Result, Run, Session, SessionId, StoredEvent};
use asm_ports::backend::is_protected_kind;
use asm_ports::{
    EventSearch, HealthIssue, HealthReport, MaintenanceStore, Page, QueryStore, RunSearch, SessionSearch, SessionStats,
    UsageQuery, UsageReport,
};

use crate::InMemorySessionStore;
use crate::slot::{SessionSlot, session_not_found};

impl InMemorySessionStore {
    /// Every live slot, taken under the catalog's read lock and released before the slots are read.
    fn all_slots(&self) -> Vec<Arc<SessionSlot>> {
        self.inner.catalog.read().slots.values().cloned().collect()
    }

    /// The slots an event search reads: its sessions, or every session.
    fn event_slots(&self, query: &EventSearch) -> Vec<Arc<SessionSlot>> {
        if query.session_ids.is_empty() {
            return self.all_slots();
        }
        let catalog = self.inner.catalog.read();
        query.session_ids.iter().filter_map(|id| catalog.slots.get(id).cloned()).collect()
    }

    /// The stored events matching `query`'s filters, session by session.
    fn matching_events(&self, query: &EventSearch) -> Vec<StoredEvent> {
        let mut out = Vec::new();
        for slot in self.event_slots(query) {
            let state = slot.state.read();
            if state.deleted {
                continue;
            }
            out.extend(state.events.iter().flatten().filter(|event| query.matches(event)).cloned());
        }
        out
    }
}

#[async_trait]
impl QueryStore for InMemorySessionStore {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn search_sessions(&self, query: &SessionSearch) -> Result<Page<Session>> {
        query.validate()?;
        let sessions: Vec<Session> = self
            .all_slots()
            .iter()
            .filter_map(|slot| {
                let state = slot.state.read();
                (!state.deleted && query.matches(&state.session)).then(|| state.session.clone())
            })
            .collect();
        query.page(sessions)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn search_runs(&self, query: &RunSearch) -> Result<Page<Run>> {
        query.validate()?;
        let slots = match &query.session_id {
            Some(id) => self.inner.catalog.read().slots.get(id).cloned().into_iter().collect(),
            None => self.all_slots(),
        };
        let mut runs = Vec::new();
        for slot in slots {
            let state = slot.state.read();
            if state.deleted {
                continue;
            }
            runs.extend(state.runs.values().filter(|run| query.matches(run)).cloned());
        }
        query.page(runs)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn usage_summary(&self, query: &UsageQuery) -> Result<UsageReport> {
        let mut runs: Vec<(Run, String)> = Vec::new();
        for slot in self.all_slots() {
            let state = slot.state.read();
            if state.deleted {
                continue;
            }
            let agent = state.session.agent_id.as_str();
            runs.extend(
                state.runs.values().filter(|run| query.matches(run, agent)).map(|r| (r.clone(), agent.to_owned())),
            );
        }
        Ok(UsageReport::from_runs(runs.iter().map(|(run, agent)| (run, agent.as_str()))))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn search_events(&self, query: &EventSearch) -> Result<Page<StoredEvent>> {
        query.validate()?;
        query.page(self.matching_events(query))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn count_events(&self, query: &EventSearch) -> Result<u64> {
        Ok(self.matching_events(query).len() as u64)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn get_session_stats(&self, session_id: &SessionId) -> Result<SessionStats> {
        let slot = self.slot(session_id)?;
        let state = slot.state.read();
        if state.deleted {
            return Err(session_not_found(session_id));
        }
        let mut stats = SessionStats::new(session_id.clone());
        for event in state.events.iter().flatten() {
            stats.add_event(event);
        }
        for run in state.runs.values() {
            stats.add_run(run);
        }
        stats.last_sequence = state.last_sequence();
        Ok(stats)
    }
}

#[async_trait]
impl MaintenanceStore for InMemorySessionStore {
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id, count = sequences.len()))]
    async fn prune_events(&self, session_id: &SessionId, sequences: &[u64]) -> Result<u64> {
        let slot = self.slot(session_id)?;
        let mut state = slot.state.write();
        if state.deleted {
            return Err(session_not_found(session_id));
        }
        let mut removed: Vec<StoredEvent> = Vec::new();
        for &sequence in sequences {
            let Some(index) = sequence.checked_sub(1).and_then(|i| usize::try_from(i).ok()) else { continue };
            let Some(entry) = state.events.get_mut(index) else { continue };
            if entry.as_ref().is_none_or(|event| is_protected_kind(event.kind)) {
                continue;
            }
            if let Some(event) = entry.take() {
                removed.push(event);
            }
        }
        state.pruned += removed.len();
        for event in &removed {
            let (Some(run_id), Some(sequence)) = (&event.run_id, event.sequence) else { continue };
            if let Some(list) = state.run_events.get_mut(run_id) {
                list.retain(|&s| s != sequence);
            }
        }
        // Still under the session lock (lock order: slot state -> event-id shards): a pruned id
        // is forgotten, as in every store.
        self.inner.events.remove_owned(&slot, &removed);
        Ok(removed.len() as u64)
    }

    async fn clean_orphans(&self, _dry_run: bool) -> Result<u64> {
        // Deleting a session removes its runs and events in one critical section: this store
        // cannot hold orphans.
        Ok(0)
    }

    async fn health_check(&self) -> Result<HealthReport> {
        let mut issues = Vec::new();
        for slot in self.all_slots() {
            let state = slot.state.read();
            let counter = state.last_sequence();
            let max_sequence = state.events.iter().rposition(Option::is_some).map_or(0, |i| i as u64 + 1);
            if counter < max_sequence {
                issues.push(HealthIssue::SequenceBehind {
                    session_id: state.session.id.clone(),
                    counter,
                    max_sequence,
                });
            }
        }
        Ok(HealthReport::new(issues))
    }
}
