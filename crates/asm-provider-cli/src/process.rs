//! A spawned provider process: [`CliProcess`] with line framing, stderr ring, stop escalation
//! and a drop guard.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

use asm_core::{Error, ErrorCode, ProviderError, ProviderErrorKind, ProviderName, StderrLimits};

use crate::command::{CliCommand, CliLimits};

/// How a provider process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitKind {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It could not be observed (not reaped within the kill wait).
    Unknown,
}

/// The end of a provider process: exit classification and the captured stderr tail.
///
/// ```
/// use asm_provider_cli::{ExitInfo, ExitKind};
/// let exit = ExitInfo::new(ExitKind::Signal(15), "bye\n", false);
/// assert_eq!(exit.exit_code(), Some(143)); // 128 + signal, the shell convention
/// assert!(!exit.success());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExitInfo {
    /// Code or signal.
    pub status: ExitKind,
    /// The newest bytes of stderr (at most the ring size), lossily decoded.
    pub stderr: String,
    /// Whether older stderr bytes were dropped from the ring.
    pub stderr_truncated: bool,
    /// Stdout lines [`run_jsonl`](crate::run_jsonl) dropped because they exceeded
    /// [`CliLimits::max_line_bytes`] (see [`settle`](Self::settle)).
    pub oversized_lines: u64,
    /// The per-line cap those lines exceeded.
    pub max_line_bytes: usize,
}

impl ExitInfo {
    /// An exit record (no oversized lines).
    pub fn new(status: ExitKind, stderr: impl Into<String>, stderr_truncated: bool) -> Self {
        Self { status, stderr: stderr.into(), stderr_truncated, oversized_lines: 0, max_line_bytes: 0 }
    }

    /// Records `count` stdout lines dropped for exceeding `max_line_bytes`.
    #[must_use]
    pub fn with_oversized_lines(mut self, count: u64, max_line_bytes: usize) -> Self {
        self.oversized_lines = count;
        self.max_line_bytes = max_line_bytes;
        self
    }

    /// The framing error of a run that dropped oversized stdout lines: `provider_error` /
    /// [`ProviderErrorKind::ParseError`] with this exit's code and stderr, `details.reason =
    /// "line_too_long"`, `details.oversized_lines` and `details.max_line_bytes`. `None` when no
    /// line was dropped.
    pub fn framing_error(&self, provider: ProviderName, limits: StderrLimits) -> Option<Error> {
        if self.oversized_lines == 0 {
            return None;
        }
        let message = format!("provider output line exceeds {} bytes", self.max_line_bytes);
        let pe = self.provider_error(provider, ProviderErrorKind::ParseError, message, limits);
        Some(
            provider_failure(ErrorCode::ProviderError, pe)
                .with_detail("reason", "line_too_long")
                .with_detail("oversized_lines", self.oversized_lines)
                .with_detail("max_line_bytes", u64::try_from(self.max_line_bytes).unwrap_or(u64::MAX)),
        )
    }

