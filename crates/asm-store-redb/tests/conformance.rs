//! The store conformance suite of `asm-testkit`, run against [`RedbSessionStore`] on temp dirs.
//!
//! One test per check, each on a fresh store in its own directory, so a failure names the
//! broken rule; plus the whole suite on one shared store (checks must not depend on an empty
//! store), the same after a reopen, and the property tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use asm_ports::{DynSessionStore, SessionStore};
use asm_store_redb::{Durability, RedbOptions, RedbSessionStore};
use asm_testkit::conformance;
use tempfile::TempDir;

/// A fresh store in a fresh directory; the directory lives as long as the returned guard.
fn store() -> (DynSessionStore, TempDir) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let store = RedbSessionStore::open(dir.path().join("store.redb")).expect("open a new store");
    (Arc::new(store), dir)
}

asm_testkit::store_conformance_tests!(store);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_long_poll_follows_concurrent_writers() {
    let (store, _dir) = store();
    conformance::check_long_poll_follows_concurrent_writers(store).await;
}

/// The whole suite on one store that other checks have already filled, then again on the same
/// file reopened (everything must have been persisted and be readable by a new handle).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_on_one_shared_store_and_after_reopen() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("shared.redb");
    let shared: DynSessionStore = Arc::new(RedbSessionStore::open(&path).expect("open"));
    conformance::run_all(Arc::clone(&shared)).await;
    // And again: nothing may depend on the store being empty.
    conformance::run_all(Arc::clone(&shared)).await;
    drop(shared);
    let reopened: DynSessionStore = Arc::new(RedbSessionStore::open(&path).expect("reopen"));
    conformance::run_all(reopened).await;
}

/// The suite with [`Durability::Eventual`] (only the moment of the fsync differs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_with_eventual_durability() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let options = RedbOptions::new().durability(Durability::Eventual);
    let store = RedbSessionStore::open_with(dir.path().join("eventual.redb"), options).expect("open");
    assert!(!store.capabilities().durable);
    conformance::run_all(Arc::new(store)).await;
}

/// Property-test stores: each case gets a new file in one directory that outlives them all.
fn prop_stores() -> (impl Fn() -> DynSessionStore, TempDir) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let root = dir.path().to_path_buf();
    let counter = AtomicUsize::new(0);
    let make = move || -> DynSessionStore {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        Arc::new(RedbSessionStore::open(root.join(format!("case-{n}.redb"))).expect("open a property-test store"))
    };
    (make, dir)
}

#[test]
fn prop_cursor_reads_match_model() {
    let (make, _dir) = prop_stores();
    conformance::prop_cursor_reads_match_model(make);
}

#[test]
fn prop_sequencing_matches_model() {
    let (make, _dir) = prop_stores();
    conformance::prop_sequencing_matches_model(make);
}

#[test]
fn capabilities() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let caps = RedbSessionStore::open(dir.path().join("caps.redb")).expect("open").capabilities();
    assert!(caps.long_poll);
    assert!(caps.durable);
    assert!(!caps.multi_process);
}

#[test]
fn handles_are_cheap_send_sync_and_debug() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    assert_send_sync::<RedbSessionStore>();
    assert_eq!(std::mem::size_of::<RedbSessionStore>(), std::mem::size_of::<usize>());
    let dir = tempfile::tempdir().expect("create a temp dir");
    let store = RedbSessionStore::open(dir.path().join("debug.redb")).expect("open");
    let shown = format!("{store:?}");
    assert!(shown.starts_with("RedbSessionStore"), "{shown}");
    assert!(shown.contains("debug.redb"), "{shown}");
}
