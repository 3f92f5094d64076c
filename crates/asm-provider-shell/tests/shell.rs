#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shell adapter's own behaviour: streaming, the quirks fixed (failed exit codes, timeouts,
//! the allow list on every command, the output cap), cancel of the whole process group,
//! environment and cwd. Runs the real `/bin/sh`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asm_core::{ErrorCode, Event, EventKind, ProviderErrorKind, Run, RunInput, RunStatus, Session, keys};
use asm_ports::{EventQuery, EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent};
use asm_provider_cli::{CliLimits, process_group_alive};
use asm_provider_shell::{ShellAdapter, truncation_marker};
use asm_runtime::{NewSession, RunOptions, SessionManager};
use asm_store_memory::InMemorySessionStore;

const BOUND: Duration = Duration::from_secs(20);

type Seen = Arc<Mutex<Vec<ProviderEvent>>>;

fn sink(session: &Session) -> (EventSink, Seen) {
    let seen: Seen = Arc::default();
    let store = Arc::clone(&seen);
    let id = session.id.clone();
    let sink = EventSink::new(move |e: ProviderEvent| {
        assert!(!e.kind.is_run_lifecycle(), "adapter emitted {:?}", e.kind);
        store.lock().unwrap().push(e.clone());
        let event = asm_core::StoredEvent::new(Event::new(e.kind, id.clone()), 1);
        Box::pin(async move { Ok(event) })
    });
    (sink, seen)
}

fn request(text: &str) -> ExecuteRequest {
    let session = Session::new("shell-test").unwrap();
    let run = Run::new(session.id.clone(), RunInput::user(text));
    ExecuteRequest::new(session, run)
}

async fn run(
    adapter: &ShellAdapter,
    request: ExecuteRequest,
) -> (asm_core::Result<ExecuteOutcome>, Vec<ProviderEvent>) {
    let (sink, seen) = sink(&request.session);
    let result = tokio::time::timeout(BOUND, adapter.execute(request, sink)).await.expect("execute hung");
    let events = seen.lock().unwrap().clone();
    (result, events)
}

