//! The storage format (format version 1): keys and values of every tree.
//!
//! Ids are validated `prefix + 32 hex` strings, always 36 bytes, so a key made of ids and
//! fixed-width big-endian numbers is prefix-free and sorts the way the store needs:
//!
//! | tree             | key                                              | value                              |
//! |------------------|--------------------------------------------------|------------------------------------|
//! | `sessions`       | session id                                       | order key (8) + session number (8) + session JSON |
//! | `session_order`  | order key (8: `created_at` µs, sign-flipped BE) + session id | empty                 |
//! | `last_sequence`  | session number                                   | u64 BE                             |
//! | `events`         | session number + sequence (u64 BE)               | binary event (below)               |
//! | `event_ids`      | event id                                         | session id + session number + sequence |
//! | `run_events`     | session number + run id + sequence (u64 BE)      | empty                              |
//! | `runs`           | run id                                           | session id + run JSON              |
//! | `session_runs`   | session id + time key (12) + run id              | empty                              |
//! | `meta`           | `next_session_number`                            | u64 BE                             |
//!
//! A session number is assigned once, when a session id is first saved (never reused, also not
//! after a delete), so event keys are 16 bytes: sled keeps keys up to 22 bytes inline, and a
//! cursor read allocates nothing per key.
//!
//! Events are stored without their sequence (the key holds it) in a compact binary form that
//! decodes several times faster than JSON and keeps every number exactly (`u64`, `i64` and the
//! bits of `f64`): `tag 1, kind, seconds i64, nanos u32, id, run id?, schema version u32,
//! provider?, correlation id?, data, metadata`; strings are `u32 length + UTF-8`, JSON values a
//! tag byte per node. Sessions and runs are rare, small writes: JSON.

use asm_core::{Error, ErrorCode, Event, EventKind, JsonMap, Run, RunId, Session, SessionId, Timestamp};
use serde_json::{Number, Value};

/// Length of every id (`ses_`, `run_`, `evt_` + 32 hex digits).
pub(crate) const ID_LEN: usize = 36;
/// Length of a session order key.
pub(crate) const ORDER_LEN: usize = 8;
/// Length of a run time key.
pub(crate) const TIME_LEN: usize = 12;
/// The first byte of a binary event record.
const EVENT_TAG: u8 = 1;
/// Deepest JSON nesting the event codec writes and reads (protects the stack on corrupt data).
const MAX_DEPTH: usize = 512;

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// `(created_at in µs)` as 8 bytes that sort like the signed number.
pub(crate) fn order_key(micros: i64) -> [u8; ORDER_LEN] {
    ((micros as u64) ^ (1 << 63)).to_be_bytes()
}

/// A timestamp as 12 bytes that sort like the timestamp (seconds sign-flipped, then nanos).
pub(crate) fn time_key(ts: &Timestamp) -> [u8; TIME_LEN] {
    let mut out = [0u8; TIME_LEN];
    let (secs, nanos) = out.split_at_mut(8);
    secs.copy_from_slice(&((ts.timestamp() as u64) ^ (1 << 63)).to_be_bytes());
    nanos.copy_from_slice(&ts.timestamp_subsec_nanos().to_be_bytes());
    out
}

/// Length of an event key.
pub(crate) const EVENT_KEY_LEN: usize = 16;

/// `session number + sequence`.
pub(crate) fn event_key(session: u64, sequence: u64) -> [u8; EVENT_KEY_LEN] {
    let mut key = [0u8; EVENT_KEY_LEN];
    let (number, seq) = key.split_at_mut(8);
    number.copy_from_slice(&session.to_be_bytes());
    seq.copy_from_slice(&sequence.to_be_bytes());
    key
}

/// `session number + run id + sequence`.
pub(crate) fn run_event_key(session: u64, run: &RunId, sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + ID_LEN + 8);
    key.extend_from_slice(&session.to_be_bytes());
    key.extend_from_slice(run.as_str().as_bytes());
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// `order key + session id`.
pub(crate) fn session_order_key(order: &[u8], session: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(ORDER_LEN + ID_LEN);
    key.extend_from_slice(order);
    key.extend_from_slice(session);
    key
}

/// `session id + time key + run id`.
pub(crate) fn session_run_key(session: &[u8], time: &[u8], run: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 * ID_LEN + TIME_LEN);
    key.extend_from_slice(session);
    key.extend_from_slice(time);
    key.extend_from_slice(run);
    key
}

