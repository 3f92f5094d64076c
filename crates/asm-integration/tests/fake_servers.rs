#![allow(clippy::unwrap_used)]
//! The fake model servers, driven over loopback by a minimal hand-written HTTP client.

use std::time::Duration;

use asm_integration::{Api, FakeServer, Scenario, TEXT_REPLY, TOOL_COMMAND};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    /// `(event name, data)` of every server-sent event.
    fn events(&self) -> Vec<(String, Value)> {
        let text = String::from_utf8(self.body.clone()).unwrap();
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap().to_owned();
                let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                (name, serde_json::from_str(data).unwrap())
            })
            .collect()
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap(), 16).unwrap();
        raw = &raw[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

async fn request_raw(server: &FakeServer, raw: Vec<u8>) -> Reply {
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(&raw).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all)).await.unwrap().unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(all[..split].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let body = all[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked");
    Reply { status, body: if chunked { dechunk(&body) } else { body }, headers }
}

async fn request(server: &FakeServer, method: &str, target: &str, body: Option<&Value>) -> Reply {
    let body = body.map(Value::to_string).unwrap_or_default();
    let raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nx-api-key: sk-test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr(),
        body.len()
    );
    request_raw(server, raw.into_bytes()).await
}

fn claude_body(messages: &Value) -> Value {
    json!({"model": "claude-test", "stream": true, "max_tokens": 100, "messages": messages})
}

fn codex_body(input: &Value) -> Value {
    json!({"model": "gpt-5.5", "stream": true, "input": input})
}

fn user_text(text: &str) -> Value {
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
}

#[tokio::test]
async fn anthropic_text_stream_and_preflight() {
    let server = FakeServer::start(Api::AnthropicMessages).await.unwrap();
    assert_eq!(request(&server, "HEAD", "/", None).await.status, 200);
    let body = claude_body(&json!([{"role": "user", "content": [{"type": "text", "text": "hello"}]}]));
    let reply = request(&server, "POST", "/v1/messages?beta=true", Some(&body)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.header("request-id"), Some("req_fake_1"));
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names[1], "ping");
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(events[0].1["message"]["model"], "claude-test");
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 100);
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, TEXT_REPLY);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");

    let recorded = server.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!((recorded[0].method.as_str(), recorded[0].reply.as_str()), ("HEAD", "preflight"));
    assert_eq!(recorded[1].header("x-api-key"), Some("sk-test"));
    assert_eq!(recorded[1].path(), "/v1/messages");
    assert_eq!(recorded[1].body.as_ref().unwrap()["model"], "claude-test");
    assert_eq!(server.model_requests().len(), 1);
    assert_eq!(server.completed_streams(), 1);
}

#[tokio::test]
async fn anthropic_tool_round_trip() {
    let server = FakeServer::start(Api::AnthropicMessages).await.unwrap();
    let first = claude_body(&json!([{"role": "user", "content": format!("run it {}", Scenario::ToolUse.marker())}]));
    let events = request(&server, "POST", "/v1/messages", Some(&first)).await.events();
    let start = events
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .map(|(_, d)| d.clone())
        .unwrap();
    assert_eq!(start["content_block"]["name"], "Bash");
    let id = start["content_block"]["id"].as_str().unwrap().to_owned();
    let json_delta = events.iter().find(|(_, d)| d["delta"]["type"] == "input_json_delta").unwrap();
    let input: Value = serde_json::from_str(json_delta.1["delta"]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(input["command"], TOOL_COMMAND);
    let stop = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(stop.1["delta"]["stop_reason"], "tool_use");

    let second = claude_body(&json!([
        {"role": "user", "content": format!("run it {}", Scenario::ToolUse.marker())},
        {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "Bash", "input": input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "hi\n", "is_error": false}]}
    ]));
    let events = request(&server, "POST", "/v1/messages", Some(&second)).await.events();
    let text: String = events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_owned)).collect();
    assert_eq!(text, "The command printed: hi");
    let replies: Vec<String> = server.model_requests().into_iter().map(|r| r.reply).collect();
    assert_eq!(replies, ["tool", "tool_followup"]);
}

