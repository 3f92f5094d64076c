//! The OpenAI Responses side: which reply a request gets and the SSE events for it.
//!
//! Event sequence (what Codex 0.169 needs, spec section 2): `response.created`, per output item
//! `response.output_item.added` / (`response.output_text.delta`... / `response.output_text.done`)
//! / `response.output_item.done` (the item in `.done` is what Codex uses), then
//! `response.completed` with `usage`, or `response.failed` with `error{code, message}`.

use serde_json::{Value, json};

use crate::http::sse_event;
use crate::scenario::{
    Reply, SLOW_CHUNK_PREFIX, Scenario, TEXT_REPLY, TOOL_COMMAND, WRITE_TOOL_COMMAND, text_of, tool_followup_text,
};
use crate::server::{Ctx, Response, SLOW_CHUNKS, SLOW_INTERVAL, Step};

const INPUT_TOKENS: u64 = 100;
const OUTPUT_TOKENS: u64 = 10;

/// The reply for a request body: a tool follow-up when the newest input item is a tool call
/// output, else the scenario of the marker in the trailing user messages; `None` without one.
pub(crate) fn pick_reply(body: &Value) -> Option<Reply> {
    let input = body.get("input")?;
    if let Some(text) = input.as_str() {
        return Scenario::find_marker(text).map(Reply::Scenario);
    }
    let items = input.as_array()?;
    let last = items.last()?;
    let kind = last.get("type").and_then(Value::as_str).unwrap_or("message");
    if kind == "function_call_output" || kind == "custom_tool_call_output" {
        return Some(Reply::ToolFollowup(last.get("output").map(text_of).unwrap_or_default()));
    }
    // The user messages after the last model output (Codex sends its environment context as
    // a user message too).
    let mut texts = Vec::new();
    for item in items.iter().rev() {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
        let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
        if kind != "message" || role == "assistant" {
            break;
        }
        if role == "user" {
            texts.push(item.get("content").map(text_of).unwrap_or_default());
        }
    }
    texts.iter().find_map(|t| Scenario::find_marker(t)).map(Reply::Scenario)
}

/// Numbers the events of one response (`sequence_number`).
struct Events {
    seq: u64,
    steps: Vec<Step>,
}

impl Events {
    fn push(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        self.steps.push(Step::Send(sse_event(kind, &data)));
    }
}

fn message_item(ctx: &Ctx, text: &str, status: &str) -> Value {
    let content = if status == "completed" {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    } else {
        json!([])
    };
    json!({"id": format!("msg_fake_{}", ctx.n), "type": "message", "status": status, "role": "assistant", "content": content})
}

fn response_object(ctx: &Ctx, status: &str, output: &[Value]) -> Value {
    let mut r = json!({
        "id": format!("resp_fake_{}", ctx.n),
        "object": "response",
        "created_at": 1_790_000_000u64,
        "status": status,
        "model": ctx.model,
        "output": output,
    });
    if status == "completed" {
        r["usage"] = json!({
            "input_tokens": INPUT_TOKENS,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": OUTPUT_TOKENS,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS
        });
    }
    r
}

/// The response to a model request.
pub(crate) fn respond(reply: &Reply, ctx: &Ctx) -> Response {
    let headers = vec![("x-request-id", format!("req_fake_{}", ctx.n))];
    let item = match reply {
        Reply::Scenario(Scenario::HttpError(status)) => {
            return Response::json(*status, headers, &error_body(*status));
        }
        Reply::Scenario(scenario @ (Scenario::ToolUse | Scenario::ToolWrite)) => {
            let cmd = if *scenario == Scenario::ToolWrite { WRITE_TOOL_COMMAND } else { TOOL_COMMAND };
            json!({
                "id": format!("fc_fake_{}", ctx.n),
                "type": "function_call",
                "status": "completed",
                "name": "exec_command",
                "arguments": json!({"cmd": cmd}).to_string(),
                "call_id": format!("call_fake_{}", ctx.n)
            })
        }
        Reply::ToolFollowup(output) => message_item(ctx, &tool_followup_text(output), "completed"),
        Reply::Scenario(Scenario::Slow | Scenario::StreamFailed) if ctx.stream => {
            return stream_special(reply, ctx, headers);
        }
        Reply::Scenario(_) => message_item(ctx, TEXT_REPLY, "completed"),
    };
    if !ctx.stream {
        return Response::json(200, headers, &response_object(ctx, "completed", std::slice::from_ref(&item)));
    }
    let mut ev = Events { seq: 0, steps: Vec::new() };
    ev.push("response.created", json!({"response": response_object(ctx, "in_progress", &[])}));
    ev.push("response.in_progress", json!({"response": response_object(ctx, "in_progress", &[])}));
    let mut added = item.clone();
    if added["type"] == "message" {
        added = message_item(ctx, "", "in_progress");
    }
    ev.push("response.output_item.added", json!({"output_index": 0, "item": added}));
    if item["type"] == "message" {
        let text = item["content"][0]["text"].as_str().unwrap_or_default().to_owned();
        for delta in text.split_inclusive(' ') {
            ev.push(
                "response.output_text.delta",
                json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "delta": delta}),
            );
        }
        ev.push(
            "response.output_text.done",
            json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "text": text}),
        );
    }
    ev.push("response.output_item.done", json!({"output_index": 0, "item": item}));
    ev.push("response.completed", json!({"response": response_object(ctx, "completed", std::slice::from_ref(&item))}));
    Response::Stream { headers, steps: ev.steps }
}

