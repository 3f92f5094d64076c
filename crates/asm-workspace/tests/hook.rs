#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `WorkspaceHook` through the real runtime: SessionManager + the memory store + an adapter that
//! edits files in its working directory.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use asm_core::{Capability, Error, ErrorCode, EventKind, Result, Run, RunInput};
use asm_ports::{ArtifactStore, EventSink, ExecuteOutcome, ExecuteRequest, ProviderAdapter, ProviderEvent};
use asm_runtime::{NewSession, RunOptions, SessionManager};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;
use asm_workspace::{FileArtifactStore, SAFETY_REF_PREFIX, WorkspaceHook};
use common::{git, read, repo, write};

type Edit = Arc<dyn Fn(&Path) + Send + Sync>;

/// A provider that edits files in `cwd`, emits one message, and succeeds or fails.
struct EditingAdapter {
    cwd: PathBuf,
    edit: Edit,
    fail: Option<Error>,
    calls: AtomicUsize,
}

impl std::fmt::Debug for EditingAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EditingAdapter").field("cwd", &self.cwd).finish_non_exhaustive()
    }
}

impl EditingAdapter {
    fn new(cwd: &Path, edit: impl Fn(&Path) + Send + Sync + 'static) -> Self {
        Self { cwd: cwd.to_owned(), edit: Arc::new(edit), fail: None, calls: AtomicUsize::new(0) }
    }
    fn failing(mut self, error: Error) -> Self {
        self.fail = Some(error);
        self
    }
}

#[async_trait]
impl ProviderAdapter for EditingAdapter {
    fn name(&self) -> &str {
        "editor"
    }
    fn capabilities(&self) -> Vec<Capability> {
        Vec::new()
    }
    async fn execute(&self, _request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (self.edit)(&self.cwd);
        sink.emit(ProviderEvent::new(EventKind::MessageReceived).data("role", "assistant").data("content", "edited"))
            .await?;
        match &self.fail {
            Some(error) => Err(error.clone()),
            None => Ok(ExecuteOutcome::text("edited")),
        }
    }
}

fn kinds(events: &[asm_core::StoredEvent]) -> Vec<String> {
    events.iter().map(|e| e.kind.to_string()).collect()
}

/// Runs one run to its end through the explicit lifecycle; returns the stored run and events.
async fn run_with(
    adapter: EditingAdapter,
    hook: WorkspaceHook,
) -> (Result<()>, Run, Vec<asm_core::StoredEvent>, Arc<EditingAdapter>) {
    let adapter = Arc::new(adapter);
    let manager = SessionManager::new(InMemorySessionStore::new(), adapter.clone());
    let session = manager.start_session(NewSession::new("t")).await.unwrap();
    manager.activate_session(&session.id).await.unwrap();
    let options = RunOptions::new().hook(hook);
    let run = manager.start_run(&session.id, RunInput::user("edit"), options.clone()).await.unwrap();
    let result = manager.execute_run(&run.id, options).await.map(|_| ());
    let stored = manager.get_run(&run.id).await.unwrap();
    let events = manager.session_events(&session.id, asm_ports::EventQuery::new()).await.unwrap();
    (result, stored, events, adapter)
}

