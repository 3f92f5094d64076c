//! SessionManager overhead: one run (start_run + execute_run) whose scripted adapter emits 10
//! events, on the in-memory store, beside the same adapter executed bare with a no-op sink.
//!
//! `cargo bench -p asm-runtime`
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use asm_core::{Event, EventKind, RunInput, Session, SessionId, StoredEvent};
use asm_ports::{EventSink, ExecuteRequest, ProviderAdapter, ProviderEvent};
use asm_runtime::{NewSession, RunOptions, SessionManager};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::FutureExt;

fn ten_event_adapter() -> ScriptedAdapter {
    let mut adapter = ScriptedAdapter::new();
    for i in 0..10 {
        let chunk = format!("chunk {i} of a streamed assistant reply ");
        adapter = adapter
            .emit(ProviderEvent::new(EventKind::MessageStreamed).data("delta", chunk.clone()).data("content", chunk));
    }
    adapter
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("run_overhead");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));

    // Baseline: the adapter alone, with a sink that only stamps the event.
    let bare = ten_event_adapter();
    let session = Session::new("bench").unwrap();
    group.bench_function("bare_adapter_10_events", |b| {
        b.to_async(&rt).iter(|| {
            let session = session.clone();
            let run = asm_core::Run::new(session.id.clone(), RunInput::user("go"));
            let sink = EventSink::new(move |e: ProviderEvent| {
                let sid = SessionId::new();
                async move { Ok(StoredEvent::new(Event::new(e.kind, sid).with_payload(e.data), 1)) }.boxed()
            });
            let adapter = bare.clone();
            async move { adapter.execute(ExecuteRequest::new(session, run), sink).await.unwrap() }
        });
    });

    // A fresh store every RESET_AFTER runs (untimed), so the figure is the cost of a run, not of
    // an ever-growing heap.
    const RESET_AFTER: u64 = 5_000;
    let fresh = || {
        rt.block_on(async {
            let manager = SessionManager::new(InMemorySessionStore::new(), ten_event_adapter());
            let session = manager.start_session(NewSession::new("bench")).await.unwrap();
            manager.activate_session(&session.id).await.unwrap();
            (manager, session.id)
        })
    };
    group.bench_function("session_manager_run_10_events", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut remaining = iters;
            while remaining > 0 {
                let n = remaining.min(RESET_AFTER);
                let (manager, session_id) = fresh();
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..n {
                        let run =
                            manager.start_run(&session_id, RunInput::user("go"), RunOptions::default()).await.unwrap();
                        manager.execute_run(&run.id, RunOptions::default()).await.unwrap();
                    }
                });
                timed += start.elapsed();
                drop(manager);
                remaining -= n;
            }
            timed
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
