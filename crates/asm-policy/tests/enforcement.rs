//! PolicyHook through the real runtime: SessionManager + the memory store + the scripted
//! adapter. Each limit, the three actions, stacking, preflight, usage modes, the duration
//! timer with a silent provider, cost on every outcome, and the compiled CLI options.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;

use asm_core::{ErrorCode, EventKind, Result, RunInput, RunStatus, SessionId, StoredEvent, TokenUsage};
use asm_policy::{CliTarget, Limit, Policy, PolicyHook, PricingTable, Rates, ViolationAction};
use asm_ports::{EventQuery, ExecuteOutcome, ProviderEvent};
use asm_runtime::{NewSession, RunOptions, RunResult, SessionManager};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::{ScriptEnd, ScriptedAdapter};

struct Harness {
    manager: SessionManager,
    adapter: ScriptedAdapter,
    session: SessionId,
}

async fn harness(adapter: ScriptedAdapter) -> Harness {
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone());
    let session = manager.start_session(NewSession::new("agent")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    Harness { manager, adapter, session: session.id }
}

impl Harness {
    async fn run(&self, hook: PolicyHook) -> (asm_core::RunId, Result<RunResult>) {
        let run = self.manager.start_run(&self.session, RunInput::user("go"), RunOptions::default()).await.unwrap();
        let result = self.manager.execute_run(&run.id, RunOptions::new().hook(hook)).await;
        (run.id, result)
    }
    async fn events(&self) -> Vec<StoredEvent> {
        self.manager.session_events(&self.session, EventQuery::new()).await.unwrap()
    }
    async fn kinds(&self) -> Vec<EventKind> {
        self.events().await.iter().map(|e| e.kind).collect()
    }
    async fn violations(&self) -> Vec<StoredEvent> {
        self.events().await.into_iter().filter(|e| e.kind == EventKind::PolicyViolation).collect()
    }
}

fn tool(id: &str, name: &str) -> ProviderEvent {
    ProviderEvent::new(EventKind::ToolCallStarted)
        .data("tool_call_id", id)
        .data("tool_name", name)
        .data("tool_input", json!({"command": "ls"}))
}

fn tool_done(id: &str, name: &str) -> ProviderEvent {
    ProviderEvent::new(EventKind::ToolCallCompleted)
        .data("tool_call_id", id)
        .data("tool_name", name)
        .data("tool_output", "ok")
}

fn usage(input: u64, output: u64, mode: &str) -> ProviderEvent {
    ProviderEvent::new(EventKind::TokenUsageUpdated)
        .data("input_tokens", input)
        .data("output_tokens", output)
        .data("usage_mode", mode)
}

fn policy(action: ViolationAction, limit: Limit) -> Policy {
    Policy::builder("budget").limit(limit).on_violation(action).build().unwrap()
}

fn succeed() -> ScriptEnd {
    ScriptEnd::Succeed(ExecuteOutcome::text("done"))
}

#[tokio::test]
async fn a_token_budget_cancels_the_run_even_though_the_provider_succeeds() {
    let adapter = ScriptedAdapter::new().emit(usage(80, 10, "delta")).emit(usage(30, 5, "delta")).end(succeed());
    let h = harness(adapter).await;
    let (run_id, result) = h.run(PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxTotalTokens(100)))).await;
    let error = result.unwrap_err();
    assert_eq!(error.code(), ErrorCode::PolicyViolation);
    assert_eq!(error.details()["policy"], "budget");
    let run = h.manager.get_run(&run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.unwrap().code(), ErrorCode::PolicyViolation);
    let violations = h.violations().await;
    assert_eq!(violations.len(), 1, "one violation for the one exceeded limit");
    assert_eq!(violations[0].data["kind"], "budget_exceeded");
    assert_eq!(violations[0].data["details"]["metric"], "total_tokens");
    assert_eq!(violations[0].data["details"]["actual"], 125);
    assert_eq!(violations[0].data["details"]["limit"], 100);
}

