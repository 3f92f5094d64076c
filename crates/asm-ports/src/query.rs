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

use asm_core::{
    Error, ErrorCode, Event, EventKind, Result, Run, RunId, RunStatus, Session, SessionId, SessionStatus, StoredEvent,
    Timestamp, TokenUsage,
};

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

    /// Stored events of every session matching `query`, one page in its order.
    async fn search_events(&self, query: &EventSearch) -> Result<Page<StoredEvent>>;

    /// How many stored events match `query`'s filters (its order, limit and cursor are not
    /// used).
    async fn count_events(&self, query: &EventSearch) -> Result<u64>;

    /// Statistics of one session: events per kind, runs per status, usage totals, providers,
    /// first and last event time, the sequence counter. Unknown session:
    /// [`ErrorCode::SessionNotFound`].
    async fn get_session_stats(&self, session_id: &SessionId) -> Result<SessionStats>;
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

asm_core::string_enum! {
    /// The snake_case name (also used inside cursors).
    SessionOrder {
        CreatedAtAsc => "created_at_asc",
        CreatedAtDesc => "created_at_desc",
        UpdatedAtDesc => "updated_at_desc",
    }
}

impl SessionOrder {
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

asm_core::string_enum! {
    /// The snake_case name (also used inside cursors).
    RunOrder {
        CreatedAtDesc => "created_at_desc",
        CreatedAtAsc => "created_at_asc",
    }
}

impl RunOrder {
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

/// The rule of every list filter (statuses, kinds, ids, providers): empty matches every row,
/// otherwise the row's value must be one of the list (a row without the value matches none).
pub(crate) fn any_of<T: PartialEq>(filter: &[T], value: Option<&T>) -> bool {
    filter.is_empty() || value.is_some_and(|v| filter.contains(v))
}

/// The rule of every time filter: `from ..= to`, inclusive, each end only when given.
fn within(at: Timestamp, from: Option<Timestamp>, to: Option<Timestamp>) -> bool {
    from.is_none_or(|t| at >= t) && to.is_none_or(|t| at <= t)
}

/// Whether `(value, id)` comes after `after` in an order of the given direction.
fn after_keyset(ascending: bool, value: i64, id: &str, after: &Keyset) -> bool {
    let key = (value, id);
    let cut = (after.value, after.id.as_str());
    if ascending { key > cut } else { key < cut }
}

/// What every paged query of this module ([`SessionSearch`], [`RunSearch`], [`EventSearch`])
/// shares: a page size, a cursor, the query kind and order the cursor is bound to, and the
/// direction. The setters, the checks and the scan-store pagination are written once on top of
/// it ([`paged_query!`], [`keyset_page`]).
trait PagedQuery {
    /// The kind written into (and required of) cursors.
    const KIND: &'static str;
    fn limit_value(&self) -> Option<usize>;
    fn cursor_value(&self) -> Option<&str>;
    fn order_name(&self) -> &'static str;
    fn ascending(&self) -> bool;
}

/// The position a query's cursor points after.
fn decode_query_cursor<Q: PagedQuery>(query: &Q) -> Result<Option<Keyset>> {
    query.cursor_value().map(|c| decode_cursor(c, Q::KIND, query.order_name())).transpose()
}

/// One page out of `candidates` for a scan store: filters with `matches`, applies the cursor on
/// the `(sort value, id)` that `key` gives, sorts in the query's direction and cuts one page and
/// its cursor.
fn keyset_page<Q: PagedQuery, T>(
    query: &Q,
    candidates: impl IntoIterator<Item = T>,
    matches: impl Fn(&T) -> bool,
    key: impl Fn(&T) -> (i64, String),
) -> Result<Page<T>> {
    let limit = check_query_limit(query.limit_value())?;
    let after = decode_query_cursor(query)?;
    let ascending = query.ascending();
    let mut rows: Vec<(i64, String, T)> = candidates
        .into_iter()
        .filter(|row| matches(row))
        .map(|row| {
            let (value, id) = key(&row);
            (value, id, row)
        })
        .filter(|(v, id, _)| after.as_ref().is_none_or(|k| after_keyset(ascending, *v, id, k)))
        .collect();
    rows.sort_by(|a, b| {
        let ord = (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str()));
        if ascending { ord } else { ord.reverse() }
    });
    let more = rows.len() > limit;
    rows.truncate(limit);
    let order = query.order_name();
    let next = if more { rows.last().map(|(v, id, _)| encode_cursor(Q::KIND, order, *v, id)) } else { None };
    Ok(Page::new(rows.into_iter().map(|(_, _, row)| row).collect(), next))
}

/// The paging part of a query type: its [`PagedQuery`] impl and the inherent `limit` / `cursor`
/// setters, `validate`, `page_size` and `decode_cursor`, the same for every query.
macro_rules! paged_query {
    ($ty:ident, $kind:literal) => {
        impl PagedQuery for $ty {
            const KIND: &'static str = $kind;
            fn limit_value(&self) -> Option<usize> {
                self.limit
            }
            fn cursor_value(&self) -> Option<&str> {
                self.cursor.as_deref()
            }
            fn order_name(&self) -> &'static str {
                self.order.as_str()
            }
            fn ascending(&self) -> bool {
                self.order.ascending()
            }
        }

        impl $ty {
            asm_core::builder_setters! {
                #[doc = concat!("Sets [`", stringify!($ty), "::limit`].")]
                fn limit(limit: usize) { limit = Some(limit) }
                #[doc = concat!("Sets [`", stringify!($ty), "::cursor`].")]
                fn cursor(cursor: impl Into<String>) { cursor = Some(cursor.into()) }
            }

            /// Checks the limit and the cursor.
            ///
            /// # Errors
            /// [`ErrorCode::ValidationError`] for the limit, [`ErrorCode::InvalidCursor`] for the
            /// cursor.
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
                decode_query_cursor(self)
            }
        }
    };
}

