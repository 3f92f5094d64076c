use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use asm_core::{
    Error, ErrorCode, Event, EventKind, JsonMap, Result, Run, RunId, RunStatus, Session, SessionId, SessionStatus,
    StoredEvent, Timestamp,
};

/// Persistence of sessions, runs and the per-session append-only event log.
///
/// Every implementation runs the one conformance suite in `asm-testkit`. The contract:
///
/// - **Sequences**: each session's events are numbered 1, 2, 3, ... with no gaps, assigned inside
///   the store's atomic write. Concurrent appenders never get the same number. The one exception
///   is maintenance: [`MaintenanceStore::prune_events`](crate::MaintenanceStore::prune_events)
///   removes events and leaves gaps (a pruned number is never reused, cursor reads skip gaps).
/// - **Idempotency**: appending an event whose id is already stored returns the stored event
///   (same sequence) and consumes no number. Within one batch, a repeated id resolves to its
///   first occurrence. Event ids are global (128 random bits): the stored event is returned even
///   if it was stored under another session.
/// - **Batches** are all-or-nothing, for a single session, contiguous and returned in input order.
/// - **Unknown ids** give typed not-found errors ([`ErrorCode::SessionNotFound`],
///   [`ErrorCode::RunNotFound`]); runs and events may only be written for a stored session.
/// - **Terminal runs are final**: saving a run whose stored copy is terminal with different
///   content fails with [`ErrorCode::InvalidTransition`] and writes nothing; a run's status only
///   moves along its state machine ([`check_run_overwrite`]).
/// - **No event after the end**: once a run's terminal state is stored, appending a new event of
///   that run (an event whose `run_id` names it, in its session) fails with
///   [`ErrorCode::InvalidTransition`] and writes nothing ([`check_run_accepts_events`]). The
///   events of the terminal [`flush`](SessionStore::flush) itself are part of the same write.
/// - **Event size**: an event larger than the store's cap ([`MAX_EVENT_BYTES`] by default, as
///   measured by [`event_size`]) fails with [`ErrorCode::InvalidInput`] and writes nothing.
/// - **Reads** are `O(log n + k)` in the number of stored events: an index by `(session, sequence)`,
///   never a scan of the whole log.
/// - **Deleting** a session removes its runs and events with it.
#[async_trait]
pub trait SessionStore: Send + Sync + Debug + 'static {
    /// Inserts or replaces a session.
    async fn save_session(&self, session: &Session) -> Result<()>;

    /// Reads a session. Unknown id: [`ErrorCode::SessionNotFound`].
    async fn get_session(&self, id: &SessionId) -> Result<Session>;

    /// Lists sessions ordered by `(created_at, id)`, one page at a time.
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Page<Session>>;

    /// Deletes a session with its runs and events, atomically. Unknown id:
    /// [`ErrorCode::SessionNotFound`].
    async fn delete_session(&self, id: &SessionId) -> Result<()>;

    /// Inserts or replaces a run. Its session must exist; a stored terminal run is final.
    async fn save_run(&self, run: &Run) -> Result<()>;

    /// Reads a run. Unknown id: [`ErrorCode::RunNotFound`].
    async fn get_run(&self, id: &RunId) -> Result<Run>;

    /// Lists a session's runs ordered by `(created_at, id)`.
    async fn list_runs(&self, session_id: &SessionId, query: &RunQuery) -> Result<Vec<Run>>;

    /// Appends a batch of events of one session atomically and returns them as stored, with
    /// their sequence numbers, in input order.
    ///
    /// With `expected_last_sequence`, the append happens only if the session's last sequence
    /// equals it (compare-and-append); otherwise [`ErrorCode::InvalidOperation`] with details
    /// `expected_last_sequence` and `actual_last_sequence`, and nothing is written. A batch made
    /// only of already stored events returns them without checking (a retried append succeeds).
    async fn append(&self, events: Vec<Event>, expected_last_sequence: Option<u64>) -> Result<Vec<StoredEvent>>;

    /// Reads a session's events in sequence order, filtered by `query`; with
    /// [`EventQuery::wait`], blocks until a matching event exists or the wait ends.
    async fn get_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<StoredEvent>>;

    /// The session's last assigned sequence (0 when it has no events yet). Unknown session:
    /// [`ErrorCode::SessionNotFound`].
    async fn latest_sequence(&self, session_id: &SessionId) -> Result<u64>;

    /// Writes a run and its events atomically, and applies `session_metadata` to the stored
    /// session's metadata as a JSON merge patch ([`merge_patch`]) in the same write.
    /// Never rewrites the rest of the session record. The run's session must exist and every
    /// event must belong to it ([`ErrorCode::SessionMismatch`] otherwise, also for events of
    /// two sessions: [`check_flush_record`]). With [`ExecutionRecord::expected_status`], the
    /// write happens only if the stored run has that status, compared inside the same atomic
    /// write ([`check_expected_status`]). An invalid record writes nothing.
    async fn flush(&self, record: ExecutionRecord) -> Result<Vec<StoredEvent>>;

    /// What this store can do.
    fn capabilities(&self) -> StoreCapabilities;

    /// Session leases and fenced writes, for stores that let several processes share sessions
    /// safely ([`StoreCapabilities::session_leases`]); `None` (the default) for the others.
    fn leases(&self) -> Option<&dyn crate::SessionLeases> {
        None
    }
}

