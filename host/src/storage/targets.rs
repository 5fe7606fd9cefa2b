//! The configured storage targets, by name, and the target and file
//! encoding of each tier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::staging::{LocalFile, Staging};
use super::{
    CachedFile, Faulty, LocalDirectory, ObjectKey, ReadCache, S3Target, StorageError, StorageTarget, TargetHealth,
};
use crate::config::{Config, TargetKind};
use crate::data_dir::{DirectoryLock, DirectoryLockError};
use crate::parquet_file::Encoding;
use crate::tier::Tier;

/// Every tier, hottest first.
pub const TIERS: [Tier; 4] = [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archived];

#[derive(Debug)]
struct TierStorage {
    target: Arc<dyn StorageTarget>,
    encoding: Option<Encoding>,
}

/// The storage targets of one configuration and what each tier uses.
/// Callers see `Arc<dyn StorageTarget>`, never a concrete backend.
#[derive(Debug)]
pub struct Targets {
    by_name: BTreeMap<String, Arc<dyn StorageTarget>>,
    by_tier: BTreeMap<Tier, TierStorage>,
    /// Injected faults by target name (fault-injection runs only).
    faults: BTreeMap<String, Vec<String>>,
    /// Where copies stage downloads and re-encoded files.
    staging: Staging,
    /// The locks on the local targets' directories, held while the targets are open.
    _locks: Vec<Arc<DirectoryLock>>,
    /// The read-through cache of the targets that are not local (none
    /// when every target is).
    cache: Option<ReadCache>,
    /// The last probe of each remote target.
    health: TargetHealth,
}

/// A data file a reader can open in place: a local target's file, or a
/// pinned copy in the read cache.
#[derive(Debug)]
pub enum Readable {
    /// The file in a local target's directory.
    InPlace(PathBuf),
    /// The read cache's copy of a remote file, pinned while this lives.
    Cached(CachedFile),
}

impl Readable {
    /// The local path to read.
    pub fn path(&self) -> &Path {
        match self {
            Readable::InPlace(path) => path,
            Readable::Cached(file) => file.path(),
        }
    }

    /// Opens the file for reading. Its bytes never change while it is
    /// readable: keys are written create-only, and a cached copy stays
    /// pinned.
    pub fn open(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::open(self.path())
    }

    /// Bytes served by the read cache without a fetch (0 for local files).
    pub fn bytes_from_cache(&self) -> u64 {
        match self {
            Readable::Cached(file) if !file.fetched() => file.size(),
            _ => 0,
        }
    }

    /// Bytes fetched from the remote target to answer this read.
    pub fn bytes_from_remote(&self) -> u64 {
        match self {
            Readable::Cached(file) if file.fetched() => file.size(),
            _ => 0,
        }
    }
}

