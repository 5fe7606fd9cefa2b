//! Between the host's plain values ([`crate::facts`]) and the generated
//! WIT bindings: facts are lowered column by column without a deep copy,
//! and answers are lifted back, every index they hold (partition, reason,
//! key, record) resolved or refused as a broken contract.

use super::bindings::shared::strata::policy::types as wit;
use super::error::{Result, SandboxError};
use crate::facts::{
    ArchiveDecision, ColumnBatch, ColumnValues, DatasetFacts, PartitionFacts, RetentionAction, RetentionDecision,
    TierDecision,
};
use crate::schema::ColumnKind;
use crate::tier::Tier;

fn tier_to_wit(tier: Tier) -> wit::Tier {
    match tier {
        Tier::Hot => wit::Tier::Hot,
        Tier::Warm => wit::Tier::Warm,
        Tier::Cold => wit::Tier::Cold,
        Tier::Archived => wit::Tier::Archived,
    }
}

fn tier_from_wit(tier: wit::Tier) -> Tier {
    match tier {
        wit::Tier::Hot => Tier::Hot,
        wit::Tier::Warm => Tier::Warm,
        wit::Tier::Cold => Tier::Cold,
        wit::Tier::Archived => Tier::Archived,
    }
}

pub(super) fn column_infos_to_wit(dataset: &DatasetFacts) -> Vec<wit::ColumnInfo<'_>> {
    dataset
        .columns
        .iter()
        .map(|(name, kind)| wit::ColumnInfo {
            name,
            kind: match kind {
                ColumnKind::Time => wit::ColumnKind::Time,
                ColumnKind::Tag => wit::ColumnKind::Tag,
                ColumnKind::Text => wit::ColumnKind::Text,
                ColumnKind::Float => wit::ColumnKind::Float,
                ColumnKind::Integer => wit::ColumnKind::Integer,
                ColumnKind::Unsigned => wit::ColumnKind::Unsigned,
                ColumnKind::Boolean => wit::ColumnKind::Boolean,
            },
        })
        .collect()
}

pub(super) fn dataset_to_wit<'a>(
    dataset: &'a DatasetFacts,
    columns: &'a [wit::ColumnInfo<'a>],
) -> wit::DatasetInfo<'a> {
    wit::DatasetInfo { name: &dataset.name, period: &dataset.period, time_column: &dataset.time_column, columns }
}
/// A list of strings in the `texts` form: one buffer and end offsets.
#[derive(Default)]
struct TextsBuffer {
    text: String,
    ends: Vec<u32>,
}

impl TextsBuffer {
    fn with_capacity(count: usize) -> TextsBuffer {
        TextsBuffer { text: String::with_capacity(count * 16), ends: Vec::with_capacity(count) }
    }

    fn push(&mut self, value: &str) -> Result<()> {
        self.text.push_str(value);
        let end = u32::try_from(self.text.len())
            .map_err(|_| SandboxError::Internal("more than 4 GiB of strings in one call".into()))?;
        self.ends.push(end);
        Ok(())
    }

    fn to_wit(&self) -> wit::Texts<'_> {
        wit::Texts { text: &self.text, ends: &self.ends }
    }
}

/// The partition facts of one call, column by column (the WIT `partitions`
/// record): lowering a few flat lists costs a handful of copies, where a
/// list of records with strings cost an allocation in the guest per string.
pub(super) struct PartitionColumns {
    period_start_ns: Vec<i64>,
    period_end_ns: Vec<i64>,
    period_label: TextsBuffer,
    key: TextsBuffer,
    tier: Vec<wit::Tier>,
    read_only: Vec<bool>,
    rows: Vec<u64>,
    bytes: Vec<u64>,
    min_time_ns: Vec<Option<i64>>,
    max_time_ns: Vec<Option<i64>>,
    created_at_ns: Vec<i64>,
    last_written_at_ns: Vec<i64>,
    file_count: Vec<u32>,
    archived: Vec<bool>,
}

impl PartitionColumns {
    pub(super) fn new(partitions: &[PartitionFacts]) -> Result<PartitionColumns> {
        let count = partitions.len();
        let mut columns = PartitionColumns {
            period_start_ns: Vec::with_capacity(count),
            period_end_ns: Vec::with_capacity(count),
            period_label: TextsBuffer::with_capacity(count),
            key: TextsBuffer::with_capacity(count),
            tier: Vec::with_capacity(count),
            read_only: Vec::with_capacity(count),
            rows: Vec::with_capacity(count),
            bytes: Vec::with_capacity(count),
            min_time_ns: Vec::with_capacity(count),
            max_time_ns: Vec::with_capacity(count),
            created_at_ns: Vec::with_capacity(count),
            last_written_at_ns: Vec::with_capacity(count),
            file_count: Vec::with_capacity(count),
            archived: Vec::with_capacity(count),
        };
        // One pass over the facts: each partition is read once, while it is
        // in cache.
        for p in partitions {
            columns.period_start_ns.push(p.period_start_ns);
            columns.period_end_ns.push(p.period_end_ns);
            columns.period_label.push(&p.period_label)?;
            columns.key.push(&p.key)?;
            columns.tier.push(tier_to_wit(p.tier));
            columns.read_only.push(p.read_only);
            columns.rows.push(p.rows);
            columns.bytes.push(p.bytes);
            columns.min_time_ns.push(p.min_time_ns);
            columns.max_time_ns.push(p.max_time_ns);
            columns.created_at_ns.push(p.created_at_ns);
            columns.last_written_at_ns.push(p.last_written_at_ns);
            columns.file_count.push(p.file_count);
            columns.archived.push(p.archived);
        }
        Ok(columns)
    }