/// Conveniences over [`SessionStore`], implemented for every store.
#[async_trait]
pub trait SessionStoreExt: SessionStore {
    /// Appends a batch without a sequence precondition. Takes plain [`Event`]s or
    /// [`StoredEvent`]s read earlier (appending a stored event again is idempotent).
    async fn append_events<E: Into<Event> + Send>(&self, events: Vec<E>) -> Result<Vec<StoredEvent>> {
        self.append(events.into_iter().map(Into::into).collect(), None).await
    }

    /// Appends one event and returns it with its sequence.
    async fn append_event<E: Into<Event> + Send>(&self, event: E) -> Result<StoredEvent> {
        let mut stored = self.append(vec![event.into()], None).await?;
        stored.pop().ok_or_else(|| Error::new(ErrorCode::InternalError, "store returned no event for a batch of one"))
    }
}

impl<S: SessionStore + ?Sized> SessionStoreExt for S {}

/// A cursor read of one session's events. All filters combine.
///
/// ```
/// use asm_ports::EventQuery;
/// use std::time::Duration;
/// // the oldest 50 events after sequence 40, waiting up to 5 s if there are none yet
/// let q = EventQuery::new().after(40).limit(50).wait(Duration::from_secs(5));
/// assert!(q.validate().is_ok());
/// assert!(EventQuery::new().limit(0).validate().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct EventQuery {
    /// Only events with `sequence > after` (exclusive).
    pub after: Option<u64>,
    /// Only events with `sequence < before` (exclusive).
    pub before: Option<u64>,
    /// At most this many events: the **oldest** N that match.
    pub limit: Option<usize>,
    /// Only events of this run.
    pub run_id: Option<RunId>,
    /// Only events of these kinds (empty: all kinds).
    pub kinds: Vec<EventKind>,
    /// Only events with `timestamp >= since` (inclusive).
    pub since: Option<Timestamp>,
    /// Long-poll: when nothing matches, wait up to this long for a matching append.
    pub wait: Option<Duration>,
}

impl EventQuery {
    /// Matches every event.
    pub fn new() -> Self {
        Self::default()
    }
    asm_core::builder_setters! {
        /// Sets [`EventQuery::after`].
        fn after(sequence: u64) { after = Some(sequence) }
        /// Sets [`EventQuery::before`].
        fn before(sequence: u64) { before = Some(sequence) }
        /// Sets [`EventQuery::limit`].
        fn limit(limit: usize) { limit = Some(limit) }
        /// Sets [`EventQuery::run_id`].
        fn run(run_id: RunId) { run_id = Some(run_id) }
        /// Adds a kind to [`EventQuery::kinds`].
        fn kind(kind: EventKind) { kinds.push(kind) }
        /// Sets [`EventQuery::since`].
        fn since(since: Timestamp) { since = Some(since) }
        /// Sets [`EventQuery::wait`].
        fn wait(wait: Duration) { wait = Some(wait) }
    }

    /// Rejects queries that cannot mean anything: `limit` 0.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidInput`].
    pub fn validate(&self) -> Result<()> {
        check_nonzero_limit(self.limit, "event")
    }

