//! Workspace snapshots around runs: what did the agent change, and undo it when the run fails.
//!
//! Offline: a temporary git repository and a tiny adapter that edits files in it the way an
//! agent would (a scripted adapter cannot touch files). Against a real agent, attach the same
//! hook to a run of a real CLI adapter working in the repository, e.g.
//! `ClaudeAdapter::builder().cwd(&repo).build()?` (feature `provider-claude`).
//!
//! `cargo run -p agent-session-manager --features workspace --example workspace_snapshot`
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_session_manager::core::Capability;
use agent_session_manager::prelude::*;
use agent_session_manager::workspace::{FileArtifactStore, Strategy, WorkspaceHook};

/// Stands in for an agent: writes `file` with `content` in `cwd`, then succeeds or fails.
#[derive(Debug)]
struct EditingAgent {
    cwd: PathBuf,
}

#[async_trait]
impl ProviderAdapter for EditingAgent {
    fn name(&self) -> &str {
        "editing-agent"
    }
    fn capabilities(&self) -> Vec<Capability> {
        Vec::new()
    }
    async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        let prompt = request.run.input.messages.iter().map(|m| m.content.as_str()).collect::<String>();
        std::fs::write(self.cwd.join("src.txt"), format!("edited for: {prompt}\n"))
            .map_err(|e| Error::new(ErrorCode::ToolExecutionFailed, e.to_string()))?;
        std::fs::write(self.cwd.join("scratch.txt"), "an untracked file\n")
            .map_err(|e| Error::new(ErrorCode::ToolExecutionFailed, e.to_string()))?;
        sink.emit(ProviderEvent::new(EventKind::MessageReceived).data("role", "assistant").data("content", "done"))
            .await?;
        if prompt.contains("fail") {
            return Err(Error::new(ErrorCode::ProviderError, "the agent gave up half way"));
        }
        Ok(ExecuteOutcome::text("done"))
    }
}

fn git(dir: &Path, args: &[&str]) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "example")
        .env("GIT_AUTHOR_EMAIL", "example@localhost")
        .env("GIT_COMMITTER_NAME", "example")
        .env("GIT_COMMITTER_EMAIL", "example@localhost")
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::new(ErrorCode::StorageError, e.to_string()))?;
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).map_err(|e| Error::new(ErrorCode::StorageError, e.to_string()))?;
    std::fs::write(repo.join("src.txt"), "original\n")
        .map_err(|e| Error::new(ErrorCode::StorageError, e.to_string()))?;
    // With git, the git backend; without a git binary the example falls back to hashing files.
    let has_git =
        git(&repo, &["init", "-q"]) && git(&repo, &["add", "-A"]) && git(&repo, &["commit", "-q", "-m", "init"]);
    let strategy = if has_git { Strategy::Git } else { Strategy::Hash };
    let artifacts = FileArtifactStore::open(dir.path().join("artifacts"))?;

    let manager = SessionManager::new(InMemorySessionStore::new(), EditingAgent { cwd: repo.clone() });
    let hook = WorkspaceHook::new(&repo)
        .strategy(strategy)
        .rollback_on_failure(true)
        .max_patch_bytes(64 * 1024)
        .artifact_store(artifacts);

    // 1. A successful run: the diff is recorded in events, run metadata and the output.
    let once = manager.run_once(RunInput::user("rename things"), RunOptions::new().hook(hook.clone())).await?;
    for event in &once.result.events {
        if matches!(event.kind, EventKind::WorkspaceSnapshotTaken | EventKind::WorkspaceDiffComputed) {
            println!("{:<26} {}", event.kind.to_string(), serde_json::Value::Object(event.data.clone()));
        }
    }
    let summary = &once.result.run.metadata["workspace"]["diff"];
    println!("changed: {} (+{} -{})", summary["changed_paths"], summary["insertions"], summary["deletions"]);
    if let Some(patch) = summary["patch"].as_str() {
        println!("patch:\n{patch}");
    }

    // 2. A failing run with rollback_on_failure: the work tree is put back as it was before it.
    let before = std::fs::read_to_string(repo.join("src.txt")).unwrap_or_default();
    let session = manager.start_session(NewSession::new("example")).await?;
    manager.activate_session(&session.id).await?;
    let options = RunOptions::new().hook(hook);
    let run = manager.start_run(&session.id, RunInput::user("now fail"), options.clone()).await?;
    let failed = manager.execute_run(&run.id, options).await;
    let stored = manager.get_run(&run.id).await?;
    let after = std::fs::read_to_string(repo.join("src.txt")).unwrap_or_default();
    println!(
        "failed run: {} -> src.txt restored: {}, rollback: {}",
        failed.err().map(|e| e.code().to_string()).unwrap_or_default(),
        before == after,
        serde_json::Value::Object(stored.metadata["workspace"]["rollback"].as_object().cloned().unwrap_or_default()),
    );
    Ok(())
}
