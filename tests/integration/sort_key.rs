//! Files sorted by their tags: a query filtering on one tag answers exactly
//! what the rows written say (an oracle computed here), across flushes,
//! compaction, a restart and rows still buffered; the files on disk are
//! ordered by region (fewer distinct values), then host, then time.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::{Server, read_parquet};

/// 2025-01-01T00:00:00Z
const START: i64 = 1_735_689_600_000_000_000;
const SECOND: i64 = 1_000_000_000;

/// Compaction by request only; row groups of 64 rows, so that a file has
/// many and a tag filter has some to skip.
const CONFIG: &str = "[ingest]\nrow_group_rows_max = 64\n[lifecycle]\nscheduler = false\ngrace_ms = 0\n\
                      sweep_interval_ms = 100\n[lifecycle.compaction]\nmin_files = 2\nchunk_files = 8\n";

/// One written row: host (none for some rows), region, time, value.
type Row = (Option<String>, String, i64, f64);

/// `count` rows from row `first` on, as line protocol and as the oracle's
/// rows: 10 hosts over 3 regions, one row in 13 without a host, times
/// scattered over one day (not in order within a request).
fn rows(first: i64, count: i64) -> (String, Vec<Row>) {
    let mut lines = String::new();
    let mut written = Vec::new();
    for i in first..first + count {
        let host = (i % 13 != 5).then(|| format!("h{}", i % 10));
        let region = format!("r{}", i % 3);
        let time = START + ((i * 7_919) % 86_400) * SECOND + i;
        let value = (i % 1_000) as f64 / 8.0;
        let tags = host.as_ref().map_or(String::new(), |h| format!(",host={h}"));
        lines.push_str(&format!("cpu{tags},region={region} v={value} {time}\n"));
        written.push((host, region, time, value));
    }
    (lines, written)
}

fn write(server: &Server, first: i64, count: i64, oracle: &mut Vec<Row>) {
    let (lines, written) = rows(first, count);
    let (status, body) = server.post("/api/v2/write?bucket=sk&precision=ns", lines);
    assert_eq!(status, 204, "{body}");
    oracle.extend(written);
}

/// count, sum and max of `v` over the oracle's rows with `host` (any host
/// when `None`) whose time is in `[from, to)`.
fn expected(oracle: &[Row], host: Option<&str>, from: i64, to: i64) -> (i64, f64, f64) {
    let chosen: Vec<&Row> =
        oracle.iter().filter(|r| host.is_none_or(|h| r.0.as_deref() == Some(h)) && r.2 >= from && r.2 < to).collect();
    let sum = chosen.iter().map(|r| r.3).sum();
    (chosen.len() as i64, sum, chosen.iter().map(|r| r.3).fold(f64::MIN, f64::max))
}

/// The same through the structured query, filtered on `host`.
fn answered(server: &Server, host: Option<&str>, from: i64, to: i64) -> (i64, f64, f64) {
    let mut body = json!({"time_range": {"start": from, "end": to},
        "downsample": {"aggregations": [{"fn": "count", "column": "v"}, {"fn": "sum", "column": "v"}, {"fn": "max", "column": "v"}]}});
    if let Some(host) = host {
        body["filters"] = json!({"and": [{"column": "host", "op": "=", "value": host}, {"column": "region", "op": "in", "value": ["r0", "r1", "r2"]}]});
    }
    let (status, answer) = server.post("/v1/datasets/sk/query", body.to_string());
    assert_eq!(status, 200, "{answer}");
    let row = &answer["rows"][0];
    if row.is_null() {
        return (0, 0.0, f64::MIN);
    }
    let number = |prefix: &str| {
        row.as_object().unwrap().iter().find(|(name, _)| name.starts_with(prefix)).map(|(_, v)| v.clone()).unwrap()
    };
    (number("count").as_i64().unwrap(), number("sum").as_f64().unwrap(), number("max").as_f64().unwrap())
}

/// Every host's (and every range's) answer matches the oracle.
fn check(server: &Server, oracle: &[Row], when: &str) {
    let day = 86_400 * SECOND;
    for (from, to) in [(START, START + day), (START + 3_600 * SECOND, START + 5 * 3_600 * SECOND)] {
        for host in (0..10).map(|h| format!("h{h}")).map(Some).chain([Some("nobody".to_string()), None]) {
            let want = expected(oracle, host.as_deref(), from, to);
            let got = answered(server, host.as_deref(), from, to);
            assert_eq!(got.0, want.0, "{when}: count for {host:?} in [{from}, {to})");
            if want.0 > 0 {
                assert!((got.1 - want.1).abs() < 1e-6 * want.1.abs().max(1.0), "{when}: sum for {host:?}");
                assert_eq!(got.2, want.2, "{when}: max for {host:?}");
            }
        }
    }
}

/// Each file's rows are in (region, host — no host first —, time) order.
fn assert_files_sorted(server: &Server) {
    let (status, manifest) = server.get("/v1/datasets/sk/partitions");
    assert_eq!(status, 200, "{manifest}");
    for partition in manifest["partitions"].as_array().unwrap() {
        for file in partition["files"].as_array().unwrap() {
            let rows: Vec<BTreeMap<String, Value>> = read_parquet(Path::new(file["path"].as_str().unwrap()));
            let keys: Vec<(String, Option<String>, i64)> = rows
                .iter()
                .map(|r| {
                    let text = |c: &str| r.get(c).and_then(Value::as_str).map(str::to_string);
                    (text("region").unwrap(), text("host"), r["time"].as_i64().unwrap())
                })
                .collect();
            assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{} is not in key order", file["path"]);
        }
    }
}

#[test]
fn a_tag_filter_over_tag_sorted_files_answers_what_a_full_scan_does() {
    let mut server = Server::start("sort-key", CONFIG);
    let mut oracle = Vec::new();
    for flush in 0..4 {
        write(&server, flush * 500, 500, &mut oracle);
        server.flush();
    }
    check(&server, &oracle, "after flushes");
    assert_files_sorted(&server);

    let (status, done) = server.post("/v1/datasets/sk/compact", "{}");
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["partitions"][0]["outcome"], "completed", "{done}");
    assert_eq!(done["partitions"][0]["files_after"], 1, "{done}");
    check(&server, &oracle, "after compaction");
    assert_files_sorted(&server);

    server.restart();
    check(&server, &oracle, "after a restart");
    // Rows still buffered join the files' rows.
    write(&server, 2_000, 300, &mut oracle);
    check(&server, &oracle, "with rows buffered");
    server.flush();
    check(&server, &oracle, "after the last flush");
    assert_files_sorted(&server);
}
