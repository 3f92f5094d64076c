//! The durable embedded store: a session written with redb survives closing and reopening the
//! file, with its gap-free sequence numbers.
//!
//! `cargo run --example redb_store --features store-redb`
#![allow(clippy::print_stdout)]

use agent_session_manager::ports::RunQuery;
use agent_session_manager::prelude::*;
use asm_testkit::ScriptedAdapter;

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::new(ErrorCode::StorageError, e.to_string()))?;
    let path = dir.path().join("sessions.redb");

    let session_id = {
        let manager = SessionManager::new(RedbSessionStore::open(&path)?, ScriptedAdapter::replying("Stored."));
        let session = manager.start_session(NewSession::new("durable")).await?;
        manager.activate_session(&session.id).await?;
        let run = manager.start_run(&session.id, RunInput::user("remember this"), RunOptions::new()).await?;
        manager.execute_run(&run.id, RunOptions::new()).await?;
        session.id
    };

    // A new process would do exactly this: open the file again and read.
    let store = RedbSessionStore::open(&path)?;
    let events = store.get_events(&session_id, &EventQuery::new()).await?;
    println!("reopened {}: {} events", path.display(), events.len());
    for event in &events {
        println!("  #{:<3} {}", event.sequence(), event.kind);
    }
    let runs = store.list_runs(&session_id, &RunQuery::new()).await?;
    println!("runs: {}", runs.iter().map(|r| r.status.to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}
