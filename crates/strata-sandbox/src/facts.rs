//! The facts a policy is given and the decisions it answers with, as plain
//! Rust values, and the contract of a partition key. They mirror the
//! records of `wit/policy.wit`; the sandbox converts between these and the
//! generated bindings, so nothing outside `sandbox` sees a wasmtime type.

use serde::Serialize;

use crate::schema::ColumnKind;
use crate::tier::Tier;

/// What a policy knows about the dataset it is evaluated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFacts {
    /// Dataset name.
    pub name: String,
    /// Partition period: `hour`, `day`, `week`, `month`, `quarter` or `year`.
    pub period: String,
    /// Name of the time column.
    pub time_column: String,
    /// The schema, time column included: `(name, kind)`.
    pub columns: Vec<(String, ColumnKind)>,
}

/// What a policy knows about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFacts {
    /// The partition's public id (`dataset/period` or `dataset/period/key`).
    pub id: String,
    /// Dataset name.
    pub dataset: String,
    /// Human-readable period, e.g. `2025-03-14`.
    pub period_label: String,
    /// First nanosecond of the period (inclusive).
    pub period_start_ns: i64,
    /// End of the period (exclusive).
    pub period_end_ns: i64,
    /// Partition key ("" when unkeyed).
    pub key: String,
    /// Current tier.
    pub tier: Tier,
    /// True once the partition accepts no writes.
    pub read_only: bool,
    /// Rows in committed files.
    pub rows: u64,
    /// Bytes of committed files.
    pub bytes: u64,
    /// Smallest timestamp stored.
    pub min_time_ns: Option<i64>,
    /// Largest timestamp stored.
    pub max_time_ns: Option<i64>,
    /// Creation time.
    pub created_at_ns: i64,
    /// Last write.
    pub last_written_at_ns: i64,
    /// Number of data files.
    pub file_count: u32,
    /// True once a copy exists on an archive target.
    pub archived: bool,
}

/// What a retention policy wants done with a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionAction {
    /// Leave it alone.
    Keep,
    /// Delete the partition and its files.
    Delete,
}

/// A retention policy's answer for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionDecision {
    /// The `id` of a partition from the input.
    pub partition_id: String,
    /// Keep or delete.
    pub action: RetentionAction,
    /// Why, in one sentence.
    pub reason: String,
}

/// A tiering policy's answer for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierDecision {
    /// The `id` of a partition from the input.
    pub partition_id: String,
    /// The tier the partition should be in.
    pub target: Tier,
    /// Why, in one sentence.
    pub reason: String,
}

/// An archival policy's request to archive one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveDecision {
    /// The `id` of a partition from the input.
    pub partition_id: String,
    /// Storage target to archive to ("" = the default archive target).
    pub target: String,
    /// Zstandard level for the re-encoded files (none = host default).
    pub compression_level: Option<u8>,
    /// Rows per row group (none = host default).
    pub row_group_rows: Option<u32>,
    /// Delete the hot copy once the archive is verified.
    pub delete_source_after: bool,
    /// Why, in one sentence.
    pub reason: String,
}

/// The values of one column for a batch of records, in record order.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    /// A `tag` or `text` column.
    Text(Vec<Option<String>>),
    /// A `float` column.
    Float(Vec<Option<f64>>),
    /// An `integer` column.
    Integer(Vec<Option<i64>>),
    /// An `unsigned` column.
    Unsigned(Vec<Option<u64>>),
    /// A `boolean` column.
    Boolean(Vec<Option<bool>>),
    /// The time column (never null).
    Time(Vec<i64>),
}

impl ColumnValues {
    /// The number of records.
    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Text(values) => values.len(),
            ColumnValues::Float(values) => values.len(),
            ColumnValues::Integer(values) => values.len(),
            ColumnValues::Unsigned(values) => values.len(),
            ColumnValues::Boolean(values) => values.len(),
            ColumnValues::Time(values) => values.len(),
        }
    }

    /// True when the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One named column of a batch of records handed to a partitioner.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnBatch {
    /// Column name.
    pub name: String,
    /// Its values, one per record.
    pub values: ColumnValues,
}

/// The longest partition key, in bytes.
pub const PARTITION_KEY_BYTES_MAX: usize = 63;

/// Whether `key` is a valid partition key: at most 63 characters from
/// `[a-z0-9_-]`; the empty string is the unkeyed partition.
pub fn is_valid_partition_key(key: &str) -> bool {
    key.len() <= PARTITION_KEY_BYTES_MAX
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_follow_the_contract() {
        for good in ["", "tenant-7", "a_b", &"x".repeat(63)] {
            assert!(is_valid_partition_key(good), "{good}");
        }
        for bad in ["Tenant", "a/b", "a b", "ü", &"x".repeat(64), "../x"] {
            assert!(!is_valid_partition_key(bad), "{bad}");
        }
    }
}
