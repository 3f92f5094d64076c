//! The stored encoding of an event (event codec 1).
//!
//! The session id and the sequence are not stored in the value: they are the key. The fields
//! the read filters need (`id`, `run_id`, `timestamp`, `kind`) come first, so a filtered read
//! skips a non-matching event without decoding its payload. `data` and `metadata` are JSON
//! values in a small binary form (tag byte + fixed-width numbers + length-prefixed text), which
//! decodes without parsing text.
//!
//! ```text
//! u8 codec (1) | event id (16) | u8 flags (1 run, 2 provider, 4 correlation)
//! | i64 LE seconds | u32 LE nanoseconds | u32 LE schema version | u8 len + kind name
//! | [run id (16)] | [u32 LE len + provider] | [u32 LE len + correlation id]
//! | data (object) | metadata (object)
//! ```
//!
//! Decoding never panics: malformed bytes are a corruption error ([`ErrorCode::StorageError`],
//! detail `corrupted: true`).

use asm_core::{Error, ErrorCode, Event, EventKind, JsonMap, Result, RunId, SessionId, StoredEvent, Timestamp};
use chrono::Timelike;
use serde_json::{Number, Value};

use crate::keys::{self, Id};

const CODEC_V1: u8 = 1;
const HAS_RUN: u8 = 1;
const HAS_PROVIDER: u8 = 2;
const HAS_CORRELATION: u8 = 4;
/// JSON nesting deeper than this is refused on write and reported as corrupt on read.
const MAX_DEPTH: usize = crate::MAX_JSON_DEPTH;

const T_NULL: u8 = 0;
const T_FALSE: u8 = 1;
const T_TRUE: u8 = 2;
const T_U64: u8 = 3;
const T_I64: u8 = 4;
const T_F64: u8 = 5;
const T_NUMBER_TEXT: u8 = 6;
const T_STRING: u8 = 7;
const T_ARRAY: u8 = 8;
const T_OBJECT: u8 = 9;

/// The fields of a stored run record the writer checks, decoded without the rest.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct RunHead {
    pub(crate) id: asm_core::RunId,
    pub(crate) session_id: asm_core::SessionId,
    pub(crate) status: asm_core::RunStatus,
}

/// An event ready for the writer: its encoding, the ids the writer indexes, and the event
/// itself (the writer numbers it and hands it back, and keeps it while it is recent).
#[derive(Debug)]
pub(crate) struct EncodedEvent {
    pub(crate) id: Id,
    pub(crate) run: Option<Id>,
    pub(crate) bytes: Vec<u8>,
    pub(crate) event: Option<Event>,
}

/// Encodes `event` (its `session_id` and `sequence` are not part of the value).
///
/// # Errors
/// [`ErrorCode::InvalidInput`] when the event is larger than `max_bytes` ([`asm_ports::backend::event_size`]) or the JSON is
/// nested deeper than the codec accepts.
pub(crate) fn encode_event(event: Event, max_bytes: usize) -> Result<EncodedEvent> {
    asm_ports::backend::check_event_size(&event, max_bytes)?;
    let id = keys::event_key(&event.id)?;
    let run = event.run_id.as_ref().map(keys::run_key).transpose()?;
    let mut out = Vec::with_capacity(96);
    out.push(CODEC_V1);
    out.extend_from_slice(&id);
    let mut flags = 0;
    if run.is_some() {
        flags |= HAS_RUN;
    }
    if event.provider.is_some() {
        flags |= HAS_PROVIDER;
    }
    if event.correlation_id.is_some() {
        flags |= HAS_CORRELATION;
    }
    out.push(flags);
    out.extend_from_slice(&event.timestamp.timestamp().to_le_bytes());
    out.extend_from_slice(&event.timestamp.timestamp_subsec_nanos().to_le_bytes());
    out.extend_from_slice(&event.schema_version.to_le_bytes());
    let kind = event.kind.as_str().as_bytes();
    out.push(u8::try_from(kind.len()).map_err(|_| Error::new(ErrorCode::InternalError, "event kind name too long"))?);
    out.extend_from_slice(kind);
    if let Some(run) = &run {
        out.extend_from_slice(run);
    }
    if let Some(provider) = &event.provider {
        put_str(&mut out, provider)?;
    }
    if let Some(correlation) = &event.correlation_id {
        put_str(&mut out, correlation)?;
    }
    put_object(&mut out, &event.data, 0)?;
    put_object(&mut out, &event.metadata, 0)?;
    Ok(EncodedEvent { id, run, bytes: out, event: Some(event) })
}

