//! The conformance section of the query and maintenance ports: one contract, every
//! [`QueryStore`](asm_ports::QueryStore) + [`MaintenanceStore`].
//!
//! Same rules as [`conformance`](crate::conformance): plain async functions, one per behaviour,
//! that a store's tests call (one test each, generated with [`for_each_query_check!`](crate::for_each_query_check)), or
//! [`run_all`] at once. Every check creates its own sessions under a fresh agent id and only
//! asserts about those; maintenance checks scope their [`RetentionPolicy`] to that agent, so the
//! checks can share one store with anything else.
//!
//! ```no_run
//! # async fn demo(store: &dyn asm_ports::MaintenanceStore) {
//! use asm_testkit::query_conformance;
//! query_conformance::check_search_sessions_filters(store).await;
//! query_conformance::run_all(store).await;
//! # }
//! ```

use std::collections::HashSet;

use asm_core::{
    ErrorCode, Event, EventKind, Run, RunId, RunInput, RunStatus, Session, SessionId, SessionStatus, StoredEvent,
    Timestamp, TokenUsage,
};
use asm_ports::{
    EventOrder, EventQuery, EventSearch, HealthIssue, MaintenanceStore, RetentionPolicy, RunOrder, RunSearch,
    SessionOrder, SessionSearch, SessionStoreExt, UsagePricer, UsageQuery,
};

/// Calls the caller's macro `$m!` with the name of every check of this section, so each store's
/// tests generate one test per check from one list (see
/// [`for_each_store_check!`](crate::for_each_store_check)). An optional `[tokens]` after the
/// macro's name is passed first, in brackets (how [`file_store_query_tests!`](crate::file_store_query_tests)
/// hands its opener on).
#[macro_export]
macro_rules! for_each_query_check {
    ($m:ident $([$($arg:tt)*])?) => {
        $m! {
        $([$($arg)*])?
        check_search_sessions_filters,
        check_search_sessions_pagination,
        check_search_runs_filters_and_pagination,
        check_query_limits_and_cursors,
        check_usage_summary_groups,
        check_usage_priced_afterwards,
        check_search_events_filters,
        check_search_events_pagination,
        check_event_limits_and_cursors,
        check_session_stats,
        check_soft_delete_retention,
        check_hard_delete_after_grace,
        check_prune_cheap_kinds_first,
        check_prune_never_removes_protected,
        check_cursor_reads_after_prune,
        check_dry_run_changes_nothing,
        check_health_and_orphans,
        }
    };
}

/// The query and maintenance section for a store kept in files (the embedded key-value stores):
/// one test per check on a fresh store in a temp dir, the whole section twice on one store and
/// once more after a reopen, and a pruned log's gaps and counter across a reopen. `$open` is a
/// function `fn(&Path) -> Store` opening (or creating) the store at that path; the caller's
/// crate needs `tokio` (with the `macros` and `rt-multi-thread` features).
///
/// ```text
/// fn open(path: &std::path::Path) -> RedbSessionStore {
///     RedbSessionStore::open(path).expect("open the store")
/// }
/// asm_testkit::file_store_query_tests!(open);
/// ```
#[macro_export]
macro_rules! file_store_query_tests {
    ($open:path) => {
        use $crate::__file_store_query_check as __asm_file_store_query_check;
        $crate::for_each_query_check!(__asm_file_store_query_check[$open]);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn run_all_on_one_shared_store_and_after_reopen() {
            use $crate::__private::asm_ports::MaintenanceStore as _;
            let dir = $crate::__private::tempfile::tempdir().expect("create a temp dir");
            let path = dir.path().join("store");
            let store = $open(&path);
            $crate::query_conformance::run_all(&store).await;
            $crate::query_conformance::run_all(&store).await;
            drop(store);
            let reopened = $open(&path);
            $crate::query_conformance::run_all(&reopened).await;
            assert!(reopened.health_check().await.expect("health_check").is_healthy());
        }

        /// A pruned log keeps its gaps and its counter across a reopen, including events that
        /// were still in the commit-order log (not yet compacted) when the prune came.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn pruned_gaps_survive_a_reopen() {
            $crate::query_conformance::check_pruned_gaps_survive_a_reopen(|path| async move { $open(&path) }).await;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __file_store_query_check {
    ([$open:path] $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = $crate::__private::tempfile::tempdir().expect("create a temp dir");
                let store = $open(&dir.path().join("store"));
                $crate::query_conformance::$name(&store).await;
            }
        )*
    };
}

/// What [`file_store_query_tests!`](crate::file_store_query_tests) checks across a reopen: a
/// pruned log keeps its gaps and its counter, including events that were still in a
/// commit-order log (not yet compacted) when the prune came. `open` opens (or creates) the store
/// at a path; the store is dropped (closed) before each reopen.
pub async fn check_pruned_gaps_survive_a_reopen<S, F, Fut>(open: F)
where
    S: MaintenanceStore,
    F: Fn(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("store");
    let store = open(path.clone()).await;
    let session = Session::new("prune-reopen").expect("agent id is valid");
    store.save_session(&session).await.expect("save_session");
    let events = (0..6)
        .map(|i| {
            let kind = if i % 2 == 0 { EventKind::MessageStreamed } else { EventKind::MessageReceived };
            Event::new(kind, session.id.clone())
        })
        .collect();
    store.append_events(events).await.expect("append");
    assert_eq!(
        store.prune_events(&session.id, &[1, 3, 5, 6]).await.expect("prune"),
        4,
        "6 is not a cheap kind but unprotected"
    );
    drop(store);
    let store = open(path).await;
    let left = store.get_events(&session.id, &EventQuery::new()).await.expect("get_events");
    assert_eq!(left.iter().filter_map(|e| e.sequence).collect::<Vec<_>>(), vec![2, 4]);
    assert_eq!(store.latest_sequence(&session.id).await.expect("latest_sequence"), 6);
    let next = store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await.expect("append");
    assert_eq!(next.sequence, Some(7));
    assert!(store.health_check().await.expect("health_check").is_healthy());
}

