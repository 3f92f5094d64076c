//! Robustness checks every store on this engine runs (feature `checks`): the same limits and
//! the same error code for the same failure, whatever the engine.
//!
//! The expectations are written once, here; each store crate describes how to open its store
//! and how to tamper with its files in a [`Subject`], and calls the checks from its tests, so a
//! store that maps a failure differently fails its own test suite (see
//! `crates/asm-store-redb/tests/checks.rs` and `crates/asm-store-sled/tests/checks.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use asm_core::{Error, ErrorCode, Event, EventKind, Run, RunInput, Session};
use asm_ports::{DynSessionStore, EventQuery, ExecutionRecord, SessionStoreExt};

use crate::{COMPACT_EVENTS, DEFAULT_MAX_EVENT_BYTES, FORMAT_VERSION, MAX_JSON_DEPTH};

/// How to open and tamper with one store.
#[derive(Clone, Copy, Debug)]
pub struct Subject {
    /// The engine's name, for messages.
    pub name: &'static str,
    /// Opens (or creates) the store at `path` with an event cap of `max_event_bytes`,
    /// compacting its log after `compact_after_events` events.
    pub open: fn(path: &Path, max_event_bytes: usize, compact_after_events: usize) -> asm_core::Result<DynSessionStore>,
    /// Writes `version` as the store's format record (`None` removes it) into the closed store
    /// at `path`, with the engine itself.
    pub set_format_version: fn(path: &Path, version: Option<u64>),
    /// Creates a database of the engine at `path` holding someone else's data.
    pub write_foreign: fn(path: &Path),
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

fn open_error(subject: &Subject, path: &Path) -> Error {
    match (subject.open)(path, DEFAULT_MAX_EVENT_BYTES, COMPACT_EVENTS) {
        Ok(store) => panic!("{}: opening {} should fail, but it opened: {store:?}", subject.name, path.display()),
        Err(e) => e,
    }
}

/// Runs every check, each in its own temporary directory.
pub fn run_all(subject: &Subject) {
    check_lock(subject);
    check_unopenable_path(subject);
    check_event_cap(subject);
    check_json_depth(subject);
    check_format_versions(subject);
    check_foreign_database(subject);
    check_refused_request_fails_alone(subject);
    check_reopen_with_compactions(subject);
}

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("store");
    (dir, path)
}

/// The same database opened twice (in one process): `storage_connection_failed`, naming the
/// lock; the lock is released with the last handle.
pub fn check_lock(subject: &Subject) {
    let (_dir, path) = temp();
    let first = (subject.open)(&path, DEFAULT_MAX_EVENT_BYTES, COMPACT_EVENTS).expect("open");
    let err = open_error(subject, &path);
    assert_eq!(err.code(), ErrorCode::StorageConnectionFailed, "{}: {err}", subject.name);
    assert!(err.message().contains("locked"), "{}: the error must name the lock: {err}", subject.name);
    assert_eq!(err.details().get("reason").and_then(|v| v.as_str()), Some("locked"), "{}: {err}", subject.name);
    drop(first);
    (subject.open)(&path, DEFAULT_MAX_EVENT_BYTES, COMPACT_EVENTS)
        .expect("the lock is released when the last handle is dropped");
}

/// A path below a regular file cannot be opened: `storage_connection_failed`.
pub fn check_unopenable_path(subject: &Subject) {
    let (dir, _) = temp();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write a file");
    let err = open_error(subject, &file.join("store"));
    assert_eq!(err.code(), ErrorCode::StorageConnectionFailed, "{}: {err}", subject.name);
}

