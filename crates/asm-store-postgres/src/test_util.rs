//! Test support (feature `test-util`): the test server and one schema per test, for this
//! crate's tests and for any test that needs a real PostgreSQL store (the runtime's
//! multi-process tests, an application's own).
//!
//! The server is `ASM_TEST_POSTGRES_URL` (default [`DEFAULT_URL`]). There is no skipping: a
//! test that cannot reach the server fails and says so.
//!
//! ```no_run
//! # async fn demo() {
//! use asm_store_postgres::test_util::TestSchema;
//! let schema = TestSchema::new("my_test");
//! let store = schema.store().await; // migrated, in a schema of its own
//! # drop(store);
//! // The schema and everything in it is dropped with `schema`.
//! # }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{PostgresOptions, PostgresSessionStore, RetryPolicy};

/// The server when `ASM_TEST_POSTGRES_URL` is not set (what CI provides).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test server's URL: `ASM_TEST_POSTGRES_URL`, else [`DEFAULT_URL`].
pub fn url() -> String {
    std::env::var("ASM_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema of its own for one test, dropped (with everything in it) when the guard drops.
#[derive(Debug)]
pub struct TestSchema {
    /// The schema's name: `asm_t_<tag>_<pid>_<n>`, unique in this process and across
    /// processes running at once.
    pub name: String,
}

impl TestSchema {
    /// A new schema name from `tag` (its first 20 ASCII letters, digits and `_`); the schema
    /// itself is created by the first store opened in it.
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(20).collect();
        let name = format!("asm_t_{}_{}_{n}", tag.to_ascii_lowercase(), std::process::id());
        Self { name }
    }

    /// Options for a store in this schema, with a short retry budget so a failure is quick.
    ///
    /// # Panics
    /// If the test URL is not a valid PostgreSQL URL.
    pub fn options(&self) -> PostgresOptions {
        Self::options_for(&self.name)
    }

    /// [`options`](Self::options) for a schema named elsewhere (another process's).
    ///
    /// # Panics
    /// If the test URL or `schema` is invalid.
    pub fn options_for(schema: &str) -> PostgresOptions {
        PostgresOptions::new(&url())
            .and_then(|o| o.schema(schema))
            .unwrap_or_else(|e| panic!("bad test options: {e}"))
            .pool_size(6)
            .writers(2)
            .connect_timeout(Duration::from_secs(5))
            .retry(RetryPolicy::new().max_elapsed(Duration::from_secs(10)))
    }

    /// A store in this schema.
    ///
    /// # Panics
    /// If the server cannot be reached (the message names `ASM_TEST_POSTGRES_URL`).
    pub async fn store(&self) -> PostgresSessionStore {
        open(self.options()).await
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Err(e) = admin_sql(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name)) {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

/// Opens a store with `options`.
///
/// # Panics
/// If the server cannot be reached (the message names `ASM_TEST_POSTGRES_URL`).
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
///
/// # Errors
/// The connection or statement error, as text.
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
