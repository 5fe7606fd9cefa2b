//! The move protocol: a partition changes tier without a moment in which a
//! query could miss a row.
//!
//! 1. List the partition's live files (catalog).
//! 2. Copy each file to the tier's target, create-only — byte for byte, or
//!    re-encoded under a new key when the tier sets an encoding — after
//!    verifying the source (checksum, footer, rows). Without an encoding a
//!    file already on the target stays as it is.
//! 3. Read each copy back and verify it; a copy this attempt created that
//!    does not verify is deleted at once (anything else is left to the
//!    start-up orphan sweep).
//! 4. Commit: the file rows point at the copies and the old copies are
//!    tombstoned, in one catalog transaction per batch of up to
//!    `lifecycle.move_commit_batch` partitions, each partition in its own
//!    savepoint, so a partition whose files changed meanwhile fails alone.
//!
//! Copies stream: a file is read in place on a local target or downloaded
//! into the staging directory, re-encoded (if at all) into a staged file,
//! and put from that file, so a copy's memory is bounded buffers plus one
//! row group whatever the file's size. Up to `lifecycle.move_concurrency`
//! partitions copy at once, and the partitions copying together weigh at
//! most `lifecycle.move_bytes_in_flight_max` bytes ([`CopyBudget`]): the
//! bound on what they stage on local disk (downloads, re-encoded files),
//! and so on their memory too. A crash before the commit leaves unreferenced copies the
//! start-up sweep removes; a crash after it leaves tombstoned sources the
//! sweeper deletes after the grace period.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::Lifecycle;
use super::error::LifecycleError;
use super::execute::StepDone;
use super::off_runtime;
use crate::catalog::{CatalogError, FileRecord, MoveCommit, MovedFile};
use crate::parquet_file::{Encoding, ParquetFileError};
use crate::storage::{Fingerprint, LocalFile, ObjectKey, StagedFile, StorageError, StorageTarget, Targets};
use crate::sync::Recover as _;
use crate::tier::Tier;
use crate::time::now_ns;

/// One partition to move, with its size as the catalog knows it.
pub(super) struct MoveJob {
    pub(super) partition_id: i64,
    pub(super) tier: Tier,
    pub(super) bytes: u64,
}

/// A partition's files to copy (a [`MoveJob`] once its files are listed).
struct CopyJob {
    tier: Tier,
    bytes: u64,
    files: Vec<FileRecord>,
}

/// A partition's verified copies, not yet committed, and the bytes written.
struct Copied {
    copies: Vec<MovedFile>,
    bytes: u64,
}

type Outcome<T> = Result<T, LifecycleError>;

impl Lifecycle {
    /// Moves many partitions, each to its tier: copies and verifies them
    /// (several at a time), then commits every verified move in one catalog
    /// transaction. One outcome per job, in order.
    pub(super) async fn move_batch(&self, jobs: Vec<MoveJob>) -> Vec<Outcome<StepDone>> {
        let started = Instant::now();
        let copied = self.copy_batch(&jobs).await;
        let commits: Vec<MoveCommit> = jobs
            .iter()
            .zip(&copied)
            .filter_map(|(job, copied)| {
                let copied = copied.as_ref().ok()?;
                Some(MoveCommit {
                    partition_id: job.partition_id,
                    copies: copied.copies.clone(),
                    target: self.targets.tier(job.tier).name().to_string(),
                    tier: job.tier,
                })
            })
            .collect();
        let mut committed = self.commit_batch(commits).await.into_iter();
        crate::failpoint::hit("lifecycle.move.after_commit");
        let elapsed = started.elapsed();
        copied
            .into_iter()
            .map(|copied| {
                let Copied { bytes, .. } = copied?;
                committed.next().expect("one commit outcome per copy")?;
                Ok(StepDone { bytes, elapsed })
            })
            .collect()
    }

