//! `GET/POST /api/v3/query_sql`: read-only SQL the way InfluxDB 3 takes it
//! (`db`, `q`, `format` as query parameters or a JSON body), answered by
//! the same locked-down engine as `POST /v1/sql`.
//!
//! Mapping: an InfluxDB 3 database holds tables; in Strata a dataset is the
//! table. `db` names the dataset the query is about: it must exist and the
//! token must read it (403 `forbidden` otherwise). The SQL reads datasets
//! by their names, as `/v1/sql` does, each needing its read scope. Line
//! protocol written with `/api/v3/write_lp?db=cpu` lands in dataset `cpu`,
//! so `SELECT … FROM cpu` with `db=cpu` reads it back.
//!
//! Formats: `json` (an array of row objects), `jsonl`, `csv` stream as the
//! engine produces them; `parquet` and `pretty` (a text table) are built
//! whole from the engine's Arrow stream once the query ends.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::{AppState, Body, param, query_params, read_body};
use crate::error::{ErrorCode, Failure};
use crate::query::output::OutputFormat;

/// The answer formats of `/api/v3/query_sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Jsonl,
    Csv,
    Parquet,
    Pretty,
}

impl Format {
    fn parse(raw: Option<&str>) -> Result<Format, Failure> {
        match raw.unwrap_or("json") {
            "json" => Ok(Format::Json),
            "jsonl" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            "pretty" => Ok(Format::Pretty),
            other => Err(Failure::new(
                ErrorCode::InvalidQuery,
                format!("format {other:?} is not json, jsonl, csv, parquet or pretty"),
            )),
        }
    }

    /// What the engine is asked for.
    fn engine_format(self) -> OutputFormat {
        match self {
            Format::Json | Format::Jsonl => OutputFormat::Ndjson,
            Format::Csv => OutputFormat::Csv,
            Format::Parquet | Format::Pretty => OutputFormat::Arrow,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Jsonl => "application/jsonl",
            Format::Csv => "text/csv",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Pretty => "text/plain; charset=utf-8",
        }
    }
}

/// The request, from the query string or a JSON body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    db: Option<String>,
    q: String,
    #[serde(default)]
    format: Option<String>,
}

async fn request_of(state: &AppState, request: Request<Incoming>) -> Result<SqlRequest, Failure> {
    let params = query_params(&request);
    let from_params = |params: &[(String, String)]| -> Result<SqlRequest, Failure> {
        let q =
            param(params, "q").ok_or_else(|| Failure::new(ErrorCode::InvalidQuery, "the q parameter is required"))?;
        Ok(SqlRequest {
            db: param(params, "db").map(str::to_string),
            q: q.to_string(),
            format: param(params, "format").map(str::to_string),
        })
    };
    if request.method() == Method::GET {
        return from_params(&params);
    }
    let (_, body) = read_body(request, state.config.limits.body_bytes_max).await?;
    if body.trim_ascii().is_empty() {
        return from_params(&params);
    }
    let mut parsed: SqlRequest = serde_json::from_slice(&body)
        .map_err(|e| Failure::new(ErrorCode::InvalidQuery, format!("invalid request: {e}")))?;
    // Query parameters fill what the body leaves out.
    if parsed.db.is_none() {
        parsed.db = param(&params, "db").map(str::to_string);
    }
    if parsed.format.is_none() {
        parsed.format = param(&params, "format").map(str::to_string);
    }
    Ok(parsed)
}

