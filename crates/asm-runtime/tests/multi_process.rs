//! Many processes on one PostgreSQL store (`ASM_TEST_POSTGRES_URL`, one schema per test): session
//! ownership (refusal naming the owner, takeover after SIGKILL with recovery of the runs left,
//! stale owners fenced off) and cross-process subscriptions. The second process is this test
//! binary run again (`std::env::current_exe()`) with `ASM_MP_ROLE` selecting its part; the
//! processes talk through the child's stdin and stdout. There is no skipping: without a server
//! the tests fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use asm_core::{ErrorCode, Event, EventKind, RunId, RunInput, RunStatus, SessionId, StoredEvent};
use asm_ports::{SessionStore, SessionStoreExt};
use asm_runtime::{
    NewSession, Ownership, RunOptions, ServerConfig, SessionManager, SessionServer, StreamOptions, SubscribeOptions,
};
use asm_store_memory::InMemorySessionStore;
use asm_store_postgres::PostgresSessionStore;
use asm_store_postgres::test_util::{TestSchema, admin_sql};
use asm_testkit::ScriptedAdapter;

const ROLE: &str = "ASM_MP_ROLE";
const SCHEMA: &str = "ASM_MP_SCHEMA";
const SESSION: &str = "ASM_MP_SESSION";
/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(60);

/// A store in `schema` (this process's or the parent's).
async fn open(schema: &str) -> PostgresSessionStore {
    asm_store_postgres::test_util::open(TestSchema::options_for(schema)).await
}

/// An active session in a fresh schema.
async fn active_session(store: &PostgresSessionStore) -> SessionId {
    let manager = SessionManager::new(store.clone(), ScriptedAdapter::new());
    let session = manager.start_session(NewSession::new("multi-process")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    session.id
}

/// The child process: this binary, running only `test`, in `role`.
fn spawn_child(test: &str, role: &str, schema: &str, session: &SessionId) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(ROLE, role)
        .env(SCHEMA, schema)
        .env(SESSION, session.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().unwrap();
    (child, BufReader::new(stdout).lines())
}

/// What follows `tag` on the child's next line holding it.
async fn line(lines: &mut Lines<BufReader<ChildStdout>>, tag: &str) -> String {
    let read = async {
        while let Some(line) = lines.next_line().await.expect("the child's stdout") {
            // libtest may print `test NAME ... ` on the same line first.
            if let Some(at) = line.find(tag) {
                return line[at + tag.len()..].trim().to_owned();
            }
        }
        panic!("the child ended before printing {tag}");
    };
    tokio::time::timeout(STEP, read).await.unwrap_or_else(|_| panic!("no {tag} from the child within {STEP:?}"))
}

/// The child's side, when `ASM_MP_ROLE` is set: `Some` to return from the test at once.
fn child_env() -> Option<(String, String, SessionId)> {
    let role = std::env::var(ROLE).ok()?;
    let schema = std::env::var(SCHEMA).expect("the parent passes the schema");
    let session = SessionId::parse(&std::env::var(SESSION).expect("the parent passes the session")).unwrap();
    Some((role, schema, session))
}

fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").unwrap();
    out.flush().unwrap();
}

// ----- ownership: refusal, SIGKILL, takeover, recovery ------------------------------------------

