//! Forking a session at a turn boundary: [`SessionManager::fork_session`], [`ForkPoint`],
//! [`ForkContinuation`] (native fork vs replay), and the hook `Execution::prepare` calls to
//! resume a fork's parent natively ([`fork_handle`]).

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use asm_core::{
    Error, ErrorCode, Event, EventId, EventKind, JsonMap, Result, Run, RunId, Session, SessionId, StoredEvent, keys,
};
use asm_ports::{EventQuery, SessionStore};

use crate::manager::{RUNTIME_PROVIDER, SessionManager};
use crate::options::Continuation;

/// Session metadata key under which a fork records where it came from (see
/// [`SessionManager::fork_session`]).
pub const FORK_METADATA_KEY: &str = "fork";

/// Event and run metadata key on every copy: the original's `session_id`, `event_id` and
/// `sequence` (events) or `run_id` (runs).
pub const FORKED_FROM_KEY: &str = "forked_from";

/// Events read and appended per batch while copying.
const COPY_PAGE: usize = 500;
/// Lifecycle events read per page while looking for the fork point.
const SCAN_PAGE: usize = 1_000;

const STATE_COPYING: &str = "copying";
const STATE_READY: &str = "ready";

/// Where a fork branches off its parent. Either way the point is a **turn boundary**: no run of
/// the parent is in flight there.
///
/// ```
/// use asm_core::RunId;
/// use asm_runtime::ForkPoint;
/// let run = RunId::new();
/// assert_ne!(ForkPoint::after_run(run), ForkPoint::Latest);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForkPoint {
    /// Right after the given (finished) run: its terminal event, and the
    /// `tool_approval_requested` written with it when the run was cancelled for an approval.
    AfterRun(RunId),
    /// The parent's latest turn boundary: the end of its log, or, while runs are executing, the
    /// last point before the earliest of them started.
    Latest,
}

impl ForkPoint {
    /// [`ForkPoint::AfterRun`].
    pub fn after_run(run_id: RunId) -> Self {
        ForkPoint::AfterRun(run_id)
    }

    fn to_json(&self) -> Value {
        match self {
            ForkPoint::AfterRun(run) => json!({"after_run": run.as_str()}),
            ForkPoint::Latest => json!("latest"),
        }
    }
}

/// Why a fork continues by transcript replay rather than natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayReason {
    /// The fork point is not the parent's latest turn; a provider session forks only at its end.
    NotLatestTurn,
    /// The parent has no provider session handle for the manager's adapter.
    NoProviderHandle,
    /// The manager's adapter cannot fork a provider session.
    AdapterCannotFork,
    /// The parent's log grew while the fork was being made, so its handle may be newer than the
    /// fork point.
    ParentChanged,
}

/// How a fork's next run continues the conversation.
///
/// - **Natively**, when the fork point is the parent's latest turn, the parent has a provider
///   handle for the manager's adapter and the adapter can fork
///   ([`ProviderAdapter::supports_native_fork`](asm_ports::ProviderAdapter::supports_native_fork)):
///   the fork's first run with [`Continuation::Auto`] or [`Continuation::Native`] resumes the
///   parent's handle as a fork ([`ExecuteRequest::fork`](asm_ports::ExecuteRequest::fork):
///   Claude `--resume <id> --fork-session`, Codex `exec fork <thread id>`; its `run_started`
///   says `continuation: native_fork`), and the new provider session it reports becomes the
///   fork's own handle, which later runs resume.
/// - **By transcript replay** of the copied events otherwise, because a provider session can
///   only be forked at its end: when the fork point is an earlier turn, when the adapter cannot
///   fork, and also when, by the time the fork first runs, the parent has run again (its
///   provider session then holds turns the fork must not see) or the fork has already run
///   without obtaining a handle of its own. The first replayed run that reports a provider
///   session gives the fork its own handle, as in any new session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForkContinuation {
    /// The first run with [`Continuation::Auto`] or [`Continuation::Native`] resumes the
    /// parent's provider session as a fork, provided the parent has not run again by then
    /// (otherwise it replays).
    Native {
        /// The provider (adapter name).
        provider: String,
        /// The parent's provider session handle the fork branches from.
        provider_session_id: String,
    },
    /// Runs replay the copied transcript (until a run records a provider handle of its own).
    Replay(ReplayReason),
}

