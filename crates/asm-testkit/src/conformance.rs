//! The store conformance suite: one contract, every [`SessionStore`].
//!
//! Plain async functions, in the manner of `object_store`'s integration module: a store's own
//! tests call each `check_*` function (one test per check, so a failure is named), or
//! [`run_all`] at once, plus the two property tests [`prop_cursor_reads_match_model`] and
//! [`prop_sequencing_matches_model`].
//!
//! ```no_run
//! # async fn demo(store: asm_ports::DynSessionStore) {
//! use asm_testkit::conformance;
//! conformance::check_duplicate_event_ids(&*store).await;
//! conformance::check_concurrent_appends(store.clone()).await;
//! conformance::run_all(store).await;
//! # }
//! ```
//!
//! Rules the checks follow, so they can share one store (and run concurrently on it):
//!
//! - every check creates its own sessions (with a fresh agent id) and only asserts about those;
//!   listing checks page through whatever else the store holds;
//! - assertions are on [`ErrorCode`]s, never on messages; a failure says what the store did
//!   wrong;
//! - waits are bounded ([`tokio::time::timeout`]); a short sleep appears only where it merely
//!   makes a race likely (a reader registering before a writer appends) and the check stays
//!   correct without it.
//!
//! The checks need a Tokio runtime with the time driver enabled. [`check_concurrent_appends`]
//! spawns tasks; run it on a multi-thread runtime
//! (`#[tokio::test(flavor = "multi_thread")]`) so the writers really run in parallel. The
//! property tests build their own current-thread runtime and must be called from a plain
//! `#[test]`, outside any runtime.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use asm_core::{
    Error, ErrorCode, Event, EventId, EventKind, JsonMap, Result, Run, RunId, RunInput, RunOutput, RunStatus, Session,
    SessionId, SessionStatus, StoredEvent, Timestamp,
};
use asm_ports::{DynSessionStore, EventQuery, ExecutionRecord, RunQuery, SessionQuery, SessionStore, SessionStoreExt};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

