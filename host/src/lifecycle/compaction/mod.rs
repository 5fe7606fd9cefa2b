//! Compaction: merges a partition's small files into larger ones.
//!
//! Host-native and gated by configuration rather than decided by a policy
//! component: it changes neither what a query sees nor where or for how long
//! data is kept, only how many files hold it, and "enough small files" is a
//! count, not a judgement. See ARCHITECTURE.md.
//!
//! A job, one per partition: the plan (`plan.rs`, pure: the small live files sorted by
//! time, grouped into chunks) → checkpoint (`pending`) → an attempt
//! (`running`, attempts + 1) → per chunk, under the lifecycle run lock, the
//! merge (`merge.rs`: read and verify the inputs → merge and encode →
//! create-only put on the partition's target → read back and verify → one
//! catalog transaction: the output becomes live, the inputs are tombstoned,
//! the checkpoint's cursor advances; the last chunk completes the job).
//! Requests come from an operator (`POST /v1/datasets/{ds}/compact`) or
//! from the compactor's scheduled pass; a failed job is retried by the pass
//! only below `max_attempts`, and a shutdown pauses a job between chunks.
//!
//! **Invariant:** a chunk's output is visible iff its inputs are not, and
//! both switch in the commit that advances the checkpoint. A crash before
//! the commit leaves an orphan the start-up sweep removes and a checkpoint
//! still pointing at the chunk, which the next attempt merges again; a crash
//! after it leaves tombstoned inputs the sweeper deletes after
//! `lifecycle.grace_ms`. The commit refuses (writing nothing) when an input
//! is no longer live, so a move or a delete that came first always wins.

mod merge;
mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value as Json, json};

use super::error::LifecycleError;
use super::{Lifecycle, ms_to_ns, no_dataset, no_partition};
use crate::catalog::{AuditKind, CatalogError, CompactionCheckpoint, CompactionStatus, FileRecord, PartitionRecord};
use crate::error::{ErrorCode, Failure};
use crate::names::DatasetName;
use crate::names::partition_label;
use crate::parquet_file::Encoding;
use crate::storage::StorageTarget;
use crate::store::DatasetState;
use crate::sync::Recover as _;
use crate::tier::Tier;
use crate::time::now_ns;
use crate::time::rfc3339;
use merge::{ChunkJob, ChunkOutcome};
use plan::{PlanFile, PlanSettings, plan};

/// What compaction did, or would do, to one partition.
#[derive(Debug, Clone, Serialize)]
pub struct CompactionReport {
    /// The partition's public id.
    pub partition: String,
    /// Its tier.
    pub tier: String,
    /// `completed`, `failed`, `paused` (the server is shutting down; it
    /// resumes on the next start), `planned` (dry run), `resumable` (dry run;
    /// an unfinished job exists), `nothing_to_do`, `exhausted` (failed
    /// `max_attempts` times; waits for an operator), `busy` (another request
    /// is compacting it) or `skipped` (archived).
    pub outcome: &'static str,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Live files before.
    pub files_before: usize,
    /// Live files after.
    pub files_after: usize,
    /// Chunks merged by this request.
    pub chunks_merged: u64,
    /// Chunks passed over by this request (an input was no longer live).
    pub chunks_skipped: u64,
    /// Input files merged by this request.
    pub files_merged: u64,
    /// Bytes of those inputs.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// A dry run's chunks: input files and bytes of each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<Json>,
    /// The partition's checkpoint afterwards.
    pub checkpoint: Option<Json>,
}

impl CompactionReport {
    fn new(partition: String, record: &PartitionRecord) -> CompactionReport {
        let files = usize::try_from(record.file_count).unwrap_or(0);
        CompactionReport {
            partition,
            tier: record.tier.to_string(),
            outcome: "nothing_to_do",
            error: None,
            files_before: files,
            files_after: files,
            chunks_merged: 0,
            chunks_skipped: 0,
            files_merged: 0,
            bytes_read: 0,
            bytes_written: 0,
            plan: Vec::new(),
            checkpoint: None,
        }
    }
}

/// Who asked for the compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The compactor's pass: a failed job is retried only below `max_attempts`.
    Scheduled,
    /// `POST /v1/datasets/{ds}/compact`: retries any failed job; `dry` plans only.
    Operator { dry: bool },
}

/// Marks a partition as being compacted for as long as it lives, so two
/// requests never drive the same job.
struct Claim<'a> {
    claimed: &'a Mutex<HashSet<i64>>,
    partition_id: i64,
}

