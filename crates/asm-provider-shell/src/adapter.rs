//! [`ShellAdapter`]: the [`ProviderAdapter`] that runs a command per run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tracing::Instrument;

use asm_core::{
    Capability, CapabilityType, Error, ErrorCode, EventKind, JsonMap, ProviderErrorKind, ProviderName, Result,
    RunOutput, keys,
};
use asm_ports::{EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent};
use asm_provider_cli::{CliCommand, CliProcess, ExitInfo, Interrupt, RunControl, cancelled_error, provider_failure};

use crate::config::{ShellAdapterBuilder, ShellConfig, check_cwd};
use crate::input::{ShellForm, ShellInvocation};
use crate::output::OutputCapture;
use crate::policy::{check_command, check_command_line};

/// The adapter's name, on events and runs.
pub const SHELL_PROVIDER: &str = "shell";
/// The tool name of the command's tool call events (spec 9.5).
pub const TOOL_NAME: &str = "bash";
/// The exit code reported for a command stopped by its time limit (the `timeout(1)` convention).
pub const TIMEOUT_EXIT_CODE: i32 = 124;
/// The most stdout bytes read (and streamed as one `message_streamed`) at a time.
const CHUNK_BYTES: usize = 64 * 1024;

const CAPABILITIES: &[(&str, CapabilityType)] =
    &[("command_execution", CapabilityType::CodeExecution), ("streaming", CapabilityType::Sampling)];

/// Runs each run's input as a command: a shell string through `<shell> -c`, or a program with
/// its arguments (see [`ShellInvocation`] for the input formats), on the CLI process machinery
/// of `asm-provider-cli`: own process group, explicit environment, cancel and timeout stop the
/// whole group (SIGINT → SIGTERM → SIGKILL), nothing outlives the run, stderr kept in a
/// bounded ring.
///
/// Events of one run, after the runtime's `run_started`:
/// 1. `tool_call_started {tool_call_id: "tc_…", tool_name: "bash", tool_input: {command, args,
///    cwd, (shell)}}`;
/// 2. `message_streamed {content, delta}` per stdout chunk, as it arrives (capped at
///    [`ShellConfig::max_output_bytes`], then the truncation marker);
/// 3. exit code in [`ShellConfig::success_exit_codes`]: `tool_call_completed {…, tool_output:
///    {output, exit_code, duration_ms, (stderr), (truncated)}}` and `message_received
///    {content: output, role: "tool"}`; the run **completes** (stop reason `exit_code_<n>`);
/// 4. any other exit (or a signal, as `128 + n`): `tool_call_failed {…, is_error: true}` and
///    `error_occurred`, and the run **fails** with `provider_error` (`details.reason =
///    "command_failed"`, the exit code and stderr in `provider_error`);
/// 5. time limit ([`ShellConfig::timeout`], the per-run `timeout_ms`, or the run's deadline):
///    the group is stopped, `tool_call_failed {… exit_code: 124, timed_out: true}` and
///    `error_occurred`, and the run ends with [`ErrorCode::Timeout`] (a `run_timeout`);
/// 6. cancel: the group is stopped, nothing more is reported, `Err(Cancelled)`.
///
/// A bad input, option, cwd or a command refused by the allow / deny lists fails before any
/// event. Token usage is always zero.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
/// use asm_core::{Run, RunInput, Session};
/// use asm_ports::{EventSink, ExecuteRequest, ProviderAdapter};
/// use asm_provider_shell::ShellAdapter;
/// let adapter = ShellAdapter::new();
/// let session = Session::new("demo")?;
/// let run = Run::new(session.id.clone(), RunInput::user("echo hello"));
/// let sink = EventSink::new({
///     let id = session.id.clone();
///     move |e| { let event = asm_core::StoredEvent::new(asm_core::Event::new(e.kind, id.clone()), 1); Box::pin(async move { Ok(event) }) }
/// });
/// let outcome = adapter.execute(ExecuteRequest::new(session, run), sink).await?;
/// assert_eq!(outcome.output.content, "hello\n");
/// assert_eq!(outcome.stop_reason.as_deref(), Some("exit_code_0"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ShellAdapter {
    config: Arc<ShellConfig>,
}

impl Default for ShellAdapter {
    fn default() -> Self {
        Self::new()
    }
}

impl ShellAdapter {
    /// An adapter with the defaults of [`ShellConfig`]: `/bin/sh`, this process's cwd, the
    /// minimal environment, 30 s per command, success `[0]`, no allow / deny list, 1 MiB output.
    pub fn new() -> Self {
        Self::from_config(ShellConfig::default())
    }

