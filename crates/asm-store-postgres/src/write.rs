//! One atomic write of one session (`asm_write` in the migration): the parameters, and the
//! result rows turned back into stored events or a typed refusal.

use std::collections::HashMap;

use asm_core::{Error, ErrorCode, Event, EventId, JsonMap, Result, Run, RunStatus, SessionId, StoredEvent, Timestamp};
use asm_ports::{ExecutionRecord, Lease};
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use crate::codec::{self, uuid_of};
use crate::error::{DbError, decode, run_not_found, session_not_found};

/// The terminal run statuses, from the state machine in `asm-core` (the SQL takes them as a
/// parameter, so the rule has one source).
fn terminal_statuses() -> Vec<&'static str> {
    RunStatus::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str()).collect()
}

/// The stored statuses a run may move from to `to` (besides staying at `to`).
fn statuses_before(to: RunStatus) -> Vec<&'static str> {
    RunStatus::ALL.iter().filter(|s| s.can_transition_to(to)).map(|s| s.as_str()).collect()
}

fn parse_run_status(text: &str) -> Option<RunStatus> {
    RunStatus::ALL.iter().copied().find(|s| s.as_str() == text)
}

/// A batch of events, with in-batch duplicates resolved to their first occurrence: only the
/// first occurrences are sent; every position maps to one of them.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) session: SessionId,
    pub(crate) session_uuid: Uuid,
    /// The caller's events, in input order; they become the result.
    events: Vec<Event>,
    /// Positions (in `events`) of the first occurrences, in order: what is sent.
    unique: Vec<usize>,
    /// For each position of `events`, its index in `unique`.
    slot: Vec<usize>,
}

impl Batch {
    /// Checks the events (size cap, representable fields) and resolves in-batch duplicates.
    pub(crate) fn new(session: SessionId, events: Vec<Event>, max_event_bytes: usize) -> Result<Self> {
        for event in &events {
            asm_ports::backend::check_event_size(event, max_event_bytes)?;
            if i32::try_from(event.schema_version).is_err() {
                return Err(Error::new(
                    ErrorCode::InvalidInput,
                    format!(
                        "event {} has schema_version {}, more than PostgreSQL's integer",
                        event.id, event.schema_version
                    ),
                ));
            }
        }
        let mut unique = Vec::with_capacity(events.len());
        let mut slot = Vec::with_capacity(events.len());
        if events.len() == 1 {
            unique.push(0);
            slot.push(0);
        } else {
            let mut first: HashMap<&EventId, usize> = HashMap::with_capacity(events.len());
            for (i, event) in events.iter().enumerate() {
                let index = *first.entry(&event.id).or_insert_with(|| {
                    unique.push(i);
                    unique.len() - 1
                });
                slot.push(index);
            }
        }
        let session_uuid = uuid_of(session.as_str());
        Ok(Self { session, session_uuid, events, unique, slot })
    }

    fn unique_events(&self) -> impl Iterator<Item = &Event> {
        self.unique.iter().filter_map(|&i| self.events.get(i))
    }
}

/// What a write carries besides its events.
#[derive(Debug)]
pub(crate) enum Kind {
    Append { expected_last_sequence: Option<u64> },
    Flush { run: Box<Run>, session_metadata: JsonMap, expected_status: Option<RunStatus> },
}

/// One write request of one session, as the group-commit writer takes it: an append or a flush,
/// and, for a session owned through [`SessionLeases`](asm_ports::SessionLeases), the lease
/// whose fencing token the write's transaction checks (`asm_check_fence`) before it writes.
#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) batch: Batch,
    pub(crate) kind: Kind,
    /// The lease the write is fenced by; `None` for an unfenced write.
    pub(crate) fence: Option<Lease>,
}

impl Write {
    pub(crate) fn append(batch: Batch, expected_last_sequence: Option<u64>) -> Self {
        Self { batch, kind: Kind::Append { expected_last_sequence }, fence: None }
    }

    /// The same write, fenced by `lease`.
    ///
    /// # Errors
    /// [`ErrorCode::SessionMismatch`] when the lease is of another session.
    pub(crate) fn fenced(mut self, lease: Lease) -> Result<Self> {
        if self.batch.session != lease.session_id {
            return Err(Error::new(
                ErrorCode::SessionMismatch,
                format!("a write of session {} under the lease of session {}", self.batch.session, lease.session_id),
            ));
        }
        self.fence = Some(lease);
        Ok(self)
    }

