//! [`run_jsonl`]: the whole spawn → frame → normalise → emit → reap loop of a JSONL CLI.

use std::time::Instant;

use asm_core::{Error, ErrorCode, ProviderErrorKind, StderrLimits};
use asm_ports::{CancellationToken, EventSink, ExecuteRequest, ProviderEvent};
use tracing::Instrument;

use crate::command::CliCommand;
use crate::normalize::error_event;
use crate::process::{CliProcess, ExitInfo, StdoutFrame, provider_failure};

/// When a run must stop: its cancellation token and optional deadline.
///
/// ```
/// use asm_ports::CancellationToken;
/// use asm_provider_cli::RunControl;
/// let control = RunControl::new(CancellationToken::new(), None);
/// assert!(control.deadline.is_none());
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RunControl {
    /// Fires on cancel.
    pub cancel: CancellationToken,
    /// Hard deadline.
    pub deadline: Option<Instant>,
}

impl RunControl {
    /// A control from its parts.
    pub fn new(cancel: CancellationToken, deadline: Option<Instant>) -> Self {
        Self { cancel, deadline }
    }

    /// The token of `request` and the earlier of its deadline and `now + adapter_timeout` (an
    /// adapter's own time limit).
    pub fn from_request(request: &ExecuteRequest, adapter_timeout: Option<std::time::Duration>) -> Self {
        let own = adapter_timeout.map(|timeout| Instant::now() + timeout);
        let deadline = match (request.deadline, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Self::new(request.cancel.clone(), deadline)
    }
}

/// The error returned when a run is cancelled ([`ErrorCode::Cancelled`]).
pub fn cancelled_error() -> Error {
    Error::new(ErrorCode::Cancelled, "Run was cancelled")
}

/// What stopped a run early ([`RunControl::interrupted`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interrupt {
    /// The cancellation token fired.
    Cancelled,
    /// The deadline passed.
    Deadline,
}

impl RunControl {
    /// Resolves when the run must stop: its token fires ([`Interrupt::Cancelled`], checked
    /// first) or its deadline passes ([`Interrupt::Deadline`]); pending forever without either.
    /// Race it against the process's reads (`tokio::select!`), as [`run_jsonl`] does.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::{Duration, Instant};
    /// use asm_ports::CancellationToken;
    /// use asm_provider_cli::{Interrupt, RunControl};
    /// let control = RunControl::new(CancellationToken::new(), Some(Instant::now() + Duration::from_millis(1)));
    /// assert_eq!(control.interrupted().await, Interrupt::Deadline);
    /// let token = CancellationToken::new();
    /// token.cancel();
    /// assert_eq!(RunControl::new(token, None).interrupted().await, Interrupt::Cancelled);
    /// # }
    /// ```
    pub async fn interrupted(&self) -> Interrupt {
        let deadline = async {
            match self.deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Interrupt::Cancelled,
            () = deadline => Interrupt::Deadline,
        }
    }
}

async fn interrupted(control: &RunControl) -> Interrupt {
    control.interrupted().await
}

async fn interrupt_error(process: &mut CliProcess, why: Interrupt, provider: asm_core::ProviderName) -> Error {
    let exit = process.stop().await;
    match why {
        Interrupt::Cancelled => cancelled_error(),
        Interrupt::Deadline => {
            let pe = exit.provider_error(
                provider,
                ProviderErrorKind::Timeout,
                "provider CLI did not finish before the run deadline",
                StderrLimits::default(),
            );
            provider_failure(ErrorCode::Timeout, pe)
        }
    }
}

