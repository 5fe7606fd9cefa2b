//! `DELETE /v1/datasets/{ds}`: a dataset deleted through the lifecycle's
//! protocols, under the run lock (no move, archive or compaction chunk of
//! it runs meanwhile). The guard rail is archive-before-delete: with
//! `lifecycle.require_archive_before_delete`, a partition holding rows
//! without an archive copy refuses the whole delete (409
//! `dataset_not_archived`, listing them). Then the store tombstones it (see
//! `store/delete.rs`) and the sweeper deletes its files after
//! `lifecycle.grace_ms` and releases its name. A dry run answers the same
//! figures and verdict and changes nothing.

use serde_json::{Value as Json, json};

use super::{Lifecycle, no_dataset};
use crate::error::{ErrorCode, Failure};
use crate::store::DeletionPlan;

fn answer(plan: &DeletionPlan, dry: bool, refused: bool, grace_ms: u64) -> Json {
    let footprint = &plan.footprint;
    json!({
        "dry": dry,
        "outcome": match (dry, refused) {
            (_, true) => "refused",
            (true, false) => "would_delete",
            (false, false) => "deleted",
        },
        "partitions": footprint.partitions,
        "files": footprint.files,
        "bytes": footprint.bytes,
        "rows": footprint.rows,
        "buffered_rows": plan.buffered_rows,
        "unarchived_partitions": footprint.unarchived,
        "files_swept_after_ms": grace_ms,
    })
}

impl Lifecycle {
    /// Deletes a dataset (or, with `dry`, says what that would do).
    pub async fn delete_dataset(&self, dataset: &str, dry: bool) -> Result<Json, Failure> {
        let state = self.store.dataset(dataset).ok_or_else(|| no_dataset(dataset))?;
        let _one_at_a_time = self.running.lock().await;
        let plan = self.store.deletion_plan(&state).await?;
        let lifecycle = &self.config.lifecycle;
        let refused = lifecycle.require_archive_before_delete && !plan.footprint.unarchived.is_empty();
        if dry {
            return Ok(answer(&plan, true, refused, lifecycle.grace_ms));
        }
        if refused {
            let unarchived = &plan.footprint.unarchived;
            return Err(Failure::new(
                ErrorCode::DatasetNotArchived,
                format!(
                    "dataset {dataset} has {} partition(s) with rows and no archive copy, and \
                     lifecycle.require_archive_before_delete is on; archive them first",
                    unarchived.len()
                ),
            )
            .with_detail(json!({ "unarchived_partitions": unarchived })));
        }
        let plan = self.store.delete_dataset(&state).await?;
        Ok(answer(&plan, false, false, lifecycle.grace_ms))
    }
}
