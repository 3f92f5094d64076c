//! `RedbSessionStore` beside the raw redb engine, in the same run.
//!
//! ```text
//! cargo bench -p asm-store-redb --bench redb_store
//! ```
//!
//! 1. one appender, durable single-event commits: store `append_event` vs a raw redb write
//!    transaction inserting one value and committing (`Durability::Immediate`);
//! 2. 64 concurrent appenders through group commit, durable, each on its own session and all on
//!    one session; raw redb durable batches of 100 (one sequence) and of 64 values in 64 places
//!    (one per session) as the references; and, to show the ceiling of the one-session case,
//!    raw redb batches of 64 in one sequence and a minimal raw group commit (64 tasks, each
//!    sending one value to a thread that commits exactly 64 at a time and answers them);
//! 3. a cursor read of 100 events after a random sequence in a 1M-event session vs a raw redb
//!    range read of 100 values (copied out) from a 1M-entry table, vs the same raw read
//!    that also deserialises the values into `Event`s with serde_json, and vs the floor of any
//!    read returning owned `Event`s: the raw range read building 100 `Event`s with this
//!    workload's fields straight from known offsets (the allocations of `Event`, no decoding);
//! 4. opening the 1M-event store (with and without the page verification on open) vs opening
//!    the raw 1M-entry file.
//!
//! The 1M-event store and the raw table are built once per run, in a temp dir, with large
//! batches and `Durability::Eventual` / `Durability::None`. Run without `--bench` (as
//! `cargo test --benches` does) the fixture has 10k events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asm_core::{Event, EventKind, RunId, Session, SessionId};
use asm_ports::{EventQuery, SessionStore, SessionStoreExt};
use asm_store_redb::{Durability, RedbOptions, RedbSessionStore};
use criterion::{Criterion, Throughput};
use rand::Rng;
use redb::{ReadableDatabase, TableDefinition};

/// The raw engine's table: the same 24-byte `(session, sequence)` keys, the event JSON as value.
const RAW: TableDefinition<'static, &[u8; 24], &[u8]> = TableDefinition::new("raw_events");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// A representative streamed chunk: a run, a provider, a short delta.
fn event(session: &SessionId, run: &RunId, n: u64) -> Event {
    Event::new(EventKind::MessageStreamed, session.clone())
        .with_run(run.clone())
        .with_provider("claude")
        .with_data("delta", format!("chunk {n}: the quick brown fox jumps over the lazy dog"))
}

fn raw_key(session: &[u8; 16], sequence: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(session);
    key[16..].copy_from_slice(&sequence.to_be_bytes());
    key
}

fn raw_value() -> Vec<u8> {
    serde_json::to_vec(&event(&SessionId::new(), &RunId::new(), 123_456)).expect("event JSON")
}

fn raw_db(path: &Path) -> redb::Database {
    let db = redb::Database::create(path).expect("create raw redb");
    let txn = db.begin_write().expect("begin_write");
    txn.open_table(RAW).expect("raw table");
    txn.commit().expect("commit");
    db
}

// ---------------------------------------------------------------------------------------------
// 1. one appender, durable single-event commits
// ---------------------------------------------------------------------------------------------

