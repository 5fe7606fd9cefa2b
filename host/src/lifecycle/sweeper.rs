//! The tombstone sweeper: deletes the files moves, deletes, archives and
//! compactions tombstoned, once `lifecycle.grace_ms` has passed, so a query
//! that took its snapshot before the commit still finds its files.
//!
//! Every `lifecycle.sweep_interval_ms`: the object first, then its catalog
//! row, so a crash between the two leaves a row whose object is already
//! gone (deleted again, harmlessly, by the next sweep). A file that cannot
//! be deleted stays tombstoned, is counted in
//! `strata_lifecycle_sweep_failures_total` and is tried again on the next
//! sweep; the others go on. A deleted dataset none of whose files is left
//! then gets its name released (see `store/delete.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::Lifecycle;
use super::error::LifecycleError;
use super::off_runtime;
use crate::catalog::FileRecord;
use crate::storage::{ObjectKey, StorageError, Targets};
use crate::time::now_ns;

impl Lifecycle {
    /// Deletes tombstoned files past the grace period, every
    /// `lifecycle.sweep_interval_ms`, until `shutdown` fires.
    pub async fn run_sweeper(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.lifecycle.sweep_interval_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            match self.sweep(now_ns()).await {
                Ok(0) => {}
                Ok(swept) => tracing::info!(swept, "tombstoned files deleted"),
                Err(error) => tracing::warn!(%error, "sweep failed"),
            }
        }
    }

    /// Deletes tombstoned files whose grace period ended before `now`.
    /// Returns how many were deleted, or the first error if none could be.
    async fn sweep(&self, now: i64) -> Result<usize, LifecycleError> {
        let grace_ns =
            i64::try_from(self.config.lifecycle.grace_ms).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000);
        let expired = self.catalog().call(move |c| c.expired_tombstones(now.saturating_sub(grace_ns))).await?;
        let targets = self.targets.clone();
        let (deleted, failures) = off_runtime(move || delete_objects(&targets, &expired)).await??;
        if !failures.is_empty() {
            self.count("strata_lifecycle_sweep_failures_total".into(), failures.len() as u64);
        }
        let swept = self
            .catalog()
            .call(move |c| {
                for id in &deleted {
                    c.forget_file(*id)?;
                }
                Ok::<_, LifecycleError>(deleted.len())
            })
            .await?;
        // A deleted dataset whose last file just went frees its name.
        let released = self.catalog().call(|c| c.release_swept_datasets()).await?;
        if !released.is_empty() {
            tracing::info!(datasets = ?released, "deleted datasets swept; their names are free");
            self.store.release_deleted(&released);
        }
        match failures.into_iter().next() {
            Some(error) if swept == 0 => Err(error),
            _ => Ok(swept),
        }
    }
}

/// Deletes the objects of tombstoned files (one already gone counts as
/// deleted). Blocking. Returns the ids of the files deleted, and the
/// failures.
fn delete_objects(
    targets: &Targets,
    expired: &[FileRecord],
) -> Result<(Vec<i64>, Vec<LifecycleError>), LifecycleError> {
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    for file in expired {
        let Some(target) = targets.named(&file.storage_target) else { continue };
        let key = ObjectKey::parse(&file.object_key)?;
        match target.delete(&key) {
            Ok(()) | Err(StorageError::NotFound(_)) => {}
            Err(error) => {
                tracing::warn!(target = target.name(), key = %key, %error, "tombstoned file not deleted; retried on the next sweep");
                failures.push(LifecycleError::Sweep { key, target: target.name().to_string(), source: error });
                continue;
            }
        }
        crate::failpoint::hit("lifecycle.sweep.after_delete");
        deleted.push(file.id);
    }
    Ok((deleted, failures))
}
