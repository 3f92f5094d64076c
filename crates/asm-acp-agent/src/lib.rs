//! agent-session-manager as an [Agent Client Protocol](https://agentclientprotocol.com) agent.
//!
//! [`AcpAgentServer`] speaks ACP (JSON-RPC 2.0, one message per line) on any
//! `AsyncRead` / `AsyncWrite` pair, usually stdin / stdout (`asm acp`), on top of a
//! [`SessionManager`]: whatever adapter the manager has (one provider, a router with failover,
//! hooks for policy and workspaces through [`AcpAgentServer::run_options`]) and whatever store
//! (the durable history) serve every editor that speaks ACP.
//!
//! | method | what it does |
//! |---|---|
//! | `initialize` | protocol version 1; `loadSession: true`, prompt capabilities text + embedded text resources, no MCP transports, no auth methods |
//! | `session/new` | creates and activates a stored session (`metadata.cwd` = the client's cwd); `sessionId` is our `ses_...` id |
//! | `session/prompt` | runs the prompt (one run, continuation `auto`), streams `session/update` **from the durable log** until the run's terminal event, answers `stopReason` |
//! | `session/load` | replays every stored event of the session as `session/update` (the same updates after a restart), then answers |
//! | `session/cancel` | cancels the session's running run and its queued prompts; they answer `stopReason: cancelled` |
//!
//! Prompts on one session are queued (FIFO), never run concurrently. Unknown methods are
//! `-32601`, lines that are not JSON `-32700`, other malformed messages `-32600`, an unknown
//! session `-32002` naming it, our errors carry their code in `data.code`. See
//! `docs/acp-agent.md` for the event mapping and what is not supported.
//!
//! ```no_run
//! # async fn demo(manager: asm_runtime::SessionManager) -> asm_core::Result<()> {
//! use asm_acp_agent::AcpAgentServer;
//! let server = AcpAgentServer::new(manager);
//! server.serve(tokio::io::stdin(), tokio::io::stdout()).await
//! # }
//! ```
#![deny(missing_docs)]

mod mapping;
mod prompt;
mod server;

use std::fmt;
use std::sync::Arc;

use asm_runtime::{Continuation, RunOptions, SessionManager};
use tokio::io::{AsyncRead, AsyncWrite};

/// The ACP protocol version this agent speaks.
pub const PROTOCOL_VERSION: u64 = asm_provider_acp::jsonrpc::PROTOCOL_VERSION;

/// Serves ACP over a byte stream for one client connection at a time (call
/// [`serve`](Self::serve) once per connection; the server itself is cheap to clone).
#[derive(Clone)]
pub struct AcpAgentServer {
    config: Arc<Config>,
}

/// What a server was built with.
pub(crate) struct Config {
    pub(crate) manager: SessionManager,
    pub(crate) agent_id: String,
    pub(crate) run_options: RunOptions,
    pub(crate) pass_cwd: bool,
    pub(crate) name: String,
    pub(crate) version: String,
}

impl fmt::Debug for AcpAgentServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcpAgentServer")
            .field("agent_id", &self.config.agent_id)
            .field("pass_cwd", &self.config.pass_cwd)
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl AcpAgentServer {
    /// A server over `manager`: sessions get the adapter's name as agent id, runs continue the
    /// conversation (`Continuation::Auto`) in the session's cwd.
    pub fn new(manager: SessionManager) -> Self {
        let agent_id = manager.adapter().name().to_owned();
        Self {
            config: Arc::new(Config {
                manager,
                agent_id,
                run_options: RunOptions::new().continuation(Continuation::Auto),
                pass_cwd: true,
                name: "agent-session-manager".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::get_mut(&mut self.config).expect("configured before it is cloned or served")
    }

    /// The agent id of the sessions `session/new` creates.
    #[must_use]
    pub fn agent_id(mut self, agent_id: impl Into<String>) -> Self {
        self.config_mut().agent_id = agent_id.into();
        self
    }

    /// The options of every run (hooks such as a policy or a workspace, a timeout, adapter
    /// options); default: `RunOptions::new().continuation(Continuation::Auto)`. The session's
    /// cwd is added as the adapter option `cwd` unless [`pass_cwd`](Self::pass_cwd) is off.
    #[must_use]
    pub fn run_options(mut self, options: RunOptions) -> Self {
        self.config_mut().run_options = options;
        self
    }

    /// Whether each run gets the session's cwd (from `session/new` / `session/load`) as the
    /// adapter option `cwd` (default on; turn it off for adapters that cannot honour it).
    #[must_use]
    pub fn pass_cwd(mut self, pass: bool) -> Self {
        self.config_mut().pass_cwd = pass;
        self
    }

    /// The `agentInfo` of `initialize` (default: `agent-session-manager` and this crate's
    /// version).
    #[must_use]
    pub fn agent_info(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        let config = self.config_mut();
        config.name = name.into();
        config.version = version.into();
        self
    }

    /// The manager this server runs sessions with.
    pub fn manager(&self) -> &SessionManager {
        &self.config.manager
    }

    /// Serves one client until `reader` ends: requests are handled concurrently (prompts of
    /// one session in order), responses and notifications written one per line to `writer`.
    /// At the end of the input every running run of this connection is cancelled and awaited,
    /// so no provider process outlives the connection.
    ///
    /// # Errors
    /// [`ErrorCode::StreamClosed`](asm_core::ErrorCode::StreamClosed) when reading fails (runs
    /// are cancelled first, as at the end of the input). A failed write means the client is
    /// gone: answers and updates are dropped from then on, and serving ends with the input.
    pub async fn serve<R, W>(&self, reader: R, writer: W) -> asm_core::Result<()>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        server::serve(self.config.clone(), reader, writer).await
    }
}
