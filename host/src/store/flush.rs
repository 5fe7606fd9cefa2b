//! Flush: buffered rows → Parquet → storage → catalog commit, then WAL
//! truncation.
//!
//! A flush takes a partition's buffered chunks (seq ≤ S), writes them as one
//! create-only file, checks it as stored (see `check_stored`), and commits
//! the file with `flushed_wal_seq = S` in one catalog transaction under the
//! `visibility` lock, then drops the chunks it covered. Partitions flush in
//! groups: their files are written on several threads into one storage
//! batch, the batch is sealed (made durable together: one `syncfs` on a
//! local target, each put on its own on a remote one), and only then does
//! one transaction commit the whole group, so a flush of thousands of small
//! partitions costs a few syncs and transactions, not thousands. A file
//! written but never committed is unreferenced and deleted at once (or by
//! the next start-up's orphan sweep). WAL segments go only once every entry
//! in them is below the watermark `min(lowest buffered seq, last applied
//! seq + 1)`, and only after the idempotency keys of those entries are saved
//! in the catalog.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Store, internal, on_blocking_pool};
use crate::buffer::FlushSnapshot;
use crate::catalog::{FlushCommit, IdempotencyRecord, NewFile};
use crate::error::{ErrorCode, Failure};
use crate::parquet_file;
use crate::storage::{Fingerprint, ObjectKey, PutBatch};
use crate::sync::{Recover as _, RecoverRw as _};
use crate::time::now_ns;

/// Partitions committed by one catalog transaction.
const FLUSH_GROUP: usize = 1024;
/// Threads writing a group's files at most: encoding uses every core, and a
/// target whose puts are each durable (remote) overlaps their latency.
const FLUSH_WORKERS: usize = 16;
/// Buffered bytes that may be encoded at once across a group's threads:
/// large partitions flush one or a few at a time, as before.
const FLUSH_PARALLEL_BYTES: u64 = 64 << 20;

/// One partition's file, written and verified, not yet committed.
struct Written {
    partition_id: i64,
    max_seq: u64,
    key: ObjectKey,
    file: NewFile,
}

impl Store {
    /// Flushes due partitions (by size and age, or everything) and truncates
    /// the WAL. Returns how many partitions were flushed.
    pub async fn flush(self: &Arc<Self>, everything: bool) -> Result<usize, Failure> {
        let _guard = self.flush_lock.lock().await;
        let mut flushed = 0;
        let mut first_error = None;
        for group in self.due_partitions(everything).chunks(FLUSH_GROUP) {
            let (store, group) = (self.clone(), group.to_vec());
            let (committed, errors) = on_blocking_pool(move || store.flush_group(&group)).await?;
            flushed += committed;
            for (partition_id, error) in errors {
                tracing::error!(partition_id, %error, "flush failed; rows stay buffered and in the WAL");
                first_error.get_or_insert(error);
            }
        }
        let store = self.clone();
        on_blocking_pool(move || store.truncate_wal()).await??;
        match first_error {
            Some(error) if flushed == 0 => Err(error),
            _ => Ok(flushed),
        }
    }

    /// The partitions due by size and age (or all of them); under memory
    /// pressure with none due, the largest ones first.
    fn due_partitions(&self, everything: bool) -> Vec<i64> {
        let ingest = &self.config.ingest;
        let due = self.buffers.due(ingest.flush_bytes, Duration::from_millis(ingest.flush_age_ms), everything);
        let high_water = self.config.limits.buffer_bytes_max / 2;
        let buffered = self.buffers.unpacked_bytes();
        if due.is_empty() && buffered > high_water {
            return self.buffers.largest(buffered - high_water);
        }
        due
    }

