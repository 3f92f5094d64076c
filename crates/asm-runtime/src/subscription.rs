//! Event subscriptions of a [`SessionServer`](crate::SessionServer): store backfill, then live
//! delivery through one dispatcher per session that follows the store.
//!
//! # Protocol
//!
//! The store is the source of truth: a session's events are numbered 1, 2, 3, ... without gaps,
//! and a number never changes meaning. A subscriber keeps `next`, the lowest sequence it has not
//! examined yet, and yields an event only when its sequence equals `next` (then `next += 1`).
//! So no event is yielded twice and none is skipped: whenever the subscriber would have to skip
//! (the live feed shows a sequence above `next`, it lagged behind the broadcast buffer, or the
//! feed closed), it reads the missing range from the store instead.
//!
//! The live feed is a `tokio::sync::broadcast` channel fed by one dispatcher task per server,
//! which long-polls the store after its cursor and broadcasts every event, so events written by
//! other writers (another process, a manager used directly) are delivered too. The dispatcher
//! runs only while someone is subscribed. Liveness (every event is eventually delivered): a
//! subscriber registers with the broadcast channel before it reads the store, and a dispatcher
//! is started (under a lock, at the store's latest sequence) before the subscriber's first read;
//! so every event after the subscriber's backfill is broadcast after it registered.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast};

use asm_core::{Error, ErrorCode, Event, EventKind, Result, RunId, SessionId, StoredEvent};
use asm_ports::{DynSessionStore, EventQuery};

/// Events read per store call by the dispatcher and by subscribers catching up.
const PAGE: usize = 512;
/// How long one dispatcher long-poll waits before looking again.
const LONG_POLL: Duration = Duration::from_secs(30);
/// The longest back-off after a dispatcher store error.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a [`SessionServer::subscribe`](crate::SessionServer::subscribe) delivers.
///
/// ```
/// use asm_core::EventKind;
/// use asm_runtime::SubscribeOptions;
/// // events after sequence 10 (11, 12, ...), only streamed chunks
/// let options = SubscribeOptions::after(10).kind(EventKind::MessageStreamed);
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    pub(crate) after: u64,
    pub(crate) run_id: Option<RunId>,
    pub(crate) kinds: Vec<EventKind>,
}

impl SubscribeOptions {
    /// Every event with a sequence number `> after` (exclusive, like [`EventQuery::after`]
    /// everywhere: 0 means "from the start of the log", a stored event's sequence means "what
    /// comes after it").
    ///
    /// [`EventQuery::after`]: asm_ports::EventQuery::after
    pub fn after(after: u64) -> Self {
        Self { after, ..Self::default() }
    }
    asm_core::builder_setters! {
        /// Only events of this run.
        fn run(run_id: RunId) { run_id = Some(run_id) }
        /// Only events of this kind (may be repeated; no kind means every kind).
        fn kind(kind: EventKind) { kinds.push(kind) }
    }
    /// Only events of these kinds.
    #[must_use]
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = EventKind>) -> Self {
        self.kinds.extend(kinds);
        self
    }

    fn matches(&self, event: &Event) -> bool {
        self.run_id.as_ref().is_none_or(|r| event.run_id.as_ref() == Some(r))
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
    }
}

/// The per-server fan-out: broadcast channel, dispatcher lifecycle and subscriber count.
pub(crate) struct Hub {
    store: DynSessionStore,
    session_id: SessionId,
    capacity: usize,
    poll_interval: Duration,
    state: Mutex<HubState>,
    /// Serialises dispatcher start and stop with subscriber registration.
    start: tokio::sync::Mutex<()>,
    subscribers: AtomicUsize,
    /// Wakes the dispatcher: a subscriber left, the server appended (stores without long-poll),
    /// or the hub closed.
    wake: Notify,
}

#[derive(Default)]
struct HubState {
    sender: Option<broadcast::Sender<StoredEvent>>,
    dispatching: bool,
    closed: bool,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("subscribers", &self.subscriber_count()).finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn new(store: DynSessionStore, session_id: SessionId, capacity: usize, poll_interval: Duration) -> Self {
        Self {
            store,
            session_id,
            capacity: capacity.max(1),
            poll_interval,
            state: Mutex::new(HubState::default()),
            start: tokio::sync::Mutex::new(()),
            subscribers: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Acquire)
    }

    /// Tells the dispatcher that this process appended events (needed only for stores without
    /// long-poll, whose dispatcher otherwise polls).
    pub(crate) fn kick(&self) {
        self.wake.notify_one();
    }

