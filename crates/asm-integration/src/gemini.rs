//! The Gemini API side (`generativelanguage.googleapis.com` v1beta, as `@google/genai` calls
//! it): which reply a request gets and the SSE chunks for it.
//!
//! Gemini CLI 0.61 (`GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:<port>`, `GEMINI_API_KEY`) sends
//! `POST /v1beta/models/<model>:streamGenerateContent?alt=sse` with header `x-goog-api-key` and
//! a body `{contents, systemInstruction, tools, generationConfig}` (captured in
//! `fixtures/gemini-cli-0.61.0/`); side requests (the model router's classifier when the model
//! is `auto`) use `:generateContent` without a stream. The stream is server-sent events without
//! event names: each `data:` line is a whole `GenerateContentResponse`
//! (`candidates[0].content.parts` = text or `functionCall` parts; the last chunk carries
//! `finishReason` and `usageMetadata`). A tool result comes back as a user content with a
//! `functionResponse` part whose `response.output` is the tool's text (for `run_shell_command`:
//! `Output: <stdout>` and more lines, inside `<untrusted_context>`).
//!
//! The tool scenario runs [`SHELL_COMMAND`] rather than [`TOOL_COMMAND`](crate::TOOL_COMMAND):
//! Gemini CLI runs commands of its read-only list (`echo`, `cat`, `ls`, ...) without asking,
//! and the tool round trip is meant to go through `session/request_permission`.

use serde_json::{Value, json};

use crate::scenario::{Reply, SLOW_CHUNK_PREFIX, Scenario, TEXT_REPLY, tool_followup_text};
use crate::server::{Ctx, Response, SLOW_CHUNKS, SLOW_INTERVAL, Step};

/// Prompt tokens reported for every request.
const PROMPT_TOKENS: u64 = 100;
/// Candidate tokens reported for every request.
const CANDIDATE_TOKENS: u64 = 10;
/// The name of Gemini CLI's shell tool, which the tool scenario calls.
pub(crate) const SHELL_TOOL: &str = "run_shell_command";
/// The command of the Gemini tool scenario: prints `hi` like
/// [`TOOL_COMMAND`](crate::TOOL_COMMAND), but is not on Gemini CLI's list of commands it runs
/// without asking, so the CLI sends `session/request_permission` first.
pub const SHELL_COMMAND: &str = "printf 'hi\\n'";

/// Whether `path` (without the query) is a model request: `/v1beta/models/<model>:` then
/// `streamGenerateContent` or `generateContent`.
pub(crate) fn is_model_path(path: &str) -> bool {
    model_and_stream(path).is_some()
}

/// The model named by a model request path and whether it asks for a stream.
pub(crate) fn model_and_stream(path: &str) -> Option<(String, bool)> {
    let rest = path.strip_prefix("/v1beta/models/")?;
    let (model, method) = rest.split_once(':')?;
    let stream = match method {
        "streamGenerateContent" => true,
        "generateContent" => false,
        _ => return None,
    };
    (!model.is_empty() && !model.contains('/')).then(|| (model.to_owned(), stream))
}

/// The reply for a request body: a tool follow-up when the newest content carries a
/// `functionResponse`, else the scenario of the marker in the newest user content's text;
/// `None` without a marker.
pub(crate) fn pick_reply(body: &Value) -> Option<Reply> {
    let last = body.get("contents")?.as_array()?.last()?;
    let parts = last.get("parts")?.as_array()?;
    if let Some(response) = parts.iter().rev().find_map(|p| p.get("functionResponse")) {
        let output = response.get("response").map(response_text).unwrap_or_default();
        return Some(Reply::ToolFollowup(shell_output(&output)));
    }
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let text = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n");
    Scenario::find_marker(&text).map(Reply::Scenario)
}

/// The text of a `functionResponse.response`: its `output` (or `error`), else the JSON.
fn response_text(response: &Value) -> String {
    ["output", "error"]
        .iter()
        .find_map(|k| response.get(*k).and_then(Value::as_str))
        .map_or_else(|| response.to_string(), str::to_owned)
}

/// The command's stdout in a `run_shell_command` result (`Output: <text>` up to the next
/// field line), or the whole result when it has no `Output:` field.
fn shell_output(result: &str) -> String {
    let Some((_, after)) = result.split_once("Output: ") else { return result.to_owned() };
    let ends = [
        "\nError:",
        "\nExit Code:",
        "\nSignal:",
        "\nBackground PIDs:",
        "\nProcess Group PGID:",
        "\n</untrusted_context>",
    ];
    let end = ends.iter().filter_map(|e| after.find(e)).min().unwrap_or(after.len());
    after[..end].to_owned()
}

fn usage() -> Value {
    json!({
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": CANDIDATE_TOKENS,
        "totalTokenCount": PROMPT_TOKENS + CANDIDATE_TOKENS
    })
}

/// One `GenerateContentResponse` with `parts`; the last one of a reply carries
/// `finishReason: STOP` and the usage.
fn chunk(ctx: &Ctx, parts: &Value, last: bool) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    let mut chunk = json!({"candidates": [], "modelVersion": ctx.model, "responseId": format!("resp_fake_{}", ctx.n)});
    if last {
        candidate["finishReason"] = json!("STOP");
        chunk["usageMetadata"] = usage();
    }
    chunk["candidates"] = json!([candidate]);
    chunk
}

/// The SSE text of one chunk (`data:` only, as the Gemini API sends it).
fn data(value: &Value) -> Step {
    Step::Send(format!("data: {value}\r\n\r\n"))
}

fn text_parts(text: &str) -> Vec<Value> {
    text.split_inclusive(' ').map(|t| json!([{"text": t}])).collect()
}

