//! Runs the provider adapters end to end against the real CLIs and this crate's fake model
//! servers (loopback only). Started by `cargo xtask integration`, which installs the pinned
//! CLIs first:
//!
//! ```text
//! asm-real-cli --claude <path to claude> --codex <path to codex> --claude-acp <path to claude-agent-acp>
//!     [--asm <path to asm>] [--only <case name substring>]
//! ```
//!
//! The `cli/*` cases run the `asm` binary (crate `asm-cli`) end to end over the same CLIs and
//! servers; `--asm` names it (xtask builds it first and passes `target/debug/asm`), and without
//! `--asm` those cases fail saying so. `--gemini <path to gemini>` and `--codex-acp <path to
//! codex-acp>` name the agents of the `acp/gemini-*` (cases_gemini.rs) and `acp/codex-acp-*`
//! (cases_codex_acp.rs) cases, which fail without them.
//!
//! Every case prints `PASS name (time)` or `FAIL name (time): why`; the last line is
//! `N passed, M failed` and the exit code is non-zero when anything failed. Each run of a CLI
//! gets an isolated HOME in a temporary directory (removed at the end) and a marker variable in
//! its environment, which is how the cases check that no process is left behind.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use asm_core::{ErrorCode, EventKind, Role, Run, RunInput, Session, SessionId, TranscriptBuilder, keys};
use asm_integration::{Api, FakeServer, RecordedRequest, Scenario, TEXT_REPLY, tool_followup_text};
use asm_ports::{EventQuery, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent};
use asm_provider_acp::{AcpAdapter, ToolKindPermissions};
use asm_provider_claude::{ClaudeAdapter, ClaudeAdapterBuilder, ClaudeBuilderExt};
use asm_provider_cli::CliEnv;
use asm_provider_codex::{ApprovalPolicy, CodexAdapter, CodexAdapterBuilder, CodexBuilderExt, SandboxMode};
use asm_routing::{ProviderRouter, RoutingPolicy};
use asm_runtime::{
    Continuation, ForkContinuation, ForkPoint, NewSession, ReplayReason, RunOptions, RunResult, SessionManager,
};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::adapter_contract::{Recorded, recording_sink};
use serde_json::Value;

#[path = "cases_codex_acp.rs"]
mod cases_codex_acp;
#[path = "cases_gemini.rs"]
mod cases_gemini;

/// Bound of one case (the CLIs take a few seconds; a hang must not stall CI).
const CASE_TIMEOUT: Duration = Duration::from_secs(90);
/// Per-run limit given to the adapters (a backstop below the case bound).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long cancellation may take, from `cancel()` to `execute` returning.
const CANCEL_BOUND: Duration = Duration::from_secs(10);
/// The environment variable marking every CLI process a case starts.
const MARKER_VAR: &str = "ASM_INTEGRATION_MARKER";
const API_KEY: &str = "sk-ant-fake-key";

#[path = "cases_claude_control.rs"]
mod cases_claude_control;

type CaseResult = Result<String, String>;
type CaseFuture<'a> = Pin<Box<dyn Future<Output = CaseResult> + Send + 'a>>;

struct Args {
    claude: PathBuf,
    codex: PathBuf,
    asm: Option<PathBuf>,
    claude_acp: PathBuf,
    /// `--gemini`: Gemini CLI for the `acp/gemini-*` cases (they fail without it).
    gemini: Option<PathBuf>,
    /// `--codex-acp`: codex-acp for the `acp/codex-acp-*` cases (they fail without it).
    codex_acp: Option<PathBuf>,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut claude = None;
    let mut codex = None;
    let mut claude_acp = None;
    let mut only = None;
    let mut asm = None;
    let mut gemini = None;
    let mut codex_acp = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--claude" => claude = args.next().map(PathBuf::from),
            "--codex" => codex = args.next().map(PathBuf::from),
            "--asm" => asm = args.next().map(PathBuf::from),
            "--claude-acp" => claude_acp = args.next().map(PathBuf::from),
            "--only" => only = args.next(),
            "--gemini" => gemini = args.next().map(PathBuf::from),
            "--codex-acp" => codex_acp = args.next().map(PathBuf::from),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let claude = claude.ok_or("--claude <path> is required")?;
    let codex = codex.ok_or("--codex <path> is required")?;
    // The `asm` runs have their own working directory: make the path absolute.
    let asm = asm.map(|path| std::fs::canonicalize(&path).unwrap_or(path));
    let claude_acp = claude_acp.ok_or("--claude-acp <path> is required")?;
    Ok(Args { claude, codex, asm, claude_acp, gemini, codex_acp, only })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "asm-real-cli: {e}\nusage: asm-real-cli --claude <path> --codex <path> --claude-acp <path> [--asm <path>] [--only <substring>]"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("asm-real-cli: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (passed, failed) = runtime.block_on(run_all(&args));
    println!("{passed} passed, {failed} failed");
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The env a setup made, or `None` with `FAIL name/setup: why` printed (the envs every case
/// needs: without one nothing runs).
fn setup_or_report<T>(name: &str, setup: Result<T, String>) -> Option<T> {
    setup.map_err(|e| println!("FAIL {name}/setup: {e}")).ok()
}

async fn run_all(args: &Args) -> (usize, usize) {
    let started = Instant::now();
    let Some(env) = setup_or_report("claude", ClaudeEnv::new(&args.claude).await) else { return (0, 1) };
    let Some(codex) = setup_or_report("codex", CodexEnv::new(&args.codex).await) else { return (0, 1) };
    let Some(acp) = setup_or_report("acp", ClaudeEnv::new(&args.claude_acp).await) else { return (0, 1) };
    let gemini = cases_gemini::GeminiEnv::new(args.gemini.as_deref()).await;
    let codex_acp = cases_codex_acp::env(args.codex_acp.as_deref()).await;
    let (env, codex, acp, asm) = (&env, &codex, &acp, args.asm.as_deref());
    let mut cases: Vec<(&str, CaseFuture<'_>)> = vec![
        ("claude/version", Box::pin(claude_version(env))),
        ("claude/text", Box::pin(claude_text(env))),
        ("claude/run-options", Box::pin(claude_run_options(env))),
        ("claude/policy-flags", Box::pin(claude_policy_flags(env))),
        ("claude/tool", Box::pin(claude_tool(env))),
        ("claude/resume", Box::pin(claude_resume(env))),
        ("claude/fork-native", Box::pin(claude_fork(env))),
        ("claude/fork-replay", Box::pin(claude_fork_replay(env))),
        ("claude/cancel-mid-stream", Box::pin(claude_cancel(env))),
        ("claude/approval-allow", Box::pin(cases_claude_control::claude_approval_allow(env))),
        ("claude/approval-deny", Box::pin(cases_claude_control::claude_approval_deny(env))),
        ("claude/approval-cancel", Box::pin(cases_claude_control::claude_approval_cancel(env))),
        ("claude/http429-retryable", Box::pin(claude_http_error(env, 429, ErrorCode::ProviderRateLimited, true))),
        ("claude/http401-auth", Box::pin(claude_http_error(env, 401, ErrorCode::ProviderAuthenticationFailed, false))),
        ("claude/http500-unavailable", Box::pin(claude_http_error(env, 500, ErrorCode::ProviderUnavailable, true))),
        ("codex/version", Box::pin(codex_version(codex))),
        ("codex/text", Box::pin(codex_text(codex))),
        ("codex/run-options", Box::pin(codex_run_options(codex))),
        ("codex/policy-read-only", Box::pin(codex_policy_read_only(codex))),
        ("codex/tool", Box::pin(codex_tool(codex))),
        ("codex/resume", Box::pin(codex_resume(codex))),
        ("codex/fork-native", Box::pin(codex_fork(codex))),
        ("codex/cancel-mid-stream", Box::pin(codex_cancel(codex))),
        ("codex/http429-retryable", Box::pin(codex_http_error(codex, 429, ErrorCode::ProviderRateLimited, true))),
        ("codex/http401-auth", Box::pin(codex_http_error(codex, 401, ErrorCode::ProviderAuthenticationFailed, false))),
        ("codex/http500-unavailable", Box::pin(codex_http_error(codex, 500, ErrorCode::ProviderUnavailable, true))),
        ("acp/claude-text", Box::pin(acp_text(acp))),
        ("acp/claude-tool", Box::pin(acp_tool(acp))),
        ("acp/claude-resume", Box::pin(acp_resume(acp))),
        ("acp/claude-cancel", Box::pin(acp_cancel(acp))),
        ("routing/failover-claude429-to-codex", Box::pin(routing_failover(env, codex))),
        ("cli/claude-run", Box::pin(cli_run(asm, CliProvider::Claude(env)))),
        ("cli/codex-run", Box::pin(cli_run(asm, CliProvider::Codex(codex)))),
        ("cli/claude-readable", Box::pin(cli_readable(asm, env))),
        ("no-leftover-processes", Box::pin(no_leftovers(env, codex))),
    ];
    cases.extend(cases_gemini::cases(&gemini));
    cases.extend(cases_codex_acp::cases(&codex_acp));
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        if args.only.as_deref().is_some_and(|only| !name.contains(only)) {
            continue;
        }
        let start = Instant::now();
        env.server.clear_requests();
        codex.server.clear_requests();
        acp.server.clear_requests();
        let result = match tokio::time::timeout(CASE_TIMEOUT, case).await {
            Ok(result) => result,
            Err(_) => Err(format!("did not finish within {CASE_TIMEOUT:?}")),
        };
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(detail) => {
                passed += 1;
                println!("PASS {name} ({secs:.1}s) {detail}");
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {name} ({secs:.1}s): {why}");
            }
        }
    }
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    (passed, failed)
}

/// `Err(message)` unless `cond`.
fn ensure(cond: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(message()) }
}

