//! SessionSupervisor (registry, restart after a crash, session slots), ConcurrencyLimiter and
//! ControlOperations.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use async_trait::async_trait;

use asm_core::{Capability, CapabilityType, ErrorCode, Result, RunId, RunInput, RunStatus, SessionId};
use asm_ports::SessionStore;
use asm_runtime::{
    ConcurrencyLimiter, ControlHandler, ControlOperations, LimiterConfig, NewSession, Operation, OperationState,
    RunOptions, ServerConfig, SessionManager, SessionSupervisor,
};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;

use common::{GatedAdapter, Outcome, WAIT, all_events, assert_log_invariants, eventually};

#[tokio::test]
async fn a_crashed_server_task_is_restarted_from_the_store() {
    let store = InMemorySessionStore::new();
    let (adapter, gates, mut started) = GatedAdapter::new();
    let supervisor = SessionSupervisor::new();
    let server =
        supervisor.start_session(ServerConfig::new(store.clone(), adapter).create(NewSession::new("a"))).await.unwrap();
    let session = server.session_id().clone();
    let in_flight = server.submit_run(RunInput::user("wait a"), RunOptions::default()).await.unwrap();
    let queued = server.submit_run(RunInput::user("wait b"), RunOptions::default()).await.unwrap();
    assert_eq!(started.next().await, in_flight);

    server.crash_for_tests();
    // The supervisor restarts the task; the same handle keeps working.
    eventually("the server to be restarted", || {
        let server = server.clone();
        async move { server.status().await.is_ok() }
    })
    .await;
    assert!(server.is_running());
    assert!(supervisor.whereis(&session).is_some());
    // The queued run was pending in the store: the new task picked it up.
    assert_eq!(started.next().await, queued);
    gates.release(&in_flight, Outcome::Succeed);
    gates.release(&queued, Outcome::Succeed);
    // The run that was in flight finished in its own task; its result is followed in the store.
    assert_eq!(server.await_run(&in_flight, WAIT).await.unwrap().run.status, RunStatus::Completed);
    assert_eq!(server.await_run(&queued, WAIT).await.unwrap().run.status, RunStatus::Completed);
    let run = server.execute_run(RunInput::user("ok"), RunOptions::default(), WAIT).await.unwrap();
    assert_eq!(run.run.status, RunStatus::Completed);
    assert_log_invariants(&all_events(&store, &session).await);
    supervisor.stop(&session).await.unwrap();
    assert!(supervisor.whereis(&session).is_none());
}

#[tokio::test]
async fn a_server_that_crashes_too_often_is_given_up() {
    let supervisor = SessionSupervisor::new().restart_intensity(1, Duration::from_secs(60));
    let server = supervisor
        .start_session(
            ServerConfig::new(InMemorySessionStore::new(), ScriptedAdapter::new()).create(NewSession::new("a")),
        )
        .await
        .unwrap();
    let session = server.session_id().clone();
    server.crash_for_tests();
    eventually("the first restart", || {
        let server = server.clone();
        async move { server.status().await.is_ok() }
    })
    .await;
    server.crash_for_tests();
    eventually("the supervisor to give up", || {
        let supervisor = supervisor.clone();
        let session = session.clone();
        async move { supervisor.whereis(&session).is_none() }
    })
    .await;
    assert!(!server.is_running());
    assert_eq!(server.status().await.unwrap_err().code(), ErrorCode::InternalError);
}

#[tokio::test]
async fn the_registry_and_session_slots() {
    let store = InMemorySessionStore::new();
    let manager = SessionManager::new(store.clone(), ScriptedAdapter::replying("hi"));
    let limiter = ConcurrencyLimiter::new(LimiterConfig::default().max_parallel_sessions(1)).unwrap();
    let supervisor = SessionSupervisor::new().with_limiter(limiter.clone());
    let config = || ServerConfig::from_manager(manager.clone());

    let first = supervisor.start_session(config().create(NewSession::new("a"))).await.unwrap();
    assert_eq!(limiter.status().active_sessions, 1);
    let err = supervisor.start_session(config().create(NewSession::new("b"))).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::MaxSessionsExceeded);
    let err = supervisor.start_session(config().attach(first.session_id().clone())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert_eq!(supervisor.sessions(), vec![first.session_id().clone()]);

    supervisor.stop(first.session_id()).await.unwrap();
    assert_eq!(limiter.status().active_sessions, 0);
    assert_eq!(supervisor.stop(first.session_id()).await.unwrap_err().code(), ErrorCode::SessionNotFound);

    // The stopped session can be served again by attaching.
    let again = supervisor.start_session(config().attach(first.session_id().clone())).await.unwrap();
    again.execute_run(RunInput::user("x"), RunOptions::default(), WAIT).await.unwrap();
    // A server that shuts itself down leaves the registry and frees its slot.
    again.shutdown().await.unwrap();
    eventually("the stopped server to leave the registry", || {
        let supervisor = supervisor.clone();
        async move { supervisor.sessions().is_empty() }
    })
    .await;
    assert_eq!(limiter.status().active_sessions, 0);
    supervisor.stop_all().await.unwrap();
}

