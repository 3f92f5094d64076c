//! Bad files and bad input: truncated or corrupted databases, format versions, oversized events.
//!
//! What sled 0.34 does with damaged files (observed by these tests): its log is a sequence of
//! checksummed messages, so a truncated or overwritten tail is treated like a torn write and
//! recovery stops at the last intact message (a consistent prefix: later data is gone, silently);
//! damage it cannot step over (headers, snapshots, the `conf` file) is reported as an error, and
//! sometimes sled panics. Whatever sled does, the store returns either a typed error or a
//! consistent store, never a panic.

use std::path::{Path, PathBuf};

use asm_core::{ErrorCode, Event, EventKind, Run, RunInput, Session, SessionId, StoredEvent};
use asm_ports::{EventQuery, ExecutionRecord, SessionStore, SessionStoreExt};
use asm_store_sled::{FORMAT_VERSION, FORMAT_VERSION_KEY, SledOptions, SledSessionStore};
use rand::{Rng, SeedableRng};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// A store with one session of `count` events (flushed), closed again. Returns the session.
fn populated(path: &Path, count: usize) -> (SessionId, Vec<StoredEvent>) {
    let store = SledSessionStore::open(path).expect("open");
    let rt = runtime();
    let session = Session::new("robustness").expect("session");
    let events = rt.block_on(async {
        store.save_session(&session).await.expect("save_session");
        let mut all = Vec::new();
        for chunk in 0..count.div_ceil(10) {
            let batch: Vec<Event> = (0..10.min(count - chunk * 10))
                .map(|i| {
                    Event::new(EventKind::MessageReceived, session.id.clone())
                        .with_data("content", format!("event {chunk}-{i} {}", "x".repeat(200)))
                })
                .collect();
            all.extend(store.append_events(batch).await.expect("append"));
        }
        all
    });
    (session.id, events)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy file");
        }
    }
}

/// The files of a sled database, largest first.
fn files_of(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
    files
}

#[derive(Debug, Default)]
struct Outcomes {
    typed_errors: usize,
    consistent_prefixes: usize,
    intact: usize,
}

/// Opens a damaged copy: a typed error, or a store whose session is a consistent prefix of what
/// was written. A panic escaping the store fails the test.
fn open_damaged(path: &Path, session: &SessionId, written: &[StoredEvent], what: &str, outcomes: &mut Outcomes) {
    let opened = std::panic::catch_unwind(|| SledSessionStore::open(path));
    let store = match opened {
        Err(_) => panic!("{what}: a panic escaped SledSessionStore::open"),
        Ok(Err(e)) => {
            assert!(
                matches!(
                    e.code(),
                    ErrorCode::StorageReadFailed | ErrorCode::StorageError | ErrorCode::MigrationRequired
                ),
                "{what}: open failed with an unexpected code: {e}"
            );
            eprintln!("{what}: open -> {e}");
            outcomes.typed_errors += 1;
            return;
        }
        Ok(Ok(store)) => store,
    };
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime().block_on(async {
            let latest = store.latest_sequence(session).await?;
            let events = store.get_events(session, &EventQuery::new()).await?;
            Ok::<_, asm_core::Error>((latest, events))
        })
    }));
    match read {
        Err(_) => panic!("{what}: a panic escaped a read of the recovered store"),
        Ok(Err(e)) => {
            assert!(
                matches!(e.code(), ErrorCode::StorageReadFailed | ErrorCode::StorageError | ErrorCode::SessionNotFound),
                "{what}: a read failed with an unexpected code: {e}"
            );
            eprintln!("{what}: read -> {e}");
            outcomes.typed_errors += 1;
        }
        Ok(Ok((latest, events))) => {
            eprintln!("{what}: recovered {} of {} events", events.len(), written.len());
            let sequences: Vec<u64> = events.iter().map(|e| e.sequence.unwrap_or(0)).collect();
            assert_eq!(sequences, (1..=latest).collect::<Vec<_>>(), "{what}: recovered log is not contiguous");
            assert!(events.len() <= written.len(), "{what}: recovered more events than written");
            assert_eq!(events[..], written[..events.len()], "{what}: recovered events differ from those written");
            if events.len() == written.len() {
                outcomes.intact += 1;
            } else {
                outcomes.consistent_prefixes += 1;
            }
        }
    }
}

#[test]
fn truncated_files_give_a_typed_error_or_a_consistent_prefix() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let original = dir.path().join("original");
    let (session, written) = populated(&original, 300);
    let mut outcomes = Outcomes::default();
    for (f, file) in files_of(&original).iter().enumerate() {
        let name = file.file_name().expect("file name").to_owned();
        let len = std::fs::metadata(file).expect("metadata").len();
        for cut in [0, 1, len / 4, len / 2, 3 * len / 4, len.saturating_sub(100), len.saturating_sub(1)] {
            let copy = dir.path().join(format!("trunc-{f}-{cut}"));
            copy_dir(&original, &copy);
            let target = copy.join(&name);
            std::fs::OpenOptions::new().write(true).open(&target).expect("open copy").set_len(cut).expect("truncate");
            open_damaged(
                &copy,
                &session,
                &written,
                &format!("{name:?} truncated to {cut} of {len} bytes"),
                &mut outcomes,
            );
        }
    }
    eprintln!("truncation outcomes: {outcomes:?}");
    assert!(outcomes.typed_errors > 0 && outcomes.consistent_prefixes > 0, "{outcomes:?}");
}

