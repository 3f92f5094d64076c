//! The Anthropic Messages side: which reply a request gets and the SSE events for it.
//!
//! Event sequence (what Claude Code 2.1 needs, spec section 1): `message_start` (with usage),
//! `ping`, per block `content_block_start` / `content_block_delta` (`text_delta` or
//! `input_json_delta`) / `content_block_stop`, then `message_delta` (`stop_reason`,
//! `usage.output_tokens`) and `message_stop`.

use serde_json::{Value, json};

use crate::http::sse_event;
use crate::scenario::{Reply, SLOW_CHUNK_PREFIX, Scenario, TEXT_REPLY, TOOL_COMMAND, text_of, tool_followup_text};
use crate::server::{Ctx, Response, SLOW_CHUNKS, SLOW_INTERVAL, Step};

/// Input tokens reported for every request.
const INPUT_TOKENS: u64 = 100;

/// The reply for a request body: a tool follow-up when the newest user message carries a
/// `tool_result`, else the scenario of the marker in its text; `None` without a marker.
pub(crate) fn pick_reply(body: &Value) -> Option<Reply> {
    let last_user = body.get("messages")?.as_array()?.iter().rev().find(|m| m.get("role") == Some(&json!("user")))?;
    let content = last_user.get("content")?;
    if let Some(blocks) = content.as_array()
        && let Some(result) = blocks.iter().rev().find(|b| b.get("type") == Some(&json!("tool_result")))
    {
        return Some(Reply::ToolFollowup(tool_result_text(result.get("content"))));
    }
    Scenario::find_marker(&text_of(content)).map(Reply::Scenario)
}

fn tool_result_text(content: Option<&Value>) -> String {
    content.map(text_of).unwrap_or_default()
}

/// One content block of a reply.
enum Block {
    /// Text, sent as these deltas.
    Text(Vec<String>),
    /// A tool call.
    ToolUse { id: String, name: &'static str, input: Value },
}

fn text_deltas(text: &str) -> Vec<String> {
    let mut deltas: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    if deltas.is_empty() {
        deltas.push(String::new());
    }
    deltas
}

/// The response to a model request.
pub(crate) fn respond(reply: &Reply, ctx: &Ctx) -> Response {
    let headers = vec![("request-id", format!("req_fake_{}", ctx.n))];
    let (blocks, stop_reason) = match reply {
        Reply::Scenario(Scenario::HttpError(status)) => {
            return Response::json(*status, headers, &error_body(*status, &format!("fake {status} error")));
        }
        Reply::Scenario(Scenario::Slow) if ctx.stream => return slow(ctx, headers),
        Reply::Scenario(Scenario::StreamFailed) if ctx.stream => {
            let steps = vec![
                Step::Send(sse_event("message_start", &message_start(ctx))),
                Step::Send(sse_event("error", &error_body(529, "fake failure from server"))),
            ];
            return Response::Stream { headers, steps };
        }
        Reply::Scenario(Scenario::ToolUse) => (
            vec![
                Block::Text(text_deltas("I'll run a command.")),
                Block::ToolUse {
                    id: format!("toolu_fake_{}", ctx.n),
                    name: "Bash",
                    input: json!({"command": TOOL_COMMAND, "description": "Print hi"}),
                },
            ],
            "tool_use",
        ),
        Reply::ToolFollowup(output) => (vec![Block::Text(text_deltas(&tool_followup_text(output)))], "end_turn"),
        Reply::Scenario(Scenario::Slow) => (vec![Block::Text(vec![format!("{SLOW_CHUNK_PREFIX}0 ")])], "end_turn"),
        Reply::Scenario(_) => (vec![Block::Text(text_deltas(TEXT_REPLY))], "end_turn"),
    };
    if !ctx.stream {
        return Response::json(200, headers, &whole_message(ctx, &blocks, stop_reason));
    }
    let mut steps = vec![Step::Send(sse_event("message_start", &message_start(ctx))), Step::Send(ping())];
    let mut output_tokens = 1u64;
    for (index, block) in blocks.iter().enumerate() {
        match block {
            Block::Text(deltas) => {
                steps.push(Step::Send(sse_event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                )));
                for delta in deltas {
                    output_tokens += 1;
                    steps.push(Step::Send(text_delta(index, delta)));
                }
            }
            Block::ToolUse { id, name, input } => {
                steps.push(Step::Send(sse_event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                )));
                output_tokens += 5;
                steps.push(Step::Send(sse_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
                )));
            }
        }
        steps.push(Step::Send(sse_event("content_block_stop", &json!({"type": "content_block_stop", "index": index}))));
    }
    steps.push(Step::Send(message_end(stop_reason, output_tokens)));
    Response::Stream { headers, steps }
}

