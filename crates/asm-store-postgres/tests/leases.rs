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
