//! sled as an [`asm_store_kv::KvEngine`]: trees, the staging overlay of a write transaction,
//! the format record, and sled's errors as [`KvError`]s.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use asm_core::Result;
use asm_store_kv::{Cause, Finish, FormatRecord, KeyRange, KvEngine, KvError, KvRead, KvWrite, Table};
use sled::transaction::{TransactionError, TransactionResult};
use sled::{Batch, IVec, Transactional, Tree};

use crate::SledOptions;

/// The key of the format version record (a `u32`, big-endian) in sled's default tree.
pub(crate) const FORMAT_VERSION_KEY: &[u8] = b"asm_store_sled.format_version";

/// The name of sled's default tree, which holds nothing but the format record.
const DEFAULT_TREE: &[u8] = b"__sled__default";

/// The sled tree of a [`Table`].
fn tree_name(table: Table) -> String {
    format!("asm_kv_{}", table.name())
}

/// Maps a sled error met while doing `what`.
fn sled_err(what: &'static str, writing: bool, error: sled::Error) -> KvError {
    match error {
        sled::Error::Corruption { ref at, .. } => KvError::Corrupted {
            what: format!(
                "sled reports corrupted data{}",
                at.as_ref().map(|p| format!(" at {p:?}")).unwrap_or_default()
            ),
            cause: Some(Cause::new(error)),
        },
        sled::Error::Io(io) => {
            let kind = io.kind();
            let error = if writing { KvError::write(what, io) } else { KvError::read(what, io) };
            error.with_io_kind(kind)
        }
        other => KvError::Engine { message: format!("sled {what}"), cause: Some(Cause::new(other)) },
    }
}

pub(crate) fn read_err(what: &'static str) -> impl FnOnce(sled::Error) -> KvError {
    move |e| sled_err(what, false, e)
}

pub(crate) fn write_err(what: &'static str) -> impl FnOnce(sled::Error) -> KvError {
    move |e| sled_err(what, true, e)
}

/// Maps an error of opening the database at `path`, recognising the file lock.
pub(crate) fn open_err(path: &Path, error: sled::Error) -> KvError {
    match error {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            KvError::Locked { path: path.to_path_buf(), cause: Some(Cause::new(io)) }
        }
        sled::Error::Io(io) => KvError::Unavailable { path: path.to_path_buf(), cause: Cause::new(io) },
        other => sled_err("open", false, other),
    }
}

/// One sled database as a [`KvEngine`].
pub(crate) struct SledEngine {
    pub(crate) db: sled::Db,
    trees: [Tree; Table::COUNT],
    pub(crate) path: PathBuf,
    pub(crate) options: SledOptions,
}

impl SledEngine {
    /// Opens every tree of the layout.
    pub(crate) fn new(db: sled::Db, path: PathBuf, options: SledOptions) -> std::result::Result<Self, KvError> {
        let mut trees = Vec::with_capacity(Table::COUNT);
        for table in Table::ALL {
            trees.push(db.open_tree(tree_name(table)).map_err(read_err("open tree"))?);
        }
        let trees = <[Tree; Table::COUNT]>::try_from(trees)
            .map_err(|_| KvError::Engine { message: "wrong number of trees".into(), cause: None })?;
        Ok(Self { db, trees, path, options })
    }

    fn tree(&self, table: Table) -> &Tree {
        &self.trees[table.index()]
    }

