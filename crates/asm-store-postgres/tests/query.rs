#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The query and maintenance section of the `asm-testkit` suite, run against
//! [`PostgresSessionStore`](asm_store_postgres::PostgresSessionStore): one test per check, each
//! in a schema of its own, plus the whole section twice on one shared schema.

mod common;

use asm_testkit::query_conformance;
use common::TestSchema;

macro_rules! query_checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let schema = TestSchema::new(stringify!($name));
                let store = schema.store().await;
                query_conformance::$name(&store).await;
            }
        )*
    };
}

asm_testkit::for_each_query_check!(query_checks);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_shared_schema() {
    let schema = TestSchema::new("query_all");
    let store = schema.store().await;
    query_conformance::run_all(&store).await;
    query_conformance::run_all(&store).await;
}

/// A schema at version 2 (made before the query port) is upgraded to versions 3 and 4 in place on
/// open: its data stays, the query indexes appear, and the queries work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_schema_is_upgraded_in_place() {
    use asm_core::{Session, SessionStatus};
    use asm_ports::{QueryStore, SessionSearch, SessionStore};

    let schema = TestSchema::new("upgrade_v2");
    let store = schema.store().await;
    let mut session = Session::new("upgrade").unwrap();
    session.status = SessionStatus::Completed;
    store.save_session(&session).await.unwrap();
    drop(store);
    // Back to what a version-2 build left behind.
    let s = &schema.name;
    common::admin_sql(format!(
        "DROP INDEX \"{s}\".asm_sessions_updated; DROP INDEX \"{s}\".asm_sessions_agent_updated; \
         DROP INDEX \"{s}\".asm_runs_created; DROP INDEX \"{s}\".asm_runs_provider; \
         DROP INDEX \"{s}\".asm_events_ts; \
         DELETE FROM \"{s}\".asm_schema_migrations WHERE version IN (3, 4)"
    ))
    .unwrap();
    let store = schema.store().await;
    let found = store.search_sessions(&SessionSearch::new().agent("upgrade")).await.unwrap();
    assert_eq!(found.items, vec![session], "the data survives the upgrade");
    // The upgrade recorded version 3 (a second open finds nothing to do and the index exists).
    common::admin_sql(format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM \"{s}\".asm_schema_migrations WHERE version = 3) THEN \
             RAISE EXCEPTION 'version 3 is not recorded'; \
           END IF; \
           PERFORM '\"{s}\".asm_sessions_updated'::regclass; \
         END $$"
    ))
    .map_err(|e| format!("version 3 was not applied again: {e}"))
    .unwrap();
    drop(store);
    schema.store().await;
}

/// Makes orphans as a damaged database holds them: the session row is deleted with plain SQL,
/// around the store; its runs and head row go by their foreign keys, its events (no foreign key)
/// stay.
struct DeleteSessionRow(String);

#[async_trait::async_trait]
impl query_conformance::OrphanMaker for DeleteSessionRow {
    async fn orphan(&self, _store: &dyn asm_ports::MaintenanceStore, session: &asm_core::Session) -> u64 {
        let uuid = session.id.as_str().get(4..).unwrap().to_owned();
        common::admin_sql(format!("DELETE FROM \"{}\".asm_sessions WHERE id = '{uuid}'", self.0)).unwrap();
        // Its 3 events.
        3
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_counted_and_removed() {
    let schema = TestSchema::new("query_orphans");
    let store = schema.store().await;
    query_conformance::check_orphans_removed(&store, &DeleteSessionRow(schema.name.clone())).await;
}
