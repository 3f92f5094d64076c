//! [`ProviderAdapter`] for the Claude Code CLI (`claude -p --output-format stream-json
//! --verbose`), as documented in `spec/provider-clis.md` section 1.
//!
//! * [`ClaudeAdapter::builder`] configures model, cwd, system prompt / append, max turns,
//!   permission mode (spec 9.6), allowed / disallowed tools, partial messages, extra args, CLI
//!   path, environment (offline switches on by default), retries and a timeout.
//! * [`build_argv`] is the one place argv is built; [`render_prompt`] folds a transcript into
//!   the prompt when the run is not resumed natively (`--resume <session_id>`).
//! * [`ClaudeNormalizer`] maps every stream-json line kind to normalized events (table on the
//!   type) and classifies the end of the run.
//! * The subprocess (no shell, own process group, cancellation escalation, reaping, drop
//!   guard) is [`asm_provider_cli::run_jsonl`].
//!
//! Lifecycle events are never emitted: the runtime emits `run_started` and the terminal event;
//! the session id, model, usage, cost and stop reason are returned in the [`ExecuteOutcome`].
//!
//! ```no_run
//! # async fn demo() -> asm_core::Result<()> {
//! use std::sync::Arc;
//! use asm_provider_claude::ClaudeAdapter;
//! let adapter = Arc::new(ClaudeAdapter::builder().model("claude-sonnet-4-5").max_retries(1).build());
//! asm_ports::ProviderAdapter::validate_config(&*adapter)?; // `claude` must be on PATH
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod normalize;
mod options;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use asm_core::{Capability, CapabilityType, Result, StderrLimits};
use asm_ports::{EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter};
use asm_provider_cli::{CliCommand, CliEnv, CliLimits, PermissionMode, RunControl, run_jsonl};

pub use normalize::ClaudeNormalizer;
pub use options::{ClaudeOptions, build_argv, build_env, render_prompt, stdin_message};

/// The provider name recorded on events and runs.
pub const PROVIDER_NAME: &str = "claude";

/// Runs Claude Code as a subprocess per run. Supports native resume (`--resume`) and native
/// fork (`--resume <id> --fork-session`).
#[derive(Clone, Debug)]
pub struct ClaudeAdapter {
    options: ClaudeOptions,
}

impl ClaudeAdapter {
    /// A builder with default options.
    pub fn builder() -> ClaudeAdapterBuilder {
        ClaudeAdapterBuilder { options: ClaudeOptions::default() }
    }

    /// An adapter with these options.
    pub fn new(options: ClaudeOptions) -> Self {
        Self { options }
    }

    /// The options.
    pub fn options(&self) -> &ClaudeOptions {
        &self.options
    }

    /// The command for one run (program, argv, env, cwd, stdin).
    pub fn command(&self, request: &ExecuteRequest) -> CliCommand {
        let o = &self.options;
        let mut cmd = CliCommand::new(asm_core::ProviderName::Claude, o.cli_path.clone())
            .args(build_argv(o, request))
            .env(build_env(o))
            .limits(o.limits);
        if let Some(cwd) = &o.cwd {
            cmd = cmd.cwd(cwd.clone());
        }
        if o.stream_input {
            cmd = cmd.stdin_input(stdin_message(&render_prompt(request)));
        }
        cmd
    }
}

