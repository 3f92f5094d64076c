//! # agent-session-manager
//!
//! The infrastructure layer for applications that drive AI coding agents. Instead of calling
//! provider CLIs by hand, work with **sessions, runs and events**: lifecycle state machines, a
//! durable append-only event log with per-session sequence numbers and cursor reads, normalized
//! streaming events, transcript continuity across runs, hooks, cancellation and pluggable stores.
//!
//! This facade re-exports the workspace crates; each backend is behind a feature:
//!
//! | feature | what it adds |
//! |---|---|
//! | `store-memory` (default) | `InMemorySessionStore`, in `store::memory` |
//! | `store-redb` | `RedbSessionStore`, in `store::redb` (durable, group commit) |
//! | `store-sled` | `SledSessionStore`, in `store::sled` |
//! | `store-postgres` | `PostgresSessionStore`, in `store::postgres` (many processes, LISTEN/NOTIFY long-poll) |
//! | `provider-claude` | `ClaudeAdapter`, in `provider::claude` (Claude Code CLI, stream-json) |
//! | `provider-codex` | `CodexAdapter`, in `provider::codex` (Codex CLI, `exec --json`) |
//! | `provider-amp` | `AmpAdapter`, in `provider::amp` (Amp CLI, `--stream-json`) |
//! | any `provider-*` | the CLI adapter core in `provider::cli`: `CliEnv`, `CliLimits`, `PermissionMode`, the per-run option keys `RunOption` / `run_option` |
//! | `policy` | [`PolicyHook`](policy::PolicyHook) and the rest of `asm-policy`, in `policy`: limits, tool rules, stacking, preflight, CLI flags per provider, the pricing table |
//! | `runtime` (default) | [`SessionManager`](runtime::SessionManager) and the runtime |
//! | `testkit` | the store conformance suite and the scripted provider adapter |
//! | `full` | everything above |
//!
//! ```
//! use agent_session_manager::prelude::*;
//! use asm_testkit::ScriptedAdapter;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
//! let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("Done."));
//! let once = manager.run_once(RunInput::user("Fix the failing test"), RunOptions::default()).await?;
//! assert_eq!(once.output().content, "Done.");
//!
//! let events = manager.session_events(&once.session_id, EventQuery::new().after(2).limit(3)).await?;
//! assert_eq!(events.iter().map(|e| e.sequence.unwrap()).collect::<Vec<_>>(), vec![3, 4, 5]);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub use asm_core as core;
pub use asm_ports as ports;

/// Store implementations, one module per enabled backend feature.
pub mod store {
    /// The in-memory store (`store-memory`).
    #[cfg(feature = "store-memory")]
    pub mod memory {
        pub use asm_store_memory::*;
    }

    /// The redb store (`store-redb`): durable, the default for the CLI.
    #[cfg(feature = "store-redb")]
    pub mod redb {
        pub use asm_store_redb::*;
    }

    /// The sled store (`store-sled`).
    #[cfg(feature = "store-sled")]
    pub mod sled {
        pub use asm_store_sled::*;
    }

    /// The PostgreSQL store (`store-postgres`): many processes and machines on one database.
    #[cfg(feature = "store-postgres")]
    pub mod postgres {
        pub use asm_store_postgres::*;
    }
}

/// Provider adapters, one module per enabled provider feature. Each module re-exports
/// everything its builder takes; the builder setters only one CLI has are on the provider's
/// extension trait (`ClaudeBuilderExt`, `CodexBuilderExt`, `AmpBuilderExt`, also in the
/// [`prelude`]).
pub mod provider {
    /// The CLI adapter core every CLI provider is built on (any `provider-*` feature): the
    /// environment, limits, permission modes and per-run option keys the builders take.
    #[cfg(any(feature = "provider-claude", feature = "provider-codex", feature = "provider-amp"))]
    pub mod cli {
        pub use asm_provider_cli::*;
    }

    /// The Claude Code CLI adapter (`provider-claude`).
    #[cfg(feature = "provider-claude")]
    pub mod claude {
        pub use asm_provider_claude::*;
    }

    /// The Codex CLI adapter (`provider-codex`).
    #[cfg(feature = "provider-codex")]
    pub mod codex {
        pub use asm_provider_codex::*;
    }

    /// The Amp CLI adapter (`provider-amp`).
    #[cfg(feature = "provider-amp")]
    pub mod amp {
        pub use asm_provider_amp::*;
    }
}

/// Policy enforcement (`policy`): [`Policy`](policy::Policy), stacking, preflight, the
/// evaluator, compiling to CLI flags, the pricing table and the [`PolicyHook`](policy::PolicyHook).
#[cfg(feature = "policy")]
pub mod policy {
    pub use asm_policy::*;
}

/// The runtime (`runtime`).
#[cfg(feature = "runtime")]
pub mod runtime {
    pub use asm_runtime::*;
}

/// The test kit (`testkit`).
#[cfg(feature = "testkit")]
pub mod testkit {
    pub use asm_testkit::*;
}

/// The names most programs need, in one import.
pub mod prelude {
    pub use asm_core::{
        Error, ErrorCode, Event, EventKind, Result, Run, RunId, RunInput, RunOutput, RunStatus, Session, SessionId,
        SessionStatus, TokenUsage, Transcript, TranscriptBuilder, TranscriptOptions,
    };
    pub use asm_ports::{
        CancellationToken, EventQuery, EventSink, ExecuteOutcome, ExecuteRequest, HookAction, ProviderAdapter,
        ProviderEvent, RunContext, RunHook, SessionStore, SessionStoreExt,
    };

    /// For implementing ports: `#[async_trait]` on `impl SessionStore`, `ProviderAdapter`,
    /// `RunHook`.
    pub use async_trait::async_trait;
    /// For consuming event streams (`stream_session_events`, subscriptions).
    pub use futures::StreamExt;

    #[cfg(feature = "store-memory")]
    pub use asm_store_memory::InMemorySessionStore;
    #[cfg(feature = "store-redb")]
    pub use asm_store_redb::RedbSessionStore;
    #[cfg(feature = "store-sled")]
    pub use asm_store_sled::SledSessionStore;

    #[cfg(feature = "provider-amp")]
    pub use asm_provider_amp::{AmpAdapter, AmpBuilderExt};
    #[cfg(feature = "provider-claude")]
    pub use asm_provider_claude::{ClaudeAdapter, ClaudeBuilderExt};
    #[cfg(any(feature = "provider-claude", feature = "provider-codex", feature = "provider-amp"))]
    pub use asm_provider_cli::{CliEnv, CliLimits, PermissionMode, RunOption, run_option};
    #[cfg(feature = "provider-codex")]
    pub use asm_provider_codex::{ApprovalPolicy, CodexAdapter, CodexBuilderExt, SandboxMode};

    #[cfg(feature = "policy")]
    pub use asm_policy::{Limit, Policy, PolicyHook, PricingTable, ViolationAction};

    #[cfg(feature = "runtime")]
    pub use asm_runtime::{
        ConcurrencyLimiter, Continuation, ForkPoint, NewSession, RunOptions, RunResult, ServerConfig, SessionManager,
        SessionServer, SessionSupervisor, StreamOptions, SubscribeOptions,
    };
}
