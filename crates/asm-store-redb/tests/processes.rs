//! Tests with a second process: crash safety under SIGKILL and the file lock.
//!
//! The second process is this test binary itself, started with `--exact <child test>` and an
//! environment variable that turns that test into the child. Without the variable the child
//! tests return at once, so a normal run just counts them as passed.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use asm_core::{ErrorCode, Event, EventId, EventKind, Session, SessionId};
use asm_ports::{EventQuery, SessionStore, SessionStoreExt};
use asm_store_redb::RedbSessionStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CRASH_CHILD_STORE: &str = "ASM_REDB_TEST_CRASH_CHILD_STORE";
const CRASH_CHILD_SESSION: &str = "ASM_REDB_TEST_CRASH_CHILD_SESSION";
const LOCK_HOLDER_STORE: &str = "ASM_REDB_TEST_LOCK_HOLDER_STORE";

/// Whether this process is a child started by one of the tests below.
fn is_child() -> bool {
    std::env::var_os(CRASH_CHILD_STORE).is_some() || std::env::var_os(LOCK_HOLDER_STORE).is_some()
}

fn spawn_child(test: &str, env: &[(&str, &str)], stdin: Stdio) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().unwrap_or_else(|e| panic!("cannot start the child test {test}: {e}"))
}

/// Forwards the child's complete stdout lines to a channel (a line cut by the kill is dropped).
fn line_reader(child: &mut Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (sender, receiver) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.ends_with('\n') => {
                    if sender.send(line.trim_end().to_owned()).is_err() {
                        // Nobody listens any more: drain the pipe so the child never blocks.
                        let _ = std::io::copy(&mut reader, &mut std::io::sink());
                        return;
                    }
                }
                Ok(_) => return,
            }
        }
    });
    (receiver, handle)
}

/// Waits for the child to exit, at most `limit`.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                panic!("{what} did not exit within {limit:?}");
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("build a runtime")
}

// ---------------------------------------------------------------------------------------------
// Crash safety
// ---------------------------------------------------------------------------------------------

/// The child: appends forever from four concurrent tasks (one single-event appender, three
/// batch appenders) and prints `ACK <sequence> <event id>` for every acknowledged event.
#[test]
fn crash_child() {
    let (Some(path), Some(session)) = (std::env::var_os(CRASH_CHILD_STORE), std::env::var_os(CRASH_CHILD_SESSION))
    else {
        return;
    };
    let session = SessionId::parse(&session.to_string_lossy()).expect("session id");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let store = Arc::new(RedbSessionStore::open(&path).expect("the child opens the store"));
        let mut tasks = Vec::new();
        for writer in 0..4u64 {
            let store = Arc::clone(&store);
            let session = session.clone();
            tasks.push(tokio::spawn(async move {
                for step in 0u64.. {
                    let size = if writer == 0 { 1 } else { 1 + (step % 4) as usize };
                    let batch: Vec<Event> = (0..size)
                        .map(|i| {
                            Event::new(EventKind::MessageStreamed, session.clone())
                                .with_data("writer", writer)
                                .with_data("step", step)
                                .with_data("i", i as u64)
                        })
                        .collect();
                    let stored = store.append_events(batch).await.expect("the child's append");
                    let mut lines = String::new();
                    for event in &stored {
                        lines.push_str(&format!("ACK {} {}\n", event.sequence.unwrap_or(0), event.id));
                    }
                    let mut out = std::io::stdout().lock();
                    out.write_all(lines.as_bytes()).expect("write to the parent");
                    out.flush().expect("flush to the parent");
                }
            }));
        }
        for task in tasks {
            task.await.expect("appender task");
        }
    });
}

