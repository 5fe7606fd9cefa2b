//! Encoding buffered rows as Parquet, re-encoding and merging files, and
//! checking a Parquet file.
//!
//! Buffered rows are encoded in memory (they are in memory already). Files
//! are re-encoded and merged as streams — each input read batch by batch,
//! the output written row group by row group into any `Write` — so memory
//! stays near one batch per input plus one row group, whatever the files'
//! sizes. The readers here take any [`ChunkReader`] (a `File`, `Bytes`);
//! opening files is the caller's business.

use std::io::Write;
use std::ops::Range;

use arrow::array::{Array, ArrayRef, TimestampNanosecondArray, new_null_array};
use arrow::compute::{cast, concat_batches, interleave};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{FooterTail, KeyValue, ParquetMetaDataReader, SortingColumn};
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};

use crate::schema::DatasetSchema;

/// A Parquet encoding failure.
#[derive(Debug, thiserror::Error)]
pub enum ParquetFileError {
    /// Arrow refused an operation.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet refused an operation.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A check after writing failed.
    #[error("verification failed: {0}")]
    Verify(String),
    /// A local file could not be read or written.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// How a file is encoded: its zstd level and the most rows in a row group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Encoding {
    /// zstd level, 1..=22.
    pub zstd_level: i32,
    /// Rows per row group, at most.
    pub row_group_rows_max: usize,
}

/// An encoded file and what it holds.
#[derive(Debug)]
pub struct EncodedFile {
    /// The Parquet bytes.
    pub bytes: Vec<u8>,
    /// Rows.
    pub rows: i64,
    /// Earliest row time, ns.
    pub min_time_ns: i64,
    /// Latest row time, ns.
    pub max_time_ns: i64,
    /// CRC32C of `bytes`.
    pub checksum_crc32c: u32,
    /// Columns in the file, the time column included.
    pub columns: usize,
}

/// Brings a buffered batch (the request's columns only) to the full schema.
pub fn conform(batch: &RecordBatch, schema: &DatasetSchema) -> Result<RecordBatch, ParquetFileError> {
    conform_to(batch, schema.arrow_schema())
}

/// Brings a batch to `target`: its columns by name, cast where the type
/// differs, null where missing.
fn conform_to(batch: &RecordBatch, target: SchemaRef) -> Result<RecordBatch, ParquetFileError> {
    if batch.schema() == target {
        return Ok(batch.clone());
    }
    // Read back from a file, a batch's schema carries the file's key-value
    // metadata (the time convention); the columns are what counts.
    if batch.schema().fields() == target.fields() {
        return Ok(RecordBatch::try_new(target, batch.columns().to_vec())?);
    }
    let columns: Vec<ArrayRef> = target
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => Ok(cast(column, field.data_type())?),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<_, ParquetFileError>>()?;
    Ok(RecordBatch::try_new(target, columns)?)
}

fn times_of(batch: &RecordBatch) -> &[i64] {
    batch.column(0).as_any().downcast_ref::<TimestampNanosecondArray>().map(|t| t.values().as_ref()).unwrap_or(&[])
}