    /// Ends live delivery for good: subscribers catch up from the store and end.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.sender = None;
        drop(state);
        self.wake.notify_one();
    }

    /// Registers a receiver and makes sure a dispatcher is running.
    async fn register(self: &Arc<Self>) -> Result<broadcast::Receiver<StoredEvent>> {
        let _start = self.start.lock().await;
        let (receiver, need_dispatcher) = {
            let mut state = self.state.lock();
            if state.closed {
                return Err(Error::new(ErrorCode::InvalidOperation, "the session server has stopped"));
            }
            let sender = state.sender.get_or_insert_with(|| broadcast::channel(self.capacity).0);
            (sender.subscribe(), !state.dispatching)
        };
        if need_dispatcher {
            let cursor = self.store.latest_sequence(&self.session_id).await?;
            let mut state = self.state.lock();
            let Some(sender) = state.sender.clone() else {
                return Err(Error::new(ErrorCode::InvalidOperation, "the session server has stopped"));
            };
            state.dispatching = true;
            drop(state);
            tokio::spawn(dispatch(self.clone(), sender, cursor));
        }
        Ok(receiver)
    }

    /// A new subscription (registered with the live feed before it returns).
    pub(crate) async fn subscribe(self: &Arc<Self>, options: SubscribeOptions) -> Result<EventSubscription> {
        let receiver = self.register().await?;
        self.subscribers.fetch_add(1, Ordering::AcqRel);
        let guard = SubscriberGuard { hub: self.clone() };
        let next = options.after.saturating_add(1);
        let state = SubState {
            hub: self.clone(),
            receiver: Some(receiver),
            next,
            options,
            buffer: VecDeque::new(),
            phase: Phase::Backfill,
            backfill_target: None,
            _guard: guard,
        };
        Ok(EventSubscription { inner: Box::pin(futures::stream::unfold(state, SubState::next_item)) })
    }

    /// Called by the dispatcher when it has no subscriber left: stops unless one registered
    /// meanwhile. Returns whether it stopped.
    async fn try_retire(&self, sender: &broadcast::Sender<StoredEvent>) -> bool {
        let _start = self.start.lock().await;
        let mut state = self.state.lock();
        if sender.receiver_count() > 0 && !state.closed {
            return false;
        }
        state.dispatching = false;
        state.sender = None;
        true
    }

    /// Called by the dispatcher after a store error: the live feed closes; subscribers re-read
    /// the store (and see the error themselves if it persists).
    async fn fail(&self) {
        let _start = self.start.lock().await;
        let mut state = self.state.lock();
        state.dispatching = false;
        state.sender = None;
    }
}

