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

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                conformance::$name(&*store()).await;
            }
        )*
    };
}

checks! {
    check_session_round_trip,
    check_list_sessions_filters,
    check_list_sessions_pagination,
    check_delete_session_cascades,
    check_run_round_trip,
    check_list_runs,
    check_terminal_run_is_final,
    check_sequences_start_at_one_and_are_contiguous,
    check_duplicate_event_ids,
    check_batch_atomicity,
    check_compare_and_append,
    check_cursor_bounds,
    check_since_is_inclusive,
    check_cursor_filters_compose,
    check_query_validation,
    check_stored_fields_unchanged,
    check_get_events_without_wait_is_immediate,
    check_long_poll_returns_immediately_when_data_exists,
    check_long_poll_wakes_on_append,
    check_long_poll_times_out_empty,
    check_long_poll_ignores_unrelated_appends,
    check_flush_persists_and_merges_metadata,
    check_invalid_flush_writes_nothing,
    check_run_status_only_moves_forward,
    check_flush_expected_status,
    check_no_event_after_terminal_run,
    check_event_size_cap,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_concurrent_appends() {
    conformance::check_concurrent_appends(store()).await;
}

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
