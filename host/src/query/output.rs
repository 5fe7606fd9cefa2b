//! Result encoders: JSON, NDJSON, CSV and Arrow IPC, batch by batch, so a
//! large result is streamed and never held whole in memory.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::compute::cast_with_options;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use serde_json::{Value as Json, json};

use crate::error::{ErrorCode, Failure};

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
    pub fn parse(format: Option<&str>, accept: Option<&str>) -> Result<OutputFormat, Failure> {
        if let Some(format) = format {
            return match format {
                "json" => Ok(OutputFormat::Json),
                "ndjson" | "jsonl" => Ok(OutputFormat::Ndjson),
                "csv" => Ok(OutputFormat::Csv),
                "arrow" => Ok(OutputFormat::Arrow),
                other => Err(Failure::new(
                    ErrorCode::InvalidQuery,
                    format!("format {other:?} is not json, ndjson, csv or arrow"),
                )),
            };
        }
        Ok(accept.map_or(OutputFormat::Json, OutputFormat::negotiate))
    }

    /// The format an `Accept` header prefers: the listed format with the
    /// highest quality, the first listed on a tie; `q=0` means "not this"
    /// (RFC 9110 §12.4.2). JSON when it lists none of them.
    fn negotiate(accept: &str) -> OutputFormat {
        let mut best: Option<(OutputFormat, f32)> = None;
        for entry in accept.split(',') {
            let mut parts = entry.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, q)| q.trim().parse::<f32>().ok().filter(|q| q.is_finite()).unwrap_or(0.0));
            let format = match media.as_str() {
                "application/x-ndjson" | "application/jsonl" => OutputFormat::Ndjson,
                "text/csv" => OutputFormat::Csv,
                "application/vnd.apache.arrow.stream" => OutputFormat::Arrow,
                "application/json" => OutputFormat::Json,
                _ => continue,
            };
            if quality > 0.0 && best.is_none_or(|(_, q)| quality > q) {
                best = Some((format, quality));
            }
        }
        best.map_or(OutputFormat::Json, |(format, _)| format)
    }

    /// The format's name, as `format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Json => "json",
            OutputFormat::Ndjson => "ndjson",
            OutputFormat::Csv => "csv",
            OutputFormat::Arrow => "arrow",
        }
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

/// The Arrow type of a time column: UTC, in the column's own unit (so no
/// time is out of range), nanoseconds for epoch-ns integers.
fn arrow_time_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(unit, _) => DataType::Timestamp(*unit, Some("UTC".into())),
        _ => utc_nanoseconds(),
    }
}

