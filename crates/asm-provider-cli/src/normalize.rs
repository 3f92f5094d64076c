//! Helpers shared by the adapters' normalizers: error events, raw events for unknown lines,
//! and error classification of provider texts / HTTP statuses.

use asm_core::{ErrorCode, EventKind, TokenUsage, UsageMode, keys};
use asm_ports::ProviderEvent;
use serde_json::Value;

/// An `error_occurred` event with the canonical keys `error_code`, `error_message`, `details`.
pub fn error_event(code: ErrorCode, message: &str, details: Value) -> ProviderEvent {
    ProviderEvent::new(EventKind::ErrorOccurred)
        .data(keys::ERROR_CODE, code.as_str())
        .data(keys::ERROR_MESSAGE, message)
        .data(keys::DETAILS, details)
}

/// A `token_usage_updated` event with the canonical keys (`input_tokens`, `output_tokens`,
/// `cache_read_tokens`, `cache_creation_tokens`, `usage_mode`: `delta` adds to the run's total,
/// `cumulative` is the run's total so far).
///
/// ```
/// use asm_core::{TokenUsage, UsageMode};
/// let u = TokenUsage { input_tokens: 3, output_tokens: 1, ..TokenUsage::default() };
/// let e = asm_provider_cli::usage_event(u, UsageMode::Delta);
/// assert_eq!((e.data["input_tokens"].as_u64(), e.data["usage_mode"].as_str()), (Some(3), Some("delta")));
/// ```
pub fn usage_event(u: TokenUsage, mode: UsageMode) -> ProviderEvent {
    ProviderEvent::new(EventKind::TokenUsageUpdated)
        .data(keys::INPUT_TOKENS, u.input_tokens)
        .data(keys::OUTPUT_TOKENS, u.output_tokens)
        .data(keys::CACHE_READ_TOKENS, u.cache_read_tokens)
        .data(keys::CACHE_CREATION_TOKENS, u.cache_creation_tokens)
        .data(keys::USAGE_MODE, if mode == UsageMode::Cumulative { "cumulative" } else { "delta" })
}

/// The kind used for provider lines no mapping knows (forward compatibility):
/// [`EventKind::ProviderRaw`], with the line itself under `data.raw`, the provider's `type`
/// under `data.raw_type` when the line was JSON, and `metadata.raw == true` /
/// `metadata.raw_reason`. Raw lines are stored and shown to subscribers but never change a
/// transcript. `error_occurred` is reserved for real errors.
pub const RAW_EVENT_KIND: EventKind = EventKind::ProviderRaw;

/// The most bytes of an unknown line a raw event keeps (1 MiB): far below every store's event
/// cap, whatever the line cap.
pub const MAX_RAW_LINE_BYTES: usize = 1 << 20;

/// Builds the raw event for `line` (see [`RAW_EVENT_KIND`]). `line_type` is the provider's
/// `type` field when the line was JSON; `reason` says why it is raw (`"unknown_type"`,
/// `"not_json"`, ...).
///
/// ```
/// use asm_provider_cli::{RAW_EVENT_KIND, raw_event};
/// let e = raw_event("garbage", None, "not_json");
/// assert_eq!(e.kind, RAW_EVENT_KIND);
/// assert_eq!(e.data["raw"], "garbage");
/// assert_eq!(e.metadata["raw"], true);
/// assert_eq!(e.metadata["raw_reason"], "not_json");
///
/// // A huge line is kept only up to MAX_RAW_LINE_BYTES (so the event always fits a store).
/// let huge = raw_event(&"x".repeat(asm_provider_cli::MAX_RAW_LINE_BYTES + 10), None, "not_json");
/// assert_eq!(huge.data["raw"].as_str().unwrap().len(), asm_provider_cli::MAX_RAW_LINE_BYTES);
/// assert_eq!(huge.metadata["raw_truncated"], true);
/// ```
pub fn raw_event(line: &str, line_type: Option<&str>, reason: &str) -> ProviderEvent {
    let kept = if line.len() > MAX_RAW_LINE_BYTES {
        let mut end = MAX_RAW_LINE_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        &line[..end]
    } else {
        line
    };
    let mut event =
        ProviderEvent::new(RAW_EVENT_KIND).data(keys::RAW, kept).meta("raw", true).meta("raw_reason", reason);
    if kept.len() < line.len() {
        event = event.meta("raw_truncated", true).meta("raw_bytes", line.len());
    }
    if let Some(t) = line_type {
        event = event.data(keys::RAW_TYPE, t);
    }
    event
}

/// The error code for an HTTP status a provider reported: 401/403 → authentication failed,
/// 429 → rate limited, 5xx (incl. 529 overloaded) and 408 → unavailable, anything else →
/// provider error.
///
/// ```
/// use asm_core::ErrorCode;
/// use asm_provider_cli::classify_http_status;
/// assert_eq!(classify_http_status(429), ErrorCode::ProviderRateLimited);
/// assert_eq!(classify_http_status(529), ErrorCode::ProviderUnavailable);
/// ```
pub fn classify_http_status(status: u64) -> ErrorCode {
    match status {
        401 | 403 => ErrorCode::ProviderAuthenticationFailed,
        429 => ErrorCode::ProviderRateLimited,
        408 | 500..=599 => ErrorCode::ProviderUnavailable,
        _ => ErrorCode::ProviderError,
    }
}

/// Classifies a provider error text (CLI message, stderr): authentication, rate limit,
/// server-side or connection failures; `None` when nothing matches.
///
/// ```
/// use asm_core::ErrorCode;
/// use asm_provider_cli::classify_error_text;
/// assert_eq!(
///     classify_error_text("API Error: Unable to connect to API (ConnectionRefused)"),
///     Some(ErrorCode::ProviderUnavailable)
/// );
/// assert_eq!(classify_error_text("Failed to authenticate. API Error: 401"), Some(ErrorCode::ProviderAuthenticationFailed));
/// assert_eq!(classify_error_text("syntax error"), None);
/// ```
pub fn classify_error_text(text: &str) -> Option<ErrorCode> {
    let t = text.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| t.contains(n));
    if has(&["401", "403 forbidden", "unauthorized", "authenticat", "invalid api key", "invalid x-api-key"]) {
        Some(ErrorCode::ProviderAuthenticationFailed)
    } else if has(&["429", "rate limit", "rate_limit", "too many requests"]) {
        Some(ErrorCode::ProviderRateLimited)
    } else if has(&[
        "connectionrefused",
        "connection refused",
        "unable to connect",
        "connection failed",
        "econnrefused",
        "overloaded",
        "server-side issue",
        "high demand",
        " 500 ",
        " 502 ",
        " 503 ",
        " 504 ",
        " 529 ",
        "stream disconnected",
    ]) {
        Some(ErrorCode::ProviderUnavailable)
    } else {
        None
    }
}
