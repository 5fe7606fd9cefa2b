//! A compiled component checked against its world, and the typed calls
//! into it: each call is a fresh Store with the call's limits, an
//! instantiation from the prepared `InstancePre`, the call, and the answer
//! measured against the output limits and lifted into plain values.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store};

use super::bindings;
use super::bindings::shared::strata::policy::types as wit;
use super::convert::{
    PartitionColumns, TextColumn, archive_decisions, column_infos_to_wit, column_to_wit, dataset_to_wit, keys_from_wit,
    retention_decisions, tier_decisions,
};
use super::error::{Result, SandboxError};
use super::limits::{self, GuestLimiter, PolicyLimits, Ticking, check_output, string_bytes};
use super::wasi::{CAPTURED_OUTPUT_BYTES_MAX, CapturedOutput, GuestIdentity, GuestLogLevels, GuestState};
use crate::facts::{ArchiveDecision, ColumnBatch, DatasetFacts, PartitionFacts, RetentionDecision, TierDecision};

/// Which world a policy implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Assigns partition keys on the write path.
    Partitioner,
    /// Decides which partitions to delete.
    Retention,
    /// Decides which tier partitions belong in.
    Tiering,
    /// Decides which partitions to archive.
    Archival,
}

impl PolicyKind {
    /// Every kind.
    pub const ALL: [PolicyKind; 4] =
        [PolicyKind::Partitioner, PolicyKind::Retention, PolicyKind::Tiering, PolicyKind::Archival];

    /// The kind's name, which is also its WIT world's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Partitioner => "partitioner",
            PolicyKind::Retention => "retention",
            PolicyKind::Tiering => "tiering",
            PolicyKind::Archival => "archival",
        }
    }

    /// Parses a kind name.
    pub fn parse(raw: &str) -> Option<PolicyKind> {
        PolicyKind::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }
}

/// The prepared instance of one world.
pub(super) enum WorldPre {
    Partitioner(bindings::partitioner::PartitionerPre<GuestState>),
    Retention(bindings::retention::RetentionPre<GuestState>),
    Tiering(bindings::tiering::TieringPre<GuestState>),
    Archival(bindings::archival::ArchivalPre<GuestState>),
}

/// Types `instance_pre` as `kind`'s world: refused as the wrong world when
/// an export that world needs is missing or has another signature.
pub(super) fn prepare_world(instance_pre: InstancePre<GuestState>, kind: PolicyKind) -> Result<WorldPre> {
    let wrong_world = |e: wasmtime::Error| SandboxError::WrongWorld { world: kind.as_str(), reason: format!("{e:#}") };
    Ok(match kind {
        PolicyKind::Partitioner => {
            WorldPre::Partitioner(bindings::partitioner::PartitionerPre::new(instance_pre).map_err(wrong_world)?)
        }
        PolicyKind::Retention => {
            WorldPre::Retention(bindings::retention::RetentionPre::new(instance_pre).map_err(wrong_world)?)
        }
        PolicyKind::Tiering => {
            WorldPre::Tiering(bindings::tiering::TieringPre::new(instance_pre).map_err(wrong_world)?)
        }
        PolicyKind::Archival => {
            WorldPre::Archival(bindings::archival::ArchivalPre::new(instance_pre).map_err(wrong_world)?)
        }
    })
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompileSource {
    /// Compiled by Cranelift now (and written to the cache).
    Compiled,
    /// Loaded from the on-disk cache.
    Cache,
}

/// A component compiled, checked against its world and ready to be
/// instantiated. Cheap to share: evaluations only read it.
pub struct CompiledComponent {
    kind: PolicyKind,
    sha256: String,
    pre: WorldPre,
    source: CompileSource,
    log_levels: GuestLogLevels,
    /// Where calls say they are in progress, so the epoch advances.
    ticking: Arc<Ticking>,
}

impl std::fmt::Debug for CompiledComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledComponent")
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Who is calling, with which limits: names the policy in logs and errors.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The policy's name.
    pub policy: &'a str,
    /// Its limits.
    pub limits: &'a PolicyLimits,
}

