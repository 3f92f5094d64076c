#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The hash backend on temporary directories.

mod common;

use std::collections::BTreeMap;

use asm_workspace::{BackendKind, DiffOptions, Strategy, Workspace, WorkspaceError, WorkspaceOptions};
use common::{read, write};

fn hash_options() -> WorkspaceOptions {
    WorkspaceOptions::new().strategy(Strategy::Hash)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn hashes_every_file_and_the_ref_is_the_hash_of_the_sorted_lines() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.txt", "b");
    write(dir.path(), ".hidden", "h");
    write(dir.path(), "sub/a.txt", "a");
    let workspace = Workspace::open(dir.path(), hash_options()).await.unwrap();
    assert_eq!(workspace.backend(), BackendKind::Hash);
    let snapshot = workspace.snapshot(None).await.unwrap();
    let hashes = snapshot.file_hashes().unwrap();
    let expected: BTreeMap<String, String> = [(".hidden", "h"), ("b.txt", "b"), ("sub/a.txt", "a")]
        .into_iter()
        .map(|(p, c)| (p.to_owned(), sha256_hex(c.as_bytes())))
        .collect();
    assert_eq!(hashes, expected);
    let lines: Vec<String> = expected.iter().map(|(p, h)| format!("{p}:{h}")).collect();
    assert_eq!(snapshot.reference, sha256_hex(lines.join("\n").as_bytes()));
    assert_eq!(snapshot.metadata["file_count"], 3);
    // Same content, same ref.
    assert_eq!(workspace.snapshot(None).await.unwrap().reference, snapshot.reference);
}

#[tokio::test]
async fn excluded_roots_ignore_paths_and_globs_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    for rel in [
        "src/main.rs",
        ".git/config",
        "node_modules/x/index.js",
        "deps/d.ex",
        "_build/b",
        "target/debug/bin",
        "logs/app.log",
        "deep/nested/trace.log",
        "keep.log.txt",
        "tmp/cache/a.tmp",
        "docs/readme.md",
    ] {
        write(dir.path(), rel, rel);
    }
    let options =
        hash_options().ignore_path("target").ignore_path("tmp/cache").ignore_glob("*.log").ignore_glob("docs/**");
    let workspace = Workspace::open(dir.path(), options).await.unwrap();
    let files: Vec<String> = workspace.snapshot(None).await.unwrap().file_hashes().unwrap().into_keys().collect();
    assert_eq!(files, vec!["keep.log.txt", "src/main.rs"]);
    // Only the excluded roots at the top are excluded.
    write(dir.path(), "src/node_modules/kept.js", "k");
    let files = workspace.snapshot(None).await.unwrap().file_hashes().unwrap();
    assert!(files.contains_key("src/node_modules/kept.js"));
}

#[tokio::test]
async fn diff_lists_added_removed_and_modified_paths() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "same.txt", "same");
    write(dir.path(), "mod.txt", "one");
    write(dir.path(), "gone.txt", "gone");
    let workspace = Workspace::open(dir.path(), hash_options()).await.unwrap();
    let before = workspace.snapshot(None).await.unwrap();
    write(dir.path(), "mod.txt", "two"); // same size: must still be seen
    std::fs::remove_file(dir.path().join("gone.txt")).unwrap();
    write(dir.path(), "new/file.txt", "new");
    let after = workspace.snapshot_since(None, &before).await.unwrap();
    let diff = workspace.diff(&before, &after, DiffOptions::with_patch()).await.unwrap();
    assert_eq!(diff.changed_paths, vec!["gone.txt", "mod.txt", "new/file.txt"]);
    assert_eq!((diff.files_changed, diff.insertions, diff.deletions), (3, 0, 0));
    assert!(diff.patch.is_none());
    assert_ne!(before.reference, after.reference);
}

#[tokio::test]
async fn an_incremental_snapshot_trusts_unchanged_old_files_and_rereads_changed_ones() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "old.txt", "old content");
    write(dir.path(), "edited.txt", "aaaa");
    // Make both files older than the racy window, so their metadata can be trusted.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for rel in ["old.txt", "edited.txt"] {
        std::fs::File::options().write(true).open(dir.path().join(rel)).unwrap().set_modified(old).unwrap();
    }
    write(dir.path(), "untouched.txt", "untouched");
    std::fs::File::options().write(true).open(dir.path().join("untouched.txt")).unwrap().set_modified(old).unwrap();
    // The premise of the test: the files' change times (which cannot be set back) lie outside the
    // racy window of the first scan.
    std::thread::sleep(std::time::Duration::from_millis(120));
    let workspace = Workspace::open(dir.path(), hash_options()).await.unwrap();
    let before = workspace.snapshot(None).await.unwrap();
    assert_eq!(before.metadata["files_hashed"], 3);
    let before_hashes = before.file_hashes().unwrap();

    // A same-size rewrite changes mtime/ctime: reread. A file whose content changed behind a
    // restored mtime still has a new ctime: reread as well.
    write(dir.path(), "edited.txt", "bbbb");
    write(dir.path(), "old.txt", "OLD CONTENT");
    std::fs::File::options().write(true).open(dir.path().join("old.txt")).unwrap().set_modified(old).unwrap();
    let after = workspace.snapshot_since(None, &before).await.unwrap();
    let after_hashes = after.file_hashes().unwrap();
    assert_eq!(after_hashes["edited.txt"], sha256_hex(b"bbbb"));
    assert_eq!(after_hashes["old.txt"], sha256_hex(b"OLD CONTENT"));
    assert_ne!(before_hashes["old.txt"], after_hashes["old.txt"]);
    assert_eq!(after.metadata["files_hashed"], 2, "the untouched old file kept its hash unread");
    // A file touched just before the previous scan is reread even when unchanged (racy window).
    let recent = workspace.snapshot_since(None, &after).await.unwrap();
    assert_eq!(recent.metadata["files_hashed"], 2);
    // And the incremental result equals a full rescan.
    assert_eq!(workspace.snapshot(None).await.unwrap().reference, after.reference);
}

