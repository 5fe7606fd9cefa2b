//! `[storage]`: the storage targets (resolved against `data_dir`; nesting,
//! aliasing and the data directory's own subdirectories refused) and each
//! tier's target and encoding.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::names::TargetName;
use crate::parquet_file::Encoding;
use crate::tier::Tier;

/// `[storage]`: named storage targets, and which one each tier uses.
///
/// Four local targets always exist, `hot`, `warm`, `cold` and `archive`, in
/// `<data_dir>/storage/<name>`; declaring one of those names moves it.
/// Defaults map each tier to the target of its name (`archived` →
/// `archive`), so `strata serve` works with nothing configured.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `[storage.targets.NAME]`, by name.
    pub targets: BTreeMap<String, TargetConfig>,
    /// `[storage.tiers.TIER]`.
    pub tiers: TiersConfig,
    /// `[storage.cache]`: the read cache of remote targets' files.
    pub cache: CacheConfig,
}

/// `[storage.cache]`: where queries keep local copies of the files of
/// remote (object-store) targets, and how many bytes at most (least
/// recently used copies go first; copies a running query reads stay, so the
/// cache may pass `bytes_max` while every copy is in use).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// The directory; relative paths are taken relative to
    /// `server.data_dir`. Default: `<data_dir>/cache`.
    pub dir: Option<PathBuf>,
    /// Bytes of cached files at most. Default: 10 GiB.
    pub bytes_max: u64,
    /// How long one fetch into the cache may take, ms; a query waiting on
    /// a longer one fails with `storage_unavailable`. Default: no limit
    /// beyond the target's own request timeouts.
    pub fill_timeout_ms: Option<u64>,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig { dir: None, bytes_max: 10 * 1024 * 1024 * 1024, fill_timeout_ms: None }
    }
}

/// The storage targets that exist without configuration.
pub const DEFAULT_TARGETS: [&str; 4] = ["hot", "warm", "cold", "archive"];

/// `[storage.targets.NAME]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The backend; `local` (a directory) is the only kind so far.
    #[serde(default)]
    pub kind: TargetKind,
    /// The directory of a local target; relative paths are taken relative
    /// to `server.data_dir`. Default: `<data_dir>/storage/<name>`.
    pub path: Option<PathBuf>,
}

/// The kind of a storage target.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A directory on a local (or mounted) file system.
    #[default]
    Local,
}

impl TargetKind {
    /// The kind's name in TOML and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Local => "local",
        }
    }
}

/// `[storage.tiers]`: one table per tier.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    /// `[storage.tiers.hot]`
    pub hot: TierConfig,
    /// `[storage.tiers.warm]`
    pub warm: TierConfig,
    /// `[storage.tiers.cold]`
    pub cold: TierConfig,
    /// `[storage.tiers.archived]`
    pub archived: TierConfig,
}

impl TiersConfig {
    /// The table of one tier.
    pub fn get(&self, tier: Tier) -> &TierConfig {
        match tier {
            Tier::Hot => &self.hot,
            Tier::Warm => &self.warm,
            Tier::Cold => &self.cold,
            Tier::Archived => &self.archived,
        }
    }
}

/// `[storage.tiers.TIER]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TierConfig {
    /// The storage target of the tier. Default: the target named like the
    /// tier (`archive` for `archived`).
    pub target: Option<String>,
    /// Re-encode files arriving in this tier with this zstd level (1..=22).
    /// With neither encoding key set, files are copied byte for byte.
    pub zstd_level: Option<i32>,
    /// Re-encode files arriving in this tier with row groups of at most
    /// this many rows. The key not set takes its `[ingest]` value.
    pub row_group_rows_max: Option<usize>,
}

/// A storage target with its location resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    /// The validated name.
    pub name: TargetName,
    /// The backend.
    pub kind: TargetKind,
    /// The directory (absolute when `server.data_dir` is).
    pub path: PathBuf,
}

