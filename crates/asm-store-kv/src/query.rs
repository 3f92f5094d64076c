//! The query and maintenance ports of the key-value stores.
//!
//! The layout has no cross-session index, so the cross-session queries **scan**: sessions read
//! the whole `sessions` table, runs the whole `runs` table (a `session_id` filter reads only that
//! session's runs through `session_runs`), usage reads both. Each query runs on one snapshot,
//! and pages with the keyset rules of [`SessionSearch::page`] / [`RunSearch::page`], so
//! pagination is stable (no row that did not change is repeated or skipped across pages).
//!
//! Pruning is a writer request of its own: the writer first compacts the log (so every event
//! is in the `(session, sequence)` table and none in the readers' tail), then deletes the
//! events and their id entries in one transaction. The session's head record, its counter, does
//! not change; reads scan `(session, sequence)` ranges, which skip the gaps.
//!
//! A delete is one transaction, so these stores do not produce orphans; the health check and
//! [`KvStore::clean_orphans`] look for them anyway (a damaged file), and the cleanup removes
//! them (a writer request of its own, like a prune).

use std::collections::HashMap;
use std::ops::Bound;

use asm_core::{Error, ErrorCode, Result, Run, Session, SessionId, StoredEvent};
use asm_ports::{
    EventQuery, EventSearch, HealthIssue, HealthReport, Page, RunSearch, SessionSearch, SessionStats, UsageQuery,
    UsageReport,
};

use crate::engine::{KvEngine, KvRead, Table};
use crate::keys::{self, Id};
use crate::store::decode_json;
use crate::writer::{Command, Reply};
use crate::{KvError, KvStore};

const ALL: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Unbounded, Bound::Unbounded);

fn all_sessions<R: KvRead>(snapshot: &R) -> Result<Vec<Session>> {
    let mut out = Vec::new();
    snapshot.scan::<Error>(Table::Sessions, ALL, |_, value| {
        let (_, json) = keys::split_session_value(value)?;
        out.push(decode_json::<Session>("session", json)?);
        Ok(true)
    })?;
    Ok(out)
}

fn all_runs<R: KvRead>(snapshot: &R) -> Result<Vec<Run>> {
    let mut out = Vec::new();
    snapshot.scan::<Error>(Table::Runs, ALL, |_, value| {
        out.push(decode_json::<Run>("run", value)?);
        Ok(true)
    })?;
    Ok(out)
}

/// The runs of one session, through its `session_runs` entries.
fn session_runs<R: KvRead>(snapshot: &R, session: &SessionId) -> Result<Vec<Run>> {
    let key = keys::session_key(session)?;
    let (low, high) = keys::prefix_bounds::<44>(&key);
    let mut run_keys = Vec::new();
    snapshot.scan::<Error>(Table::SessionRuns, (Bound::Included(&low[..]), Bound::Included(&high[..])), |k, _| {
        run_keys.push(keys::run_of_session_run_key(k)?);
        Ok(true)
    })?;
    let mut runs = Vec::with_capacity(run_keys.len());
    for run in &run_keys {
        if let Some(run) = snapshot.get(Table::Runs, run, |v| decode_json::<Run>("run", v))? {
            runs.push(run?);
        }
    }
    Ok(runs)
}

/// What one scan of the events table finds per session: its head record and largest sequence.
#[derive(Default)]
struct EventsOfSession {
    head: Option<u64>,
    max_sequence: u64,
    events: u64,
}

fn events_by_session<R: KvRead>(snapshot: &R) -> Result<HashMap<Id, EventsOfSession>> {
    let mut out: HashMap<Id, EventsOfSession> = HashMap::new();
    snapshot.scan::<Error>(Table::Events, ALL, |key, value| {
        let (session, sequence) = keys::split_pos(&keys::stored_pos(key)?);
        let entry = out.entry(session).or_default();
        if sequence == u64::MAX {
            entry.head = Some(keys::decode_head(value)?);
        } else {
            entry.max_sequence = entry.max_sequence.max(sequence);
            entry.events += 1;
        }
        Ok(true)
    })?;
    Ok(out)
}