/// All times are UTC: Arrow output marks them so.
fn utc_nanoseconds() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Renders time columns as RFC 3339 text (`as_text`) or UTC timestamps
/// (see `arrow_time_type`).
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
        if !as_text {
            let utc = arrow_time_type(column.data_type());
            fields.push(Field::new(field.name(), utc.clone(), true));
            // The same values, labelled UTC (a cast would parse the zone).
            columns.push(arrow::array::make_array(column.to_data().into_builder().data_type(utc).build()?));
            continue;
        }
        let nanoseconds = match column.data_type() {
            DataType::Int64 => column.clone(),
            // Checked: a time outside the nanosecond range (DuckDB's
            // infinities, years before 1677 or after 2262) fails the query
            // rather than becoming null.
            _ => {
                let checked = arrow::compute::CastOptions { safe: false, ..Default::default() };
                let nanoseconds = DataType::Timestamp(TimeUnit::Nanosecond, None);
                cast_with_options(&cast_with_options(column, &nanoseconds, &checked)?, &DataType::Int64, &checked)?
            }
        };
        let ints = nanoseconds.as_primitive::<Int64Type>();
        let mut text = StringBuilder::with_capacity(ints.len(), ints.len() * 30);
        for value in ints.iter() {
            match value {
                Some(ns) => text.append_value(crate::time::rfc3339(ns)),
                None => text.append_null(),
            }
        }
        fields.push(Field::new(field.name(), DataType::Utf8, true));
        columns.push(Arc::new(text.finish()));
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
                            Field::new(f.name(), arrow_time_type(f.data_type()), true)
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

    /// Encodes one batch. A value the format cannot hold refuses the query
    /// (400 `invalid_query`, naming the column and its type).
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, Failure> {
        let encoded = match self.format {
            OutputFormat::Arrow => {
                let writer = self.arrow.as_mut().expect("begin was called");
                with_timestamps(batch, &self.time_columns, false)
                    .and_then(|batch| writer.write(&batch))
                    .map(|()| std::mem::take(writer.get_mut()))
                    .map_err(|e| unencodable(self.format, None, &e))
            }
            text => encode_text(text, batch, &self.time_columns, self.rows == 0)
                .map_err(|e| unencodable(text, failing_column(text, batch, &self.time_columns), &e)),
        }?;
        self.rows += batch.num_rows() as u64;
        Ok(encoded)
    }

    /// The bytes that close the response; JSON carries `stats` (and `error`
    /// if the query failed after rows were sent).
    pub fn finish(&mut self, stats: &Json, error: Option<&Failure>) -> Vec<u8> {
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

/// Encodes a batch as JSON rows (comma-separated inside the `rows` array,
/// after the first batch with rows: `first_rows`), NDJSON lines or CSV
/// records.
fn encode_text(
    format: OutputFormat,
    batch: &RecordBatch,
    time_columns: &[String],
    first_rows: bool,
) -> Result<Vec<u8>, ArrowError> {
    let batch = with_timestamps(batch, time_columns, true)?;
    let batch = with_text_values(&batch, format)?;
    if format == OutputFormat::Csv {
        return csv_records(&batch);
    }
    let lines = json_lines(&batch)?;
    if format == OutputFormat::Ndjson {
        return Ok(lines);
    }
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

/// One JSON object per row, nulls written out.
fn json_lines(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut lines = Vec::new();
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(&mut lines);
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(lines)
}

/// Columns the text writers would get wrong, as text: dates (Arrow's
/// writers print an error message in place of DuckDB's infinite dates) and,
/// for CSV, which has no nesting, lists, structs and maps as JSON.
fn with_text_values(batch: &RecordBatch, format: OutputFormat) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let text = match field.data_type() {
            DataType::Date32 => Some(dates_as_text(column)?),
            DataType::Time64(unit) => Some(times_as_text(column, *unit)?),
            data_type if format == OutputFormat::Csv && is_nested(data_type) => Some(nested_as_json(field, column)?),
            _ => None,
        };
        match text {
            Some(text) => {
                fields.push(Field::new(field.name(), DataType::Utf8, true));
                columns.push(text);
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

fn is_nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::Struct(_)
            | DataType::Map(_, _)
    )
}

/// Days since the epoch as DuckDB writes dates: `YYYY-MM-DD`, `(BC)`
/// after years before 1, and its infinite dates as `infinity` and
/// `-infinity`. Every `i32` is a date, so this never fails.
fn dates_as_text(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let days = column.as_primitive::<arrow::datatypes::Date32Type>();
    let mut text = StringBuilder::with_capacity(days.len(), days.len() * 10);
    for value in days.iter() {
        match value {
            None => text.append_null(),
            Some(i32::MAX) => text.append_value("infinity"),
            Some(day) if day == -i32::MAX => text.append_value("-infinity"),
            Some(day) => {
                let (year, month, day) = civil_from_days(day.into());
                if year > 0 {
                    text.append_value(format!("{year:04}-{month:02}-{day:02}"));
                } else {
                    text.append_value(format!("{:04}-{month:02}-{day:02} (BC)", 1 - year));
                }
            }
        }
    }
    Ok(Arc::new(text.finish()))
}

/// Times of day as `HH:MM:SS[.fraction]`; DuckDB's `24:00:00` included,
/// which Arrow's writers cannot write.
fn times_as_text(column: &ArrayRef, unit: TimeUnit) -> Result<ArrayRef, ArrowError> {
    let (values, per_second, digits): (Vec<Option<i64>>, i64, usize) = match unit {
        TimeUnit::Microsecond => {
            (column.as_primitive::<arrow::datatypes::Time64MicrosecondType>().iter().collect(), 1_000_000, 6)
        }
        _ => (column.as_primitive::<arrow::datatypes::Time64NanosecondType>().iter().collect(), 1_000_000_000, 9),
    };
    let mut text = StringBuilder::with_capacity(values.len(), values.len() * 15);
    for value in values {
        let Some(value) = value else {
            text.append_null();
            continue;
        };
        let (seconds, fraction) = (value.div_euclid(per_second), value.rem_euclid(per_second));
        let clock = format!("{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60);
        if fraction == 0 {
            text.append_value(clock);
        } else {
            let fraction = format!("{fraction:0digits$}");
            text.append_value(format!("{clock}.{}", fraction.trim_end_matches('0')));
        }
    }
    Ok(Arc::new(text.finish()))
}

/// The proleptic Gregorian (year, month, day) of a day count since
/// 1970-01-01 (year 0 is 1 BC); H. Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Each value of a nested column as JSON text.
fn nested_as_json(field: &Field, column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let single = Schema::new(vec![field.clone().with_name("v")]);
    let lines = json_lines(&RecordBatch::try_new(Arc::new(single), vec![column.clone()])?)?;
    let mut text = StringBuilder::with_capacity(column.len(), lines.len());
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let row: Json = serde_json::from_slice(line).map_err(|e| ArrowError::JsonError(e.to_string()))?;
        match row.get("v") {
            None | Some(Json::Null) => text.append_null(),
            Some(value) => text.append_value(value.to_string()),
        }
    }
    Ok(Arc::new(text.finish()))
}

/// The first column that fails to encode on its own, and its error.
fn failing_column(format: OutputFormat, batch: &RecordBatch, time_columns: &[String]) -> Option<(Field, ArrowError)> {
    (0..batch.num_columns()).find_map(|i| {
        let column = batch.project(&[i]).ok()?;
        encode_text(format, &column, time_columns, true).err().map(|e| (batch.schema().field(i).clone(), e))
    })
}

/// The error of a result `format` cannot hold: the user's SQL asked for it,
/// so a 400 that names the column, never a 500.
fn unencodable(format: OutputFormat, column: Option<(Field, ArrowError)>, error: &ArrowError) -> Failure {
    let (what, error) = match &column {
        Some((field, error)) => (format!("column {:?} of type {}", field.name(), field.data_type()), error),
        None => ("the result".to_string(), error),
    };
    Failure::new(
        ErrorCode::InvalidQuery,
        format!(
            "{what} cannot be written as {} ({error}); cast it in the query (for example to VARCHAR) or use another format",
            format.name()
        ),
    )
}

/// CSV records (RFC 4180): a null is an empty field, a value that is empty
/// or holds a comma, quote or line break is quoted (`""` is the empty
/// string), so null and `""` stay apart. Values are written as Arrow's CSV
/// writer writes them.
fn csv_records(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let options = arrow::util::display::FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|column| {
            if column.data_type().is_nested() {
                Err(ArrowError::CsvError(format!("Nested type {} is not supported in CSV", column.data_type())))
            } else {
                arrow::util::display::ArrayFormatter::try_new(column.as_ref(), &options)
            }
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    // Logical nulls: a `NULL`-typed column has no null buffer.
    let nulls: Vec<_> = batch.columns().iter().map(|column| column.logical_nulls()).collect();
    let mut out = Vec::new();
    let mut value = String::new();
    for row in 0..batch.num_rows() {
        for (i, (nulls, formatter)) in nulls.iter().zip(&formatters).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if nulls.as_ref().is_some_and(|nulls| nulls.is_null(row)) {
                continue;
            }
            value.clear();
            formatter.value(row).write(&mut value).map_err(|e| ArrowError::CsvError(e.to_string()))?;
            if value.is_empty() || value.contains([',', '"', '\n', '\r']) {
                out.push(b'"');
                out.extend_from_slice(value.replace('"', "\"\"").as_bytes());
                out.push(b'"');
            } else {
                out.extend_from_slice(value.as_bytes());
            }
        }
        out.push(b'\n');
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_honours_quality() {
        let negotiate = |accept: &str| OutputFormat::parse(None, Some(accept)).unwrap();
        assert_eq!(negotiate("text/csv"), OutputFormat::Csv);
        assert_eq!(negotiate("text/csv;q=0"), OutputFormat::Json);
        assert_eq!(negotiate("text/csv; q=0.0, application/x-ndjson"), OutputFormat::Ndjson);
        assert_eq!(negotiate("TEXT/CSV;Q=0"), OutputFormat::Json);
        assert_eq!(negotiate("text/csv;q=0.5, application/vnd.apache.arrow.stream;q=0.9"), OutputFormat::Arrow);
        assert_eq!(negotiate("application/json, text/csv;q=0.9"), OutputFormat::Json);
        assert_eq!(negotiate("text/csv;q=nonsense"), OutputFormat::Json);
        assert_eq!(negotiate("text/html, */*;q=0.8"), OutputFormat::Json);
        assert_eq!(OutputFormat::parse(None, None).unwrap(), OutputFormat::Json);
        assert_eq!(OutputFormat::parse(Some("csv"), Some("text/csv;q=0")).unwrap(), OutputFormat::Csv);
    }

    #[test]
    fn times_of_day_are_written_as_text() {
        let micros: ArrayRef = Arc::new(arrow::array::Time64MicrosecondArray::from(vec![
            Some(0),
            Some(86_400_000_000),
            Some(3_723_500_000),
            None,
        ]));
        let text = times_as_text(&micros, TimeUnit::Microsecond).unwrap();
        let text: Vec<Option<&str>> = text.as_string::<i32>().iter().collect();
        assert_eq!(text, [Some("00:00:00"), Some("24:00:00"), Some("01:02:03.5"), None]);
    }

    #[test]
    fn dates_are_written_as_duckdb_writes_them() {
        let days: ArrayRef = Arc::new(arrow::array::Date32Array::from(vec![
            Some(0),
            Some(18_262),
            Some(-719_528),
            Some(-719_529),
            Some(-2_147_483_646),
            Some(2_147_483_646),
            Some(i32::MAX),
            Some(-i32::MAX),
            None,
        ]));
        let text = dates_as_text(&days).unwrap();
        let text: Vec<Option<&str>> = text.as_string::<i32>().iter().collect();
        assert_eq!(
            text,
            [
                Some("1970-01-01"),
                Some("2020-01-01"),
                Some("0001-01-01 (BC)"),
                Some("0002-12-31 (BC)"),
                Some("5877642-06-25 (BC)"),
                Some("5881580-07-10"),
                Some("infinity"),
                Some("-infinity"),
                None
            ]
        );
    }

    #[test]
    fn csv_tells_null_from_the_empty_string() {
        let text: ArrayRef =
            Arc::new(arrow::array::StringArray::from(vec![Some(""), None, Some("a,\"b\""), Some("x")]));
        let number: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![Some(1), Some(2), None, Some(4)]));
        let batch = RecordBatch::try_from_iter([("t", text), ("n", number)]).unwrap();
        let mut encoder = Encoder::new(OutputFormat::Csv, Vec::new());
        assert_eq!(String::from_utf8(encoder.begin(&batch.schema())).unwrap(), "t,n\n");
        assert_eq!(String::from_utf8(encoder.batch(&batch).unwrap()).unwrap(), "\"\",1\n,2\n\"a,\"\"b\"\"\",\nx,4\n");
    }

    #[test]
    fn csv_writes_nested_values_as_json_and_refuses_what_it_cannot_write() {
        let list: ArrayRef = Arc::new(arrow::array::ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
        ]));
        let batch = RecordBatch::try_from_iter([("l", list)]).unwrap();
        let mut encoder = Encoder::new(OutputFormat::Csv, Vec::new());
        encoder.begin(&batch.schema());
        assert_eq!(String::from_utf8(encoder.batch(&batch).unwrap()).unwrap(), "\"[1,null]\"\n\n", "null is empty");
        let union: ArrayRef = Arc::new(
            arrow::array::UnionArray::try_new(
                [(0i8, Arc::new(Field::new("k", DataType::Int32, true)))].into_iter().collect(),
                vec![0i8].into(),
                None,
                vec![Arc::new(arrow::array::Int32Array::from(vec![1])) as ArrayRef],
            )
            .unwrap(),
        );
        let batch = RecordBatch::try_from_iter([("u", union)]).unwrap();
        for format in [OutputFormat::Csv, OutputFormat::Json, OutputFormat::Ndjson] {
            let mut encoder = Encoder::new(format, Vec::new());
            encoder.begin(&batch.schema());
            let error = encoder.batch(&batch).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidQuery, "{error}");
            assert!(error.message.contains("column \"u\" of type Union"), "{error}");
        }
    }
}
