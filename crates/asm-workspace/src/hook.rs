//! [`WorkspaceHook`]: snapshots, diff, patch and rollback around a run, as a [`RunHook`].

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use asm_core::{Error, EventKind, JsonMap, Result, RunId, keys};
use asm_ports::{ArtifactStore, HookAction, ProviderEvent, RunContext, RunFinish, RunHook};

use crate::error::{WorkspaceError, WorkspaceResult};
use crate::types::{Diff, RollbackReport, Snapshot, SnapshotLabel, Strategy};
use crate::workspace::{Workspace, WorkspaceOptions, patch_text};

/// The default inline patch cap, in bytes (the original's `max_patch_bytes`).
pub const DEFAULT_MAX_PATCH_BYTES: u64 = 1_048_576;
/// Most changed paths listed in the run metadata's compact summary (all of them are in the
/// run output's `workspace.diff`).
pub const MAX_SUMMARY_PATHS: usize = 1_000;

/// Snapshots the workspace around every run it is attached to (spec 8.5, with the original's
/// quirks fixed).
///
/// - **Start**: opens the workspace (typed error for a missing path, a non-repository with
///   [`Strategy::Git`], a repository without commits, invalid options: the run fails before the
///   provider is called), takes the `before` snapshot (restorable when
///   [`rollback_on_failure`](Self::rollback_on_failure) is set) and emits
///   `workspace_snapshot_taken {label: before, backend, ref}`.
/// - **Finish**: takes the `after` (success) or `after_failure` snapshot (event), diffs it
///   against `before` and emits `workspace_diff_computed {files_changed, insertions,
///   deletions, has_patch}` (plus `patch_bytes` / `patch_ref` when there is a patch). A patch up
///   to [`max_patch_bytes`](Self::max_patch_bytes) stays inline; a larger one is stored whole in
///   the [artifact store](Self::artifact_store) under `patch_<from>_<to>_<32 hex>` and
///   referenced by key; with no store it is left out with `patch_truncated: true` and a
///   warning, never silently. On failure with `rollback_on_failure`, the workspace is rolled
///   back to `before` ([`Workspace::rollback`], git and hash alike).
/// - **Records**: run metadata `workspace = {backend, before_ref, after_ref, diff: {summary,
///   has_patch, patch?, patch_ref?, patch_bytes?, patch_truncated}, rollback?}` on every
///   outcome; the completed run's output `extra.workspace = {backend, before_snapshot,
///   after_snapshot, diff}`.
/// - **Errors at finish**: a successful run fails with the workspace error; a failed run keeps
///   its own error and the workspace error is recorded in `workspace.error`.
///
/// One hook may serve many runs at once (state is kept per run id).
///
/// ```no_run
/// use asm_workspace::WorkspaceHook;
/// use asm_artifact_fs::FileArtifactStore;
///
/// # fn main() -> asm_core::Result<()> {
/// let hook = WorkspaceHook::git("/path/to/repo")
///     .rollback_on_failure(true)
///     .artifact_store(FileArtifactStore::open("/var/lib/asm/artifacts")?);
/// // RunOptions::new().hook(hook)
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WorkspaceHook {
    config: Arc<HookConfig>,
    runs: Arc<Mutex<HashMap<RunId, RunState>>>,
}

#[derive(Clone)]
struct HookConfig {
    path: PathBuf,
    options: WorkspaceOptions,
    capture_patch: bool,
    max_patch_bytes: u64,
    rollback_on_failure: bool,
    always_store_patch: bool,
    artifact_store: Option<Arc<dyn ArtifactStore>>,
}

struct RunState {
    workspace: Workspace,
    before: Snapshot,
}

impl fmt::Debug for WorkspaceHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("WorkspaceHook")
            .field("path", &c.path)
            .field("options", &c.options)
            .field("capture_patch", &c.capture_patch)
            .field("max_patch_bytes", &c.max_patch_bytes)
            .field("rollback_on_failure", &c.rollback_on_failure)
            .field("always_store_patch", &c.always_store_patch)
            .field("artifact_store", &c.artifact_store)
            .field("active_runs", &self.runs.lock().len())
            .finish()
    }
}

/// The original's keyword options, as JSON (for configuration files, the CLI and HTTP):
/// `strategy`, `capture_patch`, `max_patch_bytes`, `rollback_on_failure`, `ignore: {paths,
/// globs}`, `excluded_roots`. Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonConfig {
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    capture_patch: Option<bool>,
    #[serde(default)]
    max_patch_bytes: Option<u64>,
    #[serde(default)]
    rollback_on_failure: Option<bool>,
    #[serde(default)]
    always_store_patch: Option<bool>,
    #[serde(default)]
    ignore: Option<JsonIgnore>,
    #[serde(default)]
    excluded_roots: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonIgnore {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    globs: Vec<String>,
}

