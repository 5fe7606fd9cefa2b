//! What an operator learns when a policy fails, and what the runtime does
//! about it: the guest's panic message and the failing step in every
//! error, the canary that refuses a version which traps on real data, the
//! automatic rollback of a version whose runs keep failing, and the keep
//! reasons explain shows.

use serde_json::{Value, json};

use crate::lifecycle::{DAY, START, load, run};
use crate::support::Server;

const PANICKING: &str = include_str!("../fixtures/panicking.wat");

/// What a Rust guest's panic hook writes to stderr before it traps.
fn panic_text(message: &str) -> String {
    format!(
        "thread '<unnamed>' panicked at src/lib.rs:12:5:\n{message}\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
    )
}

/// The panicking fixture: writes a panic of `message` to stderr and traps,
/// with `code` (which may `(call $panic)`) put at `placement`.
fn panicking(message: &str, placement: &str, code: &str) -> Vec<u8> {
    let text = panic_text(message);
    let wat = PANICKING
        .replace("PANIC_TEXT", &text.escape_default().to_string())
        .replace("PANIC_LEN", &text.len().to_string())
        .replace(placement, code);
    wat::parse_str(wat).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    strata::digest::sha256_hex(bytes)
}

fn retention(name: &str, plugin: &str) -> String {
    format!(
        "name = \"{name}\"\nkind = \"retention\"\nplugin = \"{plugin}\"\ndatasets = [\"metrics\"]\n[config]\nmax_age = \"100000d\"\n"
    )
}

/// Explicit reloads only (the watcher waits a minute of quiet), so each
/// reload's answer is the one the test asked for.
const CONFIG: &str = "[datasets.metrics]\nperiod = \"day\"\n[lifecycle]\nscheduler = false\nauto_rollback_after_failures = 0\n\
                      [policies]\nreload_debounce_ms = 60000\n";

fn policy(server: &Server, name: &str) -> Value {
    let (status, body) = server.get(&format!("/v1/policies/{name}"));
    assert_eq!(status, 200, "{body}");
    body
}

fn message(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("not a message: {value}"))
}