#[test]
fn a_log_lost_entirely_is_an_error_not_a_new_empty_store() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("db");
    populated(&path, 20);
    std::fs::OpenOptions::new().write(true).open(path.join("db")).expect("open").set_len(0).expect("truncate");
    let err = SledSessionStore::open(&path).expect_err("a store whose log was truncated to nothing");
    // Corruption is `storage_error` (detail `corrupted`) in every store on asm-store-kv.
    assert_eq!(err.code(), ErrorCode::StorageError, "{err}");
    assert_eq!(err.details().get("corrupted"), Some(&serde_json::Value::Bool(true)));
}

#[test]
fn corrupted_files_give_a_typed_error_or_a_consistent_prefix() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let original = dir.path().join("original");
    let (session, written) = populated(&original, 300);
    let mut outcomes = Outcomes::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for (f, file) in files_of(&original).iter().enumerate() {
        let name = file.file_name().expect("file name").to_owned();
        let bytes = std::fs::read(file).expect("read file");
        for round in 0..8 {
            let mut damaged = bytes.clone();
            if damaged.is_empty() {
                continue;
            }
            // Overwrite a random stretch (sometimes the very start, where headers live).
            let start = if round == 0 { 0 } else { rng.random_range(0..damaged.len()) };
            let len = rng.random_range(1..=64).min(damaged.len() - start);
            rng.fill(&mut damaged[start..start + len]);
            let copy = dir.path().join(format!("corrupt-{f}-{round}"));
            copy_dir(&original, &copy);
            std::fs::write(copy.join(&name), &damaged).expect("write damaged copy");
            let what = format!("{name:?} with {len} random bytes at {start}");
            open_damaged(&copy, &session, &written, &what, &mut outcomes);
        }
    }
    // A directory whose files are all garbage.
    let garbage = dir.path().join("garbage");
    std::fs::create_dir_all(&garbage).expect("create dir");
    std::fs::write(garbage.join("conf"), b"not a sled config at all").expect("write");
    std::fs::write(garbage.join("db"), vec![0xA5u8; 4096]).expect("write");
    open_damaged(&garbage, &session, &written, "a directory of garbage files", &mut outcomes);
    eprintln!("corruption outcomes: {outcomes:?}");
    assert!(outcomes.typed_errors > 0, "{outcomes:?}");
}

#[test]
fn a_path_that_is_a_file_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("file");
    std::fs::write(&file, b"hello").expect("write");
    let err = SledSessionStore::open(&file).expect_err("opening a regular file as a store");
    // A path that cannot be opened is `storage_connection_failed` in every store on asm-store-kv.
    assert_eq!(err.code(), ErrorCode::StorageConnectionFailed, "{err}");
}

fn set_format_record(path: &Path, value: Option<&[u8]>) {
    // sled releases a closed database's file lock when its flusher thread stops, just after the
    // last handle is dropped: wait for it, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let db = loop {
        match sled::open(path) {
            Ok(db) => break db,
            Err(error) if std::time::Instant::now() < deadline && error.to_string().contains("acquire lock") => {
                std::thread::yield_now();
            }
            Err(error) => panic!("raw sled open: {error:?}"),
        }
    };
    match value {
        Some(value) => db.insert(FORMAT_VERSION_KEY, value).expect("insert"),
        None => db.remove(FORMAT_VERSION_KEY).expect("remove"),
    };
    db.flush().expect("flush");
}

#[test]
fn a_newer_or_unknown_format_requires_a_migration() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("db");
    populated(&path, 3);

    set_format_record(&path, Some(&(FORMAT_VERSION + 1).to_be_bytes()));
    let err = SledSessionStore::open(&path).expect_err("a newer format");
    assert_eq!(err.code(), ErrorCode::MigrationRequired, "{err}");
    assert!(err.message().contains("newer"), "{err}");
    assert_eq!(err.details().get("found_version").and_then(|v| v.as_u64()), Some(u64::from(FORMAT_VERSION + 1)));

    set_format_record(&path, Some(&0u32.to_be_bytes()));
    assert_eq!(SledSessionStore::open(&path).expect_err("version 0").code(), ErrorCode::MigrationRequired);

    set_format_record(&path, Some(b"v1"));
    assert_eq!(SledSessionStore::open(&path).expect_err("garbage record").code(), ErrorCode::MigrationRequired);

    set_format_record(&path, None);
    let err = SledSessionStore::open(&path).expect_err("a non-empty database without a record");
    assert_eq!(err.code(), ErrorCode::MigrationRequired, "{err}");

    // Put back, the store opens with its data.
    set_format_record(&path, Some(&FORMAT_VERSION.to_be_bytes()));
    SledSessionStore::open(&path).expect("the current format opens");
}

