//! The engine logic on its own: a `BTreeMap` engine with injectable failures, wrapped the way
//! the store crates wrap theirs (`forward_session_store!`), against the conformance suite and
//! against engine failures in the middle of a group commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use asm_core::{ErrorCode, Event, EventKind, Result, Session};
use asm_ports::{DynSessionStore, EventQuery, SessionStore, SessionStoreExt};
use asm_store_kv::{
    Durability, Finish, FormatRecord, KeyRange, KvEngine, KvError, KvOptions, KvRead, KvStore, KvWrite, Table,
};
use asm_testkit::conformance;
use parking_lot::Mutex;

type Tables = [BTreeMap<Vec<u8>, Vec<u8>>; Table::COUNT];

/// Failures to inject.
#[derive(Default)]
struct Faults {
    /// A put of an event of the session with these key bytes fails (a storage error
    /// mid-request).
    fail_events_of: Mutex<Option<Vec<u8>>>,
    /// The next write transaction panics.
    panic_next_write: AtomicBool,
    /// Write transactions begun.
    writes: AtomicUsize,
}

/// The "files" of a memory engine: a new engine over the same state is a reopen.
#[derive(Default)]
struct State {
    tables: Mutex<Arc<Tables>>,
    format: Mutex<Option<u64>>,
}

#[derive(Default)]
struct MemoryEngine {
    state: Arc<State>,
    faults: Arc<Faults>,
}

impl std::ops::Deref for MemoryEngine {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

struct Snapshot(Arc<Tables>);

fn scan_map<E: From<KvError>>(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    range: KeyRange<'_>,
    mut f: impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
) -> std::result::Result<(), E> {
    for (key, value) in map.range::<[u8], _>(range) {
        if !f(key, value)? {
            break;
        }
    }
    Ok(())
}

impl KvRead for Snapshot {
    fn get<R>(&self, table: Table, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> std::result::Result<Option<R>, KvError> {
        Ok(self.0[table.index()].get(key).map(|v| f(v)))
    }

    fn scan<E: From<KvError>>(
        &self,
        table: Table,
        range: KeyRange<'_>,
        f: impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        scan_map(&self.0[table.index()], range, f)
    }
}

struct Txn {
    tables: Tables,
    faults: Arc<Faults>,
}

impl KvRead for Txn {
    fn get<R>(&self, table: Table, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> std::result::Result<Option<R>, KvError> {
        Ok(self.tables[table.index()].get(key).map(|v| f(v)))
    }

    fn scan<E: From<KvError>>(
        &self,
        table: Table,
        range: KeyRange<'_>,
        f: impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        scan_map(&self.tables[table.index()], range, f)
    }
}

impl KvWrite for Txn {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> std::result::Result<(), KvError> {
        // New events go to the log (value: session, sequence, event); compactions move them to
        // the events table (key: session, sequence).
        let event_of = |prefix: &[u8]| match table {
            Table::Log => value.starts_with(prefix),
            Table::Events => key.starts_with(prefix) && key.len() == 24 && key[16..] != [0xff; 8],
            _ => false,
        };
        if let Some(prefix) = self.faults.fail_events_of.lock().as_ref()
            && event_of(prefix)
        {
            return Err(KvError::write("insert", std::io::Error::other("injected failure")));
        }
        self.tables[table.index()].insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> std::result::Result<(), KvError> {
        self.tables[table.index()].remove(key);
        Ok(())
    }
}

impl KvEngine for MemoryEngine {
    type Snapshot<'s> = Snapshot;
    type Txn<'t> = Txn;
    const NAME: &'static str = "memory";

