//! SessionServer benchmarks, each beside its baseline:
//!
//! - `submit_to_complete`: `execute_run` (submit + await) through a SessionServer with the
//!   scripted adapter (empty script) on the in-memory store, beside `start_run` + `execute_run`
//!   on the SessionManager alone;
//! - `fanout`: 100 subscribers on one session receiving events appended to the store (in
//!   batches of 100 by another writer), beside a raw `tokio::sync::broadcast` channel sending
//!   the same events to 100 receiver tasks. Throughput is in deliveries (events x subscribers).
//!
//! `cargo bench -p asm-runtime --bench session_server`
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use asm_core::{Event, EventKind, RunInput, SessionId};
use asm_ports::{SessionStore, SessionStoreExt};
use asm_runtime::{NewSession, RunOptions, ServerConfig, SessionManager, SessionServer, SubscribeOptions};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use tokio::sync::{Semaphore, broadcast};

const SUBSCRIBERS: usize = 100;
const EVENTS: usize = 10_000;
const BATCH: usize = 100;

fn runtime(multi: bool) -> tokio::runtime::Runtime {
    if multi {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }
}

fn submit_to_complete(c: &mut Criterion) {
    let mut group = c.benchmark_group("submit_to_complete");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));

    for (label, multi) in [("current_thread", false), ("multi_thread", true)] {
        let rt = runtime(multi);
        let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::new());
        let session_id = rt.block_on(async {
            let session = manager.start_session(NewSession::new("bench")).await.unwrap();
            manager.activate_session(&session.id).await.unwrap();
            session.id
        });
        group.bench_function(format!("manager_start_execute/{label}"), |b| {
            b.to_async(&rt).iter(|| {
                let manager = manager.clone();
                let session_id = session_id.clone();
                async move {
                    let run =
                        manager.start_run(&session_id, RunInput::user("go"), RunOptions::default()).await.unwrap();
                    manager.execute_run(&run.id, RunOptions::default()).await.unwrap()
                }
            });
        });

        let server = rt.block_on(async {
            SessionServer::start(
                ServerConfig::new(InMemorySessionStore::new(), ScriptedAdapter::new())
                    .create(NewSession::new("bench"))
                    .result_capacity(16),
            )
            .await
            .unwrap()
        });
        group.bench_function(format!("server_execute_run/{label}"), |b| {
            b.to_async(&rt).iter(|| {
                let server = server.clone();
                async move {
                    server
                        .execute_run(RunInput::user("go"), RunOptions::default(), Duration::from_secs(10))
                        .await
                        .unwrap()
                }
            });
        });
        rt.block_on(server.shutdown()).unwrap();
    }
    group.finish();
}

fn events(session: &SessionId, n: usize) -> Vec<Vec<Event>> {
    (0..n / BATCH)
        .map(|_| {
            (0..BATCH)
                .map(|_| {
                    Event::new(EventKind::MessageStreamed, session.clone())
                        .with_data("delta", "chunk ")
                        .with_data("content", "chunk ")
                })
                .collect()
        })
        .collect()
}

fn fanout(c: &mut Criterion) {
    let rt = runtime(true);
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements((EVENTS * SUBSCRIBERS) as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.warm_up_time(Duration::from_secs(1));

    // Baseline: a raw broadcast channel to 100 receiver tasks.
    group.bench_function("raw_broadcast_100_receivers", |b| {
        b.to_async(&rt).iter_custom(|iterations| async move {
            let session = SessionId::new();
            let event = Event::new(EventKind::MessageStreamed, session).with_data("delta", "chunk ");
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let (tx, _) = broadcast::channel::<Event>(EVENTS);
                let done = Arc::new(Semaphore::new(0));
                let mut tasks = Vec::new();
                for _ in 0..SUBSCRIBERS {
                    let mut rx = tx.subscribe();
                    let done = done.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut n = 0;
                        while n < EVENTS {
                            match rx.recv().await {
                                Ok(_) => n += 1,
                                Err(broadcast::error::RecvError::Lagged(k)) => n += k as usize,
                                Err(_) => break,
                            }
                        }
                        done.add_permits(1);
                    }));
                }
                let started = Instant::now();
                for _ in 0..EVENTS {
                    tx.send(event.clone()).unwrap();
                }
                done.acquire_many(SUBSCRIBERS as u32).await.unwrap().forget();
                total += started.elapsed();
                for task in tasks {
                    task.await.unwrap();
                }
            }
            total
        });
    });

    // The SessionServer: 100 subscriptions on one session, events appended by another writer.
    let store = InMemorySessionStore::new();
    let (server, deliveries, done, target) = rt.block_on(async {
        let server = SessionServer::start(
            ServerConfig::new(store.clone(), ScriptedAdapter::new())
                .create(NewSession::new("bench"))
                .subscription_buffer(4_096),
        )
        .await
        .unwrap();
        let deliveries = Arc::new(AtomicU64::new(0));
        let done = Arc::new(Semaphore::new(0));
        let target = Arc::new(AtomicU64::new(u64::MAX));
        for _ in 0..SUBSCRIBERS {
            let mut stream = server.subscribe(SubscribeOptions::after(0)).await.unwrap();
            let (deliveries, done, target) = (deliveries.clone(), done.clone(), target.clone());
            tokio::spawn(async move {
                let mut local = 0u64;
                while let Some(event) = stream.next().await {
                    let sequence = event.unwrap().sequence.unwrap();
                    local += 1;
                    if sequence == target.load(Ordering::Acquire) {
                        deliveries.fetch_add(local, Ordering::Relaxed);
                        local = 0;
                        done.add_permits(1);
                    }
                }
            });
        }
        (server, deliveries, done, target)
    });
    let session = server.session_id().clone();
    group.bench_function("session_server_100_subscribers", |b| {
        b.to_async(&rt).iter_custom(|iterations| {
            let (store, session, done, target) = (store.clone(), session.clone(), done.clone(), target.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let batches = events(&session, EVENTS);
                    let latest = store.latest_sequence(&session).await.unwrap();
                    target.store(latest + EVENTS as u64, Ordering::Release);
                    let started = Instant::now();
                    for batch in batches {
                        store.append_events(batch).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    done.acquire_many(SUBSCRIBERS as u32).await.unwrap().forget();
                    total += started.elapsed();
                }
                total
            }
        });
    });
    let delivered = deliveries.load(Ordering::Relaxed);
    assert!(delivered > 0);
    rt.block_on(server.shutdown()).unwrap();
    group.finish();
}

criterion_group!(benches, submit_to_complete, fanout);
criterion_main!(benches);
