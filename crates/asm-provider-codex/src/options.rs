//! [`CodexOptions`], the sandbox / approval enums, [`build_argv`] and [`render_prompt`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use asm_core::{Error, ErrorCode, Role, StderrLimits, Transcript};
use asm_ports::ExecuteRequest;
use asm_provider_cli::{CODEX_BOUNDED_RETRY_ARGS, CliEnv, CliLimits, OfflineSwitches, PermissionMode};

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

impl SandboxMode {
    /// The CLI value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read-only",
            Self::WorkspaceWrite => "workspace-write",
            Self::DangerFullAccess => "danger-full-access",
        }
    }
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

impl ApprovalPolicy {
    /// The config value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Untrusted => "untrusted",
            Self::OnFailure => "on-failure",
            Self::OnRequest => "on-request",
            Self::Never => "never",
        }
    }

    /// The `-c` argument value: `approval_policy="<value>"`.
    pub fn config_override(self) -> String {
        format!("approval_policy=\"{}\"", self.as_str())
    }
}

impl fmt::Display for ApprovalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
/// | `accept_edits`, `full_auto` | unsupported: `None` ([`CodexOptions::validate`] rejects them) |
///
/// ```
/// use asm_provider_cli::PermissionMode;
/// use asm_provider_codex::permission_args;
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

/// Configuration of a [`CodexAdapter`](crate::CodexAdapter).
///
/// ```
/// use asm_provider_codex::{ApprovalPolicy, CodexAdapter, SandboxMode};
/// let adapter = CodexAdapter::builder()
///     .model("gpt-5.5")
///     .sandbox(SandboxMode::WorkspaceWrite)
///     .approval_policy(ApprovalPolicy::Never)
///     .config("model_reasoning_effort", "\"low\"")
///     .build();
/// assert_eq!(adapter.options().model.as_deref(), Some("gpt-5.5"));
/// assert!(adapter.options().offline);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CodexOptions {
    /// The CLI: a path, or a name looked up in PATH (default `codex`).
    pub cli_path: PathBuf,
    /// `-m/--model`. Codex does not print the model, so this is also the outcome's model.
    pub model: Option<String>,
    /// Working directory of the CLI (default: inherited).
    pub cwd: Option<PathBuf>,
    /// `-s/--sandbox` (ignored when the permission mode sets its own: plan, bypass).
    pub sandbox: Option<SandboxMode>,
    /// `-c approval_policy="..."` (ignored under `dangerously_skip_permissions`).
    pub approval_policy: Option<ApprovalPolicy>,
    /// Permission mode ([`permission_args`]).
    pub permission_mode: PermissionMode,
    /// `--skip-git-repo-check` (default true: runs usually happen outside a git repository).
    pub skip_git_repo_check: bool,
    /// Config overrides, one `-c key=value` each (the value is TOML, e.g. `"\"low\""`).
    pub config: Vec<(String, String)>,
    /// Extra arguments, inserted after every generated option, before `resume` and the prompt.
    pub extra_args: Vec<String>,
    /// The child's environment (default [`CliEnv::minimal`]). Codex reads `CODEX_HOME` and the
    /// provider's API key variable from it.
    pub env: CliEnv,
    /// Add [`OfflineSwitches::Codex`] (`--disable plugins -c analytics.enabled=false`; default
    /// true).
    pub offline: bool,
    /// Add [`CODEX_BOUNDED_RETRY_ARGS`] (`--disable unbounded_connection_retries`; default true:
    /// without it an unreachable server makes Codex retry forever).
    pub bounded_retries: bool,
    /// Per-run time limit (combined with the request deadline: the earlier wins).
    pub timeout: Option<Duration>,
    /// Subprocess limits.
    pub limits: CliLimits,
    /// Bounds of stderr stored in errors.
    pub stderr_limits: StderrLimits,
}

impl Default for CodexOptions {
    fn default() -> Self {
        Self {
            cli_path: PathBuf::from("codex"),
            model: None,
            cwd: None,
            sandbox: None,
            approval_policy: None,
            permission_mode: PermissionMode::Default,
            skip_git_repo_check: true,
            config: Vec::new(),
            extra_args: Vec::new(),
            env: CliEnv::minimal(),
            offline: true,
            bounded_retries: true,
            timeout: None,
            limits: CliLimits::default(),
            stderr_limits: StderrLimits::default(),
        }
    }
}

impl CodexOptions {
    /// Checks what can be checked without running anything: the permission mode is one Codex
    /// supports, config keys are non-empty, the cwd is a directory.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`].
    pub fn validate(&self) -> asm_core::Result<()> {
        if permission_args(self.permission_mode).is_none() {
            return Err(Error::new(
                ErrorCode::ValidationError,
                format!(
                    "codex does not support permission mode {}; use default, plan or dangerously_skip_permissions",
                    self.permission_mode
                ),
            ));
        }
        if let Some((key, _)) = self.config.iter().find(|(k, _)| k.trim().is_empty() || k.contains('=')) {
            return Err(Error::new(ErrorCode::ValidationError, format!("invalid codex config key {key:?}")));
        }
        if let Some(cwd) = &self.cwd
            && !cwd.is_dir()
        {
            return Err(Error::new(
                ErrorCode::ValidationError,
                format!("codex cwd {} is not a directory", cwd.display()),
            ));
        }
        Ok(())
    }
}

