//! [`AmpCli`] (Amp's own options), [`build_argv`] and [`build_env`].

use std::fmt;
use std::path::PathBuf;

use asm_core::{Error, ErrorCode, ProviderError, ProviderErrorKind};
use asm_ports::ExecuteRequest;
use asm_provider_cli::{CliEnv, PermissionMode, prompt_arg, provider_failure, render_prompt, resume_handle};

use crate::AmpOptions;

/// Environment variable holding the Amp API key.
pub const API_KEY_ENV: &str = "AMP_API_KEY";
/// Environment variable holding the Amp server URL (default `https://ampcode.com/`).
pub const SERVER_URL_ENV: &str = "AMP_URL";
/// The variables Amp reads credentials from ([`API_KEY_ENV`]): passed through from this
/// process by default ([`CliEnv::pass_auth`]).
pub const AUTH_ENV: &[&str] = &[API_KEY_ENV];

/// Amp's own options: [`AmpOptions::provider`](asm_provider_cli::CliOptions::provider), set
/// with [`AmpBuilderExt`](crate::AmpBuilderExt).
///
/// `Debug` never prints the API key.
///
/// ```
/// use asm_provider_amp::{AmpAdapter, AmpBuilderExt, PermissionMode};
/// let adapter = AmpAdapter::builder()
///     .mode("smart")
///     .permission_mode(PermissionMode::FullAuto)
///     .api_key("sgamp_secret")
///     .build();
/// assert_eq!(adapter.options().provider.mode.as_deref(), Some("smart"));
/// assert!(!format!("{:?}", adapter.options()).contains("sgamp_secret"));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct AmpCli {
    /// `--mode` (agent mode such as `smart`, `rush`, `deep`; the CLI's default when unset).
    pub mode: Option<String>,
    /// The model label recorded in the outcome. Amp picks the model server-side from the mode
    /// and has no model flag, so this is **not** passed to the CLI (and
    /// [`CliOptions::model`](asm_provider_cli::CliOptions::model) is refused).
    pub model_label: Option<String>,
    /// `--settings-file`: Amp's tool permissions (`amp.permissions`, `amp.tools.disable`) live
    /// in its settings, not in command-line flags.
    pub settings_file: Option<PathBuf>,
    /// `--stream-json-thinking`: include thinking blocks (normalized as reasoning).
    pub thinking: bool,
    /// Send the prompt as a stream-json user message on stdin (`--stream-json-input`) instead
    /// of the `-x` argument.
    pub stream_input: bool,
    /// [`API_KEY_ENV`], set explicitly in the child's environment.
    pub api_key: Option<String>,
    /// [`SERVER_URL_ENV`].
    pub server_url: Option<String>,
    /// Fail before spawning when no `AMP_API_KEY` reaches the child (default false: a key
    /// stored by `amp login` under `HOME` also works). Without a key the CLI starts an
    /// interactive login flow, which the adapter detects and stops either way.
    pub require_api_key: bool,
}

impl fmt::Debug for AmpCli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmpCli")
            .field("mode", &self.mode)
            .field("model_label", &self.model_label)
            .field("settings_file", &self.settings_file)
            .field("thinking", &self.thinking)
            .field("stream_input", &self.stream_input)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("server_url", &self.server_url)
            .field("require_api_key", &self.require_api_key)
            .finish()
    }
}

/// What only [`AmpOptions`] can answer.
pub trait AmpOptionsExt {
    /// Whether the child gets an `AMP_API_KEY` (from [`AmpCli::api_key`], an explicit
    /// variable, or an inherited one that is set).
    fn has_api_key(&self) -> bool;
}

impl AmpOptionsExt for AmpOptions {
    fn has_api_key(&self) -> bool {
        self.child_env().resolve().iter().any(|(k, v)| k == API_KEY_ENV && !v.is_empty())
    }
}

fn missing_key_error() -> Error {
    let pe = ProviderError::new(
        asm_core::ProviderName::Amp,
        ProviderErrorKind::Unknown,
        "no AMP_API_KEY for the amp CLI (without it amp starts an interactive login flow)",
    );
    provider_failure(ErrorCode::ProviderAuthenticationFailed, pe).with_detail("reason", "missing_api_key")
}

