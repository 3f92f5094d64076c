//! The router end to end: through `SessionManager` and the memory store where the run's record
//! matters, directly where only the router does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;

use asm_core::{Capability, CapabilityType, Error, ErrorCode, EventKind, Result, RunInput, RunStatus, SessionId, keys};
use asm_ports::{EventQuery, EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent};
use asm_routing::{
    BreakerConfig, BreakerState, ManualClock, ProviderRouter, ROUTING_OPTION, RouterStatus, RoutingOptions,
    RoutingPolicy, Strategy,
};
use asm_runtime::{Continuation, NewSession, RunOptions, RunResult, SessionManager};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::{ScriptEnd, ScriptedAdapter};

const WAIT: Duration = Duration::from_secs(10);

fn rate_limited() -> Error {
    Error::new(ErrorCode::ProviderRateLimited, "429 Too Many Requests")
}

/// One planned reaction of a [`Queue`] adapter.
#[derive(Clone)]
enum Step {
    Reply(&'static str),
    Fail(Error),
    /// Emit an event, then wait for the gate before replying.
    Gated(Arc<Notify>, &'static str),
}

/// An adapter that reacts to each call with the next planned step (the last one repeats).
#[derive(Clone, Debug)]
struct Queue {
    name: &'static str,
    steps: Arc<Mutex<VecDeque<StepBox>>>,
    calls: Arc<Mutex<usize>>,
}

struct StepBox(Step);
impl std::fmt::Debug for StepBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("step")
    }
}

impl Queue {
    fn new(name: &'static str, steps: Vec<Step>) -> Self {
        Self { name, steps: Arc::new(Mutex::new(steps.into_iter().map(StepBox).collect())), calls: Arc::default() }
    }
    fn calls(&self) -> usize {
        *self.calls.lock()
    }
}

#[async_trait]
impl ProviderAdapter for Queue {
    fn name(&self) -> &str {
        self.name
    }
    fn capabilities(&self) -> Vec<Capability> {
        Capability::list(&[("chat", CapabilityType::Sampling)])
    }
    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        *self.calls.lock() += 1;
        let step = {
            let mut steps = self.steps.lock();
            if steps.len() > 1 { steps.pop_front().unwrap().0 } else { steps.front().unwrap().0.clone() }
        };
        let streamed = match &step {
            Step::Reply(text) | Step::Gated(_, text) => (*text).to_owned(),
            Step::Fail(_) => format!("partial output of {}", self.name),
        };
        sink.emit(
            ProviderEvent::new(EventKind::MessageStreamed).data("delta", streamed.clone()).data("content", streamed),
        )
        .await?;
        match step {
            Step::Reply(text) => Ok(ExecuteOutcome::text(text)),
            Step::Fail(error) => Err(error),
            Step::Gated(gate, text) => {
                tokio::select! {
                    () = gate.notified() => Ok(ExecuteOutcome::text(text)),
                    () = request.cancel.cancelled() => Err(Error::new(ErrorCode::Cancelled, "cancelled")),
                }
            }
        }
    }
}

