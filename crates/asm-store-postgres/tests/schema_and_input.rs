//! Migrations (a schema from the future or unknown is `migration_required`), bad input (typed
//! errors, nothing half-written), what PostgreSQL cannot hold, and a reader in one process
//! woken by a writer in another.

mod common;

use std::sync::Arc;
use std::time::Duration;

use asm_core::{ErrorCode, Event, EventKind, Session, SessionId, Timestamp};
use asm_ports::{EventQuery, SessionStore, SessionStoreExt};
use asm_store_postgres::PostgresSessionStore;
use common::{TestSchema, admin_sql};

async fn open_err(schema: &TestSchema, migrate: bool) -> asm_core::Error {
    match PostgresSessionStore::connect_with(schema.options().migrate(migrate)).await {
        Ok(store) => panic!("opening schema {} should fail, got {store:?}", schema.name),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_fresh_schema_is_created_once_and_reopens() {
    let schema = TestSchema::new("fresh");
    // Four openers at once: one migrates, the others find the schema at its version.
    let opened = futures::future::join_all((0..4).map(|_| schema.store())).await;
    let session = Session::new("a").unwrap();
    opened[0].save_session(&session).await.unwrap();
    assert_eq!(opened[3].get_session(&session.id).await.unwrap(), session);
    drop(opened);
    let again = schema.store().await;
    assert_eq!(again.get_session(&session.id).await.unwrap(), session, "reopening lost data");
    // With migrations disabled, an up-to-date schema opens.
    common::open(schema.options().migrate(false)).await;
}

#[tokio::test]
async fn a_schema_from_the_future_is_migration_required() {
    let schema = TestSchema::new("future");
    drop(schema.store().await);
    admin_sql(format!(
        "INSERT INTO \"{}\".asm_schema_migrations (version, name, checksum) VALUES (99, 'from a newer build', 0)",
        schema.name
    ))
    .unwrap();
    let err = open_err(&schema, true).await;
    assert_eq!(err.code(), ErrorCode::MigrationRequired, "{err}");
    assert_eq!(err.details().get("found_version").and_then(|v| v.as_i64()), Some(99));
    assert_eq!(err.details().get("supported_version").and_then(|v| v.as_i64()), Some(4));
}

#[tokio::test]
async fn an_edited_migration_is_migration_required() {
    let schema = TestSchema::new("edited");
    drop(schema.store().await);
    admin_sql(format!("UPDATE \"{}\".asm_schema_migrations SET checksum = checksum + 1", schema.name)).unwrap();
    assert_eq!(open_err(&schema, true).await.code(), ErrorCode::MigrationRequired);
}

#[tokio::test]
async fn store_tables_without_a_ledger_are_an_unknown_schema() {
    let schema = TestSchema::new("unknown");
    admin_sql(format!("CREATE SCHEMA \"{0}\"; CREATE TABLE \"{0}\".asm_sessions (id text)", schema.name)).unwrap();
    assert_eq!(open_err(&schema, true).await.code(), ErrorCode::MigrationRequired);
}

#[tokio::test]
async fn an_old_schema_with_migrations_disabled_is_migration_required() {
    let schema = TestSchema::new("disabled");
    let err = open_err(&schema, false).await;
    assert_eq!(err.code(), ErrorCode::MigrationRequired, "{err}");
    assert_eq!(err.details().get("found_version").and_then(|v| v.as_i64()), Some(0));
}

#[tokio::test]
async fn bad_options_are_invalid_input() {
    for bad in ["", "UPPER", "1abc", "a-b", "a\"b", &"x".repeat(49)] {
        let err = asm_store_postgres::PostgresOptions::new(&common::url()).unwrap().schema(bad).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidInput, "schema {bad:?}");
    }
    let err = PostgresSessionStore::connect("postgres://u@h:notaport/db").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
}

/// Event payloads are stored as `json` text: every string survives, including NUL characters
/// (which `jsonb` and `text` cannot hold), and every integer. (Floats come back as `serde_json`
/// parses their shortest text: without its `float_roundtrip` feature, the last digit of some
/// extreme values like `1.2345678901234567e-300` differs, in every store that reads JSON.)
#[tokio::test]
async fn event_payloads_round_trip_exactly() {
    let schema = TestSchema::new("payloads");
    let store = schema.store().await;
    let session = Session::new("a").unwrap();
    store.save_session(&session).await.unwrap();
    let event = Event::new(EventKind::ToolCallCompleted, session.id.clone())
        .with_data("tool_output", "binary\u{0}output\u{1}")
        .with_data("big", u64::MAX)
        .with_data("neg", i64::MIN)
        .with_data("float", 0.1)
        .with_data("tiny", 1.5e-7)
        .with_data("nested", serde_json::json!({"a": [null, true, {"b": "\u{0}"}]}));
    let stored = store.append_event(event.clone()).await.unwrap();
    let read = store.get_events(&session.id, &EventQuery::new()).await.unwrap();
    assert_eq!(read, vec![stored.clone()]);
    assert_eq!(read[0].data, event.data);
}

/// Input PostgreSQL cannot hold is `invalid_input`, and nothing of it is written; appends that
/// were group-committed with it are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_postgres_cannot_hold_are_invalid_input_and_write_nothing() {
    let schema = TestSchema::new("unholdable");
    let store = schema.store().await;

    let mut nul_metadata = Session::new("a").unwrap();
    nul_metadata.metadata.insert("k".into(), "a\u{0}b".into());
    let err = store.save_session(&nul_metadata).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");
    assert_eq!(store.get_session(&nul_metadata.id).await.unwrap_err().code(), ErrorCode::SessionNotFound);

    let session = Session::new("a").unwrap();
    store.save_session(&session).await.unwrap();
    let mut ancient = Event::new(EventKind::MessageSent, session.id.clone());
    ancient.timestamp = Timestamp::from_timestamp_micros(-400_000_000_000_000_000).unwrap();
    let err = store.append_event(ancient).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");

    // A NUL in a text column, among concurrent good appends of the same session.
    let bad = Event::new(EventKind::MessageSent, session.id.clone()).with_provider("cla\u{0}ude");
    let good: Vec<Event> = (0..20).map(|_| Event::new(EventKind::MessageSent, session.id.clone())).collect();
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for event in good.iter().cloned().chain(std::iter::once(bad.clone())) {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move { store.append_event(event).await }));
    }
    let mut stored = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => stored += 1,
            Err(e) => {
                assert_eq!(i, good.len(), "a good append failed: {e}");
                assert_eq!(e.code(), ErrorCode::InvalidInput, "{e}");
            }
        }
    }
    assert_eq!(stored, good.len());
    let log = store.get_events(&session.id, &EventQuery::new()).await.unwrap();
    assert_eq!(log.iter().filter_map(|e| e.sequence).collect::<Vec<_>>(), (1..=20).collect::<Vec<u64>>());
    assert!(log.iter().all(|e| e.id != bad.id), "the refused event was stored");
}

