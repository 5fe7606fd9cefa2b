//! Request bodies → Arrow columns → per-partition batches.
//!
//! Parsing ([`line_protocol`], [`json`]) and routing ([`route`]) are pure
//! functions over bytes and arrays; the store does the IO.

pub mod batch;
pub mod json;
pub mod line_protocol;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, DictionaryArray, Int32Array, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{Field, Int32Type, Schema};
use arrow::record_batch::RecordBatch;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::period::{Bucket, BucketCache, Periods};
use crate::schema::{DatasetSchema, time_type};
use batch::ParsedBatch;

/// The tag column that holds a line-protocol measurement name.
pub const MEASUREMENT_COLUMN: &str = "_measurement";

/// Limits applied while parsing one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestLimits {
    /// Records (lines, objects) in one request.
    pub rows_per_request_max: usize,
    /// Bytes of one tag value.
    pub tag_value_bytes_max: usize,
    /// Bytes of one string field value.
    pub string_value_bytes_max: usize,
    /// Non-time columns in one dataset.
    pub columns_per_dataset_max: usize,
}

impl Default for IngestLimits {
    fn default() -> IngestLimits {
        IngestLimits {
            rows_per_request_max: 1_000_000,
            tag_value_bytes_max: 4 * 1024,
            string_value_bytes_max: 64 * 1024,
            columns_per_dataset_max: 1_000,
        }
    }
}

impl IngestLimits {
    /// The limit on one tag value (and a line-protocol measurement).
    pub(crate) fn tag_value(&self) -> ValueBytesLimit {
        ValueBytesLimit { key: "limits.tag_value_bytes_max", bytes_max: self.tag_value_bytes_max }
    }

    /// The limit on one string field value.
    pub(crate) fn string_value(&self) -> ValueBytesLimit {
        ValueBytesLimit { key: "limits.string_value_bytes_max", bytes_max: self.string_value_bytes_max }
    }
}

/// A byte limit on one text value, named by its configuration key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ValueBytesLimit {
    /// The configuration key, like `limits.tag_value_bytes_max`.
    pub(crate) key: &'static str,
    /// The most bytes a value may have.
    pub(crate) bytes_max: usize,
}

impl ValueBytesLimit {
    /// Refuses `text` (what `what` names) when it is over the limit, saying
    /// how long it is, what is allowed and which key allows it.
    pub(crate) fn check(self, text: &str, what: impl FnOnce() -> String) -> Result<(), String> {
        if text.len() <= self.bytes_max {
            return Ok(());
        }
        Err(format!("{} is {} bytes; at most {} are allowed ({})", what(), text.len(), self.bytes_max, self.key))
    }
}

/// The unit of epoch timestamps in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Nanoseconds.
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// Minutes (InfluxDB 1.x `precision=m`).
    Minutes,
    /// Hours (InfluxDB 1.x `precision=h`).
    Hours,
}

impl Precision {
    /// Parses `ns`, `us`, `ms`, `s`, `m` or `h` (also InfluxDB 3's
    /// `nanosecond` … `second`, and 1.x's `n` and `u`).
    pub fn parse(raw: &str) -> Option<Precision> {
        match raw {
            "ns" | "n" | "nanosecond" => Some(Precision::Nanoseconds),
            "us" | "u" | "µs" | "microsecond" => Some(Precision::Microseconds),
            "ms" | "millisecond" => Some(Precision::Milliseconds),
            "s" | "second" => Some(Precision::Seconds),
            "m" | "minute" => Some(Precision::Minutes),
            "h" | "hour" => Some(Precision::Hours),
            _ => None,
        }
    }

    /// Nanoseconds in one unit.
    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        }
    }
}

/// A request's rows grouped by partition: one batch, part after part.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Every row: the time column first, then the request's columns in
    /// schema order; part `i`'s rows are `parts[i].offset..` for its rows'
    /// count, in the order they came.
    pub batch: RecordBatch,
    /// The parts, largest first (parts of as many rows in order of first
    /// appearance).
    pub parts: Vec<PartitionRows>,
}

/// The rows of one request that belong to one partition.
#[derive(Debug, Clone)]
pub struct PartitionRows {
    /// The time bucket.
    pub bucket: Bucket,
    /// The partition key ("" when the dataset has no partitioner).
    pub key: String,
    /// The index in the parsed batch of each of the part's rows, in order.
    pub rows: Vec<u32>,
    /// Where its rows start in [`Routed::batch`].
    pub offset: usize,
}

impl PartitionRows {
    /// The part's rows in [`Routed::batch`].
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.rows.len()
    }
}

impl Routed {
    /// One part's rows as a batch of their own (dictionaries cut to the
    /// values they use).
    pub fn part_batch(&self, part: &PartitionRows) -> RecordBatch {
        let range = part.range();
        take_rows(&self.batch, &UInt32Array::from_iter_values(range.start as u32..range.end as u32))
    }
}

