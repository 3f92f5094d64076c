//! [`ClaudeNormalizer`]: Claude Code stream-json lines → normalized events and the outcome.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

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

/// Turns Claude Code `--output-format stream-json --verbose` lines into normalized events,
/// then the exit into an [`ExecuteOutcome`] or a typed error.
///
/// | line | events |
/// |---|---|
/// | `system/init` | none (session id, model, tools go to the outcome) |
/// | `system/status` | none |
/// | `system/api_retry` | `error_occurred` (code from `error_status`, `details.retrying = true`) |
/// | `stream_event` `content_block_delta/text_delta` | `message_streamed {content, delta}` |
/// | `stream_event` `content_block_delta/thinking_delta` | `reasoning_streamed {content, delta}` |
/// | `stream_event` `message_start` / `message_delta` | `token_usage_updated` (delta, per message id) |
/// | other `stream_event`s | none (`ping`, block start/stop, `input_json_delta`, `signature_delta`, `message_stop`) |
/// | `assistant` text block | `message_streamed` (unless already streamed as deltas) |
/// | `assistant` thinking block | `reasoning_completed {content, redacted: false}` (also after deltas: it closes the block) |
/// | `assistant` redacted_thinking block | `reasoning_completed {content: "", redacted: true}` (the encrypted data is not kept) |
/// | `assistant` tool_use block | `tool_call_started {tool_call_id, tool_name, tool_input}` |
/// | `assistant` synthetic error (`error` field) | `error_occurred` |
/// | `assistant` first line of a message id | `token_usage_updated` (delta, deduped by id) |
/// | `user` tool_result | `tool_call_completed` / `tool_call_failed {tool_call_id, tool_name, tool_input, tool_output, is_error}` |
/// | `result` | `tool_approval_denied` per permission denial (unless [`approvals_recorded`](Self::approvals_recorded)); `error_occurred` when the run failed (see [`finish`](Self::finish)), else `message_received {role: assistant, content}`; `token_usage_updated` (cumulative run totals, never below what the messages reported, with `total_cost_usd`) |
/// | `rate_limit_event` | `error_occurred` when rejected, else raw |
/// | anything else, non-JSON | raw event ([`raw_event`]) |
///
/// ```
/// use asm_provider_claude::ClaudeNormalizer;
/// let mut n = ClaudeNormalizer::new();
/// let mut events = Vec::new();
/// n.push_line(r#"{"type":"system","subtype":"init","session_id":"s1","model":"m"}"#, &mut events);
/// n.push_line(r#"{"type":"assistant","message":{"id":"msg_1","model":"m","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":3,"output_tokens":1}}}"#, &mut events);
/// n.push_line(r#"{"type":"result","subtype":"success","is_error":false,"result":"Hi","num_turns":1,"total_cost_usd":0.01,"usage":{"input_tokens":3,"output_tokens":2}}"#, &mut events);
/// let outcome = n.finish(&asm_provider_cli::ExitInfo::new(asm_provider_cli::ExitKind::Code(0), "", false)).unwrap();
/// assert_eq!(outcome.output.content, "Hi");
/// assert_eq!(outcome.provider_session_id.as_deref(), Some("s1"));
/// assert_eq!(outcome.token_usage.output_tokens, 2);
/// assert_eq!(outcome.cost_usd, Some(0.01));
/// ```
#[derive(Debug, Default)]
pub struct ClaudeNormalizer {
    /// Line framing: JSON or plain text, the session id.
    stream: StreamLines,
    init_model: Option<String>,
    message_model: Option<String>,
    init_metadata: JsonMap,
    /// Usage already reported per message id.
    reported: HashMap<String, TokenUsage>,
    /// Message ids whose text arrived as partial deltas.
    streamed: HashSet<String>,
    current_message: Option<String>,
    /// The conversation so far: the current turn's text, the tool calls.
    turn: Turn,
    last_retry: Option<(Option<u64>, String)>,
    error_emitted: bool,
    /// The code of a synthetic assistant error message (the CLI's own API error report).
    synthetic_error: Option<ErrorCode>,
    result: Option<ResultLine>,
    /// What the result line adds to the outcome's metadata.
    result_metadata: JsonMap,
    stderr_limits: StderrLimits,
    /// The run's approval gate records the denials (control mode): the result line's
    /// `permission_denials` are not reported again as `tool_approval_denied`.
    approvals_recorded: bool,
}