    /// Whether `event` passes every filter except `limit`. Stores that cannot push a filter into
    /// their index use this, so every store filters the same way.
    pub fn matches(&self, event: &Event) -> bool {
        let seq = event.sequence.unwrap_or(0);
        self.after.is_none_or(|a| seq > a)
            && self.before.is_none_or(|b| seq < b)
            && self.run_id.as_ref().is_none_or(|r| event.run_id.as_ref() == Some(r))
            && crate::query::any_of(&self.kinds, Some(&event.kind))
            && self.since.is_none_or(|s| event.timestamp >= s)
    }

    /// The sequence range `[first, end)` the query can match, given the session's last sequence.
    pub fn sequence_range(&self, last_sequence: u64) -> std::ops::Range<u64> {
        let first = self.after.map_or(1, |a| a.saturating_add(1)).max(1);
        let end = self.before.unwrap_or(u64::MAX).min(last_sequence.saturating_add(1));
        first..end.max(first)
    }
}

/// The limit rule of the per-session reads ([`EventQuery`], [`SessionQuery`], [`RunQuery`]): a
/// limit of 0 cannot mean anything.
fn check_nonzero_limit(limit: Option<usize>, query: &str) -> Result<()> {
    if limit == Some(0) {
        return Err(Error::new(ErrorCode::InvalidInput, format!("{query} query limit must be at least 1")));
    }
    Ok(())
}

/// A page of results and the cursor of the next page.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass to the next query to continue; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page.
    pub fn new(items: Vec<T>, next_cursor: Option<String>) -> Self {
        Self { items, next_cursor }
    }
}

/// Filters and pagination for [`SessionStore::list_sessions`].
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SessionQuery {
    /// Only sessions in this status.
    pub status: Option<SessionStatus>,
    /// Only sessions of this agent.
    pub agent_id: Option<String>,
    /// Only sessions carrying this tag.
    pub tag: Option<String>,
    /// Page size (default 100).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl SessionQuery {
    /// Default page size.
    pub const DEFAULT_LIMIT: usize = 100;

    /// All sessions.
    pub fn new() -> Self {
        Self::default()
    }
    asm_core::builder_setters! {
        /// Sets [`SessionQuery::status`].
        fn status(status: SessionStatus) { status = Some(status) }
        /// Sets [`SessionQuery::agent_id`].
        fn agent(agent_id: impl Into<String>) { agent_id = Some(agent_id.into()) }
        /// Sets [`SessionQuery::tag`].
        fn tag(tag: impl Into<String>) { tag = Some(tag.into()) }
        /// Sets [`SessionQuery::limit`].
        fn limit(limit: usize) { limit = Some(limit) }
        /// Sets [`SessionQuery::cursor`].
        fn cursor(cursor: impl Into<String>) { cursor = Some(cursor.into()) }
    }

    /// Whether `session` passes the filters (not the cursor).
    pub fn matches(&self, session: &Session) -> bool {
        self.status.is_none_or(|s| session.status == s)
            && self.agent_id.as_ref().is_none_or(|a| &session.agent_id == a)
            && self.tag.as_ref().is_none_or(|t| session.tags.contains(t))
    }

    /// The page size, validated.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidInput`] for 0.
    pub fn page_size(&self) -> Result<usize> {
        check_nonzero_limit(self.limit, "session")?;
        Ok(self.limit.unwrap_or(Self::DEFAULT_LIMIT))
    }

    /// Decodes the cursor into the `(created_at in µs, id)` key the page starts after.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidCursor`] for a cursor no store produced.
    pub fn decode_cursor(&self) -> Result<Option<(i64, SessionId)>> {
        let Some(cursor) = &self.cursor else { return Ok(None) };
        let invalid = || Error::new(ErrorCode::InvalidCursor, format!("invalid session cursor {cursor:?}"));
        let (micros, id) = cursor.split_once(':').ok_or_else(invalid)?;
        let micros = micros.parse::<i64>().map_err(|_| invalid())?;
        let id = SessionId::parse(id).map_err(|_| invalid())?;
        Ok(Some((micros, id)))
    }

    /// The cursor that continues after `session`.
    pub fn encode_cursor(session: &Session) -> String {
        format!("{}:{}", session.created_at.timestamp_micros(), session.id)
    }

    /// The ordering key of a session in listings.
    pub fn order_key(session: &Session) -> (i64, SessionId) {
        (session.created_at.timestamp_micros(), session.id.clone())
    }
}