#[tokio::test]
async fn a_successful_git_run_records_snapshots_diff_and_patch_in_order() {
    let (_dir, root) = repo(&[("a.txt", "one\n")]);
    let adapter = EditingAdapter::new(&root, |cwd| {
        write(cwd, "a.txt", "one\ntwo\n");
        write(cwd, "new.txt", "new\n");
    });
    let (result, run, events, _) = run_with(adapter, WorkspaceHook::git(&root)).await;
    result.unwrap();
    assert_eq!(
        kinds(&events),
        vec![
            "session_created",
            "session_started",
            "run_started",
            "message_sent",
            "workspace_snapshot_taken",
            "message_received",
            "workspace_snapshot_taken",
            "workspace_diff_computed",
            "run_completed",
        ]
    );
    let snaps: Vec<&asm_core::StoredEvent> =
        events.iter().filter(|e| e.kind == EventKind::WorkspaceSnapshotTaken).collect();
    assert_eq!(snaps[0].data["label"], "before");
    assert_eq!(snaps[1].data["label"], "after");
    assert_eq!(snaps[0].data["backend"], "git");
    assert_eq!(snaps[0].data["ref"], git(&root, &["rev-parse", "HEAD"]));
    let diff_event = events.iter().find(|e| e.kind == EventKind::WorkspaceDiffComputed).unwrap();
    assert_eq!(diff_event.data["files_changed"], 2);
    assert_eq!(diff_event.data["insertions"], 2);
    assert_eq!(diff_event.data["deletions"], 0);
    assert_eq!(diff_event.data["has_patch"], true);
    assert_eq!(diff_event.provider.as_deref(), Some("session_manager"));

    let summary = &run.metadata["workspace"];
    assert_eq!(summary["backend"], "git");
    assert_eq!(summary["before_ref"], snaps[0].data["ref"]);
    assert_eq!(summary["after_ref"], snaps[1].data["ref"]);
    assert_eq!(summary["diff"]["changed_paths"], serde_json::json!(["a.txt", "new.txt"]));
    assert!(summary["diff"]["patch"].as_str().unwrap().contains("+two"));
    let extra = &run.output.unwrap().extra["workspace"];
    assert_eq!(extra["before_snapshot"]["label"], "before");
    assert_eq!(extra["after_snapshot"]["metadata"]["dirty"], true);
    assert_eq!(extra["diff"]["files_changed"], 2);
    // The run's edits are still there (no rollback on success) and HEAD did not move.
    assert_eq!(read(&root, "new.txt"), "new\n");
    assert_eq!(git(&root, &["rev-parse", "HEAD"]), summary["before_ref"].as_str().unwrap());
}

#[tokio::test]
async fn a_failed_git_run_rolls_back_and_keeps_its_own_error() {
    let (_dir, root) = repo(&[("a.txt", "one\n"), ("b.txt", "b\n")]);
    write(&root, "untracked-before.txt", "u\n");
    let adapter = EditingAdapter::new(&root, |cwd| {
        write(cwd, "a.txt", "broken\n");
        std::fs::remove_file(cwd.join("b.txt")).unwrap();
        write(cwd, "junk/created.txt", "junk\n");
    })
    .failing(Error::new(ErrorCode::ProviderError, "the agent crashed"));
    let hook = WorkspaceHook::git(&root).rollback_on_failure(true);
    let (result, run, events, _) = run_with(adapter, hook).await;
    assert_eq!(result.unwrap_err().code(), ErrorCode::ProviderError);
    let tail: Vec<String> = kinds(&events).into_iter().rev().take(4).collect();
    assert_eq!(tail, vec!["run_failed", "workspace_diff_computed", "workspace_snapshot_taken", "message_received"]);
    let after = events.iter().filter(|e| e.kind == EventKind::WorkspaceSnapshotTaken).nth(1).unwrap();
    assert_eq!(after.data["label"], "after_failure");

    assert_eq!(read(&root, "a.txt"), "one\n");
    assert_eq!(read(&root, "b.txt"), "b\n");
    assert_eq!(read(&root, "untracked-before.txt"), "u\n");
    assert!(!root.join("junk").exists(), "files the run created are removed");
    let rollback = &run.metadata["workspace"]["rollback"];
    assert_eq!(rollback["removed"], serde_json::json!(["junk/created.txt"]));
    let safety = rollback["safety_ref"].as_str().unwrap();
    assert!(safety.starts_with(SAFETY_REF_PREFIX));
    assert_eq!(git(&root, &["show", &format!("{safety}:a.txt")]), "broken");
    assert_eq!(run.metadata["workspace"]["diff"]["files_changed"], 3);
}