    /// Whether the database holds nothing at all (no format record, every tree empty).
    pub(crate) fn is_blank(&self) -> std::result::Result<bool, KvError> {
        if !self.db.is_empty() {
            return Ok(false);
        }
        for name in self.db.tree_names() {
            if name.as_ref() != DEFAULT_TREE && !self.db.open_tree(&name).map_err(read_err("open tree"))?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Visits `range` of `tree`.
fn scan_tree<E: From<KvError>>(
    tree: &Tree,
    range: KeyRange<'_>,
    f: &mut impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
) -> std::result::Result<(), E> {
    for item in tree.range::<&[u8], _>(range) {
        let (key, value) = item.map_err(read_err("range"))?;
        if !f(&key, &value)? {
            break;
        }
    }
    Ok(())
}

/// Reads straight from the trees. sled has no multi-tree snapshots: each read sees the trees as
/// they are, and every write of the store is one atomic multi-tree transaction.
pub(crate) struct Snapshot<'s> {
    engine: &'s SledEngine,
}

impl KvRead for Snapshot<'_> {
    fn get<R>(&self, table: Table, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> std::result::Result<Option<R>, KvError> {
        Ok(self.engine.tree(table).get(key).map_err(read_err("get"))?.map(|value| f(&value)))
    }

    fn scan<E: From<KvError>>(
        &self,
        table: Table,
        range: KeyRange<'_>,
        mut f: impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        scan_tree(self.engine.tree(table), range, &mut f)
    }
}

/// Pending writes of one tree: `None` removes the key.
type Staged = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A write transaction: a staging overlay over the trees, written in one sled transaction.
pub(crate) struct Txn<'t> {
    engine: &'t SledEngine,
    staged: [Staged; Table::COUNT],
}

fn in_range(key: &[u8], range: &KeyRange<'_>) -> bool {
    let above = match range.0 {
        Bound::Included(low) => key >= low,
        Bound::Excluded(low) => key > low,
        Bound::Unbounded => true,
    };
    let below = match range.1 {
        Bound::Included(high) => key <= high,
        Bound::Excluded(high) => key < high,
        Bound::Unbounded => true,
    };
    above && below
}

impl KvRead for Txn<'_> {
    fn get<R>(&self, table: Table, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> std::result::Result<Option<R>, KvError> {
        match self.staged[table.index()].get(key) {
            Some(Some(value)) => Ok(Some(f(value))),
            Some(None) => Ok(None),
            None => Ok(self.engine.tree(table).get(key).map_err(read_err("get"))?.map(|value| f(&value))),
        }
    }

    fn scan<E: From<KvError>>(
        &self,
        table: Table,
        range: KeyRange<'_>,
        mut f: impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        let staged = &self.staged[table.index()];
        if staged.is_empty() {
            return scan_tree(self.engine.tree(table), range, &mut f);
        }
        // Merge the committed keys with the staged ones, the staged winning.
        let mut overlay = staged.range::<[u8], _>(range).peekable();
        for item in self.engine.tree(table).range::<&[u8], _>(range) {
            let (key, value) = item.map_err(read_err("range"))?;
            while let Some((staged_key, staged_value)) = overlay.next_if(|(k, _)| k.as_slice() < key.as_ref()) {
                if let Some(staged_value) = staged_value
                    && !f(staged_key, staged_value)?
                {
                    return Ok(());
                }
            }
            let keep_going = match overlay.next_if(|(k, _)| k.as_slice() == key.as_ref()) {
                Some((_, Some(staged_value))) => f(&key, staged_value)?,
                Some((_, None)) => true,
                None => f(&key, &value)?,
            };
            if !keep_going {
                return Ok(());
            }
        }
        for (staged_key, staged_value) in overlay {
            debug_assert!(in_range(staged_key, &range));
            if let Some(staged_value) = staged_value
                && !f(staged_key, staged_value)?
            {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl KvWrite for Txn<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> std::result::Result<(), KvError> {
        self.staged[table.index()].insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> std::result::Result<(), KvError> {
        self.staged[table.index()].insert(key.to_vec(), None);
        Ok(())
    }
}

impl Txn<'_> {
    /// Writes the overlay in one transaction over the trees it touches.
    fn commit(self) -> std::result::Result<(), KvError> {
        let mut trees: Vec<&Tree> = Vec::new();
        let mut batches: Vec<Batch> = Vec::new();
        for (tree, writes) in self.engine.trees.iter().zip(self.staged) {
            if writes.is_empty() {
                continue;
            }
            let mut batch = Batch::default();
            for (key, value) in writes {
                match value {
                    Some(value) => batch.insert(key, value),
                    None => batch.remove(key),
                }
            }
            trees.push(tree);
            batches.push(batch);
        }
        if trees.is_empty() {
            return Ok(());
        }
        let result: TransactionResult<(), ()> = trees[..].transaction(|trees| {
            for (tree, batch) in trees.iter().zip(&batches) {
                tree.apply_batch(batch)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(sled_err("commit", true, e)),
            Err(TransactionError::Abort(())) => {
                Err(KvError::Engine { message: "the sled transaction aborted without a reason".into(), cause: None })
            }
        }
    }
}

impl KvEngine for SledEngine {
    type Snapshot<'s> = Snapshot<'s>;
    type Txn<'t> = Txn<'t>;

    const NAME: &'static str = "sled";

    fn read<R>(&self, f: impl FnOnce(&Self::Snapshot<'_>) -> Result<R>) -> Result<R> {
        f(&Snapshot { engine: self })
    }

    fn write<R>(&self, durable: bool, f: impl FnOnce(&mut Self::Txn<'_>) -> Result<(R, Finish)>) -> Result<R> {
        let mut txn = Txn { engine: self, staged: Default::default() };
        let (result, finish) = f(&mut txn)?;
        if finish == Finish::Commit {
            txn.commit()?;
            if durable {
                self.db.flush().map_err(write_err("flush"))?;
            }
        }
        Ok(result)
    }

    fn sync(&self) -> std::result::Result<(), KvError> {
        self.db.flush().map(drop).map_err(write_err("flush"))
    }

    fn read_format(&self) -> std::result::Result<FormatRecord, KvError> {
        match self.db.get(FORMAT_VERSION_KEY).map_err(read_err("read the format record"))? {
            Some(value) => Ok(match <[u8; 4]>::try_from(value.as_ref()) {
                Ok(bytes) => FormatRecord::Version(u64::from(u32::from_be_bytes(bytes))),
                Err(_) => FormatRecord::Unreadable(format!("{} bytes instead of 4", value.len())),
            }),
            None => Ok(FormatRecord::Absent { empty: self.is_blank()? }),
        }
    }

    fn init(&self, version: u64) -> std::result::Result<(), KvError> {
        let version = u32::try_from(version)
            .map_err(|_| KvError::Engine { message: format!("format version {version} does not fit"), cause: None })?;
        self.db
            .insert(FORMAT_VERSION_KEY, IVec::from(&version.to_be_bytes()[..]))
            .map_err(write_err("write the format record"))?;
        self.db.flush().map(drop).map_err(write_err("flush"))
    }
}