/// What [`SessionManager::fork_session`] made.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ForkedSession {
    /// The new session (status `pending`, `parent_session_id` set), as stored.
    pub session: Session,
    /// The last parent sequence copied (the fork point).
    pub parent_sequence: u64,
    /// Events copied; they are the fork's sequences `1..=events_copied`.
    pub events_copied: u64,
    /// Runs copied (every run with an event up to the fork point).
    pub runs_copied: usize,
    /// The `session_created` event recording the fork (sequence `events_copied + 1`).
    pub fork_event: StoredEvent,
    /// How the fork's next run continues.
    pub continuation: ForkContinuation,
}

/// What the scan of the parent's lifecycle events found.
struct Plan {
    /// Last parent sequence to copy.
    cut: u64,
    /// The parent's last sequence when the scan began.
    last: u64,
    /// No run started after `cut`.
    latest_turn: bool,
}

impl SessionManager {
    /// Forks `session_id` at `point` into a new session.
    ///
    /// The new session has `parent_session_id` set, the parent's agent id, context, tags and
    /// metadata (minus its provider sessions; for a native fork it keeps the provider state the
    /// parent's last run left beside the handle, not the handle), `metadata.provider` = this
    /// manager's adapter, and
    /// `metadata.fork` = `{state, parent_session_id, parent_sequence, point, events_copied,
    /// fork_sequence, native?}`. It is `pending`, like a new session: activate it to run.
    ///
    /// Its log: the parent's events up to the fork point, copied with new ids, numbered from 1,
    /// each with `metadata.forked_from = {session_id, event_id, sequence}` and otherwise as they
    /// were (kind, payload, timestamp, provider); then one `session_created` with `provider`,
    /// `parent_session_id`, `parent_sequence`, `fork_point`, `events_copied`, `runs_copied` and
    /// `continuation` in its payload and `metadata.fork = true`. The runs those events belong to
    /// are copied too, as records of the fork with new ids and
    /// `metadata.forked_from = {session_id, run_id}`, so every event of a session names a run of
    /// that same session and the fork's transcript, runs and log stand on their own (deleting
    /// either session leaves the other whole). The parent is only read.
    ///
    /// How the fork continues (natively from the parent's provider session, or by replaying the
    /// copied transcript) is described on [`ForkContinuation`] and reported in
    /// [`ForkedSession::continuation`].
    ///
    /// Consistency: events are read and appended in batches of 500, each batch appended with
    /// compare-and-append so the copies are exactly `1..=n`, in order, with no foreign event
    /// between them. The session is created first with `metadata.fork.state = "copying"`,
    /// and becomes `"ready"` in the last write. If any step fails the new session is deleted
    /// (with its runs and events) before the error is returned; if even that fails (or the
    /// process dies mid-copy) what is left is a `pending` session marked `"copying"`, which
    /// cannot execute runs (`invalid_operation`) and can be deleted. A returned fork is complete.
    ///
    /// ```
    /// use asm_core::RunInput;
    /// use asm_runtime::{RunOptions, ForkPoint, NewSession, SessionManager};
    /// # use asm_store_memory::InMemorySessionStore;
    /// # use asm_testkit::ScriptedAdapter;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
    /// let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("Hi!"));
    /// let parent = manager.start_session(NewSession::new("agent")).await?;
    /// manager.activate_session(&parent.id).await?;
    /// let run = manager.start_run(&parent.id, RunInput::user("Hello"), RunOptions::default()).await?;
    /// manager.execute_run(&run.id, RunOptions::default()).await?;
    ///
    /// let fork = manager.fork_session(&parent.id, ForkPoint::after_run(run.id)).await?;
    /// assert_eq!(fork.session.parent_session_id.as_ref(), Some(&parent.id));
    /// let log = manager.session_events(&fork.session.id, Default::default()).await?;
    /// assert_eq!(log.len() as u64, fork.events_copied + 1);
    /// assert_eq!(log.last().unwrap().id, fork.fork_event.id);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Nothing is written on these: [`ErrorCode::SessionNotFound`], [`ErrorCode::RunNotFound`],
    /// [`ErrorCode::SessionMismatch`] (the run belongs to another session),
    /// [`ErrorCode::InvalidOperation`] when the fork point is inside an unfinished run (the run
    /// is pending or running, or another run was in flight when it ended) or the parent is
    /// itself an incomplete fork. Store errors while copying (the fork is then removed).
    #[tracing::instrument(skip_all, fields(session_id = %session_id))]
    pub async fn fork_session(&self, session_id: &SessionId, point: ForkPoint) -> Result<ForkedSession> {
        let store = &self.inner.store;
        let parent = store.get_session(session_id).await?;
        if fork_state(&parent).is_some_and(|state| state != STATE_READY) {
            return Err(incomplete_fork(&parent.id));
        }
        let plan = scan(&**store, &parent.id, &point).await?;
        // Re-read after the scan: if no event was appended meanwhile, no run finished, so the
        // handle is the one of the scanned log (a finish writes its handle and its terminal
        // event in one atomic flush).
        let parent = store.get_session(session_id).await?;
        let changed = store.latest_sequence(session_id).await? != plan.last;
        let continuation = self.fork_continuation(&parent, &plan, changed);

        let provider = self.inner.adapter.name().to_owned();
        let mut fork = Session::new(parent.agent_id.clone())?;
        fork.parent_session_id = Some(parent.id.clone());
        fork.context = parent.context.clone();
        fork.tags = parent.tags.clone();
        fork.metadata = parent.metadata.clone();
        let provider_sessions = fork.metadata.remove("provider_sessions");
        fork.metadata.insert(keys::PROVIDER.into(), provider.clone().into());
        let mut record = JsonMap::new();
        record.insert("state".into(), STATE_COPYING.into());
        record.insert("parent_session_id".into(), parent.id.as_str().into());
        record.insert("parent_sequence".into(), plan.cut.into());
        record.insert("point".into(), point.to_json());
        if let ForkContinuation::Native { provider, provider_session_id } = &continuation {
            record
                .insert("native".into(), json!({"provider": provider, keys::PROVIDER_SESSION_ID: provider_session_id}));
            // The state the parent's last run left beside its handle belongs to the provider
            // session the fork branches from (e.g. Codex's thread-cumulative usage, which a
            // forked thread carries on): hand it to the fork's first run, without the handle.
            if let Some(Value::Object(mut state)) = provider_sessions.and_then(|p| p.get(provider).cloned()) {
                state.remove(keys::PROVIDER_SESSION_ID);
                if !state.is_empty() {
                    fork.metadata.insert("provider_sessions".into(), json!({ provider.as_str(): state }));
                }
            }
        }
        fork.metadata.insert(FORK_METADATA_KEY.into(), record.into());
        store.save_session(&fork).await?;

        match self.fill_fork(&mut fork, &parent.id, &plan, &point, &continuation).await {
            Ok((fork_event, events_copied, runs_copied)) => {
                tracing::info!(fork_id = %fork.id, events_copied, runs_copied, "session forked");
                Ok(ForkedSession {
                    session: fork,
                    parent_sequence: plan.cut,
                    events_copied,
                    runs_copied,
                    fork_event,
                    continuation,
                })
            }
            Err(error) => {
                if let Err(cleanup) = store.delete_session(&fork.id).await {
                    tracing::warn!(fork_id = %fork.id, %cleanup, "could not remove the incomplete fork");
                }
                Err(error)
            }
        }
    }