fn slow(ctx: &Ctx, headers: Vec<(&'static str, String)>) -> Response {
    let mut steps = vec![
        Step::Send(sse_event("message_start", &message_start(ctx))),
        Step::Send(ping()),
        Step::Send(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        )),
    ];
    for i in 0..SLOW_CHUNKS {
        steps.push(Step::Send(text_delta(0, &format!("{SLOW_CHUNK_PREFIX}{i} "))));
        steps.push(Step::Pause(SLOW_INTERVAL));
    }
    steps.push(Step::Send(sse_event("content_block_stop", &json!({"type": "content_block_stop", "index": 0}))));
    steps.push(Step::Send(message_end("end_turn", SLOW_CHUNKS as u64)));
    Response::Stream { headers, steps }
}

fn usage_start() -> Value {
    json!({
        "input_tokens": INPUT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
        "service_tier": "standard"
    })
}

fn message_start(ctx: &Ctx) -> Value {
    json!({
        "type": "message_start",
        "message": {
            "id": format!("msg_fake_{}", ctx.n),
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage_start()
        }
    })
}

fn ping() -> String {
    sse_event("ping", &json!({"type": "ping"}))
}

fn text_delta(index: usize, text: &str) -> String {
    sse_event(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
    )
}

fn message_end(stop_reason: &str, output_tokens: u64) -> String {
    let delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}
    });
    sse_event("message_delta", &delta) + &sse_event("message_stop", &json!({"type": "message_stop"}))
}

fn whole_message(ctx: &Ctx, blocks: &[Block], stop_reason: &str) -> Value {
    let content: Vec<Value> = blocks
        .iter()
        .map(|b| match b {
            Block::Text(deltas) => json!({"type": "text", "text": deltas.concat()}),
            Block::ToolUse { id, name, input } => json!({"type": "tool_use", "id": id, "name": name, "input": input}),
        })
        .collect();
    let mut usage = usage_start();
    usage["output_tokens"] = json!(10);
    json!({
        "id": format!("msg_fake_{}", ctx.n),
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage
    })
}

/// The Anthropic error body for `status`.
fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn picks_marker_of_newest_user_message_and_tool_results() {
        let body = json!({"messages": [
            {"role": "user", "content": "[asm-fake:tool] first"},
            {"role": "assistant", "content": [{"type": "text", "text": "x"}]},
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>..</system-reminder>"}, {"type": "text", "text": "again [asm-fake:http429]"}]}
        ]});
        assert_eq!(pick_reply(&body), Some(Reply::Scenario(Scenario::HttpError(429))));
        let body = json!({"messages": [
            {"role": "user", "content": "[asm-fake:tool]"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "hi\n", "is_error": false}]}
        ]});
        assert_eq!(pick_reply(&body), Some(Reply::ToolFollowup("hi\n".to_owned())));
        assert_eq!(pick_reply(&json!({"messages": [{"role": "user", "content": "plain"}]})), None);
        assert_eq!(pick_reply(&json!({})), None);
    }

    #[test]
    fn non_streaming_requests_get_a_whole_message() {
        let ctx = Ctx { n: 7, model: "m".to_owned(), stream: false };
        let Response::Full { status, body, .. } = respond(&Reply::Scenario(Scenario::Text), &ctx) else {
            panic!("expected a full response")
        };
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["content"][0]["text"], TEXT_REPLY);
        assert_eq!(v["id"], "msg_fake_7");
    }
}