#[tokio::test]
async fn a_budget_exceeded_only_in_the_final_outcome_still_fails_a_cancel_policy() {
    let outcome = ExecuteOutcome::text("done").usage(TokenUsage {
        input_tokens: 500,
        output_tokens: 10,
        ..TokenUsage::default()
    });
    let h = harness(ScriptedAdapter::new().end(ScriptEnd::Succeed(outcome))).await;
    let (_, result) = h.run(PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxTotalTokens(100)))).await;
    assert_eq!(result.unwrap_err().code(), ErrorCode::PolicyViolation);
    assert_eq!(h.violations().await.len(), 1);
}

#[tokio::test]
async fn cumulative_usage_reports_are_not_counted_twice() {
    let cumulative =
        ScriptedAdapter::new().emit(usage(40, 20, "cumulative")).emit(usage(60, 30, "cumulative")).end(succeed());
    let h = harness(cumulative).await;
    let (_, result) = h.run(PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxTotalTokens(100)))).await;
    let result = result.expect("90 tokens in all is within 100");
    assert_eq!(result.run.metadata["policy"]["usage"]["total_tokens"], 90);
    assert!(h.violations().await.is_empty());

    let delta = ScriptedAdapter::new().emit(usage(40, 20, "delta")).emit(usage(60, 30, "delta")).end(succeed());
    let h = harness(delta).await;
    let (_, result) = h.run(PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxTotalTokens(100)))).await;
    assert_eq!(result.unwrap_err().code(), ErrorCode::PolicyViolation, "150 delta tokens exceed 100");
}

#[tokio::test]
async fn tool_calls_are_counted_once_per_call_id() {
    let adapter = ScriptedAdapter::new()
        .emit(tool("t1", "Read"))
        .emit(tool_done("t1", "Read"))
        .emit(tool("t2", "Read"))
        .emit(tool_done("t2", "Read"))
        .end(succeed());
    let h = harness(adapter).await;
    let (_, result) = h.run(PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxToolCalls(2)))).await;
    assert_eq!(result.expect("two calls are within 2").run.metadata["policy"]["usage"]["tool_calls"], 2);

    let adapter = ScriptedAdapter::new().emit(tool("t1", "Read")).emit(tool("t2", "Read")).emit(tool("t3", "Read"));
    let h = harness(adapter.end(succeed())).await;
    let (_, result) = h.run(PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxToolCalls(2)))).await;
    assert_eq!(result.unwrap_err().code(), ErrorCode::PolicyViolation);
    let violations = h.violations().await;
    assert_eq!(violations[0].data["details"]["metric"], "tool_calls");
    assert_eq!(violations[0].data["details"]["actual"], 3);
    assert_eq!(h.adapter.requests().len(), 1);
}

#[tokio::test]
async fn a_cost_budget_prices_the_usage_with_the_table_including_cache_tokens() {
    let table = PricingTable::empty().set_model("scripted", "m", Rates::new(0.001, 0.002).with_cache(0.0001, 0.0005));
    let cached = ProviderEvent::new(EventKind::TokenUsageUpdated)
        .data("input_tokens", 10)
        .data("output_tokens", 5)
        .data("cache_read_tokens", 1000)
        .data("model", "m-2026");
    // 10 * 0.001 + 5 * 0.002 + 1000 * 0.0001 = 0.12 > 0.1
    let h = harness(ScriptedAdapter::new().emit(cached).end(succeed())).await;
    let hook = PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxCostUsd(0.1))).pricing(table);
    let (run_id, result) = h.run(hook).await;
    assert_eq!(result.unwrap_err().code(), ErrorCode::PolicyViolation);
    let violation = &h.violations().await[0];
    assert_eq!(violation.data["details"]["metric"], "cost_usd");
    let cost = h.manager.get_run(&run_id).await.unwrap().cost_usd.unwrap();
    assert!((cost - 0.12).abs() < 1e-9, "the failed run carries its cost, got {cost}");
}

