//! [`ProviderRouter`]: a [`ProviderAdapter`] that serves each run through one of its adapters.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;

use asm_core::{Capability, Error, ErrorCode, JsonMap, Result, RunId, Session, keys};
use asm_ports::{
    CancellationToken, DynProviderAdapter, EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent,
};

use crate::breaker::{BreakerConfig, BreakerStatus, CircuitBreaker};
use crate::capability::matches_all;
use crate::clock::{Clock, SystemClock};
use crate::error::{FailedAttempt, RoutingError};
use crate::options::{ROUTING_OPTION, RoutingOptions};
use crate::policy::RoutingPolicy;

/// Event metadata key: the adapter id serving the attempt.
pub const ROUTED_PROVIDER: &str = "routed_provider";
/// Event metadata key: the attempt number, from 1.
pub const ROUTING_ATTEMPT: &str = "routing_attempt";
/// Event metadata key: the ordered candidate ids of the run.
pub const ROUTING_CANDIDATES: &str = "routing_candidates";
/// Event metadata key (failover attempts only): the adapter id of the previous attempt.
pub const FAILOVER_FROM: &str = "failover_from";
/// Event metadata key (failover attempts only): the error code of the previous attempt.
pub const FAILOVER_REASON: &str = "failover_reason";
/// Key of the routing summary in the run's metadata (success) or the error's details (failure).
pub const ROUTING_METADATA: &str = "routing";
/// Provider-state keys the router keeps beside each adapter's session handle, to tell whether
/// the handle still holds the whole conversation (see [`ProviderRouter`], continuation).
const ROUTED_SEQ: &str = "routed_seq";
const ROUTED_HANDLE: &str = "routed_handle";
/// Error detail marking an attempt that ended on the runtime's sink error (not failed over).
const SINK_ERROR: &str = "routing_sink_error";

/// The default router name, recorded only where no adapter served the run.
pub const DEFAULT_ROUTER_NAME: &str = "router";

#[derive(Clone)]
struct Entry {
    id: String,
    adapter: DynProviderAdapter,
}

#[derive(Clone, Copy, Debug, Default)]
struct Health {
    failure_count: u32,
    last_failure_ms: Option<u64>,
}

struct ActiveRun {
    session_id: String,
    adapter_id: String,
    attempt: u32,
    cancel: CancellationToken,
}

struct Sticky {
    adapter_id: String,
    expires_at_ms: u64,
}

#[derive(Default)]
struct State {
    adapters: Vec<Entry>,
    health: HashMap<String, Health>,
    breakers: HashMap<String, CircuitBreaker>,
    active: HashMap<RunId, ActiveRun>,
    sticky: HashMap<String, Sticky>,
}

struct Inner {
    name: String,
    policy: RoutingPolicy,
    health_cooldown: Duration,
    breaker: Option<BreakerConfig>,
    sticky_ttl: Duration,
    clock: Arc<dyn Clock>,
    rng: Mutex<StdRng>,
    state: Mutex<State>,
}

