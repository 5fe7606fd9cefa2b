//! Policies as an operator sees them: TOML files, hot reload, rollback,
//! simulation, and hostile components that must never hurt the server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, client};

const FIXTURE: &str = include_str!("../fixtures/retention.wat");

/// Compiled components are cached by sha256; sharing the cache between the
/// tests' servers saves a Cranelift compile per built-in per test.
fn config() -> String {
    let cache = std::env::temp_dir().join("strata-test-policy-cache");
    format!("[ingest]\nflush_age_ms = 3600000\n[policies]\ncache_dir = {:?}\nreload_debounce_ms = 50\n", cache)
}

pub(crate) fn retention_fixture(behaviour: &str) -> Vec<u8> {
    wat::parse_str(FIXTURE.replace(";;BEHAVIOUR", behaviour)).unwrap()
}

fn fixture_importing(imports: &str) -> Vec<u8> {
    wat::parse_str(FIXTURE.replace(";;IMPORTS", imports)).unwrap()
}

/// The built-in `retention-by-age` with a custom section carrying `nonce`:
/// the same behaviour under a different sha256, like a rebuilt plugin.
fn good_component(nonce: u32) -> Vec<u8> {
    padded_component(nonce, 0)
}

/// `good_component` with `padding` more bytes in its custom section: as
/// large as wanted, and compiled rather than found in the cache.
pub(crate) fn padded_component(nonce: u32, padding: usize) -> Vec<u8> {
    let mut bytes = strata::policy::builtins::component("retention-by-age").unwrap().to_vec();
    let name = b"strata-test-nonce";
    let mut content = leb128(name.len());
    content.extend_from_slice(name);
    content.extend_from_slice(&nonce.to_le_bytes());
    content.resize(content.len() + padding, 0);
    bytes.push(0);
    bytes.extend(leb128(content.len()));
    bytes.extend(content);
    bytes
}

fn leb128(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn sha256(bytes: &[u8]) -> String {
    strata::digest::sha256_hex(bytes)
}

fn retention_policy(name: &str, plugin: &str, max_age: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nkind = \"retention\"\nplugin = \"{plugin}\"\ndatasets = [\"events\", \"logs-*\"]\nschedule = \"every 1h\"\n{extra}\n[config]\nmax_age = \"{max_age}\"\n"
    )
}

