//! The ACP adapter's configuration: [`AcpAgent`] (the ACP-specific options on top of the common
//! [`CliOptions`]), the permission seam ([`PermissionHandler`], [`PermissionRequest`],
//! [`PermissionDecision`], [`ToolKindPermissions`]) and [`AcpAdapterBuilder`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use asm_core::{CapabilityType, ErrorCode, ProviderName, Result, StderrLimits};
use asm_ports::{ExecuteOutcome, ExecuteRequest, ProviderEvent};
use asm_provider_cli::{
    CliEnv, CliLimits, CliNormalizer, CliOptions, CliProtocol, ExitInfo, PermissionMode, RunOption,
};

use crate::adapter::AcpAdapter;

/// The default agent command: Claude Code through `@zed-industries/claude-agent-acp`.
pub const DEFAULT_AGENT: &str = "claude-agent-acp";
/// The default time an agent gets to answer `session/cancel` (and to exit after its stdin is
/// closed) before its process group is stopped.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(2);

/// One `session/request_permission` from the agent, as a [`PermissionHandler`] sees it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PermissionRequest {
    /// The ACP session id.
    pub session_id: String,
    /// The tool call's id (`toolCall.toolCallId`).
    pub tool_call_id: Option<String>,
    /// The tool call's kind (`toolCall.kind`: `read`, `edit`, `delete`, `move`, `search`,
    /// `execute`, `think`, `fetch`, `switch_mode`, `other`), `other` when absent.
    pub tool_kind: String,
    /// The tool call's title.
    pub title: Option<String>,
    /// The tool call's input (`toolCall.rawInput`).
    pub tool_input: Option<Value>,
    /// The options the agent offered (`[{optionId, name, kind}]`).
    pub options: Vec<Value>,
    /// The run this request belongs to.
    pub run_id: asm_core::RunId,
    /// The stored session this request belongs to.
    pub stored_session_id: asm_core::SessionId,
}

/// What a [`PermissionHandler`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PermissionDecision {
    /// Allow this call (the agent's `allow_once` option, else `allow_always`).
    AllowOnce,
    /// Allow this and later calls (the agent's `allow_always` option, else `allow_once`).
    AllowAlways,
    /// Reject this call (`reject_once`, else `reject_always`).
    RejectOnce,
    /// Reject this and later calls (`reject_always`, else `reject_once`).
    RejectAlways,
}

impl PermissionDecision {
    /// Whether the call may run.
    pub fn allows(self) -> bool {
        matches!(self, Self::AllowOnce | Self::AllowAlways)
    }
    /// The ACP option kinds matching this decision, preferred first.
    pub fn option_kinds(self) -> [&'static str; 2] {
        match self {
            Self::AllowOnce => ["allow_once", "allow_always"],
            Self::AllowAlways => ["allow_always", "allow_once"],
            Self::RejectOnce => ["reject_once", "reject_always"],
            Self::RejectAlways => ["reject_always", "reject_once"],
        }
    }
}

asm_core::string_enum! {
    /// The snake_case name.
    PermissionDecision {
        AllowOnce => "allow_once",
        AllowAlways => "allow_always",
        RejectOnce => "reject_once",
        RejectAlways => "reject_always",
    }
}

/// Answers the agent's `session/request_permission`: the seam where live approvals plug in (an
/// approval port that asks a person or a policy). The adapter calls it while the prompt turn
/// is in flight and races it against the run's cancellation (a cancelled run answers the agent
/// with the `cancelled` outcome).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use asm_provider_acp::{PermissionDecision, PermissionHandler, ToolKindPermissions};
/// let handler = ToolKindPermissions::allow(["read"]);
/// # let _ = &handler as &dyn PermissionHandler;
/// assert_eq!(handler.decide_kind("read"), PermissionDecision::AllowOnce);
/// assert_eq!(handler.decide_kind("execute"), PermissionDecision::RejectOnce);
/// # }
/// ```
#[async_trait]
pub trait PermissionHandler: fmt::Debug + Send + Sync {
    /// The decision for `request`.
    async fn decide(&self, request: &PermissionRequest) -> PermissionDecision;
}

