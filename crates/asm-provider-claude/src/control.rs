//! [`ControlDialog`]: Claude Code's bidirectional stream-json control protocol, used when a run
//! has an approval handler ([`ExecuteRequest::approvals`]). See `docs/claude-control-protocol.md`
//! for the captured exchange.

use async_trait::async_trait;
use serde_json::{Value, json};

use asm_core::{RunId, SessionId};
use asm_ports::{ApprovalRequest, ApprovalVerdict, DynApprovalHandler, ExecuteRequest};
use asm_provider_cli::{DialogStep, StdinDialog, render_prompt};

/// The `request_id` of the `initialize` control request the adapter sends first.
pub const INITIALIZE_REQUEST_ID: &str = "asm_initialize";

/// The `request_id` prefix of the `interrupt` control requests sent on cancellation.
pub const INTERRUPT_REQUEST_ID: &str = "asm_interrupt";

/// The flags that turn the control protocol on (added by [`build_argv`](crate::build_argv)
/// when the run has an approval handler): the prompt on stdin as stream-json, permission
/// prompts routed to the host over stdio.
pub const CONTROL_FLAGS: &[&str] = &["--input-format", "stream-json", "--permission-prompt-tool", "stdio"];

/// The host side of Claude Code's control protocol for one run.
///
/// * Opening: an `initialize` control request, then the prompt as a stream-json user message.
/// * `control_request` / `can_use_tool` from the CLI: an [`ApprovalRequest`] (tool name,
///   `tool_use_id` as the tool call id, input) to the run's handler, answered with a
///   `control_response`: `{behavior: "allow", updatedInput: <input>}` or `{behavior: "deny",
///   message: <reason>}`. A handler error denies with the error's message.
/// * Any other `control_request` subtype (`hook_callback`, `mcp_message`: nothing the adapter
///   registered) gets an error `control_response`.
/// * `control_response` (the CLI's answer to `initialize` / `interrupt`) and
///   `control_cancel_request` lines are the dialog's: the normalizer never sees them, so the
///   events are those of the one-shot mode.
/// * The `result` line closes stdin (the CLI then exits).
/// * Cancellation: an `interrupt` control request.
///
/// ```
/// use asm_core::{Run, RunInput, Session};
/// use asm_ports::ExecuteRequest;
/// use asm_provider_claude::ControlDialog;
/// use asm_provider_cli::StdinDialog;
/// # #[derive(Debug)] struct Allow;
/// # #[async_trait::async_trait] impl asm_ports::ApprovalHandler for Allow {
/// #     async fn decide(&self, _: &asm_ports::ApprovalRequest) -> asm_core::Result<asm_ports::ApprovalVerdict> {
/// #         Ok(asm_ports::ApprovalVerdict::new(asm_ports::ApprovalDecision::AllowOnce, "test"))
/// #     }
/// # }
/// let session = Session::new("agent").unwrap();
/// let run = Run::new(session.id.clone(), RunInput::user("hi"));
/// let mut request = ExecuteRequest::new(session, run);
/// request.approvals = Some(std::sync::Arc::new(Allow));
/// let mut dialog = ControlDialog::for_request(&request).unwrap();
/// let opening = dialog.opening();
/// assert!(opening[0].contains(r#""subtype":"initialize""#));
/// assert!(opening[1].contains(r#""type":"user""#));
/// ```
#[derive(Debug)]
pub struct ControlDialog {
    approvals: DynApprovalHandler,
    session_id: SessionId,
    run_id: RunId,
    prompt: String,
    interrupts: u32,
}

impl ControlDialog {
    /// The dialog of `request`; `None` without an approval handler (the run is one-shot).
    pub fn for_request(request: &ExecuteRequest) -> Option<Self> {
        let approvals = request.approvals.clone()?;
        Some(Self {
            approvals,
            session_id: request.session.id.clone(),
            run_id: request.run.id.clone(),
            prompt: render_prompt(request),
            interrupts: 0,
        })
    }

    async fn can_use_tool(&self, request_id: &Value, body: &Value) -> String {
        let tool_name = body.get("tool_name").and_then(Value::as_str).unwrap_or_default();
        let input = body.get("input").cloned().unwrap_or(Value::Null);
        let mut approval =
            ApprovalRequest::new(self.session_id.clone(), self.run_id.clone(), crate::PROVIDER_NAME, tool_name)
                .tool_input(input.clone());
        if let Some(id) = body.get("tool_use_id").and_then(Value::as_str) {
            approval = approval.tool_call_id(id);
        }
        let decided = self.approvals.decide(&approval).await;
        tracing::debug!(tool_name, approval_id = %approval.id, ok = decided.is_ok(), "claude tool approval decided");
        control_success(request_id, &permission_response(decided, &input))
    }
}

