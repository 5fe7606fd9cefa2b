//! JSON array and NDJSON bodies: one object per record.
//!
//! The time column is an RFC 3339 string or an epoch number in the request's
//! precision; a record without one gets the server's time. Numbers go into
//! float columns unless the column is already stored as integer or unsigned.
//! A number its column cannot hold exactly is refused, never rounded: an
//! integer beyond ±2^53 for a float column, one outside the column's range
//! for an integer or unsigned column (`unrepresentable_value`).
//! `null` is a missing value. Nested objects and arrays are refused, and so
//! is a record that names a key twice (a parser keeping one of the values
//! would store less than the client sent). Strings
//! are capped like line protocol's (`tag_value_bytes_max` for a tag column,
//! else `string_value_bytes_max`). A JSON body is all or nothing: any bad
//! record refuses the request.

use serde_json::Value as Json;

use super::batch::{BatchBuilder, RowError, Value};
use super::{IngestLimits, Precision};
use crate::error::{Coded, ErrorCode};
use crate::schema::ColumnKind;
use crate::time::parse_rfc3339;

/// Parses a JSON array of objects, or newline-delimited objects, into `builder`.
pub fn parse(
    body: &[u8],
    precision: Precision,
    default_time_ns: i64,
    limits: &IngestLimits,
    builder: &mut BatchBuilder<'_>,
) -> Result<(), JsonError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        None => Ok(()),
        Some(b'[') => {
            let records: Vec<Record> =
                serde_json::from_slice(body).map_err(|e| JsonError::Syntax { line: None, message: e.to_string() })?;
            if records.len() > limits.rows_per_request_max {
                return Err(JsonError::TooManyRecords(limits.rows_per_request_max));
            }
            let context = RecordContext::new(body, precision, default_time_ns, limits);
            for (index, record) in records.iter().enumerate() {
                add_record(record, index + 1, &context, builder)?;
            }
            Ok(())
        }
        Some(_) => {
            let context = RecordContext::new(body, precision, default_time_ns, limits);
            let mut count = 0;
            for (index, line) in body.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                count += 1;
                if count > limits.rows_per_request_max {
                    return Err(JsonError::TooManyRecords(limits.rows_per_request_max));
                }
                let record: Record = serde_json::from_slice(line)
                    .map_err(|e| JsonError::Syntax { line: Some(index + 1), message: e.to_string() })?;
                add_record(&record, index + 1, &context, builder)?;
            }
            Ok(())
        }
    }
}

/// Why a JSON body was refused: a JSON body is all or nothing, so the
/// first bad record refuses it, named by its number.
#[derive(Debug)]
pub enum JsonError {
    /// The body, or one NDJSON line (`line`), is not JSON.
    Syntax {
        /// The NDJSON line, or `None` for a JSON array body.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// More records than `rows_per_request_max`.
    TooManyRecords(usize),
    /// The record with this number is not a JSON object.
    NotAnObject(usize),
    /// A record's time value cannot be read.
    Timestamp {
        /// The record's number.
        record: usize,
        /// What was wrong.
        message: String,
    },
    /// A record's columns do not fit the dataset (type conflict, column
    /// name, column count).
    Row {
        /// The record's number.
        record: usize,
        /// What was wrong.
        error: RowError,
    },
    /// A value its column cannot store.
    Value {
        /// The record's number.
        record: usize,
        /// What was wrong.
        error: ValueError,
    },
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::Syntax { line: None, message } => write!(f, "invalid JSON: {message}"),
            JsonError::Syntax { line: Some(line), message } => write!(f, "invalid JSON on line {line}: {message}"),
            JsonError::TooManyRecords(max) => {
                write!(f, "more than {max} records in one request (rows_per_request_max)")
            }
            JsonError::NotAnObject(record) => write!(f, "record {record} is not a JSON object"),
            JsonError::Timestamp { record, message } => write!(f, "record {record}: {message}"),
            JsonError::Row { record, error } => write!(f, "record {record}: {error}"),
            JsonError::Value { record, error } => write!(f, "record {record}: {}", error.message),
        }
    }
}

