//! A policy run: snapshot → facts → the component → guard rails →
//! execution → run record and audit.
//!
//! The snapshot is the dataset's partition rows, with their facts cached
//! per dataset while the catalog's `partitions_seq` stays the same
//! ([`Manifest`]). The component decides over the facts off the runtime;
//! the guard rails ([`super::guard`]) judge every decision at the server's
//! clock (a dry run's at its `now`); accepted decisions are executed
//! ([`super::execute`]) unless the partition is waiting out a retry backoff.
//! The report is stored as the run's record, with one `lifecycle_decision`
//! audit event per decision that asked for a change, in one catalog
//! transaction. `input_sha256` is a digest of everything the component was
//! given, so two runs with equal inputs are seen to be equal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::digests::{facts_digest, input_digest};
use super::execute::Step;
use super::guard::{self, Action, GuardRails, Proposal, Verdict};
use super::off_runtime;
use super::{Lifecycle, no_dataset};
use crate::catalog::{PartitionRecord, RunRecord};
use crate::error::{ErrorCode, Failure};
use crate::facts::{ArchiveDecision, DatasetFacts, PartitionFacts, RetentionAction};
use crate::policy::{dataset_facts, partition_facts};
use crate::sandbox::PolicyKind;
use crate::store::DatasetState;
use crate::sync::Recover as _;
use crate::tier::Tier;
use crate::time::{now_ns, rfc3339};

/// What happened to one decision of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunEntry {
    /// The partition's public id.
    pub partition_id: String,
    /// `keep`, `delete` or `move`.
    pub action: &'static str,
    /// The tier of a move.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// The policy's reason.
    pub reason: String,
    /// The guard's verdict: `accept`, `noop` or `reject`.
    pub verdict: &'static str,
    /// Why the guard refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// `executed`, `failed`, `rejected`, `noop` or `planned` (dry run).
    pub outcome: &'static str,
    /// Why execution failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes copied.
    pub bytes_moved: u64,
}

impl RunEntry {
    fn new(proposal: Proposal, verdict: &Verdict) -> RunEntry {
        let (action, tier) = action_label(proposal.action);
        let (verdict, why, outcome) = match verdict {
            Verdict::Accept => ("accept", None, "planned"),
            Verdict::NoOp => ("noop", None, "noop"),
            Verdict::Reject(why) => ("reject", Some(why.clone()), "rejected"),
        };
        RunEntry {
            partition_id: proposal.partition_id,
            action,
            tier,
            reason: proposal.reason,
            verdict,
            why,
            outcome,
            error: None,
            bytes_moved: 0,
        }
    }
}

/// An action's name in reports and its tier (moves only).
pub(super) fn action_label(action: Action) -> (&'static str, Option<Tier>) {
    match action {
        Action::Keep => ("keep", None),
        Action::Delete => ("delete", None),
        Action::Move(tier) => ("move", Some(tier)),
        Action::Archive => ("archive", None),
    }
}

/// One run of one policy over one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Catalog id of the run.
    pub id: i64,
    /// Policy name.
    pub policy: String,
    /// Policy kind.
    pub kind: PolicyKind,
    /// The component version that decided.
    pub component_sha256: Option<String>,
    /// The dataset.
    pub dataset: String,
    /// The `now` the policy was given, ns.
    pub now_ns: i64,
    /// The clock the guard rails judged against, ns: the server's when the
    /// run executes, `now_ns` only for a dry run.
    pub guard_now_ns: i64,
    /// Decided and judged, nothing executed.
    pub dry: bool,
    /// Wall-clock start, ns.
    pub started_at_ns: i64,
    /// Wall-clock end, ns.
    pub finished_at_ns: i64,
    /// Decisions returned.
    pub decisions: usize,
    /// Decisions that change nothing (keep, or already there); not listed.
    pub unchanged: usize,
    /// Decisions executed.
    pub executed: usize,
    /// Decisions the guard rails refused.
    pub rejected: usize,
    /// Decisions that failed during execution.
    pub failed: usize,
    /// Accepted decisions for partitions still waiting out a retry backoff.
    pub deferred: usize,
    /// Bytes copied between targets.
    pub bytes_moved: u64,
    /// Reading the catalog and building the facts, ms.
    pub snapshot_ms: f64,
    /// Time in the component, ms.
    pub evaluation_ms: f64,
    /// Judging the decisions and executing the accepted ones, ms.
    pub execution_ms: f64,
    /// sha256 of the facts the component saw.
    pub input_sha256: String,
    /// Why the whole run failed (the policy could not be evaluated).
    pub error: Option<String>,
    /// The automatic rollback this run's failure caused, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<crate::policy::AutoRollback>,
    /// Every decision that asked for a change, and what became of it.
    pub entries: Vec<RunEntry>,
}

