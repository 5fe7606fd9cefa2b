//! `[storage]`: the storage targets (resolved against `data_dir`; nesting,
//! aliasing and the data directory's own subdirectories refused) and each
//! tier's target and encoding.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// `[storage.targets.NAME]`. The keys after `path` are for `kind = "s3"`
/// only; a local target with one of them is refused.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The backend: `local` (a directory, the default) or `s3`.
    #[serde(default)]
    pub kind: TargetKind,
    /// The directory of a local target; relative paths are taken relative
    /// to `server.data_dir`. Default: `<data_dir>/storage/<name>`.
    pub path: Option<PathBuf>,
    /// The bucket (required for `s3`).
    pub bucket: Option<String>,
    /// Every key lives under this prefix (default: none).
    pub prefix: Option<String>,
    /// The endpoint URL, e.g. `http://127.0.0.1:9000` (default: AWS).
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    pub region: Option<String>,
    /// Allow a plain `http://` endpoint (default false).
    pub allow_http: Option<bool>,
    /// Address the bucket as `bucket.host` rather than `host/bucket`.
    pub virtual_hosted_style: Option<bool>,
    /// The access key id; with neither key set, the `AWS_*` environment
    /// variables are used.
    pub access_key_id: Option<String>,
    /// The secret access key. Never logged nor shown.
    pub secret_access_key: Option<Secret>,
    /// A session token for temporary credentials. Never logged nor shown.
    pub session_token: Option<Secret>,
    /// A request's time limit, ms (default 30000).
    pub request_timeout_ms: Option<u64>,
    /// A connection's time limit, ms (default 5000).
    pub connect_timeout_ms: Option<u64>,
    /// Retries of a failed request (default 3).
    pub retries: Option<usize>,
    /// The first retry's delay, ms, doubling up to `backoff_max_ms` (default 100).
    pub backoff_initial_ms: Option<u64>,
    /// The longest delay between retries, ms (default 5000).
    pub backoff_max_ms: Option<u64>,
    /// Files of at least this size are uploaded in parts (default 64 MiB).
    pub multipart_threshold_bytes: Option<u64>,
    /// The size of each part of a multipart upload (default 16 MiB, at least 5 MiB).
    pub part_bytes: Option<u64>,
}

/// A credential from the configuration: its `Debug` never shows it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that hands it to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// The kind of a storage target.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A directory on a local (or mounted) file system.
    #[default]
    Local,
    /// A bucket of an S3-protocol object store.
    S3,
}

impl TargetKind {
    /// The kind's name in TOML and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Local => "local",
            TargetKind::S3 => "s3",
        }
    }
}

/// The smallest part S3 accepts (but for the last).
pub const S3_PART_BYTES_MIN: u64 = 5 * 1024 * 1024;
/// The largest part S3 accepts.
const S3_PART_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024;

/// An `s3` target's settings, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` ("" for none).
    pub prefix: String,
    /// The endpoint URL, if not AWS.
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
    /// Whether `http://` is allowed.
    pub allow_http: bool,
    /// Virtual-hosted-style addressing.
    pub virtual_hosted_style: bool,
    /// The access key id, if configured.
    pub access_key_id: Option<String>,
    /// The secret access key, if configured.
    pub secret_access_key: Option<Secret>,
    /// The session token, if configured.
    pub session_token: Option<Secret>,
    /// A request's time limit.
    pub request_timeout: Duration,
    /// A connection's time limit.
    pub connect_timeout: Duration,
    /// Retries of a failed request.
    pub retries: usize,
    /// The first retry's delay.
    pub backoff_initial: Duration,
    /// The longest delay between retries.
    pub backoff_max: Duration,
    /// Files of at least this size are uploaded in parts.
    pub multipart_threshold_bytes: u64,
    /// The size of each part.
    pub part_bytes: u64,
}

impl TargetConfig {
    /// The `s3` settings with defaults applied (`bucket` must be set).
    fn s3_settings(&self) -> S3Settings {
        S3Settings {
            bucket: self.bucket.clone().unwrap_or_default(),
            prefix: self.prefix.as_deref().unwrap_or("").trim_matches('/').to_string(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone().unwrap_or_else(|| "us-east-1".to_string()),
            allow_http: self.allow_http.unwrap_or(false),
            virtual_hosted_style: self.virtual_hosted_style.unwrap_or(false),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
            request_timeout: Duration::from_millis(self.request_timeout_ms.unwrap_or(30_000)),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms.unwrap_or(5_000)),
            retries: self.retries.unwrap_or(3),
            backoff_initial: Duration::from_millis(self.backoff_initial_ms.unwrap_or(100)),
            backoff_max: Duration::from_millis(self.backoff_max_ms.unwrap_or(5_000)),
            multipart_threshold_bytes: self.multipart_threshold_bytes.unwrap_or(64 * 1024 * 1024),
            part_bytes: self.part_bytes.unwrap_or(16 * 1024 * 1024),
        }
    }

