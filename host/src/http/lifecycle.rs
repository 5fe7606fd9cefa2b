//! Lifecycle handlers: run a policy now, list runs, read the audit log,
//! compact a dataset's small files and show its compaction checkpoints.

use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{Body, json_response, pages, param, views};
use crate::catalog::{AuditFilter, AuditKind};
use crate::error::{ErrorCode, Failure};
use crate::lifecycle::Lifecycle;
use crate::time::now_ns;
use hyper::Response;

/// `POST /v1/policies/{name}/run`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    /// Only this dataset (default: every dataset the policy binds).
    dataset: Option<String>,
    /// Decide and judge, execute nothing.
    #[serde(default)]
    dry: bool,
    /// The `now` the policy sees: RFC 3339 or epoch ns (default: the
    /// clock). The guard rails judge a run that executes at the server's
    /// clock regardless, and refuse a future `now` unless `dry`.
    now: Option<Json>,
}

pub(super) async fn run(lifecycle: &Arc<Lifecycle>, policy: &str, body: Bytes) -> Result<Response<Body>, Failure> {
    let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Failure::new(ErrorCode::InvalidJson, format!("run body: {e}")))?
    };
    let now = match &request.now {
        None => now_ns(),
        Some(value) => crate::query::plan::time_bound(value, "now")?,
    };
    let runs = lifecycle.run_policy(policy, request.dataset.as_deref(), now, request.dry).await?;
    Ok(json_response(StatusCode::OK, &json!({ "runs": runs })))
}

pub(super) async fn runs(lifecycle: &Arc<Lifecycle>, params: Vec<(String, String)>) -> Result<Response<Body>, Failure> {
    let limit = pages::limit(&params)?;
    let before: Option<i64> = pages::cursor(&params)?;
    let mut runs = lifecycle
        .catalog()
        .call(move |catalog| {
            catalog.runs_before(param(&params, "policy"), param(&params, "dataset"), before, limit.saturating_add(1))
        })
        .await?;
    let more = runs.len() > limit;
    runs.truncate(limit);
    let last = runs.last().map(|r| r.id);
    let runs: Vec<Json> = runs.into_iter().map(views::run_summary).collect();
    Ok(json_response(StatusCode::OK, &json!({ "runs": runs, "next_cursor": pages::next_cursor(last, more) })))
}

pub(super) async fn run_detail(lifecycle: &Arc<Lifecycle>, raw: &str) -> Result<Response<Body>, Failure> {
    let id: i64 = raw.parse().map_err(|_| Failure::new(ErrorCode::NotFound, format!("no run {raw:?}")))?;
    let run = lifecycle.catalog().call(move |catalog| catalog.run(id)).await?;
    let run = run.ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no run {id}")))?;
    Ok(json_response(StatusCode::OK, &views::run(run)))
}

pub(super) async fn audit(
    lifecycle: &Arc<Lifecycle>,
    params: Vec<(String, String)>,
) -> Result<Response<Body>, Failure> {
    let limit = pages::limit(&params)?;
    let after: Option<i64> = pages::cursor(&params)?;
    let since = match param(&params, "since") {
        None => i64::MIN,
        Some(raw) => {
            let value = raw.parse::<i64>().map(Json::from).unwrap_or_else(|_| Json::String(raw.to_string()));
            crate::query::plan::time_bound(&value, "since")?
        }
    };
    let kind = match param(&params, "kind") {
        None => None,
        // No event has a kind the catalog does not know.
        Some(raw) => match AuditKind::parse(raw) {
            Some(kind) => Some(kind),
            None => return Ok(json_response(StatusCode::OK, &json!({ "events": [], "next_cursor": null }))),
        },
    };
    let mut events = lifecycle
        .catalog()
        .call(move |catalog| {
            let filter = AuditFilter {
                dataset: param(&params, "dataset"),
                partition: param(&params, "partition"),
                kind,
                since_ns: since,
                limit: limit.saturating_add(1),
                newest_first: false,
            };
            catalog.audit_events_after(&filter, after)
        })
        .await?;
    let more = events.len() > limit;
    events.truncate(limit);
    let last = events.last().map(|e| e.id);
    let events: Vec<Json> = events.into_iter().map(views::audit_event).collect();
    Ok(json_response(StatusCode::OK, &json!({ "events": events, "next_cursor": pages::next_cursor(last, more) })))
}

