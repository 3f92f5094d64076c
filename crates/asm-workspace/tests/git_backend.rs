#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The git backend against real repositories.

mod common;

use asm_core::ErrorCode;
use asm_workspace::{
    BackendKind, DiffOptions, SAFETY_REF_PREFIX, SnapshotLabel, Strategy, Workspace, WorkspaceError, WorkspaceOptions,
};
use common::{git, observable, read, repo, write};

fn git_options() -> WorkspaceOptions {
    WorkspaceOptions::new().strategy(Strategy::Git)
}

#[tokio::test]
async fn a_clean_tree_snapshots_as_head() {
    let (_dir, root) = repo(&[("a.txt", "a\n")]);
    let workspace = Workspace::open(&root, git_options()).await.unwrap();
    assert_eq!(workspace.backend(), BackendKind::Git);
    let seen = observable(&root);
    let snapshot = workspace.snapshot(Some(SnapshotLabel::Before)).await.unwrap();
    assert_eq!(snapshot.reference, git(&root, &["rev-parse", "HEAD"]));
    assert_eq!(snapshot.metadata["dirty"], false);
    assert_eq!(snapshot.metadata["includes_untracked"], true);
    assert_eq!(snapshot.metadata["branch"], "refs/heads/main");
    assert_eq!(observable(&root), seen);
}

#[tokio::test]
async fn a_dirty_tree_with_untracked_files_becomes_a_dangling_commit_and_nothing_is_touched() {
    let (_dir, root) = repo(&[("a.txt", "a\n"), ("b.txt", "b\n")]);
    write(&root, "a.txt", "a changed\n");
    write(&root, "staged.txt", "staged\n");
    git(&root, &["add", "staged.txt"]);
    write(&root, "untracked/new.txt", "new\n");
    std::fs::remove_file(root.join("b.txt")).unwrap();
    let seen = observable(&root);

    let workspace = Workspace::open(&root, git_options()).await.unwrap();
    let snapshot = workspace.snapshot(None).await.unwrap();
    assert_eq!(snapshot.metadata["dirty"], true);
    let head = git(&root, &["rev-parse", "HEAD"]);
    assert_ne!(snapshot.reference, head);
    assert_eq!(git(&root, &["rev-parse", &format!("{}^", snapshot.reference)]), head, "parent is HEAD");
    let files = git(&root, &["ls-tree", "-r", "--name-only", &snapshot.reference]);
    assert_eq!(files.lines().collect::<Vec<_>>(), vec!["a.txt", "staged.txt", "untracked/new.txt"]);
    assert_eq!(git(&root, &["show", &format!("{}:a.txt", snapshot.reference)]), "a changed");
    // HEAD, branch, the index file byte for byte, the work tree and the stash list are as before;
    // the snapshot commit is not on any ref.
    assert_eq!(observable(&root), seen);
    assert!(git(&root, &["for-each-ref", "--contains", &snapshot.reference]).is_empty());
}

#[tokio::test]
async fn gitignored_files_are_not_in_the_snapshot() {
    let (_dir, root) = repo(&[(".gitignore", "*.log\nbuild/\n"), ("src.txt", "x\n")]);
    let workspace = Workspace::open(&root, git_options()).await.unwrap();
    let before = workspace.snapshot(None).await.unwrap();
    write(&root, "debug.log", "noise\n");
    write(&root, "build/out.bin", "noise\n");
    let after = workspace.snapshot(None).await.unwrap();
    assert_eq!(after.metadata["dirty"], false);
    let diff = workspace.diff(&before, &after, DiffOptions::with_patch()).await.unwrap();
    assert_eq!(diff.files_changed, 0);
    assert!(diff.patch.is_none());
}

