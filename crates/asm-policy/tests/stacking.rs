//! Stacking properties (proptest), the map form, merge, preflight and compile edge cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::json;

use asm_core::ErrorCode;
use asm_policy::{CliTarget, Limit, LimitKind, Policy, PolicyError, RuleKind, ToolRule, ViolationAction, compile};

fn action() -> impl Strategy<Value = ViolationAction> {
    prop::sample::select(ViolationAction::ALL.to_vec())
}

fn limit() -> impl Strategy<Value = Limit> {
    prop_oneof![
        (1u64..1000).prop_map(Limit::MaxTotalTokens),
        (0u64..1000).prop_map(Limit::MaxDurationMs),
        (1u64..1000).prop_map(Limit::MaxToolCalls),
        (0.0f64..10.0).prop_map(Limit::MaxCostUsd),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::sample::select(vec!["a", "b", "c"]),
        prop::collection::vec(limit(), 0..4),
        prop::collection::vec((any::<bool>(), prop::collection::vec("[A-C]", 0..3)), 0..3),
        action(),
        prop::collection::btree_map("[xy]", 0u8..3, 0..2),
    )
        .prop_map(|(name, limits, rules, action, metadata)| {
            let mut b = Policy::builder(name).on_violation(action);
            let mut kinds = Vec::new();
            for l in limits {
                if !kinds.contains(&l.kind()) {
                    kinds.push(l.kind());
                    b = b.limit(l);
                }
            }
            for (allow, tools) in rules {
                b = b.rule(ToolRule::new(if allow { RuleKind::Allow } else { RuleKind::Deny }, tools));
            }
            for (k, v) in metadata {
                b = b.metadata(k, v);
            }
            b.build().unwrap()
        })
}

proptest! {
    #[test]
    fn the_strictest_action_wins_and_cancel_is_sticky(policies in prop::collection::vec(policy(), 1..6)) {
        let stacked = Policy::stack(policies.clone());
        let strictest = policies.iter().map(Policy::on_violation).max().unwrap();
        prop_assert_eq!(stacked.on_violation(), strictest);
        if policies.iter().any(|p| p.on_violation() == ViolationAction::Cancel) {
            prop_assert_eq!(stacked.on_violation(), ViolationAction::Cancel);
        }
    }

    #[test]
    fn limits_are_the_last_given_per_kind(policies in prop::collection::vec(policy(), 1..6)) {
        let stacked = Policy::stack(policies.clone());
        for kind in LimitKind::ALL {
            let expected = policies.iter().rev().find_map(|p| p.limit(*kind));
            prop_assert_eq!(stacked.limit(*kind), expected);
        }
        let mut kinds: Vec<_> = stacked.limits().iter().map(Limit::kind).collect();
        let n = kinds.len();
        kinds.dedup();
        prop_assert_eq!(kinds.len(), n, "one limit per kind");
    }

    #[test]
    fn rules_are_concatenated_in_order(policies in prop::collection::vec(policy(), 1..6)) {
        let stacked = Policy::stack(policies.clone());
        let expected: Vec<ToolRule> = policies.iter().flat_map(|p| p.tool_rules().to_vec()).collect();
        prop_assert_eq!(stacked.tool_rules(), &expected[..]);
    }

    #[test]
    fn metadata_later_keys_win_and_stacking_folds_left(policies in prop::collection::vec(policy(), 2..6)) {
        let stacked = Policy::stack(policies.clone());
        for p in &policies {
            for key in p.metadata().keys() {
                let last = policies.iter().rev().find_map(|q| q.metadata().get(key)).unwrap();
                prop_assert_eq!(&stacked.metadata()[key], last);
            }
        }
        let (init, last) = policies.split_at(policies.len() - 1);
        let folded = Policy::stack([Policy::stack(init.to_vec()), last[0].clone()]);
        prop_assert_eq!(stacked, folded);
    }

    #[test]
    fn a_single_policy_stacks_to_itself_and_the_map_form_round_trips(p in policy()) {
        prop_assert_eq!(&Policy::stack([p.clone()]), &p);
        prop_assert_eq!(Policy::from_json(&p.to_json()).unwrap(), p);
    }
}

#[test]
fn stacking_nothing_is_the_default_policy_and_equal_names_are_not_repeated() {
    let p = Policy::stack([]);
    assert_eq!((p.name(), p.on_violation(), p.limits().len()), ("default", ViolationAction::Cancel, 0));
    let a = Policy::builder("same").build().unwrap();
    assert_eq!(Policy::stack([a.clone(), a]).name(), "same");
}