impl WorkspaceHook {
    /// A hook on `path` with [`Strategy::Auto`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            config: Arc::new(HookConfig {
                path: path.into(),
                options: WorkspaceOptions::default(),
                capture_patch: true,
                max_patch_bytes: DEFAULT_MAX_PATCH_BYTES,
                rollback_on_failure: false,
                always_store_patch: false,
                artifact_store: None,
            }),
            runs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A hook on the git work tree at `path` ([`Strategy::Git`]).
    pub fn git(path: impl Into<PathBuf>) -> Self {
        Self::new(path).strategy(Strategy::Git)
    }

    /// A hook hashing the files under `path` ([`Strategy::Hash`]).
    pub fn hash(path: impl Into<PathBuf>) -> Self {
        Self::new(path).strategy(Strategy::Hash)
    }

    /// A hook configured from the original's options as JSON (see the type docs of the keys).
    ///
    /// ```
    /// use asm_workspace::WorkspaceHook;
    /// let hook = WorkspaceHook::from_json("/repo", &serde_json::json!({"strategy": "hash", "ignore": {"globs": ["*.log"]}}));
    /// assert!(hook.is_ok());
    /// let bad = WorkspaceHook::from_json("/repo", &serde_json::json!({"strategy": "svn"}));
    /// assert_eq!(bad.unwrap_err().code(), asm_core::ErrorCode::ValidationError);
    /// ```
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`](asm_core::ErrorCode::ValidationError): an unknown key or
    /// strategy, a wrongly typed value, invalid ignore paths.
    pub fn from_json(path: impl Into<PathBuf>, config: &Value) -> Result<Self> {
        let parsed: JsonConfig = serde_json::from_value(config.clone())
            .map_err(|e| Error::from(WorkspaceError::InvalidOption { option: "workspace", message: e.to_string() }))?;
        let mut hook = Self::new(path);
        if let Some(strategy) = parsed.strategy {
            hook = hook.strategy(strategy.parse()?);
        }
        if let Some(capture) = parsed.capture_patch {
            hook = hook.capture_patch(capture);
        }
        if let Some(bytes) = parsed.max_patch_bytes {
            hook = hook.max_patch_bytes(bytes);
        }
        if let Some(rollback) = parsed.rollback_on_failure {
            hook = hook.rollback_on_failure(rollback);
        }
        if let Some(always) = parsed.always_store_patch {
            hook = hook.always_store_patch(always);
        }
        if let Some(roots) = parsed.excluded_roots {
            hook = hook.excluded_roots(roots);
        }
        if let Some(ignore) = parsed.ignore {
            for path in ignore.paths {
                hook = hook.ignore_path(path);
            }
            for glob in ignore.globs {
                hook = hook.ignore_glob(glob);
            }
        }
        hook.validate()?;
        Ok(hook)
    }

    fn with(mut self, change: impl FnOnce(&mut HookConfig)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// Sets the backend strategy.
    #[must_use]
    pub fn strategy(self, strategy: Strategy) -> Self {
        self.with(|c| c.options.strategy = strategy)
    }
    /// Replaces all workspace options (strategy, excluded roots, ignore rules).
    #[must_use]
    pub fn options(self, options: WorkspaceOptions) -> Self {
        self.with(|c| c.options = options)
    }
    /// Replaces the roots the hash backend skips.
    #[must_use]
    pub fn excluded_roots<I: IntoIterator<Item = S>, S: Into<String>>(self, roots: I) -> Self {
        let roots: Vec<String> = roots.into_iter().map(Into::into).collect();
        self.with(|c| c.options.excluded_roots = roots)
    }
    /// Adds a subtree the hash backend skips (forwarded to the backend, unlike the original).
    #[must_use]
    pub fn ignore_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.with(|c| c.options.ignore_paths.push(path))
    }
    /// Adds a glob of files the hash backend skips (forwarded, unlike the original).
    #[must_use]
    pub fn ignore_glob(self, glob: impl Into<String>) -> Self {
        let glob = glob.into();
        self.with(|c| c.options.ignore_globs.push(glob))
    }
    /// Whether the diff carries a patch (git; default true).
    #[must_use]
    pub fn capture_patch(self, capture: bool) -> Self {
        self.with(|c| c.capture_patch = capture)
    }
    /// The inline patch cap (default [`DEFAULT_MAX_PATCH_BYTES`]).
    #[must_use]
    pub fn max_patch_bytes(self, bytes: u64) -> Self {
        self.with(|c| c.max_patch_bytes = bytes)
    }
    /// Roll the workspace back to the before-snapshot when the run fails, is cancelled or times
    /// out (default false). Works for both backends.
    #[must_use]
    pub fn rollback_on_failure(self, rollback: bool) -> Self {
        self.with(|c| c.rollback_on_failure = rollback)
    }
    /// Where patches too big to stay inline are stored.
    #[must_use]
    pub fn artifact_store(self, store: impl ArtifactStore) -> Self {
        let store: Arc<dyn ArtifactStore> = Arc::new(store);
        self.with(|c| c.artifact_store = Some(store))
    }
    /// As [`artifact_store`](Self::artifact_store), with a shared handle.
    #[must_use]
    pub fn artifact_store_shared(self, store: Arc<dyn ArtifactStore>) -> Self {
        self.with(|c| c.artifact_store = Some(store))
    }
    /// Store every non-empty patch in the artifact store, even small ones (the original's
    /// behaviour when a store was configured; default false).
    #[must_use]
    pub fn always_store_patch(self, always: bool) -> Self {
        self.with(|c| c.always_store_patch = always)
    }

    /// Checks the options without touching the file system.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationError`](asm_core::ErrorCode::ValidationError) for an empty path or
    /// invalid ignore rules.
    pub fn validate(&self) -> Result<()> {
        if self.config.path.as_os_str().is_empty() {
            return Err(WorkspaceError::EmptyPath.into());
        }
        self.config.options.validate()?;
        Ok(())
    }

    /// Opens the workspace as a run would (the backend it resolves to, or the error a run would
    /// fail with).
    ///
    /// # Errors
    /// As [`Workspace::open`].
    pub async fn open(&self) -> Result<Workspace> {
        Ok(Workspace::open(&self.config.path, self.config.options.clone()).await?)
    }

    /// Runs in progress (snapshotted, not finished).
    pub fn active_runs(&self) -> usize {
        self.runs.lock().len()
    }
}

