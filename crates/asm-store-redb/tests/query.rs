//! The query and maintenance section of the `asm-testkit` suite, run against [`RedbSessionStore`]
//! on temp dirs (the same tests as every file-based store: [`asm_testkit::file_store_query_tests!`]).

use std::path::Path;

use asm_store_redb::RedbSessionStore;

fn open(path: &Path) -> RedbSessionStore {
    RedbSessionStore::open(path).expect("open the store")
}

asm_testkit::file_store_query_tests!(open);