/// Calls the caller's macro `$m!` with the names of every check that takes a `&dyn
/// SessionStore` (all but [`check_concurrent_appends`] and
/// [`check_long_poll_follows_concurrent_writers`], which take a shared handle), so each store's
/// tests generate one test per check from one list:
///
/// ```text
/// macro_rules! checks { ($($name:ident),* $(,)?) => { $( #[tokio::test] async fn $name() { /* ... */ } )* } }
/// asm_testkit::for_each_store_check!(checks);
/// ```
#[macro_export]
macro_rules! for_each_store_check {
    ($m:ident $([$($arg:tt)*])?) => {
        $m! {
        $([$($arg)*])?
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
    };
}

/// The per-check tests of a store: one `#[tokio::test]` per check of
/// [`for_each_store_check!`](crate::for_each_store_check) and one for
/// [`check_concurrent_appends`], each on a fresh store from `$fresh`, a function
/// `fn() -> (DynSessionStore, G)` whose `G` is kept alive for the test (the store's temp dir,
/// or `()`). The caller's crate needs `tokio` (with the `macros` and `rt-multi-thread` features).
///
/// ```text
/// fn fresh() -> (DynSessionStore, TempDir) { /* a new store in a new temp dir */ }
/// asm_testkit::store_conformance_tests!(fresh);
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($fresh:path) => {
        use $crate::__store_conformance_check as __asm_store_conformance_check;
        $crate::for_each_store_check!(__asm_store_conformance_check[$fresh]);

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn check_concurrent_appends() {
            let (store, _guard) = $fresh();
            $crate::conformance::check_concurrent_appends(store).await;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_check {
    ([$fresh:path] $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (store, _guard) = $fresh();
                $crate::conformance::$name(&*store).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// run_all
// ---------------------------------------------------------------------------------------------

/// Runs every check of the suite against `store`, one after the other.
///
/// The long-poll checks run only when `store.capabilities().long_poll` is true (a store without
/// long-poll may return at once when a query waits); [`check_get_events_without_wait_is_immediate`]
/// runs always. The property tests are not included (they need to create fresh stores and run
/// outside a runtime): call [`prop_cursor_reads_match_model`] and
/// [`prop_sequencing_matches_model`] from plain `#[test]`s.
///
/// Takes a shared handle because [`check_concurrent_appends`] and
/// [`check_long_poll_follows_concurrent_writers`] spawn tasks.
pub async fn run_all(store: DynSessionStore) {
    let s: &dyn SessionStore = &*store;
    check_session_round_trip(s).await;
    check_list_sessions_filters(s).await;
    check_list_sessions_pagination(s).await;
    check_delete_session_cascades(s).await;
    check_run_round_trip(s).await;
    check_list_runs(s).await;
    check_terminal_run_is_final(s).await;
    check_sequences_start_at_one_and_are_contiguous(s).await;
    check_concurrent_appends(Arc::clone(&store)).await;
    check_duplicate_event_ids(s).await;
    check_batch_atomicity(s).await;
    check_compare_and_append(s).await;
    check_cursor_bounds(s).await;
    check_since_is_inclusive(s).await;
    check_cursor_filters_compose(s).await;
    check_query_validation(s).await;
    check_stored_fields_unchanged(s).await;
    check_get_events_without_wait_is_immediate(s).await;
    if s.capabilities().long_poll {
        check_long_poll_returns_immediately_when_data_exists(s).await;
        check_long_poll_wakes_on_append(s).await;
        check_long_poll_times_out_empty(s).await;
        check_long_poll_ignores_unrelated_appends(s).await;
        check_long_poll_follows_concurrent_writers(Arc::clone(&store)).await;
    }
    check_flush_persists_and_merges_metadata(s).await;
    check_invalid_flush_writes_nothing(s).await;
    check_run_status_only_moves_forward(s).await;
    check_flush_expected_status(s).await;
    check_no_event_after_terminal_run(s).await;
    check_event_size_cap(s).await;
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

/// Sessions: `save_session` inserts and, for a known id, replaces (upsert, last write wins);
/// saving the same record again changes nothing and never duplicates it; `get_session` returns
/// the record exactly as saved; an unknown id is [`ErrorCode::SessionNotFound`].
pub async fn check_session_round_trip(store: &dyn SessionStore) {
    let agent = unique_agent("session-round-trip");
    let mut session = ok(Session::new(&agent), "Session::new");
    session.tags = vec!["alpha".into(), "beta".into()];
    session.metadata.insert("provider".into(), "claude".into());
    session.context.insert("system_prompt".into(), "be brief".into());
    ok(store.save_session(&session).await, "save_session (insert)");
    assert_eq!(
        ok(store.get_session(&session.id).await, "get_session after insert"),
        session,
        "get_session must return the session exactly as saved"
    );

    ok(session.transition(SessionStatus::Active), "transition to active");
    session.metadata.insert("provider_sessions".into(), serde_json::json!({"claude": "abc"}));
    ok(store.save_session(&session).await, "save_session (update)");
    assert_eq!(
        ok(store.get_session(&session.id).await, "get_session after update"),
        session,
        "save_session of a known id must replace the stored record"
    );

    ok(store.save_session(&session).await, "save_session (repeat 1)");
    ok(store.save_session(&session).await, "save_session (repeat 2)");
    assert_eq!(ok(store.get_session(&session.id).await, "get_session after repeats"), session);
    let listed = list_all(store, &SessionQuery::new().agent(&agent)).await;
    assert_eq!(ids_of(&listed), vec![session.id.clone()], "repeated saves must not duplicate the session");

    expect_code(store.get_session(&SessionId::new()).await, ErrorCode::SessionNotFound, "get_session of an unknown id");
}

/// Sessions: `list_sessions` filters by status, agent and tag, alone and combined, and returns
/// sessions in `(created_at, id)` order.
pub async fn check_list_sessions_filters(store: &dyn SessionStore) {
    let agent = unique_agent("list-filters");
    let other_agent = unique_agent("list-filters-other");
    let red = format!("red-{}", SessionId::new());
    let blue = format!("blue-{}", SessionId::new());

    let mut pending_red = ok(Session::new(&agent), "Session::new");
    pending_red.tags = vec![red.clone()];
    let mut active_red_blue = ok(Session::new(&agent), "Session::new");
    active_red_blue.tags = vec![red.clone(), blue.clone()];
    ok(active_red_blue.transition(SessionStatus::Active), "activate");
    let mut active_plain = ok(Session::new(&agent), "Session::new");
    ok(active_plain.transition(SessionStatus::Active), "activate");
    let mut other_red = ok(Session::new(&other_agent), "Session::new");
    other_red.tags = vec![red.clone()];
    ok(other_red.transition(SessionStatus::Active), "activate");
    for s in [&pending_red, &active_red_blue, &active_plain, &other_red] {
        ok(store.save_session(s).await, "save_session");
    }

    let expect = |sessions: &[&Session]| {
        let mut v: Vec<Session> = sessions.iter().map(|s| (*s).clone()).collect();
        v.sort_by_key(SessionQuery::order_key);
        ids_of(&v)
    };
    let by_agent = list_all(store, &SessionQuery::new().agent(&agent)).await;
    assert_eq!(
        ids_of(&by_agent),
        expect(&[&pending_red, &active_red_blue, &active_plain]),
        "agent filter must return exactly that agent's sessions in (created_at, id) order"
    );
    let active = list_all(store, &SessionQuery::new().agent(&agent).status(SessionStatus::Active)).await;
    assert_eq!(ids_of(&active), expect(&[&active_red_blue, &active_plain]), "agent + status filter");
    let tagged = list_all(store, &SessionQuery::new().agent(&agent).tag(&red)).await;
    assert_eq!(ids_of(&tagged), expect(&[&pending_red, &active_red_blue]), "agent + tag filter");
    let all_three = list_all(store, &SessionQuery::new().agent(&agent).status(SessionStatus::Active).tag(&blue)).await;
    assert_eq!(ids_of(&all_three), expect(&[&active_red_blue]), "agent + status + tag filter");

    let by_tag = list_all(store, &SessionQuery::new().tag(&red)).await;
    assert_eq!(ids_of(&by_tag), expect(&[&pending_red, &active_red_blue, &other_red]), "tag filter alone");

    let all_active = list_all(store, &SessionQuery::new().status(SessionStatus::Active)).await;
    assert!(
        all_active.iter().all(|s| s.status == SessionStatus::Active),
        "status filter returned a session in another status"
    );
    let active_ids: HashSet<_> = ids_of(&all_active).into_iter().collect();
    for s in [&active_red_blue, &active_plain, &other_red] {
        assert!(active_ids.contains(&s.id), "status filter alone lost session {}", s.id);
    }
    assert!(!active_ids.contains(&pending_red.id), "status filter alone returned a pending session");
}

/// Sessions: cursor pagination walks every matching session exactly once in `(created_at, id)`
/// order (ties on `created_at` broken by id), the last page has no cursor, a cursor stays valid
/// when its session is deleted (keyset, not offset), a cursor no store produced is
/// [`ErrorCode::InvalidCursor`] and page size 0 is [`ErrorCode::InvalidInput`].
pub async fn check_list_sessions_pagination(store: &dyn SessionStore) {
    let agent = unique_agent("pagination");
    let base = ok(Session::new(&agent), "Session::new").created_at.timestamp_micros();
    // Offsets in µs, deliberately out of order and with a three-way tie.
    let offsets = [5_000, 1_000, 3_000, 3_000, 7_000, 3_000, 2_000];
    let mut sessions = Vec::new();
    for offset in offsets {
        let mut s = ok(Session::new(&agent), "Session::new");
        s.created_at = at_micros(base + offset);
        s.updated_at = s.created_at;
        ok(store.save_session(&s).await, "save_session");
        sessions.push(s);
    }
    sessions.sort_by_key(SessionQuery::order_key);
    let expected = ids_of(&sessions);

    for page_size in [1, 2, 3, 7, 50] {
        let mut seen = Vec::new();
        let mut query = SessionQuery::new().agent(&agent).limit(page_size);
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= expected.len() + 1, "pagination with page size {page_size} does not end");
            let page = ok(store.list_sessions(&query).await, "list_sessions page");
            assert!(page.items.len() <= page_size, "a page holds more items than the page size {page_size}");
            seen.extend(ids_of(&page.items));
            match page.next_cursor {
                Some(cursor) => {
                    assert!(!page.items.is_empty(), "an empty page must not carry a cursor");
                    query = query.cursor(cursor);
                }
                None => break,
            }
        }
        assert_eq!(
            seen, expected,
            "paging with size {page_size} must return every session once, in (created_at, id) order"
        );
        assert_eq!(
            pages,
            expected.len().div_ceil(page_size),
            "page size {page_size}: the last page must have no cursor"
        );
    }

    // Keyset semantics: delete the last session of the first page, then continue with its cursor.
    let first = ok(store.list_sessions(&SessionQuery::new().agent(&agent).limit(3)).await, "first page");
    let cursor = first.next_cursor.clone().unwrap_or_else(|| panic!("7 sessions with page size 3 need a cursor"));
    ok(store.delete_session(&sessions[2].id).await, "delete_session");
    let rest = list_all(store, &SessionQuery::new().agent(&agent).limit(3).cursor(cursor)).await;
    assert_eq!(ids_of(&rest), expected[3..].to_vec(), "a cursor must stay valid after its session is deleted");

    for bad in ["garbage", "12:nope", "x:ses_00000000000000000000000000000000", ""] {
        expect_code(
            store.list_sessions(&SessionQuery::new().cursor(bad)).await,
            ErrorCode::InvalidCursor,
            &format!("list_sessions with the invalid cursor {bad:?}"),
        );
    }
    expect_code(
        store.list_sessions(&SessionQuery::new().limit(0)).await,
        ErrorCode::InvalidInput,
        "list_sessions with limit 0",
    );
}

/// Sessions: `delete_session` removes the session with its runs and events (get_session ->
/// SessionNotFound, get_run -> RunNotFound, get_events and latest_sequence -> SessionNotFound,
/// list_runs -> SessionNotFound or empty), leaves other sessions alone, and deleting again (or an
/// unknown id) is [`ErrorCode::SessionNotFound`]. A session saved again with the same id starts
/// with an empty log, and the deleted event ids are no longer stored (appending them again gives
/// new sequences).
pub async fn check_delete_session_cascades(store: &dyn SessionStore) {
    let agent = unique_agent("delete");
    let session = saved_session(store, &agent).await;
    let keep = saved_session(store, &agent).await;
    let run = saved_run(store, &session).await;
    let kept_run = saved_run(store, &keep).await;
    let events: Vec<Event> =
        (0..3).map(|_| event(EventKind::MessageSent, &session.id).with_run(run.id.clone())).collect();
    ok(store.append_events(events.clone()).await, "append_events");
    let kept_event = ok(store.append_event(event(EventKind::MessageSent, &keep.id)).await, "append_event");

    ok(store.delete_session(&session.id).await, "delete_session");
    expect_code(store.get_session(&session.id).await, ErrorCode::SessionNotFound, "get_session after delete");
    expect_code(store.get_run(&run.id).await, ErrorCode::RunNotFound, "get_run of a deleted session's run");
    expect_code(
        store.get_events(&session.id, &EventQuery::new()).await,
        ErrorCode::SessionNotFound,
        "get_events of a deleted session",
    );
    expect_code(
        store.latest_sequence(&session.id).await,
        ErrorCode::SessionNotFound,
        "latest_sequence of a deleted session",
    );
    match store.list_runs(&session.id, &RunQuery::new()).await {
        Ok(runs) => assert!(runs.is_empty(), "list_runs of a deleted session returned runs: {runs:?}"),
        Err(e) => assert_eq!(e.code(), ErrorCode::SessionNotFound, "list_runs of a deleted session: {e}"),
    }
    let listed = list_all(store, &SessionQuery::new().agent(&agent)).await;
    assert_eq!(ids_of(&listed), vec![keep.id.clone()], "a deleted session must not be listed");
    expect_code(store.delete_session(&session.id).await, ErrorCode::SessionNotFound, "deleting a session twice");
    expect_code(
        store.delete_session(&SessionId::new()).await,
        ErrorCode::SessionNotFound,
        "deleting an unknown session",
    );

    assert_eq!(
        ok(store.get_run(&kept_run.id).await, "get_run of another session"),
        kept_run,
        "delete touched another session's run"
    );
    assert_eq!(
        ok(store.get_events(&keep.id, &EventQuery::new()).await, "get_events of another session"),
        vec![kept_event],
        "delete touched another session's events"
    );

    ok(store.save_session(&session).await, "save_session again after delete");
    assert_eq!(ok(store.latest_sequence(&session.id).await, "latest_sequence of the re-created session"), 0);
    assert!(
        ok(store.list_runs(&session.id, &RunQuery::new()).await, "list_runs").is_empty(),
        "runs survived the delete"
    );
    expect_code(store.get_run(&run.id).await, ErrorCode::RunNotFound, "get_run after the session was re-created");
    let fresh =
        ok(store.append_event(event(EventKind::SessionCreated, &session.id)).await, "append to the re-created session");
    assert_eq!(fresh.sequence, Some(1), "a re-created session must start its log at 1");
    let again = ok(store.append_events(events.clone()).await, "re-append the deleted events");
    assert_eq!(
        sequences(&again),
        vec![2, 3, 4],
        "the deleted events' ids must be forgotten: re-appending them must store them anew"
    );
    assert_eq!(
        ok(store.latest_sequence(&session.id).await, "latest_sequence"),
        4,
        "the re-appended events were not stored"
    );
    ok(store.delete_session(&session.id).await, "cleanup");
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// Runs: `save_run` inserts and replaces, `get_run` returns the run exactly as saved, an unknown
/// run is [`ErrorCode::RunNotFound`], and a run of an unknown session is rejected with
/// [`ErrorCode::SessionNotFound`] (and not stored).
pub async fn check_run_round_trip(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("run-round-trip")).await;
    let mut run = Run::new(session.id.clone(), RunInput::user("hello"));
    run.metadata.insert("model".into(), "m-1".into());
    ok(store.save_run(&run).await, "save_run (insert)");
    let stored = ok(store.get_run(&run.id).await, "get_run");
    assert_eq!(stored, run, "get_run must return the run exactly as saved");
    assert_eq!(stored.status, RunStatus::Pending);

    ok(run.transition(RunStatus::Running), "transition to running");
    run.turn_count = 2;
    run.provider = Some("claude".into());
    ok(store.save_run(&run).await, "save_run (update)");
    assert_eq!(ok(store.get_run(&run.id).await, "get_run after update"), run, "save_run must replace the stored run");
    ok(store.save_run(&run).await, "save_run (repeat)");
    assert_eq!(
        ok(store.list_runs(&session.id, &RunQuery::new()).await, "list_runs").len(),
        1,
        "repeated save_run duplicated the run"
    );

    expect_code(store.get_run(&RunId::new()).await, ErrorCode::RunNotFound, "get_run of an unknown id");
    let orphan = Run::new(SessionId::new(), RunInput::user("x"));
    expect_code(store.save_run(&orphan).await, ErrorCode::SessionNotFound, "save_run for an unknown session");
    expect_code(
        store.get_run(&orphan.id).await,
        ErrorCode::RunNotFound,
        "get_run of a run rejected for its unknown session",
    );
}

/// Runs: `list_runs` returns only the session's runs, ordered by `(created_at, id)`, filtered by
/// status, with `limit` keeping the oldest; a session without runs lists none.
pub async fn check_list_runs(store: &dyn SessionStore) {
    let agent = unique_agent("list-runs");
    let session = saved_session(store, &agent).await;
    let other = saved_session(store, &agent).await;
    let empty = saved_session(store, &agent).await;
    let base = session.created_at.timestamp_micros();

    let mut runs = Vec::new();
    for (offset, status) in [
        (4_000, RunStatus::Pending),
        (1_000, RunStatus::Running),
        (2_000, RunStatus::Pending),
        (2_000, RunStatus::Running),
    ] {
        let mut run = Run::new(session.id.clone(), RunInput::user("x"));
        run.created_at = at_micros(base + offset);
        if status == RunStatus::Running {
            ok(run.transition(RunStatus::Running), "transition");
        }
        ok(store.save_run(&run).await, "save_run");
        runs.push(run);
    }
    saved_run(store, &other).await;
    runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));

    let all = ok(store.list_runs(&session.id, &RunQuery::new()).await, "list_runs");
    assert_eq!(all, runs, "list_runs must return exactly the session's runs ordered by (created_at, id)");
    let running =
        ok(store.list_runs(&session.id, &RunQuery::new().status(RunStatus::Running)).await, "list_runs by status");
    let expected: Vec<Run> = runs.iter().filter(|r| r.status == RunStatus::Running).cloned().collect();
    assert_eq!(running, expected, "status filter");
    let oldest = ok(store.list_runs(&session.id, &RunQuery::new().limit(2)).await, "list_runs with limit");
    assert_eq!(oldest, runs[..2].to_vec(), "limit must keep the oldest runs");
    let oldest_pending =
        ok(store.list_runs(&session.id, &RunQuery::new().status(RunStatus::Pending).limit(1)).await, "status + limit");
    let expected: Vec<Run> = runs.iter().filter(|r| r.status == RunStatus::Pending).take(1).cloned().collect();
    assert_eq!(oldest_pending, expected, "status filter + limit");
    assert!(ok(store.list_runs(&empty.id, &RunQuery::new()).await, "list_runs of a session without runs").is_empty());
}

/// Runs: a stored terminal run is final. Saving a different version is
/// [`ErrorCode::InvalidTransition`] and leaves the stored copy unchanged; saving the identical
/// record again succeeds (a retried write).
pub async fn check_terminal_run_is_final(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("terminal-run")).await;
    let mut run = Run::new(session.id.clone(), RunInput::user("x"));
    ok(run.transition(RunStatus::Running), "transition");
    ok(store.save_run(&run).await, "save_run running");
    ok(run.complete(RunOutput::text("done")), "complete");
    ok(store.save_run(&run).await, "save_run completed");

    let mut late_failure = run.clone();
    late_failure.status = RunStatus::Failed;
    late_failure.error = Some(Error::new(ErrorCode::ProviderError, "late"));
    expect_code(store.save_run(&late_failure).await, ErrorCode::InvalidTransition, "overwriting a completed run");
    let mut rewritten = run.clone();
    rewritten.output = Some(RunOutput::text("something else"));
    expect_code(store.save_run(&rewritten).await, ErrorCode::InvalidTransition, "rewriting a completed run's output");
    assert_eq!(ok(store.get_run(&run.id).await, "get_run"), run, "a rejected overwrite changed the stored run");
    ok(store.save_run(&run).await, "saving the identical terminal run again must succeed");
}

// ---------------------------------------------------------------------------------------------
// Sequencing
// ---------------------------------------------------------------------------------------------

/// Sequencing: a session without events has latest sequence 0 and no events; the first event
/// gets 1; a batch gets contiguous numbers in input order; reads return events in append order.
pub async fn check_sequences_start_at_one_and_are_contiguous(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("sequences")).await;
    assert_eq!(
        ok(store.latest_sequence(&session.id).await, "latest_sequence"),
        0,
        "a new session's latest sequence must be 0"
    );
    assert!(ok(store.get_events(&session.id, &EventQuery::new()).await, "get_events").is_empty());

    let first = ok(store.append_event(event(EventKind::SessionCreated, &session.id)).await, "append_event");
    assert_eq!(first.sequence, Some(1), "the first event must get sequence 1");
    let batch: Vec<Event> = (0..3).map(|_| event(EventKind::MessageSent, &session.id)).collect();
    let stored = ok(store.append_events(batch.clone()).await, "append_events");
    assert_eq!(sequences(&stored), vec![2, 3, 4], "a batch must get contiguous sequences in input order");
    assert_eq!(event_ids(&stored), event_ids(&batch), "a batch must be returned in input order");
    assert_eq!(ok(store.latest_sequence(&session.id).await, "latest_sequence"), 4);

    let all = ok(store.get_events(&session.id, &EventQuery::new()).await, "get_events");
    assert_eq!(sequences(&all), vec![1, 2, 3, 4], "events must be read back in sequence order");
    let mut expected_ids = vec![first.id.clone()];
    expected_ids.extend(event_ids(&batch));
    assert_eq!(event_ids(&all), expected_ids, "events must be read back in append order");
}