impl Coded for JsonError {
    fn code(&self) -> ErrorCode {
        match self {
            JsonError::Syntax { .. } | JsonError::NotAnObject(_) => ErrorCode::InvalidJson,
            JsonError::TooManyRecords(_) => ErrorCode::LimitExceeded,
            JsonError::Timestamp { .. } => ErrorCode::InvalidTimestamp,
            JsonError::Row { error: RowError::Conflict { .. }, .. } => ErrorCode::SchemaConflict,
            JsonError::Row { error: RowError::TooManyColumns(_) | RowError::NameTooLong { .. }, .. } => {
                ErrorCode::LimitExceeded
            }
            JsonError::Row { .. } => ErrorCode::BadRequest,
            JsonError::Value { error, .. } => error.code,
        }
    }

    fn detail(&self) -> Option<serde_json::Value> {
        match self {
            JsonError::Row { error: RowError::Conflict { column, .. }, .. } => {
                Some(serde_json::json!({ "column": column }))
            }
            JsonError::Row { record, error: RowError::NameTooLong { .. } } => {
                Some(serde_json::json!({ "record": record, "limit": "column_name_bytes_max" }))
            }
            JsonError::Value { record, error } => {
                let mut detail = serde_json::json!({ "column": error.column, "record": record });
                if let Some(limit) = error.limit {
                    detail["limit"] = limit.into();
                }
                Some(detail)
            }
            _ => None,
        }
    }
}

/// What every record of one body is parsed with.
struct RecordContext<'a> {
    precision: Precision,
    default_time_ns: i64,
    limits: &'a IngestLimits,
    body: &'a [u8],
    /// [`wide_integer_literals`] of `body`, found only when a number could
    /// be one: most bodies never pay for the scan.
    wide: std::cell::OnceCell<Vec<f64>>,
}

impl<'a> RecordContext<'a> {
    fn new(body: &'a [u8], precision: Precision, default_time_ns: i64, limits: &'a IngestLimits) -> Self {
        RecordContext { precision, default_time_ns, limits, body, wide: std::cell::OnceCell::new() }
    }

    /// Whether `n` was written in the body as an integer literal wider than
    /// 64 bits (serde_json reads such a literal as a float). Every such
    /// literal is at least 2^63 in magnitude, so smaller floats never scan.
    fn is_wide_literal(&self, n: &serde_json::Number) -> bool {
        const WIDE_MAGNITUDE_MIN: f64 = 9_223_372_036_854_775_808.0; // 2^63
        n.as_f64().is_some_and(|f| {
            n.is_f64()
                && f.abs() >= WIDE_MAGNITUDE_MIN
                && self.wide.get_or_init(|| wide_integer_literals(self.body)).contains(&f)
        })
    }
}

/// One top-level JSON value of a body: an object whose keys are distinct,
/// or anything else (refused with its record number by `add_record`).
/// serde_json's own map keeps the last of two equal keys silently.
enum Record {
    Object(serde_json::Map<String, Json>),
    NotAnObject,
}

