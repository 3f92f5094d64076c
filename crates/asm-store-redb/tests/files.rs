//! Damaged files, format versions, locks within one process, oversized events, persistence.

use std::path::Path;

use asm_core::{ErrorCode, Event, EventKind, Run, RunInput, Session};
use asm_ports::{EventQuery, ExecutionRecord, SessionStore, SessionStoreExt};
use asm_store_redb::{Durability, RedbOptions, RedbSessionStore};

mod common;
use common::{set_format_version, write_foreign};
use redb::ReadableDatabase;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("build a runtime")
}

/// A store with one session of `events` events (with payloads), closed again.
fn filled_store(path: &Path, events: usize) -> Session {
    runtime().block_on(async {
        let store = RedbSessionStore::open(path).expect("open");
        let session = Session::new("files").expect("session");
        store.save_session(&session).await.expect("save_session");
        for chunk in 0..events.div_ceil(100) {
            let batch: Vec<Event> = (0..100.min(events - chunk * 100))
                .map(|i| {
                    Event::new(EventKind::MessageStreamed, session.id.clone())
                        .with_data("delta", format!("chunk {chunk} event {i} {}", "x".repeat(200)))
                })
                .collect();
            store.append_events(batch).await.expect("append");
        }
        session
    })
}

fn open_error(path: &Path) -> asm_core::Error {
    match RedbSessionStore::open(path) {
        Ok(store) => panic!("opening {} should fail, but it opened: {store:?}", path.display()),
        Err(e) => e,
    }
}

#[test]
fn truncated_files_are_a_typed_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    filled_store(&path, 2_000);
    let original = std::fs::read(&path).expect("read the store file");
    for keep in [original.len() / 2, original.len() - 4096, 4096, 100] {
        std::fs::write(&path, &original[..keep]).expect("write the truncated file");
        let err = open_error(&path);
        assert_eq!(err.code(), ErrorCode::StorageError, "truncated to {keep} bytes: {err}");
        assert!(err.message().contains("store.redb"), "the error should name the file: {err}");
    }
}

#[test]
fn corrupted_files_are_a_typed_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    filled_store(&path, 2_000);
    let original = std::fs::read(&path).expect("read the store file");
    let middle = original.len() / 2;
    // The pages at the end of the file may be free (redb reuses pages copy-on-write, so where
    // the newest data lands depends on its allocator): damage there is no damage. The page that
    // holds the newest event is found by its content instead.
    let newest = b"chunk 19 event 99 ";
    let at = original.windows(newest.len()).rposition(|w| w == newest).expect("the newest event is in the file");
    let page = at / 4096 * 4096;
    let damages: [(&str, std::ops::Range<usize>); 4] = [
        ("magic number", 0..16),
        ("commit slots", 64..200),
        ("a page in the middle", middle..middle + 4096),
        ("the page holding the newest event", page..page + 4096),
    ];
    for (what, range) in damages {
        let mut damaged = original.clone();
        for byte in &mut damaged[range] {
            *byte ^= 0x5a;
        }
        std::fs::write(&path, &damaged).expect("write the damaged file");
        let err = open_error(&path);
        assert!(
            matches!(err.code(), ErrorCode::StorageError | ErrorCode::MigrationRequired),
            "damaged {what}: expected a storage error, got {err}"
        );
    }
    std::fs::write(&path, b"this is not a redb file, just some text that is long enough to look like a header")
        .expect("write");
    assert_eq!(open_error(&path).code(), ErrorCode::StorageError, "a text file");
}

#[test]
fn a_newer_or_unknown_format_version_needs_a_migration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    filled_store(&path, 10);
    let set_version = |version: Option<u64>| set_format_version(&path, version);
    let current = asm_store_kv::FORMAT_VERSION;
    for (version, what) in [
        (Some(current + 1), "newer"),
        (Some(99), "much newer"),
        (Some(1), "the layout before asm-store-kv"),
        (Some(0), "unknown"),
        (None, "missing"),
    ] {
        set_version(version);
        let err = open_error(&path);
        assert_eq!(err.code(), ErrorCode::MigrationRequired, "{what} format version: {err}");
    }
    set_version(Some(current));
    let store = RedbSessionStore::open(&path).expect("the current format version opens again");
    drop(store);

    let foreign = dir.path().join("foreign.redb");
    write_foreign(&foreign);
    let err = open_error(&foreign);
    assert_eq!(err.code(), ErrorCode::MigrationRequired, "a redb file of another application: {err}");
    // Nothing was written into it.
    let db = redb::Database::create(&foreign).expect("reopen raw");
    let names: Vec<String> = {
        use redb::TableHandle;
        db.begin_read().expect("read").list_tables().expect("list").map(|t| t.name().to_owned()).collect()
    };
    assert_eq!(names, vec!["something_else".to_owned()]);
}

