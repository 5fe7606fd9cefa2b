//! The InfluxDB-compatible read side: `/ping`, `/health`'s InfluxDB fields,
//! `/api/v2/buckets`, and InfluxQL over `/query` (1.x) and
//! `/api/v3/query_influxql`.
//!
//! **Invariant:** every statement runs as a structured query (see
//! `query::influxql`) on the datasets the request's token may read; a
//! statement's error is reported in its own result (200, as InfluxDB does),
//! a query that does not parse is 400.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value as Json, json};

use super::auth::Grant;
use super::{AppState, Body, json_response, param, query_params, read_body};
use crate::error::{ErrorCode, Failure};
use crate::query::influxql::series::{self, Epoch, Shape};
use crate::query::influxql::{self, MEASUREMENT_COLUMN, Statement};
use crate::query::output::OutputFormat;
use crate::query::plan::{Aggregation, Downsample, Fill, Order, QueryRequest};
use crate::schema::ColumnKind;
use crate::store::{DatasetState, Store};

/// The InfluxDB version Strata answers as: the 1.8 API it implements.
pub(super) const INFLUX_VERSION: &str = "1.8.10-strata";

/// A statement's answer is assembled whole (InfluxDB's JSON is one
/// document per request): past this many bytes of rows it is refused.
const ANSWER_BYTES_MAX: usize = 64 << 20;

