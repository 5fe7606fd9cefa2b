//! Dataset administration on the store: a dataset defined with its settings
//! before any write (`PUT`), the settings that can change changed (`PATCH`),
//! each setting resolved, and schema changes (rename, drop, cast a column).
//!
//! Resolution, for every setting: what an operator set through the API
//! (the catalog's `dataset_settings`) wins; else `[datasets.<name>]` in the
//! TOML; else the server-wide default (`ingest.*`, `lifecycle.*`). A TOML
//! change therefore reaches every dataset that never had the setting set
//! through the API. The period and the time column are fixed when the
//! dataset is created (from the API, else the TOML); a new period is a new
//! partition spec, effective from the first instant that starts a bucket of
//! both the old and the new period, so no partition straddles the change:
//! rows before it keep going to partitions of the old period (and its
//! seals), rows from it on to the new one's. The time column never changes.

use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::{DatasetState, Store};
use crate::catalog::{DatasetAdmin, DatasetOverrides};
use crate::config::LateRows;
use crate::error::{ErrorCode, Failure};
use crate::names::DatasetName;
use crate::period::{Period, Periods};
use crate::schema::{ChangeRefused, SchemaChange};
use crate::sync::RecoverRw as _;
use crate::time::now_ns;

/// The settings of a `PUT` or `PATCH`: `None` leaves a setting as it is
/// (or, on creation, to the TOML).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetDefinition {
    /// The partition period.
    pub period: Option<Period>,
    /// The time column (creation only).
    pub time_column: Option<String>,
    /// `refuse_request` or `refuse_rows`.
    pub late_rows: Option<String>,
    /// Whether the dataset is compacted.
    pub compaction: Option<bool>,
    /// The minimum retention before a delete, ms.
    pub min_retention_ms: Option<u64>,
}

impl DatasetDefinition {
    fn overrides(&self) -> DatasetOverrides {
        DatasetOverrides {
            late_rows: self.late_rows.clone(),
            compaction: self.compaction,
            min_retention_ms: self.min_retention_ms,
        }
    }
}

impl DatasetState {
    /// The operator settings and partition specs.
    pub fn admin(&self) -> Arc<DatasetAdmin> {
        self.admin.read_or_recover().clone()
    }

    pub(super) fn set_admin(&self, admin: DatasetAdmin) {
        *self.admin.write_or_recover() = Arc::new(admin);
    }

    /// The partition specs the write path routes by.
    pub fn periods(&self) -> Periods {
        self.admin().periods()
    }
}

fn parse_late_rows(raw: &str) -> Result<LateRows, Failure> {
    serde_json::from_value(json!(raw)).map_err(|_| {
        Failure::new(ErrorCode::BadRequest, format!("late_rows = {raw:?}: expected refuse_request or refuse_rows"))
    })
}

fn late_rows_str(late_rows: LateRows) -> &'static str {
    match late_rows {
        LateRows::RefuseRequest => "refuse_request",
        LateRows::RefuseRows => "refuse_rows",
    }
}

/// Checks the values a definition sets, before anything is stored.
fn check(definition: &DatasetDefinition) -> Result<(), Failure> {
    if let Some(raw) = &definition.late_rows {
        parse_late_rows(raw)?;
    }
    if let Some(column) = &definition.time_column {
        crate::names::check_column_name(column)
            .map_err(|e| Failure::new(ErrorCode::BadRequest, format!("time_column: {e}")))?;
    }
    Ok(())
}

impl Store {
    /// What a write to `dataset` does with rows for sealed partitions.
    pub fn late_rows(&self, dataset: &DatasetState) -> LateRows {
        let set = dataset.admin().overrides.late_rows.clone();
        set.and_then(|raw| parse_late_rows(&raw).ok()).unwrap_or_else(|| self.config.late_rows(&dataset.name))
    }

    /// Whether `dataset` may be compacted.
    pub fn compaction_enabled(&self, dataset: &str) -> bool {
        let set = self.dataset(dataset).and_then(|d| d.admin().overrides.compaction);
        set.or_else(|| self.config.datasets.get(dataset).and_then(|d| d.compaction))
            .unwrap_or(self.config.lifecycle.compaction.enabled)
    }

    /// The minimum retention before a delete of `dataset`'s partitions, ms.
    pub fn min_retention_ms(&self, dataset: &str) -> u64 {
        let set = self.dataset(dataset).and_then(|d| d.admin().overrides.min_retention_ms);
        set.or_else(|| self.config.datasets.get(dataset).and_then(|d| d.min_retention_ms))
            .unwrap_or(self.config.lifecycle.min_retention_ms)
    }

