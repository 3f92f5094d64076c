//! The query and maintenance ports of the PostgreSQL store.
//!
//! Queries are SQL: filters in the `WHERE` clause, keyset pagination as a row comparison
//! `(column, id) > / < (value, id)` matching the `ORDER BY` (indexes of migrations 3 and 4),
//! usage and cost aggregated by `GROUP BY` on (session, agent, provider, model, UTC day): the
//! report's finest groups, folded into the other groupings. Token counts are read from the run
//! document (`doc -> 'token_usage'`).
//!
//! Event search: a session filter uses the primary key `(session_id, sequence)`; the timestamp
//! orders and time ranges use `asm_events_ts (ts, id)` (migration 4); kinds, providers, the
//! correlation id and the payload substring (`strpos(data::text, ..)`, the `json` column's text
//! is what the store wrote) are filters on those scans, not indexes of their own: every index on
//! `asm_events` is paid by every append. Session stats are three grouped statements over the
//! session's index ranges in one read-only repeatable-read snapshot.
//!
//! Maintenance: pruning is one `DELETE` per session (protected kinds excluded in SQL); the
//! orphan cleanup deletes events whose session is gone (runs and sequence heads cannot be
//! orphaned: their foreign keys cascade); the health check compares each head row with
//! `max(sequence)` and counts events without a session (both scan `asm_events`' primary key).
//! The cycle itself is the port's default ([`asm_ports::backend::run_cycle`]): one statement per
//! session and step.

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use asm_core::{
    EventKind, Result, Run, RunStatus, Session, SessionId, SessionStatus, StoredEvent, Timestamp, TokenUsage,
};
use asm_ports::backend::is_protected_kind;
use asm_ports::{
    EventOrder, EventSearch, HealthIssue, HealthReport, Keyset, MaintenanceStore, Page, QueryStore, RunSearch,
    SessionOrder, SessionSearch, SessionStats, UsageAggregate, UsageGroup, UsageQuery, UsageReport,
};

use crate::PostgresSessionStore;
use crate::codec::{self, EVENT_COLUMNS, SESSION_COLUMNS, uuid_of};
use crate::error::{DbError, decode, session_not_found};

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

fn cursor_time(keyset: &Keyset) -> std::result::Result<Timestamp, DbError> {
    Timestamp::from_timestamp_micros(keyset.value).ok_or_else(|| decode("cursor time"))
}

fn limit_param(page_size: usize) -> i64 {
    i64::try_from(page_size).unwrap_or(i64::MAX).saturating_add(1)
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn protected_kinds() -> Vec<&'static str> {
    EventKind::ALL.iter().filter(|k| is_protected_kind(**k)).map(|k| k.as_str()).collect()
}

/// The snake_case names of statuses or kinds, as their text columns hold them.
fn names<T: Copy>(values: &[T], name: fn(T) -> &'static str) -> Vec<String> {
    values.iter().map(|v| name(*v).to_owned()).collect()
}

/// The keys of the run document's `token_usage` that usage totals add up.
const TOKEN_KEYS: [&str; 4] = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"];

/// The eleven aggregate columns of a group of runs of `asm_runs` (qualified by `alias`, e.g.
/// `r.`, or `""`), in the order [`usage_totals`] reads them: the four token sums, the summed
/// cost, the run count, the count of runs without a cost and their four token sums.
fn usage_totals_sql(alias: &str) -> String {
    let token = |key: &str| format!("coalesce(({alias}doc -> 'token_usage' ->> '{key}')::bigint, 0)");
    let sums = TOKEN_KEYS.map(|key| format!("coalesce(sum({}), 0)::bigint", token(key))).join(", ");
    let unpriced = TOKEN_KEYS
        .map(|key| format!("coalesce(sum({}) FILTER (WHERE {alias}cost_usd IS NULL), 0)::bigint", token(key)))
        .join(", ");
    format!(
        "{sums}, coalesce(sum({alias}cost_usd), 0)::double precision, count(*), \
         count(*) FILTER (WHERE {alias}cost_usd IS NULL), {unpriced}"
    )
}

