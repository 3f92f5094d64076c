//! The query and maintenance section of the `asm-testkit` suite, run against [`SledSessionStore`]
//! on temp dirs (the same tests as every file-based store: [`asm_testkit::file_store_query_tests!`]).

use std::path::Path;

use asm_store_sled::SledSessionStore;

fn open(path: &Path) -> SledSessionStore {
    SledSessionStore::open(path).expect("open the store")
}

asm_testkit::file_store_query_tests!(open);
