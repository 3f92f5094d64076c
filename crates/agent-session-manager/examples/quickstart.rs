//! Runs one session with the scripted adapter on the in-memory store and prints every event with
//! its sequence number, then follows the log with a cursor stream.
//!
//! `cargo run --example quickstart`
#![allow(clippy::print_stdout)]

use agent_session_manager::prelude::*;
use asm_testkit::ScriptedAdapter;
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<()> {
    let store = InMemorySessionStore::new();
    let adapter = ScriptedAdapter::replying("The failing test expected 4 but got 5; fixed the off-by-one in add().");
    let manager = SessionManager::new(store, adapter);

    let session = manager.start_session(NewSession::new("quickstart-agent").system_prompt("Be concise.")).await?;
    manager.activate_session(&session.id).await?;
    println!("session {}", session.id);

    for prompt in ["Fix the failing test", "Now explain the fix in one line"] {
        let run = manager.start_run(&session.id, RunInput::user(prompt), RunOptions::default()).await?;
        println!("\nrun {} <- {prompt:?}", run.id);
        let result = manager
            .execute_run(
                &run.id,
                RunOptions::default().continuation(Continuation::Auto).on_event(|event| {
                    println!("  #{:<3} {:<22} {}", event.sequence(), event.kind, summary(event));
                }),
            )
            .await?;
        println!(
            "  => {} ({} in / {} out tokens)",
            result.run.status,
            result.token_usage().input_tokens,
            result.token_usage().output_tokens
        );
    }
    manager.complete_session(&session.id).await?;

    println!("\nthe whole log, read back with a cursor stream:");
    let latest = manager.store().latest_sequence(&session.id).await?;
    let log: Vec<StoredEvent> = manager
        .stream_session_events(&session.id, StreamOptions::after(0).until_caught_up())
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    for event in &log {
        println!("  #{:<3} {}", event.sequence(), event.kind);
    }
    println!("\n{} events, sequences 1..={latest}, no gaps", log.len());
    Ok(())
}

fn summary(event: &Event) -> String {
    let field = |key: &str| event.data.get(key).map(|v| v.to_string()).unwrap_or_default();
    match event.kind {
        EventKind::RunStarted => format!("provider={} continuation={}", field("provider"), field("continuation")),
        EventKind::TokenUsageUpdated => format!("in={} out={}", field("input_tokens"), field("output_tokens")),
        EventKind::RunCompleted => format!("stop_reason={}", field("stop_reason")),
        EventKind::RunFailed => format!("{}: {}", field("error_code"), field("error_message")),
        _ => {
            let text = event.data_str("delta").or_else(|| event.data_str("content")).unwrap_or_default();
            let short: String = text.chars().take(60).collect();
            let ellipsis = if short.len() < text.len() { "…" } else { "" };
            format!("{short:?}{ellipsis}")
        }
    }
}
