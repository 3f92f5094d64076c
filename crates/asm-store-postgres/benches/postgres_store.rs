//! `PostgresSessionStore` beside raw `tokio-postgres` statements on the same server, in the
//! same run.
//!
//! ```text
//! cargo bench -p asm-store-postgres --bench postgres_store
//! ```
//!
//! The server is `ASM_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! the bench works in a schema of its own and drops it at the end. All writes are durable
//! (the server's `synchronous_commit`, `on` by default).
//!
//! 0. median latency, one caller, interleaved samples (printed before criterion's output): a raw
//!    `SELECT 1`, a raw one-row `INSERT`, the store's `append_event` and a fenced append, as
//!    ratios to the round trip and to the raw insert;
//! 1. latency, one caller: a raw `SELECT 1` (one loopback round trip), a raw single-row
//!    `INSERT` in autocommit (one round trip + one WAL flush), and the store's `append_event`;
//! 2. throughput: raw 100-row multi-row `INSERT`s (one connection, autocommit), raw single-row
//!    `INSERT`s from 64 connections at once, and the store with 64 concurrent appenders (one
//!    event per call), each on its own session, each on its own session owned through a lease
//!    (fenced appends), and all on one session.
//!
//! The raw table has the store's event columns and indexes (primary key `(session_id,
//! sequence)`, unique id), and the raw rows carry the same JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use asm_core::{Event, EventKind, RunId, Session, SessionId};
use asm_ports::{Lease, SessionStore, SessionStoreExt};
use asm_store_postgres::{PostgresOptions, PostgresSessionStore};
use criterion::{Criterion, Throughput};
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

const APPENDERS: usize = 64;

fn url() -> String {
    std::env::var("ASM_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// A representative streamed chunk: a run, a provider, a short delta.
fn event(session: &SessionId, run: &RunId, n: u64) -> Event {
    Event::new(EventKind::MessageStreamed, session.clone())
        .with_run(run.clone())
        .with_provider("claude")
        .with_data("delta", format!("chunk {n}: the quick brown fox jumps over the lazy dog"))
}

async fn connect() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {} (set ASM_TEST_POSTGRES_URL): {e}", url()));
    tokio::spawn(connection);
    client
}

struct Fixture {
    schema: String,
    store: PostgresSessionStore,
    sessions: Vec<Session>,
    /// Sessions owned through leases (fenced appends), one per appender.
    owned: Vec<Lease>,
    run: RunId,
    /// Raw sequence numbers (one raw "session" per fixture).
    raw_sequence: Arc<AtomicI64>,
    raw_session: Uuid,
}

async fn fixture() -> Fixture {
    let schema = format!("asm_bench_{}", std::process::id());
    let admin = connect().await;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE;
             CREATE SCHEMA {schema};
             CREATE TABLE {schema}.raw_events (
                 session_id uuid NOT NULL, sequence bigint NOT NULL, id uuid NOT NULL, run_id uuid,
                 kind text NOT NULL, ts timestamptz NOT NULL, schema_version integer NOT NULL,
                 provider text, correlation_id text, data json NOT NULL, metadata json NOT NULL,
                 PRIMARY KEY (session_id, sequence), UNIQUE (id));"
        ))
        .await
        .expect("raw table");
    let mut options = PostgresOptions::new(&url()).expect("options").schema(&schema).expect("schema");
    // ASM_PG_BENCH_WRITERS: try another number of group-commit writers.
    if let Some(writers) = std::env::var("ASM_PG_BENCH_WRITERS").ok().and_then(|w| w.parse().ok()) {
        options = options.writers(writers);
    }
    // ASM_PG_BENCH_MAX_GROUP: try another group size cap.
    if let Some(max_group) = std::env::var("ASM_PG_BENCH_MAX_GROUP").ok().and_then(|w| w.parse().ok()) {
        options = options.max_group(max_group);
    }
    let store = PostgresSessionStore::connect_with(options).await.expect("open the store");
    let mut sessions = Vec::new();
    for _ in 0..APPENDERS {
        let session = Session::new("bench").expect("session");
        store.save_session(&session).await.expect("save_session");
        sessions.push(session);
    }
    let mut owned = Vec::new();
    for i in 0..APPENDERS {
        let session = Session::new("bench-owned").expect("session");
        store.save_session(&session).await.expect("save_session");
        let leases = store.leases().expect("leases");
        owned.push(leases.acquire(&session.id, &format!("bench-{i}"), Duration::from_secs(3600)).await.expect("lease"));
    }
    Fixture {
        schema,
        store,
        sessions,
        owned,
        run: RunId::new(),
        raw_sequence: Arc::new(AtomicI64::new(0)),
        raw_session: Uuid::now_v7(),
    }
}

