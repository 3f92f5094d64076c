//! Tests with real child processes: crash safety under `SIGKILL` and the file lock.
//!
//! The child is this test binary itself, re-executed to run exactly one test (`crash_child`
//! or `lock_child`) with an environment variable that makes that test act as the child;
//! without the variable those tests return at once.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use asm_core::{ErrorCode, Event, EventKind, Session, SessionId};
use asm_ports::{EventQuery, SessionStore, SessionStoreExt};
use asm_store_sled::{Durability, SledOptions, SledSessionStore};
use rand::Rng;

const CRASH_DIR_ENV: &str = "ASM_SLED_TEST_CRASH_CHILD_DIR";
const CRASH_SESSION_ENV: &str = "ASM_SLED_TEST_CRASH_CHILD_SESSION";
const LOCK_DIR_ENV: &str = "ASM_SLED_TEST_LOCK_CHILD_DIR";

/// How many times the writer is killed.
const ROUNDS: usize = 24;
/// The longest a child may take to produce its next line.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn immediate() -> SledOptions {
    SledOptions::new().durability(Durability::Immediate)
}

/// Re-executes this test binary to run only `test`, with `env` set.
fn spawn_child(test: &str, env: &[(&str, &str)]) -> Child {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("spawn the child test process")
}

/// Reads the child's stdout lines on a thread; the channel closes at EOF.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------------------------
// Crash safety
// ---------------------------------------------------------------------------------------------