/// Kills a child that appends from several tasks with SIGKILL at random moments, 24 times;
/// after each kill the reopened store holds every acknowledged event at its acknowledged
/// sequence, its log is gap-free from 1 without duplicates, and it accepts new appends.
#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    if is_child() {
        return;
    }
    const ROUNDS: usize = 24;
    let seed: u64 = std::env::var("ASM_REDB_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("crash test seed: {seed} (set ASM_REDB_CRASH_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.redb");
    let session = runtime().block_on(async {
        let store = RedbSessionStore::open(&path).expect("open");
        let session = Session::new("crash").expect("session");
        store.save_session(&session).await.expect("save_session");
        session
    });
    let session_id = session.id.to_string();
    let path_text = path.to_string_lossy().into_owned();

    let started = Instant::now();
    let mut acknowledged: HashMap<u64, EventId> = HashMap::new();
    let mut killed_mid_run = 0;
    for round in 0..ROUNDS {
        let mut child = spawn_child(
            "crash_child",
            &[(CRASH_CHILD_STORE, &path_text), (CRASH_CHILD_SESSION, &session_id)],
            Stdio::null(),
        );
        let (lines, reader) = line_reader(&mut child);
        let kill_after = rng.random_range(1..1_500usize);
        let mut seen = 0;
        let mut round_acks = Vec::new();
        while seen < kill_after {
            match lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    if let Some(ack) = parse_ack(&line) {
                        round_acks.push(ack);
                        seen += 1;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("round {round}: the child acknowledged {seen} events and then nothing for 20 s ({e})");
                }
            }
        }
        // A random moment a little later, while the writers are in the middle of their commits.
        let extra = rng.random_range(0..3_000u64);
        std::thread::sleep(Duration::from_micros(extra));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        assert!(!status.success(), "round {round}: the child exited by itself ({status})");
        killed_mid_run += 1;
        reader.join().expect("reader thread");
        round_acks.extend(lines.try_iter().filter_map(|line| parse_ack(&line)));
        for (sequence, id) in round_acks {
            if let Some(previous) = acknowledged.insert(sequence, id.clone()) {
                panic!("round {round}: sequence {sequence} acknowledged twice ({previous} and {id})");
            }
        }

        runtime().block_on(async {
            let store = RedbSessionStore::open(&path)
                .unwrap_or_else(|e| panic!("round {round}: reopening after SIGKILL failed: {e}"));
            let latest = store.latest_sequence(&session.id).await.expect("latest_sequence");
            let events = store.get_events(&session.id, &EventQuery::new()).await.expect("get_events");
            let sequences: Vec<u64> = events.iter().map(|e| e.sequence.unwrap_or(0)).collect();
            assert_eq!(sequences, (1..=latest).collect::<Vec<_>>(), "round {round}: the log is not gap-free from 1");
            let ids: HashSet<&EventId> = events.iter().map(|e| &e.id).collect();
            assert_eq!(ids.len(), events.len(), "round {round}: an event is stored twice");
            for (sequence, id) in &acknowledged {
                let stored = events.get((*sequence as usize).wrapping_sub(1));
                assert_eq!(
                    stored.map(|e| &e.id),
                    Some(id),
                    "round {round}: acknowledged event {id} at sequence {sequence} is lost (latest {latest})"
                );
            }
            let next = store
                .append_event(Event::new(EventKind::MessageSent, session.id.clone()))
                .await
                .unwrap_or_else(|e| panic!("round {round}: the reopened store refuses appends: {e}"));
            assert_eq!(next.sequence, Some(latest + 1), "round {round}: the next append is not numbered after the log");
            acknowledged.insert(latest + 1, next.id.clone());
        });
    }
    assert_eq!(killed_mid_run, ROUNDS);
    eprintln!(
        "crash test: {ROUNDS} SIGKILL rounds, {} acknowledged events verified, {:?}",
        acknowledged.len(),
        started.elapsed()
    );
}

fn parse_ack(line: &str) -> Option<(u64, EventId)> {
    // The first line also carries libtest's "test crash_child ... " prefix.
    let (_, ack) = line.split_once("ACK ")?;
    let mut parts = ack.split(' ');
    let sequence = parts.next()?.parse().ok()?;
    let id = EventId::parse(parts.next()?).ok()?;
    Some((sequence, id))
}

// ---------------------------------------------------------------------------------------------
// The file lock
// ---------------------------------------------------------------------------------------------

/// The holder: opens the store, says `READY`, and keeps it open until its stdin closes.
#[test]
fn lock_holder() {
    let Some(path) = std::env::var_os(LOCK_HOLDER_STORE) else { return };
    let store = RedbSessionStore::open(Path::new(&path)).expect("the holder opens the store");
    {
        let mut out = std::io::stdout().lock();
        out.write_all(b"READY\n").expect("write");
        out.flush().expect("flush");
    }
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(store);
}

#[test]
fn a_second_process_gets_a_clear_error_naming_the_lock() {
    if is_child() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("locked.redb");
    drop(RedbSessionStore::open(&path).expect("create the store"));
    let path_text = path.to_string_lossy().into_owned();
    let mut holder = spawn_child("lock_holder", &[(LOCK_HOLDER_STORE, &path_text)], Stdio::piped());
    let (lines, reader) = line_reader(&mut holder);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            // libtest prints "test lock_holder ... " before the test's own output.
            Ok(line) if line.ends_with("READY") => break,
            Ok(_) => continue,
            Err(e) => {
                let _ = holder.kill();
                panic!("the holder process did not open the store within 30 s ({e})");
            }
        }
    }

    let err = RedbSessionStore::open(&path).expect_err("the file is held by another process");
    assert_eq!(err.code(), ErrorCode::StorageConnectionFailed, "{err}");
    assert!(err.message().contains("locked by another process"), "the error must name the lock: {err}");
    assert!(err.message().contains("locked.redb"), "the error must name the file: {err}");
    assert!(err.is_retryable(), "a held lock may be released: the error is retryable");

    drop(holder.stdin.take());
    wait_bounded(&mut holder, Duration::from_secs(30), "the holder process");
    reader.join().expect("reader thread");
    RedbSessionStore::open(&path).expect("the store opens once the holder has exited");
}
