//! Benchmarks of the sled store beside the raw sled engine, in the same run.
//!
//! 1. `single_appender`: one appender, flushed single-event appends (store, `Durability::Immediate`)
//!    vs raw sled `insert` + `flush`.
//! 2. `concurrent_appenders`: 64 concurrent appenders through group commit (events/s), with raw
//!    sled `insert` + `flush` from 64 threads beside it.
//! 3. `cursor_read_1m`: reading the 100 events after a random sequence of a 1M-event session vs a
//!    raw sled range scan of 100 entries of the same tree.
//! 4. `open_1m`: opening the 1M-event store vs `sled::open` of the same directory.
//!
//! The 1M-event database is built once (big batches, no flush per batch) under
//! `CARGO_TARGET_TMPDIR` and reused by later runs. Run with
//! `cargo bench -p asm-store-sled --bench sled_store`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asm_core::{Event, EventKind, Session, SessionId};
use asm_ports::{EventQuery, SessionStore, SessionStoreExt};
use asm_store_sled::{Durability, SledOptions, SledSessionStore};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

const BIG_SESSION_EVENTS: u64 = 1_000_000;
const BUILD_BATCH: usize = 5_000;
const APPENDERS: usize = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn event(session: &SessionId, n: u64) -> Event {
    Event::new(EventKind::MessageStreamed, session.clone())
        .with_data("delta", "a streamed chunk of assistant text, about this long.")
        .with_data("n", n)
        .with_provider("claude")
}

fn immediate() -> SledOptions {
    SledOptions::new().durability(Durability::Immediate)
}

/// The raw value the engine benchmarks write: an event as JSON (about the size of the store's
/// binary record plus the field names).
fn raw_value() -> Vec<u8> {
    serde_json::to_vec(&event(&SessionId::new(), 1)).expect("serialise")
}

fn single_appender(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rt = runtime();
    let mut group = c.benchmark_group("single_appender");
    group.throughput(Throughput::Elements(1)).sample_size(20).measurement_time(Duration::from_secs(8));

    {
        let db = sled::open(dir.path().join("raw")).expect("raw open");
        let tree = db.open_tree("events").expect("tree");
        let value = raw_value();
        let mut n = 0u64;
        group.bench_function("raw_sled_insert_flush", |b| {
            b.iter(|| {
                n += 1;
                tree.insert(n.to_be_bytes(), value.as_slice()).expect("insert");
                db.flush().expect("flush");
            })
        });
    }
    {
        let store = SledSessionStore::open_with(dir.path().join("store"), immediate()).expect("open");
        let session = Session::new("bench").expect("session");
        rt.block_on(store.save_session(&session)).expect("save_session");
        group.bench_function("store_append_event_immediate", |b| {
            b.to_async(&rt).iter(|| async { store.append_event(event(&session.id, 0)).await.expect("append") })
        });
    }
    {
        // For context: acknowledged before the flush.
        let options = SledOptions::new().durability(Durability::Eventual);
        let store = SledSessionStore::open_with(dir.path().join("store-eventual"), options).expect("open");
        let session = Session::new("bench").expect("session");
        rt.block_on(store.save_session(&session)).expect("save_session");
        group.bench_function("store_append_event_eventual", |b| {
            b.to_async(&rt).iter(|| async { store.append_event(event(&session.id, 0)).await.expect("append") })
        });
    }
    group.finish();
}

fn concurrent_appenders(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rt = runtime();
    let mut group = c.benchmark_group("concurrent_appenders_64");
    group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(10));

    {
        let db = sled::open(dir.path().join("raw")).expect("raw open");
        let tree = db.open_tree("events").expect("tree");
        let value = raw_value();
        let counter = std::sync::atomic::AtomicU64::new(0);
        group.bench_function("raw_sled_insert_flush_64_threads", |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(APPENDERS as u64);
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for _ in 0..APPENDERS {
                        scope.spawn(|| {
                            for _ in 0..per {
                                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tree.insert(n.to_be_bytes(), value.as_slice()).expect("insert");
                                db.flush().expect("flush");
                            }
                        });
                    }
                });
                scale(started.elapsed(), iters, per * APPENDERS as u64)
            })
        });
    }

    let store = Arc::new(SledSessionStore::open_with(dir.path().join("store"), immediate()).expect("open"));
    let sessions: Vec<SessionId> = rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..APPENDERS {
            let session = Session::new("bench").expect("session");
            store.save_session(&session).await.expect("save_session");
            ids.push(session.id);
        }
        ids
    });
    for (name, one_session) in [("store_64_sessions_immediate", false), ("store_one_session_immediate", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(APPENDERS as u64);
                rt.block_on(async {
                    let started = Instant::now();
                    let tasks: Vec<_> = (0..APPENDERS)
                        .map(|i| {
                            let store = Arc::clone(&store);
                            let session = sessions[if one_session { 0 } else { i }].clone();
                            tokio::spawn(async move {
                                for n in 0..per {
                                    store.append_event(event(&session, n)).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("appender task");
                    }
                    scale(started.elapsed(), iters, per * APPENDERS as u64)
                })
            })
        });
    }
    group.finish();
}

