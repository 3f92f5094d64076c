//! Capabilities, manifests, capability negotiation and the manifest registry (spec 1.5-1.8).
//!
//! A [`Capability`] says what a provider can do (a tool, file access, ...). A [`Manifest`]
//! describes one agent or provider with its capabilities. A [`CapabilityResolver`] checks a list
//! of capabilities against required and optional [`CapabilityType`]s, and a [`Registry`] holds
//! manifests by name.
//!
//! Negotiation matches by capability **type** only, never by name, and only enabled
//! capabilities count.
//!
//! ```
//! use asm_core::{Capability, CapabilityResolver, CapabilityType, NegotiationStatus};
//!
//! let caps = vec![
//!     Capability::new("bash", CapabilityType::Tool)?,
//!     Capability::new("fs", CapabilityType::FileAccess)?,
//! ];
//! let resolver = CapabilityResolver::new([CapabilityType::Tool], [CapabilityType::Sampling]);
//! let negotiation = resolver.negotiate(&caps)?;
//! assert_eq!(negotiation.status, NegotiationStatus::Degraded);
//! assert_eq!(negotiation.unsupported, vec![CapabilityType::Sampling]);
//! # Ok::<(), asm_core::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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

impl CapabilityType {
    /// Every type, in canonical order.
    pub const ALL: &'static [CapabilityType] = &[
        CapabilityType::Tool,
        CapabilityType::Resource,
        CapabilityType::Prompt,
        CapabilityType::Sampling,
        CapabilityType::FileAccess,
        CapabilityType::NetworkAccess,
        CapabilityType::CodeExecution,
    ];

    /// The snake_case name used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            CapabilityType::Tool => "tool",
            CapabilityType::Resource => "resource",
            CapabilityType::Prompt => "prompt",
            CapabilityType::Sampling => "sampling",
            CapabilityType::FileAccess => "file_access",
            CapabilityType::NetworkAccess => "network_access",
            CapabilityType::CodeExecution => "code_execution",
        }
    }

    /// Parses the snake_case name (exact match).
    ///
    /// # Errors
    /// [`ErrorCode::InvalidCapabilityType`] for any other text.
    pub fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| Error::new(ErrorCode::InvalidCapabilityType, format!("unknown capability type {text:?}")))
    }
}

impl fmt::Display for CapabilityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CapabilityType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
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

    /// Sets the description.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Adds one configuration entry.
    #[must_use]
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Adds one permission.
    #[must_use]
    pub fn with_permission(mut self, permission: impl Into<String>) -> Self {
        self.permissions.push(permission.into());
        self
    }

    /// Sets `enabled`.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
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

/// Describes an agent or provider: name, version and [`Capability`] list.
///
/// ```
/// use asm_core::{Capability, CapabilityType, ErrorCode, Manifest};
///
/// let mut manifest = Manifest::new("coder", "1.0.0")?.with_provider("claude");
/// manifest.add_capability(Capability::new("bash", CapabilityType::Tool)?)?;
/// let dup = manifest.add_capability(Capability::new("bash", CapabilityType::Tool)?);
/// assert_eq!(dup.unwrap_err().code(), ErrorCode::DuplicateCapability);
/// assert_eq!(manifest.get_capability("bash")?.kind, CapabilityType::Tool);
/// assert_eq!(manifest.get_capability("nope").unwrap_err().code(), ErrorCode::CapabilityNotFound);
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The name; never empty.
    pub name: String,
    /// The version; any non-empty string (not checked as semver).
    pub version: String,
    /// A human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The provider this manifest belongs to (`claude`, `codex`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The capabilities. [`Manifest::add_capability`] keeps names unique; the field itself does
    /// not enforce it.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Free-form configuration.
    #[serde(default, skip_serializing_if = "JsonMap::is_empty")]
    pub config: JsonMap,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "JsonMap::is_empty")]
    pub metadata: JsonMap,
}

