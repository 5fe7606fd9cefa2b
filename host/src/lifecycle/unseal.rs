//! Unsealing a partition: the one way back from read-only, for hot
//! partitions only (the store refuses the others).

use super::{Lifecycle, no_dataset};
use crate::catalog::PartitionRecord;
use crate::error::Failure;

impl Lifecycle {
    /// Makes a sealed hot partition writable again. Holds the run lock, so
    /// no run is between sealing the partition and moving, archiving or
    /// deleting it: an unseal in that window would let rows into the
    /// buffers that the next flush writes to the hot target of a partition
    /// that has left it.
    pub async fn unseal(&self, dataset: &str, label: &str, key: &str) -> Result<PartitionRecord, Failure> {
        let state = self.store.dataset(dataset).ok_or_else(|| no_dataset(dataset))?;
        let _one_at_a_time = self.running.lock().await;
        self.store.set_read_only(&state, label, key, false).await
    }
}
