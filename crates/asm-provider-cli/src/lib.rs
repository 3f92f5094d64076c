//! Subprocess machinery shared by the CLI-driven provider adapters (Claude Code, Codex, Amp).
//!
//! * [`CliCommand`] describes one invocation: program (path or PATH name, see
//!   [`resolve_program`]), argv, an explicit environment ([`CliEnv`], with the providers'
//!   [`OfflineSwitches`]), working directory, optional stdin bytes and [`CliLimits`].
//! * [`CliProcess`] is the running child: spawned without a shell, in its own process group,
//!   stdin `/dev/null` unless stdin bytes are given, stdout framed into lines with a per-line
//!   cap, stderr drained into a bounded ring buffer, SIGINT → SIGTERM → SIGKILL escalation on
//!   the whole group, exit classification ([`ExitInfo`]: code or signal), and a drop guard that
//!   SIGKILLs the group and reaps the child when a future is dropped mid-run.
//! * [`run_jsonl`] is the loop every JSONL adapter needs: spawn, frame, normalise (a plain
//!   closure from line to [`ProviderEvent`](asm_ports::ProviderEvent)s), emit through the sink,
//!   honour cancellation ([`ErrorCode::Cancelled`](asm_core::ErrorCode::Cancelled)) and the
//!   deadline ([`ErrorCode::Timeout`](asm_core::ErrorCode::Timeout)), reap, return the exit.
//!
//! Shared normalisation helpers: [`PermissionMode`] (spec 9.6 with the per-CLI flags),
//! [`raw_event`] for unknown lines (kind [`RAW_EVENT_KIND`], `provider_raw`),
//! [`classify_http_status`] and [`classify_error_text`].
//!
//! Error conventions (all [`asm_core::Error`] with a [`ProviderError`](asm_core::ProviderError)):
//! missing binary → `provider_error` / `cli_not_found` (not retryable: configuration),
//! spawn failure → `provider_error` / `process_error`, oversized line → `provider_error` /
//! `parse_error` (settled against the provider's own verdict by [`ExitInfo::settle`]: an
//! oversized line never hides a 401 / 429 / 5xx the rest of the output reports), deadline →
//! `timeout` / `timeout`. Adapters classify the rest (exit codes, missing result lines, HTTP
//! texts) with [`ExitInfo::provider_error`] and [`provider_failure`].
#![deny(missing_docs)]

mod command;
mod normalize;
mod process;
mod run;

pub use command::{
    CLAUDE_OFFLINE_ENV, CODEX_BOUNDED_RETRY_ARGS, CODEX_OFFLINE_ARGS, CliCommand, CliEnv, CliLimits,
    DEFAULT_INHERITED_ENV, OfflineSwitches, resolve_program,
};
pub use normalize::{
    MAX_RAW_LINE_BYTES, PermissionMode, RAW_EVENT_KIND, anthropic_usage, classify_error_text, classify_http_status,
    error_event, raw_event, tool_result_text,
};
pub use process::{CliProcess, ExitInfo, ExitKind, StdoutFrame, process_group_alive, provider_failure};
pub use run::{RunControl, cancelled_error, run_jsonl};
