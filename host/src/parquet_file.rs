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
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{FooterTail, KeyValue, ParquetMetaDataReader, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::file::reader::ChunkReader;
use parquet::schema::types::ColumnPath;

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

/// The time range of `batch`'s rows (any order), if it has rows.
fn time_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let times = times_of(batch);
    let min = times.iter().min()?;
    Some((*min, *times.iter().max()?))
}

/// A file's sort key: the indices of its columns in order of precedence,
/// tag columns first and the time column (index 0) last.
pub type SortKey = Vec<usize>;

type TagDictionary = arrow::array::DictionaryArray<arrow::datatypes::Int32Type>;

/// A tag column of every batch as a dictionary array (tags are
/// dictionary-encoded; a plain string column is cast).
fn tag_dictionaries(batches: &[RecordBatch], column: usize) -> Result<Vec<TagDictionary>, ParquetFileError> {
    let dictionary = arrow::datatypes::DataType::Dictionary(
        Box::new(arrow::datatypes::DataType::Int32),
        Box::new(arrow::datatypes::DataType::Utf8),
    );
    batches
        .iter()
        .map(|batch| {
            let cast = cast(batch.column(column), &dictionary)?;
            cast.as_any()
                .downcast_ref::<TagDictionary>()
                .cloned()
                .ok_or_else(|| ParquetFileError::Verify(format!("tag column {column} is not a string dictionary")))
        })
        .collect()
}

