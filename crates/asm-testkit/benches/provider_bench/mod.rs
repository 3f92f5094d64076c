//! Shared setup of the CLI provider benchmarks (claude, codex), included by each with
//! `#[path = "../../asm-testkit/benches/provider_bench/mod.rs"] mod provider_bench;`.
//!
//! Not a target of asm-testkit itself (Cargo only finds `benches/*.rs` and
//! `benches/*/main.rs`): it needs criterion and tokio's process support, which the
//! provider crates have as dev-dependencies and the test kit does not.
#![allow(unreachable_pub)]

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tokio::io::AsyncBufReadExt;

use asm_core::{Event, Run, RunInput, Session};
use asm_ports::{EventSink, ExecuteRequest, ProviderAdapter, ProviderEvent};
use asm_provider_cli::CliEnv;
use asm_testkit::fake_cli::{self, FakeScript, fixtures_dir};

/// How many bytes of lines the normalization corpus holds at least.
const TARGET_BYTES: usize = 100 * 1024 * 1024;

/// The lines of the named fixtures (`<name>.jsonl`), repeated to at least 100 MiB.
pub fn fixture_corpus(names: &[&str]) -> Vec<String> {
    let mut base = Vec::new();
    for name in names {
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

/// Benchmarks group `normalize`, function `name`: a fresh normalizer (`new`) fed every
/// line of `lines` through `push_line`, counting the events it makes.
pub fn bench_normalize<N>(
    c: &mut Criterion,
    name: &str,
    lines: &[String],
    new: impl Fn() -> N,
    push_line: impl Fn(&mut N, &str, &mut Vec<ProviderEvent>),
) {
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut group = c.benchmark_group("normalize");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut n = new();
            let mut out = Vec::with_capacity(64);
            let mut count = 0usize;
            for l in lines {
                push_line(&mut n, l, &mut out);
                count += out.len();
                out.clear();
            }
            count
        });
    });
    group.finish();
}

/// The fake CLI set up to play the fixture `fixture`: its program, the environment that
/// points it at the script, and the temporary directory holding the script (keep it alive).
pub struct FakeCliSetup {
    pub program: std::path::PathBuf,
    pub env: CliEnv,
    pub _dir: tempfile::TempDir,
}

/// Writes the script of `fixture` to a temporary directory for the fake CLI.
pub fn fake_cli_playing(fixture: &str) -> FakeCliSetup {
    let dir = tempfile::tempdir().unwrap();
    let script = FakeScript::fixture(fixture).write_to(dir.path()).unwrap();
    let program = fake_cli::path();
    let env = CliEnv::minimal().set(fake_cli::SCRIPT_ENV, script.display().to_string());
    FakeCliSetup { program, env, _dir: dir }
}

/// The multi-threaded runtime (2 workers) the spawn benchmarks run on.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Benchmarks a bare spawn of `program` with `args` and `env` (as the adapter would spawn
/// it), timed until it has written `lines` lines; then drains it and waits for it.
pub fn bench_bare_spawn<S: AsRef<OsStr>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    program: &Path,
    args: &[S],
    env: &CliEnv,
    lines: usize,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut child = tokio::process::Command::new(program)
                        .args(args)
                        .env_clear()
                        .envs(env.resolve())
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .process_group(0)
                        .spawn()
                        .unwrap();
                    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
                    for _ in 0..lines {
                        let _ = out.next_line().await.unwrap();
                    }
                    total += start.elapsed();
                    while out.next_line().await.unwrap().is_some() {}
                    child.wait().await.unwrap();
                }
                total
            })
        });
    });
}

/// Benchmarks `adapter_first_event`: from `execute` of a fresh session's run ("hello")
/// to the first event the adapter hands its sink.
pub fn bench_adapter_first_event<A: ProviderAdapter + ?Sized>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    adapter: &Arc<A>,
) {
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
                        let event = asm_core::StoredEvent::new(Event::new(e.kind, sid.clone()), 1);
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
}
