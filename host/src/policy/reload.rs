//! Reloading the policy directory: each file is read, parsed, compiled and
//! checked, and only a version that passes every check is swapped in; a
//! failure leaves the last good version serving and is recorded. At
//! start-up a policy whose file is broken falls back to the version the
//! catalog last had active, and a rollback re-activates a recorded version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use super::definition::{DefinitionError, PluginSource, PolicyDefinition};
use super::{FileError, LoadedVersion, PolicyEntry, PolicyError, PolicyRuntime, Step, TimedMessage, builtins, files};
use crate::catalog::{PolicyVersionAttempt, PolicyVersionRecord, PolicyVersionStatus};
use crate::facts::DatasetFacts;
use crate::sandbox::{CallContext, CompiledComponent, PolicyKind};
use crate::sync::{Recover as _, RecoverRw as _};
use crate::time::now_ns;

/// What a reload did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Policies whose new version is now active.
    pub activated: Vec<String>,
    /// Policies whose file and component did not change.
    pub unchanged: Vec<String>,
    /// Policies or files that failed, with the error (the last good version keeps serving).
    pub failed: Vec<FileError>,
    /// Policies whose file disappeared.
    pub removed: Vec<String>,
    /// How long the reload took, in ms.
    pub duration_ms: u64,
}

impl PolicyRuntime {
    /// Re-reads the policy directory. New or changed policies are loaded
    /// and, if every check passes, swapped in; unchanged ones are skipped;
    /// failures leave the last good version serving.
    pub fn reload(&self) -> ReloadReport {
        let _serialised = self.reload_lock.lock_or_recover();
        let started = Instant::now();
        self.reloads_total.fetch_add(1, Ordering::Relaxed);
        let mut report = ReloadReport::default();
        let mut file_errors = Vec::new();
        let mut seen: HashMap<String, PathBuf> = HashMap::new();

        for file in self.policy_files(&mut file_errors) {
            if let Err(error) = self.reload_file(&file, &mut seen, &mut report) {
                self.record_file_failure(&file, &error, &mut seen, &mut file_errors, &mut report);
            }
        }
        self.remove_policies_not_seen(&seen, &mut report);
        *self.file_errors.lock_or_recover() = file_errors;
        report.duration_ms = started.elapsed().as_millis() as u64;
        report
    }

