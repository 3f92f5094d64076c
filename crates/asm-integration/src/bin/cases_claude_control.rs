//! The `claude/approval-*` cases: the real Claude Code CLI in its stream-json control mode
//! (a run with an approval handler) against the fake Anthropic server. Included by
//! `asm-real-cli.rs`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

use asm_core::{EventKind, keys};
use asm_integration::tool_followup_text;
use asm_ports::{ApprovalDecision, ApprovalHandler, ApprovalRequest, ApprovalVerdict};

use super::{
    BackgroundRun, CaseResult, ClaudeEnv, assert_no_processes, ensure, ensure_output, ensure_replies, first_event,
    request, run_ok, tool_prompt,
};

/// Makes every `Bash` call ask: in the default mode Claude Code runs read-only commands such
/// as the fake server's `echo hi` without asking (see `docs/claude-control-protocol.md`).
const ASK_BASH: &str = r#"{"permissions":{"ask":["Bash"]}}"#;

/// The reason the deny cases give.
pub(super) const DENY_REASON: &str = "asm integration denies this command";

/// Answers every request with one decision at once and keeps the requests (also used by the
/// `acp/codex-acp-approval-*` cases).
#[derive(Debug)]
pub(super) struct Decide {
    decision: ApprovalDecision,
    asked: Mutex<Vec<ApprovalRequest>>,
}

impl Decide {
    /// A handler answering `decision` (with [`DENY_REASON`] when it denies).
    pub(super) fn new(decision: ApprovalDecision) -> Self {
        Self { decision, asked: Mutex::new(Vec::new()) }
    }

    /// The requests it was asked so far.
    pub(super) fn asked(&self) -> Vec<ApprovalRequest> {
        self.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl ApprovalHandler for Decide {
    async fn decide(&self, request: &ApprovalRequest) -> asm_core::Result<ApprovalVerdict> {
        self.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(request.clone());
        let verdict = ApprovalVerdict::new(self.decision, "asm-real-cli");
        Ok(if self.decision.allows() { verdict } else { verdict.reason(DENY_REASON) })
    }
}

/// One run of the tool scenario in the default permission mode (so `Bash` asks) with a handler
/// answering `decision`; checks the request the handler saw.
async fn approval_run(
    env: &ClaudeEnv,
    case: &str,
    decision: ApprovalDecision,
) -> Result<(asm_ports::ExecuteOutcome, asm_testkit::adapter_contract::Recorded), String> {
    let adapter = env.adapter(case, |b| b.extra_args(["--settings", ASK_BASH]));
    let handler = Arc::new(Decide::new(decision));
    let (outcome, recorded) = run_ok(&adapter, request(&tool_prompt())?.approvals(handler.clone())).await?;
    let asked = handler.asked();
    ensure(asked.len() == 1, || format!("handler asked {} times: {asked:?}", asked.len()))?;
    ensure(asked[0].tool_name == "Bash", || format!("tool name {:?}", asked[0].tool_name))?;
    ensure(asked[0].tool_input.get("command").and_then(Value::as_str) == Some("echo hi"), || {
        format!("tool input {:?}", asked[0].tool_input)
    })?;
    let started = first_event(&recorded, EventKind::ToolCallStarted)?;
    ensure(started.data.get(keys::TOOL_CALL_ID).and_then(Value::as_str) == asked[0].tool_call_id.as_deref(), || {
        format!("tool_call_id {:?} vs approval {:?}", started.data.get(keys::TOOL_CALL_ID), asked[0].tool_call_id)
    })?;
    let raw = recorded.events().into_iter().filter(|e| e.metadata.get("raw") == Some(&Value::Bool(true))).count();
    ensure(raw == 0, || format!("{raw} raw events (control lines leaked?): {:?}", recorded.kinds()))?;
    ensure_replies(&env.server, &["tool", "tool_followup"])?;
    assert_no_processes(&env.marker(case)).await?;
    Ok((outcome, recorded))
}

/// `claude/approval-allow`: the handler allows, the command runs.
pub(super) async fn claude_approval_allow(env: &ClaudeEnv) -> CaseResult {
    let (outcome, recorded) = approval_run(env, "approval-allow", ApprovalDecision::AllowOnce).await?;
    ensure(recorded.kinds().contains(&EventKind::ToolCallCompleted), || format!("{:?}", recorded.kinds()))?;
    ensure_output(&outcome, &tool_followup_text("hi"))?;
    Ok(format!("{} events", recorded.events().len()))
}

/// `claude/approval-deny`: the handler denies with a reason, the command does not run and the
/// model sees the reason.
pub(super) async fn claude_approval_deny(env: &ClaudeEnv) -> CaseResult {
    let (outcome, recorded) = approval_run(env, "approval-deny", ApprovalDecision::DenyOnce).await?;
    let kinds = recorded.kinds();
    ensure(kinds.contains(&EventKind::ToolCallFailed) && !kinds.contains(&EventKind::ToolCallCompleted), || {
        format!("{kinds:?}")
    })?;
    ensure(outcome.output.content.contains(DENY_REASON), || format!("output {:?}", outcome.output.content))?;
    Ok(format!("output {:?}", outcome.output.content))
}

/// Never answers; says when it was asked (a person who does not come back).
#[derive(Debug, Default)]
struct NoAnswer {
    asked: tokio::sync::Notify,
}

#[async_trait]
impl ApprovalHandler for NoAnswer {
    async fn decide(&self, _request: &ApprovalRequest) -> asm_core::Result<ApprovalVerdict> {
        self.asked.notify_one();
        std::future::pending().await
    }
}

/// `claude/approval-cancel`: the run is cancelled while the permission prompt waits; the CLI
/// gets an `interrupt`, the run ends `cancelled` within the cancel bound, nothing is left.
pub(super) async fn claude_approval_cancel(env: &ClaudeEnv) -> CaseResult {
    let case = "approval-cancel";
    let adapter = env.adapter(case, |b| b.extra_args(["--settings", ASK_BASH]));
    let handler = Arc::new(NoAnswer::default());
    let run = BackgroundRun::start(Arc::new(adapter), request(&tool_prompt())?.approvals(handler.clone()));
    tokio::time::timeout(std::time::Duration::from_secs(40), handler.asked.notified())
        .await
        .map_err(|_| format!("the handler was never asked; events {:?}", run.recorded.kinds()))?;
    let started = std::time::Instant::now();
    run.cancel.cancel();
    let result = tokio::time::timeout(super::CANCEL_BOUND, run.task)
        .await
        .map_err(|_| format!("cancel did not finish within {:?}", super::CANCEL_BOUND))?
        .map_err(|e| format!("run task: {e}"))?;
    let took = started.elapsed();
    match result {
        Err(e) if e.code() == asm_core::ErrorCode::Cancelled => {}
        other => return Err(format!("expected cancelled, got {other:?}")),
    }
    let kinds = run.recorded.kinds();
    ensure(!kinds.contains(&EventKind::ToolCallCompleted), || format!("{kinds:?}"))?;
    assert_no_processes(&env.marker(case)).await?;
    Ok(format!("cancelled in {} ms", took.as_millis()))
}