#[tokio::test]
async fn anthropic_http_errors() {
    let server = FakeServer::start(Api::AnthropicMessages).await.unwrap();
    for (status, kind) in
        [(429, "rate_limit_error"), (401, "authentication_error"), (500, "api_error"), (529, "overloaded_error")]
    {
        let body = claude_body(&json!([{"role": "user", "content": Scenario::HttpError(status).marker()}]));
        let reply = request(&server, "POST", "/v1/messages", Some(&body)).await;
        assert_eq!(reply.status, status);
        let v = reply.json();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], kind);
        assert_eq!(v["error"]["message"], format!("fake {status} error"));
    }
    // The default scenario applies without a marker.
    server.set_default_scenario(Scenario::HttpError(503));
    let body = claude_body(&json!([{"role": "user", "content": "plain"}]));
    assert_eq!(request(&server, "POST", "/v1/messages", Some(&body)).await.status, 503);
    assert_eq!(server.completed_streams(), 0);
}

#[tokio::test]
async fn anthropic_stream_failure_event() {
    let server = FakeServer::start(Api::AnthropicMessages).await.unwrap();
    let body = claude_body(&json!([{"role": "user", "content": Scenario::StreamFailed.marker()}]));
    let events = request(&server, "POST", "/v1/messages", Some(&body)).await.events();
    assert_eq!(events.last().unwrap().0, "error");
    assert_eq!(events.last().unwrap().1["error"]["message"], "fake failure from server");
}

#[tokio::test]
async fn slow_stream_notices_the_client_leaving() {
    let server = FakeServer::start(Api::AnthropicMessages).await.unwrap();
    let body = claude_body(&json!([{"role": "user", "content": Scenario::Slow.marker()}])).to_string();
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let raw = format!("POST /v1/messages HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut seen = 0;
    let mut line = String::new();
    while seen < 3 {
        line.clear();
        assert!(reader.read_line(&mut line).await.unwrap() > 0);
        if line.contains("\"text_delta\"") {
            assert!(line.contains(&format!("chunk{seen} ")), "{line}");
            seen += 1;
        }
    }
    drop(reader);
    assert!(server.wait_until(Duration::from_secs(5), |s| s.aborted_streams() == 1).await);
    assert_eq!(server.completed_streams(), 0);
}

#[tokio::test]
async fn openai_text_stream() {
    let server = FakeServer::start(Api::OpenAiResponses).await.unwrap();
    assert!(server.base_url().ends_with("/v1"));
    let reply = request(&server, "POST", "/v1/responses", Some(&codex_body(&json!([user_text("hello")])))).await;
    assert_eq!(reply.status, 200);
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    let done = events.iter().find(|(n, _)| n == "response.output_item.done").unwrap();
    assert_eq!(done.1["item"]["type"], "message");
    assert_eq!(done.1["item"]["content"][0]["text"], TEXT_REPLY);
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, TEXT_REPLY);
    let usage = &events.last().unwrap().1["response"]["usage"];
    assert_eq!(usage["input_tokens"], 100);
    assert_eq!(usage["total_tokens"], 110);
}

#[tokio::test]
async fn openai_tool_round_trip_errors_and_failure() {
    let server = FakeServer::start(Api::OpenAiResponses).await.unwrap();
    let prompt = user_text(&format!("run {}", Scenario::ToolUse.marker()));
    let events = request(&server, "POST", "/v1/responses", Some(&codex_body(&json!([prompt])))).await.events();
    let call = events.iter().find(|(n, _)| n == "response.output_item.done").unwrap().1["item"].clone();
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "exec_command");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["cmd"], TOOL_COMMAND);

    let output =
        json!({"type": "function_call_output", "call_id": call["call_id"], "output": "Chunk ID: 1\nOutput:\nhi\n"});
    let events =
        request(&server, "POST", "/v1/responses", Some(&codex_body(&json!([prompt, call, output])))).await.events();
    let done = events.iter().find(|(n, _)| n == "response.output_item.done").unwrap();
    assert_eq!(done.1["item"]["content"][0]["text"], "The command printed: hi");

    let reply =
        request(&server, "POST", "/v1/responses", Some(&codex_body(&json!([user_text("[asm-fake:http429]")])))).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["message"], "fake 429 error");

    let events = request(&server, "POST", "/v1/responses", Some(&codex_body(&json!([user_text("[asm-fake:failed]")]))))
        .await
        .events();
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "response.failed");
    assert_eq!(data["response"]["error"]["message"], "fake failure from server");

    let replies: Vec<String> = server.model_requests().into_iter().map(|r| r.reply).collect();
    assert_eq!(replies, ["tool", "tool_followup", "http429", "failed"]);
}

