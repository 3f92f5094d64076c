//! The append of one batch, split so that the expensive parts happen outside every lock.
//!
//! 1. [`PreparedBatch::new`] (no lock): hashes each id once and makes the copy the log will keep.
//! 2. [`PreparedBatch::commit`] (session lock + event-id shards): resolves duplicates, checks the
//!    compare-and-append precondition, then numbers and stores the new events. Nothing is written
//!    unless every check passed.
//! 3. [`PreparedBatch::into_events`] (no lock): builds the result in the caller's own `Vec`.

use std::sync::Arc;

use asm_core::{Error, ErrorCode, Event, Result};

use crate::event_index::{EventIndex, IdKey, IdKeyMap};
use crate::slot::{SessionSlot, SessionState};

pub(crate) struct PreparedBatch {
    /// The caller's events; they become the result.
    input: Vec<Event>,
    items: Vec<Item>,
}

struct Item {
    key: IdKey,
    position: Position,
}

enum Position {
    /// A new event: the copy to store (its sequence is set by `commit`).
    New(Event),
    /// Already stored (before, or earlier in this batch): the stored event.
    Existing(Event),
}

impl Position {
    fn event(&self) -> &Event {
        match self {
            Position::New(event) | Position::Existing(event) => event,
        }
    }
}

impl PreparedBatch {
    pub(crate) fn new(index: &EventIndex, input: Vec<Event>) -> Self {
        let items = input
            .iter()
            .map(|event| Item { key: index.key(&event.id), position: Position::New(event.clone()) })
            .collect();
        Self { input, items }
    }

    /// Stores the batch in `state` (the held session lock) and the event-id index.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidOperation`] when `expected_last_sequence` does not match and the batch
    /// holds at least one new event; [`ErrorCode::InvalidTransition`] for a new event of a run
    /// whose terminal state is stored. Nothing is written then.
    pub(crate) fn commit(
        &mut self,
        index: &EventIndex,
        slot: &Arc<SessionSlot>,
        state: &mut SessionState,
        expected_last_sequence: Option<u64>,
    ) -> Result<()> {
        let mut shards = index.lock(self.items.iter().map(|item| &item.key));
        let last = state.last_sequence();
        let mut next = last;
        // Only a batch of several events can repeat an id.
        let mut first_new: IdKeyMap<usize> = IdKeyMap::default();
        let several = self.items.len() > 1;
        for i in 0..self.items.len() {
            let Some(item) = self.items.get(i) else { break };
            let existing = match shards.get(&item.key) {
                Some(stored) => Some(stored.clone()),
                None if several => match first_new.get(&item.key) {
                    Some(&first) => self.items.get(first).map(|first| first.position.event().clone()),
                    None => {
                        first_new.insert(item.key.clone(), i);
                        None
                    }
                },
                None => None,
            };
            let Some(item) = self.items.get_mut(i) else { break };
            match (existing, &mut item.position) {
                (Some(existing), position) => *position = Position::Existing(existing),
                (None, Position::New(event)) => {
                    next += 1;
                    event.sequence = Some(next);
                }
                (None, Position::Existing(_)) => {}
            }
        }

        // A batch of already stored events is a retry: it succeeds whatever the precondition.
        if let Some(expected) = expected_last_sequence.filter(|&expected| next > last && expected != last) {
            return Err(Error::new(
                ErrorCode::InvalidOperation,
                format!("expected last sequence {expected}, but the session is at {last}"),
            )
            .with_detail("expected_last_sequence", expected)
            .with_detail("actual_last_sequence", last));
        }

        // No event of a run after its terminal state (checked before anything is stored).
        for item in &self.items {
            let Position::New(event) = &item.position else { continue };
            if let Some(run) = event.run_id.as_ref().and_then(|run_id| state.runs.get(run_id)) {
                asm_ports::backend::check_run_accepts_events(&run.id, run.status)?;
            }
        }

        for item in &self.items {
            let Position::New(event) = &item.position else { continue };
            if let (Some(run_id), Some(sequence)) = (&event.run_id, event.sequence) {
                match state.run_events.get_mut(run_id) {
                    Some(sequences) => sequences.push(sequence),
                    None => {
                        state.run_events.insert(run_id.clone(), vec![sequence]);
                    }
                }
            }
            state.events.push(Some(event.clone()));
            shards.insert(item.key.clone(), event.clone(), Arc::clone(slot));
        }
        Ok(())
    }

    /// The events as stored, in input order: new events are the caller's own with their
    /// sequence; duplicates are copies of the stored event.
    pub(crate) fn into_events(self) -> Vec<Event> {
        let Self { mut input, items } = self;
        for (event, item) in input.iter_mut().zip(&items) {
            match &item.position {
                Position::New(stored) => event.sequence = stored.sequence,
                Position::Existing(stored) => *event = Event::clone(stored),
            }
        }
        input
    }
}
