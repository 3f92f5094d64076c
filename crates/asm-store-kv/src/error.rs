//! The one error enum of the KV engines, mapped once into [`asm_core::Error`].
//!
//! Every engine turns its own failures into a [`KvError`]; [`From<KvError> for Error`] is the only
//! place that picks an [`ErrorCode`], so the same failure has the same code in every store:
//!
//! | failure | code | details |
//! |---|---|---|
//! | the database is locked (another process, or another handle in this one) | `storage_connection_failed` | `path`, `reason: "locked"` |
//! | the path cannot be opened (missing directory, permissions, not a file/directory) | `storage_connection_failed` | `path` |
//! | damaged data: reported by the engine, a record that does not decode, a panic inside the engine | `storage_error` | `corrupted: true` |
//! | the engine's own file format needs an upgrade | `migration_required` | `path` |
//! | the store's layout version is newer, older or unknown | `migration_required` | `found_version`, `supported_version` |
//! | an I/O failure while reading / writing | `storage_read_failed` / `storage_write_failed` | `io_kind` when known |
//! | the writer thread has stopped | `storage_error` | |
//! | anything else the engine reports | `storage_error` | |
//!
//! The engine's own error is kept as the [`Error`]'s source where there is one.

use std::fmt;
use std::path::{Path, PathBuf};

use asm_core::{Error, ErrorCode};

/// An engine's error, kept as the source of the mapped [`Error`].
pub struct Cause(Box<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Wraps an engine error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// What went wrong in an engine, before it becomes an [`Error`].
#[derive(Debug)]
#[non_exhaustive]
pub enum KvError {
    /// The database's lock is held (by another process, or by another open handle).
    Locked {
        /// The database path.
        path: PathBuf,
        /// The engine's error.
        cause: Option<Cause>,
    },
    /// The database cannot be opened at this path (missing directory, permissions, ...).
    Unavailable {
        /// The database path.
        path: PathBuf,
        /// The engine's error.
        cause: Cause,
    },
    /// The stored data is damaged.
    Corrupted {
        /// What is damaged, for the message.
        what: String,
        /// The engine's error, when it reported the damage.
        cause: Option<Cause>,
    },
    /// The engine panicked (it does so on some damaged files instead of returning an error).
    Panicked {
        /// What the store was doing.
        during: String,
        /// The panic message.
        reason: String,
    },
    /// The engine's own file format must be upgraded by another version of the engine.
    EngineUpgrade {
        /// The database path.
        path: PathBuf,
        /// What the engine says.
        message: String,
    },
    /// The store's layout version is not the one this build reads.
    Format {
        /// What was found, for the message.
        message: String,
        /// The version found, if it could be read.
        found: Option<u64>,
    },
    /// A read failed (I/O).
    Read {
        /// What was being read.
        what: &'static str,
        /// The engine's error.
        cause: Cause,
        /// The kind of the underlying I/O error, when there is one.
        io_kind: Option<std::io::ErrorKind>,
    },
    /// A write or commit failed (I/O).
    Write {
        /// What was being written.
        what: &'static str,
        /// The engine's error.
        cause: Cause,
        /// The kind of the underlying I/O error, when there is one.
        io_kind: Option<std::io::ErrorKind>,
    },
    /// The writer thread has stopped (the store is being dropped).
    WriterStopped,
    /// Any other failure of the engine (an unsupported operation, a bug it reports).
    Engine {
        /// What happened.
        message: String,
        /// The engine's error.
        cause: Option<Cause>,
    },
}

impl KvError {
    /// A read failure.
    pub fn read(what: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        KvError::Read { what, cause: Cause::new(error), io_kind: None }
    }

    /// A write failure.
    pub fn write(what: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        KvError::Write { what, cause: Cause::new(error), io_kind: None }
    }

    /// Damaged data found by the store itself (a record that does not decode).
    pub fn corrupted(what: impl Into<String>) -> Self {
        KvError::Corrupted { what: what.into(), cause: None }
    }

    /// A caught panic of the engine.
    pub fn panicked(during: impl Into<String>, payload: &(dyn std::any::Any + Send)) -> Self {
        let reason = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        KvError::Panicked { during: during.into(), reason }
    }

    /// Sets the kind of the underlying I/O error of a read or write failure.
    #[must_use]
    pub fn with_io_kind(mut self, kind: std::io::ErrorKind) -> Self {
        if let KvError::Read { io_kind, .. } | KvError::Write { io_kind, .. } = &mut self {
            *io_kind = Some(kind);
        }
        self
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Locked { path, .. } => write!(
                f,
                "cannot open {}: the database is locked by another process (or already open in this one); a store \
                 has one owner at a time",
                path.display()
            ),
            KvError::Unavailable { path, cause } => write!(f, "cannot open {}: {cause}", path.display()),
            KvError::Corrupted { what, cause: Some(cause) } => write!(f, "corrupted data ({what}): {cause}"),
            KvError::Corrupted { what, cause: None } => write!(f, "corrupted data: {what}"),
            KvError::Panicked { during, reason } => {
                write!(f, "the engine panicked during {during} (damaged files?): {reason}")
            }
            KvError::EngineUpgrade { path, message } => write!(f, "cannot open {}: {message}", path.display()),
            KvError::Format { message, .. } => f.write_str(message),
            KvError::Read { what, cause, .. } => write!(f, "{what} failed: {cause}"),
            KvError::Write { what, cause, .. } => write!(f, "{what} failed: {cause}"),
            KvError::WriterStopped => f.write_str("the store's writer thread has stopped"),
            KvError::Engine { message, cause: Some(cause) } => write!(f, "{message}: {cause}"),
            KvError::Engine { message, cause: None } => f.write_str(message),
        }
    }
}