    /// The `s3` keys this table sets, by name (a local target must set none).
    fn s3_keys_set(&self) -> Vec<&'static str> {
        let keys = [
            ("bucket", self.bucket.is_some()),
            ("prefix", self.prefix.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("region", self.region.is_some()),
            ("allow_http", self.allow_http.is_some()),
            ("virtual_hosted_style", self.virtual_hosted_style.is_some()),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            ("session_token", self.session_token.is_some()),
            ("request_timeout_ms", self.request_timeout_ms.is_some()),
            ("connect_timeout_ms", self.connect_timeout_ms.is_some()),
            ("retries", self.retries.is_some()),
            ("backoff_initial_ms", self.backoff_initial_ms.is_some()),
            ("backoff_max_ms", self.backoff_max_ms.is_some()),
            ("multipart_threshold_bytes", self.multipart_threshold_bytes.is_some()),
            ("part_bytes", self.part_bytes.is_some()),
        ];
        keys.into_iter().filter(|(_, set)| *set).map(|(key, _)| key).collect()
    }

    /// Checks one target's keys against its kind. Messages name keys, never
    /// a credential's value.
    fn validate_kind(&self, name: &str) -> Result<(), String> {
        if self.kind == TargetKind::Local {
            return match self.s3_keys_set().first() {
                Some(key) => Err(format!(
                    "storage.targets.{name}.{key} is a key of kind = \"s3\" targets; {name} is a local target"
                )),
                None => Ok(()),
            };
        }
        if self.path.is_some() {
            return Err(format!(
                "storage.targets.{name}.path is for local targets; an s3 target takes bucket and prefix"
            ));
        }
        let settings = self.s3_settings();
        if settings.bucket.trim().is_empty() {
            return Err(format!("storage.targets.{name}.bucket is required for kind = \"s3\""));
        }
        let prefix_ok = settings.prefix.is_empty()
            || settings.prefix.split('/').all(|s| {
                !s.is_empty()
                    && s != "."
                    && s != ".."
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        if !prefix_ok {
            return Err(format!(
                "storage.targets.{name}.prefix must be /-separated segments of letters, digits, '.', '_' and '-'"
            ));
        }
        if let Some(endpoint) = &settings.endpoint {
            if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                return Err(format!("storage.targets.{name}.endpoint must start with http:// or https://"));
            }
            if endpoint.starts_with("http://") && !settings.allow_http {
                return Err(format!("storage.targets.{name}.endpoint is plain http; set allow_http = true to use it"));
            }
        }
        if settings.access_key_id.is_some() != settings.secret_access_key.is_some() {
            return Err(format!(
                "storage.targets.{name}: access_key_id and secret_access_key go together (or neither, to use AWS_* variables)"
            ));
        }
        if !(S3_PART_BYTES_MIN..=S3_PART_BYTES_MAX).contains(&settings.part_bytes) {
            return Err(format!(
                "storage.targets.{name}.part_bytes = {} must be within {S3_PART_BYTES_MIN}..={S3_PART_BYTES_MAX} (5 MiB to 5 GiB)",
                settings.part_bytes
            ));
        }
        if settings.multipart_threshold_bytes == 0
            || settings.request_timeout.is_zero()
            || settings.connect_timeout.is_zero()
        {
            return Err(format!(
                "storage.targets.{name}: multipart_threshold_bytes, request_timeout_ms and connect_timeout_ms must be greater than 0"
            ));
        }
        Ok(())
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
    /// The directory (absolute when `server.data_dir` is); for an `s3`
    /// target, the local directory of its upload journal.
    pub path: PathBuf,
    /// An `s3` target's settings.
    pub s3: Option<S3Settings>,
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
            target.validate_kind(name).map_err(ConfigError::Invalid)?;
            if target.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return invalid(format!("storage.targets.{name}.path is empty"));
            }
        }
        let targets = self.storage_targets();
        if let Some(hot) = targets.iter().find(|t| t.name.as_str() == self.tier_target(Tier::Hot))
            && hot.kind != TargetKind::Local
        {
            return invalid(format!(
                "storage.tiers.hot.target = {:?} is an {} target; the hot tier must be local (flushes and WAL recovery write it)",
                hot.name.as_str(),
                hot.kind.as_str()
            ));
        }
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
        // Only local targets have directories that can overlap.
        let targets: Vec<&ResolvedTarget> = targets.iter().filter(|t| t.kind == TargetKind::Local).collect();
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
                let s3 = (target.kind == TargetKind::S3).then(|| target.s3_settings());
                let path = match target.path {
                    _ if target.kind == TargetKind::S3 => self.server.data_dir.join("storage/.s3-uploads").join(name),
                    Some(path) if path.is_absolute() => path,
                    Some(path) => self.server.data_dir.join(path),
                    None => self.server.data_dir.join("storage").join(name),
                };
                Some(ResolvedTarget { name: TargetName::parse(name).ok()?, kind: target.kind, path, s3 })
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

/// The keys of `[storage.targets.NAME]` whose values are no secret.
const PUBLIC_TARGET_KEYS: [&str; 16] = [
    "kind",
    "path",
    "bucket",
    "prefix",
    "endpoint",
    "region",
    "allow_http",
    "virtual_hosted_style",
    "access_key_id",
    "request_timeout_ms",
    "connect_timeout_ms",
    "retries",
    "backoff_initial_ms",
    "backoff_max_ms",
    "multipart_threshold_bytes",
    "part_bytes",
];

/// `message` (a TOML parser's, which quotes the offending line) with the
/// values that may be credentials replaced: in a `[storage.targets.NAME]`
/// table every value but those of [`PUBLIC_TARGET_KEYS`] (a misspelt
/// `secret_access_key` included), elsewhere those of keys that look like
/// one (`secret`, `token`, `password`).
pub(super) fn redact_credentials(text: &str, mut message: String) -> String {
    let mut in_target = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_target = trimmed.trim_matches(|c| c == '[' || c == ']').trim().starts_with("storage.targets.");
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else { continue };
        let key = key.trim().to_ascii_lowercase();
        let secret = if in_target {
            !PUBLIC_TARGET_KEYS.contains(&key.as_str())
        } else {
            ["secret", "token", "password"].iter().any(|word| key.contains(word))
        };
        let value = value.trim();
        let unquoted = value.trim_matches(|c| c == '"' || c == '\'');
        if secret && unquoted.len() >= 3 {
            message = message.replace(value, "\"<redacted>\"").replace(unquoted, "<redacted>");
        }
    }
    message
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

    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";

