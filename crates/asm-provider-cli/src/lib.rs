//! The one CLI adapter core shared by the CLI-driven provider adapters (Claude Code, Codex,
//! Amp): subprocess machinery and a generic adapter.
//!
//! **The adapter.** [`CliAdapter<P>`](CliAdapter) is the [`ProviderAdapter`](asm_ports::ProviderAdapter)
//! of every CLI provider: [`CliOptions`] (the common options: CLI path, cwd, environment,
//! extra args, timeout, limits, and the per-run options [`RunOption`] with their builder
//! defaults), [`CliAdapterBuilder`], command construction ([`CliOptions::command`]), the
//! execute loop, configuration checks ([`CliOptions::validate`]) and the one transcript
//! renderer ([`render_prompt`]). A provider crate supplies a [`CliProtocol`]: its argv,
//! environment, stdin, a [`CliNormalizer`] (lines → events, exit → outcome or typed error) and
//! what it supports.
//!
//! **Per-run options.** One list of keys for every adapter ([`RunOption`], [`run_option`]),
//! read from [`ExecuteRequest::options`](asm_ports::ExecuteRequest::options) and validated in
//! one place ([`CliOptions::for_run`]): unknown keys, wrong types and options the provider
//! cannot honour are `validation_error`, before anything is spawned.
//!
//! **Credentials.** Each protocol names its credential variables
//! ([`CliProtocol::AUTH_ENV`]); the default environment ([`CliEnv::minimal`]) passes them
//! through from this process, [`CliEnv::pass_auth`] turns that off, and `Debug` never prints
//! a secret's value.
//!
//! **The processes.**
//! * [`CliCommand`] describes one invocation: program (path or PATH name, see
//!   [`resolve_program`]), argv, an explicit environment ([`CliEnv`]), working directory,
//!   optional stdin bytes and [`CliLimits`].
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
//! Shared normalisation helpers: [`raw_event`] for unknown lines (kind [`RAW_EVENT_KIND`],
//! `provider_raw`), [`error_event`], [`classify_http_status`] and [`classify_error_text`].
//!
//! Error conventions (all [`asm_core::Error`] with a [`ProviderError`](asm_core::ProviderError)):
//! missing binary → `provider_error` / `cli_not_found` (not retryable: configuration),
//! spawn failure → `provider_error` / `process_error`, oversized line → `provider_error` /
//! `parse_error` (settled against the provider's own verdict by [`ExitInfo::settle`]: an
//! oversized line never hides a 401 / 429 / 5xx the rest of the output reports), deadline →
//! `timeout` / `timeout`. Adapters classify the rest (exit codes, missing result lines, HTTP
//! texts) with [`ExitInfo::provider_error`] and [`provider_failure`].
//!
//! **Architecture invariant:** knows processes, not providers: no CLI flag, no provider
//! environment variable and no wire JSON in here.
#![deny(missing_docs)]

mod adapter;
mod command;
mod normalize;
mod options;
mod process;
mod prompt;
mod run;

pub use adapter::{CliAdapter, CliAdapterBuilder, CliNormalizer, CliProtocol};
pub use command::{CliCommand, CliEnv, CliLimits, DEFAULT_INHERITED_ENV, is_secret_name, resolve_program};
pub use normalize::{
    MAX_RAW_LINE_BYTES, RAW_EVENT_KIND, classify_error_text, classify_http_status, error_event, raw_event, usage_event,
};
pub use options::{CliOptions, PermissionMode, RunOption, run_option};
pub use process::{CliProcess, ExitInfo, ExitKind, StdoutFrame, process_group_alive, provider_failure};
pub use prompt::{prompt_arg, render_prompt, render_transcript, resume_handle};
pub use run::{DialogStep, Interrupt, RunControl, StdinDialog, cancelled_error, run_jsonl, run_jsonl_dialog};