async fn active_session(manager: &SessionManager) -> SessionId {
    let session = manager.start_session(NewSession::new("agent")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    session.id
}

async fn run_with(manager: &SessionManager, session: &SessionId, text: &str, options: RunOptions) -> Result<RunResult> {
    let run = manager.start_run(session, RunInput::user(text), RunOptions::default()).await?;
    manager.execute_run(&run.id, options).await
}

fn routing(options: &RoutingOptions) -> RunOptions {
    RunOptions::new().adapter_option(ROUTING_OPTION, options.to_json())
}

/// Executes `run_id` with the default options on a spawned task.
fn spawn_execute_run(manager: &SessionManager, run_id: &asm_core::RunId) -> tokio::task::JoinHandle<Result<RunResult>> {
    let manager = manager.clone();
    let run_id = run_id.clone();
    tokio::spawn(async move { manager.execute_run(&run_id, RunOptions::default()).await })
}

/// A native-resume adapter "codex" whose runs answer "from codex" in its thread "thread-1".
fn codex_resuming_thread_1() -> ScriptedAdapter {
    ScriptedAdapter::new()
        .named("codex")
        .with_native_resume()
        .end(ScriptEnd::Succeed(ExecuteOutcome::text("from codex").provider_session("thread-1")))
}

/// Run options with automatic continuation, routed to `adapter` first.
fn auto_continuation_preferring(adapter: &str) -> RunOptions {
    RunOptions::new()
        .continuation(Continuation::Auto)
        .adapter_option(ROUTING_OPTION, RoutingOptions::new().prefer([adapter]).to_json())
}

#[tokio::test]
async fn a_retryable_error_fails_over_and_the_run_records_the_provider_that_served_it() {
    let claude = ScriptedAdapter::new()
        .named("claude")
        .emit(ProviderEvent::new(EventKind::MessageStreamed).data("delta", "par").data("content", "par"))
        .failing(rate_limited());
    let codex = ScriptedAdapter::replying("Done by codex").named("codex");
    let router = ProviderRouter::builder().adapter(claude.clone()).adapter(codex.clone()).build().unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router);
    let session = active_session(&manager).await;

    let result = run_with(&manager, &session, "fix it", RunOptions::default()).await.unwrap();
    assert_eq!(result.output().content, "Done by codex");
    let stored = manager.get_run(&result.run.id).await.unwrap();
    assert_eq!(stored.status, RunStatus::Completed);
    assert_eq!(stored.provider.as_deref(), Some("codex"), "the served provider, not the router");
    assert_eq!(stored.metadata["routing"]["failover_from"], "claude");
    assert_eq!(stored.metadata["routing"]["failover_reason"], "provider_rate_limited");
    assert_eq!(stored.metadata["routing"]["routing_attempt"], 2);
    assert_eq!(claude.requests().len(), 1);
    assert_eq!(codex.requests().len(), 1);

    let events = manager.session_events(&session, EventQuery::new().run(result.run.id.clone())).await.unwrap();
    let adapter_events: Vec<_> = events.iter().filter(|e| e.metadata.contains_key("routed_provider")).collect();
    let first = adapter_events.iter().find(|e| e.metadata["routed_provider"] == "claude").expect("claude's event");
    assert_eq!(first.metadata["routing_attempt"], 1);
    assert_eq!(first.metadata["routing_candidates"], json!(["claude", "codex"]));
    assert!(!first.metadata.contains_key("failover_from"));
    let from_codex: Vec<_> = adapter_events.iter().filter(|e| e.metadata["routed_provider"] == "codex").collect();
    assert!(from_codex.len() >= 3, "codex streamed, received and reported usage");
    for event in from_codex {
        assert_eq!(event.metadata["routing_attempt"], 2);
        assert_eq!(event.metadata["failover_from"], "claude");
        assert_eq!(event.metadata["failover_reason"], "provider_rate_limited");
        assert_eq!(event.metadata["routing_candidates"], json!(["claude", "codex"]));
        assert_eq!(event.provider.as_deref(), Some("codex"), "stored under the served provider, not the router");
    }
    assert_eq!(first.provider.as_deref(), Some("claude"));
    let session_record = manager.get_session(&session).await.unwrap();
    assert!(session_record.metadata["provider_sessions"].get("router").is_none());
}

#[tokio::test]
async fn a_non_retryable_error_does_not_fail_over() {
    let claude = ScriptedAdapter::new().named("claude").failing(Error::new(ErrorCode::ProviderError, "bad request"));
    let codex = ScriptedAdapter::replying("never").named("codex");
    let router = ProviderRouter::builder().adapter(claude).adapter(codex.clone()).build().unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router);
    let session = active_session(&manager).await;
    let error = run_with(&manager, &session, "x", RunOptions::default()).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ProviderError);
    assert_eq!(error.details()[keys::PROVIDER], "claude");
    assert!(codex.requests().is_empty(), "codex must not be called");
    let runs = manager.session_runs(&session).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].provider.as_deref(), Some("claude"));
}

