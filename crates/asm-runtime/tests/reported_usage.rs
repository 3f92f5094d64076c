//! Every terminal run keeps the usage and cost the provider reported up to its end: failed,
//! cancelled and timed-out runs store them in the run record and in the terminal event
//! (folded from the run's `token_usage_updated` events, see `asm_core::UsageTotals`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::sync::mpsc;

use asm_core::{Error, ErrorCode, EventKind, Run, RunInput, RunStatus, SessionId, TokenUsage, keys};
use asm_ports::{EventQuery, ProviderEvent};
use asm_runtime::{NewSession, RunOptions, SessionManager};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;

const WAIT: Duration = Duration::from_secs(10);

/// Usage as Claude reports a two-turn run that then hits max turns: one delta per message, the
/// run's totals and cost with the result.
fn reporting(adapter: ScriptedAdapter) -> ScriptedAdapter {
    let delta = |input: u64, output: u64, id: &str| {
        ProviderEvent::new(EventKind::TokenUsageUpdated)
            .data(keys::INPUT_TOKENS, input)
            .data(keys::OUTPUT_TOKENS, output)
            .data(keys::USAGE_MODE, "delta")
            .data("message_id", id)
    };
    adapter
        .emit(delta(100, 1, "msg_1"))
        .emit(
            ProviderEvent::new(EventKind::MessageStreamed).data("content", "I'll run it").data("delta", "I'll run it"),
        )
        .emit(delta(100, 1, "msg_2"))
        .emit(
            ProviderEvent::new(EventKind::TokenUsageUpdated)
                .data(keys::INPUT_TOKENS, 200)
                .data(keys::OUTPUT_TOKENS, 24)
                .data(keys::USAGE_MODE, "cumulative")
                .data(keys::TOTAL_COST_USD, 0.0016),
        )
}

async fn setup(adapter: ScriptedAdapter) -> (SessionManager, SessionId, Run) {
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter);
    let session = manager.start_session(NewSession::new("agent")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    let run = manager.start_run(&session.id, RunInput::user("x"), RunOptions::default()).await.unwrap();
    (manager, session.id, run)
}

async fn assert_kept(manager: &SessionManager, session: &SessionId, run: &Run, status: RunStatus, kind: EventKind) {
    let stored = manager.get_run(&run.id).await.unwrap();
    assert_eq!(stored.status, status);
    assert_eq!(
        stored.token_usage,
        TokenUsage { input_tokens: 200, output_tokens: 24, ..TokenUsage::default() },
        "the run record keeps the reported usage"
    );
    assert_eq!(stored.cost_usd, Some(0.0016), "the run record keeps the reported cost");
    let events = manager.session_events(session, EventQuery::new()).await.unwrap();
    let terminal = events.last().unwrap();
    assert_eq!(terminal.kind, kind);
    assert_eq!(terminal.data[keys::TOKEN_USAGE]["input_tokens"], 200, "{:?}", terminal.data);
    assert_eq!(terminal.data[keys::TOKEN_USAGE]["output_tokens"], 24);
    assert_eq!(terminal.data[keys::TOTAL_COST_USD], 0.0016);
    assert!(terminal.data.contains_key(keys::ERROR_CODE) || kind == EventKind::RunCancelled);
}

#[tokio::test]
async fn a_failed_run_keeps_the_reported_usage_and_cost() {
    let adapter = reporting(ScriptedAdapter::new())
        .failing(Error::new(ErrorCode::ProviderError, "Reached maximum number of turns (2)"));
    let (manager, session, run) = setup(adapter).await;
    let err = manager.execute_run(&run.id, RunOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    assert_kept(&manager, &session, &run, RunStatus::Failed, EventKind::RunFailed).await;
}

#[tokio::test]
async fn a_cancelled_run_keeps_the_reported_usage_and_cost() {
    let (manager, session, run) = setup(reporting(ScriptedAdapter::new()).hanging()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = {
        let manager = manager.clone();
        let run_id = run.id.clone();
        tokio::spawn(async move {
            let options = RunOptions::default().on_event(move |e| {
                if e.kind == EventKind::TokenUsageUpdated && e.data[keys::USAGE_MODE] == "cumulative" {
                    let _ = tx.send(());
                }
            });
            manager.execute_run(&run_id, options).await
        })
    };
    tokio::time::timeout(WAIT, rx.recv()).await.expect("the usage was never reported").unwrap();
    manager.cancel_run(&run.id).await.unwrap();
    let err = tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled);
    assert_kept(&manager, &session, &run, RunStatus::Cancelled, EventKind::RunCancelled).await;
}

#[tokio::test]
async fn a_timed_out_run_keeps_the_reported_usage_and_cost() {
    let (manager, session, run) = setup(reporting(ScriptedAdapter::new()).hanging()).await;
    let err = manager.execute_run(&run.id, RunOptions::default().timeout(Duration::from_secs(1))).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_kept(&manager, &session, &run, RunStatus::Timeout, EventKind::RunTimeout).await;
}

#[tokio::test]
async fn a_failed_run_without_reports_records_zero_usage_and_no_cost() {
    let adapter = ScriptedAdapter::new().failing(Error::new(ErrorCode::ProviderUnavailable, "down"));
    let (manager, session, run) = setup(adapter).await;
    manager.execute_run(&run.id, RunOptions::default()).await.unwrap_err();
    let stored = manager.get_run(&run.id).await.unwrap();
    assert!(stored.token_usage.is_zero());
    assert_eq!(stored.cost_usd, None);
    let events = manager.session_events(&session, EventQuery::new()).await.unwrap();
    let terminal = events.last().unwrap();
    assert_eq!(terminal.data[keys::TOKEN_USAGE]["input_tokens"], 0);
    assert!(!terminal.data.contains_key(keys::TOTAL_COST_USD));
}

/// A run left `running` by a process that died is cancelled in the store by another manager:
/// it keeps the usage its provider had reported.
#[tokio::test]
async fn an_orphaned_run_cancelled_in_the_store_keeps_its_usage() {
    use asm_ports::SessionStoreExt;
    let store = InMemorySessionStore::new();
    let crashed = SessionManager::new(store.clone(), ScriptedAdapter::new());
    let session = crashed.start_session(NewSession::new("agent")).await.unwrap();
    crashed.activate_session(&session.id).await.unwrap();
    let mut run = crashed.start_run(&session.id, RunInput::user("x"), RunOptions::default()).await.unwrap();
    // What the dead process left behind: a running run and the usage its provider reported.
    run.transition(RunStatus::Running).unwrap();
    let store = crashed.store().clone();
    store.save_run(&run).await.unwrap();
    let usage = |mode: &str, input: u64, output: u64| {
        asm_core::Event::new(EventKind::TokenUsageUpdated, session.id.clone())
            .with_run(run.id.clone())
            .with_provider("claude")
            .with_data(keys::INPUT_TOKENS, input)
            .with_data(keys::OUTPUT_TOKENS, output)
            .with_data(keys::USAGE_MODE, mode)
    };
    store.append_event(usage("delta", 100, 1)).await.unwrap();
    store.append_event(usage("cumulative", 200, 24).with_data(keys::TOTAL_COST_USD, 0.0016)).await.unwrap();

    let other = SessionManager::from_shared(store.clone(), std::sync::Arc::new(ScriptedAdapter::new()));
    other.cancel_run(&run.id).await.unwrap();
    assert_kept(&other, &session.id, &run, RunStatus::Cancelled, EventKind::RunCancelled).await;
}
