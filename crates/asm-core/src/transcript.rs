//! Transcripts: the conversation of a session rebuilt from its event log (spec 1.11).
//!
//! [`TranscriptBuilder::from_events`] sorts a session's events and folds them into
//! [`Message`]s: streamed chunks collapse into one assistant message, tool calls and results
//! become assistant / tool messages, approval requests become a synthetic tool result.
//! [`TranscriptBuilder::update`] applies newer events incrementally and always gives exactly
//! the transcript a full rebuild would give, even when a streamed message spans the boundary.
//! [`TranscriptOptions`] bound the result, keeping the newest messages.
//!
//! ```
//! use asm_core::{Event, EventKind, Role, SessionId, TranscriptBuilder, TranscriptOptions};
//!
//! let session = SessionId::new();
//! let mut events = vec![
//!     Event::new(EventKind::MessageSent, session.clone()).with_data("content", "Hi"),
//!     Event::new(EventKind::MessageStreamed, session.clone()).with_data("delta", "Hel"),
//!     Event::new(EventKind::MessageStreamed, session.clone()).with_data("delta", "lo!"),
//! ];
//! for (i, e) in events.iter_mut().enumerate() {
//!     e.sequence = Some(i as u64 + 1);
//! }
//! let builder = TranscriptBuilder::new(TranscriptOptions::default());
//! let transcript = builder.from_events(&session, &events);
//! assert_eq!(transcript.messages.len(), 2);
//! assert_eq!(transcript.messages[0].role, Role::User);
//! assert_eq!(transcript.messages[1].content.as_deref(), Some("Hello!"));
//! assert_eq!(transcript.last_sequence, Some(3));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Event, EventKind, JsonMap, Role, SessionId, Timestamp, keys};

/// The tool output recorded for a `tool_approval_requested` event.
pub const APPROVAL_PENDING_OUTPUT: &str = "[Execution paused: awaiting human approval]";

/// One message of a [`Transcript`].
///
/// Tool calls are assistant messages without content but with `tool_call_id`, `tool_name` and
/// `tool_input`; tool results are tool messages with `tool_call_id`, `tool_name` and
/// `tool_output`. `metadata` holds `event_id`, `run_id`, `timestamp` and `sequence_number` of
/// the event the message came from (absent ones left out), on top of that event's own metadata.
///
/// ```
/// use asm_core::{Message, Role};
/// let m = Message::new(Role::User, "héllo");
/// assert_eq!(m.char_count(), 5);
/// assert_eq!(serde_json::to_value(&m)?, serde_json::json!({"role": "user", "content": "héllo"}));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote the message.
    pub role: Role,
    /// The text, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The tool call this message starts or answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// The tool input (tool calls only; only when the event carried an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_input: Option<JsonMap>,
    /// The tool output, any JSON value but `null` (tool results only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_output: Option<Value>,
    /// Where the message came from (see the type's documentation).
    #[serde(default, skip_serializing_if = "JsonMap::is_empty")]
    pub metadata: JsonMap,
}

impl Message {
    /// A text message with no tool fields and no metadata.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: Some(content.into()), ..Self::empty(role) }
    }

    fn empty(role: Role) -> Self {
        Self {
            role,
            content: None,
            tool_call_id: None,
            tool_name: None,
            tool_input: None,
            tool_output: None,
            metadata: JsonMap::new(),
        }
    }

    /// The size used by the character budget of [`TranscriptOptions`]: the number of characters
    /// of `content`; without content, the number of characters of `tool_name`; else 0. (Tool
    /// inputs and outputs are not counted.)
    pub fn char_count(&self) -> usize {
        match (&self.content, &self.tool_name) {
            (Some(content), _) => content.chars().count(),
            (None, Some(name)) => name.chars().count(),
            (None, None) => 0,
        }
    }
}

fn default_chars_per_token() -> usize {
    TranscriptOptions::DEFAULT_CHARS_PER_TOKEN
}

/// Bounds for a [`Transcript`]; every bound keeps the **newest** messages.
///
/// 1. `max_messages` keeps the last N messages.
/// 2. Then a character budget: `max_chars` if set, otherwise `max_tokens_approx ×
///    chars_per_token` (so `max_chars` takes precedence when both are set). Messages are walked
///    from newest to oldest, summing [`Message::char_count`]; the walk stops at the first message
///    that would exceed the budget (older messages that would still fit are not kept either).
///
/// Zero values mean "no bound", as in the original (which only honoured positive integers).
///
/// ```
/// use asm_core::{Message, Role, TranscriptOptions};
///
/// let options = TranscriptOptions::default().max_chars(10).max_tokens_approx(100);
/// assert_eq!(options.char_budget(), Some(10)); // max_chars wins
/// let messages = vec![
///     Message::new(Role::User, "tiny"),              // 4: would fit, but the walk stopped
///     Message::new(Role::Assistant, "much too long"), // 13: does not fit, walk stops here
///     Message::new(Role::User, "0123456789"),         // 10: fits
/// ];
/// let kept = options.truncate(messages);
/// assert_eq!(kept.len(), 1);
/// assert_eq!(kept[0].content.as_deref(), Some("0123456789"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TranscriptOptions {
    /// Keep at most this many (newest) messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<usize>,
    /// Character budget; takes precedence over `max_tokens_approx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
    /// Approximate token budget, converted with `chars_per_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_approx: Option<usize>,
    /// Characters per token for `max_tokens_approx` (default 4).
    #[serde(default = "default_chars_per_token")]
    pub chars_per_token: usize,
}

impl Default for TranscriptOptions {
    fn default() -> Self {
        Self {
            max_messages: None,
            max_chars: None,
            max_tokens_approx: None,
            chars_per_token: Self::DEFAULT_CHARS_PER_TOKEN,
        }
    }
}

impl TranscriptOptions {
    /// The default for `chars_per_token`.
    pub const DEFAULT_CHARS_PER_TOKEN: usize = 4;

    crate::builder_setters! {
        /// Sets `max_messages`.
        fn max_messages(max_messages: usize) { max_messages = Some(max_messages) }
        /// Sets `max_chars`.
        fn max_chars(max_chars: usize) { max_chars = Some(max_chars) }
        /// Sets `max_tokens_approx`.
        fn max_tokens_approx(max_tokens_approx: usize) { max_tokens_approx = Some(max_tokens_approx) }
        /// Sets `chars_per_token`.
        fn chars_per_token(chars_per_token: usize) { chars_per_token = chars_per_token }
    }

