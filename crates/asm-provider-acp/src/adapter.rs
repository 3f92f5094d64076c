//! [`AcpAdapter`]: one ACP agent process per run, driven over stdio JSON-RPC.

use std::borrow::Cow;
use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use asm_core::{Capability, Error, ErrorCode, ProviderErrorKind, ProviderName, Result, RunOutput, StderrLimits};
use asm_ports::{
    ApprovalDecision, ApprovalRequest, EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent,
};
use asm_provider_cli::{
    CliCommand, CliOptions, CliProcess, CliProtocol, ExitInfo, Interrupt, RunControl, StdoutFrame, cancelled_error,
    classify_error_text, error_event, provider_failure, raw_event, render_prompt, resume_handle,
};

use crate::client;
use crate::options::{AcpAdapterBuilder, AcpAgent, PermissionDecision, PermissionRequest};
use crate::updates::Turn;
use crate::wire::{self, Incoming, PROTOCOL_VERSION, RpcError};

/// The adapter's name, on events and runs.
pub const ACP_PROVIDER: &str = "acp";
const PROVIDER: ProviderName = ProviderName::Acp;

/// Drives any [Agent Client Protocol](https://agentclientprotocol.com) agent (Claude Code
/// through `claude-agent-acp`, Gemini CLI with `--experimental-acp`, ...) as a
/// [`ProviderAdapter`]: one agent process per run, spawned on the CLI process machinery of
/// `asm-provider-cli` (no shell, own process group, explicit environment, stderr ring, group
/// kill, drop guard), talking JSON-RPC 2.0 one message per line over its stdin / stdout.
///
/// One run:
/// 1. `initialize` with protocol version [`PROTOCOL_VERSION`] and the client capabilities
///    (`fs.readTextFile` / `fs.writeTextFile` as configured, `terminal: false`); an agent
///    answering another version fails the run (`provider_error`, kind `protocol_error`,
///    `details.reason = "protocol_version_mismatch"`). The agent's version, capabilities and
///    info are recorded in the outcome's `metadata.acp` and `output.extra.acp`.
/// 2. `session/load` when the run has a native handle (the ACP session id, reported as
///    `provider_session_id` by runs of agents that advertise `loadSession`) and the agent
///    advertises `loadSession`; the history the agent replays while loading is not re-emitted.
///    Otherwise `session/new` with the run's cwd, and the transcript (if the runtime sent one)
///    replayed into the first prompt.
/// 3. `session/prompt` with the run's input as one text block; every `session/update` mapped
///    to events (`agent_message_chunk` → `message_streamed`, each streamed segment closed by a
///    `message_received`; `agent_thought_chunk` → `reasoning_streamed`; `tool_call` /
///    `tool_call_update` → `tool_call_started` / `tool_call_completed` / `tool_call_failed`
///    with `tool_call_id`, `tool_name` (the ACP tool kind), `tool_input` (`rawInput`) and
///    `tool_output` (`rawOutput`, else the content's text); progress updates, `plan` (with
///    `data.plan`), `usage_update` (the session's USD cost: the outcome's `cost_usd` for a new session,
///    `metadata.acp.session_cost_usd` always) and unknown
///    updates → `provider_raw`).
/// 4. The stop reason: `end_turn` completes the run (output: the turn's final answer, the
///    agent text after its last tool call, like Claude Code's `result`);
///    `max_tokens`, `max_turn_requests` and `refusal` fail it with `provider_error` and
///    `details.reason` = the stop reason; `cancelled` (not asked for) is `cancelled`.
///
/// Agent → client requests: `fs/read_text_file` / `fs/write_text_file` inside the run's cwd
/// only (anything else is a JSON-RPC error), `session/request_permission` through the run's
/// live approvals when the runtime gives it some ([`ExecuteRequest::approvals`]: the tool call
/// becomes an [`ApprovalRequest`] with `tool_name` = its kind (else its title), `tool_call_id`
/// and `tool_input` = `rawInput`; the verdict picks the agent's option of the same kind, as
/// [`PermissionDecision::option_kinds`] orders them), else through the configured
/// [`PermissionHandler`](crate::PermissionHandler) (default: reject), anything else
/// `method not found`.
///
/// Cancel: `session/cancel`, [`AcpAgent::cancel_grace`] for the turn to end, then the process
/// group (SIGINT → SIGTERM → SIGKILL); `Err(Cancelled)`, nothing reported afterwards. The
/// deadline stops the group and is a `timeout`. A dead agent is a `provider_error` with its
/// exit code and stderr; a malformed JSON-RPC message is `provider_error` / `protocol_error`;
/// non-JSON-RPC stdout lines are kept as `provider_raw` events.
///
/// ```
/// use asm_ports::ProviderAdapter;
/// use asm_provider_acp::AcpAdapter;
/// let adapter = AcpAdapter::builder().agent("claude-agent-acp").build();
/// assert_eq!(adapter.name(), "acp");
/// assert!(adapter.supports_native_resume());
/// ```
#[derive(Clone, Debug)]
pub struct AcpAdapter {
    options: CliOptions<AcpAgent>,
}

