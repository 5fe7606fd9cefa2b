//! The compact form of a buffered chunk: each column encoded once when the
//! rows are buffered and decoded back to Arrow when they are read (query,
//! flush, delete).
//!
//! - dictionary text: the dictionary's used values once, keys bit-packed;
//! - floats: decimal scaling (the smallest exponent `e ≤ 10` for which every
//!   value `v` is exactly `m / 10^e` for an integer `m`), then the integers;
//!   a column where any value does not round-trip (NaN, -0.0, ±inf, too many
//!   digits) stays as it is;
//! - 64-bit integers, unsigned integers and times: frame of reference (the
//!   minimum), divided by the greatest common divisor of the offsets, then
//!   bit-packed at the width of the largest;
//! - anything else (booleans are already a bitmap) stays as it is.
//!
//! **Invariant:** `unpack` gives arrays equal to the packed ones — same
//! types, same nulls, the same bits in every valid slot (a dictionary may
//! lose values no row used) — and a packed column is never larger than the
//! column it came from (else that column stays as it is).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, DictionaryArray, Float64Array, Int32Array, StringArray, make_array,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Float64Type, Int32Type, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

/// The largest decimal exponent tried for floats.
const EXPONENT_MAX: usize = 10;
const POWERS_OF_TEN: [f64; EXPONENT_MAX + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
/// `1.5 · 2^52`: adding and subtracting it rounds an `f64` below 2^51 in
/// magnitude to an integer.
const ROUNDER: f64 = 6_755_399_441_055_744.0;
/// Scaled floats must stay below this magnitude (exact in `f64` and `i64`).
const SCALED_MAX: f64 = 2_251_799_813_685_248.0;

/// One request's rows for one partition, packed.
#[derive(Debug)]
pub struct PackedBatch {
    schema: SchemaRef,
    rows: usize,
    columns: Vec<Column>,
    bytes: u64,
    unpacked_bytes: u64,
}

#[derive(Debug)]
enum Column {
    /// Kept as it came.
    Plain(ArrayRef),
    /// Floats `m / 10^exponent`.
    Decimal { exponent: u8, ints: Ints, nulls: Option<NullBuffer> },
    /// 64-bit integers of any 8-byte primitive type.
    Integer { data_type: DataType, ints: Ints, nulls: Option<NullBuffer> },
    /// `Dictionary(Int32, Utf8)`.
    Text { keys: Ints, nulls: Option<NullBuffer>, values: Arc<StringArray> },
}

/// Integers as `base + step · n`, `n` bit-packed at `width` bits (wrapping
/// arithmetic, so signed and unsigned both fit).
#[derive(Debug)]
struct Ints {
    base: u64,
    step: u64,
    width: u32,
    words: Box<[u64]>,
}

impl PackedBatch {
    /// Packs a batch.
    pub fn pack(batch: &RecordBatch) -> PackedBatch {
        let columns: Vec<Column> = batch.columns().iter().map(pack_column).collect();
        let bytes = (size_of::<PackedBatch>() + columns.iter().map(Column::bytes).sum::<usize>()) as u64;
        PackedBatch {
            schema: batch.schema(),
            rows: batch.num_rows(),
            columns,
            bytes,
            unpacked_bytes: batch.get_array_memory_size() as u64,
        }
    }

    /// The rows as Arrow again.
    pub fn unpack(&self) -> RecordBatch {
        self.unpack_range(0, self.rows)
    }

    /// Rows `start..start + len` as Arrow, decoding only those. A packed
    /// text column's range of fewer rows than the chunk keeps only the
    /// dictionary values its rows use (a chunk shared by many partitions
    /// holds all their values); a column kept as it came is sliced.
    ///
    /// Panics when the range is out of bounds.
    pub fn unpack_range(&self, start: usize, len: usize) -> RecordBatch {
        assert!(start + len <= self.rows, "rows {start}..{} of a chunk of {}", start + len, self.rows);
        let whole = start == 0 && len == self.rows;
        let columns = self.columns.iter().map(|c| c.unpack(start, len, whole)).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(len));
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .expect("unpacked columns keep their types and row count")
    }

    /// Rows held.
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// Memory held, in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Memory the rows take as Arrow (what `unpack` allocates), in bytes.
    pub fn unpacked_bytes(&self) -> u64 {
        self.unpacked_bytes
    }
}

