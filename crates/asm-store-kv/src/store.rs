//! [`KvStore`]: the session store written once over a [`KvEngine`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use asm_core::{Error, ErrorCode, Event, Result, Run, RunId, Session, SessionId, StoredEvent};
use asm_ports::backend::{batch_session, check_flush_record};
use asm_ports::{EventQuery, ExecutionRecord, Page, RunQuery, SessionQuery, StoreCapabilities};
use tokio::sync::oneshot;

use crate::codec::{self, Decoder};
use crate::engine::{KvEngine, KvRead, Table};
use crate::error::{KvError, run_not_found, session_not_found};
use crate::format;
use crate::keys::{self, Id};
use crate::options::{Durability, KvOptions};
use crate::tail::{Recent, SessionTail, Tail};
use crate::waiters::Waiters;
use crate::writer::{Command, Reply, Request, Slot, Writer};

/// A session store over the engine `E`: everything a KV store does except the engine itself.
///
/// Cloning is cheap: every clone is a handle to the same engine and writer. The writer thread
/// stops (after making everything durable) when the last handle is dropped, and the drop waits
/// for it, so the engine is closed (its lock released) once the last handle is gone.
///
/// The store crates wrap it in their own type and forward [`asm_ports::SessionStore`] to the
/// inherent methods of the same names with [`forward_session_store!`](crate::forward_session_store).
pub struct KvStore<E: KvEngine> {
    inner: Arc<Inner<E>>,
}

impl<E: KvEngine> Clone for KvStore<E> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

struct Inner<E: KvEngine> {
    engine: Arc<E>,
    options: KvOptions,
    waiters: Arc<Waiters>,
    tail: Arc<Tail>,
    /// `None` only while dropping.
    sender: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl<E: KvEngine> Drop for Inner<E> {
    fn drop(&mut self) {
        // Closing the channel stops the writer; joining it makes sure the engine is closed when
        // the last handle is gone.
        self.sender.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(engine = E::NAME, "the writer thread panicked");
        }
    }
}

impl<E: KvEngine> fmt::Debug for KvStore<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvStore")
            .field("engine", &E::NAME)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// Runs `f`, turning a panic of the engine (possible on a damaged file) into an error.
fn guarded<T>(what: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(KvError::panicked(what, &*payload).into()),
    }
}

pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| KvError::corrupted(format!("a {what} record: {e}")).into())
}

fn encode_json<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::new(ErrorCode::InvalidInput, format!("cannot encode the {what}: {e}")))
}

