//! `POST /v1/sql` runs exactly one read-only query: hostile SQL is refused
//! with a stable code, writes nothing anywhere under the data directory,
//! changes no stored byte, and the data still answers the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Server, files_under};

const T0: i64 = 1_767_225_600_000_000_000;

/// No flush by age and no compaction: nothing but the test changes files.
const CONFIG: &str = "[ingest]\nflush_age_ms = 3600000\n[lifecycle.compaction]\nenabled = false\n";

/// Every file under `dir` with its size and modification time. SQLite's
/// shared-memory index (`-shm`) is rewritten by every catalog read, so only
/// its presence counts.
fn listing(dir: &Path) -> BTreeMap<PathBuf, Option<(u64, SystemTime)>> {
    files_under(dir)
        .into_iter()
        .map(|path| {
            let metadata = std::fs::metadata(&path).unwrap();
            let shm = path.to_string_lossy().ends_with("-shm");
            let stamp = (!shm).then(|| (metadata.len(), metadata.modified().unwrap()));
            (path, stamp)
        })
        .collect()
}

/// The sha256 of every stored Parquet file of `datasets`, by path.
fn parquet_digests(server: &Server, datasets: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for dataset in datasets {
        let (status, manifest) = server.get(&format!("/v1/datasets/{dataset}/partitions"));
        assert_eq!(status, 200, "{manifest}");
        for partition in manifest["partitions"].as_array().unwrap() {
            for file in partition["files"].as_array().unwrap() {
                let path = file["path"].as_str().unwrap().to_string();
                let digest = Sha256::digest(std::fs::read(&path).unwrap());
                out.insert(path, digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
            }
        }
    }
    assert!(!out.is_empty());
    out
}

fn first_file(server: &Server, dataset: &str) -> String {
    let (_, manifest) = server.get(&format!("/v1/datasets/{dataset}/partitions"));
    manifest["partitions"][0]["files"][0]["path"].as_str().unwrap().to_string()
}

fn rows(server: &Server, sql: &str) -> Value {
    let (status, response) = server.post("/v1/sql", sql.to_string());
    assert_eq!(status, 200, "{sql}: {response}");
    response["rows"].clone()
}

/// Two datasets, flushed, plus buffered rows of the first.
fn loaded_server(name: &str, config: &str) -> Server {
    let server = Server::start(name, config);
    let orders: String = (0..50).map(|i| format!("o,customer=c{} amount={i}i {}\n", i % 5, T0 + i)).collect();
    assert_eq!(server.post("/api/v2/write?bucket=orders", orders).0, 204);
    let customers: String = (0..5).map(|i| format!("c,name=c{i} tier={i}i {}\n", T0 + i)).collect();
    assert_eq!(server.post("/api/v2/write?bucket=customers", customers).0, 204);
    server.flush();
    assert_eq!(server.post("/api/v2/write?bucket=orders", format!("o,customer=c0 amount=100i {}\n", T0 + 100)).0, 204);
    server
}

/// The answers the hostile SQL must leave unchanged.
fn answers(server: &Server) -> Vec<Value> {
    [
        "SELECT count(*) AS n, sum(amount) AS total FROM orders",
        "SELECT name, tier FROM customers ORDER BY name",
        "SELECT customer, count(*) AS n FROM orders GROUP BY customer ORDER BY customer",
        // Both datasets' files in one database, kept for the next query
        // over the same files: a query over orders alone must not get it.
        "SELECT o.customer, c.tier, count(*) AS n FROM orders o JOIN customers c ON o.customer = c.name \
         GROUP BY ALL ORDER BY ALL",
    ]
    .iter()
    .map(|sql| rows(server, sql))
    .collect()
}

#[test]
fn hostile_sql_is_refused_and_writes_nothing() {
    let server = loaded_server("hostile-sql", CONFIG);
    let data_dir = server.data_dir.display().to_string();
    let file = first_file(&server, "orders");
    let other = first_file(&server, "customers");
    let catalog = format!("{data_dir}/catalog.sqlite");
    // Without the temporary file DuckDB would write first, then rename.
    let copy = format!("COPY (SELECT 42 AS x) TO '{file}' (FORMAT parquet, USE_TMP_FILE false)");
    // A first query opens the SQL databases' spill directory.
    let before_answers = answers(&server);
    let before_files = listing(&server.data_dir);
    let before_digests = parquet_digests(&server, &["orders", "customers"]);

    let hostile: Vec<String> = vec![
        // More than one statement: every one but the last used to run,
        // and naming the dataset granted its files to the database.
        format!("SELECT count(*) FROM orders) AS q; {copy}; SELECT * FROM (SELECT 1"),
        format!("SELECT count(*) FROM orders) AS _q; {copy}; SELECT * FROM (SELECT 1"),
        format!("SELECT count(*) FROM orders; {copy}"),
        format!("{copy}; SELECT count(*) FROM orders"),
        "SELECT 1; CREATE TABLE t AS SELECT 1".into(),
        "CREATE TABLE t AS SELECT 1; SELECT * FROM t".into(),
        "SELECT 1; SELECT 2".into(),
        format!("SELECT 1) AS q; COPY (SELECT 1) TO '{data_dir}/query-tmp/x.csv'; SELECT * FROM (SELECT 1"),
        format!("SELECT 1) AS q; CREATE TABLE t AS SELECT 1; SELECT * FROM (SELECT 1"),
        // One statement that is not a query.
        copy.clone(),
        format!("COPY (SELECT 1) TO '{data_dir}/query-tmp/sql/x.csv'"),
        format!("COPY orders TO '{data_dir}/escape.csv'"),
        format!("ATTACH '{data_dir}/x.duckdb' AS x"),
        "ATTACH ':memory:' AS m".into(),
        format!("EXPORT DATABASE '{data_dir}/query-tmp/export'"),
        "INSTALL httpfs".into(),
        "LOAD parquet".into(),
        "SET threads = 1".into(),
        "SET enable_external_access = true".into(),
        "RESET lock_configuration".into(),
        "PRAGMA database_list".into(),
        "PRAGMA enable_profiling".into(),
        "CALL pragma_version()".into(),
        "CHECKPOINT".into(),
        "FORCE CHECKPOINT".into(),
        "CREATE TABLE t AS SELECT 1".into(),
        "CREATE VIEW v AS SELECT 1".into(),
        "DROP VIEW orders".into(),
        "INSERT INTO orders SELECT * FROM orders".into(),
        "DELETE FROM orders".into(),
        "DESCRIBE SELECT 1; SELECT 1".into(),
        "EXPLAIN ANALYZE SELECT 1".into(),
        // Comments and quotes that hide a `;` from a naive splitter, or show one.
        format!("SELECT 1 -- ;\n; {copy}"),
        format!("SELECT 1 /* ; */; {copy}"),
        format!("SELECT 1 /* /* nested */ ; */; {copy}"),
        format!("SELECT ';'; {copy}"),
        format!("SELECT \"a;b\" FROM (SELECT 1 AS \"a;b\"); {copy}"),
        format!("SELECT `a;b` FROM (SELECT 1 AS `a;b`); {copy}"),
        format!("SELECT $$;$$; {copy}"),
        format!("SELECT $tag$ ; $tag$; {copy}"),
        format!("SELECT E'\\';'; {copy}"),
        format!("SELECT '\\'; {copy} --'"),
        format!("SELECT 1\u{a0}; {copy}"),
        format!("SELECT 1;\u{3000}{copy}"),
        format!("SELECT 1;\u{feff}{copy}"),
        format!("SELECT 1\u{2028}; {copy}"),
        "SELECT 1) AS q UNION ALL (SELECT * FROM read_csv('/etc/passwd')".into(),
        "SELECT 1\n) AS _q, (SELECT 2".into(),
        // Files, settings and the environment.
        "SELECT * FROM read_text('/etc/passwd')".into(),
        "SELECT * FROM read_blob('/etc/passwd')".into(),
        "SELECT * FROM read_csv('/etc/passwd')".into(),
        "SELECT * FROM '/etc/passwd'".into(),
        format!("SELECT * FROM read_csv('{catalog}')"),
        format!("SELECT * FROM read_text('{catalog}')"),
        format!("SELECT * FROM read_blob('{file}')"),
        "SELECT * FROM glob('/*')".into(),
        format!("SELECT * FROM glob('{data_dir}/*')"),
        format!("SELECT * FROM read_parquet('{other}')"),
        format!("SELECT count(*) FROM orders UNION ALL SELECT count(*) FROM read_parquet('{other}')"),
        format!("SELECT * FROM '{other}'"),
        format!("SELECT * FROM read_text('{data_dir}/query-tmp/sql/*')"),
        format!("SELECT * FROM read_csv('{data_dir}/query-tmp/sql/*')"),
        "SELECT current_setting('temp_directory')".into(),
        "SELECT \"current_setting\"('temp_directory')".into(),
        "SELECT system.main.current_setting /* hidden */ ('temp_directory')".into(),
        "SELECT * FROM duckdb_settings()".into(),
        "SELECT * FROM pg_settings".into(),
        "SELECT * FROM duckdb_temporary_files()".into(),
        "SELECT * FROM duckdb_extensions()".into(),
        "SELECT * FROM duckdb_secrets()".into(),
        "SELECT getenv('HOME')".into(),
        "SELECT * FROM which_secret('s3://x', 's3')".into(),
        "SELECT * FROM pragma_database_size()".into(),
        format!("SELECT * FROM query('{}')", copy.replace('\'', "''")),
        "SELECT * FROM query('SELECT * FROM duckdb_settings()')".into(),
        "SELECT * FROM enable_logging()".into(),
    ];
    let codes = ["query_refused", "invalid_query", "bad_request"];
    let mut accepted = Vec::new();
    for sql in &hostile {
        let (status, error) = server.post("/v1/sql", sql.clone());
        let code = error["error"]["code"].as_str().unwrap_or_default();
        if !((400..500).contains(&status) && codes.contains(&code)) {
            accepted.push(format!("{sql}: {status} {error}"));
        }
    }
    // What was written is the worst outcome; it is checked first.
    assert_eq!(parquet_digests(&server, &["orders", "customers"]), before_digests, "stored files changed");
    assert_eq!(listing(&server.data_dir), before_files, "nothing under the data directory changed");
    assert_eq!(answers(&server), before_answers);
    assert!(accepted.is_empty(), "answered instead of refused:\n{}", accepted.join("\n"));
    // Text that closes the wrapper's parenthesis does not parse on its own;
    // more statements, or one that is not a query, are refused as such.
    let expected = [
        (&hostile[0], 400, "invalid_query"),
        (&hostile[2], 403, "query_refused"),
        (&hostile[3], 403, "query_refused"),
        (&hostile[6], 403, "query_refused"),
        (&copy, 403, "query_refused"),
        (&hostile[hostile.len() - 1], 403, "query_refused"),
    ];
    for (sql, status, code) in expected {
        let (actual, error) = server.post("/v1/sql", sql.clone());
        assert_eq!((actual, error["error"]["code"].as_str().unwrap_or_default()), (status, code), "{sql}: {error}");
    }
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn legitimate_queries_still_run() {
    let server = loaded_server("hostile-sql-legit", CONFIG);
    let n = json!([{"n": 51}]);
    for sql in [
        "SELECT count(*) AS n FROM orders",
        "SELECT count(*) AS n FROM orders;",
        "SELECT count(*) AS n FROM orders ; ; -- done\n",
        "  select COUNT(*) as n from ORDERS  ",
        "SELECT count(*) AS n FROM \"orders\"",
        "/* leading; comment */ SELECT count(*) AS n FROM orders -- trailing; comment",
        "WITH o AS (SELECT * FROM orders) SELECT count(*) AS n FROM o",
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 3) SELECT count(*) + 48 AS n FROM r, (SELECT 1)",
        "FROM orders SELECT count(*) AS n",
        "SELECT count(*) AS n FROM orders WHERE customer <> 'x;y' AND customer <> $$;$$ AND customer <> E'\\';'",
        "SELECT n FROM (SELECT count(*) AS n, 'orders; customers' AS s FROM orders)",
    ] {
        assert_eq!(rows(&server, sql), n, "{sql}");
    }
    let joined = rows(
        &server,
        "SELECT c.tier, count(*) AS n FROM orders o JOIN customers c ON o.customer = c.name \
         GROUP BY c.tier ORDER BY c.tier",
    );
    assert_eq!(
        joined,
        json!([{"tier": 0, "n": 11}, {"tier": 1, "n": 10}, {"tier": 2, "n": 10}, {"tier": 3, "n": 10}, {"tier": 4, "n": 10}])
    );
    assert_eq!(rows(&server, "VALUES (1, ';')"), json!([{"col0": 1, "col1": ";"}]));
    assert_eq!(rows(&server, "SELECT 'orders' AS s"), json!([{"s": "orders"}]));
}

#[test]
fn a_query_that_grows_the_process_past_its_memory_is_stopped() {
    // 64 MiB for DuckDB's pool; the untracked growth allowed on top is 256 MiB.
    let server = loaded_server("hostile-sql-memory", &format!("{CONFIG}[query]\nmemory_bytes_max = 67108864\n"));
    // A constant string is built while the query is planned, outside
    // DuckDB's memory limit (500 MB, held twice), and nothing can interrupt
    // it; the query is refused all the same.
    let (status, error) = server.post("/v1/sql", "SELECT length(repeat('ab', 250000000)) AS n");
    assert_eq!((status, error["error"]["code"].as_str()), (507, Some("query_too_large")), "{error}");
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(rows(&server, "SELECT count(*) AS n FROM orders"), json!([{"n": 51}]));
}

#[test]
fn sql_spills_to_a_private_capped_directory() {
    // A sort of ~150 MB in 64 MiB of memory only finishes by spilling.
    let sort = "SELECT count(*) AS n, max(i) AS top FROM \
                (SELECT i, md5(i::VARCHAR) AS h FROM range(1500000) t(i) ORDER BY h) LIMIT 1";
    let small = format!("{CONFIG}[query]\nmemory_bytes_max = 67108864\n");
    let server = Server::start("hostile-sql-spill", &small);
    assert_eq!(rows(&server, sort), json!([{"n": 1500000, "top": 1499999}]));
    let spill_dir = server.data_dir.join("query-tmp/sql");
    assert!(spill_dir.is_dir());
    // The spilled blocks are freed with the query: what may stay is the
    // empty marker of a database kept for the next query.
    let spilled = || -> Vec<(std::path::PathBuf, u64)> {
        files_under(&spill_dir)
            .into_iter()
            .map(|f| (f.clone(), std::fs::metadata(&f).map_or(0, |m| m.len())))
            .filter(|(f, bytes)| *bytes > 0 || !f.to_string_lossy().ends_with("_owner"))
            .collect()
    };
    let removed = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        spilled().is_empty()
    });
    assert!(removed, "spill files are removed after the answer: {:?}", spilled());

    let capped = format!("{small}spill_bytes_max = 1048576\n");
    let server = Server::start("hostile-sql-spill-cap", &capped);
    let (status, error) = server.post("/v1/sql", sort.to_string());
    assert_eq!((status, error["error"]["code"].as_str()), (507, Some("query_too_large")), "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("query.spill_bytes_max"), "{error}");
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn spill_files_of_an_earlier_process_are_removed_at_start() {
    let mut server = Server::start("hostile-sql-wipe", CONFIG);
    let stale = server.data_dir.join("query-tmp/sql/duckdb_temp_storage_stale.tmp");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"left by a crash").unwrap();
    server.restart();
    assert!(!stale.exists());
}