    /// Lists each job's files, then copies and verifies every partition off
    /// the runtime. One outcome per job, in order.
    async fn copy_batch(&self, jobs: &[MoveJob]) -> Vec<Outcome<Copied>> {
        let ids: Vec<i64> = jobs.iter().map(|j| j.partition_id).collect();
        let listed = self
            .catalog()
            .call(move |c| Ok::<_, CatalogError>(ids.iter().map(|id| c.files(*id)).collect::<Vec<_>>()))
            .await;
        let listed = match listed {
            Ok(listed) => listed,
            Err(error) => return jobs.iter().map(|_| Err(LifecycleError::Task(error.to_string()))).collect(),
        };
        let mut outcomes: Vec<Option<Outcome<Copied>>> = jobs.iter().map(|_| None).collect();
        let mut pending = Vec::new();
        let mut copy_jobs = Vec::new();
        for (i, (job, files)) in jobs.iter().zip(listed).enumerate() {
            match files {
                Ok(files) => {
                    pending.push(i);
                    copy_jobs.push(CopyJob { tier: job.tier, bytes: job.bytes, files });
                }
                Err(error) => outcomes[i] = Some(Err(error.into())),
            }
        }
        let settings = &self.config.lifecycle;
        let budget = CopyBudget::new(settings.move_concurrency, settings.move_bytes_in_flight_max);
        let targets = self.targets.clone();
        let copied = off_runtime(move || copy_concurrently(&targets, &copy_jobs, &budget)).await;
        let copied: Vec<Outcome<Copied>> = match copied {
            Ok(copied) => copied,
            Err(error) => pending.iter().map(|_| Err(LifecycleError::Task(error.to_string()))).collect(),
        };
        for (i, outcome) in pending.into_iter().zip(copied) {
            outcomes[i] = Some(outcome);
        }
        outcomes.into_iter().map(|o| o.expect("every job has an outcome")).collect()
    }

    /// Commits verified moves in one catalog transaction. One outcome per
    /// commit: a conflict fails its partition alone, any other catalog error
    /// every partition of the batch.
    async fn commit_batch(&self, commits: Vec<MoveCommit>) -> Vec<Outcome<()>> {
        let count = commits.len();
        match self.catalog().call(move |c| c.commit_moves(&commits, now_ns())).await {
            Ok(outcomes) => outcomes.into_iter().map(|o| o.map_err(LifecycleError::from)).collect(),
            Err(error) => {
                let shared = Arc::new(error);
                (0..count).map(|_| Err(LifecycleError::CommitMoves(shared.clone()))).collect()
            }
        }
    }

    /// Moves one partition to `tier` ([`copy_partition`], then its own
    /// commit). Returns the bytes written.
    pub(super) async fn move_partition(&self, partition_id: i64, tier: Tier) -> Outcome<u64> {
        let files = self.catalog().call(move |c| c.files(partition_id)).await?;
        let targets = self.targets.clone();
        let Copied { copies, bytes } = off_runtime(move || copy_partition(&targets, &files, tier)).await??;
        let target = self.targets.tier(tier).name().to_string();
        self.catalog().call(move |c| c.commit_move(partition_id, &copies, &target, tier, now_ns())).await?;
        crate::failpoint::hit("lifecycle.move.after_commit");
        Ok(bytes)
    }
}

/// Copies the jobs' partitions on up to `budget.workers` threads. Blocking.
/// One outcome per job, in order.
fn copy_concurrently(targets: &Targets, jobs: &[CopyJob], budget: &CopyBudget) -> Vec<Outcome<Copied>> {
    let next = AtomicUsize::new(0);
    let copied: Vec<Mutex<Option<Outcome<Copied>>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..budget.workers.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    // A copy stages at most its partition's bytes.
                    let held = budget.acquire(job.bytes);
                    let result = copy_partition(targets, &job.files, job.tier);
                    budget.release(held);
                    *copied[i].lock_or_recover() = Some(result);
                }
            });
        }
    });
    copied
        .into_iter()
        .map(|slot| slot.into_inner().unwrap_or_else(|p| p.into_inner()).expect("every job ran"))
        .collect()
}

