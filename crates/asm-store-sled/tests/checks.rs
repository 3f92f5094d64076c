//! The robustness checks of `asm-store-kv` (the same limits and error codes in every KV store),
//! run against [`SledSessionStore`].

use std::path::Path;
use std::sync::Arc;

use asm_ports::DynSessionStore;
use asm_store_kv::checks::{self, Subject};
use asm_store_sled::{FORMAT_VERSION_KEY, SledOptions, SledSessionStore};

fn open(path: &Path, max_event_bytes: usize, compact_after_events: usize) -> asm_core::Result<DynSessionStore> {
    let options = SledOptions::new().max_event_bytes(max_event_bytes).compact_after_events(compact_after_events);
    let store = SledSessionStore::open_with(path, options)?;
    Ok(Arc::new(store))
}

fn set_format_version(path: &Path, version: Option<u64>) {
    let db = sled::open(path).expect("raw sled open");
    match version {
        Some(v) => db.insert(FORMAT_VERSION_KEY, &u32::try_from(v).expect("a u32 version").to_be_bytes()[..]).map(drop),
        None => db.remove(FORMAT_VERSION_KEY).map(drop),
    }
    .expect("write the format record");
    db.flush().expect("flush");
}

fn write_foreign(path: &Path) {
    let db = sled::open(path).expect("raw sled open");
    db.open_tree("someone_elses").expect("tree").insert(b"k", b"v").expect("insert");
    db.flush().expect("flush");
}

const SLED: Subject = Subject { name: "sled", open, set_format_version, write_foreign };

#[test]
fn lock() {
    checks::check_lock(&SLED);
}

#[test]
fn unopenable_path() {
    checks::check_unopenable_path(&SLED);
}

#[test]
fn event_cap() {
    checks::check_event_cap(&SLED);
}

#[test]
fn json_depth() {
    checks::check_json_depth(&SLED);
}

#[test]
fn format_versions() {
    checks::check_format_versions(&SLED);
}

#[test]
fn foreign_database() {
    checks::check_foreign_database(&SLED);
}

#[test]
fn reopen_with_compactions() {
    checks::check_reopen_with_compactions(&SLED);
}

#[test]
fn refused_request_fails_alone() {
    checks::check_refused_request_fails_alone(&SLED);
}
