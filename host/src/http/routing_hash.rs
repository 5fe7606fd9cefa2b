//! The routing report's section for hash partitioners
//! (`builtin:partition-by-hash`, `builtin:partition-by-consistent-hash`):
//! the distribution of field values, rows and bytes across buckets / nodes,
//! and — for `?candidate_buckets=N`, `?add_node=X` or `?remove_node=X` —
//! how many field values (and their rows) a candidate config would move.
//!
//! **Invariant:** every key comes from the installed component itself, run
//! through the policy runtime's simulation with the active or the candidate
//! config on the distinct field values the query layer finds in the data
//! (at most [`VALUES_MAX`], the bound reported); nothing here hashes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use serde_json::{Value as Json, json};

use super::sql_api::batches;
use super::{AppState, blocking, param};
use crate::error::{ErrorCode, Failure};
use crate::facts::{ColumnBatch, ColumnValues};
use crate::policy::{BoundPartitioner, PolicyError};
use crate::query::output::OutputFormat;
use crate::schema::ColumnKind;
use crate::store::DatasetState;

/// The most distinct field values one report evaluates.
pub(super) const VALUES_MAX: usize = 100_000;

/// The catalog's committed figures for one key: partitions, rows, bytes.
pub(super) type KeyFigures = (i64, u64, u64);

/// Which hash partitioner a dataset has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Hash,
    ConsistentHash,
}

