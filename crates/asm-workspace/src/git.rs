//! The git backend (spec 8.3), driving the real `git` binary.
//!
//! A snapshot never touches `HEAD`, the real index or the work tree: it copies the real index
//! into a temporary file, points `GIT_INDEX_FILE` at the copy, runs `add -A` (tracked and
//! untracked files, `.gitignore` respected; the copy's stat cache means only changed files are
//! hashed) and `write-tree`; a tree that differs from `HEAD^{tree}` becomes a dangling commit
//! (`commit-tree -p HEAD`). Without a real index the temporary one starts as `read-tree HEAD`.
//! (The result equals `read-tree HEAD` + `add -A`, except that files force-added to the index
//! despite `.gitignore` count as tracked, as `git add -A` would commit them.)
//!
//! The alternate index is kept for the next snapshot of the same workspace (the "after" of a
//! run, a rollback's check) while the real index file stays the same one: its stat cache is
//! then warm and `add -A` + `write-tree` rewrite nothing when nothing changed. Reuse gives the
//! tree a fresh copy would; the only paths where the two indexes can differ (ones an earlier
//! `add -A` added or removed) are checked with `check-ignore` first, concurrently.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use std::io::Write;

use crate::error::{WorkspaceError, WorkspaceResult};
use crate::hash::prune_empty_dirs;
use crate::types::RollbackReport;

/// Longest git output quoted in an error.
const MAX_ERROR_OUTPUT: usize = 4 * 1024;
/// The message of snapshot commits.
const SNAPSHOT_MESSAGE: &str = "asm workspace snapshot";
/// The identity of snapshot and safety commits (never the user's config: a fresh machine has
/// none, and these commits are not history).
const IDENTITY: (&str, &str) = ("agent-session-manager", "asm@localhost");
/// Where git rollbacks keep the state they replaced (one ref per rollback).
pub const SAFETY_REF_PREFIX: &str = "refs/asm/rollback/";

/// Makes safety ref names unique within one process.
static SAFETY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A git work tree.
#[derive(Clone, Debug)]
pub(crate) struct GitRepo {
    /// The work tree's top level.
    pub(crate) toplevel: PathBuf,
    /// The real index file (only ever read by snapshots).
    index: PathBuf,
    /// The alternate index of the last snapshot, reused by the next one while the real index
    /// is unchanged (shared by clones: they are the same repository).
    warm: Arc<Mutex<Option<WarmIndex>>>,
}

/// An alternate index kept between snapshots: a copy of the real index (as it was when
/// `source` was taken) that `add -A` has since brought up to date, its stat cache warm.
///
/// Reusing it gives exactly the tree a fresh copy would: `add -A` makes every path that is not
/// ignored match the work tree whatever the index held, so the two indexes can only differ on
/// ignored paths that one of them tracks, and those are among the paths earlier runs added or
/// removed (`mentioned`). A reuse checks that none of those is ignored now, else starts afresh.
#[derive(Debug)]
struct WarmIndex {
    /// Keeps the directory of `path` alive.
    _dir: tempfile::TempDir,
    /// The alternate index file.
    path: PathBuf,
    /// The real index's file identity when it was copied.
    source: IndexStamp,
    /// The tree of the real index as copied (`Some(None)`: unmerged entries), when computed.
    index_tree: Option<Option<String>>,
    /// Every path `add -A` added or removed on this index since the copy.
    mentioned: BTreeSet<Vec<u8>>,
}

/// What identifies one version of the real index file: git replaces it by renaming a lock
/// file, so any write changes the inode or the times.
#[derive(Clone, Debug, PartialEq, Eq)]
struct IndexStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    unix: (u64, u64, i64, i64),
}

impl IndexStamp {
    async fn of(path: &Path) -> Option<Self> {
        let meta = tokio::fs::metadata(path).await.ok()?;
        #[cfg(unix)]
        let unix = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
        };
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            unix,
        })
    }
}

/// The paths of `git add -A --verbose` output (`add 'p'` / `remove 'p'` lines); `None` when a
/// line has another shape (then the index is not kept).
fn verbose_paths(out: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut paths = Vec::new();
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let rest = line.strip_prefix(b"add '").or_else(|| line.strip_prefix(b"remove '"))?;
        paths.push(rest.strip_suffix(b"'")?.to_vec());
    }
    Some(paths)
}