    /// Whether the write is a flush (a run write), which the set-based append statement
    /// cannot carry.
    pub(crate) fn is_flush(&self) -> bool {
        matches!(self.kind, Kind::Flush { .. })
    }

    pub(crate) fn flush(record: ExecutionRecord, max_event_bytes: usize) -> Result<Self> {
        asm_ports::backend::check_flush_record(&record)?;
        let ExecutionRecord { run, events, session_metadata, expected_status, .. } = record;
        let batch = Batch::new(run.session_id.clone(), events, max_event_bytes)?;
        Ok(Self { batch, kind: Kind::Flush { run: Box::new(run), session_metadata, expected_status }, fence: None })
    }

    /// How many distinct events the write carries.
    pub(crate) fn unique_len(&self) -> usize {
        self.batch.unique.len()
    }

    /// The parameters, borrowing from the write. `retry`: a previous attempt may have committed.
    pub(crate) fn params(&self, retry: bool) -> Params<'_> {
        let events: Vec<&Event> = self.batch.unique_events().collect();
        let expected_seq = match &self.kind {
            // A sequence beyond i64::MAX can never be the last one: expecting it always fails.
            Kind::Append { expected_last_sequence } => expected_last_sequence.map(|s| i64::try_from(s).unwrap_or(-1)),
            Kind::Flush { .. } => None,
        };
        let (run, session_metadata, expected_status) = match &self.kind {
            Kind::Append { .. } => (None, None, None),
            Kind::Flush { run, session_metadata, expected_status } => {
                (Some(&**run), Some(session_metadata), expected_status.map(RunStatus::as_str))
            }
        };
        Params {
            session: self.batch.session_uuid,
            expected_seq,
            terminal: terminal_statuses(),
            run: run.map(|r| uuid_of(r.id.as_str())),
            run_status: run.map(|r| r.status.as_str()),
            run_created: run.map(|r| r.created_at),
            run_started: run.and_then(|r| r.started_at),
            run_ended: run.and_then(|r| r.ended_at),
            run_provider: run.and_then(|r| r.provider.as_deref()),
            run_cost: run.and_then(|r| r.cost_usd),
            run_doc: run.map(Json),
            run_from: run.map(|r| statuses_before(r.status)),
            run_expected: expected_status,
            retry,
            patch: session_metadata.map(Json),
            ids: events.iter().map(|e| uuid_of(e.id.as_str())).collect(),
            runs: events.iter().map(|e| e.run_id.as_ref().map(|r| uuid_of(r.as_str()))).collect(),
            kinds: events.iter().map(|e| e.kind.as_str()).collect(),
            ts: events.iter().map(|e| e.timestamp).collect(),
            schemas: events.iter().map(|e| i32::try_from(e.schema_version).unwrap_or(i32::MAX)).collect(),
            providers: events.iter().map(|e| e.provider.as_deref()).collect(),
            corrs: events.iter().map(|e| e.correlation_id.as_deref()).collect(),
            data: events.iter().map(|e| Json(&e.data)).collect(),
            meta: events.iter().map(|e| Json(&e.metadata)).collect(),
        }
    }

    /// Reads the result rows: the refusal, or where the new events start and which events
    /// were stored before.
    pub(crate) fn outcome(&self, rows: &[Row]) -> std::result::Result<Outcome, DbError> {
        let mut base: Option<i64> = None;
        let mut stored: HashMap<usize, StoredEvent> = HashMap::new();
        for row in rows {
            let error: Option<&str> = row.try_get(0).map_err(|e| decode(e.to_string()))?;
            if let Some(code) = error {
                return Ok(Outcome::Refused(self.refusal(code, row)?));
            }
            let ord: Option<i32> = row.try_get(1).map_err(|e| decode(e.to_string()))?;
            match ord {
                None => base = Some(row.try_get(2).map_err(|e| decode(e.to_string()))?),
                Some(ord) => {
                    let index = usize::try_from(ord - 1).map_err(|_| decode("result position"))?;
                    let position = *self.batch.unique.get(index).ok_or_else(|| decode("result position"))?;
                    let id = &self.batch.events[position].id;
                    stored.insert(index, codec::written_event_row(row, id)?);
                }
            }
        }
        if base.is_none() && stored.len() < self.batch.unique.len() {
            return Err(decode("new events but no base sequence in the result"));
        }
        let base = u64::try_from(base.unwrap_or(0)).map_err(|_| decode("negative sequence"))?;
        Ok(Outcome::Written { base, stored })
    }

    /// The stored events in input order, from a committed [`Outcome::Written`].
    pub(crate) fn finish(self, base: u64, mut stored: HashMap<usize, StoredEvent>) -> Vec<StoredEvent> {
        let Batch { events, unique, slot, .. } = self.batch;
        let mut next = base;
        let mut events: Vec<Option<Event>> = events.into_iter().map(Some).collect();
        // The first occurrence of each id, as stored: found stored already, or numbered now
        // (the caller's own event gets its sequence, no copy unless shared).
        let mut resolved: Vec<Option<StoredEvent>> = Vec::with_capacity(unique.len());
        for (index, &position) in unique.iter().enumerate() {
            let first = match stored.remove(&index) {
                Some(event) => Some(event),
                None => events.get_mut(position).and_then(Option::take).map(|event| {
                    next += 1;
                    StoredEvent::new(event, next)
                }),
            };
            resolved.push(first);
        }
        slot.iter().filter_map(|&index| resolved.get(index).cloned().flatten()).collect()
    }

    fn refusal(&self, code: &str, row: &Row) -> std::result::Result<Error, DbError> {
        let get_seq = || row.try_get::<_, Option<i64>>(2).map_err(|e| decode(e.to_string()));
        let detail: Option<String> = row.try_get(12).map_err(|e| decode(e.to_string()))?;
        let run_uuid: Option<Uuid> = row.try_get(4).map_err(|e| decode(e.to_string()))?;
        let run_id = run_uuid.map(codec::run_id).transpose()?;
        let stored_status = detail.as_deref().and_then(parse_run_status);
        let flush = match &self.kind {
            Kind::Flush { run, expected_status, .. } => Some((run, *expected_status)),
            Kind::Append { .. } => None,
        };
        Ok(match code {
            "session_not_found" => session_not_found(&self.batch.session),
            "sequence_conflict" => {
                let actual = get_seq()?.unwrap_or(0);
                let expected = match &self.kind {
                    Kind::Append { expected_last_sequence } => expected_last_sequence.unwrap_or(0),
                    Kind::Flush { .. } => 0,
                };
                Error::new(
                    ErrorCode::InvalidOperation,
                    format!("expected last sequence {expected}, but the session is at {actual}"),
                )
                .with_detail("expected_last_sequence", expected)
                .with_detail("actual_last_sequence", actual)
            }
            "run_terminal" => {
                let (Some(run_id), Some(status)) = (run_id, stored_status) else {
                    return Err(decode("run_terminal without run or status"));
                };
                match asm_ports::backend::check_run_accepts_events(&run_id, status) {
                    Err(e) => e,
                    Ok(()) => return Err(decode("run_terminal for a run that is not terminal")),
                }
            }
            "run_not_found" | "status_mismatch" | "run_rewrite" | "session_mismatch" => {
                let Some((run, expected)) = flush else { return Err(decode(format!("{code} for an append"))) };
                self.run_refusal(code, run, expected, stored_status)
            }
            other => return Err(decode(format!("unknown refusal {other:?}"))),
        })
    }

    fn run_refusal(&self, code: &str, run: &Run, expected: Option<RunStatus>, stored: Option<RunStatus>) -> Error {
        let stored_text = stored.map_or("unknown", RunStatus::as_str);
        match code {
            "run_not_found" => {
                let mut e = run_not_found(&run.id);
                if let Some(expected) = expected {
                    e = e.with_detail("expected_status", expected.as_str());
                }
                e
            }
            "status_mismatch" => {
                let expected = expected.map_or("none", RunStatus::as_str);
                Error::new(
                    ErrorCode::InvalidTransition,
                    format!("run {} is {stored_text}, not {expected} as this write expects", run.id),
                )
                .with_detail("run_id", run.id.as_str())
                .with_detail("expected_status", expected)
                .with_detail("stored_status", stored_text)
            }
            "session_mismatch" => {
                Error::new(ErrorCode::SessionMismatch, format!("run {} belongs to another session", run.id))
                    .with_detail("run_id", run.id.as_str())
            }
            _ => {
                let why = if stored.is_some_and(RunStatus::is_terminal) {
                    format!("run {} is already {stored_text} and cannot be rewritten", run.id)
                } else {
                    format!("run {} is {stored_text}; it cannot become {}", run.id, run.status)
                };
                Error::new(ErrorCode::InvalidTransition, why)
                    .with_detail("run_id", run.id.as_str())
                    .with_detail("stored_status", stored_text)
                    .with_detail("incoming_status", run.status.as_str())
            }
        }
    }
}

