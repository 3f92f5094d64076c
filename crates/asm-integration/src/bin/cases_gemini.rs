//! The `acp/gemini-*` cases: the ACP adapter driving the real Gemini CLI (`gemini --acp`,
//! pinned by xtask) against the fake Gemini API ([`Api::GeminiGenerateContent`]).
//!
//! Gemini CLI is pointed at the fake with `GOOGLE_GEMINI_BASE_URL` and `GEMINI_API_KEY`; a
//! `settings.json` in the isolated HOME pins the model (so the `auto` model router does not
//! send its classifier request first) and turns off usage statistics (Clearcut, which
//! otherwise resolves `play.googleapis.com`), telemetry and update checks, so the CLI opens no
//! connection but the one to the fake (see docs/acp-agents-investigation.md).

use std::path::Path;
use std::sync::Arc;

use asm_core::{EventKind, keys};
use asm_integration::{Api, GEMINI_TOOL_COMMAND, Scenario, TEXT_REPLY, tool_followup_text};
use asm_provider_acp::{AcpAdapter, ToolKindPermissions};
use asm_provider_cli::CliEnv;
use serde_json::Value;

use super::{
    CaseFuture, CaseResult, CliSandbox, MARKER_VAR, RUN_TIMEOUT, assert_no_processes, cancel_after_first_delta,
    check_acp_text, ensure, ensure_first_exchange, ensure_output, ensure_same_call, ensure_session_loaded,
    ensure_tool_name, first_event, last_history, no_processes_left, remember_apricot, request, resume_run, run_ok,
    run_text,
};

/// The Gemini CLI version xtask pins (checked by `acp/gemini-text`).
const GEMINI_VERSION: &str = "0.61.0";
/// The model pinned in `settings.json`; every model request names it in its path.
const GEMINI_MODEL: &str = "gemini-2.5-flash";
const GEMINI_KEY: &str = "fake-gemini-key";

/// The Gemini side: the fake Gemini API, an isolated HOME (with `.gemini/settings.json`) and
/// workspace.
pub(crate) struct GeminiEnv(CliSandbox);

/// The cases reach the sandbox's parts (`env.server`, `env.home`, …) through the env.
impl std::ops::Deref for GeminiEnv {
    type Target = CliSandbox;

    fn deref(&self) -> &CliSandbox {
        &self.0
    }
}

impl GeminiEnv {
    /// Sets up the env for the CLI at `cli` (`None`: `--gemini` was not given).
    pub(crate) async fn new(cli: Option<&Path>) -> Result<Self, String> {
        let cli = cli.ok_or("--gemini <path to gemini> was not given")?;
        let sandbox =
            CliSandbox::new("gemini CLI", cli, "asm-real-cli-gemini-", Api::GeminiGenerateContent, &["home/.gemini"])
                .await?;
        let settings = serde_json::json!({
            "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": false},
            "model": {"name": GEMINI_MODEL}
        });
        let path = sandbox.home.join(".gemini").join("settings.json");
        std::fs::write(&path, settings.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self(sandbox))
    }

    /// The ACP adapter for `gemini --acp` pointed at the fake server; `case` names the marker.
    fn adapter(&self, case: &str) -> AcpAdapter {
        let env = CliEnv::minimal()
            .set("HOME", self.home.display().to_string())
            .set("GOOGLE_GEMINI_BASE_URL", self.server.base_url())
            .set("GEMINI_API_KEY", GEMINI_KEY)
            .set("NO_PROXY", "127.0.0.1,localhost")
            .set("TMPDIR", self.tmp.display().to_string())
            .set(MARKER_VAR, self.marker(case));
        AcpAdapter::builder()
            .agent(&self.cli)
            .args(["--acp"])
            .cwd(&self.workspace)
            .env(env)
            .permissions(ToolKindPermissions::allow(["execute"]))
            .timeout(RUN_TIMEOUT)
            .build()
    }
}

