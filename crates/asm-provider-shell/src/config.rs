//! [`ShellConfig`] and [`ShellAdapterBuilder`]: what a [`ShellAdapter`](crate::ShellAdapter) runs
//! with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use asm_core::{Error, ErrorCode, ProviderError, ProviderErrorKind, ProviderName, Result, StderrLimits};
use asm_provider_cli::{CliEnv, CliLimits, resolve_program};

use crate::ShellAdapter;

/// The default shell (spec 9.5 `default_shell`).
pub const DEFAULT_SHELL: &str = "/bin/sh";
/// The default time limit of one command (spec 9.5 `command_timeout_ms`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default cap of the output kept and streamed (spec 9.5 `max_output_bytes`, 1 MiB).
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// The configuration of a [`ShellAdapter`]. Build it with [`ShellAdapter::builder`]; read it
/// back with [`ShellAdapter::config`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ShellConfig {
    /// The shell that runs string input as `<shell> -c <string>` (default [`DEFAULT_SHELL`]; a
    /// bare name is looked up in the child's PATH).
    pub shell: PathBuf,
    /// Working directory of the commands (default: this process's).
    pub cwd: Option<PathBuf>,
    /// The commands' environment (default [`CliEnv::minimal`]: PATH, HOME, locale, ...).
    pub env: CliEnv,
    /// Time limit of one command (default [`DEFAULT_TIMEOUT`]; `None`: only the run's deadline).
    pub timeout: Option<Duration>,
    /// Exit codes that count as success (default `[0]`); any other code fails the run.
    pub success_exit_codes: Vec<i32>,
    /// When set, the only commands (basenames) that may run; every command of a shell string
    /// is checked ([`check_command_line`](crate::check_command_line)).
    pub allowed_commands: Option<Vec<String>>,
    /// Commands (basenames) that may never run; wins over the allow list.
    pub denied_commands: Vec<String>,
    /// Most stdout bytes kept and streamed; the rest is read and dropped, and a truncation
    /// marker ([`truncation_marker`](crate::truncation_marker)) ends the output.
    pub max_output_bytes: usize,
    /// Subprocess limits (stderr ring size, the SIGINT → SIGTERM → SIGKILL graces).
    pub limits: CliLimits,
    /// Bounds of the stderr stored in errors.
    pub stderr_limits: StderrLimits,
}

impl Default for ShellConfig {
    fn default() -> Self {
        Self {
            shell: PathBuf::from(DEFAULT_SHELL),
            cwd: None,
            env: CliEnv::minimal(),
            timeout: Some(DEFAULT_TIMEOUT),
            success_exit_codes: vec![0],
            allowed_commands: None,
            denied_commands: Vec::new(),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            limits: CliLimits::default(),
            stderr_limits: StderrLimits::default(),
        }
    }
}

