//! The cross-session query port: [`QueryStore`].
//!
//! Read-only queries over every session of a store (spec §3.5 / §10.5): sessions by status,
//! agent, tags and creation time; runs across sessions by provider, status and creation time;
//! usage and cost aggregates per session, agent, provider and UTC day. Every query pages with an
//! opaque keyset cursor, so a page boundary never repeats or skips a row that did not change.
//!
//! The filtering, ordering, cursor and aggregation rules are written once here
//! ([`SessionSearch::page`], [`RunSearch::page`], [`UsageReport::add_run`]); a store that
//! cannot push them into an index (the in-memory and embedded key-value stores) hands its
//! candidate rows to these functions, a SQL store translates the same rules into SQL and runs
//! the same conformance section.

use std::collections::BTreeMap;

use async_trait::async_trait;

use asm_core::{Error, ErrorCode, Result, Run, RunStatus, Session, SessionId, SessionStatus, Timestamp};

use crate::{Page, SessionStore};

/// Default page size of [`SessionSearch`] and [`RunSearch`].
pub const DEFAULT_QUERY_LIMIT: usize = 100;
/// The largest page a query may ask for; more is [`ErrorCode::ValidationError`].
pub const MAX_QUERY_LIMIT: usize = 1_000;

/// Cross-session, read-only queries. Implemented by every store; held to one contract by the
/// `query_conformance` section of `asm-testkit`.
///
/// Errors common to every method: a limit of 0 or above [`MAX_QUERY_LIMIT`] is
/// [`ErrorCode::ValidationError`]; a cursor no store produced, produced by another query kind,
/// or for another order is [`ErrorCode::InvalidCursor`] (never a silent restart at page 1).
#[async_trait]
pub trait QueryStore: SessionStore {
    /// Sessions matching `query`, one page in its order. Soft-deleted sessions are left out
    /// unless [`SessionSearch::include_deleted`].
    async fn search_sessions(&self, query: &SessionSearch) -> Result<Page<Session>>;

    /// Runs of every session matching `query`, one page in its order.
    async fn search_runs(&self, query: &RunSearch) -> Result<Page<Run>>;

    /// Token and cost totals of the runs matching `query`, overall and grouped per session,
    /// agent, provider and UTC day of the run's creation.
    async fn usage_summary(&self, query: &UsageQuery) -> Result<UsageReport>;
}

/// The order of [`QueryStore::search_sessions`]; ties are broken by session id in the same
/// direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionOrder {
    /// Oldest first.
    CreatedAtAsc,
    /// Newest first.
    CreatedAtDesc,
    /// Most recently changed first (the default). A session changed between two pages moves;
    /// rows that do not change are never repeated or skipped.
    #[default]
    UpdatedAtDesc,
}

impl SessionOrder {
    /// The snake_case name (also used inside cursors).
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionOrder::CreatedAtAsc => "created_at_asc",
            SessionOrder::CreatedAtDesc => "created_at_desc",
            SessionOrder::UpdatedAtDesc => "updated_at_desc",
        }
    }
    /// Whether the order is ascending.
    pub const fn ascending(self) -> bool {
        matches!(self, SessionOrder::CreatedAtAsc)
    }
    /// The timestamp (µs) a session sorts by.
    pub fn sort_value(self, session: &Session) -> i64 {
        match self {
            SessionOrder::CreatedAtAsc | SessionOrder::CreatedAtDesc => session.created_at.timestamp_micros(),
            SessionOrder::UpdatedAtDesc => session.updated_at.timestamp_micros(),
        }
    }
}

/// The order of [`QueryStore::search_runs`] (by the run's `created_at`, the spec's `started_at`:
/// the time the run was submitted); ties are broken by run id in the same direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunOrder {
    /// Newest first (the default).
    #[default]
    CreatedAtDesc,
    /// Oldest first.
    CreatedAtAsc,
}

impl RunOrder {
    /// The snake_case name (also used inside cursors).
    pub const fn as_str(self) -> &'static str {
        match self {
            RunOrder::CreatedAtDesc => "created_at_desc",
            RunOrder::CreatedAtAsc => "created_at_asc",
        }
    }
    /// Whether the order is ascending.
    pub const fn ascending(self) -> bool {
        matches!(self, RunOrder::CreatedAtAsc)
    }
}

