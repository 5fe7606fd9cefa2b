//! The typed evaluation API: scheduled policies evaluated on partition
//! facts, and partitioners bound to a dataset and pinned to one version for
//! a write request. Every call is counted and its answer checked against
//! the contract (`plan::check_decisions`, `plan::check_keys`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::definition::{PluginSource, PolicyDefinition};
use super::plan::{self, Decisions};
use super::{LoadedVersion, PolicyEntry, PolicyError, PolicyRuntime, Step, TimedMessage, partitioner_input};
use crate::facts::{ArchiveDecision, ColumnBatch, DatasetFacts, PartitionFacts, RetentionDecision, TierDecision};
use crate::sandbox::{CallContext, CompiledComponent, PolicyKind, SandboxError};
use crate::sync::Recover as _;

/// How many component versions of one policy `/metrics` keeps counters
/// for; past it the least-called version's counters are dropped.
const VERSIONS_COUNTED_MAX: usize = 16;

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
    pub(super) entry: Arc<PolicyEntry>,
    pub(super) version: Arc<LoadedVersion>,
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

    /// The built-in plugin's name (`partition-by-hash`, …), or `None` for
    /// a custom component.
    pub fn builtin(&self) -> Option<&str> {
        match &self.version.definition.plugin {
            PluginSource::Builtin(name) => Some(name),
            _ => None,
        }
    }

    /// The version's config, as the JSON the component is given.
    pub fn config_json(&self) -> &str {
        &self.version.definition.config_json
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

impl PolicyRuntime {
    /// Evaluates the active version of a retention policy.
    pub fn evaluate_retention(
        &self,
        name: &str,
        now_ns: i64,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Evaluated<Vec<RetentionDecision>>, PolicyError> {
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
    ) -> Result<Evaluated<Vec<TierDecision>>, PolicyError> {
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
    ) -> Result<Evaluated<Vec<ArchiveDecision>>, PolicyError> {
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

    /// The component sha256 of the version of `name` serving now, if any:
    /// what a run about to start will evaluate.
    pub fn serving_component_sha256(&self, name: &str) -> Option<String> {
        let entry = self.entry(name).ok()?;
        let active = entry.active.load_full()?;
        Some(active.component.sha256().to_string())
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
        let decisions = self.call_scheduled(
            &entry,
            &version.component,
            &version.definition,
            (now_ns, dataset, partitions),
            Step::Run,
        )?;
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
            step: Step::Partitioning,
            message: format!("a batch of {} records is too large to partition", parsed.rows()),
        })?;
        let columns = partitioner_input(parsed, time_column, &version.partitioner_columns);
        let (entry, component) = (&partitioner.entry, &version.component);
        self.call_partition(entry, component, &version.definition, (&columns, rows), Step::Partitioning)
    }

    pub(super) fn call_partition(
        &self,
        entry: &PolicyEntry,
        component: &CompiledComponent,
        definition: &PolicyDefinition,
        (columns, rows): (&[ColumnBatch], u32),
        step: Step,
    ) -> Result<Vec<Result<String, String>>, PolicyError> {
        let call = CallContext { policy: &definition.name, limits: &definition.limits };
        let started = Instant::now();
        let outcome = component.partition(call, &definition.config_json, columns, rows);
        self.count(entry, component.sha256(), started, outcome.as_ref().err(), step);
        let keys =
            outcome.map_err(|source| PolicyError::Evaluation { policy: definition.name.clone(), step, source })?;
        plan::check_keys(&keys, rows as usize)
            .map_err(|message| self.contract_failure(entry, &definition.name, step, message))?;
        Ok(keys)
    }

    /// Calls a retention, tiering or archival component on `(now, dataset,
    /// partitions)` as `step`, counts the call and checks the answer.
    pub(super) fn call_scheduled(
        &self,
        entry: &PolicyEntry,
        component: &CompiledComponent,
        definition: &PolicyDefinition,
        (now_ns, dataset, partitions): (i64, &DatasetFacts, &[PartitionFacts]),
        step: Step,
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
        self.count(entry, component.sha256(), started, outcome.as_ref().err(), step);
        let decisions =
            outcome.map_err(|source| PolicyError::Evaluation { policy: definition.name.clone(), step, source })?;
        plan::check_decisions(&decisions, partitions)
            .map_err(|message| self.contract_failure(entry, &definition.name, step, message))?;
        Ok(decisions)
    }

    /// Counts a call as `step`. A candidate's calls stay out of the
    /// per-version counters (it is no version of the policy), and only the
    /// calls of a serving version (runs, simulations, partitioning) set the
    /// policy's `evaluation_error`: a version that fails to load is the
    /// `load_error`.
    pub(super) fn count(
        &self,
        entry: &PolicyEntry,
        component_sha256: &str,
        started: Instant,
        error: Option<&SandboxError>,
        step: Step,
    ) {
        let stats = &entry.stats;
        let micros = started.elapsed().as_micros() as u64;
        let trapped = matches!(error, Some(SandboxError::Trap(_) | SandboxError::StackOverflow { .. }));
        stats.invocations.fetch_add(1, Ordering::Relaxed);
        stats.last_duration_us.store(micros, Ordering::Relaxed);
        if step != Step::Candidate {
            let mut by_version = stats.by_version.lock_or_recover();
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
            tracing::warn!(policy = entry.name, %step, %error, "policy call failed");
            if serving(step) {
                entry.state().evaluation_error = Some(TimedMessage::now(format!("{step} {error}")));
            }
        }
    }

    fn contract_failure(&self, entry: &PolicyEntry, policy: &str, step: Step, message: String) -> PolicyError {
        entry.stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(policy, %step, %message, "policy broke the contract");
        if serving(step) {
            entry.state().evaluation_error = Some(TimedMessage::now(format!("{step} broke the contract: {message}")));
        }
        PolicyError::Contract { policy: policy.to_string(), step, message }
    }
}

/// Whether `step` is a call of a version that serves (or was asked for by
/// name), as opposed to one being loaded or an uploaded candidate.
fn serving(step: Step) -> bool {
    matches!(step, Step::Run | Step::Simulation | Step::Partitioning)
}