/// Groups a parsed request's rows by partition. `keys` holds one partition
/// key per row (from the partitioner) or `None` for the empty key.
/// `schema` must already contain every column of `parsed`.
pub fn route(
    mut parsed: ParsedBatch,
    schema: &DatasetSchema,
    period: impl Into<Periods>,
    keys: Option<&[String]>,
) -> Routed {
    assert!(keys.is_none_or(|keys| keys.len() == parsed.rows()), "the partitioner gives one key per row");
    let position = |name: &str| schema.columns.iter().position(|c| c.name == name).unwrap_or(usize::MAX);
    let mut order: Vec<usize> = (0..parsed.columns.len()).collect();
    order.sort_by_key(|i| position(&parsed.columns[*i].name));

    let mut fields = Vec::with_capacity(order.len() + 1);
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(order.len() + 1);
    let times = parsed.time_array();
    fields.push(Field::new(&schema.time_column, time_type(), false));
    for i in &order {
        let name = schema.physical_name(&parsed.columns[*i].name);
        fields.push(Field::new(name, parsed.columns[*i].kind.arrow_type(), true));
        arrays.push(parsed.arrays[*i].clone());
    }
    let time_values = times.values().clone();
    arrays.insert(0, Arc::new(times));
    let whole =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("parsed columns all have the row count");

    // Group rows by (bucket, key), in order of first appearance. Rows of a
    // request usually come in runs, so the previous row's group is tried
    // before the map, comparing keys by address first: unkeyed rows all
    // share one "", and a memcmp call per row, even of two empty keys,
    // made this loop as slow as parsing (0.4 ms per 5,000 rows here).
    let mut buckets = BucketCache::new(period);
    let mut groups: Vec<(usize, &str, Vec<u32>)> = Vec::new();
    let mut group_of: FxHashMap<(usize, &str), usize> = FxHashMap::default();
    let mut previous: Option<usize> = None;
    for (row, time) in time_values.iter().enumerate() {
        let bucket = buckets.index_of(*time);
        let key = keys.map(|k| k[row].as_str()).unwrap_or("");
        let group = match previous {
            Some(group)
                if groups[group].0 == bucket && (std::ptr::eq(groups[group].1, key) || groups[group].1 == key) =>
            {
                group
            }
            _ => *group_of.entry((bucket, key)).or_insert_with(|| {
                groups.push((bucket, key, Vec::new()));
                groups.len() - 1
            }),
        };
        previous = Some(group);
        groups[group].2.push(row as u32);
    }
    let buckets = buckets.into_buckets();
    if groups.len() == 1 {
        let (bucket, key, rows) = groups.pop().expect("one group");
        let part = PartitionRows { bucket: buckets[bucket].clone(), key: key.to_string(), rows, offset: 0 };
        return Routed { batch: whole, parts: vec![part] };
    }
    groups.sort_by_key(|(_, _, rows)| std::cmp::Reverse(rows.len()));
    let order = UInt32Array::from_iter_values(groups.iter().flat_map(|(_, _, rows)| rows.iter().copied()));
    let batch = take_batch(&whole, &order);
    let mut offset = 0;
    let parts = groups
        .into_iter()
        .map(|(bucket, key, rows)| {
            offset += rows.len();
            PartitionRows { bucket: buckets[bucket].clone(), key: key.to_string(), offset: offset - rows.len(), rows }
        })
        .collect();
    Routed { batch, parts }
}

/// The rows at `indices` of `batch` as a batch of their own: its arrays
/// hold only those rows, and its dictionaries only the values they use.
pub fn take_rows(batch: &RecordBatch, indices: &UInt32Array) -> RecordBatch {
    let taken = take_batch(batch, indices);
    let columns = taken.columns().iter().cloned().map(compact_dictionary).collect();
    RecordBatch::try_new(batch.schema(), columns).expect("same schema")
}

/// The rows at `indices` of `batch`, its dictionaries kept whole (for a
/// batch that keeps all of the request's rows, like the WAL's).
pub fn take_batch(batch: &RecordBatch, indices: &UInt32Array) -> RecordBatch {
    let columns = batch.columns().iter().map(|c| take(c.as_ref(), indices, None).expect("indices are in range"));
    RecordBatch::try_new(batch.schema(), columns.collect()).expect("same schema")
}

