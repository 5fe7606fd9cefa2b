//! Compaction checkpoints: one row per partition recording a compaction
//! job's plan (chunks of file ids), its cursor and its counters.
//!
//! A job moves `pending` → `running` (an attempt) → `completed`, or
//! `failed` (retried) or back to `pending` (a shutdown between chunks).
//! Each merged chunk commits in one transaction with its file swap and the
//! cursor's advance, so a crash resumes at the first chunk not committed.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::files::insert_live_file;
use super::{Catalog, CatalogError, NewFile, Result, corrupt};

/// Where a partition's compaction job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactionStatus {
    /// Planned, or interrupted (a crash or a shutdown); the next pass resumes it.
    Pending,
    /// A chunk is being merged now.
    Running,
    /// Every chunk was merged or skipped.
    Completed,
    /// The last attempt failed; retried until `max_attempts`.
    Failed,
}

impl CompactionStatus {
    /// The catalog's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CompactionStatus::Pending => "pending",
            CompactionStatus::Running => "running",
            CompactionStatus::Completed => "completed",
            CompactionStatus::Failed => "failed",
        }
    }

    fn parse(raw: &str) -> Option<CompactionStatus> {
        match raw {
            "pending" => Some(CompactionStatus::Pending),
            "running" => Some(CompactionStatus::Running),
            "completed" => Some(CompactionStatus::Completed),
            "failed" => Some(CompactionStatus::Failed),
            _ => None,
        }
    }
}

/// The checkpoint of one partition's compaction job: one row per partition,
/// replaced when a new job starts after a completed one.
#[derive(Debug, Clone, Serialize)]
pub struct CompactionCheckpoint {
    /// The partition (internal id).
    #[serde(skip)]
    pub partition_id: i64,
    /// The partition's period label.
    #[serde(skip)]
    pub period_label: String,
    /// The partition's key.
    #[serde(skip)]
    pub key: String,
    /// Pending, running, completed or failed.
    pub status: CompactionStatus,
    /// The chunks: the file ids each one merges into one file.
    #[serde(skip)]
    pub plan: Vec<Vec<i64>>,
    /// Index of the next chunk to process.
    pub cursor: i64,
    /// Chunks merged and committed.
    pub completed_chunks: i64,
    /// Chunks passed over because an input was no longer live (a move or a
    /// delete came first).
    pub skipped_chunks: i64,
    /// Chunks in the plan.
    pub total_chunks: i64,
    /// Runs that started or resumed the job.
    pub attempts: i64,
    /// Why the last attempt failed; cleared when the job completes.
    pub last_error: Option<String>,
    /// Input files merged so far.
    pub files_merged: i64,
    /// Bytes of those inputs.
    pub bytes_read: i64,
    /// Bytes of the files written.
    pub bytes_written: i64,
    /// When the job was planned, ns.
    pub started_at_ns: i64,
    /// Last change, ns.
    pub updated_at_ns: i64,
    /// When the job completed, ns.
    pub finished_at_ns: Option<i64>,
}

const CHECKPOINT_COLUMNS: &str = "c.partition_id, p.period_label, p.key, c.status, c.plan_json, c.cursor, c.completed_chunks, \
     c.skipped_chunks, c.total_chunks, c.attempts, c.last_error, c.files_merged, c.bytes_read, c.bytes_written, \
     c.started_at_ns, c.updated_at_ns, c.finished_at_ns";

fn checkpoint_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CompactionCheckpoint> {
    let status: String = row.get(3)?;
    let plan: String = row.get(4)?;
    Ok(CompactionCheckpoint {
        partition_id: row.get(0)?,
        period_label: row.get(1)?,
        key: row.get(2)?,
        status: CompactionStatus::parse(&status).ok_or_else(|| corrupt(3, format!("status {status:?}")))?,
        plan: serde_json::from_str(&plan).map_err(|e| corrupt(4, format!("plan: {e}")))?,
        cursor: row.get(5)?,
        completed_chunks: row.get(6)?,
        skipped_chunks: row.get(7)?,
        total_chunks: row.get(8)?,
        attempts: row.get(9)?,
        last_error: row.get(10)?,
        files_merged: row.get(11)?,
        bytes_read: row.get(12)?,
        bytes_written: row.get(13)?,
        started_at_ns: row.get(14)?,
        updated_at_ns: row.get(15)?,
        finished_at_ns: row.get(16)?,
    })
}