impl<'a> Claim<'a> {
    fn new(claimed: &'a Mutex<HashSet<i64>>, partition_id: i64) -> Option<Claim<'a>> {
        let granted = claimed.lock_or_recover().insert(partition_id);
        // Only a granted claim exists: dropping one releases the id.
        if granted { Some(Claim { claimed, partition_id }) } else { None }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claimed.lock_or_recover().remove(&self.partition_id);
    }
}

/// A checkpoint as the API shows it.
pub(super) fn checkpoint_json(dataset: &DatasetName, checkpoint: &CompactionCheckpoint) -> Json {
    json!({
        "partition": partition_label(dataset, &checkpoint.period_label, &checkpoint.key),
        "status": checkpoint.status,
        "cursor": checkpoint.cursor,
        "completed_chunks": checkpoint.completed_chunks,
        "skipped_chunks": checkpoint.skipped_chunks,
        "total_chunks": checkpoint.total_chunks,
        "attempts": checkpoint.attempts,
        "last_error": checkpoint.last_error,
        "files_merged": checkpoint.files_merged,
        "bytes_read": checkpoint.bytes_read,
        "bytes_written": checkpoint.bytes_written,
        "started_at": rfc3339(checkpoint.started_at_ns),
        "updated_at": rfc3339(checkpoint.updated_at_ns),
        "finished_at": checkpoint.finished_at_ns.map(rfc3339),
    })
}

/// Prometheus text: compaction jobs per checkpoint status (`counts` as the
/// catalog gives them).
pub(super) fn compaction_metrics(text: &mut String, counts: &[(CompactionStatus, i64)]) {
    use std::fmt::Write;
    let _ = writeln!(
        text,
        "# HELP strata_compaction_jobs Compaction checkpoints per status.\n# TYPE strata_compaction_jobs gauge"
    );
    for status in ["pending", "running", "completed", "failed"] {
        let count = counts.iter().find(|(s, _)| s.as_str() == status).map_or(0, |(_, n)| *n);
        let _ = writeln!(text, "strata_compaction_jobs{{status=\"{status}\"}} {count}");
    }
}

/// Where a job stands before its chunks run.
enum Prepared {
    /// The job is planned or resumed: its chunks run now.
    Run,
    /// The report says all there is to say (nothing to do, planned, …).
    Done,
}

impl Lifecycle {
    /// Whether a dataset may be compacted: its API setting, else
    /// `[datasets.<name>] compaction`, else `lifecycle.compaction.enabled`.
    fn compaction_enabled(&self, dataset: &str) -> bool {
        self.store.compaction_enabled(dataset)
    }

    /// `POST /v1/datasets/{ds}/compact`: compacts one partition
    /// (`(label, key)`), or every partition of the dataset with an unfinished
    /// job or at least `min_files` files. With `dry`, plans and changes
    /// nothing.
    pub async fn compact(&self, dataset: &str, partition: Option<(&str, &str)>, dry: bool) -> Result<Json, Failure> {
        let state = self.store.dataset(dataset).ok_or_else(|| no_dataset(dataset))?;
        if !self.compaction_enabled(dataset) {
            return Err(Failure::new(
                ErrorCode::CompactionDisabled,
                format!(
                    "compaction is disabled for dataset {dataset} ([datasets.{dataset}] compaction or lifecycle.compaction.enabled)"
                ),
            ));
        }
        let (records, checkpoints) = self.partitions_and_checkpoints(state.record.id).await?;
        let candidates: Vec<PartitionRecord> = match partition {
            Some((label, key)) => {
                let record = records
                    .iter()
                    .find(|p| p.period_label == label && p.key == key)
                    .ok_or_else(|| no_partition(&partition_label(&state.name, label, key)))?;
                vec![record.clone()]
            }
            None => self.candidates(records, &checkpoints),
        };
        let mut reports = Vec::with_capacity(candidates.len());
        for record in &candidates {
            reports.push(self.compact_partition(&state, record, Trigger::Operator { dry }, None).await);
        }
        Ok(json!({ "dataset": dataset, "dry": dry, "partitions": reports }))
    }

    /// A dataset's partitions and compaction checkpoints.
    async fn partitions_and_checkpoints(
        &self,
        dataset_id: i64,
    ) -> Result<(Vec<PartitionRecord>, Vec<CompactionCheckpoint>), CatalogError> {
        self.catalog().call(move |c| Ok((c.partitions(dataset_id)?, c.compaction_checkpoints(dataset_id)?))).await
    }