    fn fork_continuation(&self, parent: &Session, plan: &Plan, changed: bool) -> ForkContinuation {
        let adapter = &self.inner.adapter;
        let handle = parent
            .metadata
            .get("provider_sessions")
            .and_then(|p| p.get(adapter.name()))
            .and_then(|p| p.get(keys::PROVIDER_SESSION_ID))
            .and_then(Value::as_str);
        let reason = if !plan.latest_turn {
            ReplayReason::NotLatestTurn
        } else if !(adapter.supports_native_fork() && adapter.supports_native_resume()) {
            ReplayReason::AdapterCannotFork
        } else if changed {
            ReplayReason::ParentChanged
        } else if let Some(handle) = handle {
            return ForkContinuation::Native {
                provider: adapter.name().to_owned(),
                provider_session_id: handle.to_owned(),
            };
        } else {
            ReplayReason::NoProviderHandle
        };
        ForkContinuation::Replay(reason)
    }

    /// Copies the events and runs, appends the fork event and marks the fork ready.
    async fn fill_fork(
        &self,
        fork: &mut Session,
        parent: &SessionId,
        plan: &Plan,
        point: &ForkPoint,
        continuation: &ForkContinuation,
    ) -> Result<(StoredEvent, u64, usize)> {
        let store = &self.inner.store;
        let mut runs: HashMap<RunId, Run> = HashMap::new();
        let mut run_order: Vec<RunId> = Vec::new();
        let mut copied = 0u64;
        let mut after = 0u64;
        while after < plan.cut {
            let query = EventQuery::new().after(after).before(plan.cut.saturating_add(1)).limit(COPY_PAGE);
            let page = store.get_events(parent, &query).await?;
            let Some(last) = page.last().map(StoredEvent::sequence) else { break };
            let mut batch = Vec::with_capacity(page.len());
            for event in page {
                let run_id = match &event.run_id {
                    None => None,
                    Some(original) => {
                        if !runs.contains_key(original) {
                            let copy = copy_run(store.get_run(original).await?, &fork.id);
                            run_order.push(original.clone());
                            runs.insert(original.clone(), copy);
                        }
                        runs.get(original).map(|copy| copy.id.clone())
                    }
                };
                batch.push(copy_event(event, &fork.id, run_id));
            }
            let count = batch.len() as u64;
            store.append(batch, Some(copied)).await?;
            copied += count;
            after = last;
        }
        // Run records after their events: every copied run is finished, and a store may refuse
        // events for a run it already holds as finished.
        for original in &run_order {
            if let Some(copy) = runs.get(original) {
                store.save_run(copy).await?;
            }
        }

        let mut data = JsonMap::new();
        data.insert(keys::PROVIDER.into(), self.inner.adapter.name().into());
        data.insert("parent_session_id".into(), parent.as_str().into());
        data.insert("parent_sequence".into(), plan.cut.into());
        data.insert("fork_point".into(), point.to_json());
        data.insert("events_copied".into(), copied.into());
        data.insert("runs_copied".into(), run_order.len().into());
        data.insert("continuation".into(), continuation_json(continuation));
        let mut marker =
            Event::new(EventKind::SessionCreated, fork.id.clone()).with_payload(data).with_provider(RUNTIME_PROVIDER);
        marker.metadata.insert(FORK_METADATA_KEY.into(), true.into());
        let marker = store
            .append(vec![marker], Some(copied))
            .await?
            .pop()
            .ok_or_else(|| Error::new(ErrorCode::InternalError, "store returned no event for a batch of one"))?;

        if let Some(Value::Object(record)) = fork.metadata.get_mut(FORK_METADATA_KEY) {
            record.insert("state".into(), STATE_READY.into());
            record.insert("events_copied".into(), copied.into());
            record.insert("fork_sequence".into(), marker.sequence().into());
        }
        fork.updated_at = asm_core::now();
        store.save_session(fork).await?;
        Ok((marker, copied, run_order.len()))
    }
}

