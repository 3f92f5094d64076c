//! The key layout: compact, fixed-width binary keys.
//!
//! Every id of the domain is a prefix plus 32 lowercase hex digits, that is 16 bytes (a UUIDv7): the
//! tables store those 16 bytes. Composite keys are fixed-width byte arrays compared with
//! `memcmp`, so the byte order must be the sort order: numbers are big-endian, signed numbers
//! have their sign bit flipped. The 16 id bytes compare like the hex text they come from, so
//! "ordered by id" means the same thing here as in every other store.

use asm_core::{Error, ErrorCode, EventId, Result, RunId, SessionId, Timestamp};

/// The 16 bytes of an id.
pub(crate) type Id = [u8; 16];
/// `session (16) | sequence (8, BE)`: the key of the event log.
pub(crate) type EventPos = [u8; 24];
/// `created_at µs (8, ordered)`: how a session sorts.
pub(crate) type OrderKey = [u8; 8];
/// `session (16) | run (16)`: where a run's events start in a session's log.
pub(crate) type RunStartKey = [u8; 32];
/// `created_at µs (8, ordered) | session (16)`: the listing order of sessions.
pub(crate) type SessionOrderKey = [u8; 24];
/// `session (16) | created_at s (8, ordered) | ns (4, BE) | run (16)`: a session's runs in order.
pub(crate) type SessionRunKey = [u8; 44];

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// The two lowercase hex digits of every byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [DIGITS[i >> 4], DIGITS[i & 0x0f]];
        i += 1;
    }
    table
};

/// The 16 bytes of `text` (`prefix` + 32 lowercase hex digits).
fn id_bytes(text: &str, prefix: &str) -> Result<Id> {
    let invalid = || Error::new(ErrorCode::InternalError, format!("id {text:?} is not {prefix} + 32 hex digits"));
    let hex = text.strip_prefix(prefix).ok_or_else(invalid)?.as_bytes();
    if hex.len() != 32 {
        return Err(invalid());
    }
    let mut out = [0u8; 16];
    for (slot, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (Some(hi), Some(lo)) =
            (pair.first().copied().and_then(hex_value), pair.get(1).copied().and_then(hex_value))
        else {
            return Err(invalid());
        };
        *slot = (hi << 4) | lo;
    }
    Ok(out)
}

/// Writes `prefix` + the hex of `bytes` into a stack buffer and hands the text to `parse`.
fn id_text<T>(bytes: &Id, prefix: &str, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let mut buf = [0u8; 40];
    let prefix_len = prefix.len().min(8);
    let (head, tail) = buf.split_at_mut(prefix_len);
    head.copy_from_slice(prefix.as_bytes().get(..prefix_len).unwrap_or_default());
    for (pair, byte) in tail.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
    let text = std::str::from_utf8(buf.get(..prefix_len + 32).unwrap_or_default())
        .map_err(|_| Error::new(ErrorCode::InternalError, "id text is not UTF-8"))?;
    parse(text)
}

pub(crate) fn session_key(id: &SessionId) -> Result<Id> {
    id_bytes(id.as_str(), SessionId::PREFIX)
}

pub(crate) fn run_key(id: &RunId) -> Result<Id> {
    id_bytes(id.as_str(), RunId::PREFIX)
}

pub(crate) fn event_key(id: &EventId) -> Result<Id> {
    id_bytes(id.as_str(), EventId::PREFIX)
}

pub(crate) fn session_id(bytes: &Id) -> Result<SessionId> {
    id_text(bytes, SessionId::PREFIX, SessionId::parse)
}

pub(crate) fn run_id(bytes: &Id) -> Result<RunId> {
    id_text(bytes, RunId::PREFIX, RunId::parse)
}

pub(crate) fn event_id(bytes: &Id) -> Result<EventId> {
    id_text(bytes, EventId::PREFIX, EventId::parse)
}

/// `i64` as 8 bytes whose byte order is the numeric order.
fn ordered_i64(value: i64) -> [u8; 8] {
    (value.cast_unsigned() ^ (1 << 63)).to_be_bytes()
}

fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    for part in parts {
        if let Some(slot) = out.get_mut(at..at + part.len()) {
            slot.copy_from_slice(part);
        }
        at += part.len();
    }
    out
}

pub(crate) fn event_pos(session: &Id, sequence: u64) -> EventPos {
    concat(&[session, &sequence.to_be_bytes()])
}

/// The position after every event of `session`: holds the session's last sequence, next to its
/// newest events (so an append usually changes one leaf for both), and exists exactly while the
/// session does.
pub(crate) fn head_pos(session: &Id) -> EventPos {
    event_pos(session, u64::MAX)
}

/// The last sequence stored at a [`head_pos`].
pub(crate) fn decode_head(bytes: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| corrupt("a session head record of the wrong length"))?;
    Ok(u64::from_le_bytes(bytes))
}

/// The value of a session head.
pub(crate) fn encode_head(sequence: u64) -> [u8; 8] {
    sequence.to_le_bytes()
}

/// A stored key or index value of the wrong length.
pub(crate) fn corrupt(what: &str) -> Error {
    crate::KvError::corrupted(what).into()
}

/// A stored [`EventPos`] (a key of the event log, or a value of the event-id index).
pub(crate) fn stored_pos(bytes: &[u8]) -> Result<EventPos> {
    bytes.try_into().map_err(|_| corrupt("an event position of the wrong length"))
}

/// A stored `u64` in big-endian order (the value of a run start).
pub(crate) fn stored_u64(bytes: &[u8]) -> Result<u64> {
    bytes.try_into().map(u64::from_be_bytes).map_err(|_| corrupt("a number of the wrong length"))
}

/// The order key of a session created at `created_at_micros`.
pub(crate) fn order_key(created_at_micros: i64) -> OrderKey {
    ordered_i64(created_at_micros)
}

/// The value of a session record: its order key, then its JSON.
pub(crate) fn session_value(order: &OrderKey, json: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(order.len() + json.len());
    value.extend_from_slice(order);
    value.extend_from_slice(json);
    value
}

/// The order key and the JSON of a session record.
pub(crate) fn split_session_value(bytes: &[u8]) -> Result<(OrderKey, &[u8])> {
    if bytes.len() < 8 {
        return Err(corrupt("a session record too short"));
    }
    let (order, json) = bytes.split_at(8);
    Ok((order.try_into().map_err(|_| corrupt("a session record too short"))?, json))
}

/// The key of a log entry: its commit-order position, big-endian.
pub(crate) fn lsn_key(lsn: u64) -> [u8; 8] {
    lsn.to_be_bytes()
}

/// The value of a log entry: `session (16) | sequence (8, BE) | encoded event`.
pub(crate) fn log_value(session: &Id, sequence: u64, event: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(24 + event.len());
    value.extend_from_slice(session);
    value.extend_from_slice(&sequence.to_be_bytes());
    value.extend_from_slice(event);
    value
}

/// The session, sequence and encoded event of a log entry.
pub(crate) fn split_log_value(value: &[u8]) -> Result<(EventPos, &[u8])> {
    if value.len() < 24 {
        return Err(corrupt("a log entry too short"));
    }
    let (pos, event) = value.split_at(24);
    Ok((stored_pos(pos)?, event))
}

/// The session and sequence of an event position.
pub(crate) fn split_pos(pos: &EventPos) -> (Id, u64) {
    let mut session = [0u8; 16];
    let mut sequence = [0u8; 8];
    let (head, tail) = pos.split_at(16);
    session.copy_from_slice(head);
    sequence.copy_from_slice(tail);
    (session, u64::from_be_bytes(sequence))
}

pub(crate) fn run_start_key(session: &Id, run: &Id) -> RunStartKey {
    concat(&[session, run])
}

pub(crate) fn session_order_key(order: &OrderKey, session: &Id) -> SessionOrderKey {
    concat(&[order, session])
}

