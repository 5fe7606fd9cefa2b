//! Data files and archives, and the transactions that change which files
//! are live: a flush's commit, a move's swap to verified copies, an
//! archive's commit, a partition's delete and the tombstone sweep.
//!
//! **Invariant:** a file is visible iff its row is `live`; every change of
//! that is one transaction together with the partition statistics it
//! implies. Tombstoned rows stay until the sweeper has deleted their
//! objects (`expired_tombstones`, then `forget_file`).

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, params};
use serde::Serialize;

use super::datasets::{PARTITION_COLUMNS, partition_from_row};
use super::{Catalog, CatalogError, PartitionRecord, Result};
use crate::tier::Tier;

/// A file row.
#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    /// Catalog id.
    pub id: i64,
    /// Owning partition.
    #[serde(skip)]
    pub partition_id: i64,
    /// Storage target name.
    pub storage_target: String,
    /// Object key within the target.
    pub object_key: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Rows.
    pub rows: i64,
    /// Earliest row time, ns.
    pub min_time_ns: i64,
    /// Latest row time, ns.
    pub max_time_ns: i64,
    /// CRC32C of the whole file.
    pub checksum_crc32c: u32,
    /// Columns in the file, the time column included (unknown for files
    /// from before the catalog counted them).
    pub column_count: Option<i64>,
}

/// A file about to be committed by a flush.
#[derive(Debug, Clone)]
pub struct NewFile {
    /// Storage target name.
    pub storage_target: String,
    /// Object key.
    pub object_key: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Rows.
    pub rows: i64,
    /// Earliest row time, ns.
    pub min_time_ns: i64,
    /// Latest row time, ns.
    pub max_time_ns: i64,
    /// CRC32C of the whole file.
    pub checksum_crc32c: u32,
    /// Columns in the file, the time column included.
    pub column_count: i64,
}

impl NewFile {
    /// The catalog row of `encoded`, stored under `object_key` on `storage_target`.
    pub fn encoded(storage_target: &str, object_key: String, encoded: &crate::parquet_file::EncodedFile) -> NewFile {
        NewFile {
            storage_target: storage_target.to_string(),
            object_key,
            bytes: encoded.bytes.len() as i64,
            rows: encoded.rows,
            min_time_ns: encoded.min_time_ns,
            max_time_ns: encoded.max_time_ns,
            checksum_crc32c: encoded.checksum_crc32c,
            column_count: encoded.columns as i64,
        }
    }

    /// The catalog row of a file written by streaming (`info`), `bytes`
    /// long with CRC32C `checksum_crc32c`, stored under `object_key` on
    /// `storage_target`.
    pub fn streamed(
        storage_target: &str,
        object_key: String,
        info: &crate::parquet_file::EncodedFileInfo,
        bytes: u64,
        checksum_crc32c: u32,
    ) -> NewFile {
        NewFile {
            storage_target: storage_target.to_string(),
            object_key,
            bytes: bytes as i64,
            rows: info.rows,
            min_time_ns: info.min_time_ns,
            max_time_ns: info.max_time_ns,
            checksum_crc32c,
            column_count: info.columns as i64,
        }
    }
}

/// Adds `file` as a live file of the partition; returns its id.
pub(super) fn insert_live_file(tx: &Connection, partition_id: i64, file: &NewFile, now_ns: i64) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO files (partition_id, storage_target, object_key, bytes, row_count, min_time_ns, max_time_ns, checksum_crc32c, state, created_at_ns, column_count) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'live', ?9, ?10)",
    )?
    .execute(params![partition_id, file.storage_target, file.object_key, file.bytes, file.rows, file.min_time_ns, file.max_time_ns, i64::from(file.checksum_crc32c), now_ns, file.column_count],
    )?;
    Ok(tx.last_insert_rowid())
}

/// The columns [`file_from_row`] reads, of `files f`.
pub(super) const FILE_COLUMNS: &str = "f.id, f.partition_id, f.storage_target, f.object_key, f.bytes, f.row_count, f.min_time_ns, f.max_time_ns, \
     f.checksum_crc32c, f.column_count";

pub(super) fn file_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        id: row.get(0)?,
        partition_id: row.get(1)?,
        storage_target: row.get(2)?,
        object_key: row.get(3)?,
        bytes: row.get(4)?,
        rows: row.get(5)?,
        min_time_ns: row.get(6)?,
        max_time_ns: row.get(7)?,
        checksum_crc32c: row.get::<_, i64>(8)? as u32,
        column_count: row.get(9)?,
    })
}

