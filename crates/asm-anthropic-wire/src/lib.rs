//! The Anthropic Messages shapes that Claude Code's `--output-format stream-json` and Amp's
//! "Claude Code compatible" `--stream-json` share (`spec/provider-clis.md` sections 1 and 3):
//!
//! * assistant content blocks (`text`, `thinking`, `redacted_thinking`, `tool_use`) as
//!   normalized events, and the conversation state they build ([`Turn`]: the current turn's
//!   text, the tool calls by id);
//! * `tool_result` blocks of user lines as `tool_call_completed` / `tool_call_failed`
//!   ([`ToolResult`]) with the name and input of the call they answer;
//! * usage in the Messages shape ([`usage`]), tool result content ([`tool_result_text`]);
//! * the line framing both share ([`StreamLines`]: JSON objects, plain text kept for error
//!   classification, the session id from the first line that has one);
//! * the `result` line both print ([`ResultLine`]);
//! * the stream-json user message both read on stdin ([`stdin_message`]).
//!
//! Pure functions and values over `serde_json`: no I/O, no process, no CLI flag. It is not an
//! adapter; `asm-provider-claude` and `asm-provider-amp` both use it, and neither depends on
//! the other.
//!
//! ```
//! use asm_anthropic_wire::Turn;
//! use asm_core::EventKind;
//! let mut turn = Turn::default();
//! let message = serde_json::json!({"content": [
//!     {"type": "text", "text": "Let me look."},
//!     {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
//! ]});
//! let kinds: Vec<EventKind> = turn.assistant_blocks(&message, false).map(|e| e.kind).collect();
//! assert_eq!(kinds, [EventKind::MessageStreamed, EventKind::ToolCallStarted]);
//! assert_eq!(turn.text(), ""); // a tool call starts a new turn
//! let user = serde_json::json!({"content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"}]});
//! let result = turn.tool_results(&user).next().unwrap();
//! assert_eq!((result.name.as_str(), result.output.as_str()), ("Bash", Some("a.txt")));
//! ```
#![deny(missing_docs)]

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use asm_core::{EventKind, JsonMap, TokenUsage, keys};
use asm_ports::ProviderEvent;

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Token usage in the Anthropic Messages shape (`input_tokens`, `output_tokens`,
/// `cache_read_input_tokens`, `cache_creation_input_tokens`); `None` unless `v` is an object.
///
/// ```
/// let u = asm_anthropic_wire::usage(&serde_json::json!({"input_tokens": 3, "cache_read_input_tokens": 2})).unwrap();
/// assert_eq!((u.input_tokens, u.cache_read_tokens, u.output_tokens), (3, 2, 0));
/// ```
pub fn usage(v: &Value) -> Option<TokenUsage> {
    let u = v.as_object()?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(TokenUsage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_read_tokens: n("cache_read_input_tokens"),
        cache_creation_tokens: n("cache_creation_input_tokens"),
    })
}

/// A tool result's content as the canonical `tool_output`: a string stays a string, an array of
/// text blocks becomes their text joined by newlines, `null` an empty string, anything else is
/// kept as it is.
///
/// ```
/// use serde_json::json;
/// let blocks = json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
/// assert_eq!(asm_anthropic_wire::tool_result_text(&blocks), json!("a\nb"));
/// ```
pub fn tool_result_text(v: &Value) -> Value {
    match v {
        Value::Array(blocks) => {
            let texts: Vec<&str> = blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
            if texts.len() == blocks.len() { Value::String(texts.join("\n")) } else { v.clone() }
        }
        Value::Null => Value::String(String::new()),
        other => other.clone(),
    }
}

/// The stream-json user message (one line, newline-terminated) that Claude Code
/// (`--input-format stream-json`) and Amp (`--stream-json-input`) read from stdin.
///
/// ```
/// let line = asm_anthropic_wire::stdin_message("hi");
/// let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
/// assert_eq!(v["type"], "user");
/// assert_eq!(v["message"]["content"][0]["text"], "hi");
/// ```
pub fn stdin_message(prompt: &str) -> String {
    let msg = json!({
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": prompt}]}
    });
    format!("{msg}\n")
}

