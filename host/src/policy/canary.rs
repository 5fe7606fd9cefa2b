//! Guarding activation with real data: the canary evaluates a new version
//! of a retention, tiering or archival policy (dry) on the partitions of
//! the datasets it binds before it may serve, and a serving version whose
//! lifecycle runs keep failing is rolled back automatically to the last
//! good one.
//!
//! The policy runtime sits below the store, so it cannot read partitions
//! itself: the layer that can (the lifecycle) hands it a [`CanaryFacts`]
//! once the store is open. Until then (start-up) there is no canary.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::definition::PolicyDefinition;
use super::{LoadedVersion, PolicyEntry, PolicyError, PolicyRuntime, Step};
use crate::catalog::{AuditKind, PolicyVersionStatus};
use crate::facts::{DatasetFacts, PartitionFacts};
use crate::sandbox::CompiledComponent;
use crate::sync::{Recover as _, RecoverRw as _};
use crate::time::{now_ns, rfc3339};

/// One dataset and its partitions' facts, as a run gives them to a policy.
pub type DatasetInput = (DatasetFacts, Arc<Vec<PartitionFacts>>);

/// The facts a scheduled run would give a policy, built by a layer that
/// can read the store: one entry per dataset `binds` accepts. Blocking.
pub trait CanaryFacts: Send + Sync + std::fmt::Debug {
    /// Every dataset `binds` accepts with its partitions' facts.
    fn bound_datasets(&self, binds: &dyn Fn(&str) -> bool) -> Result<Vec<DatasetInput>, String>;
}

/// An automatic rollback, as `/health/lifecycle`, the policy detail and
/// the `policy_auto_rollback` audit event show it.
#[derive(Debug, Clone, Serialize)]
pub struct AutoRollback {
    /// The policy.
    pub policy: String,
    /// The version that kept failing (now `rolled_back`).
    pub from_seq: i64,
    /// Its component sha256.
    pub from_component_sha256: String,
    /// The version serving again.
    pub to_seq: i64,
    /// Its component sha256.
    pub to_component_sha256: String,
    /// Runs that failed in a row.
    pub failed_runs: u32,
    /// The last run's error.
    pub error: String,
    /// When, RFC 3339.
    pub at: String,
}

impl PolicyRuntime {
    /// Installs the canary's facts provider: from now on, a reload or a
    /// rollback evaluates the version on the real partitions first.
    pub fn set_canary_facts(&self, facts: Arc<dyn CanaryFacts>) {
        *self.canary_facts.write_or_recover() = Some(facts);
    }

    /// Evaluates `component` (dry) over the partitions of every dataset
    /// `definition` binds, as a run would; a trap, a limit or a contract
    /// violation fails the load. Datasets without partitions are skipped
    /// (the smoke evaluation covered that case).
    pub(super) fn canary(
        &self,
        entry: &PolicyEntry,
        component: &CompiledComponent,
        definition: &PolicyDefinition,
    ) -> Result<(), PolicyError> {
        let Some(provider) = self.canary_facts.read_or_recover().clone() else { return Ok(()) };
        let datasets = match provider.bound_datasets(&|dataset| definition.applies_to(dataset)) {
            Ok(datasets) => datasets,
            Err(error) => {
                tracing::warn!(policy = entry.name, %error, "cannot read the partitions for the canary; skipped");
                return Ok(());
            }
        };
        let now = now_ns();
        for (dataset, partitions) in datasets.iter().filter(|(_, partitions)| !partitions.is_empty()) {
            let inputs = (now, dataset, partitions.as_slice());
            if let Err(error) = self.call_scheduled(entry, component, definition, inputs, Step::Canary) {
                tracing::warn!(policy = entry.name, dataset = dataset.name, %error, "canary failed");
                return Err(error);
            }
        }
        Ok(())
    }

