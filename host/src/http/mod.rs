//! The HTTP surface: routing, body limits, and JSON responses. Handlers are
//! thin: they decode the request, call the store, encode the answer.

pub mod auth;
mod console;
mod dataset_admin;
mod datasets;
mod edge;
mod encoding;
mod influx;
mod lifecycle;
mod pages;
mod partition_ops;
mod query;
mod routing;
mod routing_hash;
mod sql_api;
mod status;
mod timeline;
mod tokens;
mod views;

pub use edge::{Edge, raise_open_file_limit};
mod policies;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::{ErrorCode, Failure};
use crate::ingest::Precision;
use crate::policy::PolicyRuntime;
use crate::store::{Format, Recovery, Store, WriteAnswer, WriteOutcome, WriteRequest};

/// Shared state of the HTTP server. The store is absent until start-up
/// recovery (WAL replay) finishes; until then data routes answer 503.
#[derive(Debug)]
pub struct AppState {
    /// The configuration snapshot.
    pub config: Arc<Config>,
    /// The store, once open.
    pub store: OnceLock<Arc<Store>>,
    /// What recovery did.
    pub recovery: OnceLock<Recovery>,
    /// The query engine, once the store is open.
    pub query: OnceLock<Arc<crate::query::QueryEngine>>,
    /// The policy runtime, once the policies are loaded.
    pub policies: OnceLock<Arc<PolicyRuntime>>,
    /// The lifecycle engine, once the policies are loaded.
    pub lifecycle: OnceLock<Arc<crate::lifecycle::Lifecycle>>,
    /// The catalog's tokens, once the catalog is open.
    pub tokens: OnceLock<Arc<auth::TokenCache>>,
}

impl AppState {
    /// State for a server whose store is not open yet.
    pub fn new(config: Arc<Config>) -> AppState {
        AppState {
            config,
            store: OnceLock::new(),
            recovery: OnceLock::new(),
            query: OnceLock::new(),
            policies: OnceLock::new(),
            lifecycle: OnceLock::new(),
            tokens: OnceLock::new(),
        }
    }

    fn store(&self) -> Result<&Arc<Store>, Failure> {
        self.store.get().ok_or_else(|| {
            Failure::new(ErrorCode::NotReady, "the server is replaying its write-ahead log").with_retry_after(1)
        })
    }

    fn lifecycle(&self) -> Result<&Arc<crate::lifecycle::Lifecycle>, Failure> {
        self.lifecycle.get().ok_or_else(|| {
            Failure::new(ErrorCode::NotReady, "the server is still loading its policies").with_retry_after(1)
        })
    }

    fn token_cache(&self) -> Result<&Arc<auth::TokenCache>, Failure> {
        self.tokens
            .get()
            .ok_or_else(|| Failure::new(ErrorCode::NotReady, "the server is opening its catalog").with_retry_after(1))
    }

    fn policies(&self) -> Result<&Arc<PolicyRuntime>, Failure> {
        self.policies.get().ok_or_else(|| {
            Failure::new(ErrorCode::NotReady, "the server is still loading its policies").with_retry_after(1)
        })
    }
}

/// A response body: whole, or streamed chunk by chunk (query results).
#[derive(Debug)]
pub enum Body {
    /// The whole body at once.
    Full(Option<Bytes>),
    /// Chunks from a producer; the body ends when the sender is dropped.
    /// An `Err` aborts it: the client sees an incomplete response (no
    /// terminating chunk, or a reset HTTP/2 stream), never a clean end of a
    /// truncated answer.
    Stream(tokio::sync::mpsc::Receiver<Result<Bytes, Failure>>),
}

