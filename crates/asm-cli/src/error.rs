//! The one error line every failure prints.

use std::fmt;

/// A failure of a command: `error: [code] message`, and an optional `hint:` line.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    /// Exit status (1 unless said otherwise).
    pub(crate) status: u8,
}

impl CliError {
    pub(crate) fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), hint: None, status: 1 }
    }

    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new("validation_error", message)
    }

    #[must_use]
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    #[must_use]
    pub(crate) fn status(mut self, status: u8) -> Self {
        self.status = status;
        self
    }

    /// The message on one line (newlines of nested messages folded).
    pub(crate) fn line(&self) -> String {
        let message = self.message.split_whitespace().collect::<Vec<_>>().join(" ");
        format!("error: [{}] {message}", self.code)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

impl From<asm_core::Error> for CliError {
    fn from(error: asm_core::Error) -> Self {
        let hint = match error.code() {
            asm_core::ErrorCode::SessionNotFound => Some("list sessions with `asm sessions`"),
            asm_core::ErrorCode::RunNotFound => Some("see a session's runs with `asm show SESSION`"),
            _ => None,
        };
        let mut out = Self::new(error.code().as_str(), error.message());
        out.hint = hint.map(str::to_owned);
        out
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            // The reader went away (`asm events | head`): not a failure worth a line.
            return Self::new("broken_pipe", error.to_string()).status(0);
        }
        Self::new("io_error", error.to_string())
    }
}

pub(crate) type CliResult<T> = Result<T, CliError>;