paged_query!(SessionSearch, "sessions");
paged_query!(RunSearch, "runs");
paged_query!(EventSearch, "events");

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
    asm_core::builder_setters! {
        /// Sets [`SessionSearch::agent_id`].
        fn agent(agent_id: impl Into<String>) { agent_id = Some(agent_id.into()) }
        /// Adds a status to [`SessionSearch::statuses`].
        fn status(status: SessionStatus) { statuses.push(status) }
        /// Adds a tag to [`SessionSearch::tags`].
        fn tag(tag: impl Into<String>) { tags.push(tag.into()) }
        /// Sets [`SessionSearch::created_after`].
        fn created_after(at: Timestamp) { created_after = Some(at) }
        /// Sets [`SessionSearch::created_before`].
        fn created_before(at: Timestamp) { created_before = Some(at) }
        /// Sets [`SessionSearch::include_deleted`].
        fn include_deleted(yes: bool) { include_deleted = yes }
        /// Sets [`SessionSearch::order`].
        fn order(order: SessionOrder) { order = order }
    }
    /// The cursor that continues after `session` in this query's order.
    pub fn encode_cursor(&self, session: &Session) -> String {
        encode_cursor(Self::KIND, self.order.as_str(), self.order.sort_value(session), session.id.as_str())
    }

    /// Whether `session` passes the filters (not the cursor).
    pub fn matches(&self, session: &Session) -> bool {
        (self.include_deleted || session.deleted_at.is_none())
            && self.agent_id.as_ref().is_none_or(|a| &session.agent_id == a)
            && any_of(&self.statuses, Some(&session.status))
            && self.tags.iter().all(|t| session.tags.contains(t))
            && within(session.created_at, self.created_after, self.created_before)
    }

    /// One page out of `candidates` (any superset of the matching sessions, in any order):
    /// filters, applies the cursor, sorts and cuts. `O(n log n)` in the candidates: for stores
    /// that scan.
    ///
    /// # Errors
    /// As [`SessionSearch::validate`].
    pub fn page(&self, candidates: impl IntoIterator<Item = Session>) -> Result<Page<Session>> {
        let order = self.order;
        keyset_page(self, candidates, |s| self.matches(s), |s| (order.sort_value(s), s.id.as_str().to_owned()))
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
    asm_core::builder_setters! {
        /// Sets [`RunSearch::session_id`].
        fn session(session_id: SessionId) { session_id = Some(session_id) }
        /// Sets [`RunSearch::provider`].
        fn provider(provider: impl Into<String>) { provider = Some(provider.into()) }
        /// Adds a status to [`RunSearch::statuses`].
        fn status(status: RunStatus) { statuses.push(status) }
        /// Sets [`RunSearch::created_after`].
        fn created_after(at: Timestamp) { created_after = Some(at) }
        /// Sets [`RunSearch::created_before`].
        fn created_before(at: Timestamp) { created_before = Some(at) }
        /// Sets [`RunSearch::order`].
        fn order(order: RunOrder) { order = order }
    }
    /// The cursor that continues after `run` in this query's order.
    pub fn encode_cursor(&self, run: &Run) -> String {
        encode_cursor(Self::KIND, self.order.as_str(), run.created_at.timestamp_micros(), run.id.as_str())
    }

    /// Whether `run` passes the filters (not the cursor).
    pub fn matches(&self, run: &Run) -> bool {
        self.session_id.as_ref().is_none_or(|s| &run.session_id == s)
            && self.provider.as_ref().is_none_or(|p| run.provider.as_ref() == Some(p))
            && any_of(&self.statuses, Some(&run.status))
            && within(run.created_at, self.created_after, self.created_before)
    }

    /// One page out of `candidates` (any superset of the matching runs, in any order).
    ///
    /// # Errors
    /// As [`RunSearch::validate`].
    pub fn page(&self, candidates: impl IntoIterator<Item = Run>) -> Result<Page<Run>> {
        keyset_page(
            self,
            candidates,
            |r| self.matches(r),
            |r| (r.created_at.timestamp_micros(), r.id.as_str().to_owned()),
        )
    }
}

