//! Faults and crashes with the cold tier in a bucket of a real S3-protocol
//! server (`moto_server`): the storage fault table aimed at the bucket, the
//! store killed in the middle of a move, the server killed during a
//! multipart upload and during a cache fill. Each ends with every row
//! exactly once and the catalog, the bucket and the cache in agreement.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::lifecycle::{DAY, START, all_rows, load, manifest, parquet_files, run, totals};
use crate::s3_lifecycle::{assert_bucket_matches_catalog, bucket_keys, cold_after_two_days, s3_config};
use crate::support::{MotoServer, Server, client, files_under, moto};

const HOUR: i64 = 3_600_000_000_000;
/// Days 0..=2 of six ended more than two days before.
const NOW: i64 = START + 5 * DAY + 12 * HOUR;
const COLD: &str = "[storage.tiers.cold]\ntarget = \"remote\"\n";

fn cold_on_s3(name: &str, moto: &MotoServer, bucket: &str, tiers: &str) -> Server {
    moto.create_bucket(bucket).unwrap();
    let tiering = cold_after_two_days();
    Server::start_with_files(
        name,
        &s3_config(moto, bucket, tiers),
        &[],
        &[("policies/tiering.toml", tiering.as_bytes())],
    )
}

fn tiers_of(server: &Server) -> Vec<String> {
    manifest(server).iter().map(|p| p["tier"].as_str().unwrap().to_string()).collect()
}

/// Each partition's files are all on its tier's target.
fn assert_one_tier_each(server: &Server) {
    for partition in manifest(server) {
        let target = if partition["tier"] == "cold" { "remote" } else { "hot" };
        let files = partition["files"].as_array().unwrap();
        assert!(!files.is_empty() && files.iter().all(|f| f["storage_target"] == target), "{partition}");
    }
}

/// Posts a run and expects the process to die of it.
fn run_to_death(server: &mut Server, policy: &str, now: i64) {
    let _ =
        client().post(format!("{}/v1/policies/{policy}/run", server.url)).body(json!({"now": now}).to_string()).send();
    assert!(!server.wait_exit().success(), "the server should have died");
}

/// The files of the cache directory but its lock.
fn cache_leftovers(server: &Server) -> Vec<String> {
    let files = files_under(&server.data_dir.join("cache"));
    files.iter().filter(|p| !p.ends_with("LOCK")).map(|p| p.display().to_string()).collect()
}