fn too_large() -> Error {
    Error::new(ErrorCode::InvalidInput, "a string or collection of the event is larger than 4 GiB")
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<()> {
    let len = u32::try_from(len).map_err(|_| too_large())?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, text: &str) -> Result<()> {
    put_len(out, text.len())?;
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn put_object(out: &mut Vec<u8>, map: &JsonMap, depth: usize) -> Result<()> {
    put_len(out, map.len())?;
    for (key, value) in map {
        put_str(out, key)?;
        put_value(out, value, depth + 1)?;
    }
    Ok(())
}

fn put_value(out: &mut Vec<u8>, value: &Value, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::new(
            ErrorCode::InvalidInput,
            format!("event JSON is nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    match value {
        Value::Null => out.push(T_NULL),
        Value::Bool(false) => out.push(T_FALSE),
        Value::Bool(true) => out.push(T_TRUE),
        Value::Number(n) => put_number(out, n)?,
        Value::String(s) => {
            out.push(T_STRING);
            put_str(out, s)?;
        }
        Value::Array(items) => {
            out.push(T_ARRAY);
            put_len(out, items.len())?;
            for item in items {
                put_value(out, item, depth + 1)?;
            }
        }
        Value::Object(map) => {
            out.push(T_OBJECT);
            put_object(out, map, depth)?;
        }
    }
    Ok(())
}

/// Numbers keep their exact kind (u64, i64 or f64), so they compare equal after a round trip;
/// anything else (only possible with serde_json's `arbitrary_precision`) is kept as text.
fn put_number(out: &mut Vec<u8>, n: &Number) -> Result<()> {
    if let Some(u) = n.as_u64() {
        out.push(T_U64);
        out.extend_from_slice(&u.to_le_bytes());
    } else if let Some(i) = n.as_i64() {
        out.push(T_I64);
        out.extend_from_slice(&i.to_le_bytes());
    } else if let Some(f) = n.as_f64().filter(|f| Number::from_f64(*f).as_ref() == Some(n)) {
        out.push(T_F64);
        out.extend_from_slice(&f.to_bits().to_le_bytes());
    } else {
        out.push(T_NUMBER_TEXT);
        put_str(out, &n.to_string())?;
    }
    Ok(())
}

/// The filterable fields of a stored event, decoded without its payload.
pub(crate) struct Header<'a> {
    pub(crate) id: Id,
    pub(crate) run: Option<Id>,
    pub(crate) timestamp: Timestamp,
    pub(crate) kind: EventKind,
    schema_version: u32,
    flags: u8,
    rest: Reader<'a>,
}

/// The event id of a stored event (the first field after the codec byte).
pub(crate) fn stored_event_id(bytes: &[u8]) -> Result<Id> {
    let mut reader = Reader::new(bytes);
    if reader.u8()? != CODEC_V1 {
        return Err(corrupt("unknown event codec"));
    }
    reader.array::<16>()
}

/// The event id and the run of a stored event (for the indexes a compaction writes).
pub(crate) fn stored_event_id_and_run(bytes: &[u8]) -> Result<(Id, Option<Id>)> {
    let header = decode_header_with(bytes, &mut HeaderCache::default())?;
    Ok((header.id, header.run))
}

/// The event id and the kind of a stored event (what pruning checks).
pub(crate) fn stored_event_id_and_kind(bytes: &[u8]) -> Result<(Id, EventKind)> {
    let header = decode_header_with(bytes, &mut HeaderCache::default())?;
    Ok((header.id, header.kind))
}

/// What a read remembers across the headers it decodes: the last kind name parsed (a read sees
/// few distinct kinds) and the last whole second turned into a timestamp (neighbouring events
/// are mostly within one second).
#[derive(Default)]
struct HeaderCache {
    kind: Option<(Vec<u8>, EventKind)>,
    second: Option<(i64, Timestamp)>,
}

impl HeaderCache {
    fn timestamp(&mut self, secs: i64, nanos: u32) -> Result<Timestamp> {
        if nanos < 1_000_000_000
            && let Some((cached, whole)) = self.second
            && cached == secs
            && let Some(timestamp) = Timelike::with_nanosecond(&whole, nanos)
        {
            return Ok(timestamp);
        }
        let timestamp = Timestamp::from_timestamp(secs, nanos).ok_or_else(|| corrupt("timestamp out of range"))?;
        if let Some(whole) = Timestamp::from_timestamp(secs, 0) {
            self.second = Some((secs, whole));
        }
        Ok(timestamp)
    }
}

/// Decodes the header of a stored event.
fn decode_header_with<'a>(bytes: &'a [u8], cache: &mut HeaderCache) -> Result<Header<'a>> {
    let mut r = Reader::new(bytes);
    if r.u8()? != CODEC_V1 {
        return Err(corrupt("unknown event codec"));
    }
    let id = r.array::<16>()?;
    let flags = r.u8()?;
    let secs = i64::from_le_bytes(r.array::<8>()?);
    let nanos = u32::from_le_bytes(r.array::<4>()?);
    let timestamp = cache.timestamp(secs, nanos)?;
    let schema_version = u32::from_le_bytes(r.array::<4>()?);
    let kind_len = usize::from(r.u8()?);
    let name = r.take(kind_len)?;
    let kind = match &cache.kind {
        Some((cached, kind)) if cached.as_slice() == name => *kind,
        _ => {
            let text = std::str::from_utf8(name).map_err(|_| corrupt("kind is not UTF-8"))?;
            let kind = EventKind::parse(text).map_err(|_| corrupt("unknown event kind"))?;
            cache.kind = Some((name.to_vec(), kind));
            kind
        }
    };
    let run = if flags & HAS_RUN != 0 { Some(r.array::<16>()?) } else { None };
    Ok(Header { id, run, timestamp, kind, schema_version, flags, rest: r })
}