    /// Records why `file` did not load: against its policy when the file
    /// is known to define one (the policy keeps its last good version),
    /// else as a file that defines no policy.
    fn record_file_failure(
        &self,
        file: &Path,
        error: &PolicyError,
        seen: &mut HashMap<String, PathBuf>,
        file_errors: &mut Vec<FileError>,
        report: &mut ReloadReport,
    ) {
        let message = error.to_string();
        let known = self.file_policies.lock_or_recover().get(file).cloned();
        match known.and_then(|name| self.entry(&name).ok()) {
            Some(entry) if !matches!(error, PolicyError::Duplicate { .. }) => {
                seen.insert(entry.name.clone(), file.to_path_buf());
                self.record_load_failure(&entry, &message);
                report.failed.push(FileError {
                    policy: Some(entry.name.clone()),
                    file: file.display().to_string(),
                    error: message,
                });
            }
            _ => {
                self.reload_failures_total.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %file.display(), error = %message, "policy file rejected");
                let error = FileError { policy: None, file: file.display().to_string(), error: message };
                file_errors.push(error.clone());
                report.failed.push(error);
            }
        }
    }

    /// Removes the policies whose file is gone.
    fn remove_policies_not_seen(&self, seen: &HashMap<String, PathBuf>, report: &mut ReloadReport) {
        let gone: Vec<Arc<PolicyEntry>> = self.entries().into_iter().filter(|e| !seen.contains_key(&e.name)).collect();
        for entry in gone {
            entry.active.store(None);
            if let Err(error) = self.catalog.deactivate_policy(&entry.name) {
                tracing::error!(policy = entry.name, %error, "cannot record a removed policy");
            }
            self.entries.write_or_recover().remove(&entry.name);
            tracing::info!(policy = entry.name, "policy removed: its file is gone");
            report.removed.push(entry.name.clone());
        }
    }

    fn policy_files(&self, file_errors: &mut Vec<FileError>) -> Vec<PathBuf> {
        let Some(directory) = &self.settings.directory else { return Vec::new() };
        files::policy_files(directory).unwrap_or_else(|error| {
            file_errors.push(FileError {
                policy: None,
                file: directory.display().to_string(),
                error: error.to_string(),
            });
            Vec::new()
        })
    }

    fn reload_file(
        &self,
        file: &Path,
        seen: &mut HashMap<String, PathBuf>,
        report: &mut ReloadReport,
    ) -> Result<(), PolicyError> {
        let definition = self.read_definition(file)?;
        if let Some(other) = seen.get(&definition.name) {
            return Err(PolicyError::Duplicate {
                policy: definition.name.clone(),
                file: file.display().to_string(),
                other: other.display().to_string(),
            });
        }
        seen.insert(definition.name.clone(), file.to_path_buf());
        self.file_policies.lock_or_recover().insert(file.to_path_buf(), definition.name.clone());
        let entry = {
            let mut entries = self.entries.write_or_recover();
            entries
                .entry(definition.name.clone())
                .or_insert_with(|| Arc::new(PolicyEntry::new(&definition.name)))
                .clone()
        };
        entry.state().definition = Some(definition.clone());
        self.sandbox.set_log_level(&definition.name, definition.log_level);
        let bytes = read_plugin(&definition, self.settings.limits.plugin_bytes_max)?;
        let fingerprint = (crate::digest::sha256_hex(&bytes), definition.digest());
        let serving = entry.active.load_full().is_some_and(|active| {
            active.component.sha256() == fingerprint.0 && active.definition.digest() == fingerprint.1
        });
        {
            let mut state = entry.state();
            let seen = state.last_seen.as_ref() == Some(&fingerprint);
            state.last_seen = Some(fingerprint);
            if seen || serving {
                // The file is what serves again: an error from an edit
                // since undone (a broken TOML) is stale.
                if serving {
                    state.load_error = None;
                }
                report.unchanged.push(definition.name);
                return Ok(());
            }
        }
        self.activate(&entry, definition, &bytes)?;
        report.activated.push(entry.name.clone());
        Ok(())
    }

    /// Reads and parses a policy file: a regular file of at most
    /// `policies.definition_bytes_max`, in UTF-8.
    fn read_definition(&self, file: &Path) -> Result<PolicyDefinition, PolicyError> {
        let error = |message: String| DefinitionError { file: file.display().to_string(), message };
        let limit = self.settings.limits.definition_bytes_max;
        let bytes =
            files::read_regular_file(file, limit, "policies.definition_bytes_max").map_err(|e| error(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| error(format!("not UTF-8: {e}")))?;
        // Errors may quote the file; a symlink may point at any file the
        // server can read, and errors are served over HTTP.
        Ok(PolicyDefinition::parse(file, &text).map_err(|parse_error| {
            if self.inside_policy_directory(file) {
                parse_error
            } else {
                error("is not a valid policy definition (the file lies outside the policy directory, so errors do not quote it)".into())
            }
        })?)
    }

    /// Whether `file`, symlinks resolved, lies in the policy directory.
    fn inside_policy_directory(&self, file: &Path) -> bool {
        let Some(directory) = &self.settings.directory else { return false };
        files::lies_inside(file, directory)
    }

    /// Loads, checks and swaps in a version; records the outcome either way.
    fn activate(&self, entry: &PolicyEntry, definition: PolicyDefinition, bytes: &[u8]) -> Result<(), PolicyError> {
        let source = definition.plugin.to_string();
        let definition_json = serde_json::to_string(&definition).expect("definitions serialize");
        let component_sha256 = crate::digest::sha256_hex(bytes);
        let digest = definition.digest();
        self.refuse_rolled_back(&definition.name, &component_sha256, &digest)?;
        let prepared = self.prepare(entry, &definition, bytes);
        let error = prepared.as_ref().err().map(ToString::to_string);
        let attempt = PolicyVersionAttempt {
            policy: &definition.name,
            component_sha256: &component_sha256,
            definition_sha256: &digest,
            source: &source,
            definition_json: &definition_json,
            error: error.as_deref(),
        };
        let seq = self.catalog.record_policy_version(&attempt, now_ns())?;
        let (component, partitioner_columns) = prepared?;
        if let Err(error) = self.sandbox.keep_source(&component_sha256, bytes) {
            tracing::warn!(policy = entry.name, %error, "cannot keep the component bytes; rollback to this version will not work");
        }
        let version = LoadedVersion { seq, definition, component, activated_at_ns: now_ns(), partitioner_columns };
        tracing::info!(
            policy = entry.name,
            seq,
            sha256 = %component_sha256,
            compiled = ?version.component.source(),
            "policy version active"
        );
        entry.active.store(Some(Arc::new(version)));
        entry.state().now_serving();
        Ok(())
    }

    /// Refuses to load again a version that was rolled back automatically
    /// (also after a restart): it stays out until the file or the
    /// component changes.
    fn refuse_rolled_back(&self, policy: &str, component_sha256: &str, digest: &str) -> Result<(), PolicyError> {
        let versions = self.catalog.policy_versions(policy)?;
        let rolled_back = versions.iter().find(|v| {
            v.status == PolicyVersionStatus::RolledBack
                && v.component_sha256 == component_sha256
                && v.definition_sha256 == digest
        });
        match rolled_back {
            None => Ok(()),
            Some(version) => Err(PolicyError::Version {
                policy: policy.to_string(),
                message: format!(
                    "version {} was rolled back automatically ({}); change the policy file or its component to load it again",
                    version.seq,
                    version.last_error.as_deref().unwrap_or("its runs kept failing")
                ),
            }),
        }
    }

    fn record_load_failure(&self, entry: &PolicyEntry, message: &str) {
        entry.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
        self.reload_failures_total.fetch_add(1, Ordering::Relaxed);
        let serving = entry.active.load().as_ref().map(|v| v.seq);
        tracing::error!(policy = entry.name, error = %message, serving_seq = ?serving, "policy reload failed; the last good version keeps serving");
        entry.state().load_error = Some(TimedMessage::now(message.to_string()));
    }

    /// Compiles and checks a component for `definition`: world and imports,
    /// `validate-config`, then a smoke evaluation (an empty partition list,
    /// or a one-record batch for a partitioner) whose answer must pass the
    /// contract checks, then (scheduled kinds) the canary over the real
    /// partitions. Returns the component and, for a partitioner, the
    /// columns it declares.
    fn prepare(
        &self,
        entry: &PolicyEntry,
        definition: &PolicyDefinition,
        bytes: &[u8],
    ) -> Result<(CompiledComponent, Vec<String>), PolicyError> {
        let policy = definition.name.clone();
        let component = self
            .sandbox
            .load(bytes, definition.kind)
            .map_err(|source| PolicyError::Component { policy: policy.clone(), source })?;
        let call = CallContext { policy: &policy, limits: &definition.limits };
        match component.validate_config(call, &definition.config_json) {
            Ok(Ok(())) => {}
            Ok(Err(problems)) => return Err(PolicyError::ConfigRejected { policy, problems }),
            Err(source) => return Err(PolicyError::Evaluation { policy, step: Step::ValidateConfig, source }),
        }
        let mut partitioner_columns = Vec::new();
        match definition.kind {
            PolicyKind::Partitioner => {
                let started = Instant::now();
                let outcome = component.partitioner_columns(call, &definition.config_json);
                self.count(entry, component.sha256(), started, outcome.as_ref().err(), Step::Columns);
                partitioner_columns = outcome.map_err(|source| PolicyError::Evaluation {
                    policy: policy.clone(),
                    step: Step::Columns,
                    source,
                })?;
                self.call_partition(entry, &component, definition, (&[], 1), Step::Smoke)?;
            }
            _ => {
                let dataset = DatasetFacts {
                    name: "smoke-test".into(),
                    period: "day".into(),
                    time_column: "time".into(),
                    columns: vec![("time".into(), crate::schema::ColumnKind::Time)],
                };
                self.call_scheduled(entry, &component, definition, (now_ns(), &dataset, &[]), Step::Smoke)?;
                self.canary(entry, &component, definition)?;
            }
        }
        Ok((component, partitioner_columns))
    }

    /// When a policy has no working version (typically at start-up with a
    /// broken file), loads the version the catalog last had active.
    pub(super) fn restore_from_catalog(&self, name: &str) {
        let Ok(entry) = self.entry(name) else { return };
        if entry.active.load().is_some() {
            return;
        }
        let versions = match self.catalog.policy_versions(name) {
            Ok(versions) => versions,
            Err(error) => {
                tracing::error!(policy = name, %error, "cannot read policy versions");
                return;
            }
        };
        let Some(record) = versions.iter().find(|v| v.status == PolicyVersionStatus::Active) else { return };
        match self.load_record(&entry, record) {
            Ok(version) => {
                tracing::warn!(
                    policy = name,
                    seq = record.seq,
                    "policy file is broken; serving the last good version from the catalog"
                );
                entry.active.store(Some(Arc::new(version)));
            }
            Err(error) => {
                tracing::error!(policy = name, seq = record.seq, %error, "cannot restore the last good version")
            }
        }
    }

    pub(super) fn load_record(
        &self,
        entry: &PolicyEntry,
        record: &PolicyVersionRecord,
    ) -> Result<LoadedVersion, PolicyError> {
        let version_error = |message: String| PolicyError::Version { policy: record.policy.clone(), message };
        let definition: PolicyDefinition = serde_json::from_str(&record.definition_json)
            .map_err(|e| version_error(format!("version {} has an unreadable definition: {e}", record.seq)))?;
        let bytes = match &definition.plugin {
            PluginSource::Builtin(name) => builtins::component(name)
                .filter(|bytes| crate::digest::sha256_hex(bytes) == record.component_sha256)
                .map(<[u8]>::to_vec),
            PluginSource::File(_) => None,
        }
        .or_else(|| self.sandbox.kept_source(&record.component_sha256))
        .ok_or_else(|| version_error(format!("the component of version {} is no longer available", record.seq)))?;
        let (component, partitioner_columns) = self.prepare(entry, &definition, &bytes)?;
        Ok(LoadedVersion { seq: record.seq, definition, component, activated_at_ns: now_ns(), partitioner_columns })
    }

    /// Makes an earlier good version active again: `seq`, or by default the
    /// newest superseded version older than the active one. It stays active
    /// until the policy file or its component changes.
    pub fn rollback(&self, name: &str, seq: Option<i64>) -> Result<(Option<i64>, i64), PolicyError> {
        let _serialised = self.reload_lock.lock_or_recover();
        let entry = self.entry(name)?;
        let current = entry.active.load_full().map(|v| v.seq);
        let versions = self.catalog.policy_versions(name)?;
        let version_error = |message: String| PolicyError::Version { policy: name.to_string(), message };
        let record = match seq {
            Some(seq) => {
                let record = versions
                    .iter()
                    .find(|v| v.seq == seq)
                    .ok_or_else(|| version_error(format!("has no version {seq}")))?;
                if record.status == PolicyVersionStatus::Failed {
                    return Err(version_error(format!(
                        "version {seq} failed to load ({}) and cannot be rolled back to",
                        record.last_error.as_deref().unwrap_or("unknown error")
                    )));
                }
                record
            }
            None => versions
                .iter()
                .filter(|v| v.status == PolicyVersionStatus::Superseded)
                .find(|v| current.is_none_or(|current| v.seq < current))
                .ok_or_else(|| version_error("has no earlier good version to roll back to".into()))?,
        };
        if Some(record.seq) == current {
            return Ok((current, record.seq));
        }
        let version = self.load_record(&entry, record)?;
        self.catalog.activate_policy_version(name, record.seq, now_ns())?;
        tracing::info!(policy = name, from = ?current, to = record.seq, "policy rolled back");
        entry.active.store(Some(Arc::new(version)));
        entry.state().now_serving();
        Ok((current, record.seq))
    }
}

/// The component bytes of `definition`: a built-in, or a regular file of at
/// most `plugin_bytes_max` (wherever the path points: `/dev/zero` or a FIFO
/// is refused, not read).
fn read_plugin(definition: &PolicyDefinition, plugin_bytes_max: u64) -> Result<Vec<u8>, PolicyError> {
    let error = |message: String| PolicyError::Plugin {
        policy: definition.name.clone(),
        plugin: definition.plugin.to_string(),
        message,
    };
    match &definition.plugin {
        PluginSource::Builtin(name) => {
            builtins::component(name).map(<[u8]>::to_vec).ok_or_else(|| error("no such built-in".into()))
        }
        PluginSource::File(path) => files::read_regular_file(path, plugin_bytes_max, "policies.plugin_bytes_max")
            .map_err(|e| error(e.to_string())),
    }
}
