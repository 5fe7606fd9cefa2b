//! The lifecycle engine: runs retention and tiering policies over a
//! dataset's partitions and executes what the guard rails accept.
//!
//! A run: catalog snapshot → partition facts → the component → guard rails →
//! execution, one partition at a time → audit and run record. One failing
//! partition never aborts the run; it is reported and decided again on the
//! next run. Compaction of small files ([`compaction`]) is host-native and
//! takes the same run lock for each chunk it merges.
//!
//! **Invariant:** no step deletes data before the catalog commit that makes
//! it unreferenced. A move copies each file create-only to the target,
//! verifies it, then swaps the file rows in one catalog transaction and
//! tombstones the old copies; a delete only tombstones. The sweeper removes
//! tombstoned files after `lifecycle.grace_ms`, so a query that took its
//! snapshot before a commit still finds its files.

pub mod compaction;
pub mod guard;
mod unseal;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::catalog::{AuditKind, Catalog, MoveCommit, MovedFile, NewArchive, NewFile, PartitionRecord, RunRecord};
use crate::config::Config;
use crate::error::{ErrorCode, Failure};
use crate::parquet_file::Encoding;
use crate::policy::definition::{DEFAULT_SCHEDULE, PolicyKind, Schedule};
use crate::policy::facts::{ArchiveDecision, DatasetFacts, PartitionFacts, RetentionAction};
use crate::policy::{PolicyRuntime, dataset_facts, partition_facts};
use crate::storage::{ObjectKey, StorageError, StorageTarget};
use crate::store::{DatasetState, Store};
use crate::tier::Tier;
use crate::time::now_ns;
use guard::{Action, GuardRails, Proposal, Verdict};

/// The storage targets and the target of each tier (opened by the store
/// from `[storage]`).
pub use crate::storage::Targets;

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
        let (action, tier) = match proposal.action {
            Action::Keep => ("keep", None),
            Action::Delete => ("delete", None),
            Action::Move(tier) => ("move", Some(tier)),
            Action::Archive => ("archive", None),
        };
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

/// An accepted decision waiting to be executed.
struct Step {
    /// Its entry in the run report.
    entry: usize,
    record: PartitionRecord,
    action: Action,
    archive: Option<ArchiveDecision>,
}

/// A step that executed.
#[derive(Debug, Clone)]
struct StepDone {
    /// Bytes written to the destination.
    bytes: u64,
    /// Wall time, including the wait for the step's batch.
    elapsed: std::time::Duration,
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
    /// Every decision that asked for a change, and what became of it.
    pub entries: Vec<RunEntry>,
}

/// The lifecycle engine.
#[derive(Debug)]
pub struct Lifecycle {
    store: Arc<Store>,
    policies: Arc<PolicyRuntime>,
    targets: Arc<Targets>,
    config: Arc<Config>,
    /// One run (or restore, or compaction chunk) at a time: each sees the
    /// others' results, and a move never interleaves with a merge.
    running: tokio::sync::Mutex<()>,
    /// When each (policy, dataset) last ran on schedule, ns.
    last_scheduled: Mutex<HashMap<(String, String), i64>>,
    /// Counters for `/metrics`, by metric name with labels.
    counters: Mutex<BTreeMap<String, u64>>,
    /// Partitions whose last step failed: `(failures, no retry before, ns)`.
    backoff: Mutex<HashMap<i64, (u32, i64)>>,
    /// Partitions a compaction request is working on.
    compacting: Mutex<HashSet<i64>>,
    /// The last partition facts built per dataset (by id), with the
    /// catalog's `partitions_seq` they are current for.
    manifests: Mutex<HashMap<i64, Arc<Manifest>>>,
}

/// A dataset's partitions as a run sees them. A record is a function of its
/// catalog row alone, so while the dataset's `partitions_seq` stays the
/// same, a run may reuse them instead of reading and building 100,000 again.
#[derive(Debug)]
struct Manifest {
    seq: i64,
    records: Vec<PartitionRecord>,
    facts: Arc<Vec<PartitionFacts>>,
    facts_sha256: [u8; 32],
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Failure::new(ErrorCode::Internal, format!("worker: {e}")))
}

