use std::collections::VecDeque;

use futures::StreamExt;
use futures::stream::BoxStream;

use asm_core::{Result, SessionId, StoredEvent};
use asm_ports::{DynSessionStore, EventQuery};

use crate::options::{StreamMode, StreamOptions};

/// A boxed, `Unpin`, `Send` stream of stored events (as `object_store`'s `BoxStream`): what
/// [`SessionManager::stream_session_events`](crate::SessionManager::stream_session_events)
/// returns. Store errors are yielded and end it.
pub type EventStream = BoxStream<'static, Result<StoredEvent>>;

struct State {
    store: DynSessionStore,
    session_id: SessionId,
    options: StreamOptions,
    cursor: u64,
    buffer: VecDeque<StoredEvent>,
    failed: bool,
}

/// Pages through the log after a cursor; when caught up, long-polls (or polls) for more, or ends.
pub(crate) fn session_events(store: DynSessionStore, session_id: SessionId, options: StreamOptions) -> EventStream {
    let state = State { store, session_id, cursor: options.after, options, buffer: VecDeque::new(), failed: false };
    futures::stream::unfold(state, |mut state| async move {
        if state.failed {
            return None;
        }
        loop {
            if let Some(event) = state.buffer.pop_front() {
                return Some((Ok(event), state));
            }
            let follow = state.options.mode == StreamMode::Follow;
            let long_poll = follow && state.store.capabilities().long_poll;
            let mut query: EventQuery = state.options.filter.clone();
            query.after = Some(state.cursor);
            query.limit = Some(state.options.page_size.max(1));
            query.wait = long_poll.then_some(state.options.wait);
            match state.store.get_events(&state.session_id, &query).await {
                Ok(page) => {
                    if page.is_empty() && !follow {
                        return None;
                    }
                    if let Some(last) = page.iter().map(StoredEvent::sequence).max() {
                        state.cursor = state.cursor.max(last);
                    }
                    if page.is_empty() && !long_poll {
                        tokio::time::sleep(state.options.poll_interval).await;
                    }
                    state.buffer.extend(page);
                }
                Err(error) => {
                    state.failed = true;
                    return Some((Err(error), state));
                }
            }
        }
    })
    .boxed()
}
