//! The routing report, `GET /v1/datasets/{ds}/routing?hot_ratio=`: rows
//! and bytes written per partition key over the last minute and hour (the
//! store's in-memory windows), each key's share, the imbalance (max rows
//! per key / mean), the keys above `hot_ratio` × the mean, and the
//! catalog's all-time totals per key; and the two gauges `/metrics` shows
//! per dataset. Hash partitioners add a `hash` section (`routing_hash`).
//!
//! **Invariant:** figures are computed from the windows and the catalog as
//! they are; nothing here estimates or samples.

use std::collections::HashMap;
use std::fmt::Write as _;

use hyper::{Response, StatusCode};
use serde_json::{Value as Json, json};

use super::datasets::find;
use super::routing_hash::{self, KeyFigures};
use super::{AppState, Body, json_response, param};
use crate::error::{ErrorCode, Failure};
use crate::store::{KeyCount, Store};
use crate::time::now_ns;

/// The windows reported: name and minutes.
const WINDOWS: [(&str, i64); 2] = [("1m", 1), ("1h", 60)];

/// The window `/metrics` judges by.
const METRICS_WINDOW_MINUTES: i64 = 60;

/// The distribution of rows over keys: `(imbalance, hot keys, per-key
/// entries sorted by rows, descending)`. The imbalance is 0 when nothing
/// was written.
fn distribution(counts: &HashMap<String, KeyCount>, hot_ratio: f64) -> (f64, Vec<String>, Vec<Json>) {
    let total_rows: u64 = counts.values().map(|c| c.rows).sum();
    let total_bytes: u64 = counts.values().map(|c| c.bytes).sum();
    if counts.is_empty() || total_rows == 0 {
        return (0.0, Vec::new(), Vec::new());
    }
    let mean = total_rows as f64 / counts.len() as f64;
    let mut keys: Vec<(&String, &KeyCount)> = counts.iter().collect();
    keys.sort_by(|a, b| b.1.rows.cmp(&a.1.rows).then_with(|| a.0.cmp(b.0)));
    let imbalance = keys[0].1.rows as f64 / mean;
    let hot: Vec<String> =
        keys.iter().filter(|(_, c)| c.rows as f64 > hot_ratio * mean).map(|(k, _)| (*k).clone()).collect();
    let entries = keys
        .iter()
        .map(|(key, count)| {
            json!({
                "key": key,
                "rows": count.rows,
                "bytes": count.bytes,
                "share": count.rows as f64 / total_rows as f64,
                "bytes_share": if total_bytes == 0 { 0.0 } else { count.bytes as f64 / total_bytes as f64 },
                "ratio_to_mean": count.rows as f64 / mean,
            })
        })
        .collect();
    (imbalance, hot, entries)
}

fn hot_ratio(params: &[(String, String)], default: f64) -> Result<f64, Failure> {
    match param(params, "hot_ratio") {
        None => Ok(default),
        Some(raw) => {
            raw.parse::<f64>().ok().filter(|r| r.is_finite() && *r > 1.0).ok_or_else(|| {
                Failure::new(ErrorCode::BadRequest, format!("hot_ratio {raw:?} must be a number above 1"))
            })
        }
    }
}