/// Concatenates batches in time order. Chunks usually arrive sorted and in
/// order, so the common case is one copy; otherwise rows are interleaved by
/// a sort over `(time, chunk, row)` — still one copy of the data.
fn sorted_by_time(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<RecordBatch, ParquetFileError> {
    let mut in_order = true;
    let mut previous = i64::MIN;
    for batch in batches {
        let times = times_of(batch);
        if times.first().is_some_and(|first| *first < previous) || !times.windows(2).all(|w| w[0] <= w[1]) {
            in_order = false;
            break;
        }
        previous = times.last().copied().unwrap_or(previous);
    }
    if in_order {
        return Ok(concat_batches(schema, batches)?);
    }
    let mut order: Vec<(i64, u32, u32)> = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for (b, batch) in batches.iter().enumerate() {
        order.extend(times_of(batch).iter().enumerate().map(|(r, t)| (*t, b as u32, r as u32)));
    }
    order.sort_unstable();
    let indices: Vec<(usize, usize)> = order.into_iter().map(|(_, b, r)| (b as usize, r as usize)).collect();
    let columns = (0..schema.fields().len())
        .map(|c| {
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            interleave(&arrays, &indices)
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Encodes `batches` (one partition's buffered rows) into one Parquet file
/// sorted by time, zstd-compressed, then re-reads its footer.
pub fn encode(
    batches: &[RecordBatch],
    schema: &DatasetSchema,
    row_group_rows_max: usize,
    zstd_level: i32,
) -> Result<EncodedFile, ParquetFileError> {
    let conformed: Vec<RecordBatch> = batches.iter().map(|b| conform(b, schema)).collect::<Result<_, _>>()?;
    let target = schema.arrow_schema();
    let all = sorted_by_time(&target, &conformed)?;
    let times = all
        .column(0)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .expect("the time column is always a nanosecond timestamp");
    let rows = all.num_rows() as i64;
    let (min_time_ns, max_time_ns) = match (times.values().first(), times.values().last()) {
        (Some(min), Some(max)) => (*min, *max),
        _ => return Err(ParquetFileError::Verify("no rows to flush".into())),
    };
    let bytes = write(&all, Encoding { zstd_level, row_group_rows_max })?;
    let checksum_crc32c = crc32c::crc32c(&bytes);
    let columns = target.fields().len();
    let encoded = EncodedFile { bytes, rows, min_time_ns, max_time_ns, checksum_crc32c, columns };
    verify(&encoded.bytes, encoded.rows, encoded.checksum_crc32c)?;
    Ok(encoded)
}

/// The file key-value metadata that names the time convention: the time
/// column is `timestamp[ns]` without `isAdjustedToUTC` (so DuckDB keeps the
/// nanoseconds; it reads UTC-adjusted timestamps as microsecond
/// TIMESTAMPTZ), and its values are UTC epoch nanoseconds.
pub const TIME_METADATA: [(&str, &str); 2] = [("strata.time_zone", "UTC"), ("strata.time_unit", "ns")];

/// The key naming the time column in a file's key-value metadata.
pub const TIME_COLUMN_KEY: &str = "strata.time_column";

/// `builder` with the time convention ([`TIME_METADATA`]) and the time
/// column's name in the file's key-value metadata. Every Parquet file
/// Strata writes (flush, re-encode, compaction) is built through it.
pub fn with_time_convention(builder: WriterPropertiesBuilder, time_column: &str) -> WriterPropertiesBuilder {
    let mut metadata: Vec<KeyValue> =
        TIME_METADATA.iter().map(|(key, value)| KeyValue::new(key.to_string(), value.to_string())).collect();
    metadata.push(KeyValue::new(TIME_COLUMN_KEY.to_string(), time_column.to_string()));
    builder.set_key_value_metadata(Some(metadata))
}

/// The writer properties of `encoding`: zstd, row groups of at most
/// `row_group_rows_max` rows, sorted by the time column, and the time
/// convention in the key-value metadata ([`with_time_convention`]).
fn properties(encoding: Encoding, time_column: &str) -> Result<WriterProperties, ParquetFileError> {
    Ok(with_time_convention(WriterProperties::builder(), time_column)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(encoding.zstd_level)?))
        .set_max_row_group_row_count(Some(encoding.row_group_rows_max))
        .set_sorting_columns(Some(vec![SortingColumn { column_idx: 0, descending: false, nulls_first: false }]))
        .build())
}

/// Writes one time-sorted batch as a Parquet file.
fn write(all: &RecordBatch, encoding: Encoding) -> Result<Vec<u8>, ParquetFileError> {
    let mut bytes = Vec::new();
    let time_column = all.schema().fields().first().map(|f| f.name().clone()).unwrap_or_default();
    let mut writer = ArrowWriter::try_new(&mut bytes, all.schema(), Some(properties(encoding, &time_column)?))?;
    writer.write(all)?;
    writer.close()?;
    Ok(bytes)
}

/// Checks a Parquet file: checksum, a readable footer and the row count.
pub fn verify(bytes: &[u8], rows: i64, checksum_crc32c: u32) -> Result<(), ParquetFileError> {
    let actual = crc32c::crc32c(bytes);
    if actual != checksum_crc32c {
        return Err(ParquetFileError::Verify(format!("checksum {actual:08x}, expected {checksum_crc32c:08x}")));
    }
    let reader = SerializedFileReader::new(Bytes::copy_from_slice(bytes))?;
    let footer_rows = reader.metadata().file_metadata().num_rows();
    if footer_rows != rows {
        return Err(ParquetFileError::Verify(format!("footer says {footer_rows} rows, expected {rows}")));
    }
    Ok(())
}

/// What a streamed re-encode or merge wrote (the caller's writer knows
/// the bytes and their fingerprint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedFileInfo {
    /// Rows.
    pub rows: i64,
    /// Earliest row time, ns.
    pub min_time_ns: i64,
    /// Latest row time, ns.
    pub max_time_ns: i64,
    /// Columns in the file, the time column included.
    pub columns: usize,
}

/// Rows per batch read from an input and written to the output.
const STREAM_BATCH_ROWS: usize = 8192;

/// One input of a merge: its reader and the rows of its current batch not
/// yet taken.
struct MergeInput {
    reader: ParquetRecordBatchReader,
    schema: SchemaRef,
    batch: Option<RecordBatch>,
    row: usize,
}

impl MergeInput {
    fn open<R: ChunkReader + 'static>(
        builder: ParquetRecordBatchReaderBuilder<R>,
        schema: SchemaRef,
    ) -> Result<MergeInput, ParquetFileError> {
        let reader = builder.with_batch_size(STREAM_BATCH_ROWS).build()?;
        let mut input = MergeInput { reader, schema, batch: None, row: 0 };
        input.fill()?;
        Ok(input)
    }

    /// Reads batches until one has rows left, or the input is exhausted.
    fn fill(&mut self) -> Result<(), ParquetFileError> {
        loop {
            if let Some(batch) = &self.batch
                && self.row < batch.num_rows()
            {
                return Ok(());
            }
            match self.reader.next() {
                None => {
                    self.batch = None;
                    return Ok(());
                }
                Some(batch) => {
                    self.batch = Some(conform_to(&batch?, self.schema.clone())?);
                    self.row = 0;
                }
            }
        }
    }

    /// The time of the next row, if any.
    fn head(&self) -> Option<i64> {
        self.batch.as_ref().map(|batch| times_of(batch)[self.row])
    }
}

/// Merges Parquet files, each sorted by time, into one Parquet file
/// sorted by time written to `out` with `encoding`, with the columns of
/// `schema` (older files' batches are conformed to it). Rows of equal time
/// keep the inputs' order. Streams: memory holds one batch per input and
/// the row group being written.
pub fn merge<R: ChunkReader + 'static, W: Write + Send>(
    inputs: Vec<R>,
    schema: SchemaRef,
    out: W,
    encoding: Encoding,
) -> Result<EncodedFileInfo, ParquetFileError> {
    let inputs: Vec<MergeInput> = inputs
        .into_iter()
        .map(|input| MergeInput::open(ParquetRecordBatchReaderBuilder::try_new(input)?, schema.clone()))
        .collect::<Result<_, _>>()?;
    merge_inputs(inputs, schema, out, encoding)
}