#[tokio::test]
async fn a_failed_hash_run_rolls_back_too() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    write(&root, "a.txt", "one");
    write(&root, "node_modules/dep.js", "dep");
    let adapter = EditingAdapter::new(&root, |cwd| {
        write(cwd, "a.txt", "two");
        write(cwd, "created.txt", "c");
        write(cwd, "node_modules/dep.js", "excluded: not rolled back");
    })
    .failing(Error::new(ErrorCode::ProviderError, "boom"));
    let hook = WorkspaceHook::hash(&root).rollback_on_failure(true);
    let (result, run, _, _) = run_with(adapter, hook).await;
    assert_eq!(result.unwrap_err().code(), ErrorCode::ProviderError);
    assert_eq!(read(&root, "a.txt"), "one");
    assert!(!root.join("created.txt").exists());
    assert_eq!(read(&root, "node_modules/dep.js"), "excluded: not rolled back");
    assert_eq!(run.metadata["workspace"]["backend"], "hash");
    assert_eq!(run.metadata["workspace"]["rollback"]["restored"], serde_json::json!(["a.txt"]));
}

#[tokio::test]
async fn hook_ignore_rules_reach_the_hash_backend() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    write(&root, "a.txt", "one");
    let adapter = EditingAdapter::new(&root, |cwd| {
        write(cwd, "out/build.o", "x");
        write(cwd, "trace.log", "x");
        write(cwd, "a.txt", "two");
    });
    let hook = WorkspaceHook::hash(&root).ignore_path("out").ignore_glob("*.log");
    let (result, run, _, _) = run_with(adapter, hook).await;
    result.unwrap();
    assert_eq!(run.metadata["workspace"]["diff"]["changed_paths"], serde_json::json!(["a.txt"]));
}

#[tokio::test]
async fn a_patch_over_the_inline_cap_is_stored_whole_as_an_artifact() {
    let (_dir, root) = repo(&[("big.txt", "start\n")]);
    let artifacts_dir = tempfile::tempdir().unwrap();
    let store = FileArtifactStore::open(artifacts_dir.path()).unwrap();
    let adapter = EditingAdapter::new(&root, |cwd| {
        let body: String = (0..5_000).map(|i| format!("line {i}\n")).collect();
        write(cwd, "big.txt", body);
    });
    let hook = WorkspaceHook::git(&root).max_patch_bytes(1_024).artifact_store(store.clone());
    let (result, run, events, _) = run_with(adapter, hook).await;
    result.unwrap();
    let diff = &run.metadata["workspace"]["diff"];
    assert!(diff.get("patch").is_none(), "not inline");
    assert_eq!(diff["patch_truncated"], false);
    let key = diff["patch_ref"].as_str().unwrap();
    assert!(key.starts_with("patch_"), "{key}");
    let stored = store.get(key).await.unwrap();
    assert_eq!(stored.len() as u64, diff["patch_bytes"].as_u64().unwrap());
    let (before, after) = (
        run.metadata["workspace"]["before_ref"].as_str().unwrap(),
        run.metadata["workspace"]["after_ref"].as_str().unwrap(),
    );
    let expected = common::git_raw(&root, &["diff-tree", "-r", "-p", "--binary", "--no-renames", before, after]);
    assert_eq!(stored, expected.stdout, "the whole patch, byte for byte");
    let diff_event = events.iter().find(|e| e.kind == EventKind::WorkspaceDiffComputed).unwrap();
    assert_eq!(diff_event.data["has_patch"], true);
    assert_eq!(diff_event.data["patch_ref"], key);
}

