//! The InfluxDB-compatible read side with the real clients: the `influx`
//! 1.x shell, influxdb-client (Python), and the InfluxQL Grafana sends,
//! checked against values computed here from the rows written and against
//! the structured query answering the same question.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};

use crate::auth::{create_offline, wait_for_status};
use crate::support::{Server, client};

/// 2026-01-01T00:00:00Z, in seconds.
const T0_S: i64 = 1_767_225_600;
const MINUTES: i64 = 120;

struct Row {
    second: i64,
    host: String,
    region: String,
    usage: f64,
    n: i64,
}

/// Two hours of one point a minute for three hosts (h1 misses every 7th).
fn rows() -> Vec<Row> {
    let mut out = Vec::new();
    for minute in 0..MINUTES {
        for host in 0..3i64 {
            if host == 1 && minute % 7 == 3 {
                continue;
            }
            out.push(Row {
                second: T0_S + minute * 60 + host,
                host: format!("h{host}"),
                region: format!("r{}", host % 2),
                usage: ((minute * 31 + host * 17) % 100) as f64 + 0.5,
                n: minute * 10 + host,
            });
        }
    }
    out
}

/// Writes `rows` as `cpu` and one `mem` point a minute into db `telegraf`
/// (seconds precision) and as `cpu` into dataset `cpu`; flushes half.
fn load(server: &Server, rows: &[Row]) {
    let lines = |rows: &[Row]| -> String {
        rows.iter()
            .map(|r| format!("cpu,host={},region={} usage={:?},n={}i {}\n", r.host, r.region, r.usage, r.n, r.second))
            .collect()
    };
    let (first, second) = rows.split_at(rows.len() / 2);
    for (i, part) in [first, second].into_iter().enumerate() {
        let mem: String =
            part.iter().filter(|r| r.host == "h0").map(|r| format!("mem,host=h0 used=1i {}\n", r.second)).collect();
        let (status, body) = server.post("/write?db=telegraf&precision=s&rp=autogen", lines(part) + &mem);
        assert_eq!(status, 204, "{body}");
        let (status, body) = server.post("/api/v2/write?bucket=cpu&precision=s", lines(part));
        assert_eq!(status, 204, "{body}");
        if i == 0 {
            server.flush();
        }
    }
}

