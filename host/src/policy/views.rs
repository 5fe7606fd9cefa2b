//! What the API and `/metrics` show of the policies: summaries, details
//! with the recorded versions, the bindings of datasets, and the counters
//! in Prometheus text.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{FileError, PolicyEntry, PolicyError, PolicyRuntime, VersionStats};
use crate::catalog::{PolicyVersionRecord, PolicyVersionStatus};
use crate::sandbox::{PolicyKind, PolicyLimits};
use crate::sync::Recover as _;
use crate::time::rfc3339;

/// Versions listed by `GET /v1/policies/{name}`.
const VERSIONS_LISTED_MAX: usize = 50;

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
    /// The last evaluation error of the serving version.
    pub evaluation_error: Option<serde_json::Value>,
    /// The last automatic rollback, until a new version activates.
    pub auto_rollback: Option<super::AutoRollback>,
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

impl PolicyRuntime {
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
        (summaries, self.file_errors.lock_or_recover().clone())
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
            auto_rollback: state.auto_rollback.clone(),
            versions: versions.iter().take(VERSIONS_LISTED_MAX).map(VersionView::from).collect(),
        })
    }

    /// Prometheus text for `/metrics`.
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        let entries = self.entries();
        write_policy_families(&mut text, &entries);
        write_version_families(&mut text, &entries);
        let _ = writeln!(text, "# HELP strata_policy_reloads_total Reloads of the policy directory.");
        let _ = writeln!(text, "# TYPE strata_policy_reloads_total counter");
        let _ = writeln!(text, "strata_policy_reloads_total {}", self.reloads_total.load(Ordering::Relaxed));
        let _ = writeln!(text, "# HELP strata_policy_reload_errors_total Policies or files rejected by reloads.");
        let _ = writeln!(text, "# TYPE strata_policy_reload_errors_total counter");
        let _ =
            writeln!(text, "strata_policy_reload_errors_total {}", self.reload_failures_total.load(Ordering::Relaxed));
        text
    }
}

/// One family per counter of a policy, one sample per policy.
fn write_policy_families(text: &mut String, entries: &[Arc<PolicyEntry>]) {
    let mut family = |name: &str, help: &str, kind: &str, value: &dyn Fn(&PolicyEntry) -> u64| {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} {kind}");
        for entry in entries {
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
    family("strata_policy_traps_total", "Calls that trapped (panic, unreachable, stack overflow).", "counter", &|e| {
        e.stats.traps.load(Ordering::Relaxed)
    });
    family("strata_policy_reload_failures_total", "Reloads rejected for this policy.", "counter", &|e| {
        e.stats.reload_failures.load(Ordering::Relaxed)
    });
    family("strata_policy_active_version", "Sequence number of the active version (0 = none).", "gauge", &|e| {
        e.active.load().as_ref().map_or(0, |v| v.seq as u64)
    });
    let _ = writeln!(text, "# HELP strata_policy_last_duration_seconds Duration of the last call.");
    let _ = writeln!(text, "# TYPE strata_policy_last_duration_seconds gauge");
    for entry in entries {
        let seconds = entry.stats.last_duration_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(text, "strata_policy_last_duration_seconds{{policy=\"{}\"}} {seconds:.6}", entry.name);
    }
}

/// One family per counter of a component version, one sample per policy
/// and version.
fn write_version_families(text: &mut String, entries: &[Arc<PolicyEntry>]) {
    let versions: Vec<(String, Vec<(String, VersionStats)>)> = entries
        .iter()
        .map(|e| {
            let by_version = e.stats.by_version.lock_or_recover();
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
}
