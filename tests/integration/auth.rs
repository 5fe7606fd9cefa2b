//! Authentication and authorization against the real binary: every route ×
//! scope, the schemes clients send, offline tokens, expiry and revocation,
//! SQL confinement to readable datasets, the audit's actor, and that a
//! token never reaches the log or the audit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, serve_until_exit, temp_dir};

/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600_000_000_000;

/// Runs `strata token …` offline against `data_dir`.
fn token_command(data_dir: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("STRATA_LOG", "debug")
        .output()
        .unwrap();
    assert!(output.status.success(), "strata token {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// `strata token create` offline; the token is the first line of stdout.
pub(crate) fn create_offline(data_dir: &Path, name: &str, scopes: &[&str]) -> String {
    let mut args = vec!["create", "--name", name];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    let output = token_command(data_dir, &args);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.lines().next().unwrap().to_string();
    assert!(token.starts_with("strata_") && token.len() >= 7 + 64, "{stdout:?}");
    token
}

/// A call with an optional `Authorization: Bearer` token.
fn call(server: &Server, token: Option<&str>, method: &str, path: &str, body: &str) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    let (status, _, body) = server.request(method, path, &headers, body.to_string());
    (status, body)
}

/// Creates a token through the API with the admin token; returns it.
fn create(server: &Server, admin: &str, request: Value) -> String {
    let (status, body) = call(server, Some(admin), "POST", "/v1/tokens", &request.to_string());
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

fn assert_unauthorized(server: &Server, headers: &[(&str, &str)], method: &str, path: &str, v1: bool) {
    let (status, response_headers, body) = server.request(method, path, headers, "");
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{method} {path}: {body}");
    let challenges: Vec<&str> =
        response_headers.get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(challenges.contains(&"Bearer realm=\"strata\""), "{method} {path}: {challenges:?}");
    assert_eq!(challenges.contains(&"Basic realm=\"strata\""), v1, "{method} {path}: {challenges:?}");
}

pub(crate) fn wait_for_status(what: &str, mut status: impl FnMut() -> u16, expected: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = status();
        if seen == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {seen}, expected {expected}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a route needs, as the matrix below states it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    /// Any valid token (monitoring endpoints, the datasets list, SQL).
    AnyToken,
    ReadOrders,
    WriteOrders,
    Admin,
}

/// Every route of the server (but `/health` and `/ready`, which are open)
/// with a request that exercises it and the scope it needs.
fn matrix() -> Vec<(&'static str, String, String, Needs)> {
    use Needs::*;
    let record = json!([{ "time": T0 + 1, "v": 2.0 }]).to_string();
    let line = format!("orders v=3 {}", T0 + 2);
    let run = json!({ "dry": true }).to_string();
    let token = json!({ "name": "made-by-matrix", "scopes": ["read:orders"] }).to_string();
    let partition = "/v1/datasets/orders/partitions/2026-01-01";
    vec![
        ("GET", "/metrics".into(), String::new(), AnyToken),
        ("GET", "/health/lifecycle".into(), String::new(), AnyToken),
        ("GET", "/v1/datasets".into(), String::new(), AnyToken),
        ("POST", "/v1/sql".into(), "SELECT 1 AS one".into(), AnyToken),
        ("POST", "/v1/datasets/orders/records".into(), record, WriteOrders),
        ("POST", "/api/v2/write?bucket=orders".into(), line.clone(), WriteOrders),
        ("POST", "/api/v3/write_lp?db=orders".into(), line, WriteOrders),
        ("GET", "/v1/datasets/orders".into(), String::new(), ReadOrders),
        ("GET", "/v1/datasets/orders/partitions".into(), String::new(), ReadOrders),
        ("GET", format!("{partition}/explain"), String::new(), ReadOrders),
        ("GET", "/v1/datasets/orders/compaction".into(), String::new(), ReadOrders),
        ("POST", "/v1/datasets/orders/query".into(), json!({ "columns": ["v"] }).to_string(), ReadOrders),
        ("POST", format!("{partition}/seal"), String::new(), Admin),
        ("POST", format!("{partition}/unseal"), String::new(), Admin),
        ("POST", format!("{partition}/restore"), String::new(), Admin),
        ("POST", "/v1/datasets/orders/compact".into(), String::new(), Admin),
        ("PUT", "/v1/datasets/orders".into(), "{}".into(), Admin),
        ("PATCH", "/v1/datasets/orders".into(), "{}".into(), Admin),
        ("POST", "/v1/flush".into(), String::new(), Admin),
        ("GET", "/v1/policies".into(), String::new(), Admin),
        ("GET", "/v1/policies/keep".into(), String::new(), Admin),
        ("POST", "/v1/policies/reload".into(), String::new(), Admin),
        ("POST", "/v1/policies/keep/rollback".into(), String::new(), Admin),
        ("POST", "/v1/policies/keep/run".into(), run, Admin),
        ("POST", "/v1/policies/keep/simulate".into(), "{}".into(), Admin),
        ("GET", "/v1/lifecycle/runs".into(), String::new(), Admin),
        ("GET", "/v1/lifecycle/runs/1".into(), String::new(), Admin),
        ("GET", "/v1/storage-targets".into(), String::new(), Admin),
        ("GET", "/v1/audit".into(), String::new(), Admin),
        ("POST", "/v1/tokens".into(), token, Admin),
        ("GET", "/v1/tokens".into(), String::new(), Admin),
        ("DELETE", "/v1/tokens/spare".into(), String::new(), Admin),
    ]
}

#[test]
fn every_route_answers_by_the_scope_it_needs() {
    let mut server = Server::prepare("auth-matrix", "");
    // The first admin token is made offline, before the server listens.
    let admin = create_offline(&server.data_dir, "root", &["admin"]);
    server.start_again();
    assert_eq!(call(&server, None, "GET", "/health", "").0, 200);
    assert_eq!(call(&server, None, "GET", "/ready", "").0, 200);
    let reader = create(&server, &admin, json!({ "name": "reader", "scopes": ["read:orders"] }));
    let writer = create(&server, &admin, json!({ "name": "writer", "scopes": ["write:orders"] }));
    let other = create(&server, &admin, json!({ "name": "other", "scopes": ["read:other*", "write:other"] }));
    create(&server, &admin, json!({ "name": "spare", "scopes": ["read:*"] }));
    let (status, body) = call(
        &server,
        Some(&writer),
        "POST",
        "/v1/datasets/orders/records",
        &json!([{ "time": T0, "v": 1.0 }]).to_string(),
    );
    assert_eq!(status, 200, "{body}");

    for (method, path, body, needs) in matrix() {
        let what = format!("{method} {path}");
        assert_unauthorized(&server, &[], method, &path, false);
        assert_unauthorized(&server, &[("Authorization", "Bearer strata_0000")], method, &path, false);
        let (lacking, scope, allowed) = match needs {
            Needs::AnyToken => (None, "", &other),
            Needs::ReadOrders => (Some(&writer), "read:orders", &reader),
            Needs::WriteOrders => (Some(&reader), "write:orders", &writer),
            Needs::Admin => (Some(&other), "admin", &admin),
        };
        if let Some(lacking) = lacking {
            let (status, refused) = call(&server, Some(lacking), method, &path, &body);
            assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("forbidden")), "{what}: {refused}");
            assert_eq!(refused["error"]["scope"], scope, "{what}: {refused}");
            assert!(refused["error"]["message"].as_str().unwrap().contains(scope), "{what}: {refused}");
        }
        let (status, answer) = call(&server, Some(allowed), method, &path, &body);
        assert!(status != 401 && status != 403 && status != 500, "{what} with the scope: {status} {answer}");
        // Admin covers every dataset scope too.
        let (status, answer) = call(&server, Some(&admin), method, &path, &body);
        assert!(status != 401 && status != 403 && status != 500, "{what} as admin: {status} {answer}");
    }
    // Unknown routes and methods: 401 first, then 404 / 405.
    assert_unauthorized(&server, &[], "GET", "/v1/nothing", false);
    assert_eq!(call(&server, Some(&other), "GET", "/v1/nothing", "").0, 404);
    assert_unauthorized(&server, &[], "GET", "/v1/datasets/orders/records", false);
    assert_eq!(call(&server, Some(&other), "GET", "/v1/datasets/orders/records", "").0, 405);
    assert_eq!(call(&server, Some(&admin), "PUT", "/v1/tokens", "").0, 405);
    // A nonexistent dataset is 403 without its scope (its existence is not
    // revealed), 404 with it.
    assert_eq!(call(&server, Some(&reader), "GET", "/v1/datasets/ghost", "").0, 403);
    assert_eq!(call(&server, Some(&admin), "GET", "/v1/datasets/ghost", "").0, 404);
}

