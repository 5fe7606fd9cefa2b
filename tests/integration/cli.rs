//! The command-line client against a real server: every command's output,
//! its errors and exit codes, tokens from the environment, and `strata
//! import` — formats, rejected rows by file and line, and an import killed
//! mid-way that resumes without a duplicate.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde_json::Value;

use crate::support::{Server, temp_dir};

/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600_000_000_000;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `strata ARGS` with `STRATA_URL` set to the server's URL.
fn strata(server: &Server, args: &[&str]) -> Run {
    strata_env(server, args, &[])
}

fn strata_env(server: &Server, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command.args(args).env("STRATA_URL", &server.url).env_remove("STRATA_TOKEN");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a command expected to succeed; returns its stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    let run = strata(server, args);
    assert_eq!(run.code, 0, "strata {args:?}\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
    run.stdout
}

fn count(server: &Server, dataset: &str) -> u64 {
    let (status, body) = server.post("/v1/sql", format!("SELECT count(*) AS n FROM \"{dataset}\""));
    assert_eq!(status, 200, "{body}");
    body["rows"][0]["n"].as_u64().unwrap()
}

fn retention_policy(max_age: &str) -> String {
    format!(
        "name = \"keep\"\nkind = \"retention\"\nplugin = \"builtin:retention-by-age\"\ndatasets = [\"events\"]\n\
         schedule = \"every 1h\"\n[config]\nmax_age = \"{max_age}\"\n"
    )
}

fn config() -> String {
    let cache = std::env::temp_dir().join("strata-test-policy-cache");
    format!("[ingest]\nflush_age_ms = 3600000\n[policies]\ncache_dir = {cache:?}\nreload_debounce_ms = 50\n")
}

fn write_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Rows of one table line, split on runs of spaces.
fn table_row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(first));
    line.unwrap_or_else(|| panic!("no row {first:?} in\n{text}")).split_whitespace().collect()
}

