//! [`EventJson`]: the one JSON object an event is shown as outside the library (the HTTP API,
//! Server-Sent Events, `asm ... --json`, JSONL sinks).

use serde::{Deserialize, Serialize};

use crate::{Event, EventId, EventKind, EventRecord, JsonMap, RunId, SessionId, Timestamp};

/// The public JSON shape of a stored event: the one object the HTTP API, its Server-Sent
/// Events, the CLI's `--json` output and JSONL sinks print, so every consumer parses one shape.
///
/// It differs from the storage form ([`EventRecord`]'s serde, which keeps the original's
/// `type` / `sequence_number` names) in its field names: `kind` and `sequence`, and `run_id`
/// is always present (`null` for session events). Field order is fixed:
/// `session_id, run_id, sequence, kind, data, timestamp`, then `id, metadata, provider,
/// correlation_id, schema_version`.
///
/// ```
/// use asm_core::{Event, EventJson, EventKind, SessionId};
/// let mut event = Event::new(EventKind::MessageStreamed, SessionId::new()).with_data("delta", "Hi");
/// event.sequence = Some(3);
/// let json = serde_json::to_value(EventJson::from(&event))?;
/// assert_eq!(json["sequence"], 3);
/// assert_eq!(json["kind"], "message_streamed");
/// assert_eq!(json["data"]["delta"], "Hi");
/// assert!(json["run_id"].is_null());
/// let back = Event::from(serde_json::from_value::<EventJson>(json)?);
/// assert_eq!(back, event);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventJson {
    /// The session whose log holds the event.
    pub session_id: SessionId,
    /// The run, `null` for session-level events.
    pub run_id: Option<RunId>,
    /// The per-session sequence number (0 only for an event that was never stored).
    pub sequence: u64,
    /// What happened (snake_case name, e.g. `message_streamed`).
    pub kind: EventKind,
    /// The payload (see [`EventKind::canonical_keys`]).
    pub data: JsonMap,
    /// When it happened (RFC 3339, UTC, microseconds).
    pub timestamp: Timestamp,
    /// The event's globally unique id.
    pub id: EventId,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: JsonMap,
    /// The provider that produced it (`claude`, `codex`, ..., `session_manager`).
    #[serde(default)]
    pub provider: Option<String>,
    /// Correlation id copied from session or run metadata.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Payload schema version.
    #[serde(default = "schema_version")]
    pub schema_version: u32,
}

fn schema_version() -> u32 {
    Event::SCHEMA_VERSION
}

impl From<&Event> for EventJson {
    fn from(event: &Event) -> Self {
        Self {
            session_id: event.session_id.clone(),
            run_id: event.run_id.clone(),
            sequence: event.sequence.unwrap_or(0),
            kind: event.kind,
            data: event.data.clone(),
            timestamp: event.timestamp,
            id: event.id.clone(),
            metadata: event.metadata.clone(),
            provider: event.provider.clone(),
            correlation_id: event.correlation_id.clone(),
            schema_version: event.schema_version,
        }
    }
}

impl From<EventJson> for Event {
    /// Back to an event; `sequence` 0 means "not stored" (`None`), and a schema version of 0
    /// is read as the current one.
    fn from(json: EventJson) -> Self {
        Event::from(EventRecord {
            id: json.id,
            kind: json.kind,
            timestamp: json.timestamp,
            session_id: json.session_id,
            run_id: json.run_id,
            data: json.data,
            metadata: json.metadata,
            sequence: (json.sequence > 0).then_some(json.sequence),
            schema_version: json.schema_version.max(1),
            provider: json.provider,
            correlation_id: json.correlation_id,
        })
    }
}

impl Event {
    /// This event in its public JSON shape ([`EventJson`]).
    pub fn to_json(&self) -> EventJson {
        EventJson::from(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_and_order() {
        let mut event = Event::new(EventKind::RunStarted, SessionId::new()).with_run(RunId::new());
        event.sequence = Some(1);
        let text = serde_json::to_string(&event.to_json()).unwrap();
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for key in ["session_id", "run_id", "sequence", "kind", "data", "timestamp"] {
            assert!(keys.contains(&key.to_owned()), "{key} missing from {text}");
        }
        assert!(text.starts_with("{\"session_id\":"), "{text}");
        assert!(!text.contains("sequence_number"), "{text}");
        assert_eq!(Event::from(serde_json::from_str::<EventJson>(&text).unwrap()), event);
    }
}
