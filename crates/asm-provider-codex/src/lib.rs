//! [`ProviderAdapter`] for the Codex CLI (`codex exec --json`), as documented in
//! `spec/provider-clis.md` section 2 (Codex 0.169.0).
//!
//! * [`CodexAdapter::builder`] configures model, cwd, sandbox, approval policy, permission mode
//!   (spec 9.6 / note 30: default, plan, dangerously_skip_permissions), `-c key=value` config
//!   overrides, extra args, CLI path, environment, the offline and bounded-retry switches (on by
//!   default) and a timeout.
//! * [`build_argv`] is the one place argv is built: `codex exec --json ... [resume <thread_id> |
//!   fork <thread_id>] <prompt>`; [`render_prompt`] replays a transcript into the prompt when the run is not
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
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use asm_core::{Capability, CapabilityType, Result, StderrLimits, TokenUsage};
use asm_ports::{EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter};
use asm_provider_cli::{CliCommand, CliEnv, CliLimits, PermissionMode, RunControl, run_jsonl};

pub use normalize::{CodexNormalizer, UsageBaseline};
pub use options::{ApprovalPolicy, CodexOptions, SandboxMode, build_argv, permission_args, render_prompt};

/// The provider name recorded on events and runs.
pub const PROVIDER_NAME: &str = "codex";

/// Runs `codex exec --json` as a subprocess per run. Supports native resume by thread id
/// (`codex exec resume <thread_id>`) and native fork (`codex exec fork <thread_id>`: a new
/// thread that starts from the given one; its usage totals carry the parent's on, which the
/// parent's recorded thread usage, handed to the fork's first run, accounts for).
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
        self.options.validate()?;
        let cmd = self.command(&request);
        let control = RunControl::from_request(&request, self.options.timeout);
        let mut normalizer = CodexNormalizer::new()
            .stderr_limits(self.options.stderr_limits)
            .model(self.options.model.clone())
            .baseline(usage_baseline(&request));
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
        let verdict = span.in_scope(|| normalizer.finish(&exit));
        // An oversized line never hides the provider's own error (see `ExitInfo::settle`).
        let outcome = exit.settle(asm_core::ProviderName::Codex, self.options.stderr_limits, verdict)?;
        Ok(record_thread_usage(outcome, normalizer.thread_usage()))
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

    /// `exec fork <thread id>` (see [`build_argv`]).
    fn supports_native_fork(&self) -> bool {
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

/// Key of the thread-cumulative usage kept in the provider state between runs.
const THREAD_USAGE: &str = "thread_usage";

/// Codex reports usage for the whole thread. A new thread's total is the run's own; for a resumed
/// thread, the total recorded by the previous run of the same thread (kept as provider state on
/// the session) is subtracted, so run totals add up — in the events as in the outcome. Without
/// such a record the run keeps the thread total and says so (`usage_scope =
/// "thread_cumulative"`).
fn usage_baseline(request: &ExecuteRequest) -> UsageBaseline {
    let Some(thread) = &request.resume else { return UsageBaseline::NewThread };
    let recorded = asm_ports::provider_state(&request.session, PROVIDER_NAME)
        .and_then(|state| state.get(THREAD_USAGE))
        .filter(|state| state.get("thread_id").and_then(|t| t.as_str()) == Some(thread.as_str()))
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
