//! Candidate ordering for both strategies, merging, and option parsing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use asm_core::{Capability, CapabilityType, ErrorCode};
use asm_routing::{CapabilityRequirement, RoutingError, RoutingOptions, RoutingPolicy, Strategy, matches_all};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn prefer_puts_the_prefer_list_first_then_registration_order() {
    let policy = RoutingPolicy::new().prefer(["c", "missing", "a"]).exclude(["d"]);
    let order = policy.order(&ids(&["a", "b", "c", "d", "e"]), |_| 0, &mut StdRng::seed_from_u64(1));
    assert_eq!(order, ids(&["c", "a", "b", "e"]));
}

#[test]
fn weighted_is_reproducible_with_a_seed_and_follows_the_weights() {
    let policy = RoutingPolicy::new().strategy(Strategy::Weighted).weight("a", 9.0).weight("b", 1.0);
    let candidates = ids(&["a", "b"]);
    let first = policy.order(&candidates, |_| 0, &mut StdRng::seed_from_u64(7));
    let again = policy.order(&candidates, |_| 0, &mut StdRng::seed_from_u64(7));
    assert_eq!(first, again, "the same seed gives the same order");

    let mut rng = StdRng::seed_from_u64(42);
    let a_first = (0..2_000).filter(|_| policy.order(&candidates, |_| 0, &mut rng)[0] == "a").count();
    // Expected 90 %: 1,800 of 2,000; the bound is generous but fails for an unweighted order.
    assert!((1_700..=1_900).contains(&a_first), "a came first {a_first} times of 2000");
}

#[test]
fn weighted_penalises_failures_and_puts_non_positive_scores_last_by_score_then_prefer_rank() {
    // scores: a 1.0 - 0.5*2 = 0, b 1.0, c 0.5 - 0.5 = 0, d weight 0 -> 0, e 1.0 - 0.5*4 = -1
    let policy = RoutingPolicy::new().strategy(Strategy::Weighted).prefer(["d", "c"]).weight("c", 0.5).weight("d", 0.0);
    let failures = |id: &str| match id {
        "a" => 2,
        "c" => 1,
        "e" => 4,
        _ => 0,
    };
    let order = policy.order(&ids(&["a", "b", "c", "d", "e"]), failures, &mut StdRng::seed_from_u64(3));
    assert_eq!(order, ids(&["b", "d", "c", "a", "e"]));
}

#[test]
fn merge_replaces_only_what_the_run_sets() {
    let base = RoutingPolicy::new().prefer(["a"]).max_attempts(5).weight("a", 2.0);
    let run = RoutingOptions::from_json(&json!({"exclude": ["b"], "policy": {"max_attempts": 1}}), "s").unwrap();
    let merged = base.merged(&run.overrides);
    assert_eq!(merged.prefer, ids(&["a"]));
    assert_eq!(merged.exclude, ids(&["b"]));
    assert_eq!(merged.max_attempts, 1);
    assert_eq!(merged.weight_of("a"), 2.0);
    assert_eq!(merged.attempt_limit(3), 1);
}

#[test]
fn bad_options_are_typed_errors() {
    let err = RoutingOptions::from_json(&json!({"strategy": "round_robin"}), "s").unwrap_err();
    assert!(matches!(err, RoutingError::UnknownStrategy(ref s) if s == "round_robin"));
    assert_eq!(asm_core::Error::from(err).code(), ErrorCode::ValidationError);
    for bad in [
        json!({"max_attempts": 0}),
        json!({"max_attempts": "3"}),
        json!({"weights": {"a": -1}}),
        json!({"prefer": "a"}),
        json!({"prefer": [1]}),
        json!({"required_capabilities": [{"name": "x"}]}),
        json!({"required_capabilities": ["teleport"]}),
        json!({"sticky": "yes"}),
        json!({"preferr": ["a"]}),
        json!("prefer"),
    ] {
        let err = RoutingOptions::from_json(&bad, "s").unwrap_err();
        assert!(matches!(err, RoutingError::InvalidOption { .. }), "{bad} gave {err:?}");
    }
}

#[test]
fn sticky_true_uses_the_session_id() {
    let options = RoutingOptions::from_json(&json!({"sticky": true}), "session-1").unwrap();
    assert_eq!(options.sticky_session_id.as_deref(), Some("session-1"));
}

#[test]
fn capability_requirements_match_type_or_type_and_exact_name() {
    let mut caps = Capability::list(&[("bash", CapabilityType::Tool), ("web", CapabilityType::NetworkAccess)]);
    let parse = |v| CapabilityRequirement::from_json(&v).unwrap();
    assert!(matches_all(&caps, &[]));
    assert!(matches_all(&caps, &[parse(json!("tool")), parse(json!({"type": "network_access", "name": null}))]));
    assert!(matches_all(&caps, &[parse(json!({"type": "tool", "name": "bash"}))]));
    assert!(!matches_all(&caps, &[parse(json!({"type": "tool", "name": "Bash"}))]));
    assert!(!matches_all(&caps, &[parse(json!("code_execution"))]));
    caps[0].disable();
    assert!(!matches_all(&caps, &[parse(json!("tool"))]), "disabled capabilities do not count");
}

proptest! {
    /// Both strategies return a permutation of the non-excluded candidates; `prefer` keeps the
    /// prefer list's order at the front.
    #[test]
    fn ordering_is_a_permutation_of_the_allowed_candidates(
        n in 0usize..8,
        prefer in proptest::collection::vec(0usize..10, 0..5),
        exclude in proptest::collection::vec(0usize..10, 0..3),
        weights in proptest::collection::vec(0.0f64..3.0, 10),
        failures in proptest::collection::vec(0u32..5, 10),
        seed in any::<u64>(),
        weighted in any::<bool>(),
    ) {
        let name = |i: usize| format!("p{i}");
        let candidates: Vec<String> = (0..n).map(name).collect();
        let mut policy = RoutingPolicy::new()
            .prefer(prefer.iter().map(|i| name(*i)))
            .exclude(exclude.iter().map(|i| name(*i)))
            .strategy(if weighted { Strategy::Weighted } else { Strategy::Prefer });
        for (i, w) in weights.iter().enumerate() {
            policy = policy.weight(name(i), *w);
        }
        let fail = |id: &str| failures[id[1..].parse::<usize>().unwrap()];
        let order = policy.order(&candidates, fail, &mut StdRng::seed_from_u64(seed));
        let mut sorted = order.clone();
        sorted.sort();
        let mut expected: Vec<String> = candidates.iter().filter(|c| !policy.exclude.contains(c)).cloned().collect();
        expected.sort();
        prop_assert_eq!(sorted, expected);
        if !weighted {
            let preferred: Vec<String> = policy.prefer.iter().filter(|p| order.contains(p)).cloned().collect();
            prop_assert_eq!(&order[..preferred.len()], &preferred[..]);
        }
    }
}
