//! The options every CLI adapter has ([`CliOptions`]), the per-run option keys
//! ([`RunOption`]) and the provider-neutral [`PermissionMode`].

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use asm_core::{Error, ErrorCode, JsonMap, StderrLimits};
use asm_ports::ExecuteRequest;

use crate::adapter::CliProtocol;
use crate::command::{CliCommand, CliEnv, CliLimits};

/// Permission modes (spec 9.6). Each provider crate maps them to its own flags and says which
/// it supports ([`CliProtocol::PERMISSION_MODES`]); a mode a provider cannot honour is a
/// [`ErrorCode::ValidationError`], never silently dropped.
///
/// ```
/// use asm_provider_cli::PermissionMode;
/// let mode = PermissionMode::parse("full_auto").unwrap();
/// assert_eq!(mode, PermissionMode::FullAuto);
/// assert_eq!(mode.as_str(), "full_auto");
/// assert!(PermissionMode::parse("yolo").is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PermissionMode {
    /// The provider's default (nothing passed).
    #[default]
    Default,
    /// Accept file edits without asking.
    AcceptEdits,
    /// Plan only: look, change nothing.
    Plan,
    /// Run without approvals.
    FullAuto,
    /// Skip every permission check (and sandbox, where the CLI has one).
    DangerouslySkipPermissions,
}

asm_core::string_enum! {
    /// The snake_case name.
    PermissionMode {
        Default => "default",
        AcceptEdits => "accept_edits",
        Plan => "plan",
        FullAuto => "full_auto",
        DangerouslySkipPermissions => "dangerously_skip_permissions",
    }
    /// Every mode.
    pub const ALL;
    /// Parses the snake_case name (`default`, `accept_edits`, `plan`, `full_auto`,
    /// `dangerously_skip_permissions`).
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for anything else.
    pub fn parse(text) -> Result<Self, Error> {
        Err(Error::new(ErrorCode::ValidationError, format!("unknown permission mode {text:?}")))
    }
}

/// The per-run options every CLI adapter reads from
/// [`ExecuteRequest::options`](asm_ports::ExecuteRequest::options) (what
/// `RunOptions::adapter_option` / `RunOptions::adapter_option` of the runtime set). One list
/// for all adapters, validated in one place ([`CliOptions::for_run`]):
///
/// | key | JSON value | overrides |
/// |---|---|---|
/// | `model` | non-empty string | [`CliOptions::model`] |
/// | `max_turns` | integer ≥ 1 | [`CliOptions::max_turns`] |
/// | `permission_mode` | a [`PermissionMode`] name | [`CliOptions::permission_mode`] |
/// | `allowed_tools` | array of strings (or one string) | [`CliOptions::allowed_tools`] (replaced) |
/// | `disallowed_tools` | array of strings (or one string) | [`CliOptions::disallowed_tools`] (replaced) |
/// | `system_prompt` | string | [`CliOptions::system_prompt`] |
/// | `cwd` | path of a directory | [`CliOptions::cwd`] |
///
/// `null` leaves the adapter's own value. An unknown key, a value of the wrong type, and a key
/// the provider cannot honour (see [`CliProtocol::RUN_OPTIONS`]; each provider crate documents
/// its mapping) are [`ErrorCode::ValidationError`] with `details.option` and `details.reason`
/// (`unknown_option`, `invalid_option`, `unsupported_option`), before any process is started.
///
/// ```
/// use asm_provider_cli::RunOption;
/// assert_eq!(RunOption::Model.key(), "model");
/// assert_eq!(RunOption::from_key("max_turns"), Some(RunOption::MaxTurns));
/// assert_eq!(RunOption::from_key("temperature"), None);
/// assert_eq!(asm_provider_cli::run_option::SYSTEM_PROMPT, "system_prompt");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunOption {
    /// `model`.
    Model,
    /// `max_turns`.
    MaxTurns,
    /// `permission_mode`.
    PermissionMode,
    /// `allowed_tools`.
    AllowedTools,
    /// `disallowed_tools`.
    DisallowedTools,
    /// `system_prompt`.
    SystemPrompt,
    /// `cwd`.
    Cwd,
}

asm_core::string_enum! {
    /// The key in [`ExecuteRequest::options`](asm_ports::ExecuteRequest::options).
    RunOption::key {
        Model => "model",
        MaxTurns => "max_turns",
        PermissionMode => "permission_mode",
        AllowedTools => "allowed_tools",
        DisallowedTools => "disallowed_tools",
        SystemPrompt => "system_prompt",
        Cwd => "cwd",
    }
    /// Every key, in the order of the table above.
    pub const ALL;
    /// The option named `key`, if it is one.
    pub fn from_key(key) -> Option<Self>;
}

