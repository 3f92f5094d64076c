//! [`StoredEvent`]: an event as a store holds it, with its sequence number known.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, Event, EventJson, Result};

/// An [`Event`] that a store has numbered: what every read of a session's log returns
/// (`SessionStore::append`, `get_events`, `flush`, the runtime's streams and subscriptions).
///
/// [`Event::sequence`](crate::EventRecord::sequence) is an `Option` because an event is built
/// before a store numbers it; a `StoredEvent` always has one, so readers call
/// [`sequence`](Self::sequence) and get a `u64` (at least 1). Every other field is read through
/// `Deref<Target = Event>`; there is no `DerefMut`, so the sequence cannot be cleared. To append
/// a read event again (to another store, say), take the event out with
/// [`into_event`](Self::into_event).
///
/// ```
/// use asm_core::{Event, EventKind, SessionId, StoredEvent};
/// let event = Event::new(EventKind::MessageSent, SessionId::new()).with_data("content", "hi");
/// let stored = StoredEvent::new(event.clone(), 3);
/// assert_eq!(stored.sequence(), 3);
/// assert_eq!(stored.kind, EventKind::MessageSent);
/// assert_eq!(stored.data_str("content"), Some("hi"));
///
/// // An event without a sequence is not a stored event.
/// assert!(StoredEvent::try_from(event).is_err());
/// // The storage JSON of a stored event reads back as one.
/// let json = serde_json::to_string(&stored)?;
/// assert_eq!(serde_json::from_str::<StoredEvent>(&json)?, stored);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct StoredEvent {
    event: Event,
    sequence: u64,
}

impl StoredEvent {
    /// `event` numbered `sequence` (its `sequence` field is set to `Some(sequence)`). Stores
    /// number from 1; where the number comes from outside and must be checked, use
    /// `StoredEvent::try_from(event)`.
    pub fn new(mut event: Event, sequence: u64) -> Self {
        if event.sequence != Some(sequence) {
            event.sequence = Some(sequence);
        }
        Self { event, sequence }
    }

    /// The per-session sequence number the store gave this event (at least 1).
    pub const fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The event (its `sequence` field is `Some(self.sequence())`).
    pub const fn event(&self) -> &Event {
        &self.event
    }

    /// The event, to append again or to change (its `sequence` field is still set; stores
    /// number appended events themselves).
    pub fn into_event(self) -> Event {
        self.event
    }

    /// The events of a read, as plain events (for code that appends them again).
    pub fn into_events(stored: Vec<StoredEvent>) -> Vec<Event> {
        stored.into_iter().map(Self::into_event).collect()
    }

    /// This event in its public JSON shape ([`EventJson`]).
    pub fn to_json(&self) -> EventJson {
        EventJson::from(&self.event)
    }
}

impl TryFrom<Event> for StoredEvent {
    type Error = Error;

    /// Checks that `event` carries a sequence number of at least 1 (a typed
    /// `missing_required_field` error otherwise).
    fn try_from(event: Event) -> Result<Self> {
        match event.sequence {
            Some(sequence) if sequence >= 1 => Ok(Self { event, sequence }),
            Some(_) => Err(Error::new(ErrorCode::InvalidInput, "a stored event's sequence number is at least 1")
                .with_detail("event_id", event.id.as_str())),
            None => Err(Error::new(ErrorCode::MissingRequiredField, "a stored event needs a sequence number")
                .with_detail("event_id", event.id.as_str())),
        }
    }
}

impl Deref for StoredEvent {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

impl AsRef<Event> for StoredEvent {
    fn as_ref(&self) -> &Event {
        &self.event
    }
}

impl std::borrow::Borrow<Event> for StoredEvent {
    fn borrow(&self) -> &Event {
        &self.event
    }
}

impl From<StoredEvent> for Event {
    fn from(stored: StoredEvent) -> Self {
        stored.event
    }
}

impl From<&StoredEvent> for EventJson {
    fn from(stored: &StoredEvent) -> Self {
        EventJson::from(&stored.event)
    }
}

impl PartialEq<Event> for StoredEvent {
    fn eq(&self, other: &Event) -> bool {
        self.event == *other
    }
}

impl PartialEq<StoredEvent> for Event {
    fn eq(&self, other: &StoredEvent) -> bool {
        *self == other.event
    }
}

impl fmt::Debug for StoredEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.event.fmt(f)
    }
}

impl Serialize for StoredEvent {
    /// The event's storage form (with `sequence_number`).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.event.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StoredEvent {
    /// The event's storage form; a missing or zero `sequence_number` is an error.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let event = Event::deserialize(deserializer)?;
        StoredEvent::try_from(event).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, SessionId};

    #[test]
    fn new_sets_the_field_and_try_from_checks_it() {
        let event = Event::new(EventKind::RunStarted, SessionId::new());
        let stored = StoredEvent::new(event.clone(), 9);
        assert_eq!(stored.sequence, 9);
        assert_eq!(stored.event().sequence, Some(9));
        assert_eq!(StoredEvent::try_from(stored.clone().into_event()).unwrap(), stored);
        assert_eq!(StoredEvent::try_from(event.clone()).unwrap_err().code(), ErrorCode::MissingRequiredField);
        let mut zero = event;
        zero.sequence = Some(0);
        assert_eq!(StoredEvent::try_from(zero).unwrap_err().code(), ErrorCode::InvalidInput);
    }

    #[test]
    fn json_without_a_sequence_is_rejected() {
        let event = Event::new(EventKind::RunStarted, SessionId::new());
        let json = serde_json::to_string(&event).unwrap();
        let err = serde_json::from_str::<StoredEvent>(&json).unwrap_err();
        assert!(err.to_string().contains("sequence number"), "{err}");
    }

    #[test]
    fn compares_with_plain_events() {
        let stored = StoredEvent::new(Event::new(EventKind::RunStarted, SessionId::new()), 1);
        let plain = stored.event().clone();
        assert_eq!(stored, plain);
        assert_eq!(plain, stored);
        assert_eq!(StoredEvent::into_events(vec![stored]), vec![plain]);
    }
}