impl<E: KvEngine> KvStore<E> {
    /// Checks (or, in a new database, writes) the format record of `engine`, then starts the
    /// writer thread.
    ///
    /// # Errors
    /// [`ErrorCode::MigrationRequired`] for a newer, older or unknown layout version or a
    /// database holding someone else's data; the engine's errors; [`ErrorCode::StorageError`]
    /// when the writer thread cannot be started.
    pub fn open(engine: E, options: KvOptions) -> Result<Self> {
        guarded("the format check", || format::check_or_init(&engine))?;
        let recent = guarded("reading the log", || recover(&engine))?;
        let tail = Arc::new(Tail::default());
        tail.sessions.write().extend(
            recent.sessions.iter().map(|(key, s)| (*key, SessionTail { first: s.first, events: s.events.clone() })),
        );
        let engine = Arc::new(engine);
        let waiters = Arc::new(Waiters::default());
        let (sender, receiver) = mpsc::channel();
        let writer =
            Writer::new(Arc::clone(&engine), &options, Arc::clone(&waiters), Arc::clone(&tail), recent, receiver);
        let writer = std::thread::Builder::new()
            .name(format!("asm-{}-writer", E::NAME))
            .spawn(move || writer.run())
            .map_err(|e| Error::new(ErrorCode::StorageError, format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner { engine, options, waiters, tail, sender: Some(sender), writer: Some(writer) }),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &E {
        &self.inner.engine
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &KvOptions {
        &self.inner.options
    }

    /// Makes every acknowledged write durable (through the writer, after its current commit).
    /// With [`Durability::Immediate`] they all are already.
    ///
    /// # Errors
    /// [`ErrorCode::StorageWriteFailed`] when the engine fails.
    pub async fn sync(&self) -> Result<()> {
        self.submit(Command::Sync).await.map(|_| ())
    }

    /// What the store can do: long-poll; durable with [`Durability::Immediate`]; one process.
    pub fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::new()
            .long_poll(true)
            .durable(self.inner.options.durability == Durability::Immediate)
            .multi_process(false)
    }

    pub(crate) async fn submit(&self, command: Command) -> Result<Reply> {
        let (reply, answer) = oneshot::channel();
        let sender = self.inner.sender.as_ref().ok_or(KvError::WriterStopped)?;
        sender.send(Request { command, reply }).map_err(|_| KvError::WriterStopped)?;
        answer.await.map_err(|_| KvError::WriterStopped)?
    }

    fn encode_all(&self, events: Vec<Event>) -> Result<Vec<codec::EncodedEvent>> {
        events.into_iter().map(|e| codec::encode_event(e, self.inner.options.max_event_bytes)).collect()
    }

    /// Runs a read on a snapshot, turning an engine panic into an error.
    pub(crate) fn read<T>(&self, what: &'static str, f: impl FnOnce(&E::Snapshot<'_>) -> Result<T>) -> Result<T> {
        guarded(what, || self.inner.engine.read(f))
    }

    fn read_events(&self, key: &Id, session_id: &SessionId, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        // The tail's read lock is held until the snapshot is taken (see `tail`): the snapshot
        // then holds every event before the tail's start.
        let sessions = self.inner.tail.sessions.read();
        self.read("get_events", move |snapshot| {
            // No stored sequence reaches u64::MAX, so the range needs no look-up of the head;
            // the session's existence is checked only when nothing matched.
            let range = query.sequence_range(u64::MAX - 1);
            let limit = query.limit.unwrap_or(usize::MAX);
            let (tail_start, recent) = match sessions.get(key) {
                Some(tail) => (tail.first, from_tail(tail, query, range.clone(), limit)),
                None => (u64::MAX, Vec::new()),
            };
            let in_tail = tail_start != u64::MAX;
            drop(sessions);

            let end = range.end.min(tail_start);
            let mut out = Vec::new();
            // A `run_id` read starts at the run's first event (runs of a session are mostly
            // sequential) and checks the run in each event's header, without decoding the rest.
            let (first, run) = match &query.run_id {
                Some(run) => {
                    let run = keys::run_key(run)?;
                    let start = snapshot.get(Table::RunStarts, &keys::run_start_key(key, &run), keys::stored_u64)?;
                    (start.transpose()?.map(|start| range.start.max(start)), Some(run))
                }
                None => (Some(range.start), None),
            };
            if let Some(first) = first.filter(|&first| first < end) {
                let filtered = !query.kinds.is_empty() || query.since.is_some() || run.is_some();
                out.reserve(if filtered { limit.min(64) } else { limit.min(1024) });
                let mut decoder = Decoder::new(*key, session_id.clone());
                let low = keys::event_pos(key, first);
                let high = keys::event_pos(key, end);
                snapshot.scan::<Error>(
                    Table::Events,
                    (Bound::Included(&low[..]), Bound::Excluded(&high[..])),
                    |k, bytes| {
                        let (_, sequence) = keys::split_pos(&keys::stored_pos(k)?);
                        let header = decoder.header(bytes)?;
                        let matches = (run.is_none() || header.run == run)
                            && (query.kinds.is_empty() || query.kinds.contains(&header.kind))
                            && query.since.is_none_or(|since| header.timestamp >= since);
                        if matches {
                            out.push(decoder.finish(key, sequence, header)?);
                        }
                        Ok(out.len() < limit)
                    },
                )?;
            }
            if out.len() < limit {
                let room = limit - out.len();
                out.extend(recent.into_iter().take(room));
            }
            if out.is_empty() && !in_tail && snapshot.get(Table::Events, &keys::head_pos(key), |_| ())?.is_none() {
                return Err(session_not_found(session_id));
            }
            Ok(out)
        })
    }

    /// Like [`KvStore::read_events`], but when nothing matches waits until a commit makes the
    /// query match or `wait` has passed (then returns what matches: usually `[]`).
    async fn read_events_waiting(
        &self,
        key: &Id,
        session_id: &SessionId,
        query: &EventQuery,
        wait: std::time::Duration,
    ) -> Result<Vec<StoredEvent>> {
        // A wait too long to be a deadline (`Duration::MAX`) waits without one.
        let deadline = tokio::time::Instant::now().checked_add(wait);
        let registration = self.inner.waiters.register(*key);
        loop {
            // Arm the notification *before* reading, so a commit between the read and the await
            // is never missed.
            let notified = registration.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let events = self.read_events(key, session_id, query)?;
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

    /// [`asm_ports::SessionStore::save_session`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, session_id = %session.id))]
    pub async fn save_session(&self, session: &Session) -> Result<()> {
        let command = Command::SaveSession {
            key: keys::session_key(&session.id)?,
            order: keys::order_key(session.created_at.timestamp_micros()),
            json: encode_json("session", session)?,
        };
        self.submit(command).await.map(|_| ())
    }

    /// [`asm_ports::SessionStore::get_session`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, session_id = %id))]
    pub async fn get_session(&self, id: &SessionId) -> Result<Session> {
        let key = keys::session_key(id)?;
        self.read("get_session", |snapshot| {
            let session = snapshot.get(Table::Sessions, &key, |value| {
                let (_, json) = keys::split_session_value(value)?;
                decode_json::<Session>("session", json)
            })?;
            session.ok_or_else(|| session_not_found(id))?
        })
    }

    /// [`asm_ports::SessionStore::list_sessions`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME))]
    pub async fn list_sessions(&self, query: &SessionQuery) -> Result<Page<Session>> {
        let page_size = query.page_size()?;
        let start = match query.decode_cursor()? {
            Some((micros, id)) => Some(keys::session_order_key(&keys::order_key(micros), &keys::session_key(&id)?)),
            None => None,
        };
        self.read("list_sessions", |snapshot| {
            let low = match &start {
                Some(after) => Bound::Excluded(&after[..]),
                None => Bound::Unbounded,
            };
            let mut items = Vec::new();
            let mut more = false;
            snapshot.scan::<Error>(Table::SessionOrder, (low, Bound::Unbounded), |k, _| {
                let key = keys::session_of_order_key(k)?;
                let session = snapshot.get(Table::Sessions, &key, |value| {
                    let (_, json) = keys::split_session_value(value)?;
                    decode_json::<Session>("session", json)
                })?;
                // Absent only if deleted since the order key was read (engines without snapshots).
                let Some(session) = session.transpose()? else { return Ok(true) };
                if !query.matches(&session) {
                    return Ok(true);
                }
                if items.len() == page_size {
                    more = true;
                    return Ok(false);
                }
                items.push(session);
                Ok(true)
            })?;
            let next_cursor = if more { items.last().map(SessionQuery::encode_cursor) } else { None };
            Ok(Page::new(items, next_cursor))
        })
    }

    /// [`asm_ports::SessionStore::delete_session`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, session_id = %id))]
    pub async fn delete_session(&self, id: &SessionId) -> Result<()> {
        self.submit(Command::DeleteSession { key: keys::session_key(id)?, id: id.clone() }).await.map(|_| ())
    }

    /// [`asm_ports::SessionStore::save_run`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, session_id = %run.session_id, run_id = %run.id))]
    pub async fn save_run(&self, run: &Run) -> Result<()> {
        let command = Command::SaveRun {
            run_key: keys::run_key(&run.id)?,
            session_key: keys::session_key(&run.session_id)?,
            run: Box::new(run.clone()),
            json: encode_json("run", run)?,
        };
        self.submit(command).await.map(|_| ())
    }

    /// [`asm_ports::SessionStore::get_run`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, run_id = %id))]
    pub async fn get_run(&self, id: &RunId) -> Result<Run> {
        let key = keys::run_key(id)?;
        self.read("get_run", |snapshot| {
            let run = snapshot.get(Table::Runs, &key, |value| decode_json::<Run>("run", value))?;
            run.ok_or_else(|| run_not_found(id))?
        })
    }

    /// [`asm_ports::SessionStore::list_runs`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, session_id = %session_id))]
    pub async fn list_runs(&self, session_id: &SessionId, query: &RunQuery) -> Result<Vec<Run>> {
        if query.limit == Some(0) {
            return Err(Error::new(ErrorCode::InvalidInput, "run query limit must be at least 1"));
        }
        let key = keys::session_key(session_id)?;
        self.read("list_runs", |snapshot| {
            if snapshot.get(Table::Events, &keys::head_pos(&key), |_| ())?.is_none() {
                return Err(session_not_found(session_id));
            }
            let (low, high) = keys::prefix_bounds::<44>(&key);
            let limit = query.limit.unwrap_or(usize::MAX);
            let mut out = Vec::new();
            snapshot.scan::<Error>(
                Table::SessionRuns,
                (Bound::Included(&low[..]), Bound::Included(&high[..])),
                |k, _| {
                    let run_key = keys::run_of_session_run_key(k)?;
                    let Some(run) = snapshot.get(Table::Runs, &run_key, |value| decode_json::<Run>("run", value))?
                    else {
                        return Ok(true);
                    };
                    let run = run?;
                    if query.status.is_none_or(|status| run.status == status) {
                        out.push(run);
                    }
                    Ok(out.len() < limit)
                },
            )?;
            Ok(out)
        })
    }

    /// [`asm_ports::SessionStore::append`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, session_id, count = events.len()))]
    pub async fn append(&self, events: Vec<Event>, expected_last_sequence: Option<u64>) -> Result<Vec<StoredEvent>> {
        let session_id = batch_session(&events)?.clone();
        tracing::Span::current().record("session_id", tracing::field::display(&session_id));
        let key = keys::session_key(&session_id)?;
        let encoded = self.encode_all(events)?;
        let command = Command::Append { key, id: session_id.clone(), events: encoded, expected_last_sequence };
        match self.submit(command).await? {
            Reply::Appended(slots) => assemble(slots, key, &session_id),
            Reply::Done | Reply::Pruned(_) => {
                Err(Error::new(ErrorCode::InternalError, "the writer answered an append without events"))
            }
        }
    }

    /// [`asm_ports::SessionStore::get_events`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, session_id = %session_id))]
    pub async fn get_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        query.validate()?;
        let key = keys::session_key(session_id)?;
        match query.wait.filter(|wait| !wait.is_zero()) {
            Some(wait) => self.read_events_waiting(&key, session_id, query, wait).await,
            None => self.read_events(&key, session_id, query),
        }
    }

    /// [`asm_ports::SessionStore::latest_sequence`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = E::NAME, session_id = %session_id))]
    pub async fn latest_sequence(&self, session_id: &SessionId) -> Result<u64> {
        let key = keys::session_key(session_id)?;
        let sessions = self.inner.tail.sessions.read();
        if let Some(tail) = sessions.get(&key) {
            return Ok(tail.last());
        }
        self.read("latest_sequence", move |snapshot| {
            drop(sessions);
            let head = snapshot.get(Table::Events, &keys::head_pos(&key), keys::decode_head)?;
            head.ok_or_else(|| session_not_found(session_id))?
        })
    }

    /// [`asm_ports::SessionStore::flush`].
    ///
    /// # Errors
    /// See the port.
    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(engine = E::NAME, session_id = %record.run.session_id, run_id = %record.run.id, count = record.events.len())
    )]
    pub async fn flush(&self, record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        check_flush_record(&record)?;
        let ExecutionRecord { run, events, session_metadata, expected_status, .. } = record;
        let session_key = keys::session_key(&run.session_id)?;
        let encoded = self.encode_all(events)?;
        let session_id = run.session_id.clone();
        let command = Command::Flush {
            session_key,
            run_key: keys::run_key(&run.id)?,
            run_json: encode_json("run", &run)?,
            run: Box::new(run),
            events: encoded,
            metadata: session_metadata,
            expected_status,
        };
        match self.submit(command).await? {
            Reply::Appended(slots) => assemble(slots, session_key, &session_id),
            Reply::Done | Reply::Pruned(_) => {
                Err(Error::new(ErrorCode::InternalError, "the writer answered a flush without events"))
            }
        }
    }
}

