//! redb as an [`asm_store_kv::KvEngine`]: tables, snapshots, write transactions, the format
//! record, and redb's errors as [`KvError`]s.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use asm_core::Result;
use asm_store_kv::{Cause, Finish, FormatRecord, KeyRange, KvEngine, KvError, KvRead, KvWrite, Table};
use redb::{
    Database, MultimapTableHandle, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableHandle, WriteTransaction,
};

use crate::options::RedbOptions;

/// `name -> number`: the format version record (where format version 1 kept it too).
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("asm_meta");
/// The key of the format version in [`META`].
const FORMAT_VERSION_KEY: &str = "format_version";

type Bytes = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The redb table of each [`Table`], in [`Table::ALL`] order.
const TABLES: [Bytes; Table::COUNT] = [
    TableDefinition::new("asm_kv_sessions"),
    TableDefinition::new("asm_kv_session_order"),
    TableDefinition::new("asm_kv_events"),
    TableDefinition::new("asm_kv_event_ids"),
    TableDefinition::new("asm_kv_run_starts"),
    TableDefinition::new("asm_kv_runs"),
    TableDefinition::new("asm_kv_session_runs"),
    TableDefinition::new("asm_kv_log"),
];

fn definition(table: Table) -> Bytes {
    TABLES[table.index()]
}

/// A redb failure while reading.
fn read_err(what: &'static str, err: impl Into<redb::Error>) -> KvError {
    classify(what, err.into(), false)
}

/// A redb failure while writing.
fn write_err(what: &'static str, err: impl Into<redb::Error>) -> KvError {
    classify(what, err.into(), true)
}

fn classify(what: &'static str, err: redb::Error, writing: bool) -> KvError {
    match err {
        redb::Error::Corrupted(detail) => KvError::Corrupted { what: format!("redb {what}: {detail}"), cause: None },
        redb::Error::Io(io) => {
            let kind = io.kind();
            let error = if writing { KvError::write(what, io) } else { KvError::read(what, io) };
            error.with_io_kind(kind)
        }
        other if writing => KvError::write(what, other),
        other => KvError::read(what, other),
    }
}

/// A redb error met while opening `path`.
pub(crate) fn open_err(path: &Path, err: redb::DatabaseError) -> KvError {
    let shown = path.display();
    match err {
        redb::DatabaseError::DatabaseAlreadyOpen => KvError::Locked {
            path: path.to_path_buf(),
            cause: Some(Cause::new(redb::DatabaseError::DatabaseAlreadyOpen)),
        },
        redb::DatabaseError::UpgradeRequired(version) => KvError::EngineUpgrade {
            path: path.to_path_buf(),
            message: format!("redb file format {version} must be upgraded by another redb version first"),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => match io.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => KvError::Corrupted {
                what: format!("cannot open {shown}: not a valid redb file (corrupted or truncated)"),
                cause: Some(Cause::new(io)),
            },
            _ => KvError::Unavailable { path: path.to_path_buf(), cause: Cause::new(io) },
        },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            KvError::Corrupted { what: format!("cannot open {shown}: {detail}"), cause: None }
        }
        other => KvError::Engine { message: format!("cannot open {shown}"), cause: Some(Cause::new(other)) },
    }
}

/// One redb file as a [`KvEngine`].
pub(crate) struct RedbEngine {
    pub(crate) db: Database,
    pub(crate) path: PathBuf,
    pub(crate) options: RedbOptions,
}

/// A redb read transaction, opening each table once, when first used.
pub(crate) struct Snapshot {
    txn: ReadTransaction,
    tables: [OnceCell<ReadOnlyTable<&'static [u8], &'static [u8]>>; Table::COUNT],
}

impl Snapshot {
    fn table(&self, table: Table) -> std::result::Result<&ReadOnlyTable<&'static [u8], &'static [u8]>, KvError> {
        let cell = &self.tables[table.index()];
        if let Some(opened) = cell.get() {
            return Ok(opened);
        }
        let opened = self.txn.open_table(definition(table)).map_err(|e| read_err("open table", e))?;
        Ok(cell.get_or_init(|| opened))
    }
}

/// Visits `range` of a redb table.
fn scan_table<T, E>(
    table: &T,
    range: KeyRange<'_>,
    mut f: impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
) -> std::result::Result<(), E>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
    E: From<KvError>,
{
    for entry in table.range::<&[u8]>(range).map_err(|e| read_err("range", e))? {
        let (key, value) = entry.map_err(|e| read_err("range", e))?;
        if !f(key.value(), value.value())? {
            break;
        }
    }
    Ok(())
}

