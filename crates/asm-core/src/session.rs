use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, JsonMap, SessionId, Timestamp};

/// The lifecycle of a [`Session`].
///
/// ```text
/// pending ──> active ──> completed | failed | cancelled
///               ^  |
///               |  v
///              paused ──> completed | failed | cancelled
/// ```
/// `active -> active` is an idempotent no-op; everything else not drawn is
/// [`ErrorCode::InvalidTransition`]. The three end states are terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SessionStatus {
    /// Created, not yet activated.
    Pending,
    /// Accepting runs.
    Active,
    /// Temporarily not accepting runs.
    Paused,
    /// Finished successfully (terminal).
    Completed,
    /// Finished with an error (terminal).
    Failed,
    /// Cancelled (terminal).
    Cancelled,
}

crate::string_enum! {
    /// The snake_case name.
    SessionStatus {
        Pending => "pending",
        Active => "active",
        Paused => "paused",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
    /// Every status.
    pub const ALL;
}

impl SessionStatus {
    /// Whether no transition leaves this status.
    pub const fn is_terminal(self) -> bool {
        matches!(self, SessionStatus::Completed | SessionStatus::Failed | SessionStatus::Cancelled)
    }

    /// Whether `self -> to` is allowed (including the idempotent `active -> active`).
    pub const fn can_transition_to(self, to: SessionStatus) -> bool {
        use SessionStatus::*;
        matches!(
            (self, to),
            (Pending, Active)
                | (Active, Active)
                | (Active, Paused)
                | (Paused, Active)
                | (Active | Paused, Completed | Failed | Cancelled)
        )
    }
}

/// A conversation with one agent: the owner of runs and of one append-only event log.
///
/// ```
/// use asm_core::{Session, SessionStatus, ErrorCode};
/// let mut s = Session::new("agent")?;
/// assert_eq!(s.status, SessionStatus::Pending);
/// assert_eq!(s.transition(SessionStatus::Completed).unwrap_err().code(), ErrorCode::InvalidTransition);
/// assert_eq!(Session::new("").unwrap_err().code(), ErrorCode::ValidationError);
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The id.
    pub id: SessionId,
    /// The agent this session talks to; never empty.
    pub agent_id: String,
    /// Lifecycle state; change it with [`Session::transition`].
    pub status: SessionStatus,
    /// Parent, for hierarchical sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_session_id: Option<SessionId>,
    /// Free-form metadata. The runtime keeps `provider` and `provider_sessions` here.
    #[serde(default)]
    pub metadata: JsonMap,
    /// Context for providers, e.g. `system_prompt`.
    #[serde(default)]
    pub context: JsonMap,
    /// Tags for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Soft-delete marker.
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
}

impl Session {
    /// A new pending session.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] when `agent_id` is empty or only whitespace.
    pub fn new(agent_id: impl Into<String>) -> Result<Self, Error> {
        let agent_id = agent_id.into();
        if agent_id.trim().is_empty() {
            return Err(Error::new(ErrorCode::ValidationError, "agent_id cannot be empty"));
        }
        let now = crate::now();
        Ok(Self {
            id: SessionId::new(),
            agent_id,
            status: SessionStatus::Pending,
            parent_session_id: None,
            metadata: JsonMap::new(),
            context: JsonMap::new(),
            tags: Vec::new(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
        })
    }

    /// Moves to `to` if the state machine allows it and bumps `updated_at`. Returns whether the
    /// status changed (`false` for the idempotent `active -> active`).
    ///
    /// # Errors
    /// [`ErrorCode::InvalidTransition`]; the session is left unchanged.
    pub fn transition(&mut self, to: SessionStatus) -> Result<bool, Error> {
        if !self.status.can_transition_to(to) {
            return Err(Error::new(
                ErrorCode::InvalidTransition,
                format!("session {} cannot go from {} to {}", self.id, self.status, to),
            )
            .with_detail("from", self.status.as_str())
            .with_detail("to", to.as_str()));
        }
        if self.status == to {
            return Ok(false);
        }
        self.status = to;
        self.updated_at = crate::now();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        use SessionStatus::*;
        let allowed = [
            (Pending, Active),
            (Active, Active),
            (Active, Paused),
            (Paused, Active),
            (Active, Completed),
            (Active, Failed),
            (Active, Cancelled),
            (Paused, Completed),
            (Paused, Failed),
            (Paused, Cancelled),
        ];
        for &from in SessionStatus::ALL {
            for &to in SessionStatus::ALL {
                assert_eq!(from.can_transition_to(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn illegal_transition_leaves_session_unchanged() {
        let mut s = Session::new("a").unwrap();
        let before = s.clone();
        assert!(s.transition(SessionStatus::Paused).is_err());
        assert_eq!(s, before);
        assert!(s.transition(SessionStatus::Active).unwrap());
        assert!(!s.transition(SessionStatus::Active).unwrap());
    }

    #[test]
    fn serde_round_trip() {
        let mut s = Session::new("a").unwrap();
        s.tags.push("x".into());
        s.metadata.insert("provider".into(), "claude".into());
        let back: Session = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