fn influxql(server: &Server, db: &str, q: &str, extra: &str) -> (u16, Value) {
    let url = format!("/query?db={db}&q={}{extra}", urlencode(q));
    server.get(&url)
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn ms(second: i64) -> i64 {
    second * 1000
}

fn rfc3339(second: i64) -> String {
    chrono::DateTime::from_timestamp(second, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The first (only) series of statement 0, or a panic showing the answer.
fn single_series(answer: &Value) -> &Value {
    let series = answer["results"][0]["series"].as_array().unwrap_or_else(|| panic!("no series: {answer}"));
    assert_eq!(series.len(), 1, "{answer}");
    &series[0]
}

#[test]
fn ping_health_and_show_statements_answer_as_influxdb_does() {
    let server = Server::start("influx-show", "");
    load(&server, &rows());
    for method in ["GET", "HEAD"] {
        let (status, headers, _) = server.request(method, "/ping", &[], "");
        assert_eq!(status, 204);
        assert!(headers["x-influxdb-version"].to_str().unwrap().starts_with("1.8"), "{headers:?}");
    }
    let (status, health) = server.get("/health");
    assert_eq!((status, health["status"].as_str(), health["name"].is_string()), (200, Some("pass"), true));

    let (status, answer) = influxql(&server, "", "SHOW DATABASES", "");
    assert_eq!(status, 200);
    assert_eq!(single_series(&answer)["values"], json!([["cpu"], ["telegraf"]]), "{answer}");
    let (_, answer) = influxql(&server, "telegraf", "SHOW MEASUREMENTS", "");
    assert_eq!(single_series(&answer)["values"], json!([["cpu"], ["mem"]]), "{answer}");
    let (_, answer) = influxql(&server, "telegraf", "SHOW MEASUREMENTS WITH MEASUREMENT =~ /(?i)ME/ LIMIT 100", "");
    assert_eq!(single_series(&answer)["values"], json!([["mem"]]), "{answer}");
    let (_, answer) = influxql(&server, "telegraf", "SHOW MEASUREMENTS LIMIT 1", "");
    assert_eq!(single_series(&answer)["values"], json!([["cpu"]]), "{answer}");
    let (_, answer) = influxql(&server, "cpu", "SHOW MEASUREMENTS", "");
    assert_eq!(single_series(&answer)["values"], json!([["cpu"]]), "{answer}");
    let (_, answer) = influxql(&server, "telegraf", "SHOW TAG KEYS FROM cpu", "");
    assert_eq!(single_series(&answer)["values"], json!([["host"], ["region"]]), "{answer}");
    let (_, answer) = influxql(&server, "telegraf", "SHOW TAG VALUES FROM \"cpu\" WITH KEY = \"host\"", "");
    assert_eq!(single_series(&answer)["values"], json!([["host", "h0"], ["host", "h1"], ["host", "h2"]]));
    let (_, answer) =
        influxql(&server, "telegraf", "SHOW TAG VALUES FROM cpu WITH KEY IN (\"region\") WHERE host = 'h1'", "");
    assert_eq!(single_series(&answer)["values"], json!([["region", "r1"]]), "{answer}");
    let (_, answer) = influxql(&server, "telegraf", "SHOW FIELD KEYS FROM mem", "");
    assert_eq!(single_series(&answer)["values"], json!([["used", "integer"]]), "{answer}");
    let (_, answer) = influxql(&server, "telegraf", "SHOW TAG KEYS FROM mem", "");
    assert_eq!(single_series(&answer)["values"], json!([["host"]]), "{answer}");
    let (_, answer) = influxql(&server, "cpu", "SHOW FIELD KEYS", "");
    assert_eq!(single_series(&answer)["values"], json!([["usage", "float"], ["n", "integer"]]), "{answer}");
    let (_, answer) = influxql(&server, "telegraf", "SHOW RETENTION POLICIES ON telegraf", "");
    assert_eq!(single_series(&answer)["values"][0][0], "autogen", "{answer}");
    let (status, buckets) = server.get("/api/v2/buckets");
    assert_eq!(status, 200);
    assert_eq!(buckets["buckets"].as_array().unwrap().len(), 2, "{buckets}");
}

#[test]
fn selects_answer_with_values_computed_from_the_rows_written() {
    let server = Server::start("influx-select", "");
    let rows = rows();
    load(&server, &rows);
    // GROUP BY time(10m), host over half an hour: mean usage per bucket.
    let (start, end) = (T0_S + 600, T0_S + 2400);
    let q = format!(
        "SELECT mean(usage) AS m, count(n) FROM cpu WHERE time >= {}ms AND time < {}ms GROUP BY time(10m), host",
        ms(start),
        ms(end)
    );
    for db in ["telegraf", "cpu"] {
        let (status, answer) = influxql(&server, db, &q, "&epoch=s");
        assert_eq!(status, 200, "{answer}");
        let series = answer["results"][0]["series"].as_array().unwrap_or_else(|| panic!("{answer}"));
        assert_eq!(series.len(), 3, "{answer}");
        for (i, series) in series.iter().enumerate() {
            let host = format!("h{i}");
            assert_eq!(series["tags"], json!({ "host": host }));
            assert_eq!(series["columns"], json!(["time", "m", "count"]));
            let mut expected = Vec::new();
            for bucket in (start..end).step_by(600) {
                let usage: Vec<f64> = rows
                    .iter()
                    .filter(|r| r.host == host && r.second >= bucket && r.second < bucket + 600)
                    .map(|r| r.usage)
                    .collect();
                let mean = usage.iter().sum::<f64>() / usage.len() as f64;
                expected.push(json!([bucket, mean, usage.len()]));
            }
            assert_eq!(series["values"], json!(expected), "{host}");
        }
    }
    // Raw, newest first, RFC 3339 times.
    let q = "SELECT usage, n FROM cpu WHERE host = 'h2' ORDER BY time DESC LIMIT 3";
    let (_, answer) = influxql(&server, "telegraf", q, "");
    let latest: Vec<Value> = rows
        .iter()
        .rev()
        .filter(|r| r.host == "h2")
        .take(3)
        .map(|r| json!([rfc3339(r.second), r.usage, r.n]))
        .collect();
    assert_eq!(single_series(&answer)["values"], json!(latest), "{answer}");
    // Several statements, POSTed as a form: one result each.
    let body = format!("db=telegraf&q={}", urlencode("SELECT count(used) FROM mem; SELECT max(n) FROM cpu"));
    let response = client()
        .post(format!("{}/query?epoch=ms", server.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().unwrap();
    assert_eq!(answer["results"][0]["series"][0]["values"], json!([[0, MINUTES]]), "{answer}");
    let max_n = rows.iter().map(|r| r.n).max().unwrap();
    assert_eq!(answer["results"][1]["statement_id"], 1);
    assert_eq!(answer["results"][1]["series"][0]["values"], json!([[0, max_n]]), "{answer}");
    // InfluxDB 3's endpoint: one object per row.
    let q = format!("SELECT usage FROM cpu WHERE host = 'h0' AND time < {}s", T0_S + 120);
    let (status, answer) = server.get(&format!("/api/v3/query_influxql?db=telegraf&q={}", urlencode(&q)));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!([
            { "iox::measurement": "cpu", "time": rfc3339(T0_S), "usage": rows[0].usage },
            { "iox::measurement": "cpu", "time": rfc3339(T0_S + 60), "usage": rows[3].usage },
        ])
    );
}

/// The queries Grafana's InfluxQL editor generates (`$timeFilter` expanded
/// to epoch milliseconds, `$__interval` substituted) and the structured
/// query asking the same: InfluxQL answers with the structured values.
#[test]
fn grafana_queries_equal_the_structured_query() {
    let server = Server::start("influx-grafana", "");
    load(&server, &rows());
    let (from, to) = (ms(T0_S + 1800), ms(T0_S + 5400) - 1);
    let time_filter = format!("time >= {from}ms and time <= {to}ms");
    let range = json!({ "start": from * 1_000_000, "end": to * 1_000_000 + 1, "precision": "ns" });
    let measurement = json!({ "column": "_measurement", "op": "=", "value": "cpu" });
    let cases = [
        (
            "SELECT mean(\"usage\") FROM \"cpu\" WHERE (\"host\" = 'h1') AND $timeFilter GROUP BY time($__interval) fill(null)",
            json!({ "filters": { "and": [{ "column": "host", "op": "=", "value": "h1" }, measurement] },
                    "downsample": { "interval": "5m", "fill": "null", "aggregations": [{ "fn": "avg", "column": "usage" }] } }),
            None,
        ),
        (
            "SELECT max(\"usage\") FROM \"autogen\".\"cpu\" WHERE $timeFilter GROUP BY time($__interval), \"host\" fill(none)",
            json!({ "filters": measurement, "group_by": ["host"],
                    "downsample": { "interval": "5m", "aggregations": [{ "fn": "max", "column": "usage" }] } }),
            None,
        ),
        (
            "SELECT last(\"n\") FROM \"cpu\" WHERE (\"host\" = 'h1') AND $timeFilter GROUP BY time($__interval) fill(previous)",
            json!({ "filters": { "and": [{ "column": "host", "op": "=", "value": "h1" }, measurement] },
                    "downsample": { "interval": "5m", "fill": "previous", "aggregations": [{ "fn": "last", "column": "n" }] } }),
            None,
        ),
        (
            "SELECT count(\"usage\") FROM \"cpu\" WHERE (\"region\" = 'r1') AND $timeFilter GROUP BY time($__interval) fill(0)",
            json!({ "filters": { "and": [{ "column": "region", "op": "=", "value": "r1" }, measurement] },
                    "downsample": { "interval": "5m", "fill": "null", "aggregations": [{ "fn": "count", "column": "usage" }] } }),
            Some(json!(0)),
        ),
        (
            "SELECT mean(\"usage\") FROM \"cpu\" WHERE (\"host\" =~ /^(h0|h2)$/) AND $timeFilter GROUP BY time($__interval), \"host\" fill(none)",
            json!({ "filters": { "and": [{ "column": "host", "op": "in", "value": ["h0", "h2"] }, measurement] }, "group_by": ["host"],
                    "downsample": { "interval": "5m", "aggregations": [{ "fn": "avg", "column": "usage" }] } }),
            None,
        ),
    ];
    for (template, mut structured, fill) in cases {
        let q = template.replace("$timeFilter", &time_filter).replace("$__interval", "5m");
        let (status, answer) = influxql(&server, "telegraf", &q, "&epoch=ms");
        assert_eq!(status, 200, "{q}: {answer}");
        structured["time_range"] = range.clone();
        let (status, expected) = server.post("/v1/datasets/telegraf/query", structured.to_string());
        assert_eq!(status, 200, "{expected}");
        let alias = expected["columns"].as_array().unwrap().last().unwrap()["name"].as_str().unwrap().to_string();
        let mut by_group: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for row in expected["rows"].as_array().unwrap() {
            let time = chrono::DateTime::parse_from_rfc3339(row["time"].as_str().unwrap()).unwrap().timestamp_millis();
            let value = match (&row[&alias], &fill) {
                (Value::Null, Some(fill)) => fill.clone(),
                (value, _) => value.clone(),
            };
            by_group
                .entry(row["host"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(json!([time, value]));
        }
        let series = answer["results"][0]["series"].as_array().unwrap_or_else(|| panic!("{q}: {answer}"));
        let got: BTreeMap<String, Vec<Value>> = series
            .iter()
            .map(|s| {
                let host = s["tags"]["host"].as_str().unwrap_or_default().to_string();
                (host, s["values"].as_array().unwrap().clone())
            })
            .collect();
        assert!(!got.is_empty(), "{q}");
        assert_eq!(got, by_group, "{q}");
    }
}

#[test]
fn unsupported_statements_get_an_error_naming_the_construct() {
    let server = Server::start("influx-errors", "");
    load(&server, &rows()[..30]);
    let statement_errors = [
        ("DROP MEASUREMENT cpu", "DROP"),
        ("CREATE DATABASE x", "CREATE"),
        ("DELETE FROM cpu", "DELETE"),
        ("SHOW SERIES", "SHOW SERIES"),
        ("SELECT mean(usage) INTO other FROM cpu", "INTO"),
        ("SELECT derivative(usage) FROM cpu", "derivative"),
        ("SELECT usage FROM cpu WHERE host =~ /h.*/", "regex"),
        ("SELECT mean(usage) FROM (SELECT usage FROM cpu)", "subqueries"),
        ("SELECT mean(usage) FROM cpu GROUP BY time(1m)", "time bound"),
        ("SELECT nothing FROM cpu", "nothing"),
    ];
    for (q, named) in statement_errors {
        let (status, answer) = influxql(&server, "telegraf", q, "");
        let error = if status == 400 { &answer["error"] } else { &answer["results"][0]["error"] };
        assert!(error.as_str().is_some_and(|e| e.contains(named)), "{q}: {status} {answer}");
        assert!(status == 200 || status == 400, "{q}: {status}");
    }
    // A parse failure is 400 with InfluxDB's error shape; a statement error is 200.
    let (status, answer) = influxql(&server, "telegraf", "SELECT FROM", "");
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().starts_with("error parsing query"), "{answer}");
    let (status, answer) =
        influxql(&server, "telegraf", "SELECT count(usage) FROM cpu; SELECT derivative(usage) FROM cpu", "");
    assert_eq!(status, 200);
    assert!(answer["results"][0]["series"].is_array(), "{answer}");
    assert!(answer["results"][1]["error"].as_str().unwrap().contains("derivative"), "{answer}");
    let (_, answer) = influxql(&server, "nowhere", "SELECT usage FROM cpux", "");
    assert!(answer["results"][0]["error"].as_str().unwrap().contains("database not found"), "{answer}");
}

/// The `influx` 1.x shell (Debian package `influxdb-client`, installed by
/// `.ci/run`) connects, lists measurements and prints a GROUP BY time answer.
#[test]
fn the_influx_shell_reads_measurements_and_grouped_means() {
    let server = Server::start("influx-shell", "");
    let rows = rows();
    load(&server, &rows);
    let port = server.url.rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    let run = |query: &str| -> String {
        let output = Command::new("influx")
            .args(["-host", "127.0.0.1", "-port", &port, "-database", "telegraf", "-format", "csv"])
            .args(["-precision", "s", "-execute", query])
            .output()
            .unwrap_or_else(|e| {
                panic!("the influx shell is needed (Debian influxdb-client, installed by .ci/run): {e}")
            });
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{query}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        stdout
    };
    assert_eq!(run("SHOW MEASUREMENTS"), "name,name\nmeasurements,cpu\nmeasurements,mem\n");
    let q = format!("SELECT sum(n) FROM cpu WHERE time >= {}s AND time < {}s GROUP BY time(30m)", T0_S, T0_S + 3600);
    let mut expected = String::from("name,time,sum\n");
    for bucket in [T0_S, T0_S + 1800] {
        let sum: i64 = rows.iter().filter(|r| r.second >= bucket && r.second < bucket + 1800).map(|r| r.n).sum();
        expected.push_str(&format!("cpu,{bucket},{sum}\n"));
    }
    assert_eq!(run(&q), expected);
}

/// influxdb-client (PyPI, in the venv `.ci/run` prepares): ping, health,
/// and writes (synchronous, batched, gzip-compressed), counted through Strata.
#[test]
fn influxdb_client_python_pings_checks_health_and_writes() {
    let server = Server::start("influx-python", "");
    let python = std::path::Path::new(&std::env::var("HOME").unwrap()).join(".cache/strata-venv/bin/python");
    let script = r#"
import sys
from influxdb_client import InfluxDBClient, Point, WriteOptions
from influxdb_client.client.write_api import SYNCHRONOUS
url = sys.argv[1]
with InfluxDBClient(url=url, token="unused", org="strata") as client:
    assert client.ping(), "ping"
    health = client.health()
    assert health.status == "pass", health
    write = client.write_api(write_options=SYNCHRONOUS)
    write.write("py", record=[Point("cpu").tag("host", "a").field("v", float(i)).time(1767225600 + i, "s") for i in range(10)], write_precision="s")
    with client.write_api(write_options=WriteOptions(batch_size=7, flush_interval=100)) as batching:
        batching.write("py", record=[f"cpu,host=b v={i} {1767225700 + i}" for i in range(25)], write_precision="s")
with InfluxDBClient(url=url, token="unused", org="strata", enable_gzip=True) as client:
    client.write_api(write_options=SYNCHRONOUS).write("py", record=[f"cpu,host=c v={i} {1767225800 + i}" for i in range(5)], write_precision="s")
print("ok")
"#;
    let output = Command::new(&python)
        .args(["-c", script, &server.url])
        .output()
        .unwrap_or_else(|e| panic!("{} is needed (influxdb-client, installed by .ci/run): {e}", python.display()));
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, answer) = influxql(&server, "py", "SELECT count(v) FROM cpu GROUP BY host", "");
    let counts: Vec<(String, Value)> = answer["results"][0]["series"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|s| (s["tags"]["host"].as_str().unwrap().to_string(), s["values"][0][1].clone()))
        .collect();
    assert_eq!(counts, [("a".to_string(), json!(10)), ("b".to_string(), json!(25)), ("c".to_string(), json!(5))]);
}

/// With authentication on, the v1 endpoints take the project's tokens as
/// `Token`, Basic (password) or `p=`; `/query` needs read on the database,
/// `/write` write, and SHOW DATABASES lists only what the token may read.
#[test]
fn influx_endpoints_take_the_projects_tokens() {
    let server = Server::start("influx-auth", "[auth]\nrequired = true\n");
    let writer = create_offline(&server.data_dir, "writer", &["write:telegraf", "write:other"]);
    let reader = create_offline(&server.data_dir, "reader", &["read:telegraf"]);
    let token = format!("Token {writer}");
    let line = format!("cpu,host=a usage=1 {T0_S}\n");
    wait_for_status(
        "the writer's token",
        || server.request("POST", "/write?db=telegraf&precision=s", &[("Authorization", &token)], line.clone()).0,
        204,
    );
    // 1.x precisions include minutes and hours.
    let hour = format!("cpu,host=a usage=2 {}\n", T0_S / 3600);
    let (status, _, _) = server.request("POST", "/write?db=other&precision=h", &[("Authorization", &token)], hour);
    assert_eq!(status, 204);
    let q = urlencode("SELECT count(usage) FROM cpu");
    assert_eq!(server.get(&format!("/query?db=telegraf&q={q}")).0, 401);
    // Tokens created offline reach the server when it next reads the token
    // store, which may have happened between the writer's and the reader's.
    let as_reader = format!("/query?db=telegraf&q={q}&u=grafana&p={reader}");
    wait_for_status("the reader's token", || server.get(&as_reader).0, 200);
    let (status, answer) = server.get(&as_reader);
    assert_eq!((status, &answer["results"][0]["series"][0]["values"][0][1]), (200, &json!(1)), "{answer}");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("grafana:{reader}"))
    );
    for authorization in [format!("Token {reader}"), basic] {
        let (status, _, answer) =
            server.request("GET", &format!("/query?db=telegraf&q={q}"), &[("Authorization", &authorization)], "");
        assert_eq!(status, 200, "{answer}");
    }
    let read = [("Authorization", format!("Token {reader}"))];
    let read: Vec<(&str, &str)> = read.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(server.request("GET", &format!("/query?db=other&q={q}"), &read, "").0, 403);
    assert_eq!(server.request("POST", "/write?db=telegraf", &read, line.clone()).0, 403);
    // A database named only in a form body is checked by the handler.
    let form = [read[0], ("Content-Type", "application/x-www-form-urlencoded")];
    let (status, _, answer) = server.request("POST", "/query", &form, format!("db=other&q={q}"));
    assert_eq!(status, 403, "{answer}");
    let (status, _, answer) =
        server.request("POST", "/query", &form, format!("q={}", urlencode("SELECT count(usage) FROM other")));
    assert!(answer["results"][0]["error"].as_str().is_some_and(|e| e.contains("may not read")), "{status} {answer}");
    let other = [("Authorization", format!("Token {}", create_offline(&server.data_dir, "r2", &["read:other"])))];
    let other: Vec<(&str, &str)> = other.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let raw = urlencode("SELECT usage FROM cpu");
    wait_for_status(
        "the second reader",
        || server.request("GET", &format!("/query?db=other&q={raw}"), &other, "").0,
        200,
    );
    let (_, _, answer) = server.request("GET", &format!("/query?db=other&q={raw}&epoch=s"), &other, "");
    assert_eq!(answer["results"][0]["series"][0]["values"], json!([[T0_S, 2.0]]), "{answer}");
    let (_, _, answer) = server.request("GET", &format!("/query?q={}", urlencode("SHOW DATABASES")), &read, "");
    assert_eq!(answer["results"][0]["series"][0]["values"], json!([["telegraf"]]), "{answer}");
}
