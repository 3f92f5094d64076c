use async_trait::async_trait;

use asm_core::{Event, Result, Run, RunId, Session, SessionId, StoredEvent};
use asm_ports::{EventQuery, ExecutionRecord, Page, RunQuery, SessionQuery, SessionStore, StoreCapabilities};

use crate::Redactor;

/// A [`SessionStore`] that redacts every event (and every run's output) before the inner store
/// persists it, whoever writes: the runtime, a `SessionServer`, the HTTP API, an import.
///
/// Reads are forwarded untouched: what was stored is already redacted, so every reader and
/// subscriber (cursor reads, long-poll, streams, SSE) sees only redacted data.
///
/// ```
/// use asm_redact::{RedactExt, Redactor};
/// use asm_store_memory::InMemorySessionStore;
/// let store = InMemorySessionStore::new().redacted(Redactor::new());
/// # let _ = store;
/// ```
#[derive(Debug, Clone)]
pub struct RedactingStore<S> {
    inner: S,
    redactor: Redactor,
}

impl<S: SessionStore> RedactingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, redactor: Redactor) -> Self {
        Self { inner, redactor }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The redactor.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn redact_events(&self, mut events: Vec<Event>) -> Vec<Event> {
        for event in &mut events {
            self.redactor.redact_event(event);
        }
        events
    }

    fn redact_run(&self, run: &mut Run) {
        if let Some(output) = &mut run.output {
            let (content, _) = self.redactor.redact_str(&output.content);
            output.content = content;
            self.redactor.redact_map(&mut output.extra);
        }
    }
}

/// Turns redaction on for any store in one call.
pub trait RedactExt: SessionStore + Sized {
    /// This store, redacting with `redactor` before every write.
    fn redacted(self, redactor: Redactor) -> RedactingStore<Self> {
        RedactingStore::new(self, redactor)
    }
}

impl<S: SessionStore> RedactExt for S {}

#[async_trait]
impl<S: SessionStore> SessionStore for RedactingStore<S> {
    async fn save_session(&self, session: &Session) -> Result<()> {
        self.inner.save_session(session).await
    }
    async fn get_session(&self, id: &SessionId) -> Result<Session> {
        self.inner.get_session(id).await
    }
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Page<Session>> {
        self.inner.list_sessions(query).await
    }
    async fn delete_session(&self, id: &SessionId) -> Result<()> {
        self.inner.delete_session(id).await
    }
    async fn save_run(&self, run: &Run) -> Result<()> {
        if run.output.is_none() {
            return self.inner.save_run(run).await;
        }
        let mut run = run.clone();
        self.redact_run(&mut run);
        self.inner.save_run(&run).await
    }
    async fn get_run(&self, id: &RunId) -> Result<Run> {
        self.inner.get_run(id).await
    }
    async fn list_runs(&self, session_id: &SessionId, query: &RunQuery) -> Result<Vec<Run>> {
        self.inner.list_runs(session_id, query).await
    }
    async fn append(&self, events: Vec<Event>, expected_last_sequence: Option<u64>) -> Result<Vec<StoredEvent>> {
        self.inner.append(self.redact_events(events), expected_last_sequence).await
    }
    async fn get_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        self.inner.get_events(session_id, query).await
    }
    async fn latest_sequence(&self, session_id: &SessionId) -> Result<u64> {
        self.inner.latest_sequence(session_id).await
    }
    async fn flush(&self, mut record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        self.redact_run(&mut record.run);
        record.events = self.redact_events(std::mem::take(&mut record.events));
        self.inner.flush(record).await
    }
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
}
