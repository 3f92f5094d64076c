//! What every test of this crate shares: the server, and one schema per test.
//!
//! The server is `ASM_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! There is no skipping: a test that cannot reach the server fails and says so.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::time::Duration;

// Each test binary uses a part of these.
#[allow(unused_imports)]
pub use asm_store_postgres::test_util::{TestSchema, admin_sql, open, url};

/// Waits (bounded: 10 s) until `condition` holds, checking every 10 ms.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
