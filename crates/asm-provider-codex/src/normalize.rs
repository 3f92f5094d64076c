//! [`CodexNormalizer`]: `codex exec --json` lines → normalized events and the outcome.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use asm_core::{
    Error, ErrorCode, EventKind, JsonMap, ProviderErrorKind, ProviderName, RunOutput, StderrLimits, TokenUsage,
    UsageMode, keys,
};
use asm_ports::{ExecuteOutcome, ProviderEvent};
use asm_provider_cli::{
    ExitInfo, classify_error_text, classify_http_status, error_event, provider_failure, raw_event, usage_event,
};

/// Item types that are not tool calls (spec 9.3). The ones with a mapping of their own
/// (`agent_message`, `reasoning`, `error`) are handled first; the rest (`todo_list`, ...) become
/// raw events.
const NON_TOOL_ITEMS: &[&str] = &[
    "agent_message",
    "reasoning",
    "user_message",
    "image_view",
    "review_mode",
    "todo_list",
    "error",
    "ghost_snapshot",
    "compaction",
];

/// Prefix of the transient "waiting for network" error lines Codex prints while it retries.
const RECONNECTING: &str = "Reconnecting...";

/// stderr lines Codex prints on every run (harmless; never the reason of a failure).
const STDERR_NOISE: &[&str] =
    &["WARNING: proceeding, even though we could not create PATH aliases", "Reading additional input from stdin"];

/// How the thread-cumulative usage Codex reports relates to this run (Codex prints the
/// thread's totals in `turn.completed`, not the turn's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageBaseline {
    /// A new thread: its totals are the run's own.
    #[default]
    NewThread,
    /// A resumed thread whose totals before this run are known (recorded by the previous
    /// run): they are subtracted.
    Resumed(TokenUsage),
    /// A resumed thread without a recorded total: the usage stays thread-cumulative
    /// (`usage_scope: "thread_cumulative"`).
    Unknown,
}

impl UsageBaseline {
    /// The run's share of `thread` and the scope label of the result.
    fn apply(self, thread: TokenUsage) -> (TokenUsage, &'static str) {
        match self {
            UsageBaseline::NewThread => (thread, self.scope()),
            UsageBaseline::Resumed(before) => (usage_since(thread, before), self.scope()),
            UsageBaseline::Unknown => (thread, self.scope()),
        }
    }

    /// `"run"` when the reported usage is the run's own, `"thread_cumulative"` otherwise.
    pub const fn scope(self) -> &'static str {
        match self {
            UsageBaseline::NewThread | UsageBaseline::Resumed(_) => "run",
            UsageBaseline::Unknown => "thread_cumulative",
        }
    }
}

fn usage_since(total: TokenUsage, before: TokenUsage) -> TokenUsage {
    TokenUsage {
        input_tokens: total.input_tokens.saturating_sub(before.input_tokens),
        output_tokens: total.output_tokens.saturating_sub(before.output_tokens),
        cache_read_tokens: total.cache_read_tokens.saturating_sub(before.cache_read_tokens),
        cache_creation_tokens: total.cache_creation_tokens.saturating_sub(before.cache_creation_tokens),
    }
}

/// One tool-like item seen so far.
#[derive(Debug, Clone)]
struct ToolItem {
    name: String,
    input: Value,
}

