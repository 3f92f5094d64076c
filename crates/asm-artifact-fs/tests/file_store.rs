#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use asm_artifact_fs::{FileArtifactStore, validate_key};
use asm_core::ErrorCode;
use asm_ports::ArtifactStore;

fn store() -> (tempfile::TempDir, FileArtifactStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileArtifactStore::open(dir.path().join("nested/root")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn put_get_overwrite_delete() {
    let (_dir, store) = store();
    store.put("a.bin", vec![1, 2, 3]).await.unwrap();
    assert_eq!(store.get("a.bin").await.unwrap(), vec![1, 2, 3]);
    store.put("a.bin", vec![9]).await.unwrap();
    assert_eq!(store.get("a.bin").await.unwrap(), vec![9], "put overwrites");
    store.put("empty", Vec::new()).await.unwrap();
    assert_eq!(store.get("empty").await.unwrap(), Vec::<u8>::new());
    store.delete("a.bin").await.unwrap();
    assert_eq!(store.get("a.bin").await.unwrap_err().code(), ErrorCode::NotFound);
    store.delete("a.bin").await.unwrap(); // idempotent
    store.delete("never-written").await.unwrap();
}

#[tokio::test]
async fn missing_keys_are_not_found() {
    let (_dir, store) = store();
    let error = store.get("nope").await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::NotFound);
    store.put("dir/inner", b"x".to_vec()).await.unwrap();
    // "dir" is a directory, not a key.
    assert_eq!(store.get("dir").await.unwrap_err().code(), ErrorCode::NotFound);
    store.delete("dir").await.unwrap();
    assert_eq!(store.get("dir/inner").await.unwrap(), b"x");
}

#[tokio::test]
async fn list_by_prefix_sorted_and_nested() {
    let (_dir, store) = store();
    for key in ["patch_b", "patch_a", "other", "runs/r1/patch", "runs/r2/patch", "runs_x"] {
        store.put(key, key.as_bytes().to_vec()).await.unwrap();
    }
    assert_eq!(store.list("patch_").await.unwrap(), vec!["patch_a", "patch_b"]);
    assert_eq!(store.list("runs/").await.unwrap(), vec!["runs/r1/patch", "runs/r2/patch"]);
    assert_eq!(store.list("runs").await.unwrap(), vec!["runs/r1/patch", "runs/r2/patch", "runs_x"]);
    assert_eq!(store.list("runs/r2").await.unwrap(), vec!["runs/r2/patch"]);
    assert_eq!(store.list("").await.unwrap().len(), 6);
    assert!(store.list("zzz").await.unwrap().is_empty());
    assert!(store.list("../").await.unwrap().is_empty());
    store.delete("runs/r1/patch").await.unwrap();
    assert_eq!(store.list("runs/").await.unwrap(), vec!["runs/r2/patch"]);
    assert!(!store.root().join("runs/r1").exists(), "empty directories are pruned");
}

#[tokio::test]
async fn invalid_keys_are_typed_errors_and_touch_nothing() {
    let (dir, store) = store();
    for key in
        ["", "/etc/passwd", "..", "../escape", "a/../../b", "a//b", "a/", "a\\b", ".hidden", "a/.tmp", "sp ace", "ü"]
    {
        for error in [
            store.put(key, b"x".to_vec()).await.unwrap_err(),
            store.get(key).await.unwrap_err(),
            store.delete(key).await.unwrap_err(),
        ] {
            assert_eq!(error.code(), ErrorCode::ValidationError, "{key:?}");
            assert!(error.details().contains_key("reason"), "{key:?}");
        }
    }
    let long = "k".repeat(asm_artifact_fs::MAX_KEY_BYTES + 1);
    assert_eq!(validate_key(&long).unwrap_err().details()["reason"], "too_long");
    assert_eq!(validate_key("/abs").unwrap_err().details()["reason"], "absolute");
    assert_eq!(validate_key("a/../b").unwrap_err().details()["reason"], "parent_component");
    assert!(store.list("").await.unwrap().is_empty());
    assert!(!dir.path().join("escape").exists());
}

#[tokio::test]
async fn writes_are_atomic_and_leave_no_temporary_files() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    // Concurrent writers of one key: every read sees one whole value, never a mix.
    let values: Vec<Vec<u8>> = (0..8_u8).map(|i| vec![i; 256 * 1024]).collect();
    let mut tasks = Vec::new();
    for value in values.clone() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                store.put("shared", value.clone()).await.unwrap();
            }
        }));
    }
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                if let Ok(bytes) = store.get("shared").await {
                    assert_eq!(bytes.len(), 256 * 1024);
                    assert!(bytes.iter().all(|b| *b == bytes[0]), "torn read");
                }
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    reader.await.unwrap();
    let final_value = store.get("shared").await.unwrap();
    assert!(values.contains(&final_value));
    let leftovers: Vec<_> = std::fs::read_dir(store.root()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("shared")], "no temporary files remain");
}

#[tokio::test]
async fn a_crash_leftover_is_never_listed() {
    let (_dir, store) = store();
    std::fs::write(store.root().join(".shared.0123.tmp"), b"half").unwrap();
    store.put("shared", b"whole".to_vec()).await.unwrap();
    assert_eq!(store.list("").await.unwrap(), vec!["shared"]);
}

#[test]
fn open_fails_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(FileArtifactStore::open(&file).unwrap_err().code(), ErrorCode::StorageError);
}

#[tokio::test]
async fn usable_as_a_shared_port() {
    let (_dir, store) = store();
    let shared: Arc<dyn ArtifactStore> = Arc::new(store);
    shared.put("k", b"v".to_vec()).await.unwrap();
    assert_eq!(shared.get("k").await.unwrap(), b"v");
}
