#![allow(clippy::unwrap_used)]
//! Every captured Codex run (`fixtures/provider-cli/codex_*`), replayed through the adapter as
//! a subprocess by the fake CLI: expected normalized kinds and outcome per fixture.

use std::sync::Arc;

use asm_core::{ErrorCode, EventKind, ProviderErrorKind};
use asm_ports::ProviderAdapter;
use asm_provider_cli::CliEnv;
use asm_provider_cli::{ExitInfo, ExitKind};
use asm_provider_codex::{CodexAdapter, CodexNormalizer};
use asm_testkit::adapter_contract::{
    FakeCliInvocation, Normalized, Prepared, assert_raw_lines_are_transparent, conversation,
};
use asm_testkit::fake_cli::{FakeScript, fixture_names};
use asm_testkit::provider_tests::{
    check_inserted_raw_lines_are_transparent, non_raw_kinds, normalize_non_blank_lines, prepare_fake_cli_run,
};
use proptest::prelude::*;
use proptest::sample::Index;

use EventKind::{
    ErrorOccurred as Err_, MessageReceived as Recv, MessageStreamed as Stream, TokenUsageUpdated as Usage,
    ToolCallCompleted as Done, ToolCallStarted as Start,
};

const HELLO: &str = "Hello from the fake model!";
const DONE: &str = "The command printed: done.";

