//! Columnar accumulation of parsed rows, straight into Arrow arrays.
//!
//! Parsers resolve each value's column once and hand whole rows to
//! [`BatchBuilder::push_record`]; a row is committed entirely or not at all, so a
//! rejected line never leaves half a row behind. Each row remembers the
//! number of the record it came from, so a row refused later (by the
//! partitioner, or because its partition is sealed) can be reported by the
//! line or record number the client knows.

use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    Array, ArrayRef, BooleanBuilder, DictionaryArray, Float64Builder, Int32Array, Int64Builder, StringBuilder,
    TimestampNanosecondArray, UInt64Builder,
};
use arrow::datatypes::Int32Type;
use rustc_hash::FxHashMap;

use crate::names::{COLUMN_NAME_BYTES_MAX, ColumnNameError, check_column_name};
use crate::schema::{ColumnDef, ColumnKind, DatasetSchema};

/// One parsed value, before it is appended to its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// A string (tag or text column).
    Text(&'a str),
    /// A string that had escapes and so is owned.
    OwnedText(String),
    /// A dictionary key already resolved in the column (line-protocol series cache).
    TextKey(i32),
    /// A float.
    Float(f64),
    /// A signed integer.
    Integer(i64),
    /// An unsigned integer.
    Unsigned(u64),
    /// A boolean.
    Boolean(bool),
}

impl Value<'_> {
    /// The kind of column this value needs.
    pub fn kind(&self) -> ColumnKind {
        match self {
            Value::Text(_) | Value::OwnedText(_) | Value::TextKey(_) => ColumnKind::Text,
            Value::Float(_) => ColumnKind::Float,
            Value::Integer(_) => ColumnKind::Integer,
            Value::Unsigned(_) => ColumnKind::Unsigned,
            Value::Boolean(_) => ColumnKind::Boolean,
        }
    }
}

/// A dictionary-encoded string column under construction.
///
/// Values are found by their 64-bit hash, and a hit is confirmed against
/// the value already in the dictionary: no value is copied into a key of
/// its own, and growing the table moves hashes instead of re-hashing text.
/// A value whose hash an earlier, different value holds goes to `collided`.
#[derive(Debug)]
pub struct TextBuilder {
    by_hash: FxHashMap<u64, i32>,
    collided: FxHashMap<Box<str>, i32>,
    values: StringBuilder,
    keys: Vec<i32>,
    validity: NullBufferBuilder,
}

impl Default for TextBuilder {
    fn default() -> TextBuilder {
        TextBuilder::with_capacity(0)
    }
}

impl TextBuilder {
    /// A builder with room for `capacity` rows.
    pub fn with_capacity(capacity: usize) -> TextBuilder {
        TextBuilder {
            by_hash: FxHashMap::default(),
            collided: FxHashMap::default(),
            values: StringBuilder::new(),
            keys: Vec::with_capacity(capacity),
            validity: NullBufferBuilder::new(capacity),
        }
    }

    /// The dictionary key of `text`, adding it if new.
    #[inline]
    pub fn key_of(&mut self, text: &str) -> i32 {
        self.key_with_hash(text, text_hash(text))
    }

    fn key_with_hash(&mut self, text: &str, hash: u64) -> i32 {
        let next = self.by_hash.len() as i32 + self.collided.len() as i32;
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(next);
                self.values.append_value(text);
                next
            }
            std::collections::hash_map::Entry::Occupied(slot) => {
                let key = *slot.get();
                if self.value(key) == text.as_bytes() {
                    return key;
                }
                if let Some(key) = self.collided.get(text) {
                    return *key;
                }
                self.values.append_value(text);
                self.collided.insert(text.into(), next);
                next
            }
        }
    }

    /// The bytes of the value with dictionary key `key`.
    fn value(&self, key: i32) -> &[u8] {
        let offsets = self.values.offsets_slice();
        let (start, end) = (offsets[key as usize] as usize, offsets[key as usize + 1] as usize);
        &self.values.values_slice()[start..end]
    }

    fn push_key(&mut self, key: i32) {
        self.keys.push(key);
        self.validity.append_non_null();
    }

    fn push_null(&mut self) {
        self.keys.push(0);
        self.validity.append_null();
    }

    fn finish(&mut self) -> ArrayRef {
        let keys = Int32Array::new(std::mem::take(&mut self.keys).into(), self.validity.finish());
        let values = Arc::new(self.values.finish());
        Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).expect("every key was issued by this dictionary"))
    }
}