/// The position a page ends at: the sort value (µs) and the id of its last row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Keyset {
    /// The last row's sort value, in µs since the epoch.
    pub value: i64,
    /// The last row's id.
    pub id: String,
}

/// Encodes a cursor: `q1.<kind>.<order>.<value>.<id>`. Opaque to callers.
fn encode_cursor(kind: &str, order: &str, value: i64, id: &str) -> String {
    format!("q1.{kind}.{order}.{value}.{id}")
}

/// Decodes a cursor made by [`encode_cursor`] for `kind` and `order`.
fn decode_cursor(cursor: &str, kind: &str, order: &str) -> Result<Keyset> {
    let invalid = |why: &str| {
        Error::new(ErrorCode::InvalidCursor, format!("invalid {kind} cursor: {why}")).with_detail("cursor", cursor)
    };
    let mut parts = cursor.splitn(5, '.');
    let (Some("q1"), Some(k), Some(o), Some(value), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a query cursor"));
    };
    if k != kind {
        return Err(invalid("the cursor belongs to another query"));
    }
    if o != order {
        return Err(invalid("the cursor was made for another order"));
    }
    let value = value.parse::<i64>().map_err(|_| invalid("bad position"))?;
    Ok(Keyset { value, id: id.to_owned() })
}

/// Checks a page size: default [`DEFAULT_QUERY_LIMIT`], 1 ..= [`MAX_QUERY_LIMIT`].
///
/// # Errors
/// [`ErrorCode::ValidationError`] (details `limit`, `max_limit`).
pub fn check_query_limit(limit: Option<usize>) -> Result<usize> {
    match limit {
        None => Ok(DEFAULT_QUERY_LIMIT),
        Some(n) if (1..=MAX_QUERY_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Error::new(
            ErrorCode::ValidationError,
            format!("query limit must be between 1 and {MAX_QUERY_LIMIT}, got {n}"),
        )
        .with_detail("limit", n)
        .with_detail("max_limit", MAX_QUERY_LIMIT)),
    }
}

/// Whether `(value, id)` comes after `after` in an order of the given direction.
fn after_keyset(ascending: bool, value: i64, id: &str, after: &Keyset) -> bool {
    let key = (value, id);
    let cut = (after.value, after.id.as_str());
    if ascending { key > cut } else { key < cut }
}

/// Sorts `rows` by `(value, id)` in the direction, cuts one page and its cursor.
fn cut_page<T>(
    mut rows: Vec<(i64, String, T)>,
    ascending: bool,
    limit: usize,
    cursor: impl Fn(i64, &str) -> String,
) -> Page<T> {
    rows.sort_by(|a, b| {
        let ord = (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str()));
        if ascending { ord } else { ord.reverse() }
    });
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more { rows.last().map(|(v, id, _)| cursor(*v, id)) } else { None };
    Page::new(rows.into_iter().map(|(_, _, row)| row).collect(), next)
}

/// A cross-session search of sessions. All filters combine; list filters match any of their
/// values (statuses) or all of them (tags).
///
/// ```
/// use asm_core::SessionStatus;
/// use asm_ports::{SessionOrder, SessionSearch};
/// let q = SessionSearch::new().agent("a").status(SessionStatus::Completed).tag("prod")
///     .order(SessionOrder::CreatedAtAsc).limit(50);
/// assert!(q.validate().is_ok());
/// assert!(SessionSearch::new().limit(1001).validate().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SessionSearch {
    /// Only sessions of this agent.
    pub agent_id: Option<String>,
    /// Only sessions in one of these statuses (empty: any).
    pub statuses: Vec<SessionStatus>,
    /// Only sessions carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only sessions created at or after this time (inclusive).
    pub created_after: Option<Timestamp>,
    /// Only sessions created at or before this time (inclusive).
    pub created_before: Option<Timestamp>,
    /// Also soft-deleted sessions (`deleted_at` set). Default: left out.
    pub include_deleted: bool,
    /// The order (default [`SessionOrder::UpdatedAtDesc`]).
    pub order: SessionOrder,
    /// Page size (default [`DEFAULT_QUERY_LIMIT`], at most [`MAX_QUERY_LIMIT`]).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page of the same query.
    pub cursor: Option<String>,
}

