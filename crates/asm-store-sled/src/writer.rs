//! The single writer: group commit of every write request into one sled transaction.
//!
//! Callers prepare their request (serialise, check sizes) on their own task and send it over a
//! channel. The writer thread takes the first pending request, drains whatever else is queued
//! (up to [`MAX_GROUP_REQUESTS`] / [`MAX_GROUP_BYTES`]), and applies each request to a staging
//! overlay on top of the trees: a request sees the effects of the requests before it in the same
//! group, and one that fails validation is dropped from the overlay without touching the others.
//! The overlay is then written in ONE multi-tree transaction, flushed when the durability is
//! [`Durability::Immediate`](crate::Durability::Immediate), and only then is each caller
//! acknowledged. Long-poll readers of the sessions that got events are woken after the commit.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use asm_core::{Error, ErrorCode, EventId, JsonMap, Result, Run, RunId, RunStatus, SessionId};
use asm_ports::{check_expected_status, check_run_accepts_events, check_run_overwrite};
use sled::transaction::{TransactionError, TransactionResult};
use sled::{Batch, IVec, Transactional, Tree};
use tokio::sync::oneshot;

use crate::Durability;
use crate::codec::{
    self, ID_LEN, TIME_LEN, corrupt, decode_location, decode_u64, event_key, location, run_event_key,
    session_order_key, session_record_number, session_record_order, session_run_key, time_key,
};
use crate::errors::{guard, read_err, session_not_found, write_err};
use crate::waiters::Waiters;

/// At most this many requests go into one transaction.
pub(crate) const MAX_GROUP_REQUESTS: usize = 1024;
/// A group stops taking requests once their events add up to this many bytes.
pub(crate) const MAX_GROUP_BYTES: usize = 32 << 20;

/// The names of the trees, in [`T`] order.
pub(crate) const TREE_NAMES: [&str; TREES] =
    ["sessions", "session_order", "last_sequence", "events", "event_ids", "run_events", "runs", "session_runs", "meta"];
const TREES: usize = 9;

/// The key of the next session number in the `meta` tree.
const NEXT_SESSION_NUMBER: &[u8] = b"next_session_number";

/// The trees (see the layout in [`codec`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum T {
    Sessions = 0,
    SessionOrder = 1,
    LastSequence = 2,
    Events = 3,
    EventIds = 4,
    RunEvents = 5,
    Runs = 6,
    SessionRuns = 7,
    Meta = 8,
}

/// Handles to the database and its trees. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Trees {
    pub(crate) db: sled::Db,
    all: [Tree; TREES],
}

impl Trees {
    pub(crate) fn open(db: &sled::Db) -> sled::Result<Self> {
        let mut all = Vec::with_capacity(TREES);
        for name in TREE_NAMES {
            all.push(db.open_tree(name)?);
        }
        let all = <[Tree; TREES]>::try_from(all)
            .map_err(|_| sled::Error::ReportableBug("wrong number of trees".to_owned()))?;
        Ok(Self { db: db.clone(), all })
    }

    pub(crate) fn tree(&self, t: T) -> &Tree {
        &self.all[t as usize]
    }

