//! [`CodexCli`] (Codex's own options), the sandbox / approval enums and [`build_argv`].

use asm_core::{Error, ErrorCode};
use asm_ports::ExecuteRequest;
use asm_provider_cli::{PermissionMode, prompt_arg, render_prompt, resume_handle};

use crate::CodexOptions;

/// Arguments that stop Codex from calling other hosts (plugin sync and analytics;
/// `spec/provider-clis.md` section 2: with both there were zero non-local connections).
pub const OFFLINE_ARGS: &[&str] = &["--disable", "plugins", "-c", "analytics.enabled=false"];

/// Arguments that keep Codex from retrying an unreachable server forever.
pub const BOUNDED_RETRY_ARGS: &[&str] = &["--disable", "unbounded_connection_retries"];

/// The variables Codex reads an API key from: passed through from this process by default
/// ([`CliEnv::pass_auth`](asm_provider_cli::CliEnv::pass_auth)). A custom model provider's
/// `env_key` (in `config.toml`) is not known here: set it explicitly, or
/// [`inherit`](asm_provider_cli::CliEnv::inherit) it.
pub const AUTH_ENV: &[&str] = &["OPENAI_API_KEY", "CODEX_API_KEY"];

/// Subcommand names of `codex exec`; a prompt equal to one of them would be taken for it.
const SUBCOMMANDS: &[&str] = &["resume", "fork", "review", "help"];

/// `codex exec -s/--sandbox` values.
///
/// ```
/// use asm_provider_codex::SandboxMode;
/// assert_eq!(SandboxMode::WorkspaceWrite.as_str(), "workspace-write");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SandboxMode {
    /// `read-only`: commands may read, not write.
    ReadOnly,
    /// `workspace-write`: writes inside the working directory (and temp dirs).
    WorkspaceWrite,
    /// `danger-full-access`: no sandbox.
    DangerFullAccess,
}

asm_core::string_enum! {
    /// The CLI value.
    SandboxMode {
        ReadOnly => "read-only",
        WorkspaceWrite => "workspace-write",
        DangerFullAccess => "danger-full-access",
    }
}

/// Codex `approval_policy` values. `codex exec` has no approval flag of its own; the policy is
/// passed as the config override `-c approval_policy="<value>"` (the captured runs set
/// `approval_policy = "never"` in `config.toml`, which is the same key).
///
/// ```
/// use asm_provider_codex::ApprovalPolicy;
/// assert_eq!(ApprovalPolicy::Never.config_override(), r#"approval_policy="never""#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApprovalPolicy {
    /// `untrusted`: ask before anything but trusted read-only commands.
    Untrusted,
    /// `on-failure`: ask when a sandboxed command fails.
    OnFailure,
    /// `on-request`: the model decides when to ask.
    OnRequest,
    /// `never`: never ask (what a non-interactive run needs).
    Never,
}

asm_core::string_enum! {
    /// The config value.
    ApprovalPolicy {
        Untrusted => "untrusted",
        OnFailure => "on-failure",
        OnRequest => "on-request",
        Never => "never",
    }
}

impl ApprovalPolicy {
    /// The `-c` argument value: `approval_policy="<value>"`.
    pub fn config_override(self) -> String {
        format!("approval_policy=\"{}\"", self.as_str())
    }
}

/// The `codex exec` arguments of a permission mode (spec 9.6 and note 12 item 30: Codex supports
/// `default`, `plan` and `dangerously_skip_permissions` only).
///
/// | mode | arguments |
/// |---|---|
/// | `default` | none (the configured sandbox / approval policy apply) |
/// | `plan` | `-s read-only` (commands may look, not change anything) |
/// | `dangerously_skip_permissions` | `--dangerously-bypass-approvals-and-sandbox` |
/// | `accept_edits`, `full_auto` | unsupported: `None` (validation rejects them) |
///
/// ```
/// use asm_provider_codex::{PermissionMode, permission_args};
/// assert_eq!(permission_args(PermissionMode::Plan), Some(&["-s", "read-only"][..]));
/// assert_eq!(permission_args(PermissionMode::FullAuto), None);
/// ```
pub fn permission_args(mode: PermissionMode) -> Option<&'static [&'static str]> {
    match mode {
        PermissionMode::Default => Some(&[]),
        PermissionMode::Plan => Some(&["-s", "read-only"]),
        PermissionMode::DangerouslySkipPermissions => Some(&["--dangerously-bypass-approvals-and-sandbox"]),
        _ => None,
    }
}

/// Codex's own options: [`CodexOptions::provider`](asm_provider_cli::CliOptions::provider),
/// set with [`CodexBuilderExt`](crate::CodexBuilderExt).
///
/// ```
/// use asm_provider_codex::{ApprovalPolicy, CodexAdapter, CodexBuilderExt, SandboxMode};
/// let adapter = CodexAdapter::builder()
///     .model("gpt-5.5")
///     .sandbox(SandboxMode::WorkspaceWrite)
///     .approval_policy(ApprovalPolicy::Never)
///     .config("model_reasoning_effort", "\"low\"")
///     .build();
/// assert_eq!(adapter.options().model.as_deref(), Some("gpt-5.5"));
/// assert!(adapter.options().provider.offline);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CodexCli {
    /// `-s/--sandbox` (ignored when the permission mode sets its own: plan, bypass).
    pub sandbox: Option<SandboxMode>,
    /// `-c approval_policy="..."` (ignored under `dangerously_skip_permissions`).
    pub approval_policy: Option<ApprovalPolicy>,
    /// `--skip-git-repo-check` (default true: runs usually happen outside a git repository).
    pub skip_git_repo_check: bool,
    /// Config overrides, one `-c key=value` each (the value is TOML, e.g. `"\"low\""`).
    pub config: Vec<(String, String)>,
    /// Add [`OFFLINE_ARGS`] (`--disable plugins -c analytics.enabled=false`; default true).
    pub offline: bool,
    /// Add [`BOUNDED_RETRY_ARGS`] (`--disable unbounded_connection_retries`; default true:
    /// without it an unreachable server makes Codex retry forever).
    pub bounded_retries: bool,
}