    /// Every setting of a dataset as it applies now, and where each comes
    /// from (`api`, `toml` or `default`).
    pub fn effective_settings(&self, dataset: &DatasetState) -> Json {
        let admin = dataset.admin();
        let toml = self.config.datasets.get(dataset.name.as_str());
        let source = |api: bool, in_toml: bool| {
            if api {
                "api"
            } else if in_toml {
                "toml"
            } else {
                "default"
            }
        };
        let (_, period) = admin.periods().latest();
        json!({
            "settings": {
                "period": period.as_str(),
                "time_column": dataset.record.time_column,
                "late_rows": late_rows_str(self.late_rows(dataset)),
                "compaction": self.compaction_enabled(dataset.name.as_str()),
                "min_retention_ms": self.min_retention_ms(dataset.name.as_str()),
            },
            "settings_source": {
                "late_rows": source(admin.overrides.late_rows.is_some(), toml.is_some_and(|d| d.late_rows.is_some())),
                "compaction": source(admin.overrides.compaction.is_some(), toml.is_some_and(|d| d.compaction.is_some())),
                "min_retention_ms": source(
                    admin.overrides.min_retention_ms.is_some(),
                    toml.is_some_and(|d| d.min_retention_ms.is_some())
                ),
            },
        })
    }

    /// The settings of `definition` that differ from how `dataset` is now.
    fn differences(&self, dataset: &DatasetState, definition: &DatasetDefinition) -> Vec<&'static str> {
        let mut differ = Vec::new();
        let set = definition.overrides();
        if definition.period.is_some_and(|period| period != dataset.periods().latest().1) {
            differ.push("period");
        }
        if definition.time_column.as_ref().is_some_and(|column| *column != dataset.record.time_column) {
            differ.push("time_column");
        }
        if set.late_rows.as_deref().is_some_and(|raw| raw != late_rows_str(self.late_rows(dataset))) {
            differ.push("late_rows");
        }
        if set.compaction.is_some_and(|on| on != self.compaction_enabled(dataset.name.as_str())) {
            differ.push("compaction");
        }
        if set.min_retention_ms.is_some_and(|ms| ms != self.min_retention_ms(dataset.name.as_str())) {
            differ.push("min_retention_ms");
        }
        differ
    }

    /// `PUT /v1/datasets/{ds}`: creates the dataset with its settings
    /// (`true`), or finds it with the same settings (`false`); one with
    /// other settings is 409 `dataset_exists`, naming them.
    pub async fn define_dataset(
        self: &Arc<Self>,
        name: &DatasetName,
        definition: DatasetDefinition,
    ) -> Result<(Arc<DatasetState>, bool), Failure> {
        check(&definition)?;
        let _guard = self.create_dataset.lock().await;
        if let Some(dataset) = self.dataset(name.as_str()) {
            let differ = self.differences(&dataset, &definition);
            if differ.is_empty() {
                return Ok((dataset, false));
            }
            return Err(Failure::new(
                ErrorCode::DatasetExists,
                format!("dataset {name} exists with other settings: {} (PATCH changes them)", differ.join(", ")),
            )
            .with_detail(json!({ "differing": differ })));
        }
        self.refuse_deleting(name)?;
        self.check_dataset_count()?;
        let (default_period, default_time_column) = self.config.dataset_settings(name);
        let period = definition.period.unwrap_or(default_period);
        let (owned, overrides) = (name.clone(), definition.overrides());
        let time_column = definition.time_column.unwrap_or(default_time_column);
        let stored = overrides.clone();
        let record = self
            .catalog
            .call(move |c| c.define_dataset(owned.as_str(), period, &time_column, &stored, now_ns()))
            .await?
            .ok_or_else(|| Failure::new(ErrorCode::Internal, format!("dataset {name} appeared in the catalog")))?;
        let schema = crate::schema::DatasetSchema::empty(&record.time_column);
        let state = DatasetState::new(name.clone(), record, schema);
        state.set_admin(DatasetAdmin { overrides, ..DatasetAdmin::defaults(&state.record) });
        let state = Arc::new(state);
        self.datasets.write_or_recover().insert(name.to_string(), state.clone());
        tracing::info!(dataset = %name, "defined dataset");
        Ok((state, true))
    }

    /// `PATCH /v1/datasets/{ds}`: changes the settings that can change. A
    /// new period becomes a partition spec effective from the next bucket
    /// boundary both periods share; a different time column is 409
    /// `setting_immutable`. Answers the administration afterwards.
    pub async fn change_dataset(
        self: &Arc<Self>,
        dataset: &Arc<DatasetState>,
        change: DatasetDefinition,
    ) -> Result<Arc<DatasetAdmin>, Failure> {
        check(&change)?;
        if change.time_column.as_ref().is_some_and(|column| *column != dataset.record.time_column) {
            return Err(Failure::new(
                ErrorCode::SettingImmutable,
                format!(
                    "the time column of dataset {} is {:?} and cannot change: its files are sorted and pruned by it",
                    dataset.name, dataset.record.time_column
                ),
            ));
        }
        let _guard = self.create_dataset.lock().await;
        let admin = dataset.admin();
        let now = now_ns();
        let spec = match change.period {
            Some(period) if period != admin.periods().latest().1 => {
                let from = admin.periods().boundary_after(now, period).ok_or_else(|| {
                    Failure::new(ErrorCode::SettingImmutable, format!("no bucket boundary found for period {period:?}"))
                })?;
                Some((period, from))
            }
            _ => None,
        };
        let overrides = admin.overrides.merged(&change.overrides());
        if spec.is_none() && overrides == admin.overrides {
            return Ok(admin);
        }
        let record = dataset.record.clone();
        let updated = self.catalog.call(move |c| c.update_dataset(&record, &overrides, spec, now)).await?;
        dataset.set_admin(updated);
        tracing::info!(dataset = %dataset.name, "changed dataset settings");
        Ok(dataset.admin())
    }
}

