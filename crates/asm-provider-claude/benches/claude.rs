//! Benchmarks: stream-json normalization throughput (target >= 100 MB/s) and the adapter's
//! spawn-to-first-event overhead over a bare spawn of the same fake CLI (target <= 2 ms).
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};

use asm_provider_claude::{ClaudeAdapter, ClaudeNormalizer};

#[path = "../../asm-testkit/benches/provider_bench/mod.rs"]
mod provider_bench;

fn normalize(c: &mut Criterion) {
    let lines = provider_bench::fixture_corpus(&[
        "claude_tool_use_partial",
        "claude_tool_use",
        "claude_text_partial",
        "claude_plan_mode",
    ]);
    provider_bench::bench_normalize(c, "claude_stream_json_100MB", &lines, ClaudeNormalizer::new, |n, l, out| {
        n.push_line(l, out)
    });
}

fn spawn(c: &mut Criterion) {
    let rt = provider_bench::bench_runtime();
    let cli = provider_bench::fake_cli_playing("claude_text");
    let adapter = Arc::new(ClaudeAdapter::builder().cli_path(&cli.program).env(cli.env.clone()).build());
    let mut group = c.benchmark_group("spawn_to_first_event");
    group.sample_size(50);
    let args = ["-p", "hello", "--output-format", "stream-json", "--verbose"];
    provider_bench::bench_bare_spawn(&mut group, &rt, "bare_spawn_first_line", &cli.program, &args, &cli.env, 1);
    provider_bench::bench_adapter_first_event(&mut group, &rt, &adapter);
    group.finish();
}

criterion_group!(benches, normalize, spawn);
criterion_main!(benches);