/// `session id + event key` (the value of the event-id index).
pub(crate) fn location(session: &SessionId, event_key: &[u8; EVENT_KEY_LEN]) -> Vec<u8> {
    let mut value = Vec::with_capacity(ID_LEN + EVENT_KEY_LEN);
    value.extend_from_slice(session.as_str().as_bytes());
    value.extend_from_slice(event_key);
    value
}

/// The sequence at the end of a key (the last 8 bytes).
pub(crate) fn trailing_sequence(key: &[u8]) -> Result<u64, Error> {
    key.len()
        .checked_sub(8)
        .and_then(|start| key.get(start..))
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("a key too short to hold a sequence"))
}

/// Decodes an event-id index value into the owning session, the event key and the sequence.
pub(crate) fn decode_location(value: &[u8]) -> Result<(SessionId, &[u8], u64), Error> {
    if value.len() != ID_LEN + EVENT_KEY_LEN {
        return Err(corrupt("an event-id index entry of the wrong length"));
    }
    let (session, key) = value.split_at(ID_LEN);
    Ok((parse_id(session, SessionId::parse)?, key, trailing_sequence(key)?))
}

/// Decodes a `u64 BE` value (the last sequence of a session).
pub(crate) fn decode_u64(value: &[u8]) -> Result<u64, Error> {
    <[u8; 8]>::try_from(value).map(u64::from_be_bytes).map_err(|_| corrupt("a sequence record of the wrong length"))
}

pub(crate) fn parse_id<T>(bytes: &[u8], parse: fn(&str) -> Result<T, Error>) -> Result<T, Error> {
    std::str::from_utf8(bytes).ok().and_then(|s| parse(s).ok()).ok_or_else(|| corrupt("a malformed stored id"))
}

pub(crate) fn corrupt(what: &str) -> Error {
    Error::new(ErrorCode::StorageReadFailed, format!("corrupted sled store: {what}")).with_detail("corrupted", true)
}

// ---------------------------------------------------------------------------------------------
// Sessions and runs
// ---------------------------------------------------------------------------------------------

/// Where the session number sits in a session record.
const NUMBER_AT: std::ops::Range<usize> = ORDER_LEN..ORDER_LEN + 8;

/// `order key + session number + session JSON`.
pub(crate) fn encode_session(session: &Session, number: u64) -> Result<Vec<u8>, Error> {
    let mut out = order_key(session.created_at.timestamp_micros()).to_vec();
    out.extend_from_slice(&number.to_be_bytes());
    serde_json::to_writer(&mut out, session).map_err(|e| {
        Error::new(ErrorCode::InvalidInput, format!("cannot serialise session {}: {e}", session.id)).with_source(e)
    })?;
    Ok(out)
}

/// Replaces the session number of an encoded session record.
pub(crate) fn with_session_number(mut record: Vec<u8>, number: u64) -> Result<Vec<u8>, Error> {
    record
        .get_mut(NUMBER_AT)
        .ok_or_else(|| Error::new(ErrorCode::InternalError, "a session record too short for its number"))?
        .copy_from_slice(&number.to_be_bytes());
    Ok(record)
}

pub(crate) fn decode_session(value: &[u8]) -> Result<Session, Error> {
    let json = value.get(NUMBER_AT.end..).ok_or_else(|| corrupt("a session record too short"))?;
    serde_json::from_slice(json).map_err(|e| corrupt(&format!("an undecodable session record ({e})")))
}

/// The order key a stored session record starts with.
pub(crate) fn session_record_order(value: &[u8]) -> Result<&[u8], Error> {
    value.get(..ORDER_LEN).ok_or_else(|| corrupt("a session record too short"))
}

/// The session number of a stored session record.
pub(crate) fn session_record_number(value: &[u8]) -> Result<u64, Error> {
    value
        .get(NUMBER_AT)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("a session record too short"))
}

/// `session id + run JSON`.
pub(crate) fn encode_run(run: &Run) -> Result<Vec<u8>, Error> {
    let mut out = run.session_id.as_str().as_bytes().to_vec();
    serde_json::to_writer(&mut out, run).map_err(|e| {
        Error::new(ErrorCode::InvalidInput, format!("cannot serialise run {}: {e}", run.id)).with_source(e)
    })?;
    Ok(out)
}

