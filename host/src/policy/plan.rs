//! Pure checks and views of a policy's answer: the host's contract checks
//! (ids from the input, one decision per partition, no tier moves towards
//! hot, valid partition keys), the plan (one entry per partition) and the
//! diff between two plans.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use serde::Serialize;

use crate::tier::Tier;

use crate::facts::{
    ArchiveDecision, PartitionFacts, RetentionAction, RetentionDecision, TierDecision, is_valid_partition_key,
};

/// The decisions of one retention, tiering or archival evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decisions {
    /// From a retention policy.
    Retention(Vec<RetentionDecision>),
    /// From a tiering policy.
    Tiering(Vec<TierDecision>),
    /// From an archival policy.
    Archival(Vec<ArchiveDecision>),
}

impl Decisions {
    /// The number of decisions.
    pub fn len(&self) -> usize {
        match self {
            Decisions::Retention(d) => d.len(),
            Decisions::Tiering(d) => d.len(),
            Decisions::Archival(d) => d.len(),
        }
    }

    /// True when the policy decided nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks an answer against the contract of `wit/policy.wit`: every id is
/// one of the input partitions, at most one decision per partition, and a
/// tiering target is never hotter than the partition's tier.
pub fn check_decisions(decisions: &Decisions, partitions: &[PartitionFacts]) -> Result<(), String> {
    let tiers: HashMap<&str, Tier> = partitions.iter().map(|p| (p.id.as_str(), p.tier)).collect();
    let mut seen: HashSet<&str> = HashSet::with_capacity_and_hasher(decisions.len(), Default::default());
    let check_id = |id: &'_ str| -> Result<Tier, String> {
        let Some(tier) = tiers.get(id) else {
            return Err(format!("decided about partition {id:?}, which was not in the input"));
        };
        Ok(*tier)
    };
    let mut check_once = |id| {
        if !seen.insert(id) {
            return Err(format!("decided about partition {id:?} more than once"));
        }
        Ok(())
    };
    match decisions {
        Decisions::Retention(decisions) => {
            for decision in decisions {
                check_id(&decision.partition_id)?;
                check_once(decision.partition_id.as_str())?;
            }
        }
        Decisions::Tiering(decisions) => {
            for decision in decisions {
                let current = check_id(&decision.partition_id)?;
                check_once(decision.partition_id.as_str())?;
                if decision.target < current {
                    return Err(format!(
                        "moves partition {:?} from {} back to {}; tiers only move towards archived",
                        decision.partition_id,
                        current.as_str(),
                        decision.target.as_str()
                    ));
                }
            }
        }
        Decisions::Archival(decisions) => {
            for decision in decisions {
                check_id(&decision.partition_id)?;
                check_once(decision.partition_id.as_str())?;
                if let Some(level) = decision.compression_level
                    && !(1..=22).contains(&level)
                {
                    return Err(format!(
                        "asks for zstd level {level} for partition {:?}; levels are 1..=22",
                        decision.partition_id
                    ));
                }
                if decision.row_group_rows == Some(0) {
                    return Err(format!("asks for 0 rows per row group for partition {:?}", decision.partition_id));
                }
            }
        }
    }
    Ok(())
}