    /// A builder starting from the defaults.
    pub fn builder() -> ShellAdapterBuilder {
        ShellAdapterBuilder::default()
    }

    pub(crate) fn from_config(config: ShellConfig) -> Self {
        Self { config: Arc::new(config) }
    }

    /// The configuration.
    pub fn config(&self) -> &ShellConfig {
        &self.config
    }
}

#[async_trait]
impl ProviderAdapter for ShellAdapter {
    fn name(&self) -> &str {
        SHELL_PROVIDER
    }

    fn capabilities(&self) -> Vec<Capability> {
        Capability::list(CAPABILITIES)
    }

    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let span = tracing::info_span!("shell_execute", run_id = %request.run.id, exit_code = tracing::field::Empty);
        execute(&self.config, request, sink).instrument(span).await
    }

    fn validate_config(&self) -> Result<()> {
        self.config.validate()
    }

    fn supports_native_resume(&self) -> bool {
        false
    }
}

/// One prepared run: the command and what the events say about it.
struct Prepared {
    command: CliCommand,
    tool_input: JsonMap,
    timeout: Option<Duration>,
}

fn prepare(config: &ShellConfig, invocation: &ShellInvocation) -> Result<Prepared> {
    match &invocation.form {
        ShellForm::Shell(line) => check_command_line(line, config)?,
        ShellForm::Argv { command, .. } => check_command(command, config)?,
    }
    let cwd: Option<PathBuf> = invocation.cwd.clone().or_else(|| config.cwd.clone());
    if let Some(cwd) = &cwd {
        check_cwd(cwd)?;
    }
    let mut env = config.env.clone();
    for (k, v) in &invocation.env {
        env = env.set(k, v);
    }
    let (program, args) = match &invocation.form {
        ShellForm::Shell(line) => (config.shell.clone(), vec!["-c".to_owned(), line.clone()]),
        ShellForm::Argv { command, args } => (PathBuf::from(command), args.clone()),
    };
    let mut command = CliCommand::new(ProviderName::Shell, program).args(&args).env(env).limits(config.limits);
    let shown_cwd = cwd.clone().or_else(|| std::env::current_dir().ok());
    if let Some(cwd) = cwd {
        command = command.cwd(cwd);
    }
    let mut tool_input = JsonMap::new();
    match &invocation.form {
        ShellForm::Shell(line) => {
            tool_input.insert("command".into(), line.clone().into());
            tool_input.insert("args".into(), Value::Array(Vec::new()));
            tool_input.insert("shell".into(), config.shell.display().to_string().into());
        }
        ShellForm::Argv { command, args } => {
            tool_input.insert("command".into(), command.clone().into());
            tool_input.insert("args".into(), json!(args));
        }
    }
    tool_input.insert("cwd".into(), shown_cwd.map(|c| c.display().to_string()).into());
    Ok(Prepared { command, tool_input, timeout: invocation.timeout.or(config.timeout) })
}

/// How reading the command ended early.
enum Stop {
    Interrupted(Interrupt),
    Failed(Error),
}

struct Running<'a> {
    config: &'a ShellConfig,
    sink: &'a EventSink,
    control: RunControl,
    process: CliProcess,
    tool_call_id: String,
    tool_input: JsonMap,
    started: Instant,
}