/// What one storage target holds according to the catalog.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetUsage {
    /// Target name.
    pub target: String,
    /// Live files.
    pub files: i64,
    /// Bytes of live files.
    pub bytes: i64,
    /// Tombstoned files not yet swept.
    pub tombstoned_files: i64,
    /// Bytes of those.
    pub tombstoned_bytes: i64,
    /// Archives (an archive that replaced its partition's files is also a
    /// live file).
    pub archives: i64,
    /// Bytes of those.
    pub archive_bytes: i64,
}

/// A file's verified copy on the destination of a move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedFile {
    /// The id of the file that was copied.
    pub id: i64,
    /// The copy's key on the destination target.
    pub object_key: String,
    /// The copy's size.
    pub bytes: i64,
    /// The copy's CRC32C.
    pub checksum_crc32c: u32,
}

/// One partition's verified move, for [`Catalog::commit_moves`].
#[derive(Debug, Clone)]
pub struct MoveCommit {
    /// The partition.
    pub partition_id: i64,
    /// Its copied files.
    pub copies: Vec<MovedFile>,
    /// The storage target holding the copies.
    pub target: String,
    /// The partition's new tier.
    pub tier: Tier,
}

/// A verified archive about to be committed.
#[derive(Debug, Clone)]
pub struct NewArchive {
    /// The re-encoded Parquet file.
    pub file: NewFile,
    /// Its manifest (checksums, rows, sources), on the same target.
    pub manifest_key: String,
}

/// One partition's flushed file, for [`Catalog::commit_flushes`].
#[derive(Debug, Clone)]
pub struct FlushCommit {
    /// The partition.
    pub partition_id: i64,
    /// Its new file.
    pub file: NewFile,
    /// The highest WAL sequence the file holds.
    pub flushed_wal_seq: u64,
}

/// A query's view of a dataset's partitions (see [`Catalog::live_in`]).
#[derive(Debug)]
pub struct LivePartitions {
    /// The partitions in the range, oldest period first.
    pub partitions: Vec<PartitionRecord>,
    /// Live files of each (same order).
    pub files: Vec<Vec<FileRecord>>,
    /// The dataset's `partitions_seq` when read.
    pub seq: i64,
    /// Live partitions of the dataset, in the range or not.
    pub total: usize,
}

impl Catalog {
    /// Live files of a partition.
    pub fn files(&self, partition_id: i64) -> Result<Vec<FileRecord>> {
        Self::live_files(&self.lock(), partition_id)
    }

