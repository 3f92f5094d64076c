//! Helpers shared by the redb store's integration tests: raw writes to a store file.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use redb::TableDefinition;

/// The store's metadata table.
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("asm_meta");

/// Sets (or, with `None`, removes) the format version recorded in the store file at `path`.
pub fn set_format_version(path: &Path, version: Option<u64>) {
    let db = redb::Database::create(path).expect("open raw");
    let txn = db.begin_write().expect("begin_write");
    {
        let mut meta = txn.open_table(META).expect("meta table");
        match version {
            Some(v) => meta.insert("format_version", v).map(|_| ()),
            None => meta.remove("format_version").map(|_| ()),
        }
        .expect("write meta");
    }
    txn.commit().expect("commit");
}

/// Writes a redb file at `path` that is not a store: one foreign table.
pub fn write_foreign(path: &Path) {
    let db = redb::Database::create(path).expect("create raw");
    let txn = db.begin_write().expect("begin_write");
    {
        let table: TableDefinition<'static, u64, u64> = TableDefinition::new("something_else");
        txn.open_table(table).expect("table").insert(1, 2).expect("insert");
    }
    txn.commit().expect("commit");
}
