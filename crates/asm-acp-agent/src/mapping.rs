//! Stored events -> ACP `session/update` payloads, and a run's end -> `stopReason` or error.
//!
//! The mapping is a pure function of the event sequence (state is reset at every
//! `run_started`), so a live prompt and a later `session/load` of the same log produce the
//! same updates for a run (the load adds the user's input as `user_message_chunk`).

use serde_json::{Map, Value, json};

use asm_core::{Error, ErrorCategory, ErrorCode, Event, EventKind, Run, RunStatus, keys};
use asm_provider_acp::jsonrpc::{INTERNAL_ERROR, INVALID_PARAMS, RESOURCE_NOT_FOUND, RpcError};

/// Whether updates are produced for a live prompt or for a `session/load` replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The client sent the input itself: `message_sent` is not echoed.
    Live,
    /// Replay of the whole log: the user's input is sent as `user_message_chunk`.
    Load,
}

/// Folds a session's events into `session/update` payloads (the `update` object).
#[derive(Debug)]
pub(crate) struct UpdateMapper {
    mode: Mode,
    /// The message id (id of the segment's first event) of the agent text being streamed.
    message: Option<String>,
    /// The same for streamed reasoning.
    thought: Option<String>,
}

impl UpdateMapper {
    pub(crate) fn new(mode: Mode) -> Self {
        Self { mode, message: None, thought: None }
    }

    /// The `update` objects for one stored event (none for most lifecycle events).
    pub(crate) fn map(&mut self, event: &Event) -> Option<Value> {
        match event.kind {
            EventKind::RunStarted => {
                self.message = None;
                self.thought = None;
                None
            }
            EventKind::MessageSent => {
                let user = event.data_str(keys::ROLE).is_none_or(|r| r == "user");
                let text = event.data_str(keys::CONTENT).unwrap_or_default();
                (self.mode == Mode::Load && user && !text.is_empty())
                    .then(|| chunk("user_message_chunk", text, event.id.as_str()))
            }
            EventKind::MessageStreamed if !event.is_provider_raw() => {
                let text = text_of(event)?;
                let id = self.message.get_or_insert_with(|| event.id.as_str().to_owned()).clone();
                Some(chunk("agent_message_chunk", text, &id))
            }
            EventKind::MessageReceived if !event.is_provider_raw() => {
                let streamed = self.message.take().is_some();
                let assistant = event.data_str(keys::ROLE).is_none_or(|r| r == "assistant");
                let text = event.data_str(keys::CONTENT).unwrap_or_default();
                (assistant && !streamed && !text.is_empty())
                    .then(|| chunk("agent_message_chunk", text, event.id.as_str()))
            }
            EventKind::ReasoningStreamed => {
                let text = text_of(event)?;
                let id = self.thought.get_or_insert_with(|| event.id.as_str().to_owned()).clone();
                Some(chunk("agent_thought_chunk", text, &id))
            }
            EventKind::ReasoningCompleted => {
                let streamed = self.thought.take().is_some();
                let text = event.data_str(keys::CONTENT).unwrap_or_default();
                (!streamed && !text.is_empty()).then(|| chunk("agent_thought_chunk", text, event.id.as_str()))
            }
            EventKind::ToolCallStarted => {
                self.message = None;
                self.thought = None;
                Some(tool_call(event))
            }
            EventKind::ToolCallCompleted | EventKind::ToolCallFailed => {
                self.message = None;
                Some(tool_call_update(event))
            }
            EventKind::ProviderRaw if event.data_str(keys::RAW_TYPE) == Some("plan") => plan(event),
            _ => None,
        }
    }
}

/// The streamed text of a chunk event: `content`, else `delta`; `None` when empty.
fn text_of(event: &Event) -> Option<&str> {
    event.data_str(keys::CONTENT).or_else(|| event.data_str(keys::DELTA)).filter(|t| !t.is_empty())
}

fn chunk(update: &str, text: &str, message_id: &str) -> Value {
    json!({
        "sessionUpdate": update,
        "content": {"type": "text", "text": text},
        "messageId": message_id,
    })
}

fn tool_call_id(event: &Event) -> String {
    event.data_str(keys::TOOL_CALL_ID).map_or_else(|| event.id.as_str().to_owned(), str::to_owned)
}

/// The ACP tool kind for one of our tool names (provider names such as Claude's `Bash`, the
/// shell's `bash`, or an ACP kind already, as the ACP provider records them).
pub(crate) fn tool_kind(name: &str) -> &'static str {
    match name.to_ascii_lowercase().as_str() {
        "read" | "read_file" | "view" | "notebookread" | "ls" | "list" => "read",
        "edit" | "write" | "multiedit" | "notebookedit" | "apply_patch" | "write_file" | "str_replace" => "edit",
        "delete" | "rm" => "delete",
        "move" | "mv" | "rename" => "move",
        "search" | "grep" | "glob" | "find" | "websearch" | "web_search" => "search",
        "execute" | "bash" | "shell" | "exec" | "command" | "command_execution" | "local_shell" => "execute",
        "think" | "todowrite" | "task" => "think",
        "fetch" | "webfetch" | "web_fetch" => "fetch",
        "switch_mode" | "exitplanmode" => "switch_mode",
        _ => "other",
    }
}