/// What one `asm_write` call answered.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Written (once the transaction commits): new events follow `base`; `stored` holds the
    /// events stored before, by index of first occurrence.
    Written { base: u64, stored: HashMap<usize, StoredEvent> },
    /// Refused; nothing was written.
    Refused(Error),
}

/// The 24 parameters of `asm_write`, in order.
#[derive(Debug)]
pub(crate) struct Params<'a> {
    session: Uuid,
    expected_seq: Option<i64>,
    terminal: Vec<&'static str>,
    run: Option<Uuid>,
    run_status: Option<&'static str>,
    run_created: Option<Timestamp>,
    run_started: Option<Timestamp>,
    run_ended: Option<Timestamp>,
    run_provider: Option<&'a str>,
    run_cost: Option<f64>,
    run_doc: Option<Json<&'a Run>>,
    run_from: Option<Vec<&'static str>>,
    run_expected: Option<&'static str>,
    retry: bool,
    patch: Option<Json<&'a JsonMap>>,
    ids: Vec<Uuid>,
    runs: Vec<Option<Uuid>>,
    kinds: Vec<&'static str>,
    ts: Vec<Timestamp>,
    schemas: Vec<i32>,
    providers: Vec<Option<&'a str>>,
    corrs: Vec<Option<&'a str>>,
    data: Vec<Json<&'a JsonMap>>,
    meta: Vec<Json<&'a JsonMap>>,
}