/// Sequencing under contention: 16 tasks append to ONE session at once, each 50 single events
/// and 5 batches of 5. Afterwards the latest sequence equals the number of events, the stored
/// sequences are exactly `1..=total` with no duplicate ids, every batch got contiguous numbers
/// in input order, each writer's own appends are numbered in the order it made them, and what
/// each append returned is what is stored.
///
/// Spawns tasks (hence the shared handle); run it on a multi-thread runtime so the writers run
/// in parallel.
pub async fn check_concurrent_appends(store: DynSessionStore) {
    const WRITERS: usize = 16;
    const SINGLES: usize = 50;
    const BATCHES: usize = 5;
    const BATCH: usize = 5;
    let session = saved_session(&*store, &unique_agent("concurrent")).await;

    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let session_id = session.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut returned: Vec<Vec<StoredEvent>> = Vec::new();
            for i in 0..SINGLES + BATCHES {
                let make = |j: usize| {
                    event(EventKind::MessageStreamed, &session_id)
                        .with_data("writer", writer as u64)
                        .with_data("step", (i * 100 + j) as u64)
                };
                // Interleave the batches with the single appends.
                let batch: Vec<Event> = if i % 11 == 10 { (0..BATCH).map(make).collect() } else { vec![make(0)] };
                let stored = store.append_events(batch.clone()).await.map_err(|e| (writer, e))?;
                if event_ids(&stored) != event_ids(&batch) {
                    panic!("writer {writer}: append returned other events than it was given");
                }
                returned.push(stored);
            }
            Ok::<_, (usize, Error)>(returned)
        }));
    }

    let mut all_returned = Vec::new();
    for task in tasks {
        let returned = match tokio::time::timeout(Duration::from_secs(60), task).await {
            Err(_) => panic!("concurrent appends did not finish within 60 s (deadlock?)"),
            Ok(Err(join)) => panic!("a concurrent writer panicked: {join}"),
            Ok(Ok(Err((writer, e)))) => panic!("writer {writer}: append failed under contention: {e}"),
            Ok(Ok(Ok(returned))) => returned,
        };
        all_returned.push(returned);
    }

    let total = (WRITERS * (SINGLES + BATCHES * BATCH)) as u64;
    assert_eq!(
        ok(store.latest_sequence(&session.id).await, "latest_sequence"),
        total,
        "latest sequence after concurrent appends"
    );
    let stored = ok(store.get_events(&session.id, &EventQuery::new()).await, "get_events");
    assert_eq!(
        sequences(&stored),
        (1..=total).collect::<Vec<_>>(),
        "stored sequences must be exactly 1..=total, in order"
    );
    let unique: HashSet<&EventId> = stored.iter().map(|e| &e.id).collect();
    assert_eq!(unique.len(), stored.len(), "an event was stored twice");

    let by_sequence: HashMap<u64, &StoredEvent> = stored.iter().map(|e| (e.sequence(), e)).collect();
    for (writer, appends) in all_returned.iter().enumerate() {
        let mut previous = 0;
        for batch in appends {
            let seqs = sequences(batch);
            let first = seqs[0];
            assert!(
                first > previous,
                "writer {writer}: a later append got a smaller sequence ({first} after {previous})"
            );
            let contiguous: Vec<u64> = (first..first + seqs.len() as u64).collect();
            assert_eq!(seqs, contiguous, "writer {writer}: a batch did not get contiguous sequences in input order");
            for e in batch {
                let s = e.sequence.unwrap_or_default();
                assert_eq!(
                    by_sequence.get(&s).copied(),
                    Some(e),
                    "writer {writer}: returned event differs from the stored one at {s}"
                );
            }
            previous = seqs[seqs.len() - 1];
        }
    }
}

/// Idempotency: re-appending a stored event returns the stored event (original sequence and
/// payload) and consumes no number; a batch mixing stored and new events returns the stored
/// ones unchanged and numbers only the new ones; the same id twice in one batch resolves both
/// positions to the first occurrence, stored once.
pub async fn check_duplicate_event_ids(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("duplicates")).await;
    let e1 = ok(store.append_event(event(EventKind::MessageSent, &session.id).with_data("n", 1)).await, "append e1");
    assert_eq!(e1.sequence, Some(1));

    let retried = ok(store.append_event(e1.clone()).await, "re-append e1");
    assert_eq!(retried, e1, "re-appending a stored event must return the stored event");
    let mut altered = e1.clone().into_event();
    altered.sequence = None;
    altered.data.insert("n".into(), 99.into());
    let retried = ok(store.append_event(altered).await, "re-append e1 with another payload");
    assert_eq!(retried, e1, "a duplicate id must return the originally stored event, not the new payload");
    assert_eq!(
        ok(store.latest_sequence(&session.id).await, "latest_sequence"),
        1,
        "a duplicate consumed a sequence number"
    );

    let e2 = ok(store.append_event(event(EventKind::MessageSent, &session.id)).await, "append e2");
    assert_eq!(e2.sequence, Some(2), "the next new event must get the next number (no gap after a duplicate)");

    let e3 = event(EventKind::MessageSent, &session.id);
    let e4 = event(EventKind::MessageSent, &session.id);
    let mixed = ok(
        store.append_events(vec![e1.clone().into_event(), e3.clone(), e2.clone().into_event(), e4.clone()]).await,
        "append a mixed batch",
    );
    assert_eq!(
        sequences(&mixed),
        vec![1, 3, 2, 4],
        "stored events keep their sequence; new ones are numbered in order"
    );
    assert_eq!(mixed[0], e1);
    assert_eq!(mixed[2], e2);
    assert_eq!(ok(store.latest_sequence(&session.id).await, "latest_sequence"), 4);

    let e5 = event(EventKind::MessageSent, &session.id).with_data("copy", "first");
    let mut e5_again = e5.clone();
    e5_again.data.insert("copy".into(), "second".into());
    let twice = ok(store.append_events(vec![e5.clone(), e5_again]).await, "append the same id twice in one batch");
    assert_eq!(sequences(&twice), vec![5, 5], "both positions of an in-batch duplicate must get the same sequence");
    assert_eq!(twice[0], twice[1], "both positions of an in-batch duplicate must return the same stored event");
    assert_eq!(twice[0].data["copy"], "first", "an in-batch duplicate must resolve to its first occurrence");

    let all = ok(store.get_events(&session.id, &EventQuery::new()).await, "get_events");
    assert_eq!(sequences(&all), vec![1, 2, 3, 4, 5], "duplicates must be stored once");
    assert_eq!(ok(store.latest_sequence(&session.id).await, "latest_sequence"), 5);
}