    /// Partitions worth a look: not archived, with an unfinished job or at
    /// least `min_files` live files.
    fn candidates(&self, records: Vec<PartitionRecord>, checkpoints: &[CompactionCheckpoint]) -> Vec<PartitionRecord> {
        let unfinished: HashSet<i64> =
            checkpoints.iter().filter(|c| c.status != CompactionStatus::Completed).map(|c| c.partition_id).collect();
        let min_files = i64::try_from(self.config.lifecycle.compaction.min_files).unwrap_or(i64::MAX);
        records
            .into_iter()
            .filter(|p| p.tier != Tier::Archived)
            .filter(|p| unfinished.contains(&p.id) || p.file_count >= min_files)
            .collect()
    }

    async fn compact_partition(
        &self,
        dataset: &Arc<DatasetState>,
        record: &PartitionRecord,
        trigger: Trigger,
        shutdown: Option<&tokio::sync::watch::Receiver<bool>>,
    ) -> CompactionReport {
        let id = partition_label(&dataset.name, &record.period_label, &record.key);
        let mut report = CompactionReport::new(id.clone(), record);
        let tier = record.tier;
        if tier == Tier::Archived {
            report.outcome = "skipped";
            report.error = Some(format!("{tier} partitions are not compacted: their file is the archive"));
            return report;
        }
        let Some(_claim) = Claim::new(&self.compacting, record.id) else {
            report.outcome = "busy";
            report.error = Some("another request is compacting this partition".into());
            return report;
        };
        if let Err(error) = self.drive(dataset, record, tier, trigger, shutdown, &mut report).await {
            tracing::warn!(partition = %id, %error, "compaction failed");
            report.outcome = "failed";
            report.error = Some(error.to_string());
        }
        let partition_id = record.id;
        let after = self
            .catalog()
            .call(move |c| {
                Ok::<_, CatalogError>((c.compaction_checkpoint(partition_id)?, c.files(partition_id)?.len()))
            })
            .await;
        if let Ok((checkpoint, files)) = after {
            report.checkpoint = checkpoint.as_ref().map(|c| checkpoint_json(&dataset.name, c));
            report.files_after = files;
        }
        if matches!(report.outcome, "completed" | "failed" | "paused") {
            self.audit_compaction(dataset, id, &report, trigger).await;
        }
        report
    }

    /// Records a job's `compaction` audit event; a failure is only logged.
    async fn audit_compaction(
        &self,
        dataset: &Arc<DatasetState>,
        partition: String,
        report: &CompactionReport,
        trigger: Trigger,
    ) {
        let detail = json!({
            "outcome": report.outcome,
            "error": report.error,
            "chunks_merged": report.chunks_merged,
            "chunks_skipped": report.chunks_skipped,
            "files_merged": report.files_merged,
            "bytes_read": report.bytes_read,
            "bytes_written": report.bytes_written,
            "files_before": report.files_before,
            "files_after": report.files_after,
            "scheduled": trigger == Trigger::Scheduled,
            "checkpoint": report.checkpoint,
        });
        let name = dataset.name.to_string();
        let audited = self
            .catalog()
            .call(move |c| c.audit(AuditKind::Compaction, Some(&name), Some(&partition), &detail, now_ns()))
            .await;
        if let Err(error) = audited {
            tracing::warn!(%error, "recording a compaction audit event failed");
        }
    }

    /// Plans or resumes the partition's job and runs its remaining chunks.
    async fn drive(
        &self,
        dataset: &Arc<DatasetState>,
        record: &PartitionRecord,
        tier: Tier,
        trigger: Trigger,
        shutdown: Option<&tokio::sync::watch::Receiver<bool>>,
        report: &mut CompactionReport,
    ) -> Result<(), LifecycleError> {
        let partition_id = record.id;
        let (checkpoint, files) = self
            .catalog()
            .call(move |c| Ok::<_, CatalogError>((c.compaction_checkpoint(partition_id)?, c.files(partition_id)?)))
            .await?;
        report.files_before = files.len();
        report.files_after = files.len();
        let target = self.targets.tier(tier).clone();
        if let Prepared::Done = self.prepare(partition_id, checkpoint, &files, target.name(), trigger, report).await? {
            return Ok(());
        }
        let checkpoint = self
            .catalog()
            .call(move |c| {
                let checkpoint = c.begin_compaction_attempt(partition_id, now_ns());
                crate::failpoint::hit("compaction.after_checkpoint");
                checkpoint
            })
            .await?;
        let cursor = usize::try_from(checkpoint.cursor).unwrap_or(0);
        for (index, inputs) in checkpoint.plan.iter().enumerate().skip(cursor) {
            if shutdown.is_some_and(|s| *s.borrow()) {
                self.catalog().call(move |c| c.pause_compaction(partition_id, now_ns())).await?;
                report.outcome = "paused";
                return Ok(());
            }
            let job = self.chunk_job(dataset, partition_id, &target, tier, index, inputs.clone());
            self.run_chunk(job, index, report).await?;
        }
        if checkpoint.cursor >= checkpoint.total_chunks {
            // Resumed after its last chunk was committed: only the status is left.
            self.catalog().call(move |c| c.finish_compaction(partition_id, now_ns())).await?;
        }
        self.count("strata_compaction_jobs_completed_total".into(), 1);
        report.outcome = "completed";
        Ok(())
    }

