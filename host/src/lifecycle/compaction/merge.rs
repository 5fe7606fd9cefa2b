//! Merging one chunk of a compaction job.
//!
//! 1. Check the inputs are all still live on the partition's target
//!    (catalog); if one is not, the chunk is skipped and the checkpoint's
//!    cursor moves past it.
//! 2. Verify each input (read in place on a local target, else staged),
//!    merge them in time order into one staged file — a streaming k-way
//!    merge, each input being sorted by time — and check the pair
//!    assertion: the output holds exactly the inputs' rows and time range.
//! 3. Put it create-only under a fresh key and check it where it landed
//!    (fingerprint, footer row count by ranged reads).
//! 4. Commit: the output becomes live, the inputs are tombstoned and the
//!    cursor advances, in one catalog transaction that refuses (writing
//!    nothing) if an input is no longer live.
//!
//! An output that is not committed is deleted again; a crash leaves it to
//! the start-up sweep.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::Lifecycle;
use super::super::error::LifecycleError;
use super::super::off_runtime;
use crate::catalog::{CatalogError, CompactedChunk, FileRecord, NewFile};
use crate::parquet_file::{Encoding, ParquetFileError};
use crate::schema::DatasetSchema;
use crate::storage::{Fingerprint, FingerprintWriter, LocalFile, ObjectKey, StorageError, StorageTarget, Targets};
use crate::time::now_ns;

/// What merging one chunk needs.
pub(super) struct ChunkJob {
    pub(super) targets: Arc<Targets>,
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

/// Verifies the inputs (in place when local, else staged), merges them in
/// time order into a staged file (streaming), puts it create-only and
/// checks it where it landed (deleting it if it does not verify). Blocking.
fn write_merged(job: &ChunkJob, inputs: &[FileRecord]) -> Result<Merged, LifecycleError> {
    let mut locals = Vec::with_capacity(inputs.len());
    for file in inputs {
        let key = ObjectKey::parse(&file.object_key)?;
        let local = job.targets.stage(job.target.as_ref(), &key)?;
        local.verify_parquet(file.rows, file.checksum_crc32c).map_err(|source| LifecycleError::InputUnverified {
            key: key.clone(),
            target: job.target.name().to_string(),
            source,
        })?;
        locals.push(local);
    }
    let rows: i64 = inputs.iter().map(|f| f.rows).sum();
    let min_time_ns = inputs.iter().map(|f| f.min_time_ns).min().unwrap_or(i64::MIN);
    let max_time_ns = inputs.iter().map(|f| f.max_time_ns).max().unwrap_or(i64::MAX);
    let files = locals
        .iter()
        .map(LocalFile::open)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LifecycleError::Merge(e.into()))?;
    let encoding = Encoding { zstd_level: job.zstd_level, row_group_rows_max: job.row_group_rows };
    let mut out = job.targets.staging().create()?;
    let info = crate::parquet_file::merge(files, job.schema.arrow_schema(), &mut out, encoding)
        .map_err(LifecycleError::Merge)?;
    let (staged, fingerprint) = out.finish()?;
    drop(locals);
    // Pair assertion: the merged file holds exactly what the inputs held.
    if (info.rows, info.min_time_ns, info.max_time_ns) != (rows, min_time_ns, max_time_ns) {
        return Err(LifecycleError::MergeMismatch {
            rows: info.rows,
            min_time_ns: info.min_time_ns,
            max_time_ns: info.max_time_ns,
            input_rows: rows,
            input_min_time_ns: min_time_ns,
            input_max_time_ns: max_time_ns,
        });
    }
    let key =
        ObjectKey::data_file(job.dataset_id, job.partition_id, &format!("compacted-{:016x}", rand::random::<u64>()));
    job.target.put_file(&key, staged.path())?;
    crate::failpoint::hit("compaction.after_write");
    if let Err(error) = read_back(job, &key, info.rows, &fingerprint) {
        // Never committed, so unreferenced: safe to remove now.
        let _ = job.target.delete(&key);
        return Err(error);
    }
    let file = NewFile::streamed(job.target.name(), key.to_string(), &info, fingerprint.size, fingerprint.crc32c);
    Ok(Merged { key, file, bytes_written: fingerprint.size })
}

