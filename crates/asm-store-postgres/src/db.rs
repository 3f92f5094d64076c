//! The database side: the pool, the SQL text, and one attempt of every operation. Retrying is
//! the caller's ([`crate::retry::Retry`]).

use std::collections::HashMap;
use std::sync::Arc;

use asm_core::{EventKind, Run, RunId, Session, SessionId, StoredEvent, Timestamp};
use asm_ports::{EventQuery, Page, RunQuery, SessionQuery};
use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use crate::codec::{self, EVENT_COLUMNS, SESSION_COLUMNS, uuid_of};
use crate::error::{Class, DbError};
use crate::listener::Waiters;
use crate::migrate::quoted;
use crate::write::{Fences, GroupParams, Outcome, Write};
use asm_core::Error;
use asm_ports::Lease;

/// The SQL of the fixed statements, with the schema filled in.
#[derive(Debug)]
struct Sql {
    schema: String,
    get_session: String,
    save_session: String,
    delete_session: String,
    session_exists: String,
    get_run: String,
    latest_sequence: String,
    write: String,
    append_group: String,
    check_fences: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let q = quoted(schema);
        Self {
            schema: q.clone(),
            get_session: format!("SELECT {SESSION_COLUMNS} FROM {q}.asm_sessions WHERE id = $1"),
            save_session: format!(
                "INSERT INTO {q}.asm_sessions AS s ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO UPDATE SET agent_id = excluded.agent_id, status = excluded.status, \
                 parent_session_id = excluded.parent_session_id, metadata = excluded.metadata, \
                 context = excluded.context, tags = excluded.tags, created_at = excluded.created_at, \
                 updated_at = excluded.updated_at, deleted_at = excluded.deleted_at"
            ),
            delete_session: format!("SELECT {q}.asm_delete_session($1)"),
            session_exists: format!("SELECT 1 FROM {q}.asm_sessions WHERE id = $1"),
            get_run: format!("SELECT doc FROM {q}.asm_runs WHERE id = $1"),
            latest_sequence: format!(
                "SELECT coalesce(h.last_sequence, 0) FROM {q}.asm_sessions s \
                 LEFT JOIN {q}.asm_session_heads h ON h.session_id = s.id WHERE s.id = $1"
            ),
            write: format!(
                "SELECT * FROM {q}.asm_write($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $17, $18, $19, $20, $21, $22, $23, $24)"
            ),
            // One set-based statement: the group's lease rows locked FOR SHARE in session order
            // (a grant updates the row, so none can commit between this check and the commit);
            // a row that waited for a grant is re-read at its newest version, as READ COMMITTED
            // does for locking reads. asm_check_fence is called only for a token that does not
            // match (or a session without a lease), and raises ASM02 with the current owner.
            check_fences: format!(
                "WITH locked AS MATERIALIZED (SELECT l.session_id, l.token FROM {q}.asm_session_leases l \
                 WHERE l.session_id = ANY($1::uuid[]) ORDER BY l.session_id FOR SHARE) \
                 SELECT {q}.asm_check_fence(u.s, u.t) FROM unnest($1::uuid[], $2::bigint[]) AS u(s, t) \
                 LEFT JOIN locked k ON k.session_id = u.s AND k.token = u.t WHERE k.session_id IS NULL"
            ),
            append_group: format!(
                "SELECT o_session, o_base FROM {q}.asm_append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 $12, $13, $14, $15, $16, $17, $18, $19)"
            ),
        }
    }
}

/// Everything one attempt needs; shared by the store handle and the writer tasks.
#[derive(Debug)]
pub(crate) struct Db {
    pool: Pool,
    sql: Sql,
    pub(crate) waiters: Arc<Waiters>,
}

