//! The HTTP API of agent-session-manager: an [axum](https://docs.rs/axum) [`Router`] users can
//! mount, with REST endpoints for sessions, runs and events, Server-Sent Events resumable by
//! `Last-Event-ID`, an OpenAPI document generated from the code, and an embedded web view.
//!
//! Build an [`ApiServer`] from a store and one or more provider adapters, then either mount
//! [`ApiServer::router`] in your own application or let [`ApiServer::serve`] run it on a
//! listener (this is what `asm serve` does):
//!
//! ```no_run
//! use asm_http::ApiServer;
//! # use asm_store_memory::InMemorySessionStore;
//! # use asm_testkit::ScriptedAdapter;
//! # #[tokio::main] async fn main() -> asm_core::Result<()> {
//! let api = ApiServer::builder()
//!     .store(InMemorySessionStore::new())
//!     .adapter("scripted", ScriptedAdapter::replying("Hi!"))
//!     .token("s3cret") // required on any non-loopback address
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7377").await.expect("bind");
//! api.serve(listener, async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /v1/health` | [`Health`] |
//! | `GET /v1/sessions?status=&agent=&tag=&limit=&cursor=` | [`SessionList`], newest first |
//! | `POST /v1/sessions` ([`CreateSession`]) | `201` + [`SessionView`] |
//! | `GET /v1/sessions/{id}` | [`SessionView`] (with run count, usage and cost) |
//! | `GET /v1/sessions/{id}/runs` | the session's runs, oldest first |
//! | `POST /v1/sessions/{id}/runs` ([`SubmitRun`]) | `202` + [`RunAccepted`]: queued through the session's [`SessionServer`](asm_runtime::SessionServer) |
//! | `GET /v1/runs/{id}` | the run |
//! | `POST /v1/runs/{id}/cancel` | `202` + the run |
//! | `GET /v1/sessions/{id}/events?after=&limit=&kind=&run=` | JSON array of [`EventJson`](asm_core::EventJson) |
//! | `GET /v1/sessions/{id}/events/stream?after=&kind=` | Server-Sent Events |
//! | `GET /v1/approvals?session_id=` | [`ApprovalList`]: tool calls waiting for a decision ([`ApiServerBuilder::approvals`]) |
//! | `POST /v1/approvals/{id}` ([`AnswerApproval`]: `{decision, reason}`) | [`ApprovalAnswered`]; 404 unknown id, 409 already answered or no longer waiting, 400 unknown decision |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 document ([`openapi`]) |
//! | `GET /`, `GET /sessions/{id}` | the web view |
//!
//! **Server-Sent Events**: one SSE event per stored event, `id:` its sequence, `event:` its
//! kind, `data:` the [`EventJson`](asm_core::EventJson). A reconnecting client's
//! `Last-Event-ID` header wins over `after`: the stream resumes strictly after it, so every
//! event arrives exactly once and in order, also across a server restart on a durable store
//! (the sequence is the store's). The stream follows the store by long-poll (no polling loop)
//! and sends a comment heartbeat (`: heartbeat`) every 15 s ([`ApiServerBuilder::heartbeat`]).
//!
//! **Errors** are `{code, message, details?}` ([`ErrorBody`]) with the status of
//! [`status_for`]: 400 validation, 404 not found, 409 invalid transition, 429 limits, 503
//! unavailable, ...
//!
//! **Authentication**: with a token, every `/v1` request needs `Authorization: Bearer
//! <token>` (compared in constant time); `GET` requests may carry it as the `asm_token` cookie
//! instead, which is how the web view's `EventSource` authenticates. [`ApiServer::serve`]
//! refuses to listen on a non-loopback address without a token ([`check_listen_addr`]).
//! A router mounted by hand is the application's to protect.
#![deny(missing_docs)]

mod api;
mod auth;
mod error;
mod schema;
mod web;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;

use asm_core::{Error, ErrorCode, Result, Session, SessionId};
use asm_ports::{
    ApprovalHandler, DynApprovalHandler, DynProviderAdapter, DynSessionStore, ProviderAdapter, SessionStore,
};
use asm_runtime::{
    ApprovalQueue, ConcurrencyLimiter, ServerConfig, SessionManager, SessionServer, SessionSupervisor, ShutdownPolicy,
};

