//! [`ClaudeOptions`], the builder and [`build_argv`].

use std::path::PathBuf;
use std::time::Duration;

use asm_core::{Role, StderrLimits, Transcript};
use asm_ports::ExecuteRequest;
use asm_provider_cli::{CliEnv, CliLimits, OfflineSwitches, PermissionMode};

/// Configuration of a [`ClaudeAdapter`](crate::ClaudeAdapter).
///
/// ```
/// use asm_provider_claude::ClaudeAdapter;
/// use asm_provider_cli::PermissionMode;
/// let adapter = ClaudeAdapter::builder()
///     .model("claude-sonnet-4-5")
///     .permission_mode(PermissionMode::Plan)
///     .allowed_tools(["Bash(git log:*)", "Read"])
///     .max_turns(5)
///     .build();
/// assert_eq!(adapter.options().max_turns, Some(5));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClaudeOptions {
    /// The CLI: a path, or a name looked up in PATH (default `claude`).
    pub cli_path: PathBuf,
    /// `--model`.
    pub model: Option<String>,
    /// Working directory of the CLI (default: inherited).
    pub cwd: Option<PathBuf>,
    /// `--system-prompt` (replaces the default prompt).
    pub system_prompt: Option<String>,
    /// `--append-system-prompt`.
    pub append_system_prompt: Option<String>,
    /// `--max-turns`.
    pub max_turns: Option<u32>,
    /// `--permission-mode` (spec 9.6 mapping, [`PermissionMode::claude_flag`]).
    pub permission_mode: PermissionMode,
    /// `--allowedTools` (one comma-separated argument).
    pub allowed_tools: Vec<String>,
    /// `--disallowedTools` (one comma-separated argument).
    pub disallowed_tools: Vec<String>,
    /// `--include-partial-messages`: stream text deltas.
    pub partial_messages: bool,
    /// Send the prompt as a stream-json user message on stdin (`--input-format stream-json`)
    /// instead of an argument.
    pub stream_input: bool,
    /// Extra arguments, inserted before the resume flag.
    pub extra_args: Vec<String>,
    /// The child's environment (default [`CliEnv::minimal`]).
    pub env: CliEnv,
    /// Set [`OfflineSwitches::ClaudeCode`] (default true).
    pub offline: bool,
    /// `CLAUDE_CODE_MAX_RETRIES` (the CLI's default is 10 with long backoff).
    pub max_retries: Option<u32>,
    /// Per-run time limit (combined with the request deadline: the earlier wins).
    pub timeout: Option<Duration>,
    /// Subprocess limits.
    pub limits: CliLimits,
    /// Bounds of stderr stored in errors.
    pub stderr_limits: StderrLimits,
}

impl Default for ClaudeOptions {
    fn default() -> Self {
        Self {
            cli_path: PathBuf::from("claude"),
            model: None,
            cwd: None,
            system_prompt: None,
            append_system_prompt: None,
            max_turns: None,
            permission_mode: PermissionMode::Default,
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            partial_messages: false,
            stream_input: false,
            extra_args: Vec::new(),
            env: CliEnv::minimal(),
            offline: true,
            max_retries: None,
            timeout: None,
            limits: CliLimits::default(),
            stderr_limits: StderrLimits::default(),
        }
    }
}

/// The prompt given to the CLI for `request`: with a native resume handle only the new input;
/// otherwise, when a transcript is present, the transcript rendered as lines (spec 9.1:
/// `<role>: <content>`, `tool_call(<id>): <name> <input>`, `tool_result(<id>): <name> <output>`)
/// followed by the new input as `<role>: <content>` lines; without a transcript the user
/// messages joined by blank lines ([`RunInput::prompt`](asm_core::RunInput::prompt)).
pub fn render_prompt(request: &ExecuteRequest) -> String {
    let input = &request.run.input;
    let current = {
        let p = input.prompt();
        if p.is_empty() {
            input.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n\n")
        } else {
            p
        }
    };
    let transcript = request.transcript.as_ref().filter(|t| !t.messages.is_empty());
    match (request.resume.as_ref(), transcript) {
        (None, Some(t)) => {
            let mut lines = render_transcript(t);
            lines.extend(input.messages.iter().map(|m| format!("{}: {}", m.role.as_str(), m.content)));
            lines.join("\n")
        }
        _ => current,
    }
}