/// The child: appends to one session from 4 concurrent tasks (single events and batches of 3),
/// forever, and prints `ACK <sequence> <event id>` for every acknowledged event.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(session)) = (std::env::var(CRASH_DIR_ENV), std::env::var(CRASH_SESSION_ENV)) else {
        return;
    };
    let session = SessionId::parse(&session).expect("session id from the parent");
    runtime().block_on(async move {
        let store = SledSessionStore::open_with(&dir, immediate()).expect("child: open the store");
        let mut tasks = Vec::new();
        for writer in 0..4u64 {
            let store = store.clone();
            let session = session.clone();
            tasks.push(tokio::spawn(async move {
                // A safety net: never outlive a parent that failed to kill us.
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut step = 0u64;
                while Instant::now() < deadline {
                    step += 1;
                    let size = if step.is_multiple_of(5) { 3 } else { 1 };
                    let batch: Vec<Event> = (0..size)
                        .map(|i| {
                            Event::new(EventKind::MessageStreamed, session.clone())
                                .with_data("writer", writer)
                                .with_data("step", step * 10 + i)
                        })
                        .collect();
                    let stored = store.append_events(batch).await.expect("child: append");
                    let mut text = String::new();
                    for event in &stored {
                        text.push_str(&format!("ACK {} {}\n", event.sequence.unwrap_or(0), event.id));
                    }
                    let mut out = std::io::stdout().lock();
                    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
                        return;
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("db");
    let rt = runtime();
    let session = Session::new("crash-test").expect("session");
    {
        let store = SledSessionStore::open_with(&path, immediate()).expect("open");
        rt.block_on(store.save_session(&session)).expect("save_session");
    }

    let started = Instant::now();
    let mut rng = rand::rng();
    // Every acknowledged (sequence -> event id), over all rounds.
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    fn record(acknowledged: &mut BTreeMap<u64, String>, line: &str, round: usize) -> bool {
        // libtest may print `test crash_child ... ` in front of the first line.
        let Some(at) = line.find("ACK ") else { return false };
        let mut parts = line[at..].split(' ');
        if parts.next() != Some("ACK") {
            return false;
        }
        let (Some(sequence), Some(id)) = (parts.next().and_then(|s| s.parse::<u64>().ok()), parts.next()) else {
            panic!("round {round}: malformed ack line {line:?}");
        };
        if let Some(previous) = acknowledged.insert(sequence, id.to_owned()) {
            assert_eq!(previous, id, "round {round}: sequence {sequence} acknowledged for two different events");
        }
        true
    }

    let mut killed_early = 0;
    for round in 0..ROUNDS {
        let mut child = spawn_child(
            "crash_child",
            &[(CRASH_DIR_ENV, path.to_str().expect("utf-8 path")), (CRASH_SESSION_ENV, session.id.as_str())],
        );
        let lines = lines_of(&mut child);
        // Every 6th round the child is killed at once (while it opens or recovers the
        // database); otherwise after a random number of acknowledgements.
        let wait_for = if round % 6 == 5 { 0 } else { rng.random_range(1..=200) };
        if wait_for == 0 {
            killed_early += 1;
        }
        let mut seen = 0;
        while seen < wait_for {
            match lines.recv_timeout(LINE_TIMEOUT) {
                Ok(line) => {
                    if record(&mut acknowledged, &line, round) {
                        seen += 1;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("round {round}: the child acknowledged nothing for {LINE_TIMEOUT:?} ({seen} acks so far)");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait for the child");
                    panic!("round {round}: the child exited ({status}) after {seen} acks; run it alone to see why");
                }
            }
        }
        // `Child::kill` sends SIGKILL on unix.
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        // Acknowledgements written before the kill are still in the pipe.
        while let Ok(line) = lines.recv_timeout(LINE_TIMEOUT) {
            record(&mut acknowledged, &line, round);
        }

        let store = SledSessionStore::open_with(&path, immediate())
            .unwrap_or_else(|e| panic!("round {round}: reopening after SIGKILL failed: {e}"));
        rt.block_on(async {
            let latest = store.latest_sequence(&session.id).await.expect("latest_sequence");
            let events = store.get_events(&session.id, &EventQuery::new()).await.expect("get_events");
            let sequences: Vec<u64> = events.iter().map(|e| e.sequence.unwrap_or(0)).collect();
            assert_eq!(sequences, (1..=latest).collect::<Vec<_>>(), "round {round}: sequences not contiguous from 1");
            let ids: HashSet<_> = events.iter().map(|e| e.id.as_str().to_owned()).collect();
            assert_eq!(ids.len(), events.len(), "round {round}: an event is stored twice");
            for (&sequence, id) in &acknowledged {
                assert!(
                    sequence <= latest,
                    "round {round}: acknowledged sequence {sequence} lost (the store ends at {latest})"
                );
                let stored = &events[(sequence - 1) as usize];
                assert_eq!(stored.id.as_str(), id, "round {round}: sequence {sequence} holds another event");
            }
            let next = store
                .append_event(Event::new(EventKind::MessageSent, session.id.clone()))
                .await
                .unwrap_or_else(|e| panic!("round {round}: the store refuses appends after recovery: {e}"));
            assert_eq!(next.sequence, Some(latest + 1), "round {round}: the first append after recovery");
            acknowledged.insert(latest + 1, next.id.as_str().to_owned());
        });
    }
    assert!(killed_early > 0);
    assert!(acknowledged.len() > ROUNDS, "the children acknowledged too little to test anything");
    eprintln!(
        "crash test: {ROUNDS} SIGKILL rounds, {} acknowledged events verified, {:?}",
        acknowledged.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// File lock
// ---------------------------------------------------------------------------------------------

/// The child: tries to open the store and prints `LOCK-RESULT ok` or `LOCK-RESULT <code> <message>`.
#[test]
fn lock_child() {
    let Ok(dir) = std::env::var(LOCK_DIR_ENV) else { return };
    let line = match SledSessionStore::open(&dir) {
        Ok(_) => "LOCK-RESULT ok".to_owned(),
        Err(e) => format!("LOCK-RESULT {} {}", e.code(), e.message().replace('\n', " ")),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn open_in_child(path: &Path) -> String {
    let mut child = spawn_child("lock_child", &[(LOCK_DIR_ENV, path.to_str().expect("utf-8 path"))]);
    let lines = lines_of(&mut child);
    let result = loop {
        match lines.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => {
                // libtest may print `test lock_child ... ` in front of it.
                if let Some(at) = line.find("LOCK-RESULT ") {
                    break line[at + "LOCK-RESULT ".len()..].to_owned();
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!("the lock child printed no result within {LINE_TIMEOUT:?}: {e}");
            }
        }
    };
    let status = child.wait().expect("reap the lock child");
    assert!(status.success(), "the lock child failed: {status}");
    result
}

#[test]
fn a_second_process_gets_an_error_naming_the_lock() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("db");
    let store = SledSessionStore::open(&path).expect("open");

    let result = open_in_child(&path);
    // The lock is `storage_connection_failed` in every store on asm-store-kv (retryable: the
    // other process may close the store).
    assert!(
        result.starts_with(ErrorCode::StorageConnectionFailed.as_str()),
        "a second process opening a locked store must get storage_connection_failed, got: {result}"
    );
    assert!(result.contains("lock"), "the error must name the lock: {result}");

    // The same in this process (a second handle must be a clone, not a second open).
    let err = SledSessionStore::open(&path).expect_err("a second open of a locked store");
    assert_eq!(err.code(), ErrorCode::StorageConnectionFailed);
    assert!(err.message().contains("lock"), "{}", err.message());
    assert_eq!(err.details().get("reason").and_then(|v| v.as_str()), Some("locked"));

    // Closing the store releases the lock.
    drop(store);
    assert_eq!(open_in_child(&path), "ok", "the lock must be released when the last handle is dropped");
}