    /// Settles a normalizer's verdict on the run (`verdict`, computed from the lines that were
    /// read and this exit) with the framing of its output.
    ///
    /// Without oversized lines the verdict stands. Otherwise part of the output is missing, so
    /// a success cannot be trusted, and an oversized line must not hide the provider's own
    /// error either:
    /// * a verdict that is a specific provider failure (a provider-category code other than the
    ///   generic `provider_error`: authentication failed, rate limited, unavailable, timeout,
    ///   quota) wins, with `details.oversized_lines` added;
    /// * anything else (a success, a generic provider error such as "no result line" that the
    ///   dropped line may have caused) becomes the [`framing_error`](Self::framing_error), which
    ///   keeps a failed verdict's code and message under `details.provider_verdict`.
    ///
    /// ```
    /// use asm_core::{Error, ErrorCode, ProviderName, StderrLimits};
    /// use asm_provider_cli::{ExitInfo, ExitKind};
    /// let exit = ExitInfo::new(ExitKind::Code(1), "", false).with_oversized_lines(1, 1024);
    /// let limited: asm_core::Result<()> = Err(Error::new(ErrorCode::ProviderRateLimited, "429"));
    /// let settled = exit.settle(ProviderName::Claude, StderrLimits::default(), limited);
    /// assert_eq!(settled.unwrap_err().code(), ErrorCode::ProviderRateLimited);
    /// let settled = exit.settle(ProviderName::Claude, StderrLimits::default(), Ok(()));
    /// assert_eq!(settled.unwrap_err().details()["reason"], "line_too_long");
    /// ```
    ///
    /// # Errors
    /// As described.
    pub fn settle<T>(
        &self,
        provider: ProviderName,
        limits: StderrLimits,
        verdict: asm_core::Result<T>,
    ) -> asm_core::Result<T> {
        let Some(framing) = self.framing_error(provider, limits) else {
            return verdict;
        };
        match verdict {
            Err(e) if e.category() == asm_core::ErrorCategory::Provider && e.code() != ErrorCode::ProviderError => {
                Err(e.with_detail("oversized_lines", self.oversized_lines))
            }
            Err(e) => Err(framing.with_detail(
                "provider_verdict",
                serde_json::json!({ "error_code": e.code().as_str(), "error_message": e.message() }),
            )),
            Ok(_) => Err(framing),
        }
    }

    /// The error for conflicting signals: the output says the run succeeded (`done`, e.g.
    /// `"printed a successful result"`) but the process exited non-zero or by a signal.
    /// Classified by stderr ([`classify_error_text`](crate::classify_error_text)), else
    /// `provider_error`; [`ProviderErrorKind::TransportExit`], `details.reason =
    /// "exit_status"`. `None` for a clean exit.
    ///
    /// ```
    /// use asm_core::{ErrorCode, ProviderName, StderrLimits};
    /// use asm_provider_cli::{ExitInfo, ExitKind};
    /// let exit = ExitInfo::new(ExitKind::Code(1), "HTTP 429 Too Many Requests\n", false);
    /// let err = exit.failed_after_success(ProviderName::Claude, StderrLimits::default(), "printed a result").unwrap();
    /// assert_eq!(err.code(), ErrorCode::ProviderRateLimited);
    /// assert_eq!(err.details()["reason"], "exit_status");
    /// assert!(ExitInfo::new(ExitKind::Code(0), "", false).failed_after_success(ProviderName::Claude, StderrLimits::default(), "x").is_none());
    /// ```
    pub fn failed_after_success(&self, provider: ProviderName, limits: StderrLimits, done: &str) -> Option<Error> {
        if self.success() {
            return None;
        }
        let code = crate::classify_error_text(&self.stderr).unwrap_or(ErrorCode::ProviderError);
        let message = format!("{provider} {done} but exited with {}", self.describe());
        let pe = self.provider_error(provider, ProviderErrorKind::TransportExit, message, limits);
        Some(provider_failure(code, pe).with_detail("reason", "exit_status"))
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status == ExitKind::Code(0)
    }

    /// The exit code, or `128 + signal` for a signal death, or `None` when unknown.
    pub fn exit_code(&self) -> Option<i32> {
        match self.status {
            ExitKind::Code(c) => Some(c),
            ExitKind::Signal(s) => Some(128 + s),
            ExitKind::Unknown => None,
        }
    }

