//! The hash backend (spec 8.4): a walk of the tree with excluded roots and ignore globs,
//! sha256 of every file, incremental rescans (only files whose size, times or inode changed are
//! read again), and rollback from a content copy taken with a restorable snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::error::{WorkspaceError, WorkspaceResult};
use crate::glob::Glob;
use crate::types::RollbackReport;

/// Read buffer size for hashing.
const CHUNK: usize = 256 * 1024;
/// A file whose modification or change time is this close to (or after) the previous scan's
/// start is hashed again even when its metadata is unchanged (git's "racy clean"): a same-size
/// write right after that scan could otherwise keep the same timestamps. File systems with
/// nanosecond timestamps still stamp with a coarse kernel clock (a few ms).
const RACY_WINDOW_FINE: Duration = Duration::from_millis(50);
/// The same for timestamps without sub-second part (FAT, some network file systems).
const RACY_WINDOW_COARSE: Duration = Duration::from_secs(2);

/// What the walk skips.
#[derive(Clone, Debug, Default)]
pub(crate) struct HashRules {
    /// Relative paths (one or more components) whose whole subtree is skipped.
    pub(crate) excluded: Vec<String>,
    pub(crate) globs: Vec<Glob>,
}

impl HashRules {
    fn excluded(&self, rel: &str) -> bool {
        self.excluded
            .iter()
            .any(|root| rel == root || (rel.starts_with(root.as_str()) && rel.as_bytes()[root.len()] == b'/'))
    }
    fn ignored(&self, rel: &str) -> bool {
        self.excluded(rel) || self.globs.iter().any(|g| g.matches(rel))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File { mode: u32 },
    Symlink { target: PathBuf },
}

/// What is known of one file.
#[derive(Clone, Debug)]
pub(crate) struct FileEntry {
    rel: PathBuf,
    kind: EntryKind,
    size: u64,
    stamp: Stamp,
    hash: [u8; 32],
}

/// The metadata that says "unchanged" (outside the racy window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime: (i64, i64),
    ctime: (i64, i64),
    inode: u64,
}

impl Stamp {
    #[cfg(unix)]
    fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self { mtime: (meta.mtime(), meta.mtime_nsec()), ctime: (meta.ctime(), meta.ctime_nsec()), inode: meta.ino() }
    }
    #[cfg(not(unix))]
    fn of(meta: &fs::Metadata) -> Self {
        let since = |t: io::Result<SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or((0, 0), |d| (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), i64::from(d.subsec_nanos())))
        };
        Self { mtime: since(meta.modified()), ctime: (0, 0), inode: 0 }
    }
    /// Whether this stamp can be trusted against a scan that started at `scan_started`.
    fn settled_before(&self, scan_started: SystemTime) -> bool {
        let window = if self.mtime.1 == 0 && self.ctime.1 == 0 { RACY_WINDOW_COARSE } else { RACY_WINDOW_FINE };
        self.latest() + window < scan_started
    }
    /// The later of the modification and change times.
    fn latest(&self) -> SystemTime {
        let (secs, nanos) = self.mtime.max(self.ctime);
        SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(secs).unwrap_or(0), u32::try_from(nanos).unwrap_or(0))
    }
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode()
}
#[cfg(not(unix))]
fn mode_of(_meta: &fs::Metadata) -> u32 {
    0o644
}

/// Copies of file contents kept by a restorable snapshot, one blob per distinct content.
#[derive(Debug)]
pub(crate) struct ContentStash {
    dir: tempfile::TempDir,
    blobs: Mutex<BTreeSet<String>>,
}

impl ContentStash {
    fn new() -> WorkspaceResult<Self> {
        let dir = tempfile::Builder::new()
            .prefix("asm-workspace-stash-")
            .tempdir()
            .map_err(|e| WorkspaceError::io(std::env::temp_dir(), &e))?;
        Ok(Self { dir, blobs: Mutex::new(BTreeSet::new()) })
    }
    fn blob(&self, hash: &str) -> PathBuf {
        self.dir.path().join(hash)
    }
}

