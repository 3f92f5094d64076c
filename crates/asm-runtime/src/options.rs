use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use asm_core::{
    CapabilityType, Error, ErrorCode, JsonMap, Negotiation, Result, Run, RunOutput, SessionId, StoredEvent, TokenUsage,
    TranscriptOptions,
};
use asm_ports::{EventQuery, RunHook};

use crate::TranscriptCache;

/// The longest a run may take; longer (or no) timeouts are capped here so no run hangs forever.
pub(crate) const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What [`SessionManager::start_session`](crate::SessionManager::start_session) creates.
///
/// ```
/// use asm_runtime::NewSession;
/// let s = NewSession::new("reviewer").system_prompt("Be concise.").tag("ci");
/// # let _ = s;
/// ```
#[derive(Clone, Debug, Default)]
pub struct NewSession {
    pub(crate) agent_id: String,
    pub(crate) metadata: JsonMap,
    pub(crate) context: JsonMap,
    pub(crate) tags: Vec<String>,
    pub(crate) parent: Option<SessionId>,
}

impl NewSession {
    /// A session for `agent_id` (must not be empty).
    pub fn new(agent_id: impl Into<String>) -> Self {
        Self { agent_id: agent_id.into(), ..Self::default() }
    }
    /// Sets `context.system_prompt`.
    #[must_use]
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.context.insert("system_prompt".into(), prompt.into().into());
        self
    }
    /// Adds a metadata entry (`provider` is reserved and overwritten with the adapter name).
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    /// Adds a context entry.
    #[must_use]
    pub fn context(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }
    asm_core::builder_setters! {
        /// Adds a tag.
        fn tag(tag: impl Into<String>) { tags.push(tag.into()) }
        /// Sets the parent session.
        fn parent(parent: SessionId) { parent = Some(parent) }
    }
}

/// How a run continues the session's conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Continuation {
    /// The run sees only its own input.
    #[default]
    None,
    /// Resume natively when the adapter supports it and the session has a handle for it,
    /// otherwise replay.
    Auto,
    /// Replay the session's transcript to the provider.
    Replay,
    /// Resume the provider-side session; an error if the adapter or the session cannot.
    Native,
}

/// A callback that sees every event of a run after it is persisted (with its sequence).
pub type EventCallback = Arc<dyn Fn(&StoredEvent) + Send + Sync>;

/// The options of one run, everywhere a run is started or executed:
/// [`SessionManager::start_run`](crate::SessionManager::start_run) (capability requirements),
/// [`SessionManager::execute_run`](crate::SessionManager::execute_run) (everything else),
/// [`SessionManager::run_once`](crate::SessionManager::run_once) and
/// [`SessionServer::submit_run`](crate::SessionServer::submit_run) (both), and a server's
/// defaults ([`ServerConfig::defaults`](crate::ServerConfig::defaults)).
///
/// Every setting is optional: what a run does not set comes from the server's defaults (when
/// there is a server), then from the built-in defaults (no continuation, the transcript
/// defaults, no deadline beyond the 7-day cap, no hooks). Merging a run's options over defaults:
/// set values win, adapter options merge key by key (objects one level deep), hooks and event
/// callbacks of both run (defaults first).
///
/// ```
/// use asm_core::CapabilityType;
/// use asm_runtime::{Continuation, RunOptions};
/// use std::time::Duration;
/// let opts = RunOptions::new()
///     .require(CapabilityType::Tool)
///     .continuation(Continuation::Auto)
///     .timeout(Duration::from_secs(600))
///     .adapter_option("model", "claude-sonnet-4-5")
///     .on_event(|e| println!("{} {}", e.sequence(), e.kind));
/// # let _ = opts;
/// ```
#[derive(Clone, Default)]
pub struct RunOptions {
    pub(crate) continuation: Option<Continuation>,
    pub(crate) transcript: Option<TranscriptOptions>,
    pub(crate) adapter_options: JsonMap,
    pub(crate) timeout: Option<Duration>,
    pub(crate) hooks: Vec<Arc<dyn RunHook>>,
    pub(crate) on_event: Option<EventCallback>,
    pub(crate) transcript_cache: Option<TranscriptCache>,
    pub(crate) required: Vec<CapabilityType>,
    pub(crate) optional: Vec<CapabilityType>,
}

