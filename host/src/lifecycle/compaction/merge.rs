//! Merging one chunk of a compaction job.
//!
//! 1. Check the inputs are all still live on the partition's target
//!    (catalog); if one is not, the chunk is skipped and the checkpoint's
//!    cursor moves past it.
//! 2. Read and verify each input, merge them in time order into one file,
//!    and check the pair assertion: the output holds exactly the inputs'
//!    rows and time range.
//! 3. Write it create-only under a fresh key, read it back and verify it.
//! 4. Commit: the output becomes live, the inputs are tombstoned and the
//!    cursor advances, in one catalog transaction that refuses (writing
//!    nothing) if an input is no longer live.
//!
//! An output that is not committed is deleted again; a crash leaves it to
//! the start-up sweep.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::Lifecycle;
use super::super::archive::decode;
use super::super::error::LifecycleError;
use super::super::off_runtime;
use crate::catalog::{CatalogError, CompactedChunk, FileRecord, NewFile};
use crate::schema::DatasetSchema;
use crate::storage::{ObjectKey, StorageTarget};
use crate::time::now_ns;

/// What merging one chunk needs.
pub(super) struct ChunkJob {
    pub(super) target: Arc<dyn StorageTarget>,
    pub(super) schema: Arc<DatasetSchema>,
    pub(super) dataset_id: i64,
    pub(super) partition_id: i64,
    pub(super) chunk_index: i64,
    pub(super) inputs: Vec<i64>,
    pub(super) row_group_rows: usize,
    pub(super) zstd_level: i32,
}

/// What became of one chunk.
#[derive(Debug)]
pub(super) enum ChunkOutcome {
    /// Merged and committed.
    Merged { files: u64, bytes_read: u64, bytes_written: u64 },
    /// Passed over: an input is no longer live on the target.
    Skipped(String),
}

/// A verified merged file, written and not yet committed.
struct Merged {
    key: ObjectKey,
    file: NewFile,
    bytes_written: u64,
}

impl Lifecycle {
    /// Merges one chunk: its live inputs into one verified file, committed.
    pub(super) async fn merge_chunk(&self, job: ChunkJob) -> Result<ChunkOutcome, LifecycleError> {
        let inputs = match self.live_inputs(&job).await? {
            Ok(inputs) => inputs,
            Err(reason) => return Ok(ChunkOutcome::Skipped(reason)),
        };
        let files = inputs.len() as u64;
        let bytes_read = u64::try_from(inputs.iter().map(|f| f.bytes).sum::<i64>()).unwrap_or(0);
        let job = Arc::new(job);
        let Merged { key, file, bytes_written } = {
            let job = job.clone();
            off_runtime(move || write_merged(&job, &inputs)).await??
        };
        let committed = {
            let job = job.clone();
            self.catalog()
                .call(move |c| {
                    let chunk = CompactedChunk {
                        chunk_index: job.chunk_index,
                        storage_target: job.target.name(),
                        inputs: &job.inputs,
                        file: &file,
                    };
                    c.commit_compaction_chunk(job.partition_id, &chunk, now_ns())
                })
                .await
        };
        if let Err(error) = committed {
            // Never committed, so unreferenced: safe to remove now.
            let target = job.target.clone();
            let _ = off_runtime(move || target.delete(&key)).await;
            return Err(error.into());
        }
        crate::failpoint::hit("compaction.after_commit");
        Ok(ChunkOutcome::Merged { files, bytes_read, bytes_written })
    }

