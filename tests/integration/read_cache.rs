//! The read cache of remote files as a server without a remote target
//! shows it: local files are read in place, so every query's cache and
//! remote byte counts are 0, and `/metrics` exports the `strata_cache_*`
//! families at 0 from the start.

use serde_json::json;

use crate::support::Server;

/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600_000_000_000;

#[test]
fn local_files_are_read_in_place_and_the_cache_metrics_start_at_zero() {
    let server = Server::start("read-cache-local", "[ingest]\nflush_age_ms = 3600000\n");
    let metrics = server.get_text("/metrics");
    for (family, kind) in [
        ("strata_cache_hits_total", "counter"),
        ("strata_cache_misses_total", "counter"),
        ("strata_cache_bytes", "gauge"),
        ("strata_cache_fill_bytes_total", "counter"),
        ("strata_cache_evictions_total", "counter"),
        ("strata_cache_fill_errors_total", "counter"),
    ] {
        assert!(metrics.contains(&format!("# HELP {family} ")), "{family}: {metrics}");
        assert!(metrics.contains(&format!("# TYPE {family} {kind}\n")), "{family}: {metrics}");
        assert!(metrics.lines().any(|l| l == format!("{family} 0")), "{family}: {metrics}");
    }

    let lines: String = (0..100).map(|i| format!("cpu,host=h{} usage={i} {}\n", i % 3, T0 + i)).collect();
    assert_eq!(server.post("/api/v2/write?bucket=cpu", lines).0, 204);
    server.flush();
    let (status, response) = server.post(
        "/v1/datasets/cpu/query",
        json!({"time_range": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}}).to_string(),
    );
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["rows"].as_array().unwrap().len(), 100);
    let stats = &response["stats"];
    assert_eq!(stats["files_scanned"], 1, "{stats}");
    assert!(stats["bytes_scanned"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!((&stats["bytes_from_cache"], &stats["bytes_from_remote"]), (&json!(0), &json!(0)), "{stats}");

    let (status, response) = server.post("/v1/sql", "SELECT count(*) AS n FROM cpu");
    assert_eq!((status, &response["rows"][0]["n"]), (200, &json!(100)), "{response}");
    assert_eq!(
        (&response["stats"]["bytes_from_cache"], &response["stats"]["bytes_from_remote"]),
        (&json!(0), &json!(0))
    );

    // Without a remote target no cache directory is made.
    assert!(!server.data_dir.join("cache").exists());
    let metrics = server.get_text("/metrics");
    assert!(metrics.lines().any(|l| l == "strata_cache_misses_total 0"), "{metrics}");
}
