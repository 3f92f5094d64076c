//! The overhead of evaluating one event: a [`PolicyHook`]'s `on_event` beside a no-op hook's,
//! and the tracker alone (target: <= 1 us median per event). The hooks' futures are polled
//! once (`now_or_never`: neither awaits), so no executor overhead is measured.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use asm_core::{Event, EventKind, Run, RunInput, Session};
use asm_policy::{Limit, Policy, PolicyHook, PolicyTracker, PricingTable};
use asm_ports::{RunContext, RunHook};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;

#[derive(Debug)]
struct NoopHook;
impl RunHook for NoopHook {}

fn policy() -> Policy {
    Policy::builder("bench")
        .limit(Limit::MaxTotalTokens(1_000_000))
        .limit(Limit::MaxToolCalls(1_000))
        .limit(Limit::MaxCostUsd(100.0))
        .limit(Limit::MaxDurationMs(3_600_000))
        .allow(["Read", "Grep", "Bash", "Edit"])
        .deny(["WebFetch"])
        .build()
        .unwrap()
}

fn events(session: &Session) -> Vec<Event> {
    vec![
        Event::new(EventKind::MessageStreamed, session.id.clone())
            .with_data("content", "hello")
            .with_data("delta", "hello"),
        Event::new(EventKind::ToolCallStarted, session.id.clone())
            .with_data("tool_call_id", "toolu_1")
            .with_data("tool_name", "Read")
            .with_data("tool_input", serde_json::json!({"path": "src/lib.rs"})),
        Event::new(EventKind::TokenUsageUpdated, session.id.clone())
            .with_data("input_tokens", 1200)
            .with_data("output_tokens", 80)
            .with_data("cache_read_tokens", 5000)
            // Cumulative: a steady state, the totals do not grow past the limits while measuring.
            .with_data("usage_mode", "cumulative"),
    ]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let session = Session::new("bench").unwrap();
    let run = Run::new(session.id.clone(), RunInput::user("x"));
    let ctx = RunContext::new(session.clone(), run, "claude");
    let events = events(&session);

    let noop = NoopHook;
    let hook = PolicyHook::new(policy());
    rt.block_on(hook.on_start(&ctx)).unwrap();
    let _guard = rt.enter();

    let mut group = c.benchmark_group("evaluate_one_event");
    group.bench_function("noop_hook", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % events.len();
            noop.on_event(&ctx, black_box(&events[i])).now_or_never().unwrap().unwrap()
        });
    });
    group.bench_function("policy_hook", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % events.len();
            hook.on_event(&ctx, black_box(&events[i])).now_or_never().unwrap().unwrap()
        });
    });
    group.bench_function("tracker_observe", |b| {
        let mut tracker =
            PolicyTracker::new(std::sync::Arc::new(policy()), "claude", std::sync::Arc::new(PricingTable::builtin()));
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % events.len();
            tracker.observe(black_box(&events[i]), 10)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
