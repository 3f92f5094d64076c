//! The adapter contract suite: one contract, every [`ProviderAdapter`].
//!
//! The checks that need no process are in [`in_process`]: any adapter runs them, in-process
//! ones included ([`ScriptedAdapter`](crate::ScriptedAdapter) runs them in this crate's own
//! tests). This module runs the same checks against CLI-driven adapters through the fake CLI,
//! and adds the ones about processes and the CLI core: per-run option validation, cancel
//! escalation and process groups, exits, signals, stderr, oversized lines, deadlines, a
//! missing binary.
//!
//! Plain async functions an adapter's own tests call (one `#[tokio::test]` per check, so a
//! failure is named), or [`run_all`]. Each check writes a [`FakeScript`] into a temporary
//! directory and asks the adapter's [`AdapterContract::make`] for an adapter whose CLI is the
//! fake binary ([`fake_cli::path`]) with `ASM_FAKE_CLI_SCRIPT` set, then runs it through a
//! sink that behaves like the runtime's (it rejects lifecycle kinds).
//!
//! ```no_run
//! # async fn demo(contract: asm_testkit::adapter_contract::AdapterContract) {
//! use asm_testkit::adapter_contract;
//! adapter_contract::check_text_run(&contract).await;
//! adapter_contract::check_cancel_mid_stream(&contract).await;
//! # }
//! ```
//!
//! Waits are bounded; nothing sleeps to synchronise (the checks wait for the fake's pid file
//! or for the first emitted event, polling with a deadline). The checks need a Tokio runtime
//! with the time driver; run them on a multi-thread runtime
//! (`#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;

use asm_core::{
    Error, ErrorCode, Event, EventKind, JsonMap, Message, ProviderErrorKind, Session, SessionId, StoredEvent,
    TranscriptBuilder,
};
use asm_ports::{EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent};

use crate::fake_cli::{self, FakeRecord, FakeScript, SignalAction};

pub mod in_process;

use in_process::{Subject, assert_no_lifecycle};

/// How the suite reaches the fake CLI: the program to run and the environment the adapter must
/// pass to it (on top of whatever it sets itself).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FakeCliInvocation {
    /// The CLI path to configure.
    pub program: PathBuf,
    /// Variables to add to the adapter's explicit environment.
    pub env: Vec<(String, String)>,
    /// The directory the fake records argv / pid / env / stdin into.
    pub record_dir: PathBuf,
}

type MakeAdapter = dyn Fn(&FakeCliInvocation) -> Arc<dyn ProviderAdapter> + Send + Sync;

/// What an adapter provides to the suite.
#[non_exhaustive]
pub struct AdapterContract {
    /// Builds an adapter pointed at the fake CLI.
    pub make: Box<MakeAdapter>,
    /// A successful text run (a fixture).
    pub text: FakeScript,
    /// The final output the text run must return.
    pub expected_text: String,
    /// A successful run with one tool call and its result.
    pub tool: FakeScript,
    /// Lines that produce at least one event and no final result; the checks append a hang or
    /// an exit to them.
    pub stream_prefix: Vec<String>,
    /// A failing run: non-zero exit with stderr.
    pub failing: FakeScript,
    /// Lines the provider prints on SIGINT before exiting (Claude: partial message + result).
    pub sigint_lines: Vec<String>,
    /// The exit code the provider uses after SIGINT.
    pub sigint_exit_code: i32,
    /// Longest line the adapter accepts; the oversize check prints one byte more.
    pub max_line_bytes: usize,
}

