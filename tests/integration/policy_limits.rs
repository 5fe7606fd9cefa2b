//! The policy directory and plugin compilation cannot exhaust the server:
//! oversized or special files (FIFOs, devices) in the policy directory or
//! behind a plugin path, and concurrent uploads of candidate components.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, client};

/// Explicit reloads only (the watcher waits a minute of quiet), a small
/// definition cap and a plugin cap that the built-ins fit under.
fn config(extra: &str) -> String {
    let cache = std::env::temp_dir().join("strata-test-policy-cache");
    format!(
        "[ingest]\nflush_age_ms = 3600000\n[policies]\ncache_dir = {cache:?}\nreload_debounce_ms = 60000\n\
         definition_bytes_max = 4096\n{extra}"
    )
}

fn retention_policy(name: &str, plugin: &str) -> String {
    format!(
        "name = \"{name}\"\nkind = \"retention\"\nplugin = \"{plugin}\"\ndatasets = [\"events\"]\n[config]\nmax_age = \"90d\"\n"
    )
}

fn builtin_retention() -> &'static [u8] {
    strata::policy::builtins::component("retention-by-age").unwrap()
}

/// The built-in `retention-by-age`, `padding` bytes larger, under a sha256
/// of its own (`nonce`): compiled, not found in the cache.
fn component(nonce: u32, padding: usize) -> Vec<u8> {
    crate::policies::padded_component(nonce, padding)
}

fn policy_path(server: &Server, file: &str) -> std::path::PathBuf {
    server.root().join("policies").join(file)
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

fn policy(server: &Server, name: &str) -> Value {
    let (status, body) = server.get(&format!("/v1/policies/{name}"));
    assert_eq!(status, 200, "{body}");
    body
}

/// `POST /v1/policies/reload`, which must answer (the client gives up
/// after a minute, so a reload stuck on a file fails the test).
fn reload(server: &Server) -> Value {
    let (status, report) = server.post("/v1/policies/reload", "");
    assert_eq!(status, 200, "{report}");
    report
}

fn failure<'a>(report: &'a Value, file: &str) -> &'a Value {
    report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"].as_str().is_some_and(|path| path.ends_with(file)))
        .unwrap_or_else(|| panic!("{file} is not among the failures: {report}"))
}

fn ingest_event(server: &Server) {
    let (status, body) =
        server.post("/v1/datasets/events/records", json!([{ "time": "2026-01-10T12:00:00Z", "v": 1.0 }]).to_string());
    assert_eq!(status, 200, "{body}");
}

fn simulate_active(server: &Server, name: &str) -> (u16, Value) {
    let body = json!({ "dataset": "events", "now": "2026-01-15T00:00:00Z" });
    server.post(&format!("/v1/policies/{name}/simulate"), body.to_string())
}

/// Uploads a candidate; answers the status, the body and `Retry-After`.
fn simulate_candidate(url: &str, name: &str, bytes: Vec<u8>) -> (u16, Value, Option<String>) {
    let response = client()
        .post(format!("{url}/v1/policies/{name}/simulate?dataset=events&now=2026-01-15T00:00:00Z"))
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, response.json().unwrap_or(Value::Null), retry_after)
}

/// Sends only the head of a candidate upload announcing `length` bytes and
/// reads the answer.
fn announce_candidate(server: &Server, name: &str, length: usize) -> (u16, Value) {
    use std::io::{Read, Write};
    let authority = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "POST /v1/policies/{name}/simulate?dataset=events HTTP/1.1\r\nHost: {authority}\r\n\
         Content-Type: application/wasm\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    // Until the head and the body it announces have arrived.
    loop {
        let read = stream.read(&mut chunk).unwrap();
        response.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&response).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let announced = head
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string))
                .and_then(|value| value.trim().parse::<usize>().ok());
            if read == 0 || announced.is_some_and(|announced| body.len() >= announced) {
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                return (status, serde_json::from_str(body).unwrap_or(Value::Null));
            }
        }
        assert!(read > 0, "the connection closed before an answer: {}", String::from_utf8_lossy(&response));
    }
}

