//! The single writer: group commit on a dedicated OS thread.
//!
//! Callers send a [`Request`] over a channel and await its oneshot reply. The writer blocks for
//! the first request, drains whatever else is queued (up to [`MAX_GROUP_REQUESTS`] requests or
//! [`MAX_GROUP_BYTES`] of events), applies them in order in ONE write transaction, commits, and
//! only then answers each caller. Every request checks everything that can fail before its first
//! change, so a rejected request leaves the transaction as it found it and the others commit. A
//! storage failure in the middle of a request (or of the commit) abandons the transaction; the
//! group is then replayed one request per transaction, so only the request that fails, fails.
//!
//! New events go to the commit-order log ([`Table::Log`]): a group writes its events at the
//! log's end, whatever their sessions, so a commit touches few pages. The writer keeps the
//! recent events' index in memory ([`Recent`]) and publishes each commit to the readers' tail
//! ([`Tail`]). When the log holds [`crate::COMPACT_EVENTS`] events or [`crate::COMPACT_BYTES`]
//! bytes (by default; see [`KvOptions::compact_after`]), one
//! compaction moves them into the `(session, sequence)` tables, sorted, so each session's pages
//! are written once per compaction instead of once per commit. A compaction is an atomic
//! move: it commits without waiting for the disk (the next durable commit, or the drop, makes it
//! durable; a crash before that leaves the events in the log, where the next open finds them).

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use asm_core::{Error, ErrorCode, JsonMap, Result, Run, RunStatus, Session, SessionId, StoredEvent};
use asm_ports::backend::{check_expected_status, check_run_accepts_events, check_run_overwrite, merge_patch};
use tokio::sync::oneshot;

use crate::codec::{self, EncodedEvent};
use crate::engine::{Finish, KvEngine, KvRead, KvWrite, Table};
use crate::error::{KvError, session_not_found};
use crate::keys::{self, EventPos, Id};
use crate::options::{Durability, EVENTUAL_SYNC_INTERVAL, KvOptions, MAX_GROUP_BYTES, MAX_GROUP_REQUESTS};
use crate::tail::{Changes, Recent, Tail};
use crate::waiters::Waiters;

/// The longest the writer waits for a group to fill up again (see [`Writer::fill`]).
const MAX_FILL_WAIT: Duration = Duration::from_millis(2);

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
    /// Deletes these compacted events of a session (maintenance; never part of a group: the
    /// writer compacts the log first, so every event is in the `(session, sequence)` table).
    Prune {
        key: Id,
        id: SessionId,
        sequences: Vec<u64>,
    },
    /// Deletes the events, runs and index entries whose session record is gone (maintenance;
    /// alone, after a compaction, like [`Command::Prune`]).
    CleanOrphans,
}

impl Command {
    fn weight(&self) -> usize {
        match self {
            Command::Append { events, .. } | Command::Flush { events, .. } => {
                events.iter().map(|e| e.bytes.len()).sum()
            }
            Command::SaveSession { json, .. } | Command::SaveRun { json, .. } => json.len(),
            Command::DeleteSession { .. } | Command::Sync | Command::Prune { .. } | Command::CleanOrphans => 0,
        }
    }

    /// Maintenance requests run alone, after a compaction.
    fn runs_alone(&self) -> bool {
        matches!(self, Command::Prune { .. } | Command::CleanOrphans)
    }

    fn events(&self) -> &[EncodedEvent] {
        match self {
            Command::Append { events, .. } | Command::Flush { events, .. } => events,
            _ => &[],
        }
    }

    fn events_mut(&mut self) -> Option<(&Id, &mut Vec<EncodedEvent>)> {
        match self {
            Command::Append { key, events, .. } => Some((key, events)),
            Command::Flush { session_key, events, .. } => Some((session_key, events)),
            _ => None,
        }
    }
}

/// Where the event at one position of an appended batch ended up.
#[derive(Debug)]
pub(crate) enum Slot {
    /// Stored now: the event with its sequence.
    New(StoredEvent),
    /// Already stored and still recent: the stored event.
    Recent(StoredEvent),
    /// Already stored (a retried append): its position and stored bytes.
    Stored { pos: EventPos, bytes: Vec<u8> },
    /// A repeat of the event at this earlier position of the same batch.
    Same(usize),
}