fn merge_inputs<W: Write + Send>(
    mut inputs: Vec<MergeInput>,
    schema: SchemaRef,
    out: W,
    encoding: Encoding,
) -> Result<EncodedFileInfo, ParquetFileError> {
    let mut writer = ArrowWriter::try_new(
        out,
        schema.clone(),
        Some(properties(encoding, schema.fields().first().map_or("", |f| f.name().as_str()))?),
    )?;
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    let mut written = Written::default();
    loop {
        let mut heads = inputs.iter().enumerate().filter_map(|(i, input)| input.head().map(|t| (t, i)));
        let Some(first) = heads.next() else { break };
        let (mut least, mut second) = (first, None::<(i64, usize)>);
        for head in heads {
            if head < least {
                second = Some(least);
                least = head;
            } else if second.is_none_or(|s| head < s) {
                second = Some(head);
            }
        }
        let input = &mut inputs[least.1];
        let batch = input.batch.as_ref().expect("an input with a head has a batch");
        let times = &times_of(batch)[input.row..];
        // Every row that sorts before the next input's head, ties by input.
        let take = match second {
            None => times.len(),
            Some((t, j)) => times.partition_point(|x| *x < t || (*x == t && least.1 < j)).max(1),
        };
        let run = batch.slice(input.row, take);
        written.note(times_of(&run))?;
        pending_rows += take;
        pending.push(run);
        input.row += take;
        input.fill()?;
        if pending_rows >= STREAM_BATCH_ROWS {
            writer.write(&concat_batches(&schema, &pending)?)?;
            (pending, pending_rows) = (Vec::new(), 0);
        }
    }
    if !pending.is_empty() {
        writer.write(&concat_batches(&schema, &pending)?)?;
    }
    writer.close()?;
    written.info(schema.fields().len())
}