    /// Writes `staged` in one transaction over the trees it touches.
    fn commit(&self, staged: &Staged) -> Result<()> {
        let mut trees: Vec<&Tree> = Vec::new();
        let mut batches: Vec<Batch> = Vec::new();
        for (tree, writes) in self.all.iter().zip(&staged.writes) {
            if writes.is_empty() {
                continue;
            }
            let mut batch = Batch::default();
            for (key, value) in writes {
                match value {
                    Some(value) => batch.insert(key.clone(), value.clone()),
                    None => batch.remove(key.clone()),
                }
            }
            trees.push(tree);
            batches.push(batch);
        }
        let result: TransactionResult<(), ()> = trees[..].transaction(|trees| {
            for (tree, batch) in trees.iter().zip(&batches) {
                tree.apply_batch(batch)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(write_err(e)),
            Err(TransactionError::Abort(())) => {
                Err(Error::new(ErrorCode::InternalError, "the sled transaction aborted without a reason"))
            }
        }
    }
}

/// An event ready to store: serialised by the caller.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) id: EventId,
    pub(crate) run_id: Option<RunId>,
    pub(crate) bytes: IVec,
}

/// A write request.
#[derive(Debug)]
pub(crate) enum Op {
    /// `record` carries session number 0: the writer fills it in.
    SaveSession {
        id: SessionId,
        record: Vec<u8>,
    },
    DeleteSession(SessionId),
    SaveRun {
        run: Box<Run>,
        record: IVec,
    },
    Append {
        session: SessionId,
        events: Vec<Prepared>,
        expected: Option<u64>,
    },
    Flush {
        run: Box<Run>,
        record: IVec,
        events: Vec<Prepared>,
        patch: JsonMap,
        expected_status: Option<RunStatus>,
    },
}

impl Op {
    fn size(&self) -> usize {
        match self {
            Op::Append { events, .. } | Op::Flush { events, .. } => events.iter().map(|e| e.bytes.len()).sum(),
            Op::SaveSession { record, .. } => record.len(),
            Op::SaveRun { record, .. } => record.len(),
            Op::DeleteSession(_) => 0,
        }
    }
}

/// What a successful request returns.
#[derive(Debug)]
pub(crate) enum Reply {
    Done,
    Appended(Vec<Resolved>),
}

/// How one event of a batch was resolved.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// Stored now with this sequence.
    New(u64),
    /// Already stored (an idempotent re-append): the stored record.
    Stored { session: SessionId, sequence: u64, bytes: IVec },
    /// The same id as an earlier position of the batch.
    SameAs(usize),
}

/// A request and the channel its caller waits on.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<Result<Reply>>,
}

/// Pending writes per tree: `None` removes the key.
#[derive(Default)]
struct Staged {
    writes: [BTreeMap<IVec, Option<IVec>>; TREES],
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.writes.iter().all(BTreeMap::is_empty)
    }

    fn merge(&mut self, other: Staged) {
        for (mine, theirs) in self.writes.iter_mut().zip(other.writes) {
            mine.extend(theirs);
        }
    }

    fn get(&self, t: T, key: &[u8]) -> Option<&Option<IVec>> {
        self.writes[t as usize].get(key)
    }

    fn prefix<'a>(&'a self, t: T, prefix: &'a [u8]) -> impl Iterator<Item = (&'a IVec, &'a Option<IVec>)> + 'a {
        self.writes[t as usize]
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
    }
}

/// The trees as the current request sees them: its own writes, over the group's, over the
/// committed state.
struct View<'a> {
    trees: &'a Trees,
    group: &'a Staged,
    local: Staged,
}

impl View<'_> {
    fn get(&self, t: T, key: &[u8]) -> Result<Option<IVec>> {
        if let Some(value) = self.local.get(t, key).or_else(|| self.group.get(t, key)) {
            return Ok(value.clone());
        }
        self.trees.tree(t).get(key).map_err(read_err)
    }

    fn put(&mut self, t: T, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.local.writes[t as usize].insert(key.into(), Some(value.into()));
    }

    fn del(&mut self, t: T, key: impl Into<IVec>) {
        self.local.writes[t as usize].insert(key.into(), None);
    }

    /// Every `(key, value)` under `prefix`, in key order.
    fn scan_prefix(&self, t: T, prefix: &[u8]) -> Result<Vec<(IVec, IVec)>> {
        let mut merged: BTreeMap<IVec, IVec> = BTreeMap::new();
        for item in self.trees.tree(t).scan_prefix(prefix) {
            let (key, value) = item.map_err(read_err)?;
            merged.insert(key, value);
        }
        for layer in [self.group, &self.local] {
            for (key, value) in layer.prefix(t, prefix) {
                match value {
                    Some(value) => merged.insert(key.clone(), value.clone()),
                    None => merged.remove(key),
                };
            }
        }
        Ok(merged.into_iter().collect())
    }

    /// The number of a stored session; [`ErrorCode::SessionNotFound`] when there is none.
    fn session_number(&self, session: &SessionId) -> Result<u64> {
        match self.get(T::Sessions, session.as_str().as_bytes())? {
            Some(record) => session_record_number(&record),
            None => Err(session_not_found(session)),
        }
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) trees: Trees,
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) durability: Durability,
}