/// The `acp/gemini-*` cases over `env` (each fails with the setup error when it failed).
pub(crate) fn cases(env: &Result<GeminiEnv, String>) -> Vec<(&'static str, CaseFuture<'_>)> {
    let env = env.as_ref();
    vec![
        ("acp/gemini-text", Box::pin(async move { gemini_text(env?).await })),
        ("acp/gemini-tool", Box::pin(async move { gemini_tool(env?).await })),
        ("acp/gemini-resume", Box::pin(async move { gemini_resume(env?).await })),
        ("acp/gemini-cancel", Box::pin(async move { gemini_cancel(env?).await })),
        ("acp/gemini-no-leftover-processes", Box::pin(async move { no_processes_left(&[env?], "the gemini cases") })),
    ]
}

/// The `contents` of a Gemini request body as JSON text (empty without a body).
fn contents_text(body: Option<&Value>) -> String {
    body.and_then(|b| b.get("contents")).map(Value::to_string).unwrap_or_default()
}

async fn gemini_text(env: &GeminiEnv) -> CaseResult {
    env.server.clear_requests();
    let adapter = env.adapter("text");
    let (outcome, recorded) = run_text(&adapter, request("Say hello.")?).await?;
    let session = check_acp_text(&outcome, &recorded)?;
    let acp = &outcome.metadata["acp"];
    ensure(acp["agent_info"]["version"] == GEMINI_VERSION, || format!("agent info {}", acp["agent_info"]))?;
    let reqs = env.server.model_requests();
    ensure(reqs.len() == 1, || {
        format!("{} model requests: {:?}", reqs.len(), reqs.iter().map(|r| r.target.clone()).collect::<Vec<_>>())
    })?;
    let expected = format!("/v1beta/models/{GEMINI_MODEL}:streamGenerateContent?alt=sse");
    ensure(reqs[0].target == expected, || format!("model request {}", reqs[0].target))?;
    ensure(reqs[0].header("x-goog-api-key") == Some(GEMINI_KEY), || "x-goog-api-key not sent".to_owned())?;
    let others: Vec<String> =
        env.server.requests().iter().filter(|r| r.reply == "not_found").map(|r| r.target.clone()).collect();
    ensure(others.is_empty(), || format!("unexpected requests {others:?}"))?;
    assert_no_processes(&env.marker("text")).await?;
    Ok(format!("ACP session {session}, agent {}", acp["agent_info"]["version"]))
}

async fn gemini_tool(env: &GeminiEnv) -> CaseResult {
    env.server.clear_requests();
    let adapter = env.adapter("tool");
    let prompt = format!("Print hi. {}", Scenario::ToolUse.marker());
    let (outcome, recorded) = run_ok(&adapter, request(&prompt)?).await?;
    let events = recorded.events();
    // The permission request: the adapter answers it (allow `execute`) and records it raw
    // (or, once live approvals land, as tool_approval_* events).
    let asked = events.iter().any(|e| {
        (e.data.get("decision").is_some() && e.data.get("tool_kind") == Some(&Value::from("execute")))
            || matches!(e.kind, EventKind::ToolApprovalRequested | EventKind::ToolApprovalGranted)
    });
    ensure(asked, || format!("no permission request recorded in {:?}", recorded.kinds()))?;
    let done = first_event(&recorded, EventKind::ToolCallCompleted)?;
    // Gemini CLI 0.61.0 sends no `tool_call` notification for a call it asks permission for:
    // the call appears first inside `session/request_permission` (status `pending`), then as a
    // `tool_call_update`. Checked when there is a start; its absence is reported.
    let started = events.iter().find(|e| e.kind == EventKind::ToolCallStarted);
    if let Some(started) = started {
        ensure_tool_name(started, "execute")?;
        ensure_same_call(started, &done)?;
    }
    let title = done.data.get("title").and_then(Value::as_str).unwrap_or_default();
    // Gemini CLI sends neither rawInput nor the command's output in its tool updates (the
    // title is the command): the round trip is proven by the model request carrying the
    // functionResponse and by the closing text built from it.
    let reqs = env.server.model_requests();
    ensure(reqs.len() == 2, || format!("{} model requests", reqs.len()))?;
    let followup = contents_text(reqs[1].body.as_ref());
    ensure(followup.contains("functionResponse") && followup.contains("Output: hi"), || {
        format!("the second request has no shell output: {}", &followup[followup.len().saturating_sub(400)..])
    })?;
    ensure_output(&outcome, &tool_followup_text("hi"))?;
    assert_no_processes(&env.marker("tool")).await?;
    Ok(format!(
        "{GEMINI_TOOL_COMMAND:?} asked and allowed, tool call {} ({title:?}), tool_call_started: {}, {} events",
        done.data.get(keys::TOOL_CALL_ID).unwrap_or(&Value::Null),
        started.is_some(),
        events.len()
    ))
}