impl Manifest {
    /// A manifest without capabilities.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] when `name` or `version` is empty or only whitespace.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Result<Self> {
        let manifest = Self {
            name: name.into(),
            version: version.into(),
            description: None,
            provider: None,
            capabilities: Vec::new(),
            config: JsonMap::new(),
            metadata: JsonMap::new(),
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Builds a manifest from a JSON object. Capabilities are converted with
    /// [`Capability::from_json`] and the first conversion error is returned; a missing or empty
    /// `name` or `version` is [`ErrorCode::ValidationError`]. Duplicate capability names are
    /// accepted here (only [`Manifest::add_capability`] rejects them).
    ///
    /// # Errors
    /// As described above.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let object = value
            .as_object()
            .ok_or_else(|| Error::new(ErrorCode::ValidationError, "a manifest must be a JSON object"))?;
        let capabilities = match object.get("capabilities") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => {
                items.iter().map(Capability::from_json).collect::<Result<Vec<_>>>()?
            }
            Some(other) => {
                return Err(Error::new(
                    ErrorCode::ValidationError,
                    format!("manifest capabilities must be a list, got {other}"),
                ));
            }
        };
        let mut rest = object.clone();
        rest.remove("capabilities");
        let mut manifest: Manifest = serde_json::from_value(serde_json::Value::Object(rest))
            .map_err(|e| Error::new(ErrorCode::ValidationError, format!("invalid manifest: {e}")))?;
        manifest.capabilities = capabilities;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the invariants: non-blank name and version, every capability valid.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] naming the first problem.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::new(ErrorCode::ValidationError, "manifest name cannot be empty"));
        }
        if self.version.trim().is_empty() {
            return Err(Error::new(
                ErrorCode::ValidationError,
                format!("manifest {:?}: version cannot be empty", self.name),
            ));
        }
        for capability in &self.capabilities {
            capability.validate().map_err(|e| {
                Error::new(ErrorCode::ValidationError, format!("manifest {:?}: {}", self.name, e.message()))
            })?;
        }
        Ok(())
    }

    /// Sets the description.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Sets the provider.
    #[must_use]
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Adds a capability.
    ///
    /// # Errors
    /// [`ErrorCode::DuplicateCapability`] when a capability with the same name exists;
    /// [`ErrorCode::ValidationError`] when the capability is invalid.
    pub fn add_capability(&mut self, capability: Capability) -> Result<()> {
        capability.validate()?;
        if self.capabilities.iter().any(|c| c.name == capability.name) {
            return Err(Error::new(
                ErrorCode::DuplicateCapability,
                format!("capability {:?} already exists", capability.name),
            )
            .with_detail("name", capability.name));
        }
        self.capabilities.push(capability);
        Ok(())
    }

    /// Removes the capability called `name` and returns it.
    ///
    /// # Errors
    /// [`ErrorCode::CapabilityNotFound`] when there is none.
    pub fn remove_capability(&mut self, name: &str) -> Result<Capability> {
        let index = self.capabilities.iter().position(|c| c.name == name).ok_or_else(|| capability_not_found(name))?;
        Ok(self.capabilities.remove(index))
    }

    /// The capability called `name`.
    ///
    /// # Errors
    /// [`ErrorCode::CapabilityNotFound`] when there is none.
    pub fn get_capability(&self, name: &str) -> Result<&Capability> {
        self.capabilities.iter().find(|c| c.name == name).ok_or_else(|| capability_not_found(name))
    }

    /// The enabled capabilities, in order.
    pub fn enabled_capabilities(&self) -> Vec<&Capability> {
        self.capabilities.iter().filter(|c| c.enabled).collect()
    }

    /// Whether an enabled capability of type `kind` exists.
    pub fn has_capability_type(&self, kind: CapabilityType) -> bool {
        CapabilityResolver::has_capability_type(&self.capabilities, kind)
    }
}

fn capability_not_found(name: &str) -> Error {
    Error::new(ErrorCode::CapabilityNotFound, format!("capability {name:?} not found")).with_detail("name", name)
}

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

impl NegotiationStatus {
    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            NegotiationStatus::Full => "full",
            NegotiationStatus::Degraded => "degraded",
        }
    }
}