pub(crate) fn decode_run(value: &[u8]) -> Result<Run, Error> {
    let json = value.get(ID_LEN..).ok_or_else(|| corrupt("a run record too short"))?;
    serde_json::from_slice(json).map_err(|e| corrupt(&format!("an undecodable run record ({e})")))
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// Encodes an event without its session id and sequence (both live in the key).
pub(crate) fn encode_event(event: &Event) -> Result<Vec<u8>, Error> {
    let mut w = Writer { out: Vec::with_capacity(256) };
    w.out.push(EVENT_TAG);
    w.str(event.kind.as_str())?;
    w.out.extend_from_slice(&event.timestamp.timestamp().to_le_bytes());
    w.out.extend_from_slice(&event.timestamp.timestamp_subsec_nanos().to_le_bytes());
    w.str(event.id.as_str())?;
    w.opt_str(event.run_id.as_ref().map(RunId::as_str))?;
    w.out.extend_from_slice(&event.schema_version.to_le_bytes());
    w.opt_str(event.provider.as_deref())?;
    w.opt_str(event.correlation_id.as_deref())?;
    w.object(&event.data, 0)?;
    w.object(&event.metadata, 0)?;
    Ok(w.out)
}

/// The fields a filter can look at without decoding the whole event.
pub(crate) struct EventHeader {
    pub(crate) kind: EventKind,
    pub(crate) timestamp: Timestamp,
}

/// Decodes the kind and timestamp only.
pub(crate) fn decode_event_header(bytes: &[u8]) -> Result<EventHeader, Error> {
    let mut r = Reader::new(bytes);
    r.header().map_err(|e| corrupt(&format!("an undecodable event record ({e})")))
}

/// Decodes the event id only (used when a session is deleted).
pub(crate) fn decode_event_id(bytes: &[u8]) -> Result<&str, Error> {
    let mut r = Reader::new(bytes);
    r.header().and_then(|_| r.str()).map_err(|e| corrupt(&format!("an undecodable event record ({e})")))
}

/// Decodes a stored event of `session` with sequence `sequence`.
pub(crate) fn decode_event(bytes: &[u8], session: SessionId, sequence: u64) -> Result<Event, Error> {
    let mut r = Reader::new(bytes);
    r.event(session, sequence).map_err(|e| corrupt(&format!("an undecodable event record ({e})")))
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn len(&mut self, n: usize) -> Result<(), Error> {
        let n = u32::try_from(n)
            .map_err(|_| Error::new(ErrorCode::InvalidInput, "an event string or collection exceeds 4 GiB"))?;
        self.out.extend_from_slice(&n.to_le_bytes());
        Ok(())
    }

    fn str(&mut self, s: &str) -> Result<(), Error> {
        self.len(s.len())?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn opt_str(&mut self, s: Option<&str>) -> Result<(), Error> {
        match s {
            None => self.out.push(0),
            Some(s) => {
                self.out.push(1);
                self.str(s)?;
            }
        }
        Ok(())
    }

    fn object(&mut self, map: &JsonMap, depth: usize) -> Result<(), Error> {
        self.len(map.len())?;
        for (key, value) in map {
            self.str(key)?;
            self.value(value, depth + 1)?;
        }
        Ok(())
    }

    fn value(&mut self, value: &Value, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(Error::new(
                ErrorCode::InvalidInput,
                format!("an event payload is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        match value {
            Value::Null => self.out.push(0),
            Value::Bool(false) => self.out.push(1),
            Value::Bool(true) => self.out.push(2),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    self.out.push(3);
                    self.out.extend_from_slice(&u.to_le_bytes());
                } else if let Some(i) = n.as_i64() {
                    self.out.push(4);
                    self.out.extend_from_slice(&i.to_le_bytes());
                } else {
                    self.out.push(5);
                    self.out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
                }
            }
            Value::String(s) => {
                self.out.push(6);
                self.str(s)?;
            }
            Value::Array(items) => {
                self.out.push(7);
                self.len(items.len())?;
                for item in items {
                    self.value(item, depth + 1)?;
                }
            }
            Value::Object(map) => {
                self.out.push(8);
                self.object(map, depth)?;
            }
        }
        Ok(())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

type Decoded<T> = Result<T, &'static str>;

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if self.bytes.len() < n {
            return Err("truncated record");
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Decoded<[u8; N]> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| "truncated record")
    }

    fn u8(&mut self) -> Decoded<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Decoded<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Decoded<usize> {
        let n = usize::try_from(self.u32()?).map_err(|_| "length out of range")?;
        // Every element takes at least one byte: a larger count is corruption, not a reason to
        // reserve gigabytes.
        if n > self.bytes.len() {
            return Err("length beyond the end of the record");
        }
        Ok(n)
    }

    fn str(&mut self) -> Decoded<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| "invalid UTF-8")
    }

    fn opt_str(&mut self) -> Decoded<Option<&'a str>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err("invalid option tag"),
        }
    }

    fn header(&mut self) -> Decoded<EventHeader> {
        if self.u8()? != EVENT_TAG {
            return Err("unknown event record tag");
        }
        let kind = EventKind::parse(self.str()?).map_err(|_| "unknown event kind")?;
        let secs = i64::from_le_bytes(self.array()?);
        let nanos = self.u32()?;
        let timestamp = Timestamp::from_timestamp(secs, nanos).ok_or("timestamp out of range")?;
        Ok(EventHeader { kind, timestamp })
    }

    fn event(&mut self, session_id: SessionId, sequence: u64) -> Decoded<Event> {
        let EventHeader { kind, timestamp } = self.header()?;
        let id = asm_core::EventId::parse(self.str()?).map_err(|_| "malformed event id")?;
        let run_id = match self.opt_str()? {
            None => None,
            Some(s) => Some(RunId::parse(s).map_err(|_| "malformed run id")?),
        };
        let schema_version = self.u32()?;
        let provider = self.opt_str()?.map(str::to_owned);
        let correlation_id = self.opt_str()?.map(str::to_owned);
        let data = self.object(0)?;
        let metadata = self.object(0)?;
        if !self.bytes.is_empty() {
            return Err("trailing bytes");
        }
        Ok(Event::from(asm_core::EventRecord {
            id,
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
        }))
    }

    fn object(&mut self, depth: usize) -> Decoded<JsonMap> {
        let n = self.len()?;
        let mut map = JsonMap::new();
        for _ in 0..n {
            let key = self.str()?.to_owned();
            let value = self.value(depth + 1)?;
            map.insert(key, value);
        }
        Ok(map)
    }

    fn value(&mut self, depth: usize) -> Decoded<Value> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply");
        }
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::Number(u64::from_le_bytes(self.array()?).into()),
            4 => Value::Number(i64::from_le_bytes(self.array()?).into()),
            5 => {
                let f = f64::from_bits(u64::from_le_bytes(self.array()?));
                Number::from_f64(f).map_or(Value::Null, Value::Number)
            }
            6 => Value::String(self.str()?.to_owned()),
            7 => {
                let n = self.len()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            8 => Value::Object(self.object(depth)?),
            _ => return Err("unknown value tag"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asm_core::EventKind;

    #[test]
    fn event_round_trip_is_exact() {
        let session = SessionId::new();
        let mut e = Event::new(EventKind::ToolCallCompleted, session.clone())
            .with_run(RunId::new())
            .with_data("n", serde_json::json!({"u": u64::MAX, "i": i64::MIN, "f": 0.1 + 0.2, "a": [null, true, "x"]}))
            .with_provider("claude");
        e.metadata.insert("m".into(), "v".into());
        e.correlation_id = Some("c".into());
        e.schema_version = 3;
        e.timestamp = Timestamp::from_timestamp(-5, 123_456_789).unwrap();
        let bytes = encode_event(&e).unwrap();
        let back = decode_event(&bytes, session, 9).unwrap();
        e.sequence = Some(9);
        assert_eq!(back, e);
        assert_eq!(decode_event_id(&bytes).unwrap(), e.id.as_str());
        let header = decode_event_header(&bytes).unwrap();
        assert_eq!((header.kind, header.timestamp), (e.kind, e.timestamp));
    }

    #[test]
    fn truncated_and_garbage_records_are_errors() {
        let session = SessionId::new();
        let e = Event::new(EventKind::MessageSent, session.clone()).with_data("content", "hello");
        let bytes = encode_event(&e).unwrap();
        for cut in 0..bytes.len() {
            let err = decode_event(&bytes[..cut], session.clone(), 1).unwrap_err();
            assert_eq!(err.code(), ErrorCode::StorageReadFailed);
        }
        let mut garbage = bytes;
        garbage.push(0);
        assert!(decode_event(&garbage, session.clone(), 1).is_err());
        assert!(decode_event(&[1, 255, 255, 255, 255], session, 1).is_err());
    }

    #[test]
    fn keys_sort_like_their_numbers() {
        let mut micros = [i64::MIN, -1, 0, 1, i64::MAX];
        micros.reverse();
        let mut keys: Vec<_> = micros.iter().map(|&m| order_key(m)).collect();
        keys.sort();
        assert_eq!(keys, [i64::MIN, -1, 0, 1, i64::MAX].map(order_key));
        let a = Timestamp::from_timestamp(-1, 999_999_999).unwrap();
        let b = Timestamp::from_timestamp(0, 0).unwrap();
        let c = Timestamp::from_timestamp(0, 1).unwrap();
        assert!(time_key(&a) < time_key(&b) && time_key(&b) < time_key(&c));
    }
}