/// Turns `codex exec --json` lines (Codex CLI 0.169, `spec/provider-clis.md` section 2) into
/// normalized events, then the exit into an [`ExecuteOutcome`] or a typed error.
///
/// | line | events |
/// |---|---|
/// | `thread.started` | none (the thread id is the outcome's `provider_session_id`, the native resume handle) |
/// | `turn.started` | none |
/// | `item.started` / `item.updated` tool item | `tool_call_started {tool_call_id: item id, tool_name, tool_input}` (once per item) |
/// | `item.completed` tool item | `tool_call_started` if not yet seen, then `tool_call_completed` or `tool_call_failed {…, tool_output, is_error}`; a `declined` item also `tool_approval_denied` |
/// | `item.updated` / `item.completed` `agent_message` | `message_streamed {content, delta}` with the text not yet emitted for that item id (no duplicates) |
/// | `item.started` / `item.updated` `reasoning` | `reasoning_streamed {content, delta}` with the text not yet emitted for that item id |
/// | `item.completed` `reasoning` | `reasoning_completed {content, redacted: false}` (once per item; never conversation) |
/// | `item.*` `todo_list`, other non-tool items | raw event (kept, not part of the conversation) |
/// | `item.completed` `error` | `error_occurred` (`details.fatal = false`: a warning, the run goes on) |
/// | `turn.completed` | `message_received {role: assistant, content: last agent message}`, `token_usage_updated` (`usage_mode: cumulative`: the run's totals so far, see [`UsageBaseline`]; the thread's under `metadata.thread_usage`) |
/// | `error` | `error_occurred` (`Reconnecting...` ones with `details.retrying = true`) |
/// | `turn.failed` | `error_occurred` unless the same message was just reported by an `error` line |
/// | anything else, non-JSON | raw event ([`raw_event`]) |
///
/// Tool items (spec 9.3): `command_execution` → `bash` `{command}` / `{output, exit_code,
/// status}`; `file_change` → `apply_patch` `{changes}` / `{status, changes}`; `mcp_tool_call` →
/// `<server>:<tool>` with its arguments / result or error; any other typed item (`web_search`,
/// …) → its type with its other fields / `{status?, result?, error?, output?}`.
///
/// Usage: `turn.completed.usage` is cumulative for the thread; the events and the outcome
/// report the run's share of it ([`baseline`](Self::baseline)), so the usage the runtime folds
/// from the events of a run that fails is the run's own. `input_tokens` of the events and
/// outcome exclude cached input (OpenAI counts them in `input_tokens`; here they are
/// `cache_read_tokens`, as the core [`TokenUsage`] defines).
///
/// ```
/// use asm_provider_codex::CodexNormalizer;
/// use asm_provider_cli::{ExitInfo, ExitKind};
/// let mut n = CodexNormalizer::new();
/// let mut events = Vec::new();
/// for line in [
///     r#"{"type":"thread.started","thread_id":"t-1"}"#,
///     r#"{"type":"turn.started"}"#,
///     r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"Hi"}}"#,
///     r#"{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":20,"output_tokens":12}}"#,
/// ] {
///     n.push_line(line, &mut events);
/// }
/// assert_eq!(events.len(), 3); // message_streamed, message_received, token_usage_updated
/// let outcome = n.finish(&ExitInfo::new(ExitKind::Code(0), "", false)).unwrap();
/// assert_eq!(outcome.output.content, "Hi");
/// assert_eq!(outcome.provider_session_id.as_deref(), Some("t-1"));
/// assert_eq!(outcome.token_usage.input_tokens, 80);
/// assert_eq!(outcome.token_usage.cache_read_tokens, 20);
/// ```
#[derive(Debug, Default)]
pub struct CodexNormalizer {
    thread_id: Option<String>,
    model: Option<String>,
    /// Agent message texts by item id, and the ids in order of first appearance.
    messages: HashMap<String, String>,
    message_order: Vec<String>,
    /// How much of each agent message was emitted already.
    emitted: HashMap<String, usize>,
    tools: HashMap<String, ToolItem>,
    completed_tools: HashSet<String>,
    tool_calls: Vec<Value>,
    /// Reasoning texts emitted so far by item id (length), and the completed reasoning items.
    reasoning_emitted: HashMap<String, usize>,
    reasoning_done: HashSet<String>,
    baseline: UsageBaseline,
    /// The thread's totals from the last `turn.completed`.
    thread_usage: Option<TokenUsage>,
    /// The run's share of them.
    usage: Option<TokenUsage>,
    usage_raw: Option<Value>,
    turns_started: u32,
    turns_completed: u32,
    turn_failed: Option<String>,
    /// The last fatal `error` line (not a reconnect notice).
    last_error: Option<String>,
    /// The last transient (`Reconnecting...`) notice.
    last_retry: Option<String>,
    warnings: Vec<String>,
    stderr_limits: StderrLimits,
    lines: u64,
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// An HTTP status mentioned in a Codex error text (`unexpected status 401 Unauthorized`,
/// `last status: 429 Too Many Requests`).
fn http_status(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("status")? + "status".len();
    let rest = lower[at..].trim_start_matches([':', ' ']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (digits.len() == 3).then(|| digits.parse().ok()).flatten()
}

/// The error code for a Codex error text: an HTTP status in it, else the shared text
/// classification, else `provider_error`.
fn classify(message: &str) -> ErrorCode {
    http_status(message)
        .map(classify_http_status)
        .filter(|c| *c != ErrorCode::ProviderError)
        .or_else(|| classify_error_text(message))
        .unwrap_or(ErrorCode::ProviderError)
}

/// A payload value as an object: objects as they are, `null` as `{}`, lists as `{items}`,
/// scalars as `{value}` (spec 9.3).
fn as_object(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Array(a)) => json!({ "items": a }),
        Some(other) => json!({ "value": other }),
    }
}

