//! Queries over a cold tier in a bucket of a real S3-protocol server
//! (`moto_server`): the read cache fetches each file once, serves it again
//! (across a restart, and with the store down), and a fetch that fails is
//! 503 `storage_unavailable` naming the target, never a partial answer.

use serde_json::{Value, json};

use crate::lifecycle::{DAY, START, TIERING, load, manifest, run, totals};
use crate::support::{MotoServer, Server, moto, remote_target_toml};

const SECRET: &str = strata::cli::bench_storage::MOTO_SECRET_ACCESS_KEY;

/// A server whose cold tier is bucket `bucket` of `moto`, tiering after two days.
fn cold_on_s3(name: &str, moto: &MotoServer, bucket: &str) -> Server {
    moto.create_bucket(bucket).unwrap();
    let config = format!(
        "[lifecycle]\nscheduler = false\n\
         {}\
         [storage.tiers.cold]\ntarget = \"remote\"\n",
        remote_target_toml(moto, bucket),
    );
    let tiering = TIERING.replace("warm_after = \"30d\"\ncold_after = \"180d\"", "cold_after = \"2d\"");
    let server = Server::start_with_files(name, &config, &[], &[("policies/tiering.toml", tiering.as_bytes())]);
    load(&server, 6);
    let report = run(&server, "tiering", json!({"now": START + 5 * DAY + 12 * 3_600_000_000_000}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(3), Some(0)), "{report}");
    server
}

/// Bytes of the files on the remote target, as the catalog records them.
fn remote_bytes(server: &Server) -> u64 {
    let partitions = manifest(server);
    let files = partitions.iter().flat_map(|p| p["files"].as_array().unwrap().iter());
    let remote: Vec<&Value> = files.filter(|f| f["storage_target"] == "remote").collect();
    assert_eq!(remote.len(), 3, "{partitions:?}");
    remote.iter().map(|f| f["bytes"].as_u64().unwrap()).sum()
}

/// Every row, oldest first, with the query's stats.
fn all_rows(server: &Server) -> (Value, Value) {
    let body = json!({"time_range": {"start": START, "end": START + 7 * DAY}, "order": "asc"});
    let (status, response) = server.post("/v1/datasets/metrics/query", body.to_string());
    assert_eq!(status, 200, "{response}");
    (response["rows"].clone(), response["stats"].clone())
}

