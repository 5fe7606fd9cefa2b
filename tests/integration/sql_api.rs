//! `/api/v3/query_sql`: InfluxDB 3's SQL over HTTP, in every format, read
//! back with a real parser per format, on the same locked-down engine as
//! `/v1/sql` (same refusals, same codes, same read scopes).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use serde_json::{Value, json};

use crate::support::Server;

const T0: i64 = 1_767_225_600_000_000_000;

/// The rows written: (host, usage, count); every fourth has no `usage`.
fn written() -> Vec<(String, Option<f64>, i64)> {
    (0..40).map(|i| (format!("h{}", i % 3), (i % 4 != 3).then_some(i as f64 * 0.5), i)).collect()
}

/// A server with `cpu` written through `/api/v3/write_lp`, half flushed and
/// half buffered, and a second dataset `other`.
fn loaded(name: &str) -> Server {
    let server = Server::start(name, "");
    let lines: Vec<String> = written()
        .iter()
        .enumerate()
        .map(|(i, (host, usage, count))| {
            let usage = usage.map(|u| format!("usage={u},")).unwrap_or_default();
            format!("cpu,host={host} {usage}count={count}i {}", T0 + i as i64)
        })
        .collect();
    assert_eq!(server.post("/api/v3/write_lp?db=cpu", lines[..20].join("\n")).0, 204);
    server.flush();
    assert_eq!(server.post("/api/v3/write_lp?db=cpu", lines[20..].join("\n")).0, 204);
    assert_eq!(server.post("/api/v3/write_lp?db=other", format!("o v=1 {T0}")).0, 204);
    server
}

const SQL: &str = "SELECT host, usage, count FROM cpu ORDER BY count";

fn get(server: &Server, query: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let response = server.client().get(format!("{}/api/v3/query_sql", server.url)).query(query).send().unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, content_type, response.bytes().unwrap().to_vec())
}

fn ok(server: &Server, format: &str) -> (String, Vec<u8>) {
    let (status, content_type, body) = get(server, &[("db", "cpu"), ("q", SQL), ("format", format)]);
    assert_eq!(status, 200, "{format}: {}", String::from_utf8_lossy(&body));
    (content_type, body)
}

/// The expected rows as JSON objects, nulls omitted where `omit_null`.
fn expected(omit_null: bool) -> Vec<Value> {
    written()
        .into_iter()
        .map(|(host, usage, count)| {
            let mut row = serde_json::Map::new();
            row.insert("host".into(), json!(host));
            if usage.is_some() || !omit_null {
                row.insert("usage".into(), json!(usage));
            }
            row.insert("count".into(), json!(count));
            Value::Object(row)
        })
        .collect()
}

fn without_nulls(rows: Vec<Value>) -> Vec<Value> {
    rows.into_iter()
        .map(|row| Value::Object(row.as_object().unwrap().clone().into_iter().filter(|(_, v)| !v.is_null()).collect()))
        .collect()
}

