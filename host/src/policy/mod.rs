//! The policy runtime: policies are WebAssembly components bound to
//! datasets by TOML files, hot-reloaded while the server runs.
//!
//! - [`definition`] parses `policies/*.toml`.
//! - [`sandbox`] is the only module that touches wasmtime.
//! - [`plan`] holds the pure contract checks, plans and diffs.
//! - This module is the registry: one [`PolicyRuntime`] keeps the active
//!   version of every policy behind an atomic pointer (evaluations in flight
//!   finish on the version they started with), records every version in the
//!   catalog, reloads, rolls back and simulates.
//! - [`watcher`] turns file changes into reloads.
//!
//! **Invariant:** a broken component or config never replaces a working
//! one. A reload compiles, type-checks, runs `validate-config` and a smoke
//! evaluation first; any failure leaves the last good version serving and
//! is visible in `GET /v1/policies/{name}`, the log and `/metrics`.
//!
//! Every method that runs a component or touches the catalog blocks: call
//! it from `spawn_blocking` or a dedicated thread.

pub mod builtins;
mod compile_slots;
pub mod definition;
pub mod facts;
pub(crate) mod files;
pub mod plan;
pub mod sandbox;
pub mod watcher;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::catalog::{Catalog, CatalogError, PolicyVersionAttempt, PolicyVersionRecord, PolicyVersionStatus};
use crate::error::ErrorCode;
use crate::time::{now_ns, rfc3339};
use definition::{DefinitionError, PluginSource, PolicyDefinition, PolicyKind, PolicyLimits};
use facts::{ColumnBatch, DatasetFacts, PartitionFacts};
use plan::{Decisions, PlanChange, PlanEntry};
use sandbox::{CallContext, CompiledComponent, Sandbox, SandboxError};

pub use compile_slots::{Candidate, CompileSlot};
/// Versions listed by `GET /v1/policies/{name}`.
const VERSIONS_LISTED_MAX: usize = 50;

/// A policy runtime failure. Messages name the policy and, for limits, the
/// limit's TOML key.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// No policy of that name is loaded.
    #[error("no policy named {0:?}")]
    NotFound(String),
    /// The policy exists but no version of it ever loaded.
    #[error("policy {policy:?} has no working version: {reason}")]
    NotActive {
        /// The policy.
        policy: String,
        /// Why its last load failed.
        reason: String,
    },
    /// The operation does not apply to this kind of policy.
    #[error("policy {policy:?} is a {kind} policy; {operation} needs a {wanted} policy")]
    WrongKind {
        /// The policy.
        policy: String,
        /// Its kind.
        kind: &'static str,
        /// What was attempted.
        operation: &'static str,
        /// The kinds it applies to.
        wanted: &'static str,
    },
    /// A policy file is malformed.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// The plugin file cannot be read.
    #[error("policy {policy:?}: cannot read plugin {plugin}: {message}")]
    Plugin {
        /// The policy.
        policy: String,
        /// The plugin reference.
        plugin: String,
        /// Why.
        message: String,
    },
    /// The component was refused (invalid, forbidden import, wrong world).
    #[error("policy {policy:?}: {source}")]
    Component {
        /// The policy.
        policy: String,
        /// What the sandbox said.
        source: SandboxError,
    },
    /// `validate-config` rejected the config.
    #[error("policy {policy:?}: the plugin rejected its config: {}", problems.join("; "))]
    ConfigRejected {
        /// The policy.
        policy: String,
        /// Every problem the plugin reported.
        problems: Vec<String>,
    },
    /// A call failed: a limit, a trap.
    #[error("policy {policy:?}: {source}")]
    Evaluation {
        /// The policy.
        policy: String,
        /// What the sandbox said.
        source: SandboxError,
    },
    /// The answer broke the contract (unknown partition, bad key, …).
    #[error("policy {policy:?} broke the contract: {message}")]
    Contract {
        /// The policy.
        policy: String,
        /// What was wrong.
        message: String,
    },
    /// The requested version does not exist or cannot be used.
    #[error("policy {policy:?}: {message}")]
    Version {
        /// The policy.
        policy: String,
        /// What was wrong.
        message: String,
    },
    /// More than one partitioner binds a dataset: the write path cannot
    /// guess which one keys its records, so it refuses them.
    #[error(
        "policies {} are all partitioners bound to dataset {dataset:?}; bind at most one partitioner per dataset",
        policies.join(", ")
    )]
    SeveralPartitioners {
        /// The dataset.
        dataset: String,
        /// The partitioners that bind it.
        policies: Vec<String>,
    },
    /// An uploaded candidate is larger than a plugin file may be.
    #[error("the uploaded component is {bytes} bytes, over policies.plugin_bytes_max = {plugin_bytes_max}")]
    CandidateTooLarge {
        /// Its size.
        bytes: u64,
        /// The cap.
        plugin_bytes_max: u64,
    },
    /// Every compile slot stayed taken for as long as a request may wait.
    #[error(
        "{compile_concurrent_max} compile(s) already running (policies.compile_concurrent_max); none finished within {waited_ms} ms (policies.compile_wait_ms)"
    )]
    CompileBusy {
        /// The cap.
        compile_concurrent_max: usize,
        /// How long the request waited.
        waited_ms: u64,
    },
    /// Two policy files define the same name.
    #[error("{file}: policy {policy:?} is already defined by {other}")]
    Duplicate {
        /// The policy.
        policy: String,
        /// The file that lost.
        file: String,
        /// The file that defines it.
        other: String,
    },
    /// The catalog failed.
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
}

impl crate::error::Coded for PolicyError {
    fn code(&self) -> ErrorCode {
        match self {
            PolicyError::NotFound(_) => ErrorCode::PolicyNotFound,
            PolicyError::NotActive { .. } => ErrorCode::PolicyUnavailable,
            PolicyError::WrongKind { .. } => ErrorCode::BadRequest,
            PolicyError::Definition(_)
            | PolicyError::Plugin { .. }
            | PolicyError::Component { .. }
            | PolicyError::ConfigRejected { .. }
            | PolicyError::Version { .. }
            | PolicyError::Duplicate { .. }
            | PolicyError::SeveralPartitioners { .. } => ErrorCode::PolicyInvalid,
            PolicyError::Evaluation { source, .. } if source.is_limit() => ErrorCode::PolicyLimitExceeded,
            PolicyError::Evaluation { .. } | PolicyError::Contract { .. } => ErrorCode::PolicyFailed,
            PolicyError::CandidateTooLarge { .. } => ErrorCode::PayloadTooLarge,
            PolicyError::CompileBusy { .. } => ErrorCode::CompileBusy,
            PolicyError::Catalog(_) => ErrorCode::Internal,
        }
    }

    fn detail(&self) -> Option<serde_json::Value> {
        match self {
            PolicyError::ConfigRejected { problems, .. } => Some(serde_json::json!({ "problems": problems })),
            PolicyError::SeveralPartitioners { policies, .. } => Some(serde_json::json!({ "policies": policies })),
            _ => None,
        }
    }

    fn retry_after_seconds(&self) -> Option<u32> {
        matches!(self, PolicyError::CompileBusy { .. }).then_some(1)
    }
}