impl Default for CodexCli {
    fn default() -> Self {
        Self {
            sandbox: None,
            approval_policy: None,
            skip_git_repo_check: true,
            config: Vec::new(),
            offline: true,
            bounded_retries: true,
        }
    }
}

/// Codex's own configuration rules: config override keys are non-empty and contain no `=`.
pub(crate) fn validate(options: &CodexOptions) -> asm_core::Result<()> {
    if let Some((key, _)) = options.provider.config.iter().find(|(k, _)| k.trim().is_empty() || k.contains('=')) {
        return Err(Error::new(ErrorCode::ValidationError, format!("invalid codex config key {key:?}")));
    }
    Ok(())
}

/// A string as a TOML basic string (JSON string escapes are valid TOML ones).
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The argv (without the program) for one run:
///
/// `exec --json [--skip-git-repo-check] [-m MODEL] [permission / -s S]
/// [-c approval_policy="P"] [-c developer_instructions="SYSTEM PROMPT"]
/// [--disable plugins -c analytics.enabled=false] [--disable unbounded_connection_retries]
/// [-c key=value ...] [extra args ...] [resume <thread_id> | fork <thread_id>] <prompt>`
///
/// The options are the run's (per-run options already applied, see
/// [`CliOptions::for_run`](asm_provider_cli::CliOptions::for_run)). The new-run order is that
/// of the captured runs (`codex_text.cmd`). For a resume every option stays in front of
/// `resume`: `--json`, `-m`, `--skip-git-repo-check` and the bypass flag are global (the
/// captured resume put them after `resume`), but `-s/--sandbox` is an option of `exec` only, so
/// in front of the subcommand is the one position where all of them parse. Without a resume
/// handle ([`resume_handle`]) a transcript is replayed into the prompt ([`render_prompt`]).
///
/// The system prompt goes to Codex's `developer_instructions` (a developer message after
/// Codex's own base instructions, which stay).
///
/// A fork request ([`ExecuteRequest::fork`]) uses `exec fork <thread_id>` (Codex 0.169: "Fork a
/// previous session by id into a new session"; it takes the same options as `resume`): the
/// thread's history continues in a **new** thread, reported by `thread.started`, and the given
/// thread stays as it was.
///
/// ```
/// use asm_core::{Run, RunInput, Session};
/// use asm_ports::ExecuteRequest;
/// use asm_provider_codex::{CodexOptions, build_argv};
/// let session = Session::new("agent").unwrap();
/// let run = Run::new(session.id.clone(), RunInput::user("hello"));
/// let request = ExecuteRequest::new(session, run);
/// let argv = build_argv(&CodexOptions::default(), &request);
/// assert_eq!(
///     argv,
///     ["exec", "--json", "--skip-git-repo-check", "--disable", "plugins", "-c", "analytics.enabled=false",
///      "--disable", "unbounded_connection_retries", "hello"]
/// );
/// let argv = build_argv(&CodexOptions::default(), &request.clone().resume("0190-thread"));
/// assert_eq!(argv[argv.len() - 3..], ["resume", "0190-thread", "hello"]);
/// let argv = build_argv(&CodexOptions::default(), &request.fork_from("0190-thread"));
/// assert_eq!(argv[argv.len() - 3..], ["fork", "0190-thread", "hello"]);
/// ```
pub fn build_argv(options: &CodexOptions, request: &ExecuteRequest) -> Vec<String> {
    let codex = &options.provider;
    let mut argv: Vec<String> = vec!["exec".into(), "--json".into()];
    if codex.skip_git_repo_check {
        argv.push("--skip-git-repo-check".into());
    }
    if let Some(model) = &options.model {
        argv.push("-m".into());
        argv.push(model.clone());
    }
    let mode = options.permission_mode;
    match permission_args(mode) {
        Some(args) if !args.is_empty() => argv.extend(args.iter().map(|a| (*a).to_owned())),
        _ => {
            if let Some(sandbox) = codex.sandbox {
                argv.push("-s".into());
                argv.push(sandbox.as_str().into());
            }
        }
    }
    if mode != PermissionMode::DangerouslySkipPermissions
        && let Some(policy) = codex.approval_policy
    {
        argv.push("-c".into());
        argv.push(policy.config_override());
    }
    if let Some(prompt) = &options.system_prompt {
        argv.push("-c".into());
        argv.push(format!("developer_instructions={}", toml_string(prompt)));
    }
    if codex.offline {
        argv.extend(OFFLINE_ARGS.iter().map(|a| (*a).to_owned()));
    }
    if codex.bounded_retries {
        argv.extend(BOUNDED_RETRY_ARGS.iter().map(|a| (*a).to_owned()));
    }
    for (key, value) in &codex.config {
        argv.push("-c".into());
        argv.push(format!("{key}={value}"));
    }
    argv.extend(options.extra_args.iter().cloned());
    if let Some(thread_id) = resume_handle(request) {
        argv.push(if request.fork { "fork" } else { "resume" }.into());
        argv.push(thread_id.to_owned());
    }
    argv.push(prompt_arg(render_prompt(request), SUBCOMMANDS));
    argv
}