fn audit(server: &Server, kind: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/audit?kind={kind}"));
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

fn write_policy(server: &Server, name: &str, toml: &str, wasm: &[u8]) {
    let directory = server.root().join("policies");
    std::fs::write(directory.join(format!("{name}.wasm")), wasm).unwrap();
    std::fs::write(directory.join(format!("{name}.toml")), toml).unwrap();
}

fn reload(server: &Server) -> Value {
    let (status, report) = server.post("/v1/policies/reload", "");
    assert_eq!(status, 200, "{report}");
    report
}

#[test]
fn a_panic_message_and_the_failing_step_reach_load_errors_runs_audit_and_simulations() {
    let smoke = panicking("boom: smoke", ";;ON_EVALUATE", "(call $panic)");
    let config = panicking("boom: bad config", ";;ON_VALIDATE", "(call $panic)");
    let on_data = panicking("boom: no tier for partition", ";;ON_PARTITIONS", "(call $panic)");
    let server = Server::start_with_files(
        "policy-panic-messages",
        CONFIG,
        &[],
        &[
            ("policies/smoke.toml", retention("smoke", "smoke.wasm").as_bytes()),
            ("policies/smoke.wasm", &smoke),
            ("policies/config.toml", retention("config", "config.wasm").as_bytes()),
            ("policies/config.wasm", &config),
            ("policies/ondata.toml", retention("ondata", "ondata.wasm").as_bytes()),
            ("policies/ondata.wasm", &on_data),
            ("policies/keep.toml", retention("keep", "builtin:retention-by-age").as_bytes()),
        ],
    );
    // Load errors name the step and quote the panic, in one clean line.
    let smoke_error = policy(&server, "smoke");
    let load_error = message(&smoke_error["load_error"]["message"]);
    assert!(
        load_error.contains("smoke evaluation trapped: panicked at src/lib.rs:12:5: boom: smoke (wasm trap"),
        "{load_error}"
    );
    assert!(!load_error.contains("RUST_BACKTRACE") && !load_error.contains('\n'), "{load_error}");
    assert_eq!(smoke_error["versions"][0]["status"], "failed");
    assert!(message(&smoke_error["versions"][0]["last_error"]).contains("boom: smoke"), "{smoke_error}");
    let config_error = policy(&server, "config");
    assert!(
        message(&config_error["load_error"]["message"])
            .contains("validate-config trapped: panicked at src/lib.rs:12:5: boom: bad config"),
        "{config_error}"
    );

    // A run: its report, its refusal's audit event and the version list.
    load(&server, 3);
    let now = START + 3 * DAY;
    let report = run(&server, "ondata", json!({ "dataset": "metrics", "now": now }));
    let error = message(&report["error"]);
    assert!(error.contains("evaluation trapped: panicked at src/lib.rs:12:5: boom: no tier for partition"), "{error}");
    assert_eq!(report["component_sha256"], sha256(&on_data), "{report}");
    let refused = audit(&server, "lifecycle_run_refused");
    let refusal = refused.iter().find(|e| e["detail"]["policy"] == "ondata").expect("the refusal is audited");
    assert!(message(&refusal["detail"]["error"]).contains("boom: no tier for partition"), "{refusal}");
    assert_eq!(refusal["detail"]["component_sha256"], sha256(&on_data), "{refusal}");
    let ondata = policy(&server, "ondata");
    assert_eq!(ondata["versions"][0]["status"], "active", "{ondata}");
    assert!(message(&ondata["versions"][0]["last_error"]).contains("boom: no tier for partition"), "{ondata}");
    assert!(message(&ondata["evaluation_error"]["message"]).contains("evaluation trapped: panicked at"), "{ondata}");

    // Simulations of the active version and of an uploaded candidate.
    let (status, body) = server.post("/v1/policies/ondata/simulate", json!({ "dataset": "metrics" }).to_string());
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("policy_failed")), "{body}");
    assert!(message(&body["error"]["message"]).contains("simulation trapped: panicked at src/lib.rs:12:5: boom"));
    let response = server
        .client()
        .post(format!("{}/v1/policies/keep/simulate?dataset=metrics", server.url))
        .header("content-type", "application/wasm")
        .body(on_data.clone())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let body: Value = response.json().unwrap();
    let error = message(&body["error"]["message"]);
    assert!(error.contains("candidate simulation trapped: panicked at src/lib.rs:12:5: boom"), "{error}");
    // The candidate is no version of `keep`: its calls stay out of keep's
    // per-version metrics, and its trap is not keep's evaluation error.
    let metrics = server.get_text("/metrics");
    let candidate = &sha256(&on_data)[..12];
    assert!(!metrics.contains(&format!("policy=\"keep\",version=\"{candidate}\"")), "{metrics}");
    let builtin = sha256(strata::policy::builtins::component("retention-by-age").unwrap());
    assert!(metrics.contains(&format!("policy=\"keep\",version=\"{}\"", &builtin[..12])), "{metrics}");
    assert_eq!(policy(&server, "keep")["evaluation_error"], Value::Null);
}

#[test]
fn the_canary_refuses_a_version_that_traps_on_real_data_and_the_last_good_keeps_serving() {
    let server = Server::start_with_files(
        "policy-canary",
        CONFIG,
        &[],
        &[("policies/keep.toml", retention("keep", "builtin:retention-by-age").as_bytes())],
    );
    load(&server, 3);
    let on_data = panicking("boom: only with data", ";;ON_PARTITIONS", "(call $panic)");
    write_policy(&server, "keep", &retention("keep", "keep.wasm"), &on_data);
    let report = reload(&server);
    let failure = report["failed"].as_array().unwrap().iter().find(|f| f["policy"] == "keep").expect("refused");
    assert!(
        message(&failure["error"])
            .contains("canary evaluation trapped: panicked at src/lib.rs:12:5: boom: only with data"),
        "{failure}"
    );
    let keep = policy(&server, "keep");
    assert_eq!(keep["active_seq"], 1, "the last good version keeps serving: {keep}");
    assert_eq!(
        (keep["versions"][0]["seq"].as_i64(), keep["versions"][0]["status"].as_str()),
        (Some(2), Some("failed"))
    );
    assert!(message(&keep["versions"][0]["last_error"]).contains("canary evaluation"), "{keep}");
    assert!(message(&keep["load_error"]["message"]).contains("boom: only with data"), "{keep}");
    let report = run(&server, "keep", json!({ "dataset": "metrics", "now": START + 3 * DAY }));
    assert_eq!(report["error"], Value::Null, "{report}");
    assert_eq!(report["unchanged"], 3, "{report}");
}

