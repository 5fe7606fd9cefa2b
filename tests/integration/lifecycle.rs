//! Lifecycle runs against the real binary: tier moves and retention deletes
//! decided by the built-in policies, refused by the guard rails, archives
//! and restores. `now` is passed to each run, so ages need no waiting.
//! Faults and crashes at each step are in `storage.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::Server;

pub(crate) const DAY: i64 = 86_400_000_000_000;
/// 2025-01-01T00:00:00Z
pub(crate) const START: i64 = 1_735_689_600_000_000_000;

pub(crate) const TIERING: &str = "name = \"tiering\"\nkind = \"tiering\"\nplugin = \"builtin:tier-by-age\"\ndatasets = [\"metrics\"]\nschedule = \"every 1h\"\n[config]\nwarm_after = \"30d\"\ncold_after = \"180d\"\n";
pub(crate) const RETENTION: &str = "name = \"retention\"\nkind = \"retention\"\nplugin = \"builtin:retention-by-age\"\ndatasets = [\"metrics\"]\nschedule = \"every 1h\"\n[config]\nmax_age = \"400d\"\n";

/// One row a day for `days` days from START, `v` = the day's index.
pub(crate) fn load(server: &Server, days: i64) {
    let records: Vec<Value> = (0..days).map(|d| json!({"time": START + d * DAY + 3_600_000_000_000, "v": d})).collect();
    let (status, body) = server.post("/v1/datasets/metrics/records", Value::Array(records).to_string());
    assert_eq!(status, 200, "{body}");
    server.flush();
}

/// One row a day for the `days` days up to today (the server's clock, UTC),
/// `v` = the day's index; today is the last and its period is open. The
/// guard rails judge a run that executes at the server's clock, so a test
/// of what they refuse needs data that is young or open by that clock.
/// Returns the start of day 0.
pub(crate) fn load_recent(server: &Server, days: i64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let first = now - now.rem_euclid(DAY) - (days - 1) * DAY;
    let records: Vec<Value> = (0..days).map(|d| json!({"time": first + d * DAY + 1_000_000_000, "v": d})).collect();
    let (status, body) = server.post("/v1/datasets/metrics/records", Value::Array(records).to_string());
    assert_eq!(status, 200, "{body}");
    server.flush();
    first
}

/// `(count, sum of v)` through SQL.
pub(crate) fn totals(server: &Server) -> (i64, i64) {
    let (status, body) =
        server.post("/v1/sql", "SELECT count(*) AS n, CAST(coalesce(sum(v), 0) AS BIGINT) AS s FROM metrics");
    assert_eq!(status, 200, "{body}");
    (body["rows"][0]["n"].as_i64().unwrap(), body["rows"][0]["s"].as_i64().unwrap())
}

pub(crate) fn manifest(server: &Server) -> Vec<Value> {
    let (status, body) = server.get("/v1/datasets/metrics/partitions");
    assert_eq!(status, 200, "{body}");
    body["partitions"].as_array().unwrap().clone()
}

pub(crate) fn run(server: &Server, policy: &str, body: Value) -> Value {
    let (status, response) = server.post(&format!("/v1/policies/{policy}/run"), body.to_string());
    assert_eq!(status, 200, "{response}");
    response["runs"][0].clone()
}

