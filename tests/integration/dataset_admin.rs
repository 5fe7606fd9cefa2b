//! Dataset administration: `PUT` before any write, `PATCH`, the view with
//! settings, partition specs and schema versions, across a restart and
//! with rows still buffered.

use serde_json::{Value, json};

use crate::support::Server;

const HOUR: i64 = 3_600_000_000_000;
/// 2025-01-15T00:00:00Z.
const T0: i64 = 1_736_899_200_000_000_000;
/// 2030-06-01T05:00:00Z: after any boundary a change made today takes effect at.
const FUTURE: i64 = 1_906_520_400_000_000_000;

fn put(server: &Server, dataset: &str, body: Value) -> (u16, Value) {
    let (status, _, answer) = server.request("PUT", &format!("/v1/datasets/{dataset}"), &[], body.to_string());
    (status, answer)
}

fn patch(server: &Server, dataset: &str, body: Value) -> (u16, Value) {
    let (status, _, answer) = server.request("PATCH", &format!("/v1/datasets/{dataset}"), &[], body.to_string());
    (status, answer)
}

fn labels(server: &Server, dataset: &str) -> Vec<String> {
    let (status, body) = server.get(&format!("/v1/datasets/{dataset}/partitions"));
    assert_eq!(status, 200, "{body}");
    body["partitions"].as_array().unwrap().iter().map(|p| p["period_label"].as_str().unwrap().to_string()).collect()
}

fn sum_v(server: &Server, dataset: &str) -> f64 {
    let range = json!({ "start": 0, "end": 4_000_000_000_000_000_000_i64 });
    let query = json!({ "time_range": range, "downsample": { "aggregations": [{ "fn": "sum", "column": "v", "alias": "s" }] } });
    let (status, body) = server.post(&format!("/v1/datasets/{dataset}/query"), query.to_string());
    assert_eq!(status, 200, "{body}");
    body["rows"][0]["s"].as_f64().unwrap_or_else(|| panic!("a sum: {body}"))
}

fn write(server: &Server, dataset: &str, records: Value) -> (u16, Value) {
    server.post(&format!("/v1/datasets/{dataset}/records"), records.to_string())
}

