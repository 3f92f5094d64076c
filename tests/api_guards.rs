//! Cheap guards on the public API: handles are `Send + Sync`, errors stay small.
#![allow(clippy::unwrap_used)]

use agent_session_manager::prelude::*;

fn assert_send_sync<T: Send + Sync + 'static>() {}
fn assert_clone<T: Clone>() {}

#[test]
fn public_handles_are_send_sync_and_clone() {
    assert_send_sync::<SessionManager>();
    assert_clone::<SessionManager>();
    assert_send_sync::<InMemorySessionStore>();
    assert_clone::<InMemorySessionStore>();
    assert_send_sync::<Error>();
    assert_send_sync::<Event>();
    assert_send_sync::<Session>();
    assert_send_sync::<Run>();
    assert_send_sync::<CancellationToken>();
    assert_send_sync::<EventSink>();
    assert_send_sync::<std::sync::Arc<dyn SessionStore>>();
    assert_send_sync::<std::sync::Arc<dyn ProviderAdapter>>();
}

#[test]
fn error_is_one_pointer_wide() {
    // `Result<T, Error>` must stay cheap on the happy path.
    assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
}

#[test]
fn ids_are_cheap_to_clone() {
    assert_eq!(std::mem::size_of::<SessionId>(), 2 * std::mem::size_of::<usize>());
}
