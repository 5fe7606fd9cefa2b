//! Queries against an independent oracle computed here from the generated
//! input, over flushed and buffered rows, in every output format.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{Server, client, column_kinds};

const HOUR: i64 = 3_600_000_000_000;
/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600_000_000_000;

#[derive(Debug, Clone)]
struct Point {
    time: i64,
    host: Option<String>,
    usage: Option<f64>,
    level: i64,
}

/// Three days of points every 7 minutes for 3 hosts; some rows lack the host
/// tag, some lack `usage`.
fn generate() -> Vec<Point> {
    let mut points = Vec::new();
    let mut i: i64 = 0;
    let mut time = T0;
    while time < T0 + 72 * HOUR {
        for host in 0..3 {
            i += 1;
            points.push(Point {
                time: time + host,
                host: if i % 11 == 0 { None } else { Some(format!("h{host}")) },
                usage: if i % 7 == 0 { None } else { Some(((i * 37) % 1000) as f64 / 10.0) },
                level: (i * 13) % 5,
            });
        }
        time += 7 * 60 * 1_000_000_000;
    }
    points
}

fn line(p: &Point) -> String {
    let tags = p.host.as_ref().map(|h| format!(",host={h}")).unwrap_or_default();
    let usage = p.usage.map(|u| format!("usage={u:?},")).unwrap_or_default();
    format!("cpu{tags} {usage}level={}i {}\n", p.level, p.time)
}

/// Loads the points: the first two days flushed to Parquet, the last day buffered.
fn load(server: &Server, points: &[Point]) {
    let (flushed, buffered): (Vec<&Point>, Vec<&Point>) = points.iter().partition(|p| p.time < T0 + 48 * HOUR);
    for chunk in flushed.chunks(500) {
        let body: String = chunk.iter().map(|p| line(p)).collect();
        assert_eq!(server.post("/api/v2/write?bucket=cpu", body).0, 204);
    }
    server.flush();
    for chunk in buffered.chunks(500) {
        let body: String = chunk.iter().map(|p| line(p)).collect();
        assert_eq!(server.post("/api/v2/write?bucket=cpu", body).0, 204);
    }
}

fn query(server: &Server, body: Value) -> Value {
    let (status, response) = server.post("/v1/datasets/cpu/query", body.to_string());
    assert_eq!(status, 200, "{response}");
    response
}

fn quantile_cont(sorted: &[f64], p: f64) -> f64 {
    let position = p * (sorted.len() - 1) as f64;
    let low = position.floor() as usize;
    let high = position.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
}

#[test]
fn raw_rows_filters_and_pruning_match_the_oracle() {
    let server = Server::start("query-raw", "[ingest]\nflush_age_ms = 3600000\n");
    let points = generate();
    load(&server, &points);
    // A range across the flushed/buffered boundary, filtered on a tag and a field.
    let (start, end) = (T0 + 40 * HOUR, T0 + 56 * HOUR);
    let response = query(
        &server,
        json!({
            "time_range": {"start": start, "end": end},
            "columns": ["host", "usage"],
            "filters": {"and": [{"column": "host", "op": "in", "value": ["h0", "h2"]}, {"or": [{"column": "usage", "op": ">=", "value": 50.0}, {"column": "usage", "op": "is_null"}]}]}
        }),
    );
    let expected: Vec<&Point> = points
        .iter()
        .filter(|p| p.time >= start && p.time < end)
        .filter(|p| matches!(p.host.as_deref(), Some("h0" | "h2")))
        .filter(|p| p.usage.is_none_or(|u| u >= 50.0))
        .collect();
    let rows = response["rows"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len());
    for (row, point) in rows.iter().zip(&expected) {
        let time =
            chrono::DateTime::parse_from_rfc3339(row["time"].as_str().unwrap()).unwrap().timestamp_nanos_opt().unwrap();
        assert_eq!(time, point.time, "exact nanosecond times");
        assert_eq!(row["host"].as_str(), point.host.as_deref());
        assert_eq!(row["usage"].as_f64(), point.usage);
    }
    let stats = &response["stats"];
    assert_eq!(stats["partitions_considered"], 3);
    // The range covers the second and third day; the first is pruned.
    assert_eq!(stats["partitions_pruned"], 1);
    assert!(stats["rows_from_buffers"].as_u64().unwrap() > 0);
    assert_eq!(stats["rows_returned"], expected.len());

    // One day only: the other two partitions are pruned before DuckDB runs.
    let response = query(
        &server,
        json!({"time_range": {"start": "2026-01-02T00:00:00Z", "end": "2026-01-03T00:00:00Z"}, "limit": 5, "order": "desc"}),
    );
    assert_eq!(response["stats"]["partitions_pruned"], 2);
    assert_eq!(response["rows"].as_array().unwrap().len(), 5);
    let first = response["rows"][0]["time"].as_str().unwrap();
    assert!(first.starts_with("2026-01-02T23:"), "{first}");

    // An empty range returns no rows and the column list.
    let response =
        query(&server, json!({"time_range": {"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"}}));
    assert_eq!(response["rows"], json!([]));
    assert!(response["columns"].as_array().unwrap().iter().any(|c| c["name"] == "usage"));
}