impl Lifecycle {
    /// Removes copies a crash left between their write and their catalog
    /// commit from every target but the hot tier's (the store swept that
    /// one before flushing). Blocking.
    pub fn open(store: Arc<Store>, policies: Arc<PolicyRuntime>, config: Arc<Config>) -> anyhow::Result<Lifecycle> {
        let targets = store.targets().clone();
        for target in targets.all().filter(|t| t.name() != store.hot().name()) {
            let removed = target.remove_temporaries()?;
            let referenced = store.catalog().referenced_keys(target.name())?;
            let mut orphans = 0;
            for object in target.list("data/")? {
                if !referenced.contains(object.key.as_str()) {
                    target.delete(&object.key)?;
                    orphans += 1;
                }
            }
            if removed + orphans > 0 {
                tracing::info!(target = target.name(), temporaries = removed, orphans, "swept unfinished copies");
            }
        }
        let interrupted = store.catalog().fail_interrupted_compactions(now_ns())?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "compaction jobs were interrupted; the next pass resumes them at their cursor");
        }
        Ok(Lifecycle {
            store,
            policies,
            targets,
            config,
            running: tokio::sync::Mutex::new(()),
            last_scheduled: Mutex::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            backoff: Mutex::new(HashMap::new()),
            compacting: Mutex::new(HashSet::new()),
            manifests: Mutex::new(HashMap::new()),
        })
    }

    /// The dataset's partitions and their facts, rebuilt only when the
    /// catalog says a partition row changed since the last run.
    async fn manifest(&self, dataset: &Arc<DatasetState>) -> Result<Arc<Manifest>, Failure> {
        let dataset_id = dataset.record.id;
        let cached = self.manifests.lock().unwrap_or_else(|p| p.into_inner()).get(&dataset_id).cloned();
        let catalog = self.store.catalog().clone();
        if let Some(cached) = cached {
            let seq = blocking(move || catalog.partitions_seq(dataset_id)).await??;
            if seq == cached.seq {
                return Ok(cached);
            }
        }
        let catalog = self.store.catalog().clone();
        let name = dataset.name.clone();
        let manifest = blocking(move || -> Result<Manifest, Failure> {
            let (seq, records) = catalog.partitions_at_seq(dataset_id)?;
            let facts: Vec<PartitionFacts> = records.iter().map(|r| partition_facts(&name, r)).collect();
            let facts_sha256 = facts_digest(&facts);
            Ok(Manifest { seq, records, facts: Arc::new(facts), facts_sha256 })
        })
        .await??;
        let manifest = Arc::new(manifest);
        self.manifests.lock().unwrap_or_else(|p| p.into_inner()).insert(dataset_id, manifest.clone());
        Ok(manifest)
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        self.store.catalog()
    }

    /// The storage targets and the target of each tier.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// How files arriving in `tier` are encoded: the tier's `[storage.tiers]`
    /// encoding (`None`: moves copy byte for byte). Archives are always
    /// re-encoded, so `archived` answers the archive defaults when unset.
    pub fn arrival_encoding(&self, tier: Tier) -> Option<Encoding> {
        match (tier, self.targets.encoding(tier)) {
            (Tier::Archived, None) => {
                Some(Encoding { zstd_level: ARCHIVE_ZSTD_LEVEL, row_group_rows_max: ARCHIVE_ROW_GROUP_ROWS })
            }
            (_, encoding) => encoding,
        }
    }

    fn rails(&self, dataset: &str) -> GuardRails {
        let lifecycle = &self.config.lifecycle;
        let min_retention_ms =
            self.config.datasets.get(dataset).and_then(|d| d.min_retention_ms).unwrap_or(lifecycle.min_retention_ms);
        GuardRails {
            min_retention_ns: i64::try_from(min_retention_ms).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000),
            max_deletes_per_run: lifecycle.max_deletes_per_run,
            max_delete_fraction: lifecycle.max_delete_fraction,
            require_archive_before_delete: lifecycle.require_archive_before_delete,
            allow_backward_moves: lifecycle.allow_backward_moves,
        }
    }

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
        let server_now = crate::time::now_ns();
        if !dry && now_ns > server_now {
            return Err(Failure::new(
                ErrorCode::BadRequest,
                format!(
                    "now {} is after the server's clock ({}); a run that executes is judged at the server's \
                     clock, and a future `now` is only for dry runs (\"dry\": true) and \
                     POST /v1/policies/{policy}/simulate",
                    crate::time::rfc3339(now_ns),
                    crate::time::rfc3339(server_now)
                ),
            ));
        }
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
        let datasets: Vec<Arc<DatasetState>> = match dataset {
            Some(name) => {
                let state = self
                    .store
                    .dataset(name)
                    .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no dataset {name}")))?;
                if !self.policies.binds(policy, name) {
                    return Err(Failure::new(
                        ErrorCode::BadRequest,
                        format!("policy {policy} is not bound to dataset {name}"),
                    ));
                }
                vec![state]
            }
            None => {
                self.store.datasets().into_iter().filter(|d| self.policies.binds(policy, d.name.as_str())).collect()
            }
        };
        let _one_at_a_time = self.running.lock().await;
        let mut reports = Vec::new();
        for dataset in datasets {
            reports.push(self.run_one(policy, kind, &dataset, now_ns, dry).await?);
        }
        Ok(reports)
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
        let started = std::time::Instant::now();
        let manifest = self.manifest(dataset).await?;
        // Judged at the server's clock unless nothing will execute.
        let guard_now = if dry { now } else { now_ns() };
        let (records, facts) = (&manifest.records, &manifest.facts);
        let dataset_info = dataset_facts(&dataset.record, &dataset.schema());
        let input_sha256 = input_digest(now, &dataset_info, &manifest.facts_sha256);
        let snapshot_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut report = RunReport {
            id: 0,
            policy: policy.to_string(),
            kind,
            component_sha256: None,
            dataset: dataset.name.to_string(),
            now_ns: now,
            guard_now_ns: guard_now,
            dry,
            started_at_ns,
            finished_at_ns: 0,
            decisions: 0,
            unchanged: 0,
            executed: 0,
            rejected: 0,
            failed: 0,
            deferred: 0,
            bytes_moved: 0,
            snapshot_ms,
            evaluation_ms: 0.0,
            execution_ms: 0.0,
            input_sha256,
            error: None,
            entries: Vec::new(),
        };

        let evaluated = {
            let (policies, name, facts) = (self.policies.clone(), policy.to_string(), Arc::clone(facts));
            blocking(move || -> Result<Evaluation, String> {
                Ok(match kind {
                    PolicyKind::Retention => Evaluation::of(
                        policies.evaluate_retention(&name, now, &dataset_info, &facts).map_err(|e| e.to_string())?,
                        |d| {
                            let action = match d.action {
                                RetentionAction::Keep => Action::Keep,
                                RetentionAction::Delete => Action::Delete,
                            };
                            (action, None)
                        },
                    ),
                    PolicyKind::Archival => Evaluation::of(
                        policies.evaluate_archival(&name, now, &dataset_info, &facts).map_err(|e| e.to_string())?,
                        |d| (Action::Archive, Some(d.clone())),
                    ),
                    _ => Evaluation::of(
                        policies.evaluate_tiering(&name, now, &dataset_info, &facts).map_err(|e| e.to_string())?,
                        |d| (Action::Move(d.target), None),
                    ),
                })
            })
            .await?
        };
        match evaluated {
            Err(error) => report.error = Some(error),
            Ok(Evaluation { proposals, mut archive_options, component_sha256: sha256, duration }) => {
                archive_options.resize(proposals.len(), None);
                report.component_sha256 = Some(sha256);
                report.evaluation_ms = duration.as_secs_f64() * 1000.0;
                report.decisions = proposals.len();
                let executing = std::time::Instant::now();
                // `facts` and `records` are in the same order.
                let located = guard::locate(facts, &proposals);
                let verdicts =
                    guard::judge_located(facts, &proposals, &located, &self.rails(dataset.name.as_str()), guard_now);
                let mut work = Vec::new();
                for (((proposal, verdict), options), index) in
                    proposals.into_iter().zip(verdicts).zip(archive_options).zip(located)
                {
                    let action = proposal.action;
                    let mut entry = RunEntry::new(proposal, &verdict);
                    match verdict {
                        // Keeps are counted, not listed: a run over 100,000
                        // partitions that changes nothing stays small.
                        Verdict::NoOp => {
                            report.unchanged += 1;
                            continue;
                        }
                        Verdict::Reject(_) => report.rejected += 1,
                        Verdict::Accept if dry => {}
                        Verdict::Accept if self.deferral(records[index.expect("accepted")].id).is_some() => {
                            let (failures, retry_at) =
                                self.deferral(records[index.expect("accepted")].id).expect("checked");
                            entry.outcome = "deferred";
                            entry.error = Some(format!(
                                "failed {failures} time(s); retried after {}",
                                crate::time::rfc3339(retry_at)
                            ));
                            report.deferred += 1;
                        }
                        Verdict::Accept => {
                            let record = records[index.expect("the guard accepts only known partitions")].clone();
                            work.push(Step { entry: report.entries.len(), record, action, archive: options });
                        }
                    }
                    report.entries.push(entry);
                }
                let outcomes = self.execute(dataset, &work).await;
                for (step, outcome) in work.iter().zip(outcomes) {
                    self.finish_step(step, outcome, &mut report);
                }
                report.execution_ms = executing.elapsed().as_secs_f64() * 1000.0;
            }
        }
        report.finished_at_ns = now_ns();
        let labels = format!("policy=\"{}\",kind=\"{}\"", report.policy, report.kind.as_str());
        self.count(format!("strata_lifecycle_runs_total{{{labels}}}"), 1);
        self.count(format!("strata_lifecycle_rejected_total{{{labels}}}"), report.rejected as u64);
        self.count(format!("strata_lifecycle_failed_total{{{labels}}}"), report.failed as u64);
        if report.error.is_some() {
            self.count(format!("strata_lifecycle_run_errors_total{{{labels}}}"), 1);
        }

        let catalog = self.store.catalog().clone();
        let saved = report.clone();
        report.id = blocking(move || -> Result<i64, Failure> {
            let run = RunRecord {
                policy: saved.policy.clone(),
                dataset: saved.dataset.clone(),
                started_at_ns: saved.started_at_ns,
                report: serde_json::to_value(&saved).unwrap_or_default(),
            };
            let events = |id: i64| {
                saved
                    .entries
                    .iter()
                    .map(|entry| {
                        let detail = json!({
                            "run": id,
                            "policy": saved.policy,
                            "component_sha256": saved.component_sha256,
                            "input_sha256": saved.input_sha256,
                            "now_ns": saved.now_ns,
                            "guard_now_ns": saved.guard_now_ns,
                            "action": entry.action,
                            "tier": entry.tier,
                            "reason": entry.reason,
                            "verdict": entry.verdict,
                            "why": entry.why,
                            "outcome": entry.outcome,
                            "error": entry.error,
                            "dry": saved.dry,
                        });
                        (entry.partition_id.clone(), detail)
                    })
                    .collect()
            };
            Ok(catalog.record_run(&run, events, saved.finished_at_ns)?)
        })
        .await??;
        Ok(report)
    }

    /// `(failures, no retry before)` while a partition waits out its backoff.
    fn deferral(&self, partition_id: i64) -> Option<(u32, i64)> {
        let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        backoff.get(&partition_id).copied().filter(|(_, retry_at)| *retry_at > now_ns())
    }

    /// Records a failed step: the next attempt waits `retry_base_ms`,
    /// doubling with each failure up to `retry_max_ms`.
    fn failed_step(&self, partition_id: i64) {
        let lifecycle = &self.config.lifecycle;
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let failures = backoff.get(&partition_id).map_or(0, |(n, _)| *n) + 1;
        let wait_ms = lifecycle.retry_base_ms.saturating_mul(1 << (failures - 1).min(20)).min(lifecycle.retry_max_ms);
        backoff.insert(partition_id, (failures, now_ns().saturating_add(ms_to_ns(wait_ms))));
    }

    fn count(&self, metric: String, by: u64) {
        *self.counters.lock().unwrap_or_else(|p| p.into_inner()).entry(metric).or_default() += by;
    }

    /// Prometheus text for `/metrics`: partitions and bytes per tier, the
    /// age of the oldest hot partition, and the lifecycle counters.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut text = String::new();
        if let Ok(counts) = self.store.catalog().tier_counts() {
            let _ = writeln!(text, "# HELP strata_partitions Partitions per tier.\n# TYPE strata_partitions gauge");
            for (tier, partitions, _) in &counts.tiers {
                let _ = writeln!(text, "strata_partitions{{tier=\"{tier}\"}} {partitions}");
            }
            let _ = writeln!(text, "# HELP strata_tier_bytes Bytes per tier.\n# TYPE strata_tier_bytes gauge");
            for (tier, _, bytes) in &counts.tiers {
                let _ = writeln!(text, "strata_tier_bytes{{tier=\"{tier}\"}} {bytes}");
            }
            if let Some(end) = counts.oldest_hot_period_end_ns {
                let age = (now_ns() - end).max(0) as f64 / 1e9;
                let _ = writeln!(
                    text,
                    "# HELP strata_oldest_hot_partition_age_seconds Since the end of the oldest hot partition's period.\n\
                     # TYPE strata_oldest_hot_partition_age_seconds gauge\nstrata_oldest_hot_partition_age_seconds {age:.0}"
                );
            }
        }
        self.compaction_metrics(&mut text);
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut described = std::collections::BTreeSet::new();
        for (metric, value) in counters.iter() {
            let name = metric.split('{').next().unwrap_or(metric);
            if described.insert(name.to_string()) {
                let _ = writeln!(text, "# TYPE {name} counter");
            }
            let _ = writeln!(text, "{metric} {value}");
        }
        text
    }

    /// Why a partition is where it is: its state, the policies bound to its
    /// dataset with the last decision of each, when each runs next, and the
    /// errors still pending. Blocking.
    pub fn explain(&self, dataset: &str, label: &str, key: &str) -> Result<serde_json::Value, Failure> {
        let state = self
            .store
            .dataset(dataset)
            .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no dataset {dataset}")))?;
        let id = crate::names::partition_label(&state.name, label, key);
        let record = self
            .store
            .catalog()
            .partitions(state.record.id)?
            .into_iter()
            .find(|p| p.period_label == label && p.key == key)
            .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no partition {id}")))?;
        let decisions = self.store.catalog().audit_events(&crate::catalog::AuditFilter {
            dataset: Some(dataset),
            partition: Some(&id),
            kind: Some(AuditKind::LifecycleDecision),
            since_ns: i64::MIN,
            limit: 200,
            newest_first: true,
        })?;
        let summaries = self.policies.list().0;
        let mut policies = Vec::new();
        let mut pending_errors = Vec::new();
        for summary in summaries.iter().filter(|s| self.policies.binds(&s.name, dataset)) {
            let Some(kind) = summary.kind else { continue };
            if kind == PolicyKind::Partitioner {
                continue;
            }
            let last = decisions.iter().find(|e| e.detail["policy"] == summary.name.as_str()).map(|e| {
                let detail = &e.detail;
                if detail["outcome"] == "failed" {
                    pending_errors.push(json!({ "policy": summary.name, "error": detail["error"], "at_ns": e.at_ns }));
                }
                json!({
                    "at_ns": e.at_ns,
                    "run": detail["run"],
                    "action": detail["action"],
                    "tier": detail["tier"],
                    "reason": detail["reason"],
                    "verdict": detail["verdict"],
                    "why": detail["why"],
                    "outcome": detail["outcome"],
                    "component_sha256": detail["component_sha256"],
                    "dry": detail["dry"],
                })
            });
            let schedule =
                summary.schedule.as_deref().and_then(|s| Schedule::parse(s).ok()).unwrap_or(DEFAULT_SCHEDULE);
            let next = self.config.lifecycle.scheduler.then(|| {
                let last_run = self
                    .last_scheduled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&(summary.name.clone(), dataset.to_string()))
                    .copied();
                last_run.and_then(|t| schedule.next_after(t)).map(crate::time::rfc3339)
            });
            policies.push(json!({
                "name": summary.name,
                "kind": kind.as_str(),
                "status": summary.status,
                "component_sha256": summary.component_sha256,
                "schedule": summary.schedule,
                "last_decision": last,
                "next_evaluation": next.flatten(),
            }));
        }
        let compaction = self
            .store
            .catalog()
            .compaction_checkpoint(record.id)?
            .map(|checkpoint| compaction::checkpoint_json(&state.name, &checkpoint));
        let now = now_ns();
        Ok(json!({
            "id": id,
            "tier": record.tier,
            "read_only": record.read_only,
            "open": record.period_start_ns <= now && now < record.period_end_ns,
            "period_start": crate::time::rfc3339(record.period_start_ns),
            "period_end": crate::time::rfc3339(record.period_end_ns),
            "rows": record.rows,
            "bytes": record.bytes,
            "files": record.file_count,
            "policies": policies,
            "pending_errors": pending_errors,
            "compaction": compaction,
        }))
    }

    /// Records what became of an accepted decision: in its run entry, the
    /// report's totals, the metrics and the partition's retry backoff.
    fn finish_step(&self, step: &Step, outcome: Result<StepDone, String>, report: &mut RunReport) {
        let entry = &mut report.entries[step.entry];
        let record = &step.record;
        match outcome {
            Ok(StepDone { bytes, elapsed }) => {
                match step.action {
                    Action::Move(to) => self.count(
                        format!(
                            "strata_lifecycle_transitions_total{{from=\"{}\",to=\"{}\"}}",
                            record.tier,
                            to.as_str()
                        ),
                        1,
                    ),
                    Action::Delete => self.count("strata_lifecycle_deletes_total".into(), 1),
                    Action::Archive => {
                        self.count("strata_lifecycle_archives_total".into(), 1);
                        self.count("strata_lifecycle_archive_bytes_total".into(), bytes);
                        self.count("strata_lifecycle_archive_duration_ms_total".into(), elapsed.as_millis() as u64);
                    }
                    Action::Keep => {}
                }
                self.count("strata_lifecycle_bytes_moved_total".into(), bytes);
                self.backoff.lock().unwrap_or_else(|p| p.into_inner()).remove(&record.id);
                entry.outcome = "executed";
                entry.bytes_moved = bytes;
                report.executed += 1;
                report.bytes_moved += bytes;
            }
            Err(error) => {
                tracing::warn!(partition = %entry.partition_id, %error, "lifecycle step failed");
                entry.outcome = "failed";
                entry.error = Some(error);
                self.failed_step(record.id);
                report.failed += 1;
            }
        }
    }

    /// Executes a run's accepted decisions; one outcome per step, in order.
    ///
    /// The partitions are sealed first, all in one catalog transaction, so
    /// no new rows arrive, and what they still buffer is flushed, so every
    /// row is in a committed file. Moves then copy and verify up to
    /// `lifecycle.move_concurrency` partitions at a time and commit up to
    /// `lifecycle.move_commit_batch` partitions per catalog transaction;
    /// archives and deletes go one partition at a time.
    async fn execute(&self, dataset: &Arc<DatasetState>, work: &[Step]) -> Vec<Result<StepDone, String>> {
        let mut outcomes: Vec<Option<Result<StepDone, String>>> = vec![None; work.len()];
        let unsealed: Vec<PartitionRecord> =
            work.iter().filter(|s| !s.record.read_only).map(|s| s.record.clone()).collect();
        if let Err(error) = self.store.seal(dataset, &unsealed).await {
            return work.iter().map(|_| Err(format!("sealing: {error}"))).collect();
        }
        if work.iter().any(|s| self.store.buffered(s.record.id).0 > 0)
            && let Err(error) = self.store.flush(true).await
        {
            tracing::warn!(%error, "flush before lifecycle steps failed");
        }
        let mut moves = Vec::new();
        for (i, step) in work.iter().enumerate() {
            let (rows, _) = self.store.buffered(step.record.id);
            if rows > 0 {
                outcomes[i] = Some(Err(format!("{rows} rows still buffered; retried on the next run")));
                continue;
            }
            match step.action {
                Action::Move(tier) => moves.push((i, tier)),
                _ => {
                    let started = std::time::Instant::now();
                    let done = self.execute_one(dataset, step).await;
                    outcomes[i] = Some(done.map(|bytes| StepDone { bytes, elapsed: started.elapsed() }));
                }
            }
        }
        let lifecycle = &self.config.lifecycle;
        for batch in moves.chunks(lifecycle.move_commit_batch) {
            let jobs: Vec<MoveJob> = batch
                .iter()
                .map(|(i, tier)| MoveJob {
                    partition_id: work[*i].record.id,
                    tier: *tier,
                    bytes: work[*i].record.bytes.max(0) as u64,
                })
                .collect();
            let (catalog, targets) = (self.store.catalog().clone(), self.targets.clone());
            let budget = CopyBudget::new(lifecycle.move_concurrency, lifecycle.move_bytes_in_flight_max);
            let done = blocking(move || move_partitions(&catalog, &targets, &jobs, &budget))
                .await
                .unwrap_or_else(|error| batch.iter().map(|_| Err(error.to_string())).collect());
            for ((i, _), outcome) in batch.iter().zip(done) {
                outcomes[*i] = Some(outcome);
            }
        }
        outcomes.into_iter().map(|o| o.expect("every step has an outcome")).collect()
    }

    /// Executes one sealed and flushed partition's delete or archive (moves
    /// go through `move_partitions`, in batches).
    async fn execute_one(&self, dataset: &Arc<DatasetState>, step: &Step) -> Result<u64, String> {
        let record = &step.record;
        match step.action {
            Action::Keep => Ok(0),
            Action::Delete => {
                let catalog = self.store.catalog().clone();
                let id = record.id;
                blocking(move || catalog.delete_partition(id, now_ns()).map_err(|e| e.to_string()))
                    .await
                    .map_err(|e| e.to_string())??;
                crate::failpoint::hit("lifecycle.delete.after_commit");
                Ok(0)
            }
            Action::Archive => {
                let decision = step.archive.as_ref().ok_or("an archive decision without options")?.clone();
                // "" is the archived tier's target; a name, any configured target.
                let destination = if decision.target.is_empty() {
                    self.targets.tier(Tier::Archived).clone()
                } else {
                    self.targets.named(&decision.target).cloned().ok_or_else(|| {
                        let names: Vec<&str> = self.targets.all().map(|t| t.name()).collect();
                        format!("unknown archive target {:?}; the storage targets are {names:?}", decision.target)
                    })?
                };
                let targets = self.targets.clone();
                let catalog = self.store.catalog().clone();
                let schema = dataset.schema();
                let (dataset_id, id) = (dataset.record.id, record.id);
                // The decision's options, else the archived tier's encoding, else the defaults.
                let defaults = self.arrival_encoding(Tier::Archived).expect("archives always have an encoding");
                let row_group_rows = decision.row_group_rows.map_or(defaults.row_group_rows_max, |r| r as usize);
                let zstd_level = decision.compression_level.map_or(defaults.zstd_level, i32::from);
                blocking(move || {
                    archive_partition(&ArchiveJob {
                        catalog: &catalog,
                        targets: &targets,
                        destination: &destination,
                        schema: &schema,
                        dataset_id,
                        partition_id: id,
                        row_group_rows,
                        zstd_level,
                        replace_source: decision.delete_source_after,
                    })
                })
                .await
                .map_err(|e| e.to_string())?
            }
            Action::Move(_) => unreachable!("`execute` batches moves through `move_partitions`"),
        }
    }

    /// Brings an archived partition back to `tier` (default cold): its
    /// archive file is copied there and verified like any move. The archive
    /// itself stays. The partition stays read-only.
    pub async fn restore(
        &self,
        dataset: &str,
        label: &str,
        key: &str,
        tier: Option<Tier>,
    ) -> Result<serde_json::Value, Failure> {
        let tier = tier.unwrap_or(Tier::Cold);
        if tier == Tier::Archived {
            return Err(Failure::new(ErrorCode::BadRequest, "restore to hot, warm or cold"));
        }
        let state = self
            .store
            .dataset(dataset)
            .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no dataset {dataset}")))?;
        let id = crate::names::partition_label(&state.name, label, key);
        let catalog = self.store.catalog().clone();
        let dataset_id = state.record.id;
        let record = blocking(move || catalog.partitions(dataset_id))
            .await??
            .into_iter()
            .find(|p| p.period_label == label && p.key == key)
            .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no partition {id}")))?;
        if record.tier != Tier::Archived {
            return Err(Failure::new(
                ErrorCode::NotArchived,
                format!("partition {id} is {}, not archived; there is nothing to restore", record.tier),
            ));
        }
        let _one_at_a_time = self.running.lock().await;
        let targets = self.targets.clone();
        let catalog = self.store.catalog().clone();
        let partition_id = record.id;
        let bytes = blocking(move || move_partition(&catalog, &targets, partition_id, tier))
            .await?
            .map_err(|e| Failure::new(ErrorCode::Internal, format!("restore of {id} failed: {e}")))?;
        let detail = json!({ "tier": tier.as_str(), "bytes_moved": bytes });
        let catalog = self.store.catalog().clone();
        let (name, pid) = (dataset.to_string(), id.clone());
        blocking(move || catalog.audit(AuditKind::PartitionRestored, Some(&name), Some(&pid), &detail, now_ns()))
            .await??;
        self.count(format!("strata_lifecycle_transitions_total{{from=\"archived\",to=\"{}\"}}", tier.as_str()), 1);
        Ok(json!({ "id": id, "tier": tier.as_str(), "bytes_moved": bytes }))
    }

    /// Creates the next period's partitions of every live dataset (one with
    /// a partition for the current period) once the current period ends
    /// within `lifecycle.precreate_lead_ms`. Blocking. Returns how many
    /// partitions it asked for (existing ones are left as they are).
    pub fn precreate(&self, now: i64) -> Result<usize, Failure> {
        let lead_ns = ms_to_ns(self.config.lifecycle.precreate_lead_ms);
        if lead_ns == 0 {
            return Ok(0);
        }
        let catalog = self.store.catalog();
        let mut created = 0;
        for dataset in self.store.datasets() {
            let current = dataset.record.period.bucket(now);
            if now.saturating_add(lead_ns) < current.end_ns {
                continue;
            }
            let next = dataset.record.period.bucket(current.end_ns);
            for key in catalog.period_keys(dataset.record.id, &current.label)? {
                catalog.partition(dataset.record.id, &next, &key, now)?;
                created += 1;
            }
        }
        Ok(created)
    }

    /// `GET /health/lifecycle`: healthy, degraded or unhealthy, with the
    /// problems found. Next-period partitions missing inside the lead window
    /// degrade; partitions older than `lifecycle.health_max_<tier>_age_ms`
    /// degrade, and past `health_unhealthy_multiplier` times that are
    /// unhealthy. Blocking.
    pub fn health(&self, now: i64) -> Result<serde_json::Value, Failure> {
        let lifecycle = &self.config.lifecycle;
        let catalog = self.store.catalog();
        let mut problems = Vec::new();
        let mut worst = 0u8;
        let lead_ns = ms_to_ns(lifecycle.precreate_lead_ms);
        for dataset in self.store.datasets() {
            let current = dataset.record.period.bucket(now);
            let keys = catalog.period_keys(dataset.record.id, &current.label)?;
            if lead_ns > 0 && !keys.is_empty() && now.saturating_add(lead_ns) >= current.end_ns {
                let next = dataset.record.period.bucket(current.end_ns);
                let next_keys = catalog.period_keys(dataset.record.id, &next.label)?;
                for key in keys.iter().filter(|k| !next_keys.contains(k)) {
                    worst = worst.max(1);
                    problems.push(json!({
                        "status": "degraded",
                        "dataset": dataset.name.as_str(),
                        "partition": crate::names::partition_label(&dataset.name, &next.label, key),
                        "problem": "the next period's partition does not exist yet",
                    }));
                }
            }
            let thresholds = [
                (Tier::Hot, lifecycle.health_max_hot_age_ms),
                (Tier::Warm, lifecycle.health_max_warm_age_ms),
                (Tier::Cold, lifecycle.health_max_cold_age_ms),
            ];
            for partition in catalog.partitions(dataset.record.id)? {
                let Some((_, Some(max_ms))) = thresholds.iter().find(|(t, _)| *t == partition.tier) else {
                    continue;
                };
                let age_ns = now.saturating_sub(partition.period_end_ns);
                let max_ns = ms_to_ns(*max_ms);
                if age_ns <= max_ns {
                    continue;
                }
                let unhealthy = age_ns as f64 > max_ns as f64 * lifecycle.health_unhealthy_multiplier;
                worst = worst.max(if unhealthy { 2 } else { 1 });
                problems.push(json!({
                    "status": if unhealthy { "unhealthy" } else { "degraded" },
                    "dataset": dataset.name.as_str(),
                    "partition": crate::names::partition_label(&dataset.name, &partition.period_label, &partition.key),
                    "problem": format!(
                        "{} for {:.1} days after its period ended; expected at most {:.1}",
                        partition.tier,
                        age_ns as f64 / 86_400e9,
                        max_ns as f64 / 86_400e9
                    ),
                }));
            }
        }
        let status = ["healthy", "degraded", "unhealthy"][usize::from(worst)];
        Ok(json!({ "status": status, "problems": problems }))
    }

    /// Runs due scheduled policies until `shutdown` fires.
    pub async fn run_scheduler(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = now_ns();
            let this = self.clone();
            match blocking(move || this.precreate(now)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) | Err(error) => tracing::warn!(%error, "pre-creating partitions failed"),
            }
            if !self.config.lifecycle.scheduler {
                continue;
            }
            for summary in self.policies.list().0 {
                if !matches!(summary.kind, Some(PolicyKind::Retention | PolicyKind::Tiering | PolicyKind::Archival))
                    || summary.active_seq.is_none()
                {
                    continue;
                }
                let schedule =
                    summary.schedule.as_deref().and_then(|s| Schedule::parse(s).ok()).unwrap_or(DEFAULT_SCHEDULE);
                for dataset in self.store.datasets() {
                    if !self.policies.binds(&summary.name, dataset.name.as_str()) {
                        continue;
                    }
                    let due = {
                        let mut last = self.last_scheduled.lock().unwrap_or_else(|p| p.into_inner());
                        let last = last.entry((summary.name.clone(), dataset.name.to_string())).or_insert(now);
                        // The first run is one schedule step after start-up
                        // (or after the dataset appeared), never at once.
                        if schedule.next_after(*last).is_some_and(|due| now >= due) {
                            *last = now;
                            true
                        } else {
                            false
                        }
                    };
                    if due {
                        match self.run_policy(&summary.name, Some(dataset.name.as_str()), now, false).await {
                            Ok(reports) => {
                                for r in reports {
                                    tracing::info!(policy = %r.policy, dataset = %r.dataset, executed = r.executed, rejected = r.rejected, failed = r.failed, "scheduled run");
                                }
                            }
                            Err(error) => tracing::warn!(policy = %summary.name, %error, "scheduled run failed"),
                        }
                    }
                }
            }
        }
    }

    /// Deletes tombstoned files past the grace period, every
    /// `lifecycle.sweep_interval_ms`, until `shutdown` fires.
    pub async fn run_sweeper(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.lifecycle.sweep_interval_ms.max(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let this = self.clone();
            match blocking(move || this.sweep(now_ns())).await {
                Ok(Ok(0)) => {}
                Ok(Ok(swept)) => tracing::info!(swept, "tombstoned files deleted"),
                Ok(Err(error)) => tracing::warn!(%error, "sweep failed"),
                Err(error) => tracing::warn!(%error, "sweep failed"),
            }
        }
    }

    /// Deletes tombstoned files whose grace period ended before `now`: the
    /// object first, then its catalog row, so a crash between the two leaves
    /// a row whose object is already gone (deleted again, harmlessly, by the
    /// next sweep). A file that cannot be deleted stays tombstoned and is
    /// tried again on the next sweep; the others go on. Blocking. Returns how
    /// many were deleted, or the first error if none could be.
    pub fn sweep(&self, now: i64) -> Result<usize, String> {
        let grace_ns =
            i64::try_from(self.config.lifecycle.grace_ms).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000);
        let catalog = self.store.catalog();
        let expired = catalog.expired_tombstones(now.saturating_sub(grace_ns)).map_err(|e| e.to_string())?;
        let mut swept = 0;
        let mut first_error = None;
        for file in expired {
            let Some(target) = self.targets.named(&file.storage_target) else { continue };
            let key = ObjectKey::parse(&file.object_key).map_err(|e| e.to_string())?;
            match target.delete(&key) {
                Ok(()) | Err(StorageError::NotFound(_)) => {}
                Err(error) => {
                    self.count("strata_lifecycle_sweep_failures_total".into(), 1);
                    tracing::warn!(target = target.name(), key = %key, %error, "tombstoned file not deleted; retried on the next sweep");
                    first_error.get_or_insert(format!("{} on {}: {error}", key, target.name()));
                    continue;
                }
            }
            crate::failpoint::hit("lifecycle.sweep.after_delete");
            catalog.forget_file(file.id).map_err(|e| e.to_string())?;
            swept += 1;
        }
        match first_error {
            Some(error) if swept == 0 => Err(error),
            _ => Ok(swept),
        }
    }
}

