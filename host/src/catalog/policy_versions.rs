//! Policy versions: one row per distinct (component, definition) pair a
//! policy was loaded with, so a rollback can name an earlier one and a
//! broken file falls back to the last good version.
//!
//! **Invariant:** at most one version of a policy is `active`; the
//! statements that activate one supersede the other in the same
//! transaction.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Catalog, Result, decode};

/// The state of one policy version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyVersionStatus {
    /// The version evaluations use (at most one per policy).
    Active,
    /// Was active once, replaced by another; a rollback target.
    Superseded,
    /// Failed to load (compile, type-check, validate-config, smoke test or
    /// canary).
    Failed,
    /// Was active, and its lifecycle runs kept failing until it was rolled
    /// back automatically. Stored as `failed` with an activation time (a
    /// load failure clears it).
    #[serde(rename = "rolled_back")]
    RolledBack,
}

impl PolicyVersionStatus {
    fn as_str(self) -> &'static str {
        match self {
            PolicyVersionStatus::Active => "active",
            PolicyVersionStatus::Superseded => "superseded",
            PolicyVersionStatus::Failed | PolicyVersionStatus::RolledBack => "failed",
        }
    }

    fn parse(raw: &str) -> Option<PolicyVersionStatus> {
        match raw {
            "active" => Some(PolicyVersionStatus::Active),
            "superseded" => Some(PolicyVersionStatus::Superseded),
            "failed" => Some(PolicyVersionStatus::Failed),
            _ => None,
        }
    }
}

/// A policy version row: one distinct (component, definition) pair of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVersionRecord {
    /// Policy name.
    pub policy: String,
    /// Per-policy sequence number, from 1.
    pub seq: i64,
    /// sha256 of the component bytes, hex.
    pub component_sha256: String,
    /// Digest of the definition (kind, datasets, schedule, limits, config).
    pub definition_sha256: String,
    /// Where the component came from (`builtin:NAME`, a path, `upload`).
    pub source: String,
    /// The policy definition as JSON.
    #[serde(skip)]
    pub definition_json: String,
    /// Active, superseded or failed.
    pub status: PolicyVersionStatus,
    /// Why the last load of this version failed.
    pub last_error: Option<String>,
    /// Last load attempt, ns.
    pub loaded_at_ns: i64,
    /// Last activation, ns.
    pub activated_at_ns: Option<i64>,
}

/// A load attempt to record.
#[derive(Debug, Clone)]
pub struct PolicyVersionAttempt<'a> {
    /// Policy name.
    pub policy: &'a str,
    /// sha256 of the component bytes.
    pub component_sha256: &'a str,
    /// Digest of the definition.
    pub definition_sha256: &'a str,
    /// Where the component came from.
    pub source: &'a str,
    /// The definition as JSON.
    pub definition_json: &'a str,
    /// `None` when it loaded and becomes active; the error otherwise.
    pub error: Option<&'a str>,
}

const POLICY_VERSION_COLUMNS: &str = "policy, seq, component_sha256, definition_sha256, source, definition_json, status, \
     last_error, loaded_at_ns, activated_at_ns";

fn policy_version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyVersionRecord> {
    let activated_at_ns: Option<i64> = row.get(9)?;
    Ok(PolicyVersionRecord {
        policy: row.get(0)?,
        seq: row.get(1)?,
        component_sha256: row.get(2)?,
        definition_sha256: row.get(3)?,
        source: row.get(4)?,
        definition_json: row.get(5)?,
        status: match (decode(row, 6, "policy version status", PolicyVersionStatus::parse)?, activated_at_ns) {
            (PolicyVersionStatus::Failed, Some(_)) => PolicyVersionStatus::RolledBack,
            (status, _) => status,
        },
        last_error: row.get(7)?,
        loaded_at_ns: row.get(8)?,
        activated_at_ns,
    })
}

