//! Snapshot cost on a 10,000-file repository, each next to a raw baseline run in the same bench.
//!
//! - `git_snapshot/workspace`: `Workspace::snapshot` with the git backend on a dirty tree (a few
//!   modified and untracked files), against `git_snapshot/add_write_tree`: `git add -A` +
//!   `git write-tree` on a warm alternate index (`GIT_INDEX_FILE`), run directly. Target: within
//!   1.5x.
//! - `hash_snapshot/workspace`: a full hash snapshot of the same tree, against
//!   `hash_snapshot/read_hash_loop`: reading and sha256-hashing the same files in one loop over a
//!   precomputed list. Target: within 1.5x. `hash_snapshot/incremental` shows a later snapshot
//!   that rereads only changed files.
//!
//! Run: `cargo bench -p asm-workspace --bench snapshot -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use asm_workspace::{Strategy, Workspace, WorkspaceOptions};
use criterion::{Criterion, criterion_group, criterion_main};
use sha2::Digest;

const DIRS: usize = 100;
const FILES_PER_DIR: usize = 100;

fn git(dir: &Path, args: &[&str], index: Option<&Path>) {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir).args(args).env("GIT_AUTHOR_NAME", "b").env("GIT_AUTHOR_EMAIL", "b@b");
    command.env("GIT_COMMITTER_NAME", "b").env("GIT_COMMITTER_EMAIL", "b@b");
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    let out = command.output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A committed 10,000-file repository (timestamps an hour old, so no index entry is "racy"),
/// then made dirty: 10 files modified, 10 untracked files added.
fn fixture() -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("repo");
    let old = SystemTime::now() - Duration::from_secs(3600);
    let mut files = Vec::new();
    for d in 0..DIRS {
        let sub = root.join(format!("dir{d:03}"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        for f in 0..FILES_PER_DIR {
            let path = sub.join(format!("file{f:03}.txt"));
            let body = format!("// file {d}/{f}\n{}\n", "some source text ".repeat(12));
            std::fs::write(&path, body).expect("write");
            std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(old)).expect("mtime");
            files.push(path);
        }
    }
    git(&root, &["init", "-q"], None);
    git(&root, &["add", "-A"], None);
    git(&root, &["commit", "-q", "-m", "fixture"], None);
    for (i, path) in files.iter().take(10).enumerate() {
        std::fs::write(path, format!("modified {i}\n")).expect("modify");
    }
    for i in 0..10 {
        let path = root.join(format!("untracked{i}.txt"));
        std::fs::write(&path, "new\n").expect("untracked");
        files.push(path);
    }
    (dir, root, files)
}

/// Median of `a / b` over `rounds` interleaved runs (A, B, A, B, ...): on a shared machine the
/// load changes between criterion's groups, interleaving compares like with like.
fn paired_ratio(rounds: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> f64 {
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            a();
            let ta = start.elapsed().as_secs_f64();
            let start = Instant::now();
            b();
            ta / start.elapsed().as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (_dir, root, files) = fixture();

    let mut group = c.benchmark_group("git_snapshot");
    group.sample_size(10);
    let workspace =
        runtime.block_on(Workspace::open(&root, WorkspaceOptions::new().strategy(Strategy::Git))).expect("open");
    group.bench_function("workspace", |b| {
        b.iter(|| black_box(runtime.block_on(workspace.snapshot(None)).expect("snapshot")));
    });
    let index_dir = tempfile::tempdir().expect("index dir");
    let index = index_dir.path().join("index");
    git(&root, &["read-tree", "HEAD"], Some(&index));
    git(&root, &["add", "-A"], Some(&index)); // warm: stat data of every file
    let baseline = || {
        git(&root, &["add", "-A"], Some(&index));
        git(&root, &["write-tree"], Some(&index));
    };
    group.bench_function("add_write_tree", |b| b.iter(baseline));
    group.finish();
    let ratio =
        paired_ratio(15, || drop(black_box(runtime.block_on(workspace.snapshot(None)).expect("snapshot"))), baseline);
    eprintln!("git_snapshot paired median ratio workspace / add_write_tree: {ratio:.2}x (target <= 1.5x)");

    let mut group = c.benchmark_group("hash_snapshot");
    group.sample_size(10);
    let hashed =
        runtime.block_on(Workspace::open(&root, WorkspaceOptions::new().strategy(Strategy::Hash))).expect("open");
    group.bench_function("workspace", |b| {
        b.iter(|| black_box(runtime.block_on(hashed.snapshot(None)).expect("snapshot")));
    });
    let read_hash_loop = || {
        let mut digests = Vec::with_capacity(files.len());
        for path in &files {
            let bytes = std::fs::read(path).expect("read");
            digests.push(sha2::Sha256::digest(&bytes));
        }
        black_box(digests)
    };
    group.bench_function("read_hash_loop", |b| b.iter(read_hash_loop));
    let ratio = paired_ratio(
        15,
        || drop(black_box(runtime.block_on(hashed.snapshot(None)).expect("snapshot"))),
        || drop(read_hash_loop()),
    );
    eprintln!("hash_snapshot paired median ratio workspace / read_hash_loop: {ratio:.2}x (target <= 1.5x)");
    let base = runtime.block_on(hashed.snapshot(None)).expect("snapshot");
    group.bench_function("incremental", |b| {
        b.iter(|| black_box(runtime.block_on(hashed.snapshot_since(None, &base)).expect("snapshot")));
    });
    group.finish();
}

criterion_group!(snapshot, benches);
criterion_main!(snapshot);