#[test]
fn the_same_file_twice_in_one_process_is_a_lock_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let first = RedbSessionStore::open(&path).expect("open");
    let err = open_error(&path);
    assert_eq!(err.code(), ErrorCode::StorageConnectionFailed, "{err}");
    assert!(err.message().contains("locked"), "the error must name the lock: {err}");
    drop(first);
    RedbSessionStore::open(&path).expect("the lock is released when the last handle is dropped");
}

#[test]
fn a_missing_directory_is_a_connection_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = open_error(&dir.path().join("no/such/dir/store.redb"));
    assert_eq!(err.code(), ErrorCode::StorageConnectionFailed, "{err}");
}

#[test]
fn oversized_events_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    runtime().block_on(async {
        let options = RedbOptions::new().max_event_bytes(4096);
        let store = RedbSessionStore::open_with(dir.path().join("small.redb"), options).expect("open");
        let session = Session::new("big").expect("session");
        store.save_session(&session).await.expect("save_session");
        let small = Event::new(EventKind::MessageSent, session.id.clone()).with_data("content", "hi");
        let big = Event::new(EventKind::MessageSent, session.id.clone()).with_data("content", "x".repeat(5000));
        let err = store.append_events(vec![small.clone(), big.clone()]).await.expect_err("a batch with a big event");
        assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");
        assert_eq!(store.latest_sequence(&session.id).await.expect("latest"), 0, "a refused batch wrote events");

        let run = Run::new(session.id.clone(), RunInput::user("x"));
        let err = store
            .flush(ExecutionRecord::new(run.clone()).events(vec![big]))
            .await
            .expect_err("a flush with a big event");
        assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");
        assert_eq!(store.get_run(&run.id).await.expect_err("run").code(), ErrorCode::RunNotFound);

        let stored = store.append_event(small).await.expect("the small event alone");
        assert_eq!(stored.sequence, Some(1), "the small event of the refused batch must not have been stored");

        // The default cap is 16 MiB.
        let default = RedbSessionStore::open(dir.path().join("default.redb")).expect("open");
        default.save_session(&session).await.expect("save_session");
        let huge = Event::new(EventKind::MessageSent, session.id.clone()).with_data("content", "y".repeat(17 << 20));
        let err = default.append_event(huge).await.expect_err("a 17 MiB event");
        assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");
        let fits = Event::new(EventKind::MessageSent, session.id.clone()).with_data("content", "y".repeat(15 << 20));
        assert_eq!(default.append_event(fits).await.expect("a 15 MiB event").sequence, Some(1));
    });
}

#[test]
fn everything_survives_a_reopen_in_both_durability_modes() {
    let dir = tempfile::tempdir().expect("temp dir");
    for durability in [Durability::Immediate, Durability::Eventual] {
        let path = dir.path().join(format!("{durability:?}.redb"));
        let options = RedbOptions::new().durability(durability);
        let (session, run, events) = runtime().block_on(async {
            let store = RedbSessionStore::open_with(&path, options.clone()).expect("open");
            let session = Session::new("persist").expect("session");
            store.save_session(&session).await.expect("save_session");
            let run = Run::new(session.id.clone(), RunInput::user("x"));
            store.save_run(&run).await.expect("save_run");
            let events = store
                .append_events((0..5).map(|_| Event::new(EventKind::MessageSent, session.id.clone())).collect())
                .await
                .expect("append");
            store.sync().await.expect("sync");
            (session, run, events)
        });
        runtime().block_on(async {
            let store = RedbSessionStore::open_with(&path, options).expect("reopen");
            assert_eq!(store.get_session(&session.id).await.expect("session"), session);
            assert_eq!(store.get_run(&run.id).await.expect("run"), run);
            assert_eq!(store.get_events(&session.id, &EventQuery::new()).await.expect("events"), events);
            assert_eq!(store.latest_sequence(&session.id).await.expect("latest"), 5);
        });
    }
}