/// The configured answer: allow (once) the tool kinds in an allow list, reject everything else.
/// The default ([`ToolKindPermissions::reject_all`]) rejects every request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolKindPermissions {
    allowed: Vec<String>,
}

impl ToolKindPermissions {
    /// Rejects every request.
    pub fn reject_all() -> Self {
        Self::default()
    }
    /// Allows (once) the tool kinds `kinds` (`read`, `edit`, `execute`, ...; `*` allows all).
    pub fn allow<I: IntoIterator<Item = S>, S: Into<String>>(kinds: I) -> Self {
        Self { allowed: kinds.into_iter().map(Into::into).collect() }
    }
    /// The allow list.
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }
    /// The decision for a tool kind.
    pub fn decide_kind(&self, kind: &str) -> PermissionDecision {
        if self.allowed.iter().any(|k| k == kind || k == "*") {
            PermissionDecision::AllowOnce
        } else {
            PermissionDecision::RejectOnce
        }
    }
}

#[async_trait]
impl PermissionHandler for ToolKindPermissions {
    async fn decide(&self, request: &PermissionRequest) -> PermissionDecision {
        self.decide_kind(&request.tool_kind)
    }
}

/// The ACP-specific options of the adapter ([`CliOptions::provider`]). Implements
/// [`CliProtocol`] so the common options are the CLI core's (path, args, environment with the
/// credential pass-through, cwd, timeout, limits, per-run option validation); the execute loop
/// is this crate's (ACP talks both ways over stdio, so it does not run through
/// `asm_provider_cli::run_jsonl`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AcpAgent {
    /// Answer `fs/read_text_file` (inside the run's cwd only); advertised as
    /// `clientCapabilities.fs.readTextFile`. Default on.
    pub fs_read: bool,
    /// Answer `fs/write_text_file` (inside the run's cwd only); advertised as
    /// `clientCapabilities.fs.writeTextFile`. Default off.
    pub fs_write: bool,
    /// Use `session/load` when the agent advertises `loadSession` and the run has a native
    /// handle. Default on.
    pub load_session: bool,
    /// How long the agent gets to end a cancelled turn (and to exit after stdin closes).
    pub cancel_grace: Duration,
    /// Who answers `session/request_permission` (default: [`ToolKindPermissions::reject_all`]).
    pub permissions: Arc<dyn PermissionHandler>,
}

impl Default for AcpAgent {
    fn default() -> Self {
        Self {
            fs_read: true,
            fs_write: false,
            load_session: true,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            permissions: Arc::new(ToolKindPermissions::reject_all()),
        }
    }
}

/// The normalizer type [`CliProtocol`] asks for. The ACP adapter never reads lines through
/// `run_jsonl`, so it is never used: it reports every line as an error.
#[derive(Debug, Default)]
pub struct NotLineBased;

impl CliNormalizer for NotLineBased {
    fn normalize_line(&mut self, _line: &str, _out: &mut Vec<ProviderEvent>) -> Result<()> {
        Err(asm_core::Error::new(ErrorCode::InternalError, "the ACP adapter does not normalise lines"))
    }
    fn outcome(&self, _exit: &ExitInfo) -> Result<ExecuteOutcome> {
        Err(asm_core::Error::new(ErrorCode::InternalError, "the ACP adapter does not normalise lines"))
    }
}

