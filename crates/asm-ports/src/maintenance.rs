//! The maintenance port: [`MaintenanceStore`], [`RetentionPolicy`] and the report of a cycle.
//!
//! Retention as in spec §3.6 / §10.6, never scheduled automatically: a caller runs
//! [`MaintenanceStore::run_maintenance`] (or one step of it) when it wants to. One cycle, in
//! order, collecting errors instead of aborting:
//!
//! 1. **soft delete**: sessions not yet deleted, not in an exempt status, without an exempt tag,
//!    whose `updated_at` is older than [`RetentionPolicy::max_session_age`], get `deleted_at`;
//! 2. **hard delete**: sessions whose `deleted_at` is older than
//!    [`RetentionPolicy::hard_delete_after`] are deleted with their runs and events
//!    ([`SessionStore::delete_session`], atomic per session); a failing session is reported and
//!    the others still go;
//! 3. **prune**: a session with more than [`RetentionPolicy::max_events_per_session`] events
//!    loses its oldest events of the cheap kinds first ([`RetentionPolicy::prune_first`]), then
//!    its oldest other events, never a [protected](is_protected_kind) one, so it may stay above
//!    the limit;
//! 4. **orphans**: rows that refer to no session (events, runs, sequence counters) are removed
//!    ([`MaintenanceStore::clean_orphans`]).
//!
//! With [`RetentionPolicy::dry_run`] the report says what would be done and nothing changes.
//!
//! **Pruning makes sequences non-contiguous, by design.** The session's counter never moves
//! back (a pruned number is never reused), so a cursor read (`after`/`before`) still returns the
//! remaining events in order, and an `after` cursor taken before the prune still continues at
//! the right place; only "sequence N exists for every N <= last" stops holding for pruned
//! sessions. The health check therefore compares the counter with the *maximum* stored
//! sequence, never with the event count.
//!
//! Fixed quirks of the original: the protected set includes every terminal run kind
//! (`run_cancelled`, `run_timeout` too) and `session_failed`; hard delete continues past a
//! failing session; the health check reports a counter *behind* the newest event (the real
//! corruption: the next append would reuse a number), not a counter ahead of it, which is what
//! pruning the newest event legitimately leaves.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use asm_core::{Error, ErrorCode, EventKind, Result, SessionId, SessionStatus, Timestamp};

use crate::{EventQuery, QueryStore, SessionOrder, SessionSearch};

/// Retention and health maintenance, implemented by every store. Held to one contract by the
/// `query_conformance` section of `asm-testkit`.
///
/// A store implements three primitives; the cycle itself ([`MaintenanceStore::run_maintenance`])
/// has a default body written once on top of them and of [`QueryStore`] (a store may override
/// it with a faster equivalent, e.g. one SQL statement per step).
#[async_trait]
pub trait MaintenanceStore: QueryStore {
    /// Deletes the events with these sequence numbers from `session_id`'s log, except events of
    /// a [protected](is_protected_kind) kind (always kept), atomically, and returns how many
    /// were deleted. The session's counter does not change. Unknown sequences are ignored.
    /// Unknown session: [`ErrorCode::SessionNotFound`].
    async fn prune_events(&self, session_id: &SessionId, sequences: &[u64]) -> Result<u64>;

    /// Removes rows that refer to no stored session (events, runs, sequence counters) and
    /// returns how many; with `dry_run`, only counts them.
    async fn clean_orphans(&self, dry_run: bool) -> Result<u64>;

    /// Checks the store's invariants: no counter behind its session's newest event, no events
    /// or runs without a session. Read-only.
    async fn health_check(&self) -> Result<HealthReport>;

    /// One maintenance cycle (see the module docs).
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for an invalid policy (nothing is done); failures of
    /// single steps are collected in [`MaintenanceReport::errors`].
    async fn run_maintenance(&self, policy: &RetentionPolicy) -> Result<MaintenanceReport> {
        run_cycle(self, policy).await
    }
}

