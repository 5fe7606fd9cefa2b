//! Executing a run's accepted decisions.
//!
//! The partitions are sealed first, all in one catalog transaction, so no
//! new rows arrive, and what they still buffer is flushed, so every row is
//! in a committed file (a partition that still buffers rows fails its step
//! and is retried on the next run). Moves then go in batches
//! ([`super::moves`]); archives ([`super::archive`]) and deletes go one
//! partition at a time. A delete only tombstones the partition's files; the
//! sweeper removes them after the grace period.
//!
//! A failed step backs its partition off: its next attempt waits
//! `lifecycle.retry_base_ms`, doubling with each failure up to
//! `retry_max_ms`; a run meanwhile lists the decision as `deferred`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::LifecycleError;
use super::guard::Action;
use super::moves::MoveJob;
use super::run::RunReport;
use super::{Lifecycle, ms_to_ns};
use crate::catalog::PartitionRecord;
use crate::facts::ArchiveDecision;
use crate::store::DatasetState;
use crate::sync::Recover as _;
use crate::time::now_ns;

/// An accepted decision waiting to be executed.
pub(super) struct Step {
    /// Its entry in the run report.
    pub(super) entry: usize,
    pub(super) record: PartitionRecord,
    pub(super) action: Action,
    pub(super) archive: Option<ArchiveDecision>,
}

/// A step that executed.
#[derive(Debug, Clone)]
pub(super) struct StepDone {
    /// Bytes written to the destination.
    pub(super) bytes: u64,
    /// Wall time, including the wait for the step's batch.
    pub(super) elapsed: Duration,
}

impl Lifecycle {
    /// Executes a run's accepted decisions; one outcome per step, in order.
    /// Moves copy and verify up to `lifecycle.move_concurrency` partitions at
    /// a time and commit up to `lifecycle.move_commit_batch` partitions per
    /// catalog transaction.
    pub(super) async fn execute(
        &self,
        dataset: &Arc<DatasetState>,
        work: &[Step],
    ) -> Vec<Result<StepDone, LifecycleError>> {
        let mut outcomes: Vec<Option<Result<StepDone, LifecycleError>>> = work.iter().map(|_| None).collect();
        let unsealed: Vec<PartitionRecord> =
            work.iter().filter(|s| !s.record.read_only).map(|s| s.record.clone()).collect();
        if let Err(error) = self.store.seal(dataset, &unsealed).await {
            return work.iter().map(|_| Err(LifecycleError::Seal(error.clone()))).collect();
        }
        if work.iter().any(|s| self.store.buffered(s.record.id).0 > 0)
            && let Err(error) = self.store.flush(true).await
        {
            tracing::warn!(%error, "flush before lifecycle steps failed");
        }
        let mut moves = Vec::new();
        for (i, step) in work.iter().enumerate() {
            let (rows, _) = self.store.buffered(step.record.id);
            if rows > 0 {
                outcomes[i] = Some(Err(LifecycleError::StillBuffered { rows }));
                continue;
            }
            match step.action {
                Action::Move(tier) => moves.push((i, tier)),
                _ => {
                    let started = Instant::now();
                    let done = self.execute_one(dataset, step).await;
                    outcomes[i] = Some(done.map(|bytes| StepDone { bytes, elapsed: started.elapsed() }));
                }
            }
        }
        for batch in moves.chunks(self.config.lifecycle.move_commit_batch) {
            let jobs: Vec<MoveJob> = batch
                .iter()
                .map(|(i, tier)| MoveJob {
                    partition_id: work[*i].record.id,
                    tier: *tier,
                    bytes: work[*i].record.bytes.max(0) as u64,
                })
                .collect();
            for ((i, _), outcome) in batch.iter().zip(self.move_batch(jobs).await) {
                outcomes[*i] = Some(outcome);
            }
        }
        outcomes.into_iter().map(|o| o.expect("every step has an outcome")).collect()
    }

    /// Executes one sealed and flushed partition's delete or archive (moves
    /// go through [`Lifecycle::move_batch`], in batches).
    async fn execute_one(&self, dataset: &Arc<DatasetState>, step: &Step) -> Result<u64, LifecycleError> {
        match step.action {
            Action::Keep => Ok(0),
            Action::Delete => {
                let id = step.record.id;
                self.catalog().call(move |c| c.delete_partition(id, now_ns())).await?;
                crate::failpoint::hit("lifecycle.delete.after_commit");
                Ok(0)
            }
            Action::Archive => {
                let decision = step.archive.as_ref().ok_or(LifecycleError::MissingArchiveOptions)?;
                self.archive(dataset, &step.record, decision).await
            }
            Action::Move(_) => unreachable!("`execute` batches moves through `move_batch`"),
        }
    }

    /// Records what became of an accepted decision: in its run entry, the
    /// report's totals, the metrics and the partition's retry backoff.
    pub(super) fn finish_step(&self, step: &Step, outcome: Result<StepDone, LifecycleError>, report: &mut RunReport) {
        let entry = &mut report.entries[step.entry];
        let record = &step.record;
        match outcome {
            Ok(StepDone { bytes, elapsed }) => {
                self.count_step(step, bytes, elapsed);
                self.backoff.lock_or_recover().remove(&record.id);
                entry.outcome = "executed";
                entry.bytes_moved = bytes;
                report.executed += 1;
                report.bytes_moved += bytes;
            }
            Err(error) => {
                tracing::warn!(partition = %entry.partition_id, %error, "lifecycle step failed");
                entry.outcome = "failed";
                entry.error = Some(error.to_string());
                self.failed_step(record.id);
                report.failed += 1;
            }
        }
    }

    /// The counters of an executed step for `/metrics`.
    fn count_step(&self, step: &Step, bytes: u64, elapsed: Duration) {
        match step.action {
            Action::Move(to) => self.count(
                format!("strata_lifecycle_transitions_total{{from=\"{}\",to=\"{}\"}}", step.record.tier, to.as_str()),
                1,
            ),
            Action::Delete => self.count("strata_lifecycle_deletes_total".into(), 1),
            Action::Archive => {
                self.count("strata_lifecycle_archives_total".into(), 1);
                self.count("strata_lifecycle_archive_bytes_total".into(), bytes);
                // Counted in microseconds, exported in seconds (see `explain::COUNTERS`).
                self.count("strata_lifecycle_archive_duration_seconds_total".into(), elapsed.as_micros() as u64);
            }
            Action::Keep => {}
        }
        self.count("strata_lifecycle_bytes_moved_total".into(), bytes);
    }

    /// `(failures, no retry before)` while a partition waits out its backoff.
    pub(super) fn deferral(&self, partition_id: i64) -> Option<(u32, i64)> {
        let backoff = self.backoff.lock_or_recover();
        backoff.get(&partition_id).copied().filter(|(_, retry_at)| *retry_at > now_ns())
    }

    /// Records a failed step: the next attempt waits `retry_base_ms`,
    /// doubling with each failure up to `retry_max_ms`.
    fn failed_step(&self, partition_id: i64) {
        let lifecycle = &self.config.lifecycle;
        let mut backoff = self.backoff.lock_or_recover();
        let failures = backoff.get(&partition_id).map_or(0, |(n, _)| *n) + 1;
        let wait_ms = lifecycle.retry_base_ms.saturating_mul(1 << (failures - 1).min(20)).min(lifecycle.retry_max_ms);
        backoff.insert(partition_id, (failures, now_ns().saturating_add(ms_to_ns(wait_ms))));
    }
}
