#![allow(clippy::unwrap_used)]
//! Every captured Claude Code run (`fixtures/provider-cli/claude_*`), replayed through the
//! adapter as a subprocess by the fake CLI: expected normalized kinds and outcome per fixture.

use std::sync::Arc;

use asm_core::{ErrorCode, EventKind, ProviderErrorKind};
use asm_ports::ProviderAdapter;
use asm_provider_claude::ClaudeAdapter;
use asm_provider_claude::ClaudeNormalizer;
use asm_provider_cli::CliEnv;
use asm_provider_cli::{ExitInfo, ExitKind};
use asm_testkit::adapter_contract::{FakeCliInvocation, Normalized, assert_raw_lines_are_transparent, conversation};
use asm_testkit::fake_cli::{FakeScript, fixture_names};
use asm_testkit::provider_tests::{
    check_inserted_raw_lines_are_transparent, non_raw_kinds, normalize_non_blank_lines, prepare_fake_cli_run,
};
use proptest::prelude::*;
use proptest::sample::Index;

use EventKind::{
    ErrorOccurred as Err_, MessageReceived as Recv, MessageStreamed as Stream, TokenUsageUpdated as Usage,
    ToolApprovalDenied as Denied, ToolCallCompleted as Done, ToolCallFailed as Failed, ToolCallStarted as Start,
};

const HELLO: &str = "Hello from the fake model!";
const DONE: &str = "The command printed: done.";