#[test]
fn sql_naming_a_dataset_the_caller_may_not_read_is_forbidden() {
    use strata::query::output::OutputFormat;
    use strata::query::{DatasetFilter, QueryEngine};

    let mut server = loaded_server("hostile-sql-scope", CONFIG);
    let data_dir = server.data_dir.clone();
    server.terminate();
    let (config, runtime, store) = crate::support::open_store(&data_dir);
    let engine = Arc::new(QueryEngine::new(config.query.clone(), store.targets().clone(), &data_dir.join("query-tmp")));
    let no_orders: DatasetFilter = Arc::new(|name: &str| name != "orders");
    let run = |sql: &str| runtime.block_on(engine.sql(&store, sql, OutputFormat::Json, no_orders.clone()));

    for sql in ["SELECT count(*) FROM orders", "SELECT count(*) FROM \"ORDERS\"", "FROM customers, orders"] {
        let error = run(sql).unwrap_err();
        assert_eq!(error.code.as_str(), "forbidden", "{sql}");
        assert_eq!(error.message, "reading dataset orders needs scope read:orders");
        assert_eq!(error.body()["error"]["scope"], "read:orders", "{}", error.body());
    }
    // A string or a comment naming it is not a reference; no view exists.
    assert!(run("SELECT count(*) AS n, 'orders' AS s FROM customers -- orders").is_ok());
    let error = run("SELECT * FROM query_table('orders')").unwrap_err();
    assert_eq!(error.code.as_str(), "query_refused");
    let everything: DatasetFilter = Arc::new(|_: &str| true);
    assert!(
        runtime.block_on(engine.sql(&store, "SELECT count(*) FROM orders", OutputFormat::Json, everything)).is_ok()
    );
}