impl RunOptions {
    /// Nothing set: the defaults apply.
    pub fn new() -> Self {
        Self::default()
    }
    asm_core::builder_setters! {
        /// Sets the continuation mode.
        fn continuation(continuation: Continuation) { continuation = Some(continuation) }
        /// Sets how the replayed transcript is truncated.
        fn transcript_options(options: TranscriptOptions) { transcript = Some(options) }
    }
    /// Adds an adapter option (the keys each adapter accepts are documented by the adapter).
    #[must_use]
    pub fn adapter_option(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.adapter_options.insert(key.into(), value.into());
        self
    }
    asm_core::builder_setters! {
        /// The run must finish within `timeout`, or it ends as `timeout` with a `run_timeout` event
        /// (a run's execution deadline, not the wait of
        /// [`SessionServer::await_run`](crate::SessionServer::await_run)).
        fn timeout(timeout: Duration) { timeout = Some(timeout) }
        /// Adds a hook (a shared `Arc<dyn RunHook>` is a hook too).
        fn hook(hook: impl RunHook) { hooks.push(Arc::new(hook)) }
        /// Sets the event callback.
        fn on_event(callback: impl Fn(&StoredEvent) + Send + Sync + 'static) { on_event = Some(Arc::new(callback)) }
        /// Replays the transcript from `cache` (updated incrementally) instead of rebuilding it
        /// from the whole log, for `Continuation::Replay` and `Continuation::Auto`.
        fn transcript_cache(cache: TranscriptCache) { transcript_cache = Some(cache) }
        /// The adapter must have an enabled capability of this type, or the run is not created
        /// ([`ErrorCode::MissingRequiredCapability`]).
        fn require(kind: CapabilityType) { required.push(kind) }
        /// Nice to have: when missing, the run is created in degraded mode with a warning.
        fn prefer(kind: CapabilityType) { optional.push(kind) }
    }

    /// `self` merged over `defaults` (see the type's docs).
    pub(crate) fn merge_over(self, defaults: &RunOptions) -> RunOptions {
        let mut options = defaults.clone();
        options.continuation = self.continuation.or(options.continuation);
        options.transcript = self.transcript.or(options.transcript);
        options.timeout = self.timeout.or(options.timeout);
        options.transcript_cache = self.transcript_cache.or(options.transcript_cache);
        for (key, value) in self.adapter_options {
            match (options.adapter_options.get_mut(&key), value) {
                (Some(serde_json::Value::Object(base)), serde_json::Value::Object(over)) => base.extend(over),
                (_, value) => {
                    options.adapter_options.insert(key, value);
                }
            }
        }
        options.hooks.extend(self.hooks);
        options.on_event = match (options.on_event.take(), self.on_event) {
            (Some(first), Some(second)) => Some(Arc::new(move |event: &StoredEvent| {
                first(event);
                second(event);
            })),
            (first, second) => second.or(first),
        };
        options.required.extend(self.required);
        options.optional.extend(self.optional);
        options
    }

    /// The continuation mode in effect.
    pub(crate) fn continuation_mode(&self) -> Continuation {
        self.continuation.unwrap_or_default()
    }

    /// The transcript bounds in effect.
    pub(crate) fn transcript_bounds(&self) -> TranscriptOptions {
        self.transcript.unwrap_or_default()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::new(ErrorCode::InvalidInput, "run timeout must be greater than zero"));
        }
        let transcript = self.transcript_bounds();
        if matches!(transcript.max_messages, Some(0))
            || matches!(transcript.max_chars, Some(0))
            || matches!(transcript.max_tokens_approx, Some(0))
            || transcript.chars_per_token == 0
        {
            return Err(Error::new(ErrorCode::InvalidInput, "transcript limits must be greater than zero"));
        }
        Ok(())
    }

    pub(crate) fn effective_timeout(&self) -> Duration {
        self.timeout.unwrap_or(MAX_RUN_TIMEOUT).min(MAX_RUN_TIMEOUT)
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("continuation", &self.continuation)
            .field("transcript", &self.transcript)
            .field("adapter_options", &self.adapter_options)
            .field("timeout", &self.timeout)
            .field("hooks", &self.hooks)
            .field("on_event", &self.on_event.as_ref().map(|_| "Fn(&StoredEvent)"))
            .field("transcript_cache", &self.transcript_cache)
            .field("required", &self.required)
            .field("optional", &self.optional)
            .finish()
    }
}