/// A dataset's partitions as a run sees them. A record is a function of its
/// catalog row alone, so while the dataset's `partitions_seq` stays the
/// same, a run may reuse them instead of reading and building 100,000 again.
#[derive(Debug)]
pub(super) struct Manifest {
    seq: i64,
    pub(super) records: Vec<PartitionRecord>,
    pub(super) facts: Arc<Vec<PartitionFacts>>,
    facts_sha256: [u8; 32],
}

/// What a run is about: the policy, the dataset and the clocks.
struct RunScope<'a> {
    policy: &'a str,
    kind: PolicyKind,
    dataset: &'a Arc<DatasetState>,
    /// The `now` the policy sees.
    now: i64,
    /// The clock the guard rails judge at.
    guard_now: i64,
    dry: bool,
}

impl Lifecycle {
    /// Runs `policy` now over `dataset` (or every dataset it binds), with the
    /// policy seeing `now_ns`.
    ///
    /// A run that executes is judged by the guard rails at the server's
    /// clock, whatever `now_ns` says, and refuses a `now_ns` in the future:
    /// a client's clock must never make an open period look closed or a
    /// young partition look old. A dry run is judged at `now_ns`, so it can
    /// ask what would happen at any time.
    pub async fn run_policy(
        &self,
        policy: &str,
        dataset: Option<&str>,
        now_ns: i64,
        dry: bool,
    ) -> Result<Vec<RunReport>, Failure> {
        refuse_future_now(policy, now_ns, dry)?;
        let kind = self.lifecycle_kind(policy)?;
        let datasets = self.bound_datasets(policy, dataset)?;
        let _one_at_a_time = self.running.lock().await;
        let mut reports = Vec::new();
        for dataset in datasets {
            reports.push(self.run_one(policy, kind, &dataset, now_ns, dry).await?);
        }
        Ok(reports)
    }

    /// The kind of a loaded policy that lifecycle runs may run.
    fn lifecycle_kind(&self, policy: &str) -> Result<PolicyKind, Failure> {
        let kind = self
            .policies
            .list()
            .0
            .into_iter()
            .find(|s| s.name == policy)
            .ok_or_else(|| Failure::new(ErrorCode::PolicyNotFound, format!("no policy {policy}")))?
            .kind
            .ok_or_else(|| Failure::new(ErrorCode::PolicyUnavailable, format!("policy {policy} has no version")))?;
        if kind == PolicyKind::Partitioner {
            return Err(Failure::new(
                ErrorCode::PolicyInvalid,
                format!("policy {policy} is a partitioner; it runs on the write path, not in lifecycle runs"),
            ));
        }
        Ok(kind)
    }

    /// The named dataset (which the policy must bind), or every dataset the
    /// policy binds.
    fn bound_datasets(&self, policy: &str, dataset: Option<&str>) -> Result<Vec<Arc<DatasetState>>, Failure> {
        let Some(name) = dataset else {
            return Ok(self
                .store
                .datasets()
                .into_iter()
                .filter(|d| self.policies.binds(policy, d.name.as_str()))
                .collect());
        };
        let state = self.store.dataset(name).ok_or_else(|| no_dataset(name))?;
        if !self.policies.binds(policy, name) {
            return Err(Failure::new(ErrorCode::BadRequest, format!("policy {policy} is not bound to dataset {name}")));
        }
        Ok(vec![state])
    }

