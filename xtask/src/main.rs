//! Build automation: `cargo xtask <command>`.
//!
//! - `ci`: everything CI runs: fmt check, clippy (`-D warnings`), the test suite, every facade
//!   feature compiled alone, `cargo deny` (installed on first use) and `integration`.
//! - `features`: `cargo check` of the facade with each feature alone.
//! - `examples`: runs every example of the facade (all offline).
//! - `deny`: installs cargo-deny if missing and checks licenses, bans and sources.
//! - `bench`: runs the benchmarks (`cargo bench`) of the crates that have them.
//! - `integration`: installs the pinned real provider CLIs with npm into `target/npm-cli`
//!   (once per version), then runs the adapters end to end against them and the project's fake
//!   model servers on 127.0.0.1 (`asm-integration`'s `asm-real-cli`). Needs `npm` and the npm
//!   registry for the first install only; `ASM_NPM_CLI_DIR` moves the install directory and
//!   `--only NAME` runs the cases whose name contains NAME. It builds the `asm` binary first
//!   (`cargo build -p asm-cli --bin asm`) and passes `<target dir>/debug/asm` (the target dir is
//!   `CARGO_TARGET_DIR` or `target`) as `--asm` for the `cli/*` cases.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Every facade feature; each must compile alone.
#[rustfmt::skip]
const FACADE_FEATURES: &[&str] = &[
    "store-memory",
    "store-redb",
    "store-sled",
    "store-postgres",
    "provider-claude",
    "provider-codex",
    "provider-amp",
    "provider-shell",
    "policy",
    "provider-acp",
    "runtime",
    "redaction",
    "routing",
    "testkit",
    "http",
    "workspace",
    "full",
];
/// The facade's examples, each with the features it needs; every one runs offline in CI.
#[rustfmt::skip]
const EXAMPLES: &[(&str, &str)] = &[
    ("quickstart", "store-memory,runtime"),
    ("cursor_pagination", "store-memory,runtime"),
    ("follow_stream", "store-memory,runtime"),
    ("continuity", "store-memory,runtime"),
    ("redb_store", "store-redb,runtime"),
    ("custom_adapter", "store-memory,runtime"),
    ("custom_hook", "store-memory,runtime"),
    ("provider_routing", "store-memory,runtime,routing"),
    ("workspace_snapshot", "store-memory,runtime,workspace"),
    ("policy_enforcement", "store-memory,runtime,policy"),
];
/// Crates with benchmarks.
#[rustfmt::skip]
const BENCH_CRATES: &[&str] = &[
    "asm-store-memory",
    "asm-store-sled",
    "asm-store-redb",
    "asm-runtime",
    "asm-provider-claude",
    "asm-provider-codex",
    "asm-workspace",
    "asm-policy",
];
/// The real provider CLIs `integration` runs against: npm package, pinned version, the binary
/// under `node_modules/.bin`.
const PINNED_CLIS: &[(&str, &str, &str)] = &[
    ("@anthropic-ai/claude-code", "2.1.197", "claude"),
    ("@openai/codex", "0.169.0", "codex"),
    ("@zed-industries/claude-agent-acp", "0.23.1", "claude-agent-acp"),
    ("@google/gemini-cli", "0.61.0", "gemini"),
    ("@zed-industries/codex-acp", "0.16.0", "codex-acp"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("features") => features(),
        Some("examples") => examples(),
        Some("deny") => deny(),
        Some("bench") => bench(&args[1..]),
        Some("integration") => integration(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | features | examples | deny | bench [criterion args] | integration [--only NAME]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])?;
    cargo(&["test", "--workspace", "--all-features"])?;
    examples()?;
    features()?;
    deny()?;
    integration(&[])
}

fn features() -> Result<(), String> {
    for feature in FACADE_FEATURES {
        cargo(&["check", "-p", "agent-session-manager", "--no-default-features", "--features", feature])?;
    }
    cargo(&["check", "-p", "agent-session-manager", "--no-default-features"])
}

fn examples() -> Result<(), String> {
    for (example, features) in EXAMPLES {
        cargo(&["run", "--quiet", "-p", "agent-session-manager", "--features", features, "--example", example])?;
    }
    Ok(())
}

fn deny() -> Result<(), String> {
    let installed = Command::new("cargo").args(["deny", "--version"]).output().is_ok_and(|out| out.status.success());
    if !installed {
        cargo(&["install", "cargo-deny", "--locked"])?;
    }
    // The advisory database is fetched from the network, which CI machines do not reach; the
    // offline checks still hold every dependency to the license, ban and source rules.
    cargo(&["deny", "--all-features", "check", "bans", "licenses", "sources"])
}