/// How many copies run at once, and how many bytes of partitions they may
/// be copying together (each stages at most its partition's bytes on
/// local disk and holds bounded buffers in memory). A copy larger than the
/// whole budget runs alone.
struct CopyBudget {
    workers: usize,
    total: u64,
    free: Mutex<u64>,
    freed: Condvar,
}

impl CopyBudget {
    fn new(workers: usize, bytes: u64) -> CopyBudget {
        CopyBudget { workers, total: bytes, free: Mutex::new(bytes), freed: Condvar::new() }
    }

    /// Waits until `bytes` (at most the whole budget) are free and takes
    /// them; returns what was taken.
    fn acquire(&self, bytes: u64) -> u64 {
        let want = bytes.min(self.total);
        let mut free = self.free.lock_or_recover();
        while *free < want {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= want;
        want
    }

    fn release(&self, bytes: u64) {
        *self.free.lock_or_recover() += bytes;
        self.freed.notify_all();
    }
}

/// Copies each of a partition's live `files` to `tier`'s target and
/// verifies each copy as read back. Without an encoding, files already on
/// the target stay as they are; with one, every file is re-encoded. Nothing
/// is committed. Blocking.
fn copy_partition(targets: &Targets, files: &[FileRecord], tier: Tier) -> Outcome<Copied> {
    let destination = targets.tier(tier);
    let encoding = targets.encoding(tier);
    let mut copies = Vec::new();
    let mut bytes = 0u64;
    for file in files.iter().filter(|f| encoding.is_some() || f.storage_target != destination.name()) {
        let copy = copy_file(targets, file, tier)?;
        bytes += copy.bytes as u64;
        copies.push(copy);
    }
    Ok(Copied { copies, bytes })
}

/// Copies one file to `tier`'s target (re-encoded if the tier says so) and
/// verifies the copy, streaming: the source is read in place (local) or
/// downloaded into the staging directory, verified, re-encoded into a
/// staged file if the tier says so, put from that file, then checked where
/// it landed (fingerprint, and the footer's row count by ranged reads).
/// Blocking.
fn copy_file(targets: &Targets, file: &FileRecord, tier: Tier) -> Outcome<MovedFile> {
    let destination = targets.tier(tier);
    let source = targets
        .named(&file.storage_target)
        .ok_or_else(|| LifecycleError::UnknownTarget { file_id: file.id, target: file.storage_target.clone() })?;
    let key = ObjectKey::parse(&file.object_key)?;
    let local = targets.stage(source.as_ref(), &key)?;
    let source_fingerprint = local.verify_parquet(file.rows, file.checksum_crc32c).map_err(|source_error| {
        LifecycleError::SourceUnverified { key: key.clone(), target: source.name().to_string(), source: source_error }
    })?;
    let reencoded = match targets.encoding(tier) {
        None => None,
        Some(encoding) => {
            Some(reencode(targets, &local, file.rows, encoding).map_err(|source| LifecycleError::Reencode {
                key: key.clone(),
                tier: tier.as_str(),
                source,
            })?)
        }
    };
    let (copy_key, path, fingerprint) = match &reencoded {
        None => (key, local.path(), source_fingerprint),
        Some((staged, fingerprint)) => (key.new_version(), staged.path(), *fingerprint),
    };
    let created = match destination.put_file(&copy_key, path) {
        Ok(()) => true,
        // A byte copy from an attempt that crashed before its commit is
        // kept only if it verifies below.
        Err(StorageError::AlreadyExists(_)) => false,
        Err(source) => {
            return Err(LifecycleError::Copy { key: copy_key, target: destination.name().to_string(), source });
        }
    };
    crate::failpoint::hit("lifecycle.move.after_copy");
    match read_back(destination.as_ref(), &copy_key, file.rows, &fingerprint) {
        Ok(()) => Ok(MovedFile {
            id: file.id,
            object_key: copy_key.to_string(),
            bytes: fingerprint.size as i64,
            checksum_crc32c: fingerprint.crc32c,
        }),
        Err(error) => {
            // Only a copy this attempt created is certainly unreferenced;
            // anything else is left to the start-up orphan sweep.
            if created {
                let _ = destination.delete(&copy_key);
            }
            let target = destination.name().to_string();
            Err(LifecycleError::CopyUnverified { key: copy_key, target, source: Box::new(error) })
        }
    }
}

/// Re-encodes a verified local Parquet file of `rows` rows into a staged
/// file, streaming, and checks the pair assertion: the new file decodes to
/// the rows the old one held. Returns the staged file and its fingerprint.
pub(super) fn reencode(
    targets: &Targets,
    local: &LocalFile,
    rows: i64,
    encoding: Encoding,
) -> Result<(StagedFile, Fingerprint), ParquetFileError> {
    let staging_error = |error: StorageError| ParquetFileError::Io(std::io::Error::other(error.to_string()));
    let mut out = targets.staging().create().map_err(staging_error)?;
    crate::parquet_file::reencode_file(local.open()?, rows, &mut out, encoding)?;
    let (staged, fingerprint) = out.finish().map_err(staging_error)?;
    // Pair assertion: what the new file decodes to is what the old one held.
    if !crate::parquet_file::same_rows(local.open()?, staged.open()?)? {
        return Err(ParquetFileError::Verify("the re-encoded file's rows differ from the original's".into()));
    }
    Ok((staged, fingerprint))
}

/// Checks a copy where it landed: its size and checksum (as the target
/// proves them) and its footer's row count, read by ranged reads.
pub(super) fn read_back(target: &dyn StorageTarget, key: &ObjectKey, rows: i64, expected: &Fingerprint) -> Outcome<()> {
    Ok(target.verify_parquet(key, expected, rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnDef, ColumnKind, DatasetSchema};
    use crate::storage::{InMemory, LocalDirectory};
    use arrow::array::{Float64Array, TimestampNanosecondArray};
    use arrow::record_batch::RecordBatch;
    use std::time::Duration;

    /// A flushed file of `rows` rows of incompressible floats, as the catalog records it.
    fn big_file(hot: &dyn StorageTarget, rows: i64) -> (FileRecord, RecordBatch) {
        let schema = DatasetSchema::empty("time")
            .evolve(&[ColumnDef { name: "v".into(), kind: ColumnKind::Float }])
            .unwrap()
            .unwrap();
        let batch = RecordBatch::try_new(
            schema.arrow_schema(),
            vec![
                Arc::new(TimestampNanosecondArray::from((0..rows).collect::<Vec<_>>())),
                Arc::new(Float64Array::from((0..rows).map(|_| rand::random::<f64>()).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let encoded = crate::parquet_file::encode(std::slice::from_ref(&batch), &schema, 1_000_000, 1).unwrap();
        let key = ObjectKey::data_file(1, 2, &format!("{:020}-{:016x}", 7, rand::random::<u64>()));
        hot.put(&key, &encoded.bytes).unwrap();
        let record = FileRecord {
            id: 11,
            partition_id: 2,
            storage_target: hot.name().to_string(),
            object_key: key.to_string(),
            bytes: encoded.bytes.len() as i64,
            rows,
            min_time_ns: 0,
            max_time_ns: rows - 1,
            checksum_crc32c: encoded.checksum_crc32c,
            column_count: Some(2),
        };
        (record, batch)
    }

    fn rows_of(target: &dyn StorageTarget, key: &str) -> RecordBatch {
        let bytes = target.get(&ObjectKey::parse(key).unwrap()).unwrap();
        let builder =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        // Without the file's key-value metadata (the time convention).
        let schema =
            std::sync::Arc::new(builder.schema().as_ref().clone().with_metadata(std::collections::HashMap::new()));
        let batches: Vec<RecordBatch> = builder.build().unwrap().collect::<Result<_, _>>().unwrap();
        let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        RecordBatch::try_new(schema, batch.columns().to_vec()).unwrap()
    }

    #[test]
    fn a_file_larger_than_the_copy_buffers_moves_re_encoded_through_staging() {
        let root = std::env::temp_dir().join(format!("strata-moves-{:016x}", rand::random::<u64>()));
        let hot: Arc<dyn StorageTarget> = Arc::new(LocalDirectory::open("hot", &root.join("hot")).unwrap());
        let warm: Arc<dyn StorageTarget> = Arc::new(LocalDirectory::open("warm", &root.join("warm")).unwrap());
        // No local paths: sources there are downloaded into staging.
        let cold: Arc<dyn StorageTarget> = Arc::new(InMemory::new("cold"));
        let encoding = Some(Encoding { zstd_level: 3, row_group_rows_max: 100_000 });
        let targets = Targets::new(
            vec![hot.clone(), warm.clone(), cold.clone()],
            [
                (Tier::Hot, "hot", None),
                (Tier::Warm, "warm", encoding),
                (Tier::Cold, "cold", encoding),
                (Tier::Archived, "cold", None),
            ],
        )
        .unwrap();
        let rows = 600_000;
        let (file, batch) = big_file(hot.as_ref(), rows);
        assert!(file.bytes > 4 << 20, "{} bytes: larger than every copy buffer", file.bytes);

        // Local → local, re-encoded: read in place, staged once, put from disk.
        let to_warm = copy_partition(&targets, std::slice::from_ref(&file), Tier::Warm).unwrap();
        let copy = &to_warm.copies[0];
        assert_ne!(copy.object_key, file.object_key, "a re-encoded copy gets a new key");
        assert_eq!(rows_of(warm.as_ref(), &copy.object_key), batch);
        assert_eq!(fs_count(targets.staging().dir()), 0, "nothing stays staged");

        // Local → memory (no local path), and back out of it to a local target.
        let warm_file = FileRecord {
            storage_target: "warm".into(),
            object_key: copy.object_key.clone(),
            bytes: copy.bytes,
            checksum_crc32c: copy.checksum_crc32c,
            ..file.clone()
        };
        let to_cold = copy_partition(&targets, &[warm_file], Tier::Cold).unwrap();
        let cold_key = &to_cold.copies[0].object_key;
        assert_eq!(rows_of(cold.as_ref(), cold_key), batch);
        let cold_file = FileRecord {
            storage_target: "cold".into(),
            object_key: cold_key.clone(),
            bytes: to_cold.copies[0].bytes,
            checksum_crc32c: to_cold.copies[0].checksum_crc32c,
            ..file.clone()
        };
        let back = copy_partition(&targets, std::slice::from_ref(&cold_file), Tier::Warm).unwrap();
        assert_eq!(rows_of(warm.as_ref(), &back.copies[0].object_key), batch);
        assert_eq!(fs_count(targets.staging().dir()), 0, "the download was removed");

        // A source that does not match its catalog row is refused before any copy.
        let wrong = FileRecord { checksum_crc32c: cold_file.checksum_crc32c ^ 1, ..cold_file };
        let error = copy_partition(&targets, &[wrong], Tier::Warm).err().unwrap().to_string();
        assert!(error.contains("checksum"), "{error}");
        std::fs::remove_dir_all(root).unwrap();
    }

    fn fs_count(dir: &std::path::Path) -> usize {
        crate::storage::LocalDirectory::open("count", dir).unwrap().list("").unwrap().len()
    }

    #[test]
    fn the_copy_budget_bounds_bytes_in_flight_and_lets_a_large_copy_run_alone() {
        let budget = Arc::new(CopyBudget::new(4, 100));
        assert_eq!(budget.acquire(250), 100, "a copy larger than the budget takes all of it");
        let (sender, receiver) = std::sync::mpsc::channel();
        let waiting = {
            let budget = budget.clone();
            std::thread::spawn(move || sender.send(budget.acquire(10)).unwrap())
        };
        assert!(receiver.recv_timeout(Duration::from_millis(100)).is_err(), "nothing is free until the release");
        budget.release(100);
        assert_eq!(receiver.recv_timeout(Duration::from_secs(10)).unwrap(), 10);
        waiting.join().unwrap();
        assert_eq!(budget.acquire(90), 90, "the rest is free");
    }
}