    /// The signal that killed the process, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.status {
            ExitKind::Signal(s) => Some(s),
            _ => None,
        }
    }

    /// `"exit code N"`, `"signal N"` or `"unknown exit"`.
    pub fn describe(&self) -> String {
        match self.status {
            ExitKind::Code(c) => format!("exit code {c}"),
            ExitKind::Signal(s) => format!("signal {s}"),
            ExitKind::Unknown => "unknown exit".to_owned(),
        }
    }

    /// A [`ProviderError`] carrying this exit's code and stderr (bounded by `limits`; marked
    /// truncated when the ring dropped bytes or the limits cut it).
    pub fn provider_error(
        &self,
        provider: ProviderName,
        kind: ProviderErrorKind,
        message: impl Into<String>,
        limits: StderrLimits,
    ) -> ProviderError {
        let mut pe = ProviderError::new(provider, kind, message);
        if let Some(code) = self.exit_code() {
            pe = pe.with_exit_code(code);
        }
        if !self.stderr.is_empty() {
            pe = pe.with_stderr(&self.stderr, limits);
        }
        if self.stderr_truncated {
            pe = pe.with_truncated();
        }
        pe
    }

    fn from_status(status: ExitStatus, stderr: String, stderr_truncated: bool) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let kind = match (status.code(), status.signal()) {
            (Some(c), _) => ExitKind::Code(c),
            (None, Some(s)) => ExitKind::Signal(s),
            (None, None) => ExitKind::Unknown,
        };
        Self::new(kind, stderr, stderr_truncated)
    }
}

/// Builds an [`asm_core::Error`] with `code` whose message and provider error are `pe`.
pub fn provider_failure(code: ErrorCode, pe: ProviderError) -> Error {
    Error::new(code, pe.message.clone()).with_provider_error(pe)
}

#[derive(Debug, Default)]
struct StderrRing {
    buf: VecDeque<u8>,
    cap: usize,
    dropped: bool,
}

impl StderrRing {
    fn push(&mut self, bytes: &[u8]) {
        if self.cap == 0 {
            self.dropped |= !bytes.is_empty();
            return;
        }
        let bytes = if bytes.len() > self.cap {
            self.dropped = true;
            &bytes[bytes.len() - self.cap..]
        } else {
            bytes
        };
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.dropped = true;
            self.buf.drain(..overflow);
        }
        self.buf.extend(bytes);
    }

    fn snapshot(&self) -> (String, bool) {
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        (String::from_utf8_lossy(&bytes).into_owned(), self.dropped)
    }
}

/// Result of reading one frame.
enum Frame {
    Line,
    Eof,
    TooLong,
}

/// One frame of a provider's stdout ([`CliProcess::next_frame`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StdoutFrame {
    /// A complete line, without `\n` / `\r\n`, invalid UTF-8 replaced.
    Line(String),
    /// A line longer than the cap: its bytes were discarded, up to and including its `\n`
    /// (the rest of an overlong line is skipped, never read as a line of its own).
    Oversized {
        /// The cap ([`CliLimits::max_line_bytes`]).
        max_line_bytes: usize,
    },
}

/// Reads one `\n`-terminated frame into `line` (without the newline). Cancel safe: bytes are
/// consumed from the reader only after they were copied into `line`, and the state of an
/// overlong line being skipped lives in `discarding`.
async fn read_frame<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    discarding: &mut bool,
    max: usize,
) -> std::io::Result<Frame> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            *discarding = false;
            return Ok(if line.is_empty() { Frame::Eof } else { Frame::Line });
        }
        if *discarding {
            // The rest of a line already reported as too long.
            match memchr::memchr(b'\n', available) {
                Some(i) => {
                    reader.consume(i + 1);
                    *discarding = false;
                }
                None => {
                    let n = available.len();
                    reader.consume(n);
                }
            }
            continue;
        }
        match memchr::memchr(b'\n', available) {
            Some(i) => {
                if line.len() + i > max {
                    reader.consume(i + 1);
                    return Ok(Frame::TooLong);
                }
                line.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                return Ok(Frame::Line);
            }
            None => {
                let n = available.len();
                if line.len() + n > max {
                    reader.consume(n);
                    *discarding = true;
                    return Ok(Frame::TooLong);
                }
                line.extend_from_slice(available);
                reader.consume(n);
            }
        }
    }
}

/// Reads what is buffered (up to `max` bytes); empty at EOF. Cancel safe (`fill_buf` is, and
/// the bytes are consumed right after they were copied).
async fn read_chunk<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<Vec<u8>> {
    let available = reader.fill_buf().await?;
    let n = available.len().min(max);
    let bytes = available[..n].to_vec();
    reader.consume(n);
    Ok(bytes)
}