pub use api::openapi;
pub use error::{ApiError, ErrorBody, status_for};
pub use schema::{
    AnswerApproval, ApprovalAnswered, ApprovalList, ApprovalView, ContinuationBody, CreateSession, Health, InputBody,
    MessageBody, RunAccepted, SessionList, SessionView, SubmitRun,
};

/// The default SSE heartbeat interval (15 s).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Whether `addr` may be listened on with (`has_token`) or without a token: loopback addresses
/// (127.0.0.0/8, `::1`) always may, any other address only with a token.
///
/// # Errors
/// [`ErrorCode::ValidationError`] for a non-loopback address without a token.
///
/// ```
/// let lan: std::net::SocketAddr = "0.0.0.0:7377".parse().unwrap();
/// assert!(asm_http::check_listen_addr(lan, false).is_err());
/// assert!(asm_http::check_listen_addr(lan, true).is_ok());
/// assert!(asm_http::check_listen_addr("127.0.0.1:7377".parse().unwrap(), false).is_ok());
/// ```
pub fn check_listen_addr(addr: SocketAddr, has_token: bool) -> Result<()> {
    if has_token || addr.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::ValidationError,
        format!("listening on {addr} (not a loopback address) requires a token (--token / ApiServerBuilder::token)"),
    )
    .with_detail("listen", addr.to_string()))
}

/// Configures an [`ApiServer`]: the store, the provider adapters by name (the first is the
/// default), an optional bearer token and the per-session server settings.
#[must_use]
pub struct ApiServerBuilder {
    store: Option<DynSessionStore>,
    adapters: Vec<(String, DynProviderAdapter)>,
    default_provider: Option<String>,
    token: Option<String>,
    heartbeat: Duration,
    max_concurrent_runs: usize,
    max_queued_runs: usize,
    limiter: Option<ConcurrencyLimiter>,
    shutdown_policy: ShutdownPolicy,
    shutdown_timeout: Duration,
    approvals: Option<ApprovalQueue>,
    approval_handler: Option<DynApprovalHandler>,
    approval_timeout: Option<Duration>,
}

