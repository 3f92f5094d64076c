//! Session leases and fenced writes on the real server (one schema per test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use asm_core::{ErrorCode, Event, EventKind, Run, RunInput, Session, SessionId};
use asm_ports::{ExecutionRecord, SessionStore};
use common::TestSchema;

async fn session(store: &impl SessionStore) -> Session {
    let session = Session::new("lease-agent").unwrap();
    store.save_session(&session).await.unwrap();
    session
}

#[tokio::test]
async fn one_owner_at_a_time_and_stale_tokens_are_refused() {
    let schema = TestSchema::new("leases");
    let store = schema.store().await;
    assert!(store.capabilities().session_leases);
    let leases = store.leases().expect("the postgres store grants leases");
    let s = session(&store).await;

    let a = leases.acquire(&s.id, "owner-a", Duration::from_secs(30)).await.unwrap();
    assert_eq!(a.owner, "owner-a");
    let refused = leases.acquire(&s.id, "owner-b", Duration::from_secs(30)).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::SessionOwned, "{refused}");
    assert_eq!(refused.details().get("owner").and_then(|v| v.as_str()), Some("owner-a"));
    // The same owner name is refused too: a lease is held, whoever asks.
    assert_eq!(
        leases.acquire(&s.id, "owner-a", Duration::from_secs(30)).await.unwrap_err().code(),
        ErrorCode::SessionOwned
    );

    let written = leases.append_fenced(&a, vec![Event::new(EventKind::MessageSent, s.id.clone())], None).await.unwrap();
    assert_eq!(written[0].sequence, Some(1));
    let renewed = leases.renew(&a, Duration::from_secs(30)).await.unwrap();
    assert_eq!(renewed.token, a.token);

    leases.release(&a).await.unwrap();
    let b = leases.acquire(&s.id, "owner-b", Duration::from_secs(30)).await.unwrap();
    assert!(b.token > a.token, "tokens grow: {} then {}", a.token, b.token);
    assert_eq!(leases.current(&s.id).await.unwrap().unwrap().owner, "owner-b");

    // The stale owner: every fenced write and the heartbeat are refused, nothing is written.
    let stale =
        leases.append_fenced(&a, vec![Event::new(EventKind::MessageSent, s.id.clone())], None).await.unwrap_err();
    assert_eq!(stale.code(), ErrorCode::LeaseLost, "{stale}");
    assert_eq!(stale.details().get("current_owner").and_then(|v| v.as_str()), Some("owner-b"));
    let run = Run::new(s.id.clone(), RunInput::user("hi"));
    let record = ExecutionRecord::new(run.clone()).events(vec![Event::new(EventKind::RunStarted, s.id.clone())]);
    assert_eq!(leases.flush_fenced(&a, record.clone()).await.unwrap_err().code(), ErrorCode::LeaseLost);
    assert_eq!(leases.renew(&a, Duration::from_secs(1)).await.unwrap_err().code(), ErrorCode::LeaseLost);
    assert_eq!(store.latest_sequence(&s.id).await.unwrap(), 1, "a refused write wrote events");
    assert_eq!(
        store.get_run(&run.id).await.unwrap_err().code(),
        ErrorCode::RunNotFound,
        "a refused flush wrote the run"
    );
    // The current owner writes.
    leases.flush_fenced(&b, record).await.unwrap();
    assert_eq!(store.latest_sequence(&s.id).await.unwrap(), 2);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let schema = TestSchema::new("expiry");
    let store = schema.store().await;
    let leases = store.leases().unwrap();
    let s = session(&store).await;
    let a = leases.acquire(&s.id, "owner-a", Duration::from_millis(200)).await.unwrap();
    // Bounded: the takeover must happen within 5 s of a 200 ms lease.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let b = loop {
        match leases.acquire(&s.id, "owner-b", Duration::from_secs(30)).await {
            Ok(b) => break b,
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::SessionOwned, "{e}");
                assert!(tokio::time::Instant::now() < deadline, "the expired lease was not taken over within 5 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(b.token > a.token);
    assert_eq!(leases.renew(&a, Duration::from_secs(1)).await.unwrap_err().code(), ErrorCode::LeaseLost);
}

#[tokio::test]
async fn unknown_sessions_are_not_found() {
    let schema = TestSchema::new("nolease");
    let store = schema.store().await;
    let leases = store.leases().unwrap();
    let id = SessionId::new();
    assert_eq!(leases.acquire(&id, "o", Duration::from_secs(1)).await.unwrap_err().code(), ErrorCode::SessionNotFound);
    assert!(leases.current(&id).await.unwrap().is_none());
}

