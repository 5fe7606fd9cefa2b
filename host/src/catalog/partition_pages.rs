//! Filtered, paged partition listings (keyset pagination over
//! `(period_start_ns, key, id)`, the `partitions_by_period` index), the
//! partitions of one period with their files (a period's manifest), and
//! audit events naming their actor.
//!
//! **Invariant:** filtering and paging happen in SQL: a page reads at most
//! `limit + 1` partition rows, wherever in the listing it starts, and an
//! entry present before and after a change is listed exactly once across
//! the pages of one walk.

use rusqlite::params;
use rusqlite::types::Value;

use super::datasets::{PARTITION_COLUMNS, partition_from_row};
use super::runs_audit::{AuditKind, INSERT_AUDIT};
use super::{Catalog, PartitionRecord, Result};
use crate::catalog::FileRecord;
use crate::tier::Tier;

/// Which partitions a listing shows (every field optional).
#[derive(Debug, Clone, Default)]
pub struct PartitionFilter {
    /// Only partitions in this tier.
    pub tier: Option<Tier>,
    /// Only periods ending after this, ns.
    pub from_ns: Option<i64>,
    /// Only periods starting before this, ns.
    pub to_ns: Option<i64>,
    /// Only this partition key.
    pub key: Option<String>,
    /// Only sealed (`true`) or writable (`false`) partitions.
    pub read_only: Option<bool>,
}

/// Where a page starts: after the partition with this sort key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionCursor {
    /// The last listed partition's period start, ns.
    pub period_start_ns: i64,
    /// Its key.
    pub key: String,
    /// Its catalog id.
    pub id: i64,
}

impl PartitionCursor {
    /// The cursor that continues after `record`.
    pub fn after(record: &PartitionRecord) -> PartitionCursor {
        PartitionCursor { period_start_ns: record.period_start_ns, key: record.key.clone(), id: record.id }
    }
}

/// A partition row with its live files.
pub type PartitionWithFiles = (PartitionRecord, Vec<FileRecord>);

/// A partition key's all-time totals in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTotal {
    /// The key ("" for none).
    pub key: String,
    /// Partitions with this key.
    pub partitions: i64,
    /// Rows in their committed files.
    pub rows: i64,
    /// Bytes of their committed files.
    pub bytes: i64,
}

