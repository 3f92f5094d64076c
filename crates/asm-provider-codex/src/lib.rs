//! [`ProviderAdapter`](asm_ports::ProviderAdapter) for the Codex CLI (`codex exec --json`), as
//! documented in `spec/provider-clis.md` section 2 (Codex 0.169.0).
//!
//! [`CodexAdapter`] is the CLI adapter core ([`CliAdapter`]) with Codex's [`CliProtocol`],
//! [`CodexCli`]. This crate holds only what is Codex's:
//!
//! * [`build_argv`], the one place argv is built: `codex exec --json ... [resume <thread_id> |
//!   fork <thread_id>] <prompt>`, with the sandbox / approval mapping ([`SandboxMode`],
//!   [`ApprovalPolicy`], [`permission_args`]), the offline and bounded-retry switches
//!   ([`OFFLINE_ARGS`], [`BOUNDED_RETRY_ARGS`], on by default) and `-c key=value` overrides;
//!   the credential variables [`AUTH_ENV`];
//! * [`CodexNormalizer`], which maps every JSONL line kind to normalized events (table on the
//!   type) and classifies the end of the run, and the thread-usage accounting
//!   ([`UsageBaseline`]);
//! * [`CodexBuilderExt`], the builder setters of [`CodexCli`].
//!
//! The builder ([`CodexAdapterBuilder`]), command construction, the subprocess (stdin is
//! `/dev/null`: Codex blocks reading a piped stdin) and the transcript replay
//! ([`render_prompt`]) are the core's. Everything a builder takes is re-exported here.
//!
//! **Per-run options** ([`RunOption`], `ExecuteRequest::options`):
//!
//! | key | Codex |
//! |---|---|
//! | `model` | `-m` (also the outcome's model: Codex does not print it) |
//! | `permission_mode` | `default`: the configured sandbox; `plan`: `-s read-only`; `dangerously_skip_permissions`: `--dangerously-bypass-approvals-and-sandbox` ([`permission_args`]); `accept_edits` and `full_auto` are refused |
//! | `system_prompt` | `-c developer_instructions="..."` (added after Codex's base instructions) |
//! | `cwd` | the process's working directory |
//! | `max_turns`, `allowed_tools`, `disallowed_tools` | refused (`validation_error`, `unsupported_option`): `codex exec` has no such flags |
//!
//! **Credentials**: [`AUTH_ENV`] is passed through from this process unless
//! [`CliEnv::pass_auth`] is off; values are never logged.
//!
//! Lifecycle events are never emitted: the runtime emits `run_started` and the terminal event;
//! the thread id (native resume handle), model, usage and stop reason are returned in the
//! outcome.
//!
//! ```no_run
//! # async fn demo() -> asm_core::Result<()> {
//! use std::sync::Arc;
//! use asm_provider_codex::{CodexAdapter, CodexBuilderExt, SandboxMode};
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

use asm_core::{CapabilityType, TokenUsage};
use asm_ports::{ExecuteOutcome, ExecuteRequest, ProviderEvent};
use asm_provider_cli::{
    CliAdapter, CliAdapterBuilder, CliNormalizer, CliOptions, CliProtocol, ExitInfo, resume_handle,
};

pub use asm_core::StderrLimits;
pub use asm_provider_cli::{CliEnv, CliLimits, PermissionMode, RunOption, render_prompt, run_option};
pub use normalize::{CodexNormalizer, UsageBaseline};
pub use options::{
    AUTH_ENV, ApprovalPolicy, BOUNDED_RETRY_ARGS, CodexCli, OFFLINE_ARGS, SandboxMode, build_argv, permission_args,
};

/// The provider name recorded on events and runs.
pub const PROVIDER_NAME: &str = "codex";

/// Runs `codex exec --json` as a subprocess per run. Supports native resume by thread id
/// (`codex exec resume <thread_id>`) and native fork (`codex exec fork <thread_id>`: a new
/// thread that starts from the given one; its usage totals carry the parent's on, which the
/// parent's recorded thread usage, handed to the fork's first run, accounts for).
pub type CodexAdapter = CliAdapter<CodexCli>;

/// Builds a [`CodexAdapter`]: the common setters, plus [`CodexBuilderExt`].
pub type CodexAdapterBuilder = CliAdapterBuilder<CodexCli>;

/// The configuration of a [`CodexAdapter`]; Codex's own options are in
/// [`provider`](CliOptions::provider).
pub type CodexOptions = CliOptions<CodexCli>;

