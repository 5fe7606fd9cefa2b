//! InfluxDB line protocol, parsed straight into columns.
//!
//! `measurement[,tag=value…] field=value[,field=value…] [timestamp]`, with the
//! escaping rules of InfluxDB: in measurements `\,` and `\ `; in tag keys, tag
//! values and field keys `\,`, `\=` and `\ `; in string field values `\"` and
//! `\\`. Integers end in `i`, unsigned integers in `u`; booleans are
//! `t|T|true|True|TRUE|f|F|false|False|FALSE`; everything else numeric is a
//! float. The measurement is stored in the `_measurement` tag column.
//!
//! A line that fails is reported with its number and does not touch the batch;
//! the caller decides whether the good lines are kept (`accept_partial`).
//! A line over a size limit (a tag value or the measurement over
//! `tag_value_bytes_max`, a string field over `string_value_bytes_max`, a
//! tag or field key over the column name limit) refuses the whole body, like
//! a schema conflict: a limit says what the server accepts, not that one
//! line was garbled.

use rustc_hash::FxHashMap;

use super::batch::{BatchBuilder, RowError, Value};
use super::{IngestLimits, MEASUREMENT_COLUMN, Precision, ValueBytesLimit};
use crate::error::ErrorCode;
use crate::schema::ColumnKind;

/// One rejected line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line_number: usize,
    /// The line, cut to 256 bytes.
    pub original_line: String,
    /// What was wrong.
    pub error_message: String,
}

/// Why the whole body was refused (as opposed to single lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// More lines than `lines_max`.
    TooManyLines(usize),
    /// A column kind conflicts with the stored schema.
    Conflict(RowError),
    /// A line breaks a size limit.
    Limit {
        /// 1-based line number in the body.
        line_number: usize,
        /// The limit's key: `limits.tag_value_bytes_max`, … .
        limit: &'static str,
        /// What was too large.
        message: String,
    },
}

impl crate::error::Coded for BodyError {
    fn code(&self) -> ErrorCode {
        match self {
            BodyError::TooManyLines(_) | BodyError::Limit { .. } => ErrorCode::LimitExceeded,
            BodyError::Conflict(_) => ErrorCode::SchemaConflict,
        }
    }

    fn detail(&self) -> Option<serde_json::Value> {
        match self {
            BodyError::TooManyLines(_) => None,
            BodyError::Limit { line_number, limit, .. } => {
                Some(serde_json::json!({ "line_number": line_number, "limit": limit }))
            }
            BodyError::Conflict(error) => {
                let column = match error {
                    RowError::Conflict { column, .. } => column.as_str(),
                    _ => "",
                };
                Some(serde_json::json!({ "column": column }))
            }
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooManyLines(max) => write!(f, "more than {max} lines in one request (rows_per_request_max)"),
            BodyError::Limit { line_number, message, .. } => {
                write!(f, "line {line_number}: {message}; nothing was written")
            }
            BodyError::Conflict(error) => write!(f, "{error}"),
        }
    }
}

/// Parses `body` into `builder`, returning the rejected lines.
pub fn parse<'b>(
    body: &'b [u8],
    precision: Precision,
    default_time_ns: i64,
    limits: &IngestLimits,
    builder: &mut BatchBuilder<'_>,
) -> Result<Vec<LineError>, BodyError> {
    let mut errors = Vec::new();
    let mut caches = LineCaches::default();
    let mut values: Vec<(usize, Value<'b>)> = Vec::with_capacity(32);
    let mut lines = 0usize;
    // Validate UTF-8 once for the whole body when it is valid (the usual
    // case), else line by line; everything below slices the &str at ASCII
    // delimiters, which are always character boundaries.
    let text = std::str::from_utf8(body).ok();
    for (index, range) in split_lines(body).enumerate() {
        let raw_line = &body[range.clone()];
        let trimmed = trim_line(raw_line);
        if trimmed.is_empty() || raw_line[trimmed.start] == b'#' {
            continue;
        }
        lines += 1;
        if lines > limits.rows_per_request_max {
            return Err(BodyError::TooManyLines(limits.rows_per_request_max));
        }
        values.clear();
        let trimmed = range.start + trimmed.start..range.start + trimmed.end;
        let line = match text {
            Some(text) => &text[trimmed],
            None => match std::str::from_utf8(&body[trimmed]) {
                Ok(line) => line,
                Err(_) => {
                    errors.push(line_error(index, raw_line, "invalid UTF-8".to_string()));
                    continue;
                }
            },
        };
        match parse_line(line, precision, default_time_ns, limits, builder, &mut caches, &mut values) {
            Ok(time_ns) => match builder.push_record(index + 1, time_ns, &values) {
                Ok(()) => {}
                Err(error @ RowError::Conflict { .. }) => return Err(BodyError::Conflict(error)),
                Err(error) => errors.push(line_error(index, raw_line, error.to_string())),
            },
            Err(LineFailure::Conflict(error)) => return Err(BodyError::Conflict(error)),
            Err(LineFailure::Limit { limit, message }) => {
                return Err(BodyError::Limit { line_number: index + 1, limit, message });
            }
            Err(LineFailure::Syntax(message)) => errors.push(line_error(index, raw_line, message)),
        }
    }
    Ok(errors)
}

/// Where the lines of `body` are, as `split` on `\n` gives them, found
/// with SIMD.
fn split_lines(body: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', body).map(Some).chain(std::iter::once(None)).map(move |end| {
        let end = end.unwrap_or(body.len());
        let line = start..end;
        start = end + 1;
        line
    })
}