fn bench(extra: &[String]) -> Result<(), String> {
    for krate in BENCH_CRATES {
        let mut args = vec!["bench", "-p", krate];
        if !extra.is_empty() {
            args.push("--");
            args.extend(extra.iter().map(String::as_str));
        }
        cargo(&args)?;
    }
    Ok(())
}

/// The workspace root (the parent of this crate).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the current directory, as cargo
/// reads it) or `target` in the workspace.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()).map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => std::env::current_dir().map_or(dir.clone(), |cwd| cwd.join(dir)),
        None => workspace_root().join("target"),
    }
}

fn integration(extra: &[String]) -> Result<(), String> {
    let dir = std::env::var_os("ASM_NPM_CLI_DIR")
        .map_or_else(|| workspace_root().join("target").join("npm-cli"), PathBuf::from);
    install_pinned_clis(&dir)?;
    let bin = dir.join("node_modules").join(".bin");
    let (claude, codex, acp) = (bin.join("claude"), bin.join("codex"), bin.join("claude-agent-acp"));
    let claude = claude.to_str().ok_or("the npm cache path is not UTF-8")?;
    let codex = codex.to_str().ok_or("the npm cache path is not UTF-8")?;
    // The `cli/*` cases run the real `asm` binary: a bin of another package has no
    // CARGO_BIN_EXE_*, so build it here and pass its path.
    cargo(&["build", "--quiet", "-p", "asm-cli", "--bin", "asm"])?;
    let asm = target_dir().join("debug").join(format!("asm{}", std::env::consts::EXE_SUFFIX));
    let asm = asm.to_str().ok_or("the target dir path is not UTF-8")?;
    let acp = acp.to_str().ok_or("the npm cache path is not UTF-8")?;
    let mut args = vec![
        "run",
        "--quiet",
        "-p",
        "asm-integration",
        "--bin",
        "asm-real-cli",
        "--",
        "--claude",
        claude,
        "--codex",
        codex,
        "--asm",
        asm,
        "--claude-acp",
        acp,
    ];
    let (gemini, codex_acp) = (bin.join("gemini"), bin.join("codex-acp"));
    let gemini = gemini.to_str().ok_or("the npm cache path is not UTF-8")?;
    let codex_acp = codex_acp.to_str().ok_or("the npm cache path is not UTF-8")?;
    args.extend(["--gemini", gemini, "--codex-acp", codex_acp]);
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}

/// The version in `node_modules/<package>/package.json`, if installed.
fn installed_version(dir: &Path, package: &str) -> Option<String> {
    let manifest = std::fs::read_to_string(dir.join("node_modules").join(package).join("package.json")).ok()?;
    // `"version": "x.y.z"`: enough for npm's own formatting, no JSON parser needed here.
    let at = manifest.find("\"version\"")?;
    let rest = &manifest[at + "\"version\"".len()..];
    let start = rest.find('"')? + 1;
    let len = rest[start..].find('"')?;
    Some(rest[start..start + len].to_owned())
}

/// Installs [`PINNED_CLIS`] into `dir` with npm unless exactly these versions are there.
fn install_pinned_clis(dir: &Path) -> Result<(), String> {
    let missing: Vec<String> = PINNED_CLIS
        .iter()
        .filter(|(package, version, bin)| {
            installed_version(dir, package).as_deref() != Some(*version)
                || !dir.join("node_modules").join(".bin").join(bin).exists()
        })
        .map(|(package, version, _)| format!("{package}@{version}"))
        .collect();
    if missing.is_empty() {
        println!("==> pinned CLIs already installed in {}", dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let started = Instant::now();
    let prefix = dir.to_str().ok_or("the npm cache path is not UTF-8")?;
    let mut args = vec!["install", "--prefix", prefix, "--no-save", "--no-audit", "--no-fund", "--loglevel", "error"];
    args.extend(missing.iter().map(String::as_str));
    println!("==> npm {}", args.join(" "));
    let status = Command::new("npm").args(&args).status().map_err(|e| format!("cannot run npm: {e}"))?;
    if !status.success() {
        return Err(format!("`npm {}` failed ({status})", args.join(" ")));
    }
    println!("<== npm install ({:.1}s)", started.elapsed().as_secs_f64());
    for (package, version, _) in PINNED_CLIS {
        let found = installed_version(dir, package);
        if found.as_deref() != Some(*version) {
            return Err(format!("{package}: expected {version} after npm install, found {found:?}"));
        }
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let started = Instant::now();
    println!("==> cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    println!("<== cargo {} ({:.1}s)", args.first().copied().unwrap_or(""), started.elapsed().as_secs_f64());
    if status.success() { Ok(()) } else { Err(format!("`cargo {}` failed ({status})", args.join(" "))) }
}