impl fmt::Debug for ApiServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServerBuilder")
            .field("store", &self.store)
            .field("adapters", &self.adapters.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .field("default_provider", &self.default_provider)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl ApiServerBuilder {
    /// The store (required).
    pub fn store(self, store: impl SessionStore) -> Self {
        self.shared_store(Arc::new(store))
    }

    /// The store, already shared.
    pub fn shared_store(mut self, store: DynSessionStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds a provider adapter under `name` (at least one is required; the first added is the
    /// default unless [`default_provider`](Self::default_provider) says otherwise). Sessions
    /// are bound to a provider by `metadata.provider`, which the runtime sets to the adapter's
    /// own [`name`](ProviderAdapter::name); a session is matched by either.
    pub fn adapter(self, name: impl Into<String>, adapter: impl ProviderAdapter) -> Self {
        self.shared_adapter(name, Arc::new(adapter))
    }

    /// [`adapter`](Self::adapter) with a shared adapter.
    pub fn shared_adapter(mut self, name: impl Into<String>, adapter: DynProviderAdapter) -> Self {
        self.adapters.push((name.into(), adapter));
        self
    }

    /// The provider new sessions use when the request names none.
    pub fn default_provider(mut self, name: impl Into<String>) -> Self {
        self.default_provider = Some(name.into());
        self
    }

    /// Requires `Authorization: Bearer <token>` on every `/v1` request. Required for
    /// [`ApiServer::serve`] on a non-loopback address. An empty token is refused by
    /// [`build`](Self::build).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// [`token`](Self::token) when `Some`.
    pub fn token_opt(self, token: Option<String>) -> Self {
        match token {
            Some(token) => self.token(token),
            None => self,
        }
    }

    /// The SSE comment heartbeat interval (default [`DEFAULT_HEARTBEAT`], 15 s).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Runs executing at once per session (default 1).
    pub fn max_concurrent_runs(mut self, slots: usize) -> Self {
        self.max_concurrent_runs = slots;
        self
    }

    /// Runs waiting per session (default 100); more is `429 max_runs_exceeded`.
    pub fn max_queued_runs(mut self, capacity: usize) -> Self {
        self.max_queued_runs = capacity;
        self
    }

    /// A process-wide limiter for sessions with a running server and for runs.
    pub fn limiter(mut self, limiter: ConcurrencyLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// What stopping the API does with unfinished runs (default [`ShutdownPolicy::Cancel`]:
    /// they end `cancelled`, their providers stopped) and how long it waits (default 10 s).
    pub fn shutdown(mut self, policy: ShutdownPolicy, timeout: Duration) -> Self {
        self.shutdown_policy = policy;
        self.shutdown_timeout = timeout;
        self
    }

    /// Enables live tool approvals answered through the API: `GET /v1/approvals` lists what
    /// `queue` holds, `POST /v1/approvals/{id}` answers it. Unless
    /// [`approval_handler`](Self::approval_handler) says otherwise, `queue` is also what every
    /// provider's runs ask.
    pub fn approvals(mut self, queue: ApprovalQueue) -> Self {
        self.approvals = Some(queue);
        self
    }

    /// What the runs ask about their tool calls, when it is not the queue itself: for example
    /// a policy that decides what its rules cover and falls through to the queue
    /// (`PolicyApprovals::new(policy).fallback(queue.clone())` in `asm-policy`).
    pub fn approval_handler(mut self, handler: impl ApprovalHandler + 'static) -> Self {
        self.approval_handler = Some(Arc::new(handler));
        self
    }

    /// How long a tool call waits for a decision before it is denied (default
    /// [`DEFAULT_APPROVAL_TIMEOUT`](asm_runtime::DEFAULT_APPROVAL_TIMEOUT)).
    pub fn approval_timeout(mut self, timeout: Duration) -> Self {
        self.approval_timeout = Some(timeout);
        self
    }

    /// The server.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] without a store or adapter, with two adapters of one
    /// name, an unknown default provider, an empty token, a zero heartbeat or zero run slots.
    pub fn build(self) -> Result<ApiServer> {
        let invalid = |message: &str| Error::new(ErrorCode::ValidationError, message.to_owned());
        let store = self.store.ok_or_else(|| invalid("an ApiServer needs a store"))?;
        if self.adapters.is_empty() {
            return Err(invalid("an ApiServer needs at least one provider adapter"));
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(invalid("the API token cannot be empty"));
        }
        if self.heartbeat.is_zero() {
            return Err(invalid("the heartbeat interval must be greater than zero"));
        }
        if self.max_concurrent_runs == 0 {
            return Err(invalid("max_concurrent_runs must be at least 1"));
        }
        let mut providers = BTreeMap::new();
        let mut order = Vec::new();
        for (name, adapter) in self.adapters {
            let mut manager = SessionManager::from_shared(store.clone(), adapter);
            let handler: Option<DynApprovalHandler> = self
                .approval_handler
                .clone()
                .or_else(|| self.approvals.clone().map(|queue| Arc::new(queue) as DynApprovalHandler));
            if let Some(handler) = handler {
                manager = manager.shared_approvals(handler);
            }
            if let Some(timeout) = self.approval_timeout {
                manager = manager.approval_timeout(timeout);
            }
            if providers.insert(name.clone(), manager).is_some() {
                return Err(invalid(&format!("provider {name:?} is configured twice")));
            }
            order.push(name);
        }
        let default_provider = self.default_provider.unwrap_or_else(|| order[0].clone());
        if !providers.contains_key(&default_provider) {
            return Err(invalid(&format!("default provider {default_provider:?} is not configured")));
        }
        order.retain(|name| name != &default_provider);
        order.insert(0, default_provider.clone());
        let supervisor = match self.limiter.clone() {
            Some(limiter) => SessionSupervisor::new().with_limiter(limiter),
            None => SessionSupervisor::new(),
        };
        let (shutdown, _) = watch::channel(false);
        Ok(ApiServer {
            inner: Arc::new(Inner {
                store,
                providers,
                order,
                default_provider,
                token: self.token.map(auth::Token::new),
                heartbeat: self.heartbeat,
                max_concurrent_runs: self.max_concurrent_runs,
                max_queued_runs: self.max_queued_runs,
                limiter: self.limiter,
                shutdown_policy: self.shutdown_policy,
                shutdown_timeout: self.shutdown_timeout,
                supervisor,
                shutdown,
                approvals: self.approvals,
            }),
        })
    }
}

/// The HTTP API over one store and a set of provider adapters: a cheap, cloneable,
/// `Send + Sync` handle. [`router`](Self::router) gives the axum [`Router`];
/// [`serve`](Self::serve) runs it on a listener with the token rule and a graceful shutdown.
///
/// Each session whose runs are submitted through the API gets one [`SessionServer`] (a FIFO
/// queue with `max_concurrent_runs` slots), registered in a [`SessionSupervisor`], which
/// restarts it from the store if its task dies.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: DynSessionStore,
    pub(crate) providers: BTreeMap<String, SessionManager>,
    /// Provider names, the default first.
    pub(crate) order: Vec<String>,
    pub(crate) default_provider: String,
    pub(crate) token: Option<auth::Token>,
    pub(crate) heartbeat: Duration,
    max_concurrent_runs: usize,
    max_queued_runs: usize,
    limiter: Option<ConcurrencyLimiter>,
    shutdown_policy: ShutdownPolicy,
    shutdown_timeout: Duration,
    pub(crate) supervisor: SessionSupervisor,
    /// `true` once the API is stopping: live event streams end.
    pub(crate) shutdown: watch::Sender<bool>,
    /// The queue `/v1/approvals` lists and answers.
    pub(crate) approvals: Option<ApprovalQueue>,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("store", &self.inner.store)
            .field("providers", &self.inner.order)
            .field("token", &self.inner.token.as_ref().map(|_| "<redacted>"))
            .field("heartbeat", &self.inner.heartbeat)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// A builder with the defaults (15 s heartbeat, 1 run slot and 100 queued runs per
    /// session, cancel unfinished runs on shutdown within 10 s).
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder {
            store: None,
            adapters: Vec::new(),
            default_provider: None,
            token: None,
            heartbeat: DEFAULT_HEARTBEAT,
            max_concurrent_runs: 1,
            max_queued_runs: ServerConfig::DEFAULT_MAX_QUEUED_RUNS,
            limiter: None,
            shutdown_policy: ShutdownPolicy::Cancel,
            shutdown_timeout: Duration::from_secs(10),
            approvals: None,
            approval_handler: None,
            approval_timeout: None,
        }
    }

    /// The axum router: `/v1/...`, `/v1/openapi.json` and the web view. Mount it with
    /// [`Router::nest`] or [`Router::merge`], or test it in process with
    /// `tower::ServiceExt::oneshot`.
    ///
    /// ```
    /// # use asm_http::ApiServer;
    /// # use asm_store_memory::InMemorySessionStore;
    /// # use asm_testkit::ScriptedAdapter;
    /// let api = ApiServer::builder().store(InMemorySessionStore::new()).adapter("scripted", ScriptedAdapter::new()).build()?;
    /// let app: axum::Router = axum::Router::new().nest("/agents", api.router());
    /// # let _ = app;
    /// # Ok::<(), asm_core::Error>(())
    /// ```
    pub fn router(&self) -> Router {
        api::routes(self.clone()).merge(web::routes())
    }

    /// The configured provider names, the default first.
    pub fn providers(&self) -> &[String] {
        &self.inner.order
    }

    /// Whether a bearer token is required.
    pub fn has_token(&self) -> bool {
        self.inner.token.is_some()
    }

    /// The supervisor of the sessions' servers.
    pub fn supervisor(&self) -> &SessionSupervisor {
        &self.inner.supervisor
    }

    /// Serves [`router`](Self::router) on `listener` until `shutdown` completes, then ends
    /// the live event streams, lets open requests finish and stops the sessions' servers
    /// (with the configured shutdown policy).
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] when the listener is on a non-loopback address and no
    /// token is configured ([`check_listen_addr`]); [`ErrorCode::InternalError`] for an I/O
    /// failure of the listener; the first error stopping a session's server.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener.local_addr().map_err(io_error)?;
        check_listen_addr(addr, self.has_token())?;
        tracing::info!(%addr, providers = ?self.inner.order, "asm-http listening");
        let stop = self.inner.shutdown.clone();
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                shutdown.await;
                stop.send_replace(true);
            })
            .await;
        let stopped = self.stop().await;
        served.map_err(io_error)?;
        stopped
    }

    /// Ends the live event streams and stops every session's server (with the configured
    /// shutdown policy). [`serve`](Self::serve) calls it; call it yourself when you mounted
    /// the router in your own server.
    ///
    /// # Errors
    /// The first error stopping a server.
    pub async fn stop(&self) -> Result<()> {
        self.inner.shutdown.send_replace(true);
        self.inner.supervisor.stop_all().await
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Inner {
    /// The provider name and manager a session's runs use: the request's `provider` when it
    /// is given (it must be the session's), else the session's `metadata.provider`, else the
    /// default.
    pub(crate) fn provider_for(&self, session: &Session, requested: Option<&str>) -> Result<(&str, &SessionManager)> {
        let recorded = session.metadata.get("provider").and_then(|p| p.as_str());
        if let (Some(requested), Some(recorded)) = (requested, recorded)
            && self.lookup(requested).map(|(name, _)| name) != self.lookup(recorded).map(|(name, _)| name)
        {
            return Err(Error::new(
                ErrorCode::ValidationError,
                format!(
                    "session {} runs on provider {recorded:?}, not {requested:?}; start a new session for another provider",
                    session.id
                ),
            )
            .with_detail("provider", requested)
            .with_detail("session_provider", recorded));
        }
        match requested.or(recorded) {
            Some(name) => self.lookup(name).ok_or_else(|| {
                Error::new(
                    ErrorCode::DependencyNotAvailable,
                    format!("provider {name:?} is not configured on this server"),
                )
                .with_detail("provider", name)
                .with_detail("providers", self.order.clone())
            }),
            None => self.lookup(&self.default_provider).ok_or_else(|| Error::from_code(ErrorCode::InternalError)),
        }
    }

    /// A configured provider by its registered name or its adapter's name.
    pub(crate) fn lookup(&self, name: &str) -> Option<(&str, &SessionManager)> {
        self.providers
            .get_key_value(name)
            .or_else(|| self.providers.iter().find(|(_, manager)| manager.adapter().name() == name))
            .map(|(key, manager)| (key.as_str(), manager))
    }

    /// The manager of the default provider: reads and streams (any manager reads the store).
    pub(crate) fn reader(&self) -> &SessionManager {
        &self.providers[&self.default_provider]
    }

    /// The session's server, started (attached) on first use.
    pub(crate) async fn server_for(&self, session_id: &SessionId, manager: &SessionManager) -> Result<SessionServer> {
        for _ in 0..3 {
            if let Some(server) = self.supervisor.whereis(session_id).filter(SessionServer::is_running) {
                return Ok(server);
            }
            let mut config = ServerConfig::from_manager(manager.clone())
                .attach(session_id.clone())
                .max_concurrent_runs(self.max_concurrent_runs)
                .max_queued_runs(self.max_queued_runs)
                .recover_pending_runs(true)
                .shutdown_policy(self.shutdown_policy)
                .shutdown_timeout(self.shutdown_timeout);
            if let Some(limiter) = &self.limiter {
                config = config.limiter(limiter.clone());
            }
            match self.supervisor.start_session(config).await {
                // Another request started it meanwhile: use that one.
                Err(error) if error.code() == ErrorCode::AlreadyExists => continue,
                other => return other,
            }
        }
        Err(Error::new(ErrorCode::InternalError, format!("could not start a server for session {session_id}")))
    }
}

fn io_error(error: std::io::Error) -> Error {
    Error::new(ErrorCode::InternalError, format!("listener failed: {error}")).with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_sync() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<ApiServer>();
    }

    #[test]
    fn loopback_rule() {
        for (addr, ok) in [
            ("127.0.0.1:1", true),
            ("127.10.0.3:1", true),
            ("[::1]:1", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("0.0.0.0:1", false),
            ("[::]:1", false),
            ("192.168.1.4:1", false),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(check_listen_addr(addr, false).is_ok(), ok, "{addr}");
            assert!(check_listen_addr(addr, true).is_ok(), "{addr}");
        }
        let refused = check_listen_addr("0.0.0.0:7377".parse().unwrap(), false).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::ValidationError);
    }
}