impl Config {
    /// Target names are safe identifiers, every tier's target exists, tier
    /// encodings are in range, and no two targets share or nest directories
    /// (nor hold the data directory, or live inside its WAL or caches).
    pub(super) fn validate_storage(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for name in self.storage.targets.keys() {
            TargetName::parse(name).map_err(|e| ConfigError::Invalid(format!("[storage.targets.{name}]: {e}")))?;
        }
        for (name, target) in &self.storage.targets {
            if target.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return invalid(format!("storage.targets.{name}.path is empty"));
            }
        }
        let targets = self.storage_targets();
        for tier in [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archived] {
            let table = self.storage.tiers.get(tier);
            let target = self.tier_target(tier);
            if !targets.iter().any(|t| t.name.as_str() == target) {
                return invalid(format!(
                    "storage.tiers.{}.target = {target:?} names no storage target; declare [storage.targets.{target}]",
                    tier.as_str()
                ));
            }
            if let Some(level) = table.zstd_level
                && !(1..=22).contains(&level)
            {
                return invalid(format!("storage.tiers.{}.zstd_level = {level} must be within 1..=22", tier.as_str()));
            }
            if table.row_group_rows_max == Some(0) {
                return invalid(format!("storage.tiers.{}.row_group_rows_max must be greater than 0", tier.as_str()));
            }
        }
        let data_dir = normalize(&absolute(&self.server.data_dir));
        let reserved = ["wal", "policy-cache", "query-tmp"].map(|d| data_dir.join(d));
        for (i, a) in targets.iter().enumerate() {
            let path = normalize(&absolute(&a.path));
            if data_dir.starts_with(&path) {
                return invalid(format!(
                    "storage target {} at {} would hold the data directory {} (catalog and WAL); give it its own directory",
                    a.name,
                    a.path.display(),
                    data_dir.display()
                ));
            }
            if let Some(inside) = reserved.iter().find(|r| path.starts_with(r)) {
                return invalid(format!(
                    "storage target {} at {} lies inside {}, which Strata manages",
                    a.name,
                    a.path.display(),
                    inside.display()
                ));
            }
            for b in &targets[i + 1..] {
                let other = normalize(&absolute(&b.path));
                if paths_overlap(&path, &other) {
                    return invalid(format!(
                        "storage targets {} ({}) and {} ({}) share or nest directories; each target needs its own",
                        a.name,
                        a.path.display(),
                        b.name,
                        b.path.display()
                    ));
                }
            }
        }
        self.validate_cache()
    }

    /// `[storage.cache]`: a positive budget and timeout, and a directory of
    /// its own: not holding the data directory, not inside the directories
    /// Strata manages there, sharing or nesting with no storage target's
    /// directory (the cache deletes what looks like its leftovers).
    fn validate_cache(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let cache = &self.storage.cache;
        if cache.bytes_max == 0 {
            return invalid("storage.cache.bytes_max must be greater than 0".to_string());
        }
        if cache.fill_timeout_ms == Some(0) {
            return invalid("storage.cache.fill_timeout_ms must be greater than 0".to_string());
        }
        if cache.dir.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return invalid("storage.cache.dir is empty".to_string());
        }
        let dir = normalize(&absolute(&self.cache_dir()));
        let data_dir = normalize(&absolute(&self.server.data_dir));
        if data_dir.starts_with(&dir) {
            return invalid(format!(
                "storage.cache.dir {} would hold the data directory {}; give the cache its own directory",
                dir.display(),
                data_dir.display()
            ));
        }
        if let Some(inside) = ["wal", "policy-cache", "query-tmp", "staging"]
            .map(|d| data_dir.join(d))
            .iter()
            .find(|r| dir.starts_with(r))
        {
            return invalid(format!(
                "storage.cache.dir {} lies inside {}, which Strata manages",
                dir.display(),
                inside.display()
            ));
        }
        for target in &self.storage_targets() {
            if paths_overlap(&dir, &normalize(&absolute(&target.path))) {
                return invalid(format!(
                    "storage.cache.dir {} and storage target {} ({}) share or nest directories; the cache needs its own",
                    dir.display(),
                    target.name,
                    target.path.display()
                ));
            }
        }
        Ok(())
    }

    /// The read cache's directory, resolved against `server.data_dir`.
    pub fn cache_dir(&self) -> PathBuf {
        match &self.storage.cache.dir {
            Some(dir) if dir.is_absolute() => dir.clone(),
            Some(dir) => self.server.data_dir.join(dir),
            None => self.server.data_dir.join("cache"),
        }
    }

    /// Every storage target: the four defaults, then those declared, each
    /// once, with relative paths resolved against `server.data_dir`. Call
    /// after [`Config::validate`] (names are checked there).
    pub fn storage_targets(&self) -> Vec<ResolvedTarget> {
        let declared = self.storage.targets.iter().map(|(name, t)| (name.as_str(), t.clone()));
        let defaults = DEFAULT_TARGETS
            .iter()
            .filter(|name| !self.storage.targets.contains_key(**name))
            .map(|name| (*name, TargetConfig::default()));
        let mut out: Vec<ResolvedTarget> = defaults
            .chain(declared)
            .filter_map(|(name, target)| {
                let path = match target.path {
                    Some(path) if path.is_absolute() => path,
                    Some(path) => self.server.data_dir.join(path),
                    None => self.server.data_dir.join("storage").join(name),
                };
                Some(ResolvedTarget { name: TargetName::parse(name).ok()?, kind: target.kind, path })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The name of the storage target `tier` uses.
    pub fn tier_target(&self, tier: Tier) -> &str {
        self.storage.tiers.get(tier).target.as_deref().unwrap_or(match tier {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
            Tier::Archived => "archive",
        })
    }

    /// How files arriving in `tier` are re-encoded; `None`: copied as they
    /// are. A key the tier does not set takes its `[ingest]` value.
    pub fn tier_encoding(&self, tier: Tier) -> Option<Encoding> {
        let table = self.storage.tiers.get(tier);
        if table.zstd_level.is_none() && table.row_group_rows_max.is_none() {
            return None;
        }
        Some(Encoding {
            zstd_level: table.zstd_level.unwrap_or(self.ingest.zstd_level),
            row_group_rows_max: table.row_group_rows_max.unwrap_or(self.ingest.row_group_rows_max),
        })
    }
}

/// `path` made absolute against the working directory (lexically; the path
/// need not exist).
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(path) }
}