/// The rows written so far: how many, the time range, and that they are
/// in time order.
#[derive(Default)]
struct Written {
    rows: i64,
    min_max: Option<(i64, i64)>,
}

impl Written {
    fn note(&mut self, times: &[i64]) -> Result<(), ParquetFileError> {
        let (Some(first), Some(last)) = (times.first(), times.last()) else { return Ok(()) };
        let sorted = times.windows(2).all(|w| w[0] <= w[1]);
        if !sorted || self.min_max.is_some_and(|(_, max)| *first < max) {
            return Err(ParquetFileError::Verify("an input file is not sorted by time".into()));
        }
        self.min_max = Some((self.min_max.map_or(*first, |(min, _)| min), *last));
        self.rows += times.len() as i64;
        Ok(())
    }

    fn info(self, columns: usize) -> Result<EncodedFileInfo, ParquetFileError> {
        let (min_time_ns, max_time_ns) =
            self.min_max.ok_or_else(|| ParquetFileError::Verify("no rows to write".into()))?;
        Ok(EncodedFileInfo { rows: self.rows, min_time_ns, max_time_ns, columns })
    }
}

/// Re-encodes one of our Parquet files (`rows` rows, sorted by time) into
/// `out` with `encoding`: the same schema and the same rows in the same
/// order, streamed. The row count must match `rows`.
pub fn reencode_file<R: ChunkReader + 'static, W: Write + Send>(
    input: R,
    rows: i64,
    out: W,
    encoding: Encoding,
) -> Result<EncodedFileInfo, ParquetFileError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(input)?;
    let schema = builder.schema().clone();
    let info = merge_inputs(vec![MergeInput::open(builder, schema.clone())?], schema, out, encoding)?;
    if info.rows != rows {
        return Err(ParquetFileError::Verify(format!("the file holds {} rows, expected {rows}", info.rows)));
    }
    Ok(info)
}

/// Whether two Parquet files decode to the same rows (schema included),
/// compared batch by batch.
pub fn same_rows<A: ChunkReader + 'static, B: ChunkReader + 'static>(a: A, b: B) -> Result<bool, ParquetFileError> {
    let a = ParquetRecordBatchReaderBuilder::try_new(a)?;
    let b = ParquetRecordBatchReaderBuilder::try_new(b)?;
    if a.schema().fields() != b.schema().fields() {
        return Ok(false);
    }
    let mut a = a.with_batch_size(STREAM_BATCH_ROWS).build()?;
    let mut b = b.with_batch_size(STREAM_BATCH_ROWS).build()?;
    let (mut left, mut right): (Option<RecordBatch>, Option<RecordBatch>) = (None, None);
    loop {
        if left.as_ref().is_none_or(|l| l.num_rows() == 0) {
            left = a.next().transpose()?;
        }
        if right.as_ref().is_none_or(|r| r.num_rows() == 0) {
            right = b.next().transpose()?;
        }
        let (l, r) = match (&left, &right) {
            (None, None) => return Ok(true),
            (Some(l), Some(r)) => (l, r),
            _ => return Ok(false),
        };
        let n = l.num_rows().min(r.num_rows());
        if l.slice(0, n).columns() != r.slice(0, n).columns() {
            return Ok(false);
        }
        (left, right) = (Some(l.slice(n, l.num_rows() - n)), Some(r.slice(n, r.num_rows() - n)));
    }
}

/// Checks a Parquet file's footer, read alone: it parses and counts `rows` rows.
pub fn check_footer<R: ChunkReader>(reader: &R, rows: i64) -> Result<(), ParquetFileError> {
    let footer_rows = ParquetMetaDataReader::new().parse_and_finish(reader)?.file_metadata().num_rows();
    if footer_rows != rows {
        return Err(ParquetFileError::Verify(format!("footer says {footer_rows} rows, expected {rows}")));
    }
    Ok(())
}

/// Bytes [`footer_rows`] reads from a file's end in one request: the
/// footer of most files fits (a larger one costs one more read).
const FOOTER_READ_BYTES: u64 = 16 * 1024;