/// How the writer sorted one event of a batch, before the commit.
#[derive(Debug)]
enum Placed {
    /// New, numbered `sequence`, written at log position `lsn`.
    New {
        sequence: u64,
        lsn: u64,
    },
    Recent(StoredEvent),
    Stored {
        pos: EventPos,
        bytes: Vec<u8>,
    },
    Same(usize),
}

/// The answer to one request.
#[derive(Debug)]
pub(crate) enum Reply {
    Done,
    Appended(Vec<Slot>),
    /// How many events a [`Command::Prune`] deleted, or rows a [`Command::CleanOrphans`] did.
    Pruned(u64),
}

/// What a request did, before the commit.
#[derive(Debug)]
enum Applied {
    Done,
    Appended(Vec<Placed>),
    Deleted(Id),
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

type Outcome<T> = std::result::Result<T, Failure>;

fn rejected(error: Error) -> Failure {
    Failure::Rejected(error)
}

/// What the requests of the group being applied did so far, seen by the later requests of the
/// same group (the committed state is in [`Recent`] and the engine).
#[derive(Default)]
struct Pending {
    next_lsn: u64,
    /// Last sequence of the sessions that got events in this group.
    heads: HashMap<Id, u64>,
    /// Event id -> (session, sequence, request, position in the request) of the events new in
    /// this group.
    ids: HashMap<Id, (Id, u64, usize, usize)>,
    /// Log positions written in this group, per session.
    lsns: HashMap<Id, Vec<u64>>,
    /// Sessions deleted in this group (their recent events are gone).
    deleted: HashSet<Id>,
}

/// The writer's view of the store while it applies one group: the transaction, the recent
/// events committed before, and what this group did so far.
struct View<'a, T> {
    txn: &'a mut T,
    recent: &'a Recent,
    pending: &'a mut Pending,
    group: &'a [Request],
    /// The index of the request being applied.
    current: usize,
}

impl<T: KvWrite> View<'_, T> {
    /// The session's last sequence, or `SessionNotFound`.
    fn head(&self, key: &Id, id: &SessionId) -> Outcome<u64> {
        let stored = match self.txn.get(Table::Events, &keys::head_pos(key), keys::decode_head)? {
            Some(head) => head.map_err(rejected)?,
            None => return Err(rejected(session_not_found(id))),
        };
        if let Some(&head) = self.pending.heads.get(key) {
            return Ok(head);
        }
        if !self.pending.deleted.contains(key)
            && let Some(session) = self.recent.sessions.get(key)
        {
            return Ok(session.last());
        }
        Ok(stored)
    }

    /// Where an event id is stored, if it is.
    fn find(&self, id: &Id) -> Outcome<Option<Placed>> {
        if let Some(&(session, sequence, request, position)) = self.pending.ids.get(id) {
            let bytes = self.group.get(request).and_then(|r| r.command.events().get(position)).map(|e| e.bytes.clone());
            if let Some(bytes) = bytes {
                return Ok(Some(Placed::Stored { pos: keys::event_pos(&session, sequence), bytes }));
            }
        }
        if let Some((session, sequence)) = self.recent.ids.get(id)
            && !self.pending.deleted.contains(session)
            && let Some(event) = self.recent.sessions.get(session).and_then(|s| s.get(*sequence))
        {
            return Ok(Some(Placed::Recent(event.clone())));
        }
        let Some(pos) = self.txn.get(Table::EventIds, id, keys::stored_pos)?.transpose().map_err(rejected)? else {
            return Ok(None);
        };
        Ok(self.txn.get(Table::Events, &pos, |bytes| Placed::Stored { pos, bytes: bytes.to_vec() })?)
    }
}

/// The writer thread's state.
pub(crate) struct Writer<E: KvEngine> {
    engine: Arc<E>,
    durability: Durability,
    compact_events: usize,
    compact_bytes: usize,
    waiters: Arc<Waiters>,
    tail: Arc<Tail>,
    recent: Recent,
    requests: Receiver<Request>,
    /// With [`Durability::Eventual`] (or after a compaction): when the oldest commit not yet
    /// durable was made.
    unsynced_since: Option<Instant>,
    /// How many requests a group is expected to hold (the recent group sizes, decaying), and
    /// how long the last commit took (see [`Writer::fill`]).
    expected_group: usize,
    last_commit: Duration,
}