#[test]
fn every_format_answers_the_rows_written() {
    let server = loaded("sql-api-formats");
    // json: one array of row objects.
    let (content_type, body) = ok(&server, "json");
    assert_eq!(content_type, "application/json");
    let rows: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(without_nulls(rows), expected(true));
    // The default format is json.
    let (status, _, body) = get(&server, &[("db", "cpu"), ("q", SQL)]);
    assert_eq!(status, 200);
    assert_eq!(without_nulls(serde_json::from_slice(&body).unwrap()), expected(true));
    // jsonl: one object a line.
    let (_, body) = ok(&server, "jsonl");
    let rows: Vec<Value> =
        body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    assert_eq!(without_nulls(rows), expected(true));
    // csv: a header, then records; an empty field is null.
    let (content_type, body) = ok(&server, "csv");
    assert_eq!(content_type, "text/csv");
    let mut reader = csv::Reader::from_reader(body.as_slice());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), ["host", "usage", "count"]);
    let rows: Vec<Value> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let mut row = serde_json::Map::new();
            row.insert("host".into(), json!(r[0]));
            if !r[1].is_empty() {
                row.insert("usage".into(), json!(r[1].parse::<f64>().unwrap()));
            }
            row.insert("count".into(), json!(r[2].parse::<i64>().unwrap()));
            Value::Object(row)
        })
        .collect();
    assert_eq!(rows, expected(true));
    // parquet: a whole file, typed.
    let (content_type, body) = ok(&server, "parquet");
    assert_eq!(content_type, "application/vnd.apache.parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(body))
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let host = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let usage = batch.column(1).as_primitive::<Float64Type>();
        let count = batch.column(2).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let mut row = serde_json::Map::new();
            row.insert("host".into(), json!(host.as_string::<i32>().value(i)));
            row.insert("usage".into(), if usage.is_null(i) { Value::Null } else { json!(usage.value(i)) });
            row.insert("count".into(), json!(count.value(i)));
            rows.push(Value::Object(row));
        }
    }
    assert_eq!(rows, expected(false));
    // pretty: a bordered table, a line per row.
    let (_, body) = ok(&server, "pretty");
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3 + 40 + 1, "{text}");
    let cells = |line: &str| line.split('|').map(str::trim).filter(|c| !c.is_empty()).collect::<Vec<_>>().join(",");
    assert_eq!(cells(lines[1]), "host,usage,count");
    assert_eq!(cells(lines[3]), "h0,0.0,0");
    assert_eq!(cells(lines[6]), "h0,3"); // usage is null: an empty cell
    assert!(lines[0].starts_with("+-") && lines[2] == lines[0] && lines[43] == lines[0], "{text}");
}

#[test]
fn the_body_forms_and_db_mean_what_influxdb_3_means() {
    let server = loaded("sql-api-forms");
    let count = "SELECT count(*) AS n FROM cpu";
    // A JSON body, as the InfluxDB 3 clients post it.
    let body = json!({ "db": "cpu", "q": count, "format": "jsonl" }).to_string();
    let (status, response) = server.post("/api/v3/query_sql", body);
    assert_eq!((status, response), (200, json!({ "n": 40 })));
    // Query parameters with an empty POST body.
    let (status, response) = server.post(&format!("/api/v3/query_sql?db=cpu&q={}", "SELECT%201%20AS%20one"), "");
    assert_eq!((status, response), (200, json!([{ "one": 1 }])));
    // The SQL reads datasets by name: `db` names the one the query is about.
    let (status, response) = server.post(
        "/api/v3/query_sql",
        json!({ "db": "cpu", "q": "SELECT (SELECT count(*) FROM other) AS o, count(*) AS n FROM cpu" }).to_string(),
    );
    assert_eq!((status, response), (200, json!([{ "o": 1, "n": 40 }])));
    // An empty answer is an empty array.
    let (status, response) =
        server.post("/api/v3/query_sql", json!({ "db": "cpu", "q": "SELECT * FROM cpu WHERE false" }).to_string());
    assert_eq!((status, response), (200, json!([])));
    let refusals = [
        (json!({ "db": "nope", "q": count }), 404, "not_found"),
        (json!({ "q": count }), 400, "invalid_query"),
        (json!({ "db": "cpu" }), 400, "invalid_query"),
        (json!({ "db": "cpu", "q": count, "format": "xml" }), 400, "invalid_query"),
        (json!({ "db": "cpu", "q": count, "params": {} }), 400, "invalid_query"),
    ];
    for (body, status, code) in refusals {
        let (actual, error) = server.post("/api/v3/query_sql", body.to_string());
        assert_eq!((actual, error["error"]["code"].as_str().unwrap_or_default()), (status, code), "{body}: {error}");
    }
    assert_eq!(server.request("PUT", "/api/v3/query_sql", &[], "").0, 405);
}

