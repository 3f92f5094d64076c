//! [`ProviderAdapter`] for the Codex CLI (`codex exec --json`), as documented in
//! `spec/provider-clis.md` section 2 (Codex 0.169.0).
//!
//! * [`CodexAdapter::builder`] configures model, cwd, sandbox, approval policy, permission mode
//!   (spec 9.6 / note 30: default, plan, dangerously_skip_permissions), `-c key=value` config
//!   overrides, extra args, CLI path, environment, the offline and bounded-retry switches (on by
//!   default) and a timeout.
//! * [`build_argv`] is the one place argv is built: `codex exec --json ... [resume <thread_id>]
//!   <prompt>`; [`render_prompt`] replays a transcript into the prompt when the run is not
//!   resumed natively.
//! * [`CodexNormalizer`] maps every JSONL line kind to normalized events (table on the type)
//!   and classifies the end of the run.
//! * The subprocess (no shell, own process group, stdin `/dev/null` — Codex blocks reading a
//!   piped stdin — cancellation escalation, reaping, drop guard) is
//!   [`asm_provider_cli::run_jsonl`].
//!
//! Lifecycle events are never emitted: the runtime emits `run_started` and the terminal event;
//! the thread id (native resume handle), model, usage and stop reason are returned in the
//! [`ExecuteOutcome`].
//!
//! ```no_run
//! # async fn demo() -> asm_core::Result<()> {
//! use std::sync::Arc;
//! use asm_provider_codex::{CodexAdapter, SandboxMode};
//! let adapter = Arc::new(
//!     CodexAdapter::builder()
//!         .model("gpt-5.5")
//!         .sandbox(SandboxMode::WorkspaceWrite)
//!         .env_var("CODEX_HOME", "/srv/codex-home")
//!         .build(),
//! );
//! asm_ports::ProviderAdapter::validate_config(&*adapter)?; // `codex` must be on PATH
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod normalize;
mod options;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::Instrument;

use asm_core::{Capability, CapabilityType, Result, StderrLimits};
use asm_ports::{EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter};
use asm_provider_cli::{CliCommand, CliEnv, CliLimits, PermissionMode, RunControl, run_jsonl};

pub use normalize::CodexNormalizer;
pub use options::{ApprovalPolicy, CodexOptions, SandboxMode, build_argv, permission_args, render_prompt};

/// The provider name recorded on events and runs.
pub const PROVIDER_NAME: &str = "codex";

/// Runs `codex exec --json` as a subprocess per run. Supports native resume by thread id
/// (`codex exec resume <thread_id>`).
#[derive(Clone, Debug)]
pub struct CodexAdapter {
    options: CodexOptions,
}

impl CodexAdapter {
    /// A builder with default options.
    pub fn builder() -> CodexAdapterBuilder {
        CodexAdapterBuilder { options: CodexOptions::default() }
    }

    /// An adapter with these options.
    pub fn new(options: CodexOptions) -> Self {
        Self { options }
    }

    /// The options.
    pub fn options(&self) -> &CodexOptions {
        &self.options
    }

    /// The command for one run (program, argv, env, cwd; stdin is `/dev/null`).
    pub fn command(&self, request: &ExecuteRequest) -> CliCommand {
        let o = &self.options;
        let mut cmd = CliCommand::new(asm_core::ProviderName::Codex, o.cli_path.clone())
            .args(build_argv(o, request))
            .env(o.env.clone())
            .limits(o.limits);
        if let Some(cwd) = &o.cwd {
            cmd = cmd.cwd(cwd.clone());
        }
        cmd
    }
}

#[async_trait]
impl ProviderAdapter for CodexAdapter {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn capabilities(&self) -> Vec<Capability> {
        [
            ("streaming", CapabilityType::Sampling),
            ("tool_use", CapabilityType::Tool),
            ("interrupt", CapabilityType::Sampling),
            ("mcp", CapabilityType::Tool),
            ("file_operations", CapabilityType::Tool),
            ("bash", CapabilityType::Tool),
        ]
        .into_iter()
        .filter_map(|(name, kind)| Capability::new(name, kind).ok())
        .collect()
    }

    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        self.options.validate()?;
        let cmd = self.command(&request);
        let deadline = match (request.deadline, self.options.timeout.map(|t| Instant::now() + t)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let control = RunControl::new(request.cancel.clone(), deadline);
        let mut normalizer =
            CodexNormalizer::new().stderr_limits(self.options.stderr_limits).model(self.options.model.clone());
        let span = tracing::info_span!(
            "codex_execute",
            run_id = %request.run.id,
            resume = request.resume.is_some(),
            thread_id = tracing::field::Empty,
        );
        let exit = run_jsonl(&cmd, &control, &sink, |line, out| {
            normalizer.push_line(line, out);
            Ok(())
        })
        .instrument(span.clone())
        .await?;
        if let Some(id) = normalizer.thread_id() {
            span.record("thread_id", id);
        }
        span.in_scope(|| normalizer.finish(&exit))
    }

    fn validate_config(&self) -> Result<()> {
        let cmd =
            CliCommand::new(asm_core::ProviderName::Codex, self.options.cli_path.clone()).env(self.options.env.clone());
        cmd.resolve_program()?;
        self.options.validate()
    }

    fn supports_native_resume(&self) -> bool {
        true
    }
}

/// Builds a [`CodexAdapter`]; every setter maps to one [`CodexOptions`] field.
#[derive(Clone, Debug)]
pub struct CodexAdapterBuilder {
    options: CodexOptions,
}

impl CodexAdapterBuilder {
    /// The CLI path or PATH name.
    #[must_use]
    pub fn cli_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.cli_path = path.into();
        self
    }
    /// `-m`.
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
    /// `-s/--sandbox`.
    #[must_use]
    pub fn sandbox(mut self, mode: SandboxMode) -> Self {
        self.options.sandbox = Some(mode);
        self
    }
    /// `-c approval_policy="..."`.
    #[must_use]
    pub fn approval_policy(mut self, policy: ApprovalPolicy) -> Self {
        self.options.approval_policy = Some(policy);
        self
    }
    /// Permission mode ([`permission_args`]).
    #[must_use]
    pub fn permission_mode(mut self, mode: PermissionMode) -> Self {
        self.options.permission_mode = mode;
        self
    }
    /// `--skip-git-repo-check` (default on).
    #[must_use]
    pub fn skip_git_repo_check(mut self, on: bool) -> Self {
        self.options.skip_git_repo_check = on;
        self
    }
    /// Adds a config override `-c key=value` (`value` is TOML: quote strings).
    #[must_use]
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.config.push((key.into(), value.into()));
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
    /// Whether to pass the offline switches (default true).
    #[must_use]
    pub fn offline(mut self, on: bool) -> Self {
        self.options.offline = on;
        self
    }
    /// Whether to pass `--disable unbounded_connection_retries` (default true).
    #[must_use]
    pub fn bounded_retries(mut self, on: bool) -> Self {
        self.options.bounded_retries = on;
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
    pub fn build(self) -> CodexAdapter {
        CodexAdapter::new(self.options)
    }
}
