use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, EventId, RunId, SessionId, Timestamp};

/// A JSON object: the type of every free-form payload (`data`, `metadata`, `context`, ...).
pub type JsonMap = serde_json::Map<String, serde_json::Value>;

macro_rules! event_kinds {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal, $group:ident, [$($key:ident),*]; )*) => {
        /// The 31 event kinds, in canonical order (the 28 of the original, then reasoning and
        /// raw provider lines). Serialised as the snake_case name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum EventKind {
            $( $(#[$doc])* $variant, )*
        }

        crate::string_enum! {
            /// The snake_case name used on the wire.
            EventKind { $($variant => $text),* }
            /// Every kind, in canonical order.
            pub const ALL;
            /// Parses the snake_case name.
            ///
            /// # Errors
            /// [`ErrorCode::InvalidEventType`] for any other text.
            pub fn parse(text) -> Result<Self, Error> {
                Err(Error::new(ErrorCode::InvalidEventType, format!("unknown event type {text:?}")))
            }
            impl FromStr;
        }

        impl EventKind {
            /// The group the kind belongs to.
            pub const fn group(self) -> EventGroup {
                match self { $(EventKind::$variant => EventGroup::$group,)* }
            }

            /// The canonical payload keys of this kind (spec section 2.1): the keys the library
            /// writes and reads. Providers may add more; readers must not require more.
            pub const fn canonical_keys(self) -> &'static [&'static str] {
                match self { $(EventKind::$variant => &[$(keys::$key),*],)* }
            }
        }
    };
}

/// Canonical payload keys. Tool payloads use exactly `tool_call_id`, `tool_name`, `tool_input`
/// (an object) and `tool_output`; provider-native aliases are never written.
pub mod keys {
    /// Provider name.
    pub const PROVIDER: &str = "provider";
    /// Error code (snake_case name).
    pub const ERROR_CODE: &str = "error_code";
    /// Error message.
    pub const ERROR_MESSAGE: &str = "error_message";
    /// Normalised provider error object.
    pub const PROVIDER_ERROR: &str = "provider_error";
    /// Free-form details object.
    pub const DETAILS: &str = "details";
    /// Provider-side session id (Claude session id, Codex thread id, Amp thread id).
    pub const PROVIDER_SESSION_ID: &str = "provider_session_id";
    /// Model name.
    pub const MODEL: &str = "model";
    /// Why the provider stopped.
    pub const STOP_REASON: &str = "stop_reason";
    /// Token usage object.
    pub const TOKEN_USAGE: &str = "token_usage";
    /// Cost in USD reported by the provider.
    pub const TOTAL_COST_USD: &str = "total_cost_usd";
    /// Why something happened (for example `approval_requested`).
    pub const REASON: &str = "reason";
    /// Message role.
    pub const ROLE: &str = "role";
    /// Message content (full text).
    pub const CONTENT: &str = "content";
    /// Streamed chunk.
    pub const DELTA: &str = "delta";
    /// Tool call id.
    pub const TOOL_CALL_ID: &str = "tool_call_id";
    /// Tool name.
    pub const TOOL_NAME: &str = "tool_name";
    /// Tool input object.
    pub const TOOL_INPUT: &str = "tool_input";
    /// Tool output.
    pub const TOOL_OUTPUT: &str = "tool_output";
    /// Tool error flag.
    pub const IS_ERROR: &str = "is_error";
    /// Input tokens.
    pub const INPUT_TOKENS: &str = "input_tokens";
    /// Output tokens.
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    /// Cache-read input tokens.
    pub const CACHE_READ_TOKENS: &str = "cache_read_tokens";
    /// Cache-creation input tokens.
    pub const CACHE_CREATION_TOKENS: &str = "cache_creation_tokens";
    /// Whether a usage report is a `delta` or `cumulative`.
    pub const USAGE_MODE: &str = "usage_mode";
    /// Snapshot label (`before`, `after`, `after_failure`).
    pub const LABEL: &str = "label";
    /// Snapshot backend (`git`, `hash`).
    pub const BACKEND: &str = "backend";
    /// Snapshot reference.
    pub const REF: &str = "ref";
    /// Files changed by a diff.
    pub const FILES_CHANGED: &str = "files_changed";
    /// Lines inserted by a diff.
    pub const INSERTIONS: &str = "insertions";
    /// Lines deleted by a diff.
    pub const DELETIONS: &str = "deletions";
    /// Whether the diff carries a patch.
    pub const HAS_PATCH: &str = "has_patch";
    /// Policy name.
    pub const POLICY: &str = "policy";
    /// Violation kind.
    pub const KIND: &str = "kind";
    /// Policy action.
    pub const ACTION: &str = "action";
    /// Policy name (approval events).
    pub const POLICY_NAME: &str = "policy_name";
    /// Violation kind (approval events).
    pub const VIOLATION_KIND: &str = "violation_kind";
    /// Whether a reasoning block was redacted by the provider (its content is then empty).
    pub const REDACTED: &str = "redacted";
    /// A provider line kept verbatim (`provider_raw`).
    pub const RAW: &str = "raw";
    /// The approval request's id (`apr_...`, approval events).
    pub const APPROVAL_ID: &str = "approval_id";
    /// The decision of an approval (`allow_once`, `allow_always`, `deny_once`, `deny_always`).
    pub const DECISION: &str = "decision";
    /// Who decided an approval (`policy`, `session_memory`, `timeout`, `cancelled`, or the name
    /// an application gave when it answered).
    pub const DECIDED_BY: &str = "decided_by";
    /// How long an approval waited for its decision, in milliseconds.
    pub const WAIT_MS: &str = "wait_ms";
    /// The provider's own `type` of a raw line, when it was JSON (`provider_raw`).
    pub const RAW_TYPE: &str = "raw_type";
}

