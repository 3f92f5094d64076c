//! A file-system [`ArtifactStore`] for agent-session-manager.
//!
//! [`FileArtifactStore`] keeps every artifact (a workspace patch, an attachment) as one file
//! under a root directory. Keys are relative, `/`-separated paths whose components use
//! `[A-Za-z0-9._-]` and do not start with `.`; anything else (`..`, an absolute path, a
//! backslash, an empty component) is refused with a typed
//! [`ErrorCode::ValidationError`] before the file system is touched ([`validate_key`]).
//!
//! Writes are atomic: the bytes go to a hidden temporary file next to the target, are synced,
//! and the file is renamed over the target, so a reader sees the old value or the new one,
//! never a torn file, and a crash leaves at most a hidden temporary file behind (which
//! [`list`](ArtifactStore::list) never reports).
//!
//! ```
//! use asm_artifact_fs::FileArtifactStore;
//! use asm_ports::ArtifactStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = FileArtifactStore::open(dir.path().join("artifacts"))?;
//! store.put("patches/run_1.diff", b"--- a\n+++ b\n".to_vec()).await?;
//! assert_eq!(store.get("patches/run_1.diff").await?, b"--- a\n+++ b\n");
//! assert_eq!(store.list("patches/").await?, vec!["patches/run_1.diff".to_owned()]);
//! assert!(store.put("../escape", vec![]).await.is_err());
//! # Ok(()) }
//! ```
//!
//! Architecture invariant: this crate knows the `ArtifactStore` port and nothing of the runtime,
//! the workspace hook or any provider. It is its own crate (rather than a module of
//! `asm-workspace`) because artifacts are not only patches: anything holding an
//! `Arc<dyn ArtifactStore>` can use it without pulling in git and the snapshot backends.
#![deny(missing_docs)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tracing::Instrument;

use asm_core::{Error, ErrorCode, Result};
use asm_ports::ArtifactStore;

/// Longest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// How often a write is retried when a concurrent delete removed its directory.
const WRITE_ATTEMPTS: usize = 3;

/// An [`ArtifactStore`] on a directory: one file per key (see the [crate docs](crate)).
///
/// Cloning is cheap; clones share the root.
#[derive(Clone, Debug)]
pub struct FileArtifactStore {
    root: PathBuf,
}

impl FileArtifactStore {
    /// Opens (and creates, with its parents) the store's root directory.
    ///
    /// # Errors
    /// [`ErrorCode::StorageError`] when the directory cannot be created or `root` exists and is
    /// not a directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| io_error("create the artifact root", &root, &e))?;
        let root = root.canonicalize().map_err(|e| io_error("resolve the artifact root", &root, &e))?;
        Ok(Self { root })
    }

    /// The root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key` (validated first).
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`] for an invalid key (see [`validate_key`]).
    pub fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Checks an artifact key: non-empty, at most [`MAX_KEY_BYTES`], relative, `/`-separated
/// components of `[A-Za-z0-9._-]` that are not empty and do not start with `.` (which rules out
/// `.` and `..`, hidden files and the store's temporary files).
///
/// ```
/// use asm_artifact_fs::validate_key;
/// use asm_core::ErrorCode;
///
/// assert!(validate_key("patch_1a2b_3c4d_ff00.diff").is_ok());
/// assert!(validate_key("runs/run_1/patch.diff").is_ok());
/// for bad in ["", "/etc/passwd", "../up", "a/../b", "a//b", "a\\b", ".hidden", "a b"] {
///     assert_eq!(validate_key(bad).unwrap_err().code(), ErrorCode::ValidationError, "{bad:?}");
/// }
/// ```
///
/// # Errors
/// [`ErrorCode::ValidationError`] with the details `key` and `reason` (`empty`, `too_long`,
/// `absolute`, `parent_component`, `empty_component`, `hidden_component`,
/// `invalid_character`).
pub fn validate_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        Some("empty")
    } else if key.len() > MAX_KEY_BYTES {
        Some("too_long")
    } else if key.starts_with('/') {
        Some("absolute")
    } else {
        key.split('/').find_map(|component| {
            if component.is_empty() {
                Some("empty_component")
            } else if component == ".." {
                Some("parent_component")
            } else if component.starts_with('.') {
                Some("hidden_component")
            } else if !component.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
                Some("invalid_character")
            } else {
                None
            }
        })
    };
    match reason {
        None => Ok(()),
        Some(reason) => {
            let shown: String = key.chars().take(80).collect();
            Err(Error::new(ErrorCode::ValidationError, format!("invalid artifact key {shown:?}: {reason}"))
                .with_detail("key", shown)
                .with_detail("reason", reason))
        }
    }
}