/// Child "owner": owns the session with a short lease, one run executing (hanging) and one queued
/// behind it; says READY with both ids and then waits to be killed.
async fn child_owner(schema: &str, session: SessionId) {
    let store = open(schema).await;
    let server = SessionServer::start(
        ServerConfig::new(store, ScriptedAdapter::new().hanging())
            .attach(session)
            .max_concurrent_runs(1)
            .ownership(Ownership::new("child-owner").lease_ttl(Duration::from_millis(600))),
    )
    .await
    .expect("the child owns the session");
    let mut started = server.subscribe(SubscribeOptions::after(0).kind(EventKind::RunStarted)).await.unwrap();
    let running = server.submit_run(RunInput::user("hang"), RunOptions::default()).await.unwrap();
    let pending = server.submit_run(RunInput::user("wait"), RunOptions::default()).await.unwrap();
    let event = tokio::time::timeout(STEP, started.next()).await.expect("run_started").unwrap().unwrap();
    assert_eq!(event.run_id.as_ref(), Some(&running));
    let lease = server.lease().expect("an owning server holds a lease");
    say(&format!("@READY {running} {pending} {}", lease.token));
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_owner_is_refused_and_takes_over_after_the_owner_is_killed() {
    if let Some((_, schema, session)) = child_env() {
        return child_owner(&schema, session).await;
    }
    let schema = TestSchema::new("takeover");
    let store = open(&schema.name).await;
    let session = active_session(&store).await;
    let (mut child, mut lines) = spawn_child(
        "a_second_owner_is_refused_and_takes_over_after_the_owner_is_killed",
        "owner",
        &schema.name,
        &session,
    );
    let ready = line(&mut lines, "@READY ").await;
    let mut ids = ready.split(' ');
    let running = RunId::parse(ids.next().unwrap()).unwrap();
    let pending = RunId::parse(ids.next().unwrap()).unwrap();
    let child_token: u64 = ids.next().unwrap().parse().unwrap();
    assert_eq!(store.get_run(&running).await.unwrap().status, RunStatus::Running);
    assert_eq!(store.get_run(&pending).await.unwrap().status, RunStatus::Pending);

    // A second owner is refused, with the owner named; nothing of the session changed.
    let config = || {
        ServerConfig::new(store.clone(), ScriptedAdapter::replying("recovered"))
            .attach(session.clone())
            .ownership(Ownership::new("parent").lease_ttl(Duration::from_secs(5)))
    };
    let refused = SessionServer::start(config()).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::SessionOwned, "{refused}");
    assert_eq!(refused.details().get("owner").and_then(|v| v.as_str()), Some("child-owner"), "{refused}");
    assert_eq!(store.get_run(&pending).await.unwrap().status, RunStatus::Pending);

    // SIGKILL: no release, no last words. The waiting owner takes over once the lease expired.
    child.kill().await.unwrap();
    let waited = tokio::time::Instant::now();
    let server =
        SessionServer::start(config().ownership(
            Ownership::new("parent").lease_ttl(Duration::from_secs(5)).wait_for_lease(Duration::from_secs(30)),
        ))
        .await
        .expect("the takeover after expiry");
    assert!(waited.elapsed() < Duration::from_secs(30));
    let lease = server.lease().unwrap();
    assert_eq!(lease.owner, "parent");
    assert!(lease.token > child_token, "the takeover's token {} is not above {child_token}", lease.token);

    // Recovery: the run left running is cancelled, the pending one is executed here.
    let left = store.get_run(&running).await.unwrap();
    assert_eq!(left.status, RunStatus::Cancelled, "the orphaned running run");
    let result = server.await_run(&pending, STEP).await.expect("the recovered pending run completes");
    assert_eq!(result.output().content, "recovered");
    assert_eq!(store.get_run(&pending).await.unwrap().status, RunStatus::Completed);

    // A clean shutdown releases the lease: the next owner gets it at once.
    server.shutdown().await.unwrap();
    let next = SessionServer::start(
        ServerConfig::new(store.clone(), ScriptedAdapter::new())
            .attach(session.clone())
            .ownership(Ownership::new("next")),
    )
    .await
    .expect("a released lease is free at once");
    next.shutdown().await.unwrap();
}

// ----- a stale owner's writes are refused --------------------------------------------------------

