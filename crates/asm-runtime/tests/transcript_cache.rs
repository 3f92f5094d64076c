//! The transcript cache: incremental updates give exactly a full rebuild, also across store
//! errors; continuation runs of a server use it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use proptest::prelude::*;

use asm_core::{
    Error, ErrorCode, Event, EventKind, Result, RunInput, Session, SessionId, StoredEvent, TranscriptBuilder,
    TranscriptOptions,
};
use asm_ports::{EventQuery, Layered, SessionStore, StoreLayer};
use asm_runtime::{Continuation, NewSession, RunOptions, ServerConfig, SessionServer, TranscriptCache};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;

use common::{WAIT, all_events};

/// A layer whose `get_events` fails while `failures` is above zero.
#[derive(Debug, Clone)]
struct FailReads {
    failures: Arc<AtomicUsize>,
}

#[async_trait]
impl StoreLayer for FailReads {
    async fn get_events(&self, inner: &dyn SessionStore, s: &SessionId, q: &EventQuery) -> Result<Vec<StoredEvent>> {
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(Error::new(ErrorCode::StorageReadFailed, "injected read failure"));
        }
        inner.get_events(s, q).await
    }
}

/// The memory store, whose `get_events` fails while `failures` is above zero.
fn flaky_store(inner: &InMemorySessionStore, failures: &Arc<AtomicUsize>) -> Layered<InMemorySessionStore, FailReads> {
    Layered::new(inner.clone(), FailReads { failures: failures.clone() })
}

#[derive(Clone, Debug)]
enum Step {
    Append(Vec<(u8, u8)>),
    Read { failures: usize },
    Invalidate,
}

fn event_of(session: &SessionId, kind: u8, text: u8) -> Event {
    let texts = ["", "a", "bc", "def ", "ghij", "the quick brown fox"];
    let text = texts[text as usize % texts.len()];
    let call = format!("call_{}", text.len());
    match kind % 8 {
        0 => Event::new(EventKind::MessageSent, session.clone()).with_data("role", "user").with_data("content", text),
        1 | 2 => Event::new(EventKind::MessageStreamed, session.clone()).with_data("delta", text),
        3 => Event::new(EventKind::MessageReceived, session.clone())
            .with_data("role", "assistant")
            .with_data("content", text),
        4 => Event::new(EventKind::ToolCallStarted, session.clone())
            .with_data("tool_call_id", call)
            .with_data("tool_name", "bash")
            .with_data("tool_input", serde_json::json!({"cmd": text})),
        5 => Event::new(EventKind::ToolCallCompleted, session.clone())
            .with_data("tool_call_id", call)
            .with_data("tool_name", "bash")
            .with_data("tool_output", text),
        6 => Event::new(EventKind::ToolApprovalRequested, session.clone()).with_data("tool_name", "bash"),
        _ => Event::new(EventKind::TurnCompleted, session.clone()),
    }
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec((0u8..8, 0u8..6), 0..12).prop_map(Step::Append),
        4 => (0usize..3).prop_map(|failures| Step::Read { failures }),
        1 => Just(Step::Invalidate),
    ]
}

