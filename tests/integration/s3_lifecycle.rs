//! The lifecycle end to end with tiers in a bucket of a real S3-protocol
//! server (`moto_server`): partitions move cold into the bucket, are queried
//! through the read cache, archived and restored; an archive tier in the
//! bucket; a bucket that was never created; the cache evicting while
//! queries run.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata::storage::{S3Target, StorageTarget};

use crate::lifecycle::{DAY, START, TIERING, all_rows, load, manifest, run, totals};
use crate::support::{MotoServer, Server, moto, remote_target_toml, temp_dir};

const SECRET: &str = strata::cli::bench_storage::MOTO_SECRET_ACCESS_KEY;
const HOUR: i64 = 3_600_000_000_000;
/// Days 0..=2 of six ended more than two days before.
const NOW: i64 = START + 5 * DAY + 12 * HOUR;
const ARCHIVAL: &str = "name = \"archival\"\nkind = \"archival\"\nplugin = \"builtin:archive-after\"\ndatasets = [\"metrics\"]\n[config]\nafter = \"2d\"\ndelete_source_after = true\n";

/// Runs only when asked, sweeps superseded copies at once, retries a
/// failed partition after 200 ms, and declares
/// target `remote` on `bucket` of `moto`; `tiers` places tiers on it.
pub(crate) fn s3_config(moto: &MotoServer, bucket: &str, tiers: &str) -> String {
    format!(
        "[lifecycle]\nscheduler = false\ngrace_ms = 0\norphan_grace_ms = 0\nsweep_interval_ms = 100\nretry_base_ms = 200\n\
         {}{tiers}",
        remote_target_toml(moto, bucket),
    )
}

pub(crate) fn cold_after_two_days() -> String {
    TIERING.replace("warm_after = \"30d\"\ncold_after = \"180d\"", "cold_after = \"2d\"")
}

/// The keys of every object under the `strata` prefix of `bucket`.
pub(crate) fn bucket_keys(moto: &MotoServer, bucket: &str) -> Vec<String> {
    let target = S3Target::open("check", &moto.settings(bucket, "strata"), &temp_dir("s3-journal")).unwrap();
    target.list("").unwrap().into_iter().map(|o| o.key.to_string()).collect()
}

