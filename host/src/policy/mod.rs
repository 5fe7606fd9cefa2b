//! The policy runtime: policies are WebAssembly components bound to
//! datasets by TOML files, hot-reloaded while the server runs.
//!
//! - [`definition`] parses `policies/*.toml`.
//! - [`crate::sandbox`] runs the components; it is the only module that
//!   touches wasmtime.
//! - [`plan`] holds the pure contract checks, plans and diffs.
//! - This module is the registry: one [`PolicyRuntime`] keeps the active
//!   version of every policy behind an atomic pointer (evaluations in flight
//!   finish on the version they started with). Its work is split by
//!   concern: `reload` reads the directory, records every version in the
//!   catalog, activates and rolls back; `evaluate` is the typed evaluation
//!   API and the partitioner binding; `simulate` dry-runs versions;
//!   `views` is what the API and `/metrics` show; `inputs` builds the facts
//!   a policy is given; `files` is the only file I/O; `canary` evaluates a
//!   new version on real partitions before it serves and rolls back a
//!   version whose runs keep failing.
//! - [`watcher`] turns file changes into reloads.
//!
//! **Invariant:** a broken component or config never replaces a working
//! one. A reload compiles, type-checks, runs `validate-config`, a smoke
//! evaluation and (once the store is open) the canary first; any failure leaves the last good version serving and
//! is visible in `GET /v1/policies/{name}`, the log and `/metrics`.
//!
//! Every method that runs a component or touches the catalog blocks: call
//! it from `spawn_blocking` or a dedicated thread.

pub use strata_sandbox::builtins;
mod canary;
mod compile_slots;
pub mod definition;
mod evaluate;
pub(crate) mod files;
mod inputs;
pub mod plan;
mod reload;
mod simulate;
mod views;
pub mod watcher;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::catalog::{Catalog, CatalogError};
use crate::error::ErrorCode;
use crate::sandbox::{CompiledComponent, Sandbox, SandboxError};
use crate::sync::{Recover as _, RecoverRw as _};
use crate::time::{now_ns, rfc3339};
use definition::{DefinitionError, PluginSource, PolicyDefinition};

pub use canary::{AutoRollback, CanaryFacts, DatasetInput};
pub use compile_slots::{Candidate, CompileSlot};
pub use evaluate::{BoundPartitioner, Evaluated};
pub use inputs::{dataset_facts, partition_facts, partitioner_input};
pub use reload::ReloadReport;
pub use simulate::{Simulation, SimulationTarget, VersionLabel};
pub use views::{PolicyDetail, PolicySummary, VersionView};

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
    #[error("policy {policy:?}: {step} {source}")]
    Evaluation {
        /// The policy.
        policy: String,
        /// The call that failed.
        step: Step,
        /// What the sandbox said.
        source: SandboxError,
    },
    /// The answer broke the contract (unknown partition, bad key, …).
    #[error("policy {policy:?}: {step} broke the contract: {message}")]
    Contract {
        /// The policy.
        policy: String,
        /// The call whose answer it was.
        step: Step,
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

/// Which call into a policy a failure comes from; errors, `load_error`,
/// run reports and audit events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `validate-config` while a version loads.
    ValidateConfig,
    /// A partitioner's `columns` while a version loads.
    Columns,
    /// The smoke evaluation while a version loads (no partitions, or a
    /// one-record batch).
    Smoke,
    /// The canary while a version loads: a dry evaluation over the real
    /// partitions of the datasets it binds.
    Canary,
    /// A lifecycle run's evaluation.
    Run,
    /// A simulation of a recorded version or the active one.
    Simulation,
    /// A simulation of an uploaded candidate (not counted in the policy's
    /// per-version metrics).
    Candidate,
    /// Keying a write request's records.
    Partitioning,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::ValidateConfig => "validate-config",
            Step::Columns => "columns",
            Step::Smoke => "smoke evaluation",
            Step::Canary => "canary evaluation",
            Step::Run => "evaluation",
            Step::Simulation => "simulation",
            Step::Candidate => "candidate simulation",
            Step::Partitioning => "partitioning",
        })
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
    /// The last evaluation failure of the serving version.
    evaluation_error: Option<TimedMessage>,
    /// Lifecycle runs of the serving version that failed in a row.
    failed_runs: u32,
    /// The last automatic rollback.
    auto_rollback: Option<canary::AutoRollback>,
}

impl PolicyState {
    /// A version was just swapped in: errors of the one before are stale.
    fn now_serving(&mut self) {
        self.load_error = None;
        self.evaluation_error = None;
        self.failed_runs = 0;
        self.auto_rollback = None;
    }
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
        self.state.lock_or_recover()
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
    /// Where the canary gets real partitions from (none until the store is open).
    canary_facts: RwLock<Option<Arc<dyn CanaryFacts>>>,
    auto_rollbacks_total: AtomicU64,
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
            canary_facts: RwLock::new(None),
            auto_rollbacks_total: AtomicU64::new(0),
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
        self.entries.read_or_recover().get(name).cloned().ok_or_else(|| PolicyError::NotFound(name.to_string()))
    }

    fn entries(&self) -> Vec<Arc<PolicyEntry>> {
        self.entries.read_or_recover().values().cloned().collect()
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

    fn active(&self, name: &str) -> Result<(Arc<PolicyEntry>, Arc<LoadedVersion>), PolicyError> {
        let entry = self.entry(name)?;
        let active = entry.active.load_full().ok_or_else(|| PolicyError::NotActive {
            policy: name.to_string(),
            reason: entry.state().load_error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| "not loaded".into()),
        })?;
        Ok((entry, active))
    }

    /// The sandbox (for `strata policy check` and the benchmark).
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}