/// Checks the merged file where it landed: its fingerprint, then its
/// footer's row count by ranged reads. With the fail point
/// `compaction.read_back=corrupt` the read-back sees its middle byte flipped.
fn read_back(job: &ChunkJob, key: &ObjectKey, rows: i64, written: &Fingerprint) -> Result<(), LifecycleError> {
    let unverified = |detail: String| LifecycleError::MergedUnverified {
        key: key.clone(),
        target: job.target.name().to_string(),
        source: ParquetFileError::Verify(detail),
    };
    let verified = if crate::failpoint::corrupts("compaction.read_back") {
        let mut flipped = FlipMiddle { hasher: FingerprintWriter::default(), at: 0, middle: written.size / 2 };
        job.target.get_to(key, &mut flipped)?;
        let stored = flipped.hasher.finish();
        if stored.size != written.size {
            return Err(LifecycleError::MergedSize {
                key: key.clone(),
                stored: stored.size as usize,
                written: written.size as usize,
            });
        }
        match stored.crc32c == written.crc32c {
            true => Ok(()),
            false => Err(unverified(format!("checksum {:08x}, expected {:08x}", stored.crc32c, written.crc32c))),
        }
    } else {
        super::super::moves::read_back(job.target.as_ref(), key, rows, written)
    };
    match verified {
        Err(LifecycleError::Storage(StorageError::Mismatch { detail, .. })) => Err(unverified(detail)),
        other => other,
    }
}

/// Fingerprints what passes through with the byte at `middle` flipped.
struct FlipMiddle {
    hasher: FingerprintWriter,
    at: u64,
    middle: u64,
}

impl std::io::Write for FlipMiddle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut chunk = buf.to_vec();
        if (self.at..self.at + buf.len() as u64).contains(&self.middle) {
            chunk[(self.middle - self.at) as usize] ^= 0xff;
        }
        self.hasher.update(&chunk);
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnDef, ColumnKind};
    use crate::storage::LocalDirectory;
    use crate::tier::Tier;
    use arrow::array::{Float64Array, TimestampNanosecondArray};
    use arrow::record_batch::RecordBatch;

    #[test]
    fn a_chunk_merges_interleaved_inputs_into_one_file_sorted_by_time_with_every_row() {
        let root = std::env::temp_dir().join(format!("strata-merge-{:016x}", rand::random::<u64>()));
        let hot: Arc<dyn StorageTarget> = Arc::new(LocalDirectory::open("hot", &root).unwrap());
        let tiers = [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archived].map(|tier| (tier, "hot", None));
        let targets = Arc::new(Targets::new(vec![hot.clone()], tiers).unwrap());
        let schema = Arc::new(
            DatasetSchema::empty("time")
                .evolve(&[ColumnDef { name: "v".into(), kind: ColumnKind::Float }])
                .unwrap()
                .unwrap(),
        );
        let mut inputs = Vec::new();
        let mut expected: Vec<(i64, u64)> = Vec::new();
        for (id, (start, step)) in [(0i64, 3i64), (1, 3), (2, 7)].into_iter().enumerate() {
            let times: Vec<i64> = (0..30_000).map(|i| start + i * step).collect();
            let values: Vec<f64> = times.iter().map(|_| rand::random::<f64>()).collect();
            expected.extend(times.iter().zip(&values).map(|(t, v)| (*t, v.to_bits())));
            let batch = RecordBatch::try_new(
                schema.arrow_schema(),
                vec![Arc::new(TimestampNanosecondArray::from(times.clone())), Arc::new(Float64Array::from(values))],
            )
            .unwrap();
            let encoded = crate::parquet_file::encode(&[batch], &schema, 8_192, 1).unwrap();
            let key = ObjectKey::data_file(1, 2, &format!("{id:020}-{:016x}", rand::random::<u64>()));
            hot.put(&key, &encoded.bytes).unwrap();
            inputs.push(FileRecord {
                id: id as i64,
                partition_id: 2,
                storage_target: "hot".into(),
                object_key: key.to_string(),
                bytes: encoded.bytes.len() as i64,
                rows: encoded.rows,
                min_time_ns: encoded.min_time_ns,
                max_time_ns: encoded.max_time_ns,
                checksum_crc32c: encoded.checksum_crc32c,
                column_count: Some(2),
            });
        }
        let job = ChunkJob {
            targets: targets.clone(),
            target: hot.clone(),
            schema,
            dataset_id: 1,
            partition_id: 2,
            chunk_index: 0,
            inputs: vec![0, 1, 2],
            row_group_rows: 50_000,
            zstd_level: 3,
        };
        let merged = write_merged(&job, &inputs).unwrap();
        assert_eq!((merged.file.rows, merged.file.min_time_ns), (90_000, 0));
        let bytes = hot.get(&merged.key).unwrap();
        assert_eq!((bytes.len() as u64, crc32c::crc32c(&bytes)), (merged.bytes_written, merged.file.checksum_crc32c));
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        let mut rows: Vec<(i64, u64)> = Vec::new();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let times = batch.column(0).as_any().downcast_ref::<TimestampNanosecondArray>().unwrap();
            let values = batch.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
            rows.extend(times.values().iter().zip(values.values().iter()).map(|(t, v)| (*t, v.to_bits())));
        }
        assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0), "sorted by time");
        rows.sort_unstable();
        expected.sort_unstable();
        assert_eq!(rows, expected, "every input row, once");
        assert_eq!(std::fs::read_dir(targets.staging().dir()).unwrap().count(), 0, "nothing stays staged");
        std::fs::remove_dir_all(root).unwrap();
    }
}
