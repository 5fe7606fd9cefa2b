//! Archiving a partition, and restoring an archived one.
//!
//! An archive merges all of a partition's live files, after verifying
//! each, in time order (a streaming k-way merge: each file is sorted by
//! time) into one Parquet file on the archive target (the archived tier's
//! target, or the one the decision names), with the decision's zstd level
//! and row-group size (else the archived tier's encoding, else the archive
//! defaults), and writes a manifest next to it (format `strata-archive-1`:
//! the file's rows, bytes, checksum and time range, and every source file).
//! Both are checked where they landed (the archive's fingerprint and its
//! footer's row count by ranged reads; the manifest's bytes); a failure deletes both (their names are
//! fresh and uncommitted, so nothing refers to them). Then one catalog
//! transaction records the archive and, with `delete_source_after`, makes it
//! the partition's only live file (tier `archived`), tombstoning the rest.
//!
//! A restore copies an archived partition's archive file to a tier (cold by
//! default) through the move protocol ([`super::moves`]). The archive itself
//! stays, and the partition stays read-only.

use std::sync::Arc;

use serde_json::json;

use super::error::LifecycleError;
use super::off_runtime;
use super::{Lifecycle, no_dataset, no_partition};
use crate::catalog::{AuditKind, FileRecord, NewArchive, NewFile, PartitionRecord};
use crate::error::{ErrorCode, Failure};
use crate::facts::ArchiveDecision;
use crate::parquet_file::{EncodedFileInfo, Encoding, ParquetFileError};
use crate::schema::DatasetSchema;
use crate::storage::{Fingerprint, LocalFile, ObjectKey, StagedFile, StorageError, StorageTarget, Targets};
use crate::store::DatasetState;
use crate::tier::Tier;
use crate::time::now_ns;

/// What writing one partition's archive needs.
struct ArchiveJob {
    targets: Arc<Targets>,
    destination: Arc<dyn StorageTarget>,
    schema: Arc<DatasetSchema>,
    dataset_id: i64,
    partition_id: i64,
    row_group_rows: usize,
    zstd_level: i32,
}

impl Lifecycle {
    /// Archives one sealed and flushed partition as `decision` says. Returns
    /// the bytes written.
    pub(super) async fn archive(
        &self,
        dataset: &Arc<DatasetState>,
        record: &PartitionRecord,
        decision: &ArchiveDecision,
    ) -> Result<u64, LifecycleError> {
        // The decision's options, else the archived tier's encoding, else the defaults.
        let defaults = self.arrival_encoding(Tier::Archived).expect("archives always have an encoding");
        let job = ArchiveJob {
            targets: self.targets.clone(),
            destination: self.archive_destination(decision)?,
            schema: dataset.schema(),
            dataset_id: dataset.record.id,
            partition_id: record.id,
            row_group_rows: decision.row_group_rows.map_or(defaults.row_group_rows_max, |r| r as usize),
            zstd_level: decision.compression_level.map_or(defaults.zstd_level, i32::from),
        };
        let partition_id = record.id;
        let files = self.catalog().call(move |c| c.files(partition_id)).await?;
        if files.is_empty() {
            return Err(LifecycleError::NothingToArchive);
        }
        let (archive, bytes) = off_runtime(move || write_archive(&job, &files)).await??;
        let replace_source = decision.delete_source_after;
        self.catalog().call(move |c| c.commit_archive(partition_id, &archive, replace_source, now_ns())).await?;
        crate::failpoint::hit("lifecycle.archive.after_commit");
        Ok(bytes)
    }

    /// The decision's target: "" is the archived tier's target; a name, any
    /// configured target.
    fn archive_destination(&self, decision: &ArchiveDecision) -> Result<Arc<dyn StorageTarget>, LifecycleError> {
        if decision.target.is_empty() {
            return Ok(self.targets.tier(Tier::Archived).clone());
        }
        self.targets.named(&decision.target).cloned().ok_or_else(|| LifecycleError::UnknownArchiveTarget {
            target: decision.target.clone(),
            targets: self.targets.all().map(|t| t.name().to_string()).collect(),
        })
    }

