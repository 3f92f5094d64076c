//! [`AmpOptions`], [`build_argv`], [`build_env`] and prompt rendering.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use asm_core::{Role, StderrLimits, Transcript};
use asm_ports::ExecuteRequest;
use asm_provider_cli::{CliEnv, CliLimits, PermissionMode};

/// Environment variable holding the Amp API key.
pub const API_KEY_ENV: &str = "AMP_API_KEY";
/// Environment variable holding the Amp server URL (default `https://ampcode.com/`).
pub const SERVER_URL_ENV: &str = "AMP_URL";

/// Configuration of an [`AmpAdapter`](crate::AmpAdapter).
///
/// `Debug` never prints the API key.
///
/// ```
/// use asm_provider_amp::AmpAdapter;
/// use asm_provider_cli::PermissionMode;
/// let adapter = AmpAdapter::builder()
///     .mode("smart")
///     .permission_mode(PermissionMode::FullAuto)
///     .api_key("sgamp_secret")
///     .build();
/// assert_eq!(adapter.options().mode.as_deref(), Some("smart"));
/// assert!(!format!("{:?}", adapter.options()).contains("sgamp_secret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct AmpOptions {
    /// The CLI: a path, or a name looked up in PATH (default `amp`).
    pub cli_path: PathBuf,
    /// `--mode` (agent mode such as `smart`, `rush`, `deep`; the CLI's default when unset).
    pub mode: Option<String>,
    /// The model label recorded in the outcome. Amp picks the model server-side from the mode;
    /// this is **not** passed to the CLI (there is no documented model flag).
    pub model: Option<String>,
    /// Working directory of the CLI (default: inherited).
    pub cwd: Option<PathBuf>,
    /// Permission mode (spec 9.6): `full_auto` and `dangerously_skip_permissions` pass
    /// `--dangerously-allow-all`; `accept_edits` and `plan` have no Amp equivalent (no flag).
    pub permission_mode: PermissionMode,
    /// `--settings-file`: Amp's tool permissions (`amp.permissions`, `amp.tools.disable`) live
    /// in its settings, not in command-line flags.
    pub settings_file: Option<PathBuf>,
    /// `--stream-json-thinking`: include thinking blocks (they are not normalized).
    pub thinking: bool,
    /// Send the prompt as a stream-json user message on stdin (`--stream-json-input`) instead
    /// of the `-x` argument.
    pub stream_input: bool,
    /// Extra arguments, inserted just before `-x`.
    pub extra_args: Vec<String>,
    /// The child's environment (default [`CliEnv::minimal`]).
    pub env: CliEnv,
    /// `AMP_API_KEY`, set explicitly in the child's environment.
    pub api_key: Option<String>,
    /// `AMP_URL`.
    pub server_url: Option<String>,
    /// Fail before spawning when no `AMP_API_KEY` reaches the child (default false: a key
    /// stored by `amp login` under `HOME` also works). Without a key the CLI starts an
    /// interactive login flow, which the adapter detects and stops either way.
    pub require_api_key: bool,
    /// Per-run time limit (combined with the request deadline: the earlier wins).
    pub timeout: Option<Duration>,
    /// Subprocess limits.
    pub limits: CliLimits,
    /// Bounds of stderr stored in errors.
    pub stderr_limits: StderrLimits,
}

impl Default for AmpOptions {
    fn default() -> Self {
        Self {
            cli_path: PathBuf::from("amp"),
            mode: None,
            model: None,
            cwd: None,
            permission_mode: PermissionMode::Default,
            settings_file: None,
            thinking: false,
            stream_input: false,
            extra_args: Vec::new(),
            env: CliEnv::minimal(),
            api_key: None,
            server_url: None,
            require_api_key: false,
            timeout: None,
            limits: CliLimits::default(),
            stderr_limits: StderrLimits::default(),
        }
    }
}

impl fmt::Debug for AmpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut env = self.env.clone();
        if env.vars.contains_key(API_KEY_ENV) {
            env = env.set(API_KEY_ENV, "<redacted>");
        }
        f.debug_struct("AmpOptions")
            .field("cli_path", &self.cli_path)
            .field("mode", &self.mode)
            .field("model", &self.model)
            .field("cwd", &self.cwd)
            .field("permission_mode", &self.permission_mode)
            .field("settings_file", &self.settings_file)
            .field("thinking", &self.thinking)
            .field("stream_input", &self.stream_input)
            .field("extra_args", &self.extra_args)
            .field("env", &env)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("server_url", &self.server_url)
            .field("require_api_key", &self.require_api_key)
            .field("timeout", &self.timeout)
            .field("limits", &self.limits)
            .field("stderr_limits", &self.stderr_limits)
            .finish()
    }
}

impl AmpOptions {
    /// Whether the child gets an `AMP_API_KEY` (from [`api_key`](Self::api_key), an explicit
    /// variable, or an inherited one that is set).
    pub fn has_api_key(&self) -> bool {
        build_env(self).resolve().iter().any(|(k, v)| k == API_KEY_ENV && !v.is_empty())
    }
}

/// `--dangerously-allow-all` for the permissive modes (spec 9.6), nothing otherwise.
///
/// ```
/// use asm_provider_amp::permission_flag;
/// use asm_provider_cli::PermissionMode;
/// assert_eq!(permission_flag(PermissionMode::FullAuto), Some("--dangerously-allow-all"));
/// assert_eq!(permission_flag(PermissionMode::Plan), None);
/// ```
pub fn permission_flag(mode: PermissionMode) -> Option<&'static str> {
    match mode {
        PermissionMode::FullAuto | PermissionMode::DangerouslySkipPermissions => Some("--dangerously-allow-all"),
        _ => None,
    }
}