/// POSTs `body` to `path` with `accept`; the status, content type and body
/// (an `Err` when the body did not arrive whole).
fn fetch(server: &Server, path: &str, accept: &str, body: &str) -> (u16, String, Result<Vec<u8>, String>) {
    let mut response = crate::support::client()
        .post(format!("{}{path}", server.url))
        .header("Accept", accept)
        .body(body.to_string())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut bytes = Vec::new();
    let read = std::io::Read::read_to_end(&mut response, &mut bytes).map(|_| bytes).map_err(|e| e.to_string());
    (status, content_type, read)
}

#[test]
fn a_query_failing_mid_answer_never_ends_cleanly() {
    let server = Server::start("sql-mid-answer", &format!("{CONFIG}[query]\ntimeout_ms = 1500\n"));
    // Rows stream out until the timeout stops the query.
    let endless = "SELECT i FROM range(10000000000) t(i)";
    for format in ["csv", "ndjson", "arrow"] {
        let (status, _, body) = fetch(&server, &format!("/v1/sql?format={format}"), "*/*", endless);
        assert_eq!(status, 200, "{format}: the answer had started");
        let error = body.map(|b| b.len()).expect_err(&format!("{format}: a truncated answer must not end cleanly"));
        assert!(!error.is_empty());
    }
    // JSON says so in the document, which stays well-formed.
    let (status, _, body) = fetch(&server, "/v1/sql?format=json", "*/*", endless);
    assert_eq!(status, 200);
    let document: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(document["error"]["code"], "query_timeout", "{}", document["error"]);
    assert!(!document["rows"].as_array().unwrap().is_empty());
    // The server still answers.
    assert_eq!(rows(&server, "SELECT 1 AS x"), json!([{"x": 1}]));
}