/// The kinds pruning never removes: `session_created`, `run_started`, every terminal run kind
/// (`run_completed`, `run_failed`, `run_cancelled`, `run_timeout`), `error_occurred` and
/// `session_failed`.
pub const fn is_protected_kind(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::SessionCreated | EventKind::RunStarted | EventKind::ErrorOccurred | EventKind::SessionFailed
    ) || kind.is_run_terminal()
}

const DAY: Duration = Duration::from_secs(86_400);

/// What a maintenance cycle keeps and removes.
///
/// ```
/// use asm_ports::RetentionPolicy;
/// use std::time::Duration;
/// let policy = RetentionPolicy::new().max_events_per_session(10_000).dry_run(true);
/// assert!(policy.validate().is_ok());
/// assert!(RetentionPolicy::new().max_events_per_session(0).validate().is_err());
/// assert_eq!(RetentionPolicy::new().max_session_age, Some(Duration::from_secs(90 * 86_400)));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// Soft delete sessions whose `updated_at` is older than this (default 90 days; `None`:
    /// never).
    pub max_session_age: Option<Duration>,
    /// Hard delete soft-deleted sessions whose `deleted_at` is older than this (default 30
    /// days; `None`: never).
    pub hard_delete_after: Option<Duration>,
    /// Prune sessions above this many events (default `None`: never).
    pub max_events_per_session: Option<u64>,
    /// Sessions in these statuses are never soft deleted (default `active`, `paused`).
    pub exempt_statuses: Vec<SessionStatus>,
    /// Sessions carrying any of these tags are never soft deleted (default `pinned`).
    pub exempt_tags: Vec<String>,
    /// Pruned first, oldest first (default `message_streamed`, `reasoning_streamed`,
    /// `provider_raw`, `token_usage_updated`). Protected kinds listed here are still kept.
    pub prune_first: Vec<EventKind>,
    /// Only sessions of this agent are touched (default: every session). Orphan cleanup is
    /// store-wide and runs only without a scope.
    pub agent_id: Option<String>,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            max_session_age: Some(DAY * 90),
            hard_delete_after: Some(DAY * 30),
            max_events_per_session: None,
            exempt_statuses: vec![SessionStatus::Active, SessionStatus::Paused],
            exempt_tags: vec!["pinned".to_owned()],
            prune_first: vec![
                EventKind::MessageStreamed,
                EventKind::ReasoningStreamed,
                EventKind::ProviderRaw,
                EventKind::TokenUsageUpdated,
            ],
            agent_id: None,
            dry_run: false,
        }
    }
}

impl RetentionPolicy {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    asm_core::builder_setters! {
        /// Sets [`RetentionPolicy::max_session_age`].
        fn max_session_age(age: Option<Duration>) { max_session_age = age }
        /// Sets [`RetentionPolicy::hard_delete_after`].
        fn hard_delete_after(grace: Option<Duration>) { hard_delete_after = grace }
        /// Sets [`RetentionPolicy::max_events_per_session`].
        fn max_events_per_session(max: u64) { max_events_per_session = Some(max) }
        /// Sets [`RetentionPolicy::exempt_statuses`].
        fn exempt_statuses(statuses: Vec<SessionStatus>) { exempt_statuses = statuses }
        /// Sets [`RetentionPolicy::exempt_tags`].
        fn exempt_tags(tags: Vec<String>) { exempt_tags = tags }
        /// Sets [`RetentionPolicy::prune_first`].
        fn prune_first(kinds: Vec<EventKind>) { prune_first = kinds }
        /// Sets [`RetentionPolicy::agent_id`].
        fn agent(agent_id: impl Into<String>) { agent_id = Some(agent_id.into()) }
        /// Sets [`RetentionPolicy::dry_run`].
        fn dry_run(yes: bool) { dry_run = yes }
    }

    /// Rejects a policy that cannot mean anything: a zero event limit.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`].
    pub fn validate(&self) -> Result<()> {
        if self.max_events_per_session == Some(0) {
            return Err(Error::new(ErrorCode::ValidationError, "max_events_per_session must be at least 1"));
        }
        Ok(())
    }

