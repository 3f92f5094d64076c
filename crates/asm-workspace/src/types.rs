//! Snapshot and diff values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use asm_core::{JsonMap, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::WorkspaceError;
use crate::hash::HashState;

/// Which snapshot backend a workspace uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackendKind {
    /// Git objects through a temporary alternate index.
    Git,
    /// Content hashes of every file.
    Hash,
}

asm_core::string_enum! {
    /// `"git"` or `"hash"`.
    BackendKind {
        Git => "git",
        Hash => "hash",
    }
}

/// How the backend is chosen (spec 8.2).
///
/// ```
/// use asm_workspace::Strategy;
/// assert_eq!("git".parse::<Strategy>().unwrap(), Strategy::Git);
/// assert!("svn".parse::<Strategy>().is_err()); // unknown names are an error, not `auto`
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// Git when the path is inside a git work tree whose `HEAD` resolves, hash otherwise.
    #[default]
    Auto,
    /// Always git; a path outside a work tree or a repository without commits is an error.
    Git,
    /// Always hash.
    Hash,
}

asm_core::string_enum! {
    /// `"auto"`, `"git"` or `"hash"`.
    Strategy {
        Auto => "auto",
        Git => "git",
        Hash => "hash",
    }
    /// Parses a strategy name. Unlike the original, an unknown name is an error
    /// ([`WorkspaceError::UnknownStrategy`]) instead of silently meaning `auto`.
    impl FromStr(text) -> Result<Self, WorkspaceError> {
        Err(WorkspaceError::UnknownStrategy(text.to_owned()))
    }
}

/// When in a run a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SnapshotLabel {
    /// Before the provider is called.
    Before,
    /// After a successful run.
    After,
    /// After a failed (or cancelled, timed out) run.
    AfterFailure,
}

asm_core::string_enum! {
    /// `"before"`, `"after"` or `"after_failure"`.
    SnapshotLabel {
        Before => "before",
        After => "after",
        AfterFailure => "after_failure",
    }
}

/// The state of a workspace at one moment (spec 8.1).
///
/// The public fields are what gets recorded; the backend keeps what it needs to diff, to take
/// the next snapshot incrementally and to roll back inside (cheap to clone: shared).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Snapshot {
    /// The backend that took it.
    pub backend: BackendKind,
    /// The workspace root (absolute; for git the work tree's top level).
    pub path: PathBuf,
    /// The snapshot's identity: a commit id (git) or the sha256 of the sorted `path:hash` lines
    /// (hash).
    pub reference: String,
    /// When in the run it was taken.
    pub label: Option<SnapshotLabel>,
    /// When it was taken.
    pub captured_at: Timestamp,
    /// Backend specifics. Git: `head_ref` (the `HEAD` commit), `branch` (the symbolic ref, absent
    /// when detached), `tree`, `dirty`, `includes_untracked: true`. Hash: `file_count`,
    /// `total_bytes`, `files_hashed` (files read by this scan; the others kept the previous
    /// snapshot's hash).
    pub metadata: JsonMap,
    /// Whether it keeps what a rollback to it needs.
    pub restorable: bool,
    pub(crate) state: SnapshotState,
}

#[derive(Clone, Debug)]
pub(crate) enum SnapshotState {
    Git(Arc<crate::git::GitState>),
    Hash(Arc<HashState>),
}

impl Snapshot {
    /// The recorded form: `backend`, `path`, `ref`, `label`, `captured_at`, `restorable`,
    /// `metadata`.
    pub fn to_map(&self) -> JsonMap {
        let mut map = JsonMap::new();
        map.insert("backend".into(), self.backend.as_str().into());
        map.insert("path".into(), self.path.display().to_string().into());
        map.insert("ref".into(), self.reference.clone().into());
        map.insert("label".into(), self.label.map_or(Value::Null, |l| l.as_str().into()));
        map.insert("captured_at".into(), self.captured_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into());
        map.insert("restorable".into(), self.restorable.into());
        map.insert("metadata".into(), self.metadata.clone().into());
        map
    }

    /// Hash snapshots: relative path -> sha256 hex of every file (symlinks: of their target).
    /// Git snapshots: `None` (the tree is in git).
    pub fn file_hashes(&self) -> Option<BTreeMap<String, String>> {
        match &self.state {
            SnapshotState::Hash(state) => Some(state.file_hashes()),
            SnapshotState::Git(_) => None,
        }
    }
}