impl<'de> serde::Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Record, D::Error> {
        deserializer.deserialize_any(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> serde::de::Visitor<'de> for RecordVisitor {
    type Value = Record;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Record, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value: Json = access.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("the key {key:?} appears twice in one record")));
            }
            object.insert(key, value);
        }
        Ok(Record::Object(object))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut access: A) -> Result<Record, A::Error> {
        while access.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Record::NotAnObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Record, E> {
        Ok(Record::NotAnObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Record, E> {
        Ok(Record::NotAnObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Record, E> {
        Ok(Record::NotAnObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Record, E> {
        Ok(Record::NotAnObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<Record, E> {
        Ok(Record::NotAnObject)
    }

    fn visit_unit<E>(self) -> Result<Record, E> {
        Ok(Record::NotAnObject)
    }
}

fn add_record(
    record: &Record,
    number: usize,
    context: &RecordContext<'_>,
    builder: &mut BatchBuilder<'_>,
) -> Result<(), JsonError> {
    let Record::Object(object) = record else {
        return Err(JsonError::NotAnObject(number));
    };
    let time_column = builder_time_column(builder);
    let time_ns = match object.get(&time_column) {
        None | Some(Json::Null) => context.default_time_ns,
        Some(value) => {
            parse_time(value, context.precision).map_err(|message| JsonError::Timestamp { record: number, message })?
        }
    };
    let mut values = Vec::with_capacity(object.len());
    for (name, value) in object {
        if *name == time_column || value.is_null() {
            continue;
        }
        let value = to_value(name, value, builder.known_kind(name), context)
            .map_err(|error| JsonError::Value { record: number, error })?;
        let column = builder.column(name, value.kind()).map_err(|error| JsonError::Row { record: number, error })?;
        values.push((column, value));
    }
    builder.push_record(number, time_ns, &values).map_err(|error| JsonError::Row { record: number, error })
}

fn builder_time_column(builder: &BatchBuilder<'_>) -> String {
    builder.time_column().to_string()
}

/// Why a value cannot be stored in its column.
#[derive(Debug)]
pub struct ValueError {
    code: ErrorCode,
    column: String,
    message: String,
    /// The configuration key of a limit the value broke.
    limit: Option<&'static str>,
}

impl ValueError {
    fn new(code: ErrorCode, column: &str, message: String) -> ValueError {
        ValueError { code, column: column.to_string(), message, limit: None }
    }
}

/// The largest integer every smaller one of which a 64-bit float holds
/// exactly: 2^53.
const FLOAT_EXACT_INTEGER_MAX: u64 = 1 << 53;

fn to_value<'j>(
    name: &str,
    value: &'j Json,
    known: Option<ColumnKind>,
    context: &RecordContext<'_>,
) -> Result<Value<'j>, ValueError> {
    match value {
        Json::Bool(b) => Ok(Value::Boolean(*b)),
        Json::String(s) => {
            let limit =
                if known == Some(ColumnKind::Tag) { context.limits.tag_value() } else { context.limits.string_value() };
            limit.check(s, || format!("column {name:?} value")).map_err(|message| ValueError {
                limit: Some(limit.key),
                ..ValueError::new(ErrorCode::LimitExceeded, name, message)
            })?;
            Ok(Value::Text(s))
        }
        Json::Number(n) => number_value(name, n, known, context.is_wide_literal(n)),
        Json::Object(_) | Json::Array(_) => Err(ValueError::new(
            ErrorCode::UnsupportedValue,
            name,
            format!("column {name:?} has a nested object or array; only scalars are stored"),
        )),
        Json::Null => unreachable!("nulls are skipped by the caller"),
    }
}

/// A JSON number as the column stores it, or why it cannot be stored
/// exactly. `wide_literal`: the body wrote it as an integer literal no
/// 64-bit integer holds (serde_json reads those as floats).
fn number_value<'j>(
    name: &str,
    n: &serde_json::Number,
    known: Option<ColumnKind>,
    wide_literal: bool,
) -> Result<Value<'j>, ValueError> {
    let kind = known.map_or("a new column (float)", ColumnKind::as_str);
    let conflict = |incoming: &str| {
        ValueError::new(
            ErrorCode::SchemaConflict,
            name,
            format!("column {name:?} is {kind} but the value is {incoming}"),
        )
    };
    let unrepresentable = |why: &str| {
        let shown = if wide_literal { "an integer beyond 64 bits".to_string() } else { n.to_string() };
        ValueError::new(
            ErrorCode::UnrepresentableValue,
            name,
            format!("column {name:?} is {kind}, which cannot hold {shown} exactly ({why}); it was not rounded"),
        )
    };
    match known {
        // A declared integer column keeps integers: `3` and `3.0` are 3,
        // `3.5` is refused (nothing is rounded).
        Some(ColumnKind::Integer) => match n.as_i64().or_else(|| exact_integer(n)) {
            Some(i) => Ok(Value::Integer(i)),
            None if n.is_u64() || wide_literal => Err(unrepresentable("a signed 64-bit integer")),
            None => Err(conflict(&format!("{n}, not a signed 64-bit integer"))),
        },
        Some(ColumnKind::Unsigned) => match n.as_u64().or_else(|| exact_integer(n).and_then(|i| u64::try_from(i).ok()))
        {
            Some(u) => Ok(Value::Unsigned(u)),
            None if n.is_i64() || wide_literal => Err(unrepresentable("an unsigned 64-bit integer")),
            None => Err(conflict(&format!("{n}, not an unsigned 64-bit integer"))),
        },
        // A new column becomes a float column, so the same rule applies.
        None | Some(ColumnKind::Float) => {
            let beyond_float = wide_literal
                || n.as_u64().is_some_and(|u| u > FLOAT_EXACT_INTEGER_MAX)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() > FLOAT_EXACT_INTEGER_MAX);
            if beyond_float {
                return Err(unrepresentable(
                    "JSON numbers are stored as 64-bit floats, exact for integers up to ±2^53; \
                     send it as a string, or into an integer column",
                ));
            }
            n.as_f64().filter(|f| f.is_finite()).map(Value::Float).ok_or_else(|| conflict("not a finite number"))
        }
        // Any other kind refuses a number as a conflict when the value reaches its column.
        Some(_) => {
            n.as_f64().filter(|f| f.is_finite()).map(Value::Float).ok_or_else(|| conflict("not a finite number"))
        }
    }
}

/// A number written with a fraction or exponent (`3.0`, `1e3`) that is an
/// integer a float holds exactly (within ±2^53).
fn exact_integer(n: &serde_json::Number) -> Option<i64> {
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() <= FLOAT_EXACT_INTEGER_MAX as f64).then_some(f as i64)
}

/// The values (as serde_json reads them: rounded floats) of the integer
/// literals outside strings in `body` that fit neither `i64` nor `u64`.
/// serde_json turns such a literal into a float without telling, so this
/// pass is how [`number_value`] knows that a float was written as an
/// integer. Linear, and strings are skipped with `memchr`; the body has
/// already been parsed (or will be, refusing it if malformed).
fn wide_integer_literals(body: &[u8]) -> Vec<f64> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                i += 1;
                loop {
                    match body.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
                        None => return found,
                        Some(offset) if body[i + offset] == b'\\' => i += offset + 2,
                        Some(offset) => {
                            i += offset + 1;
                            break;
                        }
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < body.len() && matches!(body[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let token = &body[start..i];
                // i64 and u64 hold every integer of up to 18 digits.
                let digits = token.iter().filter(|b| b.is_ascii_digit()).count();
                if digits > 18 && token.iter().all(|b| *b == b'-' || b.is_ascii_digit()) {
                    let text = std::str::from_utf8(token).expect("ASCII");
                    if text.parse::<i64>().is_err()
                        && text.parse::<u64>().is_err()
                        && let Ok(value) = text.parse::<f64>()
                    {
                        found.push(value);
                    }
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// An RFC 3339 string, or an epoch number in `precision`.
pub fn parse_time(value: &Json, precision: Precision) -> Result<i64, String> {
    match value {
        Json::String(text) => parse_rfc3339(text),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.checked_mul(precision.nanos_per_unit()).ok_or_else(|| format!("timestamp {i} out of range"))
            } else if let Some(f) = n.as_f64() {
                let ns = f * precision.nanos_per_unit() as f64;
                if ns.is_finite() && ns.abs() < 9.2e18 {
                    Ok(ns.round() as i64)
                } else {
                    Err(format!("timestamp {f} out of range"))
                }
            } else {
                Err(format!("timestamp {n} out of range"))
            }
        }
        other => Err(format!("timestamp must be an RFC 3339 string or a number, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Failure;
    use crate::schema::{ColumnDef, DatasetSchema};
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};

    fn run(schema: &DatasetSchema, body: &str) -> Result<super::super::batch::ParsedBatch, Failure> {
        let mut builder = BatchBuilder::new(schema, 100);
        parse(body.as_bytes(), Precision::Milliseconds, 7, &IngestLimits::default(), &mut builder)?;
        Ok(builder.finish())
    }

    #[test]
    fn array_and_ndjson_agree() {
        let schema = DatasetSchema::empty("time");
        let array =
            run(&schema, r#"[{"time":"2026-01-01T00:00:00.5Z","v":1,"s":"x"},{"time":1000,"v":2.5,"ok":true}]"#)
                .unwrap();
        let lines = run(
            &schema,
            "{\"time\":\"2026-01-01T00:00:00.5Z\",\"v\":1,\"s\":\"x\"}\n\n{\"time\":1000,\"v\":2.5,\"ok\":true}\n",
        )
        .unwrap();
        assert_eq!(array.times, lines.times);
        assert_eq!(array.times[1], 1_000_000_000);
        assert_eq!(array.columns, lines.columns);
        let v_index = array.columns.iter().position(|c| c.name == "v").unwrap();
        let v = array.arrays[v_index].as_primitive::<Float64Type>();
        assert_eq!(v.values().to_vec(), vec![1.0, 2.5]);
    }

    #[test]
    fn stored_integer_columns_take_integral_numbers() {
        let schema = DatasetSchema::empty("time")
            .evolve(&[ColumnDef { name: "n".into(), kind: ColumnKind::Integer }])
            .unwrap()
            .unwrap();
        let batch = run(&schema, r#"[{"n":5},{"n":6.0},{"n":7e0}]"#).unwrap();
        let values = batch.arrays[0].as_primitive::<Int64Type>();
        assert_eq!((values.value(0), values.value(1), values.value(2)), (5, 6, 7));
        let error = run(&schema, r#"[{"n":5.5}]"#).unwrap_err();
        assert_eq!(error.code, ErrorCode::SchemaConflict);
        assert!(error.message.contains("\"n\""));
    }

    #[test]
    fn bad_bodies_are_refused_whole() {
        let schema = DatasetSchema::empty("time");
        assert_eq!(run(&schema, "[{").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(run(&schema, "[1]").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(run(&schema, r#"[{"a":{"b":1}}]"#).unwrap_err().code, ErrorCode::UnsupportedValue);
        assert_eq!(run(&schema, r#"[{"a":1},{"a":"x"}]"#).unwrap_err().code, ErrorCode::SchemaConflict);
        assert_eq!(run(&schema, r#"[{"time":"yesterday"}]"#).unwrap_err().code, ErrorCode::InvalidTimestamp);
        assert_eq!(run(&schema, "{\"a\":1}\nnot json").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(run(&schema, "[null]").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(run(&schema, "[[1]]").unwrap_err().code, ErrorCode::InvalidJson);
    }

    #[test]
    fn a_key_named_twice_in_one_record_refuses_the_body() {
        let schema = DatasetSchema::empty("time");
        for body in [r#"[{"a":1,"b":2,"a":3}]"#, "{\"a\":1}\n{\"b\":1,\"b\":1}\n"] {
            let error = run(&schema, body).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidJson, "{body}");
            assert!(error.message.contains("appears twice"), "{}", error.message);
        }
        // The same key in two records, or nested, is no duplicate.
        assert!(run(&schema, r#"[{"a":1},{"a":2}]"#).is_ok());
    }

    #[test]
    fn only_integer_literals_wider_than_64_bits_outside_strings_are_wide() {
        let body = br#"[{"a":18446744073709551615,"b":-9223372036854775808,"c":18446744073709551616,
            "d":-9223372036854775809,"e":1.8446744073709552e19,"f":"18446744073709551616",
            "g\"":"\"99999999999999999999","h":99999999999999999999.5}]"#;
        assert_eq!(wide_integer_literals(body), [18446744073709551616.0, -9223372036854775809.0]);
        assert!(wide_integer_literals(b"{\"unterminated").is_empty());
    }

    #[test]
    fn numbers_are_refused_rather_than_rounded() {
        let schema = DatasetSchema::empty("time");
        let code = |body: &str| run(&schema, body).map(|_| ()).map_err(|e| e.code);
        assert_eq!(code(r#"[{"v":9007199254740992},{"v":-9007199254740992}]"#), Ok(()));
        assert_eq!(code(r#"[{"v":9007199254740993}]"#), Err(ErrorCode::UnrepresentableValue));
        assert_eq!(code(r#"[{"v":-9007199254740993}]"#), Err(ErrorCode::UnrepresentableValue));
        assert_eq!(code(r#"[{"v":100000000000000000000}]"#), Err(ErrorCode::UnrepresentableValue));
        assert_eq!(code(r#"[{"v":1e20}]"#), Ok(()));
        let integers = DatasetSchema::empty("time")
            .evolve(&[
                ColumnDef { name: "i".into(), kind: ColumnKind::Integer },
                ColumnDef { name: "u".into(), kind: ColumnKind::Unsigned },
            ])
            .unwrap()
            .unwrap();
        let code = |body: &str| run(&integers, body).map(|_| ()).map_err(|e| e.code);
        assert_eq!(code(r#"[{"i":-9223372036854775808,"u":18446744073709551615}]"#), Ok(()));
        assert_eq!(code(r#"[{"i":9223372036854775808}]"#), Err(ErrorCode::UnrepresentableValue));
        assert_eq!(code(r#"[{"u":-1}]"#), Err(ErrorCode::UnrepresentableValue));
        assert_eq!(code(r#"[{"i":1.5}]"#), Err(ErrorCode::SchemaConflict));
    }

    #[test]
    fn missing_time_uses_the_default_and_nulls_are_missing() {
        let schema = DatasetSchema::empty("time");
        let batch = run(&schema, r#"[{"a":null,"b":1}]"#).unwrap();
        assert_eq!(batch.times, vec![7]);
        assert_eq!(batch.columns.len(), 1);
    }
}