fn snapshot_event(snapshot: &Snapshot) -> ProviderEvent {
    ProviderEvent::new(EventKind::WorkspaceSnapshotTaken)
        .data(keys::LABEL, snapshot.label.map_or(Value::Null, |l| l.as_str().into()))
        .data(keys::BACKEND, snapshot.backend.as_str())
        .data(keys::REF, snapshot.reference.clone())
}

/// The artifact key of a patch (the original's format).
fn patch_key(diff: &Diff) -> String {
    format!("patch_{}_{}_{:032x}", diff.from_ref, diff.to_ref, rand::random::<u128>())
}

struct Finished {
    after: Snapshot,
    diff: Diff,
    rollback: Option<RollbackReport>,
}

impl WorkspaceHook {
    async fn finish(
        &self,
        state: &RunState,
        failed: bool,
        action: &mut HookAction,
    ) -> std::result::Result<Finished, Error> {
        let config = &self.config;
        let label = if failed { SnapshotLabel::AfterFailure } else { SnapshotLabel::After };
        let after = state.workspace.snapshot_since(Some(label), &state.before).await?;
        action.events.push(snapshot_event(&after));

        let (mut diff, patch) = state.workspace.diff_raw(&state.before, &after, config.capture_patch).await?;
        if let Some(patch) = patch.filter(|p| !p.is_empty()) {
            let bytes = patch.len() as u64;
            diff.patch_bytes = Some(bytes);
            let store =
                config.artifact_store.as_ref().filter(|_| config.always_store_patch || bytes > config.max_patch_bytes);
            if let Some(store) = store {
                let key = patch_key(&diff);
                store.put(&key, patch).await?;
                diff.patch_ref = Some(key);
            } else if bytes <= config.max_patch_bytes {
                diff.patch = Some(patch_text(patch, &mut diff.metadata));
            } else {
                tracing::warn!(
                    patch_bytes = bytes,
                    max_patch_bytes = config.max_patch_bytes,
                    "workspace patch exceeds the inline cap and no artifact store is configured; it is left out"
                );
                diff.patch_truncated = true;
            }
        }
        let mut event = ProviderEvent::new(EventKind::WorkspaceDiffComputed)
            .data(keys::FILES_CHANGED, diff.files_changed)
            .data(keys::INSERTIONS, diff.insertions)
            .data(keys::DELETIONS, diff.deletions)
            .data(keys::HAS_PATCH, diff.has_patch() || diff.patch_ref.is_some());
        if let Some(bytes) = diff.patch_bytes {
            event = event.data("patch_bytes", bytes);
        }
        if let Some(key) = &diff.patch_ref {
            event = event.data("patch_ref", key.clone());
        }
        if diff.patch_truncated {
            event = event.data("patch_truncated", true);
        }
        action.events.push(event);

        let rollback = if failed && config.rollback_on_failure {
            state.workspace.retain_rollback_content(&state.before, &diff);
            Some(state.workspace.rollback(&state.before, Some(&after)).await?)
        } else {
            None
        };
        Ok(Finished { after, diff, rollback })
    }
}

