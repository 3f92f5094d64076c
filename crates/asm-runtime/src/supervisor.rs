//! [`SessionSupervisor`]: starts, finds, restarts and stops [`SessionServer`]s.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use asm_core::{Error, ErrorCode, Result, SessionId};

use crate::limiter::{ConcurrencyLimiter, SessionPermit};
use crate::server::{Core, ServerConfig, SessionServer};

/// Starts [`SessionServer`]s, registers them by session id, restarts a server whose task
/// died, and stops them.
///
/// - [`start_session`](Self::start_session) starts a server and registers it under its session
///   id (a session has at most one supervised server: a second start fails with
///   [`ErrorCode::AlreadyExists`]). With a [`ConcurrencyLimiter`], each server holds a session
///   slot while it runs ([`ErrorCode::MaxSessionsExceeded`] when none is free).
/// - When a server's task panics, the supervisor starts a fresh one from the store (it attaches
///   to the session again and queues the session's pending runs); handles to the server keep
///   working. More than `max_restarts` crashes within `restart_window` stop the server for good.
/// - A server that stops (shutdown, or its last handle dropped) leaves the registry.
///
/// A cheap, cloneable, `Send + Sync` handle.
///
/// ```
/// use asm_runtime::{NewSession, ServerConfig, SessionSupervisor};
/// # use asm_store_memory::InMemorySessionStore;
/// # use asm_testkit::ScriptedAdapter;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
/// let supervisor = SessionSupervisor::new();
/// let config = ServerConfig::new(InMemorySessionStore::new(), ScriptedAdapter::new()).create(NewSession::new("a"));
/// let server = supervisor.start_session(config).await?;
/// assert!(supervisor.whereis(server.session_id()).is_some());
/// supervisor.stop(server.session_id()).await?;
/// assert!(supervisor.whereis(server.session_id()).is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionSupervisor {
    inner: Arc<Inner>,
}

struct Inner {
    limiter: Option<ConcurrencyLimiter>,
    max_restarts: usize,
    restart_window: Duration,
    servers: Mutex<HashMap<SessionId, Entry>>,
}

struct Entry {
    server: SessionServer,
    _permit: Option<SessionPermit>,
}

impl fmt::Debug for SessionSupervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSupervisor")
            .field("servers", &self.inner.servers.lock().len())
            .field("limiter", &self.inner.limiter)
            .field("max_restarts", &self.inner.max_restarts)
            .field("restart_window", &self.inner.restart_window)
            .finish()
    }
}

impl Default for SessionSupervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionSupervisor {
    /// A supervisor without a limiter that restarts a server up to 3 times within 5 s.
    pub fn new() -> Self {
        Self::build(None, 3, Duration::from_secs(5))
    }

    /// The same supervisor, holding a session slot of `limiter` for each running server.
    #[must_use]
    pub fn with_limiter(self, limiter: ConcurrencyLimiter) -> Self {
        Self::build(Some(limiter), self.inner.max_restarts, self.inner.restart_window)
    }

    /// The same supervisor, restarting a server at most `max_restarts` times within `window`.
    #[must_use]
    pub fn restart_intensity(self, max_restarts: usize, window: Duration) -> Self {
        Self::build(self.inner.limiter.clone(), max_restarts, window)
    }

    fn build(limiter: Option<ConcurrencyLimiter>, max_restarts: usize, restart_window: Duration) -> Self {
        Self { inner: Arc::new(Inner { limiter, max_restarts, restart_window, servers: Mutex::new(HashMap::new()) }) }
    }

