//! What every test of this crate shares: the server, and one schema per test.
//!
//! The server is `ASM_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! There is no skipping: a test that cannot reach the server fails and says so.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use asm_store_postgres::{PostgresOptions, PostgresSessionStore, RetryPolicy};

/// The default when `ASM_TEST_POSTGRES_URL` is not set (what CI sets).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn url() -> String {
    std::env::var("ASM_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema of its own for one test, dropped (with everything in it) when the guard drops.
#[derive(Debug)]
pub struct TestSchema {
    pub name: String,
    url: String,
}

impl TestSchema {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(20).collect();
        let name = format!("asm_t_{}_{}_{n}", tag.to_ascii_lowercase(), std::process::id());
        Self { name, url: url() }
    }

    /// Options for a store in this schema, with a short retry budget so a failure is quick.
    pub fn options(&self) -> PostgresOptions {
        PostgresOptions::new(&self.url)
            .and_then(|o| o.schema(&self.name))
            .unwrap_or_else(|e| panic!("bad test options: {e}"))
            .pool_size(6)
            .writers(2)
            .connect_timeout(Duration::from_secs(5))
            .retry(RetryPolicy::new().max_elapsed(Duration::from_secs(10)))
    }

    pub async fn store(&self) -> PostgresSessionStore {
        open(self.options()).await
    }
}

pub async fn open(options: PostgresOptions) -> PostgresSessionStore {
    match PostgresSessionStore::connect_with(options).await {
        Ok(store) => store,
        Err(e) => {
            panic!("cannot open a PostgreSQL store at {} (set ASM_TEST_POSTGRES_URL to a reachable server): {e}", url())
        }
    }
}

/// Runs SQL on the test server, outside any store (on its own thread and runtime, so it works
/// from `Drop` and from inside a runtime alike).
pub fn admin_sql(sql: String) -> Result<(), String> {
    let url = url();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let (client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
            let driver = tokio::spawn(connection);
            let result = client.batch_execute(&sql).await.map_err(|e| e.to_string());
            drop(client);
            let _ = driver.await;
            result
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_owned())?
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Err(e) = admin_sql(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name)) {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

/// Waits (bounded: 10 s) until `condition` holds, checking every 10 ms.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
