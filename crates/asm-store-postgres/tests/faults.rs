//! Connection faults, injected by a loopback TCP proxy between the store and the server: cut
//! mid-append (after the server committed, before the client heard of it), server unreachable,
//! lost LISTEN connection. Every wait is bounded.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use asm_core::{ErrorCode, Event, EventKind, Run, RunInput, RunOutput, RunStatus, Session, StoredEvent};
use asm_ports::{EventQuery, ExecutionRecord, SessionStore, SessionStoreExt};
use asm_store_postgres::{PostgresSessionStore, RetryPolicy};
use common::TestSchema;
use common::proxy::Proxy;

/// How long the proxy refuses connections in an outage (the fault, not a synchronisation).
const OUTAGE: Duration = Duration::from_millis(300);

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(30), future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within 30 s"),
    }
}

async fn proxied_store(schema: &TestSchema, proxy: &Proxy, retry: RetryPolicy) -> PostgresSessionStore {
    let options = asm_store_postgres::PostgresOptions::new(&proxy.url())
        .and_then(|o| o.schema(&schema.name))
        .expect("options")
        .pool_size(4)
        .writers(2)
        .connect_timeout(Duration::from_secs(2))
        .retry(retry);
    common::open(options).await
}

fn event(session: &Session) -> Event {
    Event::new(EventKind::MessageStreamed, session.id.clone()).with_data("delta", "x")
}

/// Asserts the session's log is exactly `1..=n` with unique ids, and returns it.
async fn assert_gap_free(store: &impl SessionStore, session: &Session, n: u64) -> Vec<StoredEvent> {
    let all = store.get_events(&session.id, &EventQuery::new()).await.expect("read the log");
    let sequences: Vec<u64> = all.iter().map(|e| e.sequence()).collect();
    assert_eq!(sequences, (1..=n).collect::<Vec<_>>(), "the log must be gap-free 1..={n}");
    let ids: HashSet<_> = all.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), all.len(), "an event was stored twice");
    assert_eq!(store.latest_sequence(&session.id).await.expect("latest"), n);
    all
}

/// The server commits an append, the connection is cut before the answer arrives, the server
/// is unreachable for a while: the append is retried with backoff, finds its events stored and
/// returns them. Nothing is duplicated, nothing is lost; the same for a compare-and-append
/// batch (its retry finds all its events stored, so the stale precondition does not matter)
/// and for a compare-and-set flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_after_commit_is_retried_without_duplicates() {
    let schema = TestSchema::new("cut_after_commit");
    let direct = schema.store().await;
    let proxy = Proxy::start().await;
    let store = proxied_store(&schema, &proxy, RetryPolicy::new().max_elapsed(Duration::from_secs(20))).await;
    let session = Session::new("faults").unwrap();
    store.save_session(&session).await.unwrap();
    for _ in 0..3 {
        store.append_event(event(&session)).await.unwrap();
    }

    // A single append.
    let cuts = proxy.cuts();
    proxy.cut_after_next_request();
    let pending = event(&session);
    let append = tokio::spawn({
        let store = store.clone();
        let pending = pending.clone();
        async move { store.append_event(pending).await }
    });
    bounded("the armed cut", proxy.cut_happened(cuts)).await;
    // The server committed it: another connection sees it while the client is still retrying.
    assert_eq!(direct.latest_sequence(&session.id).await.unwrap(), 4, "the cut append was not committed");
    assert!(!append.is_finished(), "the append returned although its connection was cut");
    tokio::time::sleep(OUTAGE).await;
    proxy.restore();
    let appended = bounded("the retried append", append).await.unwrap().expect("the retried append succeeds");
    assert_eq!(appended.sequence, Some(4), "the retry must return the event stored by the first attempt");
    assert_eq!(appended.id, pending.id);

    // A compare-and-append batch.
    let cuts = proxy.cuts();
    proxy.cut_after_next_request();
    let batch: Vec<Event> = (0..3).map(|_| event(&session)).collect();
    let append = tokio::spawn({
        let store = store.clone();
        let batch = batch.clone();
        async move { store.append(batch, Some(4)).await }
    });
    bounded("the armed cut", proxy.cut_happened(cuts)).await;
    tokio::time::sleep(OUTAGE).await;
    proxy.restore();
    let appended = bounded("the retried batch", append).await.unwrap().expect("the retried batch succeeds");
    assert_eq!(appended.iter().filter_map(|e| e.sequence).collect::<Vec<_>>(), vec![5, 6, 7]);

    // A flush expecting `running`: on retry the run is already completed (by the first attempt).
    let mut run = Run::new(session.id.clone(), RunInput::user("x"));
    run.transition(RunStatus::Running).unwrap();
    store.save_run(&run).await.unwrap();
    run.complete(RunOutput::text("done")).unwrap();
    let terminal = Event::new(EventKind::RunCompleted, session.id.clone()).with_run(run.id.clone());
    let cuts = proxy.cuts();
    proxy.cut_after_next_request();
    let flush = tokio::spawn({
        let store = store.clone();
        let record = ExecutionRecord::new(run.clone()).events(vec![terminal]).expect_status(RunStatus::Running);
        async move { store.flush(record).await }
    });
    bounded("the armed cut", proxy.cut_happened(cuts)).await;
    tokio::time::sleep(OUTAGE).await;
    proxy.restore();
    let flushed = bounded("the retried flush", flush).await.unwrap().expect("the retried flush succeeds");
    assert_eq!(flushed[0].sequence, Some(8));
    assert_eq!(store.get_run(&run.id).await.unwrap(), run);

    assert_gap_free(&direct, &session, 8).await;
    assert!(proxy.cuts() >= 3);
}

