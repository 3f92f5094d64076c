//! Opening the store named by `--store`, and the `serve.json` of a running `asm serve`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use asm_core::ErrorCode;
use asm_ports::DynSessionStore;

use crate::error::{CliError, CliResult};

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreUrl {
    Redb(PathBuf),
    Sled(PathBuf),
    Memory,
    Postgres(String),
}

impl StoreUrl {
    pub(crate) fn parse(url: &str) -> CliResult<Self> {
        let bad = |why: &str| {
            CliError::validation(format!("invalid store URL {url:?}: {why}"))
                .hint("use redb:PATH, sled:PATH, memory: or postgres://USER@HOST/DB")
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let (scheme, rest) = url.split_once(':').ok_or_else(|| bad("no scheme"))?;
        match scheme {
            "redb" | "sled" if rest.is_empty() => Err(bad("the path is empty")),
            "redb" => Ok(Self::Redb(PathBuf::from(rest))),
            "sled" => Ok(Self::Sled(PathBuf::from(rest))),
            "memory" if rest.is_empty() => Ok(Self::Memory),
            "memory" => Err(bad("memory: takes no path")),
            _ => Err(bad("unknown scheme")),
        }
    }

    /// The directory that holds `serve.json` for this store.
    pub(crate) fn serve_dir(&self, home: &Path) -> PathBuf {
        match self {
            Self::Redb(path) | Self::Sled(path) => path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            Self::Memory | Self::Postgres(_) => home.to_path_buf(),
        }
    }

    fn file(&self) -> Option<&Path> {
        match self {
            Self::Redb(path) | Self::Sled(path) => Some(path),
            Self::Memory | Self::Postgres(_) => None,
        }
    }
}

/// What a running `asm serve` writes next to its store.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ServeInfo {
    pub(crate) pid: u32,
    pub(crate) listen: String,
    pub(crate) store: String,
}

pub(crate) const SERVE_FILE: &str = "serve.json";

/// Opens the store.
pub(crate) async fn open(url: &StoreUrl, home: &Path) -> CliResult<DynSessionStore> {
    let opened: asm_core::Result<DynSessionStore> = match url {
        StoreUrl::Redb(path) => {
            create_parent(path)?;
            asm_store_redb::RedbSessionStore::open(path).map(|s| Arc::new(s) as DynSessionStore)
        }
        StoreUrl::Sled(path) => {
            create_parent(path)?;
            asm_store_sled::SledSessionStore::open(path).map(|s| Arc::new(s) as DynSessionStore)
        }
        StoreUrl::Memory => Ok(Arc::new(asm_store_memory::InMemorySessionStore::new())),
        StoreUrl::Postgres(url) => open_postgres(url).await,
    };
    opened.map_err(|error| {
        let locked = error.code() == ErrorCode::StorageConnectionFailed
            && error.details().get("reason").and_then(|r| r.as_str()) == Some("locked");
        match (locked, url.file()) {
            (true, Some(file)) => locked_error(file, &url.serve_dir(home)),
            _ => CliError::from(error),
        }
    })
}

fn create_parent(path: &Path) -> CliResult<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::new("storage_connection_failed", format!("cannot create {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// `store_locked`, naming the `asm serve` that holds the store when its `serve.json` says so.
fn locked_error(file: &Path, serve_dir: &Path) -> CliError {
    let info = std::fs::read_to_string(serve_dir.join(SERVE_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<ServeInfo>(&text).ok())
        .filter(|info| same_file(Path::new(&info.store), file));
    match info {
        Some(info) => CliError::new(
            "store_locked",
            format!("the store {} is held by asm serve (pid {} at http://{})", file.display(), info.pid, info.listen),
        )
        .hint(format!("use its HTTP API at http://{}/v1, or stop it (kill {})", info.listen, info.pid)),
        None => CliError::new("store_locked", format!("the store {} is in use by another process", file.display()))
            .hint("wait for the other asm command to finish, or pass another --store"),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> asm_core::Result<DynSessionStore> {
    asm_store_postgres::PostgresSessionStore::connect(url).await.map(|s| Arc::new(s) as DynSessionStore)
}

#[cfg(not(feature = "postgres"))]
#[allow(clippy::unused_async)]
async fn open_postgres(_url: &str) -> asm_core::Result<DynSessionStore> {
    Err(asm_core::Error::new(
        ErrorCode::DependencyNotAvailable,
        "this asm was built without PostgreSQL support (cargo install --path crates/asm-cli --features postgres)",
    ))
}

/// Removes `serve.json` when dropped.
#[derive(Debug)]
pub(crate) struct ServeFile {
    path: PathBuf,
}

impl ServeFile {
    pub(crate) fn write(dir: &Path, info: &ServeInfo) -> CliResult<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(SERVE_FILE);
        let text = serde_json::to_string_pretty(info).map_err(|e| CliError::new("internal_error", e.to_string()))?;
        std::fs::write(&path, text)?;
        Ok(Self { path })
    }
}

impl Drop for ServeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(StoreUrl::parse("redb:/x/y.redb").ok(), Some(StoreUrl::Redb("/x/y.redb".into())));
        assert_eq!(StoreUrl::parse("sled:rel").ok(), Some(StoreUrl::Sled("rel".into())));
        assert_eq!(StoreUrl::parse("memory:").ok(), Some(StoreUrl::Memory));
        assert!(matches!(StoreUrl::parse("postgres://u@h/db"), Ok(StoreUrl::Postgres(_))));
        for bad in ["", "redb:", "nope:x", "memory:x", "/just/a/path"] {
            let err = StoreUrl::parse(bad).err().map(|e| e.code);
            assert_eq!(err.as_deref(), Some("validation_error"), "{bad}");
        }
    }
}