fn render_transcript(t: &Transcript) -> Vec<String> {
    t.messages
        .iter()
        .filter_map(|m| {
            let id = m.tool_call_id.as_deref().unwrap_or("unknown");
            let name = m.tool_name.as_deref().unwrap_or("unknown");
            if m.role == Role::Assistant && m.tool_name.is_some() && m.content.is_none() {
                let input = m
                    .tool_input
                    .as_ref()
                    .map_or_else(|| "{}".to_owned(), |i| serde_json::Value::Object(i.clone()).to_string());
                Some(format!("tool_call({id}): {name} {input}"))
            } else if m.role == Role::Tool {
                let output = match &m.tool_output {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => m.content.clone().unwrap_or_default(),
                };
                Some(format!("tool_result({id}): {name} {output}"))
            } else {
                m.content.as_ref().filter(|c| !c.is_empty()).map(|c| format!("{}: {c}", m.role.as_str()))
            }
        })
        .collect()
}

/// The stream-json user message written to stdin in [`ClaudeOptions::stream_input`] mode.
pub fn stdin_message(prompt: &str) -> String {
    let msg = serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": prompt}]}
    });
    format!("{msg}\n")
}

/// The argv (without the program) for one run, in the order the captured runs used:
/// `-p <prompt> --output-format stream-json --verbose [--include-partial-messages]
/// [--input-format stream-json] [--model M] [--system-prompt S] [--append-system-prompt S]
/// [--max-turns N] [--permission-mode P] [--allowedTools a,b] [--disallowedTools c]
/// [extra args...] [--resume <session id> [--fork-session]]`.
///
/// A fork request ([`ExecuteRequest::fork`]) adds `--fork-session`: Claude Code then continues
/// the given session's history under a **new** session id (printed on the first line, the
/// `system/init`), and the given session stays as it was.
///
/// The prompt follows `-p` directly (as in the captured runs, so the variadic tool flags
/// cannot swallow it); a prompt starting with `-` gets a leading space so it is never taken
/// for a flag. In stream-input mode there is no prompt argument.
///
/// ```
/// use asm_core::{Run, RunInput, Session};
/// use asm_ports::ExecuteRequest;
/// use asm_provider_claude::{ClaudeOptions, build_argv};
/// let session = Session::new("agent").unwrap();
/// let run = Run::new(session.id.clone(), RunInput::user("hi"));
/// let request = ExecuteRequest::new(session, run).resume("abc");
/// let argv = build_argv(&ClaudeOptions::default(), &request);
/// assert_eq!(argv, ["-p", "hi", "--output-format", "stream-json", "--verbose", "--resume", "abc"]);
/// let fork = ExecuteRequest::new(request.session.clone(), request.run.clone()).fork_from("abc");
/// assert_eq!(build_argv(&ClaudeOptions::default(), &fork)[5..], ["--resume", "abc", "--fork-session"]);
/// ```
pub fn build_argv(options: &ClaudeOptions, request: &ExecuteRequest) -> Vec<String> {
    let mut argv = vec!["-p".to_owned()];
    if !options.stream_input {
        let prompt = render_prompt(request);
        argv.push(if prompt.starts_with('-') { format!(" {prompt}") } else { prompt });
    }
    argv.extend(["--output-format", "stream-json", "--verbose"].map(String::from));
    if options.partial_messages {
        argv.push("--include-partial-messages".to_owned());
    }
    if options.stream_input {
        argv.extend(["--input-format", "stream-json"].map(String::from));
    }
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            argv.push(name.to_owned());
            argv.push(v);
        }
    };
    flag("--model", options.model.clone());
    flag("--system-prompt", options.system_prompt.clone());
    flag("--append-system-prompt", options.append_system_prompt.clone());
    flag("--max-turns", options.max_turns.map(|n| n.to_string()));
    flag("--permission-mode", options.permission_mode.claude_flag().map(str::to_owned));
    flag("--allowedTools", (!options.allowed_tools.is_empty()).then(|| options.allowed_tools.join(",")));
    flag("--disallowedTools", (!options.disallowed_tools.is_empty()).then(|| options.disallowed_tools.join(",")));
    argv.extend(options.extra_args.iter().cloned());
    if let Some(id) = &request.resume {
        argv.push("--resume".to_owned());
        argv.push(id.clone());
        if request.fork {
            argv.push("--fork-session".to_owned());
        }
    }
    argv
}

/// The environment for one run: [`ClaudeOptions::env`], plus the offline switches and
/// `CLAUDE_CODE_MAX_RETRIES` when configured.
pub fn build_env(options: &ClaudeOptions) -> CliEnv {
    let mut env = options.env.clone();
    if options.offline {
        env = env.offline(OfflineSwitches::ClaudeCode);
    }
    if let Some(n) = options.max_retries {
        env = env.set("CLAUDE_CODE_MAX_RETRIES", n.to_string());
    }
    env
}