#[tokio::test]
async fn symlinks_are_recorded_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.txt", "outside");
    write(dir.path(), "real.txt", "r");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("loop")).unwrap();
    std::os::unix::fs::symlink("real.txt", dir.path().join("link")).unwrap();
    let workspace = Workspace::open(dir.path(), hash_options()).await.unwrap();
    let hashes = workspace.snapshot(None).await.unwrap().file_hashes().unwrap();
    assert_eq!(hashes.keys().collect::<Vec<_>>(), vec!["link", "loop", "out", "real.txt"]);
    assert_eq!(hashes["link"], sha256_hex(b"real.txt"), "a link hashes as its target path");
}

#[tokio::test]
async fn rollback_restores_content_modes_symlinks_and_removes_created_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "a.txt", "a");
    write(root, "script.sh", "#!/bin/sh\n");
    std::fs::set_permissions(root.join("script.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    write(root, "dir/inner.txt", "inner");
    write(root, "dup1.txt", "same");
    write(root, "dup2.txt", "same");
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    let workspace = Workspace::open(root, hash_options()).await.unwrap();
    let before = workspace.snapshot_restorable(None).await.unwrap();
    assert!(before.restorable);

    write(root, "a.txt", "changed");
    std::fs::remove_file(root.join("script.sh")).unwrap();
    std::fs::remove_dir_all(root.join("dir")).unwrap();
    write(root, "dir", "dir is a file now");
    write(root, "dup2.txt", "different");
    std::fs::remove_file(root.join("link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", root.join("link")).unwrap();
    write(root, "created/deep/file.txt", "new");
    let after = workspace.snapshot_since(None, &before).await.unwrap();
    let diff = workspace.diff(&before, &after, DiffOptions::default()).await.unwrap();
    workspace.retain_rollback_content(&before, &diff);

    let report = workspace.rollback(&before, Some(&after)).await.unwrap();
    assert_eq!(report.removed, vec!["created/deep/file.txt", "dir"]);
    assert_eq!(read(root, "a.txt"), "a");
    assert_eq!(read(root, "script.sh"), "#!/bin/sh\n");
    assert_eq!(std::fs::metadata(root.join("script.sh")).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(read(root, "dir/inner.txt"), "inner");
    assert_eq!(read(root, "dup2.txt"), "same");
    assert_eq!(std::fs::read_link(root.join("link")).unwrap(), std::path::PathBuf::from("a.txt"));
    assert!(!root.join("created").exists());
    assert_eq!(workspace.snapshot(None).await.unwrap().reference, before.reference);
}

#[tokio::test]
async fn rollback_needs_a_restorable_snapshot_and_an_unchanged_tree() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", "a");
    let workspace = Workspace::open(dir.path(), hash_options()).await.unwrap();
    let plain = workspace.snapshot(None).await.unwrap();
    write(dir.path(), "a.txt", "b");
    let error = workspace.rollback(&plain, None).await.unwrap_err();
    assert!(matches!(error, WorkspaceError::NotRestorable { .. }), "{error:?}");
    assert_eq!(read(dir.path(), "a.txt"), "b");

    let before = workspace.snapshot_restorable(None).await.unwrap();
    write(dir.path(), "a.txt", "c");
    let after = workspace.snapshot_since(None, &before).await.unwrap();
    write(dir.path(), "a.txt", "later");
    let error = workspace.rollback(&before, Some(&after)).await.unwrap_err();
    assert!(matches!(error, WorkspaceError::ChangedSinceSnapshot { .. }), "{error:?}");
    assert_eq!(read(dir.path(), "a.txt"), "later", "nothing was written");
}

#[tokio::test]
async fn large_trees_are_hashed_in_parallel_with_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..1_500 {
        write(dir.path(), &format!("d{}/f{i}.txt", i % 30), format!("content {i}"));
    }
    let workspace = Workspace::open(dir.path(), hash_options()).await.unwrap();
    let first = workspace.snapshot(None).await.unwrap();
    let hashes = first.file_hashes().unwrap();
    assert_eq!(hashes.len(), 1_500);
    assert_eq!(hashes["d7/f7.txt"], sha256_hex(b"content 7"));
    write(dir.path(), "d3/f3.txt", "changed");
    std::fs::remove_file(dir.path().join("d4/f4.txt")).unwrap();
    let second = workspace.snapshot_since(None, &first).await.unwrap();
    let diff = workspace.diff(&first, &second, DiffOptions::default()).await.unwrap();
    assert_eq!(diff.changed_paths, vec!["d3/f3.txt", "d4/f4.txt"]);
    assert_eq!(workspace.snapshot(None).await.unwrap().reference, second.reference);
}