/// A hash snapshot's inside.
#[derive(Debug)]
pub(crate) struct HashState {
    files: BTreeMap<String, FileEntry>,
    /// When the walk started (for the racy-clean rule of the next incremental scan).
    scan_started: SystemTime,
    /// How many files this scan read (the others kept the previous snapshot's hash).
    pub(crate) files_hashed: usize,
    pub(crate) stash: Option<ContentStash>,
}

impl HashState {
    pub(crate) fn file_hashes(&self) -> BTreeMap<String, String> {
        self.files.iter().map(|(path, entry)| (path.clone(), hex(&entry.hash))).collect()
    }
    pub(crate) fn file_count(&self) -> usize {
        self.files.len()
    }
    pub(crate) fn total_bytes(&self) -> u64 {
        self.files.values().map(|e| e.size).sum()
    }

    /// The snapshot ref: sha256 of the sorted `path:hash` lines joined by `\n`.
    pub(crate) fn reference(&self) -> String {
        let mut hasher = Sha256::new();
        for (i, (path, entry)) in self.files.iter().enumerate() {
            if i > 0 {
                hasher.update(b"\n");
            }
            hasher.update(path.as_bytes());
            hasher.update(b":");
            hasher.update(hex(&entry.hash).as_bytes());
        }
        hex(&hasher.finalize())
    }

    /// Drops the content copies not needed to restore `paths` (a rollback from the end of the
    /// diff those paths came from only writes them).
    pub(crate) fn retain_copies_for(&self, paths: &[String]) {
        let Some(stash) = &self.stash else { return };
        let needed: BTreeSet<String> = paths.iter().filter_map(|p| self.files.get(p)).map(|e| hex(&e.hash)).collect();
        let mut blobs = stash.blobs.lock();
        blobs.retain(|blob| {
            let keep = needed.contains(blob);
            if !keep {
                let _ = fs::remove_file(stash.blob(blob));
            }
            keep
        });
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

fn rel_string(rel: &Path) -> String {
    let text = rel.to_string_lossy();
    if std::path::MAIN_SEPARATOR == '/' { text.into_owned() } else { text.replace(std::path::MAIN_SEPARATOR, "/") }
}

/// Fewest files for which hashing is spread over threads.
const PARALLEL_FROM: usize = 1_024;
/// Most hashing threads.
const MAX_THREADS: usize = 4;

/// A file found by the walk.
struct Candidate {
    rel: PathBuf,
    rel_text: String,
    symlink: bool,
}

/// Walks `root`. With `previous`, files whose metadata did not change (outside the racy window)
/// keep their hash unread; with `stash`, every file's content is copied (a restorable snapshot).
pub(crate) fn scan(
    root: &Path,
    rules: &HashRules,
    previous: Option<&HashState>,
    stash: bool,
) -> WorkspaceResult<HashState> {
    let scan_started = SystemTime::now();
    let stash = if stash { Some(ContentStash::new()?) } else { None };
    let candidates = walk(root, rules)?;
    let threads = if candidates.len() >= PARALLEL_FROM {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(MAX_THREADS)
    } else {
        1
    };
    let chunk = candidates.len().div_ceil(threads).max(1);
    let work = |part: &[Candidate]| -> WorkspaceResult<Vec<(FileEntry, bool)>> {
        let mut buffer = vec![0_u8; CHUNK];
        let mut out = Vec::with_capacity(part.len());
        for candidate in part {
            if let Some(found) = examine(root, candidate, previous, stash.as_ref(), &mut buffer)? {
                out.push(found);
            }
        }
        Ok(out)
    };
    let parts: Vec<WorkspaceResult<Vec<(FileEntry, bool)>>> = if threads == 1 {
        vec![work(&candidates)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = candidates.chunks(chunk).map(|part| scope.spawn(move || work(part))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(WorkspaceError::Io { path: root.to_owned(), message: "hashing thread panicked".into() })
                    })
                })
                .collect()
        })
    };
    let mut files = BTreeMap::new();
    let mut files_hashed = 0;
    for part in parts {
        for (entry, hashed) in part? {
            files_hashed += usize::from(hashed);
            files.insert(rel_string(&entry.rel), entry);
        }
    }
    Ok(HashState { files, scan_started, files_hashed, stash })
}