/// Batch atomicity: a batch mixing sessions is [`ErrorCode::InvalidInput`], a batch for an
/// unknown session [`ErrorCode::SessionNotFound`], an empty batch [`ErrorCode::InvalidInput`];
/// each writes nothing (no sequence consumed, none of its ids stored).
pub async fn check_batch_atomicity(store: &dyn SessionStore) {
    let agent = unique_agent("atomicity");
    let a = saved_session(store, &agent).await;
    let b = saved_session(store, &agent).await;
    ok(
        store.append_events(vec![event(EventKind::MessageSent, &a.id), event(EventKind::MessageSent, &a.id)]).await,
        "append",
    );

    let new_a = event(EventKind::MessageSent, &a.id);
    let new_b = event(EventKind::MessageSent, &b.id);
    expect_code(
        store.append_events(vec![new_a.clone(), new_b.clone()]).await,
        ErrorCode::InvalidInput,
        "a batch mixing two sessions",
    );
    let ghost = SessionId::new();
    expect_code(
        store.append_events(vec![event(EventKind::MessageSent, &ghost), event(EventKind::MessageSent, &ghost)]).await,
        ErrorCode::SessionNotFound,
        "a batch for an unknown session",
    );
    expect_code(store.append_events(Vec::<Event>::new()).await, ErrorCode::InvalidInput, "an empty batch");
    expect_code(store.append(Vec::new(), Some(0)).await, ErrorCode::InvalidInput, "an empty batch with a precondition");

    assert_eq!(ok(store.latest_sequence(&a.id).await, "latest_sequence a"), 2, "a rejected batch wrote to session a");
    assert_eq!(ok(store.latest_sequence(&b.id).await, "latest_sequence b"), 0, "a rejected batch wrote to session b");
    assert_eq!(
        ok(store.append_event(new_a).await, "append the rejected event alone").sequence,
        Some(3),
        "an event of a rejected batch must not have been stored"
    );
    assert_eq!(ok(store.append_event(new_b).await, "append the rejected event alone").sequence, Some(1));
}

/// Compare-and-append: with `expected_last_sequence` equal to the session's last sequence the
/// batch is appended; otherwise [`ErrorCode::InvalidOperation`] (details
/// `actual_last_sequence`) and nothing is written. A batch made only of already stored events is
/// returned without the check (a retried append succeeds).
pub async fn check_compare_and_append(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("compare-and-append")).await;
    let first = ok(store.append(vec![event(EventKind::MessageSent, &session.id)], Some(0)).await, "append at 0");
    assert_eq!(sequences(&first), vec![1]);
    let second = ok(store.append(vec![event(EventKind::MessageSent, &session.id)], Some(1)).await, "append at 1");
    assert_eq!(sequences(&second), vec![2]);

    let pending = vec![event(EventKind::MessageSent, &session.id), event(EventKind::MessageSent, &session.id)];
    for stale in [0, 1, 3, u64::MAX] {
        let err = expect_code(
            store.append(pending.clone(), Some(stale)).await,
            ErrorCode::InvalidOperation,
            &format!("append expecting last sequence {stale} while it is 2"),
        );
        assert_eq!(
            err.details().get("actual_last_sequence").and_then(serde_json::Value::as_u64),
            Some(2),
            "the conflict must report actual_last_sequence"
        );
    }
    assert_eq!(
        ok(store.latest_sequence(&session.id).await, "latest_sequence"),
        2,
        "a failed compare-and-append wrote events"
    );

    let mixed = vec![first[0].clone().into_event(), event(EventKind::MessageSent, &session.id)];
    expect_code(
        store.append(mixed, Some(0)).await,
        ErrorCode::InvalidOperation,
        "stored + new events with a stale precondition",
    );
    let retried = ok(
        store.append(StoredEvent::into_events(vec![first[0].clone(), second[0].clone()]), Some(0)).await,
        "retry of stored events",
    );
    assert_eq!(
        sequences(&retried),
        vec![1, 2],
        "a batch of stored events must be returned despite a stale precondition"
    );

    let appended = ok(store.append(pending.clone(), Some(2)).await, "append with the right precondition");
    assert_eq!(sequences(&appended), vec![3, 4]);
    assert_eq!(event_ids(&appended), event_ids(&pending));
}

// ---------------------------------------------------------------------------------------------
// Cursors and reads
// ---------------------------------------------------------------------------------------------

/// Cursor bounds: `after` and `before` are exclusive (`after 1` -> `[2, 3]`; `before 3` -> `[1, 2]`;
/// both -> `[2]`); out-of-range bounds give `[]`; `limit` keeps the OLDEST matching events.
pub async fn check_cursor_bounds(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("cursor-bounds")).await;
    let sid = &session.id;
    ok(store.append_events((0..3).map(|_| event(EventKind::MessageSent, sid)).collect()).await, "append");

    let cases: Vec<(EventQuery, Vec<u64>, &str)> = vec![
        (EventQuery::new(), vec![1, 2, 3], "no filter"),
        (EventQuery::new().after(0), vec![1, 2, 3], "after 0"),
        (EventQuery::new().after(1), vec![2, 3], "after 1 (exclusive)"),
        (EventQuery::new().before(3), vec![1, 2], "before 3 (exclusive)"),
        (EventQuery::new().after(1).before(3), vec![2], "after 1, before 3"),
        (EventQuery::new().after(3), vec![], "after the last"),
        (EventQuery::new().after(100), vec![], "after far beyond the last"),
        (EventQuery::new().after(u64::MAX), vec![], "after u64::MAX"),
        (EventQuery::new().before(1), vec![], "before 1"),
        (EventQuery::new().before(0), vec![], "before 0"),
        (EventQuery::new().before(100), vec![1, 2, 3], "before far beyond the last"),
        (EventQuery::new().after(2).before(2), vec![], "empty range"),
        (EventQuery::new().limit(2), vec![1, 2], "limit keeps the oldest"),
        (EventQuery::new().after(1).limit(1), vec![2], "after 1, limit 1"),
        (EventQuery::new().before(3).limit(1), vec![1], "before 3, limit 1"),
        (EventQuery::new().limit(10), vec![1, 2, 3], "limit above the count"),
    ];
    for (query, expected, what) in cases {
        let events = ok(store.get_events(sid, &query).await, what);
        assert_eq!(sequences(&events), expected, "cursor read '{what}' ({query:?})");
    }
}

/// `since` is inclusive: an event whose timestamp equals `since` is returned, a strictly older
/// one is not; it filters by timestamp, not by position (timestamps need not follow sequence).
pub async fn check_since_is_inclusive(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("since")).await;
    let base = session.created_at.timestamp_micros();
    let mut events = Vec::new();
    for offset in [2_000, 1_000, 3_000, 2_000] {
        let mut e = event(EventKind::MessageSent, &session.id);
        e.timestamp = at_micros(base + offset);
        events.push(e);
    }
    ok(store.append_events(events).await, "append");
    let read = |offset: i64| EventQuery::new().since(at_micros(base + offset));
    let cases = [
        (2_000, vec![1, 3, 4], "since equal to two events"),
        (2_001, vec![3], "since just after"),
        (999, vec![1, 2, 3, 4], "since before all"),
        (3_001, vec![], "since after all"),
    ];
    for (offset, expected, what) in cases {
        let got = ok(store.get_events(&session.id, &read(offset)).await, what);
        assert_eq!(sequences(&got), expected, "since filter '{what}'");
    }
    let got = ok(store.get_events(&session.id, &read(2_000).after(1).limit(1)).await, "since + after + limit");
    assert_eq!(sequences(&got), vec![3], "since must compose with after and limit");
}

