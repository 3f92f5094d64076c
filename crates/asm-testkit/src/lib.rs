//! Test kit for agent-session-manager.
//!
//! - [`conformance`]: the store conformance suite. Every [`SessionStore`](asm_ports::SessionStore)
//!   implementation calls these plain async functions from its own tests, so every store is held
//!   to one contract.
//! - [`query_conformance`]: the conformance section of the query and maintenance ports
//!   ([`QueryStore`](asm_ports::QueryStore), [`MaintenanceStore`](asm_ports::MaintenanceStore)).
//! - [`ScriptedAdapter`]: a [`ProviderAdapter`](asm_ports::ProviderAdapter) that plays a given
//!   script of events and then succeeds, fails, hangs until cancelled or panics.
//! - [`fake_cli`]: the fake provider CLI binary `asm-fake-cli` (replays captured CLI runs from
//!   `fixtures/provider-cli`, hangs until signalled, records its argv) and how to find it.
//! - [`adapter_contract`]: the adapter contract suite every CLI-driven
//!   [`ProviderAdapter`](asm_ports::ProviderAdapter) runs against the fake CLI.
//! - [`provider_tests`]: requests, transcripts and event readers the CLI provider crates'
//!   tests share.
#![deny(missing_docs)]

pub mod adapter_contract;
pub mod conformance;
pub mod fake_cli;
pub mod provider_tests;
pub mod query_conformance;
mod scripted;

pub use scripted::{ScriptEnd, ScriptStep, ScriptedAdapter};

/// What the exported macros expand to needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use asm_ports;
    pub use tempfile;
}
