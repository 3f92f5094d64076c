//! In-process wake-ups for long-poll readers.
//!
//! A reader registers for its session, arms a [`Notify`] future, then reads through a fresh read
//! transaction. The writer notifies the sessions it changed after the commit returns. So either
//! the read sees the commit, or the notification comes after the future was armed and wakes it:
//! no append is missed.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::keys::Id;

/// Session key -> the notification of its long-poll readers (present while any reader waits).
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    sessions: Mutex<HashMap<Id, (usize, Arc<Notify>)>>,
}

impl Waiters {
    /// Registers a reader of `session` until the returned guard drops.
    pub(crate) fn register(&self, session: Id) -> Registration<'_> {
        let notify = {
            let mut sessions = self.sessions.lock();
            let entry = sessions.entry(session).or_insert_with(|| (0, Arc::new(Notify::new())));
            entry.0 += 1;
            Arc::clone(&entry.1)
        };
        Registration { waiters: self, session, notify }
    }

    /// Wakes every reader of these sessions.
    pub(crate) fn notify(&self, sessions: &[Id]) {
        if sessions.is_empty() {
            return;
        }
        let sessions_map = self.sessions.lock();
        if sessions_map.is_empty() {
            return;
        }
        for session in sessions {
            if let Some((_, notify)) = sessions_map.get(session) {
                notify.notify_waiters();
            }
        }
    }
}

/// A registered long-poll reader.
pub(crate) struct Registration<'a> {
    waiters: &'a Waiters,
    session: Id,
    pub(crate) notify: Arc<Notify>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut sessions = self.waiters.sessions.lock();
        if let Some(entry) = sessions.get_mut(&self.session) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                sessions.remove(&self.session);
            }
        }
    }
}
