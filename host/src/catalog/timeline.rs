//! A dataset's partitions summed per (time bucket, lane, tier) for the
//! console's timeline: one `GROUP BY` in SQLite, so a dataset with 100,000
//! partitions answers a few hundred rows instead of every partition.
//!
//! **Invariant:** the cells cover every live partition exactly once: a
//! partition belongs to the bucket its period starts in and to its key's
//! lane, or to the `other` lane when its key is not among the top keys.

use rusqlite::OptionalExtension as _;

use super::{Catalog, Result, decode};
use crate::period::Period;
use crate::tier::Tier;

/// Most buckets a timeline may ask for.
pub const TIMELINE_BUCKETS_MAX: usize = 2_000;
/// Most lanes (top keys) a timeline may ask for; the rest share `other`.
pub const TIMELINE_LANES_MAX: usize = 200;

/// What the timeline's cells are computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineShape {
    /// Live partitions of the dataset.
    pub partitions: i64,
    /// Distinct partition keys.
    pub keys: i64,
    /// Periods in the span from the first to the last (empty ones
    /// included), counted up to one more than the buckets asked for.
    pub periods: i64,
    /// Start of the first period, in ns (0 without partitions).
    pub first_start_ns: i64,
    /// End of the last period, in ns (0 without partitions).
    pub last_end_ns: i64,
    /// Width of a bucket in ns; 0 when every period is its own bucket.
    pub bucket_ns: i64,
    /// The lanes' keys, largest bytes first; keys not listed share `other`.
    pub lanes: Vec<String>,
}

/// One (bucket, lane, tier) sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineCell {
    /// Start of the bucket: its period's start, or the first period's start
    /// plus a whole number of bucket widths.
    pub start_ns: i64,
    /// End of the bucket's last period, in ns.
    pub end_ns: i64,
    /// Index into [`TimelineShape::lanes`]; `None` for `other`.
    pub lane: Option<usize>,
    /// The partitions' tier.
    pub tier: Tier,
    /// Partitions in the cell.
    pub partitions: i64,
    /// Committed rows.
    pub rows: i64,
    /// Committed bytes.
    pub bytes: i64,
    /// Partitions sealed (read-only).
    pub sealed: i64,
    /// Partitions with an archive copy.
    pub archived: i64,
    /// Partitions whose last compaction failed.
    pub failed: i64,
    /// The single partition's period label and key, when the cell holds one.
    pub only: Option<(String, String)>,
}

const LIVE: &str = "p.dataset_id = ?1 AND p.deleted_at_ns IS NULL";

/// Periods of `period` from the one starting at `first_ns` until `end_ns`,
/// counted up to `max + 1` (enough to tell whether they fit `max` buckets).
fn periods_between(period: Period, first_ns: i64, end_ns: i64, max: i64) -> i64 {
    let mut count = 0;
    let mut at = first_ns;
    while at < end_ns && count <= max {
        at = period.bucket(at).end_ns;
        count += 1;
    }
    count
}