#[test]
fn an_oversized_or_garbled_policy_file_fails_with_a_short_error_and_the_rest_keeps_serving() {
    let server = Server::start_with_files(
        "policy-limits-toml",
        &config(""),
        &[],
        &[
            ("policies/keep.toml", retention_policy("keep", "builtin:retention-by-age").as_bytes()),
            ("policies/other.toml", retention_policy("other", "builtin:retention-by-age").as_bytes()),
        ],
    );
    ingest_event(&server);

    // Just over the cap: refused unread, the last good version serving.
    let oversized = format!("{}# {}\n", retention_policy("keep", "builtin:retention-by-age"), "x".repeat(4096));
    std::fs::write(policy_path(&server, "keep.toml"), oversized).unwrap();
    // A new file over the cap, never parsed, so of no known policy.
    std::fs::write(policy_path(&server, "huge.toml"), "y".repeat(5000)).unwrap();
    let report = reload(&server);
    let failed = failure(&report, "keep.toml");
    assert_eq!(failed["policy"], "keep", "{report}");
    let message = failed["error"].as_str().unwrap();
    assert!(message.contains("policies.definition_bytes_max = 4096"), "{message}");
    assert!(message.len() < 1024, "{} bytes: {message}", message.len());
    let huge = failure(&report, "huge.toml");
    assert_eq!(huge["policy"], Value::Null, "{report}");
    assert!(huge["error"].as_str().unwrap().contains("policies.definition_bytes_max"), "{report}");
    let keep = policy(&server, "keep");
    assert_eq!(keep["status"], "active", "the last good version keeps serving: {keep}");
    assert!(keep["load_error"]["message"].as_str().unwrap().contains("definition_bytes_max"), "{keep}");
    assert_eq!(simulate_active(&server, "keep").0, 200);
    assert_eq!(simulate_active(&server, "other").0, 200, "other policies still work");
    std::fs::remove_file(policy_path(&server, "huge.toml")).unwrap();

    // Under the cap but one long line that does not parse: the message
    // quotes a little of it, not the whole line.
    let garbled = format!("kind = \"retention\"\n{}\n", "z".repeat(3900));
    std::fs::write(policy_path(&server, "keep.toml"), garbled).unwrap();
    let report = reload(&server);
    let message = failure(&report, "keep.toml")["error"].as_str().unwrap();
    assert!(message.contains("line 2, column "), "{message}");
    assert!(message.len() < 1024, "{} bytes: {message}", message.len());
    let (_, list) = server.get("/v1/policies");
    assert!(list.to_string().len() < 8 * 1024, "the listing does not repeat the file: {list}");

    // The server serves throughout, and a fixed file loads again.
    ingest_event(&server);
    assert_eq!(server.get("/ready").0, 200);
    std::fs::write(policy_path(&server, "keep.toml"), retention_policy("keep", "builtin:retention-by-age")).unwrap();
    reload(&server);
    assert_eq!(policy(&server, "keep")["load_error"], Value::Null);
}

#[test]
fn fifos_and_devices_in_the_policy_directory_never_block_start_up_or_reloads() {
    let mut server = Server::start_with_files(
        "policy-limits-fifo",
        &config(""),
        &[],
        &[
            ("policies/x.toml", retention_policy("x", "x.wasm").as_bytes()),
            ("policies/x.wasm", builtin_retention()),
            ("policies/other.toml", retention_policy("other", "builtin:retention-by-age").as_bytes()),
        ],
    );
    ingest_event(&server);
    assert_eq!(policy(&server, "x")["status"], "active");

    // No writer ever opens these FIFOs: reading one would block for good.
    server.kill9();
    mkfifo(&policy_path(&server, "x.wasm"));
    mkfifo(&policy_path(&server, "y.toml"));
    std::fs::write(policy_path(&server, "zero.toml"), retention_policy("zero", "/dev/zero")).unwrap();
    // A "regular" file of size 0 whose reading fails (the server's own memory at address 0).
    std::fs::write(policy_path(&server, "mem.toml"), retention_policy("mem", "/proc/self/mem")).unwrap();
    // `start_again` waits for `/ready` (a minute at most).
    server.start_again();
    let x = policy(&server, "x");
    assert_eq!(x["status"], "active", "the last good version is restored from the catalog: {x}");
    assert!(x["load_error"]["message"].as_str().unwrap().contains("is a FIFO, not a regular file"), "{x}");
    let zero = policy(&server, "zero");
    assert_eq!(zero["status"], "failed", "{zero}");
    assert!(zero["load_error"]["message"].as_str().unwrap().contains("character device"), "{zero}");
    let mem = policy(&server, "mem");
    assert_eq!(mem["status"], "failed", "{mem}");
    assert!(mem["load_error"]["message"].as_str().unwrap().contains("/proc/self/mem"), "{mem}");
    let (_, list) = server.get("/v1/policies");
    let file_errors = list["file_errors"].to_string();
    assert!(file_errors.contains("y.toml") && file_errors.contains("FIFO"), "{list}");

    // Reloads answer too, with the same failures.
    let report = reload(&server);
    assert!(failure(&report, "x.toml")["error"].as_str().unwrap().contains("FIFO"), "{report}");
    assert!(failure(&report, "y.toml")["error"].as_str().unwrap().contains("FIFO"), "{report}");
    assert!(failure(&report, "zero.toml")["error"].as_str().unwrap().contains("character device"), "{report}");
    assert_eq!(simulate_active(&server, "x").0, 200, "x still serves");
    assert_eq!(simulate_active(&server, "other").0, 200);
    ingest_event(&server);
}

