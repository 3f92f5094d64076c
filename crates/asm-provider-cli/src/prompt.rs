//! The prompt a CLI is given: the one transcript renderer of every CLI adapter, the native
//! resume handle, and a prompt argument that cannot be taken for a flag.

use asm_core::{Message, Role, Transcript};
use asm_ports::ExecuteRequest;
use serde_json::Value;

/// The native resume handle of `request`, if it can be passed to a CLI: trimmed, non-empty and
/// not starting with `-` (which the CLI would take for a flag). Without one the run replays its
/// transcript instead ([`render_prompt`]).
///
/// ```
/// use asm_core::{Run, RunInput, Session};
/// use asm_ports::ExecuteRequest;
/// use asm_provider_cli::resume_handle;
/// let session = Session::new("agent").unwrap();
/// let request = ExecuteRequest::new(session.clone(), Run::new(session.id.clone(), RunInput::user("hi")));
/// assert_eq!(resume_handle(&request.clone().resume(" T-1 ")), Some("T-1"));
/// assert_eq!(resume_handle(&request.clone().resume("--help")), None);
/// assert_eq!(resume_handle(&request), None);
/// ```
pub fn resume_handle(request: &ExecuteRequest) -> Option<&str> {
    request.resume.as_deref().map(str::trim).filter(|h| !h.is_empty() && !h.starts_with('-'))
}

/// The prompt given to a CLI for `request`.
///
/// * Resumed natively ([`resume_handle`]), or without a transcript: only the new input, its
///   user messages joined by blank lines ([`RunInput::prompt`](asm_core::RunInput::prompt)), or
///   all its messages when none is from the user.
/// * Otherwise the transcript replayed ([`render_transcript`]), then the new input as
///   `<role>: <content>` lines.
///
/// ```
/// use asm_core::{Message, Role, Run, RunInput, Session, Transcript};
/// use asm_ports::ExecuteRequest;
/// use asm_provider_cli::render_prompt;
/// let session = Session::new("agent").unwrap();
/// let mut t = Transcript::new(session.id.clone());
/// t.messages.push(Message::new(Role::User, "hi"));
/// t.messages.push(Message::new(Role::Assistant, "hello"));
/// let run = Run::new(session.id.clone(), RunInput::user("again"));
/// let request = ExecuteRequest::new(session, run).transcript(t);
/// assert_eq!(render_prompt(&request), "user: hi\nassistant: hello\nuser: again");
/// assert_eq!(render_prompt(&request.resume("thread-1")), "again");
/// ```
pub fn render_prompt(request: &ExecuteRequest) -> String {
    let input = &request.run.input;
    let transcript = request.transcript.as_ref().filter(|t| !t.messages.is_empty());
    match (resume_handle(request), transcript) {
        (None, Some(t)) => {
            let mut lines = render_transcript(t);
            lines.extend(input.messages.iter().map(|m| format!("{}: {}", m.role.as_str(), m.content)));
            lines.join("\n")
        }
        _ => {
            let prompt = input.prompt();
            if prompt.is_empty() {
                input.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n\n")
            } else {
                prompt
            }
        }
    }
}

/// A transcript as prompt lines (spec 9.1), one or two per message:
///
/// * text: `<role>: <content>` (empty content: no line);
/// * a tool call (an assistant message with a `tool_name`): `tool_call(<id>): <name> <input>`,
///   the input as compact JSON (`{}` when there is none), after the message's text line if it
///   has text too;
/// * a tool result (role `tool`): `tool_result(<id>): <name> <output>`, a string output as it
///   is, anything else as compact JSON, the message content when there is no output.
///
/// A missing id or name is `unknown`.
///
/// ```
/// use asm_core::{Message, Role, Transcript};
/// let mut t = Transcript::new(asm_core::SessionId::new());
/// let mut call = Message::new(Role::Assistant, "");
/// call.tool_call_id = Some("t1".into());
/// call.tool_name = Some("bash".into());
/// t.messages.push(call);
/// assert_eq!(asm_provider_cli::render_transcript(&t), ["tool_call(t1): bash {}"]);
/// ```
pub fn render_transcript(transcript: &Transcript) -> Vec<String> {
    let mut lines = Vec::with_capacity(transcript.messages.len());
    for message in &transcript.messages {
        render_message(message, &mut lines);
    }
    lines
}

fn render_message(m: &Message, lines: &mut Vec<String>) {
    let id = m.tool_call_id.as_deref().unwrap_or("unknown");
    let name = m.tool_name.as_deref().unwrap_or("unknown");
    if m.role == Role::Tool {
        let output = match &m.tool_output {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => m.content.clone().unwrap_or_default(),
        };
        lines.push(format!("tool_result({id}): {name} {output}"));
        return;
    }
    if let Some(content) = m.content.as_ref().filter(|c| !c.is_empty()) {
        lines.push(format!("{}: {content}", m.role.as_str()));
    }
    if m.role == Role::Assistant && m.tool_name.is_some() {
        let input = m.tool_input.as_ref().map_or_else(|| "{}".to_owned(), |i| Value::Object(i.clone()).to_string());
        lines.push(format!("tool_call({id}): {name} {input}"));
    }
}

/// `prompt` as one argument that can never be taken for a flag or for one of the `reserved`
/// words (a CLI's subcommand names): such a prompt gets a leading space.
///
/// ```
/// use asm_provider_cli::prompt_arg;
/// assert_eq!(prompt_arg("--help me".into(), &[]), " --help me");
/// assert_eq!(prompt_arg("resume".into(), &["resume"]), " resume");
/// assert_eq!(prompt_arg("resume the work".into(), &["resume"]), "resume the work");
/// ```
pub fn prompt_arg(prompt: String, reserved: &[&str]) -> String {
    if prompt.starts_with('-') || reserved.contains(&prompt.as_str()) { format!(" {prompt}") } else { prompt }
}
