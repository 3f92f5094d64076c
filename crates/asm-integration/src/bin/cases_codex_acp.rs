//! The `acp/codex-acp-*` cases: the ACP adapter driving the real `codex-acp`
//! (`@zed-industries/codex-acp`, pinned by xtask; its npm package pulls the native
//! `@zed-industries/codex-acp-linux-x64` binary as an optional dependency) against the fake
//! OpenAI Responses server.
//!
//! `codex-acp` embeds Codex and reads the same `CODEX_HOME/config.toml` as the `codex` CLI,
//! so it is configured exactly like the `codex/*` cases ([`CodexEnv`]: a custom Responses
//! provider whose `base_url` is the fake and whose `env_key` names the fake key); it opens no
//! other connection (see docs/acp-agents-investigation.md).

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use asm_core::{ErrorCode, EventKind, keys};
use asm_integration::{Scenario, WRITE_TOOL_COMMAND, WRITE_TOOL_FILE, tool_followup_text};
use asm_ports::ApprovalDecision;
use asm_provider_acp::{AcpAdapter, ToolKindPermissions};
use asm_testkit::adapter_contract::Recorded;
use serde_json::Value;

use super::cases_claude_control::Decide;
use super::{
    CODEX_KEY, CaseFuture, CaseResult, CodexEnv, RUN_TIMEOUT, assert_no_processes, cancel_after_first_delta,
    check_acp_text, check_events, ensure, ensure_output, ensure_same_call, ensure_session_loaded, ensure_tool_name,
    execute, first_event, no_processes_left, remember_then_resume, request, run_ok, run_text, the_model_request,
    tool_output_containing, tool_prompt,
};

/// The codex-acp version xtask pins (checked by `acp/codex-acp-text`).
const CODEX_ACP_VERSION: &str = "0.16.0";

/// Sets up the env for `codex-acp` at `cli` (`None`: `--codex-acp` was not given).
pub(crate) async fn env(cli: Option<&Path>) -> Result<CodexEnv, String> {
    let cli = cli.ok_or("--codex-acp <path to codex-acp> was not given")?;
    CodexEnv::new(cli).await
}

/// The ACP adapter for `codex-acp` (the env's `cli`) pointed at the fake server, with `args`.
fn adapter_with(env: &CodexEnv, case: &str, args: &[&str]) -> AcpAdapter {
    AcpAdapter::builder()
        .agent(&env.cli)
        .args(args.iter().copied())
        .cwd(&env.workspace)
        .env(env.cli_env(&format!("codex-acp-{case}")))
        .permissions(ToolKindPermissions::allow(["execute"]))
        .timeout(RUN_TIMEOUT)
        .build()
}

/// [`adapter_with`] without arguments (codex-acp's default preset: read-only, sandboxed).
fn adapter(env: &CodexEnv, case: &str) -> AcpAdapter {
    adapter_with(env, case, &[])
}

/// The sandbox override of the tool case: codex-acp's Linux sandbox needs bubblewrap (`bwrap`
/// on PATH or bundled next to the binary; the npm package bundles none), without it every
/// command fails with "bubblewrap is unavailable".
const NO_SANDBOX: &[&str] = &["-c", "sandbox_mode=\"danger-full-access\""];

/// [`NO_SANDBOX`] plus Codex's `untrusted` approval policy: every command not on Codex's
/// known-safe list needs an approval, which codex-acp asks for with `session/request_permission`.
const ASK_UNTRUSTED: &[&str] = &["-c", "sandbox_mode=\"danger-full-access\"", "-c", "approval_policy=\"untrusted\""];

/// The `acp/codex-acp-*` cases over `env` (each fails with the setup error when it failed).
pub(crate) fn cases(env: &Result<CodexEnv, String>) -> Vec<(&'static str, CaseFuture<'_>)> {
    let env = env.as_ref();
    vec![
        ("acp/codex-acp-text", Box::pin(async move { codex_acp_text(env?).await })),
        ("acp/codex-acp-tool", Box::pin(async move { codex_acp_tool(env?).await })),
        ("acp/codex-acp-resume", Box::pin(async move { codex_acp_resume(env?).await })),
        ("acp/codex-acp-approval-allow", Box::pin(async move { codex_acp_approval_allow(env?).await })),
        ("acp/codex-acp-approval-deny", Box::pin(async move { codex_acp_approval_deny(env?).await })),
        ("acp/codex-acp-cancel", Box::pin(async move { codex_acp_cancel(env?).await })),
        (
            "acp/codex-acp-no-leftover-processes",
            Box::pin(async move { no_processes_left(&[env?], "the codex-acp cases") }),
        ),
    ]
}

