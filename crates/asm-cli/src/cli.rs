//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Sessions, runs and events of AI coding agents, on an embedded store.
#[derive(Debug, Parser)]
#[command(name = "asm", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Store URL: redb:PATH, sled:PATH, memory: or postgres://... (default
    /// redb:$ASM_HOME/sessions.redb).
    #[arg(long, global = true, env = "ASM_STORE", value_name = "URL")]
    pub(crate) store: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a session and run a prompt in it.
    Run(RunArgs),
    /// Run a prompt in an existing session, continuing its conversation.
    Resume(ResumeArgs),
    /// List sessions.
    Sessions(SessionsArgs),
    /// Show a session with its runs, usage and cost.
    Show(ShowArgs),
    /// Print a session's events.
    Events(EventsArgs),
    /// Print a session's transcript.
    Transcript(SessionArg),
    /// Export a session, its runs and events as JSON lines.
    Export(ExportArgs),
    /// Import a session exported with `asm export`.
    Import(ImportArgs),
    /// Fork a session at a turn boundary.
    Fork(ForkArgs),
    /// Cancel a run.
    Cancel(CancelArgs),
    /// Serve the HTTP API and the web view.
    Serve(ServeArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Be an Agent Client Protocol (ACP) agent on stdin/stdout, for editors that speak ACP.
    Acp(AcpArgs),
}

/// How a run's output is shown.
#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Print every stored event as one JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
    /// Readable output style: compact or verbose.
    #[arg(long, value_name = "STYLE", default_value = "compact", value_parser = ["compact", "verbose"])]
    pub(crate) render: String,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Provider: claude, codex, amp or shell (default: `provider` in config.toml).
    #[arg(long, short = 'p')]
    pub(crate) provider: Option<String>,
    /// Model.
    #[arg(long, short = 'm')]
    pub(crate) model: Option<String>,
    /// Working directory of the provider.
    #[arg(long)]
    pub(crate) cwd: Option<PathBuf>,
    /// Agent id of the new session (default: the provider name).
    #[arg(long)]
    pub(crate) agent: Option<String>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    /// The prompt.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
    pub(crate) prompt: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// The session.
    pub(crate) session: String,
    /// Provider (default: the session's).
    #[arg(long, short = 'p')]
    pub(crate) provider: Option<String>,
    /// Model.
    #[arg(long, short = 'm')]
    pub(crate) model: Option<String>,
    /// Working directory of the provider.
    #[arg(long)]
    pub(crate) cwd: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    /// The prompt.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
    pub(crate) prompt: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SessionsArgs {
    /// Only sessions in this status (pending, active, paused, completed, failed, cancelled).
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Only sessions of this agent.
    #[arg(long)]
    pub(crate) agent: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The session.
    pub(crate) session: String,
    /// As one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SessionArg {
    /// The session.
    pub(crate) session: String,
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// The session.
    pub(crate) session: String,
    /// Only events after this sequence.
    #[arg(long, default_value_t = 0)]
    pub(crate) after: u64,
    /// At most this many events.
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// Only events of this kind (repeatable).
    #[arg(long = "kind", value_name = "KIND")]
    pub(crate) kinds: Vec<String>,
    /// Only events of this run.
    #[arg(long)]
    pub(crate) run: Option<String>,
    /// Keep streaming new events (long-poll) until Ctrl-C.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The session.
    pub(crate) session: String,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o')]
    pub(crate) output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// A file written by `asm export` (`-` for standard input).
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ForkArgs {
    /// The session to fork.
    pub(crate) session: String,
    /// Fork right after this run (default: the latest turn boundary).
    #[arg(long)]
    pub(crate) run: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The run.
    pub(crate) run: String,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7377")]
    pub(crate) listen: String,
    /// Require `Authorization: Bearer TOKEN` (required on a non-loopback address).
    #[arg(long, env = "ASM_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct AcpArgs {
    /// Provider of every prompt: claude, codex, amp or shell (default: `provider` in config.toml).
    #[arg(long, short = 'p')]
    pub(crate) provider: Option<String>,
    /// Model.
    #[arg(long, short = 'm')]
    pub(crate) model: Option<String>,
    /// Working directory of the provider when the client gives none (the client's
    /// `session/new` cwd wins).
    #[arg(long)]
    pub(crate) cwd: Option<PathBuf>,
    /// Agent id of the sessions it creates (default: the provider name).
    #[arg(long)]
    pub(crate) agent: Option<String>,
}