/// The `response` of a `can_use_tool` answer for a verdict (or a handler error: a denial).
fn permission_response(decided: asm_core::Result<ApprovalVerdict>, input: &Value) -> Value {
    match decided {
        Ok(v) if v.decision.allows() => json!({"behavior": "allow", "updatedInput": input}),
        Ok(v) => {
            let message = v.reason.unwrap_or_else(|| format!("denied by {}", v.decided_by));
            json!({"behavior": "deny", "message": message})
        }
        Err(e) => json!({"behavior": "deny", "message": format!("approval failed: {}", e.message())}),
    }
}

fn control_success(request_id: &Value, response: &Value) -> String {
    json!({"type": "control_response", "response": {"subtype": "success", "request_id": request_id, "response": response}})
        .to_string()
}

fn control_error(request_id: &Value, error: &str) -> String {
    json!({"type": "control_response", "response": {"subtype": "error", "request_id": request_id, "error": error}})
        .to_string()
}

/// A `control_request` line written by the host.
fn control_request(request_id: &str, request: &Value) -> String {
    json!({"type": "control_request", "request_id": request_id, "request": request}).to_string()
}

/// The line's `type`, read without parsing lines that cannot be control lines or the result.
fn line_type(line: &str) -> Option<(String, Value)> {
    if !line.contains("\"control_") && !line.contains("\"result\"") {
        return None;
    }
    let value: Value = serde_json::from_str(line).ok()?;
    let kind = value.get("type")?.as_str()?.to_owned();
    Some((kind, value))
}

#[async_trait]
impl StdinDialog for ControlDialog {
    fn opening(&mut self) -> Vec<String> {
        vec![
            control_request(INITIALIZE_REQUEST_ID, &json!({"subtype": "initialize", "hooks": null})),
            asm_anthropic_wire::stdin_message(&self.prompt).trim_end().to_owned(),
        ]
    }

    async fn on_line(&mut self, line: &str) -> asm_core::Result<DialogStep> {
        let Some((kind, value)) = line_type(line) else { return Ok(DialogStep::pass()) };
        Ok(match kind.as_str() {
            "control_request" => {
                let request_id = value.get("request_id").cloned().unwrap_or(Value::Null);
                let body = value.get("request").cloned().unwrap_or(Value::Null);
                match body.get("subtype").and_then(Value::as_str) {
                    Some("can_use_tool") => DialogStep::consumed().reply(self.can_use_tool(&request_id, &body).await),
                    other => {
                        tracing::debug!(subtype = ?other, "unsupported claude control request");
                        let error = format!("unsupported control request subtype {:?}", other.unwrap_or_default());
                        DialogStep::consumed().reply(control_error(&request_id, &error))
                    }
                }
            }
            "control_response" => {
                let response = &value["response"];
                if response.get("subtype").and_then(Value::as_str) == Some("error") {
                    tracing::warn!(request_id = ?response.get("request_id"), error = ?response.get("error"), "claude refused a control request");
                }
                DialogStep::consumed()
            }
            "control_cancel_request" => DialogStep::consumed(),
            "result" => DialogStep::pass().close_stdin(),
            _ => DialogStep::pass(),
        })
    }

    fn interrupt(&mut self) -> Vec<String> {
        self.interrupts += 1;
        let id = format!("{INTERRUPT_REQUEST_ID}_{}", self.interrupts);
        vec![control_request(&id, &json!({"subtype": "interrupt"}))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asm_ports::ApprovalDecision;

    #[test]
    fn verdicts_map_to_behaviors() {
        let input = json!({"command": "echo hi"});
        let allow = permission_response(Ok(ApprovalVerdict::new(ApprovalDecision::AllowAlways, "u")), &input);
        assert_eq!(allow, json!({"behavior": "allow", "updatedInput": input}));
        let deny = permission_response(Ok(ApprovalVerdict::new(ApprovalDecision::DenyOnce, "policy")), &Value::Null);
        assert_eq!(deny, json!({"behavior": "deny", "message": "denied by policy"}));
        let deny = permission_response(
            Ok(ApprovalVerdict::new(ApprovalDecision::DenyAlways, "u").reason("no shell")),
            &Value::Null,
        );
        assert_eq!(deny["message"], "no shell");
        let failed =
            permission_response(Err(asm_core::Error::new(asm_core::ErrorCode::InternalError, "boom")), &Value::Null);
        assert_eq!(failed["behavior"], "deny");
    }

    #[test]
    fn only_control_and_result_lines_are_parsed() {
        assert!(line_type(r#"{"type":"assistant","message":{}}"#).is_none());
        assert_eq!(
            line_type(r#"{"type":"control_response","response":{}}"#).map(|t| t.0).as_deref(),
            Some("control_response")
        );
        assert_eq!(line_type(r#"{"type":"result","subtype":"success"}"#).map(|t| t.0).as_deref(), Some("result"));
    }
}
