//! The `/v1` routes, their handlers and the OpenAPI document.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::OpenApi;

use asm_core::{ApprovalId, Error, ErrorCode, EventJson, EventKind, Run, RunId, SessionId, SessionStatus};
use asm_ports::{ApprovalDecision, ApprovalVerdict, EventQuery, RunQuery, SessionQuery};
use asm_runtime::{Continuation, NewSession, RunOptions, StreamOptions};

use crate::schema::{
    AnswerApproval, ApprovalAnswered, ApprovalList, ApprovalView, ContinuationBody, CreateSession, Health, RunAccepted,
    SessionList, SessionView, SubmitRun,
};
use crate::{ApiError, ApiServer, ErrorBody};

type ApiResult<T> = Result<T, ApiError>;

/// Events per page of `GET /v1/sessions/{id}/events` when `limit` is not given.
const DEFAULT_EVENT_LIMIT: usize = 100;
/// The largest `limit` of `GET /v1/sessions/{id}/events`.
const MAX_EVENT_LIMIT: usize = 1_000;
/// Store reads of the SSE stream: events per read, and how long one long-poll waits.
const STREAM_PAGE: usize = 500;
const STREAM_WAIT: Duration = Duration::from_secs(30);

pub(crate) fn routes(api: ApiServer) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/sessions", get(list_sessions).post(create_session))
        .route("/v1/sessions/{id}", get(get_session))
        .route("/v1/sessions/{id}/runs", get(list_runs).post(submit_run))
        .route("/v1/sessions/{id}/events", get(list_events))
        .route("/v1/sessions/{id}/events/stream", get(stream_events))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", post(answer_approval))
        .route("/v1/openapi.json", get(openapi_json))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(api.clone(), crate::auth::require_token))
        .with_state(api)
}

/// The OpenAPI 3.1 document of the API, generated from the handlers and body types (served at
/// `/v1/openapi.json`; the checked-in copy is `docs/openapi.json`).
///
/// ```
/// let doc = asm_http::openapi();
/// assert!(doc.paths.paths.contains_key("/v1/sessions/{id}/events/stream"));
/// ```
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "agent-session-manager HTTP API", description = "Sessions, runs and events of agent-session-manager; Server-Sent Events resumable by Last-Event-ID."),
    paths(health, list_sessions, create_session, get_session, list_runs, submit_run, get_run, cancel_run, list_events, stream_events, list_approvals, answer_approval),
    components(schemas(ErrorBody, ApprovalView, ApprovalList, AnswerApproval, ApprovalAnswered, Health, CreateSession, SessionView, SessionList, SubmitRun, RunAccepted, ContinuationBody, crate::schema::RunSchema, crate::schema::EventSchema)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Required when the server has a token (always on a non-loopback address)."))
                    .build(),
            ),
        );
    }
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

fn session_id(text: &str) -> ApiResult<SessionId> {
    SessionId::parse(text).map_err(|_| not_found_session(text))
}

fn not_found_session(text: &str) -> ApiError {
    Error::new(ErrorCode::SessionNotFound, format!("session {text:?} not found")).with_detail("session_id", text).into()
}

fn run_id(text: &str) -> ApiResult<RunId> {
    RunId::parse(text).map_err(|_| {
        Error::new(ErrorCode::RunNotFound, format!("run {text:?} not found")).with_detail("run_id", text).into()
    })
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    json.map(|Json(value)| value).map_err(|rejection| {
        let code = match rejection {
            JsonRejection::MissingJsonContentType(_) | JsonRejection::JsonSyntaxError(_) => ErrorCode::InvalidFormat,
            _ => ErrorCode::ValidationError,
        };
        ApiError::new(code, rejection.body_text())
    })
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    query
        .map(|Query(value)| value)
        .map_err(|rejection| ApiError::new(ErrorCode::ValidationError, rejection.body_text()))
}

/// Parses `kind` values: repeated (`kind=a&kind=b`) or comma separated (`kind=a,b`).
fn kinds(pairs: &[(String, String)]) -> ApiResult<Vec<EventKind>> {
    let mut kinds = Vec::new();
    for (key, value) in pairs {
        if key == "kind" {
            for text in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                kinds.push(EventKind::parse(text).map_err(|e| e.with_detail("kind", text))?);
            }
        }
    }
    Ok(kinds)
}

fn single<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn number<T: std::str::FromStr>(pairs: &[(String, String)], key: &str) -> ApiResult<Option<T>> {
    single(pairs, key)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse().map_err(|_| {
                Error::new(ErrorCode::ValidationError, format!("{key} must be a non-negative integer, got {v:?}"))
                    .with_detail("parameter", key)
                    .into()
            })
        })
        .transpose()
}