#[tokio::test]
async fn when_every_attempt_fails_the_error_is_the_last_one_with_all_attempts_listed() {
    let router = ProviderRouter::builder()
        .adapter(ScriptedAdapter::new().named("a").failing(rate_limited()))
        .adapter(ScriptedAdapter::new().named("b").failing(Error::new(ErrorCode::ProviderTimeout, "slow")))
        .adapter(ScriptedAdapter::new().named("c").failing(rate_limited()))
        .policy(RoutingPolicy::new().max_attempts(2))
        .build()
        .unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router);
    let session = active_session(&manager).await;
    let error = run_with(&manager, &session, "x", RunOptions::default()).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ProviderTimeout, "the last attempt's code");
    assert_eq!(error.details()[keys::PROVIDER], "b");
    let attempts = error.details()["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "max_attempts bounds the attempts");
    assert_eq!(attempts[0]["provider"], "a");
    let cause = std::error::Error::source(&error).expect("the last error is the source");
    assert!(cause.to_string().contains("slow"));
    assert_eq!(manager.session_runs(&session).await.unwrap()[0].provider.as_deref(), Some("b"));
}

#[tokio::test]
async fn no_candidates_unknown_strategy_and_bad_options_are_typed_errors_before_any_call() {
    let claude = ScriptedAdapter::replying("x").named("claude");
    let router = ProviderRouter::builder().adapter(claude.clone()).build().unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router);
    let session = active_session(&manager).await;

    let error =
        run_with(&manager, &session, "x", routing(&RoutingOptions::new().exclude(["claude"]))).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ProviderUnavailable);
    assert_eq!(error.details()["excluded"], json!(["claude"]));

    let options = RunOptions::new().adapter_option(ROUTING_OPTION, json!({"strategy": "fastest"}));
    let error = run_with(&manager, &session, "x", options).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ValidationError);
    assert_eq!(error.details()["value"], "fastest");

    let options =
        RunOptions::new().adapter_option(ROUTING_OPTION, json!({"required_capabilities": ["code_execution"]}));
    assert_eq!(run_with(&manager, &session, "x", options).await.unwrap_err().code(), ErrorCode::ProviderUnavailable);
    assert!(claude.requests().is_empty());

    let duplicate = ProviderRouter::builder().adapter(claude.clone()).adapter(claude).build().unwrap_err();
    assert_eq!(duplicate.code(), ErrorCode::ValidationError);
}

#[tokio::test]
async fn capability_requirements_pick_the_adapter_that_has_them_and_routing_is_not_forwarded() {
    let plain = ScriptedAdapter::replying("plain").named("plain").with_capabilities(vec![]);
    let tools = ScriptedAdapter::replying("tools")
        .named("tools")
        .with_capabilities(Capability::list(&[("bash", CapabilityType::Tool)]));
    let router = ProviderRouter::builder().adapter(plain.clone()).adapter(tools.clone()).build().unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router);
    let session = active_session(&manager).await;
    let options = RunOptions::new()
        .adapter_option(ROUTING_OPTION, json!({"required_capabilities": [{"type": "tool", "name": "bash"}]}))
        .adapter_option("model", "m1");
    let result = run_with(&manager, &session, "x", options).await.unwrap();
    assert_eq!(result.run.provider.as_deref(), Some("tools"));
    let request = &tools.requests()[0];
    assert!(!request.options.contains_key(ROUTING_OPTION), "routing options stay with the router");
    assert_eq!(request.options["model"], "m1", "other options are forwarded");
    assert!(plain.requests().is_empty());
}

