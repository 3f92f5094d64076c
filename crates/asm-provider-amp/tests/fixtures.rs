#![allow(clippy::unwrap_used)]
//! Every Amp fixture (`fixtures/provider-cli/amp_*`: the real offline-failure captures and the
//! SYNTHETIC stream-json ones recovered from Amp's source), replayed through the adapter as a
//! subprocess by the fake CLI: expected normalized kinds, outcome and error per fixture.

use std::sync::Arc;

use asm_core::{ErrorCode, EventKind, ProviderErrorKind};
use asm_ports::ProviderAdapter;
use asm_provider_amp::{AmpAdapter, AmpBuilderExt, AmpNormalizer};
use asm_provider_cli::{CliEnv, ExitInfo, ExitKind};
use asm_testkit::adapter_contract::{FakeCliInvocation, Normalized, Prepared, assert_raw_lines_are_transparent};
use asm_testkit::fake_cli::{FakeScript, fixture_names};
use asm_testkit::provider_tests::{non_raw_kinds, normalize_non_blank_lines, prepare_fake_cli_run};

use EventKind::{
    ErrorOccurred as Err_, MessageReceived as Recv, MessageStreamed as Stream, TokenUsageUpdated as Usage,
    ToolApprovalDenied as Denied, ToolCallCompleted as Done, ToolCallFailed as Failed, ToolCallStarted as Start,
};

const DONE: &str = "The command printed: hi.";