async fn view(api: &ApiServer, session: &asm_core::Session) -> ApiResult<SessionView> {
    let runs = api.inner().store.list_runs(&session.id, &RunQuery::new()).await?;
    Ok(SessionView::new(session, &runs))
}

/// Liveness and configuration.
#[utoipa::path(get, path = "/v1/health", tag = "meta", responses((status = 200, body = Health)))]
async fn health(State(api): State<ApiServer>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        providers: api.providers().to_vec(),
        durable_store: api.inner().store.capabilities().durable,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SessionsParams {
    /// Only sessions with this status.
    status: Option<String>,
    /// Only sessions of this agent.
    agent: Option<String>,
    /// Only sessions with this tag.
    tag: Option<String>,
    /// Page size (default 50, at most 1000).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Sessions, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(SessionsParams),
    responses((status = 200, body = SessionList), (status = 400, body = ErrorBody)))]
async fn list_sessions(
    State(api): State<ApiServer>,
    params: Result<Query<SessionsParams>, QueryRejection>,
) -> ApiResult<Json<SessionList>> {
    let params = query(params)?;
    let mut q = SessionQuery::new();
    if let Some(status) = params.status.filter(|s| !s.is_empty()) {
        let parsed = SessionStatus::ALL.iter().copied().find(|s| s.as_str() == status).ok_or_else(|| {
            Error::new(ErrorCode::ValidationError, format!("unknown session status {status:?}"))
                .with_detail("status", status.clone())
        })?;
        q = q.status(parsed);
    }
    if let Some(agent) = params.agent.filter(|s| !s.is_empty()) {
        q = q.agent(agent);
    }
    if let Some(tag) = params.tag.filter(|s| !s.is_empty()) {
        q = q.tag(tag);
    }
    if let Some(limit) = params.limit {
        q = q.limit(limit);
    }
    if let Some(cursor) = params.cursor.filter(|s| !s.is_empty()) {
        q = q.cursor(cursor);
    }
    let page = api.inner().store.list_sessions(&q).await?;
    let mut sessions = Vec::with_capacity(page.items.len());
    for session in &page.items {
        sessions.push(view(&api, session).await?);
    }
    Ok(Json(SessionList { sessions, next_cursor: page.next_cursor }))
}

/// Creates a pending session; it becomes active with its first run.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = SessionView), (status = 400, body = ErrorBody)))]
async fn create_session(
    State(api): State<ApiServer>,
    json: Result<Json<CreateSession>, JsonRejection>,
) -> ApiResult<Response> {
    let request = body(json)?;
    let inner = api.inner();
    let provider = request.provider.as_deref().unwrap_or(&inner.default_provider);
    let (_, manager) = inner.lookup(provider).ok_or_else(|| {
        Error::new(ErrorCode::ValidationError, format!("provider {provider:?} is not configured on this server"))
            .with_detail("provider", provider)
            .with_detail("providers", inner.order.clone())
    })?;
    let mut new = NewSession::new(request.agent_id);
    for (key, value) in request.metadata.unwrap_or_default() {
        new = new.metadata(key, value);
    }
    for (key, value) in request.context.unwrap_or_default() {
        new = new.context(key, value);
    }
    if let Some(prompt) = request.system_prompt {
        new = new.system_prompt(prompt);
    }
    for tag in request.tags {
        new = new.tag(tag);
    }
    let session = manager.start_session(new).await?;
    Ok((StatusCode::CREATED, Json(SessionView::new(&session, &[]))).into_response())
}

/// One session with the summary of its runs.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody)))]
async fn get_session(State(api): State<ApiServer>, Path(id): Path<String>) -> ApiResult<Json<SessionView>> {
    let session = api.inner().store.get_session(&session_id(&id)?).await?;
    Ok(Json(view(&api, &session).await?))
}

/// The session's runs, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{id}/runs", tag = "runs", params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = Vec<crate::schema::RunSchema>), (status = 404, body = ErrorBody)))]
async fn list_runs(State(api): State<ApiServer>, Path(id): Path<String>) -> ApiResult<Json<Vec<Run>>> {
    Ok(Json(api.inner().store.list_runs(&session_id(&id)?, &RunQuery::new()).await?))
}

/// Queues a run through the session's server; it starts when a slot is free.
#[utoipa::path(post, path = "/v1/sessions/{id}/runs", tag = "runs", request_body = SubmitRun,
    params(("id" = String, Path, description = "Session id")),
    responses((status = 202, body = RunAccepted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The session is finished"),
        (status = 429, body = ErrorBody, description = "The session's queue is full")))]