#[test]
fn tokens_expire_and_revocation_applies_at_once() {
    let mut server = Server::prepare("auth-expiry", "");
    let admin = create_offline(&server.data_dir, "root", &["admin"]);
    server.start_again();
    // Already expired when made.
    let past =
        create(&server, &admin, json!({ "name": "past", "scopes": ["read:*"], "expires_at": "2020-01-01T00:00:00Z" }));
    assert_unauthorized(&server, &[("Authorization", format!("Bearer {past}").as_str())], "GET", "/v1/datasets", false);
    // Expires while in use.
    let brief = create(&server, &admin, json!({ "name": "brief", "scopes": ["read:*"], "expires_in": "5s" }));
    assert_eq!(call(&server, Some(&brief), "GET", "/v1/datasets", "").0, 200);
    wait_for_status("an expiring token", || call(&server, Some(&brief), "GET", "/v1/datasets", "").0, 401);
    // Revoked through the API: the very next request is refused.
    let revoked = create(&server, &admin, json!({ "name": "revoked", "scopes": ["read:*"] }));
    assert_eq!(call(&server, Some(&revoked), "GET", "/v1/datasets", "").0, 200);
    let (status, body) = call(&server, Some(&admin), "DELETE", "/v1/tokens/revoked", "");
    assert_eq!((status, body["status"].as_str()), (200, Some("revoked")), "{body}");
    assert_unauthorized(
        &server,
        &[("Authorization", format!("Bearer {revoked}").as_str())],
        "GET",
        "/v1/datasets",
        false,
    );
    assert_eq!(call(&server, Some(&admin), "DELETE", "/v1/tokens/nope", "").0, 404);
    // Revoked offline while the server runs: refused within the refresh.
    let offline = create(&server, &admin, json!({ "name": "offline", "scopes": ["read:*"] }));
    assert_eq!(call(&server, Some(&offline), "GET", "/v1/datasets", "").0, 200);
    token_command(&server.data_dir, &["revoke", "offline"]);
    wait_for_status("a token revoked offline", || call(&server, Some(&offline), "GET", "/v1/datasets", "").0, 401);
    // Created offline while the server runs: accepted within the refresh.
    let late = create_offline(&server.data_dir, "late", &["read:*"]);
    wait_for_status("a token created offline", || call(&server, Some(&late), "GET", "/v1/datasets", "").0, 200);
    // The list shows states, never tokens or hashes.
    let (status, list) = call(&server, Some(&admin), "GET", "/v1/tokens", "");
    assert_eq!(status, 200);
    let states: Vec<(String, String)> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["status"].as_str().unwrap().to_string()))
        .collect();
    for (name, state) in [("past", "expired"), ("brief", "expired"), ("revoked", "revoked"), ("offline", "revoked")] {
        assert!(states.contains(&(name.to_string(), state.to_string())), "{name}: {states:?}");
    }
    assert!(states.contains(&("root".to_string(), "active".to_string())));
    let text = list.to_string();
    assert!(!text.contains("hash") && !text.contains("strata_"), "{text}");
    let cli = String::from_utf8(token_command(&server.data_dir, &["list"]).stdout).unwrap();
    assert!(cli.contains("revoked") && cli.contains("late") && !cli.contains("strata_"), "{cli}");
    // Bad requests are 400, a taken name 409.
    for bad in [
        json!({ "name": "x", "scopes": ["superuser"] }),
        json!({ "name": "x", "scopes": ["read:Orders"] }),
        json!({ "name": "x", "scopes": [] }),
        json!({ "name": "bad name", "scopes": ["admin"] }),
        json!({ "name": "x", "scopes": ["admin"], "expires_in": "soon" }),
        json!({ "name": "x", "scopes": ["admin"], "expires_in": "1d", "expires_at": 0 }),
        json!({ "name": "x", "scopes": ["admin"], "role": "admin" }),
    ] {
        let (status, body) = call(&server, Some(&admin), "POST", "/v1/tokens", &bad.to_string());
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) =
        call(&server, Some(&admin), "POST", "/v1/tokens", &json!({ "name": "root", "scopes": ["admin"] }).to_string());
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("token_exists")), "{body}");
}