#[test]
fn oversized_plugins_and_candidates_are_refused_unread() {
    let cap = builtin_retention().len() + 64 * 1024;
    let server = Server::start_with_files(
        "policy-limits-plugin",
        &config(&format!("plugin_bytes_max = {cap}\n")),
        &[],
        &[
            ("policies/keep.toml", retention_policy("keep", "keep.wasm").as_bytes()),
            ("policies/keep.wasm", &component(1, 0)),
        ],
    );
    ingest_event(&server);
    let first_sha = policy(&server, "keep")["component_sha256"].clone();

    // The plugin file grows past the cap: refused, the last good version serves.
    std::fs::write(policy_path(&server, "keep.wasm"), component(2, 64 * 1024)).unwrap();
    let report = reload(&server);
    let message = failure(&report, "keep.toml")["error"].as_str().unwrap();
    assert!(message.contains(&format!("policies.plugin_bytes_max = {cap}")), "{message}");
    let keep = policy(&server, "keep");
    assert_eq!((&keep["status"], &keep["component_sha256"]), (&json!("active"), &first_sha), "{keep}");

    // The same cap applies to an uploaded candidate: refused before its
    // body is read (none is sent here), let alone compiled.
    let (status, body) = announce_candidate(&server, "keep", cap + 1);
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("payload_too_large")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("policies.plugin_bytes_max"), "{body}");
    let (status, body, _) = simulate_candidate(&server.url, "keep", component(4, 0));
    assert_eq!(status, 200, "a candidate within the cap is simulated: {body}");
}

#[test]
fn concurrent_candidate_uploads_are_serialized_or_refused_cleanly() {
    // No waiting: a candidate arriving while another compiles is refused.
    let server = Server::start_with_files(
        "policy-limits-compile",
        &config("compile_concurrent_max = 1\ncompile_wait_ms = 0\n"),
        &[],
        &[("policies/keep.toml", retention_policy("keep", "builtin:retention-by-age").as_bytes())],
    );
    ingest_event(&server);

    // A refused candidate gives its slot back.
    let (status, body, _) = simulate_candidate(&server.url, "keep", b"garbage".to_vec());
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("policy_invalid")), "{body}");
    let (status, body, _) = simulate_candidate(&server.url, "keep", component(10, 0));
    assert_eq!(status, 200, "{body}");

    let started = Instant::now();
    let uploads: Vec<_> = (0..4)
        .map(|nonce| {
            let url = server.url.clone();
            std::thread::spawn(move || simulate_candidate(&url, "keep", component(100 + nonce, 0)))
        })
        .collect();
    let answers: Vec<_> = uploads.into_iter().map(|upload| upload.join().unwrap()).collect();
    assert!(started.elapsed() < Duration::from_secs(60), "uploads took {:?}", started.elapsed());
    for (status, body, retry_after) in &answers {
        match status {
            200 => assert_eq!(body["version"]["label"], "candidate", "{body}"),
            429 => {
                assert_eq!(body["error"]["code"], "compile_busy", "{body}");
                assert!(body["error"]["message"].as_str().unwrap().contains("compile_concurrent_max"), "{body}");
                assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
            }
            other => panic!("status {other}: {body}"),
        }
    }
    assert!(answers.iter().any(|(status, _, _)| *status == 200), "{answers:?}");
    // Every slot was given back.
    let (status, body, _) = simulate_candidate(&server.url, "keep", component(200, 0));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn kernel_pseudo_files_and_files_outside_the_directory_are_never_quoted() {
    // In the server's environment, and in a file outside the policy directory.
    let secret = "hunter2-policy-secret";
    let outside = crate::support::temp_dir("policy-limits-outside");
    std::fs::write(outside.join("secret.toml"), format!("x = {secret}\n")).unwrap();
    let server = Server::start_with_files(
        "policy-limits-procfs",
        &config(""),
        &[("AAAA_STRATA_TEST_SECRET", secret)],
        &[
            ("policies/mem.toml", retention_policy("mem", "/proc/self/mem").as_bytes()),
            ("policies/broken.toml", format!("x = inside-{secret}\n").as_bytes()),
        ],
    );
    std::os::unix::fs::symlink("/proc/self/environ", policy_path(&server, "env.toml")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", policy_path(&server, "environ.wasm")).unwrap();
    std::fs::write(policy_path(&server, "wasm.toml"), retention_policy("wasm", "environ.wasm")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.toml"), policy_path(&server, "outside.toml")).unwrap();

    let report = reload(&server);
    let (_, list) = server.get("/v1/policies");
    for (file, mentions) in [
        ("env.toml", "kernel pseudo-file (/proc/"),
        ("mem.toml", "kernel pseudo-file (/proc/"),
        ("wasm.toml", "kernel pseudo-file (/proc/"),
        ("outside.toml", "outside the policy directory"),
    ] {
        let error = failure(&report, file)["error"].as_str().unwrap();
        assert!(error.contains(mentions), "{file}: {error}");
        assert!(!error.contains(secret) && !error.contains("(at "), "{file} quotes what it points at: {error}");
    }
    let served = list.to_string();
    assert!(served.contains("env.toml") && served.contains("outside.toml"), "{list}");
    assert!(!served.replace(&format!("inside-{secret}"), "").contains(secret), "{list}");
    // A file of the directory itself is still quoted, to point at the typo.
    let broken = failure(&report, "broken.toml")["error"].as_str().unwrap();
    assert!(broken.contains(&format!("inside-{secret}")), "{broken}");
    drop(server);
    std::fs::remove_dir_all(outside).unwrap();
}
