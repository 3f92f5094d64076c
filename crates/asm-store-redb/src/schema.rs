//! Table layout and the format version record.

use asm_core::{Error, ErrorCode, Result};
use redb::{Database, MultimapTableHandle, ReadableDatabase, TableDefinition, TableHandle};

use crate::error::{Op, storage};
use crate::keys::{EventPos, Id, RunStartKey, SessionOrderKey, SessionRunKey};

/// The layout version this build reads and writes.
pub(crate) const FORMAT_VERSION: u64 = 1;
/// The key of the format version in [`META`].
pub(crate) const FORMAT_VERSION_KEY: &str = "format_version";

/// `name -> number`: the format version record.
pub(crate) const META: TableDefinition<'static, &str, u64> = TableDefinition::new("asm_meta");
/// `session -> session JSON`.
pub(crate) const SESSIONS: TableDefinition<'static, &Id, &[u8]> = TableDefinition::new("asm_sessions");
/// `(created_at µs, session) -> ()`: the listing order.
pub(crate) const SESSION_ORDER: TableDefinition<'static, &SessionOrderKey, ()> =
    TableDefinition::new("asm_session_order");
/// `(session, sequence) -> encoded event`: the log; `(session, u64::MAX)` holds the session's
/// last sequence (see [`crate::keys::head_pos`]), written in the same transaction as the events.
pub(crate) const EVENTS: TableDefinition<'static, &EventPos, &[u8]> = TableDefinition::new("asm_events");
/// `event id -> (session, sequence)`: idempotent appends.
pub(crate) const EVENT_IDS: TableDefinition<'static, &Id, &EventPos> = TableDefinition::new("asm_event_ids");
/// `(session, run) -> first sequence`: where `run_id` reads start (written once per run).
pub(crate) const RUN_STARTS: TableDefinition<'static, &RunStartKey, u64> = TableDefinition::new("asm_run_starts");
/// `run -> run JSON`.
pub(crate) const RUNS: TableDefinition<'static, &Id, &[u8]> = TableDefinition::new("asm_runs");
/// `(session, created_at, run) -> ()`: a session's runs in listing order.
pub(crate) const SESSION_RUNS: TableDefinition<'static, &SessionRunKey, ()> = TableDefinition::new("asm_session_runs");

/// Checks the format version of an opened database, or initialises an empty one.
///
/// # Errors
/// [`ErrorCode::MigrationRequired`] for a newer or unknown version, or for a file with tables
/// but no version record (not a store of this crate, or one from before versioning).
pub(crate) fn check_or_init(db: &Database) -> Result<()> {
    let (has_tables, version) = {
        let txn = db.begin_read().map_err(|e| storage(Op::Read, "begin_read", e))?;
        let mut names: Vec<String> =
            txn.list_tables().map_err(|e| storage(Op::Read, "list_tables", e))?.map(|t| t.name().to_owned()).collect();
        names.extend(
            txn.list_multimap_tables()
                .map_err(|e| storage(Op::Read, "list_multimap_tables", e))?
                .map(|t| t.name().to_owned()),
        );
        let version = if names.iter().any(|n| n == META.name()) {
            let meta = txn.open_table(META).map_err(|e| storage(Op::Read, "open meta table", e))?;
            Some(
                meta.get(FORMAT_VERSION_KEY)
                    .map_err(|e| storage(Op::Read, "read format version", e))?
                    .map(|v| v.value()),
            )
        } else {
            None
        };
        (!names.is_empty(), version)
    };
    match version {
        Some(Some(FORMAT_VERSION)) => Ok(()),
        Some(Some(found)) if found > FORMAT_VERSION => Err(Error::new(
            ErrorCode::MigrationRequired,
            format!("the store has format version {found}, newer than the version {FORMAT_VERSION} this build reads"),
        )
        .with_detail("found_version", found)
        .with_detail("supported_version", FORMAT_VERSION)),
        Some(Some(found)) => Err(Error::new(
            ErrorCode::MigrationRequired,
            format!("the store has the unknown format version {found} (this build reads {FORMAT_VERSION})"),
        )
        .with_detail("found_version", found)
        .with_detail("supported_version", FORMAT_VERSION)),
        Some(None) => Err(Error::new(
            ErrorCode::MigrationRequired,
            "the store's meta table has no format version record: unknown format",
        )),
        None if has_tables => Err(Error::new(
            ErrorCode::MigrationRequired,
            "the redb file holds tables but no agent-session-manager format version: not a store of this version",
        )),
        None => init(db),
    }
}

fn init(db: &Database) -> Result<()> {
    let txn = db.begin_write().map_err(|e| storage(Op::Write, "begin_write", e))?;
    {
        let w = |e: redb::TableError| storage(Op::Write, "create table", e);
        txn.open_table(SESSIONS).map_err(w)?;
        txn.open_table(SESSION_ORDER).map_err(w)?;
        txn.open_table(EVENTS).map_err(w)?;
        txn.open_table(EVENT_IDS).map_err(w)?;
        txn.open_table(RUN_STARTS).map_err(w)?;
        txn.open_table(RUNS).map_err(w)?;
        txn.open_table(SESSION_RUNS).map_err(w)?;
        let mut meta = txn.open_table(META).map_err(w)?;
        meta.insert(FORMAT_VERSION_KEY, FORMAT_VERSION).map_err(|e| storage(Op::Write, "write format version", e))?;
    }
    txn.commit().map_err(|e| storage(Op::Write, "commit", e))?;
    tracing::debug!(version = FORMAT_VERSION, "initialised a new redb store");
    Ok(())
}
