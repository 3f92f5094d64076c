//! The single writer: group commit on a dedicated OS thread.
//!
//! Callers send a [`Request`] over a channel and await its oneshot reply. The writer blocks for
//! the first request, drains whatever else is queued (up to [`MAX_GROUP`] requests or
//! [`MAX_GROUP_BYTES`] of events), applies them in order in ONE write transaction, commits, and
//! only then answers each caller. Every request checks everything that can fail before its first
//! change, so a rejected request leaves the transaction as it found it and the others commit. A
//! storage failure in the middle of a request (or of the commit) aborts the transaction; the
//! group is then replayed one request per transaction, so only the request that fails, fails.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use asm_core::{Error, ErrorCode, JsonMap, Result, Run, RunStatus, Session, SessionId};
use asm_ports::{check_expected_status, check_run_accepts_events, check_run_overwrite, merge_patch};
use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

use crate::codec::{self, EncodedEvent};
use crate::error::{self, Op, storage};
use crate::keys::{self, EventPos, Id, RunStartKey, SessionOrderKey, SessionRunKey};
use crate::options::{Durability, RedbOptions};
use crate::schema;
use crate::waiters::Waiters;

/// Most requests in one transaction.
pub(crate) const MAX_GROUP: usize = 1024;
/// Most event bytes in one transaction (a larger single request still commits alone).
pub(crate) const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// A write, as the writer receives it (everything serialised by the caller already).
#[derive(Debug)]
pub(crate) enum Command {
    SaveSession {
        key: Id,
        created_at_micros: i64,
        json: Vec<u8>,
    },
    DeleteSession {
        key: Id,
        id: SessionId,
    },
    SaveRun {
        run_key: Id,
        session_key: Id,
        run: Run,
        json: Vec<u8>,
    },
    Append {
        key: Id,
        id: SessionId,
        events: Vec<EncodedEvent>,
        expected_last_sequence: Option<u64>,
    },
    Flush {
        session_key: Id,
        run_key: Id,
        run: Run,
        run_json: Vec<u8>,
        events: Vec<EncodedEvent>,
        metadata: JsonMap,
        expected_status: Option<RunStatus>,
    },
    /// Makes every acknowledged write durable (a no-op with [`Durability::Immediate`]).
    Sync,
}

impl Command {
    fn weight(&self) -> usize {
        match self {
            Command::Append { events, .. } | Command::Flush { events, .. } => {
                events.iter().map(|e| e.bytes.len()).sum()
            }
            Command::SaveSession { json, .. } | Command::SaveRun { json, .. } => json.len(),
            Command::DeleteSession { .. } | Command::Sync => 0,
        }
    }
}

/// Where the event at one position of an appended batch ended up.
#[derive(Debug)]
pub(crate) enum Slot {
    /// Stored now with this sequence.
    New(u64),
    /// Already stored (a retried append): its position and stored bytes.
    Stored { pos: EventPos, bytes: Vec<u8> },
    /// A repeat of the event at this earlier position of the same batch.
    Same(usize),
}

/// The answer to one request.
#[derive(Debug)]
pub(crate) enum Reply {
    Done,
    Appended(Vec<Slot>),
}

/// A write and where to send its outcome.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Result<Reply>>,
}

/// Why a request did not apply.
enum Failure {
    /// The request is refused; the transaction is unchanged.
    Rejected(Error),
    /// redb failed; the transaction may hold part of the request and must be aborted.
    Storage(Error),
}

fn fail<E: Into<redb::Error>>(what: &'static str) -> impl FnOnce(E) -> Failure {
    move |e| Failure::Storage(storage(Op::Write, what, e))
}

/// The writer thread's state.
pub(crate) struct Writer {
    db: Arc<Database>,
    durability: Durability,
    waiters: Arc<Waiters>,
    requests: Receiver<Request>,
    /// With [`Durability::Eventual`]: when the oldest commit not yet fsynced was made.
    unsynced_since: Option<Instant>,
}

impl Writer {
    pub(crate) fn new(
        db: Arc<Database>,
        durability: Durability,
        waiters: Arc<Waiters>,
        requests: Receiver<Request>,
    ) -> Self {
        Self { db, durability, waiters, requests, unsynced_since: None }
    }

