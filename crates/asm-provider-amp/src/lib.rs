//! [`ProviderAdapter`] for the Amp CLI (`amp -x <prompt> --stream-json`), as documented in
//! `spec/provider-clis.md` section 3.
//!
//! * [`AmpAdapter::builder`] configures the CLI path, agent mode, cwd, permission mode (spec
//!   9.6: `--dangerously-allow-all`), settings file, thinking blocks, stream input, extra args,
//!   the explicit environment with `AMP_API_KEY` / `AMP_URL`, and a timeout.
//! * [`build_argv`] is the one place argv is built. Continuation resumes natively with
//!   `amp threads continue <T-id>` ([`resume_thread`]) and replays the transcript in the prompt
//!   otherwise ([`render_prompt`]).
//! * [`AmpNormalizer`] maps every stream-json line kind to normalized events (table on the
//!   type) and classifies the end of the run; [`classify_amp_text`] the CLI's error texts.
//! * The subprocess (no shell, own process group, cancellation escalation, reaping, drop
//!   guard) is [`asm_provider_cli::run_jsonl`].
//!
//! Amp cannot run offline (its agent loop runs on the Amp server), so the stream-json shape is
//! the one recovered from the CLI's source; the real offline failures (no API key → login flow,
//! unreachable server, refused WebSocket) are classified from the captured runs.
//!
//! Lifecycle events are never emitted: the runtime emits `run_started` and the terminal event;
//! the thread id, model label, usage and stop reason are returned in the [`ExecuteOutcome`].
//!
//! ```no_run
//! # async fn demo() -> asm_core::Result<()> {
//! use std::sync::Arc;
//! use asm_provider_amp::AmpAdapter;
//! use asm_provider_cli::PermissionMode;
//! let adapter = Arc::new(
//!     AmpAdapter::builder()
//!         .mode("smart")
//!         .permission_mode(PermissionMode::FullAuto)
//!         .api_key(std::env::var("AMP_API_KEY").unwrap_or_default())
//!         .require_api_key(true)
//!         .build(),
//! );
//! asm_ports::ProviderAdapter::validate_config(&*adapter)?; // `amp` must be on PATH
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod normalize;
mod options;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use asm_core::{Capability, CapabilityType, Error, ErrorCode, ProviderError, ProviderErrorKind, Result, StderrLimits};
use asm_ports::{EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter};
use asm_provider_cli::{CliCommand, CliEnv, CliLimits, PermissionMode, RunControl, provider_failure, run_jsonl};

pub use normalize::{AmpNormalizer, classify_amp_text};
pub use options::{
    API_KEY_ENV, AmpOptions, SERVER_URL_ENV, build_argv, build_env, permission_flag, render_prompt, resume_thread,
    stdin_message,
};

/// The provider name recorded on events and runs.
pub const PROVIDER_NAME: &str = "amp";

/// Runs the Amp CLI as a subprocess per run. Supports native resume
/// (`amp threads continue <T-id>`).
#[derive(Clone, Debug)]
pub struct AmpAdapter {
    options: AmpOptions,
}

fn missing_key_error() -> Error {
    let pe = ProviderError::new(
        asm_core::ProviderName::Amp,
        ProviderErrorKind::Unknown,
        "no AMP_API_KEY for the amp CLI (without it amp starts an interactive login flow)",
    );
    provider_failure(ErrorCode::ProviderAuthenticationFailed, pe).with_detail("reason", "missing_api_key")
}

impl AmpAdapter {
    /// A builder with default options.
    pub fn builder() -> AmpAdapterBuilder {
        AmpAdapterBuilder { options: AmpOptions::default() }
    }

    /// An adapter with these options.
    pub fn new(options: AmpOptions) -> Self {
        Self { options }
    }

    /// The options.
    pub fn options(&self) -> &AmpOptions {
        &self.options
    }

