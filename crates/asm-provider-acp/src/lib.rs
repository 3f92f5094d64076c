//! The ACP provider: a [`ProviderAdapter`](asm_ports::ProviderAdapter) named `"acp"` that
//! drives any [Agent Client Protocol](https://agentclientprotocol.com) agent (JSON-RPC 2.0 over
//! stdio) on the CLI process machinery of `asm-provider-cli` (own process group, explicit
//! environment, stderr ring, group kill on cancel / timeout / drop, no orphans).
//!
//! * [`AcpAdapter`]: the adapter (see its docs for the whole exchange and the event mapping),
//!   built with [`AcpAdapter::builder`] ([`AcpAdapterBuilder`]).
//! * [`AcpAgent`]: the ACP options (client file capabilities, `session/load`, cancel grace,
//!   permission handler) on top of the common [`CliOptions`](asm_provider_cli::CliOptions).
//! * [`PermissionHandler`]: the seam that answers `session/request_permission`
//!   ([`ToolKindPermissions`], the configured allow list of tool kinds, rejects by default).
//!
//! The JSON-RPC subset is implemented here with `serde_json` rather than with the
//! `agent-client-protocol` crate: the adapter needs one request in flight at a time, the agent's
//! few requests answered inline, and full control over framing (the CLI core's line cap and
//! oversized-line handling), stderr, process-group signals and cancellation, which the crate's
//! own connection and I/O tasks would take over.
#![deny(missing_docs)]

mod adapter;
mod client;
mod options;
mod updates;
mod wire;

pub use adapter::{ACP_PROVIDER, AcpAdapter};
pub use options::{
    AcpAdapterBuilder, AcpAgent, DEFAULT_AGENT, DEFAULT_CANCEL_GRACE, NotLineBased, PermissionDecision,
    PermissionHandler, PermissionRequest, ToolKindPermissions,
};
pub use wire::{AUTH_REQUIRED, INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, PROTOCOL_VERSION};

/// The JSON-RPC 2.0 line layer ACP uses (one message per line), public so that the agent side
/// (`asm-acp-agent`) speaks exactly the same framing as this client.
pub mod jsonrpc {
    pub use crate::wire::{
        AUTH_REQUIRED, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, Incoming, METHOD_NOT_FOUND, PARSE_ERROR,
        PROTOCOL_VERSION, RESOURCE_NOT_FOUND, RpcError, notification, parse, request, response,
    };
}