impl SessionSearch {
    /// Every live session.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`SessionSearch::agent_id`].
    #[must_use]
    pub fn agent(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = Some(agent_id.into());
        self
    }
    /// Adds a status to [`SessionSearch::statuses`].
    #[must_use]
    pub fn status(mut self, status: SessionStatus) -> Self {
        self.statuses.push(status);
        self
    }
    /// Adds a tag to [`SessionSearch::tags`].
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
    /// Sets [`SessionSearch::created_after`].
    #[must_use]
    pub fn created_after(mut self, at: Timestamp) -> Self {
        self.created_after = Some(at);
        self
    }
    /// Sets [`SessionSearch::created_before`].
    #[must_use]
    pub fn created_before(mut self, at: Timestamp) -> Self {
        self.created_before = Some(at);
        self
    }
    /// Sets [`SessionSearch::include_deleted`].
    #[must_use]
    pub fn include_deleted(mut self, yes: bool) -> Self {
        self.include_deleted = yes;
        self
    }
    /// Sets [`SessionSearch::order`].
    #[must_use]
    pub fn order(mut self, order: SessionOrder) -> Self {
        self.order = order;
        self
    }
    /// Sets [`SessionSearch::limit`].
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
    /// Sets [`SessionSearch::cursor`].
    #[must_use]
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Checks the limit and the cursor.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for the limit, [`ErrorCode::InvalidCursor`] for the cursor.
    pub fn validate(&self) -> Result<()> {
        check_query_limit(self.limit)?;
        self.decode_cursor().map(|_| ())
    }

    /// The validated page size.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`].
    pub fn page_size(&self) -> Result<usize> {
        check_query_limit(self.limit)
    }

    /// The position the page starts after.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidCursor`].
    pub fn decode_cursor(&self) -> Result<Option<Keyset>> {
        self.cursor.as_deref().map(|c| decode_cursor(c, "sessions", self.order.as_str())).transpose()
    }

    /// The cursor that continues after `session` in this query's order.
    pub fn encode_cursor(&self, session: &Session) -> String {
        encode_cursor("sessions", self.order.as_str(), self.order.sort_value(session), session.id.as_str())
    }

    /// Whether `session` passes the filters (not the cursor).
    pub fn matches(&self, session: &Session) -> bool {
        (self.include_deleted || session.deleted_at.is_none())
            && self.agent_id.as_ref().is_none_or(|a| &session.agent_id == a)
            && (self.statuses.is_empty() || self.statuses.contains(&session.status))
            && self.tags.iter().all(|t| session.tags.contains(t))
            && self.created_after.is_none_or(|t| session.created_at >= t)
            && self.created_before.is_none_or(|t| session.created_at <= t)
    }

    /// One page out of `candidates` (any superset of the matching sessions, in any order):
    /// filters, applies the cursor, sorts and cuts. `O(n log n)` in the candidates: for stores
    /// that scan.
    ///
    /// # Errors
    /// As [`SessionSearch::validate`].
    pub fn page(&self, candidates: impl IntoIterator<Item = Session>) -> Result<Page<Session>> {
        let limit = self.page_size()?;
        let after = self.decode_cursor()?;
        let ascending = self.order.ascending();
        let rows = candidates
            .into_iter()
            .filter(|s| self.matches(s))
            .map(|s| (self.order.sort_value(&s), s.id.as_str().to_owned(), s))
            .filter(|(v, id, _)| after.as_ref().is_none_or(|k| after_keyset(ascending, *v, id, k)))
            .collect();
        let order = self.order.as_str();
        Ok(cut_page(rows, ascending, limit, |v, id| encode_cursor("sessions", order, v, id)))
    }
}