    /// The effective character budget: a positive `max_chars`, else a positive
    /// `max_tokens_approx × chars_per_token`, else `None`.
    pub fn char_budget(&self) -> Option<usize> {
        match self.max_chars.filter(|&n| n > 0) {
            Some(chars) => Some(chars),
            None => self.max_tokens_approx.map(|tokens| tokens.saturating_mul(self.chars_per_token)).filter(|&n| n > 0),
        }
    }

    /// Whether no bound is set.
    pub fn is_unbounded(&self) -> bool {
        self.max_messages.is_none_or(|n| n == 0) && self.char_budget().is_none()
    }

    /// How many of the newest `messages` the bounds keep.
    pub fn kept_len(&self, messages: &[Message]) -> usize {
        let mut kept = messages.len();
        if let Some(max) = self.max_messages.filter(|&n| n > 0) {
            kept = kept.min(max);
        }
        if let Some(budget) = self.char_budget() {
            let mut used = 0usize;
            let mut fitting = 0;
            for message in messages.iter().rev().take(kept) {
                used = used.saturating_add(message.char_count());
                if used > budget {
                    break;
                }
                fitting += 1;
            }
            kept = fitting;
        }
        kept
    }

    /// Applies the bounds: keeps the newest [`kept_len`](Self::kept_len) messages.
    pub fn truncate(&self, mut messages: Vec<Message>) -> Vec<Message> {
        let cut = messages.len() - self.kept_len(&messages);
        messages.drain(..cut);
        messages
    }
}

/// The conversation of one session, rebuilt from its events by a [`TranscriptBuilder`].
///
/// `messages` is what a provider should see, oldest first, after truncation. When the log ends
/// in the middle of a streamed assistant message (chunks not yet closed by a
/// `message_received` or another message), the text streamed so far is the **last** message
/// (role assistant, content = the chunks so far, metadata of the latest chunk), exactly as a
/// full rebuild shows it. The transcript also remembers, in private state that is serialised
/// with it (key `open_stream`), that this message is still open together with the messages
/// truncation had to hide only because of it, so that
/// [`TranscriptBuilder::update`] continues the message instead of starting a new one. `update`
/// expects `messages` as the builder left it.
///
/// ```
/// use asm_core::{Event, EventKind, SessionId, TranscriptBuilder, TranscriptOptions};
///
/// let session = SessionId::new();
/// let chunk = |seq: u64, text: &str| {
///     let mut e = Event::new(EventKind::MessageStreamed, session.clone()).with_data("delta", text);
///     e.sequence = Some(seq);
///     e
/// };
/// let events = [chunk(1, "Hello, "), chunk(2, "world")];
/// let builder = TranscriptBuilder::new(TranscriptOptions::default());
///
/// let mut transcript = builder.from_events(&session, &events[..1]);
/// assert_eq!(transcript.messages[0].content.as_deref(), Some("Hello, "));
/// assert_eq!(transcript.open_stream_text(), Some("Hello, "));
///
/// builder.update(&mut transcript, &events[1..]);
/// assert_eq!(transcript.messages.len(), 1);
/// assert_eq!(transcript.messages[0].content.as_deref(), Some("Hello, world"));
/// assert_eq!(transcript, builder.from_events(&session, &events));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The session.
    pub session_id: SessionId,
    /// The messages, oldest first, after truncation (see the type's documentation).
    #[serde(default)]
    pub messages: Vec<Message>,
    /// The highest sequence number among the events applied so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence: Option<u64>,
    /// The timestamp of the last applied event (in sorted order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<Timestamp>,
    /// Free-form metadata; the builder leaves it alone.
    #[serde(default, skip_serializing_if = "JsonMap::is_empty")]
    pub metadata: JsonMap,
    /// The streamed assistant message that is still open, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_stream: Option<OpenStream>,
}

/// A streamed assistant message that no event has closed yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OpenStream {
    /// The chunks so far (never empty).
    text: String,
    /// Metadata merged over the chunks.
    #[serde(default)]
    metadata: JsonMap,
    /// Messages that the bounds keep on their own but that are not shown in `messages` because
    /// the open message takes their room (oldest first, directly preceding `messages`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hidden: Vec<Message>,
}

impl OpenStream {
    fn message(&self) -> Message {
        stream_message(&self.text, &self.metadata)
    }
}

impl Transcript {
    /// An empty transcript for `session_id`.
    pub fn new(session_id: SessionId) -> Self {
        Self {
            session_id,
            messages: Vec::new(),
            last_sequence: None,
            last_timestamp: None,
            metadata: JsonMap::new(),
            open_stream: None,
        }
    }

    /// The text of the streamed assistant message that is still open (not yet closed by a
    /// later message event), if any. When it fits the bounds it is also the last of
    /// `messages`.
    pub fn open_stream_text(&self) -> Option<&str> {
        self.open_stream.as_ref().map(|open| open.text.as_str())
    }

    /// Whether a streamed assistant message is still open.
    pub fn is_streaming(&self) -> bool {
        self.open_stream.is_some()
    }
}

