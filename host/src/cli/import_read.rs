//! `strata import`'s readers: a file cut into request bodies of at most
//! `batch_rows` rows, read as it is sent (never the whole file in memory).
//!
//! Line protocol and NDJSON go as they are, line for line, so the server's
//! line numbers map back to the file's. A CSV row becomes one NDJSON
//! record (a value that parses as a number is sent as one, `true`/`false`
//! as booleans, an empty cell is missing); a Parquet batch becomes NDJSON
//! with its timestamps as epoch nanoseconds. Each batch knows where it
//! starts and ends in the file, so an import resumes after the last
//! acknowledged batch and cuts the rest into the same batches.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Value as Json};

use super::client::CliError;

/// A file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum ImportFormat {
    /// InfluxDB line protocol (`.lp`, `.line`, `.txt`).
    Lp,
    /// CSV with a header row (`.csv`).
    Csv,
    /// One JSON object per line (`.ndjson`, `.jsonl`, `.json`).
    Ndjson,
    /// Apache Parquet (`.parquet`).
    Parquet,
}

impl ImportFormat {
    /// The format a file's extension names.
    pub fn of(path: &Path) -> Result<ImportFormat, CliError> {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match extension.as_str() {
            "lp" | "line" | "txt" | "influx" => Ok(ImportFormat::Lp),
            "csv" => Ok(ImportFormat::Csv),
            "ndjson" | "jsonl" | "json" => Ok(ImportFormat::Ndjson),
            "parquet" | "pq" => Ok(ImportFormat::Parquet),
            _ => Err(CliError::Usage(format!(
                "{}: cannot tell the format from the extension; pass --format lp|csv|ndjson|parquet",
                path.display()
            ))),
        }
    }
}

/// Where a batch starts or ends in its file: the byte offset (rows, for
/// Parquet), the next line's number and the rows before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Byte offset (text formats) or row index (Parquet).
    pub offset: u64,
    /// The 1-based number of the next line (text formats).
    pub line: u64,
    /// Rows before this position.
    pub rows: u64,
}

/// One request body.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The batch's number in the file, from 0.
    pub index: u64,
    /// Where it starts.
    pub start: Position,
    /// Where the next batch starts.
    pub end: Position,
    /// The body: one row per line.
    pub body: Bytes,
    /// For each line of the body (1-based), the file line (or Parquet row)
    /// it came from; empty when body line N is file line `start.line + N - 1`.
    pub origins: Vec<u64>,
    /// Rows in the body.
    pub rows: u64,
}

impl Batch {
    /// The file line (Parquet: the 1-based row) of the body's line `n`.
    pub fn origin(&self, n: u64) -> u64 {
        match self.origins.get((n as usize).wrapping_sub(1)) {
            Some(origin) => *origin,
            None => self.start.line + n.saturating_sub(1),
        }
    }
}

/// How batches are cut.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Rows per batch.
    pub rows: usize,
    /// A batch closes early past this many bytes.
    pub bytes: usize,
}

/// Reads a file into batches.
pub struct Reader {
    source: Source,
}

enum Source {
    /// Line protocol or NDJSON: lines as they are.
    Lines { reader: BufReader<File>, at: Position, next: u64, cut: Cut, ndjson: bool },
    /// CSV rows as NDJSON records.
    Csv { reader: Box<csv::Reader<File>>, headers: Vec<String>, at: Position, next: u64, cut: Cut },
    /// Parquet batches as NDJSON records.
    Parquet { reader: ParquetRecordBatchReader, at: Position, next: u64 },
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> CliError {
    CliError::Local(format!("{}: {error}", path.display()))
}

/// The number of rows a Parquet file holds (for progress), if it is one.
pub fn parquet_rows(path: &Path) -> Result<u64, CliError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| io_error(path, e))?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
}