impl Catalog {
    /// The dataset's partitions summed into at most `buckets` time buckets
    /// (one per period of `period` when the span fits) and `lanes` lanes
    /// (the keys with the most bytes, then `other`), read under one lock
    /// with the dataset's `partitions_seq` they are current for.
    pub fn timeline(
        &self,
        dataset_id: i64,
        period: Period,
        buckets: usize,
        lanes: usize,
    ) -> Result<(i64, TimelineShape, Vec<TimelineCell>)> {
        let connection = self.lock();
        let seq: i64 = connection
            .query_row("SELECT partitions_seq FROM datasets WHERE id = ?1", [dataset_id], |row| row.get(0))
            .optional()?
            .unwrap_or(0);
        // One pass per key gives the totals, the span and the lanes.
        let mut statement = connection.prepare_cached(&format!(
            "SELECT p.key, COUNT(*), SUM(p.bytes), MIN(p.period_start_ns), MAX(p.period_end_ns) \
             FROM partitions p WHERE {LIVE} GROUP BY p.key ORDER BY SUM(p.bytes) DESC, COUNT(*) DESC, p.key"
        ))?;
        let keys: Vec<(String, i64, i64, i64, i64)> = statement
            .query_map([dataset_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let partitions = keys.iter().map(|k| k.1).sum();
        let first_start_ns = keys.iter().map(|k| k.3).min().unwrap_or(0);
        let last_end_ns = keys.iter().map(|k| k.4).max().unwrap_or(0);
        let buckets = buckets.clamp(1, TIMELINE_BUCKETS_MAX) as i64;
        let periods = periods_between(period, first_start_ns, last_end_ns, buckets);
        let bucket_ns = if periods <= buckets {
            0
        } else {
            // Ceiling division: `buckets` buckets of this width cover the span.
            (last_end_ns.saturating_sub(first_start_ns) + buckets - 1) / buckets
        };
        let lanes = keys.iter().take(lanes.min(TIMELINE_LANES_MAX)).map(|k| k.0.clone()).collect();
        let shape = TimelineShape {
            partitions,
            keys: keys.len() as i64,
            periods,
            first_start_ns,
            last_end_ns,
            bucket_ns,
            lanes,
        };
        let cells = Self::timeline_cells(&connection, dataset_id, &shape)?;
        Ok((seq, shape, cells))
    }

    fn timeline_cells(
        connection: &rusqlite::Connection,
        dataset_id: i64,
        shape: &TimelineShape,
    ) -> Result<Vec<TimelineCell>> {
        // The lanes' keys are bound through a JSON array (one parameter
        // whatever their number); `lane` is the key's index, or NULL.
        let lanes_json = serde_json::to_string(&shape.lanes).unwrap_or_else(|_| "[]".into());
        let bucket = if shape.bucket_ns == 0 {
            "p.period_start_ns".to_string()
        } else {
            "?3 + ((p.period_start_ns - ?3) / ?4) * ?4".to_string()
        };
        let sql = format!(
            "WITH lanes AS (SELECT CAST(j.key AS INTEGER) AS lane, j.value AS key FROM json_each(?2) j) \
             SELECT {bucket} AS bucket, MAX(p.period_end_ns), l.lane, p.tier, COUNT(*), SUM(p.row_count), SUM(p.bytes), \
                    SUM(p.read_only != 0), SUM(p.has_archive != 0), \
                    SUM(p.id IN (SELECT c.partition_id FROM compaction_checkpoints c WHERE c.status = 'failed')), \
                    MIN(p.period_label), MIN(p.key) \
             FROM partitions p LEFT JOIN lanes l ON l.key = p.key \
             WHERE {LIVE} GROUP BY bucket, l.lane, p.tier ORDER BY bucket, l.lane IS NULL, l.lane, p.tier"
        );
        let mut statement = connection.prepare(&sql)?;
        let map = |row: &rusqlite::Row<'_>| -> rusqlite::Result<TimelineCell> {
            let partitions: i64 = row.get(4)?;
            let lane: Option<i64> = row.get(2)?;
            Ok(TimelineCell {
                start_ns: row.get(0)?,
                end_ns: row.get(1)?,
                lane: lane.map(|l| l as usize),
                tier: decode(row, 3, "tier", Tier::parse)?,
                partitions,
                rows: row.get(5)?,
                bytes: row.get(6)?,
                sealed: row.get(7)?,
                archived: row.get(8)?,
                failed: row.get(9)?,
                only: if partitions == 1 { Some((row.get(10)?, row.get(11)?)) } else { None },
            })
        };
        let rows = if shape.bucket_ns == 0 {
            statement.query_map(rusqlite::params![dataset_id, lanes_json], map)?.collect::<rusqlite::Result<_>>()
        } else {
            statement
                .query_map(rusqlite::params![dataset_id, lanes_json, shape.first_start_ns, shape.bucket_ns], map)?
                .collect::<rusqlite::Result<_>>()
        };
        Ok(rows?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::catalog;

    #[test]
    fn an_empty_dataset_has_no_cells() {
        let (catalog, dir) = catalog();
        let (_, shape, cells) = catalog.timeline(42, crate::period::Period::Day, 10, 5).unwrap();
        assert_eq!((shape.partitions, shape.bucket_ns, cells.len()), (0, 0, 0));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Ten days, three keys with 1, 2 and 3 bytes a partition, and a
    /// sealed one: the top two keys get lanes, the third is `other`, and
    /// every partition is counted once whether the days fit or are bucketed.
    #[test]
    fn cells_cover_every_partition_once_in_lanes_and_buckets() {
        let (catalog, dir) = catalog();
        let day = crate::period::Period::Day;
        let dataset = catalog.create_dataset("m", day, "time", 0).unwrap();
        let mut sealed = None;
        for d in 0..10i64 {
            let bucket = day.bucket(d * 86_400_000_000_000);
            for (key, bytes) in [("a", 1), ("b", 2), ("c", 3)] {
                let partition = catalog.partition(dataset.id, &bucket, key, 0).unwrap();
                catalog
                    .lock()
                    .execute("UPDATE partitions SET bytes = ?1 WHERE id = ?2", [bytes, partition.id])
                    .unwrap();
                sealed.get_or_insert(partition.id);
            }
        }
        catalog.lock().execute("UPDATE partitions SET read_only = 1 WHERE id = ?1", [sealed.unwrap()]).unwrap();
        let (seq, shape, cells) = catalog.timeline(dataset.id, day, 100, 2).unwrap();
        assert_eq!(seq, catalog.partitions_seq(dataset.id).unwrap());
        assert_eq!((shape.partitions, shape.keys, shape.periods, shape.bucket_ns), (30, 3, 10, 0));
        assert_eq!(shape.lanes, ["c", "b"]);
        assert_eq!(cells.len(), 30);
        assert!(cells.iter().all(|c| c.partitions == 1 && c.only.is_some()));
        let other: Vec<_> = cells.iter().filter(|c| c.lane.is_none()).collect();
        assert_eq!(other.len(), 10);
        assert!(other.iter().all(|c| c.only.as_ref().unwrap().1 == "a" && c.bytes == 1));
        assert_eq!(cells.iter().map(|c| c.sealed).sum::<i64>(), 1);

        let (_, shape, cells) = catalog.timeline(dataset.id, day, 3, 1).unwrap();
        assert_eq!(shape.bucket_ns, (10 * 86_400_000_000_000 + 2) / 3);
        assert_eq!(cells.iter().map(|c| c.partitions).sum::<i64>(), 30);
        assert_eq!(cells.iter().map(|c| c.bytes).sum::<i64>(), 60);
        let starts: std::collections::BTreeSet<i64> = cells.iter().map(|c| c.start_ns).collect();
        assert_eq!(starts.len(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