impl Running<'_> {
    /// Emits `event`, unless the run is interrupted first.
    async fn emit(&mut self, event: ProviderEvent) -> std::result::Result<(), Stop> {
        tokio::select! {
            biased;
            why = self.control.interrupted() => Err(Stop::Interrupted(why)),
            emitted = self.sink.emit(event) => emitted.map(drop).map_err(Stop::Failed),
        }
    }

    fn tool_event(&self, kind: EventKind, tool_output: Value) -> ProviderEvent {
        let mut event = ProviderEvent::new(kind)
            .data(keys::TOOL_CALL_ID, self.tool_call_id.clone())
            .data(keys::TOOL_NAME, TOOL_NAME)
            .data(keys::TOOL_INPUT, Value::Object(self.tool_input.clone()))
            .data(keys::TOOL_OUTPUT, tool_output);
        if kind == EventKind::ToolCallFailed {
            event = event.data(keys::IS_ERROR, true);
        }
        event
    }

    fn duration_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Streams stdout to EOF and waits for the exit.
    async fn read_all(&mut self, capture: &mut OutputCapture) -> std::result::Result<ExitInfo, Stop> {
        loop {
            let chunk = tokio::select! {
                biased;
                why = self.control.interrupted() => return Err(Stop::Interrupted(why)),
                chunk = self.process.next_chunk(CHUNK_BYTES) => chunk.map_err(Stop::Failed)?,
            };
            let Some(chunk) = chunk else { break };
            let text = capture.push(&chunk);
            if !text.is_empty() {
                self.emit(streamed(text)).await?;
            }
        }
        let exit = tokio::select! {
            biased;
            why = self.control.interrupted() => return Err(Stop::Interrupted(why)),
            exit = self.process.finish() => exit,
        };
        let tail = capture.finish();
        if !tail.is_empty() {
            self.emit(streamed(tail)).await?;
        }
        Ok(exit)
    }

    fn tool_output(&self, capture: &OutputCapture, exit_code: Option<i32>, stderr: &str) -> JsonMap {
        let mut output = JsonMap::new();
        output.insert("output".into(), capture.text().into());
        output.insert("exit_code".into(), exit_code.into());
        output.insert("duration_ms".into(), self.duration_ms().into());
        let (stderr, _) = bounded_stderr(stderr, self.config);
        if !stderr.is_empty() {
            output.insert("stderr".into(), stderr.into());
        }
        if capture.truncated() {
            output.insert("truncated".into(), true.into());
            output.insert("dropped_bytes".into(), capture.dropped_bytes().into());
        }
        output
    }
}

fn streamed(text: String) -> ProviderEvent {
    ProviderEvent::new(EventKind::MessageStreamed).data(keys::CONTENT, text.clone()).data(keys::DELTA, text)
}

fn error_event(error: &Error) -> ProviderEvent {
    ProviderEvent::new(EventKind::ErrorOccurred)
        .data(keys::ERROR_CODE, error.code().as_str())
        .data(keys::ERROR_MESSAGE, error.message())
}

fn bounded_stderr(stderr: &str, config: &ShellConfig) -> (String, bool) {
    let pe = asm_core::ProviderError::new(ProviderName::Shell, ProviderErrorKind::TransportExit, "")
        .with_stderr(stderr, config.stderr_limits);
    (pe.stderr.unwrap_or_default(), pe.truncated == Some(true))
}