/// Builds what an append returns from where the writer put each event.
fn assemble(slots: Vec<Slot>, key: Id, session_id: &SessionId) -> Result<Vec<StoredEvent>> {
    let mut decoder = Decoder::new(key, session_id.clone());
    let mut out: Vec<StoredEvent> = Vec::with_capacity(slots.len());
    for slot in slots {
        let stored = match slot {
            Slot::New(event) | Slot::Recent(event) => event,
            Slot::Stored { pos, bytes } => {
                let (session, sequence) = keys::split_pos(&pos);
                decoder.decode(&session, sequence, &bytes)?
            }
            Slot::Same(earlier) => out
                .get(earlier)
                .cloned()
                .ok_or_else(|| Error::new(ErrorCode::InternalError, "batch duplicate resolved forward"))?,
        };
        out.push(stored);
    }
    Ok(out)
}

/// The events of a session's tail that `query` matches, within `range`, at most `limit`.
fn from_tail(tail: &SessionTail, query: &EventQuery, range: std::ops::Range<u64>, limit: usize) -> Vec<StoredEvent> {
    let start = range.start.max(tail.first);
    let end = range.end.min(tail.last().saturating_add(1));
    if start >= end {
        return Vec::new();
    }
    let skip = usize::try_from(start - tail.first).unwrap_or(usize::MAX);
    let take = usize::try_from(end - start).unwrap_or(usize::MAX);
    let candidates = tail.events.iter().skip(skip).take(take);
    let filtered = !query.kinds.is_empty() || query.since.is_some() || query.run_id.is_some();
    if filtered {
        candidates.filter(|event| query.matches(event)).take(limit).cloned().collect()
    } else {
        candidates.take(limit).cloned().collect()
    }
}

