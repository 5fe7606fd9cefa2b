//! A write whose rows fall into 5,000 partitions, as a client sees it:
//! every row lands in its key's partition with exact counts — buffered,
//! after kill -9 before any flush (WAL replay), after a flush, and after a
//! restart — and each partition's file holds only its own key's rows.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::support::{Server, read_parquet};

/// 2026-01-15T10:00:00Z, in seconds.
const JAN: i64 = 1_768_471_200;
const KEYS: usize = 5_000;

fn config() -> String {
    let cache = std::env::temp_dir().join("strata-test-policy-cache");
    format!(
        "[ingest]\nflush_age_ms = 3600000\n[policies]\ncache_dir = {cache:?}\n\
         [datasets.orders]\nperiod = \"month\"\n"
    )
}

const TENANTS: &str = "name = \"tenants\"\nkind = \"partitioner\"\nplugin = \"builtin:partition-by-field\"\n\
    datasets = [\"orders\"]\n[limits]\ndeadline_ms = 5000\n[config]\nfields = [\"tenant\"]\n";

/// Rows key `k` gets from one request: 1 to 3, so a row counted in the
/// wrong partition changes two counts.
fn rows_of(key: usize) -> usize {
    key % 3 + 1
}

/// One line-protocol request with `rows_of(k)` rows for each of `KEYS`
/// tenants, interleaved; `amount` is `key * 10 + n`, `first` offsets times.
fn request(first: i64) -> String {
    let mut lines = String::new();
    for n in 0..3 {
        for key in (0..KEYS).filter(|key| rows_of(*key) > n) {
            let time = JAN + first + (key * 3 + n) as i64;
            lines.push_str(&format!("orders,tenant=t{key} amount={}i {time}\n", key * 10 + n));
        }
    }
    lines
}

/// Every partition of `orders` (following `next_cursor` when the listing pages).
fn partitions(server: &Server) -> Vec<Value> {
    let mut all = Vec::new();
    let mut path = "/v1/datasets/orders/partitions?limit=10000".to_string();
    loop {
        let (status, body) = server.get(&path);
        assert_eq!(status, 200, "{body}");
        all.extend(body["partitions"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/datasets/orders/partitions?limit=10000&cursor={cursor}"),
            None => return all,
        }
    }
}

/// `key → (committed rows, buffered rows)`.
fn counts(server: &Server) -> BTreeMap<String, (u64, u64)> {
    partitions(server)
        .iter()
        .map(|p| {
            assert_eq!(p["period_label"], "2026-01", "{p}");
            let key = p["key"].as_str().unwrap().to_string();
            (key, (p["rows"].as_u64().unwrap(), p["buffered_rows"].as_u64().unwrap()))
        })
        .collect()
}

fn expected(requests: u64, flushed: bool) -> BTreeMap<String, (u64, u64)> {
    (0..KEYS)
        .map(|key| {
            let rows = rows_of(key) as u64 * requests;
            (format!("t{key}"), if flushed { (rows, 0) } else { (0, rows) })
        })
        .collect()
}

/// One line-protocol request. This test asserts where rows land, not how
/// fast: a 5,000-partition request on a loaded 2-core machine may take
/// longer than the suite's usual 60 s client timeout.
fn write(server: &Server, body: String) -> (u16, serde_json::Value) {
    server.post_within("/api/v2/write?bucket=orders&precision=s", body, std::time::Duration::from_secs(600))
}

#[test]
fn a_request_over_5000_keys_lands_each_row_in_its_partition_across_replay_flush_and_restart() {
    let mut server =
        Server::start_with_files("many-partitions", &config(), &[], &[("policies/tenants.toml", TENANTS.as_bytes())]);

    let (status, body) = write(&server, request(0));
    assert_eq!(status, 204, "{body}");
    assert_eq!(counts(&server), expected(1, false));

    // A second request into the same 5,000 partitions, then kill -9
    // before any flush: replay puts every row back into its partition.
    let (status, body) = write(&server, request(100_000));
    assert_eq!(status, 204, "{body}");
    server.restart();
    assert_eq!(counts(&server), expected(2, false), "after WAL replay");
    let total = (0..KEYS).map(rows_of).sum::<usize>() as u64 * 2;
    let summary = |server: &Server| {
        let (status, dataset) = server.get("/v1/datasets/orders");
        assert_eq!(status, 200, "{dataset}");
        let field = |name: &str| dataset[name].as_u64().unwrap_or_else(|| panic!("{name} in {dataset}"));
        (field("partitions"), field("rows"), field("buffered_rows"), field("committed_rows"))
    };
    assert_eq!(summary(&server), (KEYS as u64, total, total, 0), "the dataset's totals");

    server.flush();
    assert_eq!(counts(&server), expected(2, true), "after the flush");
    assert_eq!(summary(&server), (KEYS as u64, total, 0, total));
    server.restart();
    assert_eq!(counts(&server), expected(2, true), "after a restart");

    // Each partition's one file holds exactly its own key's rows.
    let listing = partitions(&server);
    assert_eq!(listing.len(), KEYS);
    for partition in &listing {
        let key = partition["key"].as_str().unwrap();
        let files = partition["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{partition}");
        let rows = read_parquet(Path::new(files[0]["path"].as_str().unwrap()));
        let number: usize = key[1..].parse().unwrap();
        let mut amounts: Vec<i64> = rows
            .iter()
            .map(|row| {
                assert_eq!(row["tenant"], key, "a row of another key in {key}'s file");
                row["amount"].as_i64().unwrap()
            })
            .collect();
        amounts.sort();
        let mut wanted: Vec<i64> =
            (0..rows_of(number)).map(|n| (number * 10 + n) as i64).flat_map(|a| [a, a]).collect();
        wanted.sort();
        assert_eq!(amounts, wanted, "rows of {key}");
    }

    // The query counts every row once.
    let query = r#"{"time_range":{"start":"2026-01-01T00:00:00Z","end":"2026-02-01T00:00:00Z"},
        "downsample":{"aggregations":[{"fn":"count","column":"amount"}]}}"#;
    let (status, answer) = server.post("/v1/datasets/orders/query", query);
    assert_eq!(status, 200, "{answer}");
    let row = answer["rows"][0].as_object().unwrap_or_else(|| panic!("{answer}"));
    assert!(row.values().any(|v| v.as_u64() == Some(total)), "count {total} in {answer}");
}