/// Finds the last parent sequence to copy for `point` by scanning only the run lifecycle
/// events (and approval requests) of the parent's log.
async fn scan(store: &dyn SessionStore, parent: &SessionId, point: &ForkPoint) -> Result<Plan> {
    let target = match point {
        ForkPoint::Latest => None,
        ForkPoint::AfterRun(run_id) => {
            let run = store.get_run(run_id).await?;
            if &run.session_id != parent {
                return Err(Error::new(
                    ErrorCode::SessionMismatch,
                    format!("run {} belongs to session {}, not {parent}", run.id, run.session_id),
                ));
            }
            if !run.status.is_terminal() {
                return Err(Error::new(
                    ErrorCode::InvalidOperation,
                    format!("run {} is {}: a session can only be forked after a finished run", run.id, run.status),
                )
                .with_detail("run_status", run.status.as_str()));
            }
            Some(run.id)
        }
    };
    // Read after the run: a finished run's terminal event is stored by then.
    let last = store.latest_sequence(parent).await?;
    let mut query = EventQuery::new().before(last.saturating_add(1)).limit(SCAN_PAGE);
    for &kind in EventKind::ALL {
        if kind.is_run_lifecycle() || kind == EventKind::ToolApprovalRequested {
            query = query.kind(kind);
        }
    }

    let mut open: HashSet<RunId> = HashSet::new();
    let mut boundary = 0u64;
    let mut last_start = 0u64;
    let mut target_end: Option<u64> = None;
    let mut after = 0u64;
    loop {
        let page = store.get_events(parent, &query.clone().after(after)).await?;
        let Some(page_last) = page.last().map(StoredEvent::sequence) else { break };
        for event in &page {
            let (Some(seq), Some(run)) = (event.sequence, event.run_id.as_ref()) else { continue };
            match event.kind {
                EventKind::RunStarted => {
                    if open.is_empty() {
                        boundary = seq.saturating_sub(1);
                    }
                    open.insert(run.clone());
                    last_start = seq;
                }
                // Written in the same batch as the run's terminal event: part of its end.
                EventKind::ToolApprovalRequested
                    if target.as_ref() == Some(run) && target_end == Some(seq.saturating_sub(1)) =>
                {
                    target_end = Some(seq);
                }
                kind if kind.is_run_terminal() => {
                    open.remove(run);
                    if target.as_ref() == Some(run) && target_end.is_none() {
                        if let Some(other) = open.iter().next() {
                            return Err(Error::new(
                                ErrorCode::InvalidOperation,
                                format!("run {run} ended while run {other} was in flight: not a turn boundary"),
                            )
                            .with_detail("unfinished_run_id", other.as_str()));
                        }
                        target_end = Some(seq);
                    }
                }
                _ => {}
            }
        }
        after = page_last;
        if page.len() < SCAN_PAGE {
            break;
        }
    }
    if open.is_empty() {
        boundary = last;
    }
    let cut = match (&target, target_end) {
        (None, _) => boundary,
        (Some(_), Some(end)) => end,
        (Some(run), None) => {
            return Err(Error::new(
                ErrorCode::InvalidOperation,
                format!("run {run} has no terminal event in session {parent}: nothing to fork after"),
            ));
        }
    };
    Ok(Plan { cut, last, latest_turn: last_start <= cut })
}