/// Runs every check of the section against `store`, one after the other.
pub async fn run_all(store: &dyn MaintenanceStore) {
    check_search_sessions_filters(store).await;
    check_search_sessions_pagination(store).await;
    check_search_runs_filters_and_pagination(store).await;
    check_query_limits_and_cursors(store).await;
    check_usage_summary_groups(store).await;
    check_usage_priced_afterwards(store).await;
    check_search_events_filters(store).await;
    check_search_events_pagination(store).await;
    check_event_limits_and_cursors(store).await;
    check_session_stats(store).await;
    check_soft_delete_retention(store).await;
    check_hard_delete_after_grace(store).await;
    check_prune_cheap_kinds_first(store).await;
    check_prune_never_removes_protected(store).await;
    check_cursor_reads_after_prune(store).await;
    check_dry_run_changes_nothing(store).await;
    check_health_and_orphans(store).await;
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn fresh_agent(check: &str) -> String {
    format!("q-{check}-{}", SessionId::new().as_str())
}

fn at(micros: i64) -> Timestamp {
    Timestamp::from_timestamp_micros(micros).unwrap_or_default()
}

fn days_ago(days: u64) -> Timestamp {
    let micros = i64::try_from(days * 86_400 * 1_000_000).unwrap_or(i64::MAX);
    at(asm_core::now().timestamp_micros() - micros)
}

async fn put_session(
    store: &dyn MaintenanceStore,
    agent: &str,
    status: SessionStatus,
    tags: &[&str],
    created: Timestamp,
) -> Session {
    let mut s = Session::new(agent).expect("agent id is valid");
    s.status = status;
    s.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    s.created_at = created;
    s.updated_at = created;
    store.save_session(&s).await.expect("save_session");
    s
}

async fn put_run(
    store: &dyn MaintenanceStore,
    session: &SessionId,
    provider: Option<&str>,
    status: RunStatus,
    created: Timestamp,
    tokens: (u64, u64),
    cost: Option<f64>,
) -> Run {
    let mut run = Run::new(session.clone(), RunInput::user("q"));
    run.status = status;
    run.provider = provider.map(str::to_owned);
    run.created_at = created;
    run.token_usage = TokenUsage { input_tokens: tokens.0, output_tokens: tokens.1, ..TokenUsage::default() };
    run.cost_usd = cost;
    store.save_run(&run).await.expect("save_run");
    run
}

async fn all_sessions(store: &dyn MaintenanceStore, mut query: SessionSearch) -> Vec<Session> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = store.search_sessions(&query).await.expect("search_sessions");
        assert!(page.items.len() <= query.limit.unwrap_or(100), "a page is larger than its limit");
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => query = query.cursor(c),
            None => return out,
        }
    }
    panic!("search_sessions never returned a last page");
}

async fn all_runs(store: &dyn MaintenanceStore, mut query: RunSearch) -> Vec<Run> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = store.search_runs(&query).await.expect("search_runs");
        assert!(page.items.len() <= query.limit.unwrap_or(100), "a page is larger than its limit");
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => query = query.cursor(c),
            None => return out,
        }
    }
    panic!("search_runs never returned a last page");
}

fn ids(sessions: &[Session]) -> Vec<SessionId> {
    sessions.iter().map(|s| s.id.clone()).collect()
}

fn sorted(mut ids: Vec<SessionId>) -> Vec<SessionId> {
    ids.sort();
    ids
}

fn ev(kind: EventKind, session: &SessionId) -> Event {
    Event::new(kind, session.clone())
}

// ---------------------------------------------------------------------------------------------
// queries
// ---------------------------------------------------------------------------------------------

/// Sessions filter by agent, status (any of), tags (all of), created range (inclusive) and
/// leave soft-deleted sessions out unless asked.
pub async fn check_search_sessions_filters(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("filters");
    let t0 = 1_700_000_000_000_000;
    let a = put_session(store, &agent, SessionStatus::Completed, &["x", "y"], at(t0)).await;
    let b = put_session(store, &agent, SessionStatus::Active, &["x"], at(t0 + 10)).await;
    let c = put_session(store, &agent, SessionStatus::Failed, &[], at(t0 + 20)).await;
    let mut d = put_session(store, &agent, SessionStatus::Completed, &["x", "y"], at(t0 + 30)).await;
    d.deleted_at = Some(asm_core::now());
    store.save_session(&d).await.expect("save_session");
    let base = || SessionSearch::new().agent(agent.clone());

    let got = sorted(ids(&all_sessions(store, base()).await));
    assert_eq!(got, sorted(vec![a.id.clone(), b.id.clone(), c.id.clone()]), "agent filter / soft-deleted left out");
    let got = sorted(ids(&all_sessions(store, base().include_deleted(true)).await));
    assert_eq!(got.len(), 4, "include_deleted returns soft-deleted sessions");
    let got = sorted(ids(&all_sessions(store, base().status(SessionStatus::Completed)).await));
    assert_eq!(got, vec![a.id.clone()], "status filter");
    let got =
        sorted(ids(&all_sessions(store, base().status(SessionStatus::Completed).status(SessionStatus::Failed)).await));
    assert_eq!(got, sorted(vec![a.id.clone(), c.id.clone()]), "a list of statuses matches any of them");
    let got = ids(&all_sessions(store, base().tag("x").tag("y")).await);
    assert_eq!(got, vec![a.id.clone()], "tags must all match");
    let got = sorted(ids(&all_sessions(store, base().created_after(at(t0 + 10)).created_before(at(t0 + 20))).await));
    assert_eq!(got, sorted(vec![b.id.clone(), c.id.clone()]), "created range is inclusive on both ends");
    let other = all_sessions(store, SessionSearch::new().agent(fresh_agent("nobody"))).await;
    assert!(other.is_empty(), "an agent without sessions matches nothing");
}

/// Every order pages through every matching session exactly once, in order, with ties on the
/// sort value broken by id.
pub async fn check_search_sessions_pagination(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("pages");
    let t0 = 1_700_000_000_000_000;
    let mut made = Vec::new();
    for i in 0..23 {
        // groups of 4 share a timestamp: the id must break the ties
        let mut s = put_session(store, &agent, SessionStatus::Completed, &[], at(t0 + i / 4)).await;
        s.updated_at = at(t0 + 100 - i / 3);
        store.save_session(&s).await.expect("save_session");
        made.push(s);
    }
    for order in [SessionOrder::CreatedAtAsc, SessionOrder::CreatedAtDesc, SessionOrder::UpdatedAtDesc] {
        let got = all_sessions(store, SessionSearch::new().agent(agent.clone()).order(order).limit(5)).await;
        let mut expected = made.clone();
        expected.sort_by(|x, y| {
            let key = |s: &Session| match order {
                SessionOrder::UpdatedAtDesc => (s.updated_at, s.id.clone()),
                _ => (s.created_at, s.id.clone()),
            };
            let o = key(x).cmp(&key(y));
            if order == SessionOrder::CreatedAtAsc { o } else { o.reverse() }
        });
        assert_eq!(ids(&got), ids(&expected), "pages of {order:?} are complete, unique and in order");
    }
    // A page boundary is stable: inserting a session before the cursor does not shift the rest.
    let q = SessionSearch::new().agent(agent.clone()).order(SessionOrder::CreatedAtAsc).limit(10);
    let first = store.search_sessions(&q).await.expect("search_sessions");
    let cursor = first.next_cursor.clone().expect("23 sessions make more than one page of 10");
    put_session(store, &agent, SessionStatus::Completed, &[], at(t0 - 1)).await;
    let second = store.search_sessions(&q.clone().cursor(cursor)).await.expect("search_sessions");
    let seen: HashSet<_> = first.items.iter().map(|s| &s.id).collect();
    assert!(second.items.iter().all(|s| !seen.contains(&s.id)), "the next page repeats no row");
    let mut ascending = made.clone();
    ascending.sort_by(|x, y| (x.created_at, &x.id).cmp(&(y.created_at, &y.id)));
    assert_eq!(
        second.items.first().map(|s| &s.id),
        ascending.get(10).map(|s| &s.id),
        "the next page continues in place"
    );
}