/// The native resume handle of `request` (an Amp thread id, `T-...`), if it can be passed to
/// `amp threads continue`: empty handles and handles starting with `-` (which the CLI would
/// take for a flag) are ignored, and the transcript is replayed instead.
pub fn resume_thread(request: &ExecuteRequest) -> Option<&str> {
    request.resume.as_deref().map(str::trim).filter(|h| !h.is_empty() && !h.starts_with('-'))
}

/// The prompt given to the CLI for `request`: when resuming natively only the new input;
/// otherwise, with a transcript, the transcript rendered as lines (`<role>: <content>`,
/// `tool_call(<id>): <name> <input>`, `tool_result(<id>): <name> <output>`) followed by the new
/// input as `<role>: <content>` lines; without a transcript the user messages joined by blank
/// lines.
///
/// ```
/// use asm_core::{Run, RunInput, Session};
/// use asm_ports::ExecuteRequest;
/// let session = Session::new("agent").unwrap();
/// let run = Run::new(session.id.clone(), RunInput::user("hi"));
/// assert_eq!(asm_provider_amp::render_prompt(&ExecuteRequest::new(session, run)), "hi");
/// ```
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
    match (resume_thread(request), transcript) {
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

/// The stream-json user message written to stdin in [`AmpOptions::stream_input`] mode (the
/// shape `--stream-json-input` reads).
///
/// ```
/// let line = asm_provider_amp::stdin_message("hi");
/// let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
/// assert_eq!(v["message"]["content"][0]["text"], "hi");
/// ```
pub fn stdin_message(prompt: &str) -> String {
    let msg = serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": prompt}]}
    });
    format!("{msg}\n")
}

/// The argv (without the program) for one run:
/// `[threads continue <T-id>] [--dangerously-allow-all] [--mode M] [--settings-file F]
/// [extra args...] -x <prompt> --stream-json [--stream-json-thinking]`, or in stream-input
/// mode `... -x --stream-json [--stream-json-thinking] --stream-json-input` (prompt on stdin).
///
/// The prompt follows `-x` directly (the CLI only takes the message there, as in the captured
/// runs `-x "hello" --stream-json`); a prompt starting with `-` gets a leading space so it is
/// never taken for a flag. A run resumes natively with `amp threads continue <thread id>` when
/// the request carries a usable handle ([`resume_thread`]); otherwise the transcript is
/// replayed in the prompt ([`render_prompt`]).
///
/// ```
/// use asm_core::{Run, RunInput, Session};
/// use asm_ports::ExecuteRequest;
/// use asm_provider_amp::{AmpOptions, build_argv};
/// let session = Session::new("agent").unwrap();
/// let run = Run::new(session.id.clone(), RunInput::user("hi"));
/// let request = ExecuteRequest::new(session, run);
/// assert_eq!(build_argv(&AmpOptions::default(), &request), ["-x", "hi", "--stream-json"]);
/// let argv = build_argv(&AmpOptions::default(), &request.resume("T-1"));
/// assert_eq!(argv, ["threads", "continue", "T-1", "-x", "hi", "--stream-json"]);
/// ```
pub fn build_argv(options: &AmpOptions, request: &ExecuteRequest) -> Vec<String> {
    let mut argv = Vec::new();
    if let Some(thread) = resume_thread(request) {
        argv.extend(["threads", "continue", thread].map(String::from));
    }
    if let Some(flag) = permission_flag(options.permission_mode) {
        argv.push(flag.to_owned());
    }
    if let Some(mode) = options.mode.as_ref().filter(|m| !m.is_empty()) {
        argv.push("--mode".to_owned());
        argv.push(mode.clone());
    }
    if let Some(file) = &options.settings_file {
        argv.push("--settings-file".to_owned());
        argv.push(file.display().to_string());
    }
    argv.extend(options.extra_args.iter().cloned());
    argv.push("-x".to_owned());
    if !options.stream_input {
        let prompt = render_prompt(request);
        argv.push(if prompt.starts_with('-') { format!(" {prompt}") } else { prompt });
    }
    argv.push("--stream-json".to_owned());
    if options.thinking {
        argv.push("--stream-json-thinking".to_owned());
    }
    if options.stream_input {
        argv.push("--stream-json-input".to_owned());
    }
    argv
}

/// The environment for one run: [`AmpOptions::env`], plus `AMP_API_KEY` and `AMP_URL` when
/// configured (they win over the same variables in `env`).
///
/// ```
/// use asm_provider_amp::{AmpAdapter, build_env};
/// use asm_provider_cli::CliEnv;
/// let o = AmpAdapter::builder().env(CliEnv::empty()).api_key("k").server_url("http://127.0.0.1:9/").build();
/// let vars = build_env(o.options()).resolve();
/// assert_eq!(vars.len(), 2);
/// ```
pub fn build_env(options: &AmpOptions) -> CliEnv {
    let mut env = options.env.clone();
    if let Some(key) = &options.api_key {
        env = env.set(API_KEY_ENV, key.clone());
    }
    if let Some(url) = &options.server_url {
        env = env.set(SERVER_URL_ENV, url.clone());
    }
    env
}
