//! Session leases and fenced writes ([`SessionLeases`]), on the table and functions of
//! `migrations/0002_session_leases.sql`.
//!
//! A fenced write is an ordinary write request carrying its lease: it goes through the
//! group-commit writer like every other write ([`crate::writer`]), whose transaction checks the
//! fencing tokens of its group (`asm_check_fence`: the lease row `FOR SHARE`, SQLSTATE `ASM02`
//! for a stale token) before it writes, in the same pipelined round trip. A stale token aborts
//! the transaction, so nothing of the write is kept. A fenced session save is the same check and
//! the session upsert in one pipelined transaction.

use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::Row;
use uuid::Uuid;

use asm_core::{Event, Result, Session, SessionId, StoredEvent, Timestamp};
use asm_ports::backend::{batch_session, lease_lost, session_owned};
use asm_ports::{ExecutionRecord, Lease, SessionLeases};

use crate::PostgresSessionStore;
use crate::codec::uuid_of;
use crate::db::Db;
use crate::error::{DbError, decode, session_not_found};
use crate::write::{Batch, Write, token_sql};

/// Milliseconds of a lease duration, at least 1.
fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn lease_row(session_id: &SessionId, row: &Row, offset: usize) -> std::result::Result<Lease, DbError> {
    let owner: String = row.try_get(offset)?;
    let token: i64 = row.try_get(offset + 1)?;
    let expires_at: Timestamp = row.try_get(offset + 2)?;
    let token = u64::try_from(token).map_err(|_| decode("negative lease token"))?;
    Ok(Lease::new(session_id.clone(), owner, token, expires_at))
}

/// Whether `error` is the fence check's refusal; its DETAIL and HINT carry the current owner and
/// token.
pub(crate) fn fence_refusal(error: &DbError) -> Option<(Option<String>, Option<u64>)> {
    let DbError::Postgres(e) = error else { return None };
    let db = e.as_db_error()?;
    if db.code().code() != "ASM02" {
        return None;
    }
    let owner = db.detail().filter(|d| !d.is_empty()).map(str::to_owned);
    let token = db.hint().and_then(|h| h.parse::<u64>().ok());
    Some((owner, token))
}

impl Db {
    async fn acquire_lease(
        &self,
        session: &SessionId,
        owner: &str,
        ttl: i64,
    ) -> Result<Option<(bool, Lease)>, DbError> {
        let client = self.client().await?;
        let sql = format!("SELECT * FROM {}.asm_acquire_lease($1, $2, $3)", self.schema_sql());
        let stmt = client.prepare_cached(&sql).await?;
        let row = client.query_opt(&stmt, &[&uuid_of(session.as_str()), &owner, &ttl]).await?;
        row.map(|row| Ok((row.try_get(0)?, lease_row(session, &row, 1)?))).transpose()
    }

    async fn renew_lease(&self, lease: &Lease, ttl: i64) -> Result<Option<Lease>, DbError> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {}.asm_session_leases SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond', \
             heartbeat_at = clock_timestamp() WHERE session_id = $1 AND token = $2 RETURNING owner, token, expires_at",
            self.schema_sql()
        );
        let stmt = client.prepare_cached(&sql).await?;
        let session = uuid_of(lease.session_id.as_str());
        let row = client.query_opt(&stmt, &[&session, &token_sql(lease.token), &ttl]).await?;
        row.map(|row| lease_row(&lease.session_id, &row, 0)).transpose()
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), DbError> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {}.asm_session_leases SET expires_at = clock_timestamp() \
             WHERE session_id = $1 AND token = $2 AND expires_at > clock_timestamp()",
            self.schema_sql()
        );
        let stmt = client.prepare_cached(&sql).await?;
        client.execute(&stmt, &[&uuid_of(lease.session_id.as_str()), &token_sql(lease.token)]).await?;
        Ok(())
    }

    async fn current_lease(&self, session: &SessionId) -> Result<Option<Lease>, DbError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT owner, token, expires_at FROM {}.asm_session_leases WHERE session_id = $1",
            self.schema_sql()
        );
        let stmt = client.prepare_cached(&sql).await?;
        let row = client.query_opt(&stmt, &[&uuid_of(session.as_str())]).await?;
        row.map(|row| lease_row(session, &row, 0)).transpose()
    }

    async fn session_known(&self, session: Uuid) -> Result<bool, DbError> {
        let client = self.client().await?;
        let sql = format!("SELECT 1 FROM {}.asm_sessions WHERE id = $1", self.schema_sql());
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client.query_opt(&stmt, &[&session]).await?.is_some())
    }
}