/// Packs one column, keeping it as it is when packing would not shrink it.
fn pack_column(array: &ArrayRef) -> Column {
    let packed = match array.data_type() {
        DataType::Float64 => pack_floats(array.as_primitive::<Float64Type>()),
        DataType::Dictionary(key, value) if **key == DataType::Int32 && **value == DataType::Utf8 => {
            pack_text(array.as_dictionary::<Int32Type>())
        }
        data_type if is_integer_like(data_type) => pack_integers(array),
        _ => None,
    };
    match packed {
        Some(column) if column.bytes() < array.get_array_memory_size() => column,
        _ => Column::Plain(array.clone()),
    }
}

/// Types whose values are one 8-byte integer each.
fn is_integer_like(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int64
            | DataType::UInt64
            | DataType::Timestamp(..)
            | DataType::Date64
            | DataType::Time64(_)
            | DataType::Duration(_)
    )
}

fn pack_integers(array: &ArrayRef) -> Option<Column> {
    let data = array.to_data();
    let values: ScalarBuffer<i64> = ScalarBuffer::new(data.buffers()[0].clone(), data.offset(), data.len());
    let nulls = array.nulls().filter(|n| n.null_count() > 0).cloned();
    let unsigned = *array.data_type() == DataType::UInt64;
    let ints = Ints::pack(&values, nulls.as_ref(), unsigned, true);
    Some(Column::Integer { data_type: array.data_type().clone(), ints, nulls })
}

fn pack_floats(array: &Float64Array) -> Option<Column> {
    let nulls = array.nulls().filter(|n| n.null_count() > 0).cloned();
    let values = array.values();
    let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
    let first: Vec<f64> = (0..values.len()).filter(|i| valid(*i)).take(8).map(|i| values[i]).collect();
    let mut exponent = first.iter().map(|v| exponent_of(*v)).try_fold(0, |e, f| f.map(|f| f.max(e)))?;
    let mut scaled = vec![0i64; values.len()];
    // A value needing a larger exponent restarts the column; a few restarts
    // at most, since each raises the exponent.
    'attempt: loop {
        let power = POWERS_OF_TEN[exponent];
        for (i, v) in values.iter().enumerate() {
            match scale(*v, power) {
                Some(m) => scaled[i] = m,
                None if !valid(i) => scaled[i] = 0,
                None => match exponent_of(*v) {
                    Some(e) if e > exponent => {
                        exponent = e;
                        continue 'attempt;
                    }
                    _ => return None,
                },
            }
        }
        break;
    }
    let ints = Ints::pack(&scaled, nulls.as_ref(), false, false);
    Some(Column::Decimal { exponent: exponent as u8, ints, nulls })
}

/// `v · power` as an integer `m` with `m / power == v` bit for bit.
#[inline]
fn scale(v: f64, power: f64) -> Option<i64> {
    let x = v * power;
    if x.is_nan() || x.abs() >= SCALED_MAX {
        return None;
    }
    let m = (x + ROUNDER) - ROUNDER;
    ((m / power).to_bits() == v.to_bits()).then_some(m as i64)
}

/// The smallest decimal exponent at which `v` round-trips.
fn exponent_of(v: f64) -> Option<usize> {
    POWERS_OF_TEN.iter().position(|p| scale(v, *p).is_some())
}

fn pack_text(array: &DictionaryArray<Int32Type>) -> Option<Column> {
    let values = array.values().as_string_opt::<i32>()?;
    if values.null_count() > 0 {
        return None;
    }
    let keys = array.keys();
    let nulls = keys.nulls().filter(|n| n.null_count() > 0).cloned();
    // Only the values some row uses are kept (the dictionary of a request
    // split over partitions is shared by all of them).
    let (keys, values) = used_values::<i64>(keys.values().iter().copied(), &nulls, values);
    let keys = Ints::pack(&keys, None, false, false);
    Some(Column::Text { keys, nulls, values })
}