#[test]
fn invalid_policies_are_typed_validation_errors() {
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"limits": {"max_tokens": 5}}), "limits"),
        (json!({"limits": {"max_total_tokens": -1}}), "limits"),
        (json!({"limits": {"max_cost_usd": "cheap"}}), "limits"),
        (json!({"limits": [["max_tool_calls", 1], ["max_tool_calls", 2]]}), "limits"),
        (json!({"tool_rules": {"allow": ["Bash"]}}), "tool_rules"),
        (json!({"tool_rules": [{"permit": ["Bash"]}]}), "tool_rules"),
        (json!({"tool_rules": [{"allow": "Bash"}]}), "tool_rules"),
        (json!({"on_violation": "explode"}), "on_violation"),
        (json!({"metadata": [1]}), "metadata"),
        (json!({"budget": 1}), "budget"),
        (json!([]), "policy"),
    ];
    for (value, field) in cases {
        let error: asm_core::Error = Policy::from_json(&value).unwrap_err().into();
        assert_eq!(error.code(), ErrorCode::ValidationError, "{value}");
        assert_eq!(error.details()["field"], field, "{value}");
    }
    let negative = Policy::builder("p").limit(Limit::MaxCostUsd(-0.5)).build().unwrap_err();
    assert!(matches!(negative, PolicyError::InvalidLimit { .. }), "{negative}");
    assert!(matches!(Policy::builder("p").on_violation_str("nope").build(), Err(PolicyError::InvalidAction(_))));
    assert!(matches!(Policy::builder(" ").build(), Err(PolicyError::MissingName)));
}

#[test]
fn tool_names_are_filtered_and_deduplicated_exactly() {
    let p = Policy::from_json(&json!({"tool_rules": [{"allow": ["", 3, "Bash", "bash", "Bash"]}]})).unwrap();
    assert_eq!(p.tool_rules()[0].tools(), ["Bash", "bash"]);
    let empty = Policy::from_json(&json!({"tool_rules": [["allow", ["", 3]]]})).unwrap();
    assert_eq!(empty.preflight().unwrap_err().details()["check"], "empty_allow_list");
}

#[test]
fn merge_replaces_whole_fields_and_refuses_invalid_overrides() {
    let base = Policy::builder("base").limit(Limit::MaxToolCalls(3)).deny(["Bash"]).build().unwrap();
    let merged = base.merge(json!({"limits": {"max_total_tokens": 10}}).as_object().unwrap()).unwrap();
    assert_eq!(merged.limit(LimitKind::MaxToolCalls), None, "the whole limits field is replaced");
    assert_eq!(merged.tool_rules(), base.tool_rules());
    let error = base.merge(json!({"limits": {"max_total_tokens": "x"}}).as_object().unwrap()).unwrap_err();
    assert!(matches!(error, PolicyError::InvalidLimit { .. }));
}

#[test]
fn preflight_checks_in_order_and_allows_zero_duration_and_cost() {
    let p = Policy::builder("p").limit(Limit::MaxDurationMs(0)).limit(Limit::MaxCostUsd(0.0)).build().unwrap();
    p.preflight().unwrap();
    let p = Policy::builder("p").allow(Vec::<String>::new()).limit(Limit::MaxToolCalls(0)).build().unwrap();
    assert_eq!(p.preflight().unwrap_err().details()["check"], "empty_allow_list", "first failure wins");
    let p = Policy::builder("p").allow(["A", "B"]).allow(["B"]).deny(["B", "A"]).build().unwrap();
    let error = p.preflight().unwrap_err();
    assert_eq!(error.code(), ErrorCode::PolicyViolation);
    assert_eq!(error.details()["tools"], json!(["A", "B"]));
    assert_eq!(error.details()["policy"], "p");
}

#[test]
fn compile_intersects_allow_lists_and_documents_what_is_enforced_by_cancel() {
    let p = Policy::builder("p")
        .allow(["Read", "Bash", "Grep"])
        .allow(["Grep", "Read"])
        .deny(["WebFetch"])
        .limit(Limit::MaxTotalTokens(10))
        .build()
        .unwrap();
    let claude = compile(&p, CliTarget::Claude);
    assert_eq!(claude.options["allowed_tools"], json!(["Read", "Grep"]));
    assert_eq!(claude.options["disallowed_tools"], json!(["WebFetch"]));
    assert!(!claude.options.contains_key("max_turns"));
    assert!(claude.by_cancel.contains(&"max_total_tokens".to_owned()));
    let amp = compile(&p, CliTarget::Amp);
    assert!(amp.options.is_empty() && amp.prevented.is_empty());
    let codex = compile(&Policy::builder("p").deny(["apply_patch"]).build().unwrap(), CliTarget::Codex);
    assert_eq!(codex.options["permission_mode"], "plan");
    let codex_bash = compile(&Policy::builder("p").deny(["bash"]).build().unwrap(), CliTarget::Codex);
    assert!(codex_bash.options.is_empty(), "codex exec cannot turn off commands per run");
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Policy>();
    check::<asm_policy::PolicyHook>();
    check::<asm_policy::PolicyTracker>();
    check::<asm_policy::PricingTable>();
    check::<asm_policy::Violation>();
    check::<asm_policy::CompiledPolicy>();
    check::<PolicyError>();
}
