//! The JSON bodies of the API: request and response types, and the schemas of the library's
//! own values ([`Session`], [`Run`], [`EventJson`]) as the OpenAPI document describes them.
//!
//! The `*Schema` types are descriptions only (they are never built): the bodies are the
//! library's serde output. The test `schemas_match_the_serialised_values` checks that every
//! key the library writes is described and every required key is written.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use asm_core::{Error, ErrorCode, InputMessage, Role, Run, RunInput, Session, SessionStatus, TokenUsage};

type Object = serde_json::Map<String, serde_json::Value>;

/// `GET /v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    /// The crate version.
    pub version: String,
    /// The providers runs can use (the first is the default).
    pub providers: Vec<String>,
    /// Whether the store keeps events across restarts.
    pub durable_store: bool,
}

/// `POST /v1/sessions`: the session to create (pending until its first run).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The agent the session talks to; not empty.
    pub agent_id: String,
    /// The provider its runs use (a configured one; default: the server's default provider).
    #[serde(default)]
    pub provider: Option<String>,
    /// Sets `context.system_prompt`.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Free-form metadata (`provider` is reserved).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Object>,
    /// Context for providers.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Object>,
    /// Tags for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A session with a summary of its runs: what every session endpoint returns.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// `ses_` + 32 hex digits.
    pub id: String,
    /// The agent.
    pub agent_id: String,
    /// `pending`, `active`, `paused`, `completed`, `failed` or `cancelled`.
    #[schema(value_type = SessionStatusSchema)]
    pub status: SessionStatus,
    /// The parent session, for forks and hierarchies.
    pub parent_session_id: Option<String>,
    /// The provider its runs use (`metadata.provider`).
    pub provider: Option<String>,
    /// Free-form metadata.
    #[schema(value_type = Object)]
    pub metadata: Object,
    /// Context for providers.
    #[schema(value_type = Object)]
    pub context: Object,
    /// Tags.
    pub tags: Vec<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Number of runs.
    pub run_count: usize,
    /// Tokens used by all runs.
    #[schema(value_type = TokenUsageSchema)]
    pub token_usage: TokenUsage,
    /// Cost of all runs that report one, in USD.
    pub cost_usd: Option<f64>,
    /// Status of the newest run.
    pub last_run_status: Option<String>,
}

impl SessionView {
    /// The view of `session` with the summary of `runs`.
    pub fn new(session: &Session, runs: &[Run]) -> Self {
        let token_usage = runs.iter().fold(TokenUsage::default(), |sum, run| sum + run.token_usage);
        let costs: Vec<f64> = runs.iter().filter_map(|run| run.cost_usd).collect();
        Self {
            id: session.id.to_string(),
            agent_id: session.agent_id.clone(),
            status: session.status,
            parent_session_id: session.parent_session_id.as_ref().map(ToString::to_string),
            provider: session.metadata.get("provider").and_then(|p| p.as_str()).map(str::to_owned),
            metadata: session.metadata.clone(),
            context: session.context.clone(),
            tags: session.tags.clone(),
            created_at: session.created_at.to_rfc3339(),
            updated_at: session.updated_at.to_rfc3339(),
            run_count: runs.len(),
            token_usage,
            cost_usd: (!costs.is_empty()).then(|| costs.iter().sum()),
            last_run_status: runs.iter().max_by_key(|run| run.created_at).map(|run| run.status.to_string()),
        }
    }
}

/// `GET /v1/sessions`: one page, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    /// The sessions of this page.
    pub sessions: Vec<SessionView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A run's input: one user prompt, or messages.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum InputBody {
    /// One user message.
    Text(String),
    /// Messages in order.
    Messages(Vec<MessageBody>),
}

/// One input message.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageBody {
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl InputBody {
    pub(crate) fn into_input(self) -> asm_core::Result<RunInput> {
        let input = match self {
            InputBody::Text(text) => RunInput::user(text),
            InputBody::Messages(messages) => {
                let mut input = RunInput::default();
                for message in messages {
                    let role = Role::parse(&message.role).ok_or_else(|| {
                        Error::new(ErrorCode::ValidationError, format!("unknown role {:?}", message.role))
                            .with_detail("role", message.role.clone())
                    })?;
                    input.messages.push(InputMessage { role, content: message.content });
                }
                input
            }
        };
        input.validate()?;
        Ok(input)
    }
}

/// How a run continues the session's conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContinuationBody {
    /// Resume the provider's own session where it can, else replay the transcript (default).
    #[default]
    Auto,
    /// Replay the session's transcript.
    Replay,
    /// Resume the provider's session; an error when it cannot.
    Native,
    /// Only this run's input.
    None,
}