/// The session of a stored [`SessionOrderKey`].
pub(crate) fn session_of_order_key(key: &[u8]) -> Result<Id> {
    key.get(8..24).and_then(|s| s.try_into().ok()).ok_or_else(|| corrupt("a session order key of the wrong length"))
}

pub(crate) fn session_run_key(session: &Id, created_at: Timestamp, run: &Id) -> SessionRunKey {
    concat(&[session, &ordered_i64(created_at.timestamp()), &created_at.timestamp_subsec_nanos().to_be_bytes(), run])
}

/// The run of a stored [`SessionRunKey`].
pub(crate) fn run_of_session_run_key(key: &[u8]) -> Result<Id> {
    key.get(28..44).and_then(|r| r.try_into().ok()).ok_or_else(|| corrupt("a session run key of the wrong length"))
}

/// The smallest and the largest key of `N` bytes that start with `prefix`.
pub(crate) fn prefix_bounds<const N: usize>(prefix: &[u8]) -> ([u8; N], [u8; N]) {
    let mut low = [0u8; N];
    let mut high = [0xffu8; N];
    if let Some(slot) = low.get_mut(..prefix.len()) {
        slot.copy_from_slice(prefix);
    }
    if let Some(slot) = high.get_mut(..prefix.len()) {
        slot.copy_from_slice(prefix);
    }
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_keep_their_order() {
        let mut ids: Vec<SessionId> = (0..50).map(|_| SessionId::new()).collect();
        let mut keys: Vec<Id> = ids.iter().map(|id| session_key(id).unwrap()).collect();
        for (id, key) in ids.iter().zip(&keys) {
            assert_eq!(&session_id(key).unwrap(), id);
        }
        ids.sort();
        keys.sort();
        let back: Vec<SessionId> = keys.iter().map(|k| session_id(k).unwrap()).collect();
        assert_eq!(back, ids);
        let run = RunId::new();
        assert_eq!(run_id(&run_key(&run).unwrap()).unwrap(), run);
        let event = EventId::new();
        assert_eq!(event_id(&event_key(&event).unwrap()).unwrap(), event);
        assert!(session_key(&SessionId::parse("ses_0123456789abcdef0123456789abcdef").unwrap()).is_ok());
    }

    #[test]
    fn composite_keys_sort_numerically() {
        let s = [7u8; 16];
        assert!(event_pos(&s, 255) < event_pos(&s, 256));
        assert_eq!(split_pos(&event_pos(&s, 42)), (s, 42));
        let order = |micros| session_order_key(&order_key(micros), &s);
        assert!(order(-5) < order(3));
        assert!(order(i64::MIN) < order(-1));
        assert_eq!(session_of_order_key(&order(9)).unwrap(), s);
        assert!(session_of_order_key(&[1, 2, 3]).is_err());
        let value = session_value(&order_key(7), b"{}");
        assert_eq!(split_session_value(&value).unwrap(), (order_key(7), &b"{}"[..]));
        assert!(split_session_value(b"short").is_err());
        let r = [9u8; 16];
        assert_eq!(run_start_key(&s, &r)[16..], r);
        let early = Timestamp::from_timestamp(-10, 5).unwrap();
        let late = Timestamp::from_timestamp(-10, 6).unwrap();
        assert!(session_run_key(&s, early, &r) < session_run_key(&s, late, &r));
        assert_eq!(run_of_session_run_key(&session_run_key(&s, late, &r)).unwrap(), r);
        assert!(run_of_session_run_key(&[0; 10]).is_err());
        assert_eq!(decode_head(&encode_head(42)).unwrap(), 42);
        let value = log_value(&s, 9, b"event");
        assert_eq!(split_log_value(&value).unwrap(), (event_pos(&s, 9), &b"event"[..]));
        assert!(split_log_value(&value[..20]).is_err());
        assert!(lsn_key(1) < lsn_key(256));
        assert!(decode_head(&[1]).is_err());
        let (low, high) = prefix_bounds::<24>(&s);
        assert!(low <= event_pos(&s, 0) && event_pos(&s, u64::MAX) <= high);
    }
}