#[tokio::test]
async fn unknown_routes_chunked_bodies_and_bad_requests() {
    let server = FakeServer::start(Api::OpenAiResponses).await.unwrap();
    assert_eq!(request(&server, "GET", "/v1/models", None).await.status, 404);
    assert_eq!(request(&server, "POST", "/v1/messages", Some(&json!({}))).await.status, 404);

    let body = codex_body(&json!([user_text("[asm-fake:http401]")])).to_string();
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST /v1/responses HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    assert_eq!(request_raw(&server, raw.into_bytes()).await.status, 401);

    assert_eq!(request_raw(&server, b"garbage\r\n\r\n".to_vec()).await.status, 400);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[2].reply, "http401");
    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn dropping_the_server_closes_the_port() {
    let server = FakeServer::start(Api::AnthropicMessages).await.unwrap();
    let addr = server.addr();
    drop(server);
    let refused = async {
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    assert!(refused.await);
}

/// The `data:` payloads of a Gemini stream (server-sent events without event names).
fn gemini_chunks(reply: &Reply) -> Vec<Value> {
    let text = String::from_utf8(reply.body.clone()).unwrap();
    text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect()
}

fn gemini_user(text: &str) -> Value {
    json!({"role": "user", "parts": [{"text": "<session_context>..</session_context>"}, {"text": text}]})
}

#[tokio::test]
async fn gemini_text_stream_tool_round_trip_and_errors() {
    let server = FakeServer::start(Api::GeminiGenerateContent).await.unwrap();
    assert_eq!(server.base_url(), format!("http://{}", server.addr()));
    let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
    let body = json!({"contents": [gemini_user("hello")], "generationConfig": {}});
    let reply = request(&server, "POST", path, Some(&body)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let chunks = gemini_chunks(&reply);
    let text: String =
        chunks.iter().map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(text, TEXT_REPLY);
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["modelVersion"], "gemini-2.5-flash");
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 100);

    let first = gemini_user(&format!("print {}", Scenario::ToolUse.marker()));
    let body = json!({"contents": [first.clone()]});
    let chunks = gemini_chunks(&request(&server, "POST", path, Some(&body)).await);
    let call =
        chunks.iter().find_map(|c| c["candidates"][0]["content"]["parts"][0].get("functionCall").cloned()).unwrap();
    assert_eq!(call["name"], "run_shell_command");
    assert_eq!(call["args"]["command"], asm_integration::GEMINI_TOOL_COMMAND);
    let output = "<untrusted_context>\nOutput: hi\nProcess Group PGID: 7\n</untrusted_context>";
    let body = json!({"contents": [
        first,
        {"role": "model", "parts": [{"functionCall": call}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command", "response": {"output": output}}}]}
    ]});
    let chunks = gemini_chunks(&request(&server, "POST", path, Some(&body)).await);
    let text: String =
        chunks.iter().map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(text, asm_integration::tool_followup_text("hi"));

    let body = json!({"contents": [gemini_user(&Scenario::HttpError(429).marker())]});
    let reply = request(&server, "POST", "/v1beta/models/m:generateContent", Some(&body)).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["status"], "RESOURCE_EXHAUSTED");
    let reply = request(&server, "POST", "/v1beta/models/m:generateContent", Some(&json!({"contents": []}))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["candidates"][0]["content"]["parts"][0]["text"], TEXT_REPLY);
    assert_eq!(request(&server, "POST", "/v1beta/models/m:countTokens", Some(&json!({}))).await.status, 404);
    let replies: Vec<String> = server.model_requests().iter().map(|r| r.reply.clone()).collect();
    assert_eq!(replies, ["text", "tool", "tool_followup", "http429", "text"]);
}