#[test]
fn a_foreign_sled_database_is_not_misread() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("db");
    {
        let db = sled::open(&path).expect("raw sled open");
        db.open_tree("someone_elses").expect("tree").insert(b"k", b"v").expect("insert");
        db.flush().expect("flush");
    }
    let err = SledSessionStore::open(&path).expect_err("a foreign database");
    assert_eq!(err.code(), ErrorCode::MigrationRequired, "{err}");
}

#[test]
fn an_empty_database_gets_the_current_format_record() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("db");
    drop(SledSessionStore::open(&path).expect("create"));
    let db = sled::open(&path).expect("raw sled open");
    assert_eq!(db.get(FORMAT_VERSION_KEY).expect("get").as_deref(), Some(&FORMAT_VERSION.to_be_bytes()[..]));
}

#[test]
fn data_survives_a_clean_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("db");
    let (session, written) = populated(&path, 25);
    let store = SledSessionStore::open(&path).expect("reopen");
    let rt = runtime();
    let read = rt.block_on(store.get_events(&session, &EventQuery::new())).expect("get_events");
    assert_eq!(read, written);
    let run = Run::new(session.clone(), RunInput::user("x"));
    rt.block_on(store.save_run(&run)).expect("save_run");
    drop(store);
    let store = SledSessionStore::open(&path).expect("reopen");
    assert_eq!(rt.block_on(store.get_run(&run.id)).expect("get_run"), run);
    assert_eq!(rt.block_on(store.latest_sequence(&session)).expect("latest"), 25);
}

#[test]
fn an_oversized_event_is_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store =
        SledSessionStore::open_with(dir.path().join("db"), SledOptions::new().max_event_bytes(1024)).expect("open");
    let rt = runtime();
    rt.block_on(async {
        let session = Session::new("oversized").expect("session");
        store.save_session(&session).await.expect("save_session");
        let big = Event::new(EventKind::MessageReceived, session.id.clone()).with_data("content", "x".repeat(2000));
        let small = Event::new(EventKind::MessageReceived, session.id.clone()).with_data("content", "ok");

        let err = store.append_event(big.clone()).await.expect_err("an oversized event");
        assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");
        assert_eq!(err.details().get("max_event_bytes").and_then(|v| v.as_u64()), Some(1024));
        let err = store.append_events(vec![small.clone(), big.clone()]).await.expect_err("a batch with one");
        assert_eq!(err.code(), ErrorCode::InvalidInput);
        let run = Run::new(session.id.clone(), RunInput::user("x"));
        let err = store
            .flush(ExecutionRecord::new(run.clone()).events(vec![big.clone()]))
            .await
            .expect_err("a flush with one");
        assert_eq!(err.code(), ErrorCode::InvalidInput);

        assert_eq!(store.latest_sequence(&session.id).await.expect("latest"), 0, "an oversized batch wrote events");
        assert_eq!(store.get_run(&run.id).await.expect_err("run").code(), ErrorCode::RunNotFound);
        // None of the ids was stored: the small event gets 1, the big one (made small) 2.
        assert_eq!(store.append_event(small).await.expect("append").sequence, Some(1));
        let mut shrunk = big;
        shrunk.data.insert("content".into(), "fits now".into());
        assert_eq!(store.append_event(shrunk).await.expect("append").sequence, Some(2));

        // The default limit is 16 MiB.
        assert_eq!(SledOptions::default().max_event_bytes, 16 << 20);
    });
}

#[test]
fn deeply_nested_payloads_are_rejected_not_overflowing_the_stack() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SledSessionStore::open(dir.path().join("db")).expect("open");
    let rt = runtime();
    rt.block_on(async {
        let session = Session::new("nested").expect("session");
        store.save_session(&session).await.expect("save_session");
        let mut value = serde_json::Value::Null;
        for _ in 0..2000 {
            value = serde_json::Value::Array(vec![value]);
        }
        let event = Event::new(EventKind::MessageReceived, session.id.clone()).with_data("deep", value);
        let err = store.append_event(event).await.expect_err("a 2000-level payload");
        assert_eq!(err.code(), ErrorCode::InvalidInput);
        let mut value = serde_json::Value::Null;
        for _ in 0..100 {
            value = serde_json::json!({ "v": value });
        }
        let event = Event::new(EventKind::MessageReceived, session.id.clone()).with_data("deep", value);
        let stored = store.append_event(event.clone()).await.expect("a 100-level payload");
        let read = store.get_events(&session.id, &EventQuery::new()).await.expect("get_events");
        assert_eq!(read, vec![stored]);
    });
}