/// Where policies come from and where compiled components are cached.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// The directory of `*.toml` policy files; none = no policies.
    pub directory: Option<PathBuf>,
    /// Compiled components and kept component bytes, by sha256.
    pub cache_dir: PathBuf,
    /// Quiet time after a file change before the reload.
    pub debounce: Duration,
    /// Caps on the files read and on compiles for simulations.
    pub limits: RuntimeLimits,
}

/// Limits of the runtime itself, as opposed to one policy's calls
/// ([`PolicyLimits`]); each is a `[policies]` key.
#[derive(Debug, Clone)]
pub struct RuntimeLimits {
    /// Bytes of one policy `.toml` file.
    pub definition_bytes_max: u64,
    /// Bytes of one plugin file or uploaded candidate.
    pub plugin_bytes_max: u64,
    /// Compiles for simulations running at once.
    pub compile_concurrent_max: usize,
    /// How long a simulation waits for a compile slot.
    pub compile_wait: Duration,
}

impl From<&crate::config::PoliciesConfig> for RuntimeLimits {
    fn from(config: &crate::config::PoliciesConfig) -> RuntimeLimits {
        RuntimeLimits {
            definition_bytes_max: config.definition_bytes_max,
            plugin_bytes_max: config.plugin_bytes_max,
            compile_concurrent_max: config.compile_concurrent_max,
            compile_wait: Duration::from_millis(config.compile_wait_ms),
        }
    }
}

/// One loaded version: what an evaluation holds on to.
#[derive(Debug)]
struct LoadedVersion {
    seq: i64,
    definition: PolicyDefinition,
    component: CompiledComponent,
    activated_at_ns: i64,
    /// A partitioner's answer to `columns`, asked once when the version
    /// loads, so that a write request costs exactly one call (`partition`).
    /// Empty for the other kinds.
    partitioner_columns: Vec<String>,
}

/// Counters of one policy.
#[derive(Debug, Default)]
struct PolicyStats {
    invocations: AtomicU64,
    failures: AtomicU64,
    limit_failures: AtomicU64,
    traps: AtomicU64,
    reload_failures: AtomicU64,
    last_duration_us: AtomicU64,
    /// Calls per component version (sha256 prefix), for `/metrics`.
    by_version: Mutex<BTreeMap<String, VersionStats>>,
}

/// How many component versions of one policy `/metrics` keeps counters
/// for; past it the least-called version's counters are dropped.
const VERSIONS_COUNTED_MAX: usize = 16;

/// Counters of one component version of a policy.
#[derive(Debug, Default, Clone, Copy)]
struct VersionStats {
    invocations: u64,
    failures: u64,
    traps: u64,
    micros_total: u64,
}

#[derive(Debug, Default)]
struct PolicyState {
    /// The latest definition read from the file, even if it failed to load.
    definition: Option<PolicyDefinition>,
    /// (component sha256, definition digest) of the last file content tried:
    /// a reload skips a policy whose file and component did not change,
    /// which also keeps a rollback in place until the file changes.
    last_seen: Option<(String, String)>,
    /// The last load failure since the last successful load.
    load_error: Option<TimedMessage>,
    /// The last evaluation failure.
    evaluation_error: Option<TimedMessage>,
}

#[derive(Debug, Clone, Serialize)]
struct TimedMessage {
    message: String,
    at: String,
}

impl TimedMessage {
    fn now(message: String) -> TimedMessage {
        TimedMessage { message, at: rfc3339(now_ns()) }
    }
}

#[derive(Debug)]
struct PolicyEntry {
    name: String,
    active: ArcSwapOption<LoadedVersion>,
    state: Mutex<PolicyState>,
    stats: PolicyStats,
}

impl PolicyEntry {
    fn new(name: &str) -> PolicyEntry {
        PolicyEntry {
            name: name.to_string(),
            active: ArcSwapOption::empty(),
            state: Mutex::new(PolicyState::default()),
            stats: PolicyStats::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PolicyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A file that could not be attributed to a policy (its TOML does not parse
/// and it never did).
#[derive(Debug, Clone, Serialize)]
pub struct FileError {
    /// The policy, when the file is known to define one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The file.
    pub file: String,
    /// What is wrong.
    pub error: String,
}

/// What a reload did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Policies whose new version is now active.
    pub activated: Vec<String>,
    /// Policies whose file and component did not change.
    pub unchanged: Vec<String>,
    /// Policies or files that failed, with the error (the last good version keeps serving).
    pub failed: Vec<FileError>,
    /// Policies whose file disappeared.
    pub removed: Vec<String>,
    /// How long the reload took, in ms.
    pub duration_ms: u64,
}

/// Which version a simulation evaluates.
#[derive(Debug)]
pub enum SimulationTarget {
    /// The active version.
    Active,
    /// A recorded version, by sequence number.
    Seq(i64),
    /// A recorded version, by component sha256 (or a unique prefix of at least 8 characters).
    Sha256(String),
    /// An uploaded component, run with the policy's current definition.
    Candidate(Candidate),
}

/// Identifies the version a simulation ran.
#[derive(Debug, Clone, Serialize)]
pub struct VersionLabel {
    /// `active`, `version` or `candidate`.
    pub label: &'static str,
    /// Sequence number (none for a candidate).
    pub seq: Option<i64>,
    /// sha256 of the component.
    pub component_sha256: String,
}

/// The answer to a simulation: what would happen, and how it differs from
/// the active version. Nothing is changed.
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    /// The policy.
    pub policy: String,
    /// Its kind.
    pub kind: PolicyKind,
    /// The version evaluated.
    pub version: VersionLabel,
    /// One entry per partition.
    pub plan: Vec<PlanEntry>,
    /// The active version, when it is not the one evaluated.
    pub against: Option<VersionLabel>,
    /// Partitions whose outcome differs from the active version's.
    pub diff: Vec<PlanChange>,
    /// Wall time of the evaluation, in microseconds.
    pub duration_us: u64,
}

/// A summary of one policy for the API.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    /// Name.
    pub name: String,
    /// Kind (from the active version, else the latest definition).
    pub kind: Option<PolicyKind>,
    /// `active` when a version serves, else `failed`.
    pub status: &'static str,
    /// The active version's sequence number.
    pub active_seq: Option<i64>,
    /// The active version's component sha256.
    pub component_sha256: Option<String>,
    /// Plugin reference.
    pub plugin: Option<String>,
    /// Dataset patterns.
    pub datasets: Vec<String>,
    /// Schedule.
    pub schedule: Option<String>,
    /// The policy file.
    pub file: Option<String>,
    /// Calls so far (simulations and smoke tests included).
    pub invocations: u64,
    /// Failed calls.
    pub failures: u64,
    /// Failed reloads.
    pub reload_failures: u64,
    /// The last load error since the last good load.
    pub load_error: Option<serde_json::Value>,
}

/// Everything `GET /v1/policies/{name}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: PolicySummary,
    /// Limits of the active version (or the latest definition).
    pub limits: Option<PolicyLimits>,
    /// The config handed to the plugin.
    pub config: Option<serde_json::Value>,
    /// When the active version was activated.
    pub activated_at: Option<String>,
    /// Calls that hit a limit.
    pub limit_failures: u64,
    /// Duration of the last call, in microseconds.
    pub last_duration_us: u64,
    /// The last evaluation error.
    pub evaluation_error: Option<serde_json::Value>,
    /// Versions, newest first.
    pub versions: Vec<VersionView>,
}