/// `(tool_name, tool_input)` of a tool item.
fn tool_identity(kind: &str, item: &Value) -> (String, Value) {
    match kind {
        "command_execution" => {
            let mut input = Map::new();
            input.insert("command".into(), item.get("command").cloned().unwrap_or(Value::String(String::new())));
            if let Some(cwd) = item.get("cwd").filter(|c| !c.is_null()) {
                input.insert("cwd".into(), cwd.clone());
            }
            ("bash".to_owned(), Value::Object(input))
        }
        "file_change" => {
            ("apply_patch".to_owned(), json!({ "changes": item.get("changes").cloned().unwrap_or(json!([])) }))
        }
        "mcp_tool_call" => {
            let name = match (str_of(item, "server"), str_of(item, "tool")) {
                (Some(s), Some(t)) => format!("{s}:{t}"),
                (None, Some(t)) => t.to_owned(),
                _ => "mcp_tool".to_owned(),
            };
            let args = match item.get("arguments") {
                Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok().filter(Value::is_object),
                other => other.cloned(),
            };
            (name, as_object(args.as_ref()))
        }
        other => {
            let mut input = Map::new();
            if let Some(o) = item.as_object() {
                for (k, v) in o {
                    if !matches!(k.as_str(), "id" | "type" | "status" | "result" | "error" | "output") {
                        input.insert(k.clone(), v.clone());
                    }
                }
            }
            (other.to_owned(), Value::Object(input))
        }
    }
}

/// `(tool_output, failed, declined)` of a completed tool item.
fn tool_result(kind: &str, item: &Value) -> (Value, bool, bool) {
    let status = str_of(item, "status").unwrap_or("completed");
    let declined = status == "declined";
    let mut failed = matches!(status, "failed" | "declined" | "error");
    let output = match kind {
        "command_execution" => {
            let exit_code = item.get("exit_code").cloned().unwrap_or(Value::Null);
            if exit_code.as_i64().is_some_and(|c| c != 0) {
                failed = true;
            }
            let mut o = Map::new();
            o.insert("output".into(), item.get("aggregated_output").cloned().unwrap_or(Value::String(String::new())));
            o.insert("exit_code".into(), exit_code);
            o.insert("status".into(), Value::String(status.to_owned()));
            if let Some(d) = item.get("duration_ms").filter(|d| !d.is_null()) {
                o.insert("duration_ms".into(), d.clone());
            }
            Value::Object(o)
        }
        "file_change" => json!({ "status": status, "changes": item.get("changes").cloned().unwrap_or(json!([])) }),
        "mcp_tool_call" => {
            let error = item.get("error").filter(|e| !e.is_null());
            if error.is_some() {
                failed = true;
            }
            match error {
                Some(e) => as_object(Some(e)),
                None => as_object(item.get("result")),
            }
        }
        _ => {
            let mut o = Map::new();
            for key in ["output", "result", "error", "status"] {
                if let Some(v) = item.get(key).filter(|v| !v.is_null()) {
                    o.insert(key.to_owned(), v.clone());
                }
            }
            if item.get("error").is_some_and(|e| !e.is_null()) {
                failed = true;
            }
            Value::Object(o)
        }
    };
    (output, failed, declined)
}