/// `GET`/`HEAD /ping`: 204 with the version headers clients read.
pub(super) fn ping() -> Response<Body> {
    let mut response = Response::new(Body::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert("x-influxdb-version", HeaderValue::from_static(INFLUX_VERSION));
    headers.insert("x-influxdb-build", HeaderValue::from_static("OSS"));
    response
}

/// `GET /health` in InfluxDB 2's shape (what influxdb-client's `health()` parses).
pub(super) fn health() -> Response<Body> {
    let body = json!({
        "name": "strata",
        "message": "ready for queries and writes",
        "status": "pass",
        "checks": [],
        "version": INFLUX_VERSION,
        "commit": env!("CARGO_PKG_VERSION"),
    });
    let mut response = json_response(StatusCode::OK, &body);
    response.headers_mut().insert("x-influxdb-version", HeaderValue::from_static(INFLUX_VERSION));
    response
}

/// `GET /api/v2/buckets`: the datasets the token may read, as buckets.
pub(super) fn buckets(store: &Store, grant: &Grant) -> Response<Body> {
    let buckets: Vec<Json> = store
        .datasets()
        .into_iter()
        .filter(|d| grant.may_read(d.name.as_str()))
        .map(|d| {
            json!({
                "id": format!("{:016x}", d.record.id),
                "name": d.name.as_str(),
                "orgID": "0000000000000000",
                "type": "user",
                "retentionRules": [],
                "createdAt": crate::time::rfc3339(d.record.created_at_ns),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "buckets": buckets }))
}

/// The parameters of an InfluxQL request: the URL's, then a form body's.
async fn influxql_params(
    state: &AppState,
    request: Request<Incoming>,
) -> Result<(Vec<(String, String)>, Grant), Failure> {
    let mut params = query_params(&request);
    let grant = super::auth::grant_of(&request);
    let form = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (_, body) = read_body(request, state.config.limits.body_bytes_max).await?;
    if form {
        params.extend(form_urlencoded::parse(&body).into_owned());
    } else if !body.is_empty() && param(&params, "q").is_none() {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| Failure::new(ErrorCode::InvalidQuery, "the InfluxQL body must be UTF-8"))?;
        params.push(("q".into(), text));
    }
    Ok((params, grant))
}

/// InfluxDB 1.x's error body: `{"error": "…"}`.
fn influx_error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// The results of every statement of the request's `q`, or the response
/// that ends the request (a parse failure, a forbidden database).
async fn run_statements(
    state: &Arc<AppState>,
    params: &[(String, String)],
    grant: &Grant,
) -> Result<Result<Vec<Json>, Response<Body>>, Failure> {
    let store = state.store()?.clone();
    let Some(text) = param(params, "q") else {
        return Ok(Err(influx_error(StatusCode::BAD_REQUEST, "missing required parameter \"q\"")));
    };
    let epoch = match Epoch::parse(param(params, "epoch")) {
        Ok(epoch) => epoch,
        Err(message) => return Ok(Err(influx_error(StatusCode::BAD_REQUEST, &message))),
    };
    let statements = match influxql::parse(text) {
        Ok(statements) => statements,
        Err(message) => {
            return Ok(Err(influx_error(StatusCode::BAD_REQUEST, &format!("error parsing query: {message}"))));
        }
    };
    let db = param(params, "db").filter(|db| !db.is_empty());
    if let Some(db) = db
        && !grant.may_read(db)
    {
        return Ok(Err(influx_error(StatusCode::FORBIDDEN, &format!("this token may not read database {db:?}"))));
    }
    let context = Context { state, store: &store, grant, db, epoch, now: crate::time::now_ns() };
    let mut results = Vec::new();
    for (id, statement) in statements.iter().enumerate() {
        let result = match context.statement(statement).await {
            Ok(series) if series.is_empty() => json!({ "statement_id": id }),
            Ok(series) => json!({ "statement_id": id, "series": series }),
            Err(message) => json!({ "statement_id": id, "error": message }),
        };
        results.push(result);
    }
    Ok(Ok(results))
}

/// `GET`/`POST /query?db=&q=&epoch=`: InfluxDB 1.x's query endpoint.
pub(super) async fn query_v1(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let (params, grant) = influxql_params(state, request).await?;
    let results = match run_statements(state, &params, &grant).await? {
        Ok(results) => results,
        Err(response) => return Ok(response),
    };
    let body = json!({ "results": results });
    let text = if param(&params, "pretty") == Some("true") {
        serde_json::to_string_pretty(&body).unwrap_or_default()
    } else {
        body.to_string()
    };
    let mut response = Response::new(Body::full(text));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert("x-influxdb-version", HeaderValue::from_static(INFLUX_VERSION));
    Ok(response)
}

/// `GET`/`POST /api/v3/query_influxql?db=&q=&format=`: InfluxDB 3's shape,
/// one object (or line) per row with its measurement in `iox::measurement`.
pub(super) async fn query_v3(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let (params, grant) = influxql_params(state, request).await?;
    let jsonl = match param(&params, "format") {
        None | Some("json") => false,
        Some("jsonl") => true,
        Some(other) => {
            return Err(Failure::new(ErrorCode::InvalidQuery, format!("format {other:?} is not json or jsonl")));
        }
    };
    let results = match run_statements(state, &params, &grant).await? {
        Ok(results) => results,
        Err(response) => return Ok(response),
    };
    let mut rows = Vec::new();
    for result in &results {
        if let Some(error) = result["error"].as_str() {
            return Err(Failure::new(ErrorCode::InvalidQuery, error.to_string()));
        }
        for series in result["series"].as_array().into_iter().flatten() {
            rows.extend(v3_rows(series));
        }
    }
    let (text, content_type) = if jsonl {
        (rows.iter().map(|r| format!("{r}\n")).collect::<String>(), "application/jsonl")
    } else {
        (Json::Array(rows).to_string(), "application/json")
    };
    let mut response = Response::new(Body::full(text));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// A series' rows as objects: `iox::measurement`, its tags, its columns.
fn v3_rows(series: &Json) -> Vec<Json> {
    let columns: Vec<&str> = series["columns"].as_array().into_iter().flatten().filter_map(Json::as_str).collect();
    let mut out = Vec::new();
    for values in series["values"].as_array().into_iter().flatten() {
        let mut row = serde_json::Map::new();
        row.insert("iox::measurement".into(), series["name"].clone());
        if let Some(tags) = series["tags"].as_object() {
            row.extend(tags.clone());
        }
        for (column, value) in columns.iter().zip(values.as_array().into_iter().flatten()) {
            row.insert((*column).to_string(), value.clone());
        }
        out.push(Json::Object(row));
    }
    out
}

/// What every statement of one request shares.
struct Context<'a> {
    state: &'a Arc<AppState>,
    store: &'a Arc<Store>,
    grant: &'a Grant,
    db: Option<&'a str>,
    epoch: Epoch,
    now: i64,
}

impl Context<'_> {
    /// The dataset a measurement lives in: `db`'s when it keeps line
    /// protocol's measurements (or is named like the measurement), else the
    /// one named like the measurement. `Ok(None)`: no such measurement.
    fn resolve(&self, measurement: &str) -> Result<Option<Arc<DatasetState>>, String> {
        let db = self.db.and_then(|db| self.store.dataset(db));
        let keeps =
            |d: &Arc<DatasetState>| d.name.as_str() == measurement || d.schema().kind_of(MEASUREMENT_COLUMN).is_some();
        let found = match &db {
            Some(dataset) if keeps(dataset) => Some(dataset.clone()),
            _ => self.store.dataset(measurement),
        };
        match found {
            Some(dataset) if !self.grant.may_read(dataset.name.as_str()) => {
                Err(format!("this token may not read database {:?}", dataset.name.as_str()))
            }
            Some(dataset) => Ok(Some(dataset)),
            None if db.is_none() && self.db.is_some() => {
                Err(format!("database not found: {}", self.db.unwrap_or_default()))
            }
            None => Ok(None),
        }
    }

    /// The database a SHOW without FROM reads.
    fn database(&self) -> Result<Arc<DatasetState>, String> {
        let db = self.db.ok_or("database name required")?;
        self.store.dataset(db).ok_or_else(|| format!("database not found: {db}"))
    }

    async fn statement(&self, statement: &Statement) -> Result<Vec<Json>, String> {
        match statement {
            Statement::ShowDatabases => {
                let mut names: Vec<String> = self
                    .store
                    .datasets()
                    .iter()
                    .map(|d| d.name.as_str().to_string())
                    .filter(|name| self.grant.may_read(name))
                    .collect();
                names.sort();
                Ok(vec![series::names("databases", "name", names)])
            }
            Statement::ShowRetentionPolicies => Ok(vec![json!({
                "columns": ["name", "duration", "shardGroupDuration", "replicaN", "default"],
                "values": [["autogen", "0s", "168h0m0s", 1, true]],
            })]),
            Statement::ShowMeasurements { matching, limit } => {
                let dataset = self.database()?;
                let names = self.measurements(&dataset).await?.into_iter();
                let names = names.filter(|name| matching.as_ref().is_none_or(|m| m.matches(name)));
                let names = names.take(limit.map_or(usize::MAX, |l| l as usize));
                Ok(vec![series::names("measurements", "name", names.collect::<Vec<_>>())])
            }
            Statement::ShowTagKeys { from } => self.keys(from.as_deref(), true).await,
            Statement::ShowFieldKeys { from } => self.keys(from.as_deref(), false).await,
            Statement::ShowTagValues { from, keys, condition } => {
                self.tag_values(from.as_deref(), keys, condition.as_ref()).await
            }
            Statement::Select(select) => {
                let Some(dataset) = self.resolve(&select.measurement)? else { return Ok(Vec::new()) };
                let schema = dataset.schema();
                let translated = influxql::translate(select, &schema, self.now)?;
                let rows = self.rows(&dataset, translated.request.clone()).await?;
                let shape = Shape {
                    name: &select.measurement,
                    time_column: &schema.time_column,
                    epoch: self.epoch,
                    fixed_time: translated.fixed_time,
                    limit: translated.limit,
                    offset: translated.offset,
                };
                Ok(series::series(&rows, &translated, shape))
            }
        }
    }

    /// Runs a structured query and returns its rows.
    async fn rows(&self, dataset: &Arc<DatasetState>, request: QueryRequest) -> Result<Vec<Json>, String> {
        let engine = self.state.query.get().ok_or("the server is starting")?;
        let result = engine
            .structured(self.store, dataset.clone(), request, OutputFormat::Json)
            .await
            .map_err(|f| f.message.clone())?;
        let mut chunks = result.chunks;
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            bytes.extend_from_slice(&chunk.map_err(|f| f.message.clone())?);
            if bytes.len() > ANSWER_BYTES_MAX {
                // Dropping the receiver stops the query.
                return Err(format!(
                    "the answer exceeds {} MiB: add LIMIT, narrow the time range or GROUP BY time()",
                    ANSWER_BYTES_MAX >> 20
                ));
            }
        }
        let mut answer: Json = serde_json::from_slice(&bytes).map_err(|e| format!("reading the answer: {e}"))?;
        if let Some(error) = answer.get("error") {
            return Err(error["message"].as_str().unwrap_or("the query failed").to_string());
        }
        Ok(match answer.get_mut("rows").map(Json::take) {
            Some(Json::Array(rows)) => rows,
            _ => Vec::new(),
        })
    }

    /// The distinct values of `columns` in the rows `request` selects.
    async fn distinct(
        &self,
        dataset: &Arc<DatasetState>,
        columns: Vec<String>,
        filters: Option<crate::query::plan::Filter>,
    ) -> Result<Vec<Json>, String> {
        let time = dataset.schema().time_column.clone();
        let request = QueryRequest {
            time_range: influxql::range(i64::MIN / 2, i64::MAX),
            columns: None,
            filters,
            group_by: columns,
            downsample: Some(Downsample {
                interval: None,
                aggregations: vec![Aggregation {
                    function: "count".into(),
                    column: time,
                    alias: Some("n".into()),
                    p: None,
                }],
                fill: Fill::None,
            }),
            order: Order::Asc,
            limit: None,
            offset: None,
            format: Some("json".into()),
        };
        self.rows(dataset, request).await
    }

    /// The measurements of a dataset: its `_measurement` values, or its name.
    async fn measurements(&self, dataset: &Arc<DatasetState>) -> Result<Vec<String>, String> {
        if dataset.schema().kind_of(MEASUREMENT_COLUMN).is_none() {
            return Ok(vec![dataset.name.as_str().to_string()]);
        }
        let rows = self.distinct(dataset, vec![MEASUREMENT_COLUMN.into()], None).await?;
        let mut names: Vec<String> =
            rows.iter().filter_map(|r| r[MEASUREMENT_COLUMN].as_str().map(str::to_string)).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The (dataset, measurement) pairs a SHOW … [FROM m] covers.
    async fn targets(&self, from: Option<&str>) -> Result<Vec<(Arc<DatasetState>, String)>, String> {
        match from {
            Some(measurement) => {
                Ok(self.resolve(measurement)?.map(|d| (d, measurement.to_string())).into_iter().collect())
            }
            None => {
                let dataset = self.database()?;
                let names = self.measurements(&dataset).await?;
                Ok(names.into_iter().map(|name| (dataset.clone(), name)).collect())
            }
        }
    }

    /// SHOW TAG KEYS (`tags`) or SHOW FIELD KEYS: the dataset's columns
    /// of that kind, those the measurement's rows hold when the dataset
    /// keeps several measurements.
    async fn keys(&self, from: Option<&str>, tags: bool) -> Result<Vec<Json>, String> {
        let mut out = Vec::new();
        for (dataset, measurement) in self.targets(from).await? {
            let schema = dataset.schema();
            let mut columns: Vec<(String, ColumnKind)> = if tags {
                influxql::tag_columns(&schema).into_iter().map(|c| (c, ColumnKind::Tag)).collect()
            } else {
                influxql::field_columns(&schema)
            };
            if schema.kind_of(MEASUREMENT_COLUMN).is_some() && !columns.is_empty() {
                let held = self.held_columns(&dataset, &measurement, &columns).await?;
                columns.retain(|(name, _)| held.contains(name));
            }
            if tags {
                out.push(series::names(&measurement, "tagKey", columns.into_iter().map(|(name, _)| name)));
                continue;
            }
            let values: Vec<Json> = columns.into_iter().map(|(name, kind)| json!([name, field_type(kind)])).collect();
            out.push(json!({ "name": measurement, "columns": ["fieldKey", "fieldType"], "values": values }));
        }
        Ok(out)
    }

    /// Which of `columns` hold a value in some row of `measurement`.
    async fn held_columns(
        &self,
        dataset: &Arc<DatasetState>,
        measurement: &str,
        columns: &[(String, ColumnKind)],
    ) -> Result<Vec<String>, String> {
        let aggregations = columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| Aggregation {
                function: "count".into(),
                column: name.clone(),
                alias: Some(format!("c{i}")),
                p: None,
            })
            .collect();
        let request = QueryRequest {
            time_range: influxql::range(i64::MIN / 2, i64::MAX),
            columns: None,
            filters: influxql::where_filter(None, &dataset.schema(), measurement)?,
            group_by: Vec::new(),
            downsample: Some(Downsample { interval: None, aggregations, fill: Fill::None }),
            order: Order::Asc,
            limit: None,
            offset: None,
            format: Some("json".into()),
        };
        let rows = self.rows(dataset, request).await?;
        Ok(columns
            .iter()
            .enumerate()
            .filter(|(i, _)| rows.iter().any(|row| row[format!("c{i}")].as_u64().is_some_and(|n| n > 0)))
            .map(|(_, (name, _))| name.clone())
            .collect())
    }

    async fn tag_values(
        &self,
        from: Option<&str>,
        keys: &[String],
        condition: Option<&influxql::Cond>,
    ) -> Result<Vec<Json>, String> {
        let mut out = Vec::new();
        for (dataset, measurement) in self.targets(from).await? {
            let schema = dataset.schema();
            let filters = influxql::where_filter(condition, &schema, &measurement)?;
            let mut values = Vec::new();
            for key in keys.iter().filter(|k| schema.kind_of(k) == Some(ColumnKind::Tag)) {
                let rows = self.distinct(&dataset, vec![key.clone()], filters.clone()).await?;
                let mut found: Vec<String> = rows.iter().filter_map(|r| r[key].as_str().map(str::to_string)).collect();
                found.sort();
                found.dedup();
                values.extend(found.into_iter().map(|v| json!([key, v])));
            }
            if !values.is_empty() {
                out.push(json!({ "name": measurement, "columns": ["key", "value"], "values": values }));
            }
        }
        Ok(out)
    }
}

/// InfluxDB's name for a field's type.
fn field_type(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Float => "float",
        ColumnKind::Integer => "integer",
        ColumnKind::Unsigned => "unsigned",
        ColumnKind::Boolean => "boolean",
        ColumnKind::Text | ColumnKind::Tag | ColumnKind::Time => "string",
    }
}