/// Many appenders while the proxy cuts every connection again and again: every append
/// succeeds, the log is gap-free and holds each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_repeated_cuts() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 40;
    let schema = TestSchema::new("repeated_cuts");
    let direct = schema.store().await;
    let proxy = Proxy::start().await;
    let store = proxied_store(&schema, &proxy, RetryPolicy::new().max_elapsed(Duration::from_secs(20))).await;
    let session = Session::new("faults").unwrap();
    store.save_session(&session).await.unwrap();

    // The writers go on (past PER_WRITER appends each) until every cut has happened: an armed
    // cut needs a request to cut, so it must never wait for writers that are already done.
    let cutting = Arc::new(AtomicBool::new(true));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let store = store.clone();
        let session = session.clone();
        let cutting = Arc::clone(&cutting);
        writers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = 0;
            while i < PER_WRITER || cutting.load(Ordering::SeqCst) {
                i += 1;
                let batch: Vec<Event> = (0..1 + i % 3).map(|_| event(&session)).collect();
                let stored = store.append_events(batch.clone()).await?;
                assert_eq!(
                    stored.iter().map(|e| &e.id).collect::<Vec<_>>(),
                    batch.iter().map(|e| &e.id).collect::<Vec<_>>()
                );
                mine.extend(stored);
            }
            Ok::<_, asm_core::Error>(mine)
        }));
    }
    for _ in 0..4 {
        let cuts = proxy.cuts();
        proxy.cut_after_next_request();
        bounded("an armed cut under load", proxy.cut_happened(cuts)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.restore();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cutting.store(false, Ordering::SeqCst);
    let mut returned = Vec::new();
    for writer in writers {
        returned.extend(bounded("the writers", writer).await.unwrap().expect("every append succeeds"));
    }
    let total = returned.len() as u64;
    let stored = assert_gap_free(&direct, &session, total).await;
    for event in &returned {
        let at = usize::try_from(event.sequence() - 1).unwrap();
        assert_eq!(&stored[at], event, "an append returned another event than the one stored");
    }
}

/// With the server unreachable for longer than the retry budget, a call fails with
/// `storage_connection_failed` (retryable) and writes nothing; once the server is reachable
/// again the same store works (the pool reconnects by itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_is_storage_connection_failed_and_the_pool_recovers() {
    let schema = TestSchema::new("unreachable");
    let direct = schema.store().await;
    let proxy = Proxy::start().await;
    let store = proxied_store(&schema, &proxy, RetryPolicy::new().max_elapsed(Duration::from_millis(500))).await;
    let session = Session::new("faults").unwrap();
    store.save_session(&session).await.unwrap();
    store.append_event(event(&session)).await.unwrap();

    proxy.cut();
    let started = tokio::time::Instant::now();
    let err = bounded("an append while unreachable", store.append_event(event(&session))).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageConnectionFailed, "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(10), "the retry budget was not kept");
    let err = bounded("a read while unreachable", store.get_session(&session.id)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageConnectionFailed, "{err}");
    assert_eq!(direct.latest_sequence(&session.id).await.unwrap(), 1, "a failed append wrote something");

    proxy.restore();
    let appended = bounded("an append after recovery", store.append_event(event(&session))).await.unwrap();
    assert_eq!(appended.sequence, Some(2));
    assert_eq!(store.get_session(&session.id).await.unwrap(), session);
}

