//! SessionServer: queueing, slots, results, cancellation, panics, drain and shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;

use asm_core::{ErrorCode, EventKind, RunId, RunInput, RunStatus, SessionStatus};
use asm_ports::{RunQuery, SessionStore};
use asm_runtime::{
    ConcurrencyLimiter, ControlOperations, LimiterConfig, NewSession, Operation, RunOptions, ServerConfig,
    SessionManager, SessionServer, ShutdownPolicy, SubscribeOptions,
};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;

use common::{GatedAdapter, Outcome, WAIT, all_events, assert_log_invariants, eventually};

fn input(text: &str) -> RunInput {
    RunInput::user(text)
}

async fn gated_server(
    slots: usize,
    queue: usize,
) -> (SessionServer, InMemorySessionStore, Arc<common::Gates>, common::Started, GatedAdapter) {
    let store = InMemorySessionStore::new();
    let (adapter, gates, started) = GatedAdapter::new();
    let server = SessionServer::start(
        ServerConfig::new(store.clone(), adapter.clone())
            .create(NewSession::new("agent"))
            .max_concurrent_runs(slots)
            .max_queued_runs(queue),
    )
    .await
    .unwrap();
    (server, store, gates, started, adapter)
}

/// Submits a run of `first` and then one of "ok", and waits until the first reached the
/// adapter; their ids.
async fn submit_two_runs_first_started(
    server: &SessionServer,
    first: &str,
    started: &mut common::Started,
) -> (RunId, RunId) {
    let first = server.submit_run(input(first), RunOptions::default()).await.unwrap();
    let second = server.submit_run(input("ok"), RunOptions::default()).await.unwrap();
    started.next().await;
    (first, second)
}

/// Shuts `server` down with `policy` on a spawned task.
fn spawn_shutdown_with(
    server: &SessionServer,
    policy: ShutdownPolicy,
) -> tokio::task::JoinHandle<asm_core::Result<()>> {
    let server = server.clone();
    tokio::spawn(async move { server.shutdown_with(policy).await })
}

#[tokio::test]
async fn the_worked_example_four_runs_two_slots() {
    let (server, store, gates, mut started, _) = gated_server(2, 100).await;
    let mut runs = Vec::new();
    for i in 0..4 {
        runs.push(server.submit_run(input(&format!("wait {i}")), RunOptions::default()).await.unwrap());
    }
    // Two start, two queue.
    let mut first_two = vec![started.next().await, started.next().await];
    first_two.sort();
    let mut expected = runs[..2].to_vec();
    expected.sort();
    assert_eq!(first_two, expected);
    let status = server.status().await.unwrap();
    assert_eq!(status.in_flight_runs, runs[..2].to_vec());
    assert_eq!(status.queued_runs, runs[2..].to_vec());
    assert_eq!((status.in_flight_count, status.queued_count), (2, 2));
    assert_eq!((status.max_concurrent_runs, status.max_queued_runs), (2, 100));
    for run in &runs[2..] {
        assert_eq!(store.get_run(run).await.unwrap().status, RunStatus::Pending, "queued runs are persisted pending");
    }

    // The second finishes first: the third (FIFO) takes its slot.
    gates.release(&runs[1], Outcome::Succeed);
    server.await_run(&runs[1], WAIT).await.unwrap();
    assert_eq!(started.next().await, runs[2]);
    let status = server.status().await.unwrap();
    assert_eq!(status.in_flight_runs, vec![runs[0].clone(), runs[2].clone()]);
    assert_eq!(status.queued_runs, vec![runs[3].clone()]);

    gates.release(&runs[0], Outcome::Succeed);
    server.await_run(&runs[0], WAIT).await.unwrap();
    assert_eq!(started.next().await, runs[3]);
    let status = server.status().await.unwrap();
    assert_eq!(status.in_flight_runs, vec![runs[2].clone(), runs[3].clone()]);
    assert!(status.queued_runs.is_empty());

    gates.release(&runs[2], Outcome::Succeed);
    gates.release(&runs[3], Outcome::Succeed);
    server.drain(WAIT).await.unwrap();
    for run in &runs {
        let result = server.await_run(run, WAIT).await.unwrap();
        assert_eq!(result.run.status, RunStatus::Completed);
        assert_eq!(store.get_run(run).await.unwrap().status, RunStatus::Completed);
    }
    assert_log_invariants(&all_events(&store, server.session_id()).await);
}

