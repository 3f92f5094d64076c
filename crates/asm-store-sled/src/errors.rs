//! Mapping sled's errors (and panics) onto `asm_core::Error`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use asm_core::{Error, ErrorCode, RunId, SessionId};

/// What the store was doing when sled failed; picks the error code.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Doing {
    Open,
    Read,
    Write,
}

impl Doing {
    fn code(self) -> ErrorCode {
        match self {
            Doing::Open => ErrorCode::StorageError,
            Doing::Read => ErrorCode::StorageReadFailed,
            Doing::Write => ErrorCode::StorageWriteFailed,
        }
    }
}

/// Maps a sled error. Corruption is always a read failure with detail `corrupted: true`.
pub(crate) fn sled_error(doing: Doing, error: sled::Error) -> Error {
    match &error {
        sled::Error::Corruption { at, .. } => Error::new(
            ErrorCode::StorageReadFailed,
            format!("sled reports corrupted data{}", at.as_ref().map(|p| format!(" at {p:?}")).unwrap_or_default()),
        )
        .with_detail("corrupted", true),
        sled::Error::Io(io) => {
            Error::new(doing.code(), format!("sled I/O error: {io}")).with_detail("io_kind", format!("{:?}", io.kind()))
        }
        sled::Error::Unsupported(what) => Error::new(ErrorCode::StorageError, format!("sled: unsupported: {what}")),
        sled::Error::ReportableBug(what) => Error::new(ErrorCode::StorageError, format!("sled bug: {what}")),
        sled::Error::CollectionNotFound(_) => Error::new(ErrorCode::StorageError, "sled: a tree vanished"),
    }
    .with_source(error)
}

pub(crate) fn read_err(error: sled::Error) -> Error {
    sled_error(Doing::Read, error)
}

pub(crate) fn write_err(error: sled::Error) -> Error {
    sled_error(Doing::Write, error)
}

/// Maps an error of `sled::Config::open`, recognising the file lock another process holds.
pub(crate) fn open_err(path: &Path, error: sled::Error) -> Error {
    if let sled::Error::Io(io) = &error
        && io.to_string().contains("could not acquire lock")
    {
        return Error::new(
            ErrorCode::StorageError,
            format!(
                "cannot open the sled store at {}: its file lock is held by another process (sled allows one \
                 process per database; close the other store first): {io}",
                path.display()
            ),
        )
        .with_detail("path", path.display().to_string())
        .with_detail("reason", "locked")
        .with_source(error);
    }
    let mapped = sled_error(Doing::Open, error);
    let message = format!("cannot open the sled store at {}: {}", path.display(), mapped.message());
    let details = mapped.details().clone();
    Error::new(mapped.code(), message).with_details(details).with_detail("path", path.display().to_string())
}

pub(crate) fn session_not_found(id: &SessionId) -> Error {
    Error::new(ErrorCode::SessionNotFound, format!("session {id} not found")).with_detail("session_id", id.as_str())
}

pub(crate) fn run_not_found(id: &RunId) -> Error {
    Error::new(ErrorCode::RunNotFound, format!("run {id} not found")).with_detail("run_id", id.as_str())
}

pub(crate) fn writer_stopped() -> Error {
    Error::new(
        ErrorCode::StorageError,
        "the sled store's writer has stopped (after a storage failure or a panic inside sled); reopen the store",
    )
}

/// Runs `f`, turning a panic inside sled into a typed error (sled 0.34 panics on some
/// corruptions instead of returning an error).
pub(crate) fn guard<T>(code: ErrorCode, what: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(Error::new(code, format!("sled panicked while {what} (the files are probably corrupted): {reason}"))
                .with_detail("corrupted", true))
        }
    }
}