fn usage_of(u: &Value) -> TokenUsage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cached_input_tokens");
    TokenUsage {
        input_tokens: n("input_tokens").saturating_sub(cached),
        output_tokens: n("output_tokens"),
        cache_read_tokens: cached,
        cache_creation_tokens: n("cache_write_input_tokens"),
    }
}

impl CodexNormalizer {
    /// A fresh normalizer with default stderr limits.
    pub fn new() -> Self {
        Self::default()
    }

    asm_core::builder_setters! {
        /// Sets the bounds of stderr stored in errors.
        fn stderr_limits(limits: StderrLimits) { stderr_limits = limits }
        /// The model reported in the outcome (Codex does not print it; the adapter passes `-m`).
        fn model(model: Option<String>) { model = model }
        /// How the thread's totals relate to this run (default: a new thread).
        fn baseline(baseline: UsageBaseline) { baseline = baseline }
    }

    /// The thread-cumulative usage of the last `turn.completed` (the baseline of the thread's
    /// next run).
    pub fn thread_usage(&self) -> Option<TokenUsage> {
        self.thread_usage
    }

    /// The thread id seen so far (the native resume handle).
    pub fn thread_id(&self) -> Option<&str> {
        self.thread_id.as_deref()
    }

    /// Whether a `turn.completed` line was seen.
    pub fn turn_completed(&self) -> bool {
        self.turns_completed > 0
    }

