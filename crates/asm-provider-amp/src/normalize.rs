//! [`AmpNormalizer`]: Amp `--stream-json` lines → normalized events and the outcome.

use serde_json::{Value, json};

use asm_anthropic_wire::{ResultLine, ResultText, StreamLines, Turn};
use asm_core::{
    Error, ErrorCode, EventKind, JsonMap, ProviderErrorKind, ProviderName, RunOutput, StderrLimits, TokenUsage,
    UsageMode, keys,
};
use asm_ports::{ExecuteOutcome, ProviderEvent};
use asm_provider_cli::{
    CliNormalizer, ExitInfo, classify_error_text, classify_http_status, error_event, provider_failure, raw_event,
    usage_event,
};

/// Known `error` texts of Amp's `error_during_execution` result and what they mean.
const APPROVAL_PREFIX: &str = "The following tools require user approval";

/// The provider's own code and classification for a failed result: the HTTP status when there
/// is one, else the error text ([`classify_amp_text`]).
fn classify_result(r: &ResultLine) -> (ErrorCode, ProviderErrorKind, Option<&'static str>) {
    let (code, kind, reason) = classify_amp_text(&result_message(r));
    match r.api_error_status.map(classify_http_status) {
        Some(status_code) => (status_code, kind, reason),
        None => (code, kind, reason),
    }
}

/// How an Amp error text is classified: the error code, the provider error kind and a short
/// machine-readable reason (stored as `details.reason`).
///
/// | text (case-insensitive) | code | reason |
/// |---|---|---|
/// | `No API key found` / `Starting login flow` | `provider_authentication_failed` | `missing_api_key` |
/// | `The following tools require user approval ...` | `provider_error` | `approval_required` |
/// | `User cancelled (SIGINT/SIGTERM)` | `provider_error` | `interrupted` |
/// | `No valid messages found in stdin` | `provider_error` | `no_input` |
/// | `WebSocket connection failed` | `provider_unavailable` | `connection_failed` |
/// | `Amp server returned an error` | `provider_unavailable` | `server_error` |
/// | `Unexpected error inside Amp CLI` / `TypeError` | `provider_error` | `internal_error` |
/// | otherwise [`classify_error_text`] (401/403, 429, 5xx, connection refused) | as classified | `auth` / `rate_limited` / `unavailable` |
/// | anything else | `provider_error` | none |
///
/// ```
/// use asm_core::ErrorCode;
/// use asm_provider_amp::classify_amp_text;
/// let (code, _, reason) = classify_amp_text("Error: WebSocket connection failed. Check your connection");
/// assert_eq!((code, reason), (ErrorCode::ProviderUnavailable, Some("connection_failed")));
/// assert_eq!(classify_amp_text("HTTP 401 Unauthorized").0, ErrorCode::ProviderAuthenticationFailed);
/// ```
pub fn classify_amp_text(text: &str) -> (ErrorCode, ProviderErrorKind, Option<&'static str>) {
    let t = text.to_ascii_lowercase();
    let has = |n: &str| t.contains(n);
    if has("no api key found") || has("starting login flow") {
        (ErrorCode::ProviderAuthenticationFailed, ProviderErrorKind::ProtocolError, Some("missing_api_key"))
    } else if has(&APPROVAL_PREFIX.to_ascii_lowercase()) {
        (ErrorCode::ProviderError, ProviderErrorKind::ProtocolError, Some("approval_required"))
    } else if has("user cancelled") {
        (ErrorCode::ProviderError, ProviderErrorKind::Unknown, Some("interrupted"))
    } else if has("no valid messages found in stdin") {
        (ErrorCode::ProviderError, ProviderErrorKind::ProtocolError, Some("no_input"))
    } else if has("websocket connection failed") {
        (ErrorCode::ProviderUnavailable, ProviderErrorKind::Unknown, Some("connection_failed"))
    } else if has("amp server returned an error") {
        (ErrorCode::ProviderUnavailable, ProviderErrorKind::Unknown, Some("server_error"))
    } else if has("unexpected error inside amp cli") || has("typeerror") {
        (ErrorCode::ProviderError, ProviderErrorKind::ProtocolError, Some("internal_error"))
    } else {
        match classify_error_text(text) {
            Some(code @ ErrorCode::ProviderAuthenticationFailed) => (code, ProviderErrorKind::Unknown, Some("auth")),
            Some(code @ ErrorCode::ProviderRateLimited) => (code, ProviderErrorKind::Unknown, Some("rate_limited")),
            Some(code) => (code, ProviderErrorKind::Unknown, Some("unavailable")),
            None => (ErrorCode::ProviderError, ProviderErrorKind::Unknown, None),
        }
    }
}

