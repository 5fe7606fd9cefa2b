//! Configuration: one immutable snapshot, parsed from TOML, validated, with
//! every default written down here and in the README. Unknown keys are errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ingest::IngestLimits;
use crate::names::DatasetName;
use crate::period::Period;

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
}

/// `[lifecycle]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Run retention and tiering policies on their schedules.
    pub scheduler: bool,
    /// A tombstoned file is deleted this long after its tombstone, in ms.
    pub grace_ms: u64,
    /// How often the sweeper looks for expired tombstones, in ms.
    pub sweep_interval_ms: u64,
    /// A partition whose period ended less than this long ago is never
    /// deleted, in ms (per dataset: `[datasets.<name>] min_retention_ms`).
    pub min_retention_ms: u64,
    /// At most this many deletes per run.
    pub max_deletes_per_run: usize,
    /// At most this fraction of a dataset's partitions deleted per run.
    pub max_delete_fraction: f64,
    /// Only archived partitions may be deleted.
    pub require_archive_before_delete: bool,
    /// Allow moves to a hotter tier (cold → warm …).
    pub allow_backward_moves: bool,
    /// A partition whose step failed is retried no sooner than this, doubling
    /// with each failure up to `retry_max_ms`, in ms.
    pub retry_base_ms: u64,
    /// The longest wait between retries, in ms.
    pub retry_max_ms: u64,
    /// Create a live dataset's next-period partitions this long before the
    /// current period ends, in ms (0: never).
    pub precreate_lead_ms: u64,
    /// `/health/lifecycle` degrades when a hot partition's period ended
    /// longer ago than this, in ms (unset: not checked).
    pub health_max_hot_age_ms: Option<u64>,
    /// The same for warm partitions.
    pub health_max_warm_age_ms: Option<u64>,
    /// The same for cold partitions.
    pub health_max_cold_age_ms: Option<u64>,
    /// Past this multiple of a threshold, unhealthy instead of degraded.
    pub health_unhealthy_multiplier: f64,
}

impl Default for LifecycleConfig {
    fn default() -> LifecycleConfig {
        LifecycleConfig {
            scheduler: true,
            grace_ms: 3_600_000,
            sweep_interval_ms: 60_000,
            min_retention_ms: 86_400_000,
            max_deletes_per_run: 1_000,
            max_delete_fraction: 0.5,
            require_archive_before_delete: false,
            allow_backward_moves: false,
            retry_base_ms: 60_000,
            retry_max_ms: 6 * 3_600_000,
            precreate_lead_ms: 86_400_000,
            health_max_hot_age_ms: None,
            health_max_warm_age_ms: None,
            health_max_cold_age_ms: None,
            health_unhealthy_multiplier: 2.0,
        }
    }
}

/// `[query]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query running longer is stopped with 504 `query_timeout`, in ms.
    pub timeout_ms: u64,
    /// DuckDB memory limit per query, in bytes.
    pub memory_bytes_max: u64,
    /// Queries running at once; more wait (up to the timeout), then get 429.
    pub concurrent_max: usize,
    /// DuckDB threads per query.
    pub threads: u32,
    /// Bytes of SQL text.
    pub sql_bytes_max: usize,
    /// Read archived partitions in place; when false they are skipped and
    /// listed in the answer's `stats.archived_skipped`.
    pub read_archived: bool,
}