#[test]
fn every_aggregation_matches_the_oracle_across_partitions_and_buffers() {
    let server = Server::start("query-agg", "[ingest]\nflush_age_ms = 3600000\n");
    let points = generate();
    load(&server, &points);
    let (start, end) = (T0 + 20 * HOUR, T0 + 60 * HOUR);
    let response = query(
        &server,
        json!({
            "time_range": {"start": start, "end": end},
            "group_by": ["host"],
            "downsample": {"interval": "6h", "aggregations": [
                {"fn": "avg", "column": "usage", "alias": "avg"},
                {"fn": "min", "column": "usage", "alias": "min"},
                {"fn": "max", "column": "usage", "alias": "max"},
                {"fn": "sum", "column": "usage", "alias": "sum"},
                {"fn": "count", "column": "usage", "alias": "count"},
                {"fn": "median", "column": "usage", "alias": "median"},
                {"fn": "count_distinct", "column": "level", "alias": "levels"},
                {"fn": "percentile", "column": "usage", "p": 0.9, "alias": "p90"},
                {"fn": "first", "column": "usage", "alias": "first"},
                {"fn": "last", "column": "usage", "alias": "last"}
            ]}
        }),
    );
    // The oracle: group by (bucket, host) in plain Rust.
    let mut groups: BTreeMap<(Option<String>, i64), Vec<&Point>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.time >= start && p.time < end) {
        let bucket = p.time - p.time.rem_euclid(6 * HOUR);
        groups.entry((p.host.clone(), bucket)).or_default().push(p);
    }
    let rows = response["rows"].as_array().unwrap();
    assert_eq!(rows.len(), groups.len(), "one row per (host, bucket), hosts missing on some rows form their own group");
    for row in rows {
        let time =
            chrono::DateTime::parse_from_rfc3339(row["time"].as_str().unwrap()).unwrap().timestamp_nanos_opt().unwrap();
        let host = row["host"].as_str().map(str::to_string);
        let group = &groups[&(host.clone(), time)];
        let mut values: Vec<f64> = group.iter().filter_map(|p| p.usage).collect();
        let sum: f64 = values.iter().sum();
        assert_eq!(row["count"], values.len(), "{row}");
        assert!(close(&row["sum"], sum), "{row} sum {sum}");
        assert!(close(&row["avg"], sum / values.len() as f64), "{row}");
        let first = group.iter().filter(|p| p.usage.is_some()).min_by_key(|p| p.time).unwrap().usage.unwrap();
        let last = group.iter().filter(|p| p.usage.is_some()).max_by_key(|p| p.time).unwrap().usage.unwrap();
        assert!(close(&row["first"], first) && close(&row["last"], last), "{row}");
        values.sort_by(f64::total_cmp);
        assert!(close(&row["min"], values[0]) && close(&row["max"], *values.last().unwrap()), "{row}");
        assert!(close(&row["median"], quantile_cont(&values, 0.5)), "{row}");
        assert!(close(&row["p90"], quantile_cont(&values, 0.9)), "{row}");
        let levels: std::collections::BTreeSet<i64> = group.iter().map(|p| p.level).collect();
        assert_eq!(row["levels"], levels.len(), "{row}");
    }
}

#[test]
fn an_aggregate_over_the_whole_range_matches_the_oracle() {
    let server = Server::start("query-whole", "[ingest]\nflush_age_ms = 3600000\n");
    let points = generate();
    load(&server, &points);
    // Whole days (every partition lies inside the range, flushed and
    // buffered alike), part of a day, a range inside one aligned 1d bucket,
    // and an empty range.
    for (start, end, interval) in [
        (T0, T0 + 72 * HOUR, None),
        (T0 + 5 * HOUR + 3, T0 + 50 * HOUR, None),
        (T0 + 49 * HOUR, T0 + 60 * HOUR, Some("1d")),
        (T0 + 10 * HOUR, T0 + 10 * HOUR, None),
    ] {
        let mut downsample = json!({"aggregations": [
            {"fn": "count", "column": "usage", "alias": "count"},
            {"fn": "sum", "column": "usage", "alias": "sum"},
            {"fn": "first", "column": "usage", "alias": "first"}
        ]});
        if let Some(interval) = interval {
            downsample["interval"] = json!(interval);
        }
        let response = query(
            &server,
            json!({"time_range": {"start": start, "end": end}, "group_by": ["host"], "downsample": downsample}),
        );
        let mut groups: BTreeMap<Option<String>, Vec<&Point>> = BTreeMap::new();
        for p in points.iter().filter(|p| p.time >= start && p.time < end) {
            groups.entry(p.host.clone()).or_default().push(p);
        }
        let rows = response["rows"].as_array().unwrap();
        assert_eq!(rows.len(), groups.len(), "one row per host in [{start}, {end}): {response}");
        let label = match interval {
            None => start,
            Some(_) => start - start.rem_euclid(24 * HOUR),
        };
        for row in rows {
            let time = chrono::DateTime::parse_from_rfc3339(row["time"].as_str().unwrap())
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap();
            assert_eq!(time, label, "{row}");
            let group = &groups[&row["host"].as_str().map(str::to_string)];
            let values: Vec<f64> = group.iter().filter_map(|p| p.usage).collect();
            assert_eq!(row["count"], values.len(), "{row}");
            assert!(close(&row["sum"], values.iter().sum()), "{row}");
            let first = group.iter().filter(|p| p.usage.is_some()).min_by_key(|p| p.time).unwrap().usage.unwrap();
            assert!(close(&row["first"], first), "{row}");
        }
    }
}

#[test]
fn a_column_only_newer_partitions_have_reads_as_null_in_older_ones() {
    let server = Server::start("query-new-column", "[ingest]\nflush_age_ms = 3600000\n");
    assert_eq!(server.post("/api/v2/write?bucket=cpu", format!("m a=1 {T0}\n")).0, 204);
    server.flush();
    let day2 = T0 + 24 * HOUR;
    assert_eq!(server.post("/api/v2/write?bucket=cpu", format!("m a=2,b=20 {day2}\n")).0, 204);
    server.flush();
    // Only the first day's file is read; it has no `b`.
    let response = query(
        &server,
        json!({"time_range": {"start": T0, "end": T0 + HOUR}, "columns": ["a", "b"],
               "filters": {"column": "b", "op": "is_null"}}),
    );
    assert_eq!(response["stats"]["files_scanned"], 1);
    let rows = response["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{response}");
    assert_eq!((rows[0]["a"].as_f64(), rows[0]["b"].clone()), (Some(1.0), Value::Null));
    // Both days: the newer file has it.
    let response = query(
        &server,
        json!({"time_range": {"start": T0, "end": T0 + 48 * HOUR}, "downsample": {"aggregations": [
            {"fn": "count", "column": "b", "alias": "b"}, {"fn": "count", "column": "a", "alias": "a"}]}}),
    );
    assert_eq!(
        (response["rows"][0]["a"].as_u64(), response["rows"][0]["b"].as_u64()),
        (Some(2), Some(1)),
        "{response}"
    );
}

