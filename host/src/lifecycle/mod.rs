//! The lifecycle engine: runs retention, tiering and archival policies over
//! a dataset's partitions and executes what the guard rails accept.
//!
//! A run (`run.rs`): catalog snapshot → partition facts → the component →
//! guard rails ([`guard`]) → execution (`execute.rs`: moves in `moves.rs`,
//! archives in `archive.rs`, deletes) → run record and audit. One failing
//! partition never aborts the run; it is reported and decided again on the
//! next run. Compaction of small files ([`compaction`]) is host-native and
//! takes the same run lock for each chunk it merges. Background tasks: the
//! scheduler (`scheduler.rs`), the tombstone sweeper (`sweeper.rs`), the
//! compactor and the prober of remote storage targets (`probes.rs`). What an operator reads about all this is in `explain.rs`.
//!
//! **Invariant:** no step deletes data before the catalog commit that makes
//! it unreferenced. A move copies each file create-only to the target,
//! verifies it, then swaps the file rows in one catalog transaction and
//! tombstones the old copies; a delete only tombstones. The sweeper removes
//! tombstoned files after `lifecycle.grace_ms`, so a query that took its
//! snapshot before a commit still finds its files.
//!
//! Every catalog call from async code goes through [`Catalog::call`];
//! other blocking work (copies, Parquet encoding, storage deletes, policy
//! calls) goes through one helper, `off_runtime`. Failures of steps
//! are `LifecycleError`s (`error.rs`), whose text is what run entries,
//! checkpoints and logs show; a request that lifecycle refuses itself (no
//! such dataset or partition, not archived, compaction disabled, a bad
//! `now`) is answered with a [`Failure`] built where the refusal is found.

mod archive;
pub mod compaction;
mod dataset_delete;
mod digests;
mod error;
mod execute;
mod explain;
pub mod guard;
mod manual;
mod moves;
mod probes;
mod run;
mod scheduler;
mod sweeper;
mod unseal;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::Failure;
use crate::parquet_file::Encoding;
use crate::policy::PolicyRuntime;
use crate::store::Store;
use crate::sync::Recover as _;
use crate::tier::Tier;
use crate::time::now_ns;
use error::LifecycleError;
pub use manual::{ManualAction, ManualOperation};

/// The storage targets and the target of each tier (opened by the store
/// from `[storage]`).
pub use crate::storage::Targets;

/// The lifecycle engine.
#[derive(Debug)]
pub struct Lifecycle {
    store: Arc<Store>,
    policies: Arc<PolicyRuntime>,
    targets: Arc<Targets>,
    config: Arc<Config>,
    /// One run (or restore, or compaction chunk, or one target's orphan
    /// sweep) at a time: each sees the others' results, a move never
    /// interleaves with a merge, and the sweep never sees a copy between
    /// its write and its commit.
    running: Arc<tokio::sync::Mutex<()>>,
    /// When each (policy, dataset) last ran on schedule, ns.
    last_scheduled: Mutex<HashMap<(String, String), i64>>,
    /// Counters for `/metrics`, by metric name with labels.
    counters: Mutex<BTreeMap<String, u64>>,
    /// Partitions whose last step failed: `(failures, no retry before, ns)`.
    backoff: Mutex<HashMap<i64, (u32, i64)>>,
    /// Partitions a compaction request is working on.
    compacting: Mutex<HashSet<i64>>,
    /// The last partition facts built per dataset (by id), with the
    /// catalog's `partitions_seq` they are current for.
    manifests: Mutex<HashMap<i64, Arc<run::Manifest>>>,
    /// The last run's unchanged decisions per (policy, dataset id), for explain.
    unchanged: Mutex<HashMap<(String, i64), Arc<explain::Unchanged>>>,
}

/// The canary's partitions: each bound dataset's facts as a run builds
/// them, read from the catalog on the reloading thread.
#[derive(Debug)]
struct CanaryFromStore {
    store: Arc<Store>,
}

impl crate::policy::CanaryFacts for CanaryFromStore {
    fn bound_datasets(&self, binds: &dyn Fn(&str) -> bool) -> Result<Vec<crate::policy::DatasetInput>, String> {
        let mut bound = Vec::new();
        for dataset in self.store.datasets().into_iter().filter(|d| binds(d.name.as_str())) {
            let (_, records) = self.store.catalog().partitions_at_seq(dataset.record.id).map_err(|e| e.to_string())?;
            let facts = records.iter().map(|r| crate::policy::partition_facts(&dataset.name, r)).collect();
            bound.push((crate::policy::dataset_facts(&dataset.record, &dataset.schema()), Arc::new(facts)));
        }
        Ok(bound)
    }
}