    /// Flushes a group of partitions: each file written and verified (on
    /// several threads), then all of them committed in one catalog
    /// transaction, then their buffered rows dropped. A partition whose
    /// file fails keeps its rows buffered; a failed commit keeps every
    /// partition's. Returns how many were committed, and the failures.
    fn flush_group(&self, partitions: &[i64]) -> (usize, Vec<(i64, Failure)>) {
        let batch = match self.hot.begin_batch() {
            Ok(batch) => batch,
            Err(error) => {
                let error = Failure::from(error);
                return (0, partitions.iter().map(|id| (*id, error.clone())).collect());
            }
        };
        let mut errors = Vec::new();
        let mut written = Vec::with_capacity(partitions.len());
        for (partition_id, result) in self.write_files(partitions, &batch) {
            match result {
                Ok(Some(file)) => written.push(file),
                Ok(None) => {}
                Err(error) => errors.push((partition_id, error)),
            }
        }
        if written.is_empty() {
            return (0, errors);
        }
        crate::failpoint::hit("flush.before_seal");
        // Nothing is committed before the files' bytes and directory
        // entries are durable.
        if let Err(error) = self.hot.seal_batch(batch) {
            return (0, self.abandon(&written, Failure::from(error), errors));
        }
        let commits: Vec<FlushCommit> = written
            .iter()
            .map(|w| FlushCommit { partition_id: w.partition_id, file: w.file.clone(), flushed_wal_seq: w.max_seq })
            .collect();
        let visible = self.visibility.write_or_recover();
        if let Err(error) = self.catalog.commit_flushes(&commits, now_ns()) {
            drop(visible);
            return (0, self.abandon(&written, Failure::from(error), errors));
        }
        for w in &written {
            self.note_flushed_wal_seq(w.partition_id, w.max_seq);
        }
        crate::failpoint::hit("flush.after_commit");
        for w in &written {
            self.buffers.finish_flush(w.partition_id, w.max_seq);
        }
        (written.len(), errors)
    }

    /// Gives up on written files: their partitions' rows stay buffered and
    /// the files, never committed, are removed. Returns `errors` with one
    /// for each.
    fn abandon(&self, written: &[Written], error: Failure, mut errors: Vec<(i64, Failure)>) -> Vec<(i64, Failure)> {
        for w in written {
            self.buffers.abort_flush(w.partition_id);
            // Never committed, so unreferenced: safe to remove now.
            let _ = self.hot.delete(&w.key);
            errors.push((w.partition_id, error.clone()));
        }
        errors
    }