impl Params<'_> {
    pub(crate) fn as_sql(&self) -> [&(dyn ToSql + Sync); 24] {
        [
            &self.session,
            &self.expected_seq,
            &self.terminal,
            &self.run,
            &self.run_status,
            &self.run_created,
            &self.run_started,
            &self.run_ended,
            &self.run_provider,
            &self.run_cost,
            &self.run_doc,
            &self.run_from,
            &self.run_expected,
            &self.retry,
            &self.patch,
            &self.ids,
            &self.runs,
            &self.kinds,
            &self.ts,
            &self.schemas,
            &self.providers,
            &self.corrs,
            &self.data,
            &self.meta,
        ]
    }
}

/// The fencing tokens a group of writes checks inside its transaction: one pair per distinct
/// (session, token), sorted by session (the order the lease rows are locked in, before any head
/// row: the lock order of `migrations/0002_session_leases.sql`).
#[derive(Debug)]
pub(crate) struct Fences {
    sessions: Vec<Uuid>,
    tokens: Vec<i64>,
}

impl Fences {
    /// The fences of `writes`; `None` when none of them is fenced.
    pub(crate) fn of(writes: &[Write]) -> Option<Self> {
        let mut pairs: Vec<(Uuid, i64)> = writes
            .iter()
            .filter_map(|w| w.fence.as_ref().map(|lease| (w.batch.session_uuid, token_sql(lease.token))))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        pairs.sort_unstable();
        pairs.dedup();
        Some(Self { sessions: pairs.iter().map(|p| p.0).collect(), tokens: pairs.iter().map(|p| p.1).collect() })
    }

    /// The fence of one session.
    pub(crate) fn one(session: Uuid, token: u64) -> Self {
        Self { sessions: vec![session], tokens: vec![token_sql(token)] }
    }

    pub(crate) fn as_sql(&self) -> [&(dyn ToSql + Sync); 2] {
        [&self.sessions, &self.tokens]
    }
}

/// A fencing token as PostgreSQL's `bigint` (a token beyond it never matches a stored one).
pub(crate) fn token_sql(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(i64::MAX)
}