/// Turns stored bytes into events, sharing the ids that repeat across a read.
pub(crate) struct Decoder {
    session_key: Id,
    session_id: SessionId,
    last_run: Option<(Id, RunId)>,
    cache: HeaderCache,
}

impl Decoder {
    /// A decoder for events of the session `session_id` (whose key is `session_key`).
    pub(crate) fn new(session_key: Id, session_id: SessionId) -> Self {
        Self { session_key, session_id, last_run: None, cache: HeaderCache::default() }
    }

    /// Decodes a whole stored event of session `session` with sequence `sequence`.
    pub(crate) fn decode(&mut self, session: &Id, sequence: u64, bytes: &[u8]) -> Result<StoredEvent> {
        let header = self.header(bytes)?;
        self.finish(session, sequence, header)
    }

    /// Decodes the header of a stored event.
    pub(crate) fn header<'a>(&mut self, bytes: &'a [u8]) -> Result<Header<'a>> {
        decode_header_with(bytes, &mut self.cache)
    }

    /// Decodes the rest of an event whose header was read already.
    pub(crate) fn finish(&mut self, session: &Id, sequence: u64, header: Header<'_>) -> Result<StoredEvent> {
        let Header { id, run, timestamp, kind, schema_version, flags, mut rest } = header;
        let session_id =
            if *session == self.session_key { self.session_id.clone() } else { keys::session_id(session)? };
        let run_id = match run {
            None => None,
            Some(run) => match &self.last_run {
                Some((key, id)) if *key == run => Some(id.clone()),
                _ => {
                    let id = keys::run_id(&run)?;
                    self.last_run = Some((run, id.clone()));
                    Some(id)
                }
            },
        };
        let provider = if flags & HAS_PROVIDER != 0 { Some(rest.string()?) } else { None };
        let correlation_id = if flags & HAS_CORRELATION != 0 { Some(rest.string()?) } else { None };
        let data = rest.object(0)?;
        let metadata = rest.object(0)?;
        if !rest.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        if schema_version == 0 {
            return Err(corrupt("schema version 0"));
        }
        let event = Event::from(asm_core::EventRecord {
            id: keys::event_id(&id)?,
            kind,
            timestamp,
            session_id,
            run_id,
            data,
            metadata,
            sequence: Some(sequence),
            schema_version,
            provider,
            correlation_id,
        });
        Ok(StoredEvent::new(event, sequence))
    }
}

fn corrupt(what: &str) -> Error {
    crate::KvError::corrupted(format!("an event record: {what}")).into()
}