enum Expect {
    Ok(&'static str),
    /// Code, `details.reason`, whether the exit code is the fixture's (false when the adapter
    /// stops the process itself).
    Fail(ErrorCode, Option<&'static str>, bool),
}

/// fixture → (outcome, exact kinds, ignoring raw events).
fn table(name: &str) -> (Expect, Vec<EventKind>) {
    use ErrorCode::{ProviderAuthenticationFailed as Auth, ProviderError, ProviderUnavailable as Unavailable};
    match name {
        "amp_stream_json_SYNTHETIC_from_source" => {
            (Expect::Ok(DONE), vec![Usage, Stream, Start, Done, Usage, Stream, Recv])
        }
        "amp_stream_json_SYNTHETIC_error_from_source" => {
            (Expect::Fail(ProviderError, Some("interrupted"), true), vec![Err_])
        }
        // No API key: the CLI prints a login URL and waits for a pasted code; the adapter stops it.
        "amp_no_api_key" => (Expect::Fail(Auth, Some("missing_api_key"), false), vec![]),
        "amp_offline_default_url" => (Expect::Fail(Unavailable, Some("server_error"), true), vec![]),
        "amp_fake_server_websocket_refused" => (Expect::Fail(Unavailable, Some("connection_failed"), true), vec![]),
        "amp_fake_server_empty_replies" | "amp_fake_server_userinfo_ok" => {
            (Expect::Fail(ProviderError, Some("internal_error"), true), vec![])
        }
        other => panic!("fixture {other} has no expectation: add it to the table"),
    }
}

fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    Arc::new(AmpAdapter::builder().cli_path(&inv.program).env(env).api_key("sgamp_fake_key").build())
}

fn run(script: &FakeScript) -> Prepared {
    prepare_fake_cli_run(make, script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_amp_fixture_normalizes_as_expected() {
    let names = fixture_names("amp_");
    assert_eq!(names.len(), 7, "{names:?}");
    for name in names {
        let script = FakeScript::fixture(&name);
        let p = run(&script);
        let result = p.adapter.execute(p.request.clone(), p.sink.clone()).await;
        let (expect, kinds) = table(&name);
        assert_eq!(non_raw_kinds(&p), kinds, "{name}: kinds");
        assert!(p.recorded.lifecycle_attempts().is_empty(), "{name}");
        match (expect, result) {
            (Expect::Ok(text), Ok(outcome)) => {
                assert_eq!(outcome.output.content, text, "{name}");
                assert!(outcome.provider_session_id.as_deref().is_some_and(|s| s.starts_with("T-")), "{name}");
                assert!(outcome.turns >= 1, "{name}: turns");
                assert!(outcome.token_usage.input_tokens > 0, "{name}: usage");
            }
            (Expect::Fail(code, reason, exit_from_fixture), Err(err)) => {
                assert_eq!(err.code(), code, "{name}: {err:?}");
                assert_eq!(err.details().get("reason").and_then(|r| r.as_str()), reason, "{name}: {err:?}");
                let pe = err.provider_error().unwrap_or_else(|| panic!("{name}: no provider error"));
                assert_eq!(pe.provider, asm_core::ProviderName::Amp, "{name}");
                if exit_from_fixture {
                    assert_eq!(pe.exit_code, Some(script.exit_code), "{name}: {pe:?}");
                    if !script.stderr_text().unwrap().trim().is_empty() {
                        assert!(pe.stderr.as_deref().is_some_and(|s| !s.is_empty()), "{name}: stderr");
                    }
                }
            }
            (Expect::Ok(_), Err(err)) => panic!("{name}: expected success, got {err:?}"),
            (Expect::Fail(code, ..), Ok(o)) => panic!("{name}: expected {code:?}, got {o:?}"),
        }
        if let Some(pgid) = p.record().pid {
            asm_testkit::adapter_contract::assert_group_gone(pgid).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_of_the_synthetic_run() {
    let p = run(&FakeScript::fixture("amp_stream_json_SYNTHETIC_from_source"));
    let outcome = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap();
    // Usage: per message (no message ids in Amp), summed into the outcome; no cost.
    assert_eq!(outcome.token_usage.input_tokens, 220);
    assert_eq!(outcome.token_usage.output_tokens, 20);
    assert_eq!(outcome.token_usage.cache_read_tokens, 100);
    assert_eq!(outcome.cost_usd, None);
    assert_eq!(outcome.turns, 2);
    assert_eq!(outcome.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(outcome.provider_session_id.as_deref(), Some("T-00000000-0000-4000-8000-000000000001"));
    assert_eq!(outcome.metadata["agent_mode"], "medium");
    assert_eq!(outcome.metadata["duration_ms"], 4321);
    assert_eq!(outcome.output.extra["tool_calls"][0]["name"], "Bash");
    let events = p.recorded.events();
    let usage: Vec<_> = events.iter().filter(|e| e.kind == Usage).collect();
    assert_eq!(usage.len(), 2);
    assert!(usage.iter().all(|u| u.data["usage_mode"] == "delta"));
    assert_eq!(usage[1].data["input_tokens"], 120);
    assert_eq!(usage[1].data["cache_read_tokens"], 100);
    let started = events.iter().find(|e| e.kind == Start).unwrap();
    assert_eq!(started.data["tool_call_id"], "toolu_01");
    assert_eq!(started.data["tool_name"], "Bash");
    assert_eq!(started.data["tool_input"]["cmd"], "echo hi");
    let done = events.iter().find(|e| e.kind == Done).unwrap();
    assert_eq!(done.data["tool_output"], "hi\n");
    assert_eq!(done.data["tool_name"], "Bash");
    assert_eq!(done.data["tool_input"]["cmd"], "echo hi");
    let recv = events.iter().find(|e| e.kind == Recv).unwrap();
    assert_eq!(recv.data["role"], "assistant");
    assert_eq!(recv.data["content"], DONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tool_result_is_enriched_with_the_call() {
    let mut lines = FakeScript::fixture("amp_stream_json_SYNTHETIC_from_source").stdout_lines().unwrap();
    lines[2] = lines[2].replace(
        r#""content":"hi\n","is_error":false"#,
        r#""content":"Tool execution rejected by user: no","is_error":true"#,
    );
    assert!(lines[2].contains("rejected"));
    let p = run(&FakeScript::new().lines(lines));
    p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap();
    assert_eq!(non_raw_kinds(&p), [Usage, Stream, Start, Denied, Failed, Usage, Stream, Recv]);
    let events = p.recorded.events();
    let failed = events.iter().find(|e| e.kind == Failed).unwrap();
    assert_eq!(failed.data["tool_call_id"], "toolu_01");
    assert_eq!(failed.data["tool_name"], "Bash");
    assert_eq!(failed.data["tool_input"]["cmd"], "echo hi");
    assert_eq!(failed.data["is_error"], true);
    assert_eq!(failed.data["tool_output"], "Tool execution rejected by user: no");
    let denied = events.iter().find(|e| e.kind == Denied).unwrap();
    assert_eq!(denied.data["tool_name"], "Bash");
}

#[test]
fn result_errors_are_typed() {
    let finish = |lines: &[&str], exit: ExitKind| {
        let mut n = AmpNormalizer::new();
        let mut out = Vec::new();
        for l in lines {
            n.push_line(l, &mut out).unwrap();
        }
        (n.finish(&ExitInfo::new(exit, "", false)), out)
    };
    let init = r#"{"type":"system","subtype":"init","session_id":"T-9","tools":[]}"#;

    // Approval required: one tool_approval_denied per tool, then the error.
    let (res, out) = finish(
        &[
            init,
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":0,"error":"The following tools require user approval, which is not supported in stream JSON mode: Bash, edit_file","session_id":"T-9"}"#,
        ],
        ExitKind::Code(1),
    );
    let kinds: Vec<_> = out.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [Denied, Denied, Err_]);
    assert_eq!(out[1].data["tool_name"], "edit_file");
    let err = res.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    assert_eq!(err.details()["reason"], "approval_required");
    assert_eq!(err.details()["tools"][0], "Bash");
    assert_eq!(err.details()["provider_session_id"], "T-9");
    assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::ProtocolError);
    assert_eq!(err.provider_error().unwrap().exit_code, Some(1));

    // is_error wins even when the subtype says success; an HTTP text is classified.
    let (res, _) = finish(
        &[init, r#"{"type":"result","subtype":"success","is_error":true,"error":"API error 429 Too Many Requests"}"#],
        ExitKind::Code(0),
    );
    let err = res.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderRateLimited);
    assert!(err.is_retryable());

    // Bad input on stdin.
    let (res, _) = finish(
        &[
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"error":"No valid messages found in stdin"}"#,
        ],
        ExitKind::Code(1),
    );
    assert_eq!(res.unwrap_err().details()["reason"], "no_input");

    // EOF without a result (exit 0), non-zero exit with an auth text, signal.
    let (res, _) = finish(&[init], ExitKind::Code(0));
    let err = res.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    assert_eq!(err.details()["reason"], "no_result");
    assert_eq!(err.provider_error().unwrap().kind, ProviderErrorKind::TransportExit);
    let mut n = AmpNormalizer::new();
    let err =
        n.finish(&ExitInfo::new(ExitKind::Code(1), "Error: 401 Unauthorized: invalid API key\n", false)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderAuthenticationFailed);
    assert_eq!(err.message(), "401 Unauthorized: invalid API key");
    let mut out = Vec::new();
    n.push_line(r#"{"type":"assistant","message":{"content":[]}}"#, &mut out).unwrap();
    let err = n.finish(&ExitInfo::new(ExitKind::Signal(9), "", false)).unwrap_err();
    assert_eq!(err.provider_error().unwrap().exit_code, Some(137));
}

#[test]
fn unknown_and_echo_lines() {
    let mut n = AmpNormalizer::new();
    let mut out = Vec::new();
    // The prompt echo Amp prints as a user line: nothing to report.
    n.push_line(
        r#"{"type":"user","message":{"role":"user","content":[{"type":"text","text":"hi"}]},"session_id":"T-1"}"#,
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty());
    n.push_line(r#"{"type":"system","subtype":"compacting"}"#, &mut out).unwrap();
    n.push_line(r#"{"type":"assistant_delta","x":1}"#, &mut out).unwrap();
    n.push_line("plain text", &mut out).unwrap();
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|e| e.metadata["raw"] == true));
    assert_eq!(out[0].data["raw_type"], "system");
    assert_eq!(out[2].metadata["raw_reason"], "not_json");
    // Thinking blocks are reasoning (not text), the usage is still reported.
    let mut out = Vec::new();
    n.push_line(
        r#"{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"hm"}],"usage":{"input_tokens":5,"output_tokens":1}}}"#,
        &mut out,
    )
    .unwrap();
    assert_eq!(out.iter().map(|e| e.kind).collect::<Vec<_>>(), [Usage, EventKind::ReasoningCompleted]);
    assert_eq!(n.session_id(), Some("T-1"));
    // The login flow fails the line.
    let err = n.push_line("No API key found. Starting login flow...", &mut out).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderAuthenticationFailed);
    assert!(!err.is_retryable());
}

/// A small line cap, so oversized lines are cheap to produce.
const CAP: usize = 64 * 1024;

fn make_capped(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    Arc::new(
        AmpAdapter::builder()
            .cli_path(&inv.program)
            .env(env)
            .api_key("sgamp_fake_key")
            .limits(asm_provider_cli::CliLimits::default().max_line_bytes(CAP))
            .build(),
    )
}

/// B5: a line over the cap must not hide the provider's own error (a result error text, or
/// the CLI's stderr with the exit status).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_line_never_hides_the_providers_own_error() {
    let big = "x".repeat(CAP + 1);
    let init = r#"{"type":"system","subtype":"init","session_id":"T-9","tools":[]}"#;
    let result_429 = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":1,"error":"API error 429 Too Many Requests","session_id":"T-9"}"#;
    let cases = [
        (FakeScript::new().lines([init, big.as_str(), result_429]).exit_code(1), ErrorCode::ProviderRateLimited),
        (FakeScript::fixture("amp_fake_server_websocket_refused").lines([big.clone()]), ErrorCode::ProviderUnavailable),
    ];
    for (script, code) in cases {
        let p = prepare_fake_cli_run(make_capped, &script);
        let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert_eq!(err.details()["oversized_lines"], 1);
    }
}

/// Feeds `lines` to a fresh normalizer (blank lines skipped, as the adapter does; a failing
/// line ends the run, as the adapter stops the CLI) and finishes it with the fixture's exit.
fn normalizer_for(script: &FakeScript) -> impl Fn(&[String]) -> Normalized + use<> {
    let exit = ExitInfo::new(ExitKind::Code(script.exit_code), script.stderr_text().unwrap(), false);
    move |lines| {
        normalize_non_blank_lines(AmpNormalizer::new(), lines, |n, l, out| n.push_line(l, out), |n| n.finish(&exit))
    }
}

/// Lines the Amp stream-json emitter may print that no mapping knows.
const UNKNOWN_LINES: &[&str] = &[
    r#"{"type":"system","subtype":"compacting","session_id":"T-1"}"#,
    r#"{"type":"assistant_delta","delta":{"text":"x"}}"#,
    "not json {",
];

/// B2: for every Amp fixture, raw lines inserted at every position change neither the
/// transcript nor the verdict.
#[test]
fn raw_lines_never_change_any_fixtures_transcript() {
    for name in fixture_names("amp_") {
        let script = FakeScript::fixture(&name);
        let lines = script.stdout_lines().unwrap();
        assert_raw_lines_are_transparent(&name, &lines, UNKNOWN_LINES, normalizer_for(&script));
    }
}

fn feed(lines: &[&str], exit: ExitKind) -> Normalized {
    let mut n = AmpNormalizer::new();
    let mut out = Vec::new();
    for line in lines {
        n.push_line(line, &mut out).unwrap();
    }
    let verdict = n.finish(&ExitInfo::new(exit, "", false));
    (out, verdict)
}

/// B3: the synthetic error capture with `"is_error":true,` deleted is still a failed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_result_without_is_error_fails_the_run() {
    let fixture = FakeScript::fixture("amp_stream_json_SYNTHETIC_error_from_source");
    let lines: Vec<String> =
        fixture.stdout_lines().unwrap().into_iter().map(|l| l.replace("\"is_error\":true,", "")).collect();
    assert!(!lines.iter().any(|l| l.contains("is_error")));
    let p = run(&FakeScript::new().lines(lines).exit_code(1));
    let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.expect_err("not a completed run");
    assert_eq!(err.code(), ErrorCode::ProviderError, "{err:?}");
    assert_eq!(err.details()["reason"], "interrupted");
    assert_eq!(non_raw_kinds(&p), [Err_]);
}

/// B3: success is decided from every signal; conflicting signals fail with the provider's code.
#[test]
fn success_is_decided_from_every_signal() {
    let init = r#"{"type":"system","subtype":"init","session_id":"T-9","tools":[]}"#;
    let answer = r#"{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}},"session_id":"T-9"}"#;
    let ok = r#"{"type":"result","subtype":"success","duration_ms":5,"num_turns":1,"result":"Hi","session_id":"T-9"}"#;
    let (_, verdict) = feed(&[init, answer, ok], ExitKind::Code(0));
    assert_eq!(verdict.unwrap().output.content, "Hi", "no failure signal: a missing is_error is a success");

    let cases: &[(&str, &[&str], ExitKind, ErrorCode)] = &[
        ("exit 1", &[init, answer, ok], ExitKind::Code(1), ErrorCode::ProviderError),
        (
            "error text",
            &[
                init,
                r#"{"type":"result","subtype":"success","num_turns":0,"error":"API error 429 Too Many Requests","session_id":"T-9"}"#,
            ],
            ExitKind::Code(0),
            ErrorCode::ProviderRateLimited,
        ),
        (
            "error subtype",
            &[
                init,
                r#"{"type":"result","subtype":"error_during_execution","is_error":false,"num_turns":0,"session_id":"T-9"}"#,
            ],
            ExitKind::Code(0),
            ErrorCode::ProviderError,
        ),
        (
            "api_error_status",
            &[
                init,
                r#"{"type":"result","subtype":"success","is_error":false,"api_error_status":529,"result":"API Error: 529 overloaded","session_id":"T-9"}"#,
            ],
            ExitKind::Code(0),
            ErrorCode::ProviderUnavailable,
        ),
        (
            "errors[]",
            &[
                init,
                r#"{"type":"result","subtype":"success","errors":["Failed to authenticate. API Error: 401"],"session_id":"T-9"}"#,
            ],
            ExitKind::Code(0),
            ErrorCode::ProviderAuthenticationFailed,
        ),
    ];
    for (what, lines, exit, code) in cases {
        let (events, verdict) = feed(lines, *exit);
        let err = verdict.expect_err(what);
        assert_eq!(err.code(), *code, "{what}: {err:?}");
        if *what != "exit 1" {
            assert!(events.iter().any(|e| e.kind == Err_), "{what}: an error event");
            assert!(!events.iter().any(|e| e.kind == Recv), "{what}: no received answer");
        }
    }
}

/// C: thinking blocks (`--stream-json-thinking`) are reasoning events; redacted ones keep
/// only their marker.
#[test]
fn thinking_is_a_reasoning_stream() {
    let (events, verdict) = feed(
        &[
            r#"{"type":"assistant","message":{"role":"assistant","content":[{"type":"thinking","thinking":"Plan: run it."},{"type":"redacted_thinking","data":"EncryptedBlob=="},{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}},"session_id":"T-1"}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"Hi","session_id":"T-1"}"#,
        ],
        ExitKind::Code(0),
    );
    use EventKind::ReasoningCompleted as Thought;
    assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [Usage, Thought, Thought, Stream, Recv]);
    assert_eq!(events[1].data["content"], "Plan: run it.");
    assert_eq!(events[1].data["redacted"], false);
    assert_eq!(events[2].data["content"], "");
    assert_eq!(events[2].data["redacted"], true);
    assert!(!serde_json::to_string(&events[2].data).unwrap().contains("EncryptedBlob"));
    assert_eq!(verdict.unwrap().output.content, "Hi");
}