#[test]
fn clients_authenticate_with_bearer_token_or_basic_on_v1() {
    let mut server = Server::prepare("auth-schemes", "");
    let writer = create_offline(&server.data_dir, "writer", &["write:orders"]);
    server.start_again();
    let line = format!("orders v=1 {T0}");
    for header in [format!("Bearer {writer}"), format!("Token {writer}"), format!("bearer {writer}")] {
        let (status, _, body) =
            server.request("POST", "/api/v2/write?bucket=orders", &[("Authorization", header.as_str())], line.clone());
        assert_eq!(status, 204, "{header}: {body}");
    }
    // Basic and `p=` only on the InfluxDB v1 endpoints, and `token=` nowhere.
    let basic = format!("Basic {}", base64_encode(&format!("anyone:{writer}")));
    assert_unauthorized(&server, &[("Authorization", basic.as_str())], "POST", "/api/v2/write?bucket=orders", false);
    assert_unauthorized(&server, &[], "POST", &format!("/api/v2/write?bucket=orders&p={writer}"), false);
    assert_unauthorized(&server, &[], "POST", &format!("/api/v2/write?bucket=orders&token={writer}"), false);
    assert_unauthorized(&server, &[], "POST", "/write?db=orders", true);
    assert_unauthorized(&server, &[("Authorization", "Basic !!!")], "POST", "/write?db=orders", true);
    // Authenticated and authorized on the v1 /write.
    let (status, _, _) = server.request("POST", "/write?db=orders", &[("Authorization", basic.as_str())], line.clone());
    assert_eq!(status, 204);
    let (status, _, _) = server.request("POST", &format!("/write?db=orders&u=me&p={writer}"), &[], line.clone());
    assert_eq!(status, 204);
    // … and a writer may not query through v1.
    let (status, _, body) = server.request("GET", &format!("/query?db=orders&p={writer}"), &[], "");
    assert_eq!((status, body["error"]["scope"].as_str()), (403, Some("read:orders")), "{body}");
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn sql_and_the_dataset_list_see_only_readable_datasets() {
    let mut server = Server::prepare("auth-sql", "");
    let admin = create_offline(&server.data_dir, "root", &["admin"]);
    server.start_again();
    for (dataset, value) in [("orders", 1), ("customers", 2), ("secrets", 3), ("orders_eu", 4)] {
        let body = json!([{ "time": T0, "id": 1, "v": value }]).to_string();
        assert_eq!(call(&server, Some(&admin), "POST", &format!("/v1/datasets/{dataset}/records"), &body).0, 200);
    }
    let analyst = create(&server, &admin, json!({ "name": "analyst", "scopes": ["read:orders", "read:customers"] }));
    let sql = |text: &str| call(&server, Some(&analyst), "POST", "/v1/sql", text);
    let (status, body) = sql("SELECT o.v AS o, c.v AS c FROM orders o JOIN customers c ON o.id = c.id");
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["rows"][0]["o"].as_f64(), body["rows"][0]["c"].as_f64()), (Some(1.0), Some(2.0)), "{body}");
    for text in [
        "SELECT * FROM secrets",
        "select * from SECRETS",
        "SELECT o.v FROM orders o JOIN secrets s ON o.id = s.id",
        "SELECT * FROM \"orders_eu\"",
    ] {
        let (status, body) = sql(text);
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{text}: {body}");
        assert!(body["error"]["scope"].as_str().unwrap().starts_with("read:"), "{body}");
    }
    assert_eq!(sql("SELECT * FROM secrets").1["error"]["scope"], "read:secrets");
    // The admin reads everything.
    let (status, body) = call(&server, Some(&admin), "POST", "/v1/sql", "SELECT v FROM secrets");
    assert_eq!((status, body["rows"][0]["v"].as_f64()), (200, Some(3.0)), "{body}");
    // The list shows what the token may read.
    let names = |token: &str| -> Vec<String> {
        let (status, body) = call(&server, Some(token), "GET", "/v1/datasets", "");
        assert_eq!(status, 200, "{body}");
        body["datasets"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&analyst), ["customers", "orders"]);
    assert_eq!(names(&admin), ["customers", "orders", "orders_eu", "secrets"]);
    let writer = create(&server, &admin, json!({ "name": "writer", "scopes": ["write:*"] }));
    assert!(names(&writer).is_empty());
}