    /// Brings an archived partition back to `tier` (default cold): its
    /// archive file is copied there and verified like any move. The archive
    /// itself stays. The partition stays read-only.
    pub async fn restore(
        &self,
        dataset: &str,
        label: &str,
        key: &str,
        tier: Option<Tier>,
    ) -> Result<serde_json::Value, Failure> {
        let tier = tier.unwrap_or(Tier::Cold);
        if tier == Tier::Archived {
            return Err(Failure::new(ErrorCode::BadRequest, "restore to hot, warm or cold"));
        }
        let state = self.store.dataset(dataset).ok_or_else(|| no_dataset(dataset))?;
        let id = crate::names::partition_label(&state.name, label, key);
        let dataset_id = state.record.id;
        let record = self
            .catalog()
            .call(move |c| c.partitions(dataset_id))
            .await?
            .into_iter()
            .find(|p| p.period_label == label && p.key == key)
            .ok_or_else(|| no_partition(&id))?;
        if record.tier != Tier::Archived {
            return Err(Failure::new(
                ErrorCode::NotArchived,
                format!("partition {id} is {}, not archived; there is nothing to restore", record.tier),
            ));
        }
        let _one_at_a_time = self.running.lock().await;
        let bytes = self
            .move_partition(record.id, tier)
            .await
            .map_err(|e| LifecycleError::Restore { partition: id.clone(), source: Box::new(e) })?;
        let detail = json!({ "tier": tier.as_str(), "bytes_moved": bytes });
        let (name, pid) = (dataset.to_string(), id.clone());
        self.catalog()
            .call(move |c| c.audit(AuditKind::PartitionRestored, Some(&name), Some(&pid), &detail, now_ns()))
            .await?;
        self.count(format!("strata_lifecycle_transitions_total{{from=\"archived\",to=\"{}\"}}", tier.as_str()), 1);
        Ok(json!({ "id": id, "tier": tier.as_str(), "bytes_moved": bytes }))
    }
}

/// Merges a partition's files, in time order, into one Parquet file on
/// the archive target, writes a manifest next to it and verifies both where
/// they landed. Streams: the sources are read in place (local) or staged,
/// merged batch by batch into a staged file, which is put from disk.
/// Blocking. Returns the archive to commit and its size.
fn write_archive(job: &ArchiveJob, files: &[FileRecord]) -> Result<(NewArchive, u64), LifecycleError> {
    let mut files = files.to_vec();
    files.sort_by_key(|f| (f.min_time_ns, f.id));
    let (locals, sources) = stage_sources(job, &files)?;
    let expected_rows: i64 = files.iter().map(|f| f.rows).sum();
    let encode_error = |error: std::io::Error| LifecycleError::ArchiveEncode(error.into());
    let inputs = locals.iter().map(LocalFile::open).collect::<Result<Vec<_>, _>>().map_err(encode_error)?;
    let encoding = Encoding { zstd_level: job.zstd_level, row_group_rows_max: job.row_group_rows };
    let mut out = job.targets.staging().create()?;
    let info = crate::parquet_file::merge(inputs, job.schema.arrow_schema(), &mut out, encoding)
        .map_err(LifecycleError::ArchiveEncode)?;
    let (staged, fingerprint) = out.finish()?;
    drop(locals);
    if info.rows != expected_rows {
        return Err(LifecycleError::ArchiveRows { encoded: info.rows, expected: expected_rows });
    }
    crate::storage::verify_file(staged.path(), info.rows, fingerprint.crc32c).map_err(LifecycleError::ArchiveEncode)?;
    let name = format!("archive-{:016x}", rand::random::<u64>());
    let key = ObjectKey::data_file(job.dataset_id, job.partition_id, &name);
    let manifest_key = ObjectKey::parse(&format!("data/{}/{}/{name}.manifest.json", job.dataset_id, job.partition_id))?;
    let manifest = manifest_json(job, &key, &info, &fingerprint, sources);
    if let Err(error) = put_and_verify(job, &key, &staged, &fingerprint, info.rows, &manifest_key, &manifest) {
        // Both names are fresh and uncommitted, so nothing else refers to them.
        let _ = job.destination.delete(&key);
        let _ = job.destination.delete(&manifest_key);
        return Err(error);
    }
    let file = NewFile::streamed(job.destination.name(), key.to_string(), &info, fingerprint.size, fingerprint.crc32c);
    Ok((NewArchive { file, manifest_key: manifest_key.to_string() }, fingerprint.size))
}

