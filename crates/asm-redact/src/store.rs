use async_trait::async_trait;

use asm_core::{Event, Result, Run, StoredEvent};
use asm_ports::{ExecutionRecord, Layered, SessionStore, StoreLayer};

use crate::Redactor;

/// A [`SessionStore`] that redacts every event (and every run's output) before the inner store
/// persists it, whoever writes: the runtime, a `SessionServer`, the HTTP API, an import.
///
/// Reads are forwarded untouched: what was stored is already redacted, so every reader and
/// subscriber (cursor reads, long-poll, streams, SSE) sees only redacted data. It is the
/// [`Redactor`] as a [`StoreLayer`]: [`inner`](Layered::inner) is the wrapped store,
/// [`layer`](Layered::layer) the redactor.
///
/// ```
/// use asm_redact::{RedactExt, Redactor};
/// use asm_store_memory::InMemorySessionStore;
/// let store = InMemorySessionStore::new().redacted(Redactor::new());
/// # let _ = store;
/// ```
pub type RedactingStore<S> = Layered<S, Redactor>;

impl Redactor {
    fn redact_events(&self, mut events: Vec<Event>) -> Vec<Event> {
        for event in &mut events {
            self.redact_event(event);
        }
        events
    }

    fn redact_run(&self, run: &mut Run) {
        if let Some(output) = &mut run.output {
            let (content, _) = self.redact_str(&output.content);
            output.content = content;
            self.redact_map(&mut output.extra);
        }
    }
}

/// Turns redaction on for any store in one call.
pub trait RedactExt: SessionStore + Sized {
    /// This store, redacting with `redactor` before every write.
    fn redacted(self, redactor: Redactor) -> RedactingStore<Self> {
        Layered::new(self, redactor)
    }
}

impl<S: SessionStore> RedactExt for S {}

/// Redacts what is written; reads pass through.
#[async_trait]
impl StoreLayer for Redactor {
    async fn save_run(&self, inner: &dyn SessionStore, run: &Run) -> Result<()> {
        if run.output.is_none() {
            return inner.save_run(run).await;
        }
        let mut run = run.clone();
        self.redact_run(&mut run);
        inner.save_run(&run).await
    }
    async fn append(
        &self,
        inner: &dyn SessionStore,
        events: Vec<Event>,
        expected_last_sequence: Option<u64>,
    ) -> Result<Vec<StoredEvent>> {
        inner.append(self.redact_events(events), expected_last_sequence).await
    }
    async fn flush(&self, inner: &dyn SessionStore, mut record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
        self.redact_run(&mut record.run);
        record.events = self.redact_events(std::mem::take(&mut record.events));
        inner.flush(record).await
    }
    /// None: fenced writes go straight to the inner store's leases and would skip redaction.
    fn leases<'a>(&'a self, _inner: &'a dyn SessionStore) -> Option<&'a dyn asm_ports::SessionLeases> {
        None
    }
}