impl Writer {
    /// Serves requests until every sender is gone (or sled panicked).
    pub(crate) fn run(self, requests: &Receiver<Request>) {
        while let Ok(first) = requests.recv() {
            let mut bytes = first.op.size();
            let mut group = vec![first];
            while group.len() < MAX_GROUP_REQUESTS && bytes < MAX_GROUP_BYTES {
                match requests.try_recv() {
                    Ok(request) => {
                        bytes += request.op.size();
                        group.push(request);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if !self.commit_group(group) {
                tracing::error!("sled writer stopped after a panic inside sled");
                return;
            }
        }
        tracing::debug!("sled writer finished: the store was dropped");
    }

    /// Applies, commits and acknowledges one group. `false` when sled panicked.
    fn commit_group(&self, group: Vec<Request>) -> bool {
        let span = tracing::debug_span!("sled_group_commit", requests = group.len());
        let _entered = span.enter();
        let (ops, replies): (Vec<Op>, Vec<_>) = group.into_iter().map(|r| (r.op, r.reply)).unzip();
        match guard(ErrorCode::StorageWriteFailed, "committing a write group", || Ok(self.process(&ops))) {
            Ok((results, touched)) => {
                self.waiters.wake(&touched);
                for (reply, result) in replies.into_iter().zip(results) {
                    // A caller that stopped waiting is no error.
                    let _ = reply.send(result);
                }
                true
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                false
            }
        }
    }

    fn process(&self, ops: &[Op]) -> (Vec<Result<Reply>>, Vec<SessionId>) {
        let mut staged = Staged::default();
        let mut results = Vec::with_capacity(ops.len());
        let mut touched = Vec::new();
        for op in ops {
            let mut view = View { trees: &self.trees, group: &staged, local: Staged::default() };
            let mut op_touched = Vec::new();
            let result = apply(&mut view, op, &mut op_touched);
            let local = view.local;
            if result.is_ok() {
                staged.merge(local);
                touched.append(&mut op_touched);
            }
            results.push(result);
        }
        if !staged.is_empty() {
            let committed = self.trees.commit(&staged).and_then(|()| match self.durability {
                Durability::Immediate => self.trees.db.flush().map(drop).map_err(write_err),
                Durability::Eventual => Ok(()),
            });
            if let Err(error) = committed {
                tracing::error!(%error, "sled group commit failed");
                for result in &mut results {
                    if result.is_ok() {
                        *result = Err(error.clone());
                    }
                }
            }
        }
        touched.sort();
        touched.dedup();
        (results, touched)
    }
}

fn apply(view: &mut View<'_>, op: &Op, touched: &mut Vec<SessionId>) -> Result<Reply> {
    match op {
        Op::SaveSession { id, record } => {
            save_session(view, id, record)?;
            Ok(Reply::Done)
        }
        Op::DeleteSession(id) => {
            delete_session(view, id)?;
            touched.push(id.clone());
            Ok(Reply::Done)
        }
        Op::SaveRun { run, record } => {
            view.session_number(&run.session_id)?;
            let previous = claim_run(view, run)?;
            store_run(view, run, record, previous.as_ref());
            Ok(Reply::Done)
        }
        Op::Append { session, events, expected } => {
            let number = view.session_number(session)?;
            append(view, session, number, events, *expected, touched).map(Reply::Appended)
        }
        Op::Flush { run, record, events, patch, expected_status } => {
            let session = &run.session_id;
            let number = view.session_number(session)?;
            let previous = claim_run(view, run)?;
            check_expected_status(&run.id, previous.as_ref(), *expected_status)?;
            let resolved =
                if events.is_empty() { Vec::new() } else { append(view, session, number, events, None, touched)? };
            store_run(view, run, record, previous.as_ref());
            if !patch.is_empty() {
                let key = session.as_str().as_bytes();
                let stored = view.get(T::Sessions, key)?.ok_or_else(|| session_not_found(session))?;
                let mut stored = codec::decode_session(&stored)?;
                crate::apply_session_metadata(&mut stored.metadata, patch);
                view.put(T::Sessions, key, codec::encode_session(&stored, number)?);
            }
            Ok(Reply::Appended(resolved))
        }
    }
}

fn save_session(view: &mut View<'_>, id: &SessionId, record: &[u8]) -> Result<()> {
    let key = id.as_str().as_bytes();
    let order = session_record_order(record)?;
    let number = match view.get(T::Sessions, key)? {
        Some(previous) => {
            let previous_order = session_record_order(&previous)?;
            if previous_order != order {
                view.del(T::SessionOrder, session_order_key(previous_order, key));
            }
            session_record_number(&previous)?
        }
        None => {
            // A new session (or one saved again after a delete): a number never used before.
            let number = match view.get(T::Meta, NEXT_SESSION_NUMBER)? {
                Some(value) => decode_u64(&value)?,
                None => 1,
            };
            let next = number.checked_add(1).ok_or_else(|| corrupt("session numbers exhausted"))?;
            view.put(T::Meta, NEXT_SESSION_NUMBER, &next.to_be_bytes()[..]);
            number
        }
    };
    view.put(T::Sessions, key, codec::with_session_number(record.to_vec(), number)?);
    view.put(T::SessionOrder, session_order_key(order, key), IVec::default());
    Ok(())
}

fn delete_session(view: &mut View<'_>, id: &SessionId) -> Result<()> {
    let key = id.as_str().as_bytes();
    let record = view.get(T::Sessions, key)?.ok_or_else(|| session_not_found(id))?;
    let order = session_record_order(&record)?.to_vec();
    let number = session_record_number(&record)?.to_be_bytes();
    let events = view.scan_prefix(T::Events, &number)?;
    for (event_key, value) in &events {
        let event_id = codec::decode_event_id(value)?;
        // Only forget the id if the index points at this very event.
        let indexed = view.get(T::EventIds, event_id.as_bytes())?;
        if indexed.is_some_and(|at| at.get(ID_LEN..) == Some(&event_key[..])) {
            view.del(T::EventIds, event_id.as_bytes());
        }
        view.del(T::Events, event_key.clone());
    }
    for (run_event, _) in view.scan_prefix(T::RunEvents, &number)? {
        view.del(T::RunEvents, run_event);
    }
    for (session_run, _) in view.scan_prefix(T::SessionRuns, key)? {
        let run_key = session_run.get(ID_LEN + TIME_LEN..).ok_or_else(|| corrupt("a run index key too short"))?;
        if view.get(T::Runs, run_key)?.is_some_and(|run| run.starts_with(key)) {
            view.del(T::Runs, run_key);
        }
        view.del(T::SessionRuns, session_run);
    }
    view.del(T::LastSequence, &number[..]);
    view.del(T::Sessions, key);
    view.del(T::SessionOrder, session_order_key(&order, key));
    tracing::debug!(events = events.len(), "session deleted");
    Ok(())
}

/// Checks that `run` may be written; returns the stored version, if any.
fn claim_run(view: &View<'_>, run: &Run) -> Result<Option<Run>> {
    match view.get(T::Runs, run.id.as_str().as_bytes())? {
        None => Ok(None),
        Some(stored) => {
            let stored = codec::decode_run(&stored)?;
            check_run_overwrite(&stored, run)?;
            Ok(Some(stored))
        }
    }
}

fn store_run(view: &mut View<'_>, run: &Run, record: &IVec, previous: Option<&Run>) {
    let session = run.session_id.as_str().as_bytes();
    let run_key = run.id.as_str().as_bytes();
    let time = time_key(&run.created_at);
    if let Some(previous) = previous {
        let previous_time = time_key(&previous.created_at);
        if previous_time != time {
            view.del(T::SessionRuns, session_run_key(previous.session_id.as_str().as_bytes(), &previous_time, run_key));
        }
    }
    view.put(T::Runs, run_key, record.clone());
    view.put(T::SessionRuns, session_run_key(session, &time, run_key), IVec::default());
}

fn append(
    view: &mut View<'_>,
    session: &SessionId,
    number: u64,
    events: &[Prepared],
    expected: Option<u64>,
    touched: &mut Vec<SessionId>,
) -> Result<Vec<Resolved>> {
    let number_key = number.to_be_bytes();
    let last = match view.get(T::LastSequence, &number_key)? {
        Some(value) => decode_u64(&value)?,
        None => 0,
    };

    let mut first_new: HashMap<&EventId, usize> = HashMap::new();
    let mut resolved = Vec::with_capacity(events.len());
    let mut any_new = false;
    for (position, event) in events.iter().enumerate() {
        if let Some(at) = view.get(T::EventIds, event.id.as_str().as_bytes())? {
            let (owner, key, sequence) = decode_location(&at)?;
            let bytes =
                view.get(T::Events, key)?.ok_or_else(|| corrupt("the event-id index points at a missing event"))?;
            resolved.push(Resolved::Stored { session: owner, sequence, bytes });
        } else if let Some(&earlier) = first_new.get(&event.id) {
            resolved.push(Resolved::SameAs(earlier));
        } else {
            if events.len() > 1 {
                first_new.insert(&event.id, position);
            }
            any_new = true;
            resolved.push(Resolved::New(0));
        }
    }

    if any_new && let Some(expected) = expected.filter(|&expected| expected != last) {
        return Err(Error::new(
            ErrorCode::InvalidOperation,
            format!("expected last sequence {expected}, but the session is at {last}"),
        )
        .with_detail("expected_last_sequence", expected)
        .with_detail("actual_last_sequence", last));
    }

    // No event of a run after its terminal state: checked before the first write.
    let mut checked: Vec<&RunId> = Vec::new();
    for (event, slot) in events.iter().zip(&resolved) {
        let (Resolved::New(_), Some(run_id)) = (slot, &event.run_id) else { continue };
        if checked.contains(&run_id) {
            continue;
        }
        checked.push(run_id);
        if let Some(stored) = view.get(T::Runs, run_id.as_str().as_bytes())? {
            let stored = codec::decode_run(&stored)?;
            if stored.session_id == *session {
                check_run_accepts_events(run_id, stored.status)?;
            }
        }
    }

    let mut next = last;
    for (event, slot) in events.iter().zip(resolved.iter_mut()) {
        if let Resolved::New(sequence) = slot {
            next = next.checked_add(1).ok_or_else(|| {
                Error::new(ErrorCode::InvalidOperation, "the session's sequence numbers are exhausted")
            })?;
            *sequence = next;
            let key = event_key(number, next);
            view.put(T::EventIds, event.id.as_str().as_bytes(), location(session, &key));
            view.put(T::Events, &key[..], event.bytes.clone());
            if let Some(run) = &event.run_id {
                view.put(T::RunEvents, run_event_key(number, run, next), IVec::default());
            }
        }
    }
    if next != last {
        view.put(T::LastSequence, &number_key[..], &next.to_be_bytes()[..]);
        touched.push(session.clone());
    }
    Ok(resolved)
}
