//! What the lifecycle tells an operator: why a partition is where it is
//! (`GET /v1/datasets/{ds}/partitions/{label}[/{key}]/explain`), whether
//! the lifecycle keeps up (`GET /health/lifecycle`), and its `/metrics`.
//!
//! Each reads what it needs from the catalog in one call, then builds its
//! answer from that snapshot without further I/O.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::guard::{Action, Proposal};
use super::run::{RunReport, action_label};
use super::{Lifecycle, compaction, ms_to_ns, no_dataset, no_partition};
use crate::catalog::{AuditEvent, AuditFilter, AuditKind, CatalogError, PartitionRecord};
use crate::error::Failure;
use crate::names::{DatasetName, partition_label};
use crate::period::Bucket;
use crate::policy::definition::{DEFAULT_SCHEDULE, Schedule};
use crate::sandbox::PolicyKind;
use crate::sync::Recover as _;
use crate::tier::Tier;
use crate::time::{now_ns, rfc3339};

/// What `/health/lifecycle` reads about one dataset.
struct DatasetHealth {
    name: DatasetName,
    /// Keys of the current period's partitions.
    keys: Vec<String>,
    /// The next period and its partitions' keys, once the current period
    /// ends within the pre-creation lead.
    next: Option<(Bucket, Vec<String>)>,
    partitions: Vec<PartitionRecord>,
}

/// The decisions of a policy's last run over a dataset that changed
/// nothing (keeps, moves to where a partition already is), which the run
/// counts but does not list or audit. Held in memory for explain: one per
/// (policy, dataset), replaced by the next run, with each reason stored
/// once and a few bytes per partition.
#[derive(Debug)]
pub(super) struct Unchanged {
    run: i64,
    at_ns: i64,
    component_sha256: Option<String>,
    dry: bool,
    reasons: Vec<String>,
    /// (partition row id, action, index into `reasons`).
    decisions: Vec<(i64, Action, u32)>,
}

impl Lifecycle {
    /// Keeps the unchanged decisions (by partition row id) of the run
    /// `report` for explain. A run that decided nothing changes nothing.
    pub(super) fn remember_unchanged(&self, dataset_id: i64, report: &RunReport, unchanged: Vec<(i64, Proposal)>) {
        if report.error.is_some() {
            return;
        }
        let mut reasons = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let decisions = unchanged
            .into_iter()
            .map(|(partition, proposal)| {
                let reason = *index.entry(proposal.reason).or_insert_with_key(|reason| {
                    reasons.push(reason.clone());
                    (reasons.len() - 1) as u32
                });
                (partition, proposal.action, reason)
            })
            .collect();
        let remembered = Unchanged {
            run: report.id,
            at_ns: report.finished_at_ns,
            component_sha256: report.component_sha256.clone(),
            dry: report.dry,
            reasons,
            decisions,
        };
        self.unchanged.lock_or_recover().insert((report.policy.clone(), dataset_id), Arc::new(remembered));
    }

    /// The unchanged decision of `policy`'s last run for partition row
    /// `partition`, shaped like [`last_decision`], when that run is newer
    /// than `audited_run`.
    fn unchanged_decision(
        &self,
        policy: &str,
        dataset_id: i64,
        partition: i64,
        audited_run: Option<i64>,
    ) -> Option<Json> {
        let remembered = self.unchanged.lock_or_recover().get(&(policy.to_string(), dataset_id)).cloned()?;
        if audited_run.is_some_and(|run| run >= remembered.run) {
            return None;
        }
        let (_, action, reason) = remembered.decisions.iter().find(|(id, _, _)| *id == partition)?;
        let (action, tier) = action_label(*action);
        Some(json!({
            "at_ns": remembered.at_ns,
            "run": remembered.run,
            "action": action,
            "tier": tier,
            "reason": remembered.reasons[*reason as usize],
            "verdict": "noop",
            "why": null,
            "outcome": "noop",
            "component_sha256": remembered.component_sha256,
            "dry": remembered.dry,
        }))
    }

