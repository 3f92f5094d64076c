//! Capability negotiation: [`CapabilityResolver`] and its [`Negotiation`] outcome.

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, Result};

use super::{Capability, CapabilityType};

/// Checks capabilities against required and optional [`CapabilityType`]s.
///
/// ```
/// use asm_core::{Capability, CapabilityResolver, CapabilityType, ErrorCode, NegotiationStatus};
///
/// let resolver = CapabilityResolver::new(
///     [CapabilityType::Tool, CapabilityType::FileAccess],
///     [CapabilityType::NetworkAccess],
/// );
/// let tool = Capability::new("bash", CapabilityType::Tool)?;
/// let err = resolver.negotiate(&[tool.clone()]).unwrap_err();
/// assert_eq!(err.code(), ErrorCode::MissingRequiredCapability);
/// assert_eq!(err.details()["missing"], serde_json::json!(["file_access"]));
///
/// let fs = Capability::new("fs", CapabilityType::FileAccess)?;
/// let web = Capability::new("web", CapabilityType::NetworkAccess)?;
/// let n = resolver.negotiate(&[tool, fs, web])?;
/// assert_eq!(n.status, NegotiationStatus::Full);
/// assert!(n.warnings.is_empty());
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityResolver {
    /// Types that must be present (enabled) for negotiation to succeed.
    #[serde(default)]
    pub required: Vec<CapabilityType>,
    /// Types that are used when present; their absence degrades the result.
    #[serde(default)]
    pub optional: Vec<CapabilityType>,
}

impl CapabilityResolver {
    /// A resolver with these required and optional types.
    pub fn new(
        required: impl IntoIterator<Item = CapabilityType>,
        optional: impl IntoIterator<Item = CapabilityType>,
    ) -> Self {
        Self { required: required.into_iter().collect(), optional: optional.into_iter().collect() }
    }

    /// A resolver from type names.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidCapabilityType`] for the first unknown name.
    pub fn from_names<R, O>(required: R, optional: O) -> Result<Self>
    where
        R: IntoIterator,
        R::Item: AsRef<str>,
        O: IntoIterator,
        O::Item: AsRef<str>,
    {
        let parse = |name: &str| CapabilityType::parse(name);
        Ok(Self {
            required: required.into_iter().map(|n| parse(n.as_ref())).collect::<Result<_>>()?,
            optional: optional.into_iter().map(|n| parse(n.as_ref())).collect::<Result<_>>()?,
        })
    }

    /// Whether the resolver requires and wants nothing.
    pub fn is_empty(&self) -> bool {
        self.required.is_empty() && self.optional.is_empty()
    }

    /// Negotiates against `capabilities` (spec 1.7). Only enabled capabilities count, matched by
    /// type. `supported` = (required ∪ optional) ∩ enabled types, `unsupported` = optional types
    /// not enabled, one warning per unsupported type; the status is
    /// [`Degraded`](NegotiationStatus::Degraded) when anything optional is missing.
    ///
    /// # Errors
    /// [`ErrorCode::MissingRequiredCapability`] when a required type has no enabled capability;
    /// the message lists the missing types and `details["missing"]` holds their names.
    pub fn negotiate(&self, capabilities: &[Capability]) -> Result<Negotiation> {
        let enabled = |kind: CapabilityType| Self::has_capability_type(capabilities, kind);

        let mut missing: Vec<CapabilityType> = Vec::new();
        for &kind in &self.required {
            if !enabled(kind) && !missing.contains(&kind) {
                missing.push(kind);
            }
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|k| k.as_str()).collect();
            return Err(Error::new(
                ErrorCode::MissingRequiredCapability,
                format!("missing required capabilities: {}", names.join(", ")),
            )
            .with_detail("missing", names));
        }

        let mut supported = Vec::new();
        let mut unsupported = Vec::new();
        for &kind in self.required.iter().chain(&self.optional) {
            if enabled(kind) {
                if !supported.contains(&kind) {
                    supported.push(kind);
                }
            } else if !unsupported.contains(&kind) {
                unsupported.push(kind);
            }
        }
        let warnings: Vec<String> =
            unsupported.iter().map(|kind| format!("optional capability '{kind}' is not available")).collect();
        let status = if unsupported.is_empty() { NegotiationStatus::Full } else { NegotiationStatus::Degraded };
        Ok(Negotiation { status, supported, unsupported, warnings })
    }

    /// Whether `capabilities` has an enabled capability of type `kind`.
    pub fn has_capability_type(capabilities: &[Capability], kind: CapabilityType) -> bool {
        capabilities.iter().any(|c| c.enabled && c.kind == kind)
    }

    /// The enabled capabilities of type `kind`.
    pub fn capabilities_of_type(capabilities: &[Capability], kind: CapabilityType) -> Vec<&Capability> {
        capabilities.iter().filter(|c| c.enabled && c.kind == kind).collect()
    }
}

/// The outcome of a successful negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NegotiationStatus {
    /// Every required and optional type is available.
    Full,
    /// Every required type is available, some optional ones are not.
    Degraded,
}

crate::string_enum! {
    /// The snake_case name.
    NegotiationStatus {
        Full => "full",
        Degraded => "degraded",
    }
}

/// The result of [`CapabilityResolver::negotiate`].
///
/// ```
/// use asm_core::{CapabilityResolver, CapabilityType, NegotiationStatus};
/// let n = CapabilityResolver::new([], [CapabilityType::Prompt]).negotiate(&[])?;
/// assert_eq!(n.status, NegotiationStatus::Degraded);
/// assert_eq!(n.warnings.len(), 1);
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negotiation {
    /// [`Full`](NegotiationStatus::Full) or [`Degraded`](NegotiationStatus::Degraded).
    pub status: NegotiationStatus,
    /// Requested types that are available (required first, then optional; no duplicates).
    pub supported: Vec<CapabilityType>,
    /// Optional types that are not available.
    pub unsupported: Vec<CapabilityType>,
    /// One human-readable warning per unsupported type.
    pub warnings: Vec<String>,
}

impl Negotiation {
    /// Whether everything requested is available.
    pub fn is_full(&self) -> bool {
        self.status == NegotiationStatus::Full
    }
}