/// What a finished run produced.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunResult {
    /// The run as stored at the end (status `completed`).
    pub run: Run,
    /// Every event of the run persisted by this execution, in sequence order.
    pub events: Vec<StoredEvent>,
    /// How capability negotiation went, when requirements were given.
    pub negotiation: Option<Negotiation>,
}

impl RunResult {
    /// The run's output (empty when the run has none).
    pub fn output(&self) -> RunOutput {
        self.run.output.clone().unwrap_or_default()
    }
    /// Tokens used.
    pub fn token_usage(&self) -> TokenUsage {
        self.run.token_usage
    }
}

/// What [`SessionManager::run_once`](crate::SessionManager::run_once) returns.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunOnceResult {
    /// The session (completed).
    pub session_id: SessionId,
    /// The run result.
    pub result: RunResult,
}

impl RunOnceResult {
    /// The run's output.
    pub fn output(&self) -> RunOutput {
        self.result.output()
    }
}

/// Options of [`SessionManager::stream_session_events`](crate::SessionManager::stream_session_events).
///
/// The stream yields the events after sequence `after` (exclusive, as everywhere). By default it
/// follows the log forever: when it has caught up it long-polls (stores with the capability) or
/// polls every `poll_interval`. With [`until_caught_up`](Self::until_caught_up) it ends instead.
///
/// ```
/// use asm_runtime::StreamOptions;
/// let follow = StreamOptions::after(0);
/// let backlog = StreamOptions::after(40).page_size(500).until_caught_up();
/// # let _ = (follow, backlog);
/// ```
#[derive(Clone, Debug)]
pub struct StreamOptions {
    pub(crate) after: u64,
    pub(crate) page_size: usize,
    pub(crate) filter: EventQuery,
    pub(crate) wait: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) mode: StreamMode,
}

/// Whether a stream follows the log or ends when it has caught up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamMode {
    /// Never ends: waits for new events once caught up.
    #[default]
    Follow,
    /// Ends after the last event stored when a read finds nothing newer.
    UntilCaughtUp,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            after: 0,
            page_size: 100,
            filter: EventQuery::new(),
            wait: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
            mode: StreamMode::Follow,
        }
    }
}

impl StreamOptions {
    /// Events with a sequence greater than `after` (0: from the start).
    pub fn after(after: u64) -> Self {
        Self { after, ..Self::default() }
    }
    /// Ends the stream once it has caught up instead of following the log.
    #[must_use]
    pub fn until_caught_up(mut self) -> Self {
        self.mode = StreamMode::UntilCaughtUp;
        self
    }
    asm_core::builder_setters! {
        /// Sets the [`StreamMode`].
        fn mode(mode: StreamMode) { mode = mode }
        /// Events per store read.
        fn page_size(size: usize) { page_size = size }
    }
    asm_core::builder_setters! {
        /// Extra filters (`run_id`, `kinds`, `since`); its `after`, `limit` and `wait` are ignored.
        fn filter(filter: EventQuery) { filter = filter }
        /// How long one long-poll waits before asking again.
        fn wait(wait: Duration) { wait = wait }
        /// How often to poll a store without long-poll.
        fn poll_interval(interval: Duration) { poll_interval = interval }
    }
}