    fn read<R>(&self, f: impl FnOnce(&Self::Snapshot<'_>) -> Result<R>) -> Result<R> {
        let snapshot = Snapshot(Arc::clone(&self.tables.lock()));
        f(&snapshot)
    }

    fn write<R>(&self, _durable: bool, f: impl FnOnce(&mut Self::Txn<'_>) -> Result<(R, Finish)>) -> Result<R> {
        self.faults.writes.fetch_add(1, Ordering::SeqCst);
        if self.faults.panic_next_write.swap(false, Ordering::SeqCst) {
            panic!("injected panic inside the engine");
        }
        let mut txn = Txn { tables: (**self.tables.lock()).clone(), faults: Arc::clone(&self.faults) };
        let (result, finish) = f(&mut txn)?;
        if finish == Finish::Commit {
            *self.tables.lock() = Arc::new(txn.tables);
        }
        Ok(result)
    }

    fn sync(&self) -> std::result::Result<(), KvError> {
        Ok(())
    }

    fn read_format(&self) -> std::result::Result<FormatRecord, KvError> {
        Ok(match *self.format.lock() {
            Some(version) => FormatRecord::Version(version),
            None => FormatRecord::Absent { empty: self.tables.lock().iter().all(BTreeMap::is_empty) },
        })
    }

    fn init(&self, version: u64) -> std::result::Result<(), KvError> {
        *self.format.lock() = Some(version);
        Ok(())
    }
}

/// A store over the memory engine, wrapped as the store crates wrap theirs.
#[derive(Clone, Debug)]
struct MemoryKvStore {
    inner: KvStore<MemoryEngine>,
}

asm_store_kv::forward_session_store!(MemoryKvStore, inner);

fn store_with(engine: MemoryEngine, durability: Durability) -> MemoryKvStore {
    open(engine, KvOptions::new(durability, asm_store_kv::DEFAULT_MAX_EVENT_BYTES))
}

fn open(engine: MemoryEngine, options: KvOptions) -> MemoryKvStore {
    MemoryKvStore { inner: KvStore::open(engine, options).expect("open the memory engine") }
}

/// A store that compacts its log once it holds `events` events.
fn compacting(events: usize) -> DynSessionStore {
    Arc::new(open(MemoryEngine::default(), KvOptions::default().compact_after(events, usize::MAX)))
}

fn store() -> DynSessionStore {
    Arc::new(store_with(MemoryEngine::default(), Durability::Immediate))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_conformance_suite_passes_on_the_engine_alone() {
    conformance::run_all(store()).await;
    conformance::run_all(Arc::new(store_with(MemoryEngine::default(), Durability::Eventual))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_on_the_engine_alone() {
    conformance::check_concurrent_appends(store()).await;
    conformance::check_long_poll_follows_concurrent_writers(store()).await;
}

#[test]
fn property_tests_on_the_engine_alone() {
    conformance::prop_cursor_reads_match_model(store);
    conformance::prop_sequencing_matches_model(store);
}

/// An engine failure in the middle of one request fails that request only: the group is
/// replayed one request per transaction, and the failed request leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engine_failure_fails_only_its_request() {
    let faults = Arc::new(Faults::default());
    let engine = MemoryEngine { faults: Arc::clone(&faults), ..MemoryEngine::default() };
    let store = Arc::new(store_with(engine, Durability::Immediate));
    let good = Session::new("good").expect("session");
    let bad = Session::new("bad").expect("session");
    store.save_session(&good).await.expect("save");
    store.save_session(&bad).await.expect("save");
    let bad_key = {
        // The 16 id bytes are the 32 hex digits of the id.
        let hex = &bad.id.as_str()[4..];
        (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect::<Vec<u8>>()
    };
    *faults.fail_events_of.lock() = Some(bad_key);

    let mut tasks = Vec::new();
    for i in 0..120 {
        let store = Arc::clone(&store);
        let session = if i % 4 == 0 { bad.id.clone() } else { good.id.clone() };
        tasks.push(tokio::spawn(async move { store.append_event(Event::new(EventKind::MessageSent, session)).await }));
    }
    let mut appended = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.expect("task");
        if i % 4 == 0 {
            assert_eq!(result.expect_err("the injected failure").code(), ErrorCode::StorageWriteFailed);
        } else {
            result.expect("an append to the good session");
            appended += 1;
        }
    }
    assert_eq!(store.latest_sequence(&good.id).await.expect("latest"), appended);
    let read = store.get_events(&good.id, &EventQuery::new()).await.expect("read");
    let sequences: Vec<u64> = read.iter().filter_map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=appended).collect::<Vec<_>>(), "gap-free despite the failures");
    assert_eq!(store.latest_sequence(&bad.id).await.expect("latest"), 0, "a failed request wrote nothing");

    *faults.fail_events_of.lock() = None;
    assert_eq!(
        store.append_event(Event::new(EventKind::MessageSent, bad.id.clone())).await.expect("append").sequence,
        Some(1)
    );
}

/// A panic inside the engine fails the requests of that transaction with `storage_error`;
/// the writer keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_panic_is_an_error_and_the_writer_goes_on() {
    let faults = Arc::new(Faults::default());
    let engine = MemoryEngine { faults: Arc::clone(&faults), ..MemoryEngine::default() };
    let store = store_with(engine, Durability::Immediate);
    let session = Session::new("panic").expect("session");
    store.save_session(&session).await.expect("save");
    faults.panic_next_write.store(true, Ordering::SeqCst);
    let err = store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await.expect_err("panic");
    assert_eq!(err.code(), ErrorCode::StorageError, "{err}");
    assert_eq!(err.details().get("corrupted"), Some(&serde_json::Value::Bool(true)));
    let stored = store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await.expect("append");
    assert_eq!(stored.sequence, Some(1));
}

/// A newer format version is refused before anything is written.
#[test]
fn a_newer_format_is_refused() {
    let engine = MemoryEngine::default();
    *engine.format.lock() = Some(asm_store_kv::FORMAT_VERSION + 1);
    let err = KvStore::open(engine, KvOptions::default()).expect_err("a newer format");
    assert_eq!(err.code(), ErrorCode::MigrationRequired);
}

#[test]
fn every_store_has_the_same_limits() {
    assert_eq!(asm_store_kv::DEFAULT_MAX_EVENT_BYTES, asm_ports::MAX_EVENT_BYTES);
    assert_eq!(KvOptions::default().max_event_bytes, asm_ports::MAX_EVENT_BYTES);
    assert_eq!(KvOptions::default().durability, Durability::Immediate);
}

/// The whole suite with a compaction after every group, and after every few events: reads
/// that span the compacted tables and the recent tail, duplicates found in either, deletes of
/// sessions with events in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_conformance_suite_passes_with_compactions() {
    conformance::run_all(compacting(1)).await;
    conformance::run_all(compacting(7)).await;
    let by_bytes = open(MemoryEngine::default(), KvOptions::default().compact_after(usize::MAX, 4096));
    conformance::run_all(Arc::new(by_bytes)).await;
    conformance::check_concurrent_appends(compacting(5)).await;
    conformance::check_long_poll_follows_concurrent_writers(compacting(5)).await;
}

#[test]
fn property_tests_with_compactions() {
    conformance::prop_cursor_reads_match_model(|| compacting(3));
    conformance::prop_sequencing_matches_model(|| compacting(2));
}

/// Readers racing appends and compactions see a gap-free, duplicate-free prefix every time,
/// and the session's latest sequence never goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_a_gap_while_compactions_run() {
    let store = compacting(37);
    let session = Session::new("race").expect("session");
    store.save_session(&session).await.expect("save");
    let writer = {
        let store = Arc::clone(&store);
        let session = session.id.clone();
        tokio::spawn(async move {
            for step in 0..300u64 {
                let batch: Vec<Event> = (0..1 + step % 5)
                    .map(|i| Event::new(EventKind::MessageStreamed, session.clone()).with_data("i", i))
                    .collect();
                store.append_events(batch).await.expect("append");
            }
        })
    };
    let mut readers = Vec::new();
    for reader in 0..3u64 {
        let store = Arc::clone(&store);
        let session = session.id.clone();
        readers.push(tokio::spawn(async move {
            let mut latest = 0;
            for round in 0..400u64 {
                let now = store.latest_sequence(&session).await.expect("latest");
                assert!(now >= latest, "latest went back from {latest} to {now}");
                latest = now;
                let after = (round * 7 + reader) % (now + 1);
                let page = store.get_events(&session, &EventQuery::new().after(after).limit(50)).await.expect("read");
                let sequences: Vec<u64> = page.iter().filter_map(|e| e.sequence).collect();
                let expected: Vec<u64> = (after + 1..).take(sequences.len()).collect();
                assert_eq!(sequences, expected, "a page after {after} is not contiguous");
                assert!(page.len() == 50 || sequences.last().is_none_or(|&last| last >= now), "a short page");
                tokio::task::yield_now().await;
            }
        }));
    }
    writer.await.expect("writer");
    for reader in readers {
        reader.await.expect("reader");
    }
    let all = store.get_events(&session.id, &EventQuery::new()).await.expect("read all");
    let sequences: Vec<u64> = all.iter().filter_map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
}

/// What is in the log when the store closes (or its process dies) is there after a reopen:
/// readable, counted in the head, known to the event-id index, and compacted later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_recovered_on_open() {
    let state = Arc::new(State::default());
    let engine = || MemoryEngine { state: Arc::clone(&state), faults: Arc::default() };
    let never = KvOptions::default().compact_after(usize::MAX, usize::MAX);
    let session = Session::new("recover").expect("session");
    let written = {
        let store = open(engine(), never.clone());
        store.save_session(&session).await.expect("save");
        let mut written = Vec::new();
        for i in 0..10u64 {
            let batch =
                (0..3).map(|_| Event::new(EventKind::MessageSent, session.id.clone()).with_data("i", i)).collect();
            written.extend(store.append_events(batch).await.expect("append"));
        }
        written
    };
    let store = open(engine(), never);
    assert_eq!(store.latest_sequence(&session.id).await.expect("latest"), 30);
    assert_eq!(store.get_events(&session.id, &EventQuery::new()).await.expect("read"), written);
    let again = store.append_event(written[4].clone()).await.expect("a duplicate of a recovered event");
    assert_eq!(again, written[4]);
    drop(store);

