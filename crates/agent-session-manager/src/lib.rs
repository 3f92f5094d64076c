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
//! | `provider-shell` | `ShellAdapter`, in `provider::shell` (the run's input as a `sh -c` command or an argv) |
//! | `provider-acp` | `AcpAdapter`, in `provider::acp` (any Agent Client Protocol agent, JSON-RPC over stdio) |
//! | any `provider-*` | the CLI adapter core in `provider::cli`: `CliEnv`, `CliLimits`, `PermissionMode`, the per-run option keys `RunOption` / `run_option` |
//! | `policy` | [`PolicyHook`](policy::PolicyHook) and the rest of `asm-policy`, in `policy`: limits, tool rules, stacking, preflight, CLI flags per provider, the pricing table |
//! | `runtime` (default) | [`SessionManager`](runtime::SessionManager) and the runtime |
//! | `routing` | `ProviderRouter`, in `routing`: one adapter over several, with policies, health, circuit breakers, sticky sessions and failover |
//! | `redaction` | `RedactingStore` / `RedactExt::redacted`, in `redact`: secrets replaced before any store persists an event |
//! | `testkit` | the store conformance suite and the scripted provider adapter |
//! | `http` | the HTTP API, in [`http`](mod@http): [`ApiServer`](http::ApiServer), an axum `Router` with REST, resumable Server-Sent Events, OpenAPI and the web view (what `asm serve` runs); implies `runtime` |
//! | `workspace` | `WorkspaceHook` (git / hash snapshots, diff, patch, rollback) and `FileArtifactStore`, in [`workspace`](crate::workspace) |
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
//! assert_eq!(events.iter().map(|e| e.sequence()).collect::<Vec<_>>(), vec![3, 4, 5]);
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
    #[cfg(any(
        feature = "provider-claude",
        feature = "provider-codex",
        feature = "provider-amp",
        feature = "provider-shell",
        feature = "provider-acp"
    ))]
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

    /// The shell adapter (`provider-shell`): runs the input as a command.
    #[cfg(feature = "provider-shell")]
    pub mod shell {
        pub use asm_provider_shell::*;
    }

    /// The Agent Client Protocol adapter (`provider-acp`): drives any ACP agent over stdio.
    #[cfg(feature = "provider-acp")]
    pub mod acp {
        pub use asm_provider_acp::*;
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

/// Secret redaction before persistence (`redaction`): wrap any store with
/// [`RedactExt::redacted`](redact::RedactExt::redacted).
#[cfg(feature = "redaction")]
pub mod redact {
    pub use asm_redact::*;
}

/// Provider routing (`routing`): [`ProviderRouter`](routing::ProviderRouter) is a
/// `ProviderAdapter` over named adapters, with failover on retryable errors.
#[cfg(feature = "routing")]
pub mod routing {
    pub use asm_routing::*;
}

/// The test kit (`testkit`).
#[cfg(feature = "testkit")]
pub mod testkit {
    pub use asm_testkit::*;
}

/// The HTTP API (`http`): [`ApiServer`](http::ApiServer) serves sessions, runs and events
/// over REST and Server-Sent Events (resumable by `Last-Event-ID`), its OpenAPI document and
/// the embedded web view, on one store and a set of provider adapters. Mount
/// [`ApiServer::router`](http::ApiServer::router) in your own axum application or let
/// [`ApiServer::serve`](http::ApiServer::serve) run it (loopback only without a token).
///
/// ```
/// # #[cfg(feature = "store-memory")] {
/// use agent_session_manager::http::ApiServer;
/// use agent_session_manager::store::memory::InMemorySessionStore;
/// use asm_testkit::ScriptedAdapter;
///
/// let api = ApiServer::builder()
///     .store(InMemorySessionStore::new())
///     .adapter("scripted", ScriptedAdapter::replying("Hi!"))
///     .build()?;
/// assert_eq!(api.providers(), ["scripted"]);
/// let _router = api.router(); // GET /v1/health, /v1/sessions, ..., / (the web view)
/// # }
/// # Ok::<(), agent_session_manager::core::Error>(())
/// ```
#[cfg(feature = "http")]
pub mod http {
    pub use asm_http::*;
}

/// Workspace snapshots (`workspace`): [`WorkspaceHook`](asm_workspace::WorkspaceHook), the git
/// and hash backends behind [`Workspace`](asm_workspace::Workspace), and the file-system
/// artifact store for patches.
#[cfg(feature = "workspace")]
pub mod workspace {
    pub use asm_artifact_fs::validate_key;
    pub use asm_workspace::*;
}

/// The names most programs need, in one import.
pub mod prelude {
    pub use asm_core::{
        Error, ErrorCode, Event, EventKind, Result, Run, RunId, RunInput, RunOutput, RunStatus, Session, SessionId,
        SessionStatus, StoredEvent, TokenUsage, Transcript, TranscriptBuilder, TranscriptOptions,
    };
    /// Live tool approvals: the port.
    pub use asm_ports::{ApprovalDecision, ApprovalHandler, ApprovalRequest, ApprovalVerdict};
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

    #[cfg(feature = "provider-acp")]
    pub use asm_provider_acp::AcpAdapter;
    #[cfg(feature = "provider-amp")]
    pub use asm_provider_amp::{AmpAdapter, AmpBuilderExt};
    #[cfg(feature = "provider-claude")]
    pub use asm_provider_claude::{ClaudeAdapter, ClaudeBuilderExt};
    #[cfg(any(
        feature = "provider-claude",
        feature = "provider-codex",
        feature = "provider-amp",
        feature = "provider-shell",
        feature = "provider-acp"
    ))]
    pub use asm_provider_cli::{CliEnv, CliLimits, PermissionMode, RunOption, run_option};
    #[cfg(feature = "provider-codex")]
    pub use asm_provider_codex::{ApprovalPolicy, CodexAdapter, CodexBuilderExt, SandboxMode};
    #[cfg(feature = "provider-shell")]
    pub use asm_provider_shell::ShellAdapter;

    #[cfg(feature = "routing")]
    pub use asm_routing::{BreakerConfig, ProviderRouter, RoutingOptions, RoutingPolicy, Strategy};

    #[cfg(feature = "workspace")]
    pub use asm_workspace::{FileArtifactStore, Strategy as WorkspaceStrategy, WorkspaceHook};

    #[cfg(feature = "policy")]
    pub use asm_policy::PolicyApprovals;
    #[cfg(feature = "policy")]
    pub use asm_policy::{Limit, Policy, PolicyHook, PricingTable, ViolationAction};

    #[cfg(feature = "runtime")]
    pub use asm_runtime::ApprovalQueue;
    #[cfg(feature = "runtime")]
    pub use asm_runtime::{
        ConcurrencyLimiter, Continuation, ForkPoint, NewSession, RunOptions, RunResult, ServerConfig, SessionManager,
        SessionServer, SessionSupervisor, StreamOptions, SubscribeOptions,
    };
}