impl CliProtocol for CodexCli {
    type Normalizer = CodexNormalizer;
    const PROVIDER: asm_core::ProviderName = asm_core::ProviderName::Codex;
    const PROGRAM: &'static str = "codex";
    const AUTH_ENV: &'static [&'static str] = AUTH_ENV;
    const RUN_OPTIONS: &'static [RunOption] =
        &[RunOption::Model, RunOption::PermissionMode, RunOption::SystemPrompt, RunOption::Cwd];
    const PERMISSION_MODES: &'static [PermissionMode] =
        &[PermissionMode::Default, PermissionMode::Plan, PermissionMode::DangerouslySkipPermissions];
    const CAPABILITIES: &'static [(&'static str, CapabilityType)] = &[
        ("streaming", CapabilityType::Sampling),
        ("tool_use", CapabilityType::Tool),
        ("interrupt", CapabilityType::Sampling),
        ("mcp", CapabilityType::Tool),
        ("file_operations", CapabilityType::Tool),
        ("bash", CapabilityType::Tool),
    ];
    const NATIVE_RESUME: bool = true;
    /// `exec fork <thread id>` (see [`build_argv`]).
    const NATIVE_FORK: bool = true;

    fn argv(options: &CodexOptions, request: &ExecuteRequest) -> Vec<String> {
        build_argv(options, request)
    }

    fn validate(options: &CodexOptions) -> asm_core::Result<()> {
        options::validate(options)
    }

    fn normalizer(options: &CodexOptions, request: &ExecuteRequest) -> CodexNormalizer {
        CodexNormalizer::new()
            .stderr_limits(options.stderr_limits)
            .model(options.model.clone())
            .baseline(usage_baseline(request))
    }
}

/// The adapter's view of a run: [`finish`](CodexNormalizer::finish), and the thread's new
/// usage total recorded as provider state (the next run of the thread subtracts it).
impl CliNormalizer for CodexNormalizer {
    fn normalize_line(&mut self, line: &str, out: &mut Vec<ProviderEvent>) -> asm_core::Result<()> {
        self.push_line(line, out);
        Ok(())
    }

    fn outcome(&self, exit: &ExitInfo) -> asm_core::Result<ExecuteOutcome> {
        self.finish(exit).map(|outcome| record_thread_usage(outcome, self.thread_usage()))
    }

    fn provider_session_id(&self) -> Option<&str> {
        self.thread_id()
    }
}

/// The builder setters of Codex's own options ([`CodexCli`]).
///
/// ```
/// use asm_provider_codex::{CodexAdapter, CodexBuilderExt, SandboxMode};
/// let adapter = CodexAdapter::builder().sandbox(SandboxMode::ReadOnly).bounded_retries(false).build();
/// assert_eq!(adapter.options().provider.sandbox, Some(SandboxMode::ReadOnly));
/// ```
pub trait CodexBuilderExt: Sized {
    /// Changes [`CodexCli`] (what the other setters use).
    #[must_use]
    fn codex(self, f: impl FnOnce(&mut CodexCli)) -> Self;
    /// `-s/--sandbox`.
    #[must_use]
    fn sandbox(self, mode: SandboxMode) -> Self {
        self.codex(|c| c.sandbox = Some(mode))
    }
    /// `-c approval_policy="..."`.
    #[must_use]
    fn approval_policy(self, policy: ApprovalPolicy) -> Self {
        self.codex(|c| c.approval_policy = Some(policy))
    }
    /// `--skip-git-repo-check` (default on).
    #[must_use]
    fn skip_git_repo_check(self, on: bool) -> Self {
        self.codex(|c| c.skip_git_repo_check = on)
    }
    /// Adds a config override `-c key=value` (`value` is TOML: quote strings).
    #[must_use]
    fn config(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let entry = (key.into(), value.into());
        self.codex(|c| c.config.push(entry))
    }
    /// Whether to pass [`OFFLINE_ARGS`] (default true).
    #[must_use]
    fn offline(self, on: bool) -> Self {
        self.codex(|c| c.offline = on)
    }
    /// Whether to pass [`BOUNDED_RETRY_ARGS`] (default true).
    #[must_use]
    fn bounded_retries(self, on: bool) -> Self {
        self.codex(|c| c.bounded_retries = on)
    }
}

impl CodexBuilderExt for CodexAdapterBuilder {
    fn codex(self, f: impl FnOnce(&mut CodexCli)) -> Self {
        self.provider(f)
    }
}

/// Key of the thread-cumulative usage kept in the provider state between runs.
const THREAD_USAGE: &str = "thread_usage";

/// Codex reports usage for the whole thread. A new thread's total is the run's own; for a resumed
/// thread, the total recorded by the previous run of the same thread (kept as provider state on
/// the session) is subtracted, so run totals add up — in the events as in the outcome. Without
/// such a record the run keeps the thread total and says so (`usage_scope =
/// "thread_cumulative"`).
fn usage_baseline(request: &ExecuteRequest) -> UsageBaseline {
    let Some(thread) = resume_handle(request) else { return UsageBaseline::NewThread };
    let recorded = asm_ports::provider_state(&request.session, PROVIDER_NAME)
        .and_then(|state| state.get(THREAD_USAGE))
        .filter(|state| state.get("thread_id").and_then(|t| t.as_str()) == Some(thread))
        .and_then(|state| serde_json::from_value::<TokenUsage>(state.get("usage")?.clone()).ok());
    recorded.map_or(UsageBaseline::Unknown, UsageBaseline::Resumed)
}