/// Runs across sessions filter by session, provider, status (any of) and created range, and
/// page in both orders.
pub async fn check_search_runs_filters_and_pagination(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("runs");
    let t0 = 1_700_000_000_000_000;
    let s1 = put_session(store, &agent, SessionStatus::Active, &[], at(t0)).await;
    let s2 = put_session(store, &agent, SessionStatus::Active, &[], at(t0)).await;
    let provider = format!("prov-{}", SessionId::new().as_str());
    let other = format!("other-{}", SessionId::new().as_str());
    let mut mine = Vec::new();
    for i in 0..12 {
        let session = if i % 2 == 0 { &s1.id } else { &s2.id };
        let status = if i % 3 == 0 { RunStatus::Failed } else { RunStatus::Completed };
        mine.push(put_run(store, session, Some(&provider), status, at(t0 + i / 2), (1, 1), None).await);
    }
    put_run(store, &s1.id, Some(&other), RunStatus::Completed, at(t0), (1, 1), None).await;

    let got = all_runs(store, RunSearch::new().provider(provider.clone()).limit(5)).await;
    let mut expected = mine.clone();
    expected.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    let as_ids = |runs: &[Run]| runs.iter().map(|r| r.id.clone()).collect::<Vec<RunId>>();
    assert_eq!(as_ids(&got), as_ids(&expected), "default order: newest first, complete and unique");
    let got = all_runs(store, RunSearch::new().provider(provider.clone()).order(RunOrder::CreatedAtAsc).limit(4)).await;
    expected.reverse();
    assert_eq!(as_ids(&got), as_ids(&expected), "ascending order");

    let failed = all_runs(store, RunSearch::new().provider(provider.clone()).status(RunStatus::Failed)).await;
    assert_eq!(failed.len(), 4, "status filter");
    let in_s2 = all_runs(store, RunSearch::new().provider(provider.clone()).session(s2.id.clone())).await;
    assert_eq!(in_s2.len(), 6, "session filter");
    assert!(in_s2.iter().all(|r| r.session_id == s2.id));
    let window = all_runs(
        store,
        RunSearch::new().provider(provider.clone()).created_after(at(t0 + 1)).created_before(at(t0 + 2)),
    )
    .await;
    assert_eq!(window.len(), 4, "created range is inclusive");
    let all_s1 = all_runs(store, RunSearch::new().session(s1.id.clone())).await;
    assert_eq!(all_s1.len(), 7, "without a provider filter every provider counts");
}

/// Limits are 1..=1000 (default 100) else `validation_error`; malformed cursors, cursors of
/// another query kind or another order are `invalid_cursor`.
pub async fn check_query_limits_and_cursors(store: &dyn MaintenanceStore) {
    for bad in [0, 1001] {
        let err = store.search_sessions(&SessionSearch::new().limit(bad)).await.expect_err("limit out of range");
        assert_eq!(err.code(), ErrorCode::ValidationError, "session limit {bad}");
        let err = store.search_runs(&RunSearch::new().limit(bad)).await.expect_err("limit out of range");
        assert_eq!(err.code(), ErrorCode::ValidationError, "run limit {bad}");
    }
    assert!(store.search_sessions(&SessionSearch::new().limit(1000)).await.is_ok(), "limit 1000 is allowed");
    for bad in ["", "garbage", "q1.sessions.updated_at_desc.notanumber.x", "q9.sessions.updated_at_desc.1.x"] {
        let err = store.search_sessions(&SessionSearch::new().cursor(bad)).await.expect_err("malformed cursor");
        assert_eq!(err.code(), ErrorCode::InvalidCursor, "cursor {bad:?}");
        let err = store.search_runs(&RunSearch::new().cursor(bad)).await.expect_err("malformed cursor");
        assert_eq!(err.code(), ErrorCode::InvalidCursor, "cursor {bad:?}");
    }
    let agent = fresh_agent("cursor");
    for _ in 0..3 {
        put_session(store, &agent, SessionStatus::Completed, &[], asm_core::now()).await;
    }
    let page = store.search_sessions(&SessionSearch::new().agent(agent.clone()).limit(1)).await.expect("search");
    let cursor = page.next_cursor.expect("3 sessions, limit 1: there is a next page");
    let err = store
        .search_sessions(
            &SessionSearch::new().agent(agent.clone()).order(SessionOrder::CreatedAtAsc).cursor(cursor.clone()),
        )
        .await
        .expect_err("cursor of another order");
    assert_eq!(err.code(), ErrorCode::InvalidCursor, "a cursor is bound to its order");
    let err = store.search_runs(&RunSearch::new().cursor(cursor)).await.expect_err("session cursor on runs");
    assert_eq!(err.code(), ErrorCode::InvalidCursor, "a cursor is bound to its query kind");
    let last = store.search_sessions(&SessionSearch::new().agent(agent).limit(3)).await.expect("search");
    assert_eq!(last.items.len(), 3);
    assert_eq!(last.next_cursor, None, "the last page has no cursor");
}

