//! Every row of the circuit breaker's state table, probe counting included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use asm_routing::{BreakerConfig, BreakerState, CircuitBreaker};
use proptest::prelude::*;

fn breaker(threshold: u32, cooldown_ms: u64, probes: u32) -> CircuitBreaker {
    CircuitBreaker::new(
        BreakerConfig::default()
            .failure_threshold(threshold)
            .cooldown(Duration::from_millis(cooldown_ms))
            .half_open_max_probes(probes),
    )
}

fn opened(threshold: u32, at: u64) -> CircuitBreaker {
    let mut b = breaker(threshold, 1_000, 1);
    for _ in 0..threshold {
        b.record_failure(at);
    }
    assert_eq!(b.state(), BreakerState::Open);
    b
}

fn half_open(probes: u32) -> CircuitBreaker {
    let mut b = breaker(1, 1_000, probes);
    b.record_failure(0);
    b.check_state(1_000);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b
}

#[test]
fn closed_failure_below_threshold_stays_closed() {
    let mut b = breaker(3, 1_000, 1);
    b.record_failure(0);
    b.record_failure(1);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.failure_count(), 2);
    assert!(b.allowed(2));
}

#[test]
fn closed_failure_reaching_threshold_opens() {
    let mut b = breaker(3, 1_000, 1);
    for at in 0..3 {
        b.record_failure(at);
    }
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.opened_at_ms(), Some(2));
    assert!(!b.allowed(500));
}

#[test]
fn closed_success_resets_the_count() {
    let mut b = breaker(3, 1_000, 1);
    b.record_failure(0);
    b.record_failure(1);
    b.record_success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.failure_count(), 0);
    b.record_failure(2);
    b.record_failure(3);
    assert_eq!(b.state(), BreakerState::Closed, "the count restarted after the success");
}

#[test]
fn open_refuses_until_the_cooldown_then_check_state_half_opens() {
    let mut b = opened(2, 100);
    assert!(!b.allowed(1_099));
    b.check_state(1_099);
    assert_eq!(b.state(), BreakerState::Open);
    assert!(!b.try_acquire(1_099));
    assert!(b.allowed(1_100));
    b.check_state(1_100);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.probes_in_flight(), 0);
}

#[test]
fn open_failure_restarts_the_timer() {
    let mut b = opened(1, 0);
    b.record_failure(900);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.opened_at_ms(), Some(900));
    assert!(!b.allowed(1_000), "the cooldown counts from the latest failure");
    assert!(b.allowed(1_900));
}

#[test]
fn open_success_closes() {
    let mut b = opened(1, 0);
    b.record_success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.failure_count(), 0);
    assert_eq!(b.opened_at_ms(), None);
}

#[test]
fn half_open_success_closes() {
    let mut b = half_open(1);
    assert!(b.try_acquire(1_000));
    b.record_success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.try_acquire(1_001));
}

#[test]
fn half_open_failure_reopens_with_a_new_timer() {
    let mut b = half_open(1);
    assert!(b.try_acquire(1_000));
    b.record_failure(1_500);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.opened_at_ms(), Some(1_500));
    assert_eq!(b.probes_in_flight(), 0);
    assert!(!b.allowed(2_000));
    assert!(b.allowed(2_500));
}

#[test]
fn half_open_counts_probes_and_refuses_beyond_the_maximum() {
    let mut b = half_open(2);
    assert!(b.try_acquire(1_000));
    assert!(b.try_acquire(1_000));
    assert_eq!(b.probes_in_flight(), 2);
    assert!(!b.allowed(1_000));
    assert!(!b.try_acquire(1_000), "a third concurrent probe must be refused");
    b.release();
    assert!(b.try_acquire(1_001), "a released probe frees its slot");
}

#[test]
fn try_acquire_on_an_expired_open_breaker_is_the_first_probe() {
    let mut b = opened(1, 0);
    assert!(b.try_acquire(1_000));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.probes_in_flight(), 1);
    assert!(!b.try_acquire(1_000));
}

#[test]
fn invalid_settings_fall_back_to_one() {
    let b = breaker(0, 0, 0);
    assert_eq!(b.config().failure_threshold, 1);
    assert_eq!(b.config().half_open_max_probes, 1);
}

#[test]
fn status_is_serialisable() {
    let mut b = opened(1, 0);
    let status = b.status(400);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["state"], "open");
    assert_eq!(json["opened_ms_ago"], 400);
    assert_eq!(json["allowed"], false);
    b.check_state(1_000);
    assert_eq!(serde_json::to_value(b.status(1_000)).unwrap()["state"], "half_open");
}

proptest! {
    /// Whatever happens, a half-open breaker never has more probes in flight than allowed, and
    /// a closed breaker never has a failure count at or above the threshold.
    #[test]
    fn probes_never_exceed_the_maximum(ops in proptest::collection::vec(0u8..4, 0..200), probes in 1u32..4, threshold in 1u32..4) {
        let mut b = breaker(threshold, 10, probes);
        let mut now = 0;
        for op in ops {
            now += 3;
            match op {
                0 => { b.try_acquire(now); }
                1 => b.record_failure(now),
                2 => b.record_success(),
                _ => b.release(),
            }
            prop_assert!(b.probes_in_flight() <= probes);
            if b.state() == BreakerState::Closed {
                prop_assert!(b.failure_count() < threshold);
            }
        }
    }
}