    pub(super) fn to_wit(&self) -> wit::Partitions<'_> {
        wit::Partitions {
            period_start_ns: &self.period_start_ns,
            period_end_ns: &self.period_end_ns,
            period_label: self.period_label.to_wit(),
            key: self.key.to_wit(),
            tier: &self.tier,
            read_only: &self.read_only,
            rows: &self.rows,
            bytes: &self.bytes,
            min_time_ns: &self.min_time_ns,
            max_time_ns: &self.max_time_ns,
            created_at_ns: &self.created_at_ns,
            last_written_at_ns: &self.last_written_at_ns,
            file_count: &self.file_count,
            archived: &self.archived,
        }
    }
}

/// Resolves the indexes of an answer: partitions by their position in the
/// input, reasons by their position in the answer's `reasons`.
struct AnswerFacts<'a> {
    partitions: &'a [PartitionFacts],
    reasons: &'a [String],
}

impl AnswerFacts<'_> {
    fn partition_id(&self, index: u32) -> Result<String> {
        match self.partitions.get(index as usize) {
            Some(partition) => Ok(partition.id.clone()),
            None => Err(SandboxError::BrokenContract(format!(
                "a decision refers to partition {index}, but only {} were given",
                self.partitions.len()
            ))),
        }
    }

    fn reason(&self, index: u32) -> Result<String> {
        match self.reasons.get(index as usize) {
            Some(reason) => Ok(reason.clone()),
            None => Err(SandboxError::BrokenContract(format!(
                "a decision refers to reason {index}, but the answer has {} reasons",
                self.reasons.len()
            ))),
        }
    }
}

/// A text column of a batch in the WIT `text-values` form; `None` for the
/// other kinds, whose values are lowered as they are.
pub(super) struct TextColumn {
    values: TextsBuffer,
    nulls: Vec<u32>,
}

impl TextColumn {
    pub(super) fn new(column: &ColumnBatch) -> Result<Option<TextColumn>> {
        let ColumnValues::Text(values) = &column.values else { return Ok(None) };
        let mut texts = TextsBuffer::with_capacity(values.len());
        let mut nulls = Vec::new();
        for (row, value) in values.iter().enumerate() {
            if value.is_none() {
                nulls.push(u32::try_from(row).map_err(|_| SandboxError::Internal("batch too large".into()))?);
            }
            texts.push(value.as_deref().unwrap_or(""))?;
        }
        Ok(Some(TextColumn { values: texts, nulls }))
    }
}

pub(super) fn column_to_wit<'a>(column: &'a ColumnBatch, text: &'a Option<TextColumn>) -> wit::Column<'a> {
    wit::Column {
        name: &column.name,
        values: match (&column.values, text) {
            (ColumnValues::Text(_), Some(text)) => {
                wit::ColumnValues::Text(wit::TextValues { values: text.values.to_wit(), nulls: &text.nulls })
            }
            (ColumnValues::Text(_), None) => {
                wit::ColumnValues::Text(wit::TextValues { values: wit::Texts { text: "", ends: &[] }, nulls: &[] })
            }
            (ColumnValues::Float(values), _) => wit::ColumnValues::Float(values),
            (ColumnValues::Integer(values), _) => wit::ColumnValues::Integer(values),
            (ColumnValues::Unsigned(values), _) => wit::ColumnValues::Unsigned(values),
            (ColumnValues::Boolean(values), _) => wit::ColumnValues::Boolean(values),
            (ColumnValues::Time(values), _) => wit::ColumnValues::Time(values),
        },
    }
}

