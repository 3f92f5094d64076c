//! Long-poll wake-ups: one LISTEN connection per store, fanned out to per-session waiters.
//!
//! Writers (in any process) `pg_notify` the schema's channel with the session id inside their
//! transaction; PostgreSQL delivers it on commit. The listener task owns a dedicated connection
//! that LISTENs on the channel and wakes the waiters of that session. When that connection is
//! lost, the task reconnects with backoff and, once LISTEN is in place again, wakes **every**
//! waiter: notifications sent while it was gone are lost, so every reader re-reads from its
//! cursor and misses nothing. Readers never poll on a timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::options::RetryPolicy;

/// The waiters of one session.
#[derive(Debug, Default)]
pub(crate) struct SessionWaiters {
    notify: Notify,
}

impl SessionWaiters {
    /// A future that completes at the next wake-up; enable it before reading so that a
    /// wake-up between the read and the await is not missed.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// Session id -> its waiters, shared by the store's readers, its writers (which wake local
/// readers right after a commit) and the listener task.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    sessions: Mutex<HashMap<Uuid, (Arc<SessionWaiters>, usize)>>,
    /// How many times the LISTEN connection was (re)established: tests and diagnostics.
    connects: AtomicU64,
}

/// A reader's registration; unregisters when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    waiters: Arc<Waiters>,
    session: Uuid,
    slot: Arc<SessionWaiters>,
}

impl Registration {
    pub(crate) fn slot(&self) -> &SessionWaiters {
        &self.slot
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.waiters.sessions.lock();
        if let Some((_, count)) = sessions.get_mut(&self.session) {
            *count -= 1;
            if *count == 0 {
                sessions.remove(&self.session);
            }
        }
    }
}

impl Waiters {
    pub(crate) fn register(self: &Arc<Self>, session: Uuid) -> Registration {
        let slot = {
            let mut sessions = self.sessions.lock();
            let entry = sessions.entry(session).or_insert_with(|| (Arc::new(SessionWaiters::default()), 0));
            entry.1 += 1;
            Arc::clone(&entry.0)
        };
        Registration { waiters: Arc::clone(self), session, slot }
    }

    /// Wakes the readers of `session` (they re-read).
    pub(crate) fn wake(&self, session: &Uuid) {
        let slot = self.sessions.lock().get(session).map(|(slot, _)| Arc::clone(slot));
        if let Some(slot) = slot {
            slot.notify.notify_waiters();
        }
    }

    /// Wakes every reader (after the LISTEN connection was re-established).
    pub(crate) fn wake_all(&self) {
        let slots: Vec<Arc<SessionWaiters>> = self.sessions.lock().values().map(|(slot, _)| Arc::clone(slot)).collect();
        for slot in slots {
            slot.notify.notify_waiters();
        }
    }

    /// Long-poll readers waiting now.
    pub(crate) fn readers(&self) -> usize {
        self.sessions.lock().values().map(|(_, count)| count).sum()
    }

    pub(crate) fn connects(&self) -> u64 {
        self.connects.load(Ordering::SeqCst)
    }

    #[cfg(test)]
    pub(crate) fn registered(&self) -> usize {
        self.sessions.lock().len()
    }
}

/// Runs until `stop` is dropped: connect, LISTEN, dispatch; on loss, reconnect with backoff.
pub(crate) async fn run(
    config: tokio_postgres::Config,
    channel: String,
    waiters: Arc<Waiters>,
    retry: RetryPolicy,
    mut stop: watch::Receiver<()>,
) {
    let mut backoff = retry.first_backoff;
    loop {
        let session = tokio::select! {
            _ = stop.changed() => return,
            session = listen_once(&config, &channel, &waiters) => session,
        };
        match session {
            // The connection was up and LISTENing, then ended: reconnect at once.
            Ok(true) => backoff = retry.first_backoff,
            failed => {
                if let Err(e) = failed {
                    tracing::warn!(error = %e, ?backoff, "LISTEN connection failed; reconnecting");
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(retry.max_backoff).max(Duration::from_millis(1));
            }
        }
    }
}

/// One LISTEN connection's life: `Ok(true)` when it was established and then ended.
async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    waiters: &Arc<Waiters>,
) -> Result<bool, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (messages_tx, mut messages) = futures::channel::mpsc::unbounded();
    // The connection must be polled for the LISTEN below to complete; its messages (the
    // notifications) go through the channel.
    let driver = async move {
        let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            match message {
                Ok(message) => {
                    if messages_tx.unbounded_send(message).is_err() {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let mut driver = std::pin::pin!(driver);
    let listen_sql = format!("LISTEN \"{channel}\"");
    tokio::select! {
        ended = &mut driver => return ended.map(|()| false),
        listened = client.batch_execute(&listen_sql) => listened?,
    }
    waiters.connects.fetch_add(1, Ordering::SeqCst);
    // Anything committed while there was no LISTEN connection was not announced: re-read.
    waiters.wake_all();
    tracing::debug!(channel, "listening");
    loop {
        tokio::select! {
            ended = &mut driver => {
                waiters.wake_all();
                return ended.map(|()| true);
            }
            message = messages.next() => match message {
                Some(AsyncMessage::Notification(n)) => {
                    // One session id, or several separated by commas (a group commit).
                    for id in n.payload().split(',') {
                        if let Ok(session) = Uuid::try_parse(id) {
                            waiters.wake(&session);
                        }
                    }
                }
                Some(_) => {}
                None => return Ok(true),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registrations_are_counted_and_removed() {
        let waiters = Arc::new(Waiters::default());
        let s = Uuid::now_v7();
        let a = waiters.register(s);
        let b = waiters.register(s);
        assert_eq!(waiters.registered(), 1);
        drop(a);
        assert_eq!(waiters.registered(), 1);
        {
            let notified = b.slot().notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            waiters.wake(&s);
            tokio::time::timeout(Duration::from_secs(1), notified).await.unwrap();
        }
        assert_eq!(waiters.readers(), 1);
        drop(b);
        assert_eq!(waiters.registered(), 0);
    }
}