#[test]
fn results_of_any_type_are_written_or_refused_with_400() {
    let server = Server::start("sql-result-types", CONFIG);
    let text = |format: &str, sql: &str| {
        let (status, _, body) = fetch(&server, &format!("/v1/sql?format={format}"), "*/*", sql);
        (status, String::from_utf8(body.unwrap()).unwrap())
    };
    assert_eq!(
        text("csv", "SELECT [1,2] AS l, {'a': 'x'} AS s"),
        (200, "l,s\n\"[1,2]\",\"{\"\"a\"\":\"\"x\"\"}\"\n".into())
    );
    assert_eq!(
        text("csv", "SELECT '-infinity'::DATE AS d, DATE '2020-01-02' AS e, '24:00:00'::TIME AS t"),
        (200, "d,e,t\n-infinity,2020-01-02,24:00:00\n".into())
    );
    let (status, body) = text("ndjson", "SELECT 'infinity'::DATE AS d, TIME '01:02:03.5' AS t");
    assert_eq!((status, body.as_str()), (200, "{\"d\":\"infinity\",\"t\":\"01:02:03.5\"}\n"));
    for format in ["json", "ndjson", "csv"] {
        for (sql, column) in [
            ("SELECT union_value(k := 1) AS u", "u"),
            ("SELECT map {1: 2} AS m", "m"),
            ("SELECT * FROM test_all_types()", ""),
            ("SELECT 'infinity'::TIMESTAMP AS ts", "ts"),
        ] {
            let (status, body) = text(format, sql);
            if format == "csv" && column == "m" {
                // A map with integer keys has no JSON text either.
                assert_eq!(status, 400, "{body}");
                continue;
            }
            assert_eq!(status, 400, "{format} {sql}: {body}");
            let error: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["error"]["code"], "invalid_query", "{error}");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.contains(&format!("column \"{column}")), "{message}");
        }
    }
    // Arrow holds every type DuckDB exports, times in their own unit.
    let (status, _, body) = fetch(&server, "/v1/sql?format=arrow", "*/*", "SELECT * FROM test_all_types()");
    assert_eq!(status, 200);
    let batches: Vec<_> =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.unwrap()), None).unwrap().collect();
    assert_eq!(batches.iter().map(|b| b.as_ref().unwrap().num_rows()).sum::<usize>(), 3);
}