fn stream_special(reply: &Reply, ctx: &Ctx, headers: Vec<(&'static str, String)>) -> Response {
    let mut ev = Events { seq: 0, steps: Vec::new() };
    ev.push("response.created", json!({"response": response_object(ctx, "in_progress", &[])}));
    if *reply == Reply::Scenario(Scenario::StreamFailed) {
        let mut failed = response_object(ctx, "failed", &[]);
        failed["error"] = json!({"code": "server_error", "message": "fake failure from server"});
        ev.push("response.failed", json!({"response": failed}));
        return Response::Stream { headers, steps: ev.steps };
    }
    let id = format!("msg_fake_{}", ctx.n);
    ev.push("response.output_item.added", json!({"output_index": 0, "item": message_item(ctx, "", "in_progress")}));
    let mut text = String::new();
    for i in 0..SLOW_CHUNKS {
        let delta = format!("{SLOW_CHUNK_PREFIX}{i} ");
        text.push_str(&delta);
        ev.push(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": 0, "content_index": 0, "delta": delta}),
        );
        ev.steps.push(Step::Pause(SLOW_INTERVAL));
    }
    let item = message_item(ctx, &text, "completed");
    ev.push("response.output_text.done", json!({"item_id": id, "output_index": 0, "content_index": 0, "text": text}));
    ev.push("response.output_item.done", json!({"output_index": 0, "item": item}));
    ev.push("response.completed", json!({"response": response_object(ctx, "completed", std::slice::from_ref(&item))}));
    Response::Stream { headers, steps: ev.steps }
}

/// The OpenAI error body for `status` (message `fake <status> error`).
fn error_body(status: u16) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("invalid_request_error", "forbidden"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        400..=499 => ("invalid_request_error", "invalid_request"),
        _ => ("server_error", "server_error"),
    };
    json!({"error": {"message": format!("fake {status} error"), "type": kind, "param": null, "code": code}})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn picks_marker_from_trailing_user_messages_and_tool_outputs() {
        let body = json!({"input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "[asm-fake:http500]"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run [asm-fake:tool]"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context/>"}]}
        ]});
        assert_eq!(pick_reply(&body), Some(Reply::Scenario(Scenario::ToolUse)));
        let body = json!({"input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "[asm-fake:tool]"}]},
            {"type": "function_call", "name": "exec_command", "arguments": "{}", "call_id": "c"},
            {"type": "function_call_output", "call_id": "c", "output": "Output:\nhi\n"}
        ]});
        assert_eq!(pick_reply(&body), Some(Reply::ToolFollowup("Output:\nhi\n".to_owned())));
        let body = json!({"input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "[asm-fake:tool]"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"}]}
        ]});
        assert_eq!(pick_reply(&body), None);
    }

    #[test]
    fn tool_scenarios_call_exec_command_with_their_command() {
        for (scenario, command) in [(Scenario::ToolUse, TOOL_COMMAND), (Scenario::ToolWrite, WRITE_TOOL_COMMAND)] {
            let ctx = Ctx { n: 3, model: "m".to_owned(), stream: false };
            let Response::Full { status, body, .. } = respond(&Reply::Scenario(scenario), &ctx) else {
                panic!("expected a full response")
            };
            assert_eq!(status, 200);
            let v: Value = serde_json::from_slice(&body).unwrap();
            let call = &v["output"][0];
            assert_eq!(call["name"], "exec_command");
            assert_eq!(call["call_id"], "call_fake_3");
            let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(args["cmd"], command);
        }
        assert!(WRITE_TOOL_COMMAND.contains(crate::WRITE_TOOL_FILE));
    }

    #[test]
    fn error_bodies_carry_the_fake_message() {
        assert_eq!(error_body(401)["error"]["message"], "fake 401 error");
        assert_eq!(error_body(429)["error"]["type"], "rate_limit_error");
        assert_eq!(error_body(503)["error"]["code"], "server_error");
    }
}