/// A configured cap smaller than the default applies to every event of a batch: the batch is
/// refused whole.
#[tokio::test]
async fn the_event_cap_is_configurable() {
    let schema = TestSchema::new("cap");
    let store = common::open(schema.options().max_event_bytes(4096)).await;
    let session = Session::new("a").unwrap();
    store.save_session(&session).await.unwrap();
    let small = Event::new(EventKind::MessageSent, session.id.clone());
    let large = Event::new(EventKind::MessageSent, session.id.clone()).with_data("content", "x".repeat(8192));
    let err = store.append_events(vec![small, large]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
    assert_eq!(store.latest_sequence(&session.id).await.unwrap(), 0);
}

/// A row that does not decode (written by something else) is `storage_read_failed`, never a
/// silent misread or a panic.
#[tokio::test]
async fn an_undecodable_row_is_storage_read_failed() {
    let schema = TestSchema::new("undecodable");
    let store = schema.store().await;
    let session = Session::new("a").unwrap();
    store.save_session(&session).await.unwrap();
    store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await.unwrap();
    admin_sql(format!("UPDATE \"{}\".asm_events SET kind = 'from_the_future'", schema.name)).unwrap();
    let err = store.get_events(&session.id, &EventQuery::new()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageReadFailed, "{err}");
    admin_sql(format!("UPDATE \"{}\".asm_sessions SET status = 'zombie'", schema.name)).unwrap();
    assert_eq!(store.get_session(&session.id).await.unwrap_err().code(), ErrorCode::StorageReadFailed);
}

/// The store works from a caller outside any Tokio runtime: its database calls run on the
/// runtime that connected it.
#[test]
fn usable_from_outside_the_runtime_that_connected_it() {
    let schema = TestSchema::new("foreign_runtime");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let store = runtime.block_on(schema.store());
    let session = Session::new("a").unwrap();
    futures::executor::block_on(async {
        store.save_session(&session).await.unwrap();
        let e = store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await.unwrap();
        assert_eq!(e.sequence, Some(1));
        assert_eq!(store.latest_sequence(&session.id).await.unwrap(), 1);
    });
    drop(store);
}

const CHILD_SCHEMA: &str = "ASM_PG_CHILD_SCHEMA";
const CHILD_SESSION: &str = "ASM_PG_CHILD_SESSION";

/// A long-poll reader in this process is woken by a writer in another process (this test
/// binary run again as a child, appending one event through a store of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_woken_by_a_writer_in_another_process() {
    if let (Ok(schema), Ok(session)) = (std::env::var(CHILD_SCHEMA), std::env::var(CHILD_SESSION)) {
        return append_as_the_child(&schema, &session).await;
    }
    let schema = TestSchema::new("cross_process");
    let store = schema.store().await;
    let session = Session::new("a").unwrap();
    store.save_session(&session).await.unwrap();
    let wait = Duration::from_secs(60);
    let read = tokio::spawn({
        let store = store.clone();
        let id = session.id.clone();
        async move { store.get_events(&id, &EventQuery::new().wait(wait)).await }
    });
    common::eventually("the reader waits", || store.status().long_poll_readers == 1).await;
    let started = tokio::time::Instant::now();
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_reader_is_woken_by_a_writer_in_another_process", "--nocapture", "--test-threads", "1"])
        .env(CHILD_SCHEMA, &schema.name)
        .env(CHILD_SESSION, session.id.as_str())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), child).await.expect("the child finishes").unwrap();
    assert!(output.status.success(), "the child failed: {}", String::from_utf8_lossy(&output.stdout));
    let got = tokio::time::timeout(Duration::from_secs(30), read).await.expect("the reader wakes").unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sequence, Some(1));
    assert_eq!(got[0].data["from"], "child");
    assert!(started.elapsed() < Duration::from_secs(50), "the reader waited out its long-poll");
    assert_eq!(store.status().long_poll_readers, 0);
}