#[test]
fn admin_requests_are_audited_and_tokens_never_reach_the_log_or_the_audit() {
    let mut server = Server::prepare("auth-secrets", "");
    let admin = create_offline(&server.data_dir, "root", &["admin"]);
    server.set_env(&[("STRATA_LOG", "debug")]);
    server.start_again();
    let reader = create(&server, &admin, json!({ "name": "reader", "scopes": ["read:orders"] }));
    let expired = create(&server, &admin, json!({ "name": "old", "scopes": ["admin"], "expires_at": 0 }));
    // Use every token every way, including ways that fail.
    let mut secrets = vec![admin.clone(), reader.clone(), expired.clone()];
    let revoked = create(&server, &admin, json!({ "name": "gone", "scopes": ["admin"] }));
    assert_eq!(call(&server, Some(&admin), "DELETE", "/v1/tokens/gone", "").0, 200);
    secrets.push(revoked.clone());
    for token in &secrets {
        call(&server, Some(token), "POST", "/v1/flush", "");
        call(&server, Some(token), "POST", "/v1/policies/missing/run", "{");
        call(&server, Some(token), "POST", "/v1/sql", "SELECT * FROM nowhere");
        call(&server, Some(token), "GET", "/v1/datasets/INVALID", "");
        server.request("POST", &format!("/write?db=orders&u=x&p={token}"), &[], "x");
        server.request("POST", &format!("/api/v2/write?bucket=orders&p={token}"), &[], "x");
        let basic = format!("Basic {}", base64_encode(&format!("u:{token}")));
        server.request("GET", "/v1/audit", &[("Authorization", basic.as_str())], "");
        server.request("GET", "/v1/audit", &[("Authorization", format!("Digest {token}").as_str())], "");
    }
    let (status, audit) = call(&server, Some(&admin), "GET", "/v1/audit?kind=admin_request&limit=10000", "");
    assert_eq!(status, 200, "{audit}");
    let events = audit["events"].as_array().unwrap();
    let find = |actor: &str, method: &str, path: &str, status: u16| {
        events.iter().any(|e| {
            e["actor"] == actor
                && e["detail"]["method"] == method
                && e["detail"]["path"] == path
                && e["detail"]["status"] == status
        })
    };
    assert!(find("root", "POST", "/v1/flush", 200), "{audit}");
    assert!(find("reader", "POST", "/v1/flush", 403), "{audit}");
    assert!(find("root", "DELETE", "/v1/tokens/gone", 200), "{audit}");
    assert!(find("root", "POST", "/v1/tokens", 201), "{audit}");
    // An admin read that was let through is not recorded; a refused one is.
    assert!(!events.iter().any(|e| e["detail"]["method"] == "GET" && e["detail"]["status"] == 200), "{audit}");
    assert_eq!(call(&server, Some(&reader), "GET", "/v1/audit", "").0, 403);
    // Requests no token got through are not audited (nor anyone's data).
    assert!(events.iter().all(|e| e["actor"] != "old" && e["actor"] != "gone"), "{audit}");
    let (status, everything) = call(&server, Some(&admin), "GET", "/v1/audit?limit=10000", "");
    assert_eq!(status, 200, "{everything}");
    let everything = everything.to_string();
    let log = server.log();
    assert!(log.contains("DEBUG") || log.contains("INFO"), "the log is empty: {log}");
    for secret in &secrets {
        let random = &secret["strata_".len()..];
        assert!(!log.contains(random), "a token is in the log:\n{log}");
        assert!(!everything.contains(random), "a token is in the audit: {everything}");
    }
}