    /// Whether the soft-delete step deletes `session` at `now`.
    pub fn soft_deletes(&self, session: &asm_core::Session, now: Timestamp) -> bool {
        let Some(age) = self.max_session_age else { return false };
        session.deleted_at.is_none()
            && !self.exempt_statuses.contains(&session.status)
            && !session.tags.iter().any(|t| self.exempt_tags.contains(t))
            && session.updated_at < minus(now, age)
    }

    /// Whether the hard-delete step deletes `session` at `now`.
    pub fn hard_deletes(&self, session: &asm_core::Session, now: Timestamp) -> bool {
        let Some(grace) = self.hard_delete_after else { return false };
        session.deleted_at.is_some_and(|at| at < minus(now, grace))
    }

    /// The sequences to prune out of a session's `events` (`(sequence, kind)`, any order) to get
    /// down to [`RetentionPolicy::max_events_per_session`]: the oldest of the
    /// [`prune_first`](RetentionPolicy::prune_first) kinds, then the oldest other unprotected
    /// ones. Ascending; empty when the session is within the limit.
    pub fn plan_prune(&self, events: &[(u64, EventKind)]) -> Vec<u64> {
        let Some(max) = self.max_events_per_session else { return Vec::new() };
        let count = events.len() as u64;
        let Some(to_prune) = count.checked_sub(max).filter(|n| *n > 0) else { return Vec::new() };
        let to_prune = usize::try_from(to_prune).unwrap_or(usize::MAX);
        let mut sorted = events.to_vec();
        sorted.sort_unstable_by_key(|(seq, _)| *seq);
        let mut chosen: Vec<u64> = sorted
            .iter()
            .filter(|(_, k)| !is_protected_kind(*k) && self.prune_first.contains(k))
            .map(|(s, _)| *s)
            .take(to_prune)
            .collect();
        if chosen.len() < to_prune {
            let need = to_prune - chosen.len();
            let more: Vec<u64> = sorted
                .iter()
                .filter(|(_, k)| !is_protected_kind(*k) && !self.prune_first.contains(k))
                .map(|(s, _)| *s)
                .take(need)
                .collect();
            chosen.extend(more);
        }
        chosen.sort_unstable();
        chosen
    }
}

fn minus(now: Timestamp, age: Duration) -> Timestamp {
    let micros = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
    Timestamp::from_timestamp_micros(now.timestamp_micros().saturating_sub(micros)).unwrap_or(Timestamp::MIN_UTC)
}

/// What a maintenance cycle did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MaintenanceReport {
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// Sessions soft deleted.
    pub sessions_soft_deleted: Vec<SessionId>,
    /// Sessions hard deleted (with their runs and events).
    pub sessions_hard_deleted: Vec<SessionId>,
    /// Events pruned, in total.
    pub events_pruned: u64,
    /// Events pruned per session (only sessions that lost some).
    pub pruned_sessions: Vec<(SessionId, u64)>,
    /// Orphaned rows removed.
    pub orphans_cleaned: u64,
    /// How long the cycle took.
    pub duration: Duration,
    /// Failures of single steps (the cycle continues past them).
    pub errors: Vec<String>,
}

/// One problem [`MaintenanceStore::health_check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthIssue {
    /// The session's counter is behind its newest stored event: the next append would reuse a
    /// sequence number.
    SequenceBehind {
        /// The session.
        session_id: SessionId,
        /// The counter (the store's `latest_sequence`).
        counter: u64,
        /// The largest stored sequence.
        max_sequence: u64,
    },
    /// Events whose session does not exist.
    OrphanedEvents {
        /// How many.
        count: u64,
    },
    /// Runs whose session does not exist.
    OrphanedRuns {
        /// How many.
        count: u64,
    },
}

impl fmt::Display for HealthIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthIssue::SequenceBehind { session_id, counter, max_sequence } => {
                write!(f, "sequence mismatch for {session_id}: counter={counter}, max_sequence={max_sequence}")
            }
            HealthIssue::OrphanedEvents { count } => write!(f, "{count} events reference non-existent sessions"),
            HealthIssue::OrphanedRuns { count } => write!(f, "{count} runs reference non-existent sessions"),
        }
    }
}

/// What [`MaintenanceStore::health_check`] found; healthy when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthReport {
    /// The problems found.
    pub issues: Vec<HealthIssue>,
}

