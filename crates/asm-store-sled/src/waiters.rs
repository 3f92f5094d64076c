//! In-process wake-ups for long-poll readers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use asm_core::SessionId;
use tokio::sync::Notify;

/// Session id -> the notification its long-poll readers wait on, present only while someone
/// waits (so a commit costs one map lookup per touched session, or nothing when nobody waits).
#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<SessionId, (Arc<Notify>, usize)>>,
}

impl Waiters {
    /// Registers a reader of `session` for as long as the returned guard lives.
    pub(crate) fn register(self: &Arc<Self>, session: &SessionId) -> Registration {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(session.clone()).or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Registration { waiters: Arc::clone(self), session: session.clone(), notify: Arc::clone(&entry.0) }
    }

    /// Wakes every reader of these sessions.
    pub(crate) fn wake<'a>(&self, sessions: impl IntoIterator<Item = &'a SessionId>) {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.is_empty() {
            return;
        }
        for session in sessions {
            if let Some((notify, _)) = map.get(session) {
                notify.notify_waiters();
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A registered long-poll reader.
pub(crate) struct Registration {
    waiters: Arc<Waiters>,
    session: SessionId,
    pub(crate) notify: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.waiters.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get_mut(&self.session) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                map.remove(&self.session);
            }
        }
    }
}
