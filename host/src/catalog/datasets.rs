//! Datasets, their schema versions and their partitions.
//!
//! A partition row is created on first use (`INSERT OR IGNORE`, so two
//! writers racing for it get the same row) and carries the statistics of
//! its committed files, kept by the commits in `files` and by triggers
//! (`live_files`, `has_archive`, the dataset's `partitions_seq`; the
//! statements that create partitions move `partitions_seq` themselves,
//! once per transaction).

use rusqlite::{Connection, params};
use serde::Serialize;

use super::runs_audit::{AuditKind, INSERT_AUDIT};
use super::{Catalog, CatalogError, Result, decode};
use crate::period::{Bucket, Period};
use crate::schema::DatasetSchema;
use crate::tier::Tier;

/// A dataset row.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetRecord {
    /// Catalog id.
    pub id: i64,
    /// The validated name.
    pub name: String,
    /// Partition period.
    pub period: Period,
    /// The time column.
    pub time_column: String,
    /// Creation time, ns.
    pub created_at_ns: i64,
}

/// A partition row.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionRecord {
    /// Catalog id (internal).
    #[serde(skip)]
    pub id: i64,
    /// Owning dataset id.
    #[serde(skip)]
    pub dataset_id: i64,
    /// Period label.
    pub period_label: String,
    /// Inclusive start, ns.
    pub period_start_ns: i64,
    /// Exclusive end, ns.
    pub period_end_ns: i64,
    /// Partition key ("" for none).
    pub key: String,
    /// Where the partition's files live.
    pub tier: Tier,
    /// Sealed partitions accept no writes.
    pub read_only: bool,
    /// Rows in committed files.
    pub rows: i64,
    /// Bytes of committed files.
    pub bytes: i64,
    /// Earliest committed row time, ns.
    pub min_time_ns: Option<i64>,
    /// Latest committed row time, ns.
    pub max_time_ns: Option<i64>,
    /// Creation time, ns.
    pub created_at_ns: i64,
    /// Last flush into this partition, ns.
    pub last_written_at_ns: i64,
    /// Highest WAL sequence whose rows for this partition are in committed files.
    #[serde(skip)]
    pub flushed_wal_seq: u64,
    /// Live files.
    pub file_count: i64,
    /// A verified archive copy exists.
    pub archived: bool,
    /// How the partition's rows were keyed: `None` before its first write,
    /// `Some(field)` when every row's key is the value of `field` verbatim
    /// (the built-in `partition-by-field` on one field), `Some("")` for
    /// anything else — another partitioner, none, or a mix. Only a
    /// partition with a field can be pruned by a filter on that field.
    #[serde(skip)]
    pub key_field: Option<String>,
}

pub(super) const PARTITION_COLUMNS: &str = "p.id, p.dataset_id, p.period_label, p.period_start_ns, p.period_end_ns, p.key, p.tier, p.read_only, \
     p.row_count, p.bytes, p.min_time_ns, p.max_time_ns, p.created_at_ns, p.last_written_at_ns, p.flushed_wal_seq, \
     p.live_files, p.has_archive, p.key_field";

/// The partitions of a JSON array of `[label, start, end, key]` (`?2`) in
/// a dataset (`?1`), in the array's order. `CROSS JOIN` keeps the array
/// the outer loop: each element is one search of the unique index, where
/// the planner would otherwise scan the dataset's partitions and walk the
/// array for each.
fn partitions_asked() -> String {
    format!(
        "SELECT {PARTITION_COLUMNS} FROM json_each(?2) AS j \
         CROSS JOIN partitions p ON p.dataset_id = ?1 AND p.period_label = j.value ->> 0 AND p.key = j.value ->> 3 \
         ORDER BY j.key"
    )
}

/// Moves a dataset's `partitions_seq` on: once per transaction that
/// creates partitions (updates and deletes move it by trigger).
fn bump_partitions_seq(tx: &rusqlite::Transaction<'_>, dataset_id: i64) -> rusqlite::Result<()> {
    tx.execute("UPDATE datasets SET partitions_seq = partitions_seq + 1 WHERE id = ?1", [dataset_id])?;
    Ok(())
}