/// One version as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    /// Sequence number.
    pub seq: i64,
    /// Status.
    pub status: PolicyVersionStatus,
    /// Component sha256.
    pub component_sha256: String,
    /// Where the component came from.
    pub source: String,
    /// Last load attempt.
    pub loaded_at: String,
    /// Last activation.
    pub activated_at: Option<String>,
    /// Why its last load failed.
    pub last_error: Option<String>,
}

impl From<&PolicyVersionRecord> for VersionView {
    fn from(record: &PolicyVersionRecord) -> VersionView {
        VersionView {
            seq: record.seq,
            status: record.status,
            component_sha256: record.component_sha256.clone(),
            source: record.source.clone(),
            loaded_at: rfc3339(record.loaded_at_ns),
            activated_at: record.activated_at_ns.map(rfc3339),
            last_error: record.last_error.clone(),
        }
    }
}

/// The result of a typed evaluation, with the version that produced it.
#[derive(Debug, Clone)]
pub struct Evaluated<T> {
    /// The validated decisions.
    pub decisions: T,
    /// The version's sequence number.
    pub seq: i64,
    /// The version's component sha256.
    pub component_sha256: String,
    /// Wall time of the call.
    pub duration: Duration,
}

/// A partitioner bound to a dataset, pinned to one version (see
/// [`PolicyRuntime::partitioner_for`]).
#[derive(Debug, Clone)]
pub struct BoundPartitioner {
    entry: Arc<PolicyEntry>,
    version: Arc<LoadedVersion>,
}

impl BoundPartitioner {
    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The version's sequence number.
    pub fn seq(&self) -> i64 {
        self.version.seq
    }

    /// The columns the partitioner reads.
    pub fn columns(&self) -> &[String] {
        &self.version.partitioner_columns
    }

    /// The field whose value *is* the key, when the partitioner says so
    /// without doubt: the built-in `partition-by-field` with exactly one
    /// field. Its key is then the field's value verbatim whenever that
    /// value is itself a valid key (other values are sanitised, and
    /// records without the field take a fallback or default — never the
    /// key of a record that has the field). Queries use this to prune
    /// partitions by an `=` / `in` filter on the field. `None` for every
    /// other partitioner (hashes, composite keys, custom components).
    pub fn verbatim_field(&self) -> Option<String> {
        let definition = &self.version.definition;
        if !matches!(&definition.plugin, PluginSource::Builtin(name) if name == "partition-by-field") {
            return None;
        }
        let config: serde_json::Value = serde_json::from_str(&definition.config_json).ok()?;
        match config.get("fields")?.as_array()?.as_slice() {
            [field] => field.as_str().map(str::to_string),
            _ => None,
        }
    }
}

/// The registry of policies and the façade of the runtime.
#[derive(Debug)]
pub struct PolicyRuntime {
    sandbox: Sandbox,
    catalog: Arc<Catalog>,
    settings: PolicySettings,
    entries: RwLock<BTreeMap<String, Arc<PolicyEntry>>>,
    /// Policy name of each file that ever parsed.
    file_policies: Mutex<HashMap<PathBuf, String>>,
    /// Files that do not parse and were never attributed to a policy.
    file_errors: Mutex<Vec<FileError>>,
    /// Serialises reloads and rollbacks.
    reload_lock: Mutex<()>,
    /// Admits compiles that simulations ask for.
    compile_slots: compile_slots::CompileSlots,
    reloads_total: AtomicU64,
    reload_failures_total: AtomicU64,
}