impl Reader {
    /// Opens `path` at `from` (the start, or where an earlier import's last
    /// acknowledged batch ended), batch number `next`.
    pub fn open(path: &Path, format: ImportFormat, cut: Cut, from: Position, next: u64) -> Result<Reader, CliError> {
        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
        match format {
            ImportFormat::Lp | ImportFormat::Ndjson => {
                file.seek(SeekFrom::Start(from.offset)).map_err(|e| io_error(path, e))?;
                let at = Position { line: from.line.max(1), ..from };
                let ndjson = format == ImportFormat::Ndjson;
                let reader = BufReader::with_capacity(1 << 20, file);
                Ok(Reader { source: Source::Lines { reader, at, next, cut, ndjson } })
            }
            ImportFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(file);
                let headers: Vec<String> =
                    reader.headers().map_err(|e| io_error(path, e))?.iter().map(str::to_string).collect();
                let mut at = from;
                if from.offset > 0 {
                    let mut position = csv::Position::new();
                    position.set_byte(from.offset).set_line(from.line).set_record(from.rows + 1);
                    reader.seek(position).map_err(|e| io_error(path, e))?;
                } else {
                    at = Position { offset: reader.position().byte(), line: reader.position().line(), rows: 0 };
                }
                Ok(Reader { source: Source::Csv { reader: Box::new(reader), headers, at, next, cut } })
            }
            ImportFormat::Parquet => {
                let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| io_error(path, e))?;
                let reader = builder
                    .with_batch_size(cut.rows)
                    .with_offset(from.offset as usize)
                    .build()
                    .map_err(|e| io_error(path, e))?;
                Ok(Reader { source: Source::Parquet { reader, at: from, next } })
            }
        }
    }

    /// The next batch, or `None` at the end of the file.
    pub fn next_batch(&mut self, path: &Path) -> Result<Option<Batch>, CliError> {
        match &mut self.source {
            Source::Lines { reader, at, next, cut, ndjson } => lines(reader, at, next, *cut, *ndjson, path),
            Source::Csv { reader, headers, at, next, cut } => csv_rows(reader, headers, at, next, *cut, path),
            Source::Parquet { reader, at, next } => parquet_batch(reader, at, next, path),
        }
    }
}

/// Whether a line-protocol or NDJSON line holds a row (not blank, not a
/// line-protocol comment).
fn holds_row(line: &[u8], ndjson: bool) -> bool {
    let text = line.trim_ascii();
    !text.is_empty() && (ndjson || text[0] != b'#')
}

fn lines(
    reader: &mut BufReader<File>,
    at: &mut Position,
    next: &mut u64,
    cut: Cut,
    ndjson: bool,
    path: &Path,
) -> Result<Option<Batch>, CliError> {
    let start = *at;
    let mut body = Vec::with_capacity(cut.bytes.min(1 << 22));
    let mut rows = 0u64;
    while rows < cut.rows as u64 && body.len() < cut.bytes {
        let before = body.len();
        let read = reader.read_until(b'\n', &mut body).map_err(|e| io_error(path, e))?;
        if read == 0 {
            break;
        }
        if body.last() != Some(&b'\n') {
            body.push(b'\n');
        }
        at.offset += read as u64;
        at.line += 1;
        if holds_row(&body[before..], ndjson) {
            rows += 1;
        }
    }
    if at.offset == start.offset {
        return Ok(None);
    }
    at.rows += rows;
    let batch = Batch { index: *next, start, end: *at, body: Bytes::from(body), origins: Vec::new(), rows };
    *next += 1;
    Ok(Some(batch))
}

/// A CSV cell as JSON: empty is missing, numbers and booleans typed.
fn csv_value(cell: &str) -> Option<Json> {
    if cell.is_empty() {
        return None;
    }
    if let Ok(integer) = cell.parse::<i64>() {
        return Some(Json::from(integer));
    }
    if let Ok(float) = cell.parse::<f64>()
        && float.is_finite()
    {
        return serde_json::Number::from_f64(float).map(Json::Number);
    }
    match cell {
        "true" | "TRUE" | "True" => Some(Json::Bool(true)),
        "false" | "FALSE" | "False" => Some(Json::Bool(false)),
        _ => Some(Json::String(cell.to_string())),
    }
}

fn csv_rows(
    reader: &mut csv::Reader<File>,
    headers: &[String],
    at: &mut Position,
    next: &mut u64,
    cut: Cut,
    path: &Path,
) -> Result<Option<Batch>, CliError> {
    let start = *at;
    let mut body = Vec::new();
    let mut origins = Vec::new();
    let mut record = csv::StringRecord::new();
    while origins.len() < cut.rows && body.len() < cut.bytes {
        let line = reader.position().line();
        let more = reader.read_record(&mut record).map_err(|e| io_error(path, format!("line {line}: {e}")))?;
        if !more {
            break;
        }
        let mut object = Map::new();
        for (name, cell) in headers.iter().zip(record.iter()) {
            if let Some(value) = csv_value(cell) {
                object.insert(name.clone(), value);
            }
        }
        serde_json::to_writer(&mut body, &Json::Object(object)).map_err(|e| io_error(path, e))?;
        body.push(b'\n');
        origins.push(record.position().map_or(line, |p| p.line()));
    }
    if origins.is_empty() {
        return Ok(None);
    }
    let position = reader.position();
    *at = Position { offset: position.byte(), line: position.line(), rows: at.rows + origins.len() as u64 };
    let rows = origins.len() as u64;
    let batch = Batch { index: *next, start, end: *at, body: Bytes::from(body), origins, rows };
    *next += 1;
    Ok(Some(batch))
}