/// Runs a JSONL-printing CLI to the end.
///
/// Spawns `cmd` ([`CliProcess::spawn`]), hands every non-blank stdout line to `on_line`, which
/// appends the normalized events for it to the given buffer, emits those events through `sink`
/// in order, and at EOF waits for the exit and returns it. The caller then classifies the run
/// (result line seen? exit code?) and settles that verdict with [`ExitInfo::settle`]. The child
/// is always reaped before this returns.
///
/// A stdout line over [`CliLimits::max_line_bytes`](crate::CliLimits::max_line_bytes) is
/// skipped, not fatal: an `error_occurred` (`provider_error`, `details.reason =
/// "line_too_long"`) is emitted for it, reading goes on (the rest of the output may carry the
/// provider's own error), and the returned exit counts it in
/// [`ExitInfo::oversized_lines`], so that [`ExitInfo::settle`] fails the run with the framing
/// error unless the provider reported a specific failure.
///
/// Stops the process group (SIGINT → SIGTERM → SIGKILL) and returns early with:
/// * [`ErrorCode::Cancelled`] when `control.cancel` fires (nothing more is emitted);
/// * [`ErrorCode::Timeout`] with [`ProviderErrorKind::Timeout`] at `control.deadline`;
/// * the error of `on_line` or of `sink.emit`.
///
/// # Errors
/// As listed, plus the spawn errors of [`CliProcess::spawn`].
///
/// ```no_run
/// # async fn demo(sink: asm_ports::EventSink) -> asm_core::Result<()> {
/// use asm_core::{EventKind, ProviderName};
/// use asm_ports::ProviderEvent;
/// use asm_provider_cli::{CliCommand, RunControl, run_jsonl};
/// let cmd = CliCommand::new(ProviderName::Claude, "/bin/echo").arg("hi");
/// let exit = run_jsonl(&cmd, &RunControl::default(), &sink, |line, out| {
///     out.push(ProviderEvent::new(EventKind::MessageStreamed).data("content", line).data("delta", line));
///     Ok(())
/// })
/// .await?;
/// assert!(exit.success());
/// # Ok(()) }
/// ```
pub async fn run_jsonl<F>(
    cmd: &CliCommand,
    control: &RunControl,
    sink: &EventSink,
    on_line: F,
) -> asm_core::Result<ExitInfo>
where
    F: FnMut(&str, &mut Vec<ProviderEvent>) -> asm_core::Result<()> + Send,
{
    let span = tracing::info_span!("provider_cli", provider = %cmd.provider, program = %cmd.program.display());
    run_jsonl_inner(cmd, control, sink, None, on_line).instrument(span).await
}

/// Runs a JSONL-printing CLI to the end while holding a [`StdinDialog`] with it over stdin.
///
/// As [`run_jsonl`], except: stdin is a pipe (the command is given
/// [`stdin_pipe`](CliCommand::stdin_pipe)); the dialog's [`opening`](StdinDialog::opening)
/// lines are written first; every non-blank stdout line goes to
/// [`StdinDialog::on_line`] before `on_line` (a consumed line is not normalized, the dialog's
/// reply is written back, stdin is closed when the dialog says so); and when the run is
/// cancelled or its deadline passes, the dialog's [`interrupt`](StdinDialog::interrupt) lines
/// are written, stdin is closed and the process gets
/// [`CliLimits::interrupt_grace`](crate::CliLimits::interrupt_grace) to exit by itself before
/// the process group is stopped as in [`run_jsonl`]. The dialog's answer to a line (an
/// approval that waits for a person) is raced against cancellation and the deadline.
///
/// # Errors
/// As [`run_jsonl`], plus the errors of [`StdinDialog::on_line`] (the process is then stopped).
pub async fn run_jsonl_dialog<F>(
    cmd: &CliCommand,
    control: &RunControl,
    sink: &EventSink,
    dialog: &mut dyn StdinDialog,
    on_line: F,
) -> asm_core::Result<ExitInfo>
where
    F: FnMut(&str, &mut Vec<ProviderEvent>) -> asm_core::Result<()> + Send,
{
    let span =
        tracing::info_span!("provider_cli", provider = %cmd.provider, program = %cmd.program.display(), dialog = true);
    let cmd = cmd.clone().stdin_pipe();
    run_jsonl_inner(&cmd, control, sink, Some(dialog), on_line).instrument(span).await
}

/// A conversation with a CLI over its stdin while its stdout is read (a control protocol such
/// as Claude Code's stream-json control requests); driven by [`run_jsonl_dialog`].
#[async_trait::async_trait]
pub trait StdinDialog: Send {
    /// Lines written (each followed by `\n`) as soon as the process started.
    fn opening(&mut self) -> Vec<String>;
    /// Looks at one stdout line before the normalizer does; may wait (for an approval).
    ///
    /// # Errors
    /// A line that means the run cannot go on (the process is then stopped).
    async fn on_line(&mut self, line: &str) -> asm_core::Result<DialogStep>;
    /// Lines asking the CLI to stop by itself, written on cancellation or at the deadline
    /// before the process group is signalled.
    fn interrupt(&mut self) -> Vec<String>;
}

/// What a [`StdinDialog`] did with one stdout line.
///
/// ```
/// use asm_provider_cli::DialogStep;
/// let step = DialogStep::consumed().reply("{}");
/// assert!(step.consumed && !step.close_stdin);
/// assert!(!DialogStep::pass().close_stdin().consumed);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DialogStep {
    /// The line belongs to the dialog: the normalizer does not see it.
    pub consumed: bool,
    /// Lines to write back (each followed by `\n`).
    pub reply: Vec<String>,
    /// Close stdin after the reply (the conversation is over).
    pub close_stdin: bool,
}

impl DialogStep {
    /// The line is the normalizer's.
    pub fn pass() -> Self {
        Self::default()
    }
    /// The line is the dialog's.
    pub fn consumed() -> Self {
        Self { consumed: true, ..Self::default() }
    }
    asm_core::builder_setters! {
        /// Adds a line to write back.
        fn reply(line: impl Into<String>) { reply.push(line.into()) }
    }
    /// Closes stdin after the reply.
    #[must_use]
    pub fn close_stdin(mut self) -> Self {
        self.close_stdin = true;
        self
    }
}