/// Usage totals add input, output and total (input + output) tokens, stored cost and run count,
/// overall and per session, agent, provider and UTC day.
pub async fn check_usage_summary_groups(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("usage");
    let day1 = 1_700_000_000_000_000; // 2023-11-14
    let day2 = day1 + 86_400_000_000; // 2023-11-15
    let s1 = put_session(store, &agent, SessionStatus::Active, &[], at(day1)).await;
    let s2 = put_session(store, &agent, SessionStatus::Active, &[], at(day1)).await;
    put_run(store, &s1.id, Some("claude"), RunStatus::Completed, at(day1), (10, 5), Some(0.25)).await;
    put_run(store, &s1.id, Some("codex"), RunStatus::Failed, at(day2), (1, 2), Some(0.5)).await;
    put_run(store, &s2.id, None, RunStatus::Completed, at(day2 + 1), (100, 0), None).await;

    let report = store.usage_summary(&UsageQuery::new().agent(agent.clone())).await.expect("usage_summary");
    let t = report.total;
    assert_eq!((t.input_tokens, t.output_tokens, t.total_tokens), (111, 7, 118), "token totals");
    assert_eq!(t.run_count, 3);
    assert_eq!(t.unpriced_runs, 1, "a run without cost is unpriced");
    assert!((t.cost_usd - 0.75).abs() < 1e-9, "cost adds up: {}", t.cost_usd);
    assert_eq!(report.by_session.get(&s1.id).map(|u| u.run_count), Some(2));
    assert_eq!(report.by_session.get(&s2.id).map(|u| u.total_tokens), Some(100));
    assert_eq!(report.by_agent.get(&agent).map(|u| u.run_count), Some(3));
    assert_eq!(report.by_agent.len(), 1);
    assert_eq!(report.by_provider.get("claude").map(|u| u.total_tokens), Some(15));
    assert_eq!(report.by_provider.get(asm_ports::UNKNOWN_PROVIDER).map(|u| u.run_count), Some(1));
    assert_eq!(report.by_day.get("2023-11-14").map(|u| u.run_count), Some(1), "days: {:?}", report.by_day.keys());
    assert_eq!(report.by_day.get("2023-11-15").map(|u| u.run_count), Some(2));

    let only = store.usage_summary(&UsageQuery::new().agent(agent.clone()).provider("codex")).await.expect("usage");
    assert_eq!(only.total.run_count, 1, "provider filter");
    let window = store.usage_summary(&UsageQuery::new().agent(agent.clone()).since(at(day2)).until(at(day2))).await;
    assert_eq!(window.expect("usage").total.run_count, 1, "time bounds are inclusive");
    let one = store.usage_summary(&UsageQuery::new().session(s2.id.clone())).await.expect("usage");
    assert_eq!(one.total.run_count, 1, "session filter");
}

/// A pricer for the checks: `provider` "priced" costs 1 USD per input, 2 per output, 0.5 per
/// cache-read and 0.25 per cache-creation token on model "m1", 10x that on any model starting
/// "m2"; everything else is unpriceable.
struct TestPricer;

impl UsagePricer for TestPricer {
    fn price(&self, provider: &str, model: Option<&str>, usage: &TokenUsage) -> Option<f64> {
        let factor = match (provider, model) {
            ("priced", Some("m1")) => 1.0,
            ("priced", Some(m)) if m.starts_with("m2") => 10.0,
            _ => return None,
        };
        #[allow(clippy::cast_precision_loss)]
        let base = usage.input_tokens as f64
            + 2.0 * usage.output_tokens as f64
            + 0.5 * usage.cache_read_tokens as f64
            + 0.25 * usage.cache_creation_tokens as f64;
        Some(base * factor)
    }
}

/// Usage is grouped by model (`metadata.model`) too, carries the cache tokens and the token
/// usage of the runs without a stored cost, and can be priced afterwards: stored costs are kept,
/// priceable unpriced runs get a cost in every grouping, the rest stay unpriced.
pub async fn check_usage_priced_afterwards(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("priced");
    let t = 1_700_000_000_000_000;
    let s = put_session(store, &agent, SessionStatus::Active, &[], at(t)).await;
    let mut runs = Vec::new();
    // (provider, model, input, output, cache read, cache creation, stored cost)
    type Spec = (&'static str, Option<&'static str>, u64, u64, u64, u64, Option<f64>);
    let specs: [Spec; 5] = [
        ("priced", Some("m1"), 10, 5, 4, 8, None),
        ("priced", Some("m1"), 1, 1, 0, 0, Some(100.0)),
        ("priced", Some("m2-2025"), 2, 0, 0, 0, None),
        ("priced", None, 7, 7, 0, 0, None),
        ("other", Some("m1"), 3, 3, 0, 0, None),
    ];
    for (provider, model, input, output, cache_read, cache_creation, cost) in specs {
        let mut run = Run::new(s.id.clone(), RunInput::user("q"));
        run.status = RunStatus::Completed;
        run.provider = Some(provider.to_owned());
        run.created_at = at(t);
        if let Some(model) = model {
            run.metadata.insert("model".into(), model.into());
        }
        run.token_usage = TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_creation_tokens: cache_creation,
        };
        run.cost_usd = cost;
        store.save_run(&run).await.expect("save_run");
        runs.push(run);
    }
    let report = store.usage_summary(&UsageQuery::new().agent(agent.clone())).await.expect("usage_summary");
    assert_eq!(report.total.run_count, 5);
    assert_eq!(report.total.unpriced_runs, 4);
    assert_eq!(report.total.cache_read_tokens, 4, "cache reads are summed");
    assert_eq!(report.total.cache_creation_tokens, 8, "cache writes are summed");
    assert_eq!(report.total.unpriced_usage.input_tokens, 10 + 2 + 7 + 3, "the unpriced runs' tokens");
    assert_eq!(report.by_model.get("m1").map(|u| u.run_count), Some(3), "models: {:?}", report.by_model.keys());
    assert_eq!(report.by_model.get(asm_ports::UNKNOWN_MODEL).map(|u| u.run_count), Some(1));
    let grouped: u64 = report.groups.iter().map(|g| g.totals.run_count).sum();
    assert_eq!(grouped, 5, "the finest groups hold every run");

    let priced = report.priced(&TestPricer);
    // run 1: 10 + 10 + 2 + 2 = 24; run 2: stored 100; run 3: 2 * 10 = 20; runs 4, 5: unpriceable.
    let t = priced.total;
    assert!((t.cost_usd - 144.0).abs() < 1e-9, "priced total: {}", t.cost_usd);
    assert_eq!(t.unpriced_runs, 2, "the runs the pricer cannot price stay unpriced");
    assert_eq!(t.run_count, 5);
    assert_eq!((t.input_tokens, t.output_tokens), (report.total.input_tokens, report.total.output_tokens));
    let m1 = priced.by_model.get("m1").expect("m1");
    assert!((m1.cost_usd - 124.0).abs() < 1e-9, "by model: {}", m1.cost_usd);
    assert_eq!(m1.unpriced_runs, 1, "the other provider's m1 run");
    let session = priced.by_session.get(&s.id).expect("the session");
    assert!((session.cost_usd - 144.0).abs() < 1e-9, "every grouping is priced: {}", session.cost_usd);
    assert!((priced.by_provider.get("other").map_or(-1.0, |u| u.cost_usd)).abs() < 1e-9);
}

fn event_at(kind: EventKind, session: &SessionId, micros: i64) -> Event {
    let mut record = ev(kind, session).into_record();
    record.timestamp = at(micros);
    Event::from(record)
}

fn with_correlation(event: Event, correlation: &str) -> Event {
    let mut record = event.into_record();
    record.correlation_id = Some(correlation.to_owned());
    Event::from(record)
}

