//! redb errors as [`asm_core::Error`]s with storage codes.

use std::path::Path;

use asm_core::{Error, ErrorCode, RunId, SessionId};

/// Which side of the store failed, for the code of a redb error.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Read,
    Write,
}

impl Op {
    fn code(self) -> ErrorCode {
        match self {
            Op::Read => ErrorCode::StorageReadFailed,
            Op::Write => ErrorCode::StorageWriteFailed,
        }
    }
}

/// A redb error met while reading or writing.
pub(crate) fn storage(op: Op, what: &str, err: impl Into<redb::Error>) -> Error {
    let err: redb::Error = err.into();
    let code = match &err {
        redb::Error::Corrupted(_) => ErrorCode::StorageError,
        _ => op.code(),
    };
    Error::new(code, format!("redb {what} failed: {err}")).with_source(err)
}

/// A redb error met while opening `path`.
pub(crate) fn open(path: &Path, err: redb::DatabaseError) -> Error {
    let shown = path.display();
    let (code, message) = match &err {
        redb::DatabaseError::DatabaseAlreadyOpen => (
            ErrorCode::StorageConnectionFailed,
            format!(
                "cannot open {shown}: the database file is locked by another process (or already open in this one); \
                 a redb store has one owner at a time"
            ),
        ),
        redb::DatabaseError::UpgradeRequired(version) => (
            ErrorCode::MigrationRequired,
            format!("cannot open {shown}: redb file format {version} must be upgraded by another redb version first"),
        ),
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => match io.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => (
                ErrorCode::StorageError,
                format!("cannot open {shown}: not a valid redb file (corrupted or truncated): {io}"),
            ),
            _ => (ErrorCode::StorageConnectionFailed, format!("cannot open {shown}: {io}")),
        },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            (ErrorCode::StorageError, format!("cannot open {shown}: the file is corrupted: {detail}"))
        }
        other => (ErrorCode::StorageError, format!("cannot open {shown}: {other}")),
    };
    Error::new(code, message).with_detail("path", shown.to_string()).with_source(err)
}

/// A panic inside redb (it may panic on a damaged file instead of returning an error).
pub(crate) fn panicked(what: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    let reason = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    Error::new(ErrorCode::StorageError, format!("redb panicked during {what} (damaged file?): {reason}"))
}

pub(crate) fn session_not_found(id: &SessionId) -> Error {
    Error::new(ErrorCode::SessionNotFound, format!("session {id} not found")).with_detail("session_id", id.as_str())
}

pub(crate) fn run_not_found(id: &RunId) -> Error {
    Error::new(ErrorCode::RunNotFound, format!("run {id} not found")).with_detail("run_id", id.as_str())
}

pub(crate) fn corrupt_record(what: &str, err: &serde_json::Error) -> Error {
    Error::new(ErrorCode::StorageReadFailed, format!("corrupted {what} record: {err}"))
}

pub(crate) fn writer_gone() -> Error {
    Error::new(ErrorCode::StorageWriteFailed, "the redb writer thread has stopped")
}