fn kinds(events: &[ProviderEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

fn streamed_text(events: &[ProviderEvent]) -> String {
    events
        .iter()
        .filter(|e| e.kind == EventKind::MessageStreamed)
        .map(|e| e.data[keys::DELTA].as_str().unwrap().to_owned())
        .collect()
}

async fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < BOUND, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_is_streamed_as_it_arrives_then_the_tool_call_completes() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("go");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let line = format!("echo first; read x < '{}'; echo second", fifo.display());
    let adapter = ShellAdapter::new();
    let req = request(&line);
    let (sink, seen) = sink(&req.session);
    let task = tokio::spawn({
        let adapter = adapter.clone();
        async move { adapter.execute(req, sink).await }
    });
    // The first chunk is reported while the command still runs (it waits on the fifo).
    poll_until("the first chunk", || streamed_text(&seen.lock().unwrap()).contains("first")).await;
    let before = kinds(&seen.lock().unwrap());
    assert_eq!(before[0], EventKind::ToolCallStarted, "{before:?}");
    assert!(!before.contains(&EventKind::ToolCallCompleted), "{before:?}");
    let writer = std::thread::spawn(move || std::fs::write(&fifo, "go\n").unwrap());
    let outcome = tokio::time::timeout(BOUND, task).await.unwrap().unwrap().unwrap();
    writer.join().unwrap();
    let events = seen.lock().unwrap().clone();
    assert_eq!(outcome.output.content, "first\nsecond\n");
    assert_eq!(outcome.stop_reason.as_deref(), Some("exit_code_0"));
    assert_eq!(outcome.output.extra["exit_code"], 0);
    let k = kinds(&events);
    assert!(k.iter().filter(|k| **k == EventKind::MessageStreamed).count() >= 2, "{k:?}");
    assert_eq!(&k[k.len() - 2..], [EventKind::ToolCallCompleted, EventKind::MessageReceived], "{k:?}");
    assert_eq!(streamed_text(&events), "first\nsecond\n");
    let started = &events[0];
    let completed = &events[k.len() - 2];
    assert_eq!(started.data[keys::TOOL_NAME], "bash");
    assert!(started.data[keys::TOOL_CALL_ID].as_str().unwrap().starts_with("tc_"));
    assert_eq!(started.data[keys::TOOL_INPUT]["command"], line.as_str());
    assert_eq!(completed.data[keys::TOOL_CALL_ID], started.data[keys::TOOL_CALL_ID]);
    assert_eq!(completed.data[keys::TOOL_OUTPUT]["exit_code"], 0);
    assert_eq!(completed.data[keys::TOOL_OUTPUT]["output"], "first\nsecond\n");
    let received = events.last().unwrap();
    assert_eq!(received.data[keys::CONTENT], "first\nsecond\n");
    assert_eq!(received.data[keys::ROLE], "tool");
}

async fn run_in_manager(adapter: ShellAdapter, text: &str) -> (asm_core::Result<()>, Run, Vec<asm_core::StoredEvent>) {
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let session = manager.start_session(NewSession::new("shell-test")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    let run = manager.start_run(&session.id, RunInput::user(text), RunOptions::default()).await.unwrap();
    let result = tokio::time::timeout(BOUND, manager.execute_run(&run.id, RunOptions::default())).await.unwrap();
    let stored = manager.get_run(&run.id).await.unwrap();
    let events = manager.session_events(&session.id, EventQuery::new()).await.unwrap();
    (result.map(drop), stored, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_code_outside_the_success_list_fails_the_run() {
    let (result, run, events) = run_in_manager(ShellAdapter::new(), "echo out; echo broken >&2; exit 3").await;
    let err = result.expect_err("exit 3 must fail the run");
    assert_eq!(err.code(), ErrorCode::ProviderError, "{err:?}");
    assert_eq!(err.details()["reason"], "command_failed");
    assert_eq!(err.details()["exit_code"], 3);
    let pe = err.provider_error().unwrap();
    assert_eq!(pe.exit_code, Some(3));
    assert!(pe.stderr.as_deref().unwrap().contains("broken"), "{pe:?}");
    assert!(err.message().contains("Command exited with code 3"), "{err:?}");
    assert_eq!(run.status, RunStatus::Failed);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert!(!kinds.contains(&EventKind::RunCompleted), "{kinds:?}");
    assert!(kinds.contains(&EventKind::RunFailed), "{kinds:?}");
    assert!(kinds.contains(&EventKind::ToolCallFailed), "{kinds:?}");
    assert!(!kinds.contains(&EventKind::ToolCallCompleted), "{kinds:?}");
    let failed = events.iter().find(|e| e.kind == EventKind::ToolCallFailed).unwrap();
    assert_eq!(failed.data[keys::TOOL_OUTPUT]["exit_code"], 3);
    assert_eq!(failed.data[keys::TOOL_OUTPUT]["output"], "out\n");
    assert_eq!(failed.data[keys::TOOL_OUTPUT]["stderr"], "broken\n");

    // The same exit code in the success list completes it.
    let adapter = ShellAdapter::builder().success_exit_codes([0, 3]).build().unwrap();
    let (result, run, events) = run_in_manager(adapter, "echo out; exit 3").await;
    result.unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    let done = events.iter().find(|e| e.kind == EventKind::RunCompleted).unwrap();
    assert_eq!(done.data[keys::STOP_REASON], "exit_code_3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_run_timeout_and_stops_the_command() {
    let adapter = ShellAdapter::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let (result, stored, events) = run_in_manager(adapter.clone(), "echo $$; exec sleep 100").await;
    let err = result.expect_err("timeout");
    assert_eq!(err.code(), ErrorCode::Timeout, "{err:?}");
    assert_eq!(err.details()["reason"], "command_timeout");
    assert_eq!(err.provider_error().map(|pe| pe.kind), Some(ProviderErrorKind::Timeout));
    assert!(err.message().contains("timed out after 300ms"), "{err:?}");
    assert_eq!(stored.status, RunStatus::Timeout);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::RunTimeout), "{kinds:?}");
    assert!(!kinds.contains(&EventKind::RunCompleted), "{kinds:?}");
    let failed = events.iter().find(|e| e.kind == EventKind::ToolCallFailed).unwrap();
    assert_eq!(failed.data[keys::TOOL_OUTPUT]["timed_out"], true);
    assert_eq!(failed.data[keys::TOOL_OUTPUT]["exit_code"], 124);
    let pid: i32 = failed.data[keys::TOOL_OUTPUT]["output"].as_str().unwrap().trim().parse().unwrap();
    poll_until("the timed-out command to be gone", || !process_group_alive(pid)).await;

    // A per-run timeout_ms wins over the adapter's.
    let mut req = request("sleep 100");
    req.options.insert("timeout_ms".into(), 100.into());
    let (result, _) = run(&ShellAdapter::new(), req).await;
    assert!(result.unwrap_err().message().contains("100ms"));
}

/// Whether `pid` is a live process (zombies count as gone).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_whole_process_group() {
    let adapter = ShellAdapter::builder()
        .limits(CliLimits::default().graces(Duration::from_millis(300), Duration::from_millis(300)))
        .build()
        .unwrap();
    // Two sleeps: one in the background, one in the foreground; the shell prints every pid.
    let req = request("sleep 100 & echo $!; echo $$; sleep 100 & echo $!; sleep 100");
    let cancel = req.cancel.clone();
    let (sink, seen) = sink(&req.session);
    let task = tokio::spawn(async move { adapter.execute(req, sink).await });
    poll_until("three pids", || streamed_text(&seen.lock().unwrap()).lines().count() >= 3).await;
    let pids: Vec<i32> = streamed_text(&seen.lock().unwrap()).lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?} should run before the cancel");
    let emitted = seen.lock().unwrap().len();
    cancel.cancel();
    let err = tokio::time::timeout(BOUND, task).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled, "{err:?}");
    assert_eq!(seen.lock().unwrap().len(), emitted, "events after the cancel");
    poll_until("every process of the command to be gone", || pids.iter().all(|p| !alive(*p))).await;
    poll_until("the process group to be gone", || !process_group_alive(pids[1])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_checks_every_command_of_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), "keep me").unwrap();
    let adapter = ShellAdapter::builder().cwd(dir.path()).allowed_commands(["ls"]).build().unwrap();

    let (result, events) = run(&adapter, request("ls; rm -rf x")).await;
    let err = result.expect_err("rm is not allowed");
    assert_eq!(err.code(), ErrorCode::PolicyViolation, "{err:?}");
    assert_eq!(err.details()["command"], "rm");
    assert!(events.is_empty(), "{events:?}");
    assert!(dir.path().join("x").exists(), "the refused command ran");

    for line in ["ls $(rm -rf x)", "ls `rm -rf x`", "(rm -rf x)", "$RM x"] {
        let (result, events) = run(&adapter, request(line)).await;
        let err = result.expect_err(line);
        assert_eq!(err.code(), ErrorCode::ValidationError, "{line}: {err:?}");
        assert_eq!(err.details()["reason"], "unparseable_command", "{line}");
        assert!(events.is_empty());
    }
    assert!(dir.path().join("x").exists());

    let (result, _) = run(&adapter, request("ls | ls && ls")).await;
    assert_eq!(result.unwrap().output.content, "x\nx\n"); // the piped ls output is read by nobody

    // The deny list wins; the argv form is checked on its program.
    let adapter = ShellAdapter::builder().denied_commands(["rm"]).build().unwrap();
    let (result, _) = run(&adapter, request("echo ok && /bin/rm -rf /nonexistent")).await;
    assert_eq!(result.unwrap_err().code(), ErrorCode::PolicyViolation);
    let (result, _) = run(&adapter, request(r#"{"command": "/bin/rm", "args": ["-rf", "/nonexistent"]}"#)).await;
    assert_eq!(result.unwrap_err().details()["reason"], "denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_cap_ends_with_a_visible_marker() {
    let adapter = ShellAdapter::builder().max_output_bytes(100).build().unwrap();
    let (result, events) = run(&adapter, request("yes | head -c 10000")).await;
    let outcome = result.unwrap();
    let expected = format!("{}{}", "y\n".repeat(50), truncation_marker(100, 9900));
    assert_eq!(outcome.output.content, expected);
    assert_eq!(outcome.output.extra["truncated"], true);
    assert_eq!(streamed_text(&events), expected);
    let received = events.iter().find(|e| e.kind == EventKind::MessageReceived).unwrap();
    assert_eq!(received.data[keys::CONTENT], expected.as_str());
    let completed = events.iter().find(|e| e.kind == EventKind::ToolCallCompleted).unwrap();
    assert_eq!(completed.data[keys::TOOL_OUTPUT]["dropped_bytes"], 9900);

    let (result, _) = run(&adapter, request("printf short")).await;
    assert_eq!(result.unwrap().output.content, "short");
}

fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path).unwrap().display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_and_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let adapter = ShellAdapter::builder().cwd(dir.path()).env_var("GREETING", "hi").build().unwrap();
    let (result, events) = run(&adapter, request("echo \"$GREETING\"; pwd -P")).await;
    assert_eq!(result.unwrap().output.content, format!("hi\n{}\n", canonical(dir.path())));
    assert_eq!(events[0].data[keys::TOOL_INPUT]["cwd"], dir.path().display().to_string());

    // Per-run options: cwd, env, and the argv form without a shell.
    let mut req = request("ignored when a command option is set");
    req.options.insert("command".into(), "sh".into());
    req.options.insert("args".into(), serde_json::json!(["-c", "echo \"$GREETING $EXTRA\"; pwd -P"]));
    req.options.insert("cwd".into(), other.path().display().to_string().into());
    req.options.insert("env".into(), serde_json::json!({"EXTRA": "there"}));
    let (result, _) = run(&adapter, req).await;
    assert_eq!(result.unwrap().output.content, format!("hi there\n{}\n", canonical(other.path())));

    let (result, _) = run(&adapter, request(r#"{"command": "printf", "args": ["%s-%s", "a", 1]}"#)).await;
    assert_eq!(result.unwrap().output.content, "a-1");

    // The environment is explicit: the minimal set and what was configured, nothing else of
    // this process (cargo sets CARGO_MANIFEST_DIR for tests).
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let (result, _) = run(&adapter, request("env")).await;
    let env = result.unwrap().output.content;
    assert!(env.contains("GREETING=hi"), "{env}");
    assert!(!env.contains("CARGO_MANIFEST_DIR"), "{env}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_and_input_errors_are_typed() {
    let err = ShellAdapter::builder().shell("/nonexistent/sh").build().unwrap().validate_config().unwrap_err();
    assert_eq!(err.provider_error().map(|pe| pe.kind), Some(ProviderErrorKind::CliNotFound), "{err:?}");
    let err = ShellAdapter::builder().cwd("/nonexistent/dir").build().unwrap().validate_config().unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(err.details()["option"], "cwd");
    ShellAdapter::new().validate_config().unwrap();
    assert!(!ShellAdapter::new().supports_native_resume());
    assert_eq!(ShellAdapter::new().name(), "shell");
    let caps: Vec<String> = ShellAdapter::new().capabilities().into_iter().map(|c| c.name).collect();
    assert_eq!(caps, ["command_execution", "streaming"]);
    assert!(ShellAdapter::builder().max_output_bytes(0).build().is_err());

    for (text, reason) in [("   ", "empty_input"), (r#"{"prompt": "ls"}"#, "missing_command")] {
        let (result, events) = run(&ShellAdapter::new(), request(text)).await;
        let err = result.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError, "{text}");
        assert_eq!(err.details()["reason"], reason, "{text}");
        assert!(events.is_empty());
    }
    let mut req = request("echo hi");
    req.options.insert("model".into(), "m".into());
    let (result, _) = run(&ShellAdapter::new(), req).await;
    assert_eq!(result.unwrap_err().details()["reason"], "unknown_option");
    let mut req = request("echo hi");
    req.options.insert("timeout_ms".into(), 0.into());
    let (result, _) = run(&ShellAdapter::new(), req).await;
    assert_eq!(result.unwrap_err().details()["reason"], "invalid_option");

    // A missing program in the argv form: the call is reported failed, with no exit code.
    let (result, events) = run(&ShellAdapter::new(), request(r#"{"command": "no-such-command-xyz"}"#)).await;
    assert_eq!(result.unwrap_err().provider_error().map(|pe| pe.kind), Some(ProviderErrorKind::CliNotFound));
    assert_eq!(kinds(&events), [EventKind::ToolCallStarted, EventKind::ToolCallFailed, EventKind::ErrorOccurred]);
    // ... while inside a shell string it is just exit 127.
    let (result, _) = run(&ShellAdapter::new(), request("no-such-command-xyz")).await;
    assert_eq!(result.unwrap_err().details()["exit_code"], 127);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_death_fails_with_128_plus_the_signal() {
    let (result, _) = run(&ShellAdapter::new(), request("kill -9 $$")).await;
    let err = result.unwrap_err();
    assert_eq!(err.provider_error().and_then(|pe| pe.exit_code), Some(137), "{err:?}");
    assert!(err.message().contains("signal 9"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_hello_through_the_session_manager() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ShellAdapter::new());
    let once = manager.run_once(RunInput::user("echo hello"), RunOptions::default()).await.unwrap();
    assert_eq!(once.output().content, "hello\n");
    let events = manager.session_events(&once.session_id, EventQuery::new()).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().filter(|e| e.run_id.is_some()).map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::RunStarted,
            EventKind::MessageSent,
            EventKind::ToolCallStarted,
            EventKind::MessageStreamed,
            EventKind::ToolCallCompleted,
            EventKind::MessageReceived,
            EventKind::RunCompleted,
        ]
    );
    let completed = events.iter().find(|e| e.kind == EventKind::RunCompleted).unwrap();
    assert_eq!(completed.data[keys::STOP_REASON], "exit_code_0");
    assert!(events.iter().filter(|e| e.run_id.is_some()).all(|e| e.provider.as_deref() != Some("unknown")));
}