    /// Decides whether the job's chunks run now: an unfinished job resumes
    /// (unless the pass has given up on it, or this is a dry run); otherwise
    /// the files are planned and, unless nothing would merge or this is a
    /// dry run, the plan becomes the partition's checkpoint.
    async fn prepare(
        &self,
        partition_id: i64,
        checkpoint: Option<CompactionCheckpoint>,
        files: &[FileRecord],
        target: &str,
        trigger: Trigger,
        report: &mut CompactionReport,
    ) -> Result<Prepared, LifecycleError> {
        let settings = &self.config.lifecycle.compaction;
        if let Some(unfinished) = checkpoint.filter(|c| c.status != CompactionStatus::Completed) {
            return Ok(match trigger {
                Trigger::Scheduled
                    if unfinished.status == CompactionStatus::Failed
                        && unfinished.attempts >= i64::from(settings.max_attempts) =>
                {
                    report.outcome = "exhausted";
                    report.error = unfinished.last_error;
                    Prepared::Done
                }
                Trigger::Operator { dry: true } => {
                    report.outcome = "resumable";
                    Prepared::Done
                }
                _ => Prepared::Run,
            });
        }
        let candidates: Vec<PlanFile> = files
            .iter()
            .filter(|f| f.storage_target == target)
            .map(|f| PlanFile { id: f.id, bytes: u64::try_from(f.bytes).unwrap_or(0), min_time_ns: f.min_time_ns })
            .collect();
        let chunks = plan(&candidates, &PlanSettings::from(settings));
        if chunks.is_empty() {
            report.outcome = "nothing_to_do";
            return Ok(Prepared::Done);
        }
        if trigger == (Trigger::Operator { dry: true }) {
            let bytes_of: HashMap<i64, u64> = candidates.iter().map(|f| (f.id, f.bytes)).collect();
            report.outcome = "planned";
            report.plan = chunks
                .iter()
                .map(|chunk| json!({ "files": chunk.len(), "bytes": chunk.iter().map(|id| bytes_of[id]).sum::<u64>() }))
                .collect();
            return Ok(Prepared::Done);
        }
        self.catalog().call(move |c| c.plan_compaction(partition_id, &chunks, now_ns())).await?;
        Ok(Prepared::Run)
    }

    /// What merging chunk `index` needs. Merged files are encoded as the
    /// tier encodes arrivals (cold: zstd 9, say), or as flushes are when the
    /// tier sets nothing.
    fn chunk_job(
        &self,
        dataset: &Arc<DatasetState>,
        partition_id: i64,
        target: &Arc<dyn StorageTarget>,
        tier: Tier,
        index: usize,
        inputs: Vec<i64>,
    ) -> ChunkJob {
        let encoding = self.targets.encoding(tier).unwrap_or(Encoding {
            zstd_level: self.config.ingest.zstd_level,
            row_group_rows_max: self.config.ingest.row_group_rows_max,
        });
        ChunkJob {
            targets: self.targets.clone(),
            target: target.clone(),
            schema: dataset.schema(),
            dataset_id: dataset.record.id,
            partition_id,
            chunk_index: index as i64,
            inputs,
            row_group_rows: encoding.row_group_rows_max,
            zstd_level: encoding.zstd_level,
        }
    }

