//! Benchmarks: `codex exec --json` normalization throughput (target >= 100 MB/s) and the
//! adapter's spawn-to-first-event overhead over a bare spawn of the same fake CLI (target
//! <= 2 ms). Codex's first event comes from its third line (`thread.started` and
//! `turn.started` produce none), so the bare spawn is timed to its third line too.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::AsyncBufReadExt;

use asm_core::{Event, Run, RunInput, Session};
use asm_ports::{EventSink, ExecuteRequest, ProviderAdapter, ProviderEvent};
use asm_provider_cli::CliEnv;
use asm_provider_codex::{CodexAdapter, CodexNormalizer, CodexOptions, build_argv};
use asm_testkit::fake_cli::{self, FakeScript, fixtures_dir};

const TARGET_BYTES: usize = 100 * 1024 * 1024;

fn corpus() -> Vec<String> {
    let mut base = Vec::new();
    for name in ["codex_tool_call", "codex_text", "codex_tool_bypass", "codex_http500"] {
        let text = std::fs::read_to_string(fixtures_dir().join(format!("{name}.jsonl"))).unwrap();
        base.extend(text.lines().map(str::to_owned));
    }
    let mut lines = Vec::new();
    let mut bytes = 0;
    while bytes < TARGET_BYTES {
        for l in &base {
            bytes += l.len() + 1;
            lines.push(l.clone());
        }
    }
    lines
}

fn normalize(c: &mut Criterion) {
    let lines = corpus();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut group = c.benchmark_group("normalize");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("codex_jsonl_100MB", |b| {
        b.iter(|| {
            let mut n = CodexNormalizer::new();
            let mut out = Vec::with_capacity(64);
            let mut count = 0usize;
            for l in &lines {
                n.push_line(l, &mut out);
                count += out.len();
                out.clear();
            }
            count
        });
    });
    group.finish();
}

fn spawn(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = FakeScript::fixture("codex_text").write_to(dir.path()).unwrap();
    let program = fake_cli::path();
    let env = CliEnv::minimal().set(fake_cli::SCRIPT_ENV, script.display().to_string());
    let adapter = Arc::new(CodexAdapter::builder().cli_path(&program).env(env.clone()).build());
    let session = Session::new("bench").unwrap();
    let run = Run::new(session.id.clone(), RunInput::user("hello"));
    let argv = build_argv(&CodexOptions::default(), &ExecuteRequest::new(session, run));
    let mut group = c.benchmark_group("spawn_to_first_event");
    group.sample_size(50);
    group.bench_function("bare_spawn_third_line", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut child = tokio::process::Command::new(&program)
                        .args(&argv)
                        .env_clear()
                        .envs(env.resolve())
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .process_group(0)
                        .spawn()
                        .unwrap();
                    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
                    for _ in 0..3 {
                        let _ = lines.next_line().await.unwrap();
                    }
                    total += start.elapsed();
                    while lines.next_line().await.unwrap().is_some() {}
                    child.wait().await.unwrap();
                }
                total
            })
        });
    });
    group.bench_function("adapter_first_event", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let session = Session::new("bench").unwrap();
                    let run = Run::new(session.id.clone(), RunInput::user("hello"));
                    let (tx, rx) = tokio::sync::oneshot::channel::<Instant>();
                    let tx = std::sync::Mutex::new(Some(tx));
                    let sid = session.id.clone();
                    let sink = EventSink::new(move |e: ProviderEvent| {
                        if let Some(tx) = tx.lock().unwrap().take() {
                            let _ = tx.send(Instant::now());
                        }
                        let event = Event::new(e.kind, sid.clone());
                        Box::pin(async move { Ok(event) })
                    });
                    let start = Instant::now();
                    adapter.execute(ExecuteRequest::new(session, run), sink).await.unwrap();
                    total += rx.await.unwrap() - start;
                }
                total
            })
        });
    });
    group.finish();
}

criterion_group!(benches, normalize, spawn);
criterion_main!(benches);
