//! Result encoders: JSON, NDJSON, CSV and Arrow IPC, batch by batch, so a
//! large result is streamed and never held whole in memory.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use serde_json::{Value as Json, json};

use crate::error::{ApiError, ErrorCode};

/// The output format of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `{"columns":[…],"rows":[{…},…],"stats":{…}}`.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

impl OutputFormat {
    /// From a `format` value or an `Accept` header.
    pub fn parse(format: Option<&str>, accept: Option<&str>) -> Result<OutputFormat, ApiError> {
        if let Some(format) = format {
            return match format {
                "json" => Ok(OutputFormat::Json),
                "ndjson" | "jsonl" => Ok(OutputFormat::Ndjson),
                "csv" => Ok(OutputFormat::Csv),
                "arrow" => Ok(OutputFormat::Arrow),
                other => Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("format {other:?} is not json, ndjson, csv or arrow"),
                )),
            };
        }
        let accept = accept.unwrap_or("");
        Ok(if accept.contains("application/x-ndjson") || accept.contains("application/jsonl") {
            OutputFormat::Ndjson
        } else if accept.contains("text/csv") {
            OutputFormat::Csv
        } else if accept.contains("application/vnd.apache.arrow.stream") {
            OutputFormat::Arrow
        } else {
            OutputFormat::Json
        })
    }

    /// The `Content-Type` of the response.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json => "application/json",
            OutputFormat::Ndjson => "application/x-ndjson",
            OutputFormat::Csv => "text/csv",
            OutputFormat::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// Whether a column holds times: a timestamp, or epoch-ns integers that the
/// plan named (`time_columns`, e.g. downsample buckets).
fn is_time(field: &Field, time_columns: &[String]) -> bool {
    matches!(field.data_type(), DataType::Timestamp(_, _))
        || (field.data_type() == &DataType::Int64 && time_columns.contains(field.name()))
}