    async fn run_one(
        &self,
        policy: &str,
        kind: PolicyKind,
        dataset: &Arc<DatasetState>,
        now: i64,
        dry: bool,
    ) -> Result<RunReport, Failure> {
        let started_at_ns = now_ns();
        let started = Instant::now();
        let manifest = self.manifest(dataset).await?;
        // Judged at the server's clock unless nothing will execute.
        let scope = RunScope { policy, kind, dataset, now, guard_now: if dry { now } else { now_ns() }, dry };
        let dataset_info = dataset_facts(&dataset.record, &dataset.schema());
        let input_sha256 = input_digest(now, &dataset_info, &manifest.facts_sha256);
        let mut report = RunReport::new(&scope, started_at_ns, input_sha256);
        report.snapshot_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut unchanged = Vec::new();
        match self.evaluate(&scope, dataset_info, &manifest.facts).await? {
            Err((error, component_sha256)) => {
                report.error = Some(error);
                report.component_sha256 = component_sha256;
            }
            Ok(evaluation) => {
                unchanged = self.judge_and_execute(&scope, &manifest, evaluation, &mut report).await;
            }
        }
        report.finished_at_ns = now_ns();
        self.count_run(&report);
        if !dry {
            report.auto_rollback = self.record_outcome(&report).await?;
        }
        report.id = self.record_run(&report).await?;
        self.remember_unchanged(dataset.record.id, &report, unchanged);
        Ok(report)
    }

    /// Tells the policy runtime how an executing run of its version went;
    /// past `lifecycle.auto_rollback_after_failures` failures in a row it
    /// rolls the version back (off the runtime: it may compile).
    async fn record_outcome(&self, report: &RunReport) -> Result<Option<crate::policy::AutoRollback>, Failure> {
        let Some(component_sha256) = report.component_sha256.clone() else { return Ok(None) };
        let (policies, name, error) = (self.policies.clone(), report.policy.clone(), report.error.clone());
        let threshold = self.config.lifecycle.auto_rollback_after_failures;
        let rollback =
            off_runtime(move || policies.record_run_outcome(&name, &component_sha256, error.as_deref(), threshold))
                .await?;
        if let Some(rollback) = &rollback {
            self.count(format!("strata_policy_auto_rollbacks_total{{policy=\"{}\"}}", rollback.policy), 1);
        }
        Ok(rollback)
    }

    /// The dataset's partitions and their facts, rebuilt only when the
    /// catalog says a partition row changed since the last run.
    pub(super) async fn manifest(&self, dataset: &Arc<DatasetState>) -> Result<Arc<Manifest>, Failure> {
        let dataset_id = dataset.record.id;
        let cached = self.manifests.lock_or_recover().get(&dataset_id).cloned();
        if let Some(cached) = cached {
            let seq = self.catalog().call(move |c| c.partitions_seq(dataset_id)).await?;
            if seq == cached.seq {
                return Ok(cached);
            }
        }
        let name = dataset.name.clone();
        let manifest = self
            .catalog()
            .call(move |c| -> Result<Manifest, Failure> {
                let (seq, records) = c.partitions_at_seq(dataset_id)?;
                let facts: Vec<PartitionFacts> = records.iter().map(|r| partition_facts(&name, r)).collect();
                let facts_sha256 = facts_digest(&facts);
                Ok(Manifest { seq, records, facts: Arc::new(facts), facts_sha256 })
            })
            .await?;
        let manifest = Arc::new(manifest);
        self.manifests.lock_or_recover().insert(dataset_id, manifest.clone());
        Ok(manifest)
    }

    /// Asks the component (off the runtime). The inner error is the run's
    /// `error`: the policy could not be evaluated.
    async fn evaluate(
        &self,
        scope: &RunScope<'_>,
        dataset: DatasetFacts,
        facts: &Arc<Vec<PartitionFacts>>,
    ) -> Result<Result<Evaluation, (String, Option<String>)>, Failure> {
        let (policies, name, facts) = (self.policies.clone(), scope.policy.to_string(), Arc::clone(facts));
        let (kind, now) = (scope.kind, scope.now);
        let evaluated = off_runtime(move || -> Result<Evaluation, (String, Option<String>)> {
            // The version that will run, named in the report if it fails.
            let serving = policies.serving_component_sha256(&name);
            let failed = |error: crate::policy::PolicyError| (error.to_string(), serving.clone());
            Ok(match kind {
                PolicyKind::Retention => {
                    Evaluation::of(policies.evaluate_retention(&name, now, &dataset, &facts).map_err(failed)?, |d| {
                        let action = match d.action {
                            RetentionAction::Keep => Action::Keep,
                            RetentionAction::Delete => Action::Delete,
                        };
                        (action, None)
                    })
                }
                PolicyKind::Archival => {
                    Evaluation::of(policies.evaluate_archival(&name, now, &dataset, &facts).map_err(failed)?, |d| {
                        (Action::Archive, Some(d.clone()))
                    })
                }
                _ => Evaluation::of(policies.evaluate_tiering(&name, now, &dataset, &facts).map_err(failed)?, |d| {
                    (Action::Move(d.target), None)
                }),
            })
        })
        .await?;
        Ok(evaluated)
    }

