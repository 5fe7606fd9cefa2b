//! Schema changes: rename, drop and cast a column, each with its dry run,
//! over flushed files and buffered rows alike, across a restart, through
//! structured queries, `/v1/sql` and InfluxQL.

use serde_json::{Value, json};

use crate::support::Server;

/// 2025-01-15T00:00:00Z, in seconds.
const T0: i64 = 1_736_899_200;

/// One `cpu` line per `(i, value)`: `host=h{i}`, the value in `field`,
/// `c` as `i * 10` and `d` a float.
fn lines(field: &str, rows: std::ops::Range<i64>) -> String {
    rows.map(|i| format!("cpu,host=h{i} {field}={i}i,c={}i,d=1.5 {}\n", i * 10, T0 + i)).collect()
}

fn write(server: &Server, body: String) -> (u16, Value) {
    server.post("/api/v2/write?bucket=metrics&precision=s", body)
}

fn change(server: &Server, body: Value) -> (u16, Value) {
    server.post("/v1/datasets/metrics/schema", body.to_string())
}

fn sql(server: &Server, text: &str) -> Vec<Value> {
    let (status, answer) = server.post("/v1/sql", text.to_string());
    assert_eq!(status, 200, "{text}: {answer}");
    answer["rows"].as_array().unwrap().clone()
}

fn versions(server: &Server) -> Value {
    let (status, view) = server.get("/v1/datasets/metrics");
    assert_eq!(status, 200, "{view}");
    view["schema_versions"].clone()
}

/// The sum of the renamed column three ways: structured, SQL, InfluxQL.
fn sums(server: &Server, column: &str) -> [i64; 3] {
    let range = json!({ "start": 0, "end": 4_000_000_000_000_000_000_i64 });
    let aggregation = json!([{ "fn": "sum", "column": column, "alias": "s" }]);
    let query = json!({ "time_range": range, "downsample": { "aggregations": aggregation } });
    let (status, structured) = server.post("/v1/datasets/metrics/query", query.to_string());
    assert_eq!(status, 200, "{structured}");
    let by_sql = sql(server, &format!("SELECT sum({column}) AS s FROM metrics"));
    let q: String = form_urlencoded::byte_serialize(format!("SELECT sum({column}) FROM cpu").as_bytes()).collect();
    let (status, influx) = server.get(&format!("/query?db=metrics&q={q}"));
    assert_eq!(status, 200, "{influx}");
    let influx_sum = &influx["results"][0]["series"][0]["values"][0][1];
    let number = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("a sum: {v}")) as i64;
    [number(&structured["rows"][0]["s"]), number(&by_sql[0]["s"]), number(influx_sum)]
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