#[test]
fn a_move_into_a_bucket_survives_every_storage_fault_and_crash() {
    let moto = moto();
    let mut server = cold_on_s3("s3-fault-table", &moto, "faults", COLD);
    load(&server, 6);
    let before = all_rows(&server);
    // (fail points, the error every due partition reports, or None: the process dies)
    let faults: [(&str, Option<&str>); 8] = [
        ("storage.put.remote=error", Some("injected by fail point storage.put.remote")),
        ("storage.put.remote=short", Some("does not verify")),
        ("storage.put.remote=corrupt", Some("does not verify")),
        // The copy is sound, but it reads back corrupted.
        ("storage.get.remote=corrupt", Some("does not verify")),
        ("storage.get.hot=corrupt", Some("checksum")),
        ("storage.put.remote=abort", None),
        ("lifecycle.move.after_copy", None),
        // Last: the verified copies commit in one transaction, which stands.
        ("lifecycle.move.after_commit", None),
    ];
    for (failpoints, reported) in faults {
        server.set_env(&[("STRATA_FAILPOINTS", failpoints)]);
        server.restart();
        match reported {
            Some(needle) => {
                let report = run(&server, "tiering", json!({"now": NOW}));
                assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(0), Some(3)), "{report}");
                for entry in report["entries"].as_array().unwrap().iter().filter(|e| e["outcome"] == "failed") {
                    assert!(entry["error"].as_str().unwrap().contains(needle), "{failpoints}: {entry}");
                }
                assert!(tiers_of(&server).iter().all(|t| t == "hot"), "{failpoints}: nothing moved");
                // A refused copy is deleted at once.
                assert_eq!(bucket_keys(&moto, "faults"), Vec::<String>::new(), "{failpoints}");
                server.set_env(&[]);
                server.restart();
            }
            None => {
                run_to_death(&mut server, "tiering", NOW);
                server.set_env(&[]);
                server.start_again();
            }
        }
        assert_eq!(all_rows(&server), before, "{failpoints}: rows lost or doubled");
        assert_one_tier_each(&server);
        // A copy the crash left uncommitted is an orphan the start-up sweep deletes.
        assert_bucket_matches_catalog(&server, &moto, "faults");
    }
    let report = run(&server, "tiering", json!({"now": NOW}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_eq!(tiers_of(&server), ["cold", "cold", "cold", "hot", "hot", "hot"]);
    assert_eq!(all_rows(&server), before);
    assert_bucket_matches_catalog(&server, &moto, "faults");
    assert_eq!(bucket_keys(&moto, "faults").len(), 3);
}

#[test]
fn a_cache_fill_that_reads_short_or_fails_is_503_and_caches_nothing() {
    let moto = moto();
    let mut server = cold_on_s3("s3-fill-faults", &moto, "fills", COLD);
    load(&server, 6);
    let report = run(&server, "tiering", json!({"now": NOW}));
    assert_eq!(report["executed"].as_u64(), Some(3), "{report}");
    let body = json!({"time_range": {"start": START, "end": START + 7 * DAY}}).to_string();
    for failpoints in ["storage.get.remote=error", "storage.get.remote=short", "storage.get.remote=corrupt"] {
        server.set_env(&[("STRATA_FAILPOINTS", failpoints)]);
        server.restart();
        let (status, error) = server.post("/v1/datasets/metrics/query", body.clone());
        assert_eq!((status, &error["error"]["code"]), (503, &json!("storage_unavailable")), "{failpoints}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().contains("storage target remote"), "{error}");
        assert!(error.get("rows").is_none(), "no partial answer: {error}");
        assert_eq!(cache_leftovers(&server), Vec::<String>::new(), "{failpoints}: nothing cached");
    }
    server.set_env(&[]);
    server.restart();
    assert_eq!(totals(&server), (6, 15));
    assert_eq!(parquet_files(&server.data_dir.join("cache")).len(), 3);
}

/// The day index (from START) of each partition in `tier`.
fn days_in(server: &Server, tier: &str) -> Vec<i64> {
    let first = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    manifest(server)
        .iter()
        .filter(|p| p["tier"] == tier)
        .map(|p| {
            let label = p["period_label"].as_str().unwrap();
            (chrono::NaiveDate::parse_from_str(label, "%Y-%m-%d").unwrap() - first).num_days()
        })
        .collect()
}

/// Day `day` holds exactly its one row, `v` = `day` (a query of that day only).
fn assert_day(server: &Server, day: i64) {
    let body = json!({"time_range": {"start": START + day * DAY, "end": START + (day + 1) * DAY}});
    let (status, response) = server.post("/v1/datasets/metrics/query", body.to_string());
    assert_eq!(status, 200, "day {day}: {response}");
    let rows = response["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "day {day}: {response}");
    assert_eq!(rows[0]["v"].as_f64(), Some(day as f64), "day {day}: {response}");
}

/// moto keeps its objects in memory, so a restart empties it: what moved
/// before the outage is gone with it, and only the partitions whose copy
/// had not committed can be followed past the restart.
#[test]
fn a_store_killed_in_the_middle_of_a_move_loses_nothing_and_the_move_completes() {
    let mut moto = moto();
    let server = cold_on_s3("s3-killed-store", &moto, "killed", COLD);
    let days = 40;
    load(&server, days);
    // Days 0..=36 are due. A run copies its partitions a few at a time,
    // then commits every verified copy at once; the store dies once a
    // dozen objects are up.
    let now = START + (days - 1) * DAY + 12 * HOUR;
    let report = std::thread::scope(|scope| {
        let running = scope.spawn(|| run(&server, "tiering", json!({"now": now})));
        let deadline = Instant::now() + Duration::from_secs(30);
        while bucket_keys(&moto, "killed").len() < 12 {
            assert!(Instant::now() < deadline && !running.is_finished(), "the copies finished before the outage");
            std::thread::sleep(Duration::from_millis(2));
        }
        moto.stop();
        running.join().unwrap()
    });
    let (executed, failed) = (report["executed"].as_u64().unwrap(), report["failed"].as_u64().unwrap());
    assert!(executed >= 1 && failed >= 1 && executed + failed == 37, "{report}");
    assert_eq!(days_in(&server, "cold").len() as u64, executed, "exactly the executed moves committed");
    assert_one_tier_each(&server);
    // Each partition not moved is still hot with its row, with the store down.
    let stayed = days_in(&server, "hot");
    assert_eq!(stayed.len() as u64, failed + 3);
    for &day in &stayed {
        assert_day(&server, day);
    }

    moto.restart().unwrap();
    moto.create_bucket("killed").unwrap();
    std::thread::sleep(Duration::from_millis(500)); // past the retry backoff
    let report = run(&server, "tiering", json!({"now": now}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(failed), Some(0)), "{report}");
    assert_eq!(days_in(&server, "cold").len(), 37);
    assert_eq!(days_in(&server, "hot"), [37, 38, 39]);
    assert_one_tier_each(&server);
    assert_eq!(bucket_keys(&moto, "killed").len() as u64, failed, "one object per partition moved after the outage");
    for &day in &stayed {
        assert_day(&server, day);
    }
}

/// In-progress multipart uploads of `bucket` (ListMultipartUploads).
fn uploads_in_progress(moto: &MotoServer, bucket: &str) -> usize {
    let body = reqwest::blocking::get(format!("{}/{bucket}?uploads", moto.endpoint())).unwrap().text().unwrap();
    body.matches("<UploadId>").count()
}

/// Journal entries of unfinished uploads under the data directory.
fn journal_entries(server: &Server) -> usize {
    files_under(&server.data_dir).iter().filter(|p| p.extension().is_some_and(|e| e == "upload")).count()
}

/// `rows` rows into day 0, each with 48 characters of noise, so the day's
/// file is several MiB however it is compressed. Returns the sum of `v`.
fn load_noise(server: &Server, rows: i64) -> i64 {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in (0..rows).collect::<Vec<_>>().chunks(40_000) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                let noise: String = (0..48)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        ALPHABET[(state % 64) as usize] as char
                    })
                    .collect();
                json!({"time": START + i * 100_000_000, "v": i, "noise": noise})
            })
            .collect();
        let (status, body) = server.post("/v1/datasets/metrics/records", Value::Array(records).to_string());
        assert_eq!(status, 200, "{body}");
    }
    server.flush();
    (0..rows).sum()
}