impl Catalog {
    /// number. The same (component, definition) pair keeps its number. A
    /// success makes it the policy's only active version (the previous one
    /// becomes superseded); a failure marks it failed with the error and
    /// leaves the active version alone.
    pub fn record_policy_version(&self, attempt: &PolicyVersionAttempt<'_>, now_ns: i64) -> Result<i64> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT seq FROM policy_versions WHERE policy = ?1 AND component_sha256 = ?2 AND definition_sha256 = ?3",
                params![attempt.policy, attempt.component_sha256, attempt.definition_sha256],
                |row| row.get(0),
            )
            .optional()?;
        let seq = match existing {
            Some(seq) => seq,
            None => tx.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM policy_versions WHERE policy = ?1",
                [attempt.policy],
                |row| row.get(0),
            )?,
        };
        let (status, activated_at_ns) = match attempt.error {
            None => {
                tx.execute(
                    "UPDATE policy_versions SET status = 'superseded' WHERE policy = ?1 AND status = 'active' AND seq != ?2",
                    params![attempt.policy, seq],
                )?;
                (PolicyVersionStatus::Active, Some(now_ns))
            }
            Some(_) => (PolicyVersionStatus::Failed, None),
        };
        tx.execute(
            "INSERT INTO policy_versions (policy, seq, component_sha256, definition_sha256, source, definition_json, status, last_error, loaded_at_ns, activated_at_ns) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (policy, seq) DO UPDATE SET source = ?5, definition_json = ?6, status = ?7, last_error = ?8, \
               loaded_at_ns = ?9, activated_at_ns = CASE WHEN ?8 IS NULL THEN COALESCE(?10, activated_at_ns) END",
            params![
                attempt.policy,
                seq,
                attempt.component_sha256,
                attempt.definition_sha256,
                attempt.source,
                attempt.definition_json,
                status.as_str(),
                attempt.error,
                now_ns,
                activated_at_ns
            ],
        )?;
        tx.commit()?;
        Ok(seq)
    }

    /// Makes version `seq` of `policy` the active one (a rollback); the
    /// current active version becomes superseded.
    pub fn activate_policy_version(&self, policy: &str, seq: i64, now_ns: i64) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "UPDATE policy_versions SET status = 'superseded' WHERE policy = ?1 AND status = 'active' AND seq != ?2",
            params![policy, seq],
        )?;
        tx.execute(
            "UPDATE policy_versions SET status = 'active', last_error = NULL, activated_at_ns = ?3 WHERE policy = ?1 AND seq = ?2",
            params![policy, seq, now_ns],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records why a run of version `seq` failed, as its `last_error`.
    pub fn set_policy_version_error(&self, policy: &str, seq: i64, error: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE policy_versions SET last_error = ?3 WHERE policy = ?1 AND seq = ?2",
            params![policy, seq, error],
        )?;
        Ok(())
    }

    /// Rolls `policy` back from version `from` (marked failed with
    /// `error`; having been active, it reads as rolled back) to version
    /// `to` (active again), in one transaction.
    pub fn roll_back_policy_version(&self, policy: &str, from: i64, to: i64, error: &str, now_ns: i64) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "UPDATE policy_versions SET status = 'superseded' WHERE policy = ?1 AND status = 'active' AND seq != ?2",
            params![policy, to],
        )?;
        tx.execute(
            "UPDATE policy_versions SET status = 'failed', last_error = ?3 WHERE policy = ?1 AND seq = ?2",
            params![policy, from, error],
        )?;
        tx.execute(
            "UPDATE policy_versions SET status = 'active', last_error = NULL, activated_at_ns = ?3 WHERE policy = ?1 AND seq = ?2",
            params![policy, to, now_ns],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks the active version of a policy superseded (its file was removed).
    pub fn deactivate_policy(&self, policy: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE policy_versions SET status = 'superseded' WHERE policy = ?1 AND status = 'active'",
            [policy],
        )?;
        Ok(())
    }

    /// Every version of a policy, newest first.
    pub fn policy_versions(&self, policy: &str) -> Result<Vec<PolicyVersionRecord>> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!(
            "SELECT {POLICY_VERSION_COLUMNS} FROM policy_versions WHERE policy = ?1 ORDER BY seq DESC"
        ))?;
        let rows = statement.query_map([policy], policy_version_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Up to `limit` versions of a policy older than version `before`
    /// (all, without it), newest first: one page of the listing.
    pub fn policy_versions_before(
        &self,
        policy: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<PolicyVersionRecord>> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!(
            "SELECT {POLICY_VERSION_COLUMNS} FROM policy_versions WHERE policy = ?1 AND (?2 IS NULL OR seq < ?2) \
             ORDER BY seq DESC LIMIT ?3"
        ))?;
        let rows = statement.query_map(rusqlite::params![policy, before, limit as i64], policy_version_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::catalog;

    #[test]
    fn policy_versions_keep_one_active_and_reuse_numbers() {
        let (catalog, dir) = catalog();
        let attempt = |component: &'static str, error: Option<&'static str>| PolicyVersionAttempt {
            policy: "keep",
            component_sha256: component,
            definition_sha256: "d",
            source: "builtin:x",
            definition_json: "{}",
            error,
        };
        assert_eq!(catalog.record_policy_version(&attempt("a", None), 1).unwrap(), 1);
        assert_eq!(catalog.record_policy_version(&attempt("b", Some("boom")), 2).unwrap(), 2);
        assert_eq!(catalog.record_policy_version(&attempt("c", None), 3).unwrap(), 3);
        assert_eq!(catalog.record_policy_version(&attempt("a", None), 4).unwrap(), 1, "same content, same number");
        let versions = catalog.policy_versions("keep").unwrap();
        let statuses: Vec<(i64, PolicyVersionStatus)> = versions.iter().map(|v| (v.seq, v.status)).collect();
        assert_eq!(
            statuses,
            [(3, PolicyVersionStatus::Superseded), (2, PolicyVersionStatus::Failed), (1, PolicyVersionStatus::Active)]
        );
        assert_eq!(versions[1].last_error.as_deref(), Some("boom"));
        catalog.activate_policy_version("keep", 3, 5).unwrap();
        let active: Vec<i64> = catalog
            .policy_versions("keep")
            .unwrap()
            .iter()
            .filter(|v| v.status == PolicyVersionStatus::Active)
            .map(|v| v.seq)
            .collect();
        assert_eq!(active, [3]);
        catalog.deactivate_policy("keep").unwrap();
        assert!(catalog.policy_versions("keep").unwrap().iter().all(|v| v.status != PolicyVersionStatus::Active));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