#[tokio::test]
async fn a_cost_limit_without_rates_warns_and_is_not_checked() {
    let h = harness(ScriptedAdapter::new().emit(usage(1_000_000, 0, "delta")).end(succeed())).await;
    let hook = PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxCostUsd(0.01))).pricing(PricingTable::empty());
    let (_, result) = h.run(hook).await;
    let run = result.expect("an unknown cost is not a violation").run;
    assert_eq!(run.metadata["policy"]["metadata"]["warnings"], json!(["missing_cost_rates"]));
    assert_eq!(run.metadata["policy"]["metadata"]["cost_supported"], false);
    assert_eq!(run.cost_usd, None);
}

#[tokio::test(start_paused = true)]
async fn the_duration_timer_stops_a_silent_provider() {
    let h = harness(ScriptedAdapter::new().hanging()).await;
    let hook = PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxDurationMs(5_000)));
    let started = tokio::time::Instant::now();
    let (run_id, result) =
        tokio::time::timeout(Duration::from_secs(60), h.run(hook)).await.expect("the timer must stop the run");
    assert!(started.elapsed() >= Duration::from_millis(5_000), "not before the limit");
    assert!(started.elapsed() < Duration::from_secs(10), "soon after the limit, not at the run timeout");
    assert_eq!(result.unwrap_err().code(), ErrorCode::PolicyViolation);
    let run = h.manager.get_run(&run_id).await.unwrap();
    assert_eq!(run.error.unwrap().code(), ErrorCode::PolicyViolation);
    let violations = h.violations().await;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].data["details"]["metric"], "duration_ms");
}

#[tokio::test(start_paused = true)]
async fn a_run_within_its_duration_is_not_touched_by_the_timer() {
    let adapter = ScriptedAdapter::new().delay(Duration::from_millis(100)).end(succeed());
    let h = harness(adapter).await;
    let hook = PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxDurationMs(5_000)));
    let (_, result) = h.run(hook).await;
    result.expect("100 ms is within 5 s");
    assert!(h.violations().await.is_empty());
}

#[tokio::test]
async fn a_denied_tool_with_warn_keeps_success_and_carries_the_verdict() {
    let adapter = ScriptedAdapter::new().emit(tool("t1", "Bash")).emit(tool_done("t1", "Bash")).end(succeed());
    let h = harness(adapter).await;
    let warn = Policy::builder("guard").deny(["Bash"]).on_violation(ViolationAction::Warn).build().unwrap();
    let (_, result) = h.run(PolicyHook::new(warn)).await;
    let run = result.expect("warn keeps success").run;
    assert_eq!(run.status, RunStatus::Completed);
    let verdict = &run.output.unwrap().extra["policy"];
    assert_eq!(verdict["action"], "warn");
    assert_eq!(verdict["violations"].as_array().unwrap().len(), 1, "started + completed of one call: once");
    assert_eq!(verdict["violations"][0]["details"]["tool_name"], "Bash");
    assert_eq!(verdict["violations"][0]["details"]["rule"], "deny");
    assert_eq!(h.violations().await.len(), 1);
}

#[tokio::test]
async fn request_approval_emits_an_approval_request_and_the_run_goes_on() {
    let adapter = ScriptedAdapter::new().emit(tool("t1", "Bash")).emit(tool("t2", "Read")).end(succeed());
    let h = harness(adapter).await;
    let policy = Policy::builder("ask").allow(["Read"]).on_violation(ViolationAction::RequestApproval).build().unwrap();
    let (_, result) = h.run(PolicyHook::new(policy)).await;
    let run = result.expect("request_approval keeps success").run;
    assert_eq!(run.output.unwrap().extra["policy"]["action"], "request_approval");
    let events = h.events().await;
    let approvals: Vec<_> = events.iter().filter(|e| e.kind == EventKind::ToolApprovalRequested).collect();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].data["tool_name"], "Bash");
    assert_eq!(approvals[0].data["tool_call_id"], "t1");
    assert_eq!(approvals[0].data["policy_name"], "ask");
    assert_eq!(approvals[0].data["violation_kind"], "tool_denied");
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    let violation_at = kinds.iter().position(|k| *k == EventKind::PolicyViolation).unwrap();
    let approval_at = kinds.iter().position(|k| *k == EventKind::ToolApprovalRequested).unwrap();
    assert!(violation_at < approval_at && approval_at < kinds.len() - 1);
}