async fn gemini_resume(env: &GeminiEnv) -> CaseResult {
    env.server.clear_requests();
    let adapter = env.adapter("resume");
    let session = remember_apricot(&adapter, "session").await?;
    let moved = backdate_chat_file(&env.home, &session)?;
    let (second, _) = resume_run(&adapter, &session, "Which word?", "session").await?;
    ensure_session_loaded(&second)?;
    // Gemini CLI 0.61.0 answers session/load before it has replayed the history
    // (`streamHistory` is not awaited), so the replayed chunks arrive after the response, while
    // the adapter no longer treats updates as replay: they show up in the new turn's output
    // ahead of the new reply. Checked to end with the new reply, and the leak reported.
    let content = &second.output.content;
    ensure(content.ends_with(TEXT_REPLY), || format!("output {content:?}"))?;
    let leaked = content.len() > TEXT_REPLY.len();
    let history = last_history(&env.server, "contents")?;
    ensure_first_exchange(&history)?;
    ensure(history.contains("Which word?"), || "the resumed request does not carry the first exchange".to_owned())?;
    let reqs = env.server.model_requests();
    assert_no_processes(&env.marker("resume")).await?;
    Ok(format!(
        "ACP session {session} loaded ({moved} chat file backdated), {} model requests, late history replay in output: {leaked}",
        reqs.len()
    ))
}

/// Works around a Gemini CLI 0.61.0 bug: the chat file of a session is named
/// `session-<start, to the minute>-<first 8 of the id>.jsonl`, and `session/load` starts a
/// recording for the loaded id *before* reading the history, so a load in the same minute as
/// the first run appends a reset (`$set messages` = the startup context only) to that very file
/// and then finds "No previous sessions found for this project." Renaming the first run's file
/// to an earlier minute (what a load a minute later sees) keeps the history intact. Returns how
/// many files were renamed (an error when none: the CLI stored its chats elsewhere).
fn backdate_chat_file(home: &Path, session: &str) -> Result<usize, String> {
    let short = session.get(..8).ok_or_else(|| format!("session id {session:?} is too short"))?;
    let tmp = home.join(".gemini").join("tmp");
    let mut moved = 0;
    for project in std::fs::read_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))? {
        let chats = project.map_err(|e| e.to_string())?.path().join("chats");
        let Ok(files) = std::fs::read_dir(&chats) else { continue };
        for file in files {
            let path = file.map_err(|e| e.to_string())?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("session-") && name.ends_with(&format!("-{short}.jsonl")) {
                let to = chats.join(format!("session-2000-01-01T00-00-{short}.jsonl"));
                std::fs::rename(&path, &to).map_err(|e| format!("{} -> {}: {e}", path.display(), to.display()))?;
                moved += 1;
            }
        }
    }
    ensure(moved > 0, || format!("no chat file of session {session} under {}", tmp.display()))?;
    Ok(moved)
}

async fn gemini_cancel(env: &GeminiEnv) -> CaseResult {
    env.server.clear_requests();
    cancel_after_first_delta(Arc::new(env.adapter("cancel")), &env.marker("cancel"), &env.server).await
}