/// Filters for [`SessionStore::list_runs`].
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RunQuery {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// At most this many (the oldest).
    pub limit: Option<usize>,
}

impl RunQuery {
    /// All runs.
    pub fn new() -> Self {
        Self::default()
    }
    asm_core::builder_setters! {
        /// Sets [`RunQuery::status`].
        fn status(status: RunStatus) { status = Some(status) }
        /// Sets [`RunQuery::limit`].
        fn limit(limit: usize) { limit = Some(limit) }
    }

    /// Rejects `limit` 0.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidInput`].
    pub fn validate(&self) -> Result<()> {
        check_nonzero_limit(self.limit, "run")
    }

    /// Whether `run` passes the filters.
    pub fn matches(&self, run: &Run) -> bool {
        self.status.is_none_or(|s| run.status == s)
    }
}

/// What [`SessionStore::flush`] writes in one atomic step.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ExecutionRecord {
    /// The run, usually in its terminal state.
    pub run: Run,
    /// Events of the run's session to append.
    pub events: Vec<Event>,
    /// A JSON merge patch ([`merge_patch`]) for the stored session's metadata (for example
    /// `{"provider_sessions": {"claude": {...}}}`); empty for none.
    pub session_metadata: JsonMap,
    /// Write only if the stored run is in this status (compare-and-set inside the atomic write):
    /// how a writer holding a possibly stale copy (a cancel that read `pending`, an execution
    /// that read `running`) avoids overwriting a newer state. `None`: no precondition.
    pub expected_status: Option<RunStatus>,
}

impl ExecutionRecord {
    /// A record of a run with no events, no session metadata and no status precondition.
    pub fn new(run: Run) -> Self {
        Self { run, events: Vec::new(), session_metadata: JsonMap::new(), expected_status: None }
    }
    asm_core::builder_setters! {
        /// Sets [`ExecutionRecord::expected_status`].
        fn expect_status(status: RunStatus) { expected_status = Some(status) }
        /// Sets the events.
        fn events(events: Vec<Event>) { events = events }
        /// Sets the session metadata patch.
        fn session_metadata(patch: JsonMap) { session_metadata = patch }
    }
}

/// What a store can do, so callers and the conformance suite can adapt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCapabilities {
    /// `EventQuery::wait` blocks until an append (rather than returning at once).
    pub long_poll: bool,
    /// An acknowledged write survives a crash of the process.
    pub durable: bool,
    /// Several processes may use the same store at once.
    pub multi_process: bool,
    /// The store grants session leases with fencing tokens ([`SessionStore::leases`]), so a
    /// runtime can own a session in exactly one process at a time.
    pub session_leases: bool,
}

impl StoreCapabilities {
    /// No capabilities.
    pub const fn new() -> Self {
        Self { long_poll: false, durable: false, multi_process: false, session_leases: false }
    }
    asm_core::builder_setters! {
        /// Sets `long_poll`.
        const fn long_poll(yes: bool) { long_poll = yes }
        /// Sets `durable`.
        const fn durable(yes: bool) { durable = yes }
        /// Sets `multi_process`.
        const fn multi_process(yes: bool) { multi_process = yes }
        /// Sets `session_leases`.
        const fn session_leases(yes: bool) { session_leases = yes }
    }
}

/// Checks a batch before a store touches its state: non-empty, one session, and returns that
/// session. Every store calls this so every store rejects the same input the same way.
///
/// # Errors
/// [`ErrorCode::InvalidInput`] for an empty batch or mixed sessions.
pub fn batch_session(events: &[Event]) -> Result<&SessionId> {
    let first = events.first().ok_or_else(|| Error::new(ErrorCode::InvalidInput, "cannot append an empty batch"))?;
    if let Some(other) = events.iter().find(|e| e.session_id != first.session_id) {
        return Err(Error::new(
            ErrorCode::InvalidInput,
            format!("a batch must belong to one session: {} and {}", first.session_id, other.session_id),
        ));
    }
    Ok(&first.session_id)
}

