//! Capability requirements of a routed run, matched against each adapter's current capabilities.

use asm_core::{Capability, CapabilityType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RoutingError;

/// A capability a run needs: a type, or a type and an exact name.
///
/// From JSON (routing option `required_capabilities`): `"tool"`, `{"type": "tool"}`,
/// `{"type": "tool", "name": null}` (type only) or `{"type": "tool", "name": "bash"}`.
///
/// ```
/// use asm_core::{Capability, CapabilityType};
/// use asm_routing::CapabilityRequirement;
/// let caps = Capability::list(&[("bash", CapabilityType::Tool)]);
/// assert!(CapabilityRequirement::of_type(CapabilityType::Tool).matches(&caps));
/// assert!(CapabilityRequirement::named(CapabilityType::Tool, "bash").matches(&caps));
/// assert!(!CapabilityRequirement::named(CapabilityType::Tool, "web").matches(&caps));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CapabilityRequirement {
    /// The capability type.
    #[serde(rename = "type")]
    pub kind: CapabilityType,
    /// The exact name, or any capability of the type when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl CapabilityRequirement {
    /// Any enabled capability of `kind`.
    pub fn of_type(kind: CapabilityType) -> Self {
        Self { kind, name: None }
    }

    /// An enabled capability of `kind` named exactly `name`.
    pub fn named(kind: CapabilityType, name: impl Into<String>) -> Self {
        Self { kind, name: Some(name.into()) }
    }

    /// Whether an enabled capability in `capabilities` satisfies this requirement.
    pub fn matches(&self, capabilities: &[Capability]) -> bool {
        capabilities
            .iter()
            .any(|cap| cap.enabled && cap.kind == self.kind && self.name.as_ref().is_none_or(|name| &cap.name == name))
    }

    /// Parses one requirement (see the type's docs for the shapes).
    ///
    /// # Errors
    /// [`RoutingError::InvalidOption`] for any other shape or an unknown type (the original
    /// silently never matched those).
    pub fn from_json(value: &Value) -> Result<Self, RoutingError> {
        let invalid = |reason: String| RoutingError::InvalidOption { key: "required_capabilities".into(), reason };
        let kind_of = |text: &str| CapabilityType::parse(text).map_err(|e| invalid(e.message().to_owned()));
        match value {
            Value::String(kind) => Ok(Self::of_type(kind_of(kind)?)),
            Value::Object(object) => {
                let kind = object
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("needs a string \"type\"".into()))?;
                let name = match object.get("name") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(name)) => Some(name.clone()),
                    Some(_) => return Err(invalid("\"name\" must be a string or null".into())),
                };
                Ok(Self { kind: kind_of(kind)?, name })
            }
            _ => Err(invalid("each requirement is a type name or {\"type\", \"name\"}".into())),
        }
    }
}

/// Whether `capabilities` satisfy every requirement (an empty list is always satisfied).
pub fn matches_all(capabilities: &[Capability], requirements: &[CapabilityRequirement]) -> bool {
    requirements.iter().all(|req| req.matches(capabilities))
}
