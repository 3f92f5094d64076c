//! The append of one batch, split so that the expensive parts happen outside every lock.
//!
//! 1. [`PreparedBatch::new`] (no lock): hashes each id once and makes the copy the log will keep.
//! 2. [`PreparedBatch::commit`] (session lock + event-id shards): resolves duplicates, checks the
//!    compare-and-append precondition, then numbers and stores the new events. Nothing is written
//!    unless every check passed.
//! 3. [`PreparedBatch::into_events`] (no lock): builds the result.

use std::sync::Arc;

use asm_core::{Error, ErrorCode, Event, Result, StoredEvent};

use crate::event_index::{EventIndex, IdKey, IdKeyMap};
use crate::slot::{SessionSlot, SessionState};

pub(crate) struct PreparedBatch {
    items: Vec<Item>,
}

struct Item {
    key: IdKey,
    position: Position,
}

enum Position {
    /// A new event, not numbered yet.
    New(Event),
    /// A new event, numbered by `commit` (stored once every check passed).
    Numbered(StoredEvent),
    /// Already stored (before, or earlier in this batch): the stored event.
    Existing(StoredEvent),
}

impl PreparedBatch {
    pub(crate) fn new(index: &EventIndex, input: Vec<Event>) -> Self {
        let items =
            input.into_iter().map(|event| Item { key: index.key(&event.id), position: Position::New(event) }).collect();
        Self { items }
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
        // Only a batch of several events can repeat an id: the first stored form of each new id.
        let mut first_new: IdKeyMap<StoredEvent> = IdKeyMap::default();
        let several = self.items.len() > 1;
        // Rebuilt in place (same element type: the allocation is reused, none under the lock).
        self.items = std::mem::take(&mut self.items)
            .into_iter()
            .map(|item| {
                let existing = match shards.get(&item.key) {
                    Some(stored) => Some(stored.clone()),
                    None if several => first_new.get(&item.key).cloned(),
                    None => None,
                };
                let position = match (existing, item.position) {
                    (Some(existing), _) => Position::Existing(existing),
                    (None, Position::New(event)) => {
                        next += 1;
                        let stored = StoredEvent::new(event, next);
                        if several {
                            first_new.insert(item.key.clone(), stored.clone());
                        }
                        Position::Numbered(stored)
                    }
                    (None, position) => position,
                };
                Item { key: item.key, position }
            })
            .collect();

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
            let Position::Numbered(event) = &item.position else { continue };
            if let Some(run) = event.run_id.as_ref().and_then(|run_id| state.runs.get(run_id)) {
                asm_ports::backend::check_run_accepts_events(&run.id, run.status)?;
            }
        }

        for item in &self.items {
            let Position::Numbered(event) = &item.position else { continue };
            if let Some(run_id) = &event.run_id {
                match state.run_events.get_mut(run_id) {
                    Some(sequences) => sequences.push(event.sequence()),
                    None => {
                        state.run_events.insert(run_id.clone(), vec![event.sequence()]);
                    }
                }
            }
            state.events.push(Some(event.clone()));
            shards.insert(item.key.clone(), event.clone(), Arc::clone(slot));
        }
        Ok(())
    }

    /// The events as stored, in input order (a duplicate is the stored event).
    ///
    /// # Errors
    /// [`ErrorCode::InternalError`] if called before a successful [`commit`](Self::commit).
    pub(crate) fn into_events(self) -> Result<Vec<StoredEvent>> {
        self.items
            .into_iter()
            .map(|item| match item.position {
                Position::Numbered(stored) | Position::Existing(stored) => Ok(stored),
                Position::New(_) => Err(Error::new(ErrorCode::InternalError, "a batch was read before its commit")),
            })
            .collect()
    }
}