/// Raw rows like the store's: `n` rows of the sample event, in one multi-row INSERT.
async fn raw_insert(client: &Raw, schema: &str, session: Uuid, first: i64, n: usize) {
    let sample = event(&SessionId::new(), &RunId::new(), 1);
    let mut sql = format!(
        "INSERT INTO {schema}.raw_events (session_id, sequence, id, run_id, kind, ts, schema_version, provider, \
         correlation_id, data, metadata) VALUES "
    );
    let run = Uuid::now_v7();
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let seqs: Vec<i64> = (0..n as i64).map(|i| first + i).collect();
    let kind = "message_streamed";
    let provider = Some("claude");
    let corr: Option<&str> = None;
    let version = 1i32;
    let data = Json(&sample.data);
    let meta = Json(&sample.metadata);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        let base = params.len();
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 5,
            base + 6,
            base + 7,
            base + 8,
            base + 9,
            base + 10,
            base + 11
        ));
        params.extend([
            &session as &(dyn ToSql + Sync),
            &seqs[i],
            &ids[i],
            &run,
            &kind,
            &sample.timestamp,
            &version,
            &provider,
            &corr,
            &data,
            &meta,
        ]);
    }
    let stmt = client.prepare_cached_or(&sql).await;
    client.execute(&stmt, &params).await;
}

/// A raw connection with its prepared statements (the raw side should not pay a parse per
/// call either).
struct Raw {
    client: tokio_postgres::Client,
    cache: parking_lot::Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
}

impl Raw {
    async fn connect() -> Self {
        Self { client: connect().await, cache: parking_lot::Mutex::new(std::collections::HashMap::new()) }
    }

    async fn prepare_cached_or(&self, sql: &str) -> tokio_postgres::Statement {
        if let Some(stmt) = self.cache.lock().get(sql) {
            return stmt.clone();
        }
        let stmt = self.client.prepare(sql).await.expect("prepare");
        self.cache.lock().insert(sql.to_owned(), stmt.clone());
        stmt
    }

    async fn execute(&self, stmt: &tokio_postgres::Statement, params: &[&(dyn ToSql + Sync)]) -> u64 {
        self.client.execute(stmt, params).await.expect("raw insert")
    }
}

fn latency(c: &mut Criterion, rt: &tokio::runtime::Runtime, fx: &Fixture) {
    let mut group = c.benchmark_group("postgres_latency");
    group.throughput(Throughput::Elements(1));
    let client = rt.block_on(Raw::connect());
    let select = rt.block_on(client.client.prepare("SELECT 1")).expect("prepare");
    group.bench_function("raw_select_1_round_trip", |b| {
        b.to_async(rt).iter(|| async { client.client.query_one(&select, &[]).await.expect("select") });
    });
    group.bench_function("raw_insert_1_row_autocommit", |b| {
        b.to_async(rt).iter(|| async {
            let first = fx.raw_sequence.fetch_add(1, Ordering::SeqCst) + 1;
            raw_insert(&client, &fx.schema, fx.raw_session, first, 1).await;
        });
    });
    let session = &fx.sessions[0];
    let mut n = 0;
    group.bench_function("store_append_event", |b| {
        b.to_async(rt).iter(|| {
            n += 1;
            let e = event(&session.id, &fx.run, n);
            async { fx.store.append_event(e).await.expect("append") }
        });
    });
    group.finish();
}