#[test]
fn gap_fill_emits_every_bucket() {
    let server = Server::start("query-fill", "[ingest]\nflush_age_ms = 3600000\n");
    let body = format!("m v=1 {}\nm v=3 {}\n", T0, T0 + 3 * HOUR);
    assert_eq!(server.post("/api/v2/write?bucket=cpu", body).0, 204);
    for (fill, expected) in [
        ("null", json!([1.0, null, null, 3.0])),
        ("previous", json!([1.0, 1.0, 1.0, 3.0])),
        ("none", json!([1.0, 3.0])),
    ] {
        let response = query(
            &server,
            json!({"time_range": {"start": T0, "end": T0 + 4 * HOUR}, "downsample": {"interval": "1h", "fill": fill, "aggregations": [{"fn": "max", "column": "v", "alias": "v"}]}}),
        );
        let values: Vec<Value> = response["rows"].as_array().unwrap().iter().map(|r| r["v"].clone()).collect();
        assert_eq!(Value::Array(values), expected, "fill {fill}");
    }
}

#[test]
fn every_output_format_parses_back() {
    let server = Server::start("query-formats", "[ingest]\nflush_age_ms = 3600000\n");
    let points = generate();
    load(&server, &points);
    let request = json!({"time_range": {"start": T0, "end": T0 + 72 * HOUR}, "columns": ["host", "usage", "level"]});
    let json_rows = query(&server, request.clone())["rows"].as_array().unwrap().clone();
    assert_eq!(json_rows.len(), points.len());

    let fetch = |format: &str| {
        let mut body = request.clone();
        body["format"] = json!(format);
        let response =
            client().post(format!("{}/v1/datasets/cpu/query", server.url)).body(body.to_string()).send().unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().unwrap()
    };
    let ndjson: Vec<Value> =
        std::str::from_utf8(&fetch("ndjson")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(ndjson, json_rows);

    let csv_bytes = fetch("csv");
    let mut reader = csv::Reader::from_reader(&csv_bytes[..]);
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), vec!["time", "host", "usage", "level"]);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), json_rows.len());
    for (record, row) in records.iter().zip(&json_rows) {
        assert_eq!(record.get(0).unwrap(), row["time"].as_str().unwrap());
        assert_eq!(record.get(1).unwrap(), row["host"].as_str().unwrap_or(""));
        assert_eq!(record.get(2).unwrap().parse::<f64>().ok(), row["usage"].as_f64());
    }

    let arrow_bytes = fetch("arrow");
    let reader = arrow::ipc::reader::StreamReader::try_new(&arrow_bytes[..], None).unwrap();
    let mut times = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch.column(0).as_any().downcast_ref::<arrow::array::TimestampNanosecondArray>().unwrap();
        times.extend(column.values().iter().copied());
    }
    let mut expected: Vec<i64> = points.iter().map(|p| p.time).collect();
    expected.sort();
    assert_eq!(times, expected, "Arrow carries exact nanosecond timestamps");

    let response = client()
        .post(format!("{}/v1/datasets/cpu/query", server.url))
        .header("accept", "text/csv")
        .body(request.to_string())
        .send()
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/csv");
}