fn metric(server: &Server, name: &str) -> u64 {
    let text = server.get_text("/metrics");
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("{name}: {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Every `strata_cache_*` sample of `/metrics`, read at once.
fn cache_metrics(server: &Server) -> Vec<(String, u64)> {
    let text = server.get_text("/metrics");
    let samples = text.lines().filter(|l| l.starts_with("strata_cache_"));
    samples.filter_map(|l| l.split_once(' ')).map(|(n, v)| (n.to_string(), v.parse().unwrap())).collect()
}

fn cache_files(server: &Server) -> usize {
    let dir = server.data_dir.join("cache");
    crate::support::files_under(&dir).iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).count()
}

#[test]
fn a_cold_tier_in_a_bucket_is_fetched_once_then_read_from_the_cache() {
    let mut moto = moto();
    let mut server = cold_on_s3("s3-cache", &moto, "cached");
    let bytes = remote_bytes(&server);

    let (cold_rows, cold) = all_rows(&server);
    assert_eq!(cold_rows.as_array().unwrap().len(), 6, "{cold_rows}");
    assert_eq!((cold["bytes_from_remote"].as_u64(), cold["bytes_from_cache"].as_u64()), (Some(bytes), Some(0)));
    let (warm_rows, warm) = all_rows(&server);
    assert_eq!(warm_rows, cold_rows, "the same answer from the cache");
    assert_eq!((warm["bytes_from_remote"].as_u64(), warm["bytes_from_cache"].as_u64()), (Some(0), Some(bytes)));
    let (status, sql) = server.post("/v1/sql", "SELECT count(*) AS n, CAST(sum(v) AS BIGINT) AS s FROM metrics");
    assert_eq!((status, &sql["rows"][0]), (200, &json!({"n": 6, "s": 15})), "{sql}");
    assert_eq!(sql["stats"]["bytes_from_cache"].as_u64(), Some(bytes), "{sql}");
    let counters = cache_metrics(&server);
    let counted = |name: &str| counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let context = format!("{counters:?}\n{}", server.log());
    assert_eq!(counted("strata_cache_misses_total"), Some(3), "{context}");
    assert_eq!(counted("strata_cache_hits_total"), Some(6), "{context}");
    assert_eq!(counted("strata_cache_fill_bytes_total"), Some(bytes), "{context}");
    assert_eq!(counted("strata_cache_bytes"), Some(bytes), "{context}");
    assert_eq!(
        (counted("strata_cache_evictions_total"), counted("strata_cache_fill_errors_total")),
        (Some(0), Some(0)),
        "{context}"
    );
    assert_eq!(cache_files(&server), 3);

    // The cache outlives the process, and serves while the store is down.
    server.restart();
    moto.stop();
    let (rows, stats) = all_rows(&server);
    assert_eq!(rows, cold_rows);
    assert_eq!((stats["bytes_from_remote"].as_u64(), stats["bytes_from_cache"].as_u64()), (Some(0), Some(bytes)));
    assert_eq!(totals(&server), (6, 15));
    assert!(!server.log().contains(SECRET));
}

#[test]
fn a_fetch_from_a_stopped_store_is_503_storage_unavailable_naming_the_target() {
    let mut moto = moto();
    let server = cold_on_s3("s3-cache-down", &moto, "down");
    moto.stop();
    let body = json!({"time_range": {"start": START, "end": START + 7 * DAY}}).to_string();
    for (path, body) in [("/v1/datasets/metrics/query", body.as_str()), ("/v1/sql", "SELECT count(*) FROM metrics")] {
        let (status, headers, error) = server.request("POST", path, &[], body.to_string());
        assert_eq!(status, 503, "{path}: {error}");
        assert_eq!(error["error"]["code"], "storage_unavailable", "{path}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().contains("storage target remote"), "{error}");
        assert!(error.get("rows").is_none(), "no partial answer: {error}");
        assert_eq!(headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("5"), "{path}");
        assert!(!error.to_string().contains(SECRET));
    }
    assert!(metric(&server, "strata_cache_fill_errors_total") >= 1);
    assert_eq!(cache_files(&server), 0, "nothing half-fetched is kept");

    // Hot data is answered as before.
    let hot = json!({"time_range": {"start": START + 3 * DAY, "end": START + 7 * DAY}}).to_string();
    let (status, response) = server.post("/v1/datasets/metrics/query", hot);
    assert_eq!((status, response["rows"].as_array().map(Vec::len)), (200, Some(3)), "{response}");
    assert_eq!(response["stats"]["bytes_from_remote"], 0);
}

#[test]
fn an_injected_corrupt_read_fails_the_fill_and_keeps_nothing() {
    let moto = moto();
    let mut server = cold_on_s3("s3-cache-corrupt", &moto, "corrupt");
    server.set_env(&[("STRATA_FAILPOINTS", "storage.get.remote=corrupt")]);
    server.restart();
    let body = json!({"time_range": {"start": START, "end": START + 7 * DAY}}).to_string();
    let (status, error) = server.post("/v1/datasets/metrics/query", body);
    assert_eq!((status, &error["error"]["code"]), (503, &json!("storage_unavailable")), "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("CRC32C"), "{error}");
    // Each fetch the query started failed (they run a few at a time).
    let errors = metric(&server, "strata_cache_fill_errors_total");
    assert!((1..=3).contains(&errors), "{errors}");
    assert_eq!(cache_files(&server), 0);

    server.set_env(&[]);
    server.restart();
    let (rows, stats) = all_rows(&server);
    assert_eq!(rows.as_array().unwrap().len(), 6);
    assert!(stats["bytes_from_remote"].as_u64().unwrap() > 0, "{stats}");
}
