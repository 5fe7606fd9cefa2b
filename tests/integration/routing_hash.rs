//! The routing report's hash section against the real binary: the
//! distribution over buckets / nodes, and the share of values a candidate
//! config would move, checked against datasets that really run the
//! candidate config.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::lifecycle::START;
use crate::support::Server;

const HOSTS: usize = 64;

fn policy(name: &str, plugin: &str, dataset: &str, config: &str) -> String {
    format!(
        "name = \"{name}\"\nkind = \"partitioner\"\nplugin = \"builtin:{plugin}\"\ndatasets = [\"{dataset}\"]\n\
         [config]\nfields = [\"host\"]\n{config}\n"
    )
}

/// `key → rows` (committed plus buffered) of a dataset.
fn rows_by_key(server: &Server, dataset: &str) -> BTreeMap<String, u64> {
    let (status, body) = server.get(&format!("/v1/datasets/{dataset}/partitions"));
    assert_eq!(status, 200, "{body}");
    let mut rows = BTreeMap::new();
    for p in body["partitions"].as_array().unwrap() {
        let count = p["rows"].as_u64().unwrap() + p["buffered_rows"].as_u64().unwrap();
        *rows.entry(p["key"].as_str().unwrap().to_string()).or_default() += count;
    }
    rows
}

/// Host `i` has `1 + i % 4` rows.
fn host_rows(i: usize) -> u64 {
    1 + (i % 4) as u64
}

/// Writes each host's rows in its own request to every dataset and learns,
/// from the listing, the key each dataset gave it: `dataset → [key per host]`.
fn write_and_learn_keys(server: &Server, datasets: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for dataset in datasets {
        let mut before = BTreeMap::new();
        for host in 0..HOSTS {
            let records: Vec<Value> = (0..host_rows(host))
                .map(|r| json!({"time": START + r as i64, "host": format!("h{host}"), "v": r}))
                .collect();
            let (status, body) =
                server.post(&format!("/v1/datasets/{dataset}/records"), Value::Array(records).to_string());
            assert_eq!(status, 200, "{body}");
            let after = rows_by_key(server, dataset);
            let grown: Vec<&String> =
                after.iter().filter(|(k, rows)| before.get(*k) != Some(*rows)).map(|(k, _)| k).collect();
            assert_eq!(grown.len(), 1, "one host, one key: {before:?} {after:?}");
            keys.entry(dataset.to_string()).or_default().push(grown[0].clone());
            before = after;
        }
    }
    keys
}

/// `(keys moved, rows moved)` between two datasets' keys per host.
fn oracle(from: &[String], to: &[String]) -> (u64, u64) {
    let moved: Vec<usize> = (0..HOSTS).filter(|h| from[*h] != to[*h]).collect();
    (moved.len() as u64, moved.iter().map(|h| host_rows(*h)).sum())
}

fn candidate(server: &Server, path: &str) -> Value {
    let (status, report) = server.get(path);
    assert_eq!(status, 200, "{path}: {report}");
    report["hash"]["candidate"].clone()
}

