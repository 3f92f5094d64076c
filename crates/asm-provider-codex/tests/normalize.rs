#![allow(clippy::unwrap_used)]
//! Line kinds the captured runs do not contain (the report lists them: reasoning, file_change,
//! failing commands, error items, HTTP 429) plus the item types of `codex exec --json`
//! (mcp_tool_call, web_search, todo_list) and streamed agent messages, fed to the normalizer.

use asm_core::{ErrorCode, EventKind, ProviderErrorKind};
use asm_ports::ProviderEvent;
use asm_provider_cli::{ExitInfo, ExitKind};
use asm_provider_codex::CodexNormalizer;

fn feed(lines: &[&str]) -> (CodexNormalizer, Vec<ProviderEvent>) {
    let mut n = CodexNormalizer::new();
    let mut out = Vec::new();
    for l in lines {
        n.push_line(l, &mut out);
    }
    (n, out)
}

fn is_raw(e: &ProviderEvent) -> bool {
    e.metadata.get("raw") == Some(&serde_json::Value::Bool(true))
}

const START: &str = r#"{"type":"thread.started","thread_id":"t-1"}"#;
const TURN: &str = r#"{"type":"turn.started"}"#;
const DONE: &str = r#"{"type":"turn.completed","usage":{"input_tokens":300,"cached_input_tokens":100,"cache_write_input_tokens":5,"output_tokens":30,"reasoning_output_tokens":7}}"#;

fn ok() -> ExitInfo {
    ExitInfo::new(ExitKind::Code(0), "", false)
}

#[test]
fn agent_messages_are_tracked_by_item_id_without_duplicates() {
    let (n, out) = feed(&[
        START,
        TURN,
        r#"{"type":"item.updated","item":{"id":"item_0","type":"agent_message","text":"Hel"}}"#,
        r#"{"type":"item.updated","item":{"id":"item_0","type":"agent_message","text":"Hello"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"Hello"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"Second."}}"#,
        DONE,
    ]);
    let deltas: Vec<&str> = out
        .iter()
        .filter(|e| e.kind == EventKind::MessageStreamed)
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["Hel", "lo", "Second."]);
    let received = out.iter().find(|e| e.kind == EventKind::MessageReceived).unwrap();
    assert_eq!(received.data["content"], "Second.");
    let outcome = n.finish(&ok()).unwrap();
    assert_eq!(outcome.output.content, "Second.");
    assert_eq!(outcome.token_usage.input_tokens, 200);
    assert_eq!(outcome.token_usage.cache_read_tokens, 100);
    assert_eq!(outcome.token_usage.cache_creation_tokens, 5);
    let usage = out.iter().find(|e| e.kind == EventKind::TokenUsageUpdated).unwrap();
    assert_eq!(usage.data["usage_mode"], "cumulative");
    assert_eq!(usage.data["reasoning_output_tokens"], 7);
}

