//! The ports of agent-session-manager: the traits every store, provider and hook implements.
//!
//! - [`SessionStore`]: sessions, runs and the per-session append-only event log.
//! - [`ProviderAdapter`]: executes one run against a provider, reporting events through an
//!   [`EventSink`] and stopping when its [`CancellationToken`] fires.
//! - [`RunHook`]: observes and steers a run (start, every event, finish), the way a tower layer
//!   wraps a service. Policies and workspace snapshots are hooks.
//! - [`ArtifactStore`]: blobs (patches, attachments) by key.
//! - [`SessionLeases`]: session ownership across processes (a lease per session with a
//!   fencing token), reached through [`SessionStore::leases`].
//!
//! Architecture invariant: this crate depends on `asm-core` only (plus `async-trait` and
//! `futures`); it knows no concrete store, provider or async runtime.
#![deny(missing_docs)]

mod artifact;
mod cancel;
mod forward;
mod hook;
mod lease;
mod provider;
mod store;

pub use artifact::ArtifactStore;
pub use cancel::{CancellationToken, WaitForCancellationFuture};
pub use hook::{HookAction, RunContext, RunControl, RunFinish, RunHook};
pub use lease::{Lease, SessionLeases, lease_lost, leases_unsupported, session_owned};
pub use provider::{EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent, provider_state};
pub use store::{
    EventQuery, ExecutionRecord, MAX_EVENT_BYTES, Page, RunQuery, SessionQuery, SessionStore, SessionStoreExt,
    StoreCapabilities, batch_session, check_event_size, check_expected_status, check_flush_record,
    check_run_accepts_events, check_run_overwrite, event_size, merge_patch,
};

/// A shared store handle.
pub type DynSessionStore = std::sync::Arc<dyn SessionStore>;
/// A shared provider handle.
pub type DynProviderAdapter = std::sync::Arc<dyn ProviderAdapter>;
