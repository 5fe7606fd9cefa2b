//! Compaction against the real binary: many small flushes merged into a few
//! files with the same rows, crashes at every step of a chunk, a faulty
//! target that fails every attempt, and writes that go on meanwhile.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::lifecycle::parquet_files;
use crate::support::Server;

/// 2025-01-01T00:00:00Z
const START: i64 = 1_735_689_600_000_000_000;
const SECOND: i64 = 1_000_000_000;
const DAY: i64 = 86_400 * SECOND;

/// Compaction by request only, small thresholds, tombstones swept at once.
const CONFIG: &str = "[lifecycle]\nscheduler = false\ngrace_ms = 0\nsweep_interval_ms = 100\n\
                      [lifecycle.compaction]\nmin_files = 4\nchunk_files = 4\n";

/// Writes `files` flushes of `rows` rows each into the day of `day_start`;
/// from the `files / 2`-th flush on, rows carry a column the earlier files
/// lack. Row times are distinct across calls with distinct `first`.
fn write_small_files(server: &Server, dataset: &str, day_start: i64, first: i64, files: i64, rows: i64) {
    for file in 0..files {
        let records: Vec<Value> = (0..rows)
            .map(|r| {
                let i = first + file * rows + r;
                let mut record =
                    json!({"time": day_start + i * SECOND, "host": format!("h{}", i % 3), "v": i as f64 / 4.0});
                if file >= files / 2 {
                    record["extra"] = json!(format!("x{i}"));
                }
                record
            })
            .collect();
        let (status, body) = server.post(&format!("/v1/datasets/{dataset}/records"), Value::Array(records).to_string());
        assert_eq!(status, 200, "{body}");
        server.flush();
    }
}

/// Every row, in time order, through SQL.
fn all_rows(server: &Server, dataset: &str) -> Value {
    let (status, body) = server.post("/v1/sql", format!("SELECT time, host, v, extra FROM {dataset} ORDER BY time"));
    assert_eq!(status, 200, "{body}");
    let (status, distinct) =
        server.post("/v1/sql", format!("SELECT count(*) AS n, count(DISTINCT time) AS d FROM {dataset}"));
    assert_eq!(status, 200, "{distinct}");
    assert_eq!(distinct["rows"][0]["n"], distinct["rows"][0]["d"], "a row is visible twice");
    body["rows"].clone()
}

fn partitions(server: &Server, dataset: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/datasets/{dataset}/partitions"));
    assert_eq!(status, 200, "{body}");
    body["partitions"].as_array().unwrap().clone()
}

fn file_count(server: &Server, dataset: &str, label: &str) -> usize {
    let partition = partitions(server, dataset).into_iter().find(|p| p["period_label"] == label).unwrap();
    partition["files"].as_array().unwrap().len()
}

fn compact(server: &Server, dataset: &str, body: Value) -> Value {
    let (status, response) = server.post(&format!("/v1/datasets/{dataset}/compact"), body.to_string());
    assert_eq!(status, 200, "{response}");
    response
}

fn checkpoint(server: &Server, dataset: &str, partition: &str) -> Value {
    let (status, body) = server.get(&format!("/v1/datasets/{dataset}/compaction"));
    assert_eq!(status, 200, "{body}");
    body["checkpoints"].as_array().unwrap().iter().find(|c| c["partition"] == partition).cloned().unwrap_or_default()
}

