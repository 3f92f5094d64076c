//! Driver errors, kept private, and their one mapping into [`asm_core::Error`] codes.

use std::fmt;

use asm_core::{Error, ErrorCode, RunId, SessionId};
use tokio_postgres::error::SqlState;

/// A failure met talking to PostgreSQL, before it becomes a public [`Error`].
#[derive(Debug)]
pub(crate) enum DbError {
    /// The pool could not hand out a connection (server unreachable, pool timeout).
    Pool(deadpool_postgres::PoolError),
    /// The server or the connection failed a call.
    Postgres(tokio_postgres::Error),
    /// A row that does not decode into the domain value it should hold.
    Decode(String),
    /// A public error produced while the call ran (a refusal the SQL reported, bad input).
    Domain(Error),
}

/// How a [`DbError`] is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// The connection failed or could not be made: retry on a fresh connection.
    Connection,
    /// A conflict with a concurrent transaction (serialisation failure, deadlock, a concurrent
    /// append of the same event id, a concurrent delete): retry, alone.
    Race,
    /// Anything else: not retried.
    Permanent,
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::Pool(e)
    }
}

impl From<Error> for DbError {
    fn from(e: Error) -> Self {
        DbError::Domain(e)
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Pool(e) => write!(f, "no connection: {e}"),
            DbError::Postgres(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}: {} ({})", db.severity(), db.message(), db.code().code()),
                None => write!(f, "{e}"),
            },
            DbError::Decode(what) => write!(f, "undecodable row: {what}"),
            DbError::Domain(e) => write!(f, "{e}"),
        }
    }
}

fn postgres_class(e: &tokio_postgres::Error) -> Class {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection broke, timed out or was closed.
        return if e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
            Class::Connection
        } else {
            Class::Permanent
        };
    };
    if code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::IDLE_SESSION_TIMEOUT,
        ]
        .contains(code)
    {
        return Class::Connection;
    }
    if [SqlState::T_R_SERIALIZATION_FAILURE, SqlState::T_R_DEADLOCK_DETECTED, SqlState::LOCK_NOT_AVAILABLE]
        .contains(code)
    {
        return Class::Race;
    }
    // A concurrent append of the same event id (the unique index waits for the other
    // transaction, then fails: a retry finds the event stored) or a write racing a concurrent
    // delete of its session (a retry reports the session gone).
    if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION {
        return Class::Race;
    }
    Class::Permanent
}

impl DbError {
    pub(crate) fn class(&self) -> Class {
        match self {
            DbError::Pool(deadpool_postgres::PoolError::Closed) => Class::Permanent,
            DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => match postgres_class(e) {
                // Creating a connection failed for a reason the server gave (bad password,
                // unknown database): not transient.
                Class::Permanent if e.code().is_some() => Class::Permanent,
                _ => Class::Connection,
            },
            DbError::Pool(_) => Class::Connection,
            DbError::Postgres(e) => postgres_class(e),
            DbError::Decode(_) | DbError::Domain(_) => Class::Permanent,
        }
    }

    /// The public error; `what` names the operation.
    pub(crate) fn into_error(self, what: &str) -> Error {
        let class = self.class();
        let message = format!("PostgreSQL {what} failed: {self}");
        match self {
            DbError::Domain(e) => e,
            DbError::Decode(_) => Error::new(ErrorCode::StorageReadFailed, message),
            _ if class != Class::Permanent => {
                let source = self.into_source();
                with_source(Error::new(ErrorCode::StorageConnectionFailed, message), source)
            }
            DbError::Postgres(e) => {
                let code = match e.code() {
                    // Input PostgreSQL cannot hold: a NUL character in a text or jsonb value,
                    // a timestamp out of its range, a value too large.
                    Some(c)
                        if *c == SqlState::UNTRANSLATABLE_CHARACTER
                            || *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                            || *c == SqlState::DATETIME_FIELD_OVERFLOW
                            || *c == SqlState::DATETIME_VALUE_OUT_OF_RANGE
                            || *c == SqlState::NUMERIC_VALUE_OUT_OF_RANGE
                            || *c == SqlState::PROGRAM_LIMIT_EXCEEDED
                            || *c == SqlState::INVALID_TEXT_REPRESENTATION
                            || *c == SqlState::INVALID_PARAMETER_VALUE =>
                    {
                        ErrorCode::InvalidInput
                    }
                    Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::UNDEFINED_FUNCTION => {
                        ErrorCode::MigrationRequired
                    }
                    _ => ErrorCode::StorageError,
                };
                Error::new(code, message).with_source(e)
            }
            DbError::Pool(e) => Error::new(ErrorCode::StorageError, message).with_source(e),
        }
    }

    fn into_source(self) -> Option<Box<dyn std::error::Error + Send + Sync>> {
        match self {
            DbError::Pool(e) => Some(Box::new(e)),
            DbError::Postgres(e) => Some(Box::new(e)),
            DbError::Decode(_) | DbError::Domain(_) => None,
        }
    }
}

fn with_source(error: Error, source: Option<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    match source {
        Some(source) => error.with_source(BoxedSource(source)),
        None => error,
    }
}

/// A boxed driver error as an error source.
#[derive(Debug)]
struct BoxedSource(Box<dyn std::error::Error + Send + Sync>);

impl fmt::Display for BoxedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BoxedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

pub(crate) fn session_not_found(id: &SessionId) -> Error {
    Error::new(ErrorCode::SessionNotFound, format!("session {id} not found")).with_detail("session_id", id.as_str())
}

pub(crate) fn run_not_found(id: &RunId) -> Error {
    Error::new(ErrorCode::RunNotFound, format!("run {id} not found")).with_detail("run_id", id.as_str())
}

pub(crate) fn decode(what: impl Into<String>) -> DbError {
    DbError::Decode(what.into())
}
