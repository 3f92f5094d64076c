//! The approval port: who decides whether a tool call the agent wants to make may run.
//!
//! An adapter whose provider can ask before a tool runs (ACP `session/request_permission`,
//! Claude Code's `can_use_tool` control requests) builds an [`ApprovalRequest`] and awaits
//! [`ExecuteRequest::approvals`](crate::ExecuteRequest::approvals). The runtime hands every run
//! a handler that wraps the application's [`ApprovalHandler`]: it records
//! `tool_approval_requested` before asking and `tool_approval_granted` / `tool_approval_denied`
//! after (with who decided and how long it took), applies the timeout (default deny), remembers
//! `*_always` decisions for the session, and answers a cancelled run's pending request with a
//! denial. Adapters therefore only translate the provider's request and the decision.
//!
//! Implementations an application plugs in: the policy's tool rules (decide immediately), a
//! queue the application answers (list pending, approve, deny; the HTTP API's
//! `/v1/approvals`), or its own.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use asm_core::{ApprovalId, Error, ErrorCode, Result, RunId, SessionId, Timestamp};

/// One tool call waiting for a decision.
///
/// ```
/// use asm_core::{RunId, SessionId};
/// use asm_ports::ApprovalRequest;
/// let request = ApprovalRequest::new(SessionId::new(), RunId::new(), "claude", "Bash")
///     .tool_call_id("toolu_1")
///     .tool_input(serde_json::json!({"command": "rm -rf build"}));
/// assert!(request.id.as_str().starts_with("apr_"));
/// assert_eq!(request.tool_name, "Bash");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApprovalRequest {
    /// The request's id, unique across sessions (`apr_...`).
    pub id: ApprovalId,
    /// The session the run belongs to.
    pub session_id: SessionId,
    /// The run whose tool call waits.
    pub run_id: RunId,
    /// The adapter that asks (`claude`, `acp`, ...).
    pub provider: String,
    /// The tool's name as the provider reports it (`Bash`, `Edit`, an ACP tool kind or title).
    pub tool_name: String,
    /// The provider's id of the tool call, when it has one.
    pub tool_call_id: Option<String>,
    /// The tool's input (`null` when the provider reports none).
    pub tool_input: Value,
    /// When the adapter asked.
    pub requested_at: Timestamp,
}

impl ApprovalRequest {
    /// A request with a fresh id, no tool call id and a `null` input, asked now.
    pub fn new(
        session_id: SessionId,
        run_id: RunId,
        provider: impl Into<String>,
        tool_name: impl Into<String>,
    ) -> Self {
        Self {
            id: ApprovalId::new(),
            session_id,
            run_id,
            provider: provider.into(),
            tool_name: tool_name.into(),
            tool_call_id: None,
            tool_input: Value::Null,
            requested_at: chrono::Utc::now(),
        }
    }
    asm_core::builder_setters! {
        /// Sets the provider's tool call id.
        fn tool_call_id(id: impl Into<String>) { tool_call_id = Some(id.into()) }
        /// Sets the tool's input.
        fn tool_input(input: Value) { tool_input = input }
    }
}

/// What was decided for one tool call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApprovalDecision {
    /// Run this call.
    AllowOnce,
    /// Run this call and every later call of the same tool in this session without asking.
    AllowAlways,
    /// Refuse this call.
    DenyOnce,
    /// Refuse this call and every later call of the same tool in this session without asking.
    DenyAlways,
}

asm_core::string_enum! {
    /// The snake_case name (`allow_once`, ...), as stored in events and taken by the HTTP API.
    ApprovalDecision {
        AllowOnce => "allow_once",
        AllowAlways => "allow_always",
        DenyOnce => "deny_once",
        DenyAlways => "deny_always",
    }
    /// Every decision.
    pub const ALL;
    /// Parses a snake_case name.
    ///
    /// ```
    /// use asm_ports::ApprovalDecision;
    /// assert_eq!(ApprovalDecision::parse("deny_always").unwrap(), ApprovalDecision::DenyAlways);
    /// assert!(ApprovalDecision::parse("maybe").is_err());
    /// ```
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for anything else, listing the accepted names.
    pub fn parse(text) -> Result<Self, Error> {
        Err(Error::new(
            ErrorCode::ValidationError,
            format!("unknown approval decision {text:?}: expected allow_once, allow_always, deny_once or deny_always"),
        ))
    }
}

impl ApprovalDecision {
    /// Whether the call may run.
    pub const fn allows(self) -> bool {
        matches!(self, Self::AllowOnce | Self::AllowAlways)
    }
    /// Whether the decision holds for later calls of the same tool in the session.
    pub const fn is_always(self) -> bool {
        matches!(self, Self::AllowAlways | Self::DenyAlways)
    }
}

/// A decision with its reason and who made it.
///
/// ```
/// use asm_ports::{ApprovalDecision, ApprovalVerdict};
/// let v = ApprovalVerdict::new(ApprovalDecision::DenyOnce, "policy").reason("Bash is denied");
/// assert!(!v.decision.allows());
/// assert_eq!(v.decided_by, "policy");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApprovalVerdict {
    /// The decision.
    pub decision: ApprovalDecision,
    /// Why, when the decider said.
    pub reason: Option<String>,
    /// Who decided: `policy`, `session_memory`, `timeout`, `cancelled`, or the name an
    /// application gave (a user, a service).
    pub decided_by: String,
}

impl ApprovalVerdict {
    /// A verdict without a reason.
    pub fn new(decision: ApprovalDecision, decided_by: impl Into<String>) -> Self {
        Self { decision, reason: None, decided_by: decided_by.into() }
    }
    asm_core::builder_setters! {
        /// Sets the reason.
        fn reason(reason: impl Into<String>) { reason = Some(reason.into()) }
    }
}

/// Decides tool approvals. Implementations may answer at once (rules) or wait for a person (a
/// queue); the runtime bounds the wait with its timeout and the run's cancellation, so an
/// implementation need not.
///
/// ```
/// use async_trait::async_trait;
/// use asm_core::Result;
/// use asm_ports::{ApprovalDecision, ApprovalHandler, ApprovalRequest, ApprovalVerdict};
///
/// /// Allows read-only tools, denies the rest.
/// #[derive(Debug)]
/// struct ReadOnly;
///
/// #[async_trait]
/// impl ApprovalHandler for ReadOnly {
///     async fn decide(&self, request: &ApprovalRequest) -> Result<ApprovalVerdict> {
///         let decision = if matches!(request.tool_name.as_str(), "Read" | "Grep" | "Glob") {
///             ApprovalDecision::AllowOnce
///         } else {
///             ApprovalDecision::DenyOnce
///         };
///         Ok(ApprovalVerdict::new(decision, "read_only"))
///     }
/// }
/// ```
#[async_trait]
pub trait ApprovalHandler: fmt::Debug + Send + Sync {
    /// The verdict for `request`.
    ///
    /// # Errors
    /// Any error the decider hits; the runtime records it and denies the call.
    async fn decide(&self, request: &ApprovalRequest) -> Result<ApprovalVerdict>;
}

/// A shared approval handler.
pub type DynApprovalHandler = Arc<dyn ApprovalHandler>;
