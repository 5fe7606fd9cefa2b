//! In-memory rows awaiting flush, per partition, kept packed (see
//! [`pack`]) and decoded to Arrow batches when queries or flushes read them.
//!
//! **Invariant:** chunks arrive in WAL sequence order (the WAL writer thread
//! inserts them), so "every chunk of partition P with seq ≤ S" is exactly the
//! set of P's acknowledged rows up to S. A flush that commits P up to S can
//! therefore record S in the catalog and WAL replay can skip P's rows ≤ S.
//! A chunk is packed before it is inserted and never changes afterwards;
//! reading it gives back exactly the rows that were written.
//! `bytes()` is the memory the packed chunks hold; `flush_bytes` and
//! `buffer_bytes_max` compare against the unpacked (Arrow) size, which is
//! what a flush or a query materializes.
//!
//! A request's small parts (one row per tenant of a 5,000-tenant request)
//! share one packed chunk: each partition's chunk is a range of it, counted
//! its rows' share of the bytes. The shared chunk is freed with the last
//! range; only parts below [`SHARED_PART_ROWS_MAX`] rows share, so a range
//! never keeps alive more than that many rows per partition of its request.

mod pack;

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sync::Recover as _;
use arrow::record_batch::RecordBatch;

pub use pack::PackedBatch;

/// Parts of a request with fewer rows than this share one packed chunk.
pub const SHARED_PART_ROWS_MAX: usize = 256;

/// One request's rows for one partition.
#[derive(Debug, Clone)]
struct Chunk {
    /// The WAL sequence of the request.
    seq: u64,
    /// The packed rows: these and, when shared, other partitions' rows.
    packed: Arc<PackedBatch>,
    /// This partition's rows of `packed`.
    start: usize,
    len: usize,
    /// Memory counted for them (their share of a shared chunk).
    bytes: u64,
    /// Their size as Arrow.
    unpacked: u64,
}

impl Chunk {
    fn new(seq: u64, packed: Arc<PackedBatch>, start: usize, len: usize) -> Chunk {
        let total = packed.num_rows().max(1) as u64;
        let share = |n: u64| if len == packed.num_rows() { n } else { (n * len as u64).div_ceil(total) };
        let (bytes, unpacked) = (share(packed.bytes()), share(packed.unpacked_bytes()));
        Chunk { seq, packed, start, len, bytes, unpacked }
    }

    fn unpack(&self) -> RecordBatch {
        self.packed.unpack_range(self.start, self.len)
    }
}

#[derive(Debug)]
struct PartitionBuffer {
    dataset_id: i64,
    chunks: Vec<Chunk>,
    /// Memory the chunks hold.
    bytes: u64,
    /// Their size as Arrow batches.
    unpacked: u64,
    rows: u64,
    /// The WAL sequence of the last chunk (kept beside the counters, so the
    /// order check reads no chunk).
    last_seq: u64,
    oldest: Instant,
    flushing: bool,
}

/// What a flush takes out of a buffer.
#[derive(Debug)]
pub struct FlushSnapshot {
    /// The dataset.
    pub dataset_id: i64,
    /// The rows, in WAL order.
    pub batches: Vec<RecordBatch>,
    /// The highest WAL sequence among them.
    pub max_seq: u64,
}

/// Buffered rows of every partition.
#[derive(Debug, Default)]
pub struct Buffers {
    partitions: Mutex<FxHashMap<i64, PartitionBuffer>>,
    bytes: AtomicU64,
    unpacked: AtomicU64,
    rows: AtomicU64,
}

impl Buffers {
    /// Locks the partitions, carrying on past a poisoned lock: each critical
    /// section below leaves the map consistent at every panic point (the
    /// store's stance on poisoned locks, `store` module doc).
    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<i64, PartitionBuffer>> {
        self.partitions.lock_or_recover()
    }

    /// Packs and adds a chunk (called in WAL order).
    pub fn insert(&self, dataset_id: i64, partition_id: i64, seq: u64, batch: RecordBatch) {
        self.insert_packed(dataset_id, partition_id, seq, PackedBatch::pack(&batch));
    }

    /// Adds a packed chunk (called in WAL order).
    pub fn insert_packed(&self, dataset_id: i64, partition_id: i64, seq: u64, packed: PackedBatch) {
        let rows = packed.num_rows();
        self.insert_ranges(dataset_id, seq, [(partition_id, Arc::new(packed), 0, rows)]);
    }