/// Timestamps as epoch nanoseconds and dictionaries as their values: what
/// the records endpoint reads back exactly.
fn json_ready(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let converted = match field.data_type() {
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                let nanos = arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
                arrow::compute::cast(&nanos, &DataType::Int64)?
            }
            DataType::Dictionary(_, values) => arrow::compute::cast(column, values)?,
            _ => column.clone(),
        };
        fields.push(Field::new(field.name(), converted.data_type().clone(), true));
        columns.push(converted);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

fn parquet_batch(
    reader: &mut ParquetRecordBatchReader,
    at: &mut Position,
    next: &mut u64,
    path: &Path,
) -> Result<Option<Batch>, CliError> {
    let Some(batch) = reader.next() else { return Ok(None) };
    let batch = batch.and_then(|b| json_ready(&b)).map_err(|e| io_error(path, e))?;
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    writer.write(&batch).map_err(|e| io_error(path, e))?;
    writer.finish().map_err(|e| io_error(path, e))?;
    let body = writer.into_inner();
    let start = *at;
    let rows = batch.num_rows() as u64;
    *at = Position { offset: at.offset + rows, line: at.line + rows, rows: at.rows + rows };
    let origins = (start.offset + 1..=start.offset + rows).collect();
    let out = Batch { index: *next, start, end: *at, body: Bytes::from(body), origins, rows };
    *next += 1;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn temp(name: &str, contents: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("strata-import-read-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap().write_all(contents.as_bytes()).unwrap();
        path
    }

    fn all(path: &Path, format: ImportFormat, rows: usize, from: Position) -> Vec<Batch> {
        let cut = Cut { rows, bytes: 1 << 20 };
        let mut reader = Reader::open(path, format, cut, from, 0).unwrap();
        std::iter::from_fn(|| reader.next_batch(path).unwrap()).collect()
    }

    #[test]
    fn line_protocol_batches_keep_line_numbers_and_resume_at_offsets() {
        let path = temp("a.lp", "# comment\nm v=1 1\n\nm v=2 2\nm v=3 3\nm v=4 4");
        let batches = all(&path, ImportFormat::Lp, 2, Position::default());
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].rows, 2);
        assert_eq!(&batches[0].body[..], b"# comment\nm v=1 1\n\nm v=2 2\n");
        assert_eq!(batches[1].origin(2), 6, "the body's second line is the file's sixth");
        assert_eq!(&batches[1].body[..], b"m v=3 3\nm v=4 4\n");
        let resumed = all(&path, ImportFormat::Lp, 2, batches[0].end);
        assert_eq!(&resumed[0].body[..], &batches[1].body[..]);
        assert_eq!(resumed[0].start, batches[1].start);
    }

    #[test]
    fn csv_rows_become_typed_records_with_their_lines() {
        let path = temp("a.csv", "time,host,usage,up\n1,\"a\nb\",1.5,true\n2,c,,false\n3,d,7,true\n");
        let batches = all(&path, ImportFormat::Csv, 2, Position::default());
        assert_eq!(batches.len(), 2);
        let first = String::from_utf8(batches[0].body.to_vec()).unwrap();
        assert_eq!(
            first,
            "{\"host\":\"a\\nb\",\"time\":1,\"up\":true,\"usage\":1.5}\n{\"host\":\"c\",\"time\":2,\"up\":false}\n"
        );
        assert_eq!(batches[0].origins, vec![2, 4], "a quoted newline makes the second row line 4");
        let resumed = all(&path, ImportFormat::Csv, 2, batches[0].end);
        assert_eq!(resumed[0].body, batches[1].body);
        assert_eq!(resumed[0].origins, vec![5]);
    }

    #[test]
    fn formats_follow_extensions() {
        assert_eq!(ImportFormat::of(Path::new("x.LP")).unwrap(), ImportFormat::Lp);
        assert_eq!(ImportFormat::of(Path::new("x.jsonl")).unwrap(), ImportFormat::Ndjson);
        assert!(ImportFormat::of(Path::new("x.bin")).is_err());
    }
}
