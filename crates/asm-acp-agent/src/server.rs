//! One client connection: the read loop, the write loop and the method handlers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use asm_core::{Error, ErrorCode, Event, RunId, RunInput, SessionId, SessionStatus};
use asm_ports::EventQuery;
use asm_provider_acp::jsonrpc::{
    INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, Incoming, METHOD_NOT_FOUND, PARSE_ERROR, PROTOCOL_VERSION,
    RESOURCE_NOT_FOUND, RpcError, notification, parse, response,
};
use asm_runtime::StreamOptions;

use crate::Config;
use crate::mapping::{Mode, UpdateMapper, outcome, rpc_error};
use crate::prompt::prompt_text;

/// The longest line read; a longer one is answered `-32600` and skipped.
const MAX_LINE: usize = 64 * 1024 * 1024;
/// Lines waiting for the writer before a handler waits (back-pressure on a slow client).
const OUT_BUFFER: usize = 256;
/// Events per store read when replaying a session.
const REPLAY_PAGE: usize = 500;

type RpcResult = Result<Value, RpcError>;

pub(crate) async fn serve<R, W>(config: Arc<Config>, reader: R, writer: W) -> asm_core::Result<()>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let (out, lines) = mpsc::channel(OUT_BUFFER);
    let conn = Arc::new(Conn { config, out, sessions: Mutex::new(HashMap::new()) });
    let (read, write) = tokio::join!(read_loop(conn, reader), write_loop(lines, writer));
    if let Err(error) = write {
        // A client that closed its end may not read the answers of what was cancelled for
        // it: not a failure of the connection once its input ended.
        tracing::debug!(%error, "ACP connection: the client stopped reading");
    }
    read
}

fn stream_closed(what: &str, error: &std::io::Error) -> Error {
    Error::new(ErrorCode::StreamClosed, format!("ACP connection: cannot {what}: {error}"))
}

async fn write_loop<W: AsyncWrite + Unpin>(mut lines: mpsc::Receiver<String>, mut writer: W) -> asm_core::Result<()> {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        writer.write_all(line.as_bytes()).await.map_err(|e| stream_closed("write", &e))?;
        if lines.is_empty() {
            writer.flush().await.map_err(|e| stream_closed("flush", &e))?;
        }
    }
    writer.flush().await.map_err(|e| stream_closed("flush", &e))
}

async fn read_loop<R: AsyncRead + Unpin + Send>(conn: Arc<Conn>, reader: R) -> asm_core::Result<()> {
    let mut reader = BufReader::new(reader);
    let mut tasks = JoinSet::new();
    let mut buf = Vec::new();
    let outcome = loop {
        buf.clear();
        let read = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).await;
        match read {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(stream_closed("read", &e)),
        }
        if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            if let Err(e) = skip_line(&mut reader).await {
                break Err(stream_closed("read", &e));
            }
            let error = RpcError::new(INVALID_REQUEST, format!("a message longer than {MAX_LINE} bytes"));
            conn.send(response(&Value::Null, Err(error))).await;
            continue;
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            conn.send(response(&Value::Null, Err(RpcError::new(PARSE_ERROR, "the message is not UTF-8")))).await;
            continue;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match parse(line) {
            Incoming::Raw { reason: "not_json", .. } => {
                conn.send(response(&Value::Null, Err(RpcError::new(PARSE_ERROR, "the message is not JSON")))).await;
            }
            Incoming::Raw { .. } => {
                let error = RpcError::new(INVALID_REQUEST, "not a JSON-RPC 2.0 message (no \"jsonrpc\": \"2.0\")");
                conn.send(response(&id_of(line), Err(error))).await;
            }
            Incoming::Malformed(why) => {
                conn.send(response(&id_of(line), Err(RpcError::new(INVALID_REQUEST, why)))).await;
            }
            Incoming::Response { id, .. } => tracing::debug!(%id, "ignoring a response: this agent sends no requests"),
            Incoming::Notification { method, params } => {
                if method == "session/cancel" {
                    conn.cancel(&params).await;
                } else {
                    tracing::debug!(%method, "ignoring an unknown notification");
                }
            }
            Incoming::Request { id, method, params } => {
                // A prompt is cancelled by the `session/cancel`s read after it, whenever its
                // task gets to run: its epoch is taken here, in reading order.
                let epoch = (method == "session/prompt")
                    .then(|| session_param(&params).ok())
                    .flatten()
                    .map(|session| conn.slot(&session).state().epoch);
                let conn = conn.clone();
                tasks.spawn(async move {
                    let handler = tokio::spawn({
                        let conn = conn.clone();
                        let id = id.clone();
                        async move {
                            let result = conn.handle(&method, &params, epoch).await;
                            conn.send(response(&id, result)).await;
                        }
                    });
                    if let Err(join) = handler.await {
                        let error = RpcError::new(INTERNAL_ERROR, format!("the request handler failed: {join}"));
                        conn.send(response(&id, Err(error))).await;
                    }
                });
            }
        }
        while tasks.try_join_next().is_some() {}
    };
    // The client is gone (or unreadable): stop every run of this connection and wait for the
    // handlers, so that no provider process outlives the connection.
    conn.cancel_all().await;
    while tasks.join_next().await.is_some() {}
    outcome
}