/// `POST /v1/sessions/{id}/runs`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRun {
    /// A prompt, or messages.
    pub input: InputBody,
    /// The provider; must be the session's provider when given.
    #[serde(default)]
    pub provider: Option<String>,
    /// Per-run adapter options (`model`, `max_turns`, `permission_mode`, `allowed_tools`,
    /// `disallowed_tools`, `system_prompt`, `cwd`); the adapter refuses what it cannot honour.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub options: Option<Object>,
    /// Continuation mode (default `auto`).
    #[serde(default)]
    pub continuation: Option<ContinuationBody>,
    /// Execution deadline in milliseconds (the run ends `timeout` after it).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `202` answer of `POST /v1/sessions/{id}/runs`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunAccepted {
    /// The queued run.
    pub run_id: String,
    /// Its session.
    pub session_id: String,
}

/// The session statuses.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum SessionStatusSchema {
    Pending,
    Active,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

/// The run statuses.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum RunStatusSchema {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Timeout,
}

/// Token counts.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct TokenUsageSchema {
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_creation_tokens: u64,
}

/// A run input message.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct InputMessageSchema {
    /// `user`, `assistant`, `system` or `tool`.
    role: String,
    content: String,
}

/// A run's input.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct RunInputSchema {
    messages: Vec<InputMessageSchema>,
}

/// A run's output.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct RunOutputSchema {
    content: String,
    extra: Option<Object>,
}

/// The error that ended a run.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct RunErrorSchema {
    /// An error code name.
    code: String,
    message: String,
    details: Option<Object>,
    provider_error: Option<Object>,
    /// RFC 3339.
    timestamp: String,
}

/// A run (`asm_core::Run`).
#[derive(ToSchema)]
#[schema(as = Run)]
#[allow(dead_code)]
pub(crate) struct RunSchema {
    /// `run_` + 32 hex digits.
    id: String,
    session_id: String,
    status: RunStatusSchema,
    input: RunInputSchema,
    output: Option<RunOutputSchema>,
    error: Option<RunErrorSchema>,
    metadata: Object,
    turn_count: u32,
    token_usage: TokenUsageSchema,
    cost_usd: Option<f64>,
    /// RFC 3339.
    created_at: String,
    started_at: Option<String>,
    ended_at: Option<String>,
    /// The provider that executed it.
    provider: Option<String>,
}

/// A stored event (`asm_core::EventJson`): the one event object of the API, its Server-Sent
/// Events and the CLI's `--json` output.
#[derive(ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)]
pub(crate) struct EventSchema {
    session_id: String,
    /// `null` for session events.
    run_id: Option<String>,
    /// Per-session sequence number, from 1, without gaps.
    sequence: u64,
    /// The event kind (`run_started`, `message_streamed`, `tool_call_started`, ...).
    kind: String,
    /// The payload.
    data: Object,
    /// RFC 3339, UTC, microseconds.
    timestamp: String,
    /// `evt_` + 32 hex digits.
    id: String,
    metadata: Object,
    provider: Option<String>,
    correlation_id: Option<String>,
    schema_version: u32,
}

/// One tool call waiting for a decision (`GET /v1/approvals`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    /// `apr_` + 32 hex digits: the id to answer.
    pub id: String,
    /// The session.
    pub session_id: String,
    /// The run whose tool call waits.
    pub run_id: String,
    /// The adapter that asks (`acp`, `claude`, ...).
    pub provider: String,
    /// The tool, as the provider names it.
    pub tool_name: String,
    /// The provider's id of the tool call.
    pub tool_call_id: Option<String>,
    /// The tool's input (`null` when the provider reported none).
    #[schema(value_type = Object)]
    pub tool_input: serde_json::Value,
    /// When the adapter asked (RFC 3339).
    pub requested_at: String,
}

impl ApprovalView {
    /// The view of a waiting request.
    pub fn new(request: &asm_ports::ApprovalRequest) -> Self {
        Self {
            id: request.id.to_string(),
            session_id: request.session_id.to_string(),
            run_id: request.run_id.to_string(),
            provider: request.provider.clone(),
            tool_name: request.tool_name.clone(),
            tool_call_id: request.tool_call_id.clone(),
            tool_input: request.tool_input.clone(),
            requested_at: request.requested_at.to_rfc3339(),
        }
    }
}

/// `GET /v1/approvals`: the waiting requests, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalList {
    /// The waiting requests.
    pub approvals: Vec<ApprovalView>,
}

/// `POST /v1/approvals/{id}`: the answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerApproval {
    /// `allow_once`, `allow_always` (this tool, for the rest of the session), `deny_once` or
    /// `deny_always`.
    pub decision: String,
    /// Why (recorded on the `tool_approval_granted` / `_denied` event).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer of `POST /v1/approvals/{id}`: the verdict handed to the waiting run.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalAnswered {
    /// The request.
    pub id: String,
    /// The decision.
    pub decision: String,
    /// Who decided (`http`: the API's callers are not told apart).
    pub decided_by: String,
    /// The reason given.
    pub reason: Option<String>,
}