fn line_error(index: usize, raw_line: &[u8], message: String) -> LineError {
    let cut = &raw_line[..raw_line.len().min(256)];
    LineError {
        line_number: index + 1,
        original_line: String::from_utf8_lossy(cut).into_owned(),
        error_message: message,
    }
}

/// The part of `line` without leading blanks and trailing blanks and `\r`.
fn trim_line(line: &[u8]) -> std::ops::Range<usize> {
    let mut start = 0;
    let mut end = line.len();
    while start < end && (line[start] == b' ' || line[start] == b'\t') {
        start += 1;
    }
    while end > start && matches!(line[end - 1], b'\r' | b' ' | b'\t') {
        end -= 1;
    }
    start..end
}

/// What one body's lines share.
#[derive(Default)]
struct LineCaches<'b> {
    /// Series text (measurement and tags) → where its resolved tags are in
    /// `resolved` (one allocation for all series, however many).
    series: FxHashMap<&'b str, std::ops::Range<usize>>,
    /// Every cached series' `(column, dictionary key)` pairs, back to back.
    resolved: Vec<(usize, i32)>,
    /// The previous new series' tag keys (as written) and columns, in
    /// order: series usually name the same tags, and comparing is cheaper
    /// than hashing every key.
    tag_layout: Vec<(&'b str, usize)>,
    /// The previous line's field keys and columns, in order. Lines usually
    /// repeat them, and comparing is cheaper than hashing every key.
    field_layout: Vec<(&'b str, usize)>,
    /// Lines whose series was (`hits`) and was not (`misses`) in `series`.
    hits: usize,
    misses: usize,
}

impl LineCaches<'_> {
    /// Misses after which a cache that rarely hits is no longer kept.
    const SERIES_MISSES_TRIED: usize = 1024;

    /// Whether lines still look their series up: a body whose lines mostly
    /// name series not seen before in it (a request over many thousands of
    /// series) would pay for hashing and storing each series for nothing.
    #[inline]
    fn series_cached(&self) -> bool {
        self.misses < Self::SERIES_MISSES_TRIED || self.hits >= self.misses / 8
    }
}