#[test]
fn tool_items_map_to_canonical_tool_events() {
    let (n, out) = feed(&[
        START,
        TURN,
        // A failing command (exit 2, status failed).
        r#"{"type":"item.started","item":{"id":"item_0","type":"command_execution","command":"bash -lc 'exit 2'","aggregated_output":"","exit_code":null,"status":"in_progress"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_0","type":"command_execution","command":"bash -lc 'exit 2'","aggregated_output":"boom\n","exit_code":2,"status":"failed"}}"#,
        // apply_patch.
        r#"{"type":"item.started","item":{"id":"item_1","type":"file_change","changes":[{"path":"a.txt","kind":"add"}],"status":"in_progress"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_1","type":"file_change","changes":[{"path":"a.txt","kind":"add"}],"status":"completed"}}"#,
        // MCP tool with a result, and one with an error; completed without started.
        r#"{"type":"item.completed","item":{"id":"item_2","type":"mcp_tool_call","server":"docs","tool":"search","arguments":{"q":"x"},"result":{"content":[{"type":"text","text":"hit"}]},"status":"completed"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_3","type":"mcp_tool_call","server":"docs","tool":"search","arguments":"{\"q\":\"y\"}","error":{"message":"nope"},"status":"failed"}}"#,
        // Web search (a generic typed item).
        r#"{"type":"item.started","item":{"id":"item_4","type":"web_search","query":"rust"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_4","type":"web_search","query":"rust"}}"#,
        // A declined command.
        r#"{"type":"item.completed","item":{"id":"item_5","type":"command_execution","command":"rm -rf /","aggregated_output":"","exit_code":null,"status":"declined"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_6","type":"agent_message","text":"Done."}}"#,
        DONE,
    ]);
    use EventKind::{
        MessageReceived as Recv, MessageStreamed as Stream, TokenUsageUpdated as Usage, ToolApprovalDenied as Denied,
        ToolCallCompleted as Ok_, ToolCallFailed as Fail, ToolCallStarted as Start,
    };
    let kinds: Vec<EventKind> = out.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [Start, Fail, Start, Ok_, Start, Ok_, Start, Fail, Start, Ok_, Start, Denied, Fail, Stream, Recv, Usage]
    );
    let by = |kind: EventKind, id: &str| {
        out.iter().find(|e| e.kind == kind && e.data["tool_call_id"] == id).unwrap_or_else(|| panic!("{kind} {id}"))
    };
    let cmd = by(Fail, "item_0");
    assert_eq!(cmd.data["tool_name"], "bash");
    assert_eq!(cmd.data["tool_output"]["exit_code"], 2);
    assert_eq!(cmd.data["tool_output"]["output"], "boom\n");
    assert_eq!(cmd.data["is_error"], true);
    let patch = by(Ok_, "item_1");
    assert_eq!(patch.data["tool_name"], "apply_patch");
    assert_eq!(patch.data["tool_input"]["changes"][0]["path"], "a.txt");
    assert_eq!(patch.data["tool_output"]["status"], "completed");
    let mcp = by(Ok_, "item_2");
    assert_eq!(mcp.data["tool_name"], "docs:search");
    assert_eq!(mcp.data["tool_input"]["q"], "x");
    assert_eq!(mcp.data["tool_output"]["content"][0]["text"], "hit");
    let mcp_err = by(Fail, "item_3");
    assert_eq!(mcp_err.data["tool_input"]["q"], "y");
    assert_eq!(mcp_err.data["tool_output"]["message"], "nope");
    let web = by(Ok_, "item_4");
    assert_eq!(web.data["tool_name"], "web_search");
    assert_eq!(web.data["tool_input"]["query"], "rust");
    assert!(web.data["tool_output"].is_object());
    assert_eq!(by(Denied, "item_5").data["reason"], "declined");
    // Every tool payload: tool_input is an object, tool_output never null.
    for e in out.iter().filter(|e| matches!(e.kind, Start | Ok_ | Fail)) {
        assert!(e.data["tool_input"].is_object(), "{e:?}");
        if e.kind != Start {
            assert!(!e.data["tool_output"].is_null(), "{e:?}");
        }
    }
    let outcome = n.finish(&ok()).unwrap();
    assert_eq!(outcome.output.extra["tool_calls"].as_array().unwrap().len(), 6);
}

#[test]
fn reasoning_todo_list_and_unknown_lines_are_raw_and_error_items_are_warnings() {
    let (n, out) = feed(&[
        START,
        TURN,
        r#"{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata for `fake-model` not found. Defaulting to fallback metadata; this can degrade performance and cause issues."}}"#,
        r#"{"type":"item.completed","item":{"id":"item_1","type":"reasoning","text":"**Thinking**"}}"#,
        r#"{"type":"item.started","item":{"id":"item_2","type":"todo_list","items":[{"text":"a","completed":false}]}}"#,
        r#"{"type":"item.updated","item":{"id":"item_2","type":"todo_list","items":[{"text":"a","completed":true}]}}"#,
        r#"{"type":"turn.aborted"}"#,
        r#"{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"Hi"}}"#,
        "not json",
        DONE,
    ]);
    let warning = &out[0];
    assert_eq!(warning.kind, EventKind::ErrorOccurred);
    assert_eq!(warning.data["details"]["fatal"], false);
    assert_eq!(warning.metadata["warning"], true);
    assert_eq!(out[1].kind, EventKind::ReasoningCompleted, "reasoning is typed: {out:?}");
    assert_eq!(out[1].data["content"], "**Thinking**");
    assert!(out[2..5].iter().all(is_raw), "{out:?}");
    assert_eq!(out[2].metadata["raw_reason"], "todo_list");
    assert_eq!(out[4].data["raw_type"], "turn.aborted");
    assert!(is_raw(&out[6]));
    let outcome = n.finish(&ok()).unwrap();
    assert_eq!(outcome.output.content, "Hi");
    assert_eq!(outcome.metadata["warnings"].as_array().unwrap().len(), 1);
}