pub(crate) fn parquet_files(dir: &Path) -> BTreeSet<PathBuf> {
    crate::support::files_under(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect()
}

pub(crate) fn referenced_files(server: &Server) -> BTreeSet<PathBuf> {
    manifest(server)
        .iter()
        .flat_map(|p| p["files"].as_array().unwrap().iter().map(|f| PathBuf::from(f["path"].as_str().unwrap())))
        .collect()
}

fn time_ns(value: &Value) -> i64 {
    match value {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_nanos_opt().unwrap(),
        other => panic!("not a time: {other}"),
    }
}

#[test]
fn data_flows_through_the_tiers_and_retention_exactly_as_configured() {
    let config = "[datasets.metrics]\nperiod = \"week\"\n[lifecycle]\nscheduler = false\ngrace_ms = 0\nsweep_interval_ms = 100\nmin_retention_ms = 0\nmax_delete_fraction = 1.0\n";
    let server = Server::start_with_files(
        "lifecycle-flow",
        config,
        &[],
        &[("policies/tiering.toml", TIERING.as_bytes()), ("policies/retention.toml", RETENTION.as_bytes())],
    );
    let days = 430;
    load(&server, days);
    let before = totals(&server);
    assert_eq!(before, (days, (0..days).sum()));
    let now = START + (days - 1) * DAY + 12 * 3_600_000_000_000;

    // A dry run decides and judges but moves nothing.
    let dry = run(&server, "tiering", json!({"dataset": "metrics", "now": now, "dry": true}));
    assert!(dry["entries"].as_array().unwrap().iter().any(|e| e["outcome"] == "planned"), "{dry}");
    assert!(manifest(&server).iter().all(|p| p["tier"] == "hot"));

    let tiering = run(&server, "tiering", json!({"dataset": "metrics", "now": now}));
    assert_eq!((tiering["failed"].as_u64(), tiering["rejected"].as_u64()), (Some(0), Some(0)), "{tiering}");
    assert!(tiering["bytes_moved"].as_u64().unwrap() > 0);
    let partitions = manifest(&server);
    let mut moved = 0;
    for partition in &partitions {
        let age = now - time_ns(&partition["period_end"]);
        let expected = if age > 180 * DAY {
            "cold"
        } else if age > 30 * DAY {
            "warm"
        } else {
            "hot"
        };
        assert_eq!(partition["tier"], expected, "{partition}");
        if expected != "hot" {
            moved += 1;
            assert_eq!(partition["read_only"], true);
            for file in partition["files"].as_array().unwrap() {
                let directory = if expected == "cold" { "cold" } else { "warm" };
                assert!(file["path"].as_str().unwrap().contains(&format!("/storage/{directory}/")), "{file}");
            }
        }
    }
    assert!(moved > 50, "{moved} partitions moved");
    let (_, targets) = server.get("/v1/storage-targets");
    let live_files = |name: &str| {
        targets["storage_targets"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["files"]
            .as_i64()
            .unwrap()
    };
    assert!(live_files("warm") > 0 && live_files("cold") > 0 && live_files("hot") > 0, "{targets}");
    assert_eq!(totals(&server), before, "the same rows after the moves");
    // Explain says where a partition is and which decision put it there.
    let (status, explained) = server.get("/v1/datasets/metrics/partitions/2025-W02/explain");
    assert_eq!(status, 200, "{explained}");
    assert_eq!((explained["tier"].as_str(), explained["read_only"].as_bool()), (Some("cold"), Some(true)));
    let tiering_view =
        explained["policies"].as_array().unwrap().iter().find(|p| p["name"] == "tiering").unwrap().clone();
    let last = &tiering_view["last_decision"];
    assert_eq!((last["outcome"].as_str(), last["tier"].as_str()), (Some("executed"), Some("cold")), "{explained}");
    assert!(last["reason"].as_str().unwrap().contains("cold_after"), "{explained}");
    assert_eq!(last["component_sha256"], tiering["component_sha256"]);
    assert!(explained["policies"].as_array().unwrap().iter().any(|p| p["name"] == "retention"));
    assert_eq!(server.get("/v1/datasets/metrics/partitions/1999-W01/explain").0, 404);
    let metrics = server.get_text("/metrics");
    assert!(metrics.contains("strata_partitions{tier=\"cold\"}"), "{metrics}");
    assert!(metrics.contains("strata_lifecycle_transitions_total{from=\"hot\",to=\"warm\"}"), "{metrics}");
    // A write into a partition that left hot is refused, not dropped.
    let (status, body) = server.post("/v1/datasets/metrics/records", json!([{"time": START, "v": 1}]).to_string());
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("partition_read_only")), "{body}");

    // Retention: every partition whose period ended more than 400 days ago goes.
    let expected_rows: i64 = partitions
        .iter()
        .filter(|p| now - time_ns(&p["period_end"]) <= 400 * DAY)
        .map(|p| p["rows"].as_i64().unwrap())
        .sum();
    let retention = run(&server, "retention", json!({"now": now}));
    assert!(retention["executed"].as_u64().unwrap() > 0, "{retention}");
    assert_eq!(retention["failed"], 0, "{retention}");
    assert_eq!(totals(&server).0, expected_rows);
    assert!(manifest(&server).iter().all(|p| now - time_ns(&p["period_end"]) <= 400 * DAY));

    // Every decision is audited with the component version that made it.
    let (_, audit) = server.get("/v1/audit?dataset=metrics&kind=lifecycle_decision&limit=10000");
    let events = audit["events"].as_array().unwrap();
    let executed = events.iter().filter(|e| e["detail"]["outcome"] == "executed").count();
    assert_eq!(executed as u64, tiering["executed"].as_u64().unwrap() + retention["executed"].as_u64().unwrap());
    assert!(events.iter().all(|e| e["detail"]["component_sha256"].as_str().is_some_and(|s| s.len() == 64)));
    let (_, runs) = server.get("/v1/lifecycle/runs?dataset=metrics");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 3);
    let (status, detail) = server.get(&format!("/v1/lifecycle/runs/{}", tiering["id"]));
    assert_eq!((status, detail["executed"].clone()), (200, tiering["executed"].clone()));

    // With no grace period the sweeper deletes every superseded copy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let on_disk = parquet_files(&server.data_dir.join("storage"));
        if on_disk == referenced_files(&server) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "unreferenced files remain: {:?}",
            on_disk.difference(&referenced_files(&server)).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(totals(&server).0, expected_rows);
}