/// The rule "a stored terminal run is final, and a status only moves forward": `Ok` when
/// `incoming` may replace `stored`. A stored terminal run may only be written again identically
/// (a retried write); otherwise a changed status must be a legal transition of the run state
/// machine (`pending -> running`, `running -> completed`, ...), so a stale copy can never move a
/// run back (a `pending` copy over a `running` run).
///
/// # Errors
/// [`ErrorCode::InvalidTransition`] (details `stored_status`, `incoming_status`);
/// [`ErrorCode::SessionMismatch`] when the run belongs to another session.
pub fn check_run_overwrite(stored: &Run, incoming: &Run) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::new(ErrorCode::InvalidTransition, why)
            .with_detail("run_id", stored.id.as_str())
            .with_detail("stored_status", stored.status.as_str())
            .with_detail("incoming_status", incoming.status.as_str()))
    };
    if stored.status.is_terminal() && stored != incoming {
        return refuse(format!("run {} is already {} and cannot be rewritten", stored.id, stored.status));
    }
    if stored.status != incoming.status && !stored.status.can_transition_to(incoming.status) {
        return refuse(format!("run {} is {}; it cannot become {}", stored.id, stored.status, incoming.status));
    }
    if stored.session_id != incoming.session_id {
        return Err(Error::new(ErrorCode::SessionMismatch, format!("run {} belongs to another session", stored.id)));
    }
    Ok(())
}

/// The compare-and-set of [`ExecutionRecord::expected_status`]: `Ok` when there is no
/// precondition or the stored run has the expected status.
///
/// # Errors
/// [`ErrorCode::InvalidTransition`] (details `expected_status`, `stored_status`) when the stored
/// status differs; [`ErrorCode::RunNotFound`] when a status is expected of a run not stored.
pub fn check_expected_status(run_id: &RunId, stored: Option<&Run>, expected: Option<RunStatus>) -> Result<()> {
    let Some(expected) = expected else { return Ok(()) };
    match stored {
        None => Err(Error::new(ErrorCode::RunNotFound, format!("run {run_id} not found"))
            .with_detail("run_id", run_id.as_str())
            .with_detail("expected_status", expected.as_str())),
        Some(stored) if stored.status != expected => Err(Error::new(
            ErrorCode::InvalidTransition,
            format!("run {run_id} is {}, not {expected} as this write expects", stored.status),
        )
        .with_detail("run_id", run_id.as_str())
        .with_detail("expected_status", expected.as_str())
        .with_detail("stored_status", stored.status.as_str())),
        Some(_) => Ok(()),
    }
}

/// The rule "no event of a run after its terminal event": `Ok` when a new event of run `run_id`
/// may be appended, that is while its stored status is not terminal. Stores call it, inside their atomic
/// write, for every new event whose `run_id` names a run of the event's session.
///
/// # Errors
/// [`ErrorCode::InvalidTransition`] (details `run_id`, `run_status`).
pub fn check_run_accepts_events(run_id: &RunId, stored_status: RunStatus) -> Result<()> {
    if stored_status.is_terminal() {
        return Err(Error::new(
            ErrorCode::InvalidTransition,
            format!("run {run_id} is already {stored_status}; no more events can be appended to it"),
        )
        .with_detail("run_id", run_id.as_str())
        .with_detail("run_status", stored_status.as_str()));
    }
    Ok(())
}

/// Checks the shape of a [`SessionStore::flush`] record before a store touches its state: every
/// event belongs to the run's session. Every store calls this so every store rejects the same
/// record the same way.
///
/// # Errors
/// [`ErrorCode::SessionMismatch`] (details `run_session_id`, `event_session_id`).
pub fn check_flush_record(record: &ExecutionRecord) -> Result<()> {
    let run = &record.run;
    if let Some(event) = record.events.iter().find(|e| e.session_id != run.session_id) {
        return Err(Error::new(
            ErrorCode::SessionMismatch,
            format!("flush of run {} carries an event of session {}", run.id, event.session_id),
        )
        .with_detail("run_session_id", run.session_id.as_str())
        .with_detail("event_session_id", event.session_id.as_str()));
    }
    Ok(())
}

