//! [`ProviderAdapter`](asm_ports::ProviderAdapter) for the Amp CLI (`amp -x <prompt>
//! --stream-json`), as documented in `spec/provider-clis.md` section 3.
//!
//! [`AmpAdapter`] is the CLI adapter core ([`CliAdapter`]) with Amp's [`CliProtocol`],
//! [`AmpCli`]. This crate holds only what is Amp's:
//!
//! * [`build_argv`], the one place argv is built (native resume with `amp threads continue
//!   <T-id>`), [`build_env`] (`AMP_API_KEY` / `AMP_URL`), the credential variables
//!   [`AUTH_ENV`] and the permission mapping [`permission_flag`];
//! * [`AmpNormalizer`], which maps every stream-json line kind to normalized events (table on
//!   the type) and classifies the end of the run ([`classify_amp_text`] for the CLI's error
//!   texts), on the Anthropic shapes of `asm-anthropic-wire` it shares with Claude Code;
//! * [`AmpBuilderExt`], the builder setters of [`AmpCli`] (agent mode, model label, settings
//!   file, thinking blocks, stream input, API key, server URL, `require_api_key`).
//!
//! The builder ([`AmpAdapterBuilder`]), command construction, the subprocess and the
//! transcript replay ([`render_prompt`]) are the core's. Everything a builder takes is
//! re-exported here.
//!
//! **Per-run options** ([`RunOption`], `ExecuteRequest::options`):
//!
//! | key | Amp |
//! |---|---|
//! | `permission_mode` | `full_auto`, `dangerously_skip_permissions`: `--dangerously-allow-all`; `default`: nothing; `accept_edits`, `plan`: refused |
//! | `cwd` | the process's working directory |
//! | `model`, `max_turns`, `allowed_tools`, `disallowed_tools`, `system_prompt` | refused (`validation_error`, `unsupported_option`): Amp picks the model from its mode server-side, keeps tool permissions in its settings file, and has no such flags |
//!
//! **Credentials**: [`AUTH_ENV`] (`AMP_API_KEY`) is passed through from this process unless
//! [`CliEnv::pass_auth`] is off; values are never logged.
//!
//! Amp cannot run offline (its agent loop runs on the Amp server), so the stream-json shape is
//! the one recovered from the CLI's source; the real offline failures (no API key → login flow,
//! unreachable server, refused WebSocket) are classified from the captured runs. Amp cannot
//! fork a thread: a fork request is refused (`invalid_operation`) rather than continuing the
//! parent's thread.
//!
//! Lifecycle events are never emitted: the runtime emits `run_started` and the terminal event;
//! the thread id, model label, usage and stop reason are returned in the outcome.
//!
//! ```no_run
//! # async fn demo() -> asm_core::Result<()> {
//! use std::sync::Arc;
//! use asm_provider_amp::{AmpAdapter, AmpBuilderExt, PermissionMode};
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

use asm_core::CapabilityType;
use asm_ports::ExecuteRequest;
use asm_provider_cli::{CliAdapter, CliAdapterBuilder, CliOptions, CliProtocol};

pub use asm_core::StderrLimits;
pub use asm_provider_cli::{CliEnv, CliLimits, PermissionMode, RunOption, render_prompt, resume_handle, run_option};
pub use normalize::{AmpNormalizer, classify_amp_text};
pub use options::{
    API_KEY_ENV, AUTH_ENV, AmpCli, AmpOptionsExt, SERVER_URL_ENV, build_argv, build_env, permission_flag,
};

/// The provider name recorded on events and runs.
pub const PROVIDER_NAME: &str = "amp";

/// Runs the Amp CLI as a subprocess per run. Supports native resume
/// (`amp threads continue <T-id>`).
pub type AmpAdapter = CliAdapter<AmpCli>;

/// Builds an [`AmpAdapter`]: the common setters, plus [`AmpBuilderExt`].
pub type AmpAdapterBuilder = CliAdapterBuilder<AmpCli>;

/// The configuration of an [`AmpAdapter`]; Amp's own options are in
/// [`provider`](CliOptions::provider).
pub type AmpOptions = CliOptions<AmpCli>;

