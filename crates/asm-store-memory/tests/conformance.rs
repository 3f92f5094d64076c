//! The store conformance suite of `asm-testkit`, run against [`InMemorySessionStore`].
//!
//! One test per check, each on a fresh store, so a failure names the broken rule; plus the whole
//! suite on one shared store (checks must not depend on an empty store) and the property tests.

use std::sync::Arc;

use asm_ports::DynSessionStore;
use asm_store_memory::InMemorySessionStore;
use asm_testkit::conformance;

fn store() -> DynSessionStore {
    Arc::new(InMemorySessionStore::new())
}

/// A fresh store for each generated test (nothing to keep alive).
fn fresh() -> (DynSessionStore, ()) {
    (store(), ())
}

asm_testkit::store_conformance_tests!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_long_poll_follows_concurrent_writers() {
    conformance::check_long_poll_follows_concurrent_writers(store()).await;
}

/// The whole suite on one store that other checks have already filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_on_one_shared_store() {
    let shared = store();
    conformance::run_all(Arc::clone(&shared)).await;
    // And again: nothing may depend on the store being empty.
    conformance::run_all(shared).await;
}

#[test]
fn prop_cursor_reads_match_model() {
    conformance::prop_cursor_reads_match_model(store);
}

#[test]
fn prop_sequencing_matches_model() {
    conformance::prop_sequencing_matches_model(store);
}

#[test]
fn capabilities() {
    let caps = asm_ports::SessionStore::capabilities(&InMemorySessionStore::new());
    assert!(caps.long_poll);
    assert!(!caps.durable);
    assert!(!caps.multi_process);
}

#[test]
fn handles_are_cheap_send_sync_and_debug() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug + Default + 'static>() {}
    assert_send_sync::<InMemorySessionStore>();
    assert_eq!(std::mem::size_of::<InMemorySessionStore>(), std::mem::size_of::<usize>());
    let store = InMemorySessionStore::new();
    assert!(format!("{store:?}").starts_with("InMemorySessionStore"));
}

mod query {
    //! The query and maintenance section of the suite, one test per check.
    use asm_store_memory::InMemorySessionStore;
    use asm_testkit::query_conformance;

    macro_rules! query_checks {
        ($($name:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    query_conformance::$name(&InMemorySessionStore::new()).await;
                }
            )*
        };
    }

    asm_testkit::for_each_query_check!(query_checks);

    /// The whole section twice on one store: checks do not depend on an empty store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_all_on_one_shared_store() {
        let store = InMemorySessionStore::new();
        query_conformance::run_all(&store).await;
        query_conformance::run_all(&store).await;
    }
}