/// A [`ProviderAdapter`] over named adapters: each run is served by one of them, chosen by a
/// [`RoutingPolicy`], with failover to the next candidate on retryable errors. The runtime does
/// not know it is a router: hand it to `SessionManager::new` like any adapter.
///
/// **Routing a run.** Per-run options come from the adapter option [`ROUTING_OPTION`]
/// ([`RoutingOptions`]) and are removed before an adapter is called. Candidates: registered
/// adapters (registration order) whose *current* capabilities satisfy `required_capabilities`,
/// minus `exclude`, ordered by the effective policy (the router's, with the run's overrides),
/// minus adapters in health cooldown (a failure younger than the cooldown) or with a circuit
/// breaker that refuses calls; a sticky run's bound adapter moves to the front. Up to
/// `min(max_attempts, candidates)` attempts are made; an attempt that fails with a retryable
/// error ([`Error::is_retryable`]) fails over to the next candidate, any other error ends the
/// run. A half-open breaker lets only its probe count through: a candidate whose breaker
/// refuses at attempt time is skipped without using an attempt.
///
/// **What the run records.** The outcome names the adapter that served it
/// ([`ExecuteOutcome::served_by`], or the error detail `provider`), so the run's `provider` and
/// the session's `provider_sessions` are the real provider's. Every event of an attempt carries
/// metadata [`ROUTED_PROVIDER`], [`ROUTING_ATTEMPT`], [`ROUTING_CANDIDATES`] and, after a
/// failover, [`FAILOVER_FROM`] and [`FAILOVER_REASON`]; the run's metadata (or the error's
/// details) gets the same summary under [`ROUTING_METADATA`].
///
/// **Continuation.** The router does not resume natively itself
/// ([`supports_native_resume`](ProviderAdapter::supports_native_resume) is `false`), so with
/// `Continuation::Auto` or `Replay` the runtime hands it the session's transcript as it stood
/// before the run. Every attempt, a fallback included, gets that transcript and the run's input,
/// never a failed attempt's partial output; an adapter that resumes natively and holds the
/// session's *current* provider session (its handle is the one of the latest routed run) is
/// resumed from that handle instead. A handle older than another provider's turn would miss that
/// turn, so it is replayed. `native_resume: false` forces replay.
///
/// **Cancel.** Every attempt gets the run's cancellation token: a cancel reaches the adapter
/// serving at that moment, and no further attempt starts. [`ProviderRouter::cancel`] cancels a
/// routed run directly.
///
/// ```
/// use asm_routing::{ProviderRouter, RoutingPolicy};
/// use asm_testkit::ScriptedAdapter;
/// let router = ProviderRouter::builder()
///     .adapter(ScriptedAdapter::replying("from claude").named("claude"))
///     .adapter(ScriptedAdapter::replying("from codex").named("codex"))
///     .policy(RoutingPolicy::new().prefer(["codex"]))
///     .build()?;
/// let status = router.status();
/// assert_eq!(status.adapters.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["claude", "codex"]);
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ProviderRouter {
    inner: Arc<Inner>,
}

