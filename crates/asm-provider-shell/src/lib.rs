//! The shell provider: a [`ProviderAdapter`](asm_ports::ProviderAdapter) named `"shell"` that
//! runs a run's input as a command (spec 9.5, ShellAdapter and Workspace.Exec), on the CLI
//! process machinery of `asm-provider-cli` ([`CliProcess`](asm_provider_cli::CliProcess): own
//! process group, explicit environment, cancel and timeouts stop the whole group, no orphans,
//! a bounded stderr ring).
//!
//! * [`ShellAdapter`]: the adapter ([`ShellAdapter::new`] for the defaults,
//!   [`ShellAdapter::builder`] for cwd, environment, timeout, success exit codes, allow and deny
//!   lists, output cap and shell path).
//! * [`ShellInvocation`]: the input formats (a shell string, or an argv as JSON or per-run
//!   options [`RUN_OPTIONS`]).
//! * [`command_names`], [`check_command_line`], [`check_command`]: the command policy.
//! * [`OutputCapture`], [`truncation_marker`]: the output cap.
//!
//! Fixed against the original (spec 9.5 QUIRKS):
//! * an exit code outside the success list **fails** the run (`provider_error`,
//!   `details.reason = "command_failed"`); the original completed it beside a `run_failed`;
//! * a timeout is [`ErrorCode::Timeout`](asm_core::ErrorCode::Timeout), which the runtime
//!   records as a `run_timeout` (the original reported `{ok}` with `timed_out: true`);
//! * an allow / deny list checks **every** command of a shell string, and refuses what it
//!   cannot check (`ls; rm -rf x` passed an allow list of `ls` in the original);
//! * the output cap ends the output with a visible marker (the original dropped silently);
//! * stdout is always streamed as `message_streamed`;
//! * cancel stops the process group (the original never recorded the pid).
//!
//! Deliberate differences: stderr is not merged into stdout; it is kept (bounded) in
//! `tool_output.stderr`, the run output's `extra.stderr` and a failure's `provider_error`. The
//! runtime, not the adapter, emits `run_started` and the terminal event.
#![deny(missing_docs)]

mod adapter;
mod config;
mod input;
mod output;
mod policy;

pub use adapter::{SHELL_PROVIDER, ShellAdapter, TIMEOUT_EXIT_CODE, TOOL_NAME};
pub use config::{
    DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_SHELL, DEFAULT_TIMEOUT, ShellAdapterBuilder, ShellConfig, command_basename,
};
pub use input::{RUN_OPTIONS, ShellForm, ShellInvocation};
pub use output::{OutputCapture, truncation_marker};
pub use policy::{check_command, check_command_line, command_names};