async fn all_events(store: &dyn MaintenanceStore, mut query: EventSearch) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = store.search_events(&query).await.expect("search_events");
        assert!(page.items.len() <= query.limit.unwrap_or(100), "a page is larger than its limit");
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => query = query.cursor(c),
            None => return out,
        }
    }
    panic!("search_events never returned a last page");
}

fn event_ids<E: AsRef<Event>>(events: &[E]) -> Vec<String> {
    let mut ids: Vec<String> = events.iter().map(|e| e.as_ref().id.as_str().to_owned()).collect();
    ids.sort();
    ids
}

/// Events across sessions filter by sessions, runs, kinds, providers, time range (inclusive),
/// correlation id and payload text, and `count_events` counts the same set.
pub async fn check_search_events_filters(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("events");
    let t0 = 1_700_000_000_000_000;
    let s1 = put_session(store, &agent, SessionStatus::Active, &[], at(t0)).await;
    let s2 = put_session(store, &agent, SessionStatus::Active, &[], at(t0)).await;
    let run = put_run(store, &s1.id, Some("p"), RunStatus::Running, at(t0), (0, 0), None).await;
    let provider = format!("prov-{}", SessionId::new().as_str());
    let correlation = format!("corr-{}", SessionId::new().as_str());
    let needle = format!("needle{}", SessionId::new().as_str());
    let a = event_at(EventKind::MessageSent, &s1.id, t0 + 10).with_provider(provider.clone()).with_run(run.id.clone());
    let b = with_correlation(
        event_at(EventKind::ErrorOccurred, &s1.id, t0 + 20).with_data("message", format!("a {needle} here")),
        &correlation,
    );
    let c = event_at(EventKind::MessageSent, &s2.id, t0 + 30).with_provider(provider.clone());
    let d = event_at(EventKind::MessageReceived, &s2.id, t0 + 40).with_data("content", "plain");
    let s1_events = store.append_events(vec![a, b]).await.expect("append");
    let s2_events = store.append_events(vec![c, d]).await.expect("append");
    let (a, b, c, d) = (&s1_events[0], &s1_events[1], &s2_events[0], &s2_events[1]);
    let both = || EventSearch::new().session(s1.id.clone()).session(s2.id.clone());

    let cases: Vec<(&str, EventSearch, Vec<&Event>)> = vec![
        ("two sessions", both(), vec![a, b, c, d]),
        ("one session", EventSearch::new().session(s2.id.clone()), vec![c, d]),
        ("a run", both().run(run.id.clone()), vec![a]),
        ("a kind", both().kind(EventKind::MessageSent), vec![a, c]),
        ("kinds match any", both().kind(EventKind::ErrorOccurred).kind(EventKind::MessageReceived), vec![b, d]),
        ("a provider, across sessions", EventSearch::new().provider(provider.clone()), vec![a, c]),
        ("an inclusive time range", both().since(at(t0 + 20)).until(at(t0 + 30)), vec![b, c]),
        ("a correlation id", EventSearch::new().correlation(correlation.clone()), vec![b]),
        ("payload text", EventSearch::new().text(needle.clone()), vec![b]),
        ("payload text in a session", both().text("plain"), vec![d]),
        ("filters combine", both().kind(EventKind::MessageSent).since(at(t0 + 25)), vec![c]),
        ("nothing", both().kind(EventKind::RunCancelled), vec![]),
    ];
    for (what, query, expected) in cases {
        let got = all_events(store, query.clone()).await;
        let expected: Vec<Event> = expected.into_iter().cloned().collect();
        assert_eq!(event_ids(&got), event_ids(&expected), "{what}");
        if let Some(e) = got.iter().find(|e| e.id == b.id) {
            assert_eq!(e, b, "{what}: an event reads back as stored");
        }
        let counted = store.count_events(&query).await.expect("count_events");
        assert_eq!(counted, expected.len() as u64, "{what}: count_events counts the same events");
    }
    let counted = store.count_events(&both().limit(1)).await.expect("count_events");
    assert_eq!(counted, 4, "count_events ignores the page size");
    let unknown = store.search_events(&EventSearch::new().session(SessionId::new())).await.expect("search_events");
    assert!(unknown.items.is_empty(), "an unknown session has no events (not an error)");
}

/// Every event order pages through every matching event exactly once, in order, ties broken by
/// event id.
pub async fn check_search_events_pagination(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("event-pages");
    let t0 = 1_700_000_000_000_000;
    let s1 = put_session(store, &agent, SessionStatus::Active, &[], at(t0)).await;
    let s2 = put_session(store, &agent, SessionStatus::Active, &[], at(t0)).await;
    let mut made = Vec::new();
    for session in [&s1.id, &s2.id] {
        // groups of 3 share a timestamp: the id breaks the ties
        let batch = (0..11).map(|i| event_at(EventKind::MessageSent, session, t0 + i / 3)).collect();
        made.extend(store.append_events(batch).await.expect("append"));
    }
    for order in [EventOrder::SequenceAsc, EventOrder::TimestampAsc, EventOrder::TimestampDesc] {
        let query = EventSearch::new().session(s1.id.clone()).session(s2.id.clone()).order(order).limit(4);
        let got = all_events(store, query).await;
        let mut expected = made.clone();
        expected.sort_by(|x, y| {
            let key = |e: &Event| (order.sort_value(e), e.id.as_str().to_owned());
            let o = key(x).cmp(&key(y));
            if order.ascending() { o } else { o.reverse() }
        });
        let as_ids = |events: &[StoredEvent]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(as_ids(&got), as_ids(&expected), "pages of {order:?} are complete, unique and in order");
    }
    let one = all_events(store, EventSearch::new().session(s2.id.clone()).limit(3)).await;
    let seqs: Vec<u64> = one.iter().filter_map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>(), "one session in sequence order: its log");
}

/// Event search limits are 1..=1000 (default 100) else `validation_error`; malformed cursors,
/// cursors of another query kind or another order are `invalid_cursor`.
pub async fn check_event_limits_and_cursors(store: &dyn MaintenanceStore) {
    for bad in [0, 1001] {
        let err = store.search_events(&EventSearch::new().limit(bad)).await.expect_err("limit out of range");
        assert_eq!(err.code(), ErrorCode::ValidationError, "event limit {bad}");
    }
    for bad in ["", "garbage", "q1.events.sequence_asc.notanumber.x", "q9.events.sequence_asc.1.x"] {
        let err = store.search_events(&EventSearch::new().cursor(bad)).await.expect_err("malformed cursor");
        assert_eq!(err.code(), ErrorCode::InvalidCursor, "cursor {bad:?}");
    }
    let agent = fresh_agent("event-cursor");
    let s = put_session(store, &agent, SessionStatus::Active, &[], asm_core::now()).await;
    store.append_events((0..3).map(|_| ev(EventKind::MessageSent, &s.id)).collect()).await.expect("append");
    let q = EventSearch::new().session(s.id.clone()).limit(1);
    let page = store.search_events(&q).await.expect("search_events");
    let cursor = page.next_cursor.expect("3 events, limit 1: there is a next page");
    let err = store
        .search_events(&q.clone().order(EventOrder::TimestampAsc).cursor(cursor.clone()))
        .await
        .expect_err("a cursor of another order");
    assert_eq!(err.code(), ErrorCode::InvalidCursor, "an event cursor is bound to its order");
    let err = store.search_sessions(&SessionSearch::new().cursor(cursor)).await.expect_err("an event cursor");
    assert_eq!(err.code(), ErrorCode::InvalidCursor, "an event cursor is bound to its query kind");
    let last = store.search_events(&q.limit(3)).await.expect("search_events");
    assert_eq!((last.items.len(), last.next_cursor), (3, None), "the last page has no cursor");
}