event_kinds! {
    /// A session was created.
    SessionCreated = "session_created", Session, [PROVIDER];
    /// A session became active.
    SessionStarted = "session_started", Session, [];
    /// A session was paused.
    SessionPaused = "session_paused", Session, [];
    /// A paused session resumed.
    SessionResumed = "session_resumed", Session, [];
    /// A session completed.
    SessionCompleted = "session_completed", Session, [];
    /// A session failed.
    SessionFailed = "session_failed", Session, [ERROR_CODE, ERROR_MESSAGE, PROVIDER_ERROR, DETAILS];
    /// A session was cancelled.
    SessionCancelled = "session_cancelled", Session, [];
    /// A run started executing (emitted by the runtime, exactly once per executed run).
    RunStarted = "run_started", Run, [PROVIDER, PROVIDER_SESSION_ID, MODEL];
    /// A run completed (terminal).
    RunCompleted = "run_completed", Run, [STOP_REASON, PROVIDER_SESSION_ID, MODEL, TOKEN_USAGE, TOTAL_COST_USD];
    /// A run failed (terminal). `token_usage` / `total_cost_usd`: what the provider reported
    /// before it failed (see [`UsageTotals`](crate::UsageTotals)); cost only when reported.
    RunFailed = "run_failed", Run, [ERROR_CODE, ERROR_MESSAGE, PROVIDER_ERROR, DETAILS, TOKEN_USAGE, TOTAL_COST_USD];
    /// A run was cancelled (terminal), with the usage and cost reported up to the cancel.
    RunCancelled = "run_cancelled", Run, [REASON, TOKEN_USAGE, TOTAL_COST_USD];
    /// A run exceeded its deadline (terminal), with the usage and cost reported until then.
    RunTimeout = "run_timeout", Run, [ERROR_CODE, ERROR_MESSAGE, TOKEN_USAGE, TOTAL_COST_USD];
    /// An input message was sent to the provider.
    MessageSent = "message_sent", Message, [ROLE, CONTENT];
    /// A complete message was received.
    MessageReceived = "message_received", Message, [ROLE, CONTENT];
    /// A chunk of a message was streamed.
    MessageStreamed = "message_streamed", Message, [CONTENT, DELTA];
    /// A tool call started.
    ToolCallStarted = "tool_call_started", Tool, [TOOL_CALL_ID, TOOL_NAME, TOOL_INPUT];
    /// A tool call completed.
    ToolCallCompleted = "tool_call_completed", Tool, [TOOL_CALL_ID, TOOL_NAME, TOOL_INPUT, TOOL_OUTPUT];
    /// A tool call failed.
    ToolCallFailed = "tool_call_failed", Tool, [TOOL_CALL_ID, TOOL_NAME, TOOL_INPUT, TOOL_OUTPUT, IS_ERROR];
    /// An error occurred (unknown provider lines are `provider_raw`, not errors).
    ErrorOccurred = "error_occurred", Error, [ERROR_CODE, ERROR_MESSAGE, PROVIDER_ERROR, DETAILS];
    /// A previous error was recovered from.
    ErrorRecovered = "error_recovered", Error, [];
    /// Token usage was reported: `usage_mode` `delta` adds to the run's total, `cumulative` is
    /// the run's total so far; `total_cost_usd`, when present, is the run's cost so far. Folded
    /// by [`UsageTotals`](crate::UsageTotals).
    TokenUsageUpdated = "token_usage_updated", Usage, [INPUT_TOKENS, OUTPUT_TOKENS, CACHE_READ_TOKENS, CACHE_CREATION_TOKENS, USAGE_MODE, TOTAL_COST_USD];
    /// A provider turn completed.
    TurnCompleted = "turn_completed", Usage, [];
    /// A workspace snapshot was taken.
    WorkspaceSnapshotTaken = "workspace_snapshot_taken", Workspace, [LABEL, BACKEND, REF];
    /// A workspace diff was computed.
    WorkspaceDiffComputed = "workspace_diff_computed", Workspace, [FILES_CHANGED, INSERTIONS, DELETIONS, HAS_PATCH];
    /// A policy was violated.
    PolicyViolation = "policy_violation", Policy, [POLICY, KIND, ACTION, DETAILS];
    /// A tool call needs human approval.
    ToolApprovalRequested = "tool_approval_requested", Approval, [TOOL_NAME, TOOL_CALL_ID, TOOL_INPUT, POLICY_NAME, VIOLATION_KIND, APPROVAL_ID];
    /// A tool call was approved.
    ToolApprovalGranted = "tool_approval_granted", Approval, [TOOL_NAME, TOOL_CALL_ID, APPROVAL_ID, DECISION, DECIDED_BY, REASON, WAIT_MS];
    /// A tool call was denied.
    ToolApprovalDenied = "tool_approval_denied", Approval, [TOOL_NAME, TOOL_CALL_ID, APPROVAL_ID, DECISION, DECIDED_BY, REASON, WAIT_MS];
    /// A chunk of the model's reasoning was streamed (Claude `thinking_delta`, Codex reasoning
    /// item updates): `content` and `delta` hold the chunk, as for `message_streamed`.
    /// Reasoning is shown to subscribers and stored, but it is **not** conversation: transcripts
    /// ignore it and it is never replayed as assistant text.
    ReasoningStreamed = "reasoning_streamed", Reasoning, [CONTENT, DELTA];
    /// A whole reasoning block (Claude / Amp `thinking`, Codex `reasoning` item): `content` is
    /// its text. A block the provider redacted keeps its marker, `redacted: true`, with empty
    /// `content` (the encrypted payload is not stored). Never part of a transcript.
    ReasoningCompleted = "reasoning_completed", Reasoning, [CONTENT, REDACTED];
    /// A provider line no mapping knows, kept verbatim for forward compatibility: `raw` is the
    /// line, `raw_type` the provider's `type` when the line was JSON (`metadata.raw = true`,
    /// `metadata.raw_reason` says why it is raw). Raw lines never change a transcript.
    ProviderRaw = "provider_raw", Raw, [RAW, RAW_TYPE];
}