impl AdapterContract {
    /// A contract from the adapter factory and its fixtures.
    pub fn new(
        make: impl Fn(&FakeCliInvocation) -> Arc<dyn ProviderAdapter> + Send + Sync + 'static,
        text: FakeScript,
        expected_text: impl Into<String>,
    ) -> Self {
        Self {
            make: Box::new(make),
            text,
            expected_text: expected_text.into(),
            tool: FakeScript::new(),
            stream_prefix: Vec::new(),
            failing: FakeScript::new().stderr("fatal: something broke\n").exit_code(1),
            sigint_lines: Vec::new(),
            sigint_exit_code: 0,
            max_line_bytes: 16 * 1024 * 1024,
        }
    }
    /// Sets the tool run.
    #[must_use]
    pub fn tool(mut self, tool: FakeScript) -> Self {
        self.tool = tool;
        self
    }
    /// Sets the stream prefix.
    #[must_use]
    pub fn stream_prefix<I: IntoIterator<Item = S>, S: Into<String>>(mut self, lines: I) -> Self {
        self.stream_prefix = lines.into_iter().map(Into::into).collect();
        self
    }
    /// Sets the SIGINT behaviour of the real CLI.
    #[must_use]
    pub fn on_sigint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, lines: I, exit_code: i32) -> Self {
        self.sigint_lines = lines.into_iter().map(Into::into).collect();
        self.sigint_exit_code = exit_code;
        self
    }
    /// Sets the failing run.
    #[must_use]
    pub fn failing(mut self, failing: FakeScript) -> Self {
        self.failing = failing;
        self
    }
    /// Sets the line cap.
    #[must_use]
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes;
        self
    }
}

impl fmt::Debug for AdapterContract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdapterContract").field("expected_text", &self.expected_text).finish_non_exhaustive()
    }
}

/// Events a run reported, as the suite's runtime-like sink saw them.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    inner: Arc<Mutex<RecordedInner>>,
}

#[derive(Debug, Default)]
struct RecordedInner {
    events: Vec<ProviderEvent>,
    lifecycle_attempts: Vec<EventKind>,
    closed: bool,
    after_close: usize,
}

