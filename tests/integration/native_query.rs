//! The native executor against DuckDB: the same structured queries over the
//! same snapshot (files of several row groups and pages, a column some
//! files lack, a tag only buffered rows have, buffered rows; with and
//! without groups, gap-filled or not), answered by
//! two engines, one with `query.native` on and one with it off, must be
//! the same answers: same columns, types and nullability, same rows.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use strata::query::output::OutputFormat;
use strata::query::plan::QueryRequest;
use strata::query::{QueryEngine, QueryResult};

use crate::support::Server;

const SECOND: i64 = 1_000_000_000;
const DAY: i64 = 86_400 * SECOND;
/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600_000_000_000;
const HOSTS: usize = 12;

/// Small row groups, so that files have several, and pages of several
/// series each.
const CONFIG: &str = "[ingest]\nrow_group_rows_max = 6000\n";

/// One line of round `round` (0 and 1 are flushed, 2 stays buffered):
/// host `h`, region by host, a float that is sometimes absent, an integer,
/// an unsigned, a string field; `extra` from round 1 on, `zone` in round 2.
fn line(rng: &mut StdRng, round: usize, time: i64) -> String {
    let host = rng.random_range(0..HOSTS);
    let mut tags = format!("m,host=h{host:02},region=r{}", host % 3);
    if round == 2 && rng.random_bool(0.5) {
        tags.push_str(&format!(",zone=z{}", host % 2));
    }
    let mut fields = Vec::new();
    if rng.random_bool(0.9) {
        fields.push(format!("f={:?}", (rng.random_range(-50_000..50_000) as f64) / 7.0));
    }
    fields.push(format!("i={}i", rng.random_range(-1_000_000i64..1_000_000)));
    if rng.random_bool(0.8) {
        fields.push(format!("u={}u", rng.random_range(0u64..u64::MAX / 2)));
    }
    if rng.random_bool(0.5) {
        fields.push(format!("s=\"v{}\"", rng.random_range(0..5)));
    }
    if round >= 1 && rng.random_bool(0.7) {
        fields.push(format!("extra={:?}", rng.random_range(0.0..1.0)));
    }
    format!("{tags} {} {time}\n", fields.join(","))
}

/// A random structured query, and whether the native executor must answer it.
fn random_query(rng: &mut StdRng) -> (Value, bool) {
    let host = |rng: &mut StdRng| format!("h{:02}", rng.random_range(0..HOSTS + 1));
    let (filters, native) = match rng.random_range(0..8) {
        0 => (json!({"column": "host", "op": "=", "value": host(rng)}), true),
        1 => (json!({"column": "host", "op": "in", "value": [host(rng), host(rng), host(rng)]}), true),
        2 => (
            json!({"and": [{"column": "region", "op": "=", "value": format!("r{}", rng.random_range(0..3))},
                           {"column": "host", "op": "in", "value": [host(rng), host(rng)]}]}),
            true,
        ),
        3 => (json!({"column": "zone", "op": "=", "value": "z1"}), true),
        4 => (json!({"column": "host", "op": "in", "value": []}), true),
        5 => (
            json!({"and": [{"column": "host", "op": "=", "value": host(rng)}, {"and": [{"column": "region", "op": "in", "value": ["r0", "r1"]}]}]}),
            true,
        ),
        // Not the executor's: an `or`, and a field condition.
        6 => (
            json!({"or": [{"column": "host", "op": "=", "value": "h01"}, {"column": "host", "op": "=", "value": "h02"}]}),
            false,
        ),
        _ => (
            json!({"and": [{"column": "host", "op": "=", "value": host(rng)}, {"column": "i", "op": ">", "value": 0}]}),
            false,
        ),
    };
    let choices = [
        ("avg", "f"),
        ("sum", "f"),
        ("min", "f"),
        ("max", "f"),
        ("count", "f"),
        ("min", "i"),
        ("max", "i"),
        ("count", "i"),
        ("min", "u"),
        ("max", "u"),
        ("count", "u"),
        ("count", "s"),
        ("count", "host"),
        ("count", "zone"),
        ("avg", "extra"),
        ("max", "extra"),
    ];
    let mut aggregations = Vec::new();
    for _ in 0..rng.random_range(1..4) {
        let (function, column) = choices[rng.random_range(0..choices.len())];
        let alias = format!("{function}_{column}_{}", aggregations.len());
        aggregations.push(json!({"fn": function, "column": column, "alias": alias}));
    }
    let start = T0 + rng.random_range(-DAY / 2..3 * DAY);
    let end = start + [60 * SECOND, 3_600 * SECOND, DAY / 3, DAY, 4 * DAY][rng.random_range(0..5)];
    let mut downsample = json!({"aggregations": aggregations});
    let interval = ["10s", "1m", "7m", "1h", "1d", ""][rng.random_range(0..6)];
    if !interval.is_empty() {
        downsample["interval"] = json!(interval);
    }
    // Gap filling, over ranges short enough to fill.
    if end - start <= DAY && interval != "10s" {
        downsample["fill"] = json!(["none", "null", "previous"][rng.random_range(0..3)]);
    }
    let mut query = json!({"time_range": {"start": start, "end": end}, "filters": filters, "downsample": downsample});
    // Groups, some of them null where a row lacks the tag (`zone`).
    let groups = [
        json!([]),
        json!(["host"]),
        json!(["region"]),
        json!(["zone"]),
        json!(["region", "host"]),
        json!(["zone", "host"]),
    ];
    query["group_by"] = groups[rng.random_range(0..groups.len())].clone();
    if rng.random_bool(0.5) {
        query["order"] = json!("desc");
    }
    if rng.random_bool(0.3) {
        query["limit"] = json!(rng.random_range(0..20));
    }
    if rng.random_bool(0.2) {
        query["offset"] = json!(rng.random_range(0..10));
    }
    (query, native)
}

