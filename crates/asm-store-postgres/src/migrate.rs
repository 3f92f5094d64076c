//! Embedded, versioned migrations.
//!
//! Every migration is a SQL file compiled into the crate. `asm_schema_migrations` records the
//! version, name and checksum of each one applied. Opening checks that record: a version this
//! build does not know (a newer build migrated the schema), a known version whose name or
//! checksum differs, or store tables without the record (a schema made by something else) are
//! [`ErrorCode::MigrationRequired`], never a silent misread. Missing migrations are applied in
//! order, in one transaction, under an advisory lock, so concurrent openers migrate once.

use asm_core::{Error, ErrorCode};

use crate::error::DbError;

/// One embedded migration.
pub(crate) struct Migration {
    pub(crate) version: i32,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration of this build, in order. A new one is appended with the next version; an
/// applied one is never edited (its checksum is recorded).
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "initial", sql: include_str!("../migrations/0001_initial.sql") },
    Migration { version: 2, name: "session_leases", sql: include_str!("../migrations/0002_session_leases.sql") },
    Migration { version: 3, name: "query_indexes", sql: include_str!("../migrations/0003_query_indexes.sql") },
    Migration { version: 4, name: "event_search", sql: include_str!("../migrations/0004_event_search.sql") },
];

/// The schema version this build reads and writes.
pub(crate) fn current_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// FNV-1a, 64 bit: a stable checksum of a migration's text (not a security measure: it tells
/// an edited migration from the one this build carries).
pub(crate) fn checksum(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// `"schema"`: the schema name as a quoted identifier (names are validated to `[a-z0-9_]`).
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

fn render(sql: &str, schema: &str, channel: &str) -> String {
    sql.replace("{schema}", &quoted(schema)).replace("{channel}", &format!("'{channel}'"))
}

fn migration_required(message: String) -> Error {
    Error::new(ErrorCode::MigrationRequired, message).with_detail("supported_version", current_version())
}

/// Checks the schema and applies the missing migrations (when `apply`).
pub(crate) async fn migrate(
    client: &mut tokio_postgres::Client,
    schema: &str,
    channel: &str,
    apply: bool,
) -> std::result::Result<(), DbError> {
    let q = quoted(schema);
    let tx = client.transaction().await?;
    // One migrator per schema at a time, across processes.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('asm-store-postgres:' || $1::text))", &[&schema]).await?;
    let schema_exists = tx.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema]).await?.is_some();
    let ledger_exists = tx
        .query_opt("SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'asm_schema_migrations'", &[&schema])
        .await?
        .is_some();
    let mut applied: Vec<(i32, String, i64)> = Vec::new();
    if ledger_exists {
        for row in tx
            .query(&format!("SELECT version, name, checksum FROM {q}.asm_schema_migrations ORDER BY version"), &[])
            .await?
        {
            applied.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
    } else if schema_exists {
        let foreign = tx
            .query_opt(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'asm\\_%' LIMIT 1",
                &[&schema],
            )
            .await?;
        if let Some(row) = foreign {
            let table: String = row.try_get(0)?;
            return Err(migration_required(format!(
                "schema {schema} holds the table {table} but no asm_schema_migrations record: an unknown schema, \
                 not made by this store"
            ))
            .with_detail("schema", schema)
            .into());
        }
    }

    for (version, name, sum) in &applied {
        let Some(known) = MIGRATIONS.iter().find(|m| m.version == *version) else {
            return Err(migration_required(format!(
                "schema {schema} is at version {version} ({name}), newer than this build supports ({}): upgrade \
                 asm-store-postgres",
                current_version()
            ))
            .with_detail("schema", schema)
            .with_detail("found_version", *version)
            .into());
        };
        if known.name != name || checksum(known.sql) != *sum {
            return Err(migration_required(format!(
                "schema {schema} records migration {version} as {name:?} with another checksum than this build's \
                 {:?}: an unknown schema",
                known.name
            ))
            .with_detail("schema", schema)
            .with_detail("found_version", *version)
            .into());
        }
    }

    let missing: Vec<&Migration> =
        MIGRATIONS.iter().filter(|m| !applied.iter().any(|(v, _, _)| *v == m.version)).collect();
    if missing.is_empty() {
        tx.commit().await?;
        return Ok(());
    }
    if !apply {
        let found = applied.last().map_or(0, |(v, _, _)| *v);
        return Err(migration_required(format!(
            "schema {schema} is at version {found}; this build needs version {} and migrations are disabled",
            current_version()
        ))
        .with_detail("schema", schema)
        .with_detail("found_version", found)
        .into());
    }
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {q};
         CREATE TABLE IF NOT EXISTS {q}.asm_schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             checksum   bigint      NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    for migration in missing {
        tracing::info!(schema, version = migration.version, name = migration.name, "applying migration");
        tx.batch_execute(&render(migration.sql, schema, channel)).await?;
        tx.execute(
            &format!("INSERT INTO {q}.asm_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"),
            &[&migration.version, &migration.name, &checksum(migration.sql)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_contiguous_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i32::try_from(i).unwrap() + 1);
        }
        assert_eq!(current_version(), 4);
    }

    #[test]
    fn checksum_is_stable() {
        assert_eq!(checksum(""), i64::from_ne_bytes(0xcbf2_9ce4_8422_2325u64.to_ne_bytes()));
        assert_ne!(checksum("a"), checksum("b"));
    }

    #[test]
    fn rendering_quotes_the_schema() {
        let sql = render("CREATE TABLE {schema}.t (); SELECT pg_notify({channel}, 'x');", "s1", "asm_events_s1");
        assert_eq!(sql, "CREATE TABLE \"s1\".t (); SELECT pg_notify('asm_events_s1', 'x');");
    }
}
