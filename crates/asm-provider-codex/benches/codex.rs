//! Benchmarks: `codex exec --json` normalization throughput (target >= 100 MB/s) and the
//! adapter's spawn-to-first-event overhead over a bare spawn of the same fake CLI (target
//! <= 2 ms). Codex's first event comes from its third line (`thread.started` and
//! `turn.started` produce none), so the bare spawn is timed to its third line too.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};

use asm_core::{Run, RunInput, Session};
use asm_ports::ExecuteRequest;
use asm_provider_codex::{CodexAdapter, CodexNormalizer, CodexOptions, build_argv};

#[path = "../../asm-testkit/benches/provider_bench/mod.rs"]
mod provider_bench;

fn normalize(c: &mut Criterion) {
    let lines =
        provider_bench::fixture_corpus(&["codex_tool_call", "codex_text", "codex_tool_bypass", "codex_http500"]);
    provider_bench::bench_normalize(c, "codex_jsonl_100MB", &lines, CodexNormalizer::new, |n, l, out| {
        n.push_line(l, out)
    });
}

fn spawn(c: &mut Criterion) {
    let rt = provider_bench::bench_runtime();
    let cli = provider_bench::fake_cli_playing("codex_text");
    let adapter = Arc::new(CodexAdapter::builder().cli_path(&cli.program).env(cli.env.clone()).build());
    let session = Session::new("bench").unwrap();
    let run = Run::new(session.id.clone(), RunInput::user("hello"));
    let argv = build_argv(&CodexOptions::default(), &ExecuteRequest::new(session, run));
    let mut group = c.benchmark_group("spawn_to_first_event");
    group.sample_size(50);
    provider_bench::bench_bare_spawn(&mut group, &rt, "bare_spawn_third_line", &cli.program, &argv, &cli.env, 3);
    provider_bench::bench_adapter_first_event(&mut group, &rt, &adapter);
    group.finish();
}

criterion_group!(benches, normalize, spawn);
criterion_main!(benches);