/// Hostile SQL gets the status and code `/v1/sql` gives it.
#[test]
fn hostile_sql_is_refused_as_v1_sql_refuses_it() {
    let server = loaded("sql-api-hostile");
    let data_dir = server.data_dir.display().to_string();
    let hostile = [
        "SELECT 1; SELECT 2".to_string(),
        "SELECT count(*) FROM cpu; COPY (SELECT 1) TO '/tmp/x.csv'".into(),
        format!("COPY cpu TO '{data_dir}/escape.csv'"),
        "SET threads = 1".into(),
        "SET enable_external_access = true".into(),
        "SELECT * FROM read_csv('/etc/passwd')".into(),
        "SELECT * FROM read_parquet('/etc/passwd')".into(),
        "SELECT * FROM query_table('cpu')".into(),
        "ATTACH ':memory:' AS m".into(),
        "INSTALL httpfs".into(),
        "SELECT nope FROM cpu".into(),
    ];
    let mut codes = BTreeMap::new();
    for sql in &hostile {
        let (v1_status, v1) = server.post("/v1/sql", sql.clone());
        let (status, error) = server.post("/api/v3/query_sql", json!({ "db": "cpu", "q": sql }).to_string());
        let code = error["error"]["code"].as_str().unwrap_or_default().to_string();
        assert!((400..500).contains(&status), "{sql}: {status} {error}");
        assert_eq!((status, code.as_str()), (v1_status, v1["error"]["code"].as_str().unwrap_or_default()), "{sql}");
        codes.insert(sql.clone(), code);
    }
    assert_eq!(codes["SELECT 1; SELECT 2"], "query_refused");
    assert_eq!(codes["SET threads = 1"], "query_refused");
    assert_eq!(codes["SELECT nope FROM cpu"], "invalid_query");
    // Nothing changed: the data answers the same.
    let (_, body) = ok(&server, "json");
    assert_eq!(without_nulls(serde_json::from_slice(&body).unwrap()), expected(true));
}

/// `strata token create` offline; the token is the first line of stdout.
pub fn offline_token(server: &Server, name: &str, scopes: &[&str]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_strata"));
    command.args(["token", "create", "--name", name]).arg("--data-dir").arg(&server.data_dir);
    for scope in scopes {
        command.args(["--scope", scope]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().next().unwrap().to_string()
}

#[test]
fn every_dataset_read_needs_its_read_scope() {
    let mut server = loaded("sql-api-scopes");
    server.terminate();
    let admin = offline_token(&server, "root", &["admin"]);
    let reader = offline_token(&server, "reader", &["read:cpu"]);
    server.start_again();
    let call = |token: Option<&str>, body: Value| {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        let (status, _, body) = server.request("POST", "/api/v3/query_sql", &headers, body.to_string());
        (status, body["error"]["code"].as_str().map(str::to_string), body)
    };
    let count = "SELECT count(*) AS n FROM cpu";
    assert_eq!(call(Some(&reader), json!({ "db": "cpu", "q": count })).2, json!([{ "n": 40 }]));
    assert_eq!(call(Some(&admin), json!({ "db": "other", "q": "SELECT v FROM other" })).2, json!([{ "v": 1.0 }]));
    let refused = [
        (None, json!({ "db": "cpu", "q": count }), 401, "unauthorized"),
        (Some(&reader), json!({ "db": "other", "q": count }), 403, "forbidden"),
        (Some(&reader), json!({ "db": "cpu", "q": "SELECT count(*) FROM cpu, other" }), 403, "forbidden"),
    ];
    for (token, body, status, code) in refused {
        let (actual, actual_code, response) = call(token.map(String::as_str), body.clone());
        assert_eq!((actual, actual_code.as_deref()), (status, Some(code)), "{body}: {response}");
    }
    // The `db` of the query string is checked before the body is read.
    let (status, _, _) = server.request(
        "GET",
        "/api/v3/query_sql?db=other&q=SELECT%201",
        &[("Authorization", &format!("Bearer {reader}"))],
        "",
    );
    assert_eq!(status, 403);
}