/// Waits until the files on disk are exactly those the catalog lists as
/// live (the sweeper has removed tombstoned inputs; no orphan is left).
fn assert_disk_matches_catalog(server: &Server, dataset: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let referenced: BTreeSet<PathBuf> = partitions(server, dataset)
            .iter()
            .flat_map(|p| p["files"].as_array().unwrap().iter().map(|f| PathBuf::from(f["path"].as_str().unwrap())))
            .collect();
        let on_disk = parquet_files(&server.data_dir.join("storage"));
        if on_disk == referenced {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "on disk but not live: {:?}; live but not on disk: {:?}",
            on_disk.difference(&referenced).collect::<Vec<_>>(),
            referenced.difference(&on_disk).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = server.get_text("/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.parse().unwrap())
}

#[test]
fn compaction_merges_small_files_and_queries_return_the_same_rows() {
    let config = format!("{CONFIG}[datasets.frozen]\ncompaction = false\n");
    let server = Server::start("compaction-merge", &config);
    write_small_files(&server, "events", START, 0, 10, 5);
    // The next day gets too few files to be worth a job.
    write_small_files(&server, "events", START + DAY, 1_000, 2, 5);
    let before = all_rows(&server, "events");
    assert_eq!(before.as_array().unwrap().len(), 60);
    assert_eq!(file_count(&server, "events", "2025-01-01"), 10);

    // A dry run plans (10 files, 4 per chunk at most: 4 + 3 + 3) and changes nothing.
    let dry = compact(&server, "events", json!({"dry": true}));
    let reports = dry["partitions"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "only the day with enough files: {dry}");
    assert_eq!(reports[0]["outcome"], "planned", "{dry}");
    let planned: Vec<u64> =
        reports[0]["plan"].as_array().unwrap().iter().map(|c| c["files"].as_u64().unwrap()).collect();
    assert_eq!(planned, [4, 3, 3]);
    assert_eq!(file_count(&server, "events", "2025-01-01"), 10);
    assert!(checkpoint(&server, "events", "events/2025-01-01").is_null());

    let done = compact(&server, "events", json!({}));
    let report = &done["partitions"][0];
    assert_eq!(report["outcome"], "completed", "{done}");
    assert_eq!((report["files_before"].as_u64(), report["files_after"].as_u64()), (Some(10), Some(3)), "{done}");
    assert_eq!((report["chunks_merged"].as_u64(), report["files_merged"].as_u64()), (Some(3), Some(10)));
    assert_eq!(all_rows(&server, "events"), before, "the same rows, the same values, once each");

    // The partition listing shows three files holding every row, their bytes adding up.
    let day = partitions(&server, "events").into_iter().find(|p| p["period_label"] == "2025-01-01").unwrap();
    let files = day["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(files.iter().map(|f| f["rows"].as_i64().unwrap()).sum::<i64>(), day["rows"].as_i64().unwrap());
    assert_eq!(files.iter().map(|f| f["bytes"].as_i64().unwrap()).sum::<i64>(), day["bytes"].as_i64().unwrap());
    assert_eq!(day["rows"], 50);
    assert_eq!(file_count(&server, "events", "2025-01-02"), 2, "below min_files: untouched");

    let saved = checkpoint(&server, "events", "events/2025-01-01");
    assert_eq!(saved["status"], "completed", "{saved}");
    assert_eq!(
        (saved["cursor"].as_i64(), saved["completed_chunks"].as_i64(), saved["total_chunks"].as_i64()),
        (Some(3), Some(3), Some(3))
    );
    assert_eq!((saved["attempts"].as_i64(), saved["files_merged"].as_i64()), (Some(1), Some(10)));
    assert!(saved["last_error"].is_null() && saved["finished_at"].is_string());
    let (_, explained) = server.get("/v1/datasets/events/partitions/2025-01-01/explain");
    assert_eq!(explained["compaction"]["status"], "completed", "{explained}");
    assert_eq!(explained["files"], 3);
    let (_, audit) = server.get("/v1/audit?dataset=events&kind=compaction");
    assert_eq!(audit["events"][0]["detail"]["outcome"], "completed", "{audit}");

    assert_eq!(metric(&server, "strata_compactions_total"), 3.0);
    assert_eq!(metric(&server, "strata_compaction_files_merged_total"), 10.0);
    assert!(metric(&server, "strata_compaction_bytes_written_total") > 0.0);
    assert_eq!(metric(&server, "strata_compaction_jobs{status=\"completed\"}"), 1.0);

    // The inputs are swept; nothing else is left behind.
    assert_disk_matches_catalog(&server, "events");
    assert_eq!(all_rows(&server, "events"), before);

    // Nothing left to do: no candidates, and an explicit partition says so.
    assert_eq!(compact(&server, "events", json!({}))["partitions"], json!([]));
    let again = compact(&server, "events", json!({"partition": "events/2025-01-01"}));
    assert_eq!(again["partitions"][0]["outcome"], "nothing_to_do", "{again}");

    // Switched off per dataset; unknown names are clear errors.
    write_small_files(&server, "frozen", START, 0, 4, 1);
    let (status, body) = server.post("/v1/datasets/frozen/compact", "");
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("compaction_disabled")), "{body}");
    let (_, status_body) = server.get("/v1/datasets/frozen/compaction");
    assert_eq!(status_body["enabled"], false);
    assert_eq!(server.post("/v1/datasets/nope/compact", "").0, 404);
    let (status, body) = server.post("/v1/datasets/events/compact", json!({"partition": "2030-01-01"}).to_string());
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.post("/v1/datasets/events/compact", json!({"partitions": "x"}).to_string());
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_json")), "{body}");
}

#[test]
fn a_crash_at_any_step_of_a_chunk_loses_nothing_and_the_job_resumes() {
    // (fail point, chunks committed before the crash)
    for (fail_point, committed) in
        [("compaction.after_checkpoint", 0), ("compaction.after_write", 0), ("compaction.after_commit", 1)]
    {
        let mut server =
            Server::start_with_env(&format!("compaction-{fail_point}"), CONFIG, &[("STRATA_FAILPOINTS", fail_point)]);
        write_small_files(&server, "events", START, 0, 12, 3);
        let before = all_rows(&server, "events");
        let _ = crate::support::client().post(format!("{}/v1/datasets/events/compact", server.url)).body("{}").send();
        assert!(!server.wait_exit().success(), "{fail_point} should have aborted the server");
        server.set_env(&[]);
        server.start_again();

        // Nothing lost, nothing twice, no orphan: the catalog and the files agree.
        assert_eq!(all_rows(&server, "events"), before, "{fail_point}");
        assert_eq!(file_count(&server, "events", "2025-01-01") as i64, 12 - committed * 4 + committed, "{fail_point}");
        assert_disk_matches_catalog(&server, "events");
        // The interrupted attempt is recorded as a failure at its cursor.
        let interrupted = checkpoint(&server, "events", "events/2025-01-01");
        assert_eq!(interrupted["status"], "failed", "{fail_point}: {interrupted}");
        assert_eq!((interrupted["attempts"].as_i64(), interrupted["cursor"].as_i64()), (Some(1), Some(committed)));
        assert!(interrupted["last_error"].as_str().unwrap().contains("interrupted"), "{interrupted}");

        let dry = compact(&server, "events", json!({"dry": true}));
        assert_eq!(dry["partitions"][0]["outcome"], "resumable", "{dry}");
        // The next request resumes the job where it stopped and completes it.
        let resumed = compact(&server, "events", json!({"partition": "2025-01-01"}));
        let report = &resumed["partitions"][0];
        assert_eq!(report["outcome"], "completed", "{fail_point}: {resumed}");
        assert_eq!(report["chunks_merged"].as_i64(), Some(3 - committed), "{fail_point}: {resumed}");
        let done = checkpoint(&server, "events", "events/2025-01-01");
        assert_eq!((done["status"].as_str(), done["attempts"].as_i64()), (Some("completed"), Some(2)), "{done}");
        assert_eq!((done["completed_chunks"].as_i64(), done["files_merged"].as_i64()), (Some(3), Some(12)));
        assert!(done["last_error"].is_null(), "{done}");
        assert_eq!(file_count(&server, "events", "2025-01-01"), 3);
        assert_eq!(all_rows(&server, "events"), before, "{fail_point}");
        assert_disk_matches_catalog(&server, "events");
    }
}

#[test]
fn a_faulty_target_fails_each_attempt_until_max_attempts_then_an_operator_retries() {
    // Scheduled compaction every 200 ms; a read-back that never verifies.
    let config = "[lifecycle]\ngrace_ms = 0\nsweep_interval_ms = 100\n\
                  [lifecycle.compaction]\ninterval_ms = 200\nmin_files = 4\nchunk_files = 4\nmax_attempts = 2\n";
    let mut server =
        Server::start_with_env("compaction-faulty", config, &[("STRATA_FAILPOINTS", "compaction.read_back=corrupt")]);
    write_small_files(&server, "events", START, 0, 4, 2);
    let before = all_rows(&server, "events");
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let current = checkpoint(&server, "events", "events/2025-01-01");
        if current["attempts"] == 2 && current["status"] == "failed" {
            break current;
        }
        assert!(Instant::now() < deadline, "not retried up to max_attempts: {current}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(failed["last_error"].as_str().unwrap().contains("does not verify"), "{failed}");
    // Exhausted: later passes leave it alone.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(checkpoint(&server, "events", "events/2025-01-01")["attempts"], 2);
    assert_eq!(metric(&server, "strata_compaction_failures_total"), 2.0);
    // The unverified outputs were deleted; the inputs are untouched.
    assert_eq!(file_count(&server, "events", "2025-01-01"), 4);
    assert_disk_matches_catalog(&server, "events");
    assert_eq!(all_rows(&server, "events"), before);

    // The target is repaired; scheduled passes still wait for an operator.
    server.set_env(&[]);
    server.restart();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(checkpoint(&server, "events", "events/2025-01-01")["attempts"], 2);
    // A scheduled pass may be looking at the partition right now ("busy").
    let report = loop {
        let report = compact(&server, "events", json!({}));
        if report["partitions"][0]["outcome"] != "busy" {
            break report;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(report["partitions"][0]["outcome"], "completed", "{report}");
    let done = checkpoint(&server, "events", "events/2025-01-01");
    assert_eq!((done["status"].as_str(), done["attempts"].as_i64()), (Some("completed"), Some(3)), "{done}");
    assert_eq!(file_count(&server, "events", "2025-01-01"), 1);
    assert_eq!(all_rows(&server, "events"), before);
    assert_disk_matches_catalog(&server, "events");
}

#[test]
fn writes_and_flushes_continue_while_a_partition_is_compacted() {
    let server = Server::start("compaction-concurrent", CONFIG);
    write_small_files(&server, "events", START, 0, 8, 4);
    let url = server.url.clone();
    let writer = std::thread::spawn(move || {
        let client = crate::support::client();
        for i in 0..15i64 {
            let record = json!([{"time": START + (10_000 + i) * SECOND, "host": "w", "v": i as f64}]);
            let response = client.post(format!("{url}/v1/datasets/events/records")).body(record.to_string()).send();
            assert_eq!(response.unwrap().status(), 200);
            if i % 3 == 0 {
                assert_eq!(client.post(format!("{url}/v1/flush")).send().unwrap().status(), 200);
            }
        }
    });
    for _ in 0..4 {
        let report = compact(&server, "events", json!({"partition": "2025-01-01"}));
        let outcome = report["partitions"][0]["outcome"].as_str().unwrap().to_string();
        assert!(["completed", "nothing_to_do"].contains(&outcome.as_str()), "{report}");
    }
    writer.join().unwrap();
    let rows = all_rows(&server, "events");
    assert_eq!(rows.as_array().unwrap().len(), 8 * 4 + 15, "every row exactly once");
    server.flush();
    compact(&server, "events", json!({}));
    assert_eq!(all_rows(&server, "events"), rows);
    assert_disk_matches_catalog(&server, "events");
}

#[test]
fn a_move_that_gets_there_first_wins_and_the_moved_files_are_compacted_on_their_new_tier() {
    let tiering = "name = \"tiering\"\nkind = \"tiering\"\nplugin = \"builtin:tier-by-age\"\ndatasets = [\"events\"]\n\
                   [config]\nwarm_after = \"2d\"\n";
    let mut server = Server::start_with_files(
        "compaction-move",
        CONFIG,
        &[("STRATA_FAILPOINTS", "compaction.after_checkpoint")],
        &[("policies/tiering.toml", tiering.as_bytes())],
    );
    write_small_files(&server, "events", START, 0, 8, 3);
    let before = all_rows(&server, "events");
    // A job is planned (two chunks of the hot files), then the server dies.
    let _ = crate::support::client().post(format!("{}/v1/datasets/events/compact", server.url)).body("{}").send();
    assert!(!server.wait_exit().success());
    server.set_env(&[]);
    server.start_again();
    assert_eq!(checkpoint(&server, "events", "events/2025-01-01")["total_chunks"], 2);

    // The partition moves to warm before the job resumes: new file rows, old ones tombstoned.
    let (status, run) =
        server.post("/v1/policies/tiering/run", json!({"dataset": "events", "now": START + 5 * DAY}).to_string());
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["runs"][0]["executed"], 1, "{run}");
    // The resumed job finds none of its inputs live on hot: every chunk is skipped.
    let resumed = compact(&server, "events", json!({"partition": "2025-01-01"}));
    let report = &resumed["partitions"][0];
    assert_eq!(report["outcome"], "completed", "{resumed}");
    assert_eq!((report["chunks_merged"].as_u64(), report["chunks_skipped"].as_u64()), (Some(0), Some(2)));
    assert_eq!(report["checkpoint"]["skipped_chunks"], 2);
    assert_eq!(file_count(&server, "events", "2025-01-01"), 8);
    assert_eq!(all_rows(&server, "events"), before);

    // A new job compacts the moved files where they now are.
    let again = compact(&server, "events", json!({}));
    assert_eq!(again["partitions"][0]["outcome"], "completed", "{again}");
    assert_eq!(again["partitions"][0]["tier"], "warm");
    let day = partitions(&server, "events").into_iter().find(|p| p["period_label"] == "2025-01-01").unwrap();
    assert_eq!(day["tier"], "warm");
    let files = day["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert!(
        files.iter().all(|f| f["storage_target"] == "warm" && f["path"].as_str().unwrap().contains("/storage/warm/")),
        "{day}"
    );
    assert_eq!(all_rows(&server, "events"), before);
    assert_disk_matches_catalog(&server, "events");
}