    /// Why a partition is where it is: its state, the policies bound to its
    /// dataset with the last decision of each, when each runs next, and the
    /// errors still pending.
    pub async fn explain(&self, dataset: &str, label: &str, key: &str) -> Result<Json, Failure> {
        let state = self.store.dataset(dataset).ok_or_else(|| no_dataset(dataset))?;
        let id = partition_label(&state.name, label, key);
        let (dataset_id, name, label, key, pid) =
            (state.record.id, dataset.to_string(), label.to_string(), key.to_string(), id.clone());
        let (record, decisions, checkpoint) = self
            .catalog()
            .call(move |c| -> Result<_, Failure> {
                let record = c
                    .partitions(dataset_id)?
                    .into_iter()
                    .find(|p| p.period_label == label && p.key == key)
                    .ok_or_else(|| no_partition(&pid))?;
                let decisions = c.audit_events(&AuditFilter {
                    dataset: Some(&name),
                    partition: Some(&pid),
                    kind: Some(AuditKind::LifecycleDecision),
                    since_ns: i64::MIN,
                    limit: 200,
                    newest_first: true,
                })?;
                let checkpoint = c.compaction_checkpoint(record.id)?;
                Ok((record, decisions, checkpoint))
            })
            .await?;
        let (policies, pending_errors) = self.policy_views(dataset, (dataset_id, record.id), &decisions);
        let compaction = checkpoint.map(|checkpoint| compaction::checkpoint_json(&state.name, &checkpoint));
        let now = now_ns();
        Ok(json!({
            "id": id,
            "tier": record.tier,
            "read_only": record.read_only,
            "open": record.period_start_ns <= now && now < record.period_end_ns,
            "period_start": rfc3339(record.period_start_ns),
            "period_end": rfc3339(record.period_end_ns),
            "rows": record.rows,
            "bytes": record.bytes,
            "files": record.file_count,
            "policies": policies,
            "pending_errors": pending_errors,
            "compaction": compaction,
        }))
    }

