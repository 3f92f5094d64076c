//! `session/update` notifications → normalized events.

use std::collections::HashMap;

use serde_json::{Map, Value};

use asm_core::{EventKind, keys};
use asm_ports::ProviderEvent;
use asm_provider_cli::raw_event;

/// What one prompt turn has seen: the agent's text, the open streamed segment, tool calls.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    /// The last streamed segment of the turn that was closed (the turn's final answer: the
    /// text after its last tool call).
    pub(crate) text: String,
    /// The streamed segment not yet closed by a `message_received`.
    open: String,
    tools: HashMap<String, Tool>,
    /// The session's cost in USD, from the latest `usage_update` that reported one.
    pub(crate) cost_usd: Option<f64>,
}

#[derive(Debug, Default, Clone)]
struct Tool {
    name: String,
    input: Map<String, Value>,
    title: Option<String>,
}

fn text_of(content: &Value) -> Option<&str> {
    (content.get("type").and_then(Value::as_str) == Some("text")).then(|| content.get("text")?.as_str()).flatten()
}

fn input_object(raw: Option<&Value>) -> Option<Map<String, Value>> {
    match raw? {
        Value::Object(m) => Some(m.clone()),
        Value::Null => None,
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other.clone());
            Some(m)
        }
    }
}

/// The tool output of an update: `rawOutput`, else the text of its content (joined), else the
/// content itself.
fn output_of(update: &Value) -> Value {
    if let Some(raw) = update.get("rawOutput").filter(|v| !v.is_null()) {
        return raw.clone();
    }
    let Some(content) = update.get("content").and_then(Value::as_array) else {
        return Value::Null;
    };
    let texts: Vec<&str> = content.iter().filter_map(|c| c.get("content").and_then(text_of)).collect();
    if texts.is_empty() { Value::Array(content.clone()) } else { Value::String(texts.join("\n")) }
}

impl Turn {
    /// Closes the open streamed segment with a `message_received` (before a tool call and at
    /// the end of the turn), so the transcript gets one assistant message per segment.
    pub(crate) fn close_segment(&mut self, out: &mut Vec<ProviderEvent>) {
        if !self.open.is_empty() {
            let text = std::mem::take(&mut self.open);
            self.text.clone_from(&text);
            out.push(
                ProviderEvent::new(EventKind::MessageReceived).data(keys::CONTENT, text).data(keys::ROLE, "assistant"),
            );
        }
    }

    fn tool_event(&self, kind: EventKind, id: &str, tool: &Tool, status: Option<&str>) -> ProviderEvent {
        let mut e = ProviderEvent::new(kind)
            .data(keys::TOOL_CALL_ID, id)
            .data(keys::TOOL_NAME, tool.name.clone())
            .data(keys::TOOL_INPUT, Value::Object(tool.input.clone()));
        if let Some(title) = &tool.title {
            e = e.data("title", title.clone());
        }
        if let Some(status) = status {
            e = e.data("status", status);
        }
        e
    }

    fn finish_tool(&mut self, id: &str, status: &str, update: &Value, out: &mut Vec<ProviderEvent>) {
        let tool = self.tools.remove(id).unwrap_or_else(|| Tool { name: "other".into(), ..Tool::default() });
        let kind = if status == "failed" { EventKind::ToolCallFailed } else { EventKind::ToolCallCompleted };
        let mut e = self.tool_event(kind, id, &tool, Some(status)).data(keys::TOOL_OUTPUT, output_of(update));
        if kind == EventKind::ToolCallFailed {
            e = e.data(keys::IS_ERROR, true);
        }
        out.push(e);
    }