/// `elapsed` for `done` operations, scaled to `iters` operations.
fn scale(elapsed: Duration, iters: u64, done: u64) -> Duration {
    elapsed.mul_f64(iters as f64 / done.max(1) as f64)
}

/// The 1M-event database (built on first use) and its session.
fn big_store() -> (PathBuf, SessionId) {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("asm-store-sled-bench-1m-format-{}", asm_store_sled::FORMAT_VERSION));
    let path = root.join("db");
    let done = root.join("session");
    let built = std::fs::read_to_string(&done).ok().and_then(|id| SessionId::parse(id.trim()).ok());
    // Reuse it if this build still reads it.
    if let Some(session) = built
        && SledSessionStore::open(&path).is_ok()
    {
        return (path, session);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create the bench directory");
    let started = Instant::now();
    let rt = runtime();
    let options = SledOptions::new().durability(Durability::Eventual);
    let store = SledSessionStore::open_with(&path, options).expect("open");
    let session = Session::new("bench-1m").expect("session");
    rt.block_on(async {
        store.save_session(&session).await.expect("save_session");
        let mut n = 0;
        while n < BIG_SESSION_EVENTS {
            let batch: Vec<Event> = (0..BUILD_BATCH as u64).map(|i| event(&session.id, n + i)).collect();
            n += batch.len() as u64;
            store.append_events(batch).await.expect("append");
        }
        assert_eq!(store.latest_sequence(&session.id).await.expect("latest"), BIG_SESSION_EVENTS);
    });
    store.sync().expect("sync");
    drop(store);
    std::fs::write(&done, session.id.as_str()).expect("write the session marker");
    eprintln!("built the {BIG_SESSION_EVENTS}-event store in {:?}", started.elapsed());
    (path, session.id)
}

/// `session id bytes (16) + sequence`: the store's event key (the layout of `asm-store-kv`).
fn event_key(session: &[u8], sequence: u64) -> Vec<u8> {
    let mut key = session.to_vec();
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// The 16 bytes of a session id (its 32 hex digits), as the store's keys hold it.
fn session_bytes(session: &SessionId) -> Vec<u8> {
    let hex = &session.as_str()[SessionId::PREFIX.len()..];
    (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex id")).collect()
}

fn cursor_read_1m(c: &mut Criterion) {
    let (path, session) = big_store();
    let mut group = c.benchmark_group("cursor_read_100_of_1m");
    group.throughput(Throughput::Elements(1)).sample_size(20).measurement_time(Duration::from_secs(6));
    let max_start = BIG_SESSION_EVENTS - 100;

    {
        // The same tree the store reads, through the raw engine.
        let db = sled::open(&path).expect("raw open");
        let tree = db.open_tree("asm_kv_events").expect("tree");
        let number = session_bytes(&session);
        // Both sides start with every page in sled's cache: one full scan first.
        let warmed = tree.iter().count();
        assert!(warmed as u64 >= BIG_SESSION_EVENTS);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        group.bench_function("raw_sled_range_100", |b| {
            b.iter(|| {
                let start = rng.random_range(0..max_start);
                let rows: Vec<(sled::IVec, sled::IVec)> = tree
                    .range(event_key(&number, start + 1)..event_key(&number, u64::MAX))
                    .take(100)
                    .collect::<Result<_, _>>()
                    .expect("range");
                assert_eq!(rows.len(), 100);
                rows
            })
        });
    }
    {
        let rt = runtime();
        let store = SledSessionStore::open(&path).expect("open");
        rt.block_on(async {
            let mut after = 0;
            while after < BIG_SESSION_EVENTS {
                let chunk = store.get_events(&session, &EventQuery::new().after(after).limit(10_000)).await;
                after += chunk.expect("warm-up read").len() as u64;
            }
        });
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // All iterations inside one `block_on`: the cost of the awaited call, not of entering the
        // runtime once per read.
        group.bench_function("store_get_events_100", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let query = EventQuery::new().after(rng.random_range(0..max_start)).limit(100);
                        let events = store.get_events(&session, &query).await.expect("get_events");
                        assert_eq!(events.len(), 100);
                        std::hint::black_box(events);
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn open_1m(c: &mut Criterion) {
    let (path, session) = big_store();
    let mut group = c.benchmark_group("open_1m");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("raw_sled_open", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let db = sled::open(&path).expect("raw open");
                total += started.elapsed();
                drop(db);
            }
            total
        })
    });
    let rt = runtime();
    group.bench_function("store_open", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let store = SledSessionStore::open(&path).expect("open");
                total += started.elapsed();
                // Usable at once: the last sequence is there.
                let latest = rt.block_on(store.latest_sequence(&session)).expect("latest");
                assert_eq!(latest, BIG_SESSION_EVENTS);
                drop(store);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, single_appender, concurrent_appenders, cursor_read_1m, open_1m);
criterion_main!(benches);