fn copy_event(original: StoredEvent, fork: &SessionId, run_id: Option<RunId>) -> Event {
    let mut record = original.into_event().into_record();
    let origin = json!({
        "session_id": record.session_id.as_str(),
        "event_id": record.id.as_str(),
        "sequence": record.sequence,
    });
    record.id = EventId::new();
    record.session_id = fork.clone();
    record.run_id = run_id;
    record.sequence = None;
    record.metadata.insert(FORKED_FROM_KEY.into(), origin);
    Event::from(record)
}

fn copy_run(original: Run, fork: &SessionId) -> Run {
    let mut copy = original;
    let origin = json!({"session_id": copy.session_id.as_str(), "run_id": copy.id.as_str()});
    copy.id = RunId::new();
    copy.session_id = fork.clone();
    copy.metadata.insert(FORKED_FROM_KEY.into(), origin);
    copy
}

fn continuation_json(continuation: &ForkContinuation) -> Value {
    match continuation {
        ForkContinuation::Native { provider, provider_session_id } => {
            json!({"mode": "native", "provider": provider, keys::PROVIDER_SESSION_ID: provider_session_id})
        }
        ForkContinuation::Replay(reason) => json!({"mode": "replay", "reason": reason_name(*reason)}),
    }
}

fn reason_name(reason: ReplayReason) -> &'static str {
    match reason {
        ReplayReason::NotLatestTurn => "not_latest_turn",
        ReplayReason::NoProviderHandle => "no_provider_handle",
        ReplayReason::AdapterCannotFork => "adapter_cannot_fork",
        ReplayReason::ParentChanged => "parent_changed",
    }
}