/// Every regular file and symlink under `root` that the rules keep.
fn walk(root: &Path, rules: &HashRules) -> WorkspaceResult<Vec<Candidate>> {
    let mut candidates = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let absolute = root.join(&dir);
        let entries = match fs::read_dir(&absolute) {
            Ok(entries) => entries,
            // Removed while walking (the run is still writing, or a concurrent tool).
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.as_os_str().is_empty() => continue,
            Err(e) => return Err(WorkspaceError::io(absolute, &e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| WorkspaceError::io(&absolute, &e))?;
            let rel = dir.join(entry.file_name());
            let rel_text = rel_string(&rel);
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                if !rules.excluded(&rel_text) {
                    dirs.push(rel);
                }
            } else if (kind.is_file() || kind.is_symlink()) && !rules.ignored(&rel_text) {
                candidates.push(Candidate { rel, rel_text, symlink: kind.is_symlink() });
            }
            // sockets, fifos, devices: skipped
        }
    }
    Ok(candidates)
}

/// Stats (and, unless its metadata is unchanged since `previous`, hashes) one file; `None` when
/// it disappeared meanwhile. The flag says whether the content was read.
fn examine(
    root: &Path,
    candidate: &Candidate,
    previous: Option<&HashState>,
    stash: Option<&ContentStash>,
    buffer: &mut [u8],
) -> WorkspaceResult<Option<(FileEntry, bool)>> {
    let path = root.join(&candidate.rel);
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    if candidate.symlink {
        let (meta, target) = match fs::symlink_metadata(&path).and_then(|m| Ok((m, fs::read_link(&path)?))) {
            Ok(found) => found,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(WorkspaceError::io(path, &e)),
        };
        let hash: [u8; 32] = Sha256::digest(target.as_os_str().as_encoded_bytes()).into();
        let entry = FileEntry {
            rel: candidate.rel.clone(),
            kind: EntryKind::Symlink { target },
            size: meta.len(),
            stamp: Stamp::of(&meta),
            hash,
        };
        return Ok(Some((entry, false)));
    }
    // lstat first: a file whose metadata is unchanged is not even opened.
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(WorkspaceError::io(path, &e)),
    };
    if !meta.is_file() {
        return Ok(None); // replaced by a directory meanwhile
    }
    let stamp = Stamp::of(&meta);
    let kind = EntryKind::File { mode: mode_of(&meta) };
    let reusable = match previous {
        Some(previous) if stash.is_none() => previous.files.get(&candidate.rel_text).filter(|old| {
            old.kind == kind
                && old.size == meta.len()
                && old.stamp == stamp
                && stamp.settled_before(previous.scan_started)
        }),
        _ => None,
    };
    let (hash, hashed) = match reusable {
        Some(old) => (old.hash, false),
        None => match fs::File::open(&path).and_then(|mut file| hash_reader(&mut file, buffer, stash)) {
            Ok(hash) => (hash, true),
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(WorkspaceError::io(path, &e)),
        },
    };
    Ok(Some((FileEntry { rel: candidate.rel.clone(), kind, size: meta.len(), stamp, hash }, hashed)))
}

/// sha256 of a file's content, streaming; with a stash, the content is copied into it as well.
fn hash_reader(file: &mut fs::File, buffer: &mut [u8], stash: Option<&ContentStash>) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut copy = match stash {
        Some(stash) => Some(tempfile::NamedTempFile::new_in(stash.dir.path())?),
        None => None,
    };
    loop {
        let read = match file.read(buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..read]);
        if let Some(copy) = copy.as_mut() {
            copy.write_all(&buffer[..read])?;
        }
    }
    let hash: [u8; 32] = hasher.finalize().into();
    if let (Some(copy), Some(stash)) = (copy, stash) {
        let name = hex(&hash);
        let mut blobs = stash.blobs.lock();
        if !blobs.contains(&name) {
            copy.persist(stash.blob(&name)).map_err(|e| e.error)?;
            blobs.insert(name);
        }
    }
    Ok(hash)
}