    /// Each lifecycle policy bound to `dataset` with its last decision
    /// (from `decisions`, newest first) and next scheduled run, and the
    /// last decisions that failed.
    fn policy_views(
        &self,
        dataset: &str,
        (dataset_id, partition): (i64, i64),
        decisions: &[AuditEvent],
    ) -> (Vec<Json>, Vec<Json>) {
        let mut policies = Vec::new();
        let mut pending_errors = Vec::new();
        for summary in self.policies.list().0.iter().filter(|s| self.policies.binds(&s.name, dataset)) {
            let Some(kind) = summary.kind else { continue };
            if kind == PolicyKind::Partitioner {
                continue;
            }
            let audited = decisions.iter().find(|e| e.detail["policy"] == summary.name.as_str());
            let audited_run = audited.and_then(|e| e.detail["run"].as_i64());
            let last = self.unchanged_decision(&summary.name, dataset_id, partition, audited_run).or_else(|| {
                audited.map(|e| {
                    let detail = &e.detail;
                    if detail["outcome"] == "failed" {
                        pending_errors
                            .push(json!({ "policy": summary.name, "error": detail["error"], "at_ns": e.at_ns }));
                    }
                    last_decision(e)
                })
            });
            let schedule =
                summary.schedule.as_deref().and_then(|s| Schedule::parse(s).ok()).unwrap_or(DEFAULT_SCHEDULE);
            let next = self
                .config
                .lifecycle
                .scheduler
                .then(|| self.next_scheduled(&summary.name, dataset, &schedule).map(rfc3339));
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
        (policies, pending_errors)
    }

    /// `GET /health/lifecycle`: healthy, degraded or unhealthy, with the
    /// problems found. Next-period partitions missing inside the lead window
    /// degrade; partitions older than `lifecycle.health_max_<tier>_age_ms`
    /// degrade, and past `health_unhealthy_multiplier` times that are
    /// unhealthy.
    pub async fn health(&self, now: i64) -> Result<Json, Failure> {
        let lead_ns = ms_to_ns(self.config.lifecycle.precreate_lead_ms);
        let datasets: Vec<_> = self
            .store
            .datasets()
            .into_iter()
            .map(|d| {
                let current = d.periods().bucket(now);
                let next = d.periods().bucket(current.end_ns);
                let next_is_due = lead_ns > 0 && now.saturating_add(lead_ns) >= current.end_ns;
                (d.name.clone(), d.record.id, current.label, next_is_due.then_some(next))
            })
            .collect();
        let observed = self
            .catalog()
            .call(move |c| {
                let mut observed = Vec::with_capacity(datasets.len());
                for (name, dataset_id, current, next) in datasets {
                    let keys = c.period_keys(dataset_id, &current)?;
                    let next = match next {
                        Some(next) if !keys.is_empty() => {
                            let next_keys = c.period_keys(dataset_id, &next.label)?;
                            Some((next, next_keys))
                        }
                        _ => None,
                    };
                    let partitions = c.partitions(dataset_id)?;
                    observed.push(DatasetHealth { name, keys, next, partitions });
                }
                Ok::<_, CatalogError>(observed)
            })
            .await?;
        let mut problems = Vec::new();
        let mut worst = 0u8;
        for dataset in &observed {
            self.missing_next_partitions(dataset, &mut problems, &mut worst);
            self.stale_partitions(dataset, now, &mut problems, &mut worst);
        }
        self.unreachable_targets(&mut problems, &mut worst);
        self.rolled_back_policies(&mut problems, &mut worst);
        let status = ["healthy", "degraded", "unhealthy"][usize::from(worst)];
        Ok(json!({ "status": status, "problems": problems }))
    }

    /// Next-period partitions that should exist by now and do not.
    fn missing_next_partitions(&self, dataset: &DatasetHealth, problems: &mut Vec<Json>, worst: &mut u8) {
        let Some((next, next_keys)) = &dataset.next else { return };
        for key in dataset.keys.iter().filter(|k| !next_keys.contains(k)) {
            *worst = (*worst).max(1);
            problems.push(json!({
                "status": "degraded",
                "dataset": dataset.name.as_str(),
                "partition": partition_label(&dataset.name, &next.label, key),
                "problem": "the next period's partition does not exist yet",
            }));
        }
    }

    /// Remote storage targets whose last probe failed: moves into them and
    /// queries of their files fail until they answer again.
    fn unreachable_targets(&self, problems: &mut Vec<Json>, worst: &mut u8) {
        for (target, state) in self.targets.health().all().into_iter().filter(|(_, s)| !s.reachable) {
            *worst = (*worst).max(1);
            problems.push(json!({
                "status": "degraded",
                "storage_target": target,
                "problem": format!("storage target {target} is unreachable: {}", state.reason.unwrap_or_default()),
                "since": crate::time::rfc3339(state.since_ns),
            }));
        }
    }

    /// Policies serving an older version because the new one's runs kept
    /// failing: degraded until a new version of the file activates.
    fn rolled_back_policies(&self, problems: &mut Vec<Json>, worst: &mut u8) {
        for rollback in self.policies.auto_rollbacks() {
            *worst = (*worst).max(1);
            problems.push(json!({
                "status": "degraded",
                "policy": rollback.policy,
                "problem": format!(
                    "policy {} was rolled back automatically from version {} to {} after {} failed run(s) in a row: {}",
                    rollback.policy, rollback.from_seq, rollback.to_seq, rollback.failed_runs, rollback.error
                ),
                "since": rollback.at,
                "auto_rollback": rollback,
            }));
        }
    }

    /// Partitions that stayed in their tier longer than its health limit.
    fn stale_partitions(&self, dataset: &DatasetHealth, now: i64, problems: &mut Vec<Json>, worst: &mut u8) {
        let lifecycle = &self.config.lifecycle;
        let thresholds = [
            (Tier::Hot, lifecycle.health_max_hot_age_ms),
            (Tier::Warm, lifecycle.health_max_warm_age_ms),
            (Tier::Cold, lifecycle.health_max_cold_age_ms),
        ];
        for partition in &dataset.partitions {
            let Some((_, Some(max_ms))) = thresholds.iter().find(|(t, _)| *t == partition.tier) else {
                continue;
            };
            let age_ns = now.saturating_sub(partition.period_end_ns);
            let max_ns = ms_to_ns(*max_ms);
            if age_ns <= max_ns {
                continue;
            }
            let unhealthy = age_ns as f64 > max_ns as f64 * lifecycle.health_unhealthy_multiplier;
            *worst = (*worst).max(if unhealthy { 2 } else { 1 });
            problems.push(json!({
                "status": if unhealthy { "unhealthy" } else { "degraded" },
                "dataset": dataset.name.as_str(),
                "partition": partition_label(&dataset.name, &partition.period_label, &partition.key),
                "problem": format!(
                    "{} for {:.1} days after its period ended; expected at most {:.1}",
                    partition.tier,
                    age_ns as f64 / 86_400e9,
                    max_ns as f64 / 86_400e9
                ),
            }));
        }
    }

    /// Prometheus text for `/metrics`: partitions and bytes per tier, the
    /// age of the oldest hot partition, compaction jobs per status, and the
    /// lifecycle counters. What the catalog cannot answer is left out.
    pub async fn metrics(&self) -> String {
        let read =
            self.catalog().call(|c| Ok::<_, CatalogError>((c.tier_counts(), c.compaction_status_counts()))).await;
        let (tiers, compaction_jobs) = read.map_or((None, None), |(tiers, jobs)| (tiers.ok(), jobs.ok()));
        let mut text = String::new();
        if let Some(counts) = tiers {
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
        if let Some(counts) = compaction_jobs {
            compaction::compaction_metrics(&mut text, &counts);
        }
        let probed = self.targets.health().all();
        if !probed.is_empty() {
            let _ = writeln!(
                text,
                "# HELP strata_storage_target_up Whether a remote storage target answered its last probe.\n\
                 # TYPE strata_storage_target_up gauge"
            );
            for (target, state) in probed {
                let _ = writeln!(text, "strata_storage_target_up{{target=\"{target}\"}} {}", u8::from(state.reachable));
            }
        }
        let counters = self.counters.lock_or_recover();
        write_counters(&mut text, counters.iter().map(|(metric, value)| (metric.as_str(), *value)));
        text
    }
}

/// The lifecycle's counters: name, help, whether its samples carry labels,
/// and what its stored integer is divided by for export (durations are
/// counted in microseconds and exported in seconds). Each is described from
/// the start, and one without labels is exported at 0 before its first event.
const COUNTERS: &[(&str, &str, bool, u64)] = &[
    ("strata_lifecycle_transitions_total", "Partitions moved between tiers.", true, 1),
    ("strata_lifecycle_deletes_total", "Partitions deleted by policy.", false, 1),
    ("strata_lifecycle_bytes_moved_total", "Bytes moved between tiers.", false, 1),
    ("strata_lifecycle_sweep_failures_total", "Files of deleted partitions the sweeper failed to remove.", false, 1),
    ("strata_lifecycle_archives_total", "Partitions archived.", false, 1),
    ("strata_lifecycle_archive_bytes_total", "Bytes written to archives.", false, 1),
    ("strata_lifecycle_archive_duration_seconds_total", "Time spent archiving.", false, 1_000_000),
    ("strata_lifecycle_runs_total", "Policy runs per policy and dataset.", true, 1),
    ("strata_lifecycle_rejected_total", "Decisions rejected by the guard rails.", true, 1),
    ("strata_lifecycle_failed_total", "Decisions that failed to execute.", true, 1),
    ("strata_lifecycle_run_errors_total", "Policy runs that ended in an error.", true, 1),
    ("strata_policy_auto_rollbacks_total", "Policy versions rolled back automatically after failed runs.", true, 1),
    ("strata_compactions_total", "Compaction chunks merged (one file written each).", false, 1),
    ("strata_compaction_files_merged_total", "Files merged by compaction.", false, 1),
    ("strata_compaction_bytes_read_total", "Bytes read by compaction.", false, 1),
    ("strata_compaction_bytes_written_total", "Bytes written by compaction.", false, 1),
    ("strata_compaction_failures_total", "Compaction chunks that failed.", false, 1),
    ("strata_compaction_jobs_completed_total", "Compaction jobs completed.", false, 1),
];

/// Prometheus text for the counters `samples` (`name{labels}`, value): the
/// families of [`COUNTERS`] first, then any other, each with HELP and TYPE.
fn write_counters<'a>(text: &mut String, samples: impl Iterator<Item = (&'a str, u64)>) {
    let mut by_family: std::collections::BTreeMap<&str, Vec<(&str, u64)>> = std::collections::BTreeMap::new();
    for (metric, value) in samples {
        by_family.entry(metric.split('{').next().unwrap_or(metric)).or_default().push((metric, value));
    }
    for (name, help, labelled, divisor) in COUNTERS {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter");
        match by_family.remove(name) {
            Some(samples) if *divisor > 1 => samples.iter().for_each(|(metric, value)| {
                let _ = writeln!(text, "{metric} {}", *value as f64 / *divisor as f64);
            }),
            Some(samples) => samples.iter().for_each(|(metric, value)| {
                let _ = writeln!(text, "{metric} {value}");
            }),
            None if !labelled => {
                let _ = writeln!(text, "{name} 0");
            }
            None => {}
        }
    }
    for (name, samples) in by_family {
        let _ = writeln!(text, "# HELP {name} A lifecycle counter.\n# TYPE {name} counter");
        for (metric, value) in samples {
            let _ = writeln!(text, "{metric} {value}");
        }
    }
}

/// A `lifecycle_decision` audit event as `explain` shows it.
fn last_decision(event: &AuditEvent) -> Json {
    let detail = &event.detail;
    json!({
        "at_ns": event.at_ns,
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
}