#[test]
fn the_routing_report_shows_hash_distribution_and_what_a_candidate_config_moves() {
    let files = [
        ("policies/h4.toml", policy("h4", "partition-by-hash", "h4", "buckets = 4")),
        ("policies/h8.toml", policy("h8", "partition-by-hash", "h8", "buckets = 8")),
        ("policies/c3.toml", policy("c3", "partition-by-consistent-hash", "c3", "nodes = [\"n1\", \"n2\", \"n3\"]")),
        (
            "policies/c4.toml",
            policy("c4", "partition-by-consistent-hash", "c4", "nodes = [\"n1\", \"n2\", \"n3\", \"n4\"]"),
        ),
        ("policies/plain.toml", policy("plain", "partition-by-field", "plain", "")),
    ];
    let files: Vec<(&str, &[u8])> = files.iter().map(|(path, text)| (*path, text.as_bytes())).collect();
    let server = Server::start_with_files("routing-hash", "", &[], &files);
    let keys = write_and_learn_keys(&server, &["h4", "h8", "c3", "c4", "plain"]);
    server.flush();

    // The distribution: per bucket, the values and rows the test saw land there.
    let (status, report) = server.get("/v1/datasets/h4/routing");
    assert_eq!(status, 200, "{report}");
    let hash = &report["hash"];
    assert_eq!((hash["buckets"].as_u64(), hash["values_total"].as_u64()), (Some(4), Some(HOSTS as u64)), "{hash}");
    assert_eq!(hash["values_truncated"], false);
    let listing = rows_by_key(&server, "h4");
    let distribution = hash["distribution"].as_array().unwrap();
    assert_eq!(distribution.len(), listing.len(), "{hash}");
    for entry in distribution {
        let key = entry["key"].as_str().unwrap();
        let hosts: Vec<usize> = (0..HOSTS).filter(|h| keys["h4"][*h] == key).collect();
        assert_eq!(entry["values"].as_u64(), Some(hosts.len() as u64), "{entry}");
        let rows: u64 = hosts.iter().map(|h| host_rows(*h)).sum();
        assert_eq!((entry["value_rows"].as_u64(), entry["rows"].as_u64()), (Some(rows), Some(listing[key])), "{entry}");
        assert!(entry["bytes"].as_u64().unwrap() > 0, "{entry}");
    }
    let (status, ring) = server.get("/v1/datasets/c3/routing");
    assert_eq!(status, 200, "{ring}");
    let nodes: Vec<&str> =
        ring["hash"]["distribution"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!((ring["hash"]["nodes"].as_u64(), nodes), (Some(3), vec!["n1", "n2", "n3"]), "{ring}");
    let (_, plain) = server.get("/v1/datasets/plain/routing");
    assert!(plain.get("hash").is_none(), "{plain}");

    // What a candidate moves equals what datasets running it really did.
    let doubled = candidate(&server, "/v1/datasets/h4/routing?candidate_buckets=8");
    let (moved, rows) = oracle(&keys["h4"], &keys["h8"]);
    assert_eq!(
        (doubled["keys_total"].as_u64(), doubled["keys_moved"].as_u64()),
        (Some(HOSTS as u64), Some(moved)),
        "{doubled}"
    );
    assert_eq!(doubled["rows_moved"].as_u64(), Some(rows), "{doubled}");
    assert!((doubled["share_moved"].as_f64().unwrap() - moved as f64 / HOSTS as f64).abs() < 1e-9, "{doubled}");
    let added = candidate(&server, "/v1/datasets/c3/routing?add_node=n4");
    let (ring_moved, ring_rows) = oracle(&keys["c3"], &keys["c4"]);
    assert_eq!(
        (added["keys_moved"].as_u64(), added["rows_moved"].as_u64()),
        (Some(ring_moved), Some(ring_rows)),
        "{added}"
    );
    assert!(ring_moved > 0 && ring_moved * 3 < moved * 2, "a ring moves far less: {ring_moved} vs {moved}");
    let removed = candidate(&server, "/v1/datasets/c4/routing?remove_node=n4");
    assert_eq!(removed["keys_moved"].as_u64(), Some(ring_moved), "{removed}");

    // Candidates that make no sense are refused, naming why.
    for (path, code, mentions) in [
        ("/v1/datasets/plain/routing?candidate_buckets=8", "unsupported_value", "partition-by-hash"),
        ("/v1/datasets/h4/routing?add_node=n9", "unsupported_value", "consistent-hash"),
        ("/v1/datasets/c3/routing?candidate_buckets=8", "unsupported_value", "partition-by-hash"),
        ("/v1/datasets/h4/routing?candidate_buckets=0", "bad_request", "at least 1"),
        ("/v1/datasets/h4/routing?candidate_buckets=5000", "bad_request", "4096"),
        ("/v1/datasets/c3/routing?remove_node=n9", "bad_request", "not on the ring"),
        ("/v1/datasets/c3/routing?add_node=n1", "bad_request", "already"),
        ("/v1/datasets/c3/routing?add_node=Bad", "bad_request", "a-z"),
    ] {
        let (status, body) = server.get(path);
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(mentions), "{path}: {body}");
    }
}