async fn codex_acp_text(env: &CodexEnv) -> CaseResult {
    env.server.clear_requests();
    let (outcome, recorded) = run_text(&adapter(env, "text"), request("Say hello.")?).await?;
    let session = check_acp_text(&outcome, &recorded)?;
    let acp = &outcome.metadata["acp"];
    ensure(acp["agent_info"]["version"] == CODEX_ACP_VERSION, || format!("agent info {}", acp["agent_info"]))?;
    let auth = format!("Bearer {CODEX_KEY}");
    ensure(the_model_request(&env.server)?.header("authorization") == Some(auth.as_str()), || {
        "bearer key not sent".to_owned()
    })?;
    assert_no_processes(&env.marker("codex-acp-text")).await?;
    Ok(format!("ACP session {session}, agent {}", acp["agent_info"]["version"]))
}

async fn codex_acp_tool(env: &CodexEnv) -> CaseResult {
    env.server.clear_requests();
    let (outcome, recorded) = run_ok(&adapter_with(env, "tool", NO_SANDBOX), request(&tool_prompt())?).await?;
    let started = first_event(&recorded, EventKind::ToolCallStarted).map_err(|e| {
        let replies: Vec<String> = env.server.model_requests().iter().map(|r| r.reply.clone()).collect();
        format!("{e}; output {:?}, replies {replies:?}", outcome.output.content)
    })?;
    ensure_tool_name(&started, "execute")?;
    let done = first_event(&recorded, EventKind::ToolCallCompleted)?;
    ensure_same_call(&started, &done)?;
    let output = tool_output_containing(&done, "hi")?;
    let reqs = env.server.model_requests();
    let last = reqs.last().and_then(|r| r.body.as_ref()).ok_or("no follow-up request")?;
    let sent = last["input"].as_array().and_then(|items| items.last()).cloned().unwrap_or_default();
    ensure(sent["type"] == "function_call_output", || format!("last input item {sent}"))?;
    ensure_output(&outcome, &tool_followup_text(sent["output"].as_str().unwrap_or_default()))?;
    assert_no_processes(&env.marker("codex-acp-tool")).await?;
    Ok(format!("tool output {output}, {} events", recorded.events().len()))
}

/// One run of the [`Scenario::ToolWrite`] scenario under [`ASK_UNTRUSTED`] with a handler
/// answering `decision`: codex-acp asks once, for the `execute` call of the scenario's command
/// (`rawInput` is Codex's `ExecApprovalRequestEvent`). Checks the request the handler saw, that
/// no process is left, and returns the result, the events, whether the command's file exists
/// and the fake's replies.
async fn approval_run(env: &CodexEnv, case: &str, decision: ApprovalDecision) -> Result<ApprovalRun, String> {
    env.server.clear_requests();
    let file = env.workspace.join(WRITE_TOOL_FILE);
    std::fs::remove_file(&file)
        .or_else(|e| if e.kind() == ErrorKind::NotFound { Ok(()) } else { Err(e) })
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let handler = Arc::new(Decide::new(decision));
    let prompt = format!("Create a file. {}", Scenario::ToolWrite.marker());
    let req = request(&prompt)?.approvals(handler.clone());
    let (result, recorded) = execute(&adapter_with(env, case, ASK_UNTRUSTED), req).await;
    check_events(&recorded)?;
    let asked = handler.asked();
    ensure(asked.len() == 1, || format!("handler asked {} times: {asked:?}; result {result:?}", asked.len()))?;
    let ask = &asked[0];
    ensure(ask.provider == "acp" && ask.tool_name == "execute", || format!("{} / {}", ask.provider, ask.tool_name))?;
    let command = ask.tool_input["command"].as_array().and_then(|c| c.last()).and_then(Value::as_str);
    ensure(command == Some(WRITE_TOOL_COMMAND), || format!("tool input {}", ask.tool_input))?;
    let call_id = ask.tool_call_id.clone().ok_or("the approval request has no tool call id")?;
    ensure(ask.tool_input["call_id"] == call_id.as_str(), || format!("call id {call_id} vs {}", ask.tool_input))?;
    let permission = recorded
        .events()
        .into_iter()
        .find(|e| e.data.get("raw_type") == Some(&Value::from("session/request_permission")))
        .ok_or_else(|| format!("no permission_request raw event in {:?}", recorded.kinds()))?;
    let answered = permission.data.get("decided_by").and_then(Value::as_str);
    ensure(answered == Some("asm-real-cli"), || format!("permission request decided by {answered:?}"))?;
    // The cases use the `*_once` decisions: the ACP option kind the adapter selected.
    let kind = if decision.allows() { "allow_once" } else { "reject_once" };
    ensure(permission.data.get("decision") == Some(&Value::from(kind)), || {
        format!("permission answered {:?}, expected {kind}", permission.data.get("decision"))
    })?;
    let replies = env.server.model_requests().into_iter().map(|r| r.reply).collect();
    assert_no_processes(&env.marker(case)).await?;
    Ok(ApprovalRun { result, recorded, call_id, file_exists: file.exists(), replies })
}

