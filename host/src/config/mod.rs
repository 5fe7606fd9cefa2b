//! Configuration: one immutable snapshot, parsed from TOML, validated, with
//! every default written down here and in the README. Unknown keys are errors.

mod lifecycle;
mod server;
mod storage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ingest::IngestLimits;
use crate::names::DatasetName;
use crate::period::Period;

pub use lifecycle::{CompactionConfig, LifecycleConfig};
pub use server::{CONNECTIONS_MAX_LIMIT, ServerConfig, TlsConfig};
pub use storage::{
    CacheConfig, DEFAULT_TARGETS, ResolvedTarget, S3_PART_BYTES_MIN, S3Settings, Secret, StorageConfig, TargetConfig,
    TargetKind, TierConfig, TiersConfig, normalize, paths_overlap,
};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Network and data directory.
    pub server: ServerConfig,
    /// Limits on requests and memory.
    pub limits: Limits,
    /// Write-ahead log and flushing.
    pub ingest: IngestConfig,
    /// Per-dataset settings, by dataset name.
    pub datasets: BTreeMap<String, DatasetConfig>,
    /// Query execution.
    pub query: QueryConfig,
    /// Where policy files live and how they are reloaded.
    pub policies: PoliciesConfig,
    /// Guard rails and timing of lifecycle runs.
    pub lifecycle: LifecycleConfig,
    /// Storage targets and the target (and file encoding) of each tier.
    pub storage: StorageConfig,
    /// Authentication.
    pub auth: AuthConfig,
}

/// `[auth]`. Authentication is on as soon as the catalog holds a token
/// (`strata token create`), or when `required` says so.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require a token even while the catalog has none (nothing but
    /// `/health` and `/ready` answers until one is created).
    pub required: bool,
    /// Serve `/metrics` and `/health/lifecycle` without a token.
    pub metrics_open: bool,
}

/// `[query]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query running longer is stopped with 504 `query_timeout`, in ms.
    pub timeout_ms: u64,
    /// DuckDB memory limit per query, in bytes; a query during which the
    /// process grows by more (plus 256 MiB) is stopped too.
    pub memory_bytes_max: u64,
    /// Queries running at once; more wait (up to the timeout), then get 429.
    pub concurrent_max: usize,
    /// DuckDB threads per query.
    pub threads: u32,
    /// Bytes of SQL text.
    pub sql_bytes_max: usize,
    /// Bytes a query's database may spill to disk (under
    /// `<data_dir>/query-tmp/`) when its working set passes `memory_bytes_max`.
    pub spill_bytes_max: u64,
    /// Read archived partitions in place; when false they are skipped and
    /// listed in the answer's `stats.archived_skipped`.
    pub read_archived: bool,
    /// Answer selective downsamples (tags pinned by `=` or `in`) in the
    /// server itself, reading only the Parquet pages that may match; when
    /// false, DuckDB answers every query. The answer's `stats.executor`
    /// says which one did.
    pub native: bool,
}

impl Default for QueryConfig {
    fn default() -> QueryConfig {
        QueryConfig {
            timeout_ms: 30_000,
            memory_bytes_max: 1024 * 1024 * 1024,
            concurrent_max: 4,
            threads: 2,
            sql_bytes_max: 64 * 1024,
            spill_bytes_max: 1024 * 1024 * 1024,
            read_archived: true,
            native: true,
        }
    }
}

/// `[policies]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoliciesConfig {
    /// Directory of `*.toml` policy files, relative to the config file.
    /// Default: `policies/` next to the config file, else `./policies`, if
    /// either exists; without one, no policies are loaded.
    pub dir: Option<PathBuf>,
    /// Where compiled components are cached, by sha256. Default:
    /// `<data_dir>/policy-cache`.
    pub cache_dir: Option<PathBuf>,
    /// Quiet time after a file change before the reload, in ms.
    pub reload_debounce_ms: u64,
    /// Bytes of one policy `.toml` file; a larger one is refused unread.
    pub definition_bytes_max: u64,
    /// Bytes of one plugin `.wasm` file, and of an uploaded candidate.
    pub plugin_bytes_max: u64,
    /// Uploaded candidates and recorded versions being compiled for a
    /// simulation at once; more wait up to `compile_wait_ms`, then get 429.
    pub compile_concurrent_max: usize,
    /// How long a simulation waits for a compile slot, in ms.
    pub compile_wait_ms: u64,
}