/// Answers `/api/v3/query_sql`.
pub(super) async fn query_sql(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let store = state.store()?.clone();
    let grant = super::auth::grant_of(&request);
    let parsed = request_of(state, request).await?;
    let format = Format::parse(parsed.format.as_deref())?;
    let db = parsed
        .db
        .ok_or_else(|| Failure::new(ErrorCode::InvalidQuery, "the db parameter names the dataset and is required"))?;
    let dataset = super::datasets::find(&store, &db)?;
    if !grant.may_read(dataset.name.as_str()) {
        let scope = format!("read:{}", dataset.name);
        return Err(Failure::new(
            ErrorCode::Forbidden,
            format!("reading dataset {} needs scope {scope}", dataset.name),
        )
        .with_detail(serde_json::json!({ "scope": scope })));
    }
    let engine = super::query::engine(state)?;
    let result = engine.sql(&store, &parsed.q, format.engine_format(), grant.readable()).await?;
    let body = match format {
        Format::Jsonl | Format::Csv => Body::Stream(result.chunks),
        Format::Json => Body::Stream(json_array(result.chunks)),
        Format::Parquet => Body::full(parquet(&batches(result.chunks).await?)?),
        Format::Pretty => Body::full(pretty(&batches(result.chunks).await?)?),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    Ok(response)
}

/// NDJSON chunks as one JSON array of row objects; an error aborts it.
fn json_array(mut lines: mpsc::Receiver<Result<Bytes, Failure>>) -> mpsc::Receiver<Result<Bytes, Failure>> {
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut first = true;
        while let Some(chunk) = lines.recv().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let mut out = Vec::with_capacity(chunk.len() + 2);
            for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push(if first { b'[' } else { b',' });
                first = false;
                out.extend_from_slice(line);
            }
            if !out.is_empty() && sender.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
        }
        let _ = sender.send(Ok(Bytes::from_static(if first { b"[]" } else { b"]" }))).await;
    });
    receiver
}

fn internal(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure::new(ErrorCode::Internal, format!("{what}: {error}"))
}

/// The record batches of an Arrow IPC stream, whole.
pub(super) async fn batches(mut chunks: mpsc::Receiver<Result<Bytes, Failure>>) -> Result<Vec<RecordBatch>, Failure> {
    let mut decoder = StreamDecoder::new();
    let mut out = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        let mut buffer = Buffer::from(chunk?.to_vec());
        while !buffer.is_empty() {
            if let Some(batch) = decoder.decode(&mut buffer).map_err(|e| internal("decoding the answer", e))? {
                out.push(batch);
            }
        }
    }
    decoder.finish().map_err(|e| internal("decoding the answer", e))?;
    if out.is_empty()
        && let Some(schema) = decoder.schema()
    {
        out.push(RecordBatch::new_empty(schema));
    }
    Ok(out)
}

/// The batches as one Parquet file.
fn parquet(batches: &[RecordBatch]) -> Result<Vec<u8>, Failure> {
    let Some(first) = batches.first() else { return Ok(Vec::new()) };
    let mut writer = parquet::arrow::ArrowWriter::try_new(Vec::new(), first.schema(), None)
        .map_err(|e| internal("encoding Parquet", e))?;
    for batch in batches {
        writer.write(batch).map_err(|e| internal("encoding Parquet", e))?;
    }
    writer.into_inner().map_err(|e| internal("encoding Parquet", e))
}

/// The batches as a text table with `+---+` borders, nulls empty.
fn pretty(batches: &[RecordBatch]) -> Result<String, Failure> {
    let Some(first) = batches.first() else { return Ok(String::new()) };
    let schema = first.schema();
    let mut rows: Vec<Vec<String>> = vec![schema.fields().iter().map(|f| f.name().clone()).collect()];
    let options = FormatOptions::default().with_null("");
    for batch in batches {
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(|e| internal("formatting the answer", e))?;
        for row in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(row).to_string()).collect());
        }
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let border: String = widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+\n";
    let line = |row: &[String]| -> String {
        let cells: String = row.iter().zip(&widths).map(|(cell, w)| format!("| {cell:<w$} ")).collect();
        cells + "|\n"
    };
    let mut out = border.clone() + &line(&rows[0]) + &border;
    for row in &rows[1..] {
        out.push_str(&line(row));
    }
    Ok(out + &border)
}