#[test]
fn renamed_dropped_and_cast_columns_read_the_same_from_files_buffers_and_after_a_restart() {
    let config = "[ingest]\nflush_age_ms = 3600000\n[lifecycle.compaction]\nmin_files = 2\n";
    let mut server = Server::start("schema-changes", config);
    // Rows 0..4 in files, 4..6 buffered, both under `a`.
    assert_eq!(write(&server, lines("a", 0..4)).0, 204);
    server.flush();
    assert_eq!(write(&server, lines("a", 4..6)).0, 204);
    let before = versions(&server);

    // A dry run answers what would change and changes nothing.
    let (status, dry) = change(&server, json!({ "op": "rename", "from": "a", "to": "b", "dry": true }));
    assert_eq!(status, 200, "{dry}");
    assert_eq!((dry["dry"].as_bool(), dry["changed"].as_bool()), (Some(true), Some(true)), "{dry}");
    assert_eq!(dry["affected"]["buffered_rows"], 2, "{dry}");
    assert!(dry["affected"]["files"].as_i64().unwrap() >= 1, "{dry}");
    assert_eq!(versions(&server), before);
    assert_eq!(sums(&server, "a"), [15; 3]);

    let (status, renamed) = change(&server, json!({ "op": "rename", "from": "a", "to": "b" }));
    assert_eq!(
        (status, renamed["version"].as_i64()),
        (200, Some(before.as_array().unwrap().len() as i64)),
        "{renamed}"
    );
    // New rows under the new name; the old name is refused, nothing written.
    assert_eq!(write(&server, lines("b", 6..8)).0, 204);
    let (status, refused) = write(&server, lines("a", 8..9));
    assert_eq!((status, code(&refused)), (409, "column_renamed"), "{refused}");
    assert_eq!(refused["error"]["conflicts_with"], "b", "{refused}");
    let oracle: i64 = (0..8).sum();
    assert_eq!(sums(&server, "b"), [oracle; 3], "old-file, buffered and new rows together");
    let (status, gone) = server.post("/v1/sql", "SELECT a FROM metrics");
    assert_eq!(status, 400, "the old name reads nothing: {gone}");

    // Drop `d`: dry, then for real.
    let (status, dry) = change(&server, json!({ "op": "drop", "column": "d", "dry": true }));
    assert_eq!((status, dry["changed"].as_bool()), (200, Some(true)), "{dry}");
    assert!(sql(&server, "SELECT * FROM metrics LIMIT 1")[0].get("d").is_some(), "the dry run dropped nothing");
    let (status, refused) = change(&server, json!({ "op": "drop", "column": "d", "archive": true }));
    assert_eq!((status, code(&refused)), (409, "column_not_archived"), "{refused}");
    assert_eq!(change(&server, json!({ "op": "drop", "column": "d" })).0, 200);

    // Cast `c` (integer) to text: dry, then for real; new values are text.
    let (status, dry) = change(&server, json!({ "op": "cast", "column": "c", "type": "text", "dry": true }));
    assert_eq!((status, dry["changed"].as_bool()), (200, Some(true)), "{dry}");
    assert_eq!(sql(&server, "SELECT c FROM metrics ORDER BY time LIMIT 1")[0]["c"], 0, "still an integer");
    assert_eq!(change(&server, json!({ "op": "cast", "column": "c", "type": "text" })).0, 200);
    let text_row = format!("cpu,host=h8 b=8i,c=\"eighty\" {}\n", T0 + 8);
    assert_eq!(write(&server, text_row).0, 204);
    let (status, refused) = write(&server, format!("cpu,host=h9 c=90i {}\n", T0 + 9));
    assert_eq!((status, code(&refused)), (400, "schema_conflict"), "{refused}");

    let expected_c: Vec<Value> = (0..8).map(|i| json!((i * 10).to_string())).chain([json!("eighty")]).collect();
    let oracle: i64 = (0..9).sum();
    let check = |server: &Server| {
        let rows = sql(server, "SELECT * FROM metrics ORDER BY time");
        assert_eq!(rows.len(), 9);
        assert!(rows.iter().all(|r| r.get("d").is_none() && r.get("a").is_none()), "{rows:?}");
        assert_eq!(rows.iter().map(|r| r["c"].clone()).collect::<Vec<_>>(), expected_c);
        assert_eq!(sums(server, "b"), [oracle; 3]);
        let range = json!({ "start": 0, "end": 4_000_000_000_000_000_000_i64 });
        let query = json!({ "time_range": range, "columns": ["time", "b", "c"] });
        let (status, structured) = server.post("/v1/datasets/metrics/query", query.to_string());
        assert_eq!(status, 200, "{structured}");
        let rows = structured["rows"].as_array().unwrap();
        assert_eq!(rows.iter().map(|r| r["c"].clone()).collect::<Vec<_>>(), expected_c, "{structured}");
        assert_eq!(rows.iter().map(|r| r["b"].as_i64().unwrap()).collect::<Vec<_>>(), (0..9).collect::<Vec<_>>());
    };
    check(&server);

    // Refusals carry stable codes and change nothing.
    let now = versions(&server);
    for (body, status, expected) in [
        (json!({ "op": "cast", "column": "b", "type": "float" }), 409, "cast_not_lossless"),
        (json!({ "op": "rename", "from": "time", "to": "t" }), 409, "time_column_fixed"),
        (json!({ "op": "drop", "column": "time" }), 409, "time_column_fixed"),
        (json!({ "op": "rename", "from": "nope", "to": "x" }), 404, "column_not_found"),
        (json!({ "op": "rename", "from": "b", "to": "HOST" }), 409, "column_exists"),
        (json!({ "op": "truncate", "column": "b" }), 400, "invalid_json"),
    ] {
        let (got, answer) = change(&server, body.clone());
        assert_eq!((got, code(&answer)), (status, expected), "{body}: {answer}");
    }
    let (_, lossy) = change(&server, json!({ "op": "cast", "column": "b", "type": "float" }));
    assert!(lossy["error"]["message"].as_str().unwrap().contains("from integer to float"), "{lossy}");
    assert_eq!(versions(&server), now);
    let changes: Vec<&str> = now.as_array().unwrap().iter().filter_map(|v| v["change"].as_str()).collect();
    assert_eq!(changes, ["rename \"a\" to \"b\"", "drop \"d\"", "cast \"c\" to text"]);

    // Buffered rows (old names and types among them) survive a kill, and
    // read the same before and after they are flushed.
    server.restart();
    assert_eq!(versions(&server), now);
    check(&server);
    server.flush();
    check(&server);
    let (status, refused) = write(&server, format!("cpu,host=h9 a=9i {}\n", T0 + 9));
    assert_eq!((status, code(&refused)), (409, "column_renamed"), "{refused}");

    // A dropped name written again is a new column: the dropped values
    // (still inside older files) stay unread.
    assert_eq!(write(&server, format!("cpu,host=h9 b=9i,d=7.5 {}\n", T0 + 9)).0, 204);
    let d_values = "SELECT d FROM metrics WHERE d IS NOT NULL";
    assert_eq!(sql(&server, d_values), [json!({ "d": 7.5 })]);
    server.flush();

    // Compaction writes the current schema: physical names, new types, no
    // dropped column; reads do not change.
    let (status, compacted) = server.post("/v1/datasets/metrics/compact", "{}");
    assert_eq!((status, compacted["partitions"][0]["outcome"].as_str()), (200, Some("completed")), "{compacted}");
    assert_eq!(sql(&server, d_values), [json!({ "d": 7.5 })]);
    assert_eq!(sums(&server, "b"), [oracle + 9; 3]);
    let stored = server.committed_rows("metrics");
    assert_eq!(stored.len(), 10);
    assert!(stored.iter().all(|r| r.contains_key("a") && !r.contains_key("b") && !r.contains_key("d")), "{stored:?}");
    let stored_c: Vec<Value> = stored.iter().map(|r| r.get("c").cloned().unwrap_or(Value::Null)).collect();
    assert_eq!(stored_c, expected_c.iter().cloned().chain([Value::Null]).collect::<Vec<_>>());
}
