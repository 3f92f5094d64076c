//! The workspace's typed errors and their mapping onto [`asm_core::Error`].

use std::path::PathBuf;

use asm_core::{Error, ErrorCode};

use crate::BackendKind;

/// Why a workspace operation failed.
///
/// Every variant converts into an [`asm_core::Error`] (`From`), keeping its kind in the
/// `workspace_error` detail (the [`kind`](Self::kind) string) so that callers who only see the
/// core error can still tell the cases apart.
///
/// ```
/// use asm_core::ErrorCode;
/// use asm_workspace::WorkspaceError;
///
/// let error: asm_core::Error = WorkspaceError::NoCommits { path: "/repo".into() }.into();
/// assert_eq!(error.code(), ErrorCode::ValidationError);
/// assert_eq!(error.details()["workspace_error"], "no_commits");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// The workspace path is empty.
    #[error("the workspace path is empty")]
    EmptyPath,
    /// The workspace path does not exist.
    #[error("workspace path {path} does not exist")]
    PathNotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The workspace path is not a directory.
    #[error("workspace path {path} is not a directory")]
    NotADirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// The git backend was forced on a path outside any git work tree.
    #[error("{path} is not inside a git work tree (strategy git)")]
    NotAGitRepository {
        /// The path as given.
        path: PathBuf,
    },
    /// The repository has no commit yet, so there is no `HEAD` to snapshot against.
    #[error("the git repository at {path} has no commits yet (HEAD does not resolve)")]
    NoCommits {
        /// The repository's top level.
        path: PathBuf,
    },
    /// A strategy name that is not `auto`, `git` or `hash`.
    #[error("unknown workspace strategy {0:?} (expected auto, git or hash)")]
    UnknownStrategy(String),
    /// The `git` binary could not be started.
    #[error("could not run git: {0}")]
    GitUnavailable(String),
    /// A git command failed.
    #[error("git command failed: git {command}: {output}")]
    Git {
        /// The command line after `git`.
        command: String,
        /// Its stderr (or stdout), trimmed and bounded.
        output: String,
    },
    /// Reading or writing the work tree failed.
    #[error("workspace I/O failed on {path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// Two snapshots of different backends were compared.
    #[error("cannot compare a {from} snapshot with a {to} snapshot")]
    BackendMismatch {
        /// The first snapshot's backend.
        from: BackendKind,
        /// The second snapshot's backend.
        to: BackendKind,
    },
    /// Two snapshots of different workspaces were compared, or a snapshot was used with
    /// another workspace.
    #[error("snapshots belong to different workspaces: {from} and {to}")]
    PathMismatch {
        /// The first path.
        from: PathBuf,
        /// The second path.
        to: PathBuf,
    },
    /// A rollback was asked to a snapshot that was not taken restorable
    /// ([`Workspace::snapshot_restorable`](crate::Workspace::snapshot_restorable)).
    #[error("snapshot {reference} was not taken restorable; it cannot be rolled back to")]
    NotRestorable {
        /// The snapshot's ref.
        reference: String,
    },
    /// The work tree changed after the snapshot the rollback was to start from: rolling back
    /// would destroy changes nobody has seen. Nothing was written.
    #[error("the workspace changed since snapshot {expected} (now {actual}); refusing to roll back")]
    ChangedSinceSnapshot {
        /// The ref the rollback expected the workspace to be at.
        expected: String,
        /// The ref the workspace is at now.
        actual: String,
    },
    /// A workspace option is invalid.
    #[error("invalid workspace option {option}: {message}")]
    InvalidOption {
        /// The option name.
        option: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl WorkspaceError {
    /// A short snake_case name of the variant (the `workspace_error` detail).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EmptyPath => "empty_path",
            Self::PathNotFound { .. } => "path_not_found",
            Self::NotADirectory { .. } => "not_a_directory",
            Self::NotAGitRepository { .. } => "not_a_git_repository",
            Self::NoCommits { .. } => "no_commits",
            Self::UnknownStrategy(_) => "unknown_strategy",
            Self::GitUnavailable(_) => "git_unavailable",
            Self::Git { .. } => "git_failed",
            Self::Io { .. } => "io",
            Self::BackendMismatch { .. } => "backend_mismatch",
            Self::PathMismatch { .. } => "path_mismatch",
            Self::NotRestorable { .. } => "not_restorable",
            Self::ChangedSinceSnapshot { .. } => "changed_since_snapshot",
            Self::InvalidOption { .. } => "invalid_option",
        }
    }

    /// The [`ErrorCode`] the variant maps to: bad input is `validation_error`, a refused
    /// rollback `invalid_operation`, a failing git or file system `storage_error`, a missing
    /// `git` binary `dependency_not_available`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::EmptyPath
            | Self::PathNotFound { .. }
            | Self::NotADirectory { .. }
            | Self::NotAGitRepository { .. }
            | Self::NoCommits { .. }
            | Self::UnknownStrategy(_)
            | Self::BackendMismatch { .. }
            | Self::PathMismatch { .. }
            | Self::InvalidOption { .. } => ErrorCode::ValidationError,
            Self::NotRestorable { .. } | Self::ChangedSinceSnapshot { .. } => ErrorCode::InvalidOperation,
            Self::GitUnavailable(_) => ErrorCode::DependencyNotAvailable,
            Self::Git { .. } | Self::Io { .. } => ErrorCode::StorageError,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, error: &std::io::Error) -> Self {
        Self::Io { path: path.into(), message: error.to_string() }
    }
}

impl From<WorkspaceError> for Error {
    fn from(error: WorkspaceError) -> Self {
        let mut core = Error::new(error.code(), error.to_string()).with_detail("workspace_error", error.kind());
        match &error {
            WorkspaceError::PathNotFound { path }
            | WorkspaceError::NotADirectory { path }
            | WorkspaceError::NotAGitRepository { path }
            | WorkspaceError::NoCommits { path }
            | WorkspaceError::Io { path, .. } => {
                core = core.with_detail("path", path.display().to_string());
            }
            WorkspaceError::ChangedSinceSnapshot { expected, actual } => {
                core = core.with_detail("expected_ref", expected.clone()).with_detail("actual_ref", actual.clone());
            }
            _ => {}
        }
        core
    }
}

/// Results of this crate's lower-level API.
pub type WorkspaceResult<T> = std::result::Result<T, WorkspaceError>;
