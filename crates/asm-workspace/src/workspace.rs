//! [`Workspace`]: one directory with its chosen backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use asm_core::JsonMap;
use tracing::Instrument;

use crate::error::{WorkspaceError, WorkspaceResult};
use crate::git::{self, Discovery, GitRepo};
use crate::glob::Glob;
use crate::hash::{self, HashRules, HashState};
use crate::types::{BackendKind, Diff, DiffOptions, RollbackReport, Snapshot, SnapshotLabel, SnapshotState, Strategy};

/// The roots the hash backend always skips (the original's `excluded_workspace_roots`).
pub const DEFAULT_EXCLUDED_ROOTS: &[&str] = &[".git", "deps", "_build", "node_modules"];

/// How a [`Workspace`] is opened.
///
/// ```
/// use asm_workspace::{Strategy, WorkspaceOptions};
/// let options = WorkspaceOptions::new().strategy(Strategy::Hash).ignore_path("target").ignore_glob("**/*.log");
/// assert_eq!(options.ignore_paths, vec!["target".to_owned()]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkspaceOptions {
    /// Backend choice (default [`Strategy::Auto`]).
    pub strategy: Strategy,
    /// Roots the hash backend skips (default [`DEFAULT_EXCLUDED_ROOTS`]).
    pub excluded_roots: Vec<String>,
    /// More relative paths whose subtree the hash backend skips (the original's
    /// `ignore.paths`).
    pub ignore_paths: Vec<String>,
    /// Globs of files the hash backend skips (the original's `ignore.globs`; syntax in the
    /// [crate docs](crate)).
    pub ignore_globs: Vec<String>,
}

impl Default for WorkspaceOptions {
    fn default() -> Self {
        Self {
            strategy: Strategy::Auto,
            excluded_roots: DEFAULT_EXCLUDED_ROOTS.iter().map(|s| (*s).to_owned()).collect(),
            ignore_paths: Vec::new(),
            ignore_globs: Vec::new(),
        }
    }
}

impl WorkspaceOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    asm_core::builder_setters! {
        /// Sets the strategy.
        fn strategy(strategy: Strategy) { strategy = strategy }
    }
    /// Replaces the excluded roots.
    #[must_use]
    pub fn excluded_roots<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roots: I) -> Self {
        self.excluded_roots = roots.into_iter().map(Into::into).collect();
        self
    }
    asm_core::builder_setters! {
        /// Adds a relative path whose subtree the hash backend skips.
        fn ignore_path(path: impl Into<String>) { ignore_paths.push(path.into()) }
        /// Adds a glob of files the hash backend skips.
        fn ignore_glob(glob: impl Into<String>) { ignore_globs.push(glob.into()) }
    }

    /// Checks the paths and globs (relative, no `..`, not empty).
    ///
    /// # Errors
    /// [`WorkspaceError::InvalidOption`].
    pub fn validate(&self) -> WorkspaceResult<()> {
        for (option, values) in [("excluded_roots", &self.excluded_roots), ("ignore_paths", &self.ignore_paths)] {
            for value in values {
                let trimmed = value.trim_end_matches('/');
                if trimmed.is_empty()
                    || trimmed.starts_with('/')
                    || trimmed.split('/').any(|c| c.is_empty() || c == "." || c == "..")
                {
                    return Err(WorkspaceError::InvalidOption {
                        option,
                        message: format!("{value:?} is not a relative path inside the workspace"),
                    });
                }
            }
        }
        if let Some(glob) = self.ignore_globs.iter().find(|g| g.is_empty()) {
            return Err(WorkspaceError::InvalidOption {
                option: "ignore_globs",
                message: format!("{glob:?} is empty"),
            });
        }
        Ok(())
    }

    fn hash_rules(&self) -> HashRules {
        HashRules {
            excluded: self
                .excluded_roots
                .iter()
                .chain(&self.ignore_paths)
                .map(|p| p.trim_end_matches('/').to_owned())
                .collect(),
            globs: self.ignore_globs.iter().map(|g| Glob::new(g)).collect(),
        }
    }
}

#[derive(Clone, Debug)]
enum Backend {
    Git(GitRepo),
    Hash(Arc<HashRules>),
}