/// A `tool_use` block's input as the canonical `tool_input` object: an object as it is,
/// `null` or missing as `{}`, anything else as `{value}`.
fn tool_input(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(Value::Null) | None => Value::Object(Map::new()),
        Some(other) => json!({ "value": other }),
    }
}

/// The conversation state of one run built from its content blocks: the text of the current
/// turn (since the last tool call) and the tool calls by id.
#[derive(Debug, Default)]
pub struct Turn {
    text: String,
    tools: HashMap<String, (String, Value)>,
    calls: Vec<Value>,
}

impl Turn {
    /// The events of the content blocks of an assistant `message`, in order:
    ///
    /// | block | event |
    /// |---|---|
    /// | `text` (non-empty) | `message_streamed {content, delta}`, unless `text_streamed` (the text already arrived as deltas, see [`push_text`](Self::push_text)) |
    /// | `thinking` | `reasoning_completed {content, redacted: false}` |
    /// | `redacted_thinking` | `reasoning_completed {content: "", redacted: true}` (the encrypted data is not kept) |
    /// | `tool_use` | `tool_call_started {tool_call_id, tool_name, tool_input}`; the call is remembered and the turn's text starts over |
    /// | anything else (server tool blocks, future types) | none |
    pub fn assistant_blocks<'a>(
        &'a mut self,
        message: &'a Value,
        text_streamed: bool,
    ) -> impl Iterator<Item = ProviderEvent> + 'a {
        let blocks = message.get("content").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        blocks.iter().filter_map(move |block| self.assistant_block(block, text_streamed))
    }

    fn assistant_block(&mut self, block: &Value, text_streamed: bool) -> Option<ProviderEvent> {
        match str_of(block, "type")? {
            "text" => {
                let text = str_of(block, "text").filter(|t| !t.is_empty() && !text_streamed)?;
                Some(self.push_text(text))
            }
            kind @ ("thinking" | "redacted_thinking") => {
                let redacted = kind == "redacted_thinking";
                let text = if redacted { "" } else { str_of(block, "thinking").unwrap_or_default() };
                Some(
                    ProviderEvent::new(EventKind::ReasoningCompleted)
                        .data(keys::CONTENT, text)
                        .data(keys::REDACTED, redacted),
                )
            }
            "tool_use" => {
                let call_id = str_of(block, "id").unwrap_or("unknown").to_owned();
                let name = str_of(block, "name").unwrap_or("unknown").to_owned();
                let input = tool_input(block.get("input"));
                self.text.clear();
                self.tools.insert(call_id.clone(), (name.clone(), input.clone()));
                self.calls.push(json!({"id": call_id, "name": name, "input": input}));
                Some(
                    ProviderEvent::new(EventKind::ToolCallStarted)
                        .data(keys::TOOL_CALL_ID, call_id)
                        .data(keys::TOOL_NAME, name)
                        .data(keys::TOOL_INPUT, input),
                )
            }
            _ => None,
        }
    }

    /// Appends streamed assistant text to the turn and returns its `message_streamed
    /// {content, delta}` event.
    pub fn push_text(&mut self, text: &str) -> ProviderEvent {
        self.text.push_str(text);
        ProviderEvent::new(EventKind::MessageStreamed).data(keys::CONTENT, text).data(keys::DELTA, text)
    }

    /// The `tool_result` blocks of a user `message`, each with the name and input of the call
    /// it answers (`unknown` / `{}` for a call never seen).
    pub fn tool_results<'a>(&'a self, message: &'a Value) -> impl Iterator<Item = ToolResult> + 'a {
        let blocks = message.get("content").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        blocks.iter().filter(|b| str_of(b, "type") == Some("tool_result")).map(|block| {
            let tool_use_id = str_of(block, "tool_use_id").unwrap_or("unknown").to_owned();
            let (name, input) = self
                .tools
                .get(&tool_use_id)
                .cloned()
                .unwrap_or_else(|| ("unknown".to_owned(), Value::Object(Map::new())));
            ToolResult {
                tool_use_id,
                name,
                input,
                output: tool_result_text(block.get("content").unwrap_or(&Value::Null)),
                is_error: block.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            }
        })
    }

    /// The text of the current turn (since the last tool call): the answer when the result
    /// line carries none.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The run output's `extra`: `tool_calls` (`[{id, name, input}]`) when there were any.
    pub fn output_extra(&self) -> JsonMap {
        let mut extra = JsonMap::new();
        if !self.calls.is_empty() {
            extra.insert("tool_calls".to_owned(), Value::Array(self.calls.clone()));
        }
        extra
    }
}