    /// The chunk's input files in time order, or why the chunk is skipped
    /// (an input is no longer live on the target; the skip is recorded).
    async fn live_inputs(&self, job: &ChunkJob) -> Result<Result<Vec<FileRecord>, String>, LifecycleError> {
        let (partition_id, chunk_index, wanted) = (job.partition_id, job.chunk_index, job.inputs.clone());
        let target = job.target.name().to_string();
        let inputs = self
            .catalog()
            .call(move |c| {
                let live: HashMap<i64, FileRecord> = c.files(partition_id)?.into_iter().map(|f| (f.id, f)).collect();
                let mut inputs = Vec::with_capacity(wanted.len());
                for id in &wanted {
                    match live.get(id) {
                        Some(file) if file.storage_target == target => inputs.push(file.clone()),
                        _ => {
                            c.skip_compaction_chunk(partition_id, chunk_index, now_ns())?;
                            return Ok(Err(format!("file {id} is no longer live on {target}")));
                        }
                    }
                }
                inputs.sort_by_key(|f| (f.min_time_ns, f.id));
                Ok::<_, CatalogError>(Ok(inputs))
            })
            .await?;
        Ok(inputs)
    }
}

/// Reads, verifies and merges the inputs, writes the output create-only and
/// verifies it as read back (deleting it if it does not verify). Blocking.
fn write_merged(job: &ChunkJob, inputs: &[FileRecord]) -> Result<Merged, LifecycleError> {
    let mut batches = Vec::new();
    for file in inputs {
        let key = ObjectKey::parse(&file.object_key)?;
        let bytes = job.target.get(&key)?;
        crate::parquet_file::verify(&bytes, file.rows, file.checksum_crc32c).map_err(|source| {
            LifecycleError::InputUnverified { key: key.clone(), target: job.target.name().to_string(), source }
        })?;
        batches.extend(decode(&key, bytes)?);
    }
    let rows: i64 = inputs.iter().map(|f| f.rows).sum();
    let min_time_ns = inputs.iter().map(|f| f.min_time_ns).min().unwrap_or(i64::MIN);
    let max_time_ns = inputs.iter().map(|f| f.max_time_ns).max().unwrap_or(i64::MAX);
    let encoded = crate::parquet_file::encode(&batches, &job.schema, job.row_group_rows, job.zstd_level)
        .map_err(LifecycleError::Merge)?;
    drop(batches);
    // Pair assertion: the merged file holds exactly what the inputs held.
    if (encoded.rows, encoded.min_time_ns, encoded.max_time_ns) != (rows, min_time_ns, max_time_ns) {
        return Err(LifecycleError::MergeMismatch {
            rows: encoded.rows,
            min_time_ns: encoded.min_time_ns,
            max_time_ns: encoded.max_time_ns,
            input_rows: rows,
            input_min_time_ns: min_time_ns,
            input_max_time_ns: max_time_ns,
        });
    }
    let key =
        ObjectKey::data_file(job.dataset_id, job.partition_id, &format!("compacted-{:016x}", rand::random::<u64>()));
    job.target.put(&key, &encoded.bytes)?;
    crate::failpoint::hit("compaction.after_write");
    if let Err(error) = read_back(job, &key, &encoded) {
        // Never committed, so unreferenced: safe to remove now.
        let _ = job.target.delete(&key);
        return Err(error);
    }
    let file = NewFile::encoded(job.target.name(), key.to_string(), &encoded);
    Ok(Merged { key, file, bytes_written: encoded.bytes.len() as u64 })
}

/// Reads the merged file back and verifies it against what was written.
fn read_back(
    job: &ChunkJob,
    key: &ObjectKey,
    encoded: &crate::parquet_file::EncodedFile,
) -> Result<(), LifecycleError> {
    let mut stored = job.target.get(key)?;
    let middle = stored.len() / 2;
    if crate::failpoint::corrupts("compaction.read_back")
        && let Some(byte) = stored.get_mut(middle)
    {
        *byte ^= 0xff;
    }
    if stored.len() != encoded.bytes.len() {
        return Err(LifecycleError::MergedSize {
            key: key.clone(),
            stored: stored.len(),
            written: encoded.bytes.len(),
        });
    }
    crate::parquet_file::verify(&stored, encoded.rows, encoded.checksum_crc32c).map_err(|source| {
        LifecycleError::MergedUnverified { key: key.clone(), target: job.target.name().to_string(), source }
    })
}