impl fmt::Display for NegotiationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// Manifests by name, plus free-form metadata.
///
/// Serialised as `{"manifests": [...], "metadata": {...}}` (manifests sorted by name);
/// deserialisation validates every manifest and fails on the first bad one or on a duplicate
/// name.
///
/// ```
/// use asm_core::{Capability, CapabilityType, ErrorCode, Manifest, Registry};
///
/// let mut registry = Registry::new();
/// let mut coder = Manifest::new("coder", "1.0")?.with_provider("claude");
/// coder.add_capability(Capability::new("bash", CapabilityType::Tool)?)?;
/// registry.register(coder.clone())?;
/// registry.register(Manifest::new("reviewer", "0.1")?)?;
///
/// assert_eq!(registry.register(coder).unwrap_err().code(), ErrorCode::AlreadyExists);
/// assert_eq!(registry.get("nobody").unwrap_err().code(), ErrorCode::NotFound);
/// assert_eq!(registry.len(), 2);
/// let tools: Vec<_> = registry.filter_by_capability(CapabilityType::Tool).iter().map(|m| m.name.as_str()).collect();
/// assert_eq!(tools, ["coder"]);
/// # Ok::<(), asm_core::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RegistryRepr", into = "RegistryRepr")]
pub struct Registry {
    manifests: BTreeMap<String, Manifest>,
    /// Free-form metadata about the registry.
    pub metadata: JsonMap,
}

#[derive(Serialize, Deserialize)]
struct RegistryRepr {
    #[serde(default)]
    manifests: Vec<Manifest>,
    #[serde(default)]
    metadata: JsonMap,
}

impl From<Registry> for RegistryRepr {
    fn from(registry: Registry) -> Self {
        Self { manifests: registry.manifests.into_values().collect(), metadata: registry.metadata }
    }
}

impl TryFrom<RegistryRepr> for Registry {
    type Error = Error;
    fn try_from(repr: RegistryRepr) -> Result<Self> {
        let mut registry = Registry { manifests: BTreeMap::new(), metadata: repr.metadata };
        for manifest in repr.manifests {
            registry.register(manifest)?;
        }
        Ok(registry)
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a manifest after validating it.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for an invalid manifest, [`ErrorCode::AlreadyExists`]
    /// when the name is taken.
    pub fn register(&mut self, manifest: Manifest) -> Result<()> {
        manifest.validate()?;
        if self.manifests.contains_key(&manifest.name) {
            return Err(Error::new(
                ErrorCode::AlreadyExists,
                format!("manifest {:?} is already registered", manifest.name),
            )
            .with_detail("name", manifest.name));
        }
        self.manifests.insert(manifest.name.clone(), manifest);
        Ok(())
    }

    /// Replaces the manifest with the same name, after validating it; returns the old one.
    ///
    /// # Errors
    /// [`ErrorCode::NotFound`] when no manifest has that name, [`ErrorCode::ValidationError`]
    /// for an invalid manifest.
    pub fn update(&mut self, manifest: Manifest) -> Result<Manifest> {
        let Some(slot) = self.manifests.get_mut(&manifest.name) else {
            return Err(manifest_not_found(&manifest.name));
        };
        manifest.validate()?;
        Ok(std::mem::replace(slot, manifest))
    }

    /// Removes the manifest called `name` and returns it.
    ///
    /// # Errors
    /// [`ErrorCode::NotFound`] when there is none.
    pub fn unregister(&mut self, name: &str) -> Result<Manifest> {
        self.manifests.remove(name).ok_or_else(|| manifest_not_found(name))
    }

    /// The manifest called `name`.
    ///
    /// # Errors
    /// [`ErrorCode::NotFound`] when there is none.
    pub fn get(&self, name: &str) -> Result<&Manifest> {
        self.manifests.get(name).ok_or_else(|| manifest_not_found(name))
    }

    /// Every manifest, sorted by name.
    pub fn list(&self) -> Vec<&Manifest> {
        self.manifests.values().collect()
    }

    /// Whether a manifest called `name` is registered.
    pub fn exists(&self, name: &str) -> bool {
        self.manifests.contains_key(name)
    }

    /// The number of manifests.
    pub fn len(&self) -> usize {
        self.manifests.len()
    }

    /// Whether the registry holds no manifest.
    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty()
    }