/// The response to a model request.
pub(crate) fn respond(reply: &Reply, ctx: &Ctx) -> Response {
    let headers = vec![("x-goog-request-id", format!("req_fake_{}", ctx.n))];
    let parts: Vec<Value> = match reply {
        Reply::Scenario(Scenario::HttpError(status)) => {
            return Response::json(*status, headers, &error_body(*status, &format!("fake {status} error")));
        }
        Reply::Scenario(Scenario::Slow | Scenario::StreamFailed) if ctx.stream => {
            return stream_special(reply, ctx, headers);
        }
        Reply::Scenario(Scenario::ToolUse) => vec![
            json!([{"text": "I'll run a command."}]),
            json!([{"functionCall": {"name": SHELL_TOOL, "args": {"command": SHELL_COMMAND, "description": "Print hi"}}}]),
        ],
        Reply::ToolFollowup(output) => text_parts(&tool_followup_text(output)),
        Reply::Scenario(_) => text_parts(TEXT_REPLY),
    };
    if !ctx.stream {
        // One response: consecutive text parts joined into one.
        let mut all: Vec<Value> = Vec::new();
        for part in parts.iter().filter_map(Value::as_array).flatten() {
            let text = part.get("text").and_then(Value::as_str);
            match (all.last_mut(), text) {
                (Some(prev), Some(text)) if prev.get("text").is_some() => {
                    let joined = format!("{}{text}", prev["text"].as_str().unwrap_or_default());
                    prev["text"] = json!(joined);
                }
                _ => all.push(part.clone()),
            }
        }
        return Response::json(200, headers, &chunk(ctx, &Value::Array(all), true));
    }
    let count = parts.len();
    let steps = parts.into_iter().enumerate().map(|(i, p)| data(&chunk(ctx, &p, i + 1 == count))).collect();
    Response::Stream { headers, steps }
}

fn stream_special(reply: &Reply, ctx: &Ctx, headers: Vec<(&'static str, String)>) -> Response {
    if *reply == Reply::Scenario(Scenario::StreamFailed) {
        let steps = vec![
            data(&chunk(ctx, &json!([{"text": "partial "}]), false)),
            data(&error_body(500, "fake failure from server")),
        ];
        return Response::Stream { headers, steps };
    }
    let mut steps = Vec::with_capacity(SLOW_CHUNKS * 2);
    for i in 0..SLOW_CHUNKS {
        let last = i + 1 == SLOW_CHUNKS;
        steps.push(data(&chunk(ctx, &json!([{"text": format!("{SLOW_CHUNK_PREFIX}{i} ")}]), last)));
        if !last {
            steps.push(Step::Pause(SLOW_INTERVAL));
        }
    }
    Response::Stream { headers, steps }
}

/// The Google API error body for `status` (`{error: {code, message, status}}`).
fn error_body(status: u16, message: &str) -> Value {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    json!({"error": {"code": status, "message": message, "status": name}})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn model_paths_name_the_model_and_the_stream() {
        assert_eq!(
            model_and_stream("/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            Some(("gemini-2.5-flash".to_owned(), true))
        );
        assert_eq!(model_and_stream("/v1beta/models/m:generateContent"), Some(("m".to_owned(), false)));
        assert_eq!(model_and_stream("/v1beta/models/m:countTokens"), None);
        assert_eq!(model_and_stream("/v1/models/m:generateContent"), None);
        assert!(!is_model_path("/"));
    }

    #[test]
    fn picks_marker_of_newest_user_content_and_function_responses() {
        let body = json!({"contents": [
            {"role": "user", "parts": [{"text": "<session_context>..</session_context>"}, {"text": "run [asm-fake:tool]"}]}
        ]});
        assert_eq!(pick_reply(&body), Some(Reply::Scenario(Scenario::ToolUse)));
        let output = "<untrusted_context>\nOutput: hi\nProcess Group PGID: 19443\n</untrusted_context>";
        let body = json!({"contents": [
            {"role": "user", "parts": [{"text": "[asm-fake:tool]"}]},
            {"role": "model", "parts": [{"functionCall": {"name": SHELL_TOOL, "args": {"command": "echo hi"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": SHELL_TOOL, "response": {"output": output}}}]}
        ]});
        assert_eq!(pick_reply(&body), Some(Reply::ToolFollowup("hi".to_owned())));
        assert_eq!(pick_reply(&json!({"contents": [{"role": "user", "parts": [{"text": "plain"}]}]})), None);
        assert_eq!(pick_reply(&json!({})), None);
    }

    #[test]
    fn streams_text_chunks_and_ends_with_usage() {
        let ctx = Ctx { n: 3, model: "gemini-2.5-flash".to_owned(), stream: true };
        let Response::Stream { steps, .. } = respond(&Reply::Scenario(Scenario::Text), &ctx) else {
            panic!("expected a stream")
        };
        let chunks: Vec<Value> = steps
            .iter()
            .map(|s| match s {
                Step::Send(text) => serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap(),
                Step::Pause(_) => panic!("no pause expected"),
            })
            .collect();
        let text: String =
            chunks.iter().map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap()).collect();
        assert_eq!(text, TEXT_REPLY);
        let last = chunks.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["promptTokenCount"], PROMPT_TOKENS);
        let ctx = Ctx { stream: false, ..ctx };
        let Response::Full { status, body, .. } = respond(&Reply::Scenario(Scenario::ToolUse), &ctx) else {
            panic!("expected a full response")
        };
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["candidates"][0]["content"]["parts"][1]["functionCall"]["name"], SHELL_TOOL);
        assert_eq!(error_body(429, "x")["error"]["status"], "RESOURCE_EXHAUSTED");
    }
}