impl CompiledComponent {
    /// A component of the bytes with `sha256`, typed as `kind`'s world.
    pub(super) fn new(
        kind: PolicyKind,
        sha256: String,
        pre: WorldPre,
        source: CompileSource,
        log_levels: GuestLogLevels,
        ticking: Arc<Ticking>,
    ) -> CompiledComponent {
        CompiledComponent { kind, sha256, pre, source, log_levels, ticking }
    }

    /// The world it implements.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// sha256 of the component bytes, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether it was compiled now or loaded from the cache.
    pub fn source(&self) -> CompileSource {
        self.source
    }

    fn engine(&self) -> &Engine {
        match &self.pre {
            WorldPre::Partitioner(pre) => pre.engine(),
            WorldPre::Retention(pre) => pre.engine(),
            WorldPre::Tiering(pre) => pre.engine(),
            WorldPre::Archival(pre) => pre.engine(),
        }
    }

    /// Calls `validate-config`: `Ok(Err(problems))` when the guest rejects
    /// the config.
    pub fn validate_config(&self, call: CallContext<'_>, config: &str) -> Result<Result<(), Vec<String>>> {
        let answer = self.run(call, |store, pre| match pre {
            WorldPre::Partitioner(pre) => pre.instantiate(&mut *store)?.call_validate_config(&mut *store, config),
            WorldPre::Retention(pre) => pre.instantiate(&mut *store)?.call_validate_config(&mut *store, config),
            WorldPre::Tiering(pre) => pre.instantiate(&mut *store)?.call_validate_config(&mut *store, config),
            WorldPre::Archival(pre) => pre.instantiate(&mut *store)?.call_validate_config(&mut *store, config),
        })?;
        if let Err(problems) = &answer {
            let bytes: usize = problems.iter().map(String::len).sum();
            check_output(call.limits, problems.len(), bytes)?;
        }
        Ok(answer)
    }

