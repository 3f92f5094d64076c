//! The one CLI adapter core: [`CliProtocol`] (what a provider crate supplies), [`CliAdapter`]
//! (the [`ProviderAdapter`] built on it) and [`CliAdapterBuilder`].

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use asm_core::{Capability, CapabilityType, Error, ErrorCode, ProviderName, Result, StderrLimits};
use asm_ports::{EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent};

use crate::command::{CliCommand, CliEnv, CliLimits};
use crate::options::{CliOptions, PermissionMode, RunOption};
use crate::process::ExitInfo;
use crate::prompt::resume_handle;
use crate::run::{RunControl, StdinDialog, run_jsonl, run_jsonl_dialog};

/// What a provider crate supplies to [`CliAdapter`]: its argv, environment, stdin, normalizer,
/// and what it supports. Everything else (options, builder, command construction, the execute
/// loop, configuration checks, transcript replay) is the core's.
///
/// The implementing type is the provider's own options (flags only that CLI has); it is
/// [`CliOptions::provider`].
///
/// ```
/// use asm_core::{CapabilityType, ProviderName};
/// use asm_ports::{ExecuteOutcome, ExecuteRequest, ProviderEvent};
/// use asm_provider_cli::{
///     CliAdapter, CliNormalizer, CliOptions, CliProtocol, ExitInfo, PermissionMode, RunOption, render_prompt,
/// };
///
/// /// `echo <prompt>`: every line printed is the answer.
/// #[derive(Clone, Debug, Default)]
/// struct Echo;
///
/// #[derive(Debug, Default)]
/// struct EchoNormalizer(String);
///
/// impl CliNormalizer for EchoNormalizer {
///     fn normalize_line(&mut self, line: &str, _out: &mut Vec<ProviderEvent>) -> asm_core::Result<()> {
///         self.0.push_str(line);
///         Ok(())
///     }
///     fn outcome(&self, _exit: &ExitInfo) -> asm_core::Result<ExecuteOutcome> {
///         Ok(ExecuteOutcome::text(self.0.clone()))
///     }
/// }
///
/// impl CliProtocol for Echo {
///     type Normalizer = EchoNormalizer;
///     const PROVIDER: ProviderName = ProviderName::custom("echo");
///     const PROGRAM: &'static str = "echo";
///     const AUTH_ENV: &'static [&'static str] = &[];
///     const RUN_OPTIONS: &'static [RunOption] = &[RunOption::Cwd];
///     const PERMISSION_MODES: &'static [PermissionMode] = &[PermissionMode::Default];
///     const CAPABILITIES: &'static [(&'static str, CapabilityType)] = &[("streaming", CapabilityType::Sampling)];
///     fn argv(options: &CliOptions<Self>, request: &ExecuteRequest) -> Vec<String> {
///         let mut argv = options.extra_args.clone();
///         argv.push(render_prompt(request));
///         argv
///     }
///     fn normalizer(_: &CliOptions<Self>, _: &ExecuteRequest) -> EchoNormalizer {
///         EchoNormalizer::default()
///     }
/// }
///
/// let adapter = CliAdapter::<Echo>::builder().extra_args(["-n"]).build();
/// assert!(adapter.options().validate().is_ok());
/// let err = CliAdapter::<Echo>::builder().model("m").build().options().validate().unwrap_err();
/// assert_eq!(err.details()["reason"], "unsupported_option");
/// ```
pub trait CliProtocol: Clone + std::fmt::Debug + Default + Send + Sync + 'static {
    /// The normalizer of one run.
    type Normalizer: CliNormalizer;
    /// Which provider this is (errors and events are attributed to it; its
    /// [`as_str`](ProviderName::as_str) is the adapter's name).
    const PROVIDER: ProviderName;
    /// The CLI's program name, looked up in the child's PATH by default.
    const PROGRAM: &'static str;
    /// The environment variables the CLI reads credentials from; inherited from this process
    /// unless [`CliEnv::pass_auth`] is off. They are never logged.
    const AUTH_ENV: &'static [&'static str];
    /// The per-run options ([`RunOption`]) this provider honours; any other one set is a
    /// [`ErrorCode::ValidationError`].
    const RUN_OPTIONS: &'static [RunOption];
    /// The permission modes this provider honours.
    const PERMISSION_MODES: &'static [PermissionMode];
    /// The capabilities advertised for negotiation.
    const CAPABILITIES: &'static [(&'static str, CapabilityType)];
    /// Whether a run can resume a provider session natively from
    /// [`ExecuteRequest::resume`] (else the transcript is replayed).
    const NATIVE_RESUME: bool = false;
    /// Whether a run can branch a new provider session off another's handle
    /// ([`ExecuteRequest::fork`]); a fork request to a provider that cannot is refused.
    const NATIVE_FORK: bool = false;

    /// The argv (without the program) for one run: the one place it is built.
    fn argv(options: &CliOptions<Self>, request: &ExecuteRequest) -> Vec<String>;

    /// The environment for one run, before the credential pass-through
    /// ([`CliOptions::child_env`]): by default [`CliOptions::env`] as it is.
    fn env(options: &CliOptions<Self>) -> CliEnv {
        options.env.clone()
    }

    /// Bytes written to the CLI's stdin (then closed); `None` (the default) means `/dev/null`.
    fn stdin(options: &CliOptions<Self>, request: &ExecuteRequest) -> Option<Vec<u8>> {
        let _ = (options, request);
        None
    }

    /// The provider's own configuration rules, checked after the common ones by
    /// [`CliOptions::validate`] (default: none).
    ///
    /// # Errors
    /// A typed error saying what is wrong.
    fn validate(options: &CliOptions<Self>) -> Result<()> {
        let _ = options;
        Ok(())
    }

    /// A fresh normalizer for one run.
    fn normalizer(options: &CliOptions<Self>, request: &ExecuteRequest) -> Self::Normalizer;

    /// The stdin conversation of this run (a control protocol, see [`run_jsonl_dialog`]), or
    /// `None` (the default): the run is one-shot ([`stdin`](Self::stdin) then EOF). When
    /// `Some`, [`stdin`](Self::stdin) must return `None` (the dialog writes instead).
    fn dialog(options: &CliOptions<Self>, request: &ExecuteRequest) -> Option<Box<dyn StdinDialog>> {
        let _ = (options, request);
        None
    }
}