/// The hash a [`TextBuilder`] files a value under.
#[inline]
fn text_hash(text: &str) -> u64 {
    use std::hash::BuildHasher as _;
    rustc_hash::FxBuildHasher.hash_one(text.as_bytes())
}

#[derive(Debug)]
enum ColumnData {
    Text(TextBuilder),
    Float(Float64Builder),
    Integer(Int64Builder),
    Unsigned(UInt64Builder),
    Boolean(BooleanBuilder),
}

#[derive(Debug)]
struct ColumnBuilder {
    name: String,
    kind: ColumnKind,
    len: usize,
    /// `row + 1` of the last row that validated a value for this column; catches
    /// the same column twice in one row.
    claimed_by_row: usize,
    data: ColumnData,
}

impl ColumnBuilder {
    fn new(name: &str, kind: ColumnKind, capacity: usize) -> ColumnBuilder {
        let data = match kind {
            ColumnKind::Tag | ColumnKind::Text | ColumnKind::Time => {
                ColumnData::Text(TextBuilder::with_capacity(capacity))
            }
            ColumnKind::Float => ColumnData::Float(Float64Builder::with_capacity(capacity)),
            ColumnKind::Integer => ColumnData::Integer(Int64Builder::with_capacity(capacity)),
            ColumnKind::Unsigned => ColumnData::Unsigned(UInt64Builder::with_capacity(capacity)),
            ColumnKind::Boolean => ColumnData::Boolean(BooleanBuilder::with_capacity(capacity)),
        };
        ColumnBuilder { name: name.to_string(), kind, len: 0, claimed_by_row: 0, data }
    }

    fn pad_to(&mut self, rows: usize) {
        let missing = rows - self.len;
        if missing == 0 {
            return;
        }
        match &mut self.data {
            ColumnData::Text(b) => (0..missing).for_each(|_| b.push_null()),
            ColumnData::Float(b) => b.append_nulls(missing),
            ColumnData::Integer(b) => b.append_nulls(missing),
            ColumnData::Unsigned(b) => b.append_nulls(missing),
            ColumnData::Boolean(b) => b.append_nulls(missing),
        }
        self.len = rows;
    }

    fn push(&mut self, value: &Value<'_>) {
        match (&mut self.data, value) {
            (ColumnData::Text(b), Value::Text(text)) => {
                let key = b.key_of(text);
                b.push_key(key);
            }
            (ColumnData::Text(b), Value::OwnedText(text)) => {
                let key = b.key_of(text);
                b.push_key(key);
            }
            (ColumnData::Text(b), Value::TextKey(key)) => b.push_key(*key),
            (ColumnData::Float(b), Value::Float(v)) => b.append_value(*v),
            (ColumnData::Integer(b), Value::Integer(v)) => b.append_value(*v),
            (ColumnData::Unsigned(b), Value::Unsigned(v)) => b.append_value(*v),
            (ColumnData::Boolean(b), Value::Boolean(v)) => b.append_value(*v),
            _ => unreachable!("push_row checks value kinds against the column kind"),
        }
        self.len += 1;
    }

    fn finish(&mut self) -> ArrayRef {
        match &mut self.data {
            ColumnData::Text(b) => b.finish(),
            ColumnData::Float(b) => Arc::new(b.finish()),
            ColumnData::Integer(b) => Arc::new(b.finish()),
            ColumnData::Unsigned(b) => Arc::new(b.finish()),
            ColumnData::Boolean(b) => Arc::new(b.finish()),
        }
    }
}

