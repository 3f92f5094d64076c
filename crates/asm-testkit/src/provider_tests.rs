//! Small builders and readers the CLI provider crates' tests (claude, codex, amp) share:
//! the request they build argv from, a transcript with one tool call, the non-raw event
//! kinds a prepared contract run recorded.

use asm_core::{EventKind, Message, Role, Run, RunInput, Session, SessionId, Transcript};
use asm_ports::ExecuteRequest;

use crate::adapter_contract::Prepared;

/// A request for a fresh session (named "agent") whose run's user input is `prompt`.
///
/// # Panics
/// Never for the fixed session name.
#[must_use]
#[allow(clippy::unwrap_used)]
pub fn request(prompt: &str) -> ExecuteRequest {
    let session = Session::new("agent").unwrap();
    let run = Run::new(session.id.clone(), RunInput::user(prompt));
    ExecuteRequest::new(session, run)
}

/// [`request`] with the per-run `options` (a JSON object).
///
/// # Panics
/// If `options` is not a JSON object.
#[must_use]
pub fn request_with_options(prompt: &str, options: serde_json::Value) -> ExecuteRequest {
    let serde_json::Value::Object(options) = options else { panic!("an object") };
    request(prompt).options(options)
}

/// A transcript of a user question ("first question"), the assistant's answer ("first
/// answer"), one tool call `call_id` of `tool` (with `input`, if any) and its result `output`.
#[must_use]
pub fn transcript_with_one_tool_call(
    call_id: &str,
    tool: &str,
    input: Option<serde_json::Map<String, serde_json::Value>>,
    output: &str,
) -> Transcript {
    let mut t = Transcript::new(SessionId::new());
    t.messages.push(Message::new(Role::User, "first question"));
    t.messages.push(Message::new(Role::Assistant, "first answer"));
    let mut call = Message::new(Role::Assistant, "");
    call.content = None;
    call.tool_call_id = Some(call_id.into());
    call.tool_name = Some(tool.into());
    call.tool_input = input;
    t.messages.push(call);
    let mut result = Message::new(Role::Tool, "");
    result.tool_call_id = Some(call_id.into());
    result.tool_name = Some(tool.into());
    result.tool_output = Some(output.into());
    t.messages.push(result);
    t
}

/// The kinds of the events `p`'s sink recorded, in order, leaving out the raw ones
/// (metadata `"raw": true`).
#[must_use]
pub fn non_raw_kinds(p: &Prepared) -> Vec<EventKind> {
    p.recorded
        .events()
        .into_iter()
        .filter(|e| e.metadata.get("raw") != Some(&serde_json::Value::Bool(true)))
        .map(|e| e.kind)
        .collect()
}