/// A search of runs across sessions. All filters combine.
///
/// ```
/// use asm_core::RunStatus;
/// use asm_ports::RunSearch;
/// let q = RunSearch::new().provider("claude").status(RunStatus::Completed).limit(10);
/// assert!(q.validate().is_ok());
/// assert!(RunSearch::new().cursor("nonsense").validate().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RunSearch {
    /// Only runs of this session.
    pub session_id: Option<SessionId>,
    /// Only runs whose provider is this one.
    pub provider: Option<String>,
    /// Only runs in one of these statuses (empty: any).
    pub statuses: Vec<RunStatus>,
    /// Only runs created at or after this time (inclusive).
    pub created_after: Option<Timestamp>,
    /// Only runs created at or before this time (inclusive).
    pub created_before: Option<Timestamp>,
    /// The order (default [`RunOrder::CreatedAtDesc`]).
    pub order: RunOrder,
    /// Page size (default [`DEFAULT_QUERY_LIMIT`], at most [`MAX_QUERY_LIMIT`]).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page of the same query.
    pub cursor: Option<String>,
}

impl RunSearch {
    /// Every run.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`RunSearch::session_id`].
    #[must_use]
    pub fn session(mut self, session_id: SessionId) -> Self {
        self.session_id = Some(session_id);
        self
    }
    /// Sets [`RunSearch::provider`].
    #[must_use]
    pub fn provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }
    /// Adds a status to [`RunSearch::statuses`].
    #[must_use]
    pub fn status(mut self, status: RunStatus) -> Self {
        self.statuses.push(status);
        self
    }
    /// Sets [`RunSearch::created_after`].
    #[must_use]
    pub fn created_after(mut self, at: Timestamp) -> Self {
        self.created_after = Some(at);
        self
    }
    /// Sets [`RunSearch::created_before`].
    #[must_use]
    pub fn created_before(mut self, at: Timestamp) -> Self {
        self.created_before = Some(at);
        self
    }
    /// Sets [`RunSearch::order`].
    #[must_use]
    pub fn order(mut self, order: RunOrder) -> Self {
        self.order = order;
        self
    }
    /// Sets [`RunSearch::limit`].
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
    /// Sets [`RunSearch::cursor`].
    #[must_use]
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Checks the limit and the cursor.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for the limit, [`ErrorCode::InvalidCursor`] for the cursor.
    pub fn validate(&self) -> Result<()> {
        check_query_limit(self.limit)?;
        self.decode_cursor().map(|_| ())
    }

    /// The validated page size.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`].
    pub fn page_size(&self) -> Result<usize> {
        check_query_limit(self.limit)
    }

    /// The position the page starts after.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidCursor`].
    pub fn decode_cursor(&self) -> Result<Option<Keyset>> {
        self.cursor.as_deref().map(|c| decode_cursor(c, "runs", self.order.as_str())).transpose()
    }

    /// The cursor that continues after `run` in this query's order.
    pub fn encode_cursor(&self, run: &Run) -> String {
        encode_cursor("runs", self.order.as_str(), run.created_at.timestamp_micros(), run.id.as_str())
    }

    /// Whether `run` passes the filters (not the cursor).
    pub fn matches(&self, run: &Run) -> bool {
        self.session_id.as_ref().is_none_or(|s| &run.session_id == s)
            && self.provider.as_ref().is_none_or(|p| run.provider.as_ref() == Some(p))
            && (self.statuses.is_empty() || self.statuses.contains(&run.status))
            && self.created_after.is_none_or(|t| run.created_at >= t)
            && self.created_before.is_none_or(|t| run.created_at <= t)
    }

    /// One page out of `candidates` (any superset of the matching runs, in any order).
    ///
    /// # Errors
    /// As [`RunSearch::validate`].
    pub fn page(&self, candidates: impl IntoIterator<Item = Run>) -> Result<Page<Run>> {
        let limit = self.page_size()?;
        let after = self.decode_cursor()?;
        let ascending = self.order.ascending();
        let rows = candidates
            .into_iter()
            .filter(|r| self.matches(r))
            .map(|r| (r.created_at.timestamp_micros(), r.id.as_str().to_owned(), r))
            .filter(|(v, id, _)| after.as_ref().is_none_or(|k| after_keyset(ascending, *v, id, k)))
            .collect();
        let order = self.order.as_str();
        Ok(cut_page(rows, ascending, limit, |v, id| encode_cursor("runs", order, v, id)))
    }
}