fn change_refused(error: ChangeRefused) -> Failure {
    let code = match &error {
        ChangeRefused::TimeColumn(_) => ErrorCode::TimeColumnFixed,
        ChangeRefused::NoColumn(_) => ErrorCode::ColumnNotFound,
        ChangeRefused::Exists { .. } => ErrorCode::ColumnExists,
        ChangeRefused::Lossy { .. } => ErrorCode::CastNotLossless,
    };
    Failure::new(code, error.to_string())
}

impl Store {
    /// Renames, drops or casts a column as a new schema version (saved in
    /// the catalog first), or with `dry` answers what would change and
    /// changes nothing. Nothing stored is rewritten: files and buffered rows
    /// keep physical names and stored types, and every read projects them
    /// (see `schema::change`); compaction writes the current schema. A drop
    /// with `archive` is refused unless every partition holding rows has an
    /// archive copy and no row is only buffered: the archive copies then
    /// hold the dropped values.
    pub async fn change_schema(
        &self,
        dataset: &Arc<DatasetState>,
        change: SchemaChange,
        dry: bool,
    ) -> Result<Json, Failure> {
        if let SchemaChange::Rename { to, .. } = &change {
            crate::names::check_column_name(to).map_err(|e| Failure::new(ErrorCode::BadRequest, e.to_string()))?;
        }
        let _guard = dataset.evolve.lock().await;
        dataset.refuse_if_deleted()?;
        let current = dataset.schema();
        let next = current.change(&change).map_err(change_refused)?;
        let plan = self.deletion_plan(dataset).await?;
        let footprint = &plan.footprint;
        if let SchemaChange::Drop { archive: true, column } = &change
            && !dry
            && (!footprint.unarchived.is_empty() || plan.buffered_rows > 0)
        {
            return Err(Failure::new(
                ErrorCode::ColumnNotArchived,
                format!(
                    "column {column:?} is dropped with archive=true, but {} partition(s) hold rows without an archive \
                     copy and {} row(s) are only buffered; archive (and flush) them first",
                    footprint.unarchived.len(),
                    plan.buffered_rows
                ),
            )
            .with_detail(
                json!({ "unarchived_partitions": footprint.unarchived, "buffered_rows": plan.buffered_rows }),
            ));
        }
        let mut answer = json!({
            "dataset": dataset.name.as_str(),
            "dry": dry,
            "change": change.describe(),
            "changed": next.is_some(),
            "from_version": current.version,
            "version": next.as_ref().map_or(current.version, |n| n.version),
            "rewritten_files": 0,
            "affected": {
                "partitions": footprint.partitions,
                "files": footprint.files,
                "rows": footprint.rows,
                "buffered_rows": plan.buffered_rows,
            },
        });
        if let SchemaChange::Drop { archive: true, .. } = &change {
            answer["unarchived_partitions"] = json!(footprint.unarchived);
        }
        let Some(next) = next else { return Ok(answer) };
        answer["columns"] =
            json!(next.columns.iter().map(|c| json!({ "name": c.name, "kind": c.kind.as_str() })).collect::<Vec<_>>());
        if dry {
            return Ok(answer);
        }
        let (dataset_id, next) = (dataset.record.id, Arc::new(next));
        let saved = next.clone();
        self.catalog.call(move |c| c.save_schema(dataset_id, &saved, now_ns())).await?;
        *dataset.schema.write_or_recover() = next.clone();
        tracing::info!(dataset = %dataset.name, version = next.version, change = %change.describe(), "schema changed");
        Ok(answer)
    }
}
