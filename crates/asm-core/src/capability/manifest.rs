//! [`Manifest`]s of agents and providers, and the [`Registry`] that holds them by name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, JsonMap, Result};

use super::{Capability, CapabilityResolver, CapabilityType};

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

    crate::builder_setters! {
        /// Sets the description.
        fn with_description(description: impl Into<String>) { description = Some(description.into()) }
        /// Sets the provider.
        fn with_provider(provider: impl Into<String>) { provider = Some(provider.into()) }
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