#[test]
fn guard_rails_refuse_what_a_policy_must_not_do() {
    // A retention policy that wants everything gone.
    let reckless = RETENTION.replace("max_age = \"400d\"", "max_age = \"1s\"");
    let config = "[lifecycle]\nscheduler = false\nprecreate_lead_ms = 0\nmin_retention_ms = 2592000000\nmax_deletes_per_run = 3\nmax_delete_fraction = 1.0\n";
    let server =
        Server::start_with_files("lifecycle-guard", config, &[], &[("policies/retention.toml", reckless.as_bytes())]);
    let days = 41;
    let first = load_recent(&server, days);
    let before = totals(&server);
    // The server's clock is inside the last day: that period is still open.
    let report = run(&server, "retention", json!({}));
    let entries = report["entries"].as_array().unwrap();
    // Every day but the open one is asked to go; the open one is kept (and only counted).
    assert_eq!((entries.len() as i64, report["unchanged"].as_i64()), (days - 1, Some(1)), "{report}");
    let why = |needle: &str| entries.iter().filter(|e| e["why"].as_str().is_some_and(|w| w.contains(needle))).count();
    // Days 0..=9 ended more than 30 days before now; three of them may go.
    assert_eq!(report["executed"], 3, "{report}");
    assert_eq!(why("more than 3 deletes"), 7);
    assert_eq!(why("minimum retention"), 30);
    // The open period is kept by the policy itself (the guard would refuse it).
    assert_eq!(report["rejected"], 37);
    assert_eq!(totals(&server).0, before.0 - 3);
    // Each rejection is audited with its reason.
    let (_, audit) = server.get("/v1/audit?dataset=metrics&limit=10000");
    let rejected: Vec<&Value> =
        audit["events"].as_array().unwrap().iter().filter(|e| e["detail"]["outcome"] == "rejected").collect();
    assert_eq!(rejected.len(), 37);
    assert!(rejected.iter().all(|e| e["detail"]["verdict"] == "reject" && e["detail"]["why"].is_string()));
    // A deleted period refuses late writes instead of resurrecting.
    let (status, body) = server
        .post("/v1/datasets/metrics/records", json!([{"time": first + 3_600_000_000_000i64, "v": 0}]).to_string());
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("partition_read_only")), "{body}");
    // Unknown policies and datasets are clear errors.
    assert_eq!(server.post("/v1/policies/nope/run", "").1["error"]["code"], "policy_not_found");
    assert_eq!(server.post("/v1/policies/retention/run", json!({"dataset": "other"}).to_string()).0, 404);
}