impl EventKind {
    /// Whether this kind ends a run: `run_completed`, `run_failed`, `run_cancelled`, `run_timeout`.
    pub const fn is_run_terminal(self) -> bool {
        matches!(self, EventKind::RunCompleted | EventKind::RunFailed | EventKind::RunCancelled | EventKind::RunTimeout)
    }

    /// Whether the runtime owns this kind (`run_started` and the terminal kinds); adapters may
    /// not emit these.
    pub const fn is_run_lifecycle(self) -> bool {
        matches!(self, EventKind::RunStarted) || self.is_run_terminal()
    }

    /// Whether events of this kind are part of the conversation a transcript is built from
    /// (messages, tool calls and results, approval requests). Reasoning and raw provider lines
    /// are not, nor are lifecycle, usage, error, workspace and policy events.
    pub const fn is_conversation(self) -> bool {
        matches!(
            self,
            EventKind::MessageSent
                | EventKind::MessageReceived
                | EventKind::MessageStreamed
                | EventKind::ToolCallStarted
                | EventKind::ToolCallCompleted
                | EventKind::ToolCallFailed
                | EventKind::ToolApprovalRequested
        )
    }

    /// Advisory shape rules (spec section 2.2): `(key, expected JSON type)` pairs.
    fn shape_rules(self) -> &'static [(&'static str, JsonType)] {
        use JsonType::{Integer, Str};
        match self {
            EventKind::MessageReceived => &[(keys::CONTENT, Str), (keys::ROLE, Str)],
            EventKind::MessageStreamed | EventKind::ReasoningStreamed | EventKind::ReasoningCompleted => {
                &[(keys::CONTENT, Str)]
            }
            EventKind::ProviderRaw => &[(keys::RAW, Str)],
            EventKind::ToolCallStarted | EventKind::ToolCallCompleted | EventKind::ToolCallFailed => {
                &[(keys::TOOL_NAME, Str)]
            }
            EventKind::TokenUsageUpdated => &[(keys::INPUT_TOKENS, Integer), (keys::OUTPUT_TOKENS, Integer)],
            EventKind::RunCompleted => &[(keys::STOP_REASON, Str)],
            EventKind::ErrorOccurred => &[(keys::ERROR_MESSAGE, Str)],
            EventKind::PolicyViolation => &[(keys::POLICY, Str), (keys::KIND, Str)],
            EventKind::ToolApprovalRequested => &[(keys::TOOL_NAME, Str), (keys::POLICY_NAME, Str)],
            EventKind::ToolApprovalGranted | EventKind::ToolApprovalDenied => &[(keys::TOOL_NAME, Str)],
            _ => &[],
        }
    }
}

