//! Encoding buffered rows as Parquet, re-encoding a file, and checking a Parquet file.

use arrow::array::{Array, ArrayRef, TimestampNanosecondArray, new_null_array};
use arrow::compute::{cast, concat_batches, interleave};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::file::reader::{FileReader, SerializedFileReader};

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
    let target = schema.arrow_schema();
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

/// Writes one time-sorted batch as a Parquet file.
fn write(all: &RecordBatch, encoding: Encoding) -> Result<Vec<u8>, ParquetFileError> {
    let time_column = all.schema().fields().first().map(|f| f.name().clone()).unwrap_or_default();
    let properties = with_time_convention(WriterProperties::builder(), &time_column)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(encoding.zstd_level)?))
        .set_max_row_group_row_count(Some(encoding.row_group_rows_max))
        .set_sorting_columns(Some(vec![SortingColumn { column_idx: 0, descending: false, nulls_first: false }]))
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, all.schema(), Some(properties))?;
    writer.write(all)?;
    writer.close()?;
    Ok(bytes)
}

/// Every row of a Parquet file as one batch, with the file's Arrow schema.
fn read_all(bytes: &[u8]) -> Result<RecordBatch, ParquetFileError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(bytes))?;
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build()?.collect::<Result<_, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}

/// Re-encodes one of our Parquet files (`rows` rows, sorted by time) with
/// `encoding`: the same schema and the same rows in the same order. The new
/// file is verified (checksum, footer, row count) and read back, and its
/// content must equal the original's.
pub fn reencode(bytes: &[u8], rows: i64, encoding: Encoding) -> Result<EncodedFile, ParquetFileError> {
    let original = read_all(bytes)?;
    if original.num_rows() as i64 != rows {
        return Err(ParquetFileError::Verify(format!("the file holds {} rows, expected {rows}", original.num_rows())));
    }
    let times = original
        .columns()
        .first()
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| ParquetFileError::Verify("the first column is not a nanosecond timestamp".into()))?;
    let (min_time_ns, max_time_ns) = match (times.values().first(), times.values().last()) {
        (Some(min), Some(max)) => (*min, *max),
        _ => return Err(ParquetFileError::Verify("no rows to re-encode".into())),
    };
    let bytes = write(&original, encoding)?;
    let checksum_crc32c = crc32c::crc32c(&bytes);
    verify(&bytes, rows, checksum_crc32c)?;
    // Pair assertion: what the new file decodes to is what the old one held.
    if read_all(&bytes)? != original {
        return Err(ParquetFileError::Verify("the re-encoded file's rows differ from the original's".into()));
    }
    let columns = original.num_columns();
    Ok(EncodedFile { bytes, rows, min_time_ns, max_time_ns, checksum_crc32c, columns })
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

    #[test]
    fn reencoding_keeps_every_row_and_changes_only_the_encoding() {
        let schema = DatasetSchema::empty("time")
            .evolve(&[
                ColumnDef { name: "host".into(), kind: ColumnKind::Tag },
                ColumnDef { name: "v".into(), kind: ColumnKind::Float },
            ])
            .unwrap()
            .unwrap();
        let rows = 10_000;
        let batch = RecordBatch::try_new(
            schema.arrow_schema(),
            vec![
                Arc::new(TimestampNanosecondArray::from((0..rows).collect::<Vec<i64>>())),
                Arc::new(
                    (0..rows)
                        .map(|i| Some(["a", "b", "c", "d", "e", "f", "g"][(i % 7) as usize]))
                        .collect::<arrow::array::DictionaryArray<arrow::datatypes::Int32Type>>(),
                ),
                Arc::new(Float64Array::from((0..rows).map(|i| (i % 100) as f64).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let original = encode(&[batch], &schema, 1_000_000, 1).unwrap();
        let encoding = Encoding { zstd_level: 9, row_group_rows_max: 1_000 };
        let again = reencode(&original.bytes, original.rows, encoding).unwrap();
        assert_ne!(again.checksum_crc32c, original.checksum_crc32c);
        assert_eq!((again.rows, again.min_time_ns, again.max_time_ns), (rows, 0, rows - 1));
        assert_eq!(read_all(&again.bytes).unwrap(), read_all(&original.bytes).unwrap());
        let groups = SerializedFileReader::new(Bytes::from(again.bytes.clone())).unwrap().metadata().num_row_groups();
        assert_eq!(groups, 10);
        assert!(reencode(&original.bytes, rows + 1, encoding).is_err(), "a row count that disagrees is refused");
        assert!(reencode(&original.bytes[..original.bytes.len() / 2], rows, encoding).is_err());
        for file in [&original, &again] {
            let reader = SerializedFileReader::new(Bytes::from(file.bytes.clone())).unwrap();
            let metadata = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
            let value = |key: &str| metadata.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone());
            assert_eq!(value("strata.time_zone").as_deref(), Some("UTC"), "{metadata:?}");
            assert_eq!(value("strata.time_unit").as_deref(), Some("ns"));
            assert_eq!(value(TIME_COLUMN_KEY).as_deref(), Some("time"));
        }
    }
}