/// What every provider env has: the real CLI, its fake model server, an isolated HOME,
/// workspace and TMPDIR under one temporary root (removed with it), and the run id every marker
/// of its cases starts with.
struct CliSandbox {
    cli: PathBuf,
    server: FakeServer,
    root: tempfile::TempDir,
    home: PathBuf,
    workspace: PathBuf,
    /// TMPDIR of the CLI, so its scratch files go away with the root.
    tmp: PathBuf,
    run_id: String,
}

impl CliSandbox {
    /// The sandbox for the CLI at `cli` (`what` names it in errors): a fresh root named
    /// `prefix…` with `home`, `workspace`, `tmp` and `extra_dirs` (relative to the root) in it,
    /// and the fake server for `api`.
    async fn new(what: &str, cli: &Path, prefix: &str, api: Api, extra_dirs: &[&str]) -> Result<Self, String> {
        let cli = std::fs::canonicalize(cli).map_err(|e| format!("{what} {}: {e}", cli.display()))?;
        let root = tempfile::Builder::new().prefix(prefix).tempdir().map_err(|e| e.to_string())?;
        let home = root.path().join("home");
        let workspace = root.path().join("workspace");
        let tmp = root.path().join("tmp");
        let extra = extra_dirs.iter().map(|dir| root.path().join(dir));
        for dir in [home.clone(), workspace.clone(), tmp.clone()].into_iter().chain(extra) {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let server = FakeServer::start(api).await.map_err(|e| format!("fake server: {e}"))?;
        let run_id =
            format!("{}-{}", std::process::id(), root.path().file_name().and_then(|n| n.to_str()).unwrap_or("x"));
        Ok(Self { cli, server, root, home, workspace, tmp, run_id })
    }

    /// The marker value of the processes of `case`.
    fn marker(&self, case: &str) -> String {
        format!("{}:{case}", self.run_id)
    }
}

/// The `*-no-leftover-processes` cases: no process of any of `sandboxes` is alive any more
/// (`what` names their cases in the error).
fn no_processes_left(sandboxes: &[&CliSandbox], what: &str) -> CaseResult {
    let left: Vec<i32> = sandboxes.iter().flat_map(|sandbox| marked_processes(&sandbox.run_id, true)).collect();
    ensure(left.is_empty(), || format!("processes of {what} still alive: {left:?}"))?;
    Ok("none".to_owned())
}

/// The Claude side (also claude-agent-acp's): the fake Anthropic server, an isolated HOME and
/// workspace.
struct ClaudeEnv(CliSandbox);

/// The cases reach the sandbox's parts (`env.server`, `env.home`, …) through the env.
impl std::ops::Deref for ClaudeEnv {
    type Target = CliSandbox;

    fn deref(&self) -> &CliSandbox {
        &self.0
    }
}

impl ClaudeEnv {
    async fn new(cli: &Path) -> Result<Self, String> {
        CliSandbox::new("claude CLI", cli, "asm-real-cli-", Api::AnthropicMessages, &[]).await.map(Self)
    }

    /// The environment of the CLI for `case`: the isolated HOME, the fake server and the marker.
    fn cli_env(&self, case: &str) -> CliEnv {
        CliEnv::minimal()
            .set("HOME", self.home.display().to_string())
            .set("CLAUDE_CONFIG_DIR", self.home.join(".claude").display().to_string())
            .set("ANTHROPIC_BASE_URL", self.server.base_url())
            .set("ANTHROPIC_API_KEY", API_KEY)
            .set("NO_PROXY", "127.0.0.1,localhost")
            .set("TMPDIR", self.tmp.display().to_string())
            .set("CLAUDE_CODE_TMPDIR", self.tmp.display().to_string())
            .set(MARKER_VAR, self.marker(case))
    }