/// The order of [`QueryStore::search_events`]; ties are broken by event id in the same
/// direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventOrder {
    /// By sequence number, lowest first (the default): a session's log order; across sessions,
    /// the sessions' events interleave by sequence.
    #[default]
    SequenceAsc,
    /// By event timestamp, oldest first.
    TimestampAsc,
    /// By event timestamp, newest first.
    TimestampDesc,
}

asm_core::string_enum! {
    /// The snake_case name (also used inside cursors).
    EventOrder {
        SequenceAsc => "sequence_asc",
        TimestampAsc => "timestamp_asc",
        TimestampDesc => "timestamp_desc",
    }
}

impl EventOrder {
    /// Whether the order is ascending.
    pub const fn ascending(self) -> bool {
        !matches!(self, EventOrder::TimestampDesc)
    }
    /// The value an event sorts by: its sequence, or its timestamp in µs.
    pub fn sort_value(self, event: &Event) -> i64 {
        match self {
            EventOrder::SequenceAsc => event.sequence.and_then(|s| i64::try_from(s).ok()).unwrap_or(i64::MAX),
            EventOrder::TimestampAsc | EventOrder::TimestampDesc => event.timestamp.timestamp_micros(),
        }
    }
}

/// A search of stored events across sessions (spec §3.5 `search_events` / `count_events`). All
/// filters combine; each list filter matches any of its values (empty: no filter). Events of
/// soft-deleted sessions are included (they are still stored).
///
/// ```
/// use asm_core::EventKind;
/// use asm_ports::{EventOrder, EventSearch};
/// let q = EventSearch::new().kind(EventKind::ErrorOccurred).provider("claude")
///     .text("rate limit").order(EventOrder::TimestampDesc).limit(50);
/// assert!(q.validate().is_ok());
/// assert!(EventSearch::new().limit(1001).validate().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct EventSearch {
    /// Only events of these sessions.
    pub session_ids: Vec<SessionId>,
    /// Only events of these runs.
    pub run_ids: Vec<RunId>,
    /// Only events of these kinds.
    pub kinds: Vec<EventKind>,
    /// Only events whose `provider` is one of these.
    pub providers: Vec<String>,
    /// Only events with a timestamp at or after this time (inclusive).
    pub since: Option<Timestamp>,
    /// Only events with a timestamp at or before this time (inclusive).
    pub until: Option<Timestamp>,
    /// Only events with this correlation id.
    pub correlation_id: Option<String>,
    /// Only events whose payload (`data`), as compact JSON text, contains this substring
    /// (case-sensitive). Plain words and numbers match string values and keys; characters that
    /// JSON escapes (`"`, `\`, control characters) must be given escaped.
    pub text: Option<String>,
    /// The order (default [`EventOrder::SequenceAsc`]).
    pub order: EventOrder,
    /// Page size (default [`DEFAULT_QUERY_LIMIT`], at most [`MAX_QUERY_LIMIT`]); not used by
    /// [`QueryStore::count_events`].
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page of the same query; not used by
    /// [`QueryStore::count_events`].
    pub cursor: Option<String>,
}