/// Session stats: events per kind, runs per status, usage totals, providers, first and last
/// event time, the counter (also after pruning); an unknown session is `session_not_found`.
pub async fn check_session_stats(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("stats");
    let t0 = 1_700_000_000_000_000;
    let s = put_session(store, &agent, SessionStatus::Active, &[], at(t0)).await;
    let empty = store.get_session_stats(&s.id).await.expect("stats of a new session");
    assert_eq!((empty.event_count, empty.run_count, empty.last_sequence), (0, 0, 0));
    assert_eq!((empty.first_event_at, empty.last_event_at), (None, None));

    put_run(store, &s.id, Some("codex"), RunStatus::Completed, at(t0), (10, 5), Some(0.5)).await;
    put_run(store, &s.id, Some("claude"), RunStatus::Failed, at(t0), (1, 2), None).await;
    put_run(store, &s.id, Some("claude"), RunStatus::Completed, at(t0), (3, 0), None).await;
    let events = vec![
        event_at(EventKind::SessionCreated, &s.id, t0 + 5),
        event_at(EventKind::MessageStreamed, &s.id, t0 + 1),
        event_at(EventKind::MessageStreamed, &s.id, t0 + 9),
        event_at(EventKind::RunCompleted, &s.id, t0 + 7),
    ];
    store.append_events(events).await.expect("append");
    let stats = store.get_session_stats(&s.id).await.expect("get_session_stats");
    assert_eq!(stats.session_id, s.id);
    assert_eq!(stats.event_count, 4);
    assert_eq!(stats.events_by_kind.get(&EventKind::MessageStreamed), Some(&2));
    assert_eq!(stats.events_by_kind.get(&EventKind::SessionCreated), Some(&1));
    assert_eq!(stats.events_by_kind.len(), 3);
    assert_eq!(stats.run_count, 3);
    assert_eq!(stats.runs_by_status.get("completed"), Some(&2));
    assert_eq!(stats.runs_by_status.get("failed"), Some(&1));
    assert_eq!((stats.usage.input_tokens, stats.usage.output_tokens, stats.usage.total_tokens), (14, 7, 21));
    assert_eq!(stats.usage.unpriced_runs, 2);
    assert!((stats.usage.cost_usd - 0.5).abs() < 1e-9);
    assert_eq!(stats.providers_used, vec!["claude".to_owned(), "codex".to_owned()]);
    assert_eq!(stats.first_event_at, Some(at(t0 + 1)), "the earliest timestamp, not the first sequence");
    assert_eq!(stats.last_event_at, Some(at(t0 + 9)));
    assert_eq!(stats.last_sequence, 4);
    assert_eq!(store.prune_events(&s.id, &[3]).await.expect("prune"), 1);
    let pruned = store.get_session_stats(&s.id).await.expect("get_session_stats");
    assert_eq!(pruned.event_count, 3, "pruned events are not counted");
    assert_eq!(pruned.last_sequence, 4, "the counter does not move");
    assert_eq!(pruned.last_event_at, Some(at(t0 + 7)));
    let err = store.get_session_stats(&SessionId::new()).await.expect_err("unknown session");
    assert_eq!(err.code(), ErrorCode::SessionNotFound);
}

/// How a store's test makes orphans for [`check_orphans_removed`]: rows that refer to no
/// session, made by damaging the store from outside the port (the port cannot make them).
#[async_trait::async_trait]
pub trait OrphanMaker: Send + Sync {
    /// Damages `store` so that the events and runs of `session` (which has both) are left
    /// without their session record, and returns how many orphaned rows (events plus runs) a
    /// cleanup should remove.
    async fn orphan(&self, store: &dyn MaintenanceStore, session: &Session) -> u64;
}

/// For stores that can hold orphans: a dry cleanup counts them and changes nothing, the health
/// check reports them, a real cleanup removes exactly them (live sessions keep everything), and
/// afterwards the store is healthy and a second cleanup finds nothing.
pub async fn check_orphans_removed(store: &dyn MaintenanceStore, maker: &dyn OrphanMaker) {
    let agent = fresh_agent("orphans");
    let live = put_session(store, &agent, SessionStatus::Active, &[], asm_core::now()).await;
    let doomed = put_session(store, &agent, SessionStatus::Active, &[], asm_core::now()).await;
    for s in [&live, &doomed] {
        put_run(store, &s.id, Some("p"), RunStatus::Completed, asm_core::now(), (1, 1), None).await;
        store.append_events((0..3).map(|_| ev(EventKind::MessageSent, &s.id)).collect()).await.expect("append");
    }
    let expected = maker.orphan(store, &doomed).await;
    assert!(expected > 0, "the maker made no orphans");
    let before = store.clean_orphans(true).await.expect("a dry cleanup");
    assert!(before >= expected, "a dry cleanup counts the orphans: {before} < {expected}");
    let health = store.health_check().await.expect("health_check");
    assert!(
        health
            .issues
            .iter()
            .any(|i| matches!(i, HealthIssue::OrphanedEvents { .. } | HealthIssue::OrphanedRuns { .. })),
        "the health check reports orphans: {:?}",
        health.issues
    );
    assert_eq!(store.clean_orphans(true).await.expect("a dry cleanup"), before, "a dry cleanup changes nothing");
    let removed = store.clean_orphans(false).await.expect("clean_orphans");
    assert_eq!(removed, before, "the cleanup removes what the dry run counted");
    assert_eq!(store.clean_orphans(true).await.expect("a dry cleanup"), 0, "nothing is left");
    let health = store.health_check().await.expect("health_check");
    assert!(
        !health
            .issues
            .iter()
            .any(|i| matches!(i, HealthIssue::OrphanedEvents { .. } | HealthIssue::OrphanedRuns { .. })),
        "no orphans after the cleanup: {:?}",
        health.issues
    );
    assert_eq!(store.get_events(&live.id, &EventQuery::new()).await.expect("get_events").len(), 3);
    assert_eq!(store.search_runs(&RunSearch::new().session(live.id.clone())).await.expect("runs").items.len(), 1);
    let orphaned = store.count_events(&EventSearch::new().session(doomed.id.clone())).await.expect("count_events");
    assert_eq!(orphaned, 0, "the orphaned events are gone");
    let runs = store.search_runs(&RunSearch::new().session(doomed.id.clone())).await.expect("search_runs");
    assert!(runs.items.is_empty(), "the orphaned runs are gone");
}