/// `Some(i64)` for a sequence bound, saturating (a bound beyond `i64::MAX` matches like
/// `i64::MAX`).
fn seq(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Db {
    pub(crate) fn new(pool: Pool, schema: &str, waiters: Arc<Waiters>) -> Self {
        Self { pool, sql: Sql::new(schema), waiters }
    }

    pub(crate) async fn client(&self) -> Result<Object, DbError> {
        Ok(self.pool.get().await?)
    }

    /// The quoted schema name.
    pub(crate) fn schema_sql(&self) -> &str {
        &self.sql.schema
    }

    pub(crate) fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    async fn session_exists(&self, client: &Object, id: Uuid) -> Result<bool, DbError> {
        let stmt = client.prepare_cached(&self.sql.session_exists).await?;
        Ok(client.query_opt(&stmt, &[&id]).await?.is_some())
    }

    /// Saves `session`; with `fence`, only while that lease is current (checked in the same
    /// transaction, one pipelined round trip): `Ok(Some(refusal))` otherwise, nothing written.
    pub(crate) async fn save_session(
        &self,
        session: &Session,
        fence: Option<&Lease>,
    ) -> Result<Option<Error>, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.save_session).await?;
        let parent = session.parent_session_id.as_ref().map(|p| uuid_of(p.as_str()));
        let id = uuid_of(session.id.as_str());
        let metadata = Json(&session.metadata);
        let context = Json(&session.context);
        let status = session.status.as_str();
        let params: [&(dyn ToSql + Sync); 10] = [
            &id,
            &session.agent_id,
            &status,
            &parent,
            &metadata,
            &context,
            &session.tags,
            &session.created_at,
            &session.updated_at,
            &session.deleted_at,
        ];
        let Some(lease) = fence else {
            client.execute(&stmt, &params).await?;
            return Ok(None);
        };
        let fences = Fences::one(id, lease.token);
        match self.in_fenced_transaction(&client, &fences, client.execute(&stmt, &params)).await {
            Ok(_) => Ok(None),
            Err(e) => self.fence_refusal(e, lease, &session.id).await.map(Some),
        }
    }

    pub(crate) async fn get_session(&self, id: &SessionId) -> Result<Option<Session>, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.get_session).await?;
        client.query_opt(&stmt, &[&uuid_of(id.as_str())]).await?.map(|row| codec::session_row(&row)).transpose()
    }

    pub(crate) async fn list_sessions(
        &self,
        query: &SessionQuery,
        page_size: usize,
        after: Option<&(i64, SessionId)>,
    ) -> Result<Page<Session>, DbError> {
        // One statement per filter combination, so each uses the index that fits it.
        let mut sql = format!("SELECT {SESSION_COLUMNS} FROM {}.asm_sessions WHERE true", self.sql.schema);
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        if let Some((micros, id)) = after {
            let at = Timestamp::from_timestamp_micros(*micros).ok_or_else(|| crate::error::decode("cursor time"))?;
            params.push(Box::new(at));
            params.push(Box::new(uuid_of(id.as_str())));
            sql.push_str(&format!(" AND (created_at, id) > (${}, ${})", params.len() - 1, params.len()));
        }
        if let Some(status) = query.status {
            params.push(Box::new(status.as_str()));
            sql.push_str(&format!(" AND status = ${}", params.len()));
        }
        if let Some(agent) = &query.agent_id {
            params.push(Box::new(agent.clone()));
            sql.push_str(&format!(" AND agent_id = ${}", params.len()));
        }
        if let Some(tag) = &query.tag {
            params.push(Box::new(vec![tag.clone()]));
            sql.push_str(&format!(" AND tags @> ${}", params.len()));
        }
        // One more than a page tells whether there is a next page.
        params.push(Box::new(i64::try_from(page_size).unwrap_or(i64::MAX).saturating_add(1)));
        sql.push_str(&format!(" ORDER BY created_at, id LIMIT ${}", params.len()));
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&stmt, &refs).await?;
        let mut items = rows.iter().map(codec::session_row).collect::<Result<Vec<_>, _>>()?;
        let more = items.len() > page_size;
        items.truncate(page_size);
        let next_cursor = if more { items.last().map(SessionQuery::encode_cursor) } else { None };
        Ok(Page::new(items, next_cursor))
    }

    /// `false` for an unknown session.
    pub(crate) async fn delete_session(&self, id: &SessionId) -> Result<bool, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.delete_session).await?;
        let row = client.query_one(&stmt, &[&uuid_of(id.as_str())]).await?;
        Ok(row.try_get(0)?)
    }

    pub(crate) async fn get_run(&self, id: &RunId) -> Result<Option<Run>, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.get_run).await?;
        client.query_opt(&stmt, &[&uuid_of(id.as_str())]).await?.map(|row| codec::run_doc(&row, 0)).transpose()
    }

    /// `None` for an unknown session.
    pub(crate) async fn list_runs(&self, session: &SessionId, query: &RunQuery) -> Result<Option<Vec<Run>>, DbError> {
        let id = uuid_of(session.as_str());
        let mut sql = format!("SELECT doc FROM {}.asm_runs WHERE session_id = $1", self.sql.schema);
        let status = query.status.map(|s| s.as_str());
        let limit = query.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id];
        if let Some(status) = &status {
            params.push(status);
            sql.push_str(&format!(" AND status = ${}", params.len()));
        }
        sql.push_str(" ORDER BY created_at, id");
        if let Some(limit) = &limit {
            params.push(limit);
            sql.push_str(&format!(" LIMIT ${}", params.len()));
        }
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, &params).await?;
        if rows.is_empty() && !self.session_exists(&client, id).await? {
            return Ok(None);
        }
        rows.iter().map(|row| codec::run_doc(row, 0)).collect::<Result<Vec<_>, _>>().map(Some)
    }

    /// `None` for an unknown session.
    pub(crate) async fn latest_sequence(&self, session: &SessionId) -> Result<Option<u64>, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.latest_sequence).await?;
        match client.query_opt(&stmt, &[&uuid_of(session.as_str())]).await? {
            None => Ok(None),
            Some(row) => {
                let last: i64 = row.try_get(0)?;
                Ok(Some(u64::try_from(last).map_err(|_| crate::error::decode("negative sequence"))?))
            }
        }
    }

    /// A cursor read; `None` for an unknown session. An index range scan on `(session_id,
    /// sequence)`, or on `(session_id, run_id, sequence)` with a run filter.
    pub(crate) async fn get_events(
        &self,
        session: &SessionId,
        query: &EventQuery,
    ) -> Result<Option<Vec<StoredEvent>>, DbError> {
        let id = uuid_of(session.as_str());
        let after = seq(query.after.unwrap_or(0));
        let before = query.before.map_or(i64::MAX, seq);
        let run = query.run_id.as_ref().map(|r| uuid_of(r.as_str()));
        let kinds: Vec<&'static str> = query.kinds.iter().map(|k: &EventKind| k.as_str()).collect();
        let limit = query.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {}.asm_events WHERE session_id = $1 AND sequence > $2 AND sequence < $3",
            self.sql.schema
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &after, &before];
        if let Some(run) = &run {
            params.push(run);
            sql.push_str(&format!(" AND run_id = ${}", params.len()));
        }
        if !kinds.is_empty() {
            params.push(&kinds);
            sql.push_str(&format!(" AND kind = ANY(${})", params.len()));
        }
        if let Some(since) = &query.since {
            params.push(since);
            sql.push_str(&format!(" AND ts >= ${}", params.len()));
        }
        sql.push_str(" ORDER BY sequence");
        if let Some(limit) = &limit {
            params.push(limit);
            sql.push_str(&format!(" LIMIT ${}", params.len()));
        }
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, &params).await?;
        // Events exist only while their session does: only an empty answer needs the check.
        if rows.is_empty() && !self.session_exists(&client, id).await? {
            return Ok(None);
        }
        rows.iter().map(codec::event_row).collect::<Result<Vec<_>, _>>().map(Some)
    }

    /// One write in its own transaction: one round trip (a fenced write pipelines `BEGIN`, the
    /// fence check, the write and `COMMIT`).
    pub(crate) async fn write_one(&self, write: &Write, retry: bool) -> Result<Outcome, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.write).await?;
        let params = write.params(retry);
        let sql_params = params.as_sql();
        let rows = match (&write.fence, Fences::of(std::slice::from_ref(write))) {
            (Some(lease), Some(fences)) => {
                match self.in_fenced_transaction(&client, &fences, client.query(&stmt, &sql_params)).await {
                    Ok(rows) => rows,
                    Err(e) => return Ok(Outcome::Refused(self.fence_refusal(e, lease, &write.batch.session).await?)),
                }
            }
            _ => client.query(&stmt, &sql_params).await?,
        };
        write.outcome(&rows)
    }

    /// Runs `work` (statements on `client`, not yet polled) in one transaction after the fence
    /// check of `fences`, pipelined: `BEGIN`, the check, the work and `COMMIT` go out together
    /// (one round trip, one WAL flush). A failed check aborts the transaction (its `COMMIT` is
    /// a rollback) and is returned as the error (SQLSTATE `ASM02`, see [`crate::lease`]).
    pub(crate) async fn in_fenced_transaction<T>(
        &self,
        client: &Object,
        fences: &Fences,
        work: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, DbError> {
        let check = client.prepare_cached(&self.sql.check_fences).await?;
        let (begun, checked, done, committed) = futures::future::join4(
            client.batch_execute("BEGIN"),
            client.execute(&check, &fences.as_sql()),
            work,
            client.batch_execute("COMMIT"),
        )
        .await;
        begun?;
        // The check's error is the cause; the work's error after it only says "aborted".
        checked?;
        let done = done?;
        committed?;
        Ok(done)
    }

    /// The typed refusal of a fenced write whose check failed, or `error` when it is not one.
    async fn fence_refusal(&self, error: DbError, lease: &Lease, session: &SessionId) -> Result<Error, DbError> {
        let Some((owner, current)) = crate::lease::fence_refusal(&error) else { return Err(error) };
        if owner.is_none() && !self.session_exists(&self.client().await?, uuid_of(session.as_str())).await? {
            return Ok(crate::error::session_not_found(session));
        }
        Ok(asm_ports::backend::lease_lost(lease, current, owner.as_deref()))
    }

    /// The fast path of group commit: every append of the group in one statement (one round
    /// trip, one commit). Returns, per append, the last sequence before its events; raises
    /// SQLSTATE `ASM01` ([`is_group_fallback`]) when an append needs its own answer.
    pub(crate) async fn append_group(&self, writes: &[Write]) -> Result<Vec<u64>, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.append_group).await?;
        let params = GroupParams::new(writes);
        let sql_params = params.as_sql();
        let rows = match Fences::of(writes) {
            None => client.query(&stmt, &sql_params).await?,
            Some(fences) => self.in_fenced_transaction(&client, &fences, client.query(&stmt, &sql_params)).await?,
        };
        let mut session_base: HashMap<Uuid, i64> = HashMap::with_capacity(rows.len());
        for row in rows {
            session_base.insert(row.try_get(0)?, row.try_get(1)?);
        }
        (0..writes.len())
            .map(|req| {
                let base = params
                    .req_session(req)
                    .and_then(|s| session_base.get(&s))
                    .ok_or_else(|| crate::error::decode("a session without a base"))?;
                u64::try_from(base + params.req_offset[req]).map_err(|_| crate::error::decode("negative sequence"))
            })
            .collect()
    }

    /// Several writes in one transaction, pipelined: `BEGIN`, every call, `COMMIT` go out
    /// together, so the group costs one round trip and one WAL flush. Refusals are per write;
    /// an error raised by any call fails the whole group (nothing of it is committed).
    pub(crate) async fn write_group(&self, writes: &[Write], retry: bool) -> Result<Vec<Outcome>, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.write).await?;
        let params: Vec<_> = writes.iter().map(|w| w.params(retry)).collect();
        let sql_params: Vec<[&(dyn ToSql + Sync); 24]> = params.iter().map(|p| p.as_sql()).collect();
        let calls = futures::future::join_all(sql_params.iter().map(|p| client.query(&stmt, p)));
        let fences = Fences::of(writes);
        let check = match &fences {
            Some(_) => Some(client.prepare_cached(&self.sql.check_fences).await?),
            None => None,
        };
        // The fence check (when a write is fenced) right after BEGIN, in the same pipeline.
        let checked = async {
            match (&check, &fences) {
                (Some(check), Some(fences)) => client.execute(check, &fences.as_sql()).await.map(drop),
                _ => Ok(()),
            }
        };
        let (begun, checked, results, committed) =
            futures::future::join4(client.batch_execute("BEGIN"), checked, calls, client.batch_execute("COMMIT")).await;
        begun?;
        // A failed fence check aborted the transaction: its error is the cause.
        checked?;
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut failure: Option<DbError> = None;
        for (write, result) in writes.iter().zip(results) {
            match result {
                Ok(rows) => match write.outcome(&rows) {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(e) => failure = failure.or(Some(e)),
                },
                // The first error is the cause; the ones after it say the transaction aborted.
                Err(e) => failure = failure.or(Some(DbError::Postgres(e))),
            }
        }
        committed?;
        match failure {
            // An error inside the transaction made COMMIT a rollback.
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }
}

/// Whether `asm_append_group` declined the group (an append needs its own answer).
pub(crate) fn is_group_fallback(error: &DbError) -> bool {
    matches!(error, DbError::Postgres(e) if e.code().is_some_and(|c| c.code() == "ASM01"))
}

/// Whether a failed group should be split into single writes (its failure belongs to one of
/// them) rather than retried whole.
pub(crate) fn split_group(error: &DbError) -> bool {
    error.class() != Class::Connection
}