/// One merged chunk to commit.
#[derive(Debug, Clone)]
pub struct CompactedChunk<'a> {
    /// The chunk's index in the plan; the checkpoint's cursor must be here.
    pub chunk_index: i64,
    /// The target the inputs are on and the output was written to.
    pub storage_target: &'a str,
    /// The input files, all of which must still be live.
    pub inputs: &'a [i64],
    /// The verified output file.
    pub file: &'a NewFile,
}

impl Catalog {
    /// The compaction checkpoint of a partition.
    pub fn compaction_checkpoint(&self, partition_id: i64) -> Result<Option<CompactionCheckpoint>> {
        let connection = self.lock();
        Ok(connection
            .query_row(
                &format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM compaction_checkpoints c JOIN partitions p ON p.id = c.partition_id \
                     WHERE c.partition_id = ?1"
                ),
                [partition_id],
                checkpoint_from_row,
            )
            .optional()?)
    }

    /// The compaction checkpoints of a dataset's partitions, oldest period first.
    pub fn compaction_checkpoints(&self, dataset_id: i64) -> Result<Vec<CompactionCheckpoint>> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM compaction_checkpoints c JOIN partitions p ON p.id = c.partition_id \
             WHERE p.dataset_id = ?1 AND p.deleted_at_ns IS NULL ORDER BY p.period_start_ns, p.key"
        ))?;
        let rows = statement.query_map([dataset_id], checkpoint_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records a new compaction job (status `pending`, cursor 0) for a
    /// partition. It replaces a completed checkpoint; an unfinished one is a
    /// conflict (resume it instead).
    pub fn plan_compaction(&self, partition_id: i64, plan: &[Vec<i64>], now_ns: i64) -> Result<()> {
        let changed = self.lock().execute(
            "INSERT INTO compaction_checkpoints (partition_id, status, plan_json, total_chunks, started_at_ns, updated_at_ns) \
             VALUES (?1, 'pending', ?2, ?3, ?4, ?4) \
             ON CONFLICT (partition_id) DO UPDATE SET status = 'pending', plan_json = ?2, cursor = 0, \
               completed_chunks = 0, skipped_chunks = 0, total_chunks = ?3, attempts = 0, last_error = NULL, \
               files_merged = 0, bytes_read = 0, bytes_written = 0, started_at_ns = ?4, updated_at_ns = ?4, \
               finished_at_ns = NULL \
             WHERE compaction_checkpoints.status = 'completed'",
            params![
                partition_id,
                serde_json::to_string(plan).expect("plans serialize"),
                plan.len() as i64,
                now_ns
            ],
        )?;
        if changed != 1 {
            return Err(CatalogError::Conflict(format!("partition {partition_id} has an unfinished compaction job")));
        }
        Ok(())
    }

    /// Starts (or resumes) an attempt at an unfinished compaction job: status
    /// `running`, one more attempt. Returns the checkpoint.
    pub fn begin_compaction_attempt(&self, partition_id: i64, now_ns: i64) -> Result<CompactionCheckpoint> {
        let changed = self.lock().execute(
            "UPDATE compaction_checkpoints SET status = 'running', attempts = attempts + 1, updated_at_ns = ?2 \
             WHERE partition_id = ?1 AND status != 'completed'",
            params![partition_id, now_ns],
        )?;
        if changed != 1 {
            return Err(CatalogError::Conflict(format!("partition {partition_id} has no unfinished compaction job")));
        }
        self.compaction_checkpoint(partition_id)?
            .ok_or_else(|| CatalogError::Conflict(format!("the compaction job of partition {partition_id} vanished")))
    }

    /// Commits one merged chunk in one transaction: the output becomes a
    /// live file, the inputs are tombstoned, the partition's bytes are
    /// adjusted and the checkpoint advances (completing the job after its
    /// last chunk). A conflict — an input no longer live on the target, the
    /// rows not adding up, the checkpoint elsewhere, the partition deleted —
    /// writes nothing. Returns the new file's id.
    pub fn commit_compaction_chunk(&self, partition_id: i64, chunk: &CompactedChunk<'_>, now_ns: i64) -> Result<i64> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let at: Option<(String, i64)> = tx
            .query_row(
                "SELECT status, cursor FROM compaction_checkpoints WHERE partition_id = ?1",
                [partition_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if at != Some(("running".to_string(), chunk.chunk_index)) {
            return Err(CatalogError::Conflict(format!(
                "the compaction checkpoint of partition {partition_id} is not at chunk {} ({at:?})",
                chunk.chunk_index
            )));
        }
        let deleted: Option<i64> =
            tx.query_row("SELECT deleted_at_ns FROM partitions WHERE id = ?1", [partition_id], |row| row.get(0))?;
        if deleted.is_some() {
            return Err(CatalogError::Conflict(format!("partition {partition_id} was deleted")));
        }
        let (input_rows, input_bytes) = tombstone_inputs(&tx, partition_id, chunk, now_ns)?;
        let file = chunk.file;
        if input_rows != file.rows || file.storage_target != chunk.storage_target {
            return Err(CatalogError::Conflict(format!(
                "the inputs hold {input_rows} rows on {}, the output {} on {}",
                chunk.storage_target, file.rows, file.storage_target
            )));
        }
        let file_id = insert_live_file(&tx, partition_id, file, now_ns)?;
        tx.execute(
            "UPDATE partitions SET bytes = bytes - ?2 + ?3 WHERE id = ?1",
            params![partition_id, input_bytes, file.bytes],
        )?;
        tx.execute(
            "UPDATE compaction_checkpoints SET cursor = cursor + 1, completed_chunks = completed_chunks + 1, \
               files_merged = files_merged + ?2, bytes_read = bytes_read + ?3, bytes_written = bytes_written + ?4, \
               updated_at_ns = ?5, \
               status = CASE WHEN cursor + 1 >= total_chunks THEN 'completed' ELSE status END, \
               last_error = CASE WHEN cursor + 1 >= total_chunks THEN NULL ELSE last_error END, \
               finished_at_ns = CASE WHEN cursor + 1 >= total_chunks THEN ?5 END \
             WHERE partition_id = ?1",
            params![partition_id, chunk.inputs.len() as i64, input_bytes, file.bytes, now_ns],
        )?;
        tx.commit()?;
        Ok(file_id)
    }

    /// Passes over chunk `chunk_index` of a running job (an input is no
    /// longer live), completing the job after its last chunk.
    pub fn skip_compaction_chunk(&self, partition_id: i64, chunk_index: i64, now_ns: i64) -> Result<()> {
        let changed = self.lock().execute(
            "UPDATE compaction_checkpoints SET cursor = cursor + 1, skipped_chunks = skipped_chunks + 1, \
               updated_at_ns = ?3, \
               status = CASE WHEN cursor + 1 >= total_chunks THEN 'completed' ELSE status END, \
               last_error = CASE WHEN cursor + 1 >= total_chunks THEN NULL ELSE last_error END, \
               finished_at_ns = CASE WHEN cursor + 1 >= total_chunks THEN ?3 END \
             WHERE partition_id = ?1 AND cursor = ?2 AND status = 'running'",
            params![partition_id, chunk_index, now_ns],
        )?;
        if changed != 1 {
            return Err(CatalogError::Conflict(format!(
                "the compaction checkpoint of partition {partition_id} is not at chunk {chunk_index}"
            )));
        }
        Ok(())
    }

    /// Completes a running job whose cursor is already past its last chunk.
    pub fn finish_compaction(&self, partition_id: i64, now_ns: i64) -> Result<()> {
        self.lock().execute(
            "UPDATE compaction_checkpoints SET status = 'completed', last_error = NULL, updated_at_ns = ?2, \
               finished_at_ns = ?2 WHERE partition_id = ?1 AND status = 'running' AND cursor >= total_chunks",
            params![partition_id, now_ns],
        )?;
        Ok(())
    }

    /// Marks a running job failed with `error`; its cursor stays where the
    /// last committed chunk left it.
    pub fn fail_compaction(&self, partition_id: i64, error: &str, now_ns: i64) -> Result<()> {
        self.lock().execute(
            "UPDATE compaction_checkpoints SET status = 'failed', last_error = ?2, updated_at_ns = ?3 \
             WHERE partition_id = ?1 AND status = 'running'",
            params![partition_id, error, now_ns],
        )?;
        Ok(())
    }

    /// Sets a running job back to `pending` (a shutdown between chunks); the
    /// next pass resumes it at its cursor.
    pub fn pause_compaction(&self, partition_id: i64, now_ns: i64) -> Result<()> {
        self.lock().execute(
            "UPDATE compaction_checkpoints SET status = 'pending', updated_at_ns = ?2 \
             WHERE partition_id = ?1 AND status = 'running'",
            params![partition_id, now_ns],
        )?;
        Ok(())
    }

    /// At start-up: a job still `running` was cut short by a crash or a kill,
    /// which counts as a failed attempt (so a chunk that kills the process
    /// is not retried forever). Returns how many.
    pub fn fail_interrupted_compactions(&self, now_ns: i64) -> Result<usize> {
        Ok(self.lock().execute(
            "UPDATE compaction_checkpoints SET status = 'failed', updated_at_ns = ?1, \
               last_error = 'interrupted: the server stopped during chunk ' || cursor || ' (crash or kill)' \
             WHERE status = 'running'",
            [now_ns],
        )?)
    }

    /// Deletes completed checkpoints that finished before `before_ns`.
    pub fn prune_compaction_checkpoints(&self, before_ns: i64) -> Result<usize> {
        Ok(self.lock().execute(
            "DELETE FROM compaction_checkpoints WHERE status = 'completed' AND finished_at_ns < ?1",
            [before_ns],
        )?)
    }

    /// Compaction jobs per status.
    pub fn compaction_status_counts(&self) -> Result<Vec<(CompactionStatus, i64)>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT status, COUNT(*) FROM compaction_checkpoints GROUP BY status ORDER BY status")?;
        let rows = statement.query_map([], |row| {
            Ok((super::decode(row, 0, "compaction status", CompactionStatus::parse)?, row.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Tombstones a chunk's inputs, each of which must still be live on the
/// chunk's target (a conflict otherwise); returns their rows and bytes.
fn tombstone_inputs(tx: &Connection, partition_id: i64, chunk: &CompactedChunk<'_>, now_ns: i64) -> Result<(i64, i64)> {
    let (mut input_rows, mut input_bytes) = (0i64, 0i64);
    for file_id in chunk.inputs {
        let input: Option<(i64, i64)> = tx
            .query_row(
                "SELECT row_count, bytes FROM files \
                 WHERE id = ?1 AND partition_id = ?2 AND storage_target = ?3 AND state = 'live'",
                params![file_id, partition_id, chunk.storage_target],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((rows, bytes)) = input else {
            return Err(CatalogError::Conflict(format!(
                "file {file_id} is no longer live on {}",
                chunk.storage_target
            )));
        };
        tx.execute(
            "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = ?2 WHERE id = ?1",
            params![file_id, now_ns],
        )?;
        input_rows += rows;
        input_bytes += bytes;
    }
    Ok((input_rows, input_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::MovedFile;
    use crate::catalog::tests::catalog;
    use crate::period::Period;
    use crate::tier::Tier;

    #[test]
    fn a_compaction_chunk_commits_whole_or_not_at_all_and_moves_the_checkpoint() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let bucket = Period::Day.bucket(0);
        let partition = catalog.partition(dataset.id, &bucket, "", 1).unwrap();
        let ids: Vec<i64> = (0..4)
            .map(|i| {
                let file = NewFile {
                    storage_target: "hot".into(),
                    object_key: format!("data/1/1/{i}.parquet"),
                    bytes: 10,
                    rows: 2,
                    min_time_ns: i,
                    max_time_ns: i + 1,
                    checksum_crc32c: 0,
                    column_count: 3,
                };
                catalog.commit_flush(partition.id, &file, 1, 2).unwrap()
            })
            .collect();
        let plan = vec![vec![ids[0], ids[1]], vec![ids[2], ids[3]]];
        catalog.plan_compaction(partition.id, &plan, 3).unwrap();
        assert!(
            matches!(catalog.plan_compaction(partition.id, &plan, 3), Err(CatalogError::Conflict(_))),
            "one unfinished job per partition"
        );
        let running = catalog.begin_compaction_attempt(partition.id, 4).unwrap();
        assert_eq!((running.status, running.attempts, running.plan.clone()), (CompactionStatus::Running, 1, plan));
        let merged = NewFile {
            storage_target: "hot".into(),
            object_key: "data/1/1/merged.parquet".into(),
            bytes: 15,
            rows: 4,
            min_time_ns: 0,
            max_time_ns: 2,
            checksum_crc32c: 0,
            column_count: 3,
        };
        let chunk = |index: i64, inputs: &'static [usize]| {
            let inputs: Vec<i64> = inputs.iter().map(|i| ids[*i]).collect();
            (index, inputs)
        };
        let commit = |(index, inputs): (i64, Vec<i64>), file: &NewFile| {
            catalog.commit_compaction_chunk(
                partition.id,
                &CompactedChunk { chunk_index: index, storage_target: "hot", inputs: &inputs, file },
                5,
            )
        };
        // The checkpoint is at chunk 0, not 1; rows must add up; the target must match.
        assert!(matches!(commit(chunk(1, &[0, 1]), &merged), Err(CatalogError::Conflict(_))));
        assert!(matches!(
            commit(chunk(0, &[0, 1]), &NewFile { rows: 5, ..merged.clone() }),
            Err(CatalogError::Conflict(_))
        ));
        let elsewhere = NewFile { storage_target: "warm".into(), ..merged.clone() };
        assert!(matches!(commit(chunk(0, &[0, 1]), &elsewhere), Err(CatalogError::Conflict(_))));
        assert_eq!(catalog.files(partition.id).unwrap().len(), 4, "a refused commit writes nothing");
        commit(chunk(0, &[0, 1]), &merged).unwrap();
        let after = catalog.partition(dataset.id, &bucket, "", 6).unwrap();
        assert_eq!((after.file_count, after.rows, after.bytes), (3, 8, 40 - 20 + 15));
        let checkpoint = catalog.compaction_checkpoint(partition.id).unwrap().unwrap();
        assert_eq!((checkpoint.cursor, checkpoint.completed_chunks, checkpoint.files_merged), (1, 1, 2));
        assert_eq!((checkpoint.bytes_read, checkpoint.bytes_written), (20, 15));

        // A move got to file 2 first: the chunk cannot commit, and is skipped.
        let third = catalog.files(partition.id).unwrap().into_iter().find(|f| f.id == ids[2]).unwrap();
        let moved = MovedFile {
            id: third.id,
            object_key: third.object_key,
            bytes: third.bytes,
            checksum_crc32c: third.checksum_crc32c,
        };
        catalog.commit_move(partition.id, &[moved], "warm", Tier::Hot, 7).unwrap();
        let second = NewFile { object_key: "data/1/1/merged-2.parquet".into(), ..merged.clone() };
        assert!(matches!(commit(chunk(1, &[2, 3]), &second), Err(CatalogError::Conflict(_))));
        assert_eq!(catalog.files(partition.id).unwrap().len(), 3);
        catalog.skip_compaction_chunk(partition.id, 1, 8).unwrap();
        let done = catalog.compaction_checkpoint(partition.id).unwrap().unwrap();
        assert_eq!((done.status, done.skipped_chunks, done.finished_at_ns), (CompactionStatus::Completed, 1, Some(8)));

        // A completed job may be replaced; a crash mid-attempt counts as a failure.
        catalog.plan_compaction(partition.id, &[vec![ids[3], 99]], 9).unwrap();
        catalog.begin_compaction_attempt(partition.id, 10).unwrap();
        assert_eq!(catalog.fail_interrupted_compactions(11).unwrap(), 1);
        let interrupted = catalog.compaction_checkpoint(partition.id).unwrap().unwrap();
        assert_eq!(interrupted.status, CompactionStatus::Failed);
        assert!(interrupted.last_error.unwrap().contains("chunk 0"));
        assert_eq!(catalog.begin_compaction_attempt(partition.id, 12).unwrap().attempts, 2);
        catalog.skip_compaction_chunk(partition.id, 0, 13).unwrap();
        assert_eq!(catalog.prune_compaction_checkpoints(13).unwrap(), 0, "kept for the retention period");
        assert_eq!(catalog.prune_compaction_checkpoints(14).unwrap(), 1);
        assert!(catalog.compaction_checkpoint(partition.id).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