#[tokio::test]
async fn a_denied_tool_with_cancel_stops_the_provider() {
    let adapter = ScriptedAdapter::new()
        .emit(tool("t1", "Bash"))
        .emit(ProviderEvent::new(EventKind::MessageStreamed).data("content", "never").data("delta", "never"))
        .end(succeed());
    let h = harness(adapter).await;
    let policy = Policy::builder("guard").deny(["Bash"]).build().unwrap();
    let (_, result) = h.run(PolicyHook::new(policy)).await;
    assert_eq!(result.unwrap_err().code(), ErrorCode::PolicyViolation);
    let kinds = h.kinds().await;
    assert!(!kinds.contains(&EventKind::MessageStreamed), "the provider was stopped: {kinds:?}");
    assert_eq!(kinds.last(), Some(&EventKind::RunFailed));
}

#[tokio::test]
async fn stacked_policies_enforce_the_strictest_action_and_every_rule() {
    let adapter = ScriptedAdapter::new().emit(tool("t1", "WebFetch")).end(succeed());
    let h = harness(adapter).await;
    let org = Policy::builder("org").deny(["WebFetch"]).on_violation(ViolationAction::Warn).build().unwrap();
    let team = Policy::builder("team").deny(["Bash"]).on_violation(ViolationAction::Cancel).build().unwrap();
    let (_, result) = h.run(PolicyHook::new(Policy::stack([org, team]))).await;
    let error = result.unwrap_err();
    assert_eq!(error.code(), ErrorCode::PolicyViolation, "cancel wins over warn");
    assert_eq!(error.details()["policy"], "org + team");
}

#[tokio::test]
async fn a_preflight_refusal_fails_the_run_before_the_provider_and_writes_nothing_of_its_own() {
    for (policy, check) in [
        (Policy::builder("p").allow(Vec::<String>::new()).build().unwrap(), "empty_allow_list"),
        (Policy::builder("p").limit(Limit::MaxTotalTokens(0)).build().unwrap(), "zero_budget"),
        (Policy::builder("p").allow(["Bash"]).deny(["Bash"]).build().unwrap(), "contradictory_rules"),
    ] {
        let h = harness(ScriptedAdapter::replying("hi")).await;
        let (run_id, result) = h.run(PolicyHook::new(policy.clone())).await;
        let error = result.unwrap_err();
        assert_eq!(error.code(), ErrorCode::PolicyViolation);
        assert_eq!(error.details()["check"], check);
        assert!(h.adapter.requests().is_empty(), "the provider was never called");
        let kinds = h.kinds().await;
        assert_eq!(
            kinds,
            [
                EventKind::SessionCreated,
                EventKind::SessionStarted,
                EventKind::RunStarted,
                EventKind::MessageSent,
                EventKind::RunFailed
            ],
            "only the runtime's lifecycle events: nothing from the policy"
        );
        let run = h.manager.get_run(&run_id).await.unwrap();
        assert!(!run.metadata.contains_key("policy"));

        // Checked up front, not even a run is created.
        assert_eq!(PolicyHook::checked(policy).unwrap_err().details()["check"], check);
    }
}

