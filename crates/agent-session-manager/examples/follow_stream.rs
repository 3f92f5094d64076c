//! Follows a session's log live with `stream_session_events` while runs append to it, and
//! reads the backlog with a stream that ends when it has caught up.
//!
//! `cargo run --example follow_stream`
#![allow(clippy::print_stdout)]

use agent_session_manager::prelude::*;
use asm_testkit::ScriptedAdapter;

#[tokio::main]
async fn main() -> Result<()> {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("streaming words"));
    let session = manager.start_session(NewSession::new("follower")).await?;
    manager.activate_session(&session.id).await?;

    // A follower started before anything runs: it sees every event once, in order, as stored.
    let mut live = manager.stream_session_events(&session.id, StreamOptions::after(0));
    let writer = {
        let manager = manager.clone();
        let session_id = session.id.clone();
        tokio::spawn(async move {
            let run = manager.start_run(&session_id, RunInput::user("go"), RunOptions::new()).await?;
            manager.execute_run(&run.id, RunOptions::new()).await
        })
    };
    while let Some(event) = live.next().await {
        let event = event?;
        println!("live #{:<3} {}", event.sequence(), event.kind);
        if event.kind.is_run_terminal() {
            break;
        }
    }
    writer.await.map_err(|e| Error::new(ErrorCode::InternalError, e.to_string()))??;

    // The backlog after sequence 2, read to the end and no further.
    let backlog: Vec<StoredEvent> = manager
        .stream_session_events(&session.id, StreamOptions::after(2).until_caught_up())
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    println!("backlog after #2: {} events", backlog.len());
    Ok(())
}
