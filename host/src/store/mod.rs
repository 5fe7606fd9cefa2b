//! The store: ties the catalog, the WAL, the buffers and storage together into
//! the write path, flushing and start-up recovery.
//!
//! Write path (`write.rs`): parse → schema check → route → WAL (group commit,
//! fsync) → buffers → acknowledge. Flush (`flush.rs`): buffer → Parquet →
//! storage (create-only, fsync) → verify → catalog commit → drop buffered
//! rows → WAL truncation. Start-up (`open.rs`): sweep orphans → load catalog
//! → replay WAL → ready. Sealing (`seal.rs`) flips partitions' read-only
//! flags while no write is between its seal check and its buffers.
//!
//! # Poisoned locks
//!
//! Locks are taken through `crate::sync`, which recovers a poisoned one (the
//! project's one stance, explained there). The store's part of the argument:
//! its critical sections are map inserts and removals, counters and `Arc`
//! swaps, and the one lock held across IO, `visibility` during a flush's
//! catalog commit, guards no data of its own. A violated durability
//! invariant is an `assert!` that stops the thread it fires on (the WAL
//! writer then takes no more writes, a flush fails and its rows stay
//! buffered).

mod delete;
mod flush;
mod idempotency;
mod keys;
mod open;
mod outcome;
mod routing;
mod seal;
mod settings;
mod write;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use arrow::record_batch::RecordBatch;

use crate::buffer::Buffers;
use crate::catalog::{Catalog, DatasetAdmin, DatasetRecord, FileRecord, IdempotencyRecord, PartitionRecord};
use crate::config::Config;
use crate::error::{ErrorCode, Failure};
use crate::names::DatasetName;
use crate::policy::PolicyRuntime;
use crate::schema::DatasetSchema;
use crate::storage::{StorageTarget, Targets};
use crate::sync::{Recover as _, RecoverRw as _};
use crate::time::now_ns;
use crate::wal::Wal;

pub use delete::DeletionPlan;
pub use open::Recovery;
pub use outcome::{WriteAnswer, WriteOutcome};
pub use routing::{KeyCount, KeyWindows};
pub use settings::DatasetDefinition;
pub use write::{Format, IDEMPOTENCY_KEY_BYTES_MAX, WriteRequest};

/// An internal failure: `context` names what failed.
fn internal(context: &str, error: impl std::fmt::Display) -> Failure {
    Failure::new(ErrorCode::Internal, format!("{context}: {error}"))
}

/// Runs `work` on tokio's blocking pool: parsing, routing, partitioner
/// calls and flushes, which would stall the async runtime. (Catalog calls
/// go through `Catalog::call`.)
async fn on_blocking_pool<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work).await.map_err(|e| internal("background task failed", e))
}

#[derive(Debug, Clone)]
struct PartitionHandle {
    id: i64,
    read_only: bool,
    /// The catalog's `key_field` as last seen (see `Catalog::note_key_field`).
    key_field: Option<Arc<str>>,
}

/// A dataset's partition handles by period label, then key: found by
/// `&str`, with no key built per lookup (a request may touch thousands).
#[derive(Debug, Default)]
struct HandleCache(rustc_hash::FxHashMap<String, rustc_hash::FxHashMap<String, PartitionHandle>>);

impl HandleCache {
    fn get(&self, label: &str, key: &str) -> Option<&PartitionHandle> {
        self.0.get(label)?.get(key)
    }

    fn get_mut(&mut self, label: &str, key: &str) -> Option<&mut PartitionHandle> {
        self.0.get_mut(label)?.get_mut(key)
    }

    fn insert(&mut self, label: &str, key: &str, handle: PartitionHandle) {
        match self.0.get_mut(label) {
            Some(keys) => keys.insert(key.to_string(), handle),
            None => self.0.entry(label.to_string()).or_default().insert(key.to_string(), handle),
        };
    }
}