/// The totals of the columns [`usage_totals_sql`] selects, starting at column `first`.
fn usage_totals(row: &Row, first: usize) -> std::result::Result<UsageAggregate, DbError> {
    let column = |offset: usize| -> std::result::Result<u64, DbError> { Ok(count(row.try_get(first + offset)?)) };
    let mut totals = UsageAggregate::default();
    totals.input_tokens = column(0)?;
    totals.output_tokens = column(1)?;
    totals.total_tokens = totals.input_tokens.saturating_add(totals.output_tokens);
    totals.cache_read_tokens = column(2)?;
    totals.cache_creation_tokens = column(3)?;
    totals.cost_usd = row.try_get(first + 4)?;
    totals.run_count = column(5)?;
    totals.unpriced_runs = column(6)?;
    totals.unpriced_usage = TokenUsage {
        input_tokens: column(7)?,
        output_tokens: column(8)?,
        cache_read_tokens: column(9)?,
        cache_creation_tokens: column(10)?,
    };
    Ok(totals)
}

/// A paged search as its task gets it: the query with its page size and the position its cursor
/// points after, both checked before the task starts (a bad limit or cursor never reaches the
/// database and is not retried).
struct PagedSearch<Q> {
    query: Q,
    page_size: usize,
    after: Option<Keyset>,
}

impl<Q> PagedSearch<Q> {
    fn new(query: Q, page_size: usize, after: Option<Keyset>) -> Self {
        Self { query, page_size, after }
    }
}