/// The whole body of an answer.
fn body(runtime: &tokio::runtime::Runtime, result: QueryResult) -> Vec<u8> {
    let mut chunks = result.chunks;
    let mut out = Vec::new();
    runtime.block_on(async {
        while let Some(chunk) = chunks.recv().await {
            out.extend_from_slice(&chunk.expect("the answer ends cleanly"));
        }
    });
    out
}

/// An Arrow answer as one batch.
fn batch(ipc: &[u8]) -> RecordBatch {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// Asserts two answers hold the same rows: floats to 1e-9 relative (sums
/// may add in another order), everything else exactly.
fn assert_same(native: &RecordBatch, duckdb: &RecordBatch, query: &Value) {
    assert_eq!(native.schema(), duckdb.schema(), "{query}");
    assert_eq!(native.num_rows(), duckdb.num_rows(), "{query}");
    for (n, d) in native.columns().iter().zip(duckdb.columns()) {
        for row in 0..n.len() {
            assert_eq!(n.is_valid(row), d.is_valid(row), "row {row} of {query}");
            if !n.is_valid(row) {
                continue;
            }
            match n.data_type() {
                DataType::Utf8 => {
                    assert_eq!(n.as_string::<i32>().value(row), d.as_string::<i32>().value(row), "{query}")
                }
                DataType::Float64 => {
                    let (a, b) =
                        (n.as_primitive::<Float64Type>().value(row), d.as_primitive::<Float64Type>().value(row));
                    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}, row {row} of {query}");
                }
                DataType::Int64 | DataType::Timestamp(_, _) => {
                    let n = arrow::compute::cast(n, &DataType::Int64).unwrap();
                    let d = arrow::compute::cast(d, &DataType::Int64).unwrap();
                    assert_eq!(
                        n.as_primitive::<Int64Type>().value(row),
                        d.as_primitive::<Int64Type>().value(row),
                        "{query}"
                    );
                }
                DataType::UInt64 => assert_eq!(
                    n.as_primitive::<UInt64Type>().value(row),
                    d.as_primitive::<UInt64Type>().value(row),
                    "{query}"
                ),
                other => panic!("unexpected column type {other} in {query}"),
            }
        }
    }
}

