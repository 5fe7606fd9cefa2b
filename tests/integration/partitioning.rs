//! Partitioner policies on the write path, as a client sees them: keyed
//! partitions from JSON and line protocol, replay after kill -9 into the
//! same partitions, hash buckets, pruning by key, and partitioners that
//! fail without storing anything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Server;

const PARTITIONER_FIXTURE: &str = include_str!("../fixtures/partitioner.wat");
/// 2026-01-15T10:00:00Z and 2026-02-15T10:00:00Z, in seconds.
const JAN: i64 = 1_768_471_200;
const FEB: i64 = 1_771_149_600;

/// Shares compiled components between the tests' servers (see policies.rs).
fn config(extra: &str) -> String {
    let cache = std::env::temp_dir().join("strata-test-policy-cache");
    format!(
        "[ingest]\nflush_age_ms = 3600000\n[policies]\ncache_dir = {cache:?}\nreload_debounce_ms = 50\n\
         [datasets.orders]\nperiod = \"month\"\n{extra}"
    )
}

fn partitioner(name: &str, plugin: &str, datasets: &str, config: &str) -> String {
    format!(
        "name = \"{name}\"\nkind = \"partitioner\"\nplugin = \"{plugin}\"\ndatasets = {datasets}\n\
         [limits]\ndeadline_ms = 200\n[config]\n{config}\n"
    )
}

fn fixture(behaviour: &str) -> Vec<u8> {
    wat::parse_str(PARTITIONER_FIXTURE.replace(";;BEHAVIOUR", behaviour)).unwrap()
}

/// `id → rows` (committed plus buffered) of a dataset's partitions.
fn partition_rows(server: &Server, dataset: &str) -> BTreeMap<String, u64> {
    let (status, body) = server.get(&format!("/v1/datasets/{dataset}/partitions"));
    assert_eq!(status, 200, "{body}");
    body["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let rows = p["rows"].as_u64().unwrap() + p["buffered_rows"].as_u64().unwrap();
            (p["id"].as_str().unwrap().to_string(), rows)
        })
        .collect()
}

fn expected(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(id, rows)| (id.to_string(), *rows)).collect()
}

