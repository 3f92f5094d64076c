//! Throughput of the in-memory store, each next to a raw baseline measured in the same run.
//!
//! - `append`: one ~300-byte event per call from one task, against a raw
//!   `parking_lot::Mutex<Vec<Event>>` push of a clone (the store also keeps one handle and hands
//!   one back). The store is replaced every 1M events (untimed) so memory stays bounded.
//! - `cursor_read_100_of_1m`: 100 events after a random sequence of a 1M-event session through
//!   `SessionStore::get_events`, against a raw copy of 100 events out of a `Vec<Event>` (an
//!   `Event` is a shared, copy-on-write handle, so both copy 100 handles).
//!
//! Run: `cargo bench -p asm-store-memory --bench memory_store`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use asm_core::{Event, EventId, EventKind, RunId, Session, SessionId, StoredEvent};
use asm_ports::{EventQuery, SessionStore, SessionStoreExt};
use asm_store_memory::InMemorySessionStore;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Events generated (untimed) per timed chunk.
const CHUNK: u64 = 10_000;
/// Events kept in one store before it is replaced (untimed).
const RESET_AFTER: u64 = 1_000_000;
/// Size of the session the cursor reads run against.
const LOG_SIZE: u64 = 1_000_000;
/// Events per cursor read.
const PAGE: usize = 100;

/// A streamed assistant message chunk: about 300 bytes as JSON.
fn sample_event(session: &SessionId, run: &RunId, n: u64) -> Event {
    let id = EventId::parse(&format!("evt_{:016x}{n:016x}", 0x9e37_79b9_7f4a_7c15_u64)).expect("valid id");
    let mut event = Event::new(EventKind::MessageStreamed, session.clone())
        .with_run(run.clone())
        .with_provider("claude")
        .with_data("content", "Let me look at the failing test first.")
        .with_data("delta", " failing test first.");
    event.id = id;
    event
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime")
}

async fn fresh_store() -> (InMemorySessionStore, SessionId) {
    let store = InMemorySessionStore::new();
    let session = Session::new("bench").expect("session");
    store.save_session(&session).await.expect("save_session");
    (store, session.id)
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let run = RunId::new();
    let probe = sample_event(&SessionId::new(), &run, 0);
    eprintln!("append: sample event is {} bytes as JSON", serde_json::to_vec(&probe).expect("json").len());

    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));

    group.bench_function("memory_store", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let (mut store, mut session) = fresh_store().await;
                let mut in_store = 0;
                let mut next = 0;
                let mut timed = Duration::ZERO;
                let mut remaining = iters;
                while remaining > 0 {
                    let n = remaining.min(CHUNK);
                    if in_store + n > RESET_AFTER {
                        (store, session) = fresh_store().await;
                        in_store = 0;
                    }
                    let events: Vec<Event> = (0..n).map(|i| sample_event(&session, &run, next + i)).collect();
                    let start = Instant::now();
                    for event in events {
                        black_box(store.append_event(event).await.expect("append"));
                    }
                    timed += start.elapsed();
                    next += n;
                    in_store += n;
                    remaining -= n;
                }
                timed
            })
        });
    });

    group.bench_function("raw_mutex_vec_baseline", |b| {
        b.iter_custom(|iters| {
            let session = SessionId::new();
            let mut log = Mutex::new(Vec::<Event>::new());
            let mut in_log = 0;
            let mut next = 0;
            let mut timed = Duration::ZERO;
            let mut remaining = iters;
            while remaining > 0 {
                let n = remaining.min(CHUNK);
                if in_log + n > RESET_AFTER {
                    log = Mutex::new(Vec::new());
                    in_log = 0;
                }
                let events: Vec<Event> = (0..n).map(|i| sample_event(&session, &run, next + i)).collect();
                let start = Instant::now();
                for mut event in events {
                    let mut guard = log.lock();
                    event.sequence = Some(guard.len() as u64 + 1);
                    guard.push(event.clone());
                    drop(guard);
                    black_box(event);
                }
                timed += start.elapsed();
                next += n;
                in_log += n;
                remaining -= n;
            }
            timed
        });
    });
    group.finish();
}

fn cursor_read(c: &mut Criterion) {
    let rt = runtime();
    let run = RunId::new();
    let (store, session) = rt.block_on(fresh_store());
    let mut raw: Vec<StoredEvent> = Vec::with_capacity(LOG_SIZE as usize);
    rt.block_on(async {
        let mut n = 0;
        while n < LOG_SIZE {
            let batch: Vec<Event> = (n..n + 1_000).map(|i| sample_event(&session, &run, i)).collect();
            raw.extend(store.append_events(batch).await.expect("append"));
            n += 1_000;
        }
    });
    assert_eq!(rt.block_on(store.latest_sequence(&session)).expect("latest"), LOG_SIZE);
    let max_after = LOG_SIZE - PAGE as u64;

    let mut group = c.benchmark_group("cursor_read_100_of_1m");
    group.throughput(Throughput::Elements(1));
    group.bench_function("memory_store", |b| {
        let mut rng = StdRng::seed_from_u64(7);
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let after = rng.random_range(0..=max_after);
                    let page = store.get_events(&session, &EventQuery::new().after(after).limit(PAGE)).await;
                    black_box(page.expect("read"));
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("raw_vec_slice_baseline", |b| {
        let mut rng = StdRng::seed_from_u64(7);
        b.iter(|| {
            let after = rng.random_range(0..=max_after) as usize;
            black_box(raw[after..after + PAGE].to_vec())
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = append, cursor_read
}
criterion_main!(benches);