#[tokio::test]
async fn diff_counts_lines_lists_paths_and_captures_binary_patches() {
    let (_dir, root) = repo(&[("a.txt", "1\n2\n3\n"), ("gone.txt", "x\ny\n")]);
    std::fs::write(root.join("blob.bin"), [0_u8, 1, 2, 3, 255, 0]).unwrap();
    git(&root, &["add", "blob.bin"]);
    git(&root, &["commit", "-q", "-m", "binary"]);
    let workspace = Workspace::open(&root, git_options()).await.unwrap();
    let before = workspace.snapshot(None).await.unwrap();

    write(&root, "a.txt", "1\nTWO\n3\n4\n");
    std::fs::remove_file(root.join("gone.txt")).unwrap(); // deleted during the run
    std::fs::write(root.join("blob.bin"), [9_u8, 0, 9, 0, 9]).unwrap();
    write(&root, "new dir/ünïcode name.txt", "hello\n");
    let after = workspace.snapshot(None).await.unwrap();

    let diff = workspace.diff(&before, &after, DiffOptions::with_patch()).await.unwrap();
    assert_eq!(diff.changed_paths, vec!["a.txt", "blob.bin", "gone.txt", "new dir/ünïcode name.txt"]);
    assert_eq!(diff.files_changed, 4);
    // a.txt: +2 -1; gone.txt: -2; new file: +1; the binary file counts 0.
    assert_eq!((diff.insertions, diff.deletions), (3, 3));
    let patch = diff.patch.clone().unwrap();
    assert!(patch.contains("GIT binary patch"), "binary content is in the patch");
    assert!(patch.contains("+TWO"));
    assert_eq!(diff.patch_bytes, Some(patch.len() as u64));

    // The patch is complete: applied in reverse to the work tree it restores the before state.
    std::fs::write(root.join("p.diff"), &patch).unwrap();
    git(&root, &["apply", "-R", "p.diff"]);
    std::fs::remove_file(root.join("p.diff")).unwrap();
    assert_eq!(read(&root, "a.txt"), "1\n2\n3\n");
    assert_eq!(std::fs::read(root.join("blob.bin")).unwrap(), vec![0, 1, 2, 3, 255, 0]);

    let capped = workspace.diff(&before, &after, DiffOptions::with_patch().max_patch_bytes(10)).await.unwrap();
    assert!(capped.patch.is_none());
    assert!(capped.patch_truncated);
    assert_eq!(capped.patch_bytes, Some(patch.len() as u64));
    let without = workspace.diff(&before, &after, DiffOptions::default()).await.unwrap();
    assert!(without.patch.is_none() && !without.patch_truncated);
}

#[tokio::test]
async fn symlinks_are_snapshotted_as_links() {
    let (_dir, root) = repo(&[("target.txt", "t\n")]);
    let workspace = Workspace::open(&root, git_options()).await.unwrap();
    let before = workspace.snapshot(None).await.unwrap();
    std::os::unix::fs::symlink("target.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/outside", root.join("dangling")).unwrap();
    let after = workspace.snapshot(None).await.unwrap();
    let diff = workspace.diff(&before, &after, DiffOptions::with_patch()).await.unwrap();
    assert_eq!(diff.changed_paths, vec!["dangling", "link"]);
    let mode = git(&root, &["ls-tree", &after.reference, "link"]);
    assert!(mode.starts_with("120000"), "{mode}");
}

#[tokio::test]
async fn a_repository_without_commits_is_a_typed_error_with_git_and_hash_with_auto() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    write(dir.path(), "a.txt", "a");
    let error = Workspace::open(dir.path(), git_options()).await.unwrap_err();
    assert!(matches!(error, WorkspaceError::NoCommits { .. }), "{error:?}");
    let core: asm_core::Error = error.into();
    assert_eq!(core.code(), ErrorCode::ValidationError);
    assert_eq!(core.details()["workspace_error"], "no_commits");
    let auto = Workspace::open(dir.path(), WorkspaceOptions::new()).await.unwrap();
    assert_eq!(auto.backend(), BackendKind::Hash);
    assert!(auto.snapshot(None).await.unwrap().file_hashes().unwrap().contains_key("a.txt"));
}