impl Targets {
    /// Opens every target of `config` (local directories are created) and
    /// maps the tiers. A target named by `STRATA_FAILPOINTS` is wrapped in
    /// [`Faulty`]. Two local targets whose directories turn out to be the
    /// same or nested once symlinks are resolved are refused (the
    /// configuration check compares the paths as written). Each local
    /// target's directory is locked before anything lists or writes it, so
    /// that no other server sweeps or overwrites its files; a directory
    /// another process holds fails the open. The staging directory
    /// (`<data_dir>/staging`) is emptied. Blocking.
    pub fn open(config: &Config) -> Result<Targets, StorageError> {
        let mut by_name = BTreeMap::new();
        let mut faults = BTreeMap::new();
        let mut roots: Vec<(String, PathBuf)> = Vec::new();
        let mut locks = Vec::new();
        let own_data_dir = config.server.data_dir.canonicalize().unwrap_or_else(|_| config.server.data_dir.clone());
        for resolved in config.storage_targets() {
            let name = resolved.name.as_str();
            let target: Arc<dyn StorageTarget> = match resolved.kind {
                TargetKind::Local => {
                    let local = LocalDirectory::open(name, &resolved.path)?;
                    let root = local
                        .root()
                        .canonicalize()
                        .map_err(|source| StorageError::Io { key: local.root().display().to_string(), source })?;
                    if let Some((other, other_root)) =
                        roots.iter().find(|(_, r)| crate::config::paths_overlap(r, &root))
                    {
                        return Err(StorageError::Misconfigured(format!(
                            "storage targets {other} ({}) and {name} ({}) share or nest directories once symlinks are resolved",
                            other_root.display(),
                            root.display()
                        )));
                    }
                    refuse_nesting_in_a_lock(name, &root, &own_data_dir)?;
                    locks.push(lock_target(name, &root, &own_data_dir)?);
                    roots.push((name.to_string(), root));
                    Arc::new(local)
                }
                // Contacts nothing: a sick store never blocks start-up.
                TargetKind::S3 => match &resolved.s3 {
                    Some(settings) => Arc::new(S3Target::open(name, settings, &resolved.path)?),
                    None => {
                        return Err(StorageError::Misconfigured(format!("storage target {name} has no s3 settings")));
                    }
                },
            };
            let injected = crate::failpoint::storage_faults(name);
            let target: Arc<dyn StorageTarget> = if injected.is_empty() {
                target
            } else {
                let faulty = Faulty::new(target, injected);
                tracing::warn!(target = name, faults = ?faulty.describe(), "storage target wrapped for fault injection");
                faults.insert(name.to_string(), faulty.describe());
                Arc::new(faulty)
            };
            by_name.insert(name.to_string(), target);
        }
        let mut targets = Targets::new(
            by_name.into_values().collect(),
            TIERS.map(|tier| (tier, config.tier_target(tier), config.tier_encoding(tier))),
        )?;
        targets.staging = Staging::open(&config.server.data_dir.join("staging"))?;
        // Flushes and WAL recovery write the hot tier in place.
        let hot = targets.tier(Tier::Hot);
        if hot.local_root().is_none() {
            return Err(StorageError::Misconfigured(format!(
                "the hot tier's storage target {} is of kind {}; the hot tier must be local",
                hot.name(),
                hot.kind()
            )));
        }
        targets.faults = faults;
        targets._locks = locks;
        if targets.all().any(|target| target.local_root().is_none()) {
            let cache = &config.storage.cache;
            let timeout = cache.fill_timeout_ms.map(std::time::Duration::from_millis);
            targets.cache = Some(ReadCache::open(&config.cache_dir(), cache.bytes_max, timeout)?);
        }
        Ok(targets)
    }

    /// Targets from opened parts, e.g. in-memory targets in unit tests.
    /// Every tier's target must be among `targets`.
    pub fn new(
        targets: Vec<Arc<dyn StorageTarget>>,
        tiers: [(Tier, &str, Option<Encoding>); 4],
    ) -> Result<Targets, StorageError> {
        let by_name: BTreeMap<String, Arc<dyn StorageTarget>> =
            targets.into_iter().map(|t| (t.name().to_string(), t)).collect();
        let mut by_tier = BTreeMap::new();
        for (tier, name, encoding) in tiers {
            let target = by_name.get(name).cloned().ok_or_else(|| {
                StorageError::Misconfigured(format!(
                    "tier {} uses storage target {name}, which does not exist",
                    tier.as_str()
                ))
            })?;
            by_tier.insert(tier, TierStorage { target, encoding });
        }
        if let Some(missing) = TIERS.iter().find(|t| !by_tier.contains_key(t)) {
            return Err(StorageError::Misconfigured(format!("tier {} has no storage target", missing.as_str())));
        }
        let staging = Staging::private()?;
        Ok(Targets {
            by_name,
            by_tier,
            faults: BTreeMap::new(),
            staging,
            _locks: Vec::new(),
            health: TargetHealth::default(),
            cache: None,
        })
    }

    /// These targets reading remote files through `cache`.
    pub fn with_cache(mut self, cache: ReadCache) -> Targets {
        self.cache = Some(cache);
        self
    }

    /// The target of a tier.
    pub fn tier(&self, tier: Tier) -> &Arc<dyn StorageTarget> {
        &self.by_tier[&tier].target
    }