/// Writes a file into the server's policy directory.
fn write(server: &Server, file: &str, contents: impl AsRef<[u8]>) {
    let path = server.root().join("policies").join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn wait_until(server: &Server, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn policy(server: &Server, name: &str) -> Value {
    let (status, body) = server.get(&format!("/v1/policies/{name}"));
    assert_eq!(status, 200, "{body}");
    body
}

/// Writes one record per day into `events` and flushes, so that each day is
/// a partition with bytes.
fn ingest_days(server: &Server, dataset: &str, days: &[&str]) {
    let records: Vec<Value> = days.iter().map(|day| json!({ "time": format!("{day}T12:00:00Z"), "v": 1.0 })).collect();
    let (status, body) = server.post(&format!("/v1/datasets/{dataset}/records"), Value::Array(records).to_string());
    assert_eq!(status, 200, "{body}");
    server.flush();
}

fn simulate(server: &Server, policy: &str, body: Value) -> (u16, Value) {
    server.post(&format!("/v1/policies/{policy}/simulate"), body.to_string())
}

fn simulate_candidate(server: &Server, policy: &str, bytes: &[u8]) -> (u16, Value) {
    let response = client()
        .post(format!("{}/v1/policies/{policy}/simulate?dataset=events&now=2026-01-15T00:00:00Z", server.url))
        .header("content-type", "application/wasm")
        .body(bytes.to_vec())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn actions(simulation: &Value) -> Vec<(String, String)> {
    simulation["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["partition"].as_str().unwrap().to_string(), entry["action"].as_str().unwrap().to_string()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn the_shipped_defaults_load_and_are_not_destructive() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let config = format!("{}dir = {:?}\n", config(), repository);
    let server = Server::start("policy-defaults", &config);
    let (status, body) = server.get("/v1/policies");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["file_errors"], json!([]), "{body}");
    let policies = body["policies"].as_array().unwrap();
    let names: Vec<&str> = policies.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["archival", "tiering"], "examples/ is not loaded");
    assert!(policies.iter().all(|p| p["status"] == "active"), "{body}");
    assert!(policies.iter().all(|p| p["kind"] != "retention"), "no default deletes data");
    assert_eq!(policy(&server, "archival")["config"]["delete_source_after"], false);
}

#[test]
fn simulate_shows_the_plan_against_real_partitions_and_changes_nothing() {
    let server = Server::start_with_files(
        "policy-simulate",
        &config(),
        &[],
        &[("policies/keep-90d.toml", retention_policy("keep-90d", "builtin:retention-by-age", "90d", "").as_bytes())],
    );
    ingest_days(&server, "events", &["2025-01-01", "2025-06-01", "2026-01-10"]);
    let (_, before) = server.get("/v1/datasets/events/partitions");

    let (status, simulation) =
        simulate(&server, "keep-90d", json!({ "dataset": "events", "now": "2026-01-15T00:00:00Z" }));
    assert_eq!(status, 200, "{simulation}");
    assert_eq!(
        actions(&simulation),
        pairs(&[("events/2025-01-01", "delete"), ("events/2025-06-01", "delete"), ("events/2026-01-10", "keep")])
    );
    assert_eq!(simulation["plan"][0]["reason"], "period ended 378d ago, more than max_age 90d");
    assert!(simulation["plan"][0]["bytes"].as_u64().unwrap() > 0, "{simulation}");
    assert_eq!(simulation["version"]["label"], "active");
    assert_eq!(simulation["version"]["seq"], 1);
    assert_eq!(simulation["bound"], true);
    assert_eq!(simulation["diff"], json!([]));
    assert_eq!(simulation["summary"]["delete"]["partitions"], 2);
    assert_eq!(simulation["now"], "2026-01-15T00:00:00Z");

    // `now` as epoch nanoseconds, a year later: everything is old.
    let (status, later) =
        simulate(&server, "keep-90d", json!({ "dataset": "events", "now": 1_800_000_000_000_000_000i64 }));
    assert_eq!(status, 200, "{later}");
    assert!(actions(&later).iter().all(|(_, action)| action == "delete"));

    // A candidate that decides nothing (everything kept): the diff says what changes.
    let (status, candidate) = simulate_candidate(&server, "keep-90d", &retention_fixture(""));
    assert_eq!(status, 200, "{candidate}");
    assert_eq!(candidate["version"]["label"], "candidate");
    assert_eq!(candidate["against"]["seq"], 1);
    let diff = candidate["diff"].as_array().unwrap();
    assert_eq!(diff.len(), 2, "{candidate}");
    assert_eq!(diff[0]["partition"], "events/2025-01-01");
    assert_eq!(
        (diff[0]["before"]["action"].as_str(), diff[0]["after"]["action"].as_str()),
        (Some("delete"), Some("keep"))
    );
    assert_eq!(candidate["plan"][0]["decided"], false);

    // A recorded version by number and by sha256 prefix.
    let sha = simulation["version"]["component_sha256"].as_str().unwrap().to_string();
    for version in [json!(1), json!(&sha[..12])] {
        let (status, body) = simulate(
            &server,
            "keep-90d",
            json!({ "dataset": "events", "now": "2026-01-15T00:00:00Z", "version": version }),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"]["component_sha256"], sha.as_str());
    }

    // Clear errors for what cannot be simulated.
    let cases = [
        (json!({ "dataset": "nope", "now": "2026-01-15T00:00:00Z" }), 404, "not_found"),
        (json!({ "dataset": "events", "now": "yesterday" }), 400, "invalid_timestamp"),
        (json!({ "dataset": "events", "version": 99 }), 422, "policy_invalid"),
        (json!({ "dataset": "events", "versoin": 1 }), 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let (got, error) = simulate(&server, "keep-90d", body.clone());
        assert_eq!((got, error["error"]["code"].as_str()), (status, Some(code)), "{body}: {error}");
    }
    let (status, error) = simulate(&server, "nope", json!({ "dataset": "events" }));
    assert_eq!((status, error["error"]["code"].as_str()), (404, Some("policy_not_found")));

    // Nothing changed, and the calls are counted.
    let (_, after) = server.get("/v1/datasets/events/partitions");
    assert_eq!(before, after);
    let detail = policy(&server, "keep-90d");
    assert_eq!(detail["status"], "active");
    assert_eq!(detail["limits"]["deadline_ms"], 1000);
    assert_eq!(detail["config"], json!({ "max_age": "90d" }));
    assert!(detail["invocations"].as_u64().unwrap() >= 6, "{detail}");
    assert_eq!(detail["failures"], 0);
    assert_eq!(detail["versions"][0]["status"], "active");
    let metrics = client().get(format!("{}/metrics", server.url)).send().unwrap().text().unwrap();
    assert!(metrics.contains("strata_policy_invocations_total{policy=\"keep-90d\"}"), "{metrics}");
}

#[test]
fn hostile_components_fail_cleanly_and_the_server_keeps_serving() {
    let limits = "[limits]\ndeadline_ms = 300\nmemory_bytes_max = 33554432\ndecisions_max = 1000\n";
    let server = Server::start_with_files(
        "policy-hostile",
        &config(),
        &[],
        &[
            (
                "policies/guarded.toml",
                retention_policy("guarded", "builtin:retention-by-age", "90d", limits).as_bytes(),
            ),
            ("policies/spin.toml", retention_policy("spin", "spin.wasm", "90d", limits).as_bytes()),
            ("policies/spin.wasm", &retention_fixture("(loop $forever (br $forever))")),
            ("policies/files.toml", retention_policy("files", "files.wasm", "90d", "").as_bytes()),
            ("policies/files.wasm", &fixture_importing("(import \"wasi:filesystem/types@0.2.6\" (instance))")),
        ],
    );
    ingest_days(&server, "events", &["2025-01-01", "2026-01-10"]);

    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("infinite loop", retention_fixture("(loop $forever (br $forever))"), "policy_limit_exceeded", "deadline_ms"),
        (
            "memory bomb",
            retention_fixture("(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 256)) (i32.const -1))))"),
            "policy_limit_exceeded",
            "memory_bytes_max",
        ),
        ("trap", retention_fixture("unreachable"), "policy_failed", "unreachable"),
        ("stack overflow", retention_fixture("(drop (call $recurse (i32.const 0)))"), "policy_limit_exceeded", "stack"),
        (
            "huge answer",
            retention_fixture(
                "(drop (memory.grow (i32.const 64))) (i32.store (i32.const 16) (i32.const 65536)) \
                 (i32.store (i32.const 20) (i32.const 200000)) (return (i32.const 16))",
            ),
            "policy_limit_exceeded",
            "decisions_max",
        ),
        (
            "filesystem import",
            fixture_importing("(import \"wasi:filesystem/preopens@0.2.6\" (instance))"),
            "policy_invalid",
            "wasi:filesystem/preopens",
        ),
        (
            "sockets import",
            fixture_importing("(import \"wasi:sockets/tcp@0.2.6\" (instance))"),
            "policy_invalid",
            "wasi:sockets/tcp",
        ),
        (
            "wrong world",
            strata::policy::builtins::component("partition-by-hash").unwrap().to_vec(),
            "policy_invalid",
            "retention",
        ),
        (
            "garbage",
            b"\0asm definitely not a component".to_vec(),
            "policy_invalid",
            "not a valid WebAssembly component",
        ),
    ];
    for (what, bytes, code, mentions) in cases {
        let health_failures = Arc::new(AtomicUsize::new(0));
        let health_checks = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicBool::new(true));
        let prober = {
            let (url, failures, checks, running) =
                (server.url.clone(), health_failures.clone(), health_checks.clone(), running.clone());
            std::thread::spawn(move || {
                // At least one check, even when the call under test is quick.
                loop {
                    let started = Instant::now();
                    let ok = client().get(format!("{url}/health")).send().is_ok_and(|r| r.status() == 200);
                    // A stall is a second: compiling a component uses both
                    // cores, and a loaded machine delays a health check by
                    // hundreds of ms. That /health answers while a guest loops
                    // is checked by the count of checks below.
                    if !ok || started.elapsed() > Duration::from_secs(1) {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    checks.fetch_add(1, Ordering::Relaxed);
                    if !running.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let started = Instant::now();
        let (status, error) = simulate_candidate(&server, "guarded", &bytes);
        let elapsed = started.elapsed();
        running.store(false, Ordering::Relaxed);
        prober.join().unwrap();
        assert_eq!((status, error["error"]["code"].as_str()), (422, Some(code)), "{what}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("guarded") && message.contains(mentions), "{what}: {message}");
        assert!(elapsed < Duration::from_secs(5), "{what} took {elapsed:?}");
        assert_eq!(health_failures.load(Ordering::Relaxed), 0, "{what}: /health failed or stalled meanwhile");
        if what == "infinite loop" {
            assert!(elapsed >= Duration::from_millis(290), "stopped at the deadline, not before: {elapsed:?}");
            assert!(health_checks.load(Ordering::Relaxed) >= 3, "/health was answered while the loop ran");
        }
        // The next evaluation is fine.
        let (status, body) =
            simulate(&server, "guarded", json!({ "dataset": "events", "now": "2026-01-15T00:00:00Z" }));
        assert_eq!(status, 200, "after {what}: {body}");
        assert_eq!(actions(&body).len(), 2);
    }

    // A looping policy loaded from a file: stopped at its deadline, every time.
    for _ in 0..2 {
        let started = Instant::now();
        let (status, error) = simulate(&server, "spin", json!({ "dataset": "events" }));
        assert_eq!((status, error["error"]["code"].as_str()), (422, Some("policy_limit_exceeded")), "{error}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
    let spin = policy(&server, "spin");
    assert_eq!(spin["limit_failures"], 2, "{spin}");
    assert!(spin["evaluation_error"]["message"].as_str().unwrap().contains("deadline"), "{spin}");

    // A component importing the filesystem never loads.
    let files = policy(&server, "files");
    assert_eq!(files["status"], "failed", "{files}");
    assert!(files["load_error"]["message"].as_str().unwrap().contains("wasi:filesystem/types"), "{files}");
    assert_eq!(files["versions"][0]["status"], "failed");
    let (status, error) = simulate(&server, "files", json!({ "dataset": "events" }));
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("policy_unavailable")), "{error}");
    let (status, _) = server.get("/health");
    assert_eq!(status, 200);
}

#[test]
fn rollback_returns_to_the_previous_good_version_and_sticks_until_the_file_changes() {
    let server = Server::start_with_files(
        "policy-rollback",
        &config(),
        &[],
        &[("policies/keep.toml", retention_policy("keep", "builtin:retention-by-age", "30d", "").as_bytes())],
    );
    ingest_days(&server, "events", &["2025-12-01"]);
    let max_age = |server: &Server| policy(server, "keep")["config"]["max_age"].as_str().unwrap().to_string();
    write(&server, "keep.toml", retention_policy("keep", "builtin:retention-by-age", "60d", ""));
    wait_until(&server, "version 2 is active", || policy(&server, "keep")["active_seq"] == 2);
    assert_eq!(max_age(&server), "60d");

    let (status, body) = server.post("/v1/policies/keep/rollback", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "policy": "keep", "from": 2, "to": 1 }));
    assert_eq!(max_age(&server), "30d");
    let (_, simulation) = simulate(&server, "keep", json!({ "dataset": "events", "now": "2026-01-15T00:00:00Z" }));
    assert_eq!(actions(&simulation), pairs(&[("events/2025-12-01", "delete")]), "30d again");

    // A reload with unchanged files keeps the rollback.
    let (status, report) = server.post("/v1/policies/reload", "");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["unchanged"], json!(["keep"]));
    assert_eq!(policy(&server, "keep")["active_seq"], 1);

    let (status, error) = server.post("/v1/policies/keep/rollback", "");
    assert_eq!((status, error["error"]["code"].as_str()), (422, Some("policy_invalid")), "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("no earlier good version"), "{error}");
    let (status, body) = server.post("/v1/policies/keep/rollback", r#"{"version": 2}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(max_age(&server), "60d");
    let versions = policy(&server, "keep")["versions"].clone();
    assert_eq!(versions[0]["seq"], 2);
    assert_eq!(versions[0]["status"], "active");
    assert_eq!(versions[1]["status"], "superseded");
    let (status, _) = server.post("/v1/policies/keep/rollback", r#"{"version": 7}"#);
    assert_eq!(status, 422);
    let (status, _) = server.post("/v1/policies/nope/rollback", "");
    assert_eq!(status, 404);
}

#[test]
fn reload_endpoint_sighup_and_bad_files_keep_the_last_good_version() {
    let mut config = config();
    // The watcher is effectively off: only explicit reloads apply changes.
    config = config.replace("reload_debounce_ms = 50", "reload_debounce_ms = 60000");
    let mut server = Server::start_with_files(
        "policy-reload",
        &config,
        &[],
        &[
            ("policies/keep.toml", retention_policy("keep", "keep.wasm", "30d", "").as_bytes()),
            ("policies/keep.wasm", &good_component(1)),
        ],
    );
    let first_sha = sha256(&good_component(1));
    assert_eq!(policy(&server, "keep")["component_sha256"], first_sha.as_str());

    // A new file via the endpoint.
    write(&server, "other.toml", retention_policy("other", "builtin:retention-by-age", "7d", ""));
    let (status, report) = server.post("/v1/policies/reload", "");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["activated"], json!(["other"]));

    // Unknown keys and broken components: errors visible, last good serving.
    write(&server, "keep.toml", retention_policy("keep", "keep.wasm", "30d", "shedule = \"every 2h\""));
    let (_, report) = server.post("/v1/policies/reload", "");
    assert!(report["failed"][0]["error"].as_str().unwrap().contains("shedule"), "{report}");
    let keep = policy(&server, "keep");
    assert_eq!(keep["status"], "active");
    assert!(keep["load_error"]["message"].as_str().unwrap().contains("unknown field `shedule`"), "{keep}");
    write(&server, "keep.toml", retention_policy("keep", "keep.wasm", "30d", ""));
    write(&server, "keep.wasm", b"garbage");
    let (_, report) = server.post("/v1/policies/reload", "");
    assert_eq!(report["failed"][0]["policy"], "keep", "{report}");
    assert_eq!(policy(&server, "keep")["component_sha256"], first_sha.as_str());
    write(&server, "typo.toml", "kind = \"retention\"\nplugin = \"builtin:retention-by-age\"\ndatasetz = [\"*\"]\n");
    let (_, report) = server.post("/v1/policies/reload", "");
    assert!(report["failed"].to_string().contains("datasetz"), "{report}");
    let (_, list) = server.get("/v1/policies");
    assert!(list["file_errors"][0]["error"].as_str().unwrap().contains("datasetz"), "{list}");
    std::fs::remove_file(server.root().join("policies/typo.toml")).unwrap();
    let metrics = client().get(format!("{}/metrics", server.url)).send().unwrap().text().unwrap();
    assert!(metrics.contains("strata_policy_reload_failures_total{policy=\"keep\"} 2"), "{metrics}");

    // A restart with the component still broken serves the last good version.
    server.restart();
    let keep = policy(&server, "keep");
    assert_eq!(keep["status"], "active", "{keep}");
    assert_eq!(keep["component_sha256"], first_sha.as_str());
    assert!(keep["load_error"]["message"].as_str().unwrap().contains("not a valid WebAssembly component"), "{keep}");

    // SIGHUP reloads.
    write(&server, "keep.wasm", good_component(2));
    let status = std::process::Command::new("kill").arg("-HUP").arg(server.pid().to_string()).status().unwrap();
    assert!(status.success());
    let second_sha = sha256(&good_component(2));
    wait_until(&server, "SIGHUP reloaded the component", || {
        policy(&server, "keep")["component_sha256"] == second_sha.as_str()
    });
    assert_eq!(policy(&server, "keep")["load_error"], Value::Null);

    // Removing the file removes the policy.
    std::fs::remove_file(server.root().join("policies/other.toml")).unwrap();
    let (_, report) = server.post("/v1/policies/reload", "");
    assert_eq!(report["removed"], json!(["other"]));
    let (status, _) = server.get("/v1/policies/other");
    assert_eq!(status, 404);
}

#[test]
fn hot_reload_under_load_always_serves_the_last_good_build() {
    let server = Server::start_with_files(
        "policy-hot-reload",
        &config(),
        &[],
        &[
            ("policies/hot.toml", retention_policy("hot", "hot.wasm", "90d", "").as_bytes()),
            ("policies/hot.wasm", &good_component(0)),
        ],
    );
    ingest_days(&server, "events", &["2025-01-01", "2026-01-10"]);
    let good_shas = Arc::new(std::sync::Mutex::new(vec![sha256(&good_component(0))]));
    let running = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let requests = Arc::new(AtomicUsize::new(0));

    let ingester = {
        let (url, running, failures, requests) =
            (server.url.clone(), running.clone(), failures.clone(), requests.clone());
        std::thread::spawn(move || {
            let client = client();
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) {
                i += 1;
                let body = json!([{ "time": 1_768_000_000_000_000_000i64 + i as i64, "v": i as f64 }]).to_string();
                match client.post(format!("{url}/v1/datasets/events/records")).body(body).send() {
                    Ok(response) if response.status() == 200 => {}
                    Ok(response) => failures.lock().unwrap().push(format!("ingest: {}", response.status())),
                    Err(error) => failures.lock().unwrap().push(format!("ingest: {error}")),
                }
                requests.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let simulator = {
        let (url, running, failures, requests, good_shas) =
            (server.url.clone(), running.clone(), failures.clone(), requests.clone(), good_shas.clone());
        std::thread::spawn(move || {
            let client = client();
            while running.load(Ordering::Relaxed) {
                let body = json!({ "dataset": "events", "now": "2026-01-15T00:00:00Z" }).to_string();
                match client.post(format!("{url}/v1/policies/hot/simulate")).body(body).send() {
                    Ok(response) if response.status() == 200 => {
                        let simulation: Value = response.json().unwrap();
                        let sha = simulation["version"]["component_sha256"].as_str().unwrap().to_string();
                        if !good_shas.lock().unwrap().contains(&sha) {
                            failures.lock().unwrap().push(format!("simulate ran {sha}, not a good build"));
                        }
                    }
                    Ok(response) => failures.lock().unwrap().push(format!("simulate: {}", response.status())),
                    Err(error) => failures.lock().unwrap().push(format!("simulate: {error}")),
                }
                requests.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let path = server.root().join("policies/hot.wasm");
    let mut last_good = sha256(&good_component(0));
    for round in 1..=50u32 {
        let failures_before = policy(&server, "hot")["reload_failures"].as_u64().unwrap();
        if round % 2 == 0 {
            let bytes = good_component(round);
            let sha = sha256(&bytes);
            good_shas.lock().unwrap().push(sha.clone());
            std::fs::write(&path, &bytes).unwrap();
            wait_until(&server, &format!("round {round}: the good build is active"), || {
                policy(&server, "hot")["component_sha256"] == sha.as_str()
            });
            last_good = sha;
        } else {
            // Broken builds: a truncated component or plain garbage.
            let broken = if round % 4 == 1 { good_component(round)[..500].to_vec() } else { b"oops".to_vec() };
            std::fs::write(&path, broken).unwrap();
            wait_until(&server, &format!("round {round}: the broken build is rejected"), || {
                policy(&server, "hot")["reload_failures"].as_u64().unwrap() > failures_before
            });
            let hot = policy(&server, "hot");
            assert_eq!(hot["component_sha256"], last_good.as_str(), "round {round}: {hot}");
            assert!(hot["load_error"]["message"].as_str().unwrap().contains("not a valid WebAssembly component"));
        }
    }
    running.store(false, Ordering::Relaxed);
    ingester.join().unwrap();
    simulator.join().unwrap();
    assert_eq!(*failures.lock().unwrap(), Vec::<String>::new());
    assert!(requests.load(Ordering::Relaxed) > 50, "the clients kept sending");
    let hot = policy(&server, "hot");
    assert_eq!(hot["component_sha256"], last_good.as_str());
    assert!(hot["reload_failures"].as_u64().unwrap() >= 25, "{hot}");
    let failed = hot["versions"].as_array().unwrap().iter().filter(|v| v["status"] == "failed").count();
    assert!(failed >= 2, "failed versions are recorded: {hot}");
}

/// Threads and resident memory of a process, from /proc.
fn threads_and_rss_bytes(pid: u32) -> (usize, u64) {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (threads, rss_kb * 1024)
}

#[test]
fn a_reload_storm_ends_with_the_last_content_and_leaks_nothing() {
    let server = Server::start_with_files(
        "policy-storm",
        &config(),
        &[],
        &[("policies/storm.toml", retention_policy("storm", "builtin:retention-by-age", "1d", "").as_bytes())],
    );
    let storm = |server: &Server, rounds: std::ops::RangeInclusive<u32>| {
        for round in rounds {
            write(
                server,
                "storm.toml",
                retention_policy("storm", "builtin:retention-by-age", &format!("{round}d"), ""),
            );
            if round % 50 == 0 {
                let (status, _) = server.post("/v1/policies/reload", "");
                assert_eq!(status, 200);
            }
        }
    };
    // Warm up (thread pools, allocator arenas), then measure.
    storm(&server, 1..=50);
    wait_until(&server, "the warm-up settled", || policy(&server, "storm")["config"]["max_age"] == "50d");
    std::thread::sleep(Duration::from_millis(300));
    let (threads_before, rss_before) = threads_and_rss_bytes(server.pid());

    storm(&server, 51..=250);
    wait_until(&server, "the last content is active", || policy(&server, "storm")["config"]["max_age"] == "250d");
    std::thread::sleep(Duration::from_millis(300));
    let storm_policy = policy(&server, "storm");
    assert_eq!(storm_policy["status"], "active");
    assert_eq!(storm_policy["load_error"], Value::Null);
    let (threads_after, rss_after) = threads_and_rss_bytes(server.pid());
    assert!(threads_after <= threads_before + 2, "threads {threads_before} -> {threads_after}");
    assert!(rss_after < rss_before + 64 * 1024 * 1024, "RSS {rss_before} -> {rss_after}");
}

#[test]
fn policy_check_reports_the_world_and_validates_the_config() {
    let dir = crate::support::temp_dir("policy-check");
    let good = dir.join("keep.wasm");
    std::fs::write(&good, strata::policy::builtins::component("retention-by-age").unwrap()).unwrap();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let path = good.to_str().unwrap();
    let (ok, output) = run(&["policy", "check", path, "--config", r#"{"max_age": "90d"}"#]);
    assert!(ok, "{output}");
    assert!(output.contains("world      strata:policy/retention@0.1.0"), "{output}");
    assert!(output.contains("evaluate") && output.contains("validate-config"), "{output}");
    let (ok, output) = run(&["policy", "check", path, "--config", r#"{"max_age": "ninety"}"#]);
    assert!(!ok && output.contains("max_age"), "{output}");
    let forbidden = dir.join("fs.wasm");
    std::fs::write(&forbidden, fixture_importing("(import \"wasi:filesystem/types@0.2.6\" (instance))")).unwrap();
    let (ok, output) = run(&["policy", "check", forbidden.to_str().unwrap()]);
    assert!(!ok && output.contains("wasi:filesystem/types"), "{output}");
    let (ok, output) = run(&["policy", "check", path, "--kind", "tiering"]);
    assert!(!ok && output.contains("tiering"), "{output}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn policy_new_scaffolds_a_standalone_project_and_never_overwrites() {
    let dir = crate::support::temp_dir("policy-new");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["policy", "new", "keep-weekdays", "--kind", "tiering", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let project: PathBuf = dir.join("keep-weekdays");
    let source = std::fs::read_to_string(project.join("src/lib.rs")).unwrap();
    assert!(source.contains("world: \"tiering\""), "starts from the tiering template");
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"keep-weekdays\""), "{manifest}");
    assert!(manifest.contains("[workspace]"), "a project of its own, buildable anywhere: {manifest}");
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["policy", "new", "keep-weekdays", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success(), "refuses to overwrite");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    std::fs::remove_dir_all(dir).unwrap();
}