#[tokio::test]
async fn the_policy_is_compiled_into_the_claude_and_codex_per_run_options() {
    let policy = Policy::builder("p")
        .allow(["Read", "Bash", "Edit"])
        .deny(["Bash", "WebFetch"])
        .limit(Limit::MaxToolCalls(9))
        .build()
        .unwrap();
    // Allow ∩ deny is refused by the preflight; use separate policies for the compile check.
    assert!(policy.preflight().is_err());
    let policy =
        Policy::builder("p").allow(["Read", "Edit"]).deny(["WebFetch"]).limit(Limit::MaxToolCalls(9)).build().unwrap();

    let h = harness(ScriptedAdapter::replying("hi").named("claude")).await;
    let (_, result) = h.run(PolicyHook::new(policy.clone())).await;
    let run = result.unwrap().run;
    let options = &h.adapter.requests()[0].options;
    assert_eq!(options["allowed_tools"], json!(["Read", "Edit"]));
    assert_eq!(options["disallowed_tools"], json!(["WebFetch"]));
    assert_eq!(options["max_turns"], 10);
    assert_eq!(options["permission_mode"], "default");
    assert_eq!(run.metadata["policy"]["enforcement"]["target"], "claude");

    let h = harness(ScriptedAdapter::replying("hi").named("codex")).await;
    h.run(PolicyHook::new(policy.clone())).await.1.unwrap();
    let options = &h.adapter.requests()[0].options;
    assert_eq!(options["permission_mode"], "plan", "apply_patch is outside the allow list: read-only sandbox");
    assert!(!options.contains_key("allowed_tools") && !options.contains_key("max_turns"));

    for name in ["amp", "scripted"] {
        let h = harness(ScriptedAdapter::replying("hi").named(name)).await;
        h.run(PolicyHook::new(policy.clone())).await.1.unwrap();
        assert!(h.adapter.requests()[0].options.is_empty(), "{name}: nothing compiled");
    }

    let h = harness(ScriptedAdapter::replying("hi")).await;
    h.run(PolicyHook::new(policy.clone()).target(CliTarget::Claude)).await.1.unwrap();
    assert_eq!(h.adapter.requests()[0].options["max_turns"], 10, "an explicit target wins");

    let warn = Policy::builder("w").deny(["Bash"]).on_violation(ViolationAction::Warn).build().unwrap();
    let h = harness(ScriptedAdapter::replying("hi").named("claude")).await;
    h.run(PolicyHook::new(warn)).await.1.unwrap();
    assert!(h.adapter.requests()[0].options.is_empty(), "warn policies only observe");
}

fn haiku_cost(usage: &TokenUsage) -> f64 {
    PricingTable::builtin().cost("claude", Some("claude-haiku-4-5"), usage).unwrap()
}