/// Filters compose: `run_id` and `kinds` (one or several) combine with `after`, `before` and
/// `limit`, and `limit` counts matching events only.
pub async fn check_cursor_filters_compose(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("compose")).await;
    let sid = &session.id;
    let run_a = RunId::new();
    let run_b = RunId::new();
    use EventKind::{MessageReceived as Recv, MessageSent as Sent, ToolCallStarted as Tool};
    // seq: 1 A Sent, 2 B Recv, 3 A Recv, 4 - Sent, 5 A Tool, 6 B Sent, 7 A Recv, 8 A Sent
    let layout: [(Option<&RunId>, EventKind); 8] = [
        (Some(&run_a), Sent),
        (Some(&run_b), Recv),
        (Some(&run_a), Recv),
        (None, Sent),
        (Some(&run_a), Tool),
        (Some(&run_b), Sent),
        (Some(&run_a), Recv),
        (Some(&run_a), Sent),
    ];
    let events: Vec<Event> = layout
        .iter()
        .map(|(run, kind)| {
            let e = event(*kind, sid);
            match run {
                Some(r) => e.with_run((*r).clone()),
                None => e,
            }
        })
        .collect();
    ok(store.append_events(events).await, "append");

    let cases: Vec<(EventQuery, Vec<u64>, &str)> = vec![
        (EventQuery::new().run(run_a.clone()), vec![1, 3, 5, 7, 8], "run a"),
        (EventQuery::new().run(run_b.clone()), vec![2, 6], "run b"),
        (EventQuery::new().run(RunId::new()), vec![], "a run without events"),
        (EventQuery::new().kind(Recv), vec![2, 3, 7], "one kind"),
        (EventQuery::new().kind(Recv).kind(Tool), vec![2, 3, 5, 7], "two kinds"),
        (EventQuery::new().run(run_a.clone()).kind(Recv), vec![3, 7], "run + kind"),
        (EventQuery::new().run(run_a.clone()).after(3), vec![5, 7, 8], "run + after"),
        (EventQuery::new().run(run_a.clone()).after(1).before(8), vec![3, 5, 7], "run + after + before"),
        (EventQuery::new().run(run_a.clone()).after(3).limit(2), vec![5, 7], "run + after + limit"),
        (EventQuery::new().run(run_a.clone()).kind(Sent).after(1).limit(1), vec![8], "run + kind + after + limit"),
        (EventQuery::new().kind(Sent).limit(2), vec![1, 4], "kind + limit counts matches only"),
        (EventQuery::new().kind(Sent).after(4).before(8), vec![6], "kind + after + before"),
        (EventQuery::new().run(run_b.clone()).kind(Tool), vec![], "run + kind without matches"),
    ];
    for (query, expected, what) in cases {
        let got = ok(store.get_events(sid, &query).await, what);
        assert_eq!(sequences(&got), expected, "filtered read '{what}' ({query:?})");
    }
}

/// Query validation and unknown sessions: `limit` 0 is [`ErrorCode::InvalidInput`] (at once,
/// even with a wait); `get_events` and `latest_sequence` of an unknown session are
/// [`ErrorCode::SessionNotFound`].
pub async fn check_query_validation(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("validation")).await;
    expect_code(store.get_events(&session.id, &EventQuery::new().limit(0)).await, ErrorCode::InvalidInput, "limit 0");
    let waiting = EventQuery::new().limit(0).wait(Duration::from_secs(30));
    let result =
        bounded(Duration::from_secs(5), store.get_events(&session.id, &waiting), "an invalid query with a 30 s wait")
            .await;
    expect_code(result, ErrorCode::InvalidInput, "limit 0 with a wait");
    let ghost = SessionId::new();
    expect_code(
        store.get_events(&ghost, &EventQuery::new()).await,
        ErrorCode::SessionNotFound,
        "get_events of an unknown session",
    );
    expect_code(
        store.latest_sequence(&ghost).await,
        ErrorCode::SessionNotFound,
        "latest_sequence of an unknown session",
    );
}

/// Fidelity: every field of an event survives append and read unchanged (id, kind, timestamp,
/// session, run, data, metadata, schema version, provider, correlation id); only `sequence` is
/// assigned by the store (an input sequence is ignored).
pub async fn check_stored_fields_unchanged(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("fidelity")).await;
    let mut input = event(EventKind::ToolCallCompleted, &session.id)
        .with_run(RunId::new())
        .with_data("tool_call_id", "call_1")
        .with_data("tool_name", "bash")
        .with_data("tool_input", serde_json::json!({"command": "ls -la", "nested": {"list": [1, 2.5, null, true]}}))
        .with_data("tool_output", "total 0\n\u{1F600} unicode ✓")
        .with_provider("claude");
    input.metadata.insert("trace".into(), serde_json::json!({"span": "abc", "n": 7}));
    input.correlation_id = Some("corr-123".into());
    input.timestamp = at_micros(1_700_000_000_123_456);
    input.sequence = Some(999);

    let appended = ok(store.append_event(input.clone()).await, "append_event");
    let mut expected = input.clone();
    expected.sequence = Some(1);
    assert_eq!(appended, expected, "append must return the event unchanged except for its assigned sequence");
    let read = ok(store.get_events(&session.id, &EventQuery::new()).await, "get_events");
    assert_eq!(read, vec![expected], "a read must return the event unchanged except for its assigned sequence");
}

/// Without `wait`, `get_events` returns at once, also when nothing matches (every store).
pub async fn check_get_events_without_wait_is_immediate(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("no-wait")).await;
    let started = tokio::time::Instant::now();
    let events =
        bounded(Duration::from_secs(1), store.get_events(&session.id, &EventQuery::new()), "get_events without wait")
            .await;
    assert!(ok(events, "get_events").is_empty());
    let events = bounded(
        Duration::from_secs(1),
        store.get_events(&session.id, &EventQuery::new().after(5)),
        "get_events without wait",
    )
    .await;
    assert!(ok(events, "get_events").is_empty());
    assert!(started.elapsed() < Duration::from_secs(1), "get_events without wait blocked");
}

// ---------------------------------------------------------------------------------------------
// Long-poll (only for stores with `capabilities().long_poll`)
// ---------------------------------------------------------------------------------------------

/// Long-poll: when matching events exist, a waiting query returns them at once (well under its
/// 5 s wait), also when `wait` is zero or too long to represent as a deadline (`Duration::MAX`).
pub async fn check_long_poll_returns_immediately_when_data_exists(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("long-poll-immediate")).await;
    let stored = ok(store.append_event(event(EventKind::MessageSent, &session.id)).await, "append");
    let query = EventQuery::new().wait(Duration::from_secs(5));
    let got =
        bounded(Duration::from_secs(1), store.get_events(&session.id, &query), "a long-poll with matching data").await;
    assert_eq!(ok(got, "long-poll"), vec![stored.clone()]);
    let zero = EventQuery::new().wait(Duration::ZERO);
    let got =
        bounded(Duration::from_secs(1), store.get_events(&session.id, &zero), "a long-poll with a zero wait").await;
    assert_eq!(ok(got, "long-poll with zero wait"), vec![stored.clone()]);
    let forever = EventQuery::new().wait(Duration::MAX);
    let got =
        bounded(Duration::from_secs(1), store.get_events(&session.id, &forever), "a long-poll with Duration::MAX")
            .await;
    assert_eq!(ok(got, "long-poll with Duration::MAX"), vec![stored]);
}

/// Long-poll: a query with nothing to return blocks, and an append of a matching event wakes it
/// (every waiting reader) with that event long before the wait ends. Readers waiting with a
/// cursor past existing events get only the new one.
pub async fn check_long_poll_wakes_on_append(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("long-poll-wake")).await;
    let sid = &session.id;
    ok(
        store.append_events(vec![event(EventKind::MessageSent, sid), event(EventKind::MessageSent, sid)]).await,
        "append",
    );

    let query = EventQuery::new().after(2).wait(Duration::from_secs(5));
    let finished = AtomicBool::new(false);
    let started = tokio::time::Instant::now();
    let first_reader = async {
        let got = store.get_events(sid, &query).await;
        finished.store(true, Ordering::SeqCst);
        got
    };
    let second_reader = store.get_events(sid, &query);
    let writer = async {
        // Gives the readers time to register; the check stays correct without it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!finished.load(Ordering::SeqCst), "a long-poll with no matching event returned before its wait ended");
        store.append_event(event(EventKind::MessageReceived, sid)).await
    };
    let (first, second, appended) = bounded(
        Duration::from_secs(10),
        async { tokio::join!(first_reader, second_reader, writer) },
        "long-poll readers woken by an append",
    )
    .await;
    let appended = ok(appended, "append while readers wait");
    assert_eq!(appended.sequence, Some(3));
    assert_eq!(ok(first, "first reader"), vec![appended.clone()], "the woken reader must get exactly the new event");
    assert_eq!(ok(second, "second reader"), vec![appended], "every waiting reader must be woken");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the append did not wake the long-poll (it waited out its timeout)"
    );
}

/// Long-poll: with nothing to return, a waiting query returns `[]` when its wait ends (not
/// much earlier: at least 80 % of it).
pub async fn check_long_poll_times_out_empty(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("long-poll-timeout")).await;
    let wait = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let got = bounded(
        Duration::from_secs(5),
        store.get_events(&session.id, &EventQuery::new().wait(wait)),
        "an empty long-poll",
    )
    .await;
    let elapsed = started.elapsed();
    assert!(ok(got, "long-poll").is_empty(), "an empty long-poll must return []");
    assert!(elapsed >= wait.mul_f64(0.8), "an empty long-poll returned after {elapsed:?}, before its {wait:?} wait");
}

/// Long-poll: appends that do not match the waiting query (another session, another run,
/// another kind) do not end the wait; the query still returns `[]` when its wait ends.
pub async fn check_long_poll_ignores_unrelated_appends(store: &dyn SessionStore) {
    let agent = unique_agent("long-poll-unrelated");
    let session = saved_session(store, &agent).await;
    let other = saved_session(store, &agent).await;
    let run = RunId::new();
    let wait = Duration::from_millis(300);
    let query = EventQuery::new().run(run.clone()).kind(EventKind::MessageReceived).wait(wait);
    let started = tokio::time::Instant::now();
    let reader = store.get_events(&session.id, &query);
    let writer = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let unrelated = [
            event(EventKind::MessageReceived, &other.id).with_run(run.clone()),
            event(EventKind::MessageReceived, &session.id).with_run(RunId::new()),
            event(EventKind::MessageSent, &session.id).with_run(run.clone()),
            event(EventKind::MessageReceived, &session.id),
        ];
        for e in unrelated {
            ok(store.append_event(e).await, "unrelated append");
        }
    };
    let (got, ()) =
        bounded(Duration::from_secs(5), async { tokio::join!(reader, writer) }, "a long-poll with unrelated appends")
            .await;
    let elapsed = started.elapsed();
    assert!(ok(got, "long-poll").is_empty(), "unrelated appends must not be returned to a filtered long-poll");
    assert!(elapsed >= wait.mul_f64(0.8), "unrelated appends ended the long-poll after {elapsed:?} (wait {wait:?})");
}