impl Column {
    fn bytes(&self) -> usize {
        let nulls = |n: &Option<NullBuffer>| n.as_ref().map_or(0, |n| n.buffer().capacity());
        size_of::<Column>()
            + match self {
                Column::Plain(array) => array.get_array_memory_size(),
                Column::Decimal { ints, nulls: n, .. } | Column::Integer { ints, nulls: n, .. } => {
                    ints.bytes() + nulls(n)
                }
                Column::Text { keys, nulls: n, values, .. } => keys.bytes() + nulls(n) + values.get_array_memory_size(),
            }
    }

    /// Rows `start..start + len`; `whole` when that is every row.
    fn unpack(&self, start: usize, len: usize, whole: bool) -> ArrayRef {
        let sliced = |n: &Option<NullBuffer>| n.as_ref().map(|n| n.slice(start, len)).filter(|n| n.null_count() > 0);
        match self {
            Column::Plain(array) if whole => array.clone(),
            Column::Plain(array) => array.slice(start, len),
            Column::Decimal { exponent, ints, nulls } => {
                let power = POWERS_OF_TEN[*exponent as usize];
                let values: Vec<f64> = ints.unpack(start, len).into_iter().map(|m| m as i64 as f64 / power).collect();
                Arc::new(Float64Array::new(values.into(), sliced(nulls)))
            }
            Column::Integer { data_type, ints, nulls } => {
                let values = Buffer::from_vec(ints.unpack(start, len));
                let data = ArrayData::builder(data_type.clone()).len(len).add_buffer(values).nulls(sliced(nulls));
                make_array(data.build().expect("an 8-byte value per row"))
            }
            Column::Text { keys, nulls, values } => {
                let nulls = sliced(nulls);
                let keys = keys.unpack(start, len).into_iter().map(|k| k as i32);
                let (keys, values) =
                    if whole { (keys.collect(), values.clone()) } else { used_values::<i32>(keys, &nulls, values) };
                let keys = Int32Array::new(keys.into(), nulls);
                let values: ArrayRef = values;
                Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).expect("keys index the kept values"))
            }
        }
    }
}

/// `keys` renumbered over only the `values` a valid row uses, in order of
/// first use (a null row's key is 0), and those values.
fn used_values<K: From<i32>>(
    keys: impl ExactSizeIterator<Item = i32>,
    nulls: &Option<NullBuffer>,
    values: &StringArray,
) -> (Vec<K>, Arc<StringArray>) {
    let mut renumbered = vec![-1i32; values.len()];
    let mut kept: Vec<usize> = Vec::new();
    let mut new_keys = Vec::with_capacity(keys.len());
    for (i, key) in keys.enumerate() {
        if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            new_keys.push(K::from(0));
            continue;
        }
        let slot = &mut renumbered[key as usize];
        if *slot < 0 {
            *slot = kept.len() as i32;
            kept.push(key as usize);
        }
        new_keys.push(K::from(*slot));
    }
    let mut text = Vec::with_capacity(kept.iter().map(|k| values.value(*k).len()).sum());
    let mut offsets = Vec::with_capacity(kept.len() + 1);
    offsets.push(0i32);
    for k in &kept {
        text.extend_from_slice(values.value(*k).as_bytes());
        offsets.push(text.len() as i32);
    }
    (new_keys, Arc::new(StringArray::new(OffsetBuffer::new(offsets.into()), Buffer::from_vec(text), None)))
}

