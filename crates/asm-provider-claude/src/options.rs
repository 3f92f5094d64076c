//! [`ClaudeCli`] (Claude Code's own options), [`build_argv`] and [`build_env`].

use asm_ports::ExecuteRequest;
use asm_provider_cli::{CliEnv, PermissionMode, prompt_arg, render_prompt, resume_handle};

use crate::ClaudeOptions;

/// Environment switches that keep Claude Code from calling anything but the configured model
/// server (measured in `spec/provider-clis.md` section 1: with these set the CLI made no
/// connection to other hosts).
pub const OFFLINE_ENV: &[(&str, &str)] = &[
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_BUG_COMMAND", "1"),
];

/// The variables Claude Code reads credentials from: passed through from this process by
/// default ([`CliEnv::pass_auth`]). `ANTHROPIC_API_KEY` is sent as `x-api-key`,
/// `ANTHROPIC_AUTH_TOKEN` as a bearer token, `CLAUDE_CODE_OAUTH_TOKEN` is a subscription
/// token (`claude setup-token`).
pub const AUTH_ENV: &[&str] = &["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"];

/// The variable holding the CLI's API retry count (its default is 10 with long backoff).
pub const MAX_RETRIES_ENV: &str = "CLAUDE_CODE_MAX_RETRIES";

/// Claude Code's own options: [`ClaudeOptions::provider`], set with
/// [`ClaudeBuilderExt`](crate::ClaudeBuilderExt).
///
/// ```
/// use asm_provider_claude::{ClaudeAdapter, ClaudeBuilderExt, PermissionMode};
/// let adapter = ClaudeAdapter::builder()
///     .model("claude-sonnet-4-5")
///     .permission_mode(PermissionMode::Plan)
///     .allowed_tools(["Bash(git log:*)", "Read"])
///     .max_turns(5)
///     .partial_messages(true)
///     .build();
/// assert_eq!(adapter.options().max_turns, Some(5));
/// assert!(adapter.options().provider.partial_messages);
/// assert!(adapter.options().provider.offline);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClaudeCli {
    /// `--append-system-prompt`.
    pub append_system_prompt: Option<String>,
    /// `--include-partial-messages`: stream text deltas.
    pub partial_messages: bool,
    /// Send the prompt as a stream-json user message on stdin (`--input-format stream-json`)
    /// instead of an argument.
    pub stream_input: bool,
    /// Set [`OFFLINE_ENV`] (default true).
    pub offline: bool,
    /// [`MAX_RETRIES_ENV`].
    pub max_retries: Option<u32>,
}

impl Default for ClaudeCli {
    fn default() -> Self {
        Self {
            append_system_prompt: None,
            partial_messages: false,
            stream_input: false,
            offline: true,
            max_retries: None,
        }
    }
}

/// Claude Code `--permission-mode` value of a mode (spec 9.6): none, `acceptEdits`, `plan`,
/// `bypassPermissions`.
///
/// ```
/// use asm_provider_claude::{PermissionMode, permission_flag};
/// assert_eq!(permission_flag(PermissionMode::FullAuto), Some("bypassPermissions"));
/// assert_eq!(permission_flag(PermissionMode::Default), None);
/// ```
pub fn permission_flag(mode: PermissionMode) -> Option<&'static str> {
    match mode {
        PermissionMode::AcceptEdits => Some("acceptEdits"),
        PermissionMode::Plan => Some("plan"),
        PermissionMode::FullAuto | PermissionMode::DangerouslySkipPermissions => Some("bypassPermissions"),
        _ => None,
    }
}

/// The argv (without the program) for one run, in the order the captured runs used:
/// `-p <prompt> --output-format stream-json --verbose [--include-partial-messages]
/// [--input-format stream-json] [--model M] [--system-prompt S] [--append-system-prompt S]
/// [--max-turns N] [--permission-mode P] [--allowedTools a,b] [--disallowedTools c]
/// [extra args...] [--resume <session id> [--fork-session]]`.
///
/// With an approval handler on the run ([`ExecuteRequest::approvals`]) the prompt goes to
/// stdin and [`CONTROL_FLAGS`](crate::CONTROL_FLAGS) replace `--input-format stream-json`
/// (the control protocol, [`ControlDialog`](crate::ControlDialog)).
///
/// The options are the run's (per-run options already applied, see
/// [`CliOptions::for_run`](asm_provider_cli::CliOptions::for_run)). The prompt is
/// [`render_prompt`]: a transcript is replayed unless the run resumes natively
/// ([`resume_handle`]).
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
    let claude = &options.provider;
    let control = request.approvals.is_some();
    let mut argv = vec!["-p".to_owned()];
    if !claude.stream_input && !control {
        argv.push(prompt_arg(render_prompt(request), &[]));
    }
    argv.extend(["--output-format", "stream-json", "--verbose"].map(String::from));
    if claude.partial_messages {
        argv.push("--include-partial-messages".to_owned());
    }
    if control {
        argv.extend(crate::CONTROL_FLAGS.iter().map(|f| (*f).to_owned()));
    } else if claude.stream_input {
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
    flag("--append-system-prompt", claude.append_system_prompt.clone());
    flag("--max-turns", options.max_turns.map(|n| n.to_string()));
    flag("--permission-mode", permission_flag(options.permission_mode).map(str::to_owned));
    flag("--allowedTools", (!options.allowed_tools.is_empty()).then(|| options.allowed_tools.join(",")));
    flag("--disallowedTools", (!options.disallowed_tools.is_empty()).then(|| options.disallowed_tools.join(",")));
    argv.extend(options.extra_args.iter().cloned());
    if let Some(id) = resume_handle(request) {
        argv.push("--resume".to_owned());
        argv.push(id.to_owned());
        if request.fork {
            argv.push("--fork-session".to_owned());
        }
    }
    argv
}

/// The environment for one run: [`ClaudeOptions::env`](asm_provider_cli::CliOptions::env),
/// plus [`OFFLINE_ENV`] and [`MAX_RETRIES_ENV`] when configured. The credential variables
/// ([`AUTH_ENV`]) are added on top by
/// [`CliOptions::child_env`](asm_provider_cli::CliOptions::child_env).
///
/// ```
/// use asm_provider_claude::{ClaudeAdapter, ClaudeBuilderExt, CliEnv, build_env};
/// let adapter = ClaudeAdapter::builder().env(CliEnv::empty()).max_retries(1).build();
/// let env = build_env(adapter.options());
/// assert_eq!(env.vars["CLAUDE_CODE_MAX_RETRIES"], "1");
/// assert_eq!(env.vars["DISABLE_TELEMETRY"], "1");
/// ```
pub fn build_env(options: &ClaudeOptions) -> CliEnv {
    let mut env = options.env.clone();
    if options.provider.offline {
        env = env.set_all(OFFLINE_ENV.iter().copied());
    }
    if let Some(n) = options.provider.max_retries {
        env = env.set(MAX_RETRIES_ENV, n.to_string());
    }
    env
}