/// Moves a partition to `tier`: copies each live file to the tier's target
/// and verifies it ([`copy_partition`]), then commits the new locations and
/// tombstones the old copies in one catalog transaction. Blocking. Returns
/// the bytes written.
fn move_partition(catalog: &Catalog, targets: &Targets, partition_id: i64, tier: Tier) -> Result<u64, String> {
    let (copies, bytes_moved) = copy_partition(catalog, targets, partition_id, tier)?;
    catalog.commit_move(partition_id, &copies, targets.tier(tier).name(), tier, now_ns()).map_err(|e| e.to_string())?;
    crate::failpoint::hit("lifecycle.move.after_commit");
    Ok(bytes_moved)
}

/// Moves many partitions, each to its tier: copies and verifies up to
/// `concurrency` partitions at a time, then commits every verified move in
/// one catalog transaction (a partition whose commit conflicts fails alone).
/// Blocking. One outcome per job, in order.
fn move_partitions(
    catalog: &Catalog,
    targets: &Targets,
    jobs: &[MoveJob],
    budget: &CopyBudget,
) -> Vec<Result<StepDone, String>> {
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let copied: Vec<Mutex<Option<Result<(Vec<MovedFile>, u64), String>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..budget.workers.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    // A copy holds its source and the copy read back.
                    let held = budget.acquire(job.bytes.saturating_mul(2));
                    let result = copy_partition(catalog, targets, job.partition_id, job.tier);
                    budget.release(held);
                    *copied[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                }
            });
        }
    });
    let copied: Vec<Result<(Vec<MovedFile>, u64), String>> = copied
        .into_iter()
        .map(|slot| slot.into_inner().unwrap_or_else(|p| p.into_inner()).expect("every job ran"))
        .collect();
    let mut commits = Vec::new();
    for (job, result) in jobs.iter().zip(&copied) {
        if let Ok((copies, _)) = result {
            commits.push(MoveCommit {
                partition_id: job.partition_id,
                copies: copies.clone(),
                target: targets.tier(job.tier).name().to_string(),
                tier: job.tier,
            });
        }
    }
    let mut committed = match catalog.commit_moves(&commits, now_ns()) {
        Ok(outcomes) => outcomes.into_iter().map(|o| o.map_err(|e| e.to_string())).collect::<Vec<_>>().into_iter(),
        Err(error) => vec![Err(format!("committing the moves: {error}")); commits.len()].into_iter(),
    };
    crate::failpoint::hit("lifecycle.move.after_commit");
    let elapsed = started.elapsed();
    copied
        .into_iter()
        .map(|result| {
            let (_, bytes) = result?;
            committed.next().expect("one commit outcome per copy")?;
            Ok(StepDone { bytes, elapsed })
        })
        .collect()
}

