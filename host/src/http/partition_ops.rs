//! Operator requests on partitions: `POST …/partitions/{label}[/{key}]/move`,
//! `…/archive` and `…/delete` (each with `"dry": true`), and a period's
//! manifest, `GET /v1/datasets/{ds}/manifest?period=`.
//!
//! **Invariant:** handlers only decode and answer; the operations go
//! through `Lifecycle::manual` (guard rails, run lock, executor, audit),
//! and a delete that does not name its partition in `confirm` is refused
//! before anything is judged.

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value as Json, json};

use super::datasets::{find, partition_view};
use super::{Body, json_response, param};
use crate::error::{ErrorCode, Failure};
use crate::lifecycle::{Lifecycle, ManualAction, ManualOperation};
use crate::names::partition_label;
use crate::store::Store;
use crate::tier::Tier;
use crate::time::rfc3339;

/// `…/move`: `{"tier": "cold", "dry": false}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    tier: String,
    #[serde(default)]
    dry: bool,
}

/// `…/archive`: `{"target": "", "delete_source_after": false, "dry": false}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveRequest {
    #[serde(default)]
    target: String,
    #[serde(default)]
    delete_source_after: bool,
    #[serde(default)]
    dry: bool,
}

/// `…/delete`: `{"confirm": "<partition id>", "dry": false}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRequest {
    confirm: Option<String>,
    #[serde(default)]
    dry: bool,
}

fn body_of<T: DeserializeOwned + Default>(verb: &str, body: &Bytes) -> Result<T, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Failure::new(ErrorCode::InvalidJson, format!("{verb} body: {e}")))
}

/// The verbs [`manual`] answers.
pub(super) fn is_manual_verb(verb: &str) -> bool {
    matches!(verb, "move" | "archive" | "delete")
}

/// `POST /v1/datasets/{ds}/partitions/{label}[/{key}]/{move|archive|delete}`.
pub(super) async fn manual(
    lifecycle: &Arc<Lifecycle>,
    store: &Arc<Store>,
    dataset: &str,
    reference: &[&str],
    verb: &str,
    actor: &str,
    body: Bytes,
) -> Result<Response<Body>, Failure> {
    let state = find(store, dataset)?;
    let (label, key) = match reference {
        [label] => (*label, ""),
        [label, key] => (*label, *key),
        _ => {
            return Err(Failure::new(ErrorCode::NotFound, "a partition is named by its period label and optional key"));
        }
    };
    let id = partition_label(&state.name, label, key);
    let (action, dry) = match verb {
        "move" => {
            let request: MoveRequest = serde_json::from_slice(&body)
                .map_err(|e| Failure::new(ErrorCode::InvalidJson, format!("move body (needs \"tier\"): {e}")))?;
            let tier = Tier::parse(&request.tier).ok_or_else(|| {
                Failure::new(ErrorCode::BadRequest, format!("tier {:?} is not hot, warm or cold", request.tier))
            })?;
            (ManualAction::Move(tier), request.dry)
        }
        "archive" => {
            let request: ArchiveRequest = body_of(verb, &body)?;
            let action =
                ManualAction::Archive { target: request.target, delete_source_after: request.delete_source_after };
            (action, request.dry)
        }
        _ => {
            let request: DeleteRequest = body_of(verb, &body)?;
            let reference = reference.join("/");
            let confirmed = request.confirm.as_deref().is_some_and(|c| c == id || c == reference);
            if !request.dry && !confirmed {
                return Err(Failure::new(
                    ErrorCode::ConfirmationRequired,
                    format!("deleting {id} needs \"confirm\": {id:?} in the body (a dry run does not)"),
                ));
            }
            (ManualAction::Delete, request.dry)
        }
    };
    let op = ManualOperation {
        dataset: state.name.as_str().to_string(),
        label: label.to_string(),
        key: key.to_string(),
        action,
        dry,
        actor: actor.to_string(),
    };
    Ok(json_response(StatusCode::OK, &lifecycle.manual(op).await?))
}

/// `GET /v1/datasets/{ds}/manifest?period=`: the partitions of one period
/// and their live files (target, object key, rows, bytes, checksum), by a
/// date or time inside the period (`2026-01-15`, RFC 3339) or its label.
pub(super) async fn manifest(
    store: &Arc<Store>,
    dataset: &str,
    params: &[(String, String)],
) -> Result<Response<Body>, Failure> {
    let state = find(store, dataset)?;
    let raw = param(params, "period").ok_or_else(|| {
        Failure::new(ErrorCode::BadRequest, "period is required: a date (2026-01-15), an RFC 3339 time or a label")
    })?;
    let at = instant(raw);
    let (id, label) = (state.record.id, if at.is_some() { None } else { Some(raw.to_string()) });
    let partitions =
        store.catalog().call(move |c| c.period_partitions(id, label.as_deref(), at.unwrap_or_default())).await?;
    let (mut files, mut rows, mut bytes) = (0usize, 0i64, 0i64);
    for (partition, live) in &partitions {
        files += live.len();
        rows += partition.rows;
        bytes += live.iter().map(|f| f.bytes).sum::<i64>();
    }
    let period = match (partitions.first(), at) {
        (Some((p, _)), _) => json!({
            "label": p.period_label, "start": rfc3339(p.period_start_ns), "end": rfc3339(p.period_end_ns),
        }),
        (None, Some(at)) => {
            let bucket = state.record.period.bucket(at);
            json!({ "label": bucket.label, "start": rfc3339(bucket.start_ns), "end": rfc3339(bucket.end_ns) })
        }
        (None, None) => json!({ "label": raw }),
    };
    let views: Vec<Json> = partitions.iter().map(|(p, f)| partition_view(store, &state, p, f)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "dataset": state.name.as_str(),
            "period": period,
            "partitions": views,
            "files": files,
            "rows": rows,
            "bytes": bytes,
        }),
    ))
}

/// A date (`2026-01-15`, midnight UTC) or an RFC 3339 time, in ns; `None`
/// for anything else (a period label).
fn instant(raw: &str) -> Option<i64> {
    if let Ok(ns) = crate::time::parse_rfc3339(raw) {
        return Some(ns);
    }
    let date = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()?;
    date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_a_date_a_time_or_else_a_label() {
        assert_eq!(instant("1970-01-02"), Some(86_400_000_000_000));
        assert_eq!(instant("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        for label in ["2026-W03", "2026-01", "2026-Q1", "2026", "2026-01-15T13"] {
            assert_eq!(instant(label), None, "{label}");
        }
    }
}
