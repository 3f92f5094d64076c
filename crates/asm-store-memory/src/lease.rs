//! In-process session leases ([`SessionLeases`]), for tests of the runtime's ownership logic
//! without a database. They are real within one process (one owner at a time, fencing tokens,
//! expiry); the store itself is not shared between processes (`multi_process` stays false).
//!
//! Atomicity: a fenced write holds the lease table's read lock from its token check to the end of
//! its write; grants and renewals take the write lock. So no takeover can fall between a
//! write's check and the write.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::RwLock;

use asm_core::{Event, Result, Session, SessionId, StoredEvent, Timestamp};
use asm_ports::backend::{batch_session, lease_lost, session_owned};
use asm_ports::{ExecutionRecord, Lease, SessionLeases, SessionStore};

use crate::InMemorySessionStore;

/// The lease table of one store.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    table: RwLock<foldhash::HashMap<SessionId, Lease>>,
}

fn expiry(ttl: Duration) -> Timestamp {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    asm_core::now().checked_add_signed(ttl).unwrap_or(Timestamp::MAX_UTC)
}

fn check(table: &foldhash::HashMap<SessionId, Lease>, lease: &Lease) -> Result<()> {
    match table.get(&lease.session_id) {
        Some(current) if current.token == lease.token => Ok(()),
        Some(current) => Err(lease_lost(lease, Some(current.token), Some(&current.owner))),
        None => Err(lease_lost(lease, None, None)),
    }
}

#[async_trait]
impl SessionLeases for InMemorySessionStore {
    async fn acquire(&self, session_id: &SessionId, owner: &str, ttl: Duration) -> Result<Lease> {
        self.slot(session_id)?;
        let mut table = self.inner.leases.table.write().await;
        let token = match table.get(session_id) {
            Some(current) if current.expires_at > asm_core::now() => return Err(session_owned(current)),
            Some(current) => current.token + 1,
            None => 1,
        };
        let lease = Lease::new(session_id.clone(), owner, token, expiry(ttl));
        table.insert(session_id.clone(), lease.clone());
        Ok(lease)
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let mut table = self.inner.leases.table.write().await;
        check(&table, lease)?;
        let renewed = Lease::new(lease.session_id.clone(), lease.owner.clone(), lease.token, expiry(ttl));
        table.insert(lease.session_id.clone(), renewed.clone());
        Ok(renewed)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut table = self.inner.leases.table.write().await;
        if let Some(current) = table.get_mut(&lease.session_id)
            && current.token == lease.token
        {
            current.expires_at = current.expires_at.min(asm_core::now());
        }
        Ok(())
    }

    async fn current(&self, session_id: &SessionId) -> Result<Option<Lease>> {
        Ok(self.inner.leases.table.read().await.get(session_id).cloned())
    }

    async fn append_fenced(
        &self,
        lease: &Lease,
        events: Vec<Event>,
        expected_last_sequence: Option<u64>,
    ) -> Result<Vec<StoredEvent>> {
        if batch_session(&events)? != &lease.session_id {
            return Err(asm_core::Error::new(asm_core::ErrorCode::SessionMismatch, "a write of another session"));
        }
        let table = self.inner.leases.table.read().await;
        check(&table, lease)?;
        let written = self.append(events, expected_last_sequence).await;
        drop(table);
        written
    }

    async fn flush_fenced(&self, lease: &Lease, record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        if record.run.session_id != lease.session_id {
            return Err(asm_core::Error::new(asm_core::ErrorCode::SessionMismatch, "a write of another session"));
        }
        let table = self.inner.leases.table.read().await;
        check(&table, lease)?;
        let written = self.flush(record).await;
        drop(table);
        written
    }

    async fn save_session_fenced(&self, lease: &Lease, session: &Session) -> Result<()> {
        if session.id != lease.session_id {
            return Err(asm_core::Error::new(asm_core::ErrorCode::SessionMismatch, "a save of another session"));
        }
        let table = self.inner.leases.table.read().await;
        check(&table, lease)?;
        let saved = self.save_session(session).await;
        drop(table);
        saved
    }
}
