//! Deleting a dataset: tombstone → grace → sweep.
//!
//! `delete_dataset` holds the flush lock (no flush commits a file for the
//! dataset meanwhile) and the dataset's `sealing` lock exclusively (every
//! write that passed its seal check has its rows buffered, and every later
//! one sees the `deleted` flag and is refused with 409 `dataset_deleted`).
//! Then one catalog transaction tombstones the live files, deletes the
//! partitions with `flushed_wal_seq` raised to the last applied WAL entry
//! (so a replay after a crash drops the rows the WAL still holds, and the
//! WAL is truncated past them as usual) and marks the dataset deleted; only
//! then are its buffered rows dropped and the dataset removed from memory,
//! so queries stop seeing it. The sweeper deletes the files after
//! `lifecycle.grace_ms`, and once none is left the name is released:
//! until then writes and `PUT` of the name are refused, afterwards the name
//! makes a new, empty dataset. Archive copies are kept.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;

use super::{DatasetState, Store};
use crate::catalog::DatasetFootprint;
use crate::error::{ErrorCode, Failure};
use crate::names::DatasetName;
use crate::sync::{Recover as _, RecoverRw as _};
use crate::time::now_ns;

fn deleted(name: &str) -> Failure {
    Failure::new(
        ErrorCode::DatasetDeleted,
        format!("dataset {name} is deleted; its name can be used again once its files are swept (lifecycle.grace_ms)"),
    )
}

impl DatasetState {
    /// Refuses a write to a deleted dataset.
    pub(super) fn refuse_if_deleted(&self) -> Result<(), Failure> {
        if self.deleted.load(Ordering::Acquire) { Err(deleted(self.name.as_str())) } else { Ok(()) }
    }
}

/// What a dataset delete removes: the catalog's footprint and the rows
/// still buffered.
#[derive(Debug, Clone)]
pub struct DeletionPlan {
    /// Partitions, files, bytes, committed rows and unarchived partitions.
    pub footprint: DatasetFootprint,
    /// Rows acknowledged but not yet flushed.
    pub buffered_rows: u64,
}

impl Store {
    /// Refuses a name whose deleted dataset is not swept yet.
    pub(super) fn refuse_deleting(&self, name: &DatasetName) -> Result<(), Failure> {
        if self.deleting.lock_or_recover().contains(name.as_str()) { Err(deleted(name.as_str())) } else { Ok(()) }
    }

    /// What deleting `dataset` would remove.
    pub async fn deletion_plan(&self, dataset: &DatasetState) -> Result<DeletionPlan, Failure> {
        let id = dataset.record.id;
        let footprint = self.catalog.call(move |c| c.dataset_footprint(id)).await?;
        let buffered_rows = self.buffers.dataset_partitions(id).iter().map(|(_, rows)| rows).sum();
        Ok(DeletionPlan { footprint, buffered_rows })
    }

    /// Tombstones `dataset` (see the module doc). Answers what was removed.
    pub async fn delete_dataset(&self, dataset: &Arc<DatasetState>) -> Result<DeletionPlan, Failure> {
        let _no_flush = self.flush_lock.lock().await;
        let _no_write = dataset.sealing.write().await;
        dataset.refuse_if_deleted()?;
        let plan = self.deletion_plan(dataset).await?;
        let (id, name) = (dataset.record.id, dataset.name.to_string());
        let wal_seq = self.wal.applied_through();
        let detail = json!({
            "partitions": plan.footprint.partitions,
            "files": plan.footprint.files,
            "bytes": plan.footprint.bytes,
            "rows": plan.footprint.rows,
            "buffered_rows_dropped": plan.buffered_rows,
        })
        .to_string();
        let owned = name.clone();
        self.catalog.call(move |c| c.tombstone_dataset(id, &owned, wal_seq, &detail, now_ns())).await?;
        dataset.deleted.store(true, Ordering::Release);
        self.deleting.lock_or_recover().insert(name.clone());
        let partitions: HashSet<i64> = self.buffers.dataset_partitions(id).into_iter().map(|(p, _)| p).collect();
        for partition in partitions {
            if let Some(snapshot) = self.buffers.begin_flush(partition) {
                self.buffers.finish_flush(partition, snapshot.max_seq);
            }
        }
        self.datasets.write_or_recover().remove(&name);
        tracing::info!(dataset = %name, files = plan.footprint.files, buffered_rows = plan.buffered_rows, "dataset deleted");
        Ok(plan)
    }

    /// Frees names whose deleted datasets' files are all swept.
    pub fn release_deleted(&self, names: &[String]) {
        let mut deleting = self.deleting.lock_or_recover();
        for name in names {
            deleting.remove(name);
        }
    }
}