    /// An adapter for the real CLI pointed at the fake server; `case` names the marker.
    fn adapter(
        &self,
        case: &str,
        configure: impl FnOnce(ClaudeAdapterBuilder) -> ClaudeAdapterBuilder,
    ) -> ClaudeAdapter {
        let builder = ClaudeAdapter::builder()
            .cli_path(&self.cli)
            .cwd(&self.workspace)
            .env(self.cli_env(case))
            .max_retries(1)
            .timeout(RUN_TIMEOUT);
        configure(builder).build()
    }
}

fn request(prompt: &str) -> Result<ExecuteRequest, String> {
    let session = Session::new("asm-real-cli").map_err(|e| e.to_string())?;
    let run = Run::new(session.id.clone(), RunInput::user(prompt));
    Ok(ExecuteRequest::new(session, run))
}

/// Runs one request to the end, with the events it reported.
async fn execute(
    adapter: &dyn ProviderAdapter,
    request: ExecuteRequest,
) -> (asm_core::Result<ExecuteOutcome>, Recorded) {
    let (sink, recorded) = recording_sink(&request.session);
    let result = adapter.execute(request, sink).await;
    (result, recorded)
}

fn check_events(recorded: &Recorded) -> Result<(), String> {
    ensure(recorded.lifecycle_attempts().is_empty(), || {
        format!("adapter emitted lifecycle events {:?}", recorded.lifecycle_attempts())
    })
}

/// Runs one request that must succeed, with well-formed events: its outcome and the events.
async fn run_ok(adapter: &dyn ProviderAdapter, request: ExecuteRequest) -> Result<(ExecuteOutcome, Recorded), String> {
    let (result, recorded) = execute(adapter, request).await;
    let outcome = result.map_err(|e| format!("run failed: {e:?}"))?;
    check_events(&recorded)?;
    Ok((outcome, recorded))
}

/// [`run_ok`] of a request the fake answers with its plain [`TEXT_REPLY`].
async fn run_text(
    adapter: &dyn ProviderAdapter,
    request: ExecuteRequest,
) -> Result<(ExecuteOutcome, Recorded), String> {
    let (outcome, recorded) = run_ok(adapter, request).await?;
    ensure_output(&outcome, TEXT_REPLY)?;
    Ok((outcome, recorded))
}

/// `Ok` when the run's final output is `expected`.
fn ensure_output(outcome: &ExecuteOutcome, expected: &str) -> Result<(), String> {
    ensure(outcome.output.content == expected, || format!("output {:?} != {expected:?}", outcome.output.content))
}

/// The checks every text run through an ACP agent passes: it ends `end_turn` in an ACP session
/// (so the agent advertised `loadSession`), over protocol version 1, with a streamed and a
/// final message. Returns the session id.
fn check_acp_text(outcome: &ExecuteOutcome, recorded: &Recorded) -> Result<String, String> {
    ensure(outcome.stop_reason.as_deref() == Some("end_turn"), || format!("stop reason {:?}", outcome.stop_reason))?;
    let session = outcome.provider_session_id.clone().ok_or("no ACP session id (loadSession not advertised?)")?;
    let version = &outcome.metadata["acp"]["protocol_version"];
    ensure(version == 1, || format!("protocol version {version}"))?;
    let kinds = recorded.kinds();
    ensure(kinds.contains(&EventKind::MessageStreamed) && kinds.contains(&EventKind::MessageReceived), || {
        format!("no message events in {kinds:?}")
    })?;
    Ok(session)
}

/// The first event of `kind` the run emitted.
fn first_event(recorded: &Recorded, kind: EventKind) -> Result<ProviderEvent, String> {
    recorded.events().into_iter().find(|e| e.kind == kind).ok_or_else(|| format!("no {kind} in {:?}", recorded.kinds()))
}

/// `Ok` when `event` is a call of the tool `name`.
fn ensure_tool_name(event: &ProviderEvent, name: &str) -> Result<(), String> {
    ensure(event.data.get(keys::TOOL_NAME) == Some(&Value::from(name)), || format!("{:?}", event.data))
}

/// `Ok` when `started` and `done` are the start and the completion of one tool call.
fn ensure_same_call(started: &ProviderEvent, done: &ProviderEvent) -> Result<(), String> {
    ensure(done.data.get(keys::TOOL_CALL_ID) == started.data.get(keys::TOOL_CALL_ID), || {
        "tool_call_id differs between start and completion".to_owned()
    })
}

/// The `command` of the tool input `event` carries.
fn tool_command(event: &ProviderEvent) -> Option<&str> {
    event.data.get(keys::TOOL_INPUT).and_then(|i| i.get("command")).and_then(Value::as_str)
}

/// The output of the completed tool call `done` (as JSON text), which must contain `text`.
fn tool_output_containing(done: &ProviderEvent, text: &str) -> Result<String, String> {
    let output = done.data.get(keys::TOOL_OUTPUT).map(Value::to_string).unwrap_or_default();
    ensure(output.contains(text), || format!("tool output {output}"))?;
    Ok(output)
}

/// `Ok` when the fake server answered the model requests with `expected` replies, in order.
fn ensure_replies(server: &FakeServer, expected: &[&str]) -> Result<(), String> {
    let replies: Vec<String> = server.model_requests().into_iter().map(|r| r.reply).collect();
    ensure(replies == expected, || format!("server replies {replies:?}"))
}

/// The first half of every resume case: a run asking to remember "apricot"; returns the
/// provider session (`handle` names it: session or thread) the second run resumes.
async fn remember_apricot(adapter: &dyn ProviderAdapter, handle: &str) -> Result<String, String> {
    let (first, _) = execute(adapter, request("Remember the word apricot.")?).await;
    let first = first.map_err(|e| format!("first run failed: {e:?}"))?;
    first.provider_session_id.ok_or_else(|| format!("first run has no {handle} id"))
}

/// A run resuming `session` with `prompt`: it must succeed, with well-formed events, in that
/// same provider session (`handle` names it: session or thread).
async fn resume_run(
    adapter: &dyn ProviderAdapter,
    session: &str,
    prompt: &str,
    handle: &str,
) -> Result<(ExecuteOutcome, Recorded), String> {
    let (second, recorded) = execute(adapter, request(prompt)?.resume(session.to_owned())).await;
    let second = second.map_err(|e| format!("resumed run failed: {e:?}"))?;
    check_events(&recorded)?;
    ensure(second.provider_session_id.as_deref() == Some(session), || {
        format!("resumed {handle} {:?} != {session}", second.provider_session_id)
    })?;
    Ok((second, recorded))
}

/// `Ok` when the conversation a resumed run sent (`history`) carries the first run's exchange.
fn ensure_first_exchange(history: &str) -> Result<(), String> {
    ensure(history.contains("apricot") && history.contains(TEXT_REPLY), || {
        "the resumed request does not carry the first exchange".to_owned()
    })
}

/// The resume case of the adapters that resume as they should: [`remember_apricot`], then
/// [`resume_run`] answered with [`TEXT_REPLY`] and whose model request (its `history_field`)
/// carries the first exchange. Returns the session, the resumed run's outcome and events.
async fn remember_then_resume(
    adapter: &dyn ProviderAdapter,
    server: &FakeServer,
    history_field: &str,
    prompt: &str,
    handle: &str,
) -> Result<(String, ExecuteOutcome, Recorded), String> {
    let session = remember_apricot(adapter, handle).await?;
    let (second, recorded) = resume_run(adapter, &session, prompt, handle).await?;
    ensure_output(&second, TEXT_REPLY)?;
    ensure_first_exchange(&last_history(server, history_field)?)?;
    Ok((session, second, recorded))
}

/// The HTTP error cases of a CLI adapter made for `case` in `sandbox`: a run of
/// [`Scenario::HttpError`] `status`, which must fail with `code`, `retryable` and a provider
/// error attached, leaving no process. Returns the provider error's kind and how many model
/// requests reached the fake (the CLI's own retries included).
async fn http_error_case(
    adapter: &dyn ProviderAdapter,
    sandbox: &CliSandbox,
    case: &str,
    status: u16,
    code: ErrorCode,
    retryable: bool,
) -> Result<(asm_core::ProviderErrorKind, usize), String> {
    let prompt = format!("Fail please. {}", Scenario::HttpError(status).marker());
    let (result, recorded) = execute(adapter, request(&prompt)?).await;
    check_events(&recorded)?;
    let err = match result {
        Ok(outcome) => return Err(format!("run succeeded: {:?}", outcome.output.content)),
        Err(err) => err,
    };
    ensure(err.code() == code, || format!("expected {code}, got {err:?}"))?;
    ensure(err.is_retryable() == retryable, || format!("retryable should be {retryable}: {err:?}"))?;
    let pe = err.provider_error().ok_or("no provider error attached")?;
    let requests = sandbox.server.model_requests().len();
    assert_no_processes(&sandbox.marker(case)).await?;
    Ok((pe.kind, requests))
}

/// What `cli --version` prints (trimmed), run with `env` and no stdin.
async fn cli_version(cli: &Path, env: &CliEnv) -> Result<String, String> {
    let out = tokio::process::Command::new(cli)
        .arg("--version")
        .env_clear()
        .envs(env.resolve())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Process ids whose environment holds `MARKER_VAR=<marker>` (`prefix`: starts with it).
fn marked_processes(marker: &str, prefix: bool) -> Vec<i32> {
    let wanted = format!("{MARKER_VAR}={marker}");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0).any(|var| {
                    let var = String::from_utf8_lossy(var);
                    if prefix { var.starts_with(&wanted) } else { var == wanted }
                })
            })
        })
        .collect()
}