impl EventSearch {
    /// Every stored event.
    pub fn new() -> Self {
        Self::default()
    }
    asm_core::builder_setters! {
        /// Adds a session to [`EventSearch::session_ids`].
        fn session(session_id: SessionId) { session_ids.push(session_id) }
        /// Adds a run to [`EventSearch::run_ids`].
        fn run(run_id: RunId) { run_ids.push(run_id) }
        /// Adds a kind to [`EventSearch::kinds`].
        fn kind(kind: EventKind) { kinds.push(kind) }
        /// Adds a provider to [`EventSearch::providers`].
        fn provider(provider: impl Into<String>) { providers.push(provider.into()) }
        /// Sets [`EventSearch::since`].
        fn since(at: Timestamp) { since = Some(at) }
        /// Sets [`EventSearch::until`].
        fn until(at: Timestamp) { until = Some(at) }
        /// Sets [`EventSearch::correlation_id`].
        fn correlation(correlation_id: impl Into<String>) { correlation_id = Some(correlation_id.into()) }
        /// Sets [`EventSearch::text`].
        fn text(needle: impl Into<String>) { text = Some(needle.into()) }
        /// Sets [`EventSearch::order`].
        fn order(order: EventOrder) { order = order }
    }

    /// The cursor that continues after `event` in this query's order.
    pub fn encode_cursor(&self, event: &Event) -> String {
        encode_cursor(Self::KIND, self.order.as_str(), self.order.sort_value(event), event.id.as_str())
    }

    /// Whether `event` passes the filters (not the cursor).
    pub fn matches(&self, event: &Event) -> bool {
        any_of(&self.session_ids, Some(&event.session_id))
            && any_of(&self.run_ids, event.run_id.as_ref())
            && any_of(&self.kinds, Some(&event.kind))
            && any_of(&self.providers, event.provider.as_ref())
            && within(event.timestamp, self.since, self.until)
            && self.correlation_id.as_ref().is_none_or(|c| event.correlation_id.as_ref() == Some(c))
            && self.text.as_deref().is_none_or(|needle| payload_text(event).contains(needle))
    }

    /// One page out of `candidates` (any superset of the matching events, in any order).
    ///
    /// # Errors
    /// As [`EventSearch::validate`].
    pub fn page(&self, candidates: impl IntoIterator<Item = StoredEvent>) -> Result<Page<StoredEvent>> {
        let order = self.order;
        keyset_page(self, candidates, |e| self.matches(e), |e| (order.sort_value(e), e.id.as_str().to_owned()))
    }
}

/// The text [`EventSearch::text`] is matched against: the event's `data` as compact JSON (what
/// every store writes and the SQL stores keep verbatim).
pub fn payload_text(event: &Event) -> String {
    serde_json::to_string(&event.data).unwrap_or_default()
}

/// What [`QueryStore::get_session_stats`] returns about one session (spec §3.5).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SessionStats {
    /// The session.
    pub session_id: SessionId,
    /// Stored events (pruned events are not counted).
    pub event_count: u64,
    /// Stored events per kind.
    pub events_by_kind: BTreeMap<EventKind, u64>,
    /// Runs.
    pub run_count: u64,
    /// Runs per status (the status's snake_case name).
    pub runs_by_status: BTreeMap<String, u64>,
    /// Token and cost totals of the session's runs (as in [`UsageReport::total`]).
    pub usage: UsageAggregate,
    /// The distinct providers of the session's runs, sorted.
    pub providers_used: Vec<String>,
    /// The earliest stored event timestamp.
    pub first_event_at: Option<Timestamp>,
    /// The latest stored event timestamp.
    pub last_event_at: Option<Timestamp>,
    /// The session's sequence counter (its last assigned sequence; may be above the newest
    /// stored event after pruning).
    pub last_sequence: u64,
}

