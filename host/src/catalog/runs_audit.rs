//! Lifecycle runs and the audit log.
//!
//! A run's report is stored whole (`report_json`) together with one
//! `lifecycle_decision` audit event per decision, in one transaction, so
//! the log never names a run that is not recorded. Audit events are only
//! appended; their `detail_json` is what the writer made of the event and
//! is read back as stored.

use rusqlite::{OptionalExtension, params};

use super::{Catalog, Result, decode};

/// The one statement that appends an audit event: at, kind, dataset,
/// partition, detail (JSON text) and actor.
pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit_events (at_ns, kind, dataset, partition, detail_json, actor) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// What an audit event records. The catalog stores [`AuditKind::as_str`];
/// a stored kind no variant spells is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// An admin request and its status, naming the token that made it.
    AdminRequest,
    /// A compaction job's outcome for one partition.
    Compaction,
    /// One decision of a lifecycle run and what became of it.
    LifecycleDecision,
    /// A lifecycle run whose whole answer was refused (it decided nothing).
    LifecycleRunRefused,
    /// A partition sealed or unsealed.
    PartitionReadOnly,
    /// An archived partition restored to a tier.
    PartitionRestored,
    /// A dataset tombstoned (`DELETE /v1/datasets/{ds}`).
    DatasetDeleted,
    /// A policy version whose runs kept failing, rolled back automatically.
    PolicyAutoRollback,
}

impl AuditKind {
    /// Every kind, for parsing.
    const ALL: [AuditKind; 8] = [
        AuditKind::AdminRequest,
        AuditKind::Compaction,
        AuditKind::LifecycleDecision,
        AuditKind::LifecycleRunRefused,
        AuditKind::PartitionReadOnly,
        AuditKind::PartitionRestored,
        AuditKind::DatasetDeleted,
        AuditKind::PolicyAutoRollback,
    ];

    /// The catalog's and the API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::AdminRequest => "admin_request",
            AuditKind::Compaction => "compaction",
            AuditKind::LifecycleDecision => "lifecycle_decision",
            AuditKind::LifecycleRunRefused => "lifecycle_run_refused",
            AuditKind::PartitionReadOnly => "partition_read_only",
            AuditKind::PartitionRestored => "partition_restored",
            AuditKind::DatasetDeleted => "dataset_deleted",
            AuditKind::PolicyAutoRollback => "policy_auto_rollback",
        }
    }

    /// The kind spelled `raw`, if any.
    pub fn parse(raw: &str) -> Option<AuditKind> {
        AuditKind::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }
}

/// An audit event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Row id: events are numbered in the order they were appended.
    pub id: i64,
    /// When it happened, ns.
    pub at_ns: i64,
    /// What happened.
    pub kind: AuditKind,
    /// The dataset it concerns.
    pub dataset: Option<String>,
    /// The partition it concerns (its public id).
    pub partition: Option<String>,
    /// The stored detail (`null` when it is not JSON).
    pub detail: serde_json::Value,
    /// The token that made the request (admin requests).
    pub actor: Option<String>,
}

/// A recorded lifecycle run.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    /// The run's catalog id.
    pub id: i64,
    /// The report as recorded (`null` when it is not JSON).
    pub report: serde_json::Value,
}

/// Which audit events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// Only this dataset.
    pub dataset: Option<&'a str>,
    /// Only this partition (its public id).
    pub partition: Option<&'a str>,
    /// Only this kind.
    pub kind: Option<AuditKind>,
    /// Only events at or after this time, ns.
    pub since_ns: i64,
    /// At most this many.
    pub limit: usize,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

/// A lifecycle run to record.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Policy name.
    pub policy: String,
    /// Dataset name.
    pub dataset: String,
    /// Start, ns.
    pub started_at_ns: i64,
    /// The whole report.
    pub report: serde_json::Value,
}

