//! [`TranscriptCache`]: a session's transcript kept up to date incrementally for continuation
//! runs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use asm_core::{Event, Result, SessionId, Transcript, TranscriptBuilder, TranscriptOptions};
use asm_ports::{EventQuery, SessionStore};

/// Events read per store call while building or updating a transcript.
pub(crate) const TRANSCRIPT_PAGE: usize = 1_000;

/// Keeps the transcript of one session for continuation runs (`Continuation::Replay` /
/// `Continuation::Auto`), so a run replays the conversation without re-reading the whole log.
///
/// Each [`transcript`](Self::transcript) call reads only the events after the cached
/// `last_sequence` and applies them with [`TranscriptBuilder::update`], which gives exactly the
/// transcript a full rebuild gives. The cache is keyed by session and [`TranscriptOptions`]
/// (another key rebuilds it); a store error while updating drops the cached copy and rebuilds
/// from scratch; [`invalidate`](Self::invalidate) forces a rebuild on the next call. Concurrent
/// callers are serialised, so the log is read once for all of them.
///
/// A cheap, cloneable, `Send + Sync` handle. Every [`SessionServer`](crate::SessionServer) has
/// one; pass one to [`RunOptions::transcript_cache`](crate::RunOptions::transcript_cache)
/// to use it with a [`SessionManager`](crate::SessionManager) directly.
///
/// ```
/// use asm_core::{Event, EventKind, Session, TranscriptOptions};
/// use asm_ports::{SessionStore, SessionStoreExt};
/// use asm_runtime::TranscriptCache;
/// # use asm_store_memory::InMemorySessionStore;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
/// let store = InMemorySessionStore::new();
/// let session = Session::new("agent")?;
/// store.save_session(&session).await?;
/// let cache = TranscriptCache::new();
/// store.append_event(Event::new(EventKind::MessageSent, session.id.clone()).with_data("content", "Hi")).await?;
/// let first = cache.transcript(&store, &session.id, TranscriptOptions::default()).await?;
/// assert_eq!(first.messages.len(), 1);
/// store.append_event(Event::new(EventKind::MessageReceived, session.id.clone()).with_data("content", "Hello")).await?;
/// let second = cache.transcript(&store, &session.id, TranscriptOptions::default()).await?;
/// assert_eq!(second.messages.len(), 2);
/// assert_eq!(cache.stats().rebuilds, 1); // the first call built it, the second only updated
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct TranscriptCache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    entry: tokio::sync::Mutex<Option<Entry>>,
    generation: AtomicU64,
    rebuilds: AtomicU64,
    updates: AtomicU64,
    store_errors: AtomicU64,
}

struct Entry {
    session_id: SessionId,
    options: TranscriptOptions,
    generation: u64,
    transcript: Transcript,
}

/// Counters of a [`TranscriptCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TranscriptCacheStats {
    /// Full rebuilds from the start of the log.
    pub rebuilds: u64,
    /// Incremental updates of the cached transcript.
    pub updates: u64,
    /// Store errors seen (each dropped the cached copy).
    pub store_errors: u64,
}

impl fmt::Debug for TranscriptCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TranscriptCache").field("stats", &self.stats()).finish()
    }
}

impl TranscriptCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transcript of `session_id` with `options`, as a full rebuild from `store` would give
    /// it now.
    ///
    /// # Errors
    /// The store's error when a full rebuild fails too (nothing is cached then).
    #[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
    pub async fn transcript(
        &self,
        store: &dyn SessionStore,
        session_id: &SessionId,
        options: TranscriptOptions,
    ) -> Result<Transcript> {
        let builder = TranscriptBuilder::new(options);
        let mut entry = self.inner.entry.lock().await;
        let generation = self.inner.generation.load(Ordering::Acquire);
        if let Some(cached) = entry.as_mut()
            && cached.session_id == *session_id
            && cached.options == options
            && cached.generation == generation
        {
            match catch_up(store, &builder, &mut cached.transcript).await {
                Ok(()) => {
                    self.inner.updates.fetch_add(1, Ordering::Relaxed);
                    return Ok(cached.transcript.clone());
                }
                Err(error) => {
                    self.inner.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "transcript update failed; rebuilding from scratch");
                }
            }
        }
        *entry = None;
        self.inner.rebuilds.fetch_add(1, Ordering::Relaxed);
        let mut transcript = builder.from_events::<Event>(session_id, &[]);
        if let Err(error) = catch_up(store, &builder, &mut transcript).await {
            self.inner.store_errors.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        *entry = Some(Entry { session_id: session_id.clone(), options, generation, transcript: transcript.clone() });
        Ok(transcript)
    }

    /// Drops the cached transcript: the next call rebuilds it from the store.
    pub fn invalidate(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Counters.
    pub fn stats(&self) -> TranscriptCacheStats {
        TranscriptCacheStats {
            rebuilds: self.inner.rebuilds.load(Ordering::Relaxed),
            updates: self.inner.updates.load(Ordering::Relaxed),
            store_errors: self.inner.store_errors.load(Ordering::Relaxed),
        }
    }
}

/// Applies every event after `transcript.last_sequence`, page by page.
pub(crate) async fn catch_up(
    store: &dyn SessionStore,
    builder: &TranscriptBuilder,
    transcript: &mut Transcript,
) -> Result<()> {
    let session_id = transcript.session_id.clone();
    loop {
        let after = transcript.last_sequence.unwrap_or(0);
        let page = store.get_events(&session_id, &EventQuery::new().after(after).limit(TRANSCRIPT_PAGE)).await?;
        if page.is_empty() {
            return Ok(());
        }
        builder.update(transcript, &page);
        if page.len() < TRANSCRIPT_PAGE || transcript.last_sequence.unwrap_or(0) <= after {
            return Ok(());
        }
    }
}