/// One event cap, measured by [`asm_ports::backend::event_size`]: a batch or flush holding a larger
/// event is `invalid_input` (detail `max_event_bytes`) and writes nothing; the default is
/// [`asm_ports::MAX_EVENT_BYTES`].
pub fn check_event_cap(subject: &Subject) {
    assert_eq!(DEFAULT_MAX_EVENT_BYTES, asm_ports::MAX_EVENT_BYTES);
    let (_dir, path) = temp();
    let store = (subject.open)(&path, 4096, COMPACT_EVENTS).expect("open");
    runtime().block_on(async {
        let session = Session::new("cap").expect("session");
        store.save_session(&session).await.expect("save_session");
        let small = Event::new(EventKind::MessageSent, session.id.clone()).with_data("content", "hi");
        let big = Event::new(EventKind::MessageSent, session.id.clone()).with_data("content", "x".repeat(5000));
        let err = store.append_events(vec![small.clone(), big.clone()]).await.expect_err("a batch with a big event");
        assert_eq!(err.code(), ErrorCode::InvalidInput, "{}: {err}", subject.name);
        assert_eq!(err.details().get("max_event_bytes").and_then(|v| v.as_u64()), Some(4096), "{}", subject.name);
        let run = Run::new(session.id.clone(), RunInput::user("x"));
        let err = store.flush(ExecutionRecord::new(run.clone()).events(vec![big])).await.expect_err("a big flush");
        assert_eq!(err.code(), ErrorCode::InvalidInput, "{}: {err}", subject.name);
        assert_eq!(store.get_run(&run.id).await.expect_err("no run").code(), ErrorCode::RunNotFound);
        assert_eq!(store.latest_sequence(&session.id).await.expect("latest"), 0, "{}: wrote events", subject.name);
        assert_eq!(store.append_event(small).await.expect("the small event").sequence, Some(1));
    });
}

fn nested(levels: usize) -> serde_json::Value {
    let mut value = serde_json::Value::from(1);
    for _ in 0..levels {
        value = serde_json::Value::Array(vec![value]);
    }
    value
}

/// One nesting limit: a payload value at depth [`MAX_JSON_DEPTH`] is stored and read back, one
/// level deeper is `invalid_input`.
pub fn check_json_depth(subject: &Subject) {
    let (_dir, path) = temp();
    let store = (subject.open)(&path, DEFAULT_MAX_EVENT_BYTES, COMPACT_EVENTS).expect("open");
    runtime().block_on(async {
        let session = Session::new("depth").expect("session");
        store.save_session(&session).await.expect("save_session");
        // `data` is depth 0, its value depth 1: `levels` arrays put the innermost number at
        // depth `levels + 1`.
        let deepest = Event::new(EventKind::MessageSent, session.id.clone()).with_data("v", nested(MAX_JSON_DEPTH - 1));
        let stored = store.append_event(deepest).await.expect("a payload at the depth limit");
        let read = store.get_events(&session.id, &EventQuery::new()).await.expect("read");
        assert_eq!(read, vec![stored], "{}", subject.name);
        let deeper = Event::new(EventKind::MessageSent, session.id.clone()).with_data("v", nested(MAX_JSON_DEPTH));
        let err = store.append_event(deeper).await.expect_err("one level too deep");
        assert_eq!(err.code(), ErrorCode::InvalidInput, "{}: {err}", subject.name);
        let err = store
            .append_event(Event::new(EventKind::MessageSent, session.id.clone()).with_data("v", nested(2000)))
            .await
            .expect_err("far too deep");
        assert_eq!(err.code(), ErrorCode::InvalidInput, "{}: {err}", subject.name);
    });
}

/// A newer, an older (the layouts before this engine: 1), an unknown (0) or a missing format
/// version is `migration_required` (details `found_version`, `supported_version`); the current
/// one opens with the data.
pub fn check_format_versions(subject: &Subject) {
    let (_dir, path) = temp();
    let session = {
        let store = (subject.open)(&path, DEFAULT_MAX_EVENT_BYTES, COMPACT_EVENTS).expect("open");
        let session = Session::new("format").expect("session");
        runtime().block_on(store.save_session(&session)).expect("save_session");
        session
    };
    for (version, what) in [
        (Some(FORMAT_VERSION + 1), "newer"),
        (Some(99), "much newer"),
        (Some(1), "the layouts before asm-store-kv"),
        (Some(0), "unknown"),
        (None, "missing"),
    ] {
        (subject.set_format_version)(&path, version);
        let err = open_error(subject, &path);
        assert_eq!(err.code(), ErrorCode::MigrationRequired, "{}: {what} format version: {err}", subject.name);
        assert_eq!(
            err.details().get("supported_version").and_then(|v| v.as_u64()),
            Some(FORMAT_VERSION),
            "{}: {err}",
            subject.name
        );
        if let Some(version) = version {
            assert_eq!(
                err.details().get("found_version").and_then(|v| v.as_u64()),
                Some(version),
                "{}: {err}",
                subject.name
            );
        }
    }
    (subject.set_format_version)(&path, Some(FORMAT_VERSION));
    let store =
        (subject.open)(&path, DEFAULT_MAX_EVENT_BYTES, COMPACT_EVENTS).expect("the current format version opens again");
    assert_eq!(runtime().block_on(store.get_session(&session.id)).expect("the session is still there"), session);
    drop(store);
    // Version 2 (the same layout without the commit-order log) is upgraded in place.
    (subject.set_format_version)(&path, Some(2));
    let store = (subject.open)(&path, DEFAULT_MAX_EVENT_BYTES, COMPACT_EVENTS).expect("version 2 is upgraded");
    runtime().block_on(async {
        assert_eq!(store.get_session(&session.id).await.expect("the session is still there"), session);
        let event = store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await.expect("append");
        assert_eq!(event.sequence, Some(1), "{}", subject.name);
    });
}