/// Rebuilds [`Transcript`]s from events (spec 1.11), with the bounds of its
/// [`TranscriptOptions`].
///
/// Events are sorted by sequence number (events without one after all others), then timestamp,
/// then id, then input position, and folded:
///
/// | Event | Effect |
/// |---|---|
/// | `message_streamed` | chunk = `delta`, else `content` (non-strings as JSON text); non-empty chunks are appended to the open assistant message |
/// | `message_received` | role from `role` (default assistant). Assistant with an open message: the open message is closed with `content` if non-empty, else with the chunks. Otherwise the open message is closed and `{role, content}` added if `content` is non-empty |
/// | `message_sent` | closes the open message; adds `{role (default user), content}` if `content` is non-empty |
/// | `tool_call_started` | closes the open message; adds an assistant tool call (`tool_input` only when it is an object) |
/// | `tool_call_completed`, `tool_call_failed` | closes the open message; adds a tool result with `tool_output` |
/// | `tool_approval_requested` | closes the open message; adds a tool result with output [`APPROVAL_PENDING_OUTPUT`] |
/// | raw provider lines ([`Event::is_provider_raw`]: `provider_raw`, and `message_received` with `metadata.raw == true` as written before that kind existed) | ignored (an open message stays open) |
/// | `reasoning_streamed`, `reasoning_completed` | ignored: reasoning is never conversation, never replayed |
/// | anything else | ignored (an open message stays open) |
///
/// Only canonical keys are read (`content`, `delta`, `role`, `tool_call_id`, `tool_name`,
/// `tool_input`, `tool_output`); aliases such as `call_id`, `input` or `output` are ignored.
///
/// ```
/// use asm_core::{Event, EventKind, Role, SessionId, TranscriptBuilder, TranscriptOptions};
///
/// let s = SessionId::new();
/// let events = vec![
///     Event::new(EventKind::ToolCallStarted, s.clone())
///         .with_data("tool_call_id", "t1")
///         .with_data("tool_name", "bash")
///         .with_data("tool_input", serde_json::json!({"cmd": "ls"})),
///     Event::new(EventKind::ToolApprovalRequested, s.clone())
///         .with_data("tool_call_id", "t1")
///         .with_data("tool_name", "bash"),
/// ];
/// let t = TranscriptBuilder::default().from_events(&s, &events);
/// assert_eq!(t.messages[0].role, Role::Assistant);
/// assert_eq!(t.messages[0].tool_input.as_ref().unwrap()["cmd"], "ls");
/// assert_eq!(t.messages[1].role, Role::Tool);
/// assert_eq!(t.messages[1].tool_output, Some("[Execution paused: awaiting human approval]".into()));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TranscriptBuilder {
    options: TranscriptOptions,
}

impl TranscriptBuilder {
    /// A builder with these bounds.
    pub fn new(options: TranscriptOptions) -> Self {
        Self { options }
    }

    /// The bounds.
    pub fn options(&self) -> &TranscriptOptions {
        &self.options
    }

    /// Builds the transcript of `session_id` from `events`; events of other sessions are
    /// ignored. `last_sequence` is the highest sequence number among the session's events and
    /// `last_timestamp` the timestamp of the last one in sorted order.
    ///
    /// `events` are plain [`Event`]s or what a store read ([`StoredEvent`](crate::StoredEvent)s).
    pub fn from_events<E: AsRef<Event>>(&self, session_id: &SessionId, events: &[E]) -> Transcript {
        let mut transcript = Transcript::new(session_id.clone());
        self.apply(&mut transcript, sorted(events.iter().map(AsRef::as_ref).filter(|e| &e.session_id == session_id)));
        transcript
    }

    /// Applies `new_events` to `transcript`: only events of the transcript's session whose
    /// sequence number is greater than `last_sequence` (events without a sequence number are
    /// always applied), then re-applies the bounds. Without such events the transcript is left
    /// unchanged.
    ///
    /// For events that all carry sequence numbers, building from a prefix and updating with the
    /// rest gives exactly the transcript built from all of them — also when a streamed message
    /// spans the boundary and when bounds apply.
    pub fn update<E: AsRef<Event>>(&self, transcript: &mut Transcript, new_events: &[E]) {
        let last = transcript.last_sequence;
        let session_id = transcript.session_id.clone();
        let events = sorted(new_events.iter().map(AsRef::as_ref).filter(|e| {
            e.session_id == session_id
                && match (e.sequence, last) {
                    (Some(seq), Some(last)) => seq > last,
                    _ => true,
                }
        }));
        self.apply(transcript, events);
    }

    fn apply(&self, transcript: &mut Transcript, events: Vec<&Event>) {
        let Some(last_event) = events.last() else {
            return;
        };
        transcript.last_timestamp = Some(last_event.timestamp);
        if let Some(max) = events.iter().filter_map(|e| e.sequence).max() {
            transcript.last_sequence = Some(transcript.last_sequence.map_or(max, |l| l.max(max)));
        }

        let mut fold = Fold::restore(transcript);
        for event in events {
            fold.apply(event);
        }
        let (messages, open_stream) = fold.finish(&self.options);
        transcript.messages = messages;
        transcript.open_stream = open_stream;
    }
}

/// Sorts by (has no sequence, sequence, timestamp, id); the sort is stable, so input position
/// breaks the remaining ties.
fn sorted<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<&'a Event> {
    let mut events: Vec<&Event> = events.collect();
    events.sort_by(|a, b| {
        (a.sequence.is_none(), a.sequence, a.timestamp, &a.id).cmp(&(
            b.sequence.is_none(),
            b.sequence,
            b.timestamp,
            &b.id,
        ))
    });
    events
}

/// The fold state: messages closed so far (bounded lazily) and the open stream buffer.
struct Fold {
    closed: Vec<Message>,
    open: Option<(String, JsonMap)>,
}

impl Fold {
    /// Takes the fold state back out of a transcript built by [`Fold::finish`].
    fn restore(transcript: &mut Transcript) -> Self {
        let mut closed = std::mem::take(&mut transcript.messages);
        let open = transcript.open_stream.take().map(|open| {
            if closed.last() == Some(&open.message()) {
                closed.pop();
            }
            let mut all = open.hidden;
            all.append(&mut closed);
            closed = all;
            (open.text, open.metadata)
        });
        Self { closed, open }
    }

    /// Bounds the result. The closed messages are bounded on their own (so that what is kept
    /// does not depend on the open message, which may still grow or be replaced); the visible
    /// `messages` are the bounded closed messages plus the open one, bounded again. Because the
    /// bounds keep the longest suffix satisfying a suffix-closed condition, bounding twice is
    /// the same as bounding once, which makes incremental updates exact.
    fn finish(mut self, options: &TranscriptOptions) -> (Vec<Message>, Option<OpenStream>) {
        let mut closed = options.truncate(std::mem::take(&mut self.closed));
        match self.open {
            None => (closed, None),
            Some((text, metadata)) => {
                closed.push(stream_message(&text, &metadata));
                let kept = options.kept_len(&closed);
                let mut hidden: Vec<Message> = closed.drain(..closed.len() - kept).collect();
                if kept == 0 {
                    // The open message itself does not fit; it lives in `text` only.
                    hidden.pop();
                }
                let open = OpenStream { text, metadata, hidden };
                (closed, Some(open))
            }
        }
    }

    fn flush(&mut self) {
        if let Some((text, metadata)) = self.open.take()
            && !text.is_empty()
        {
            self.closed.push(stream_message(&text, &metadata));
        }
    }