impl Lifecycle {
    /// Starts the background sweep of copies a crash left between their
    /// write and their catalog commit on every target but the hot tier's
    /// (the store swept that one before flushing), and marks compaction
    /// jobs still `running` as failed. Blocking.
    pub fn open(store: Arc<Store>, policies: Arc<PolicyRuntime>, config: Arc<Config>) -> anyhow::Result<Lifecycle> {
        let targets = store.targets().clone();
        if config.lifecycle.policy_canary {
            policies.set_canary_facts(Arc::new(CanaryFromStore { store: store.clone() }));
        }
        let running = Arc::new(tokio::sync::Mutex::new(()));
        spawn_orphan_sweep(store.clone(), running.clone(), config.lifecycle.orphan_grace_ms)?;
        let interrupted = store.catalog().fail_interrupted_compactions(now_ns())?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "compaction jobs were interrupted; the next pass resumes them at their cursor");
        }
        Ok(Lifecycle {
            store,
            policies,
            targets,
            config,
            running,
            last_scheduled: Mutex::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            backoff: Mutex::new(HashMap::new()),
            compacting: Mutex::new(HashSet::new()),
            manifests: Mutex::new(HashMap::new()),
            unchanged: Mutex::new(HashMap::new()),
        })
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        self.store.catalog()
    }

    /// The storage targets and the target of each tier.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// How files arriving in `tier` are encoded: the tier's `[storage.tiers]`
    /// encoding (`None`: moves copy byte for byte). Archives are always
    /// re-encoded, so `archived` answers the archive defaults when unset.
    pub fn arrival_encoding(&self, tier: Tier) -> Option<Encoding> {
        match (tier, self.targets.encoding(tier)) {
            (Tier::Archived, None) => {
                Some(Encoding { zstd_level: ARCHIVE_ZSTD_LEVEL, row_group_rows_max: ARCHIVE_ROW_GROUP_ROWS })
            }
            (_, encoding) => encoding,
        }
    }

    /// Adds `by` to a `/metrics` counter (`name{labels}`).
    fn count(&self, metric: String, by: u64) {
        *self.counters.lock_or_recover().entry(metric).or_default() += by;
    }
}

/// Sweeps every target but the hot tier's on a background thread, so a
/// slow or unreachable target never holds up start-up: a target whose
/// `probe` fails is skipped, and a failed sweep is logged; both are tried
/// again at the next start. Each target is swept under the run lock, so no
/// copy between its write and its commit is taken for an orphan.
fn spawn_orphan_sweep(store: Arc<Store>, running: Arc<tokio::sync::Mutex<()>>, grace_ms: u64) -> anyhow::Result<()> {
    let started_ns = now_ns();
    std::thread::Builder::new().name("strata-orphan-sweep".into()).spawn(move || {
        let hot = store.hot().name().to_string();
        for target in store.targets().all().filter(|t| t.name() != hot) {
            if let Err(error) = target.probe() {
                tracing::warn!(target = target.name(), %error, "storage target unreachable; its orphan sweep waits for the next start");
                continue;
            }
            let _one_at_a_time = running.blocking_lock();
            let cutoff_ns = started_ns.saturating_sub(ms_to_ns(grace_ms));
            match sweep_unfinished_copies(store.catalog(), target.as_ref(), cutoff_ns) {
                Ok(swept) if swept.temporaries + swept.orphans + swept.young > 0 => tracing::info!(
                    target = target.name(),
                    temporaries = swept.temporaries,
                    orphans = swept.orphans,
                    kept_in_grace = swept.young,
                    "swept unfinished copies"
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(target = target.name(), %error, "orphan sweep failed; it is tried again at the next start");
                }
            }
        }
    })?;
    Ok(())
}

/// What one target's sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Swept {
    /// Temporaries of interrupted puts removed.
    temporaries: usize,
    /// Unreferenced objects removed.
    orphans: usize,
    /// Unreferenced objects kept: written at or after `cutoff_ns` (or of
    /// unknown age), they may be uploads in flight.
    young: usize,
}

/// Removes a target's temporaries and its orphans under `data/` (objects
/// the catalog does not reference) last written before `cutoff_ns`.
/// Blocking.
fn sweep_unfinished_copies(
    catalog: &Catalog,
    target: &dyn crate::storage::StorageTarget,
    cutoff_ns: i64,
) -> anyhow::Result<Swept> {
    let mut swept = Swept { temporaries: target.remove_temporaries()?, ..Swept::default() };
    let listed = target.list("data/")?;
    // Read after the listing: an object committed meanwhile is referenced.
    let referenced = catalog.referenced_keys(target.name())?;
    for object in listed.into_iter().filter(|o| !referenced.contains(o.key.as_str())) {
        if object.last_modified_ns.is_some_and(|written| written < cutoff_ns) {
            target.delete(&object.key)?;
            swept.orphans += 1;
        } else {
            swept.young += 1;
        }
    }
    Ok(swept)
}

/// The failure answered when a request names a dataset that does not exist.
fn no_dataset(name: &str) -> Failure {
    Failure::new(crate::error::ErrorCode::NotFound, format!("no dataset {name}"))
}

/// The failure answered when a request names a partition that does not
/// exist (`id`: its public id).
fn no_partition(id: &str) -> Failure {
    Failure::new(crate::error::ErrorCode::NotFound, format!("no partition {id}"))
}

/// Runs blocking work that is not a catalog call (copies, Parquet encoding,
/// storage deletes, policy calls) on tokio's blocking pool.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, LifecycleError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| LifecycleError::Task(e.to_string()))
}

/// Zstandard level of archives when the decision names none.
const ARCHIVE_ZSTD_LEVEL: i32 = 9;
/// Rows per row group of archives when the decision names none.
const ARCHIVE_ROW_GROUP_ROWS: usize = 1_048_576;

fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000)
}