impl SessionStats {
    /// Empty statistics of `session_id`.
    pub fn new(session_id: SessionId) -> Self {
        Self { session_id, ..Self::default() }
    }

    /// Counts one stored event.
    pub fn add_event(&mut self, event: &Event) {
        self.add_events(event.kind, 1, event.timestamp, event.timestamp);
    }

    /// Counts `count` stored events of `kind` whose timestamps span `first ..= last` (how a
    /// store that groups in SQL folds its rows).
    pub fn add_events(&mut self, kind: EventKind, count: u64, first: Timestamp, last: Timestamp) {
        self.event_count = self.event_count.saturating_add(count);
        *self.events_by_kind.entry(kind).or_default() += count;
        self.first_event_at = Some(self.first_event_at.map_or(first, |t| t.min(first)));
        self.last_event_at = Some(self.last_event_at.map_or(last, |t| t.max(last)));
    }

    /// Counts one run.
    pub fn add_run(&mut self, run: &Run) {
        let mut totals = UsageAggregate::default();
        totals.add_run(run);
        self.add_runs(run.status.as_str(), run.provider.as_deref(), &totals);
    }

    /// Counts a group of runs sharing a status and a provider.
    pub fn add_runs(&mut self, status: &str, provider: Option<&str>, totals: &UsageAggregate) {
        self.run_count = self.run_count.saturating_add(totals.run_count);
        *self.runs_by_status.entry(status.to_owned()).or_default() += totals.run_count;
        self.usage.merge(totals);
        if let Some(provider) = provider
            && let Err(at) = self.providers_used.binary_search_by(|p| p.as_str().cmp(provider))
        {
            self.providers_used.insert(at, provider.to_owned());
        }
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
    asm_core::builder_setters! {
        /// Sets [`UsageQuery::session_id`].
        fn session(session_id: SessionId) { session_id = Some(session_id) }
        /// Sets [`UsageQuery::agent_id`].
        fn agent(agent_id: impl Into<String>) { agent_id = Some(agent_id.into()) }
        /// Sets [`UsageQuery::provider`].
        fn provider(provider: impl Into<String>) { provider = Some(provider.into()) }
        /// Sets [`UsageQuery::since`].
        fn since(at: Timestamp) { since = Some(at) }
        /// Sets [`UsageQuery::until`].
        fn until(at: Timestamp) { until = Some(at) }
    }

    /// Whether `run`, of a session of agent `agent_id`, is counted.
    pub fn matches(&self, run: &Run, agent_id: &str) -> bool {
        self.session_id.as_ref().is_none_or(|s| &run.session_id == s)
            && self.agent_id.as_deref().is_none_or(|a| a == agent_id)
            && self.provider.as_ref().is_none_or(|p| run.provider.as_ref() == Some(p))
            && within(run.created_at, self.since, self.until)
    }
}

/// Token and cost totals of a set of runs.
///
/// `total_tokens` is input plus output of each run (the original summed a `total_tokens` key
/// adapters rarely wrote, so it usually showed 0: fixed). `cost_usd` adds the runs' stored
/// `cost_usd`; runs without one are counted in `unpriced_runs` (their tokens still count, and
/// are also summed in `unpriced_usage`, so the report can be priced afterwards:
/// [`UsageReport::priced`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct UsageAggregate {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input plus output tokens.
    pub total_tokens: u64,
    /// Input tokens served from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_tokens: u64,
    /// Summed stored cost in USD (plus, in a [priced](UsageReport::priced) report, the cost
    /// computed for the runs without one).
    pub cost_usd: f64,
    /// Runs counted.
    pub run_count: u64,
    /// Runs counted that have no cost (no stored cost, and none computed).
    pub unpriced_runs: u64,
    /// The summed token usage of the `unpriced_runs`.
    pub unpriced_usage: TokenUsage,
}