impl AcpAdapter {
    /// A builder with the defaults.
    pub fn builder() -> AcpAdapterBuilder {
        AcpAdapterBuilder::default()
    }

    /// An adapter with these options.
    pub fn new(options: CliOptions<AcpAgent>) -> Self {
        Self { options }
    }

    /// The options.
    pub fn options(&self) -> &CliOptions<AcpAgent> {
        &self.options
    }
}

#[async_trait]
impl ProviderAdapter for AcpAdapter {
    fn name(&self) -> &str {
        ACP_PROVIDER
    }

    fn capabilities(&self) -> Vec<Capability> {
        Capability::list(AcpAgent::CAPABILITIES)
    }

    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let span = tracing::info_span!(
            "acp_execute",
            run_id = %request.run.id,
            resume = resume_handle(&request).is_some(),
            acp_session_id = tracing::field::Empty,
        );
        execute(&self.options, request, sink).instrument(span).await
    }

    fn validate_config(&self) -> Result<()> {
        CliCommand::new(PROVIDER, self.options.cli_path.clone()).env(self.options.child_env()).resolve_program()?;
        self.options.validate()
    }

    fn supports_native_resume(&self) -> bool {
        true
    }
}

/// Why waiting for a response ended without one.
enum Stop {
    Interrupted(Interrupt),
    /// stdout closed.
    Eof,
    Failed(Error),
    Rpc(RpcError),
}

struct Conn<'a> {
    options: &'a CliOptions<AcpAgent>,
    request: &'a ExecuteRequest,
    sink: &'a EventSink,
    control: RunControl,
    process: CliProcess,
    tx: Option<mpsc::UnboundedSender<String>>,
    next_id: u64,
    oversized: u64,
    root: PathBuf,
    session_id: Option<String>,
    turn: Turn,
    /// While `session/load` replays history: updates are not re-emitted.
    loading: bool,
    /// After cancel: nothing is emitted any more, permission requests are answered `cancelled`.
    cancelling: bool,
}

fn protocol_error(message: impl Into<String>, reason: &str, exit: Option<&ExitInfo>, limits: StderrLimits) -> Error {
    let message = message.into();
    let pe = match exit {
        Some(exit) => exit.provider_error(PROVIDER, ProviderErrorKind::ProtocolError, &message, limits),
        None => asm_core::ProviderError::new(PROVIDER, ProviderErrorKind::ProtocolError, &message),
    };
    provider_failure(ErrorCode::ProviderError, pe).with_detail("reason", reason)
}

fn rpc_failure(method: &str, e: &RpcError) -> Error {
    let code = if e.code == wire::AUTH_REQUIRED {
        ErrorCode::ProviderAuthenticationFailed
    } else {
        classify_error_text(&e.message).unwrap_or(ErrorCode::ProviderError)
    };
    let message = format!("ACP agent failed {method}: {} ({})", e.message, e.code);
    let pe = asm_core::ProviderError::new(PROVIDER, ProviderErrorKind::ProtocolError, &message);
    let mut error = provider_failure(code, pe)
        .with_detail("reason", "rpc_error")
        .with_detail("method", method)
        .with_detail("rpc_code", e.code);
    if let Some(data) = &e.data {
        error = error.with_detail("rpc_data", data.clone());
    }
    error
}

