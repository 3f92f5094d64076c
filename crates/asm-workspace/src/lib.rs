//! Workspace snapshots for agent-session-manager: what did the agent change, and undo it.
//!
//! [`WorkspaceHook`] is a [`RunHook`](asm_ports::RunHook): attached to a run, it snapshots the
//! working directory before the provider is called and after it returned, records the diff
//! (changed paths, line counts, the patch) in events, run metadata and the run output, and can
//! roll the directory back when the run fails. The runtime knows only the hook trait.
//!
//! Two backends ([`Workspace`], chosen by [`Strategy`]):
//!
//! - **git** (the real `git` binary): a snapshot goes through a temporary alternate index
//!   (`GIT_INDEX_FILE`: `read-tree HEAD`, `add -A`, `write-tree`, a dangling commit when the
//!   tree is dirty), so `HEAD`, the real index and the work tree are never touched; untracked
//!   files are included and `.gitignore` is honoured. Diffs come from `git diff-tree`
//!   (`--numstat`, `--binary` patches). Rollback keeps the replaced state under
//!   `refs/asm/rollback/…`, moves the branch back if the run committed, removes the files the
//!   run created (untracked too) and writes back the ones it changed.
//! - **hash**: a walk with excluded roots ([`DEFAULT_EXCLUDED_ROOTS`] + ignore paths) and
//!   ignore globs, sha256 of every file (symlinks by their target, never followed); a later
//!   snapshot reads only files whose metadata changed. A restorable snapshot keeps a content
//!   copy, so hash workspaces can be rolled back too.
//!
//! Ignore globs: `*` any characters except `/`, `?` one character except `/`, `**/` zero or
//! more directories, a trailing `**` anything; a glob without `/` is also matched against the
//! base name.
//!
//! Fixed against the original (v0.8.0): rollback no longer moves the branch onto the snapshot
//! commit nor leaves untracked files behind, and refuses a tree that changed since; hash
//! workspaces can be rolled back; ignore rules reach the backend from the hook; an unknown
//! strategy is an error; a patch over the inline cap is stored whole as an artifact (an
//! [`ArtifactStore`](asm_ports::ArtifactStore), e.g. [`FileArtifactStore`]) instead of being
//! dropped.
//!
//! ```
//! use asm_workspace::{BackendKind, Strategy, Workspace, WorkspaceOptions};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("a.txt"), "a").unwrap();
//! let workspace = Workspace::open(dir.path(), WorkspaceOptions::new().strategy(Strategy::Hash)).await?;
//! let snapshot = workspace.snapshot(None).await?;
//! assert_eq!(snapshot.backend, BackendKind::Hash);
//! assert_eq!(snapshot.file_hashes().unwrap().len(), 1);
//! # Ok(()) }
//! ```
//!
//! Architecture invariant: this crate knows the ports (`RunHook`, `ArtifactStore`) and the
//! domain values, never the runtime or a provider.
#![deny(missing_docs)]

mod error;
mod git;
mod glob;
mod hash;
mod hook;
mod types;
mod workspace;

pub use asm_artifact_fs::FileArtifactStore;
pub use error::{WorkspaceError, WorkspaceResult};
pub use git::SAFETY_REF_PREFIX;
pub use hook::{DEFAULT_MAX_PATCH_BYTES, MAX_SUMMARY_PATHS, WorkspaceHook};
pub use types::{BackendKind, Diff, DiffOptions, DiffSummary, RollbackReport, Snapshot, SnapshotLabel, Strategy};
pub use workspace::{DEFAULT_EXCLUDED_ROOTS, Workspace, WorkspaceOptions};
