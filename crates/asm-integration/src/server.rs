//! [`FakeServer`]: the accept loop, request recording and response playback.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::http::{self, READ_TIMEOUT, Request};
use crate::scenario::{Reply, Scenario};
use crate::{anthropic, gemini, openai};

/// Pause between two deltas of [`Scenario::Slow`].
pub const SLOW_INTERVAL: Duration = Duration::from_millis(100);

/// Number of deltas of [`Scenario::Slow`] (so the stream lasts about a minute).
pub const SLOW_CHUNKS: usize = 600;

/// Which model API a [`FakeServer`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Api {
    /// Anthropic Messages: `POST /v1/messages` (query ignored) with `stream: true`, answered
    /// with the Messages SSE events; `HEAD /` (Claude Code's connectivity preflight) gets 200.
    AnthropicMessages,
    /// OpenAI Responses: `POST /v1/responses`, answered with the Responses SSE events.
    OpenAiResponses,
    /// Gemini API (v1beta, for Gemini CLI via `GOOGLE_GEMINI_BASE_URL`): `POST
    /// /v1beta/models/<model>:streamGenerateContent` (SSE of `GenerateContentResponse`
    /// chunks) or `:generateContent` (one JSON response); the model comes from the path.
    GeminiGenerateContent,
}

impl Api {
    /// Whether `path` (without the query) is this API's model request path.
    fn is_model_path(self, path: &str) -> bool {
        match self {
            Api::AnthropicMessages => path == "/v1/messages",
            Api::OpenAiResponses => path == "/v1/responses",
            Api::GeminiGenerateContent => gemini::is_model_path(path),
        }
    }
}

/// One request the server received.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// `GET`, `HEAD`, `POST`, ...
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Headers, names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`None` when empty or not JSON).
    pub body: Option<Value>,
    /// The body length in bytes.
    pub body_len: usize,
    /// What the server answered: a [`Scenario::name`], `tool_followup`, `preflight` or
    /// `not_found`.
    pub reply: String,
}

impl RecordedRequest {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// What the API modules ask the server to send.
#[derive(Debug)]
pub(crate) enum Response {
    /// A complete response with a body.
    Full { status: u16, headers: Vec<(&'static str, String)>, body: Vec<u8> },
    /// A `text/event-stream` response, played step by step.
    Stream { headers: Vec<(&'static str, String)>, steps: Vec<Step> },
}

impl Response {
    pub(crate) fn json(status: u16, headers: Vec<(&'static str, String)>, body: &Value) -> Self {
        let mut headers = headers;
        headers.push(("content-type", "application/json".to_owned()));
        Response::Full { status, headers, body: body.to_string().into_bytes() }
    }
}

/// One step of a streamed response.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this text (one or more complete SSE events).
    Send(String),
    /// Wait (the client may leave meanwhile).
    Pause(Duration),
}

/// Facts about one model request the API modules use to build the answer.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// A number unique to this request within the server (for ids).
    pub(crate) n: u64,
    /// The `model` of the request (echoed back), or `fake-model`.
    pub(crate) model: String,
    /// Whether the client asked for a stream.
    pub(crate) stream: bool,
}

#[derive(Debug)]
struct Shared {
    api: Api,
    requests: Mutex<Vec<RecordedRequest>>,
    default: Mutex<Scenario>,
    counter: AtomicU64,
    aborted: AtomicUsize,
    completed: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fake model API server on `127.0.0.1` (an ephemeral port), written by hand on
/// [`TcpListener`]: HTTP/1.1, one request per connection, `Connection: close`, streamed
/// answers as chunked server-sent events.
///
/// Every request is recorded ([`requests`](Self::requests)). The answer to a model request
/// follows the [`Scenario`] selected by the prompt (see [`Scenario`]). Dropping the server
/// stops the accept loop and every open connection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use asm_integration::{Api, FakeServer};
/// let server = FakeServer::start(Api::AnthropicMessages).await?;
/// assert!(server.base_url().starts_with("http://127.0.0.1:"));
/// assert!(server.requests().is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FakeServer {
    /// Binds `127.0.0.1:0` and starts serving `api` on the current tokio runtime.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn start(api: Api) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            api,
            requests: Mutex::new(Vec::new()),
            default: Mutex::new(Scenario::Text),
            counter: AtomicU64::new(0),
            aborted: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, accept })
    }

