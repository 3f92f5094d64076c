//! Session ownership across processes: a lease per session with a fencing token.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use asm_core::{Error, ErrorCode, Event, Result, Session, SessionId, StoredEvent, Timestamp};

use crate::ExecutionRecord;

/// A session's lease as granted to one owner.
///
/// `token` is the fencing token: it grows by at least one with every grant of the session's
/// lease, so a write carrying an older token than the current one comes from an owner that lost
/// the session and is refused ([`ErrorCode::LeaseLost`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The session.
    pub session_id: SessionId,
    /// Who holds it (a process-unique name chosen by the owner).
    pub owner: String,
    /// The fencing token of this grant.
    pub token: u64,
    /// When the lease ends unless renewed (the store's clock).
    pub expires_at: Timestamp,
}

impl Lease {
    /// A lease value (stores build these; callers get them from [`SessionLeases`]).
    pub fn new(session_id: SessionId, owner: impl Into<String>, token: u64, expires_at: Timestamp) -> Self {
        Self { session_id, owner: owner.into(), token, expires_at }
    }
}

/// Leases and fenced writes: how a store lets exactly one process at a time own a session.
///
/// The contract:
///
/// - [`acquire`](Self::acquire) grants the lease when the session has none, or its lease
///   expired or was released; the grant has a token greater than every earlier grant of the
///   session. A lease held by anyone (the same owner name included) is refused with
///   [`ErrorCode::SessionOwned`], details `owner`, `token` and `expires_at`.
/// - [`renew`](Self::renew) (the heartbeat) extends the lease while its token is current, also
///   after it expired if nobody took it; otherwise [`ErrorCode::LeaseLost`].
/// - [`release`](Self::release) ends the lease at once (a no-op for a superseded token).
/// - [`append_fenced`](Self::append_fenced), [`flush_fenced`](Self::flush_fenced) and
///   [`save_session_fenced`](Self::save_session_fenced) are
///   [`SessionStore::append`](crate::SessionStore::append),
///   [`SessionStore::flush`](crate::SessionStore::flush) and
///   [`SessionStore::save_session`](crate::SessionStore::save_session) that first check, inside
///   the same atomic write, that `lease.token` is the session's current token; a stale token is
///   [`ErrorCode::LeaseLost`] and nothing is written. (A run save is a flush without events.)
///
/// Expiry is measured on the store's clock, so owners on machines with skewed clocks agree.
#[async_trait]
pub trait SessionLeases: Send + Sync + Debug {
    /// Takes the session's lease for `owner` for `ttl`.
    async fn acquire(&self, session_id: &SessionId, owner: &str, ttl: Duration) -> Result<Lease>;

    /// Extends `lease` by `ttl` from now.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Ends `lease` now, so another owner can take the session at once.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// The session's current lease (expired ones included; `None` when never granted).
    async fn current(&self, session_id: &SessionId) -> Result<Option<Lease>>;

    /// An append that is refused unless `lease` is current (see the trait docs).
    async fn append_fenced(
        &self,
        lease: &Lease,
        events: Vec<Event>,
        expected_last_sequence: Option<u64>,
    ) -> Result<Vec<StoredEvent>>;

    /// A flush that is refused unless `lease` is current (see the trait docs).
    async fn flush_fenced(&self, lease: &Lease, record: ExecutionRecord) -> Result<Vec<StoredEvent>>;

    /// A session save that is refused unless `lease` is current (see the trait docs);
    /// [`ErrorCode::SessionMismatch`] when `session` is not the lease's session.
    async fn save_session_fenced(&self, lease: &Lease, session: &Session) -> Result<()>;
}

/// The refusal of [`SessionLeases::acquire`]: `current` holds the session.
pub fn session_owned(current: &Lease) -> Error {
    Error::new(
        ErrorCode::SessionOwned,
        format!(
            "session {} is owned by {} (lease token {}, expires at {})",
            current.session_id,
            current.owner,
            current.token,
            current.expires_at.to_rfc3339()
        ),
    )
    .with_detail("session_id", current.session_id.as_str())
    .with_detail("owner", current.owner.as_str())
    .with_detail("token", current.token)
    .with_detail("expires_at", current.expires_at.to_rfc3339())
}

/// The refusal of a fenced write or a renewal with a superseded token. `current_token` is the
/// session's token now, when known.
pub fn lease_lost(lease: &Lease, current_token: Option<u64>, current_owner: Option<&str>) -> Error {
    let mut error = Error::new(
        ErrorCode::LeaseLost,
        format!(
            "{} no longer owns session {}: its lease token {} is stale{}",
            lease.owner,
            lease.session_id,
            lease.token,
            current_owner.map(|o| format!(" (now owned by {o})")).unwrap_or_default()
        ),
    )
    .with_detail("session_id", lease.session_id.as_str())
    .with_detail("owner", lease.owner.as_str())
    .with_detail("token", lease.token);
    if let Some(token) = current_token {
        error = error.with_detail("current_token", token);
    }
    if let Some(owner) = current_owner {
        error = error.with_detail("current_owner", owner);
    }
    error
}

/// The error of a store that cannot provide leases, for callers that asked for ownership.
pub fn leases_unsupported(store: &dyn Debug) -> Error {
    Error::new(
        ErrorCode::CapabilityNotSupported,
        format!("this store cannot provide session leases for multi-process ownership: {store:?}"),
    )
    .with_detail("capability", "session_leases")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_owner() {
        let lease = Lease::new(SessionId::new(), "host-a:42", 7, Timestamp::default());
        let owned = session_owned(&lease);
        assert_eq!(owned.code(), ErrorCode::SessionOwned);
        assert_eq!(owned.details().get("owner").and_then(|v| v.as_str()), Some("host-a:42"));
        let lost = lease_lost(&lease, Some(8), Some("host-b:1"));
        assert_eq!(lost.code(), ErrorCode::LeaseLost);
        assert_eq!(lost.details().get("current_token").and_then(serde_json::Value::as_u64), Some(8));
    }
}