/// A git snapshot's inside.
#[derive(Debug)]
pub(crate) struct GitState {
    pub(crate) head: String,
    /// `refs/heads/...`, or `None` for a detached `HEAD`.
    pub(crate) branch: Option<String>,
    pub(crate) head_tree: String,
    /// The work tree (tracked + untracked, not ignored).
    pub(crate) tree: String,
    /// The real index's tree (restorable snapshots; `None` with unmerged entries).
    pub(crate) index_tree: Option<String>,
}

/// How a path relates to git.
pub(crate) enum Discovery {
    Repo(GitRepo),
    NotARepo,
    NoCommits(PathBuf),
}

/// Runs `git -C <cwd> <args>` with a clean environment; stdout on success.
async fn git<I, S>(cwd: &Path, args: I, index: Option<&Path>, stdin: Option<Vec<u8>>) -> WorkspaceResult<Vec<u8>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    git_exit(cwd, args, index, stdin, &[]).await.map(|(_, out)| out)
}

/// As [`git`], also accepting the exit codes `ok_codes`: `(exit code, stdout)`.
async fn git_exit<I, S>(
    cwd: &Path,
    args: I,
    index: Option<&Path>,
    stdin: Option<Vec<u8>>,
    ok_codes: &[i32],
) -> WorkspaceResult<(i32, Vec<u8>)>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    // std::process on a blocking thread rather than tokio::process: waiting with waitpid ends
    // the moment git exits (tokio's SIGCHLD-driven reaping added milliseconds per command).
    let mut command = std::process::Command::new("git");
    command
        .arg("-C")
        .arg(cwd)
        .args(&args)
        // The caller's environment must not redirect git (a git hook exports these).
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_NAMESPACE")
        // Read-only commands must not refresh (write) the real index.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env("GIT_AUTHOR_NAME", IDENTITY.0)
        .env("GIT_AUTHOR_EMAIL", IDENTITY.1)
        .env("GIT_COMMITTER_NAME", IDENTITY.0)
        .env("GIT_COMMITTER_EMAIL", IDENTITY.1)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    let describe = || args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
    let ran = tokio::task::spawn_blocking(move || -> Result<std::process::Output, (bool, std::io::Error)> {
        let mut child = command.spawn().map_err(|e| (true, e))?;
        if let Some(input) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            pipe.write_all(&input).map_err(|e| (false, e))?;
        }
        child.wait_with_output().map_err(|e| (false, e))
    })
    .await
    .map_err(|e| WorkspaceError::Git { command: describe(), output: format!("git task failed: {e}") })?;
    let output = match ran {
        Ok(output) => output,
        Err((true, e)) => return Err(WorkspaceError::GitUnavailable(e.to_string())),
        Err((false, e)) => return Err(WorkspaceError::Git { command: describe(), output: e.to_string() }),
    };
    if output.status.success() {
        return Ok((0, output.stdout));
    }
    if let Some(code) = output.status.code()
        && ok_codes.contains(&code)
    {
        return Ok((code, output.stdout));
    }
    let text = if output.stderr.is_empty() { &output.stdout } else { &output.stderr };
    let mut message = String::from_utf8_lossy(text).trim().to_owned();
    if message.len() > MAX_ERROR_OUTPUT {
        let mut cut = MAX_ERROR_OUTPUT;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    if message.is_empty() {
        message = format!("exit status {}", output.status);
    }
    Err(WorkspaceError::Git { command: describe(), output: message })
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes).lines().map(str::to_owned).collect()
}

fn one_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// Finds the work tree `path` is in.
pub(crate) async fn discover(path: &Path) -> WorkspaceResult<Discovery> {
    let located = git(path, ["rev-parse", "--show-toplevel", "--git-path", "index"], None, None).await;
    let out = match located {
        Ok(out) => out,
        Err(WorkspaceError::Git { .. }) => return Ok(Discovery::NotARepo),
        Err(other) => return Err(other),
    };
    let found = lines(&out);
    let (Some(toplevel), Some(index)) = (found.first(), found.get(1)) else { return Ok(Discovery::NotARepo) };
    let toplevel = PathBuf::from(toplevel);
    let index = {
        let index = PathBuf::from(index);
        if index.is_absolute() { index } else { path.join(index) }
    };
    if git(&toplevel, ["rev-parse", "--verify", "-q", "HEAD^{commit}"], None, None).await.is_err() {
        return Ok(Discovery::NoCommits(toplevel));
    }
    Ok(Discovery::Repo(GitRepo { toplevel, index, warm: Arc::default() }))
}