/// The basename of a command (`/usr/bin/rm` → `rm`), as the allow and deny lists hold them.
///
/// ```
/// assert_eq!(asm_provider_shell::command_basename("/usr/bin/rm"), "rm");
/// assert_eq!(asm_provider_shell::command_basename("ls"), "ls");
/// ```
pub fn command_basename(command: &str) -> &str {
    let trimmed = command.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

pub(crate) fn config_error(option: &str, message: impl Into<String>) -> Error {
    Error::new(ErrorCode::ValidationError, message)
        .with_detail("option", option)
        .with_detail("reason", "invalid_option")
}

impl ShellConfig {
    /// The static checks [`ShellAdapterBuilder::build`] makes: a non-empty shell path and success
    /// list, a positive output cap, non-empty command names.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] with `details.option`.
    pub fn check(&self) -> Result<()> {
        if self.shell.as_os_str().is_empty() {
            return Err(config_error("shell", "the shell path is empty"));
        }
        if self.success_exit_codes.is_empty() {
            return Err(config_error("success_exit_codes", "success_exit_codes must not be empty"));
        }
        if self.max_output_bytes == 0 {
            return Err(config_error("max_output_bytes", "max_output_bytes must be at least 1"));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(config_error("timeout", "the timeout must be positive"));
        }
        let names = self.allowed_commands.iter().flatten().chain(&self.denied_commands);
        if names.into_iter().any(|n| n.trim().is_empty()) {
            return Err(config_error("allowed_commands", "command names must not be empty"));
        }
        Ok(())
    }

    /// Everything [`check`](Self::check) checks, plus what needs the file system: the shell is
    /// an executable (looked up in the child's PATH when it is a bare name) and the cwd is a
    /// directory.
    ///
    /// # Errors
    /// [`ErrorCode::ProviderError`] with [`ProviderErrorKind::CliNotFound`] for a missing shell;
    /// [`ErrorCode::ValidationError`] (`details.option = "cwd"`) for a bad cwd.
    pub fn validate(&self) -> Result<()> {
        self.check()?;
        resolve_program(ProviderName::Shell, &self.shell, self.env.path_var().as_deref()).map_err(|e| {
            let message = format!("shell not found or not executable: {}", self.shell.display());
            let pe = ProviderError::new(ProviderName::Shell, ProviderErrorKind::CliNotFound, message.clone());
            Error::new(e.code(), message).with_provider_error(pe).with_detail("option", "shell")
        })?;
        if let Some(cwd) = &self.cwd {
            check_cwd(cwd)?;
        }
        Ok(())
    }

    /// Whether `code` counts as success.
    pub fn is_success(&self, code: i32) -> bool {
        self.success_exit_codes.contains(&code)
    }
}

pub(crate) fn check_cwd(cwd: &Path) -> Result<()> {
    if cwd.is_dir() {
        Ok(())
    } else {
        Err(config_error("cwd", format!("cwd {} is not an existing directory", cwd.display())))
    }
}

/// Builds a [`ShellAdapter`].
///
/// ```
/// use std::time::Duration;
/// use asm_ports::ProviderAdapter;
/// use asm_provider_shell::ShellAdapter;
/// let adapter = ShellAdapter::builder()
///     .cwd("/tmp")
///     .env_var("GREETING", "hi")
///     .timeout(Duration::from_secs(5))
///     .success_exit_codes([0, 1])
///     .allowed_commands(["ls", "echo"])
///     .denied_commands(["rm"])
///     .max_output_bytes(64 * 1024)
///     .build()?;
/// assert_eq!(adapter.name(), "shell");
/// assert!(ShellAdapter::builder().success_exit_codes([]).build().is_err());
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ShellAdapterBuilder {
    config: ShellConfig,
}

impl ShellAdapterBuilder {
    /// Sets [`ShellConfig::shell`].
    pub fn shell(mut self, shell: impl Into<PathBuf>) -> Self {
        self.config.shell = shell.into();
        self
    }
    /// Sets [`ShellConfig::cwd`].
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.config.cwd = Some(cwd.into());
        self
    }
    /// Replaces [`ShellConfig::env`].
    pub fn env(mut self, env: CliEnv) -> Self {
        self.config.env = env;
        self
    }
    /// Sets one variable of [`ShellConfig::env`].
    pub fn env_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.env = self.config.env.set(name, value);
        self
    }
    /// Sets [`ShellConfig::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }
    /// No time limit of its own: only the run's deadline applies.
    pub fn no_timeout(mut self) -> Self {
        self.config.timeout = None;
        self
    }
    /// Sets [`ShellConfig::success_exit_codes`].
    pub fn success_exit_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.config.success_exit_codes = codes.into_iter().collect();
        self
    }
    /// Sets [`ShellConfig::allowed_commands`] (normalised to basenames).
    pub fn allowed_commands<I, S>(mut self, commands: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config.allowed_commands =
            Some(commands.into_iter().map(|c| command_basename(c.as_ref().trim()).to_owned()).collect());
        self
    }
    /// Sets [`ShellConfig::denied_commands`] (normalised to basenames).
    pub fn denied_commands<I, S>(mut self, commands: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config.denied_commands =
            commands.into_iter().map(|c| command_basename(c.as_ref().trim()).to_owned()).collect();
        self
    }
    /// Sets [`ShellConfig::max_output_bytes`].
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.config.max_output_bytes = bytes;
        self
    }
    /// Sets [`ShellConfig::limits`].
    pub fn limits(mut self, limits: CliLimits) -> Self {
        self.config.limits = limits;
        self
    }
    /// Sets [`ShellConfig::stderr_limits`].
    pub fn stderr_limits(mut self, limits: StderrLimits) -> Self {
        self.config.stderr_limits = limits;
        self
    }

    /// The adapter. Checks the configuration statically ([`ShellConfig::check`]); what needs
    /// the file system (the shell exists, the cwd is a directory) is
    /// [`validate_config`](asm_ports::ProviderAdapter::validate_config)'s, and every run's.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] with `details.option`.
    pub fn build(self) -> Result<ShellAdapter> {
        self.config.check()?;
        Ok(ShellAdapter::from_config(self.config))
    }
}
