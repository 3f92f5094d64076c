//! [`ProviderAdapter`](asm_ports::ProviderAdapter) for the Claude Code CLI (`claude -p
//! --output-format stream-json --verbose`), as documented in `spec/provider-clis.md` section 1.
//!
//! [`ClaudeAdapter`] is the CLI adapter core ([`CliAdapter`]) with Claude Code's
//! [`CliProtocol`], [`ClaudeCli`]. This crate holds only what is Claude's:
//!
//! * [`build_argv`], the one place argv is built, [`build_env`] (the offline switches
//!   [`OFFLINE_ENV`] and [`MAX_RETRIES_ENV`]), the credential variables [`AUTH_ENV`] and the
//!   `--permission-mode` mapping [`permission_flag`];
//! * [`ClaudeNormalizer`], which maps every stream-json line kind to normalized events (table
//!   on the type) and classifies the end of the run, on the Anthropic shapes of
//!   `asm-anthropic-wire` it shares with Amp;
//! * [`ClaudeBuilderExt`], the builder setters of [`ClaudeCli`].
//!
//! The builder ([`ClaudeAdapterBuilder`]: CLI path, cwd, environment, extra args, timeout,
//! limits, model, max turns, permission mode, allowed / disallowed tools, system prompt),
//! command construction, the subprocess and the transcript replay ([`render_prompt`]) are the
//! core's. Everything a builder takes is re-exported here ([`CliEnv`], [`CliLimits`],
//! [`PermissionMode`], [`StderrLimits`]).
//!
//! **Live tool approvals**: when the run has an approval handler
//! ([`ExecuteRequest::approvals`]), the CLI runs in its bidirectional control mode
//! ([`CONTROL_FLAGS`], [`ControlDialog`]; `docs/claude-control-protocol.md`): stdin stays open,
//! the prompt is a stream-json user message, each permission prompt (`can_use_tool`) is asked
//! of the handler and answered, cancellation sends an `interrupt` control request before the
//! process group is signalled. Without a handler the run is one-shot as before. The events are
//! the same in both modes, except that the result line's permission denials are not reported
//! as `tool_approval_denied` in control mode (the runtime's approval gate records every
//! decision itself).
//!
//! **Per-run options** ([`RunOption`], `ExecuteRequest::options`): all of them.
//!
//! | key | Claude Code |
//! |---|---|
//! | `model` | `--model` |
//! | `max_turns` | `--max-turns` |
//! | `permission_mode` | `--permission-mode` ([`permission_flag`]; every mode) |
//! | `allowed_tools` | `--allowedTools a,b` |
//! | `disallowed_tools` | `--disallowedTools a,b` |
//! | `system_prompt` | `--system-prompt` (replaces the default prompt) |
//! | `cwd` | the process's working directory |
//!
//! **Credentials**: [`AUTH_ENV`] is passed through from this process unless
//! [`CliEnv::pass_auth`] is off; values are never logged.
//!
//! Lifecycle events are never emitted: the runtime emits `run_started` and the terminal event;
//! the session id, model, usage, cost and stop reason are returned in the outcome.
//!
//! ```no_run
//! # async fn demo() -> asm_core::Result<()> {
//! use std::sync::Arc;
//! use asm_provider_claude::{ClaudeAdapter, ClaudeBuilderExt, PermissionMode};
//! let adapter = Arc::new(
//!     ClaudeAdapter::builder()
//!         .model("claude-sonnet-4-5")
//!         .permission_mode(PermissionMode::AcceptEdits)
//!         .max_retries(1)
//!         .build(),
//! );
//! asm_ports::ProviderAdapter::validate_config(&*adapter)?; // `claude` must be on PATH
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod control;
mod normalize;
mod options;

use asm_core::CapabilityType;
use asm_ports::ExecuteRequest;
use asm_provider_cli::{CliAdapter, CliAdapterBuilder, CliOptions, CliProtocol, StdinDialog};

pub use asm_core::StderrLimits;
pub use asm_provider_cli::{CliEnv, CliLimits, PermissionMode, RunOption, render_prompt, run_option};
pub use control::{CONTROL_FLAGS, ControlDialog, INITIALIZE_REQUEST_ID, INTERRUPT_REQUEST_ID};
pub use normalize::ClaudeNormalizer;
pub use options::{AUTH_ENV, ClaudeCli, MAX_RETRIES_ENV, OFFLINE_ENV, build_argv, build_env, permission_flag};

/// The provider name recorded on events and runs.
pub const PROVIDER_NAME: &str = "claude";

