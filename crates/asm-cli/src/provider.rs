//! Provider adapters by name. Adding a provider is one arm of [`build`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use asm_ports::DynProviderAdapter;
use asm_provider_cli::{CliAdapterBuilder, CliProtocol};

use crate::config::{Config, ProviderConfig};
use crate::error::{CliError, CliResult};

/// The providers this binary knows, for messages and `asm serve`.
pub(crate) const PROVIDERS: &[&str] = &["claude", "codex", "amp", "shell"];

/// What the command line says about the provider of one run.
#[derive(Debug, Default, Clone)]
pub(crate) struct ProviderFlags<'a> {
    pub(crate) model: Option<&'a str>,
    pub(crate) cwd: Option<&'a Path>,
}

/// The adapter called `name`, configured from `config.toml` with the flags winning.
pub(crate) fn build(name: &str, config: &Config, flags: &ProviderFlags<'_>) -> CliResult<DynProviderAdapter> {
    let settings = config.provider(name);
    let adapter: DynProviderAdapter = match name {
        "claude" => Arc::new(configure(asm_provider_claude::ClaudeAdapter::builder(), &settings, flags).build()),
        "codex" => Arc::new(configure(asm_provider_codex::CodexAdapter::builder(), &settings, flags).build()),
        "amp" => Arc::new(configure(asm_provider_amp::AmpAdapter::builder(), &settings, flags).build()),
        "shell" => Arc::new(shell(&settings, flags)?),
        other => {
            return Err(CliError::validation(format!("unknown provider {other:?}"))
                .hint(format!("one of: {}", PROVIDERS.join(", "))));
        }
    };
    Ok(adapter)
}

fn configure<P: CliProtocol>(
    mut builder: CliAdapterBuilder<P>,
    settings: &ProviderConfig,
    flags: &ProviderFlags<'_>,
) -> CliAdapterBuilder<P> {
    if let Some(cli) = &settings.cli {
        builder = builder.cli_path(cli);
    }
    if let Some(model) = flags.model.map(str::to_owned).or_else(|| settings.model.clone()) {
        builder = builder.model(model);
    }
    if let Some(cwd) = flags.cwd {
        builder = builder.cwd(cwd);
    }
    if !settings.args.is_empty() {
        builder = builder.extra_args(settings.args.iter().cloned());
    }
    for (name, value) in &settings.env {
        builder = builder.env_var(name, value);
    }
    if let Some(secs) = settings.timeout_secs {
        builder = builder.timeout(Duration::from_secs(secs));
    }
    builder
}

/// The shell provider: the prompt is the shell string; `cli` is the shell, `model` is unused.
fn shell(settings: &ProviderConfig, flags: &ProviderFlags<'_>) -> CliResult<asm_provider_shell::ShellAdapter> {
    let mut builder = asm_provider_shell::ShellAdapter::builder();
    if let Some(shell) = &settings.cli {
        builder = builder.shell(shell);
    }
    if let Some(cwd) = flags.cwd {
        builder = builder.cwd(cwd);
    }
    for (name, value) in &settings.env {
        builder = builder.env_var(name, value);
    }
    if let Some(secs) = settings.timeout_secs {
        builder = builder.timeout(Duration::from_secs(secs));
    }
    Ok(builder.build()?)
}

/// The provider of a command: the flag, else `config.toml`, else an error saying how to pick.
pub(crate) fn choose(flag: Option<&str>, fallback: Option<&str>, config: &Config) -> CliResult<String> {
    flag.or(fallback).or(config.provider.as_deref()).map(str::to_owned).ok_or_else(|| {
        CliError::validation("no provider given")
            .hint(format!("pass --provider {} or set provider = \"...\" in $ASM_HOME/config.toml", PROVIDERS.join("|")))
    })
}
