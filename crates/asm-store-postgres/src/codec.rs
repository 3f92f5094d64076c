//! Domain values <-> rows. Ids are stored as `uuid` (16 bytes; `uuid` order is the order of
//! the ids' hex text, so `(created_at, id)` listings sort as the other stores sort them).

use asm_core::{
    EventId, EventKind, EventRecord, JsonMap, Run, RunId, Session, SessionId, SessionStatus, StoredEvent, Timestamp,
};
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

use crate::error::{DbError, decode};

/// The 16 bytes behind an id (`xyz_` + 32 lowercase hex, validated when the id was made).
pub(crate) fn uuid_of(id: &str) -> Uuid {
    // Ids are validated on construction, so the hex always parses; the nil fallback can only be
    // reached by a value no constructor produces, and then matches nothing.
    id.get(4..).and_then(|hex| Uuid::try_parse(hex).ok()).unwrap_or(Uuid::nil())
}

pub(crate) fn session_id(uuid: Uuid) -> Result<SessionId, DbError> {
    SessionId::parse(&format!("{}{}", SessionId::PREFIX, uuid.simple())).map_err(|e| decode(e.to_string()))
}

pub(crate) fn run_id(uuid: Uuid) -> Result<RunId, DbError> {
    RunId::parse(&format!("{}{}", RunId::PREFIX, uuid.simple())).map_err(|e| decode(e.to_string()))
}

pub(crate) fn event_id(uuid: Uuid) -> Result<EventId, DbError> {
    EventId::parse(&format!("{}{}", EventId::PREFIX, uuid.simple())).map_err(|e| decode(e.to_string()))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, DbError> {
    row.try_get(index).map_err(|e| decode(format!("column {index}: {e}")))
}

/// The columns every event read selects, in this order.
pub(crate) const EVENT_COLUMNS: &str =
    "id, kind, ts, session_id, run_id, data, metadata, sequence, schema_version, provider, correlation_id";

/// Where each event field stands in a row (the id is given separately when the row lacks it).
struct EventColumnIndexes {
    kind: usize,
    ts: usize,
    session_id: usize,
    run_id: usize,
    data: usize,
    metadata: usize,
    sequence: usize,
    schema_version: usize,
    provider: usize,
    correlation_id: usize,
}

/// An event row selected with [`EVENT_COLUMNS`].
pub(crate) fn event_row(row: &Row) -> Result<StoredEvent, DbError> {
    const AT: EventColumnIndexes = EventColumnIndexes {
        kind: 1,
        ts: 2,
        session_id: 3,
        run_id: 4,
        data: 5,
        metadata: 6,
        sequence: 7,
        schema_version: 8,
        provider: 9,
        correlation_id: 10,
    };
    stored_event(row, event_id(get(row, 0)?)?, &AT)
}

/// The stored event of an `asm_write` result row (columns `o_ord` .. `o_meta`, see the
/// migration).
pub(crate) fn written_event_row(row: &Row, id: &EventId) -> Result<StoredEvent, DbError> {
    const AT: EventColumnIndexes = EventColumnIndexes {
        sequence: 2,
        session_id: 3,
        run_id: 4,
        kind: 5,
        ts: 6,
        schema_version: 7,
        provider: 8,
        correlation_id: 9,
        data: 10,
        metadata: 11,
    };
    stored_event(row, id.clone(), &AT)
}

fn stored_event(row: &Row, id: EventId, at: &EventColumnIndexes) -> Result<StoredEvent, DbError> {
    let kind: &str = get(row, at.kind)?;
    let Json(data): Json<JsonMap> = get(row, at.data)?;
    let Json(metadata): Json<JsonMap> = get(row, at.metadata)?;
    let sequence: i64 = get(row, at.sequence)?;
    let sequence = u64::try_from(sequence).ok().filter(|&s| s >= 1).ok_or_else(|| decode("sequence below 1"))?;
    let schema_version: i32 = get(row, at.schema_version)?;
    let event = asm_core::Event::from(EventRecord {
        id,
        kind: EventKind::parse(kind).map_err(|e| decode(e.to_string()))?,
        timestamp: get(row, at.ts)?,
        session_id: session_id(get(row, at.session_id)?)?,
        run_id: get::<Option<Uuid>>(row, at.run_id)?.map(run_id).transpose()?,
        data,
        metadata,
        sequence: Some(sequence),
        schema_version: u32::try_from(schema_version)
            .ok()
            .filter(|&v| v >= 1)
            .ok_or_else(|| decode("schema_version"))?,
        provider: get(row, at.provider)?,
        correlation_id: get(row, at.correlation_id)?,
    });
    Ok(StoredEvent::new(event, sequence))
}

/// The columns every session read selects, in this order.
pub(crate) const SESSION_COLUMNS: &str =
    "id, agent_id, status, parent_session_id, metadata, context, tags, created_at, updated_at, deleted_at";

fn session_status(text: &str) -> Result<SessionStatus, DbError> {
    SessionStatus::ALL
        .iter()
        .copied()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| decode(format!("session status {text:?}")))
}

/// A session row selected with [`SESSION_COLUMNS`].
pub(crate) fn session_row(row: &Row) -> Result<Session, DbError> {
    let Json(metadata): Json<JsonMap> = get(row, 4)?;
    let Json(context): Json<JsonMap> = get(row, 5)?;
    Ok(Session {
        id: session_id(get(row, 0)?)?,
        agent_id: get(row, 1)?,
        status: session_status(get(row, 2)?)?,
        parent_session_id: get::<Option<Uuid>>(row, 3)?.map(session_id).transpose()?,
        metadata,
        context,
        tags: get(row, 6)?,
        created_at: get::<Timestamp>(row, 7)?,
        updated_at: get(row, 8)?,
        deleted_at: get(row, 9)?,
    })
}

/// A run stored as its serde JSON document.
pub(crate) fn run_doc(row: &Row, index: usize) -> Result<Run, DbError> {
    let Json(run): Json<Run> = get(row, index)?;
    Ok(run)
}