impl HealthReport {
    /// A report of these issues.
    pub fn new(issues: Vec<HealthIssue>) -> Self {
        Self { issues }
    }
    /// Whether no issue was found.
    pub fn is_healthy(&self) -> bool {
        self.issues.is_empty()
    }
}

/// Every session of the policy's scope (with or without the soft-deleted ones), all pages.
async fn scoped_sessions<S: QueryStore + ?Sized>(
    store: &S,
    policy: &RetentionPolicy,
    include_deleted: bool,
) -> Result<Vec<asm_core::Session>> {
    let mut query = SessionSearch::new()
        .include_deleted(include_deleted)
        .order(SessionOrder::CreatedAtAsc)
        .limit(crate::MAX_QUERY_LIMIT);
    query.agent_id.clone_from(&policy.agent_id);
    let mut out = Vec::new();
    loop {
        let page = store.search_sessions(&query).await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => query = query.cursor(c),
            None => return Ok(out),
        }
    }
}

/// Step 1 of a cycle: soft deletes the expired sessions of the policy's scope (only reports
/// them in a dry run). Sets `deleted_at = now` and keeps `updated_at`.
///
/// A soft delete rewrites the session record it read (like every `save_session`): a concurrent
/// writer of the same session may lose its change or undo the mark, so run maintenance when
/// the sessions it touches are idle (they are expired, which is what the age limit is for).
///
/// # Errors
/// A failing search; failing single sessions are pushed onto `errors`.
pub async fn soft_delete_expired<S: QueryStore + ?Sized>(
    store: &S,
    policy: &RetentionPolicy,
    now: Timestamp,
    errors: &mut Vec<String>,
) -> Result<Vec<SessionId>> {
    if policy.max_session_age.is_none() {
        return Ok(Vec::new());
    }
    let mut done = Vec::new();
    for mut session in scoped_sessions(store, policy, false).await? {
        if !policy.soft_deletes(&session, now) {
            continue;
        }
        if !policy.dry_run {
            session.deleted_at = Some(now);
            if let Err(err) = store.save_session(&session).await {
                errors.push(format!("soft delete of {}: {err}", session.id));
                continue;
            }
        }
        done.push(session.id);
    }
    Ok(done)
}

/// Step 2 of a cycle: hard deletes the soft-deleted sessions past their grace period, each with
/// its runs and events in one atomic delete (only reports them in a dry run).
///
/// # Errors
/// A failing search; failing single sessions are pushed onto `errors` and the others go on.
pub async fn hard_delete_expired<S: QueryStore + ?Sized>(
    store: &S,
    policy: &RetentionPolicy,
    now: Timestamp,
    errors: &mut Vec<String>,
) -> Result<Vec<SessionId>> {
    if policy.hard_delete_after.is_none() {
        return Ok(Vec::new());
    }
    let mut done = Vec::new();
    for session in scoped_sessions(store, policy, true).await? {
        if !policy.hard_deletes(&session, now) {
            continue;
        }
        if !policy.dry_run
            && let Err(err) = store.delete_session(&session.id).await
        {
            if err.code() != ErrorCode::SessionNotFound {
                errors.push(format!("hard delete of {}: {err}", session.id));
            }
            continue;
        }
        done.push(session.id);
    }
    Ok(done)
}

/// Prunes one session down to the policy's event limit (see
/// [`RetentionPolicy::plan_prune`]); returns how many events were (or in a dry run would be)
/// removed. Reads the session's whole log once, and only when its counter is above the limit.
///
/// # Errors
/// The store's errors ([`ErrorCode::SessionNotFound`] for an unknown session).
pub async fn prune_session<S: MaintenanceStore + ?Sized>(
    store: &S,
    session_id: &SessionId,
    policy: &RetentionPolicy,
) -> Result<u64> {
    let Some(max) = policy.max_events_per_session else { return Ok(0) };
    // The counter bounds the event count: below the limit there is nothing to read.
    if store.latest_sequence(session_id).await? <= max {
        return Ok(0);
    }
    let events = store.get_events(session_id, &EventQuery::new()).await?;
    let listed: Vec<(u64, EventKind)> = events.iter().map(|e| (e.sequence(), e.kind)).collect();
    let plan = policy.plan_prune(&listed);
    if plan.is_empty() {
        return Ok(0);
    }
    if policy.dry_run {
        return Ok(plan.len() as u64);
    }
    store.prune_events(session_id, &plan).await
}