#[tokio::test]
async fn runs_start_in_fifo_order() {
    let (server, _store, gates, mut started, _) = gated_server(1, 100).await;
    let blocker = server.submit_run(input("wait"), RunOptions::default()).await.unwrap();
    assert_eq!(started.next().await, blocker);
    let mut runs = Vec::new();
    for i in 0..10 {
        runs.push(server.submit_run(input(&format!("ok {i}")), RunOptions::default()).await.unwrap());
    }
    assert_eq!(server.status().await.unwrap().queued_runs, runs);
    gates.release(&blocker, Outcome::Succeed);
    for run in &runs {
        assert_eq!(&started.next().await, run);
    }
    server.drain(WAIT).await.unwrap();
}

#[tokio::test]
async fn a_full_queue_rejects_and_persists_nothing() {
    let (server, store, gates, mut started, _) = gated_server(1, 2).await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(server.submit_run(input("wait"), RunOptions::default()).await.unwrap());
    }
    started.next().await;
    let err = server.submit_run(input("wait"), RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::MaxRunsExceeded);
    let stored = store.list_runs(server.session_id(), &RunQuery::new()).await.unwrap();
    assert_eq!(stored.len(), 3, "the rejected run was not persisted");

    // A freed slot makes room again.
    gates.release(&runs[0], Outcome::Succeed);
    server.await_run(&runs[0], WAIT).await.unwrap();
    let fourth = server.submit_run(input("wait"), RunOptions::default()).await.unwrap();
    for run in runs[1..].iter().chain([&fourth]) {
        gates.release(run, Outcome::Succeed);
    }
    server.drain(WAIT).await.unwrap();

    // With no queue at all, only free slots accept runs.
    let (server, store, _gates, mut started, _) = gated_server(1, 0).await;
    server.submit_run(input("wait"), RunOptions::default()).await.unwrap();
    started.next().await;
    let err = server.submit_run(input("ok"), RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::MaxRunsExceeded);
    assert_eq!(store.list_runs(server.session_id(), &RunQuery::new()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_submissions_persist_nothing() {
    let (server, store, _, _, adapter) = gated_server(1, 10).await;
    let err = server.submit_run(RunInput::default(), RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
    let err = server.submit_run(input("ok"), RunOptions::new().timeout(Duration::ZERO)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
    let err = server
        .submit_run(input("ok"), RunOptions::new().require(asm_core::CapabilityType::FileAccess))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::MissingRequiredCapability);
    assert!(store.list_runs(server.session_id(), &RunQuery::new()).await.unwrap().is_empty());
    assert_eq!(adapter.calls(), 0);
    assert_eq!(server.status().await.unwrap().queued_count, 0);
}

#[tokio::test]
async fn awaiting_an_unknown_run_fails_at_once() {
    let (server, store, _, _, _) = gated_server(1, 10).await;
    let err = tokio::time::timeout(Duration::from_secs(2), server.await_run(&RunId::new(), Duration::from_secs(3600)))
        .await
        .expect("await_run on an unknown id must not block")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RunNotFound);

    // A run of another session is not this server's either.
    let manager = SessionManager::new(store.clone(), ScriptedAdapter::new());
    let other = manager.start_session(NewSession::new("other")).await.unwrap();
    manager.activate_session(&other.id).await.unwrap();
    let foreign = manager.start_run(&other.id, input("x"), Default::default()).await.unwrap();
    let err = server.await_run(&foreign.id, Duration::from_secs(3600)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::RunNotFound);
    let err = server.cancel_run(&foreign.id).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::RunNotFound);
}

#[tokio::test]
async fn results_can_be_awaited_late_and_after_eviction() {
    let store = InMemorySessionStore::new();
    let (adapter, _gates, _started) = GatedAdapter::new();
    let server = SessionServer::start(
        ServerConfig::new(store.clone(), adapter).create(NewSession::new("agent")).result_capacity(1),
    )
    .await
    .unwrap();
    let ok = server.submit_run(input("ok first"), RunOptions::default()).await.unwrap();
    let failed = server.submit_run(input("fail"), RunOptions::default()).await.unwrap();
    let last = server.submit_run(input("ok last"), RunOptions::default()).await.unwrap();
    server.drain(WAIT).await.unwrap();

    // `ok` and `failed` left memory; their results come back from the store.
    let result = server.await_run(&ok, WAIT).await.unwrap();
    assert_eq!(result.output().content, "ok first");
    assert!(result.events.iter().any(|e| e.kind == EventKind::RunCompleted));
    assert_eq!(server.await_run(&failed, WAIT).await.unwrap_err().code(), ErrorCode::ProviderError);
    for _ in 0..3 {
        assert_eq!(server.await_run(&last, WAIT).await.unwrap().output().content, "ok last");
    }
    // and once the server is gone, still from the store
    server.shutdown().await.unwrap();
    assert_eq!(server.await_run(&ok, WAIT).await.unwrap().run.status, RunStatus::Completed);
}

#[tokio::test]
async fn await_times_out_with_a_timeout_error() {
    let (server, _store, _, mut started, _) = gated_server(1, 10).await;
    let run = server.submit_run(input("hang"), RunOptions::default()).await.unwrap();
    started.next().await;
    let err = server.await_run(&run, Duration::from_millis(20)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    server.cancel_run(&run).await.unwrap();
    assert_eq!(server.await_run(&run, WAIT).await.unwrap_err().code(), ErrorCode::Cancelled);
}

#[tokio::test]
async fn cancelling_a_queued_run_never_reaches_the_adapter() {
    let (server, store, gates, mut started, adapter) = gated_server(1, 10).await;
    let first = server.submit_run(input("wait"), RunOptions::default()).await.unwrap();
    let queued = server.submit_run(input("ok"), RunOptions::default()).await.unwrap();
    started.next().await;

    server.cancel_run(&queued).await.unwrap();
    let stored = store.get_run(&queued).await.unwrap();
    assert_eq!(stored.status, RunStatus::Cancelled);
    assert!(server.status().await.unwrap().queued_runs.is_empty());
    assert_eq!(server.await_run(&queued, WAIT).await.unwrap_err().code(), ErrorCode::Cancelled);
    // again: its end is stored, so the cancel is refused (and writes nothing)
    assert_eq!(server.cancel_run(&queued).await.unwrap_err().code(), ErrorCode::InvalidTransition);

    gates.release(&first, Outcome::Succeed);
    server.drain(WAIT).await.unwrap();
    assert_eq!(adapter.calls(), 1, "the cancelled run never reached the adapter");
    let events = all_events(&store, server.session_id()).await;
    assert_log_invariants(&events);
    let of_queued: Vec<EventKind> =
        events.iter().filter(|e| e.run_id.as_ref() == Some(&queued)).map(|e| e.kind).collect();
    assert_eq!(of_queued, vec![EventKind::RunCancelled]);
    // A completed run cannot be cancelled any more.
    assert_eq!(server.cancel_run(&first).await.unwrap_err().code(), ErrorCode::InvalidTransition);
}

#[tokio::test]
async fn cancelling_an_in_flight_run_frees_its_slot() {
    let (server, store, gates, mut started, _) = gated_server(1, 10).await;
    let hanging = server.submit_run(input("hang"), RunOptions::default()).await.unwrap();
    let next = server.submit_run(input("wait"), RunOptions::default()).await.unwrap();
    assert_eq!(started.next().await, hanging);
    server.cancel_run(&hanging).await.unwrap();
    assert_eq!(server.await_run(&hanging, WAIT).await.unwrap_err().code(), ErrorCode::Cancelled);
    assert_eq!(started.next().await, next, "the freed slot starts the next run");
    assert_eq!(server.status().await.unwrap().in_flight_runs, vec![next.clone()]);
    gates.release(&next, Outcome::Succeed);
    server.drain(WAIT).await.unwrap();
    assert_eq!(store.get_run(&hanging).await.unwrap().status, RunStatus::Cancelled);
    assert_log_invariants(&all_events(&store, server.session_id()).await);
}

/// Whatever the interleaving, a run ends once: one terminal event, and the awaited result, the
/// stored status and the terminal event agree.
async fn assert_consistent_end(server: &SessionServer, store: &InMemorySessionStore, run: &RunId) {
    let result = server.await_run(run, WAIT).await;
    let stored = store.get_run(run).await.unwrap();
    let expected = match &result {
        Ok(_) => RunStatus::Completed,
        Err(e) if e.code() == ErrorCode::Cancelled => RunStatus::Cancelled,
        Err(e) => panic!("unexpected outcome {e:?}"),
    };
    assert_eq!(stored.status, expected);
    let events = all_events(store, server.session_id()).await;
    let terminal: Vec<EventKind> =
        events.iter().filter(|e| e.run_id.as_ref() == Some(run) && e.kind.is_run_terminal()).map(|e| e.kind).collect();
    let expected_kind =
        if expected == RunStatus::Completed { EventKind::RunCompleted } else { EventKind::RunCancelled };
    assert_eq!(terminal, vec![expected_kind]);
    assert_log_invariants(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_the_start_of_a_run() {
    let store = InMemorySessionStore::new();
    let adapter = ScriptedAdapter::replying("a quick answer").delay(Duration::from_micros(50));
    let server = SessionServer::start(
        ServerConfig::new(store.clone(), adapter).create(NewSession::new("agent")).max_concurrent_runs(4),
    )
    .await
    .unwrap();
    for i in 0..60 {
        let run = server.submit_run(input("go"), RunOptions::default()).await.unwrap();
        for _ in 0..(i % 7) {
            tokio::task::yield_now().await;
        }
        match server.cancel_run(&run).await {
            Ok(()) => {}
            Err(e) => assert_eq!(e.code(), ErrorCode::InvalidTransition, "{e:?}"),
        }
        assert_consistent_end(&server, &store, &run).await;
    }
    let status = server.status().await.unwrap();
    assert_eq!(status.in_flight_count + status.queued_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_the_end_of_a_run() {
    let store = InMemorySessionStore::new();
    let (adapter, _gates, mut started) = GatedAdapter::new();
    let server =
        SessionServer::start(ServerConfig::new(store.clone(), adapter).create(NewSession::new("agent"))).await.unwrap();
    for i in 0..60 {
        let run = server.submit_run(input("ok"), RunOptions::default()).await.unwrap();
        assert_eq!(started.next().await, run);
        for _ in 0..(i % 5) {
            tokio::task::yield_now().await;
        }
        match server.cancel_run(&run).await {
            Ok(()) => {}
            Err(e) => assert_eq!(e.code(), ErrorCode::InvalidTransition, "{e:?}"),
        }
        assert_consistent_end(&server, &store, &run).await;
    }
}

#[tokio::test]
async fn a_panicking_adapter_fails_the_run_frees_the_slot_and_the_server_keeps_serving() {
    let store = InMemorySessionStore::new();
    let (adapter, _gates, _started) = GatedAdapter::new();
    let limiter = ConcurrencyLimiter::new(LimiterConfig::default().max_parallel_runs(1)).unwrap();
    let server = SessionServer::start(
        ServerConfig::new(store.clone(), adapter).create(NewSession::new("agent")).limiter(limiter.clone()),
    )
    .await
    .unwrap();
    let run = server.submit_run(input("panic"), RunOptions::default()).await.unwrap();
    let err = server.await_run(&run, WAIT).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InternalError);
    assert_eq!(limiter.status().active_runs, 0);
    assert_eq!(server.status().await.unwrap().in_flight_count, 0);
    assert_eq!(store.get_run(&run).await.unwrap().status, RunStatus::Failed);

    let result = server.execute_run(input("ok after"), RunOptions::default(), WAIT).await.unwrap();
    assert_eq!(result.output().content, "ok after");
    assert_log_invariants(&all_events(&store, server.session_id()).await);
}

#[tokio::test]
async fn a_panic_in_the_run_task_itself_is_contained() {
    let store = InMemorySessionStore::new();
    let (adapter, _gates, _started) = GatedAdapter::new();
    let server =
        SessionServer::start(ServerConfig::new(store.clone(), adapter).create(NewSession::new("agent"))).await.unwrap();
    // The callback runs in the run task, outside the adapter's panic guard.
    let run = server.submit_run(input("ok"), RunOptions::new().on_event(|_| panic!("callback bug"))).await.unwrap();
    let err = server.await_run(&run, WAIT).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InternalError);
    let stored = store.get_run(&run).await.unwrap();
    assert_eq!(stored.status, RunStatus::Failed, "the run does not stay running");
    assert_log_invariants(&all_events(&store, server.session_id()).await);
    assert_eq!(
        server.execute_run(input("ok"), RunOptions::default(), WAIT).await.unwrap().run.status,
        RunStatus::Completed
    );
}

#[tokio::test]
async fn drain_times_out_while_busy_and_returns_once_idle() {
    let (server, _store, _, mut started, _) = gated_server(1, 10).await;
    server.drain(Duration::from_millis(1)).await.unwrap(); // idle: at once
    let run = server.submit_run(input("hang"), RunOptions::default()).await.unwrap();
    started.next().await;
    let err = server.drain(Duration::from_millis(20)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    let drained = {
        let server = server.clone();
        tokio::spawn(async move { server.drain(WAIT).await })
    };
    server.cancel_run(&run).await.unwrap();
    drained.await.unwrap().unwrap();
}

#[tokio::test]
async fn limiter_slots_are_released_before_awaiters_wake_and_shared_between_servers() {
    let store = InMemorySessionStore::new();
    let (adapter, gates, mut started) = GatedAdapter::new();
    let limiter = ConcurrencyLimiter::new(LimiterConfig::default().max_parallel_runs(1)).unwrap();
    let config = |name: &str| {
        ServerConfig::new(store.clone(), adapter.clone())
            .create(NewSession::new(name))
            .max_concurrent_runs(2)
            .limiter(limiter.clone())
    };
    let a = SessionServer::start(config("a")).await.unwrap();
    let b = SessionServer::start(config("b")).await.unwrap();

    for _ in 0..5 {
        let result = a.execute_run(input("ok"), RunOptions::default(), WAIT).await.unwrap();
        assert_eq!(limiter.status().active_runs, 0, "released before await_run returned");
        assert_eq!(started.next().await, result.run.id);
    }

    let held = a.submit_run(input("wait"), RunOptions::default()).await.unwrap();
    assert_eq!(started.next().await, held);
    assert_eq!(limiter.status().active_runs, 1);
    // b has a free slot of its own but the global limit is reached: its run waits queued.
    let waiting = b.submit_run(input("ok"), RunOptions::default()).await.unwrap();
    let status = b.status().await.unwrap();
    assert_eq!((status.in_flight_count, status.queued_runs.clone()), (0, vec![waiting.clone()]));
    assert!(started.none_yet());
    gates.release(&held, Outcome::Succeed);
    b.await_run(&waiting, WAIT).await.unwrap();
    assert_eq!(limiter.status().active_runs, 0);
}

#[tokio::test]
async fn start_validates_and_attaches() {
    let store = InMemorySessionStore::new();
    let manager = SessionManager::new(store.clone(), ScriptedAdapter::replying("hi"));
    let config = || ServerConfig::from_manager(manager.clone());

    let err = SessionServer::start(config().create(NewSession::new("a")).max_concurrent_runs(0)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    let err = SessionServer::start(config()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    let err =
        SessionServer::start(config().create(NewSession::new("a")).defaults(RunOptions::new().timeout(Duration::ZERO)))
            .await
            .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
    let err = SessionServer::start(config().attach(asm_core::SessionId::new())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::SessionNotFound);
    let err = SessionServer::start(config().create(NewSession::new(""))).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);

    // pending: activated
    let pending = manager.start_session(NewSession::new("p")).await.unwrap();
    let server = SessionServer::start(config().attach(pending.id.clone())).await.unwrap();
    assert_eq!(store.get_session(&pending.id).await.unwrap().status, SessionStatus::Active);
    server.execute_run(input("x"), RunOptions::default(), WAIT).await.unwrap();
    server.shutdown().await.unwrap();

    // active: used as it is (no second session_started)
    let before = all_events(&store, &pending.id).await.len();
    let server = SessionServer::start(config().attach(pending.id.clone())).await.unwrap();
    assert_eq!(all_events(&store, &pending.id).await.len(), before);
    server.shutdown().await.unwrap();

    // finished: refused
    manager.complete_session(&pending.id).await.unwrap();
    let err = SessionServer::start(config().attach(pending.id.clone())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
}

#[tokio::test]
async fn per_run_options_are_merged_over_the_defaults() {
    let store = InMemorySessionStore::new();
    let adapter = ScriptedAdapter::replying("hi");
    let default_calls = Arc::new(AtomicUsize::new(0));
    let run_calls = Arc::new(AtomicUsize::new(0));
    let counter = default_calls.clone();
    let defaults = RunOptions::new()
        .adapter_option("a", 1)
        .adapter_option("nested", serde_json::json!({"x": 1, "y": 1}))
        .adapter_option("replaced", "default")
        .on_event(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    let server = SessionServer::start(
        ServerConfig::new(store.clone(), adapter.clone()).create(NewSession::new("a")).defaults(defaults),
    )
    .await
    .unwrap();
    let counter = run_calls.clone();
    let options = RunOptions::new()
        .adapter_option("b", 2)
        .adapter_option("nested", serde_json::json!({"y": 2}))
        .adapter_option("replaced", "run")
        .on_event(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    let result = server.execute_run(input("x"), options, WAIT).await.unwrap();
    let request = adapter.requests().pop().unwrap();
    assert_eq!(
        serde_json::Value::Object(request.options),
        serde_json::json!({"a": 1, "b": 2, "nested": {"x": 1, "y": 2}, "replaced": "run"})
    );
    assert_eq!(default_calls.load(Ordering::SeqCst), result.events.len());
    assert_eq!(run_calls.load(Ordering::SeqCst), result.events.len());

    // A run without options gets the defaults only.
    server.execute_run(input("y"), RunOptions::default(), WAIT).await.unwrap();
    let request = adapter.requests().pop().unwrap();
    assert_eq!(request.options["replaced"], "default");
}

#[tokio::test]
async fn interrupt_goes_through_control_operations() {
    let store = InMemorySessionStore::new();
    let (adapter, _gates, mut started) = GatedAdapter::new();
    let manager = SessionManager::new(store.clone(), adapter);
    let control = ControlOperations::new(manager.clone());
    let server =
        SessionServer::start(ServerConfig::from_manager(manager).create(NewSession::new("a")).control(control.clone()))
            .await
            .unwrap();
    let run = server.submit_run(input("hang"), RunOptions::default()).await.unwrap();
    started.next().await;
    server.interrupt_run(&run).await.unwrap();
    assert_eq!(server.await_run(&run, WAIT).await.unwrap_err().code(), ErrorCode::Cancelled);
    let history = control.history(&run);
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].operation, Operation::Interrupt);
    assert!(history[0].result.is_ok());
    // not in flight any more
    assert_eq!(server.interrupt_run(&run).await.unwrap_err().code(), ErrorCode::RunNotFound);

    // Without control operations, interrupt cancels.
    let (server, _store, _, mut started, _) = gated_server(1, 10).await;
    let run = server.submit_run(input("hang"), RunOptions::default()).await.unwrap();
    started.next().await;
    server.interrupt_run(&run).await.unwrap();
    assert_eq!(server.await_run(&run, WAIT).await.unwrap_err().code(), ErrorCode::Cancelled);
}

#[tokio::test]
async fn shutdown_finish_lets_queued_runs_complete() {
    let (server, store, gates, mut started, _) = gated_server(1, 10).await;
    let (first, second) = submit_two_runs_first_started(&server, "wait", &mut started).await;
    let shutdown = spawn_shutdown_with(&server, ShutdownPolicy::Finish);
    // Once shutting down, new runs are refused.
    eventually("the server to stop accepting runs", || {
        let server = server.clone();
        async move { !server.status().await.unwrap().accepting_runs }
    })
    .await;
    let err = server.submit_run(input("ok"), RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOperation);
    gates.release(&first, Outcome::Succeed);
    shutdown.await.unwrap().unwrap();
    assert!(!server.is_running());
    assert_eq!(store.get_run(&second).await.unwrap().status, RunStatus::Completed);
    assert_eq!(server.status().await.unwrap_err().code(), ErrorCode::InvalidOperation);
    server.shutdown().await.unwrap(); // idempotent
}

#[tokio::test]
async fn shutdown_cancel_and_finish_in_flight() {
    let (server, store, _gates, mut started, adapter) = gated_server(1, 10).await;
    let (first, second) = submit_two_runs_first_started(&server, "hang", &mut started).await;
    server.shutdown_with(ShutdownPolicy::Cancel).await.unwrap();
    assert_eq!(store.get_run(&first).await.unwrap().status, RunStatus::Cancelled);
    assert_eq!(store.get_run(&second).await.unwrap().status, RunStatus::Cancelled);
    assert_eq!(adapter.calls(), 1);
    assert_log_invariants(&all_events(&store, server.session_id()).await);

    let (server, store, gates, mut started, _) = gated_server(1, 10).await;
    let (first, second) = submit_two_runs_first_started(&server, "wait", &mut started).await;
    let shutdown = spawn_shutdown_with(&server, ShutdownPolicy::FinishInFlight);
    eventually("the queued run to be cancelled", || {
        let store = store.clone();
        let second = second.clone();
        async move { store.get_run(&second).await.unwrap().status == RunStatus::Cancelled }
    })
    .await;
    gates.release(&first, Outcome::Succeed);
    shutdown.await.unwrap().unwrap();
    assert_eq!(store.get_run(&first).await.unwrap().status, RunStatus::Completed);
}

#[tokio::test]
async fn shutdown_timeout_cancels_runs_that_do_not_finish() {
    let store = InMemorySessionStore::new();
    let (adapter, _gates, mut started) = GatedAdapter::new();
    let server = SessionServer::start(
        ServerConfig::new(store.clone(), adapter)
            .create(NewSession::new("a"))
            .shutdown_timeout(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    let run = server.submit_run(input("hang"), RunOptions::default()).await.unwrap();
    started.next().await;
    tokio::time::timeout(WAIT, server.shutdown()).await.unwrap().unwrap();
    assert_eq!(store.get_run(&run).await.unwrap().status, RunStatus::Cancelled);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let (server, _store, _, _, _) = gated_server(1, 10).await;
    let mut events = server.subscribe(SubscribeOptions::after(0)).await.unwrap();
    let copy = server.clone();
    drop(server);
    assert!(copy.is_running(), "a clone keeps it alive");
    drop(copy);
    // The subscription delivers what the store has and ends once the server stopped.
    let remaining = tokio::time::timeout(WAIT, async {
        let mut n = 0;
        while let Some(item) = events.next().await {
            item.unwrap();
            n += 1;
        }
        n
    })
    .await
    .expect("the subscription did not end after the server stopped");
    assert_eq!(remaining, 2, "session_created and session_started");
}

#[test]
fn handles_are_send_sync_and_their_futures_are_send() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<SessionServer>();
    send_sync::<asm_runtime::SessionSupervisor>();
    send_sync::<ConcurrencyLimiter>();
    send_sync::<ControlOperations>();
    send_sync::<asm_runtime::TranscriptCache>();
    send_sync::<ServerConfig>();
    send_sync::<RunOptions>();
    fn stream_is_send<T: Send + 'static>() {}
    stream_is_send::<asm_runtime::EventSubscription>();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (server, _store, _, _, _) = gated_server(1, 1).await;
        let run = RunId::new();
        send(&server.submit_run(input("x"), RunOptions::default()));
        send(&server.await_run(&run, WAIT));
        send(&server.cancel_run(&run));
        send(&server.interrupt_run(&run));
        send(&server.subscribe(SubscribeOptions::default()));
        send(&server.status());
        send(&server.drain(WAIT));
        send(&server.shutdown());
        send(&SessionServer::start(ServerConfig::new(InMemorySessionStore::new(), ScriptedAdapter::new())));
    });
}

#[tokio::test]
async fn a_run_that_exceeds_its_deadline_frees_its_slot() {
    let (server, store, _gates, mut started, _) = gated_server(1, 10).await;
    let slow = server.submit_run(input("hang"), RunOptions::new().timeout(Duration::from_millis(20))).await.unwrap();
    let next = server.submit_run(input("ok"), RunOptions::default()).await.unwrap();
    assert_eq!(started.next().await, slow);
    let err = server.await_run(&slow, WAIT).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(store.get_run(&slow).await.unwrap().status, RunStatus::Timeout);
    assert_eq!(server.await_run(&next, WAIT).await.unwrap().run.status, RunStatus::Completed);
    assert_log_invariants(&all_events(&store, server.session_id()).await);
}
