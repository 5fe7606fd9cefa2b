//! Simulations: a version of a scheduled policy (the active one, a
//! recorded one or an uploaded candidate) evaluated against partition
//! facts, with its plan diffed against the active version's. Nothing is
//! changed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::BoundPartitioner;
use super::definition::PluginSource;
use super::plan::{self, PlanChange, PlanEntry};
use super::{Candidate, LoadedVersion, PolicyEntry, PolicyError, PolicyRuntime, Step};
use crate::catalog::PolicyVersionRecord;
use crate::facts::{ColumnBatch, DatasetFacts, PartitionFacts};
use crate::sandbox::{CallContext, PolicyKind};

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

impl PolicyRuntime {
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
        let kind = simulated_kind(&entry, active.as_ref())?;
        let (label, evaluated) = self.simulated_version(&entry, active.as_ref(), target, kind)?;
        let started = Instant::now();
        let step = if label == "candidate" { Step::Candidate } else { Step::Simulation };
        let inputs = (now_ns, dataset, partitions);
        let decisions = self.call_scheduled(&entry, &evaluated.component, &evaluated.definition, inputs, step)?;
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
                    self.call_scheduled(&entry, &active.component, &active.definition, inputs, Step::Simulation)?;
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

    /// The version `target` names, with its label (`active`, `version` or
    /// `candidate`).
    fn simulated_version(
        &self,
        entry: &PolicyEntry,
        active: Option<&Arc<LoadedVersion>>,
        target: SimulationTarget,
        kind: PolicyKind,
    ) -> Result<(&'static str, Arc<LoadedVersion>), PolicyError> {
        match target {
            SimulationTarget::Active => {
                let active = active.cloned().ok_or_else(|| PolicyError::NotActive {
                    policy: entry.name.clone(),
                    reason: entry.state().load_error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
                })?;
                Ok(("active", active))
            }
            SimulationTarget::Seq(_) | SimulationTarget::Sha256(_) => {
                Ok(("version", self.recorded_version(entry, active, &target)?))
            }
            SimulationTarget::Candidate(candidate) => {
                Ok(("candidate", self.candidate_version(entry, active, candidate, kind)?))
            }
        }
    }

    /// A version from the catalog, by sequence number or sha256 prefix; the
    /// active one when it is that version, else loaded now.
    fn recorded_version(
        &self,
        entry: &PolicyEntry,
        active: Option<&Arc<LoadedVersion>>,
        target: &SimulationTarget,
    ) -> Result<Arc<LoadedVersion>, PolicyError> {
        let version_error = |message: String| PolicyError::Version { policy: entry.name.clone(), message };
        let versions = self.catalog.policy_versions(&entry.name)?;
        let record = match target {
            SimulationTarget::Seq(seq) => versions.iter().find(|v| v.seq == *seq),
            SimulationTarget::Sha256(prefix) => find_by_sha256_prefix(&versions, prefix).map_err(version_error)?,
            _ => None,
        }
        .ok_or_else(|| version_error("has no such version".into()))?;
        Ok(match active {
            Some(active) if active.seq == record.seq => active.clone(),
            _ => Arc::new(self.load_record(entry, record)?),
        })
    }

    /// An uploaded component, run with the policy's current definition
    /// once its `validate-config` accepts the config.
    fn candidate_version(
        &self,
        entry: &PolicyEntry,
        active: Option<&Arc<LoadedVersion>>,
        candidate: Candidate,
        kind: PolicyKind,
    ) -> Result<Arc<LoadedVersion>, PolicyError> {
        let name = entry.name.as_str();
        let mut definition = active
            .map(|v| v.definition.clone())
            .or_else(|| entry.state().definition.clone())
            .ok_or_else(|| PolicyError::Version {
                policy: name.to_string(),
                message: "has no definition to run a candidate with".into(),
            })?;
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
            Err(source) => {
                return Err(PolicyError::Evaluation { policy: name.into(), step: Step::ValidateConfig, source });
            }
        }
        let version =
            LoadedVersion { seq: 0, definition, component, activated_at_ns: 0, partitioner_columns: Vec::new() };
        Ok(Arc::new(version))
    }
}

impl PolicyRuntime {
    /// Keys `rows` records (given as `columns`) with `partitioner`'s
    /// component run under `config_json` — the active config or a
    /// candidate, which the component's `validate-config` must accept
    /// first. Answers like [`PolicyRuntime::partition_batch`]. Changes
    /// nothing: the policy keeps its version and its config.
    pub fn simulate_partition(
        &self,
        partitioner: &BoundPartitioner,
        config_json: &str,
        columns: &[ColumnBatch],
        rows: u32,
    ) -> Result<Vec<Result<String, String>>, PolicyError> {
        let version = &partitioner.version;
        let mut definition = version.definition.clone();
        if definition.config_json != config_json {
            let name = definition.name.clone();
            let call = CallContext { policy: &name, limits: &definition.limits };
            match version.component.validate_config(call, config_json) {
                Ok(Ok(())) => {}
                Ok(Err(problems)) => return Err(PolicyError::ConfigRejected { policy: name, problems }),
                Err(source) => {
                    return Err(PolicyError::Evaluation { policy: name, step: Step::Candidate, source });
                }
            }
            definition.config_json = config_json.to_string();
        }
        // Counted as a candidate: a report's what-if never shows in the
        // policy's per-version metrics.
        self.call_partition(&partitioner.entry, &version.component, &definition, (columns, rows), Step::Candidate)
    }
}

/// The kind of the policy a simulation runs: from the active version, else
/// the latest definition. Partitioners are not simulated on partitions.
fn simulated_kind(entry: &PolicyEntry, active: Option<&Arc<LoadedVersion>>) -> Result<PolicyKind, PolicyError> {
    let name = entry.name.as_str();
    let kind = active
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
    Ok(kind)
}

/// The one recorded version whose component sha256 starts with `prefix`
/// (at least 8 characters), if any.
fn find_by_sha256_prefix<'a>(
    versions: &'a [PolicyVersionRecord],
    prefix: &str,
) -> Result<Option<&'a PolicyVersionRecord>, String> {
    if prefix.len() < 8 {
        return Err("a version sha256 prefix needs at least 8 characters".into());
    }
    let matching: Vec<&PolicyVersionRecord> =
        versions.iter().filter(|v| v.component_sha256.starts_with(prefix)).collect();
    if matching.len() > 1 {
        return Err(format!("sha256 prefix {prefix} matches several versions"));
    }
    Ok(matching.first().copied())
}