#[derive(Clone, Copy)]
enum JsonType {
    Str,
    Integer,
}

/// The group of an [`EventKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventGroup {
    /// Session lifecycle.
    Session,
    /// Run lifecycle.
    Run,
    /// Messages.
    Message,
    /// Tool calls.
    Tool,
    /// Errors.
    Error,
    /// Token usage and turns.
    Usage,
    /// Workspace snapshots.
    Workspace,
    /// Policy violations.
    Policy,
    /// Tool approvals.
    Approval,
    /// The model's reasoning (`reasoning_streamed`, `reasoning_completed`).
    Reasoning,
    /// Provider lines kept verbatim (`provider_raw`).
    Raw,
}

/// One entry of a session's append-only log.
///
/// `sequence` is `None` until a store appends the event; the store assigns the session's next
/// number (starting at 1, gap-free) inside its atomic write.
///
/// An `Event` is a cheap handle to an immutable-by-default [`EventRecord`]: cloning it is one
/// reference-count increment, so stores, streams and subscribers hand the same event to many
/// readers without copying payloads. Fields are read through `Deref` (`event.kind`,
/// `event.data`); writing a field (`event.sequence = Some(1)`) copies the record first if
/// another handle shares it (copy-on-write), so no holder ever sees another's change.
///
/// ```
/// use asm_core::{Event, EventKind, SessionId};
/// let event = Event::new(EventKind::MessageSent, SessionId::new())
///     .with_data("role", "user")
///     .with_data("content", "hello");
/// assert_eq!(event.sequence, None);
/// assert_eq!(event.data["content"], "hello");
///
/// let mut stored = event.clone();
/// stored.sequence = Some(1);
/// assert_eq!(event.sequence, None, "copy-on-write: the original is unchanged");
/// ```
#[derive(Clone, PartialEq)]
pub struct Event(Arc<EventRecord>);

