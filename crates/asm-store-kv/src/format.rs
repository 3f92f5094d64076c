//! The layout version check on open.

use asm_core::Result;

use crate::FORMAT_VERSION;
use crate::engine::{FormatRecord, KvEngine};
use crate::error::KvError;

/// The newest layout version written before this engine existed (each store had its own
/// layout, both numbered 1).
const LAST_PRE_KV_VERSION: u64 = 1;

/// Version 2 is this layout without the commit-order log: it opens as version 3 with an empty
/// log, once the log table is created and the record says 3.
const UPGRADABLE: u64 = 2;

/// Checks the engine's format record, or initialises an empty database.
///
/// # Errors
/// `migration_required` ([`KvError::Format`]) for a newer, older or unknown version, an
/// unreadable record, or a database that holds data but no record (not a store of this layout).
pub(crate) fn check_or_init<E: KvEngine>(engine: &E) -> Result<()> {
    match engine.read_format()? {
        FormatRecord::Version(FORMAT_VERSION) => Ok(()),
        FormatRecord::Version(found) if found > FORMAT_VERSION => Err(KvError::Format {
            message: format!(
                "the store has format version {found}, newer than the version {FORMAT_VERSION} this build reads"
            ),
            found: Some(found),
        }
        .into()),
        FormatRecord::Version(UPGRADABLE) => {
            engine.init(FORMAT_VERSION)?;
            tracing::info!(engine = E::NAME, from = UPGRADABLE, to = FORMAT_VERSION, "upgraded the store's layout");
            Ok(())
        }
        FormatRecord::Version(found) if (1..=LAST_PRE_KV_VERSION).contains(&found) => Err(KvError::Format {
            message: format!(
                "the store has format version {found}, the layout of an earlier build; this build reads version \
                 {FORMAT_VERSION} and does not migrate it (open it with the earlier build and export the sessions)"
            ),
            found: Some(found),
        }
        .into()),
        FormatRecord::Version(found) => Err(KvError::Format {
            message: format!("the store has the unknown format version {found} (this build reads {FORMAT_VERSION})"),
            found: Some(found),
        }
        .into()),
        FormatRecord::Unreadable(what) => {
            Err(KvError::Format { message: format!("the store's format record is unreadable: {what}"), found: None }
                .into())
        }
        FormatRecord::Absent { empty: false } => Err(KvError::Format {
            message: format!(
                "the {} database holds data but no agent-session-manager format record: not a store of this layout",
                E::NAME
            ),
            found: None,
        }
        .into()),
        FormatRecord::Absent { empty: true } => {
            engine.init(FORMAT_VERSION)?;
            tracing::debug!(engine = E::NAME, version = FORMAT_VERSION, "initialised a new store");
            Ok(())
        }
    }
}