#[test]
fn listing_query_and_lifecycle_commands_print_the_servers_answers() {
    let server = Server::start_with_files(
        "cli-commands",
        &config(),
        &[],
        &[("policies/keep.toml", retention_policy("30d").as_bytes())],
    );
    let dir = temp_dir("cli-commands-files");
    // Two days, 24 rows each, hourly; v = hour.
    let mut lp = String::new();
    for (day, base) in [("2025-12-01", T0 - 31 * 86_400_000_000_000), ("2026-01-10", T0 + 9 * 86_400_000_000_000)] {
        for hour in 0..24i64 {
            lp.push_str(&format!("events,host=h{} v={hour} {}\n", hour % 2, base + hour * 3_600_000_000_000));
        }
        let _ = day;
    }
    let file = write_file(&dir, "events.lp", lp.as_bytes());
    let out =
        ok(&server, &["import", file.to_str().unwrap(), "--dataset", "events", "--state-dir", dir.to_str().unwrap()]);
    assert!(out.starts_with("imported 48 rows into events from 1 file(s)"), "{out}");
    server.flush();

    let out = ok(&server, &["datasets"]);
    assert_eq!(table_row(&out, "NAME"), ["NAME", "PERIOD", "PARTITIONS", "ROWS", "BUFFERED", "BYTES", "CREATED"]);
    assert_eq!(table_row(&out, "events")[1..5], ["day", "2", "48", "0"]);
    let json: Value = serde_json::from_str(&ok(&server, &["datasets", "--format", "json"])).unwrap();
    assert_eq!(json["datasets"][0]["rows"], 48);

    let out = ok(&server, &["partitions", "events"]);
    assert_eq!(table_row(&out, "events/2025-12-01")[2..5], ["hot", "false", "24"]);
    assert_eq!(table_row(&out, "events/2026-01-10")[4], "24");
    assert_eq!(ok(&server, &["partitions", "events", "--limit", "1"]).lines().count(), 2, "heading and one row");
    assert_eq!(ok(&server, &["partitions", "events", "--tier", "cold"]).lines().count(), 1, "heading only");

    let out = ok(&server, &["explain", "events", "2025-12-01"]);
    assert!(out.contains("id: events/2025-12-01\n") && out.contains("tier: hot\n"), "{out}");

    // Structured query: two buckets of a day, grouped by host.
    let query = ["query", "events", "--from", "2026-01-10T00:00:00Z", "--to", "2026-01-11T00:00:00Z"];
    let args = [&query[..], &["--every", "12h", "--agg", "count:v", "--agg", "max:v", "--group-by", "host"]].concat();
    let out = ok(&server, &args);
    assert_eq!(table_row(&out, "2026-01-10T12:00:00Z")[1..], ["h0", "6", "22.0"], "{out}");
    assert!(out.ends_with("(4 rows)\n"), "{out}");
    let csv = ok(&server, &[&args[..], &["--format", "csv"]].concat());
    assert_eq!(csv.lines().next(), Some("time,host,count_v,max_v"));
    assert_eq!(csv.lines().count(), 5);
    let ndjson = ok(&server, &[&args[..], &["--format", "ndjson"]].concat());
    assert_eq!(ndjson.lines().filter(|l| serde_json::from_str::<Value>(l).is_ok()).count(), 4);
    let raw = ok(&server, &[&query[..], &["--columns", "v", "--limit", "3", "--order", "desc"]].concat());
    assert!(raw.contains("23.0") && raw.ends_with("(3 rows)\n"), "{raw}");

    let out = ok(&server, &["sql", "SELECT host, sum(v) AS total FROM events GROUP BY host ORDER BY host"]);
    assert_eq!(table_row(&out, "h1"), ["h1", "288.0"], "{out}");
    let json: Value =
        serde_json::from_str(&ok(&server, &["sql", "SELECT count(*) AS n FROM events", "--format", "json"])).unwrap();
    assert_eq!(json["rows"][0]["n"], 48);
    let arrow = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["sql", "SELECT v FROM events", "--format", "arrow", "--url", &server.url])
        .output()
        .unwrap();
    let batches: Vec<RecordBatch> =
        arrow::ipc::reader::StreamReader::try_new(&arrow.stdout[..], None).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 48);

    let out = ok(&server, &["health"]);
    assert!(out.starts_with("status  healthy\n"), "{out}");

    policy_commands(&server);
}