/// `path` with `.` dropped and `..` applied, without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether two (normalized) directories are the same or one holds the other.
pub fn paths_overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_cache_has_defaults_and_a_directory_of_its_own() {
        let config = Config::parse("[server]\ndata_dir = \"/srv/strata\"\n").unwrap();
        assert_eq!(config.cache_dir(), PathBuf::from("/srv/strata/cache"));
        assert_eq!(config.storage.cache.bytes_max, 10 * 1024 * 1024 * 1024);
        assert_eq!(config.storage.cache.fill_timeout_ms, None);
        let config = Config::parse(
            "[server]\ndata_dir = \"/srv/strata\"\n[storage.cache]\ndir = \"rc\"\nbytes_max = 1000\nfill_timeout_ms = 5000\n",
        )
        .unwrap();
        assert_eq!(config.cache_dir(), PathBuf::from("/srv/strata/rc"));
        assert_eq!((config.storage.cache.bytes_max, config.storage.cache.fill_timeout_ms), (1000, Some(5000)));

        let refused = |cache: &str, expected: &str| {
            let text = format!(
                "[server]\ndata_dir = \"/srv/strata\"\n[storage.targets.slow]\npath = \"/mnt/slow\"\n[storage.cache]\n{cache}\n"
            );
            let error = Config::parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{cache}: {error}");
        };
        refused("bytes_max = 0", "storage.cache.bytes_max must be greater than 0");
        refused("fill_timeout_ms = 0", "fill_timeout_ms must be greater than 0");
        refused("dir = \"\"", "storage.cache.dir is empty");
        refused("dir = \"/srv\"", "would hold the data directory");
        refused("dir = \"wal/cache\"", "which Strata manages");
        refused("dir = \"staging\"", "which Strata manages");
        refused("dir = \"/mnt/slow/cache\"", "storage target slow");
        refused("dir = \"/mnt\"", "storage target slow");
        refused("dir = \"storage/hot/x\"", "storage target hot");
        refused("size = 1", "size");
    }
}