#[tokio::test]
async fn without_an_artifact_store_an_oversized_patch_is_recorded_as_left_out() {
    let (_dir, root) = repo(&[("big.txt", "start\n")]);
    let adapter = EditingAdapter::new(&root, |cwd| write(cwd, "big.txt", "x\n".repeat(2_000)));
    let (result, run, _, _) = run_with(adapter, WorkspaceHook::git(&root).max_patch_bytes(100)).await;
    result.unwrap();
    let diff = &run.metadata["workspace"]["diff"];
    assert_eq!(diff["patch_truncated"], true);
    assert!(diff["patch_bytes"].as_u64().unwrap() > 100);
    assert!(diff.get("patch").is_none());
}

#[tokio::test]
async fn no_changes_leave_the_artifact_store_untouched() {
    let (_dir, root) = repo(&[("a.txt", "a\n")]);
    let artifacts_dir = tempfile::tempdir().unwrap();
    let store = FileArtifactStore::open(artifacts_dir.path()).unwrap();
    let adapter = EditingAdapter::new(&root, |_| {});
    let hook = WorkspaceHook::git(&root).always_store_patch(true).artifact_store(store.clone());
    let (result, run, _, _) = run_with(adapter, hook).await;
    result.unwrap();
    assert_eq!(run.metadata["workspace"]["diff"]["files_changed"], 0);
    assert_eq!(run.metadata["workspace"]["diff"]["has_patch"], false);
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_workspaces_fail_the_run_before_the_provider_is_called() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_repo = dir.path().join("plain");
    std::fs::create_dir(&not_a_repo).unwrap();
    let empty_repo = dir.path().join("empty");
    std::fs::create_dir(&empty_repo).unwrap();
    git(&empty_repo, &["init", "-q"]);
    let cases = [
        (WorkspaceHook::new(dir.path().join("missing")), "path_not_found"),
        (WorkspaceHook::git(&not_a_repo), "not_a_git_repository"),
        (WorkspaceHook::git(&empty_repo), "no_commits"),
        (WorkspaceHook::hash(dir.path()).ignore_path("/abs"), "invalid_option"),
    ];
    for (hook, kind) in cases {
        let adapter = EditingAdapter::new(dir.path(), |_| panic!("the provider must not be called"));
        let (result, run, events, adapter) = run_with(adapter, hook).await;
        let error = result.unwrap_err();
        assert_eq!(error.code(), ErrorCode::ValidationError, "{kind}");
        assert_eq!(error.details()["workspace_error"], kind);
        assert_eq!(adapter.calls.load(Ordering::SeqCst), 0, "{kind}");
        assert_eq!(run.status, asm_core::RunStatus::Failed);
        assert!(!events.iter().any(|e| e.kind == EventKind::WorkspaceSnapshotTaken), "{kind}");
    }
}

#[tokio::test]
async fn a_finish_error_fails_a_successful_run_and_is_recorded() {
    let (_dir, root) = repo(&[("a.txt", "a\n")]);
    let adapter = EditingAdapter::new(&root, |cwd| {
        // The run destroys the repository: the after-snapshot cannot be taken.
        std::fs::remove_dir_all(cwd.join(".git")).unwrap();
    });
    let (result, run, _, _) = run_with(adapter, WorkspaceHook::git(&root)).await;
    let error = result.unwrap_err();
    assert_eq!(error.code(), ErrorCode::StorageError, "{error:?}");
    assert_eq!(run.metadata["workspace"]["error"]["error_code"], "storage_error");
}

#[tokio::test]
async fn one_hook_serves_concurrent_runs() {
    let (_dir, root) = repo(&[("a.txt", "a\n")]);
    let hook = WorkspaceHook::git(&root);
    let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::replying("ok"));
    let runs = (0..4).map(|_| manager.run_once(RunInput::user("x"), RunOptions::new().hook(hook.clone())));
    for result in futures::future::join_all(runs).await {
        let result = result.unwrap();
        assert_eq!(result.result.run.metadata["workspace"]["diff"]["files_changed"], 0);
    }
    assert_eq!(hook.active_runs(), 0);
}