    /// How files arriving in a tier are re-encoded; `None`: copied byte for byte.
    pub fn encoding(&self, tier: Tier) -> Option<Encoding> {
        self.by_tier[&tier].encoding
    }

    /// A target by name.
    pub fn named(&self, name: &str) -> Option<&Arc<dyn StorageTarget>> {
        self.by_name.get(name)
    }

    /// Every tier with its target, hottest first.
    pub fn tiers(&self) -> impl Iterator<Item = (Tier, &Arc<dyn StorageTarget>)> {
        self.by_tier.iter().map(|(tier, storage)| (*tier, &storage.target))
    }

    /// The tiers that use target `name`, hottest first.
    pub fn tiers_of(&self, name: &str) -> Vec<Tier> {
        self.tiers().filter(|(_, target)| target.name() == name).map(|(tier, _)| tier).collect()
    }

    /// Every target once, by name, used by a tier or not.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn StorageTarget>> {
        self.by_name.values()
    }

    /// Whether each remote target answered its last probe.
    pub fn health(&self) -> &TargetHealth {
        &self.health
    }

    /// The faults injected into target `name` (empty outside fault-injection runs).
    pub fn faults(&self, name: &str) -> &[String] {
        self.faults.get(name).map_or(&[], Vec::as_slice)
    }

    /// The staging directory.
    pub fn staging(&self) -> &Staging {
        &self.staging
    }

    /// Object `key` of `target` as a local file to read: in place on a
    /// local target, else downloaded into the staging directory in bounded
    /// chunks. A target with an injected `get` fault is always downloaded,
    /// through the fault.
    pub fn stage(&self, target: &dyn StorageTarget, key: &ObjectKey) -> Result<LocalFile, StorageError> {
        let get_fault = self.faults(target.name()).iter().any(|fault| fault.starts_with("storage.get."));
        self.staging.fetch(target, key, !get_fault)
    }

    /// The local path of a catalog file `(target, object key)`, for readers
    /// that open files in place (DuckDB); `None` if the target is unknown or
    /// not local.
    pub fn local_path(&self, target: &str, object_key: &str) -> Option<PathBuf> {
        self.named(target)?.local_path(&ObjectKey::parse(object_key).ok()?)
    }

    /// The read cache, when a target is remote.
    pub fn cache(&self) -> Option<&ReadCache> {
        self.cache.as_ref()
    }

    /// A catalog file `(target, object key)` of `size` bytes with CRC32C
    /// `crc32c`, where a reader can open it: a local target's file in
    /// place, a remote target's through the read cache (fetched and checked
    /// first if it is not resident; pinned until the `Readable` is
    /// dropped). Blocking. A fetch that fails is
    /// [`StorageError::Unavailable`] naming the target.
    pub fn readable(&self, target: &str, object_key: &str, size: u64, crc32c: u32) -> Result<Readable, StorageError> {
        let key = ObjectKey::parse(object_key)?;
        let storage = self.named(target).ok_or_else(|| {
            StorageError::Misconfigured(format!("file {key} is on storage target {target}, which is not configured"))
        })?;
        if let Some(path) = storage.local_path(&key) {
            return Ok(Readable::InPlace(path));
        }
        let cache = self.cache.as_ref().ok_or_else(|| {
            StorageError::Misconfigured(format!("storage target {target} is remote and there is no read cache"))
        })?;
        Ok(Readable::Cached(cache.get(storage.as_ref(), &key, size, crc32c)?))
    }
}

/// Refuses a target inside a directory that holds a Strata lock file, other than
/// this server's data directory: another server's (or an earlier one's)
/// data directory or target, which that server sweeps, empties
/// (`query-tmp`) or lists as its own. Stale lock files count too: the
/// server they belong to may start again.
fn refuse_nesting_in_a_lock(name: &str, root: &Path, own_data_dir: &Path) -> Result<(), StorageError> {
    for ancestor in root.ancestors().skip(1).filter(|a| *a != own_data_dir) {
        let lock_file = ancestor.join(crate::data_dir::LOCK_FILE_NAME);
        // Strata's lock files hold a pid (other programs' LOCK files do not).
        if let Some(pid) = crate::data_dir::holder_pid(&lock_file) {
            return Err(StorageError::Misconfigured(format!(
                "storage target {name} at {} lies inside {}, a directory of another strata server \
                 ({} names pid {pid}); give the target a directory of its own, or remove that file \
                 if no server uses {} any more",
                root.display(),
                ancestor.display(),
                lock_file.display(),
                ancestor.display(),
            )));
        }
    }
    Ok(())
}