/// The longest a simulation may wait for a compile slot: past a minute a
/// client is better told to retry than left holding a connection.
const COMPILE_WAIT_MS_MAX: u64 = 60_000;

impl PoliciesConfig {
    /// The reload debounce and the compile wait are at most a minute.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.reload_debounce_ms > 60_000 {
            return Err(ConfigError::Invalid(format!(
                "policies.reload_debounce_ms = {} must be at most 60000",
                self.reload_debounce_ms
            )));
        }
        if self.compile_wait_ms > COMPILE_WAIT_MS_MAX {
            return Err(ConfigError::Invalid(format!(
                "policies.compile_wait_ms = {} must be at most {COMPILE_WAIT_MS_MAX}",
                self.compile_wait_ms
            )));
        }
        Ok(())
    }
}

impl Default for PoliciesConfig {
    fn default() -> PoliciesConfig {
        PoliciesConfig {
            dir: None,
            cache_dir: None,
            reload_debounce_ms: 50,
            definition_bytes_max: 1024 * 1024,
            plugin_bytes_max: 64 * 1024 * 1024,
            compile_concurrent_max: 1,
            compile_wait_ms: 10_000,
        }
    }
}

/// `[limits]` — every limit names its unit last.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of one request body (after gzip decoding too).
    pub body_bytes_max: usize,
    /// Records (lines, objects) in one request.
    pub rows_per_request_max: usize,
    /// Bytes of one tag value.
    pub tag_value_bytes_max: usize,
    /// Bytes of one string field value.
    pub string_value_bytes_max: usize,
    /// Non-time columns in one dataset.
    pub columns_per_dataset_max: usize,
    /// Datasets in the store.
    pub datasets_max: usize,
    /// Bytes of rows held in memory awaiting flush, counted as Arrow batches
    /// (what a flush or query unpacks them into; held packed, they take a
    /// third to a fifth of it: `strata_buffered_bytes`); beyond it writes get
    /// 503 `buffer_full` with `Retry-After`.
    pub buffer_bytes_max: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        let ingest = IngestLimits::default();
        Limits {
            body_bytes_max: 32 * 1024 * 1024,
            rows_per_request_max: ingest.rows_per_request_max,
            tag_value_bytes_max: ingest.tag_value_bytes_max,
            string_value_bytes_max: ingest.string_value_bytes_max,
            columns_per_dataset_max: ingest.columns_per_dataset_max,
            datasets_max: 10_000,
            buffer_bytes_max: 1024 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The subset the parsers need.
    pub fn ingest(&self) -> IngestLimits {
        IngestLimits {
            rows_per_request_max: self.rows_per_request_max,
            tag_value_bytes_max: self.tag_value_bytes_max,
            string_value_bytes_max: self.string_value_bytes_max,
            columns_per_dataset_max: self.columns_per_dataset_max,
        }
    }
}

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// A partition's buffer is flushed to Parquet once its rows take this
    /// many bytes as Arrow batches — the form a flush decodes them into, so
    /// this bounds a flush's memory. Buffers hold rows packed, in a third to
    /// a fifth of that (`limits.buffer_bytes_max` counts the packed bytes).
    pub flush_bytes: u64,
    /// … or once its oldest row has waited this long, in ms.
    pub flush_age_ms: u64,
    /// A WAL segment is closed once it reaches this size, in bytes.
    pub wal_segment_bytes_max: u64,
    /// Rows per Parquet row group: small enough that a row group holds few
    /// series (files are sorted by tags, then time) and a selective query
    /// skips the rest.
    pub row_group_rows_max: usize,
    /// zstd level of flushed Parquet files.
    pub zstd_level: i32,
    /// Period of datasets not listed under `[datasets]`.
    pub default_period: Period,
    /// Time column of datasets not listed under `[datasets]`.
    pub default_time_column: String,
    /// What a write does with rows for a sealed partition (per dataset:
    /// `[datasets.<name>] late_rows`).
    pub late_rows: LateRows,
    /// A partition key is hot in the routing report (`GET
    /// /v1/datasets/{ds}/routing`, `strata_routing_hot_keys`) when it took
    /// more than this many times the mean rows per key; above 1.
    pub routing_hot_ratio: f64,
    /// A write's idempotency key answers retries for at least this many
    /// hours; older keys are then forgotten (a retry after that writes
    /// again). 1 to 87,600 (ten years).
    pub idempotency_retention_hours: u64,
}

