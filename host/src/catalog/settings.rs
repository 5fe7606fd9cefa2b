//! Dataset administration: the settings an operator set through the API,
//! the partition specs (each change of period, effective from a bucket
//! boundary) and the schema version history.
//!
//! A dataset row's `period` is spec 0, effective from the beginning of
//! time; `partition_specs` holds the later ones. Settings are stored as a
//! JSON object of the keys an operator set, so a key never set keeps
//! following the TOML (`[datasets.X]`, then the defaults).

use rusqlite::{OptionalExtension as _, Transaction, params};
use serde::{Deserialize, Serialize};

use super::{Catalog, CatalogError, DatasetRecord, Result};
use crate::period::{Period, Periods};
use crate::schema::DatasetSchema;

/// The settings an operator set on a dataset through the API. `None`
/// follows the TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetOverrides {
    /// `late_rows` (`refuse_request` or `refuse_rows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_rows: Option<String>,
    /// Whether the dataset is compacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<bool>,
    /// The minimum retention before a delete, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retention_ms: Option<u64>,
}

impl DatasetOverrides {
    /// `self` with every key `other` sets taken from `other`.
    pub fn merged(&self, other: &DatasetOverrides) -> DatasetOverrides {
        DatasetOverrides {
            late_rows: other.late_rows.clone().or_else(|| self.late_rows.clone()),
            compaction: other.compaction.or(self.compaction),
            min_retention_ms: other.min_retention_ms.or(self.min_retention_ms),
        }
    }
}

/// One partition spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionSpec {
    /// 0 for the period the dataset was created with, then one more per change.
    pub version: i64,
    /// The period of partitions from `effective_from_ns` on.
    pub period: Period,
    /// From when (ns); `i64::MIN` for spec 0.
    pub effective_from_ns: i64,
    /// When the spec was recorded, ns.
    pub created_at_ns: i64,
}

/// What the catalog holds of a dataset's administration.
#[derive(Debug, Clone)]
pub struct DatasetAdmin {
    /// Operator settings.
    pub overrides: DatasetOverrides,
    /// Every partition spec, oldest first (spec 0 included).
    pub specs: Vec<PartitionSpec>,
}

impl DatasetAdmin {
    /// A dataset with no operator settings and one spec.
    pub fn defaults(dataset: &DatasetRecord) -> DatasetAdmin {
        let spec = PartitionSpec {
            version: 0,
            period: dataset.period,
            effective_from_ns: i64::MIN,
            created_at_ns: dataset.created_at_ns,
        };
        DatasetAdmin { overrides: DatasetOverrides::default(), specs: vec![spec] }
    }

    /// The specs as the write path routes by them.
    pub fn periods(&self) -> Periods {
        let later: Vec<(i64, Period)> = self.specs.iter().skip(1).map(|s| (s.effective_from_ns, s.period)).collect();
        Periods::new(self.specs[0].period, &later)
    }
}

/// One recorded schema version.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaVersion {
    /// The schema.
    pub schema: DatasetSchema,
    /// When it was recorded, ns.
    pub created_at_ns: i64,
}

fn corrupt_period(raw: &str) -> CatalogError {
    CatalogError::Corrupt(format!("period {raw:?}"))
}

fn admin_in(tx: &rusqlite::Connection, dataset: &DatasetRecord) -> Result<DatasetAdmin> {
    let json: Option<String> = tx
        .query_row("SELECT settings_json FROM dataset_settings WHERE dataset_id = ?1", [dataset.id], |row| row.get(0))
        .optional()?;
    let overrides = match json {
        Some(json) => serde_json::from_str(&json).map_err(|e| CatalogError::Corrupt(format!("settings: {e}")))?,
        None => DatasetOverrides::default(),
    };
    let mut specs = vec![PartitionSpec {
        version: 0,
        period: dataset.period,
        effective_from_ns: i64::MIN,
        created_at_ns: dataset.created_at_ns,
    }];
    let mut statement = tx.prepare_cached(
        "SELECT version, period, effective_from_ns, created_at_ns FROM partition_specs WHERE dataset_id = ?1 ORDER BY version",
    )?;
    let rows = statement.query_map([dataset.id], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, i64>(3)?))
    })?;
    for row in rows {
        let (version, period, effective_from_ns, created_at_ns) = row?;
        let period = Period::parse(&period).ok_or_else(|| corrupt_period(&period))?;
        specs.push(PartitionSpec { version, period, effective_from_ns, created_at_ns });
    }
    Ok(DatasetAdmin { overrides, specs })
}

fn save_overrides(tx: &Transaction<'_>, dataset_id: i64, overrides: &DatasetOverrides, now_ns: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO dataset_settings (dataset_id, settings_json, updated_at_ns) VALUES (?1, ?2, ?3) \
         ON CONFLICT (dataset_id) DO UPDATE SET settings_json = excluded.settings_json, updated_at_ns = excluded.updated_at_ns",
        params![dataset_id, serde_json::to_string(overrides).expect("settings serialize"), now_ns],
    )?;
    Ok(())
}

