//! The store conformance suite of `asm-testkit`, run against [`SledSessionStore`].
//!
//! One test per check, each on a fresh store in its own temporary directory, so a failure names
//! the broken rule; plus the whole suite on one shared store (twice: checks must not depend on
//! an empty store) and the property tests (a fresh database per case).

use std::sync::Arc;

use asm_ports::{DynSessionStore, SessionStore};
use asm_store_sled::{Durability, SledOptions, SledSessionStore};
use asm_testkit::conformance;
use tempfile::TempDir;

/// A store in a fresh directory; the directory lives as long as the returned guard.
fn store_with(options: SledOptions) -> (DynSessionStore, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SledSessionStore::open_with(dir.path().join("db"), options).expect("open the sled store");
    (Arc::new(store), dir)
}

fn store() -> (DynSessionStore, TempDir) {
    store_with(SledOptions::new())
}

asm_testkit::store_conformance_tests!(store);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_concurrent_appends_eventual() {
    let (store, _dir) = store_with(SledOptions::new().durability(Durability::Eventual));
    conformance::check_concurrent_appends(store).await;
}

/// The whole suite on one store that other checks have already filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_on_one_shared_store() {
    let (shared, _dir) = store();
    conformance::run_all(Arc::clone(&shared)).await;
    // And again: nothing may depend on the store being empty.
    conformance::run_all(shared).await;
}

/// The whole suite with `Durability::Eventual` (same semantics, acknowledged before the flush).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_eventual() {
    let (store, _dir) = store_with(SledOptions::new().durability(Durability::Eventual));
    conformance::run_all(store).await;
}

/// The property tests open a fresh database per case (with `Durability::Eventual`, to keep
/// hundreds of cases fast). The suite takes a `Fn() -> DynSessionStore`, so the temporary
/// directories are collected here and removed when the test ends.
fn prop_stores() -> (impl Fn() -> DynSessionStore, Arc<std::sync::Mutex<Vec<TempDir>>>) {
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&dirs);
    let make = move || {
        let (store, dir) = store_with(SledOptions::new().durability(Durability::Eventual));
        keep.lock().expect("dirs lock").push(dir);
        store
    };
    (make, dirs)
}

#[test]
fn prop_cursor_reads_match_model() {
    let (make, _dirs) = prop_stores();
    conformance::prop_cursor_reads_match_model(make);
}

#[test]
fn prop_sequencing_matches_model() {
    let (make, _dirs) = prop_stores();
    conformance::prop_sequencing_matches_model(make);
}

#[test]
fn capabilities_follow_the_durability_option() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let immediate = SledSessionStore::open(dir.path().join("a")).expect("open");
    let caps = immediate.capabilities();
    assert!(caps.long_poll);
    assert!(caps.durable, "Immediate is durable against process crashes");
    assert!(!caps.multi_process);
    let eventual =
        SledSessionStore::open_with(dir.path().join("b"), SledOptions::new().durability(Durability::Eventual))
            .expect("open");
    assert!(!eventual.capabilities().durable);
    assert_eq!(SledOptions::default().durability, Durability::Immediate);
}

#[test]
fn handles_are_cheap_send_sync_and_debug() {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    assert_traits::<SledSessionStore>();
    assert_eq!(std::mem::size_of::<SledSessionStore>(), std::mem::size_of::<usize>());
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SledSessionStore::open(dir.path().join("db")).expect("open");
    assert!(format!("{store:?}").starts_with("SledSessionStore"));
}