#[test]
fn a_dataset_defined_before_any_write_keeps_its_settings_and_specs_across_a_restart() {
    let mut server = Server::start("dataset-admin", "[datasets.tomlset]\nlate_rows = \"refuse_rows\"\n");
    let settings = json!({ "period": "hour", "time_column": "ts", "late_rows": "refuse_rows", "compaction": false });
    let (status, created) = put(&server, "events", settings.clone());
    assert_eq!((status, created["created"].as_bool()), (201, Some(true)), "{created}");
    assert_eq!(created["settings"]["period"], "hour");
    assert_eq!(created["settings"]["time_column"], "ts");
    assert_eq!(created["settings_source"]["late_rows"], "api");
    assert_eq!(created["settings_source"]["min_retention_ms"], "default");
    assert_eq!(created["partition_specs"].as_array().unwrap().len(), 1);
    assert_eq!(created["schema_versions"][0]["version"], 0);

    // The same settings again: nothing to do; others: refused, named.
    let (status, again) = put(&server, "events", settings);
    assert_eq!((status, again["created"].as_bool()), (200, Some(false)), "{again}");
    let (status, refused) = put(&server, "events", json!({ "period": "day", "compaction": false }));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("dataset_exists")), "{refused}");
    assert_eq!(refused["error"]["differing"], json!(["period"]));
    for bad in [json!({ "late_rows": "drop" }), json!({ "time_column": "" })] {
        let (status, refused) = put(&server, "other", bad);
        assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("bad_request")), "{refused}");
    }
    let (status, refused) = put(&server, "other", json!({ "partition_by": "tenant" }));
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("invalid_json")), "{refused}");
    assert_eq!(server.get("/v1/datasets/other").0, 404, "a refused PUT creates nothing");

    // Rows land by the hour, under the declared time column.
    let (status, body) = write(&server, "events", json!([{ "ts": T0, "v": 1.0 }, { "ts": T0 + HOUR, "v": 2.0 }]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(labels(&server, "events"), ["2025-01-15T00", "2025-01-15T01"]);

    // The time column cannot change; the period can, from a boundary on.
    let (status, refused) = patch(&server, "events", json!({ "time_column": "time" }));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("setting_immutable")), "{refused}");
    let (status, changed) = patch(&server, "events", json!({ "period": "day", "compaction": true }));
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["settings"]["period"], "day");
    assert_eq!(changed["settings"]["compaction"], true);
    assert_eq!(changed["settings"]["late_rows"], "refuse_rows", "a PATCH keeps what it does not name");
    let specs = changed["partition_specs"].as_array().unwrap().clone();
    assert_eq!(specs.len(), 2, "{changed}");
    assert_eq!((specs[0]["period"].as_str(), specs[1]["period"].as_str()), (Some("hour"), Some("day")));
    let from = specs[1]["effective_from"].as_str().unwrap();
    assert!(from.ends_with("T00:00:00Z") || from.ends_with("T00:00:00.000000000Z"), "a day boundary: {from}");

    // Old rows keep hour partitions; rows past the change get day ones.
    // They stay buffered across a kill -9.
    let rows = json!([{ "ts": T0 + 2 * HOUR, "v": 4.0 }, { "ts": FUTURE, "v": 8.0 }]);
    let (status, body) = write(&server, "events", rows);
    assert_eq!(status, 200, "{body}");
    let expected = ["2025-01-15T00", "2025-01-15T01", "2025-01-15T02", "2030-06-01"];
    assert_eq!(labels(&server, "events"), expected);
    server.restart();
    let (status, shown) = server.get("/v1/datasets/events");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["partition_specs"], changed["partition_specs"], "specs survive a restart");
    assert_eq!(shown["settings"], changed["settings"], "settings survive a restart");
    assert_eq!(shown["buffered_rows"], 4, "{shown}");
    assert_eq!(labels(&server, "events"), expected);
    assert_eq!(sum_v(&server, "events"), 15.0, "every partition stays queryable");
    let (status, body) = write(&server, "events", json!([{ "ts": FUTURE + HOUR, "v": 16.0 }]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(labels(&server, "events").len(), 4, "the day partition takes the next hour's row");
    server.flush();
    assert_eq!(sum_v(&server, "events"), 31.0);

    // The TOML gives defaults; the API's settings win.
    let (status, shown) = put(&server, "tomlset", json!({}));
    assert_eq!(status, 201, "{shown}");
    assert_eq!(shown["settings_source"]["late_rows"], "toml");
    let (_, changed) = patch(&server, "tomlset", json!({ "late_rows": "refuse_request" }));
    assert_eq!(
        (changed["settings"]["late_rows"].as_str(), changed["settings_source"]["late_rows"].as_str()),
        (Some("refuse_request"), Some("api"))
    );
}

#[test]
fn settings_set_through_the_api_steer_compaction_and_late_rows() {
    let server = Server::start("dataset-admin-settings", "");
    let (status, body) = put(&server, "frozen", json!({ "compaction": false, "late_rows": "refuse_rows" }));
    assert_eq!(status, 201, "{body}");
    let (status, body) = write(&server, "frozen", json!([{ "time": T0, "v": 1.0 }]));
    assert_eq!(status, 200, "{body}");
    let (status, refused) = server.post("/v1/datasets/frozen/compact", "");
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("compaction_disabled")), "{refused}");

    // Sealed partition + refuse_rows from the API: the other rows are written.
    let (status, body) = server.post("/v1/datasets/frozen/partitions/2025-01-15/seal", "");
    assert_eq!(status, 200, "{body}");
    let (status, refused) =
        write(&server, "frozen", json!([{ "time": T0 + HOUR, "v": 2.0 }, { "time": FUTURE, "v": 4.0 }]));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("late_rows_refused")), "{refused}");
    assert_eq!(sum_v(&server, "frozen"), 5.0);

    let (status, body) = patch(&server, "frozen", json!({ "compaction": true, "late_rows": "refuse_request" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.post("/v1/datasets/frozen/compact", "").0, 200);
    let (status, refused) =
        write(&server, "frozen", json!([{ "time": T0 + HOUR, "v": 2.0 }, { "time": FUTURE, "v": 4.0 }]));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("partition_read_only")), "{refused}");
    assert_eq!(sum_v(&server, "frozen"), 5.0);
}

fn count_rows(server: &Server, dataset: &str) -> (u16, Value) {
    let range = json!({ "start": 0, "end": 4_000_000_000_000_000_000_i64 });
    let query = json!({ "time_range": range, "downsample": { "aggregations": [{ "fn": "count", "column": "v", "alias": "n" }] } });
    server.post(&format!("/v1/datasets/{dataset}/query"), query.to_string())
}