/// `(time, tenant, amount)` of every row a structured query returns, sorted.
fn query_rows(server: &Server, dataset: &str, filters: Option<Value>) -> (Vec<(String, String, f64)>, Value) {
    let mut body = json!({ "time_range": { "start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z" } });
    if let Some(filters) = filters {
        body["filters"] = filters;
    }
    let (status, answer) = server.post(&format!("/v1/datasets/{dataset}/query"), body.to_string());
    assert_eq!(status, 200, "{answer}");
    let mut rows: Vec<(String, String, f64)> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["time"].as_str().unwrap().to_string(),
                row["tenant"].as_str().unwrap_or("").to_string(),
                row["amount"].as_f64().unwrap(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (rows, answer["stats"].clone())
}

fn wait_until(server: &Server, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn active_seq(server: &Server, policy: &str) -> i64 {
    let (status, body) = server.get(&format!("/v1/policies/{policy}"));
    assert_eq!(status, 200, "{body}");
    body["active_seq"].as_i64().unwrap_or(0)
}

#[test]
fn a_field_partitioner_keys_json_and_line_protocol_rows_and_replay_keeps_them() {
    let mut server = Server::start_with_files(
        "partition-by-tenant",
        &config(""),
        &[],
        &[(
            "policies/tenants.toml",
            partitioner("tenants", "builtin:partition-by-field", "[\"orders\"]", "fields = [\"tenant\"]").as_bytes(),
        )],
    );

    // JSON: three tenants over two months; "ACME Corp" is sanitised to a key.
    let mut written: Vec<(i64, &str, f64)> = Vec::new();
    let mut records = Vec::new();
    for (i, tenant) in ["t7", "t9", "t7", "ACME Corp", "t7", "t9"].iter().enumerate() {
        for (month, base) in [(0, JAN), (1, FEB)] {
            let time = base + i as i64;
            let amount = (i * 10 + month) as f64 + 0.5;
            records.push(json!({ "time": time, "tenant": tenant, "amount": amount }));
            written.push((time, tenant, amount));
        }
    }
    let (status, body) = server.post("/v1/datasets/orders/records?precision=s", Value::Array(records).to_string());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "rows": 12, "partitions": 6 }));

    // Line protocol into the same dataset, a fourth tenant among them.
    let mut lines = String::new();
    for (i, tenant) in ["t9", "t3", "t3"].iter().enumerate() {
        let time = JAN + 100 + i as i64;
        let amount = 100.0 + i as f64;
        lines.push_str(&format!("orders,tenant={tenant} amount={amount:?} {time}\n"));
        written.push((time, tenant, amount));
    }
    let (status, body) = server.post("/api/v2/write?bucket=orders&precision=s", lines);
    assert_eq!(status, 204, "{body}");

    let layout = expected(&[
        ("orders/2026-01/acme_corp", 1),
        ("orders/2026-01/t3", 2),
        ("orders/2026-01/t7", 3),
        ("orders/2026-01/t9", 3),
        ("orders/2026-02/acme_corp", 1),
        ("orders/2026-02/t7", 3),
        ("orders/2026-02/t9", 2),
    ]);
    assert_eq!(partition_rows(&server, "orders"), layout);

    // The query returns every row exactly once, buffered or flushed.
    let everything = |server: &Server| query_rows(server, "orders", None).0;
    let buffered = everything(&server);
    assert_eq!(buffered.len(), written.len());
    server.flush();
    assert_eq!(partition_rows(&server, "orders"), layout);
    assert_eq!(everything(&server), buffered);
    let mut t7: Vec<(i64, f64)> =
        written.iter().filter(|(_, t, _)| *t == "t7").map(|(time, _, a)| (*time, *a)).collect();
    t7.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let t7: Vec<f64> = t7.into_iter().map(|(_, amount)| amount).collect();
    let acme = written.iter().filter(|(_, t, _)| *t == "ACME Corp").count();

    let (_, listing) = server.get("/v1/datasets/orders/partitions");
    assert!(listing["partitions"].as_array().unwrap().iter().all(|p| p["key_field"] == "tenant"), "{listing}");

    // A filter on the key field prunes the other tenants' partitions…
    let (rows, stats) = query_rows(&server, "orders", Some(json!({ "column": "tenant", "op": "=", "value": "t7" })));
    assert_eq!(rows.iter().map(|r| r.2).collect::<Vec<_>>(), t7);
    assert_eq!(stats["partitions_pruned_by_key"], 5, "{stats}");
    let (rows, stats) = query_rows(
        &server,
        "orders",
        Some(
            json!({ "and": [{ "column": "tenant", "op": "in", "value": ["t3", "t9"] }, { "column": "amount", "op": ">", "value": 0 }] }),
        ),
    );
    assert_eq!(rows.len(), 7);
    assert_eq!(stats["partitions_pruned_by_key"], 4, "{stats}");
    // …but never when the value is not its own key, or under `or`.
    let (rows, stats) =
        query_rows(&server, "orders", Some(json!({ "column": "tenant", "op": "=", "value": "ACME Corp" })));
    assert_eq!((rows.len(), &stats["partitions_pruned_by_key"]), (acme, &json!(0)));
    let (rows, stats) = query_rows(
        &server,
        "orders",
        Some(
            json!({ "or": [{ "column": "tenant", "op": "=", "value": "t7" }, { "column": "amount", "op": ">", "value": 100 }] }),
        ),
    );
    assert_eq!((rows.len(), &stats["partitions_pruned_by_key"]), (t7.len() + 2, &json!(0)));

    // Buffered rows survive kill -9 and replay into the same partitions —
    // from the WAL, not by running the partitioner again: it now keys by
    // region, and that only applies to later writes.
    let (status, _) = server.post(
        "/v1/datasets/orders/records?precision=s",
        json!([{ "time": FEB + 50, "tenant": "t3", "region": "eu", "amount": 7.5 }]).to_string(),
    );
    assert_eq!(status, 200);
    std::fs::write(
        server.root().join("policies/tenants.toml"),
        partitioner("tenants", "builtin:partition-by-field", "[\"orders\"]", "fields = [\"region\"]"),
    )
    .unwrap();
    server.restart();
    let mut layout = layout;
    layout.insert("orders/2026-02/t3".into(), 1);
    assert_eq!(partition_rows(&server, "orders"), layout, "replayed into the partitions it was acknowledged into");
    assert_eq!(active_seq(&server, "tenants"), 2, "the new config is active");
    let (status, _) = server.post(
        "/v1/datasets/orders/records?precision=s",
        json!([{ "time": FEB + 60, "tenant": "t3", "region": "eu", "amount": 8.5 }]).to_string(),
    );
    assert_eq!(status, 200);
    layout.insert("orders/2026-02/eu".into(), 1);
    assert_eq!(partition_rows(&server, "orders"), layout);
    // The region-keyed partition holds a t3 row: a tenant filter must not prune it.
    let (rows, _) = query_rows(&server, "orders", Some(json!({ "column": "tenant", "op": "=", "value": "t3" })));
    assert_eq!(rows.iter().map(|r| r.2).collect::<Vec<_>>(), [101.0, 102.0, 7.5, 8.5]);
    assert_eq!(everything(&server).len(), written.len() + 2);

    // Keyed partitions have their own URLs.
    let (status, body) = server.post("/v1/datasets/orders/partitions/2026-01/t7/seal", "");
    assert_eq!((status, &body["id"]), (200, &json!("orders/2026-01/t7")), "{body}");
    let (status, explain) = server.get("/v1/datasets/orders/partitions/2026-01/t7/explain");
    assert_eq!(status, 200, "{explain}");
    let (status, error) =
        server.post("/v1/datasets/orders/records?precision=s", json!([{ "time": JAN, "region": "t7" }]).to_string());
    assert_eq!((status, error["error"]["partition"].as_str()), (409, Some("orders/2026-01/t7")), "{error}");
}

