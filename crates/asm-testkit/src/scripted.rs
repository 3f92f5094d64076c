use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot_shim::Mutex;

use asm_core::{Capability, CapabilityType, Error, ErrorCode, EventKind, Result, TokenUsage};
use asm_ports::{
    ApprovalDecision, ApprovalRequest, ApprovalVerdict, EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter,
    ProviderEvent,
};

/// A tiny wrapper so the testkit does not need parking_lot.
mod parking_lot_shim {
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(std::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

/// One step of a [`ScriptedAdapter`]'s script.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ScriptStep {
    /// Emit this event through the sink.
    Emit(ProviderEvent),
    /// Wait this long (cancellation is honoured while waiting).
    Delay(Duration),
    /// Ask [`ExecuteRequest::approvals`] about a tool call (see
    /// [`ScriptedAdapter::ask_approval`]).
    AskApproval {
        /// The tool's name.
        tool_name: String,
        /// The tool call's id.
        tool_call_id: String,
        /// The tool's input.
        tool_input: serde_json::Value,
    },
}

/// How a [`ScriptedAdapter`]'s execution ends after its steps.
#[derive(Clone, Debug)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant, reason = "one per script; boxing would burden every test that writes one")]
pub enum ScriptEnd {
    /// Return this outcome.
    Succeed(ExecuteOutcome),
    /// Return this error.
    Fail(Error),
    /// Wait until the run is cancelled, then return [`ErrorCode::Cancelled`].
    HangUntilCancelled,
    /// Panic with this message (to test that the runtime survives a panicking adapter).
    Panic(String),
}

/// A provider adapter that plays a script: emits the given events, then ends as told.
///
/// It records every [`ExecuteRequest`] it receives, so tests can check what the runtime passed
/// (transcript, resume handle, options).
///
/// ```
/// use asm_testkit::ScriptedAdapter;
/// let adapter = ScriptedAdapter::replying("Hello, world");
/// assert_eq!(asm_ports::ProviderAdapter::name(&adapter), "scripted");
/// ```
#[derive(Clone, Debug)]
pub struct ScriptedAdapter {
    name: String,
    capabilities: Vec<Capability>,
    steps: Vec<ScriptStep>,
    end: ScriptEnd,
    native_resume: bool,
    requests: Arc<Mutex<Vec<ExecuteRequest>>>,
    verdicts: Arc<Mutex<Vec<ApprovalVerdict>>>,
}

impl ScriptedAdapter {
    /// An adapter named `scripted` with an empty script that succeeds with empty output.
    pub fn new() -> Self {
        Self {
            name: "scripted".to_owned(),
            capabilities: default_capabilities(),
            steps: Vec::new(),
            end: ScriptEnd::Succeed(ExecuteOutcome::text("")),
            native_resume: false,
            requests: Arc::new(Mutex::new(Vec::new())),
            verdicts: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A provider-like reply: `text` streamed in word chunks, the full message, a usage report,
    /// then success with `text` as output.
    pub fn replying(text: &str) -> Self {
        let mut adapter = Self::new();
        let mut content = String::new();
        for chunk in text.split_inclusive(' ') {
            content.push_str(chunk);
            adapter = adapter
                .emit(ProviderEvent::new(EventKind::MessageStreamed).data("delta", chunk).data("content", chunk));
        }
        let usage =
            TokenUsage { input_tokens: 12, output_tokens: text.split(' ').count() as u64, ..TokenUsage::default() };
        adapter
            .emit(ProviderEvent::new(EventKind::MessageReceived).data("role", "assistant").data("content", content))
            .emit(
                ProviderEvent::new(EventKind::TokenUsageUpdated)
                    .data("input_tokens", usage.input_tokens)
                    .data("output_tokens", usage.output_tokens)
                    .data("usage_mode", "delta"),
            )
            .end(ScriptEnd::Succeed(
                ExecuteOutcome::text(text).usage(usage).model("scripted-1").stop_reason("end_turn"),
            ))
    }

    /// Sets the provider name.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Replaces the advertised capabilities.
    #[must_use]
    pub fn with_capabilities(mut self, capabilities: Vec<Capability>) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Appends an event step.
    #[must_use]
    pub fn emit(mut self, event: ProviderEvent) -> Self {
        self.steps.push(ScriptStep::Emit(event));
        self
    }

    /// Appends a delay step.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.steps.push(ScriptStep::Delay(delay));
        self
    }

    /// Sets how the execution ends.
    #[must_use]
    pub fn end(mut self, end: ScriptEnd) -> Self {
        self.end = end;
        self
    }

    /// Ends with `error`.
    #[must_use]
    pub fn failing(self, error: Error) -> Self {
        self.end(ScriptEnd::Fail(error))
    }

    /// Hangs after the steps until cancelled.
    #[must_use]
    pub fn hanging(self) -> Self {
        self.end(ScriptEnd::HangUntilCancelled)
    }

    /// Panics after the steps.
    #[must_use]
    pub fn panicking(self, message: impl Into<String>) -> Self {
        self.end(ScriptEnd::Panic(message.into()))
    }

    /// Advertises native resume support.
    #[must_use]
    pub fn with_native_resume(mut self) -> Self {
        self.native_resume = true;
        self
    }

    /// Appends a step that asks the run's approval handler about a `tool_name` call with id
    /// `tool_call_id` and `tool_input`, the way an adapter for a provider that asks before a
    /// tool runs does. Allowed: `tool_call_started` then `tool_call_completed` (output `ok`).
    /// Denied (or the handler failed): `tool_call_failed` with the reason as `tool_output` and
    /// `is_error: true`. Without a handler in the request (no live approvals): the call runs as
    /// allowed. Every verdict is kept ([`verdicts`](Self::verdicts)).
    #[must_use]
    pub fn ask_approval(
        mut self,
        tool_name: impl Into<String>,
        tool_call_id: impl Into<String>,
        tool_input: serde_json::Value,
    ) -> Self {
        self.steps.push(ScriptStep::AskApproval {
            tool_name: tool_name.into(),
            tool_call_id: tool_call_id.into(),
            tool_input,
        });
        self
    }

    /// The verdicts the approval steps received, in order.
    pub fn verdicts(&self) -> Vec<ApprovalVerdict> {
        self.verdicts.lock().clone()
    }

    /// Every request executed so far, in order.
    pub fn requests(&self) -> Vec<ExecuteRequest> {
        self.requests.lock().clone()
    }
}

impl Default for ScriptedAdapter {
    fn default() -> Self {
        Self::new()
    }
}

fn default_capabilities() -> Vec<Capability> {
    Capability::list(&[("streaming", CapabilityType::Sampling), ("tools", CapabilityType::Tool)])
}

fn cancelled() -> Error {
    Error::new(ErrorCode::Cancelled, "run cancelled")
}

impl ScriptedAdapter {
    async fn ask(
        &self,
        approvals: &Option<asm_ports::DynApprovalHandler>,
        (session_id, run_id): &(asm_core::SessionId, asm_core::RunId),
        tool_name: &str,
        tool_call_id: &str,
        tool_input: &serde_json::Value,
        sink: &EventSink,
    ) -> Result<()> {
        let call = |kind| {
            ProviderEvent::new(kind)
                .data("tool_call_id", tool_call_id)
                .data("tool_name", tool_name)
                .data("tool_input", tool_input.clone())
        };
        let denied = match approvals {
            None => None,
            Some(handler) => {
                let request = ApprovalRequest::new(session_id.clone(), run_id.clone(), self.name.clone(), tool_name)
                    .tool_call_id(tool_call_id)
                    .tool_input(tool_input.clone());
                let verdict = match handler.decide(&request).await {
                    Ok(verdict) => verdict,
                    Err(error) => ApprovalVerdict::new(ApprovalDecision::DenyOnce, "adapter")
                        .reason(format!("approval failed: {}", error.message())),
                };
                self.verdicts.lock().push(verdict.clone());
                (!verdict.decision.allows()).then(|| verdict.reason.unwrap_or_else(|| "denied".to_owned()))
            }
        };
        match denied {
            None => {
                sink.emit(call(EventKind::ToolCallStarted)).await?;
                sink.emit(call(EventKind::ToolCallCompleted).data("tool_output", "ok")).await?;
            }
            Some(reason) => {
                let failed = call(EventKind::ToolCallFailed).data("tool_output", reason).data("is_error", true);
                match sink.emit(failed).await {
                    // A cancelled run takes no more events; the step loop ends it.
                    Err(error) if error.code() != ErrorCode::Cancelled => return Err(error),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ProviderAdapter for ScriptedAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Vec<Capability> {
        self.capabilities.clone()
    }

    fn supports_native_resume(&self) -> bool {
        self.native_resume
    }

    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let cancel = request.cancel.clone();
        let approvals = request.approvals.clone();
        let session = (request.session.id.clone(), request.run.id.clone());
        self.requests.lock().push(request);
        for step in &self.steps {
            if cancel.is_cancelled() {
                return Err(cancelled());
            }
            match step {
                ScriptStep::Emit(event) => {
                    sink.emit(event.clone()).await?;
                }
                ScriptStep::Delay(delay) => {
                    tokio::select! {
                        () = tokio::time::sleep(*delay) => {}
                        () = cancel.cancelled() => return Err(cancelled()),
                    }
                }
                ScriptStep::AskApproval { tool_name, tool_call_id, tool_input } => {
                    self.ask(&approvals, &session, tool_name, tool_call_id, tool_input, &sink).await?;
                }
            }
        }
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        match &self.end {
            ScriptEnd::Succeed(outcome) => Ok(outcome.clone()),
            ScriptEnd::Fail(error) => Err(error.clone()),
            ScriptEnd::HangUntilCancelled => {
                cancel.cancelled().await;
                Err(cancelled())
            }
            ScriptEnd::Panic(message) => panic!("{message}"),
        }
    }
}