/// The longest `ingest.idempotency_retention_hours`: ten years.
const IDEMPOTENCY_RETENTION_HOURS_MAX: u64 = 87_600;

/// What a write does with rows whose partition is sealed (read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LateRows {
    /// Refuse the whole request: 409 `partition_read_only`, nothing written.
    #[default]
    RefuseRequest,
    /// Write the rows of writable partitions and refuse the others, listed
    /// by line or record number in a 409 `late_rows_refused` answer.
    RefuseRows,
}

impl Default for IngestConfig {
    fn default() -> IngestConfig {
        IngestConfig {
            flush_bytes: 64 * 1024 * 1024,
            flush_age_ms: 30_000,
            wal_segment_bytes_max: 64 * 1024 * 1024,
            row_group_rows_max: 32 * 1024,
            zstd_level: 3,
            default_period: Period::Day,
            default_time_column: "time".to_string(),
            late_rows: LateRows::RefuseRequest,
            routing_hot_ratio: 1.5,
            idempotency_retention_hours: 24,
        }
    }
}

/// `[datasets.NAME]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// The partition period (hour, day, week, month, quarter, year).
    pub period: Option<Period>,
    /// The name of the time column.
    pub time_column: Option<String>,
    /// Overrides `lifecycle.min_retention_ms` for this dataset.
    pub min_retention_ms: Option<u64>,
    /// Overrides `lifecycle.compaction.enabled` for this dataset.
    pub compaction: Option<bool>,
    /// Overrides `ingest.late_rows` for this dataset.
    pub late_rows: Option<LateRows>,
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::read(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file without validating it, for a caller that changes
    /// settings (command-line overrides) before it validates the result.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: storage::redact_credentials(&text, e.to_string()),
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: storage::redact_credentials(text, e.to_string()),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and names, section by section; the first problem
    /// found is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // A non-loopback `server.listen` is checked at start-up, once the
        // catalog says whether tokens exist (`server::check_listen`).
        self.validate_sizes()?;
        if !(1..=22).contains(&self.ingest.zstd_level) {
            return Err(ConfigError::Invalid(format!(
                "ingest.zstd_level = {} must be within 1..=22",
                self.ingest.zstd_level
            )));
        }
        if !(self.ingest.routing_hot_ratio > 1.0 && self.ingest.routing_hot_ratio.is_finite()) {
            return Err(ConfigError::Invalid(format!(
                "ingest.routing_hot_ratio = {} must be a number above 1",
                self.ingest.routing_hot_ratio
            )));
        }
        if !(1..=IDEMPOTENCY_RETENTION_HOURS_MAX).contains(&self.ingest.idempotency_retention_hours) {
            return Err(ConfigError::Invalid(format!(
                "ingest.idempotency_retention_hours = {} must be within 1..={IDEMPOTENCY_RETENTION_HOURS_MAX}",
                self.ingest.idempotency_retention_hours
            )));
        }
        self.validate_datasets()?;
        self.lifecycle.validate()?;
        self.policies.validate()?;
        crate::names::check_column_name(&self.ingest.default_time_column)
            .map_err(|e| ConfigError::Invalid(format!("ingest.default_time_column: {e}")))?;
        self.server.validate_edge()?;
        self.validate_storage()
    }

    /// Every size, count and duration is positive (0 would refuse all
    /// work or spin), and the bytes in flight hold at least one body.
    fn validate_sizes(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (name, value) in [
            ("limits.body_bytes_max", l.body_bytes_max as u64),
            ("limits.rows_per_request_max", l.rows_per_request_max as u64),
            ("limits.tag_value_bytes_max", l.tag_value_bytes_max as u64),
            ("limits.string_value_bytes_max", l.string_value_bytes_max as u64),
            ("limits.columns_per_dataset_max", l.columns_per_dataset_max as u64),
            ("limits.datasets_max", l.datasets_max as u64),
            ("limits.buffer_bytes_max", l.buffer_bytes_max),
            ("ingest.flush_bytes", self.ingest.flush_bytes),
            ("ingest.wal_segment_bytes_max", self.ingest.wal_segment_bytes_max),
            ("ingest.row_group_rows_max", self.ingest.row_group_rows_max as u64),
            ("query.timeout_ms", self.query.timeout_ms),
            ("query.memory_bytes_max", self.query.memory_bytes_max),
            ("query.concurrent_max", self.query.concurrent_max as u64),
            ("query.threads", u64::from(self.query.threads)),
            ("query.sql_bytes_max", self.query.sql_bytes_max as u64),
            ("query.spill_bytes_max", self.query.spill_bytes_max),
            ("lifecycle.sweep_interval_ms", self.lifecycle.sweep_interval_ms),
            ("lifecycle.move_concurrency", self.lifecycle.move_concurrency as u64),
            ("lifecycle.move_commit_batch", self.lifecycle.move_commit_batch as u64),
            ("lifecycle.move_bytes_in_flight_max", self.lifecycle.move_bytes_in_flight_max),
            ("policies.definition_bytes_max", self.policies.definition_bytes_max),
            ("policies.plugin_bytes_max", self.policies.plugin_bytes_max),
            ("policies.compile_concurrent_max", self.policies.compile_concurrent_max as u64),
            ("server.connections_max", self.server.connections_max as u64),
            ("server.header_read_timeout_ms", self.server.header_read_timeout_ms),
            ("server.body_read_timeout_ms", self.server.body_read_timeout_ms),
            ("server.idle_timeout_ms", self.server.idle_timeout_ms),
            ("server.streams_per_connection_max", u64::from(self.server.streams_per_connection_max)),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be greater than 0")));
            }
        }
        if self.server.body_bytes_in_flight_max < l.body_bytes_max as u64 {
            return Err(ConfigError::Invalid(format!(
                "server.body_bytes_in_flight_max = {} must be at least limits.body_bytes_max = {}",
                self.server.body_bytes_in_flight_max, l.body_bytes_max
            )));
        }
        Ok(())
    }

    /// Each `[datasets.<name>]` names a valid dataset and time column.
    fn validate_datasets(&self) -> Result<(), ConfigError> {
        for (name, dataset) in &self.datasets {
            DatasetName::parse(name).map_err(|e| ConfigError::Invalid(format!("[datasets.{name}]: {e}")))?;
            if let Some(column) = &dataset.time_column {
                crate::names::check_column_name(column)
                    .map_err(|e| ConfigError::Invalid(format!("[datasets.{name}].time_column: {e}")))?;
            }
        }
        Ok(())
    }

    /// Resolves `policies.dir`: a relative path is taken relative to the
    /// config file's directory; without one, `policies/` next to the config
    /// file or in the working directory is used if it exists. The result is
    /// absolute, so file-change events match it.
    pub fn resolve_policy_directory(&mut self, config_file: Option<&Path>) {
        let config_dir = config_file.map(|file| file.parent().unwrap_or(Path::new(".")).to_path_buf());
        let absolute = |path: PathBuf| {
            if path.is_absolute() { path } else { std::env::current_dir().map(|cwd| cwd.join(&path)).unwrap_or(path) }
        };
        self.policies.dir = match self.policies.dir.take() {
            Some(dir) if dir.is_relative() => Some(absolute(config_dir.unwrap_or_default().join(dir))),
            Some(dir) => Some(dir),
            None => config_dir
                .map(|dir| dir.join("policies"))
                .into_iter()
                .chain(std::iter::once(PathBuf::from("policies")))
                .find(|candidate| candidate.is_dir())
                .map(absolute),
        };
    }

    /// Where compiled policy components are cached.
    pub fn policy_cache_dir(&self) -> PathBuf {
        self.policies.cache_dir.clone().unwrap_or_else(|| self.server.data_dir.join("policy-cache"))
    }

    /// The period and time column a dataset is created with.
    pub fn dataset_settings(&self, name: &DatasetName) -> (Period, String) {
        let dataset = self.datasets.get(name.as_str());
        let period = dataset.and_then(|d| d.period).unwrap_or(self.ingest.default_period);
        let time_column =
            dataset.and_then(|d| d.time_column.clone()).unwrap_or_else(|| self.ingest.default_time_column.clone());
        (period, time_column)
    }

    /// What a write to `dataset` does with rows for sealed partitions.
    pub fn late_rows(&self, dataset: &DatasetName) -> LateRows {
        self.datasets.get(dataset.as_str()).and_then(|d| d.late_rows).unwrap_or(self.ingest.late_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_file::Encoding;
    use crate::tier::Tier;

    #[test]
    fn empty_config_is_the_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.limits.body_bytes_max, 32 * 1024 * 1024);
        assert_eq!(config.ingest.default_period, Period::Day);
    }

    #[test]
    fn a_file_is_validated_with_the_data_directory_that_will_be_used() {
        let root = std::env::temp_dir().join(format!("strata-config-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&root).unwrap();
        let file = root.join("strata.toml");
        // A target inside the file's data directory's WAL: refused there,
        // fine once `--data-dir` moves the data directory elsewhere.
        let (a, b) = (root.join("a"), root.join("b"));
        std::fs::write(
            &file,
            format!(
                "[server]\ndata_dir = \"{}\"\n[storage.targets.slow]\nkind = \"local\"\npath = \"{}\"\n[storage.tiers.cold]\ntarget = \"slow\"\n",
                a.display(),
                a.join("wal").join("slow").display()
            ),
        )
        .unwrap();
        let error = Config::load(&file).unwrap_err().to_string();
        assert!(error.contains("slow"), "{error}");
        let mut config = Config::read(&file).unwrap();
        config.server.data_dir = b;
        config.validate().unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unknown_keys_name_the_key() {
        let error = Config::parse("[limits]\nbody_bytes_mux = 5\n").unwrap_err().to_string();
        assert!(error.contains("body_bytes_mux"), "{error}");
        let error = Config::parse("[nonsense]\n").unwrap_err().to_string();
        assert!(error.contains("nonsense"), "{error}");
    }

    #[test]
    fn the_policy_directory_is_relative_to_the_config_file() {
        let root = std::env::temp_dir().join(format!("strata-config-{}", rand::random::<u64>()));
        std::fs::create_dir_all(root.join("policies")).unwrap();
        let config_file = root.join("strata.toml");

        let mut config = Config::parse("").unwrap();
        config.resolve_policy_directory(Some(&config_file));
        assert_eq!(config.policies.dir, Some(root.join("policies")), "policies/ next to the config file");

        let mut config = Config::parse("[policies]\ndir = \"elsewhere\"\n").unwrap();
        config.resolve_policy_directory(Some(&config_file));
        assert_eq!(config.policies.dir, Some(root.join("elsewhere")));

        let mut config = Config::parse("[policies]\ndir = \"/abs/olute\"\n").unwrap();
        config.resolve_policy_directory(Some(&config_file));
        assert_eq!(config.policies.dir, Some(PathBuf::from("/abs/olute")));

        std::fs::remove_dir_all(root.join("policies")).unwrap();
        let mut config = Config::parse("").unwrap();
        config.resolve_policy_directory(Some(&config_file));
        assert_ne!(config.policies.dir, Some(root.join("policies")), "a missing directory is not used");
        std::fs::remove_dir_all(root).unwrap();
        assert!(Config::parse("[policies]\ndirectory = \"x\"\n").unwrap_err().to_string().contains("directory"));
    }

    #[test]
    fn storage_defaults_are_four_local_directories_one_per_tier() {
        let config = Config::parse("[server]\ndata_dir = \"/srv/strata\"\n").unwrap();
        let targets = config.storage_targets();
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["archive", "cold", "hot", "warm"]);
        assert!(targets.iter().all(|t| t.kind == TargetKind::Local));
        assert_eq!(targets[0].path, PathBuf::from("/srv/strata/storage/archive"));
        let tiers = [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archived].map(|t| config.tier_target(t));
        assert_eq!(tiers, ["hot", "warm", "cold", "archive"]);
        assert!([Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archived].iter().all(|t| config.tier_encoding(*t).is_none()));
    }

    #[test]
    fn tiers_map_to_named_targets_with_their_encoding() {
        let config = Config::parse(
            "[server]\ndata_dir = \"/srv/strata\"\n\
             [storage.targets.fast]\nkind = \"local\"\npath = \"/mnt/ssd/strata\"\n\
             [storage.targets.big-disk]\npath = \"big\"\n\
             [storage.targets.hot]\npath = \"/mnt/nvme/hot\"\n\
             [storage.tiers.warm]\ntarget = \"fast\"\n\
             [storage.tiers.cold]\ntarget = \"big-disk\"\nzstd_level = 9\nrow_group_rows_max = 4194304\n\
             [storage.tiers.archived]\nzstd_level = 15\n",
        )
        .unwrap();
        let path = |name: &str| config.storage_targets().into_iter().find(|t| t.name.as_str() == name).unwrap().path;
        assert_eq!(path("fast"), PathBuf::from("/mnt/ssd/strata"));
        assert_eq!(path("big-disk"), PathBuf::from("/srv/strata/big"), "relative to the data directory");
        assert_eq!(path("hot"), PathBuf::from("/mnt/nvme/hot"), "a default target moved");
        assert_eq!(path("warm"), PathBuf::from("/srv/strata/storage/warm"), "unused defaults still exist");
        assert_eq!(config.storage_targets().len(), 6);
        assert_eq!((config.tier_target(Tier::Warm), config.tier_target(Tier::Cold)), ("fast", "big-disk"));
        assert_eq!(config.tier_encoding(Tier::Cold), Some(Encoding { zstd_level: 9, row_group_rows_max: 4_194_304 }));
        assert_eq!(
            config.tier_encoding(Tier::Archived),
            Some(Encoding { zstd_level: 15, row_group_rows_max: config.ingest.row_group_rows_max }),
            "an unset key takes the [ingest] value"
        );
        assert_eq!(config.tier_encoding(Tier::Warm), None);
    }

    #[test]
    fn bad_storage_configuration_is_refused_naming_the_problem() {
        let refused = |toml: &str, needle: &str| {
            let text = format!("[server]\ndata_dir = \"/srv/strata\"\n{toml}");
            let error = Config::parse(&text).err().unwrap_or_else(|| panic!("accepted: {toml}")).to_string();
            assert!(error.contains(needle), "{toml}: {error}");
        };
        refused("[storage.targets.fast]\npth = \"/x\"\n", "pth");
        refused("[storage.targets.fast]\nkind = \"s3\"\n", "s3");
        refused("[storage.tiers.frozen]\ntarget = \"cold\"\n", "frozen");
        refused("[storage.tiers.cold]\nzstd = 9\n", "zstd");
        refused("[storage]\ntarget = \"x\"\n", "target");
        refused("[storage.targets.\"../up\"]\npath = \"/x\"\n", "../up");
        refused("[storage.targets.Fast]\npath = \"/x\"\n", "Fast");
        refused("[storage.targets.fast]\npath = \"\"\n", "empty");
        refused("[storage.tiers.cold]\ntarget = \"big-disk\"\n", "storage.tiers.cold.target = \"big-disk\"");
        refused("[storage.tiers.cold]\nzstd_level = 23\n", "storage.tiers.cold.zstd_level");
        refused("[storage.tiers.warm]\nrow_group_rows_max = 0\n", "storage.tiers.warm.row_group_rows_max");
        // Two targets in one directory, or one inside the other.
        refused(
            "[storage.targets.a]\npath = \"/mnt/x\"\n[storage.targets.b]\npath = \"/mnt/x/\"\n",
            "a (/mnt/x) and b",
        );
        refused("[storage.targets.a]\npath = \"/mnt/x\"\n[storage.targets.b]\npath = \"/mnt/x/../x/y\"\n", "nest");
        refused("[storage.targets.a]\npath = \"storage/hot\"\n", "a (/srv/strata/storage/hot) and hot");
        refused("[storage.targets.a]\npath = \"storage\"\n", "share or nest");
        refused(
            "[storage.targets.warm]\npath = \"/mnt/ssd\"\n[storage.targets.cold]\npath = \"/mnt/ssd/cold\"\n",
            "nest",
        );
        // The data directory itself, and what Strata keeps in it.
        refused("[storage.targets.a]\npath = \"/srv\"\n", "would hold the data directory");
        refused("[storage.targets.a]\npath = \".\"\n", "would hold the data directory");
        refused("[storage.targets.a]\npath = \"wal/x\"\n", "inside /srv/strata/wal");
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(Config::parse("[limits]\nbody_bytes_max = 0\n").is_err());
        // Parsed: whether it may be bound depends on the catalog's tokens.
        assert!(Config::parse("[server]\nlisten = \"0.0.0.0:1\"\n").is_ok());
        assert!(Config::parse("[auth]\nrequired = true\nmetrics_open = true\n").is_ok());
        assert!(Config::parse("[auth]\nrequire = true\n").is_err());
        assert!(Config::parse("[datasets.\"../x\"]\nperiod = \"day\"\n").is_err());
        assert!(Config::parse("[datasets.cpu]\nperiod = \"fortnight\"\n").is_err());
        assert!(Config::parse("[lifecycle.compaction]\nchunk_files = 1\n").is_err());
        assert!(Config::parse("[lifecycle.compaction]\nsmall_file_bytes = 10\ntarget_file_bytes = 5\n").is_err());
        assert!(Config::parse("[lifecycle.compaction]\nmax_attempts = 0\n").is_err());
        for hours in [0, 87_601, u64::MAX / 2] {
            let refused = Config::parse(&format!("[ingest]\nidempotency_retention_hours = {hours}\n")).unwrap_err();
            assert!(refused.to_string().contains("idempotency_retention_hours"), "{refused}");
        }
        let config = Config::parse("[ingest]\nidempotency_retention_hours = 87600\n").unwrap();
        assert_eq!(
            (config.ingest.idempotency_retention_hours, Config::default().ingest.idempotency_retention_hours),
            (87_600, 24)
        );
        assert!(
            Config::parse("[lifecycle.compaction]\nchunk_size = 4\n").unwrap_err().to_string().contains("chunk_size")
        );
        let config = Config::parse("[datasets.cpu]\nperiod = \"hour\"\ntime_column = \"ts\"\n").unwrap();
        let name = DatasetName::parse("cpu").unwrap();
        assert_eq!(config.dataset_settings(&name), (Period::Hour, "ts".to_string()));
    }

    #[test]
    fn policy_file_and_compile_limits_have_defaults_and_bounds() {
        let policies = Config::parse("").unwrap().policies;
        assert_eq!((policies.definition_bytes_max, policies.plugin_bytes_max), (1024 * 1024, 64 * 1024 * 1024));
        assert_eq!((policies.compile_concurrent_max, policies.compile_wait_ms), (1, 10_000));
        for (toml, key) in [
            ("definition_bytes_max = 0", "policies.definition_bytes_max"),
            ("plugin_bytes_max = 0", "policies.plugin_bytes_max"),
            ("compile_concurrent_max = 0", "policies.compile_concurrent_max"),
            ("compile_wait_ms = 3600000", "policies.compile_wait_ms"),
        ] {
            let error = Config::parse(&format!("[policies]\n{toml}\n")).unwrap_err().to_string();
            assert!(error.contains(key), "{toml}: {error}");
        }
        assert_eq!(Config::parse("[policies]\ncompile_wait_ms = 0\n").unwrap().policies.compile_wait_ms, 0);
    }

    #[test]
    fn late_rows_default_and_per_dataset_override() {
        let (cpu, logs) = (DatasetName::parse("cpu").unwrap(), DatasetName::parse("logs").unwrap());
        let config = Config::parse("[datasets.cpu]\nlate_rows = \"refuse_rows\"\n").unwrap();
        assert_eq!((config.late_rows(&cpu), config.late_rows(&logs)), (LateRows::RefuseRows, LateRows::RefuseRequest));
        let config =
            Config::parse("[ingest]\nlate_rows = \"refuse_rows\"\n[datasets.cpu]\nlate_rows = \"refuse_request\"\n");
        let config = config.unwrap();
        assert_eq!((config.late_rows(&cpu), config.late_rows(&logs)), (LateRows::RefuseRequest, LateRows::RefuseRows));
        assert!(Config::parse("[ingest]\nlate_rows = \"drop\"\n").unwrap_err().to_string().contains("drop"));
    }

    #[test]
    fn edge_settings_have_defaults_and_are_checked() {
        let server = Config::parse("").unwrap().server;
        assert_eq!((server.connections_max, server.header_read_timeout_ms), (1024, 10_000));
        assert!(server.allowed_hosts.is_none() && server.allowed_origins.is_empty() && server.tls.is_none());
        let config = Config::parse(
            "[server]\nallowed_hosts = [\"strata.internal\", \"10.0.0.5:8086\", \"[::1]\", \"*\"]\n\
             allowed_origins = [\"https://dash.example\", \"http://localhost:3000\"]\n\
             [server.tls]\ncert_path = \"c.pem\"\nkey_path = \"k.pem\"\n",
        )
        .unwrap();
        assert_eq!(config.server.tls.unwrap().key_path, PathBuf::from("k.pem"));
        let refused = |toml: &str, needle: &str| {
            let error = Config::parse(toml).err().unwrap_or_else(|| panic!("accepted: {toml}")).to_string();
            assert!(error.contains(needle), "{toml}: {error}");
        };
        refused("[server]\nconnections_max = 0\n", "server.connections_max");
        refused("[server]\nbody_read_timeout_ms = 0\n", "server.body_read_timeout_ms");
        refused("[server]\nallowed_hosts = [\"http://evil.example\"]\n", "server.allowed_hosts");
        refused("[server]\nallowed_hosts = [\"\"]\n", "server.allowed_hosts");
        refused("[server]\nallowed_origins = [\"dash.example\"]\n", "server.allowed_origins");
        refused("[server]\nallowed_origins = [\"https://dash.example/app\"]\n", "server.allowed_origins");
        refused("[server]\nallowed_origins = [\"null\"]\n", "server.allowed_origins");
        refused("[server.tls]\ncert_path = \"c.pem\"\n", "key_path");
        refused("[server.tls]\ncert_path = \"c\"\nkey_path = \"k\"\nca = \"x\"\n", "ca");
    }
}