/// The dispatcher: follows the store after `cursor` and broadcasts every event, in order.
async fn dispatch(hub: Arc<Hub>, sender: broadcast::Sender<StoredEvent>, mut cursor: u64) {
    let long_poll = hub.store.capabilities().long_poll;
    let mut backoff = Duration::from_millis(50);
    let mut errors = 0u32;
    loop {
        if (sender.receiver_count() == 0 || hub.state.lock().closed) && hub.try_retire(&sender).await {
            return;
        }
        let mut query = EventQuery::new().after(cursor).limit(PAGE);
        if long_poll {
            query = query.wait(LONG_POLL);
        }
        let read = {
            let woken = hub.wake.notified();
            tokio::select! {
                read = hub.store.get_events(&hub.session_id, &query) => Some(read),
                () = woken => None,
            }
        };
        match read {
            None => {}
            Some(Ok(page)) => {
                errors = 0;
                backoff = Duration::from_millis(50);
                let caught_up = page.len() < PAGE;
                for event in page {
                    let Some(sequence) = event.sequence else { continue };
                    if sequence <= cursor {
                        continue;
                    }
                    cursor = sequence;
                    // No receiver is fine: the next loop iteration retires the dispatcher.
                    let _ = sender.send(event);
                }
                if caught_up && !long_poll {
                    let woken = hub.wake.notified();
                    tokio::select! {
                        () = tokio::time::sleep(hub.poll_interval) => {}
                        () = woken => {}
                    }
                }
            }
            Some(Err(error)) => {
                errors += 1;
                tracing::warn!(%error, session_id = %hub.session_id, "subscription dispatcher: store read failed");
                if errors >= 3 {
                    hub.fail().await;
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Keeps the subscriber count right however the stream ends.
struct SubscriberGuard {
    hub: Arc<Hub>,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        if self.hub.subscribers.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last subscriber left: let the dispatcher retire now instead of after its poll.
            self.hub.wake.notify_one();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Read the store from `next` up to its latest sequence, then go live.
    Backfill,
    /// Deliver from the broadcast feed.
    Live,
    /// The feed closed for good: read the store up to its latest sequence, then end.
    Final,
    /// Ended.
    Done,
}

struct SubState {
    hub: Arc<Hub>,
    receiver: Option<broadcast::Receiver<StoredEvent>>,
    /// The lowest sequence not examined yet.
    next: u64,
    options: SubscribeOptions,
    buffer: VecDeque<StoredEvent>,
    phase: Phase,
    /// The store's latest sequence when the current backfill began.
    backfill_target: Option<u64>,
    _guard: SubscriberGuard,
}

impl SubState {
    async fn next_item(mut self) -> Option<(Result<StoredEvent>, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some((Ok(event), self));
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Backfill | Phase::Final => match self.backfill_page().await {
                    Ok(false) => {}
                    Ok(true) => self.phase = if self.phase == Phase::Final { Phase::Done } else { Phase::Live },
                    Err(error) => {
                        self.phase = Phase::Done;
                        self.receiver = None;
                        return Some((Err(error), self));
                    }
                },
                Phase::Live => {
                    let Some(receiver) = self.receiver.as_mut() else {
                        self.phase = Phase::Final;
                        continue;
                    };
                    match receiver.recv().await {
                        Ok(event) => {
                            let sequence = event.sequence();
                            if sequence < self.next {
                                continue; // already delivered from the store
                            }
                            if sequence > self.next {
                                // A gap: the store has the missing events.
                                self.phase = Phase::Backfill;
                                self.backfill_target = None;
                                continue;
                            }
                            self.next += 1;
                            if self.options.matches(&event) {
                                return Some((Ok(event), self));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => self.phase = Phase::Backfill,
                        Err(broadcast::error::RecvError::Closed) => {
                            // The dispatcher stopped (store error) or the server stopped: register
                            // again, or, if the server is gone, deliver what the store has and end.
                            self.receiver = None;
                            match self.hub.register().await {
                                Ok(receiver) => {
                                    self.receiver = Some(receiver);
                                    self.phase = Phase::Backfill;
                                }
                                Err(_) => self.phase = Phase::Final,
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads one page of the matching events in `[next, target]` into the buffer, where `target`
    /// is the store's latest sequence when this backfill began, and moves `next` past what the
    /// page covers. Returns whether the backfill reached `target`.
    async fn backfill_page(&mut self) -> Result<bool> {
        let store = &self.hub.store;
        let session_id = &self.hub.session_id;
        let target = match self.backfill_target {
            Some(target) => target,
            None => {
                let latest = store.latest_sequence(session_id).await?;
                self.backfill_target = Some(latest);
                latest
            }
        };
        if target < self.next {
            self.backfill_target = None;
            return Ok(true);
        }
        let mut query = EventQuery::new().after(self.next - 1).before(target.saturating_add(1)).limit(PAGE);
        query.run_id = self.options.run_id.clone();
        query.kinds = self.options.kinds.clone();
        let page = store.get_events(session_id, &query).await?;
        let full = page.len() >= PAGE;
        let mut last = self.next - 1;
        for event in page {
            let Some(sequence) = event.sequence else { continue };
            if sequence <= last || sequence > target {
                continue;
            }
            last = sequence;
            if self.options.matches(&event) {
                self.buffer.push_back(event);
            }
        }
        if full && last < target {
            // The store returned every matching event up to `last`.
            self.next = last + 1;
            return Ok(false);
        }
        self.next = target + 1;
        self.backfill_target = None;
        Ok(true)
    }
}

/// A live feed of a session's events: every matching event exactly once, in sequence order,
/// without gaps (see [`SessionServer::subscribe`](crate::SessionServer::subscribe)).
///
/// Yields `Err` once if the store fails while the subscription reads it, then ends. Ends after
/// the server stops (once it has delivered what the store held at that point). Dropping it
/// unsubscribes.
#[must_use = "streams do nothing unless polled"]
pub struct EventSubscription {
    inner: Pin<Box<dyn Stream<Item = Result<StoredEvent>> + Send>>,
}

impl fmt::Debug for EventSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSubscription").finish_non_exhaustive()
    }
}

impl Stream for EventSubscription {
    type Item = Result<StoredEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