#[tokio::test]
async fn every_outcome_carries_its_cost() {
    let used =
        TokenUsage { input_tokens: 1000, output_tokens: 200, cache_read_tokens: 5000, cache_creation_tokens: 100 };
    let unlimited = || Policy::builder("cost").on_violation(ViolationAction::Warn).build().unwrap();

    // Completed: priced from the outcome's usage and model.
    let outcome = ExecuteOutcome::text("ok").usage(used).model("claude-haiku-4-5-20251001");
    let h = harness(ScriptedAdapter::new().named("claude").end(ScriptEnd::Succeed(outcome))).await;
    let (_, result) = h.run(PolicyHook::new(unlimited())).await;
    let cost = result.unwrap().run.cost_usd.unwrap();
    assert!((cost - haiku_cost(&used)).abs() < 1e-12, "completed: {cost}");

    // Failed: priced from the reported usage events.
    let report = ProviderEvent::new(EventKind::TokenUsageUpdated)
        .data("input_tokens", used.input_tokens)
        .data("output_tokens", used.output_tokens)
        .data("cache_read_tokens", used.cache_read_tokens)
        .data("cache_creation_tokens", used.cache_creation_tokens)
        .data("model", "claude-haiku-4-5");
    let failing = ScriptedAdapter::new()
        .named("claude")
        .emit(report.clone())
        .failing(asm_core::Error::new(ErrorCode::ProviderError, "boom"));
    let h = harness(failing).await;
    let (run_id, result) = h.run(PolicyHook::new(unlimited())).await;
    assert_eq!(result.unwrap_err().code(), ErrorCode::ProviderError, "provider errors pass through");
    let run = h.manager.get_run(&run_id).await.unwrap();
    assert!((run.cost_usd.unwrap() - haiku_cost(&used)).abs() < 1e-12, "failed");
    assert!(run.metadata.contains_key("policy"));

    // Cancelled: priced from what was reported before the cancel.
    let hanging = ScriptedAdapter::new().named("claude").emit(report).hanging();
    let h = harness(hanging).await;
    let run = h.manager.start_run(&h.session, RunInput::user("go"), RunOptions::default()).await.unwrap();
    let manager = h.manager.clone();
    let run_id = run.id.clone();
    let task = tokio::spawn(async move {
        manager.execute_run(&run_id, RunOptions::new().hook(PolicyHook::new(unlimited()))).await
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while !h.kinds().await.contains(&EventKind::TokenUsageUpdated) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the usage event is persisted within 10 s");
    h.manager.cancel_run(&run.id).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), task).await.expect("the run ends").unwrap();
    assert_eq!(result.unwrap_err().code(), ErrorCode::Cancelled);
    let run = h.manager.get_run(&run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!((run.cost_usd.unwrap() - haiku_cost(&used)).abs() < 1e-12, "cancelled");
}

#[tokio::test]
async fn one_shared_hook_keeps_separate_state_per_run() {
    let adapter = ScriptedAdapter::new().emit(usage(60, 0, "delta")).end(succeed());
    let h = harness(adapter).await;
    let hook = std::sync::Arc::new(PolicyHook::new(policy(ViolationAction::Cancel, Limit::MaxTotalTokens(100))));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let run = h.manager.start_run(&h.session, RunInput::user("go"), RunOptions::default()).await.unwrap();
        ids.push(run.id);
    }
    for id in &ids {
        let result = h.manager.execute_run(id, RunOptions::new().hook(hook.clone())).await;
        result.expect("60 tokens per run: each run has its own budget");
    }
    assert!(hook.status(&ids[0]).is_none(), "state is dropped at the end");
}

#[tokio::test(start_paused = true)]
async fn a_warn_duration_limit_found_by_the_timer_is_reported_and_the_run_completes() {
    let adapter = ScriptedAdapter::new().delay(Duration::from_secs(10)).end(succeed());
    let h = harness(adapter).await;
    let hook = PolicyHook::new(policy(ViolationAction::Warn, Limit::MaxDurationMs(1_000)));
    let (_, result) = tokio::time::timeout(Duration::from_secs(60), h.run(hook)).await.expect("the run ends");
    let run = result.expect("warn keeps success").run;
    let verdict = &run.output.unwrap().extra["policy"];
    assert_eq!(verdict["violations"][0]["details"]["metric"], "duration_ms");
    let violations = h.violations().await;
    assert_eq!(violations.len(), 1, "the timer's finding is emitted once, at the end");
    let kinds = h.kinds().await;
    assert_eq!(kinds.last(), Some(&EventKind::RunCompleted));
}

#[tokio::test]
async fn request_approval_for_a_budget_asks_once() {
    let adapter = ScriptedAdapter::new().emit(tool("t1", "Read")).emit(tool("t2", "Read")).emit(tool("t3", "Read"));
    let h = harness(adapter.end(succeed())).await;
    let hook = PolicyHook::new(policy(ViolationAction::RequestApproval, Limit::MaxToolCalls(1)));
    let (_, result) = h.run(hook).await;
    result.expect("request_approval keeps success");
    let events = h.events().await;
    let approvals: Vec<_> = events.iter().filter(|e| e.kind == EventKind::ToolApprovalRequested).collect();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].data["violation_kind"], "budget_exceeded");
}