#[test]
fn a_hash_partitioner_spreads_rows_over_its_buckets() {
    let server = Server::start_with_files(
        "partition-by-hash",
        &config(""),
        &[],
        &[(
            "policies/hosts.toml",
            partitioner("hosts", "builtin:partition-by-hash", "[\"cpu\"]", "fields = [\"host\"]\nbuckets = 4")
                .as_bytes(),
        )],
    );
    let lines: String = (0..200).map(|i| format!("cpu,host=h{i} usage={i} {}\n", JAN + i)).collect();
    let (status, body) = server.post("/api/v2/write?bucket=cpu&precision=s", lines);
    assert_eq!(status, 204, "{body}");
    let partitions = partition_rows(&server, "cpu");
    let keys: Vec<&str> = partitions.keys().map(|id| id.rsplit('/').next().unwrap()).collect();
    assert_eq!(keys, ["b0", "b1", "b2", "b3"], "{partitions:?}");
    assert_eq!(partitions.values().sum::<u64>(), 200);
    assert!(partitions.values().all(|rows| *rows >= 20), "spread, not piled up: {partitions:?}");
    // The same host always lands in the same bucket; hash keys are never pruned.
    let again: String = (0..200).map(|i| format!("cpu,host=h{i} usage={i} {}\n", JAN + 1000 + i)).collect();
    assert_eq!(server.post("/api/v2/write?bucket=cpu&precision=s", again).0, 204);
    let doubled = partition_rows(&server, "cpu");
    assert!(partitions.iter().all(|(id, rows)| doubled[id] == 2 * rows), "{partitions:?} {doubled:?}");
    let query = json!({
        "time_range": { "start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z" },
        "filters": { "column": "host", "op": "=", "value": "h7" }
    });
    let (status, answer) = server.post("/v1/datasets/cpu/query", query.to_string());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"].as_array().unwrap().len(), 2);
    assert_eq!(answer["stats"]["partitions_pruned_by_key"], 0);
    let (_, listing) = server.get("/v1/datasets/cpu/partitions");
    assert!(listing["partitions"].as_array().unwrap().iter().all(|p| p["key_field"].is_null()), "{listing}");
}