/// The default body of [`MaintenanceStore::run_maintenance`].
///
/// # Errors
/// As [`MaintenanceStore::run_maintenance`].
pub async fn run_cycle<S: MaintenanceStore + ?Sized>(store: &S, policy: &RetentionPolicy) -> Result<MaintenanceReport> {
    policy.validate()?;
    let started = Instant::now();
    let now = asm_core::now();
    let mut report = MaintenanceReport { dry_run: policy.dry_run, ..MaintenanceReport::default() };
    let mut errors = Vec::new();
    match soft_delete_expired(store, policy, now, &mut errors).await {
        Ok(ids) => report.sessions_soft_deleted = ids,
        Err(err) => errors.push(format!("soft delete: {err}")),
    }
    match hard_delete_expired(store, policy, now, &mut errors).await {
        Ok(ids) => report.sessions_hard_deleted = ids,
        Err(err) => errors.push(format!("hard delete: {err}")),
    }
    if policy.max_events_per_session.is_some() {
        match scoped_sessions(store, policy, true).await {
            Ok(sessions) => {
                for session in sessions {
                    if report.sessions_hard_deleted.contains(&session.id) {
                        continue;
                    }
                    match prune_session(store, &session.id, policy).await {
                        Ok(0) => {}
                        Ok(n) => {
                            report.events_pruned += n;
                            report.pruned_sessions.push((session.id, n));
                        }
                        Err(err) if err.code() == ErrorCode::SessionNotFound => {}
                        Err(err) => errors.push(format!("prune of {}: {err}", session.id)),
                    }
                }
            }
            Err(err) => errors.push(format!("prune: {err}")),
        }
    }
    if policy.agent_id.is_none() {
        match store.clean_orphans(policy.dry_run).await {
            Ok(n) => report.orphans_cleaned = n,
            Err(err) => errors.push(format!("orphan cleanup: {err}")),
        }
    }
    report.errors = errors;
    report.duration = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_prunes_cheap_kinds_first_and_never_protected_ones() {
        use EventKind::*;
        let events = vec![
            (1, SessionCreated),
            (2, RunStarted),
            (3, MessageSent),
            (4, MessageStreamed),
            (5, MessageStreamed),
            (6, ErrorOccurred),
            (7, TokenUsageUpdated),
            (8, MessageReceived),
            (9, RunCompleted),
        ];
        let p = RetentionPolicy::new().max_events_per_session(6);
        assert_eq!(p.plan_prune(&events), vec![4, 5, 7]);
        let p = RetentionPolicy::new().max_events_per_session(5);
        assert_eq!(p.plan_prune(&events), vec![3, 4, 5, 7]);
        // Only protected events would be left: the session stays above the limit.
        let p = RetentionPolicy::new().max_events_per_session(1);
        assert_eq!(p.plan_prune(&events), vec![3, 4, 5, 7, 8]);
        assert!(RetentionPolicy::new().max_events_per_session(9).plan_prune(&events).is_empty());
    }

    #[test]
    fn soft_delete_rules() {
        let now = asm_core::now();
        let old = minus(now, DAY * 100);
        let mut s = asm_core::Session::new("a").unwrap();
        s.updated_at = old;
        let p = RetentionPolicy::new();
        assert!(p.soft_deletes(&s, now));
        s.status = SessionStatus::Active;
        assert!(!p.soft_deletes(&s, now));
        s.status = SessionStatus::Completed;
        s.tags.push("pinned".into());
        assert!(!p.soft_deletes(&s, now));
        s.tags.clear();
        s.updated_at = now;
        assert!(!p.soft_deletes(&s, now));
        s.deleted_at = Some(old);
        assert!(p.hard_deletes(&s, now));
        assert!(!p.hard_delete_after(None).hard_deletes(&s, now));
    }
}
