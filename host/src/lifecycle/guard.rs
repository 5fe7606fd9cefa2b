//! Guard rails: what the host lets a policy's decisions do, whatever the
//! policy returns. Pure: a snapshot of partition facts, the proposals, the
//! rails and `now` in, a verdict per proposal out.

use std::collections::HashMap;

use crate::facts::PartitionFacts;
use crate::tier::Tier;

/// The guard rails of one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardRails {
    /// A partition whose period ended less than this long ago is never deleted.
    pub min_retention_ns: i64,
    /// At most this many deletes per run.
    pub max_deletes_per_run: usize,
    /// At most this fraction of the dataset's partitions deleted per run.
    pub max_delete_fraction: f64,
    /// Only archived partitions may be deleted.
    pub require_archive_before_delete: bool,
    /// Moves to a hotter tier are allowed.
    pub allow_backward_moves: bool,
}

/// What a decision asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the partition alone.
    Keep,
    /// Delete the partition.
    Delete,
    /// Move the partition to a tier.
    Move(Tier),
    /// Archive the partition (options travel with the decision).
    Archive,
}

/// One decision of a policy, in the host's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The partition's public id (`dataset/label[/key]`).
    pub partition_id: String,
    /// What to do.
    pub action: Action,
    /// The policy's reason.
    pub reason: String,
}

/// The guard's verdict on one proposal.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Execute it.
    Accept,
    /// Nothing to do (keep, or already in that tier).
    NoOp,
    /// Refused; the text says which rail.
    Reject(String),
}

fn rank(tier: Tier) -> u8 {
    match tier {
        Tier::Hot => 0,
        Tier::Warm => 1,
        Tier::Cold => 2,
        Tier::Archived => 3,
    }
}

/// Judges every proposal against the snapshot and the rails.
#[cfg(test)]
pub fn judge(partitions: &[PartitionFacts], proposals: &[Proposal], rails: &GuardRails, now_ns: i64) -> Vec<Verdict> {
    judge_located(partitions, proposals, &locate(partitions, proposals), rails, now_ns)
}

/// The index in `partitions` of each proposal's partition, if it has one.
/// Policies usually answer in the order they were asked, so a proposal is
/// first checked against the partition at its own position; only the
/// others are looked up by id.
pub fn locate(partitions: &[PartitionFacts], proposals: &[Proposal]) -> Vec<Option<usize>> {
    let mut by_id: Option<HashMap<&str, usize>> = None;
    proposals
        .iter()
        .enumerate()
        .map(|(i, proposal)| {
            if partitions.get(i).is_some_and(|p| p.id == proposal.partition_id) {
                return Some(i);
            }
            by_id
                .get_or_insert_with(|| partitions.iter().enumerate().map(|(i, p)| (p.id.as_str(), i)).collect())
                .get(proposal.partition_id.as_str())
                .copied()
        })
        .collect()
}