impl KvRead for Snapshot {
    fn get<R>(&self, table: Table, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> std::result::Result<Option<R>, KvError> {
        let guard = self.table(table)?.get(key).map_err(|e| read_err("get", e))?;
        Ok(guard.map(|guard| f(guard.value())))
    }

    fn scan<E: From<KvError>>(
        &self,
        table: Table,
        range: KeyRange<'_>,
        f: impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        scan_table(self.table(table)?, range, f)
    }
}

/// A redb write transaction's tables, each opened once, when first used.
pub(crate) struct Txn<'t> {
    txn: &'t WriteTransaction,
    tables: [OnceCell<redb::Table<'t, &'static [u8], &'static [u8]>>; Table::COUNT],
}

impl<'t> Txn<'t> {
    fn table(&self, table: Table) -> std::result::Result<&redb::Table<'t, &'static [u8], &'static [u8]>, KvError> {
        let cell = &self.tables[table.index()];
        if let Some(opened) = cell.get() {
            return Ok(opened);
        }
        let opened = self.txn.open_table(definition(table)).map_err(|e| write_err("open table", e))?;
        Ok(cell.get_or_init(|| opened))
    }

    fn table_mut(
        &mut self,
        table: Table,
    ) -> std::result::Result<&mut redb::Table<'t, &'static [u8], &'static [u8]>, KvError> {
        self.table(table)?;
        self.tables[table.index()]
            .get_mut()
            .ok_or_else(|| KvError::Engine { message: "a redb table was not opened".into(), cause: None })
    }
}

impl KvRead for Txn<'_> {
    fn get<R>(&self, table: Table, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> std::result::Result<Option<R>, KvError> {
        let guard = self.table(table)?.get(key).map_err(|e| read_err("get", e))?;
        Ok(guard.map(|guard| f(guard.value())))
    }

    fn scan<E: From<KvError>>(
        &self,
        table: Table,
        range: KeyRange<'_>,
        f: impl FnMut(&[u8], &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        scan_table(self.table(table)?, range, f)
    }
}

impl KvWrite for Txn<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> std::result::Result<(), KvError> {
        self.table_mut(table)?.insert(key, value).map_err(|e| write_err("insert", e))?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> std::result::Result<(), KvError> {
        self.table_mut(table)?.remove(key).map_err(|e| write_err("remove", e))?;
        Ok(())
    }

    fn delete_range(&mut self, table: Table, range: KeyRange<'_>) -> std::result::Result<(), KvError> {
        self.table_mut(table)?.retain_in::<&[u8], _>(range, |_, _| false).map_err(|e| write_err("delete range", e))
    }
}

impl KvEngine for RedbEngine {
    type Snapshot<'s> = Snapshot;
    type Txn<'t> = Txn<'t>;

    const NAME: &'static str = "redb";

    fn read<R>(&self, f: impl FnOnce(&Self::Snapshot<'_>) -> Result<R>) -> Result<R> {
        let txn = self.db.begin_read().map_err(|e| read_err("begin_read", e))?;
        f(&Snapshot { txn, tables: Default::default() })
    }

    fn write<R>(&self, durable: bool, f: impl FnOnce(&mut Self::Txn<'_>) -> Result<(R, Finish)>) -> Result<R> {
        let mut txn = self.db.begin_write().map_err(|e| write_err("begin_write", e))?;
        if !durable {
            txn.set_durability(redb::Durability::None).map_err(|e| KvError::Engine {
                message: "redb set_durability failed".into(),
                cause: Some(Cause::new(e)),
            })?;
        }
        let (result, finish) = {
            let mut tables = Txn { txn: &txn, tables: Default::default() };
            f(&mut tables)?
        };
        match finish {
            Finish::Commit => txn.commit().map_err(|e| write_err("commit", e))?,
            _ => {
                if let Err(e) = txn.abort() {
                    tracing::debug!(error = %e, "abort of an unchanged write transaction failed");
                }
            }
        }
        Ok(result)
    }

    fn sync(&self) -> std::result::Result<(), KvError> {
        // An empty durable commit makes the earlier non-durable ones durable.
        let txn = self.db.begin_write().map_err(|e| write_err("begin_write", e))?;
        txn.commit().map_err(|e| write_err("commit", e))
    }

    fn read_format(&self) -> std::result::Result<FormatRecord, KvError> {
        let txn = self.db.begin_read().map_err(|e| read_err("begin_read", e))?;
        let mut names: Vec<String> =
            txn.list_tables().map_err(|e| read_err("list_tables", e))?.map(|t| t.name().to_owned()).collect();
        names.extend(
            txn.list_multimap_tables().map_err(|e| read_err("list_multimap_tables", e))?.map(|t| t.name().to_owned()),
        );
        if !names.iter().any(|n| n == META.name()) {
            return Ok(FormatRecord::Absent { empty: names.is_empty() });
        }
        let meta = txn.open_table(META).map_err(|e| read_err("open meta table", e))?;
        Ok(match meta.get(FORMAT_VERSION_KEY).map_err(|e| read_err("read format version", e))? {
            Some(version) => FormatRecord::Version(version.value()),
            None => FormatRecord::Unreadable("the meta table has no format version".into()),
        })
    }

    fn init(&self, version: u64) -> std::result::Result<(), KvError> {
        let txn = self.db.begin_write().map_err(|e| write_err("begin_write", e))?;
        {
            for table in Table::ALL {
                txn.open_table(definition(table)).map_err(|e| write_err("create table", e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| write_err("create meta table", e))?;
            meta.insert(FORMAT_VERSION_KEY, version).map_err(|e| write_err("write format version", e))?;
        }
        txn.commit().map_err(|e| write_err("commit", e))
    }
}