/// The distinct field values found in the data, as the partitioner's input
/// columns, with the rows each value has.
struct Values {
    columns: Vec<ColumnBatch>,
    rows: Vec<u64>,
    truncated: bool,
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn bad(message: String) -> Failure {
    Failure::new(ErrorCode::BadRequest, message)
}

/// The candidate config the request names, or `None` for none. A candidate
/// for a dataset without a hash partitioner is refused.
fn candidate(params: &[(String, String)], strategy: Option<Strategy>, config: &Json) -> Result<Option<Json>, Failure> {
    let named: Vec<&str> = ["candidate_buckets", "add_node", "remove_node"]
        .into_iter()
        .filter(|name| param(params, name).is_some())
        .collect();
    let Some(&option) = named.first() else { return Ok(None) };
    if named.len() > 1 {
        return Err(bad(format!("name one candidate change at a time, not {}", named.join(" and "))));
    }
    let wanted = if option == "candidate_buckets" { Strategy::Hash } else { Strategy::ConsistentHash };
    if strategy != Some(wanted) {
        let partitioner = match wanted {
            Strategy::Hash => "builtin:partition-by-hash",
            Strategy::ConsistentHash => "builtin:partition-by-consistent-hash",
        };
        return Err(Failure::new(
            ErrorCode::UnsupportedValue,
            format!("{option} needs a dataset partitioned by {partitioner}"),
        )
        .with_detail(json!({ "option": option })));
    }
    let value = param(params, option).unwrap_or_default();
    let mut candidate = config.clone();
    match option {
        "candidate_buckets" => {
            let buckets = value.parse::<u32>().ok().filter(|b| *b > 0).ok_or_else(|| {
                bad(format!("candidate_buckets {value:?} must be a whole number of buckets, at least 1"))
            })?;
            candidate["buckets"] = json!(buckets);
        }
        _ => {
            let mut nodes: Vec<String> = config["nodes"]
                .as_array()
                .map(|nodes| nodes.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let known = nodes.iter().any(|n| n == value);
            if option == "add_node" {
                if known {
                    return Err(bad(format!("add_node: node {value:?} is already on the ring")));
                }
                nodes.push(value.to_string());
            } else {
                if !known {
                    return Err(bad(format!("remove_node: node {value:?} is not on the ring")));
                }
                nodes.retain(|n| n != value);
            }
            candidate["nodes"] = json!(nodes);
        }
    }
    Ok(Some(candidate))
}

/// The hash section of the routing report, or `None` when the dataset has
/// no hash partitioner (and no candidate was asked for).
pub(super) async fn section(
    state: &AppState,
    dataset: &Arc<DatasetState>,
    params: &[(String, String)],
    catalog: &HashMap<String, KeyFigures>,
) -> Result<Option<Json>, Failure> {
    let asked = ["candidate_buckets", "add_node", "remove_node"].iter().any(|name| param(params, name).is_some());
    // Without a candidate, a runtime still loading or a dataset bound to
    // several partitioners leaves the section out instead of failing the
    // whole report; a candidate needs the answer.
    let (policies, partitioner) = match state.policies() {
        Ok(policies) => match policies.partitioner_for(dataset.name.as_str()) {
            Ok(partitioner) => (policies, partitioner),
            Err(_) if !asked => return Ok(None),
            Err(error) => return Err(error.into()),
        },
        Err(_) if !asked => return Ok(None),
        Err(error) => return Err(error),
    };
    let strategy = partitioner.as_ref().and_then(|p| match p.builtin() {
        Some("partition-by-hash") => Some(Strategy::Hash),
        Some("partition-by-consistent-hash") => Some(Strategy::ConsistentHash),
        _ => None,
    });
    let config: Json = match &partitioner {
        Some(p) if strategy.is_some() => serde_json::from_str(p.config_json()).unwrap_or(Json::Null),
        _ => Json::Null,
    };
    let candidate = candidate(params, strategy, &config)?;
    let (Some(partitioner), Some(strategy)) = (partitioner, strategy) else { return Ok(None) };
    let fields: Vec<String> = config["fields"]
        .as_array()
        .map(|f| f.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let values = distinct_values(state, dataset, &fields).await?;
    let current = keys_for(policies, &partitioner, partitioner.config_json().to_string(), &values).await?;
    let mut section = distribution(strategy, &config, &values, &current, catalog);
    if let Some(candidate) = candidate {
        let moved = keys_for(policies, &partitioner, candidate.to_string(), &values).await?;
        section["candidate"] = moved_share(&candidate, &values, &current, &moved);
    }
    Ok(Some(section))
}

/// Keys for each distinct value under `config_json`, from the component,
/// off the async runtime. A config the component rejects is a bad request.
async fn keys_for(
    policies: &Arc<crate::policy::PolicyRuntime>,
    partitioner: &BoundPartitioner,
    config_json: String,
    values: &Values,
) -> Result<Vec<String>, Failure> {
    let rows = values.rows.len();
    if rows == 0 {
        return Ok(Vec::new());
    }
    let (runtime, bound, columns) = (policies.clone(), partitioner.clone(), values.columns.clone());
    let answer = blocking(move || runtime.simulate_partition(&bound, &config_json, &columns, rows as u32)).await?;
    let keys = answer.map_err(|error| match error {
        PolicyError::ConfigRejected { problems, .. } => {
            bad(format!("the partitioner rejects the candidate config: {}", problems.join("; ")))
                .with_detail(json!({ "problems": problems }))
        }
        other => Failure::from(other),
    })?;
    Ok(keys.into_iter().map(|key| key.unwrap_or_default()).collect())
}

/// Per bucket / node: the distinct values and their rows the component
/// maps there, and the catalog's committed partitions, rows and bytes.
fn distribution(
    strategy: Strategy,
    config: &Json,
    values: &Values,
    keys: &[String],
    catalog: &HashMap<String, KeyFigures>,
) -> Json {
    let mut by_key: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    if strategy == Strategy::ConsistentHash {
        for node in config["nodes"].as_array().into_iter().flatten().filter_map(Json::as_str) {
            by_key.entry(node.to_string()).or_default();
        }
    }
    for key in catalog.keys() {
        by_key.entry(key.clone()).or_default();
    }
    for (key, rows) in keys.iter().zip(&values.rows) {
        let entry = by_key.entry(key.clone()).or_default();
        entry.0 += 1;
        entry.1 += rows;
    }
    let entries: Vec<Json> = by_key
        .iter()
        .map(|(key, (count, value_rows))| {
            let (partitions, rows, bytes) = catalog.get(key).copied().unwrap_or_default();
            json!({
                "key": key, "values": count, "value_rows": value_rows,
                "partitions": partitions, "rows": rows, "bytes": bytes,
            })
        })
        .collect();
    let (name, unit, size) = match strategy {
        Strategy::Hash => ("builtin:partition-by-hash", "buckets", config["buckets"].clone()),
        Strategy::ConsistentHash => {
            ("builtin:partition-by-consistent-hash", "nodes", json!(config["nodes"].as_array().map_or(0, Vec::len)))
        }
    };
    let mut section = json!({
        "partitioner": name,
        "fields": config["fields"],
        "values_total": values.rows.len(),
        "values_max": VALUES_MAX,
        "values_truncated": values.truncated,
        "distribution": entries,
    });
    section[unit] = size;
    section
}

/// What share of the distinct values (and of their rows) `moved` keys
/// differently from `current`.
fn moved_share(candidate: &Json, values: &Values, current: &[String], moved: &[String]) -> Json {
    let (mut keys_moved, mut rows_moved) = (0u64, 0u64);
    for ((now, then), rows) in current.iter().zip(moved).zip(&values.rows) {
        if now != then {
            keys_moved += 1;
            rows_moved += rows;
        }
    }
    let keys_total = current.len() as u64;
    let rows_total: u64 = values.rows.iter().sum();
    let share = |part: u64, whole: u64| if whole == 0 { 0.0 } else { part as f64 / whole as f64 };
    json!({
        "config": candidate,
        "keys_total": keys_total,
        "keys_moved": keys_moved,
        "share_moved": share(keys_moved, keys_total),
        "rows_total": rows_total,
        "rows_moved": rows_moved,
        "rows_share_moved": share(rows_moved, rows_total),
    })
}

/// The distinct values of `fields` in the dataset (files and buffer) with
/// their row counts, most rows first, at most [`VALUES_MAX`]: one grouped
/// query through the query layer. Fields the schema lacks are left out of
/// the input, as on the write path (the partitioner sees them missing).
async fn distinct_values(state: &AppState, dataset: &Arc<DatasetState>, fields: &[String]) -> Result<Values, Failure> {
    let schema = dataset.schema();
    let present: Vec<(&String, ColumnKind)> = fields
        .iter()
        .filter_map(|field| {
            if *field == schema.time_column {
                return Some((field, ColumnKind::Time));
            }
            schema.columns.iter().find(|c| &c.name == field).map(|c| (field, c.kind))
        })
        .collect();
    if schema.version == 0 {
        return Ok(Values { columns: Vec::new(), rows: Vec::new(), truncated: false });
    }
    let mut select: Vec<String> = present
        .iter()
        .enumerate()
        .map(|(i, (field, kind))| match kind {
            ColumnKind::Time => format!("epoch_ns({}) AS c{i}", quote(field)),
            _ => format!("{} AS c{i}", quote(field)),
        })
        .collect();
    select.push("count(*) AS n".into());
    let sql = format!(
        "SELECT {} FROM {} GROUP BY ALL ORDER BY n DESC LIMIT {}",
        select.join(", "),
        quote(dataset.name.as_str()),
        VALUES_MAX + 1
    );
    let engine = super::query::engine(state)?;
    let everything: crate::query::DatasetFilter = Arc::new(|_| true);
    let result = engine.sql(state.store()?, &sql, OutputFormat::Arrow, everything).await?;
    let batches = batches(result.chunks).await?;
    values_from(&batches, &present)
}

/// The query's answer as input columns and row counts.
fn values_from(batches: &[RecordBatch], present: &[(&String, ColumnKind)]) -> Result<Values, Failure> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let keep = total.min(VALUES_MAX);
    let mut rows = Vec::with_capacity(keep);
    let mut columns: Vec<ColumnBatch> =
        present.iter().map(|(name, kind)| ColumnBatch { name: (*name).clone(), values: empty_values(*kind) }).collect();
    for batch in batches {
        let take = batch.num_rows().min(keep - rows.len());
        let batch = batch.slice(0, take);
        for (index, column) in columns.iter_mut().enumerate() {
            append(&mut column.values, batch.column(index).as_ref())?;
        }
        let counts = arrow::compute::cast(batch.column(present.len()), &DataType::UInt64).map_err(internal)?;
        rows.extend(counts.as_primitive::<UInt64Type>().iter().map(Option::unwrap_or_default));
    }
    Ok(Values { columns, rows, truncated: total > VALUES_MAX })
}

fn internal(error: arrow::error::ArrowError) -> Failure {
    Failure::new(ErrorCode::Internal, format!("reading the distinct values failed: {error}"))
}

fn empty_values(kind: ColumnKind) -> ColumnValues {
    match kind {
        ColumnKind::Time => ColumnValues::Time(Vec::new()),
        ColumnKind::Tag | ColumnKind::Text => ColumnValues::Text(Vec::new()),
        ColumnKind::Float => ColumnValues::Float(Vec::new()),
        ColumnKind::Integer => ColumnValues::Integer(Vec::new()),
        ColumnKind::Unsigned => ColumnValues::Unsigned(Vec::new()),
        ColumnKind::Boolean => ColumnValues::Boolean(Vec::new()),
    }
}

/// Appends `array` (cast to the column's type) to `values`.
fn append(values: &mut ColumnValues, array: &dyn Array) -> Result<(), Failure> {
    let cast = |to: &DataType| arrow::compute::cast(array, to).map_err(internal);
    match values {
        ColumnValues::Text(out) => {
            let array = cast(&DataType::Utf8)?;
            out.extend(array.as_string::<i32>().iter().map(|v| v.map(str::to_string)));
        }
        ColumnValues::Float(out) => out.extend(cast(&DataType::Float64)?.as_primitive::<Float64Type>().iter()),
        ColumnValues::Integer(out) => out.extend(cast(&DataType::Int64)?.as_primitive::<Int64Type>().iter()),
        ColumnValues::Unsigned(out) => out.extend(cast(&DataType::UInt64)?.as_primitive::<UInt64Type>().iter()),
        ColumnValues::Boolean(out) => out.extend(cast(&DataType::Boolean)?.as_boolean().iter()),
        ColumnValues::Time(out) => {
            out.extend(cast(&DataType::Int64)?.as_primitive::<Int64Type>().iter().map(Option::unwrap_or_default))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_changes_only_the_option_named_and_refuses_the_absurd() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let ring = json!({"fields": ["host"], "nodes": ["n1", "n2"], "virtual_nodes": 8});
        let added = candidate(&params(&[("add_node", "n3")]), Some(Strategy::ConsistentHash), &ring).unwrap();
        assert_eq!(added, Some(json!({"fields": ["host"], "nodes": ["n1", "n2", "n3"], "virtual_nodes": 8})));
        let removed = candidate(&params(&[("remove_node", "n1")]), Some(Strategy::ConsistentHash), &ring).unwrap();
        assert_eq!(removed.unwrap()["nodes"], json!(["n2"]));
        assert_eq!(candidate(&[], None, &Json::Null).unwrap(), None);
        let refused = |pairs: &[(&str, &str)], strategy| candidate(&params(pairs), strategy, &ring).unwrap_err().code;
        assert_eq!(refused(&[("remove_node", "n9")], Some(Strategy::ConsistentHash)), ErrorCode::BadRequest);
        assert_eq!(refused(&[("candidate_buckets", "0")], Some(Strategy::Hash)), ErrorCode::BadRequest);
        assert_eq!(refused(&[("candidate_buckets", "8")], None), ErrorCode::UnsupportedValue);
        let both = [("add_node", "n3"), ("remove_node", "n1")];
        assert_eq!(refused(&both, Some(Strategy::ConsistentHash)), ErrorCode::BadRequest);
    }

    #[test]
    fn the_moved_share_counts_values_and_their_rows() {
        let values = Values { columns: Vec::new(), rows: vec![5, 3, 2], truncated: false };
        let key = |k: &str| k.to_string();
        let moved = moved_share(&Json::Null, &values, &[key("a"), key("b"), key("c")], &[key("a"), key("x"), key("c")]);
        assert_eq!((moved["keys_total"].as_u64(), moved["keys_moved"].as_u64()), (Some(3), Some(1)));
        assert_eq!((moved["rows_total"].as_u64(), moved["rows_moved"].as_u64()), (Some(10), Some(3)));
        assert!((moved["share_moved"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }
}