fn io_error(what: &str, path: &Path, error: &io::Error) -> Error {
    Error::new(ErrorCode::StorageError, format!("could not {what} {}: {error}", path.display()))
        .with_detail("path", path.display().to_string())
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::new(ErrorCode::InternalError, format!("artifact store task failed: {e}")))?
}

/// Writes `bytes` to `target` through a synced temporary file in the same directory.
fn write_atomically(root: &Path, target: &Path, bytes: &[u8]) -> Result<()> {
    let parent = target.parent().unwrap_or(root);
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("artifact");
    let mut last_error = None;
    for _ in 0..WRITE_ATTEMPTS {
        std::fs::create_dir_all(parent).map_err(|e| io_error("create the directory", parent, &e))?;
        let temp = parent.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, target)
        })();
        match written {
            Ok(()) => {
                sync_dir(parent);
                return Ok(());
            }
            Err(error) => {
                let _ = std::fs::remove_file(&temp);
                if error.kind() == io::ErrorKind::NotFound {
                    // A concurrent delete pruned the directory between create_dir_all and the
                    // write: make it again.
                    last_error = Some(error);
                    continue;
                }
                return Err(io_error("write the artifact", target, &error));
            }
        }
    }
    let error = last_error.unwrap_or_else(|| io::Error::other("directory kept disappearing"));
    Err(io_error("write the artifact", target, &error))
}

/// Makes a rename durable (best effort: not every platform can sync a directory).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Removes the empty directories between `from` (inclusive) and `root` (exclusive).
fn prune_empty_dirs(root: &Path, from: Option<&Path>) {
    let mut dir = from;
    while let Some(current) = dir {
        if current == root || !current.starts_with(root) || std::fs::remove_dir(current).is_err() {
            break;
        }
        dir = current.parent();
    }
}

/// Every key under `dir` (whose key prefix is `base`), appended to `keys`.
fn collect_keys(dir: &Path, base: &str, prefix: &str, keys: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("list", dir, &e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, &e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if name.starts_with('.') {
            continue; // temporary files and anything not written by this store
        }
        let key = if base.is_empty() { name } else { format!("{base}/{name}") };
        // Only descend where a key with the prefix can be.
        if !(key.starts_with(prefix) || prefix.starts_with(&key)) {
            continue;
        }
        let kind = entry.file_type().map_err(|e| io_error("list", &entry.path(), &e))?;
        if kind.is_dir() {
            collect_keys(&entry.path(), &key, prefix, keys)?;
        } else if kind.is_file() && key.starts_with(prefix) && validate_key(&key).is_ok() {
            keys.push(key);
        }
    }
    Ok(())
}

#[async_trait]
impl ArtifactStore for FileArtifactStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let target = self.path_of(key)?;
        let root = self.root.clone();
        let size = bytes.len();
        let span = tracing::debug_span!("artifact_put", key, size);
        blocking(move || write_atomically(&root, &target, &bytes)).instrument(span).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let target = self.path_of(key)?;
        let key = key.to_owned();
        blocking(move || match std::fs::read(&target) {
            Ok(bytes) => Ok(bytes),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::IsADirectory) => {
                Err(Error::new(ErrorCode::NotFound, format!("artifact {key:?} not found")).with_detail("key", key))
            }
            Err(e) => Err(io_error("read the artifact", &target, &e)),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let target = self.path_of(key)?;
        let root = self.root.clone();
        blocking(move || {
            match std::fs::remove_file(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound || target.is_dir() => return Ok(()),
                Err(e) => return Err(io_error("delete the artifact", &target, &e)),
            }
            prune_empty_dirs(&root, target.parent());
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut keys = Vec::new();
            // Start at the deepest directory the prefix names completely.
            let (base, start) = match prefix.rfind('/') {
                Some(slash) if validate_key(&prefix[..slash]).is_ok() => {
                    (prefix[..slash].to_owned(), root.join(&prefix[..slash]))
                }
                Some(_) => return Ok(keys), // no valid key starts with this prefix
                None => (String::new(), root.clone()),
            };
            collect_keys(&start, &base, &prefix, &mut keys)?;
            keys.sort();
            Ok(keys)
        })
        .await
    }
}