fn throughput(c: &mut Criterion, rt: &tokio::runtime::Runtime, fx: &Fixture) {
    let mut group = c.benchmark_group("postgres_throughput");
    group.throughput(Throughput::Elements(100));
    let client = rt.block_on(Raw::connect());
    group.bench_function("raw_insert_100_rows", |b| {
        b.to_async(rt).iter(|| async {
            let first = fx.raw_sequence.fetch_add(100, Ordering::SeqCst) + 1;
            raw_insert(&client, &fx.schema, fx.raw_session, first, 100).await;
        });
    });

    group.throughput(Throughput::Elements(APPENDERS as u64));
    let clients: Vec<Arc<Raw>> = rt
        .block_on(futures::future::join_all((0..APPENDERS).map(|_| Raw::connect())))
        .into_iter()
        .map(Arc::new)
        .collect();
    group.bench_function("raw_64_connections_insert_1_row", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let clients = clients.clone();
            let schema = fx.schema.clone();
            async move {
                let started = Instant::now();
                let tasks: Vec<_> = clients
                    .into_iter()
                    .map(|client| {
                        let schema = schema.clone();
                        tokio::spawn(async move {
                            let session = Uuid::now_v7();
                            for i in 0..iters {
                                raw_insert(&client, &schema, session, i as i64 + 1, 1).await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("raw task");
                }
                started.elapsed()
            }
        });
    });
    drop(clients);

    // Fenced: every appender owns its session (SessionLeases::append_fenced); the fencing
    // token is checked in the group-commit writer's transaction, so these batch like the rest.
    group.bench_function("store_64_fenced_appenders_64_owned_sessions", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = fx.store.clone();
            let owned = fx.owned.clone();
            let run = fx.run.clone();
            async move {
                let started = Instant::now();
                let tasks: Vec<_> = owned
                    .into_iter()
                    .map(|lease| {
                        let store = store.clone();
                        let run = run.clone();
                        tokio::spawn(async move {
                            let leases = store.leases().expect("leases");
                            for i in 0..iters {
                                let e = event(&lease.session_id, &run, i);
                                leases.append_fenced(&lease, vec![e], None).await.expect("fenced append");
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("appender");
                }
                started.elapsed()
            }
        });
    });

    for (name, one_session) in [("store_64_appenders_64_sessions", false), ("store_64_appenders_1_session", true)] {
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let store = fx.store.clone();
                let sessions: Vec<SessionId> =
                    (0..APPENDERS).map(|i| fx.sessions[if one_session { 0 } else { i }].id.clone()).collect();
                let run = fx.run.clone();
                async move {
                    let started = Instant::now();
                    let tasks: Vec<_> = sessions
                        .into_iter()
                        .map(|session| {
                            let store = store.clone();
                            let run = run.clone();
                            tokio::spawn(async move {
                                for i in 0..iters {
                                    store.append_event(event(&session, &run, i)).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("appender");
                    }
                    started.elapsed()
                }
            });
        });
    }
    group.finish();
}

/// The median of `samples` (sorted in place).
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Medians of single-caller latencies, interleaved in one loop so that all see the same load:
/// a raw `SELECT 1` (one loopback round trip), a raw one-row autocommit `INSERT` (a round trip
/// and a WAL flush), the store's `append_event` and a fenced append. Printed as ratios to the
/// round trip and to the raw durable insert (criterion reports means; the target is a median).
fn median_latency(rt: &tokio::runtime::Runtime, fx: &Fixture) {
    const SAMPLES: usize = 400;
    rt.block_on(async {
        let client = Raw::connect().await;
        let select = client.client.prepare("SELECT 1").await.expect("prepare");
        let session = &fx.sessions[1];
        let lease = &fx.owned[1];
        let leases = fx.store.leases().expect("leases");
        let (mut rtt, mut raw, mut append, mut fenced) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for n in 0..SAMPLES as u64 + 20 {
            let t = Instant::now();
            client.client.query_one(&select, &[]).await.expect("select");
            let a = t.elapsed();
            let t = Instant::now();
            let first = fx.raw_sequence.fetch_add(1, Ordering::SeqCst) + 1;
            raw_insert(&client, &fx.schema, fx.raw_session, first, 1).await;
            let b = t.elapsed();
            let t = Instant::now();
            fx.store.append_event(event(&session.id, &fx.run, n)).await.expect("append");
            let c = t.elapsed();
            let t = Instant::now();
            leases.append_fenced(lease, vec![event(&lease.session_id, &fx.run, n)], None).await.expect("fenced");
            let d = t.elapsed();
            // The first rounds warm the statement caches.
            if n >= 20 {
                rtt.push(a);
                raw.push(b);
                append.push(c);
                fenced.push(d);
            }
        }
        let (rtt, raw, append, fenced) = (median(&mut rtt), median(&mut raw), median(&mut append), median(&mut fenced));
        let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64();
        #[allow(clippy::print_stdout)]
        {
            println!("median latency over {SAMPLES} interleaved samples (one caller):");
            println!("  raw SELECT 1 round trip        {:>9.1} us", rtt.as_secs_f64() * 1e6);
            println!(
                "  raw 1-row INSERT (autocommit)  {:>9.1} us  = {:.2} round trips",
                raw.as_secs_f64() * 1e6,
                ratio(raw, rtt)
            );
            println!(
                "  store append_event             {:>9.1} us  = {:.2} round trips, {:.2}x the raw insert",
                append.as_secs_f64() * 1e6,
                ratio(append, rtt),
                ratio(append, raw)
            );
            println!(
                "  store append_fenced            {:>9.1} us  = {:.2} round trips, {:.2}x the raw insert",
                fenced.as_secs_f64() * 1e6,
                ratio(fenced, rtt),
                ratio(fenced, raw)
            );
        }
    });
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let rt = runtime();
    let fx = rt.block_on(fixture());
    median_latency(&rt, &fx);
    latency(&mut c, &rt, &fx);
    throughput(&mut c, &rt, &fx);
    let Fixture { schema, store, .. } = fx;
    drop(store);
    rt.block_on(async {
        let admin = connect().await;
        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.expect("drop the bench schema");
    });
    c.final_summary();
}