/// A store that cannot reach its server at all fails to open with `storage_connection_failed`.
#[tokio::test]
async fn opening_an_unreachable_server_is_storage_connection_failed() {
    let proxy = Proxy::start().await;
    proxy.cut();
    let options = asm_store_postgres::PostgresOptions::new(&proxy.url())
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .retry(RetryPolicy::new().max_elapsed(Duration::from_millis(300)));
    let err = bounded("open", PostgresSessionStore::connect_with(options)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageConnectionFailed, "{err}");
    assert!(err.is_retryable());
}

/// A long-poll reader whose LISTEN connection is lost misses nothing: an event appended by
/// another store (another pool, another LISTEN connection: what another process is) while the
/// reader's connections are cut is returned once they are back, and later appends wake it
/// through the re-established LISTEN connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_misses_no_event() {
    let schema = TestSchema::new("lost_listen");
    let writer = schema.store().await;
    let proxy = Proxy::start().await;
    let reader = proxied_store(&schema, &proxy, RetryPolicy::new().max_elapsed(Duration::from_secs(20))).await;
    let session = Session::new("faults").unwrap();
    writer.save_session(&session).await.unwrap();
    writer.append_event(event(&session)).await.unwrap();
    assert_eq!(reader.latest_sequence(&session.id).await.unwrap(), 1);
    let connects_before = reader.status().listen_connects;
    assert!(connects_before >= 1, "the reader never listened");

    let wait = Duration::from_secs(25);
    let read = tokio::spawn({
        let reader = reader.clone();
        let id = session.id.clone();
        async move { reader.get_events(&id, &EventQuery::new().after(1).wait(wait)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.cut();
    let appended = writer.append_event(event(&session)).await.unwrap();
    tokio::time::sleep(OUTAGE).await;
    proxy.restore();
    let started = tokio::time::Instant::now();
    let got = bounded("the reader after the outage", read).await.unwrap().expect("the read succeeds");
    assert_eq!(got, vec![appended], "the event appended during the outage was missed");
    assert!(started.elapsed() < Duration::from_secs(10), "the reader waited out its long-poll instead of re-reading");

    // The LISTEN connection comes back by itself, and later appends wake the reader through
    // NOTIFY again (the writer is another store: no in-process wake-up reaches the reader).
    common::eventually("the LISTEN connection is re-established", || reader.status().listen_connects > connects_before)
        .await;
    let read = tokio::spawn({
        let reader = reader.clone();
        let id = session.id.clone();
        async move { reader.get_events(&id, &EventQuery::new().after(2).wait(wait)).await }
    });
    common::eventually("the reader waits", || reader.status().long_poll_readers == 1).await;
    let appended = writer.append_event(event(&session)).await.unwrap();
    let started = tokio::time::Instant::now();
    let got = bounded("the reader woken by NOTIFY", read).await.unwrap().expect("the read succeeds");
    assert_eq!(got, vec![appended]);
    assert!(started.elapsed() < Duration::from_secs(10), "NOTIFY did not wake the reader after the reconnect");
}