#[test]
fn accept_with_quality_zero_is_not_chosen() {
    let server = Server::start("sql-accept-q0", CONFIG);
    let (status, content_type, body) = fetch(&server, "/v1/sql", "text/csv;q=0", "SELECT 1 AS x");
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(serde_json::from_slice::<Value>(&body.unwrap()).unwrap()["rows"], json!([{"x": 1}]));
    let (_, content_type, _) = fetch(&server, "/v1/sql", "text/csv;q=0.1, application/x-ndjson;q=0.5", "SELECT 1");
    assert_eq!(content_type, "application/x-ndjson");
}

#[test]
fn a_missing_committed_file_is_a_storage_error_naming_its_partition() {
    let server = loaded_server("sql-missing-file", CONFIG);
    let file = first_file(&server, "customers");
    std::fs::rename(&file, format!("{file}.moved")).unwrap();
    for (path, body) in [
        ("/v1/sql", "SELECT count(*) FROM customers".to_string()),
        ("/v1/datasets/customers/query", json!({"time_range": {"start": 0, "end": i64::MAX}}).to_string()),
    ] {
        let (status, response) = server.post(path, body);
        assert_eq!(status, 500, "{response}");
        assert_eq!(response["error"]["code"], "internal");
        let message = response["error"]["message"].as_str().unwrap();
        assert!(message.contains("partition customers/") && message.contains("missing"), "{message}");
        assert!(!message.contains("read_parquet") && !message.contains("CREATE"), "{message}");
    }
    std::fs::rename(format!("{file}.moved"), &file).unwrap();
    assert_eq!(rows(&server, "SELECT count(*) AS n FROM customers"), json!([{"n": 5}]));
}