/// What changed between two snapshots (spec 8.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Diff {
    /// The backend.
    pub backend: Option<BackendKind>,
    /// The earlier snapshot's ref.
    pub from_ref: String,
    /// The later snapshot's ref.
    pub to_ref: String,
    /// Number of changed paths.
    pub files_changed: u64,
    /// Added lines (git; binary files count 0; hash: 0).
    pub insertions: u64,
    /// Removed lines (git; binary files count 0; hash: 0).
    pub deletions: u64,
    /// Added, removed and modified paths, sorted and unique.
    pub changed_paths: Vec<String>,
    /// The patch text (git, when captured and inline).
    pub patch: Option<String>,
    /// The patch's size in bytes, when one was produced.
    pub patch_bytes: Option<u64>,
    /// The artifact key the whole patch is stored under, when it was not kept inline.
    pub patch_ref: Option<String>,
    /// A patch was produced but is neither inline nor stored (larger than the cap with no
    /// artifact store to take it). Recorded and logged, never silent.
    pub patch_truncated: bool,
    /// Backend specifics.
    pub metadata: JsonMap,
}

/// The compact part of a [`Diff`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DiffSummary {
    /// Number of changed paths.
    pub files_changed: u64,
    /// Added lines.
    pub insertions: u64,
    /// Removed lines.
    pub deletions: u64,
    /// Changed paths.
    pub changed_paths: Vec<String>,
}

impl Diff {
    /// `files_changed`, `insertions`, `deletions`, `changed_paths`.
    pub fn summary(&self) -> DiffSummary {
        DiffSummary {
            files_changed: self.files_changed,
            insertions: self.insertions,
            deletions: self.deletions,
            changed_paths: self.changed_paths.clone(),
        }
    }

    /// Whether patch text is inline.
    pub fn has_patch(&self) -> bool {
        self.patch.as_deref().is_some_and(|p| !p.is_empty())
    }

    /// Every field as a JSON object (`patch` / `patch_ref` / `patch_bytes` only when set).
    pub fn to_map(&self) -> JsonMap {
        let mut map = JsonMap::new();
        map.insert("backend".into(), self.backend.map_or(Value::Null, |b| b.as_str().into()));
        map.insert("from_ref".into(), self.from_ref.clone().into());
        map.insert("to_ref".into(), self.to_ref.clone().into());
        map.insert("files_changed".into(), self.files_changed.into());
        map.insert("insertions".into(), self.insertions.into());
        map.insert("deletions".into(), self.deletions.into());
        map.insert("changed_paths".into(), self.changed_paths.clone().into());
        if let Some(patch) = &self.patch {
            map.insert("patch".into(), patch.clone().into());
        }
        if let Some(bytes) = self.patch_bytes {
            map.insert("patch_bytes".into(), bytes.into());
        }
        if let Some(key) = &self.patch_ref {
            map.insert("patch_ref".into(), key.clone().into());
        }
        map.insert("patch_truncated".into(), self.patch_truncated.into());
        map.insert("metadata".into(), self.metadata.clone().into());
        map
    }
}

/// Patch capture for [`Workspace::diff`](crate::Workspace::diff).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiffOptions {
    /// Produce the patch text (git only; default false, as the backend level of the original).
    pub capture_patch: bool,
    /// Largest patch kept in [`Diff::patch`]; a larger one is left out with
    /// [`Diff::patch_truncated`] set and [`Diff::patch_bytes`] telling its size (default
    /// unlimited: the hook applies its own cap and stores big patches as artifacts).
    pub max_patch_bytes: Option<u64>,
}

impl DiffOptions {
    /// Diff with the whole patch.
    pub fn with_patch() -> Self {
        Self { capture_patch: true, max_patch_bytes: None }
    }
    asm_core::builder_setters! {
        /// Sets the inline cap.
        fn max_patch_bytes(bytes: u64) { max_patch_bytes = Some(bytes) }
    }
}

/// What a rollback did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RollbackReport {
    /// The snapshot rolled back to.
    pub to_ref: String,
    /// Git: the ref under `refs/asm/rollback/` that keeps the state before the rollback (commit
    /// of the work tree, untracked files included), so nothing is lost.
    pub safety_ref: Option<String>,
    /// Paths written back with their earlier content (modified or deleted during the run).
    pub restored: Vec<String>,
    /// Paths removed (created during the run, untracked ones included).
    pub removed: Vec<String>,
    /// Git: whether `HEAD` (the branch) was moved back because the run committed.
    pub head_reset: bool,
}

impl RollbackReport {
    /// The recorded form.
    pub fn to_map(&self) -> JsonMap {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => JsonMap::new(),
        }
    }
}