    /// Starts a server and supervises it.
    ///
    /// # Errors
    /// [`ErrorCode::AlreadyExists`] when the session already has a supervised server,
    /// [`ErrorCode::MaxSessionsExceeded`] when the limiter has no session slot, and those of
    /// [`SessionServer::start`].
    #[tracing::instrument(name = "session_supervisor.start_session", skip_all)]
    pub async fn start_session(&self, config: ServerConfig) -> Result<SessionServer> {
        let limiter = self.inner.limiter.as_ref();
        // Attaching: the session is known, so its slot is taken before anything else happens.
        let early_permit = match config.attached_session() {
            Some(session_id) => {
                self.check_free(session_id)?;
                limiter.map(|l| l.acquire_session(session_id)).transpose()?
            }
            None => {
                if let Some(limiter) = limiter
                    && limiter.status().available_session_slots == Some(0)
                {
                    let limit = limiter.limits().sessions().unwrap_or(0);
                    return Err(Error::new(
                        ErrorCode::MaxSessionsExceeded,
                        format!("Maximum parallel sessions exceeded ({limit}/{limit})"),
                    ));
                }
                None
            }
        };
        let server = SessionServer::start(config).await?;
        let session_id = server.session_id().clone();
        let permit = match (early_permit, limiter) {
            (Some(permit), _) => Some(permit),
            (None, Some(limiter)) => match limiter.acquire_session(&session_id) {
                Ok(permit) => Some(permit),
                Err(error) => {
                    let _ = server.shutdown().await;
                    return Err(error);
                }
            },
            (None, None) => None,
        };
        let registered = {
            let mut servers = self.inner.servers.lock();
            let free = !servers.contains_key(&session_id);
            if free {
                servers.insert(session_id.clone(), Entry { server: server.clone(), _permit: permit });
            }
            free
        };
        if !registered {
            let _ = server.shutdown().await;
            return Err(already_supervised(&session_id));
        }
        tokio::spawn(monitor(Arc::downgrade(&self.inner), server.core().clone(), session_id));
        Ok(server)
    }

    fn check_free(&self, session_id: &SessionId) -> Result<()> {
        if self.inner.servers.lock().contains_key(session_id) {
            return Err(already_supervised(session_id));
        }
        Ok(())
    }

    /// The supervised server of `session_id`.
    pub fn whereis(&self, session_id: &SessionId) -> Option<SessionServer> {
        self.inner.servers.lock().get(session_id).map(|entry| entry.server.clone())
    }

    /// The sessions with a supervised server.
    pub fn sessions(&self) -> Vec<SessionId> {
        self.inner.servers.lock().keys().cloned().collect()
    }

    /// Stops the server of `session_id` (with its shutdown policy), waits until it stopped and
    /// removes it.
    ///
    /// # Errors
    /// [`ErrorCode::SessionNotFound`] when the session has no supervised server; the error of
    /// [`SessionServer::shutdown`].
    #[tracing::instrument(name = "session_supervisor.stop", skip_all, fields(session_id = %session_id))]
    pub async fn stop(&self, session_id: &SessionId) -> Result<()> {
        let entry = self.inner.servers.lock().remove(session_id);
        let Some(entry) = entry else {
            return Err(Error::new(
                ErrorCode::SessionNotFound,
                format!("session {session_id} has no supervised server"),
            )
            .with_detail("session_id", session_id.as_str()));
        };
        entry.server.shutdown().await
    }

    /// Stops every supervised server.
    ///
    /// # Errors
    /// The first shutdown error (every server is still asked to stop).
    pub async fn stop_all(&self) -> Result<()> {
        let entries: Vec<Entry> = self.inner.servers.lock().drain().map(|(_, entry)| entry).collect();
        let mut first_error = None;
        for entry in entries {
            if let Err(error) = entry.server.shutdown().await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn already_supervised(session_id: &SessionId) -> Error {
    Error::new(ErrorCode::AlreadyExists, format!("session {session_id} already has a supervised server"))
        .with_detail("session_id", session_id.as_str())
}

/// Watches one server's task: restarts it after a panic, unregisters it when it stops.
async fn monitor(supervisor: std::sync::Weak<Inner>, core: Arc<Core>, session_id: SessionId) {
    let mut crashes: Vec<Instant> = Vec::new();
    loop {
        let Some(task) = core.take_task() else { break };
        match task.await {
            Ok(()) => break,
            Err(error) if error.is_panic() => {
                let Some(inner) = supervisor.upgrade() else { break };
                let now = Instant::now();
                crashes.retain(|at| now.duration_since(*at) < inner.restart_window);
                crashes.push(now);
                if crashes.len() > inner.max_restarts {
                    tracing::error!(%session_id, "session server crashed too often; giving up");
                    core.hub.close();
                    break;
                }
                tracing::warn!(%session_id, "session server task panicked; restarting it from the store");
                if let Err(error) = core.restart().await {
                    tracing::error!(%session_id, %error, "session server could not be restarted");
                    core.hub.close();
                    break;
                }
            }
            Err(_) => break,
        }
    }
    core.request_shutdown();
    if let Some(inner) = supervisor.upgrade() {
        let mut servers = inner.servers.lock();
        if servers.get(&session_id).is_some_and(|entry| Arc::ptr_eq(entry.server.core(), &core)) {
            servers.remove(&session_id);
        }
    }
}