enum Expect {
    Ok(&'static str),
    Fail(ErrorCode, &'static str),
}

/// fixture → (outcome, exact kinds ignoring raw events). `Fail` carries `details.reason`.
fn table(name: &str) -> (Expect, Vec<EventKind>) {
    let text = vec![Stream, Recv, Usage];
    let tool = vec![Start, Done, Stream, Recv, Usage];
    match name {
        "codex_text" | "codex_text_known_model" | "codex_text_offline_flags" | "codex_resume" => {
            (Expect::Ok(HELLO), text)
        }
        "codex_tool_call" | "codex_tool_bypass" | "codex_tool_readonly_echo" | "codex_tool_write_workspace" => {
            (Expect::Ok(DONE), tool)
        }
        // Sandbox-denied write in read-only mode: Codex emits no item for the command at all.
        "codex_tool_write_readonly" => (Expect::Ok(DONE), text),
        "codex_http401" => (Expect::Fail(ErrorCode::ProviderAuthenticationFailed, "turn_failed"), vec![Err_]),
        "codex_http500" | "codex_http500_default_retries" | "codex_response_failed" | "codex_conn_refused_bounded" => {
            (Expect::Fail(ErrorCode::ProviderUnavailable, "turn_failed"), vec![Err_])
        }
        // Unbounded retries, killed by `timeout` (124): five reconnect notices, no turn.failed.
        "codex_conn_refused" => (Expect::Fail(ErrorCode::ProviderUnavailable, "exit"), vec![Err_; 5]),
        "codex_resume_bad" => (Expect::Fail(ErrorCode::ProviderError, "resume_not_found"), vec![]),
        "codex_wire_chat" => (Expect::Fail(ErrorCode::ProviderError, "config_error"), vec![]),
        "codex_sigint_midstream" | "codex_native_sigint_midstream" => {
            (Expect::Fail(ErrorCode::ProviderError, "exit"), vec![])
        }
        "codex_sigterm_midstream" | "codex_native_sigterm_midstream" => {
            (Expect::Fail(ErrorCode::ProviderError, "signal"), vec![])
        }
        other => panic!("fixture {other} has no expectation: add it to the table"),
    }
}

fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    Arc::new(CodexAdapter::builder().cli_path(&inv.program).model("gpt-5.5").env(env).build())
}

/// The fixture as the fake replays it; a negative exit code (`-15`: died by SIGTERM) becomes a
/// death by that signal. Returns the script and the exit code the error must carry.
fn script_for(name: &str) -> (FakeScript, i32) {
    let script = FakeScript::fixture(name);
    if script.exit_code < 0 {
        let sig = -script.exit_code;
        (script.exit_code(0).exit_signal(sig), 128 + sig)
    } else {
        let code = script.exit_code;
        (script, code)
    }
}

fn run(name: &str) -> (Prepared, i32) {
    let (script, code) = script_for(name);
    (prepare_fake_cli_run(make, &script), code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codex_fixture_normalizes_as_expected() {
    let names = fixture_names("codex_");
    assert!(names.len() >= 21, "{names:?}");
    for name in names {
        let (p, exit_code) = run(&name);
        let script = FakeScript::fixture(&name);
        let result = p.adapter.execute(p.request.clone(), p.sink.clone()).await;
        let (expect, expected_kinds) = table(&name);
        assert_eq!(non_raw_kinds(&p), expected_kinds, "{name}: kinds");
        assert!(p.recorded.lifecycle_attempts().is_empty(), "{name}");
        match (expect, result) {
            (Expect::Ok(text), Ok(outcome)) => {
                assert_eq!(outcome.output.content, text, "{name}");
                assert!(outcome.provider_session_id.is_some(), "{name}: thread id");
                assert_eq!(outcome.turns, 1, "{name}: turns");
                assert!(outcome.token_usage.input_tokens > 0, "{name}: usage");
                assert_eq!(outcome.model.as_deref(), Some("gpt-5.5"), "{name}");
                assert_eq!(outcome.stop_reason.as_deref(), Some("end_turn"), "{name}");
            }
            (Expect::Fail(code, reason), Err(err)) => {
                assert_eq!(err.code(), code, "{name}: {err:?}");
                assert_eq!(err.details()["reason"], reason, "{name}: {err:?}");
                let pe = err.provider_error().unwrap_or_else(|| panic!("{name}: no provider error"));
                assert_eq!(pe.exit_code, Some(exit_code), "{name}: {pe:?}");
                assert_eq!(pe.provider.as_str(), "codex", "{name}");
                if !script.stderr_text().unwrap().trim().is_empty() {
                    assert!(pe.stderr.as_deref().is_some_and(|s| !s.is_empty()), "{name}: stderr");
                }
                assert!(!pe.message.starts_with("WARNING"), "{name}: noise as message: {}", pe.message);
            }
            (Expect::Ok(_), Err(err)) => panic!("{name}: expected success, got {err:?}"),
            (Expect::Fail(code, _), Ok(o)) => panic!("{name}: expected {code:?}, got {o:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_of_selected_fixtures() {
    // Tool call: canonical keys, spec 9.3 shapes, a new thread's usage is the run's own (cache split out).
    let (p, _) = run("codex_tool_call");
    let outcome = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap();
    assert_eq!(outcome.provider_session_id.as_deref(), Some("01a200f9-c1a6-7c50-82bd-abb8d0991a2e"));
    assert_eq!(outcome.token_usage.input_tokens, 160);
    assert_eq!(outcome.token_usage.cache_read_tokens, 40);
    assert_eq!(outcome.token_usage.output_tokens, 24);
    assert_eq!(outcome.metadata["usage_scope"], "run");
    let events = p.recorded.events();
    let started = events.iter().find(|e| e.kind == Start).unwrap();
    assert_eq!(started.data["tool_call_id"], "item_0");
    assert_eq!(started.data["tool_name"], "bash");
    assert_eq!(started.data["tool_input"]["command"], "/bin/bash -lc 'echo hi'");
    let done = events.iter().find(|e| e.kind == Done).unwrap();
    assert_eq!(done.data["tool_call_id"], "item_0");
    assert_eq!(done.data["tool_output"]["output"], "hi\n");
    assert_eq!(done.data["tool_output"]["exit_code"], 0);
    assert_eq!(done.data["tool_input"], started.data["tool_input"]);
    let usage = events.iter().find(|e| e.kind == Usage).unwrap();
    assert_eq!(usage.data["usage_mode"], "cumulative");
    assert_eq!(usage.data["input_tokens"], 160);
    assert_eq!(usage.data["cache_read_tokens"], 40);
    let received = events.iter().find(|e| e.kind == Recv).unwrap();
    assert_eq!(received.data["role"], "assistant");
    assert_eq!(received.data["content"], DONE);
    assert_eq!(outcome.output.extra["tool_calls"][0]["name"], "bash");

    // Resume: same thread id; usage covers the whole thread (100 of the first run + 100).
    let (p, _) = run("codex_resume");
    let outcome = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap();
    assert_eq!(outcome.provider_session_id.as_deref(), Some("01a200f9-bf93-7780-98c1-560657492f45"));
    assert_eq!(outcome.token_usage.input_tokens + outcome.token_usage.cache_read_tokens, 200);

    // Bad resume: typed, the real reason as message, stderr kept.
    let (p, _) = run("codex_resume_bad");
    let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err();
    let pe = err.provider_error().unwrap();
    assert_eq!(pe.kind, ProviderErrorKind::TransportExit);
    assert!(pe.message.contains("no rollout found"), "{}", pe.message);
    assert!(pe.stderr.as_deref().unwrap().contains("thread/resume failed"));

    // 401 is not retryable; 5xx / response.failed / connection refused are; HTTP status kept.
    let (p, _) = run("codex_http401");
    let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(err.details()["http_status"], 401);
    assert_eq!(err.details()["thread_id"], "01a200f9-f132-74d0-90df-a72d5c18b487");
    for name in ["codex_http500", "codex_response_failed", "codex_conn_refused_bounded"] {
        let (p, _) = run(name);
        assert!(p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err().is_retryable(), "{name}");
    }

    // Unbounded reconnects: the notices are flagged as retrying.
    let (p, _) = run("codex_conn_refused");
    let _ = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err();
    assert!(p.recorded.events().iter().all(|e| e.data["details"]["retrying"] == true));
}

/// A small line cap, so oversized lines are cheap to produce.
const CAP: usize = 64 * 1024;

fn make_capped(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    Arc::new(
        CodexAdapter::builder()
            .cli_path(&inv.program)
            .model("gpt-5.5")
            .env(env)
            .limits(asm_provider_cli::CliLimits::default().max_line_bytes(CAP))
            .build(),
    )
}

/// B5: a line over the cap must not hide the 401 / 5xx the rest of the output reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_line_never_hides_the_providers_own_error() {
    let big = "x".repeat(CAP + 1);
    for (name, code) in
        [("codex_http401", ErrorCode::ProviderAuthenticationFailed), ("codex_http500", ErrorCode::ProviderUnavailable)]
    {
        let (fixture, _) = script_for(name);
        let mut lines = fixture.stdout_lines().unwrap();
        lines.insert(2, big.clone());
        let mut script = fixture.clone();
        script.stdout_file = None;
        let script = script.lines(lines);
        let p = prepare_fake_cli_run(make_capped, &script);
        let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert_eq!(err.details()["oversized_lines"], 1, "{name}");
    }
    // stderr alone can say it too (the oversized line was the only stdout).
    let script = FakeScript::new().lines([big]).stderr("Error: unexpected status 429 Too Many Requests\n").exit_code(1);
    let p = prepare_fake_cli_run(make_capped, &script);
    let err = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderRateLimited, "{err:?}");
}

/// Feeds `lines` to a fresh normalizer (blank lines skipped, as the adapter does) and finishes
/// it with the exit of fixture `name` (a negative exit code is a death by that signal).
fn normalizer_for(name: &str) -> impl Fn(&[String]) -> Normalized + use<> {
    let script = FakeScript::fixture(name);
    let status =
        if script.exit_code < 0 { ExitKind::Signal(-script.exit_code) } else { ExitKind::Code(script.exit_code) };
    let exit = ExitInfo::new(status, script.stderr_text().unwrap(), false);
    let push_line = |n: &mut CodexNormalizer, line: &str, out: &mut Vec<_>| {
        n.push_line(line, out);
        Ok(())
    };
    move |lines| normalize_non_blank_lines(CodexNormalizer::new(), lines, push_line, |n| n.finish(&exit))
}

/// Lines `codex exec --json` prints that are not conversation: items after the agent message
/// (`todo_list`, `reasoning`), unknown line types, non-JSON.
const UNKNOWN_LINES: &[&str] = &[
    r#"{"type":"item.completed","item":{"id":"item_90","type":"todo_list","items":[{"text":"a","completed":true}]}}"#,
    r#"{"type":"item.completed","item":{"id":"item_91","type":"reasoning","text":"**Checking** the files"}}"#,
    r#"{"type":"item.started","item":{"id":"item_92","type":"ghost_snapshot"}}"#,
    r#"{"type":"turn.aborted_in_the_future"}"#,
    "not json {",
];

/// B2: for every captured Codex run, raw lines (and reasoning items) inserted at every
/// position change neither the transcript nor the verdict (before, a `todo_list` or
/// `reasoning` item after the agent message made the final message appear twice).
#[test]
fn raw_lines_never_change_any_fixtures_transcript() {
    for name in fixture_names("codex_") {
        let lines = FakeScript::fixture(&name).stdout_lines().unwrap();
        assert_raw_lines_are_transparent(&name, &lines, UNKNOWN_LINES, normalizer_for(&name));
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
        let names = fixture_names("codex_");
        let name = pick.get(&names);
        let normalize = normalizer_for(name);
        let lines = FakeScript::fixture(name).stdout_lines().unwrap();
        check_inserted_raw_lines_are_transparent(name, &lines, inserts, UNKNOWN_LINES, normalize)?;
    }
}

/// B1: a resumed thread's usage events are the run's own (the thread total recorded by the
/// previous run subtracted), so the usage the runtime folds for a run that then fails is not
/// the whole thread's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_threads_usage_events_are_the_runs_own() {
    const THREAD: &str = "01a200f9-bf93-7780-98c1-560657492f45";
    let (mut p, _) = run("codex_resume");
    p.request.resume = Some(THREAD.to_owned());
    p.request.session.metadata.insert(
        "provider_sessions".into(),
        serde_json::json!({"codex": {"thread_usage": {"thread_id": THREAD, "usage": {
            "input_tokens": 80, "cache_read_tokens": 20, "output_tokens": 12, "cache_creation_tokens": 0
        }}}}),
    );
    let outcome = p.adapter.execute(p.request.clone(), p.sink.clone()).await.unwrap();
    assert_eq!((outcome.token_usage.input_tokens, outcome.token_usage.output_tokens), (80, 12));
    let events = p.recorded.events();
    let usage = events.iter().find(|e| e.kind == Usage).unwrap();
    assert_eq!(usage.data["usage_mode"], "cumulative");
    assert_eq!(usage.data["input_tokens"], 80, "run-scoped, not the thread's 160: {:?}", usage.data);
    assert_eq!(usage.data["cache_read_tokens"], 20);
    assert_eq!(usage.data["output_tokens"], 12);
    assert_eq!(usage.metadata["usage_scope"], "run");
    assert_eq!(outcome.provider_state["thread_usage"]["usage"]["input_tokens"], 160, "the next baseline");
}

/// B3: a completed turn with a non-zero exit is a conflict, so a failure.
#[test]
fn a_completed_turn_with_a_failing_exit_is_a_failure() {
    let lines = FakeScript::fixture("codex_text").stdout_lines().unwrap();
    let mut n = CodexNormalizer::new();
    let mut out = Vec::new();
    for line in &lines {
        n.push_line(line, &mut out);
    }
    assert!(n.finish(&ExitInfo::new(ExitKind::Code(0), "", false)).is_ok());
    let err = n.finish(&ExitInfo::new(ExitKind::Code(1), "", false)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    assert_eq!(err.details()["reason"], "exit_status");
    let err = n.finish(&ExitInfo::new(ExitKind::Signal(15), "", false)).unwrap_err();
    assert_eq!(err.provider_error().unwrap().exit_code, Some(143));
}

/// C: reasoning items are a typed reasoning stream, not raw JSON and not conversation.
#[test]
fn reasoning_items_are_a_reasoning_stream() {
    let mut n = CodexNormalizer::new();
    let mut out = Vec::new();
    for line in [
        r#"{"type":"thread.started","thread_id":"t-1"}"#,
        r#"{"type":"turn.started"}"#,
        r#"{"type":"item.updated","item":{"id":"item_0","type":"reasoning","text":"**Plan"}}"#,
        r#"{"type":"item.updated","item":{"id":"item_0","type":"reasoning","text":"**Plan** read"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Plan** read the file"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"Done."}}"#,
        r#"{"type":"item.completed","item":{"id":"item_2","type":"reasoning","text":"**Check**"}}"#,
        r#"{"type":"turn.completed","usage":{"input_tokens":10,"output_tokens":2}}"#,
    ] {
        n.push_line(line, &mut out);
    }
    use EventKind::{ReasoningCompleted as Thought, ReasoningStreamed as Thinking};
    let kinds: Vec<EventKind> = out.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [Thinking, Thinking, Thought, Stream, Thought, Recv, Usage]);
    assert_eq!(out[0].data["delta"], "**Plan");
    assert_eq!(out[1].data["delta"], "** read");
    assert_eq!(out[2].data["content"], "**Plan** read the file");
    assert_eq!(out[2].data["redacted"], false);
    assert_eq!(out[2].metadata["item_id"], "item_0");
    assert!(out.iter().all(|e| e.metadata.get("raw").is_none()));
    let conv = conversation(&out);
    assert_eq!(conv.len(), 1, "{conv:?}");
    assert_eq!(conv[0].content.as_deref(), Some("Done."));
    assert_eq!(n.finish(&ExitInfo::new(ExitKind::Code(0), "", false)).unwrap().output.content, "Done.");
}