#[test]
fn without_tokens_only_loopback_is_served_and_requests_are_anonymous() {
    // Without tokens: no authentication, and admin requests are anonymous.
    let server = Server::start("auth-off", "");
    assert_eq!(server.post("/v1/flush", "").0, 200);
    let (_, audit) = server.get("/v1/audit?kind=admin_request");
    let events = audit["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["actor"] == "anonymous" && e["detail"]["path"] == "/v1/flush"), "{audit}");
    drop(server);

    // A non-loopback address is refused until a token exists.
    let root = temp_dir("auth-bind");
    let data_dir = root.join("data");
    let serve = || {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
            .arg(&data_dir)
            .current_dir(&root)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let args = ["--listen".as_ref(), "0.0.0.0:0".as_ref(), "--data-dir".as_ref(), data_dir.as_os_str()];
    let refused = serve_until_exit(&root, &args, "a non-loopback address without tokens");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("strata token create") && stderr.contains("--scope admin"), "{stderr}");
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("listening"));
    // With a token it listens (no traffic is sent to it).
    create_offline(&data_dir, "root", &["admin"]);
    let mut child = serve();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.starts_with("strata listening on http://0.0.0.0:"), "{first:?}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn auth_required_and_open_metrics_are_configurable() {
    let server = Server::start("auth-required", "[auth]\nrequired = true\nmetrics_open = true\n");
    // No token exists, yet requests need one.
    assert_unauthorized(&server, &[], "GET", "/v1/datasets", false);
    assert_unauthorized(&server, &[], "POST", "/v1/flush", false);
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(server.get("/metrics").0, 200);
    assert_eq!(server.get("/health/lifecycle").0, 200);
    // A token made offline beside the running server is accepted within the refresh.
    let admin = create_offline(&server.data_dir, "root", &["admin"]);
    wait_for_status("a first token", || call(&server, Some(&admin), "GET", "/v1/datasets", "").0, 200);
}