impl PolicyRuntime {
    /// Creates the sandbox and loads every policy in the directory. A policy
    /// that fails to load falls back to its last active version in the
    /// catalog (from an earlier run), if its component is still cached.
    pub fn open(settings: PolicySettings, catalog: Arc<Catalog>) -> Result<PolicyRuntime, PolicyError> {
        let sandbox = Sandbox::new(Some(settings.cache_dir.clone()))
            .map_err(|source| PolicyError::Component { policy: "(runtime)".into(), source })?;
        let limits = &settings.limits;
        let compile_slots = compile_slots::CompileSlots::new(
            limits.compile_concurrent_max,
            limits.compile_wait,
            limits.plugin_bytes_max,
        );
        let runtime = PolicyRuntime {
            sandbox,
            catalog,
            settings,
            entries: RwLock::new(BTreeMap::new()),
            file_policies: Mutex::new(HashMap::new()),
            file_errors: Mutex::new(Vec::new()),
            reload_lock: Mutex::new(()),
            compile_slots,
            reloads_total: AtomicU64::new(0),
            reload_failures_total: AtomicU64::new(0),
        };
        let report = runtime.reload();
        for name in report.failed.iter().filter_map(|f| f.policy.as_deref()) {
            runtime.restore_from_catalog(name);
        }
        tracing::info!(
            activated = ?report.activated,
            failed = report.failed.len(),
            directory = ?runtime.settings.directory,
            "policies loaded"
        );
        Ok(runtime)
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// Admits an uploaded component for [`PolicyRuntime::simulate`]: refused
    /// over `policies.plugin_bytes_max`, else it waits (asynchronously, at
    /// most `policies.compile_wait_ms`) for a compile slot.
    pub async fn admit_candidate(&self, bytes: Vec<u8>) -> Result<Candidate, PolicyError> {
        self.compile_slots.admit(bytes).await
    }

    /// A compile slot for a simulation of a recorded version, which
    /// compiles when the cache no longer holds it.
    pub async fn compile_slot(&self) -> Result<CompileSlot, PolicyError> {
        self.compile_slots.acquire().await
    }

    fn entry(&self, name: &str) -> Result<Arc<PolicyEntry>, PolicyError> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| PolicyError::NotFound(name.to_string()))
    }

    fn entries(&self) -> Vec<Arc<PolicyEntry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Plugin files policies load from (the watcher watches their directories).
    pub fn plugin_files(&self) -> Vec<PathBuf> {
        self.entries()
            .iter()
            .filter_map(|entry| match entry.state().definition.as_ref().map(|d| d.plugin.clone()) {
                Some(PluginSource::File(path)) => Some(path),
                _ => None,
            })
            .collect()
    }

    // ----- reload ---------------------------------------------------------

    /// Re-reads the policy directory. New or changed policies are loaded
    /// and, if every check passes, swapped in; unchanged ones are skipped;
    /// failures leave the last good version serving.
    pub fn reload(&self) -> ReloadReport {
        let _serialised = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        self.reloads_total.fetch_add(1, Ordering::Relaxed);
        let mut report = ReloadReport::default();
        let mut file_errors = Vec::new();
        let mut seen: HashMap<String, PathBuf> = HashMap::new();

        for file in self.policy_files(&mut file_errors) {
            let outcome = self.reload_file(&file, &mut seen, &mut report);
            if let Err(error) = outcome {
                let message = error.to_string();
                let known = self.file_policies.lock().unwrap_or_else(|p| p.into_inner()).get(&file).cloned();
                match known.and_then(|name| self.entry(&name).ok()) {
                    Some(entry) if !matches!(error, PolicyError::Duplicate { .. }) => {
                        seen.insert(entry.name.clone(), file.clone());
                        self.record_load_failure(&entry, &message);
                        report.failed.push(FileError {
                            policy: Some(entry.name.clone()),
                            file: file.display().to_string(),
                            error: message,
                        });
                    }
                    _ => {
                        self.reload_failures_total.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(file = %file.display(), error = %message, "policy file rejected");
                        let error = FileError { policy: None, file: file.display().to_string(), error: message };
                        file_errors.push(error.clone());
                        report.failed.push(error);
                    }
                }
            }
        }

        // Policies whose file is gone.
        let gone: Vec<Arc<PolicyEntry>> = self.entries().into_iter().filter(|e| !seen.contains_key(&e.name)).collect();
        for entry in gone {
            entry.active.store(None);
            if let Err(error) = self.catalog.deactivate_policy(&entry.name) {
                tracing::error!(policy = entry.name, %error, "cannot record a removed policy");
            }
            self.entries.write().unwrap_or_else(|p| p.into_inner()).remove(&entry.name);
            tracing::info!(policy = entry.name, "policy removed: its file is gone");
            report.removed.push(entry.name.clone());
        }
        *self.file_errors.lock().unwrap_or_else(|p| p.into_inner()) = file_errors;
        report.duration_ms = started.elapsed().as_millis() as u64;
        report
    }

    fn policy_files(&self, file_errors: &mut Vec<FileError>) -> Vec<PathBuf> {
        let Some(directory) = &self.settings.directory else { return Vec::new() };
        let entries = match std::fs::read_dir(directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(error) => {
                file_errors.push(FileError {
                    policy: None,
                    file: directory.display().to_string(),
                    error: error.to_string(),
                });
                return Vec::new();
            }
        };
        // Anything named *.toml is a policy file, also when it is not a
        // regular file (reading it then fails, visibly); only a name whose
        // target is gone (deleted meanwhile, a dangling symlink) is no file.
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "toml"))
            .filter(|path| !matches!(std::fs::metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound))
            .collect();
        files.sort();
        files
    }

    fn reload_file(
        &self,
        file: &Path,
        seen: &mut HashMap<String, PathBuf>,
        report: &mut ReloadReport,
    ) -> Result<(), PolicyError> {
        let definition = self.read_definition(file)?;
        if let Some(other) = seen.get(&definition.name) {
            return Err(PolicyError::Duplicate {
                policy: definition.name.clone(),
                file: file.display().to_string(),
                other: other.display().to_string(),
            });
        }
        seen.insert(definition.name.clone(), file.to_path_buf());
        self.file_policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(file.to_path_buf(), definition.name.clone());
        let entry = {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            entries
                .entry(definition.name.clone())
                .or_insert_with(|| Arc::new(PolicyEntry::new(&definition.name)))
                .clone()
        };
        entry.state().definition = Some(definition.clone());
        let bytes = read_plugin(&definition, self.settings.limits.plugin_bytes_max)?;
        let fingerprint = (crate::digest::sha256_hex(&bytes), definition.digest());
        let serving = entry.active.load_full().is_some_and(|active| {
            active.component.sha256() == fingerprint.0 && active.definition.digest() == fingerprint.1
        });
        {
            let mut state = entry.state();
            let seen = state.last_seen.as_ref() == Some(&fingerprint);
            state.last_seen = Some(fingerprint);
            if seen || serving {
                // The file is what serves again: an error from an edit
                // since undone (a broken TOML) is stale.
                if serving {
                    state.load_error = None;
                }
                report.unchanged.push(definition.name);
                return Ok(());
            }
        }
        self.activate(&entry, definition, &bytes)?;
        report.activated.push(entry.name.clone());
        Ok(())
    }

    /// Reads and parses a policy file: a regular file of at most
    /// `policies.definition_bytes_max`, in UTF-8.
    fn read_definition(&self, file: &Path) -> Result<PolicyDefinition, PolicyError> {
        let error = |message: String| DefinitionError { file: file.display().to_string(), message };
        let limit = self.settings.limits.definition_bytes_max;
        let bytes =
            files::read_regular_file(file, limit, "policies.definition_bytes_max").map_err(|e| error(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| error(format!("not UTF-8: {e}")))?;
        // Errors may quote the file; a symlink may point at any file the
        // server can read, and errors are served over HTTP.
        Ok(PolicyDefinition::parse(file, &text).map_err(|parse_error| {
            if self.inside_policy_directory(file) {
                parse_error
            } else {
                error("is not a valid policy definition (the file lies outside the policy directory, so errors do not quote it)".into())
            }
        })?)
    }

    /// Whether `file`, symlinks resolved, lies in the policy directory.
    fn inside_policy_directory(&self, file: &Path) -> bool {
        let Some(directory) = &self.settings.directory else { return false };
        match (std::fs::canonicalize(file), std::fs::canonicalize(directory)) {
            (Ok(file), Ok(directory)) => file.starts_with(directory),
            _ => false,
        }
    }

    /// Loads, checks and swaps in a version; records the outcome either way.
    fn activate(&self, entry: &PolicyEntry, definition: PolicyDefinition, bytes: &[u8]) -> Result<(), PolicyError> {
        let source = definition.plugin.to_string();
        let definition_json = serde_json::to_string(&definition).expect("definitions serialize");
        let component_sha256 = crate::digest::sha256_hex(bytes);
        let digest = definition.digest();
        let prepared = self.prepare(entry, &definition, bytes);
        let error = prepared.as_ref().err().map(ToString::to_string);
        let attempt = PolicyVersionAttempt {
            policy: &definition.name,
            component_sha256: &component_sha256,
            definition_sha256: &digest,
            source: &source,
            definition_json: &definition_json,
            error: error.as_deref(),
        };
        let seq = self.catalog.record_policy_version(&attempt, now_ns())?;
        let (component, partitioner_columns) = prepared?;
        if let Err(error) = self.sandbox.keep_source(&component_sha256, bytes) {
            tracing::warn!(policy = entry.name, %error, "cannot keep the component bytes; rollback to this version will not work");
        }
        let version = LoadedVersion { seq, definition, component, activated_at_ns: now_ns(), partitioner_columns };
        tracing::info!(
            policy = entry.name,
            seq,
            sha256 = %component_sha256,
            compiled = ?version.component.source(),
            "policy version active"
        );
        entry.active.store(Some(Arc::new(version)));
        entry.state().load_error = None;
        Ok(())
    }

    fn record_load_failure(&self, entry: &PolicyEntry, message: &str) {
        entry.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
        self.reload_failures_total.fetch_add(1, Ordering::Relaxed);
        let serving = entry.active.load().as_ref().map(|v| v.seq);
        tracing::error!(policy = entry.name, error = %message, serving_seq = ?serving, "policy reload failed; the last good version keeps serving");
        entry.state().load_error = Some(TimedMessage::now(message.to_string()));
    }

    /// Compiles and checks a component for `definition`: world and imports,
    /// `validate-config`, then a smoke evaluation (an empty partition list,
    /// or a one-record batch for a partitioner) whose answer must pass the
    /// contract checks. Returns the component and, for a partitioner, the
    /// columns it declares.
    fn prepare(
        &self,
        entry: &PolicyEntry,
        definition: &PolicyDefinition,
        bytes: &[u8],
    ) -> Result<(CompiledComponent, Vec<String>), PolicyError> {
        let policy = definition.name.clone();
        let component = self
            .sandbox
            .load(bytes, definition.kind)
            .map_err(|source| PolicyError::Component { policy: policy.clone(), source })?;
        let call = CallContext { policy: &policy, limits: &definition.limits };
        match component.validate_config(call, &definition.config_json) {
            Ok(Ok(())) => {}
            Ok(Err(problems)) => return Err(PolicyError::ConfigRejected { policy, problems }),
            Err(source) => return Err(PolicyError::Evaluation { policy, source }),
        }
        let mut partitioner_columns = Vec::new();
        match definition.kind {
            PolicyKind::Partitioner => {
                let started = Instant::now();
                let outcome = component.partitioner_columns(call, &definition.config_json);
                self.count(entry, component.sha256(), started, outcome.as_ref().err());
                partitioner_columns =
                    outcome.map_err(|source| PolicyError::Evaluation { policy: policy.clone(), source })?;
                self.call_partition(entry, &component, definition, &[], 1)?;
            }
            _ => {
                let dataset = DatasetFacts {
                    name: "smoke-test".into(),
                    period: "day".into(),
                    time_column: "time".into(),
                    columns: vec![("time".into(), crate::schema::ColumnKind::Time)],
                };
                self.call_scheduled(entry, &component, definition, now_ns(), &dataset, &[])?;
            }
        }
        Ok((component, partitioner_columns))
    }

    /// When a policy has no working version (typically at start-up with a
    /// broken file), loads the version the catalog last had active.
    fn restore_from_catalog(&self, name: &str) {
        let Ok(entry) = self.entry(name) else { return };
        if entry.active.load().is_some() {
            return;
        }
        let versions = match self.catalog.policy_versions(name) {
            Ok(versions) => versions,
            Err(error) => {
                tracing::error!(policy = name, %error, "cannot read policy versions");
                return;
            }
        };
        let Some(record) = versions.iter().find(|v| v.status == PolicyVersionStatus::Active) else { return };
        match self.load_record(&entry, record) {
            Ok(version) => {
                tracing::warn!(
                    policy = name,
                    seq = record.seq,
                    "policy file is broken; serving the last good version from the catalog"
                );
                entry.active.store(Some(Arc::new(version)));
            }
            Err(error) => {
                tracing::error!(policy = name, seq = record.seq, %error, "cannot restore the last good version")
            }
        }
    }

    fn load_record(&self, entry: &PolicyEntry, record: &PolicyVersionRecord) -> Result<LoadedVersion, PolicyError> {
        let version_error = |message: String| PolicyError::Version { policy: record.policy.clone(), message };
        let definition: PolicyDefinition = serde_json::from_str(&record.definition_json)
            .map_err(|e| version_error(format!("version {} has an unreadable definition: {e}", record.seq)))?;
        let bytes = match &definition.plugin {
            PluginSource::Builtin(name) => builtins::component(name)
                .filter(|bytes| crate::digest::sha256_hex(bytes) == record.component_sha256)
                .map(<[u8]>::to_vec),
            PluginSource::File(_) => None,
        }
        .or_else(|| self.sandbox.kept_source(&record.component_sha256))
        .ok_or_else(|| version_error(format!("the component of version {} is no longer available", record.seq)))?;
        let (component, partitioner_columns) = self.prepare(entry, &definition, &bytes)?;
        Ok(LoadedVersion { seq: record.seq, definition, component, activated_at_ns: now_ns(), partitioner_columns })
    }

    // ----- rollback ---------------------------------------------------------

    /// Makes an earlier good version active again: `seq`, or by default the
    /// newest superseded version older than the active one. It stays active
    /// until the policy file or its component changes.
    pub fn rollback(&self, name: &str, seq: Option<i64>) -> Result<(Option<i64>, i64), PolicyError> {
        let _serialised = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let entry = self.entry(name)?;
        let current = entry.active.load_full().map(|v| v.seq);
        let versions = self.catalog.policy_versions(name)?;
        let version_error = |message: String| PolicyError::Version { policy: name.to_string(), message };
        let record = match seq {
            Some(seq) => {
                let record = versions
                    .iter()
                    .find(|v| v.seq == seq)
                    .ok_or_else(|| version_error(format!("has no version {seq}")))?;
                if record.status == PolicyVersionStatus::Failed {
                    return Err(version_error(format!(
                        "version {seq} failed to load ({}) and cannot be rolled back to",
                        record.last_error.as_deref().unwrap_or("unknown error")
                    )));
                }
                record
            }
            None => versions
                .iter()
                .filter(|v| v.status == PolicyVersionStatus::Superseded)
                .find(|v| current.is_none_or(|current| v.seq < current))
                .ok_or_else(|| version_error("has no earlier good version to roll back to".into()))?,
        };
        if Some(record.seq) == current {
            return Ok((current, record.seq));
        }
        let version = self.load_record(&entry, record)?;
        self.catalog.activate_policy_version(name, record.seq, now_ns())?;
        tracing::info!(policy = name, from = ?current, to = record.seq, "policy rolled back");
        entry.active.store(Some(Arc::new(version)));
        entry.state().load_error = None;
        Ok((current, record.seq))
    }

    // ----- evaluation -------------------------------------------------------

    fn active(&self, name: &str) -> Result<(Arc<PolicyEntry>, Arc<LoadedVersion>), PolicyError> {
        let entry = self.entry(name)?;
        let active = entry.active.load_full().ok_or_else(|| PolicyError::NotActive {
            policy: name.to_string(),
            reason: entry.state().load_error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| "not loaded".into()),
        })?;
        Ok((entry, active))
    }

    /// Evaluates the active version of a retention policy.
    pub fn evaluate_retention(
        &self,
        name: &str,
        now_ns: i64,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Evaluated<Vec<facts::RetentionDecision>>, PolicyError> {
        self.evaluate_scheduled(name, PolicyKind::Retention, now_ns, dataset, partitions).map(|e| Evaluated {
            decisions: match e.decisions {
                Decisions::Retention(d) => d,
                _ => unreachable!("checked the kind"),
            },
            seq: e.seq,
            component_sha256: e.component_sha256,
            duration: e.duration,
        })
    }

    /// Evaluates the active version of a tiering policy.
    pub fn evaluate_tiering(
        &self,
        name: &str,
        now_ns: i64,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Evaluated<Vec<facts::TierDecision>>, PolicyError> {
        self.evaluate_scheduled(name, PolicyKind::Tiering, now_ns, dataset, partitions).map(|e| Evaluated {
            decisions: match e.decisions {
                Decisions::Tiering(d) => d,
                _ => unreachable!("checked the kind"),
            },
            seq: e.seq,
            component_sha256: e.component_sha256,
            duration: e.duration,
        })
    }

    /// Evaluates the active version of an archival policy.
    pub fn evaluate_archival(
        &self,
        name: &str,
        now_ns: i64,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Evaluated<Vec<facts::ArchiveDecision>>, PolicyError> {
        self.evaluate_scheduled(name, PolicyKind::Archival, now_ns, dataset, partitions).map(|e| Evaluated {
            decisions: match e.decisions {
                Decisions::Archival(d) => d,
                _ => unreachable!("checked the kind"),
            },
            seq: e.seq,
            component_sha256: e.component_sha256,
            duration: e.duration,
        })
    }

    fn evaluate_scheduled(
        &self,
        name: &str,
        kind: PolicyKind,
        now_ns: i64,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Evaluated<Decisions>, PolicyError> {
        let (entry, version) = self.active(name)?;
        if version.definition.kind != kind {
            return Err(PolicyError::WrongKind {
                policy: name.to_string(),
                kind: version.definition.kind.as_str(),
                operation: "this evaluation",
                wanted: kind.as_str(),
            });
        }
        let started = Instant::now();
        let decisions =
            self.call_scheduled(&entry, &version.component, &version.definition, now_ns, dataset, partitions)?;
        Ok(Evaluated {
            decisions,
            seq: version.seq,
            component_sha256: version.component.sha256().to_string(),
            duration: started.elapsed(),
        })
    }

    /// The partitioner bound to `dataset`, pinned to its active version:
    /// the write path resolves it once per request, so a reload while the
    /// request runs does not change how that request is keyed. `None` when
    /// no partitioner binds the dataset.
    ///
    /// Refused, rather than guessed around: two or more partitioners bound
    /// to the dataset (`SeveralPartitioners`), and a bound partitioner that
    /// never loaded (`NotActive`) — writing those records unkeyed would put
    /// them where no later query or policy expects them.
    pub fn partitioner_for(&self, dataset: &str) -> Result<Option<BoundPartitioner>, PolicyError> {
        let mut bound = Vec::new();
        let mut names = Vec::new();
        for entry in self.entries() {
            match entry.active.load_full() {
                Some(version) => {
                    if version.definition.kind == PolicyKind::Partitioner && version.definition.applies_to(dataset) {
                        names.push(entry.name.clone());
                        bound.push(BoundPartitioner { entry, version });
                    }
                }
                None => {
                    let binds = entry
                        .state()
                        .definition
                        .as_ref()
                        .is_some_and(|d| d.kind == PolicyKind::Partitioner && d.applies_to(dataset));
                    if binds {
                        names.push(entry.name.clone());
                    }
                }
            }
        }
        if names.len() > 1 {
            return Err(PolicyError::SeveralPartitioners { dataset: dataset.to_string(), policies: names });
        }
        match (bound.pop(), names.pop()) {
            (Some(bound), _) => Ok(Some(bound)),
            (None, Some(name)) => Err(match self.active(&name) {
                Err(error) => error,
                // It became active after the bindings were read: retrying sees it.
                Ok(_) => PolicyError::NotActive { policy: name, reason: "it was loading; retry".into() },
            }),
            (None, None) => Ok(None),
        }
    }

    /// One partition key (or the reason there is none) per row of
    /// `parsed`, from one call into `partitioner`'s component with only
    /// the columns it declared. Answers are checked against the contract
    /// (one result per record, keys of at most 63 characters from
    /// `[a-z0-9_-]`): a violation fails the whole call.
    pub fn partition_batch(
        &self,
        partitioner: &BoundPartitioner,
        parsed: &crate::ingest::batch::ParsedBatch,
        time_column: &str,
    ) -> Result<Vec<Result<String, String>>, PolicyError> {
        let version = &partitioner.version;
        let rows = u32::try_from(parsed.rows()).map_err(|_| PolicyError::Contract {
            policy: partitioner.entry.name.clone(),
            message: format!("a batch of {} records is too large to partition", parsed.rows()),
        })?;
        let columns = facts::partitioner_input(parsed, time_column, &version.partitioner_columns);
        self.call_partition(&partitioner.entry, &version.component, &version.definition, &columns, rows)
    }

    fn call_partition(
        &self,
        entry: &PolicyEntry,
        component: &CompiledComponent,
        definition: &PolicyDefinition,
        columns: &[ColumnBatch],
        rows: u32,
    ) -> Result<Vec<Result<String, String>>, PolicyError> {
        let call = CallContext { policy: &definition.name, limits: &definition.limits };
        let started = Instant::now();
        let outcome = component.partition(call, &definition.config_json, columns, rows);
        self.count(entry, component.sha256(), started, outcome.as_ref().err());
        let keys = outcome.map_err(|source| PolicyError::Evaluation { policy: definition.name.clone(), source })?;
        plan::check_keys(&keys, rows as usize)
            .map_err(|message| self.contract_failure(entry, &definition.name, message))?;
        Ok(keys)
    }

    fn call_scheduled(
        &self,
        entry: &PolicyEntry,
        component: &CompiledComponent,
        definition: &PolicyDefinition,
        now_ns: i64,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Decisions, PolicyError> {
        let call = CallContext { policy: &definition.name, limits: &definition.limits };
        let config = definition.config_json.as_str();
        let started = Instant::now();
        let outcome = match definition.kind {
            PolicyKind::Retention => {
                component.evaluate_retention(call, now_ns, config, dataset, partitions).map(Decisions::Retention)
            }
            PolicyKind::Tiering => {
                component.evaluate_tiering(call, now_ns, config, dataset, partitions).map(Decisions::Tiering)
            }
            PolicyKind::Archival => {
                component.evaluate_archival(call, now_ns, config, dataset, partitions).map(Decisions::Archival)
            }
            PolicyKind::Partitioner => {
                return Err(PolicyError::WrongKind {
                    policy: definition.name.clone(),
                    kind: "partitioner",
                    operation: "evaluating partitions",
                    wanted: "retention, tiering or archival",
                });
            }
        };
        self.count(entry, component.sha256(), started, outcome.as_ref().err());
        let decisions =
            outcome.map_err(|source| PolicyError::Evaluation { policy: definition.name.clone(), source })?;
        plan::check_decisions(&decisions, partitions)
            .map_err(|message| self.contract_failure(entry, &definition.name, message))?;
        Ok(decisions)
    }

    fn count(&self, entry: &PolicyEntry, component_sha256: &str, started: Instant, error: Option<&SandboxError>) {
        let stats = &entry.stats;
        let micros = started.elapsed().as_micros() as u64;
        let trapped = matches!(error, Some(SandboxError::Trap(_) | SandboxError::StackOverflow { .. }));
        stats.invocations.fetch_add(1, Ordering::Relaxed);
        stats.last_duration_us.store(micros, Ordering::Relaxed);
        {
            let mut by_version = stats.by_version.lock().unwrap_or_else(|p| p.into_inner());
            let version = component_sha256.get(..12).unwrap_or(component_sha256);
            if !by_version.contains_key(version) && by_version.len() >= VERSIONS_COUNTED_MAX {
                let least = by_version.iter().min_by_key(|(_, v)| v.invocations).map(|(k, _)| k.clone());
                if let Some(least) = least {
                    by_version.remove(&least);
                }
            }
            let counters = by_version.entry(version.to_string()).or_default();
            counters.invocations += 1;
            counters.failures += u64::from(error.is_some());
            counters.traps += u64::from(trapped);
            counters.micros_total += micros;
        }
        if let Some(error) = error {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            if error.is_limit() {
                stats.limit_failures.fetch_add(1, Ordering::Relaxed);
            }
            if trapped {
                stats.traps.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(policy = entry.name, %error, "policy call failed");
            entry.state().evaluation_error = Some(TimedMessage::now(error.to_string()));
        }
    }

    fn contract_failure(&self, entry: &PolicyEntry, policy: &str, message: String) -> PolicyError {
        entry.stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(policy, %message, "policy broke the contract");
        entry.state().evaluation_error = Some(TimedMessage::now(format!("broke the contract: {message}")));
        PolicyError::Contract { policy: policy.to_string(), message }
    }

    // ----- simulation -------------------------------------------------------

    /// Evaluates a version of a retention, tiering or archival policy
    /// against `partitions` at `now_ns`, and diffs it against the active
    /// version. Changes nothing.
    pub fn simulate(
        &self,
        name: &str,
        target: SimulationTarget,
        now_ns: i64,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Simulation, PolicyError> {
        let entry = self.entry(name)?;
        let active = entry.active.load_full();
        let kind = active
            .as_ref()
            .map(|v| v.definition.kind)
            .or_else(|| entry.state().definition.as_ref().map(|d| d.kind))
            .ok_or_else(|| PolicyError::NotActive { policy: name.into(), reason: "not loaded".into() })?;
        if kind == PolicyKind::Partitioner {
            return Err(PolicyError::WrongKind {
                policy: name.to_string(),
                kind: kind.as_str(),
                operation: "simulation against partitions",
                wanted: "retention, tiering or archival",
            });
        }
        let version_error = |message: String| PolicyError::Version { policy: name.to_string(), message };
        // The version to evaluate: (label, seq, definition, component).
        let evaluated: Arc<LoadedVersion>;
        let label = match target {
            SimulationTarget::Active => {
                evaluated = active.clone().ok_or_else(|| PolicyError::NotActive {
                    policy: name.into(),
                    reason: entry.state().load_error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
                })?;
                "active"
            }
            SimulationTarget::Seq(_) | SimulationTarget::Sha256(_) => {
                let versions = self.catalog.policy_versions(name)?;
                let record = match &target {
                    SimulationTarget::Seq(seq) => versions.iter().find(|v| v.seq == *seq),
                    SimulationTarget::Sha256(prefix) => {
                        if prefix.len() < 8 {
                            return Err(version_error("a version sha256 prefix needs at least 8 characters".into()));
                        }
                        let matching: Vec<&PolicyVersionRecord> =
                            versions.iter().filter(|v| v.component_sha256.starts_with(prefix.as_str())).collect();
                        if matching.len() > 1 {
                            return Err(version_error(format!("sha256 prefix {prefix} matches several versions")));
                        }
                        matching.first().copied()
                    }
                    _ => None,
                }
                .ok_or_else(|| version_error("has no such version".into()))?;
                evaluated = match &active {
                    Some(active) if active.seq == record.seq => active.clone(),
                    _ => Arc::new(self.load_record(&entry, record)?),
                };
                "version"
            }
            SimulationTarget::Candidate(candidate) => {
                let mut definition = active
                    .as_ref()
                    .map(|v| v.definition.clone())
                    .or_else(|| entry.state().definition.clone())
                    .ok_or_else(|| version_error("has no definition to run a candidate with".into()))?;
                definition.plugin = PluginSource::File(PathBuf::from("upload"));
                let component = self
                    .sandbox
                    .load_uncached(candidate.bytes(), kind)
                    .map_err(|source| PolicyError::Component { policy: name.to_string(), source })?;
                // The slot bounds compiles; the calls below are bounded by
                // the policy's own limits. The bytes are not needed either.
                drop(candidate);
                let call = CallContext { policy: name, limits: &definition.limits };
                match component.validate_config(call, &definition.config_json) {
                    Ok(Ok(())) => {}
                    Ok(Err(problems)) => return Err(PolicyError::ConfigRejected { policy: name.into(), problems }),
                    Err(source) => return Err(PolicyError::Evaluation { policy: name.into(), source }),
                }
                evaluated = Arc::new(LoadedVersion {
                    seq: 0,
                    definition,
                    component,
                    activated_at_ns: 0,
                    partitioner_columns: Vec::new(),
                });
                "candidate"
            }
        };
        let started = Instant::now();
        let decisions =
            self.call_scheduled(&entry, &evaluated.component, &evaluated.definition, now_ns, dataset, partitions)?;
        let duration_us = started.elapsed().as_micros() as u64;
        let plan = plan::plan(&decisions, partitions);
        let version = VersionLabel {
            label,
            seq: (label != "candidate").then_some(evaluated.seq),
            component_sha256: evaluated.component.sha256().to_string(),
        };
        let (against, diff) = match &active {
            Some(active) if !Arc::ptr_eq(active, &evaluated) => {
                let active_decisions =
                    self.call_scheduled(&entry, &active.component, &active.definition, now_ns, dataset, partitions)?;
                let active_plan = plan::plan(&active_decisions, partitions);
                let label = VersionLabel {
                    label: "active",
                    seq: Some(active.seq),
                    component_sha256: active.component.sha256().to_string(),
                };
                (Some(label), plan::diff(&active_plan, &plan))
            }
            _ => (None, Vec::new()),
        };
        Ok(Simulation { policy: name.to_string(), kind, version, plan, against, diff, duration_us })
    }

    // ----- views ------------------------------------------------------------

    /// Names of the policies of `kind` bound to `dataset`.
    pub fn policies_for(&self, dataset: &str, kind: PolicyKind) -> Vec<String> {
        self.entries()
            .iter()
            .filter_map(|entry| {
                let active = entry.active.load_full()?;
                (active.definition.kind == kind && active.definition.applies_to(dataset)).then(|| entry.name.clone())
            })
            .collect()
    }

    /// Whether policy `name` (its active version, else its latest
    /// definition) binds to `dataset`.
    pub fn binds(&self, name: &str, dataset: &str) -> bool {
        let Ok(entry) = self.entry(name) else { return false };
        if let Some(active) = entry.active.load_full() {
            return active.definition.applies_to(dataset);
        }
        entry.state().definition.as_ref().is_some_and(|d| d.applies_to(dataset))
    }

    fn summary(&self, entry: &PolicyEntry) -> PolicySummary {
        let active = entry.active.load_full();
        let state = entry.state();
        let definition = active.as_ref().map(|v| &v.definition).or(state.definition.as_ref());
        PolicySummary {
            name: entry.name.clone(),
            kind: definition.map(|d| d.kind),
            status: if active.is_some() { "active" } else { "failed" },
            active_seq: active.as_ref().map(|v| v.seq),
            component_sha256: active.as_ref().map(|v| v.component.sha256().to_string()),
            plugin: definition.map(|d| d.plugin.to_string()),
            datasets: definition.map(|d| d.datasets.clone()).unwrap_or_default(),
            schedule: definition.and_then(|d| d.schedule.as_ref()).map(|s| s.to_string()),
            file: definition.and_then(|d| d.file.as_ref()).map(|f| f.display().to_string()),
            invocations: entry.stats.invocations.load(Ordering::Relaxed),
            failures: entry.stats.failures.load(Ordering::Relaxed),
            reload_failures: entry.stats.reload_failures.load(Ordering::Relaxed),
            load_error: state.load_error.as_ref().map(|e| serde_json::to_value(e).unwrap_or_default()),
        }
    }

    /// Every policy, by name, and the files that could not be read.
    pub fn list(&self) -> (Vec<PolicySummary>, Vec<FileError>) {
        let summaries = self.entries().iter().map(|entry| self.summary(entry)).collect();
        (summaries, self.file_errors.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// One policy in detail, with its versions from the catalog.
    pub fn detail(&self, name: &str) -> Result<PolicyDetail, PolicyError> {
        let entry = self.entry(name)?;
        let summary = self.summary(&entry);
        let active = entry.active.load_full();
        let versions = self.catalog.policy_versions(name)?;
        let state = entry.state();
        let definition = active.as_ref().map(|v| &v.definition).or(state.definition.as_ref());
        Ok(PolicyDetail {
            summary,
            limits: definition.map(|d| d.limits.clone()),
            config: definition.and_then(|d| serde_json::from_str(&d.config_json).ok()),
            activated_at: active.as_ref().map(|v| rfc3339(v.activated_at_ns)),
            limit_failures: entry.stats.limit_failures.load(Ordering::Relaxed),
            last_duration_us: entry.stats.last_duration_us.load(Ordering::Relaxed),
            evaluation_error: state.evaluation_error.as_ref().map(|e| serde_json::to_value(e).unwrap_or_default()),
            versions: versions.iter().take(VERSIONS_LISTED_MAX).map(VersionView::from).collect(),
        })
    }

    /// Prometheus text for `/metrics`.
    pub fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut text = String::new();
        let entries = self.entries();
        let mut family = |name: &str, help: &str, kind: &str, value: &dyn Fn(&PolicyEntry) -> u64| {
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} {kind}");
            for entry in &entries {
                let _ = writeln!(text, "{name}{{policy=\"{}\"}} {}", entry.name, value(entry));
            }
        };
        family("strata_policy_invocations_total", "Calls into the policy's component.", "counter", &|e| {
            e.stats.invocations.load(Ordering::Relaxed)
        });
        family("strata_policy_failures_total", "Failed calls (traps, limits, contract violations).", "counter", &|e| {
            e.stats.failures.load(Ordering::Relaxed)
        });
        family("strata_policy_limit_failures_total", "Calls stopped by a limit.", "counter", &|e| {
            e.stats.limit_failures.load(Ordering::Relaxed)
        });
        family(
            "strata_policy_traps_total",
            "Calls that trapped (panic, unreachable, stack overflow).",
            "counter",
            &|e| e.stats.traps.load(Ordering::Relaxed),
        );
        family("strata_policy_reload_failures_total", "Reloads rejected for this policy.", "counter", &|e| {
            e.stats.reload_failures.load(Ordering::Relaxed)
        });
        family("strata_policy_active_version", "Sequence number of the active version (0 = none).", "gauge", &|e| {
            e.active.load().as_ref().map_or(0, |v| v.seq as u64)
        });
        family("strata_policy_last_duration_microseconds", "Duration of the last call.", "gauge", &|e| {
            e.stats.last_duration_us.load(Ordering::Relaxed)
        });
        let versions: Vec<(String, Vec<(String, VersionStats)>)> = entries
            .iter()
            .map(|e| {
                let by_version = e.stats.by_version.lock().unwrap_or_else(|p| p.into_inner());
                (e.name.clone(), by_version.iter().map(|(k, v)| (k.clone(), *v)).collect())
            })
            .collect();
        type Family = (&'static str, &'static str, fn(&VersionStats) -> String);
        let per_version: [Family; 4] = [
            ("strata_policy_version_invocations_total", "Calls per component version (sha256 prefix).", |v| {
                v.invocations.to_string()
            }),
            ("strata_policy_version_failures_total", "Failed calls per component version.", |v| v.failures.to_string()),
            ("strata_policy_version_traps_total", "Trapped calls per component version.", |v| v.traps.to_string()),
            ("strata_policy_version_seconds_total", "Time in calls per component version.", |v| {
                format!("{:.6}", v.micros_total as f64 / 1e6)
            }),
        ];
        for (name, help, value) in per_version {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter");
            for (policy, counters) in &versions {
                for (version, stats) in counters {
                    let _ = writeln!(text, "{name}{{policy=\"{policy}\",version=\"{version}\"}} {}", value(stats));
                }
            }
        }
        let _ = writeln!(text, "# HELP strata_policy_reloads_total Reloads of the policy directory.");
        let _ = writeln!(text, "# TYPE strata_policy_reloads_total counter");
        let _ = writeln!(text, "strata_policy_reloads_total {}", self.reloads_total.load(Ordering::Relaxed));
        let _ = writeln!(text, "# HELP strata_policy_reload_errors_total Policies or files rejected by reloads.");
        let _ = writeln!(text, "# TYPE strata_policy_reload_errors_total counter");
        let _ =
            writeln!(text, "strata_policy_reload_errors_total {}", self.reload_failures_total.load(Ordering::Relaxed));
        text
    }

    /// The sandbox (for `strata policy check` and the benchmark).
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

/// The component bytes of `definition`: a built-in, or a regular file of at
/// most `plugin_bytes_max` (wherever the path points: `/dev/zero` or a FIFO
/// is refused, not read).
fn read_plugin(definition: &PolicyDefinition, plugin_bytes_max: u64) -> Result<Vec<u8>, PolicyError> {
    let error = |message: String| PolicyError::Plugin {
        policy: definition.name.clone(),
        plugin: definition.plugin.to_string(),
        message,
    };
    match &definition.plugin {
        PluginSource::Builtin(name) => {
            builtins::component(name).map(<[u8]>::to_vec).ok_or_else(|| error("no such built-in".into()))
        }
        PluginSource::File(path) => files::read_regular_file(path, plugin_bytes_max, "policies.plugin_bytes_max")
            .map_err(|e| error(e.to_string())),
    }
}

/// The facts of a dataset, from its catalog record and schema.
pub fn dataset_facts(record: &crate::catalog::DatasetRecord, schema: &crate::schema::DatasetSchema) -> DatasetFacts {
    let mut columns = vec![(schema.time_column.clone(), crate::schema::ColumnKind::Time)];
    columns.extend(schema.columns.iter().map(|c| (c.name.clone(), c.kind)));
    DatasetFacts {
        name: record.name.clone(),
        period: record.period.as_str().to_string(),
        time_column: schema.time_column.clone(),
        columns,
    }
}

/// The facts of one partition, from its catalog record.
pub fn partition_facts(
    dataset: &crate::names::DatasetName,
    record: &crate::catalog::PartitionRecord,
) -> PartitionFacts {
    PartitionFacts {
        id: crate::names::partition_label(dataset, &record.period_label, &record.key),
        dataset: dataset.as_str().to_string(),
        period_label: record.period_label.clone(),
        period_start_ns: record.period_start_ns,
        period_end_ns: record.period_end_ns,
        key: record.key.clone(),
        tier: record.tier,
        read_only: record.read_only,
        rows: record.rows.max(0) as u64,
        bytes: record.bytes.max(0) as u64,
        min_time_ns: record.min_time_ns,
        max_time_ns: record.max_time_ns,
        created_at_ns: record.created_at_ns,
        last_written_at_ns: record.last_written_at_ns,
        file_count: record.file_count.clamp(0, i64::from(u32::MAX)) as u32,
        archived: record.archived,
    }
}