/// Every row of the dataset in time order, as JSON text, through SQL.
pub(crate) fn all_rows(server: &Server) -> String {
    let (status, body) = server.post("/v1/sql", "SELECT * FROM metrics ORDER BY time");
    assert_eq!(status, 200, "{body}");
    body["rows"].to_string()
}

#[test]
fn archived_partitions_stay_queryable_and_restore_byte_identical() {
    let archival = "name = \"archival\"\nkind = \"archival\"\nplugin = \"builtin:archive-after\"\ndatasets = [\"metrics\"]\n[config]\nafter = \"30d\"\ndelete_source_after = true\ncompression_level = 12\n";
    let config = "[datasets.metrics]\nperiod = \"month\"\n[lifecycle]\nscheduler = false\ngrace_ms = 0\nsweep_interval_ms = 100\n";
    let server =
        Server::start_with_files("lifecycle-archive", config, &[], &[("policies/archival.toml", archival.as_bytes())]);
    load(&server, 120);
    let before = all_rows(&server);
    let now = START + 119 * DAY + 12 * 3_600_000_000_000;
    let report = run(&server, "archival", json!({"now": now}));
    assert_eq!(report["failed"], 0, "{report}");
    let archived: Vec<Value> = manifest(&server).into_iter().filter(|p| p["tier"] == "archived").collect();
    // January and February 2025 ended more than 30 days before April 30; March 29.5 days.
    assert_eq!(archived.len(), 2, "{report}");
    assert_eq!(report["executed"], 2);
    for partition in &archived {
        let files = partition["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "one re-encoded file: {partition}");
        let path = files[0]["path"].as_str().unwrap();
        assert!(path.contains("/storage/archive/"), "{path}");
        let manifest_path = path.replace(".parquet", ".manifest.json");
        let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
        assert_eq!(manifest["file"]["rows"], partition["rows"]);
        assert_eq!(manifest["file"]["zstd_level"], 12);
    }
    assert_eq!(all_rows(&server), before, "archived partitions are read in place");
    // A second run has nothing left to do.
    assert_eq!(run(&server, "archival", json!({"now": now}))["executed"], 0);
    // Restore: the partition comes back to cold with the same rows, byte for byte.
    let (status, body) = server.post("/v1/datasets/metrics/partitions/2025-01/restore", "");
    assert_eq!(status, 200, "{body}");
    let (_, explained) = server.get("/v1/datasets/metrics/partitions/2025-01/explain");
    assert_eq!(explained["tier"], "cold");
    assert_eq!(all_rows(&server), before);
    let (status, body) = server.post("/v1/datasets/metrics/partitions/2025-01/restore", "");
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("partition_not_archived")), "{body}");
    // The archive outlives the restore and the sweep.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let archive_files = parquet_files(&server.data_dir.join("storage").join("archive"));
    assert_eq!(archive_files.len(), 2, "{archive_files:?}");
    assert_eq!(all_rows(&server), before);
}