enum Expect {
    Ok(&'static str),
    Fail(ErrorCode),
}

/// fixture → (outcome, exact kinds, ignoring raw events).
fn table(name: &str) -> (Expect, Vec<EventKind>) {
    let text = vec![Usage, Stream, Recv, Usage];
    let tool = |result: EventKind| vec![Usage, Stream, Start, result, Usage, Stream, Recv, Usage];
    match name {
        "claude_append_system"
        | "claude_bare_text"
        | "claude_continue"
        | "claude_model_system"
        | "claude_resume"
        | "claude_stream_input"
        | "claude_text" => (Expect::Ok(HELLO), text),
        "claude_text_partial" => (Expect::Ok(HELLO), vec![Usage, Stream, Stream, Stream, Stream, Usage, Recv, Usage]),
        "claude_json_output" => (Expect::Ok(HELLO), vec![Recv, Usage]),
        "claude_tool_use" | "claude_tool_use_allowed_pattern" | "claude_tool_use_bypass" => {
            (Expect::Ok(DONE), tool(Done))
        }
        "claude_tool_use_partial" => (
            Expect::Ok(DONE),
            vec![
                Usage, Stream, Stream, Stream, Start, Usage, Done, Usage, Stream, Stream, Stream, Stream, Usage, Recv,
                Usage,
            ],
        ),
        "claude_tool_use_disallowed" => (Expect::Ok(DONE), tool(Failed)),
        "claude_plan_mode" => {
            (Expect::Ok(DONE), vec![Usage, Stream, Start, Failed, Usage, Stream, Denied, Recv, Usage])
        }
        "claude_conn_refused" => (Expect::Fail(ErrorCode::ProviderUnavailable), vec![Err_, Usage]),
        "claude_http401" => (Expect::Fail(ErrorCode::ProviderAuthenticationFailed), vec![Err_, Err_, Usage]),
        "claude_http429" => (Expect::Fail(ErrorCode::ProviderRateLimited), vec![Err_, Err_, Usage]),
        "claude_http500" => (Expect::Fail(ErrorCode::ProviderUnavailable), vec![Err_, Err_, Usage]),
        "claude_http401_default_retries_killed_by_timeout" => {
            (Expect::Fail(ErrorCode::ProviderAuthenticationFailed), vec![Err_; 9])
        }
        "claude_http500_text_format" => (Expect::Fail(ErrorCode::ProviderUnavailable), vec![]),
        "claude_text_output" => (Expect::Fail(ErrorCode::ProviderError), vec![]),
        "claude_resume_bad" => (Expect::Fail(ErrorCode::ProviderError), vec![Err_, Usage]),
        "claude_bypass_as_root" => (Expect::Fail(ErrorCode::ProviderError), vec![]),
        "claude_sigint_midstream" => {
            (Expect::Fail(ErrorCode::ProviderError), vec![Usage, Stream, Stream, Stream, Err_, Usage])
        }
        "claude_sigterm_midstream" => (Expect::Fail(ErrorCode::ProviderError), vec![Usage, Stream, Stream, Stream]),
        other => panic!("fixture {other} has no expectation: add it to the table"),
    }
}

fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    Arc::new(ClaudeAdapter::builder().cli_path(&inv.program).env(env).build())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_claude_fixture_normalizes_as_expected() {
    let names = fixture_names("claude_");
    assert!(names.len() >= 26, "{names:?}");
    for name in names {
        let script = FakeScript::fixture(&name);
        let p = prepare_fake_cli_run(make, &script);
        let result = p.adapter.execute(p.request.clone(), p.sink.clone()).await;
        let (expect, kinds) = table(&name);
        assert_eq!(non_raw_kinds(&p), kinds, "{name}: kinds");
        assert!(p.recorded.lifecycle_attempts().is_empty(), "{name}");
        match (expect, result) {
            (Expect::Ok(text), Ok(outcome)) => {
                assert_eq!(outcome.output.content, text, "{name}");
                assert!(outcome.provider_session_id.is_some(), "{name}: session id");
                assert!(outcome.turns >= 1, "{name}: turns");
                assert!(outcome.token_usage.input_tokens > 0, "{name}: usage");
            }
            (Expect::Fail(code), Err(err)) => {
                assert_eq!(err.code(), code, "{name}: {err:?}");
                let pe = err.provider_error().unwrap_or_else(|| panic!("{name}: no provider error"));
                assert_eq!(pe.exit_code, Some(script.exit_code), "{name}: {pe:?}");
                if !script.stderr_text().unwrap().trim().is_empty() {
                    assert!(pe.stderr.as_deref().is_some_and(|s| !s.is_empty()), "{name}: stderr");
                }
            }
            (Expect::Ok(_), Err(err)) => panic!("{name}: expected success, got {err:?}"),
            (Expect::Fail(code), Ok(o)) => panic!("{name}: expected {code:?}, got {o:?}"),
        }
    }
}

#[tokio::test]
async fn details_of_selected_fixtures() {
    // Usage: per distinct message id, then the run totals from the result; cost from the result.
    let run = |name: &str| prepare_fake_cli_run(make, &FakeScript::fixture(name));
    let p = run("claude_tool_use");
    let outcome = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap();
    assert_eq!(outcome.token_usage.input_tokens, 200);
    assert_eq!(outcome.token_usage.output_tokens, 24);
    assert_eq!(outcome.cost_usd, Some(0.0016));
    assert_eq!(outcome.turns, 2);
    assert_eq!(outcome.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(outcome.model.as_deref(), Some("claude-opus-4-8"));
    let events = p.recorded.events();
    let usage: Vec<_> = events.iter().filter(|e| e.kind == Usage).collect();
    assert_eq!(usage.len(), 3);
    assert_eq!(usage[0].data["usage_mode"], "delta");
    assert_eq!(usage[2].data["usage_mode"], "cumulative");
    assert_eq!(usage[2].data["input_tokens"], 200);
    let started = events.iter().find(|e| e.kind == Start).unwrap();
    assert_eq!(started.data["tool_name"], "Bash");
    assert_eq!(started.data["tool_input"]["command"], "echo hi");
    let done = events.iter().find(|e| e.kind == Done).unwrap();
    assert_eq!(done.data["tool_output"], "hi");
    assert_eq!(done.data["tool_call_id"], started.data["tool_call_id"]);
    assert_eq!(outcome.output.extra["tool_calls"][0]["name"], "Bash");

    // Partial usage: message_start snapshot then message_delta growth.
    let p = run("claude_text_partial");
    p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap();
    let deltas: Vec<u64> = p
        .recorded
        .events()
        .iter()
        .filter(|e| e.kind == Usage && e.data["usage_mode"] == "delta")
        .map(|e| e.data["output_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(deltas, [1, 11]);

    // Bad resume: typed, with stderr and the reason.
    let p = run("claude_resume_bad");
    let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err();
    assert_eq!(err.details()["reason"], "resume_not_found");
    let pe = err.provider_error().unwrap();
    assert_eq!(pe.kind, ProviderErrorKind::TransportExit);
    assert!(pe.stderr.as_deref().unwrap().contains("No conversation found"));

    // 429 is retryable, 401 is not.
    let p = run("claude_http429");
    assert!(p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err().is_retryable());
    let p = run("claude_http401");
    let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(err.details()["api_error_status"], 401);
}

#[test]
fn max_turns_result_is_a_provider_error() {
    let mut n = ClaudeNormalizer::new();
    let mut out = Vec::new();
    n.push_line(r#"{"type":"system","subtype":"init","session_id":"s"}"#, &mut out);
    n.push_line(
        r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":3,"terminal_reason":"max_turns","errors":["Reached maximum number of turns (2)"],"session_id":"s"}"#,
        &mut out,
    );
    let err = n.finish(&ExitInfo::new(ExitKind::Code(1), "", false)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    assert_eq!(err.message(), "Reached maximum number of turns (2)");
    assert_eq!(err.details()["reason"], "max_turns");
    assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::ProtocolError);
    assert_eq!(out.last().unwrap().kind, Err_);

    // A rejected rate-limit event and an unknown system subtype.
    let mut out = Vec::new();
    n.push_line(r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected"}}"#, &mut out);
    n.push_line(r#"{"type":"system","subtype":"hook_started"}"#, &mut out);
    assert_eq!(out[0].data["error_code"], "provider_rate_limited");
    assert_eq!(out[1].metadata["raw"], true);
    assert_eq!(out[1].data["raw_type"], "system");
}

/// A small line cap, so oversized lines are cheap to produce.
const CAP: usize = 64 * 1024;

fn make_capped(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    Arc::new(
        ClaudeAdapter::builder()
            .cli_path(&inv.program)
            .env(env)
            .limits(asm_provider_cli::CliLimits::default().max_line_bytes(CAP))
            .build(),
    )
}

/// B5: a line over the cap must not hide the 401 / 429 / 5xx the rest of the output reports,
/// whether the oversized line is in the middle or is the result line itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_line_never_hides_the_providers_own_error() {
    let big = "x".repeat(CAP + 1);
    for (name, code) in [
        ("claude_http401", ErrorCode::ProviderAuthenticationFailed),
        ("claude_http429", ErrorCode::ProviderRateLimited),
        ("claude_http500", ErrorCode::ProviderUnavailable),
    ] {
        let fixture = FakeScript::fixture(name);
        let lines = fixture.stdout_lines().unwrap();
        let mut middle = lines.clone();
        middle.insert(1, big.clone());
        let mut as_result = lines.clone();
        *as_result.last_mut().unwrap() = big.clone();
        for (case, lines) in [("middle", middle), ("result", as_result)] {
            let mut script = fixture.clone();
            script.stdout_file = None;
            let script = script.lines(lines);
            let p = prepare_fake_cli_run(make_capped, &script);
            let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err();
            assert_eq!(err.code(), code, "{name} ({case}): {err:?}");
            assert_eq!(err.details()["oversized_lines"], 1, "{name} ({case})");
        }
    }
    // Without a provider error the framing error stands.
    let mut lines = FakeScript::fixture("claude_text").stdout_lines().unwrap();
    *lines.last_mut().unwrap() = big;
    let script = FakeScript::new().lines(lines);
    let p = prepare_fake_cli_run(make_capped, &script);
    let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err();
    assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::ParseError, "{err:?}");
}

/// Feeds `lines` to a fresh normalizer (blank lines skipped, as the adapter does) and finishes
/// it with the exit of fixture `script`.
fn normalizer_for(script: &FakeScript) -> impl Fn(&[String]) -> Normalized + use<> {
    let exit = ExitInfo::new(ExitKind::Code(script.exit_code), script.stderr_text().unwrap(), false);
    let push_line = |n: &mut ClaudeNormalizer, line: &str, out: &mut Vec<_>| {
        n.push_line(line, out);
        Ok(())
    };
    move |lines| normalize_non_blank_lines(ClaudeNormalizer::new(), lines, push_line, |n| n.finish(&exit))
}

/// Lines Claude Code prints that no mapping knows (or that are informational): they must be
/// transparent wherever they land, e.g. a `rate_limit_event` just before the final result.
const UNKNOWN_LINES: &[&str] = &[
    r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","resetsAt":1790000000},"session_id":"s"}"#,
    r#"{"type":"system","subtype":"hook_started","hook_name":"SessionStart"}"#,
    r#"{"type":"future_line_type","payload":{"x":1}}"#,
    "not json {",
];

/// B2: for every captured Claude run, raw lines inserted at every position change neither the
/// transcript nor the verdict (before, a raw line between the streamed text and the result made
/// the final assistant message appear twice).
#[test]
fn raw_lines_never_change_any_fixtures_transcript() {
    for name in fixture_names("claude_") {
        let script = FakeScript::fixture(&name);
        let lines = script.stdout_lines().unwrap();
        assert_raw_lines_are_transparent(&name, &lines, UNKNOWN_LINES, normalizer_for(&script));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Several raw lines at random positions of a random fixture.
    #[test]
    fn several_raw_lines_anywhere_are_transparent(
        pick in any::<Index>(),
        inserts in proptest::collection::vec((any::<Index>(), any::<Index>()), 1..6),
    ) {
        let names = fixture_names("claude_");
        let name = pick.get(&names);
        let script = FakeScript::fixture(name);
        let normalize = normalizer_for(&script);
        let lines = script.stdout_lines().unwrap();
        check_inserted_raw_lines_are_transparent(name, &lines, inserts, UNKNOWN_LINES, normalize)?;
    }
}

fn feed(
    lines: &[&str],
    exit: ExitKind,
) -> (Vec<asm_ports::ProviderEvent>, asm_core::Result<asm_ports::ExecuteOutcome>) {
    let mut n = ClaudeNormalizer::new();
    let mut out = Vec::new();
    for line in lines {
        n.push_line(line, &mut out);
    }
    let verdict = n.finish(&ExitInfo::new(exit, "", false));
    (out, verdict)
}

const INIT: &str = r#"{"type":"system","subtype":"init","session_id":"s","model":"m"}"#;
const ANSWER: &str = r#"{"type":"assistant","message":{"id":"msg_1","model":"m","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":3,"output_tokens":1}}}"#;

/// The 529 capture (`claude_http500` with the status of an overloaded API) with the
/// `"is_error":true,` key deleted from its result line.
fn http529_without_is_error() -> FakeScript {
    let fixture = FakeScript::fixture("claude_http500");
    let lines: Vec<String> = fixture
        .stdout_lines()
        .unwrap()
        .into_iter()
        .map(|l| l.replace("500", "529").replace("\"is_error\":true,", ""))
        .collect();
    assert!(!lines.last().unwrap().contains("is_error"), "the key is gone");
    let mut script = fixture;
    script.stdout_file = None;
    script.lines(lines)
}

/// B3: a result line without `is_error` is not a success when another signal says failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_529_result_without_is_error_fails_the_run() {
    let script = http529_without_is_error();
    let p = prepare_fake_cli_run(make, &script);
    let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.expect_err("a 529 is not a completed run");
    assert_eq!(err.code(), ErrorCode::ProviderUnavailable, "{err:?}");
    assert_eq!(err.details()["api_error_status"], 529);
    assert_eq!(err.provider_error().unwrap().exit_code, Some(1));
    let events = p.recorded.events();
    assert!(
        !events.iter().any(|e| e.kind == Recv),
        "the error text must not be received as the assistant's answer: {events:?}"
    );
}

/// B3: success is decided from every signal; conflicting signals are a failure with the
/// provider's own code.
#[test]
fn success_is_decided_from_every_signal() {
    let ok = r#"{"type":"result","subtype":"success","result":"Hi","num_turns":1}"#;
    // No signal of failure: a missing is_error is a success.
    let (_, verdict) = feed(&[INIT, ANSWER, ok], ExitKind::Code(0));
    assert_eq!(verdict.unwrap().output.content, "Hi");

    let cases: &[(&str, &[&str], ExitKind, ErrorCode)] = &[
        // Only the exit status disagrees.
        ("exit 1", &[INIT, ANSWER, ok], ExitKind::Code(1), ErrorCode::ProviderError),
        // The HTTP status of the API error, with is_error explicitly false.
        (
            "api_error_status",
            &[
                INIT,
                r#"{"type":"result","subtype":"success","is_error":false,"api_error_status":429,"result":"API Error: Request rejected (429)"}"#,
            ],
            ExitKind::Code(0),
            ErrorCode::ProviderRateLimited,
        ),
        // An error subtype.
        (
            "subtype",
            &[
                INIT,
                r#"{"type":"result","subtype":"error_during_execution","errors":["No conversation found with session ID: x"]}"#,
            ],
            ExitKind::Code(0),
            ErrorCode::ProviderError,
        ),
        // errors[] alone.
        (
            "errors",
            &[
                INIT,
                r#"{"type":"result","subtype":"success","result":"","errors":["Failed to authenticate. API Error: 401"]}"#,
            ],
            ExitKind::Code(0),
            ErrorCode::ProviderAuthenticationFailed,
        ),
        // An error event already emitted (the synthetic assistant message of a 429).
        (
            "synthetic error",
            &[
                INIT,
                r#"{"type":"assistant","message":{"id":"u-1","model":"<synthetic>","content":[{"type":"text","text":"API Error: Request rejected (429) · fake"}]},"error":"rate_limit"}"#,
                r#"{"type":"result","subtype":"success","is_error":false,"result":"API Error: Request rejected (429) · fake"}"#,
            ],
            ExitKind::Code(0),
            ErrorCode::ProviderRateLimited,
        ),
    ];
    for (what, lines, exit, code) in cases {
        let (events, verdict) = feed(lines, *exit);
        let err = verdict.expect_err(what);
        assert_eq!(err.code(), *code, "{what}: {err:?}");
        assert!(err.provider_error().is_some(), "{what}");
        if *what != "exit 1" {
            assert!(events.iter().any(|e| e.kind == Err_), "{what}: an error event");
            assert!(!events.iter().any(|e| e.kind == Recv), "{what}: no received answer");
        }
    }
}

/// C: thinking blocks are typed reasoning events (redacted ones keep only their marker), not
/// assistant text.
#[test]
fn thinking_is_a_reasoning_stream() {
    let (events, verdict) = feed(
        &[
            INIT,
            r#"{"type":"stream_event","event":{"type":"message_start","message":{"id":"msg_t","model":"m","usage":{"input_tokens":5,"output_tokens":1}}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me "}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"think."}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}}"#,
            r#"{"type":"assistant","message":{"id":"msg_t","model":"m","content":[{"type":"thinking","thinking":"Let me think.","signature":"sig"}]}}"#,
            r#"{"type":"assistant","message":{"id":"msg_t","model":"m","content":[{"type":"redacted_thinking","data":"EncryptedBlob=="}]}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"Hi"}}}"#,
            r#"{"type":"assistant","message":{"id":"msg_t","model":"m","content":[{"type":"text","text":"Hi"}]}}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"result":"Hi","num_turns":1}"#,
        ],
        ExitKind::Code(0),
    );
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).filter(|k| *k != Usage).collect();
    use EventKind::{ReasoningCompleted as Thought, ReasoningStreamed as Thinking};
    assert_eq!(kinds, [Thinking, Thinking, Thought, Thought, Stream, Recv]);
    let chunks: Vec<_> = events.iter().filter(|e| e.kind == Thinking).map(|e| e.data["delta"].clone()).collect();
    assert_eq!(chunks, ["Let me ", "think."]);
    let thoughts: Vec<_> = events.iter().filter(|e| e.kind == Thought).collect();
    assert_eq!(thoughts[0].data["content"], "Let me think.");
    assert_eq!(thoughts[0].data["redacted"], false);
    assert_eq!(thoughts[1].data["content"], "");
    assert_eq!(thoughts[1].data["redacted"], true);
    assert!(!serde_json::to_string(&thoughts[1].data).unwrap().contains("EncryptedBlob"), "no redacted payload");
    assert_eq!(verdict.unwrap().output.content, "Hi", "reasoning is not output");
    // Reasoning is not conversation.
    let conv = conversation(&events);
    assert_eq!(conv.len(), 1);
    assert_eq!(conv[0].content.as_deref(), Some("Hi"));
}

/// The max-turns run of the issue: two tool turns, then `error_max_turns` carrying the run's
/// totals (200 in / 24 out) and cost (0.0016).
fn max_turns_lines() -> Vec<String> {
    let mut lines = FakeScript::fixture("claude_tool_use").stdout_lines().unwrap();
    lines.pop();
    lines.push(
        r#"{"type":"result","subtype":"error_max_turns","is_error":true,"duration_ms":350,"num_turns":3,"stop_reason":"tool_use","session_id":"dfd0e033-3a02-4609-b5fb-4f22d59e10ef","total_cost_usd":0.0016,"usage":{"input_tokens":200,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":24},"terminal_reason":"max_turns","errors":["Reached maximum number of turns (2)"]}"#
            .to_owned(),
    );
    lines
}

/// B1 (adapter side): a failed run's events carry the usage and cost the provider reported,
/// in the form the runtime folds (`asm_core::UsageTotals`).
#[test]
fn a_failed_result_reports_its_usage_and_cost_in_events() {
    let lines = max_turns_lines();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (events, verdict) = feed(&refs, ExitKind::Code(1));
    assert_eq!(verdict.unwrap_err().details()["reason"], "max_turns");
    let stored: Vec<asm_core::Event> = events
        .iter()
        .map(|e| asm_core::Event::new(e.kind, asm_core::SessionId::new()).with_payload(e.data.clone()))
        .collect();
    let totals = asm_core::UsageTotals::from_events(&stored);
    assert_eq!((totals.usage.input_tokens, totals.usage.output_tokens), (200, 24));
    assert_eq!(totals.cost_usd, Some(0.0016));

    // A result that reports less than the messages already did (SIGINT prints zero usage)
    // does not erase what was reported.
    let lines = FakeScript::fixture("claude_sigint_midstream").stdout_lines().unwrap();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (events, _) = feed(&refs, ExitKind::Code(0));
    let stored: Vec<asm_core::Event> = events
        .iter()
        .map(|e| asm_core::Event::new(e.kind, asm_core::SessionId::new()).with_payload(e.data.clone()))
        .collect();
    let totals = asm_core::UsageTotals::from_events(&stored);
    assert_eq!((totals.usage.input_tokens, totals.usage.output_tokens), (100, 1));
}
