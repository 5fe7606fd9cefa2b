//! Compaction: merges a partition's small files into larger ones.
//!
//! Host-native and gated by configuration rather than decided by a policy
//! component: it changes neither what a query sees nor where or for how long
//! data is kept, only how many files hold it, and "enough small files" is a
//! count, not a judgement. See ARCHITECTURE.md.
//!
//! A job, one per partition: [`plan`] (pure: the small live files sorted by
//! time, grouped into chunks) → checkpoint (`pending`) → an attempt
//! (`running`, attempts + 1) → per chunk, under the lifecycle run lock: read
//! and verify the inputs → merge and encode → create-only put on the
//! partition's target → read back and verify → one catalog transaction (the
//! output becomes live, the inputs are tombstoned, the checkpoint's cursor
//! advances; the last chunk completes the job).
//!
//! **Invariant:** a chunk's output is visible iff its inputs are not, and
//! both switch in the commit that advances the checkpoint. A crash before
//! the commit leaves an orphan the start-up sweep removes and a checkpoint
//! still pointing at the chunk, which the next attempt merges again; a crash
//! after it leaves tombstoned inputs the sweeper deletes after
//! `lifecycle.grace_ms`. The commit refuses (writing nothing) when an input
//! is no longer live, so a move or a delete that came first always wins.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value as Json, json};

use super::{Lifecycle, blocking, ms_to_ns};
use crate::catalog::{
    AuditKind, Catalog, CompactedChunk, CompactionCheckpoint, CompactionStatus, NewFile, PartitionRecord,
};
use crate::config::CompactionConfig;
use crate::error::{ErrorCode, Failure};
use crate::names::DatasetName;
use crate::names::partition_label;
use crate::schema::DatasetSchema;
use crate::storage::{ObjectKey, StorageTarget};
use crate::store::DatasetState;
use crate::tier::Tier;
use crate::time::now_ns;
use crate::time::rfc3339;

/// A live file as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanFile {
    /// Catalog id.
    pub id: i64,
    /// Size in bytes.
    pub bytes: u64,
    /// Earliest row time, ns.
    pub min_time_ns: i64,
}

/// What the planner takes from `[lifecycle.compaction]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    /// Plan only when at least this many files are small.
    pub min_files: usize,
    /// Files below this size are small, in bytes.
    pub small_file_bytes: u64,
    /// A chunk's inputs add up to at most this, in bytes.
    pub target_file_bytes: u64,
    /// A chunk merges at most this many files.
    pub chunk_files: usize,
}

impl From<&CompactionConfig> for PlanSettings {
    fn from(config: &CompactionConfig) -> PlanSettings {
        PlanSettings {
            min_files: config.min_files,
            small_file_bytes: config.small_file_bytes,
            target_file_bytes: config.target_file_bytes,
            chunk_files: config.chunk_files,
        }
    }
}

/// Plans a compaction job: the chunks, each the ids of the files it merges
/// into one. Only small files take part, and only when there are at least
/// `min_files` of them. They are taken in time order (so each output covers
/// a narrow time range and prunes well) and split into as few chunks as
/// `chunk_files` allows, of nearly equal size, so no lone file is left over
/// (unless chunks are pairs: then an odd file out waits for the next job);
/// a chunk also ends before its inputs would pass `target_file_bytes`. A
/// chunk of one file would merge nothing and is dropped. Pure.
pub fn plan(files: &[PlanFile], settings: &PlanSettings) -> Vec<Vec<i64>> {
    let mut small: Vec<PlanFile> = files.iter().copied().filter(|f| f.bytes < settings.small_file_bytes).collect();
    if small.len() < settings.min_files.max(2) {
        return Vec::new();
    }
    small.sort_by_key(|f| (f.min_time_ns, f.id));
    // n files in k chunks: the first n % k chunks take one file more.
    let chunk_count = small.len().div_ceil(settings.chunk_files.max(2));
    let (base, longer) = (small.len() / chunk_count, small.len() % chunk_count);
    let files_in = |chunk: usize| base + usize::from(chunk < longer);
    let mut chunks = Vec::new();
    let mut chunk_number = 0;
    let mut current: Vec<i64> = Vec::new();
    let mut current_bytes = 0u64;
    for file in small {
        let full = current.len() >= files_in(chunk_number)
            || current_bytes.saturating_add(file.bytes) > settings.target_file_bytes;
        if !current.is_empty() && full {
            if current.len() >= 2 {
                chunks.push(std::mem::take(&mut current));
            }
            current.clear();
            current_bytes = 0;
            chunk_number += 1;
        }
        current.push(file.id);
        current_bytes = current_bytes.saturating_add(file.bytes);
    }
    if current.len() >= 2 {
        chunks.push(current);
    }
    chunks
}

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
        let granted = claimed.lock().unwrap_or_else(|p| p.into_inner()).insert(partition_id);
        // Only a granted claim exists: dropping one releases the id.
        if granted { Some(Claim { claimed, partition_id }) } else { None }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.partition_id);
    }
}