/// One partition to move, with its size as the catalog knows it.
struct MoveJob {
    partition_id: i64,
    tier: Tier,
    bytes: u64,
}

/// How many copies run at once, and how many bytes they may hold in memory
/// together. A copy larger than the whole budget runs alone.
struct CopyBudget {
    workers: usize,
    total: u64,
    free: Mutex<u64>,
    freed: std::sync::Condvar,
}

impl CopyBudget {
    fn new(workers: usize, bytes: u64) -> CopyBudget {
        CopyBudget { workers, total: bytes, free: Mutex::new(bytes), freed: std::sync::Condvar::new() }
    }

    /// Waits until `bytes` (at most the whole budget) are free and takes
    /// them; returns what was taken.
    fn acquire(&self, bytes: u64) -> u64 {
        let want = bytes.min(self.total);
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free < want {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= want;
        want
    }

    fn release(&self, bytes: u64) {
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) += bytes;
        self.freed.notify_all();
    }
}

/// Copies each live file of a partition to `tier`'s target — byte for
/// byte, or re-encoded under a new key when the tier sets an encoding — and
/// verifies each copy as read back (checksum, footer, rows). Without an
/// encoding, files already on the target stay as they are; with one, every
/// file is re-encoded. Nothing is committed. Blocking. Returns the copies
/// and the bytes written.
fn copy_partition(
    catalog: &Catalog,
    targets: &Targets,
    partition_id: i64,
    tier: Tier,
) -> Result<(Vec<MovedFile>, u64), String> {
    let destination = targets.tier(tier);
    let encoding = targets.encoding(tier);
    let files = catalog.files(partition_id).map_err(|e| e.to_string())?;
    let mut copies = Vec::new();
    let mut bytes_moved = 0u64;
    for file in files.iter().filter(|f| encoding.is_some() || f.storage_target != destination.name()) {
        let source = targets
            .named(&file.storage_target)
            .ok_or_else(|| format!("file {} is on unknown target {}", file.id, file.storage_target))?;
        let key = ObjectKey::parse(&file.object_key).map_err(|e| e.to_string())?;
        let bytes = source.get(&key).map_err(|e| e.to_string())?;
        crate::parquet_file::verify(&bytes, file.rows, file.checksum_crc32c)
            .map_err(|e| format!("source {key} on {}: {e}", source.name()))?;
        let (copy_key, copy, checksum_crc32c) = match encoding {
            None => (key, bytes, file.checksum_crc32c),
            Some(encoding) => {
                let encoded = crate::parquet_file::reencode(&bytes, file.rows, encoding)
                    .map_err(|e| format!("re-encoding {key} for {}: {e}", tier.as_str()))?;
                (key.new_version(), encoded.bytes, encoded.checksum_crc32c)
            }
        };
        let created = match destination.put(&copy_key, &copy) {
            Ok(()) => true,
            // A byte copy from an attempt that crashed before its commit is
            // kept only if it verifies below.
            Err(StorageError::AlreadyExists(_)) => false,
            Err(error) => return Err(format!("copying {copy_key} to {}: {error}", destination.name())),
        };
        crate::failpoint::hit("lifecycle.move.after_copy");
        let verified = destination.get(&copy_key).map_err(|e| e.to_string()).and_then(|stored| {
            crate::parquet_file::verify(&stored, file.rows, checksum_crc32c)
                .map(|()| stored.len())
                .map_err(|e| e.to_string())
        });
        let stored_bytes = match verified {
            Ok(stored_bytes) => stored_bytes,
            Err(error) => {
                // Only a copy this attempt created is certainly unreferenced;
                // anything else is left to the start-up orphan sweep.
                if created {
                    let _ = destination.delete(&copy_key);
                }
                return Err(format!("copy of {copy_key} on {} does not verify: {error}", destination.name()));
            }
        };
        bytes_moved += stored_bytes as u64;
        copies.push(MovedFile {
            id: file.id,
            object_key: copy_key.to_string(),
            bytes: stored_bytes as i64,
            checksum_crc32c,
        });
    }
    Ok((copies, bytes_moved))
}