    /// The command for one run (program, argv, env, cwd, stdin).
    pub fn command(&self, request: &ExecuteRequest) -> CliCommand {
        let o = &self.options;
        let mut cmd = CliCommand::new(asm_core::ProviderName::Amp, o.cli_path.clone())
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
impl ProviderAdapter for AmpAdapter {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn capabilities(&self) -> Vec<Capability> {
        Capability::list(&[
            ("streaming", CapabilityType::Sampling),
            ("tool_use", CapabilityType::Tool),
            ("interrupt", CapabilityType::Sampling),
            ("mcp", CapabilityType::Tool),
            ("file_operations", CapabilityType::Tool),
            ("bash", CapabilityType::Tool),
        ])
    }

    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let span = tracing::info_span!(
            "amp_execute",
            run_id = %request.run.id,
            resume = resume_thread(&request).is_some(),
            mode = self.options.mode.as_deref().unwrap_or("default"),
        );
        async {
            if self.options.require_api_key && !self.options.has_api_key() {
                return Err(missing_key_error());
            }
            let cmd = self.command(&request);
            let control = RunControl::from_request(&request, self.options.timeout);
            let mut normalizer =
                AmpNormalizer::new().stderr_limits(self.options.stderr_limits).model(self.options.model.clone());
            let exit = run_jsonl(&cmd, &control, &sink, |line, out| normalizer.push_line(line, out)).await?;
            // An oversized line never hides the provider's own error (see `ExitInfo::settle`).
            let outcome =
                exit.settle(asm_core::ProviderName::Amp, self.options.stderr_limits, normalizer.finish(&exit));
            tracing::debug!(ok = outcome.is_ok(), thread = ?normalizer.session_id(), "amp run finished");
            outcome
        }
        .instrument(span)
        .await
    }

    fn validate_config(&self) -> Result<()> {
        let cmd =
            CliCommand::new(asm_core::ProviderName::Amp, self.options.cli_path.clone()).env(build_env(&self.options));
        cmd.resolve_program()?;
        if let Some(cwd) = &self.options.cwd
            && !cwd.is_dir()
        {
            return Err(Error::new(
                ErrorCode::ValidationError,
                format!("amp cwd {} is not a directory", cwd.display()),
            ));
        }
        if self.options.require_api_key && !self.options.has_api_key() {
            return Err(missing_key_error());
        }
        Ok(())
    }

    fn supports_native_resume(&self) -> bool {
        true
    }
}

/// Builds an [`AmpAdapter`]; every setter maps to one [`AmpOptions`] field.
#[derive(Clone, Debug)]
pub struct AmpAdapterBuilder {
    options: AmpOptions,
}

impl AmpAdapterBuilder {
    /// The CLI path or PATH name.
    #[must_use]
    pub fn cli_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.cli_path = path.into();
        self
    }
    /// `--mode` (agent mode).
    #[must_use]
    pub fn mode(mut self, mode: impl Into<String>) -> Self {
        self.options.mode = Some(mode.into());
        self
    }
    /// The model label recorded in the outcome (not passed to the CLI; see [`AmpOptions::model`]).
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
    /// Permission mode ([`permission_flag`]).
    #[must_use]
    pub fn permission_mode(mut self, mode: PermissionMode) -> Self {
        self.options.permission_mode = mode;
        self
    }
    /// `--settings-file` (tool permissions live there).
    #[must_use]
    pub fn settings_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.settings_file = Some(path.into());
        self
    }
    /// `--stream-json-thinking`.
    #[must_use]
    pub fn thinking(mut self, on: bool) -> Self {
        self.options.thinking = on;
        self
    }
    /// Prompt via stdin (`--stream-json-input`).
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
    /// `AMP_API_KEY`, passed explicitly to the child.
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.options.api_key = Some(key.into());
        self
    }
    /// `AMP_URL`, the Amp server.
    #[must_use]
    pub fn server_url(mut self, url: impl Into<String>) -> Self {
        self.options.server_url = Some(url.into());
        self
    }
    /// Fail fast (validation and before spawning) when no `AMP_API_KEY` reaches the child.
    #[must_use]
    pub fn require_api_key(mut self, on: bool) -> Self {
        self.options.require_api_key = on;
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
    pub fn build(self) -> AmpAdapter {
        AmpAdapter::new(self.options)
    }
}
