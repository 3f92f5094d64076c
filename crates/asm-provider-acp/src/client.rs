//! The client side of ACP: the agent's file requests, confined to the run's cwd.

use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use crate::wire::{INTERNAL_ERROR, INVALID_PARAMS, RpcError};

/// Resolves the agent's `path` inside `root`: it must be absolute (ACP paths are), and once
/// symlinks are resolved it must lie in `root`. For a write the file itself may not exist yet,
/// its parent directory must.
pub(crate) fn confine(root: &Path, path: &str, for_write: bool) -> Result<PathBuf, RpcError> {
    let outside = || RpcError::new(INVALID_PARAMS, format!("path is outside the session's working directory: {path}"));
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(RpcError::new(INVALID_PARAMS, format!("path must be absolute: {path}")));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(outside());
    }
    let root = root.canonicalize().map_err(|e| RpcError::new(INTERNAL_ERROR, format!("working directory: {e}")))?;
    let resolved = match p.canonicalize() {
        Ok(resolved) => resolved,
        Err(_) if for_write => {
            let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else { return Err(outside()) };
            let parent = parent.canonicalize().map_err(|e| RpcError::new(INVALID_PARAMS, format!("{path}: {e}")))?;
            parent.join(name)
        }
        Err(e) => {
            // Not found inside the root is a plain error; outside it is refused either way.
            return Err(if p.starts_with(&root) {
                RpcError::new(INVALID_PARAMS, format!("{path}: {e}"))
            } else {
                outside()
            });
        }
    };
    if resolved.starts_with(&root) { Ok(resolved) } else { Err(outside()) }
}

fn path_param(params: &Value) -> Result<&str, RpcError> {
    params.get("path").and_then(Value::as_str).ok_or_else(|| RpcError::new(INVALID_PARAMS, "missing path"))
}

/// `fs/read_text_file {sessionId, path, line?, limit?}` → `{content}` (`line` is 1-based).
pub(crate) fn read_text_file(root: &Path, params: &Value) -> Result<Value, RpcError> {
    let path = confine(root, path_param(params)?, false)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| RpcError::new(INTERNAL_ERROR, format!("reading {}: {e}", path.display())))?;
    let line = params.get("line").and_then(Value::as_u64).map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let limit = params.get("limit").and_then(Value::as_u64).map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let content = if line.is_none() && limit.is_none() {
        text
    } else {
        let skip = line.unwrap_or(1).saturating_sub(1);
        text.split_inclusive('\n').skip(skip).take(limit.unwrap_or(usize::MAX)).collect()
    };
    Ok(json!({ "content": content }))
}

/// `fs/write_text_file {sessionId, path, content}` → `null`.
pub(crate) fn write_text_file(root: &Path, params: &Value) -> Result<Value, RpcError> {
    let path = confine(root, path_param(params)?, true)?;
    let content = params
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::new(INVALID_PARAMS, "missing content"))?;
    std::fs::write(&path, content)
        .map_err(|e| RpcError::new(INTERNAL_ERROR, format!("writing {}: {e}", path.display())))?;
    Ok(Value::Null)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_inside_the_root_only() {
        let root = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let file = root.path().join("a.txt");
        std::fs::write(&file, "one\ntwo\nthree\n").unwrap();
        let p = file.display().to_string();
        assert_eq!(read_text_file(root.path(), &json!({"path": p})).unwrap()["content"], "one\ntwo\nthree\n");
        assert_eq!(
            read_text_file(root.path(), &json!({"path": p, "line": 2, "limit": 1})).unwrap()["content"],
            "two\n"
        );
        let secret = other.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        let e = read_text_file(root.path(), &json!({"path": secret.display().to_string()})).unwrap_err();
        assert_eq!(e.code, INVALID_PARAMS);
        let dotdot = format!("{}/../{}", root.path().display(), secret.display());
        assert!(read_text_file(root.path(), &json!({"path": dotdot})).is_err());
        assert!(read_text_file(root.path(), &json!({"path": "a.txt"})).is_err(), "relative paths are refused");
        // A symlink inside the root pointing outside is refused.
        std::os::unix::fs::symlink(&secret, root.path().join("link")).unwrap();
        let link = root.path().join("link").display().to_string();
        assert!(read_text_file(root.path(), &json!({"path": link})).is_err());

        let new = root.path().join("new.txt").display().to_string();
        write_text_file(root.path(), &json!({"path": new, "content": "hi"})).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("new.txt")).unwrap(), "hi");
        let outside = other.path().join("x").display().to_string();
        assert_eq!(
            write_text_file(root.path(), &json!({"path": outside, "content": "no"})).unwrap_err().code,
            INVALID_PARAMS
        );
        assert!(!other.path().join("x").exists());
    }
}