/// Turns Amp `-x --stream-json` lines (the Claude Code compatible shape of
/// `spec/provider-clis.md` section 3) into normalized events, then the exit into an
/// [`ExecuteOutcome`] or a typed error.
///
/// | line | events |
/// |---|---|
/// | `system/init` | none (thread id `T-...`, cwd, tools, MCP servers, agent mode go to the outcome) |
/// | `assistant` (one line per complete message) | `token_usage_updated` (per message, `usage_mode: delta`), then per block: text → `message_streamed {content, delta}`, tool_use → `tool_call_started {tool_call_id, tool_name, tool_input}`, thinking → `reasoning_completed {content, redacted: false}`, redacted_thinking → `reasoning_completed {content: "", redacted: true}` (`--stream-json-thinking`; the encrypted data is not kept) |
/// | `user` tool_result | `tool_call_completed` / `tool_call_failed {tool_call_id, tool_name, tool_input, tool_output, is_error}` (name and input of the originating call); `tool_approval_denied` too when the error says the user rejected the tool |
/// | `user` text only (prompt echo) | none |
/// | `result/success` | `message_received {role: assistant, content}` |
/// | a failed `result` (`is_error`, `error_*` subtype, `error` text, `errors[]`, `api_error_status`) | `tool_approval_denied` per tool needing approval, then `error_occurred {error_code, error_message, details}` |
/// | login-flow text (no API key) | none: [`push_line`](Self::push_line) fails, the run is stopped |
/// | anything else, non-JSON | raw event ([`raw_event`]) |
///
/// Amp's `result` has no usage total and no cost: the outcome's usage is the sum of the
/// per-message usages, the cost stays `None`.
///
/// ```
/// use asm_provider_amp::AmpNormalizer;
/// use asm_provider_cli::{ExitInfo, ExitKind};
/// let mut n = AmpNormalizer::new();
/// let mut events = Vec::new();
/// n.push_line(r#"{"type":"system","subtype":"init","session_id":"T-1","tools":[]}"#, &mut events).unwrap();
/// n.push_line(r#"{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}},"session_id":"T-1"}"#, &mut events).unwrap();
/// n.push_line(r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"Hi","session_id":"T-1"}"#, &mut events).unwrap();
/// let outcome = n.finish(&ExitInfo::new(ExitKind::Code(0), "", false)).unwrap();
/// assert_eq!(outcome.output.content, "Hi");
/// assert_eq!(outcome.provider_session_id.as_deref(), Some("T-1"));
/// assert_eq!(outcome.token_usage.input_tokens, 3);
/// assert_eq!(events.len(), 3); // usage, streamed text, received message
/// ```
#[derive(Debug, Default)]
pub struct AmpNormalizer {
    /// Line framing: JSON or plain text, the thread id.
    stream: StreamLines,
    model: Option<String>,
    init_metadata: JsonMap,
    usage: TokenUsage,
    assistant_messages: u32,
    last_stop_reason: Option<String>,
    /// The conversation so far: the current turn's text, the tool calls.
    turn: Turn,
    error_emitted: bool,
    result: Option<ResultLine>,
    stderr_limits: StderrLimits,
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The tool names of `The following tools require user approval, which is not supported in
/// stream JSON mode: a, b`.
fn approval_tools(error: &str) -> Vec<String> {
    if !error.starts_with(APPROVAL_PREFIX) {
        return Vec::new();
    }
    error
        .rsplit_once(':')
        .map(|(_, list)| list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

impl AmpNormalizer {
    /// A fresh normalizer with default stderr limits.
    pub fn new() -> Self {
        Self::default()
    }

    asm_core::builder_setters! {
        /// Sets the bounds of stderr stored in errors.
        fn stderr_limits(limits: StderrLimits) { stderr_limits = limits }
        /// Sets the model label reported in the outcome (Amp does not print one).
        fn model(model: Option<String>) { model = model }
    }

    /// The Amp thread id (`T-...`) seen so far.
    pub fn session_id(&self) -> Option<&str> {
        self.stream.session_id()
    }

    /// Whether the final `result` line was seen.
    pub fn has_result(&self) -> bool {
        self.result.is_some()
    }

    /// Usage summed over the assistant messages seen so far.
    pub fn usage(&self) -> TokenUsage {
        self.usage
    }

    /// Normalizes one stdout line, appending its events to `out`. Lines it does not understand
    /// become raw events.
    ///
    /// # Errors
    /// Only when the CLI started its interactive login flow (no API key): an
    /// [`ErrorCode::ProviderAuthenticationFailed`] with `details.reason = "missing_api_key"`;
    /// the caller stops the process (the CLI would wait forever for a pasted code).
    pub fn push_line(&mut self, line: &str, out: &mut Vec<ProviderEvent>) -> asm_core::Result<()> {
        let Some(value) = self.stream.read(line) else {
            let (code, kind, reason) = classify_amp_text(line);
            if reason == Some("missing_api_key") {
                tracing::warn!("amp started its login flow: no API key");
                let pe = asm_core::ProviderError::new(
                    ProviderName::Amp,
                    kind,
                    "amp found no API key and started its interactive login flow; set AMP_API_KEY",
                );
                return Err(provider_failure(code, pe)
                    .with_detail("reason", "missing_api_key")
                    .with_detail("output", line));
            }
            out.push(raw_event(line, None, "not_json"));
            return Ok(());
        };
        let kind = str_of(&value, "type").unwrap_or_default();
        let handled = match kind {
            "system" => self.system(&value),
            "assistant" => self.assistant(&value, out),
            "user" => self.user(&value, out),
            "result" => self.result_line(&value, out),
            _ => false,
        };
        if !handled {
            out.push(raw_event(line, Some(kind), "unknown_type"));
        }
        Ok(())
    }

    fn system(&mut self, v: &Value) -> bool {
        if str_of(v, "subtype") != Some("init") {
            return false;
        }
        for key in ["cwd", "tools", "mcp_servers", "agent_mode"] {
            if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
                self.init_metadata.insert(key.to_owned(), x.clone());
            }
        }
        true
    }

    fn assistant(&mut self, v: &Value, out: &mut Vec<ProviderEvent>) -> bool {
        let Some(message) = v.get("message").filter(|m| m.is_object()) else { return false };
        let parent = v.get("parent_tool_use_id").filter(|p| !p.is_null());
        self.assistant_messages += 1;
        if let Some(reason) = str_of(message, "stop_reason") {
            self.last_stop_reason = Some(reason.to_owned());
        }
        // Amp messages carry no id: every assistant line is a distinct message, so its usage
        // is reported once, as a delta.
        if let Some(u) = message.get("usage").and_then(asm_anthropic_wire::usage)
            && !u.is_zero()
        {
            self.usage += u;
            out.push(usage_event(u, UsageMode::Delta).meta("message_index", self.assistant_messages));
        }
        let index = self.assistant_messages;
        for mut event in self.turn.assistant_blocks(message, false) {
            if event.kind == EventKind::ReasoningCompleted {
                event = event.meta("message_index", index);
            }
            if let Some(p) = parent {
                event = event.meta("parent_tool_use_id", p.clone());
            }
            out.push(event);
        }
        true
    }

    fn user(&mut self, v: &Value, out: &mut Vec<ProviderEvent>) -> bool {
        let Some(message) = v.get("message").filter(|m| m.is_object()) else { return false };
        // Text-only user lines echo the prompt (or a steering message): nothing to report, the
        // runtime records the input itself.
        for result in self.turn.tool_results(message) {
            if result.is_error
                && let Some(text) = result.output.as_str()
                && text.starts_with("Tool execution rejected by user")
            {
                out.push(
                    ProviderEvent::new(EventKind::ToolApprovalDenied)
                        .data(keys::TOOL_NAME, result.name.clone())
                        .data(keys::TOOL_CALL_ID, result.tool_use_id.clone())
                        .data(keys::TOOL_INPUT, result.input.clone())
                        .data(keys::REASON, text),
                );
            }
            out.push(result.event());
        }
        true
    }

    fn result_line(&mut self, v: &Value, out: &mut Vec<ProviderEvent>) -> bool {
        let result = ResultLine::parse(v);
        if result.says_failure() {
            let message = result_message(&result);
            for tool in approval_tools(&message) {
                out.push(
                    ProviderEvent::new(EventKind::ToolApprovalDenied)
                        .data(keys::TOOL_NAME, tool)
                        .data(keys::REASON, "approval_required"),
                );
            }
            let (code, _, reason) = classify_result(&result);
            out.push(error_event(code, &message, json!({ "subtype": result.subtype, "reason": reason })));
            self.error_emitted = true;
        } else {
            let content = result.text.clone().unwrap_or_else(|| self.turn.text().to_owned());
            out.push(
                ProviderEvent::new(EventKind::MessageReceived)
                    .data(keys::ROLE, "assistant")
                    .data(keys::CONTENT, content),
            );
        }
        self.result = Some(result);
        true
    }

    /// Classifies the end of the run from every signal: the run succeeded only if the result
    /// line and the exit status agree.
    ///
    /// # Errors
    /// * a failed result (`is_error: true` whatever the subtype, an `error_*` subtype, an
    ///   `error` text, `errors[]`, an `api_error_status`), classified by the HTTP status or the
    ///   error text ([`classify_amp_text`]), carrying the exit code and stderr;
    /// * a clean result with a non-zero exit or a signal (conflicting signals):
    ///   `details.reason = "exit_status"`, classified by stderr, else `provider_error`;
    /// * no result line: killed by a signal, non-zero exit (classified by stderr: WebSocket /
    ///   server errors are `provider_unavailable` (retryable), auth texts
    ///   `provider_authentication_failed`, internal CLI errors `provider_error`) or EOF without
    ///   a result line, all with [`ProviderErrorKind::TransportExit`].
    pub fn finish(&self, exit: &ExitInfo) -> asm_core::Result<ExecuteOutcome> {
        let limits = self.stderr_limits;
        let Some(result) = &self.result else {
            let (code, message, reason) = if let Some(sig) = exit.signal() {
                (ErrorCode::ProviderError, format!("amp was killed by signal {sig} before printing a result"), None)
            } else if !exit.success() {
                let first =
                    self.stream.first_line(&exit.stderr).map(|l| l.strip_prefix("Error: ").unwrap_or(l).to_owned());
                let text = format!("{}\n{}", exit.stderr, self.stream.plain_text());
                let (code, _, reason) = classify_amp_text(&text);
                let message = first.unwrap_or_else(|| format!("amp exited with {} without a result", exit.describe()));
                (code, message, reason)
            } else {
                (ErrorCode::ProviderError, "amp output ended without a result line".to_owned(), Some("no_result"))
            };
            let pe = exit.provider_error(ProviderName::Amp, ProviderErrorKind::TransportExit, message, limits);
            let mut err = provider_failure(code, pe).with_detail("lines", self.stream.count());
            if let Some(reason) = reason {
                err = err.with_detail("reason", reason);
            }
            return Err(err);
        };
        if result.says_failure() {
            let message = result_message(result);
            let (code, kind, reason) = classify_result(result);
            let kind = if kind == ProviderErrorKind::Unknown && !exit.success() {
                ProviderErrorKind::TransportExit
            } else {
                kind
            };
            let pe = exit.provider_error(ProviderName::Amp, kind, message.clone(), limits);
            let mut err: Error = provider_failure(code, pe).with_detail("subtype", result.subtype.clone());
            if let Some(reason) = reason {
                err = err.with_detail("reason", reason);
            }
            let tools = approval_tools(&message);
            if !tools.is_empty() {
                err = err.with_detail("tools", tools);
            }
            if let Some(id) = self.stream.session_id() {
                err = err.with_detail("provider_session_id", id);
            }
            return Err(err);
        }
        if let Some(err) = exit.failed_after_success(ProviderName::Amp, limits, "printed a successful result") {
            return Err(err.with_detail("subtype", result.subtype.clone()));
        }
        let mut metadata = self.init_metadata.clone();
        if let Some(ms) = result.duration_ms {
            metadata.insert("duration_ms".to_owned(), ms.into());
        }
        let mut outcome = ExecuteOutcome::default();
        outcome.output = RunOutput {
            content: result.text.clone().unwrap_or_else(|| self.turn.text().to_owned()),
            extra: self.turn.output_extra(),
        };
        outcome.token_usage = self.usage;
        outcome.provider_session_id = self.stream.session_id().map(str::to_owned);
        outcome.model = self.model.clone();
        outcome.cost_usd = None;
        outcome.stop_reason = Some(self.last_stop_reason.clone().unwrap_or_else(|| "end_turn".to_owned()));
        outcome.turns = result.turns.unwrap_or(self.assistant_messages);
        outcome.metadata = metadata;
        Ok(outcome)
    }
}

fn result_message(r: &ResultLine) -> String {
    r.message(&[ResultText::Error, ResultText::Errors, ResultText::Result])
        .unwrap_or_else(|| format!("amp reported an error ({})", r.subtype))
}

impl CliNormalizer for AmpNormalizer {
    fn normalize_line(&mut self, line: &str, out: &mut Vec<ProviderEvent>) -> asm_core::Result<()> {
        self.push_line(line, out)
    }

    fn outcome(&self, exit: &ExitInfo) -> asm_core::Result<ExecuteOutcome> {
        self.finish(exit)
    }

    fn provider_session_id(&self) -> Option<&str> {
        self.session_id()
    }
}
