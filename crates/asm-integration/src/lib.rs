//! End-to-end testing of the provider adapters against the real CLIs, offline.
//!
//! * [`FakeServer`] is a fake model API on `127.0.0.1` (ephemeral port), written by hand on a
//!   tokio [`TcpListener`](tokio::net::TcpListener): HTTP/1.1 and server-sent events, no HTTP
//!   framework. It speaks the Anthropic Messages API ([`Api::AnthropicMessages`], for Claude
//!   Code via `ANTHROPIC_BASE_URL`) or the OpenAI Responses API ([`Api::OpenAiResponses`], for
//!   Codex via a custom `model_providers` entry) or the Gemini API
//!   ([`Api::GeminiGenerateContent`], for Gemini CLI via `GOOGLE_GEMINI_BASE_URL`), records
//!   every request, and answers each model
//!   request with the [`Scenario`] its prompt selects: text, a tool round trip, a slow stream
//!   (for cancellation), HTTP errors (401 / 429 / 5xx) or a stream that fails midway. The
//!   shapes follow `spec/provider-clis.md` (what the real CLIs sent and accepted).
//! * The `asm-real-cli` binary of this crate runs the adapters against the real CLIs and these
//!   servers; `cargo xtask integration` installs the pinned CLIs with npm and runs it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use asm_integration::{Api, FakeServer, Scenario};
//! let server = FakeServer::start(Api::OpenAiResponses).await?;
//! server.set_default_scenario(Scenario::HttpError(429));
//! assert!(server.base_url().ends_with("/v1"));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod anthropic;
mod gemini;
mod http;
mod openai;
mod scenario;
mod server;

pub use gemini::SHELL_COMMAND as GEMINI_TOOL_COMMAND;
pub use scenario::{
    SLOW_CHUNK_PREFIX, Scenario, TEXT_REPLY, TOOL_COMMAND, WRITE_TOOL_COMMAND, WRITE_TOOL_FILE, tool_followup_text,
};
pub use server::{Api, FakeServer, RecordedRequest, SLOW_CHUNKS, SLOW_INTERVAL};
