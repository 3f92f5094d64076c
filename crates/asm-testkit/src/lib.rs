//! Test kit for agent-session-manager.
//!
//! - [`conformance`]: the store conformance suite. Every [`SessionStore`](asm_ports::SessionStore)
//!   implementation calls these plain async functions from its own tests, so every store is held
//!   to one contract.
//! - [`ScriptedAdapter`]: a [`ProviderAdapter`](asm_ports::ProviderAdapter) that plays a given
//!   script of events and then succeeds, fails, hangs until cancelled or panics.
#![deny(missing_docs)]

pub mod conformance;
mod scripted;

pub use scripted::{ScriptEnd, ScriptStep, ScriptedAdapter};