#[test]
fn sql_reads_datasets_and_nothing_else() {
    let server = Server::start("query-sql", "[ingest]\nflush_age_ms = 3600000\n");
    let points = generate();
    load(&server, &points);
    let (status, response) = server
        .post("/v1/sql", "SELECT host, count(*) AS n FROM cpu WHERE host IS NOT NULL GROUP BY host ORDER BY host;");
    assert_eq!(status, 200, "{response}");
    let expected = points.iter().filter(|p| p.host.as_deref() == Some("h0")).count();
    assert_eq!(response["rows"][0], json!({"host": "h0", "n": expected}));
    let (status, response) = server.post("/v1/sql", json!({"sql": "SELECT count(*) AS n FROM cpu"}).to_string());
    assert_eq!((status, response["rows"][0]["n"].as_u64()), (200, Some(points.len() as u64)));

    // Times come back as UTC, to the nanosecond, whatever the SQL did to them.
    let (status, response) =
        server.post("/v1/sql", "SELECT min(time) AS first, date_trunc('hour', max(time)) AS h FROM cpu");
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["rows"][0]["first"], "2026-01-01T00:00:00Z");
    assert_eq!(response["rows"][0]["h"], "2026-01-03T23:00:00Z");

    let data_dir = server.data_dir.display().to_string();
    let attempts = [
        "SELECT * FROM read_csv('/etc/passwd')".to_string(),
        "SELECT * FROM read_text('/etc/passwd')".to_string(),
        "SELECT * FROM read_parquet('/etc/hosts')".to_string(),
        format!("SELECT * FROM read_text('{data_dir}/catalog.sqlite')"),
        format!("SELECT * FROM glob('{data_dir}/*')"),
        "SELECT * FROM glob('/etc/*')".to_string(),
        "ATTACH '/tmp/x.db' AS x".to_string(),
        "COPY (SELECT 1) TO '/tmp/strata-escape.csv'".to_string(),
        "SET enable_external_access = true".to_string(),
        "INSTALL httpfs".to_string(),
        "LOAD httpfs".to_string(),
        "CREATE TABLE t AS SELECT 1".to_string(),
        "SELECT 1; DROP VIEW cpu".to_string(),
        "PRAGMA database_list".to_string(),
        "SELECT 1) UNION ALL (SELECT * FROM read_csv('/etc/passwd')".to_string(),
    ];
    // Another dataset's files are inside the data dir but outside this query.
    assert_eq!(server.post("/api/v2/write?bucket=secret", format!("s v=1i {T0}\n")).0, 204);
    server.flush();
    let (_, manifest) = server.get("/v1/datasets/secret/partitions");
    let secret_file = manifest["partitions"][0]["files"][0]["path"].as_str().unwrap().to_string();
    assert!(!secret_file.contains("secret"), "object keys come from ids: {secret_file}");
    let attempts: Vec<String> = attempts
        .into_iter()
        .chain([
            format!("SELECT * FROM read_parquet('{secret_file}')"),
            format!("SELECT count(*) FROM cpu UNION ALL SELECT count(*) FROM read_parquet('{secret_file}')"),
        ])
        .collect();
    for sql in attempts {
        let (status, error) = server.post("/v1/sql", sql.clone());
        assert!(status == 400 || status == 403, "{sql}: {status} {error}");
        assert!(error["error"]["code"].is_string(), "{sql}: {error}");
    }
    assert!(!std::path::Path::new("/tmp/strata-escape.csv").exists());
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn a_query_past_its_deadline_is_stopped_and_the_server_stays_healthy() {
    let server = Server::start("query-timeout", "[query]\ntimeout_ms = 300\n");
    assert_eq!(server.post("/api/v2/write?bucket=cpu", format!("cpu v=1i {T0}\n")).0, 204);
    let started = std::time::Instant::now();
    let (status, error) = server.post("/v1/sql", "SELECT count(*) FROM range(100000000000) a, cpu");
    assert_eq!((status, error["error"]["code"].as_str()), (504, Some("query_timeout")), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "stopped, not run to completion");
    assert_eq!(server.get("/health").0, 200);
    let (status, response) = server.post("/v1/sql", "SELECT count(*) AS n FROM cpu");
    assert_eq!((status, response["rows"][0]["n"].as_u64()), (200, Some(1)));
}

#[test]
fn queries_stay_consistent_during_ingest_and_flush() {
    let server = Server::start("query-consistency", "[ingest]\nflush_age_ms = 3600000\n");
    // The dataset exists before the first query.
    assert_eq!(server.post("/api/v2/write?bucket=c", format!("m id=-1i {T0}\n")).0, 204);
    let url = server.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let http = client();
            let mut id = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body: String = (id..id + 100).map(|i| format!("m id={i}i {}\n", T0 + i)).collect();
                id += 100;
                assert_eq!(http.post(format!("{url}/api/v2/write?bucket=c")).body(body).send().unwrap().status(), 204);
            }
            id
        })
    };
    let flusher = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let http = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(http.post(format!("{url}/v1/flush")).send().unwrap().status(), 200);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let mut last = 0;
    for _ in 0..40 {
        let (status, response) = server
            .post("/v1/sql", "SELECT count(*) AS n, count(DISTINCT id) AS d, coalesce(max(id), -1) AS top FROM c");
        assert_eq!(status, 200, "{response}");
        let row = &response["rows"][0];
        let (n, d, top) = (row["n"].as_i64().unwrap(), row["d"].as_i64().unwrap(), row["top"].as_i64().unwrap());
        assert_eq!(n, d, "no row seen twice");
        assert_eq!(n, top + 2, "no row missing: ids -1, 0, 1, … are written in order");
        assert!(n >= last, "counts never go back");
        last = n;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    flusher.join().unwrap();
    let (_, response) = server.post("/v1/sql", "SELECT count(*) AS n FROM c");
    assert_eq!(response["rows"][0]["n"], written + 1);
}

#[test]
fn gap_fill_works_per_group() {
    let server = Server::start("query-fill-groups", "[ingest]\nflush_age_ms = 3600000\n");
    let body = format!(
        "m,tenant=a v=1 {}\nm,tenant=b v=2 {}\nm,tenant=a v=3 {}\nm v=4 {}\n",
        T0,
        T0 + HOUR,
        T0 + 3 * HOUR,
        T0 + 2 * HOUR
    );
    assert_eq!(server.post("/api/v2/write?bucket=cpu", body).0, 204);
    // Per group (a, b, no tenant), the value of each hour; answered by
    // hour, then group.
    let every_bucket = |values: [[Option<f64>; 4]; 3]| -> Value {
        let groups = [json!("a"), json!("b"), Value::Null];
        (0..4).flat_map(|hour| groups.iter().zip(values).map(move |(group, v)| json!([group, v[hour]]))).collect()
    };
    let (one, two, three, four) = (Some(1.0), Some(2.0), Some(3.0), Some(4.0));
    for (fill, expected) in [
        ("null", every_bucket([[one, None, None, three], [None, two, None, None], [None, None, four, None]])),
        ("previous", every_bucket([[one, one, one, three], [None, two, two, two], [None, None, four, four]])),
        ("none", json!([["a", 1.0], ["b", 2.0], [null, 4.0], ["a", 3.0]])),
    ] {
        let response = query(
            &server,
            json!({"time_range": {"start": T0, "end": T0 + 4 * HOUR}, "group_by": ["tenant"], "downsample": {"interval": "1h", "fill": fill, "aggregations": [{"fn": "max", "column": "v", "alias": "v"}]}}),
        );
        let rows: Vec<Value> =
            response["rows"].as_array().unwrap().iter().map(|r| json!([r["tenant"], r["v"]])).collect();
        assert_eq!(Value::Array(rows), expected, "fill {fill}: {response}");
    }
}

