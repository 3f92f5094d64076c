use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::provider_error::ProviderError;
use crate::{JsonMap, Timestamp};

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal, $category:ident, $message:literal; )*) => {
        /// The error taxonomy: 47 codes, each with a [category](ErrorCode::category) and a
        /// [retryable](ErrorCode::is_retryable) flag.
        ///
        /// Serialised as the snake_case name (`"session_not_found"`). Match on codes, never on
        /// message text.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        crate::string_enum! {
            /// The snake_case name used on the wire.
            ErrorCode { $($variant => $text),* }
            /// Every code, in the canonical order.
            pub const ALL;
            /// Parses the snake_case name.
            pub fn parse(text) -> Option<Self>;
        }

        impl ErrorCode {
            /// The category the code belongs to.
            pub const fn category(self) -> ErrorCategory {
                match self { $(ErrorCode::$variant => ErrorCategory::$category,)* }
            }

            /// A short default message, used when an error is built without one.
            pub const fn default_message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message,)* }
            }
        }
    };
}

error_codes! {
    /// Input failed validation.
    ValidationError = "validation_error", Validation, "Validation failed";
    /// Input is not acceptable.
    InvalidInput = "invalid_input", Validation, "Invalid input";
    /// A required field is missing.
    MissingRequiredField = "missing_required_field", Validation, "Missing required field";
    /// A value does not have the expected format.
    InvalidFormat = "invalid_format", Validation, "Invalid format";
    /// A status value is not valid.
    InvalidStatus = "invalid_status", State, "Invalid status";
    /// A state machine transition is not allowed.
    InvalidTransition = "invalid_transition", State, "Invalid state transition";
    /// An event type is not one of the event kinds.
    InvalidEventType = "invalid_event_type", State, "Invalid event type";
    /// A capability type is not known.
    InvalidCapabilityType = "invalid_capability_type", State, "Invalid capability type";
    /// A required capability is missing.
    MissingRequiredCapability = "missing_required_capability", State, "Missing required capability";
    /// The stream is closed.
    StreamClosed = "stream_closed", State, "Stream is closed";
    /// Items of a batch do not share one context.
    ContextMismatch = "context_mismatch", State, "Context mismatch";
    /// A cursor is malformed or does not apply.
    InvalidCursor = "invalid_cursor", State, "Invalid cursor";
    /// An item belongs to another session.
    SessionMismatch = "session_mismatch", State, "Session mismatch";
    /// An item belongs to another run.
    RunMismatch = "run_mismatch", State, "Run mismatch";
    /// A resource was not found.
    NotFound = "not_found", Resource, "Resource not found";
    /// The session does not exist.
    SessionNotFound = "session_not_found", Resource, "Session not found";
    /// The run does not exist.
    RunNotFound = "run_not_found", Resource, "Run not found";
    /// The capability does not exist.
    CapabilityNotFound = "capability_not_found", Resource, "Capability not found";
    /// The resource already exists.
    AlreadyExists = "already_exists", Resource, "Resource already exists";
    /// A capability with this name already exists.
    DuplicateCapability = "duplicate_capability", Resource, "Duplicate capability";
    /// The provider failed.
    ProviderError = "provider_error", Provider, "Provider error";
    /// The provider cannot be reached (retryable).
    ProviderUnavailable = "provider_unavailable", Provider, "Provider unavailable";
    /// The provider rate limited the request (retryable).
    ProviderRateLimited = "provider_rate_limited", Provider, "Provider rate limit exceeded";
    /// The provider timed out (retryable).
    ProviderTimeout = "provider_timeout", Provider, "Provider request timed out";
    /// The provider rejected the credentials.
    ProviderAuthenticationFailed = "provider_authentication_failed", Provider, "Provider authentication failed";
    /// The provider quota is exhausted.
    ProviderQuotaExceeded = "provider_quota_exceeded", Provider, "Provider quota exceeded";
    /// The store failed.
    StorageError = "storage_error", Storage, "Storage error";
    /// The store cannot be reached (retryable).
    StorageConnectionFailed = "storage_connection_failed", Storage, "Storage connection failed";
    /// An optional dependency is not available.
    DependencyNotAvailable = "dependency_not_available", Storage, "Dependency not available";
    /// The stored format needs a migration this build cannot do.
    MigrationRequired = "migration_required", Storage, "Storage migration required";
    /// A write failed.
    StorageWriteFailed = "storage_write_failed", Storage, "Storage write failed";
    /// A read failed.
    StorageReadFailed = "storage_read_failed", Storage, "Storage read failed";
    /// An operation timed out (retryable).
    Timeout = "timeout", Runtime, "Operation timed out";
    /// The operation was cancelled.
    Cancelled = "cancelled", Runtime, "Operation cancelled";
    /// A policy was violated.
    PolicyViolation = "policy_violation", Runtime, "Policy violation";
    /// A bug or an unexpected failure (for example a panicking task).
    InternalError = "internal_error", Runtime, "Internal error";
    /// An error of unknown origin.
    UnknownError = "unknown_error", Runtime, "Unknown error";
    /// Too many sessions.
    MaxSessionsExceeded = "max_sessions_exceeded", Concurrency, "Maximum sessions limit exceeded";
    /// Too many runs.
    MaxRunsExceeded = "max_runs_exceeded", Concurrency, "Maximum parallel runs limit exceeded";
    /// The adapter does not support this capability.
    CapabilityNotSupported = "capability_not_supported", Concurrency, "Capability not supported";
    /// The operation is not valid here.
    InvalidOperation = "invalid_operation", Concurrency, "Invalid operation";
    /// Another process owns the session (holds its lease); details name the `owner`.
    SessionOwned = "session_owned", Concurrency, "Session is owned by another process";
    /// A write carried a fencing token older than the session's current lease: its writer lost
    /// the session to another owner, and nothing was written.
    LeaseLost = "lease_lost", Concurrency, "Session lease lost";
    /// A tool failed.
    ToolError = "tool_error", Tool, "Tool error";
    /// A tool does not exist.
    ToolNotFound = "tool_not_found", Tool, "Tool not found";
    /// A tool execution failed.
    ToolExecutionFailed = "tool_execution_failed", Tool, "Tool execution failed";
    /// A tool was not permitted.
    ToolPermissionDenied = "tool_permission_denied", Tool, "Tool permission denied";
}