impl Ints {
    /// Packs `values` (null slots ignored). `unsigned` orders them as `u64`;
    /// `divide` looks for a common step.
    fn pack(values: &[i64], nulls: Option<&NullBuffer>, unsigned: bool, divide: bool) -> Ints {
        let valid = |i: usize| nulls.is_none_or(|n| n.is_valid(i));
        let key = |v: i64| if unsigned { v as u64 } else { (v as u64) ^ (1 << 63) };
        let (mut low, mut high) = (u64::MAX, 0u64);
        for (i, v) in values.iter().enumerate() {
            if nulls.is_none() || valid(i) {
                let k = key(*v);
                low = low.min(k);
                high = high.max(k);
            }
        }
        if low > high {
            return Ints { base: 0, step: 1, width: 0, words: Box::new([]) };
        }
        let base = if unsigned { low } else { low ^ (1 << 63) };
        let mut offsets: Vec<u64> =
            values.iter().enumerate().map(|(i, v)| if valid(i) { (*v as u64).wrapping_sub(base) } else { 0 }).collect();
        let mut step = 1;
        if divide {
            step = offsets.iter().fold(0, |g, o| if g == 1 { 1 } else { gcd(g, *o) }).max(1);
            if step > 1 {
                offsets.iter_mut().for_each(|o| *o /= step);
            }
        }
        let width = 64 - ((high - low) / step).leading_zeros();
        Ints { base, step, width, words: pack_bits(&offsets, width) }
    }

    /// Values `start..start + len`.
    fn unpack(&self, start: usize, len: usize) -> Vec<u64> {
        let mut out = unpack_bits(&self.words, self.width, start, len);
        if self.step != 1 {
            out.iter_mut().for_each(|n| *n = n.wrapping_mul(self.step));
        }
        out.iter_mut().for_each(|n| *n = n.wrapping_add(self.base));
        out
    }

    fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `values` at `width` bits each, little-endian within 64-bit words.
fn pack_bits(values: &[u64], width: u32) -> Box<[u64]> {
    let width = width as usize;
    let mut words = vec![0u64; (values.len() * width).div_ceil(64)];
    if width == 0 {
        return words.into();
    }
    let mut bit = 0;
    for v in values {
        let (word, shift) = (bit / 64, bit % 64);
        words[word] |= v << shift;
        if shift + width > 64 {
            words[word + 1] |= v >> (64 - shift);
        }
        bit += width;
    }
    words.into()
}

/// Values `start..start + len` of [`pack_bits`]' `words`.
fn unpack_bits(words: &[u64], width: u32, start: usize, len: usize) -> Vec<u64> {
    let width = width as usize;
    if width == 0 {
        return vec![0; len];
    }
    let mask = if width == 64 { u64::MAX } else { (1 << width) - 1 };
    (start..start + len)
        .map(|i| {
            let bit = i * width;
            let (word, shift) = (bit / 64, bit % 64);
            let mut v = words[word] >> shift;
            if shift + width > 64 {
                v |= words[word + 1] << (64 - shift);
            }
            v & mask
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Int64Array, StringDictionaryBuilder, TimestampNanosecondArray, UInt32Array, UInt64Array,
    };
    use arrow::datatypes::{Field, Schema};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Odd floats: each makes decimal scaling impossible for its column.
    const ODD: [f64; 9] =
        [f64::NAN, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN, f64::MIN_POSITIVE, 5e-324, 0.1 + 0.2];

    fn nullable<T>(rng: &mut StdRng, rows: usize, null_share: f64, value: impl Fn(&mut StdRng) -> T) -> Vec<Option<T>> {
        (0..rows).map(|_| if rng.random_bool(null_share) { None } else { Some(value(rng)) }).collect()
    }

    fn text(rng: &mut StdRng, rows: usize, distinct: usize, null_share: f64) -> ArrayRef {
        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
        for _ in 0..rows {
            if rng.random_bool(null_share) {
                builder.append_null();
            } else {
                let n = rng.random_range(0..distinct);
                // Value 0 is the empty string.
                builder.append_value(if n == 0 { String::new() } else { format!("host_{n}") });
            }
        }
        Arc::new(builder.finish())
    }

    /// A batch with every column kind the buffers receive, nulls in most.
    fn random_batch(rng: &mut StdRng, rows: usize, distinct: usize) -> RecordBatch {
        let start = rng.random_range(0..1_i64 << 60);
        let times: Vec<i64> = (0..rows as i64).map(|i| start + i / 7 * 10_000_000_000).collect();
        let null_share = if rng.random_bool(0.5) { 0.0 } else { 0.2 };
        let walk = nullable(rng, rows, null_share, |r| (r.random_range(0..10_000) as f64) / 100.0);
        let odd = nullable(rng, rows, null_share, |r| {
            if r.random_bool(0.1) { ODD[r.random_range(0..ODD.len())] } else { r.random_range(-1e6..1e6) }
        });
        let whole = nullable(rng, rows, null_share, |r| r.random_range(-1000..1000) as f64);
        let ints = nullable(rng, rows, null_share, |r| match r.random_range(0..4) {
            0 => i64::MIN,
            1 => i64::MAX,
            _ => r.random::<i64>(),
        });
        let small = nullable(rng, rows, null_share, |r| r.random_range(-5..5_i64));
        let unsigned = nullable(rng, rows, null_share, |r| if r.random_bool(0.5) { u64::MAX } else { r.random() });
        let flags = nullable(rng, rows, null_share, |r| r.random_bool(0.5));
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("time", Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC"))),
            ("host", text(rng, rows, distinct, null_share)),
            ("walk", Arc::new(Float64Array::from(walk))),
            ("odd", Arc::new(Float64Array::from(odd))),
            ("whole", Arc::new(Float64Array::from(whole))),
            ("ints", Arc::new(Int64Array::from(ints))),
            ("small", Arc::new(Int64Array::from(small))),
            ("unsigned", Arc::new(UInt64Array::from(unsigned))),
            ("flags", Arc::new(BooleanArray::from(flags))),
        ];
        let fields: Vec<Field> =
            columns.iter().map(|(name, a)| Field::new(*name, a.data_type().clone(), *name != "time")).collect();
        let arrays = columns.into_iter().map(|(_, a)| a).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }

    fn assert_round_trip(batch: &RecordBatch) -> PackedBatch {
        let packed = PackedBatch::pack(batch);
        let unpacked = packed.unpack();
        assert_eq!(unpacked.schema(), batch.schema());
        assert_eq!(unpacked.num_rows(), batch.num_rows());
        for (i, (got, want)) in unpacked.columns().iter().zip(batch.columns()).enumerate() {
            assert_eq!(got.data_type(), want.data_type(), "column {i}");
            assert_eq!(got.logical_nulls(), want.logical_nulls(), "nulls of column {i}");
            // Arrow compares primitive values byte for byte: NaN, -0.0 and
            // every other float must come back with the same bits.
            assert_eq!(got.to_data(), want.to_data(), "column {i}");
        }
        let header = size_of::<PackedBatch>() + batch.num_columns() * size_of::<Column>();
        assert!(
            packed.bytes() <= batch.get_array_memory_size() as u64 + header as u64,
            "packing grew a chunk from {} to {} bytes",
            batch.get_array_memory_size(),
            packed.bytes()
        );
        packed
    }

    #[test]
    fn random_batches_come_back_bit_for_bit() {
        let mut rng = StdRng::seed_from_u64(15);
        for rows in [1, 2, 3, 63, 64, 65, 1000, 5000] {
            for distinct in [1, 2, 100, 300] {
                assert_round_trip(&random_batch(&mut rng, rows, distinct));
            }
        }
    }

    #[test]
    fn large_dictionaries_come_back() {
        let mut rng = StdRng::seed_from_u64(16);
        assert_round_trip(&random_batch(&mut rng, 20_000, 1_000));
        assert_round_trip(&random_batch(&mut rng, 200_000, 100_000));
    }

    #[test]
    fn empty_and_all_null_columns_come_back() {
        let mut rng = StdRng::seed_from_u64(17);
        assert_round_trip(&random_batch(&mut rng, 0, 1));
        let nulls: Vec<(&str, ArrayRef)> = vec![
            ("f", Arc::new(Float64Array::from(vec![None; 70]))),
            ("i", Arc::new(Int64Array::from(vec![None; 70]))),
            ("t", text(&mut rng, 70, 5, 1.0)),
        ];
        assert_round_trip(
            &RecordBatch::try_from_iter_with_nullable(nulls.into_iter().map(|(n, a)| (n, a, true))).unwrap(),
        );
    }

    #[test]
    fn a_single_odd_float_keeps_its_column_exact() {
        for odd in ODD {
            let mut values: Vec<f64> = (0..500).map(|i| i as f64 / 4.0).collect();
            values[321] = odd;
            let batch = RecordBatch::try_from_iter([("v", Arc::new(Float64Array::from(values)) as ArrayRef)]).unwrap();
            assert_round_trip(&batch);
        }
    }

    #[test]
    fn a_partition_of_a_split_request_keeps_only_the_values_it_uses() {
        let mut rng = StdRng::seed_from_u64(18);
        let whole = random_batch(&mut rng, 5000, 5000);
        let indices = UInt32Array::from((0..5000).step_by(100).collect::<Vec<u32>>());
        let columns = whole.columns().iter().map(|c| arrow::compute::take(c, &indices, None).unwrap()).collect();
        let part = RecordBatch::try_new(whole.schema(), columns).unwrap();
        let packed = assert_round_trip(&part);
        assert!(packed.bytes() < 8_000, "50 rows of a 5,000-value dictionary hold {} bytes", packed.bytes());
    }

    /// The benchmark's rows: 100 hosts with 10 tags each, 10 fields that
    /// are random walks printed with 2 decimals, a row every 10 s per host.
    #[test]
    fn a_request_of_cpu_rows_packs_into_40_bytes_a_row() {
        let mut rng = StdRng::seed_from_u64(19);
        let rows = 5000;
        let mut columns: Vec<(String, ArrayRef)> = Vec::new();
        let times: Vec<i64> = (0..rows as i64).map(|i| 1_700_000_000_000_000_000 + i / 100 * 10_000_000_000).collect();
        columns.push(("time".into(), Arc::new(TimestampNanosecondArray::from(times))));
        for tag in 0..10 {
            let mut builder = StringDictionaryBuilder::<Int32Type>::new();
            (0..rows).for_each(|i| builder.append_value(format!("tag{tag}_value_{}", i % 100 / (tag + 1))));
            columns.push((format!("tag{tag}"), Arc::new(builder.finish())));
        }
        for field in 0..10 {
            let mut walk = vec![50.0_f64; 100];
            let values: Vec<f64> = (0..rows)
                .map(|i| {
                    let v = &mut walk[i % 100];
                    *v = (*v + rng.random_range(-1.0..1.0)).clamp(0.0, 100.0);
                    format!("{v:.2}").parse().unwrap()
                })
                .collect();
            columns.push((format!("field{field}"), Arc::new(Float64Array::from(values))));
        }
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let packed = assert_round_trip(&batch);
        let per_row = packed.bytes() as f64 / rows as f64;
        assert!(per_row <= 40.0, "{per_row:.1} bytes a row");
        assert!(packed.unpacked_bytes() as f64 / rows as f64 >= 128.0, "the Arrow form is the larger one");
    }

    #[test]
    fn a_range_comes_back_as_those_rows_with_only_their_dictionary_values() {
        let mut rng = StdRng::seed_from_u64(20);
        let batch = random_batch(&mut rng, 5000, 3000);
        let packed = PackedBatch::pack(&batch);
        for (start, len) in [(0, 0), (0, 1), (17, 100), (4999, 1), (1234, 2000), (0, 5000), (64, 64)] {
            let got = packed.unpack_range(start, len);
            let want = batch.slice(start, len);
            assert_eq!((got.schema(), got.num_rows()), (want.schema(), len));
            for (i, (got, want)) in got.columns().iter().zip(want.columns()).enumerate() {
                assert_eq!(got.logical_nulls(), want.logical_nulls(), "nulls of column {i} in {start}+{len}");
                assert_eq!(got.to_data(), want.to_data(), "column {i} in {start}+{len}");
                if let Some(dictionary) = got.as_dictionary_opt::<Int32Type>() {
                    assert!(dictionary.values().len() <= len.max(1), "column {i} in {start}+{len} kept unused values");
                }
            }
        }
    }

    #[test]
    fn bits_pack_at_every_width() {
        for width in 0..=64u32 {
            let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
            let values: Vec<u64> = (0..130u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & mask).collect();
            let words = pack_bits(&values, width);
            assert_eq!(unpack_bits(&words, width, 0, values.len()), values, "width {width}");
            assert_eq!(unpack_bits(&words, width, 61, 7), values[61..68], "width {width}, a range");
        }
    }
}