/// The fields of an [`Event`]. Build one directly when decoding stored events, then convert
/// with `Event::from(record)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Globally unique id; appending the same id twice is idempotent.
    pub id: EventId,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When it happened.
    pub timestamp: Timestamp,
    /// The session whose log this event belongs to.
    pub session_id: SessionId,
    /// The run, for run-scoped events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// The payload (see [`EventKind::canonical_keys`]).
    #[serde(default)]
    pub data: JsonMap,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: JsonMap,
    /// Per-session sequence number, assigned by the store.
    #[serde(default, rename = "sequence_number", skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Payload schema version, at least 1.
    #[serde(deserialize_with = "deserialize_schema_version")]
    pub schema_version: u32,
    /// The provider that produced the event (`claude`, `codex`, ..., or `session_manager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Correlation id copied from session or run metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

fn deserialize_schema_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("schema_version must be >= 1"));
    }
    Ok(v)
}

impl std::ops::Deref for Event {
    type Target = EventRecord;
    fn deref(&self) -> &EventRecord {
        &self.0
    }
}

impl std::ops::DerefMut for Event {
    /// Copy-on-write: clones the record only if another handle shares it.
    fn deref_mut(&mut self) -> &mut EventRecord {
        Arc::make_mut(&mut self.0)
    }
}

impl AsRef<Event> for Event {
    /// Lets APIs that read events take plain [`Event`]s and
    /// [`StoredEvent`](crate::StoredEvent)s alike (`E: AsRef<Event>`).
    fn as_ref(&self) -> &Event {
        self
    }
}

impl From<EventRecord> for Event {
    fn from(record: EventRecord) -> Self {
        Self(Arc::new(record))
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        EventRecord::deserialize(deserializer).map(Self::from)
    }
}

impl Event {
    /// The current payload schema version.
    pub const SCHEMA_VERSION: u32 = 1;

    /// The fields, without copying when this is the only handle.
    pub fn into_record(self) -> EventRecord {
        Arc::unwrap_or_clone(self.0)
    }

    /// Whether two handles share one record (a cheap identity check).
    pub fn ptr_eq(&self, other: &Event) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// A new, not yet stored event with a fresh id and the current time.
    pub fn new(kind: EventKind, session_id: SessionId) -> Self {
        Self::from(EventRecord {
            id: EventId::new(),
            kind,
            timestamp: crate::now(),
            session_id,
            run_id: None,
            data: JsonMap::new(),
            metadata: JsonMap::new(),
            sequence: None,
            schema_version: Self::SCHEMA_VERSION,
            provider: None,
            correlation_id: None,
        })
    }

    crate::builder_setters! {
        /// Sets the run.
        fn with_run(run_id: RunId) { run_id = Some(run_id) }
    }

    /// Adds one payload entry.
    #[must_use]
    pub fn with_data(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    crate::builder_setters! {
        /// Replaces the payload.
        fn with_payload(data: JsonMap) { data = data }
        /// Sets the provider.
        fn with_provider(provider: impl Into<String>) { provider = Some(provider.into()) }
    }

    /// Advisory shape warnings (spec section 2.2); an empty list means the payload has the
    /// fields readers rely on. Never a reason to reject an event.
    pub fn shape_warnings(&self) -> Vec<String> {
        self.kind
            .shape_rules()
            .iter()
            .filter_map(|&(key, ty)| match (self.data.get(key), ty) {
                (None, _) => Some(format!("missing required field '{key}' for shape validation")),
                (Some(serde_json::Value::String(_)), JsonType::Str) => None,
                (Some(v), JsonType::Integer) if v.is_i64() || v.is_u64() => None,
                (Some(v), JsonType::Str) => Some(format!("field '{key}' expected string, got {v}")),
                (Some(v), JsonType::Integer) => Some(format!("field '{key}' expected integer, got {v}")),
            })
            .collect()
    }

    /// The text a payload key holds, if it is a string.
    pub fn data_str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(serde_json::Value::as_str)
    }

