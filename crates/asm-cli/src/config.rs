//! `ASM_HOME` and the optional `$ASM_HOME/config.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{CliError, CliResult};

/// `$ASM_HOME`, else `$XDG_DATA_HOME/asm`, else `~/.local/share/asm`.
pub(crate) fn asm_home() -> CliResult<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(home) = non_empty("ASM_HOME") {
        return Ok(home);
    }
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return Ok(data.join("asm"));
    }
    match non_empty("HOME") {
        Some(home) => Ok(home.join(".local").join("share").join("asm")),
        None => Err(CliError::validation("cannot find a home for the store: HOME is not set")
            .hint("set ASM_HOME, or pass --store redb:PATH")),
    }
}

/// The settings of `config.toml`; every one optional, flags win.
///
/// ```toml
/// provider = "claude"        # default provider of `asm run`
/// store = "redb:/data/asm.redb"
///
/// [providers.claude]
/// model = "claude-sonnet-4-5"
/// cli = "/usr/local/bin/claude"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The default provider.
    pub(crate) provider: Option<String>,
    /// The default store URL (after `--store` and `ASM_STORE`).
    pub(crate) store: Option<String>,
    /// Per-provider settings.
    #[serde(default)]
    pub(crate) providers: BTreeMap<String, ProviderConfig>,
}

/// Settings of one provider.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderConfig {
    /// Default model.
    pub(crate) model: Option<String>,
    /// Path of the provider's CLI.
    pub(crate) cli: Option<PathBuf>,
    /// Extra arguments for the CLI.
    #[serde(default)]
    pub(crate) args: Vec<String>,
    /// Per-run timeout in seconds.
    pub(crate) timeout_secs: Option<u64>,
    /// Environment variables set for the CLI (the CLI otherwise only inherits a safe list).
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
}

impl Config {
    /// Reads `home/config.toml` when it exists.
    pub(crate) fn load(home: &Path) -> CliResult<Self> {
        let path = home.join("config.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(CliError::new("config_error", format!("cannot read {}: {e}", path.display()))),
        };
        toml::from_str(&text).map_err(|e| {
            CliError::new("config_error", format!("{}: {}", path.display(), e.message())).hint(
                "see `asm --help`; the keys are provider, store and [providers.NAME] model/cli/args/timeout_secs/env",
            )
        })
    }

    pub(crate) fn provider(&self, name: &str) -> ProviderConfig {
        self.providers.get(name).cloned().unwrap_or_default()
    }
}