#[tokio::test]
async fn a_fallback_attempt_gets_the_transcript_from_before_the_run_plus_the_input() {
    let claude = Queue::new("claude", vec![Step::Reply("first answer"), Step::Fail(rate_limited())]);
    let codex = ScriptedAdapter::replying("second answer").named("codex");
    let router = ProviderRouter::builder().adapter(claude.clone()).adapter(codex.clone()).build().unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router);
    let session = active_session(&manager).await;
    let auto = || RunOptions::new().continuation(Continuation::Auto);
    run_with(&manager, &session, "first question", auto()).await.unwrap();
    assert_eq!(claude.calls(), 1);

    // Claude streams a partial output and then fails; codex must not see it.
    let result = run_with(&manager, &session, "second question", auto()).await.unwrap();
    assert_eq!(result.run.provider.as_deref(), Some("codex"));
    let request = &codex.requests()[0];
    let transcript = request.transcript.as_ref().expect("codex replays the conversation");
    let contents: Vec<&str> = transcript.messages.iter().map(|m| m.content.as_deref().unwrap_or("")).collect();
    assert!(contents.contains(&"first question"), "{contents:?}");
    assert!(contents.iter().any(|c| c.contains("first answer")), "{contents:?}");
    assert!(!contents.contains(&"second question"), "the input comes as the run's input, not twice");
    assert!(!contents.iter().any(|c| c.contains("partial")), "no partial output: {contents:?}");
    assert_eq!(request.run.input.messages.last().unwrap().content, "second question");
    assert!(request.resume.is_none());
}

#[tokio::test]
async fn an_adapter_resumes_its_own_handle_only_while_it_holds_the_whole_conversation() {
    let codex = codex_resuming_thread_1();
    let claude = ScriptedAdapter::replying("from claude").named("claude");
    let router = ProviderRouter::builder().adapter(codex.clone()).adapter(claude.clone()).build().unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router);
    let session = active_session(&manager).await;
    run_with(&manager, &session, "one", auto_continuation_preferring("codex")).await.unwrap();
    run_with(&manager, &session, "two", auto_continuation_preferring("codex")).await.unwrap();
    let second = &codex.requests()[1];
    assert_eq!(second.resume.as_deref(), Some("thread-1"), "codex resumes its own current thread");
    assert!(second.transcript.is_none());

    // Claude serves a turn: codex's thread no longer has the whole conversation.
    run_with(&manager, &session, "three", auto_continuation_preferring("claude")).await.unwrap();
    run_with(&manager, &session, "four", auto_continuation_preferring("codex")).await.unwrap();
    let fourth = &codex.requests()[2];
    assert!(fourth.resume.is_none(), "a stale handle is not resumed");
    let transcript = fourth.transcript.as_ref().expect("replayed instead");
    assert!(transcript.messages.iter().any(|m| m.content.as_deref().is_some_and(|c| c.contains("from claude"))));

    // native_resume: false forces replay even with a current handle.
    let replay = RunOptions::new()
        .continuation(Continuation::Auto)
        .adapter_option(ROUTING_OPTION, RoutingOptions::new().prefer(["codex"]).native_resume(false).to_json());
    run_with(&manager, &session, "five", replay).await.unwrap();
    assert!(codex.requests()[3].resume.is_none());
    assert!(codex.requests()[3].transcript.is_some());
}

