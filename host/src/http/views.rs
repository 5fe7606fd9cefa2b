//! JSON views of catalog records, as the API shows them.
//!
//! The views are built as `serde_json::Value` objects, whose keys serialize
//! in sorted order (serde_json without `preserve_order`); the answers have
//! always been in that order.

use serde_json::{Value as Json, json};

use crate::catalog::{AuditEvent, StoredRun};

/// A run as `GET /v1/lifecycle/runs/{id}` shows it: the recorded report
/// with its catalog id.
pub(super) fn run(run: StoredRun) -> Json {
    let mut report = run.report;
    if let Some(object) = report.as_object_mut() {
        object.insert("id".into(), run.id.into());
    }
    report
}

/// A run in a listing: [`run`] without its decisions (the run's own view
/// has them).
pub(super) fn run_summary(stored: StoredRun) -> Json {
    let mut report = run(stored);
    if let Some(object) = report.as_object_mut() {
        object.remove("entries");
    }
    report
}

/// An audit event as `GET /v1/audit` shows it.
pub(super) fn audit_event(event: AuditEvent) -> Json {
    json!({
        "id": event.id,
        "at_ns": event.at_ns,
        "kind": event.kind.as_str(),
        "dataset": event.dataset,
        "partition": event.partition,
        "detail": event.detail,
        "actor": event.actor,
    })
}