fn tool_call(event: &Event) -> Value {
    let name = event.data_str(keys::TOOL_NAME).unwrap_or("tool");
    let title = event.data_str("title").unwrap_or(name);
    let status = event.data_str("status").filter(|s| matches!(*s, "pending" | "in_progress")).unwrap_or("in_progress");
    let mut update = json!({
        "sessionUpdate": "tool_call",
        "toolCallId": tool_call_id(event),
        "title": title,
        "kind": tool_kind(name),
        "status": status,
    });
    if let Some(input) = event.data.get(keys::TOOL_INPUT).filter(|v| !v.is_null()) {
        update["rawInput"] = input.clone();
    }
    update
}

fn tool_call_update(event: &Event) -> Value {
    let failed = event.kind == EventKind::ToolCallFailed;
    let mut update = json!({
        "sessionUpdate": "tool_call_update",
        "toolCallId": tool_call_id(event),
        "status": if failed { "failed" } else { "completed" },
    });
    if let Some(output) = event.data.get(keys::TOOL_OUTPUT).filter(|v| !v.is_null()) {
        update["rawOutput"] = output.clone();
        let text = match output {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        if !text.is_empty() {
            update["content"] = json!([{"type": "content", "content": {"type": "text", "text": text}}]);
        }
    }
    update
}

/// A `plan` update from the entries an ACP agent reported (`provider_raw` with
/// `raw_type: "plan"` and `data.plan`); entries without text are dropped, missing priority /
/// status default to `medium` / `pending`.
fn plan(event: &Event) -> Option<Value> {
    let entries = event.data.get("plan")?.as_array()?;
    let entries: Vec<Value> = entries
        .iter()
        .filter_map(|entry| {
            let content = entry.get("content")?.as_str()?;
            let priority = entry
                .get("priority")
                .and_then(Value::as_str)
                .filter(|p| matches!(*p, "high" | "medium" | "low"))
                .unwrap_or("medium");
            let status = entry
                .get("status")
                .and_then(Value::as_str)
                .filter(|s| matches!(*s, "pending" | "in_progress" | "completed"))
                .unwrap_or("pending");
            Some(json!({"content": content, "priority": priority, "status": status}))
        })
        .collect();
    Some(json!({"sessionUpdate": "plan", "entries": entries}))
}

/// How a run ended, as the `session/prompt` answer: a stop reason, or an error.
pub(crate) fn outcome(run: &Run) -> Result<&'static str, RpcError> {
    match run.status {
        RunStatus::Completed => Ok("end_turn"),
        RunStatus::Cancelled => Ok("cancelled"),
        _ => {
            let error = run.error.clone().unwrap_or_else(|| {
                Error::new(ErrorCode::InternalError, format!("run {} ended as {}", run.id, run.status))
            });
            match limit_stop_reason(&error) {
                Some(reason) => Ok(reason),
                None => Err(rpc_error(&error).with_run(run)),
            }
        }
    }
}

/// The ACP stop reason of a run that ended on a limit: a provider's `max_tokens` /
/// `max_turns` / `max_turn_requests` / `refusal`, or a policy budget (`total_tokens` ->
/// `max_tokens`, any other budget -> `max_turn_requests`).
fn limit_stop_reason(error: &Error) -> Option<&'static str> {
    match error.details().get("reason").and_then(Value::as_str) {
        Some("max_tokens") => return Some("max_tokens"),
        Some("max_turns" | "max_turn_requests") => return Some("max_turn_requests"),
        Some("refusal") => return Some("refusal"),
        _ => {}
    }
    if error.code() != ErrorCode::PolicyViolation {
        return None;
    }
    let violations = error.details().get("violations")?.as_array()?;
    let budgets: Vec<&str> = violations
        .iter()
        .filter(|v| v.get("kind").and_then(Value::as_str) == Some("budget_exceeded"))
        .filter_map(|v| v.get("details")?.get("metric")?.as_str())
        .collect();
    if budgets.is_empty() {
        return None;
    }
    Some(if budgets.contains(&"total_tokens") { "max_tokens" } else { "max_turn_requests" })
}

/// Our error as a JSON-RPC error: validation -> `-32602`, unknown session or run -> `-32002`,
/// anything else `-32603`; `data.code` is our error code, `data.details` its details.
pub(crate) fn rpc_error(error: &Error) -> RpcError {
    let code = match error.code() {
        ErrorCode::SessionNotFound | ErrorCode::RunNotFound | ErrorCode::NotFound => RESOURCE_NOT_FOUND,
        _ if error.category() == ErrorCategory::Validation => INVALID_PARAMS,
        _ => INTERNAL_ERROR,
    };
    let mut data = Map::new();
    data.insert("code".into(), error.code().as_str().into());
    if !error.details().is_empty() {
        data.insert("details".into(), Value::Object(error.details().clone()));
    }
    if let Some(provider_error) = error.provider_error().and_then(|p| serde_json::to_value(p).ok()) {
        data.insert("providerError".into(), provider_error);
    }
    RpcError { code, message: error.message().to_owned(), data: Some(Value::Object(data)) }
}