#[test]
fn a_kill_during_a_multipart_upload_or_a_cache_fill_leaves_nothing_behind() {
    let moto = moto();
    let parts = "multipart_threshold_bytes = 5242880\npart_bytes = 5242880\n";
    let mut server = cold_on_s3("s3-kill-upload", &moto, "parts", &format!("{parts}{COLD}"));
    let rows = 200_000;
    let sum = load_noise(&server, rows);
    assert_eq!(totals(&server), (rows, sum));
    let bytes = manifest(&server)[0]["files"][0]["bytes"].as_u64().unwrap();
    assert!(bytes > 5 * 1024 * 1024, "{bytes} bytes: too small for parts");

    // Killed while the parts go up: once the upload exists and is
    // journaled (a kill between the store creating the upload and the
    // journal write is the one crash the journal cannot cover; see the
    // README's bucket lifecycle rule).
    let url = format!("{}/v1/policies/tiering/run", server.url);
    let running = std::thread::spawn(move || client().post(url).body(json!({"now": NOW}).to_string()).send());
    let deadline = Instant::now() + Duration::from_secs(30);
    while uploads_in_progress(&moto, "parts") == 0 || journal_entries(&server) == 0 {
        assert!(Instant::now() < deadline && !running.is_finished(), "no upload was seen in progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill9();
    let _ = running.join();
    assert_eq!(uploads_in_progress(&moto, "parts"), 1);
    assert_eq!(journal_entries(&server), 1, "the upload is journaled");
    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    while uploads_in_progress(&moto, "parts") > 0 || journal_entries(&server) > 0 {
        assert!(Instant::now() < deadline, "the interrupted upload is not aborted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tiers_of(&server), ["hot"]);
    assert_eq!(totals(&server), (rows, sum));
    assert_bucket_matches_catalog(&server, &moto, "parts");
    assert_eq!(bucket_keys(&moto, "parts"), Vec::<String>::new());
    let report = run(&server, "tiering", json!({"now": NOW}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(1), Some(0)), "{report}");
    assert_eq!(bucket_keys(&moto, "parts").len(), 1);
    assert_eq!((uploads_in_progress(&moto, "parts"), journal_entries(&server)), (0, 0));

    // Killed while a query fills the cache with that file.
    let url = format!("{}/v1/sql", server.url);
    let query = std::thread::spawn(move || client().post(url).body("SELECT count(*) FROM metrics").send());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cache_leftovers(&server).iter().any(|f| f.contains("/.tmp-")) {
        assert!(Instant::now() < deadline && !query.is_finished(), "no fill was seen in progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill9();
    let _ = query.join();
    server.start_again();
    let leftovers = cache_leftovers(&server);
    assert!(!leftovers.iter().any(|f| f.contains("/.tmp-")), "{leftovers:?}");
    assert_eq!(totals(&server), (rows, sum));
    assert_eq!(parquet_files(&server.data_dir.join("cache")).len(), 1);
}