/// The prompt given to the CLI for `request`.
///
/// With a native resume handle, or without a transcript: the user messages of the new input
/// joined by `\n` (spec 9.3; all messages when none is from the user). Otherwise the transcript
/// replayed (spec 9.1 with Codex's `assistant_tool_call(<id>): <name> <input>` for tool calls,
/// `tool_result(<id>): <name> <output>` for results, `<role>: <content>` for messages), a blank
/// line, then the new prompt.
///
/// ```
/// use asm_core::{Message, Role, Run, RunInput, Session, Transcript};
/// use asm_ports::ExecuteRequest;
/// use asm_provider_codex::render_prompt;
/// let session = Session::new("agent").unwrap();
/// let mut t = Transcript::new(session.id.clone());
/// t.messages.push(Message::new(Role::User, "hi"));
/// t.messages.push(Message::new(Role::Assistant, "hello"));
/// let run = Run::new(session.id.clone(), RunInput::user("again"));
/// let request = ExecuteRequest::new(session, run).transcript(t);
/// assert_eq!(render_prompt(&request), "user: hi\nassistant: hello\n\nagain");
/// assert_eq!(render_prompt(&request.resume("thread-1")), "again");
/// ```
pub fn render_prompt(request: &ExecuteRequest) -> String {
    let input = &request.run.input;
    let users: Vec<&str> = input.messages.iter().filter(|m| m.role == Role::User).map(|m| m.content.as_str()).collect();
    let current = if users.is_empty() {
        input.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")
    } else {
        users.join("\n")
    };
    let transcript = request.transcript.as_ref().filter(|t| !t.messages.is_empty());
    match (request.resume.as_ref(), transcript) {
        (None, Some(t)) => {
            let lines = render_transcript(t);
            if lines.is_empty() { current } else { format!("{}\n\n{current}", lines.join("\n")) }
        }
        _ => current,
    }
}

fn render_transcript(t: &Transcript) -> Vec<String> {
    t.messages
        .iter()
        .filter_map(|m| {
            let id = m.tool_call_id.as_deref().unwrap_or("unknown");
            let name = m.tool_name.as_deref().unwrap_or("unknown");
            if m.role == Role::Assistant && m.tool_name.is_some() && m.content.as_deref().is_none_or(str::is_empty) {
                let input = m
                    .tool_input
                    .as_ref()
                    .map_or_else(|| "{}".to_owned(), |i| serde_json::Value::Object(i.clone()).to_string());
                Some(format!("assistant_tool_call({id}): {name} {input}"))
            } else if m.role == Role::Tool {
                let output = match &m.tool_output {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => m.content.clone().unwrap_or_default(),
                };
                Some(format!("tool_result({id}): {name} {output}"))
            } else {
                m.content.as_ref().filter(|c| !c.is_empty()).map(|c| format!("{}: {c}", m.role.as_str()))
            }
        })
        .collect()
}

/// Subcommand names of `codex exec`; a prompt equal to one of them would be taken for it.
const SUBCOMMANDS: &[&str] = &["resume", "fork", "review", "help"];

/// The prompt as one argument that can never be taken for a flag or a subcommand: a prompt
/// starting with `-` or equal to a subcommand name gets a leading space.
fn prompt_arg(prompt: String) -> String {
    if prompt.starts_with('-') || SUBCOMMANDS.contains(&prompt.as_str()) { format!(" {prompt}") } else { prompt }
}

/// The argv (without the program) for one run:
///
/// `exec --json [--skip-git-repo-check] [-m MODEL] [permission / -s S]
/// [-c approval_policy="P"] [--disable plugins -c analytics.enabled=false]
/// [--disable unbounded_connection_retries] [-c key=value ...] [extra args ...]
/// [resume <thread_id> | fork <thread_id>] <prompt>`
///
/// The new-run order is that of the captured runs (`codex_text.cmd`). For a resume every
/// option stays in front of `resume`: `--json`, `-m`, `--skip-git-repo-check` and the bypass
/// flag are global (the captured resume put them after `resume`), but `-s/--sandbox` is an option
/// of `exec` only, so in front of the subcommand is the one position where all of them parse.
/// Without a resume handle a transcript is replayed into the prompt ([`render_prompt`]).
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
    let mut argv: Vec<String> = vec!["exec".into(), "--json".into()];
    if options.skip_git_repo_check {
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
            if let Some(sandbox) = options.sandbox {
                argv.push("-s".into());
                argv.push(sandbox.as_str().into());
            }
        }
    }
    if mode != PermissionMode::DangerouslySkipPermissions
        && let Some(policy) = options.approval_policy
    {
        argv.push("-c".into());
        argv.push(policy.config_override());
    }
    if options.offline {
        argv.extend(OfflineSwitches::Codex.args().iter().map(|a| (*a).to_owned()));
    }
    if options.bounded_retries {
        argv.extend(CODEX_BOUNDED_RETRY_ARGS.iter().map(|a| (*a).to_owned()));
    }
    for (key, value) in &options.config {
        argv.push("-c".into());
        argv.push(format!("{key}={value}"));
    }
    argv.extend(options.extra_args.iter().cloned());
    if let Some(thread_id) = &request.resume {
        argv.push(if request.fork { "fork" } else { "resume" }.into());
        argv.push(thread_id.clone());
    }
    argv.push(prompt_arg(render_prompt(request)));
    argv
}