#[test]
fn native_answers_are_duckdbs_over_files_and_buffers() {
    let mut rng = StdRng::seed_from_u64(15);
    let mut server = Server::start("native-query", CONFIG);
    // Three days, rounds of 20,000 rows each at random times: two
    // flushed (files of several row groups per daily partition), one
    // buffered.
    for round in 0..3 {
        for _ in 0..4 {
            let text: String = (0..5_000)
                .map(|_| {
                    let time = T0 + rng.random_range(0..3 * DAY);
                    line(&mut rng, round, time)
                })
                .collect();
            assert_eq!(server.post("/api/v2/write?bucket=m", text).0, 204);
        }
        if round < 2 {
            server.flush();
        }
    }
    let data_dir = server.data_dir.clone();
    server.kill9();

    let (config, runtime, store) = crate::support::open_store(&data_dir);
    let engine = |native: bool, dir: &str| {
        let mut query = config.query.clone();
        query.native = native;
        Arc::new(QueryEngine::new(query, store.targets().clone(), &data_dir.join(dir)))
    };
    let (native, duckdb) = (engine(true, "query-tmp-native"), engine(false, "query-tmp-duckdb"));
    let dataset = store.datasets().into_iter().find(|d| d.name.to_string() == "m").unwrap();
    let ask = |engine: &Arc<QueryEngine>, query: &Value, format: OutputFormat| {
        let request: QueryRequest = serde_json::from_value(query.clone()).unwrap();
        let result = runtime.block_on(engine.structured(&store, dataset.clone(), request, format)).unwrap();
        body(&runtime, result)
    };

    let mut answered = 0;
    for _ in 0..300 {
        let (query, expect_native) = random_query(&mut rng);
        let document: Value = serde_json::from_slice(&ask(&native, &query, OutputFormat::Json)).unwrap();
        let executor = document["stats"]["executor"].as_str().unwrap().to_string();
        assert_eq!(executor == "native", expect_native, "{query}: {}", document["stats"]);
        answered += document["rows"].as_array().unwrap().len();
        let (n, d) = (ask(&native, &query, OutputFormat::Arrow), ask(&duckdb, &query, OutputFormat::Arrow));
        assert_same(&batch(&n), &batch(&d), &query);
    }
    assert!(answered > 1_000, "the queries found rows: {answered}");

    // The one-series query reads a fraction of the file's pages: its
    // answer is the same as when every row is read.
    let one = json!({"time_range": {"start": T0, "end": T0 + DAY},
        "filters": {"column": "host", "op": "=", "value": "h03"},
        "downsample": {"interval": "1h", "aggregations": [{"fn": "avg", "column": "f"}, {"fn": "count", "column": "i"}]}});
    let document: Value = serde_json::from_slice(&ask(&native, &one, OutputFormat::Json)).unwrap();
    assert_eq!(document["stats"]["executor"], "native");
    let counted: i64 = document["rows"].as_array().unwrap().iter().map(|r| r["count_i"].as_i64().unwrap()).sum();
    let everything = json!({"time_range": {"start": T0, "end": T0 + DAY},
        "filters": {"or": [{"column": "host", "op": "=", "value": "h03"}]},
        "downsample": {"aggregations": [{"fn": "count", "column": "i"}]}});
    let document: Value = serde_json::from_slice(&ask(&duckdb, &everything, OutputFormat::Json)).unwrap();
    assert_eq!(document["rows"][0]["count_i"].as_i64().unwrap(), counted);
    assert!(counted > 500, "{counted}");
}

#[test]
fn a_native_query_past_its_deadline_is_stopped_and_the_server_answers_the_next() {
    // The executor waits a second before each file (a fail point): past
    // the 300 ms deadline before it reads anything.
    let failpoints = [("STRATA_FAILPOINTS", "query.native.before_file=delay")];
    let server = Server::start_with_env("native-timeout", "[query]\ntimeout_ms = 300\n", &failpoints);
    let text: String = (0..100).map(|i| format!("m,host=h{:02} f={i}.5 {}\n", i % 4, T0 + i * SECOND)).collect();
    assert_eq!(server.post("/api/v2/write?bucket=m", text).0, 204);
    server.flush();
    let query = json!({"time_range": {"start": T0, "end": T0 + DAY},
        "filters": {"column": "host", "op": "=", "value": "h01"},
        "downsample": {"interval": "1h", "aggregations": [{"fn": "avg", "column": "f"}]}});
    let started = std::time::Instant::now();
    let (status, error) = server.post("/v1/datasets/m/query", query.to_string());
    assert_eq!((status, error["error"]["code"].as_str()), (504, Some("query_timeout")), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "stopped at the next check");
    assert_eq!(server.get("/health").0, 200);
    let (status, answer) = server.post("/v1/sql", "SELECT count(*) AS n, sum(f) AS s FROM m WHERE host = 'h01'");
    assert_eq!(
        (status, answer["rows"][0]["n"].as_u64(), answer["rows"][0]["s"].as_f64()),
        (200, Some(25), Some(1237.5))
    );
}