impl Default for QueryConfig {
    fn default() -> QueryConfig {
        QueryConfig {
            timeout_ms: 30_000,
            memory_bytes_max: 1024 * 1024 * 1024,
            concurrent_max: 4,
            threads: 2,
            sql_bytes_max: 64 * 1024,
            read_archived: true,
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
}

impl Default for PoliciesConfig {
    fn default() -> PoliciesConfig {
        PoliciesConfig { dir: None, cache_dir: None, reload_debounce_ms: 50 }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Only loopback addresses are allowed until
    /// authentication tokens exist.
    pub listen: SocketAddr,
    /// Where the catalog, the WAL and the local storage targets live.
    pub data_dir: PathBuf,
    /// How long a graceful shutdown waits for in-flight requests, in ms.
    pub shutdown_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:8086".parse().expect("valid address"),
            data_dir: PathBuf::from("strata-data"),
            shutdown_timeout_ms: 10_000,
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
    /// Bytes of rows held in memory awaiting flush; beyond it writes get 503
    /// `buffer_full` with `Retry-After`.
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
    /// A partition's buffer is flushed to Parquet once it holds this many bytes.
    pub flush_bytes: u64,
    /// … or once its oldest row has waited this long, in ms.
    pub flush_age_ms: u64,
    /// A WAL segment is closed once it reaches this size, in bytes.
    pub wal_segment_bytes_max: u64,
    /// Rows per Parquet row group.
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
}

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
            row_group_rows_max: 1024 * 1024,
            zstd_level: 3,
            default_period: Period::Day,
            default_time_column: "time".to_string(),
            late_rows: LateRows::RefuseRequest,
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
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_path_buf(), message },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::from("<config>"), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self.server.listen.ip().is_loopback() {
            return invalid(format!(
                "server.listen = {} is not a loopback address; Strata serves only loopback until authentication tokens are configured",
                self.server.listen
            ));
        }
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
            ("lifecycle.sweep_interval_ms", self.lifecycle.sweep_interval_ms),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be greater than 0"));
            }
        }
        if !(1..=22).contains(&self.ingest.zstd_level) {
            return invalid(format!("ingest.zstd_level = {} must be within 1..=22", self.ingest.zstd_level));
        }
        for (name, dataset) in &self.datasets {
            DatasetName::parse(name).map_err(|e| ConfigError::Invalid(format!("[datasets.{name}]: {e}")))?;
            if let Some(column) = &dataset.time_column {
                crate::names::check_column_name(column)
                    .map_err(|e| ConfigError::Invalid(format!("[datasets.{name}].time_column: {e}")))?;
            }
        }
        if !(0.0..=1.0).contains(&self.lifecycle.max_delete_fraction) {
            return invalid(format!(
                "lifecycle.max_delete_fraction = {} must be within 0..=1",
                self.lifecycle.max_delete_fraction
            ));
        }
        let multiplier = self.lifecycle.health_unhealthy_multiplier;
        if multiplier.is_nan() || multiplier < 1.0 {
            return invalid(format!(
                "lifecycle.health_unhealthy_multiplier = {} must be at least 1",
                self.lifecycle.health_unhealthy_multiplier
            ));
        }
        if self.policies.reload_debounce_ms > 60_000 {
            return invalid(format!(
                "policies.reload_debounce_ms = {} must be at most 60000",
                self.policies.reload_debounce_ms
            ));
        }
        crate::names::check_column_name(&self.ingest.default_time_column)
            .map_err(|e| ConfigError::Invalid(format!("ingest.default_time_column: {e}")))?;
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

    #[test]
    fn empty_config_is_the_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.limits.body_bytes_max, 32 * 1024 * 1024);
        assert_eq!(config.ingest.default_period, Period::Day);
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
    fn invalid_values_are_refused() {
        assert!(Config::parse("[limits]\nbody_bytes_max = 0\n").is_err());
        assert!(Config::parse("[server]\nlisten = \"0.0.0.0:1\"\n").is_err());
        assert!(Config::parse("[datasets.\"../x\"]\nperiod = \"day\"\n").is_err());
        assert!(Config::parse("[datasets.cpu]\nperiod = \"fortnight\"\n").is_err());
        let config = Config::parse("[datasets.cpu]\nperiod = \"hour\"\ntime_column = \"ts\"\n").unwrap();
        let name = DatasetName::parse("cpu").unwrap();
        assert_eq!(config.dataset_settings(&name), (Period::Hour, "ts".to_string()));
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
}