    // Reopened with a small threshold: the recovered events are compacted by the next group.
    let store = open(engine(), KvOptions::default().compact_after(4, usize::MAX));
    let next = store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await.expect("append");
    assert_eq!(next.sequence, Some(31));
    let mut all = written.clone();
    all.push(next);
    assert_eq!(store.get_events(&session.id, &EventQuery::new()).await.expect("read"), all);
    assert_eq!(store.append_event(written[0].clone()).await.expect("a duplicate of a compacted event"), written[0]);
    drop(store);
    let store = open(engine(), KvOptions::default());
    assert_eq!(store.get_events(&session.id, &EventQuery::new()).await.expect("read"), all);
    let log = state.tables.lock()[Table::Log.index()].len();
    assert_eq!(log, 0, "the log was compacted");
}

/// A log entry that does not continue its session's sequence is corruption, not a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_with_a_gap_is_corruption() {
    let state = Arc::new(State::default());
    let engine = || MemoryEngine { state: Arc::clone(&state), faults: Arc::default() };
    let never = KvOptions::default().compact_after(usize::MAX, usize::MAX);
    {
        let store = open(engine(), never.clone());
        let session = Session::new("gap").expect("session");
        store.save_session(&session).await.expect("save");
        for _ in 0..3 {
            store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await.expect("append");
        }
    }
    {
        let mut tables = state.tables.lock();
        let log = &mut Arc::make_mut(&mut tables)[Table::Log.index()];
        let second = log.keys().nth(1).cloned().expect("three entries");
        log.remove(&second);
    }
    let err = KvStore::open(engine(), never).expect_err("a log with a gap");
    assert_eq!(err.code(), ErrorCode::StorageError, "{err}");
    assert_eq!(err.details().get("corrupted"), Some(&serde_json::Value::Bool(true)));
}

/// Makes orphans the way a damaged file holds them: the session record is deleted behind the
/// writer's back, its compacted events and its runs stay.
struct DropSessionRecord<'a>(&'a MemoryKvStore);