/// The fork record of a session made by [`SessionManager::fork_session`] (an object with
/// `state` and `parent_session_id`, on a session with a parent); `None` for any other session.
fn fork_record(session: &Session) -> Option<&JsonMap> {
    session.parent_session_id.as_ref()?;
    let record = session.metadata.get(FORK_METADATA_KEY)?.as_object()?;
    (record.get("state")?.is_string() && record.get("parent_session_id")?.is_string()).then_some(record)
}

fn fork_state(session: &Session) -> Option<&str> {
    fork_record(session)?.get("state")?.as_str()
}

fn incomplete_fork(id: &SessionId) -> Error {
    Error::new(
        ErrorCode::InvalidOperation,
        format!("session {id} is an incomplete fork (copying did not finish); delete it and fork again"),
    )
}

/// For [`Execution::prepare`](crate::execution::Execution): the parent's provider handle to
/// resume **as a fork** when `session` is a fork that should continue natively and has no
/// handle of its own yet; `None` when the run goes the usual way.
///
/// # Errors
/// [`ErrorCode::InvalidOperation`] for an incomplete fork; store errors.
pub(crate) async fn fork_handle(
    manager: &SessionManager,
    session: &Session,
    has_own_handle: bool,
    continuation: Continuation,
) -> Result<Option<String>> {
    let Some(record) = fork_record(session) else { return Ok(None) };
    if fork_state(session) != Some(STATE_READY) {
        return Err(incomplete_fork(&session.id));
    }
    let adapter = &manager.inner.adapter;
    if has_own_handle
        || !matches!(continuation, Continuation::Auto | Continuation::Native)
        || !(adapter.supports_native_fork() && adapter.supports_native_resume())
    {
        return Ok(None);
    }
    let native = record.get("native");
    let handle = native.and_then(|n| n.get(keys::PROVIDER_SESSION_ID)).and_then(Value::as_str);
    let (Some(handle), Some(parent), Some(parent_sequence), Some(fork_sequence)) = (
        handle.filter(|_| native.and_then(|n| n.get(keys::PROVIDER)).and_then(Value::as_str) == Some(adapter.name())),
        record.get("parent_session_id").and_then(Value::as_str).and_then(|id| SessionId::parse(id).ok()),
        record.get("parent_sequence").and_then(Value::as_u64),
        record.get("fork_sequence").and_then(Value::as_u64),
    ) else {
        return Ok(None);
    };
    let store = &manager.inner.store;
    let started = EventQuery::new().kind(EventKind::RunStarted).limit(1);
    // A run of the fork that ended without a handle of its own: its turn is in the fork's log
    // but not in the parent's provider session.
    if !store.get_events(&session.id, &started.clone().after(fork_sequence)).await?.is_empty() {
        return Ok(None);
    }
    // The parent ran again: its provider session now holds turns the fork must not see.
    match store.get_events(&parent, &started.after(parent_sequence)).await {
        Ok(events) if events.is_empty() => Ok(Some(handle.to_owned())),
        Ok(_) => Ok(None),
        Err(error) if error.code() == ErrorCode::SessionNotFound => Ok(None),
        Err(error) => Err(error),
    }
}