fn single_appender(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("single_appender_durable");
    group.throughput(Throughput::Elements(1));

    let store = RedbSessionStore::open(dir.path().join("single.redb")).expect("open store");
    let session = Session::new("bench").expect("session");
    rt.block_on(store.save_session(&session)).expect("save_session");
    let run = RunId::new();
    let mut n = 0u64;
    group.bench_function("store_append_event", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let e = event(&session.id, &run, n);
            let store = &store;
            async move { store.append_event(e).await.expect("append_event") }
        });
    });

    let raw = raw_db(&dir.path().join("single-raw.redb"));
    let value = raw_value();
    let session_bytes = [7u8; 16];
    let mut sequence = 0u64;
    group.bench_function("raw_redb_insert_commit", |b| {
        b.iter(|| {
            sequence += 1;
            let txn = raw.begin_write().expect("begin_write");
            {
                let mut table = txn.open_table(RAW).expect("table");
                table.insert(&raw_key(&session_bytes, sequence), value.as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. 64 concurrent appenders, durable
// ---------------------------------------------------------------------------------------------

const APPENDERS: usize = 64;
const PER_APPENDER: usize = 50;

fn concurrent_appenders(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("concurrent_appenders_durable");

    group.throughput(Throughput::Elements((APPENDERS * PER_APPENDER) as u64));
    for (name, shared) in [("store_64_appenders_64_sessions", false), ("store_64_appenders_one_session", true)] {
        let store = Arc::new(RedbSessionStore::open(dir.path().join(format!("{name}.redb"))).expect("open store"));
        // Each appender has its own session, as concurrent runs do; or all share one session.
        let one = Session::new("bench").expect("session");
        rt.block_on(store.save_session(&one)).expect("save_session");
        let sessions: Vec<SessionId> = (0..APPENDERS)
            .map(|_| {
                if shared {
                    return one.id.clone();
                }
                let s = Session::new("bench").expect("session");
                rt.block_on(store.save_session(&s)).expect("save_session");
                s.id
            })
            .collect();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    rt.block_on(async {
                        let tasks: Vec<_> = sessions
                            .iter()
                            .map(|session| {
                                let store = Arc::clone(&store);
                                let session = session.clone();
                                tokio::spawn(async move {
                                    let run = RunId::new();
                                    for n in 0..PER_APPENDER as u64 {
                                        store.append_event(event(&session, &run, n)).await.expect("append_event");
                                    }
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("appender");
                        }
                    });
                    total += started.elapsed();
                }
                total
            });
        });
    }

    let raw = raw_db(&dir.path().join("concurrent-raw.redb"));
    let value = raw_value();
    let session_bytes = [9u8; 16];
    let mut sequence = 0u64;
    group.throughput(Throughput::Elements(100));
    group.bench_function("raw_redb_batches_of_100", |b| {
        b.iter(|| {
            let txn = raw.begin_write().expect("begin_write");
            {
                let mut table = txn.open_table(RAW).expect("table");
                for _ in 0..100 {
                    sequence += 1;
                    table.insert(&raw_key(&session_bytes, sequence), value.as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
        });
    });
    // What one commit costs when its 64 values land in 64 places of the tree (one per session),
    // as a group of 64 appenders on 64 sessions does.
    let spread = raw_db(&dir.path().join("spread-raw.redb"));
    let mut step = 0u64;
    group.throughput(Throughput::Elements(APPENDERS as u64));
    group.bench_function("raw_redb_batches_of_64_in_64_sessions", |b| {
        b.iter(|| {
            step += 1;
            let txn = spread.begin_write().expect("begin_write");
            {
                let mut table = txn.open_table(RAW).expect("table");
                for session in 0..APPENDERS as u8 {
                    table.insert(&raw_key(&[session; 16], step), value.as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
        });
    });
    // The ceiling of 64 appenders on one session: at most 64 events per commit (each appender
    // has one append in flight), so at best a durable batch of 64 per commit ...
    let batches = raw_db(&dir.path().join("batches-64-raw.redb"));
    let mut sequence = 0u64;
    group.bench_function("raw_redb_batches_of_64", |b| {
        b.iter(|| {
            let txn = batches.begin_write().expect("begin_write");
            {
                let mut table = txn.open_table(RAW).expect("table");
                for _ in 0..APPENDERS {
                    sequence += 1;
                    table.insert(&raw_key(&session_bytes, sequence), value.as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
        });
    });
    // ... and at best that plus the round trip of 64 tasks: a minimal group commit on raw redb
    // (a thread that takes exactly 64 values, inserts, commits, answers), driven like the store.
    let raw_writer = RawGroupCommit::start(raw_db(&dir.path().join("group-raw.redb")), value.clone());
    group.throughput(Throughput::Elements((APPENDERS * PER_APPENDER) as u64));
    group.bench_function("raw_group_commit_64_tasks_one_session", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = (0..APPENDERS)
                        .map(|_| {
                            let sender = raw_writer.sender();
                            tokio::spawn(async move {
                                for _ in 0..PER_APPENDER {
                                    let (reply, done) = tokio::sync::oneshot::channel();
                                    sender.send(reply).expect("raw writer");
                                    done.await.expect("raw commit");
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("appender");
                    }
                });
                total += started.elapsed();
            }
            total
        });
    });
    group.finish();
}

/// A minimal group commit on raw redb: one thread takes 64 requests (or what arrives within 2 ms
/// of the first), inserts one value per request in one sequence, commits durably, and answers.
struct RawGroupCommit {
    sender: std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
}

impl RawGroupCommit {
    fn start(db: redb::Database, value: Vec<u8>) -> Self {
        let (sender, requests) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
        std::thread::spawn(move || {
            let mut sequence = 0u64;
            while let Ok(first) = requests.recv() {
                let mut group = vec![first];
                let deadline = Instant::now() + Duration::from_millis(2);
                while group.len() < APPENDERS {
                    match requests.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(request) => group.push(request),
                        Err(_) => break,
                    }
                }
                let txn = db.begin_write().expect("begin_write");
                {
                    let mut table = txn.open_table(RAW).expect("table");
                    for _ in &group {
                        sequence += 1;
                        table.insert(&raw_key(&[5u8; 16], sequence), value.as_slice()).expect("insert");
                    }
                }
                txn.commit().expect("commit");
                for reply in group {
                    let _ = reply.send(());
                }
            }
        });
        Self { sender }
    }

    fn sender(&self) -> std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>> {
        self.sender.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The 1M-event fixture
// ---------------------------------------------------------------------------------------------

struct Fixture {
    _dir: tempfile::TempDir,
    store_path: PathBuf,
    raw_path: PathBuf,
    session: SessionId,
    events: u64,
}

impl Fixture {
    fn build(events: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store_path = dir.path().join("million.redb");
        let raw_path = dir.path().join("million-raw.redb");
        let started = Instant::now();
        let rt = runtime();
        let session = rt.block_on(async {
            let options = RedbOptions::new().durability(Durability::Eventual);
            let store = RedbSessionStore::open_with(&store_path, options).expect("open fixture store");
            let session = Session::new("bench").expect("session");
            store.save_session(&session).await.expect("save_session");
            let mut n = 0u64;
            let mut run = RunId::new();
            while n < events {
                let batch: Vec<Event> = (0..10_000.min(events - n))
                    .map(|_| {
                        n += 1;
                        if n.is_multiple_of(1_000) {
                            run = RunId::new();
                        }
                        event(&session.id, &run, n)
                    })
                    .collect();
                store.append(batch, None).await.expect("append fixture batch");
            }
            store.sync().await.expect("sync");
            session.id
        });
        let built_store = started.elapsed();

        let started = Instant::now();
        let raw = raw_db(&raw_path);
        let value = raw_value();
        let session_bytes = [3u8; 16];
        let mut sequence = 0u64;
        while sequence < events {
            let mut txn = raw.begin_write().expect("begin_write");
            txn.set_durability(redb::Durability::None).expect("durability");
            {
                let mut table = txn.open_table(RAW).expect("table");
                for _ in 0..100_000.min(events - sequence) {
                    sequence += 1;
                    table.insert(&raw_key(&session_bytes, sequence), value.as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
        raw.begin_write().expect("begin_write").commit().expect("durable commit");
        drop(raw);
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() >> 20).unwrap_or(0);
        eprintln!(
            "fixture: {events} events; store built in {built_store:?} ({} MiB), raw table in {:?} ({} MiB)",
            size(&store_path),
            started.elapsed(),
            size(&raw_path)
        );
        Self { _dir: dir, store_path, raw_path, session, events }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. cursor reads in a 1M-event session
// ---------------------------------------------------------------------------------------------

fn cursor_reads(c: &mut Criterion, fixture: &Fixture) {
    let rt = runtime();
    let mut group = c.benchmark_group("cursor_read_100_of_1m");
    group.throughput(Throughput::Elements(1));
    let last_start = fixture.events - 100;

    let store = RedbSessionStore::open(&fixture.store_path).expect("open fixture store");
    let mut rng = rand::rng();
    // Each iteration reads AND drops its result: what a reader pays per read. (Keeping the results
    // of a whole batch alive, as `iter_batched` does, measures the allocator instead.)
    group.bench_function("store_get_events_after_random", |b| {
        b.iter(|| {
            let query = EventQuery::new().after(rng.random_range(0..last_start)).limit(100);
            let events = rt.block_on(store.get_events(&fixture.session, &query)).expect("get_events");
            assert_eq!(events.len(), 100);
        });
    });
    drop(store);

    let raw = redb::Database::create(&fixture.raw_path).expect("open raw fixture");
    let session_bytes = [3u8; 16];
    group.bench_function("raw_redb_range_100", |b| {
        b.iter(|| {
            let after = rng.random_range(0..last_start);
            let txn = raw.begin_read().expect("begin_read");
            let table = txn.open_table(RAW).expect("table");
            let low = raw_key(&session_bytes, after + 1);
            let high = raw_key(&session_bytes, after + 101);
            let values: Vec<Vec<u8>> = table
                .range::<&[u8; 24]>(&low..&high)
                .expect("range")
                .map(|entry| entry.expect("entry").1.value().to_vec())
                .collect();
            assert_eq!(values.len(), 100);
        });
    });
    // The same read when the application also turns the values into `Event`s (serde_json):
    // the same work as the store's read.
    group.bench_function("raw_redb_range_100_serde_json_events", |b| {
        b.iter(|| {
            let after = rng.random_range(0..last_start);
            let txn = raw.begin_read().expect("begin_read");
            let table = txn.open_table(RAW).expect("table");
            let low = raw_key(&session_bytes, after + 1);
            let high = raw_key(&session_bytes, after + 101);
            let events: Vec<Event> = table
                .range::<&[u8; 24]>(&low..&high)
                .expect("range")
                .map(|entry| serde_json::from_slice(entry.expect("entry").1.value()).expect("event JSON"))
                .collect();
            assert_eq!(events.len(), 100);
        });
    });
    // The floor of any read that returns owned `Event`s: the same range read, and per value
    // exactly the allocations an `Event` of this workload needs (the record, the id, the
    // provider, the payload map, its key and its text), taken from known offsets of the value
    // without decoding anything. What a store does beyond this is decoding.
    let sample = raw_value();
    let id_at = find(&sample, b"\"id\":\"") + 6;
    let delta_at = find(&sample, b"\"delta\":\"") + 9;
    let delta_len = find(&sample[delta_at..], b"\"");
    let (session, run) = (SessionId::new(), RunId::new());
    let timestamp = asm_core::now();
    group.bench_function("raw_redb_range_100_owned_events_floor", |b| {
        b.iter(|| {
            let after = rng.random_range(0..last_start);
            let txn = raw.begin_read().expect("begin_read");
            let table = txn.open_table(RAW).expect("table");
            let low = raw_key(&session_bytes, after + 1);
            let high = raw_key(&session_bytes, after + 101);
            let mut events: Vec<Event> = Vec::with_capacity(100);
            for entry in table.range::<&[u8; 24]>(&low..&high).expect("range") {
                let (key, value) = entry.expect("entry");
                let value = value.value();
                let text = |at: usize, len: usize| std::str::from_utf8(&value[at..at + len]).expect("text");
                let mut data = asm_core::JsonMap::new();
                data.insert("delta".to_owned(), text(delta_at, delta_len).into());
                events.push(Event::from(asm_core::EventRecord {
                    id: asm_core::EventId::parse(text(id_at, 36)).expect("id"),
                    kind: EventKind::MessageStreamed,
                    timestamp,
                    session_id: session.clone(),
                    run_id: Some(run.clone()),
                    data,
                    metadata: asm_core::JsonMap::new(),
                    sequence: Some(u64::from_be_bytes(key.value()[16..].try_into().expect("sequence"))),
                    schema_version: 1,
                    provider: Some("claude".to_owned()),
                    correlation_id: None,
                }));
            }
            assert_eq!(events.len(), 100);
        });
    });
    group.finish();
}

/// Where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).position(|w| w == needle).expect("the raw value holds the field")
}

// ---------------------------------------------------------------------------------------------
// 4. opening the 1M-event store
// ---------------------------------------------------------------------------------------------

fn open_store(c: &mut Criterion, fixture: &Fixture) {
    let rt = runtime();
    let mut group = c.benchmark_group("open_1m");
    group.sample_size(10);
    for (name, verify) in [("store_open_verified", true), ("store_open_unverified", false)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let store =
                        RedbSessionStore::open_with(&fixture.store_path, RedbOptions::new().verify_on_open(verify))
                            .expect("open fixture store");
                    let latest = rt.block_on(store.latest_sequence(&fixture.session)).expect("latest_sequence");
                    total += started.elapsed();
                    assert_eq!(latest, fixture.events);
                    drop(store);
                }
                total
            });
        });
    }
    group.bench_function("raw_redb_open", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let raw = redb::Database::create(&fixture.raw_path).expect("open raw fixture");
                total += started.elapsed();
                drop(raw);
            }
            total
        });
    });
    group.finish();
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    single_appender(&mut c);
    concurrent_appenders(&mut c);
    let fixture = Fixture::build(if bench_mode { 1_000_000 } else { 10_000 });
    cursor_reads(&mut c, &fixture);
    open_store(&mut c, &fixture);
    c.final_summary();
}