/// Why one row could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// The same column appears twice in one row.
    #[error("column {0:?} appears twice in one row")]
    DuplicateColumn(String),
    /// The value's kind does not match the column's stored kind.
    #[error("column {column:?} is {existing} but the value is {incoming}")]
    Conflict {
        /// The column.
        column: String,
        /// The kind already stored or seen earlier in this request.
        existing: &'static str,
        /// The kind of this value.
        incoming: &'static str,
    },
    /// The column name is not acceptable.
    #[error("{0}")]
    BadColumnName(String),
    /// The column name is longer than [`COLUMN_NAME_BYTES_MAX`].
    #[error(
        "column name {start:?}… is {bytes} bytes; at most {COLUMN_NAME_BYTES_MAX} are allowed (column_name_bytes_max)"
    )]
    NameTooLong {
        /// The name's first characters.
        start: String,
        /// Its length.
        bytes: usize,
    },
    /// The name is reserved (the time column, `_measurement`).
    #[error("column name {0:?} is reserved")]
    ReservedName(String),
    /// The request would exceed the per-dataset column limit.
    #[error("more than {0} columns")]
    TooManyColumns(usize),
}

/// The finished columns of a request.
#[derive(Debug)]
pub struct ParsedBatch {
    /// Time of each row, nanoseconds since the epoch.
    pub times: Vec<i64>,
    /// The non-time columns present in the request.
    pub columns: Vec<ColumnDef>,
    /// One array per entry of `columns`, each `times.len()` long.
    pub arrays: Vec<ArrayRef>,
    /// The 1-based number of each row's record in the body: its line for
    /// line protocol and NDJSON, its position for a JSON array. Empty when
    /// the rows were pushed without numbers (then row `i` is record `i + 1`).
    pub record_numbers: Vec<u32>,
}

impl ParsedBatch {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.times.len()
    }

    /// The 1-based record (or line) number of `row` in the request body.
    pub fn record_number(&self, row: usize) -> usize {
        self.record_numbers.get(row).map_or(row + 1, |number| *number as usize)
    }

    /// The batch without the rows whose `keep` entry is false. A column left
    /// with no value at all is dropped, as if the removed rows had never
    /// been parsed (so they cannot add columns to the schema).
    pub fn retain_rows(self, keep: &[bool]) -> ParsedBatch {
        debug_assert_eq!(keep.len(), self.rows());
        let mask = arrow::array::BooleanArray::from(keep.to_vec());
        let times = self.times.iter().zip(keep).filter(|(_, k)| **k).map(|(t, _)| *t).collect();
        let record_numbers = if self.record_numbers.is_empty() {
            Vec::new()
        } else {
            self.record_numbers.iter().zip(keep).filter(|(_, k)| **k).map(|(n, _)| *n).collect()
        };
        let mut columns = Vec::with_capacity(self.columns.len());
        let mut arrays = Vec::with_capacity(self.arrays.len());
        for (column, array) in self.columns.into_iter().zip(self.arrays) {
            let kept = arrow::compute::filter(array.as_ref(), &mask).expect("the mask has the batch's length");
            if kept.null_count() == kept.len() && !kept.is_empty() {
                continue;
            }
            columns.push(column);
            arrays.push(kept);
        }
        ParsedBatch { times, columns, arrays, record_numbers }
    }

    /// The time column as an Arrow array.
    pub fn time_array(&mut self) -> TimestampNanosecondArray {
        TimestampNanosecondArray::from(std::mem::take(&mut self.times))
    }
}