/// Fenced session saves: the current owner saves, a stale owner is refused and changes nothing.
#[tokio::test]
async fn fenced_session_saves_refuse_a_stale_owner() {
    let schema = TestSchema::new("fencedsave");
    let store = schema.store().await;
    let leases = store.leases().unwrap();
    let mut s = session(&store).await;
    let a = leases.acquire(&s.id, "owner-a", Duration::from_secs(30)).await.unwrap();
    s.tags = vec!["by-a".into()];
    leases.save_session_fenced(&a, &s).await.unwrap();
    assert_eq!(store.get_session(&s.id).await.unwrap().tags, vec!["by-a".to_owned()]);

    leases.release(&a).await.unwrap();
    let b = leases.acquire(&s.id, "owner-b", Duration::from_secs(30)).await.unwrap();
    let mut stale = s.clone();
    stale.tags = vec!["by-stale-a".into()];
    let refused = leases.save_session_fenced(&a, &stale).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::LeaseLost, "{refused}");
    assert_eq!(refused.details().get("current_owner").and_then(|v| v.as_str()), Some("owner-b"));
    assert_eq!(store.get_session(&s.id).await.unwrap().tags, vec!["by-a".to_owned()], "a refused save wrote");
    leases.save_session_fenced(&b, &stale).await.unwrap();

    // A lease of another session does not fence this one.
    let other = session(&store).await;
    assert_eq!(leases.save_session_fenced(&b, &other).await.unwrap_err().code(), ErrorCode::SessionMismatch);
}

/// Fenced writes share the group-commit writer with every other write: many owners appending
/// at once, one of them stale, a flush among them. The stale owner's writes are refused (and
/// write nothing); every other write lands, in order, with no gap.
#[tokio::test]
async fn fenced_writes_are_group_committed_and_a_stale_one_is_refused_alone() {
    let schema = TestSchema::new("fencedgroup");
    let store = schema.store().await;
    let leases = store.leases().unwrap();
    let mut owned = Vec::new();
    for i in 0..16 {
        let s = session(&store).await;
        let lease = leases.acquire(&s.id, &format!("owner-{i}"), Duration::from_secs(30)).await.unwrap();
        owned.push((s, lease));
    }
    // Session 0 is taken over: its first lease is stale.
    let (s0, stale) = owned[0].clone();
    leases.release(&stale).await.unwrap();
    let current = leases.acquire(&s0.id, "owner-new", Duration::from_secs(30)).await.unwrap();
    let unfenced = session(&store).await;

    const ROUNDS: u64 = 20;
    let mut tasks = Vec::new();
    for (i, (s, lease)) in owned.iter().cloned().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let leases = store.leases().unwrap();
            let mut refused = 0;
            for _ in 0..ROUNDS {
                match leases.append_fenced(&lease, vec![Event::new(EventKind::MessageSent, s.id.clone())], None).await {
                    Ok(_) => {}
                    Err(e) if i == 0 && e.code() == ErrorCode::LeaseLost => refused += 1,
                    Err(e) => panic!("fenced append of session {i}: {e}"),
                }
            }
            refused
        }));
    }
    {
        let store = store.clone();
        let id = unfenced.id.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                store.append(vec![Event::new(EventKind::MessageSent, id.clone())], None).await.unwrap();
            }
            0
        }));
    }
    // A fenced flush of the current owner of session 0, beside the stale owner's appends.
    let run = Run::new(s0.id.clone(), RunInput::user("hi"));
    let record = ExecutionRecord::new(run.clone()).events(vec![Event::new(EventKind::RunStarted, s0.id.clone())]);
    leases.flush_fenced(&current, record).await.unwrap();
    let mut refused = 0;
    for task in tasks {
        refused += task.await.unwrap();
    }
    assert_eq!(refused, ROUNDS, "every append of the stale owner is refused");
    assert_eq!(store.latest_sequence(&s0.id).await.unwrap(), 1, "only the current owner's flush is written");
    assert_eq!(store.get_run(&run.id).await.unwrap().id, run.id);
    for (s, _) in &owned[1..] {
        let events = store.get_events(&s.id, &asm_ports::EventQuery::new()).await.unwrap();
        let sequences: Vec<u64> = events.iter().filter_map(|e| e.sequence).collect();
        assert_eq!(sequences, (1..=ROUNDS).collect::<Vec<_>>(), "session {}", s.id);
    }
    assert_eq!(store.latest_sequence(&unfenced.id).await.unwrap(), ROUNDS);
}
