//! Sealing: a partition's read-only flag, in the catalog and in the write
//! path's partition handles.
//!
//! A seal holds the dataset's `sealing` lock exclusively while it flips the
//! flags; a write holds it shared from its seal check until its rows are
//! buffered. So when a seal returns, every write either saw the partition
//! sealed or has its rows buffered, where the sealer's flush finds them.

use std::sync::Arc;

use serde_json::json;

use super::{DatasetState, PartitionHandle, Store};
use crate::catalog::PartitionRecord;
use crate::error::{ErrorCode, Failure};
use crate::names::partition_label;
use crate::sync::Recover as _;
use crate::tier::Tier;
use crate::time::now_ns;

impl Store {
    /// Seals (or unseals) a partition: a sealed partition refuses writes with
    /// `partition_read_only`. Only a hot partition without an archive may
    /// be unsealed (409 `partition_not_hot` otherwise): the next flush
    /// writes to the hot target, and an archive would no longer hold
    /// every row. The caller keeps lifecycle runs out meanwhile (see
    /// `Lifecycle::unseal`), so the tier cannot change under the check.
    pub async fn set_read_only(
        &self,
        dataset: &Arc<DatasetState>,
        label: &str,
        key: &str,
        read_only: bool,
    ) -> Result<PartitionRecord, Failure> {
        let partition = self.find_partition(dataset, label, key).await?;
        if !read_only && (partition.tier != Tier::Hot || partition.archived) {
            let id = partition_label(&dataset.name, label, key);
            let why = if partition.archived {
                "it has an archive copy".to_string()
            } else {
                format!("it is {}", partition.tier)
            };
            return Err(Failure::new(
                ErrorCode::PartitionNotHot,
                format!(
                    "partition {id} cannot be unsealed: {why}; only hot partitions without an archive accept writes"
                ),
            )
            .with_detail(json!({ "partition": id, "tier": partition.tier })));
        }
        self.mark_read_only(dataset, std::slice::from_ref(&partition), read_only).await?;
        Ok(PartitionRecord { read_only, ..partition })
    }

    /// Seals partitions of `dataset` (read-only: writes into them get 409)
    /// in one catalog transaction, each with its audit event.
    pub async fn seal(&self, dataset: &Arc<DatasetState>, partitions: &[PartitionRecord]) -> Result<(), Failure> {
        self.mark_read_only(dataset, partitions, true).await
    }

    /// Sets partitions' read-only flag in the catalog (one transaction, an
    /// audit event each) and in the write path's handles, holding the
    /// dataset's `sealing` lock exclusively so no write is between its
    /// check and its buffers meanwhile.
    async fn mark_read_only(
        &self,
        dataset: &Arc<DatasetState>,
        partitions: &[PartitionRecord],
        read_only: bool,
    ) -> Result<(), Failure> {
        if partitions.is_empty() {
            return Ok(());
        }
        let _sealing = dataset.sealing.write().await;
        let labelled: Vec<(i64, String)> =
            partitions.iter().map(|p| (p.id, partition_label(&dataset.name, &p.period_label, &p.key))).collect();
        let name = dataset.name.to_string();
        self.catalog.call(move |c| c.set_read_only(&name, &labelled, read_only, now_ns())).await?;
        let mut handles = dataset.partitions.lock_or_recover();
        for partition in partitions {
            match handles.get_mut(&partition.period_label, &partition.key) {
                Some(handle) => handle.read_only = read_only,
                None => handles.insert(
                    &partition.period_label,
                    &partition.key,
                    PartitionHandle {
                        id: partition.id,
                        read_only,
                        key_field: partition.key_field.as_deref().map(Arc::from),
                    },
                ),
            }
        }
        Ok(())
    }

    async fn find_partition(
        &self,
        dataset: &Arc<DatasetState>,
        label: &str,
        key: &str,
    ) -> Result<PartitionRecord, Failure> {
        let dataset_id = dataset.record.id;
        let partitions = self.catalog.call(move |c| c.partitions(dataset_id)).await?;
        partitions.into_iter().find(|p| p.period_label == label && p.key == key).ok_or_else(|| {
            Failure::new(ErrorCode::NotFound, format!("no partition {}", partition_label(&dataset.name, label, key)))
        })
    }
}