/// [`judge`] with the proposals' partitions already located.
pub fn judge_located(
    partitions: &[PartitionFacts],
    proposals: &[Proposal],
    located: &[Option<usize>],
    rails: &GuardRails,
    now_ns: i64,
) -> Vec<Verdict> {
    let mut seen = vec![false; partitions.len()];
    let delete_cap =
        rails.max_deletes_per_run.min((partitions.len() as f64 * rails.max_delete_fraction.clamp(0.0, 1.0)) as usize);
    let mut deletes = 0usize;
    proposals
        .iter()
        .zip(located)
        .map(|(proposal, located)| {
            let Some(index) = *located else {
                return Verdict::Reject(format!("no partition {:?} in this dataset", proposal.partition_id));
            };
            let partition = &partitions[index];
            if std::mem::replace(&mut seen[index], true) {
                return Verdict::Reject("a second decision for the same partition in one run".into());
            }
            if proposal.action == Action::Keep || proposal.action == Action::Move(partition.tier) {
                return Verdict::NoOp;
            }
            if partition.period_end_ns > now_ns {
                return Verdict::Reject("the period is still open (or in the future)".into());
            }
            match proposal.action {
                Action::Keep => Verdict::NoOp,
                Action::Archive if partition.archived || partition.tier == Tier::Archived => Verdict::NoOp,
                Action::Archive => Verdict::Accept,
                Action::Move(Tier::Archived) => {
                    Verdict::Reject("partitions are archived by archival policies, not moved there".into())
                }
                Action::Move(target) if rank(target) < rank(partition.tier) && !rails.allow_backward_moves => {
                    Verdict::Reject(format!(
                        "a move from {} back to {} needs lifecycle.allow_backward_moves",
                        partition.tier.as_str(),
                        target.as_str()
                    ))
                }
                Action::Move(_) => Verdict::Accept,
                Action::Delete => {
                    if now_ns.saturating_sub(partition.period_end_ns) < rails.min_retention_ns {
                        Verdict::Reject("younger than the dataset's minimum retention".into())
                    } else if rails.require_archive_before_delete && partition.tier != Tier::Archived {
                        Verdict::Reject("not archived and require_archive_before_delete is set".into())
                    } else if deletes >= delete_cap {
                        Verdict::Reject(format!(
                            "more than {delete_cap} deletes in one run (max_deletes_per_run / max_delete_fraction)"
                        ))
                    } else {
                        deletes += 1;
                        Verdict::Accept
                    }
                }
            }
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000_000;

    /// A `cpu` partition of day `day` since the epoch, in `tier`.
    pub(in crate::lifecycle) fn partition(day: i64, tier: Tier) -> PartitionFacts {
        PartitionFacts {
            id: format!("cpu/day{day}"),
            dataset: "cpu".into(),
            period_label: format!("day{day}"),
            period_start_ns: day * DAY,
            period_end_ns: (day + 1) * DAY,
            key: String::new(),
            tier,
            read_only: false,
            rows: 1,
            bytes: 1,
            min_time_ns: Some(day * DAY),
            max_time_ns: Some(day * DAY),
            created_at_ns: day * DAY,
            last_written_at_ns: day * DAY,
            file_count: 1,
            archived: false,
        }
    }

    fn rails() -> GuardRails {
        GuardRails {
            min_retention_ns: 2 * DAY,
            max_deletes_per_run: 100,
            max_delete_fraction: 1.0,
            require_archive_before_delete: false,
            allow_backward_moves: false,
        }
    }

    fn proposal(day: i64, action: Action) -> Proposal {
        Proposal { partition_id: format!("cpu/day{day}"), action, reason: "test".into() }
    }

    fn rejected(verdict: &Verdict, needle: &str) -> bool {
        matches!(verdict, Verdict::Reject(why) if why.contains(needle))
    }

    #[test]
    fn proposals_are_located_in_order_or_by_id_and_a_duplicate_is_caught_either_way() {
        let partitions: Vec<_> = (0..4).map(|d| partition(d, Tier::Hot)).collect();
        let now = 10 * DAY;
        // 0 and 1 in place; 3 out of place; 1 again out of place (a duplicate
        // of one found in place); 2 in place after all that; an unknown id.
        let proposals = vec![
            proposal(0, Action::Move(Tier::Warm)),
            proposal(1, Action::Move(Tier::Warm)),
            proposal(3, Action::Move(Tier::Warm)),
            proposal(1, Action::Move(Tier::Cold)),
            proposal(7, Action::Move(Tier::Warm)),
        ];
        assert_eq!(locate(&partitions, &proposals), [Some(0), Some(1), Some(3), Some(1), None]);
        let verdicts = judge(&partitions, &proposals, &rails(), now);
        assert_eq!(verdicts[..3], [Verdict::Accept, Verdict::Accept, Verdict::Accept]);
        assert!(rejected(&verdicts[3], "second decision"), "{verdicts:?}");
        assert!(rejected(&verdicts[4], "no partition"), "{verdicts:?}");
    }

    #[test]
    fn unknown_duplicate_and_open_partitions_are_rejected() {
        let partitions: Vec<_> = (0..10).map(|d| partition(d, Tier::Hot)).collect();
        let now = 9 * DAY + 5;
        let proposals = vec![
            Proposal { partition_id: "other/day1".into(), action: Action::Delete, reason: String::new() },
            proposal(1, Action::Move(Tier::Warm)),
            proposal(1, Action::Move(Tier::Cold)),
            proposal(9, Action::Move(Tier::Warm)),
            proposal(2, Action::Keep),
            proposal(3, Action::Move(Tier::Hot)),
        ];
        let verdicts = judge(&partitions, &proposals, &rails(), now);
        assert!(rejected(&verdicts[0], "no partition"));
        assert_eq!(verdicts[1], Verdict::Accept);
        assert!(rejected(&verdicts[2], "second decision"));
        assert!(rejected(&verdicts[3], "still open"));
        assert_eq!(verdicts[4], Verdict::NoOp);
        assert_eq!(verdicts[5], Verdict::NoOp);
    }

    #[test]
    fn deletes_respect_minimum_retention_caps_and_archive_requirement() {
        let partitions: Vec<_> =
            (0..10).map(|d| partition(d, if d < 2 { Tier::Archived } else { Tier::Cold })).collect();
        let now = 10 * DAY;
        let all: Vec<_> = (0..10).map(|d| proposal(d, Action::Delete)).collect();
        let verdicts = judge(&partitions, &all, &rails(), now);
        // Days 8 and 9 ended less than two days ago.
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Accept).count(), 8);
        assert!(rejected(&verdicts[8], "minimum retention") && rejected(&verdicts[9], "minimum retention"));

        let capped = GuardRails { max_delete_fraction: 0.3, ..rails() };
        let verdicts = judge(&partitions, &all, &capped, now);
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Accept).count(), 3);
        assert!(rejected(&verdicts[3], "more than 3 deletes"));

        let archive_first = GuardRails { require_archive_before_delete: true, ..rails() };
        let verdicts = judge(&partitions, &all, &archive_first, now);
        assert_eq!(&verdicts[..2], &[Verdict::Accept, Verdict::Accept]);
        assert!(rejected(&verdicts[2], "not archived"));
    }

    #[test]
    fn backward_moves_and_moves_into_archive_need_permission() {
        let partitions = vec![partition(0, Tier::Cold)];
        let back = [proposal(0, Action::Move(Tier::Warm))];
        assert!(rejected(&judge(&partitions, &back, &rails(), 5 * DAY)[0], "allow_backward_moves"));
        let allowed = GuardRails { allow_backward_moves: true, ..rails() };
        assert_eq!(judge(&partitions, &back, &allowed, 5 * DAY), [Verdict::Accept]);
        let archive = [proposal(0, Action::Move(Tier::Archived))];
        assert!(rejected(&judge(&partitions, &archive, &allowed, 5 * DAY)[0], "archival policies"));
    }
}
