//! The robustness checks of `asm-store-kv` (the same limits and error codes in every KV store),
//! run against [`RedbSessionStore`].

use std::path::Path;
use std::sync::Arc;

use asm_ports::DynSessionStore;
use asm_store_kv::checks::{self, Subject};
use asm_store_redb::{RedbOptions, RedbSessionStore};

mod common;
use common::{set_format_version, write_foreign};

fn open(path: &Path, max_event_bytes: usize, compact_after_events: usize) -> asm_core::Result<DynSessionStore> {
    let options = RedbOptions::new().max_event_bytes(max_event_bytes).compact_after_events(compact_after_events);
    let store = RedbSessionStore::open_with(path, options)?;
    Ok(Arc::new(store))
}

const REDB: Subject = Subject { name: "redb", open, set_format_version, write_foreign };

#[test]
fn lock() {
    checks::check_lock(&REDB);
}

#[test]
fn unopenable_path() {
    checks::check_unopenable_path(&REDB);
}

#[test]
fn event_cap() {
    checks::check_event_cap(&REDB);
}

#[test]
fn json_depth() {
    checks::check_json_depth(&REDB);
}

#[test]
fn format_versions() {
    checks::check_format_versions(&REDB);
}

#[test]
fn foreign_database() {
    checks::check_foreign_database(&REDB);
}

#[test]
fn reopen_with_compactions() {
    checks::check_reopen_with_compactions(&REDB);
}

#[test]
fn refused_request_fails_alone() {
    checks::check_refused_request_fails_alone(&REDB);
}