/// `GET /v1/datasets/{ds}/routing`.
pub(super) async fn report(
    state: &AppState,
    raw: &str,
    params: &[(String, String)],
    default_hot_ratio: f64,
) -> Result<Response<Body>, Failure> {
    let store = state.store()?;
    let dataset = find(store, raw)?;
    let hot_ratio = hot_ratio(params, default_hot_ratio)?;
    let now = now_ns();
    let windows: Vec<Json> = WINDOWS
        .iter()
        .map(|(name, minutes)| {
            let counts = dataset.routing.window(now, *minutes);
            let (imbalance, hot, keys) = distribution(&counts, hot_ratio);
            json!({
                "window": name,
                "seconds": minutes * 60,
                "rows": counts.values().map(|c| c.rows).sum::<u64>(),
                "bytes": counts.values().map(|c| c.bytes).sum::<u64>(),
                "key_count": counts.len(),
                "imbalance": imbalance,
                "hot_keys": hot,
                "keys": keys,
            })
        })
        .collect();
    let id = dataset.record.id;
    let totals = store.catalog().call(move |c| c.key_totals(id)).await?;
    let counts: HashMap<String, KeyCount> = totals
        .iter()
        .map(|t| (t.key.clone(), KeyCount { rows: t.rows.max(0) as u64, bytes: t.bytes.max(0) as u64 }))
        .collect();
    let partitions: HashMap<&str, i64> = totals.iter().map(|t| (t.key.as_str(), t.partitions)).collect();
    let figures: HashMap<String, KeyFigures> =
        totals.iter().map(|t| (t.key.clone(), (t.partitions, t.rows.max(0) as u64, t.bytes.max(0) as u64))).collect();
    let hash = routing_hash::section(state, &dataset, params, &figures).await?;
    let (imbalance, hot, mut keys) = distribution(&counts, hot_ratio);
    for entry in &mut keys {
        let key = entry["key"].as_str().unwrap_or_default().to_string();
        entry["partitions"] = json!(partitions.get(key.as_str()).copied().unwrap_or(0));
    }
    let mut answer = json!({
            "dataset": dataset.name.as_str(),
            "hot_ratio": hot_ratio,
            "windows": windows,
            "totals": {
                "rows": counts.values().map(|c| c.rows).sum::<u64>(),
                "bytes": counts.values().map(|c| c.bytes).sum::<u64>(),
                "key_count": counts.len(),
                "imbalance": imbalance,
                "hot_keys": hot,
                "keys": keys,
            },
    });
    if let Some(hash) = hash {
        answer["hash"] = hash;
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// `strata_routing_hot_keys{dataset}` and `strata_routing_imbalance{dataset}`
/// over the last hour's writes.
pub(super) fn metrics(store: &Store, hot_ratio: f64) -> String {
    let now = now_ns();
    let figures: Vec<(String, usize, f64)> = store
        .datasets()
        .into_iter()
        .map(|d| {
            let (imbalance, hot, _) = distribution(&d.routing.window(now, METRICS_WINDOW_MINUTES), hot_ratio);
            (d.name.as_str().to_string(), hot.len(), imbalance)
        })
        .collect();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# HELP strata_routing_hot_keys Partition keys that took more than ingest.routing_hot_ratio times the mean rows per key in the last hour."
    );
    let _ = writeln!(text, "# TYPE strata_routing_hot_keys gauge");
    for (dataset, hot, _) in &figures {
        let _ = writeln!(text, "strata_routing_hot_keys{{dataset=\"{dataset}\"}} {hot}");
    }
    let _ = writeln!(
        text,
        "# HELP strata_routing_imbalance Max rows per partition key over the mean in the last hour (0: nothing written)."
    );
    let _ = writeln!(text, "# TYPE strata_routing_imbalance gauge");
    for (dataset, _, imbalance) in &figures {
        let _ = writeln!(text, "strata_routing_imbalance{{dataset=\"{dataset}\"}} {imbalance}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_distribution_names_hot_keys_and_the_imbalance() {
        let counts: HashMap<String, KeyCount> = [("a", 70), ("b", 20), ("c", 10)]
            .into_iter()
            .map(|(k, rows)| (k.to_string(), KeyCount { rows, bytes: rows * 2 }))
            .collect();
        let (imbalance, hot, keys) = distribution(&counts, 1.5);
        assert!((imbalance - 2.1).abs() < 1e-9, "{imbalance}");
        assert_eq!(hot, ["a"]);
        assert_eq!(keys[0]["share"], 0.7);
        assert_eq!(distribution(&HashMap::new(), 1.5).0, 0.0);
    }
}
