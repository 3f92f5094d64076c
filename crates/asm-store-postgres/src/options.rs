//! Store options.

use std::str::FromStr;
use std::time::Duration;

use asm_core::{Error, ErrorCode, Result};

/// How a failed database call is retried: transient failures (a lost or refused connection, a
/// serialisation failure, a deadlock) are retried with exponential backoff until `max_elapsed`
/// has passed since the first attempt; then the call fails with
/// [`ErrorCode::StorageConnectionFailed`] (retryable). Retrying is safe for every write because
/// appends are idempotent by event id: a retried append whose first attempt did commit finds
/// its events stored and returns them, it never stores them twice.
///
/// ```
/// use std::time::Duration;
/// use asm_store_postgres::RetryPolicy;
/// let policy = RetryPolicy::new().max_elapsed(Duration::from_secs(2)).first_backoff(Duration::from_millis(5));
/// assert_eq!(policy.max_elapsed, Duration::from_secs(2));
/// assert_eq!(RetryPolicy::default().max_backoff, Duration::from_millis(500));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Give up once this much time has passed since the first attempt. Default 10 s.
    pub max_elapsed: Duration,
    /// The wait after the first failure; doubled after every further failure. Default 10 ms.
    pub first_backoff: Duration,
    /// The longest wait between two attempts. Default 500 ms.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_elapsed: Duration::from_secs(10),
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    asm_core::builder_setters! {
        /// Sets [`RetryPolicy::max_elapsed`] (zero: a single attempt).
        fn max_elapsed(max_elapsed: Duration) { max_elapsed = max_elapsed }
        /// Sets [`RetryPolicy::first_backoff`].
        fn first_backoff(first_backoff: Duration) { first_backoff = first_backoff }
        /// Sets [`RetryPolicy::max_backoff`].
        fn max_backoff(max_backoff: Duration) { max_backoff = max_backoff }
    }
}

/// Options of [`PostgresSessionStore::connect_with`](crate::PostgresSessionStore::connect_with).
///
/// The connection string is a libpq-style URL or key/value string, as `tokio-postgres` parses it
/// (`postgres://user@host:5432/db`, `host=/run/postgresql user=me dbname=db`). Connections are
/// plain TCP or Unix sockets (no TLS: put the database on a trusted network or behind a local
/// TLS tunnel).
///
/// ```
/// use asm_store_postgres::PostgresOptions;
/// let options = PostgresOptions::new("postgres://postgres@127.0.0.1:5432/test")?
///     .schema("asm_app")?
///     .pool_size(8);
/// assert_eq!(options.schema_name(), "asm_app");
/// assert!(PostgresOptions::new("postgres://u@h/db")?.schema("Robert'); DROP TABLE x;--").is_err());
/// assert!(PostgresOptions::new("not a url ::: =").is_err());
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresOptions {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) schema: String,
    /// Pooled connections for reads, run and session writes, and the group-commit writers.
    /// Default 16.
    pub pool_size: usize,
    /// Writer tasks committing appends in groups; each holds a pooled connection while it
    /// commits. Default 2: while one group commits, the next one gathers (more writers make
    /// smaller groups).
    pub writers: usize,
    /// The most appends one group commit carries. Default 128.
    pub max_group: usize,
    /// The cap on one event ([`asm_ports::backend::event_size`]); larger events are
    /// [`ErrorCode::InvalidInput`]. Default [`asm_ports::MAX_EVENT_BYTES`].
    pub max_event_bytes: usize,
    /// How long one connection attempt may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How failed calls are retried.
    pub retry: RetryPolicy,
    /// Create the schema or bring it to this build's version when opening. Default `true`;
    /// with `false` an older schema is [`ErrorCode::MigrationRequired`].
    pub migrate: bool,
}

impl PostgresOptions {
    /// The longest schema name accepted (the NOTIFY channel name is derived from it and
    /// PostgreSQL identifiers have at most 63 bytes).
    pub const MAX_SCHEMA_LEN: usize = 48;

    /// Options for the database at `url`, in schema `public`.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidInput`] when the connection string does not parse.
    pub fn new(url: &str) -> Result<Self> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::new(ErrorCode::InvalidInput, format!("invalid PostgreSQL connection string: {e}")))?;
        Ok(Self {
            config,
            schema: "public".to_owned(),
            pool_size: 16,
            writers: 2,
            max_group: 128,
            max_event_bytes: asm_ports::MAX_EVENT_BYTES,
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            migrate: true,
        })
    }

    /// Keeps the store's tables in `schema` (created if missing), so several stores can share
    /// one database.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidInput`] unless the name is 1 to [`Self::MAX_SCHEMA_LEN`] characters
    /// of `a-z`, `0-9` and `_`, not starting with a digit.
    pub fn schema(mut self, schema: &str) -> Result<Self> {
        let valid = !schema.is_empty()
            && schema.len() <= Self::MAX_SCHEMA_LEN
            && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !schema.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(Error::new(
                ErrorCode::InvalidInput,
                format!(
                    "invalid schema name {schema:?}: expected 1 to {} characters of a-z, 0-9 and _, not starting with a digit",
                    Self::MAX_SCHEMA_LEN
                ),
            ));
        }
        self.schema = schema.to_owned();
        Ok(self)
    }

    /// The schema the store uses.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    asm_core::builder_setters! {
        /// Sets [`PostgresOptions::pool_size`] (at least 2: one for a writer, one for reads).
        fn pool_size(pool_size: usize) { pool_size = pool_size.max(2) }
        /// Sets [`PostgresOptions::writers`] (at least 1).
        fn writers(writers: usize) { writers = writers.max(1) }
        /// Sets [`PostgresOptions::max_group`] (at least 1).
        fn max_group(max_group: usize) { max_group = max_group.max(1) }
        /// Sets [`PostgresOptions::max_event_bytes`].
        fn max_event_bytes(max_event_bytes: usize) { max_event_bytes = max_event_bytes }
        /// Sets [`PostgresOptions::connect_timeout`].
        fn connect_timeout(connect_timeout: Duration) { connect_timeout = connect_timeout }
        /// Sets [`PostgresOptions::retry`].
        fn retry(retry: RetryPolicy) { retry = retry }
        /// Sets [`PostgresOptions::migrate`].
        fn migrate(migrate: bool) { migrate = migrate }
    }

    /// The NOTIFY channel of the schema.
    pub(crate) fn channel(&self) -> String {
        format!("asm_events_{}", self.schema)
    }
}