/// Paths whose hash differs between the two states (added, removed, modified), sorted.
pub(crate) fn changed_paths(from: &HashState, to: &HashState) -> Vec<String> {
    let mut changed: Vec<String> = from
        .files
        .iter()
        .filter(|(path, entry)| to.files.get(*path).is_none_or(|other| other.hash != entry.hash))
        .map(|(path, _)| path.clone())
        .collect();
    changed.extend(to.files.keys().filter(|path| !from.files.contains_key(*path)).cloned());
    changed.sort();
    changed.dedup();
    changed
}

/// Puts the work tree back to `to` given that it is at `current` now: files the run created are
/// removed, files it modified or deleted are written back from the content copy. Every copy is
/// checked to exist before the first write.
pub(crate) fn rollback(root: &Path, to: &HashState, current: &HashState) -> WorkspaceResult<RollbackReport> {
    let stash = to.stash.as_ref().ok_or_else(|| WorkspaceError::NotRestorable { reference: to.reference() })?;
    let changed = changed_paths(to, current);
    let (restore, remove): (Vec<&String>, Vec<&String>) = changed.iter().partition(|p| to.files.contains_key(*p));
    for path in &restore {
        if let Some(entry) = to.files.get(*path)
            && matches!(entry.kind, EntryKind::File { .. })
            && !stash.blob(&hex(&entry.hash)).is_file()
        {
            return Err(WorkspaceError::NotRestorable { reference: format!("{} (no copy of {path})", to.reference()) });
        }
    }
    let mut report = RollbackReport { to_ref: to.reference(), ..RollbackReport::default() };
    for path in remove {
        let Some(entry) = current.files.get(path) else { continue };
        let absolute = root.join(&entry.rel);
        match fs::remove_file(&absolute) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(WorkspaceError::io(absolute, &e)),
        }
        prune_empty_dirs(root, absolute.parent());
        report.removed.push(path.clone());
    }
    for path in restore {
        let Some(entry) = to.files.get(path) else { continue };
        let absolute = root.join(&entry.rel);
        restore_entry(&absolute, entry, stash).map_err(|e| WorkspaceError::io(&absolute, &e))?;
        report.restored.push(path.clone());
    }
    Ok(report)
}

fn restore_entry(absolute: &Path, entry: &FileEntry, stash: &ContentStash) -> io::Result<()> {
    let parent = absolute.parent().ok_or_else(|| io::Error::other("no parent directory"))?;
    // Something else may stand where the file was (a directory the run created).
    if let Ok(meta) = fs::symlink_metadata(absolute)
        && meta.is_dir()
    {
        fs::remove_dir_all(absolute)?;
    }
    fs::create_dir_all(parent)?;
    match &entry.kind {
        EntryKind::File { mode } => {
            let temp = tempfile::NamedTempFile::new_in(parent)?;
            fs::copy(stash.blob(&hex(&entry.hash)), temp.path())?;
            set_mode(temp.path(), *mode)?;
            temp.persist(absolute).map_err(|e| e.error)?;
        }
        EntryKind::Symlink { target } => {
            match fs::remove_file(absolute) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            make_symlink(target, absolute)?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}
#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}
#[cfg(not(unix))]
fn make_symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "symlinks are restored on unix only"))
}

/// Removes the empty directories from `from` up to (not including) `root`.
pub(crate) fn prune_empty_dirs(root: &Path, from: Option<&Path>) {
    let mut dir = from;
    while let Some(current) = dir {
        if current == root || !current.starts_with(root) || fs::remove_dir(current).is_err() {
            break;
        }
        dir = current.parent();
    }
}