    /// Normalizes one stdout line, appending its events to `out`. Never fails: lines it does
    /// not understand become raw events.
    pub fn push_line(&mut self, line: &str, out: &mut Vec<ProviderEvent>) {
        self.lines += 1;
        let value: Value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                out.push(raw_event(line, None, "not_json"));
                return;
            }
        };
        let kind = str_of(&value, "type").unwrap_or_default();
        let handled = match kind {
            "thread.started" => {
                if let Some(id) = str_of(&value, "thread_id") {
                    self.thread_id = Some(id.to_owned());
                }
                true
            }
            "turn.started" => {
                self.turns_started += 1;
                true
            }
            "item.started" | "item.updated" | "item.completed" => self.item(kind, line, &value, out),
            "turn.completed" => {
                self.turn_completed_line(&value, out);
                true
            }
            "turn.failed" => {
                let message =
                    value.get("error").and_then(|e| str_of(e, "message")).unwrap_or("codex turn failed").to_owned();
                if self.last_error.as_deref() != Some(message.as_str()) {
                    let code = classify(&message);
                    out.push(error_event(code, &message, json!({ "fatal": true, "source": "turn.failed" })));
                }
                self.turn_failed = Some(message);
                true
            }
            "error" => {
                let message = str_of(&value, "message").unwrap_or("codex error").to_owned();
                let code = classify(&message);
                if message.starts_with(RECONNECTING) {
                    out.push(
                        error_event(code, &message, json!({ "retrying": true, "source": "error" }))
                            .meta("retrying", true),
                    );
                    self.last_retry = Some(message);
                } else {
                    out.push(error_event(code, &message, json!({ "fatal": true, "source": "error" })));
                    self.last_error = Some(message);
                }
                true
            }
            _ => false,
        };
        if !handled {
            out.push(raw_event(line, Some(kind), "unknown_type"));
        }
    }

    fn item(&mut self, line_kind: &str, line: &str, value: &Value, out: &mut Vec<ProviderEvent>) -> bool {
        let Some(item) = value.get("item").filter(|i| i.is_object()) else { return false };
        let Some(item_type) = str_of(item, "type") else { return false };
        let id = str_of(item, "id").map_or_else(|| format!("anonymous_{}", self.lines), str::to_owned);
        let completed = line_kind == "item.completed";
        match item_type {
            "agent_message" => {
                let text = str_of(item, "text").unwrap_or_default();
                self.agent_message(&id, text, out);
            }
            "reasoning" => self.reasoning(&id, item, completed, out),
            "error" => {
                if completed {
                    let message = str_of(item, "message").unwrap_or("codex warning").to_owned();
                    let code = classify(&message);
                    out.push(
                        error_event(code, &message, json!({ "fatal": false, "item_id": id })).meta("warning", true),
                    );
                    self.warnings.push(message);
                }
            }
            t if NON_TOOL_ITEMS.contains(&t) => {
                // todo_list, user_message, ...: kept as raw events.
                out.push(raw_event(line, Some(line_kind), t));
            }
            tool => self.tool_item(tool, &id, item, completed, out),
        }
        true
    }

    fn agent_message(&mut self, id: &str, text: &str, out: &mut Vec<ProviderEvent>) {
        if !self.messages.contains_key(id) {
            self.message_order.push(id.to_owned());
        }
        self.messages.insert(id.to_owned(), text.to_owned());
        let done = self.emitted.get(id).copied().unwrap_or(0);
        // Only the part not emitted yet; a rewritten message (not an extension) is emitted whole.
        let delta = if done <= text.len() && text.is_char_boundary(done) { &text[done..] } else { text };
        if !delta.is_empty() {
            out.push(
                ProviderEvent::new(EventKind::MessageStreamed)
                    .data(keys::CONTENT, delta)
                    .data(keys::DELTA, delta)
                    .meta("item_id", id),
            );
        }
        self.emitted.insert(id.to_owned(), text.len());
    }

    /// A reasoning item: its new text as `reasoning_streamed` while it grows, then the whole
    /// text as one `reasoning_completed`. The text is `text`, or the `summary[].text` parts of
    /// the Responses shape.
    fn reasoning(&mut self, id: &str, item: &Value, completed: bool, out: &mut Vec<ProviderEvent>) {
        if self.reasoning_done.contains(id) {
            return;
        }
        let text = match str_of(item, "text") {
            Some(t) => t.to_owned(),
            None => item
                .get("summary")
                .and_then(Value::as_array)
                .map(|parts| parts.iter().filter_map(|p| str_of(p, "text")).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default(),
        };
        if completed {
            self.reasoning_done.insert(id.to_owned());
            out.push(
                ProviderEvent::new(EventKind::ReasoningCompleted)
                    .data(keys::CONTENT, text)
                    .data(keys::REDACTED, false)
                    .meta("item_id", id),
            );
            return;
        }
        let done = self.reasoning_emitted.get(id).copied().unwrap_or(0);
        let delta = if done <= text.len() && text.is_char_boundary(done) { &text[done..] } else { text.as_str() };
        if !delta.is_empty() {
            out.push(
                ProviderEvent::new(EventKind::ReasoningStreamed)
                    .data(keys::CONTENT, delta)
                    .data(keys::DELTA, delta)
                    .meta("item_id", id),
            );
        }
        self.reasoning_emitted.insert(id.to_owned(), text.len());
    }

    fn tool_item(&mut self, kind: &str, id: &str, item: &Value, completed: bool, out: &mut Vec<ProviderEvent>) {
        if self.completed_tools.contains(id) {
            return;
        }
        if !self.tools.contains_key(id) {
            let (name, input) = tool_identity(kind, item);
            out.push(
                ProviderEvent::new(EventKind::ToolCallStarted)
                    .data(keys::TOOL_CALL_ID, id)
                    .data(keys::TOOL_NAME, name.clone())
                    .data(keys::TOOL_INPUT, input.clone())
                    .meta("item_type", kind),
            );
            self.tools.insert(id.to_owned(), ToolItem { name, input });
        }
        if !completed {
            return;
        }
        let ToolItem { name, input } = self.tools.get(id).cloned().unwrap_or_else(|| {
            let (name, input) = tool_identity(kind, item);
            ToolItem { name, input }
        });
        let (output, failed, declined) = tool_result(kind, item);
        if declined {
            out.push(
                ProviderEvent::new(EventKind::ToolApprovalDenied)
                    .data(keys::TOOL_NAME, name.clone())
                    .data(keys::TOOL_CALL_ID, id)
                    .data(keys::TOOL_INPUT, input.clone())
                    .data(keys::REASON, "declined"),
            );
        }
        let event_kind = if failed { EventKind::ToolCallFailed } else { EventKind::ToolCallCompleted };
        let mut e = ProviderEvent::new(event_kind)
            .data(keys::TOOL_CALL_ID, id)
            .data(keys::TOOL_NAME, name.clone())
            .data(keys::TOOL_INPUT, input.clone())
            .data(keys::TOOL_OUTPUT, output.clone())
            .meta("item_type", kind);
        if failed {
            e = e.data(keys::IS_ERROR, true);
        }
        out.push(e);
        self.completed_tools.insert(id.to_owned());
        self.tool_calls.push(json!({ "id": id, "name": name, "input": input, "output": output, "is_error": failed }));
    }

    fn last_message(&self) -> String {
        self.message_order.last().and_then(|id| self.messages.get(id)).cloned().unwrap_or_default()
    }

    fn turn_completed_line(&mut self, v: &Value, out: &mut Vec<ProviderEvent>) {
        self.turns_completed += 1;
        out.push(
            ProviderEvent::new(EventKind::MessageReceived)
                .data(keys::ROLE, "assistant")
                .data(keys::CONTENT, self.last_message()),
        );
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            let thread = usage_of(u);
            let (usage, scope) = self.baseline.apply(thread);
            out.push(
                usage_event(usage, UsageMode::Cumulative)
                    .data(
                        "reasoning_output_tokens",
                        u.get("reasoning_output_tokens").and_then(Value::as_u64).unwrap_or(0),
                    )
                    .meta("usage_scope", scope)
                    .meta("thread_usage", serde_json::to_value(thread).unwrap_or_default()),
            );
            self.thread_usage = Some(thread);
            self.usage = Some(usage);
            self.usage_raw = Some(u.clone());
        }
    }

    /// The first stderr line that says something (Codex's per-run warnings and backtraces
    /// skipped), preferring `Error...` lines.
    fn stderr_reason(stderr: &str) -> Option<String> {
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !STDERR_NOISE.iter().any(|n| l.starts_with(n)))
            .collect();
        lines
            .iter()
            .find(|l| l.starts_with("Error"))
            .or_else(|| lines.iter().find(|l| !l.starts_with("Stack backtrace") && !l.ends_with("<unknown>")))
            .map(|l| (*l).to_owned())
    }

    /// Classifies the end of the run.
    ///
    /// # Errors
    /// * `turn.failed` (HTTP 401 → authentication failed; 429 → rate limited; 5xx, "high
    ///   demand", `response.failed` "stream disconnected", connection failures → unavailable;
    ///   else provider error), with the exit code and stderr;
    /// * no `turn.completed`: killed by a signal, non-zero exit (bad resume → `details.reason =
    ///   "resume_not_found"`, config errors → `"config_error"`, classified by stderr and the
    ///   last error line) or EOF without `turn.completed`, all [`ProviderErrorKind::TransportExit`];
    /// * a completed turn with a non-zero exit or a signal (conflicting signals):
    ///   `details.reason = "exit_status"`, classified by stderr, else `provider_error`.
    pub fn finish(&self, exit: &ExitInfo) -> asm_core::Result<ExecuteOutcome> {
        let limits = self.stderr_limits;
        if let Some(message) = &self.turn_failed {
            let code = classify(message);
            let kind = if exit.success() { ProviderErrorKind::ProtocolError } else { ProviderErrorKind::TransportExit };
            let pe = exit.provider_error(ProviderName::Codex, kind, message.clone(), limits);
            let mut err: Error = provider_failure(code, pe).with_detail("reason", "turn_failed");
            if let Some(status) = http_status(message) {
                err = err.with_detail("http_status", status);
            }
            if let Some(id) = &self.thread_id {
                err = err.with_detail("thread_id", id.clone());
            }
            return Err(err);
        }
        if self.turns_completed == 0 {
            let stderr_reason = Self::stderr_reason(&exit.stderr);
            let fatal = self.last_error.clone().or_else(|| self.last_retry.clone());
            let (code, message, reason) = if let Some(sig) = exit.signal() {
                (
                    ErrorCode::ProviderError,
                    format!("codex was killed by signal {sig} before the turn completed"),
                    "signal",
                )
            } else if !exit.success() {
                let reason = match &stderr_reason {
                    Some(r) if r.contains("no rollout found") || r.contains("thread/resume") => "resume_not_found",
                    Some(r) if r.contains("Error loading config") => "config_error",
                    _ => "exit",
                };
                let code = if reason == "exit" {
                    fatal
                        .as_deref()
                        .map(classify)
                        .filter(|c| *c != ErrorCode::ProviderError)
                        .or_else(|| stderr_reason.as_deref().and_then(classify_error_text))
                        .unwrap_or(ErrorCode::ProviderError)
                } else {
                    ErrorCode::ProviderError
                };
                let message = stderr_reason
                    .or_else(|| fatal.clone())
                    .unwrap_or_else(|| format!("codex exited with {} before the turn completed", exit.describe()));
                (code, message, reason)
            } else {
                let code = fatal.as_deref().map_or(ErrorCode::ProviderError, classify);
                (code, "codex output ended without turn.completed".to_owned(), "no_turn_completed")
            };
            let pe = exit.provider_error(ProviderName::Codex, ProviderErrorKind::TransportExit, message, limits);
            let mut err = provider_failure(code, pe).with_detail("reason", reason).with_detail("lines", self.lines);
            if let Some(id) = &self.thread_id {
                err = err.with_detail("thread_id", id.clone());
            }
            return Err(err);
        }
        if !exit.success() {
            // Conflicting signals: the turn completed, the process says it failed.
            let code = Self::stderr_reason(&exit.stderr).as_deref().map_or(ErrorCode::ProviderError, classify);
            let message = format!("codex completed the turn but exited with {}", exit.describe());
            let pe = exit.provider_error(ProviderName::Codex, ProviderErrorKind::TransportExit, message, limits);
            let mut err = provider_failure(code, pe).with_detail("reason", "exit_status");
            if let Some(id) = &self.thread_id {
                err = err.with_detail("thread_id", id.clone());
            }
            return Err(err);
        }
        let mut extra = JsonMap::new();
        if !self.tool_calls.is_empty() {
            extra.insert("tool_calls".to_owned(), Value::Array(self.tool_calls.clone()));
        }
        let mut metadata = JsonMap::new();
        metadata.insert("usage_scope".to_owned(), self.baseline.scope().into());
        if let Some(u) = &self.usage_raw {
            metadata.insert("codex_usage".to_owned(), u.clone());
        }
        if !self.warnings.is_empty() {
            metadata.insert("warnings".to_owned(), json!(self.warnings));
        }
        let mut outcome = ExecuteOutcome::default();
        outcome.output = RunOutput { content: self.last_message(), extra };
        outcome.token_usage = self.usage.unwrap_or_default();
        outcome.provider_session_id = self.thread_id.clone();
        outcome.model = self.model.clone();
        outcome.stop_reason = Some("end_turn".to_owned());
        outcome.turns = self.turns_completed;
        outcome.metadata = metadata;
        Ok(outcome)
    }
}