/// Which runs [`QueryStore::usage_summary`] adds up. All filters combine; the time bounds apply
/// to the run's `created_at` and are inclusive.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct UsageQuery {
    /// Only runs of this session.
    pub session_id: Option<SessionId>,
    /// Only runs of sessions of this agent.
    pub agent_id: Option<String>,
    /// Only runs of this provider.
    pub provider: Option<String>,
    /// Only runs created at or after this time.
    pub since: Option<Timestamp>,
    /// Only runs created at or before this time.
    pub until: Option<Timestamp>,
}

impl UsageQuery {
    /// Every run.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`UsageQuery::session_id`].
    #[must_use]
    pub fn session(mut self, session_id: SessionId) -> Self {
        self.session_id = Some(session_id);
        self
    }
    /// Sets [`UsageQuery::agent_id`].
    #[must_use]
    pub fn agent(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = Some(agent_id.into());
        self
    }
    /// Sets [`UsageQuery::provider`].
    #[must_use]
    pub fn provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }
    /// Sets [`UsageQuery::since`].
    #[must_use]
    pub fn since(mut self, at: Timestamp) -> Self {
        self.since = Some(at);
        self
    }
    /// Sets [`UsageQuery::until`].
    #[must_use]
    pub fn until(mut self, at: Timestamp) -> Self {
        self.until = Some(at);
        self
    }

    /// Whether `run`, of a session of agent `agent_id`, is counted.
    pub fn matches(&self, run: &Run, agent_id: &str) -> bool {
        self.session_id.as_ref().is_none_or(|s| &run.session_id == s)
            && self.agent_id.as_deref().is_none_or(|a| a == agent_id)
            && self.provider.as_ref().is_none_or(|p| run.provider.as_ref() == Some(p))
            && self.since.is_none_or(|t| run.created_at >= t)
            && self.until.is_none_or(|t| run.created_at <= t)
    }
}

/// Token and cost totals of a set of runs.
///
/// `total_tokens` is input plus output of each run (the original summed a `total_tokens` key
/// adapters rarely wrote, so it usually showed 0: fixed). `cost_usd` adds the runs' stored
/// `cost_usd`; runs without one are counted in `unpriced_runs` (their tokens still count).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct UsageAggregate {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input plus output tokens.
    pub total_tokens: u64,
    /// Summed stored cost in USD.
    pub cost_usd: f64,
    /// Runs counted.
    pub run_count: u64,
    /// Runs counted that have no stored cost.
    pub unpriced_runs: u64,
}

impl UsageAggregate {
    /// Adds one run.
    pub fn add_run(&mut self, run: &Run) {
        self.input_tokens = self.input_tokens.saturating_add(run.token_usage.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(run.token_usage.output_tokens);
        self.total_tokens = self.total_tokens.saturating_add(run.token_usage.total_tokens());
        match run.cost_usd {
            Some(cost) => self.cost_usd += cost,
            None => self.unpriced_runs += 1,
        }
        self.run_count += 1;
    }

    /// Adds the totals of another set of runs (how a store that aggregates in SQL folds its
    /// grouped rows).
    pub fn merge(&mut self, other: &UsageAggregate) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.cost_usd += other.cost_usd;
        self.run_count = self.run_count.saturating_add(other.run_count);
        self.unpriced_runs = self.unpriced_runs.saturating_add(other.unpriced_runs);
    }
}

/// Provider key of runs without a provider in [`UsageReport::by_provider`].
pub const UNKNOWN_PROVIDER: &str = "unknown";

/// What [`QueryStore::usage_summary`] returns: totals overall and per group. Group maps are
/// ordered by key; days are `YYYY-MM-DD` in UTC.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct UsageReport {
    /// Every counted run.
    pub total: UsageAggregate,
    /// Per session id.
    pub by_session: BTreeMap<SessionId, UsageAggregate>,
    /// Per agent id.
    pub by_agent: BTreeMap<String, UsageAggregate>,
    /// Per provider ([`UNKNOWN_PROVIDER`] for runs without one).
    pub by_provider: BTreeMap<String, UsageAggregate>,
    /// Per UTC day of the run's `created_at`, `YYYY-MM-DD`.
    pub by_day: BTreeMap<String, UsageAggregate>,
}

