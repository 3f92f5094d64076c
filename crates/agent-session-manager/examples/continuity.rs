//! Transcript continuity across runs: the second run replays the first one's conversation to
//! an adapter that cannot resume natively, and the replayed transcript is printed.
//!
//! `cargo run --example continuity`
#![allow(clippy::print_stdout)]

use agent_session_manager::prelude::*;
use asm_testkit::ScriptedAdapter;

#[tokio::main]
async fn main() -> Result<()> {
    let adapter = ScriptedAdapter::replying("Noted.");
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone());
    let session = manager.start_session(NewSession::new("memory").system_prompt("Remember what I say.")).await?;
    manager.activate_session(&session.id).await?;

    for prompt in ["My favourite colour is teal.", "What is my favourite colour?"] {
        let run = manager.start_run(&session.id, RunInput::user(prompt), RunOptions::new()).await?;
        let result = manager.execute_run(&run.id, RunOptions::new().continuation(Continuation::Auto)).await?;
        println!("{prompt:?} -> {:?}", result.output().content);
    }

    // What the adapter received on the second run: the first exchange, replayed.
    let requests = adapter.requests();
    let replayed = requests.last().and_then(|request| request.transcript.as_ref()).map(|t| t.messages.len());
    println!("the second run replayed {} earlier messages", replayed.unwrap_or(0));
    if let Some(transcript) = requests.last().and_then(|request| request.transcript.as_ref()) {
        for message in &transcript.messages {
            println!("  {:?}: {}", message.role, message.content.as_deref().unwrap_or(""));
        }
    }
    Ok(())
}