// ---------------------------------------------------------------------------------------------
// maintenance
// ---------------------------------------------------------------------------------------------

fn policy(agent: &str) -> RetentionPolicy {
    RetentionPolicy::new().agent(agent)
}

/// Soft delete marks old sessions of non-exempt status and without exempt tags, by `updated_at`,
/// and keeps the records readable.
pub async fn check_soft_delete_retention(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("soft");
    let old = days_ago(100);
    let expired = put_session(store, &agent, SessionStatus::Completed, &[], old).await;
    let expired_failed = put_session(store, &agent, SessionStatus::Failed, &[], old).await;
    let active = put_session(store, &agent, SessionStatus::Active, &[], old).await;
    let pinned = put_session(store, &agent, SessionStatus::Completed, &["pinned"], old).await;
    let mut recent = put_session(store, &agent, SessionStatus::Completed, &[], old).await;
    recent.updated_at = asm_core::now();
    store.save_session(&recent).await.expect("save_session");

    let report = store.run_maintenance(&policy(&agent)).await.expect("run_maintenance");
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert!(!report.dry_run);
    assert_eq!(
        sorted(report.sessions_soft_deleted.clone()),
        sorted(vec![expired.id.clone(), expired_failed.id.clone()]),
        "exactly the expired, non-exempt sessions are soft deleted"
    );
    assert!(report.sessions_hard_deleted.is_empty(), "nothing is past its grace period yet");
    let stored = store.get_session(&expired.id).await.expect("a soft-deleted session is still readable");
    assert!(stored.deleted_at.is_some(), "deleted_at is set");
    for keep in [&active, &pinned, &recent] {
        let s = store.get_session(&keep.id).await.expect("get_session");
        assert!(s.deleted_at.is_none(), "session {} must be kept", keep.id);
    }
    let live = all_sessions(store, SessionSearch::new().agent(agent.clone())).await;
    assert_eq!(live.len(), 3, "searches leave soft-deleted sessions out");
    let again = store.run_maintenance(&policy(&agent)).await.expect("run_maintenance");
    assert!(again.sessions_soft_deleted.is_empty(), "a soft delete happens once");
}

/// Hard delete removes soft-deleted sessions past the grace period with their runs and events,
/// and keeps the ones still inside it.
pub async fn check_hard_delete_after_grace(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("hard");
    let mut gone = put_session(store, &agent, SessionStatus::Completed, &[], days_ago(200)).await;
    gone.deleted_at = Some(days_ago(40));
    store.save_session(&gone).await.expect("save_session");
    let run = put_run(store, &gone.id, Some("p"), RunStatus::Completed, days_ago(200), (1, 1), None).await;
    store.append_event(ev(EventKind::SessionCreated, &gone.id)).await.expect("append");
    let mut grace = put_session(store, &agent, SessionStatus::Completed, &[], days_ago(200)).await;
    grace.deleted_at = Some(days_ago(5));
    store.save_session(&grace).await.expect("save_session");

    let report = store.run_maintenance(&policy(&agent)).await.expect("run_maintenance");
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(report.sessions_hard_deleted, vec![gone.id.clone()]);
    assert_eq!(store.get_session(&gone.id).await.expect_err("deleted").code(), ErrorCode::SessionNotFound);
    assert_eq!(store.get_run(&run.id).await.expect_err("cascade").code(), ErrorCode::RunNotFound);
    let runs = store.search_runs(&RunSearch::new().session(gone.id.clone())).await.expect("search_runs");
    assert!(runs.items.is_empty(), "no run of a hard-deleted session is left");
    assert!(store.get_session(&grace.id).await.is_ok(), "a session inside its grace period stays");
    let none = RetentionPolicy::new().agent(agent.clone()).hard_delete_after(None);
    let mut old = put_session(store, &agent, SessionStatus::Completed, &[], days_ago(200)).await;
    old.deleted_at = Some(days_ago(400));
    store.save_session(&old).await.expect("save_session");
    let report = store.run_maintenance(&none).await.expect("run_maintenance");
    assert!(report.sessions_hard_deleted.is_empty(), "no grace period set: no hard delete");
}

/// A session above the event limit loses its oldest cheap events first, then other unprotected
/// ones; the counter does not move and the next append continues after it.
pub async fn check_prune_cheap_kinds_first(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("prune");
    let s = put_session(store, &agent, SessionStatus::Active, &[], asm_core::now()).await;
    use EventKind::*;
    let kinds = [
        SessionCreated,
        RunStarted,
        MessageSent,
        MessageStreamed,
        ReasoningStreamed,
        MessageStreamed,
        ProviderRaw,
        TokenUsageUpdated,
        MessageReceived,
        RunCompleted,
    ];
    store.append_events(kinds.iter().map(|k| ev(*k, &s.id)).collect()).await.expect("append");
    let p = policy(&agent).max_events_per_session(6).max_session_age(None);
    let report = store.run_maintenance(&p).await.expect("run_maintenance");
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(report.events_pruned, 4, "10 events, limit 6");
    assert_eq!(report.pruned_sessions, vec![(s.id.clone(), 4)]);
    let left = store.get_events(&s.id, &EventQuery::new()).await.expect("get_events");
    let seqs: Vec<u64> = left.iter().filter_map(|e| e.sequence).collect();
    assert_eq!(seqs, vec![1, 2, 3, 8, 9, 10], "the oldest cheap events go first");
    let p = policy(&agent).max_events_per_session(5).max_session_age(None);
    store.run_maintenance(&p).await.expect("run_maintenance");
    let left = store.get_events(&s.id, &EventQuery::new()).await.expect("get_events");
    let kinds_left: Vec<EventKind> = left.iter().map(|e| e.kind).collect();
    assert_eq!(kinds_left, vec![SessionCreated, RunStarted, MessageSent, MessageReceived, RunCompleted]);
    assert_eq!(store.latest_sequence(&s.id).await.expect("latest_sequence"), 10, "the counter never moves back");
    let next = store.append_event(ev(MessageSent, &s.id)).await.expect("append");
    assert_eq!(next.sequence, Some(11), "a pruned number is never reused");
}