/// One `tool_result` block, matched with its call ([`Turn::tool_results`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ToolResult {
    /// The id of the call it answers.
    pub tool_use_id: String,
    /// The call's tool name.
    pub name: String,
    /// The call's input.
    pub input: Value,
    /// The result ([`tool_result_text`]).
    pub output: Value,
    /// `is_error` of the block.
    pub is_error: bool,
}

impl ToolResult {
    /// `tool_call_completed`, or `tool_call_failed` with `is_error: true`, with
    /// `{tool_call_id, tool_name, tool_input, tool_output}`.
    pub fn event(&self) -> ProviderEvent {
        let kind = if self.is_error { EventKind::ToolCallFailed } else { EventKind::ToolCallCompleted };
        let event = ProviderEvent::new(kind)
            .data(keys::TOOL_CALL_ID, self.tool_use_id.clone())
            .data(keys::TOOL_NAME, self.name.clone())
            .data(keys::TOOL_INPUT, self.input.clone())
            .data(keys::TOOL_OUTPUT, self.output.clone());
        if self.is_error { event.data(keys::IS_ERROR, true) } else { event }
    }
}

/// The final `result` line (`type: "result"`), as far as both CLIs print it.
///
/// ```
/// use asm_anthropic_wire::ResultLine;
/// let line = serde_json::json!({"type": "result", "subtype": "success", "is_error": true, "result": "API Error: 500"});
/// let r = ResultLine::parse(&line);
/// assert!(r.says_failure()); // `is_error` wins over the subtype
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ResultLine {
    /// `subtype` (`success`, `error_max_turns`, `error_during_execution`, ...).
    pub subtype: String,
    /// `is_error` as printed (`None` when missing or not a boolean).
    pub is_error: Option<bool>,
    /// `result`: the final text.
    pub text: Option<String>,
    /// `error` (Amp's error text).
    pub error: Option<String>,
    /// `errors[]` (Claude Code's error texts).
    pub errors: Vec<String>,
    /// `api_error_status`: the HTTP status of an API error.
    pub api_error_status: Option<u64>,
    /// `num_turns`.
    pub turns: Option<u32>,
    /// `duration_ms`.
    pub duration_ms: Option<u64>,
    /// `total_cost_usd`.
    pub cost_usd: Option<f64>,
    /// `usage` (the run's totals, [`usage`]).
    pub usage: Option<TokenUsage>,
    /// `stop_reason`.
    pub stop_reason: Option<String>,
}