/// What [`approval_run`] saw.
struct ApprovalRun {
    result: asm_core::Result<asm_ports::ExecuteOutcome>,
    recorded: Recorded,
    /// The tool call id of the approval request.
    call_id: String,
    /// Whether [`WRITE_TOOL_FILE`] exists after the run.
    file_exists: bool,
    /// The fake server's replies, in order.
    replies: Vec<String>,
}

/// `acp/codex-acp-approval-allow`: the handler allows (codex-acp's `approved` option), the
/// command runs (its file exists, `tool_call_completed` carries its output) and the turn ends
/// with the fake's follow-up.
async fn codex_acp_approval_allow(env: &CodexEnv) -> CaseResult {
    let run = approval_run(env, "approval-allow", ApprovalDecision::AllowOnce).await?;
    let outcome = run.result.map_err(|e| format!("run failed: {e:?}"))?;
    ensure(outcome.stop_reason.as_deref() == Some("end_turn"), || format!("stop reason {:?}", outcome.stop_reason))?;
    ensure(run.file_exists, || format!("the command did not create {WRITE_TOOL_FILE}"))?;
    let events = run.recorded.events();
    let same_call =
        |e: &&asm_ports::ProviderEvent| e.data.get(keys::TOOL_CALL_ID) == Some(&Value::from(run.call_id.as_str()));
    ensure(events.iter().filter(same_call).any(|e| e.kind == EventKind::ToolCallStarted), || {
        format!("no tool_call_started for {} in {:?}", run.call_id, run.recorded.kinds())
    })?;
    let done = events
        .iter()
        .filter(same_call)
        .find(|e| e.kind == EventKind::ToolCallCompleted)
        .ok_or_else(|| format!("no tool_call_completed for {} in {:?}", run.call_id, run.recorded.kinds()))?;
    let stdout = done.data.get(keys::TOOL_OUTPUT).and_then(|o| o.get("stdout")).and_then(Value::as_str);
    ensure(stdout == Some("wrote\n"), || format!("tool output {:?}", done.data.get(keys::TOOL_OUTPUT)))?;
    ensure(run.replies == ["tool-write", "tool_followup"], || format!("server replies {:?}", run.replies))?;
    ensure_output(&outcome, &tool_followup_text("wrote"))?;
    Ok(format!("approved {}, {} events", run.call_id, events.len()))
}

/// `acp/codex-acp-approval-deny`: the handler denies. Codex offers no "deny and go on" option
/// for a command (its decisions are `approved`, `approved-execpolicy-amendment` and `abort`),
/// so the adapter selects `abort` (the only `reject_once` option): the command does not run,
/// Codex ends the turn (`stopReason: cancelled`, which the adapter reports as `Cancelled` with
/// reason `agent_cancelled`) and the model gets no tool result.
async fn codex_acp_approval_deny(env: &CodexEnv) -> CaseResult {
    let run = approval_run(env, "approval-deny", ApprovalDecision::DenyOnce).await?;
    match &run.result {
        Err(e)
            if e.code() == ErrorCode::Cancelled
                && e.details().get("reason") == Some(&Value::from("agent_cancelled")) => {}
        other => return Err(format!("expected Cancelled (agent_cancelled), got {other:?}")),
    }
    ensure(!run.file_exists, || format!("the denied command created {WRITE_TOOL_FILE}"))?;
    let kinds = run.recorded.kinds();
    ensure(!kinds.contains(&EventKind::ToolCallCompleted), || format!("a tool call completed: {kinds:?}"))?;
    ensure(run.replies == ["tool-write"], || format!("server replies {:?}", run.replies))?;
    Ok(format!("denied {}, turn ended by codex-acp, {} events", run.call_id, kinds.len()))
}

async fn codex_acp_resume(env: &CodexEnv) -> CaseResult {
    env.server.clear_requests();
    let adapter = adapter(env, "resume");
    let (session, second, _) = remember_then_resume(&adapter, &env.server, "input", "Which word?", "session").await?;
    ensure_session_loaded(&second)?;
    assert_no_processes(&env.marker("codex-acp-resume")).await?;
    Ok(format!("ACP session {session} loaded, {} model requests", env.server.model_requests().len()))
}

async fn codex_acp_cancel(env: &CodexEnv) -> CaseResult {
    env.server.clear_requests();
    let adapter = Arc::new(adapter(env, "cancel"));
    cancel_after_first_delta(adapter, &env.marker("codex-acp-cancel"), &env.server).await
}
