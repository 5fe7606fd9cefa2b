//! Ingest as a client sees it: formats, errors, limits, idempotency.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{Value, json};

use crate::support::{Server, client, column_kinds};

const CONFIG: &str = "[ingest]\nflush_age_ms = 3600000\n";

fn row(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn sorted_by_time(mut rows: Vec<BTreeMap<String, Value>>) -> Vec<BTreeMap<String, Value>> {
    rows.sort_by_key(|r| r["time"].as_i64().unwrap());
    rows
}

#[test]
fn json_ndjson_and_line_protocol_round_trip_exactly() {
    let server = Server::start("round-trip", CONFIG);

    let (status, body) = server.post(
        "/v1/datasets/events/records",
        r#"[{"time":"2026-01-15T10:00:00.123456789Z","user":"ann","amount":12.5,"count":3,"ok":true},
            {"time":"2026-01-16T10:00:00Z","user":"bob","amount":-1e-3}]"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "rows": 2, "partitions": 2 }));

    let (status, body) = server.post(
        "/v1/datasets/events/records?precision=ms",
        "{\"time\":1768471200000,\"user\":\"cy\",\"ok\":false}\n{\"time\":1768471200001,\"user\":\"cy\",\"count\":7}\n",
    );
    assert_eq!(status, 200, "{body}");

    let lp = "cpu,host=a,region=us\\ west usage=0.5,cores=8i,big=18446744073709551615u,up=T,msg=\"say \\\"hi\\\"\" 1768471200000000000\n\
              cpu,host=b usage=1 1768471200000000001\n";
    let (status, body) = server.post("/api/v2/write?bucket=metrics&precision=ns", lp);
    assert_eq!(status, 204, "{body}");
    let (status, body) = server.post("/api/v3/write_lp?db=metrics&precision=second", "cpu,host=c usage=2 1768471300");
    assert_eq!(status, 204, "{body}");

    // Buffered rows are counted before any flush.
    let (_, dataset) = server.get("/v1/datasets/events");
    assert_eq!(dataset["rows"], 4);
    assert_eq!(dataset["buffered_rows"], 4);

    server.flush();
    let events = sorted_by_time(server.committed_rows("events"));
    assert_eq!(
        events,
        vec![
            row(&[("time", json!(1768471200000000000i64)), ("user", json!("cy")), ("ok", json!(false))]),
            row(&[("time", json!(1768471200001000000i64)), ("user", json!("cy")), ("count", json!(7.0))]),
            row(&[
                ("time", json!(1768471200123456789i64)),
                ("user", json!("ann")),
                ("amount", json!(12.5)),
                ("count", json!(3.0)),
                ("ok", json!(true))
            ]),
            row(&[("time", json!(1768557600000000000i64)), ("user", json!("bob")), ("amount", json!(-0.001))]),
        ]
    );
    let metrics = sorted_by_time(server.committed_rows("metrics"));
    assert_eq!(metrics.len(), 3);
    assert_eq!(
        metrics[0],
        row(&[
            ("time", json!(1768471200000000000i64)),
            ("_measurement", json!("cpu")),
            ("host", json!("a")),
            ("region", json!("us west")),
            ("usage", json!(0.5)),
            ("cores", json!(8)),
            ("big", json!(u64::MAX)),
            ("up", json!(true)),
            ("msg", json!("say \"hi\"")),
        ])
    );
    assert_eq!(metrics[2]["time"], json!(1768471300000000000i64));

    let (_, dataset) = server.get("/v1/datasets/metrics");
    let kinds = column_kinds(&dataset);
    assert_eq!(kinds["host"], "tag");
    assert_eq!(kinds["cores"], "integer");
    assert_eq!(kinds["big"], "unsigned");
    assert_eq!(kinds["up"], "boolean");
    assert_eq!(kinds["msg"], "text");

    let (_, partitions) = server.get("/v1/datasets/events/partitions");
    let ids: Vec<&str> =
        partitions["partitions"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["events/2026-01-15", "events/2026-01-16"]);
    let first = &partitions["partitions"][0];
    assert_eq!(first["tier"], "hot");
    assert_eq!(first["rows"], 3);
    assert_eq!(first["min_time"], "2026-01-15T10:00:00Z");
    assert_eq!(first["max_time"], "2026-01-15T10:00:00.123456789Z");
    assert_eq!(first["files"].as_array().unwrap().len(), 1);
}

#[test]
fn line_protocol_partial_writes_report_bad_lines() {
    let server = Server::start("partial", CONFIG);
    let body = "m v=1 1\nm v= 2\nm v=3 3\nbroken\n";
    let (status, error) = server.post("/api/v3/write_lp?db=lp", body);
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "partial_write");
    let lines: Vec<i64> =
        error["error"]["lines"].as_array().unwrap().iter().map(|l| l["line_number"].as_i64().unwrap()).collect();
    assert_eq!(lines, vec![2, 4]);
    assert_eq!(error["error"]["rows"], 2);

    let (status, error) = server.post("/api/v3/write_lp?db=lp&accept_partial=false", "m v=4 4\nm v=x 5\n");
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "invalid_line_protocol");

    let (status, error) = server.post("/api/v2/write?bucket=lp", "nothing good here\n");
    assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_line_protocol")));

    server.flush();
    let mut times: Vec<i64> = server.committed_rows("lp").iter().map(|r| r["time"].as_i64().unwrap()).collect();
    times.sort();
    assert_eq!(times, vec![1, 3], "only the good lines of the partial write are stored");
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let config = format!("{CONFIG}[limits]\nbody_bytes_max = 2000\ncolumns_per_dataset_max = 3\n");
    let server = Server::start("bad-input", &config);
    let (status, _) = server.post("/v1/datasets/good/records", r#"[{"time":1,"a":1.5}]"#);
    assert_eq!(status, 200);

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/datasets/good/records", "[{\"a\":".to_string(), 400, "invalid_json"),
        ("/v1/datasets/good/records", "[1,2]".to_string(), 400, "invalid_json"),
        ("/v1/datasets/good/records", r#"[{"a":"text"}]"#.to_string(), 400, "schema_conflict"),
        ("/v1/datasets/good/records", r#"[{"b":1},{"b":true}]"#.to_string(), 400, "schema_conflict"),
        ("/v1/datasets/good/records", r#"[{"a":{"nested":1}}]"#.to_string(), 400, "unsupported_value"),
        ("/v1/datasets/good/records", r#"[{"time":"noon"}]"#.to_string(), 400, "invalid_timestamp"),
        ("/v1/datasets/good/records", r#"[{"c":1,"d":2,"e":3}]"#.to_string(), 422, "limit_exceeded"),
        (
            "/v1/datasets/good/records",
            format!("[{{\"a\":1,\"pad\":\"{}\"}}]", "x".repeat(3000)),
            413,
            "payload_too_large",
        ),
        ("/api/v2/write?bucket=good", "m a=1i 1".to_string(), 400, "schema_conflict"),
        ("/api/v2/write?bucket=good&precision=fortnight", "m a=1 1".to_string(), 400, "bad_request"),
        ("/api/v2/write", "m a=1 1".to_string(), 400, "bad_request"),
        ("/v1/datasets/Good/records", "[]".to_string(), 400, "invalid_dataset_name"),
        ("/api/v2/write?bucket=..%2F..%2Fetc", "m a=1 1".to_string(), 400, "invalid_dataset_name"),
        ("/api/v2/write?bucket=%2Fetc", "m a=1 1".to_string(), 400, "invalid_dataset_name"),
        ("/api/v2/write?bucket=a%00b", "m a=1 1".to_string(), 400, "invalid_dataset_name"),
        (
            &*Box::leak(format!("/api/v2/write?bucket={}", "n".repeat(10_000)).into_boxed_str()),
            "m a=1 1".to_string(),
            400,
            "invalid_dataset_name",
        ),
    ];
    for (path, body, status, code) in cases {
        let (got, error) = server.post(path, body);
        assert_eq!((got, error["error"]["code"].as_str()), (status, Some(code)), "{path}: {error}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Paths as written, not as an HTTP client would normalise them.
    for path in [
        "/v1/datasets/%2e%2e/records",
        "/v1/datasets/..%2fx/records",
        "/v1/datasets/..%2F..%2Fetc/records",
        "/v1/datasets/a%00b/records",
    ] {
        let (status, error) = server.raw("POST", path, "[{\"a\":1}]");
        assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_dataset_name")), "{path}: {error}");
    }
    let (status, _) = server.raw("POST", "/v1/datasets/../records", "[{\"a\":1}]");
    assert!(status == 400 || status == 404, "{status}");

    // Conflicts name the column.
    let (_, error) = server.post("/v1/datasets/good/records", r#"[{"a":"text"}]"#);
    assert_eq!(error["error"]["column"], "a");

    // A body that announces too much is refused before it is read: the
    // response arrives although the body is never sent.
    {
        use std::io::{Read, Write};
        let authority = server.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(authority).unwrap();
        write!(
            stream,
            "POST /v1/datasets/good/records HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 999999999\r\n\r\n"
        )
        .unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 413");
    }

    // A gzip bomb is refused once it inflates past the limit.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![b' '; 1_000_000]).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 2000);
    let response = client()
        .post(format!("{}/api/v2/write?bucket=good", server.url))
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);

    // Unknown routes and methods.
    assert_eq!(server.get("/v1/nope").0, 404);
    assert_eq!(server.get("/v1/datasets/good/records").0, 405);
    assert_eq!(server.get("/v1/datasets/missing").0, 404);

    // Nothing but the good dataset exists; nothing escaped the data directory.
    let (_, datasets) = server.get("/v1/datasets");
    let names: Vec<&str> =
        datasets["datasets"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["good"]);
    let (_, good) = server.get("/v1/datasets/good");
    assert_eq!(good["rows"], 1);
    assert_eq!(good["columns"].as_array().unwrap().len(), 1);
    let root = server.data_dir.parent().unwrap();
    for entry in std::fs::read_dir(root).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(["data", "strata.toml", "server.log"].contains(&name.as_str()), "unexpected {name}");
    }
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn gzip_bodies_are_accepted() {
    let server = Server::start("gzip", CONFIG);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"m v=1 1\nm v=2 2\n").unwrap();
    let response = client()
        .post(format!("{}/api/v2/write?bucket=gz", server.url))
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(server.get("/v1/datasets/gz").1["rows"], 2);
}

#[test]
fn idempotency_keys_make_retries_safe() {
    let server = Server::start("idempotency", CONFIG);
    let send = |key: &str, body: &str| {
        let response = client()
            .post(format!("{}/v1/datasets/orders/records", server.url))
            .header("idempotency-key", key)
            .body(body.to_string())
            .send()
            .unwrap();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        (response.status().as_u16(), replayed, response.json::<Value>().unwrap())
    };
    let body = r#"[{"time":1,"id":1},{"time":2,"id":2}]"#;
    assert_eq!(send("k1", body), (200, false, json!({ "rows": 2, "partitions": 1 })));
    assert_eq!(send("k1", body), (200, true, json!({ "rows": 2, "partitions": 1 })));
    let (status, _, error) = send("k1", r#"[{"time":3,"id":3}]"#);
    assert_eq!((status, error["error"]["code"].as_str()), (422, Some("idempotency_key_reused")));

    // Keys survive a flush (WAL truncation) and a restart.
    server.flush();
    assert!(send("k1", body).1, "replayed after a flush");
    let mut server = server;
    server.restart();
    let response = client()
        .post(format!("{}/v1/datasets/orders/records", server.url))
        .header("idempotency-key", "k1")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("idempotent-replayed").is_some());
    server.flush();
    assert_eq!(server.committed_rows("orders").len(), 2, "stored once");
}

#[test]
fn sealed_partitions_refuse_writes() {
    let server = Server::start("sealed", CONFIG);
    let day1 = r#"[{"time":"2026-02-01T00:00:00Z","v":1}]"#;
    assert_eq!(server.post("/v1/datasets/s/records", day1).0, 200);
    let (status, body) = server.post("/v1/datasets/s/partitions/2026-02-01/seal", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["read_only"], true);

    let mixed = r#"[{"time":"2026-02-02T00:00:00Z","v":2},{"time":"2026-02-01T05:00:00Z","v":3}]"#;
    let (status, error) = server.post("/v1/datasets/s/records", mixed);
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("partition_read_only")));
    assert_eq!(error["error"]["partition"], "s/2026-02-01");
    assert_eq!(server.get("/v1/datasets/s").1["rows"], 1, "nothing of the refused request was written");

    assert_eq!(server.post("/api/v2/write?bucket=s&precision=s", "m v=4 1769990400").0, 204, "2026-02-02 is open");
    assert_eq!(server.post("/v1/datasets/s/partitions/2026-01-01/seal", "").0, 404);
    assert_eq!(server.post("/v1/datasets/s/partitions/2026-02-01/unseal", "").0, 200);
    assert_eq!(server.post("/v1/datasets/s/records", day1).0, 200);
}

#[test]
fn late_rows_can_be_refused_row_by_row() {
    // Globally refuse_rows; the `strict` dataset keeps the default behaviour.
    let config = format!("{CONFIG}late_rows = \"refuse_rows\"\n[datasets.strict]\nlate_rows = \"refuse_request\"\n");
    let mut server = Server::start("late-rows", &config);
    for dataset in ["late", "strict"] {
        let day1 = r#"[{"time":"2026-02-01T00:00:00Z","v":1}]"#;
        assert_eq!(server.post(&format!("/v1/datasets/{dataset}/records"), day1).0, 200);
        assert_eq!(server.post(&format!("/v1/datasets/{dataset}/partitions/2026-02-01/seal"), "").0, 200);
    }
    let mixed = r#"[{"time":"2026-02-02T00:00:00Z","v":2},{"time":"2026-02-01T05:00:00Z","v":3},
                    {"time":"2026-02-02T01:00:00Z","v":4},{"time":"2026-02-01T06:00:00Z","v":5}]"#;

    let (status, error) = server.post("/v1/datasets/strict/records", mixed);
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("partition_read_only")), "{error}");
    assert_eq!(server.get("/v1/datasets/strict").1["rows"], 1);

    // JSON: the rows for open partitions are written, the late ones listed.
    let send = |body: &str| {
        let response = client()
            .post(format!("{}/v1/datasets/late/records", server.url))
            .header("idempotency-key", "late-1")
            .body(body.to_string())
            .send()
            .unwrap();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        (response.status().as_u16(), replayed, response.json::<Value>().unwrap())
    };
    let (status, replayed, error) = send(mixed);
    assert_eq!((status, replayed, error["error"]["code"].as_str()), (409, false, Some("late_rows_refused")), "{error}");
    assert_eq!(error["error"]["rows"], 2);
    assert_eq!(error["error"]["refused_rows"], 2);
    assert_eq!(
        error["error"]["refused"],
        json!([{ "record": 2, "partition": "late/2026-02-01" }, { "record": 4, "partition": "late/2026-02-01" }])
    );
    assert_eq!(error["error"]["sealed_partitions"], json!(["late/2026-02-01"]));
    assert_eq!(server.get("/v1/datasets/late").1["rows"], 3, "the first row and the two on 2026-02-02");
    // A retry gets the same answer and writes nothing again.
    let (status, replayed, again) = send(mixed);
    assert_eq!((status, replayed), (409, true));
    assert_eq!(again, error);
    assert_eq!(server.get("/v1/datasets/late").1["rows"], 3);

    // Line protocol: late lines and bad lines are both reported by number.
    let body = "m v=6 1769990400\nm v=7 1769904000\nbroken\nm v=8 1769990401\n";
    let (status, error) = server.post("/api/v2/write?bucket=late&precision=s", body);
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("late_rows_refused")), "{error}");
    assert_eq!(error["error"]["rows"], 2);
    assert_eq!(error["error"]["refused"], json!([{ "line_number": 2, "partition": "late/2026-02-01" }]));
    assert_eq!(error["error"]["lines"][0]["line_number"], 3);
    assert_eq!(server.get("/v1/datasets/late").1["rows"], 5);

    // Only late rows: nothing to write, the whole request is refused.
    let (status, error) = server.post("/v1/datasets/late/records", r#"[{"time":"2026-02-01T07:00:00Z","v":9}]"#);
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("partition_read_only")), "{error}");
    assert_eq!(error["error"]["refused"], json!([{ "record": 1, "partition": "late/2026-02-01" }]));
    assert_eq!(server.get("/v1/datasets/late").1["rows"], 5);

    // Written: 1 + 1 + 2 + 2 (the retry wrote nothing). Refused for sealed
    // partitions: 4 (strict, whole) + 2 + 1 + 1 (whole). Rejected: one line.
    let metrics = server.get_text("/metrics");
    for expected in [
        "strata_ingest_rows_total 6\n",
        "strata_ingest_rows_refused_sealed_total 8\n",
        "strata_ingest_records_rejected_total 1\n",
    ] {
        assert!(metrics.contains(expected), "{expected:?} in\n{metrics}");
    }

    // The WAL logged only the written rows: after a kill -9 the replay
    // buffers exactly those again.
    server.restart();
    server.flush();
    let mut values: Vec<f64> = server.committed_rows("late").iter().map(|r| r["v"].as_f64().unwrap()).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, [1.0, 2.0, 4.0, 6.0, 8.0]);
}

#[test]
fn full_buffers_push_back_with_retry_after() {
    let config = "[ingest]\nflush_age_ms = 3600000\nflush_bytes = 1000000000\n[limits]\nbuffer_bytes_max = 20000\n";
    let server = Server::start("backpressure", config);
    let rows: Vec<Value> = (0..500).map(|i| json!({ "time": i, "v": i as f64 })).collect();
    let body = serde_json::to_string(&rows).unwrap();
    let mut refused = None;
    for _ in 0..20 {
        let response =
            client().post(format!("{}/v1/datasets/bp/records", server.url)).body(body.clone()).send().unwrap();
        if response.status() == 503 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let refused = refused.expect("writes are refused once buffers are full");
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.json::<Value>().unwrap()["error"]["code"], "buffer_full");
    // The background flusher relieves the pressure and writes succeed again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if server.post("/v1/datasets/bp/records", body.clone()).0 == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "pressure never relieved");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn unknown_config_keys_are_refused_at_start() {
    let dir = crate::support::temp_dir("bad-config");
    let path = dir.join("strata.toml");
    std::fs::write(&path, "[limits]\nbody_bytes_mux = 1\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("body_bytes_mux"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}