/// Writes `lines` to the dialog's stdin; a write error (the child is gone, or stdin already
/// closed) is logged and ignored: the end of stdout tells what happened.
async fn write_lines(stdin: &mut Option<tokio::process::ChildStdin>, lines: Vec<String>) {
    use tokio::io::AsyncWriteExt;
    let Some(pipe) = stdin.as_mut() else { return };
    for line in lines {
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        if let Err(e) = pipe.write_all(&bytes).await {
            tracing::debug!(error = %e, "provider stdin write failed");
            *stdin = None;
            return;
        }
    }
    if let Err(e) = pipe.flush().await {
        tracing::debug!(error = %e, "provider stdin flush failed");
        *stdin = None;
    }
}

/// The dialog's way to stop: its interrupt lines, stdin closed, the interrupt grace for the
/// process to exit by itself; then (in [`interrupt_error`]) the usual escalation.
async fn dialog_interrupt(
    process: &mut CliProcess,
    stdin: &mut Option<tokio::process::ChildStdin>,
    dialog: &mut dyn StdinDialog,
    grace: std::time::Duration,
) {
    let lines = dialog.interrupt();
    let bounded = tokio::time::timeout(grace, async {
        write_lines(stdin, lines).await;
        *stdin = None;
        process.finish().await
    });
    if bounded.await.is_err() {
        tracing::debug!(pid = process.pid(), "provider did not stop on the interrupt request; signalling");
    }
}

async fn run_jsonl_inner<F>(
    cmd: &CliCommand,
    control: &RunControl,
    sink: &EventSink,
    mut dialog: Option<&mut dyn StdinDialog>,
    mut on_line: F,
) -> asm_core::Result<ExitInfo>
where
    F: FnMut(&str, &mut Vec<ProviderEvent>) -> asm_core::Result<()> + Send,
{
    if control.cancel.is_cancelled() {
        return Err(cancelled_error());
    }
    let mut process = CliProcess::spawn(cmd)?;
    tracing::debug!(pid = process.pid(), "reading provider output");
    let mut stdin = process.take_stdin();
    if let Some(dialog) = dialog.as_deref_mut() {
        write_lines(&mut stdin, dialog.opening()).await;
    }
    let grace = cmd.limits.interrupt_grace;
    macro_rules! stop_for {
        ($why:expr) => {{
            if let Some(dialog) = dialog.as_deref_mut() {
                dialog_interrupt(&mut process, &mut stdin, dialog, grace).await;
            }
            return Err(interrupt_error(&mut process, $why, cmd.provider).await);
        }};
    }
    let mut events = Vec::new();
    let mut lines: u64 = 0;
    let mut oversized: u64 = 0;
    loop {
        let frame = tokio::select! {
            biased;
            why = interrupted(control) => stop_for!(why),
            frame = process.next_frame() => frame?,
        };
        let Some(frame) = frame else { break };
        match frame {
            StdoutFrame::Line(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                lines += 1;
                if let Some(d) = dialog.as_deref_mut() {
                    let step = tokio::select! {
                        biased;
                        why = interrupted(control) => Err(why),
                        step = d.on_line(&line) => Ok(step),
                    };
                    let step = match step {
                        Err(why) => stop_for!(why),
                        Ok(Err(e)) => {
                            process.stop().await;
                            return Err(e);
                        }
                        Ok(Ok(step)) => step,
                    };
                    write_lines(&mut stdin, step.reply).await;
                    if step.close_stdin {
                        stdin = None;
                    }
                    if step.consumed {
                        continue;
                    }
                }
                if let Err(e) = on_line(&line, &mut events) {
                    process.stop().await;
                    return Err(e);
                }
            }
            StdoutFrame::Oversized { max_line_bytes } => {
                oversized += 1;
                events.push(error_event(
                    ErrorCode::ProviderError,
                    &format!("provider output line exceeds {max_line_bytes} bytes; the line was skipped"),
                    serde_json::json!({ "reason": "line_too_long", "max_line_bytes": max_line_bytes }),
                ));
            }
        }
        for event in events.drain(..) {
            let emitted = tokio::select! {
                biased;
                why = interrupted(control) => stop_for!(why),
                emitted = sink.emit(event) => emitted,
            };
            if let Err(e) = emitted {
                process.stop().await;
                return Err(e);
            }
        }
    }
    drop(stdin);
    let exit = tokio::select! {
        biased;
        why = interrupted(control) => return Err(interrupt_error(&mut process, why, cmd.provider).await),
        exit = process.finish() => exit,
    };
    tracing::debug!(lines, oversized, exit = %exit.describe(), "provider process finished");
    Ok(exit.with_oversized_lines(oversized, cmd.limits.max_line_bytes))
}