/// Reads and drops the rest of an oversized line.
async fn skip_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> std::io::Result<()> {
    let mut chunk = Vec::new();
    loop {
        chunk.clear();
        let n = (&mut *reader).take(1 << 20).read_until(b'\n', &mut chunk).await?;
        if n == 0 || chunk.last() == Some(&b'\n') {
            return Ok(());
        }
    }
}

/// The `id` of a malformed message, when it has a usable one (else `null`).
fn id_of(line: &str) -> Value {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .filter(|id| id.is_string() || id.is_number())
        .unwrap_or(Value::Null)
}

/// A connection's state.
struct Conn {
    config: Arc<Config>,
    out: mpsc::Sender<String>,
    sessions: Mutex<HashMap<SessionId, Arc<Slot>>>,
}

/// One session as this connection sees it.
#[derive(Default)]
struct Slot {
    /// Held by the prompt (or load) in progress: prompts of a session run one after another.
    turn: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Incremented by every `session/cancel`: a prompt that arrived before it does not run.
    epoch: u64,
    /// The run being executed.
    active: Option<RunId>,
    /// The cwd the client gave in `session/new` / `session/load`.
    cwd: Option<String>,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn invalid_params(message: impl Into<String>) -> RpcError {
    RpcError::new(INVALID_PARAMS, message)
}

fn session_param(params: &Value) -> Result<SessionId, RpcError> {
    let text =
        params.get("sessionId").and_then(Value::as_str).ok_or_else(|| invalid_params("sessionId is required"))?;
    SessionId::parse(text).map_err(|_| RpcError {
        code: RESOURCE_NOT_FOUND,
        message: format!("session {text:?} not found"),
        data: Some(json!({"code": "session_not_found", "sessionId": text})),
    })
}

fn cwd_param(params: &Value) -> Result<String, RpcError> {
    let cwd = params.get("cwd").and_then(Value::as_str).ok_or_else(|| invalid_params("cwd is required"))?;
    if !Path::new(cwd).is_absolute() {
        return Err(invalid_params(format!("cwd must be an absolute path, not {cwd:?}")));
    }
    Ok(cwd.to_owned())
}

fn found(error: &Error, id: &SessionId) -> RpcError {
    let mut rpc = rpc_error(error);
    if error.code() == ErrorCode::SessionNotFound {
        rpc.message = format!("session {id} not found");
        if let Some(Value::Object(data)) = &mut rpc.data {
            data.insert("sessionId".into(), id.as_str().into());
        }
    }
    rpc
}

impl Conn {
    /// Queues a line for the writer; `false` when the writer is gone.
    async fn send(&self, line: String) -> bool {
        self.out.send(line).await.is_ok()
    }

    async fn notify(&self, session: &SessionId, event: &Event, update: Value) -> bool {
        let mut asm = json!({"sequence": event.sequence, "eventId": event.id.as_str()});
        if let Some(run) = &event.run_id {
            asm["runId"] = run.as_str().into();
        }
        let params = json!({"sessionId": session.as_str(), "update": update, "_meta": {"asm": asm}});
        self.send(notification("session/update", params)).await
    }