    /// The manifests whose provider is exactly `provider`, sorted by name.
    pub fn filter_by_provider(&self, provider: &str) -> Vec<&Manifest> {
        self.manifests.values().filter(|m| m.provider.as_deref() == Some(provider)).collect()
    }

    /// The manifests with an enabled capability of type `kind`, sorted by name.
    pub fn filter_by_capability(&self, kind: CapabilityType) -> Vec<&Manifest> {
        self.manifests.values().filter(|m| m.has_capability_type(kind)).collect()
    }
}

fn manifest_not_found(name: &str) -> Error {
    Error::new(ErrorCode::NotFound, format!("manifest {name:?} not found")).with_detail("name", name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cap(name: &str, kind: CapabilityType) -> Capability {
        Capability::new(name, kind).unwrap()
    }

    #[test]
    fn capability_type_names_round_trip() {
        assert_eq!(CapabilityType::ALL.len(), 7);
        for &kind in CapabilityType::ALL {
            assert_eq!(CapabilityType::parse(kind.as_str()).unwrap(), kind);
            assert_eq!(kind.as_str().parse::<CapabilityType>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(kind.to_string(), kind.as_str());
        }
        let err = CapabilityType::parse("Tool").unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidCapabilityType);
    }

    #[test]
    fn capability_new_validates_name() {
        assert_eq!(Capability::new("", CapabilityType::Tool).unwrap_err().code(), ErrorCode::ValidationError);
        assert_eq!(Capability::new("  ", CapabilityType::Tool).unwrap_err().code(), ErrorCode::ValidationError);
        let mut c = cap("bash", CapabilityType::Tool)
            .with_description("shell")
            .with_permission("exec")
            .with_config("timeout", 5);
        assert!(c.enabled);
        c.disable();
        assert!(!c.enabled);
        c.enable();
        assert!(c.enabled);
        assert_eq!(c.description.as_deref(), Some("shell"));
        assert_eq!(c.permissions, ["exec"]);
        assert_eq!(c.config["timeout"], 5);
    }

    #[test]
    fn capability_serde_round_trip() {
        let c = cap("bash", CapabilityType::CodeExecution)
            .with_description("shell")
            .with_permission("exec")
            .with_config("timeout", 5)
            .with_enabled(false);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["type"], "code_execution");
        assert_eq!(json["enabled"], false);
        let back: Capability = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);

        let minimal = cap("x", CapabilityType::Prompt);
        let json = serde_json::to_value(&minimal).unwrap();
        assert_eq!(json, json!({"name": "x", "type": "prompt", "enabled": true}));
        let back: Capability = serde_json::from_value(json).unwrap();
        assert_eq!(back, minimal);
        assert!(back.enabled, "enabled defaults to true");
    }

    #[test]
    fn capability_from_json_error_codes() {
        let code = |v: serde_json::Value| Capability::from_json(&v).unwrap_err().code();
        assert_eq!(code(json!({"type": "tool"})), ErrorCode::ValidationError);
        assert_eq!(code(json!({"name": "", "type": "tool"})), ErrorCode::ValidationError);
        assert_eq!(code(json!({"name": "a"})), ErrorCode::ValidationError);
        assert_eq!(code(json!({"name": "a", "type": "x"})), ErrorCode::InvalidCapabilityType);
        assert_eq!(code(json!("nope")), ErrorCode::ValidationError);
        assert_eq!(code(json!({"name": "a", "type": "tool", "enabled": "yes"})), ErrorCode::ValidationError);
        let ok = Capability::from_json(&json!({"name": "a", "type": "resource"})).unwrap();
        assert_eq!(ok.kind, CapabilityType::Resource);
        assert!(ok.enabled);
    }

    #[test]
    fn manifest_operations() {
        assert_eq!(Manifest::new("", "1").unwrap_err().code(), ErrorCode::ValidationError);
        assert_eq!(Manifest::new("a", "").unwrap_err().code(), ErrorCode::ValidationError);

        let mut m = Manifest::new("a", "1.0").unwrap().with_description("d");
        m.add_capability(cap("bash", CapabilityType::Tool)).unwrap();
        m.add_capability(cap("fs", CapabilityType::FileAccess).with_enabled(false)).unwrap();
        assert_eq!(
            m.add_capability(cap("bash", CapabilityType::Prompt)).unwrap_err().code(),
            ErrorCode::DuplicateCapability
        );
        assert_eq!(m.capabilities.len(), 2);
        let enabled: Vec<_> = m.enabled_capabilities().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(enabled, ["bash"]);
        assert!(m.has_capability_type(CapabilityType::Tool));
        assert!(!m.has_capability_type(CapabilityType::FileAccess));

        let removed = m.remove_capability("fs").unwrap();
        assert_eq!(removed.name, "fs");
        assert_eq!(m.remove_capability("fs").unwrap_err().code(), ErrorCode::CapabilityNotFound);
        assert_eq!(m.get_capability("fs").unwrap_err().code(), ErrorCode::CapabilityNotFound);
    }

    #[test]
    fn manifest_serde_round_trip() {
        let mut m = Manifest::new("coder", "2.1.0").unwrap().with_provider("codex").with_description("writes code");
        m.add_capability(cap("bash", CapabilityType::Tool).with_permission("exec")).unwrap();
        m.config.insert("model".into(), json!("gpt"));
        m.metadata.insert("owner".into(), json!("team"));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["capabilities"][0]["type"], "tool");
        let back: Manifest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, m);
        assert_eq!(Manifest::from_json(&json).unwrap(), m);

        let minimal: Manifest = serde_json::from_value(json!({"name": "a", "version": "1"})).unwrap();
        assert!(minimal.capabilities.is_empty());
    }

    #[test]
    fn manifest_from_json_errors() {
        let err = Manifest::from_json(&json!({
            "name": "a", "version": "1",
            "capabilities": [{"name": "ok", "type": "tool"}, {"name": "bad", "type": "nope"}]
        }))
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidCapabilityType);
        let err = Manifest::from_json(&json!({"name": "a"})).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationError);
        // `from_json` does not reject duplicate names.
        let m = Manifest::from_json(&json!({
            "name": "a", "version": "1",
            "capabilities": [{"name": "x", "type": "tool"}, {"name": "x", "type": "prompt"}]
        }))
        .unwrap();
        assert_eq!(m.capabilities.len(), 2);
    }

    #[test]
    fn negotiation_matches_enabled_types_only() {
        let caps = vec![
            cap("anything", CapabilityType::Tool),
            cap("fs", CapabilityType::FileAccess).with_enabled(false),
            cap("web", CapabilityType::NetworkAccess),
        ];
        let resolver = CapabilityResolver::new(
            [CapabilityType::Tool],
            [CapabilityType::FileAccess, CapabilityType::NetworkAccess],
        );
        let n = resolver.negotiate(&caps).unwrap();
        assert_eq!(n.status, NegotiationStatus::Degraded);
        assert!(!n.is_full());
        assert_eq!(n.supported, [CapabilityType::Tool, CapabilityType::NetworkAccess]);
        assert_eq!(n.unsupported, [CapabilityType::FileAccess]);
        assert_eq!(n.warnings.len(), 1);
        assert!(n.warnings[0].contains("file_access"));

        let strict = CapabilityResolver::new([CapabilityType::FileAccess, CapabilityType::Sampling], []);
        let err = strict.negotiate(&caps).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MissingRequiredCapability);
        assert!(err.message().contains("file_access"));
        assert!(err.message().contains("sampling"));
        assert_eq!(err.details()["missing"], json!(["file_access", "sampling"]));
    }

    #[test]
    fn negotiation_edge_cases() {
        let empty = CapabilityResolver::default();
        assert!(empty.is_empty());
        let n = empty.negotiate(&[]).unwrap();
        assert_eq!(n.status, NegotiationStatus::Full);
        assert!(n.supported.is_empty() && n.unsupported.is_empty());

        // Duplicates in the request do not duplicate the result.
        let r = CapabilityResolver::new(
            [CapabilityType::Tool, CapabilityType::Tool],
            [CapabilityType::Tool, CapabilityType::Prompt, CapabilityType::Prompt],
        );
        let n = r.negotiate(&[cap("t", CapabilityType::Tool)]).unwrap();
        assert_eq!(n.supported, [CapabilityType::Tool]);
        assert_eq!(n.unsupported, [CapabilityType::Prompt]);
        assert_eq!(n.warnings.len(), 1);
        assert_eq!(serde_json::to_value(n.status).unwrap(), "degraded");
    }

    #[test]
    fn resolver_from_names() {
        let r = CapabilityResolver::from_names(["tool"], ["file_access"]).unwrap();
        assert_eq!(r.required, [CapabilityType::Tool]);
        assert_eq!(r.optional, [CapabilityType::FileAccess]);
        let err = CapabilityResolver::from_names(["tool"], ["bogus"]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidCapabilityType);
        let caps = [cap("a", CapabilityType::Tool), cap("b", CapabilityType::Tool).with_enabled(false)];
        assert_eq!(CapabilityResolver::capabilities_of_type(&caps, CapabilityType::Tool).len(), 1);
    }

    #[test]
    fn registry_operations() {
        let mut r = Registry::new();
        assert!(r.is_empty());
        let mut b = Manifest::new("b", "1").unwrap().with_provider("claude");
        b.add_capability(cap("bash", CapabilityType::Tool)).unwrap();
        let a = Manifest::new("a", "1").unwrap().with_provider("codex");
        r.register(b.clone()).unwrap();
        r.register(a.clone()).unwrap();
        assert_eq!(r.register(a).unwrap_err().code(), ErrorCode::AlreadyExists);

        let mut invalid = Manifest::new("c", "1").unwrap();
        invalid.version.clear();
        assert_eq!(r.register(invalid.clone()).unwrap_err().code(), ErrorCode::ValidationError);
        let mut invalid_cap = Manifest::new("c", "1").unwrap();
        invalid_cap.capabilities.push(Capability { name: String::new(), ..cap("x", CapabilityType::Tool) });
        assert_eq!(r.register(invalid_cap).unwrap_err().code(), ErrorCode::ValidationError);

        let names: Vec<_> = r.list().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(r.exists("a") && !r.exists("c"));
        assert_eq!(r.len(), 2);
        assert_eq!(r.filter_by_provider("claude").len(), 1);
        assert_eq!(r.filter_by_provider("Claude").len(), 0);
        assert_eq!(r.filter_by_capability(CapabilityType::Tool)[0].name, "b");
        assert!(r.filter_by_capability(CapabilityType::Prompt).is_empty());

        assert_eq!(r.update(invalid).unwrap_err().code(), ErrorCode::NotFound);
        let a2 = Manifest::new("a", "2").unwrap();
        let old = r.update(a2).unwrap();
        assert_eq!(old.version, "1");
        assert_eq!(r.get("a").unwrap().version, "2");
        let mut a3 = Manifest::new("a", "3").unwrap();
        a3.version = " ".into();
        assert_eq!(r.update(a3).unwrap_err().code(), ErrorCode::ValidationError);

        assert_eq!(r.unregister("a").unwrap().version, "2");
        assert_eq!(r.unregister("a").unwrap_err().code(), ErrorCode::NotFound);
        assert_eq!(r.get("a").unwrap_err().code(), ErrorCode::NotFound);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn registry_serde_round_trip_and_validation() {
        let mut r = Registry::new();
        r.register(Manifest::new("z", "1").unwrap()).unwrap();
        r.register(Manifest::new("a", "1").unwrap()).unwrap();
        r.metadata.insert("source".into(), json!("test"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["manifests"][0]["name"], "a");
        assert_eq!(json["metadata"]["source"], "test");
        let back: Registry = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);

        let bad = json!({"manifests": [{"name": "a", "version": ""}]});
        assert!(serde_json::from_value::<Registry>(bad).is_err());
        let dup = json!({"manifests": [{"name": "a", "version": "1"}, {"name": "a", "version": "2"}]});
        assert!(serde_json::from_value::<Registry>(dup).is_err());
    }
}