/// A bounds-checked cursor over stored bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        let (&first, rest) = self.bytes.split_first().ok_or_else(|| corrupt("truncated"))?;
        self.bytes = rest;
        Ok(first)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len(&mut self) -> Result<usize> {
        usize::try_from(u32::from_le_bytes(self.array::<4>()?)).map_err(|_| corrupt("length"))
    }

    fn str(&mut self, n: usize) -> Result<&'a str> {
        std::str::from_utf8(self.take(n)?).map_err(|_| corrupt("text is not UTF-8"))
    }

    fn string(&mut self) -> Result<String> {
        let n = self.len()?;
        Ok(self.str(n)?.to_owned())
    }

    /// A count of items that each take at least one byte: a larger count is corrupt (and would
    /// otherwise make a huge allocation).
    fn count(&mut self) -> Result<usize> {
        let n = self.len()?;
        if n > self.bytes.len() {
            return Err(corrupt("count larger than the record"));
        }
        Ok(n)
    }

    fn object(&mut self, depth: usize) -> Result<JsonMap> {
        let n = self.count()?;
        let mut map = JsonMap::with_capacity(n);
        for _ in 0..n {
            let key = self.string()?;
            let value = self.value(depth + 1)?;
            map.insert(key, value);
        }
        Ok(map)
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(corrupt("nested too deeply"));
        }
        Ok(match self.u8()? {
            T_NULL => Value::Null,
            T_FALSE => Value::Bool(false),
            T_TRUE => Value::Bool(true),
            T_U64 => Value::Number(u64::from_le_bytes(self.array::<8>()?).into()),
            T_I64 => Value::Number(i64::from_le_bytes(self.array::<8>()?).into()),
            T_F64 => {
                let f = f64::from_bits(u64::from_le_bytes(self.array::<8>()?));
                Value::Number(Number::from_f64(f).ok_or_else(|| corrupt("non-finite number"))?)
            }
            T_NUMBER_TEXT => {
                let n = self.len()?;
                let text = self.str(n)?;
                Value::Number(serde_json::from_str::<Number>(text).map_err(|_| corrupt("number text"))?)
            }
            T_STRING => Value::String(self.string()?),
            T_ARRAY => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            T_OBJECT => Value::Object(self.object(depth)?),
            _ => return Err(corrupt("unknown value tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        let mut e = Event::new(EventKind::ToolCallCompleted, SessionId::new())
            .with_run(RunId::new())
            .with_data("tool_input", json!({"command": "ls", "nested": {"list": [1, -2, 2.5, null, true, false, "x"]}}))
            .with_data("big", u64::MAX)
            .with_data("neg", i64::MIN)
            .with_data("text", "total 0\n\u{1F600} ✓")
            .with_provider("claude");
        e.metadata.insert("trace".into(), json!({"span": "abc"}));
        e.correlation_id = Some("corr".into());
        e.timestamp = Timestamp::from_timestamp(-1_234, 999_999_999).unwrap();
        e.schema_version = 3;
        e
    }

    #[test]
    fn round_trip_is_exact() {
        let mut event = sample();
        let encoded = encode_event(event.clone(), usize::MAX).unwrap();
        let session = keys::session_key(&event.session_id).unwrap();
        let mut decoder = Decoder::new(session, event.session_id.clone());
        let back = decoder.decode(&session, 7, &encoded.bytes).unwrap();
        event.sequence = Some(7);
        assert_eq!(back, event);
        assert_eq!(stored_event_id(&encoded.bytes).unwrap(), encoded.id);

        let bare = Event::new(EventKind::MessageSent, event.session_id.clone());
        let encoded = encode_event(bare.clone(), usize::MAX).unwrap();
        let back = decoder.decode(&session, 1, &encoded.bytes).unwrap();
        assert_eq!(back.sequence, Some(1));
        let mut unsequenced = back.into_event();
        unsequenced.sequence = None;
        assert_eq!(unsequenced, bare);
    }

    #[test]
    fn size_limit_and_depth_limit_are_invalid_input() {
        // The cap is the one every store applies: `asm_ports::backend::event_size`.
        let event = sample();
        let size = asm_ports::backend::event_size(&event);
        assert!(encode_event(event.clone(), size).is_ok());
        assert_eq!(encode_event(event, size - 1).unwrap_err().code(), ErrorCode::InvalidInput);
        let mut deep = json!(1);
        for _ in 0..(MAX_DEPTH + 5) {
            deep = json!([deep]);
        }
        let event = Event::new(EventKind::MessageSent, SessionId::new()).with_data("deep", deep);
        assert_eq!(encode_event(event, usize::MAX).unwrap_err().code(), ErrorCode::InvalidInput);
    }

    #[test]
    fn timestamps_decode_exactly_with_the_cache() {
        let session = SessionId::new();
        let key = keys::session_key(&session).unwrap();
        let mut decoder = Decoder::new(key, session.clone());
        for (secs, nanos) in [(5, 1), (5, 999_999_999), (5, 0), (-7, 3), (-7, 4), (59, 1_500_000_000), (59, 2)] {
            let mut event = Event::new(EventKind::MessageSent, session.clone());
            event.timestamp = Timestamp::from_timestamp(secs, nanos).unwrap();
            let encoded = encode_event(event.clone(), usize::MAX).unwrap();
            let back = decoder.decode(&key, 1, &encoded.bytes).unwrap();
            assert_eq!(back.timestamp, event.timestamp, "{secs} s {nanos} ns");
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let event = sample();
        let bytes = encode_event(event.clone(), usize::MAX).unwrap().bytes;
        let session = keys::session_key(&event.session_id).unwrap();
        let mut decoder = Decoder::new(session, event.session_id.clone());
        for cut in 0..bytes.len() {
            assert!(decoder.decode(&session, 1, &bytes[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
        let mut state = 0x9e37_79b9_u32;
        for _ in 0..2_000 {
            let mut mutated = bytes.clone();
            for _ in 0..3 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let at = (state as usize) % mutated.len();
                mutated[at] ^= (state >> 24) as u8 | 1;
            }
            let _ = decoder.decode(&session, 1, &mutated);
        }
    }
}
