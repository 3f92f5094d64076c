//! SessionServer subscriptions: exactly once, in order, no gaps; backfill then live; other
//! writers; lagging subscribers; filters; unsubscribe; end.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use asm_core::{Event, EventKind, Result, RunInput, SessionId, StoredEvent};
use asm_ports::{EventQuery, Layered, ProviderEvent, SessionStore, SessionStoreExt, StoreCapabilities, StoreLayer};
use asm_runtime::{EventSubscription, NewSession, RunOptions, ServerConfig, SessionServer, SubscribeOptions};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;

use common::{WAIT, all_events, scripted_server_on};

const EVENTS_PER_RUN: usize = 1_000;

fn chatty_adapter() -> ScriptedAdapter {
    let mut adapter = ScriptedAdapter::new();
    for i in 0..EVENTS_PER_RUN {
        adapter = adapter.emit(ProviderEvent::new(EventKind::MessageStreamed).data("delta", format!("{i} ")));
    }
    adapter
}

/// Reads `stream` until it has seen sequence `last`, checking that sequences are contiguous from
/// `first` (or, with `filtered`, only increasing). Returns the events.
async fn collect_until(
    stream: &mut EventSubscription,
    first: u64,
    last: u64,
    filtered: bool,
    slow: bool,
) -> Vec<StoredEvent> {
    let mut events: Vec<StoredEvent> = Vec::new();
    let mut expected = first;
    let read = async {
        while let Some(item) = stream.next().await {
            let event = item.expect("no store error expected");
            let sequence = event.sequence.unwrap();
            if filtered {
                assert!(sequence >= expected, "out of order or duplicate: {sequence} after {}", expected - 1);
            } else {
                assert_eq!(sequence, expected, "gap or duplicate");
            }
            expected = sequence + 1;
            let done = sequence >= last;
            events.push(event);
            if slow && events.len().is_multiple_of(64) {
                // A slow consumer: falls behind the broadcast buffer and must catch up from the store.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if done {
                return;
            }
        }
        panic!("the subscription ended early");
    };
    tokio::time::timeout(WAIT, read).await.expect("subscription too slow");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_exactly_once_under_eight_concurrent_runs() {
    let store = InMemorySessionStore::new();
    let server = SessionServer::start(
        ServerConfig::new(store.clone(), chatty_adapter())
            .create(NewSession::new("agent"))
            .max_concurrent_runs(8)
            .subscription_buffer(64),
    )
    .await
    .unwrap();
    let session = server.session_id().clone();
    // 2 session events + 8 runs x (run_started, message_sent, 1000 chunks, run_completed)
    let last = 2 + 8 * (EVENTS_PER_RUN as u64 + 3);

    let mut fast = server.subscribe(SubscribeOptions::after(0)).await.unwrap();
    let mut slow = server.subscribe(SubscribeOptions::after(0)).await.unwrap();
    let fast_task = tokio::spawn(async move { collect_until(&mut fast, 1, last, false, false).await });
    let slow_task = tokio::spawn(async move { collect_until(&mut slow, 1, last, false, true).await });

    let mut runs = Vec::new();
    for i in 0..8 {
        runs.push(server.submit_run(RunInput::user(format!("run {i}")), RunOptions::default()).await.unwrap());
    }
    // A subscriber that joins mid-way, from a sequence that is already stored.
    let joined_at = loop {
        let latest = store.latest_sequence(&session).await.unwrap();
        if latest > 3_000 {
            break latest - 1_000;
        }
        tokio::task::yield_now().await;
    };
    let mut late = server.subscribe(SubscribeOptions::after(joined_at - 1)).await.unwrap();
    let late_task = tokio::spawn(async move { collect_until(&mut late, joined_at, last, false, false).await });
    // And one filtered on one run's chunks.
    let mut filtered = server
        .subscribe(SubscribeOptions::after(0).run(runs[3].clone()).kind(EventKind::MessageStreamed))
        .await
        .unwrap();

    for run in &runs {
        server.await_run(run, WAIT).await.unwrap();
    }
    let stored = all_events(&store, &session).await;
    assert_eq!(stored.len() as u64, last);
    let expected_run3: Vec<StoredEvent> = stored
        .iter()
        .filter(|e| e.run_id.as_ref() == Some(&runs[3]) && e.kind == EventKind::MessageStreamed)
        .cloned()
        .collect();
    let last_of_run3 = expected_run3.last().unwrap().sequence.unwrap();
    let got_run3 = collect_until(&mut filtered, 1, last_of_run3, true, false).await;
    assert_eq!(got_run3, expected_run3, "the filtered subscriber sees exactly its run's chunks");

    assert_eq!(fast_task.await.unwrap(), stored);
    assert_eq!(slow_task.await.unwrap(), stored);
    assert_eq!(late_task.await.unwrap(), stored[(joined_at - 1) as usize..].to_vec());
}

#[tokio::test]
async fn events_of_another_writer_are_delivered_live() {
    let store = InMemorySessionStore::new();
    let server = scripted_server_on(&store).await;
    let session = server.session_id().clone();
    let mut stream = server.subscribe(SubscribeOptions::after(2)).await.unwrap();
    let mut appended = Vec::new();
    for i in 0..5 {
        let event = Event::new(EventKind::ErrorOccurred, session.clone()).with_data("error_message", format!("e{i}"));
        appended.push(store.append_event(event).await.unwrap());
    }
    let got = collect_until(&mut stream, 3, 7, false, false).await;
    assert_eq!(got, appended);
}

/// The memory store, without long-poll: the dispatcher polls, and appends through the server
/// wake it at once.
#[derive(Debug, Clone)]
struct NoLongPoll;

#[async_trait]
impl StoreLayer for NoLongPoll {
    async fn get_events(&self, inner: &dyn SessionStore, s: &SessionId, q: &EventQuery) -> Result<Vec<StoredEvent>> {
        let mut q = q.clone();
        q.wait = None;
        inner.get_events(s, &q).await
    }
    fn capabilities(&self, _inner: &dyn SessionStore) -> StoreCapabilities {
        StoreCapabilities::new()
    }
}

#[tokio::test]
async fn stores_without_long_poll_are_followed_too() {
    let inner = InMemorySessionStore::new();
    let store = Layered::new(inner.clone(), NoLongPoll);
    let server = SessionServer::start(
        ServerConfig::new(store, ScriptedAdapter::replying("one two three"))
            .create(NewSession::new("a"))
            .poll_interval(Duration::from_millis(5)),
    )
    .await
    .unwrap();
    let session = server.session_id().clone();
    let mut stream = server.subscribe(SubscribeOptions::after(0)).await.unwrap();
    let run = server.submit_run(RunInput::user("hi"), RunOptions::default()).await.unwrap();
    server.await_run(&run, WAIT).await.unwrap();
    inner
        .append_event(Event::new(EventKind::ErrorOccurred, session.clone()).with_data("error_message", "x"))
        .await
        .unwrap();
    let stored = all_events(&inner, &session).await;
    let got = collect_until(&mut stream, 1, stored.len() as u64, false, false).await;
    assert_eq!(got, stored);
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes() {
    let server = scripted_server_on(&InMemorySessionStore::new()).await;
    let first = server.subscribe(SubscribeOptions::after(0)).await.unwrap();
    let second = server.subscribe(SubscribeOptions::after(0)).await.unwrap();
    assert_eq!(server.status().await.unwrap().subscribers, 2);
    drop(first);
    assert_eq!(server.status().await.unwrap().subscribers, 1);
    drop(second);
    assert_eq!(server.status().await.unwrap().subscribers, 0);
    // Subscribing again after everyone left works (the feed restarts).
    let mut again = server.subscribe(SubscribeOptions::after(0)).await.unwrap();
    let run = server.submit_run(RunInput::user("x"), RunOptions::default()).await.unwrap();
    server.await_run(&run, WAIT).await.unwrap();
    let last = server.manager().store().latest_sequence(server.session_id()).await.unwrap();
    collect_until(&mut again, 1, last, false, false).await;
}

#[tokio::test]
async fn a_subscription_from_the_future_waits_for_it() {
    let store = InMemorySessionStore::new();
    let server = scripted_server_on(&store).await;
    let session = server.session_id().clone();
    let mut stream = server.subscribe(SubscribeOptions::after(5)).await.unwrap();
    for _ in 0..5 {
        store.append_event(Event::new(EventKind::TurnCompleted, session.clone())).await.unwrap();
    }
    let got = collect_until(&mut stream, 6, 7, false, false).await;
    assert_eq!(got.iter().map(|e| e.sequence.unwrap()).collect::<Vec<_>>(), vec![6, 7]);
}

#[tokio::test]
async fn a_store_error_is_yielded_and_ends_the_subscription() {
    let store = InMemorySessionStore::new();
    let server = scripted_server_on(&store).await;
    let mut stream = server.subscribe(SubscribeOptions::after(0)).await.unwrap();
    collect_until(&mut stream, 1, 2, false, false).await;
    store.delete_session(server.session_id()).await.unwrap();
    let item = tokio::time::timeout(WAIT, stream.next()).await.expect("the error must surface").unwrap();
    assert_eq!(item.unwrap_err().code(), asm_core::ErrorCode::SessionNotFound);
    assert!(tokio::time::timeout(WAIT, stream.next()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_one_writer() {
    let store = InMemorySessionStore::new();
    let server = scripted_server_on(&store).await;
    let session = server.session_id().clone();
    let total = 2 + 2_000u64;
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let mut stream = server.subscribe(SubscribeOptions::after(i)).await.unwrap();
        tasks.push(tokio::spawn(async move { collect_until(&mut stream, 1 + i, total, false, i % 4 == 0).await }));
    }
    let writer = {
        let store = store.clone();
        let session = session.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let batch = (0..100).map(|_| Event::new(EventKind::TurnCompleted, session.clone())).collect();
                store.append_events(batch).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    writer.await.unwrap();
    let stored = Arc::new(all_events(&store, &session).await);
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), stored[i..].to_vec());
    }
}

#[tokio::test]
async fn filtered_backfill_over_many_pages_then_live() {
    let store = InMemorySessionStore::new();
    let server = scripted_server_on(&store).await;
    let session = server.session_id().clone();
    let batch = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| {
                let kind = if i % 3 == 0 { EventKind::ToolCallStarted } else { EventKind::TurnCompleted };
                Event::new(kind, session.clone()).with_data("tool_name", "bash")
            })
            .collect()
    };
    store.append_events(batch(3_000)).await.unwrap();
    let mut stream = server.subscribe(SubscribeOptions::after(0).kind(EventKind::ToolCallStarted)).await.unwrap();
    store.append_events(batch(300)).await.unwrap();
    let stored = all_events(&store, &session).await;
    let expected: Vec<StoredEvent> = stored.iter().filter(|e| e.kind == EventKind::ToolCallStarted).cloned().collect();
    let last = expected.last().unwrap().sequence.unwrap();
    let got = collect_until(&mut stream, 1, last, true, false).await;
    assert_eq!(got, expected);
}