/// The keys of [`RunOption`] as string constants, for `adapter_option(run_option::MODEL, ..)`.
pub mod run_option {
    use super::RunOption;
    /// `model`.
    pub const MODEL: &str = RunOption::Model.key();
    /// `max_turns`.
    pub const MAX_TURNS: &str = RunOption::MaxTurns.key();
    /// `permission_mode`.
    pub const PERMISSION_MODE: &str = RunOption::PermissionMode.key();
    /// `allowed_tools`.
    pub const ALLOWED_TOOLS: &str = RunOption::AllowedTools.key();
    /// `disallowed_tools`.
    pub const DISALLOWED_TOOLS: &str = RunOption::DisallowedTools.key();
    /// `system_prompt`.
    pub const SYSTEM_PROMPT: &str = RunOption::SystemPrompt.key();
    /// `cwd`.
    pub const CWD: &str = RunOption::Cwd.key();
}

/// The configuration of a [`CliAdapter`](crate::CliAdapter): what every CLI adapter has, plus
/// the provider's own options in [`provider`](Self::provider).
///
/// The fields from [`model`](Self::model) to [`cwd`](Self::cwd) are the per-run options
/// ([`RunOption`]): set here they are the adapter's defaults, and a run can override them.
///
/// See [`CliProtocol`] for a complete example; the provider crates name it `ClaudeOptions`,
/// `CodexOptions` and `AmpOptions`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CliOptions<P> {
    /// The CLI: a path, or a name looked up in the child's PATH (default
    /// [`CliProtocol::PROGRAM`]).
    pub cli_path: PathBuf,
    /// The model ([`RunOption::Model`]).
    pub model: Option<String>,
    /// The most agent turns of one run ([`RunOption::MaxTurns`]).
    pub max_turns: Option<u32>,
    /// The permission mode ([`RunOption::PermissionMode`]).
    pub permission_mode: PermissionMode,
    /// Tools the agent may use without asking ([`RunOption::AllowedTools`]).
    pub allowed_tools: Vec<String>,
    /// Tools the agent may not use ([`RunOption::DisallowedTools`]).
    pub disallowed_tools: Vec<String>,
    /// The system prompt ([`RunOption::SystemPrompt`]).
    pub system_prompt: Option<String>,
    /// Working directory of the CLI ([`RunOption::Cwd`]; default: inherited).
    pub cwd: Option<PathBuf>,
    /// Extra arguments, placed where the provider's argv says (see its `build_argv`).
    pub extra_args: Vec<String>,
    /// The child's environment (default [`CliEnv::minimal`], which passes the provider's
    /// credential variables through).
    pub env: CliEnv,
    /// Per-run time limit (combined with the request deadline: the earlier wins).
    pub timeout: Option<Duration>,
    /// Subprocess limits.
    pub limits: CliLimits,
    /// Bounds of stderr stored in errors.
    pub stderr_limits: StderrLimits,
    /// The provider's own options (flags only that CLI has).
    pub provider: P,
}

impl<P: CliProtocol> Default for CliOptions<P> {
    fn default() -> Self {
        Self {
            cli_path: PathBuf::from(P::PROGRAM),
            model: None,
            max_turns: None,
            permission_mode: PermissionMode::Default,
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            system_prompt: None,
            cwd: None,
            extra_args: Vec::new(),
            env: CliEnv::minimal(),
            timeout: None,
            limits: CliLimits::default(),
            stderr_limits: StderrLimits::default(),
            provider: P::default(),
        }
    }
}

/// A [`ErrorCode::ValidationError`] about run option `option`.
fn option_error(option: &str, reason: &str, message: String) -> Error {
    Error::new(ErrorCode::ValidationError, message).with_detail("option", option).with_detail("reason", reason)
}

fn string_of(option: RunOption, value: &Value) -> asm_core::Result<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() || option == RunOption::SystemPrompt => Ok(s.clone()),
        other => Err(option_error(
            option.key(),
            "invalid_option",
            format!("run option {option} must be a non-empty string, got {other}"),
        )),
    }
}

fn list_of(option: RunOption, value: &Value) -> asm_core::Result<Vec<String>> {
    let invalid =
        || option_error(option.key(), "invalid_option", format!("run option {option} must be a list of tool names"));
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().filter(|s| !s.trim().is_empty()).map(str::to_owned).ok_or_else(invalid))
            .collect(),
        _ => Err(invalid()),
    }
}