impl ErrorCode {
    /// Whether retrying the same operation may succeed: exactly `provider_timeout`,
    /// `provider_rate_limited`, `provider_unavailable`, `storage_connection_failed` and `timeout`.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::ProviderTimeout
                | ErrorCode::ProviderRateLimited
                | ErrorCode::ProviderUnavailable
                | ErrorCode::StorageConnectionFailed
                | ErrorCode::Timeout
        )
    }
}

/// The group an [`ErrorCode`] belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCategory {
    /// Bad input.
    Validation,
    /// A state rule was broken.
    State,
    /// A resource is missing or duplicated.
    Resource,
    /// The provider failed.
    Provider,
    /// The store failed.
    Storage,
    /// Runtime conditions: timeouts, cancellation, policy, internal failures.
    Runtime,
    /// A concurrency limit was hit.
    Concurrency,
    /// A tool failed.
    Tool,
}

/// The one error type of agent-session-manager.
///
/// Carries a machine-readable [`ErrorCode`], a human message, free-form `details`, an optional
/// normalised [`ProviderError`] and an optional source error. Serialisable (the source is not
/// stored), so a failed run keeps its error.
///
/// ```
/// use asm_core::{Error, ErrorCode};
/// let err = Error::new(ErrorCode::ProviderRateLimited, "429 from upstream");
/// assert!(err.is_retryable());
/// assert_eq!(err.to_string(), "[provider_rate_limited] 429 from upstream");
/// ```
#[derive(Clone)]
pub struct Error {
    // Boxed so that `Result<T, Error>` stays one pointer wide on the happy path.
    inner: Box<Inner>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Inner {
    code: ErrorCode,
    message: String,
    #[serde(default, skip_serializing_if = "JsonMap::is_empty")]
    details: JsonMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider_error: Option<ProviderError>,
    #[serde(default = "crate::now")]
    timestamp: Timestamp,
    #[serde(skip)]
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Inner::deserialize(deserializer).map(|inner| Self { inner: Box::new(inner) })
    }
}