impl Body {
    /// A whole body.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body::Full(Some(bytes.into()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Failure;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Failure>>> {
        match self.get_mut() {
            Body::Full(bytes) => std::task::Poll::Ready(bytes.take().map(|b| Ok(hyper::body::Frame::data(b)))),
            Body::Stream(receiver) => {
                receiver.poll_recv(cx).map(|chunk| chunk.map(|item| item.map(hyper::body::Frame::data)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    /// Whole bodies get a `Content-Length`; streams are chunked.
    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(bytes) => hyper::body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// Serves connections through `edge` until `shutdown` fires, then waits
/// for in-flight requests (at most `server.shutdown_timeout_ms`).
pub async fn serve(
    listener: TcpListener,
    edge: Edge,
    state: Arc<AppState>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let timeout = Duration::from_millis(state.config.server.shutdown_timeout_ms);
    Arc::new(edge).serve(listener, state, shutdown, timeout).await
}

async fn handle(state: Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = match route(&state, request).await {
        Ok(response) => response,
        Err(error) => {
            if error.code == ErrorCode::Internal {
                tracing::error!(%method, %path, %error, "request failed");
            }
            error_response(&error)
        }
    };
    Ok(response)
}

/// The JSON error response for `error`.
pub fn error_response(error: &Failure) -> Response<Body> {
    let mut response = json_response(status::for_code(error.code), &error.body());
    if let Some(seconds) = error.retry_after_seconds {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

pub(crate) fn json_response(status: StatusCode, body: &Json) -> Response<Body> {
    let mut response = Response::new(Body::full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Query-string parameters, percent-decoded.
pub(crate) fn query_params(request: &Request<Incoming>) -> Vec<(String, String)> {
    request.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Runs blocking work that is not a catalog call (those go through
/// `Catalog::call`) — the policy runtime, a store snapshot — on tokio's
/// blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::new(ErrorCode::Internal, format!("background task failed: {e}")))
}

fn precision(params: &[(String, String)]) -> Result<Precision, Failure> {
    match param(params, "precision") {
        None | Some("auto") => Ok(Precision::Nanoseconds),
        Some(raw) => Precision::parse(raw).ok_or_else(|| {
            Failure::new(ErrorCode::BadRequest, format!("precision {raw:?} is not one of ns, us, ms, s, m, h"))
        }),
    }
}

fn boolean(params: &[(String, String)], name: &str, default: bool) -> Result<bool, Failure> {
    match param(params, name) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(raw) => Err(Failure::new(ErrorCode::BadRequest, format!("{name}={raw:?} must be true or false"))),
    }
}

/// Reads the body, refusing more than `body_bytes_max` — before reading
/// anything when `Content-Length` already says so — and decodes gzip.
pub(crate) async fn read_body(
    request: Request<Incoming>,
    body_bytes_max: usize,
) -> Result<(hyper::http::request::Parts, Bytes), Failure> {
    let too_large = || {
        Failure::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body exceeds {body_bytes_max} bytes (limits.body_bytes_max)"),
        )
    };
    let announced =
        request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > body_bytes_max as u64) {
        return Err(too_large());
    }
    let (parts, mut body) = request.into_parts();
    let mut reader = edge::BodyReader::new(&parts.extensions);
    // Reserve what the client announced (already checked against the
    // limit), from the budget every body being read shares.
    reader.reserve(announced.unwrap_or(0))?;
    let mut collected = Vec::with_capacity(announced.unwrap_or(0) as usize);
    while let Some(frame) = reader.frame(&mut body).await? {
        let frame = frame.map_err(|e| Failure::new(ErrorCode::BadRequest, format!("reading the body failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > body_bytes_max {
                return Err(too_large());
            }
            reader.reserve((collected.len() + data.len()) as u64)?;
            collected.extend_from_slice(&data);
        }
    }
    let gzip =
        parts.headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(|v| v.eq_ignore_ascii_case("gzip"));
    let bytes = match gzip {
        Some(true) => {
            let decoded = encoding::gunzip(&collected, body_bytes_max)?;
            if decoded.len() > body_bytes_max {
                return Err(too_large());
            }
            Bytes::from(decoded)
        }
        Some(false) => {
            let encoding = parts.headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
            if encoding.eq_ignore_ascii_case("identity") {
                Bytes::from(collected)
            } else {
                return Err(Failure::new(
                    ErrorCode::BadRequest,
                    format!("Content-Encoding {encoding:?} is not supported (use gzip or identity)"),
                ));
            }
        }
        None => Bytes::from(collected),
    };
    Ok((parts, bytes))
}

/// Authorizes the request (see `auth`), answers it, and audits it when it
/// was an admin request.
async fn route(state: &Arc<AppState>, mut request: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let admission = match auth::authorize(state, &mut request).await {
        Ok(admission) => admission,
        Err(refused) => return Ok(refused),
    };
    let response = dispatch(state, request).await;
    admission.audit(state, auth::status_of(&response)).await;
    response
}

async fn dispatch(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (_, ["v1", "datasets", ..]) => dataset_route(state, request, &segments).await,
        (&Method::GET | &Method::HEAD, _) if console::is_console_path(&segments) => {
            console::serve(&segments, request.headers())
        }
        (_, ["v1", "policies" | "lifecycle" | "audit" | "storage-targets" | "tokens", ..]) => {
            admin_route(state, request, &segments).await
        }
        (&Method::GET | &Method::HEAD, ["health"]) => Ok(influx::health()),
        (&Method::GET | &Method::HEAD, ["ping"]) => Ok(influx::ping()),
        (&Method::GET, ["api", "v2", "buckets"]) => Ok(influx::buckets(state.store()?, &auth::grant_of(&request))),
        (&Method::POST, ["write"]) => write(state, request, None, Format::LineProtocol, "db").await,
        (&Method::GET | &Method::POST, ["query"]) => influx::query_v1(state, request).await,
        (&Method::GET | &Method::POST, ["api", "v3", "query_influxql"]) => influx::query_v3(state, request).await,
        (&Method::GET, ["ready"]) => {
            // Ready means every endpoint answers: the store has replayed
            // its WAL, the policies are loaded and the lifecycle engine is
            // open (its start-up sweep done).
            state.store()?;
            state.policies()?;
            state.lifecycle()?;
            Ok(json_response(StatusCode::OK, &json!({ "status": "ready", "recovery": state.recovery.get() })))
        }
        (&Method::GET, ["metrics"]) => {
            let mut policy_metrics = state.policies.get().map(|runtime| runtime.metrics()).unwrap_or_default();
            if let Some(lifecycle) = state.lifecycle.get() {
                policy_metrics.push_str(&lifecycle.metrics().await);
            }
            policy_metrics.push_str(&routing::metrics(state.store()?, state.config.ingest.routing_hot_ratio));
            Ok(datasets::metrics(state.store()?, &policy_metrics))
        }
        (&Method::POST, ["api", "v2", "write"]) => write(state, request, None, Format::LineProtocol, "bucket").await,
        (&Method::POST, ["api", "v3", "write_lp"]) => write(state, request, None, Format::LineProtocol, "db").await,
        (&Method::POST, ["v1", "sql"]) => query::sql(state, request).await,
        (&Method::GET | &Method::POST, ["api", "v3", "query_sql"]) => sql_api::query_sql(state, request).await,
        (&Method::GET, ["health", "lifecycle"]) => {
            let health = state.lifecycle()?.health(crate::time::now_ns()).await?;
            let status = if health["status"] == "unhealthy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
            Ok(json_response(status, &health))
        }
        (&Method::POST, ["v1", "flush"]) => {
            let flushed = state.store()?.flush(true).await?;
            Ok(json_response(StatusCode::OK, &json!({ "partitions_flushed": flushed })))
        }
        (_, ["health" | "ready" | "metrics" | "ping" | "write" | "query"])
        | (_, ["api", "v2", "write" | "buckets"])
        | (_, ["api", "v3", "query_influxql"])
        | (_, ["api", "v3", "write_lp" | "query_sql"])
        | (_, ["v1", "flush" | "sql"]) => Err(not_allowed(&method, &path)),
        _ => Err(Failure::new(ErrorCode::NotFound, format!("no route {method} {path}"))),
    }
}

/// A known path, not with this method.
fn not_allowed(method: &Method, path: &str) -> Failure {
    Failure::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {path}"))
}

/// `/v1/datasets/…`: datasets, their partitions, writes, queries and compaction.
async fn dataset_route(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    segments: &[&str],
) -> Result<Response<Body>, Failure> {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    match (&method, segments) {
        (&Method::POST, ["v1", "datasets", dataset, "records"]) => {
            let dataset = dataset.to_string();
            write(state, request, Some(dataset), Format::Json, "").await
        }
        (&Method::GET, ["v1", "datasets"]) => datasets::list(state.store()?, &auth::grant_of(&request)).await,
        (&Method::GET, ["v1", "datasets", dataset]) => dataset_admin::show(state.store()?, dataset).await,
        (&Method::DELETE, ["v1", "datasets", dataset]) => {
            let dry = boolean(&query_params(&request), "dry", false)?;
            dataset_admin::delete(state.lifecycle()?, dataset, dry).await
        }
        (&Method::PUT | &Method::PATCH, ["v1", "datasets", dataset]) => {
            let (store, dataset, put) = (state.store()?.clone(), dataset.to_string(), method == Method::PUT);
            let (_, body) = read_body(request, state.config.limits.body_bytes_max).await?;
            if put {
                dataset_admin::put(&store, &dataset, body).await
            } else {
                dataset_admin::patch(&store, &dataset, body).await
            }
        }
        (&Method::POST, ["v1", "datasets", dataset, "schema"]) => {
            let (store, dataset) = (state.store()?.clone(), dataset.to_string());
            let (_, body) = read_body(request, state.config.limits.body_bytes_max).await?;
            dataset_admin::change_schema(&store, &dataset, body).await
        }
        (&Method::GET, ["v1", "datasets", dataset, "partitions"]) => {
            datasets::partitions(state.store()?, dataset, &query_params(&request)).await
        }
        (&Method::GET, ["v1", "datasets", dataset, "timeline"]) => {
            timeline::timeline(state.store()?, dataset, query_params(&request)).await
        }
        (&Method::POST, ["v1", "datasets", dataset, "partitions", rest @ ..])
            if rest.len() >= 2 && rest.last() == Some(&"restore") =>
        {
            let lifecycle = state.lifecycle()?.clone();
            let (dataset, reference) = (dataset.to_string(), rest[..rest.len() - 1].join("/"));
            let (_, body) = read_body(request, state.config.limits.body_bytes_max).await?;
            lifecycle::restore(&lifecycle, &dataset, &reference, body).await
        }
        (&Method::POST, ["v1", "datasets", dataset, "partitions", rest @ ..])
            if rest.len() >= 2 && rest.last().is_some_and(|verb| partition_ops::is_manual_verb(verb)) =>
        {
            let (lifecycle, store) = (state.lifecycle()?.clone(), state.store()?.clone());
            let (verb, reference) = rest.split_last().expect("len >= 2");
            let (dataset, verb) = (dataset.to_string(), verb.to_string());
            let reference: Vec<String> = reference.iter().map(|s| s.to_string()).collect();
            let grant = auth::grant_of(&request);
            let (_, body) = read_body(request, state.config.limits.body_bytes_max).await?;
            let reference: Vec<&str> = reference.iter().map(String::as_str).collect();
            partition_ops::manual(&lifecycle, &store, &dataset, &reference, &verb, grant.actor(), body).await
        }
        (&Method::GET, ["v1", "datasets", dataset, "routing"]) => {
            let hot_ratio = state.config.ingest.routing_hot_ratio;
            routing::report(state, dataset, &query_params(&request), hot_ratio).await
        }
        (&Method::GET, ["v1", "datasets", dataset, "manifest"]) => {
            partition_ops::manifest(state.store()?, dataset, &query_params(&request)).await
        }
        (&Method::POST, ["v1", "datasets", dataset, "partitions", rest @ ..]) if rest.len() >= 2 => {
            let (verb, reference) = rest.split_last().expect("len >= 2");
            let read_only = match *verb {
                "seal" => true,
                "unseal" => false,
                _ => return Err(Failure::new(ErrorCode::NotFound, format!("no route POST {path}"))),
            };
            datasets::seal(state, dataset, reference, read_only).await
        }
        (&Method::POST, ["v1", "datasets", dataset, "compact"]) => {
            let lifecycle = state.lifecycle()?.clone();
            let dataset = dataset.to_string();
            let (_, body) = read_body(request, state.config.limits.body_bytes_max).await?;
            lifecycle::compact(&lifecycle, &dataset, body).await
        }
        (&Method::GET, ["v1", "datasets", dataset, "compaction"]) => {
            lifecycle::compaction(state.lifecycle()?, dataset).await
        }
        (&Method::POST, ["v1", "datasets", dataset, "query"]) => {
            let dataset = dataset.to_string();
            query::structured(state, request, &dataset).await
        }
        (&Method::GET, ["v1", "datasets", dataset, "partitions", rest @ ..])
            if rest.len() >= 2 && rest.last() == Some(&"explain") =>
        {
            lifecycle::explain(state.lifecycle()?, dataset, &rest[..rest.len() - 1]).await
        }
        _ => Err(not_allowed(&method, &path)),
    }
}

/// The admin API: policies, lifecycle runs, the audit log, storage
/// targets and tokens.
async fn admin_route(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    segments: &[&str],
) -> Result<Response<Body>, Failure> {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let body_bytes_max = state.config.limits.body_bytes_max;
    match (&method, segments) {
        (&Method::GET, ["v1", "policies"]) => policies::list(state.policies()?).await,
        (&Method::POST, ["v1", "policies", "reload"]) => policies::reload(state.policies()?).await,
        (&Method::GET, ["v1", "policies", name]) => policies::show(state.policies()?, name).await,
        (&Method::GET, ["v1", "policies", name, "versions"]) => {
            let params = query_params(&request);
            policies::versions(state.policies()?, state.store()?.catalog(), name, &params).await
        }
        (&Method::POST, ["v1", "policies", name, "rollback"]) => {
            let (runtime, name) = (state.policies()?.clone(), name.to_string());
            let (_, body) = read_body(request, body_bytes_max).await?;
            policies::rollback(&runtime, &name, body).await
        }
        (&Method::POST, ["v1", "policies", name, "run"]) => {
            let (lifecycle, name) = (state.lifecycle()?.clone(), name.to_string());
            let (_, body) = read_body(request, body_bytes_max).await?;
            lifecycle::run(&lifecycle, &name, body).await
        }
        (&Method::POST, ["v1", "policies", name, "simulate"]) => {
            let (runtime, store, name) = (state.policies()?.clone(), state.store()?.clone(), name.to_string());
            policies::simulate(&runtime, &store, &name, request, &state.config).await
        }
        (&Method::GET, ["v1", "lifecycle", "runs"]) => {
            lifecycle::runs(state.lifecycle()?, query_params(&request)).await
        }
        (&Method::GET, ["v1", "lifecycle", "runs", id]) => lifecycle::run_detail(state.lifecycle()?, id).await,
        (&Method::GET, ["v1", "storage-targets"]) => lifecycle::storage_targets(state.lifecycle()?).await,
        (&Method::GET, ["v1", "audit"]) => lifecycle::audit(state.lifecycle()?, query_params(&request)).await,
        (&Method::POST, ["v1", "tokens"]) => {
            let (catalog, cache) = (state.store()?.catalog().clone(), state.token_cache()?.clone());
            let (_, body) = read_body(request, body_bytes_max).await?;
            tokens::create(&catalog, &cache, body).await
        }
        (&Method::GET, ["v1", "tokens"]) => tokens::list(state.store()?.catalog()).await,
        (&Method::DELETE, ["v1", "tokens", name]) => {
            tokens::revoke(state.store()?.catalog(), state.token_cache()?, name).await
        }
        _ => Err(not_allowed(&method, &path)),
    }
}

async fn write(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    dataset: Option<String>,
    format: Format,
    dataset_param: &str,
) -> Result<Response<Body>, Failure> {
    let store = state.store()?.clone();
    let params = query_params(&request);
    let dataset = match dataset {
        Some(dataset) => dataset,
        None => param(&params, dataset_param).map(str::to_string).ok_or_else(|| {
            Failure::new(
                ErrorCode::BadRequest,
                format!("the {dataset_param} query parameter names the dataset and is required"),
            )
        })?,
    };
    let precision = precision(&params)?;
    let accept_partial = boolean(&params, "accept_partial", true)?;
    let idempotency_key = request
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| Failure::new(ErrorCode::BadRequest, "Idempotency-Key must be visible ASCII"))?;
    let influx = format == Format::LineProtocol;
    let (_, body) = read_body(request, state.config.limits.body_bytes_max).await?;
    let answer =
        store.write(WriteRequest { dataset, body, format, precision, accept_partial, idempotency_key }).await?;
    Ok(write_response(&answer, influx))
}

/// The answer to a write, first or replayed: 200 with the counts (204 on
/// the InfluxDB endpoints), or a partial outcome's status and error body.
fn write_response(answer: &WriteAnswer, influx: bool) -> Response<Body> {
    let mut response = match &answer.outcome {
        WriteOutcome::Written { .. } if influx => no_content(),
        WriteOutcome::Written { rows, partitions } => {
            json_response(StatusCode::OK, &WriteOutcome::written_body(*rows, *partitions))
        }
        WriteOutcome::PartialWrite(failure) | WriteOutcome::LateRowsRefused(failure) => {
            json_response(status::for_code(failure.code), &failure.body())
        }
    };
    if answer.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
