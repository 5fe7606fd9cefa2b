//! Dataset, partition and metrics handlers.

use std::fmt::Write as _;
use std::sync::Arc;

use hyper::{Response, StatusCode};
use serde_json::{Value as Json, json};

use super::{Body, json_response, pages, param};
use crate::catalog::{FileRecord, PartitionCursor, PartitionFilter, PartitionRecord};
use crate::error::{ErrorCode, Failure};
use crate::names::{DatasetName, partition_label};
use crate::store::{DatasetState, Store};
use crate::tier::Tier;
use crate::time::rfc3339;

pub(super) fn find(store: &Store, raw: &str) -> Result<Arc<DatasetState>, Failure> {
    let name = DatasetName::parse(raw).map_err(|m| Failure::new(ErrorCode::InvalidDatasetName, m))?;
    store.dataset(name.as_str()).ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no dataset {name}")))
}

pub(super) async fn summary(store: &Arc<Store>, dataset: &Arc<DatasetState>) -> Result<Json, Failure> {
    let id = dataset.record.id;
    let (partitions, rows, bytes) = store.catalog().call(move |catalog| catalog.dataset_totals(id)).await?;
    let schema = dataset.schema();
    let buffered_rows = store.buffered_rows_of(id);
    Ok(json!({
        "name": dataset.name.as_str(),
        "period": dataset.periods().latest().1.as_str(),
        "time_column": schema.time_column,
        "created_at": rfc3339(dataset.record.created_at_ns),
        "schema_version": schema.version,
        "columns": schema.columns.iter().map(|c| json!({ "name": c.name, "kind": c.kind.as_str() })).collect::<Vec<_>>(),
        "partitions": partitions,
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

/// `GET /v1/datasets/{ds}/partitions?tier=&from=&to=&key=&read_only=&limit=&cursor=`:
/// one page of the dataset's partitions in `(period_start, key, id)` order,
/// filtered and paged by the catalog.
pub(super) async fn partitions(
    store: &Arc<Store>,
    raw: &str,
    params: &[(String, String)],
) -> Result<Response<Body>, Failure> {
    let dataset = find(store, raw)?;
    let filter = partition_filter(params)?;
    let limit = pages::limit(params)?;
    let after: Option<PartitionCursor> = pages::cursor::<(i64, String, i64)>(params)?
        .map(|(period_start_ns, key, id)| PartitionCursor { period_start_ns, key, id });
    let id = dataset.record.id;
    let (page, more) = store.catalog().call(move |c| c.partition_page(id, &filter, after.as_ref(), limit)).await?;
    let last = page.last().map(|(p, _)| (p.period_start_ns, p.key.clone(), p.id));
    let partitions: Vec<Json> = page.iter().map(|(p, files)| partition_view(store, &dataset, p, files)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "dataset": dataset.name.as_str(),
            "partitions": partitions,
            "next_cursor": pages::next_cursor(last, more),
        }),
    ))
}

/// The listing's filters from the query string; a bad one is refused.
fn partition_filter(params: &[(String, String)]) -> Result<PartitionFilter, Failure> {
    let tier = match param(params, "tier") {
        None => None,
        Some(raw) => Some(Tier::parse(raw).ok_or_else(|| {
            Failure::new(ErrorCode::BadRequest, format!("tier {raw:?} is not hot, warm, cold or archived"))
        })?),
    };
    let time = |name: &str| -> Result<Option<i64>, Failure> {
        param(params, name)
            .map(|raw| {
                let value = raw.parse::<i64>().map(Json::from).unwrap_or_else(|_| Json::String(raw.to_string()));
                crate::query::plan::time_bound(&value, name)
            })
            .transpose()
    };
    Ok(PartitionFilter {
        tier,
        from_ns: time("from")?,
        to_ns: time("to")?,
        key: param(params, "key").map(str::to_string),
        read_only: param(params, "read_only").map(|_| super::boolean(params, "read_only", false)).transpose()?,
    })
}

/// One partition as listings and manifests show it.
pub(super) fn partition_view(store: &Store, dataset: &DatasetState, p: &PartitionRecord, files: &[FileRecord]) -> Json {
    let targets = store.targets();
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
        "archived": p.archived,
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
    let _ = writeln!(text, "# HELP strata_buffered_bytes Memory held by rows waiting to be flushed, in bytes.");
    let _ = writeln!(text, "# TYPE strata_buffered_bytes gauge");
    let _ = writeln!(text, "strata_buffered_bytes {}", store.buffers().bytes());
    let _ = writeln!(
        text,
        "# HELP strata_buffered_arrow_bytes Bytes the buffered rows take unpacked (limits.buffer_bytes_max)."
    );
    let _ = writeln!(text, "# TYPE strata_buffered_arrow_bytes gauge");
    let _ = writeln!(text, "strata_buffered_arrow_bytes {}", store.buffers().unpacked_bytes());
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
