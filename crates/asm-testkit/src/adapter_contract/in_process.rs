//! The checks of the adapter contract that need no process: any [`ProviderAdapter`], in-process
//! ones included (an API client, a router, [`ScriptedAdapter`](crate::ScriptedAdapter)), runs
//! them. The CLI suite ([`super`]) runs the same checks through the fake CLI, plus the ones
//! about processes (exit codes, signals, process groups, oversized lines, stderr).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use asm_testkit::ScriptedAdapter;
//! use asm_testkit::adapter_contract::in_process::{self, InProcessContract};
//! let contract = InProcessContract::new(Arc::new(ScriptedAdapter::replying("Hello")), "Hello")
//!     .streaming(Arc::new(ScriptedAdapter::replying("Hel").hanging()));
//! in_process::run_all(&contract).await;
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use asm_core::{ErrorCode, Event, EventKind, Run, RunInput, Session, keys};
use asm_ports::{EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter};

use super::{BOUND, Recorded, conversation, poll_until, recording_sink};

/// What an adapter gives the in-process checks: adapters set up for each scenario.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InProcessContract {
    /// Succeeds with [`expected_text`](Self::expected_text), reporting at least one message
    /// event.
    pub text: Arc<dyn ProviderAdapter>,
    /// The output of the text run.
    pub expected_text: String,
    /// Succeeds after one tool call and its result; `None` skips the tool check.
    pub tool: Option<Arc<dyn ProviderAdapter>>,
    /// Reports at least one event, then runs until cancelled; `None` skips the mid-run cancel
    /// check.
    pub streaming: Option<Arc<dyn ProviderAdapter>>,
}

impl InProcessContract {
    /// A contract with a text run only.
    pub fn new(text: Arc<dyn ProviderAdapter>, expected_text: impl Into<String>) -> Self {
        Self { text, expected_text: expected_text.into(), tool: None, streaming: None }
    }
    /// Sets the tool run.
    #[must_use]
    pub fn tool(mut self, adapter: Arc<dyn ProviderAdapter>) -> Self {
        self.tool = Some(adapter);
        self
    }
    /// Sets the streaming run that lasts until cancelled.
    #[must_use]
    pub fn streaming(mut self, adapter: Arc<dyn ProviderAdapter>) -> Self {
        self.streaming = Some(adapter);
        self
    }
}

/// One run of an adapter: the adapter, a fresh request ("hello") and a recording sink.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Subject {
    /// The adapter under test.
    pub adapter: Arc<dyn ProviderAdapter>,
    /// The request.
    pub request: ExecuteRequest,
    /// The sink of the run.
    pub sink: EventSink,
    /// What the sink saw.
    pub recorded: Recorded,
}

impl Subject {
    /// A fresh request for `adapter`.
    ///
    /// # Panics
    /// If a session cannot be created (never, with the fixed agent name).
    pub fn new(adapter: Arc<dyn ProviderAdapter>) -> Self {
        let session = Session::new("adapter-contract").expect("session");
        let run = Run::new(session.id.clone(), RunInput::user("hello"));
        let (sink, recorded) = recording_sink(&session);
        Self { adapter, request: ExecuteRequest::new(session, run), sink, recorded }
    }

    /// Runs the request, within the suite's bound.
    ///
    /// # Panics
    /// When `execute` does not return within the bound.
    pub async fn execute(&self) -> asm_core::Result<ExecuteOutcome> {
        tokio::time::timeout(BOUND, self.adapter.execute(self.request.clone(), self.sink.clone()))
            .await
            .expect("execute did not return within the bound")
    }
}

pub(super) fn assert_no_lifecycle(recorded: &Recorded) {
    assert!(
        recorded.lifecycle_attempts().is_empty(),
        "adapter emitted lifecycle kinds: {:?}",
        recorded.lifecycle_attempts()
    );
    assert!(recorded.kinds().iter().all(|k| !k.is_run_lifecycle()));
}

/// Every event has the payload shape its kind asks for (`Event::shape_warnings` is empty).
pub(super) fn assert_shapes(s: &Subject) {
    for e in s.recorded.events() {
        let mut event = Event::new(e.kind, s.request.session.id.clone());
        event.data = e.data.clone();
        let warnings = event.shape_warnings();
        assert!(warnings.is_empty(), "{:?}: {warnings:?} in {:?}", e.kind, e.data);
    }
}

/// A text run: message events that make a conversation, the expected output, payload shapes
/// as their kinds ask, never a lifecycle kind.
pub(super) async fn text_run(s: &Subject, expected: &str) {
    let outcome = s.execute().await.expect("text run must succeed");
    assert_eq!(outcome.output.content, expected);
    let kinds = s.recorded.kinds();
    assert!(
        kinds.iter().any(|k| matches!(k, EventKind::MessageStreamed | EventKind::MessageReceived)),
        "no message event in {kinds:?}"
    );
    assert!(!conversation(&s.recorded.events()).is_empty(), "the events make no conversation");
    assert_no_lifecycle(&s.recorded);
    assert_shapes(s);
}