impl Catalog {
    /// A dataset's operator settings and partition specs.
    pub fn dataset_admin(&self, dataset: &DatasetRecord) -> Result<DatasetAdmin> {
        admin_in(&self.lock(), dataset)
    }

    /// Creates a dataset with its settings in one transaction, or returns
    /// `None` when the name exists already (nothing changed).
    pub fn define_dataset(
        &self,
        name: &str,
        period: Period,
        time_column: &str,
        overrides: &DatasetOverrides,
        now_ns: i64,
    ) -> Result<Option<DatasetRecord>> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO datasets (name, period, time_column, created_at_ns) VALUES (?1, ?2, ?3, ?4)",
            params![name, period.as_str(), time_column, now_ns],
        )?;
        if inserted == 0 {
            return Ok(None);
        }
        let id = tx.last_insert_rowid();
        let schema = DatasetSchema::empty(time_column);
        tx.execute(
            "INSERT INTO dataset_schemas (dataset_id, version, schema_json, created_at_ns) VALUES (?1, 0, ?2, ?3)",
            params![id, serde_json::to_string(&schema).expect("schemas serialize"), now_ns],
        )?;
        save_overrides(&tx, id, overrides, now_ns)?;
        tx.commit()?;
        Ok(Some(DatasetRecord {
            id,
            name: name.to_string(),
            period,
            time_column: time_column.to_string(),
            created_at_ns: now_ns,
        }))
    }

    /// Changes a dataset's settings: `overrides` replaces the stored ones,
    /// and `spec` (`(period, effective_from_ns)`) adds a partition spec.
    /// One transaction; answers the administration afterwards.
    pub fn update_dataset(
        &self,
        dataset: &DatasetRecord,
        overrides: &DatasetOverrides,
        spec: Option<(Period, i64)>,
        now_ns: i64,
    ) -> Result<DatasetAdmin> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        save_overrides(&tx, dataset.id, overrides, now_ns)?;
        if let Some((period, effective_from_ns)) = spec {
            tx.execute(
                "INSERT INTO partition_specs (dataset_id, version, period, effective_from_ns, created_at_ns) \
                 VALUES (?1, (SELECT COALESCE(MAX(version), 0) + 1 FROM partition_specs WHERE dataset_id = ?1), ?2, ?3, ?4)",
                params![dataset.id, period.as_str(), effective_from_ns, now_ns],
            )?;
        }
        let admin = admin_in(&tx, dataset)?;
        tx.commit()?;
        Ok(admin)
    }

    /// Every schema version of a dataset, oldest first.
    pub fn schema_versions(&self, dataset_id: i64) -> Result<Vec<SchemaVersion>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT schema_json, created_at_ns FROM dataset_schemas WHERE dataset_id = ?1 ORDER BY version")?;
        let rows = statement.query_map([dataset_id], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (json, created_at_ns) = row?;
            let schema = serde_json::from_str(&json).map_err(|e| CatalogError::Corrupt(format!("schema: {e}")))?;
            out.push(SchemaVersion { schema, created_at_ns });
        }
        Ok(out)
    }
}

/// What a dataset delete removes (or would).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DatasetFootprint {
    /// Partitions not yet deleted.
    pub partitions: i64,
    /// Their live files.
    pub files: i64,
    /// Bytes of those files.
    pub bytes: i64,
    /// Rows in those files.
    pub rows: i64,
    /// Ids of partitions holding rows without an archive copy.
    pub unarchived: Vec<String>,
}

