//! For store authors: the checks and algorithms every [`SessionStore`](crate::SessionStore),
//! [`QueryStore`](crate::QueryStore) and [`MaintenanceStore`](crate::MaintenanceStore) backend
//! shares, so that a new backend refuses the same input with the same error codes as the
//! built-in ones.
//!
//! Applications do not need this module; it is kept out of the crate root so that what an
//! application reads there is the ports and their types.
//!
//! | concern | helpers |
//! | --- | --- |
//! | appends | [`batch_session`], [`event_size`], [`check_event_size`], [`check_run_accepts_events`] |
//! | run writes and flushes | [`check_run_overwrite`], [`check_expected_status`], [`check_flush_record`], [`merge_patch`] |
//! | queries | [`check_query_limit`], [`payload_text`], [`run_model`], [`utc_day`] |
//! | retention | [`run_cycle`], [`soft_delete_expired`], [`hard_delete_expired`], [`prune_session`], [`is_protected_kind`] |
//! | leases | [`session_owned`], [`lease_lost`], [`leases_unsupported`] |
//!
//! ```
//! use asm_core::{Event, EventKind, SessionId};
//! use asm_ports::{MAX_EVENT_BYTES, backend};
//!
//! let event = Event::new(EventKind::MessageStreamed, SessionId::new());
//! assert!(backend::event_size(&event) < MAX_EVENT_BYTES);
//! assert!(backend::check_event_size(&event, MAX_EVENT_BYTES).is_ok());
//! assert_eq!(backend::batch_session(std::slice::from_ref(&event)).unwrap(), &event.session_id);
//! ```

pub use crate::lease::{lease_lost, leases_unsupported, session_owned};
pub use crate::maintenance::{hard_delete_expired, is_protected_kind, prune_session, run_cycle, soft_delete_expired};
pub use crate::query::{check_query_limit, payload_text, run_model, utc_day};
pub use crate::store::{
    batch_session, check_event_size, check_expected_status, check_flush_record, check_run_accepts_events,
    check_run_overwrite, event_size, merge_patch,
};
