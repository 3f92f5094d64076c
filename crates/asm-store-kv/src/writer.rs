//! The single writer: group commit on a dedicated OS thread.
//!
//! Callers send a [`Request`] over a channel and await its oneshot reply. The writer blocks for
//! the first request, drains whatever else is queued (up to [`MAX_GROUP_REQUESTS`] requests or
//! [`MAX_GROUP_BYTES`] of events), applies them in order in ONE write transaction, commits, and
//! only then answers each caller. Every request checks everything that can fail before its first
//! change, so a rejected request leaves the transaction as it found it and the others commit. A
//! storage failure in the middle of a request (or of the commit) abandons the transaction; the
//! group is then replayed one request per transaction, so only the request that fails, fails.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use asm_core::{Error, ErrorCode, JsonMap, Result, Run, RunStatus, Session, SessionId};
use asm_ports::{check_expected_status, check_run_accepts_events, check_run_overwrite, merge_patch};
use tokio::sync::oneshot;

use crate::codec::{self, EncodedEvent};
use crate::engine::{Finish, KvEngine, KvRead, KvWrite, Table};
use crate::error::{KvError, session_not_found};
use crate::keys::{self, EventPos, Id};
use crate::options::{Durability, EVENTUAL_SYNC_INTERVAL, MAX_GROUP_BYTES, MAX_GROUP_REQUESTS};
use crate::waiters::Waiters;

/// A write, as the writer receives it (everything serialised by the caller already).
#[derive(Debug)]
pub(crate) enum Command {
    SaveSession {
        key: Id,
        order: keys::OrderKey,
        json: Vec<u8>,
    },
    DeleteSession {
        key: Id,
        id: SessionId,
    },
    SaveRun {
        run_key: Id,
        session_key: Id,
        run: Box<Run>,
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
        run: Box<Run>,
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
    /// The engine failed; the transaction may hold part of the request and must be abandoned.
    Storage(Error),
}

impl From<KvError> for Failure {
    fn from(error: KvError) -> Self {
        Failure::Storage(error.into())
    }
}

type Applied<T> = std::result::Result<T, Failure>;

fn rejected(error: Error) -> Failure {
    Failure::Rejected(error)
}

/// The writer thread's state.
pub(crate) struct Writer<E: KvEngine> {
    engine: Arc<E>,
    durability: Durability,
    waiters: Arc<Waiters>,
    requests: Receiver<Request>,
    /// With [`Durability::Eventual`]: when the oldest commit not yet durable was made.
    unsynced_since: Option<Instant>,
}

impl<E: KvEngine> Writer<E> {
    pub(crate) fn new(
        engine: Arc<E>,
        durability: Durability,
        waiters: Arc<Waiters>,
        requests: Receiver<Request>,
    ) -> Self {
        Self { engine, durability, waiters, requests, unsynced_since: None }
    }

