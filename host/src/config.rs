//! Configuration: one immutable snapshot, parsed from TOML, validated, with
//! every default written down here and in the README. Unknown keys are errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ingest::IngestLimits;
use crate::names::{DatasetName, TargetName};
use crate::parquet_file::Encoding;
use crate::period::Period;
use crate::tier::Tier;

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
    /// Partitions a run copies and verifies at once when moving between
    /// tiers (copies wait mostly on fsync, so a few overlap well).
    pub move_concurrency: usize,
    /// Moved partitions committed per catalog transaction.
    pub move_commit_batch: usize,
    /// Bytes the concurrent copies may hold in memory together (a copy
    /// holds its source and the copy read back: twice the partition). A
    /// larger partition is copied alone.
    pub move_bytes_in_flight_max: u64,
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
    /// Merging small files (`[lifecycle.compaction]`).
    pub compaction: CompactionConfig,
}

/// `[lifecycle.compaction]` — merging a partition's small files into larger
/// ones, chunk by chunk, with a resumable checkpoint per partition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Datasets may be compacted (per dataset: `[datasets.<name>] compaction`).
    pub enabled: bool,
    /// How often the scheduler looks for partitions to compact, in ms
    /// (0: only on `POST /v1/datasets/{ds}/compact`).
    pub interval_ms: u64,
    /// A partition is compacted once it has at least this many small live files.
    pub min_files: usize,
    /// A file smaller than this is small, in bytes.
    pub small_file_bytes: u64,
    /// The input files of one chunk add up to at most this, in bytes; it
    /// bounds the output file's size and a chunk's memory.
    pub target_file_bytes: u64,
    /// At most this many files are merged by one chunk into one file.
    pub chunk_files: usize,
    /// A failed job is retried by the scheduler until it has been attempted
    /// this many times; then it waits for an operator's `compact` request.
    pub max_attempts: u32,
    /// A completed checkpoint is kept this long for audits, in ms.
    pub checkpoint_retention_ms: u64,
}

impl Default for CompactionConfig {
    fn default() -> CompactionConfig {
        CompactionConfig {
            enabled: true,
            interval_ms: 300_000,
            min_files: 8,
            small_file_bytes: 16 * 1024 * 1024,
            target_file_bytes: 128 * 1024 * 1024,
            chunk_files: 32,
            max_attempts: 3,
            checkpoint_retention_ms: 86_400_000,
        }
    }
}

