#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared adapter contract suite (asm-testkit) against the shell adapter.
//!
//! Two ways in:
//! * the CLI suite (`adapter_contract`), with the fake CLI as the adapter's shell (it is run as
//!   `<fake> -c hello` and replays its script): the checks about processes, exits, signals,
//!   stderr, deadlines, cancel escalation and process groups. The checks about JSONL framing
//!   (raw lines, EOF without a result line, oversized lines) and the JSONL adapters' per-run
//!   options (`model`) do not apply to a command's plain output and are not run; the output
//!   cap that replaces the line cap is tested in `shell.rs`.
//! * the in-process suite (`adapter_contract::in_process`), once with the fake as the shell
//!   and once with the real `/bin/sh` running a `hello` command found in the configured PATH.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use asm_ports::ProviderAdapter;
use asm_provider_cli::{CliEnv, CliLimits};
use asm_provider_shell::ShellAdapter;
use asm_testkit::adapter_contract::in_process::{self, InProcessContract};
use asm_testkit::adapter_contract::{self as contract, AdapterContract, FakeCliInvocation};
use asm_testkit::fake_cli::FakeScript;

const TEXT: &str = "hello from the fake shell";

fn make(inv: &FakeCliInvocation) -> Arc<dyn ProviderAdapter> {
    let env = CliEnv::minimal().set_all(inv.env.clone());
    Arc::new(
        ShellAdapter::builder()
            .shell(&inv.program)
            .env(env)
            .limits(CliLimits::default().graces(Duration::from_millis(500), Duration::from_millis(500)))
            .build()
            .unwrap(),
    )
}

fn shell_contract() -> AdapterContract {
    AdapterContract::new(make, FakeScript::new().lines([TEXT]), format!("{TEXT}\n"))
        .tool(FakeScript::new().lines(["a.txt", "b.txt"]))
        .stream_prefix(["partial output"])
}

asm_testkit::cli_contract_tests!(
    shell_contract();
    check_text_run,
    check_tool_call_keys,
    check_cancel_before_start,
    check_cancel_mid_stream,
    check_cancel_escalates,
    check_dropped_future_leaves_no_child,
    check_nonzero_exit,
    check_stderr_is_truncated,
    check_killed_by_signal,
    check_deadline,
    check_validate_config,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_suite_through_the_fake_shell() {
    contract::run_in_process_suite(&shell_contract()).await;
}

/// A PATH directory holding an executable `hello` with `body`.
fn hello_command(body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn real_shell(dir: &tempfile::TempDir) -> Arc<dyn ProviderAdapter> {
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", dir.path().display());
    Arc::new(ShellAdapter::builder().env(CliEnv::minimal().set("PATH", path)).build().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_suite_through_the_real_shell() {
    let text = hello_command("echo 'Hello from /bin/sh'");
    let streaming = hello_command("echo started; exec sleep 100");
    let ip = InProcessContract::new(real_shell(&text), "Hello from /bin/sh\n")
        .tool(real_shell(&text))
        .streaming(real_shell(&streaming));
    in_process::run_all(&ip).await;
}