    /// Whether this event is a raw provider line: a `provider_raw` event, or the form adapters
    /// wrote before that kind existed (a `message_received` with `metadata.raw == true`), so that
    /// logs written earlier read the same way.
    ///
    /// ```
    /// use asm_core::{Event, EventKind, SessionId};
    /// let s = SessionId::new();
    /// assert!(Event::new(EventKind::ProviderRaw, s.clone()).is_provider_raw());
    /// let mut legacy = Event::new(EventKind::MessageReceived, s.clone()).with_data("role", "system");
    /// legacy.metadata.insert("raw".into(), true.into());
    /// assert!(legacy.is_provider_raw());
    /// assert!(!Event::new(EventKind::MessageReceived, s).is_provider_raw());
    /// ```
    pub fn is_provider_raw(&self) -> bool {
        match self.kind {
            EventKind::ProviderRaw => true,
            EventKind::MessageReceived => self.metadata.get("raw") == Some(&serde_json::Value::Bool(true)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_31_kinds_with_round_trip_names() {
        assert_eq!(EventKind::ALL.len(), 31);
        for &kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()).unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert_eq!(EventKind::parse("delta").unwrap_err().code(), ErrorCode::InvalidEventType);
    }

    #[test]
    fn tool_kinds_use_canonical_keys() {
        assert_eq!(EventKind::ToolCallStarted.canonical_keys(), &["tool_call_id", "tool_name", "tool_input"]);
        assert_eq!(EventKind::RunStarted.group(), EventGroup::Run);
        assert!(EventKind::RunTimeout.is_run_terminal());
        assert!(EventKind::RunStarted.is_run_lifecycle());
        assert!(!EventKind::MessageStreamed.is_run_lifecycle());
    }

    #[test]
    fn reasoning_and_raw_kinds() {
        for kind in [EventKind::ReasoningStreamed, EventKind::ReasoningCompleted, EventKind::ProviderRaw] {
            assert!(!kind.is_run_lifecycle(), "{kind}");
            assert!(!kind.is_conversation(), "{kind}");
        }
        assert_eq!(EventKind::parse("reasoning_streamed").unwrap().group(), EventGroup::Reasoning);
        assert_eq!(EventKind::ReasoningCompleted.canonical_keys(), &["content", "redacted"]);
        assert_eq!(EventKind::ProviderRaw.canonical_keys(), &["raw", "raw_type"]);
        assert_eq!(EventKind::ProviderRaw.group(), EventGroup::Raw);
        assert!(EventKind::MessageStreamed.is_conversation());
        // The 28 original kinds keep their order; the new ones come last.
        assert_eq!(EventKind::ALL[27], EventKind::ToolApprovalDenied);
        let s = SessionId::new();
        let redacted =
            Event::new(EventKind::ReasoningCompleted, s).with_data("content", "").with_data("redacted", true);
        assert!(redacted.shape_warnings().is_empty());
    }

    #[test]
    fn event_serde_round_trip() {
        let mut e = Event::new(EventKind::ToolCallStarted, SessionId::new())
            .with_run(RunId::new())
            .with_data("tool_name", "bash")
            .with_provider("claude");
        e.sequence = Some(7);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "tool_call_started");
        assert_eq!(json["sequence_number"], 7);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn schema_version_zero_is_rejected() {
        let e = Event::new(EventKind::SessionStarted, SessionId::new());
        let mut json = serde_json::to_value(&e).unwrap();
        json["schema_version"] = 0.into();
        assert!(serde_json::from_value::<Event>(json).is_err());
    }

    #[test]
    fn shape_warnings() {
        let s = SessionId::new();
        let ok = Event::new(EventKind::MessageStreamed, s.clone()).with_data("content", "x");
        assert!(ok.shape_warnings().is_empty());
        let bad = Event::new(EventKind::TokenUsageUpdated, s).with_data("input_tokens", "12");
        assert_eq!(bad.shape_warnings().len(), 2);
    }
}