/// Builds one [`ParsedBatch`] from rows.
#[derive(Debug)]
pub struct BatchBuilder<'s> {
    schema: &'s DatasetSchema,
    /// Rows expected, so columns allocate once.
    capacity: usize,
    columns_max: usize,
    times: Vec<i64>,
    /// Record number of each row pushed with [`Self::push_record`].
    numbers: Vec<u32>,
    columns: Vec<ColumnBuilder>,
    by_name: FxHashMap<String, usize>,
    /// The columns of the last row added, in its order. A row naming the
    /// same columns in the same order holds no column twice and finds each
    /// exactly one value short, so it is added without claims or padding.
    last_columns: Vec<usize>,
}

impl<'s> BatchBuilder<'s> {
    /// A builder that resolves kinds against `schema` (a snapshot) and allows at
    /// most `columns_max` non-time columns in the dataset.
    #[cfg(test)]
    pub fn new(schema: &'s DatasetSchema, columns_max: usize) -> BatchBuilder<'s> {
        BatchBuilder::with_capacity(schema, columns_max, 0)
    }

    /// A builder expecting about `capacity` rows.
    pub fn with_capacity(schema: &'s DatasetSchema, columns_max: usize, capacity: usize) -> BatchBuilder<'s> {
        BatchBuilder {
            schema,
            capacity,
            columns_max,
            times: Vec::with_capacity(capacity),
            numbers: Vec::with_capacity(capacity),
            columns: Vec::new(),
            by_name: FxHashMap::default(),
            last_columns: Vec::new(),
        }
    }

    /// The name of the dataset's time column.
    pub fn time_column(&self) -> &str {
        &self.schema.time_column
    }

    /// The stored kind of `name`, for parsers that coerce (JSON numbers).
    pub fn known_kind(&self, name: &str) -> Option<ColumnKind> {
        match self.by_name.get(name) {
            Some(index) => Some(self.columns[*index].kind),
            None => self.schema.kind_of(name),
        }
    }

    /// The index of column `name` for values of `kind`, creating it if new.
    pub fn column(&mut self, name: &str, kind: ColumnKind) -> Result<usize, RowError> {
        if let Some(index) = self.by_name.get(name) {
            let existing = self.columns[*index].kind;
            if !existing.accepts(kind) {
                return Err(RowError::Conflict {
                    column: name.to_string(),
                    existing: existing.as_str(),
                    incoming: kind.as_str(),
                });
            }
            return Ok(*index);
        }
        if name == self.schema.time_column || name == crate::ingest::MEASUREMENT_COLUMN {
            return Err(RowError::ReservedName(name.to_string()));
        }
        check_column_name(name).map_err(|error| match error {
            // A long name breaks a limit: the request says which name by its start.
            ColumnNameError::TooLong(bytes) => RowError::NameTooLong { start: name.chars().take(32).collect(), bytes },
            other => RowError::BadColumnName(other.to_string()),
        })?;
        let stored = self.schema.kind_of(name);
        if let Some(existing) = stored
            && !existing.accepts(kind)
        {
            return Err(RowError::Conflict {
                column: name.to_string(),
                existing: existing.as_str(),
                incoming: kind.as_str(),
            });
        }
        if stored.is_none() {
            let new_columns = self.columns.iter().filter(|c| self.schema.kind_of(&c.name).is_none()).count();
            if self.schema.columns.len() + new_columns + 1 > self.columns_max {
                return Err(RowError::TooManyColumns(self.columns_max));
            }
        }
        // Keep the stored kind (a text value into a tag column stays a tag).
        let kind = stored.unwrap_or(kind);
        let index = self.columns.len();
        self.columns.push(ColumnBuilder::new(name, kind, self.capacity));
        self.by_name.insert(name.to_string(), index);
        Ok(index)
    }

    /// Creates the `_measurement`-style column that parsers may write even
    /// though users may not name it.
    pub fn internal_column(&mut self, name: &str, kind: ColumnKind) -> Result<usize, RowError> {
        if let Some(index) = self.by_name.get(name) {
            return Ok(*index);
        }
        if let Some(existing) = self.schema.kind_of(name)
            && !existing.accepts(kind)
        {
            return Err(RowError::Conflict {
                column: name.to_string(),
                existing: existing.as_str(),
                incoming: kind.as_str(),
            });
        }
        let index = self.columns.len();
        self.columns.push(ColumnBuilder::new(name, self.schema.kind_of(name).unwrap_or(kind), self.capacity));
        self.by_name.insert(name.to_string(), index);
        Ok(index)
    }

    /// The name of column `index`.
    pub fn column_name(&self, index: usize) -> &str {
        &self.columns[index].name
    }

    /// Whether column `index` stores values of `kind`.
    pub fn column_accepts(&self, index: usize, kind: ColumnKind) -> bool {
        self.columns[index].kind.accepts(kind)
    }

    /// The dictionary of a text column, for parsers that cache resolved keys.
    pub fn text_key(&mut self, column: usize, text: &str) -> i32 {
        match &mut self.columns[column].data {
            ColumnData::Text(builder) => builder.key_of(text),
            _ => panic!("text_key on a non-text column"),
        }
    }

    /// Adds one row. `values` pairs column indexes from [`Self::column`] with
    /// values of a kind the column accepts. Either the whole row is added or,
    /// on error, nothing.
    pub fn push_row(&mut self, time_ns: i64, values: &[(usize, Value<'_>)]) -> Result<(), RowError> {
        if self.same_columns_as_last_row(values) {
            for (index, value) in values {
                let column = &mut self.columns[*index];
                debug_assert_eq!(column.len, self.times.len());
                column.push(value);
            }
            self.times.push(time_ns);
            return Ok(());
        }
        self.push_row_checked(time_ns, values)?;
        self.last_columns.clear();
        self.last_columns.extend(values.iter().map(|(index, _)| *index));
        Ok(())
    }

    /// Whether `values` name the columns of the last row in its order, each
    /// with a value of a kind it accepts.
    #[inline]
    fn same_columns_as_last_row(&self, values: &[(usize, Value<'_>)]) -> bool {
        values.len() == self.last_columns.len()
            && values
                .iter()
                .zip(&self.last_columns)
                .all(|((index, value), last)| *index == *last && self.columns[*index].kind.accepts(value.kind()))
    }

    /// [`Self::push_row`] for any row: claims each column (refusing one
    /// named twice), checks kinds, then pads and appends.
    fn push_row_checked(&mut self, time_ns: i64, values: &[(usize, Value<'_>)]) -> Result<(), RowError> {
        let row = self.times.len();
        for (index, value) in values {
            let column = &mut self.columns[*index];
            if column.claimed_by_row == row + 1 {
                // Undo the claims of this row so a later row is unaffected.
                for (other, _) in values {
                    if self.columns[*other].claimed_by_row == row + 1 {
                        self.columns[*other].claimed_by_row = 0;
                    }
                }
                return Err(RowError::DuplicateColumn(self.columns[*index].name.clone()));
            }
            column.claimed_by_row = row + 1;
            let kind = value.kind();
            if !column.kind.accepts(kind) {
                let error = RowError::Conflict {
                    column: column.name.clone(),
                    existing: column.kind.as_str(),
                    incoming: kind.as_str(),
                };
                for (other, _) in values {
                    if self.columns[*other].claimed_by_row == row + 1 {
                        self.columns[*other].claimed_by_row = 0;
                    }
                }
                return Err(error);
            }
        }
        for (index, value) in values {
            let column = &mut self.columns[*index];
            column.pad_to(row);
            column.push(value);
        }
        self.times.push(time_ns);
        Ok(())
    }

    /// Adds one row, like [`Self::push_row`], that came from record (or
    /// line) `number` of the body (1-based).
    pub fn push_record(&mut self, number: usize, time_ns: i64, values: &[(usize, Value<'_>)]) -> Result<(), RowError> {
        self.push_row(time_ns, values)?;
        self.numbers.push(u32::try_from(number).unwrap_or(u32::MAX));
        Ok(())
    }

    /// Finishes the batch: every column padded with nulls to the row count.
    pub fn finish(mut self) -> ParsedBatch {
        let rows = self.times.len();
        let mut columns = Vec::with_capacity(self.columns.len());
        let mut arrays = Vec::with_capacity(self.columns.len());
        for column in &mut self.columns {
            if column.len == 0 && rows > 0 {
                // Created by a line that was then rejected: no value ever arrived.
                continue;
            }
            column.pad_to(rows);
            let array = column.finish();
            debug_assert_eq!(array.len(), rows);
            columns.push(ColumnDef { name: column.name.clone(), kind: column.kind });
            arrays.push(array);
        }
        // Numbers are all-or-nothing: a batch built with `push_row` has none.
        let record_numbers = if self.numbers.len() == rows { self.numbers } else { Vec::new() };
        ParsedBatch { times: self.times, columns, arrays, record_numbers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array};

    /// Keys are issued in first-seen order and values come back as given,
    /// as a plain map of owned strings issues them, also when values share
    /// a hash (forced here by filing every value under one of 3 hashes).
    #[test]
    fn dictionary_keys_agree_with_a_map_of_strings_even_when_hashes_collide() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(4);
        let texts: Vec<String> = (0..20_000)
            .map(|_| match rng.random_range(0..4) {
                0 => String::new(),
                1 => format!("host_{}", rng.random_range(0..5_000)),
                2 => format!("é{}", rng.random_range(0..50)),
                _ => "x".repeat(rng.random_range(1..40)),
            })
            .collect();
        for forced in [false, true] {
            let mut builder = TextBuilder::default();
            let mut reference: std::collections::HashMap<&str, i32> = std::collections::HashMap::new();
            for text in &texts {
                let next = reference.len() as i32;
                let want = *reference.entry(text.as_str()).or_insert(next);
                let got = if forced { builder.key_with_hash(text, text_hash(text) % 3) } else { builder.key_of(text) };
                assert_eq!(got, want, "{text:?}");
                builder.push_key(got);
            }
            let array = builder.finish();
            let dict = array.as_dictionary::<Int32Type>();
            let values = dict.values().as_string::<i32>();
            assert_eq!(values.len(), reference.len());
            for (key, text) in dict.keys().values().iter().zip(&texts) {
                assert_eq!(values.value(*key as usize), text);
            }
        }
    }

    #[test]
    fn rows_are_padded_with_nulls() {
        let schema = DatasetSchema::empty("time");
        let mut builder = BatchBuilder::new(&schema, 10);
        let host = builder.column("host", ColumnKind::Tag).unwrap();
        let cpu = builder.column("cpu", ColumnKind::Float).unwrap();
        builder.push_row(1, &[(host, Value::Text("a")), (cpu, Value::Float(1.5))]).unwrap();
        builder.push_row(2, &[(host, Value::Text("b"))]).unwrap();
        builder.push_row(3, &[(cpu, Value::Float(3.0)), (host, Value::Text("a"))]).unwrap();
        let batch = builder.finish();
        assert_eq!(batch.rows(), 3);
        let cpu = batch.arrays[1].as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(cpu.iter().collect::<Vec<_>>(), vec![Some(1.5), None, Some(3.0)]);
        let host = batch.arrays[0].as_dictionary::<Int32Type>();
        assert_eq!(host.values().len(), 2, "repeated strings share a dictionary entry");
    }

    #[test]
    fn a_bad_row_leaves_nothing_behind() {
        let schema = DatasetSchema::empty("time");
        let mut builder = BatchBuilder::new(&schema, 10);
        let a = builder.column("a", ColumnKind::Float).unwrap();
        let b = builder.column("b", ColumnKind::Integer).unwrap();
        builder.push_row(1, &[(a, Value::Float(1.0))]).unwrap();
        let duplicate = builder.push_row(2, &[(b, Value::Integer(1)), (a, Value::Float(2.0)), (a, Value::Float(3.0))]);
        assert_eq!(duplicate, Err(RowError::DuplicateColumn("a".into())));
        let conflict = builder.push_row(2, &[(b, Value::Float(2.0))]);
        assert!(matches!(conflict, Err(RowError::Conflict { .. })));
        builder.push_row(3, &[(b, Value::Integer(7)), (a, Value::Float(4.0))]).unwrap();
        let batch = builder.finish();
        assert_eq!(batch.times, vec![1, 3]);
    }

    /// Rows built by the fast path of `push_row` equal the same rows built
    /// by the checked path alone: random rows over a few columns, some
    /// repeating the previous row's columns, some with a column twice or a
    /// value of the wrong kind.
    #[test]
    fn repeated_layouts_build_what_the_checked_path_builds() {
        let schema = DatasetSchema::empty("time");
        let mut fast = BatchBuilder::new(&schema, 10);
        let mut checked = BatchBuilder::new(&schema, 10);
        let kinds = [ColumnKind::Tag, ColumnKind::Float, ColumnKind::Integer, ColumnKind::Float];
        for (i, kind) in kinds.iter().enumerate() {
            assert_eq!(fast.column(&format!("c{i}"), *kind).unwrap(), i);
            assert_eq!(checked.column(&format!("c{i}"), *kind).unwrap(), i);
        }
        let texts = ["a", "b", "c"];
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(4);
        let mut layout: Vec<usize> = vec![0, 1];
        for time in 0..5_000 {
            if rand::Rng::random_range(&mut rng, 0..4) == 0 {
                layout = (0..kinds.len()).collect();
                rand::seq::SliceRandom::shuffle(layout.as_mut_slice(), &mut rng);
                layout.truncate(rand::Rng::random_range(&mut rng, 0..=kinds.len()));
                if !layout.is_empty() && rand::Rng::random_range(&mut rng, 0..10) == 0 {
                    layout.push(layout[0]);
                }
            }
            let values: Vec<(usize, Value<'_>)> = layout
                .iter()
                .map(|column| {
                    let wrong = rand::Rng::random_range(&mut rng, 0..50) == 0;
                    let value = match (kinds[*column], wrong) {
                        (ColumnKind::Tag, false) => Value::Text(texts[rand::Rng::random_range(&mut rng, 0..3)]),
                        (ColumnKind::Integer, false) => Value::Integer(rand::Rng::random_range(&mut rng, 0..9)),
                        (_, false) => Value::Float(rand::Rng::random_range(&mut rng, 0.0..1.0)),
                        (_, true) => Value::Boolean(true),
                    };
                    (*column, value)
                })
                .collect();
            let a = fast.push_row(time, &values);
            let b = checked.push_row_checked(time, &values);
            assert_eq!(a, b, "row {time}: {values:?}");
        }
        let (fast, checked) = (fast.finish(), checked.finish());
        assert!(fast.rows() > 3_000, "most rows are accepted");
        assert_eq!(fast.times, checked.times);
        assert_eq!(fast.columns, checked.columns);
        for (a, b) in fast.arrays.iter().zip(&checked.arrays) {
            assert_eq!(a.as_ref(), b.as_ref());
        }
    }

    #[test]
    fn stored_kinds_win_and_limits_hold() {
        let schema = DatasetSchema::empty("time")
            .evolve(&[ColumnDef { name: "x".into(), kind: ColumnKind::Integer }])
            .unwrap()
            .unwrap();
        let mut builder = BatchBuilder::new(&schema, 2);
        assert!(matches!(builder.column("x", ColumnKind::Float), Err(RowError::Conflict { .. })));
        assert!(builder.column("y", ColumnKind::Float).is_ok());
        assert_eq!(builder.column("z", ColumnKind::Float), Err(RowError::TooManyColumns(2)));
        assert_eq!(builder.column("time", ColumnKind::Float), Err(RowError::ReservedName("time".into())));
    }
}