/// Runs Claude Code as a subprocess per run. Supports native resume (`--resume`) and native
/// fork (`--resume <id> --fork-session`).
pub type ClaudeAdapter = CliAdapter<ClaudeCli>;

/// Builds a [`ClaudeAdapter`]: the common setters, plus [`ClaudeBuilderExt`].
pub type ClaudeAdapterBuilder = CliAdapterBuilder<ClaudeCli>;

/// The configuration of a [`ClaudeAdapter`]; Claude Code's own options are in
/// [`provider`](CliOptions::provider).
pub type ClaudeOptions = CliOptions<ClaudeCli>;

impl CliProtocol for ClaudeCli {
    type Normalizer = ClaudeNormalizer;
    const PROVIDER: asm_core::ProviderName = asm_core::ProviderName::Claude;
    const PROGRAM: &'static str = "claude";
    const AUTH_ENV: &'static [&'static str] = AUTH_ENV;
    const RUN_OPTIONS: &'static [RunOption] = RunOption::ALL;
    const PERMISSION_MODES: &'static [PermissionMode] = PermissionMode::ALL;
    const CAPABILITIES: &'static [(&'static str, CapabilityType)] = &[
        ("streaming", CapabilityType::Sampling),
        ("tool_use", CapabilityType::Tool),
        ("vision", CapabilityType::Resource),
        ("system_prompts", CapabilityType::Prompt),
        ("interrupt", CapabilityType::Sampling),
        ("file_operations", CapabilityType::FileAccess),
        ("bash", CapabilityType::CodeExecution),
    ];
    const NATIVE_RESUME: bool = true;
    /// `--resume <id> --fork-session` (see [`build_argv`]).
    const NATIVE_FORK: bool = true;

    fn argv(options: &ClaudeOptions, request: &ExecuteRequest) -> Vec<String> {
        build_argv(options, request)
    }

    fn env(options: &ClaudeOptions) -> CliEnv {
        build_env(options)
    }

    fn stdin(options: &ClaudeOptions, request: &ExecuteRequest) -> Option<Vec<u8>> {
        if request.approvals.is_some() {
            return None; // the control dialog writes the prompt
        }
        options.provider.stream_input.then(|| asm_anthropic_wire::stdin_message(&render_prompt(request)).into_bytes())
    }

    /// [`ControlDialog`] when the run has an approval handler.
    fn dialog(_options: &ClaudeOptions, request: &ExecuteRequest) -> Option<Box<dyn StdinDialog>> {
        ControlDialog::for_request(request).map(|d| Box::new(d) as Box<dyn StdinDialog>)
    }

    fn normalizer(options: &ClaudeOptions, request: &ExecuteRequest) -> ClaudeNormalizer {
        ClaudeNormalizer::new().stderr_limits(options.stderr_limits).approvals_recorded(request.approvals.is_some())
    }
}

/// The builder setters of Claude Code's own options ([`ClaudeCli`]).
///
/// ```
/// use asm_provider_claude::{ClaudeAdapter, ClaudeBuilderExt};
/// let adapter = ClaudeAdapter::builder().append_system_prompt("Be brief.").stream_input(true).build();
/// assert_eq!(adapter.options().provider.append_system_prompt.as_deref(), Some("Be brief."));
/// ```
pub trait ClaudeBuilderExt: Sized {
    /// Changes [`ClaudeCli`] (what the other setters use).
    #[must_use]
    fn claude(self, f: impl FnOnce(&mut ClaudeCli)) -> Self;
    /// `--append-system-prompt`.
    #[must_use]
    fn append_system_prompt(self, prompt: impl Into<String>) -> Self {
        let prompt = prompt.into();
        self.claude(|c| c.append_system_prompt = Some(prompt))
    }
    /// `--include-partial-messages`.
    #[must_use]
    fn partial_messages(self, on: bool) -> Self {
        self.claude(|c| c.partial_messages = on)
    }
    /// Prompt via stdin (`--input-format stream-json`).
    #[must_use]
    fn stream_input(self, on: bool) -> Self {
        self.claude(|c| c.stream_input = on)
    }
    /// Whether to set the offline / telemetry switches [`OFFLINE_ENV`] (default true).
    #[must_use]
    fn offline(self, on: bool) -> Self {
        self.claude(|c| c.offline = on)
    }
    /// [`MAX_RETRIES_ENV`].
    #[must_use]
    fn max_retries(self, retries: u32) -> Self {
        self.claude(|c| c.max_retries = Some(retries))
    }
}

impl ClaudeBuilderExt for ClaudeAdapterBuilder {
    fn claude(self, f: impl FnOnce(&mut ClaudeCli)) -> Self {
        self.provider(f)
    }
}