impl fmt::Debug for ProviderRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("ProviderRouter")
            .field("name", &self.inner.name)
            .field("adapters", &state.adapters.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ProviderRouter`].
#[must_use]
pub struct ProviderRouterBuilder {
    name: String,
    adapters: Vec<(String, DynProviderAdapter)>,
    policy: RoutingPolicy,
    health_cooldown: Duration,
    breaker: Option<BreakerConfig>,
    sticky_ttl: Duration,
    clock: Arc<dyn Clock>,
    seed: Option<u64>,
}

impl fmt::Debug for ProviderRouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRouterBuilder")
            .field("name", &self.name)
            .field("adapters", &self.adapters.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ProviderRouterBuilder {
    /// Registers `adapter` under its own [`name`](ProviderAdapter::name).
    pub fn adapter(self, adapter: impl ProviderAdapter) -> Self {
        let adapter: DynProviderAdapter = Arc::new(adapter);
        let id = adapter.name().to_owned();
        self.shared_adapter_as(id, adapter)
    }
    /// Registers `adapter` under `id`. The id is what the run records as its provider and
    /// where the session keeps the adapter's handle, so it should be the adapter's name unless
    /// two adapters of one provider are registered.
    pub fn adapter_as(self, id: impl Into<String>, adapter: impl ProviderAdapter) -> Self {
        self.shared_adapter_as(id, Arc::new(adapter))
    }
    /// Registers a shared adapter under `id`.
    pub fn shared_adapter_as(mut self, id: impl Into<String>, adapter: DynProviderAdapter) -> Self {
        self.adapters.push((id.into(), adapter));
        self
    }
    asm_core::builder_setters! {
        /// The router's policy (default [`RoutingPolicy::default`]).
        fn policy(policy: RoutingPolicy) { policy = policy }
        /// How long an adapter is skipped after a failure (default 30 s).
        fn health_cooldown(cooldown: Duration) { health_cooldown = cooldown }
        /// Enables a circuit breaker per adapter (off by default).
        fn circuit_breaker(config: BreakerConfig) { breaker = Some(config) }
        /// How long a sticky binding lasts after the run that made it (default 5 min). This router's own
        /// TTL (the original used a global setting instead).
        fn sticky_ttl(ttl: Duration) { sticky_ttl = ttl }
        /// The clock for cooldowns and sticky expiry ([`SystemClock`] by default).
        fn clock(clock: impl Clock) { clock = Arc::new(clock) }
        /// Seeds the random order of the `weighted` strategy (for reproducible tests).
        fn seed(seed: u64) { seed = Some(seed) }
        /// The name the runtime sees before an adapter serves [`DEFAULT_ROUTER_NAME`].
        fn name(name: impl Into<String>) { name = name.into() }
    }

    /// Builds the router.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] ([`RoutingError::InvalidAdapterId`]) for an empty or
    /// duplicate adapter id, or an empty router name.
    pub fn build(self) -> Result<ProviderRouter> {
        if self.name.trim().is_empty() {
            return Err(RoutingError::InvalidAdapterId(self.name).into());
        }
        let mut state = State::default();
        for (id, adapter) in self.adapters {
            if id.trim().is_empty() || state.adapters.iter().any(|e| e.id == id) {
                return Err(RoutingError::InvalidAdapterId(id).into());
            }
            state.adapters.push(Entry { id, adapter });
        }
        let rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Ok(ProviderRouter {
            inner: Arc::new(Inner {
                name: self.name,
                policy: self.policy,
                health_cooldown: self.health_cooldown,
                breaker: self.breaker,
                sticky_ttl: self.sticky_ttl,
                clock: self.clock,
                rng: Mutex::new(rng),
                state: Mutex::new(state),
            }),
        })
    }
}

/// Who serves the run, in order, and how many attempts may be made.
struct Plan {
    candidates: Vec<Entry>,
    limit: usize,
}

/// Releases the run's binding (and an unsettled breaker probe) however an attempt ends,
/// including when the runtime drops the future at its deadline.
struct AttemptGuard<'a> {
    router: &'a Inner,
    run_id: RunId,
    adapter_id: String,
    settled: bool,
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.router.state.lock();
        state.active.remove(&self.run_id);
        if !self.settled
            && let Some(breaker) = state.breakers.get_mut(&self.adapter_id)
        {
            breaker.release();
        }
    }
}

enum Verdict {
    Success,
    Failure,
    Neutral,
}

impl ProviderRouter {
    /// A builder with the defaults: name `router`, default policy, 30 s health cooldown, no
    /// breakers, 5 min sticky TTL, the system clock.
    pub fn builder() -> ProviderRouterBuilder {
        ProviderRouterBuilder {
            name: DEFAULT_ROUTER_NAME.to_owned(),
            adapters: Vec::new(),
            policy: RoutingPolicy::default(),
            health_cooldown: Duration::from_secs(30),
            breaker: None,
            sticky_ttl: Duration::from_secs(300),
            clock: Arc::new(SystemClock::new()),
            seed: None,
        }
    }

    /// Registers (or replaces) the adapter under `id`; a replaced adapter keeps its health and
    /// breaker.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for an empty id.
    pub fn register(&self, id: impl Into<String>, adapter: impl ProviderAdapter) -> Result<()> {
        let id = id.into();
        if id.trim().is_empty() {
            return Err(RoutingError::InvalidAdapterId(id).into());
        }
        let adapter: DynProviderAdapter = Arc::new(adapter);
        let mut state = self.inner.state.lock();
        match state.adapters.iter_mut().find(|e| e.id == id) {
            Some(entry) => entry.adapter = adapter,
            None => state.adapters.push(Entry { id, adapter }),
        }
        Ok(())
    }

    /// Removes the adapter `id` with its health, breaker and sticky bindings; returns whether it
    /// was registered. A run it is serving finishes (and can still be cancelled).
    pub fn unregister(&self, id: &str) -> bool {
        let mut state = self.inner.state.lock();
        let before = state.adapters.len();
        state.adapters.retain(|e| e.id != id);
        state.health.remove(id);
        state.breakers.remove(id);
        state.sticky.retain(|_, s| s.adapter_id != id);
        state.adapters.len() != before
    }

    /// Cancels a routed run: the adapter serving it stops, and no further attempt starts.
    ///
    /// # Errors
    /// [`ErrorCode::RunNotFound`] when the router is not serving `run_id`.
    pub fn cancel(&self, run_id: &RunId) -> Result<()> {
        let state = self.inner.state.lock();
        let active = state.active.get(run_id).ok_or_else(|| RoutingError::RunNotRouted(run_id.to_string()))?;
        active.cancel.cancel();
        Ok(())
    }

    /// The router's state: adapters with health and breakers, active runs, sticky bindings.
    pub fn status(&self) -> RouterStatus {
        let now = self.inner.clock.now_ms();
        let state = self.inner.state.lock();
        let adapters = state
            .adapters
            .iter()
            .map(|entry| {
                let health = state.health.get(&entry.id).copied().unwrap_or_default();
                let cooling_down = self.inner.cooling_down(&health, now);
                let breaker = state.breakers.get(&entry.id).map(|b| b.status(now));
                let available = !cooling_down && breaker.as_ref().is_none_or(|b| b.allowed);
                AdapterStatus {
                    id: entry.id.clone(),
                    provider: entry.adapter.name().to_owned(),
                    available,
                    health: HealthStatus {
                        failure_count: health.failure_count,
                        last_failure_ms_ago: health.last_failure_ms.map(|at| now.saturating_sub(at)),
                        cooling_down,
                    },
                    breaker: breaker.or_else(|| self.inner.breaker.map(|c| CircuitBreaker::new(c).status(now))),
                }
            })
            .collect();
        let mut active_runs: Vec<ActiveRunStatus> = state
            .active
            .iter()
            .map(|(run_id, run)| ActiveRunStatus {
                run_id: run_id.to_string(),
                session_id: run.session_id.clone(),
                adapter_id: run.adapter_id.clone(),
                attempt: run.attempt,
            })
            .collect();
        active_runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        let mut sticky_bindings: Vec<StickyBinding> = state
            .sticky
            .iter()
            .filter(|(_, s)| s.expires_at_ms > now)
            .map(|(id, s)| StickyBinding {
                sticky_id: id.clone(),
                adapter_id: s.adapter_id.clone(),
                expires_in_ms: s.expires_at_ms - now,
            })
            .collect();
        sticky_bindings.sort_by(|a, b| a.sticky_id.cmp(&b.sticky_id));
        RouterStatus {
            name: self.inner.name.clone(),
            policy: self.inner.policy.clone(),
            health_cooldown_ms: millis(self.inner.health_cooldown),
            sticky_ttl_ms: millis(self.inner.sticky_ttl),
            circuit_breakers: self.inner.breaker.is_some(),
            adapters,
            active_runs,
            sticky_bindings,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Inner {
    fn cooling_down(&self, health: &Health, now: u64) -> bool {
        health.failure_count > 0
            && health.last_failure_ms.is_some_and(|at| now.saturating_sub(at) < millis(self.health_cooldown))
    }

    fn plan(&self, policy: &RoutingPolicy, options: &RoutingOptions) -> std::result::Result<Plan, RoutingError> {
        let entries = self.state.lock().adapters.clone();
        let registered: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        // Capabilities are asked outside the lock: an adapter's answer may take a moment.
        let capable: Vec<String> = entries
            .iter()
            .filter(|e| matches_all(&e.adapter.capabilities(), &options.required_capabilities))
            .map(|e| e.id.clone())
            .collect();
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        let ordered = {
            let health = &state.health;
            let mut rng = self.rng.lock();
            policy.order(&capable, |id| health.get(id).map_or(0, |h| h.failure_count), &mut *rng)
        };
        let mut unavailable = Vec::new();
        let mut candidates: Vec<Entry> = Vec::new();
        for id in &ordered {
            let health = state.health.get(id).copied().unwrap_or_default();
            let breaker_allows = state.breakers.get(id).is_none_or(|b| b.allowed(now));
            match entries.iter().find(|e| &e.id == id) {
                Some(entry) if !self.cooling_down(&health, now) && breaker_allows => candidates.push(entry.clone()),
                _ => unavailable.push(id.clone()),
            }
        }
        if let Some(sticky_id) = &options.sticky_session_id {
            let bound = match state.sticky.get(sticky_id) {
                Some(binding) if binding.expires_at_ms > now => Some(binding.adapter_id.clone()),
                Some(_) => {
                    state.sticky.remove(sticky_id);
                    None
                }
                None => None,
            };
            if let Some(position) = bound.and_then(|id| candidates.iter().position(|c| c.id == id)) {
                let entry = candidates.remove(position);
                candidates.insert(0, entry);
            }
        }
        let limit = policy.attempt_limit(candidates.len());
        if limit == 0 {
            let excluded = registered.iter().filter(|id| !ordered.contains(id)).cloned().collect();
            return Err(RoutingError::NoCandidates { router: self.name.clone(), registered, excluded, unavailable });
        }
        Ok(Plan { candidates, limit })
    }

    /// Lets an attempt through the adapter's breaker (creating the breaker on first use).
    fn acquire(&self, id: &str) -> bool {
        let Some(config) = self.breaker else { return true };
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        state.breakers.entry(id.to_owned()).or_insert_with(|| CircuitBreaker::new(config)).try_acquire(now)
    }

    fn record(&self, id: &str, verdict: &Verdict) {
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        match verdict {
            Verdict::Success => {
                state.health.insert(id.to_owned(), Health::default());
                if let Some(breaker) = state.breakers.get_mut(id) {
                    breaker.record_success();
                }
            }
            Verdict::Failure => {
                let health = state.health.entry(id.to_owned()).or_default();
                health.failure_count = health.failure_count.saturating_add(1);
                health.last_failure_ms = Some(now);
                if let Some(breaker) = state.breakers.get_mut(id) {
                    breaker.record_failure(now);
                }
            }
            Verdict::Neutral => {
                if let Some(breaker) = state.breakers.get_mut(id) {
                    breaker.release();
                }
            }
        }
    }

    fn bind_sticky(&self, sticky_id: &str, adapter_id: &str) {
        let now = self.clock.now_ms();
        let expires_at_ms = now.saturating_add(millis(self.sticky_ttl));
        self.state
            .lock()
            .sticky
            .insert(sticky_id.to_owned(), Sticky { adapter_id: adapter_id.to_owned(), expires_at_ms });
    }

    async fn route(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let mut forwarded = request.options.clone();
        let options = match forwarded.remove(ROUTING_OPTION) {
            Some(value) => RoutingOptions::from_json(&value, request.session.id.as_str())?,
            None => RoutingOptions::default(),
        };
        let policy = self.policy.merged(&options.overrides);
        let plan = self.plan(&policy, &options)?;
        let candidate_ids: Vec<String> = plan.candidates.iter().map(|c| c.id.clone()).collect();
        tracing::debug!(candidates = ?candidate_ids, limit = plan.limit, "routing run");

        let mut failed: Vec<FailedAttempt> = Vec::new();
        let mut attempt: u32 = 0;
        for entry in &plan.candidates {
            if failed.len() >= plan.limit {
                break;
            }
            if request.cancel.is_cancelled() {
                return Err(cancelled_error(failed.last().map(|f| f.adapter_id.as_str())));
            }
            if !self.acquire(&entry.id) {
                tracing::debug!(adapter = %entry.id, "circuit breaker refused the attempt; skipping");
                continue;
            }
            attempt += 1;
            let mut routing = JsonMap::new();
            routing.insert(ROUTED_PROVIDER.into(), entry.id.clone().into());
            routing.insert(ROUTING_ATTEMPT.into(), attempt.into());
            routing.insert(ROUTING_CANDIDATES.into(), json!(candidate_ids));
            if let Some(previous) = failed.last() {
                routing.insert(FAILOVER_FROM.into(), previous.adapter_id.clone().into());
                routing.insert(FAILOVER_REASON.into(), previous.error.code().as_str().into());
            }
            let attempt_request = self.attempt_request(&request, entry, &forwarded, &options);
            let span = tracing::info_span!("routing_attempt", adapter = %entry.id, attempt);
            let result =
                self.attempt(&request, entry, attempt, attempt_request, &sink, routing.clone()).instrument(span).await;
            match result {
                Ok(mut outcome) => {
                    if let Some(sticky_id) = &options.sticky_session_id {
                        self.bind_sticky(sticky_id, &entry.id);
                    }
                    outcome.provider = Some(entry.id.clone());
                    outcome.metadata.insert(ROUTING_METADATA.into(), routing.into());
                    let seq = latest_routed_seq(&request.session).map_or(1, |seq| seq + 1);
                    outcome.provider_state.insert(ROUTED_SEQ.into(), seq.into());
                    outcome.provider_state.insert(
                        ROUTED_HANDLE.into(),
                        outcome.provider_session_id.clone().map_or(Value::Null, Value::String),
                    );
                    return Ok(outcome);
                }
                Err(error)
                    if error.code() == ErrorCode::Cancelled
                        || request.cancel.is_cancelled()
                        || error.details().get(SINK_ERROR).is_some() =>
                {
                    return Err(error
                        .with_detail(keys::PROVIDER, entry.id.clone())
                        .with_detail(ROUTING_METADATA, routing));
                }
                Err(error) => {
                    let retryable = error.is_retryable();
                    let error = error.with_detail(ROUTING_METADATA, routing);
                    failed.push(FailedAttempt { adapter_id: entry.id.clone(), error });
                    if retryable && failed.len() < plan.limit {
                        tracing::warn!(adapter = %entry.id, code = %failed.last().map_or(ErrorCode::UnknownError, |f| f.error.code()), "attempt failed; failing over");
                        continue;
                    }
                    break;
                }
            }
        }
        match failed.len() {
            0 => Err(RoutingError::NoCandidates {
                router: self.name.clone(),
                registered: candidate_ids.clone(),
                excluded: Vec::new(),
                unavailable: candidate_ids,
            }
            .into()),
            1 if !failed.iter().any(|f| f.error.is_retryable()) => {
                let only = failed.remove(0);
                Err(only.error.with_detail(keys::PROVIDER, only.adapter_id))
            }
            _ => Err(RoutingError::AllAttemptsFailed { attempts: failed }.into()),
        }
    }

    /// The request one attempt sends: the run's options without `routing`, the transcript as it
    /// stood before the run (or the adapter's own current native handle), the run's token.
    fn attempt_request(
        &self,
        request: &ExecuteRequest,
        entry: &Entry,
        forwarded: &JsonMap,
        options: &RoutingOptions,
    ) -> ExecuteRequest {
        let mut attempt = ExecuteRequest::new(request.session.clone(), request.run.clone())
            .options(forwarded.clone())
            .cancel_token(request.cancel.clone());
        attempt.deadline = request.deadline;
        attempt.approvals = request.approvals.clone();
        match (&request.transcript, &request.resume) {
            (Some(transcript), _) => {
                let native = options.native_resume && entry.adapter.supports_native_resume();
                match native.then(|| current_handle(&request.session, &entry.id)).flatten() {
                    Some(handle) => attempt.resume = Some(handle),
                    None => attempt.transcript = Some(transcript.clone()),
                }
            }
            (None, Some(handle)) if entry.adapter.supports_native_resume() => {
                attempt.resume = Some(handle.clone());
                attempt.fork = request.fork && entry.adapter.supports_native_fork();
            }
            _ => {}
        }
        attempt
    }

    async fn attempt(
        &self,
        request: &ExecuteRequest,
        entry: &Entry,
        attempt: u32,
        attempt_request: ExecuteRequest,
        sink: &EventSink,
        routing: JsonMap,
    ) -> Result<ExecuteOutcome> {
        self.state.lock().active.insert(
            request.run.id.clone(),
            ActiveRun {
                session_id: request.session.id.to_string(),
                adapter_id: entry.id.clone(),
                attempt,
                cancel: request.cancel.clone(),
            },
        );
        let mut guard =
            AttemptGuard { router: self, run_id: request.run.id.clone(), adapter_id: entry.id.clone(), settled: false };
        let inner_sink = sink.clone();
        let adapter_id = entry.id.clone();
        // An error the runtime's sink returned (a store failure, a late event) is not the
        // adapter's failure: it neither fails over nor counts against the adapter's health.
        let sink_error: Arc<Mutex<Option<ErrorCode>>> = Arc::default();
        let seen = sink_error.clone();
        let tagged = EventSink::new(move |mut event: ProviderEvent| {
            for (key, value) in &routing {
                event.metadata.insert(key.clone(), value.clone());
            }
            event.provider = Some(adapter_id.clone());
            let (inner, seen) = (inner_sink.clone(), seen.clone());
            async move {
                let result = inner.emit(event).await;
                if let Err(error) = &result {
                    seen.lock().get_or_insert(error.code());
                }
                result
            }
            .boxed()
        });
        let started = Instant::now();
        tracing::debug!("attempt started");
        let result = match AssertUnwindSafe(entry.adapter.execute(attempt_request, tagged)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(Error::new(
                ErrorCode::InternalError,
                format!("provider adapter {} panicked: {}", entry.id, panic_message(panic.as_ref())),
            )),
        };
        let from_sink = *sink_error.lock();
        let verdict = match &result {
            Ok(_) => Verdict::Success,
            Err(error) if error.code() == ErrorCode::Cancelled || from_sink == Some(error.code()) => Verdict::Neutral,
            Err(_) => Verdict::Failure,
        };
        let result = match (result, from_sink) {
            (Err(error), Some(code)) if code == error.code() => Err(error.with_detail(SINK_ERROR, true)),
            (result, _) => result,
        };
        self.record(&entry.id, &verdict);
        guard.settled = true;
        let duration_ms = millis(started.elapsed());
        match &result {
            Ok(_) => tracing::debug!(duration_ms, "attempt succeeded"),
            Err(error) => tracing::debug!(duration_ms, code = %error.code(), "attempt failed"),
        }
        result
    }
}

/// The highest routed-run number recorded on the session's provider sessions. Each routed run
/// that succeeds stores the next number beside its adapter's handle: a per-session logical
/// clock, so "which adapter served last" does not depend on wall-clock resolution.
fn latest_routed_seq(session: &Session) -> Option<u64> {
    let sessions = session.metadata.get("provider_sessions")?.as_object()?;
    sessions.values().filter_map(|entry| entry.get(ROUTED_SEQ).and_then(Value::as_u64)).max()
}

/// The adapter's native session handle, when it holds the session's whole conversation: it
/// served the latest routed run and that run left this handle (or no run was routed yet).
fn current_handle(session: &Session, id: &str) -> Option<String> {
    let sessions = session.metadata.get("provider_sessions")?.as_object()?;
    let entry = sessions.get(id)?.as_object()?;
    let handle = entry.get(keys::PROVIDER_SESSION_ID)?.as_str()?;
    let current = match (entry.get(ROUTED_SEQ).and_then(Value::as_u64), latest_routed_seq(session)) {
        (None, latest) => latest.is_none(),
        (Some(seq), latest) => Some(seq) == latest && entry.get(ROUTED_HANDLE).and_then(Value::as_str) == Some(handle),
    };
    current.then(|| handle.to_owned())
}

fn cancelled_error(provider: Option<&str>) -> Error {
    let error = Error::new(ErrorCode::Cancelled, "routed run cancelled");
    match provider {
        Some(provider) => error.with_detail(keys::PROVIDER, provider),
        None => error,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

#[async_trait]
impl ProviderAdapter for ProviderRouter {
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// The union of the registered adapters' current capabilities, de-duplicated by
    /// (type, name, enabled).
    fn capabilities(&self) -> Vec<Capability> {
        let entries = self.inner.state.lock().adapters.clone();
        let mut out: Vec<Capability> = Vec::new();
        for cap in entries.iter().flat_map(|e| e.adapter.capabilities()) {
            if !out.iter().any(|c| c.kind == cap.kind && c.name == cap.name && c.enabled == cap.enabled) {
                out.push(cap);
            }
        }
        out
    }

    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let span = tracing::info_span!("route", router = %self.inner.name, run_id = %request.run.id);
        self.inner.route(request, sink).instrument(span).await
    }

    /// Every registered adapter's configuration; a router without adapters is invalid.
    fn validate_config(&self) -> Result<()> {
        let entries = self.inner.state.lock().adapters.clone();
        if entries.is_empty() {
            return Err(Error::new(ErrorCode::ValidationError, "the router has no adapters"));
        }
        for entry in &entries {
            entry.adapter.validate_config().map_err(|e| e.with_detail(keys::PROVIDER, entry.id.clone()))?;
        }
        Ok(())
    }
}

/// What [`ProviderRouter::status`] reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RouterStatus {
    /// The router's name.
    pub name: String,
    /// The router's policy (per-run overrides are not included).
    pub policy: RoutingPolicy,
    /// The health cooldown in milliseconds.
    pub health_cooldown_ms: u64,
    /// The sticky TTL in milliseconds.
    pub sticky_ttl_ms: u64,
    /// Whether adapters have circuit breakers.
    pub circuit_breakers: bool,
    /// Registered adapters, in registration order.
    pub adapters: Vec<AdapterStatus>,
    /// Runs being served, by run id.
    pub active_runs: Vec<ActiveRunStatus>,
    /// Unexpired sticky bindings, by sticky id.
    pub sticky_bindings: Vec<StickyBinding>,
}

/// One adapter in [`RouterStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AdapterStatus {
    /// The id it is registered under.
    pub id: String,
    /// The adapter's own name.
    pub provider: String,
    /// Whether a run could be routed to it now (not cooling down, breaker allows).
    pub available: bool,
    /// Its health.
    pub health: HealthStatus,
    /// Its breaker, when breakers are enabled.
    pub breaker: Option<BreakerStatus>,
}

/// An adapter's health in [`AdapterStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthStatus {
    /// Failures since the last success.
    pub failure_count: u32,
    /// How long ago the last failure was.
    pub last_failure_ms_ago: Option<u64>,
    /// Whether the adapter is skipped for the health cooldown.
    pub cooling_down: bool,
}

/// A run being served, in [`RouterStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActiveRunStatus {
    /// The run.
    pub run_id: String,
    /// Its session.
    pub session_id: String,
    /// The adapter serving it.
    pub adapter_id: String,
    /// The attempt, from 1.
    pub attempt: u32,
}

/// A sticky binding, in [`RouterStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StickyBinding {
    /// The sticky id.
    pub sticky_id: String,
    /// The adapter it is bound to.
    pub adapter_id: String,
    /// Time left.
    pub expires_in_ms: u64,
}