    /// Writes and verifies the file of each partition, on up to
    /// `FLUSH_WORKERS` threads (fewer for large partitions). `Ok(None)`: the
    /// partition had nothing to flush (or is being flushed).
    #[allow(clippy::type_complexity)]
    fn write_files(&self, partitions: &[i64], batch: &PutBatch) -> Vec<(i64, Result<Option<Written>, Failure>)> {
        let largest = partitions.iter().map(|id| self.buffers.partition_unpacked_bytes(*id)).max().unwrap_or(0);
        let by_bytes = (FLUSH_PARALLEL_BYTES / largest.max(1)).max(1) as usize;
        let workers = FLUSH_WORKERS.min(by_bytes).min(partitions.len()).max(1);
        if workers == 1 {
            return partitions.iter().map(|id| (*id, self.write_partition(*id, batch))).collect();
        }
        let next = AtomicUsize::new(0);
        let mut results: Vec<(usize, i64, Result<Option<Written>, Failure>)> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(id) = partitions.get(i) else { return mine };
                            mine.push((i, *id, self.write_partition(*id, batch)));
                        }
                    })
                })
                .collect();
            threads.into_iter().flat_map(|t| t.join().expect("flush writers do not panic")).collect()
        });
        results.sort_by_key(|(i, _, _)| *i);
        results.into_iter().map(|(_, id, result)| (id, result)).collect()
    }

    /// Takes a partition's buffered rows and writes them as one verified
    /// file; on failure the rows stay buffered and a written file is removed.
    fn write_partition(&self, partition_id: i64, batch: &PutBatch) -> Result<Option<Written>, Failure> {
        let Some(snapshot) = self.buffers.begin_flush(partition_id) else { return Ok(None) };
        let mut written: Option<ObjectKey> = None;
        match self.write_snapshot(partition_id, &snapshot, batch, &mut written) {
            Ok(file) => {
                let key = written.expect("a written file has its key");
                Ok(Some(Written { partition_id, max_seq: snapshot.max_seq, key, file }))
            }
            Err(error) => {
                self.buffers.abort_flush(partition_id);
                if let Some(key) = written {
                    // Never committed, so unreferenced: safe to remove now.
                    let _ = self.hot.delete(&key);
                }
                Err(error)
            }
        }
    }

    fn write_snapshot(
        &self,
        partition_id: i64,
        snapshot: &FlushSnapshot,
        batch: &PutBatch,
        written: &mut Option<ObjectKey>,
    ) -> Result<NewFile, Failure> {
        let dataset = self.datasets().into_iter().find(|d| d.record.id == snapshot.dataset_id).ok_or_else(|| {
            Failure::new(ErrorCode::Internal, format!("flush of unknown dataset {}", snapshot.dataset_id))
        })?;
        let schema = dataset.schema();
        let ingest = &self.config.ingest;
        let file = parquet_file::encode(&snapshot.batches, &schema, ingest.row_group_rows_max, ingest.zstd_level)
            .map_err(|e| internal("encode Parquet", e))?;
        let file_name = format!("{:020}-{:016x}", snapshot.max_seq, rand::random::<u64>());
        let key = ObjectKey::data_file(snapshot.dataset_id, partition_id, &file_name);
        self.hot.put_in(batch, &key, &file.bytes)?;
        *written = Some(key.clone());
        crate::failpoint::hit("flush.after_file_write");
        self.check_stored(&key, &file)?;
        Ok(NewFile::encoded(self.hot.name(), key.to_string(), &file))
    }

    /// Pair assertion across the IO: what storage holds is what we encoded.
    /// A target whose puts are exact (a local directory) stores the very
    /// bytes `encode` checked in memory (checksum, footer, row count): a
    /// read-back would come from the page cache the write filled, and the
    /// batch's seal reports any writeback error; the CRC32C committed with
    /// the file is what moves, archives and compactions check the stored
    /// bytes against. Any other target is read back: size and checksum
    /// streamed, the footer's row count by ranged reads.
    fn check_stored(&self, key: &ObjectKey, file: &parquet_file::EncodedFile) -> Result<(), Failure> {
        if self.hot.puts_are_exact() {
            return Ok(());
        }
        let fingerprint = Fingerprint::of(&file.bytes);
        self.hot.verify(key, &fingerprint)?;
        crate::storage::check_footer(self.hot.as_ref(), key, fingerprint.size, file.rows)?;
        Ok(())
    }

    /// Records a committed flush's sequence: replay skips a partition's rows
    /// at or below it, so going back would replay rows a file holds.
    fn note_flushed_wal_seq(&self, partition_id: i64, seq: u64) {
        let mut flushed = self.flushed_wal_seq.lock_or_recover();
        let previous = flushed.entry(partition_id).or_insert(0);
        assert!(
            seq >= *previous,
            "a partition's flushed_wal_seq never decreases: partition {partition_id} committed {seq} after {previous}"
        );
        *previous = seq;
    }

    /// Persists the idempotency keys of WAL entries about to be deleted, then
    /// deletes WAL segments whose rows are all in committed files.
    fn truncate_wal(&self) -> Result<(), Failure> {
        let applied = self.wal.applied_through();
        let low = self.buffers.low_watermark().unwrap_or(u64::MAX).min(applied + 1);
        let leaving: Vec<(i64, String, IdempotencyRecord)> = self
            .idempotency
            .lock_or_recover()
            .recent
            .iter()
            .filter(|(_, (seq, _))| *seq < low)
            .map(|((dataset, key), (_, record))| (*dataset, key.clone(), record.clone()))
            .collect();
        if !leaving.is_empty() {
            self.catalog.save_idempotency(&leaving, now_ns())?;
            let mut memory = self.idempotency.lock_or_recover();
            for (dataset, key, _) in &leaving {
                memory.recent.remove(&(*dataset, key.clone()));
            }
        }
        self.wal.remove_segments_below(low)?;
        Ok(())
    }

    /// Runs the flush loop until `shutdown` fires.
    pub async fn run_flusher(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Expired idempotency keys are forgotten a batch per tick, between
        // flushes, so a backlog never holds a flush up.
        let (mut pruned_at, mut more_expired): (Option<Instant>, bool) = (None, false);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(error) = self.flush(false).await {
                tracing::error!(%error, "flush round failed");
            }
            if more_expired || pruned_at.is_none_or(|at| at.elapsed() >= super::idempotency::PRUNE_EVERY) {
                pruned_at = Some(Instant::now());
                more_expired = match self.prune_idempotency_keys().await {
                    Ok((0, _)) => false,
                    Ok((keys, more)) => {
                        tracing::info!(keys, "expired idempotency keys forgotten");
                        more
                    }
                    Err(error) => {
                        tracing::error!(%error, "forgetting expired idempotency keys failed");
                        false
                    }
                };
            }
        }
    }

    /// Flushes everything, truncates the WAL and stops the WAL writer.
    pub async fn close(self: &Arc<Self>) -> Result<(), Failure> {
        self.closed.store(true, Ordering::Release);
        let result = self.flush(true).await;
        let store = self.clone();
        on_blocking_pool(move || store.wal.close()).await?;
        result.map(|_| ())
    }
}