impl Catalog {
    /// Partitions, committed rows and bytes per key of a dataset, by key.
    pub fn key_totals(&self, dataset_id: i64) -> Result<Vec<KeyTotal>> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached(
            "SELECT key, COUNT(*), COALESCE(SUM(row_count), 0), COALESCE(SUM(bytes), 0) FROM partitions \
             WHERE dataset_id = ?1 AND deleted_at_ns IS NULL GROUP BY key ORDER BY key",
        )?;
        let rows = statement.query_map([dataset_id], |row| {
            Ok(KeyTotal { key: row.get(0)?, partitions: row.get(1)?, rows: row.get(2)?, bytes: row.get(3)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Up to `limit` partitions of a dataset that pass `filter`, after
    /// `after`, in `(period_start_ns, key, id)` order, each with its live
    /// files; and whether more follow.
    pub fn partition_page(
        &self,
        dataset_id: i64,
        filter: &PartitionFilter,
        after: Option<&PartitionCursor>,
        limit: usize,
    ) -> Result<(Vec<PartitionWithFiles>, bool)> {
        let mut sql =
            format!("SELECT {PARTITION_COLUMNS} FROM partitions p WHERE p.dataset_id = ? AND p.deleted_at_ns IS NULL");
        let mut values: Vec<Value> = vec![Value::Integer(dataset_id)];
        let mut clause = |text: &str, value: Value| {
            sql.push_str(text);
            values.push(value);
        };
        if let Some(tier) = filter.tier {
            clause(" AND p.tier = ?", Value::Text(tier.as_str().to_string()));
        }
        if let Some(from) = filter.from_ns {
            clause(" AND p.period_end_ns > ?", Value::Integer(from));
        }
        if let Some(to) = filter.to_ns {
            clause(" AND p.period_start_ns < ?", Value::Integer(to));
        }
        if let Some(key) = &filter.key {
            clause(" AND p.key = ?", Value::Text(key.clone()));
        }
        if let Some(read_only) = filter.read_only {
            clause(" AND p.read_only = ?", Value::Integer(i64::from(read_only)));
        }
        if let Some(cursor) = after {
            sql.push_str(" AND (p.period_start_ns, p.key, p.id) > (?, ?, ?)");
            values.extend([
                Value::Integer(cursor.period_start_ns),
                Value::Text(cursor.key.clone()),
                Value::Integer(cursor.id),
            ]);
        }
        sql.push_str(" ORDER BY p.period_start_ns, p.key, p.id LIMIT ?");
        values.push(Value::Integer(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)));
        let connection = self.lock();
        let mut records: Vec<PartitionRecord> = connection
            .prepare(&sql)?
            .query_map(rusqlite::params_from_iter(values), partition_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        let more = records.len() > limit;
        records.truncate(limit);
        let mut page = Vec::with_capacity(records.len());
        for record in records {
            let live = Catalog::live_files(&connection, record.id)?;
            page.push((record, live));
        }
        Ok((page, more))
    }

    /// The partitions of a dataset whose period is labelled `label`, or
    /// (with `label` `None`) whose period contains `at_ns`, each with its
    /// live files, in `(key, id)` order.
    pub fn period_partitions(
        &self,
        dataset_id: i64,
        label: Option<&str>,
        at_ns: i64,
    ) -> Result<Vec<PartitionWithFiles>> {
        let connection = self.lock();
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {PARTITION_COLUMNS} FROM partitions p WHERE p.dataset_id = ?1 AND p.deleted_at_ns IS NULL \
             AND CASE WHEN ?2 IS NULL THEN p.period_start_ns <= ?3 AND p.period_end_ns > ?3 ELSE p.period_label = ?2 END \
             ORDER BY p.key, p.id"
        ))?;
        let records: Vec<PartitionRecord> = statement
            .query_map(params![dataset_id, label, at_ns], partition_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let live = Catalog::live_files(&connection, record.id)?;
            out.push((record, live));
        }
        Ok(out)
    }

    /// Appends an audit event naming the actor that asked for it.
    pub fn audit_by(
        &self,
        kind: AuditKind,
        dataset: &str,
        partition: &str,
        detail: &serde_json::Value,
        actor: &str,
        now_ns: i64,
    ) -> Result<()> {
        self.lock()
            .execute(INSERT_AUDIT, params![now_ns, kind.as_str(), dataset, partition, detail.to_string(), actor])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::catalog;
    use crate::period::{Bucket, Period};

    const DAY: i64 = 86_400_000_000_000;

    fn bucket(day: i64) -> Bucket {
        Period::Day.bucket(day * DAY)
    }

    /// Every page of a walk, concatenated, as `(day, key)`.
    fn walk(catalog: &Catalog, dataset: i64, filter: &PartitionFilter, limit: usize) -> Vec<(i64, String)> {
        let (mut out, mut cursor) = (Vec::new(), None);
        loop {
            let (page, more) = catalog.partition_page(dataset, filter, cursor.as_ref(), limit).unwrap();
            assert!(page.len() <= limit);
            out.extend(page.iter().map(|(p, _)| (p.period_start_ns / DAY, p.key.clone())));
            if !more {
                return out;
            }
            cursor = Some(PartitionCursor::after(&page.last().unwrap().0));
        }
    }

    #[test]
    fn pages_walk_every_partition_once_in_order_and_filters_run_in_sql() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", Period::Day, "time", 0).unwrap();
        for day in (0..5).rev() {
            for key in ["b", "a", "c"] {
                catalog.partition(dataset.id, &bucket(day), key, 0).unwrap();
            }
        }
        let all = walk(&catalog, dataset.id, &PartitionFilter::default(), 2);
        let expected: Vec<(i64, String)> = (0..5).flat_map(|d| ["a", "b", "c"].map(|k| (d, k.to_string()))).collect();
        assert_eq!(all, expected);
        let filter = PartitionFilter {
            from_ns: Some(DAY + 1),
            to_ns: Some(3 * DAY),
            key: Some("b".into()),
            ..PartitionFilter::default()
        };
        assert_eq!(walk(&catalog, dataset.id, &filter, 1), [(1, "b".to_string()), (2, "b".to_string())]);
        let hot_sealed = PartitionFilter { tier: Some(Tier::Cold), ..PartitionFilter::default() };
        assert!(walk(&catalog, dataset.id, &hot_sealed, 10).is_empty());
        let at = catalog.period_partitions(dataset.id, None, 2 * DAY + 5).unwrap();
        let by_label = catalog.period_partitions(dataset.id, Some(&bucket(2).label), 0).unwrap();
        let keys = |v: &[PartitionWithFiles]| v.iter().map(|(p, _)| p.key.clone()).collect::<Vec<_>>();
        assert_eq!((keys(&at), keys(&by_label)), (vec!["a".into(), "b".into(), "c".into()], keys(&at)));
        let totals = catalog.key_totals(dataset.id).unwrap();
        assert_eq!(
            totals.iter().map(|t| (t.key.as_str(), t.partitions)).collect::<Vec<_>>(),
            [("a", 5), ("b", 5), ("c", 5)]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