/// The column a keyset page sorts by, and how a cursor's sort value maps onto it.
#[derive(Clone, Copy)]
enum SortColumn {
    /// A `timestamptz` column; the cursor holds its µs since the epoch.
    Time(&'static str),
    /// A `bigint` column; the cursor holds its value.
    Integer(&'static str),
}

/// A statement being built: a `WHERE true` that `AND` conditions narrow, and its parameters. A
/// condition names its new parameter `$_`; it gets the next number here, so the filters of a
/// query can be added in any combination.
struct Statement {
    sql: String,
    params: Params,
}

impl Statement {
    fn new(head: String) -> Self {
        Self { sql: head, params: Vec::new() }
    }

    fn push_sql(&mut self, text: &str) {
        self.sql.push_str(text);
    }

    /// Adds `value` as the next parameter and returns its number.
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> usize {
        self.params.push(Box::new(value));
        self.params.len()
    }

    /// ` AND condition`, with `value` as the parameter `$_`.
    fn and(&mut self, condition: &str, value: impl ToSql + Sync + Send + 'static) {
        let n = self.param(value);
        self.push_sql(" AND ");
        self.push_sql(&condition.replace("$_", &format!("${n}")));
    }

    /// [`Statement::and`] when the filter is set.
    fn and_some(&mut self, condition: &str, value: Option<impl ToSql + Sync + Send + 'static>) {
        if let Some(value) = value {
            self.and(condition, value);
        }
    }

    /// [`Statement::and`] for a list filter: an empty list filters nothing.
    fn and_list<T>(&mut self, condition: &str, values: Vec<T>)
    where
        Vec<T>: ToSql + Sync + Send + 'static,
    {
        if !values.is_empty() {
            self.and(condition, values);
        }
    }

    /// The inclusive time range `from ..= to` of `column`, each end only when given.
    fn and_between(&mut self, column: &str, from: Option<Timestamp>, to: Option<Timestamp>) {
        self.and_some(&format!("{column} >= $_"), from);
        self.and_some(&format!("{column} <= $_"), to);
    }

    /// Ends the statement as one keyset page: the row comparison `(column, id) > / < (value,
    /// id)` with the cursor's position, the matching `ORDER BY`, and one row more than the page,
    /// which tells [`crate::Inner::fetch_page`] whether another page follows.
    fn keyset_page(
        &mut self,
        sort: SortColumn,
        ascending: bool,
        after: Option<&Keyset>,
        page_size: usize,
    ) -> std::result::Result<(), DbError> {
        let (cmp, dir) = if ascending { (">", "ASC") } else { ("<", "DESC") };
        let column = match sort {
            SortColumn::Time(column) | SortColumn::Integer(column) => column,
        };
        if let Some(keyset) = after {
            let v = match sort {
                SortColumn::Time(_) => self.param(cursor_time(keyset)?),
                SortColumn::Integer(_) => self.param(keyset.value),
            };
            let id = self.param(uuid_of(&keyset.id));
            self.push_sql(&format!(" AND ({column}, id) {cmp} (${v}, ${id})"));
        }
        let n = self.param(limit_param(page_size));
        self.push_sql(&format!(" ORDER BY {column} {dir}, id {dir} LIMIT ${n}"));
        Ok(())
    }
}

impl crate::Inner {
    /// Every row of `statement`, run as a cached prepared statement.
    async fn query_rows(&self, statement: &Statement) -> std::result::Result<Vec<Row>, DbError> {
        let client = self.db.client().await?;
        let stmt = client.prepare_cached(&statement.sql).await?;
        Ok(client.query(&stmt, &refs(&statement.params)).await?)
    }

    /// Runs a statement ended by [`Statement::keyset_page`]: its rows decoded, cut to the page,
    /// and the cursor of the next page when the extra row came back.
    async fn fetch_page<T>(
        &self,
        statement: &Statement,
        page_size: usize,
        decode_row: impl Fn(&Row) -> std::result::Result<T, DbError>,
        cursor_after: impl Fn(&T) -> String,
    ) -> std::result::Result<Page<T>, DbError> {
        let rows = self.query_rows(statement).await?;
        let mut items = rows.iter().map(decode_row).collect::<std::result::Result<Vec<_>, _>>()?;
        let more = items.len() > page_size;
        items.truncate(page_size);
        let next = if more { items.last().map(cursor_after) } else { None };
        Ok(Page::new(items, next))
    }

    async fn search_sessions_once(
        &self,
        PagedSearch { query, page_size, after }: &PagedSearch<SessionSearch>,
    ) -> std::result::Result<Page<Session>, DbError> {
        let mut sql =
            Statement::new(format!("SELECT {SESSION_COLUMNS} FROM {}.asm_sessions WHERE true", self.db.schema_sql()));
        if !query.include_deleted {
            sql.push_sql(" AND deleted_at IS NULL");
        }
        sql.and_some("agent_id = $_", query.agent_id.clone());
        sql.and_list("status = ANY($_)", names(&query.statuses, SessionStatus::as_str));
        sql.and_list("tags @> $_", query.tags.clone());
        sql.and_between("created_at", query.created_after, query.created_before);
        let column = match query.order {
            SessionOrder::UpdatedAtDesc => "updated_at",
            _ => "created_at",
        };
        sql.keyset_page(SortColumn::Time(column), query.order.ascending(), after.as_ref(), *page_size)?;
        self.fetch_page(&sql, *page_size, codec::session_row, |s| query.encode_cursor(s)).await
    }

    async fn search_runs_once(
        &self,
        PagedSearch { query, page_size, after }: &PagedSearch<RunSearch>,
    ) -> std::result::Result<Page<Run>, DbError> {
        let mut sql = Statement::new(format!("SELECT doc FROM {}.asm_runs WHERE true", self.db.schema_sql()));
        sql.and_some("session_id = $_", query.session_id.as_ref().map(|s| uuid_of(s.as_str())));
        sql.and_some("provider = $_", query.provider.clone());
        sql.and_list("status = ANY($_)", names(&query.statuses, RunStatus::as_str));
        sql.and_between("created_at", query.created_after, query.created_before);
        sql.keyset_page(SortColumn::Time("created_at"), query.order.ascending(), after.as_ref(), *page_size)?;
        self.fetch_page(&sql, *page_size, |row| codec::run_doc(row, 0), |r| query.encode_cursor(r)).await
    }

    async fn usage_once(&self, query: &UsageQuery) -> std::result::Result<UsageReport, DbError> {
        let q = self.db.schema_sql();
        let mut sql = Statement::new(format!(
            "SELECT r.session_id, s.agent_id, r.provider, \
             CASE WHEN jsonb_typeof(r.doc -> 'metadata' -> 'model') = 'string' \
                  THEN r.doc -> 'metadata' ->> 'model' END, \
             to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), {} \
             FROM {q}.asm_runs r JOIN {q}.asm_sessions s ON s.id = r.session_id WHERE true",
            usage_totals_sql("r."),
        ));
        sql.and_some("r.session_id = $_", query.session_id.as_ref().map(|s| uuid_of(s.as_str())));
        sql.and_some("s.agent_id = $_", query.agent_id.clone());
        sql.and_some("r.provider = $_", query.provider.clone());
        sql.and_between("r.created_at", query.since, query.until);
        sql.push_sql(" GROUP BY 1, 2, 3, 4, 5");
        let mut report = UsageReport::new();
        for row in self.query_rows(&sql).await? {
            let session = codec::session_id(row.try_get(0)?)?;
            let agent: String = row.try_get(1)?;
            let provider: Option<String> = row.try_get(2)?;
            let model: Option<String> = row.try_get(3)?;
            let day: String = row.try_get(4)?;
            report.add_group(UsageGroup::new(session, agent, provider, model, day, usage_totals(&row, 5)?));
        }
        Ok(report)
    }

    /// An event search selecting `columns`, up to its filters (the `WHERE` clause).
    fn events_filter(&self, columns: &str, query: &EventSearch) -> Statement {
        let mut sql = Statement::new(format!("SELECT {columns} FROM {}.asm_events WHERE true", self.db.schema_sql()));
        sql.and_list("session_id = ANY($_)", query.session_ids.iter().map(|id| uuid_of(id.as_str())).collect());
        sql.and_list("run_id = ANY($_)", query.run_ids.iter().map(|id| uuid_of(id.as_str())).collect());
        sql.and_list("kind = ANY($_)", names(&query.kinds, EventKind::as_str));
        sql.and_list("provider = ANY($_)", query.providers.clone());
        sql.and_between("ts", query.since, query.until);
        sql.and_some("correlation_id = $_", query.correlation_id.clone());
        // `data` is `json`: its text is what the store wrote (compact serde JSON), verbatim.
        sql.and_some("strpos(data::text, $_) > 0", query.text.clone());
        sql
    }

    async fn search_events_once(
        &self,
        PagedSearch { query, page_size, after }: &PagedSearch<EventSearch>,
    ) -> std::result::Result<Page<StoredEvent>, DbError> {
        let mut sql = self.events_filter(EVENT_COLUMNS, query);
        let sort = match query.order {
            EventOrder::SequenceAsc => SortColumn::Integer("sequence"),
            _ => SortColumn::Time("ts"),
        };
        sql.keyset_page(sort, query.order.ascending(), after.as_ref(), *page_size)?;
        self.fetch_page(&sql, *page_size, codec::event_row, |e| query.encode_cursor(e)).await
    }

    async fn count_events_once(&self, query: &EventSearch) -> std::result::Result<u64, DbError> {
        let sql = self.events_filter("count(*)", query);
        let client = self.db.client().await?;
        let stmt = client.prepare_cached(&sql.sql).await?;
        let row = client.query_one(&stmt, &refs(&sql.params)).await?;
        Ok(count(row.try_get(0)?))
    }

    /// `None` for an unknown session. One read-only snapshot: three statements, each an index
    /// range of the session (`asm_events` primary key, `asm_runs_session`).
    async fn stats_once(&self, session: &SessionId) -> std::result::Result<Option<SessionStats>, DbError> {
        let q = self.db.schema_sql();
        let id = uuid_of(session.as_str());
        let mut client = self.db.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let head = tx
            .query_opt(
                &format!(
                    "SELECT coalesce(h.last_sequence, 0) FROM {q}.asm_sessions s \
                     LEFT JOIN {q}.asm_session_heads h ON h.session_id = s.id WHERE s.id = $1"
                ),
                &[&id],
            )
            .await?;
        let Some(head) = head else { return Ok(None) };
        let mut stats = SessionStats::new(session.clone());
        stats.last_sequence = count(head.try_get(0)?);
        let events = tx
            .query(
                &format!(
                    "SELECT kind, count(*), min(ts), max(ts) FROM {q}.asm_events WHERE session_id = $1 GROUP BY kind"
                ),
                &[&id],
            )
            .await?;
        for row in events {
            let kind: &str = row.try_get(0)?;
            let kind = EventKind::parse(kind).map_err(|e| decode(e.to_string()))?;
            stats.add_events(kind, count(row.try_get(1)?), row.try_get(2)?, row.try_get(3)?);
        }
        let runs = tx
            .query(
                &format!(
                    "SELECT status, provider, {} FROM {q}.asm_runs WHERE session_id = $1 GROUP BY 1, 2",
                    usage_totals_sql("")
                ),
                &[&id],
            )
            .await?;
        for row in runs {
            let status: String = row.try_get(0)?;
            let provider: Option<String> = row.try_get(1)?;
            let totals = usage_totals(&row, 2)?;
            stats.add_runs(&status, provider.as_deref(), &totals);
        }
        tx.commit().await?;
        Ok(Some(stats))
    }

    /// `None` for an unknown session.
    async fn prune_once(&self, session: &SessionId, sequences: &[i64]) -> std::result::Result<Option<u64>, DbError> {
        let q = self.db.schema_sql();
        let id = uuid_of(session.as_str());
        let client = self.db.client().await?;
        let exists = client.query_opt(&format!("SELECT 1 FROM {q}.asm_sessions WHERE id = $1"), &[&id]).await?;
        if exists.is_none() {
            return Ok(None);
        }
        let protected = protected_kinds();
        let deleted = client
            .execute(
                &format!(
                    "DELETE FROM {q}.asm_events WHERE session_id = $1 AND sequence = ANY($2) AND NOT (kind = ANY($3))"
                ),
                &[&id, &sequences, &protected],
            )
            .await?;
        Ok(Some(deleted))
    }

    async fn orphans_once(&self, dry_run: bool) -> std::result::Result<u64, DbError> {
        let q = self.db.schema_sql();
        let filter = format!(
            "FROM {q}.asm_events e WHERE NOT EXISTS (SELECT 1 FROM {q}.asm_sessions s WHERE s.id = e.session_id)"
        );
        let client = self.db.client().await?;
        if dry_run {
            let row = client.query_one(&format!("SELECT count(*) {filter}"), &[]).await?;
            return Ok(count(row.try_get(0)?));
        }
        Ok(client.execute(&format!("DELETE {filter}"), &[]).await?)
    }

    async fn health_once(&self) -> std::result::Result<HealthReport, DbError> {
        let q = self.db.schema_sql();
        let client = self.db.client().await?;
        let mut issues = Vec::new();
        let rows = client
            .query(
                &format!(
                    "SELECT m.session_id, coalesce(h.last_sequence, 0), m.max_sequence \
                     FROM (SELECT session_id, max(sequence) AS max_sequence FROM {q}.asm_events GROUP BY session_id) m \
                     JOIN {q}.asm_sessions s ON s.id = m.session_id \
                     LEFT JOIN {q}.asm_session_heads h ON h.session_id = m.session_id \
                     WHERE coalesce(h.last_sequence, 0) < m.max_sequence"
                ),
                &[],
            )
            .await?;
        for row in rows {
            issues.push(HealthIssue::SequenceBehind {
                session_id: codec::session_id(row.try_get(0)?)?,
                counter: count(row.try_get(1)?),
                max_sequence: count(row.try_get(2)?),
            });
        }
        let orphans = self.orphans_once(true).await?;
        if orphans > 0 {
            issues.push(HealthIssue::OrphanedEvents { count: orphans });
        }
        Ok(HealthReport::new(issues))
    }
}

#[async_trait]
impl QueryStore for PostgresSessionStore {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn search_sessions(&self, query: &SessionSearch) -> Result<Page<Session>> {
        let search = PagedSearch::new(query.clone(), query.page_size()?, query.decode_cursor()?);
        self.spawn_retrying("search_sessions", search, |i, search| Box::pin(i.search_sessions_once(search))).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn search_runs(&self, query: &RunSearch) -> Result<Page<Run>> {
        let search = PagedSearch::new(query.clone(), query.page_size()?, query.decode_cursor()?);
        self.spawn_retrying("search_runs", search, |i, search| Box::pin(i.search_runs_once(search))).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn usage_summary(&self, query: &UsageQuery) -> Result<UsageReport> {
        self.spawn_retrying("usage_summary", query.clone(), |i, query| Box::pin(i.usage_once(query))).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn search_events(&self, query: &EventSearch) -> Result<Page<StoredEvent>> {
        let search = PagedSearch::new(query.clone(), query.page_size()?, query.decode_cursor()?);
        self.spawn_retrying("search_events", search, |i, search| Box::pin(i.search_events_once(search))).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn count_events(&self, query: &EventSearch) -> Result<u64> {
        self.spawn_retrying("count_events", query.clone(), |i, query| Box::pin(i.count_events_once(query))).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn get_session_stats(&self, session_id: &SessionId) -> Result<SessionStats> {
        self.spawn_retrying("get_session_stats", session_id.clone(), |i, id| Box::pin(i.stats_once(id)))
            .await?
            .ok_or_else(|| session_not_found(session_id))
    }
}

#[async_trait]
impl MaintenanceStore for PostgresSessionStore {
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id, count = sequences.len()))]
    async fn prune_events(&self, session_id: &SessionId, sequences: &[u64]) -> Result<u64> {
        let sequences: Vec<i64> = sequences.iter().filter_map(|s| i64::try_from(*s).ok()).collect();
        self.spawn_retrying("prune_events", (session_id.clone(), sequences), |i, (id, sequences)| {
            Box::pin(i.prune_once(id, sequences))
        })
        .await?
        .ok_or_else(|| session_not_found(session_id))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn clean_orphans(&self, dry_run: bool) -> Result<u64> {
        self.spawn_retrying("clean_orphans", dry_run, |i, dry_run| Box::pin(i.orphans_once(*dry_run))).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn health_check(&self) -> Result<HealthReport> {
        self.spawn_retrying("health_check", (), |i, ()| Box::pin(i.health_once())).await
    }

    async fn run_maintenance(&self, policy: &asm_ports::RetentionPolicy) -> Result<asm_ports::MaintenanceReport> {
        asm_ports::backend::run_cycle(self, policy).await
    }
}