/// Waits until the Parquet objects of `bucket` are exactly the remote files
/// the catalog references (the sweeper deletes superseded copies).
pub(crate) fn assert_bucket_matches_catalog(server: &Server, moto: &MotoServer, bucket: &str) {
    let referenced = || -> Vec<String> {
        let mut keys: Vec<String> = manifest(server)
            .iter()
            .flat_map(|p| p["files"].as_array().unwrap().clone())
            .filter(|f| f["storage_target"] == "remote")
            .map(|f| f["object_key"].as_str().unwrap().to_string())
            .collect();
        keys.sort();
        keys
    };
    let stored = || -> Vec<String> {
        let mut keys: Vec<String> = bucket_keys(moto, bucket).into_iter().filter(|k| k.ends_with(".parquet")).collect();
        keys.sort();
        keys
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored() != referenced() {
        assert!(Instant::now() < deadline, "in the bucket {:?}, referenced {:?}", stored(), referenced());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tiers_of(server: &Server) -> Vec<String> {
    manifest(server).iter().map(|p| p["tier"].as_str().unwrap().to_string()).collect()
}

fn restore(server: &Server, day: &str, tier: &str) {
    let path = format!("/v1/datasets/metrics/partitions/{day}/restore");
    let (status, body) = server.post(&path, json!({"tier": tier}).to_string());
    assert_eq!((status, body["tier"].as_str()), (200, Some(tier)), "{body}");
}

#[test]
fn partitions_go_cold_into_a_bucket_answer_alike_and_come_back_to_hot() {
    let moto = moto();
    moto.create_bucket("round-trip").unwrap();
    let config = s3_config(&moto, "round-trip", "[storage.tiers.cold]\ntarget = \"remote\"\n");
    let tiering = cold_after_two_days();
    let server = Server::start_with_files(
        "s3-round-trip",
        &config,
        &[],
        &[("policies/tiering.toml", tiering.as_bytes()), ("policies/archival.toml", ARCHIVAL.as_bytes())],
    );
    load(&server, 6);
    let before = all_rows(&server);
    assert_eq!(totals(&server), (6, 15));

    let report = run(&server, "tiering", json!({"now": NOW}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(3), Some(0)), "{report}");
    assert_eq!(tiers_of(&server), ["cold", "cold", "cold", "hot", "hot", "hot"]);
    assert_bucket_matches_catalog(&server, &moto, "round-trip");
    assert_eq!(bucket_keys(&moto, "round-trip").len(), 3);
    // A cold cache, then a warm one: the same answer as before the move.
    let cache = server.data_dir.join("cache");
    assert!(crate::lifecycle::parquet_files(&cache).is_empty());
    assert_eq!(all_rows(&server), before, "through a cold cache");
    assert_eq!(crate::lifecycle::parquet_files(&cache).len(), 3);
    assert_eq!(all_rows(&server), before, "through a warm cache");

    // Archived (locally) and restored to hot: the bucket is left empty.
    let report = run(&server, "archival", json!({"now": NOW}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(3), Some(0)), "{report}");
    assert_eq!(all_rows(&server), before);
    for day in ["2025-01-01", "2025-01-02", "2025-01-03"] {
        restore(&server, day, "hot");
    }
    assert!(tiers_of(&server).iter().all(|t| t == "hot"), "{:?}", manifest(&server));
    assert_eq!(all_rows(&server), before, "the same rows back on hot");
    assert_eq!(totals(&server), (6, 15));
    assert_bucket_matches_catalog(&server, &moto, "round-trip");
    assert_eq!(bucket_keys(&moto, "round-trip"), Vec::<String>::new(), "every object swept");
}

#[test]
fn an_archive_tier_in_a_bucket_archives_serves_and_restores() {
    let moto = moto();
    moto.create_bucket("vault").unwrap();
    let config = s3_config(&moto, "vault", "[storage.tiers.archived]\ntarget = \"remote\"\n");
    let mut server =
        Server::start_with_files("s3-archive", &config, &[], &[("policies/archival.toml", ARCHIVAL.as_bytes())]);
    load(&server, 5);
    let before = all_rows(&server);
    // Days 0 and 1 ended more than two days before.
    let report = run(&server, "archival", json!({"now": START + 4 * DAY + 12 * HOUR}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(2), Some(0)), "{report}");
    let archived: Vec<Value> = manifest(&server).into_iter().filter(|p| p["tier"] == "archived").collect();
    assert_eq!(archived.len(), 2);
    let keys = bucket_keys(&moto, "vault");
    for partition in &archived {
        let files = partition["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{partition}");
        assert_eq!(files[0]["storage_target"], "remote", "{partition}");
        let key = files[0]["object_key"].as_str().unwrap();
        assert!(key.contains("/archive-") && keys.iter().any(|k| k == key), "{key} in {keys:?}");
    }
    let manifests = keys.iter().filter(|k| k.ends_with(".manifest.json")).count();
    assert_eq!((keys.len(), manifests), (4, 2), "an archive and its manifest per partition: {keys:?}");
    assert_eq!(all_rows(&server), before, "archives are read through the cache");
    server.restart();
    assert_eq!(all_rows(&server), before, "and after a restart");

    restore(&server, "2025-01-01", "cold");
    restore(&server, "2025-01-02", "hot");
    assert_eq!(tiers_of(&server), ["cold", "hot", "hot", "hot", "hot"]);
    assert_eq!(all_rows(&server), before);
    assert_eq!(totals(&server), (5, 10));
    // The archives outlive the restore and the sweep.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(bucket_keys(&moto, "vault"), keys);
}

#[test]
fn a_bucket_never_created_fails_each_move_naming_it_and_shows_unreachable() {
    let moto = moto();
    let config = s3_config(&moto, "never-made", "[storage.tiers.cold]\ntarget = \"remote\"\n");
    let tiering = cold_after_two_days();
    let server =
        Server::start_with_files("s3-no-bucket", &config, &[], &[("policies/tiering.toml", tiering.as_bytes())]);
    load(&server, 6);
    let report = run(&server, "tiering", json!({"now": NOW}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(0), Some(3)), "{report}");
    for entry in report["entries"].as_array().unwrap().iter().filter(|e| e["outcome"] == "failed") {
        let error = entry["error"].as_str().unwrap();
        assert!(error.contains("never-made") && !error.contains(SECRET), "{entry}");
    }
    assert!(tiers_of(&server).iter().all(|t| t == "hot"));
    assert_eq!(totals(&server), (6, 15), "nothing lost");
    let deadline = Instant::now() + Duration::from_secs(30);
    let remote = loop {
        let (status, targets) = server.get("/v1/storage-targets");
        assert_eq!(status, 200);
        let remote =
            targets["storage_targets"].as_array().unwrap().iter().find(|t| t["name"] == "remote").unwrap().clone();
        if remote["reachable"] == false || Instant::now() > deadline {
            break remote;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(remote["reachable"], false, "{remote}");
    assert!(remote["unreachable_reason"].as_str().unwrap().contains("never-made"), "{remote}");
    assert!(!server.log().contains(SECRET));
}

/// Rows of the day `day` (one, `v` = `day`) through a structured query.
fn one_day(server: &Server, day: i64) -> Value {
    let body = json!({"time_range": {"start": START + day * DAY, "end": START + (day + 1) * DAY}});
    let (status, response) = server.post("/v1/datasets/metrics/query", body.to_string());
    assert_eq!(status, 200, "day {day}: {response}");
    response["rows"].clone()
}

#[test]
fn a_cache_smaller_than_two_files_evicts_while_queries_run_and_both_answer() {
    let moto = moto();
    moto.create_bucket("small-cache").unwrap();
    let config = s3_config(&moto, "small-cache", "[storage.tiers.cold]\ntarget = \"remote\"\n");
    let tiering = cold_after_two_days();
    let mut server =
        Server::start_with_files("s3-evict", &config, &[], &[("policies/tiering.toml", tiering.as_bytes())]);
    load(&server, 6);
    let report = run(&server, "tiering", json!({"now": NOW}));
    assert_eq!(report["executed"].as_u64(), Some(3), "{report}");
    let sizes: Vec<u64> = manifest(&server)
        .iter()
        .flat_map(|p| p["files"].as_array().unwrap().clone())
        .filter(|f| f["storage_target"] == "remote")
        .map(|f| f["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), 3);
    let (smallest, largest) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
    // Room for any one file, never for two.
    let bytes_max = largest + smallest / 2;
    assert!(bytes_max < smallest * 2, "{sizes:?}");
    std::fs::write(server.root().join("strata.toml"), format!("{config}[storage.cache]\nbytes_max = {bytes_max}\n"))
        .unwrap();
    server.restart();

    let expected: Vec<Value> = (0..3).map(|d| one_day(&server, d)).collect();
    for (day, rows) in expected.iter().enumerate() {
        assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
        assert_eq!(rows[0]["v"].as_f64(), Some(day as f64), "{rows}");
    }
    let server = &server;
    for round in 0..4 {
        std::thread::scope(|scope| {
            let threads: Vec<_> = [round % 3, (round + 1) % 3]
                .into_iter()
                .map(|day| scope.spawn(move || (day, one_day(server, day as i64))))
                .collect();
            for thread in threads {
                let (day, rows) = thread.join().unwrap();
                assert_eq!(rows, expected[day], "round {round}, day {day}");
            }
        });
    }
    let metrics = server.get_text("/metrics");
    let evictions = metrics.lines().find(|l| l.starts_with("strata_cache_evictions_total ")).unwrap();
    assert!(evictions.rsplit(' ').next().unwrap().parse::<u64>().unwrap() > 0, "{metrics}");
    assert_eq!(totals(server), (6, 15));
}

#[test]
fn compaction_merges_the_files_of_a_partition_in_a_bucket() {
    let moto = moto();
    moto.create_bucket("merge").unwrap();
    let tiers = "[storage.tiers.cold]\ntarget = \"remote\"\n[lifecycle.compaction]\nmin_files = 4\nchunk_files = 4\n";
    let config = s3_config(&moto, "merge", tiers);
    let tiering = cold_after_two_days();
    let server = Server::start_with_files("s3-compact", &config, &[], &[("policies/tiering.toml", tiering.as_bytes())]);
    // Four flushes, each one row into each of six days: four files a day.
    for flush in 0..4 {
        let records: Vec<Value> =
            (0..6).map(|d| json!({"time": START + d * DAY + (flush + 1) * HOUR, "v": d * 10 + flush})).collect();
        let (status, body) = server.post("/v1/datasets/metrics/records", Value::Array(records).to_string());
        assert_eq!(status, 200, "{body}");
        server.flush();
    }
    let before = all_rows(&server);
    let expected = (24, (0..6).map(|d| 4 * d * 10 + 6).sum::<i64>());
    assert_eq!(totals(&server), expected);
    let report = run(&server, "tiering", json!({"now": NOW}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(3), Some(0)), "{report}");
    assert_bucket_matches_catalog(&server, &moto, "merge");
    assert_eq!(bucket_keys(&moto, "merge").len(), 12, "four objects for each cold day");

    let (status, done) = server.post("/v1/datasets/metrics/compact", "{}");
    assert_eq!(status, 200, "{done}");
    for partition in manifest(&server) {
        let files = partition["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{partition}");
        let target = if partition["tier"] == "cold" { "remote" } else { "hot" };
        assert_eq!(files[0]["storage_target"], target, "{partition}");
    }
    assert_eq!(all_rows(&server), before, "the same rows from the merged objects");
    assert_eq!(totals(&server), expected);
    assert_bucket_matches_catalog(&server, &moto, "merge");
    assert_eq!(bucket_keys(&moto, "merge").len(), 3, "the merged inputs are swept");
}