/// Protected kinds are never pruned, even when asked for directly; the session may stay above
/// the limit.
pub async fn check_prune_never_removes_protected(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("protect");
    let s = put_session(store, &agent, SessionStatus::Active, &[], asm_core::now()).await;
    use EventKind::*;
    let kinds =
        [SessionCreated, RunStarted, ErrorOccurred, RunFailed, RunCancelled, RunTimeout, SessionFailed, RunCompleted];
    store.append_events(kinds.iter().map(|k| ev(*k, &s.id)).collect()).await.expect("append");
    let removed = store.prune_events(&s.id, &[1, 2, 3, 4, 5, 6, 7, 8, 99]).await.expect("prune_events");
    assert_eq!(removed, 0, "protected events are kept");
    let report = store.run_maintenance(&policy(&agent).max_events_per_session(1)).await.expect("run_maintenance");
    assert_eq!(report.events_pruned, 0);
    assert_eq!(store.get_events(&s.id, &EventQuery::new()).await.expect("get_events").len(), kinds.len());
    let err = store.prune_events(&SessionId::new(), &[1]).await.expect_err("unknown session");
    assert_eq!(err.code(), ErrorCode::SessionNotFound);
}

/// After pruning, cursor reads (`after`, `before`, `limit`, `run_id`, `kinds`) skip the gaps and
/// return the remaining events in order.
pub async fn check_cursor_reads_after_prune(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("gaps");
    let s = put_session(store, &agent, SessionStatus::Active, &[], asm_core::now()).await;
    let run = put_run(store, &s.id, Some("p"), RunStatus::Running, asm_core::now(), (0, 0), None).await;
    let events: Vec<Event> = (0..20)
        .map(|i| {
            let kind = if i % 2 == 0 { EventKind::MessageStreamed } else { EventKind::MessageReceived };
            ev(kind, &s.id).with_run(run.id.clone())
        })
        .collect();
    store.append_events(events).await.expect("append");
    let pruned = store.prune_events(&s.id, &[1, 3, 5, 7, 9, 11, 13, 15, 17, 19]).await.expect("prune");
    assert_eq!(pruned, 10);
    let all = store.get_events(&s.id, &EventQuery::new()).await.expect("get_events");
    let seqs: Vec<u64> = all.iter().filter_map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=10).map(|i| i * 2).collect::<Vec<_>>());
    let page = store.get_events(&s.id, &EventQuery::new().after(4).limit(3)).await.expect("get_events");
    assert_eq!(page.iter().filter_map(|e| e.sequence).collect::<Vec<_>>(), vec![6, 8, 10], "after + limit");
    let page = store.get_events(&s.id, &EventQuery::new().after(3).before(9)).await.expect("get_events");
    assert_eq!(page.iter().filter_map(|e| e.sequence).collect::<Vec<_>>(), vec![4, 6, 8], "after + before");
    let by_run = store.get_events(&s.id, &EventQuery::new().run(run.id.clone()).after(15)).await.expect("get_events");
    assert_eq!(by_run.iter().filter_map(|e| e.sequence).collect::<Vec<_>>(), vec![16, 18, 20], "run_id reads");
    let kinds = store.get_events(&s.id, &EventQuery::new().kind(EventKind::MessageStreamed)).await.expect("get_events");
    assert!(kinds.is_empty(), "every streamed event was pruned");
    // A pruned id is forgotten: appending it again stores it anew after the counter.
    let again = store.append_event(ev(EventKind::MessageSent, &s.id)).await.expect("append");
    assert_eq!(again.sequence, Some(21));
}

/// A dry run reports what a cycle would do and changes nothing.
pub async fn check_dry_run_changes_nothing(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("dry");
    let soft = put_session(store, &agent, SessionStatus::Completed, &[], days_ago(100)).await;
    let mut hard = put_session(store, &agent, SessionStatus::Completed, &[], days_ago(100)).await;
    hard.deleted_at = Some(days_ago(60));
    store.save_session(&hard).await.expect("save_session");
    let big = put_session(store, &agent, SessionStatus::Active, &[], asm_core::now()).await;
    let events: Vec<Event> = (0..8).map(|_| ev(EventKind::MessageStreamed, &big.id)).collect();
    store.append_events(events).await.expect("append");

    let p = policy(&agent).max_events_per_session(3).dry_run(true);
    let report = store.run_maintenance(&p).await.expect("run_maintenance");
    assert!(report.dry_run);
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(report.sessions_soft_deleted, vec![soft.id.clone()]);
    assert_eq!(report.sessions_hard_deleted, vec![hard.id.clone()]);
    assert_eq!(report.events_pruned, 5);
    assert!(store.get_session(&soft.id).await.expect("kept").deleted_at.is_none(), "dry run: no soft delete");
    assert!(store.get_session(&hard.id).await.is_ok(), "dry run: no hard delete");
    assert_eq!(store.get_events(&big.id, &EventQuery::new()).await.expect("get_events").len(), 8, "dry run: no prune");
    assert!(store.clean_orphans(true).await.is_ok(), "a dry orphan cleanup succeeds");
    let wet = store.run_maintenance(&p.dry_run(false)).await.expect("run_maintenance");
    assert_eq!(wet.events_pruned, 5, "the real run does what the dry run reported");
}

/// The health check finds no problem in consistent data, also after pruning the newest event
/// (the counter is then ahead of the newest event, which is fine); orphan cleanup succeeds.
pub async fn check_health_and_orphans(store: &dyn MaintenanceStore) {
    let agent = fresh_agent("health");
    let s = put_session(store, &agent, SessionStatus::Active, &[], asm_core::now()).await;
    let events = vec![ev(EventKind::SessionCreated, &s.id), ev(EventKind::MessageStreamed, &s.id)];
    store.append_events(events).await.expect("append");
    assert_eq!(store.prune_events(&s.id, &[2]).await.expect("prune"), 1);
    let report = store.health_check().await.expect("health_check");
    let mine: Vec<&HealthIssue> = report
        .issues
        .iter()
        .filter(|i| matches!(i, HealthIssue::SequenceBehind { session_id, .. } if *session_id == s.id))
        .collect();
    assert!(mine.is_empty(), "pruning the newest event is not a sequence problem: {mine:?}");
    assert!(
        !report
            .issues
            .iter()
            .any(|i| matches!(i, HealthIssue::OrphanedEvents { .. } | HealthIssue::OrphanedRuns { .. })),
        "a store that cascades its deletes has no orphans: {:?}",
        report.issues
    );
    store.clean_orphans(false).await.expect("clean_orphans");
    assert!(store.get_session(&s.id).await.is_ok(), "orphan cleanup keeps live sessions");
    assert_eq!(store.get_events(&s.id, &EventQuery::new()).await.expect("get_events").len(), 1);
}