    fn s3(extra: &str) -> String {
        format!(
            "[server]\ndata_dir = \"/srv/strata\"\n[storage.targets.remote]\nkind = \"s3\"\nbucket = \"b\"\n\
             access_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"{SECRET}\"\nsession_token = \"tok-{SECRET}\"\n{extra}"
        )
    }

    #[test]
    fn an_s3_target_takes_its_defaults_and_a_journal_directory() {
        let config =
            Config::parse(&s3("prefix = \"/tenant/a/\"\n[storage.tiers.cold]\ntarget = \"remote\"\n")).unwrap();
        let remote = config.storage_targets().into_iter().find(|t| t.name.as_str() == "remote").unwrap();
        assert_eq!(remote.kind, TargetKind::S3);
        assert_eq!(remote.path, PathBuf::from("/srv/strata/storage/.s3-uploads/remote"));
        let settings = remote.s3.unwrap();
        assert_eq!(
            (settings.bucket.as_str(), settings.prefix.as_str(), settings.region.as_str()),
            ("b", "tenant/a", "us-east-1")
        );
        assert_eq!((settings.multipart_threshold_bytes, settings.part_bytes), (64 << 20, 16 << 20));
        assert!(!settings.allow_http && !settings.virtual_hosted_style && settings.endpoint.is_none());
        assert_eq!(config.tier_target(Tier::Cold), "remote");
    }

    #[test]
    fn s3_settings_are_checked_with_clear_errors() {
        let error = |text: &str| Config::parse(text).unwrap_err().to_string();
        let cases = [
            ("[storage.targets.r]\nkind = \"s3\"\n", "storage.targets.r.bucket is required"),
            ("[storage.targets.r]\nkind = \"s3\"\nbucket = \"b\"\npath = \"/x\"\n", "path is for local targets"),
            ("[storage.targets.r]\nbucket = \"b\"\n", "bucket is a key of kind = \"s3\" targets"),
            (
                "[storage.targets.r]\nkind = \"s3\"\nbucket = \"b\"\npart_bytes = 1048576\n",
                "part_bytes = 1048576 must be within",
            ),
            (
                "[storage.targets.r]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"http://m:9000\"\n",
                "set allow_http = true",
            ),
            ("[storage.targets.r]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"m:9000\"\n", "must start with http"),
            ("[storage.targets.r]\nkind = \"s3\"\nbucket = \"b\"\nprefix = \"a/../b\"\n", "prefix must be"),
            ("[storage.targets.r]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"A\"\n", "go together"),
            (
                "[storage.targets.r]\nkind = \"s3\"\nbucket = \"b\"\n[storage.tiers.hot]\ntarget = \"r\"\n",
                "the hot tier must be local",
            ),
            ("[storage.targets.r]\nkind = \"ftp\"\n", "unknown variant"),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn no_debug_output_nor_error_shows_a_secret() {
        let config = Config::parse(&s3("")).unwrap();
        let shown = format!("{config:?} {:?}", config.storage_targets());
        assert!(shown.contains("AKIDEXAMPLE") && !shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("tok-"), "{shown}");
        // A configuration refused for another key.
        let refused = Config::parse(&s3("part_bytes = 1\n")).unwrap_err();
        assert!(!format!("{refused} {refused:?}").contains(SECRET));
        // A misspelt key: the parser quotes the line it stopped at.
        for line in [format!("secret_acess_key = \"{SECRET}\""), format!("session_tokn = '{SECRET}'")] {
            let text = format!("[storage.targets.r]\nkind = \"s3\"\nbucket = \"b\"\n{line}\n");
            let message = Config::parse(&text).unwrap_err().to_string();
            assert!(message.contains("unknown field") && !message.contains(SECRET), "{message}");
        }
    }
}