/// A tool run reports the call and its result with canonical keys.
pub(super) async fn tool_run(s: &Subject) {
    s.execute().await.expect("tool run must succeed");
    let events = s.recorded.events();
    let started = events.iter().find(|e| e.kind == EventKind::ToolCallStarted).expect("no tool_call_started");
    for key in [keys::TOOL_CALL_ID, keys::TOOL_NAME, keys::TOOL_INPUT] {
        assert!(started.data.contains_key(key), "tool_call_started lacks {key}: {:?}", started.data);
    }
    let done = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::ToolCallCompleted | EventKind::ToolCallFailed))
        .expect("no tool_call_completed / tool_call_failed");
    for key in [keys::TOOL_CALL_ID, keys::TOOL_NAME, keys::TOOL_OUTPUT] {
        assert!(done.data.contains_key(key), "{:?} lacks {key}: {:?}", done.kind, done.data);
    }
    assert_eq!(done.data[keys::TOOL_CALL_ID], started.data[keys::TOOL_CALL_ID]);
    assert_shapes(s);
    assert_no_lifecycle(&s.recorded);
}

/// Cancel after the first event: `Err(Cancelled)` within `max`, nothing emitted afterwards.
pub(super) async fn cancel_mid_run(s: &Subject, max: Duration) {
    cancel_mid_run_when(s, max, "the first event", || true).await;
}

/// [`cancel_mid_run`], cancelling only once `ready` also holds (the CLI suite waits for the
/// process to have started: an adapter may report an event before its child runs).
pub(super) async fn cancel_mid_run_when(s: &Subject, max: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let adapter = Arc::clone(&s.adapter);
    let (request, sink) = (s.request.clone(), s.sink.clone());
    let task = tokio::spawn(async move { adapter.execute(request, sink).await });
    let rec = s.recorded.clone();
    poll_until(what, move || !rec.events().is_empty() && ready()).await;
    let started = Instant::now();
    let emitted_before = s.recorded.events().len();
    s.request.cancel.cancel();
    let result = tokio::time::timeout(BOUND, task).await.expect("execute did not return after cancel").expect("join");
    let err = result.expect_err("a cancelled run must return Err");
    assert_eq!(err.code(), ErrorCode::Cancelled, "{err:?}");
    assert!(started.elapsed() < max, "cancel took {:?}", started.elapsed());
    assert_eq!(s.recorded.events().len(), emitted_before, "events emitted after cancel");
    assert_no_lifecycle(&s.recorded);
}

/// A request whose token is already cancelled: `Err(Cancelled)` and nothing reported.
pub(super) async fn cancelled_before_start(s: &Subject) {
    s.request.cancel.cancel();
    let err = s.execute().await.expect_err("a run cancelled before it started must return Err");
    assert_eq!(err.code(), ErrorCode::Cancelled, "{err:?}");
    assert!(s.recorded.events().is_empty(), "events of a run cancelled before it started");
}

/// The adapter names itself, advertises capabilities with distinct names, and validates.
pub async fn check_identity(contract: &InProcessContract) {
    let adapter = &contract.text;
    assert!(!adapter.name().trim().is_empty(), "an adapter needs a name");
    let capabilities = adapter.capabilities();
    assert!(!capabilities.is_empty(), "no capabilities to negotiate with");
    let mut names: Vec<&str> = capabilities.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), capabilities.len(), "capability names repeat: {capabilities:?}");
    adapter.validate_config().expect("the contract's adapter must validate");
}

/// A text run emits message events making a conversation, returns the expected output, and
/// never a lifecycle kind.
pub async fn check_text_run(contract: &InProcessContract) {
    text_run(&Subject::new(Arc::clone(&contract.text)), &contract.expected_text).await;
}

/// A tool run reports the call and its result with canonical keys (skipped without
/// [`InProcessContract::tool`]).
pub async fn check_tool_call_keys(contract: &InProcessContract) {
    if let Some(tool) = &contract.tool {
        tool_run(&Subject::new(Arc::clone(tool))).await;
    }
}

/// A run cancelled before it starts returns `Err(Cancelled)` and reports nothing.
pub async fn check_cancel_before_start(contract: &InProcessContract) {
    cancelled_before_start(&Subject::new(Arc::clone(&contract.text))).await;
}

/// Cancel mid-run: `Err(Cancelled)` promptly, nothing reported afterwards (skipped without
/// [`InProcessContract::streaming`]).
pub async fn check_cancel_mid_stream(contract: &InProcessContract) {
    if let Some(streaming) = &contract.streaming {
        cancel_mid_run(&Subject::new(Arc::clone(streaming)), Duration::from_secs(3)).await;
    }
}

/// Every in-process check, one after the other.
pub async fn run_all(contract: &InProcessContract) {
    check_identity(contract).await;
    check_text_run(contract).await;
    check_tool_call_keys(contract).await;
    check_cancel_before_start(contract).await;
    check_cancel_mid_stream(contract).await;
}
