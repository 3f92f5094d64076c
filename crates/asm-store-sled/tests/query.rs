//! The query and maintenance section of the `asm-testkit` suite, run against [`SledSessionStore`]
//! on temp dirs: one test per check on a fresh store, the whole section twice on one store,
//! and once more after a reopen (pruned logs and soft deletes must survive it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use asm_core::{Event, EventKind, Session};
use asm_ports::{EventQuery, MaintenanceStore, SessionStore, SessionStoreExt};
use asm_store_sled::SledSessionStore;
use asm_testkit::query_conformance;

macro_rules! query_checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = tempfile::tempdir().expect("create a temp dir");
                let store = SledSessionStore::open(dir.path().join("db")).expect("open a new store");
                query_conformance::$name(&store).await;
            }
        )*
    };
}

asm_testkit::for_each_query_check!(query_checks);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_shared_store_and_after_reopen() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("db");
    let store = SledSessionStore::open(&path).expect("open");
    query_conformance::run_all(&store).await;
    query_conformance::run_all(&store).await;
    drop(store);
    let reopened = SledSessionStore::open(&path).expect("reopen");
    query_conformance::run_all(&reopened).await;
    assert!(reopened.health_check().await.unwrap().is_healthy());
}

/// A pruned log keeps its gaps and its counter across a reopen, including events that were
/// still in the commit-order log (not yet compacted) when the prune came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_gaps_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("db");
    let store = SledSessionStore::open(&path).expect("open");
    let session = Session::new("prune-reopen").unwrap();
    store.save_session(&session).await.unwrap();
    let events = (0..6)
        .map(|i| {
            let kind = if i % 2 == 0 { EventKind::MessageStreamed } else { EventKind::MessageReceived };
            Event::new(kind, session.id.clone())
        })
        .collect();
    store.append_events(events).await.unwrap();
    assert_eq!(
        store.prune_events(&session.id, &[1, 3, 5, 6]).await.unwrap(),
        4,
        "6 is not a cheap kind but unprotected"
    );
    drop(store);
    let store = SledSessionStore::open(&path).expect("reopen");
    let left = store.get_events(&session.id, &EventQuery::new()).await.unwrap();
    assert_eq!(left.iter().filter_map(|e| e.sequence).collect::<Vec<_>>(), vec![2, 4]);
    assert_eq!(store.latest_sequence(&session.id).await.unwrap(), 6);
    let next = store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await.unwrap();
    assert_eq!(next.sequence, Some(7));
    assert!(store.health_check().await.unwrap().is_healthy());
}