#[async_trait]
impl ProviderAdapter for ClaudeAdapter {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn capabilities(&self) -> Vec<Capability> {
        Capability::list(&[
            ("streaming", CapabilityType::Sampling),
            ("tool_use", CapabilityType::Tool),
            ("vision", CapabilityType::Resource),
            ("system_prompts", CapabilityType::Prompt),
            ("interrupt", CapabilityType::Sampling),
            ("file_operations", CapabilityType::FileAccess),
            ("bash", CapabilityType::CodeExecution),
        ])
    }

    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let cmd = self.command(&request);
        let control = RunControl::from_request(&request, self.options.timeout);
        let mut normalizer = ClaudeNormalizer::new().stderr_limits(self.options.stderr_limits);
        let span = tracing::info_span!("claude_execute", run_id = %request.run.id, resume = request.resume.is_some());
        let exit = run_jsonl(&cmd, &control, &sink, |line, out| {
            normalizer.push_line(line, out);
            Ok(())
        })
        .instrument(span)
        .await?;
        // An oversized line never hides the provider's own error (see `ExitInfo::settle`).
        exit.settle(asm_core::ProviderName::Claude, self.options.stderr_limits, normalizer.finish(&exit))
    }

    fn validate_config(&self) -> Result<()> {
        let cmd = CliCommand::new(asm_core::ProviderName::Claude, self.options.cli_path.clone())
            .env(build_env(&self.options));
        cmd.resolve_program()?;
        if let Some(cwd) = &self.options.cwd
            && !cwd.is_dir()
        {
            return Err(asm_core::Error::new(
                asm_core::ErrorCode::ValidationError,
                format!("claude cwd {} is not a directory", cwd.display()),
            ));
        }
        Ok(())
    }

    fn supports_native_resume(&self) -> bool {
        true
    }

    /// `--resume <id> --fork-session` (see [`build_argv`]).
    fn supports_native_fork(&self) -> bool {
        true
    }
}

/// Builds a [`ClaudeAdapter`]; every setter maps to one [`ClaudeOptions`] field.
#[derive(Clone, Debug)]
pub struct ClaudeAdapterBuilder {
    options: ClaudeOptions,
}

impl ClaudeAdapterBuilder {
    /// The CLI path or PATH name.
    #[must_use]
    pub fn cli_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.cli_path = path.into();
        self
    }
    /// `--model`.
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.options.model = Some(model.into());
        self
    }
    /// Working directory.
    #[must_use]
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.options.cwd = Some(cwd.into());
        self
    }
    /// `--system-prompt`.
    #[must_use]
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.options.system_prompt = Some(prompt.into());
        self
    }
    /// `--append-system-prompt`.
    #[must_use]
    pub fn append_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.options.append_system_prompt = Some(prompt.into());
        self
    }
    /// `--max-turns`.
    #[must_use]
    pub fn max_turns(mut self, turns: u32) -> Self {
        self.options.max_turns = Some(turns);
        self
    }
    /// `--permission-mode`.
    #[must_use]
    pub fn permission_mode(mut self, mode: PermissionMode) -> Self {
        self.options.permission_mode = mode;
        self
    }
    /// `--allowedTools`.
    #[must_use]
    pub fn allowed_tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tools: I) -> Self {
        self.options.allowed_tools = tools.into_iter().map(Into::into).collect();
        self
    }
    /// `--disallowedTools`.
    #[must_use]
    pub fn disallowed_tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tools: I) -> Self {
        self.options.disallowed_tools = tools.into_iter().map(Into::into).collect();
        self
    }
    /// `--include-partial-messages`.
    #[must_use]
    pub fn partial_messages(mut self, on: bool) -> Self {
        self.options.partial_messages = on;
        self
    }
    /// Prompt via stdin (`--input-format stream-json`).
    #[must_use]
    pub fn stream_input(mut self, on: bool) -> Self {
        self.options.stream_input = on;
        self
    }
    /// Extra arguments.
    #[must_use]
    pub fn extra_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.options.extra_args = args.into_iter().map(Into::into).collect();
        self
    }
    /// The child's environment (replaces the default [`CliEnv::minimal`]).
    #[must_use]
    pub fn env(mut self, env: CliEnv) -> Self {
        self.options.env = env;
        self
    }
    /// Sets one environment variable.
    #[must_use]
    pub fn env_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.env = self.options.env.set(name, value);
        self
    }
    /// Whether to set the offline / telemetry switches (default true).
    #[must_use]
    pub fn offline(mut self, on: bool) -> Self {
        self.options.offline = on;
        self
    }
    /// `CLAUDE_CODE_MAX_RETRIES`.
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.options.max_retries = Some(retries);
        self
    }
    /// Per-run time limit.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }
    /// Subprocess limits.
    #[must_use]
    pub fn limits(mut self, limits: CliLimits) -> Self {
        self.options.limits = limits;
        self
    }
    /// Bounds of stderr in errors.
    #[must_use]
    pub fn stderr_limits(mut self, limits: StderrLimits) -> Self {
        self.options.stderr_limits = limits;
        self
    }
    /// The adapter.
    pub fn build(self) -> ClaudeAdapter {
        ClaudeAdapter::new(self.options)
    }
}