#[test]
fn failing_partitioners_refuse_the_write_and_store_nothing() {
    let files: Vec<(String, Vec<u8>)> = vec![
        ("policies/trap.toml".into(), partitioner("trap", "trap.wasm", "[\"trap\"]", "").into_bytes()),
        ("policies/trap.wasm".into(), fixture("unreachable")),
        ("policies/spin.toml".into(), partitioner("spin", "spin.wasm", "[\"spin\"]", "").into_bytes()),
        ("policies/spin.wasm".into(), fixture("(loop $forever (br $forever))")),
        ("policies/bad-key.toml".into(), partitioner("bad-key", "bad-key.wasm", "[\"bad-key\"]", "").into_bytes()),
        ("policies/bad-key.wasm".into(), fixture("(call $bad_key)")),
        ("policies/reject.toml".into(), partitioner("reject", "reject.wasm", "[\"reject\"]", "").into_bytes()),
        ("policies/reject.wasm".into(), fixture("(call $reject_first)")),
        (
            "policies/strict.toml".into(),
            partitioner("strict", "builtin:partition-by-field", "[\"strict\", \"twice\"]", "fields = [\"tenant\"]")
                .into_bytes(),
        ),
        (
            "policies/also.toml".into(),
            partitioner("also", "builtin:partition-by-hash", "[\"twice\"]", "fields = [\"tenant\"]\nbuckets = 2")
                .into_bytes(),
        ),
    ];
    let files: Vec<(&str, &[u8])> = files.iter().map(|(path, bytes)| (path.as_str(), bytes.as_slice())).collect();
    let server = Server::start_with_files("partition-failures", &config(""), &[], &files);
    let (_, list) = server.get("/v1/policies");
    assert!(list["policies"].as_array().unwrap().iter().all(|p| p["status"] == "active"), "{list}");

    let json_body = json!([{ "time": JAN, "tenant": "t1", "v": 1.0 }, { "time": JAN + 1, "v": 2.0 }]).to_string();
    let lp_body = "m,tenant=t1 v=1 1768471200\nm v=2 1768471201\nm,tenant=t2 v=3 1768471202\n";
    let cases: Vec<(&str, &str, u16, &str, &str)> = vec![
        ("/v1/datasets/trap/records?precision=s", json_body.as_str(), 422, "policy_failed", "unreachable"),
        ("/v1/datasets/spin/records?precision=s", json_body.as_str(), 422, "policy_limit_exceeded", "deadline_ms"),
        ("/v1/datasets/bad-key/records?precision=s", json_body.as_str(), 422, "policy_failed", "Bad/Key"),
        ("/v1/datasets/reject/records?precision=s", json_body.as_str(), 422, "policy_failed", "record 1"),
        ("/v1/datasets/strict/records?precision=s", json_body.as_str(), 422, "policy_failed", "record 2"),
        ("/api/v2/write?bucket=strict&precision=s&accept_partial=false", lp_body, 422, "policy_failed", "line 2"),
        ("/api/v2/write?bucket=trap&precision=s", lp_body, 422, "policy_failed", "unreachable"),
        ("/v1/datasets/twice/records?precision=s", json_body.as_str(), 422, "policy_invalid", "at most one"),
    ];
    for (path, body, status, code, mentions) in cases {
        let started = Instant::now();
        let (got, error) = server.post(path, body.to_string());
        assert_eq!((got, error["error"]["code"].as_str()), (status, Some(code)), "{path}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{path}: {message}");
        assert!(started.elapsed() < Duration::from_secs(5), "{path}: {:?}", started.elapsed());
    }
    // Per-record rejections name the record.
    let (_, error) = server.post("/v1/datasets/strict/records?precision=s", json_body.clone());
    assert_eq!(error["error"]["records"][0]["record"], 2, "{error}");
    assert_eq!(error["error"]["policy"], "strict");
    let (_, error) = server.post("/v1/datasets/twice/records?precision=s", json_body.clone());
    assert_eq!(error["error"]["policies"], json!(["also", "strict"]), "{error}");

    // Nothing of any refused request was stored.
    for dataset in ["trap", "spin", "bad-key", "reject", "strict", "twice"] {
        let (status, body) = server.get(&format!("/v1/datasets/{dataset}"));
        assert!(status == 404 || (body["rows"] == 0 && body["partitions"] == 0), "{dataset}: {body}");
    }

    // Line protocol with accept_partial drops just the lines the
    // partitioner rejected, reported like lines that do not parse.
    let (status, error) = server.post("/api/v2/write?bucket=strict&precision=s", format!("{lp_body}broken\n"));
    assert_eq!((status, error["error"]["code"].as_str()), (400, Some("partial_write")), "{error}");
    assert_eq!(error["error"]["rows"], 2);
    let lines = error["error"]["lines"].as_array().unwrap();
    let numbers: Vec<i64> = lines.iter().map(|l| l["line_number"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [2, 4]);
    assert_eq!(lines[0]["original_line"], "m v=2 1768471201");
    assert!(lines[0]["error_message"].as_str().unwrap().starts_with("partitioner strict: "), "{error}");
    assert_eq!(
        partition_rows(&server, "strict"),
        expected(&[("strict/2026-01-15/t1", 1), ("strict/2026-01-15/t2", 1)])
    );

    // The server kept serving; a hot reload fixes the broken partitioner for
    // the requests that follow.
    assert_eq!(server.get("/health").0, 200);
    std::fs::write(
        server.root().join("policies/trap.toml"),
        partitioner("trap", "builtin:partition-by-field", "[\"trap\"]", "fields = [\"v\"]\ndefault = \"none\""),
    )
    .unwrap();
    wait_until(&server, "the fixed partitioner is active", || active_seq(&server, "trap") == 2);
    let (status, body) = server.post("/v1/datasets/trap/records?precision=s", json_body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(partition_rows(&server, "trap"), expected(&[("trap/2026-01-15/1", 1), ("trap/2026-01-15/2", 1)]));
}