async fn wait_for_active(router: &ProviderRouter, adapter: &str) -> RouterStatus {
    tokio::time::timeout(WAIT, async {
        loop {
            let status = router.status();
            if status.active_runs.iter().any(|r| r.adapter_id == adapter) {
                return status;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no run became active on {adapter} within {WAIT:?}"))
}

#[tokio::test]
async fn cancel_reaches_the_adapter_serving_the_attempt_and_no_further_attempt_starts() {
    let claude = ScriptedAdapter::new().named("claude").failing(rate_limited());
    let codex = ScriptedAdapter::new()
        .named("codex")
        .emit(ProviderEvent::new(EventKind::MessageStreamed).data("delta", "wor").data("content", "wor"))
        .hanging();
    let spare = ScriptedAdapter::replying("spare").named("spare");
    let router =
        ProviderRouter::builder().adapter(claude).adapter(codex.clone()).adapter(spare.clone()).build().unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router.clone());
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let task = spawn_execute_run(&manager, &run.id);
    let status = wait_for_active(&router, "codex").await;
    assert_eq!(status.active_runs[0].attempt, 2);
    assert_eq!(status.active_runs[0].run_id, run.id.to_string());

    manager.cancel_run(&run.id).await.unwrap();
    let outcome = tokio::time::timeout(WAIT, task).await.expect("the cancelled run must end").unwrap();
    assert_eq!(outcome.unwrap_err().code(), ErrorCode::Cancelled);
    assert!(codex.requests()[0].cancel.is_cancelled(), "codex saw the cancel");
    assert!(spare.requests().is_empty(), "no attempt after a cancel");
    let stored = manager.get_run(&run.id).await.unwrap();
    assert_eq!(stored.status, RunStatus::Cancelled);
    assert_eq!(stored.provider.as_deref(), Some("codex"), "a cancelled run keeps the served provider");
    let events = manager.session_events(&session, EventQuery::new().run(run.id.clone())).await.unwrap();
    assert!(events.iter().any(|e| e.metadata.get("routed_provider") == Some(&json!("codex"))));
    assert!(router.status().active_runs.is_empty());
    let health = &router.status().adapters[1].health;
    assert_eq!(health.failure_count, 0, "a cancel is not a provider failure");
}

#[tokio::test]
async fn the_router_cancels_a_routed_run_directly() {
    let hanging = ScriptedAdapter::new().named("codex").hanging();
    let router = ProviderRouter::builder().adapter(hanging.clone()).build().unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router.clone());
    let session = active_session(&manager).await;
    let run = manager.start_run(&session, RunInput::user("x"), RunOptions::default()).await.unwrap();
    let task = spawn_execute_run(&manager, &run.id);
    wait_for_active(&router, "codex").await;
    router.cancel(&run.id).unwrap();
    let outcome = tokio::time::timeout(WAIT, task).await.expect("the cancelled run must end").unwrap();
    assert_eq!(outcome.unwrap_err().code(), ErrorCode::Cancelled);
    assert_eq!(router.cancel(&run.id).unwrap_err().code(), ErrorCode::RunNotFound);
}

#[tokio::test]
async fn sticky_bindings_last_for_the_routers_own_ttl() {
    let clock = ManualClock::new();
    let claude = ScriptedAdapter::replying("claude").named("claude");
    let codex = ScriptedAdapter::replying("codex").named("codex");
    let router = ProviderRouter::builder()
        .adapter(claude)
        .adapter(codex)
        .sticky_ttl(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router.clone());
    let session = active_session(&manager).await;
    let sticky = |prefer: Option<&str>| {
        let mut options = RoutingOptions::new().sticky_session_id("user-7");
        if let Some(prefer) = prefer {
            options = options.prefer([prefer]);
        }
        routing(&options)
    };
    let provider = |r: RunResult| r.run.provider.unwrap();
    assert_eq!(provider(run_with(&manager, &session, "a", sticky(Some("codex"))).await.unwrap()), "codex");
    let status = router.status();
    assert_eq!(status.sticky_bindings.len(), 1);
    assert_eq!(status.sticky_bindings[0].adapter_id, "codex");
    assert_eq!(status.sticky_bindings[0].expires_in_ms, 60_000);

    clock.advance(Duration::from_secs(59));
    assert_eq!(provider(run_with(&manager, &session, "b", sticky(None)).await.unwrap()), "codex", "still bound");
    // That run renewed the binding: 60 s from now.
    clock.advance(Duration::from_secs(60));
    assert!(router.status().sticky_bindings.is_empty(), "expired");
    assert_eq!(
        provider(run_with(&manager, &session, "c", sticky(None)).await.unwrap()),
        "claude",
        "policy order again"
    );
    assert_eq!(
        provider(run_with(&manager, &session, "d", RunOptions::default()).await.unwrap()),
        "claude",
        "runs without a sticky id are not pinned"
    );
}

#[tokio::test]
async fn a_failed_adapter_cools_down_and_comes_back() {
    let clock = ManualClock::new();
    let claude = Queue::new("claude", vec![Step::Fail(rate_limited()), Step::Reply("claude ok")]);
    let codex = Queue::new("codex", vec![Step::Reply("codex ok")]);
    let router = ProviderRouter::builder()
        .adapter(claude.clone())
        .adapter(codex.clone())
        .health_cooldown(Duration::from_secs(30))
        .clock(clock.clone())
        .build()
        .unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router.clone());
    let session = active_session(&manager).await;
    let provider = |r: RunResult| r.run.provider.unwrap();
    assert_eq!(provider(run_with(&manager, &session, "1", RunOptions::default()).await.unwrap()), "codex");
    let status = router.status();
    assert!(status.adapters[0].health.cooling_down);
    assert!(!status.adapters[0].available);
    clock.advance(Duration::from_secs(29));
    assert_eq!(provider(run_with(&manager, &session, "2", RunOptions::default()).await.unwrap()), "codex");
    assert_eq!(claude.calls(), 1, "claude is skipped while cooling down");
    clock.advance(Duration::from_secs(1));
    assert_eq!(provider(run_with(&manager, &session, "3", RunOptions::default()).await.unwrap()), "claude");
    assert_eq!(router.status().adapters[0].health.failure_count, 0, "a success resets the health");
}

#[tokio::test]
async fn the_circuit_breaker_opens_lets_one_counted_probe_through_and_closes() {
    let clock = ManualClock::new();
    let gate = Arc::new(Notify::new());
    let claude = Queue::new(
        "claude",
        vec![Step::Fail(rate_limited()), Step::Fail(rate_limited()), Step::Gated(gate.clone(), "claude probe ok")],
    );
    let codex = Queue::new("codex", vec![Step::Reply("codex ok")]);
    let router = ProviderRouter::builder()
        .adapter(claude.clone())
        .adapter(codex.clone())
        .health_cooldown(Duration::ZERO)
        .circuit_breaker(BreakerConfig::default().failure_threshold(2).cooldown(Duration::from_secs(10)))
        .clock(clock.clone())
        .build()
        .unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router.clone());
    let session = active_session(&manager).await;
    let other = active_session(&manager).await;
    let provider = |r: RunResult| r.run.provider.unwrap();
    for text in ["1", "2"] {
        assert_eq!(provider(run_with(&manager, &session, text, RunOptions::default()).await.unwrap()), "codex");
    }
    let breaker = router.status().adapters[0].breaker.clone().unwrap();
    assert_eq!(breaker.state, BreakerState::Open);
    assert_eq!(provider(run_with(&manager, &session, "3", RunOptions::default()).await.unwrap()), "codex");
    assert_eq!(claude.calls(), 2, "an open breaker refuses calls");

    clock.advance(Duration::from_secs(10));
    // The probe: claude is called and waits at the gate.
    let run = manager.start_run(&session, RunInput::user("probe"), RunOptions::default()).await.unwrap();
    let probe = spawn_execute_run(&manager, &run.id);
    let status = wait_for_active(&router, "claude").await;
    let breaker = status.adapters[0].breaker.clone().unwrap();
    assert_eq!(breaker.state, BreakerState::HalfOpen);
    assert_eq!(breaker.half_open_probe_count, 1);
    // A second run meanwhile must not become a second probe (the original let it through).
    assert_eq!(provider(run_with(&manager, &other, "concurrent", RunOptions::default()).await.unwrap()), "codex");
    assert_eq!(claude.calls(), 3);

    gate.notify_one();
    let probed = tokio::time::timeout(WAIT, probe).await.expect("the probe run must end").unwrap().unwrap();
    assert_eq!(probed.run.provider.as_deref(), Some("claude"));
    assert_eq!(router.status().adapters[0].breaker.clone().unwrap().state, BreakerState::Closed);
}

