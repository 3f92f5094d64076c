//! Load: 100 concurrent SSE clients on one session receive every one of 10,000 appended events
//! exactly once and in order, while the process's memory stays flat. Prints the figures that
//! docs/PERFORMANCE.md records (`cargo test -p asm-http --release --test load -- --nocapture`):
//! the SSE throughput, the same fan-out in process (100 `stream_session_events` readers of the
//! same store, no HTTP) as the baseline measured in the same run, their ratio, and the RSS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use asm_core::{Event, EventKind, Session, SessionId};
use asm_http::ApiServer;
use asm_ports::{DynSessionStore, SessionStore, SessionStoreExt};
use asm_runtime::{SessionManager, StreamOptions};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;
use common::{Running, SseClient, rss_kib};

const CLIENTS: usize = 100;
const EVENTS: u64 = 10_000;
const BATCH: u64 = 100;

/// Appends the `EVENTS` events in batches of `BATCH`.
fn writer(store: DynSessionStore, session_id: SessionId, started: Instant) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        for batch in 0..EVENTS / BATCH {
            let events = (batch * BATCH..(batch + 1) * BATCH)
                .map(|i| {
                    Event::new(EventKind::MessageStreamed, session_id.clone())
                        .with_data("i", i)
                        .with_data("delta", "some streamed assistant text ")
                })
                .collect();
            store.append_events(events).await.unwrap();
        }
        started.elapsed()
    })
}

/// The baseline: `CLIENTS` in-process readers of the stream the SSE handler serves (same
/// page size), each receiving all `EVENTS` while they are appended. Returns the time until
/// the slowest had them all.
async fn in_process_fan_out(store: &DynSessionStore) -> Duration {
    let session = Session::new("load-baseline").unwrap();
    store.save_session(&session).await.unwrap();
    let manager = SessionManager::from_shared(store.clone(), Arc::new(ScriptedAdapter::new()));
    let started = Instant::now();
    let readers: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let mut stream = manager.stream_session_events(
                &session.id,
                StreamOptions::after(0).page_size(500).wait(Duration::from_secs(30)),
            );
            tokio::spawn(async move {
                let mut expected = 1u64;
                while expected <= EVENTS {
                    let event = stream.next().await.expect("stream open").expect("event");
                    // The same work per event as an SSE frame: the event JSON, serialised.
                    let json = serde_json::to_string(&event.to_json()).unwrap();
                    assert_eq!(event.sequence, Some(expected), "reader {n}: exactly once and in order");
                    assert!(!json.is_empty());
                    expected += 1;
                }
                started.elapsed()
            })
        })
        .collect();
    writer(store.clone(), session.id.clone(), started).await.unwrap();
    let mut slowest = Duration::ZERO;
    for reader in readers {
        let elapsed = tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .expect("every in-process reader receives every event within 120 s")
            .expect("no reader failed");
        slowest = slowest.max(elapsed);
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_sse_clients_receive_ten_thousand_events_exactly_once() {
    let store: DynSessionStore = Arc::new(InMemorySessionStore::new());
    let session = Session::new("load").unwrap();
    store.save_session(&session).await.unwrap();
    let server =
        Running::start(ApiServer::builder().shared_store(store.clone()).adapter("scripted", ScriptedAdapter::new()))
            .await;
    let path = format!("/v1/sessions/{}/events/stream", session.id);

    let rss_start = rss_kib();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let client = SseClient::connect(server.addr, &path, None).await;
        assert_eq!(client.status, 200);
        clients.push(client);
    }
    let rss_connected = rss_kib();
    let started = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, mut client)| {
            tokio::spawn(async move {
                let mut expected = 1u64;
                while expected <= EVENTS {
                    let frame = client.next_event(Duration::from_secs(60)).await;
                    let id: u64 = frame.id.as_deref().and_then(|id| id.parse().ok()).expect("numeric id");
                    assert_eq!(id, expected, "client {n}: events exactly once and in order");
                    // Check the payload of a sample (parsing all 1,000,000 would measure the client).
                    if id.is_multiple_of(997) || id == EVENTS {
                        let event: serde_json::Value = serde_json::from_str(&frame.data).expect("event JSON");
                        assert_eq!(event["sequence"], id);
                        assert_eq!(event["data"]["i"], id - 1);
                    }
                    expected += 1;
                }
                started.elapsed()
            })
        })
        .collect();

    let appended_in = writer(store.clone(), session.id.clone(), started).await.unwrap();
    let mut rss_peak = rss_kib();
    let mut slowest = Duration::ZERO;
    for reader in readers {
        let elapsed = tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .expect("every client receives every event within 120 s")
            .expect("no client failed");
        slowest = slowest.max(elapsed);
        rss_peak = rss_peak.max(rss_kib());
    }
    let delivered = CLIENTS as f64 * EVENTS as f64;
    let rss_end = rss_kib();
    // After the SSE figures, so that the baseline's allocations do not show in them.
    let baseline = in_process_fan_out(&store).await;
    let sse_rate = delivered / slowest.as_secs_f64();
    let baseline_rate = delivered / baseline.as_secs_f64();
    println!(
        "sse load: {CLIENTS} clients x {EVENTS} events: appended in {appended_in:?}, all delivered in {slowest:?} \
         ({sse_rate:.0} events/s delivered); in-process baseline (same fan-out, no HTTP) {baseline:?} \
         ({baseline_rate:.0} events/s); SSE/baseline throughput ratio {:.2}; RSS start {rss_start} KiB, \
         connected {rss_connected} KiB, peak {rss_peak} KiB, end {rss_end} KiB",
        sse_rate / baseline_rate
    );
    // Memory stays flat: no per-client copy of the log, no unbounded buffering. The store
    // itself holds the 10,000 events (a few MiB); 100 streams may buffer one page each.
    let growth_mib = rss_peak.saturating_sub(rss_connected) / 1024;
    assert!(growth_mib < 128, "RSS grew by {growth_mib} MiB while streaming");
    server.stop().await;
}