    /// Adds one request's rows, each part `(partition, packed chunk, first
    /// row, rows)`: a range of a chunk that several partitions may share
    /// (called in WAL order).
    pub fn insert_ranges(
        &self,
        dataset_id: i64,
        seq: u64,
        parts: impl IntoIterator<Item = (i64, Arc<PackedBatch>, usize, usize)>,
    ) {
        let (mut bytes, mut unpacked, mut rows) = (0, 0, 0);
        let mut partitions = self.lock();
        for (partition_id, packed, start, len) in parts {
            let chunk = Chunk::new(seq, packed, start, len);
            (bytes, unpacked, rows) = (bytes + chunk.bytes, unpacked + chunk.unpacked, rows + len as u64);
            push(&mut partitions, dataset_id, partition_id, chunk);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.unpacked.fetch_add(unpacked, Ordering::Relaxed);
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Memory held by buffered rows across all partitions, in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The size as Arrow batches of the rows buffered across all partitions
    /// (what reading them all would allocate), in bytes.
    pub fn unpacked_bytes(&self) -> u64 {
        self.unpacked.load(Ordering::Relaxed)
    }

    /// Rows buffered across all partitions.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Partitions to flush: those whose rows take `flush_bytes` or more as
    /// Arrow batches or are older than `flush_age`, or all of them when
    /// `everything`; largest first.
    pub fn due(&self, flush_bytes: u64, flush_age: Duration, everything: bool) -> Vec<i64> {
        let partitions = self.lock();
        let mut due: Vec<(u64, i64)> = partitions
            .iter()
            .filter(|(_, b)| !b.flushing && !b.chunks.is_empty())
            .filter(|(_, b)| everything || b.unpacked >= flush_bytes || b.oldest.elapsed() >= flush_age)
            .map(|(id, b)| (b.unpacked, *id))
            .collect();
        due.sort_by(|a, b| b.cmp(a));
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// The largest partitions holding at least `bytes` (as Arrow batches)
    /// between them, for relief under memory pressure.
    pub fn largest(&self, bytes: u64) -> Vec<i64> {
        let partitions = self.lock();
        let mut all: Vec<(u64, i64)> = partitions
            .iter()
            .filter(|(_, b)| !b.flushing && !b.chunks.is_empty())
            .map(|(id, b)| (b.unpacked, *id))
            .collect();
        all.sort_by(|a, b| b.cmp(a));
        let mut total = 0;
        all.into_iter()
            .take_while(|(size, _)| {
                let take = total < bytes;
                total += size;
                take
            })
            .map(|(_, id)| id)
            .collect()
    }

    /// Marks a partition as flushing and returns its rows; `None` if it is
    /// empty or already flushing. The rows are unpacked outside the lock.
    pub fn begin_flush(&self, partition_id: i64) -> Option<FlushSnapshot> {
        let (dataset_id, chunks) = {
            let mut partitions = self.lock();
            let buffer = partitions.get_mut(&partition_id)?;
            if buffer.flushing || buffer.chunks.is_empty() {
                return None;
            }
            buffer.flushing = true;
            (buffer.dataset_id, buffer.chunks.clone())
        };
        Some(FlushSnapshot {
            dataset_id,
            batches: chunks.iter().map(Chunk::unpack).collect(),
            max_seq: chunks.last().map(|c| c.seq).unwrap_or(0),
        })
    }

    /// Drops the chunks a committed flush covered (seq ≤ `max_seq`).
    pub fn finish_flush(&self, partition_id: i64, max_seq: u64) {
        let mut partitions = self.lock();
        let Some(buffer) = partitions.get_mut(&partition_id) else { return };
        let keep_from = buffer.chunks.partition_point(|c| c.seq <= max_seq);
        let removed: Vec<Chunk> = buffer.chunks.drain(..keep_from).collect();
        let removed_bytes: u64 = removed.iter().map(|c| c.bytes).sum();
        let removed_rows: u64 = removed.iter().map(|c| c.len as u64).sum();
        buffer.bytes -= removed_bytes;
        let removed_unpacked: u64 = removed.iter().map(|c| c.unpacked).sum();
        buffer.unpacked -= removed_unpacked;
        self.unpacked.fetch_sub(removed_unpacked, Ordering::Relaxed);
        buffer.rows -= removed_rows;
        buffer.flushing = false;
        buffer.oldest = Instant::now();
        self.bytes.fetch_sub(removed_bytes, Ordering::Relaxed);
        self.rows.fetch_sub(removed_rows, Ordering::Relaxed);
        if buffer.chunks.is_empty() {
            partitions.remove(&partition_id);
        }
    }

    /// Ends a failed flush; the rows stay buffered.
    pub fn abort_flush(&self, partition_id: i64) {
        if let Some(buffer) = self.lock().get_mut(&partition_id) {
            buffer.flushing = false;
        }
    }

    /// The lowest WAL sequence still buffered.
    pub fn low_watermark(&self) -> Option<u64> {
        self.lock().values().filter_map(|b| b.chunks.first().map(|c| c.seq)).min()
    }

    /// Buffered `(rows, bytes held)` of one partition.
    pub fn partition_stats(&self, partition_id: i64) -> (u64, u64) {
        self.lock().get(&partition_id).map(|b| (b.rows, b.bytes)).unwrap_or((0, 0))
    }

    /// The size as Arrow batches (what a flush materializes) of one
    /// partition's buffered rows.
    pub fn partition_unpacked_bytes(&self, partition_id: i64) -> u64 {
        self.lock().get(&partition_id).map(|b| b.unpacked).unwrap_or(0)
    }

    /// The partitions of a dataset holding buffered rows, with their row counts.
    pub fn dataset_partitions(&self, dataset_id: i64) -> Vec<(i64, u64)> {
        self.lock().iter().filter(|(_, b)| b.dataset_id == dataset_id).map(|(id, b)| (*id, b.rows)).collect()
    }

    /// Buffered rows of a dataset's partitions that `wanted` accepts, per
    /// partition, unpacked outside the lock (only those are unpacked).
    pub fn dataset_batches(&self, dataset_id: i64, wanted: impl Fn(i64) -> bool) -> Vec<(i64, RecordBatch)> {
        let chunks: Vec<(i64, Chunk)> = self
            .lock()
            .iter()
            .filter(|(id, b)| b.dataset_id == dataset_id && wanted(**id))
            .flat_map(|(id, b)| b.chunks.iter().map(move |c| (*id, c.clone())))
            .collect();
        chunks.into_iter().map(|(id, chunk)| (id, chunk.unpack())).collect()
    }
}

/// Appends a chunk to its partition's buffer (the caller adds it to the
/// totals).
fn push(partitions: &mut FxHashMap<i64, PartitionBuffer>, dataset_id: i64, partition_id: i64, chunk: Chunk) {
    let buffer = partitions.entry(partition_id).or_insert_with(|| PartitionBuffer {
        dataset_id,
        chunks: Vec::new(),
        bytes: 0,
        unpacked: 0,
        rows: 0,
        last_seq: 0,
        oldest: Instant::now(),
        flushing: false,
    });
    if buffer.chunks.is_empty() {
        buffer.oldest = Instant::now();
    } else {
        assert!(
            buffer.last_seq <= chunk.seq,
            "the buffer receives WAL entries in sequence order: partition {partition_id} got seq {} after {}",
            chunk.seq,
            buffer.last_seq
        );
    }
    buffer.last_seq = chunk.seq;
    buffer.bytes += chunk.bytes;
    buffer.unpacked += chunk.unpacked;
    buffer.rows += chunk.len as u64;
    buffer.chunks.push(chunk);
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn batch(rows: usize) -> RecordBatch {
        RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(vec![1; rows])) as _)]).unwrap()
    }

    #[test]
    #[should_panic(expected = "the buffer receives WAL entries in sequence order")]
    fn an_entry_older_than_the_buffered_ones_stops_the_writer() {
        let buffers = Buffers::default();
        buffers.insert(1, 7, 5, batch(1));
        buffers.insert(1, 7, 4, batch(1));
    }

    #[test]
    fn partitions_sharing_a_chunk_read_and_flush_their_own_rows() {
        let buffers = Buffers::default();
        let rows = RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from_iter_values(0..10)) as _)]).unwrap();
        let shared = Arc::new(PackedBatch::pack(&rows));
        let ranges = [(20, 0, 3), (21, 3, 6), (22, 9, 1)];
        buffers.insert_ranges(1, 5, ranges.map(|(id, start, len)| (id, shared.clone(), start, len)));
        assert_eq!((buffers.rows(), buffers.partition_stats(21).0), (10, 6));
        assert!(buffers.bytes() >= shared.bytes(), "the shares cover the chunk");
        let mut read = buffers.dataset_batches(1, |id| id != 20);
        read.sort_by_key(|(id, _)| *id);
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].0, &read[0].1), (21, &rows.slice(3, 6)));
        assert_eq!((read[1].0, &read[1].1), (22, &rows.slice(9, 1)));
        let flushed = buffers.begin_flush(21).unwrap();
        assert_eq!(flushed.batches, vec![rows.slice(3, 6)]);
        buffers.finish_flush(21, flushed.max_seq);
        assert_eq!((buffers.rows(), Arc::strong_count(&shared)), (4, 3), "the other two ranges keep the chunk");
        for id in [20, 22] {
            let flushed = buffers.begin_flush(id).unwrap();
            buffers.finish_flush(id, flushed.max_seq);
        }
        assert_eq!((buffers.rows(), buffers.bytes(), buffers.unpacked_bytes()), (0, 0, 0));
        assert_eq!(Arc::strong_count(&shared), 1, "the last range freed the chunk");
    }

    #[test]
    fn flush_removes_only_what_it_covered() {
        let buffers = Buffers::default();
        buffers.insert(1, 10, 1, batch(2));
        buffers.insert(1, 10, 3, batch(3));
        buffers.insert(1, 11, 2, batch(1));
        assert_eq!(buffers.low_watermark(), Some(1));
        let snapshot = buffers.begin_flush(10).unwrap();
        assert_eq!(snapshot.max_seq, 3);
        assert!(buffers.begin_flush(10).is_none(), "one flush per partition at a time");
        buffers.insert(1, 10, 4, batch(4));
        buffers.finish_flush(10, snapshot.max_seq);
        assert_eq!(buffers.partition_stats(10).0, 4, "rows that arrived during the flush stay");
        assert_eq!(buffers.rows(), 5, "the totals follow");
        assert_eq!(buffers.low_watermark(), Some(2));
        let snapshot = buffers.begin_flush(11).unwrap();
        buffers.abort_flush(11);
        assert_eq!(buffers.partition_stats(11).0, 1);
        assert_eq!(snapshot.batches.len(), 1);
        assert_eq!(buffers.due(u64::MAX, Duration::from_secs(3600), true).len(), 2);
    }
}