fn hash_text(hasher: &mut Sha256, text: &str) {
    hasher.update((text.len() as u64).to_le_bytes());
    hasher.update(text.as_bytes());
}

/// sha256 of what a policy was asked: `now`, the dataset and the digest of
/// every partition's facts ([`facts_digest`]), each field fed to the hash in
/// a fixed order (texts length-prefixed), so equal inputs give equal digests.
fn input_digest(now: i64, dataset: &DatasetFacts, facts_sha256: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(now.to_le_bytes());
    for part in [&dataset.name, &dataset.period, &dataset.time_column] {
        hash_text(&mut hasher, part);
    }
    for (name, kind) in &dataset.columns {
        hash_text(&mut hasher, name);
        hash_text(&mut hasher, kind.as_str());
    }
    hasher.update(facts_sha256);
    hex::encode(hasher.finalize())
}

/// sha256 of the partitions' facts, field by field.
fn facts_digest(facts: &[PartitionFacts]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((facts.len() as u64).to_le_bytes());
    for fact in facts {
        // The id names the dataset, period and key.
        hash_text(&mut hasher, &fact.id);
        let mut fixed = [0u8; 8 * 9 + 4 + 4];
        for (i, value) in [
            fact.period_start_ns,
            fact.period_end_ns,
            fact.rows as i64,
            fact.bytes as i64,
            fact.min_time_ns.unwrap_or(i64::MIN),
            fact.max_time_ns.unwrap_or(i64::MIN),
            fact.created_at_ns,
            fact.last_written_at_ns,
            i64::from(fact.min_time_ns.is_some()) | i64::from(fact.max_time_ns.is_some()) << 1,
        ]
        .into_iter()
        .enumerate()
        {
            fixed[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        fixed[72..76].copy_from_slice(&fact.file_count.to_le_bytes());
        fixed[76] = fact.tier as u8;
        fixed[77] = u8::from(fact.read_only);
        fixed[78] = u8::from(fact.archived);
        hasher.update(fixed);
    }
    hasher.finalize().into()
}

/// Zstandard level of archives when the decision names none.
const ARCHIVE_ZSTD_LEVEL: i32 = 9;
/// Rows per row group of archives when the decision names none.
const ARCHIVE_ROW_GROUP_ROWS: usize = 1_048_576;

fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000)
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
decision!(crate::policy::facts::RetentionDecision, crate::policy::facts::TierDecision, ArchiveDecision);

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

/// What archiving one partition needs.
struct ArchiveJob<'a> {
    catalog: &'a Catalog,
    targets: &'a Targets,
    destination: &'a Arc<dyn StorageTarget>,
    schema: &'a crate::schema::DatasetSchema,
    dataset_id: i64,
    partition_id: i64,
    row_group_rows: usize,
    zstd_level: i32,
    replace_source: bool,
}