/// The child side of [`a_reader_is_woken_by_a_writer_in_another_process`]: the same test run
/// again with the child's variables set appends one event through a store of its own.
async fn append_as_the_child(schema: &str, session: &str) {
    let session = SessionId::parse(session).expect("the parent passes a valid session id");
    let options = asm_store_postgres::PostgresOptions::new(&common::url())
        .and_then(|options| options.schema(schema))
        .expect("the test server's options");
    let store = common::open(options).await;
    let event = Event::new(EventKind::MessageReceived, session).with_data("from", "child");
    store.append_event(event).await.expect("the child's append");
}

/// Concurrent appends of many sessions are committed together; refusals among them (a stale
/// compare-and-append, an unknown session, a re-appended event) are answered alone and the
/// others are stored, each session's log gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_in_a_group_commit_stay_alone() {
    let schema = TestSchema::new("group_refusals");
    let store = Arc::new(common::open(schema.options().writers(1)).await);
    let mut sessions = Vec::new();
    for _ in 0..16 {
        let session = Session::new("a").unwrap();
        store.save_session(&session).await.unwrap();
        sessions.push(session);
    }
    let first = store.append_event(Event::new(EventKind::MessageSent, sessions[0].id.clone())).await.unwrap();
    for round in 0..5 {
        let mut tasks = Vec::new();
        for (i, session) in sessions.iter().enumerate() {
            let writer = Arc::clone(&store);
            let id = session.id.clone();
            tasks.push(tokio::spawn(async move {
                let batch =
                    vec![Event::new(EventKind::MessageSent, id.clone()), Event::new(EventKind::MessageSent, id)];
                writer.append_events(batch).await
            }));
            if i % 5 == 0 {
                let store = Arc::clone(&store);
                let id = session.id.clone();
                tasks.push(tokio::spawn(async move {
                    store.append(vec![Event::new(EventKind::MessageSent, id)], Some(u64::MAX)).await
                }));
            }
        }
        let ghost = Arc::clone(&store);
        let ghost =
            tokio::spawn(async move { ghost.append_event(Event::new(EventKind::MessageSent, SessionId::new())).await });
        let again = Arc::clone(&store);
        let again = {
            let first = first.clone();
            tokio::spawn(async move { again.append_event(first).await })
        };
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(stored) => {
                    assert_eq!(stored.len(), 2);
                    ok += 1;
                }
                Err(e) => assert_eq!(e.code(), ErrorCode::InvalidOperation, "{e}"),
            }
        }
        assert_eq!(ok, sessions.len(), "round {round}: a good append failed");
        assert_eq!(ghost.await.unwrap().unwrap_err().code(), ErrorCode::SessionNotFound);
        assert_eq!(again.await.unwrap().unwrap(), first);
    }
    for (i, session) in sessions.iter().enumerate() {
        let log = store.get_events(&session.id, &EventQuery::new()).await.unwrap();
        let n = 10 + u64::from(i == 0);
        assert_eq!(log.iter().filter_map(|e| e.sequence).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
    }
}