fn compact_diff(diff: &Diff) -> JsonMap {
    let mut map = JsonMap::new();
    map.insert("files_changed".into(), diff.files_changed.into());
    map.insert("insertions".into(), diff.insertions.into());
    map.insert("deletions".into(), diff.deletions.into());
    let listed: Vec<Value> = diff.changed_paths.iter().take(MAX_SUMMARY_PATHS).map(|p| p.clone().into()).collect();
    map.insert("changed_paths".into(), listed.into());
    if diff.changed_paths.len() > MAX_SUMMARY_PATHS {
        map.insert("changed_paths_truncated".into(), true.into());
    }
    map.insert("has_patch".into(), (diff.has_patch() || diff.patch_ref.is_some()).into());
    if let Some(patch) = &diff.patch {
        map.insert("patch".into(), patch.clone().into());
    }
    if let Some(key) = &diff.patch_ref {
        map.insert("patch_ref".into(), key.clone().into());
    }
    if let Some(bytes) = diff.patch_bytes {
        map.insert("patch_bytes".into(), bytes.into());
    }
    map.insert("patch_truncated".into(), diff.patch_truncated.into());
    map
}

#[async_trait]
impl RunHook for WorkspaceHook {
    async fn on_start(&self, ctx: &RunContext) -> Result<HookAction> {
        let span = tracing::info_span!("workspace_before", run_id = %ctx.run.id, path = %self.config.path.display());
        async {
            self.validate()?;
            let workspace = self.open().await?;
            let before: WorkspaceResult<Snapshot> = if self.config.rollback_on_failure {
                workspace.snapshot_restorable(Some(SnapshotLabel::Before)).await
            } else {
                workspace.snapshot(Some(SnapshotLabel::Before)).await
            };
            let before = before?;
            let action = HookAction::none().emit(snapshot_event(&before));
            self.runs.lock().insert(ctx.run.id.clone(), RunState { workspace, before });
            Ok(action)
        }
        .instrument(span)
        .await
    }

    async fn on_finish(&self, ctx: &RunContext, finish: &RunFinish) -> Result<HookAction> {
        let Some(state) = self.runs.lock().remove(&ctx.run.id) else { return Ok(HookAction::none()) };
        let failed = finish.result.is_err();
        let span = tracing::info_span!("workspace_after", run_id = %ctx.run.id, failed);
        let mut action = HookAction::none();
        let finished = self.finish(&state, failed, &mut action).instrument(span).await;
        let before = &state.before;
        let mut summary = JsonMap::new();
        summary.insert("backend".into(), before.backend.as_str().into());
        summary.insert("before_ref".into(), before.reference.clone().into());
        match finished {
            Ok(Finished { after, diff, rollback }) => {
                summary.insert("after_ref".into(), after.reference.clone().into());
                summary.insert("diff".into(), compact_diff(&diff).into());
                if let Some(report) = &rollback {
                    summary.insert("rollback".into(), report.to_map().into());
                }
                let mut extra = JsonMap::new();
                extra.insert("backend".into(), before.backend.as_str().into());
                extra.insert("before_snapshot".into(), before.to_map().into());
                extra.insert("after_snapshot".into(), after.to_map().into());
                extra.insert("diff".into(), diff.to_map().into());
                if let Some(report) = rollback {
                    extra.insert("rollback".into(), report.to_map().into());
                }
                Ok(action.run_metadata("workspace", summary).output_extra("workspace", extra))
            }
            Err(error) => {
                tracing::warn!(%error, "workspace finalisation failed");
                summary.insert("error".into(), error.to_event_data().into());
                let action = action.run_metadata("workspace", summary);
                // A successful run fails with the workspace error; a failed one keeps its own.
                Ok(if failed { action } else { action.abort(error) })
            }
        }
    }
}
