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

mod manifest;
mod negotiation;
mod types;

pub use manifest::{Manifest, Registry};
pub use negotiation::{CapabilityResolver, Negotiation, NegotiationStatus};
pub use types::{Capability, CapabilityType};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ErrorCode;

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