    /// Maps the `update` of one `session/update` (its `params.update`); `line` is the whole
    /// notification, kept by raw events.
    pub(crate) fn apply(&mut self, update: &Value, line: &str, out: &mut Vec<ProviderEvent>) {
        let kind = update.get("sessionUpdate").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "agent_message_chunk" => match update.get("content").and_then(text_of) {
                Some(text) if !text.is_empty() => {
                    self.open.push_str(text);
                    out.push(
                        ProviderEvent::new(EventKind::MessageStreamed)
                            .data(keys::CONTENT, text)
                            .data(keys::DELTA, text),
                    );
                }
                Some(_) => {}
                None => out.push(raw_event(line, Some(kind), "non_text_content")),
            },
            "agent_thought_chunk" => match update.get("content").and_then(text_of) {
                Some(text) => out.push(
                    ProviderEvent::new(EventKind::ReasoningStreamed).data(keys::CONTENT, text).data(keys::DELTA, text),
                ),
                None => out.push(raw_event(line, Some(kind), "non_text_content")),
            },
            "tool_call" => {
                let Some(id) = update.get("toolCallId").and_then(Value::as_str) else {
                    out.push(raw_event(line, Some(kind), "missing_tool_call_id"));
                    return;
                };
                self.close_segment(out);
                let tool = Tool {
                    name: update.get("kind").and_then(Value::as_str).unwrap_or("other").to_owned(),
                    input: input_object(update.get("rawInput")).unwrap_or_default(),
                    title: update.get("title").and_then(Value::as_str).map(str::to_owned),
                };
                let status = update.get("status").and_then(Value::as_str);
                out.push(self.tool_event(EventKind::ToolCallStarted, id, &tool, status));
                self.tools.insert(id.to_owned(), tool);
                if let Some(status @ ("completed" | "failed")) = status {
                    self.finish_tool(id, status, update, out);
                }
            }
            "tool_call_update" => {
                let Some(id) = update.get("toolCallId").and_then(Value::as_str) else {
                    out.push(raw_event(line, Some(kind), "missing_tool_call_id"));
                    return;
                };
                if let Some(tool) = self.tools.get_mut(id) {
                    if let Some(input) = input_object(update.get("rawInput")) {
                        tool.input = input;
                    }
                    if let Some(name) = update.get("kind").and_then(Value::as_str) {
                        name.clone_into(&mut tool.name);
                    }
                    if let Some(title) = update.get("title").and_then(Value::as_str) {
                        tool.title = Some(title.to_owned());
                    }
                }
                match update.get("status").and_then(Value::as_str) {
                    Some(status @ ("completed" | "failed")) => {
                        self.close_segment(out);
                        self.finish_tool(id, status, update, out);
                    }
                    _ => out.push(raw_event(line, Some(kind), "tool_call_progress")),
                }
            }
            "usage_update" => {
                let cost = update.get("cost").filter(|c| c.get("currency").and_then(Value::as_str) == Some("USD"));
                if let Some(amount) = cost.and_then(|c| c.get("amount")).and_then(Value::as_f64) {
                    self.cost_usd = Some(amount);
                }
                out.push(raw_event(line, Some(kind), "usage_update"));
            }
            "plan" => {
                let entries = update.get("entries").cloned().unwrap_or(Value::Array(Vec::new()));
                out.push(raw_event(line, Some(kind), "plan").data("plan", entries));
            }
            _ => out.push(raw_event(line, (!kind.is_empty()).then_some(kind), "unknown_update")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::needless_pass_by_value)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(turn: &mut Turn, update: Value) -> Vec<ProviderEvent> {
        let mut out = Vec::new();
        turn.apply(&update, &update.to_string(), &mut out);
        out
    }

    #[test]
    fn tool_call_lifecycle_uses_canonical_keys() {
        let mut turn = Turn::default();
        let streamed =
            apply(&mut turn, json!({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"Hi"}}));
        assert_eq!(streamed[0].kind, EventKind::MessageStreamed);
        let started = apply(
            &mut turn,
            json!({"sessionUpdate":"tool_call","toolCallId":"t1","title":"Read a.txt","kind":"read","status":"pending","rawInput":{"path":"a.txt"}}),
        );
        assert_eq!(started[0].kind, EventKind::MessageReceived, "the streamed segment is closed first");
        assert_eq!(started[1].kind, EventKind::ToolCallStarted);
        assert_eq!(started[1].data["tool_name"], "read");
        assert_eq!(started[1].data["tool_input"]["path"], "a.txt");
        let progress =
            apply(&mut turn, json!({"sessionUpdate":"tool_call_update","toolCallId":"t1","status":"in_progress"}));
        assert_eq!(progress[0].kind, EventKind::ProviderRaw);
        let done = apply(
            &mut turn,
            json!({"sessionUpdate":"tool_call_update","toolCallId":"t1","status":"completed","content":[{"type":"content","content":{"type":"text","text":"data"}}]}),
        );
        assert_eq!(done[0].kind, EventKind::ToolCallCompleted);
        assert_eq!(done[0].data["tool_output"], "data");
        assert_eq!(done[0].data["tool_call_id"], "t1");
        let failed = apply(
            &mut turn,
            json!({"sessionUpdate":"tool_call","toolCallId":"t2","kind":"execute","status":"failed","rawOutput":{"code":1}}),
        );
        assert_eq!(
            failed.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventKind::ToolCallStarted, EventKind::ToolCallFailed]
        );
        assert_eq!(failed[1].data["is_error"], true);
        assert_eq!(turn.text, "Hi", "the output is the last closed segment");
    }

    #[test]
    fn thoughts_plans_and_unknown_updates() {
        let mut turn = Turn::default();
        let t = apply(&mut turn, json!({"sessionUpdate":"agent_thought_chunk","content":{"type":"text","text":"hmm"}}));
        assert_eq!(t[0].kind, EventKind::ReasoningStreamed);
        let p = apply(
            &mut turn,
            json!({"sessionUpdate":"plan","entries":[{"content":"a","priority":"high","status":"pending"}]}),
        );
        assert_eq!((p[0].kind, p[0].data["raw_type"].as_str()), (EventKind::ProviderRaw, Some("plan")));
        assert_eq!(p[0].data["plan"][0]["content"], "a");
        let u = apply(&mut turn, json!({"sessionUpdate":"available_commands_update","availableCommands":[]}));
        assert_eq!(u[0].kind, EventKind::ProviderRaw);
        assert_eq!(u[0].metadata["raw_reason"], "unknown_update");
        assert!(turn.text.is_empty());
        let usage = apply(
            &mut turn,
            json!({"sessionUpdate":"usage_update","used":101,"size":200000,"cost":{"amount":0.5,"currency":"USD"}}),
        );
        assert_eq!(usage[0].kind, EventKind::ProviderRaw);
        assert_eq!(turn.cost_usd, Some(0.5));
    }
}
