//! Build automation: `cargo xtask <command>`.
//!
//! - `ci`: everything CI runs: fmt check, clippy (`-D warnings`), the test suite, every facade
//!   feature compiled alone, and `cargo deny` (installed on first use).
//! - `features`: `cargo check` of the facade with each feature alone.
//! - `deny`: installs cargo-deny if missing and checks licenses, bans and sources.
//! - `bench`: runs the benchmarks (`cargo bench`) of the crates that have them.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::{Command, ExitCode};
use std::time::Instant;

/// Every facade feature; each must compile alone.
#[rustfmt::skip]
const FACADE_FEATURES: &[&str] = &[
    "store-memory",
    "store-redb",
    "store-sled",
    "provider-claude",
    "runtime",
    "testkit",
    "full",
];
/// Crates with benchmarks.
const BENCH_CRATES: &[&str] =
    &["asm-store-memory", "asm-store-sled", "asm-store-redb", "asm-runtime", "asm-provider-claude"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("features") => features(),
        Some("deny") => deny(),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <ci | features | deny | bench [criterion args]>");
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
    features()?;
    deny()
}

fn features() -> Result<(), String> {
    for feature in FACADE_FEATURES {
        cargo(&["check", "-p", "agent-session-manager", "--no-default-features", "--features", feature])?;
    }
    cargo(&["check", "-p", "agent-session-manager", "--no-default-features"])
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