pub(super) fn partition_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PartitionRecord> {
    Ok(PartitionRecord {
        id: row.get(0)?,
        dataset_id: row.get(1)?,
        period_label: row.get(2)?,
        period_start_ns: row.get(3)?,
        period_end_ns: row.get(4)?,
        key: row.get(5)?,
        tier: decode(row, 6, "tier", Tier::parse)?,
        read_only: row.get(7)?,
        rows: row.get(8)?,
        bytes: row.get(9)?,
        min_time_ns: row.get(10)?,
        max_time_ns: row.get(11)?,
        created_at_ns: row.get(12)?,
        last_written_at_ns: row.get(13)?,
        flushed_wal_seq: row.get::<_, i64>(14)? as u64,
        file_count: row.get(15)?,
        archived: row.get(16)?,
        key_field: row.get(17)?,
    })
}

/// Partitions and bytes per tier, and the oldest hot period's end.
#[derive(Debug, Clone, Default)]
pub struct TierCounts {
    /// `(tier, partitions, bytes)`.
    pub tiers: Vec<(Tier, i64, i64)>,
    /// The end of the oldest hot partition's period, ns.
    pub oldest_hot_period_end_ns: Option<i64>,
}

impl Catalog {
    /// Every dataset, by name.
    pub fn datasets(&self) -> Result<Vec<DatasetRecord>> {
        let connection = self.lock();
        let mut statement =
            connection.prepare("SELECT id, name, period, time_column, created_at_ns FROM datasets WHERE deleted_at_ns IS NULL ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, period, time_column, created_at_ns) = row?;
            let period = Period::parse(&period).ok_or_else(|| CatalogError::Corrupt(format!("period {period:?}")))?;
            out.push(DatasetRecord { id, name, period, time_column, created_at_ns });
        }
        Ok(out)
    }

