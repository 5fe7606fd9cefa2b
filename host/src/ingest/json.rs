//! JSON array and NDJSON bodies: one object per record.
//!
//! The time column is an RFC 3339 string or an epoch number in the request's
//! precision; a record without one gets the server's time. Numbers go into
//! float columns unless the column is already stored as integer or unsigned.
//! `null` is a missing value. Nested objects and arrays are refused. A JSON
//! body is all or nothing: any bad record refuses the request.

use serde_json::Value as Json;

use super::batch::{BatchBuilder, RowError, Value};
use super::{IngestLimits, Precision};
use crate::error::{ApiError, ErrorCode};
use crate::schema::ColumnKind;

/// Parses a JSON array of objects, or newline-delimited objects, into `builder`.
pub fn parse(
    body: &[u8],
    precision: Precision,
    default_time_ns: i64,
    limits: &IngestLimits,
    builder: &mut BatchBuilder<'_>,
) -> Result<(), ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        None => Ok(()),
        Some(b'[') => {
            let records: Vec<Json> = serde_json::from_slice(body)
                .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
            if records.len() > limits.rows_per_request_max {
                return Err(too_many(limits));
            }
            for (index, record) in records.iter().enumerate() {
                add_record(record, index + 1, precision, default_time_ns, builder)?;
            }
            Ok(())
        }
        Some(_) => {
            let mut count = 0;
            for (index, line) in body.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                count += 1;
                if count > limits.rows_per_request_max {
                    return Err(too_many(limits));
                }
                let record: Json = serde_json::from_slice(line).map_err(|e| {
                    ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON on line {}: {e}", index + 1))
                })?;
                add_record(&record, index + 1, precision, default_time_ns, builder)?;
            }
            Ok(())
        }
    }
}

fn too_many(limits: &IngestLimits) -> ApiError {
    ApiError::new(
        ErrorCode::LimitExceeded,
        format!("more than {} records in one request (rows_per_request_max)", limits.rows_per_request_max),
    )
}

fn add_record(
    record: &Json,
    number: usize,
    precision: Precision,
    default_time_ns: i64,
    builder: &mut BatchBuilder<'_>,
) -> Result<(), ApiError> {
    let Json::Object(object) = record else {
        return Err(ApiError::new(ErrorCode::InvalidJson, format!("record {number} is not a JSON object")));
    };
    let time_column = builder_time_column(builder);
    let time_ns = match object.get(&time_column) {
        None | Some(Json::Null) => default_time_ns,
        Some(value) => parse_time(value, precision)
            .map_err(|message| ApiError::new(ErrorCode::InvalidTimestamp, format!("record {number}: {message}")))?,
    };
    let mut values = Vec::with_capacity(object.len());
    for (name, value) in object {
        if *name == time_column || value.is_null() {
            continue;
        }
        let value = to_value(name, value, builder.known_kind(name)).map_err(|e| e.in_record(number))?;
        let column = builder.column(name, value.kind()).map_err(|e| row_error(e, number))?;
        values.push((column, value));
    }
    builder.push_record(number, time_ns, &values).map_err(|e| row_error(e, number))
}

fn builder_time_column(builder: &BatchBuilder<'_>) -> String {
    builder.time_column().to_string()
}

fn row_error(error: RowError, number: usize) -> ApiError {
    let code = match error {
        RowError::Conflict { .. } => ErrorCode::SchemaConflict,
        RowError::TooManyColumns(_) => ErrorCode::LimitExceeded,
        _ => ErrorCode::BadRequest,
    };
    let mut api = ApiError::new(code, format!("record {number}: {error}"));
    if let RowError::Conflict { column, .. } = &error {
        api = api.with_detail(serde_json::json!({ "column": column }));
    }
    api
}

struct ValueError {
    code: ErrorCode,
    column: String,
    message: String,
}

impl ValueError {
    fn in_record(self, number: usize) -> ApiError {
        ApiError::new(self.code, format!("record {number}: {}", self.message))
            .with_detail(serde_json::json!({ "column": self.column }))
    }
}

fn to_value<'j>(name: &str, value: &'j Json, known: Option<ColumnKind>) -> Result<Value<'j>, ValueError> {
    let conflict = |incoming: &str| ValueError {
        code: ErrorCode::SchemaConflict,
        column: name.to_string(),
        message: format!(
            "column {name:?} is {} but the value is {incoming}",
            known.map(ColumnKind::as_str).unwrap_or("unknown")
        ),
    };
    match value {
        Json::Bool(b) => Ok(Value::Boolean(*b)),
        Json::String(s) => Ok(Value::Text(s)),
        Json::Number(n) => match known {
            Some(ColumnKind::Integer) => {
                n.as_i64().map(Value::Integer).ok_or_else(|| conflict("not a signed 64-bit integer"))
            }
            Some(ColumnKind::Unsigned) => {
                n.as_u64().map(Value::Unsigned).ok_or_else(|| conflict("not an unsigned 64-bit integer"))
            }
            _ => n.as_f64().filter(|f| f.is_finite()).map(Value::Float).ok_or_else(|| conflict("not a finite number")),
        },
        Json::Object(_) | Json::Array(_) => Err(ValueError {
            code: ErrorCode::UnsupportedValue,
            column: name.to_string(),
            message: format!("column {name:?} has a nested object or array; only scalars are stored"),
        }),
        Json::Null => unreachable!("nulls are skipped by the caller"),
    }
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

/// Parses an RFC 3339 timestamp into nanoseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let time =
        chrono::DateTime::parse_from_rfc3339(text).map_err(|e| format!("invalid RFC 3339 timestamp {text:?}: {e}"))?;
    time.timestamp_nanos_opt().ok_or_else(|| format!("timestamp {text:?} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnDef, DatasetSchema};
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};

    fn run(schema: &DatasetSchema, body: &str) -> Result<super::super::batch::ParsedBatch, ApiError> {
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
        let batch = run(&schema, r#"[{"n":5}]"#).unwrap();
        assert_eq!(batch.arrays[0].as_primitive::<Int64Type>().value(0), 5);
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
    }

    #[test]
    fn missing_time_uses_the_default_and_nulls_are_missing() {
        let schema = DatasetSchema::empty("time");
        let batch = run(&schema, r#"[{"a":null,"b":1}]"#).unwrap();
        assert_eq!(batch.times, vec![7]);
        assert_eq!(batch.columns.len(), 1);
    }
}