/// `column` with its dictionary cut to the values its rows use. `take`
/// keeps the whole request's dictionary in every part, so without this each
/// of N parts of an N-key request would carry all N keys' strings into the
/// WAL, the buffers and the flush (N² bytes).
fn compact_dictionary(column: ArrayRef) -> ArrayRef {
    let Some(dictionary) = column.as_any().downcast_ref::<DictionaryArray<Int32Type>>() else { return column };
    if dictionary.values().len() <= 1 {
        return column;
    }
    let mut new_key_of: FxHashMap<i32, i32> = FxHashMap::default();
    let mut used: Vec<u32> = Vec::new();
    let keys: Int32Array = dictionary
        .keys()
        .iter()
        .map(|key| {
            key.map(|old| {
                *new_key_of.entry(old).or_insert_with(|| {
                    used.push(old as u32);
                    used.len() as i32 - 1
                })
            })
        })
        .collect();
    if used.len() == dictionary.values().len() {
        return column;
    }
    let values = take(dictionary.values().as_ref(), &UInt32Array::from(used), None).expect("used keys are in range");
    Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).expect("every new key indexes the new values"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::Period;
    use crate::schema::ColumnKind;
    use batch::{BatchBuilder, Value};

    #[test]
    fn a_value_over_its_byte_limit_is_refused_naming_the_key() {
        let limits = IngestLimits { tag_value_bytes_max: 3, string_value_bytes_max: 4, ..IngestLimits::default() };
        assert_eq!(limits.tag_value().check("abc", || unreachable!("within the limit")), Ok(()));
        assert_eq!(
            limits.tag_value().check("abcd", || "the value".to_string()),
            Err("the value is 4 bytes; at most 3 are allowed (limits.tag_value_bytes_max)".to_string())
        );
        assert_eq!(limits.string_value().key, "limits.string_value_bytes_max");
        assert_eq!(limits.string_value().check("abcd", String::new), Ok(()));
    }

    #[test]
    fn rows_split_by_day_in_order_of_appearance() {
        let day = 86_400_000_000_000i64;
        let schema = DatasetSchema::empty("time");
        let mut builder = BatchBuilder::new(&schema, 10);
        let v = builder.column("v", ColumnKind::Float).unwrap();
        for (i, t) in [day + 1, 5, day + 2, 6, 2 * day].iter().enumerate() {
            builder.push_row(*t, &[(v, Value::Float(i as f64))]).unwrap();
        }
        let parsed = builder.finish();
        let schema = schema.evolve(&parsed.columns).unwrap().unwrap();
        let routed = route(parsed, &schema, Period::Day, None);
        let parts = &routed.parts;
        let labels: Vec<(&str, usize)> = parts.iter().map(|p| (p.bucket.label.as_str(), p.rows.len())).collect();
        assert_eq!(labels, vec![("1970-01-02", 2), ("1970-01-01", 2), ("1970-01-03", 1)]);
        let rows: Vec<&[u32]> = parts.iter().map(|p| p.rows.as_slice()).collect();
        assert_eq!(rows, [&[0, 2][..], &[1, 3], &[4]]);
        assert_eq!(routed.batch.schema().field(0).name(), "time");
        let values = |part| {
            routed
                .part_batch(part)
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        assert_eq!(
            [values(&parts[0]), values(&parts[1]), values(&parts[2])],
            [vec![0.0, 2.0], vec![1.0, 3.0], vec![4.0]]
        );
    }

    #[test]
    fn keys_split_partitions_within_a_bucket() {
        let schema = DatasetSchema::empty("time");
        let mut builder = BatchBuilder::new(&schema, 10);
        let v = builder.column("v", ColumnKind::Integer).unwrap();
        for i in 0..4 {
            builder.push_row(i, &[(v, Value::Integer(i))]).unwrap();
        }
        let parsed = builder.finish();
        let schema = schema.evolve(&parsed.columns).unwrap().unwrap();
        let keys: Vec<String> = ["a", "b", "a", "b"].iter().map(|s| s.to_string()).collect();
        let routed = route(parsed, &schema, Period::Day, Some(&keys));
        let parts = &routed.parts;
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].key.as_str(), parts[0].range()), ("a", 0..2));
        assert_eq!(parts[0].rows, [0, 2]);
        assert_eq!((parts[1].rows.as_slice(), parts[1].range()), (&[1, 3][..], 2..4));
    }

    #[test]
    fn each_part_carries_only_its_own_dictionary_values() {
        let schema = DatasetSchema::empty("time");
        let mut builder = BatchBuilder::new(&schema, 10);
        let tenant = builder.column("tenant", ColumnKind::Tag).unwrap();
        let names = ["t0", "t1", "t2", "t1", "t0", "t3"];
        for (i, name) in names.iter().enumerate() {
            builder.push_row(i as i64, &[(tenant, Value::Text(name))]).unwrap();
        }
        let parsed = builder.finish();
        let schema = schema.evolve(&parsed.columns).unwrap().unwrap();
        let keys: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let routed = route(parsed, &schema, Period::Day, Some(&keys));
        let parts = &routed.parts;
        assert_eq!(parts.iter().map(|p| p.rows.len()).collect::<Vec<_>>(), [2, 2, 1, 1], "largest first");
        for part in parts {
            let batch = routed.part_batch(part);
            let column = batch.column_by_name("tenant").unwrap();
            let dictionary = column.as_any().downcast_ref::<DictionaryArray<Int32Type>>().unwrap();
            let strings = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap();
            let strings = strings.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
            assert!(strings.iter().all(|s| s == Some(part.key.as_str())), "{} holds {strings:?}", part.key);
            assert_eq!(dictionary.values().len(), 1, "{}'s dictionary holds only its own value", part.key);
        }
    }
}