/// Long-poll under load: 4 readers follow one session with `after` + `wait` cursors while 8
/// writers append 400 events (singles and batches). Every reader sees every sequence exactly
/// once, in order, with no gap, and no reader stalls until its wait ends while events are being
/// appended.
///
/// Spawns tasks; run it on a multi-thread runtime.
pub async fn check_long_poll_follows_concurrent_writers(store: DynSessionStore) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 50;
    const READERS: usize = 4;
    let total = (WRITERS * PER_WRITER) as u64;
    let session = saved_session(&*store, &unique_agent("long-poll-follow")).await;

    let mut readers = Vec::new();
    for reader in 0..READERS {
        let store = Arc::clone(&store);
        let session_id = session.id.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = 0u64;
            while seen < total {
                let query = EventQuery::new().after(seen).limit(64).wait(Duration::from_secs(5));
                let started = tokio::time::Instant::now();
                let page = store.get_events(&session_id, &query).await.map_err(|e| format!("reader {reader}: {e}"))?;
                if page.is_empty() {
                    return Err(format!(
                        "reader {reader}: long-poll after {seen} returned nothing after {:?} while {} events were due",
                        started.elapsed(),
                        total - seen
                    ));
                }
                for e in &page {
                    seen += 1;
                    if e.sequence != Some(seen) {
                        return Err(format!("reader {reader}: expected sequence {seen}, got {:?}", e.sequence));
                    }
                }
            }
            Ok(seen)
        }));
    }
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let session_id = session.id.clone();
        writers.push(tokio::spawn(async move {
            let mut written = 0;
            while written < PER_WRITER {
                let n = if written % 7 == 3 { 3.min(PER_WRITER - written) } else { 1 };
                let batch = (0..n).map(|_| event(EventKind::MessageStreamed, &session_id)).collect();
                store.append_events(batch).await.map_err(|e| format!("writer {writer}: {e}"))?;
                written += n;
                tokio::task::yield_now().await;
            }
            Ok::<_, String>(())
        }));
    }
    for task in writers {
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Err(_) => panic!("writers did not finish within 60 s"),
            Ok(Err(join)) => panic!("a writer panicked: {join}"),
            Ok(Ok(Err(e))) => panic!("{e}"),
            Ok(Ok(Ok(()))) => {}
        }
    }
    for task in readers {
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Err(_) => panic!("long-poll readers did not reach the end of the log within 60 s"),
            Ok(Err(join)) => panic!("a reader panicked: {join}"),
            Ok(Ok(Err(e))) => panic!("{e}"),
            Ok(Ok(Ok(seen))) => assert_eq!(seen, total),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Flush
// ---------------------------------------------------------------------------------------------

/// Flush: writes the run and its events (numbered, in order) atomically, applies
/// `session_metadata` to the stored session's metadata as a JSON merge patch
/// ([`asm_ports::backend::merge_patch`]: objects merge, `null` removes) and leaves every other
/// session field as stored (a status changed meanwhile by someone else is kept). A retried flush
/// of the same record succeeds and stores nothing twice.
pub async fn check_flush_persists_and_merges_metadata(store: &dyn SessionStore) {
    let mut session = ok(Session::new(unique_agent("flush")), "Session::new");
    session.metadata.insert("keep".into(), "me".into());
    session.metadata.insert("provider_sessions".into(), serde_json::json!({"old": "x"}));
    session.metadata.insert("dropped".into(), true.into());
    session.tags = vec!["t".into()];
    ok(store.save_session(&session).await, "save_session");
    let mut run = Run::new(session.id.clone(), RunInput::user("x"));
    ok(run.transition(RunStatus::Running), "transition");
    ok(store.save_run(&run).await, "save_run");

    // Someone else changes the session while the run executes.
    let mut changed = session.clone();
    ok(changed.transition(SessionStatus::Active), "transition");
    changed.context.insert("system_prompt".into(), "changed".into());
    ok(store.save_session(&changed).await, "concurrent save_session");

    ok(run.complete(RunOutput::text("done")), "complete");
    let events = vec![
        event(EventKind::MessageReceived, &session.id).with_run(run.id.clone()),
        event(EventKind::RunCompleted, &session.id).with_run(run.id.clone()),
    ];
    let mut patch = JsonMap::new();
    patch.insert("provider_sessions".into(), serde_json::json!({"claude": "sess-1"}));
    patch.insert("added".into(), 1.into());
    patch.insert("dropped".into(), serde_json::Value::Null);
    let record = ExecutionRecord::new(run.clone()).events(events.clone()).session_metadata(patch);
    let stored = ok(store.flush(record.clone()).await, "flush");
    assert_eq!(sequences(&stored), vec![1, 2], "flushed events must be numbered in order");
    assert_eq!(event_ids(&stored), event_ids(&events));

    assert_eq!(ok(store.get_run(&run.id).await, "get_run"), run, "flush must store the run");
    assert_eq!(
        ok(store.get_events(&session.id, &EventQuery::new()).await, "get_events"),
        stored,
        "flush must store the events"
    );
    let after = ok(store.get_session(&session.id).await, "get_session");
    let mut expected = changed.clone();
    expected.metadata.insert("provider_sessions".into(), serde_json::json!({"old": "x", "claude": "sess-1"}));
    expected.metadata.insert("added".into(), 1.into());
    expected.metadata.remove("dropped");
    assert_eq!(after.status, SessionStatus::Active, "flush overwrote a session status changed by someone else");
    assert_eq!(
        after.metadata, expected.metadata,
        "flush must apply session_metadata as a JSON merge patch to the stored metadata"
    );
    assert_eq!(
        (&after.agent_id, &after.context, &after.tags, after.created_at, after.parent_session_id.as_ref()),
        (
            &expected.agent_id,
            &expected.context,
            &expected.tags,
            expected.created_at,
            expected.parent_session_id.as_ref()
        ),
        "flush must not rewrite other session fields"
    );

    let again = ok(store.flush(record).await, "retried flush");
    assert_eq!(again, stored, "a retried flush must return the stored events");
    assert_eq!(
        ok(store.latest_sequence(&session.id).await, "latest_sequence"),
        2,
        "a retried flush stored events twice"
    );

    let bare = Run::new(session.id.clone(), RunInput::user("y"));
    let none = ok(store.flush(ExecutionRecord::new(bare.clone())).await, "flush without events");
    assert!(none.is_empty());
    assert_eq!(ok(store.get_run(&bare.id).await, "get_run"), bare, "a flush without events must still store the run");
}

/// Flush atomicity: an invalid flush writes nothing (run unchanged, no events, session metadata
/// unchanged): an event of another session, or events of two sessions
/// ([`ErrorCode::SessionMismatch`]), overwriting a terminal run ([`ErrorCode::InvalidTransition`]),
/// or a run of an unknown session ([`ErrorCode::SessionNotFound`]).
pub async fn check_invalid_flush_writes_nothing(store: &dyn SessionStore) {
    let agent = unique_agent("flush-invalid");
    let session = saved_session(store, &agent).await;
    let other = saved_session(store, &agent).await;
    let mut run = Run::new(session.id.clone(), RunInput::user("x"));
    ok(run.transition(RunStatus::Running), "transition");
    ok(store.save_run(&run).await, "save_run");
    let mut patch = JsonMap::new();
    patch.insert("must_not_appear".into(), true.into());

    let mut finished = run.clone();
    ok(finished.complete(RunOutput::text("done")), "complete");
    let foreign_only = ExecutionRecord::new(finished.clone())
        .events(vec![event(EventKind::MessageReceived, &other.id)])
        .session_metadata(patch.clone());
    let mixed = ExecutionRecord::new(finished.clone())
        .events(vec![event(EventKind::MessageReceived, &session.id), event(EventKind::MessageReceived, &other.id)])
        .session_metadata(patch.clone());
    for (record, what) in
        [(foreign_only, "a flush with an event of another session"), (mixed, "a flush mixing two sessions")]
    {
        expect_code(store.flush(record).await, ErrorCode::SessionMismatch, what);
        assert_eq!(ok(store.get_run(&run.id).await, "get_run"), run, "{what} changed the stored run");
        assert_eq!(ok(store.latest_sequence(&session.id).await, "latest_sequence"), 0, "{what} stored events");
        assert_eq!(ok(store.latest_sequence(&other.id).await, "latest_sequence"), 0, "{what} stored events");
        assert_eq!(ok(store.get_session(&session.id).await, "get_session"), session, "{what} changed the session");
    }

    ok(store.flush(ExecutionRecord::new(finished.clone())).await, "flush the finished run");
    let mut overwrite = finished.clone();
    overwrite.status = RunStatus::Failed;
    overwrite.output = None;
    let record = ExecutionRecord::new(overwrite)
        .events(vec![event(EventKind::RunFailed, &session.id).with_run(run.id.clone())])
        .session_metadata(patch.clone());
    expect_code(store.flush(record).await, ErrorCode::InvalidTransition, "a flush overwriting a terminal run");
    assert_eq!(ok(store.get_run(&run.id).await, "get_run"), finished, "a rejected flush changed the terminal run");
    assert_eq!(ok(store.latest_sequence(&session.id).await, "latest_sequence"), 0, "a rejected flush stored events");
    assert_eq!(ok(store.get_session(&session.id).await, "get_session"), session, "a rejected flush merged metadata");

    let ghost = Run::new(SessionId::new(), RunInput::user("x"));
    let ghost_events = vec![event(EventKind::MessageSent, &ghost.session_id)];
    expect_code(
        store.flush(ExecutionRecord::new(ghost.clone()).events(ghost_events)).await,
        ErrorCode::SessionNotFound,
        "a flush for an unknown session",
    );
    expect_code(store.get_run(&ghost.id).await, ErrorCode::RunNotFound, "the run of a rejected flush");
}

/// Runs: a status only moves along the run state machine. A stale `pending` copy saved over a
/// `running` run is [`ErrorCode::InvalidTransition`] and changes nothing (neither through
/// `save_run` nor through `flush`).
pub async fn check_run_status_only_moves_forward(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("run-forward")).await;
    let pending = Run::new(session.id.clone(), RunInput::user("x"));
    ok(store.save_run(&pending).await, "save_run pending");
    let mut running = pending.clone();
    ok(running.transition(RunStatus::Running), "transition");
    ok(store.save_run(&running).await, "save_run running");
    expect_code(
        store.save_run(&pending).await,
        ErrorCode::InvalidTransition,
        "a stale pending copy over a running run",
    );
    expect_code(
        store.flush(ExecutionRecord::new(pending.clone())).await,
        ErrorCode::InvalidTransition,
        "a flush of a stale pending copy over a running run",
    );
    assert_eq!(ok(store.get_run(&running.id).await, "get_run"), running, "a rejected stale copy changed the run");
}

