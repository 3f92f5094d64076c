//! Your own `RunHook`: an audit hook that counts every persisted event of a run, logs how each
//! run finished, and refuses runs whose prompt asks for something destructive.
//!
//! `cargo run --example custom_hook`
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use agent_session_manager::ports::RunFinish;
use agent_session_manager::prelude::*;
use asm_testkit::ScriptedAdapter;

#[derive(Debug, Default)]
struct Audit {
    seen: AtomicUsize,
}

#[async_trait]
impl RunHook for Audit {
    async fn on_start(&self, ctx: &RunContext) -> Result<HookAction> {
        let prompt = ctx.run.input.messages.iter().map(|m| m.content.as_str()).collect::<String>();
        if prompt.contains("rm -rf") {
            return Err(Error::new(ErrorCode::PolicyViolation, "the audit hook refuses destructive prompts"));
        }
        Ok(HookAction::none())
    }

    async fn on_event(&self, _ctx: &RunContext, _event: &Event) -> Result<HookAction> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        Ok(HookAction::none())
    }

    async fn on_finish(&self, ctx: &RunContext, finish: &RunFinish) -> Result<HookAction> {
        let outcome = match &finish.result {
            Ok(_) => "succeeded".to_owned(),
            Err(error) => format!("failed with {}", error.code()),
        };
        println!("audit: run {} {outcome} after {} events", ctx.run.id, self.seen.load(Ordering::Relaxed));
        Ok(HookAction::none())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("All good."));
    let audit = Arc::new(Audit::default());
    let options = || RunOptions::new().hook(audit.clone());

    let fine = manager.run_once(RunInput::user("list the files"), options()).await?;
    println!(
        "allowed run: {:?}, hook saw {} provider events",
        fine.output().content,
        audit.seen.load(Ordering::Relaxed)
    );

    let refused = manager.run_once(RunInput::user("rm -rf /"), options()).await;
    match refused {
        Err(error) => println!("refused run: {}", error.code()),
        Ok(_) => println!("unexpected: the destructive run was allowed"),
    }
    Ok(())
}