    fn slot(&self, id: &SessionId) -> Arc<Slot> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.entry(id.clone()).or_default().clone()
    }

    async fn handle(&self, method: &str, params: &Value, epoch: Option<u64>) -> RpcResult {
        match method {
            "initialize" => self.initialize(params),
            "session/new" => self.new_session(params).await,
            "session/load" => self.load_session(params).await,
            "session/prompt" => self.prompt(params, epoch.unwrap_or_default()).await,
            "session/cancel" => {
                self.cancel(params).await;
                Ok(Value::Null)
            }
            other => Err(RpcError {
                code: METHOD_NOT_FOUND,
                message: format!("method {other:?} is not supported by this agent"),
                data: Some(json!({"method": other})),
            }),
        }
    }

    fn initialize(&self, params: &Value) -> RpcResult {
        let requested = params
            .get("protocolVersion")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid_params("protocolVersion (an integer) is required"))?;
        // Only version 1 exists; a client asking for another gets ours and decides.
        let version = if requested == PROTOCOL_VERSION { requested } else { PROTOCOL_VERSION };
        Ok(json!({
            "protocolVersion": version,
            "agentCapabilities": {
                "loadSession": true,
                "promptCapabilities": {"image": false, "audio": false, "embeddedContext": true},
                "mcpCapabilities": {"http": false, "sse": false},
            },
            "authMethods": [],
            "agentInfo": {"name": self.config.name, "title": "agent-session-manager", "version": self.config.version},
        }))
    }

    async fn new_session(&self, params: &Value) -> RpcResult {
        let cwd = cwd_param(params)?;
        let manager = &self.config.manager;
        let mut new = asm_runtime::NewSession::new(self.config.agent_id.clone()).metadata("cwd", cwd.clone());
        let servers: Vec<Value> = params
            .get("mcpServers")
            .and_then(Value::as_array)
            .map(|servers| servers.iter().filter_map(|s| s.get("name").cloned()).collect())
            .unwrap_or_default();
        if !servers.is_empty() {
            // Recorded, not connected: the providers behind this agent get their own tools.
            new = new.metadata("acp_mcp_servers", servers);
        }
        let session = manager.start_session(new).await.map_err(|e| rpc_error(&e))?;
        manager.activate_session(&session.id).await.map_err(|e| rpc_error(&e))?;
        self.slot(&session.id).state().cwd = Some(cwd);
        Ok(json!({"sessionId": session.id.as_str()}))
    }

    async fn load_session(&self, params: &Value) -> RpcResult {
        let id = session_param(params)?;
        let cwd = params.get("cwd").map(|_| cwd_param(params)).transpose()?;
        let manager = &self.config.manager;
        manager.get_session(&id).await.map_err(|e| found(&e, &id))?;
        let slot = self.slot(&id);
        let _turn = slot.turn.lock().await;
        if cwd.is_some() {
            slot.state().cwd = cwd;
        }
        let mut events =
            manager.stream_session_events(&id, StreamOptions::after(0).page_size(REPLAY_PAGE).until_caught_up());
        let mut mapper = UpdateMapper::new(Mode::Load);
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| rpc_error(&e))?;
            if let Some(update) = mapper.map(&event)
                && !self.notify(&id, &event, update).await
            {
                break;
            }
        }
        Ok(json!({}))
    }

    async fn prompt(&self, params: &Value, epoch: u64) -> RpcResult {
        let id = session_param(params)?;
        let blocks = params
            .get("prompt")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid_params("prompt must be an array of content blocks"))?;
        let text = prompt_text(blocks)?;
        let manager = &self.config.manager;
        manager.get_session(&id).await.map_err(|e| found(&e, &id))?;
        let slot = self.slot(&id);
        let _turn = slot.turn.lock().await;
        if slot.state().epoch != epoch {
            return Ok(json!({"stopReason": "cancelled"}));
        }
        let session = manager.get_session(&id).await.map_err(|e| found(&e, &id))?;
        if matches!(session.status, SessionStatus::Pending | SessionStatus::Paused) {
            manager.activate_session(&id).await.map_err(|e| rpc_error(&e))?;
        }
        let mut options = self.config.run_options.clone();
        if self.config.pass_cwd {
            let cwd = slot
                .state()
                .cwd
                .clone()
                .or_else(|| session.metadata.get("cwd").and_then(Value::as_str).map(str::to_owned));
            if let Some(cwd) = cwd {
                options = options.adapter_option("cwd", cwd);
            }
        }
        let after = manager.store().latest_sequence(&id).await.map_err(|e| rpc_error(&e))?;
        let run = manager.start_run(&id, RunInput::user(text), options.clone()).await.map_err(|e| rpc_error(&e))?;
        let cancelled_meanwhile = {
            let mut state = slot.state();
            state.active = Some(run.id.clone());
            state.epoch != epoch
        };
        let mut execution = tokio::spawn({
            let manager = manager.clone();
            let run_id = run.id.clone();
            async move { manager.execute_run(&run_id, options).await }
        });
        if cancelled_meanwhile && let Err(error) = manager.cancel_run(&run.id).await {
            tracing::debug!(%error, "cancel of a prompt cancelled while it started");
        }

        let filter = EventQuery::new().run(run.id.clone());
        let mut events = manager.stream_session_events(&id, StreamOptions::after(after).filter(filter));
        let mut mapper = UpdateMapper::new(Mode::Live);
        let mut executed = None;
        let mut client_gone = false;
        loop {
            tokio::select! {
                item = events.next() => match item {
                    Some(Ok(event)) => {
                        if let Some(update) = mapper.map(&event)
                            && !client_gone
                            && !self.notify(&id, &event, update).await
                        {
                            client_gone = true;
                            if let Err(error) = manager.cancel_run(&run.id).await {
                                tracing::debug!(%error, "cancel after the client went away");
                            }
                        }
                        if event.kind.is_run_terminal() {
                            break;
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "reading the run's events");
                        break;
                    }
                    None => break,
                },
                done = &mut execution, if executed.is_none() => {
                    executed = Some(done);
                    // A run refused before it started has no terminal event to wait for.
                    match manager.get_run(&run.id).await {
                        Ok(stored) if stored.status.is_terminal() => {}
                        _ => break,
                    }
                }
            }
        }
        let executed = match executed {
            Some(done) => done,
            None => (&mut execution).await,
        };
        slot.state().active = None;
        let stored = manager.get_run(&run.id).await.map_err(|e| rpc_error(&e))?;
        if stored.status.is_terminal() {
            let reason = outcome(&stored)?;
            return Ok(json!({"stopReason": reason, "_meta": {"asm": {"runId": run.id.as_str()}}}));
        }
        let error = match executed {
            Ok(Err(error)) => error,
            Ok(Ok(_)) => Error::new(ErrorCode::InternalError, format!("run {} ended as {}", run.id, stored.status)),
            Err(join) => Error::new(ErrorCode::InternalError, format!("the run task failed: {join}")),
        };
        // Refused before it started (bad options, ...): do not leave it pending.
        if let Err(cancel) = manager.cancel_run(&run.id).await {
            tracing::debug!(%cancel, "cancel of a run that never started");
        }
        Err(crate::mapping::WithRun::with_run(rpc_error(&error), &stored))
    }

    /// `session/cancel`: stops the session's running run; prompts queued behind it answer
    /// `cancelled` without running.
    async fn cancel(&self, params: &Value) {
        let Ok(id) = session_param(params) else {
            tracing::debug!("session/cancel without a valid sessionId");
            return;
        };
        let slot = self.slot(&id);
        self.cancel_slot(&slot).await;
    }

    async fn cancel_slot(&self, slot: &Slot) {
        let active = {
            let mut state = slot.state();
            state.epoch += 1;
            state.active.clone()
        };
        if let Some(run) = active
            && let Err(error) = self.config.manager.cancel_run(&run).await
        {
            tracing::debug!(%error, run_id = %run, "session/cancel");
        }
    }

    async fn cancel_all(&self) {
        let slots: Vec<Arc<Slot>> =
            self.sessions.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        for slot in slots {
            self.cancel_slot(&slot).await;
        }
    }
}