impl<E: KvEngine> KvStore<E> {
    /// [`asm_ports::QueryStore::search_sessions`] (a scan of the sessions table).
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME))]
    pub async fn search_sessions(&self, query: &SessionSearch) -> Result<Page<Session>> {
        query.validate()?;
        let sessions = self.read("search_sessions", |snapshot| all_sessions(snapshot))?;
        query.page(sessions)
    }

    /// [`asm_ports::QueryStore::search_runs`] (a scan of the runs table, or of one session's
    /// runs).
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME))]
    pub async fn search_runs(&self, query: &RunSearch) -> Result<Page<Run>> {
        query.validate()?;
        let runs = self.read("search_runs", |snapshot| match &query.session_id {
            None => all_runs(snapshot),
            Some(session) => session_runs(snapshot, session),
        })?;
        query.page(runs)
    }

    /// [`asm_ports::QueryStore::usage_summary`] (a scan of the sessions and runs tables).
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME))]
    pub async fn usage_summary(&self, query: &UsageQuery) -> Result<UsageReport> {
        let (sessions, runs) =
            self.read("usage_summary", |snapshot| Ok((all_sessions(snapshot)?, all_runs(snapshot)?)))?;
        let agents: HashMap<SessionId, String> = sessions.into_iter().map(|s| (s.id, s.agent_id)).collect();
        let counted = runs.iter().filter_map(|run| {
            let agent = agents.get(&run.session_id)?;
            query.matches(run, agent).then_some((run, agent.as_str()))
        });
        Ok(UsageReport::from_runs(counted))
    }

    /// The stored events matching `query`'s filters: each session's log is read with the
    /// session's cursor read (the kinds and a single run pushed down into it), then filtered.
    async fn matching_events(&self, query: &EventSearch) -> Result<Vec<StoredEvent>> {
        let sessions: Vec<SessionId> = if query.session_ids.is_empty() {
            self.read("search_events", |snapshot| {
                let mut ids = Vec::new();
                snapshot.scan::<Error>(Table::Sessions, ALL, |key, _| {
                    let key: Id = key.try_into().map_err(|_| Error::from(KvError::corrupted("a session key")))?;
                    ids.push(keys::session_id(&key)?);
                    Ok(true)
                })?;
                Ok(ids)
            })?
        } else {
            query.session_ids.clone()
        };
        let mut read = EventQuery::new();
        read.kinds.clone_from(&query.kinds);
        if let [run] = query.run_ids.as_slice() {
            read.run_id = Some(run.clone());
        }
        let mut out = Vec::new();
        for session in &sessions {
            match self.get_events(session, &read).await {
                Ok(events) => out.extend(events.into_iter().filter(|e| query.matches(e))),
                // Deleted between the listing and the read, or never stored: no events.
                Err(e) if e.code() == ErrorCode::SessionNotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// [`asm_ports::QueryStore::search_events`] (a cursor read of each matching session).
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME))]
    pub async fn search_events(&self, query: &EventSearch) -> Result<Page<StoredEvent>> {
        query.validate()?;
        query.page(self.matching_events(query).await?)
    }

    /// [`asm_ports::QueryStore::count_events`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME))]
    pub async fn count_events(&self, query: &EventSearch) -> Result<u64> {
        Ok(self.matching_events(query).await?.len() as u64)
    }

    /// [`asm_ports::QueryStore::get_session_stats`] (the session's log, its runs and counter).
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, session_id = %session_id))]
    pub async fn get_session_stats(&self, session_id: &SessionId) -> Result<SessionStats> {
        let mut stats = SessionStats::new(session_id.clone());
        for event in self.get_events(session_id, &EventQuery::new()).await? {
            stats.add_event(&event);
        }
        let runs = self.read("get_session_stats", |snapshot| session_runs(snapshot, session_id))?;
        for run in &runs {
            stats.add_run(run);
        }
        stats.last_sequence = self.latest_sequence(session_id).await?;
        Ok(stats)
    }

    /// [`asm_ports::MaintenanceStore::prune_events`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, session_id = %session_id))]
    pub async fn prune_events(&self, session_id: &SessionId, sequences: &[u64]) -> Result<u64> {
        let command = Command::Prune {
            key: keys::session_key(session_id)?,
            id: session_id.clone(),
            sequences: sequences.to_vec(),
        };
        match self.submit(command).await? {
            Reply::Pruned(n) => Ok(n),
            _ => Err(Error::new(ErrorCode::InternalError, "the writer answered a prune with something else")),
        }
    }

    /// [`asm_ports::MaintenanceStore::clean_orphans`]: the events and runs whose session record
    /// is gone (with their index entries). These stores delete a session in one transaction and
    /// never leave orphans, so finding some means a damaged file; with `dry_run` they are
    /// counted, otherwise one writer request (after a compaction, like a prune) deletes them in
    /// one transaction and returns how many events and runs went.
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, dry_run))]
    pub async fn clean_orphans(&self, dry_run: bool) -> Result<u64> {
        if dry_run {
            let (events, runs) = self.orphans()?;
            return Ok(events + runs);
        }
        match self.submit(Command::CleanOrphans).await? {
            Reply::Pruned(n) => Ok(n),
            _ => Err(Error::new(ErrorCode::InternalError, "the writer answered an orphan cleanup with something else")),
        }
    }

    fn orphans(&self) -> Result<(u64, u64)> {
        self.read("clean_orphans", |snapshot| {
            let mut orphan_events = 0;
            for (session, found) in events_by_session(snapshot)? {
                if snapshot.get(Table::Sessions, &session, |_| ())?.is_none() {
                    orphan_events += found.events;
                }
            }
            let mut orphan_runs = 0;
            for run in all_runs(snapshot)? {
                let key = keys::session_key(&run.session_id)?;
                if snapshot.get(Table::Sessions, &key, |_| ())?.is_none() {
                    orphan_runs += 1;
                }
            }
            Ok((orphan_events, orphan_runs))
        })
    }

    /// [`asm_ports::MaintenanceStore::health_check`]: one scan of the events and runs tables.
    ///
    /// # Errors
    /// See the port.
    pub async fn health_check(&self) -> Result<HealthReport> {
        let behind = self.read("health_check", |snapshot| {
            let mut behind = Vec::new();
            for (session, found) in events_by_session(snapshot)? {
                let head = found.head.unwrap_or(0);
                if found.events > 0 && head < found.max_sequence {
                    behind.push((keys::session_id(&session)?, found.max_sequence));
                }
            }
            Ok(behind)
        })?;
        let mut issues = Vec::new();
        for (session_id, max_sequence) in behind {
            // The counter is the newest recent event, else the head record.
            let counter = self.latest_sequence(&session_id).await.unwrap_or(0);
            if counter < max_sequence {
                issues.push(HealthIssue::SequenceBehind { session_id, counter, max_sequence });
            }
        }
        let (events, runs) = self.orphans()?;
        if events > 0 {
            issues.push(HealthIssue::OrphanedEvents { count: events });
        }
        if runs > 0 {
            issues.push(HealthIssue::OrphanedRuns { count: runs });
        }
        Ok(HealthReport::new(issues))
    }
}