impl Catalog {
    /// Records a lifecycle run and the audit events `events(run id)` makes
    /// for it, in one transaction; returns the run's id.
    pub fn record_run(
        &self,
        run: &RunRecord,
        events: impl FnOnce(i64) -> Vec<(String, serde_json::Value)>,
        now_ns: i64,
    ) -> Result<i64> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "INSERT INTO lifecycle_runs (policy, dataset, started_at_ns, report_json) VALUES (?1, ?2, ?3, ?4)",
            params![run.policy, run.dataset, run.started_at_ns, run.report.to_string()],
        )?;
        let id = tx.last_insert_rowid();
        {
            let mut insert = tx.prepare(INSERT_AUDIT)?;
            let kind = AuditKind::LifecycleDecision.as_str();
            for (partition, detail) in events(id) {
                insert.execute(params![now_ns, kind, run.dataset, partition, detail.to_string(), None::<&str>])?;
            }
        }
        // A run whose policy could not be evaluated or broke the contract
        // decided nothing; the refusal of its whole answer is audited too.
        if let Some(error) = run.report.get("error").and_then(|e| e.as_str()) {
            let detail = serde_json::json!({
                "run": id,
                "policy": run.policy,
                "component_sha256": run.report.get("component_sha256"),
                "input_sha256": run.report.get("input_sha256"),
                "now_ns": run.report.get("now_ns"),
                "error": error,
                "outcome": "refused",
            });
            let kind = AuditKind::LifecycleRunRefused.as_str();
            tx.execute(
                INSERT_AUDIT,
                params![now_ns, kind, run.dataset, None::<&str>, detail.to_string(), None::<&str>],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Recent lifecycle runs, newest first, optionally of one policy or dataset.
    pub fn runs(&self, policy: Option<&str>, dataset: Option<&str>, limit: usize) -> Result<Vec<StoredRun>> {
        self.runs_before(policy, dataset, None, limit)
    }

    /// [`Catalog::runs`] older than run `before` (a page continuing after it).
    pub fn runs_before(
        &self,
        policy: Option<&str>,
        dataset: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredRun>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT id, report_json FROM lifecycle_runs WHERE (?1 IS NULL OR policy = ?1) AND (?2 IS NULL OR dataset = ?2) \
             AND (?4 IS NULL OR id < ?4) ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = statement.query_map(params![policy, dataset, limit as i64, before], |row| {
            Ok(StoredRun { id: row.get(0)?, report: json_or_null(&row.get::<_, String>(1)?) })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One lifecycle run.
    pub fn run(&self, id: i64) -> Result<Option<StoredRun>> {
        let connection = self.lock();
        let text: Option<String> = connection
            .query_row("SELECT report_json FROM lifecycle_runs WHERE id = ?1", [id], |row| row.get(0))
            .optional()?;
        Ok(text.map(|text| StoredRun { id, report: json_or_null(&text) }))
    }

    /// Audit events, oldest first, filtered by dataset, kind and time.
    pub fn audit_events(&self, filter: &AuditFilter<'_>) -> Result<Vec<AuditEvent>> {
        self.audit_events_after(filter, None)
    }

    /// [`Catalog::audit_events`] listed after event `after` in the
    /// filter's order (a page continuing after it).
    pub fn audit_events_after(&self, filter: &AuditFilter<'_>, after: Option<i64>) -> Result<Vec<AuditEvent>> {
        let connection = self.lock();
        let (order, beyond) = if filter.newest_first { ("DESC", "<") } else { ("ASC", ">") };
        let mut statement = connection.prepare(&format!(
            "SELECT id, at_ns, kind, dataset, partition, detail_json, actor FROM audit_events \
             WHERE (?1 IS NULL OR dataset = ?1) AND (?2 IS NULL OR kind = ?2) AND at_ns >= ?3 \
               AND (?5 IS NULL OR partition = ?5) AND (?6 IS NULL OR id {beyond} ?6) ORDER BY id {order} LIMIT ?4"
        ))?;
        let kind = filter.kind.map(AuditKind::as_str);
        let parameters = params![filter.dataset, kind, filter.since_ns, filter.limit as i64, filter.partition, after];
        let rows = statement.query_map(parameters, |row| {
            Ok(AuditEvent {
                id: row.get(0)?,
                at_ns: row.get(1)?,
                kind: decode(row, 2, "audit kind", AuditKind::parse)?,
                dataset: row.get(3)?,
                partition: row.get(4)?,
                detail: json_or_null(&row.get::<_, String>(5)?),
                actor: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Appends an audit event.
    pub fn audit(
        &self,
        kind: AuditKind,
        dataset: Option<&str>,
        partition: Option<&str>,
        detail: &serde_json::Value,
        now_ns: i64,
    ) -> Result<()> {
        self.lock().execute(
            INSERT_AUDIT,
            params![now_ns, kind.as_str(), dataset, partition, detail.to_string(), None::<&str>],
        )?;
        Ok(())
    }

    /// Appends the audit event of an admin request, naming who made it.
    pub fn audit_request(
        &self,
        actor: &str,
        dataset: Option<&str>,
        detail: &serde_json::Value,
        now_ns: i64,
    ) -> Result<()> {
        let kind = AuditKind::AdminRequest.as_str();
        self.lock().execute(INSERT_AUDIT, params![now_ns, kind, dataset, None::<&str>, detail.to_string(), actor])?;
        Ok(())
    }
}

/// A stored JSON document, or `null` when it does not parse (the API shows
/// what there is rather than failing the whole listing).
fn json_or_null(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::catalog;

    #[test]
    fn audit_kinds_round_trip_and_an_unknown_stored_kind_is_corrupt() {
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(kind));
        }
        let (catalog, dir) = catalog();
        catalog.audit(AuditKind::Compaction, Some("cpu"), Some("cpu/x"), &serde_json::json!({ "a": 1 }), 5).unwrap();
        let all = AuditFilter { since_ns: i64::MIN, limit: 10, ..AuditFilter::default() };
        let events = catalog.audit_events(&all).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].kind, events[0].detail.clone()), (AuditKind::Compaction, serde_json::json!({ "a": 1 })));
        catalog.lock().execute("UPDATE audit_events SET kind = 'compacted'", []).unwrap();
        assert!(matches!(catalog.audit_events(&all), Err(crate::catalog::CatalogError::Corrupt(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