/// Amp's own configuration rules: with [`AmpCli::require_api_key`], a key must reach the
/// child.
pub(crate) fn validate(options: &AmpOptions) -> asm_core::Result<()> {
    if options.provider.require_api_key && !options.has_api_key() {
        return Err(missing_key_error());
    }
    Ok(())
}

/// `--dangerously-allow-all` for the permissive modes (spec 9.6), nothing otherwise (Amp
/// honours `default`, `full_auto` and `dangerously_skip_permissions`; `accept_edits` and `plan`
/// have no Amp equivalent and are refused by validation).
///
/// ```
/// use asm_provider_amp::{PermissionMode, permission_flag};
/// assert_eq!(permission_flag(PermissionMode::FullAuto), Some("--dangerously-allow-all"));
/// assert_eq!(permission_flag(PermissionMode::Plan), None);
/// ```
pub fn permission_flag(mode: PermissionMode) -> Option<&'static str> {
    match mode {
        PermissionMode::FullAuto | PermissionMode::DangerouslySkipPermissions => Some("--dangerously-allow-all"),
        _ => None,
    }
}

/// The argv (without the program) for one run:
/// `[threads continue <T-id>] [--dangerously-allow-all] [--mode M] [--settings-file F]
/// [extra args...] -x <prompt> --stream-json [--stream-json-thinking]`, or in stream-input
/// mode `... -x --stream-json [--stream-json-thinking] --stream-json-input` (prompt on stdin).
///
/// The prompt follows `-x` directly (the CLI only takes the message there, as in the captured
/// runs `-x "hello" --stream-json`); a prompt starting with `-` gets a leading space so it is
/// never taken for a flag. A run resumes natively with `amp threads continue <thread id>` when
/// the request carries a usable handle ([`resume_handle`]); otherwise the transcript is
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
    let amp = &options.provider;
    let mut argv = Vec::new();
    if let Some(thread) = resume_handle(request) {
        argv.extend(["threads", "continue", thread].map(String::from));
    }
    if let Some(flag) = permission_flag(options.permission_mode) {
        argv.push(flag.to_owned());
    }
    if let Some(mode) = amp.mode.as_ref().filter(|m| !m.is_empty()) {
        argv.push("--mode".to_owned());
        argv.push(mode.clone());
    }
    if let Some(file) = &amp.settings_file {
        argv.push("--settings-file".to_owned());
        argv.push(file.display().to_string());
    }
    argv.extend(options.extra_args.iter().cloned());
    argv.push("-x".to_owned());
    if !amp.stream_input {
        argv.push(prompt_arg(render_prompt(request), &[]));
    }
    argv.push("--stream-json".to_owned());
    if amp.thinking {
        argv.push("--stream-json-thinking".to_owned());
    }
    if amp.stream_input {
        argv.push("--stream-json-input".to_owned());
    }
    argv
}

/// The environment for one run: [`AmpOptions::env`](asm_provider_cli::CliOptions::env), plus
/// `AMP_API_KEY` and `AMP_URL` when configured (they win over the same variables in `env`). An
/// inherited `AMP_API_KEY` is added on top by
/// [`CliOptions::child_env`](asm_provider_cli::CliOptions::child_env).
///
/// ```
/// use asm_provider_amp::{AmpAdapter, AmpBuilderExt, CliEnv, build_env};
/// let o = AmpAdapter::builder().env(CliEnv::empty()).api_key("k").server_url("http://127.0.0.1:9/").build();
/// let vars = build_env(o.options()).resolve();
/// assert_eq!(vars.len(), 2);
/// ```
pub fn build_env(options: &AmpOptions) -> CliEnv {
    let mut env = options.env.clone();
    if let Some(key) = &options.provider.api_key {
        env = env.set(API_KEY_ENV, key.clone());
    }
    if let Some(url) = &options.provider.server_url {
        env = env.set(SERVER_URL_ENV, url.clone());
    }
    env
}