    fn apply(&mut self, event: &Event) {
        // Raw provider lines are kept in the log, never in the conversation: they must not
        // close (and so duplicate) a streamed message.
        if !event.kind.is_conversation() || event.is_provider_raw() {
            return;
        }
        let data = &event.data;
        match event.kind {
            EventKind::MessageStreamed => {
                let chunk = match data.get(keys::DELTA) {
                    Some(delta) if !delta.is_null() => text_of(Some(delta)),
                    _ => text_of(data.get(keys::CONTENT)),
                };
                let Some(chunk) = chunk.filter(|c| !c.is_empty()) else {
                    return;
                };
                let (text, metadata) = self.open.get_or_insert_with(Default::default);
                text.push_str(&chunk);
                metadata.extend(event_metadata(event));
            }
            EventKind::MessageReceived => {
                let role = role_of(data, Role::Assistant);
                let content = text_of(data.get(keys::CONTENT)).filter(|c| !c.is_empty());
                match (role, self.open.take()) {
                    (Role::Assistant, Some((text, metadata))) => {
                        let content = content.unwrap_or(text);
                        self.closed.push(stream_message(&content, &metadata));
                    }
                    (role, open) => {
                        self.open = open;
                        self.flush();
                        if let Some(content) = content {
                            self.push_text(role, content, event);
                        }
                    }
                }
            }
            EventKind::MessageSent => {
                self.flush();
                let role = role_of(data, Role::User);
                if let Some(content) = text_of(data.get(keys::CONTENT)).filter(|c| !c.is_empty()) {
                    self.push_text(role, content, event);
                }
            }
            EventKind::ToolCallStarted => {
                self.flush();
                self.closed.push(Message {
                    tool_call_id: text_of(data.get(keys::TOOL_CALL_ID)),
                    tool_name: text_of(data.get(keys::TOOL_NAME)),
                    tool_input: match data.get(keys::TOOL_INPUT) {
                        Some(Value::Object(input)) => Some(input.clone()),
                        _ => None,
                    },
                    metadata: event_metadata(event),
                    ..Message::empty(Role::Assistant)
                });
            }
            EventKind::ToolCallCompleted | EventKind::ToolCallFailed => {
                self.flush();
                let output = data.get(keys::TOOL_OUTPUT).filter(|v| !v.is_null()).cloned();
                self.push_tool_result(event, output);
            }
            EventKind::ToolApprovalRequested => {
                self.flush();
                self.push_tool_result(event, Some(APPROVAL_PENDING_OUTPUT.into()));
            }
            _ => {}
        }
    }

    fn push_text(&mut self, role: Role, content: String, event: &Event) {
        self.closed.push(Message { content: Some(content), metadata: event_metadata(event), ..Message::empty(role) });
    }

    fn push_tool_result(&mut self, event: &Event, output: Option<Value>) {
        self.closed.push(Message {
            tool_call_id: text_of(event.data.get(keys::TOOL_CALL_ID)),
            tool_name: text_of(event.data.get(keys::TOOL_NAME)),
            tool_output: output,
            metadata: event_metadata(event),
            ..Message::empty(Role::Tool)
        });
    }
}

fn stream_message(text: &str, metadata: &JsonMap) -> Message {
    Message { content: Some(text.to_owned()), metadata: metadata.clone(), ..Message::empty(Role::Assistant) }
}

/// A string as itself, `null`/absent as `None`, anything else as its JSON text.
fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

fn role_of(data: &JsonMap, default: Role) -> Role {
    data.get(keys::ROLE).and_then(Value::as_str).and_then(Role::parse).unwrap_or(default)
}

