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
use tokio_postgres::types::ToSql;

use asm_core::{EventKind, Result, Run, Session, SessionId, StoredEvent, Timestamp, TokenUsage};
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

fn push(params: &mut Params, value: impl ToSql + Sync + Send + 'static) -> usize {
    params.push(Box::new(value));
    params.len()
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

impl crate::Inner {
    async fn search_sessions_once(
        &self,
        query: &SessionSearch,
        page_size: usize,
        after: Option<&Keyset>,
    ) -> std::result::Result<Page<Session>, DbError> {
        let mut sql = format!("SELECT {SESSION_COLUMNS} FROM {}.asm_sessions WHERE true", self.db.schema_sql());
        let mut params: Params = Vec::new();
        if !query.include_deleted {
            sql.push_str(" AND deleted_at IS NULL");
        }
        if let Some(agent) = &query.agent_id {
            sql.push_str(&format!(" AND agent_id = ${}", push(&mut params, agent.clone())));
        }
        if !query.statuses.is_empty() {
            let statuses: Vec<String> = query.statuses.iter().map(|s| s.as_str().to_owned()).collect();
            sql.push_str(&format!(" AND status = ANY(${})", push(&mut params, statuses)));
        }
        if !query.tags.is_empty() {
            sql.push_str(&format!(" AND tags @> ${}", push(&mut params, query.tags.clone())));
        }
        if let Some(at) = query.created_after {
            sql.push_str(&format!(" AND created_at >= ${}", push(&mut params, at)));
        }
        if let Some(at) = query.created_before {
            sql.push_str(&format!(" AND created_at <= ${}", push(&mut params, at)));
        }
        let column = match query.order {
            SessionOrder::UpdatedAtDesc => "updated_at",
            _ => "created_at",
        };
        let (cmp, dir) = if query.order.ascending() { (">", "ASC") } else { ("<", "DESC") };
        if let Some(keyset) = after {
            let v = push(&mut params, cursor_time(keyset)?);
            let id = push(&mut params, uuid_of(&keyset.id));
            sql.push_str(&format!(" AND ({column}, id) {cmp} (${v}, ${id})"));
        }
        let n = push(&mut params, limit_param(page_size));
        sql.push_str(&format!(" ORDER BY {column} {dir}, id {dir} LIMIT ${n}"));
        let client = self.db.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, &refs(&params)).await?;
        let mut items = rows.iter().map(codec::session_row).collect::<std::result::Result<Vec<_>, _>>()?;
        let more = items.len() > page_size;
        items.truncate(page_size);
        let next = if more { items.last().map(|s| query.encode_cursor(s)) } else { None };
        Ok(Page::new(items, next))
    }

    async fn search_runs_once(
        &self,
        query: &RunSearch,
        page_size: usize,
        after: Option<&Keyset>,
    ) -> std::result::Result<Page<Run>, DbError> {
        let mut sql = format!("SELECT doc FROM {}.asm_runs WHERE true", self.db.schema_sql());
        let mut params: Params = Vec::new();
        if let Some(session) = &query.session_id {
            sql.push_str(&format!(" AND session_id = ${}", push(&mut params, uuid_of(session.as_str()))));
        }
        if let Some(provider) = &query.provider {
            sql.push_str(&format!(" AND provider = ${}", push(&mut params, provider.clone())));
        }
        if !query.statuses.is_empty() {
            let statuses: Vec<String> = query.statuses.iter().map(|s| s.as_str().to_owned()).collect();
            sql.push_str(&format!(" AND status = ANY(${})", push(&mut params, statuses)));
        }
        if let Some(at) = query.created_after {
            sql.push_str(&format!(" AND created_at >= ${}", push(&mut params, at)));
        }
        if let Some(at) = query.created_before {
            sql.push_str(&format!(" AND created_at <= ${}", push(&mut params, at)));
        }
        let (cmp, dir) = if query.order.ascending() { (">", "ASC") } else { ("<", "DESC") };
        if let Some(keyset) = after {
            let v = push(&mut params, cursor_time(keyset)?);
            let id = push(&mut params, uuid_of(&keyset.id));
            sql.push_str(&format!(" AND (created_at, id) {cmp} (${v}, ${id})"));
        }
        let n = push(&mut params, limit_param(page_size));
        sql.push_str(&format!(" ORDER BY created_at {dir}, id {dir} LIMIT ${n}"));
        let client = self.db.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, &refs(&params)).await?;
        let mut items = rows.iter().map(|row| codec::run_doc(row, 0)).collect::<std::result::Result<Vec<_>, _>>()?;
        let more = items.len() > page_size;
        items.truncate(page_size);
        let next = if more { items.last().map(|r| query.encode_cursor(r)) } else { None };
        Ok(Page::new(items, next))
    }

    async fn usage_once(&self, query: &UsageQuery) -> std::result::Result<UsageReport, DbError> {
        let q = self.db.schema_sql();
        let tok = |key: &str| format!("coalesce((r.doc -> 'token_usage' ->> '{key}')::bigint, 0)");
        let sum = |key: &str| format!("coalesce(sum({}), 0)::bigint", tok(key));
        let unpriced = |key: &str| format!("coalesce(sum({}) FILTER (WHERE r.cost_usd IS NULL), 0)::bigint", tok(key));
        let mut sql = format!(
            "SELECT r.session_id, s.agent_id, r.provider, \
             CASE WHEN jsonb_typeof(r.doc -> 'metadata' -> 'model') = 'string' \
                  THEN r.doc -> 'metadata' ->> 'model' END, \
             to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), {}, {}, {}, {}, \
             coalesce(sum(r.cost_usd), 0)::double precision, count(*), count(*) FILTER (WHERE r.cost_usd IS NULL), \
             {}, {}, {}, {} \
             FROM {q}.asm_runs r JOIN {q}.asm_sessions s ON s.id = r.session_id WHERE true",
            sum("input_tokens"),
            sum("output_tokens"),
            sum("cache_read_tokens"),
            sum("cache_creation_tokens"),
            unpriced("input_tokens"),
            unpriced("output_tokens"),
            unpriced("cache_read_tokens"),
            unpriced("cache_creation_tokens"),
        );
        let mut params: Params = Vec::new();
        if let Some(session) = &query.session_id {
            sql.push_str(&format!(" AND r.session_id = ${}", push(&mut params, uuid_of(session.as_str()))));
        }
        if let Some(agent) = &query.agent_id {
            sql.push_str(&format!(" AND s.agent_id = ${}", push(&mut params, agent.clone())));
        }
        if let Some(provider) = &query.provider {
            sql.push_str(&format!(" AND r.provider = ${}", push(&mut params, provider.clone())));
        }
        if let Some(at) = query.since {
            sql.push_str(&format!(" AND r.created_at >= ${}", push(&mut params, at)));
        }
        if let Some(at) = query.until {
            sql.push_str(&format!(" AND r.created_at <= ${}", push(&mut params, at)));
        }
        sql.push_str(" GROUP BY 1, 2, 3, 4, 5");
        let client = self.db.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, &refs(&params)).await?;
        let mut report = UsageReport::new();
        for row in rows {
            let session = codec::session_id(row.try_get(0)?)?;
            let agent: String = row.try_get(1)?;
            let provider: Option<String> = row.try_get(2)?;
            let model: Option<String> = row.try_get(3)?;
            let day: String = row.try_get(4)?;
            let mut totals = UsageAggregate::default();
            totals.input_tokens = count(row.try_get(5)?);
            totals.output_tokens = count(row.try_get(6)?);
            totals.total_tokens = totals.input_tokens.saturating_add(totals.output_tokens);
            totals.cache_read_tokens = count(row.try_get(7)?);
            totals.cache_creation_tokens = count(row.try_get(8)?);
            totals.cost_usd = row.try_get(9)?;
            totals.run_count = count(row.try_get(10)?);
            totals.unpriced_runs = count(row.try_get(11)?);
            totals.unpriced_usage = TokenUsage {
                input_tokens: count(row.try_get(12)?),
                output_tokens: count(row.try_get(13)?),
                cache_read_tokens: count(row.try_get(14)?),
                cache_creation_tokens: count(row.try_get(15)?),
            };
            report.add_group(UsageGroup::new(session, agent, provider, model, day, totals));
        }
        Ok(report)
    }

    /// The `WHERE` clause (from `FROM` on) of an event search, and its parameters.
    fn events_filter(&self, query: &EventSearch) -> (String, Params) {
        let mut sql = format!("FROM {}.asm_events WHERE true", self.db.schema_sql());
        let mut params: Params = Vec::new();
        if !query.session_ids.is_empty() {
            let ids: Vec<uuid::Uuid> = query.session_ids.iter().map(|id| uuid_of(id.as_str())).collect();
            sql.push_str(&format!(" AND session_id = ANY(${})", push(&mut params, ids)));
        }
        if !query.run_ids.is_empty() {
            let ids: Vec<uuid::Uuid> = query.run_ids.iter().map(|id| uuid_of(id.as_str())).collect();
            sql.push_str(&format!(" AND run_id = ANY(${})", push(&mut params, ids)));
        }
        if !query.kinds.is_empty() {
            let kinds: Vec<String> = query.kinds.iter().map(|k| k.as_str().to_owned()).collect();
            sql.push_str(&format!(" AND kind = ANY(${})", push(&mut params, kinds)));
        }
        if !query.providers.is_empty() {
            sql.push_str(&format!(" AND provider = ANY(${})", push(&mut params, query.providers.clone())));
        }
        if let Some(at) = query.since {
            sql.push_str(&format!(" AND ts >= ${}", push(&mut params, at)));
        }
        if let Some(at) = query.until {
            sql.push_str(&format!(" AND ts <= ${}", push(&mut params, at)));
        }
        if let Some(correlation) = &query.correlation_id {
            sql.push_str(&format!(" AND correlation_id = ${}", push(&mut params, correlation.clone())));
        }
        if let Some(needle) = &query.text {
            // `data` is `json`: its text is what the store wrote (compact serde JSON), verbatim.
            sql.push_str(&format!(" AND strpos(data::text, ${}) > 0", push(&mut params, needle.clone())));
        }
        (sql, params)
    }

    async fn search_events_once(
        &self,
        query: &EventSearch,
        page_size: usize,
        after: Option<&Keyset>,
    ) -> std::result::Result<Page<StoredEvent>, DbError> {
        let (filter, mut params) = self.events_filter(query);
        let mut sql = format!("SELECT {EVENT_COLUMNS} {filter}");
        let column = match query.order {
            EventOrder::SequenceAsc => "sequence",
            _ => "ts",
        };
        let (cmp, dir) = if query.order.ascending() { (">", "ASC") } else { ("<", "DESC") };
        if let Some(keyset) = after {
            let v = match query.order {
                EventOrder::SequenceAsc => push(&mut params, keyset.value),
                _ => push(&mut params, cursor_time(keyset)?),
            };
            let id = push(&mut params, uuid_of(&keyset.id));
            sql.push_str(&format!(" AND ({column}, id) {cmp} (${v}, ${id})"));
        }
        let n = push(&mut params, limit_param(page_size));
        sql.push_str(&format!(" ORDER BY {column} {dir}, id {dir} LIMIT ${n}"));
        let client = self.db.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, &refs(&params)).await?;
        let mut items = rows.iter().map(codec::event_row).collect::<std::result::Result<Vec<_>, _>>()?;
        let more = items.len() > page_size;
        items.truncate(page_size);
        let next = if more { items.last().map(|e| query.encode_cursor(e)) } else { None };
        Ok(Page::new(items, next))
    }

    async fn count_events_once(&self, query: &EventSearch) -> std::result::Result<u64, DbError> {
        let (filter, params) = self.events_filter(query);
        let client = self.db.client().await?;
        let stmt = client.prepare_cached(&format!("SELECT count(*) {filter}")).await?;
        let row = client.query_one(&stmt, &refs(&params)).await?;
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
        let tok =
            |key: &str| format!("coalesce(sum(coalesce((doc -> 'token_usage' ->> '{key}')::bigint, 0)), 0)::bigint");
        let unpriced = |key: &str| {
            format!(
                "coalesce(sum(coalesce((doc -> 'token_usage' ->> '{key}')::bigint, 0)) FILTER (WHERE cost_usd IS NULL), 0)::bigint"
            )
        };
        let runs = tx
            .query(
                &format!(
                    "SELECT status, provider, {}, {}, {}, {}, coalesce(sum(cost_usd), 0)::double precision, count(*), \
                     count(*) FILTER (WHERE cost_usd IS NULL), {}, {}, {}, {} \
                     FROM {q}.asm_runs WHERE session_id = $1 GROUP BY 1, 2",
                    tok("input_tokens"),
                    tok("output_tokens"),
                    tok("cache_read_tokens"),
                    tok("cache_creation_tokens"),
                    unpriced("input_tokens"),
                    unpriced("output_tokens"),
                    unpriced("cache_read_tokens"),
                    unpriced("cache_creation_tokens"),
                ),
                &[&id],
            )
            .await?;
        for row in runs {
            let status: String = row.try_get(0)?;
            let provider: Option<String> = row.try_get(1)?;
            let mut totals = UsageAggregate::default();
            totals.input_tokens = count(row.try_get(2)?);
            totals.output_tokens = count(row.try_get(3)?);
            totals.total_tokens = totals.input_tokens.saturating_add(totals.output_tokens);
            totals.cache_read_tokens = count(row.try_get(4)?);
            totals.cache_creation_tokens = count(row.try_get(5)?);
            totals.cost_usd = row.try_get(6)?;
            totals.run_count = count(row.try_get(7)?);
            totals.unpriced_runs = count(row.try_get(8)?);
            totals.unpriced_usage = TokenUsage {
                input_tokens: count(row.try_get(9)?),
                output_tokens: count(row.try_get(10)?),
                cache_read_tokens: count(row.try_get(11)?),
                cache_creation_tokens: count(row.try_get(12)?),
            };
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
        let page_size = query.page_size()?;
        let after = query.decode_cursor()?;
        let query = query.clone();
        self.spawn(|inner| async move {
            let i = &inner;
            inner.retrying("search_sessions", || i.search_sessions_once(&query, page_size, after.as_ref())).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn search_runs(&self, query: &RunSearch) -> Result<Page<Run>> {
        let page_size = query.page_size()?;
        let after = query.decode_cursor()?;
        let query = query.clone();
        self.spawn(|inner| async move {
            let i = &inner;
            inner.retrying("search_runs", || i.search_runs_once(&query, page_size, after.as_ref())).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn usage_summary(&self, query: &UsageQuery) -> Result<UsageReport> {
        let query = query.clone();
        self.spawn(|inner| async move {
            let i = &inner;
            inner.retrying("usage_summary", || i.usage_once(&query)).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn search_events(&self, query: &EventSearch) -> Result<Page<StoredEvent>> {
        let page_size = query.page_size()?;
        let after = query.decode_cursor()?;
        let query = query.clone();
        self.spawn(|inner| async move {
            let i = &inner;
            inner.retrying("search_events", || i.search_events_once(&query, page_size, after.as_ref())).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn count_events(&self, query: &EventSearch) -> Result<u64> {
        let query = query.clone();
        self.spawn(|inner| async move {
            let i = &inner;
            inner.retrying("count_events", || i.count_events_once(&query)).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn get_session_stats(&self, session_id: &SessionId) -> Result<SessionStats> {
        let id = session_id.clone();
        self.spawn(|inner| async move {
            let i = &inner;
            inner.retrying("get_session_stats", || i.stats_once(&id)).await?.ok_or_else(|| session_not_found(&id))
        })
        .await
    }
}

#[async_trait]
impl MaintenanceStore for PostgresSessionStore {
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id, count = sequences.len()))]
    async fn prune_events(&self, session_id: &SessionId, sequences: &[u64]) -> Result<u64> {
        let id = session_id.clone();
        let sequences: Vec<i64> = sequences.iter().filter_map(|s| i64::try_from(*s).ok()).collect();
        self.spawn(|inner| async move {
            let i = &inner;
            inner
                .retrying("prune_events", || i.prune_once(&id, &sequences))
                .await?
                .ok_or_else(|| session_not_found(&id))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn clean_orphans(&self, dry_run: bool) -> Result<u64> {
        self.spawn(|inner| async move {
            let i = &inner;
            inner.retrying("clean_orphans", || i.orphans_once(dry_run)).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn health_check(&self) -> Result<HealthReport> {
        self.spawn(|inner| async move {
            let i = &inner;
            inner.retrying("health_check", || i.health_once()).await
        })
        .await
    }

    async fn run_maintenance(&self, policy: &asm_ports::RetentionPolicy) -> Result<asm_ports::MaintenanceReport> {
        asm_ports::backend::run_cycle(self, policy).await
    }
}