#[tokio::test]
async fn weighted_routing_is_reproducible_with_a_seed() {
    let build = |seed| {
        ProviderRouter::builder()
            .adapter(ScriptedAdapter::replying("a").named("a"))
            .adapter(ScriptedAdapter::replying("b").named("b"))
            .adapter(ScriptedAdapter::replying("c").named("c"))
            .policy(
                RoutingPolicy::new().strategy(Strategy::Weighted).weight("a", 1.0).weight("b", 1.0).weight("c", 1.0),
            )
            .seed(seed)
            .build()
            .unwrap()
    };
    async fn providers(router: ProviderRouter) -> Vec<String> {
        let manager = SessionManager::new(InMemorySessionStore::new(), router);
        let session = active_session(&manager).await;
        let mut out = Vec::new();
        for i in 0..12 {
            out.push(
                run_with(&manager, &session, &i.to_string(), RunOptions::default())
                    .await
                    .unwrap()
                    .run
                    .provider
                    .unwrap(),
            );
        }
        out
    }
    let first = providers(build(11)).await;
    assert_eq!(first, providers(build(11)).await);
    let distinct: std::collections::BTreeSet<_> = first.iter().collect();
    assert!(distinct.len() > 1, "equal weights spread the runs: {first:?}");
}

#[tokio::test]
async fn status_lists_adapters_and_serialises() {
    let router = ProviderRouter::builder()
        .adapter(ScriptedAdapter::replying("a").named("claude"))
        .adapter_as("codex-fast", ScriptedAdapter::replying("b").named("codex"))
        .circuit_breaker(BreakerConfig::default())
        .policy(RoutingPolicy::new().prefer(["codex-fast"]))
        .build()
        .unwrap();
    let status = router.status();
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["name"], "router");
    assert_eq!(json["adapters"][1]["id"], "codex-fast");
    assert_eq!(json["adapters"][1]["provider"], "codex");
    assert_eq!(json["adapters"][0]["breaker"]["state"], "closed");
    assert_eq!(json["policy"]["prefer"], json!(["codex-fast"]));
    let back: RouterStatus = serde_json::from_value(json).unwrap();
    assert_eq!(back, status);

    assert!(router.unregister("claude"));
    router.register("amp", ScriptedAdapter::replying("c").named("amp")).unwrap();
    let ids: Vec<_> = router.status().adapters.into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["codex-fast", "amp"]);
    assert_eq!(router.register("", ScriptedAdapter::new()).unwrap_err().code(), ErrorCode::ValidationError);
    let caps = router.capabilities();
    assert_eq!(caps.len(), 2, "the union, de-duplicated: {caps:?}");
}

