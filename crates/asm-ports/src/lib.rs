//! The ports of agent-session-manager: the traits every store, provider and hook implements.
//!
//! - [`SessionStore`]: sessions, runs and the per-session append-only event log.
//! - [`ProviderAdapter`]: executes one run against a provider, reporting events through an
//!   [`EventSink`] and stopping when its [`CancellationToken`] fires.
//! - [`RunHook`]: observes and steers a run (start, every event, finish), the way a tower layer
//!   wraps a service. Policies and workspace snapshots are hooks.
//! - [`ArtifactStore`]: blobs (patches, attachments) by key.
//! - [`QueryStore`]: cross-session queries (sessions, runs, usage and cost aggregates) with
//!   stable cursor pagination.
//! - [`MaintenanceStore`]: retention (soft and hard delete, pruning), orphan cleanup and a
//!   health check, driven by a [`RetentionPolicy`].
//! - [`ApprovalHandler`]: decides whether a tool call the agent asks about may run (policy
//!   rules, a queue a person answers), reached by adapters through
//!   [`ExecuteRequest::approvals`].
//! - [`SessionLeases`]: session ownership across processes (a lease per session with a
//!   fencing token), reached through [`SessionStore::leases`].
//!
//! Writing a store of your own? [`backend`] holds the checks and algorithms every store shares
//! (event size cap, batch and flush validation, merge patch, the generic retention cycle, the
//! lease refusals), so a new backend applies them the way the built-in ones do.
//!
//! Architecture invariant: this crate depends on `asm-core` only (plus `async-trait` and
//! `futures`, `chrono` for timestamps); it knows no concrete store, provider or async runtime.
#![deny(missing_docs)]

mod approval;
mod artifact;
pub mod backend;
mod cancel;
mod forward;
mod hook;
mod layer;
mod lease;
mod maintenance;
mod provider;
mod query;
mod store;

pub use approval::{ApprovalDecision, ApprovalHandler, ApprovalRequest, ApprovalVerdict, DynApprovalHandler};
pub use artifact::ArtifactStore;
pub use cancel::{CancellationToken, WaitForCancellationFuture};
pub use hook::{HookAction, RunContext, RunControl, RunFinish, RunHook};
pub use layer::{Layered, StoreLayer};
pub use lease::{Lease, SessionLeases};
pub use maintenance::{HealthIssue, HealthReport, MaintenanceReport, MaintenanceStore, RetentionPolicy};
pub use provider::{EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent, provider_state};
pub use query::{
    DEFAULT_QUERY_LIMIT, EventOrder, EventSearch, Keyset, MAX_QUERY_LIMIT, QueryStore, RunOrder, RunSearch,
    SessionOrder, SessionSearch, SessionStats, UNKNOWN_MODEL, UNKNOWN_PROVIDER, UsageAggregate, UsageGroup,
    UsagePricer, UsageQuery, UsageReport,
};
pub use store::{
    EventQuery, ExecutionRecord, MAX_EVENT_BYTES, Page, RunQuery, SessionQuery, SessionStore, SessionStoreExt,
    StoreCapabilities,
};

/// A shared store handle.
pub type DynSessionStore = std::sync::Arc<dyn SessionStore>;
/// A shared provider handle.
pub type DynProviderAdapter = std::sync::Arc<dyn ProviderAdapter>;
/// A shared handle to a store with the query and maintenance ports.
pub type DynMaintenanceStore = std::sync::Arc<dyn MaintenanceStore>;
