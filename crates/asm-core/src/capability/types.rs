//! What a provider can do: [`CapabilityType`] and [`Capability`].

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, JsonMap, Result};

/// What kind of thing a [`Capability`] grants. Serialised as the snake_case name.
///
/// ```
/// use asm_core::{CapabilityType, ErrorCode};
/// assert_eq!(CapabilityType::parse("file_access")?, CapabilityType::FileAccess);
/// assert_eq!(CapabilityType::CodeExecution.to_string(), "code_execution");
/// assert_eq!(
///     CapabilityType::parse("teleport").unwrap_err().code(),
///     ErrorCode::InvalidCapabilityType
/// );
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CapabilityType {
    /// A callable tool.
    Tool,
    /// A readable resource.
    Resource,
    /// A prompt template.
    Prompt,
    /// Model sampling on behalf of a client.
    Sampling,
    /// Access to files.
    FileAccess,
    /// Access to the network.
    NetworkAccess,
    /// Execution of code.
    CodeExecution,
}

crate::string_enum! {
    /// The snake_case name used on the wire.
    CapabilityType {
        Tool => "tool",
        Resource => "resource",
        Prompt => "prompt",
        Sampling => "sampling",
        FileAccess => "file_access",
        NetworkAccess => "network_access",
        CodeExecution => "code_execution",
    }
    /// Every type, in canonical order.
    pub const ALL;
    /// Parses the snake_case name (exact match).
    ///
    /// # Errors
    /// [`ErrorCode::InvalidCapabilityType`] for any other text.
    pub fn parse(text) -> Result<Self, Error> {
        Err(Error::new(ErrorCode::InvalidCapabilityType, format!("unknown capability type {text:?}")))
    }
    impl FromStr;
}

fn default_true() -> bool {
    true
}

/// One thing a provider or agent can do.
///
/// On the wire the type is the key `"type"`; `enabled` defaults to `true` when absent.
///
/// ```
/// use asm_core::{Capability, CapabilityType, ErrorCode};
///
/// let mut cap = Capability::new("bash", CapabilityType::Tool)?.with_description("Run commands");
/// assert!(cap.enabled);
/// cap.disable();
/// assert!(!cap.enabled);
///
/// let json = serde_json::json!({"name": "web", "type": "network_access"});
/// let web: Capability = serde_json::from_value(json)?;
/// assert!(web.enabled);
///
/// assert_eq!(Capability::new("", CapabilityType::Tool).unwrap_err().code(), ErrorCode::ValidationError);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    /// The name, unique within a [`Manifest`]; never empty.
    pub name: String,
    /// What kind of capability this is.
    #[serde(rename = "type")]
    pub kind: CapabilityType,
    /// Whether the capability is currently offered. Only enabled capabilities negotiate.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form configuration.
    #[serde(default, skip_serializing_if = "JsonMap::is_empty")]
    pub config: JsonMap,
    /// Permission strings the capability needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
}

impl Capability {
    /// An enabled capability with no description, config or permissions.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] when `name` is empty or only whitespace.
    pub fn new(name: impl Into<String>, kind: CapabilityType) -> Result<Self> {
        let capability = Self {
            name: name.into(),
            kind,
            enabled: true,
            description: None,
            config: JsonMap::new(),
            permissions: Vec::new(),
        };
        capability.validate()?;
        Ok(capability)
    }

    /// Enabled capabilities from `(name, type)` pairs, as adapters advertise them; pairs with an
    /// empty name are left out.
    ///
    /// ```
    /// use asm_core::{Capability, CapabilityType};
    /// let caps = Capability::list(&[("streaming", CapabilityType::Sampling), ("bash", CapabilityType::CodeExecution)]);
    /// assert_eq!(caps.len(), 2);
    /// assert!(caps.iter().all(|c| c.enabled));
    /// ```
    pub fn list(pairs: &[(&str, CapabilityType)]) -> Vec<Capability> {
        pairs.iter().filter_map(|&(name, kind)| Self::new(name, kind).ok()).collect()
    }

    /// Builds a capability from a JSON object, with the error codes of the spec: a missing or
    /// empty `name` or a missing `type` is [`ErrorCode::ValidationError`], a `type` that is not a
    /// known name is [`ErrorCode::InvalidCapabilityType`]. `enabled` defaults to `true`.
    ///
    /// ```
    /// use asm_core::{Capability, ErrorCode};
    /// let bad = serde_json::json!({"name": "x", "type": "telepathy"});
    /// assert_eq!(Capability::from_json(&bad).unwrap_err().code(), ErrorCode::InvalidCapabilityType);
    /// ```
    ///
    /// # Errors
    /// As described above; other malformed fields give [`ErrorCode::ValidationError`].
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let object = value
            .as_object()
            .ok_or_else(|| Error::new(ErrorCode::ValidationError, "a capability must be a JSON object"))?;
        match object.get("name") {
            Some(serde_json::Value::String(name)) if !name.trim().is_empty() => {}
            _ => {
                return Err(Error::new(
                    ErrorCode::ValidationError,
                    "capability name is required and must be a non-empty string",
                ));
            }
        }
        match object.get("type") {
            None | Some(serde_json::Value::Null) => {
                return Err(Error::new(ErrorCode::ValidationError, "capability type is required"));
            }
            Some(serde_json::Value::String(text)) => {
                CapabilityType::parse(text)?;
            }
            Some(other) => {
                return Err(Error::new(
                    ErrorCode::InvalidCapabilityType,
                    format!("capability type must be a string, got {other}"),
                ));
            }
        }
        serde_json::from_value(value.clone())
            .map_err(|e| Error::new(ErrorCode::ValidationError, format!("invalid capability: {e}")))
    }

    /// Checks the invariants: the name is not empty or only whitespace.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] when the name is blank.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::new(ErrorCode::ValidationError, "capability name cannot be empty"));
        }
        Ok(())
    }

    crate::builder_setters! {
        /// Sets the description.
        fn with_description(description: impl Into<String>) { description = Some(description.into()) }
    }

    /// Adds one configuration entry.
    #[must_use]
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    crate::builder_setters! {
        /// Adds one permission.
        fn with_permission(permission: impl Into<String>) { permissions.push(permission.into()) }
        /// Sets `enabled`.
        fn with_enabled(enabled: bool) { enabled = enabled }
    }

    /// Enables the capability.
    pub fn enable(&mut self) {
        self.enabled = true;
    }

    /// Disables the capability; it no longer counts in negotiation.
    pub fn disable(&mut self) {
        self.enabled = false;
    }
}
