//! [`ApiError`]: every failure of the API as one JSON body, `{code, message}`, with the HTTP
//! status its code calls for ([`status_for`], the one mapping).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use asm_core::{Error, ErrorCategory, ErrorCode};

/// The HTTP status of an [`ErrorCode`]: the one place codes become statuses.
///
/// | status | codes |
/// | --- | --- |
/// | 400 | the validation category, `invalid_event_type`, `invalid_status`, `invalid_cursor`, `invalid_capability_type`, the `*_mismatch` codes, `missing_required_capability`, `capability_not_supported` |
/// | 403 | `policy_violation`, `tool_permission_denied` |
/// | 404 | the resource category's not-found codes |
/// | 409 | `invalid_transition`, `invalid_operation`, `stream_closed`, `already_exists`, `duplicate_capability`, `cancelled` |
/// | 429 | `max_sessions_exceeded`, `max_runs_exceeded`, `provider_rate_limited`, `provider_quota_exceeded` |
/// | 502 | the other provider codes |
/// | 503 | `provider_unavailable`, `storage_connection_failed`, `dependency_not_available`, `migration_required` |
/// | 504 | `timeout`, `provider_timeout` |
/// | 500 | everything else (storage failures, internal and tool errors) |
///
/// ```
/// use asm_core::ErrorCode;
/// use axum::http::StatusCode;
/// assert_eq!(asm_http::status_for(ErrorCode::SessionNotFound), StatusCode::NOT_FOUND);
/// assert_eq!(asm_http::status_for(ErrorCode::InvalidTransition), StatusCode::CONFLICT);
/// assert_eq!(asm_http::status_for(ErrorCode::MaxRunsExceeded), StatusCode::TOO_MANY_REQUESTS);
/// ```
pub fn status_for(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    match code {
        C::InvalidTransition
        | C::InvalidOperation
        | C::StreamClosed
        | C::AlreadyExists
        | C::DuplicateCapability
        | C::SessionOwned
        | C::LeaseLost
        | C::Cancelled => StatusCode::CONFLICT,
        C::MaxSessionsExceeded | C::MaxRunsExceeded | C::ProviderRateLimited | C::ProviderQuotaExceeded => {
            StatusCode::TOO_MANY_REQUESTS
        }
        C::ProviderUnavailable | C::StorageConnectionFailed | C::DependencyNotAvailable | C::MigrationRequired => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        C::Timeout | C::ProviderTimeout => StatusCode::GATEWAY_TIMEOUT,
        C::PolicyViolation | C::ToolPermissionDenied => StatusCode::FORBIDDEN,
        C::MissingRequiredCapability | C::CapabilityNotSupported => StatusCode::BAD_REQUEST,
        code => match code.category() {
            ErrorCategory::Validation | ErrorCategory::State => StatusCode::BAD_REQUEST,
            ErrorCategory::Resource => StatusCode::NOT_FOUND,
            ErrorCategory::Provider => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

/// The error body of every failed request: `{"code": "...", "message": "..."}` plus `details`
/// when the error has any. `code` is an [`ErrorCode`] name, or `unauthorized` for a request
/// without the right bearer token (401), which is an HTTP-layer refusal, not a library error.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code (`session_not_found`, `validation_error`, ..., `unauthorized`).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Free-form details (left out when empty).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// A failed request: an [`asm_core::Error`] (status from [`status_for`]) or the 401 of a
/// missing or wrong token. Implements [`IntoResponse`].
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    // Boxed: `ErrorBody` is over 100 bytes (more with serde_json's `preserve_order`), and
    // every handler helper returns `Result<_, ApiError>`.
    body: Box<ErrorBody>,
}

impl ApiError {
    /// The 401 answer to a request without a valid bearer token.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            body: Box::new(ErrorBody {
                code: "unauthorized".into(),
                message: "missing or invalid bearer token (Authorization: Bearer <token>)".into(),
                details: serde_json::Map::new(),
            }),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }

    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::from(Error::new(code, message))
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status = status_for(error.code());
        if status.is_server_error() {
            tracing::warn!(code = %error.code(), message = error.message(), "request failed");
        }
        Self {
            status,
            body: Box::new(ErrorBody {
                code: error.code().as_str().to_owned(),
                message: error.message().to_owned(),
                details: error.details().clone(),
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(*self.body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_fitting_status() {
        for &code in ErrorCode::ALL {
            let status = status_for(code);
            assert!(status.is_client_error() || status.is_server_error(), "{code}: {status}");
            if code.category() == ErrorCategory::Resource && code.as_str().ends_with("not_found") {
                assert_eq!(status, StatusCode::NOT_FOUND, "{code}");
            }
            if code.category() == ErrorCategory::Validation {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{code}");
            }
        }
        assert_eq!(status_for(ErrorCode::StorageConnectionFailed), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_for(ErrorCode::InternalError), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