/// Waits (up to 5 s) until no process carries `marker`.
async fn assert_no_processes(marker: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let left = marked_processes(marker, false);
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(format!("processes left behind: {left:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A run going on in the background: its task, the token that cancels it and its events so far.
struct BackgroundRun {
    task: tokio::task::JoinHandle<asm_core::Result<ExecuteOutcome>>,
    cancel: asm_ports::CancellationToken,
    recorded: Recorded,
    /// Kept until the case ends, as a caller keeps its adapter: dropping it must not be what
    /// cleans up after the run.
    _adapter: Arc<dyn ProviderAdapter>,
}

impl BackgroundRun {
    /// Starts `request` on `adapter` in a task of its own.
    fn start(adapter: Arc<dyn ProviderAdapter>, request: ExecuteRequest) -> Self {
        let cancel = request.cancel.clone();
        let (sink, recorded) = recording_sink(&request.session);
        let task = tokio::spawn({
            let adapter = Arc::clone(&adapter);
            async move { adapter.execute(request, sink).await }
        });
        Self { task, cancel, recorded, _adapter: adapter }
    }

    /// Starts a run of [`Scenario::Slow`], a stream long enough to be cancelled midway.
    fn slow(adapter: Arc<dyn ProviderAdapter>) -> Result<Self, String> {
        Ok(Self::start(adapter, request(&format!("Stream slowly. {}", Scenario::Slow.marker()))?))
    }

    /// Waits (up to 40 s) until the run has streamed a delta; aborts it when it ends or the
    /// time is up first.
    async fn wait_for_delta(&self) -> Result<(), String> {
        let wait_start = Instant::now();
        while !self.recorded.kinds().contains(&EventKind::MessageStreamed) {
            if self.task.is_finished() || wait_start.elapsed() > Duration::from_secs(40) {
                self.task.abort();
                return Err(format!("no streamed delta before cancel; events {:?}", self.recorded.kinds()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// The cancel case of the adapters that stream deltas: a slow run is cancelled after its first
/// delta (see [`cancel_mid_stream`]).
async fn cancel_after_first_delta(adapter: Arc<dyn ProviderAdapter>, marker: &str, server: &FakeServer) -> CaseResult {
    let run = BackgroundRun::slow(adapter)?;
    run.wait_for_delta().await?;
    cancel_mid_stream(run, marker, server).await
}

/// The common end of a cancel case: the CLI runs (found by its marker), cancel returns
/// `Err(Cancelled)` within `CANCEL_BOUND`, nothing is emitted after it, no process is left, and
/// the fake server saw the client leave.
async fn cancel_mid_stream(run: BackgroundRun, marker: &str, server: &FakeServer) -> CaseResult {
    let BackgroundRun { task, cancel, recorded, _adapter } = run;
    let running = marked_processes(marker, false);
    if running.is_empty() {
        task.abort();
        return Err("the CLI process was not found by its marker".to_owned());
    }
    let before = recorded.events().len();
    let cancelled_at = Instant::now();
    cancel.cancel();
    let joined = tokio::time::timeout(CANCEL_BOUND, task).await.map_err(|_| "execute did not return after cancel")?;
    let result = joined.map_err(|e| format!("join: {e}"))?;
    let took = cancelled_at.elapsed();
    let err = match result {
        Ok(outcome) => return Err(format!("cancelled run succeeded: {:?}", outcome.output.content)),
        Err(err) => err,
    };
    ensure(err.code() == ErrorCode::Cancelled, || format!("error {err:?}"))?;
    let after = recorded.events().len();
    ensure(after == before, || format!("{} events emitted after cancel", after - before))?;
    assert_no_processes(marker).await?;
    ensure(server.wait_until(Duration::from_secs(5), |s| s.aborted_streams() >= 1).await, || {
        "the server did not see the client leave".to_owned()
    })?;
    check_events(&recorded)?;
    Ok(format!("cancelled after {before} events in {} ms, {} process(es) gone", took.as_millis(), running.len()))
}

async fn claude_version(env: &ClaudeEnv) -> CaseResult {
    let text = cli_version(&env.cli, &CliEnv::minimal().set("HOME", env.home.display().to_string())).await?;
    ensure(text.starts_with("2.1.197"), || format!("unexpected version {text:?}"))?;
    Ok(text)
}

/// The text case of a CLI adapter (`claude`, `codex`) made for `case` in `sandbox`: a text run
/// in a provider session (`handle` names it: session or thread) with a message event, token
/// usage and exactly one model request, which must pass `check_request` (the API key it sent).
async fn cli_text_case(
    adapter: &dyn ProviderAdapter,
    sandbox: &CliSandbox,
    case: &str,
    handle: &str,
    check_request: impl FnOnce(&RecordedRequest) -> Result<(), String>,
) -> CaseResult {
    let (outcome, recorded) = run_text(adapter, request("Say hello.")?).await?;
    let session = outcome.provider_session_id.clone().ok_or_else(|| format!("no {handle} id"))?;
    let kinds = recorded.kinds();
    ensure(kinds.iter().any(|k| matches!(k, EventKind::MessageStreamed | EventKind::MessageReceived)), || {
        format!("no message event in {kinds:?}")
    })?;
    ensure(outcome.token_usage.input_tokens > 0, || format!("no usage: {:?}", outcome.token_usage))?;
    check_request(&the_model_request(&sandbox.server)?)?;
    assert_no_processes(&sandbox.marker(case)).await?;
    Ok(format!("{handle} {session}, {} events", kinds.len()))
}

async fn claude_text(env: &ClaudeEnv) -> CaseResult {
    let adapter = env.adapter("text", |b| b);
    cli_text_case(&adapter, env, "text", "session", |sent| {
        ensure(sent.header("x-api-key") == Some(API_KEY), || "x-api-key not sent".to_owned())
    })
    .await
}

/// A request carrying per-run options (what `RunOptions::adapter_option` sets).
fn request_with_options(prompt: &str, options: Value) -> Result<ExecuteRequest, String> {
    let Value::Object(options) = options else { return Err("options must be an object".to_owned()) };
    Ok(request(prompt)?.options(options))
}

/// The only model request of a run.
fn the_model_request(server: &FakeServer) -> Result<RecordedRequest, String> {
    let mut reqs = server.model_requests();
    ensure(reqs.len() == 1, || format!("{} model requests", reqs.len()))?;
    Ok(reqs.remove(0))
}

/// The body of the only model request of a run.
fn only_model_request(server: &FakeServer) -> Result<Value, String> {
    the_model_request(server)?.body.ok_or_else(|| "no request body recorded".to_owned())
}

/// The system prompt the run-options cases set per run.
const RUN_OPTIONS_SYSTEM: &str = "You are ASM-RUN-OPTIONS.";

/// The run-options cases: a text run with per-run `options` (`model` and [`RUN_OPTIONS_SYSTEM`]
/// among them) whose only model request names `model` and carries the system prompt in its
/// `system_field`. Returns the run's outcome.
async fn run_with_options(
    adapter: &dyn ProviderAdapter,
    server: &FakeServer,
    options: Value,
    model: &str,
    system_field: &str,
) -> Result<ExecuteOutcome, String> {
    let (outcome, _) = run_text(adapter, request_with_options("Say hello.", options)?).await?;
    let body = only_model_request(server)?;
    ensure(body.get("model").and_then(Value::as_str) == Some(model), || format!("model {:?}", body.get("model")))?;
    let system = body.get(system_field).map(Value::to_string).unwrap_or_default();
    ensure(system.contains(RUN_OPTIONS_SYSTEM), || "the per-run system prompt is not in the request".to_owned())?;
    Ok(outcome)
}

/// The policy cases: a text run with the options `policy` compiles to for `target`.
async fn run_under_policy(
    adapter: &dyn ProviderAdapter,
    policy: &asm_policy::Policy,
    target: asm_policy::CliTarget,
) -> Result<(), String> {
    let compiled = asm_policy::compile(policy, target);
    run_text(adapter, request_with_options("Say hello.", compiled.options.into())?).await?;
    Ok(())
}

/// Per-run `model` and `system_prompt` override the adapter's and reach the model request.
async fn claude_run_options(env: &ClaudeEnv) -> CaseResult {
    let adapter = env.adapter("run-options", |b| b.model("claude-haiku-4-5"));
    let options =
        serde_json::json!({"model": "claude-sonnet-4-5", "system_prompt": RUN_OPTIONS_SYSTEM, "max_turns": 2});
    run_with_options(&adapter, &env.server, options, "claude-sonnet-4-5", "system").await?;
    assert_no_processes(&env.marker("run-options")).await?;
    Ok("model and system prompt from the run's options".to_owned())
}

/// A policy compiled by `asm-policy` for Claude: the denied tool is removed from the tools the
/// real CLI offers the model (`--disallowedTools`), and `--max-turns` is accepted.
async fn claude_policy_flags(env: &ClaudeEnv) -> CaseResult {
    let policy = asm_policy::Policy::builder("integration")
        .deny(["Bash"])
        .limit(asm_policy::Limit::MaxToolCalls(3))
        .build()
        .map_err(|e| e.to_string())?;
    let adapter = env.adapter("policy-flags", |b| b);
    run_under_policy(&adapter, &policy, asm_policy::CliTarget::Claude).await?;
    let body = only_model_request(&env.server)?;
    let tools: Vec<String> = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned)).collect())
        .unwrap_or_default();
    ensure(!tools.is_empty(), || "the model request lists no tools".to_owned())?;
    ensure(!tools.iter().any(|t| t == "Bash"), || format!("Bash is still offered: {tools:?}"))?;
    assert_no_processes(&env.marker("policy-flags")).await?;
    Ok(format!("{} tools offered, Bash not among them", tools.len()))
}

/// The prompt of the tool cases: [`Scenario::ToolUse`] asks for `echo hi`.
fn tool_prompt() -> String {
    format!("Run echo hi. {}", Scenario::ToolUse.marker())
}

/// What [`tool_round_trip`] saw: the completion of the tool call, its output (as JSON text)
/// and how many events the run emitted.
struct ToolRoundTrip {
    done: ProviderEvent,
    output: String,
    events: usize,
}

/// The tool cases: a run of [`Scenario::ToolUse`] whose tool call starts (the start must pass
/// `check_start`), completes as the same call with "hi" in its output, and whose turn ends with
/// the fake's follow-up text.
async fn tool_round_trip(
    adapter: &dyn ProviderAdapter,
    check_start: impl FnOnce(&ProviderEvent) -> Result<(), String>,
) -> Result<ToolRoundTrip, String> {
    let (outcome, recorded) = run_ok(adapter, request(&tool_prompt())?).await?;
    let started = first_event(&recorded, EventKind::ToolCallStarted)?;
    check_start(&started)?;
    let done = first_event(&recorded, EventKind::ToolCallCompleted)?;
    ensure_same_call(&started, &done)?;
    let output = tool_output_containing(&done, "hi")?;
    ensure_output(&outcome, &tool_followup_text("hi"))?;
    Ok(ToolRoundTrip { done, output, events: recorded.events().len() })
}

/// The tool case of a CLI adapter made for `case` in `sandbox`: [`tool_round_trip`] (the start
/// passing `check_start`), the fake answering "tool" then "tool_followup".
async fn cli_tool_case(
    adapter: &dyn ProviderAdapter,
    sandbox: &CliSandbox,
    case: &str,
    check_start: impl FnOnce(&ProviderEvent) -> Result<(), String>,
) -> CaseResult {
    let tool = tool_round_trip(adapter, check_start).await?;
    ensure_replies(&sandbox.server, &["tool", "tool_followup"])?;
    assert_no_processes(&sandbox.marker(case)).await?;
    Ok(format!("tool output {}, {} events", tool.output, tool.events))
}

async fn claude_tool(env: &ClaudeEnv) -> CaseResult {
    let adapter = env.adapter("tool", |b| b.allowed_tools(["Bash"]));
    cli_tool_case(&adapter, env, "tool", |started| {
        ensure_tool_name(started, "Bash")?;
        ensure(tool_command(started) == Some("echo hi"), || {
            format!("tool input {:?}", started.data.get(keys::TOOL_INPUT))
        })
    })
    .await
}

/// The resume case of a CLI adapter made for `case` in `sandbox`: [`remember_then_resume`],
/// the conversation in the model request's `history_field`, `handle` naming the session.
async fn cli_resume_case(
    adapter: &dyn ProviderAdapter,
    sandbox: &CliSandbox,
    case: &str,
    history_field: &str,
    handle: &str,
) -> CaseResult {
    let prompt = "Which word did I ask you to remember?";
    let (session, ..) = remember_then_resume(adapter, &sandbox.server, history_field, prompt, handle).await?;
    assert_no_processes(&sandbox.marker(case)).await?;
    Ok(format!("{handle} {session} resumed with history"))
}

async fn claude_resume(env: &ClaudeEnv) -> CaseResult {
    cli_resume_case(&env.adapter("resume", |b| b), env, "resume", "messages", "session").await
}

// ----- ACP: the ACP adapter driving the real claude-agent-acp ---------------------------------

impl ClaudeEnv {
    /// The ACP adapter for `claude-agent-acp` (this env's `cli`) pointed at the fake server.
    fn acp_adapter(&self, case: &str) -> AcpAdapter {
        AcpAdapter::builder()
            .agent(&self.cli)
            .cwd(&self.workspace)
            .env(self.cli_env(case))
            .permissions(ToolKindPermissions::allow(["execute"]))
            .timeout(RUN_TIMEOUT)
            .build()
    }
}

async fn acp_text(env: &ClaudeEnv) -> CaseResult {
    let adapter = env.acp_adapter("acp-text");
    let (outcome, recorded) = run_text(&adapter, request("Say hello.")?).await?;
    let session = check_acp_text(&outcome, &recorded)?;
    ensure(env.server.model_requests().len() == 1, || format!("{} model requests", env.server.model_requests().len()))?;
    assert_no_processes(&env.marker("acp-text")).await?;
    Ok(format!("ACP session {session}, agent {}", outcome.metadata["acp"]["agent_info"]["version"]))
}

async fn acp_tool(env: &ClaudeEnv) -> CaseResult {
    let adapter = env.acp_adapter("acp-tool");
    let tool = tool_round_trip(&adapter, |started| ensure_tool_name(started, "execute")).await?;
    let done = &tool.done;
    ensure(tool_command(done) == Some("echo hi"), || format!("tool input {:?}", done.data.get(keys::TOOL_INPUT)))?;
    assert_no_processes(&env.marker("acp-tool")).await?;
    Ok(format!("tool output {}, {} events", tool.output, tool.events))
}

/// `Ok` when the resumed run loaded its ACP session (`session/load`).
fn ensure_session_loaded(outcome: &ExecuteOutcome) -> Result<(), String> {
    ensure(outcome.metadata["acp"]["session_loaded"] == true, || "session/load was not used".to_owned())
}

async fn acp_resume(env: &ClaudeEnv) -> CaseResult {
    let adapter = env.acp_adapter("acp-resume");
    let (session, second, recorded) =
        remember_then_resume(&adapter, &env.server, "messages", "Which word?", "session").await?;
    ensure_session_loaded(&second)?;
    let streamed = recorded.events().iter().filter(|e| e.kind == EventKind::MessageStreamed).count();
    assert_no_processes(&env.marker("acp-resume")).await?;
    Ok(format!("ACP session {session} loaded, {streamed} new deltas"))
}

async fn acp_cancel(env: &ClaudeEnv) -> CaseResult {
    cancel_after_first_delta(Arc::new(env.acp_adapter("acp-cancel")), &env.marker("acp-cancel"), &env.server).await
}

// ----- fork: SessionManager over the in-memory store and the real CLI ------------------------

/// One run with `Continuation::Auto`.
async fn say(manager: &SessionManager, session: &SessionId, prompt: &str) -> Result<RunResult, String> {
    let run = manager
        .start_run(session, RunInput::user(prompt), RunOptions::default())
        .await
        .map_err(|e| format!("start_run: {e:?}"))?;
    manager
        .execute_run(&run.id, RunOptions::default().continuation(Continuation::Auto))
        .await
        .map_err(|e| format!("run {prompt:?} failed: {e:?}"))
}

async fn active_session(manager: &SessionManager) -> Result<SessionId, String> {
    let session = manager.start_session(NewSession::new("asm-real-cli")).await.map_err(|e| e.to_string())?;
    manager.activate_session(&session.id).await.map_err(|e| e.to_string())?;
    Ok(session.id)
}

fn provider_session(result: &RunResult) -> Result<String, String> {
    result
        .run
        .metadata
        .get(keys::PROVIDER_SESSION_ID)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("run {} recorded no provider session id", result.run.id))
}

fn continuation_of(result: &RunResult) -> String {
    result
        .events
        .iter()
        .find(|e| e.kind == EventKind::RunStarted)
        .and_then(|e| e.data_str("continuation"))
        .unwrap_or("?")
        .to_owned()
}

/// The conversation the CLI sent in its last model request (`messages` or `input`).
fn last_history(server: &FakeServer, field: &str) -> Result<String, String> {
    let reqs = server.model_requests();
    let body = reqs.last().and_then(|r| r.body.as_ref()).ok_or("no model request recorded")?;
    Ok(body.get(field).map(Value::to_string).unwrap_or_default())
}

/// `Ok` when `text` holds every word of `present` and none of `absent`.
fn holds(what: &str, text: &str, present: &[&str], absent: &[&str]) -> Result<(), String> {
    for word in present {
        ensure(text.contains(word), || format!("{what} lacks {word:?}"))?;
    }
    for word in absent {
        ensure(!text.contains(word), || format!("{what} contains {word:?}, which belongs to the other branch"))?;
    }
    Ok(())
}

/// The user turns of a session's transcript, built from its stored events.
async fn user_turns(manager: &SessionManager, id: &SessionId) -> Result<Vec<String>, String> {
    let events = manager.session_events(id, EventQuery::new()).await.map_err(|e| e.to_string())?;
    let transcript = TranscriptBuilder::new(asm_core::TranscriptOptions::default()).from_events(id, &events);
    Ok(transcript.messages.into_iter().filter(|m| m.role == Role::User).filter_map(|m| m.content).collect())
}

/// A file named `name` somewhere under `root`.
fn find_file(root: &std::path::Path, name: &str) -> Option<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(name)) {
                return Some(path);
            }
        }
    }
    None
}

/// The provider's own record of a conversation (Claude session file, Codex rollout).
fn provider_file(root: &std::path::Path, id: &str) -> Result<String, String> {
    let path = find_file(root, &format!("{id}.jsonl")).ok_or_else(|| format!("no file for session {id}"))?;
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Run, fork at the latest turn, continue the fork natively (a new provider session branched
/// from the parent's), then continue both branches; each must see only its own turns, in the
/// requests the CLI sent, in the provider's own session files and in the stored transcripts.
async fn fork_both_branches(
    manager: &SessionManager,
    server: &FakeServer,
    history_field: &str,
    provider_root: &std::path::Path,
) -> CaseResult {
    let parent = active_session(manager).await?;
    let first = say(manager, &parent, "Remember the word apricot.").await?;
    let parent_handle = provider_session(&first)?;
    let fork = manager.fork_session(&parent, ForkPoint::Latest).await.map_err(|e| format!("fork: {e:?}"))?;
    ensure(
        matches!(&fork.continuation, ForkContinuation::Native { provider_session_id, .. } if *provider_session_id == parent_handle),
        || format!("fork continuation {:?}", fork.continuation),
    )?;
    let fork_id = fork.session.id.clone();
    manager.activate_session(&fork_id).await.map_err(|e| e.to_string())?;

    let branched = say(manager, &fork_id, "Fork branch: remember banana.").await?;
    let fork_handle = provider_session(&branched)?;
    ensure(continuation_of(&branched) == "native_fork", || format!("fork run went {}", continuation_of(&branched)))?;
    ensure(fork_handle != parent_handle, || format!("the forked run kept the parent's session {parent_handle}"))?;
    holds("the forked run's request", &last_history(server, history_field)?, &["apricot", "banana"], &[])?;

    let parent_next = say(manager, &parent, "Parent branch: remember cherry.").await?;
    ensure(provider_session(&parent_next)? == parent_handle, || "the parent changed its provider session".to_owned())?;
    ensure(continuation_of(&parent_next) == "native", || format!("parent run went {}", continuation_of(&parent_next)))?;
    holds("the parent's request", &last_history(server, history_field)?, &["apricot", "cherry"], &["banana"])?;

    let fork_next = say(manager, &fork_id, "Which fruits do you know?").await?;
    ensure(provider_session(&fork_next)? == fork_handle, || "the fork did not resume its own session".to_owned())?;
    ensure(continuation_of(&fork_next) == "native", || {
        format!("second fork run went {}", continuation_of(&fork_next))
    })?;
    holds(
        "the fork's request",
        &last_history(server, history_field)?,
        &["apricot", "banana", "Which fruits"],
        &["cherry"],
    )?;

    holds(
        "the parent's provider file",
        &provider_file(provider_root, &parent_handle)?,
        &["apricot", "cherry"],
        &["banana"],
    )?;
    // Claude copies the parent's history into the fork's session file; Codex's fork rollout
    // names the parent's rollout (`forked_from_id`) up to an ordinal instead of copying it.
    let fork_file = provider_file(provider_root, &fork_handle)?;
    holds("the fork's provider file", &fork_file, &["banana"], &["cherry"])?;
    let history = if fork_file.contains("apricot") {
        "copied"
    } else if fork_file.contains(&format!("\"forked_from_id\":\"{parent_handle}\"")) {
        "referenced"
    } else {
        return Err("the fork's provider file neither holds nor references the parent's history".to_owned());
    };
    // A forked run's usage is its own, even where the provider counts per thread (Codex's
    // forked thread carries the parent's cumulative usage on).
    ensure(branched.run.token_usage == first.run.token_usage, || {
        format!("forked run usage {:?}, first run {:?}", branched.run.token_usage, first.run.token_usage)
    })?;
    let parent_turns = user_turns(manager, &parent).await?;
    let fork_turns = user_turns(manager, &fork_id).await?;
    ensure(parent_turns.len() == 2 && fork_turns.len() == 3, || {
        format!("transcripts {parent_turns:?} / {fork_turns:?}")
    })?;
    holds("the parent's transcript", &parent_turns.join("\n"), &["apricot", "cherry"], &["banana"])?;
    holds("the fork's transcript", &fork_turns.join("\n"), &["apricot", "banana", "Which fruits"], &["cherry"])?;
    Ok(format!(
        "parent {parent_handle}, fork {fork_handle} ({} events copied, provider history {history}); both branches continued natively",
        fork.events_copied
    ))
}

/// The native fork case of a CLI adapter made for `case` in `sandbox`: [`fork_both_branches`]
/// through a `SessionManager` over the in-memory store, the provider's own files under
/// `provider_root`; no process may be left either way.
async fn cli_fork_case(
    adapter: impl ProviderAdapter,
    sandbox: &CliSandbox,
    case: &str,
    history_field: &str,
    provider_root: &Path,
) -> CaseResult {
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let result = fork_both_branches(&manager, &sandbox.server, history_field, provider_root).await;
    assert_no_processes(&sandbox.marker(case)).await?;
    result
}

async fn claude_fork(env: &ClaudeEnv) -> CaseResult {
    cli_fork_case(env.adapter("fork", |b| b), env, "fork", "messages", &env.home.join(".claude")).await
}

/// Forking at an earlier turn continues by replaying the copied transcript to a new session.
async fn claude_fork_replay(env: &ClaudeEnv) -> CaseResult {
    let manager = SessionManager::new(InMemorySessionStore::new(), env.adapter("fork-replay", |b| b));
    let parent = active_session(&manager).await?;
    let first = say(&manager, &parent, "Remember the word apricot.").await?;
    say(&manager, &parent, "Parent branch: remember cherry.").await?;
    let fork = manager
        .fork_session(&parent, ForkPoint::after_run(first.run.id.clone()))
        .await
        .map_err(|e| format!("fork: {e:?}"))?;
    ensure(fork.continuation == ForkContinuation::Replay(ReplayReason::NotLatestTurn), || {
        format!("fork continuation {:?}", fork.continuation)
    })?;
    manager.activate_session(&fork.session.id).await.map_err(|e| e.to_string())?;
    let branched = say(&manager, &fork.session.id, "Fork branch: remember banana.").await?;
    ensure(continuation_of(&branched) == "replay", || format!("fork run went {}", continuation_of(&branched)))?;
    let handle = provider_session(&branched)?;
    ensure(handle != provider_session(&first)?, || "the replayed fork reused the parent's session".to_owned())?;
    holds(
        "the replayed request",
        &last_history(&env.server, "messages")?,
        &["user: Remember the word apricot.", "banana"],
        &["cherry"],
    )?;
    assert_no_processes(&env.marker("fork-replay")).await?;
    Ok(format!("fork {handle} replayed {} copied events", fork.events_copied))
}

async fn claude_cancel(env: &ClaudeEnv) -> CaseResult {
    let adapter = env.adapter("cancel", |b| b.partial_messages(true));
    cancel_after_first_delta(Arc::new(adapter), &env.marker("cancel"), &env.server).await
}

async fn claude_http_error(env: &ClaudeEnv, status: u16, code: ErrorCode, retryable: bool) -> CaseResult {
    let case = format!("http{status}");
    let (kind, requests) = http_error_case(&env.adapter(&case, |b| b), env, &case, status, code, retryable).await?;
    // CLAUDE_CODE_MAX_RETRIES=1: the first attempt and one retry.
    ensure(requests == 2, || format!("{requests} model requests, expected 2"))?;
    Ok(format!("{code} (retryable {retryable}), provider error kind {kind:?}"))
}

/// A real failover through the router and the runtime: the fake Anthropic server answers every
/// request with HTTP 429 (its default for this case, so the prompt itself has no marker and Codex
/// answers text), the real Claude CLI fails with `provider_rate_limited`, the router fails over to
/// the real Codex CLI, and the stored run records codex with `failover_from: claude`.
async fn routing_failover(env: &ClaudeEnv, codex: &CodexEnv) -> CaseResult {
    env.server.set_default_scenario(Scenario::HttpError(429));
    let result = routing_failover_case(env, codex).await;
    env.server.set_default_scenario(Scenario::Text);
    result
}

async fn routing_failover_case(env: &ClaudeEnv, codex: &CodexEnv) -> CaseResult {
    let case = "routing-failover";
    // No CLI-side retry: the first 429 ends Claude's attempt, and the router fails over.
    let router = ProviderRouter::builder()
        .adapter(env.adapter(case, |b| b.max_retries(0)))
        .adapter(codex.adapter(case, |b| b))
        .policy(RoutingPolicy::new().prefer(["claude", "codex"]))
        .build()
        .map_err(|e| format!("router: {e}"))?;
    let manager = SessionManager::new(InMemorySessionStore::new(), router);
    let session = active_session(&manager).await?;
    let run = manager
        .start_run(&session, RunInput::user("Say hello."), RunOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let result = manager
        .execute_run(&run.id, RunOptions::default().timeout(RUN_TIMEOUT))
        .await
        .map_err(|e| format!("routed run failed: {e:?}"))?;
    let stored = manager.get_run(&run.id).await.map_err(|e| e.to_string())?;
    ensure(stored.provider.as_deref() == Some("codex"), || format!("run provider {:?}", stored.provider))?;
    let routing = &stored.metadata["routing"];
    ensure(routing["failover_from"] == "claude", || format!("routing {routing}"))?;
    ensure(routing["failover_reason"] == "provider_rate_limited", || format!("routing {routing}"))?;
    ensure(result.output().content == TEXT_REPLY, || format!("output {:?}", result.output().content))?;
    ensure(!env.server.model_requests().is_empty(), || "claude never reached its server".to_owned())?;
    ensure(!codex.server.model_requests().is_empty(), || "codex never reached its server".to_owned())?;
    let events =
        manager.session_events(&session, EventQuery::new().run(run.id.clone())).await.map_err(|e| e.to_string())?;
    let from_codex: Vec<_> =
        events.iter().filter(|e| e.metadata.get("routed_provider") == Some(&Value::from("codex"))).collect();
    ensure(!from_codex.is_empty(), || "no event carries routed_provider codex".to_owned())?;
    ensure(from_codex.iter().all(|e| e.metadata.get("failover_from") == Some(&Value::from("claude"))), || {
        "a codex event lacks failover_from claude".to_owned()
    })?;
    assert_no_processes(&env.marker(case)).await?;
    assert_no_processes(&codex.marker(case)).await?;
    Ok(format!("served by codex after claude 429, {} codex events", from_codex.len()))
}

async fn no_leftovers(env: &ClaudeEnv, codex: &CodexEnv) -> CaseResult {
    no_processes_left(&[env, codex], "this run")
}

/// The Codex side (also codex-acp's): the fake OpenAI Responses server, `CODEX_HOME` with a
/// provider pointing at it, an isolated HOME and workspace.
struct CodexEnv {
    sandbox: CliSandbox,
    codex_home: PathBuf,
}

/// The cases reach the sandbox's parts (`env.server`, `env.home`, …) through the env.
impl std::ops::Deref for CodexEnv {
    type Target = CliSandbox;

    fn deref(&self) -> &CliSandbox {
        &self.sandbox
    }
}

/// The API key variable named by the fake provider's `env_key`.
const CODEX_KEY_VAR: &str = "FAKE_OPENAI_API_KEY";
const CODEX_KEY: &str = "sk-fake";

impl CodexEnv {
    async fn new(cli: &Path) -> Result<Self, String> {
        let sandbox =
            CliSandbox::new("codex CLI", cli, "asm-real-cli-codex-", Api::OpenAiResponses, &["codex-home"]).await?;
        let codex_home = sandbox.root.path().join("codex-home");
        // As in spec section 2: a custom Responses provider, no retries, a bundled model slug.
        let config = format!(
            "model = \"gpt-5.5\"\nmodel_provider = \"fake\"\n\n[model_providers.fake]\nname = \"Fake local provider\"\n\
             base_url = \"{}\"\nenv_key = \"{CODEX_KEY_VAR}\"\nwire_api = \"responses\"\nrequest_max_retries = 0\n\
             stream_max_retries = 0\nstream_idle_timeout_ms = 20000\n",
            sandbox.server.base_url()
        );
        std::fs::write(codex_home.join("config.toml"), config).map_err(|e| format!("config.toml: {e}"))?;
        Ok(Self { sandbox, codex_home })
    }

    /// The environment of the CLI for `case`: the isolated HOME and `CODEX_HOME`, the fake
    /// provider's key and the marker.
    fn cli_env(&self, case: &str) -> CliEnv {
        CliEnv::minimal()
            .set("HOME", self.home.display().to_string())
            .set("CODEX_HOME", self.codex_home.display().to_string())
            .set(CODEX_KEY_VAR, CODEX_KEY)
            .set("NO_PROXY", "127.0.0.1,localhost")
            .set("TMPDIR", self.tmp.display().to_string())
            .set(MARKER_VAR, self.marker(case))
    }

    fn adapter(&self, case: &str, configure: impl FnOnce(CodexAdapterBuilder) -> CodexAdapterBuilder) -> CodexAdapter {
        let builder = CodexAdapter::builder()
            .cli_path(&self.cli)
            .cwd(&self.workspace)
            .model("gpt-5.5")
            .sandbox(SandboxMode::WorkspaceWrite)
            .approval_policy(ApprovalPolicy::Never)
            .env(self.cli_env(case))
            .timeout(RUN_TIMEOUT);
        configure(builder).build()
    }
}

async fn codex_version(env: &CodexEnv) -> CaseResult {
    let text = cli_version(&env.cli, &env.cli_env("version")).await?;
    ensure(text.ends_with("0.169.0"), || format!("unexpected version {text:?}"))?;
    Ok(text)
}

async fn codex_text(env: &CodexEnv) -> CaseResult {
    let adapter = env.adapter("text", |b| b);
    let auth = format!("Bearer {CODEX_KEY}");
    cli_text_case(&adapter, env, "text", "thread", |sent| {
        ensure(sent.header("authorization") == Some(auth.as_str()), || "bearer key not sent".to_owned())
    })
    .await
}

/// Per-run `model` and `system_prompt` (Codex's developer instructions) reach the model
/// request.
async fn codex_run_options(env: &CodexEnv) -> CaseResult {
    let adapter = env.adapter("run-options", |b| b);
    let options = serde_json::json!({"model": "gpt-5.6-sol", "system_prompt": RUN_OPTIONS_SYSTEM});
    let outcome = run_with_options(&adapter, &env.server, options, "gpt-5.6-sol", "input").await?;
    ensure(outcome.model.as_deref() == Some("gpt-5.6-sol"), || format!("outcome model {:?}", outcome.model))?;
    assert_no_processes(&env.marker("run-options")).await?;
    Ok("model and developer instructions from the run's options".to_owned())
}

/// A policy that forbids `apply_patch`, compiled by `asm-policy` for Codex: the run executes in
/// the read-only sandbox (`-s read-only`), as the turn metadata Codex sends says.
async fn codex_policy_read_only(env: &CodexEnv) -> CaseResult {
    let policy = asm_policy::Policy::builder("integration").deny(["apply_patch"]).build().map_err(|e| e.to_string())?;
    let adapter = env.adapter("policy-read-only", |b| b);
    run_under_policy(&adapter, &policy, asm_policy::CliTarget::Codex).await?;
    let requests = env.server.model_requests();
    let metadata = requests
        .iter()
        .flat_map(|r| r.headers.iter())
        .find(|(name, _)| name == "x-codex-turn-metadata")
        .map(|(_, value)| value.clone())
        .ok_or("no x-codex-turn-metadata header")?;
    // The adapter is configured with workspace-write: the policy's option must override it.
    ensure(
        !metadata.contains("workspace-write") && (metadata.contains("read-only") || metadata.contains("read_only")),
        || format!("not the read-only sandbox: {metadata}"),
    )?;
    assert_no_processes(&env.marker("policy-read-only")).await?;
    Ok("read-only sandbox from the policy".to_owned())
}

async fn codex_tool(env: &CodexEnv) -> CaseResult {
    let adapter = env.adapter("tool", |b| b);
    cli_tool_case(&adapter, env, "tool", |started| {
        let input = started.data.get(keys::TOOL_INPUT).map(Value::to_string).unwrap_or_default();
        ensure(input.contains("echo hi"), || format!("tool input {input}"))
    })
    .await
}

async fn codex_resume(env: &CodexEnv) -> CaseResult {
    cli_resume_case(&env.adapter("resume", |b| b), env, "resume", "input", "thread").await
}

async fn codex_fork(env: &CodexEnv) -> CaseResult {
    cli_fork_case(env.adapter("fork", |b| b), env, "fork", "input", &env.codex_home.join("sessions")).await
}

async fn codex_cancel(env: &CodexEnv) -> CaseResult {
    let run = BackgroundRun::slow(Arc::new(env.adapter("cancel", |b| b)))?;
    // Codex prints no deltas: mid-stream means the server is streaming the slow answer.
    let streaming = env.server.wait_until(Duration::from_secs(40), |s| !s.model_requests().is_empty()).await;
    if !streaming || run.task.is_finished() {
        run.task.abort();
        return Err(format!("the slow stream did not start; events {:?}", run.recorded.kinds()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel_mid_stream(run, &env.marker("cancel"), &env.server).await
}

async fn codex_http_error(env: &CodexEnv, status: u16, code: ErrorCode, retryable: bool) -> CaseResult {
    let case = format!("http{status}");
    let (kind, requests) = http_error_case(&env.adapter(&case, |b| b), env, &case, status, code, retryable).await?;
    // request_max_retries = 0 in config.toml: exactly one attempt.
    ensure(requests >= 1, || "no model request reached the server".to_owned())?;
    Ok(format!("{code} (retryable {retryable}), provider error kind {kind:?}, {requests} request(s)"))
}

// ----- cli: the `asm` binary end to end over the real CLIs ------------------------------------

/// The provider a `cli/*` case runs `asm` with, and the fake server behind it.
#[derive(Clone, Copy)]
enum CliProvider<'a> {
    Claude(&'a ClaudeEnv),
    Codex(&'a CodexEnv),
}

impl<'a> CliProvider<'a> {
    fn name(self) -> &'static str {
        match self {
            Self::Claude(_) => "claude",
            Self::Codex(_) => "codex",
        }
    }

    /// The provider's sandbox: its CLI, fake server, workspace and markers.
    fn sandbox(self) -> &'a CliSandbox {
        match self {
            Self::Claude(env) => env,
            Self::Codex(env) => env,
        }
    }

    /// The field of a model request that carries the conversation.
    fn history_field(self) -> &'static str {
        match self {
            Self::Claude(_) => "messages",
            Self::Codex(_) => "input",
        }
    }

    /// `$ASM_HOME/config.toml`: `[providers.NAME]` with the real CLI, and in `env` what the
    /// adapter cases give the CLI (isolated HOME, the fake server, the marker of `case`).
    fn config(self, case: &str) -> String {
        let (cli, model, env) = match self {
            Self::Claude(env) => (&env.cli, None, env.cli_env(case)),
            Self::Codex(env) => (&env.cli, Some("gpt-5.5"), env.cli_env(case)),
        };
        // A JSON string is a TOML basic string.
        let quote = |s: &str| Value::from(s).to_string();
        let name = self.name();
        let mut config = format!(
            "[providers.{name}]\ncli = {}\ntimeout_secs = {}\n",
            quote(&cli.display().to_string()),
            RUN_TIMEOUT.as_secs()
        );
        if let Some(model) = model {
            config += &format!("model = {}\n", quote(model));
        }
        config += &format!("\n[providers.{name}.env]\n");
        for (var, value) in &env.vars {
            config += &format!("{var} = {}\n", quote(value));
        }
        config
    }
}

/// An `ASM_HOME` (with its `config.toml`) and a redb store in a temporary directory.
struct AsmHome {
    dir: tempfile::TempDir,
    store: String,
}

impl AsmHome {
    fn new(config: &str) -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix("asm-real-cli-asm-").tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("config.toml"), config).map_err(|e| format!("config.toml: {e}"))?;
        let store = format!("redb:{}", dir.path().join("sessions.redb").display());
        Ok(Self { dir, store })
    }

    /// Runs `asm --store redb:… ARGS` in `cwd` with a minimal environment (no terminal:
    /// stdin is null, stdout and stderr are pipes).
    async fn asm(&self, bin: &std::path::Path, cwd: &std::path::Path, args: &[&str]) -> Result<AsmOutput, String> {
        let out = tokio::process::Command::new(bin)
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("ASM_HOME", self.dir.path())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        Ok(AsmOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            command: format!("asm {}", args.first().copied().unwrap_or_default()),
        })
    }
}

/// What one `asm` invocation printed.
struct AsmOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    command: String,
}

impl AsmOutput {
    /// `Ok(self)` when it exited 0.
    fn success(self) -> Result<Self, String> {
        if self.code == Some(0) {
            return Ok(self);
        }
        let tail: String =
            self.stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
        Err(format!("`{}` exited {:?}: {tail}", self.command, self.code))
    }
}

/// `asm`'s `--json` output: every line one event object with the documented fields, the
/// sequences gap-free.
fn json_events(stdout: &str) -> Result<Vec<Value>, String> {
    let mut events = Vec::new();
    for (n, line) in stdout.lines().enumerate() {
        let event: Value =
            serde_json::from_str(line).map_err(|e| format!("stdout line {} is not JSON ({e}): {line:?}", n + 1))?;
        let object = event.as_object().ok_or_else(|| format!("stdout line {} is not an object", n + 1))?;
        for key in ["session_id", "run_id", "sequence", "kind", "data", "timestamp"] {
            ensure(object.contains_key(key), || format!("stdout line {} has no {key}: {line}", n + 1))?;
        }
        events.push(event);
    }
    ensure(!events.is_empty(), || "no events on stdout".to_owned())?;
    let sequences: Vec<u64> = events.iter().filter_map(|e| e["sequence"].as_u64()).collect();
    ensure(sequences.len() == events.len(), || "a sequence is not a number".to_owned())?;
    ensure(sequences.windows(2).all(|w| w[1] == w[0] + 1), || format!("sequences not gap-free: {sequences:?}"))?;
    Ok(events)
}

fn kind_of(event: &Value) -> &str {
    event["kind"].as_str().unwrap_or_default()
}

/// The run's events end completed and a message event carries the fake model's text.
fn check_run_events(events: &[Value], session: &str) -> Result<(), String> {
    ensure(events.iter().all(|e| e["session_id"] == session), || "events of another session on stdout".to_owned())?;
    let kinds: Vec<&str> = events.iter().map(kind_of).collect();
    ensure(kinds.contains(&"run_completed"), || format!("no run_completed in {kinds:?}"))?;
    ensure(
        events.iter().any(|e| kind_of(e).starts_with("message") && e["data"].to_string().contains(TEXT_REPLY)),
        || format!("no message event carries {TEXT_REPLY:?}; kinds {kinds:?}"),
    )
}

/// The run statuses `asm show SESSION --json` reports.
async fn shown_runs(
    home: &AsmHome,
    asm: &std::path::Path,
    cwd: &std::path::Path,
    session: &str,
) -> Result<Vec<String>, String> {
    let out = home.asm(asm, cwd, &["show", session, "--json"]).await?.success()?;
    let shown: Value = serde_json::from_str(out.stdout.trim()).map_err(|e| format!("asm show --json: {e}"))?;
    ensure(shown["session"]["id"] == session, || format!("asm show printed session {}", shown["session"]["id"]))?;
    let runs = shown["runs"].as_array().ok_or("asm show --json has no runs")?;
    Ok(runs.iter().map(|r| r["status"].as_str().unwrap_or("?").to_owned()).collect())
}

fn asm_path(asm: Option<&std::path::Path>) -> Result<&std::path::Path, String> {
    asm.ok_or_else(|| {
        "no --asm <path of the asm binary> given (`cargo xtask integration` builds and passes it)".to_owned()
    })
}

/// `asm run --json` over the real CLI, `asm show`, then `asm resume` continuing natively.
async fn cli_run(asm: Option<&std::path::Path>, provider: CliProvider<'_>) -> CaseResult {
    const CASE: &str = "cli-run";
    let asm = asm_path(asm)?;
    let home = AsmHome::new(&provider.config(CASE))?;
    let (name, cwd) = (provider.name(), &provider.sandbox().workspace);
    let cwd_arg = cwd.display().to_string();
    let run = home
        .asm(asm, cwd, &["run", "--provider", name, "--cwd", &cwd_arg, "--json", "Remember the word apricot."])
        .await?
        .success()?;
    let events = json_events(&run.stdout)?;
    ensure(events[0]["sequence"] == 1, || format!("the new session's events start at {}", events[0]["sequence"]))?;
    let session = events[0]["session_id"].as_str().ok_or("session_id is not a string")?.to_owned();
    check_run_events(&events, &session)?;
    let statuses = shown_runs(&home, asm, cwd, &session).await?;
    ensure(statuses == ["completed"], || format!("asm show: runs {statuses:?}"))?;

    let resume = home
        .asm(asm, cwd, &["resume", &session, "--provider", name, "--json", "Which word did I ask you to remember?"])
        .await?
        .success()?;
    let resumed = json_events(&resume.stdout)?;
    let last = events.last().and_then(|e| e["sequence"].as_u64()).unwrap_or_default();
    ensure(resumed[0]["sequence"] == last + 1, || {
        format!("resume printed from sequence {} after {last}", resumed[0]["sequence"])
    })?;
    check_run_events(&resumed, &session)?;
    let started = resumed.iter().find(|e| kind_of(e) == "run_started").ok_or("the resumed run has no run_started")?;
    ensure(started["data"]["continuation"] == "native", || {
        format!("the resumed run went {}", started["data"]["continuation"])
    })?;
    holds(
        "the resumed model request",
        &last_history(&provider.sandbox().server, provider.history_field())?,
        &["apricot", TEXT_REPLY, "Which word"],
        &[],
    )?;
    let statuses = shown_runs(&home, asm, cwd, &session).await?;
    ensure(statuses == ["completed", "completed"], || format!("asm show after resume: runs {statuses:?}"))?;
    assert_no_processes(&provider.sandbox().marker(CASE)).await?;
    Ok(format!("session {session}: {} + {} events, resumed natively", events.len(), resumed.len()))
}

/// `asm run` without `--json` and without a terminal: the assistant's text and the session id,
/// no ANSI escapes.
async fn cli_readable(asm: Option<&std::path::Path>, env: &ClaudeEnv) -> CaseResult {
    const CASE: &str = "cli-readable";
    let asm = asm_path(asm)?;
    let provider = CliProvider::Claude(env);
    let home = AsmHome::new(&provider.config(CASE))?;
    let cwd = &provider.sandbox().workspace;
    let run = home.asm(asm, cwd, &["run", "--provider", "claude", "Say hello."]).await?.success()?;
    ensure(run.stdout.contains(TEXT_REPLY), || format!("stdout lacks the reply: {:?}", run.stdout))?;
    ensure(!run.stdout.contains('\x1b') && !run.stderr.contains('\x1b'), || {
        format!("ANSI escapes without a terminal: {:?}", run.stdout)
    })?;
    let sessions = home.asm(asm, cwd, &["sessions", "--json"]).await?.success()?;
    let ids: Vec<String> = sessions
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    ensure(ids.len() == 1, || format!("asm sessions --json: {:?}", sessions.stdout))?;
    ensure(run.stdout.contains(&ids[0]), || format!("stdout lacks the session id {}: {:?}", ids[0], run.stdout))?;
    assert_no_processes(&provider.sandbox().marker(CASE)).await?;
    Ok(format!("{} stdout lines, session {}", run.stdout.lines().count(), ids[0]))
}