/// `GET /v1/storage-targets`: every target with its tiers (and how files
/// arriving in each are encoded), what the catalog says it holds, and
/// whether a remote target answered its last probe.
pub(super) async fn storage_targets(lifecycle: &Arc<Lifecycle>) -> Result<Response<Body>, Failure> {
    let usage = lifecycle.catalog().call(|catalog| catalog.target_usage()).await?;
    let all = lifecycle.targets();
    let targets: Vec<Json> = all
        .all()
        .map(|target| {
            let usage = usage.iter().find(|u| u.target == target.name()).cloned().unwrap_or_default();
            let tiers: Vec<Json> = all
                .tiers_of(target.name())
                .into_iter()
                .map(|tier| json!({ "tier": tier.as_str(), "encoding": lifecycle.arrival_encoding(tier) }))
                .collect();
            let mut view = json!({
                "name": target.name(),
                "kind": target.kind(),
                "location": target.location(),
                "tiers": tiers,
                "files": usage.files,
                "bytes": usage.bytes,
                "tombstoned_files": usage.tombstoned_files,
                "tombstoned_bytes": usage.tombstoned_bytes,
                "archives": usage.archives,
                "archive_bytes": usage.archive_bytes,
            });
            if let Some(state) = all.health().of(target.name()) {
                view["reachable"] = json!(state.reachable);
                view["unreachable_reason"] = json!(state.reason);
                view["reachability_since"] = json!(crate::time::rfc3339(state.since_ns));
                view["checked_at"] = json!(crate::time::rfc3339(state.checked_at_ns));
            } else if target.local_root().is_some() {
                // A local directory is not probed: a failing disk shows as
                // failing writes.
                view["reachable"] = json!(true);
            }
            let faults = all.faults(target.name());
            if !faults.is_empty() {
                view["injected_faults"] = json!(faults);
            }
            view
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "storage_targets": targets })))
}

pub(super) async fn explain(
    lifecycle: &Arc<Lifecycle>,
    dataset: &str,
    reference: &[&str],
) -> Result<Response<Body>, Failure> {
    let (label, key) = match reference {
        [label] => (label.to_string(), String::new()),
        [label, key] => (label.to_string(), key.to_string()),
        _ => {
            return Err(Failure::new(ErrorCode::NotFound, "a partition is named by its period label and optional key"));
        }
    };
    let explanation = lifecycle.explain(dataset, &label, &key).await?;
    Ok(json_response(StatusCode::OK, &explanation))
}

/// `POST /v1/datasets/{ds}/partitions/{label}[/{key}]/restore`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreRequest {
    /// `hot`, `warm` or `cold` (default).
    tier: Option<String>,
}

pub(super) async fn restore(
    lifecycle: &Arc<Lifecycle>,
    dataset: &str,
    reference: &str,
    body: Bytes,
) -> Result<Response<Body>, Failure> {
    let request: RestoreRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RestoreRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Failure::new(ErrorCode::InvalidJson, format!("restore body: {e}")))?
    };
    let tier = match request.tier.as_deref() {
        None => None,
        Some(raw) => Some(
            crate::tier::Tier::parse(raw)
                .ok_or_else(|| Failure::new(ErrorCode::BadRequest, format!("tier {raw:?} is not hot, warm or cold")))?,
        ),
    };
    let (label, key) = reference.split_once('/').unwrap_or((reference, ""));
    let restored = lifecycle.restore(dataset, label, key, tier).await?;
    Ok(json_response(StatusCode::OK, &restored))
}

/// `POST /v1/datasets/{ds}/compact`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactRequest {
    /// Only this partition: `label` or `label/key` (or its full id
    /// `dataset/label[/key]`). Default: every partition with an unfinished
    /// job or at least `min_files` files.
    partition: Option<String>,
    /// Plan, change nothing.
    #[serde(default)]
    dry: bool,
}

pub(super) async fn compact(lifecycle: &Arc<Lifecycle>, dataset: &str, body: Bytes) -> Result<Response<Body>, Failure> {
    let request: CompactRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CompactRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Failure::new(ErrorCode::InvalidJson, format!("compact body: {e}")))?
    };
    let reference = request.partition.as_deref().map(|raw| {
        let raw = raw.strip_prefix(&format!("{dataset}/")).unwrap_or(raw);
        raw.split_once('/').unwrap_or((raw, ""))
    });
    let answer = lifecycle.compact(dataset, reference, request.dry).await?;
    Ok(json_response(StatusCode::OK, &answer))
}

pub(super) async fn compaction(lifecycle: &Arc<Lifecycle>, dataset: &str) -> Result<Response<Body>, Failure> {
    let status = lifecycle.compaction_status(dataset).await?;
    Ok(json_response(StatusCode::OK, &status))
}