/// The parameters of `asm_append_group` for a group of appends (see the migration), in order.
#[derive(Debug)]
pub(crate) struct GroupParams<'a> {
    terminal: Vec<&'static str>,
    sessions: Vec<Uuid>,
    session_counts: Vec<i32>,
    req_session: Vec<Uuid>,
    req_expect: Vec<Option<i64>>,
    /// Per append, the events of the earlier appends of its session in the group.
    pub(crate) req_offset: Vec<i64>,
    chk_run: Vec<Uuid>,
    chk_session: Vec<Uuid>,
    ev_session: Vec<Uuid>,
    ev_rank: Vec<i64>,
    ids: Vec<Uuid>,
    runs: Vec<Option<Uuid>>,
    kinds: Vec<&'static str>,
    ts: Vec<Timestamp>,
    schemas: Vec<i32>,
    providers: Vec<Option<&'a str>>,
    corrs: Vec<Option<&'a str>>,
    data: Vec<Json<&'a JsonMap>>,
    meta: Vec<Json<&'a JsonMap>>,
}

impl<'a> GroupParams<'a> {
    /// `writes` are appends in the group's order.
    pub(crate) fn new(writes: &'a [Write]) -> Self {
        let events = writes.iter().map(|w| w.unique_len()).sum();
        let mut per_session: HashMap<Uuid, i64> = HashMap::new();
        let mut checks: std::collections::HashSet<(Uuid, Uuid)> = std::collections::HashSet::new();
        let mut p = GroupParams {
            terminal: terminal_statuses(),
            sessions: Vec::new(),
            session_counts: Vec::new(),
            req_session: Vec::with_capacity(writes.len()),
            req_expect: Vec::with_capacity(writes.len()),
            req_offset: Vec::with_capacity(writes.len()),
            chk_run: Vec::new(),
            chk_session: Vec::new(),
            ev_session: Vec::with_capacity(events),
            ev_rank: Vec::with_capacity(events),
            ids: Vec::with_capacity(events),
            runs: Vec::with_capacity(events),
            kinds: Vec::with_capacity(events),
            ts: Vec::with_capacity(events),
            schemas: Vec::with_capacity(events),
            providers: Vec::with_capacity(events),
            corrs: Vec::with_capacity(events),
            data: Vec::with_capacity(events),
            meta: Vec::with_capacity(events),
        };
        for write in writes {
            let session = write.batch.session_uuid;
            let seen = per_session.entry(session).or_insert(0);
            p.req_session.push(session);
            p.req_expect.push(match &write.kind {
                Kind::Append { expected_last_sequence } => {
                    expected_last_sequence.map(|s| i64::try_from(s).unwrap_or(-1))
                }
                Kind::Flush { .. } => None,
            });
            p.req_offset.push(*seen);
            for e in write.batch.unique_events() {
                *seen += 1;
                let run = e.run_id.as_ref().map(|r| uuid_of(r.as_str()));
                if let Some(run) = run
                    && checks.insert((run, session))
                {
                    p.chk_run.push(run);
                    p.chk_session.push(session);
                }
                p.ev_session.push(session);
                p.ev_rank.push(*seen);
                p.ids.push(uuid_of(e.id.as_str()));
                p.runs.push(run);
                p.kinds.push(e.kind.as_str());
                p.ts.push(e.timestamp);
                p.schemas.push(i32::try_from(e.schema_version).unwrap_or(i32::MAX));
                p.providers.push(e.provider.as_deref());
                p.corrs.push(e.correlation_id.as_deref());
                p.data.push(Json(&e.data));
                p.meta.push(Json(&e.metadata));
            }
        }
        // Sorted: the order the head rows are locked in.
        let mut sessions: Vec<(Uuid, i64)> = per_session.into_iter().collect();
        sessions.sort_unstable();
        p.sessions = sessions.iter().map(|(s, _)| *s).collect();
        p.session_counts = sessions.iter().map(|(_, n)| i32::try_from(*n).unwrap_or(i32::MAX)).collect();
        p
    }

    /// Per append (in group order), its session.
    pub(crate) fn req_session(&self, req: usize) -> Option<Uuid> {
        self.req_session.get(req).copied()
    }

    pub(crate) fn as_sql(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.terminal,
            &self.sessions,
            &self.session_counts,
            &self.req_session,
            &self.req_expect,
            &self.req_offset,
            &self.chk_run,
            &self.chk_session,
            &self.ev_session,
            &self.ev_rank,
            &self.ids,
            &self.runs,
            &self.kinds,
            &self.ts,
            &self.schemas,
            &self.providers,
            &self.corrs,
            &self.data,
            &self.meta,
        ]
    }
}