    /// Serves requests until every sender is gone, then makes everything durable.
    pub(crate) fn run(mut self) {
        loop {
            let first = match self.unsynced_since {
                Some(since) => {
                    let deadline = since + RedbOptions::EVENTUAL_SYNC_INTERVAL;
                    let now = Instant::now();
                    if now >= deadline {
                        self.sync_now();
                        continue;
                    }
                    match self.requests.recv_timeout(deadline - now) {
                        Ok(request) => request,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync_now();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match self.requests.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            let mut bytes = first.command.weight();
            let mut group = vec![first];
            while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                match self.requests.try_recv() {
                    Ok(request) => {
                        bytes += request.command.weight();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.process(group);
        }
        if self.unsynced_since.is_some() {
            self.sync_now();
        }
        tracing::debug!("redb writer stopped");
    }

    /// An empty durable commit: makes the earlier non-durable commits durable.
    fn sync_now(&mut self) {
        let result = self
            .db
            .begin_write()
            .map_err(|e| storage(Op::Write, "begin_write", e))
            .and_then(|txn| txn.commit().map_err(|e| storage(Op::Write, "commit", e)));
        match result {
            Ok(()) => self.unsynced_since = None,
            Err(e) => {
                tracing::warn!(error = %e, "redb sync failed; retrying later");
                self.unsynced_since = Some(Instant::now());
            }
        }
    }

    fn process(&mut self, group: Vec<Request>) {
        let span = tracing::debug_span!("redb_group_commit", requests = group.len());
        let _entered = span.enter();
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.commit_group(&group))) {
            Ok(outcome) => outcome,
            Err(payload) => Err(error::panicked("a write transaction", &*payload)),
        };
        match outcome {
            Ok((replies, touched)) => {
                self.waiters.notify(&touched);
                for (request, reply) in group.into_iter().zip(replies) {
                    // A caller that stopped waiting is no reason to fail the others.
                    let _ = request.reply.send(reply);
                }
            }
            Err(e) if group.len() > 1 => {
                tracing::warn!(error = %e, requests = group.len(), "group commit failed; retrying one request at a time");
                for request in group {
                    self.process(vec![request]);
                }
            }
            Err(e) => {
                for request in group {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Applies the group in one transaction and commits it. `Err` means nothing was committed.
    fn commit_group(&mut self, group: &[Request]) -> Result<(Vec<Result<Reply>>, Vec<Id>)> {
        let force_sync = group.iter().any(|r| matches!(r.command, Command::Sync));
        let mut txn = self.db.begin_write().map_err(|e| storage(Op::Write, "begin_write", e))?;
        let durable = match self.durability {
            Durability::Immediate => true,
            Durability::Eventual => {
                force_sync
                    || self.unsynced_since.is_some_and(|since| since.elapsed() >= RedbOptions::EVENTUAL_SYNC_INTERVAL)
            }
        };
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| Error::new(ErrorCode::StorageWriteFailed, format!("redb set_durability failed: {e}")))?;
        }
        let mut replies = Vec::with_capacity(group.len());
        let mut touched = Vec::new();
        let mut changed = false;
        {
            let mut tables = Tables::open(&txn)?;
            for request in group {
                match tables.apply(&request.command, &mut touched) {
                    Ok((reply, wrote)) => {
                        changed |= wrote;
                        replies.push(Ok(reply));
                    }
                    Err(Failure::Rejected(e)) => replies.push(Err(e)),
                    Err(Failure::Storage(e)) => return Err(e),
                }
            }
        }
        let must_commit = changed || (durable && self.unsynced_since.is_some());
        if !must_commit {
            if let Err(e) = txn.abort() {
                tracing::debug!(error = %e, "abort of an empty write transaction failed");
            }
            return Ok((replies, touched));
        }
        txn.commit().map_err(|e| storage(Op::Write, "commit", e))?;
        if durable {
            self.unsynced_since = None;
        } else if self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        Ok((replies, touched))
    }
}

/// The tables of one write transaction.
struct Tables<'txn> {
    sessions: Table<'txn, &'static Id, &'static [u8]>,
    session_order: Table<'txn, &'static SessionOrderKey, ()>,
    events: Table<'txn, &'static EventPos, &'static [u8]>,
    event_ids: Table<'txn, &'static Id, &'static EventPos>,
    run_starts: Table<'txn, &'static RunStartKey, u64>,
    runs: Table<'txn, &'static Id, &'static [u8]>,
    session_runs: Table<'txn, &'static SessionRunKey, ()>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        let w = |e: redb::TableError| storage(Op::Write, "open table", e);
        Ok(Self {
            sessions: txn.open_table(schema::SESSIONS).map_err(w)?,
            session_order: txn.open_table(schema::SESSION_ORDER).map_err(w)?,
            events: txn.open_table(schema::EVENTS).map_err(w)?,
            event_ids: txn.open_table(schema::EVENT_IDS).map_err(w)?,
            run_starts: txn.open_table(schema::RUN_STARTS).map_err(w)?,
            runs: txn.open_table(schema::RUNS).map_err(w)?,
            session_runs: txn.open_table(schema::SESSION_RUNS).map_err(w)?,
        })
    }

    /// Applies one command; returns its reply and whether it changed anything.
    fn apply(&mut self, command: &Command, touched: &mut Vec<Id>) -> std::result::Result<(Reply, bool), Failure> {
        match command {
            Command::SaveSession { key, created_at_micros, json } => {
                self.save_session(key, *created_at_micros, json)?;
                Ok((Reply::Done, true))
            }
            Command::DeleteSession { key, id } => {
                self.delete_session(key, id)?;
                touched.push(*key);
                Ok((Reply::Done, true))
            }
            Command::SaveRun { run_key, session_key, run, json } => {
                self.require_session(session_key, &run.session_id)?;
                let stored = self.check_run(run_key, run)?;
                self.write_run(session_key, run_key, run, json, stored.as_ref())?;
                Ok((Reply::Done, true))
            }
            Command::Append { key, id, events, expected_last_sequence } => {
                let head = self.require_session(key, id)?;
                let mut slots = self.resolve(events)?;
                let any_new = slots.iter().any(|s| matches!(s, Slot::New(_)));
                if let Some(expected) = expected_last_sequence.filter(|&expected| any_new && expected != head) {
                    return Err(Failure::Rejected(
                        Error::new(
                            ErrorCode::InvalidOperation,
                            format!("expected last sequence {expected}, but the session is at {head}"),
                        )
                        .with_detail("expected_last_sequence", expected)
                        .with_detail("actual_last_sequence", head),
                    ));
                }
                if any_new {
                    self.check_runs_accept(key, events, &slots)?;
                    self.write_events(key, head, events, &mut slots)?;
                    touched.push(*key);
                }
                Ok((Reply::Appended(slots), any_new))
            }
            Command::Flush { session_key, run_key, run, run_json, events, metadata, expected_status } => {
                let head = self.require_session(session_key, &run.session_id)?;
                let stored_run = self.check_run(run_key, run)?;
                check_expected_status(&run.id, stored_run.as_ref(), *expected_status).map_err(Failure::Rejected)?;
                let mut slots = self.resolve(events)?;
                self.check_runs_accept(session_key, events, &slots)?;
                let session_json = if metadata.is_empty() {
                    None
                } else {
                    let mut session = self.read_session(session_key, &run.session_id)?;
                    merge_patch(&mut session.metadata, metadata);
                    Some(serde_json::to_vec(&session).map_err(|e| {
                        Failure::Rejected(Error::new(ErrorCode::InternalError, format!("cannot encode session: {e}")))
                    })?)
                };
                // Every check is done: from here on, only writes.
                if slots.iter().any(|s| matches!(s, Slot::New(_))) {
                    self.write_events(session_key, head, events, &mut slots)?;
                    touched.push(*session_key);
                }
                self.write_run(session_key, run_key, run, run_json, stored_run.as_ref())?;
                if let Some(json) = session_json {
                    self.sessions.insert(session_key, json.as_slice()).map_err(fail("write session"))?;
                }
                Ok((Reply::Appended(slots), true))
            }
            Command::Sync => Ok((Reply::Done, false)),
        }
    }

    /// The session's last sequence, or `SessionNotFound`.
    fn require_session(&self, key: &Id, id: &SessionId) -> std::result::Result<u64, Failure> {
        match self.events.get(&keys::head_pos(key)).map_err(fail("read head"))? {
            Some(head) => keys::decode_head(head.value()).map_err(Failure::Rejected),
            None => Err(Failure::Rejected(error::session_not_found(id))),
        }
    }

    fn read_session(&self, key: &Id, id: &SessionId) -> std::result::Result<Session, Failure> {
        let guard = self.sessions.get(key).map_err(fail("read session"))?;
        let guard = guard.ok_or_else(|| Failure::Rejected(error::session_not_found(id)))?;
        serde_json::from_slice(guard.value()).map_err(|e| Failure::Rejected(error::corrupt_record("session", &e)))
    }

    fn save_session(&mut self, key: &Id, created_at_micros: i64, json: &[u8]) -> std::result::Result<(), Failure> {
        let previous = match self.sessions.get(key).map_err(fail("read session"))? {
            Some(guard) => Some(
                serde_json::from_slice::<Session>(guard.value())
                    .map(|s| s.created_at.timestamp_micros())
                    .map_err(|e| Failure::Rejected(error::corrupt_record("session", &e)))?,
            ),
            None => None,
        };
        if previous != Some(created_at_micros) {
            if let Some(old) = previous {
                self.session_order.remove(&keys::session_order_key(old, key)).map_err(fail("update session order"))?;
            }
            self.session_order
                .insert(&keys::session_order_key(created_at_micros, key), ())
                .map_err(fail("update session order"))?;
        }
        self.sessions.insert(key, json).map_err(fail("write session"))?;
        let head = keys::head_pos(key);
        if self.events.get(&head).map_err(fail("read head"))?.is_none() {
            self.events.insert(&head, 0u64.to_le_bytes().as_slice()).map_err(fail("write head"))?;
        }
        Ok(())
    }

    fn delete_session(&mut self, key: &Id, id: &SessionId) -> std::result::Result<(), Failure> {
        self.require_session(key, id)?;
        let created_at_micros = self
            .sessions
            .get(key)
            .map_err(fail("read session"))?
            .and_then(|guard| serde_json::from_slice::<Session>(guard.value()).ok())
            .map(|s| s.created_at.timestamp_micros());
        let (low, high) = keys::prefix_bounds::<44>(key);
        let mut run_keys = Vec::new();
        for entry in self.session_runs.range::<&keys::SessionRunKey>(&low..=&high).map_err(fail("read session runs"))? {
            let (k, _) = entry.map_err(fail("read session runs"))?;
            run_keys.push(keys::run_of_session_run_key(k.value()));
        }
        let (low, head) = (keys::event_pos(key, 0), keys::head_pos(key));
        let mut event_ids = Vec::new();
        for entry in self.events.range::<&EventPos>(&low..&head).map_err(fail("read events"))? {
            let (_, value) = entry.map_err(fail("read events"))?;
            // An unreadable record loses its index entry only; `resolve` treats a dangling one
            // as absent.
            if let Ok(event_id) = codec::stored_event_id(value.value()) {
                event_ids.push(event_id);
            }
        }

        // Every read is done: from here on, only writes.
        match created_at_micros {
            Some(micros) => {
                self.session_order
                    .remove(&keys::session_order_key(micros, key))
                    .map_err(fail("update session order"))?;
            }
            None => {
                self.session_order
                    .retain(|k, ()| keys::session_of_order_key(k) != *key)
                    .map_err(fail("update session order"))?;
            }
        }
        self.sessions.remove(key).map_err(fail("delete session"))?;
        for run in &run_keys {
            self.runs.remove(run).map_err(fail("delete run"))?;
        }
        let (low, high) = keys::prefix_bounds::<44>(key);
        self.session_runs
            .retain_in::<&SessionRunKey, _>(&low..=&high, |_, ()| false)
            .map_err(fail("delete session runs"))?;
        let (low, high) = keys::prefix_bounds::<24>(key);
        self.events.retain_in::<&EventPos, _>(&low..=&high, |_, _| false).map_err(fail("delete events"))?;
        for event_id in &event_ids {
            let owned = self
                .event_ids
                .get(event_id)
                .map_err(fail("read event index"))?
                .is_some_and(|pos| keys::split_pos(pos.value()).0 == *key);
            if owned {
                self.event_ids.remove(event_id).map_err(fail("delete event index"))?;
            }
        }
        let (low, high) = keys::prefix_bounds::<32>(key);
        self.run_starts.retain_in::<&RunStartKey, _>(&low..=&high, |_, _| false).map_err(fail("delete run starts"))?;
        tracing::debug!(events = event_ids.len(), runs = run_keys.len(), "session deleted");
        Ok(())
    }

    /// The stored copy of `run`, after checking that `run` may replace it.
    fn check_run(&self, run_key: &Id, run: &Run) -> std::result::Result<Option<Run>, Failure> {
        let Some(guard) = self.runs.get(run_key).map_err(fail("read run"))? else { return Ok(None) };
        let stored: Run =
            serde_json::from_slice(guard.value()).map_err(|e| Failure::Rejected(error::corrupt_record("run", &e)))?;
        if stored.session_id != run.session_id {
            return Err(Failure::Rejected(
                Error::new(ErrorCode::SessionMismatch, format!("run {} belongs to another session", run.id))
                    .with_detail("run_id", run.id.as_str()),
            ));
        }
        check_run_overwrite(&stored, run).map_err(Failure::Rejected)?;
        Ok(Some(stored))
    }

    fn write_run(
        &mut self,
        session_key: &Id,
        run_key: &Id,
        run: &Run,
        json: &[u8],
        stored: Option<&Run>,
    ) -> std::result::Result<(), Failure> {
        let order = keys::session_run_key(session_key, run.created_at, run_key);
        if let Some(stored) = stored.filter(|s| s.created_at != run.created_at) {
            let old = keys::session_run_key(session_key, stored.created_at, run_key);
            self.session_runs.remove(&old).map_err(fail("update run order"))?;
        }
        self.session_runs.insert(&order, ()).map_err(fail("update run order"))?;
        self.runs.insert(run_key, json).map_err(fail("write run"))?;
        Ok(())
    }

    /// "No event of a run after its terminal state": every new event naming a run of this
    /// session whose stored state is terminal refuses the request (before any write).
    fn check_runs_accept(
        &self,
        session: &Id,
        events: &[EncodedEvent],
        slots: &[Slot],
    ) -> std::result::Result<(), Failure> {
        let mut checked: Vec<Id> = Vec::new();
        for (event, slot) in events.iter().zip(slots) {
            let (Slot::New(_), Some(run_key)) = (slot, &event.run) else { continue };
            if checked.contains(run_key) {
                continue;
            }
            checked.push(*run_key);
            let Some(guard) = self.runs.get(run_key).map_err(fail("read run"))? else { continue };
            let head: codec::RunHead = serde_json::from_slice(guard.value())
                .map_err(|e| Failure::Rejected(error::corrupt_record("run", &e)))?;
            if keys::session_key(&head.session_id).ok().as_ref() == Some(session) {
                check_run_accepts_events(&head.id, head.status).map_err(Failure::Rejected)?;
            }
        }
        Ok(())
    }

    /// Sorts a batch into already stored events, in-batch repeats and new events.
    fn resolve(&self, events: &[EncodedEvent]) -> std::result::Result<Vec<Slot>, Failure> {
        let mut slots = Vec::with_capacity(events.len());
        let mut first_new: HashMap<Id, usize> = HashMap::new();
        for (position, event) in events.iter().enumerate() {
            let stored_at = self.event_ids.get(&event.id).map_err(fail("read event index"))?.map(|pos| *pos.value());
            let stored = match stored_at {
                Some(pos) => {
                    self.events.get(&pos).map_err(fail("read event"))?.map(|bytes| (pos, bytes.value().to_vec()))
                }
                None => None,
            };
            if let Some((pos, bytes)) = stored {
                slots.push(Slot::Stored { pos, bytes });
            } else if let Some(&earlier) = first_new.get(&event.id) {
                slots.push(Slot::Same(earlier));
            } else {
                if events.len() > 1 {
                    first_new.insert(event.id, position);
                }
                slots.push(Slot::New(0));
            }
        }
        Ok(slots)
    }

    /// Stores the [`Slot::New`] events after `head`, numbering them in order.
    fn write_events(
        &mut self,
        session: &Id,
        head: u64,
        events: &[EncodedEvent],
        slots: &mut [Slot],
    ) -> std::result::Result<(), Failure> {
        let mut sequence = head;
        let mut started_runs: Vec<Id> = Vec::new();
        for (event, slot) in events.iter().zip(slots.iter_mut()) {
            let Slot::New(assigned) = slot else { continue };
            sequence += 1;
            *assigned = sequence;
            let pos = keys::event_pos(session, sequence);
            self.events.insert(&pos, event.bytes.as_slice()).map_err(fail("write event"))?;
            self.event_ids.insert(&event.id, &pos).map_err(fail("write event index"))?;
            if let Some(run) = &event.run
                && !started_runs.contains(run)
            {
                let start = keys::run_start_key(session, run);
                if self.run_starts.get(&start).map_err(fail("read run starts"))?.is_none() {
                    self.run_starts.insert(&start, sequence).map_err(fail("write run starts"))?;
                }
                started_runs.push(*run);
            }
        }
        if sequence != head {
            self.events
                .insert(&keys::head_pos(session), sequence.to_le_bytes().as_slice())
                .map_err(fail("write head"))?;
        }
        Ok(())
    }
}