impl CliProtocol for AcpAgent {
    type Normalizer = NotLineBased;
    const PROVIDER: ProviderName = ProviderName::Acp;
    const PROGRAM: &'static str = DEFAULT_AGENT;
    const AUTH_ENV: &'static [&'static str] =
        &["ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"];
    const RUN_OPTIONS: &'static [RunOption] = &[RunOption::Cwd];
    const PERMISSION_MODES: &'static [PermissionMode] = &[PermissionMode::Default];
    const CAPABILITIES: &'static [(&'static str, CapabilityType)] = &[
        ("streaming", CapabilityType::Sampling),
        ("tool_use", CapabilityType::Tool),
        ("file_access", CapabilityType::FileAccess),
    ];
    const NATIVE_RESUME: bool = true;

    fn argv(options: &CliOptions<Self>, _request: &ExecuteRequest) -> Vec<String> {
        options.extra_args.clone()
    }

    fn normalizer(_: &CliOptions<Self>, _: &ExecuteRequest) -> NotLineBased {
        NotLineBased
    }
}

/// Builds an [`AcpAdapter`].
///
/// ```
/// use std::time::Duration;
/// use asm_ports::ProviderAdapter;
/// use asm_provider_acp::{AcpAdapter, ToolKindPermissions};
/// let adapter = AcpAdapter::builder()
///     .agent("gemini")
///     .args(["--experimental-acp"])
///     .cwd("/tmp")
///     .fs_write(true)
///     .permissions(ToolKindPermissions::allow(["read", "search"]))
///     .cancel_grace(Duration::from_millis(500))
///     .build();
/// assert_eq!(adapter.name(), "acp");
/// assert!(adapter.options().provider.fs_write);
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct AcpAdapterBuilder {
    options: CliOptions<AcpAgent>,
}

impl AcpAdapterBuilder {
    /// The agent command: a path or a PATH name (default [`DEFAULT_AGENT`]).
    pub fn agent(mut self, program: impl Into<PathBuf>) -> Self {
        self.options.cli_path = program.into();
        self
    }
    /// The agent's arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.options.extra_args = args.into_iter().map(Into::into).collect();
        self
    }
    /// The working directory of the agent and of its sessions (`session/new` `cwd`), and the
    /// root the agent's file requests are confined to (default: this process's cwd).
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.options.cwd = Some(cwd.into());
        self
    }
    /// The agent's environment (replaces the default [`CliEnv::minimal`]).
    pub fn env(mut self, env: CliEnv) -> Self {
        self.options.env = env;
        self
    }
    /// Sets one environment variable.
    pub fn env_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.env = self.options.env.set(name, value);
        self
    }
    /// Per-run time limit (combined with the request deadline: the earlier wins).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }
    /// Subprocess limits (line cap, stderr ring, the SIGINT → SIGTERM → SIGKILL graces).
    pub fn limits(mut self, limits: CliLimits) -> Self {
        self.options.limits = limits;
        self
    }
    /// Bounds of stderr in errors.
    pub fn stderr_limits(mut self, limits: StderrLimits) -> Self {
        self.options.stderr_limits = limits;
        self
    }
    /// Sets [`AcpAgent::fs_read`].
    pub fn fs_read(mut self, on: bool) -> Self {
        self.options.provider.fs_read = on;
        self
    }
    /// Sets [`AcpAgent::fs_write`].
    pub fn fs_write(mut self, on: bool) -> Self {
        self.options.provider.fs_write = on;
        self
    }
    /// Sets [`AcpAgent::load_session`].
    pub fn load_session(mut self, on: bool) -> Self {
        self.options.provider.load_session = on;
        self
    }
    /// Sets [`AcpAgent::cancel_grace`].
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.options.provider.cancel_grace = grace;
        self
    }
    /// Sets who answers permission requests ([`AcpAgent::permissions`]).
    pub fn permissions(mut self, handler: impl PermissionHandler + 'static) -> Self {
        self.options.provider.permissions = Arc::new(handler);
        self
    }
    /// Sets a shared permission handler.
    pub fn permission_handler(mut self, handler: Arc<dyn PermissionHandler>) -> Self {
        self.options.provider.permissions = handler;
        self
    }
    /// The adapter. Nothing is checked here: see
    /// [`validate_config`](asm_ports::ProviderAdapter::validate_config).
    pub fn build(self) -> AcpAdapter {
        AcpAdapter::new(self.options)
    }
}