/// Rebuilds the writer's recent events from the log (they were committed but not compacted
/// when the store was last closed, or when the process died).
///
/// # Errors
/// Corruption when a log entry does not decode or does not continue its session's sequence.
fn recover<E: KvEngine>(engine: &E) -> Result<Recent> {
    engine.read(|snapshot| {
        let mut recent = Recent::default();
        let mut first: Option<u64> = None;
        let mut last: Option<u64> = None;
        let mut heads: HashMap<Id, Option<u64>> = HashMap::new();
        let mut decoders: HashMap<Id, Decoder> = HashMap::new();
        let mut orphans = 0usize;
        snapshot.scan::<Error>(Table::Log, (Bound::Unbounded, Bound::Unbounded), |k, value| {
            let lsn = keys::stored_u64(k)?;
            first.get_or_insert(lsn);
            last = Some(lsn);
            let (pos, bytes) = keys::split_log_value(value)?;
            let (session, sequence) = keys::split_pos(&pos);
            let head = match recent.sessions.get(&session) {
                Some(tail) => Some(tail.last()),
                None => match heads.get(&session) {
                    Some(head) => *head,
                    None => {
                        let head =
                            snapshot.get(Table::Events, &keys::head_pos(&session), keys::decode_head)?.transpose()?;
                        heads.insert(session, head);
                        head
                    }
                },
            };
            let Some(head) = head else {
                // The entry of a session that is gone; the next compaction drops it.
                orphans += 1;
                return Ok(true);
            };
            if Some(sequence) != head.checked_add(1) {
                return Err(KvError::corrupted(format!(
                    "the log continues session {} at sequence {sequence} after {head}",
                    keys::session_id(&session).map(|id| id.to_string()).unwrap_or_default()
                ))
                .into());
            }
            let decoder = match decoders.entry(session) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => entry.insert(Decoder::new(session, keys::session_id(&session)?)),
            };
            let event = decoder.decode(&session, sequence, bytes)?;
            recent.push(session, codec::stored_event_id(bytes)?, lsn, event, bytes.len());
            Ok(true)
        })?;
        recent.first_lsn = first.unwrap_or(0);
        recent.next_lsn = last.map_or(0, |last| last.saturating_add(1));
        if recent.count > 0 || orphans > 0 {
            tracing::debug!(
                engine = E::NAME,
                events = recent.count,
                orphans,
                "recovered the recent events from the log"
            );
        }
        Ok(recent)
    })
}