fn path_detail(error: Error, path: &Path) -> Error {
    error.with_detail("path", path.display().to_string())
}

fn with_cause(error: Error, cause: Option<Cause>) -> Error {
    match cause {
        Some(cause) => error.with_source(cause),
        None => error,
    }
}

impl From<KvError> for Error {
    fn from(error: KvError) -> Self {
        let message = error.to_string();
        match error {
            KvError::Locked { path, cause } => with_cause(
                path_detail(Error::new(ErrorCode::StorageConnectionFailed, message), &path)
                    .with_detail("reason", "locked"),
                cause,
            ),
            KvError::Unavailable { path, cause } => {
                path_detail(Error::new(ErrorCode::StorageConnectionFailed, message), &path).with_source(cause)
            }
            KvError::Corrupted { cause, .. } => {
                with_cause(Error::new(ErrorCode::StorageError, message).with_detail("corrupted", true), cause)
            }
            KvError::Panicked { .. } => Error::new(ErrorCode::StorageError, message).with_detail("corrupted", true),
            KvError::EngineUpgrade { path, .. } => {
                path_detail(Error::new(ErrorCode::MigrationRequired, message), &path)
            }
            KvError::Format { found, .. } => Error::new(ErrorCode::MigrationRequired, message)
                .with_detail("found_version", found.map_or(serde_json::Value::Null, serde_json::Value::from))
                .with_detail("supported_version", crate::FORMAT_VERSION),
            KvError::Read { cause, io_kind, .. } => {
                let error = Error::new(ErrorCode::StorageReadFailed, message);
                let error = match io_kind {
                    Some(kind) => error.with_detail("io_kind", format!("{kind:?}")),
                    None => error,
                };
                error.with_source(cause)
            }
            KvError::Write { cause, io_kind, .. } => {
                let error = Error::new(ErrorCode::StorageWriteFailed, message);
                let error = match io_kind {
                    Some(kind) => error.with_detail("io_kind", format!("{kind:?}")),
                    None => error,
                };
                error.with_source(cause)
            }
            KvError::WriterStopped => Error::new(ErrorCode::StorageError, message),
            KvError::Engine { cause, .. } => with_cause(Error::new(ErrorCode::StorageError, message), cause),
        }
    }
}

/// `session_not_found` for `id`.
pub(crate) fn session_not_found(id: &asm_core::SessionId) -> Error {
    Error::new(ErrorCode::SessionNotFound, format!("session {id} not found")).with_detail("session_id", id.as_str())
}

/// `run_not_found` for `id`.
pub(crate) fn run_not_found(id: &asm_core::RunId) -> Error {
    Error::new(ErrorCode::RunNotFound, format!("run {id} not found")).with_detail("run_id", id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_its_one_code() {
        let io = || std::io::Error::other("boom");
        let path = PathBuf::from("/tmp/x");
        let cases: Vec<(KvError, ErrorCode)> = vec![
            (KvError::Locked { path: path.clone(), cause: None }, ErrorCode::StorageConnectionFailed),
            (KvError::Unavailable { path: path.clone(), cause: Cause::new(io()) }, ErrorCode::StorageConnectionFailed),
            (KvError::corrupted("a record"), ErrorCode::StorageError),
            (KvError::panicked("a read", &"bad page"), ErrorCode::StorageError),
            (KvError::EngineUpgrade { path, message: "old".into() }, ErrorCode::MigrationRequired),
            (KvError::Format { message: "v9".into(), found: Some(9) }, ErrorCode::MigrationRequired),
            (KvError::read("get", io()), ErrorCode::StorageReadFailed),
            (KvError::write("commit", io()), ErrorCode::StorageWriteFailed),
            (KvError::WriterStopped, ErrorCode::StorageError),
            (KvError::Engine { message: "bug".into(), cause: None }, ErrorCode::StorageError),
        ];
        for (error, code) in cases {
            let shown = error.to_string();
            let mapped = Error::from(error);
            assert_eq!(mapped.code(), code, "{shown}");
            assert_eq!(mapped.message(), shown);
        }
        let corrupted = Error::from(KvError::Corrupted { what: "page".into(), cause: Some(Cause::new(io())) });
        assert_eq!(corrupted.details().get("corrupted"), Some(&serde_json::Value::Bool(true)));
        assert!(std::error::Error::source(&corrupted).is_some(), "the engine's error is kept as the source");
        let locked = Error::from(KvError::Locked { path: "/tmp/y".into(), cause: None });
        assert!(locked.message().contains("locked"));
        assert_eq!(locked.details().get("reason").and_then(|v| v.as_str()), Some("locked"));
    }
}
