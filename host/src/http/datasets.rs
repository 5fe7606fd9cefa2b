//! Dataset, partition and metrics handlers.

use std::fmt::Write as _;
use std::sync::Arc;

use hyper::{Response, StatusCode};
use serde_json::{Value as Json, json};

use super::{Body, blocking, json_response};
use crate::error::{ErrorCode, Failure};
use crate::names::{DatasetName, partition_label};
use crate::store::{DatasetState, Store};
use crate::time::rfc3339;

pub(super) fn find(store: &Store, raw: &str) -> Result<Arc<DatasetState>, Failure> {
    let name = DatasetName::parse(raw).map_err(|m| Failure::new(ErrorCode::InvalidDatasetName, m))?;
    store.dataset(name.as_str()).ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no dataset {name}")))
}

pub(super) async fn summary(store: &Arc<Store>, dataset: &Arc<DatasetState>) -> Result<Json, Failure> {
    let id = dataset.record.id;
    let partitions = store.catalog().call(move |catalog| catalog.partitions(id)).await?;
    let schema = dataset.schema();
    let rows: i64 = partitions.iter().map(|p| p.rows).sum();
    let bytes: i64 = partitions.iter().map(|p| p.bytes).sum();
    let buffered_rows: u64 = partitions.iter().map(|p| store.buffered(p.id).0).sum();
    Ok(json!({
        "name": dataset.name.as_str(),
        "period": dataset.periods().latest().1.as_str(),
        "time_column": schema.time_column,
        "created_at": rfc3339(dataset.record.created_at_ns),
        "schema_version": schema.version,
        "columns": schema.columns.iter().map(|c| json!({ "name": c.name, "kind": c.kind.as_str() })).collect::<Vec<_>>(),
        "partitions": partitions.len(),
        "rows": rows as u64 + buffered_rows,
        "committed_rows": rows,
        "buffered_rows": buffered_rows,
        "bytes": bytes,
    }))
}

/// `GET /v1/datasets`: the datasets the request's token may read.
pub(super) async fn list(store: &Arc<Store>, grant: &super::auth::Grant) -> Result<Response<Body>, Failure> {
    let mut out = Vec::new();
    for dataset in store.datasets().into_iter().filter(|d| grant.may_read(d.name.as_str())) {
        out.push(summary(store, &dataset).await?);
    }
    Ok(json_response(StatusCode::OK, &json!({ "datasets": out })))
}

pub(super) async fn partitions(store: &Arc<Store>, raw: &str) -> Result<Response<Body>, Failure> {
    let dataset = find(store, raw)?;
    let reader = store.clone();
    let state = dataset.clone();
    let snapshot = blocking(move || reader.snapshot(&state)).await??;
    let targets = store.targets().clone();
    let partitions: Vec<Json> = snapshot
        .partitions
        .iter()
        .zip(&snapshot.files)
        .map(|(p, files)| {
            let (buffered_rows, buffered_bytes) = store.buffered(p.id);
            json!({
                "id": partition_label(&dataset.name, &p.period_label, &p.key),
                "period_label": p.period_label,
                "period_start": rfc3339(p.period_start_ns),
                "period_end": rfc3339(p.period_end_ns),
                "key": p.key,
                "key_field": p.key_field.as_deref().filter(|field| !field.is_empty()),
                "tier": p.tier,
                "read_only": p.read_only,
                "rows": p.rows,
                "bytes": p.bytes,
                "buffered_rows": buffered_rows,
                "buffered_bytes": buffered_bytes,
                "min_time": p.min_time_ns.map(rfc3339),
                "max_time": p.max_time_ns.map(rfc3339),
                "created_at": rfc3339(p.created_at_ns),
                "last_written_at": rfc3339(p.last_written_at_ns),
                "files": files.iter().map(|f| json!({
                    "storage_target": f.storage_target,
                    "object_key": f.object_key,
                    "path": targets.local_path(&f.storage_target, &f.object_key),
                    "bytes": f.bytes,
                    "rows": f.rows,
                    "min_time": rfc3339(f.min_time_ns),
                    "max_time": rfc3339(f.max_time_ns),
                    "checksum_crc32c": format!("{:08x}", f.checksum_crc32c),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "dataset": dataset.name.as_str(), "partitions": partitions })))
}

/// `POST …/partitions/{label}[/{key}]/seal` and `…/unseal` (hot partitions
/// only, under the lifecycle's run lock).
pub(super) async fn seal(
    state: &super::AppState,
    raw: &str,
    reference: &[&str],
    read_only: bool,
) -> Result<Response<Body>, Failure> {
    let store = state.store()?;
    let dataset = find(store, raw)?;
    let (label, key) = match reference {
        [label] => (*label, ""),
        [label, key] => (*label, *key),
        _ => {
            return Err(Failure::new(ErrorCode::NotFound, "a partition is named by its period label and optional key"));
        }
    };
    let partition = if read_only {
        store.set_read_only(&dataset, label, key, true).await?
    } else {
        state.lifecycle()?.unseal(dataset.name.as_str(), label, key).await?
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": partition_label(&dataset.name, &partition.period_label, &partition.key), "read_only": partition.read_only }),
    ))
}

pub(super) fn metrics(store: &Arc<Store>, policy_metrics: &str) -> Response<Body> {
    let mut text = String::new();
    let _ = writeln!(text, "# HELP strata_buffered_bytes Bytes of rows waiting to be flushed.");
    let _ = writeln!(text, "# TYPE strata_buffered_bytes gauge");
    let _ = writeln!(text, "strata_buffered_bytes {}", store.buffers().bytes());
    let _ = writeln!(text, "# HELP strata_buffered_rows Rows waiting to be flushed.");
    let _ = writeln!(text, "# TYPE strata_buffered_rows gauge");
    let _ = writeln!(text, "strata_buffered_rows {}", store.buffers().rows());
    let _ = writeln!(text, "# HELP strata_datasets Datasets in the store.");
    let _ = writeln!(text, "# TYPE strata_datasets gauge");
    let _ = writeln!(text, "strata_datasets {}", store.datasets().len());
    let counters = store.counters();
    for (name, help, value) in [
        ("strata_ingest_rows_total", "Rows acknowledged.", &counters.rows_written),
        (
            "strata_ingest_rows_refused_sealed_total",
            "Rows refused because of sealed partitions (late rows, or whole requests refused with partition_read_only).",
            &counters.rows_refused_sealed,
        ),
        (
            "strata_ingest_records_rejected_total",
            "Lines or records rejected (unparseable or refused by a partitioner) in requests that wrote the rest.",
            &counters.records_rejected,
        ),
    ] {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} counter");
        let _ = writeln!(text, "{name} {}", value.load(std::sync::atomic::Ordering::Relaxed));
    }
    match store.targets().cache() {
        Some(cache) => text.push_str(&cache.metrics()),
        None => text.push_str(&crate::storage::metrics_without_cache()),
    }
    text.push_str(policy_metrics);
    let mut response = Response::new(Body::full(text));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
