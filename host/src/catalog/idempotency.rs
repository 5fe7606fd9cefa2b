//! Idempotency records: the first answer to a write sent with an
//! `Idempotency-Key`, so a retry gets the same answer.
//!
//! Records reach the catalog in batches, before the WAL segments holding
//! their entries are deleted (until then replay rebuilds them).

use rusqlite::{OptionalExtension, params};

use super::{Catalog, CatalogError, Result};

/// A stored idempotency record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// SHA-256 of what identifies the request (body and parameters).
    pub request_sha256: [u8; 32],
    /// HTTP status of the first response.
    pub status: u16,
    /// Body of the first response.
    pub response: String,
}

impl Catalog {
    /// A stored idempotency record.
    pub fn idempotency(&self, dataset_id: i64, key: &str) -> Result<Option<IdempotencyRecord>> {
        let connection = self.lock();
        let row = connection
            .query_row(
                "SELECT request_sha256, status, response FROM idempotency_keys WHERE dataset_id = ?1 AND key = ?2",
                params![dataset_id, key],
                |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, u16>(1)?, row.get::<_, String>(2)?)),
            )
            .optional()?;
        row.map(|(hash, status, response)| {
            let request_sha256 =
                hash.try_into().map_err(|_| CatalogError::Corrupt("idempotency hash length".into()))?;
            Ok(IdempotencyRecord { request_sha256, status, response })
        })
        .transpose()
    }

    /// Stores idempotency records (existing keys are kept).
    pub fn save_idempotency(&self, records: &[(i64, String, IdempotencyRecord)], now_ns: i64) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        {
            let mut statement = tx.prepare(
                "INSERT OR IGNORE INTO idempotency_keys (dataset_id, key, request_sha256, status, response, created_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (dataset_id, key, record) in records {
                statement.execute(params![
                    dataset_id,
                    key,
                    &record.request_sha256[..],
                    record.status,
                    record.response,
                    now_ns
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets up to `limit` idempotency records stored before
    /// `before_ns`; returns how many. Callers loop while it returns
    /// `limit`, so the catalog is never held for one long delete.
    pub fn prune_idempotency(&self, before_ns: i64, limit: usize) -> Result<usize> {
        Ok(self.lock().execute(
            "DELETE FROM idempotency_keys WHERE rowid IN \
             (SELECT rowid FROM idempotency_keys WHERE created_at_ns < ?1 ORDER BY created_at_ns LIMIT ?2)",
            params![before_ns, limit as i64],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::catalog;
    use crate::period::Period;

    #[test]
    fn schemas_and_idempotency_round_trip() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("ev", Period::Day, "time", 1).unwrap();
        assert_eq!(catalog.schema(dataset.id).unwrap().version, 0);
        let next = catalog
            .schema(dataset.id)
            .unwrap()
            .evolve(&[crate::schema::ColumnDef { name: "a".into(), kind: crate::schema::ColumnKind::Float }])
            .unwrap()
            .unwrap();
        catalog.save_schema(dataset.id, &next, 2).unwrap();
        assert_eq!(catalog.schema(dataset.id).unwrap(), next);
        let record = IdempotencyRecord { request_sha256: [3; 32], status: 200, response: "{}".into() };
        catalog.save_idempotency(&[(dataset.id, "k".into(), record.clone())], 3).unwrap();
        assert_eq!(catalog.idempotency(dataset.id, "k").unwrap(), Some(record));
        assert_eq!(catalog.idempotency(dataset.id, "other").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pruning_forgets_only_records_stored_before_the_cutoff_a_batch_at_a_time() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("ev", Period::Day, "time", 1).unwrap();
        let record = IdempotencyRecord { request_sha256: [3; 32], status: 204, response: String::new() };
        for at in 0..5 {
            catalog.save_idempotency(&[(dataset.id, format!("k{at}"), record.clone())], at * 10).unwrap();
        }
        assert_eq!(catalog.prune_idempotency(30, 2).unwrap(), 2, "a batch");
        assert_eq!(catalog.prune_idempotency(30, 2).unwrap(), 1, "the last one before the cutoff");
        assert_eq!(catalog.prune_idempotency(30, 2).unwrap(), 0);
        let kept: Vec<bool> =
            (0..5).map(|at| catalog.idempotency(dataset.id, &format!("k{at}")).unwrap().is_some()).collect();
        assert_eq!(kept, [false, false, false, true, true]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
