#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Repeated git snapshots of one workspace (which reuse the alternate index of the previous
//! one) give the same tree as a snapshot taken by a fresh workspace.

mod common;

use asm_workspace::{Strategy, Workspace, WorkspaceOptions};
use common::{git, observable, repo, write};

async fn tree(workspace: &Workspace) -> String {
    workspace.snapshot(None).await.unwrap().metadata["tree"].as_str().unwrap().to_owned()
}

async fn fresh_tree(root: &std::path::Path) -> String {
    tree(&Workspace::open(root, WorkspaceOptions::new().strategy(Strategy::Git)).await.unwrap()).await
}

fn files(root: &std::path::Path, tree: &str) -> Vec<String> {
    git(root, &["ls-tree", "-r", "--name-only", tree]).lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn a_file_ignored_after_an_earlier_snapshot_leaves_the_tree() {
    let (_dir, root) = repo(&[("a.txt", "a\n")]);
    let workspace = Workspace::open(&root, WorkspaceOptions::new().strategy(Strategy::Git)).await.unwrap();
    write(&root, "debug.log", "noise\n");
    let first = tree(&workspace).await;
    assert!(files(&root, &first).contains(&"debug.log".to_owned()));
    write(&root, ".gitignore", "*.log\n");
    let seen = observable(&root);
    let second = tree(&workspace).await;
    assert_eq!(second, fresh_tree(&root).await);
    assert_eq!(files(&root, &second), vec![".gitignore", "a.txt"]);
    assert_eq!(observable(&root), seen);
}

#[tokio::test]
async fn a_force_added_ignored_file_deleted_and_recreated_stays_tracked() {
    let (_dir, root) = repo(&[(".gitignore", "*.log\n"), ("a.txt", "a\n")]);
    write(&root, "kept.log", "v1\n");
    git(&root, &["add", "-f", "kept.log"]);
    git(&root, &["commit", "-q", "-m", "force"]);
    let workspace = Workspace::open(&root, WorkspaceOptions::new().strategy(Strategy::Git)).await.unwrap();
    std::fs::remove_file(root.join("kept.log")).unwrap();
    let first = tree(&workspace).await;
    assert!(!files(&root, &first).contains(&"kept.log".to_owned()));
    write(&root, "kept.log", "v2\n");
    let second = tree(&workspace).await;
    assert_eq!(second, fresh_tree(&root).await);
    assert!(files(&root, &second).contains(&"kept.log".to_owned()));
}

#[tokio::test]
async fn repeated_snapshots_follow_the_work_tree_and_the_real_index() {
    let (_dir, root) = repo(&[("a.txt", "a\n"), ("b.txt", "b\n")]);
    let workspace = Workspace::open(&root, WorkspaceOptions::new().strategy(Strategy::Git)).await.unwrap();
    write(&root, "a.txt", "changed\n");
    write(&root, "new.txt", "new\n");
    let first = tree(&workspace).await;
    assert_eq!(first, fresh_tree(&root).await);
    assert_eq!(tree(&workspace).await, first, "same state, same tree");
    std::fs::remove_file(root.join("new.txt")).unwrap();
    write(&root, "b.txt", "changed too\n");
    let second = tree(&workspace).await;
    assert_eq!(second, fresh_tree(&root).await);
    assert_eq!(files(&root, &second), vec!["a.txt", "b.txt"]);
    // The real index changes: staged content stays whatever the work tree holds.
    git(&root, &["add", "a.txt"]);
    let restorable = workspace.snapshot_restorable(None).await.unwrap();
    assert_eq!(restorable.metadata["tree"].as_str().unwrap(), second);
}

fn head_of(snapshot: &asm_workspace::Snapshot) -> (String, Option<String>) {
    let branch = snapshot.metadata.get("branch").and_then(|b| b.as_str()).map(str::to_owned);
    (snapshot.metadata["head_ref"].as_str().unwrap().to_owned(), branch)
}

#[tokio::test]
async fn head_is_followed_across_commits_packed_refs_detaching_and_worktrees() {
    let (dir, root) = repo(&[("a.txt", "a\n")]);
    let workspace = Workspace::open(&root, WorkspaceOptions::new().strategy(Strategy::Git)).await.unwrap();
    let main = Some("refs/heads/main".to_owned());
    let snapshot = workspace.snapshot(None).await.unwrap();
    assert_eq!(head_of(&snapshot), (git(&root, &["rev-parse", "HEAD"]), main.clone()));

    // Packed, then a new loose commit on top.
    git(&root, &["pack-refs", "--all"]);
    let snapshot = workspace.snapshot(None).await.unwrap();
    assert_eq!(head_of(&snapshot), (git(&root, &["rev-parse", "HEAD"]), main.clone()));
    write(&root, "a.txt", "two\n");
    git(&root, &["commit", "-q", "-am", "two"]);
    let snapshot = workspace.snapshot(None).await.unwrap();
    assert_eq!(snapshot.reference, git(&root, &["rev-parse", "HEAD"]), "clean: HEAD itself");
    assert_eq!(head_of(&snapshot), (git(&root, &["rev-parse", "HEAD"]), main.clone()));

    // Detached.
    git(&root, &["checkout", "-q", "--detach", "HEAD~1"]);
    let snapshot = workspace.snapshot(None).await.unwrap();
    assert_eq!(head_of(&snapshot), (git(&root, &["rev-parse", "HEAD"]), None));
    assert_eq!(snapshot.metadata["dirty"], false);

    // A linked worktree on its own branch.
    let linked = dir.path().canonicalize().unwrap().join("linked");
    git(&root, &["worktree", "add", "-q", "-b", "other", linked.to_str().unwrap(), "main"]);
    let other = Workspace::open(&linked, WorkspaceOptions::new().strategy(Strategy::Git)).await.unwrap();
    let snapshot = other.snapshot(None).await.unwrap();
    assert_eq!(head_of(&snapshot), (git(&linked, &["rev-parse", "HEAD"]), Some("refs/heads/other".to_owned())));
    write(&linked, "b.txt", "b\n");
    git(&linked, &["add", "b.txt"]);
    git(&linked, &["commit", "-q", "-m", "b"]);
    let snapshot = other.snapshot(None).await.unwrap();
    assert_eq!(head_of(&snapshot), (git(&linked, &["rev-parse", "HEAD"]), Some("refs/heads/other".to_owned())));
    assert_eq!(snapshot.metadata["dirty"], false);
    let snapshot = workspace.snapshot(None).await.unwrap();
    assert_eq!(head_of(&snapshot), (git(&root, &["rev-parse", "HEAD"]), None));
}
