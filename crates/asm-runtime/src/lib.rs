//! The runtime of agent-session-manager.
//!
//! [`SessionManager`] orchestrates sessions and runs over any [`SessionStore`] and
//! [`ProviderAdapter`]: lifecycle with enforced state machines, run execution with events
//! persisted (and numbered) before anyone sees them, continuation (replay a transcript or resume
//! the provider's own session), hooks, deadlines, cancellation and cursor streams.
//!
//! On top of it, the per-session runtime:
//!
//! - [`SessionServer`]: one task per session with a FIFO run queue, `max_concurrent_runs` slots,
//!   awaitable results and exactly-once event subscriptions ([`SessionServer::subscribe`]);
//! - [`SessionSupervisor`]: starts servers, finds them by session, restarts a crashed one from
//!   the store, stops them;
//! - [`Ownership`]: a server that owns its session across processes (a lease with a fencing
//!   token in the store; takeover and recovery after the owner crashed);
//! - [`ConcurrencyLimiter`]: process-wide caps on sessions and runs, with RAII permits;
//! - [`ControlOperations`]: interrupt, cancel, pause and resume with a per-run history;
//! - [`TranscriptCache`]: incremental transcripts for continuation runs.
//!
//! Architecture invariant: this crate depends on the ports, never on a concrete store or
//! provider.
//!
//! ```
//! use asm_runtime::{RunOptions, NewSession, SessionManager};
//! use asm_core::{RunInput, RunStatus};
//! # use asm_store_memory::InMemorySessionStore;
//! # use asm_testkit::ScriptedAdapter;
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
//! let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("Hi!"));
//! let session = manager.start_session(NewSession::new("my-agent")).await?;
//! manager.activate_session(&session.id).await?;
//! let run = manager.start_run(&session.id, RunInput::user("Hello"), RunOptions::default()).await?;
//! let result = manager.execute_run(&run.id, RunOptions::default()).await?;
//! assert_eq!(result.run.status, RunStatus::Completed);
//! assert_eq!(result.output().content, "Hi!");
//! # Ok(()) }
//! ```
//!
//! [`SessionStore`]: asm_ports::SessionStore
//! [`ProviderAdapter`]: asm_ports::ProviderAdapter
#![deny(missing_docs)]

mod approval;
mod control;
mod execution;
mod fork;
mod limiter;
mod manager;
mod options;
mod ownership;
mod server;
mod stream;
mod subscription;
mod supervisor;
mod transcript_cache;

pub use approval::{
    AnswerError, ApprovalQueue, DECIDED_BY_CANCELLED, DECIDED_BY_ERROR, DECIDED_BY_SESSION_MEMORY, DECIDED_BY_TIMEOUT,
    DEFAULT_APPROVAL_TIMEOUT,
};
pub use control::{ControlHandler, ControlOperations, Operation, OperationRecord, OperationState, OperationStatus};
pub use fork::{FORK_METADATA_KEY, FORKED_FROM_KEY, ForkContinuation, ForkPoint, ForkedSession, ReplayReason};
pub use limiter::{ConcurrencyLimiter, LimiterConfig, LimiterStatus, RunPermit, SessionPermit};
pub use manager::SessionManager;
pub use options::{
    Continuation, EventCallback, NewSession, RunOnceResult, RunOptions, RunResult, StreamMode, StreamOptions,
};
pub use ownership::{Ownership, REQUEUED_FROM_KEY, RecoveryPolicy};
pub use server::{ServerConfig, ServerStatus, SessionServer, ShutdownPolicy};
pub use stream::EventStream;
pub use subscription::{EventSubscription, SubscribeOptions};
pub use supervisor::SessionSupervisor;
pub use transcript_cache::{TranscriptCache, TranscriptCacheStats};