impl Conn<'_> {
    fn limits(&self) -> StderrLimits {
        self.options.stderr_limits
    }

    fn send(&self, line: String) {
        if let Some(tx) = &self.tx {
            // A closed writer means the agent is gone; the read side reports it.
            let _ = tx.send(line);
        }
    }

    fn send_request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        tracing::debug!(id, method, "ACP request");
        self.send(wire::request(id, method, params));
        id
    }

    async fn emit(&self, event: ProviderEvent) -> std::result::Result<(), Stop> {
        if self.cancelling {
            return Ok(());
        }
        tokio::select! {
            biased;
            why = self.control.interrupted() => Err(Stop::Interrupted(why)),
            emitted = self.sink.emit(event) => emitted.map(drop).map_err(Stop::Failed),
        }
    }

    async fn emit_all(&self, events: Vec<ProviderEvent>) -> std::result::Result<(), Stop> {
        for event in events {
            self.emit(event).await?;
        }
        Ok(())
    }

    /// Sends `method` and reads until its response.
    async fn call(&mut self, method: &str, params: Value) -> std::result::Result<Value, Stop> {
        let id = self.send_request(method, params);
        self.response(id).await
    }

    /// Reads messages (handling notifications and agent requests) until the response to `id`.
    async fn response(&mut self, id: u64) -> std::result::Result<Value, Stop> {
        let want = json!(id);
        loop {
            let frame = tokio::select! {
                biased;
                why = self.control.interrupted(), if !self.cancelling => return Err(Stop::Interrupted(why)),
                frame = self.process.next_frame() => frame.map_err(Stop::Failed)?,
            };
            let line = match frame {
                None => return Err(Stop::Eof),
                Some(StdoutFrame::Oversized { max_line_bytes }) => {
                    self.oversized += 1;
                    self.emit(error_event(
                        ErrorCode::ProviderError,
                        &format!("ACP agent output line exceeds {max_line_bytes} bytes; the line was skipped"),
                        json!({ "reason": "line_too_long", "max_line_bytes": max_line_bytes }),
                    ))
                    .await?;
                    continue;
                }
                Some(StdoutFrame::Line(line)) if line.trim().is_empty() => continue,
                Some(StdoutFrame::Line(line)) => line,
                Some(_) => continue,
            };
            match wire::parse(&line) {
                Incoming::Raw { reason, line_type } => {
                    self.emit(raw_event(&line, line_type.as_deref(), reason)).await?;
                }
                Incoming::Malformed(why) => {
                    return Err(Stop::Failed(protocol_error(
                        format!("malformed JSON-RPC message from the ACP agent: {why}"),
                        "malformed_jsonrpc",
                        None,
                        self.limits(),
                    )));
                }
                Incoming::Response { id, result } if id == want => return result.map_err(Stop::Rpc),
                Incoming::Response { .. } => {
                    self.emit(raw_event(&line, None, "unexpected_response")).await?;
                }
                Incoming::Notification { method, params } if method == "session/update" => {
                    self.on_update(&params, &line).await?;
                }
                Incoming::Notification { method, .. } => {
                    self.emit(raw_event(&line, Some(&method), "unknown_notification")).await?;
                }
                Incoming::Request { id, method, params } => self.on_request(&id, &method, &params).await?,
            }
        }
    }

    async fn on_update(&mut self, params: &Value, line: &str) -> std::result::Result<(), Stop> {
        if self.loading || self.cancelling {
            return Ok(());
        }
        let Some(update) = params.get("update") else {
            return self.emit(raw_event(line, Some("session/update"), "missing_update")).await;
        };
        let mut events = Vec::new();
        self.turn.apply(update, line, &mut events);
        self.emit_all(events).await
    }

    async fn on_request(&mut self, id: &Value, method: &str, params: &Value) -> std::result::Result<(), Stop> {
        let agent = &self.options.provider;
        let result = match method {
            "fs/read_text_file" if agent.fs_read => client::read_text_file(&self.root, params),
            "fs/write_text_file" if agent.fs_write => client::write_text_file(&self.root, params),
            "session/request_permission" => match self.permission(params).await {
                Ok(outcome) => Ok(outcome),
                Err(stop) => {
                    // The agent's request must still be answered: the turn is being cancelled.
                    self.send(wire::response(id, Ok(json!({ "outcome": { "outcome": "cancelled" } }))));
                    return Err(stop);
                }
            },
            _ => Err(RpcError::new(wire::METHOD_NOT_FOUND, format!("method not found: {method}"))),
        };
        if let Err(e) = &result {
            tracing::debug!(method, code = e.code, message = %e.message, "refused an ACP agent request");
        }
        self.send(wire::response(id, result));
        Ok(())
    }

    async fn permission(&mut self, params: &Value) -> std::result::Result<Value, Stop> {
        let cancelled = json!({ "outcome": { "outcome": "cancelled" } });
        if self.cancelling {
            return Ok(cancelled);
        }
        let call = params.get("toolCall").cloned().unwrap_or(Value::Null);
        let options: Vec<Value> = params.get("options").and_then(Value::as_array).cloned().unwrap_or_default();
        let request = PermissionRequest {
            session_id: params.get("sessionId").and_then(Value::as_str).unwrap_or_default().to_owned(),
            tool_call_id: call.get("toolCallId").and_then(Value::as_str).map(str::to_owned),
            tool_kind: call.get("kind").and_then(Value::as_str).unwrap_or("other").to_owned(),
            title: call.get("title").and_then(Value::as_str).map(str::to_owned),
            tool_input: call.get("rawInput").cloned(),
            options: options.clone(),
            run_id: self.request.run.id.clone(),
            stored_session_id: self.request.session.id.clone(),
        };
        let (decision, decided_by) = match self.request.approvals.clone() {
            Some(approvals) => self.ask_approvals(&approvals, &request).await?,
            None => {
                let handler = std::sync::Arc::clone(&self.options.provider.permissions);
                let decision = tokio::select! {
                    biased;
                    why = self.control.interrupted() => return Err(Stop::Interrupted(why)),
                    decision = handler.decide(&request) => decision,
                };
                (decision, None)
            }
        };
        let chosen = decision.option_kinds().iter().find_map(|kind| {
            options.iter().find(|o| o.get("kind").and_then(Value::as_str) == Some(kind)).and_then(|o| o.get("optionId"))
        });
        tracing::debug!(tool_kind = %request.tool_kind, decision = decision.as_str(), "ACP permission request answered");
        let raw = raw_event(&params.to_string(), Some("session/request_permission"), "permission_request")
            .data("decision", decision.as_str())
            .data("tool_kind", request.tool_kind.clone());
        let raw = match decided_by {
            Some(by) => raw.data("decided_by", by),
            None => raw,
        };
        self.emit(raw).await?;
        Ok(match chosen {
            Some(option_id) => json!({ "outcome": { "outcome": "selected", "optionId": option_id } }),
            None => cancelled,
        })
    }

    /// Asks the run's approval handler (the runtime's gate: it records the `tool_approval_*`
    /// events, applies the timeout and the session's `*_always` decisions, and denies when the
    /// run is cancelled). A cancel while waiting lets the gate record its denial (bounded by the
    /// cancel grace), then stops the turn. A handler error rejects the call.
    async fn ask_approvals(
        &self,
        approvals: &asm_ports::DynApprovalHandler,
        request: &PermissionRequest,
    ) -> std::result::Result<(PermissionDecision, Option<String>), Stop> {
        let mut ask = ApprovalRequest::new(
            self.request.session.id.clone(),
            self.request.run.id.clone(),
            ACP_PROVIDER,
            approval_tool_name(request),
        )
        .tool_input(request.tool_input.clone().unwrap_or(Value::Null));
        if let Some(id) = &request.tool_call_id {
            ask = ask.tool_call_id(id.clone());
        }
        let decided = approvals.decide(&ask);
        tokio::pin!(decided);
        let verdict = tokio::select! {
            biased;
            verdict = &mut decided => verdict,
            why = self.control.interrupted() => {
                if matches!(why, Interrupt::Cancelled) {
                    let _ = tokio::time::timeout(self.options.provider.cancel_grace, decided).await;
                }
                return Err(Stop::Interrupted(why));
            }
        };
        if self.request.cancel.is_cancelled() {
            return Err(Stop::Interrupted(Interrupt::Cancelled));
        }
        Ok(match verdict {
            Ok(verdict) => (permission_decision(verdict.decision), Some(verdict.decided_by)),
            Err(error) => {
                tracing::warn!(%error, "the approval handler failed; rejecting the tool call");
                (PermissionDecision::RejectOnce, None)
            }
        })
    }

    /// Closes stdin, gives the agent the grace to exit, then stops the group.
    async fn shutdown(&mut self) -> ExitInfo {
        self.tx = None;
        let grace = self.options.provider.cancel_grace;
        let exit = match tokio::time::timeout(grace, self.process.finish()).await {
            Ok(exit) => exit,
            Err(_) => self.process.stop().await,
        };
        exit.with_oversized_lines(self.oversized, self.options.limits.max_line_bytes)
    }

    /// The error of a run whose agent closed stdout while we waited for `method`.
    async fn dead(&mut self, method: &str) -> Error {
        let exit = self.shutdown().await;
        let message = format!("ACP agent exited before answering {method} ({})", exit.describe());
        let code = classify_error_text(&exit.stderr).unwrap_or(ErrorCode::ProviderError);
        let pe = exit.provider_error(PROVIDER, ProviderErrorKind::TransportExit, &message, self.limits());
        let error = provider_failure(code, pe).with_detail("reason", "agent_exited").with_detail("method", method);
        exit.settle::<()>(PROVIDER, self.limits(), Err(error)).err().unwrap_or_else(cancelled_error)
    }

    /// Turns a [`Stop`] into the run's error, stopping the agent.
    async fn fail(&mut self, method: &str, stop: Stop) -> Error {
        match stop {
            Stop::Eof => self.dead(method).await,
            Stop::Rpc(e) => {
                let error = rpc_failure(method, &e);
                let exit = self.shutdown().await;
                exit.settle::<()>(PROVIDER, self.limits(), Err(error)).err().unwrap_or_else(cancelled_error)
            }
            Stop::Failed(error) => {
                self.tx = None;
                self.process.stop().await;
                error
            }
            Stop::Interrupted(Interrupt::Deadline) => {
                self.tx = None;
                let exit = self.process.stop().await;
                let pe = exit.provider_error(
                    PROVIDER,
                    ProviderErrorKind::Timeout,
                    "ACP agent did not finish before the run deadline",
                    self.limits(),
                );
                provider_failure(ErrorCode::Timeout, pe)
            }
            Stop::Interrupted(_) => {
                self.cancel().await;
                cancelled_error()
            }
        }
    }

    /// `session/cancel` (when a session exists), the grace for the turn to end, then the group.
    async fn cancel(&mut self) {
        self.cancelling = true;
        if let Some(session_id) = self.session_id.clone() {
            self.send(wire::notification("session/cancel", json!({ "sessionId": session_id })));
            let grace = self.options.provider.cancel_grace;
            let id = self.next_id.saturating_sub(1);
            let _ = tokio::time::timeout(grace, self.response(id)).await;
        }
        self.tx = None;
        self.process.stop().await;
    }
}