async fn submit_run(
    State(api): State<ApiServer>,
    Path(id): Path<String>,
    json: Result<Json<SubmitRun>, JsonRejection>,
) -> ApiResult<Response> {
    let session_id = session_id(&id)?;
    let request = body(json)?;
    let inner = api.inner();
    let session = inner.store.get_session(&session_id).await?;
    if session.status.is_terminal() {
        return Err(Error::new(
            ErrorCode::InvalidTransition,
            format!("session {session_id} is {}; it takes no more runs", session.status),
        )
        .with_detail("status", session.status.as_str())
        .into());
    }
    let input = request.input.into_input()?;
    let (_, manager) = inner.provider_for(&session, request.provider.as_deref())?;
    let mut options = RunOptions::new().continuation(match request.continuation.unwrap_or_default() {
        ContinuationBody::Auto => Continuation::Auto,
        ContinuationBody::Replay => Continuation::Replay,
        ContinuationBody::Native => Continuation::Native,
        ContinuationBody::None => Continuation::None,
    });
    for (key, value) in request.options.unwrap_or_default() {
        options = options.adapter_option(key, value);
    }
    if let Some(ms) = request.timeout_ms {
        options = options.timeout(Duration::from_millis(ms));
    }
    let server = inner.server_for(&session_id, manager).await?;
    let run_id = server.submit_run(input, options).await?;
    tracing::info!(%session_id, %run_id, "run queued");
    Ok((StatusCode::ACCEPTED, Json(RunAccepted { run_id: run_id.to_string(), session_id: session_id.to_string() }))
        .into_response())
}

/// One run.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = crate::schema::RunSchema), (status = 404, body = ErrorBody)))]
async fn get_run(State(api): State<ApiServer>, Path(id): Path<String>) -> ApiResult<Json<Run>> {
    Ok(Json(api.inner().store.get_run(&run_id(&id)?).await?))
}