/// Flush compare-and-set: with [`ExecutionRecord::expected_status`] the flush writes only if the
/// stored run has that status. A mismatch is [`ErrorCode::InvalidTransition`] and writes nothing
/// (run, events, session metadata); a status expected of a run that is not stored is
/// [`ErrorCode::RunNotFound`].
pub async fn check_flush_expected_status(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("flush-expected")).await;
    let pending = Run::new(session.id.clone(), RunInput::user("x"));
    ok(store.save_run(&pending).await, "save_run pending");
    let mut running = pending.clone();
    ok(running.transition(RunStatus::Running), "transition");
    ok(
        store.flush(ExecutionRecord::new(running.clone()).expect_status(RunStatus::Pending)).await,
        "pending -> running",
    );

    // A cancel that read the run while it was pending must not overwrite the running run.
    let mut stale_cancel = pending.clone();
    ok(stale_cancel.fail(Error::from_code(ErrorCode::Cancelled)), "fail");
    let mut patch = JsonMap::new();
    patch.insert("must_not_appear".into(), true.into());
    let record = ExecutionRecord::new(stale_cancel)
        .events(vec![event(EventKind::RunCancelled, &session.id).with_run(pending.id.clone())])
        .session_metadata(patch)
        .expect_status(RunStatus::Pending);
    expect_code(store.flush(record).await, ErrorCode::InvalidTransition, "a flush expecting pending of a running run");
    assert_eq!(ok(store.get_run(&running.id).await, "get_run"), running, "a rejected compare-and-set changed the run");
    assert_eq!(ok(store.latest_sequence(&session.id).await, "latest_sequence"), 0, "a rejected flush stored events");
    assert_eq!(ok(store.get_session(&session.id).await, "get_session"), session, "a rejected flush merged metadata");

    let mut finished = running.clone();
    ok(finished.complete(RunOutput::text("done")), "complete");
    let record = ExecutionRecord::new(finished.clone())
        .events(vec![event(EventKind::RunCompleted, &session.id).with_run(running.id.clone())])
        .expect_status(RunStatus::Running);
    ok(store.flush(record).await, "a flush expecting the stored status");
    assert_eq!(ok(store.get_run(&running.id).await, "get_run"), finished);

    let ghost = Run::new(session.id.clone(), RunInput::user("x"));
    expect_code(
        store.flush(ExecutionRecord::new(ghost.clone()).expect_status(RunStatus::Pending)).await,
        ErrorCode::RunNotFound,
        "a flush expecting a status of an unknown run",
    );
    expect_code(store.get_run(&ghost.id).await, ErrorCode::RunNotFound, "the run of a rejected flush");
}

/// Runs: no event of a run is appended after the run's terminal state is stored. A new event of
/// that run (alone, or in a batch with other events) is [`ErrorCode::InvalidTransition`] and
/// writes nothing; a retried append of an event stored before still returns it; events without
/// a run, or of another run, are unaffected.
pub async fn check_no_event_after_terminal_run(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("after-terminal")).await;
    let mut run = Run::new(session.id.clone(), RunInput::user("x"));
    ok(run.transition(RunStatus::Running), "transition");
    ok(store.save_run(&run).await, "save_run running");
    let during = ok(
        store.append_event(event(EventKind::MessageReceived, &session.id).with_run(run.id.clone())).await,
        "an event of a running run",
    );
    ok(run.complete(RunOutput::text("done")), "complete");
    let terminal = event(EventKind::RunCompleted, &session.id).with_run(run.id.clone());
    ok(store.flush(ExecutionRecord::new(run.clone()).events(vec![terminal])).await, "terminal flush");

    let late = event(EventKind::MessageReceived, &session.id).with_run(run.id.clone());
    expect_code(store.append_event(late.clone()).await, ErrorCode::InvalidTransition, "an event after run_completed");
    let unrelated = event(EventKind::SessionStarted, &session.id);
    expect_code(
        store.append_events(vec![unrelated, late]).await,
        ErrorCode::InvalidTransition,
        "a batch holding an event after run_completed",
    );
    assert_eq!(ok(store.latest_sequence(&session.id).await, "latest_sequence"), 2, "a rejected late event was stored");

    let retried = ok(store.append_event(during.clone()).await, "a retried append of an event stored before the end");
    assert_eq!(retried.sequence, during.sequence, "a retried append must return the stored event");
    ok(store.append_event(event(EventKind::SessionStarted, &session.id)).await, "an event without a run");
    let other = saved_run(store, &session).await;
    ok(store.append_event(event(EventKind::MessageSent, &session.id).with_run(other.id.clone())).await, "another run");
}