#[test]
fn extreme_time_ranges_answer_or_are_refused_cleanly() {
    let server = Server::start("query-extremes", "[ingest]\nflush_age_ms = 3600000\n");
    let body = format!("m v=1 {}\nm v=2 {}\n", T0, T0 + HOUR);
    assert_eq!(server.post("/api/v2/write?bucket=cpu", body.clone()).0, 204);
    server.flush();
    assert_eq!(server.post("/api/v2/write?bucket=cpu", format!("m v=3 {}\n", T0 + 2 * HOUR)).0, 204);
    let count = json!([{"fn": "count", "column": "v", "alias": "n"}]);
    // The first 1s bucket of i64::MIN would start before the earliest time.
    let (status, response) = server.post(
        "/v1/datasets/cpu/query",
        json!({"time_range": {"start": i64::MIN, "end": 0}, "downsample": {"interval": "1s", "aggregations": count}})
            .to_string(),
    );
    assert_eq!(status, 400, "{response}");
    assert_eq!(response["error"]["code"], "invalid_query");
    for fill in ["none", "null", "previous"] {
        let response = query(
            &server,
            json!({"time_range": {"start": i64::MIN, "end": i64::MAX}, "downsample": {"fill": fill, "aggregations": count}}),
        );
        assert_eq!(response["rows"].as_array().unwrap().len(), 1, "one bucket, fill {fill}: {response}");
        assert_eq!(response["rows"][0]["n"], 3, "{response}");
    }
    for (start, end) in [(i64::MIN + 1, i64::MAX), (i64::MIN, i64::MAX - 1), (i64::MIN + 2, i64::MAX)] {
        let response = query(
            &server,
            json!({"time_range": {"start": start, "end": end}, "filters": {"column": "v", "op": ">", "value": 1.5}, "limit": u64::MAX, "offset": 1}),
        );
        assert_eq!(response["rows"].as_array().unwrap().len(), 1, "{start}..{end}: {response}");
    }
    let response = query(
        &server,
        json!({"time_range": {"start": T0 - 3 * HOUR, "end": T0 + 3 * HOUR}, "downsample": {"interval": "292w", "aggregations": count}}),
    );
    assert_eq!(response["rows"][0]["n"], 3, "{response}");
}

/// The rows of a grouped, gap-filled, ordered, limited downsample, computed
/// from the points: `(bucket start, host, max usage, count of level)`.
type Bucket = (i64, Option<String>, Option<f64>, Option<u64>);

fn grouped_oracle(
    points: &[&Point],
    start: i64,
    end: i64,
    fill: &str,
    desc: bool,
    limit: Option<usize>,
) -> Vec<Bucket> {
    let mut hosts: Vec<Option<String>> = points.iter().map(|p| p.host.clone()).collect();
    // Groups in order, null last (as SQL sorts them).
    hosts.sort_by_key(|h| (h.is_none(), h.clone()));
    hosts.dedup();
    let mut rows = Vec::new();
    for host in &hosts {
        let mut previous: (Option<f64>, Option<u64>) = (None, None);
        let mut bucket = start;
        while bucket < end {
            let inside: Vec<&&Point> =
                points.iter().filter(|p| p.host == *host && p.time >= bucket && p.time < bucket + HOUR).collect();
            let max = inside.iter().filter_map(|p| p.usage).reduce(f64::max);
            let count = (!inside.is_empty()).then_some(inside.len() as u64);
            let row = match fill {
                "none" if inside.is_empty() => None,
                "none" | "null" => Some((max, count)),
                _ => {
                    previous = (max.or(previous.0), count.or(previous.1));
                    Some(previous)
                }
            };
            if let Some((max, count)) = row {
                rows.push((bucket, host.clone(), max, count));
            }
            bucket += HOUR;
        }
    }
    rows.sort_by_key(|(time, host, ..)| (if desc { -*time } else { *time }, host.is_none(), host.clone()));
    rows.truncate(limit.unwrap_or(usize::MAX));
    rows
}

#[test]
fn grouped_downsamples_fill_and_order_by_time_then_group_as_the_oracle_says() {
    let server = Server::start("query-grouped-order", "[ingest]\nflush_age_ms = 3600000\n");
    let points = generate();
    load(&server, &points);
    // Hours 40..56 cross the flushed/buffered boundary; `level = 0` keeps
    // about one row in five, so some buckets of some groups are empty.
    let (start, end) = (T0 + 40 * HOUR, T0 + 56 * HOUR);
    let kept: Vec<&Point> = points.iter().filter(|p| p.level == 0 && p.time >= start && p.time < end).collect();
    let filled = grouped_oracle(&kept, start, end, "null", false, None);
    assert!(filled.iter().any(|row| row.3.is_none()), "some group has an empty bucket to fill");
    for fill in ["none", "null", "previous"] {
        for (order, limit) in [("asc", None), ("desc", None), ("desc", Some(30)), ("asc", Some(7))] {
            let mut request = json!({
                "time_range": {"start": start, "end": end},
                "filters": {"column": "level", "op": "=", "value": 0},
                "group_by": ["host"], "order": order,
                "downsample": {"interval": "1h", "fill": fill, "aggregations": [
                    {"fn": "max", "column": "usage", "alias": "max"},
                    {"fn": "count", "column": "level", "alias": "n"}]}
            });
            if let Some(limit) = limit {
                request["limit"] = json!(limit);
            }
            let response = query(&server, request);
            let rows: Vec<Bucket> = response["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let time = chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap()).unwrap();
                    let host = r["host"].as_str().map(str::to_string);
                    (time.timestamp_nanos_opt().unwrap(), host, r["max"].as_f64(), r["n"].as_u64())
                })
                .collect();
            let expected = grouped_oracle(&kept, start, end, fill, order == "desc", limit);
            assert_eq!(rows, expected, "fill {fill}, {order}, limit {limit:?}");
        }
    }
}