/// Checks a partitioner's answer: exactly `rows` results, every key valid.
pub fn check_keys(keys: &[Result<String, String>], rows: usize) -> Result<(), String> {
    if keys.len() != rows {
        return Err(format!("returned {} results for {rows} records; the contract is one per record", keys.len()));
    }
    for (record, key) in keys.iter().enumerate() {
        if let Ok(key) = key
            && !is_valid_partition_key(key)
        {
            return Err(format!(
                "returned the key {:?} for record {record}; keys are at most 63 characters from [a-z0-9_-]",
                key.chars().take(80).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// What the plan says for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanEntry {
    /// The partition's id.
    pub partition: String,
    /// `keep` / `delete` (retention), `stay` / `move` (tiering),
    /// `archive` / `none` (archival).
    pub action: &'static str,
    /// The target tier (tiering) or storage target (archival).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The policy's reason, or why nothing happens when it did not decide.
    pub reason: String,
    /// False when the policy left the partition out of its answer.
    pub decided: bool,
    /// The partition's current tier.
    pub tier: Tier,
    /// Bytes of the partition.
    pub bytes: u64,
    /// Rows of the partition.
    pub rows: u64,
    /// Archival only: delete the hot copy once archived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_source_after: Option<bool>,
}

impl PlanEntry {
    /// True when the entry changes something.
    pub fn is_change(&self) -> bool {
        matches!(self.action, "delete" | "move" | "archive")
    }
}

/// One entry per input partition, in input order: what the decisions mean
/// for it (a partition the policy left out gets the kind's default).
pub fn plan(decisions: &Decisions, partitions: &[PartitionFacts]) -> Vec<PlanEntry> {
    let base = |partition: &PartitionFacts, action: &'static str, reason: String, decided: bool| PlanEntry {
        partition: partition.id.clone(),
        action,
        target: None,
        reason,
        decided,
        tier: partition.tier,
        bytes: partition.bytes,
        rows: partition.rows,
        delete_source_after: None,
    };
    match decisions {
        Decisions::Retention(decisions) => {
            let by_id: HashMap<&str, &RetentionDecision> =
                decisions.iter().map(|d| (d.partition_id.as_str(), d)).collect();
            partitions
                .iter()
                .map(|partition| match by_id.get(partition.id.as_str()) {
                    Some(d) => {
                        let action = match d.action {
                            RetentionAction::Keep => "keep",
                            RetentionAction::Delete => "delete",
                        };
                        base(partition, action, d.reason.clone(), true)
                    }
                    None => base(partition, "keep", "not decided by the policy: kept".into(), false),
                })
                .collect()
        }
        Decisions::Tiering(decisions) => {
            let by_id: HashMap<&str, &TierDecision> = decisions.iter().map(|d| (d.partition_id.as_str(), d)).collect();
            partitions
                .iter()
                .map(|partition| match by_id.get(partition.id.as_str()) {
                    Some(d) => {
                        let action = if d.target == partition.tier { "stay" } else { "move" };
                        let mut entry = base(partition, action, d.reason.clone(), true);
                        entry.target = Some(d.target.as_str().to_string());
                        entry
                    }
                    None => {
                        let mut entry = base(partition, "stay", "not decided by the policy: stays".into(), false);
                        entry.target = Some(partition.tier.as_str().to_string());
                        entry
                    }
                })
                .collect()
        }
        Decisions::Archival(decisions) => {
            let by_id: HashMap<&str, &ArchiveDecision> =
                decisions.iter().map(|d| (d.partition_id.as_str(), d)).collect();
            partitions
                .iter()
                .map(|partition| match by_id.get(partition.id.as_str()) {
                    Some(d) => {
                        let mut entry = base(partition, "archive", d.reason.clone(), true);
                        entry.target = Some(d.target.clone());
                        entry.delete_source_after = Some(d.delete_source_after);
                        entry
                    }
                    None => base(partition, "none", "not selected for archival".into(), false),
                })
                .collect()
        }
    }
}

/// A partition whose outcome differs between two plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanChange {
    /// The partition's id.
    pub partition: String,
    /// The outcome under the plan compared against (usually the active version).
    pub before: Outcome,
    /// The outcome under the evaluated plan.
    pub after: Outcome,
}

/// The part of a plan entry that matters for a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The action.
    pub action: &'static str,
    /// Its target, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The reason given.
    pub reason: String,
}

/// The partitions whose action or target differ between `before` and
/// `after` (reasons alone do not count). Both plans cover the same
/// partitions in the same order.
pub fn diff(before: &[PlanEntry], after: &[PlanEntry]) -> Vec<PlanChange> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b.action != a.action || b.target != a.target || b.delete_source_after != a.delete_source_after)
        .map(|(b, a)| PlanChange {
            partition: a.partition.clone(),
            before: Outcome { action: b.action, target: b.target.clone(), reason: b.reason.clone() },
            after: Outcome { action: a.action, target: a.target.clone(), reason: a.reason.clone() },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(id: &str, tier: Tier) -> PartitionFacts {
        PartitionFacts {
            id: id.into(),
            dataset: "cpu".into(),
            period_label: id.into(),
            period_start_ns: 0,
            period_end_ns: 1,
            key: String::new(),
            tier,
            read_only: false,
            rows: 10,
            bytes: 100,
            min_time_ns: None,
            max_time_ns: None,
            created_at_ns: 0,
            last_written_at_ns: 0,
            file_count: 1,
            archived: false,
        }
    }

    fn retention(id: &str, action: RetentionAction) -> RetentionDecision {
        RetentionDecision { partition_id: id.into(), action, reason: format!("{id} because") }
    }

    #[test]
    fn decisions_must_name_input_partitions_once() {
        let partitions = [partition("a", Tier::Hot), partition("b", Tier::Warm)];
        let ok = Decisions::Retention(vec![retention("a", RetentionAction::Delete)]);
        assert_eq!(check_decisions(&ok, &partitions), Ok(()));
        let unknown = Decisions::Retention(vec![retention("zz", RetentionAction::Delete)]);
        assert!(check_decisions(&unknown, &partitions).unwrap_err().contains("not in the input"));
        let twice =
            Decisions::Retention(vec![retention("a", RetentionAction::Keep), retention("a", RetentionAction::Delete)]);
        assert!(check_decisions(&twice, &partitions).unwrap_err().contains("more than once"));
        let backwards = Decisions::Tiering(vec![TierDecision {
            partition_id: "b".into(),
            target: Tier::Hot,
            reason: String::new(),
        }]);
        assert!(check_decisions(&backwards, &partitions).unwrap_err().contains("back to hot"));
        let level = Decisions::Archival(vec![ArchiveDecision {
            partition_id: "a".into(),
            target: String::new(),
            compression_level: Some(30),
            row_group_rows: None,
            delete_source_after: false,
            reason: String::new(),
        }]);
        assert!(check_decisions(&level, &partitions).unwrap_err().contains("zstd level 30"));
    }

    #[test]
    fn keys_are_one_per_record_and_valid() {
        assert_eq!(check_keys(&[Ok("a".into()), Err("no tenant".into()), Ok(String::new())], 3), Ok(()));
        assert!(check_keys(&[Ok("a".into())], 2).unwrap_err().contains("1 results for 2 records"));
        assert!(check_keys(&[Ok("A/B".into())], 1).unwrap_err().contains("record 0"));
    }

    #[test]
    fn plans_cover_every_partition_and_diffs_ignore_reasons() {
        let partitions = [partition("a", Tier::Hot), partition("b", Tier::Hot), partition("c", Tier::Hot)];
        let before = plan(
            &Decisions::Retention(vec![retention("a", RetentionAction::Delete), retention("b", RetentionAction::Keep)]),
            &partitions,
        );
        assert_eq!(before.iter().map(|e| e.action).collect::<Vec<_>>(), ["delete", "keep", "keep"]);
        assert!(!before[2].decided, "c was left out and is kept");
        let mut reworded = vec![retention("a", RetentionAction::Delete), retention("b", RetentionAction::Delete)];
        reworded[0].reason = "different words".into();
        let after = plan(&Decisions::Retention(reworded), &partitions);
        let changes = diff(&before, &after);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].partition, "b");
        assert_eq!((changes[0].before.action, changes[0].after.action), ("keep", "delete"));
    }

    #[test]
    fn tiering_plans_say_stay_or_move() {
        let partitions = [partition("a", Tier::Hot), partition("b", Tier::Warm)];
        let entries = plan(
            &Decisions::Tiering(vec![TierDecision {
                partition_id: "a".into(),
                target: Tier::Cold,
                reason: "old".into(),
            }]),
            &partitions,
        );
        assert_eq!(entries[0].action, "move");
        assert_eq!(entries[0].target.as_deref(), Some("cold"));
        assert_eq!(entries[1].action, "stay");
        assert_eq!(entries[1].target.as_deref(), Some("warm"));
    }
}