/// Every store applies one event cap: [`asm_ports::MAX_EVENT_BYTES`] by default. A 17 MiB event
/// is [`ErrorCode::InvalidInput`] in `append` and in `flush`, and nothing is written; a 1 MiB
/// event is stored.
pub async fn check_event_size_cap(store: &dyn SessionStore) {
    let session = saved_session(store, &unique_agent("size-cap")).await;
    let huge = "x".repeat(17 * 1024 * 1024);
    let oversized = event(EventKind::MessageReceived, &session.id).with_data("content", huge.clone());
    expect_code(store.append_event(oversized).await, ErrorCode::InvalidInput, "appending a 17 MiB event");
    let mut run = Run::new(session.id.clone(), RunInput::user("x"));
    ok(run.transition(RunStatus::Running), "transition");
    ok(store.save_run(&run).await, "save_run");
    let mut failed = run.clone();
    ok(failed.fail(Error::new(ErrorCode::ProviderError, "boom")), "fail");
    let terminal = event(EventKind::RunFailed, &session.id).with_run(run.id.clone()).with_data("message", huge);
    expect_code(
        store.flush(ExecutionRecord::new(failed).events(vec![terminal])).await,
        ErrorCode::InvalidInput,
        "flushing a 17 MiB event",
    );
    assert_eq!(ok(store.get_run(&run.id).await, "get_run"), run, "a rejected flush changed the run");
    assert_eq!(ok(store.latest_sequence(&session.id).await, "latest_sequence"), 0, "an oversized event was stored");
    let big = event(EventKind::MessageReceived, &session.id).with_data("content", "y".repeat(1024 * 1024));
    ok(store.append_event(big).await, "appending a 1 MiB event");
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

/// One event of a generated batch.
#[derive(Clone, Debug)]
struct EventSpec {
    /// Re-append an earlier event (of the same session) instead of a new one.
    reuse: Option<prop::sample::Index>,
    run: u8,
    kind: u8,
    timestamp: u8,
}

/// One generated read.
#[derive(Clone, Debug)]
struct QuerySpec {
    after: Option<u8>,
    before: Option<u8>,
    limit: Option<u8>,
    run: Option<u8>,
    kinds: Vec<u8>,
    since: Option<u8>,
}

const KINDS: [EventKind; 3] = [EventKind::MessageSent, EventKind::MessageReceived, EventKind::ToolCallStarted];

fn event_spec() -> impl Strategy<Value = EventSpec> {
    (prop::option::weighted(0.3, any::<prop::sample::Index>()), 0u8..3, 0u8..3, 0u8..8)
        .prop_map(|(reuse, run, kind, timestamp)| EventSpec { reuse, run, kind, timestamp })
}

fn query_spec() -> impl Strategy<Value = QuerySpec> {
    (
        prop::option::of(0u8..45),
        prop::option::of(0u8..50),
        prop::option::of(1u8..15),
        prop::option::of(0u8..3),
        prop::sample::subsequence(vec![0u8, 1, 2], 0..=2),
        prop::option::weighted(0.3, 0u8..9),
    )
        .prop_map(|(after, before, limit, run, kinds, since)| QuerySpec {
            after,
            before,
            limit,
            run,
            kinds,
            since,
        })
}

/// The simple model of one session's log.
#[derive(Default)]
struct LogModel {
    events: Vec<Event>,
    by_id: HashMap<EventId, usize>,
}

impl LogModel {
    /// Applies a batch the obvious way: one event after the other.
    fn append(&mut self, batch: &[Event], expected_last: Option<u64>) -> std::result::Result<Vec<Event>, ErrorCode> {
        let last = self.events.len() as u64;
        let any_new = batch.iter().any(|e| !self.by_id.contains_key(&e.id));
        if any_new && expected_last.is_some_and(|expected| expected != last) {
            return Err(ErrorCode::InvalidOperation);
        }
        let mut out = Vec::new();
        for e in batch {
            if let Some(&i) = self.by_id.get(&e.id) {
                out.push(self.events[i].clone());
            } else {
                let mut stored = e.clone();
                stored.sequence = Some(self.events.len() as u64 + 1);
                self.by_id.insert(e.id.clone(), self.events.len());
                self.events.push(stored.clone());
                out.push(stored);
            }
        }
        Ok(out)
    }

    /// Filters written out independently of [`EventQuery::matches`].
    fn read(&self, q: &EventQuery) -> Vec<Event> {
        let mut out = Vec::new();
        for e in &self.events {
            let seq = e.sequence.unwrap_or(0);
            let keep = q.after.is_none_or(|a| seq > a)
                && q.before.is_none_or(|b| seq < b)
                && q.run_id.as_ref().is_none_or(|r| e.run_id.as_ref() == Some(r))
                && (q.kinds.is_empty() || q.kinds.contains(&e.kind))
                && q.since.is_none_or(|s| e.timestamp >= s);
            if keep {
                out.push(e.clone());
            }
            if q.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        out
    }
}

/// Builds the events of one generated batch; `history` holds every event generated so far for
/// the session (duplicates are drawn from it).
fn build_batch(
    specs: &[EventSpec],
    session: &SessionId,
    runs: &[RunId],
    base: i64,
    history: &mut Vec<Event>,
) -> Vec<Event> {
    let mut batch = Vec::new();
    for (n, spec) in specs.iter().enumerate() {
        let e = match &spec.reuse {
            Some(index) if !history.is_empty() => {
                let mut again = index.get(history).clone();
                again.data.insert("attempt".into(), (n as u64).into());
                again
            }
            _ => {
                let mut e = Event::new(KINDS[spec.kind as usize % KINDS.len()], session.clone());
                e.run_id = runs.get(spec.run as usize).cloned();
                e.timestamp = at_micros(base + i64::from(spec.timestamp) * 1_000);
                history.push(e.clone());
                e
            }
        };
        batch.push(e);
    }
    batch
}

fn build_query(spec: &QuerySpec, runs: &[RunId], base: i64) -> EventQuery {
    let mut q = EventQuery::new();
    q.after = spec.after.map(u64::from);
    q.before = spec.before.map(u64::from);
    q.limit = spec.limit.map(usize::from);
    // Run 2 is never used by events (runs has two entries): a run without events.
    q.run_id = spec.run.map(|r| runs.get(r as usize).cloned().unwrap_or_else(RunId::new));
    q.kinds = spec.kinds.iter().map(|&k| KINDS[k as usize % KINDS.len()]).collect();
    q.since = spec.since.map(|s| at_micros(base + i64::from(s) * 1_000));
    q
}

fn proptest_runner() -> (TestRunner, tokio::runtime::Runtime) {
    let config = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("cannot build a tokio runtime for the property test: {e}"));
    (TestRunner::new(config), runtime)
}

fn store_err(what: &str, e: &Error) -> TestCaseError {
    TestCaseError::fail(format!("{what}: store error {e}"))
}

/// Property: for random batches (with re-appended and in-batch duplicate ids, several runs and
/// kinds, shuffled timestamps) followed by random reads (`after`, `before`, `limit`, `run_id`,
/// `kinds`, `since`), every append and every read returns exactly what a plain `Vec` model
/// returns. `make` builds a fresh, empty store for each case.
///
/// Runs its own current-thread runtime: call it from a plain `#[test]`, not inside a runtime.
/// The number of cases follows `PROPTEST_CASES` (default 256).
pub fn prop_cursor_reads_match_model(make: impl Fn() -> DynSessionStore) {
    let (mut runner, runtime) = proptest_runner();
    let strategy = (
        prop::collection::vec(prop::collection::vec(event_spec(), 1..6), 1..10),
        prop::collection::vec(query_spec(), 1..12),
    );
    let result = runner.run(&strategy, |(batches, queries)| {
        runtime.block_on(async {
            let store = make();
            let session = Session::new("prop-cursor").map_err(|e| store_err("Session::new", &e))?;
            store.save_session(&session).await.map_err(|e| store_err("save_session", &e))?;
            let base = session.created_at.timestamp_micros();
            let runs = [RunId::new(), RunId::new()];
            let mut model = LogModel::default();
            let mut history = Vec::new();
            for specs in &batches {
                let batch = build_batch(specs, &session.id, &runs, base, &mut history);
                let got = store.append_events(batch.clone()).await.map_err(|e| store_err("append_events", &e))?;
                let want =
                    model.append(&batch, None).map_err(|c| TestCaseError::fail(format!("model rejected: {c}")))?;
                prop_assert_eq!(got, want, "append result differs from the model");
            }
            let latest = store.latest_sequence(&session.id).await.map_err(|e| store_err("latest_sequence", &e))?;
            prop_assert_eq!(latest, model.events.len() as u64, "latest_sequence differs from the model");
            for spec in &queries {
                let query = build_query(spec, &runs, base);
                let got = store.get_events(&session.id, &query).await.map_err(|e| store_err("get_events", &e))?;
                let want = model.read(&query);
                prop_assert_eq!(
                    sequences(&got),
                    sequences(&want),
                    "read {:?} returned other sequences than the model",
                    query
                );
                prop_assert_eq!(got, want, "read returned other events than the model");
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("prop_cursor_reads_match_model: {e}");
    }
}

/// One generated append of [`prop_sequencing_matches_model`].
#[derive(Clone, Debug)]
struct AppendSpec {
    session: u8,
    events: Vec<EventSpec>,
    /// `None`: no precondition; `Some(d)`: expect `last + d` (0 is the right value).
    expected_offset: Option<i8>,
}

/// Property: for random appends to two sessions (duplicates, in-batch duplicates, and
/// compare-and-append preconditions that are sometimes right and sometimes stale), every append
/// succeeds or fails exactly as a plain model says (failures are
/// [`ErrorCode::InvalidOperation`] and write nothing), and afterwards each session's log and
/// latest sequence equal the model's: gap-free `1..=n`, in append order.
///
/// Runs its own current-thread runtime: call it from a plain `#[test]`, not inside a runtime.
pub fn prop_sequencing_matches_model(make: impl Fn() -> DynSessionStore) {
    let (mut runner, runtime) = proptest_runner();
    let append = (0u8..2, prop::collection::vec(event_spec(), 1..6), prop::option::of(-2i8..=2))
        .prop_map(|(session, events, expected_offset)| AppendSpec { session, events, expected_offset });
    let strategy = prop::collection::vec(append, 1..25);
    let result = runner.run(&strategy, |appends| {
        runtime.block_on(async {
            let store = make();
            let mut sessions = Vec::new();
            for _ in 0..2 {
                let s = Session::new("prop-sequencing").map_err(|e| store_err("Session::new", &e))?;
                store.save_session(&s).await.map_err(|e| store_err("save_session", &e))?;
                sessions.push(s);
            }
            let base = sessions[0].created_at.timestamp_micros();
            let runs = [RunId::new(), RunId::new()];
            let mut models = [LogModel::default(), LogModel::default()];
            let mut histories = [Vec::new(), Vec::new()];
            for spec in &appends {
                let i = spec.session as usize % 2;
                let batch = build_batch(&spec.events, &sessions[i].id, &runs, base, &mut histories[i]);
                let last = models[i].events.len() as u64;
                let expected = spec.expected_offset.map(|d| last.saturating_add_signed(i64::from(d)));
                let got = store.append(batch.clone(), expected).await;
                match (got, models[i].append(&batch, expected)) {
                    (Ok(got), Ok(want)) => prop_assert_eq!(got, want, "append result differs from the model"),
                    (Err(e), Err(code)) => prop_assert_eq!(e.code(), code, "append failed with another code"),
                    (Ok(got), Err(code)) => {
                        return Err(TestCaseError::fail(format!("append should fail with {code}, got Ok({got:?})")));
                    }
                    (Err(e), Ok(_)) => return Err(store_err("append should succeed", &e)),
                }
            }
            for (session, model) in sessions.iter().zip(&models) {
                let latest = store.latest_sequence(&session.id).await.map_err(|e| store_err("latest_sequence", &e))?;
                prop_assert_eq!(latest, model.events.len() as u64, "latest_sequence differs from the model");
                let all =
                    store.get_events(&session.id, &EventQuery::new()).await.map_err(|e| store_err("get_events", &e))?;
                prop_assert_eq!(sequences(&all), (1..=latest).collect::<Vec<_>>(), "the log is not gap-free");
                prop_assert_eq!(&all, &model.events, "the stored log differs from the model");
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("prop_sequencing_matches_model: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn ok<T>(result: Result<T>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: expected success, got error {e}"),
    }
}

#[track_caller]
fn expect_code<T: Debug>(result: Result<T>, code: ErrorCode, what: &str) -> Error {
    match result {
        Ok(value) => panic!("{what}: expected error {code}, got Ok({value:?})"),
        Err(e) => {
            assert_eq!(e.code(), code, "{what}: expected error {code}, got {e}");
            e
        }
    }
}

/// Awaits `future`, failing the check if it takes longer than `limit`.
async fn bounded<F: Future>(limit: Duration, future: F, what: &str) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not complete within {limit:?}"),
    }
}

fn unique_agent(check: &str) -> String {
    format!("conformance-{check}-{}", SessionId::new())
}

async fn saved_session(store: &dyn SessionStore, agent: &str) -> Session {
    let session = ok(Session::new(agent), "Session::new");
    ok(store.save_session(&session).await, "save_session");
    session
}

async fn saved_run(store: &dyn SessionStore, session: &Session) -> Run {
    let run = Run::new(session.id.clone(), RunInput::user("x"));
    ok(store.save_run(&run).await, "save_run");
    run
}

fn event(kind: EventKind, session: &SessionId) -> Event {
    Event::new(kind, session.clone())
}

fn at_micros(micros: i64) -> Timestamp {
    Timestamp::from_timestamp_micros(micros).unwrap_or_else(|| panic!("timestamp {micros} µs out of range"))
}

fn sequences<E: AsRef<Event>>(events: &[E]) -> Vec<u64> {
    events.iter().map(|e| e.as_ref().sequence.unwrap_or(0)).collect()
}

fn event_ids<E: AsRef<Event>>(events: &[E]) -> Vec<EventId> {
    events.iter().map(|e| e.as_ref().id.clone()).collect()
}

fn ids_of(sessions: &[Session]) -> Vec<SessionId> {
    sessions.iter().map(|s| s.id.clone()).collect()
}

/// Every session matching `query` (whose cursor is the starting point), following cursors.
async fn list_all(store: &dyn SessionStore, query: &SessionQuery) -> Vec<Session> {
    let mut query = query.clone();
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let page = ok(store.list_sessions(&query).await, "list_sessions");
        out.extend(page.items);
        match page.next_cursor {
            Some(cursor) => query = query.cursor(cursor),
            None => return out,
        }
    }
    panic!("list_sessions pagination did not end after 100000 pages");
}