#[test]
fn number_filters_compare_numerically_whatever_the_column_type() {
    let server = Server::start("query-numeric-filter", "[ingest]\nflush_age_ms = 3600000\n");
    let body: String = [499_999i64, 500_000, 500_001]
        .iter()
        .enumerate()
        .map(|(i, n)| format!("m n={n}i {}\n", T0 + i as i64))
        .collect();
    assert_eq!(server.post("/api/v2/write?bucket=cpu", body).0, 204);
    let cases = [
        (json!({"column": "n", "op": ">", "value": 500000.5}), vec![500_001]),
        (json!({"column": "n", "op": ">", "value": 500000.0}), vec![500_001]),
        (json!({"column": "n", "op": "=", "value": 500000.0}), vec![500_000]),
        (json!({"column": "n", "op": "<", "value": 499999.5}), vec![499_999]),
        (json!({"column": "n", "op": ">=", "value": 500000}), vec![500_000, 500_001]),
        (json!({"column": "n", "op": "in", "value": [500000.0, 500001.5, 499999]}), vec![499_999, 500_000]),
        (json!({"column": "n", "op": ">", "value": u64::MAX}), vec![]),
    ];
    for (filter, expected) in cases {
        let response = query(&server, json!({"time_range": {"start": T0, "end": T0 + HOUR}, "filters": filter}));
        let values: Vec<i64> = response["rows"].as_array().unwrap().iter().map(|r| r["n"].as_i64().unwrap()).collect();
        assert_eq!(values, expected, "{filter}");
    }
}

#[test]
fn a_wrong_query_is_invalid_query_as_the_readme_says() {
    let server = Server::start("query-invalid", "[ingest]\nflush_age_ms = 3600000\n");
    assert_eq!(server.post("/api/v2/write?bucket=cpu", format!("m,host=a v=1 {T0}\n")).0, 204);
    let range = json!({"start": T0, "end": T0 + HOUR});
    let cases = [
        json!({"time_range": range, "columns": ["nope"]}),
        json!({"time_range": range, "filters": {"column": "nope", "op": "=", "value": 1}}),
        json!({"time_range": range, "filters": {"column": "v", "op": "like", "value": 1}}),
        json!({"time_range": range, "filters": {"column": "v", "op": "=", "value": "x"}}),
        json!({"time_range": range, "downsample": {"aggregations": [{"fn": "mode", "column": "v"}]}}),
        json!({"time_range": range, "downsample": {"aggregations": [{"fn": "avg", "column": "nope"}]}}),
        json!({"time_range": range, "downsample": {"aggregations": [{"fn": "percentile", "column": "v", "p": 1.5}]}}),
        json!({"time_range": range, "downsample": {"aggregations": [{"fn": "percentile", "column": "v"}]}}),
        json!({"time_range": range, "downsample": {"interval": "1y", "aggregations": [{"fn": "avg", "column": "v"}]}}),
        json!({"time_range": range, "group_by": ["host"]}),
        json!({"time_range": {"start": T0 + 1, "end": T0}}),
        json!({"time_range": range, "nope": 1}),
        json!({"time_range": range, "format": "xml"}),
    ];
    for case in cases {
        let (status, error) = server.post("/v1/datasets/cpu/query", case.to_string());
        assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_query")), "{case}: {error}");
    }
    // The README lists these codes for queries, and only these.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("| `invalid_query` | 400 | malformed query, unknown column or function"), "README");
}

#[test]
fn epoch_time_ranges_are_read_in_their_precision_and_implausible_ones_refused() {
    let server = Server::start("query-precision", "[ingest]\nflush_age_ms = 3600000\n");
    assert_eq!(server.post("/api/v2/write?bucket=cpu", format!("m v=1 {T0}\nm v=2 {}\n", T0 + HOUR)).0, 204);
    let rows =
        |range: Value| -> usize { query(&server, json!({"time_range": range}))["rows"].as_array().unwrap().len() };
    let ms = T0 / 1_000_000;
    assert_eq!(rows(json!({"start": ms, "end": ms + 1, "precision": "ms"})), 1);
    assert_eq!(rows(json!({"start": ms, "end": ms + 3_600_001, "precision": "ms"})), 2);
    assert_eq!(rows(json!({"start": T0 / 1_000_000_000, "end": T0 / 1_000_000_000 + 1, "precision": "s"})), 1);
    assert_eq!(rows(json!({"start": T0 / 1000, "end": T0 / 1000 + 1, "precision": "us"})), 1);
    assert_eq!(rows(json!({"start": T0, "end": T0 + 1})), 1, "ns by default");
    assert_eq!(rows(json!({"start": "2026-01-01T00:00:00Z", "end": ms + 1, "precision": "ms"})), 1);
    // Milliseconds read as nanoseconds would be January 1970: refused, not empty.
    for (range, unit) in [
        (json!({"start": ms, "end": ms + 3_600_001}), "ms"),
        (json!({"start": T0 / 1_000_000_000, "end": T0 / 1_000_000_000 + 1, "precision": "ms"}), "s"),
        (json!({"start": T0, "end": T0 + 1, "precision": "us"}), "ns"),
    ] {
        let (status, error) = server.post("/v1/datasets/cpu/query", json!({"time_range": range}).to_string());
        assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_query")), "{range}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("\"precision\": \"{unit}\"")), "{message}");
    }
    let (status, error) = server
        .post("/v1/datasets/cpu/query", json!({"time_range": {"start": 0, "end": 1, "precision": "h"}}).to_string());
    assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_query")), "{error}");
}