fn file_paths(server: &Server, dataset: &str) -> Vec<std::path::PathBuf> {
    let (_, body) = server.get(&format!("/v1/datasets/{dataset}/partitions"));
    let partitions = body["partitions"].as_array().unwrap();
    let files = partitions.iter().flat_map(|p| p["files"].as_array().unwrap().iter());
    files.map(|f| std::path::PathBuf::from(f["path"].as_str().unwrap())).collect()
}

#[test]
fn a_deleted_dataset_is_gone_at_once_swept_after_the_grace_period_and_its_name_reusable() {
    let mut server = Server::start("dataset-delete", "");
    let flushed: Vec<Value> = (0..10).map(|i| json!({ "time": T0 + i * HOUR, "v": 1.0 })).collect();
    assert_eq!(write(&server, "gone", Value::Array(flushed)).0, 200);
    server.flush();
    assert_eq!(write(&server, "gone", json!([{ "time": T0, "v": 2.0 }, { "time": FUTURE, "v": 2.0 }])).0, 200);
    let files = file_paths(&server, "gone");
    assert!(!files.is_empty() && files.iter().all(|f| f.exists()));

    // A dry run answers the figures and changes nothing.
    let (status, _, dry) = server.request("DELETE", "/v1/datasets/gone?dry=true", &[], "");
    assert_eq!((status, dry["outcome"].as_str()), (200, Some("would_delete")), "{dry}");
    assert_eq!((dry["rows"].as_i64(), dry["buffered_rows"].as_i64()), (Some(10), Some(2)), "{dry}");
    assert_eq!(dry["files"].as_i64(), Some(files.len() as i64));
    assert_eq!(count_rows(&server, "gone").1["rows"][0]["n"], 12);

    let (status, _, deleted) = server.request("DELETE", "/v1/datasets/gone", &[], "");
    assert_eq!((status, deleted["outcome"].as_str()), (200, Some("deleted")), "{deleted}");
    let refused = |server: &Server| {
        let (status, body) = write(server, "gone", json!([{ "time": T0, "v": 1.0 }]));
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("dataset_deleted")), "{body}");
        let (status, body) = put(server, "gone", json!({}));
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("dataset_deleted")), "{body}");
        assert_eq!(server.get("/v1/datasets/gone").0, 404);
        assert_eq!(count_rows(server, "gone").0, 404);
        let (_, listed) = server.get("/v1/datasets");
        assert_eq!(listed["datasets"], json!([]), "{listed}");
    };
    refused(&server);
    let (_, audit) = server.get("/v1/audit?dataset=gone&kind=dataset_deleted");
    assert_eq!(audit["events"][0]["detail"]["buffered_rows_dropped"], 2, "{audit}");

    // A crash before the sweep: still deleted, the buffered rows not replayed.
    server.restart();
    refused(&server);
    assert!(files.iter().all(|f| f.exists()), "files wait for the grace period");

    // Past the grace period the files are swept and the name is free.
    let config = "[lifecycle]\ngrace_ms = 0\nsweep_interval_ms = 50\n";
    std::fs::write(server.root().join("strata.toml"), config).unwrap();
    server.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = put(&server, "gone", json!({ "period": "hour" }));
        if status == 201 {
            break;
        }
        assert_eq!(body["error"]["code"], "dataset_deleted", "{body}");
        assert!(std::time::Instant::now() < deadline, "the name was never released");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(files.iter().all(|f| !f.exists()), "swept");
    assert_eq!(write(&server, "gone", json!([{ "time": T0, "v": 5.0 }])).0, 200);
    assert_eq!(count_rows(&server, "gone").1["rows"][0]["n"], 1, "a new, empty dataset");
    assert_eq!(labels(&server, "gone"), ["2025-01-15T00"]);
}

#[test]
fn archive_before_delete_refuses_a_dataset_delete_with_unarchived_rows() {
    let server = Server::start("dataset-delete-archive", "[lifecycle]\nrequire_archive_before_delete = true\n");
    assert_eq!(write(&server, "kept", json!([{ "time": T0, "v": 1.0 }])).0, 200);
    server.flush();
    let (status, _, dry) = server.request("DELETE", "/v1/datasets/kept?dry=true", &[], "");
    assert_eq!((status, dry["outcome"].as_str()), (200, Some("refused")), "{dry}");
    let (status, _, refused) = server.request("DELETE", "/v1/datasets/kept", &[], "");
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("dataset_not_archived")), "{refused}");
    assert_eq!(refused["error"]["unarchived_partitions"], json!(["2025-01-15"]));
    assert_eq!(count_rows(&server, "kept").1["rows"][0]["n"], 1, "nothing deleted");
    assert_eq!(server.request("DELETE", "/v1/datasets/nope", &[], "").0, 404);
}