async fn execute(config: &ShellConfig, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
    let invocation = ShellInvocation::from_request(&request)?;
    let prepared = prepare(config, &invocation)?;
    if request.cancel.is_cancelled() {
        return Err(cancelled_error());
    }
    let control = RunControl::from_request(&request, prepared.timeout);
    let timeout_ms = prepared.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let tool_call_id = format!("tc_{}", uuid::Uuid::now_v7().simple());
    let started = Instant::now();
    let process = match CliProcess::spawn(&prepared.command) {
        Ok(process) => process,
        Err(error) => {
            // Exec error (spec 9.5): the call is reported as failed, with no exit code.
            let shown = invocation.display();
            tracing::debug!(%error, command = %shown, "command could not be started");
            let tool_input = Value::Object(prepared.tool_input);
            for event in [
                ProviderEvent::new(EventKind::ToolCallStarted)
                    .data(keys::TOOL_CALL_ID, tool_call_id.clone())
                    .data(keys::TOOL_NAME, TOOL_NAME)
                    .data(keys::TOOL_INPUT, tool_input.clone()),
                ProviderEvent::new(EventKind::ToolCallFailed)
                    .data(keys::TOOL_CALL_ID, tool_call_id.clone())
                    .data(keys::TOOL_NAME, TOOL_NAME)
                    .data(keys::TOOL_INPUT, tool_input.clone())
                    .data(keys::TOOL_OUTPUT, json!({"output": "", "exit_code": null}))
                    .data(keys::IS_ERROR, true),
                error_event(&error),
            ] {
                sink.emit(event).await?;
            }
            return Err(error);
        }
    };
    tracing::debug!(pid = process.pid(), command = %invocation.display(), "command started");
    let mut running =
        Running { config, sink: &sink, control, process, tool_call_id, tool_input: prepared.tool_input, started };
    let mut capture = OutputCapture::new(config.max_output_bytes);
    let started_event = ProviderEvent::new(EventKind::ToolCallStarted)
        .data(keys::TOOL_CALL_ID, running.tool_call_id.clone())
        .data(keys::TOOL_NAME, TOOL_NAME)
        .data(keys::TOOL_INPUT, Value::Object(running.tool_input.clone()));
    let read = match running.emit(started_event).await {
        Ok(()) => running.read_all(&mut capture).await,
        Err(stop) => Err(stop),
    };
    let exit = match read {
        Ok(exit) => exit,
        Err(Stop::Failed(error)) => {
            running.process.stop().await;
            return Err(error);
        }
        Err(Stop::Interrupted(Interrupt::Deadline)) => {
            let exit = running.process.stop().await;
            let limit = match timeout_ms {
                Some(ms) => format!("{ms}ms"),
                None => "the run's deadline".to_owned(),
            };
            let message = format!("Command timed out after {limit}");
            let pe =
                exit.provider_error(ProviderName::Shell, ProviderErrorKind::Timeout, &message, config.stderr_limits);
            let mut error = provider_failure(ErrorCode::Timeout, pe)
                .with_detail("reason", "command_timeout")
                .with_detail("exit_code", TIMEOUT_EXIT_CODE);
            if let Some(ms) = timeout_ms {
                error = error.with_detail("timeout_ms", ms);
            }
            let mut output = running.tool_output(&capture, Some(TIMEOUT_EXIT_CODE), &exit.stderr);
            output.insert("timed_out".into(), true.into());
            // Best effort: the runtime may already be closing the run at its own deadline.
            let failed = running.tool_event(EventKind::ToolCallFailed, Value::Object(output));
            if running.sink.emit(failed).await.is_ok() {
                let _ = running.sink.emit(error_event(&error)).await;
            }
            return Err(error);
        }
        Err(Stop::Interrupted(_)) => {
            running.process.stop().await;
            return Err(cancelled_error());
        }
    };
    let exit_code = exit.exit_code();
    tracing::Span::current().record("exit_code", exit_code);
    let output = running.tool_output(&capture, exit_code, &exit.stderr);
    let duration_ms = running.duration_ms();
    match exit_code.filter(|code| config.is_success(*code)) {
        Some(code) => {
            running
                .emit(running.tool_event(EventKind::ToolCallCompleted, Value::Object(output)))
                .await
                .map_err(stop_error)?;
            let received = ProviderEvent::new(EventKind::MessageReceived)
                .data(keys::CONTENT, capture.text())
                .data(keys::ROLE, "tool");
            running.emit(received).await.map_err(stop_error)?;
            let mut extra = JsonMap::new();
            extra.insert("exit_code".into(), code.into());
            extra.insert("duration_ms".into(), duration_ms.into());
            extra.insert("timed_out".into(), false.into());
            extra.insert("stderr".into(), bounded_stderr(&exit.stderr, config).0.into());
            extra.insert("truncated".into(), capture.truncated().into());
            let mut outcome = ExecuteOutcome::default().stop_reason(format!("exit_code_{code}"));
            outcome.output = RunOutput { content: capture.text().to_owned(), extra };
            Ok(outcome)
        }
        None => {
            let message = match exit.signal() {
                Some(signal) => format!("Command was killed by signal {signal}"),
                None => format!(
                    "Command exited with code {}",
                    exit_code.map_or_else(|| "unknown".into(), |c| c.to_string())
                ),
            };
            let first_stderr = exit.stderr.lines().find(|l| !l.trim().is_empty()).map(str::trim);
            let full = match first_stderr {
                Some(line) => format!("{message}: {}", line.chars().take(200).collect::<String>()),
                None => message,
            };
            let pe =
                exit.provider_error(ProviderName::Shell, ProviderErrorKind::TransportExit, &full, config.stderr_limits);
            let mut error = provider_failure(ErrorCode::ProviderError, pe)
                .with_detail("reason", "command_failed")
                .with_detail("duration_ms", duration_ms)
                .with_detail("success_exit_codes", config.success_exit_codes.clone());
            if let Some(code) = exit_code {
                error = error.with_detail("exit_code", code);
            }
            running
                .emit(running.tool_event(EventKind::ToolCallFailed, Value::Object(output)))
                .await
                .map_err(stop_error)?;
            running.emit(error_event(&error)).await.map_err(stop_error)?;
            Err(error)
        }
    }
}

fn stop_error(stop: Stop) -> Error {
    match stop {
        Stop::Failed(error) => error,
        Stop::Interrupted(Interrupt::Deadline) => Error::new(ErrorCode::Timeout, "Command timed out"),
        Stop::Interrupted(_) => cancelled_error(),
    }
}
