//! Reads a session's log page by page with a cursor (`after` is exclusive, `limit` keeps the
//! oldest N), then filters by run and kind.
//!
//! `cargo run --example cursor_pagination`
#![allow(clippy::print_stdout)]

use agent_session_manager::prelude::*;
use asm_testkit::ScriptedAdapter;

#[tokio::main]
async fn main() -> Result<()> {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("one two three four"));
    let session = manager.start_session(NewSession::new("pager")).await?;
    manager.activate_session(&session.id).await?;
    let mut runs = Vec::new();
    for prompt in ["first", "second", "third"] {
        let run = manager.start_run(&session.id, RunInput::user(prompt), RunOptions::new()).await?;
        manager.execute_run(&run.id, RunOptions::new()).await?;
        runs.push(run.id);
    }

    let mut cursor = 0;
    let mut page_number = 0;
    loop {
        let page = manager.session_events(&session.id, EventQuery::new().after(cursor).limit(8)).await?;
        let Some(last) = page.last().map(StoredEvent::sequence) else { break };
        page_number += 1;
        let kinds: Vec<String> = page.iter().map(|e| e.kind.to_string()).collect();
        println!("page {page_number}: sequences {}..={last}: {}", cursor + 1, kinds.join(", "));
        cursor = last;
    }

    let second_run_messages = manager
        .session_events(&session.id, EventQuery::new().run(runs[1].clone()).kind(EventKind::MessageReceived))
        .await?;
    for event in &second_run_messages {
        println!("run 2 answered at #{}: {}", event.sequence(), event.data["content"]);
    }
    assert_eq!(second_run_messages.len(), 1);
    Ok(())
}