impl LifecycleConfig {
    /// The delete guard's fraction and the health multiplier are in range,
    /// and compaction merges at least two files within its size bounds.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !(0.0..=1.0).contains(&self.max_delete_fraction) {
            return invalid(format!(
                "lifecycle.max_delete_fraction = {} must be within 0..=1",
                self.max_delete_fraction
            ));
        }
        let multiplier = self.health_unhealthy_multiplier;
        if multiplier.is_nan() || multiplier < 1.0 {
            return invalid(format!("lifecycle.health_unhealthy_multiplier = {multiplier} must be at least 1"));
        }
        let compaction = &self.compaction;
        if compaction.min_files < 2 {
            return invalid(format!("lifecycle.compaction.min_files = {} must be at least 2", compaction.min_files));
        }
        if compaction.chunk_files < 2 {
            return invalid(format!(
                "lifecycle.compaction.chunk_files = {} must be at least 2",
                compaction.chunk_files
            ));
        }
        if compaction.small_file_bytes == 0 || compaction.target_file_bytes < compaction.small_file_bytes {
            return invalid(format!(
                "lifecycle.compaction.small_file_bytes = {} must be greater than 0 and at most target_file_bytes = {}",
                compaction.small_file_bytes, compaction.target_file_bytes
            ));
        }
        if compaction.max_attempts == 0 {
            return invalid("lifecycle.compaction.max_attempts must be at least 1".to_string());
        }
        Ok(())
    }
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
            move_concurrency: 8,
            move_commit_batch: 100,
            move_bytes_in_flight_max: 1024 * 1024 * 1024,
            precreate_lead_ms: 86_400_000,
            health_max_hot_age_ms: None,
            health_max_warm_age_ms: None,
            health_max_cold_age_ms: None,
            health_unhealthy_multiplier: 2.0,
            compaction: CompactionConfig::default(),
        }
    }
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

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Only loopback addresses are allowed while
    /// authentication is off (no token in the catalog, `auth.required` unset).
    pub listen: SocketAddr,
    /// Where the catalog, the WAL and the local storage targets live.
    pub data_dir: PathBuf,
    /// How long a graceful shutdown waits for in-flight requests, in ms.
    pub shutdown_timeout_ms: u64,
    /// Connections open at once; more are answered 503
    /// `too_many_connections` and closed.
    pub connections_max: usize,
    /// Time a client has to send a request head, from the connection's
    /// start or the end of the previous response, in ms.
    pub header_read_timeout_ms: u64,
    /// Longest pause between two pieces of a request body, in ms; past it
    /// the request gets 408 `request_timeout` and the connection is closed.
    pub body_read_timeout_ms: u64,
    /// After `body_read_timeout_ms`, a body must have arrived at this
    /// average rate at least, in bytes per second (0: no minimum).
    pub body_bytes_per_second_min: u64,
    /// Request bodies all connections together may hold while they are
    /// being read, in bytes (at least `limits.body_bytes_max`); a body that
    /// would pass it gets 503 `buffer_full` with `Retry-After`. Bounds the
    /// memory that many slow or stalled uploads pin at once.
    pub body_bytes_in_flight_max: u64,
    /// A connection with no request in flight is closed after this long, in ms.
    pub idle_timeout_ms: u64,
    /// Concurrent requests (streams) on one HTTP/2 connection.
    pub streams_per_connection_max: u32,
    /// `Host` values served (DNS-rebinding protection): names or addresses,
    /// optionally with `:port`; `"*"` allows any. Default: when listening
    /// on loopback, `localhost`, `127.0.0.1`, `[::1]` and the listen
    /// address; otherwise any.
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins (`scheme://host[:port]`) whose browser pages may call the
    /// API and get a CORS grant; `"*"` allows any. Same-origin pages are
    /// always allowed.
    pub allowed_origins: Vec<String>,
    /// `[server.tls]`: serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN).
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:8086".parse().expect("valid address"),
            data_dir: PathBuf::from("strata-data"),
            shutdown_timeout_ms: 10_000,
            connections_max: 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            body_bytes_per_second_min: 1024,
            body_bytes_in_flight_max: 512 * 1024 * 1024,
            idle_timeout_ms: 60_000,
            streams_per_connection_max: 100,
            allowed_hosts: None,
            allowed_origins: Vec::new(),
            tls: None,
        }
    }
}

/// `[server.tls]`: a PEM certificate chain and its private key. Relative
/// paths are taken relative to the working directory, like `data_dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert_path: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

impl ServerConfig {
    /// The connection limit fits a semaphore; host and origin entries are
    /// well-formed (a typo would otherwise lock every browser out, or in).
    fn validate_edge(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.connections_max > CONNECTIONS_MAX_LIMIT {
            return invalid(format!(
                "server.connections_max = {} must be at most {CONNECTIONS_MAX_LIMIT}",
                self.connections_max
            ));
        }
        for host in self.allowed_hosts.iter().flatten() {
            let bad = host.is_empty() || host.contains(['/', '@', ' ', ',']) || host.contains("://");
            if bad || (host != "*" && host.parse::<hyper::http::uri::Authority>().is_err()) {
                return invalid(format!(
                    "server.allowed_hosts: {host:?} is not a host name or address with an optional :port, or \"*\""
                ));
            }
        }
        for origin in &self.allowed_origins {
            if origin != "*" && !is_origin(origin) {
                return invalid(format!(
                    "server.allowed_origins: {origin:?} is not an origin like \"https://app.example.com\" (scheme://host[:port], no path), or \"*\""
                ));
            }
        }
        Ok(())
    }
}

/// The largest `server.connections_max` (a semaphore's permits).
pub const CONNECTIONS_MAX_LIMIT: usize = 1 << 20;

/// Whether `text` is an `http` or `https` origin: scheme, host, optional
/// port, and nothing else.
fn is_origin(text: &str) -> bool {
    let Some((scheme, authority)) = text.split_once("://") else { return false };
    matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && !authority.contains(['/', '@', '?', '#'])
        && authority.parse::<hyper::http::uri::Authority>().is_ok()
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
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::from("<config>"), message: e.to_string() })?;
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

    /// Target names are safe identifiers, every tier's target exists, tier
    /// encodings are in range, and no two targets share or nest directories
    /// (nor hold the data directory, or live inside its WAL or caches).
    fn validate_storage(&self) -> Result<(), ConfigError> {
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
        Ok(())
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