#[test]
fn turn_failed_texts_are_classified() {
    for (message, code) in [
        ("exceeded retry limit, last status: 429 Too Many Requests", ErrorCode::ProviderRateLimited),
        (
            "unexpected status 401 Unauthorized: fake 401 error, url: http://127.0.0.1:18766/v1/responses",
            ErrorCode::ProviderAuthenticationFailed,
        ),
        ("unexpected status 503 Service Unavailable", ErrorCode::ProviderUnavailable),
        ("We’re currently experiencing high demand, which may cause temporary errors.", ErrorCode::ProviderUnavailable),
        ("stream disconnected before completion: fake failure from server", ErrorCode::ProviderUnavailable),
        ("Connection failed: error sending request", ErrorCode::ProviderUnavailable),
        ("something odd", ErrorCode::ProviderError),
    ] {
        let error = serde_json::json!({"type": "error", "message": message}).to_string();
        let failed = serde_json::json!({"type": "turn.failed", "error": {"message": message}}).to_string();
        let (n, out) = feed(&[START, TURN, &error, &failed]);
        assert_eq!(out.len(), 1, "{message}: error + turn.failed report once");
        assert_eq!(out[0].data["error_code"], code.as_str(), "{message}");
        let err = n.finish(&ExitInfo::new(ExitKind::Code(1), "", false)).unwrap_err();
        assert_eq!(err.code(), code, "{message}");
        assert_eq!(err.message(), message);
        assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::TransportExit);
        assert_eq!(err.provider_error().unwrap().exit_code, Some(1));
    }
    // turn.failed alone still reports an error event.
    let (_, out) = feed(&[START, TURN, r#"{"type":"turn.failed","error":{"message":"x"}}"#]);
    assert_eq!(out.len(), 1);
}

#[test]
fn runs_without_turn_completed_fail_with_the_right_reason() {
    // EOF at exit 0.
    let (n, _) = feed(&[START, TURN]);
    let err = n.finish(&ok()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    assert_eq!(err.details()["reason"], "no_turn_completed");
    assert_eq!(err.details()["thread_id"], "t-1");
    // Signal.
    let err = n.finish(&ExitInfo::new(ExitKind::Signal(15), "", false)).unwrap_err();
    assert_eq!(err.details()["reason"], "signal");
    assert_eq!(err.provider_error().unwrap().exit_code, Some(143));
    // Non-zero exit: the first meaningful stderr line, not Codex's per-run warning.
    let stderr = "WARNING: proceeding, even though we could not create PATH aliases: x\nReading additional input from stdin...\nfatal: disk on fire\n";
    let err = n.finish(&ExitInfo::new(ExitKind::Code(3), stderr, false)).unwrap_err();
    assert_eq!(err.message(), "fatal: disk on fire");
    assert_eq!(err.details()["reason"], "exit");
    // A completed turn with a non-zero exit is a conflict of signals, so a failure (success is
    // decided from every signal).
    let (n, _) =
        feed(&[START, TURN, r#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"ok"}}"#, DONE]);
    assert_eq!(n.finish(&ok()).unwrap().output.content, "ok");
    let err = n.finish(&ExitInfo::new(ExitKind::Code(1), "", false)).unwrap_err();
    assert_eq!(err.details()["reason"], "exit_status");
}
