//! `[lifecycle]` and `[lifecycle.compaction]`: the scheduler, moves, the
//! sweeper and the compactor.

use serde::Deserialize;

use super::ConfigError;

/// `[lifecycle]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Run retention and tiering policies on their schedules.
    pub scheduler: bool,
    /// A tombstoned file is deleted this long after its tombstone, in ms.
    pub grace_ms: u64,
    /// How often the sweeper looks for expired tombstones, in ms.
    pub sweep_interval_ms: u64,
    /// The start-up sweep of the non-hot targets never deletes an
    /// unreferenced object younger than this, in ms: it may be another
    /// writer's upload in flight, not an orphan.
    pub orphan_grace_ms: u64,
    /// A partition whose period ended less than this long ago is never
    /// deleted, in ms (per dataset: `[datasets.<name>] min_retention_ms`).
    pub min_retention_ms: u64,
    /// At most this many deletes per run.
    pub max_deletes_per_run: usize,
    /// At most this fraction of a dataset's partitions deleted per run.
    pub max_delete_fraction: f64,
    /// Only archived partitions may be deleted.
    pub require_archive_before_delete: bool,
    /// Allow moves to a hotter tier (cold → warm …).
    pub allow_backward_moves: bool,
    /// A partition whose step failed is retried no sooner than this, doubling
    /// with each failure up to `retry_max_ms`, in ms.
    pub retry_base_ms: u64,
    /// The longest wait between retries, in ms.
    pub retry_max_ms: u64,
    /// Partitions a run copies and verifies at once when moving between
    /// tiers (copies wait mostly on fsync, so a few overlap well).
    pub move_concurrency: usize,
    /// Moved partitions committed per catalog transaction.
    pub move_commit_batch: usize,
    /// Bytes of partitions the concurrent copies may be copying together.
    /// Copies stream (bounded buffers and one row group in memory each), so
    /// this bounds what they stage on local disk — downloads of remote
    /// files, re-encoded files — at a partition's bytes per copy. A larger
    /// partition is copied alone.
    pub move_bytes_in_flight_max: u64,
    /// Create a live dataset's next-period partitions this long before the
    /// current period ends, in ms (0: never).
    pub precreate_lead_ms: u64,
    /// `/health/lifecycle` degrades when a hot partition's period ended
    /// longer ago than this, in ms (unset: not checked).
    pub health_max_hot_age_ms: Option<u64>,
    /// The same for warm partitions.
    pub health_max_warm_age_ms: Option<u64>,
    /// The same for cold partitions.
    pub health_max_cold_age_ms: Option<u64>,
    /// Past this multiple of a threshold, unhealthy instead of degraded.
    pub health_unhealthy_multiplier: f64,
    /// A policy version whose executing runs fail this many times in a row
    /// is rolled back automatically to the last good version (0: never).
    pub auto_rollback_after_failures: u32,
    /// Evaluate a new version of a retention, tiering or archival policy
    /// (dry) on the real partitions of the datasets it binds before it may
    /// serve; a trap, limit or broken answer keeps the last good version.
    pub policy_canary: bool,
    /// How often each remote storage target is probed, in ms; an
    /// unreachable one shows in `/v1/storage-targets` and degrades
    /// `/health/lifecycle`.
    pub target_probe_interval_ms: u64,
    /// Merging small files (`[lifecycle.compaction]`).
    pub compaction: CompactionConfig,
}

/// `[lifecycle.compaction]` — merging a partition's small files into larger
/// ones, chunk by chunk, with a resumable checkpoint per partition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Datasets may be compacted (per dataset: `[datasets.<name>] compaction`).
    pub enabled: bool,
    /// How often the scheduler looks for partitions to compact, in ms
    /// (0: only on `POST /v1/datasets/{ds}/compact`).
    pub interval_ms: u64,
    /// A partition is compacted once it has at least this many small live files.
    pub min_files: usize,
    /// A file smaller than this is small, in bytes.
    pub small_file_bytes: u64,
    /// The input files of one chunk add up to at most this, in bytes; it
    /// bounds the output file's size and a chunk's memory.
    pub target_file_bytes: u64,
    /// At most this many files are merged by one chunk into one file.
    pub chunk_files: usize,
    /// A failed job is retried by the scheduler until it has been attempted
    /// this many times; then it waits for an operator's `compact` request.
    pub max_attempts: u32,
    /// A completed checkpoint is kept this long for audits, in ms.
    pub checkpoint_retention_ms: u64,
}

impl Default for CompactionConfig {
    fn default() -> CompactionConfig {
        CompactionConfig {
            enabled: true,
            interval_ms: 300_000,
            min_files: 8,
            small_file_bytes: 16 * 1024 * 1024,
            target_file_bytes: 128 * 1024 * 1024,
            chunk_files: 32,
            max_attempts: 3,
            checkpoint_retention_ms: 86_400_000,
        }
    }
}

impl LifecycleConfig {
    /// The delete guard's fraction and the health multiplier are in range,
    /// and compaction merges at least two files within its size bounds.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !(0.0..=1.0).contains(&self.max_delete_fraction) {
            return invalid(format!(
                "lifecycle.max_delete_fraction = {} must be within 0..=1",
                self.max_delete_fraction
            ));
        }
        let multiplier = self.health_unhealthy_multiplier;
        if multiplier.is_nan() || multiplier < 1.0 {
            return invalid(format!("lifecycle.health_unhealthy_multiplier = {multiplier} must be at least 1"));
        }
        let compaction = &self.compaction;
        if compaction.min_files < 2 {
            return invalid(format!("lifecycle.compaction.min_files = {} must be at least 2", compaction.min_files));
        }
        if compaction.chunk_files < 2 {
            return invalid(format!(
                "lifecycle.compaction.chunk_files = {} must be at least 2",
                compaction.chunk_files
            ));
        }
        if compaction.small_file_bytes == 0 || compaction.target_file_bytes < compaction.small_file_bytes {
            return invalid(format!(
                "lifecycle.compaction.small_file_bytes = {} must be greater than 0 and at most target_file_bytes = {}",
                compaction.small_file_bytes, compaction.target_file_bytes
            ));
        }
        if compaction.max_attempts == 0 {
            return invalid("lifecycle.compaction.max_attempts must be at least 1".to_string());
        }
        Ok(())
    }
}

impl Default for LifecycleConfig {
    fn default() -> LifecycleConfig {
        LifecycleConfig {
            scheduler: true,
            grace_ms: 3_600_000,
            sweep_interval_ms: 60_000,
            orphan_grace_ms: 3_600_000,
            min_retention_ms: 86_400_000,
            max_deletes_per_run: 1_000,
            max_delete_fraction: 0.5,
            require_archive_before_delete: false,
            allow_backward_moves: false,
            retry_base_ms: 60_000,
            retry_max_ms: 6 * 3_600_000,
            move_concurrency: 8,
            move_commit_batch: 100,
            move_bytes_in_flight_max: 1024 * 1024 * 1024,
            precreate_lead_ms: 86_400_000,
            health_max_hot_age_ms: None,
            health_max_warm_age_ms: None,
            health_max_cold_age_ms: None,
            health_unhealthy_multiplier: 2.0,
            auto_rollback_after_failures: 3,
            policy_canary: true,
            target_probe_interval_ms: 15_000,
            compaction: CompactionConfig::default(),
        }
    }
}