/// A checkpoint as the API shows it.
pub fn checkpoint_json(dataset: &DatasetName, checkpoint: &CompactionCheckpoint) -> Json {
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

fn text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

impl Lifecycle {
    /// Whether a dataset may be compacted: `[datasets.<name>] compaction`,
    /// else `lifecycle.compaction.enabled`.
    pub fn compaction_enabled(&self, dataset: &str) -> bool {
        self.config.datasets.get(dataset).and_then(|d| d.compaction).unwrap_or(self.config.lifecycle.compaction.enabled)
    }

    /// `POST /v1/datasets/{ds}/compact`: compacts one partition
    /// (`(label, key)`), or every partition of the dataset with an unfinished
    /// job or at least `min_files` files. With `dry`, plans and changes
    /// nothing.
    pub async fn compact(&self, dataset: &str, partition: Option<(&str, &str)>, dry: bool) -> Result<Json, Failure> {
        let state = self
            .store
            .dataset(dataset)
            .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no dataset {dataset}")))?;
        if !self.compaction_enabled(dataset) {
            return Err(Failure::new(
                ErrorCode::CompactionDisabled,
                format!(
                    "compaction is disabled for dataset {dataset} ([datasets.{dataset}] compaction or lifecycle.compaction.enabled)"
                ),
            ));
        }
        let catalog = self.store.catalog().clone();
        let dataset_id = state.record.id;
        let (records, checkpoints) = blocking(move || -> Result<_, crate::catalog::CatalogError> {
            Ok((catalog.partitions(dataset_id)?, catalog.compaction_checkpoints(dataset_id)?))
        })
        .await??;
        let candidates: Vec<PartitionRecord> = match partition {
            Some((label, key)) => {
                let record = records.iter().find(|p| p.period_label == label && p.key == key).ok_or_else(|| {
                    Failure::new(
                        ErrorCode::NotFound,
                        format!("no partition {}", partition_label(&state.name, label, key)),
                    )
                })?;
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
            report.error = Some(error);
        }
        let catalog = self.store.catalog().clone();
        let partition_id = record.id;
        if let Ok(Ok((checkpoint, files))) = blocking(move || -> Result<_, crate::catalog::CatalogError> {
            Ok((catalog.compaction_checkpoint(partition_id)?, catalog.files(partition_id)?.len()))
        })
        .await
        {
            report.checkpoint = checkpoint.as_ref().map(|c| checkpoint_json(&dataset.name, c));
            report.files_after = files;
        }
        if matches!(report.outcome, "completed" | "failed" | "paused") {
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
            let catalog = self.store.catalog().clone();
            let name = dataset.name.to_string();
            let audited =
                blocking(move || catalog.audit(AuditKind::Compaction, Some(&name), Some(&id), &detail, now_ns())).await;
            if let Ok(Err(error)) = audited {
                tracing::warn!(%error, "recording a compaction audit event failed");
            }
        }
        report
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
    ) -> Result<(), String> {
        let settings = &self.config.lifecycle.compaction;
        let catalog = self.store.catalog().clone();
        let partition_id = record.id;
        let (checkpoint, files) = blocking(move || -> Result<_, crate::catalog::CatalogError> {
            Ok((catalog.compaction_checkpoint(partition_id)?, catalog.files(partition_id)?))
        })
        .await
        .map_err(text)?
        .map_err(text)?;
        report.files_before = files.len();
        report.files_after = files.len();
        let target = self.targets.tier(tier).clone();
        // Merged files are encoded as the tier encodes arrivals (cold: zstd
        // 9, say), or as flushes are when the tier sets nothing.
        let encoding = self.targets.encoding(tier).unwrap_or(crate::parquet_file::Encoding {
            zstd_level: self.config.ingest.zstd_level,
            row_group_rows_max: self.config.ingest.row_group_rows_max,
        });
        match checkpoint.filter(|c| c.status != CompactionStatus::Completed) {
            Some(unfinished) => match trigger {
                Trigger::Scheduled
                    if unfinished.status == CompactionStatus::Failed
                        && unfinished.attempts >= i64::from(settings.max_attempts) =>
                {
                    report.outcome = "exhausted";
                    report.error = unfinished.last_error;
                    return Ok(());
                }
                Trigger::Operator { dry: true } => {
                    report.outcome = "resumable";
                    return Ok(());
                }
                _ => {}
            },
            None => {
                let candidates: Vec<PlanFile> = files
                    .iter()
                    .filter(|f| f.storage_target == target.name())
                    .map(|f| PlanFile {
                        id: f.id,
                        bytes: u64::try_from(f.bytes).unwrap_or(0),
                        min_time_ns: f.min_time_ns,
                    })
                    .collect();
                let chunks = plan(&candidates, &PlanSettings::from(settings));
                if chunks.is_empty() {
                    report.outcome = "nothing_to_do";
                    return Ok(());
                }
                if trigger == (Trigger::Operator { dry: true }) {
                    let bytes_of: HashMap<i64, u64> = candidates.iter().map(|f| (f.id, f.bytes)).collect();
                    report.outcome = "planned";
                    report.plan = chunks
                        .iter()
                        .map(|chunk| {
                            json!({ "files": chunk.len(), "bytes": chunk.iter().map(|id| bytes_of[id]).sum::<u64>() })
                        })
                        .collect();
                    return Ok(());
                }
                let catalog = self.store.catalog().clone();
                blocking(move || catalog.plan_compaction(partition_id, &chunks, now_ns()))
                    .await
                    .map_err(text)?
                    .map_err(text)?;
            }
        }

        let catalog = self.store.catalog().clone();
        let checkpoint = blocking(move || {
            let checkpoint = catalog.begin_compaction_attempt(partition_id, now_ns());
            crate::failpoint::hit("compaction.after_checkpoint");
            checkpoint
        })
        .await
        .map_err(text)?
        .map_err(text)?;
        let schema = dataset.schema();
        for (index, inputs) in checkpoint.plan.iter().enumerate().skip(usize::try_from(checkpoint.cursor).unwrap_or(0))
        {
            if shutdown.is_some_and(|s| *s.borrow()) {
                let catalog = self.store.catalog().clone();
                blocking(move || catalog.pause_compaction(partition_id, now_ns()))
                    .await
                    .map_err(text)?
                    .map_err(text)?;
                report.outcome = "paused";
                return Ok(());
            }
            // One chunk at a time under the run lock: a move or delete of
            // this partition waits for the chunk, or the chunk for it.
            let _one_at_a_time = self.running.lock().await;
            let job = ChunkJob {
                catalog: self.store.catalog().clone(),
                target: target.clone(),
                schema: schema.clone(),
                dataset_id: dataset.record.id,
                partition_id,
                chunk_index: index as i64,
                inputs: inputs.clone(),
                row_group_rows: encoding.row_group_rows_max,
                zstd_level: encoding.zstd_level,
            };
            match blocking(move || merge_chunk(&job)).await.map_err(text)? {
                Ok(ChunkOutcome::Merged { files, bytes_read, bytes_written }) => {
                    self.count("strata_compactions_total".into(), 1);
                    self.count("strata_compaction_files_merged_total".into(), files);
                    self.count("strata_compaction_bytes_read_total".into(), bytes_read);
                    self.count("strata_compaction_bytes_written_total".into(), bytes_written);
                    report.chunks_merged += 1;
                    report.files_merged += files;
                    report.bytes_read += bytes_read;
                    report.bytes_written += bytes_written;
                }
                Ok(ChunkOutcome::Skipped(reason)) => {
                    tracing::info!(partition = %report.partition, chunk = index, %reason, "compaction chunk skipped");
                    report.chunks_skipped += 1;
                }
                Err(error) => {
                    self.count("strata_compaction_failures_total".into(), 1);
                    let catalog = self.store.catalog().clone();
                    let message = format!("chunk {index}: {error}");
                    let recorded = message.clone();
                    blocking(move || catalog.fail_compaction(partition_id, &recorded, now_ns()))
                        .await
                        .map_err(text)?
                        .map_err(text)?;
                    return Err(message);
                }
            }
        }
        if checkpoint.cursor >= checkpoint.total_chunks {
            // Resumed after its last chunk was committed: only the status is left.
            let catalog = self.store.catalog().clone();
            blocking(move || catalog.finish_compaction(partition_id, now_ns())).await.map_err(text)?.map_err(text)?;
        }
        self.count("strata_compaction_jobs_completed_total".into(), 1);
        report.outcome = "completed";
        Ok(())
    }

    /// One scheduled pass over every dataset compaction is enabled for, then
    /// the pruning of completed checkpoints past
    /// `lifecycle.compaction.checkpoint_retention_ms`. Stops between chunks
    /// when `shutdown` fires.
    pub async fn compaction_pass(&self, shutdown: &tokio::sync::watch::Receiver<bool>) -> Vec<CompactionReport> {
        let mut reports = Vec::new();
        for dataset in self.store.datasets() {
            if !self.compaction_enabled(dataset.name.as_str()) {
                continue;
            }
            let catalog = self.store.catalog().clone();
            let dataset_id = dataset.record.id;
            let listed = blocking(move || -> Result<_, crate::catalog::CatalogError> {
                Ok((catalog.partitions(dataset_id)?, catalog.compaction_checkpoints(dataset_id)?))
            })
            .await;
            let (records, checkpoints) = match listed {
                Ok(Ok(listed)) => listed,
                Ok(Err(error)) => {
                    tracing::warn!(dataset = %dataset.name, %error, "compaction pass: listing partitions failed");
                    continue;
                }
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
        let catalog = self.store.catalog().clone();
        match blocking(move || catalog.prune_compaction_checkpoints(now_ns().saturating_sub(retention_ns))).await {
            Ok(Ok(0)) => {}
            Ok(Ok(pruned)) => tracing::info!(pruned, "completed compaction checkpoints pruned"),
            Ok(Err(error)) => tracing::warn!(%error, "pruning compaction checkpoints failed"),
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
    /// dataset, the settings, and every checkpoint. Blocking.
    pub fn compaction_status(&self, dataset: &str) -> Result<Json, Failure> {
        let state = self
            .store
            .dataset(dataset)
            .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no dataset {dataset}")))?;
        let checkpoints = self.store.catalog().compaction_checkpoints(state.record.id)?;
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

    /// Prometheus text: compaction jobs per checkpoint status. Blocking.
    pub(super) fn compaction_metrics(&self, text: &mut String) {
        use std::fmt::Write;
        if let Ok(counts) = self.store.catalog().compaction_status_counts() {
            let _ = writeln!(
                text,
                "# HELP strata_compaction_jobs Compaction checkpoints per status.\n# TYPE strata_compaction_jobs gauge"
            );
            for status in ["pending", "running", "completed", "failed"] {
                let count = counts.iter().find(|(s, _)| s.as_str() == status).map_or(0, |(_, n)| *n);
                let _ = writeln!(text, "strata_compaction_jobs{{status=\"{status}\"}} {count}");
            }
        }
    }
}

/// What merging one chunk needs.
struct ChunkJob {
    catalog: Arc<Catalog>,
    target: Arc<dyn StorageTarget>,
    schema: Arc<DatasetSchema>,
    dataset_id: i64,
    partition_id: i64,
    chunk_index: i64,
    inputs: Vec<i64>,
    row_group_rows: usize,
    zstd_level: i32,
}

/// What became of one chunk.
#[derive(Debug)]
enum ChunkOutcome {
    /// Merged and committed.
    Merged { files: u64, bytes_read: u64, bytes_written: u64 },
    /// Passed over: an input is no longer live on the target.
    Skipped(String),
}

/// Merges one chunk: reads and verifies its inputs, encodes them as one
/// file, writes it create-only, reads it back and verifies it, then commits.
/// An output that is not committed is deleted again (a crash leaves it to
/// the start-up sweep). Blocking.
fn merge_chunk(job: &ChunkJob) -> Result<ChunkOutcome, String> {
    let live: HashMap<i64, crate::catalog::FileRecord> =
        job.catalog.files(job.partition_id).map_err(text)?.into_iter().map(|f| (f.id, f)).collect();
    let mut inputs = Vec::with_capacity(job.inputs.len());
    for id in &job.inputs {
        match live.get(id) {
            Some(file) if file.storage_target == job.target.name() => inputs.push(file.clone()),
            _ => {
                job.catalog.skip_compaction_chunk(job.partition_id, job.chunk_index, now_ns()).map_err(text)?;
                return Ok(ChunkOutcome::Skipped(format!("file {id} is no longer live on {}", job.target.name())));
            }
        }
    }
    inputs.sort_by_key(|f| (f.min_time_ns, f.id));
    let mut batches = Vec::new();
    for file in &inputs {
        let key = ObjectKey::parse(&file.object_key).map_err(text)?;
        let bytes = job.target.get(&key).map_err(text)?;
        crate::parquet_file::verify(&bytes, file.rows, file.checksum_crc32c)
            .map_err(|e| format!("input {key} on {}: {e}", job.target.name()))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .and_then(|b| b.build())
            .map_err(|e| format!("reading {key}: {e}"))?;
        for batch in reader {
            batches.push(batch.map_err(|e| format!("reading {key}: {e}"))?);
        }
    }
    let rows: i64 = inputs.iter().map(|f| f.rows).sum();
    let bytes_read: i64 = inputs.iter().map(|f| f.bytes).sum();
    let min_time_ns = inputs.iter().map(|f| f.min_time_ns).min().unwrap_or(i64::MIN);
    let max_time_ns = inputs.iter().map(|f| f.max_time_ns).max().unwrap_or(i64::MAX);
    let encoded = crate::parquet_file::encode(&batches, &job.schema, job.row_group_rows, job.zstd_level)
        .map_err(|e| format!("merging: {e}"))?;
    drop(batches);
    // Pair assertion: the merged file holds exactly what the inputs held.
    if (encoded.rows, encoded.min_time_ns, encoded.max_time_ns) != (rows, min_time_ns, max_time_ns) {
        return Err(format!(
            "merged {} rows over [{}, {}], the inputs hold {rows} over [{min_time_ns}, {max_time_ns}]",
            encoded.rows, encoded.min_time_ns, encoded.max_time_ns
        ));
    }
    let key =
        ObjectKey::data_file(job.dataset_id, job.partition_id, &format!("compacted-{:016x}", rand::random::<u64>()));
    job.target.put(&key, &encoded.bytes).map_err(text)?;
    crate::failpoint::hit("compaction.after_write");
    let committed = (|| -> Result<(), String> {
        let mut stored = job.target.get(&key).map_err(text)?;
        let middle = stored.len() / 2;
        if crate::failpoint::corrupts("compaction.read_back")
            && let Some(byte) = stored.get_mut(middle)
        {
            *byte ^= 0xff;
        }
        if stored.len() != encoded.bytes.len() {
            return Err(format!("{key} holds {} bytes, {} were written", stored.len(), encoded.bytes.len()));
        }
        crate::parquet_file::verify(&stored, encoded.rows, encoded.checksum_crc32c)
            .map_err(|e| format!("{key} on {} does not verify: {e}", job.target.name()))?;
        let file = NewFile::encoded(job.target.name(), key.to_string(), &encoded);
        let chunk = CompactedChunk {
            chunk_index: job.chunk_index,
            storage_target: job.target.name(),
            inputs: &job.inputs,
            file: &file,
        };
        job.catalog.commit_compaction_chunk(job.partition_id, &chunk, now_ns()).map_err(text)?;
        Ok(())
    })();
    if let Err(error) = committed {
        // Never committed, so unreferenced: safe to remove now.
        let _ = job.target.delete(&key);
        return Err(error);
    }
    crate::failpoint::hit("compaction.after_commit");
    Ok(ChunkOutcome::Merged {
        files: inputs.len() as u64,
        bytes_read: u64::try_from(bytes_read).unwrap_or(0),
        bytes_written: encoded.bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: PlanSettings =
        PlanSettings { min_files: 4, small_file_bytes: 100, target_file_bytes: 1_000, chunk_files: 4 };

    /// Files with ids 1..=n, `bytes` each, the earliest time descending with
    /// the id so that time order and id order differ.
    fn files(n: i64, bytes: u64) -> Vec<PlanFile> {
        (1..=n).map(|id| PlanFile { id, bytes, min_time_ns: 1_000 - id }).collect()
    }

    #[test]
    fn planning_merges_small_files_in_time_order_in_balanced_chunks() {
        /// Name, files, settings, the expected chunks.
        type Case = (&'static str, Vec<PlanFile>, PlanSettings, Vec<Vec<i64>>);
        let cases: &[Case] = &[
            ("too few small files", files(3, 10), SETTINGS, vec![]),
            ("exactly min_files", files(4, 10), SETTINGS, vec![vec![4, 3, 2, 1]]),
            // 10 files, 4 per chunk at most: three chunks of 4, 3, 3 rather than 4, 4, 2.
            ("balanced", files(10, 10), SETTINGS, vec![vec![10, 9, 8, 7], vec![6, 5, 4], vec![3, 2, 1]]),
            // 5 files, 4 per chunk at most: 3 + 2, never 4 + a lone file.
            ("no lone file", files(5, 10), SETTINGS, vec![vec![5, 4, 3], vec![2, 1]]),
            (
                "large files stay out",
                vec![
                    PlanFile { id: 1, bytes: 10, min_time_ns: 1 },
                    PlanFile { id: 2, bytes: 100, min_time_ns: 2 },
                    PlanFile { id: 3, bytes: 10, min_time_ns: 3 },
                    PlanFile { id: 4, bytes: 5_000, min_time_ns: 4 },
                    PlanFile { id: 5, bytes: 10, min_time_ns: 5 },
                    PlanFile { id: 6, bytes: 10, min_time_ns: 6 },
                ],
                SETTINGS,
                vec![vec![1, 3, 5, 6]],
            ),
            (
                "large files do not count towards min_files",
                vec![
                    PlanFile { id: 1, bytes: 10, min_time_ns: 1 },
                    PlanFile { id: 2, bytes: 500, min_time_ns: 2 },
                    PlanFile { id: 3, bytes: 10, min_time_ns: 3 },
                    PlanFile { id: 4, bytes: 500, min_time_ns: 4 },
                ],
                SETTINGS,
                vec![],
            ),
            // 90 + 90 + 90 > 250: a chunk ends before passing target_file_bytes.
            (
                "byte budget",
                files(4, 90),
                PlanSettings { target_file_bytes: 250, ..SETTINGS },
                vec![vec![4, 3], vec![2, 1]],
            ),
            // Every pair is over budget: nothing would merge.
            ("no pair fits", files(4, 90), PlanSettings { target_file_bytes: 100, ..SETTINGS }, vec![]),
            (
                "equal times fall back to the id",
                (1..=4).map(|id| PlanFile { id, bytes: 1, min_time_ns: 7 }).collect(),
                SETTINGS,
                vec![vec![1, 2, 3, 4]],
            ),
        ];
        for (name, input, settings, expected) in cases {
            assert_eq!(&plan(input, settings), expected, "{name}");
        }
    }

    #[test]
    fn every_small_file_is_planned_at_most_once_and_chunks_respect_their_limits() {
        for n in 2..80 {
            for chunk_files in 2..9 {
                let settings =
                    PlanSettings { min_files: 2, small_file_bytes: 100, target_file_bytes: 1_000, chunk_files };
                let chunks = plan(&files(n, 10), &settings);
                let planned: Vec<i64> = chunks.iter().flatten().copied().collect();
                let unique: HashSet<i64> = planned.iter().copied().collect();
                assert_eq!(planned.len(), unique.len(), "n={n} chunk_files={chunk_files}");
                // Pairs only (chunk_files = 2) leave an odd file out for the next job.
                let left_out = if chunk_files == 2 { n % 2 } else { 0 };
                assert_eq!(planned.len() as i64, n - left_out, "every file is merged: n={n} chunk_files={chunk_files}");
                assert!(chunks.iter().all(|c| (2..=chunk_files).contains(&c.len())), "{chunks:?}");
                let (shortest, longest) =
                    (chunks.iter().map(Vec::len).min().unwrap(), chunks.iter().map(Vec::len).max().unwrap());
                assert!(longest - shortest <= 1, "balanced: {chunks:?}");
            }
        }
    }
}