/// A dataset as the store keeps it in memory.
#[derive(Debug)]
pub struct DatasetState {
    /// Its catalog row.
    pub record: DatasetRecord,
    /// Its validated name.
    pub name: DatasetName,
    schema: RwLock<Arc<DatasetSchema>>,
    evolve: tokio::sync::Mutex<()>,
    partitions: Mutex<HandleCache>,
    /// Held shared by a write from its check of the partitions' read-only
    /// flags until its rows are in the buffers, and exclusively by a seal:
    /// once a seal returns, every write either saw the partition sealed or
    /// has its rows buffered, where the sealer's flush finds them.
    sealing: tokio::sync::RwLock<()>,
    /// Operator settings and partition specs (see `settings.rs`).
    admin: RwLock<Arc<DatasetAdmin>>,
    /// Set, under `sealing` held exclusively, when the dataset is deleted:
    /// a write that gets past its seal check afterwards is refused.
    deleted: AtomicBool,
    /// Rows and bytes written per partition key over the last hour.
    pub routing: KeyWindows,
    /// The number of live partitions, with the catalog's `partitions_seq`
    /// it was counted at (a query's statistics; recounted when it moved).
    partitions_counted: Mutex<Option<(i64, usize)>>,
}

impl DatasetState {
    fn new(name: DatasetName, record: DatasetRecord, schema: DatasetSchema) -> DatasetState {
        let admin = DatasetAdmin::defaults(&record);
        DatasetState {
            admin: RwLock::new(Arc::new(admin)),
            deleted: AtomicBool::new(false),
            name,
            record,
            schema: RwLock::new(Arc::new(schema)),
            evolve: tokio::sync::Mutex::new(()),
            partitions: Mutex::new(HandleCache::default()),
            sealing: tokio::sync::RwLock::new(()),
            routing: KeyWindows::default(),
            partitions_counted: Mutex::new(None),
        }
    }

    /// The current schema.
    pub fn schema(&self) -> Arc<DatasetSchema> {
        self.schema.read_or_recover().clone()
    }
}

#[derive(Debug, Default)]
struct IdempotencyMemory {
    /// Keys whose WAL entry is not yet truncated: `(dataset, key) → (seq, record)`.
    recent: HashMap<(i64, String), (u64, IdempotencyRecord)>,
    in_flight: HashSet<(i64, String)>,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    config: Arc<Config>,
    catalog: Arc<Catalog>,
    /// Every storage target, and the target of each tier.
    targets: Arc<Targets>,
    /// The hot tier's target: flushes write here.
    hot: Arc<dyn StorageTarget>,
    wal: Wal,
    buffers: Arc<Buffers>,
    datasets: RwLock<HashMap<String, Arc<DatasetState>>>,
    create_dataset: tokio::sync::Mutex<()>,
    /// Names of deleted datasets whose files are not swept yet: writes to
    /// them are refused (see `delete.rs`).
    deleting: Mutex<HashSet<String>>,
    idempotency: Arc<Mutex<IdempotencyMemory>>,
    /// Held for writing while a flush commits and drops its buffered rows, and
    /// for reading while a reader snapshots files plus buffers, so a reader
    /// never sees rows twice or not at all.
    visibility: RwLock<()>,
    flush_lock: tokio::sync::Mutex<()>,
    /// Each partition's `flushed_wal_seq` as last committed, to assert that
    /// it never goes back.
    flushed_wal_seq: Mutex<HashMap<i64, u64>>,
    closed: AtomicBool,
    /// The policy runtime, once loaded: the partitioners of the write path.
    policies: OnceLock<Arc<PolicyRuntime>>,
    /// Counters for `/metrics`.
    counters: IngestCounters,
}

/// What the write path has done since start-up, for `/metrics`.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Rows acknowledged (in the WAL, and answered).
    pub rows_written: AtomicU64,
    /// Rows refused because of sealed partitions: the late rows of a
    /// request that wrote the rest (`late_rows = "refuse_rows"`), or every
    /// row of a request refused whole (409 `partition_read_only`).
    pub rows_refused_sealed: AtomicU64,
    /// Lines or records rejected (unparseable, or refused by a partitioner)
    /// in requests that wrote the rest (`accept_partial`).
    pub records_rejected: AtomicU64,
}

/// What a reader sees of a dataset at one instant.
#[derive(Debug)]
pub struct DatasetSnapshot {
    /// Partitions, oldest first.
    pub partitions: Vec<PartitionRecord>,
    /// Live files of each partition (same order).
    pub files: Vec<Vec<FileRecord>>,
    /// Buffered rows: `(partition id, batch)`.
    pub buffered: Vec<(i64, RecordBatch)>,
    /// Live partitions of the dataset, those outside the range included.
    pub partitions_total: usize,
}