    /// Calls a retention policy's `evaluate`.
    pub fn evaluate_retention(
        &self,
        call: CallContext<'_>,
        now_ns: i64,
        config: &str,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Vec<RetentionDecision>> {
        let WorldPre::Retention(pre) = &self.pre else { return Err(self.not_a(PolicyKind::Retention)) };
        let columns = column_infos_to_wit(dataset);
        let facts = PartitionColumns::new(partitions)?;
        let (dataset, facts) = (dataset_to_wit(dataset, &columns), facts.to_wit());
        let answer = self.run(call, |store, _| {
            pre.instantiate(&mut *store)?.call_evaluate(&mut *store, now_ns, config, dataset, facts)
        })?;
        check_output(call.limits, answer.decisions.len(), string_bytes(&answer.reasons))?;
        retention_decisions(&answer, partitions)
    }

    /// Calls a tiering policy's `evaluate`.
    pub fn evaluate_tiering(
        &self,
        call: CallContext<'_>,
        now_ns: i64,
        config: &str,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Vec<TierDecision>> {
        let WorldPre::Tiering(pre) = &self.pre else { return Err(self.not_a(PolicyKind::Tiering)) };
        let columns = column_infos_to_wit(dataset);
        let facts = PartitionColumns::new(partitions)?;
        let (dataset, facts) = (dataset_to_wit(dataset, &columns), facts.to_wit());
        let answer = self.run(call, |store, _| {
            pre.instantiate(&mut *store)?.call_evaluate(&mut *store, now_ns, config, dataset, facts)
        })?;
        check_output(call.limits, answer.decisions.len(), string_bytes(&answer.reasons))?;
        tier_decisions(&answer, partitions)
    }

    /// Calls an archival policy's `evaluate`.
    pub fn evaluate_archival(
        &self,
        call: CallContext<'_>,
        now_ns: i64,
        config: &str,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Vec<ArchiveDecision>> {
        let WorldPre::Archival(pre) = &self.pre else { return Err(self.not_a(PolicyKind::Archival)) };
        let columns = column_infos_to_wit(dataset);
        let facts = PartitionColumns::new(partitions)?;
        let (dataset, facts) = (dataset_to_wit(dataset, &columns), facts.to_wit());
        let answer = self.run(call, |store, _| {
            pre.instantiate(&mut *store)?.call_evaluate(&mut *store, now_ns, config, dataset, facts)
        })?;
        let targets: usize = answer.decisions.iter().map(|d| d.target.len()).sum();
        check_output(call.limits, answer.decisions.len(), string_bytes(&answer.reasons) + targets)?;
        archive_decisions(answer, partitions)
    }

    /// Calls a partitioner's `columns`: the columns `partition` needs.
    pub fn partitioner_columns(&self, call: CallContext<'_>, config: &str) -> Result<Vec<String>> {
        let WorldPre::Partitioner(pre) = &self.pre else { return Err(self.not_a(PolicyKind::Partitioner)) };
        let columns = self.run(call, |store, _| pre.instantiate(&mut *store)?.call_columns(&mut *store, config))?;
        check_output(call.limits, columns.len(), string_bytes(&columns))?;
        Ok(columns)
    }

    /// Calls a partitioner's `partition` on a batch of `rows` records: one
    /// result per record, its key or why it cannot be keyed.
    pub fn partition(
        &self,
        call: CallContext<'_>,
        config: &str,
        columns: &[ColumnBatch],
        rows: u32,
    ) -> Result<Vec<Result<String, String>>> {
        let WorldPre::Partitioner(pre) = &self.pre else { return Err(self.not_a(PolicyKind::Partitioner)) };
        let texts = columns.iter().map(TextColumn::new).collect::<Result<Vec<_>>>()?;
        let columns: Vec<wit::Column<'_>> =
            columns.iter().zip(&texts).map(|(column, texts)| column_to_wit(column, texts)).collect();
        let answer = self
            .run(call, |store, _| pre.instantiate(&mut *store)?.call_partition(&mut *store, config, &columns, rows))?;
        let messages: usize = answer.rejected.iter().map(|r| r.message.len()).sum();
        let results = answer.record_keys.len().max(answer.rejected.len());
        check_output(call.limits, results, string_bytes(&answer.keys) + messages)?;
        keys_from_wit(answer, rows as usize)
    }

    fn not_a(&self, wanted: PolicyKind) -> SandboxError {
        SandboxError::Internal(format!("a {} component was called as a {} policy", self.kind.as_str(), wanted.as_str()))
    }

    /// Runs `body` in a fresh Store with the call's limits, classifies any
    /// failure, and forwards what the guest printed to the log. A trap's
    /// error quotes what the guest last wrote to stderr (a Rust guest's
    /// panic message).
    fn run<T>(
        &self,
        call: CallContext<'_>,
        body: impl FnOnce(&mut Store<GuestState>, &WorldPre) -> wasmtime::Result<T>,
    ) -> Result<T> {
        let stdout = CapturedOutput::new(CAPTURED_OUTPUT_BYTES_MAX);
        let stderr = CapturedOutput::new(CAPTURED_OUTPUT_BYTES_MAX);
        let version = self.sha256.get(..12).unwrap_or(&self.sha256);
        let identity = GuestIdentity { policy: call.policy, version, log_level: self.log_levels.get(call.policy) };
        let state = GuestState::new(identity, GuestLimiter::new(call.limits), &stdout, &stderr);
        let mut store = Store::new(self.engine(), state);
        // Before the deadline is set: it counts ticks from now.
        let _ticking = self.ticking.call();
        limits::limit_store(&mut store, call.limits, |state: &mut GuestState| &mut state.limiter)?;

        let started = Instant::now();
        let outcome = body(&mut store, &self.pre);
        let elapsed = started.elapsed();
        stdout.forward_to_log(call.policy, version);
        stderr.forward_to_log(call.policy, version);
        store.data().report_dropped_logs();
        outcome.map_err(|error| match limits::classify(error, &store.data().limiter, call.limits, elapsed) {
            SandboxError::Trap(trap) => match stderr.guest_message() {
                Some(message) => SandboxError::Trap(format!("{message} ({trap})")),
                None => SandboxError::Trap(trap),
            },
            other => other,
        })
    }
}