impl CliProtocol for AmpCli {
    type Normalizer = AmpNormalizer;
    const PROVIDER: asm_core::ProviderName = asm_core::ProviderName::Amp;
    const PROGRAM: &'static str = "amp";
    const AUTH_ENV: &'static [&'static str] = AUTH_ENV;
    const RUN_OPTIONS: &'static [RunOption] = &[RunOption::PermissionMode, RunOption::Cwd];
    const PERMISSION_MODES: &'static [PermissionMode] =
        &[PermissionMode::Default, PermissionMode::FullAuto, PermissionMode::DangerouslySkipPermissions];
    const CAPABILITIES: &'static [(&'static str, CapabilityType)] = &[
        ("streaming", CapabilityType::Sampling),
        ("tool_use", CapabilityType::Tool),
        ("interrupt", CapabilityType::Sampling),
        ("mcp", CapabilityType::Tool),
        ("file_operations", CapabilityType::Tool),
        ("bash", CapabilityType::Tool),
    ];
    const NATIVE_RESUME: bool = true;

    fn argv(options: &AmpOptions, request: &ExecuteRequest) -> Vec<String> {
        build_argv(options, request)
    }

    fn env(options: &AmpOptions) -> CliEnv {
        build_env(options)
    }

    fn stdin(options: &AmpOptions, request: &ExecuteRequest) -> Option<Vec<u8>> {
        options.provider.stream_input.then(|| asm_anthropic_wire::stdin_message(&render_prompt(request)).into_bytes())
    }

    fn validate(options: &AmpOptions) -> asm_core::Result<()> {
        options::validate(options)
    }

    fn normalizer(options: &AmpOptions, _request: &ExecuteRequest) -> AmpNormalizer {
        AmpNormalizer::new().stderr_limits(options.stderr_limits).model(options.provider.model_label.clone())
    }
}

/// The builder setters of Amp's own options ([`AmpCli`]).
///
/// ```
/// use asm_provider_amp::{AmpAdapter, AmpBuilderExt};
/// let adapter = AmpAdapter::builder().mode("rush").thinking(true).build();
/// assert!(adapter.options().provider.thinking);
/// ```
pub trait AmpBuilderExt: Sized {
    /// Changes [`AmpCli`] (what the other setters use).
    #[must_use]
    fn amp(self, f: impl FnOnce(&mut AmpCli)) -> Self;
    /// `--mode` (agent mode).
    #[must_use]
    fn mode(self, mode: impl Into<String>) -> Self {
        let mode = mode.into();
        self.amp(|a| a.mode = Some(mode))
    }
    /// The model label recorded in the outcome ([`AmpCli::model_label`]; not a CLI flag).
    #[must_use]
    fn model_label(self, label: impl Into<String>) -> Self {
        let label = label.into();
        self.amp(|a| a.model_label = Some(label))
    }
    /// `--settings-file` (tool permissions live there).
    #[must_use]
    fn settings_file(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.amp(|a| a.settings_file = Some(path))
    }
    /// `--stream-json-thinking`.
    #[must_use]
    fn thinking(self, on: bool) -> Self {
        self.amp(|a| a.thinking = on)
    }
    /// Prompt via stdin (`--stream-json-input`).
    #[must_use]
    fn stream_input(self, on: bool) -> Self {
        self.amp(|a| a.stream_input = on)
    }
    /// `AMP_API_KEY`, passed explicitly to the child.
    #[must_use]
    fn api_key(self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.amp(|a| a.api_key = Some(key))
    }
    /// `AMP_URL`, the Amp server.
    #[must_use]
    fn server_url(self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.amp(|a| a.server_url = Some(url))
    }
    /// Fail fast (validation and before spawning) when no `AMP_API_KEY` reaches the child.
    #[must_use]
    fn require_api_key(self, on: bool) -> Self {
        self.amp(|a| a.require_api_key = on)
    }
}

impl AmpBuilderExt for AmpAdapterBuilder {
    fn amp(self, f: impl FnOnce(&mut AmpCli)) -> Self {
        self.provider(f)
    }
}
