//! The store conformance suite of `asm-testkit`, run against [`PostgresSessionStore`].
//!
//! One test per check, each in a schema of its own (so the tests run in parallel and clean up
//! after themselves), plus the whole suite on one shared store twice (checks must not depend
//! on an empty store) and the property tests. The server is `ASM_TEST_POSTGRES_URL`; without
//! one reachable the tests fail, they never skip.

mod common;

use std::sync::Arc;

use asm_ports::{DynSessionStore, SessionStore};
use asm_testkit::conformance;
use common::TestSchema;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let schema = TestSchema::new(stringify!($name));
                let store = schema.store().await;
                conformance::$name(&store).await;
            }
        )*
    };
}

asm_testkit::for_each_store_check!(checks);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_concurrent_appends() {
    let schema = TestSchema::new("concurrent");
    let store: DynSessionStore = Arc::new(schema.store().await);
    conformance::check_concurrent_appends(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_long_poll_follows_concurrent_writers() {
    let schema = TestSchema::new("follow");
    let store: DynSessionStore = Arc::new(schema.store().await);
    conformance::check_long_poll_follows_concurrent_writers(store).await;
}

/// The whole suite on one store that other checks have already filled, then again through a
/// second store on the same schema (another pool, another LISTEN connection: what another
/// process sees).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_on_one_shared_store_and_through_a_second_store() {
    let schema = TestSchema::new("run_all");
    let shared: DynSessionStore = Arc::new(schema.store().await);
    conformance::run_all(Arc::clone(&shared)).await;
    let second: DynSessionStore = Arc::new(schema.store().await);
    conformance::run_all(second).await;
}

/// Runs a property test with `make` returning a store opened on a runtime of its own (the
/// property tests run their own current-thread runtime and call `make` inside it).
fn property(tag: &str, test: impl FnOnce(&dyn Fn() -> DynSessionStore)) {
    let schema = TestSchema::new(tag);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the store");
    let store: DynSessionStore = Arc::new(runtime.block_on(schema.store()));
    test(&|| Arc::clone(&store));
    drop(store);
    drop(runtime);
}

#[test]
fn prop_cursor_reads_match_model() {
    property("prop_cursor", |make| conformance::prop_cursor_reads_match_model(make));
}

#[test]
fn prop_sequencing_matches_model() {
    property("prop_sequencing", |make| conformance::prop_sequencing_matches_model(make));
}

#[tokio::test]
async fn capabilities() {
    let schema = TestSchema::new("capabilities");
    let caps = schema.store().await.capabilities();
    assert!(caps.long_poll);
    assert!(caps.durable);
    assert!(caps.multi_process);
}

#[test]
fn handles_are_cheap_send_sync_and_debug() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    assert_send_sync::<asm_store_postgres::PostgresSessionStore>();
    assert_eq!(std::mem::size_of::<asm_store_postgres::PostgresSessionStore>(), std::mem::size_of::<usize>());
}