    /// Creates a dataset with an empty schema, or returns the existing one.
    pub fn create_dataset(&self, name: &str, period: Period, time_column: &str, now_ns: i64) -> Result<DatasetRecord> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO datasets (name, period, time_column, created_at_ns) VALUES (?1, ?2, ?3, ?4)",
            params![name, period.as_str(), time_column, now_ns],
        )?;
        let (id, period, time_column, created_at_ns): (i64, String, String, i64) = tx.query_row(
            "SELECT id, period, time_column, created_at_ns FROM datasets WHERE name = ?1",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )?;
        let schema = DatasetSchema::empty(&time_column);
        tx.execute(
            "INSERT OR IGNORE INTO dataset_schemas (dataset_id, version, schema_json, created_at_ns) VALUES (?1, 0, ?2, ?3)",
            params![id, serde_json::to_string(&schema).expect("schemas serialize"), now_ns],
        )?;
        tx.commit()?;
        let period = Period::parse(&period).ok_or_else(|| CatalogError::Corrupt(format!("period {period:?}")))?;
        Ok(DatasetRecord { id, name: name.to_string(), period, time_column, created_at_ns })
    }

    /// The latest schema of a dataset.
    pub fn schema(&self, dataset_id: i64) -> Result<DatasetSchema> {
        let connection = self.lock();
        let json: String = connection.query_row(
            "SELECT schema_json FROM dataset_schemas WHERE dataset_id = ?1 ORDER BY version DESC LIMIT 1",
            [dataset_id],
            |row| row.get(0),
        )?;
        serde_json::from_str(&json).map_err(|e| CatalogError::Corrupt(format!("schema: {e}")))
    }

    /// Records a new schema version.
    pub fn save_schema(&self, dataset_id: i64, schema: &DatasetSchema, now_ns: i64) -> Result<()> {
        self.lock().execute(
            "INSERT INTO dataset_schemas (dataset_id, version, schema_json, created_at_ns) VALUES (?1, ?2, ?3, ?4)",
            params![dataset_id, schema.version, serde_json::to_string(schema).expect("schemas serialize"), now_ns],
        )?;
        Ok(())
    }

    /// The partition for `(bucket, key)`, created if missing.
    pub fn partition(&self, dataset_id: i64, bucket: &Bucket, key: &str, now_ns: i64) -> Result<PartitionRecord> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let created = tx.execute(
            "INSERT OR IGNORE INTO partitions (dataset_id, period_label, period_start_ns, period_end_ns, key, created_at_ns, last_written_at_ns) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![dataset_id, bucket.label, bucket.start_ns, bucket.end_ns, key, now_ns],
        )?;
        if created > 0 {
            bump_partitions_seq(&tx, dataset_id)?;
        }
        let record = tx.query_row(
            &format!("SELECT {PARTITION_COLUMNS} FROM partitions p WHERE p.dataset_id = ?1 AND p.period_label = ?2 AND p.key = ?3"),
            params![dataset_id, bucket.label, key],
            partition_from_row,
        )?;
        tx.commit()?;
        Ok(record)
    }

    /// The partitions for many `(bucket, key)` pairs, those missing created,
    /// in one transaction (one fsync however many a request touches); in
    /// the order asked. A partition created here records `key_field` as
    /// its keying ([`Catalog::note_key_field`] of its first write). The
    /// pairs travel as one JSON array, so thousands of new partitions are
    /// one statement that inserts them and one that reads them all back,
    /// not two statements (and a statement journal) per partition.
    pub fn partitions_for(
        &self,
        dataset_id: i64,
        wanted: &[(Bucket, String)],
        key_field: &str,
        now_ns: i64,
    ) -> Result<Vec<PartitionRecord>> {
        let pairs: Vec<(&str, i64, i64, &str)> =
            wanted.iter().map(|(b, key)| (b.label.as_str(), b.start_ns, b.end_ns, key.as_str())).collect();
        let pairs = serde_json::to_string(&pairs).expect("strings and integers serialize");
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        // `WHERE true`: an upsert after `INSERT ... SELECT` needs a WHERE.
        let created = tx
            .prepare_cached(
                "INSERT INTO partitions (dataset_id, period_label, period_start_ns, period_end_ns, key, created_at_ns, last_written_at_ns, key_field) \
                 SELECT ?1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, ?2, ?2, ?3 FROM json_each(?4) WHERE true \
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![dataset_id, now_ns, key_field, pairs])?;
        if created > 0 {
            bump_partitions_seq(&tx, dataset_id)?;
        }
        let out = tx
            .prepare_cached(&partitions_asked())?
            .query_map(params![dataset_id, pairs], partition_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if out.len() != wanted.len() {
            return Err(CatalogError::Corrupt(format!(
                "{} partitions asked for, {} found after creating them",
                wanted.len(),
                out.len()
            )));
        }
        tx.commit()?;
        Ok(out)
    }

    /// [`Catalog::note_key_field`] for many partitions in one transaction;
    /// returns each partition's keying afterwards, in the order given.
    pub fn note_key_fields(&self, partition_ids: &[i64], key_field: &str) -> Result<Vec<String>> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let mut out = Vec::with_capacity(partition_ids.len());
        {
            let mut update = tx.prepare_cached(
                "UPDATE partitions SET key_field = CASE WHEN key_field IS NULL OR key_field = ?2 THEN ?2 ELSE '' END \
                 WHERE id = ?1 RETURNING key_field",
            )?;
            for id in partition_ids {
                out.push(update.query_row(params![id, key_field], |row| row.get(0))?);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Records that rows keyed by `key_field` (a field name, or "" for any
    /// other keying) are about to be written into a partition, and returns
    /// the partition's keying afterwards: the first write sets it, a write
    /// keyed another way turns it into "" for good. One statement, so two
    /// writers keyed differently cannot both win.
    pub fn note_key_field(&self, partition_id: i64, key_field: &str) -> Result<String> {
        Ok(self.lock().query_row(
            "UPDATE partitions SET key_field = CASE WHEN key_field IS NULL OR key_field = ?2 THEN ?2 ELSE '' END \
             WHERE id = ?1 RETURNING key_field",
            params![partition_id, key_field],
            |row| row.get(0),
        )?)
    }

    /// The keys of a dataset's partitions in one period.
    pub fn period_keys(&self, dataset_id: i64, label: &str) -> Result<Vec<String>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT key FROM partitions WHERE dataset_id = ?1 AND period_label = ?2 AND deleted_at_ns IS NULL ORDER BY key",
        )?;
        let rows = statement.query_map(params![dataset_id, label], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every partition of a dataset, oldest period first.
    pub fn partitions(&self, dataset_id: i64) -> Result<Vec<PartitionRecord>> {
        Self::partitions_in(&self.lock(), dataset_id)
    }

    /// A dataset's `(partitions, committed rows, bytes)`, summed by the
    /// catalog (a listing of datasets reads no partition rows).
    pub fn dataset_totals(&self, dataset_id: i64) -> Result<(i64, i64, i64)> {
        Ok(self
            .lock()
            .prepare_cached(
                "SELECT count(*), coalesce(sum(row_count), 0), coalesce(sum(bytes), 0) FROM partitions \
             WHERE dataset_id = ?1 AND deleted_at_ns IS NULL",
            )?
            .query_row([dataset_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?)
    }

    fn partitions_in(connection: &Connection, dataset_id: i64) -> Result<Vec<PartitionRecord>> {
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {PARTITION_COLUMNS} FROM partitions p WHERE p.dataset_id = ?1 AND p.deleted_at_ns IS NULL \
             ORDER BY p.period_start_ns, p.key"
        ))?;
        let rows = statement.query_map([dataset_id], partition_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The dataset's partition sequence: it changes whenever any of the
    /// dataset's partition rows changes, and only then (triggers keep it).
    pub fn partitions_seq(&self, dataset_id: i64) -> Result<i64> {
        Ok(self
            .lock()
            .query_row("SELECT partitions_seq FROM datasets WHERE id = ?1", [dataset_id], |row| row.get(0))?)
    }

    /// [`Catalog::partitions`] together with the [`Catalog::partitions_seq`]
    /// they are current for, read under one lock.
    pub fn partitions_at_seq(&self, dataset_id: i64) -> Result<(i64, Vec<PartitionRecord>)> {
        let connection = self.lock();
        let seq = connection
            .query_row("SELECT partitions_seq FROM datasets WHERE id = ?1", [dataset_id], |row| row.get(0))?;
        Ok((seq, Self::partitions_in(&connection, dataset_id)?))
    }

    /// Every partition of every dataset.
    pub fn all_partitions(&self) -> Result<Vec<PartitionRecord>> {
        let connection = self.lock();
        let mut statement =
            connection.prepare(&format!("SELECT {PARTITION_COLUMNS} FROM partitions p ORDER BY p.id"))?;
        let rows = statement.query_map([], partition_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks partitions read-only (sealed: they take no more rows) or
    /// writable again, with one audit event each, in one transaction.
    /// `partitions` holds each partition's id and label.
    pub fn set_read_only(
        &self,
        dataset: &str,
        partitions: &[(i64, String)],
        read_only: bool,
        now_ns: i64,
    ) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        {
            let mut update = tx.prepare_cached("UPDATE partitions SET read_only = ?2 WHERE id = ?1")?;
            let mut audit = tx.prepare_cached(INSERT_AUDIT)?;
            let detail = serde_json::json!({ "read_only": read_only }).to_string();
            for (id, label) in partitions {
                update.execute(params![id, read_only])?;
                let kind = AuditKind::PartitionReadOnly.as_str();
                audit.execute(params![now_ns, kind, dataset, label, detail, None::<&str>])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Partitions and bytes per tier (deleted partitions excluded).
    pub fn tier_counts(&self) -> Result<TierCounts> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT tier, COUNT(*), COALESCE(SUM(bytes), 0) FROM partitions WHERE deleted_at_ns IS NULL GROUP BY tier ORDER BY tier",
        )?;
        let tiers = statement
            .query_map([], |row| Ok((decode(row, 0, "tier", Tier::parse)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let oldest_hot_period_end_ns = connection.query_row(
            "SELECT MIN(period_end_ns) FROM partitions WHERE deleted_at_ns IS NULL AND tier = 'hot'",
            [],
            |row| row.get(0),
        )?;
        Ok(TierCounts { tiers, oldest_hot_period_end_ns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::MovedFile;
    use crate::catalog::tests::{catalog, file};

    #[test]
    fn the_partition_sequence_moves_with_every_partition_change_and_nothing_else() {
        let (catalog, dir) = catalog();
        let cpu = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let mem = catalog.create_dataset("mem", Period::Day, "time", 1).unwrap();
        let bucket = Period::Day.bucket(0);
        let seq = || catalog.partitions_seq(cpu.id).unwrap();
        let mut last = seq();
        let mut changed = |what: &str, expect: bool| {
            let now = catalog.partitions_seq(cpu.id).unwrap();
            assert_eq!(now != last, expect, "{what}");
            let (at, records) = catalog.partitions_at_seq(cpu.id).unwrap();
            let ids = |records: Vec<PartitionRecord>| records.iter().map(|r| (r.id, r.tier)).collect::<Vec<_>>();
            assert_eq!((at, ids(records)), (now, ids(catalog.partitions(cpu.id).unwrap())), "{what}: read together");
            last = now;
        };
        let partition = catalog.partition(cpu.id, &bucket, "", 1).unwrap();
        changed("a new partition", true);
        catalog.commit_flush(partition.id, &file("a"), 1, 2).unwrap();
        changed("a flush", true);
        let other = catalog.partition(mem.id, &bucket, "", 1).unwrap();
        catalog.commit_flush(other.id, &file("b"), 2, 2).unwrap();
        catalog.audit(AuditKind::Compaction, Some("cpu"), None, &serde_json::json!({}), 3).unwrap();
        changed("another dataset's flush and an audit event", false);
        catalog.set_read_only("cpu", &[(partition.id, "cpu/x".into())], true, 4).unwrap();
        changed("a seal", true);
        let live = catalog.files(partition.id).unwrap().remove(0);
        let moved = MovedFile { id: live.id, object_key: "data/1/1/c.parquet".into(), bytes: 10, checksum_crc32c: 3 };
        catalog.commit_move(partition.id, &[moved], "warm", Tier::Warm, 5).unwrap();
        changed("a move", true);
        for tombstone in catalog.expired_tombstones(i64::MAX).unwrap() {
            catalog.forget_file(tombstone.id).unwrap();
        }
        changed("sweeping a tombstone (no partition row changes)", false);
        let wanted = [(bucket.clone(), "a".to_string()), (bucket.clone(), String::new())];
        let records = catalog.partitions_for(cpu.id, &wanted, "tenant", 6).unwrap();
        assert_eq!((records[0].key.as_str(), records[1].id), ("a", partition.id), "in the order asked");
        changed("partitions created together", true);
        let ids = |records: &[PartitionRecord]| records.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&catalog.partitions_for(cpu.id, &wanted, "tenant", 6).unwrap()), ids(&records));
        changed("partitions that all exist", false);
        catalog.delete_partition(partition.id, 6).unwrap();
        changed("a delete", true);
        assert!(seq() > 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn partitions_created_for_a_write_are_keyed_by_it_and_existing_ones_keep_their_keying() {
        let (catalog, dir) = catalog();
        let cpu = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let (day, next) = (Period::Day.bucket(0), Period::Day.bucket(86_400_000_000_000));
        let old = catalog.partition(cpu.id, &day, "t1", 1).unwrap();
        let tricky = "t\"2\u{e9}]";
        let wanted: Vec<(Bucket, String)> =
            [(next.clone(), "t1"), (day.clone(), tricky), (day.clone(), "t1"), (next.clone(), "t3")]
                .into_iter()
                .map(|(b, k)| (b, k.to_string()))
                .collect();
        let records = catalog.partitions_for(cpu.id, &wanted, "tenant", 7).unwrap();
        let got: Vec<(&str, &str, Option<&str>)> =
            records.iter().map(|r| (r.period_label.as_str(), r.key.as_str(), r.key_field.as_deref())).collect();
        let (d, n) = (day.label.as_str(), next.label.as_str());
        assert_eq!(
            got,
            [(n, "t1", Some("tenant")), (d, tricky, Some("tenant")), (d, "t1", None), (n, "t3", Some("tenant"))]
        );
        assert_eq!(records[2].id, old.id);
        assert_eq!(records[0].period_start_ns, next.start_ns);
        assert_eq!(catalog.partitions(cpu.id).unwrap().len(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_thousand_partitions_asked_at_once_come_back_in_the_order_asked() {
        let (catalog, dir) = catalog();
        let cpu = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let buckets = [Period::Day.bucket(0), Period::Day.bucket(4_102_444_800_000_000_000)];
        // Every third key exists before; keys that look like numbers stay text.
        let wanted: Vec<(Bucket, String)> =
            (0..1200).map(|i| (buckets[i % 2].clone(), format!("{:03}", (i * 7919) % 1200))).collect();
        for (bucket, key) in wanted.iter().step_by(3) {
            catalog.partition(cpu.id, bucket, key, 1).unwrap();
        }
        let before = catalog.partitions_seq(cpu.id).unwrap();
        let records = catalog.partitions_for(cpu.id, &wanted, "tenant", 2).unwrap();
        let got: Vec<(&str, i64, &str)> =
            records.iter().map(|r| (r.period_label.as_str(), r.period_end_ns, r.key.as_str())).collect();
        let asked: Vec<(&str, i64, &str)> =
            wanted.iter().map(|(b, k)| (b.label.as_str(), b.end_ns, k.as_str())).collect();
        assert_eq!(got, asked);
        let created: Vec<bool> = records.iter().map(|r| r.key_field.is_some()).collect();
        assert_eq!(created, (0..1200).map(|i| i % 3 != 0).collect::<Vec<_>>(), "only the new ones are keyed");
        assert_eq!(catalog.partitions_seq(cpu.id).unwrap(), before + 1, "one creating transaction");
        assert_eq!(catalog.partitions(cpu.id).unwrap().len(), 1200);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn partitions_asked_at_once_are_each_one_index_search() {
        let (catalog, dir) = catalog();
        let steps: Vec<String> = {
            let connection = catalog.lock();
            let mut plan = connection.prepare(&format!("EXPLAIN QUERY PLAN {}", partitions_asked())).unwrap();
            plan.query_map(params![1, "[]"], |row| row.get(3)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
        };
        assert!(steps[0].starts_with("SCAN j"), "{steps:?}");
        assert!(steps[1].starts_with("SEARCH p USING INDEX sqlite_autoindex_partitions_1"), "{steps:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_partition_remembers_one_key_field_until_a_write_keys_it_another_way() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("orders", Period::Day, "time", 1).unwrap();
        let bucket = Period::Day.bucket(0);
        let partition = catalog.partition(dataset.id, &bucket, "acme", 5).unwrap();
        assert_eq!(partition.key_field, None, "nothing written yet");
        assert_eq!(catalog.note_key_field(partition.id, "tenant").unwrap(), "tenant");
        assert_eq!(catalog.note_key_field(partition.id, "tenant").unwrap(), "tenant");
        assert_eq!(catalog.note_key_field(partition.id, "region").unwrap(), "", "mixed keying");
        assert_eq!(catalog.note_key_field(partition.id, "tenant").unwrap(), "", "mixed for good");
        assert_eq!(catalog.partition(dataset.id, &bucket, "acme", 6).unwrap().key_field.as_deref(), Some(""));
        let unkeyed = catalog.partition(dataset.id, &bucket, "", 5).unwrap();
        assert_eq!(catalog.note_key_field(unkeyed.id, "").unwrap(), "");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_stored_tier_that_does_not_parse_is_corrupt_not_hot() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        catalog.partition(dataset.id, &Period::Day.bucket(0), "", 1).unwrap();
        catalog.lock().execute("UPDATE partitions SET tier = 'lukewarm'", []).unwrap();
        assert!(matches!(catalog.partitions(dataset.id), Err(CatalogError::Corrupt(_))));
        assert!(matches!(catalog.tier_counts(), Err(CatalogError::Corrupt(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