fn options() -> impl Strategy<Value = TranscriptOptions> {
    (proptest::option::of(1usize..6), proptest::option::of(1usize..30)).prop_map(|(messages, chars)| {
        TranscriptOptions { max_messages: messages, max_chars: chars, ..TranscriptOptions::default() }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Whatever the appends, reads, store failures and invalidations, a successful read equals a
    /// full rebuild of the stored log.
    #[test]
    fn the_cached_transcript_equals_a_full_rebuild(steps in proptest::collection::vec(step(), 1..24), options in options()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let inner = InMemorySessionStore::new();
            let failures = Arc::new(AtomicUsize::new(0));
            let store = flaky_store(&inner, &failures);
            let session = Session::new("agent").unwrap();
            store.save_session(&session).await.unwrap();
            let cache = TranscriptCache::new();
            let builder = TranscriptBuilder::new(options);
            for step in steps {
                match step {
                    Step::Append(events) => {
                        if !events.is_empty() {
                            let batch = events.iter().map(|&(k, t)| event_of(&session.id, k, t)).collect();
                            inner.append(batch, None).await.unwrap();
                        }
                    }
                    Step::Invalidate => cache.invalidate(),
                    Step::Read { failures: injected } => {
                        failures.store(injected, Ordering::SeqCst);
                        let got = cache.transcript(&store, &session.id, options).await;
                        failures.store(0, Ordering::SeqCst);
                        let full = builder.from_events(&session.id, &all_events(&inner, &session.id).await);
                        match got {
                            Ok(transcript) => prop_assert_eq!(transcript, full),
                            // Only when the rebuild after a failed update failed too.
                            Err(error) => {
                                prop_assert_eq!(error.code(), ErrorCode::StorageReadFailed);
                                prop_assert!(injected >= 1);
                            }
                        }
                    }
                }
            }
            let last = cache.transcript(&store, &session.id, options).await.unwrap();
            prop_assert_eq!(last, builder.from_events(&session.id, &all_events(&inner, &session.id).await));
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_store_error_rebuilds_and_other_keys_rebuild() {
    let inner = InMemorySessionStore::new();
    let failures = Arc::new(AtomicUsize::new(0));
    let store = flaky_store(&inner, &failures);
    let session = Session::new("agent").unwrap();
    store.save_session(&session).await.unwrap();
    inner.append(vec![event_of(&session.id, 0, 2)], None).await.unwrap();
    let cache = TranscriptCache::new();
    let options = TranscriptOptions::default();
    cache.transcript(&store, &session.id, options).await.unwrap();
    cache.transcript(&store, &session.id, options).await.unwrap();
    assert_eq!((cache.stats().rebuilds, cache.stats().updates), (1, 1));

    failures.store(1, Ordering::SeqCst);
    inner.append(vec![event_of(&session.id, 3, 4)], None).await.unwrap();
    let transcript = cache.transcript(&store, &session.id, options).await.unwrap();
    assert_eq!(transcript.messages.len(), 2);
    let stats = cache.stats();
    assert_eq!((stats.rebuilds, stats.store_errors), (2, 1));

    failures.store(2, Ordering::SeqCst);
    assert_eq!(cache.transcript(&store, &session.id, options).await.unwrap_err().code(), ErrorCode::StorageReadFailed);
    assert_eq!(cache.transcript(&store, &session.id, options).await.unwrap().messages.len(), 2);

    let bounded = TranscriptOptions::default().max_messages(1);
    assert_eq!(cache.transcript(&store, &session.id, bounded).await.unwrap().messages.len(), 1);
    assert_eq!(cache.stats().rebuilds, 5, "other options rebuild");
}

#[tokio::test]
async fn continuation_runs_of_a_server_use_the_cache() {
    let store = InMemorySessionStore::new();
    let adapter = ScriptedAdapter::replying("an answer");
    let server =
        SessionServer::start(ServerConfig::new(store.clone(), adapter.clone()).create(NewSession::new("agent")))
            .await
            .unwrap();
    let mut run_ids = Vec::new();
    for i in 0..3 {
        let result = server
            .execute_run(
                RunInput::user(format!("question {i}")),
                RunOptions::new().continuation(Continuation::Replay),
                WAIT,
            )
            .await
            .unwrap();
        run_ids.push(result.run.id);
    }
    let stats = server.transcript_cache().stats();
    assert_eq!((stats.rebuilds, stats.updates), (1, 2));

    // What each run was given is the full rebuild of the log before its run_started.
    let events = all_events(&store, server.session_id()).await;
    let builder = TranscriptBuilder::new(TranscriptOptions::default());
    for (request, run_id) in adapter.requests().iter().zip(&run_ids) {
        let started = events
            .iter()
            .find(|e| e.run_id.as_ref() == Some(run_id) && e.kind == EventKind::RunStarted)
            .and_then(|e| e.sequence)
            .unwrap();
        let before: Vec<StoredEvent> = events.iter().filter(|e| e.sequence.unwrap() < started).cloned().collect();
        assert_eq!(request.transcript.as_ref(), Some(&builder.from_events(server.session_id(), &before)));
    }
    assert_eq!(adapter.requests()[2].transcript.as_ref().unwrap().messages.len(), 4);
}