#[async_trait]
impl SessionLeases for PostgresSessionStore {
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id, owner))]
    async fn acquire(&self, session_id: &SessionId, owner: &str, ttl: Duration) -> Result<Lease> {
        let (session_id, owner, ttl) = (session_id.clone(), owner.to_owned(), ttl_ms(ttl));
        self.spawn(|inner| async move {
            let db = &inner.db;
            match inner.retrying("acquire_lease", || db.acquire_lease(&session_id, &owner, ttl)).await? {
                None => Err(session_not_found(&session_id)),
                Some((true, lease)) => {
                    tracing::debug!(token = lease.token, "lease granted");
                    Ok(lease)
                }
                Some((false, current)) => Err(session_owned(&current)),
            }
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %lease.session_id, token = lease.token))]
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let (lease, ttl) = (lease.clone(), ttl_ms(ttl));
        self.spawn(|inner| async move {
            let db = &inner.db;
            if let Some(renewed) = inner.retrying("renew_lease", || db.renew_lease(&lease, ttl)).await? {
                return Ok(renewed);
            }
            let current = inner.retrying("current_lease", || db.current_lease(&lease.session_id)).await?;
            match current {
                None if !inner
                    .retrying("renew_lease", || db.session_known(uuid_of(lease.session_id.as_str())))
                    .await? =>
                {
                    Err(session_not_found(&lease.session_id))
                }
                current => Err(lease_lost(
                    &lease,
                    current.as_ref().map(|c| c.token),
                    current.as_ref().map(|c| c.owner.as_str()),
                )),
            }
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %lease.session_id, token = lease.token))]
    async fn release(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.spawn(|inner| async move {
            let db = &inner.db;
            inner.retrying("release_lease", || db.release_lease(&lease)).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    async fn current(&self, session_id: &SessionId) -> Result<Option<Lease>> {
        let session_id = session_id.clone();
        self.spawn(|inner| async move {
            let db = &inner.db;
            inner.retrying("current_lease", || db.current_lease(&session_id)).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %lease.session_id, token = lease.token, count = events.len()))]
    async fn append_fenced(
        &self,
        lease: &Lease,
        events: Vec<Event>,
        expected_last_sequence: Option<u64>,
    ) -> Result<Vec<StoredEvent>> {
        let session_id = batch_session(&events)?.clone();
        let batch = Batch::new(session_id, events, self.inner.options.max_event_bytes)?;
        let write = Write::append(batch, expected_last_sequence).fenced(lease.clone())?;
        self.inner.queue.submit(write).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %lease.session_id, token = lease.token))]
    async fn flush_fenced(&self, lease: &Lease, record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        let write = Write::flush(record, self.inner.options.max_event_bytes)?.fenced(lease.clone())?;
        self.inner.queue.submit(write).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %lease.session_id, token = lease.token))]
    async fn save_session_fenced(&self, lease: &Lease, session: &Session) -> Result<()> {
        if session.id != lease.session_id {
            return Err(asm_core::Error::new(
                asm_core::ErrorCode::SessionMismatch,
                format!("a save of session {} under the lease of session {}", session.id, lease.session_id),
            ));
        }
        let (lease, session) = (lease.clone(), session.clone());
        self.spawn(|inner| async move {
            let db = &inner.db;
            match inner.retrying("save_session", || db.save_session(&session, Some(&lease))).await? {
                Some(refusal) => Err(refusal),
                None => Ok(()),
            }
        })
        .await
    }
}