mod mocked {
    use super::*;
    use mockall::{Sequence, mock};

    mock! {
        pub Adapter {}
        impl std::fmt::Debug for Adapter {
            fn fmt<'a>(&self, f: &mut std::fmt::Formatter<'a>) -> std::fmt::Result;
        }
        #[async_trait]
        impl ProviderAdapter for Adapter {
            fn name(&self) -> &str;
            fn capabilities(&self) -> Vec<Capability>;
            async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome>;
            fn validate_config(&self) -> Result<()>;
            fn supports_native_resume(&self) -> bool;
            fn supports_native_fork(&self) -> bool;
        }
    }

    fn mocked(name: &'static str) -> MockAdapter {
        let mut adapter = MockAdapter::new();
        adapter.expect_name().return_const(name.to_owned());
        adapter.expect_capabilities().returning(Vec::new);
        adapter.expect_supports_native_resume().return_const(false);
        adapter.expect_supports_native_fork().return_const(false);
        adapter
    }

    #[tokio::test]
    async fn adapters_are_called_in_policy_order_exactly_once_each() {
        let mut seq = Sequence::new();
        let mut a = mocked("a");
        let mut b = mocked("b");
        let mut c = mocked("c");
        c.expect_execute().times(1).in_sequence(&mut seq).returning(|_, _| Err(rate_limited()));
        a.expect_execute()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Err(Error::new(ErrorCode::ProviderUnavailable, "down")));
        b.expect_execute().times(1).in_sequence(&mut seq).returning(|_, _| Ok(ExecuteOutcome::text("b")));
        let router = ProviderRouter::builder()
            .adapter(a)
            .adapter(b)
            .adapter(c)
            .policy(RoutingPolicy::new().prefer(["c", "a", "b"]))
            .build()
            .unwrap();
        let manager = SessionManager::new(InMemorySessionStore::new(), router);
        let session = active_session(&manager).await;
        let result = run_with(&manager, &session, "x", RunOptions::default()).await.unwrap();
        assert_eq!(result.run.provider.as_deref(), Some("b"));
        assert_eq!(result.run.metadata["routing"]["failover_from"], "a");
        assert_eq!(result.run.metadata["routing"]["failover_reason"], "provider_unavailable");
    }
}