/// A running provider process, spawned without a shell in its own process group.
///
/// * stdout is framed into lines ([`next_line`](Self::next_line)) with a per-line cap;
/// * stderr is drained by a task into a ring buffer of [`CliLimits::stderr_ring_bytes`];
/// * stdin is `/dev/null` unless the command has [`stdin_input`](CliCommand::stdin_input) or
///   [`stdin_pipe`](CliCommand::stdin_pipe) (then [`take_stdin`](Self::take_stdin) hands out
///   the write end);
/// * [`stop`](Self::stop) escalates SIGINT → SIGTERM → SIGKILL on the whole group and reaps;
/// * when the leader exits, anything left in its group is killed (no stragglers);
/// * dropping an un-reaped `CliProcess` kills the group with SIGKILL and reaps the child in the
///   background, so no process outlives a dropped future.
///
/// ```no_run
/// # async fn demo() -> asm_core::Result<()> {
/// use asm_core::ProviderName;
/// use asm_provider_cli::{CliCommand, CliEnv, CliProcess};
/// let cmd = CliCommand::new(ProviderName::Claude, "/bin/echo").arg("hello").env(CliEnv::minimal());
/// let mut process = CliProcess::spawn(&cmd)?;
/// while let Some(line) = process.next_line().await? {
///     println!("{line}");
/// }
/// let exit = process.finish().await;
/// assert!(exit.success());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CliProcess {
    provider: ProviderName,
    child: Option<Child>,
    pid: i32,
    stdout: Option<BufReader<ChildStdout>>,
    stdout_eof: bool,
    line: Vec<u8>,
    /// Skipping the rest of an oversized line.
    discarding: bool,
    stderr: Arc<Mutex<StderrRing>>,
    stderr_task: Option<JoinHandle<()>>,
    stdin_task: Option<JoinHandle<()>>,
    stdin: Option<ChildStdin>,
    status: Option<ExitStatus>,
    limits: CliLimits,
}

impl CliProcess {
    /// Spawns `cmd`: program resolved without a shell, `env_clear` + the explicit environment,
    /// own process group, stdin closed or piped.
    ///
    /// # Errors
    /// [`ErrorCode::ProviderError`] with [`ProviderErrorKind::CliNotFound`] when the program is
    /// missing, [`ProviderErrorKind::ProcessError`] when spawning fails otherwise (for example a
    /// missing working directory).
    pub fn spawn(cmd: &CliCommand) -> asm_core::Result<Self> {
        let program = cmd.resolve_program()?;
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&cmd.args)
            .env_clear()
            .envs(cmd.env.resolve())
            .stdin(if cmd.stdin_input.is_some() || cmd.stdin_pipe { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(cwd) = &cmd.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound && !program.exists() {
                ProviderErrorKind::CliNotFound
            } else {
                ProviderErrorKind::ProcessError
            };
            let message = format!("failed to spawn {}: {e}", program.display());
            provider_failure(ErrorCode::ProviderError, ProviderError::new(cmd.provider, kind, message))
        })?;
        let pid = child.id().and_then(|id| i32::try_from(id).ok()).unwrap_or(0);
        tracing::debug!(program = %program.display(), pid, "provider process spawned");