#[test]
fn live_datasets_get_their_next_partition_and_health_reports_overdue_tiers() {
    let config = "[lifecycle]\nscheduler = false\nhealth_max_hot_age_ms = 86400000\n";
    let server = Server::start("lifecycle-health", config);
    // A live dataset: a row now, daily periods, the default one-day lead.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    assert_eq!(server.post("/api/v2/write?bucket=live", format!("m v=1i {now}\n")).0, 204);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let partitions = loop {
        let (_, body) = server.get("/v1/datasets/live/partitions");
        let partitions = body["partitions"].as_array().unwrap().clone();
        if partitions.len() == 2 {
            break partitions;
        }
        assert!(std::time::Instant::now() < deadline, "no next-period partition: {body}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(partitions[1]["period_start"], partitions[0]["period_end"]);
    assert_eq!((partitions[1]["rows"].as_i64(), partitions[1]["tier"].as_str()), (Some(0), Some("hot")));
    let (status, health) = server.get("/health/lifecycle");
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")), "{health}");

    // Old data still hot, far past the one-day expectation: unhealthy.
    load(&server, 3);
    let (status, health) = server.get("/health/lifecycle");
    assert_eq!((status, health["status"].as_str()), (503, Some("unhealthy")), "{health}");
    let problems = health["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 3, "{health}");
    assert!(
        problems.iter().all(|p| p["dataset"] == "metrics" && p["problem"].as_str().unwrap().starts_with("hot for"))
    );
}

#[test]
fn archived_partitions_can_be_skipped_by_queries_but_never_silently() {
    let archival = "name = \"archival\"\nkind = \"archival\"\nplugin = \"builtin:archive-after\"\ndatasets = [\"metrics\"]\n[config]\nafter = \"2d\"\ndelete_source_after = true\n";
    let config = "[query]\nread_archived = false\n[lifecycle]\nscheduler = false\n";
    let server = Server::start_with_files(
        "lifecycle-skip-archived",
        config,
        &[],
        &[("policies/archival.toml", archival.as_bytes())],
    );
    load(&server, 5);
    let now = START + 4 * DAY + 12 * 3_600_000_000_000;
    assert_eq!(run(&server, "archival", json!({"now": now}))["executed"], 2);
    let (status, body) = server.post("/v1/sql", "SELECT count(*) AS n FROM metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["n"], 3, "the two archived days are not read");
    assert_eq!(body["stats"]["archived_skipped"], json!(["metrics/2025-01-01", "metrics/2025-01-02"]), "{body}");
}

#[test]
fn a_failing_partition_never_stops_the_run_and_is_retried_after_a_backoff() {
    let config = "[lifecycle]\nscheduler = false\nretry_base_ms = 1000\n";
    let tiering = TIERING.replace("warm_after = \"30d\"\ncold_after = \"180d\"", "warm_after = \"2d\"");
    let server =
        Server::start_with_files("lifecycle-retry", config, &[], &[("policies/tiering.toml", tiering.as_bytes())]);
    load(&server, 6);
    let before = totals(&server);
    let now = START + 5 * DAY + 12 * 3_600_000_000_000;
    // The warm target's directory becomes a file: every copy there fails.
    let warm = server.data_dir.join("storage").join("warm");
    std::fs::remove_dir_all(&warm).unwrap();
    std::fs::write(&warm, b"not a directory").unwrap();
    let report = run(&server, "tiering", json!({"now": now}));
    assert_eq!((report["failed"].as_u64(), report["executed"].as_u64()), (Some(3), Some(0)), "{report}");
    assert!(report["entries"].as_array().unwrap().iter().all(|e| e["error"].is_string()));
    assert_eq!(totals(&server), before, "nothing lost");
    let (_, explained) = server.get("/v1/datasets/metrics/partitions/2025-01-01/explain");
    assert_eq!(explained["pending_errors"].as_array().map(Vec::len), Some(1), "{explained}");
    // Repaired, but inside the backoff: deferred, not retried.
    std::fs::remove_file(&warm).unwrap();
    std::fs::create_dir(&warm).unwrap();
    let report = run(&server, "tiering", json!({"now": now}));
    assert_eq!((report["deferred"].as_u64(), report["executed"].as_u64()), (Some(3), Some(0)), "{report}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let report = run(&server, "tiering", json!({"now": now}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(3), Some(0)), "{report}");
    assert_eq!(totals(&server), before);
}

/// A `retention` component (tests/fixtures/retention.wat) whose answer is
/// `decisions` (partition index, action: 0 keep / 1 delete), all with the
/// reason "evil", followed by `zeroed` more all-zero decisions.
fn retention_answering(decisions: &[(u32, u8)], zeroed: u32) -> Vec<u8> {
    const DECISIONS_AT: u32 = 65_536;
    let count = decisions.len() as u32 + zeroed;
    let reasons_at = DECISIONS_AT + 12 * count;
    let pages = (reasons_at + 64) / 65_536 + 1;
    let mut behaviour = format!("(drop (memory.grow (i32.const {pages})))\n");
    for (index, (partition, action)) in decisions.iter().enumerate() {
        let at = DECISIONS_AT + 12 * index as u32;
        behaviour += &format!(
            "(i32.store (i32.const {at}) (i32.const {partition})) (i32.store8 (i32.const {}) (i32.const {action})) \
             (i32.store (i32.const {}) (i32.const 0))\n",
            at + 4,
            at + 8
        );
    }
    behaviour += &format!(
        "(i32.store (i32.const {reasons_at}) (i32.const {text})) (i32.store (i32.const {len_at}) (i32.const 4))
         (i32.store (i32.const {text}) (i32.const 0x6c697665))
         (i32.store (i32.const 16) (i32.const {DECISIONS_AT})) (i32.store (i32.const 20) (i32.const {count}))
         (i32.store (i32.const 24) (i32.const {reasons_at})) (i32.store (i32.const 28) (i32.const 1))
         (return (i32.const 16))",
        text = reasons_at + 16,
        len_at = reasons_at + 4,
    );
    crate::policies::retention_fixture(&behaviour)
}

#[test]
fn a_malicious_retention_policy_loses_nothing_and_every_refusal_is_audited() {
    let policy = "name = \"hostile\"\nkind = \"retention\"\nplugin = \"hostile.wasm\"\ndatasets = [\"metrics\"]\n";
    // No canary: these answers would be refused at load, and the test is
    // about what a run does with them.
    let config = "[lifecycle]\nscheduler = false\nprecreate_lead_ms = 0\npolicy_canary = false\n[policies]\nreload_debounce_ms = 10\n";
    let server = Server::start_with_files(
        "lifecycle-hostile",
        config,
        &[],
        &[("policies/hostile.toml", policy.as_bytes()), ("policies/hostile.wasm", &retention_answering(&[], 0))],
    );
    let days = 10;
    load_recent(&server, days);
    let before = totals(&server);
    // By the server's clock, partition 9 (in time order) is the open period.
    let at_the_server_clock = json!({});
    let install = |bytes: Vec<u8>| {
        let sha = strata::digest::sha256_hex(&bytes);
        std::fs::write(server.root().join("policies/hostile.wasm"), bytes).unwrap();
        let (status, body) = server.post("/v1/policies/reload", "");
        assert_eq!(status, 200, "{body}");
        let (_, shown) = server.get("/v1/policies/hostile");
        assert_eq!(
            shown["versions"].as_array().unwrap().iter().find(|v| v["status"] == "active").unwrap()["component_sha256"],
            sha,
            "{shown}"
        );
    };
    let refused_runs = |server: &Server| {
        let (_, audit) = server.get("/v1/audit?dataset=metrics&kind=lifecycle_run_refused&limit=1000");
        audit["events"].as_array().unwrap().len()
    };

    // Whole answers that break the contract are refused whole: nothing runs.
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("an unknown partition", retention_answering(&[(0, 1), (1_000, 1)], 0), "1000"),
        ("a duplicate", retention_answering(&[(2, 1), (3, 1), (2, 1)], 0), "more than once"),
        ("a million decisions", retention_answering(&[(0, 1)], 999_999), "partition"),
    ];
    for (index, (what, bytes, mentions)) in cases.into_iter().enumerate() {
        install(bytes);
        let report = run(&server, "hostile", at_the_server_clock.clone());
        let error = report["error"].as_str().unwrap_or_else(|| panic!("{what}: {report}"));
        assert!(error.contains(mentions), "{what}: {error}");
        assert_eq!(
            (report["executed"].as_i64(), report["entries"].as_array().map(Vec::len)),
            (Some(0), Some(0)),
            "{what}"
        );
        assert_eq!(totals(&server), before, "{what}: nothing may be lost");
        assert_eq!(refused_runs(&server), index + 1, "{what}: the refusal is audited");
        assert!(manifest(&server).iter().all(|p| p["tier"] == "hot" && p["rows"] == 1), "{what}");
    }

    // A well-formed answer is judged decision by decision: the open period
    // is refused and audited, a closed old one goes.
    install(retention_answering(&[(9, 1), (0, 1)], 0));
    let report = run(&server, "hostile", at_the_server_clock.clone());
    assert_eq!((report["executed"].as_i64(), report["rejected"].as_i64()), (Some(1), Some(1)), "{report}");
    let (_, audit) = server.get("/v1/audit?dataset=metrics&kind=lifecycle_decision&limit=1000");
    let events = audit["events"].as_array().unwrap();
    let rejected = events.iter().find(|e| e["detail"]["outcome"] == "rejected").expect("the refusal is audited");
    assert!(rejected["detail"]["why"].as_str().unwrap().contains("open"), "{rejected}");
    assert_eq!(rejected["detail"]["reason"], "evil");
    assert_eq!(totals(&server).0, before.0 - 1);
    assert_eq!(manifest(&server).len() as i64, days - 1);
}

#[test]
fn each_run_sees_what_changed_since_the_last_one() {
    // Runs reuse the partition facts they built while the catalog says no
    // partition row changed; a write, a flush or a move must be seen.
    let config = "[datasets.metrics]\nperiod = \"day\"\n[lifecycle]\nscheduler = false\n";
    let server =
        Server::start_with_files("lifecycle-fresh", config, &[], &[("policies/tiering.toml", TIERING.as_bytes())]);
    load(&server, 3);
    let now = START + 200 * DAY;
    let first = run(&server, "tiering", json!({"now": now}));
    assert_eq!(first["executed"], 3, "{first}");
    let again = run(&server, "tiering", json!({"now": now}));
    assert_eq!((again["executed"].as_u64(), again["unchanged"].as_u64()), (Some(0), Some(3)), "{again}");
    // A new old day arrives: only it moves, and to cold, where the others
    // went after the first run.
    let record = json!([{"time": START + 10 * DAY, "v": 10}]);
    assert_eq!(server.post("/v1/datasets/metrics/records", record.to_string()).0, 200);
    server.flush();
    let third = run(&server, "tiering", json!({"now": now}));
    assert_eq!((third["executed"].as_u64(), third["unchanged"].as_u64()), (Some(1), Some(3)), "{third}");
    let tiers: Vec<String> = manifest(&server).iter().map(|p| p["tier"].as_str().unwrap().to_string()).collect();
    assert_eq!(tiers, ["cold", "cold", "cold", "cold"]);
}

#[test]
fn a_write_that_passed_the_seal_check_is_moved_with_its_partition() {
    // Every write waits a second between checking that its partitions are
    // writable and buffering its rows. A run that seals the partition in
    // that second must wait for the write, so its flush and move include
    // the row; otherwise the row would be flushed later, onto the hot
    // target of a partition that has moved.
    let config = "[datasets.metrics]\nperiod = \"day\"\n[lifecycle]\nscheduler = false\n";
    let server = Server::start_with_files(
        "lifecycle-seal-race",
        config,
        &[("STRATA_FAILPOINTS", "ingest.after_seal_check=delay")],
        &[("policies/tiering.toml", TIERING.as_bytes())],
    );
    load(&server, 1);
    let late = std::thread::spawn({
        let url = server.url.clone();
        move || {
            let record = json!([{"time": START + 7_200_000_000_000, "v": 100}]);
            crate::support::client()
                .post(format!("{url}/v1/datasets/metrics/records"))
                .body(record.to_string())
                .send()
                .unwrap()
                .status()
                .as_u16()
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let moved = run(&server, "tiering", json!({"now": START + 200 * DAY}));
    assert_eq!(late.join().unwrap(), 200, "the write passed its check before the seal");
    assert_eq!(moved["executed"], 1, "{moved}");
    server.flush();
    let partitions = manifest(&server);
    assert_eq!(partitions.len(), 1);
    assert_eq!(
        (partitions[0]["tier"].as_str(), partitions[0]["rows"].as_i64()),
        (Some("cold"), Some(2)),
        "{partitions:?}"
    );
    let targets: Vec<&str> =
        partitions[0]["files"].as_array().unwrap().iter().map(|f| f["storage_target"].as_str().unwrap()).collect();
    assert!(targets.iter().all(|t| *t == "cold"), "every file moved: {targets:?}");
    assert_eq!(totals(&server), (2, 100));
}