/// A directory under snapshot: take snapshots, diff them, roll back.
///
/// ```
/// use asm_workspace::{BackendKind, DiffOptions, SnapshotLabel, Strategy, Workspace, WorkspaceOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> asm_core::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("notes.txt"), "one\n").unwrap();
/// let workspace = Workspace::open(dir.path(), WorkspaceOptions::new().strategy(Strategy::Hash)).await?;
/// assert_eq!(workspace.backend(), BackendKind::Hash);
///
/// let before = workspace.snapshot_restorable(Some(SnapshotLabel::Before)).await?;
/// std::fs::write(dir.path().join("notes.txt"), "two\n").unwrap();
/// std::fs::write(dir.path().join("new.txt"), "new\n").unwrap();
/// let after = workspace.snapshot_since(Some(SnapshotLabel::After), &before).await?;
/// let diff = workspace.diff(&before, &after, DiffOptions::default()).await?;
/// assert_eq!(diff.changed_paths, vec!["new.txt", "notes.txt"]);
///
/// workspace.rollback(&before, Some(&after)).await?;
/// assert_eq!(std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(), "one\n");
/// assert!(!dir.path().join("new.txt").exists());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
    backend: Backend,
}

impl Workspace {
    /// Opens `path` and chooses the backend (spec 8.2): `git` and `hash` are forced; `auto`
    /// takes git when the path is inside a work tree whose `HEAD` resolves (and `git` runs),
    /// hash otherwise (a repository without commits included).
    ///
    /// # Errors
    /// An empty, missing or non-directory path; with [`Strategy::Git`] a path outside a work
    /// tree ([`WorkspaceError::NotAGitRepository`]) or a repository without commits
    /// ([`WorkspaceError::NoCommits`]); invalid options.
    pub async fn open(path: impl AsRef<Path>, options: WorkspaceOptions) -> WorkspaceResult<Self> {
        let path = path.as_ref();
        options.validate()?;
        if path.as_os_str().is_empty() {
            return Err(WorkspaceError::EmptyPath);
        }
        let meta = match tokio::fs::metadata(path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WorkspaceError::PathNotFound { path: path.to_owned() });
            }
            Err(e) => return Err(WorkspaceError::io(path, &e)),
        };
        if !meta.is_dir() {
            return Err(WorkspaceError::NotADirectory { path: path.to_owned() });
        }
        let root = tokio::fs::canonicalize(path).await.map_err(|e| WorkspaceError::io(path, &e))?;
        let hash = || Self { root: root.clone(), backend: Backend::Hash(Arc::new(options.hash_rules())) };
        match options.strategy {
            Strategy::Hash => Ok(hash()),
            Strategy::Git => match git::discover(&root).await? {
                Discovery::Repo(repo) => Ok(Self { root: repo.toplevel.clone(), backend: Backend::Git(repo) }),
                Discovery::NotARepo => Err(WorkspaceError::NotAGitRepository { path: path.to_owned() }),
                Discovery::NoCommits(toplevel) => Err(WorkspaceError::NoCommits { path: toplevel }),
            },
            Strategy::Auto => match git::discover(&root).await {
                Ok(Discovery::Repo(repo)) => Ok(Self { root: repo.toplevel.clone(), backend: Backend::Git(repo) }),
                Ok(Discovery::NotARepo | Discovery::NoCommits(_)) | Err(_) => Ok(hash()),
            },
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        match self.backend {
            Backend::Git(_) => BackendKind::Git,
            Backend::Hash(_) => BackendKind::Hash,
        }
    }

    /// The root (absolute; for git the work tree's top level).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A snapshot of the current state.
    ///
    /// # Errors
    /// A failing git command or an unreadable file.
    pub async fn snapshot(&self, label: Option<SnapshotLabel>) -> WorkspaceResult<Snapshot> {
        self.take(label, None, false).await
    }

    /// A snapshot that a later [`rollback`](Self::rollback) can return to: git also records the
    /// real index's tree; hash keeps a copy of every file's content (in a temporary directory,
    /// removed when the last clone of the snapshot is dropped).
    ///
    /// # Errors
    /// As [`snapshot`](Self::snapshot).
    pub async fn snapshot_restorable(&self, label: Option<SnapshotLabel>) -> WorkspaceResult<Snapshot> {
        self.take(label, None, true).await
    }

    /// A snapshot taken knowing an earlier one of the same workspace: the hash backend reads
    /// only files whose size, modification/change time or inode differ from `previous` (and
    /// files modified just before it, within the file system's timestamp granularity, whose
    /// timestamps cannot be trusted).
    ///
    /// # Errors
    /// As [`snapshot`](Self::snapshot); `previous` of another workspace or backend.
    pub async fn snapshot_since(&self, label: Option<SnapshotLabel>, previous: &Snapshot) -> WorkspaceResult<Snapshot> {
        self.check_own(previous)?;
        self.take(label, Some(previous), false).await
    }

    async fn take(
        &self,
        label: Option<SnapshotLabel>,
        previous: Option<&Snapshot>,
        restorable: bool,
    ) -> WorkspaceResult<Snapshot> {
        let captured_at = asm_core::now();
        let mut metadata = JsonMap::new();
        let (reference, state) = match &self.backend {
            Backend::Git(repo) => {
                let (reference, state) = repo.snapshot(restorable).await?;
                metadata.insert("head_ref".into(), state.head.clone().into());
                if let Some(branch) = &state.branch {
                    metadata.insert("branch".into(), branch.clone().into());
                }
                metadata.insert("tree".into(), state.tree.clone().into());
                metadata.insert("dirty".into(), (state.tree != state.head_tree).into());
                metadata.insert("includes_untracked".into(), true.into());
                (reference, SnapshotState::Git(Arc::new(state)))
            }
            Backend::Hash(rules) => {
                let previous = match previous.map(|p| &p.state) {
                    Some(SnapshotState::Hash(state)) => Some(state.clone()),
                    _ => None,
                };
                let (root, rules) = (self.root.clone(), rules.clone());
                let state =
                    tokio::task::spawn_blocking(move || hash::scan(&root, &rules, previous.as_deref(), restorable))
                        .await
                        .map_err(|e| WorkspaceError::Io {
                            path: self.root.clone(),
                            message: format!("scan task failed: {e}"),
                        })??;
                metadata.insert("file_count".into(), state.file_count().into());
                metadata.insert("total_bytes".into(), state.total_bytes().into());
                metadata.insert("files_hashed".into(), state.files_hashed.into());
                (state.reference(), SnapshotState::Hash(Arc::new(state)))
            }
        };
        Ok(Snapshot {
            backend: self.backend(),
            path: self.root.clone(),
            reference,
            label,
            captured_at,
            metadata,
            restorable,
            state,
        })
    }

    fn check_own(&self, snapshot: &Snapshot) -> WorkspaceResult<()> {
        if snapshot.backend != self.backend() {
            return Err(WorkspaceError::BackendMismatch { from: snapshot.backend, to: self.backend() });
        }
        if snapshot.path != self.root {
            return Err(WorkspaceError::PathMismatch { from: snapshot.path.clone(), to: self.root.clone() });
        }
        Ok(())
    }

    /// What changed from `from` to `to` (both of this workspace).
    ///
    /// # Errors
    /// Snapshots of another backend or workspace; a failing git command.
    pub async fn diff(&self, from: &Snapshot, to: &Snapshot, options: DiffOptions) -> WorkspaceResult<Diff> {
        let (mut diff, patch) = self.diff_raw(from, to, options.capture_patch).await?;
        if let Some(patch) = patch {
            let bytes = patch.len() as u64;
            diff.patch_bytes = Some(bytes);
            if options.max_patch_bytes.is_some_and(|cap| bytes > cap) {
                diff.patch_truncated = true;
            } else if !patch.is_empty() {
                diff.patch = Some(patch_text(patch, &mut diff.metadata));
            }
        }
        Ok(diff)
    }

    /// The diff without its patch, and the patch bytes when asked for (git only).
    pub(crate) async fn diff_raw(
        &self,
        from: &Snapshot,
        to: &Snapshot,
        capture_patch: bool,
    ) -> WorkspaceResult<(Diff, Option<Vec<u8>>)> {
        if from.backend != to.backend {
            return Err(WorkspaceError::BackendMismatch { from: from.backend, to: to.backend });
        }
        if from.path != to.path {
            return Err(WorkspaceError::PathMismatch { from: from.path.clone(), to: to.path.clone() });
        }
        self.check_own(from)?;
        let mut diff = Diff {
            backend: Some(from.backend),
            from_ref: from.reference.clone(),
            to_ref: to.reference.clone(),
            ..Diff::default()
        };
        let mut patch = None;
        match (&self.backend, &from.state, &to.state) {
            (Backend::Git(repo), SnapshotState::Git(a), SnapshotState::Git(b)) => {
                let (insertions, deletions, paths) = repo.numstat(&a.tree, &b.tree).await?;
                diff.insertions = insertions;
                diff.deletions = deletions;
                diff.files_changed = paths.len() as u64;
                diff.changed_paths = paths;
                if capture_patch && diff.files_changed > 0 {
                    patch = Some(repo.patch(&a.tree, &b.tree).await?);
                }
            }
            (Backend::Hash(_), SnapshotState::Hash(a), SnapshotState::Hash(b)) => {
                diff.changed_paths = hash::changed_paths(a, b);
                diff.files_changed = diff.changed_paths.len() as u64;
            }
            _ => return Err(WorkspaceError::BackendMismatch { from: from.backend, to: self.backend() }),
        }
        Ok((diff, patch))
    }

    /// Keeps, of a restorable hash snapshot `to`, only the content copies a rollback from the
    /// end of `diff` needs (the files the run changed). Nothing for git snapshots.
    pub fn retain_rollback_content(&self, to: &Snapshot, diff: &Diff) {
        if let SnapshotState::Hash(state) = &to.state {
            state.retain_copies_for(&diff.changed_paths);
        }
    }

    /// Puts the workspace back to `to`.
    ///
    /// With `from` (the snapshot the workspace is expected to be at, normally the run's
    /// after-snapshot), the current state is compared with it first: if anything changed since,
    /// the rollback is refused with [`WorkspaceError::ChangedSinceSnapshot`] and nothing is
    /// written. Without `from` the current state is rolled back whatever it is.
    ///
    /// - Git: the current state (work tree with untracked files, on top of the current `HEAD`)
    ///   is first committed under a safety ref `refs/asm/rollback/<ms>-<pid>-<n>`; then `HEAD`
    ///   (its branch) is moved back if the run committed or switched branches, files the run
    ///   created are removed (untracked ones too), files it changed or deleted are written back,
    ///   and a restorable `to` also gets the real index back. Ignored files are never touched.
    ///   Unlike the original's `reset --hard <snapshot>`, the branch never ends up on the
    ///   synthetic snapshot commit.
    /// - Hash: `to` must be restorable; the files the run changed are written back from its
    ///   content copy and the files it created are removed.
    ///
    /// # Errors
    /// Snapshots of another workspace or backend; a non-restorable hash snapshot
    /// ([`WorkspaceError::NotRestorable`]); [`WorkspaceError::ChangedSinceSnapshot`]; I/O or git
    /// failures (the git safety ref then still holds the replaced state).
    pub async fn rollback(&self, to: &Snapshot, from: Option<&Snapshot>) -> WorkspaceResult<RollbackReport> {
        self.check_own(to)?;
        if let Some(from) = from {
            self.check_own(from)?;
        }
        let span = tracing::info_span!("workspace_rollback", backend = %self.backend(), to = %to.reference);
        self.rollback_inner(to, from).instrument(span).await
    }

    async fn rollback_inner(&self, to: &Snapshot, from: Option<&Snapshot>) -> WorkspaceResult<RollbackReport> {
        match (&self.backend, &to.state) {
            (Backend::Git(repo), SnapshotState::Git(target)) => {
                let (current_ref, current) = repo.snapshot(false).await?;
                if let Some(from) = from
                    && let SnapshotState::Git(expected) = &from.state
                    && (expected.tree != current.tree || expected.head != current.head)
                {
                    return Err(WorkspaceError::ChangedSinceSnapshot {
                        expected: from.reference.clone(),
                        actual: current_ref,
                    });
                }
                let mut report = repo.rollback(target, &current_ref, &current).await?;
                report.to_ref = to.reference.clone();
                Ok(report)
            }
            (Backend::Hash(rules), SnapshotState::Hash(target)) => {
                if target.stash.is_none() {
                    return Err(WorkspaceError::NotRestorable { reference: to.reference.clone() });
                }
                let previous = match from.map(|f| &f.state) {
                    Some(SnapshotState::Hash(state)) => state.clone(),
                    _ => target.clone(),
                };
                let (root, rules, target, expected) =
                    (self.root.clone(), rules.clone(), target.clone(), from.map(|f| f.reference.clone()));
                tokio::task::spawn_blocking(move || {
                    let current: HashState = hash::scan(&root, &rules, Some(&previous), false)?;
                    let actual = current.reference();
                    if let Some(expected) = expected
                        && expected != actual
                    {
                        return Err(WorkspaceError::ChangedSinceSnapshot { expected, actual });
                    }
                    hash::rollback(&root, &target, &current)
                })
                .await
                .map_err(|e| WorkspaceError::Io {
                    path: self.root.clone(),
                    message: format!("rollback task failed: {e}"),
                })?
            }
            _ => Err(WorkspaceError::BackendMismatch { from: to.backend, to: self.backend() }),
        }
    }
}

/// The patch as text; bytes that are not UTF-8 (a Latin-1 file) are replaced, and the
/// metadata says so (the artifact keeps the exact bytes).
pub(crate) fn patch_text(patch: Vec<u8>, metadata: &mut JsonMap) -> String {
    match String::from_utf8(patch) {
        Ok(text) => text,
        Err(e) => {
            metadata.insert("patch_lossy".into(), true.into());
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    }
}
