//! The SQLite catalog: the single commit point of Strata.
//!
//! **Invariant:** a file is visible to queries if and only if this catalog
//! lists it as `live`. Nothing answers a query by listing directories.
//! Only this module tree touches rusqlite. All calls block; async code runs
//! them through [`Catalog::call`].
//!
//! One SQLite connection behind a mutex serves the whole process; each
//! method takes it for one statement or one transaction. The submodules
//! each own a group of tables: `datasets` (datasets, schema versions,
//! partitions), `files` (files and archives, and the flush, move and
//! archive commits), `idempotency`, `policy_versions`, `compaction`
//! (checkpoints), `runs_audit` (lifecycle runs, audit events), `timeline` (partition sums
//! for the console) and `tokens`.
//! `migrations` holds the schema.
//!
//! A stored value that does not decode (a tier, a status, an audit kind no
//! release writes) is [`CatalogError::Corrupt`], never a default.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::sync::Recover as _;
use rusqlite::Connection;
use rusqlite::config::DbConfig;

mod compaction;
mod datasets;
mod files;
mod idempotency;
mod migrations;
mod partition_pages;
mod policy_versions;
mod runs_audit;
mod settings;
mod timeline;
mod tokens;

pub use compaction::{CompactedChunk, CompactionCheckpoint, CompactionStatus};
pub use datasets::{DatasetRecord, PartitionRecord};
pub use files::{FileRecord, FlushCommit, MoveCommit, MovedFile, NewArchive, NewFile};
pub use idempotency::IdempotencyRecord;
pub use partition_pages::{PartitionCursor, PartitionFilter};
pub use policy_versions::{PolicyVersionAttempt, PolicyVersionRecord, PolicyVersionStatus};
pub use runs_audit::{AuditEvent, AuditFilter, AuditKind, RunRecord, StoredRun};
pub use settings::{DatasetAdmin, DatasetFootprint, DatasetOverrides};
pub use timeline::{TIMELINE_BUCKETS_MAX, TIMELINE_LANES_MAX, TimelineCell, TimelineShape};
pub use tokens::{NewToken, TokenRecord};

/// A catalog failure.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// A stored value could not be decoded.
    #[error("corrupt catalog value: {0}")]
    Corrupt(String),
    /// A commit found the catalog changed under it; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The blocking task running a catalog call panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

impl crate::error::Coded for CatalogError {
    fn code(&self) -> crate::error::ErrorCode {
        crate::error::ErrorCode::Internal
    }

    fn message(&self) -> String {
        format!("catalog: {self}")
    }
}

impl From<rusqlite::Error> for CatalogError {
    fn from(error: rusqlite::Error) -> CatalogError {
        match error {
            rusqlite::Error::FromSqlConversionFailure(_, _, cause) if cause.is::<CorruptValue>() => {
                CatalogError::Corrupt(cause.to_string())
            }
            other => CatalogError::Sqlite(other),
        }
    }
}

type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// A stored value that does not decode, found by a row mapper (which can
/// only fail with a rusqlite error); [`CatalogError`]'s `From` turns it
/// into [`CatalogError::Corrupt`].
#[derive(Debug)]
struct CorruptValue(String);

impl std::fmt::Display for CorruptValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CorruptValue {}

/// The row-mapper error for column `index` holding `what`, which does not decode.
fn corrupt(index: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(CorruptValue(what)))
}

/// Text column `index` decoded by `parse`; a value it refuses is corrupt
/// (named `what` in the error).
fn decode<T>(
    row: &rusqlite::Row<'_>,
    index: usize,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let raw: String = row.get(index)?;
    parse(&raw).ok_or_else(|| corrupt(index, format!("{what} {raw:?}")))
}

/// The catalog.
#[derive(Debug)]
pub struct Catalog {
    connection: Mutex<Connection>,
}

impl Catalog {
    /// Opens (creating and migrating) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Catalog> {
        let connection = Connection::open(path)?;
        // WAL journal with synchronous=FULL: a committed transaction survives
        // power loss, which the "acknowledged means durable" guarantee needs.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        // Plans never depend on bound values (there are no statistics to
        // weigh them against): with SQLite's STAT4 built in, a cached
        // statement whose plan weighed an index would otherwise be compiled
        // again at every execution (a query's snapshot, each of them).
        connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let catalog = Catalog { connection: Mutex::new(connection) };
        migrations::migrate(&mut catalog.lock())?;
        Ok(catalog)
    }

    /// Runs `work` with the catalog on tokio's blocking pool: the one way
    /// async code calls the catalog, whose calls block on SQLite.
    pub async fn call<T, E>(
        self: &Arc<Self>,
        work: impl FnOnce(&Catalog) -> std::result::Result<T, E> + Send + 'static,
    ) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<CatalogError> + Send + 'static,
    {
        let catalog = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&catalog))
            .await
            .map_err(|e| E::from(CatalogError::Task(e.to_string())))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock_or_recover()
    }

    /// The catalog file of a data directory.
    pub fn path_in(data_dir: &Path) -> std::path::PathBuf {
        data_dir.join("catalog.sqlite")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small live file on the hot target, named `key`.
    pub(super) fn file(key: &str) -> NewFile {
        NewFile {
            storage_target: "hot".into(),
            object_key: format!("data/1/1/{key}.parquet"),
            bytes: 10,
            rows: 2,
            min_time_ns: 1,
            max_time_ns: 2,
            checksum_crc32c: 3,
            column_count: 3,
        }
    }

    #[test]
    fn a_cached_statement_is_compiled_once_whatever_its_parameters() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", crate::period::Period::Day, "time", 1).unwrap();
        catalog.partition(dataset.id, &crate::period::Period::Day.bucket(0), "", 1).unwrap();
        // A snapshot's shape: a join, ranges and an order an index gives.
        let sql = "SELECT f.id FROM files f JOIN partitions p ON p.id = f.partition_id WHERE p.dataset_id = ?1 \
                   AND p.period_end_ns > ?2 AND p.period_start_ns < ?3 AND f.state = 'live' ORDER BY p.period_start_ns, p.key";
        let reprepared = {
            let connection = catalog.lock();
            for (start, end) in [(0, 10), (5, 100), (-7, i64::MAX)] {
                let mut statement = connection.prepare_cached(sql).unwrap();
                statement.query(rusqlite::params![dataset.id, start, end]).unwrap().next().unwrap();
            }
            connection.prepare_cached(sql).unwrap().get_status(rusqlite::StatementStatus::RePrepare)
        };
        assert_eq!(reprepared, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A fresh catalog in a temporary directory (removed by each test).
    pub(super) fn catalog() -> (Catalog, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("strata-catalog-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        (Catalog::open(&dir.join("catalog.sqlite")).unwrap(), dir)
    }
}