#[test]
fn a_version_whose_runs_keep_failing_is_rolled_back_automatically_and_explain_shows_keeps() {
    let config = "[datasets.metrics]\nperiod = \"day\"\n[lifecycle]\nscheduler = false\nauto_rollback_after_failures = 2\n\
         [policies]\nreload_debounce_ms = 60000\n";
    let server = Server::start_with_files(
        "policy-auto-rollback",
        config,
        &[],
        &[("policies/keep.toml", retention("keep", "builtin:retention-by-age").as_bytes())],
    );
    load(&server, 3);
    let now = START + 10 * DAY;
    let builtin = sha256(strata::policy::builtins::component("retention-by-age").unwrap());
    let first = run(&server, "keep", json!({ "dataset": "metrics", "now": now }));
    assert_eq!((first["unchanged"].as_u64(), first["component_sha256"].as_str()), (Some(3), Some(builtin.as_str())));

    // Explain shows the keep, with its reason, though the run lists no entry.
    let partition = crate::lifecycle::manifest(&server)[0]["id"].as_str().unwrap().to_string();
    let label = partition.strip_prefix("metrics/").unwrap();
    let (status, explained) = server.get(&format!("/v1/datasets/metrics/partitions/{label}/explain"));
    assert_eq!(status, 200, "{explained}");
    let keep = explained["policies"].as_array().unwrap().iter().find(|p| p["name"] == "keep").unwrap().clone();
    let last = &keep["last_decision"];
    assert_eq!((last["action"].as_str(), last["run"].as_i64()), (Some("keep"), first["id"].as_i64()), "{explained}");
    assert!(message(&last["reason"]).contains("max_age"), "{explained}");
    assert_eq!(last["component_sha256"], builtin.as_str());

    // A version that works on three partitions, and traps past three.
    let grows = panicking(
        "boom: too many partitions",
        ";;ON_EVALUATE",
        "(if (i32.gt_u (local.get $count) (i32.const 3)) (then (call $panic)))",
    );
    write_policy(&server, "keep", &retention("keep", "keep.wasm"), &grows);
    assert_eq!(reload(&server)["activated"], json!(["keep"]), "three partitions pass the canary");
    let (status, body) = server.post(
        "/v1/datasets/metrics/records",
        json!([{ "time": START + 5 * DAY, "v": 5 }, { "time": START + 6 * DAY, "v": 6 }]).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    server.flush();

    let failed = run(&server, "keep", json!({ "dataset": "metrics", "now": now }));
    assert!(message(&failed["error"]).contains("boom: too many partitions"), "{failed}");
    assert_eq!(failed["component_sha256"], sha256(&grows));
    assert!(failed.get("auto_rollback").is_none(), "one failure is below the threshold: {failed}");
    let second = run(&server, "keep", json!({ "dataset": "metrics", "now": now }));
    let rollback = &second["auto_rollback"];
    assert_eq!((rollback["from_seq"].as_i64(), rollback["to_seq"].as_i64()), (Some(2), Some(1)), "{second}");
    assert_eq!(rollback["failed_runs"], 2);

    let keep = policy(&server, "keep");
    assert_eq!((keep["active_seq"].as_i64(), keep["component_sha256"].as_str()), (Some(1), Some(builtin.as_str())));
    let rolled_back = keep["versions"].as_array().unwrap().iter().find(|v| v["seq"] == 2).unwrap().clone();
    assert_eq!(rolled_back["status"], "rolled_back", "{keep}");
    let last_error = message(&rolled_back["last_error"]);
    assert!(last_error.contains("rolled back automatically after 2 failed run(s)"), "{last_error}");
    assert!(last_error.contains("boom: too many partitions"), "{last_error}");
    assert_eq!(keep["evaluation_error"], Value::Null, "the old version's trap is not the current error: {keep}");
    let events = audit(&server, "policy_auto_rollback");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["detail"]["policy"].as_str(), events[0]["detail"]["from_seq"].as_i64()),
        (Some("keep"), Some(2))
    );
    let (_, health) = server.get("/health/lifecycle");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["problems"].as_array().unwrap().iter().any(|p| p["policy"] == "keep"), "{health}");

    // The good version serves again, and the rollback holds over reloads.
    let after = run(&server, "keep", json!({ "dataset": "metrics", "now": now }));
    assert_eq!((after["error"].as_str(), after["unchanged"].as_u64()), (None, Some(5)), "{after}");
    assert_eq!(reload(&server)["unchanged"], json!(["keep"]));
    assert_eq!(policy(&server, "keep")["active_seq"], 1);
    assert!(server.get_text("/metrics").contains("strata_policy_auto_rollbacks_total{policy=\"keep\"} 1"));
}
