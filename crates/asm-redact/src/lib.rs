//! Secret redaction before persistence.
//!
//! [`Redactor`] finds secrets (the spec's default categories: cloud keys, Anthropic/OpenAI keys,
//! GitHub/GitLab tokens, JWTs, bearer tokens, passwords and other `key = value` credentials,
//! connection strings, private key headers, secret environment variables) in event payloads and
//! replaces them with `[REDACTED]` or `[REDACTED:<category>]`, recording on the event how many
//! were replaced and where. [`RedactingStore`] applies it to every write of any
//! [`SessionStore`](asm_ports::SessionStore), so readers and subscribers only ever see redacted
//! data. Off unless a store is wrapped: one call, [`RedactExt::redacted`].
//!
//! ```
//! use asm_core::{Event, EventKind, SessionId};
//! use asm_redact::{Redactor, REDACTION_COUNT};
//! let mut event = Event::new(EventKind::MessageReceived, SessionId::new())
//!     .with_payload(serde_json::json!({"content": "use password=hunter2 here"}).as_object().cloned().unwrap_or_default());
//! Redactor::new().redact_event(&mut event);
//! assert_eq!(event.data["content"], "use password=[REDACTED] here");
//! assert_eq!(event.metadata[REDACTION_COUNT], 1);
//! ```
//!
//! What still sees the original, in process only: the adapter itself, and the result
//! `SessionManager::execute_run` returns to its caller (built from the adapter's outcome). Every
//! event the runtime hands to hooks and `on_event` callbacks is the stored, redacted one.

mod patterns;
mod redactor;
mod store;

pub use redactor::{
    NEVER_SCANNED, REDACTED_CATEGORIES, REDACTED_FIELDS, REDACTION_COUNT, RedactionReport, Redactor, RedactorBuilder,
    Replacement,
};
pub use store::{RedactExt, RedactingStore};