    /// Judges the component's decisions, lists each one that asks for a
    /// change, and executes the accepted ones (none in a dry run). Returns
    /// the decisions that change nothing (keeps), which are not listed.
    async fn judge_and_execute(
        &self,
        scope: &RunScope<'_>,
        manifest: &Manifest,
        evaluation: Evaluation,
        report: &mut RunReport,
    ) -> Vec<(i64, Proposal)> {
        let Evaluation { proposals, mut archive_options, component_sha256, duration } = evaluation;
        archive_options.resize(proposals.len(), None);
        report.component_sha256 = Some(component_sha256);
        report.evaluation_ms = duration.as_secs_f64() * 1000.0;
        report.decisions = proposals.len();
        let executing = Instant::now();
        // `facts` and `records` are in the same order.
        let located = guard::locate(&manifest.facts, &proposals);
        let rails = self.rails(scope.dataset.name.as_str());
        let verdicts = guard::judge_located(&manifest.facts, &proposals, &located, &rails, scope.guard_now);
        let mut work = Vec::new();
        let mut unchanged = Vec::new();
        for (((proposal, verdict), options), index) in
            proposals.into_iter().zip(verdicts).zip(archive_options).zip(located)
        {
            if verdict == Verdict::NoOp {
                // Keeps are counted, not listed: a run over 100,000
                // partitions that changes nothing stays small. Explain
                // shows them from memory.
                report.unchanged += 1;
                if let Some(index) = index {
                    unchanged.push((manifest.records[index].id, proposal));
                }
                continue;
            }
            let action = proposal.action;
            let mut entry = RunEntry::new(proposal, &verdict);
            match verdict {
                Verdict::NoOp => {}
                Verdict::Reject(_) => report.rejected += 1,
                Verdict::Accept if scope.dry => {}
                Verdict::Accept => {
                    let record = &manifest.records[index.expect("the guard accepts only known partitions")];
                    if let Some((failures, retry_at)) = self.deferral(record.id) {
                        entry.outcome = "deferred";
                        entry.error = Some(format!("failed {failures} time(s); retried after {}", rfc3339(retry_at)));
                        report.deferred += 1;
                    } else {
                        work.push(Step {
                            entry: report.entries.len(),
                            record: record.clone(),
                            action,
                            archive: options,
                        });
                    }
                }
            }
            report.entries.push(entry);
        }
        let outcomes = self.execute(scope.dataset, &work).await;
        for (step, outcome) in work.iter().zip(outcomes) {
            self.finish_step(step, outcome, report);
        }
        report.execution_ms = executing.elapsed().as_secs_f64() * 1000.0;
        unchanged
    }

    pub(super) fn rails(&self, dataset: &str) -> GuardRails {
        let lifecycle = &self.config.lifecycle;
        let min_retention_ms = self.store.min_retention_ms(dataset);
        GuardRails {
            min_retention_ns: i64::try_from(min_retention_ms).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000),
            max_deletes_per_run: lifecycle.max_deletes_per_run,
            max_delete_fraction: lifecycle.max_delete_fraction,
            require_archive_before_delete: lifecycle.require_archive_before_delete,
            allow_backward_moves: lifecycle.allow_backward_moves,
        }
    }

    /// The run's counters for `/metrics`.
    fn count_run(&self, report: &RunReport) {
        let labels = format!("policy=\"{}\",kind=\"{}\"", report.policy, report.kind.as_str());
        self.count(format!("strata_lifecycle_runs_total{{{labels}}}"), 1);
        self.count(format!("strata_lifecycle_rejected_total{{{labels}}}"), report.rejected as u64);
        self.count(format!("strata_lifecycle_failed_total{{{labels}}}"), report.failed as u64);
        if report.error.is_some() {
            self.count(format!("strata_lifecycle_run_errors_total{{{labels}}}"), 1);
        }
    }

    /// Stores the report as the run's record and one audit event per entry,
    /// in one catalog transaction. Returns the run's id.
    async fn record_run(&self, report: &RunReport) -> Result<i64, Failure> {
        let saved = report.clone();
        let id = self
            .catalog()
            .call(move |c| {
                let run = RunRecord {
                    policy: saved.policy.clone(),
                    dataset: saved.dataset.clone(),
                    started_at_ns: saved.started_at_ns,
                    report: serde_json::to_value(&saved).unwrap_or_default(),
                };
                c.record_run(&run, |id| decision_events(&saved, id), saved.finished_at_ns)
            })
            .await?;
        Ok(id)
    }
}