/// Cancels a run: a queued one at once (no provider call), an executing one through its
/// provider. Answers with the run as stored after the request.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path, description = "Run id")),
    responses((status = 202, body = crate::schema::RunSchema), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The run already ended otherwise")))]
async fn cancel_run(State(api): State<ApiServer>, Path(id): Path<String>) -> ApiResult<Response> {
    let run_id = run_id(&id)?;
    let inner = api.inner();
    let run = inner.store.get_run(&run_id).await?;
    match inner.supervisor.whereis(&run.session_id) {
        Some(server) => server.cancel_run(&run_id).await?,
        None => {
            let session = inner.store.get_session(&run.session_id).await?;
            let manager = inner.provider_for(&session, None).map_or_else(|_| inner.reader(), |(_, m)| m);
            manager.cancel_run(&run_id).await?;
        }
    }
    let run = inner.store.get_run(&run_id).await?;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

/// A page of the session's events (oldest first), as a JSON array of event objects.
#[utoipa::path(get, path = "/v1/sessions/{id}/events", tag = "events",
    params(("id" = String, Path, description = "Session id"),
        ("after" = Option<u64>, Query, description = "Only events with a greater sequence (default 0)"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)"),
        ("kind" = Option<String>, Query, description = "Only these kinds: repeated or comma separated"),
        ("run" = Option<String>, Query, description = "Only events of this run")),
    responses((status = 200, body = Vec<crate::schema::EventSchema>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_events(
    State(api): State<ApiServer>,
    Path(id): Path<String>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Vec<EventJson>>> {
    let session_id = session_id(&id)?;
    let params = query(params)?;
    let limit = number::<usize>(&params, "limit")?.unwrap_or(DEFAULT_EVENT_LIMIT);
    if limit == 0 || limit > MAX_EVENT_LIMIT {
        return Err(Error::new(ErrorCode::ValidationError, format!("limit must be between 1 and {MAX_EVENT_LIMIT}"))
            .with_detail("parameter", "limit")
            .into());
    }
    let mut q = EventQuery::new().after(number(&params, "after")?.unwrap_or(0)).limit(limit);
    q.kinds = kinds(&params)?;
    if let Some(run) = single(&params, "run").filter(|r| !r.is_empty()) {
        q = q.run(RunId::parse(run)?);
    }
    let events = api.inner().store.get_events(&session_id, &q).await?;
    Ok(Json(events.iter().map(EventJson::from).collect()))
}

/// Server-Sent Events: every stored event after `after` (or after the `Last-Event-ID`
/// header, which wins), then live. `id:` is the sequence, `event:` the kind, `data:` the
/// event object; a `: heartbeat` comment keeps idle connections open.
#[utoipa::path(get, path = "/v1/sessions/{id}/events/stream", tag = "events",
    params(("id" = String, Path, description = "Session id"),
        ("after" = Option<u64>, Query, description = "Start after this sequence (default 0)"),
        ("kind" = Option<String>, Query, description = "Only these kinds: repeated or comma separated"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume strictly after this sequence")),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "`id: <sequence>`, `event: <kind>`, `data: <event object>` per event"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn stream_events(
    State(api): State<ApiServer>,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let session_id = session_id(&id)?;
    let params = query(params)?;
    let after = match headers.get("last-event-id") {
        Some(value) => value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            Error::new(ErrorCode::InvalidCursor, "Last-Event-ID must be an event sequence number")
                .with_detail("header", "Last-Event-ID")
        })?,
        None => number(&params, "after")?.unwrap_or(0),
    };
    let inner = api.inner();
    inner.store.get_session(&session_id).await?;
    let mut filter = EventQuery::new();
    filter.kinds = kinds(&params)?;
    let options = StreamOptions::after(after).page_size(STREAM_PAGE).wait(STREAM_WAIT).filter(filter);
    let mut stopping = inner.shutdown.subscribe();
    let stop = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    tracing::debug!(%session_id, after, "event stream opened");
    let events = inner.reader().stream_session_events(&session_id, options).take_until(stop).map(|item| {
        Ok(match item {
            Ok(event) => {
                let json = event.to_json();
                let data = serde_json::to_string(&json).unwrap_or_else(|_| "{}".into());
                SseEvent::default().id(json.sequence.to_string()).event(json.kind.as_str()).data(data)
            }
            Err(error) => {
                let body = ApiError::from(error).body().clone();
                SseEvent::default().event("error").data(serde_json::to_string(&body).unwrap_or_else(|_| "{}".into()))
            }
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(inner.heartbeat).text("heartbeat")))
}

/// `decided_by` of the answers given through the API.
pub(crate) const DECIDED_BY_HTTP: &str = "http";

fn approval_queue(api: &ApiServer) -> ApiResult<&asm_runtime::ApprovalQueue> {
    api.inner().approvals.as_ref().ok_or_else(|| {
        Error::new(
            ErrorCode::DependencyNotAvailable,
            "live approvals are not enabled on this server (ApiServerBuilder::approvals)",
        )
        .into()
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ApprovalsParams {
    /// Only the requests of this session.
    session_id: Option<String>,
}

/// The tool calls waiting for a decision, oldest first. Their runs stay `running` until each
/// is answered, times out (denied) or its run is cancelled (denied).
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalsParams),
    responses((status = 200, body = ApprovalList), (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Live approvals are not enabled")))]
async fn list_approvals(
    State(api): State<ApiServer>,
    params: Result<Query<ApprovalsParams>, QueryRejection>,
) -> ApiResult<Json<ApprovalList>> {
    let params = query(params)?;
    let queue = approval_queue(&api)?;
    let pending = match params.session_id.filter(|s| !s.is_empty()) {
        Some(id) => queue.pending_for(&SessionId::parse(&id).map_err(|e| e.with_detail("parameter", "session_id"))?),
        None => queue.pending(),
    };
    Ok(Json(ApprovalList { approvals: pending.iter().map(ApprovalView::new).collect() }))
}

/// Answers a waiting tool call: `allow_once`, `allow_always` (the tool for the rest of the
/// session), `deny_once` or `deny_always`, with an optional reason. The run goes on at once.
#[utoipa::path(post, path = "/v1/approvals/{id}", tag = "approvals", request_body = AnswerApproval,
    params(("id" = String, Path, description = "Approval request id (`apr_...`)")),
    responses((status = 200, body = ApprovalAnswered), (status = 400, body = ErrorBody, description = "Unknown decision"),
        (status = 404, body = ErrorBody, description = "No such request"),
        (status = 409, body = ErrorBody, description = "Already answered, or no longer waiting (timed out, run cancelled)"),
        (status = 503, body = ErrorBody, description = "Live approvals are not enabled")))]
async fn answer_approval(
    State(api): State<ApiServer>,
    Path(id): Path<String>,
    json: Result<Json<AnswerApproval>, JsonRejection>,
) -> ApiResult<Json<ApprovalAnswered>> {
    let queue = approval_queue(&api)?;
    let approval_id = ApprovalId::parse(&id).map_err(|_| {
        ApiError::from(
            Error::new(ErrorCode::NotFound, format!("approval request {id:?} not found"))
                .with_detail("approval_id", id.as_str())
                .with_detail("reason", "unknown"),
        )
    })?;
    let answer = body(json)?;
    let decision =
        ApprovalDecision::parse(&answer.decision).map_err(|e| e.with_detail("decision", answer.decision.clone()))?;
    let mut verdict = ApprovalVerdict::new(decision, DECIDED_BY_HTTP);
    if let Some(reason) = answer.reason.clone().filter(|r| !r.is_empty()) {
        verdict = verdict.reason(reason);
    }
    queue.answer(&approval_id, verdict).map_err(Error::from)?;
    tracing::info!(%approval_id, decision = decision.as_str(), "approval answered");
    Ok(Json(ApprovalAnswered {
        id: approval_id.to_string(),
        decision: decision.as_str().to_owned(),
        decided_by: DECIDED_BY_HTTP.to_owned(),
        reason: answer.reason.filter(|r| !r.is_empty()),
    }))
}