/// `strata policy …`, `strata runs` and `strata audit` on the `keep` policy.
fn policy_commands(server: &Server) {
    let out = ok(server, &["policy", "list"]);
    assert_eq!(table_row(&out, "keep")[1..4], ["retention", "active", "1"], "{out}");
    let out = ok(server, &["policy", "show", "keep"]);
    assert!(out.contains("max_age: 30d") && out.contains("name: keep"), "{out}");

    let simulate = ["policy", "simulate", "keep", "--dataset", "events", "--now", "2026-01-15T00:00:00Z"];
    let out = ok(server, &simulate);
    assert_eq!(table_row(&out, "events/2025-12-01")[1..3], ["hot", "delete"], "{out}");
    assert_eq!(table_row(&out, "events/2026-01-10")[1..3], ["hot", "keep"], "{out}");
    assert!(out.contains("delete: 1 partition(s), 24 row(s)"), "{out}");

    let out = ok(server, &["policy", "run", "keep", "--dataset", "events", "--dry", "--now", "2026-01-15T00:00:00Z"]);
    assert!(out.contains("policy: keep"), "{out}");
    let out = ok(server, &["runs"]);
    let run = table_row(&out, "1");
    assert_eq!(run[1..3], ["keep", "events"], "{out}");
    let out = ok(server, &["runs", "1", "--format", "json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["policy"], "keep");

    std::fs::write(server.root().join("policies/keep.toml"), retention_policy("60d")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get("/v1/policies/keep").1["active_seq"] != 2 {
        assert!(Instant::now() < deadline, "version 2 never became active");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ok(server, &["policy", "versions", "keep"]);
    assert_eq!(table_row(&out, "2")[1], "active", "{out}");
    assert_eq!(table_row(&out, "1")[1], "superseded", "{out}");
    let out = ok(server, &["policy", "rollback", "keep"]);
    assert_eq!(out, "keep: rolled back from version 2 to version 1\n");
    assert_eq!(server.get("/v1/policies/keep").1["config"]["max_age"], "30d");
    let out = ok(server, &["policy", "reload", "--format", "json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["unchanged"][0], "keep");

    let out = ok(server, &["audit", "--format", "json"]);
    let events: Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = events["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    let table = ok(server, &["audit"]);
    assert_eq!(table.lines().count(), kinds.len() + 1, "{table}");
}

#[test]
fn errors_print_the_code_and_message_on_one_line_with_documented_exit_codes() {
    let server = Server::start("cli-errors", "");
    let run = strata_env(&server, &["partitions", "nope"], &[("RUST_BACKTRACE", "1")]);
    assert_eq!((run.code, run.stderr.as_str()), (1, "error: not_found: no dataset nope\n"));
    let run = strata_env(&server, &["sql", "SELEC 1"], &[("RUST_BACKTRACE", "full")]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.starts_with("error: invalid_query: ") && run.stderr.lines().count() == 1, "{}", run.stderr);
    let run = strata(&server, &["datasets", "--url", "http://127.0.0.1:1"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.starts_with("error: connection: 127.0.0.1:1: "), "{}", run.stderr);
    let run = strata(&server, &["query", "cpu", "--from", "2026-01-01T00:00:00Z"]);
    assert_eq!(run.code, 2, "a missing --to is a usage error: {}", run.stderr);
    let run = strata(&server, &["query", "cpu", "--from", "0", "--to", "1", "--agg", "avg"]);
    assert_eq!((run.code, run.stderr.as_str()), (2, "error: usage: --agg \"avg\" must be FN:COLUMN, e.g. avg:usage\n"));
}

#[test]
fn a_token_from_the_environment_authenticates() {
    let mut server = Server::prepare("cli-token", "");
    let token = crate::auth::create_offline(&server.data_dir, "ops", &["admin"]);
    server.start_again();
    let run = strata(&server, &["datasets"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.starts_with("error: unauthorized: "), "{}", run.stderr);
    let run = strata_env(&server, &["datasets"], &[("STRATA_TOKEN", &token)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().next().unwrap().split_whitespace().next(), Some("NAME"));
}

#[test]
fn bad_rows_are_reported_by_file_and_line_and_the_rest_is_imported() {
    let server = Server::start("cli-import-formats", "");
    let dir = temp_dir("cli-import-formats-files");
    let state = dir.join("state");
    let state = state.to_str().unwrap();
    let lp = write_file(&dir, "m.lp", format!("# header\nm v=1 {T0}\nm v=oops {T0}\n\nm v=2 {}\n", T0 + 1).as_bytes());
    let csv = write_file(
        &dir,
        "m.csv",
        b"time,host,v\n2026-01-01T00:00:00Z,a,1.5\n2026-01-01T00:00:01Z,\"b\nc\",2\n2026-01-01T00:00:02Z,d,text\n",
    );
    let ndjson = write_file(
        &dir,
        "m.ndjson",
        b"{\"time\":\"2026-01-01T00:00:00Z\",\"v\":1}\n{\"time\":\"never\",\"v\":2}\n{\"time\":\"2026-01-01T00:00:05Z\",\"v\":3}\n",
    );
    let run = strata(&server, &["import", lp.to_str().unwrap(), "--dataset", "lp", "--state-dir", state]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{}:3: ", lp.display())), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("imported 2 rows into lp") && run.stdout.contains("; 1 rejected;"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.ends_with("error: rows_rejected: 1 row(s) were not imported (listed above)\n"),
        "{}",
        run.stderr
    );
    assert_eq!(count(&server, "lp"), 2);

    let run = strata(&server, &["import", csv.to_str().unwrap(), "--dataset", "csv", "--state-dir", state]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("{}:5: schema_conflict: ", csv.display())),
        "the row after a quoted newline: {}",
        run.stderr
    );
    assert_eq!(count(&server, "csv"), 2);
    let (_, body) = server.post("/v1/sql", "SELECT host FROM csv ORDER BY time");
    assert_eq!(body["rows"][1]["host"], "b\nc");

    let run = strata(&server, &["import", ndjson.to_str().unwrap(), "--dataset", "nd", "--state-dir", state]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{}:2: invalid_timestamp: ", ndjson.display())), "{}", run.stderr);
    assert_eq!(count(&server, "nd"), 2);

    let parquet = dir.join("m.parquet");
    write_parquet(&parquet, 1_000);
    let run = strata(
        &server,
        &["import", parquet.to_str().unwrap(), "--dataset", "pq", "--batch-rows", "300", "--state-dir", state],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&server, "pq"), 1_000);
    let (_, body) = server.post("/v1/sql", "SELECT min(time) AS first, sum(v) AS total FROM pq");
    assert_eq!(body["rows"][0]["first"], "2026-01-01T00:00:00Z");
    assert_eq!(body["rows"][0]["total"].as_f64(), Some((0..1_000).map(f64::from).sum::<f64>()));
}

fn write_parquet(path: &Path, rows: i32) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("time", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("host", DataType::Utf8, false),
        Field::new("v", DataType::Float64, false),
    ]));
    let times: Vec<i64> = (0..rows).map(|i| T0 / 1_000_000 + i64::from(i) * 1_000).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(TimestampMillisecondArray::from(times).with_timezone("UTC")),
            Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("h{}", i % 3)))),
            Arc::new(Float64Array::from_iter_values((0..rows).map(f64::from))),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// The import state file's acknowledged batches, once it exists.
fn acked_batches(state_dir: &Path) -> Option<(u64, bool)> {
    let entry =
        std::fs::read_dir(state_dir).ok()?.flatten().find(|e| e.path().extension().is_some_and(|x| x == "json"))?;
    let state: Value = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
    Some((state["next_batch"].as_u64()?, state["complete"].as_bool()?))
}

#[test]
fn an_import_killed_mid_way_resumes_without_duplicates() {
    let server = Server::start("cli-import-resume", "");
    let dir = temp_dir("cli-import-resume-files");
    let state_dir = dir.join("state");
    let rows = 30_000i64;
    let lp: String = (0..rows).map(|i| format!("m,host=h{} v={i}i {}\n", i % 7, T0 + i * 1_000_000_000)).collect();
    let file = write_file(&dir, "big.lp", lp.as_bytes());
    let args = ["import", file.to_str().unwrap(), "--dataset", "m", "--batch-rows", "20", "--connections", "1"];
    let state_arg = ["--state-dir", state_dir.to_str().unwrap()];
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .args(state_arg)
        .env("STRATA_URL", &server.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_batches(&state_dir).is_none_or(|(batches, _)| batches < 5) {
        assert!(Instant::now() < deadline, "no batch was acknowledged");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (acked, complete) = acked_batches(&state_dir).unwrap();
    assert!(!complete, "the import finished before it was killed");
    let written = count(&server, "m");
    assert!(written >= acked * 20 && written < rows as u64, "{written} rows after {acked} acknowledged batches");

    let run = strata(&server, &[&args[..], &state_arg, &["--resume"]].concat());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("resuming after line "), "{}", run.stderr);
    assert_eq!(count(&server, "m"), rows as u64, "every row exactly once");
    let (_, body) = server.post("/v1/sql", "SELECT sum(v) AS total, count(DISTINCT time) AS times FROM m");
    assert_eq!(body["rows"][0]["total"].as_i64(), Some(rows * (rows - 1) / 2));
    assert_eq!(body["rows"][0]["times"].as_i64(), Some(rows));

    // Run again from the start: every batch is one the server already has.
    let run = strata(&server, &[&args[..], &state_arg].concat());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&format!("; 0 rejected; {} batch(es) already imported", rows / 20)), "{}", run.stdout);
    assert_eq!(count(&server, "m"), rows as u64);
}