#[tokio::test]
async fn a_failure_of_the_runtimes_sink_is_neither_failed_over_nor_held_against_the_adapter() {
    use futures::FutureExt;
    let a = ScriptedAdapter::replying("a").named("a");
    let b = ScriptedAdapter::replying("b").named("b");
    let router = ProviderRouter::builder().adapter(a.clone()).adapter(b.clone()).build().unwrap();
    let session = asm_core::Session::new("agent").unwrap();
    let run = asm_core::Run::new(session.id.clone(), RunInput::user("x"));
    let sink = EventSink::new(|_| async { Err(Error::new(ErrorCode::StorageConnectionFailed, "store down")) }.boxed());
    let error = router.execute(ExecuteRequest::new(session, run), sink).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageConnectionFailed);
    assert_eq!(a.requests().len(), 1);
    assert!(b.requests().is_empty(), "a store failure is not a reason to try another provider");
    assert_eq!(router.status().adapters[0].health.failure_count, 0);
}

#[test]
fn public_types_are_send_sync_and_the_router_is_a_cheap_handle() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<ProviderRouter>();
    assert_send_sync::<RouterStatus>();
    assert_send_sync::<asm_routing::CircuitBreaker>();
    assert_send_sync::<RoutingPolicy>();
    assert_send_sync::<RoutingOptions>();
    assert_send_sync::<asm_routing::RoutingError>();
    assert_eq!(std::mem::size_of::<ProviderRouter>(), std::mem::size_of::<usize>());
}

#[tokio::test]
async fn a_fallback_adapter_resumes_its_own_current_handle() {
    let claude = ScriptedAdapter::new().named("claude").failing(rate_limited());
    let codex = codex_resuming_thread_1();
    let router = ProviderRouter::builder().adapter(claude.clone()).adapter(codex.clone()).build().unwrap();
    let manager = SessionManager::new(InMemorySessionStore::new(), router);
    let session = active_session(&manager).await;
    run_with(&manager, &session, "one", auto_continuation_preferring("codex")).await.unwrap();
    let result = run_with(&manager, &session, "two", auto_continuation_preferring("claude")).await.unwrap();
    assert_eq!(result.run.provider.as_deref(), Some("codex"));
    assert_eq!(result.run.metadata["routing"]["failover_from"], "claude");
    let claude_request = &claude.requests()[0];
    assert!(claude_request.transcript.is_some() && claude_request.resume.is_none(), "claude replays");
    let fallback = &codex.requests()[1];
    assert_eq!(fallback.resume.as_deref(), Some("thread-1"), "the fallback resumes its own thread");
    assert!(fallback.transcript.is_none());
}