/// All times are UTC: Arrow output marks them so.
fn utc_nanoseconds() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Renders time columns as RFC 3339 text (`as_text`) or UTC nanosecond
/// timestamps.
fn with_timestamps(batch: &RecordBatch, time_columns: &[String], as_text: bool) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !is_time(field, time_columns) {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        }
        let nanoseconds = match column.data_type() {
            DataType::Int64 => column.clone(),
            _ => cast(&cast(column, &DataType::Timestamp(TimeUnit::Nanosecond, None))?, &DataType::Int64)?,
        };
        if as_text {
            let ints = nanoseconds.as_primitive::<Int64Type>();
            let mut text = StringBuilder::with_capacity(ints.len(), ints.len() * 30);
            for value in ints.iter() {
                match value {
                    Some(ns) => text.append_value(crate::http::rfc3339(ns)),
                    None => text.append_null(),
                }
            }
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text.finish()));
        } else {
            fields.push(Field::new(field.name(), utc_nanoseconds(), true));
            columns.push(cast(&nanoseconds, &utc_nanoseconds())?);
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Encodes batches into response bytes, one call per batch.
pub struct Encoder {
    format: OutputFormat,
    time_columns: Vec<String>,
    rows: u64,
    started: bool,
    arrow: Option<StreamWriter<Vec<u8>>>,
}

impl Encoder {
    /// An encoder for `format`; `time_columns` hold epoch ns to render as times.
    pub fn new(format: OutputFormat, time_columns: Vec<String>) -> Encoder {
        Encoder { format, time_columns, rows: 0, started: false, arrow: None }
    }

    /// Whether the format can report a failure inside the answer (JSON's
    /// `error` member); the others can only be aborted.
    pub fn reports_errors_in_band(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Rows encoded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The bytes that open the response (JSON: the column list).
    pub fn begin(&mut self, schema: &SchemaRef) -> Vec<u8> {
        self.started = true;
        match self.format {
            OutputFormat::Json => {
                let columns: Vec<Json> = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let kind = if self.time_columns.contains(f.name()) {
                            "time".to_string()
                        } else {
                            type_name(f.data_type())
                        };
                        json!({ "name": f.name(), "type": kind })
                    })
                    .collect();
                format!("{{\"columns\":{},\"rows\":[", Json::Array(columns)).into_bytes()
            }
            OutputFormat::Csv => {
                let names: Vec<String> = schema.fields().iter().map(|f| csv_field(f.name())).collect();
                format!("{}\n", names.join(",")).into_bytes()
            }
            OutputFormat::Ndjson => Vec::new(),
            OutputFormat::Arrow => {
                let converted: Vec<Field> = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        if is_time(f, &self.time_columns) {
                            Field::new(f.name(), utc_nanoseconds(), true)
                        } else {
                            f.as_ref().clone()
                        }
                    })
                    .collect();
                let mut writer = StreamWriter::try_new(Vec::new(), &Schema::new(converted)).expect("in-memory IPC");
                let bytes = std::mem::take(writer.get_mut());
                self.arrow = Some(writer);
                bytes
            }
        }
    }

    /// Encodes one batch.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ApiError> {
        let failed = |e: ArrowError| ApiError::new(ErrorCode::Internal, format!("encoding results: {e}"));
        let first_rows = self.rows == 0;
        self.rows += batch.num_rows() as u64;
        match self.format {
            OutputFormat::Json | OutputFormat::Ndjson => {
                let batch = with_timestamps(batch, &self.time_columns, true).map_err(failed)?;
                let mut lines = Vec::new();
                {
                    let mut writer = arrow::json::WriterBuilder::new()
                        .with_explicit_nulls(true)
                        .build::<_, arrow::json::writer::LineDelimited>(&mut lines);
                    writer.write(&batch).map_err(failed)?;
                    writer.finish().map_err(failed)?;
                }
                if self.format == OutputFormat::Ndjson {
                    return Ok(lines);
                }
                // Rows separated by commas inside the "rows" array.
                let mut out = Vec::with_capacity(lines.len() + 1);
                let mut first = first_rows;
                for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(line);
                }
                Ok(out)
            }
            OutputFormat::Csv => {
                let batch = with_timestamps(batch, &self.time_columns, true).map_err(failed)?;
                let mut out = Vec::new();
                {
                    let mut writer = arrow::csv::WriterBuilder::new().with_header(false).build(&mut out);
                    writer.write(&batch).map_err(failed)?;
                }
                Ok(out)
            }
            OutputFormat::Arrow => {
                let batch = with_timestamps(batch, &self.time_columns, false).map_err(failed)?;
                let writer = self.arrow.as_mut().expect("begin was called");
                writer.write(&batch).map_err(failed)?;
                Ok(std::mem::take(writer.get_mut()))
            }
        }
    }

    /// The bytes that close the response; JSON carries `stats` (and `error`
    /// if the query failed after rows were sent).
    pub fn finish(&mut self, stats: &Json, error: Option<&ApiError>) -> Vec<u8> {
        match self.format {
            OutputFormat::Json => {
                let mut tail = format!("],\"stats\":{stats}");
                if let Some(error) = error {
                    tail.push_str(&format!(",\"error\":{}", error.body()["error"]));
                }
                tail.push('}');
                tail.into_bytes()
            }
            OutputFormat::Arrow => {
                let Some(writer) = self.arrow.as_mut() else { return Vec::new() };
                let _ = writer.finish();
                std::mem::take(writer.get_mut())
            }
            OutputFormat::Ndjson | OutputFormat::Csv => Vec::new(),
        }
    }
}

fn csv_field(name: &str) -> String {
    if name.contains([',', '"', '\n', '\r']) { format!("\"{}\"", name.replace('"', "\"\"")) } else { name.to_string() }
}

fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => "text".into(),
        DataType::Float64 | DataType::Float32 => "float".into(),
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => "integer".into(),
        DataType::UInt64 | DataType::UInt32 | DataType::UInt16 | DataType::UInt8 => "unsigned".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Timestamp(_, _) => "time".into(),
        other => other.to_string().to_lowercase(),
    }
}
