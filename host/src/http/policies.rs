//! Policy handlers: list, show, reload, rollback, simulate. Every call into
//! the runtime blocks (catalog, components), so it runs on the blocking pool.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{Body, blocking, json_response, read_body};
use crate::config::Config;
use crate::error::{ErrorCode, Failure};
use crate::names::DatasetName;
use crate::policy::{PolicyRuntime, SimulationTarget, dataset_facts, partition_facts};
use crate::store::Store;
use crate::time::now_ns;

pub(super) async fn list(runtime: &Arc<PolicyRuntime>) -> Result<Response<Body>, Failure> {
    let (policies, file_errors) = runtime.list();
    Ok(json_response(StatusCode::OK, &json!({ "policies": policies, "file_errors": file_errors })))
}

pub(super) async fn show(runtime: &Arc<PolicyRuntime>, name: &str) -> Result<Response<Body>, Failure> {
    let runtime = runtime.clone();
    let name = name.to_string();
    let detail = blocking(move || runtime.detail(&name)).await??;
    Ok(json_response(StatusCode::OK, &serde_json::to_value(detail).unwrap_or_default()))
}

/// `GET /v1/policies/{name}/versions?limit=&cursor=`: every recorded
/// version, newest first, a page at a time.
pub(super) async fn versions(
    runtime: &Arc<PolicyRuntime>,
    catalog: &Arc<crate::catalog::Catalog>,
    name: &str,
    params: &[(String, String)],
) -> Result<Response<Body>, Failure> {
    let limit = super::pages::limit(params)?;
    let before: Option<i64> = super::pages::cursor(params)?;
    let policy = name.to_string();
    let mut versions =
        catalog.call(move |c| c.policy_versions_before(&policy, before, limit.saturating_add(1))).await?;
    if versions.is_empty() && before.is_none() && !runtime.list().0.iter().any(|p| p.name == name) {
        return Err(Failure::new(ErrorCode::PolicyNotFound, format!("no policy {name}")));
    }
    let more = versions.len() > limit;
    versions.truncate(limit);
    let next = super::pages::next_cursor(versions.last().map(|v| v.seq), more);
    let views: Vec<crate::policy::VersionView> = versions.iter().map(crate::policy::VersionView::from).collect();
    Ok(json_response(StatusCode::OK, &json!({ "policy": name, "versions": views, "next_cursor": next })))
}

pub(super) async fn reload(runtime: &Arc<PolicyRuntime>) -> Result<Response<Body>, Failure> {
    let runtime = runtime.clone();
    let report = blocking(move || runtime.reload()).await?;
    Ok(json_response(StatusCode::OK, &serde_json::to_value(report).unwrap_or_default()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    /// The version to return to; default: the previous good one.
    version: Option<i64>,
}

pub(super) async fn rollback(runtime: &Arc<PolicyRuntime>, name: &str, body: Bytes) -> Result<Response<Body>, Failure> {
    let request: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Failure::new(ErrorCode::InvalidJson, format!("rollback body: {e}")))?
    };
    let runtime = runtime.clone();
    let policy = name.to_string();
    let (from, to) = blocking(move || runtime.rollback(&policy, request.version)).await??;
    Ok(json_response(StatusCode::OK, &json!({ "policy": name, "from": from, "to": to })))
}

/// `{"now": RFC 3339 or epoch ns, "dataset": "...", "version": seq or sha256 prefix}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulateRequest {
    now: Option<Json>,
    dataset: String,
    version: Option<Json>,
}

fn parse_now(raw: Option<&Json>) -> Result<i64, Failure> {
    let invalid = |detail: String| {
        Failure::new(ErrorCode::InvalidTimestamp, format!("now must be RFC 3339 or epoch nanoseconds: {detail}"))
    };
    match raw {
        None => Ok(now_ns()),
        Some(Json::Number(number)) => number.as_i64().ok_or_else(|| invalid(number.to_string())),
        Some(Json::String(text)) => match text.parse::<i64>() {
            Ok(ns) => Ok(ns),
            Err(_) => chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| invalid(format!("{text:?}: {e}")))?
                .timestamp_nanos_opt()
                .ok_or_else(|| invalid(format!("{text:?} is out of range"))),
        },
        Some(other) => Err(invalid(other.to_string())),
    }
}

fn parse_version(raw: Option<&Json>) -> Result<SimulationTarget, Failure> {
    match raw {
        None | Some(Json::Null) => Ok(SimulationTarget::Active),
        Some(Json::Number(number)) => number
            .as_i64()
            .map(SimulationTarget::Seq)
            .ok_or_else(|| Failure::new(ErrorCode::BadRequest, format!("version {number} is not a sequence number"))),
        Some(Json::String(text)) if text == "active" => Ok(SimulationTarget::Active),
        Some(Json::String(text)) => match text.parse::<i64>() {
            Ok(seq) => Ok(SimulationTarget::Seq(seq)),
            Err(_) => Ok(SimulationTarget::Sha256(text.to_ascii_lowercase())),
        },
        Some(other) => Err(Failure::new(
            ErrorCode::BadRequest,
            format!("version must be a sequence number or a sha256 prefix, not {other}"),
        )),
    }
}