#[tokio::test]
async fn bad_paths_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let error = Workspace::open(dir.path(), git_options()).await.unwrap_err();
    assert!(matches!(error, WorkspaceError::NotAGitRepository { .. }), "{error:?}");
    assert_eq!(Workspace::open(dir.path(), WorkspaceOptions::new()).await.unwrap().backend(), BackendKind::Hash);

    let missing = dir.path().join("missing");
    for strategy in [Strategy::Auto, Strategy::Git, Strategy::Hash] {
        let error = Workspace::open(&missing, WorkspaceOptions::new().strategy(strategy)).await.unwrap_err();
        assert!(matches!(error, WorkspaceError::PathNotFound { .. }), "{error:?}");
    }
    write(dir.path(), "file", "x");
    let error = Workspace::open(dir.path().join("file"), WorkspaceOptions::new()).await.unwrap_err();
    assert!(matches!(error, WorkspaceError::NotADirectory { .. }), "{error:?}");
    let error = Workspace::open("", WorkspaceOptions::new()).await.unwrap_err();
    assert!(matches!(error, WorkspaceError::EmptyPath));
    let error = Workspace::open(dir.path(), WorkspaceOptions::new().ignore_path("../up")).await.unwrap_err();
    assert!(matches!(error, WorkspaceError::InvalidOption { .. }), "{error:?}");
    assert!(matches!("svn".parse::<Strategy>(), Err(WorkspaceError::UnknownStrategy(_))));
}

#[tokio::test]
async fn a_subdirectory_opens_the_whole_work_tree() {
    let (_dir, root) = repo(&[("sub/a.txt", "a\n")]);
    let workspace = Workspace::open(root.join("sub"), WorkspaceOptions::new()).await.unwrap();
    assert_eq!(workspace.backend(), BackendKind::Git);
    assert_eq!(workspace.path(), root.as_path());
}

#[tokio::test]
async fn snapshots_of_different_backends_or_workspaces_do_not_compare() {
    let (_dir, root) = repo(&[("a.txt", "a\n")]);
    let (_dir2, other) = repo(&[("b.txt", "b\n")]);
    let git_ws = Workspace::open(&root, git_options()).await.unwrap();
    let hash_ws = Workspace::open(&root, WorkspaceOptions::new().strategy(Strategy::Hash)).await.unwrap();
    let other_ws = Workspace::open(&other, git_options()).await.unwrap();
    let g = git_ws.snapshot(None).await.unwrap();
    let h = hash_ws.snapshot(None).await.unwrap();
    let o = other_ws.snapshot(None).await.unwrap();
    assert!(matches!(git_ws.diff(&g, &h, DiffOptions::default()).await, Err(WorkspaceError::BackendMismatch { .. })));
    assert!(matches!(git_ws.diff(&g, &o, DiffOptions::default()).await, Err(WorkspaceError::PathMismatch { .. })));
    assert!(matches!(git_ws.rollback(&o, None).await, Err(WorkspaceError::PathMismatch { .. })));
}

#[tokio::test]
async fn rollback_restores_the_tree_head_and_index_and_removes_new_untracked_files() {
    let (_dir, root) = repo(&[("a.txt", "a\n"), ("b.txt", "b\n"), ("keep/c.txt", "c\n"), (".gitignore", "*.log\n")]);
    // A dirty starting point: a modification, a staged file, an untracked file.
    write(&root, "a.txt", "a dirty\n");
    write(&root, "staged.txt", "staged\n");
    git(&root, &["add", "staged.txt"]);
    write(&root, "untracked-before.txt", "u\n");
    let start = observable(&root);
    let cached_before = git(&root, &["diff", "--cached", "--name-status"]);

    let workspace = Workspace::open(&root, git_options()).await.unwrap();
    let before = workspace.snapshot_restorable(Some(SnapshotLabel::Before)).await.unwrap();

    // The "run": edits, deletes, creates files (one in a new directory), stages and commits.
    write(&root, "a.txt", "a by the run\n");
    std::fs::remove_file(root.join("b.txt")).unwrap();
    write(&root, "created/deep/new.txt", "new\n");
    write(&root, "untracked-before.txt", "changed by the run\n");
    write(&root, "run.log", "ignored output\n");
    git(&root, &["add", "keep/c.txt", "created/deep/new.txt"]);
    write(&root, "keep/c.txt", "c by the run\n");
    git(&root, &["add", "keep/c.txt"]);
    git(&root, &["commit", "-q", "-m", "the run committed"]);
    let run_head = git(&root, &["rev-parse", "HEAD"]);
    let after = workspace.snapshot(Some(SnapshotLabel::AfterFailure)).await.unwrap();

    let report = workspace.rollback(&before, Some(&after)).await.unwrap();
    assert!(report.head_reset);
    assert_eq!(report.removed, vec!["created/deep/new.txt"]);
    let safety = report.safety_ref.unwrap();
    assert!(safety.starts_with(SAFETY_REF_PREFIX));

    assert_eq!(read(&root, "a.txt"), "a dirty\n");
    assert_eq!(read(&root, "b.txt"), "b\n");
    assert_eq!(read(&root, "keep/c.txt"), "c\n");
    assert_eq!(read(&root, "untracked-before.txt"), "u\n");
    assert!(!root.join("created").exists(), "created files and their directories are removed");
    assert_eq!(read(&root, "run.log"), "ignored output\n", "ignored files are never touched");
    // HEAD and the branch are back (not on the synthetic snapshot commit), the index too.
    let end = observable(&root);
    assert_eq!(end.0, start.0);
    assert_eq!(end.1, "refs/heads/main");
    assert_eq!(git(&root, &["diff", "--cached", "--name-status"]), cached_before);
    // The same status as at the start, plus the ignored file the run wrote (only visible with
    // --ignored).
    let mut expected: Vec<String> = start.3.lines().map(str::to_owned).collect();
    expected.sort();
    let mut now: Vec<String> = end.3.lines().map(str::to_owned).collect();
    now.sort();
    assert_eq!(now, expected);
    // Nothing the run did is lost: the safety ref has its commit as parent and its files.
    assert_eq!(git(&root, &["rev-parse", &format!("{safety}^")]), run_head);
    assert_eq!(git(&root, &["show", &format!("{safety}:created/deep/new.txt")]), "new");
    assert_eq!(git(&root, &["show", &format!("{safety}:a.txt")]), "a by the run");
}

