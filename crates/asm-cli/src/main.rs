//! `asm`: sessions, runs and events of AI coding agents on an embedded store.
//!
//! Every failure prints exactly one line `error: [code] message` (and maybe a `hint:` line)
//! to stderr and exits non-zero; `asm run` / `asm resume` exit 0 when the run completed, 1
//! when it failed or timed out, 130 when it was cancelled (Ctrl-C cancels it cleanly).

mod cli;
mod commands;
mod config;
mod error;
mod provider;
mod store;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return report(&error::CliError::new("internal_error", format!("cannot start the runtime: {e}"))),
    };
    let outcome = runtime.block_on(commands::dispatch(cli));
    // Provider processes and store writers are stopped by the commands themselves; do not
    // wait for stray blocking tasks (a reader of stdin) longer than a moment.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(status) => ExitCode::from(status),
        Err(error) => report(&error),
    }
}

fn report(error: &error::CliError) -> ExitCode {
    if error.status == 0 {
        return ExitCode::SUCCESS;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{}", error.line());
    if let Some(hint) = &error.hint {
        let _ = writeln!(stderr, "hint: {hint}");
    }
    ExitCode::from(error.status)
}

/// Logs to stderr only when `ASM_LOG` asks for them (`ASM_LOG=debug`), so that the one error
/// line stays the only thing a failure prints.
fn init_tracing() {
    let Some(filter) = std::env::var_os("ASM_LOG") else { return };
    let filter = tracing_subscriber::EnvFilter::try_new(filter.to_string_lossy())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