/// The row count in the footer of a Parquet file of `len` bytes, read with
/// `read_range` alone (the last [`FOOTER_READ_BYTES`], which hold the
/// footer's length and usually the footer, then the magic at the start
/// unless that read held it) — for an object on any target, without
/// reading its data. A read's error passes through; a file that is no
/// Parquet becomes `invalid(why)`.
pub fn footer_rows<E>(
    len: u64,
    mut read_range: impl FnMut(Range<u64>) -> Result<Vec<u8>, E>,
    invalid: impl Fn(ParquetFileError) -> E,
) -> Result<i64, E> {
    let bad = |why: String| invalid(ParquetFileError::Verify(why));
    if len < 12 {
        return Err(bad(format!("{len} bytes is too short for a Parquet file")));
    }
    let start = len.saturating_sub(FOOTER_READ_BYTES);
    let end = read_range(start..len)?;
    if end.len() as u64 != len - start {
        return Err(bad("the file's end read short".into()));
    }
    let magic = if start == 0 { end[..4].to_vec() } else { read_range(0..4)? };
    if magic != b"PAR1" {
        return Err(bad("no Parquet magic at the start".into()));
    }
    let tail: [u8; 8] = end[end.len() - 8..].try_into().map_err(|_| bad("the footer's tail read short".into()))?;
    let tail = FooterTail::try_new(&tail).map_err(|e| invalid(e.into()))?;
    let metadata_len = tail.metadata_length() as u64;
    if metadata_len > len - 12 {
        return Err(bad(format!("a footer of {metadata_len} bytes in a file of {len}")));
    }
    let metadata_start = len - 8 - metadata_len;
    let metadata = if metadata_start >= start {
        end[(metadata_start - start) as usize..end.len() - 8].to_vec()
    } else {
        read_range(metadata_start..len - 8)?
    };
    if metadata.len() as u64 != metadata_len {
        return Err(bad("the footer read short".into()));
    }
    let metadata = ParquetMetaDataReader::decode_metadata(&metadata).map_err(|e| invalid(e.into()))?;
    Ok(metadata.file_metadata().num_rows())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::schema::{ColumnDef, ColumnKind};
    use arrow::array::Float64Array;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn batches_of_older_schemas_are_conformed_and_sorted() {
        let schema = DatasetSchema::empty("time")
            .evolve(&[
                ColumnDef { name: "a".into(), kind: ColumnKind::Float },
                ColumnDef { name: "b".into(), kind: ColumnKind::Float },
            ])
            .unwrap()
            .unwrap();
        let time = Field::new("time", crate::schema::time_type(), false);
        let only_a = RecordBatch::try_new(
            Arc::new(Schema::new(vec![time.clone(), Field::new("a", arrow::datatypes::DataType::Float64, true)])),
            vec![Arc::new(TimestampNanosecondArray::from(vec![30, 10])), Arc::new(Float64Array::from(vec![3.0, 1.0]))],
        )
        .unwrap();
        let only_b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![time, Field::new("b", arrow::datatypes::DataType::Float64, true)])),
            vec![Arc::new(TimestampNanosecondArray::from(vec![20])), Arc::new(Float64Array::from(vec![2.0]))],
        )
        .unwrap();
        let file = encode(&[only_a, only_b], &schema, 1024, 3).unwrap();
        assert_eq!((file.rows, file.min_time_ns, file.max_time_ns), (3, 10, 30));
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file.bytes.clone())).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
        let read = concat_batches(&batches[0].schema(), &batches).unwrap();
        let a = read.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![Some(1.0), None, Some(3.0)]);
        let mut corrupted = file.bytes.clone();
        corrupted[10] ^= 1;
        assert!(verify(&corrupted, 3, file.checksum_crc32c).is_err());
        assert!(verify(&file.bytes, 4, file.checksum_crc32c).is_err());
    }

    fn tagged_schema() -> DatasetSchema {
        DatasetSchema::empty("time")
            .evolve(&[
                ColumnDef { name: "host".into(), kind: ColumnKind::Tag },
                ColumnDef { name: "v".into(), kind: ColumnKind::Float },
            ])
            .unwrap()
            .unwrap()
    }

    fn batch_at(schema: &DatasetSchema, times: Vec<i64>) -> RecordBatch {
        let hosts = ["a", "b", "c", "d", "e", "f", "g"];
        let host: arrow::array::DictionaryArray<arrow::datatypes::Int32Type> =
            times.iter().map(|t| Some(hosts[(t % 7) as usize])).collect();
        let v = Float64Array::from(times.iter().map(|t| (t % 100) as f64).collect::<Vec<_>>());
        let time = TimestampNanosecondArray::from(times);
        RecordBatch::try_new(schema.arrow_schema(), vec![Arc::new(time), Arc::new(host), Arc::new(v)]).unwrap()
    }

    fn read_all(bytes: &[u8]) -> RecordBatch {
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(bytes)).unwrap();
        let schema = builder.schema().clone();
        let batches: Vec<RecordBatch> = builder.build().unwrap().collect::<Result<_, _>>().unwrap();
        concat_batches(&schema, &batches).unwrap()
    }

    #[test]
    fn reencoding_streams_every_row_and_changes_only_the_encoding() {
        let schema = tagged_schema();
        let rows = 30_000;
        let original = encode(&[batch_at(&schema, (0..rows).collect())], &schema, 1_000_000, 1).unwrap();
        let encoding = Encoding { zstd_level: 9, row_group_rows_max: 1_000 };
        let mut again = Vec::new();
        let info = reencode_file(Bytes::from(original.bytes.clone()), rows, &mut again, encoding).unwrap();
        assert_ne!(crc32c::crc32c(&again), original.checksum_crc32c);
        assert_eq!((info.rows, info.min_time_ns, info.max_time_ns, info.columns), (rows, 0, rows - 1, 3));
        assert_eq!(read_all(&again), read_all(&original.bytes));
        assert!(same_rows(Bytes::from(again.clone()), Bytes::from(original.bytes.clone())).unwrap());
        let groups = SerializedFileReader::new(Bytes::from(again.clone())).unwrap().metadata().num_row_groups();
        assert_eq!(groups, 30);
        let other = encode(&[batch_at(&schema, (1..=rows).collect())], &schema, 1_000_000, 1).unwrap();
        assert!(!same_rows(Bytes::from(again), Bytes::from(other.bytes)).unwrap(), "one row differs everywhere");
        let refused = reencode_file(Bytes::from(original.bytes.clone()), rows + 1, Vec::new(), encoding);
        assert!(refused.is_err(), "a row count that disagrees is refused");
        let half = Bytes::copy_from_slice(&original.bytes[..original.bytes.len() / 2]);
        assert!(reencode_file(half, rows, Vec::new(), encoding).is_err());
    }

    #[test]
    fn a_merge_interleaves_time_sorted_files_of_older_schemas_in_time_order() {
        let schema = tagged_schema();
        let older = DatasetSchema::empty("time")
            .evolve(&[ColumnDef { name: "v".into(), kind: ColumnKind::Float }])
            .unwrap()
            .unwrap();
        let only_v = RecordBatch::try_new(
            older.arrow_schema(),
            vec![
                Arc::new(TimestampNanosecondArray::from((0..20_000).map(|t| t * 3 + 1).collect::<Vec<i64>>())),
                Arc::new(Float64Array::from(vec![-1.0; 20_000])),
            ],
        )
        .unwrap();
        let files = [
            encode(&[batch_at(&schema, (0..20_000).map(|t| t * 3).collect())], &schema, 4_096, 1).unwrap(),
            encode(&[only_v], &older, 4_096, 1).unwrap(),
            // Ties with the first file's times: they come after its rows.
            encode(&[batch_at(&schema, (0..20_000).map(|t| t * 6).collect())], &schema, 4_096, 1).unwrap(),
        ];
        let inputs: Vec<Bytes> = files.iter().map(|f| Bytes::from(f.bytes.clone())).collect();
        let mut out = Vec::new();
        let encoding = Encoding { zstd_level: 3, row_group_rows_max: 10_000 };
        let info = merge(inputs, schema.arrow_schema(), &mut out, encoding).unwrap();
        assert_eq!((info.rows, info.min_time_ns, info.max_time_ns), (60_000, 0, 119_994));
        let merged = read_all(&out);
        assert_eq!(merged.schema().fields(), schema.arrow_schema().fields(), "the dataset's latest schema");
        let times = times_of(&merged);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "sorted by time");
        let v = merged.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        let hosts = merged.column(1);
        assert_eq!(v.iter().filter(|v| *v == Some(-1.0)).count(), 20_000, "every row of the older file");
        assert_eq!(hosts.null_count(), 20_000, "its missing column is null");
        let at_six = times.iter().position(|t| *t == 6).unwrap();
        assert_eq!((times[at_six + 1], v.value(at_six), v.value(at_six + 1)), (6, 6.0, 6.0));
        check_footer(&Bytes::from(out.clone()), 60_000).unwrap();
        assert!(check_footer(&Bytes::from(out), 59_999).is_err());

        // A file written unsorted (not by Strata) is refused, not merged out of order.
        let mut writer = ArrowWriter::try_new(Vec::new(), schema.arrow_schema(), None).unwrap();
        writer.write(&batch_at(&schema, vec![5, 1])).unwrap();
        let unsorted = Bytes::from(writer.into_inner().unwrap());
        assert!(merge(vec![unsorted], schema.arrow_schema(), Vec::new(), encoding).is_err());
    }

    #[test]
    fn every_written_file_records_its_time_convention() {
        let schema = tagged_schema();
        let encoding = Encoding { zstd_level: 3, row_group_rows_max: 1_000 };
        let flushed = encode(&[batch_at(&schema, (0..100).collect())], &schema, 1_000, 1).unwrap();
        let mut reencoded = Vec::new();
        reencode_file(Bytes::from(flushed.bytes.clone()), 100, &mut reencoded, encoding).unwrap();
        let mut merged = Vec::new();
        merge(vec![Bytes::from(flushed.bytes.clone())], schema.arrow_schema(), &mut merged, encoding).unwrap();
        for bytes in [flushed.bytes, reencoded, merged] {
            let reader = SerializedFileReader::new(Bytes::from(bytes)).unwrap();
            let metadata = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
            let value = |key: &str| metadata.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone());
            assert_eq!(value("strata.time_zone").as_deref(), Some("UTC"), "{metadata:?}");
            assert_eq!(value("strata.time_unit").as_deref(), Some("ns"));
            assert_eq!(value(TIME_COLUMN_KEY).as_deref(), Some("time"));
        }
    }

    #[test]
    fn the_footer_is_read_with_ranged_reads_alone() {
        let schema = tagged_schema();
        let file = encode(&[batch_at(&schema, (0..50_000).collect())], &schema, 1_000, 1).unwrap();
        let len = file.bytes.len() as u64;
        let (mut read, mut requests) = (0u64, 0);
        let rows = footer_rows(
            len,
            |range: Range<u64>| {
                read += range.end - range.start;
                requests += 1;
                Ok::<_, String>(file.bytes[range.start as usize..range.end as usize].to_vec())
            },
            |e| e.to_string(),
        )
        .unwrap();
        assert_eq!(rows, 50_000);
        assert!(read < len / 4, "{read} of {len} bytes read: the footer only");
        assert_eq!(requests, 3, "a footer of 50 row groups takes a read of its own");
        let one_group = encode(&[batch_at(&schema, (0..50_000).collect())], &schema, 100_000, 1).unwrap();
        let mut requests = 0;
        let whole = &one_group.bytes;
        let rows = footer_rows(
            whole.len() as u64,
            |r: Range<u64>| {
                requests += 1;
                Ok::<_, String>(whole[r.start as usize..r.end as usize].to_vec())
            },
            |e| e.to_string(),
        );
        assert_eq!(rows.unwrap(), 50_000);
        assert!(whole.len() as u64 > FOOTER_READ_BYTES);
        assert_eq!(requests, 2, "the file's end, holding a small footer, and the magic");
        let mut corrupt = file.bytes.clone();
        // The footer's length, made larger than the file.
        let at = corrupt.len() - 6;
        corrupt[at] ^= 0xff;
        let ranged = |bytes: &[u8]| {
            let bytes = bytes.to_vec();
            footer_rows(
                bytes.len() as u64,
                move |r| Ok::<_, String>(bytes[r.start as usize..r.end as usize].to_vec()),
                |e| e.to_string(),
            )
        };
        assert!(ranged(&corrupt).is_err());
        assert!(ranged(&file.bytes[..len as usize / 2]).is_err(), "a truncated file has no footer");
        assert!(ranged(b"PAR1").is_err());
        let failing = footer_rows(len, |_| Err::<Vec<u8>, _>("unreachable".to_string()), |e| e.to_string());
        assert_eq!(failing.unwrap_err(), "unreachable", "a failed read passes through");
    }
}