    /// Records the outcome of a lifecycle run of `name` made by the version
    /// `component_sha256`: a failure is the version's `last_error`, and
    /// after `rollback_after` failures in a row of the serving version
    /// (0 = never) the last good version is activated again. Returns the
    /// rollback when one happened. Blocking (catalog, compile).
    pub fn record_run_outcome(
        &self,
        name: &str,
        component_sha256: &str,
        error: Option<&str>,
        rollback_after: u32,
    ) -> Option<AutoRollback> {
        let (entry, active) = self.active(name).ok()?;
        if active.component.sha256() != component_sha256 {
            return None; // a run of a version no longer serving
        }
        let failed_runs = {
            let mut state = entry.state();
            state.failed_runs = if error.is_some() { state.failed_runs.saturating_add(1) } else { 0 };
            state.failed_runs
        };
        let error = error?;
        if let Err(catalog_error) = self.catalog.set_policy_version_error(name, active.seq, error) {
            tracing::error!(policy = name, error = %catalog_error, "cannot record a failed run on its version");
        }
        if rollback_after == 0 || failed_runs < rollback_after {
            return None;
        }
        match self.auto_rollback(&entry, &active, failed_runs, error) {
            Ok(rollback) => Some(rollback),
            Err(rollback_error) => {
                tracing::error!(policy = name, failed_runs, error = %rollback_error, "automatic rollback impossible");
                None
            }
        }
    }

    /// Swaps the most recently active good version back in place of
    /// `failing`, marks `failing` rolled back, and audits it.
    fn auto_rollback(
        &self,
        entry: &PolicyEntry,
        failing: &LoadedVersion,
        failed_runs: u32,
        error: &str,
    ) -> Result<AutoRollback, PolicyError> {
        let _serialised = self.reload_lock.lock_or_recover();
        let version_error =
            |message: &str| PolicyError::Version { policy: entry.name.clone(), message: message.into() };
        if entry.active.load().as_ref().map(|v| v.seq) != Some(failing.seq) {
            return Err(version_error("changed while its rollback was prepared"));
        }
        let versions = self.catalog.policy_versions(&entry.name)?;
        let record = versions
            .iter()
            .filter(|v| v.status == PolicyVersionStatus::Superseded && v.seq != failing.seq)
            .max_by_key(|v| (v.activated_at_ns, v.seq))
            .ok_or_else(|| version_error("has no earlier good version to roll back to"))?;
        let version = self.load_record(entry, record)?;
        let message = format!("rolled back automatically after {failed_runs} failed run(s) in a row: {error}");
        self.catalog.roll_back_policy_version(&entry.name, failing.seq, record.seq, &message, now_ns())?;
        let rollback = AutoRollback {
            policy: entry.name.clone(),
            from_seq: failing.seq,
            from_component_sha256: failing.component.sha256().to_string(),
            to_seq: record.seq,
            to_component_sha256: record.component_sha256.clone(),
            failed_runs,
            error: error.to_string(),
            at: rfc3339(now_ns()),
        };
        entry.active.store(Some(Arc::new(version)));
        {
            let mut state = entry.state();
            state.now_serving();
            state.auto_rollback = Some(rollback.clone());
        }
        self.auto_rollbacks_total.fetch_add(1, Ordering::Relaxed);
        let detail = serde_json::to_value(&rollback).unwrap_or_default();
        if let Err(audit_error) = self.catalog.audit(AuditKind::PolicyAutoRollback, None, None, &detail, now_ns()) {
            tracing::error!(policy = entry.name, error = %audit_error, "cannot audit an automatic rollback");
        }
        tracing::warn!(
            policy = entry.name,
            from = failing.seq,
            to = record.seq,
            failed_runs,
            error,
            "policy rolled back automatically: its runs kept failing"
        );
        Ok(rollback)
    }

    /// The last automatic rollback of every policy that had one.
    pub fn auto_rollbacks(&self) -> Vec<AutoRollback> {
        self.entries().iter().filter_map(|entry| entry.state().auto_rollback.clone()).collect()
    }
}
