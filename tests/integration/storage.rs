//! Storage targets against the real binary: tiers on targets named in TOML,
//! re-encoding on arrival, `GET /v1/storage-targets`, and faults injected at
//! every step of a move, an archive and a retention delete — a storage
//! operation that errors, writes short or corrupts, or a crash — each
//! followed by a restart that must find every row, and exactly the files
//! the catalog references.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::lifecycle::{
    DAY, RETENTION, START, TIERING, all_rows, load, manifest, parquet_files, referenced_files, run, totals,
};
use crate::support::{Server, client};

const HOUR: i64 = 3_600_000_000_000;

/// The config of every test here: runs only when asked, superseded files
/// swept within 100 ms.
const LIFECYCLE: &str = "[lifecycle]\nscheduler = false\ngrace_ms = 0\norphan_grace_ms = 0\nsweep_interval_ms = 100\n";

fn targets(server: &Server) -> Vec<Value> {
    let (status, body) = server.get("/v1/storage-targets");
    assert_eq!(status, 200, "{body}");
    body["storage_targets"].as_array().unwrap().clone()
}

fn target(server: &Server, name: &str) -> Value {
    targets(server).into_iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no target {name}"))
}

/// The catalog and the disk agree: every live file exists with the size and
/// CRC32C the catalog records, each on its tier's directory, every Parquet
/// file on disk is live in the catalog (waiting for the sweeper to delete
/// superseded copies), every archive manifest belongs to an archived
/// partition, and no temporary file is left.
fn assert_catalog_matches_disk(server: &Server, context: &str) {
    let storage = server.data_dir.join("storage");
    let deadline = Instant::now() + Duration::from_secs(20);
    while parquet_files(&storage) != referenced_files(server) {
        assert!(
            Instant::now() < deadline,
            "{context}: on disk {:?}, referenced {:?}",
            parquet_files(&storage),
            referenced_files(server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let partitions = manifest(server);
    for partition in &partitions {
        let directory = match partition["tier"].as_str().unwrap() {
            "archived" => "archive",
            tier => tier,
        };
        for file in partition["files"].as_array().unwrap() {
            let path = file["path"].as_str().unwrap();
            assert!(path.contains(&format!("/storage/{directory}/")), "{context}: {partition}");
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(bytes.len() as i64, file["bytes"].as_i64().unwrap(), "{context}: {path}");
            assert_eq!(format!("{:08x}", crc32c::crc32c(&bytes)), file["checksum_crc32c"], "{context}: {path}");
        }
    }
    let files: Vec<String> = crate::support::files_under(&storage).iter().map(|f| f.display().to_string()).collect();
    assert!(!files.iter().any(|f| f.contains("/.tmp-")), "{context}: temporaries left: {files:?}");
    let manifests = files.iter().filter(|f| f.ends_with(".manifest.json")).count();
    let archived = partitions.iter().filter(|p| p["tier"] == "archived").count();
    assert_eq!(manifests, archived, "{context}: orphan manifests: {files:?}");
}

fn row_groups(path: &Path) -> usize {
    use parquet::file::reader::FileReader;
    let file = std::fs::File::open(path).unwrap();
    parquet::file::reader::SerializedFileReader::new(file).unwrap().metadata().num_row_groups()
}

/// A fault to inject, and how the run shows it.
struct Fault {
    /// `STRATA_FAILPOINTS`.
    failpoints: &'static str,
    /// `Some(text)`: the run reports every due partition failed, with an
    /// error containing `text`. `None`: the process aborts.
    reported: Option<&'static str>,
}

/// Runs `policy` at `now` under each fault in turn. After each, the server
/// restarts without faults and must hold exactly the rows it held before
/// and exactly the catalog's files. Then a run without faults completes:
/// `due` partitions end up in `tier`.
fn survive_every_fault(server: &mut Server, policy: &str, now: i64, due: usize, tier: &str, faults: &[Fault]) {
    let before = all_rows(server);
    for fault in faults {
        let context = fault.failpoints;
        server.set_env(&[("STRATA_FAILPOINTS", fault.failpoints)]);
        server.restart();
        match fault.reported {
            Some(needle) => {
                let report = run(server, policy, json!({"now": now}));
                assert_eq!(
                    (report["executed"].as_u64(), report["failed"].as_u64()),
                    (Some(0), Some(due as u64)),
                    "{context}: {report}"
                );
                for entry in report["entries"].as_array().unwrap() {
                    let error = entry["error"].as_str().unwrap_or_default();
                    assert!(error.contains(needle), "{context}: {entry}");
                }
                assert!(manifest(server).iter().all(|p| p["tier"] == "hot"), "{context}: nothing moved");
                // A failed copy is removed at once, not left for the next start.
                assert_catalog_matches_disk(server, context);
                server.set_env(&[]);
                server.restart();
            }
            None => {
                let _ = client()
                    .post(format!("{}/v1/policies/{policy}/run", server.url))
                    .body(json!({"now": now}).to_string())
                    .send();
                assert!(!server.wait_exit().success(), "{context}: the fail point should have aborted the server");
                server.set_env(&[]);
                server.start_again();
            }
        }
        assert_eq!(all_rows(server), before, "{context}: rows lost or doubled");
        assert_catalog_matches_disk(server, context);
    }
    let report = run(server, policy, json!({"now": now}));
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(manifest(server).iter().filter(|p| p["tier"] == tier).count(), due, "{report}");
    assert_eq!(all_rows(server), before);
    assert_catalog_matches_disk(server, "the run without faults");
}

#[test]
fn a_move_survives_every_storage_fault_and_crash_and_completes_without_them() {
    let tiering = TIERING.replace("warm_after = \"30d\"\ncold_after = \"180d\"", "warm_after = \"2d\"");
    let mut server =
        Server::start_with_files("faults-move", LIFECYCLE, &[], &[("policies/tiering.toml", tiering.as_bytes())]);
    load(&server, 10);
    // Days 0..=6 ended more than two days before now.
    let now = START + 9 * DAY + 12 * HOUR;
    let faults = [
        Fault { failpoints: "storage.put.warm=error", reported: Some("injected by fail point storage.put.warm") },
        Fault { failpoints: "storage.put.warm=short", reported: Some("does not verify") },
        Fault { failpoints: "storage.put.warm=corrupt", reported: Some("does not verify") },
        // The copy is sound, but it reads back corrupted.
        Fault { failpoints: "storage.get.warm=corrupt", reported: Some("does not verify") },
        // The source is read through the fault (staged, not in place) and refused.
        Fault { failpoints: "storage.get.hot=corrupt", reported: Some("checksum") },
        Fault { failpoints: "storage.put.warm=abort", reported: None },
        Fault { failpoints: "lifecycle.move.after_copy", reported: None },
        // Last: after this one the first partition has moved.
        Fault { failpoints: "lifecycle.move.after_commit", reported: None },
    ];
    survive_every_fault(&mut server, "tiering", now, 7, "warm", &faults);
}

#[test]
fn an_archive_survives_every_storage_fault_and_crash_and_completes_without_them() {
    let archival = "name = \"archival\"\nkind = \"archival\"\nplugin = \"builtin:archive-after\"\ndatasets = [\"metrics\"]\n[config]\nafter = \"2d\"\ndelete_source_after = true\n";
    let mut server =
        Server::start_with_files("faults-archive", LIFECYCLE, &[], &[("policies/archival.toml", archival.as_bytes())]);
    load(&server, 5);
    // Days 0 and 1 ended more than two days before now.
    let now = START + 4 * DAY + 12 * HOUR;
    let faults = [
        Fault { failpoints: "storage.put.archive=error", reported: Some("injected by fail point storage.put.archive") },
        Fault { failpoints: "storage.put.archive=short", reported: Some("does not verify") },
        Fault { failpoints: "storage.put.archive=corrupt", reported: Some("does not verify") },
        Fault { failpoints: "lifecycle.archive.after_write", reported: None },
        Fault { failpoints: "lifecycle.archive.after_commit", reported: None },
    ];
    survive_every_fault(&mut server, "archival", now, 2, "archived", &faults);
}

/// Rows and the sum of `v` left once days `0..=last_deleted` of `days` are gone.
fn remaining(days: i64, last_deleted: i64) -> (i64, i64) {
    (days - last_deleted - 1, (last_deleted + 1..days).sum())
}

#[test]
fn a_retention_delete_survives_sweep_faults_and_crashes() {
    let retention = RETENTION.replace("max_age = \"400d\"", "max_age = \"3d\"");
    let config = format!("{LIFECYCLE}min_retention_ms = 0\nmax_delete_fraction = 1.0\n");
    let mut server =
        Server::start_with_files("faults-delete", &config, &[], &[("policies/retention.toml", retention.as_bytes())]);
    let days = 8;
    load(&server, days);
    // At `now(k)` days 0..=1+k have ended more than three days before.
    let now = |k: i64| START + (5 + k) * DAY + 12 * HOUR;
    let tombstoned = |server: &Server| target(server, "hot")["tombstoned_files"].as_i64().unwrap();

    // The sweeper cannot delete: the run still commits (deletes only
    // tombstone), the failure is counted, the files wait on disk.
    server.set_env(&[("STRATA_FAILPOINTS", "storage.delete.hot=error")]);
    server.restart();
    assert_eq!(target(&server, "hot")["injected_faults"], json!(["storage.delete.hot=error"]));
    let report = run(&server, "retention", json!({"now": now(0)}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(2), Some(0)), "{report}");
    assert_eq!(totals(&server), remaining(days, 1));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.get_text("/metrics").contains("strata_lifecycle_sweep_failures_total") {
        assert!(Instant::now() < deadline, "the failed sweep is not reported");
        std::thread::sleep(Duration::from_millis(50));
    }
    let on_disk = parquet_files(&server.data_dir.join("storage"));
    assert!(on_disk.is_superset(&referenced_files(&server)));
    assert_eq!(on_disk.len() as i64, referenced_files(&server).len() as i64 + tombstoned(&server));
    assert_eq!(tombstoned(&server), 2);
    server.set_env(&[]);
    server.restart();
    assert_eq!(totals(&server), remaining(days, 1));
    assert_catalog_matches_disk(&server, "after the failed sweeps");
    assert_eq!(tombstoned(&server), 0);

    // A crash right after the tombstone commit: the delete stands.
    server.set_env(&[("STRATA_FAILPOINTS", "lifecycle.delete.after_commit")]);
    server.restart();
    let _ = client()
        .post(format!("{}/v1/policies/retention/run", server.url))
        .body(json!({"now": now(1)}).to_string())
        .send();
    assert!(!server.wait_exit().success(), "the fail point should have aborted the server");
    server.set_env(&[]);
    server.start_again();
    assert_eq!(totals(&server), remaining(days, 2));
    assert_catalog_matches_disk(&server, "lifecycle.delete.after_commit");

    // A crash between deleting a file and forgetting it: the next sweep
    // finds the object gone and forgets the row.
    server.set_env(&[("STRATA_FAILPOINTS", "lifecycle.sweep.after_delete")]);
    server.restart();
    let _ = client()
        .post(format!("{}/v1/policies/retention/run", server.url))
        .body(json!({"now": now(2)}).to_string())
        .send();
    assert!(!server.wait_exit().success(), "the fail point should have aborted the server");
    server.set_env(&[]);
    server.start_again();
    assert_eq!(totals(&server), remaining(days, 3));
    assert_catalog_matches_disk(&server, "lifecycle.sweep.after_delete");
    assert_eq!(tombstoned(&server), 0);

    // Without faults the next run deletes the next day.
    let report = run(&server, "retention", json!({"now": now(3)}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(1), Some(0)), "{report}");
    assert_eq!(totals(&server), remaining(days, 4));
    assert_catalog_matches_disk(&server, "the run without faults");
}

#[test]
fn tiers_use_the_targets_named_in_toml_and_cold_files_are_reencoded_on_arrival() {
    let config = format!(
        "{LIFECYCLE}\
         [storage.targets.fast]\nkind = \"local\"\npath = \"fast-disk\"\n\
         [storage.targets.big-disk]\npath = \"big\"\n\
         [storage.tiers.warm]\ntarget = \"fast\"\n\
         [storage.tiers.cold]\ntarget = \"big-disk\"\nzstd_level = 9\nrow_group_rows_max = 2\n"
    );
    let tiering =
        TIERING.replace("warm_after = \"30d\"\ncold_after = \"180d\"", "warm_after = \"2d\"\ncold_after = \"5d\"");
    let mut server =
        Server::start_with_files("named-targets", &config, &[], &[("policies/tiering.toml", tiering.as_bytes())]);
    // Six rows a day, so two-row groups make a different file.
    let records: Vec<Value> =
        (0..60).map(|i| json!({"time": START + (i / 6) * DAY + (i % 6) * HOUR, "v": i / 6})).collect();
    assert_eq!(server.post("/v1/datasets/metrics/records", Value::Array(records).to_string()).0, 200);
    server.flush();
    let before = all_rows(&server);
    let original: Vec<Value> = manifest(&server).iter().map(|p| p["files"][0].clone()).collect();
    let now = START + 9 * DAY + 12 * HOUR;
    let report = run(&server, "tiering", json!({"now": now}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(7), Some(0)), "{report}");

    let partitions = manifest(&server);
    let tiers: Vec<&str> = partitions.iter().map(|p| p["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["cold", "cold", "cold", "cold", "warm", "warm", "warm", "hot", "hot", "hot"]);
    for (partition, original) in partitions.iter().zip(&original) {
        let files = partition["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{partition}");
        let file = &files[0];
        let path = file["path"].as_str().unwrap();
        assert_eq!(file["rows"], original["rows"]);
        match partition["tier"].as_str().unwrap() {
            // Warm has no encoding: a byte copy under the same key.
            "warm" => {
                assert!(path.starts_with(&server.data_dir.join("fast-disk").display().to_string()), "{path}");
                assert_eq!(
                    (&file["object_key"], &file["checksum_crc32c"]),
                    (&original["object_key"], &original["checksum_crc32c"])
                );
            }
            // Cold re-encodes on arrival: a new file, with its own key and checksum.
            "cold" => {
                assert!(path.starts_with(&server.data_dir.join("big").display().to_string()), "{path}");
                assert_eq!(file["storage_target"], "big-disk");
                assert_ne!(file["object_key"], original["object_key"]);
                assert_ne!(file["checksum_crc32c"], original["checksum_crc32c"]);
                assert_eq!(row_groups(Path::new(path)), 3, "six rows in groups of at most two");
            }
            _ => assert!(path.contains("/storage/hot/"), "{path}"),
        }
        if partition["tier"] != "cold" {
            assert_eq!(row_groups(Path::new(path)), 1, "{path}");
        }
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(
            format!("{:08x}", crc32c::crc32c(&bytes)),
            file["checksum_crc32c"],
            "the catalog has the new checksum"
        );
        assert_eq!(bytes.len() as i64, file["bytes"].as_i64().unwrap());
    }
    assert_eq!(all_rows(&server), before, "the same rows, wherever they are");

    let listed = targets(&server);
    let names: Vec<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["archive", "big-disk", "cold", "fast", "hot", "warm"]);
    let fast = target(&server, "fast");
    assert_eq!((fast["kind"].as_str(), fast["files"].as_i64()), (Some("local"), Some(3)), "{fast}");
    assert!(fast["location"].as_str().unwrap().ends_with("/data/fast-disk"), "{fast}");
    assert_eq!(fast["tiers"], json!([{"tier": "warm", "encoding": null}]));
    let big = target(&server, "big-disk");
    assert_eq!(big["tiers"], json!([{"tier": "cold", "encoding": {"zstd_level": 9, "row_group_rows_max": 2}}]));
    assert_eq!(big["files"], 4);
    assert!(big["bytes"].as_i64().unwrap() > 0);
    assert_eq!(target(&server, "hot")["tiers"], json!([{"tier": "hot", "encoding": null}]));
    assert_eq!(
        (target(&server, "warm")["tiers"].clone(), target(&server, "warm")["files"].clone()),
        (json!([]), json!(0))
    );
    assert_eq!(
        target(&server, "archive")["tiers"],
        json!([{"tier": "archived", "encoding": {"zstd_level": 9, "row_group_rows_max": 1048576}}])
    );
    assert!(listed.iter().all(|t| t.get("injected_faults").is_none()));
    // The superseded hot copies are swept; only live files remain anywhere.
    let deadline = Instant::now() + Duration::from_secs(20);
    while parquet_files(&server.data_dir) != referenced_files(&server) {
        assert!(Instant::now() < deadline, "unreferenced files remain");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Files on a target the configuration no longer names would be lost to
    // queries: the server refuses to start and says which target.
    server.kill9();
    let without = server.root().join("without-big-disk.toml");
    std::fs::write(&without, LIFECYCLE).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&without)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("storage target \"big-disk\", which is not configured"), "{stderr}");
    // Restored configuration: everything is where it was.
    server.start_again();
    assert_eq!(all_rows(&server), before);
}

#[test]
fn a_bad_fail_point_or_storage_configuration_refuses_to_start() {
    let root = crate::support::temp_dir("bad-storage");
    let config = root.join("strata.toml");
    let start = |toml: &str, failpoints: &str| {
        std::fs::write(&config, toml).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(root.join("data"))
            .env("STRATA_FAILPOINTS", failpoints)
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let stderr = start("[storage.tiers.cold]\ntarget = \"nowhere\"\n", "");
    assert!(stderr.contains("storage.tiers.cold.target = \"nowhere\""), "{stderr}");
    let stderr = start("[storage.targets.x]\npath = \"storage/hot/x\"\n", "");
    assert!(stderr.contains("share or nest"), "{stderr}");
    let stderr = start("", "storage.put.warm=explode");
    assert!(stderr.contains("STRATA_FAILPOINTS") && stderr.contains("explode"), "{stderr}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn the_start_up_sweep_keeps_unreferenced_objects_younger_than_the_grace_period() {
    let config = "[lifecycle]\nscheduler = false\norphan_grace_ms = 600000\n";
    let mut server = Server::start("orphan-grace", config);
    let warm = server.data_dir.join("storage/warm");
    let place = |relative: &str, age: Duration| {
        let path = warm.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"not referenced").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age).unwrap();
        path
    };
    let old = place("data/9/9/old.parquet", Duration::from_secs(2 * 3600));
    let young = place("data/9/9/young.parquet", Duration::from_secs(60));
    let outside = place("elsewhere/old.parquet", Duration::from_secs(2 * 3600));
    server.restart();
    // The sweep runs in the background after start-up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.exists() {
        assert!(Instant::now() < deadline, "the orphan older than the grace period is never swept");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(young.exists(), "an unreferenced object inside the grace period may be an upload in flight");
    assert!(outside.exists(), "only Strata's data/ prefix is swept");
    assert!(server.log().contains("swept unfinished copies"), "the sweep reports itself: {}", server.log());
}