enum LineFailure {
    Syntax(String),
    Conflict(RowError),
    Limit { limit: &'static str, message: String },
}

impl From<RowError> for LineFailure {
    fn from(error: RowError) -> LineFailure {
        match error {
            RowError::Conflict { .. } => LineFailure::Conflict(error),
            RowError::NameTooLong { .. } => {
                LineFailure::Limit { limit: "column_name_bytes_max", message: error.to_string() }
            }
            other => LineFailure::Syntax(other.to_string()),
        }
    }
}

/// Refuses `text` (what `what` names) when it is over `limit`.
fn within(text: &str, limit: ValueBytesLimit, what: impl FnOnce() -> String) -> Result<(), LineFailure> {
    limit.check(text, what).map_err(|message| LineFailure::Limit { limit: limit.key, message })
}

/// The first characters of a name too long to quote whole.
fn start_of(text: &str) -> String {
    let start: String = text.chars().take(32).collect();
    if start.len() < text.len() { format!("{start:?}…") } else { format!("{start:?}") }
}

fn syntax<T>(message: impl Into<String>) -> Result<T, LineFailure> {
    Err(LineFailure::Syntax(message.into()))
}

/// Index of the first unescaped `stop` at or after `from` (one stop byte:
/// the search jumps between candidates instead of testing every byte).
fn find_unescaped_byte(line: &str, from: usize, stop: u8) -> usize {
    let line = line.as_bytes();
    let mut i = from;
    while i < line.len() {
        match memchr::memchr2(stop, b'\\', &line[i..]) {
            None => return line.len(),
            Some(offset) if line[i + offset] == stop => return i + offset,
            Some(offset) => i += offset + 2,
        }
    }
    line.len()
}

/// Index of the first unescaped byte in `stops` at or after `from`.
fn find_unescaped(line: &str, from: usize, stops: &[u8]) -> usize {
    let line = line.as_bytes();
    let mut i = from;
    while i < line.len() {
        let b = line[i];
        if b == b'\\' {
            i += 2;
            continue;
        }
        if stops.contains(&b) {
            return i;
        }
        i += 1;
    }
    line.len()
}

/// Text with the backslash escapes of `escapable` removed.
fn unescape<'b>(text: &'b str, escapable: &[u8]) -> Result<Value<'b>, LineFailure> {
    if !text.as_bytes().contains(&b'\\') {
        return Ok(Value::Text(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() && escapable.contains(&bytes[i + 1]) {
            out.push(bytes[i + 1]);
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map(Value::OwnedText).map_err(|_| LineFailure::Syntax("invalid UTF-8".to_string()))
}

fn text_of<'v>(value: &'v Value<'_>) -> &'v str {
    match value {
        Value::Text(text) => text,
        Value::OwnedText(text) => text,
        _ => unreachable!("unescape returns text"),
    }
}

const KEY_ESCAPES: &[u8] = b",= \\";
const MEASUREMENT_ESCAPES: &[u8] = b", \\";

/// Resolves a series (measurement and tags) not seen before in the body,
/// appending its `(column, dictionary key)` pairs to `resolved`.
fn parse_series<'b>(
    series: &'b str,
    limits: &IngestLimits,
    builder: &mut BatchBuilder<'_>,
    tag_layout: &mut Vec<(&'b str, usize)>,
    resolved: &mut Vec<(usize, i32)>,
) -> Result<(), LineFailure> {
    let first = resolved.len();
    let measurement_end = find_unescaped_byte(series, 0, b',');
    let measurement = unescape(&series[..measurement_end], MEASUREMENT_ESCAPES)?;
    if text_of(&measurement).is_empty() {
        return syntax("missing measurement");
    }
    // The measurement is stored as the `_measurement` tag's value.
    within(text_of(&measurement), limits.tag_value(), || {
        format!("the measurement {} (stored as the {MEASUREMENT_COLUMN} tag)", start_of(text_of(&measurement)))
    })?;
    let column = builder.internal_column(MEASUREMENT_COLUMN, ColumnKind::Tag)?;
    resolved.push((column, builder.text_key(column, text_of(&measurement))));
    let mut at = measurement_end;
    let mut index = 0;
    while at < series.len() {
        let start = at + 1;
        let end = find_unescaped_byte(series, start, b',');
        let pair = &series[start..end];
        let equals = find_unescaped_byte(pair, 0, b'=');
        if equals == pair.len() {
            return syntax(format!("tag {pair:?} has no '='"));
        }
        let value = unescape(&pair[equals + 1..], KEY_ESCAPES)?;
        let value = text_of(&value);
        let column = tag_column(&pair[..equals], value, index, tag_layout, limits, builder)?;
        if resolved[first..].iter().any(|(c, _)| *c == column) {
            return syntax(format!("tag {:?} appears twice", builder.column_name(column)));
        }
        resolved.push((column, builder.text_key(column, value)));
        at = end;
        index += 1;
    }
    Ok(())
}

/// The column of a new series' `index`th tag (`raw_key` as written, with
/// its unescaped `value`): the previous new series' when its key matches
/// (no hashing), else resolved by name and remembered.
#[inline]
fn tag_column<'b>(
    raw_key: &'b str,
    value: &str,
    index: usize,
    tag_layout: &mut Vec<(&'b str, usize)>,
    limits: &IngestLimits,
    builder: &mut BatchBuilder<'_>,
) -> Result<usize, LineFailure> {
    let known = match tag_layout.get(index) {
        Some((known, column)) if *known == raw_key => Some(*column),
        _ => None,
    };
    if !value.is_empty()
        && let Some(column) = known
    {
        within(value, limits.tag_value(), || format!("the value of tag {}", start_of(builder.column_name(column))))?;
        return Ok(column);
    }
    let key = unescape(raw_key, KEY_ESCAPES)?;
    let key = text_of(&key);
    if key.is_empty() || value.is_empty() {
        return syntax("tag key and value must not be empty");
    }
    within(value, limits.tag_value(), || format!("the value of tag {}", start_of(key)))?;
    let column = builder.column(key, ColumnKind::Tag)?;
    tag_layout.truncate(index);
    tag_layout.push((raw_key, column));
    Ok(column)
}

/// Appends the `(column, dictionary key)` of `series`' measurement and
/// tags to `values`: from the body's series cache, or parsed (and cached
/// while the cache is kept).
fn resolve_series<'b>(
    series: &'b str,
    limits: &IngestLimits,
    builder: &mut BatchBuilder<'_>,
    caches: &mut LineCaches<'b>,
    values: &mut Vec<(usize, Value<'b>)>,
) -> Result<(), LineFailure> {
    let cached = caches.series_cached();
    let LineCaches { series: series_cache, resolved, tag_layout, hits, misses, .. } = caches;
    if cached && let Some(tags) = series_cache.get(series) {
        *hits += 1;
        values.extend(resolved[tags.clone()].iter().map(|(column, key)| (*column, Value::TextKey(*key))));
        return Ok(());
    }
    *misses += 1;
    let start = resolved.len();
    if let Err(error) = parse_series(series, limits, builder, tag_layout, resolved) {
        resolved.truncate(start);
        return Err(error);
    }
    values.extend(resolved[start..].iter().map(|(column, key)| (*column, Value::TextKey(*key))));
    if cached {
        series_cache.insert(series, start..resolved.len());
    } else {
        resolved.truncate(start);
    }
    Ok(())
}

fn parse_line<'b>(
    line: &'b str,
    precision: Precision,
    default_time_ns: i64,
    limits: &IngestLimits,
    builder: &mut BatchBuilder<'_>,
    caches: &mut LineCaches<'b>,
    values: &mut Vec<(usize, Value<'b>)>,
) -> Result<i64, LineFailure> {
    let series_end = find_unescaped_byte(line, 0, b' ');
    if series_end == line.len() {
        return syntax("missing fields");
    }
    let series = &line[..series_end];
    resolve_series(series, limits, builder, caches, values)?;
    let LineCaches { field_layout, .. } = caches;

    // Fields: key=value pairs up to the next unescaped space outside quotes.
    let bytes = line.as_bytes();
    let mut at = series_end + 1;
    while at < bytes.len() && bytes[at] == b' ' {
        at += 1;
    }
    let mut fields = 0;
    loop {
        // A line usually names the previous line's field here: its key
        // followed by `=` ends where a scan would stop (the key holds no
        // unescaped stop, and ends outside an escape).
        let key_end = match field_layout.get(fields) {
            Some((known, _))
                if bytes[at..].starts_with(known.as_bytes()) && bytes.get(at + known.len()) == Some(&b'=') =>
            {
                at + known.len()
            }
            _ => find_unescaped(line, at, b"= ,"),
        };
        if key_end >= bytes.len() || bytes[key_end] != b'=' {
            return syntax("field has no '='");
        }
        let raw_key = &line[at..key_end];
        let value_start = key_end + 1;
        let (value, value_end) = parse_field_value(line, value_start, limits)?;
        let column = field_column(raw_key, value.kind(), fields, field_layout, builder)?;
        values.push((column, value));
        fields += 1;
        at = value_end;
        if at >= bytes.len() || bytes[at] == b' ' {
            break;
        }
        // bytes[at] == b','
        at += 1;
    }
    if fields == 0 {
        return syntax("missing fields");
    }
    line_time(line, at, precision, default_time_ns)
}

/// The column of a line's `index`th field: the previous line's when its key
/// and kind match (no hashing), else resolved by name and remembered.
#[inline]
fn field_column<'b>(
    raw_key: &'b str,
    kind: ColumnKind,
    index: usize,
    field_layout: &mut Vec<(&'b str, usize)>,
    builder: &mut BatchBuilder<'_>,
) -> Result<usize, LineFailure> {
    if let Some((known, column)) = field_layout.get(index)
        && *known == raw_key
        && builder.column_accepts(*column, kind)
    {
        return Ok(*column);
    }
    let key = unescape(raw_key, KEY_ESCAPES)?;
    if text_of(&key).is_empty() {
        return syntax("empty field key");
    }
    let column = builder.column(text_of(&key), kind)?;
    field_layout.truncate(index);
    field_layout.push((raw_key, column));
    Ok(column)
}

/// The line's timestamp after the fields (from `at`), in nanoseconds, or
/// `default_time_ns` when it has none.
fn line_time(line: &str, mut at: usize, precision: Precision, default_time_ns: i64) -> Result<i64, LineFailure> {
    let bytes = line.as_bytes();
    while at < bytes.len() && bytes[at] == b' ' {
        at += 1;
    }
    if at >= bytes.len() {
        return Ok(default_time_ns);
    }
    let raw = &line[at..];
    let time: i64 = raw.parse().map_err(|_| LineFailure::Syntax(format!("invalid timestamp {raw:?}")))?;
    time.checked_mul(precision.nanos_per_unit())
        .ok_or_else(|| LineFailure::Syntax(format!("timestamp {raw} out of range")))
}

/// Parses the value starting at `start`; returns it and the index just after it.
fn parse_field_value<'b>(
    text: &'b str,
    start: usize,
    limits: &IngestLimits,
) -> Result<(Value<'b>, usize), LineFailure> {
    let line = text.as_bytes();
    if start >= line.len() {
        return syntax("missing field value");
    }
    if line[start] == b'"' {
        let mut i = start + 1;
        let mut escaped = false;
        while i < line.len() {
            match line[i] {
                b'\\' => {
                    escaped = true;
                    i += 2;
                    continue;
                }
                b'"' => break,
                _ => i += 1,
            }
        }
        if i >= line.len() {
            return syntax("unterminated string field");
        }
        let inner = &text[start + 1..i];
        within(inner, limits.string_value(), || "a string field".to_string())?;
        let value = if escaped { unescape(inner, b"\"\\")? } else { Value::Text(inner) };
        let end = i + 1;
        if end < line.len() && line[end] != b',' && line[end] != b' ' {
            return syntax("unexpected text after string field");
        }
        return Ok((value, end));
    }
    if let Some((value, end)) = plain_decimal_at(line, start) {
        return Ok((Value::Float(value), end));
    }
    let end = memchr::memchr2(b',', b' ', &line[start..]).map_or(line.len(), |offset| start + offset);
    let token = &text[start..end];
    let first = token.as_bytes().first().copied().unwrap_or(b'x');
    let value = match first {
        // Only tokens starting with a letter can be booleans; numbers skip
        // the string comparisons.
        b't' | b'T' | b'f' | b'F' => match token {
            "t" | "T" | "true" | "True" | "TRUE" => Value::Boolean(true),
            "f" | "F" | "false" | "False" | "FALSE" => Value::Boolean(false),
            _ => return syntax(format!("invalid field value {token:?}")),
        },
        b'0'..=b'9' | b'-' | b'+' | b'.' => match token.as_bytes()[token.len() - 1] {
            b'i' => Value::Integer(
                token[..token.len() - 1]
                    .parse()
                    .map_err(|_| LineFailure::Syntax(format!("invalid integer {token:?}")))?,
            ),
            b'u' => Value::Unsigned(
                token[..token.len() - 1]
                    .parse()
                    .map_err(|_| LineFailure::Syntax(format!("invalid unsigned integer {token:?}")))?,
            ),
            // A plain decimal took the fast path above; this is the rest
            // (exponents, more than 15 digits, `1.`, `.5`, ...).
            _ => match token.parse::<f64>().ok().filter(|v| v.is_finite()) {
                Some(v) => Value::Float(v),
                None => return syntax(format!("invalid field value {token:?}")),
            },
        },
        _ => return syntax(format!("invalid field value {token:?}")),
    };
    Ok((value, end))
}

/// Powers of ten that `f64` holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// The value of a plain decimal token starting at `start` of `line` and
/// ending at the next `,` or ` ` (or the line's end), with that end — or
/// `None` when the token is anything else (then `str::parse` decides). A
/// plain decimal is an optional sign, 1 to 15 digits with at least one
/// before an optional `.` that has at least one after it, no exponent.
/// With at most 15 digits the digits form an integer below 2^53 and the
/// scale is a power of ten at most 10^15, both exact in `f64`, so the one
/// IEEE division rounds correctly: the result is bit for bit what
/// `str::parse` gives (Clinger's fast path). Finding the token's end and
/// reading its digits are one pass.
#[inline]
fn plain_decimal_at(line: &[u8], start: usize) -> Option<(f64, usize)> {
    let sign = *line.get(start)?;
    let negative = sign == b'-';
    let mut i = if matches!(sign, b'-' | b'+') { start + 1 } else { start };
    let digits_start = i;
    let mut mantissa: u64 = 0;
    let mut count = 0usize;
    let mut point: Option<usize> = None;
    while let Some(byte) = line.get(i) {
        match byte {
            b'0'..=b'9' => {
                count += 1;
                if count > 15 {
                    return None;
                }
                mantissa = mantissa * 10 + u64::from(byte - b'0');
            }
            b'.' if point.is_none() && i > digits_start => point = Some(i),
            b',' | b' ' => break,
            _ => return None,
        }
        i += 1;
    }
    let fraction = match point {
        Some(at) if at + 1 == i => return None,
        Some(at) => i - at - 1,
        None => 0,
    };
    if count == 0 {
        return None;
    }
    let value = mantissa as f64 / EXACT_POWERS_OF_TEN[fraction];
    Some((if negative { -value } else { value }, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::DatasetSchema;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type, UInt64Type};

    fn limits() -> IngestLimits {
        IngestLimits::default()
    }

    fn run(body: &str) -> (super::super::batch::ParsedBatch, Vec<LineError>) {
        let schema = DatasetSchema::empty("time");
        let mut builder = BatchBuilder::new(&schema, 100);
        let errors = parse(body.as_bytes(), Precision::Nanoseconds, 42, &limits(), &mut builder).unwrap();
        (builder.finish(), errors)
    }

    fn text(batch: &super::super::batch::ParsedBatch, name: &str) -> Vec<Option<String>> {
        let index = batch.columns.iter().position(|c| c.name == name).unwrap();
        let dict = batch.arrays[index].as_dictionary::<Int32Type>();
        let values = dict.values().as_string::<i32>();
        dict.keys().iter().map(|k| k.map(|k| values.value(k as usize).to_string())).collect()
    }

    fn column<'a>(batch: &'a super::super::batch::ParsedBatch, name: &str) -> &'a dyn Array {
        let index = batch.columns.iter().position(|c| c.name == name).unwrap();
        batch.arrays[index].as_ref()
    }

    /// A body of thousands of series, each new (where lines stop looking
    /// their series up), then repeats, escapes and bad lines, parses as each
    /// of its lines parses alone.
    #[test]
    fn a_body_of_mostly_new_series_parses_as_its_lines_do_alone() {
        let mut lines: Vec<String> = (0..3_000).map(|i| format!("m,host=h{i},zone=z{} v={i} {i}", i % 7)).collect();
        lines.push("m,host=h\\ 1\\,2,zone=z1 v=1 5".into());
        lines.push("m,host v=1 6".into());
        lines.push("m,zone=z9,host=h5 v=2 7".into());
        lines.push("m,host=h17,zone=z3 v=3 8".into());
        lines.push("m,host=h17,host=h18 v=3 9".into());
        lines.push("m\\ x,host=h\\=2 v=4 10".into());
        let body = lines.join("\n");
        let (whole, errors) = run(&body);
        let (mut hosts, mut zones, mut numbers) = (Vec::new(), Vec::new(), Vec::new());
        for (i, line) in lines.iter().enumerate() {
            let (alone, alone_errors) = run(line);
            if let Some(error) = alone_errors.first() {
                numbers.push((i + 1, error.error_message.clone()));
                continue;
            }
            let value =
                |name: &str| if alone.columns.iter().any(|c| c.name == name) { text(&alone, name) } else { vec![None] };
            hosts.extend(value("host"));
            zones.extend(value("zone"));
        }
        let got: Vec<(usize, String)> = errors.iter().map(|e| (e.line_number, e.error_message.clone())).collect();
        assert_eq!(got, numbers);
        assert_eq!(text(&whole, "host"), hosts);
        assert_eq!(text(&whole, "zone"), zones);
        assert_eq!(text(&whole, MEASUREMENT_COLUMN).last().unwrap().as_deref(), Some("m x"));
    }

    /// Lines whose field keys extend, shorten, escape or repeat the
    /// previous line's (where a key is matched against the previous line's
    /// instead of scanned) parse as each line parses alone.
    #[test]
    fn field_keys_like_the_previous_lines_parse_as_their_lines_do_alone() {
        let lines = [
            "m ab=1,cd=2 1",
            "m ab=3,cd=4 2",
            "m abc=5,cd=6 3",
            "m ab=7,c=8 4",
            "m ab==9,cd=1 5",
            "m ab\\==1,cd=2 6",
            "m a\\ b=1,cd=2 7",
            "m a\\ b=1,cd=2 8",
            "m a\\ bc=1,cd=2 9",
            "m ab=1.5,cd=2.25,ef=-3,gh=+4.0 10",
            "m ab=1.5i,cd=2 11",
            "m ab=1.5,cd=2u3 12",
            "m ab=1.5,cd=2.,ef=.5 13",
            "m ab=1.5,cd=1e3,ef=123456789012345.6 14",
            "m ab=1.5,st=\"x\" 15",
            "m ab=1.5x,cd=2 16",
            "m ab=1.5,cd=2 17",
        ];
        let body = lines.join("\n");
        let (whole, errors) = run(&body);
        let mut row = 0;
        for (i, line) in lines.iter().enumerate() {
            let (alone, alone_errors) = run(line);
            let error = errors.iter().find(|e| e.line_number == i + 1).map(|e| e.error_message.clone());
            assert_eq!(error, alone_errors.first().map(|e| e.error_message.clone()), "{line}");
            if error.is_some() {
                continue;
            }
            for (c, def) in alone.columns.iter().enumerate() {
                let index = whole.columns.iter().position(|w| w.name == def.name).unwrap();
                let got = whole.arrays[index].slice(row, 1);
                let want = alone.arrays[c].slice(0, 1);
                if def.kind == ColumnKind::Tag || def.kind == ColumnKind::Text {
                    assert_eq!(text(&whole, &def.name)[row], text(&alone, &def.name)[0], "{line}: {}", def.name);
                } else {
                    assert_eq!(got.to_data(), want.to_data(), "{line}: {}", def.name);
                }
            }
            row += 1;
        }
        assert_eq!(whole.rows(), row);
    }

    #[test]
    fn the_series_cache_is_kept_while_it_hits() {
        let caches = |hits, misses| LineCaches { hits, misses, ..LineCaches::default() };
        assert!(caches(0, 1023).series_cached(), "a body's first series are all new");
        assert!(!caches(0, 1024).series_cached());
        assert!(!caches(127, 1024).series_cached());
        assert!(caches(128, 1024).series_cached());
        assert!(caches(4_900, 100).series_cached(), "100 series repeated");
    }

    #[test]
    fn a_line_that_is_not_utf8_is_reported_and_the_others_parse() {
        let body = b"m,host=a v=1 1\nm,host=\xff\xfe v=2 2\r\n  m,host=\xc3\xa9 v=3 3  \n";
        let schema = DatasetSchema::empty("time");
        let mut builder = BatchBuilder::new(&schema, 100);
        let errors = parse(body, Precision::Nanoseconds, 42, &limits(), &mut builder).unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line_number, errors[0].error_message.as_str()), (2, "invalid UTF-8"));
        let batch = builder.finish();
        assert_eq!(batch.times, [1, 3]);
        assert_eq!(text(&batch, "host"), [Some("a".to_string()), Some("\u{e9}".to_string())]);
    }

    #[test]
    fn the_jumping_search_agrees_with_the_byte_by_byte_one() {
        // Every string of up to 6 bytes over an alphabet of the delimiters.
        let alphabet = [b'a', b' ', b',', b'=', b'\\'];
        let mut strings = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = strings
                .iter()
                .filter(|s| s.len() == strings.last().map_or(0, String::len))
                .flat_map(|s| alphabet.iter().map(move |b| format!("{s}{}", *b as char)))
                .collect();
            strings.extend(longer);
        }
        for text in &strings {
            for stop in [b' ', b',', b'='] {
                for from in 0..=text.len() {
                    assert_eq!(
                        find_unescaped_byte(text, from, stop),
                        find_unescaped(text, from, &[stop]),
                        "{text:?} from {from} stop {:?}",
                        stop as char
                    );
                }
            }
        }
        let body = b"a\n\nb\n";
        let lines: Vec<&[u8]> = split_lines(body).map(|r| &body[r]).collect();
        assert_eq!(lines, body.split(|b| *b == b'\n').collect::<Vec<_>>());
        assert_eq!(split_lines(b"").count(), 1);
    }

    #[test]
    fn all_value_kinds_and_escapes() {
        let body = "cpu,host=a,region=us\\ west usage=1.5,count=3i,big=18446744073709551615u,ok=t,msg=\"say \\\"hi\\\" \\\\ there\" 1700000000000000000\n\
                    # a comment\n\
                    \n\
                    my\\ meas,ta\\,g\\=k=v\\=1 f\\ x=-2e3,ok=FALSE\r\n\
                    cpu,host=b usage=2";
        let (batch, errors) = run(body);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(batch.times, vec![1_700_000_000_000_000_000, 42, 42]);
        assert_eq!(text(&batch, "_measurement"), vec![Some("cpu".into()), Some("my meas".into()), Some("cpu".into())]);
        assert_eq!(text(&batch, "region"), vec![Some("us west".into()), None, None]);
        assert_eq!(text(&batch, "ta,g=k"), vec![None, Some("v=1".into()), None]);
        assert_eq!(text(&batch, "msg"), vec![Some("say \"hi\" \\ there".into()), None, None]);
        let usage = column(&batch, "usage").as_primitive::<Float64Type>();
        assert_eq!(usage.iter().collect::<Vec<_>>(), vec![Some(1.5), None, Some(2.0)]);
        let fx = column(&batch, "f x").as_primitive::<Float64Type>();
        assert_eq!(fx.value(1), -2000.0);
        assert_eq!(column(&batch, "count").as_primitive::<Int64Type>().value(0), 3);
        assert_eq!(column(&batch, "big").as_primitive::<UInt64Type>().value(0), u64::MAX);
        let ok = column(&batch, "ok").as_boolean();
        assert_eq!(ok.iter().collect::<Vec<_>>(), vec![Some(true), Some(false), None]);
    }

    #[test]
    fn bad_lines_are_reported_and_skipped() {
        let body = "cpu usage=1 10\n\
                    cpu\n\
                    cpu usage=\n\
                    cpu usage=abc 10\n\
                    cpu usage=1 notatime\n\
                    cpu,host usage=1\n\
                    cpu msg=\"open 10\n\
                    cpu usage=1,usage=2 10\n\
                    ,host=a usage=1\n\
                    cpu usage=NaN\n\
                    cpu usage=2 20";
        let (batch, errors) = run(body);
        assert_eq!(batch.times, vec![10, 20]);
        let numbers: Vec<usize> = errors.iter().map(|e| e.line_number).collect();
        assert_eq!(numbers, vec![2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert!(errors[6].error_message.contains("twice"), "{:?}", errors[6]);
    }

    #[test]
    fn precision_scales_timestamps() {
        let schema = DatasetSchema::empty("time");
        let mut builder = BatchBuilder::new(&schema, 10);
        parse(b"m v=1 1700000000", Precision::Seconds, 0, &limits(), &mut builder).unwrap();
        assert_eq!(builder.finish().times, vec![1_700_000_000_000_000_000]);
        let mut builder = BatchBuilder::new(&schema, 10);
        let errors = parse(b"m v=1 9223372036854775807", Precision::Milliseconds, 0, &limits(), &mut builder).unwrap();
        assert_eq!(errors.len(), 1, "overflowing timestamps are rejected, not wrapped");
    }

    #[test]
    fn conflicts_with_the_stored_schema_refuse_the_body() {
        let schema = DatasetSchema::empty("time")
            .evolve(&[crate::schema::ColumnDef { name: "usage".into(), kind: ColumnKind::Float }])
            .unwrap()
            .unwrap();
        let mut builder = BatchBuilder::new(&schema, 10);
        let result = parse(b"m usage=1i 1", Precision::Nanoseconds, 0, &limits(), &mut builder);
        assert!(matches!(result, Err(BodyError::Conflict(RowError::Conflict { .. }))));
        let mut builder = BatchBuilder::new(&schema, 10);
        let result = parse(b"m time=1 1", Precision::Nanoseconds, 0, &limits(), &mut builder).unwrap();
        assert_eq!(result.len(), 1, "the time column name is reserved");
    }

    /// Lines whose series name random tags in random orders (some twice,
    /// some empty, some escaped) parse to the tags each line names, as
    /// when every line is parsed alone: what the series and tag caches
    /// remember from one line never leaks into the next.
    #[test]
    fn cached_series_and_tags_give_each_line_its_own_tags() {
        let keys = [("a", "a"), ("b", "b"), ("c\\ d", "c d"), ("e\\=", "e=")];
        let values = ["x", "y", "z\\,w", ""];
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let mut body = String::new();
        let mut expected = Vec::new();
        for line in 0..3_000 {
            let count = rand::Rng::random_range(&mut rng, 0..=4usize);
            let mut series = String::from("m");
            let mut tags = std::collections::BTreeMap::new();
            let mut ok = true;
            for _ in 0..count {
                let (raw, key) = keys[rand::Rng::random_range(&mut rng, 0..keys.len())];
                let value = values[rand::Rng::random_range(&mut rng, 0..values.len())];
                series.push_str(&format!(",{raw}={value}"));
                ok &= !value.is_empty() && tags.insert(key, value.replace('\\', "")).is_none();
            }
            body.push_str(&format!("{series} v={line} {line}\n"));
            expected.push(ok.then_some(tags));
        }
        let (batch, errors) = run(&body);
        let mut rows = 0..;
        for (line, tags) in expected.iter().enumerate() {
            let Some(tags) = tags else {
                assert!(errors.iter().any(|e| e.line_number == line + 1), "line {} is refused", line + 1);
                continue;
            };
            let row = rows.next().unwrap();
            assert_eq!(batch.times[row], line as i64);
            for (_, key) in keys {
                let present = batch.columns.iter().any(|c| c.name == key);
                let got = if present { text(&batch, key)[row].clone() } else { None };
                assert_eq!(got, tags.get(key).cloned(), "line {} tag {key:?}", line + 1);
            }
        }
        assert_eq!(batch.rows(), rows.next().unwrap());
    }

    /// The float `str::parse` gives for `token`, finite only.
    fn slow_float(token: &str) -> Option<f64> {
        token.parse::<f64>().ok().filter(|v| v.is_finite())
    }

    /// A finite float from a whole `token`, as `parse_field_value` reads
    /// one: the fast path where it answers, else `str::parse`.
    fn parse_float(token: &str) -> Option<f64> {
        match plain_decimal_at(token.as_bytes(), 0) {
            Some((value, end)) if end == token.len() => Some(value),
            _ => slow_float(token),
        }
    }

    fn same_float(token: &str) {
        let fast = parse_float(token).map(f64::to_bits);
        assert_eq!(fast, slow_float(token).map(f64::to_bits), "{token:?}");
        if let Some((value, end)) = plain_decimal_at(token.as_bytes(), 0)
            && end == token.len()
        {
            assert_eq!(Some(value.to_bits()), slow_float(token).map(f64::to_bits), "fast path on {token:?}");
        }
    }

    #[test]
    fn floats_read_bit_for_bit_like_str_parse() {
        let edges = [
            "0",
            "-0",
            "+0",
            "0.0",
            "-0.0",
            "1",
            "1.5",
            "-1.5",
            "+1.5",
            "1.",
            ".5",
            "-.5",
            "+.5",
            ".",
            "-",
            "+",
            "",
            "1..2",
            "1.2.3",
            "--1",
            "+-1",
            "1e3",
            "1E3",
            "-2e-3",
            "1e400",
            "inf",
            "-inf",
            "NaN",
            "nan",
            "infinity",
            "0.1",
            "0.2",
            "0.3",
            "99.99",
            "100.00",
            "123456789012345",
            "1234567890123456",
            "0.000000000000001",
            "0.0000000000000001",
            "999999999999999",
            "9999999999999999",
            "9007199254740993",
            "1.7976931348623157",
            "4.9406564584124654",
            "00000000000000.1",
            "0000000000000000.1",
            "12345678.1234567",
            "12345678.12345678",
            "1_0",
            "1,0",
            " 1",
            "1 ",
            "0x10",
            "1.5e",
            "١",
        ];
        for token in edges {
            same_float(token);
        }
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(15);
        for _ in 0..200_000 {
            let digits = rand::Rng::random_range(&mut rng, 1..=18usize);
            let point = rand::Rng::random_range(&mut rng, 0..=digits + 1);
            let mut token = String::new();
            match rand::Rng::random_range(&mut rng, 0..4) {
                0 => token.push('-'),
                1 => token.push('+'),
                _ => {}
            }
            for i in 0..digits {
                if i == point {
                    token.push('.');
                }
                token.push(char::from(b'0' + rand::Rng::random_range(&mut rng, 0..10u8)));
            }
            same_float(&token);
            let value: f64 = rand::Rng::random_range(&mut rng, -1e6..1e6);
            same_float(&format!("{value:.2}"));
            same_float(&format!("{value}"));
        }
    }

    #[test]
    fn line_limit_refuses_the_body() {
        let schema = DatasetSchema::empty("time");
        let mut builder = BatchBuilder::new(&schema, 10);
        let limits = IngestLimits { rows_per_request_max: 2, ..IngestLimits::default() };
        let result = parse(b"m v=1\nm v=2\nm v=3", Precision::Nanoseconds, 0, &limits, &mut builder);
        assert_eq!(result, Err(BodyError::TooManyLines(2)));
    }
}