/// Adds the run (and its session) to an error's data.
pub(crate) trait WithRun {
    fn with_run(self, run: &Run) -> Self;
}

impl WithRun for RpcError {
    fn with_run(mut self, run: &Run) -> Self {
        if let Some(Value::Object(data)) = &mut self.data {
            data.insert("runId".into(), run.id.as_str().into());
            data.insert("sessionId".into(), run.session_id.as_str().into());
        }
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use asm_core::{RunId, SessionId};

    fn ev(kind: EventKind, data: Value) -> Event {
        let Value::Object(map) = data else { panic!("object") };
        Event::new(kind, SessionId::new()).with_run(RunId::new()).with_payload(map)
    }

    #[test]
    fn streamed_text_is_not_repeated_by_the_final_message() {
        let mut m = UpdateMapper::new(Mode::Live);
        let a = m.map(&ev(EventKind::MessageStreamed, json!({"content": "He"}))).unwrap();
        let b = m.map(&ev(EventKind::MessageStreamed, json!({"content": "llo"}))).unwrap();
        assert_eq!(a["messageId"], b["messageId"], "one message");
        assert!(m.map(&ev(EventKind::MessageReceived, json!({"role": "assistant", "content": "Hello"}))).is_none());
        let whole = m.map(&ev(EventKind::MessageReceived, json!({"role": "assistant", "content": "Bye"}))).unwrap();
        assert_eq!(whole["content"]["text"], "Bye");
        assert_ne!(whole["messageId"], a["messageId"]);
        assert!(m.map(&ev(EventKind::MessageReceived, json!({"role": "tool", "content": "out"}))).is_none());
    }

    #[test]
    fn user_input_only_on_load() {
        let sent = ev(EventKind::MessageSent, json!({"role": "user", "content": "hi"}));
        assert!(UpdateMapper::new(Mode::Live).map(&sent).is_none());
        let update = UpdateMapper::new(Mode::Load).map(&sent).unwrap();
        assert_eq!(update["sessionUpdate"], "user_message_chunk");
    }

    #[test]
    fn tools_reasoning_and_plans() {
        let mut m = UpdateMapper::new(Mode::Live);
        let call = m
            .map(&ev(
                EventKind::ToolCallStarted,
                json!({"tool_call_id": "t1", "tool_name": "Bash", "tool_input": {"command": "ls"}}),
            ))
            .unwrap();
        assert_eq!(
            call,
            json!({"sessionUpdate": "tool_call", "toolCallId": "t1", "title": "Bash", "kind": "execute",
                   "status": "in_progress", "rawInput": {"command": "ls"}})
        );
        let failed =
            m.map(&ev(EventKind::ToolCallFailed, json!({"tool_call_id": "t1", "tool_output": "boom"}))).unwrap();
        assert_eq!(
            (failed["status"].as_str(), failed["content"][0]["content"]["text"].as_str()),
            (Some("failed"), Some("boom"))
        );
        let thought = m.map(&ev(EventKind::ReasoningCompleted, json!({"content": "hmm"}))).unwrap();
        assert_eq!(thought["sessionUpdate"], "agent_thought_chunk");
        let plan = m
            .map(&ev(EventKind::ProviderRaw, json!({"raw": "{}", "raw_type": "plan", "plan": [{"content": "a"}]})))
            .unwrap();
        assert_eq!(plan["entries"][0], json!({"content": "a", "priority": "medium", "status": "pending"}));
        assert!(m.map(&ev(EventKind::ProviderRaw, json!({"raw": "x"}))).is_none());
    }

    #[test]
    fn stop_reasons() {
        let error = Error::new(ErrorCode::ProviderError, "x").with_detail("reason", "max_turns");
        assert_eq!(limit_stop_reason(&error), Some("max_turn_requests"));
        let budget = Error::new(ErrorCode::PolicyViolation, "x")
            .with_detail("violations", json!([{"kind": "budget_exceeded", "details": {"metric": "total_tokens"}}]));
        assert_eq!(limit_stop_reason(&budget), Some("max_tokens"));
        assert_eq!(limit_stop_reason(&Error::new(ErrorCode::ProviderError, "x")), None);
        assert_eq!(rpc_error(&Error::new(ErrorCode::SessionNotFound, "x")).code, RESOURCE_NOT_FOUND);
        assert_eq!(rpc_error(&Error::new(ErrorCode::ValidationError, "x")).code, INVALID_PARAMS);
    }
}
