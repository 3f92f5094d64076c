//! What hooks can ask of a run beyond events and aborts: adapter options, run metadata, output
//! entries, a cost, and an abort from another task; and a delegating adapter naming the adapter
//! that served the run.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use async_trait::async_trait;

use asm_core::{Error, ErrorCode, EventKind, Result, RunInput, RunStatus, SessionId, keys};
use asm_ports::{EventQuery, ExecuteOutcome, HookAction, RunContext, RunFinish, RunHook};
use asm_runtime::{NewSession, RunOptions, SessionManager};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::{ScriptEnd, ScriptedAdapter};

async fn active_session(manager: &SessionManager) -> SessionId {
    let session = manager.start_session(NewSession::new("agent")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    session.id
}

async fn run(manager: &SessionManager, session: &SessionId, options: RunOptions) -> Result<asm_runtime::RunResult> {
    let run = manager.start_run(session, RunInput::user("x"), RunOptions::default()).await?;
    manager.execute_run(&run.id, options).await
}

#[derive(Debug)]
struct Annotating;

#[async_trait]
impl RunHook for Annotating {
    async fn on_start(&self, _ctx: &RunContext) -> Result<HookAction> {
        Ok(HookAction::none()
            .adapter_option("allowed_tools", serde_json::json!(["Read"]))
            .adapter_option("model", "m2"))
    }
    async fn on_finish(&self, _ctx: &RunContext, _finish: &RunFinish) -> Result<HookAction> {
        Ok(HookAction::none()
            .run_metadata("workspace", serde_json::json!({"files_changed": 2}))
            .output_extra("policy", serde_json::json!({"action": "warn"}))
            .cost_usd(0.25))
    }
}

#[tokio::test]
async fn hook_options_metadata_output_and_cost_reach_the_adapter_and_the_run_record() {
    let adapter = ScriptedAdapter::replying("done");
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone());
    let session = active_session(&manager).await;
    let options = RunOptions::default().adapter_option("model", "m1").adapter_option("user_key", 1).hook(Annotating);
    let result = run(&manager, &session, options).await.unwrap();

    let request = adapter.requests().pop().unwrap();
    assert_eq!(request.options["model"], "m2", "a hook's option wins over the run's");
    assert_eq!(request.options["user_key"], 1, "the run's other options are kept");
    assert_eq!(request.options["allowed_tools"], serde_json::json!(["Read"]));

    let run = manager.get_run(&result.run.id).await.unwrap();
    assert_eq!(run.metadata["workspace"]["files_changed"], 2);
    assert_eq!(run.output.unwrap().extra["policy"]["action"], "warn");
    assert_eq!(run.cost_usd, Some(0.25), "the hook's cost fills in when the provider reported none");
}

#[tokio::test]
async fn a_provider_reported_cost_is_kept_over_a_hooks_and_failed_runs_carry_the_hooks_cost() {
    let adapter = ScriptedAdapter::new().end(ScriptEnd::Succeed(ExecuteOutcome::text("ok").cost(1.5)));
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let session = active_session(&manager).await;
    let result = run(&manager, &session, RunOptions::default().hook(Annotating)).await;
    assert_eq!(result.unwrap().run.cost_usd, Some(1.5));

    let failing = ScriptedAdapter::new().failing(Error::new(ErrorCode::ProviderError, "boom"));
    let manager = SessionManager::new(InMemorySessionStore::new(), failing);
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::default().hook(Annotating)).await.unwrap_err();
    let stored = manager.get_run(&run.id).await.unwrap();
    assert_eq!(stored.status, RunStatus::Failed);
    assert_eq!(stored.cost_usd, Some(0.25));
    assert_eq!(stored.metadata["workspace"]["files_changed"], 2, "run metadata is kept on every outcome");
    let events = manager.session_events(&session, EventQuery::new().kind(EventKind::RunFailed)).await.unwrap();
    assert_eq!(events[0].data[keys::TOTAL_COST_USD], 0.25);
}

/// Aborts the run from a spawned task, the way a budget timer does.
#[derive(Debug)]
struct AbortFromTask;

#[async_trait]
impl RunHook for AbortFromTask {
    async fn on_start(&self, ctx: &RunContext) -> Result<HookAction> {
        let control = ctx.control.clone();
        tokio::spawn(async move { control.abort(Error::new(ErrorCode::PolicyViolation, "max_duration_ms exceeded")) });
        Ok(HookAction::none())
    }
}

#[tokio::test]
async fn a_hook_can_abort_a_hanging_run_from_another_task() {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::new().hanging());
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        manager.execute_run(&run.id, RunOptions::default().hook(AbortFromTask)),
    )
    .await
    .expect("the abort must stop the hanging provider within 10 s");
    assert_eq!(outcome.unwrap_err().code(), ErrorCode::PolicyViolation);
    assert_eq!(manager.get_run(&run.id).await.unwrap().status, RunStatus::Failed);
}

#[tokio::test]
async fn the_adapter_that_served_the_run_is_its_provider_and_keeps_the_session_handle() {
    let adapter = ScriptedAdapter::new()
        .named("router")
        .end(ScriptEnd::Succeed(ExecuteOutcome::text("ok").served_by("codex").provider_session("thread-1")));
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let session = active_session(&manager).await;
    let result = run(&manager, &session, RunOptions::default()).await.unwrap();
    assert_eq!(result.run.provider.as_deref(), Some("codex"));
    let stored = manager.get_session(&session).await.unwrap();
    assert_eq!(stored.metadata["provider_sessions"]["codex"][keys::PROVIDER_SESSION_ID], "thread-1");
    assert!(stored.metadata["provider_sessions"].get("router").is_none());

    let failing = ScriptedAdapter::new()
        .named("router")
        .failing(Error::new(ErrorCode::ProviderRateLimited, "429").with_detail(keys::PROVIDER, "claude"));
    let manager = SessionManager::new(InMemorySessionStore::new(), failing);
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    manager.execute_run(&run.id, RunOptions::default()).await.unwrap_err();
    assert_eq!(manager.get_run(&run.id).await.unwrap().provider.as_deref(), Some("claude"));
}