    /// The API it speaks.
    pub fn api(&self) -> Api {
        self.shared.api
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a CLI is configured with: `http://127.0.0.1:<port>` for Anthropic
    /// (`ANTHROPIC_BASE_URL`, the CLI appends `/v1/messages`), `http://127.0.0.1:<port>/v1`
    /// for OpenAI (a Codex provider `base_url`, the CLI appends `/responses`),
    /// `http://127.0.0.1:<port>` for Gemini (`GOOGLE_GEMINI_BASE_URL`, the SDK appends
    /// `/v1beta/models/...`).
    pub fn base_url(&self) -> String {
        match self.shared.api {
            Api::AnthropicMessages | Api::GeminiGenerateContent => format!("http://{}", self.addr),
            Api::OpenAiResponses => format!("http://{}/v1", self.addr),
        }
    }

    /// The scenario used when a prompt has no marker.
    pub fn set_default_scenario(&self, scenario: Scenario) {
        *lock(&self.shared.default) = scenario;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The model requests (`POST` to the API path) received so far.
    pub fn model_requests(&self) -> Vec<RecordedRequest> {
        let api = self.shared.api;
        self.requests().into_iter().filter(|r| r.method == "POST" && api.is_model_path(r.path())).collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Streams the client left before the server finished them (a cancelled run).
    pub fn aborted_streams(&self) -> usize {
        self.shared.aborted.load(Ordering::SeqCst)
    }

    /// Streams sent to the end.
    pub fn completed_streams(&self) -> usize {
        self.shared.completed.load(Ordering::SeqCst)
    }

    /// Polls every 10 ms until `done(self)` holds or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let start = Instant::now();
        loop {
            if done(self) {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here so that aborting this task aborts every connection task with it.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    eprintln_debug(&format!("fake server accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn eprintln_debug(message: &str) {
    if std::env::var_os("ASM_FAKE_SERVER_DEBUG").is_some() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{message}");
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let request = match tokio::time::timeout(READ_TIMEOUT, http::read_request(&mut reader)).await {
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            eprintln_debug(&format!("fake server: bad request: {e}"));
            let body = serde_json::json!({"error": {"message": e.to_string()}}).to_string();
            let headers = [("content-type", "application/json".to_owned())];
            let _ = http::write_response(&mut write, 400, &headers, body.as_bytes()).await;
            return;
        }
        Err(_) => return,
    };
    let response = answer(&shared, &request);
    let streamed = matches!(response, Response::Stream { .. });
    match play(&mut write, &mut reader, response).await {
        Ok(true) if streamed => {
            shared.completed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(true) => {}
        Ok(false) | Err(_) if streamed => {
            shared.aborted.fetch_add(1, Ordering::SeqCst);
        }
        Ok(false) | Err(_) => {}
    }
}

fn answer(shared: &Shared, request: &Request) -> Response {
    let body: Option<Value> = serde_json::from_slice(&request.body).ok();
    let path = request.target.split('?').next().unwrap_or_default();
    let record = |reply: String| {
        lock(&shared.requests).push(RecordedRequest {
            method: request.method.clone(),
            target: request.target.clone(),
            headers: request.headers.clone(),
            body: body.clone(),
            body_len: request.body.len(),
            reply,
        });
    };
    if (request.method == "HEAD" || request.method == "GET") && path == "/" {
        record("preflight".to_owned());
        return Response::Full { status: 200, headers: Vec::new(), body: Vec::new() };
    }
    if request.method != "POST" || !shared.api.is_model_path(path) {
        record("not_found".to_owned());
        let body = serde_json::json!({"error": {"type": "not_found_error", "message": format!("no route {} {}", request.method, request.target)}});
        return Response::json(404, Vec::new(), &body);
    }
    let default = *lock(&shared.default);
    let empty = Value::Null;
    let json = body.as_ref().unwrap_or(&empty);
    let reply = match shared.api {
        Api::AnthropicMessages => anthropic::pick_reply(json),
        Api::OpenAiResponses => openai::pick_reply(json),
        Api::GeminiGenerateContent => gemini::pick_reply(json),
    }
    .unwrap_or(Reply::Scenario(default));
    record(reply.name());
    let (model, stream) = match shared.api {
        // Gemini names the model and the stream in the path, not the body.
        Api::GeminiGenerateContent => gemini::model_and_stream(path).unwrap_or(("fake-model".to_owned(), false)),
        _ => (
            json.get("model").and_then(Value::as_str).unwrap_or("fake-model").to_owned(),
            json.get("stream").and_then(Value::as_bool).unwrap_or(false),
        ),
    };
    let ctx = Ctx { n: shared.counter.fetch_add(1, Ordering::SeqCst) + 1, model, stream };
    match shared.api {
        Api::AnthropicMessages => anthropic::respond(&reply, &ctx),
        Api::OpenAiResponses => openai::respond(&reply, &ctx),
        Api::GeminiGenerateContent => gemini::respond(&reply, &ctx),
    }
}

/// Plays `response`; `Ok(false)` when the client left before a stream ended.
async fn play(
    write: &mut OwnedWriteHalf,
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    response: Response,
) -> io::Result<bool> {
    match response {
        Response::Full { status, headers, body } => {
            http::write_response(write, status, &headers, &body).await?;
            Ok(true)
        }
        Response::Stream { headers, steps } => {
            http::start_sse(write, &headers).await?;
            for step in steps {
                match step {
                    Step::Send(text) => http::write_chunk(write, text.as_bytes()).await?,
                    Step::Pause(d) => {
                        // The client sends nothing more, so any read result means it left.
                        let mut byte = [0u8; 1];
                        tokio::select! {
                            () = tokio::time::sleep(d) => {}
                            _ = reader.read(&mut byte) => return Ok(false),
                        }
                    }
                }
            }
            http::finish_chunks(write).await?;
            Ok(true)
        }
    }
}
