//! The lifecycle engine: runs retention, tiering and archival policies over
//! a dataset's partitions and executes what the guard rails accept.
//!
//! A run (`run.rs`): catalog snapshot → partition facts → the component →
//! guard rails ([`guard`]) → execution (`execute.rs`: moves in `moves.rs`,
//! archives in `archive.rs`, deletes) → run record and audit. One failing
//! partition never aborts the run; it is reported and decided again on the
//! next run. Compaction of small files ([`compaction`]) is host-native and
//! takes the same run lock for each chunk it merges. Background tasks: the
//! scheduler (`scheduler.rs`), the tombstone sweeper (`sweeper.rs`) and the
//! compactor. What an operator reads about all this is in `explain.rs`.
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
mod digests;
mod error;
mod execute;
mod explain;
pub mod guard;
mod moves;
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
use crate::storage::StorageTarget;
use crate::store::Store;
use crate::sync::Recover as _;
use crate::tier::Tier;
use crate::time::now_ns;
use error::LifecycleError;

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
    /// One run (or restore, or compaction chunk) at a time: each sees the
    /// others' results, and a move never interleaves with a merge.
    running: tokio::sync::Mutex<()>,
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
}

impl Lifecycle {
    /// Removes copies a crash left between their write and their catalog
    /// commit from every target but the hot tier's (the store swept that
    /// one before flushing), and marks compaction jobs still `running` as
    /// failed. Blocking.
    pub fn open(store: Arc<Store>, policies: Arc<PolicyRuntime>, config: Arc<Config>) -> anyhow::Result<Lifecycle> {
        let targets = store.targets().clone();
        sweep_unfinished_copies(&store, &targets)?;
        let interrupted = store.catalog().fail_interrupted_compactions(now_ns())?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "compaction jobs were interrupted; the next pass resumes them at their cursor");
        }
        Ok(Lifecycle {
            store,
            policies,
            targets,
            config,
            running: tokio::sync::Mutex::new(()),
            last_scheduled: Mutex::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            backoff: Mutex::new(HashMap::new()),
            compacting: Mutex::new(HashSet::new()),
            manifests: Mutex::new(HashMap::new()),
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

/// Removes temporaries and orphans (objects the catalog does not reference)
/// from every target but the hot tier's: local targets now, remote ones on
/// a thread of their own, so that a slow or sick object store never holds
/// up start-up (a remote target aborts only the uploads of earlier
/// processes, and keeps orphans younger than [`REMOTE_ORPHAN_GRACE_NS`], so
/// the moves that start meanwhile are safe). Blocking.
fn sweep_unfinished_copies(store: &Arc<Store>, targets: &Arc<Targets>) -> anyhow::Result<()> {
    let swept = |target: &Arc<dyn StorageTarget>| target.name() != store.hot().name();
    for target in targets.all().filter(|t| swept(t) && t.local_root().is_some()) {
        sweep_target(store, target.as_ref())?;
    }
    let remote: Vec<Arc<dyn StorageTarget>> =
        targets.all().filter(|t| swept(t) && t.local_root().is_none()).cloned().collect();
    if !remote.is_empty() {
        let store = store.clone();
        std::thread::Builder::new().name("strata-remote-sweep".into()).spawn(move || {
            for target in remote {
                if let Err(error) = sweep_target(&store, target.as_ref()) {
                    tracing::warn!(target = target.name(), %error, "storage target not swept; the next start tries again");
                }
            }
        })?;
    }
    Ok(())
}

/// Sweeps one target; one that cannot be reached is left for the next start.
fn sweep_target(store: &Store, target: &dyn StorageTarget) -> anyhow::Result<()> {
    let swept = target.remove_temporaries().and_then(|removed| Ok((removed, target.list("data/")?)));
    let (removed, objects) = match swept {
        Ok(swept) => swept,
        Err(error @ crate::storage::StorageError::Unavailable { .. }) => {
            tracing::warn!(target = target.name(), %error, "storage target unreachable; not swept until the next start");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    let referenced = store.catalog().referenced_keys(target.name())?;
    let young_after = now_ns() - REMOTE_ORPHAN_GRACE_NS;
    let mut orphans = 0;
    for object in objects {
        let young = target.local_root().is_none() && object.last_modified_ns.is_none_or(|t| t > young_after);
        if !referenced.contains(object.key.as_str()) && !young {
            target.delete(&object.key)?;
            orphans += 1;
        }
    }
    if removed + orphans > 0 {
        tracing::info!(target = target.name(), temporaries = removed, orphans, "swept unfinished copies");
    }
    Ok(())
}

/// How old an object on a remote target (which no directory lock guards)
/// must be before the start-up sweep deletes it as an orphan: 1 h.
const REMOTE_ORPHAN_GRACE_NS: i64 = 3_600 * 1_000_000_000;

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
