//! Manual partition operations: an operator moves, archives or deletes one
//! partition without writing a policy.
//!
//! **Invariant:** a manual operation is a one-decision run. It is judged by
//! the same guard rails as a policy's decisions ([`super::guard`], at the
//! server's clock, against the whole dataset for the delete budget), runs
//! under the same run lock through the same executor (seal, flush, then
//! [`super::moves`] / [`super::archive`] / a tombstoning delete, whose
//! never-lose protocols and fail points are the policies'), and is audited
//! as a `lifecycle_decision` with `source: "manual"` and the actor. A dry
//! run is judged and audited, and changes nothing.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value as Json, json};

use super::execute::{Step, StepDone};
use super::guard::{self, Action, Proposal, Verdict};
use super::{Lifecycle, no_dataset, no_partition};
use crate::catalog::{AuditKind, PartitionRecord};
use crate::error::{Coded as _, ErrorCode, Failure};
use crate::facts::ArchiveDecision;
use crate::tier::Tier;
use crate::time::now_ns;

/// What an operator asks of one partition.
#[derive(Debug, Clone, PartialEq)]
pub enum ManualAction {
    /// Move its files to a tier.
    Move(Tier),
    /// Archive it (`target` "" = the archived tier's target).
    Archive {
        /// The storage target of the archive.
        target: String,
        /// Replace the live files by the archive once it is verified.
        delete_source_after: bool,
    },
    /// Delete it (its files are tombstoned, swept after the grace period).
    Delete,
}

/// One manual operation.
#[derive(Debug, Clone)]
pub struct ManualOperation {
    /// The dataset.
    pub dataset: String,
    /// The partition's period label.
    pub label: String,
    /// The partition's key ("" for none).
    pub key: String,
    /// What to do.
    pub action: ManualAction,
    /// Judge and audit, change nothing.
    pub dry: bool,
    /// Who asked (the token's name), for the audit.
    pub actor: String,
}

impl ManualAction {
    fn guard_action(&self) -> Action {
        match self {
            ManualAction::Move(tier) => Action::Move(*tier),
            ManualAction::Archive { .. } => Action::Archive,
            ManualAction::Delete => Action::Delete,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ManualAction::Move(_) => "move",
            ManualAction::Archive { .. } => "archive",
            ManualAction::Delete => "delete",
        }
    }
}

impl Lifecycle {
    /// Judges and (unless dry) executes one manual operation; answers what
    /// was done or would be. A guard rail's refusal is `guard_rail_refused`
    /// (audited as rejected); a failed step answers its error (audited as
    /// failed) and leaves the partition as the protocols leave it.
    pub async fn manual(&self, op: ManualOperation) -> Result<Json, Failure> {
        let dataset = self.store.dataset(&op.dataset).ok_or_else(|| no_dataset(&op.dataset))?;
        let partition_id = crate::names::partition_label(&dataset.name, &op.label, &op.key);
        let _one_at_a_time = self.running.lock().await;
        let manifest = self.manifest(&dataset).await?;
        let proposal =
            Proposal { partition_id: partition_id.clone(), action: op.action.guard_action(), reason: "manual".into() };
        let proposals = std::slice::from_ref(&proposal);
        let located = guard::locate(&manifest.facts, proposals);
        let Some(index) = located[0] else { return Err(no_partition(&partition_id)) };
        let record = manifest.records[index].clone();
        let rails = self.rails(dataset.name.as_str());
        let verdict = guard::judge_located(&manifest.facts, proposals, &located, &rails, now_ns()).remove(0);
        let mut answer = planned(&op, &partition_id, &record);
        match verdict {
            Verdict::NoOp => {
                answer["verdict"] = json!("noop");
                answer["outcome"] = json!("noop");
                return Ok(answer);
            }
            Verdict::Reject(why) => {
                answer["verdict"] = json!("reject");
                answer["outcome"] = json!("rejected");
                answer["why"] = json!(why);
                self.audit_manual(&op, &partition_id, &answer).await?;
                return Err(Failure::new(
                    ErrorCode::GuardRailRefused,
                    format!("{} of {partition_id} refused: {why}", op.action.name()),
                )
                .with_detail(json!({ "why": why, "partition_id": partition_id })));
            }
            Verdict::Accept if op.dry => {
                self.audit_manual(&op, &partition_id, &answer).await?;
                return Ok(answer);
            }
            Verdict::Accept => {}
        }
        let outcome = self.execute_manual(&dataset, &op, &partition_id, record).await;
        match outcome {
            Ok(StepDone { bytes, elapsed }) => {
                answer["outcome"] = json!("executed");
                answer["bytes_moved"] = json!(bytes);
                answer["elapsed_ms"] = json!(elapsed.as_secs_f64() * 1000.0);
                self.count(format!("strata_lifecycle_manual_operations_total{{action=\"{}\"}}", op.action.name()), 1);
                self.audit_manual(&op, &partition_id, &answer).await?;
                Ok(answer)
            }
            Err(error) => {
                answer["outcome"] = json!("failed");
                answer["error"] = json!(error.to_string());
                self.audit_manual(&op, &partition_id, &answer).await?;
                Err(Failure::new(error.code(), format!("{} of {partition_id} failed: {error}", op.action.name())))
            }
        }
    }

    /// Seals, flushes and executes the accepted operation as a run would.
    async fn execute_manual(
        &self,
        dataset: &Arc<crate::store::DatasetState>,
        op: &ManualOperation,
        partition_id: &str,
        record: PartitionRecord,
    ) -> Result<StepDone, super::error::LifecycleError> {
        let archive = match &op.action {
            ManualAction::Archive { target, delete_source_after } => Some(ArchiveDecision {
                partition_id: partition_id.to_string(),
                target: target.clone(),
                compression_level: None,
                row_group_rows: None,
                delete_source_after: *delete_source_after,
                reason: "manual".into(),
            }),
            _ => None,
        };
        let started = Instant::now();
        let step = Step { entry: 0, record, action: op.action.guard_action(), archive };
        let mut outcomes = self.execute(dataset, std::slice::from_ref(&step)).await;
        outcomes.remove(0).map(|done| StepDone { elapsed: started.elapsed(), ..done })
    }

    /// The `lifecycle_decision` audit event of a manual operation.
    async fn audit_manual(&self, op: &ManualOperation, partition_id: &str, answer: &Json) -> Result<(), Failure> {
        let mut detail = answer.clone();
        detail["source"] = json!("manual");
        let (dataset, partition, actor) = (op.dataset.clone(), partition_id.to_string(), op.actor.clone());
        self.catalog()
            .call(move |c| c.audit_by(AuditKind::LifecycleDecision, &dataset, &partition, &detail, &actor, now_ns()))
            .await?;
        Ok(())
    }
}

/// The answer of an accepted operation before it runs: what it would do.
fn planned(op: &ManualOperation, partition_id: &str, record: &PartitionRecord) -> Json {
    let mut answer = json!({
        "partition_id": partition_id,
        "action": op.action.name(),
        "dry": op.dry,
        "verdict": "accept",
        "outcome": "planned",
        "actor": op.actor,
        "from_tier": record.tier,
        "archived": record.archived,
        "rows": record.rows,
        "bytes": record.bytes,
        "files": record.file_count,
        "bytes_moved": 0,
    });
    match &op.action {
        ManualAction::Move(tier) => answer["tier"] = json!(tier),
        ManualAction::Archive { target, delete_source_after } => {
            answer["target"] = json!(target);
            answer["delete_source_after"] = json!(delete_source_after);
        }
        ManualAction::Delete => {}
    }
    answer
}