/// One tag column's rank in every row of every batch: 0 for null, then
/// 1.. in the byte order of the values (the order Parquet statistics and
/// [`arrow::row`] use), and its distinct values in that order.
fn tag_ranks(batches: &[RecordBatch], column: usize) -> Result<(Vec<Vec<u32>>, ArrayRef), ParquetFileError> {
    let dictionaries = tag_dictionaries(batches, column)?;
    let values: Vec<&arrow::array::StringArray> = dictionaries
        .iter()
        .map(|d| d.values().as_any().downcast_ref::<arrow::array::StringArray>())
        .collect::<Option<_>>()
        .ok_or_else(|| ParquetFileError::Verify(format!("tag column {column} holds no strings")))?;
    let mut distinct: Vec<&str> = values.iter().flat_map(|v| v.iter().flatten()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    // Each batch's dictionary value is ranked once, by hashing; rows then
    // take their key's rank.
    let rank_of: rustc_hash::FxHashMap<&str, u32> =
        distinct.iter().enumerate().map(|(rank, value)| (*value, rank as u32 + 1)).collect();
    let ranks = dictionaries
        .iter()
        .zip(&values)
        .map(|(dictionary, values)| {
            let of_value: Vec<u32> = values.iter().map(|v| v.map_or(0, |v| rank_of[v])).collect();
            let keys = dictionary.keys();
            match keys.nulls() {
                None => keys.values().iter().map(|key| of_value[*key as usize]).collect(),
                Some(_) => (0..keys.len())
                    .map(|row| if keys.is_null(row) { 0 } else { of_value[keys.value(row) as usize] })
                    .collect(),
            }
        })
        .collect();
    let distinct: ArrayRef = std::sync::Arc::new(arrow::array::StringArray::from(distinct));
    Ok((ranks, distinct))
}

/// The order of `batches`' rows by a sort key, as `(batch, row)` pairs:
/// each row's tag ranks (`ranks`, in key order) folded into one number (mixed radix), then time, then
/// the row's place (so rows of equal key keep their order). `None` when
/// the tags' combinations do not fit in 64 bits.
fn key_order(batches: &[RecordBatch], ranks: &[Vec<Vec<u32>>], radices: &[u64]) -> Option<Vec<(usize, usize)>> {
    radices.iter().try_fold(1u64, |product, radix| product.checked_mul(*radix))?;
    let mut order: Vec<(u64, i64, u32, u32)> = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for (b, batch) in batches.iter().enumerate() {
        let times = times_of(batch);
        for (r, time) in times.iter().enumerate() {
            let series =
                ranks.iter().zip(radices).fold(0u64, |series, (column, radix)| series * radix + column[b][r] as u64);
            order.push((series, *time, b as u32, r as u32));
        }
    }
    order.sort_unstable();
    Some(order.into_iter().map(|(_, _, b, r)| (b as usize, r as usize)).collect())
}

/// A flush's tag columns in key order: each one's column index, rank per
/// row of each batch and distinct values (sorted).
struct FlushTags {
    columns: Vec<usize>,
    ranks: Vec<Vec<Vec<u32>>>,
    distinct: Vec<ArrayRef>,
}

impl FlushTags {
    /// The sort key: the tag columns, then time (index 0).
    fn key(&self) -> SortKey {
        self.columns.iter().copied().chain(std::iter::once(0)).collect()
    }

    /// Each tag's radix: its distinct values and null.
    fn radices(&self) -> Vec<u64> {
        self.distinct.iter().map(|values| values.len() as u64 + 1).collect()
    }

    /// Tag column `column` in the order `indices`, from the ranks alone: a
    /// dictionary of the distinct values, sorted, with no string copied
    /// per row.
    fn column_in_order(&self, column: usize, indices: &[(usize, usize)]) -> Option<ArrayRef> {
        let tag = self.columns.iter().position(|c| *c == column)?;
        let ranks = &self.ranks[tag];
        let keys: arrow::array::Int32Array =
            indices.iter().map(|(b, r)| ranks[*b][*r].checked_sub(1).map(|key| key as i32)).collect();
        let array =
            arrow::array::DictionaryArray::<arrow::datatypes::Int32Type>::try_new(keys, self.distinct[tag].clone())
                .expect("ranks index the distinct values");
        Some(std::sync::Arc::new(array))
    }
}

/// The tag columns of freshly buffered rows (by index in `schema`)
/// ordered by how many distinct values they hold, fewest first (ties in
/// schema order), with their ranks and values.
fn flush_tags(batches: &[RecordBatch], schema: &DatasetSchema) -> Result<FlushTags, ParquetFileError> {
    let mut tags = Vec::new();
    for (index, column) in schema.columns.iter().enumerate() {
        if column.kind == crate::schema::ColumnKind::Tag {
            let (ranks, distinct) = tag_ranks(batches, index + 1)?;
            tags.push((distinct.len(), index + 1, ranks, distinct));
        }
    }
    tags.sort_by_key(|(distinct, index, _, _)| (*distinct, *index));
    let mut flush = FlushTags { columns: Vec::new(), ranks: Vec::new(), distinct: Vec::new() };
    for (_, index, ranks, distinct) in tags {
        flush.columns.push(index);
        flush.ranks.push(ranks);
        flush.distinct.push(distinct);
    }
    Ok(flush)
}

/// Concatenates batches sorted by the tags then time, with one copy of
/// the data; tag columns are rebuilt from their ranks. Buffered rows are
/// usually time-sorted already; the sort puts each series' rows together.
fn sorted_by_key(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    tags: &FlushTags,
) -> Result<RecordBatch, ParquetFileError> {
    let key = tags.key();
    let indices = match key_order(batches, &tags.ranks, &tags.radices()) {
        Some(indices) => indices,
        None => return sorted_by_rows(schema, &concat_batches(schema, batches)?, &key),
    };
    let columns = (0..schema.fields().len())
        .map(|c| {
            if let Some(column) = tags.column_in_order(c, &indices)
                && column.data_type() == schema.field(c).data_type()
            {
                return Ok(column);
            }
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            interleave(&arrays, &indices)
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The comparable rows of `key`'s columns (ascending, nulls first).
fn key_converter(schema: &SchemaRef, key: &[usize]) -> Result<arrow::row::RowConverter, ParquetFileError> {
    let options = arrow::compute::SortOptions { descending: false, nulls_first: true };
    let fields =
        key.iter().map(|c| arrow::row::SortField::new_with_options(schema.field(*c).data_type().clone(), options));
    Ok(arrow::row::RowConverter::new(fields.collect())?)
}

/// `batch` sorted by `key` through the row format: the general path, for
/// tag combinations too many for [`key_order`] and for merge inputs not
/// written in the merge's order.
fn sorted_by_rows(schema: &SchemaRef, batch: &RecordBatch, key: &[usize]) -> Result<RecordBatch, ParquetFileError> {
    let converter = key_converter(schema, key)?;
    let columns: Vec<ArrayRef> = key.iter().map(|c| batch.column(*c).clone()).collect();
    let rows = converter.convert_columns(&columns)?;
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    let indices = arrow::array::UInt32Array::from(order);
    Ok(arrow::compute::take_record_batch(batch, &indices)?)
}

/// Encodes `batches` (one partition's buffered rows) into one Parquet file
/// sorted by its tags (fewest distinct values first) then time,
/// zstd-compressed, then re-reads its footer.
pub fn encode(
    batches: &[RecordBatch],
    schema: &DatasetSchema,
    row_group_rows_max: usize,
    zstd_level: i32,
) -> Result<EncodedFile, ParquetFileError> {
    let conformed: Vec<RecordBatch> = batches.iter().map(|b| conform(b, schema)).collect::<Result<_, _>>()?;
    let target = schema.arrow_schema();
    let tags = flush_tags(&conformed, schema)?;
    let key = tags.key();
    let all = sorted_by_key(&target, &conformed, &tags)?;
    let rows = all.num_rows() as i64;
    let (min_time_ns, max_time_ns) =
        time_range(&all).ok_or_else(|| ParquetFileError::Verify("no rows to flush".into()))?;
    let bytes = write(&all, Encoding { zstd_level, row_group_rows_max }, &key)?;
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

/// Rows per data page at most: a page covers a short stretch of one
/// series, so the page index (column and offset indexes, written with
/// page statistics) narrows a read within a row group.
const PAGE_ROWS_MAX: usize = 8192;

/// The writer properties of `encoding` for a file of `schema` sorted by
/// `key`: zstd, row groups of at most `row_group_rows_max` rows, the key
/// as the row groups' `sorting_columns`, page statistics (the page index),
/// times delta-encoded,
/// a bloom filter on every tag column of the key (sized for a row group;
/// the writer folds it down to the values it saw), and the time convention
/// in the key-value metadata ([`with_time_convention`]).
fn properties(encoding: Encoding, schema: &SchemaRef, key: &[usize]) -> Result<WriterProperties, ParquetFileError> {
    let time_column = schema.fields().first().map_or("", |f| f.name().as_str());
    let sorting = key.iter().map(|c| SortingColumn { column_idx: *c as i32, descending: false, nulls_first: *c != 0 });
    let mut builder = with_time_convention(WriterProperties::builder(), time_column)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(encoding.zstd_level)?))
        .set_max_row_group_row_count(Some(encoding.row_group_rows_max))
        .set_data_page_row_count_limit(PAGE_ROWS_MAX)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(sorting.collect()));
    // Times as deltas, not a dictionary: a file sorted by series holds each
    // series' times in order, so the deltas are mostly one interval
    // (bit-packed in a few bits), and no value is hashed into a dictionary.
    let time = ColumnPath::from(time_column);
    builder = builder
        .set_column_dictionary_enabled(time.clone(), false)
        .set_column_encoding(time, parquet::basic::Encoding::DELTA_BINARY_PACKED);
    for tag in key.iter().filter(|c| **c != 0) {
        let path = ColumnPath::from(schema.field(*tag).name().as_str());
        builder = builder
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_max_ndv(path, encoding.row_group_rows_max as u64);
    }
    Ok(builder.build())
}

/// Rows up to which a flushed file is written uncompressed.
const UNCOMPRESSED_ROWS_MAX: usize = 16;

/// Writes one batch, sorted by `key`, as a Parquet file.
fn write(all: &RecordBatch, encoding: Encoding, key: &[usize]) -> Result<Vec<u8>, ParquetFileError> {
    let mut bytes = Vec::new();
    let schema = all.schema();
    // No row group holds more than the file's rows: the same layout, and
    // bloom filters sized for them (not for a full row group, which a
    // small file would allocate and fold down per tag column).
    let encoding = Encoding { row_group_rows_max: encoding.row_group_rows_max.min(all.num_rows().max(1)), ..encoding };
    let mut properties = properties(encoding, &schema, key)?;
    if all.num_rows() <= UNCOMPRESSED_ROWS_MAX {
        // Pages of a few values gain nothing from zstd, and its compressor
        // and decompressor per column cost more than encoding the file.
        properties = properties.into_builder().set_compression(Compression::UNCOMPRESSED).build();
    }
    let mut writer = ArrowWriter::try_new(&mut bytes, schema.clone(), Some(properties))?;
    writer.write(all)?;
    writer.close()?;
    Ok(bytes)
}

/// The sort key a Parquet file records (its first row group's
/// `sorting_columns`, as column names), if it records one that Strata
/// writes: ascending, the time column last.
pub fn recorded_sort_key(metadata: &parquet::file::metadata::ParquetMetaData) -> Option<Vec<String>> {
    let group = metadata.row_groups().first()?;
    let columns = metadata.file_metadata().schema_descr();
    let sorting = group.sorting_columns()?;
    let names: Vec<String> = sorting
        .iter()
        .map(|s| {
            let index = usize::try_from(s.column_idx).ok().filter(|i| *i < columns.num_columns() && !s.descending)?;
            Some(columns.column(index).name().to_string())
        })
        .collect::<Option<_>>()?;
    (names.last() == columns.columns().first().map(|c| c.name().to_string()).as_ref()).then_some(names)
}

/// Checks a Parquet file: checksum, a readable footer and the row count.
pub fn verify(bytes: &[u8], rows: i64, checksum_crc32c: u32) -> Result<(), ParquetFileError> {
    let actual = crc32c::crc32c(bytes);
    if actual != checksum_crc32c {
        return Err(ParquetFileError::Verify(format!("checksum {actual:08x}, expected {checksum_crc32c:08x}")));
    }
    // The footer alone is read, as from storage: no copy of the file.
    let read = |range: Range<u64>| Ok(bytes[range.start as usize..range.end as usize].to_vec());
    let footer_rows = footer_rows(bytes.len() as u64, read, |error| error)?;
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

/// Where a merge input's batches come from: a file read batch by batch,
/// or (for an input not written in the merge's order) its rows sorted in
/// memory.
type Batches = Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + Send>;

/// One input of a merge: its batches, the rows of its current batch not
/// yet taken, and their sort key in the row format.
struct MergeInput {
    batches: Batches,
    schema: SchemaRef,
    batch: Option<(RecordBatch, arrow::row::Rows)>,
    row: usize,
    /// The key of the previous batch's last row: an input must be sorted
    /// across its batches too.
    last: Option<arrow::row::OwnedRow>,
}

impl MergeInput {
    fn open(
        batches: Batches,
        schema: SchemaRef,
        converter: &arrow::row::RowConverter,
        key: &[usize],
    ) -> Result<MergeInput, ParquetFileError> {
        let mut input = MergeInput { batches, schema, batch: None, row: 0, last: None };
        input.fill(converter, key)?;
        Ok(input)
    }

    /// Reads batches until one has rows left, or the input is exhausted;
    /// refuses an input whose rows are not sorted by the key.
    fn fill(&mut self, converter: &arrow::row::RowConverter, key: &[usize]) -> Result<(), ParquetFileError> {
        loop {
            if let Some((batch, _)) = &self.batch
                && self.row < batch.num_rows()
            {
                return Ok(());
            }
            if let Some((_, rows)) = self.batch.take()
                && rows.num_rows() > 0
            {
                self.last = Some(rows.row(rows.num_rows() - 1).owned());
            }
            let Some(batch) = self.batches.next() else { return Ok(()) };
            let batch = conform_to(&batch?, self.schema.clone())?;
            let columns: Vec<ArrayRef> = key.iter().map(|c| batch.column(*c).clone()).collect();
            let rows = converter.convert_columns(&columns)?;
            let after_last = self.last.as_ref().is_none_or(|last| rows.num_rows() == 0 || last.row() <= rows.row(0));
            if !after_last || !(1..rows.num_rows()).all(|i| rows.row(i - 1) <= rows.row(i)) {
                return Err(ParquetFileError::Verify("an input file is not sorted by its sort key".into()));
            }
            self.batch = Some((batch, rows));
            self.row = 0;
        }
    }

    /// The key of the next row, if any.
    fn head(&self) -> Option<arrow::row::Row<'_>> {
        self.batch.as_ref().map(|(_, rows)| rows.row(self.row))
    }
}

/// One file to merge: its batches, rows, and the sort key it records.
struct Opened {
    batches: Batches,
    rows: i64,
    key: Option<Vec<String>>,
}

fn open_input<R: ChunkReader + 'static>(input: R) -> Result<Opened, ParquetFileError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(input)?;
    let metadata = builder.metadata().clone();
    let batches = Box::new(builder.with_batch_size(STREAM_BATCH_ROWS).build()?);
    Ok(Opened { batches, rows: metadata.file_metadata().num_rows(), key: recorded_sort_key(&metadata) })
}

/// `names` as column indices of `schema`, if every one is there.
fn key_indices(schema: &SchemaRef, names: &[String]) -> Option<SortKey> {
    names.iter().map(|name| schema.index_of(name).ok()).collect()
}

/// The merge's sort key: the key of the input with the most rows among
/// those whose key names columns of `schema` only; failing that, the tag
/// columns of `schema` in order, then time.
fn merge_key(schema: &SchemaRef, inputs: &[Opened]) -> SortKey {
    let recorded = inputs
        .iter()
        .filter_map(|input| Some((input.rows, key_indices(schema, input.key.as_ref()?)?)))
        .max_by_key(|(rows, _)| *rows);
    recorded.map(|(_, key)| key).unwrap_or_else(|| {
        let tags = schema
            .fields()
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, f)| matches!(f.data_type(), arrow::datatypes::DataType::Dictionary(..)));
        tags.map(|(i, _)| i).chain(std::iter::once(0)).collect()
    })
}