fn sub(a: TokenUsage, b: TokenUsage) -> TokenUsage {
    TokenUsage {
        input_tokens: a.input_tokens.saturating_sub(b.input_tokens),
        output_tokens: a.output_tokens.saturating_sub(b.output_tokens),
        cache_read_tokens: a.cache_read_tokens.saturating_sub(b.cache_read_tokens),
        cache_creation_tokens: a.cache_creation_tokens.saturating_sub(b.cache_creation_tokens),
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

impl ClaudeNormalizer {
    /// A fresh normalizer with default stderr limits.
    pub fn new() -> Self {
        Self::default()
    }

    asm_core::builder_setters! {
        /// Sets the bounds of stderr stored in errors.
        fn stderr_limits(limits: StderrLimits) { stderr_limits = limits }
        /// Whether the run's approval gate records decisions itself (a run with an approval
        /// handler, in control mode): then the result line's `permission_denials` become no
        /// `tool_approval_denied` events (the gate recorded one per denial already); they stay in
        /// the outcome's metadata.
        fn approvals_recorded(on: bool) { approvals_recorded = on }
    }

    /// The provider session id seen so far.
    pub fn session_id(&self) -> Option<&str> {
        self.stream.session_id()
    }

    /// Whether the final `result` line was seen.
    pub fn has_result(&self) -> bool {
        self.result.is_some()
    }

    /// Normalizes one stdout line, appending its events to `out`. Never fails: lines it does
    /// not understand become raw events.
    pub fn push_line(&mut self, line: &str, out: &mut Vec<ProviderEvent>) {
        let Some(value) = self.stream.read(line) else {
            out.push(raw_event(line, None, "not_json"));
            return;
        };
        let kind = str_of(&value, "type").unwrap_or_default();
        let handled = match kind {
            "system" => self.system(&value, out),
            "stream_event" => self.stream_event(&value, out),
            "assistant" => self.assistant(&value, out),
            "user" => self.user(&value, out),
            "result" => self.result_line(&value, out),
            "rate_limit_event" => self.rate_limit(&value, out),
            _ => false,
        };
        if !handled {
            out.push(raw_event(line, Some(kind), "unknown_type"));
        }
    }

    fn system(&mut self, v: &Value, out: &mut Vec<ProviderEvent>) -> bool {
        match str_of(v, "subtype") {
            Some("init") => {
                self.init_model = str_of(v, "model").map(str::to_owned);
                for (from, to) in [
                    ("cwd", "cwd"),
                    ("tools", "tools"),
                    ("permissionMode", "permission_mode"),
                    ("claude_code_version", "claude_code_version"),
                    ("apiKeySource", "api_key_source"),
                ] {
                    if let Some(x) = v.get(from) {
                        self.init_metadata.insert(to.to_owned(), x.clone());
                    }
                }
                true
            }
            Some("status") => true,
            Some("api_retry") => {
                let status = v.get("error_status").and_then(Value::as_u64);
                let error = str_of(v, "error").unwrap_or("unknown").to_owned();
                let code = status.map_or_else(
                    || match error.as_str() {
                        "rate_limit" => ErrorCode::ProviderRateLimited,
                        "authentication_failed" => ErrorCode::ProviderAuthenticationFailed,
                        _ => ErrorCode::ProviderUnavailable,
                    },
                    classify_http_status,
                );
                let message = format!(
                    "API request failed ({}{error}); retry {} of {}",
                    status.map(|s| format!("HTTP {s}, ")).unwrap_or_default(),
                    v.get("attempt").cloned().unwrap_or(Value::Null),
                    v.get("max_retries").cloned().unwrap_or(Value::Null),
                );
                let details = json!({
                    "retrying": true,
                    "attempt": v.get("attempt"),
                    "max_retries": v.get("max_retries"),
                    "retry_delay_ms": v.get("retry_delay_ms"),
                    "error_status": status,
                    "error": error,
                });
                out.push(error_event(code, &message, details).meta("retrying", true));
                self.last_retry = Some((status, error));
                true
            }
            _ => false,
        }
    }

    fn stream_event(&mut self, v: &Value, out: &mut Vec<ProviderEvent>) -> bool {
        let Some(event) = v.get("event") else { return false };
        match str_of(event, "type") {
            Some("message_start") => {
                let message = event.get("message").unwrap_or(&Value::Null);
                if let Some(id) = str_of(message, "id") {
                    self.current_message = Some(id.to_owned());
                    if let Some(u) = message.get("usage").and_then(asm_anthropic_wire::usage) {
                        self.report_usage(id, u, out);
                    }
                }
                true
            }
            Some("content_block_delta") => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                if str_of(delta, "type") == Some("text_delta")
                    && let Some(text) = str_of(delta, "text")
                    && !text.is_empty()
                {
                    if let Some(id) = &self.current_message {
                        self.streamed.insert(id.clone());
                    }
                    out.push(self.turn.push_text(text));
                } else if str_of(delta, "type") == Some("thinking_delta")
                    && let Some(text) = str_of(delta, "thinking")
                    && !text.is_empty()
                {
                    let mut e = ProviderEvent::new(EventKind::ReasoningStreamed)
                        .data(keys::CONTENT, text)
                        .data(keys::DELTA, text);
                    if let Some(id) = &self.current_message {
                        e = e.meta("message_id", id.clone());
                    }
                    out.push(e);
                }
                true
            }
            Some("message_delta") => {
                if let (Some(id), Some(u)) = (self.current_message.clone(), event.get("usage")) {
                    let prev = self.reported.get(&id).copied().unwrap_or_default();
                    let obj = u.as_object();
                    let pick = |k: &str, old: u64| obj.and_then(|o| o.get(k)).and_then(Value::as_u64).unwrap_or(old);
                    let now = TokenUsage {
                        input_tokens: pick("input_tokens", prev.input_tokens),
                        output_tokens: pick("output_tokens", prev.output_tokens),
                        cache_read_tokens: pick("cache_read_input_tokens", prev.cache_read_tokens),
                        cache_creation_tokens: pick("cache_creation_input_tokens", prev.cache_creation_tokens),
                    };
                    self.report_usage(&id, now, out);
                }
                true
            }
            Some("content_block_start" | "content_block_stop" | "message_stop" | "ping") => true,
            _ => false,
        }
    }

    /// Emits the growth of message `id`'s usage over what was already reported for it.
    fn report_usage(&mut self, id: &str, usage: TokenUsage, out: &mut Vec<ProviderEvent>) {
        let prev = self.reported.get(id).copied();
        let delta = match prev {
            None => usage,
            Some(p) => sub(usage, p),
        };
        let merged = prev.map_or(usage, |p| TokenUsage {
            input_tokens: p.input_tokens.max(usage.input_tokens),
            output_tokens: p.output_tokens.max(usage.output_tokens),
            cache_read_tokens: p.cache_read_tokens.max(usage.cache_read_tokens),
            cache_creation_tokens: p.cache_creation_tokens.max(usage.cache_creation_tokens),
        });
        self.reported.insert(id.to_owned(), merged);
        if !delta.is_zero() {
            out.push(usage_event(delta, UsageMode::Delta).data("message_id", id));
        }
    }

    fn assistant(&mut self, v: &Value, out: &mut Vec<ProviderEvent>) -> bool {
        let Some(message) = v.get("message") else { return false };
        let model = str_of(message, "model");
        let synthetic = model == Some("<synthetic>") || v.get("error").is_some_and(|e| !e.is_null());
        let parent = v.get("parent_tool_use_id").filter(|p| !p.is_null());
        if synthetic {
            let text: Vec<&str> = message
                .get("content")
                .and_then(Value::as_array)
                .map(|b| b.iter().filter_map(|b| str_of(b, "text")).collect())
                .unwrap_or_default();
            let text = text.join("");
            let error = str_of(v, "error").unwrap_or("unknown");
            let code = match error {
                "authentication_failed" => ErrorCode::ProviderAuthenticationFailed,
                "rate_limit" => ErrorCode::ProviderRateLimited,
                "server_error" | "overloaded" => ErrorCode::ProviderUnavailable,
                _ => classify_error_text(&text).unwrap_or(ErrorCode::ProviderError),
            };
            out.push(error_event(code, &text, json!({ "error": error, "synthetic": true })));
            self.error_emitted = true;
            self.synthetic_error.get_or_insert(code);
            return true;
        }
        if let Some(m) = model {
            self.message_model = Some(m.to_owned());
        }
        let id = str_of(message, "id").map(str::to_owned);
        if let Some(id) = &id
            && !self.reported.contains_key(id)
            && let Some(u) = message.get("usage").and_then(asm_anthropic_wire::usage)
        {
            self.report_usage(id, u, out);
        }
        let streamed = id.as_ref().is_some_and(|id| self.streamed.contains(id));
        for mut event in self.turn.assistant_blocks(message, streamed) {
            if event.kind == EventKind::ReasoningCompleted
                && let Some(id) = &id
            {
                event = event.meta("message_id", id.clone());
            }
            if let Some(p) = parent {
                event = event.meta("parent_tool_use_id", p.clone());
            }
            out.push(event);
        }
        true
    }

    fn user(&mut self, v: &Value, out: &mut Vec<ProviderEvent>) -> bool {
        let Some(message) = v.get("message") else { return false };
        let structured = v.get("tool_use_result").filter(|s| !s.is_null());
        let mut any = false;
        for result in self.turn.tool_results(message) {
            any = true;
            let event = result.event();
            out.push(match structured {
                Some(s) => event.data("structured_output", s.clone()),
                None => event,
            });
        }
        any
    }

    fn rate_limit(&mut self, v: &Value, out: &mut Vec<ProviderEvent>) -> bool {
        let info = v.get("rate_limit_info").unwrap_or(&Value::Null);
        if str_of(info, "status") == Some("rejected") {
            out.push(error_event(ErrorCode::ProviderRateLimited, "rate limit reached", info.clone()));
            return true;
        }
        false
    }

    fn result_line(&mut self, v: &Value, out: &mut Vec<ProviderEvent>) -> bool {
        let result = ResultLine::parse(v);
        self.result_metadata = JsonMap::new();
        for key in [
            "duration_ms",
            "duration_api_ms",
            "terminal_reason",
            "modelUsage",
            "permission_denials",
            "api_error_status",
        ] {
            if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
                self.result_metadata.insert(key.to_owned(), x.clone());
            }
        }
        let denials = v.get("permission_denials").and_then(Value::as_array).filter(|_| !self.approvals_recorded);
        for denial in denials.into_iter().flatten() {
            out.push(
                ProviderEvent::new(EventKind::ToolApprovalDenied)
                    .data(keys::TOOL_NAME, str_of(denial, "tool_name").unwrap_or("unknown"))
                    .data(keys::TOOL_CALL_ID, str_of(denial, "tool_use_id").unwrap_or("unknown"))
                    .data(keys::TOOL_INPUT, denial.get("tool_input").cloned().unwrap_or(Value::Object(Map::new())))
                    .data(keys::REASON, "permission_denied"),
            );
        }
        if self.output_says_failure(&result) {
            if !self.error_emitted {
                let (code, _) = self.classify_result(&result);
                let message = result_message(&result);
                out.push(error_event(code, &message, json!({ "subtype": result.subtype, "errors": result.errors })));
                self.error_emitted = true;
            }
        } else {
            let content = result.text.clone().unwrap_or_else(|| self.turn.text().to_owned());
            out.push(
                ProviderEvent::new(EventKind::MessageReceived)
                    .data(keys::ROLE, "assistant")
                    .data(keys::CONTENT, content),
            );
        }
        if let Some(u) = result.usage {
            let mut e = usage_event(self.run_total(u), UsageMode::Cumulative);
            if let Some(cost) = result.cost_usd {
                e = e.data(keys::TOTAL_COST_USD, cost);
            }
            out.push(e);
        }
        self.result = Some(result);
        true
    }

    /// Whether the output says the run failed: the result line itself, or a synthetic API
    /// error message before it.
    fn output_says_failure(&self, r: &ResultLine) -> bool {
        r.says_failure() || self.synthetic_error.is_some()
    }

    /// The provider's own code for a failed run, most specific signal first: the HTTP status of
    /// the API error, the synthetic error message's code, max turns, then the error text.
    fn classify_result(&self, r: &ResultLine) -> (ErrorCode, ProviderErrorKind) {
        if let Some(status) = r.api_error_status {
            return (classify_http_status(status), ProviderErrorKind::Unknown);
        }
        if let Some(code) = self.synthetic_error {
            return (code, ProviderErrorKind::Unknown);
        }
        if r.subtype == "error_max_turns" {
            return (ErrorCode::ProviderError, ProviderErrorKind::ProtocolError);
        }
        let text = result_message(r);
        (classify_error_text(&text).unwrap_or(ErrorCode::ProviderError), ProviderErrorKind::Unknown)
    }

    /// The run's total: the result's cumulative usage, never below what the distinct messages
    /// already reported (after SIGINT the result reports zero usage).
    fn run_total(&self, reported: TokenUsage) -> TokenUsage {
        let seen = self.summed_usage();
        TokenUsage {
            input_tokens: reported.input_tokens.max(seen.input_tokens),
            output_tokens: reported.output_tokens.max(seen.output_tokens),
            cache_read_tokens: reported.cache_read_tokens.max(seen.cache_read_tokens),
            cache_creation_tokens: reported.cache_creation_tokens.max(seen.cache_creation_tokens),
        }
    }

    /// Usage summed over the distinct messages seen (used when no result line arrived).
    fn summed_usage(&self) -> TokenUsage {
        self.reported.values().fold(TokenUsage::default(), |acc, u| acc + *u)
    }

    /// Classifies the end of the run from every signal: the run succeeded only if the result
    /// line, the lines before it and the exit status all agree. (A missing `is_error` is not a
    /// success on its own; the spec's Gotcha: `subtype: success` comes with `is_error: true`.)
    ///
    /// # Errors
    /// * a failed result (`is_error: true`, an `error_*` subtype, an `api_error_status`, a
    ///   non-empty `errors[]`, or a synthetic API error message before it): authentication
    ///   failed (401/403), rate limited (429, retryable), unavailable (5xx, connection refused;
    ///   retryable), or provider error (max turns, bad resume, ...), with the provider's own code
    ///   (HTTP status first, then the synthetic message's code, then the error text), the exit
    ///   code and stderr;
    /// * a clean result with a non-zero exit or a signal (conflicting signals):
    ///   `details.reason = "exit_status"`, classified by stderr, else `provider_error`;
    /// * no result line: killed by a signal, non-zero exit (classified by stderr and the last
    ///   `api_retry` notice) or EOF without a result line, all with
    ///   [`ProviderErrorKind::TransportExit`].
    pub fn finish(&self, exit: &ExitInfo) -> asm_core::Result<ExecuteOutcome> {
        let limits = self.stderr_limits;
        let Some(result) = &self.result else {
            let (code, message) = if let Some(sig) = exit.signal() {
                (ErrorCode::ProviderError, format!("claude was killed by signal {sig} before printing a result"))
            } else if !exit.success() {
                let from_stderr = self.stream.first_line(&exit.stderr).map(str::to_owned);
                let code = classify_error_text(&exit.stderr)
                    .or_else(|| classify_error_text(self.stream.plain_text()))
                    .or_else(|| self.last_retry.as_ref().and_then(|(s, _)| s.map(classify_http_status)))
                    .unwrap_or(ErrorCode::ProviderError);
                let message =
                    from_stderr.unwrap_or_else(|| format!("claude exited with {} without a result", exit.describe()));
                (code, message)
            } else {
                let code = self
                    .last_retry
                    .as_ref()
                    .and_then(|(s, _)| s.map(classify_http_status))
                    .unwrap_or(ErrorCode::ProviderError);
                (code, "claude output ended without a result line".to_owned())
            };
            let pe = exit.provider_error(ProviderName::Claude, ProviderErrorKind::TransportExit, message, limits);
            return Err(provider_failure(code, pe).with_detail("lines", self.stream.count()));
        };
        if self.output_says_failure(result) {
            let (code, kind) = self.classify_result(result);
            let kind = if kind == ProviderErrorKind::Unknown && !exit.success() {
                ProviderErrorKind::TransportExit
            } else {
                kind
            };
            let pe = exit.provider_error(ProviderName::Claude, kind, result_message(result), limits);
            let mut err: Error = provider_failure(code, pe).with_detail("subtype", result.subtype.clone());
            if !result.errors.is_empty() {
                err = err.with_detail("errors", result.errors.clone());
            }
            if let Some(status) = result.api_error_status {
                err = err.with_detail("api_error_status", status);
            }
            if result.errors.iter().any(|e| e.contains("No conversation found")) {
                err = err.with_detail("reason", "resume_not_found");
            }
            if result.subtype == "error_max_turns" {
                err = err.with_detail("reason", "max_turns");
            }
            return Err(err);
        }
        if let Some(err) = exit.failed_after_success(ProviderName::Claude, limits, "printed a successful result") {
            return Err(err.with_detail("subtype", result.subtype.clone()));
        }
        let mut metadata = self.init_metadata.clone();
        metadata.extend(self.result_metadata.clone());
        let mut outcome = ExecuteOutcome::default();
        outcome.output = RunOutput {
            content: result.text.clone().unwrap_or_else(|| self.turn.text().to_owned()),
            extra: self.turn.output_extra(),
        };
        outcome.token_usage = result.usage.map_or_else(|| self.summed_usage(), |u| self.run_total(u));
        outcome.provider_session_id = self.stream.session_id().map(str::to_owned);
        outcome.model = self.message_model.clone().or_else(|| self.init_model.clone());
        outcome.cost_usd = result.cost_usd;
        outcome.stop_reason = Some(result.stop_reason.clone().unwrap_or_else(|| "end_turn".to_owned()));
        outcome.turns = result.turns.unwrap_or(0);
        outcome.metadata = metadata;
        Ok(outcome)
    }
}

fn result_message(r: &ResultLine) -> String {
    r.message(&[ResultText::Result, ResultText::Errors])
        .unwrap_or_else(|| format!("claude reported an error ({})", r.subtype))
}

impl CliNormalizer for ClaudeNormalizer {
    fn normalize_line(&mut self, line: &str, out: &mut Vec<ProviderEvent>) -> asm_core::Result<()> {
        self.push_line(line, out);
        Ok(())
    }

    fn outcome(&self, exit: &ExitInfo) -> asm_core::Result<ExecuteOutcome> {
        self.finish(exit)
    }

    fn provider_session_id(&self) -> Option<&str> {
        self.session_id()
    }
}