/// Events survive a reopen whether they were compacted or still in the log, in both
/// durability modes of the store's default; duplicates of either are found, and the next
/// event is numbered after them.
pub fn check_reopen_with_compactions(subject: &Subject) {
    let (_dir, path) = temp();
    let rt = runtime();
    let session = Session::new("reopen").expect("session");
    let written = rt.block_on(async {
        let store = (subject.open)(&path, DEFAULT_MAX_EVENT_BYTES, 10).expect("open");
        store.save_session(&session).await.expect("save_session");
        let mut written = Vec::new();
        for i in 0..14u64 {
            let batch =
                (0..7).map(|j| Event::new(EventKind::MessageSent, session.id.clone()).with_data("n", i * 7 + j));
            written.extend(store.append_events(batch.collect()).await.expect("append"));
        }
        written
    });
    for round in 0..2 {
        let store = (subject.open)(&path, DEFAULT_MAX_EVENT_BYTES, 10).expect("reopen");
        rt.block_on(async {
            let read = store.get_events(&session.id, &EventQuery::new()).await.expect("read");
            assert_eq!(read, written, "{}: round {round}", subject.name);
            assert_eq!(store.latest_sequence(&session.id).await.expect("latest"), 98, "{}", subject.name);
            let page = store.get_events(&session.id, &EventQuery::new().after(90).limit(5)).await.expect("read");
            assert_eq!(page, written[90..95], "{}", subject.name);
            for stored in [&written[0], &written[97]] {
                let again = store.append_event(stored.clone()).await.expect("a duplicate");
                assert_eq!(&again, stored, "{}: a duplicate of a stored event", subject.name);
            }
        });
    }
    let store = (subject.open)(&path, DEFAULT_MAX_EVENT_BYTES, 10).expect("reopen");
    let next = rt.block_on(store.append_event(Event::new(EventKind::MessageSent, session.id))).expect("append");
    assert_eq!(next.sequence, Some(99), "{}", subject.name);
}

/// A database of the engine holding someone else's data is `migration_required`.
pub fn check_foreign_database(subject: &Subject) {
    let (_dir, path) = temp();
    (subject.write_foreign)(&path);
    let err = open_error(subject, &path);
    assert_eq!(err.code(), ErrorCode::MigrationRequired, "{}: a foreign database: {err}", subject.name);
}

/// Refused requests committed in the same group as good ones fail alone, with their own code.
pub fn check_refused_request_fails_alone(subject: &Subject) {
    let (_dir, path) = temp();
    let store = (subject.open)(&path, DEFAULT_MAX_EVENT_BYTES, COMPACT_EVENTS).expect("open");
    runtime().block_on(async {
        let session = Session::new("group").expect("session");
        store.save_session(&session).await.expect("save_session");
        let ghost = Session::new("ghost").expect("session");
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = Arc::clone(&store);
            let (sid, gid) = (session.id.clone(), ghost.id.clone());
            tasks.push(tokio::spawn(async move {
                match i % 3 {
                    0 => store.append_event(Event::new(EventKind::MessageSent, sid)).await.map(|_| ()),
                    1 => store.append_event(Event::new(EventKind::MessageSent, gid)).await.map(|_| ()),
                    _ => store.append(vec![Event::new(EventKind::MessageSent, sid)], Some(u64::MAX)).await.map(|_| ()),
                }
            }));
        }
        let mut good = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            let result = task.await.expect("task");
            match i % 3 {
                0 => {
                    result.expect("a good append must succeed");
                    good += 1;
                }
                1 => assert_eq!(result.expect_err("unknown session").code(), ErrorCode::SessionNotFound),
                _ => assert_eq!(result.expect_err("stale precondition").code(), ErrorCode::InvalidOperation),
            }
        }
        assert_eq!(store.latest_sequence(&session.id).await.expect("latest"), good, "{}", subject.name);
    });
}
