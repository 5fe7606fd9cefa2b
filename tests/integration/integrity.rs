//! Integrity at the edges: a client's clock never steers the guard rails,
//! gzip bodies are stored whole or refused, column names SQL cannot tell
//! apart are refused, one server per data directory, only hot partitions
//! unseal, every size limit applies to every format, and JSON numbers are
//! never rounded in silence.

use std::io::Write;

use serde_json::{Value, json};

use crate::lifecycle::{RETENTION, TIERING};
use crate::support::{Server, client, serve_until_exit};

const DAY: i64 = 86_400_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn wall_clock_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// The `YYYY-MM-DD` label of the day holding `ns`.
fn day_label(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).format("%Y-%m-%d").to_string()
}

fn rows(server: &Server, dataset: &str) -> i64 {
    let (status, body) = server.get(&format!("/v1/datasets/{dataset}"));
    assert_eq!(status, 200, "{body}");
    body["rows"].as_i64().unwrap()
}

fn partitions(server: &Server, dataset: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/datasets/{dataset}/partitions"));
    assert_eq!(status, 200, "{body}");
    body["partitions"].as_array().unwrap().clone()
}

fn code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[test]
fn a_client_now_never_moves_the_guard_rails_clock() {
    let reckless = RETENTION.replace("max_age = \"400d\"", "max_age = \"1s\"");
    // Minimum retention three days; daily partitions; nothing pre-created.
    let config = "[datasets.metrics]\nperiod = \"day\"\n[lifecycle]\nscheduler = false\nprecreate_lead_ms = 0\n\
                  min_retention_ms = 259200000\nmax_delete_fraction = 1.0\n";
    let server = Server::start_with_files(
        "integrity-now",
        config,
        &[],
        &[("policies/tiering.toml", TIERING.as_bytes()), ("policies/retention.toml", reckless.as_bytes())],
    );
    let now = wall_clock_ns();
    let today = now - now.rem_euclid(DAY);
    // Today (open), yesterday, two days ago and ten days ago.
    let records: Vec<Value> = [0, 1, 2, 10].iter().map(|d| json!({"time": today - d * DAY + SECOND, "v": d})).collect();
    assert_eq!(server.post("/v1/datasets/metrics/records", Value::Array(records).to_string()).0, 200);
    server.flush();
    let untouched = |server: &Server, what: &str| {
        let partitions = partitions(server, "metrics");
        assert_eq!(partitions.len(), 4, "{what}: nothing deleted: {partitions:?}");
        assert!(partitions.iter().all(|p| p["tier"] == "hot" && p["read_only"] == false), "{what}: {partitions:?}");
    };

    // A future `now` that would execute is refused before anything runs:
    // it made the open period look closed (sealed and moved) and young
    // partitions look old enough to delete.
    for policy in ["tiering", "retention"] {
        let body = json!({"dataset": "metrics", "now": "2100-01-01T00:00:00Z"});
        let (status, answer) = server.post(&format!("/v1/policies/{policy}/run"), body.to_string());
        assert_eq!((status, code(&answer)), (400, Some("bad_request")), "{policy}: {answer}");
        assert!(message(&answer).contains("dry"), "{policy}: names dry runs: {answer}");
        untouched(&server, policy);
    }
    let today_row = json!([{"time": now, "v": 100}]).to_string();
    assert_eq!(server.post("/v1/datasets/metrics/records", today_row).0, 200, "the open period takes writes");

    // A dry run may look at any time: it is judged there and executes nothing.
    let body = json!({"dataset": "metrics", "now": "2100-01-01T00:00:00Z", "dry": true});
    let (status, answer) = server.post("/v1/policies/retention/run", body.to_string());
    assert_eq!(status, 200, "{answer}");
    let dry = &answer["runs"][0];
    assert_eq!((dry["dry"].as_bool(), dry["rejected"].as_u64()), (Some(true), Some(0)), "{dry}");
    assert_eq!(dry["entries"].as_array().unwrap().iter().filter(|e| e["outcome"] == "planned").count(), 4);
    untouched(&server, "dry run");

    // A past `now`: the policy sees it, the guard rails still judge at the
    // server's clock. An hour after the ten-day-old period ended it looked
    // younger than the minimum retention; by the server's clock it is not.
    let past = today - 9 * DAY + 3_600 * SECOND;
    let (status, answer) =
        server.post("/v1/policies/retention/run", json!({"dataset": "metrics", "now": past}).to_string());
    assert_eq!(status, 200, "{answer}");
    let run = &answer["runs"][0];
    assert_eq!(run["now_ns"].as_i64(), Some(past), "{run}");
    assert!(run["guard_now_ns"].as_i64().unwrap() >= now, "judged at the server's clock: {run}");
    assert_eq!((run["executed"].as_u64(), run["rejected"].as_u64()), (Some(1), Some(0)), "{run}");
    let left: Vec<String> =
        partitions(&server, "metrics").iter().map(|p| p["period_label"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, [day_label(today - 2 * DAY), day_label(today - DAY), day_label(today)]);

    // And the server's clock protects what is young: yesterday and the day
    // before are younger than three days, today is open.
    let (_, answer) = server.post("/v1/policies/retention/run", json!({"dataset": "metrics"}).to_string());
    let run = &answer["runs"][0];
    assert_eq!((run["executed"].as_u64(), run["rejected"].as_u64()), (Some(0), Some(2)), "{run}");
    assert_eq!(partitions(&server, "metrics").len(), 3);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn post_gzip(server: &Server, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response =
        client().post(format!("{}{path}", server.url)).header("content-encoding", "gzip").body(body).send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn every_gzip_member_is_stored_and_anything_after_them_refuses_the_body() {
    let server = Server::start("integrity-gzip", "");
    // `cat a.gz b.gz`: both members, in NDJSON and line protocol.
    let ndjson = [gzip(b"{\"time\":1,\"v\":1}\n"), gzip(b"{\"time\":2,\"v\":2}\n")].concat();
    assert_eq!(post_gzip(&server, "/v1/datasets/events/records", ndjson).0, 200);
    assert_eq!(rows(&server, "events"), 2, "the second member is stored too");
    let lines = [gzip(b"m v=1 1\n"), gzip(b"m v=2 2\n"), gzip(b"m v=3 3")].concat();
    assert_eq!(post_gzip(&server, "/api/v2/write?bucket=lines", lines).0, 204);
    assert_eq!(rows(&server, "lines"), 3);

    // Bytes after a member that are not a whole member: refused, nothing written.
    let cut = gzip(b"m v=5 5\n");
    for (what, tail) in
        [("garbage", b"not gzip at all".to_vec()), ("zeros", vec![0; 16]), ("half a member", cut[..12].to_vec())]
    {
        let body = [gzip(b"m v=4 4\n"), tail].concat();
        let (status, answer) = post_gzip(&server, "/api/v2/write?bucket=lines", body);
        assert_eq!((status, code(&answer)), (400, Some("invalid_gzip")), "{what}: {answer}");
        assert_eq!(rows(&server, "lines"), 3, "{what}");
    }
    let body = [gzip(b"{\"v\":9}\n"), b"{\"v\":10}\n".to_vec()].concat();
    let (status, answer) = post_gzip(&server, "/v1/datasets/events/records", body);
    assert_eq!((status, code(&answer)), (400, Some("invalid_gzip")), "{answer}");
    assert_eq!(rows(&server, "events"), 2);
}

#[test]
fn column_names_that_differ_only_in_case_are_refused() {
    let server = Server::start("integrity-case", "");
    assert_eq!(server.post("/v1/datasets/orders/records", r#"[{"time":1,"amount":1.5}]"#).0, 200);
    let refused = |path: &str, body: &str, column: &str, other: &str| {
        let (status, answer) = server.post(path, body.to_string());
        assert_eq!((status, code(&answer)), (400, Some("schema_conflict")), "{body}: {answer}");
        assert_eq!(answer["error"]["column"], column, "{answer}");
        assert_eq!(answer["error"]["conflicts_with"], other, "{answer}");
        assert!(message(&answer).contains(column) && message(&answer).contains(other), "{answer}");
    };
    // JSON: against a stored column, another new one, and the time column.
    refused("/v1/datasets/orders/records", r#"[{"time":2,"Amount":2.5}]"#, "Amount", "amount");
    refused("/v1/datasets/orders/records", r#"[{"time":3,"price":1},{"time":4,"PRICE":2}]"#, "PRICE", "price");
    refused("/v1/datasets/orders/records", r#"[{"time":5,"Time":"noon"}]"#, "Time", "time");
    let (_, shown) = server.get("/v1/datasets/orders");
    assert_eq!(shown["columns"], json!([{"name": "amount", "kind": "float"}]), "no column was added");
    assert_eq!(shown["rows"], 1);

    // Line protocol: tags against tags, fields against tags, and the measurement tag.
    assert_eq!(server.post("/api/v2/write?bucket=cpu", "m,Host=a usage=1 1").0, 204);
    refused("/api/v2/write?bucket=cpu", "m,host=b usage=1 2", "host", "Host");
    refused("/api/v2/write?bucket=cpu", "m,region=x Region=1 3", "Region", "region");
    refused("/api/v2/write?bucket=cpu", "m USAGE=1 4", "USAGE", "usage");
    refused("/api/v2/write?bucket=cpu", "m _MEASUREMENT=1 5", "_MEASUREMENT", "_measurement");
    assert_eq!(rows(&server, "cpu"), 1, "nothing of a refused request is written");
    // Names that differ otherwise are fine.
    assert_eq!(server.post("/api/v2/write?bucket=cpu", "m,Host=a,host_2=b usage=2 6").0, 204);
}

#[test]
fn a_second_server_on_one_data_directory_refuses_to_start() {
    let mut server = Server::start("integrity-lock", "");
    assert_eq!(server.post("/v1/datasets/d/records", r#"[{"time":1,"v":1}]"#).0, 200);
    let listen = ["--listen".as_ref(), "127.0.0.1:0".as_ref(), "--data-dir".as_ref(), server.data_dir.as_os_str()];
    let output = serve_until_exit(&server.root(), &listen, "a data directory in use");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&server.data_dir.display().to_string()), "names the directory: {stderr}");
    assert!(stderr.contains(&format!("pid {}", server.pid())), "names the holder: {stderr}");
    assert!(output.stdout.is_empty(), "it never listened: {}", String::from_utf8_lossy(&output.stdout));
    // The first server is unharmed; after it dies (kill -9) the lock is free.
    assert_eq!(server.post("/v1/datasets/d/records", r#"[{"time":2,"v":2}]"#).0, 200);
    server.restart();
    assert_eq!(rows(&server, "d"), 2);
    let lock = std::fs::read_to_string(server.data_dir.join("LOCK")).unwrap();
    assert_eq!(lock.trim(), server.pid().to_string());
}

#[test]
fn only_hot_partitions_can_be_unsealed() {
    let config = "[lifecycle]\nscheduler = false\nprecreate_lead_ms = 0\n";
    let server =
        Server::start_with_files("integrity-unseal", config, &[], &[("policies/tiering.toml", TIERING.as_bytes())]);
    let now = wall_clock_ns();
    // 2025-01-01, far older than the tiering's 180 days, and today.
    let records = json!([{"time": "2025-01-01T01:00:00Z", "v": 1}, {"time": now, "v": 2}]);
    assert_eq!(server.post("/v1/datasets/metrics/records", records.to_string()).0, 200);
    let (_, answer) = server.post("/v1/policies/tiering/run", "");
    let run = &answer["runs"][0];
    assert_eq!(run["executed"], 1, "{run}");

    let (status, answer) = server.post("/v1/datasets/metrics/partitions/2025-01-01/unseal", "");
    assert_eq!((status, code(&answer)), (409, Some("partition_not_hot")), "{answer}");
    assert!(message(&answer).contains("cold"), "{answer}");
    let old_row = json!([{"time": "2025-01-01T02:00:00Z", "v": 3}]).to_string();
    let (status, answer) = server.post("/v1/datasets/metrics/records", old_row);
    assert_eq!((status, code(&answer)), (409, Some("partition_read_only")), "still sealed: {answer}");
    server.flush();
    let cold = partitions(&server, "metrics").into_iter().find(|p| p["period_label"] == "2025-01-01").unwrap();
    assert_eq!(
        (cold["tier"].as_str(), cold["read_only"].as_bool(), cold["rows"].as_i64()),
        (Some("cold"), Some(true), Some(1))
    );
    assert!(cold["files"].as_array().unwrap().iter().all(|f| f["storage_target"] == "cold"), "{cold}");

    // A hot partition seals and unseals.
    let today = format!("/v1/datasets/metrics/partitions/{}", day_label(now));
    assert_eq!(server.post(&format!("{today}/seal"), "").0, 200);
    let today_row = json!([{"time": now, "v": 4}]).to_string();
    assert_eq!(server.post("/v1/datasets/metrics/records", today_row.clone()).0, 409);
    let (status, answer) = server.post(&format!("{today}/unseal"), "");
    assert_eq!((status, answer["read_only"].as_bool()), (200, Some(false)), "{answer}");
    assert_eq!(server.post("/v1/datasets/metrics/records", today_row).0, 200);
}

#[test]
fn size_limits_apply_to_every_value_and_name_in_every_format() {
    let config = "[limits]\ntag_value_bytes_max = 16\nstring_value_bytes_max = 32\n";
    let server = Server::start("integrity-limits", config);
    let exceeded = |path: &str, body: String, unit: &str, limit: &str| {
        let (status, answer) = server.post(path, body);
        assert_eq!((status, code(&answer)), (422, Some("limit_exceeded")), "{answer}");
        assert!(message(&answer).contains(unit), "names the {unit}: {answer}");
        assert!(message(&answer).contains(limit), "names {limit}: {answer}");
        assert_eq!(answer["error"]["limit"], limit, "{answer}");
        assert!(answer.to_string().len() < 2_000, "the answer does not echo the value");
    };
    let long = |n: usize| "x".repeat(n);

    // JSON string values.
    let body = json!([{"time": 1, "s": long(32)}, {"time": 2, "s": long(33)}]).to_string();
    exceeded("/v1/datasets/j/records", body, "record 2", "limits.string_value_bytes_max");
    // A tag column keeps the tag limit when JSON writes it.
    assert_eq!(server.post("/api/v2/write?bucket=j", "m,host=a v=1 3").0, 204);
    let body = json!([{"time": 4, "host": long(17)}]).to_string();
    exceeded("/v1/datasets/j/records", body, "record 1", "limits.tag_value_bytes_max");
    // JSON names.
    let body = format!("[{{\"time\":5,\"{}\":1}}]", long(129));
    exceeded("/v1/datasets/j/records", body, "record 1", "column_name_bytes_max");
    assert_eq!(rows(&server, "j"), 1, "only the line-protocol row");

    // Line protocol: the measurement is the `_measurement` tag's value, so a
    // 1 MB measurement is a tag value over the limit; nothing is written,
    // not even the good first line.
    let lp = "/api/v2/write?bucket=l";
    exceeded(lp, format!("m v=1 1\n{} v=2 2", long(1 << 20)), "line 2", "limits.tag_value_bytes_max");
    exceeded(lp, format!("m v=1 1\nm,host={} v=2 2", long(17)), "line 2", "limits.tag_value_bytes_max");
    exceeded(lp, format!("m s=\"{}\" 1", long(33)), "line 1", "limits.string_value_bytes_max");
    exceeded(lp, format!("m,{}=a v=1 1", long(129)), "line 1", "column_name_bytes_max");
    exceeded(lp, format!("m {}=1 1", long(129)), "line 1", "column_name_bytes_max");
    assert_eq!(rows(&server, "l"), 0, "no line-protocol request wrote anything");
    // At the limits exactly, everything is stored.
    let fits = format!("{},host={} s=\"{}\",{}=1 1", long(16), long(16), long(32), long(128));
    assert_eq!(server.post(lp, fits).0, 204);
    assert_eq!(rows(&server, "l"), 1);
}

#[test]
fn json_numbers_are_stored_exactly_or_refused() {
    let server = Server::start("integrity-numbers", "");
    let unrepresentable = |dataset: &str, body: &str, column: &str| {
        let (status, answer) = server.post(&format!("/v1/datasets/{dataset}/records"), body.to_string());
        assert_eq!((status, code(&answer)), (400, Some("unrepresentable_value")), "{body}: {answer}");
        assert!(message(&answer).contains("record 2"), "names the record: {answer}");
        assert_eq!(answer["error"]["column"], column, "{answer}");
        assert_eq!(answer["error"]["record"], 2, "{answer}");
    };
    // A new column is a float column: integers beyond 2^53 would be rounded.
    unrepresentable("f", r#"[{"time":1,"id":1},{"time":2,"id":9007199254740993}]"#, "id");
    assert_eq!(server.get("/v1/datasets/f").1["rows"], 0, "nothing written");
    let exact = r#"[{"time":1,"id":9007199254740992},{"time":2,"id":-9007199254740992},{"time":3,"id":1.5e300}]"#;
    assert_eq!(server.post("/v1/datasets/f/records", exact).0, 200);
    unrepresentable("f", r#"[{"time":4,"id":1},{"time":5,"id":-9007199254740993}]"#, "id");
    // Integer literals wider than 64 bits, which the JSON parser reads as
    // floats; a float literal of the same size is a float and stays one.
    unrepresentable("f", r#"[{"time":6,"id":1},{"time":7,"id":123456789012345678901234567890}]"#, "id");
    assert_eq!(server.post("/v1/datasets/f/records", r#"[{"time":8,"id":1.2345678901234568e29}]"#).0, 200);
    // A string holding such digits is only text.
    assert_eq!(server.post("/v1/datasets/f/records", r#"[{"time":9,"t":"123456789012345678901234567890"}]"#).0, 200);

    // Integer and unsigned columns (made by line protocol) hold their own range.
    assert_eq!(server.post("/api/v2/write?bucket=n", "m i=1i,u=1u 1").0, 204);
    unrepresentable("n", r#"[{"time":2,"i":1},{"time":3,"i":9223372036854775808}]"#, "i");
    unrepresentable("n", r#"[{"time":2,"u":1},{"time":3,"u":-1}]"#, "u");
    unrepresentable("n", r#"[{"time":2,"u":1},{"time":3,"u":18446744073709551616}]"#, "u");
    let edges = r#"[{"time":4,"i":9223372036854775807,"u":18446744073709551615},{"time":5,"i":-9223372036854775808}]"#;
    assert_eq!(server.post("/v1/datasets/n/records", edges).0, 200);

    server.flush();
    let stored: Vec<_> = server.committed_rows("f").into_iter().filter_map(|row| row.get("id").cloned()).collect();
    assert_eq!(
        stored,
        [json!(9007199254740992.0), json!(-9007199254740992.0), json!(1.5e300), json!(1.2345678901234568e29)]
    );
    let rows = server.committed_rows("n");
    let value = |time: i64, column: &str| rows.iter().find(|r| r["time"] == time).unwrap()[column].clone();
    assert_eq!((value(4, "i"), value(4, "u"), value(5, "i")), (json!(i64::MAX), json!(u64::MAX), json!(i64::MIN)));
}

#[test]
fn a_record_naming_a_key_twice_is_refused_whole() {
    let server = Server::start("integrity-duplicate-keys", "");
    for body in [r#"[{"time":1,"v":1},{"time":2,"v":2,"v":3}]"#, "{\"time\":1,\"v\":1}\n{\"time\":2,\"v\":2,\"v\":3}\n"]
    {
        let (status, answer) = server.post("/v1/datasets/d/records", body.to_string());
        assert_eq!((status, code(&answer)), (400, Some("invalid_json")), "{body}: {answer}");
        assert!(message(&answer).contains("\"v\" appears twice"), "names the key: {answer}");
    }
    assert_eq!(server.get("/v1/datasets/d").1["rows"], 0, "nothing written");
}

/// `strata serve --listen 127.0.0.1:0 ARGS`, which must refuse to start
/// because directories are in use: whether it succeeded, and its stderr.
fn refused_start(root: &std::path::Path, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let listen: [&std::ffi::OsStr; 2] = ["--listen".as_ref(), "127.0.0.1:0".as_ref()];
    let args: Vec<&std::ffi::OsStr> = listen.into_iter().chain(args.iter().copied()).collect();
    let output = serve_until_exit(root, &args, "directories in use");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_server_whose_storage_target_is_another_servers_refuses_to_start_and_deletes_nothing() {
    let server = Server::start("integrity-target-lock", "");
    assert_eq!(server.post("/v1/datasets/d/records", r#"[{"time":1,"v":1},{"time":2,"v":2}]"#).0, 200);
    server.flush();
    let hot = server.data_dir.join("storage/hot");
    let files_before = crate::support::files_under(&hot.join("data"));
    assert!(!files_before.is_empty(), "the flush wrote Parquet files");

    // Its own data directory, but the first server's hot directory as its hot target.
    let other = crate::support::temp_dir("integrity-target-lock-other");
    let config = other.join("strata.toml");
    std::fs::write(&config, format!("[storage.targets.hot]\npath = \"{}\"\n", hot.display())).unwrap();
    let data_dir = other.join("data");
    let (success, stderr) =
        refused_start(&other, &["--config".as_ref(), config.as_os_str(), "--data-dir".as_ref(), data_dir.as_os_str()]);
    assert!(!success, "{stderr}");
    assert!(stderr.contains("storage target hot"), "names the target: {stderr}");
    assert!(stderr.contains(&hot.display().to_string()), "names the directory: {stderr}");
    assert!(stderr.contains(&format!("pid {}", server.pid())), "names the holder: {stderr}");

    // Nothing was swept: every committed file is still there and readable.
    assert_eq!(crate::support::files_under(&hot.join("data")), files_before);
    assert_eq!(server.committed_rows("d").len(), 2);
    assert_eq!(rows(&server, "d"), 2);
    std::fs::remove_dir_all(other).unwrap();
}

#[test]
fn deleting_the_lock_file_does_not_let_a_second_server_in() {
    let server = Server::start("integrity-lock-deleted", "");
    assert_eq!(server.post("/v1/datasets/d/records", r#"[{"time":1,"v":1}]"#).0, 200);
    std::fs::remove_file(server.data_dir.join("LOCK")).unwrap();
    let (success, stderr) = refused_start(&server.root(), &["--data-dir".as_ref(), server.data_dir.as_os_str()]);
    assert!(!success, "{stderr}");
    assert!(stderr.contains(&server.data_dir.display().to_string()), "names the directory: {stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert_eq!(server.post("/v1/datasets/d/records", r#"[{"time":2,"v":2}]"#).0, 200);
    assert_eq!(rows(&server, "d"), 2);
}

#[test]
fn a_storage_target_nested_in_another_servers_target_sweeps_none_of_its_files() {
    let shared = crate::support::temp_dir("integrity-nested-shared");
    let inner = shared.join("data/hot");
    let first =
        Server::start("integrity-nested-a", &format!("[storage.targets.hot]\npath = \"{}\"\n", inner.display()));
    assert_eq!(first.post("/v1/datasets/d/records", r#"[{"time":1,"v":1},{"time":2,"v":2}]"#).0, 200);
    first.flush();
    let files_before = crate::support::files_under(&inner.join("data"));
    assert!(!files_before.is_empty(), "the flush wrote Parquet files");

    // Its hot target holds the first server's under data/: the first
    // server's files look like this one's orphans unless the sweep stays out.
    let second =
        Server::start("integrity-nested-b", &format!("[storage.targets.hot]\npath = \"{}\"\n", shared.display()));
    assert_eq!(second.get("/ready").0, 200);
    assert_eq!(crate::support::files_under(&inner.join("data")), files_before);
    assert_eq!(first.committed_rows("d").len(), 2);
    drop((first, second));
    std::fs::remove_dir_all(shared).unwrap();
}

#[test]
fn a_storage_target_inside_another_servers_data_directory_refuses_to_start() {
    let server = Server::start("integrity-target-inside", "");
    // The first server empties its query-tmp at every start.
    let inside = server.data_dir.join("query-tmp/stolen");
    let other = crate::support::temp_dir("integrity-target-inside-other");
    let config = other.join("strata.toml");
    std::fs::write(&config, format!("[storage.targets.cold]\npath = \"{}\"\n", inside.display())).unwrap();
    let data_dir = other.join("data");
    let (success, stderr) =
        refused_start(&other, &["--config".as_ref(), config.as_os_str(), "--data-dir".as_ref(), data_dir.as_os_str()]);
    assert!(!success, "{stderr}");
    assert!(stderr.contains("storage target cold"), "names the target: {stderr}");
    assert!(stderr.contains(&format!("lies inside {}", server.data_dir.display())), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", server.pid())), "names the holder: {stderr}");
    std::fs::remove_dir_all(other).unwrap();
}
