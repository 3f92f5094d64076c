//! [`Scenario`]: what a fake server answers, chosen per request by a marker in the prompt.

use std::fmt;

use serde_json::Value;

/// The final text of the [`Scenario::Text`] reply (the same text the captured fixtures show).
pub const TEXT_REPLY: &str = "Hello from the fake model!";

/// The shell command the [`Scenario::ToolUse`] reply asks the CLI to run.
pub const TOOL_COMMAND: &str = "echo hi";

/// The file [`WRITE_TOOL_COMMAND`] creates (relative to the CLI's working directory).
pub const WRITE_TOOL_FILE: &str = "asm-tool-write.txt";

/// The shell command the [`Scenario::ToolWrite`] reply asks the CLI to run: creates
/// [`WRITE_TOOL_FILE`] and prints `wrote`. Unlike [`TOOL_COMMAND`] it is not on Codex's list
/// of known-safe commands, so `approval_policy = "untrusted"` asks before running it.
pub const WRITE_TOOL_COMMAND: &str = "touch asm-tool-write.txt && echo wrote";

/// The text streamed, one delta per pause, by [`Scenario::Slow`]: `chunk0 chunk1 ...`.
pub const SLOW_CHUNK_PREFIX: &str = "chunk";

/// What a fake server answers to one model request.
///
/// The server picks the scenario from the newest user message of the request: a marker
/// `[asm-fake:<name>]` (see [`Scenario::marker`]) selects it, no marker means the server's
/// default ([`Scenario::Text`] unless changed). When the newest input is a tool result, the
/// server always answers with the closing text of the tool round trip
/// ([`tool_followup_text`]).
///
/// ```
/// use asm_integration::Scenario;
/// assert_eq!(Scenario::HttpError(429).marker(), "[asm-fake:http429]");
/// assert_eq!(Scenario::find_marker("please [asm-fake:tool] now"), Some(Scenario::ToolUse));
/// assert_eq!(Scenario::parse("slow"), Some(Scenario::Slow));
/// assert_eq!(Scenario::parse(&Scenario::ToolWrite.name()), Some(Scenario::ToolWrite));
/// assert_eq!(Scenario::find_marker("no marker"), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scenario {
    /// One streamed text message, [`TEXT_REPLY`].
    Text,
    /// A short text plus one tool call running [`TOOL_COMMAND`] (Claude: `Bash`, Codex:
    /// `exec_command`); the follow-up request with the tool result gets
    /// [`tool_followup_text`].
    ToolUse,
    /// Like [`ToolUse`](Self::ToolUse) but the command is [`WRITE_TOOL_COMMAND`] (a command
    /// that changes the workspace). Only the OpenAI Responses server (Codex `exec_command`)
    /// knows it; the other servers answer it like [`Text`](Self::Text).
    ToolWrite,
    /// Text deltas (`chunk0 `, `chunk1 `, ...) every [`SLOW_INTERVAL`](crate::SLOW_INTERVAL)
    /// for about a minute: for cancelling mid-stream. The server notices the client leaving.
    Slow,
    /// An HTTP error with the provider's JSON error body and message `fake <status> error`.
    HttpError(u16),
    /// A stream that fails after it started (Anthropic `error` event, OpenAI
    /// `response.failed` with message `fake failure from server`).
    StreamFailed,
}

impl Scenario {
    /// The name used in markers: `text`, `tool`, `tool-write`, `slow`, `http<status>`, `failed`.
    pub fn name(self) -> String {
        match self {
            Scenario::Text => "text".to_owned(),
            Scenario::ToolUse => "tool".to_owned(),
            Scenario::ToolWrite => "tool-write".to_owned(),
            Scenario::Slow => "slow".to_owned(),
            Scenario::HttpError(status) => format!("http{status}"),
            Scenario::StreamFailed => "failed".to_owned(),
        }
    }

    /// The scenario called `name` (see [`name`](Self::name)).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "text" => Some(Scenario::Text),
            "tool" => Some(Scenario::ToolUse),
            "tool-write" => Some(Scenario::ToolWrite),
            "slow" => Some(Scenario::Slow),
            "failed" => Some(Scenario::StreamFailed),
            other => {
                let status: u16 = other.strip_prefix("http")?.parse().ok()?;
                (100..=599).contains(&status).then_some(Scenario::HttpError(status))
            }
        }
    }

    /// The marker that selects this scenario when it appears in the prompt.
    pub fn marker(self) -> String {
        format!("{MARKER_OPEN}{}]", self.name())
    }

    /// The last valid marker in `text`.
    pub fn find_marker(text: &str) -> Option<Self> {
        text.rmatch_indices(MARKER_OPEN).find_map(|(at, _)| {
            let rest = &text[at + MARKER_OPEN.len()..];
            let end = rest.find(']')?;
            Scenario::parse(&rest[..end])
        })
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

const MARKER_OPEN: &str = "[asm-fake:";

/// The closing text the fake sends after a tool result: `The command printed: <output>`,
/// where the output is the tool result text (for Codex the part after its `Output:` line),
/// trimmed.
///
/// ```
/// use asm_integration::tool_followup_text;
/// assert_eq!(tool_followup_text("hi\n"), "The command printed: hi");
/// assert_eq!(tool_followup_text("Chunk ID: 1\nProcess exited with code 0\nOutput:\nhi\n"), "The command printed: hi");
/// ```
pub fn tool_followup_text(tool_output: &str) -> String {
    let output = tool_output.rsplit_once("Output:\n").map_or(tool_output, |(_, after)| after);
    format!("The command printed: {}", output.trim())
}

/// What the server decided to answer (a scenario, or the end of a tool round trip).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Scenario(Scenario),
    ToolFollowup(String),
}

impl Reply {
    pub(crate) fn name(&self) -> String {
        match self {
            Reply::Scenario(s) => s.name(),
            Reply::ToolFollowup(_) => "tool_followup".to_owned(),
        }
    }
}

/// The text of a message `content` in either API's request: a string, or the `text` of its
/// content blocks (Anthropic) or parts (OpenAI), one a line.
pub(crate) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}