    /// Serves requests until every sender is gone, then makes everything durable.
    pub(crate) fn run(mut self) {
        loop {
            let first = match self.unsynced_since {
                Some(since) => {
                    let deadline = since + EVENTUAL_SYNC_INTERVAL;
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
            while group.len() < MAX_GROUP_REQUESTS && bytes < MAX_GROUP_BYTES {
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
        tracing::debug!(engine = E::NAME, "writer stopped");
    }

    /// Makes the earlier non-durable commits durable.
    fn sync_now(&mut self) {
        let result = match catch_unwind(AssertUnwindSafe(|| self.engine.sync())) {
            Ok(result) => result,
            Err(payload) => Err(KvError::panicked("a sync", &*payload)),
        };
        match result {
            Ok(()) => self.unsynced_since = None,
            Err(e) => {
                tracing::warn!(engine = E::NAME, error = %e, "sync failed; retrying later");
                self.unsynced_since = Some(Instant::now());
            }
        }
    }

    fn process(&mut self, group: Vec<Request>) {
        let span = tracing::debug_span!("kv_group_commit", engine = E::NAME, requests = group.len());
        let _entered = span.enter();
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.commit_group(&group))) {
            Ok(outcome) => outcome,
            Err(payload) => Err(KvError::panicked("a write transaction", &*payload).into()),
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
        let durable = match self.durability {
            Durability::Immediate => true,
            Durability::Eventual => {
                force_sync || self.unsynced_since.is_some_and(|since| since.elapsed() >= EVENTUAL_SYNC_INTERVAL)
            }
        };
        let (replies, touched, changed) = self.engine.write(durable, |txn| {
            let mut replies = Vec::with_capacity(group.len());
            let mut touched = Vec::new();
            let mut changed = false;
            for request in group {
                match apply(txn, &request.command, &mut touched) {
                    Ok((reply, wrote)) => {
                        changed |= wrote;
                        replies.push(Ok(reply));
                    }
                    Err(Failure::Rejected(e)) => replies.push(Err(e)),
                    Err(Failure::Storage(e)) => return Err(e),
                }
            }
            let finish = if changed { Finish::Commit } else { Finish::Abort };
            Ok(((replies, touched, changed), finish))
        })?;
        if changed {
            if durable {
                self.unsynced_since = None;
            } else if self.unsynced_since.is_none() {
                self.unsynced_since = Some(Instant::now());
            }
        } else if durable && self.unsynced_since.is_some() {
            self.engine.sync()?;
            self.unsynced_since = None;
        }
        Ok((replies, touched))
    }
}

/// Applies one command; returns its reply and whether it changed anything.
fn apply<T: KvWrite>(txn: &mut T, command: &Command, touched: &mut Vec<Id>) -> Applied<(Reply, bool)> {
    match command {
        Command::SaveSession { key, order, json } => {
            save_session(txn, key, order, json)?;
            Ok((Reply::Done, true))
        }
        Command::DeleteSession { key, id } => {
            delete_session(txn, key, id)?;
            touched.push(*key);
            Ok((Reply::Done, true))
        }
        Command::SaveRun { run_key, session_key, run, json } => {
            require_session(txn, session_key, &run.session_id)?;
            let stored = check_run(txn, run_key, run)?;
            write_run(txn, session_key, run_key, run, json, stored.as_ref())?;
            Ok((Reply::Done, true))
        }
        Command::Append { key, id, events, expected_last_sequence } => {
            let head = require_session(txn, key, id)?;
            let mut slots = resolve(txn, events)?;
            let new = slots.iter().filter(|s| matches!(s, Slot::New(_))).count();
            if let Some(expected) = expected_last_sequence.filter(|&expected| new > 0 && expected != head) {
                return Err(rejected(
                    Error::new(
                        ErrorCode::InvalidOperation,
                        format!("expected last sequence {expected}, but the session is at {head}"),
                    )
                    .with_detail("expected_last_sequence", expected)
                    .with_detail("actual_last_sequence", head),
                ));
            }
            if new > 0 {
                check_room(head, new)?;
                check_runs_accept(txn, key, events, &slots)?;
                write_events(txn, key, head, events, &mut slots)?;
                touched.push(*key);
            }
            Ok((Reply::Appended(slots), new > 0))
        }
        Command::Flush { session_key, run_key, run, run_json, events, metadata, expected_status } => {
            let head = require_session(txn, session_key, &run.session_id)?;
            let stored_run = check_run(txn, run_key, run)?;
            check_expected_status(&run.id, stored_run.as_ref(), *expected_status).map_err(rejected)?;
            let mut slots = resolve(txn, events)?;
            let new = slots.iter().filter(|s| matches!(s, Slot::New(_))).count();
            check_room(head, new)?;
            check_runs_accept(txn, session_key, events, &slots)?;
            let session_value = if metadata.is_empty() {
                None
            } else {
                let (order, mut session) = read_session(txn, session_key, &run.session_id)?;
                merge_patch(&mut session.metadata, metadata);
                let json = serde_json::to_vec(&session).map_err(|e| {
                    rejected(Error::new(ErrorCode::InternalError, format!("cannot encode session: {e}")))
                })?;
                Some(keys::session_value(&order, &json))
            };
            // Every check is done: from here on, only writes.
            if new > 0 {
                write_events(txn, session_key, head, events, &mut slots)?;
                touched.push(*session_key);
            }
            write_run(txn, session_key, run_key, run, run_json, stored_run.as_ref())?;
            if let Some(value) = session_value {
                txn.put(Table::Sessions, session_key, &value)?;
            }
            Ok((Reply::Appended(slots), true))
        }
        Command::Sync => Ok((Reply::Done, false)),
    }
}

/// The session's last sequence, or `SessionNotFound`.
fn require_session<T: KvRead>(txn: &T, key: &Id, id: &SessionId) -> Applied<u64> {
    match txn.get(Table::Events, &keys::head_pos(key), keys::decode_head)? {
        Some(head) => head.map_err(rejected),
        None => Err(rejected(session_not_found(id))),
    }
}

/// Refuses a batch that would number past the last sequence a session can have.
fn check_room(head: u64, new: usize) -> Applied<()> {
    let room = (u64::MAX - 1).saturating_sub(head);
    if u64::try_from(new).map_or(true, |new| new > room) {
        return Err(rejected(Error::new(ErrorCode::InvalidOperation, "the session's sequence numbers are exhausted")));
    }
    Ok(())
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| KvError::corrupted(format!("a {what} record: {e}")).into())
}

/// The stored session's order key and record.
fn read_session<T: KvRead>(txn: &T, key: &Id, id: &SessionId) -> Applied<(keys::OrderKey, Session)> {
    let decoded = txn.get(Table::Sessions, key, |value| {
        let (order, json) = keys::split_session_value(value)?;
        Ok::<_, Error>((order, decode_json::<Session>("session", json)?))
    })?;
    decoded.ok_or_else(|| rejected(session_not_found(id)))?.map_err(rejected)
}

fn save_session<T: KvWrite>(txn: &mut T, key: &Id, order: &keys::OrderKey, json: &[u8]) -> Applied<()> {
    let previous = txn.get(Table::Sessions, key, |value| keys::split_session_value(value).map(|(order, _)| order))?;
    let previous = previous.transpose().map_err(rejected)?;
    if previous.as_ref() != Some(order) {
        if let Some(old) = previous {
            txn.delete(Table::SessionOrder, &keys::session_order_key(&old, key))?;
        }
        txn.put(Table::SessionOrder, &keys::session_order_key(order, key), &[])?;
    }
    txn.put(Table::Sessions, key, &keys::session_value(order, json))?;
    let head = keys::head_pos(key);
    if txn.get(Table::Events, &head, |_| ())?.is_none() {
        txn.put(Table::Events, &head, &keys::encode_head(0))?;
    }
    Ok(())
}

fn delete_session<T: KvWrite>(txn: &mut T, key: &Id, id: &SessionId) -> Applied<()> {
    require_session(txn, key, id)?;
    let order = txn.get(Table::Sessions, key, |value| keys::split_session_value(value).map(|(order, _)| order).ok())?;
    let (low, high) = keys::prefix_bounds::<44>(key);
    let mut run_keys = Vec::new();
    txn.scan::<Error>(Table::SessionRuns, range(&low, &high), |k, _| {
        run_keys.push(keys::run_of_session_run_key(k)?);
        Ok(true)
    })
    .map_err(Failure::Storage)?;
    let (low, head) = (keys::event_pos(key, 0), keys::head_pos(key));
    let mut event_ids = Vec::new();
    txn.scan::<KvError>(
        Table::Events,
        (std::ops::Bound::Included(&low[..]), std::ops::Bound::Excluded(&head[..])),
        |_, value| {
            // An unreadable record loses its index entry only; `resolve` treats a dangling one as
            // absent.
            if let Ok(event_id) = codec::stored_event_id(value) {
                event_ids.push(event_id);
            }
            Ok(true)
        },
    )?;

    // Every read is done: from here on, only writes.
    match order.flatten() {
        Some(order) => txn.delete(Table::SessionOrder, &keys::session_order_key(&order, key))?,
        None => {
            // An unreadable session record: find its order entry by scanning.
            let mut stale = Vec::new();
            txn.scan::<KvError>(
                Table::SessionOrder,
                (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
                |k, _| {
                    if keys::session_of_order_key(k).ok().as_ref() == Some(key) {
                        stale.push(k.to_vec());
                    }
                    Ok(true)
                },
            )?;
            for k in &stale {
                txn.delete(Table::SessionOrder, k)?;
            }
        }
    }
    txn.delete(Table::Sessions, key)?;
    for run in &run_keys {
        txn.delete(Table::Runs, run)?;
    }
    let (low, high) = keys::prefix_bounds::<44>(key);
    txn.delete_range(Table::SessionRuns, range(&low, &high))?;
    let (low, high) = keys::prefix_bounds::<24>(key);
    txn.delete_range(Table::Events, range(&low, &high))?;
    for event_id in &event_ids {
        let owned = txn.get(Table::EventIds, event_id, |pos| pos.get(..16) == Some(&key[..]))?.unwrap_or(false);
        if owned {
            txn.delete(Table::EventIds, event_id)?;
        }
    }
    let (low, high) = keys::prefix_bounds::<32>(key);
    txn.delete_range(Table::RunStarts, range(&low, &high))?;
    tracing::debug!(events = event_ids.len(), runs = run_keys.len(), "session deleted");
    Ok(())
}

/// `low..=high` as a scan range.
fn range<'a>(low: &'a [u8], high: &'a [u8]) -> crate::engine::KeyRange<'a> {
    (std::ops::Bound::Included(low), std::ops::Bound::Included(high))
}

/// The stored copy of `run`, after checking that `run` may replace it.
fn check_run<T: KvRead>(txn: &T, run_key: &Id, run: &Run) -> Applied<Option<Run>> {
    let Some(stored) = txn.get(Table::Runs, run_key, |value| decode_json::<Run>("run", value))? else {
        return Ok(None);
    };
    let stored = stored.map_err(rejected)?;
    if stored.session_id != run.session_id {
        return Err(rejected(
            Error::new(ErrorCode::SessionMismatch, format!("run {} belongs to another session", run.id))
                .with_detail("run_id", run.id.as_str()),
        ));
    }
    check_run_overwrite(&stored, run).map_err(rejected)?;
    Ok(Some(stored))
}

fn write_run<T: KvWrite>(
    txn: &mut T,
    session_key: &Id,
    run_key: &Id,
    run: &Run,
    json: &[u8],
    stored: Option<&Run>,
) -> Applied<()> {
    let order = keys::session_run_key(session_key, run.created_at, run_key);
    if let Some(stored) = stored.filter(|s| s.created_at != run.created_at) {
        txn.delete(Table::SessionRuns, &keys::session_run_key(session_key, stored.created_at, run_key))?;
    }
    txn.put(Table::SessionRuns, &order, &[])?;
    txn.put(Table::Runs, run_key, json)?;
    Ok(())
}

/// "No event of a run after its terminal state": every new event naming a run of this session
/// whose stored state is terminal refuses the request (before any write).
fn check_runs_accept<T: KvRead>(txn: &T, session: &Id, events: &[EncodedEvent], slots: &[Slot]) -> Applied<()> {
    let mut checked: Vec<Id> = Vec::new();
    for (event, slot) in events.iter().zip(slots) {
        let (Slot::New(_), Some(run_key)) = (slot, &event.run) else { continue };
        if checked.contains(run_key) {
            continue;
        }
        checked.push(*run_key);
        let Some(head) = txn.get(Table::Runs, run_key, |value| decode_json::<codec::RunHead>("run", value))? else {
            continue;
        };
        let head = head.map_err(rejected)?;
        if keys::session_key(&head.session_id).ok().as_ref() == Some(session) {
            check_run_accepts_events(&head.id, head.status).map_err(rejected)?;
        }
    }
    Ok(())
}

/// Sorts a batch into already stored events, in-batch repeats and new events.
fn resolve<T: KvRead>(txn: &T, events: &[EncodedEvent]) -> Applied<Vec<Slot>> {
    let mut slots = Vec::with_capacity(events.len());
    let mut first_new: HashMap<Id, usize> = HashMap::new();
    for (position, event) in events.iter().enumerate() {
        let stored_at = txn.get(Table::EventIds, &event.id, keys::stored_pos)?.transpose().map_err(rejected)?;
        let stored = match stored_at {
            Some(pos) => txn.get(Table::Events, &pos, |bytes| (pos, bytes.to_vec()))?,
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

/// Stores the [`Slot::New`] events after `head`, numbering them in order ([`check_room`] has
/// made sure the numbers exist).
fn write_events<T: KvWrite>(
    txn: &mut T,
    session: &Id,
    head: u64,
    events: &[EncodedEvent],
    slots: &mut [Slot],
) -> Applied<()> {
    let mut sequence = head;
    let mut started_runs: Vec<Id> = Vec::new();
    for (event, slot) in events.iter().zip(slots.iter_mut()) {
        let Slot::New(assigned) = slot else { continue };
        sequence = sequence.saturating_add(1);
        *assigned = sequence;
        let pos = keys::event_pos(session, sequence);
        txn.put(Table::Events, &pos, &event.bytes)?;
        txn.put(Table::EventIds, &event.id, &pos)?;
        if let Some(run) = &event.run
            && !started_runs.contains(run)
        {
            let start = keys::run_start_key(session, run);
            if txn.get(Table::RunStarts, &start, |_| ())?.is_none() {
                txn.put(Table::RunStarts, &start, &sequence.to_be_bytes())?;
            }
            started_runs.push(*run);
        }
    }
    if sequence != head {
        txn.put(Table::Events, &keys::head_pos(session), &keys::encode_head(sequence))?;
    }
    Ok(())
}
