use std::collections::VecDeque;

use futures::Stream;

use asm_core::{Event, Result, SessionId};
use asm_ports::{DynSessionStore, EventQuery};

use crate::options::StreamOptions;

struct State {
    store: DynSessionStore,
    session_id: SessionId,
    options: StreamOptions,
    cursor: u64,
    buffer: VecDeque<Event>,
    failed: bool,
}

/// Pages through the log after a cursor; when caught up, long-polls (or polls) for more.
pub(crate) fn session_events(
    store: DynSessionStore,
    session_id: SessionId,
    options: StreamOptions,
) -> impl Stream<Item = Result<Event>> + Send + 'static {
    let state = State { store, session_id, cursor: options.after, options, buffer: VecDeque::new(), failed: false };
    futures::stream::unfold(state, |mut state| async move {
        if state.failed {
            return None;
        }
        loop {
            if let Some(event) = state.buffer.pop_front() {
                return Some((Ok(event), state));
            }
            let long_poll = state.store.capabilities().long_poll;
            let mut query: EventQuery = state.options.filter.clone();
            query.after = Some(state.cursor);
            query.limit = Some(state.options.page_size.max(1));
            query.wait = long_poll.then_some(state.options.wait);
            match state.store.get_events(&state.session_id, &query).await {
                Ok(page) => {
                    if let Some(last) = page.iter().filter_map(|e| e.sequence).max() {
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
}