fn add_usage(into: &mut TokenUsage, usage: &TokenUsage) {
    into.input_tokens = into.input_tokens.saturating_add(usage.input_tokens);
    into.output_tokens = into.output_tokens.saturating_add(usage.output_tokens);
    into.cache_read_tokens = into.cache_read_tokens.saturating_add(usage.cache_read_tokens);
    into.cache_creation_tokens = into.cache_creation_tokens.saturating_add(usage.cache_creation_tokens);
}

impl UsageAggregate {
    /// Adds one run.
    pub fn add_run(&mut self, run: &Run) {
        let usage = &run.token_usage;
        self.input_tokens = self.input_tokens.saturating_add(usage.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(usage.output_tokens);
        self.total_tokens = self.total_tokens.saturating_add(usage.total_tokens());
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(usage.cache_read_tokens);
        self.cache_creation_tokens = self.cache_creation_tokens.saturating_add(usage.cache_creation_tokens);
        match run.cost_usd {
            Some(cost) => self.cost_usd += cost,
            None => {
                self.unpriced_runs += 1;
                add_usage(&mut self.unpriced_usage, usage);
            }
        }
        self.run_count += 1;
    }

    /// Adds the totals of another set of runs (how a store that aggregates in SQL folds its
    /// grouped rows).
    pub fn merge(&mut self, other: &UsageAggregate) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(other.cache_read_tokens);
        self.cache_creation_tokens = self.cache_creation_tokens.saturating_add(other.cache_creation_tokens);
        self.cost_usd += other.cost_usd;
        self.run_count = self.run_count.saturating_add(other.run_count);
        self.unpriced_runs = self.unpriced_runs.saturating_add(other.unpriced_runs);
        add_usage(&mut self.unpriced_usage, &other.unpriced_usage);
    }
}

/// Provider key of runs without a provider in [`UsageReport::by_provider`].
pub const UNKNOWN_PROVIDER: &str = "unknown";
/// Model key of runs without a model (`metadata.model`) in [`UsageReport::by_model`].
pub const UNKNOWN_MODEL: &str = "unknown";

/// The model of a run, as usage reports group it: the string `metadata.model` the runtime
/// records.
pub fn run_model(run: &Run) -> Option<&str> {
    run.metadata.get("model").and_then(|m| m.as_str())
}

/// The finest grouping of a [`UsageReport`]: the runs of one session (so one agent), one
/// provider, one model and one UTC day. Every other grouping of the report is a fold of these,
/// which is what makes pricing afterwards exact ([`UsageReport::priced`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct UsageGroup {
    /// The session.
    pub session_id: SessionId,
    /// The session's agent.
    pub agent_id: String,
    /// The runs' provider, if any.
    pub provider: Option<String>,
    /// The runs' model (`metadata.model`), if any.
    pub model: Option<String>,
    /// The UTC day of the runs' `created_at`, `YYYY-MM-DD`.
    pub day: String,
    /// The runs' totals.
    pub totals: UsageAggregate,
}

impl UsageGroup {
    /// A group with these keys and totals.
    pub fn new(
        session_id: SessionId,
        agent_id: impl Into<String>,
        provider: Option<String>,
        model: Option<String>,
        day: impl Into<String>,
        totals: UsageAggregate,
    ) -> Self {
        Self { session_id, agent_id: agent_id.into(), provider, model, day: day.into(), totals }
    }
}

/// Prices token usage after the fact: what [`UsageReport::priced`] asks for each group of runs
/// that has no stored cost.
///
/// The port only knows this shape; the pricing data lives outside the ports (the
/// `asm-policy` crate implements it for its `PricingTable`, with longest-prefix model
/// matching), so a store never depends on prices and a price change needs no migration.
pub trait UsagePricer: Send + Sync {
    /// The cost in USD of `usage` on `model` of `provider`, or `None` if it cannot be priced.
    fn price(&self, provider: &str, model: Option<&str>, usage: &TokenUsage) -> Option<f64>;
}

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
    /// Per model (`metadata.model`; [`UNKNOWN_MODEL`] for runs without one).
    pub by_model: BTreeMap<String, UsageAggregate>,
    /// Per UTC day of the run's `created_at`, `YYYY-MM-DD`.
    pub by_day: BTreeMap<String, UsageAggregate>,
    /// The finest groups (session, provider, model, day), in no particular order.
    pub groups: Vec<UsageGroup>,
}