/// Keeps the thread's new total as provider state: the next run of the thread subtracts it.
fn record_thread_usage(mut outcome: ExecuteOutcome, thread_usage: Option<TokenUsage>) -> ExecuteOutcome {
    if let (Some(thread), Some(usage)) = (outcome.provider_session_id.clone(), thread_usage) {
        let usage = serde_json::to_value(usage).unwrap_or_default();
        outcome
            .provider_state
            .insert(THREAD_USAGE.to_owned(), serde_json::json!({"thread_id": thread, "usage": usage}));
    }
    outcome
}

#[cfg(test)]
mod usage_tests {
    use super::*;
    use asm_core::{Run, RunInput, Session};

    fn usage(input: u64, output: u64) -> TokenUsage {
        TokenUsage { input_tokens: input, output_tokens: output, ..TokenUsage::default() }
    }

    fn request(resume: Option<&str>, recorded: Option<(&str, TokenUsage)>) -> ExecuteRequest {
        let mut session = Session::new("a").unwrap();
        if let Some((thread, u)) = recorded {
            session.metadata.insert(
                "provider_sessions".into(),
                serde_json::json!({"codex": {"thread_usage": {"thread_id": thread, "usage": u}}}),
            );
        }
        let run = Run::new(session.id.clone(), RunInput::user("x"));
        let request = ExecuteRequest::new(session, run);
        match resume {
            Some(thread) => request.resume(thread),
            None => request,
        }
    }

    /// The outcome and events of one turn whose thread total is `total`.
    fn turn(baseline: UsageBaseline, total: TokenUsage) -> (ExecuteOutcome, Vec<asm_ports::ProviderEvent>) {
        let mut n = CodexNormalizer::new().baseline(baseline);
        let mut out = Vec::new();
        for line in [
            r#"{"type":"thread.started","thread_id":"t-1"}"#.to_owned(),
            r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"ok"}}"#.to_owned(),
            serde_json::json!({"type": "turn.completed", "usage": {
                "input_tokens": total.input_tokens, "output_tokens": total.output_tokens
            }})
            .to_string(),
        ] {
            n.push_line(&line, &mut out);
        }
        let outcome = n.finish(&asm_provider_cli::ExitInfo::new(asm_provider_cli::ExitKind::Code(0), "", false));
        (record_thread_usage(outcome.unwrap(), n.thread_usage()), out)
    }

    #[test]
    fn a_new_thread_reports_its_total_and_records_it() {
        assert_eq!(usage_baseline(&request(None, Some(("t-1", usage(5, 5))))), UsageBaseline::NewThread);
        let (out, events) = turn(UsageBaseline::NewThread, usage(100, 10));
        assert_eq!(out.token_usage, usage(100, 10));
        assert_eq!(out.metadata["usage_scope"], "run");
        assert_eq!(out.provider_state[THREAD_USAGE]["thread_id"], "t-1");
        assert_eq!(out.provider_state[THREAD_USAGE]["usage"]["input_tokens"], 100);
        assert_eq!(events.last().unwrap().data["input_tokens"], 100);
    }

    #[test]
    fn a_resumed_thread_reports_only_its_own_tokens() {
        let baseline = usage_baseline(&request(Some("t-1"), Some(("t-1", usage(100, 10)))));
        assert_eq!(baseline, UsageBaseline::Resumed(usage(100, 10)));
        let (out, events) = turn(baseline, usage(250, 30));
        assert_eq!(out.token_usage, usage(150, 20));
        assert_eq!(out.metadata["usage_scope"], "run");
        assert_eq!(
            out.provider_state[THREAD_USAGE]["usage"]["input_tokens"], 250,
            "the next baseline is the new total"
        );
        let event = events.last().unwrap();
        assert_eq!((event.data["input_tokens"].as_u64(), event.data["output_tokens"].as_u64()), (Some(150), Some(20)));
        assert_eq!(event.metadata["thread_usage"]["input_tokens"], 250);
    }

    #[test]
    fn without_a_baseline_for_this_thread_the_total_is_kept_and_labelled() {
        for recorded in [None, Some(("t-other", usage(100, 10)))] {
            let baseline = usage_baseline(&request(Some("t-1"), recorded));
            assert_eq!(baseline, UsageBaseline::Unknown);
            let (out, events) = turn(baseline, usage(250, 30));
            assert_eq!(out.token_usage, usage(250, 30));
            assert_eq!(out.metadata["usage_scope"], "thread_cumulative");
            assert_eq!(events.last().unwrap().metadata["usage_scope"], "thread_cumulative");
        }
    }
}