#[async_trait::async_trait]
impl asm_testkit::query_conformance::OrphanMaker for DropSessionRecord<'_> {
    async fn orphan(&self, _store: &dyn asm_ports::MaintenanceStore, session: &Session) -> u64 {
        let hex = session.id.as_str().get(4..).expect("an id has a prefix");
        let key: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("ids are hex")).collect();
        // A request through the writer: once it is answered, the writer has finished the
        // groups (and compactions) before it, so this write does not race one (the memory
        // engine, like the real ones, takes one writer at a time: the store's).
        self.0.inner.sync().await.expect("sync");
        self.0
            .inner
            .engine()
            .write(true, |txn| {
                txn.delete(Table::Sessions, &key)?;
                Ok(((), Finish::Commit))
            })
            .expect("delete the session record");
        // Its 3 events and 1 run.
        4
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_counted_and_removed() {
    // Compacting after every event: the orphans are in the (session, sequence) table.
    let store = open(MemoryEngine::default(), KvOptions::default().compact_after(1, usize::MAX));
    asm_testkit::query_conformance::check_orphans_removed(&store, &DropSessionRecord(&store)).await;
    // And with the events still in the log when the session record goes: the cleanup compacts
    // first, then removes them.
    let store = open(MemoryEngine::default(), KvOptions::default());
    let maker = DropSessionRecord(&store);
    let agent = "orphans-in-the-log";
    let session = Session::new(agent).unwrap();
    store.save_session(&session).await.unwrap();
    store
        .append_events((0..3).map(|_| Event::new(EventKind::MessageSent, session.id.clone())).collect())
        .await
        .unwrap();
    asm_testkit::query_conformance::OrphanMaker::orphan(&maker, &store, &session).await;
    let removed = asm_ports::MaintenanceStore::clean_orphans(&store, false).await.unwrap();
    assert_eq!(removed, 3, "the log is compacted, then the orphaned events go");
    assert!(asm_ports::MaintenanceStore::health_check(&store).await.unwrap().is_healthy());
}