/// One result per record from a partitioner's `batch-keys`. Indexes that
/// point nowhere, a record rejected twice or a key list of the wrong length
/// break the contract; the keys themselves are checked by
/// `plan::check_keys`.
pub(super) fn keys_from_wit(answer: wit::BatchKeys, rows: usize) -> Result<Vec<Result<String, String>>> {
    if answer.record_keys.len() != rows {
        return Err(SandboxError::BrokenContract(format!(
            "record-keys has {} entries for {rows} records",
            answer.record_keys.len()
        )));
    }
    let mut rejected: Vec<Option<String>> = vec![None; rows];
    for record in answer.rejected {
        let slot = rejected.get_mut(record.row as usize).ok_or_else(|| {
            SandboxError::BrokenContract(format!("rejects record {}, but the batch has {rows} records", record.row))
        })?;
        if slot.replace(record.message).is_some() {
            return Err(SandboxError::BrokenContract(format!("rejects record {} more than once", record.row)));
        }
    }
    answer
        .record_keys
        .iter()
        .zip(rejected)
        .enumerate()
        .map(|(row, (&key, rejected))| match rejected {
            Some(message) => Ok(Err(message)),
            None => match answer.keys.get(key as usize) {
                Some(key) => Ok(Ok(key.clone())),
                None => Err(SandboxError::BrokenContract(format!(
                    "record {row} has key {key}, but the answer has {} keys",
                    answer.keys.len()
                ))),
            },
        })
        .collect()
}

/// A retention answer as decisions on the input's partitions.
pub(super) fn retention_decisions(
    answer: &wit::RetentionAnswer,
    partitions: &[PartitionFacts],
) -> Result<Vec<RetentionDecision>> {
    let answer_facts = AnswerFacts { partitions, reasons: &answer.reasons };
    answer
        .decisions
        .iter()
        .map(|d| {
            Ok(RetentionDecision {
                partition_id: answer_facts.partition_id(d.partition)?,
                action: match d.action {
                    wit::RetentionAction::Keep => RetentionAction::Keep,
                    wit::RetentionAction::Delete => RetentionAction::Delete,
                },
                reason: answer_facts.reason(d.reason)?,
            })
        })
        .collect()
}

/// A tiering answer as decisions on the input's partitions.
pub(super) fn tier_decisions(answer: &wit::TieringAnswer, partitions: &[PartitionFacts]) -> Result<Vec<TierDecision>> {
    let answer_facts = AnswerFacts { partitions, reasons: &answer.reasons };
    answer
        .decisions
        .iter()
        .map(|d| {
            Ok(TierDecision {
                partition_id: answer_facts.partition_id(d.partition)?,
                target: tier_from_wit(d.target),
                reason: answer_facts.reason(d.reason)?,
            })
        })
        .collect()
}

/// An archival answer as decisions on the input's partitions.
pub(super) fn archive_decisions(
    answer: wit::ArchivalAnswer,
    partitions: &[PartitionFacts],
) -> Result<Vec<ArchiveDecision>> {
    let answer_facts = AnswerFacts { partitions, reasons: &answer.reasons };
    answer
        .decisions
        .into_iter()
        .map(|d| {
            Ok(ArchiveDecision {
                partition_id: answer_facts.partition_id(d.partition)?,
                target: d.target,
                compression_level: d.compression_level,
                row_group_rows: d.row_group_rows,
                delete_source_after: d.delete_source_after,
                reason: answer_facts.reason(d.reason)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::facts::{RetentionAction, RetentionDecision};
    use crate::sandbox::tests::{evaluate, limits, retention_fixture, sandbox};
    use crate::sandbox::{PolicyKind, SandboxError};

    #[test]
    fn an_answer_pointing_nowhere_breaks_the_contract() {
        let sandbox = sandbox();
        // One decision for partition 99 (of 3) with reason 0, and one empty reason.
        let nowhere = "(i32.store (i32.const 512) (i32.const 99))
                       (i32.store (i32.const 16) (i32.const 512))
                       (i32.store (i32.const 20) (i32.const 1))
                       (i32.store (i32.const 24) (i32.const 600))
                       (i32.store (i32.const 28) (i32.const 1))
                       (return (i32.const 16))";
        let component = sandbox.load(&retention_fixture(nowhere), PolicyKind::Retention).unwrap();
        let error = evaluate(&component, &limits()).unwrap_err();
        assert!(
            matches!(&error, SandboxError::BrokenContract(message) if message.contains("partition 99")),
            "{error:?}"
        );
        // The same decision for partition 2 refers to a reason that exists.
        let fine = nowhere.replace("(i32.const 99)", "(i32.const 2)");
        let component = sandbox.load(&retention_fixture(&fine), PolicyKind::Retention).unwrap();
        let decisions = evaluate(&component, &limits()).unwrap();
        assert_eq!(
            decisions,
            [RetentionDecision { partition_id: "cpu/3".into(), action: RetentionAction::Keep, reason: String::new() }]
        );
        // A reason index past the end is refused too.
        let no_reason =
            fine.replace("(i32.store (i32.const 28) (i32.const 1))", "(i32.store (i32.const 28) (i32.const 0))");
        let component = sandbox.load(&retention_fixture(&no_reason), PolicyKind::Retention).unwrap();
        assert!(matches!(evaluate(&component, &limits()), Err(SandboxError::BrokenContract(_))));
    }
}
