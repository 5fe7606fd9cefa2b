//! `GET /v1/datasets/{ds}/timeline?buckets=&lanes=`: a dataset's partitions
//! summed per (period bucket, lane, tier) — what the console draws, small
//! whatever the number of partitions (the catalog does the `GROUP BY`).
//!
//! Answers are kept while the dataset's `partitions_seq` is unchanged (the
//! catalog moves it with every change to any of its partitions), so a page
//! drawn again reads one catalog row instead of every partition.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value as Json, json};

use super::{Body, param};
use crate::catalog::{TIMELINE_BUCKETS_MAX, TIMELINE_LANES_MAX, TimelineCell, TimelineShape};
use crate::error::{ErrorCode, Failure};
use crate::names::partition_label;
use crate::store::Store;
use crate::sync::Recover as _;
use crate::time::rfc3339;

/// Buckets when the request names none.
const BUCKETS_DEFAULT: usize = 200;
/// Lanes when the request names none.
const LANES_DEFAULT: usize = 20;
/// Answers kept; past it the cache starts again empty.
const CACHED_ANSWERS_MAX: usize = 64;

/// (dataset id, buckets, lanes) → (the `partitions_seq` it is current for, the JSON body).
type Answers = HashMap<(i64, usize, usize), (i64, Bytes)>;

fn answers() -> &'static Mutex<Answers> {
    static ANSWERS: OnceLock<Mutex<Answers>> = OnceLock::new();
    ANSWERS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn json_bytes(body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn count(params: &[(String, String)], name: &str, default: usize, max: usize) -> Result<usize, Failure> {
    match param(params, name) {
        None => Ok(default),
        Some(raw) => raw.parse::<usize>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            Failure::new(ErrorCode::BadRequest, format!("{name}={raw:?} must be a whole number within 1..={max}"))
        }),
    }
}

pub(super) async fn timeline(
    store: &std::sync::Arc<Store>,
    raw: &str,
    params: Vec<(String, String)>,
) -> Result<Response<Body>, Failure> {
    let dataset = super::datasets::find(store, raw)?;
    let buckets = count(&params, "buckets", BUCKETS_DEFAULT, TIMELINE_BUCKETS_MAX)?;
    // Zero lanes is allowed: every partition then sums into `other`.
    let lanes = match param(&params, "lanes") {
        Some("0") => 0,
        _ => count(&params, "lanes", LANES_DEFAULT, TIMELINE_LANES_MAX)?,
    };
    let (id, period) = (dataset.record.id, dataset.record.period);
    let seq = store.catalog().call(move |catalog| catalog.partitions_seq(id)).await?;
    let cached = answers().lock_or_recover().get(&(id, buckets, lanes)).cloned();
    if let Some((cached_seq, body)) = cached
        && cached_seq == seq
    {
        return Ok(json_bytes(body));
    }
    let (seq, shape, cells) = store.catalog().call(move |catalog| catalog.timeline(id, period, buckets, lanes)).await?;
    let (rows, bytes) = cells.iter().fold((0, 0), |(rows, bytes), c| (rows + c.rows, bytes + c.bytes));
    let cells: Vec<Json> = cells.iter().map(|cell| cell_json(&dataset.name, &shape, cell)).collect();
    let body = Bytes::from(
        json!({
            "dataset": dataset.name.as_str(),
            "period": dataset.record.period.as_str(),
            "partitions": shape.partitions,
            "rows": rows,
            "bytes": bytes,
            "keys": shape.keys,
            "periods": shape.periods,
            "partitions_seq": seq,
            "from": (shape.partitions > 0).then(|| rfc3339(shape.first_start_ns)),
            "to": (shape.partitions > 0).then(|| rfc3339(shape.last_end_ns)),
            "bucket_ns": (shape.bucket_ns > 0).then_some(shape.bucket_ns),
            "lanes": shape.lanes,
            "other_keys": (shape.keys - shape.lanes.len() as i64).max(0),
            "cells": cells,
        })
        .to_string(),
    );
    let mut kept = answers().lock_or_recover();
    if kept.len() >= CACHED_ANSWERS_MAX {
        kept.clear();
    }
    kept.insert((id, buckets, lanes), (seq, body.clone()));
    drop(kept);
    Ok(json_bytes(body))
}

fn cell_json(dataset: &crate::names::DatasetName, shape: &TimelineShape, cell: &TimelineCell) -> Json {
    let end_ns = if shape.bucket_ns > 0 { cell.start_ns.saturating_add(shape.bucket_ns) } else { cell.end_ns };
    json!({
        "start": rfc3339(cell.start_ns),
        "end": rfc3339(end_ns),
        "lane": cell.lane,
        "tier": cell.tier,
        "partitions": cell.partitions,
        "rows": cell.rows,
        "bytes": cell.bytes,
        "sealed": cell.sealed,
        "archived": cell.archived,
        "failed": cell.failed,
        "partition": cell.only.as_ref().map(|(label, key)| json!({
            "id": partition_label(dataset, label, key),
            "period_label": label,
            "key": key,
        })),
    })
}