impl<E: KvEngine> Writer<E> {
    pub(crate) fn new(
        engine: Arc<E>,
        options: &KvOptions,
        waiters: Arc<Waiters>,
        tail: Arc<Tail>,
        recent: Recent,
        requests: Receiver<Request>,
    ) -> Self {
        Self {
            engine,
            durability: options.durability,
            compact_events: options.compact_events,
            compact_bytes: options.compact_bytes,
            waiters,
            tail,
            recent,
            requests,
            unsynced_since: None,
            expected_group: 0,
            last_commit: Duration::ZERO,
        }
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
            self.drain(&mut group, &mut bytes);
            self.fill(&mut group, &mut bytes);
            self.expected_group = group.len().max(self.expected_group - self.expected_group / 8);
            // A prune (or orphan cleanup) runs alone, after the requests queued before it and
            // before those after it.
            let mut rest = group;
            while let Some(at) = rest.iter().position(|r| r.command.runs_alone()) {
                let mut after = rest.split_off(at);
                let prune = after.remove(0);
                if !rest.is_empty() {
                    self.process(rest);
                }
                self.prune(prune);
                rest = after;
            }
            if !rest.is_empty() {
                self.process(rest);
            }
            if self.recent.count >= self.compact_events || self.recent.bytes >= self.compact_bytes {
                self.compact();
            }
        }
        if self.unsynced_since.is_some() {
            self.sync_now();
        }
        tracing::debug!(engine = E::NAME, "writer stopped");
    }

    /// Takes whatever else is queued.
    fn drain(&self, group: &mut Vec<Request>, bytes: &mut usize) {
        while group.len() < MAX_GROUP_REQUESTS && *bytes < MAX_GROUP_BYTES {
            match self.requests.try_recv() {
                Ok(request) => {
                    *bytes += request.command.weight();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
    }

    /// Many concurrent writers send their next request only after their previous one was
    /// answered: right after a big group, the first of them would start a group alone and the
    /// others the next one, and the groups would alternate between small and large. When a
    /// group is smaller than the recent ones, wait a little (at most [`MAX_FILL_WAIT`], and at
    /// most half of the last commit's time, so a fast engine waits little) for the others. A
    /// lone writer never waits: its groups are never smaller than the recent ones. When fewer
    /// writers remain, the expectation decays within a few groups.
    fn fill(&self, group: &mut Vec<Request>, bytes: &mut usize) {
        if self.expected_group < 4 || group.len() >= self.expected_group {
            return;
        }
        let deadline = Instant::now() + MAX_FILL_WAIT.min(self.last_commit / 2);
        while group.len() < self.expected_group && group.len() < MAX_GROUP_REQUESTS && *bytes < MAX_GROUP_BYTES {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.requests.recv_timeout(deadline - now) {
                Ok(request) => {
                    *bytes += request.command.weight();
                    group.push(request);
                    self.drain(group, bytes);
                }
                Err(_) => break,
            }
        }
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

    fn process(&mut self, mut group: Vec<Request>) {
        let span = tracing::debug_span!("kv_group_commit", engine = E::NAME, requests = group.len());
        let _entered = span.enter();
        let started = Instant::now();
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.commit_group(&mut group))) {
            Ok(outcome) => outcome,
            Err(payload) => Err(KvError::panicked("a write transaction", &*payload).into()),
        };
        self.last_commit = started.elapsed();
        match outcome {
            Ok(replies) => {
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

    /// Applies the group in one transaction, commits it and publishes it. `Err` means nothing
    /// was committed.
    fn commit_group(&mut self, group: &mut [Request]) -> Result<Vec<Result<Reply>>> {
        let force_sync = group.iter().any(|r| matches!(r.command, Command::Sync));
        let durable = match self.durability {
            Durability::Immediate => true,
            Durability::Eventual => {
                force_sync || self.unsynced_since.is_some_and(|since| since.elapsed() >= EVENTUAL_SYNC_INTERVAL)
            }
        };
        // A group that deletes a session keeps the readers out from before its commit until it
        // has published, so no reader pairs the deleted session's tail with the new tables.
        let deletes = group.iter().any(|r| matches!(r.command, Command::DeleteSession { .. }));
        let tail = Arc::clone(&self.tail);
        let mut exclusive = deletes.then(|| tail.sessions.write());

        let mut pending = Pending { next_lsn: self.recent.next_lsn, ..Pending::default() };
        let recent = &self.recent;
        let commands: &[Request] = group;
        let (applied, changed) = self.engine.write(durable, |txn| {
            let group = commands;
            let mut applied = Vec::with_capacity(group.len());
            let mut changed = false;
            for (current, request) in group.iter().enumerate() {
                let mut view = View { txn: &mut *txn, recent, pending: &mut pending, group, current };
                match apply(&mut view, &request.command) {
                    Ok((result, wrote)) => {
                        changed |= wrote;
                        applied.push(Ok(result));
                    }
                    Err(Failure::Rejected(e)) => applied.push(Err(e)),
                    Err(Failure::Storage(e)) => return Err(e),
                }
            }
            let finish = if changed { Finish::Commit } else { Finish::Abort };
            Ok(((applied, changed), finish))
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

        // Committed: number the new events, remember them, publish them, answer.
        let mut changes = Changes::default();
        let mut touched: Vec<Id> = Vec::new();
        let mut replies = Vec::with_capacity(group.len());
        for (request, applied) in group.iter_mut().zip(applied) {
            let reply = match applied {
                Err(e) => Err(e),
                Ok(Applied::Done) => Ok(Reply::Done),
                Ok(Applied::Deleted(key)) => {
                    self.recent.remove_session(&key);
                    changes.grown.remove(&key);
                    changes.deleted.push(key);
                    touched.push(key);
                    Ok(Reply::Done)
                }
                Ok(Applied::Appended(placed)) => {
                    let Some((key, events)) = request.command.events_mut() else {
                        // Not reachable: only appends and flushes place events. Never `Err` after
                        // the commit (that would replay a committed group).
                        replies.push(Err(Error::new(ErrorCode::InternalError, "an append without events")));
                        continue;
                    };
                    let key = *key;
                    let mut slots = Vec::with_capacity(placed.len());
                    for (place, encoded) in placed.into_iter().zip(events.iter_mut()) {
                        slots.push(match place {
                            Placed::New { sequence, lsn } => {
                                let Some(event) = encoded.event.take() else {
                                    slots.push(Slot::Stored {
                                        pos: keys::event_pos(&key, sequence),
                                        bytes: encoded.bytes.clone(),
                                    });
                                    continue;
                                };
                                let event = StoredEvent::new(event, sequence);
                                let published = self.recent.sessions.get(&key).map_or(0, |s| s.events.len());
                                changes.grown.entry(key).or_insert(published);
                                self.recent.push(key, encoded.id, lsn, event.clone(), encoded.bytes.len());
                                if touched.last() != Some(&key) {
                                    touched.push(key);
                                }
                                Slot::New(event)
                            }
                            Placed::Recent(event) => Slot::Recent(event),
                            Placed::Stored { pos, bytes } => Slot::Stored { pos, bytes },
                            Placed::Same(earlier) => Slot::Same(earlier),
                        });
                    }
                    Ok(Reply::Appended(slots))
                }
            };
            replies.push(reply);
        }
        self.recent.next_lsn = pending.next_lsn;
        match exclusive.as_mut() {
            Some(sessions) => Tail::publish_locked(sessions, &changes, &self.recent),
            None => self.tail.publish(&changes, &self.recent),
        }
        drop(exclusive);
        touched.sort_unstable();
        touched.dedup();
        self.waiters.notify(&touched);
        Ok(replies)
    }

    /// Answers a [`Command::Prune`] or [`Command::CleanOrphans`]: compacts the log (so every
    /// event is in the `(session, sequence)` table and none in the readers' tail), then deletes
    /// in one transaction. A session's head record (its counter) does not change on a prune.
    fn prune(&mut self, request: Request) {
        let Request { command, reply } = request;
        if !command.runs_alone() {
            let _ = reply.send(Err(Error::new(ErrorCode::InternalError, "not a maintenance request")));
            return;
        }
        if self.recent.count > 0 {
            self.compact();
        }
        if self.recent.count > 0 {
            let e = Error::new(ErrorCode::StorageWriteFailed, "cannot prune: the log could not be compacted first");
            let _ = reply.send(Err(e));
            return;
        }
        let durable = matches!(self.durability, Durability::Immediate);
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.engine.write(durable, |txn| match &command {
                Command::Prune { key, id, sequences } => prune_events(txn, key, id, sequences),
                _ => clean_orphans(txn),
            })
        }));
        let result = match result {
            Ok(result) => result,
            Err(payload) => Err(KvError::panicked("a prune", &*payload).into()),
        };
        if matches!(result, Ok(n) if n > 0) && !durable && self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        let _ = reply.send(result.map(Reply::Pruned));
    }

    /// Moves the recent events from the log into the `(session, sequence)` tables.
    fn compact(&mut self) {
        let started = Instant::now();
        let (first, next) = (self.recent.first_lsn, self.recent.next_lsn);
        let result = catch_unwind(AssertUnwindSafe(|| self.engine.write(false, |txn| compact(txn, first, next))));
        let result = match result {
            Ok(result) => result,
            Err(payload) => Err(KvError::panicked("a compaction", &*payload).into()),
        };
        match result {
            Ok(moved) => {
                self.recent.clear();
                self.tail.publish(&Changes { compacted: true, ..Changes::default() }, &self.recent);
                if self.unsynced_since.is_none() {
                    self.unsynced_since = Some(Instant::now());
                }
                tracing::debug!(
                    engine = E::NAME,
                    events = moved,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "compacted the log"
                );
            }
            Err(e) => {
                // The events stay in the log (and readable from the tail); the next group tries
                // again.
                tracing::warn!(engine = E::NAME, error = %e, "compaction failed");
            }
        }
    }
}

/// One compaction: the log entries `[first, next)` go to the events, event-id and run-start
/// tables, the sessions' heads move to their last compacted event, and the log entries go.
fn compact<T: KvWrite>(txn: &mut T, first: u64, next: u64) -> Result<(usize, Finish)> {
    let low = keys::lsn_key(first);
    let high = keys::lsn_key(next);
    let mut entries: Vec<(EventPos, Vec<u8>)> = Vec::new();
    txn.scan::<Error>(Table::Log, (Bound::Included(&low[..]), Bound::Excluded(&high[..])), |_, value| {
        let (pos, event) = keys::split_log_value(value)?;
        entries.push((pos, event.to_vec()));
        Ok(true)
    })?;
    // In key order, each session's events (and the ids, time-ordered for UUIDv7 ids) are
    // inserted next to each other: every page is written once, and found in the cache.
    entries.sort_unstable_by_key(|entry| entry.0);
    let mut heads: HashMap<Id, u64> = HashMap::new();
    let mut missing: HashSet<Id> = HashSet::new();
    let mut runs: HashSet<(Id, Id)> = HashSet::new();
    let mut ids: Vec<(Id, EventPos)> = Vec::with_capacity(entries.len());
    for (pos, bytes) in &entries {
        let (session, sequence) = keys::split_pos(pos);
        if missing.contains(&session) {
            continue;
        }
        if !heads.contains_key(&session) && txn.get(Table::Events, &keys::head_pos(&session), |_| ())?.is_none() {
            // The session is gone (its entries would have gone with it; be safe).
            missing.insert(session);
            continue;
        }
        heads.insert(session, sequence);
        txn.put(Table::Events, pos, bytes)?;
        let (event_id, run) = codec::stored_event_id_and_run(bytes)?;
        ids.push((event_id, *pos));
        if let Some(run) = run
            && runs.insert((session, run))
        {
            let start = keys::run_start_key(&session, &run);
            if txn.get(Table::RunStarts, &start, |_| ())?.is_none() {
                txn.put(Table::RunStarts, &start, &sequence.to_be_bytes())?;
            }
        }
    }
    for (session, head) in &heads {
        txn.put(Table::Events, &keys::head_pos(session), &keys::encode_head(*head))?;
    }
    ids.sort_unstable_by_key(|entry| entry.0);
    for (event_id, pos) in &ids {
        txn.put(Table::EventIds, event_id, pos)?;
    }
    txn.delete_range(Table::Log, (Bound::Included(&low[..]), Bound::Excluded(&high[..])))?;
    Ok((entries.len(), Finish::Commit))
}

/// Deletes the compacted events `sequences` of session `key`, except protected kinds.
fn prune_events<T: KvWrite>(txn: &mut T, key: &Id, id: &SessionId, sequences: &[u64]) -> Result<(u64, Finish)> {
    if txn.get(Table::Events, &keys::head_pos(key), |_| ())?.is_none() {
        return Err(session_not_found(id));
    }
    let mut deleted = 0u64;
    for &sequence in sequences {
        if sequence == 0 || sequence == u64::MAX {
            continue;
        }
        let pos = keys::event_pos(key, sequence);
        let Some(header) = txn.get(Table::Events, &pos, codec::stored_event_id_and_kind)? else { continue };
        let (event_id, kind) = header?;
        if asm_ports::backend::is_protected_kind(kind) {
            continue;
        }
        txn.delete(Table::Events, &pos)?;
        let owned = txn.get(Table::EventIds, &event_id, |stored| stored == &pos[..])?.unwrap_or(false);
        if owned {
            txn.delete(Table::EventIds, &event_id)?;
        }
        deleted += 1;
    }
    Ok((deleted, if deleted > 0 { Finish::Commit } else { Finish::Abort }))
}

/// Deletes every compacted event (with its id and run-start entries) and every run (with its
/// `session_runs` entries) whose session record is gone, and the orphaned sessions' head
/// records; returns the events and runs deleted.
fn clean_orphans<T: KvWrite>(txn: &mut T) -> Result<(u64, Finish)> {
    let all = (Bound::Unbounded, Bound::Unbounded);
    let mut known: HashMap<Id, bool> = HashMap::new();
    let mut orphan_sessions: HashSet<Id> = HashSet::new();
    let mut orphan_events: Vec<(Id, EventPos)> = Vec::new();
    let mut positions: Vec<(Id, u64)> = Vec::new();
    txn.scan::<Error>(Table::Events, all, |key, _| {
        positions.push(keys::split_pos(&keys::stored_pos(key)?));
        Ok(true)
    })?;
    for (session, sequence) in positions {
        let exists = match known.get(&session) {
            Some(exists) => *exists,
            None => {
                let exists = txn.get(Table::Sessions, &session, |_| ())?.is_some();
                known.insert(session, exists);
                exists
            }
        };
        if exists {
            continue;
        }
        orphan_sessions.insert(session);
        if sequence != u64::MAX {
            let pos = keys::event_pos(&session, sequence);
            // An unreadable record loses its index entry only (as in a session delete).
            if let Some(Ok(event_id)) = txn.get(Table::Events, &pos, codec::stored_event_id)? {
                orphan_events.push((event_id, pos));
            }
        }
    }
    let mut orphan_runs: Vec<(Id, Id)> = Vec::new();
    let mut runs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    txn.scan::<Error>(Table::Runs, all, |key, value| {
        runs.push((key.to_vec(), value.to_vec()));
        Ok(true)
    })?;
    for (key, value) in runs {
        let Ok(run) = decode_json::<Run>("run", &value) else { continue };
        let session = keys::session_key(&run.session_id)?;
        let exists = match known.get(&session) {
            Some(exists) => *exists,
            None => {
                let exists = txn.get(Table::Sessions, &session, |_| ())?.is_some();
                known.insert(session, exists);
                exists
            }
        };
        if !exists {
            let run_key: Id = key.as_slice().try_into().map_err(|_| KvError::corrupted("a run key"))?;
            orphan_runs.push((session, run_key));
            orphan_sessions.insert(session);
        }
    }
    // Every read is done: from here on, only writes.
    for (event_id, pos) in &orphan_events {
        let owned = txn.get(Table::EventIds, event_id, |stored| stored == &pos[..])?.unwrap_or(false);
        if owned {
            txn.delete(Table::EventIds, event_id)?;
        }
    }
    for session in &orphan_sessions {
        let (low, high) = keys::prefix_bounds::<24>(session);
        txn.delete_range(Table::Events, range(&low, &high))?;
        let (low, high) = keys::prefix_bounds::<32>(session);
        txn.delete_range(Table::RunStarts, range(&low, &high))?;
        let (low, high) = keys::prefix_bounds::<44>(session);
        txn.delete_range(Table::SessionRuns, range(&low, &high))?;
    }
    for (_, run) in &orphan_runs {
        txn.delete(Table::Runs, run)?;
    }
    let removed = (orphan_events.len() + orphan_runs.len()) as u64;
    tracing::debug!(events = orphan_events.len(), runs = orphan_runs.len(), "orphans removed");
    Ok((removed, if orphan_sessions.is_empty() { Finish::Abort } else { Finish::Commit }))
}

/// Applies one command; returns what it did and whether it changed anything.
fn apply<T: KvWrite>(view: &mut View<'_, T>, command: &Command) -> Outcome<(Applied, bool)> {
    match command {
        Command::SaveSession { key, order, json } => {
            save_session(view.txn, key, order, json)?;
            Ok((Applied::Done, true))
        }
        Command::DeleteSession { key, id } => {
            delete_session(view, key, id)?;
            Ok((Applied::Deleted(*key), true))
        }
        Command::SaveRun { run_key, session_key, run, json } => {
            view.head(session_key, &run.session_id)?;
            let stored = check_run(view.txn, run_key, run)?;
            write_run(view.txn, session_key, run_key, run, json, stored.as_ref())?;
            Ok((Applied::Done, true))
        }
        Command::Append { key, id, events, expected_last_sequence } => {
            let head = view.head(key, id)?;
            let mut placed = resolve(view, events)?;
            let new = placed.iter().filter(|s| matches!(s, Placed::New { .. })).count();
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
                check_runs_accept(view.txn, key, events, &placed)?;
                write_events(view, key, head, events, &mut placed)?;
            }
            Ok((Applied::Appended(placed), new > 0))
        }
        Command::Flush { session_key, run_key, run, run_json, events, metadata, expected_status } => {
            let head = view.head(session_key, &run.session_id)?;
            let stored_run = check_run(view.txn, run_key, run)?;
            check_expected_status(&run.id, stored_run.as_ref(), *expected_status).map_err(rejected)?;
            let mut placed = resolve(view, events)?;
            let new = placed.iter().filter(|s| matches!(s, Placed::New { .. })).count();
            check_room(head, new)?;
            check_runs_accept(view.txn, session_key, events, &placed)?;
            let session_value = if metadata.is_empty() {
                None
            } else {
                let (order, mut session) = read_session(view.txn, session_key, &run.session_id)?;
                merge_patch(&mut session.metadata, metadata);
                let json = serde_json::to_vec(&session).map_err(|e| {
                    rejected(Error::new(ErrorCode::InternalError, format!("cannot encode session: {e}")))
                })?;
                Some(keys::session_value(&order, &json))
            };
            // Every check is done: from here on, only writes.
            if new > 0 {
                write_events(view, session_key, head, events, &mut placed)?;
            }
            write_run(view.txn, session_key, run_key, run, run_json, stored_run.as_ref())?;
            if let Some(value) = session_value {
                view.txn.put(Table::Sessions, session_key, &value)?;
            }
            Ok((Applied::Appended(placed), true))
        }
        Command::Sync => Ok((Applied::Done, false)),
        Command::Prune { .. } | Command::CleanOrphans => {
            Err(rejected(Error::new(ErrorCode::InternalError, "maintenance is never part of a group")))
        }
    }
}

/// Refuses a batch that would number past the last sequence a session can have.
fn check_room(head: u64, new: usize) -> Outcome<()> {
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
fn read_session<T: KvRead>(txn: &T, key: &Id, id: &SessionId) -> Outcome<(keys::OrderKey, Session)> {
    let decoded = txn.get(Table::Sessions, key, |value| {
        let (order, json) = keys::split_session_value(value)?;
        Ok::<_, Error>((order, decode_json::<Session>("session", json)?))
    })?;
    decoded.ok_or_else(|| rejected(session_not_found(id)))?.map_err(rejected)
}

fn save_session<T: KvWrite>(txn: &mut T, key: &Id, order: &keys::OrderKey, json: &[u8]) -> Outcome<()> {
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

/// `low..=high` as a scan range.
fn range<'a>(low: &'a [u8], high: &'a [u8]) -> crate::engine::KeyRange<'a> {
    (Bound::Included(low), Bound::Included(high))
}

fn delete_session<T: KvWrite>(view: &mut View<'_, T>, key: &Id, id: &SessionId) -> Outcome<()> {
    view.head(key, id)?;
    let txn = &mut *view.txn;
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
    txn.scan::<KvError>(Table::Events, (Bound::Included(&low[..]), Bound::Excluded(&head[..])), |_, value| {
        // An unreadable record loses its index entry only; a dangling one reads as absent.
        if let Ok(event_id) = codec::stored_event_id(value) {
            event_ids.push(event_id);
        }
        Ok(true)
    })?;
    // The session's recent events: in the log, committed or written earlier in this group.
    let mut log: Vec<u64> = Vec::new();
    if !view.pending.deleted.contains(key)
        && let Some(recent) = view.recent.sessions.get(key)
    {
        log.extend_from_slice(&recent.lsns);
    }
    log.extend(view.pending.lsns.remove(key).unwrap_or_default());

    // Every read is done: from here on, only writes.
    match order.flatten() {
        Some(order) => txn.delete(Table::SessionOrder, &keys::session_order_key(&order, key))?,
        None => {
            // An unreadable session record: find its order entry by scanning.
            let mut stale = Vec::new();
            txn.scan::<KvError>(Table::SessionOrder, (Bound::Unbounded, Bound::Unbounded), |k, _| {
                if keys::session_of_order_key(k).ok().as_ref() == Some(key) {
                    stale.push(k.to_vec());
                }
                Ok(true)
            })?;
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
    for lsn in &log {
        txn.delete(Table::Log, &keys::lsn_key(*lsn))?;
    }
    view.pending.heads.remove(key);
    view.pending.ids.retain(|_, (session, ..)| session != key);
    view.pending.deleted.insert(*key);
    tracing::debug!(events = event_ids.len() + log.len(), runs = run_keys.len(), "session deleted");
    Ok(())
}

/// The stored copy of `run`, after checking that `run` may replace it.
fn check_run<T: KvRead>(txn: &T, run_key: &Id, run: &Run) -> Outcome<Option<Run>> {
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
) -> Outcome<()> {
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
fn check_runs_accept<T: KvRead>(txn: &T, session: &Id, events: &[EncodedEvent], placed: &[Placed]) -> Outcome<()> {
    let mut checked: Vec<Id> = Vec::new();
    for (event, place) in events.iter().zip(placed) {
        let (Placed::New { .. }, Some(run_key)) = (place, &event.run) else { continue };
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
fn resolve<T: KvWrite>(view: &View<'_, T>, events: &[EncodedEvent]) -> Outcome<Vec<Placed>> {
    let mut placed = Vec::with_capacity(events.len());
    let mut first_new: HashMap<Id, usize> = HashMap::new();
    for (position, event) in events.iter().enumerate() {
        if let Some(stored) = view.find(&event.id)? {
            placed.push(stored);
        } else if let Some(&earlier) = first_new.get(&event.id) {
            placed.push(Placed::Same(earlier));
        } else {
            if events.len() > 1 {
                first_new.insert(event.id, position);
            }
            placed.push(Placed::New { sequence: 0, lsn: 0 });
        }
    }
    Ok(placed)
}

/// Appends the [`Placed::New`] events after `head` to the log, numbering them in order
/// ([`check_room`] has made sure the numbers exist).
fn write_events<T: KvWrite>(
    view: &mut View<'_, T>,
    session: &Id,
    head: u64,
    events: &[EncodedEvent],
    placed: &mut [Placed],
) -> Outcome<()> {
    let mut sequence = head;
    for (position, (event, place)) in events.iter().zip(placed.iter_mut()).enumerate() {
        let Placed::New { sequence: assigned, lsn: at } = place else { continue };
        sequence = sequence.saturating_add(1);
        let lsn = view.pending.next_lsn;
        view.pending.next_lsn += 1;
        *assigned = sequence;
        *at = lsn;
        view.txn.put(Table::Log, &keys::lsn_key(lsn), &keys::log_value(session, sequence, &event.bytes))?;
        view.pending.ids.insert(event.id, (*session, sequence, view.current, position));
        view.pending.lsns.entry(*session).or_default().push(lsn);
    }
    view.pending.heads.insert(*session, sequence);
    Ok(())
}