        let stderr = Arc::new(Mutex::new(StderrRing { cap: cmd.limits.stderr_ring_bytes, ..StderrRing::default() }));
        let stderr_task = child.stderr.take().map(|mut pipe| {
            let ring = Arc::clone(&stderr);
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    ring.lock().unwrap_or_else(PoisonError::into_inner).push(&chunk[..n]);
                }
            })
        });
        let stdin = if cmd.stdin_input.is_none() && cmd.stdin_pipe { child.stdin.take() } else { None };
        let stdin_task = match (child.stdin.take(), &cmd.stdin_input) {
            (Some(mut stdin), Some(input)) => {
                let input = input.clone();
                Some(tokio::spawn(async move {
                    let _ = stdin.write_all(&input).await;
                    let _ = stdin.shutdown().await;
                }))
            }
            _ => None,
        };
        let stdout = child.stdout.take().map(|s| BufReader::with_capacity(64 * 1024, s));
        Ok(Self {
            provider: cmd.provider,
            child: Some(child),
            pid,
            stdout,
            stdout_eof: false,
            line: Vec::new(),
            discarding: false,
            stderr,
            stderr_task,
            stdin_task,
            stdin,
            status: None,
            limits: cmd.limits,
        })
    }

    /// The write end of stdin of a command spawned with
    /// [`stdin_pipe`](CliCommand::stdin_pipe) (once; `None` otherwise). Dropping it closes the
    /// child's stdin. Write from a task of its own (a child that does not read can fill the
    /// pipe) and expect write errors once the child is gone; the drop guard, [`stop`](Self::stop)
    /// and [`finish`](Self::finish) work as without it.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// The process id, which is also the process group id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The next stdout line (without `\n` / `\r\n`, invalid UTF-8 replaced), or `None` at EOF.
    /// Cancel safe: dropping the future keeps the partial line for the next call.
    ///
    /// # Errors
    /// An oversized line stops the process ([`stop`](Self::stop)) and returns
    /// [`ErrorCode::ProviderError`] with [`ProviderErrorKind::ParseError`]; a read failure is a
    /// [`ProviderErrorKind::ProcessError`]. (Use [`next_frame`](Self::next_frame) to skip
    /// oversized lines and keep reading, as [`run_jsonl`](crate::run_jsonl) does.)
    pub async fn next_line(&mut self) -> asm_core::Result<Option<String>> {
        match self.next_frame().await? {
            None => Ok(None),
            Some(StdoutFrame::Line(line)) => Ok(Some(line)),
            Some(StdoutFrame::Oversized { max_line_bytes }) => {
                let exit = self.stop().await.with_oversized_lines(1, max_line_bytes);
                Err(exit
                    .framing_error(self.provider, StderrLimits::default())
                    .unwrap_or_else(|| Error::new(ErrorCode::ProviderError, "provider output line too long")))
            }
        }
    }

    /// The next stdout frame, or `None` at EOF: a line, or the report of a line over
    /// [`CliLimits::max_line_bytes`] whose bytes were skipped (the process keeps running, so
    /// the rest of its output can still be read). Memory stays bounded by the cap. Cancel safe.
    ///
    /// # Errors
    /// A read failure stops the process and is a [`ProviderErrorKind::ProcessError`].
    pub async fn next_frame(&mut self) -> asm_core::Result<Option<StdoutFrame>> {
        let max = self.limits.max_line_bytes;
        let frame = loop {
            let Some(stdout) = self.stdout.as_mut().filter(|_| !self.stdout_eof) else {
                return Ok(None);
            };
            match self.child.as_mut().filter(|_| self.status.is_none()) {
                Some(child) => {
                    tokio::select! {
                        biased;
                        frame = read_frame(stdout, &mut self.line, &mut self.discarding, max) => break frame,
                        status = child.wait() => {
                            match status {
                                Ok(status) => self.status = Some(status),
                                Err(e) => tracing::warn!(error = %e, "waiting for provider process failed"),
                            }
                            // The leader is gone: whatever is left in its group is orphaned.
                            kill_group(self.pid, Signal::KILL);
                            if self.status.is_none() {
                                // Could not observe the exit; keep reading without watching.
                                break read_frame(stdout, &mut self.line, &mut self.discarding, max).await;
                            }
                        }
                    }
                }
                None => break read_frame(stdout, &mut self.line, &mut self.discarding, max).await,
            }
        };
        match frame {
            Ok(Frame::Line) => {
                let mut bytes = std::mem::take(&mut self.line);
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                Ok(Some(StdoutFrame::Line(
                    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                )))
            }
            Ok(Frame::Eof) => {
                self.stdout_eof = true;
                Ok(None)
            }
            Ok(Frame::TooLong) => {
                self.line.clear();
                tracing::warn!(max_line_bytes = max, "provider output line over the cap skipped");
                Ok(Some(StdoutFrame::Oversized { max_line_bytes: max }))
            }
            Err(e) => {
                let exit = self.stop().await;
                let pe = exit.provider_error(
                    self.provider,
                    ProviderErrorKind::ProcessError,
                    format!("reading provider output failed: {e}"),
                    StderrLimits::default(),
                );
                Err(provider_failure(ErrorCode::ProviderError, pe))
            }
        }
    }

    /// The next stdout bytes as they arrive (at most `max` bytes, at least one), or `None` at
    /// EOF: for providers whose output is text rather than lines (the shell adapter streams
    /// a command's stdout chunk by chunk). Bytes are returned exactly as the child wrote them
    /// (no newline handling, no UTF-8 decoding); bytes of a partial line already buffered by
    /// [`next_frame`](Self::next_frame) come first. As with `next_frame`, when the leader exits
    /// the rest of its group is killed, so a background child holding stdout open cannot keep
    /// the read going. Cancel safe: bytes are consumed only when they are returned.
    ///
    /// ```no_run
    /// # async fn demo() -> asm_core::Result<()> {
    /// use asm_core::ProviderName;
    /// use asm_provider_cli::{CliCommand, CliEnv, CliProcess};
    /// let cmd = CliCommand::new(ProviderName::Shell, "/bin/sh").args(["-c", "printf abc"]).env(CliEnv::minimal());
    /// let mut process = CliProcess::spawn(&cmd)?;
    /// let mut out = Vec::new();
    /// while let Some(chunk) = process.next_chunk(64 * 1024).await? {
    ///     out.extend_from_slice(&chunk);
    /// }
    /// assert_eq!(out, b"abc");
    /// assert!(process.finish().await.success());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A read failure stops the process and is a [`ProviderErrorKind::ProcessError`].
    pub async fn next_chunk(&mut self, max: usize) -> asm_core::Result<Option<Vec<u8>>> {
        let max = max.max(1);
        if !self.line.is_empty() {
            let n = self.line.len().min(max);
            return Ok(Some(self.line.drain(..n).collect()));
        }
        let read = loop {
            let Some(stdout) = self.stdout.as_mut().filter(|_| !self.stdout_eof) else {
                return Ok(None);
            };
            match self.child.as_mut().filter(|_| self.status.is_none()) {
                Some(child) => {
                    tokio::select! {
                        biased;
                        read = read_chunk(stdout, max) => break read,
                        status = child.wait() => {
                            match status {
                                Ok(status) => self.status = Some(status),
                                Err(e) => tracing::warn!(error = %e, "waiting for provider process failed"),
                            }
                            // The leader is gone: whatever is left in its group is orphaned.
                            kill_group(self.pid, Signal::KILL);
                            if self.status.is_none() {
                                break read_chunk(stdout, max).await;
                            }
                        }
                    }
                }
                None => break read_chunk(stdout, max).await,
            }
        };
        match read {
            Ok(bytes) if bytes.is_empty() => {
                self.stdout_eof = true;
                Ok(None)
            }
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => {
                let exit = self.stop().await;
                let pe = exit.provider_error(
                    self.provider,
                    ProviderErrorKind::ProcessError,
                    format!("reading provider output failed: {e}"),
                    StderrLimits::default(),
                );
                Err(provider_failure(ErrorCode::ProviderError, pe))
            }
        }
    }

    /// Waits for the process to exit after stdout reached EOF, kills leftovers of its group,
    /// and returns the exit classification with the stderr tail. Not bounded in time: callers
    /// race it against cancellation / deadline (see [`run_jsonl`](crate::run_jsonl)).
    pub async fn finish(&mut self) -> ExitInfo {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
        {
            // Keep draining stdout so a chatty child cannot block on a full pipe.
            let mut scratch = vec![0u8; 8192];
            loop {
                let drain = async {
                    match self.stdout.as_mut() {
                        Some(out) if !self.stdout_eof => out.read(&mut scratch).await.unwrap_or(0),
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    status = child.wait() => {
                        if let Ok(status) = status {
                            self.status = Some(status);
                        }
                        break;
                    }
                    n = drain => if n == 0 { self.stdout_eof = true; },
                }
            }
        }
        kill_group(self.pid, Signal::KILL);
        self.collect().await
    }

    /// Stops the process: SIGINT to the group, [`CliLimits::interrupt_grace`], SIGTERM,
    /// [`CliLimits::terminate_grace`], SIGKILL; stdout is drained (and discarded) meanwhile.
    /// Returns once the process is reaped (or [`CliLimits::kill_wait`] after SIGKILL, in which
    /// case the drop guard reaps it later).
    pub async fn stop(&mut self) -> ExitInfo {
        let steps = [
            (Signal::INT, self.limits.interrupt_grace),
            (Signal::TERM, self.limits.terminate_grace),
            (Signal::KILL, self.limits.kill_wait),
        ];
        for (signal, grace) in steps {
            if self.status.is_some() || self.child.is_none() {
                break;
            }
            tracing::debug!(pid = self.pid, ?signal, "signalling provider process group");
            kill_group(self.pid, signal);
            if let Ok(status) = tokio::time::timeout(grace, self.wait_draining()).await {
                self.status = status;
            }
        }
        kill_group(self.pid, Signal::KILL);
        self.collect().await
    }

    async fn wait_draining(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut scratch = vec![0u8; 8192];
        loop {
            let drain = async {
                match self.stdout.as_mut() {
                    Some(out) if !self.stdout_eof => out.read(&mut scratch).await.unwrap_or(0),
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => return status.ok(),
                n = drain => if n == 0 { self.stdout_eof = true; },
            }
        }
    }

    async fn collect(&mut self) -> ExitInfo {
        if let Some(task) = self.stdin_task.take() {
            task.abort();
        }
        if let Some(mut task) = self.stderr_task.take() {
            // The group is dead, so the pipe closes promptly; bound it anyway.
            if tokio::time::timeout(Duration::from_millis(500), &mut task).await.is_err() {
                task.abort();
            }
        }
        let (stderr, truncated) = self.stderr.lock().unwrap_or_else(PoisonError::into_inner).snapshot();
        match self.status {
            Some(status) => {
                // Reaped: the guard has nothing left to do.
                self.child = None;
                ExitInfo::from_status(status, stderr, truncated)
            }
            None => ExitInfo::new(ExitKind::Unknown, stderr, truncated),
        }
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        if let Some(task) = self.stdin_task.take() {
            task.abort();
        }
        if let Some(task) = self.stderr_task.take() {
            task.abort();
        }
        let Some(mut child) = self.child.take() else { return };
        if self.status.is_some() {
            return;
        }
        kill_group(self.pid, Signal::KILL);
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        tracing::debug!(pid = self.pid, "provider process dropped while running; killed its group");
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let _ = child.wait().await;
                });
            }
            Err(_) => {
                let pid = self.pid;
                drop(child);
                let _ = std::thread::Builder::new().name("asm-cli-reaper".into()).spawn(move || {
                    if let Some(pid) = Pid::from_raw(pid) {
                        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
                    }
                });
            }
        }
    }
}

/// Sends `signal` to the process group `pgid` (errors such as "no such group" are ignored).
pub(crate) fn kill_group(pgid: i32, signal: Signal) {
    if pgid <= 1 {
        return;
    }
    if let Some(pid) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Whether any process of group `pgid` still exists (`kill(-pgid, 0)` succeeds). Zombies count
/// as existing, so `false` means the whole group is gone and reaped.
pub fn process_group_alive(pgid: i32) -> bool {
    match Pid::from_raw(pgid) {
        Some(pid) if pgid > 1 => rustix::process::test_kill_process_group(pid).is_ok(),
        _ => false,
    }
}