/// Re-encodes a partition's files into one Parquet file on the archive
/// target, writes a manifest next to it, verifies both by reading them back,
/// then commits. Blocking. Returns the bytes written.
fn archive_partition(job: &ArchiveJob<'_>) -> Result<u64, String> {
    let files = job.catalog.files(job.partition_id).map_err(|e| e.to_string())?;
    if files.is_empty() {
        return Err("the partition has no files to archive".into());
    }
    let mut batches = Vec::new();
    let mut sources = Vec::new();
    for file in &files {
        let source = job
            .targets
            .named(&file.storage_target)
            .ok_or_else(|| format!("file {} is on unknown target {}", file.id, file.storage_target))?;
        let key = ObjectKey::parse(&file.object_key).map_err(|e| e.to_string())?;
        let bytes = source.get(&key).map_err(|e| e.to_string())?;
        crate::parquet_file::verify(&bytes, file.rows, file.checksum_crc32c)
            .map_err(|e| format!("source {key} on {}: {e}", source.name()))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .and_then(|b| b.build())
            .map_err(|e| format!("reading {key}: {e}"))?;
        for batch in reader {
            batches.push(batch.map_err(|e| format!("reading {key}: {e}"))?);
        }
        sources.push(json!({
            "storage_target": file.storage_target,
            "object_key": file.object_key,
            "rows": file.rows,
            "bytes": file.bytes,
            "checksum_crc32c": format!("{:08x}", file.checksum_crc32c),
        }));
    }
    let expected_rows: i64 = files.iter().map(|f| f.rows).sum();
    let encoded = crate::parquet_file::encode(&batches, job.schema, job.row_group_rows, job.zstd_level)
        .map_err(|e| format!("re-encoding: {e}"))?;
    if encoded.rows != expected_rows {
        return Err(format!("re-encoded {} rows, the files hold {expected_rows}", encoded.rows));
    }
    let name = format!("archive-{:016x}", rand::random::<u64>());
    let key = ObjectKey::data_file(job.dataset_id, job.partition_id, &name);
    let manifest_key = ObjectKey::parse(&format!("data/{}/{}/{name}.manifest.json", job.dataset_id, job.partition_id))
        .map_err(|e| e.to_string())?;
    let manifest = json!({
        "format": "strata-archive-1",
        "file": {
            "object_key": key.as_str(),
            "rows": encoded.rows,
            "bytes": encoded.bytes.len(),
            "checksum_crc32c": format!("{:08x}", encoded.checksum_crc32c),
            "min_time_ns": encoded.min_time_ns,
            "max_time_ns": encoded.max_time_ns,
            "zstd_level": job.zstd_level,
            "row_group_rows": job.row_group_rows,
        },
        "sources": sources,
    })
    .to_string();
    let written = (|| -> Result<(), String> {
        job.destination.put(&key, &encoded.bytes).map_err(|e| format!("writing {key}: {e}"))?;
        job.destination.put(&manifest_key, manifest.as_bytes()).map_err(|e| format!("writing {manifest_key}: {e}"))?;
        crate::failpoint::hit("lifecycle.archive.after_write");
        let stored = job.destination.get(&key).map_err(|e| e.to_string())?;
        crate::parquet_file::verify(&stored, encoded.rows, encoded.checksum_crc32c)
            .map_err(|e| format!("archive {key} on {} does not verify: {e}", job.destination.name()))?;
        if job.destination.get(&manifest_key).map_err(|e| e.to_string())? != manifest.as_bytes() {
            return Err(format!("manifest {manifest_key} on {} does not read back", job.destination.name()));
        }
        Ok(())
    })();
    if let Err(error) = written {
        // Both names are fresh and uncommitted, so nothing else refers to them.
        let _ = job.destination.delete(&key);
        let _ = job.destination.delete(&manifest_key);
        return Err(error);
    }
    let archive = NewArchive {
        file: NewFile::encoded(job.destination.name(), key.to_string(), &encoded),
        manifest_key: manifest_key.to_string(),
    };
    job.catalog.commit_archive(job.partition_id, &archive, job.replace_source, now_ns()).map_err(|e| e.to_string())?;
    crate::failpoint::hit("lifecycle.archive.after_commit");
    Ok(encoded.bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnKind;

    #[test]
    fn the_copy_budget_bounds_bytes_in_flight_and_lets_a_large_copy_run_alone() {
        let budget = Arc::new(CopyBudget::new(4, 100));
        assert_eq!(budget.acquire(250), 100, "a copy larger than the budget takes all of it");
        let (sender, receiver) = std::sync::mpsc::channel();
        let waiting = {
            let budget = budget.clone();
            std::thread::spawn(move || sender.send(budget.acquire(10)).unwrap())
        };
        assert!(receiver.recv_timeout(Duration::from_millis(100)).is_err(), "nothing is free until the release");
        budget.release(100);
        assert_eq!(receiver.recv_timeout(Duration::from_secs(10)).unwrap(), 10);
        waiting.join().unwrap();
        assert_eq!(budget.acquire(90), 90, "the rest is free");
    }

    #[test]
    fn the_input_digest_changes_with_every_field_and_only_then() {
        let dataset = DatasetFacts {
            name: "cpu".into(),
            period: "day".into(),
            time_column: "time".into(),
            columns: vec![("time".into(), ColumnKind::Time), ("v".into(), ColumnKind::Float)],
        };
        let facts: Vec<PartitionFacts> = (0..3).map(|day| super::guard::tests::partition(day, Tier::Hot)).collect();
        let digest = input_digest(5, &dataset, &facts_digest(&facts));
        assert_eq!(digest, input_digest(5, &dataset, &facts_digest(&facts.clone())), "equal inputs, equal digests");
        assert_ne!(digest, input_digest(6, &dataset, &facts_digest(&facts)), "now");
        let changes: [fn(&mut PartitionFacts); 9] = [
            |f| f.tier = Tier::Warm,
            |f| f.read_only = true,
            |f| f.rows += 1,
            |f| f.bytes += 1,
            |f| f.min_time_ns = None,
            |f| f.max_time_ns = Some(0),
            |f| f.file_count += 1,
            |f| f.archived = true,
            |f| f.id.push('x'),
        ];
        for change in changes {
            let mut changed = facts.clone();
            change(&mut changed[1]);
            assert_ne!(digest, input_digest(5, &dataset, &facts_digest(&changed)));
        }
        let mut other = dataset.clone();
        other.columns.push(("w".into(), ColumnKind::Integer));
        assert_ne!(digest, input_digest(5, &other, &facts_digest(&facts)), "the schema");
        assert_ne!(digest, input_digest(5, &dataset, &facts_digest(&facts[..2])), "a partition fewer");
    }
}