/// The tool name an ACP permission request is approved under: the tool call's kind (`read`,
/// `edit`, `execute`, ..., the `tool_name` of its `tool_call_*` events), else its title, else
/// `other`.
fn approval_tool_name(request: &PermissionRequest) -> String {
    match (request.tool_kind.as_str(), &request.title) {
        ("other", Some(title)) if !title.is_empty() => title.clone(),
        (kind, _) => kind.to_owned(),
    }
}

/// The ACP decision for an approval: the agent's option of the same kind is chosen
/// ([`PermissionDecision::option_kinds`]).
fn permission_decision(decision: ApprovalDecision) -> PermissionDecision {
    match (decision.allows(), decision.is_always()) {
        (true, false) => PermissionDecision::AllowOnce,
        (true, true) => PermissionDecision::AllowAlways,
        (false, false) => PermissionDecision::RejectOnce,
        (false, true) => PermissionDecision::RejectAlways,
    }
}

fn spawn_writer(process: &mut CliProcess) -> Option<mpsc::UnboundedSender<String>> {
    let mut stdin = process.take_stdin()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(mut line) = rx.recv().await {
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    Some(tx)
}

fn run_root(options: &CliOptions<AcpAgent>) -> PathBuf {
    options.cwd.clone().or_else(|| std::env::current_dir().ok()).unwrap_or_else(|| PathBuf::from("/"))
}

fn prompt_text(request: &ExecuteRequest, loaded: bool) -> String {
    if loaded || request.resume.is_none() {
        return render_prompt(request);
    }
    // A handle that could not be loaded: replay whatever transcript came with the run.
    let mut replay = request.clone();
    replay.resume = None;
    render_prompt(&replay)
}

async fn execute(options: &CliOptions<AcpAgent>, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
    if request.fork && resume_handle(&request).is_some() {
        return Err(Error::new(
            ErrorCode::InvalidOperation,
            "ACP agents cannot fork a session here; continue the forked session by replay",
        )
        .with_detail("reason", "native_fork_unsupported"));
    }
    let options: Cow<'_, CliOptions<AcpAgent>> = options.for_run(&request.options)?;
    if request.cancel.is_cancelled() {
        return Err(cancelled_error());
    }
    let cmd = options.command(&request).stdin_pipe();
    let control = RunControl::from_request(&request, options.timeout);
    let mut process = CliProcess::spawn(&cmd)?;
    let tx = spawn_writer(&mut process);
    let root = run_root(&options);
    let mut conn = Conn {
        options: &options,
        request: &request,
        sink: &sink,
        control,
        process,
        tx,
        next_id: 0,
        oversized: 0,
        root: root.clone(),
        session_id: None,
        turn: Turn::default(),
        loading: false,
        cancelling: false,
    };
    tracing::debug!(pid = conn.process.pid(), "ACP agent spawned");

    // 1. initialize
    let agent = &options.provider;
    let init_params = json!({
        "protocolVersion": PROTOCOL_VERSION,
        "clientCapabilities": {
            "fs": { "readTextFile": agent.fs_read, "writeTextFile": agent.fs_write },
            "terminal": false,
        },
        "clientInfo": { "name": "agent-session-manager", "version": env!("CARGO_PKG_VERSION") },
    });
    let init = match conn.call("initialize", init_params).await {
        Ok(v) => v,
        Err(stop) => return Err(conn.fail("initialize", stop).await),
    };
    let version = init.get("protocolVersion").and_then(Value::as_u64);
    if version != Some(PROTOCOL_VERSION) {
        let exit = conn.shutdown().await;
        return Err(protocol_error(
            format!(
                "ACP agent speaks protocol version {}, this client speaks {PROTOCOL_VERSION}",
                init.get("protocolVersion").map_or_else(|| "none".to_owned(), Value::to_string)
            ),
            "protocol_version_mismatch",
            Some(&exit),
            conn.limits(),
        )
        .with_detail("client_protocol_version", PROTOCOL_VERSION)
        .with_detail("agent_protocol_version", init.get("protocolVersion").cloned().unwrap_or(Value::Null)));
    }
    let capabilities = init.get("agentCapabilities").cloned().unwrap_or_else(|| json!({}));
    let can_load = capabilities.get("loadSession").and_then(Value::as_bool) == Some(true);

    // 2. session/load or session/new
    let cwd = root.display().to_string();
    let mut loaded = false;
    if let Some(handle) = resume_handle(&request).filter(|_| can_load && agent.load_session) {
        conn.loading = true;
        let params = json!({ "sessionId": handle, "cwd": cwd, "mcpServers": [] });
        let result = conn.call("session/load", params).await;
        conn.loading = false;
        match result {
            Ok(_) => {
                conn.session_id = Some(handle.to_owned());
                loaded = true;
            }
            Err(Stop::Rpc(e)) if request.transcript.is_some() => {
                tracing::warn!(code = e.code, message = %e.message, "session/load failed; replaying the transcript");
            }
            Err(stop) => return Err(conn.fail("session/load", stop).await),
        }
    }
    if !loaded {
        let result = match conn.call("session/new", json!({ "cwd": cwd, "mcpServers": [] })).await {
            Ok(v) => v,
            Err(stop) => return Err(conn.fail("session/new", stop).await),
        };
        let Some(id) = result.get("sessionId").and_then(Value::as_str) else {
            let exit = conn.shutdown().await;
            return Err(protocol_error(
                "ACP agent answered session/new without a sessionId",
                "malformed_jsonrpc",
                Some(&exit),
                conn.limits(),
            ));
        };
        conn.session_id = Some(id.to_owned());
    }
    let session_id = conn.session_id.clone().unwrap_or_default();
    tracing::Span::current().record("acp_session_id", session_id.as_str());

    // 3. session/prompt
    let prompt = json!({
        "sessionId": session_id,
        "prompt": [{ "type": "text", "text": prompt_text(&request, loaded) }],
    });
    let result = match conn.call("session/prompt", prompt).await {
        Ok(v) => v,
        Err(stop) => return Err(conn.fail("session/prompt", stop).await),
    };
    let mut closing = Vec::new();
    conn.turn.close_segment(&mut closing);
    if let Err(stop) = conn.emit_all(closing).await {
        return Err(conn.fail("session/prompt", stop).await);
    }
    let stop_reason = result.get("stopReason").and_then(Value::as_str).unwrap_or_default().to_owned();

    // 4. the stop reason
    let verdict = match stop_reason.as_str() {
        "end_turn" => Ok(()),
        "cancelled" => Err(cancelled_error().with_detail("reason", "agent_cancelled")),
        other => {
            let reason = if other.is_empty() { "missing_stop_reason" } else { other };
            let message = format!("ACP agent stopped the turn: {reason}");
            let pe = asm_core::ProviderError::new(PROVIDER, ProviderErrorKind::ProtocolError, &message);
            let error = provider_failure(ErrorCode::ProviderError, pe)
                .with_detail("reason", reason)
                .with_detail("stop_reason", other);
            let event = error_event(ErrorCode::ProviderError, &message, json!({ "reason": reason }));
            if let Err(stop) = conn.emit(event).await {
                return Err(conn.fail("session/prompt", stop).await);
            }
            Err(error)
        }
    };
    let exit = conn.shutdown().await;
    let text = std::mem::take(&mut conn.turn.text);
    let cost_usd = conn.turn.cost_usd;
    let acp = json!({
        "protocol_version": PROTOCOL_VERSION,
        "agent_capabilities": capabilities,
        "agent_info": init.get("agentInfo").cloned().unwrap_or(Value::Null),
        "auth_methods": init.get("authMethods").cloned().unwrap_or(Value::Null),
        "session_id": session_id,
        "session_loaded": loaded,
        "stop_reason": stop_reason,
        "session_cost_usd": cost_usd,
    });
    let verdict = verdict.map(|()| {
        let mut extra = Map::new();
        extra.insert("acp".into(), acp.clone());
        let mut outcome = ExecuteOutcome::default().stop_reason(stop_reason.clone());
        outcome.output = RunOutput { content: text, extra };
        outcome.metadata.insert("acp".into(), acp);
        // The agent reports the session's cost so far: the run's own cost only for a new session.
        outcome.cost_usd = cost_usd.filter(|_| !loaded);
        // Only a session the agent can load again is a native handle (else the runtime
        // replays the transcript).
        if can_load {
            outcome.provider_session_id = Some(session_id.clone());
        }
        outcome
    });
    exit.settle(PROVIDER, conn.limits(), verdict)
}