impl Error {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(Inner {
                code,
                message: message.into(),
                details: JsonMap::new(),
                provider_error: None,
                timestamp: crate::now(),
                source: None,
            }),
        }
    }

    /// An error with the code's default message.
    pub fn from_code(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }

    /// Adds one detail entry.
    #[must_use]
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.inner.details.insert(key.into(), value.into());
        self
    }

    /// Replaces the details.
    #[must_use]
    pub fn with_details(mut self, details: JsonMap) -> Self {
        self.inner.details = details;
        self
    }

    /// Attaches a normalised provider error.
    #[must_use]
    pub fn with_provider_error(mut self, provider_error: ProviderError) -> Self {
        self.inner.provider_error = Some(provider_error);
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Arc::new(source));
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.inner.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Free-form details.
    pub fn details(&self) -> &JsonMap {
        &self.inner.details
    }

    /// The normalised provider payload, when the failure came from a provider.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        self.inner.provider_error.as_ref()
    }

    /// When the error was created.
    pub fn timestamp(&self) -> Timestamp {
        self.inner.timestamp
    }

    /// The code's category.
    pub fn category(&self) -> ErrorCategory {
        self.inner.code.category()
    }

    /// Whether retrying may succeed (see [`ErrorCode::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.inner.code.is_retryable()
    }

    /// A copy small enough to store: the message (and the provider error's message and stderr)
    /// cut to `max_text` bytes on a UTF-8 boundary, and detail entries kept, in order, while
    /// their JSON size fits in `max_details` bytes. What was cut is marked: `message_truncated`
    /// / `details_truncated` details, `truncated: true` on the provider error. The code,
    /// timestamp and source are kept; an error that already fits is returned unchanged.
    ///
    /// ```
    /// use asm_core::{Error, ErrorCode};
    /// let huge = Error::new(ErrorCode::ProviderError, "x".repeat(1 << 20)).with_detail("dump", "y".repeat(1 << 20));
    /// let bounded = huge.bounded(1024, 4096);
    /// assert_eq!(bounded.code(), ErrorCode::ProviderError);
    /// assert!(bounded.message().len() <= 1024);
    /// assert_eq!(bounded.details()["details_truncated"], true);
    /// assert!(!bounded.details().contains_key("dump"));
    /// ```
    #[must_use]
    pub fn bounded(&self, max_text: usize, max_details: usize) -> Error {
        let mut bounded = self.clone();
        let inner = &mut bounded.inner;
        if truncate_marked(&mut inner.message, max_text) {
            inner.details.insert("message_truncated".into(), true.into());
        }
        if let Some(provider_error) = &mut inner.provider_error {
            let cut_message = truncate_marked(&mut provider_error.message, max_text);
            let cut_stderr = provider_error.stderr.as_mut().is_some_and(|stderr| truncate_marked(stderr, max_text));
            if cut_message || cut_stderr {
                provider_error.truncated = Some(true);
            }
        }
        let sizes: Vec<usize> =
            inner.details.values().map(|v| serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())).collect();
        if sizes.iter().fold(0usize, |sum, size| sum.saturating_add(*size)) > max_details {
            let mut budget = max_details;
            let mut kept = JsonMap::new();
            for ((key, value), size) in inner.details.iter().zip(sizes) {
                if size.saturating_add(key.len()) <= budget {
                    budget -= size + key.len();
                    kept.insert(key.clone(), value.clone());
                }
            }
            kept.insert("details_truncated".into(), true.into());
            inner.details = kept;
        }
        bounded
    }

    /// The canonical event payload of a failure: `error_code`, `error_message`, and
    /// `provider_error` / `details` when present (empty details are left out).
    pub fn to_event_data(&self) -> JsonMap {
        let mut data = JsonMap::new();
        data.insert("error_code".into(), self.inner.code.as_str().into());
        data.insert("error_message".into(), self.inner.message.clone().into());
        if let Some(value) = self.inner.provider_error.as_ref().and_then(|pe| serde_json::to_value(pe).ok()) {
            data.insert("provider_error".into(), value);
        }
        if !self.inner.details.is_empty() {
            data.insert("details".into(), serde_json::Value::Object(self.inner.details.clone()));
        }
        data
    }
}

/// Cuts `text` to at most `max` bytes on a UTF-8 boundary, ending it with a marker; whether it
/// was cut.
fn truncate_marked(text: &mut String, max: usize) -> bool {
    const MARKER: &str = "… [truncated]";
    if text.len() <= max {
        return false;
    }
    let mut end = max.saturating_sub(MARKER.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    if text.len() + MARKER.len() <= max {
        text.push_str(MARKER);
    }
    true
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let mut d = f.debug_struct("Error");
        d.field("code", &inner.code).field("message", &inner.message);
        if !inner.details.is_empty() {
            d.field("details", &inner.details);
        }
        if let Some(pe) = &inner.provider_error {
            d.field("provider_error", pe);
        }
        if let Some(source) = &inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.inner.code, self.inner.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for Error {
    /// Errors compare by code, message, details and provider payload (not by time or source).
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.inner, &other.inner);
        a.code == b.code && a.message == b.message && a.details == b.details && a.provider_error == b.provider_error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taxonomy_has_47_codes_with_round_trip_names() {
        assert_eq!(ErrorCode::ALL.len(), 47);
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(!code.default_message().is_empty());
        }
    }

    #[test]
    fn exactly_five_codes_are_retryable() {
        let retryable: Vec<_> = ErrorCode::ALL.iter().filter(|c| c.is_retryable()).collect();
        assert_eq!(retryable.len(), 5);
        assert!(!ErrorCode::ProviderError.is_retryable());
        assert!(!ErrorCode::Cancelled.is_retryable());
        assert!(!ErrorCode::MaxRunsExceeded.is_retryable());
    }

    #[test]
    fn categories() {
        assert_eq!(ErrorCode::SessionNotFound.category(), ErrorCategory::Resource);
        assert_eq!(ErrorCode::InvalidCursor.category(), ErrorCategory::State);
        assert_eq!(ErrorCode::MigrationRequired.category(), ErrorCategory::Storage);
        assert_eq!(ErrorCode::ToolPermissionDenied.category(), ErrorCategory::Tool);
    }

    #[test]
    fn error_serde_round_trip() {
        let err = Error::new(ErrorCode::Timeout, "too slow").with_detail("after_ms", 100);
        let json = serde_json::to_value(&err).unwrap();
        let back: Error = serde_json::from_value(json).unwrap();
        assert_eq!(back, err);
        assert_eq!(back.timestamp(), err.timestamp());
    }
}