impl Store {
    /// The configuration snapshot.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The buffers.
    pub fn buffers(&self) -> &Arc<Buffers> {
        &self.buffers
    }

    /// The hot tier's storage target.
    pub fn hot(&self) -> &Arc<dyn StorageTarget> {
        &self.hot
    }

    /// Every storage target, and the target of each tier.
    pub fn targets(&self) -> &Arc<Targets> {
        &self.targets
    }

    /// A dataset, if it exists.
    pub fn dataset(&self, name: &str) -> Option<Arc<DatasetState>> {
        self.datasets.read_or_recover().get(name).cloned()
    }

    /// Every dataset, by name.
    pub fn datasets(&self) -> Vec<Arc<DatasetState>> {
        let mut all: Vec<_> = self.datasets.read_or_recover().values().cloned().collect();
        all.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        all
    }

    async fn dataset_or_create(self: &Arc<Self>, name: &DatasetName) -> Result<Arc<DatasetState>, Failure> {
        if let Some(dataset) = self.dataset(name.as_str()) {
            return Ok(dataset);
        }
        let _guard = self.create_dataset.lock().await;
        if let Some(dataset) = self.dataset(name.as_str()) {
            return Ok(dataset);
        }
        self.refuse_deleting(name)?;
        self.check_dataset_count()?;
        let (period, time_column) = self.config.dataset_settings(name);
        let owned = name.clone();
        let record =
            self.catalog.call(move |c| c.create_dataset(owned.as_str(), period, &time_column, now_ns())).await?;
        let schema = DatasetSchema::empty(&record.time_column);
        let state = Arc::new(DatasetState::new(name.clone(), record, schema));
        self.datasets.write_or_recover().insert(name.to_string(), state.clone());
        tracing::info!(dataset = %name, "created dataset");
        Ok(state)
    }

    /// Refuses a new dataset past `limits.datasets_max`.
    fn check_dataset_count(&self) -> Result<(), Failure> {
        let count = self.datasets.read_or_recover().len();
        if count >= self.config.limits.datasets_max {
            return Err(Failure::new(
                ErrorCode::LimitExceeded,
                format!("the store holds {count} datasets, the most allowed (limits.datasets_max)"),
            ));
        }
        Ok(())
    }

    /// Gives the write path the policy runtime (the partitioners). Until
    /// this is called, writes answer 503 `not_ready`.
    pub fn attach_policies(&self, policies: Arc<PolicyRuntime>) {
        let _ = self.policies.set(policies);
    }

    /// A snapshot of one dataset for readers, taken atomically with respect
    /// to flush commits: the committed partitions whose periods meet
    /// `range` (`[start, end)` in ns; every partition for `None`) with their
    /// files, and only their buffered rows: what a query of that range can
    /// read, at a cost that does not grow with the dataset's other
    /// partitions.
    pub fn snapshot(&self, dataset: &DatasetState, range: Option<(i64, i64)>) -> Result<DatasetSnapshot, Failure> {
        let _visible = self.visibility.read_or_recover();
        let counted = *dataset.partitions_counted.lock_or_recover();
        let live = self.catalog.live_in(dataset.record.id, range, counted)?;
        *dataset.partitions_counted.lock_or_recover() = Some((live.seq, live.total));
        let ids: std::collections::HashSet<i64> = live.partitions.iter().map(|p| p.id).collect();
        let buffered = self.buffers.dataset_batches(dataset.record.id, |id| ids.contains(&id));
        Ok(DatasetSnapshot { partitions: live.partitions, files: live.files, buffered, partitions_total: live.total })
    }

    /// The write path's counters.
    pub fn counters(&self) -> &IngestCounters {
        &self.counters
    }

    /// Statistics of buffered rows of one partition `(rows, bytes)`.
    pub fn buffered(&self, partition_id: i64) -> (u64, u64) {
        self.buffers.partition_stats(partition_id)
    }

    /// Rows buffered across a dataset's partitions.
    pub fn buffered_rows_of(&self, dataset_id: i64) -> u64 {
        self.buffers.dataset_partitions(dataset_id).iter().map(|(_, rows)| rows).sum()
    }
}
