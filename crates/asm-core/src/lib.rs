//! Domain values of agent-session-manager.
//!
//! Everything here is plain data plus the rules that govern it: identifiers, [`Session`] and
//! [`Run`] with their enforced state machines, [`Event`] with its [`EventKind`]s (the 28 of the original, reasoning, raw provider lines), token usage,
//! capabilities, the [`Error`] taxonomy, provider error normalisation and transcripts.
//!
//! Architecture invariant: this crate does no I/O, spawns nothing and knows no async runtime.
//! Stores, providers and the runtime build on these values; they never redefine them.
//!
//! ```
//! use asm_core::{Session, SessionStatus};
//!
//! let mut session = Session::new("my-agent")?;
//! session.transition(SessionStatus::Active)?;
//! assert!(session.transition(SessionStatus::Pending).is_err());
//! # Ok::<(), asm_core::Error>(())
//! ```
#![deny(missing_docs)]

// The exported `string_enum!` and `builder_setters!` macros, used by the modules below.
mod builder_setters;
mod string_enum;

pub mod capability;
mod error;
mod event;
mod event_json;
mod id;
pub mod provider_error;
mod run;
mod session;
mod stored_event;
pub mod transcript;
mod usage;

pub use capability::{
    Capability, CapabilityResolver, CapabilityType, Manifest, Negotiation, NegotiationStatus, Registry,
};
pub use error::{Error, ErrorCategory, ErrorCode, Result};
pub use event::{Event, EventGroup, EventKind, EventRecord, JsonMap, keys};
pub use event_json::EventJson;
pub use id::{ApprovalId, EventId, RunId, SessionId};
pub use provider_error::{CustomProviderName, ProviderError, ProviderErrorKind, ProviderName, StderrLimits};
pub use run::{InputMessage, Role, Run, RunInput, RunOutput, RunStatus};
pub use session::{Session, SessionStatus};
pub use stored_event::StoredEvent;
pub use transcript::{Message, Transcript, TranscriptBuilder, TranscriptOptions};
pub use usage::{TokenUsage, UsageMode, UsageTotals};

/// The current time, truncated to microseconds so that it survives every store's round-trip.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{SubsecRound, Utc};
    Utc::now().trunc_subsecs(6)
}

/// Timestamps used throughout the crate: UTC with microsecond precision.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