#[test]
fn parquet_files_record_that_their_times_are_utc_nanoseconds() {
    let server = Server::start("query-file-format", "[ingest]\nflush_age_ms = 3600000\n");
    assert_eq!(server.post("/api/v2/write?bucket=cpu", format!("m v=1 {T0}\n")).0, 204);
    server.flush();
    let (_, manifest) = server.get("/v1/datasets/cpu/partitions");
    let path = manifest["partitions"][0]["files"][0]["path"].as_str().unwrap().to_string();
    let file = std::fs::File::open(&path).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    let metadata = parquet::file::reader::FileReader::metadata(&reader).file_metadata().clone();
    let value = |key: &str| {
        metadata.key_value_metadata().and_then(|kv| kv.iter().find(|kv| kv.key == key)).and_then(|kv| kv.value.clone())
    };
    assert_eq!(value("strata.time_zone").as_deref(), Some("UTC"));
    assert_eq!(value("strata.time_unit").as_deref(), Some("ns"));
    assert_eq!(value("strata.time_column").as_deref(), Some("time"));
    // The column stays nanoseconds, not UTC-adjusted, so DuckDB keeps them.
    let time = &metadata.schema_descr().columns()[0];
    assert_eq!(
        time.logical_type_ref(),
        Some(&parquet::basic::LogicalType::timestamp(false, parquet::basic::TimeUnit::NANOS))
    );
    let response = query(&server, json!({"time_range": {"start": T0, "end": T0 + 1}}));
    assert_eq!(response["rows"][0]["time"], "2026-01-01T00:00:00Z");
}

