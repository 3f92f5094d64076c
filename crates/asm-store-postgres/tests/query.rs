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