/// Locks a local target's directory; within this process a directory is
/// locked once, whichever configuration opens it.
fn lock_target(name: &str, root: &Path, own_data_dir: &Path) -> Result<Arc<DirectoryLock>, StorageError> {
    crate::data_dir::lock_directory_once(root).map_err(|error| match error {
        // The one lock this process holds outside the shared ones.
        DirectoryLockError::Held { directory, .. } if directory == own_data_dir => {
            StorageError::Misconfigured(format!(
                "storage target {name} at {} is this server's data directory; give the target a directory of its own",
                directory.display()
            ))
        }
        DirectoryLockError::Held { directory, holder_pid, .. } => {
            StorageError::TargetLocked { target: name.to_string(), directory, holder_pid }
        }
        DirectoryLockError::Io { directory, source, .. } => {
            StorageError::Io { key: directory.display().to_string(), source }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::InMemory;

    #[test]
    fn tiers_resolve_to_their_targets_and_share_them() {
        let fast: Arc<dyn StorageTarget> = Arc::new(InMemory::new("fast"));
        let slow: Arc<dyn StorageTarget> = Arc::new(InMemory::new("slow"));
        let encoding = Some(Encoding { zstd_level: 9, row_group_rows_max: 100 });
        let targets = Targets::new(
            vec![fast, slow],
            [
                (Tier::Hot, "fast", None),
                (Tier::Warm, "slow", None),
                (Tier::Cold, "slow", encoding),
                (Tier::Archived, "slow", None),
            ],
        )
        .unwrap();
        assert_eq!(targets.tier(Tier::Cold).name(), "slow");
        assert_eq!(targets.encoding(Tier::Cold), encoding);
        assert_eq!(targets.encoding(Tier::Warm), None);
        assert_eq!(targets.tiers_of("slow"), [Tier::Warm, Tier::Cold, Tier::Archived]);
        assert_eq!(targets.all().count(), 2);
        assert_eq!(targets.local_path("fast", "data/1/2/x.parquet"), None, "in-memory targets have no paths");

        let only: Arc<dyn StorageTarget> = Arc::new(InMemory::new("only"));
        let error = Targets::new(
            vec![only],
            [
                (Tier::Hot, "only", None),
                (Tier::Warm, "gone", None),
                (Tier::Cold, "only", None),
                (Tier::Archived, "only", None),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("gone"), "{error}");
    }

    #[test]
    fn s3_targets_open_without_contacting_their_store_and_never_hold_the_hot_tier() {
        let root = std::env::temp_dir().join(format!("strata-targets-s3-{}", rand::random::<u64>()));
        // Nothing listens on port 1: opening must not notice.
        let remote = "[storage.targets.remote]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:1\"\n\
                      allow_http = true\n";
        let text =
            format!("[server]\ndata_dir = \"{}\"\n{remote}[storage.tiers.cold]\ntarget = \"remote\"\n", root.display());
        let targets = Targets::open(&Config::parse(&text).unwrap()).unwrap();
        assert_eq!((targets.tier(Tier::Cold).kind(), targets.tier(Tier::Cold).name()), ("s3", "remote"));
        assert_eq!(targets.local_path("remote", "data/1/2/x.parquet"), None);
        drop(targets);
        // Validation refuses the hot tier on a bucket; so does opening, for
        // a configuration built without it.
        let mut config = Config::parse(&text).unwrap();
        config.storage.tiers.hot.target = Some("remote".to_string());
        assert!(config.validate().unwrap_err().to_string().contains("the hot tier must be local"));
        let error = Targets::open(&config).unwrap_err().to_string();
        assert!(error.contains("hot tier's storage target remote is of kind s3"), "{error}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn symlinked_directories_cannot_alias_two_targets() {
        let root = std::env::temp_dir().join(format!("strata-targets-{}", rand::random::<u64>()));
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
        let config = Config::parse(&format!(
            "[server]\ndata_dir = \"{}\"\n[storage.targets.a]\npath = \"{}\"\n[storage.targets.b]\npath = \"{}\"\n",
            root.join("data").display(),
            root.join("real").display(),
            root.join("alias/inner").display(),
        ))
        .expect("the paths as written do not overlap");
        let error = Targets::open(&config).unwrap_err().to_string();
        assert!(error.contains("share or nest"), "{error}");
        let config = Config::parse(&format!("[server]\ndata_dir = \"{}\"\n", root.join("data").display())).unwrap();
        let targets = Targets::open(&config).unwrap();
        assert_eq!(targets.tier(Tier::Archived).name(), "archive");
        assert_eq!(targets.tier(Tier::Archived).kind(), "local");
        assert!(targets.tier(Tier::Hot).location().ends_with("data/storage/hot"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn target_directories_are_locked_once_per_process_and_the_lock_is_no_object() {
        let root = std::env::temp_dir().join(format!("strata-targets-lock-{}", rand::random::<u64>()));
        let config = Config::parse(&format!(
            "[server]\ndata_dir = \"{}\"\n[storage.targets.shared]\npath = \"{}\"\n\
             [storage.tiers.warm]\ntarget = \"shared\"\n[storage.tiers.cold]\ntarget = \"shared\"\n",
            root.join("data").display(),
            root.join("shared").display(),
        ))
        .unwrap();
        let first = Targets::open(&config).unwrap();
        let again = Targets::open(&config).expect("this process already holds the locks");
        let hot = first.tier(Tier::Hot);
        hot.put(&ObjectKey::parse("data/1/2/a.parquet").unwrap(), b"x").unwrap();
        let keys: Vec<String> = hot.list("").unwrap().into_iter().map(|o| o.key.to_string()).collect();
        assert_eq!(keys, ["data/1/2/a.parquet"], "the lock's pid file is not listed");
        assert_eq!(hot.remove_temporaries().unwrap(), 0);
        assert!(root.join("data/storage/hot").join(crate::data_dir::LOCK_FILE_NAME).exists());
        drop((first, again));

        // Another process's lock: a second open of the directory conflicts
        // alike, and the pid in LOCK is what the message names.
        let held = crate::data_dir::lock_directory(&root.join("shared")).unwrap();
        std::fs::write(root.join("shared").join(crate::data_dir::LOCK_FILE_NAME), "4242\n").unwrap();
        match Targets::open(&config).unwrap_err() {
            StorageError::TargetLocked { target, directory, holder_pid } => {
                assert_eq!(target, "shared");
                assert!(directory.ends_with("shared"), "{}", directory.display());
                assert_eq!(holder_pid, Some(4242));
            }
            other => panic!("expected TargetLocked, got {other}"),
        }
        drop(held);
        drop(Targets::open(&config).unwrap());

        // Inside another server's directory (its LOCK file stays after it stops).
        let config = Config::parse(&format!(
            "[server]\ndata_dir = \"{}\"\n[storage.targets.inner]\npath = \"{}\"\n",
            root.join("data2").display(),
            root.join("shared/query-tmp/x").display(),
        ))
        .unwrap();
        let error = Targets::open(&config).unwrap_err().to_string();
        assert!(error.contains("storage target inner") && error.contains("lies inside"), "{error}");
        assert!(error.contains(&root.join("shared").display().to_string()), "{error}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_target_that_resolves_to_the_data_directory_is_named_as_such() {
        let root = std::env::temp_dir().join(format!("strata-targets-own-{}", rand::random::<u64>()));
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
        // Every default target elsewhere, so only the lock can tell.
        let mut text = format!("[server]\ndata_dir = \"{}\"\n", root.join("real").display());
        for name in ["hot", "warm", "cold", "archive"] {
            text += &format!("[storage.targets.{name}]\npath = \"{}\"\n", root.join(name).display());
        }
        text += &format!("[storage.targets.own]\npath = \"{}\"\n", root.join("alias").display());
        let config = Config::parse(&text).expect("the paths as written do not overlap");
        let held = crate::data_dir::lock_data_dir(&root.join("real")).unwrap();
        let error = Targets::open(&config).unwrap_err().to_string();
        assert!(error.contains("storage target own") && error.contains("this server's data directory"), "{error}");
        drop(held);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn local_files_are_read_in_place_and_remote_ones_through_the_cache() {
        use crate::failpoint::{Action, StorageOp};
        let root = std::env::temp_dir().join(format!("strata-targets-readable-{}", rand::random::<u64>()));
        let local: Arc<dyn StorageTarget> = Arc::new(LocalDirectory::open("hot", &root.join("hot")).unwrap());
        let remote: Arc<dyn StorageTarget> = Arc::new(InMemory::new("remote"));
        let tiers = |remote: &'static str| {
            [
                (Tier::Hot, "hot", None),
                (Tier::Warm, remote, None),
                (Tier::Cold, remote, None),
                (Tier::Archived, remote, None),
            ]
        };
        let bytes = b"remote parquet bytes".as_slice();
        let (size, crc) = (bytes.len() as u64, crc32c::crc32c(bytes));
        let key = "data/1/2/f.parquet";
        local.put(&ObjectKey::parse(key).unwrap(), bytes).unwrap();
        remote.put(&ObjectKey::parse(key).unwrap(), bytes).unwrap();

        let uncached = Targets::new(vec![local.clone(), remote.clone()], tiers("remote")).unwrap();
        let error = uncached.readable("remote", key, size, crc).unwrap_err().to_string();
        assert!(error.contains("no read cache"), "{error}");
        let cache = ReadCache::open(&root.join("cache"), 1 << 20, None).unwrap();
        let targets = uncached.with_cache(cache.clone());

        let in_place = targets.readable("hot", key, size, crc).unwrap();
        assert!(matches!(in_place, Readable::InPlace(_)));
        assert_eq!(in_place.path(), root.join("hot").join(key));
        assert_eq!((in_place.bytes_from_cache(), in_place.bytes_from_remote()), (0, 0));
        let fetched = targets.readable("remote", key, size, crc).unwrap();
        assert!(fetched.path().starts_with(root.join("cache")));
        assert_eq!(std::fs::read(fetched.path()).unwrap(), bytes);
        assert_eq!((fetched.bytes_from_cache(), fetched.bytes_from_remote()), (0, size));
        let hit = targets.readable("remote", key, size, crc).unwrap();
        assert_eq!((hit.bytes_from_cache(), hit.bytes_from_remote()), (size, 0));
        let error = targets.readable("gone", key, size, crc).unwrap_err().to_string();
        assert!(error.contains("gone") && error.contains("not configured"), "{error}");
        drop((fetched, hit, targets));

        // Injected get faults reach fills: each is the target's unavailability.
        for (action, reason) in
            [(Action::Error, "storage.get.remote"), (Action::Short, "read back as"), (Action::Corrupt, "read back as")]
        {
            let faulty: Arc<dyn StorageTarget> = Arc::new(Faulty::new(remote.clone(), vec![(StorageOp::Get, action)]));
            let targets = Targets::new(vec![local.clone(), faulty], tiers("remote")).unwrap().with_cache(cache.clone());
            let other = "data/1/2/other.parquet";
            let _ = remote.put(&ObjectKey::parse(other).unwrap(), bytes);
            match targets.readable("remote", other, size, crc) {
                Err(StorageError::Unavailable { target, reason: said }) => {
                    assert_eq!(target, "remote");
                    assert!(said.contains(reason), "{action:?}: {said}");
                }
                unexpected => panic!("{action:?}: expected Unavailable, got {unexpected:?}"),
            }
        }
        assert_eq!(cache.entries(), 1, "no damaged copy was kept");
        drop(cache);
        std::fs::remove_dir_all(root).unwrap();
    }
}