impl Catalog {
    /// The partitions, files, bytes and rows of a dataset, and the labels
    /// (`period_label` or `period_label/key`) of partitions with rows and
    /// no archive copy.
    pub fn dataset_footprint(&self, dataset_id: i64) -> Result<DatasetFootprint> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT period_label, key, row_count, bytes, live_files, has_archive FROM partitions \
             WHERE dataset_id = ?1 AND deleted_at_ns IS NULL ORDER BY period_start_ns, key",
        )?;
        let rows = statement.query_map([dataset_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, bool>(5)?,
            ))
        })?;
        let mut footprint = DatasetFootprint::default();
        for row in rows {
            let (label, key, row_count, bytes, files, archived) = row?;
            footprint.partitions += 1;
            footprint.files += files;
            footprint.bytes += bytes;
            footprint.rows += row_count;
            if row_count > 0 && !archived {
                footprint.unarchived.push(if key.is_empty() { label } else { format!("{label}/{key}") });
            }
        }
        Ok(footprint)
    }

    /// Tombstones a dataset in one transaction: its live files are
    /// tombstoned (the sweeper deletes them after the grace period), its
    /// partitions deleted with `flushed_wal_seq` raised to `wal_seq` (so
    /// replay drops the rows still in the WAL), the dataset marked deleted,
    /// and one `dataset_deleted` audit event written with `detail`.
    pub fn tombstone_dataset(
        &self,
        dataset_id: i64,
        name: &str,
        wal_seq: u64,
        detail: &str,
        now_ns: i64,
    ) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = ?2 WHERE state = 'live' \
             AND partition_id IN (SELECT id FROM partitions WHERE dataset_id = ?1)",
            params![dataset_id, now_ns],
        )?;
        tx.execute(
            "UPDATE partitions SET read_only = 1, deleted_at_ns = COALESCE(deleted_at_ns, ?2), \
             flushed_wal_seq = MAX(flushed_wal_seq, ?3) WHERE dataset_id = ?1",
            params![dataset_id, now_ns, wal_seq as i64],
        )?;
        tx.execute("UPDATE datasets SET deleted_at_ns = ?2 WHERE id = ?1", params![dataset_id, now_ns])?;
        let kind = super::AuditKind::DatasetDeleted.as_str();
        tx.execute(super::runs_audit::INSERT_AUDIT, params![now_ns, kind, name, None::<&str>, detail, None::<&str>])?;
        tx.commit()?;
        Ok(())
    }

    /// Names of deleted datasets whose files are not all swept yet.
    pub fn deleting_datasets(&self) -> Result<Vec<String>> {
        let connection = self.lock();
        let mut statement =
            connection.prepare("SELECT name FROM datasets WHERE deleted_at_ns IS NOT NULL AND instr(name, '~') = 0")?;
        let rows = statement.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Frees the names of deleted datasets none of whose files is left
    /// (the row stays as `name~id`, for the archive copies and the audit
    /// trail) and answers them.
    pub fn release_swept_datasets(&self) -> Result<Vec<String>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "UPDATE datasets SET name = name || '~' || id WHERE deleted_at_ns IS NOT NULL AND instr(name, '~') = 0 \
             AND NOT EXISTS (SELECT 1 FROM files f JOIN partitions p ON p.id = f.partition_id \
                             WHERE p.dataset_id = datasets.id AND f.state IN ('live', 'tombstoned')) \
             RETURNING substr(name, 1, instr(name, '~') - 1)",
        )?;
        let rows = statement.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::catalog;

    #[test]
    fn settings_and_specs_are_stored_with_the_dataset_and_replaced_whole() {
        let (catalog, dir) = catalog();
        let set = DatasetOverrides { late_rows: Some("refuse_rows".into()), ..Default::default() };
        let record = catalog.define_dataset("cpu", Period::Day, "ts", &set, 7).unwrap().unwrap();
        assert!(catalog.define_dataset("cpu", Period::Hour, "time", &set, 8).unwrap().is_none(), "exists");
        let admin = catalog.dataset_admin(&record).unwrap();
        assert_eq!(admin.overrides, set);
        assert_eq!(admin.specs.len(), 1);
        assert_eq!(catalog.schema(record.id).unwrap(), DatasetSchema::empty("ts"));
        let more = set.merged(&DatasetOverrides { compaction: Some(false), ..Default::default() });
        let admin = catalog.update_dataset(&record, &more, Some((Period::Hour, 1_000)), 9).unwrap();
        assert_eq!(
            (admin.overrides.compaction, admin.overrides.late_rows.as_deref()),
            (Some(false), Some("refuse_rows"))
        );
        let admin = catalog.update_dataset(&record, &more, Some((Period::Month, 2_000)), 10).unwrap();
        let specs: Vec<_> = admin.specs.iter().map(|s| (s.version, s.period, s.effective_from_ns)).collect();
        assert_eq!(specs, [(0, Period::Day, i64::MIN), (1, Period::Hour, 1_000), (2, Period::Month, 2_000)]);
        assert_eq!(admin.periods().at(1_500), Period::Hour);
        let listed = catalog.datasets().unwrap().remove(0);
        assert_eq!(catalog.dataset_admin(&listed).unwrap().specs, admin.specs, "read back");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_deleted_dataset_keeps_its_name_until_its_files_are_swept() {
        let (catalog, dir) = catalog();
        let record = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let partition = catalog.partition(record.id, &Period::Day.bucket(0), "", 1).unwrap();
        catalog.commit_flush(partition.id, &crate::catalog::tests::file("a"), 3, 2).unwrap();
        let footprint = catalog.dataset_footprint(record.id).unwrap();
        assert_eq!((footprint.partitions, footprint.files, footprint.unarchived.len()), (1, 1, 1));
        catalog.tombstone_dataset(record.id, "cpu", 9, "{}", 5).unwrap();
        assert!(catalog.datasets().unwrap().is_empty());
        assert_eq!(catalog.all_partitions().unwrap()[0].flushed_wal_seq, 9, "replay skips what the WAL holds");
        assert_eq!(catalog.deleting_datasets().unwrap(), ["cpu"]);
        assert!(catalog.release_swept_datasets().unwrap().is_empty(), "a file is left");
        for tombstone in catalog.expired_tombstones(i64::MAX).unwrap() {
            catalog.forget_file(tombstone.id).unwrap();
        }
        assert_eq!(catalog.release_swept_datasets().unwrap(), ["cpu"]);
        assert!(catalog.deleting_datasets().unwrap().is_empty());
        let again = catalog.create_dataset("cpu", Period::Hour, "time", 6).unwrap();
        assert_ne!(again.id, record.id, "the name is free again");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