/// Turns one run's stdout lines into normalized events, then the process's end into the run's
/// outcome or a typed error.
pub trait CliNormalizer: Send {
    /// Normalizes one non-blank stdout line, appending its events to `out`. Lines it does not
    /// understand become raw events ([`raw_event`](crate::raw_event)).
    ///
    /// # Errors
    /// A line that means the run cannot go on (the process is then stopped).
    fn normalize_line(&mut self, line: &str, out: &mut Vec<ProviderEvent>) -> Result<()>;

    /// The outcome of the run from everything read and the exit.
    ///
    /// # Errors
    /// The typed provider error of a failed run.
    fn outcome(&self, exit: &ExitInfo) -> Result<ExecuteOutcome>;

    /// The provider session id seen so far (recorded on the run's tracing span).
    fn provider_session_id(&self) -> Option<&str> {
        None
    }
}

/// A [`ProviderAdapter`] that runs a provider CLI as a subprocess per run, as its
/// [`CliProtocol`] says. Each provider crate names it: `ClaudeAdapter = CliAdapter<ClaudeCli>`,
/// and so on.
///
/// One run: the per-run options are applied and validated ([`CliOptions::for_run`]; nothing
/// is spawned when they are wrong), the command is built ([`CliOptions::command`]), the CLI is
/// run by [`run_jsonl`] (no shell, own process group, cancellation escalation, reaping, drop
/// guard) with every line through the protocol's normalizer, and the verdict is settled with
/// the framing of the output ([`ExitInfo::settle`]). Lifecycle events are never emitted.
#[derive(Clone, Debug)]
pub struct CliAdapter<P: CliProtocol> {
    options: CliOptions<P>,
}

impl<P: CliProtocol> CliAdapter<P> {
    /// A builder with default options.
    pub fn builder() -> CliAdapterBuilder<P> {
        CliAdapterBuilder { options: CliOptions::default() }
    }

    /// An adapter with these options.
    pub fn new(options: CliOptions<P>) -> Self {
        Self { options }
    }

    /// The options.
    pub fn options(&self) -> &CliOptions<P> {
        &self.options
    }

    /// The command for one run of `request`, per-run options applied.
    ///
    /// # Errors
    /// As [`CliOptions::for_run`].
    pub fn command(&self, request: &ExecuteRequest) -> Result<CliCommand> {
        Ok(self.options.for_run(&request.options)?.command(request))
    }
}

/// The error for a fork request to a provider that cannot fork: resuming the parent's session
/// instead would change it.
fn fork_unsupported(provider: ProviderName) -> Error {
    Error::new(
        ErrorCode::InvalidOperation,
        format!("{provider} cannot fork a provider session; continue the forked session by replay"),
    )
    .with_detail("reason", "native_fork_unsupported")
}