/// The event's own metadata overlaid with `event_id`, `run_id`, `timestamp` and
/// `sequence_number` (absent ones left out).
fn event_metadata(event: &Event) -> JsonMap {
    let mut metadata = event.metadata.clone();
    metadata.insert("event_id".into(), event.id.as_str().into());
    if let Some(run_id) = &event.run_id {
        metadata.insert("run_id".into(), run_id.as_str().into());
    }
    metadata.insert("timestamp".into(), event.timestamp.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true).into());
    if let Some(sequence) = event.sequence {
        metadata.insert("sequence_number".into(), sequence.into());
    }
    metadata
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::RunId;

    struct Log {
        session: SessionId,
        run: RunId,
        events: Vec<Event>,
    }

    impl Log {
        fn new() -> Self {
            Self { session: SessionId::new(), run: RunId::new(), events: Vec::new() }
        }

        /// Appends an event with the next sequence number and data from a JSON object.
        fn push(&mut self, kind: EventKind, data: Value) -> &mut Event {
            let seq = self.events.len() as u64 + 1;
            let mut event = Event::new(kind, self.session.clone()).with_run(self.run.clone());
            if let Value::Object(map) = data {
                event.data = map;
            }
            event.sequence = Some(seq);
            event.timestamp = chrono::Utc.timestamp_opt(1_700_000_000 + seq as i64, 0).unwrap();
            self.events.push(event);
            self.events.last_mut().unwrap()
        }

        fn build(&self, options: TranscriptOptions) -> Transcript {
            TranscriptBuilder::new(options).from_events(&self.session, &self.events)
        }
    }

    fn contents(t: &Transcript) -> Vec<(Role, Option<&str>)> {
        t.messages.iter().map(|m| (m.role, m.content.as_deref())).collect()
    }

    #[test]
    fn streamed_chunks_collapse_into_one_message() {
        let mut log = Log::new();
        log.push(EventKind::MessageSent, json!({"content": "question"}));
        log.push(EventKind::MessageStreamed, json!({"delta": "Hel", "content": "Hel"}));
        log.push(EventKind::TokenUsageUpdated, json!({"input_tokens": 1}));
        log.push(EventKind::MessageStreamed, json!({"content": "lo"}));
        log.push(EventKind::MessageStreamed, json!({"delta": ""}));
        log.push(EventKind::MessageStreamed, json!({"delta": 7}));
        let t = log.build(TranscriptOptions::default());
        assert_eq!(contents(&t), [(Role::User, Some("question")), (Role::Assistant, Some("Hello7"))]);
        // Metadata of the latest contributing chunk.
        let meta = &t.messages[1].metadata;
        assert_eq!(meta["sequence_number"], 6);
        assert_eq!(meta["event_id"], log.events[5].id.as_str());
        assert_eq!(meta["run_id"], log.run.as_str());
        assert_eq!(meta["timestamp"], "2023-11-14T22:13:26Z");
        assert!(t.is_streaming());
        assert_eq!(t.open_stream_text(), Some("Hello7"));
        assert_eq!(t.last_sequence, Some(6));
        assert_eq!(t.last_timestamp, Some(log.events[5].timestamp));
    }

    #[test]
    fn message_received_overrides_buffer() {
        let mut log = Log::new();
        log.push(EventKind::MessageStreamed, json!({"delta": "partial"}));
        log.push(EventKind::MessageReceived, json!({"content": "Full answer", "role": "assistant"}));
        log.push(EventKind::MessageStreamed, json!({"delta": "kept"}));
        log.push(EventKind::MessageReceived, json!({"content": ""}));
        log.push(EventKind::MessageReceived, json!({"content": "no buffer", "role": "ASSISTANT"}));
        let t = log.build(TranscriptOptions::default());
        assert_eq!(
            contents(&t),
            [
                (Role::Assistant, Some("Full answer")),
                (Role::Assistant, Some("kept")),
                (Role::Assistant, Some("no buffer")),
            ]
        );
        // The overriding message keeps the buffer's metadata.
        assert_eq!(t.messages[0].metadata["sequence_number"], 1);
        assert_eq!(t.messages[1].metadata["sequence_number"], 3);
        assert_eq!(t.messages[2].metadata["sequence_number"], 5);
        assert!(!t.is_streaming());
    }

    #[test]
    fn message_received_with_other_role_flushes_first() {
        let mut log = Log::new();
        log.push(EventKind::MessageStreamed, json!({"delta": "thinking"}));
        log.push(EventKind::MessageReceived, json!({"content": "stdout", "role": "tool"}));
        log.push(EventKind::MessageReceived, json!({"content": "x", "role": "bogus"}));
        log.push(EventKind::MessageSent, json!({"content": ""}));
        log.push(EventKind::MessageSent, json!({"content": "sys", "role": "System"}));
        log.push(EventKind::MessageSent, json!({"content": "u", "role": 5}));
        let t = log.build(TranscriptOptions::default());
        assert_eq!(
            contents(&t),
            [
                (Role::Assistant, Some("thinking")),
                (Role::Tool, Some("stdout")),
                (Role::Assistant, Some("x")),
                (Role::System, Some("sys")),
                (Role::User, Some("u")),
            ]
        );
    }

    #[test]
    fn tool_calls_results_and_approvals() {
        let mut log = Log::new();
        log.push(EventKind::MessageStreamed, json!({"delta": "Let me check."}));
        log.push(
            EventKind::ToolCallStarted,
            json!({"tool_call_id": "c1", "tool_name": "bash", "tool_input": {"cmd": "ls"}}),
        );
        log.push(
            EventKind::ToolCallCompleted,
            json!({"tool_call_id": "c1", "tool_name": "bash", "tool_output": {"output": "a.txt"}}),
        );
        log.push(
            EventKind::ToolCallStarted,
            json!({"call_id": "legacy", "name": "x", "arguments": {}, "tool_name": 12, "tool_input": "str"}),
        );
        log.push(
            EventKind::ToolCallFailed,
            json!({"tool_call_id": "c2", "tool_name": "edit", "tool_output": "denied", "output": "alias"}),
        );
        log.push(
            EventKind::ToolApprovalRequested,
            json!({"tool_call_id": "c3", "tool_name": "rm", "policy_name": "p"}),
        );
        log.push(EventKind::ToolApprovalGranted, json!({"tool_name": "rm"}));
        log.push(EventKind::ToolCallCompleted, json!({"tool_call_id": "c4", "tool_output": null}));
        let t = log.build(TranscriptOptions::default());
        let m = &t.messages;
        assert_eq!(m.len(), 7);
        assert_eq!((m[0].role, m[0].content.as_deref()), (Role::Assistant, Some("Let me check.")));

        assert_eq!(m[1].role, Role::Assistant);
        assert_eq!(m[1].content, None);
        assert_eq!(m[1].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(m[1].tool_name.as_deref(), Some("bash"));
        assert_eq!(Value::Object(m[1].tool_input.clone().unwrap()), json!({"cmd": "ls"}));

        assert_eq!(m[2].role, Role::Tool);
        assert_eq!(m[2].tool_output, Some(json!({"output": "a.txt"})));

        // Legacy aliases are ignored; non-string names are stringified; non-object input dropped.
        assert_eq!(m[3].tool_call_id, None);
        assert_eq!(m[3].tool_name.as_deref(), Some("12"));
        assert_eq!(m[3].tool_input, None);

        assert_eq!(m[4].role, Role::Tool);
        assert_eq!(m[4].tool_output, Some(json!("denied")));

        assert_eq!(m[5].role, Role::Tool);
        assert_eq!(m[5].tool_call_id.as_deref(), Some("c3"));
        assert_eq!(m[5].tool_name.as_deref(), Some("rm"));
        assert_eq!(m[5].tool_output, Some(json!("[Execution paused: awaiting human approval]")));
        assert_eq!(m[6].tool_output, None);
        assert_eq!(m[6].tool_name, None);
    }

    #[test]
    fn sort_order_and_foreign_sessions() {
        let session = SessionId::new();
        let at = |s: i64| chrono::Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let sent = |text: &str, seq: Option<u64>, ts: i64| {
            let mut e = Event::new(EventKind::MessageSent, session.clone()).with_data("content", text);
            e.sequence = seq;
            e.timestamp = at(ts);
            e
        };
        let mut foreign = Event::new(EventKind::MessageSent, SessionId::new()).with_data("content", "other");
        foreign.sequence = Some(99);
        let events = vec![
            sent("no-seq late", None, 5),
            sent("third", Some(3), 0),
            foreign,
            sent("no-seq early", None, 1),
            sent("first", Some(1), 9),
            sent("second", Some(2), 9),
        ];
        let t = TranscriptBuilder::default().from_events(&session, &events);
        let texts: Vec<_> = t.messages.iter().map(|m| m.content.as_deref().unwrap()).collect();
        assert_eq!(texts, ["first", "second", "third", "no-seq early", "no-seq late"]);
        assert_eq!(t.last_sequence, Some(3));
        assert_eq!(t.last_timestamp, Some(at(5)));

        // Equal sequence and timestamp: by id, then input position.
        let mut a = sent("a", Some(1), 0);
        let mut b = sent("b", Some(1), 0);
        if a.id > b.id {
            std::mem::swap(&mut a.id, &mut b.id);
        }
        let t = TranscriptBuilder::default().from_events(&session, &[b, a]);
        let texts: Vec<_> = t.messages.iter().map(|m| m.content.as_deref().unwrap()).collect();
        assert_eq!(texts, ["a", "b"]);

        let empty = TranscriptBuilder::default().from_events::<Event>(&session, &[]);
        assert_eq!(empty, Transcript::new(session));
    }

    #[test]
    fn event_metadata_is_merged_under_canonical_keys() {
        let mut log = Log::new();
        let e = log.push(EventKind::MessageSent, json!({"content": "hi"}));
        e.metadata.insert("trace".into(), json!("t-1"));
        e.metadata.insert("event_id".into(), json!("spoofed"));
        let t = log.build(TranscriptOptions::default());
        let meta = &t.messages[0].metadata;
        assert_eq!(meta["trace"], "t-1");
        assert_eq!(meta["event_id"], log.events[0].id.as_str());
    }

    fn texts(n: usize, len: usize) -> Vec<Message> {
        (0..n).map(|i| Message::new(Role::User, format!("{i}").repeat(len))).collect()
    }

    #[test]
    fn truncation_max_messages_keeps_newest() {
        let kept = TranscriptOptions::default().max_messages(2).truncate(texts(5, 1));
        assert_eq!(kept, texts(5, 1)[3..]);
        // Zero means unbounded.
        assert_eq!(TranscriptOptions::default().max_messages(0).truncate(texts(5, 1)).len(), 5);
        assert!(TranscriptOptions::default().max_messages(0).is_unbounded());
        assert!(!TranscriptOptions::default().max_messages(1).is_unbounded());
    }

    #[test]
    fn truncation_max_chars_takes_precedence_over_tokens() {
        let o = TranscriptOptions::default().max_chars(6).max_tokens_approx(100);
        assert_eq!(o.char_budget(), Some(6));
        assert_eq!(o.truncate(texts(5, 3)).len(), 2);
        let o = TranscriptOptions::default().max_tokens_approx(2);
        assert_eq!(o.char_budget(), Some(8));
        assert_eq!(o.truncate(texts(5, 3)).len(), 2);
        let o = o.chars_per_token(3);
        assert_eq!(o.char_budget(), Some(6));
        // max_chars of 0 falls back to the token budget.
        let o = TranscriptOptions::default().max_chars(0).max_tokens_approx(3);
        assert_eq!(o.char_budget(), Some(12));
        assert_eq!(TranscriptOptions::default().chars_per_token(0).max_tokens_approx(3).char_budget(), None);
        assert_eq!(TranscriptOptions::default().max_tokens_approx(usize::MAX).char_budget(), Some(usize::MAX));
    }

    #[test]
    fn truncation_stops_at_first_message_that_does_not_fit() {
        let messages = vec![
            Message::new(Role::User, "a"),
            Message::new(Role::User, "bbbbbbbbbb"),
            Message::new(Role::User, "cc"),
            Message::new(Role::User, "dd"),
        ];
        let kept = TranscriptOptions::default().max_chars(5).truncate(messages.clone());
        assert_eq!(kept, messages[2..]);
        // Both bounds: max_messages first.
        let kept = TranscriptOptions::default().max_messages(1).max_chars(5).truncate(messages.clone());
        assert_eq!(kept, messages[3..]);
        // The newest does not fit: nothing is kept.
        let kept = TranscriptOptions::default().max_chars(1).truncate(messages);
        assert!(kept.is_empty());
    }

    #[test]
    fn char_count_rules() {
        assert_eq!(Message::new(Role::User, "日本語").char_count(), 3);
        let call = Message {
            tool_name: Some("bash".into()),
            tool_output: Some(json!("a very long output")),
            ..Message::empty(Role::Tool)
        };
        assert_eq!(call.char_count(), 4);
        assert_eq!(Message::empty(Role::Tool).char_count(), 0);
        let both = Message { tool_name: Some("bash".into()), ..Message::new(Role::Assistant, "") };
        assert_eq!(both.char_count(), 0);
    }

    #[test]
    fn truncation_applies_to_built_transcripts() {
        let mut log = Log::new();
        log.push(EventKind::MessageSent, json!({"content": "0123456789"}));
        log.push(EventKind::MessageStreamed, json!({"delta": "abc"}));
        log.push(EventKind::MessageStreamed, json!({"delta": "def"}));
        let t = log.build(TranscriptOptions::default().max_chars(8));
        assert_eq!(contents(&t), [(Role::Assistant, Some("abcdef"))]);
        // The open message alone is too long: nothing visible, but the stream is remembered.
        let t = log.build(TranscriptOptions::default().max_chars(5));
        assert!(t.messages.is_empty());
        assert_eq!(t.open_stream_text(), Some("abcdef"));
    }

    #[test]
    fn update_continues_an_open_stream_and_skips_old_events() {
        let mut log = Log::new();
        log.push(EventKind::MessageSent, json!({"content": "q"}));
        log.push(EventKind::MessageStreamed, json!({"delta": "An"}));
        log.push(EventKind::MessageStreamed, json!({"delta": "swer"}));
        log.push(EventKind::MessageReceived, json!({"content": "Answer."}));
        let builder = TranscriptBuilder::default();
        let mut t = builder.from_events(&log.session, &log.events[..2]);
        assert_eq!(contents(&t), [(Role::User, Some("q")), (Role::Assistant, Some("An"))]);
        // Re-sending already applied events (sequence <= last) changes nothing.
        builder.update(&mut t, &log.events[..2]);
        assert_eq!(t, builder.from_events(&log.session, &log.events[..2]));
        builder.update(&mut t, &log.events[1..3]);
        assert_eq!(contents(&t), [(Role::User, Some("q")), (Role::Assistant, Some("Answer"))]);
        builder.update(&mut t, &log.events[3..]);
        assert_eq!(contents(&t), [(Role::User, Some("q")), (Role::Assistant, Some("Answer."))]);
        assert_eq!(t, log.build(TranscriptOptions::default()));
        assert!(!t.is_streaming());

        // Foreign sessions are ignored; nothing new leaves the transcript unchanged.
        let before = t.clone();
        let mut foreign = Event::new(EventKind::MessageSent, SessionId::new()).with_data("content", "x");
        foreign.sequence = Some(10);
        builder.update(&mut t, &[foreign]);
        assert_eq!(t, before);
    }

    #[test]
    fn update_applies_events_without_sequence() {
        let mut log = Log::new();
        log.push(EventKind::MessageSent, json!({"content": "q"}));
        let builder = TranscriptBuilder::default();
        let mut t = builder.from_events(&log.session, &log.events);
        let live = Event::new(EventKind::MessageReceived, log.session.clone()).with_data("content", "a");
        builder.update(&mut t, std::slice::from_ref(&live));
        assert_eq!(contents(&t), [(Role::User, Some("q")), (Role::Assistant, Some("a"))]);
        assert_eq!(t.last_sequence, Some(1));
        assert_eq!(t.last_timestamp, Some(live.timestamp));
    }

    #[test]
    fn update_with_override_that_shrinks_the_stream_under_a_budget() {
        // A long open message hides older messages; a shorter final message brings them back.
        let mut log = Log::new();
        log.push(EventKind::MessageSent, json!({"content": "aaaa"}));
        log.push(EventKind::MessageStreamed, json!({"delta": "bbbbbbbbb"}));
        log.push(EventKind::MessageReceived, json!({"content": "c"}));
        let options = TranscriptOptions::default().max_chars(10);
        let builder = TranscriptBuilder::new(options);
        let mut t = builder.from_events(&log.session, &log.events[..2]);
        assert_eq!(contents(&t), [(Role::Assistant, Some("bbbbbbbbb"))]);
        builder.update(&mut t, &log.events[2..]);
        assert_eq!(contents(&t), [(Role::User, Some("aaaa")), (Role::Assistant, Some("c"))]);
        assert_eq!(t, log.build(options));
    }

    #[test]
    fn transcript_serde_round_trip_keeps_open_stream() {
        let mut log = Log::new();
        log.push(EventKind::MessageSent, json!({"content": "aaaa"}));
        log.push(EventKind::ToolCallStarted, json!({"tool_name": "bash", "tool_input": {"x": 1}}));
        log.push(EventKind::ToolCallCompleted, json!({"tool_name": "bash", "tool_output": [1, 2]}));
        log.push(EventKind::MessageStreamed, json!({"delta": "bbbbbbbbb"}));
        let options = TranscriptOptions::default().max_chars(10);
        let mut t = log.build(options);
        t.metadata.insert("cache".into(), json!(true));
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["open_stream"]["text"], "bbbbbbbbb");
        let back: Transcript = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);

        let options_json = serde_json::to_value(options).unwrap();
        assert_eq!(options_json, json!({"max_chars": 10, "chars_per_token": 4}));
        let back: TranscriptOptions = serde_json::from_value(json!({"max_messages": 3})).unwrap();
        assert_eq!(back, TranscriptOptions::default().max_messages(3));

        // A transcript written by something that knows nothing of open streams.
        let plain: Transcript = serde_json::from_value(json!({
            "session_id": log.session.as_str(),
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap();
        assert_eq!(plain.messages.len(), 1);
        assert!(!plain.is_streaming());
    }

    // ---- properties ----------------------------------------------------------------------

    #[derive(Clone, Debug)]
    enum Op {
        Sent(Option<&'static str>, String),
        Streamed(Option<String>, Option<String>),
        Received(Option<&'static str>, String),
        ToolStarted(String),
        ToolCompleted(String),
        ToolFailed(String),
        Approval(String),
        RunStarted,
        Usage,
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-zé ]{0,6}"
    }

    fn role() -> impl Strategy<Value = Option<&'static str>> {
        proptest::option::of(prop_oneof![
            Just("assistant"),
            Just("user"),
            Just("tool"),
            Just("system"),
            Just("ASSISTANT"),
            Just("bogus"),
        ])
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (role(), text()).prop_map(|(r, t)| Op::Sent(r, t)),
            4 => (proptest::option::of(text()), proptest::option::of(text()))
                .prop_map(|(d, c)| Op::Streamed(d, c)),
            2 => (role(), text()).prop_map(|(r, t)| Op::Received(r, t)),
            1 => "[a-z]{1,4}".prop_map(Op::ToolStarted),
            1 => "[a-z]{1,4}".prop_map(Op::ToolCompleted),
            1 => "[a-z]{1,4}".prop_map(Op::ToolFailed),
            1 => "[a-z]{1,4}".prop_map(Op::Approval),
            1 => Just(Op::RunStarted),
            1 => Just(Op::Usage),
        ]
    }

    fn events_of(log: &mut Log, ops: &[Op]) {
        for (i, op) in ops.iter().enumerate() {
            push_op(log, i, op);
        }
    }

    /// Appends the event of `op`, the `i`-th op of its list.
    fn push_op(log: &mut Log, i: usize, op: &Op) {
        {
            let id = format!("call{i}");
            let (kind, data) = match op {
                Op::Sent(role, content) => (EventKind::MessageSent, json!({"role": role, "content": content})),
                Op::Streamed(delta, content) => {
                    (EventKind::MessageStreamed, json!({"delta": delta, "content": content}))
                }
                Op::Received(role, content) => (EventKind::MessageReceived, json!({"role": role, "content": content})),
                Op::ToolStarted(name) => {
                    (EventKind::ToolCallStarted, json!({"tool_call_id": id, "tool_name": name, "tool_input": {"i": i}}))
                }
                Op::ToolCompleted(name) => (
                    EventKind::ToolCallCompleted,
                    json!({"tool_call_id": id, "tool_name": name, "tool_output": {"ok": i}}),
                ),
                Op::ToolFailed(name) => {
                    (EventKind::ToolCallFailed, json!({"tool_call_id": id, "tool_name": name, "tool_output": "err"}))
                }
                Op::Approval(name) => {
                    (EventKind::ToolApprovalRequested, json!({"tool_call_id": id, "tool_name": name}))
                }
                Op::RunStarted => (EventKind::RunStarted, json!({"model": "m"})),
                Op::Usage => (EventKind::TokenUsageUpdated, json!({"input_tokens": i})),
            };
            log.push(kind, data);
        }
    }

    /// Events that must not touch a transcript.
    #[derive(Clone, Debug)]
    enum Neutral {
        /// A raw line as adapters stored it before `provider_raw` existed.
        LegacyRaw(String),
        /// A raw line.
        Raw(String),
        /// A reasoning chunk.
        ReasoningChunk(String),
        /// A whole (or redacted) reasoning block.
        ReasoningBlock(String, bool),
    }

    fn neutral_op() -> impl Strategy<Value = Neutral> {
        prop_oneof![
            text().prop_map(Neutral::LegacyRaw),
            text().prop_map(Neutral::Raw),
            text().prop_map(Neutral::ReasoningChunk),
            (text(), any::<bool>()).prop_map(|(t, r)| Neutral::ReasoningBlock(t, r)),
        ]
    }

    fn push_neutral(log: &mut Log, op: &Neutral) {
        match op {
            Neutral::LegacyRaw(line) => {
                let e = log.push(
                    EventKind::MessageReceived,
                    json!({"role": "system", "content": "", "raw": line, "raw_type": "rate_limit_event"}),
                );
                e.metadata.insert("raw".into(), true.into());
                e.metadata.insert("raw_reason".into(), "unknown_type".into());
            }
            Neutral::Raw(line) => {
                log.push(EventKind::ProviderRaw, json!({"raw": line, "raw_type": "todo_list"}))
                    .metadata
                    .insert("raw".into(), true.into());
            }
            Neutral::ReasoningChunk(chunk) => {
                log.push(EventKind::ReasoningStreamed, json!({"content": chunk, "delta": chunk}));
            }
            Neutral::ReasoningBlock(text, redacted) => {
                let content = if *redacted { "" } else { text.as_str() };
                log.push(EventKind::ReasoningCompleted, json!({"content": content, "redacted": redacted}));
            }
        }
    }

    /// The messages without their metadata (which names events and sequence numbers).
    fn conversation(t: &Transcript) -> Vec<Message> {
        t.messages.iter().cloned().map(|m| Message { metadata: JsonMap::new(), ..m }).collect()
    }

    fn options() -> impl Strategy<Value = TranscriptOptions> {
        prop_oneof![
            1 => Just(TranscriptOptions::default()),
            3 => (
                proptest::option::of(0usize..6),
                proptest::option::of(0usize..30),
                proptest::option::of(0usize..8),
                0usize..5,
            )
                .prop_map(|(messages, chars, tokens, cpt)| TranscriptOptions {
                    max_messages: messages,
                    max_chars: chars,
                    max_tokens_approx: tokens,
                    chars_per_token: cpt,
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Building from a prefix and updating with the rest equals a full rebuild, for every
        /// split point, with and without bounds, also through a serde round trip.
        #[test]
        fn incremental_update_equals_full_rebuild(
            ops in proptest::collection::vec(op(), 0..24),
            options in options(),
        ) {
            let mut log = Log::new();
            events_of(&mut log, &ops);
            let builder = TranscriptBuilder::new(options);
            let full = builder.from_events(&log.session, &log.events);
            for k in 0..=log.events.len() {
                let mut t = builder.from_events(&log.session, &log.events[..k]);
                let json = serde_json::to_string(&t).unwrap();
                let mut restored: Transcript = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&restored, &t);
                builder.update(&mut t, &log.events[k..]);
                prop_assert_eq!(&t, &full, "split at {}", k);
                // Overlapping re-delivery is harmless.
                builder.update(&mut restored, &log.events[k.saturating_sub(2)..]);
                prop_assert_eq!(&restored, &full, "overlapping split at {}", k);
            }
        }

        /// Event-by-event updates equal a full rebuild.
        #[test]
        fn one_event_at_a_time_equals_full_rebuild(
            ops in proptest::collection::vec(op(), 0..24),
            options in options(),
        ) {
            let mut log = Log::new();
            events_of(&mut log, &ops);
            let builder = TranscriptBuilder::new(options);
            let mut t = Transcript::new(log.session.clone());
            for event in &log.events {
                builder.update(&mut t, std::slice::from_ref(event));
            }
            prop_assert_eq!(t, builder.from_events(&log.session, &log.events));
        }

        /// Raw provider lines (the legacy `message_received` form with `metadata.raw`, and
        /// `provider_raw`) and reasoning events never change a transcript, wherever they land.
        #[test]
        fn raw_and_reasoning_events_never_change_a_transcript(
            ops in proptest::collection::vec(op(), 0..24),
            neutral in proptest::collection::vec((0usize..25, neutral_op()), 1..6),
            options in options(),
        ) {
            let mut plain = Log::new();
            events_of(&mut plain, &ops);
            let mut mixed = Log::new();
            mixed.session = plain.session.clone();
            let mut pending = neutral;
            pending.sort_by_key(|(at, _)| *at);
            let mut pending = pending.into_iter().peekable();
            for (i, op) in ops.iter().enumerate() {
                while let Some((_, n)) = pending.next_if(|(at, _)| *at <= i) {
                    push_neutral(&mut mixed, &n);
                }
                push_op(&mut mixed, i, op);
            }
            for (_, n) in pending {
                push_neutral(&mut mixed, &n);
            }
            let a = plain.build(options);
            let b = mixed.build(options);
            prop_assert_eq!(conversation(&a), conversation(&b));
            prop_assert_eq!(a.open_stream_text(), b.open_stream_text());
        }

        /// Bounds keep a suffix of the unbounded transcript, within the bounds.
        #[test]
        fn bounded_transcript_is_a_suffix_within_bounds(
            ops in proptest::collection::vec(op(), 0..24),
            options in options(),
        ) {
            let mut log = Log::new();
            events_of(&mut log, &ops);
            let unbounded = log.build(TranscriptOptions::default());
            let bounded = log.build(options);
            prop_assert!(unbounded.messages.ends_with(&bounded.messages));
            if let Some(max) = options.max_messages.filter(|&n| n > 0) {
                prop_assert!(bounded.messages.len() <= max);
            }
            if let Some(budget) = options.char_budget() {
                let used: usize = bounded.messages.iter().map(Message::char_count).sum();
                prop_assert!(used <= budget);
            }
            prop_assert_eq!(bounded.last_sequence, unbounded.last_sequence);
            prop_assert_eq!(bounded.open_stream_text(), unbounded.open_stream_text());
            // Never an empty text message from the fold.
            for m in &unbounded.messages {
                prop_assert_ne!(m.content.as_deref(), Some(""));
            }
        }
    }
}