    /// Merges one chunk under the run lock and reports it; a failure is
    /// recorded in the checkpoint and ends the attempt.
    async fn run_chunk(
        &self,
        job: ChunkJob,
        index: usize,
        report: &mut CompactionReport,
    ) -> Result<(), LifecycleError> {
        let partition_id = job.partition_id;
        // One chunk at a time under the run lock: a move or delete of this
        // partition waits for the chunk, or the chunk for it.
        let _one_at_a_time = self.running.lock().await;
        match self.merge_chunk(job).await {
            Ok(ChunkOutcome::Merged { files, bytes_read, bytes_written }) => {
                self.count("strata_compactions_total".into(), 1);
                self.count("strata_compaction_files_merged_total".into(), files);
                self.count("strata_compaction_bytes_read_total".into(), bytes_read);
                self.count("strata_compaction_bytes_written_total".into(), bytes_written);
                report.chunks_merged += 1;
                report.files_merged += files;
                report.bytes_read += bytes_read;
                report.bytes_written += bytes_written;
                Ok(())
            }
            Ok(ChunkOutcome::Skipped(reason)) => {
                tracing::info!(partition = %report.partition, chunk = index, %reason, "compaction chunk skipped");
                report.chunks_skipped += 1;
                Ok(())
            }
            Err(error) => {
                self.count("strata_compaction_failures_total".into(), 1);
                let error = LifecycleError::Chunk { index, source: Box::new(error) };
                let message = error.to_string();
                self.catalog().call(move |c| c.fail_compaction(partition_id, &message, now_ns())).await?;
                Err(error)
            }
        }
    }

    /// One scheduled pass over every dataset compaction is enabled for, then
    /// the pruning of completed checkpoints past
    /// `lifecycle.compaction.checkpoint_retention_ms`. Stops between chunks
    /// when `shutdown` fires.
    async fn compaction_pass(&self, shutdown: &tokio::sync::watch::Receiver<bool>) -> Vec<CompactionReport> {
        let mut reports = Vec::new();
        for dataset in self.store.datasets() {
            if !self.compaction_enabled(dataset.name.as_str()) {
                continue;
            }
            let (records, checkpoints) = match self.partitions_and_checkpoints(dataset.record.id).await {
                Ok(listed) => listed,
                Err(error) => {
                    tracing::warn!(dataset = %dataset.name, %error, "compaction pass: listing partitions failed");
                    continue;
                }
            };
            for record in self.candidates(records, &checkpoints) {
                if *shutdown.borrow() {
                    return reports;
                }
                reports.push(self.compact_partition(&dataset, &record, Trigger::Scheduled, Some(shutdown)).await);
            }
        }
        let retention_ns = ms_to_ns(self.config.lifecycle.compaction.checkpoint_retention_ms);
        match self.catalog().call(move |c| c.prune_compaction_checkpoints(now_ns().saturating_sub(retention_ns))).await
        {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "completed compaction checkpoints pruned"),
            Err(error) => tracing::warn!(%error, "pruning compaction checkpoints failed"),
        }
        reports
    }

    /// Runs a compaction pass every `lifecycle.compaction.interval_ms` (the
    /// first one interval after start-up) until `shutdown` fires. Off when
    /// the interval is 0 or `lifecycle.scheduler` is false.
    pub async fn run_compactor(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let every_ms = self.config.lifecycle.compaction.interval_ms;
        if every_ms == 0 || !self.config.lifecycle.scheduler {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            for report in self.compaction_pass(&shutdown).await {
                match report.outcome {
                    "completed" | "paused" => tracing::info!(
                        partition = %report.partition,
                        outcome = report.outcome,
                        chunks = report.chunks_merged,
                        files_before = report.files_before,
                        files_after = report.files_after,
                        "scheduled compaction"
                    ),
                    "failed" => tracing::warn!(
                        partition = %report.partition,
                        error = report.error.as_deref().unwrap_or(""),
                        "scheduled compaction failed"
                    ),
                    _ => {}
                }
            }
        }
    }

    /// `GET /v1/datasets/{ds}/compaction`: whether compaction is on for the
    /// dataset, the settings, and every checkpoint.
    pub async fn compaction_status(&self, dataset: &str) -> Result<Json, Failure> {
        let state = self.store.dataset(dataset).ok_or_else(|| no_dataset(dataset))?;
        let dataset_id = state.record.id;
        let checkpoints = self.catalog().call(move |c| c.compaction_checkpoints(dataset_id)).await?;
        let settings = &self.config.lifecycle.compaction;
        Ok(json!({
            "dataset": dataset,
            "enabled": self.compaction_enabled(dataset),
            "scheduled": self.config.lifecycle.scheduler && settings.interval_ms > 0,
            "settings": {
                "interval_ms": settings.interval_ms,
                "min_files": settings.min_files,
                "small_file_bytes": settings.small_file_bytes,
                "target_file_bytes": settings.target_file_bytes,
                "chunk_files": settings.chunk_files,
                "max_attempts": settings.max_attempts,
                "checkpoint_retention_ms": settings.checkpoint_retention_ms,
            },
            "checkpoints": checkpoints.iter().map(|c| checkpoint_json(&state.name, c)).collect::<Vec<_>>(),
        }))
    }
}