impl Recorded {
    /// The accepted events.
    pub fn events(&self) -> Vec<ProviderEvent> {
        self.lock().events.clone()
    }
    /// Their kinds.
    pub fn kinds(&self) -> Vec<EventKind> {
        self.lock().events.iter().map(|e| e.kind).collect()
    }
    /// Lifecycle kinds the adapter tried to emit (must stay empty).
    pub fn lifecycle_attempts(&self) -> Vec<EventKind> {
        self.lock().lifecycle_attempts.clone()
    }
    /// Stops accepting events (what the runtime does on cancel); later emits fail with
    /// [`ErrorCode::Cancelled`] and are counted.
    pub fn close(&self) {
        self.lock().closed = true;
    }
    /// Emits attempted after [`close`](Self::close).
    pub fn after_close(&self) -> usize {
        self.lock().after_close
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, RecordedInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A sink that records events, rejects lifecycle kinds with [`ErrorCode::InvalidOperation`]
/// (like the runtime) and, once closed, rejects everything with [`ErrorCode::Cancelled`].
pub fn recording_sink(session: &Session) -> (EventSink, Recorded) {
    let recorded = Recorded::default();
    let rec = recorded.clone();
    let session_id = session.id.clone();
    let sink = EventSink::new(move |event: ProviderEvent| {
        let result = {
            let mut inner = rec.lock();
            if event.kind.is_run_lifecycle() {
                inner.lifecycle_attempts.push(event.kind);
                Err(Error::new(ErrorCode::InvalidOperation, "adapters may not emit lifecycle events"))
            } else if inner.closed {
                inner.after_close += 1;
                Err(Error::new(ErrorCode::Cancelled, "run is being cancelled"))
            } else {
                let mut stored = Event::new(event.kind, session_id.clone());
                stored.data = event.data.clone();
                stored.metadata = event.metadata.clone();
                inner.events.push(event);
                Ok(StoredEvent::new(stored, inner.events.len() as u64))
            }
        };
        async move { result }.boxed()
    });
    (sink, recorded)
}

/// One prepared fake run.
#[derive(Debug)]
pub struct Prepared {
    /// Keeps the record directory alive.
    pub dir: tempfile::TempDir,
    /// The adapter under test.
    pub adapter: Arc<dyn ProviderAdapter>,
    /// A fresh request ("hello").
    pub request: ExecuteRequest,
    /// Sink for the run.
    pub sink: EventSink,
    /// What the sink saw.
    pub recorded: Recorded,
}

impl Prepared {
    /// What the fake recorded (argv, pid, env, stdin).
    pub fn record(&self) -> FakeRecord {
        FakeRecord::read(self.dir.path())
    }

    /// The run as the in-process checks see it.
    pub fn subject(&self) -> Subject {
        Subject {
            adapter: Arc::clone(&self.adapter),
            request: self.request.clone(),
            sink: self.sink.clone(),
            recorded: self.recorded.clone(),
        }
    }
}

/// Writes `script` and builds the adapter for it.
///
/// # Panics
/// On I/O errors writing the script (a test-setup failure).
pub fn prepare(contract: &AdapterContract, script: &FakeScript) -> Prepared {
    let dir = tempfile::tempdir().expect("tempdir");
    let script_path = script.write_to(dir.path()).expect("writing fake script");
    let invocation = FakeCliInvocation {
        program: fake_cli::path(),
        env: vec![(fake_cli::SCRIPT_ENV.to_owned(), script_path.display().to_string())],
        record_dir: dir.path().to_path_buf(),
    };
    let adapter = (contract.make)(&invocation);
    let Subject { adapter, request, sink, recorded, .. } = Subject::new(adapter);
    Prepared { dir, adapter, request, sink, recorded }
}

const BOUND: Duration = Duration::from_secs(20);

async fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < BOUND, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the process group `pgid` is gone (killed and reaped).
pub async fn assert_group_gone(pgid: i32) {
    poll_until(&format!("process group {pgid} to disappear"), || {
        rustix::process::Pid::from_raw(pgid).is_none_or(|pid| rustix::process::test_kill_process_group(pid).is_err())
    })
    .await;
}

async fn execute(p: &Prepared) -> asm_core::Result<ExecuteOutcome> {
    p.subject().execute().await
}

/// A text run emits message events, returns the expected output, never a lifecycle kind
/// ([`in_process::check_text_run`]), and really ran the CLI.
pub async fn check_text_run(contract: &AdapterContract) {
    let p = prepare(contract, &contract.text);
    in_process::text_run(&p.subject(), &contract.expected_text).await;
    assert!(p.record().pid.is_some(), "the fake CLI was not run");
}

/// A tool run reports the call and its result with canonical keys
/// ([`in_process::check_tool_call_keys`]).
pub async fn check_tool_call_keys(contract: &AdapterContract) {
    let p = prepare(contract, &contract.tool);
    in_process::tool_run(&p.subject()).await;
}

/// A run cancelled before it starts returns `Err(Cancelled)`, reports nothing and never
/// starts the CLI ([`in_process::check_cancel_before_start`]).
pub async fn check_cancel_before_start(contract: &AdapterContract) {
    let p = prepare(contract, &contract.text);
    in_process::cancelled_before_start(&p.subject()).await;
    assert!(p.record().pid.is_none(), "the CLI was started for a cancelled run");
}

/// Per-run options (`ExecuteRequest::options`) are validated by the adapter before the CLI
/// starts: an unknown key and a value of the wrong type are `validation_error`
/// (`details.reason` `unknown_option` / `invalid_option`), nothing is reported, nothing runs.
pub async fn check_run_options_are_validated(contract: &AdapterContract) {
    for (key, value, reason) in [
        ("asm_contract_unknown", serde_json::json!(1), "unknown_option"),
        ("model", serde_json::json!(42), "invalid_option"),
    ] {
        let mut p = prepare(contract, &contract.text);
        p.request.options.insert(key.to_owned(), value);
        let err = execute(&p).await.expect_err("a bad run option must fail the run");
        assert_eq!(err.code(), ErrorCode::ValidationError, "{key}: {err:?}");
        assert_eq!(err.details()["option"], key, "{err:?}");
        assert_eq!(err.details()["reason"], reason, "{err:?}");
        assert!(p.recorded.events().is_empty(), "{key}: events reported");
        assert!(p.record().pid.is_none(), "{key}: the CLI was started");
    }
}

/// Unknown JSON lines and non-JSON lines are kept as `provider_raw` events
/// (`metadata.raw == true`, `data.raw` holding the line), never a crash.
pub async fn check_unknown_lines_are_raw_events(contract: &AdapterContract) {
    let mut lines = contract.text.stdout_lines().expect("reading the text fixture");
    let unknown = r#"{"type":"asm_contract_unknown","payload":{"x":1}}"#;
    let garbage = "this is not json {";
    let at = lines.len().saturating_sub(1);
    lines.insert(at, garbage.to_owned());
    lines.insert(at, unknown.to_owned());
    let mut script = contract.text.clone();
    script.stdout_file = None;
    let script = script.lines(lines);
    let p = prepare(contract, &script);
    let outcome = execute(&p).await.expect("unknown lines must not fail the run");
    assert_eq!(outcome.output.content, contract.expected_text);
    let raws: Vec<_> = p
        .recorded
        .events()
        .into_iter()
        .filter(|e| e.metadata.get("raw") == Some(&serde_json::Value::Bool(true)))
        .collect();
    assert!(
        raws.iter().any(|e| e.data.get("raw").and_then(|v| v.as_str()) == Some(unknown)
            || e.data.get("raw") == serde_json::from_str::<serde_json::Value>(unknown).ok().as_ref()),
        "unknown line not kept: {raws:?}"
    );
    assert!(
        raws.iter().any(|e| e.data.get("raw").and_then(|v| v.as_str()) == Some(garbage)),
        "garbage line not kept: {raws:?}"
    );
    assert!(raws.iter().all(|e| e.kind == EventKind::ProviderRaw), "raw lines must be provider_raw: {raws:?}");
    assert_no_lifecycle(&p.recorded);
}

/// The conversation `events` make, in the order an adapter emitted them: the messages of the
/// transcript built from them (as the runtime would store them, numbered 1, 2, ...), without
/// their metadata (which names event ids and sequence numbers).
pub fn conversation(events: &[ProviderEvent]) -> Vec<Message> {
    let session = SessionId::new();
    let stored: Vec<Event> = events
        .iter()
        .zip(1u64..)
        .map(|(e, seq)| {
            let mut event = Event::new(e.kind, session.clone()).with_payload(e.data.clone());
            event.metadata = e.metadata.clone();
            event.sequence = Some(seq);
            event
        })
        .collect();
    TranscriptBuilder::default()
        .from_events(&session, &stored)
        .messages
        .into_iter()
        .map(|m| Message { metadata: JsonMap::new(), ..m })
        .collect()
}

/// What a normalizer made of a run's lines: its events and its verdict.
pub type Normalized = (Vec<ProviderEvent>, asm_core::Result<asm_ports::ExecuteOutcome>);

/// Raw provider lines never change a run: for every line of `unknown` and every insertion
/// point of `lines`, `normalize` (a fresh normalizer fed the lines, then finished) must give the
/// same conversation ([`conversation`]) and the same verdict (output text, or error code) as
/// for `lines` alone. `name` labels failures.
///
/// # Panics
/// When a raw line changes the conversation or the verdict (the test fails).
pub fn assert_raw_lines_are_transparent(
    name: &str,
    lines: &[String],
    unknown: &[&str],
    normalize: impl Fn(&[String]) -> Normalized,
) {
    let verdict = |v: &asm_core::Result<asm_ports::ExecuteOutcome>| match v {
        Ok(outcome) => Ok(outcome.output.content.clone()),
        Err(e) => Err(e.code()),
    };
    let (events, outcome) = normalize(lines);
    let expected = (conversation(&events), verdict(&outcome));
    for line in unknown {
        for at in 0..=lines.len() {
            let mut mixed = lines.to_vec();
            mixed.insert(at, (*line).to_owned());
            let (events, outcome) = normalize(&mixed);
            let got = (conversation(&events), verdict(&outcome));
            assert_eq!(got, expected, "{name}: {line} inserted before line {at} changed the run");
        }
    }
}

/// Raw lines interleaved anywhere in the text and tool runs leave the transcript as it was:
/// an unknown JSON line and a non-JSON line inserted at every position, through the adapter
/// and the fake CLI.
pub async fn check_raw_lines_never_change_the_transcript(contract: &AdapterContract) {
    for fixture in [&contract.text, &contract.tool] {
        let lines = fixture.stdout_lines().expect("reading the fixture");
        if lines.is_empty() {
            continue;
        }
        let run = |lines: Vec<String>| async {
            let mut script = fixture.clone();
            script.stdout_file = None;
            let p = prepare(contract, &script.lines(lines));
            let outcome = execute(&p).await.expect("the fixture run must succeed");
            (conversation(&p.recorded.events()), outcome.output.content)
        };
        let expected = run(lines.clone()).await;
        assert!(!expected.0.is_empty(), "the fixture has no conversation");
        for raw in [r#"{"type":"asm_contract_unknown","payload":{"x":1}}"#, "not json {"] {
            for at in 0..=lines.len() {
                let mut mixed = lines.clone();
                mixed.insert(at, raw.to_owned());
                assert_eq!(run(mixed).await, expected, "{raw} inserted before line {at}");
            }
        }
    }
}

async fn wait_first_event(p: &Prepared) {
    let rec = p.recorded.clone();
    poll_until("the first event", move || !rec.events().is_empty()).await;
}

async fn wait_pid(p: &Prepared) -> i32 {
    let dir = p.dir.path().to_path_buf();
    poll_until("the fake CLI pid", || FakeRecord::read(&dir).pid.is_some()).await;
    FakeRecord::read(&dir).pid.unwrap_or_default()
}

fn hanging(contract: &AdapterContract, sigint: SignalAction, sigterm: SignalAction) -> FakeScript {
    FakeScript::new()
        .lines(contract.stream_prefix.clone())
        .hang_after(contract.stream_prefix.len())
        .on_sigint(sigint)
        .on_sigterm(sigterm)
        .spawn_grandchild()
}

async fn cancel_case(contract: &AdapterContract, script: FakeScript, max: Duration) {
    let p = prepare(contract, &script);
    let dir = p.dir.path().to_path_buf();
    let started = move || FakeRecord::read(&dir).pid.is_some();
    in_process::cancel_mid_run_when(&p.subject(), max, "the first event and the fake CLI's pid", started).await;
    let pgid = p.record().pid.expect("the fake CLI was not run");
    assert_group_gone(pgid).await;
}

/// Cancel mid-stream: `Err(Cancelled)` promptly, nothing emitted afterwards, the whole process
/// group (including a grandchild) gone. The fake behaves like the real CLI on SIGINT.
pub async fn check_cancel_mid_stream(contract: &AdapterContract) {
    let sigint = SignalAction::Exit { code: contract.sigint_exit_code, lines: contract.sigint_lines.clone() };
    cancel_case(contract, hanging(contract, sigint, SignalAction::Default), Duration::from_secs(3)).await;
}

/// Cancel when the CLI ignores SIGINT and SIGTERM: escalation to SIGKILL, still `Err(Cancelled)`
/// within the runtime's cancel grace (10 s) and nothing left behind.
pub async fn check_cancel_escalates(contract: &AdapterContract) {
    cancel_case(contract, hanging(contract, SignalAction::Ignore, SignalAction::Ignore), Duration::from_secs(9)).await;
}

/// Dropping the `execute` future mid-run leaves no process behind.
pub async fn check_dropped_future_leaves_no_child(contract: &AdapterContract) {
    let p = prepare(contract, &hanging(contract, SignalAction::Ignore, SignalAction::Ignore));
    let adapter = Arc::clone(&p.adapter);
    let (request, sink) = (p.request.clone(), p.sink.clone());
    let task = tokio::spawn(async move { adapter.execute(request, sink).await });
    wait_first_event(&p).await;
    let pgid = wait_pid(&p).await;
    task.abort();
    let _ = task.await;
    assert_group_gone(pgid).await;
}

fn assert_provider_failure(err: &Error, what: &str) {
    assert!(!matches!(err.code(), ErrorCode::Cancelled), "{what}: {err:?}");
    assert_eq!(err.category(), asm_core::ErrorCategory::Provider, "{what}: {err:?}");
    assert!(err.provider_error().is_some(), "{what}: no provider_error in {err:?}");
}

/// A non-zero exit is a typed error carrying the exit code and (bounded) stderr.
pub async fn check_nonzero_exit(contract: &AdapterContract) {
    let p = prepare(contract, &contract.failing);
    let err = execute(&p).await.expect_err("a failing CLI must fail the run");
    assert_provider_failure(&err, "non-zero exit");
    let pe = err.provider_error().expect("provider error");
    assert_eq!(pe.exit_code, Some(contract.failing.exit_code), "{pe:?}");
    let stderr = contract.failing.stderr_text().expect("reading the failing run's stderr");
    if !stderr.trim().is_empty() {
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
        assert!(pe.stderr.as_deref().is_some_and(|s| s.contains(first.trim())), "stderr missing: {pe:?}");
    }
    assert_no_lifecycle(&p.recorded);
}

/// Huge stderr is truncated in the provider error.
pub async fn check_stderr_is_truncated(contract: &AdapterContract) {
    let big = "error line that repeats\n".repeat(10_000);
    let p = prepare(contract, &FakeScript::new().stderr(big).exit_code(2));
    let err = execute(&p).await.expect_err("must fail");
    let pe = err.provider_error().expect("provider error");
    assert_eq!(pe.truncated, Some(true), "{pe:?}");
    assert!(pe.stderr.as_deref().is_some_and(|s| s.len() <= asm_core::StderrLimits::DEFAULT_MAX_BYTES));
}

/// EOF without the provider's final result line (exit 0) is a typed error, not a success.
pub async fn check_eof_without_result(contract: &AdapterContract) {
    let p = prepare(contract, &FakeScript::new().lines(contract.stream_prefix.clone()));
    let err = execute(&p).await.expect_err("EOF without a result must fail");
    assert_provider_failure(&err, "EOF without result");
    assert_no_lifecycle(&p.recorded);
}

/// Death by signal is a typed error with exit code 128 + signal.
pub async fn check_killed_by_signal(contract: &AdapterContract) {
    let p = prepare(contract, &FakeScript::new().lines(contract.stream_prefix.clone()).exit_signal(9));
    let err = execute(&p).await.expect_err("a killed CLI must fail the run");
    assert_provider_failure(&err, "signal");
    assert_eq!(err.provider_error().and_then(|pe| pe.exit_code), Some(137));
}

/// The request deadline ends the run with a timeout error and stops the process.
pub async fn check_deadline(contract: &AdapterContract) {
    let mut p = prepare(contract, &hanging(contract, SignalAction::exit(0), SignalAction::Default));
    p.request.deadline = Some(Instant::now() + Duration::from_millis(500));
    let err = execute(&p).await.expect_err("deadline must fail the run");
    assert!(matches!(err.code(), ErrorCode::Timeout | ErrorCode::ProviderTimeout), "{err:?}");
    assert_eq!(err.provider_error().map(|pe| pe.kind), Some(ProviderErrorKind::Timeout));
    if let Some(pgid) = p.record().pid {
        assert_group_gone(pgid).await;
    }
}

/// A line over the cap is skipped and fails the run with a parse error (the output is
/// incomplete, so even a run that then reports success fails), once the process has ended; the
/// whole process group is gone afterwards.
pub async fn check_oversized_line(contract: &AdapterContract) {
    let script = FakeScript::new()
        .lines(contract.stream_prefix.clone())
        .big_line(contract.max_line_bytes + 1)
        .spawn_grandchild();
    let p = prepare(contract, &script);
    let err = execute(&p).await.expect_err("an oversized line must fail the run");
    assert_eq!(err.code(), ErrorCode::ProviderError, "{err:?}");
    assert_eq!(err.provider_error().map(|pe| pe.kind), Some(ProviderErrorKind::ParseError), "{err:?}");
    if let Some(pgid) = p.record().pid {
        assert_group_gone(pgid).await;
    }

    // The same inside an otherwise successful run: the dropped line may have been anything.
    let mut lines = contract.text.stdout_lines().expect("reading the text fixture");
    let at = lines.len().saturating_sub(1);
    lines.insert(at, "x".repeat(contract.max_line_bytes + 1));
    let mut script = contract.text.clone();
    script.stdout_file = None;
    let p = prepare(contract, &script.lines(lines));
    let err = execute(&p).await.expect_err("a run that dropped a line cannot succeed");
    assert_eq!(err.provider_error().map(|pe| pe.kind), Some(ProviderErrorKind::ParseError), "{err:?}");
    assert_eq!(err.details()["reason"], "line_too_long", "{err:?}");
    assert_no_lifecycle(&p.recorded);
}

/// `validate_config` accepts the fake CLI and rejects a missing binary with `cli_not_found`.
pub async fn check_validate_config(contract: &AdapterContract) {
    let p = prepare(contract, &contract.text);
    p.adapter.validate_config().expect("adapter pointed at the fake CLI must validate");
    let missing = FakeCliInvocation {
        program: Path::new("/nonexistent/asm-contract/cli").to_path_buf(),
        env: Vec::new(),
        record_dir: p.dir.path().to_path_buf(),
    };
    let adapter = (contract.make)(&missing);
    let err = adapter.validate_config().expect_err("a missing CLI must not validate");
    assert_eq!(err.provider_error().map(|pe| pe.kind), Some(ProviderErrorKind::CliNotFound), "{err:?}");
    let err = execute(&Prepared { adapter, ..prepare(contract, &contract.text) }).await.expect_err("missing CLI");
    assert_eq!(err.provider_error().map(|pe| pe.kind), Some(ProviderErrorKind::CliNotFound), "{err:?}");
}

/// The in-process suite ([`in_process::run_all`]) against the adapter this contract builds: its
/// text and tool scripts, and its stream prefix followed by a hang as the streaming run. For a
/// CLI adapter that also wants the checks that need no process, without a second setup.
pub async fn run_in_process_suite(contract: &AdapterContract) {
    let text = prepare(contract, &contract.text);
    let tool = prepare(contract, &contract.tool);
    let hanging = FakeScript::new().lines(contract.stream_prefix.clone()).hang_after(contract.stream_prefix.len());
    let streaming = prepare(contract, &hanging);
    let suite = in_process::InProcessContract::new(Arc::clone(&text.adapter), contract.expected_text.clone())
        .tool(Arc::clone(&tool.adapter))
        .streaming(Arc::clone(&streaming.adapter));
    in_process::run_all(&suite).await;
}

/// Generates one `#[tokio::test]` (multi-thread, two workers) per check of this suite, so a
/// failure is named by its check. `$contract` is an expression that builds the
/// [`AdapterContract`]; each test evaluates it. Without a list it generates every check
/// [`run_all`] runs; after a `;`, only the listed ones (for an adapter some checks do not apply
/// to, such as one without JSONL framing).
///
/// ```no_run
/// use std::sync::Arc;
/// use asm_provider_claude::ClaudeAdapter;
/// use asm_provider_cli::CliEnv;
/// use asm_testkit::adapter_contract::{AdapterContract, FakeCliInvocation};
/// use asm_testkit::fake_cli::FakeScript;
///
/// /// The adapter under test, pointed at the fake CLI the suite prepares.
/// fn make(inv: &FakeCliInvocation) -> Arc<dyn asm_ports::ProviderAdapter> {
///     let env = CliEnv::minimal().set_all(inv.env.clone());
///     Arc::new(ClaudeAdapter::builder().cli_path(&inv.program).env(env).build())
/// }
///
/// fn my_contract() -> AdapterContract {
///     AdapterContract::new(make, FakeScript::fixture("claude_text"), "Hello from the fake model!")
/// }
/// asm_testkit::cli_contract_tests!(my_contract());
/// asm_testkit::cli_contract_tests!(my_contract(); check_cancel_before_start, check_nonzero_exit);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! cli_contract_tests {
    ($contract:expr) => {
        $crate::cli_contract_tests!(
            $contract;
            check_text_run,
            check_tool_call_keys,
            check_cancel_before_start,
            check_run_options_are_validated,
            check_unknown_lines_are_raw_events,
            check_raw_lines_never_change_the_transcript,
            check_cancel_mid_stream,
            check_cancel_escalates,
            check_dropped_future_leaves_no_child,
            check_nonzero_exit,
            check_stderr_is_truncated,
            check_eof_without_result,
            check_killed_by_signal,
            check_deadline,
            check_oversized_line,
            check_validate_config,
        );
    };
    ($contract:expr; $($check:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            $crate::adapter_contract::$check(&$contract).await;
        }
    )+};
}

/// Every check, one after the other.
pub async fn run_all(contract: &AdapterContract) {
    check_text_run(contract).await;
    check_tool_call_keys(contract).await;
    check_cancel_before_start(contract).await;
    check_run_options_are_validated(contract).await;
    check_unknown_lines_are_raw_events(contract).await;
    check_raw_lines_never_change_the_transcript(contract).await;
    check_cancel_mid_stream(contract).await;
    check_cancel_escalates(contract).await;
    check_dropped_future_leaves_no_child(contract).await;
    check_nonzero_exit(contract).await;
    check_stderr_is_truncated(contract).await;
    check_eof_without_result(contract).await;
    check_killed_by_signal(contract).await;
    check_deadline(contract).await;
    check_oversized_line(contract).await;
    check_validate_config(contract).await;
}