#[async_trait]
impl<P: CliProtocol> ProviderAdapter for CliAdapter<P> {
    fn name(&self) -> &str {
        P::PROVIDER.as_str()
    }

    fn capabilities(&self) -> Vec<Capability> {
        Capability::list(P::CAPABILITIES)
    }

    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let span = tracing::info_span!(
            "cli_execute",
            provider = P::PROVIDER.as_str(),
            run_id = %request.run.id,
            resume = resume_handle(&request).is_some(),
            fork = request.fork,
            provider_session_id = tracing::field::Empty,
        );
        async {
            if request.fork && !P::NATIVE_FORK && resume_handle(&request).is_some() {
                return Err(fork_unsupported(P::PROVIDER));
            }
            let options = self.options.for_run(&request.options)?;
            let cmd = options.command(&request);
            let control = RunControl::from_request(&request, options.timeout);
            let mut normalizer = P::normalizer(&options, &request);
            let on_line = |line: &str, out: &mut Vec<ProviderEvent>| normalizer.normalize_line(line, out);
            let exit = match P::dialog(&options, &request) {
                Some(mut dialog) => run_jsonl_dialog(&cmd, &control, &sink, dialog.as_mut(), on_line).await?,
                None => run_jsonl(&cmd, &control, &sink, on_line).await?,
            };
            if let Some(id) = normalizer.provider_session_id() {
                tracing::Span::current().record("provider_session_id", id);
            }
            // An oversized line never hides the provider's own error (see `ExitInfo::settle`).
            exit.settle(P::PROVIDER, options.stderr_limits, normalizer.outcome(&exit))
        }
        .instrument(span)
        .await
    }

    /// The CLI can be found ([`CliCommand::resolve_program`] with the child's PATH) and the
    /// options are valid ([`CliOptions::validate`]).
    fn validate_config(&self) -> Result<()> {
        CliCommand::new(P::PROVIDER, self.options.cli_path.clone()).env(self.options.child_env()).resolve_program()?;
        self.options.validate()
    }

    fn supports_native_resume(&self) -> bool {
        P::NATIVE_RESUME
    }

    fn supports_native_fork(&self) -> bool {
        P::NATIVE_FORK
    }
}

/// Builds a [`CliAdapter`]. The common setters are here; each provider crate adds its own
/// through an extension trait (`ClaudeBuilderExt`, `CodexBuilderExt`, `AmpBuilderExt`) on top
/// of [`provider`](Self::provider).
#[derive(Clone, Debug)]
pub struct CliAdapterBuilder<P: CliProtocol> {
    options: CliOptions<P>,
}

impl<P: CliProtocol> CliAdapterBuilder<P> {
    /// The CLI path or PATH name.
    #[must_use]
    pub fn cli_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.cli_path = path.into();
        self
    }
    /// The model ([`RunOption::Model`]).
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.options.model = Some(model.into());
        self
    }
    /// The most agent turns of a run ([`RunOption::MaxTurns`]).
    #[must_use]
    pub fn max_turns(mut self, turns: u32) -> Self {
        self.options.max_turns = Some(turns);
        self
    }
    /// The permission mode ([`RunOption::PermissionMode`]).
    #[must_use]
    pub fn permission_mode(mut self, mode: PermissionMode) -> Self {
        self.options.permission_mode = mode;
        self
    }
    /// Tools allowed without asking ([`RunOption::AllowedTools`]).
    #[must_use]
    pub fn allowed_tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tools: I) -> Self {
        self.options.allowed_tools = tools.into_iter().map(Into::into).collect();
        self
    }
    /// Tools not allowed ([`RunOption::DisallowedTools`]).
    #[must_use]
    pub fn disallowed_tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tools: I) -> Self {
        self.options.disallowed_tools = tools.into_iter().map(Into::into).collect();
        self
    }
    /// The system prompt ([`RunOption::SystemPrompt`]).
    #[must_use]
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.options.system_prompt = Some(prompt.into());
        self
    }
    /// Working directory ([`RunOption::Cwd`]).
    #[must_use]
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.options.cwd = Some(cwd.into());
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
    /// Changes the provider's own options (what the provider crates' builder extensions use).
    #[must_use]
    pub fn provider(mut self, f: impl FnOnce(&mut P)) -> Self {
        f(&mut self.options.provider);
        self
    }
    /// The options so far.
    pub fn options(&self) -> &CliOptions<P> {
        &self.options
    }
    /// The adapter. Nothing is checked here: see
    /// [`validate_config`](ProviderAdapter::validate_config).
    pub fn build(self) -> CliAdapter<P> {
        CliAdapter::new(self.options)
    }
}