#[tokio::test]
async fn rollback_is_refused_when_the_tree_changed_since_and_nothing_is_written() {
    let (_dir, root) = repo(&[("a.txt", "a\n")]);
    let workspace = Workspace::open(&root, git_options()).await.unwrap();
    let before = workspace.snapshot_restorable(None).await.unwrap();
    write(&root, "a.txt", "run\n");
    let after = workspace.snapshot(None).await.unwrap();
    write(&root, "a.txt", "someone else, later\n");
    write(&root, "later.txt", "later\n");
    let seen = observable(&root);
    let error = workspace.rollback(&before, Some(&after)).await.unwrap_err();
    assert!(matches!(error, WorkspaceError::ChangedSinceSnapshot { .. }), "{error:?}");
    assert_eq!(asm_core::Error::from(error).code(), ErrorCode::InvalidOperation);
    assert_eq!(observable(&root), seen);
    assert_eq!(read(&root, "a.txt"), "someone else, later\n");
    assert!(git(&root, &["for-each-ref", SAFETY_REF_PREFIX]).is_empty(), "no safety ref was written");

    // Without the expectation, the current state is rolled back (and kept in the safety ref).
    let report = workspace.rollback(&before, None).await.unwrap();
    assert_eq!(read(&root, "a.txt"), "a\n");
    assert!(!root.join("later.txt").exists());
    assert_eq!(report.removed, vec!["later.txt"]);
    assert_eq!(report.restored, vec!["a.txt"]);
}

#[tokio::test]
async fn rollback_restores_symlinks_and_replaced_directories() {
    let (_dir, root) = repo(&[("t.txt", "t\n"), ("d/inner.txt", "i\n")]);
    std::os::unix::fs::symlink("t.txt", root.join("link")).unwrap();
    git(&root, &["add", "link"]);
    git(&root, &["commit", "-q", "-m", "link"]);
    let workspace = Workspace::open(&root, git_options()).await.unwrap();
    let before = workspace.snapshot_restorable(None).await.unwrap();
    std::fs::remove_file(root.join("link")).unwrap();
    write(&root, "link", "now a file\n");
    std::fs::remove_dir_all(root.join("d")).unwrap();
    write(&root, "d", "d is a file now\n");
    let after = workspace.snapshot(None).await.unwrap();
    workspace.rollback(&before, Some(&after)).await.unwrap();
    assert_eq!(std::fs::read_link(root.join("link")).unwrap(), std::path::PathBuf::from("t.txt"));
    assert_eq!(read(&root, "d/inner.txt"), "i\n");
    assert!(git(&root, &["status", "--porcelain"]).is_empty());
}