impl<P: CliProtocol> CliOptions<P> {
    /// Which per-run options are set to something other than their default.
    fn set_options(&self) -> impl Iterator<Item = RunOption> + '_ {
        RunOption::ALL.iter().copied().filter(move |o| match o {
            RunOption::Model => self.model.is_some(),
            RunOption::MaxTurns => self.max_turns.is_some(),
            RunOption::PermissionMode => self.permission_mode != PermissionMode::Default,
            RunOption::AllowedTools => !self.allowed_tools.is_empty(),
            RunOption::DisallowedTools => !self.disallowed_tools.is_empty(),
            RunOption::SystemPrompt => self.system_prompt.is_some(),
            RunOption::Cwd => self.cwd.is_some(),
        })
    }

    /// Checks what can be checked without running anything: every option set is one the
    /// provider honours ([`CliProtocol::RUN_OPTIONS`], [`CliProtocol::PERMISSION_MODES`]),
    /// `max_turns` is at least 1, the cwd is a directory, then the provider's own rules
    /// ([`CliProtocol::validate`]).
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] (`details.option` and `details.reason =
    /// "unsupported_option" | "invalid_option"` for the per-run options), or the provider's own
    /// error.
    pub fn validate(&self) -> asm_core::Result<()> {
        let provider = P::PROVIDER.as_str();
        if let Some(option) = self.set_options().find(|o| !P::RUN_OPTIONS.contains(o)) {
            return Err(option_error(
                option.key(),
                "unsupported_option",
                format!("{provider} cannot honour the option {option}"),
            )
            .with_detail("provider", provider)
            .with_detail("supported", P::RUN_OPTIONS.iter().map(|o| o.key()).collect::<Vec<_>>()));
        }
        if !P::PERMISSION_MODES.contains(&self.permission_mode) {
            return Err(option_error(
                RunOption::PermissionMode.key(),
                "unsupported_option",
                format!(
                    "{provider} does not support permission mode {}; supported: {}",
                    self.permission_mode,
                    P::PERMISSION_MODES.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )
            .with_detail("provider", provider));
        }
        if self.max_turns == Some(0) {
            return Err(option_error(
                RunOption::MaxTurns.key(),
                "invalid_option",
                "max_turns must be at least 1".into(),
            ));
        }
        if let Some(cwd) = &self.cwd
            && !cwd.is_dir()
        {
            return Err(option_error(
                RunOption::Cwd.key(),
                "invalid_option",
                format!("{provider} cwd {} is not a directory", cwd.display()),
            ));
        }
        P::validate(self)
    }

    /// These options with the per-run `overrides` (an [`ExecuteRequest::options`] map, keys of
    /// [`RunOption`]) applied, then [validated](Self::validate). Borrowed when there is nothing
    /// to apply.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`]: an unknown key (`details.reason = "unknown_option"`), a
    /// value of the wrong type (`"invalid_option"`), an option the provider cannot honour
    /// (`"unsupported_option"`), or any other failure of [`validate`](Self::validate).
    pub fn for_run(&self, overrides: &JsonMap) -> asm_core::Result<Cow<'_, Self>> {
        if let Some(key) = overrides.keys().find(|k| RunOption::from_key(k).is_none()) {
            return Err(option_error(key, "unknown_option", format!("unknown run option {key:?}"))
                .with_detail("known", RunOption::ALL.iter().map(|o| o.key()).collect::<Vec<_>>()));
        }
        let mut options = Cow::Borrowed(self);
        for (key, value) in overrides.iter().filter(|(_, v)| !v.is_null()) {
            let Some(option) = RunOption::from_key(key) else { continue };
            let o = options.to_mut();
            match option {
                RunOption::Model => o.model = Some(string_of(option, value)?),
                RunOption::MaxTurns => {
                    let turns = value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
                    o.max_turns = Some(turns.ok_or_else(|| {
                        option_error(
                            key,
                            "invalid_option",
                            format!("run option max_turns must be a positive integer, got {value}"),
                        )
                    })?);
                }
                RunOption::PermissionMode => {
                    let text = string_of(option, value)?;
                    o.permission_mode = PermissionMode::parse(&text)
                        .map_err(|e| option_error(key, "invalid_option", e.message().to_owned()))?;
                }
                RunOption::AllowedTools => o.allowed_tools = list_of(option, value)?,
                RunOption::DisallowedTools => o.disallowed_tools = list_of(option, value)?,
                RunOption::SystemPrompt => o.system_prompt = Some(string_of(option, value)?),
                RunOption::Cwd => o.cwd = Some(PathBuf::from(string_of(option, value)?)),
            }
        }
        options.validate()?;
        Ok(options)
    }

    /// The environment the child gets: the provider's ([`CliProtocol::env`]) with its
    /// credential variables ([`CliProtocol::AUTH_ENV`]) passed through when
    /// [`CliEnv::pass_auth`] is on.
    pub fn child_env(&self) -> CliEnv {
        P::env(self).with_auth_vars(P::AUTH_ENV)
    }

    /// The command for one run of `request` with exactly these options (per-run options
    /// already applied, see [`for_run`](Self::for_run)): program, argv
    /// ([`CliProtocol::argv`]), environment ([`child_env`](Self::child_env)), working directory,
    /// stdin ([`CliProtocol::stdin`]) and limits.
    pub fn command(&self, request: &ExecuteRequest) -> CliCommand {
        let mut cmd = CliCommand::new(P::PROVIDER, self.cli_path.clone())
            .args(P::argv(self, request))
            .env(self.child_env())
            .limits(self.limits);
        if let Some(cwd) = &self.cwd {
            cmd = cmd.cwd(cwd.clone());
        }
        if let Some(stdin) = P::stdin(self, request) {
            cmd = cmd.stdin_input(stdin);
        }
        cmd
    }
}