/// Implements [`asm_ports::SessionStore`], [`asm_ports::QueryStore`] and
/// [`asm_ports::MaintenanceStore`] for a store type that wraps a [`KvStore`] in the named
/// field, forwarding every method to the [`KvStore`] method of the same name (no extra boxing:
/// the inherent methods are not trait methods): for `struct MyStore { inner: KvStore<MyEngine> }`,
/// write `asm_store_kv::forward_session_store!(MyStore, inner);`. The store type must implement
/// `Debug` (the port requires it).
#[macro_export]
macro_rules! forward_session_store {
    ($store:ty, $field:ident) => {
        #[deny(clippy::missing_trait_methods)]
        #[$crate::__private::async_trait]
        impl $crate::__private::SessionStore for $store {
            async fn save_session(&self, session: &$crate::__private::Session) -> $crate::__private::Result<()> {
                self.$field.save_session(session).await
            }

            async fn get_session(
                &self,
                id: &$crate::__private::SessionId,
            ) -> $crate::__private::Result<$crate::__private::Session> {
                self.$field.get_session(id).await
            }

            async fn list_sessions(
                &self,
                query: &$crate::__private::SessionQuery,
            ) -> $crate::__private::Result<$crate::__private::Page<$crate::__private::Session>> {
                self.$field.list_sessions(query).await
            }

            async fn delete_session(&self, id: &$crate::__private::SessionId) -> $crate::__private::Result<()> {
                self.$field.delete_session(id).await
            }

            async fn save_run(&self, run: &$crate::__private::Run) -> $crate::__private::Result<()> {
                self.$field.save_run(run).await
            }

            async fn get_run(
                &self,
                id: &$crate::__private::RunId,
            ) -> $crate::__private::Result<$crate::__private::Run> {
                self.$field.get_run(id).await
            }

            async fn list_runs(
                &self,
                session_id: &$crate::__private::SessionId,
                query: &$crate::__private::RunQuery,
            ) -> $crate::__private::Result<Vec<$crate::__private::Run>> {
                self.$field.list_runs(session_id, query).await
            }

            async fn append(
                &self,
                events: Vec<$crate::__private::Event>,
                expected_last_sequence: Option<u64>,
            ) -> $crate::__private::Result<Vec<$crate::__private::StoredEvent>> {
                self.$field.append(events, expected_last_sequence).await
            }

            async fn get_events(
                &self,
                session_id: &$crate::__private::SessionId,
                query: &$crate::__private::EventQuery,
            ) -> $crate::__private::Result<Vec<$crate::__private::StoredEvent>> {
                self.$field.get_events(session_id, query).await
            }

            async fn latest_sequence(
                &self,
                session_id: &$crate::__private::SessionId,
            ) -> $crate::__private::Result<u64> {
                self.$field.latest_sequence(session_id).await
            }

            async fn flush(
                &self,
                record: $crate::__private::ExecutionRecord,
            ) -> $crate::__private::Result<Vec<$crate::__private::StoredEvent>> {
                self.$field.flush(record).await
            }

            fn capabilities(&self) -> $crate::__private::StoreCapabilities {
                self.$field.capabilities()
            }
        }

        #[deny(clippy::missing_trait_methods)]
        #[$crate::__private::async_trait]
        impl $crate::__private::QueryStore for $store {
            async fn search_sessions(
                &self,
                query: &$crate::__private::SessionSearch,
            ) -> $crate::__private::Result<$crate::__private::Page<$crate::__private::Session>> {
                self.$field.search_sessions(query).await
            }

            async fn search_runs(
                &self,
                query: &$crate::__private::RunSearch,
            ) -> $crate::__private::Result<$crate::__private::Page<$crate::__private::Run>> {
                self.$field.search_runs(query).await
            }

            async fn usage_summary(
                &self,
                query: &$crate::__private::UsageQuery,
            ) -> $crate::__private::Result<$crate::__private::UsageReport> {
                self.$field.usage_summary(query).await
            }

            async fn search_events(
                &self,
                query: &$crate::__private::EventSearch,
            ) -> $crate::__private::Result<$crate::__private::Page<$crate::__private::StoredEvent>> {
                self.$field.search_events(query).await
            }

            async fn count_events(&self, query: &$crate::__private::EventSearch) -> $crate::__private::Result<u64> {
                self.$field.count_events(query).await
            }

            async fn get_session_stats(
                &self,
                session_id: &$crate::__private::SessionId,
            ) -> $crate::__private::Result<$crate::__private::SessionStats> {
                self.$field.get_session_stats(session_id).await
            }
        }

        #[deny(clippy::missing_trait_methods)]
        #[$crate::__private::async_trait]
        impl $crate::__private::MaintenanceStore for $store {
            async fn prune_events(
                &self,
                session_id: &$crate::__private::SessionId,
                sequences: &[u64],
            ) -> $crate::__private::Result<u64> {
                self.$field.prune_events(session_id, sequences).await
            }

            async fn clean_orphans(&self, dry_run: bool) -> $crate::__private::Result<u64> {
                self.$field.clean_orphans(dry_run).await
            }

            async fn health_check(&self) -> $crate::__private::Result<$crate::__private::HealthReport> {
                self.$field.health_check().await
            }

            async fn run_maintenance(
                &self,
                policy: &$crate::__private::RetentionPolicy,
            ) -> $crate::__private::Result<$crate::__private::MaintenanceReport> {
                $crate::__private::run_cycle(self, policy).await
            }
        }
    };
}