/// Refuses a run that would execute at a `now` after the server's clock.
fn refuse_future_now(policy: &str, now_ns: i64, dry: bool) -> Result<(), Failure> {
    let server_now = crate::time::now_ns();
    if dry || now_ns <= server_now {
        return Ok(());
    }
    Err(Failure::new(
        ErrorCode::BadRequest,
        format!(
            "now {} is after the server's clock ({}); a run that executes is judged at the server's \
             clock, and a future `now` is only for dry runs (\"dry\": true) and \
             POST /v1/policies/{policy}/simulate",
            rfc3339(now_ns),
            rfc3339(server_now)
        ),
    ))
}

/// The `lifecycle_decision` audit events of a run: `(partition, detail)`.
fn decision_events(report: &RunReport, id: i64) -> Vec<(String, serde_json::Value)> {
    report
        .entries
        .iter()
        .map(|entry| {
            let detail = json!({
                "run": id,
                "policy": report.policy,
                "component_sha256": report.component_sha256,
                "input_sha256": report.input_sha256,
                "now_ns": report.now_ns,
                "guard_now_ns": report.guard_now_ns,
                "action": entry.action,
                "tier": entry.tier,
                "reason": entry.reason,
                "verdict": entry.verdict,
                "why": entry.why,
                "outcome": entry.outcome,
                "error": entry.error,
                "dry": report.dry,
            });
            (entry.partition_id.clone(), detail)
        })
        .collect()
}

impl RunReport {
    fn new(scope: &RunScope<'_>, started_at_ns: i64, input_sha256: String) -> RunReport {
        RunReport {
            id: 0,
            policy: scope.policy.to_string(),
            kind: scope.kind,
            component_sha256: None,
            dataset: scope.dataset.name.to_string(),
            now_ns: scope.now,
            guard_now_ns: scope.guard_now,
            dry: scope.dry,
            started_at_ns,
            finished_at_ns: 0,
            decisions: 0,
            unchanged: 0,
            executed: 0,
            rejected: 0,
            failed: 0,
            deferred: 0,
            bytes_moved: 0,
            snapshot_ms: 0.0,
            evaluation_ms: 0.0,
            execution_ms: 0.0,
            input_sha256,
            error: None,
            auto_rollback: None,
            entries: Vec::new(),
        }
    }
}

/// A policy's answer in the host's terms.
struct Evaluation {
    proposals: Vec<Proposal>,
    /// The options of each archive decision, by proposal index.
    archive_options: Vec<Option<ArchiveDecision>>,
    component_sha256: String,
    duration: Duration,
}

/// A decision of any kind: its partition and reason.
trait Decision {
    /// The partition id and the reason, moved out.
    fn into_id_and_reason(self) -> (String, String);
}

macro_rules! decision {
    ($($t:ty),*) => {$(
        impl Decision for $t {
            fn into_id_and_reason(self) -> (String, String) {
                (self.partition_id, self.reason)
            }
        }
    )*};
}
decision!(crate::facts::RetentionDecision, crate::facts::TierDecision, ArchiveDecision);

impl Evaluation {
    /// Turns a policy's decisions into proposals (and archive options).
    fn of<T: Decision>(
        evaluated: crate::policy::Evaluated<Vec<T>>,
        action: impl Fn(&T) -> (Action, Option<ArchiveDecision>),
    ) -> Evaluation {
        // Moved, not copied: a run over 100,000 partitions has as many.
        let (proposals, archive_options) = evaluated
            .decisions
            .into_iter()
            .map(|d| {
                let (action, options) = action(&d);
                let (partition_id, reason) = d.into_id_and_reason();
                (Proposal { partition_id, action, reason }, options)
            })
            .unzip();
        Evaluation {
            proposals,
            archive_options,
            component_sha256: evaluated.component_sha256,
            duration: evaluated.duration,
        }
    }
}