#[test]
fn limiter_permits_are_raii_and_idempotent() {
    let err = ConcurrencyLimiter::new(LimiterConfig::default().max_parallel_runs(0)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    let limiter =
        ConcurrencyLimiter::new(LimiterConfig::default().max_parallel_sessions(2).max_parallel_runs(2)).unwrap();
    let (s1, s2, s3) = (SessionId::new(), SessionId::new(), SessionId::new());
    let a = limiter.acquire_session(&s1).unwrap();
    let a_again = limiter.acquire_session(&s1).unwrap(); // same slot
    let b = limiter.acquire_session(&s2).unwrap();
    assert_eq!(limiter.acquire_session(&s3).unwrap_err().code(), ErrorCode::MaxSessionsExceeded);
    drop(a);
    assert_eq!(limiter.status().active_sessions, 2, "s1 is still held by its second permit");
    drop(a_again);
    let c = limiter.acquire_session(&s3).unwrap();
    assert_eq!(c.session_id(), &s3);

    let (r1, r2, r3) = (RunId::new(), RunId::new(), RunId::new());
    let p1 = limiter.acquire_run(&s1, &r1).unwrap();
    let _p2 = limiter.acquire_run(&s2, &r2).unwrap();
    let err = limiter.acquire_run(&s3, &r3).unwrap_err();
    assert_eq!(err.code(), ErrorCode::MaxRunsExceeded);
    assert_eq!(err.details()["limit"], 2);
    let status = limiter.status();
    assert_eq!((status.active_runs, status.available_run_slots), (2, Some(0)));
    drop(p1);
    assert_eq!(limiter.status().available_run_slots, Some(1));
    drop((b, c));
    assert_eq!(limiter.status().active_sessions, 0);

    let unlimited = ConcurrencyLimiter::new(LimiterConfig::default().unlimited_runs()).unwrap();
    let permits: Vec<_> = (0..1_000).map(|_| unlimited.acquire_run(&s1, &RunId::new()).unwrap()).collect();
    assert_eq!(unlimited.status().available_run_slots, None);
    drop(permits);
    assert_eq!(unlimited.status().active_runs, 0);
}

#[derive(Debug)]
struct PauseHandler;

#[async_trait]
impl ControlHandler for PauseHandler {
    async fn pause(&self, _run_id: &RunId) -> Result<()> {
        Ok(())
    }
    async fn resume(&self, _run_id: &RunId) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn control_operations() {
    let store = InMemorySessionStore::new();
    let capabilities = vec![
        Capability::new("pause", CapabilityType::Tool).unwrap(),
        Capability::new("resume", CapabilityType::Tool).unwrap(),
    ];
    let (adapter, _gates, mut started) = GatedAdapter::new();
    let manager = SessionManager::new(store.clone(), adapter.with_capabilities(capabilities));
    let session = manager.start_session(NewSession::new("a")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();

    // Capabilities advertised but no handler: the provider cannot do it.
    let bare = ControlOperations::new(manager.clone());
    let err = bare.pause(&RunId::new()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);

    let control = ControlOperations::new(manager.clone()).with_handler(PauseHandler);
    let run = manager.start_run(&session.id, RunInput::user("hang"), Default::default()).await.unwrap();
    control.register_run(&session.id, &run.id);
    let task = {
        let manager = manager.clone();
        let run_id = run.id.clone();
        tokio::spawn(async move { manager.execute_run(&run_id, Default::default()).await })
    };
    started.next().await;
    control.pause(&run.id).await.unwrap();
    control.pause(&run.id).await.unwrap(); // idempotent
    assert_eq!(control.status(&run.id).state, OperationState::Paused);
    control.resume(&run.id).await.unwrap();
    assert_eq!(control.status(&run.id).state, OperationState::Running);
    control.resume(&run.id).await.unwrap(); // running: ok

    let results = control.interrupt_session(&session.id).await;
    assert_eq!(results.len(), 1);
    assert!(results[0].1.is_ok());
    control.interrupt(&run.id).await.unwrap(); // already interrupted: no-op
    assert_eq!(task.await.unwrap().unwrap_err().code(), ErrorCode::Cancelled);
    control.finish_run(&run.id, RunStatus::Cancelled);
    assert_eq!(control.pause(&run.id).await.unwrap_err().code(), ErrorCode::InvalidOperation);

    let status = control.status(&run.id);
    let operations: Vec<Operation> = status.history.iter().map(|r| r.operation).collect();
    assert_eq!(
        operations,
        vec![
            Operation::Pause,
            Operation::Pause,
            Operation::Resume,
            Operation::Resume,
            Operation::Interrupt,
            Operation::Interrupt,
            Operation::Pause
        ]
    );
    assert_eq!(status.last_operation, Some(Operation::Pause));
    assert_eq!(store.get_run(&run.id).await.unwrap().status, RunStatus::Cancelled);

    // cancel / cancel_all through the manager; unknown runs fail with the manager's error.
    let pending = manager.start_run(&session.id, RunInput::user("x"), Default::default()).await.unwrap();
    let results = control.cancel_all(&[pending.id.clone(), RunId::new()]).await;
    assert!(results[0].1.is_ok());
    assert_eq!(results[1].1.as_ref().unwrap_err().code(), ErrorCode::RunNotFound);
    assert_eq!(control.status(&pending.id).state, OperationState::Cancelled);
    control.cancel(&pending.id).await.unwrap();
    assert_eq!(control.history(&pending.id).len(), 2);
}