#[test]
fn json_numbers_keep_an_integer_column_integer() {
    let server = Server::start("query-json-integers", "[ingest]\nflush_age_ms = 3600000\n");
    // Line protocol declares `items` integer; JSON numbers then stay integers.
    assert_eq!(server.post("/api/v2/write?bucket=orders", format!("o items=1i {T0}\n")).0, 204);
    let records = json!([{"time": T0 + 1, "items": 3}, {"time": T0 + 2, "items": 4.0}, {"time": T0 + 3, "price": 7}]);
    let (status, body) = server.post("/v1/datasets/orders/records", records.to_string());
    assert_eq!(status, 200, "{body}");
    let (status, error) = server.post(
        "/v1/datasets/orders/records",
        json!([{"time": T0 + 4, "items": 5}, {"time": T0 + 5, "items": 3.5}]).to_string(),
    );
    assert_eq!((status, error["error"]["code"].as_str()), (400, Some("schema_conflict")), "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("3.5"), "{error}");
    let (_, dataset) = server.get("/v1/datasets/orders");
    let kinds = column_kinds(&dataset);
    assert_eq!(kinds.get("items").map(String::as_str), Some("integer"), "{dataset}");
    assert_eq!(kinds.get("price").map(String::as_str), Some("float"), "a new untyped number is float: {dataset}");
    server.flush();
    let request = json!({"time_range": {"start": T0, "end": T0 + 10}, "columns": ["items"]});
    let (status, response) = server.post("/v1/datasets/orders/query", request.to_string());
    assert_eq!(status, 200, "{response}");
    let items: Vec<Value> = response["rows"].as_array().unwrap().iter().map(|r| r["items"].clone()).collect();
    assert_eq!(items, [json!(1), json!(3), json!(4), Value::Null], "nothing of the refused request: {response}");
    assert!(items[1].is_i64(), "{response}");
}

#[test]
fn sql_binds_only_the_datasets_it_reads_and_prunes_partitions_by_its_time_predicates() {
    let server = Server::start("query-sql-pruning", "[ingest]\nflush_age_ms = 3600000\n");
    // Rows on the bounds the predicates below use, and next to them.
    let (day2, noon2) = (T0 + 24 * HOUR, T0 + 36 * HOUR);
    let bounds: String =
        [day2 - 1, day2, noon2 - 1, noon2, noon2 + 1].iter().map(|t| format!("cpu,host=h9 level=4i {t}\n")).collect();
    assert_eq!(server.post("/api/v2/write?bucket=cpu", bounds).0, 204);
    let points = generate();
    load(&server, &points);
    // A dataset named like a column of `cpu`: the SQL below never reads it.
    // (The flush writes cpu's third day too: a file per day.)
    assert_eq!(server.post("/api/v2/write?bucket=host", format!("h v=1 {T0}\n")).0, 204);
    server.flush();
    let sql = |text: &str| {
        let (status, response) = server.post("/v1/sql", text.to_string());
        assert_eq!(status, 200, "{text}: {response}");
        response
    };
    let all = sql("SELECT host, count(*) AS n FROM cpu GROUP BY host");
    assert_eq!(all["stats"]["partitions_considered"], 3, "cpu's three days only: {}", all["stats"]);
    assert_eq!(all["stats"]["partitions_pruned"], 0);
    // Every row, filtered here: what a time filter must answer.
    let rows = sql("SELECT epoch_ns(time) AS t, level FROM cpu")["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), points.len() + 5);
    let expect = |start: i64, end: i64| -> (u64, i64) {
        let kept: Vec<&Value> = rows.iter().filter(|r| (start..end).contains(&r["t"].as_i64().unwrap())).collect();
        (kept.len() as u64, kept.iter().map(|r| r["level"].as_i64().unwrap()).sum())
    };
    let (start, noon) = (day2, noon2);
    let day2 = "2026-01-02T00:00:00Z";
    let noon2 = "2026-01-02T12:00:00Z";
    // (SQL, the rows' range, partitions pruned, files scanned)
    let cases = [
        (format!("time >= '{day2}' AND time < '{noon2}'"), (start, noon), 2, 1),
        (format!("time > '2026-01-01 23:59:59.999999999' AND time <= '{noon2}'"), (start, noon + 1), 2, 1),
        (
            format!("c.time BETWEEN TIMESTAMP_NS '2026-01-02 00:00:00' AND '{noon2}' AND level >= 0"),
            (start, noon + 1),
            2,
            1,
        ),
        (format!("'{noon2}'::TIMESTAMP <= c.time"), (noon, i64::MAX), 1, 2),
        (format!("time < '{day2}'"), (i64::MIN, start), 2, 1),
        (format!("time >= '{day2}' OR level > 100"), (start, i64::MAX), 0, 3),
    ];
    for (predicate, (from, to), pruned, files) in cases {
        let text = format!(
            "SELECT count(*) AS n, CAST(coalesce(sum(level), 0) AS BIGINT) AS s FROM cpu AS c WHERE {predicate}"
        );
        let response = sql(&text);
        let row = &response["rows"][0];
        assert_eq!((row["n"].as_u64().unwrap(), row["s"].as_i64().unwrap()), expect(from, to), "{text}");
        assert_eq!(response["stats"]["partitions_considered"], 3, "{text}: {}", response["stats"]);
        assert_eq!(response["stats"]["partitions_pruned"], pruned, "{text}: {}", response["stats"]);
        assert_eq!(response["stats"]["files_scanned"], files, "{text}: {}", response["stats"]);
    }
    // Two datasets, each bound because each is read.
    let both = sql("SELECT (SELECT count(*) FROM host) AS h, count(*) AS c FROM cpu");
    assert_eq!(
        (both["rows"][0]["h"].as_u64(), both["rows"][0]["c"].as_u64()),
        (Some(1), Some(points.len() as u64 + 5))
    );
    assert_eq!(both["stats"]["partitions_considered"], 4, "{}", both["stats"]);
}

#[test]
fn csv_tells_null_from_the_empty_string() {
    let server = Server::start("query-csv-null", "[ingest]\nflush_age_ms = 3600000\n");
    let records = json!([
        {"time": T0, "note": "", "n": 1},
        {"time": T0 + 1, "n": 2},
        {"time": T0 + 2, "note": "a,\"b\"\nc", "n": 3},
        {"time": T0 + 3, "note": "x"}
    ]);
    assert_eq!(server.post("/v1/datasets/notes/records", records.to_string()).0, 200);
    let expected: [(Option<&str>, Option<f64>); 4] =
        [(Some(""), Some(1.0)), (None, Some(2.0)), (Some("a,\"b\"\nc"), Some(3.0)), (Some("x"), None)];
    let fetch = |path: &str, body: String| {
        let response = client().post(format!("{}{path}", server.url)).body(body).send().unwrap();
        assert_eq!(response.status(), 200);
        response.text().unwrap()
    };
    let structured = json!({"time_range": {"start": T0, "end": T0 + 4}, "columns": ["note", "n"], "format": "csv"});
    for csv_text in [
        fetch("/v1/datasets/notes/query", structured.to_string()),
        fetch("/v1/sql?format=csv", "SELECT time, note, n FROM notes ORDER BY time".to_string()),
    ] {
        assert!(csv_text.contains("Z,\"\",1.0\n") && csv_text.contains("Z,,2.0\n"), "{csv_text}");
        // A parser that keeps quoting apart: DuckDB's, with quoted nulls off.
        let path = std::env::temp_dir().join(format!("strata-csv-null-{}.csv", std::process::id()));
        std::fs::write(&path, &csv_text).unwrap();
        let database = duckdb::Connection::open_in_memory().unwrap();
        let mut statement = database
            .prepare(&format!(
                "SELECT note, n FROM read_csv('{}', header = true, auto_detect = false, quote = '\"', escape = '\"', \
                 allow_quoted_nulls = false, columns = {{'time': 'VARCHAR', 'note': 'VARCHAR', 'n': 'DOUBLE'}})",
                path.display()
            ))
            .unwrap();
        let parsed: Vec<(Option<String>, Option<f64>)> =
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect();
        std::fs::remove_file(&path).unwrap();
        let expected: Vec<(Option<String>, Option<f64>)> =
            expected.iter().map(|(note, n)| (note.map(str::to_string), *n)).collect();
        assert_eq!(parsed, expected, "{csv_text}");
        // And the csv crate reads the same values (it does not keep nulls apart).
        let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
        let notes: Vec<String> = reader.records().map(|r| r.unwrap()[1].to_string()).collect();
        assert_eq!(notes, ["", "", "a,\"b\"\nc", "x"]);
    }
}

/// Structured queries reuse connections to one database and keep their
/// parsed statements: a query over buffered rows (which builds a temporary
/// table) leaves nothing behind for the next, and a statement kept for the
/// same text answers from the files as they are at each query.
#[test]
fn repeated_structured_queries_follow_buffers_and_flushes() {
    let server = Server::start("query-reuse", "[ingest]\nflush_age_ms = 3600000\n");
    let count_of = |host: &str| {
        let body = json!({"time_range": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
            "filters": {"column": "host", "op": "=", "value": host},
            "downsample": {"aggregations": [{"fn": "count", "column": "v"}]}});
        query(&server, body)["rows"][0]["count_v"].as_u64().unwrap_or(0)
    };
    let mut written = [0u64; 2];
    for round in 0..6u64 {
        let body: String = (0..50 + round)
            .map(|i| format!("cpu,host=h{} v={i}i {}\n", i % 2, T0 + (round * 1000 + i) as i64 * 1_000_000_000))
            .collect();
        for i in 0..50 + round {
            written[(i % 2) as usize] += 1;
        }
        assert_eq!(server.post("/api/v2/write?bucket=cpu", body).0, 204);
        // Buffered rows: each of these queries builds a temporary table.
        for _ in 0..3 {
            assert_eq!((count_of("h0"), count_of("h1")), (written[0], written[1]), "round {round}, buffered");
        }
        if round % 2 == 0 {
            assert_eq!(server.post("/v1/flush", "").0, 200);
            // Files only: the same text twice, the second from the kept statement.
            for _ in 0..3 {
                assert_eq!((count_of("h0"), count_of("h1")), (written[0], written[1]), "round {round}, flushed");
            }
        }
    }
}