impl GitRepo {
    async fn run<I, S>(&self, args: I, index: Option<&Path>) -> WorkspaceResult<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        git(&self.toplevel, args, index, None).await
    }

    /// `HEAD`, its tree and the symbolic ref.
    async fn head(&self) -> WorkspaceResult<(String, String, Option<String>)> {
        let out = match self.run(["rev-parse", "HEAD", "HEAD^{tree}", "--symbolic-full-name", "HEAD"], None).await {
            Ok(out) => out,
            Err(error @ WorkspaceError::Git { .. }) => {
                // Still a repository (not deleted meanwhile) whose HEAD does not resolve?
                let still_a_repo = self.run(["rev-parse", "--show-toplevel"], None).await.is_ok();
                if still_a_repo && self.run(["rev-parse", "--verify", "-q", "HEAD^{commit}"], None).await.is_err() {
                    return Err(WorkspaceError::NoCommits { path: self.toplevel.clone() });
                }
                return Err(error);
            }
            Err(other) => return Err(other),
        };
        let found = lines(&out);
        match (found.first(), found.get(1)) {
            (Some(head), Some(tree)) => {
                let branch = found.get(2).filter(|b| b.starts_with("refs/")).cloned();
                Ok((head.clone(), tree.clone(), branch))
            }
            _ => Err(WorkspaceError::Git { command: "rev-parse HEAD".into(), output: "unexpected output".into() }),
        }
    }

    /// The work tree's tree (and, with `capture_index`, the real index's tree), through an
    /// alternate index: the one kept from the last snapshot when still valid, else a fresh copy.
    async fn work_tree(&self, capture_index: bool) -> WorkspaceResult<(String, Option<String>)> {
        let stamp = IndexStamp::of(&self.index).await;
        let warm = self.warm.lock().take();
        if let (Some(warm), Some(stamp)) = (warm, &stamp)
            && warm.source == *stamp
            && (!capture_index || warm.index_tree.is_some())
            && let Some(found) = self.reuse(warm, capture_index).await
        {
            return Ok(found);
        }
        self.fresh_work_tree(capture_index, stamp).await
    }

    /// `add -A` + `write-tree` on the kept index; `None` (the index dropped) when it cannot be
    /// used: a path it differs from a fresh copy on may be ignored now, or git failed.
    async fn reuse(&self, mut warm: WarmIndex, capture_index: bool) -> Option<(String, Option<String>)> {
        let check = async {
            if warm.mentioned.is_empty() {
                return Ok(1);
            }
            let mut input = Vec::new();
            for path in &warm.mentioned {
                input.extend_from_slice(path);
                input.push(0);
            }
            // Exit 0: some path is ignored; 1: none is.
            let args = ["check-ignore", "--no-index", "-z", "--stdin"];
            git_exit(&self.toplevel, args, None, Some(input), &[1]).await.map(|(code, _)| code)
        };
        let build = async {
            let added = self.run(["add", "-A", "--verbose"], Some(&warm.path)).await?;
            let tree = one_line(&self.run(["write-tree"], Some(&warm.path)).await?);
            Ok::<_, WorkspaceError>((added, tree))
        };
        let (check, build) = tokio::join!(check, build);
        let (Ok(1), Ok((added, tree))) = (check, build) else { return None };
        let index_tree = if capture_index { warm.index_tree.clone().flatten() } else { None };
        if let Some(paths) = verbose_paths(&added)
            && IndexStamp::of(&self.index).await.as_ref() == Some(&warm.source)
        {
            warm.mentioned.extend(paths);
            *self.warm.lock() = Some(warm);
        }
        Some((tree, index_tree))
    }

    /// The work tree's tree through a new copy of the real index (kept for the next snapshot
    /// when the real index did not change meanwhile).
    async fn fresh_work_tree(
        &self,
        capture_index: bool,
        stamp: Option<IndexStamp>,
    ) -> WorkspaceResult<(String, Option<String>)> {
        let temp = tempfile::Builder::new()
            .prefix("asm-workspace-index-")
            .tempdir()
            .map_err(|e| WorkspaceError::io(std::env::temp_dir(), &e))?;
        let index = temp.path().join("index");
        let copied = match tokio::fs::copy(&self.index, &index).await {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(WorkspaceError::io(&self.index, &e)),
        };
        let mut index_tree = None;
        if copied && capture_index {
            // Unmerged entries make write-tree fail: then there is no index tree to restore.
            index_tree = self.run(["write-tree"], Some(&index)).await.ok().map(|out| one_line(&out));
        }
        // `add -A` on the copy gives the tree `git add -A` would stage: HEAD's tree for what is
        // unchanged, the work tree for the rest (untracked included), and the stat cache of the
        // copy makes it rehash only what changed. Without a usable copy (none yet, a split
        // index) start from HEAD's tree alone.
        let added = if copied { self.run(["add", "-A", "--verbose"], Some(&index)).await.ok() } else { None };
        if added.is_none() {
            let _ = tokio::fs::remove_file(&index).await;
            self.run(["read-tree", "HEAD"], Some(&index)).await?;
            self.run(["add", "-A"], Some(&index)).await?;
        }
        let tree = one_line(&self.run(["write-tree"], Some(&index)).await?);
        if let (Some(added), Some(source)) = (added, stamp)
            && let Some(paths) = verbose_paths(&added)
            && IndexStamp::of(&self.index).await.as_ref() == Some(&source)
        {
            *self.warm.lock() = Some(WarmIndex {
                _dir: temp,
                path: index,
                source,
                index_tree: capture_index.then(|| index_tree.clone()),
                mentioned: paths.into_iter().collect(),
            });
        }
        Ok((tree, index_tree))
    }

    /// Takes a snapshot: the ref is `HEAD` when the tree is clean, else a dangling commit.
    pub(crate) async fn snapshot(&self, capture_index: bool) -> WorkspaceResult<(String, GitState)> {
        // Independent: HEAD is read while the temporary index is built.
        let (head, work) = tokio::join!(self.head(), self.work_tree(capture_index));
        let (head, head_tree, branch) = head?;
        let (tree, index_tree) = work?;
        let reference = if tree == head_tree {
            head.clone()
        } else {
            one_line(
                &self
                    .run(
                        ["commit-tree", "--no-gpg-sign", tree.as_str(), "-p", head.as_str(), "-m", SNAPSHOT_MESSAGE],
                        None,
                    )
                    .await?,
            )
        };
        Ok((reference, GitState { head, branch, head_tree, tree, index_tree }))
    }

    /// `(insertions, deletions, changed paths)` between two trees.
    pub(crate) async fn numstat(&self, from: &str, to: &str) -> WorkspaceResult<(u64, u64, Vec<String>)> {
        let out = self.run(["diff-tree", "-r", "-z", "--no-renames", "--numstat", from, to], None).await?;
        let (mut insertions, mut deletions) = (0_u64, 0_u64);
        let mut paths = Vec::new();
        // Records: "<ins>\t<del>\t<path>\0"; binary files show "-".
        for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let mut fields = record.splitn(3, |b| *b == b'\t');
            let (Some(ins), Some(del), Some(path)) = (fields.next(), fields.next(), fields.next()) else { continue };
            insertions += std::str::from_utf8(ins).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            deletions += std::str::from_utf8(del).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            paths.push(String::from_utf8_lossy(path).into_owned());
        }
        paths.sort();
        paths.dedup();
        Ok((insertions, deletions, paths))
    }

    /// The whole patch between two trees (binary files included, so it applies).
    pub(crate) async fn patch(&self, from: &str, to: &str) -> WorkspaceResult<Vec<u8>> {
        self.run(["diff-tree", "-r", "-p", "--binary", "--no-renames", "--no-color", from, to], None).await
    }

    /// `(status, path)` of every path that differs between two trees.
    async fn name_status(&self, from: &str, to: &str) -> WorkspaceResult<Vec<(u8, String)>> {
        let out = self.run(["diff-tree", "-r", "-z", "--no-renames", "--name-status", from, to], None).await?;
        let mut fields = out.split(|b| *b == 0).filter(|r| !r.is_empty());
        let mut changes = Vec::new();
        while let (Some(status), Some(path)) = (fields.next(), fields.next()) {
            changes.push((status.first().copied().unwrap_or(b'M'), String::from_utf8_lossy(path).into_owned()));
        }
        Ok(changes)
    }

    /// Rolls the work tree (and `HEAD`, and the index when it was captured) back to `to`, given
    /// the current state `current` (already checked by the caller). The replaced state is kept
    /// under a safety ref first.
    pub(crate) async fn rollback(
        &self,
        to: &GitState,
        current_ref: &str,
        current: &GitState,
    ) -> WorkspaceResult<RollbackReport> {
        let changes = self.name_status(&to.tree, &current.tree).await?;

        // 1. Keep what is about to be replaced.
        let millis = chrono::Utc::now().timestamp_millis();
        let n = SAFETY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let safety_ref = format!("{SAFETY_REF_PREFIX}{millis}-{}-{n}", std::process::id());
        self.run(["update-ref", "-m", "asm rollback safety", safety_ref.as_str(), current_ref], None).await?;

        // 2. HEAD back where it was (the run committed, or switched branches).
        let mut head_reset = false;
        if current.head != to.head || current.branch != to.branch {
            match &to.branch {
                Some(branch) => {
                    if current.branch.as_ref() != Some(branch) {
                        self.run(["symbolic-ref", "HEAD", branch.as_str()], None).await?;
                    }
                    self.run(["update-ref", "-m", "asm rollback", branch.as_str(), to.head.as_str()], None).await?;
                }
                None => {
                    self.run(["update-ref", "--no-deref", "-m", "asm rollback", "HEAD", to.head.as_str()], None)
                        .await?;
                }
            }
            head_reset = true;
        }

        // 3. The work tree: first remove what the run created (untracked files included:
        //    `reset --hard` would have left them), then write back what it changed or deleted.
        let mut report = RollbackReport { safety_ref: Some(safety_ref), head_reset, ..RollbackReport::default() };
        let mut restore = Vec::new();
        for (status, path) in changes {
            if status == b'A' {
                let absolute = self.toplevel.join(&path);
                match tokio::fs::symlink_metadata(&absolute).await {
                    Ok(meta) if meta.is_dir() => {} // a gitlink (nested repository): left alone
                    Ok(_) => {
                        tokio::fs::remove_file(&absolute).await.map_err(|e| WorkspaceError::io(&absolute, &e))?;
                        prune_empty_dirs(&self.toplevel, absolute.parent());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(WorkspaceError::io(absolute, &e)),
                }
                report.removed.push(path);
            } else {
                let absolute = self.toplevel.join(&path);
                if let Ok(meta) = tokio::fs::symlink_metadata(&absolute).await
                    && meta.is_dir()
                {
                    // A directory the run put where the file was; its content is in the safety ref.
                    tokio::fs::remove_dir_all(&absolute).await.map_err(|e| WorkspaceError::io(&absolute, &e))?;
                }
                restore.push(path);
            }
        }
        if !restore.is_empty() {
            let temp = tempfile::Builder::new()
                .prefix("asm-workspace-index-")
                .tempdir()
                .map_err(|e| WorkspaceError::io(std::env::temp_dir(), &e))?;
            let index = temp.path().join("index");
            self.run(["read-tree", to.tree.as_str()], Some(&index)).await?;
            let mut input = Vec::new();
            for path in &restore {
                input.extend_from_slice(path.as_bytes());
                input.push(0);
            }
            git(&self.toplevel, ["checkout-index", "-f", "-z", "--stdin"], Some(&index), Some(input)).await?;
        }
        report.restored = restore;

        // 4. The real index as it was (what was staged before the run).
        if let Some(index_tree) = &to.index_tree
            && current.index_tree.as_ref() != Some(index_tree)
        {
            let merged = self.run(["read-tree", "-m", index_tree.as_str()], None).await;
            if merged.is_err() {
                self.run(["read-tree", index_tree.as_str()], None).await?;
            }
        }
        Ok(report)
    }
}