/// Merges Parquet files into one Parquet file written to `out` with
/// `encoding`, with the columns of `schema` (older files' batches are
/// conformed to it), sorted by one sort key: that of the largest input
/// (tags then time, see [`encode`]). Rows of equal key keep the inputs'
/// order. Streams: memory holds one batch per input and the row group
/// being written — except for an input that records another key (a file
/// from before tag sort keys, or a flush whose tags ranked otherwise by
/// their distinct values), whose rows are sorted in memory.
pub fn merge<R: ChunkReader + 'static, W: Write + Send>(
    inputs: Vec<R>,
    schema: SchemaRef,
    out: W,
    encoding: Encoding,
) -> Result<EncodedFileInfo, ParquetFileError> {
    let opened: Vec<Opened> = inputs.into_iter().map(open_input).collect::<Result<_, _>>()?;
    let key = merge_key(&schema, &opened);
    let mut batches = Vec::with_capacity(opened.len());
    for input in opened {
        if input.key.as_ref().and_then(|names| key_indices(&schema, names)).as_ref() == Some(&key) {
            batches.push(input.batches);
            continue;
        }
        let read: Vec<RecordBatch> =
            input.batches.map(|b| conform_to(&b?, schema.clone())).collect::<Result<_, ParquetFileError>>()?;
        let sorted = sorted_by_rows(&schema, &concat_batches(&schema, &read)?, &key)?;
        let chunks: Vec<_> = (0..sorted.num_rows())
            .step_by(STREAM_BATCH_ROWS)
            .map(|at| Ok(sorted.slice(at, STREAM_BATCH_ROWS.min(sorted.num_rows() - at))))
            .collect();
        batches.push(Box::new(chunks.into_iter()));
    }
    merge_inputs(batches, schema, out, encoding, &key)
}