/// Child "stale": takes a raw 300 ms lease without heartbeat (a process that froze), says LEASED,
/// waits for a line on stdin, then tries a fenced append and says how it went.
async fn child_stale(schema: &str, session: SessionId) {
    let store = open(schema).await;
    let leases = store.leases().unwrap();
    let lease = leases.acquire(&session, "child-stale", Duration::from_millis(300)).await.unwrap();
    say(&format!("@LEASED {}", lease.token));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    tokio::time::timeout(STEP, stdin.next_line()).await.expect("the parent's go").unwrap();
    let event = Event::new(EventKind::MessageSent, session).with_data("from", "stale owner");
    let outcome = match leases.append_fenced(&lease, vec![event], None).await {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code().as_str().to_owned(),
    };
    say(&format!("@RESULT {outcome}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_cannot_write_after_a_takeover() {
    if let Some((_, schema, session)) = child_env() {
        return child_stale(&schema, session).await;
    }
    let schema = TestSchema::new("stale");
    let store = open(&schema.name).await;
    let session = active_session(&store).await;
    let (mut child, mut lines) =
        spawn_child("a_stale_owner_cannot_write_after_a_takeover", "stale", &schema.name, &session);
    let child_token: u64 = line(&mut lines, "@LEASED ").await.parse().unwrap();
    // The owner here waits for the child's lease to expire, then owns the session.
    let server = SessionServer::start(
        ServerConfig::new(store.clone(), ScriptedAdapter::replying("mine"))
            .attach(session.clone())
            .ownership(Ownership::new("parent").lease_ttl(Duration::from_secs(5)).wait_for_lease(STEP)),
    )
    .await
    .unwrap();
    assert!(server.lease().unwrap().token > child_token);
    let before = store.latest_sequence(&session).await.unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    stdin.flush().await.unwrap();
    assert_eq!(line(&mut lines, "@RESULT ").await, "lease_lost", "the stale owner's append");
    assert_eq!(store.latest_sequence(&session).await.unwrap(), before, "the refused append wrote something");
    let status = tokio::time::timeout(STEP, child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    // The current owner writes as usual.
    let result = server.execute_run(RunInput::user("hi"), RunOptions::default(), STEP).await.unwrap();
    assert_eq!(result.output().content, "mine");
    server.shutdown().await.unwrap();
}

// ----- cross-process subscriptions ---------------------------------------------------------------

const WRITTEN: u64 = 300;

/// Child "writer": appends `WRITTEN` events (numbered in `data.i`) in batches of 1 to 7.
async fn child_writer(schema: &str, session: SessionId) {
    let store = open(schema).await;
    let mut i = 0;
    let mut size = 1;
    while i < WRITTEN {
        let batch: Vec<Event> = (i..(i + size).min(WRITTEN))
            .map(|n| Event::new(EventKind::MessageStreamed, session.clone()).with_data("i", n))
            .collect();
        i += batch.len() as u64;
        store.append_events(batch).await.unwrap();
        size = size % 7 + 1;
    }
    say("@DONE");
}

/// Takes `WRITTEN` events and checks they are the child's, exactly once, in order, gap-free.
async fn check_feed(what: &str, feed: impl futures::Stream<Item = asm_core::Result<StoredEvent>> + Unpin, after: u64) {
    let mut feed = feed;
    let got = tokio::time::timeout(STEP, (&mut feed).take(usize::try_from(WRITTEN).unwrap()).collect::<Vec<_>>())
        .await
        .unwrap_or_else(|_| panic!("{what}: not every event within {STEP:?}"));
    for (n, event) in got.into_iter().enumerate() {
        let event = event.unwrap();
        let n = n as u64;
        assert_eq!(event.sequence, Some(after + n + 1), "{what}: sequence of event {n}");
        assert_eq!(event.data["i"], n, "{what}: event {n}");
    }
    // Nothing more: a duplicate would show up right away.
    assert!(tokio::time::timeout(Duration::from_millis(300), feed.next()).await.is_err(), "{what}: an extra event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_deliver_another_process_appends_exactly_once_in_order() {
    if let Some((_, schema, session)) = child_env() {
        return child_writer(&schema, session).await;
    }
    let schema = TestSchema::new("subs");
    let store = open(&schema.name).await;
    let session = active_session(&store).await;
    let after = store.latest_sequence(&session).await.unwrap();
    let server = SessionServer::start(
        ServerConfig::new(store.clone(), ScriptedAdapter::new())
            .attach(session.clone())
            .ownership(Ownership::new("subscriber")),
    )
    .await
    .unwrap();
    let subscription = server.subscribe(SubscribeOptions::after(after)).await.unwrap();
    let stream = server.manager().stream_session_events(&session, StreamOptions::after(after));
    let (mut child, mut lines) = spawn_child(
        "subscriptions_deliver_another_process_appends_exactly_once_in_order",
        "writer",
        &schema.name,
        &session,
    );
    let (_, (), ()) = tokio::join!(
        line(&mut lines, "@DONE"),
        check_feed("subscription", subscription, after),
        check_feed("stream_session_events", stream, after),
    );
    assert!(tokio::time::timeout(STEP, child.wait()).await.unwrap().unwrap().success());
    server.shutdown().await.unwrap();
}

// ----- a server that loses its lease stops -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_loses_its_lease_stops() {
    if child_env().is_some() {
        return;
    }
    let schema = TestSchema::new("lost");
    let store = open(&schema.name).await;
    let session = active_session(&store).await;
    let server = SessionServer::start(
        ServerConfig::new(store.clone(), ScriptedAdapter::new().hanging())
            .attach(session.clone())
            .ownership(Ownership::new("victim").lease_ttl(Duration::from_millis(300))),
    )
    .await
    .unwrap();
    let mut feed = server.subscribe(SubscribeOptions::after(0)).await.unwrap();
    let run = server.submit_run(RunInput::user("hang"), RunOptions::default()).await.unwrap();
    tokio::time::timeout(STEP, async {
        loop {
            let event = feed.next().await.expect("a live feed").unwrap();
            if event.kind == EventKind::RunStarted && event.run_id.as_ref() == Some(&run) {
                break;
            }
        }
    })
    .await
    .expect("the run starts");
    // Another owner takes the session behind the server's back (as after a network partition).
    admin_sql(format!(
        "UPDATE \"{}\".asm_session_leases SET token = token + 1, owner = 'thief', \
         expires_at = clock_timestamp() + interval '1 hour'",
        schema.name
    ))
    .unwrap();
    // The next heartbeat finds the lease lost: the server stops, and its feed ends with it.
    tokio::time::timeout(STEP, async {
        while let Some(event) = feed.next().await {
            event.unwrap();
        }
    })
    .await
    .expect("the server stops after losing its lease");
    assert!(!server.is_running());
    let refused = server.submit_run(RunInput::user("more"), RunOptions::default()).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::InvalidOperation, "{refused}");
    // Its cancel of the run was a write under a stale token: refused, the run is the thief's now.
    assert_eq!(store.get_run(&run).await.unwrap().status, RunStatus::Running);
    let lease = store.leases().unwrap().current(&session).await.unwrap().unwrap();
    assert_eq!(lease.owner, "thief");
}

// ----- stores without leases -----------------------------------------------------------------------

#[tokio::test]
async fn ownership_is_refused_on_a_store_without_leases() {
    if child_env().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = asm_store_redb::RedbSessionStore::open(dir.path().join("s.redb")).unwrap();
    assert!(!store.capabilities().session_leases);
    let err = SessionServer::start(
        ServerConfig::new(store.clone(), ScriptedAdapter::new())
            .create(NewSession::new("a"))
            .ownership(Ownership::new("me")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::CapabilityNotSupported, "{err}");
    let sessions = store.list_sessions(&asm_ports::SessionQuery::new()).await.unwrap();
    assert!(sessions.items.is_empty(), "a refused start created a session");
}

// ----- the same logic on the memory store's in-process leases --------------------------------------

#[tokio::test]
async fn in_process_leases_refuse_a_second_owner_and_hand_over_on_shutdown() {
    if child_env().is_some() {
        return;
    }
    let store = InMemorySessionStore::new();
    assert!(store.capabilities().session_leases && !store.capabilities().multi_process);
    let first = SessionServer::start(
        ServerConfig::new(store.clone(), ScriptedAdapter::replying("one"))
            .create(NewSession::new("a"))
            .ownership(Ownership::new("first")),
    )
    .await
    .unwrap();
    let session = first.session_id().clone();
    let second = || {
        ServerConfig::new(store.clone(), ScriptedAdapter::replying("two"))
            .attach(session.clone())
            .ownership(Ownership::new("second"))
    };
    let refused = SessionServer::start(second()).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::SessionOwned);
    assert_eq!(refused.details().get("owner").and_then(|v| v.as_str()), Some("first"));
    assert_eq!(
        first.execute_run(RunInput::user("hi"), RunOptions::default(), STEP).await.unwrap().output().content,
        "one"
    );
    let old = first.lease().unwrap();
    first.shutdown().await.unwrap();
    let second = SessionServer::start(second()).await.expect("a released lease is free at once");
    assert!(second.lease().unwrap().token > old.token);
    // The first owner's token is stale now: its writes are refused, nothing is written.
    let before = store.latest_sequence(&session).await.unwrap();
    let stale = store
        .leases()
        .unwrap()
        .append_fenced(&old, vec![Event::new(EventKind::MessageSent, session.clone())], None)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), ErrorCode::LeaseLost);
    assert_eq!(store.latest_sequence(&session).await.unwrap(), before);
    assert_eq!(
        second.execute_run(RunInput::user("hi"), RunOptions::default(), STEP).await.unwrap().output().content,
        "two"
    );
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn in_process_takeover_after_expiry_recovers_pending_and_running_runs() {
    if child_env().is_some() {
        return;
    }
    let (store, session, ghost, running, pending) = left_by_a_dead_owner().await;

    let server = SessionServer::start(
        ServerConfig::new(store.clone(), ScriptedAdapter::replying("recovered"))
            .attach(session.clone())
            .ownership(Ownership::new("heir").lease_ttl(Duration::from_secs(5)).wait_for_lease(STEP)),
    )
    .await
    .unwrap();
    assert!(server.lease().unwrap().token > ghost.token);
    assert_eq!(store.get_run(&running.id).await.unwrap().status, RunStatus::Cancelled);
    assert_eq!(server.await_run(&pending.id, STEP).await.unwrap().output().content, "recovered");
    server.shutdown().await.unwrap();
}

/// What a dead owner leaves behind, in a new memory store: its lease (expiring after 100 ms), a
/// run left `running` and a `pending` one; the store, the session, that lease and the two runs.
async fn left_by_a_dead_owner() -> (InMemorySessionStore, SessionId, asm_ports::Lease, asm_core::Run, asm_core::Run) {
    let store = InMemorySessionStore::new();
    let manager = SessionManager::new(store.clone(), ScriptedAdapter::new());
    let session = manager.start_session(NewSession::new("a")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    let leases = store.leases().unwrap();
    let ghost = leases.acquire(&session.id, "ghost", Duration::from_millis(100)).await.unwrap();
    let running = manager.start_run(&session.id, RunInput::user("a"), RunOptions::default()).await.unwrap();
    let mut started = running.clone();
    started.transition(RunStatus::Running).unwrap();
    leases.flush_fenced(&ghost, asm_ports::ExecutionRecord::new(started)).await.unwrap();
    let pending = manager.start_run(&session.id, RunInput::user("b"), RunOptions::default()).await.unwrap();
    (store, session.id, ghost, running, pending)
}

async fn take_over(
    store: &InMemorySessionStore,
    session: &SessionId,
    policy: asm_runtime::RecoveryPolicy,
) -> SessionServer {
    SessionServer::start(
        ServerConfig::new(store.clone(), ScriptedAdapter::replying("recovered"))
            .attach(session.clone())
            .ownership(Ownership::new("heir").lease_ttl(Duration::from_secs(5)).wait_for_lease(STEP).recovery(policy)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn recovery_policy_fail_ends_left_runs_with_the_typed_error_code() {
    if child_env().is_some() {
        return;
    }
    let (store, session, _ghost, running, pending) = left_by_a_dead_owner().await;
    let server = take_over(&store, &session, asm_runtime::RecoveryPolicy::Fail(ErrorCode::LeaseLost)).await;
    let left = store.get_run(&running.id).await.unwrap();
    assert_eq!(left.status, RunStatus::Failed);
    let error = left.error.expect("the failed run records its error");
    assert_eq!(error.code(), ErrorCode::LeaseLost, "{error}");
    assert_eq!(error.details().get("reason").and_then(|v| v.as_str()), Some("owner_lost"));
    let events = store.get_events(&session, &asm_ports::EventQuery::new().run(running.id.clone())).await.unwrap();
    let terminal = events.last().unwrap();
    assert_eq!(terminal.kind, EventKind::RunFailed);
    assert_eq!(terminal.data.get("reason").and_then(|v| v.as_str()), Some("owner_lost"));
    assert_eq!(server.await_run(&pending.id, STEP).await.unwrap().output().content, "recovered");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn recovery_policy_requeue_runs_the_left_input_again_first() {
    if child_env().is_some() {
        return;
    }
    let (store, session, _ghost, running, pending) = left_by_a_dead_owner().await;
    let server = take_over(&store, &session, asm_runtime::RecoveryPolicy::Requeue).await;
    let left = store.get_run(&running.id).await.unwrap();
    assert_eq!(left.status, RunStatus::Cancelled);
    let runs = store.list_runs(&session, &asm_ports::RunQuery::new()).await.unwrap();
    let again: Vec<_> = runs
        .iter()
        .filter(|r| {
            r.metadata.get(asm_runtime::REQUEUED_FROM_KEY).and_then(|v| v.as_str()) == Some(running.id.as_str())
        })
        .collect();
    assert_eq!(again.len(), 1, "one new run for the left one: {runs:?}");
    assert_eq!(again[0].input, running.input);
    let again = again[0].id.clone();
    let first = server.await_run(&again, STEP).await.unwrap();
    assert_eq!(first.output().content, "recovered");
    let second = server.await_run(&pending.id, STEP).await.unwrap();
    assert_eq!(second.output().content, "recovered");
    // Requeued first: it started before the session's other pending run.
    let (a, b) = (store.get_run(&again).await.unwrap(), store.get_run(&pending.id).await.unwrap());
    assert!(a.started_at <= b.started_at, "the requeued run runs first");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn recovery_policy_default_cancels_left_runs() {
    if child_env().is_some() {
        return;
    }
    assert_eq!(Ownership::new("x").recovery_policy(), asm_runtime::RecoveryPolicy::Cancel);
    let (store, session, _ghost, running, pending) = left_by_a_dead_owner().await;
    let server = take_over(&store, &session, asm_runtime::RecoveryPolicy::default()).await;
    assert_eq!(store.get_run(&running.id).await.unwrap().status, RunStatus::Cancelled);
    assert_eq!(server.await_run(&pending.id, STEP).await.unwrap().output().content, "recovered");
    server.shutdown().await.unwrap();
}
