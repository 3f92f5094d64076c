//! Your own provider behind the `ProviderAdapter` port: an in-process "echo" model that streams
//! its answer word by word, reports usage, and honours cancellation.
//!
//! `cargo run --example custom_adapter`
#![allow(clippy::print_stdout)]

use agent_session_manager::core::{TokenUsage, keys};
use agent_session_manager::prelude::*;

/// Answers every prompt with the prompt, upper-cased, one word per streamed chunk.
#[derive(Debug)]
struct ShoutingEcho;

#[async_trait]
impl ProviderAdapter for ShoutingEcho {
    fn name(&self) -> &str {
        "shouting-echo"
    }

    fn capabilities(&self) -> Vec<agent_session_manager::core::Capability> {
        Vec::new()
    }

    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let prompt: String =
            request.run.input.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join(" ");
        let answer = prompt.to_uppercase();
        let mut so_far = String::new();
        for word in answer.split_inclusive(' ') {
            if request.cancel.is_cancelled() {
                return Err(Error::new(ErrorCode::Cancelled, "cancelled"));
            }
            so_far.push_str(word);
            sink.emit(
                ProviderEvent::new(EventKind::MessageStreamed)
                    .data(keys::DELTA, word)
                    .data(keys::CONTENT, so_far.clone()),
            )
            .await?;
        }
        sink.emit(
            ProviderEvent::new(EventKind::MessageReceived)
                .data(keys::ROLE, "assistant")
                .data(keys::CONTENT, answer.clone()),
        )
        .await?;
        let words = u64::try_from(answer.split_whitespace().count()).unwrap_or(u64::MAX);
        let usage = TokenUsage { input_tokens: words, output_tokens: words, ..TokenUsage::default() };
        Ok(ExecuteOutcome::text(answer).usage(usage))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let manager = SessionManager::new(InMemorySessionStore::new(), ShoutingEcho);
    let once = manager.run_once(RunInput::user("hello from my own adapter"), RunOptions::new()).await?;
    println!("{}", once.output().content);
    let events = manager.session_events(&once.session_id, EventQuery::new()).await?;
    for event in &events {
        println!(
            "  #{:<3} {:<20} {}",
            event.sequence(),
            event.kind,
            event.data.get("delta").map(|d| d.to_string()).unwrap_or_default()
        );
    }
    Ok(())
}
