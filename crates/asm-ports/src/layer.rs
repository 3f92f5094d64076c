//! [`StoreLayer`] and [`Layered`]: wrap a [`SessionStore`] and change only the methods that
//! matter (redaction before writes, fencing, fault injection, metrics), as tower's layers wrap a
//! service, instead of writing every forwarding method again.

use async_trait::async_trait;

use asm_core::{Event, Result, Run, RunId, Session, SessionId, StoredEvent};

use crate::{
    EventQuery, ExecutionRecord, Page, RunQuery, SessionLeases, SessionQuery, SessionStore, StoreCapabilities,
};

/// What a layer does around each [`SessionStore`] method. Every method has a default that calls
/// the same method of `inner`, so a layer implements only what it changes.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use asm_core::{Event, EventKind, Result, Session, StoredEvent};
/// use asm_ports::{Layered, SessionStore, SessionStoreExt, StoreLayer};
/// # use asm_store_memory::InMemorySessionStore;
///
/// /// Counts appended events.
/// #[derive(Debug, Default)]
/// struct CountAppends(AtomicUsize);
///
/// #[async_trait::async_trait]
/// impl StoreLayer for CountAppends {
///     async fn append(
///         &self,
///         inner: &dyn SessionStore,
///         events: Vec<Event>,
///         expected_last_sequence: Option<u64>,
///     ) -> Result<Vec<StoredEvent>> {
///         self.0.fetch_add(events.len(), Ordering::Relaxed);
///         inner.append(events, expected_last_sequence).await
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let store = Layered::new(InMemorySessionStore::new(), CountAppends::default());
/// let session = Session::new("agent")?;
/// store.save_session(&session).await?;
/// store.append_event(Event::new(EventKind::MessageSent, session.id.clone())).await?;
/// assert_eq!(store.layer().0.load(Ordering::Relaxed), 1);
/// # Ok::<(), asm_core::Error>(())
/// # })?;
/// # Ok::<(), asm_core::Error>(())
/// ```
#[async_trait]
pub trait StoreLayer: std::fmt::Debug + Send + Sync {
    /// [`SessionStore::save_session`].
    async fn save_session(&self, inner: &dyn SessionStore, session: &Session) -> Result<()> {
        inner.save_session(session).await
    }
    /// [`SessionStore::get_session`].
    async fn get_session(&self, inner: &dyn SessionStore, id: &SessionId) -> Result<Session> {
        inner.get_session(id).await
    }
    /// [`SessionStore::list_sessions`].
    async fn list_sessions(&self, inner: &dyn SessionStore, query: &SessionQuery) -> Result<Page<Session>> {
        inner.list_sessions(query).await
    }
    /// [`SessionStore::delete_session`].
    async fn delete_session(&self, inner: &dyn SessionStore, id: &SessionId) -> Result<()> {
        inner.delete_session(id).await
    }
    /// [`SessionStore::save_run`].
    async fn save_run(&self, inner: &dyn SessionStore, run: &Run) -> Result<()> {
        inner.save_run(run).await
    }
    /// [`SessionStore::get_run`].
    async fn get_run(&self, inner: &dyn SessionStore, id: &RunId) -> Result<Run> {
        inner.get_run(id).await
    }
    /// [`SessionStore::list_runs`].
    async fn list_runs(&self, inner: &dyn SessionStore, session_id: &SessionId, query: &RunQuery) -> Result<Vec<Run>> {
        inner.list_runs(session_id, query).await
    }
    /// [`SessionStore::append`].
    async fn append(
        &self,
        inner: &dyn SessionStore,
        events: Vec<Event>,
        expected_last_sequence: Option<u64>,
    ) -> Result<Vec<StoredEvent>> {
        inner.append(events, expected_last_sequence).await
    }
    /// [`SessionStore::get_events`].
    async fn get_events(
        &self,
        inner: &dyn SessionStore,
        session_id: &SessionId,
        query: &EventQuery,
    ) -> Result<Vec<StoredEvent>> {
        inner.get_events(session_id, query).await
    }
    /// [`SessionStore::latest_sequence`].
    async fn latest_sequence(&self, inner: &dyn SessionStore, session_id: &SessionId) -> Result<u64> {
        inner.latest_sequence(session_id).await
    }
    /// [`SessionStore::flush`].
    async fn flush(&self, inner: &dyn SessionStore, record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        inner.flush(record).await
    }
    /// [`SessionStore::capabilities`].
    fn capabilities(&self, inner: &dyn SessionStore) -> StoreCapabilities {
        inner.capabilities()
    }
    /// [`SessionStore::leases`].
    fn leases<'a>(&'a self, inner: &'a dyn SessionStore) -> Option<&'a dyn SessionLeases> {
        inner.leases()
    }
}

/// A store behind a [`StoreLayer`]: every [`SessionStore`] method goes through the layer, which
/// gets the inner store to call.
#[derive(Clone, Debug, Default)]
pub struct Layered<S, L> {
    inner: S,
    layer: L,
}

impl<S, L> Layered<S, L> {
    /// `inner` behind `layer`.
    pub const fn new(inner: S, layer: L) -> Self {
        Self { inner, layer }
    }

    /// The wrapped store.
    pub const fn inner(&self) -> &S {
        &self.inner
    }

    /// The layer.
    pub const fn layer(&self) -> &L {
        &self.layer
    }

    /// The store and the layer.
    pub fn into_parts(self) -> (S, L) {
        (self.inner, self.layer)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: SessionStore, L: StoreLayer + 'static> SessionStore for Layered<S, L> {
    async fn save_session(&self, session: &Session) -> Result<()> {
        self.layer.save_session(&self.inner, session).await
    }
    async fn get_session(&self, id: &SessionId) -> Result<Session> {
        self.layer.get_session(&self.inner, id).await
    }
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Page<Session>> {
        self.layer.list_sessions(&self.inner, query).await
    }
    async fn delete_session(&self, id: &SessionId) -> Result<()> {
        self.layer.delete_session(&self.inner, id).await
    }
    async fn save_run(&self, run: &Run) -> Result<()> {
        self.layer.save_run(&self.inner, run).await
    }
    async fn get_run(&self, id: &RunId) -> Result<Run> {
        self.layer.get_run(&self.inner, id).await
    }
    async fn list_runs(&self, session_id: &SessionId, query: &RunQuery) -> Result<Vec<Run>> {
        self.layer.list_runs(&self.inner, session_id, query).await
    }
    async fn append(&self, events: Vec<Event>, expected_last_sequence: Option<u64>) -> Result<Vec<StoredEvent>> {
        self.layer.append(&self.inner, events, expected_last_sequence).await
    }
    async fn get_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        self.layer.get_events(&self.inner, session_id, query).await
    }
    async fn latest_sequence(&self, session_id: &SessionId) -> Result<u64> {
        self.layer.latest_sequence(&self.inner, session_id).await
    }
    async fn flush(&self, record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        self.layer.flush(&self.inner, record).await
    }
    fn capabilities(&self) -> StoreCapabilities {
        self.layer.capabilities(&self.inner)
    }
    fn leases(&self) -> Option<&dyn SessionLeases> {
        self.layer.leases(&self.inner)
    }
}