impl ResultLine {
    /// Reads a result line; missing or mistyped fields stay empty.
    pub fn parse(v: &Value) -> Self {
        Self {
            subtype: str_of(v, "subtype").unwrap_or_default().to_owned(),
            is_error: v.get("is_error").and_then(Value::as_bool),
            text: str_of(v, "result").map(str::to_owned),
            error: match v.get("error") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            },
            errors: v
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned)).collect())
                .unwrap_or_default(),
            api_error_status: v.get("api_error_status").and_then(Value::as_u64),
            turns: v.get("num_turns").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()),
            duration_ms: v.get("duration_ms").and_then(Value::as_u64),
            cost_usd: v.get("total_cost_usd").and_then(Value::as_f64),
            usage: v.get("usage").and_then(usage),
            stop_reason: str_of(v, "stop_reason").map(str::to_owned),
        }
    }

    /// Whether the line itself says the run failed: `is_error: true` (whatever the subtype:
    /// both CLIs print `subtype: success` with `is_error: true` for API errors), an `error_*`
    /// subtype, an `error` text, a non-empty `errors[]` or an `api_error_status`. Any one is
    /// enough; a missing `is_error` is not a success on its own.
    pub fn says_failure(&self) -> bool {
        self.is_error == Some(true)
            || self.subtype.starts_with("error")
            || self.error.as_deref().is_some_and(|e| !e.trim().is_empty())
            || !self.errors.is_empty()
            || self.api_error_status.is_some()
    }

    /// The first non-blank of `error`, `errors[]` (joined by `; `) and `result`, in the order
    /// `texts` names them (each CLI puts its error elsewhere).
    pub fn message(&self, texts: &[ResultText]) -> Option<String> {
        texts.iter().find_map(|t| match t {
            ResultText::Error => self.error.clone().filter(|e| !e.trim().is_empty()),
            ResultText::Errors => (!self.errors.is_empty()).then(|| self.errors.join("; ")),
            ResultText::Result => self.text.clone().filter(|t| !t.trim().is_empty()),
        })
    }
}

/// Where a [`ResultLine`] carries its error text ([`ResultLine::message`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResultText {
    /// `error`.
    Error,
    /// `errors[]`.
    Errors,
    /// `result`.
    Result,
}

/// How much non-JSON stdout [`StreamLines`] keeps for classifying failures.
pub const MAX_PLAIN_TEXT: usize = 4096;

/// The line framing of stream-json output: each line is a JSON object with a `type`, or plain
/// text (a CLI's text-mode error, a login prompt), kept (bounded) for error classification.
/// The session id (`session_id`, an Amp thread id `T-...` for Amp) is the first non-empty one
/// printed.
///
/// ```
/// let mut lines = asm_anthropic_wire::StreamLines::default();
/// assert!(lines.read(r#"{"type":"system","session_id":"s-1"}"#).is_some());
/// assert!(lines.read("Error: 401 Unauthorized").is_none());
/// assert_eq!((lines.session_id(), lines.count()), (Some("s-1"), 2));
/// assert_eq!(lines.first_line(""), Some("Error: 401 Unauthorized"));
/// ```
#[derive(Debug, Default)]
pub struct StreamLines {
    session_id: Option<String>,
    plain_text: String,
    count: u64,
}

impl StreamLines {
    /// Reads one line: the JSON object, or `None` for anything else (then kept as plain
    /// text).
    pub fn read(&mut self, line: &str) -> Option<Value> {
        self.count += 1;
        let value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                if self.plain_text.len() < MAX_PLAIN_TEXT {
                    self.plain_text.push_str(line);
                    self.plain_text.push('\n');
                }
                return None;
            }
        };
        if self.session_id.is_none()
            && let Some(id) = str_of(&value, "session_id").filter(|s| !s.is_empty())
        {
            self.session_id = Some(id.to_owned());
        }
        Some(value)
    }

    /// The session id seen so far.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The lines read.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The non-JSON output (at most about [`MAX_PLAIN_TEXT`] bytes).
    pub fn plain_text(&self) -> &str {
        &self.plain_text
    }

    /// The first non-blank line of `stderr`, else of the plain text: what a failed run says.
    pub fn first_line<'a>(&'a self, stderr: &'a str) -> Option<&'a str> {
        stderr.lines().chain(self.plain_text.lines()).map(str::trim).find(|l| !l.is_empty())
    }
}
