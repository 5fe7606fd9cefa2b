//! Query handlers: structured queries and read-only SQL, streamed.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::{AppState, Body, param, query_params, read_body};
use crate::error::{ErrorCode, Failure};
use crate::query::QueryEngine;
use crate::query::output::OutputFormat;
use crate::query::plan::QueryRequest;

pub(super) fn engine(state: &AppState) -> Result<&Arc<QueryEngine>, Failure> {
    state.query.get().ok_or_else(|| Failure::new(ErrorCode::NotReady, "the server is starting").with_retry_after(1))
}

fn streamed(result: crate::query::QueryResult) -> Response<Body> {
    let mut response = Response::new(Body::Stream(result.chunks));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(result.content_type));
    response
}

fn accept(request: &Request<Incoming>) -> Option<String> {
    request.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).map(str::to_string)
}

pub(super) async fn structured(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    raw: &str,
) -> Result<Response<Body>, Failure> {
    let store = state.store()?.clone();
    let dataset = super::datasets::find(&store, raw)?;
    let accept = accept(&request);
    let (_, body) = read_body(request, state.config.limits.body_bytes_max).await?;
    let query: QueryRequest = serde_json::from_slice(&body)
        .map_err(|e| Failure::new(ErrorCode::InvalidQuery, format!("invalid query: {e}")))?;
    let format = OutputFormat::parse(query.format.as_deref(), accept.as_deref())?;
    let result = engine(state)?.structured(&store, dataset, query, format).await?;
    Ok(streamed(result))
}

pub(super) async fn sql(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let store = state.store()?.clone();
    let readable = super::auth::grant_of(&request).readable();
    let accept = accept(&request);
    let params = query_params(&request);
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (_, body) = read_body(request, state.config.limits.body_bytes_max).await?;
    // SQL never starts with `{`, so a JSON body is recognised without its header too.
    let is_json = is_json || body.trim_ascii_start().first() == Some(&b'{');
    let (sql, format) = if is_json {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SqlRequest {
            sql: String,
            #[serde(default)]
            format: Option<String>,
        }
        let parsed: SqlRequest = serde_json::from_slice(&body)
            .map_err(|e| Failure::new(ErrorCode::InvalidQuery, format!("invalid request: {e}")))?;
        (parsed.sql, parsed.format)
    } else {
        let text =
            String::from_utf8(body.to_vec()).map_err(|_| Failure::new(ErrorCode::InvalidQuery, "SQL must be UTF-8"))?;
        (text, param(&params, "format").map(str::to_string))
    };
    let format = OutputFormat::parse(format.as_deref(), accept.as_deref())?;
    let result = engine(state)?.sql(&store, &sql, format, readable).await?;
    Ok(streamed(result))
}