/// Reads a simulate body: JSON within `limits.body_bytes_max`; an uploaded
/// component (`Content-Type: application/wasm`, then `true`) within
/// `policies.plugin_bytes_max` too.
async fn read_simulate_body(
    request: Request<Incoming>,
    config: &Config,
) -> Result<(hyper::http::request::Parts, Bytes, bool), Failure> {
    let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let upload = content_type.starts_with("application/wasm");
    let body_bytes_max = config.limits.body_bytes_max;
    let plugin_bytes_max = usize::try_from(config.policies.plugin_bytes_max).unwrap_or(usize::MAX);
    if !upload || body_bytes_max <= plugin_bytes_max {
        let (parts, body) = read_body(request, body_bytes_max).await?;
        return Ok((parts, body, upload));
    }
    let (parts, body) = read_body(request, plugin_bytes_max).await.map_err(|error| match error.code {
        ErrorCode::PayloadTooLarge => Failure::new(
            ErrorCode::PayloadTooLarge,
            format!("the uploaded component exceeds {plugin_bytes_max} bytes (policies.plugin_bytes_max)"),
        ),
        _ => error,
    })?;
    Ok((parts, body, true))
}

pub(super) async fn simulate(
    runtime: &Arc<PolicyRuntime>,
    store: &Arc<Store>,
    name: &str,
    request: Request<Incoming>,
    config: &Config,
) -> Result<Response<Body>, Failure> {
    let (parts, body, upload) = read_simulate_body(request, config).await?;
    let (now_ns, dataset, upload, version) = if upload {
        let params: Vec<(String, String)> =
            parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let dataset = param("dataset").ok_or_else(|| {
            Failure::new(ErrorCode::BadRequest, "the dataset query parameter is required with an uploaded component")
        })?;
        (parse_now(param("now").map(Json::String).as_ref())?, dataset, Some(body), SimulationTarget::Active)
    } else {
        let request: SimulateRequest = serde_json::from_slice(&body)
            .map_err(|e| Failure::new(ErrorCode::InvalidJson, format!("simulate body: {e}")))?;
        (parse_now(request.now.as_ref())?, request.dataset, None, parse_version(request.version.as_ref())?)
    };
    let dataset_name =
        DatasetName::parse(&dataset).map_err(|message| Failure::new(ErrorCode::InvalidDatasetName, message))?;
    let state = store
        .dataset(dataset_name.as_str())
        .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no dataset {dataset_name}")))?;
    // What may compile waits for a compile slot here, on the async side,
    // so that queued requests hold no blocking thread.
    let (target, slot) = match (upload, version) {
        (Some(bytes), _) => (SimulationTarget::Candidate(runtime.admit_candidate(bytes.into()).await?), None),
        (None, SimulationTarget::Active) => (SimulationTarget::Active, None),
        (None, version) => (version, Some(runtime.compile_slot().await?)),
    };
    let dataset_id = state.record.id;
    let records = store.catalog().call(move |catalog| catalog.partitions(dataset_id)).await?;
    let runtime = runtime.clone();
    let policy = name.to_string();
    let (simulation, bound) = blocking(move || -> Result<_, Failure> {
        let _slot = slot;
        let facts = dataset_facts(&state.record, &state.schema());
        let partitions: Vec<_> = records.iter().map(|record| partition_facts(&dataset_name, record)).collect();
        let bound = runtime.binds(&policy, dataset_name.as_str());
        let simulation = runtime.simulate(&policy, target, now_ns, &facts, &partitions)?;
        Ok((simulation, bound))
    })
    .await??;
    let mut summary = serde_json::Map::new();
    for entry in &simulation.plan {
        let counts = summary.entry(entry.action).or_insert_with(|| json!({ "partitions": 0, "bytes": 0, "rows": 0 }));
        counts["partitions"] = json!(counts["partitions"].as_u64().unwrap_or(0) + 1);
        counts["bytes"] = json!(counts["bytes"].as_u64().unwrap_or(0) + entry.bytes);
        counts["rows"] = json!(counts["rows"].as_u64().unwrap_or(0) + entry.rows);
    }
    let mut body = serde_json::to_value(&simulation).unwrap_or_default();
    if let Json::Object(map) = &mut body {
        map.insert("dataset".into(), json!(dataset));
        map.insert("bound".into(), json!(bound));
        map.insert("now".into(), json!(crate::time::rfc3339(now_ns)));
        map.insert("summary".into(), Json::Object(summary));
    }
    Ok(json_response(StatusCode::OK, &body))
}