fn merge_inputs<W: Write + Send>(
    inputs: Vec<Batches>,
    schema: SchemaRef,
    out: W,
    encoding: Encoding,
    key: &[usize],
) -> Result<EncodedFileInfo, ParquetFileError> {
    let converter = key_converter(&schema, key)?;
    let mut inputs: Vec<MergeInput> = inputs
        .into_iter()
        .map(|batches| MergeInput::open(batches, schema.clone(), &converter, key))
        .collect::<Result<_, _>>()?;
    let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(properties(encoding, &schema, key)?))?;
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    let mut written = Written::default();
    while let Some((least, second)) = least_two(&inputs) {
        let input = &inputs[least];
        let (batch, rows) = input.batch.as_ref().expect("an input with a head has a batch");
        // Every row that sorts before the next input's head, ties by input.
        let take = match second {
            None => batch.num_rows() - input.row,
            Some(j) => {
                let next = inputs[j].head().expect("an input with a head");
                let (mut low, mut high) = (input.row, batch.num_rows());
                while low < high {
                    let middle = (low + high) / 2;
                    let row = rows.row(middle);
                    if row < next || (row == next && least < j) { low = middle + 1 } else { high = middle }
                }
                (low - input.row).max(1)
            }
        };
        let run = batch.slice(input.row, take);
        written.note(&run);
        pending_rows += take;
        pending.push(run);
        let input = &mut inputs[least];
        input.row += take;
        input.fill(&converter, key)?;
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

/// The inputs whose heads sort first and second (ties by input order).
fn least_two(inputs: &[MergeInput]) -> Option<(usize, Option<usize>)> {
    let mut heads = inputs.iter().enumerate().filter_map(|(i, input)| input.head().map(|h| (h, i)));
    let first = heads.next()?;
    let (mut least, mut second) = (first, None);
    for head in heads {
        if head < least {
            second = Some(least);
            least = head;
        } else if second.as_ref().is_none_or(|s| head < *s) {
            second = Some(head);
        }
    }
    Some((least.1, second.map(|(_, i)| i)))
}

/// The rows written so far: how many, and their time range.
#[derive(Default)]
struct Written {
    rows: i64,
    min_max: Option<(i64, i64)>,
}

impl Written {
    fn note(&mut self, run: &RecordBatch) {
        let Some((first, last)) = time_range(run) else { return };
        self.min_max = Some(self.min_max.map_or((first, last), |(min, max)| (min.min(first), max.max(last))));
        self.rows += run.num_rows() as i64;
    }

    fn info(self, columns: usize) -> Result<EncodedFileInfo, ParquetFileError> {
        let (min_time_ns, max_time_ns) =
            self.min_max.ok_or_else(|| ParquetFileError::Verify("no rows to write".into()))?;
        Ok(EncodedFileInfo { rows: self.rows, min_time_ns, max_time_ns, columns })
    }
}

/// Re-encodes one of our Parquet files (`rows` rows) into `out` with
/// `encoding`: the same schema and the same rows in the same order (its
/// recorded sort key, checked while streaming). The row count must match
/// `rows`.
pub fn reencode_file<R: ChunkReader + 'static, W: Write + Send>(
    input: R,
    rows: i64,
    out: W,
    encoding: Encoding,
) -> Result<EncodedFileInfo, ParquetFileError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(input)?;
    let schema = builder.schema().clone();
    let key = recorded_sort_key(builder.metadata()).and_then(|names| key_indices(&schema, &names));
    let key = key.unwrap_or_else(|| vec![0]);
    let batches: Batches = Box::new(builder.with_batch_size(STREAM_BATCH_ROWS).build()?);
    let info = merge_inputs(vec![batches], schema, out, encoding, &key)?;
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
    use bytes::Bytes;
    use parquet::file::reader::{FileReader, SerializedFileReader};

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
        assert!(verify(&file.bytes, 3, file.checksum_crc32c).is_ok());
        // Bytes whose checksum is right but that are no whole Parquet file.
        let n = file.bytes.len();
        let mut footer_too_long = file.bytes.clone();
        footer_too_long[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut no_magic = file.bytes.clone();
        no_magic[0] = b'X';
        for bad in [&file.bytes[..n - 3], &file.bytes[..4], &footer_too_long[..], &no_magic[..], &[][..]] {
            assert!(verify(bad, 3, crc32c::crc32c(bad)).is_err(), "{} bytes", bad.len());
        }
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
    fn a_merge_interleaves_sorted_files_of_older_schemas_in_key_order() {
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
        let keys: Vec<(Option<String>, i64)> = host_rows(&merged).into_iter().map(|(h, t, _)| (h, t)).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "sorted by host (null first), then time");
        let v = merged.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        let hosts = merged.column(1);
        assert_eq!(v.iter().filter(|v| *v == Some(-1.0)).count(), 20_000, "every row of the older file");
        assert_eq!(hosts.null_count(), 20_000, "its missing column is null");
        let at_six = times.iter().position(|t| *t == 6).unwrap();
        assert_eq!((times[at_six + 1], v.value(at_six), v.value(at_six + 1)), (6, 6.0, 6.0));
        check_footer(&Bytes::from(out.clone()), 60_000).unwrap();
        assert!(check_footer(&Bytes::from(out), 59_999).is_err());

        // A file that records a sort key its rows break is refused, not merged out of order.
        let claims_time_order = WriterProperties::builder()
            .set_sorting_columns(Some(vec![SortingColumn { column_idx: 0, descending: false, nulls_first: false }]))
            .build();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema.arrow_schema(), Some(claims_time_order)).unwrap();
        writer.write(&batch_at(&schema, vec![5, 1])).unwrap();
        let unsorted = Bytes::from(writer.into_inner().unwrap());
        assert!(merge(vec![unsorted], schema.arrow_schema(), Vec::new(), encoding).is_err());
    }

    /// `(host, time, v)` of every row, in file order.
    fn host_rows(batch: &RecordBatch) -> Vec<(Option<String>, i64, Option<f64>)> {
        let hosts = cast(batch.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
        let hosts = hosts.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        let v = batch.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        (0..batch.num_rows())
            .map(|i| {
                (
                    hosts.is_valid(i).then(|| hosts.value(i).to_string()),
                    times_of(batch)[i],
                    v.is_valid(i).then(|| v.value(i)),
                )
            })
            .collect()
    }

    #[test]
    fn a_file_of_a_few_rows_is_uncompressed_and_reads_back() {
        let schema = DatasetSchema::empty("time")
            .evolve(&[ColumnDef { name: "v".into(), kind: ColumnKind::Float }])
            .unwrap()
            .unwrap();
        let batch = |rows: i64| {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(TimestampNanosecondArray::from((0..rows).collect::<Vec<_>>())),
                Arc::new(Float64Array::from((0..rows).map(|r| r as f64 * 0.5).collect::<Vec<_>>())),
            ];
            RecordBatch::try_new(schema.arrow_schema(), columns).unwrap()
        };
        let codecs = |rows: i64| {
            let file = encode(&[batch(rows)], &schema, 1_000, 3).unwrap();
            assert_eq!(read_all(&file.bytes).num_rows() as i64, rows);
            let reader = SerializedFileReader::new(Bytes::from(file.bytes)).unwrap();
            let group = reader.metadata().row_group(0);
            group.columns().iter().map(|c| c.compression()).collect::<Vec<_>>()
        };
        let few = UNCOMPRESSED_ROWS_MAX as i64;
        assert!(codecs(few).iter().all(|c| *c == Compression::UNCOMPRESSED));
        assert!(codecs(few + 1).iter().all(|c| matches!(c, Compression::ZSTD(_))));
    }

    #[test]
    fn files_are_sorted_by_tags_then_time_and_record_it_with_bloom_filters() {
        let schema = DatasetSchema::empty("time")
            .evolve(&[
                ColumnDef { name: "host".into(), kind: ColumnKind::Tag },
                ColumnDef { name: "v".into(), kind: ColumnKind::Float },
                ColumnDef { name: "region".into(), kind: ColumnKind::Tag },
            ])
            .unwrap()
            .unwrap();
        // Two chunks, each in time order, whose dictionaries differ; region
        // has fewer distinct values than host, so it sorts first.
        let chunk = |times: Vec<i64>| {
            let names: Vec<Option<String>> =
                times.iter().map(|t| (t % 5 != 4).then(|| format!("h{}", t % 5))).collect();
            let host: TagDictionary = names.iter().map(Option::as_deref).collect();
            let region: TagDictionary = times.iter().map(|t| Some(if t % 5 < 2 { "west" } else { "east" })).collect();
            let v = Float64Array::from(times.iter().map(|t| *t as f64).collect::<Vec<_>>());
            let columns: Vec<ArrayRef> =
                vec![Arc::new(TimestampNanosecondArray::from(times)), Arc::new(host), Arc::new(v), Arc::new(region)];
            RecordBatch::try_new(schema.arrow_schema(), columns).unwrap()
        };
        let file =
            encode(&[chunk((0..3_000).rev().collect()), chunk((3_000..6_000).collect())], &schema, 1_000, 1).unwrap();
        assert_eq!((file.rows, file.min_time_ns, file.max_time_ns), (6_000, 0, 5_999));
        let read = read_all(&file.bytes);
        let region = cast(read.column(3), &arrow::datatypes::DataType::Utf8).unwrap();
        let region = region.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        let rows = host_rows(&read);
        let keys: Vec<(&str, Option<&str>, i64)> =
            rows.iter().enumerate().map(|(i, (h, t, _))| (region.value(i), h.as_deref(), *t)).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "region, then host (null first), then time");
        assert_eq!(keys[0], ("east", None, 4), "a null tag sorts first within its region");
        for (region, host, time) in &keys {
            let expected =
                (if time % 5 < 2 { "west" } else { "east" }, (time % 5 != 4).then(|| format!("h{}", time % 5)));
            assert_eq!((*region, host.map(str::to_string)), expected, "each row keeps its own tags");
        }
        let mut oracle: Vec<_> = rows.clone();
        oracle.sort_by_key(|r| r.1);
        assert_eq!(oracle.iter().map(|r| r.1).collect::<Vec<_>>(), (0..6_000).collect::<Vec<_>>(), "every row once");

        let reader = SerializedFileReader::new(Bytes::from(file.bytes.clone())).unwrap();
        let metadata = reader.metadata();
        assert_eq!(recorded_sort_key(metadata), Some(vec!["region".into(), "host".into(), "time".into()]));
        assert_eq!(metadata.num_row_groups(), 6);
        let with_blooms = parquet::file::serialized_reader::ReadOptionsBuilder::new()
            .with_reader_properties(
                parquet::file::properties::ReaderProperties::builder().set_read_bloom_filter(true).build(),
            )
            .build();
        let blooms = SerializedFileReader::new_with_options(Bytes::from(file.bytes.clone()), with_blooms).unwrap();
        for g in 0..metadata.num_row_groups() {
            let group = blooms.get_row_group(g).unwrap();
            assert!(group.get_column_bloom_filter(1).is_some() && group.get_column_bloom_filter(3).is_some());
            assert!(group.get_column_bloom_filter(2).is_none(), "no bloom filter on a field");
            let time = metadata.row_group(g).column(0);
            assert!(time.encodings().any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED), "times as deltas");
            assert!(time.dictionary_page_offset().is_none(), "no dictionary of times");
        }
        let chunks = metadata.row_groups().iter().flat_map(|g| g.columns());
        assert!(
            chunks.clone().all(|c| c.column_index_offset().is_some() && c.offset_index_offset().is_some()),
            "the page index: column and offset indexes"
        );
        assert!(chunks.filter(|c| c.column_index_offset().is_some()).count() == 6 * 4);

        // A merge with a file of the same key streams; one with an older,
        // time-only key is sorted by the key of the larger input; a
        // re-encode keeps the order.
        let again = encode(&[chunk((6_000..7_000).collect())], &schema, 1_000, 1).unwrap();
        let mut time_only = ArrowWriter::try_new(
            Vec::new(),
            schema.arrow_schema(),
            Some(
                properties(Encoding { zstd_level: 1, row_group_rows_max: 500 }, &schema.arrow_schema(), &[0]).unwrap(),
            ),
        )
        .unwrap();
        time_only.write(&chunk((7_000..8_000).collect())).unwrap();
        let time_only = time_only.into_inner().unwrap();
        let encoding = Encoding { zstd_level: 1, row_group_rows_max: 700 };
        let inputs = vec![Bytes::from(file.bytes.clone()), Bytes::from(again.bytes), Bytes::from(time_only)];
        let mut merged = Vec::new();
        let info = merge(inputs, schema.arrow_schema(), &mut merged, encoding).unwrap();
        assert_eq!((info.rows, info.min_time_ns, info.max_time_ns), (8_000, 0, 7_999));
        let mut reencoded = Vec::new();
        reencode_file(Bytes::from(merged.clone()), 8_000, &mut reencoded, encoding).unwrap();
        for bytes in [merged, reencoded] {
            let read = read_all(&bytes);
            let region = cast(read.column(3), &arrow::datatypes::DataType::Utf8).unwrap();
            let region = region.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
            let rows = host_rows(&read);
            let keys: Vec<(&str, Option<&str>, i64)> =
                rows.iter().enumerate().map(|(i, (h, t, _))| (region.value(i), h.as_deref(), *t)).collect();
            assert!(keys.windows(2).all(|w| w[0] <= w[1]), "the merged file keeps the key");
            let mut times: Vec<i64> = keys.iter().map(|k| k.2).collect();
            times.sort_unstable();
            assert_eq!(times, (0..8_000).collect::<Vec<_>>());
            let metadata = SerializedFileReader::new(Bytes::from(bytes)).unwrap().metadata().clone();
            assert_eq!(recorded_sort_key(&metadata), Some(vec!["region".into(), "host".into(), "time".into()]));
        }
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
        let tail: &[u8; 8] = file.bytes[file.bytes.len() - 8..].try_into().unwrap();
        let footer = FooterTail::try_new(tail).unwrap().metadata_length() as u64;
        assert!(read <= FOOTER_READ_BYTES + 4 + footer && read < len, "{read} of {len} bytes read: the footer only");
        assert_eq!(requests, 3, "a footer of 50 row groups takes a read of its own");
        // Times at random gaps, so the file is larger than the end read.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let times = (0..50_000i64).scan(0, |t, _| {
            *t += rand::Rng::random_range(&mut rng, 1..1_000_000);
            Some(*t)
        });
        let one_group = encode(&[batch_at(&schema, times.collect())], &schema, 100_000, 1).unwrap();
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
