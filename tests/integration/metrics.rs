//! `/metrics` is valid Prometheus exposition, checked by `promtool`: every
//! family described, counters present from the start, seconds for time.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::lifecycle::{DAY, START, TIERING};
use crate::support::Server;

/// `promtool check metrics` on `text`: its findings, or a panic when
/// promtool is missing (the project installs it: `.ci/run`).
fn promtool_findings(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool is needed (Debian package prometheus, installed by .ci/run): {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let findings = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), findings)
}

#[test]
fn metrics_pass_promtool_and_list_every_counter_from_the_start() {
    let config =
        "[datasets.metrics]\nperiod = \"week\"\n[lifecycle]\nscheduler = false\ngrace_ms = 0\nmin_retention_ms = 0\n";
    let server =
        Server::start_with_files("metrics-promtool", config, &[], &[("policies/tiering.toml", TIERING.as_bytes())]);
    let fresh = server.get_text("/metrics");
    let (ok, findings) = promtool_findings(&fresh);
    assert!(ok && findings.trim().is_empty(), "{findings}\n{fresh}");
    // Counters the README lists exist at 0 before their first event.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for name in [
        "strata_ingest_rows_total",
        "strata_lifecycle_deletes_total",
        "strata_lifecycle_bytes_moved_total",
        "strata_lifecycle_sweep_failures_total",
        "strata_lifecycle_archives_total",
        "strata_compactions_total",
        "strata_compaction_failures_total",
        "strata_compaction_jobs_completed_total",
    ] {
        assert!(readme.contains(&format!("`{name}`")), "the README lists {name}");
        assert!(fresh.lines().any(|l| l == format!("{name} 0")), "{name} at 0:\n{fresh}");
        assert!(fresh.contains(&format!("# HELP {name} ")), "{name} described");
    }
    // Every counter the README names is described from the start.
    let listed: Vec<&str> = readme
        .split('`')
        .filter(|word| word.starts_with("strata_") && word.split('{').next().unwrap().ends_with("_total"))
        .map(|word| word.split('{').next().unwrap())
        .collect();
    assert!(listed.len() > 20, "{listed:?}");
    for family in listed {
        assert!(fresh.contains(&format!("# HELP {family} ")), "{family} described before its first sample:\n{fresh}");
    }

    // Writes, queries, a flush and a lifecycle run.
    let records: Vec<_> = (0..60).map(|d| json!({"time": START + d * DAY, "v": d})).collect();
    assert_eq!(server.post("/v1/datasets/metrics/records", json!(records).to_string()).0, 200);
    server.flush();
    assert_eq!(server.post("/v1/sql", "SELECT count(*) FROM metrics").0, 200);
    let now = START + 59 * DAY;
    let (status, run) = server.post("/v1/policies/tiering/run", json!({"dataset": "metrics", "now": now}).to_string());
    assert_eq!(status, 200, "{run}");
    let busy = server.get_text("/metrics");
    let (ok, findings) = promtool_findings(&busy);
    assert!(ok && findings.trim().is_empty(), "{findings}\n{busy}");
    assert!(busy.contains("strata_lifecycle_transitions_total{from=\"hot\",to=\"warm\"}"), "{busy}");
    assert!(busy.contains("strata_policy_last_duration_seconds{policy=\"tiering\"}"), "{busy}");
    assert!(!busy.contains("_microseconds"), "durations are seconds");
    for line in busy.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(busy.contains(&format!("# HELP {name} ")), "{name} has HELP text");
    }
}
