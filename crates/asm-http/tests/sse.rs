//! Server-Sent Events: framing, heartbeat, `Last-Event-ID` resume (also across a restart on
//! the durable redb store), errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::json;

use asm_core::{Event, EventKind, Session, SessionId};
use asm_http::ApiServer;
use asm_ports::{DynSessionStore, SessionStore, SessionStoreExt};
use asm_store_memory::InMemorySessionStore;
use asm_store_redb::RedbSessionStore;
use asm_testkit::ScriptedAdapter;
use common::{Running, SseClient, json};

const WAIT: Duration = Duration::from_secs(10);

async fn session_with_events(store: &DynSessionStore, n: usize) -> SessionId {
    let session = Session::new("sse").unwrap();
    store.save_session(&session).await.unwrap();
    append(store, &session.id, 0, n).await;
    session.id
}

async fn append(store: &DynSessionStore, session: &SessionId, from: usize, n: usize) {
    let events = (from..from + n)
        .map(|i| Event::new(EventKind::MessageStreamed, session.clone()).with_data("delta", format!("chunk {i}")))
        .collect();
    store.append_events(events).await.unwrap();
}

fn expect_event(frame: &common::Frame, sequence: u64) -> serde_json::Value {
    assert_eq!(frame.id.as_deref(), Some(sequence.to_string().as_str()), "{frame:?}");
    let event: serde_json::Value = serde_json::from_str(&frame.data).expect("data is the event JSON");
    assert_eq!(event["sequence"], sequence);
    assert_eq!(frame.event.as_deref(), event["kind"].as_str(), "event: is the kind");
    for key in ["session_id", "run_id", "sequence", "kind", "data", "timestamp"] {
        assert!(event.get(key).is_some(), "{key} missing from {event}");
    }
    event
}

#[tokio::test]
async fn frames_heartbeat_and_last_event_id() {
    let store: DynSessionStore = std::sync::Arc::new(InMemorySessionStore::new());
    let id = session_with_events(&store, 5).await;
    let server = Running::start(
        ApiServer::builder()
            .shared_store(store.clone())
            .adapter("scripted", ScriptedAdapter::new())
            .heartbeat(Duration::from_millis(100)),
    )
    .await;
    let path = format!("/v1/sessions/{id}/events/stream");

    let mut client = SseClient::connect(server.addr, &path, None).await;
    assert_eq!(client.status, 200);
    assert!(client.content_type.starts_with("text/event-stream"), "{}", client.content_type);
    for sequence in 1..=5 {
        let event = expect_event(&client.next_event(WAIT).await, sequence);
        assert_eq!(event["data"]["delta"], format!("chunk {}", sequence - 1));
    }
    // Idle: a comment heartbeat, then live events as they are appended.
    let heartbeat = tokio::time::timeout(WAIT, async {
        loop {
            let frame = client.next_frame().await.expect("stream open");
            if let Some(comment) = frame.comment {
                return comment;
            }
        }
    })
    .await
    .expect("a heartbeat within 10 s");
    assert_eq!(heartbeat, "heartbeat");
    append(&store, &id, 5, 2).await;
    expect_event(&client.next_event(WAIT).await, 6);
    expect_event(&client.next_event(WAIT).await, 7);
    drop(client);

    // `after` starts strictly after; `Last-Event-ID` wins over it (EventSource reconnects).
    let mut after = SseClient::connect(server.addr, &format!("{path}?after=4"), None).await;
    expect_event(&after.next_event(WAIT).await, 5);
    let mut resumed = SseClient::connect(server.addr, &format!("{path}?after=0"), Some(6)).await;
    expect_event(&resumed.next_event(WAIT).await, 7);
    append(&store, &id, 7, 1).await;
    expect_event(&resumed.next_event(WAIT).await, 8);

    // Filters by kind keep the sequences as ids.
    let mut filtered = SseClient::connect(server.addr, &format!("{path}?kind=message_streamed&after=7"), None).await;
    expect_event(&filtered.next_event(WAIT).await, 8);

    // Errors: unknown session 404, bad Last-Event-ID 400, both as JSON before any stream.
    let missing =
        SseClient::connect(server.addr, &format!("/v1/sessions/{}/events/stream", SessionId::new()), None).await;
    assert_eq!(missing.status, 404);
    let bad = common::send(server.addr, {
        let mut req = common::request("GET", server.addr, &path, None);
        req.headers_mut().insert("last-event-id", "abc".parse().unwrap());
        req
    })
    .await;
    assert_eq!(bad.status(), 400);
    // Stopping the server ends the open streams (serve returns, see `stop`).
    server.stop().await;
    let ended = tokio::time::timeout(WAIT, async { while resumed.next_frame().await.is_some() {} }).await;
    assert!(ended.is_ok(), "an open event stream ends when the server stops");
}

#[tokio::test]
async fn resume_across_a_restart_on_redb_is_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessions.redb");
    let builder = |store: RedbSessionStore| {
        ApiServer::builder().store(store).adapter("scripted", ScriptedAdapter::replying("resumed after a restart"))
    };

    let server = Running::start(builder(RedbSessionStore::open(&file).unwrap())).await;
    let (status, session) = json(server.addr, "POST", "/v1/sessions", Some(json!({"agent_id": "durable"}))).await;
    assert_eq!(status, 201);
    let id = session["id"].as_str().unwrap().to_owned();
    let (status, accepted) =
        json(server.addr, "POST", &format!("/v1/sessions/{id}/runs"), Some(json!({"input": "first"}))).await;
    assert_eq!(status, 202);
    common::await_terminal(server.addr, &id, accepted["run_id"].as_str().unwrap()).await;
    let path = format!("/v1/sessions/{id}/events/stream");
    let mut client = SseClient::connect(server.addr, &path, None).await;
    let mut last = 0;
    let mut seen = Vec::new();
    for sequence in 1..=4 {
        expect_event(&client.next_event(WAIT).await, sequence);
        seen.push(sequence);
        last = sequence;
    }
    server.stop().await;
    drop(client);

    // A new process-equivalent: the store reopened from the file, a new server.
    let server = Running::start(builder(RedbSessionStore::open(&file).unwrap())).await;
    let mut client = SseClient::connect(server.addr, &path, Some(last)).await;
    let (status, accepted) =
        json(server.addr, "POST", &format!("/v1/sessions/{id}/runs"), Some(json!({"input": "second"}))).await;
    assert_eq!(status, 202, "{accepted}");
    let second_run = accepted["run_id"].as_str().unwrap().to_owned();
    loop {
        let frame = client.next_event(WAIT).await;
        let next = last + 1;
        let event = expect_event(&frame, next);
        seen.push(next);
        last = next;
        if event["kind"] == "run_completed" && event["run_id"] == second_run.as_str() {
            break;
        }
    }
    let (_, all) = json(server.addr, "GET", &format!("/v1/sessions/{id}/events?limit=1000"), None).await;
    let stored: Vec<u64> = all.as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert_eq!(seen, stored, "every stored event exactly once, in order, across the restart");
    server.stop().await;
}