/// Stages and verifies each source file (in place when local); returns
/// them and their manifest entries.
fn stage_sources(
    job: &ArchiveJob,
    files: &[FileRecord],
) -> Result<(Vec<LocalFile>, Vec<serde_json::Value>), LifecycleError> {
    let mut locals = Vec::new();
    let mut sources = Vec::new();
    for file in files {
        let source = job
            .targets
            .named(&file.storage_target)
            .ok_or_else(|| LifecycleError::UnknownTarget { file_id: file.id, target: file.storage_target.clone() })?;
        let key = ObjectKey::parse(&file.object_key)?;
        let local = job.targets.stage(source.as_ref(), &key)?;
        local.verify_parquet(file.rows, file.checksum_crc32c).map_err(|error| LifecycleError::SourceUnverified {
            key: key.clone(),
            target: source.name().to_string(),
            source: error,
        })?;
        locals.push(local);
        sources.push(json!({
            "storage_target": file.storage_target,
            "object_key": file.object_key,
            "rows": file.rows,
            "bytes": file.bytes,
            "checksum_crc32c": format!("{:08x}", file.checksum_crc32c),
        }));
    }
    Ok((locals, sources))
}

/// The manifest written next to an archive.
fn manifest_json(
    job: &ArchiveJob,
    key: &ObjectKey,
    info: &EncodedFileInfo,
    fingerprint: &Fingerprint,
    sources: Vec<serde_json::Value>,
) -> String {
    json!({
        "format": "strata-archive-1",
        "file": {
            "object_key": key.as_str(),
            "rows": info.rows,
            "bytes": fingerprint.size,
            "checksum_crc32c": format!("{:08x}", fingerprint.crc32c),
            "min_time_ns": info.min_time_ns,
            "max_time_ns": info.max_time_ns,
            "zstd_level": job.zstd_level,
            "row_group_rows": job.row_group_rows,
        },
        "sources": sources,
    })
    .to_string()
}

/// Writes the archive (from its staged file) and its manifest, then checks
/// both where they landed: the archive's fingerprint and footer, the
/// manifest's bytes.
fn put_and_verify(
    job: &ArchiveJob,
    key: &ObjectKey,
    staged: &StagedFile,
    fingerprint: &Fingerprint,
    rows: i64,
    manifest_key: &ObjectKey,
    manifest: &str,
) -> Result<(), LifecycleError> {
    let destination = &job.destination;
    destination.put_file(key, staged.path()).map_err(|source| LifecycleError::Write { key: key.clone(), source })?;
    destination
        .put(manifest_key, manifest.as_bytes())
        .map_err(|source| LifecycleError::Write { key: manifest_key.clone(), source })?;
    crate::failpoint::hit("lifecycle.archive.after_write");
    match super::moves::read_back(destination.as_ref(), key, rows, fingerprint) {
        Ok(()) => {}
        Err(LifecycleError::Storage(StorageError::Mismatch { detail, .. })) => {
            return Err(LifecycleError::ArchiveUnverified {
                key: key.clone(),
                target: destination.name().to_string(),
                source: ParquetFileError::Verify(detail),
            });
        }
        Err(error) => return Err(error),
    }
    if destination.get(manifest_key)? != manifest.as_bytes() {
        return Err(LifecycleError::ManifestUnverified {
            key: manifest_key.clone(),
            target: destination.name().to_string(),
        });
    }
    Ok(())
}
