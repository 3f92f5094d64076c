//! The routing errors, mapped once into [`asm_core::Error`].
//!
//! | failure | code | details |
//! |---|---|---|
//! | no registered adapter is eligible for the run | `provider_unavailable` | `router`, `registered`, `excluded`, `unavailable` |
//! | an unknown strategy name | `validation_error` | `key: "strategy"`, `value` |
//! | a bad routing option value | `validation_error` | `key`, `reason` |
//! | an empty or duplicate adapter id | `validation_error` | `key: "adapter_id"` |
//! | `cancel` for a run the router is not serving | `run_not_found` | `run_id` |
//! | every attempt failed | the last error's code | `provider` (the last adapter), `attempts` (one entry per attempt), the last error as source |

use std::fmt;

use asm_core::{Error, ErrorCode, keys};
use serde_json::json;

/// One failed attempt of a routed run.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FailedAttempt {
    /// The adapter id that was tried.
    pub adapter_id: String,
    /// Its error.
    pub error: Error,
}

/// What went wrong while routing, before it becomes an [`Error`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RoutingError {
    /// No registered adapter passed the capability, exclusion, health and breaker filters.
    NoCandidates {
        /// The router's name.
        router: String,
        /// Registered adapter ids.
        registered: Vec<String>,
        /// Adapter ids excluded by the policy or missing a required capability.
        excluded: Vec<String>,
        /// Adapter ids skipped for health cooldown or an open circuit breaker.
        unavailable: Vec<String>,
    },
    /// A strategy name that is neither `prefer` nor `weighted`.
    UnknownStrategy(String),
    /// A routing option with a value of the wrong shape.
    InvalidOption {
        /// The option key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An empty adapter id, or one registered twice in a builder.
    InvalidAdapterId(String),
    /// `cancel` for a run that the router is not serving.
    RunNotRouted(String),
    /// Every attempt failed; the last error is the cause.
    AllAttemptsFailed {
        /// Every attempt, in order (never empty).
        attempts: Vec<FailedAttempt>,
    },
}

impl fmt::Display for RoutingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCandidates { router, .. } => write!(f, "no eligible providers for this run (router {router})"),
            Self::UnknownStrategy(name) => {
                write!(f, "unknown routing strategy {name:?}: expected \"prefer\" or \"weighted\"")
            }
            Self::InvalidOption { key, reason } => write!(f, "invalid routing option {key}: {reason}"),
            Self::InvalidAdapterId(id) => write!(f, "invalid adapter id {id:?}: ids must be non-empty and unique"),
            Self::RunNotRouted(run) => write!(f, "no active routed run found for {run}"),
            Self::AllAttemptsFailed { attempts } => {
                let last = attempts.last();
                write!(
                    f,
                    "all {} routing attempts failed; last ({}): {}",
                    attempts.len(),
                    last.map_or("-", |a| a.adapter_id.as_str()),
                    last.map_or("", |a| a.error.message())
                )
            }
        }
    }
}

impl std::error::Error for RoutingError {}

impl From<RoutingError> for Error {
    fn from(error: RoutingError) -> Self {
        let message = error.to_string();
        match error {
            RoutingError::NoCandidates { router, registered, excluded, unavailable } => {
                Error::new(ErrorCode::ProviderUnavailable, message)
                    .with_detail("router", router)
                    .with_detail("registered", registered)
                    .with_detail("excluded", excluded)
                    .with_detail("unavailable", unavailable)
            }
            RoutingError::UnknownStrategy(value) => Error::new(ErrorCode::ValidationError, message)
                .with_detail("key", "strategy")
                .with_detail("value", value),
            RoutingError::InvalidOption { key, reason } => {
                Error::new(ErrorCode::ValidationError, message).with_detail("key", key).with_detail("reason", reason)
            }
            RoutingError::InvalidAdapterId(_) => {
                Error::new(ErrorCode::ValidationError, message).with_detail("key", "adapter_id")
            }
            RoutingError::RunNotRouted(run) => Error::new(ErrorCode::RunNotFound, message).with_detail("run_id", run),
            RoutingError::AllAttemptsFailed { attempts } => {
                let summary: Vec<_> = attempts
                    .iter()
                    .map(|a| json!({"provider": a.adapter_id, "code": a.error.code(), "message": a.error.message()}))
                    .collect();
                match attempts.last() {
                    Some(last) => {
                        let mut mapped = Error::new(last.error.code(), message)
                            .with_details(last.error.details().clone())
                            .with_detail(keys::PROVIDER, last.adapter_id.clone())
                            .with_detail("attempts", summary);
                        if let Some(provider_error) = last.error.provider_error() {
                            mapped = mapped.with_provider_error(provider_error.clone());
                        }
                        mapped.with_source(last.error.clone())
                    }
                    None => Error::new(ErrorCode::ProviderUnavailable, message),
                }
            }
        }
    }
}
