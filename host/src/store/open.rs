//! Start-up: sweep what a crash left behind, load the datasets, replay the
//! WAL into the buffers.
//!
//! Replay skips a partition's rows at or below its `flushed_wal_seq`: a
//! flush records that sequence in the same transaction as its file, so those
//! rows are in a committed file already. Idempotency keys of replayed
//! entries go back into memory, where they stay until their entry is
//! truncated (and the key saved in the catalog).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use super::{DatasetState, IdempotencyMemory, IngestCounters, Store};
use crate::buffer::Buffers;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::names::DatasetName;
use crate::storage::{StorageTarget, Targets};
use crate::sync::Recover as _;
use crate::tier::Tier;
use crate::wal::{Wal, WalEntry, WalError};

/// What start-up recovery did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Recovery {
    /// WAL entries replayed into buffers.
    pub wal_entries_replayed: u64,
    /// Rows replayed into buffers.
    pub rows_replayed: u64,
    /// Unreferenced data files deleted.
    pub orphan_files_removed: usize,
    /// Temporary files of interrupted writes deleted.
    pub temporary_files_removed: usize,
}

/// Each partition's `(dataset id, flushed_wal_seq)`, by partition id.
type FlushedSeqs = HashMap<i64, (i64, u64)>;

impl Store {
    /// Opens the store in `config.server.data_dir`: sweeps orphans, loads the
    /// catalog and replays the WAL. Blocking.
    pub fn open(config: Arc<Config>) -> anyhow::Result<(Store, Recovery)> {
        let data_dir = &config.server.data_dir;
        crate::data_dir::create_data_dir(data_dir)?;
        let catalog = Arc::new(Catalog::open(&Catalog::path_in(data_dir))?);
        let targets = Arc::new(Targets::open(&config)?);
        refuse_unconfigured_targets(&catalog, &targets)?;
        let hot = targets.tier(Tier::Hot).clone();
        let mut recovery = sweep_orphans(&catalog, &hot)?;
        let datasets = load_datasets(&catalog)?;
        let catalog_deleting = catalog.deleting_datasets()?.into_iter().collect();
        let flushed: FlushedSeqs =
            catalog.all_partitions()?.into_iter().map(|p| (p.id, (p.dataset_id, p.flushed_wal_seq))).collect();

        let buffers = Arc::new(Buffers::default());
        let idempotency = Arc::new(Mutex::new(IdempotencyMemory::default()));
        let wal = Wal::open(&data_dir.join("wal"), config.ingest.wal_segment_bytes_max, |seq, payload| {
            replay_entry(seq, payload, &flushed, &buffers, &idempotency, &mut recovery)
        })?;
        let store = Store {
            config,
            catalog,
            targets,
            hot,
            wal,
            buffers,
            datasets: RwLock::new(datasets),
            create_dataset: tokio::sync::Mutex::new(()),
            deleting: Mutex::new(catalog_deleting),
            idempotency,
            visibility: RwLock::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            flushed_wal_seq: Mutex::new(flushed.into_iter().map(|(id, (_, seq))| (id, seq)).collect()),
            closed: AtomicBool::new(false),
            policies: OnceLock::new(),
            counters: IngestCounters::default(),
        };
        Ok((store, recovery))
    }
}

/// A file on a target the configuration no longer names would be
/// unreadable, and its copies unsweepable: refuse to start instead.
fn refuse_unconfigured_targets(catalog: &Catalog, targets: &Targets) -> anyhow::Result<()> {
    for name in catalog.storage_targets_in_use()? {
        if targets.named(&name).is_none() {
            anyhow::bail!(
                "the catalog has files on storage target {name:?}, which is not configured; \
                 declare [storage.targets.{name}] with its location"
            );
        }
    }
    Ok(())
}

/// Removes the hot target's temporaries, and the files under `data/` a
/// crash left between their write and their catalog commit: the catalog
/// never listed them, so they are invisible. Unlike the other targets'
/// sweep (`Lifecycle::open`) this one has no grace period and runs before
/// replay: the hot target is always a local directory this server holds
/// locked, so nothing else writes it, and replay re-flushes what those
/// files held.
fn sweep_orphans(catalog: &Catalog, hot: &Arc<dyn StorageTarget>) -> anyhow::Result<Recovery> {
    let mut recovery = Recovery { temporary_files_removed: hot.remove_temporaries()?, ..Recovery::default() };
    let referenced = catalog.referenced_keys(hot.name())?;
    for object in hot.list("data/")? {
        if !referenced.contains(object.key.as_str()) {
            hot.delete(&object.key)?;
            recovery.orphan_files_removed += 1;
        }
    }
    Ok(recovery)
}

fn load_datasets(catalog: &Catalog) -> anyhow::Result<HashMap<String, Arc<DatasetState>>> {
    let mut datasets = HashMap::new();
    for record in catalog.datasets()? {
        let schema = catalog.schema(record.id)?;
        let name = DatasetName::parse(&record.name).map_err(anyhow::Error::msg)?;
        let admin = catalog.dataset_admin(&record)?;
        let state = DatasetState::new(name, record, schema);
        state.set_admin(admin);
        datasets.insert(state.record.name.clone(), Arc::new(state));
    }
    Ok(datasets)
}

/// Puts one WAL entry's rows that no committed file holds into the buffers,
/// and its idempotency key into memory.
fn replay_entry(
    seq: u64,
    payload: &[u8],
    flushed: &FlushedSeqs,
    buffers: &Buffers,
    idempotency: &Mutex<IdempotencyMemory>,
    recovery: &mut Recovery,
) -> Result<(), WalError> {
    let entry = WalEntry::decode(payload)?;
    let mut wanted = Vec::new();
    for partition_id in entry.partition_ids() {
        let Some((dataset_id, flushed_seq)) = flushed.get(&partition_id) else {
            return Err(WalError::Corrupt(format!("entry {seq} names unknown partition {partition_id}")));
        };
        wanted.push((seq > *flushed_seq).then_some(*dataset_id));
    }
    let replayed = wanted.iter().any(Option::is_some);
    if replayed {
        for ((partition_id, batch), dataset_id) in entry.partition_batches(&wanted)?.into_iter().zip(&wanted) {
            let (Some(batch), Some(dataset_id)) = (batch, dataset_id) else { continue };
            recovery.rows_replayed += batch.num_rows() as u64;
            buffers.insert(*dataset_id, partition_id, seq, batch);
        }
    }
    if let Some((key, record)) = entry.idempotency {
        idempotency.lock_or_recover().recent.insert((entry.dataset_id, key), (seq, record));
    }
    recovery.wal_entries_replayed += u64::from(replayed);
    Ok(())
}