/// The default cap on one event, in bytes as measured by [`event_size`]: 16 MiB. Every store
/// applies a cap (this one unless configured otherwise).
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The size of an event as every store measures it against its cap: about the length of its
/// JSON encoding (string lengths plus a small fixed cost per value and field), computed without
/// serialising.
///
/// ```
/// use asm_core::{Event, EventKind, SessionId};
/// let small = Event::new(EventKind::MessageSent, SessionId::new());
/// let big = small.clone().with_data("content", "x".repeat(1 << 20));
/// assert!(asm_ports::backend::event_size(&big) > 1 << 20);
/// assert!(asm_ports::backend::event_size(&small) < 1024);
/// ```
pub fn event_size(event: &Event) -> usize {
    fn value_size(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::String(s) => s.len() + 2,
            serde_json::Value::Array(items) => 2 + items.iter().map(|v| value_size(v) + 1).sum::<usize>(),
            serde_json::Value::Object(map) => map_size(map),
            _ => 8,
        }
    }
    fn map_size(map: &JsonMap) -> usize {
        2 + map.iter().map(|(k, v)| k.len() + 4 + value_size(v)).sum::<usize>()
    }
    /// Ids, kind, timestamps, sequence, provider and the field names.
    const FIXED: usize = 256;
    FIXED
        + map_size(&event.data)
        + map_size(&event.metadata)
        + event.provider.as_deref().map_or(0, str::len)
        + event.correlation_id.as_deref().map_or(0, str::len)
}

/// The cap rule: `Ok` when `event` is at most `max_bytes` as measured by [`event_size`].
///
/// # Errors
/// [`ErrorCode::InvalidInput`] (details `event_id`, `size`, `max_event_bytes`).
pub fn check_event_size(event: &Event, max_bytes: usize) -> Result<()> {
    let size = event_size(event);
    if size > max_bytes {
        return Err(Error::new(
            ErrorCode::InvalidInput,
            format!("event {} is about {size} bytes, more than the store's limit of {max_bytes} bytes", event.id),
        )
        .with_detail("event_id", event.id.as_str())
        .with_detail("size", size)
        .with_detail("max_event_bytes", max_bytes));
    }
    Ok(())
}

/// Applies `patch` to `target` as a JSON Merge Patch (RFC 7396): objects merge recursively,
/// `null` removes a key, anything else replaces. Every store applies session metadata patches
/// with this one function.
///
/// ```
/// use serde_json::json;
/// let mut meta = json!({"provider_sessions": {"codex": {"id": "t1"}}, "x": 1}).as_object().unwrap().clone();
/// let patch = json!({"provider_sessions": {"claude": {"id": "s1"}}, "x": null}).as_object().unwrap().clone();
/// asm_ports::backend::merge_patch(&mut meta, &patch);
/// assert_eq!(serde_json::Value::Object(meta), json!({"provider_sessions": {"codex": {"id": "t1"}, "claude": {"id": "s1"}}}));
/// ```
pub fn merge_patch(target: &mut JsonMap, patch: &JsonMap) {
    for (key, value) in patch {
        match value {
            serde_json::Value::Null => {
                target.remove(key);
            }
            serde_json::Value::Object(inner) => {
                let slot = target.entry(key.clone()).or_insert_with(|| serde_json::Value::Object(JsonMap::new()));
                if !slot.is_object() {
                    *slot = serde_json::Value::Object(JsonMap::new());
                }
                if let serde_json::Value::Object(existing) = slot {
                    merge_patch(existing, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_range_is_exclusive_on_both_ends() {
        let q = EventQuery::new().after(1).before(3);
        assert_eq!(q.sequence_range(10), 2..3);
        assert_eq!(EventQuery::new().sequence_range(0), 1..1);
        assert_eq!(EventQuery::new().sequence_range(5), 1..6);
        assert_eq!(EventQuery::new().after(9).sequence_range(5), 10..10);
        assert_eq!(EventQuery::new().before(0).sequence_range(5), 1..1);
        assert_eq!(EventQuery::new().after(u64::MAX).sequence_range(5).count(), 0);
    }

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let s = Session::new("a").unwrap();
        let q = SessionQuery::new().cursor(SessionQuery::encode_cursor(&s));
        assert_eq!(q.decode_cursor().unwrap(), Some(SessionQuery::order_key(&s)));
        for bad in ["x", "1:nope", "a:ses_00000000000000000000000000000000"] {
            let err = SessionQuery::new().cursor(bad).decode_cursor().unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidCursor);
        }
    }
}