    /// Live files of a partition, on a connection already held.
    pub(super) fn live_files(connection: &Connection, partition_id: i64) -> Result<Vec<FileRecord>> {
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files f WHERE f.partition_id = ?1 AND f.state = 'live' ORDER BY f.id"
        ))?;
        let rows = statement.query_map([partition_id], file_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The live partitions of a dataset whose periods meet `[start, end)`
    /// (all of them for `None`), oldest period first, each with its live
    /// files: a query's snapshot, read under one lock in a few statements
    /// whatever the number of partitions. The dataset's live partitions are
    /// counted only when `counted` (`(partitions_seq, count)`) is stale.
    pub fn live_in(
        &self,
        dataset_id: i64,
        range: Option<(i64, i64)>,
        counted: Option<(i64, usize)>,
    ) -> Result<LivePartitions> {
        let (start, end) = range.unwrap_or((i64::MIN, i64::MAX));
        let connection = self.lock();
        let seq: i64 =
            connection
                .query_row("SELECT partitions_seq FROM datasets WHERE id = ?1", [dataset_id], |row| row.get(0))?;
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {PARTITION_COLUMNS} FROM partitions p WHERE p.dataset_id = ?1 AND p.deleted_at_ns IS NULL \
             AND p.period_end_ns > ?2 AND p.period_start_ns < ?3 ORDER BY p.period_start_ns, p.key"
        ))?;
        let partitions: Vec<PartitionRecord> = statement
            .query_map(params![dataset_id, start, end], partition_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files f JOIN partitions p ON p.id = f.partition_id \
             WHERE p.dataset_id = ?1 AND p.deleted_at_ns IS NULL AND p.period_end_ns > ?2 AND p.period_start_ns < ?3 \
             AND f.state = 'live' ORDER BY f.id"
        ))?;
        let mut by_partition: HashMap<i64, Vec<FileRecord>> = HashMap::new();
        for file in statement.query_map(params![dataset_id, start, end], file_from_row)? {
            let file = file?;
            by_partition.entry(file.partition_id).or_default().push(file);
        }
        let files = partitions.iter().map(|p| by_partition.remove(&p.id).unwrap_or_default()).collect();
        let total = match counted {
            Some((at, count)) if at == seq => count,
            _ if range.is_none() => partitions.len(),
            _ => connection.query_row(
                "SELECT count(*) FROM partitions WHERE dataset_id = ?1 AND deleted_at_ns IS NULL",
                [dataset_id],
                |row| row.get::<_, i64>(0),
            )? as usize,
        };
        Ok(LivePartitions { partitions, files, seq, total })
    }

    /// Every object key the catalog references (live or tombstoned) in a target.
    pub fn referenced_keys(&self, storage_target: &str) -> Result<HashSet<String>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT object_key FROM files WHERE storage_target = ?1 \
             UNION SELECT object_key FROM archives WHERE storage_target = ?1 \
             UNION SELECT manifest_key FROM archives WHERE storage_target = ?1",
        )?;
        let rows = statement.query_map([storage_target], |row| row.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Commits a flushed file: one transaction adds the file, updates the
    /// partition's statistics and records the WAL sequence it covers.
    pub fn commit_flush(&self, partition_id: i64, file: &NewFile, flushed_wal_seq: u64, now_ns: i64) -> Result<i64> {
        let ids = self.commit_flushes(&[FlushCommit { partition_id, file: file.clone(), flushed_wal_seq }], now_ns)?;
        Ok(ids[0])
    }

    /// Commits many partitions' flushed files in one transaction (one fsync
    /// for all of them): each adds its file, updates its partition's
    /// statistics and records its WAL sequence, as [`Catalog::commit_flush`].
    /// All or none. Returns the file ids, in order.
    pub fn commit_flushes(&self, flushes: &[FlushCommit], now_ns: i64) -> Result<Vec<i64>> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let mut ids = Vec::with_capacity(flushes.len());
        {
            let mut update = tx.prepare_cached(
                "UPDATE partitions SET row_count = row_count + ?2, bytes = bytes + ?3, \
                   min_time_ns = MIN(COALESCE(min_time_ns, ?4), ?4), max_time_ns = MAX(COALESCE(max_time_ns, ?5), ?5), \
                   last_written_at_ns = ?6, flushed_wal_seq = MAX(flushed_wal_seq, ?7) WHERE id = ?1",
            )?;
            for FlushCommit { partition_id, file, flushed_wal_seq } in flushes {
                ids.push(insert_live_file(&tx, *partition_id, file, now_ns)?);
                update.execute(params![
                    partition_id,
                    file.rows,
                    file.bytes,
                    file.min_time_ns,
                    file.max_time_ns,
                    now_ns,
                    *flushed_wal_seq as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Swaps the listed live files of a partition to their copies on
    /// `target` and tombstones their old rows, and sets the partition's
    /// tier, in one transaction. The partition becomes read-only. A copy
    /// keeps its file's rows and time range; its key, size and checksum are
    /// the copy's own (a re-encoded copy differs from its source). A file
    /// that changed meanwhile (compaction merged it) is a conflict and
    /// nothing is written.
    pub fn commit_move(
        &self,
        partition_id: i64,
        copies: &[MovedFile],
        target: &str,
        tier: Tier,
        now_ns: i64,
    ) -> Result<()> {
        let commit = MoveCommit { partition_id, copies: copies.to_vec(), target: target.to_string(), tier };
        self.commit_moves(std::slice::from_ref(&commit), now_ns)?.remove(0)
    }

    /// Commits many verified moves in one transaction (one fsync). Each
    /// partition's part sits in a savepoint: a conflict rolls back that
    /// partition alone, reported in its slot of the answer; the others
    /// commit. An SQLite error fails the whole batch and writes nothing.
    pub fn commit_moves(&self, moves: &[MoveCommit], now_ns: i64) -> Result<Vec<Result<()>>> {
        let mut connection = self.lock();
        let mut tx = connection.transaction()?;
        let mut outcomes = Vec::with_capacity(moves.len());
        for commit in moves {
            let savepoint = tx.savepoint()?;
            match Self::move_in(&savepoint, commit, now_ns) {
                Ok(()) => {
                    savepoint.commit()?;
                    outcomes.push(Ok(()));
                }
                Err(CatalogError::Conflict(message)) => {
                    savepoint.finish()?; // rolls back this partition's part
                    outcomes.push(Err(CatalogError::Conflict(message)));
                }
                Err(error) => return Err(error),
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    fn move_in(tx: &rusqlite::Connection, commit: &MoveCommit, now_ns: i64) -> Result<()> {
        let partition_id = commit.partition_id;
        for copy in &commit.copies {
            let file_id = copy.id;
            let inserted = tx.execute(
                "INSERT INTO files (partition_id, storage_target, object_key, bytes, row_count, min_time_ns, max_time_ns, checksum_crc32c, state, created_at_ns, column_count) \
                 SELECT partition_id, ?2, ?5, ?6, row_count, min_time_ns, max_time_ns, ?7, 'live', ?3, column_count \
                 FROM files WHERE id = ?1 AND partition_id = ?4 AND state = 'live'",
                params![file_id, commit.target, now_ns, partition_id, copy.object_key, copy.bytes, i64::from(copy.checksum_crc32c)],
            )?;
            if inserted != 1 {
                return Err(CatalogError::Conflict(format!("file {file_id} changed during the move")));
            }
            tx.execute(
                "UPDATE partitions SET bytes = bytes + ?3 - (SELECT bytes FROM files WHERE id = ?2) WHERE id = ?1",
                params![partition_id, file_id, copy.bytes],
            )?;
            let tombstoned = tx.execute(
                "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = ?2 WHERE id = ?1 AND state = 'live'",
                params![file_id, now_ns],
            )?;
            if tombstoned != 1 {
                return Err(CatalogError::Conflict(format!("file {file_id} changed during the move")));
            }
        }
        tx.execute(
            "UPDATE partitions SET tier = ?2, read_only = 1 WHERE id = ?1",
            params![partition_id, commit.tier.as_str()],
        )?;
        Ok(())
    }

    /// Records a verified archive of a partition. With `replace_source` the
    /// archive becomes the partition's only live file (tier `archived`) and
    /// the other files are tombstoned, in the same transaction.
    pub fn commit_archive(
        &self,
        partition_id: i64,
        archive: &NewArchive,
        replace_source: bool,
        now_ns: i64,
    ) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "INSERT INTO archives (partition_id, storage_target, object_key, manifest_key, bytes, row_count, checksum_crc32c, created_at_ns, column_count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                partition_id,
                archive.file.storage_target,
                archive.file.object_key,
                archive.manifest_key,
                archive.file.bytes,
                archive.file.rows,
                i64::from(archive.file.checksum_crc32c),
                now_ns,
                archive.file.column_count
            ],
        )?;
        if replace_source {
            let live_rows: i64 = tx.query_row(
                "SELECT COALESCE(SUM(row_count), 0) FROM files WHERE partition_id = ?1 AND state = 'live'",
                [partition_id],
                |row| row.get(0),
            )?;
            if live_rows != archive.file.rows {
                return Err(CatalogError::Conflict(format!(
                    "the partition holds {live_rows} rows, the archive {}",
                    archive.file.rows
                )));
            }
            tx.execute(
                "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = ?2 WHERE partition_id = ?1 AND state = 'live'",
                params![partition_id, now_ns],
            )?;
            insert_live_file(&tx, partition_id, &archive.file, now_ns)?;
            // The archive is now the partition's only live file.
            tx.execute(
                "UPDATE partitions SET tier = ?3, read_only = 1, bytes = ?2 WHERE id = ?1",
                params![partition_id, archive.file.bytes, Tier::Archived.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a partition: its files are tombstoned (invisible at once) and
    /// the partition is hidden and refuses writes. One transaction.
    pub fn delete_partition(&self, partition_id: i64, now_ns: i64) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = ?2 WHERE partition_id = ?1 AND state = 'live'",
            params![partition_id, now_ns],
        )?;
        tx.execute(
            "UPDATE partitions SET read_only = 1, deleted_at_ns = ?2 WHERE id = ?1 AND deleted_at_ns IS NULL",
            params![partition_id, now_ns],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Files tombstoned before `before_ns`, and live files of deleted
    /// partitions (rows that were still buffered when the partition went).
    pub fn expired_tombstones(&self, before_ns: i64) -> Result<Vec<FileRecord>> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = \
               (SELECT deleted_at_ns FROM partitions p WHERE p.id = files.partition_id) \
             WHERE state = 'live' AND partition_id IN (SELECT id FROM partitions WHERE deleted_at_ns IS NOT NULL)",
            [],
        )?;
        // A tombstoned row whose object is an archive copy (a restored
        // partition's former location) is forgotten; the archive stays.
        tx.execute(
            "DELETE FROM files WHERE state = 'tombstoned' AND tombstoned_at_ns < ?1 AND EXISTS \
               (SELECT 1 FROM archives a WHERE a.storage_target = files.storage_target AND a.object_key = files.object_key)",
            [before_ns],
        )?;
        let files = {
            let mut statement = tx.prepare(&format!(
                "SELECT {FILE_COLUMNS} FROM files f WHERE f.state = 'tombstoned' AND f.tombstoned_at_ns < ?1 \
                 ORDER BY f.id LIMIT 10000"
            ))?;
            let rows = statement.query_map([before_ns], file_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        Ok(files)
    }

    /// Forgets a tombstoned file once it is deleted from its target.
    pub fn forget_file(&self, file_id: i64) -> Result<()> {
        self.lock().execute("DELETE FROM files WHERE id = ?1 AND state = 'tombstoned'", [file_id])?;
        Ok(())
    }

    /// Every storage target a file row or an archive names.
    pub fn storage_targets_in_use(&self) -> Result<Vec<String>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT storage_target FROM files UNION SELECT storage_target FROM archives ORDER BY storage_target",
        )?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Files and bytes per storage target, live and tombstoned.
    pub fn target_usage(&self) -> Result<Vec<TargetUsage>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT storage_target, SUM(live), SUM(live_bytes), SUM(dead), SUM(dead_bytes), SUM(archive), SUM(archive_bytes) \
             FROM (SELECT storage_target, state = 'live' AS live, CASE WHEN state = 'live' THEN bytes ELSE 0 END AS live_bytes, \
                     state = 'tombstoned' AS dead, CASE WHEN state = 'tombstoned' THEN bytes ELSE 0 END AS dead_bytes, \
                     0 AS archive, 0 AS archive_bytes FROM files \
                   UNION ALL SELECT storage_target, 0, 0, 0, 0, 1, bytes FROM archives) \
             GROUP BY storage_target ORDER BY storage_target",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(TargetUsage {
                target: row.get(0)?,
                files: row.get(1)?,
                bytes: row.get(2)?,
                tombstoned_files: row.get(3)?,
                tombstoned_bytes: row.get(4)?,
                archives: row.get(5)?,
                archive_bytes: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::AuditFilter;
    use crate::catalog::AuditKind;
    use crate::catalog::tests::{catalog, file};
    use crate::period::Period;

    #[test]
    fn flush_commit_updates_partition_statistics() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        assert_eq!(
            catalog.create_dataset("cpu", Period::Hour, "ts", 2).unwrap().id,
            dataset.id,
            "creation is idempotent"
        );
        let bucket = Period::Day.bucket(0);
        let partition = catalog.partition(dataset.id, &bucket, "", 5).unwrap();
        assert_eq!(partition.tier, Tier::Hot);
        let file = NewFile {
            storage_target: "hot".into(),
            object_key: "data/1/1/a.parquet".into(),
            bytes: 100,
            rows: 10,
            min_time_ns: 3,
            max_time_ns: 9,
            checksum_crc32c: 7,
            column_count: 3,
        };
        catalog.commit_flush(partition.id, &file, 42, 6).unwrap();
        let file = NewFile { object_key: "data/1/1/b.parquet".into(), min_time_ns: 1, max_time_ns: 4, ..file };
        catalog.commit_flush(partition.id, &file, 40, 7).unwrap();
        let partition = catalog.partition(dataset.id, &bucket, "", 8).unwrap();
        assert_eq!((partition.rows, partition.bytes, partition.file_count), (20, 200, 2));
        assert_eq!((partition.min_time_ns, partition.max_time_ns), (Some(1), Some(9)));
        assert_eq!(partition.flushed_wal_seq, 42, "the covered WAL sequence never goes back");
        assert_eq!(catalog.referenced_keys("hot").unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_batch_of_moves_commits_together_and_a_conflict_fails_only_its_partition() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let mut partitions = Vec::new();
        for day in 0..3i64 {
            let bucket = Period::Day.bucket(day * 86_400_000_000_000);
            let partition = catalog.partition(dataset.id, &bucket, "", 1).unwrap();
            let file = NewFile { bytes: 100, rows: 10, min_time_ns: day, max_time_ns: day, ..file(&format!("{day}")) };
            catalog.commit_flush(partition.id, &file, 1, 2).unwrap();
            partitions.push((bucket, partition.id, catalog.files(partition.id).unwrap().remove(0)));
        }
        let commits: Vec<MoveCommit> = partitions
            .iter()
            .map(|(_, id, file)| MoveCommit {
                partition_id: *id,
                copies: vec![MovedFile {
                    // The middle partition's file id is stale: someone else changed it.
                    id: if *id == partitions[1].1 { file.id + 1000 } else { file.id },
                    object_key: file.object_key.clone(),
                    bytes: 90,
                    checksum_crc32c: 8,
                }],
                target: "warm".into(),
                tier: Tier::Warm,
            })
            .collect();
        catalog
            .set_read_only("cpu", &[(partitions[0].1, "p0".into()), (partitions[1].1, "p1".into())], true, 3)
            .unwrap();
        let outcomes = catalog.commit_moves(&commits, 4).unwrap();
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(matches!(outcomes[1], Err(CatalogError::Conflict(_))), "{outcomes:?}");
        let tiers: Vec<(Tier, bool, i64, String)> = partitions
            .iter()
            .map(|(bucket, id, _)| {
                let p = catalog.partition(dataset.id, bucket, "", 5).unwrap();
                let files = catalog.files(*id).unwrap();
                assert_eq!(files.len(), 1);
                (p.tier, p.read_only, p.bytes, files[0].storage_target.clone())
            })
            .collect();
        assert_eq!(
            tiers,
            [
                (Tier::Warm, true, 90, "warm".to_string()),
                (Tier::Hot, true, 100, "hot".to_string()),
                (Tier::Warm, true, 90, "warm".to_string())
            ],
            "the conflicting partition is untouched (but sealed); the others moved"
        );
        let sealed = catalog
            .audit_events(&AuditFilter {
                dataset: Some("cpu"),
                partition: None,
                kind: Some(AuditKind::PartitionReadOnly),
                since_ns: 0,
                limit: 10,
                newest_first: false,
            })
            .unwrap();
        assert_eq!(sealed.len(), 2, "one audit event per sealed partition");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn live_file_counts_and_archive_flags_follow_every_change() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let bucket = Period::Day.bucket(0);
        let partition = catalog.partition(dataset.id, &bucket, "", 1).unwrap();
        let counts = || {
            let p = catalog.partition(dataset.id, &bucket, "", 1).unwrap();
            let live = catalog.files(partition.id).unwrap().len() as i64;
            assert_eq!(p.file_count, live, "the kept count equals a count of the live rows");
            (p.file_count, p.archived)
        };
        catalog.commit_flush(partition.id, &file("a"), 1, 2).unwrap();
        catalog.commit_flush(partition.id, &file("b"), 2, 2).unwrap();
        assert_eq!(counts(), (2, false));
        let first = catalog.files(partition.id).unwrap().remove(0);
        let moved = MovedFile { id: first.id, object_key: first.object_key.clone(), bytes: 10, checksum_crc32c: 3 };
        catalog.commit_move(partition.id, &[moved], "warm", Tier::Warm, 3).unwrap();
        assert_eq!(counts(), (2, false), "a move replaces files one for one");
        let archive = NewArchive {
            file: NewFile {
                storage_target: "archive".into(),
                object_key: "data/1/1/archive.parquet".into(),
                bytes: 15,
                rows: 4,
                min_time_ns: 1,
                max_time_ns: 2,
                checksum_crc32c: 4,
                column_count: 3,
            },
            manifest_key: "data/1/1/archive.json".into(),
        };
        catalog.commit_archive(partition.id, &archive, true, 4).unwrap();
        assert_eq!(counts(), (1, true), "the archive replaced the source files");
        let archived = catalog.partition(dataset.id, &bucket, "", 1).unwrap();
        assert_eq!((archived.tier, archived.bytes), (Tier::Archived, 15), "its size is the archive's");
        for tombstone in catalog.expired_tombstones(i64::MAX).unwrap() {
            catalog.forget_file(tombstone.id).unwrap();
        }
        assert_eq!(counts(), (1, true), "sweeping tombstones leaves the live count alone");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