impl UsageReport {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `run`, of a session of agent `agent_id`, in every group.
    pub fn add_run(&mut self, run: &Run, agent_id: &str) {
        self.total.add_run(run);
        self.by_session.entry(run.session_id.clone()).or_default().add_run(run);
        self.by_agent.entry(agent_id.to_owned()).or_default().add_run(run);
        let provider = run.provider.clone().unwrap_or_else(|| UNKNOWN_PROVIDER.to_owned());
        self.by_provider.entry(provider).or_default().add_run(run);
        self.by_day.entry(utc_day(run.created_at)).or_default().add_run(run);
    }

    /// Counts the totals of a group of runs that share session, agent, provider and UTC day
    /// (`YYYY-MM-DD`) in every group: what a store that aggregates in SQL returns per row.
    pub fn add_group(
        &mut self,
        session_id: &SessionId,
        agent_id: &str,
        provider: Option<&str>,
        day: &str,
        totals: &UsageAggregate,
    ) {
        self.total.merge(totals);
        self.by_session.entry(session_id.clone()).or_default().merge(totals);
        self.by_agent.entry(agent_id.to_owned()).or_default().merge(totals);
        self.by_provider.entry(provider.unwrap_or(UNKNOWN_PROVIDER).to_owned()).or_default().merge(totals);
        self.by_day.entry(day.to_owned()).or_default().merge(totals);
    }
}

/// The UTC day of `at`, `YYYY-MM-DD`: the key of [`UsageReport::by_day`].
pub fn utc_day(at: Timestamp) -> String {
    at.format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert_eq!(check_query_limit(None).unwrap(), DEFAULT_QUERY_LIMIT);
        assert_eq!(check_query_limit(Some(1000)).unwrap(), 1000);
        for bad in [0, 1001] {
            assert_eq!(check_query_limit(Some(bad)).unwrap_err().code(), ErrorCode::ValidationError);
        }
    }

    #[test]
    fn cursors_name_their_kind_and_order() {
        let s = Session::new("a").unwrap();
        let q = SessionSearch::new();
        let c = q.encode_cursor(&s);
        assert!(q.cursor(c.clone()).validate().is_ok());
        let other_order = SessionSearch::new().order(SessionOrder::CreatedAtAsc).cursor(c.clone());
        assert_eq!(other_order.validate().unwrap_err().code(), ErrorCode::InvalidCursor);
        assert_eq!(RunSearch::new().cursor(c).validate().unwrap_err().code(), ErrorCode::InvalidCursor);
        for bad in ["", "x", "q1.sessions.updated_at_desc.nope.id", "q2.sessions.updated_at_desc.1.id"] {
            assert_eq!(SessionSearch::new().cursor(bad).validate().unwrap_err().code(), ErrorCode::InvalidCursor);
        }
    }

    #[test]
    fn pages_are_stable_and_complete() {
        let mut all = Vec::new();
        for i in 0..25 {
            let mut s = Session::new("a").unwrap();
            // many ties on the sort value: the id breaks them
            s.updated_at = Timestamp::from_timestamp_micros(1_000 + i / 5).unwrap();
            all.push(s);
        }
        for order in [SessionOrder::CreatedAtAsc, SessionOrder::CreatedAtDesc, SessionOrder::UpdatedAtDesc] {
            let mut q = SessionSearch::new().order(order).limit(4);
            let mut seen = Vec::new();
            loop {
                let page = q.page(all.clone()).unwrap();
                seen.extend(page.items.into_iter().map(|s| s.id));
                match page.next_cursor {
                    Some(c) => q = q.cursor(c),
                    None => break,
                }
            }
            assert_eq!(seen.len(), 25, "{order:?}");
            let unique: std::collections::HashSet<_> = seen.iter().collect();
            assert_eq!(unique.len(), 25, "{order:?}");
        }
    }
}