impl UsageReport {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// A report of these finest groups (groups with the same keys may repeat: they add up).
    pub fn from_groups(groups: impl IntoIterator<Item = UsageGroup>) -> Self {
        let mut report = Self::new();
        for group in groups {
            report.add_group(group);
        }
        report
    }

    /// Counts `run`, of a session of agent `agent_id`, in every grouping (as a finest group of
    /// its own; [`UsageReport::from_runs`] merges runs with the same keys).
    pub fn add_run(&mut self, run: &Run, agent_id: &str) {
        let mut totals = UsageAggregate::default();
        totals.add_run(run);
        self.add_group(UsageGroup::new(
            run.session_id.clone(),
            agent_id,
            run.provider.clone(),
            run_model(run).map(str::to_owned),
            utc_day(run.created_at),
            totals,
        ));
    }

    /// A report of `runs`, each with its session's agent id, one finest group per distinct
    /// (session, provider, model, day): how a store that scans builds it.
    pub fn from_runs<'a>(runs: impl IntoIterator<Item = (&'a Run, &'a str)>) -> Self {
        type Key = (SessionId, Option<String>, Option<String>, String);
        let mut groups: std::collections::HashMap<Key, UsageGroup> = std::collections::HashMap::new();
        for (run, agent) in runs {
            let model = run_model(run).map(str::to_owned);
            let day = utc_day(run.created_at);
            let key = (run.session_id.clone(), run.provider.clone(), model.clone(), day.clone());
            groups
                .entry(key)
                .or_insert_with(|| {
                    UsageGroup::new(
                        run.session_id.clone(),
                        agent,
                        run.provider.clone(),
                        model,
                        day,
                        UsageAggregate::default(),
                    )
                })
                .totals
                .add_run(run);
        }
        Self::from_groups(groups.into_values())
    }

    /// Counts the totals of one finest group (what a store that aggregates in SQL returns per
    /// row) in every grouping.
    pub fn add_group(&mut self, group: UsageGroup) {
        let g = &group;
        self.fold(&g.session_id, &g.agent_id, g.provider.as_deref(), g.model.as_deref(), &g.day, &g.totals);
        self.groups.push(group);
    }

    fn fold(
        &mut self,
        session_id: &SessionId,
        agent_id: &str,
        provider: Option<&str>,
        model: Option<&str>,
        day: &str,
        totals: &UsageAggregate,
    ) {
        self.total.merge(totals);
        self.by_session.entry(session_id.clone()).or_default().merge(totals);
        self.by_agent.entry(agent_id.to_owned()).or_default().merge(totals);
        self.by_provider.entry(provider.unwrap_or(UNKNOWN_PROVIDER).to_owned()).or_default().merge(totals);
        self.by_model.entry(model.unwrap_or(UNKNOWN_MODEL).to_owned()).or_default().merge(totals);
        self.by_day.entry(day.to_owned()).or_default().merge(totals);
    }

    /// This report with the runs that have no stored cost priced by `pricer`: per finest group,
    /// the summed `unpriced_usage` is priced on the group's provider ([`UNKNOWN_PROVIDER`] if
    /// none) and model and added to `cost_usd`, and the group's runs stop counting as unpriced;
    /// a group the pricer cannot price stays unpriced. Every grouping is folded again from the
    /// groups. Stored costs are never replaced. Exact, because a price is linear in the tokens.
    pub fn priced(&self, pricer: &dyn UsagePricer) -> UsageReport {
        UsageReport::from_groups(self.groups.iter().cloned().map(|mut group| {
            let t = &mut group.totals;
            if t.unpriced_runs > 0 {
                let provider = group.provider.as_deref().unwrap_or(UNKNOWN_PROVIDER);
                if let Some(cost) = pricer.price(provider, group.model.as_deref(), &t.unpriced_usage) {
                    t.cost_usd += cost;
                    t.unpriced_runs = 0;
                    t.unpriced_usage = TokenUsage::default();
                }
            }
            group
        }))
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
