//! The write-ahead log: what makes an acknowledged write durable.
//!
//! One writer thread owns the open segment. Requests hand it encoded entries;
//! it takes everything queued, writes it with one `write`, issues one
//! `fdatasync` for the whole group (group commit), then — in sequence order —
//! runs each entry's `apply` (which makes the rows visible in the buffers) and
//! wakes the request. So a request is acknowledged only after its bytes are on
//! disk, and buffers always receive entries in WAL order.
//!
//! Record format: `len: u32 | crc32c(seq ‖ payload): u32 | seq: u64 | payload`.
//! Replay cuts off a torn last record (which can only be an unacknowledged
//! write) and refuses to start on a bad record that has intact data after it
//! (corruption: cutting it off would drop acknowledged rows).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::catalog::IdempotencyRecord;
use crate::storage::sync_dir;
use crate::sync::Recover as _;

/// A WAL failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalError {
    /// An IO error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// An earlier fsync failed; the log accepts nothing more until restart.
    #[error("the write-ahead log failed an fsync earlier and refuses writes until restart")]
    Poisoned,
    /// The writer thread is gone (shutdown).
    #[error("the write-ahead log is closed")]
    Closed,
    /// A payload could not be decoded.
    #[error("corrupt entry: {0}")]
    Corrupt(String),
}

impl crate::error::Coded for WalError {
    fn code(&self) -> crate::error::ErrorCode {
        crate::error::ErrorCode::Internal
    }

    fn message(&self) -> String {
        format!("write-ahead log: {self}")
    }
}

impl WalError {
    /// Whether the device is out of space.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WalError {
    let context = context.into();
    move |source| WalError::Io { context, source }
}

const HEADER_BYTES: usize = 16;
/// Entries larger than this are refused as corrupt on replay.
const ENTRY_BYTES_MAX: usize = 1 << 31;

/// One closed or open segment file.
#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    /// Highest sequence written into it; `first_seq - 1` while empty.
    last_seq: u64,
    open: bool,
}

struct Pending {
    payload: Vec<u8>,
    apply: Box<dyn FnOnce(u64) + Send>,
    done: tokio::sync::oneshot::Sender<Result<u64, WalError>>,
}

#[derive(Debug)]
struct Shared {
    segments: Mutex<Vec<Segment>>,
    /// Every entry with a sequence at or below this has been applied.
    applied_through: AtomicU64,
    /// The highest truncation watermark so far (`remove_segments_below`).
    truncated_below: AtomicU64,
    poisoned: AtomicBool,
}

/// The write-ahead log.
pub(crate) struct Wal {
    sender: Mutex<Option<mpsc::Sender<Pending>>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    dir: PathBuf,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish()
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(format!("list {}", dir.display())))? {
        let entry = entry.map_err(io("list WAL"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok()) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

impl Wal {
    /// Replays every segment in `dir`, calling `visit(seq, payload)` for each
    /// intact entry in order, truncates a torn tail, then opens the log for
    /// writing at the next sequence.
    pub fn open(
        dir: &Path,
        segment_bytes_max: u64,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), WalError>,
    ) -> Result<Wal, WalError> {
        fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let mut segments = Vec::new();
        let mut last_seq = 0u64;
        for (first_seq, path) in list_segments(dir)? {
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io(format!("read {}", path.display())))?;
            let mut at = 0usize;
            let mut segment_last = first_seq.saturating_sub(1);
            while at + HEADER_BYTES <= bytes.len() {
                let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
                if len >= ENTRY_BYTES_MAX || at + HEADER_BYTES + len > bytes.len() {
                    break;
                }
                let seq_and_payload = &bytes[at + 8..at + HEADER_BYTES + len];
                if crc32c::crc32c(seq_and_payload) != crc {
                    if at + HEADER_BYTES + len == bytes.len() {
                        break; // the last record was torn mid-write: unacknowledged
                    }
                    // A bad record with intact data after it is corruption, not
                    // a torn write; cutting it off would drop acknowledged rows.
                    return Err(WalError::Corrupt(format!(
                        "{} has a bad checksum at byte {at} followed by more records; refusing to start",
                        path.display()
                    )));
                }
                let seq = u64::from_le_bytes(seq_and_payload[..8].try_into().expect("8 bytes"));
                visit(seq, &seq_and_payload[8..])?;
                segment_last = seq;
                last_seq = last_seq.max(seq);
                at += HEADER_BYTES + len;
            }
            if at < bytes.len() {
                tracing::warn!(segment = %path.display(), valid_bytes = at, total_bytes = bytes.len(), "truncating torn WAL tail");
                let file = OpenOptions::new().write(true).open(&path).map_err(io("open torn segment"))?;
                file.set_len(at as u64).map_err(io("truncate torn segment"))?;
                file.sync_all().map_err(io("sync truncated segment"))?;
            }
            segments.push(Segment { path, last_seq: segment_last, open: false });
        }
        let next_seq = last_seq + 1;
        let shared = Arc::new(Shared {
            segments: Mutex::new(segments),
            applied_through: AtomicU64::new(last_seq),
            truncated_below: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
        });
        let (sender, receiver) = mpsc::channel();
        let writer = Writer::start(dir, next_seq, segment_bytes_max, shared.clone())?;
        let thread = std::thread::Builder::new()
            .name("strata-wal".into())
            .spawn(move || writer.run(receiver))
            .map_err(io("spawn WAL writer"))?;
        Ok(Wal { sender: Mutex::new(Some(sender)), shared, thread: Mutex::new(Some(thread)), dir: dir.to_path_buf() })
    }

    /// Appends `payload`; resolves with its sequence once it is fsync'd and
    /// `apply(seq)` has run on the writer thread.
    pub async fn append(&self, payload: Vec<u8>, apply: Box<dyn FnOnce(u64) + Send>) -> Result<u64, WalError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        {
            let sender = self.sender.lock_or_recover();
            let sender = sender.as_ref().ok_or(WalError::Closed)?;
            sender.send(Pending { payload, apply, done }).map_err(|_| WalError::Closed)?;
        }
        wait.await.map_err(|_| WalError::Closed)?
    }

    /// Every entry at or below this sequence has been applied to the buffers.
    pub fn applied_through(&self) -> u64 {
        self.shared.applied_through.load(Ordering::Acquire)
    }

    /// Deletes closed segments whose entries all have sequences below `low`.
    /// Returns how many were deleted.
    pub fn remove_segments_below(&self, low: u64) -> Result<usize, WalError> {
        // Entries below an earlier watermark may be gone already: a lower
        // one would mean the caller counts rows as unflushed that the log
        // no longer holds.
        let previous = self.shared.truncated_below.fetch_max(low, Ordering::AcqRel);
        assert!(low >= previous, "the WAL truncation watermark never decreases: {low} after {previous}");
        let doomed: Vec<Segment> = {
            let mut segments = self.shared.segments.lock_or_recover();
            let (doomed, kept): (Vec<Segment>, Vec<Segment>) =
                segments.drain(..).partition(|s| !s.open && s.last_seq < low);
            *segments = kept;
            doomed
        };
        for segment in &doomed {
            fs::remove_file(&segment.path).map_err(io(format!("remove {}", segment.path.display())))?;
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir).map_err(io("sync WAL directory"))?;
        }
        Ok(doomed.len())
    }

    /// Number of segment files.
    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.shared.segments.lock_or_recover().len()
    }

    /// Stops the writer after it has written everything queued.
    pub fn close(&self) {
        self.sender.lock_or_recover().take();
        if let Some(thread) = self.thread.lock_or_recover().take() {
            let _ = thread.join();
        }
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    size: u64,
    next_seq: u64,
    segment_bytes_max: u64,
    shared: Arc<Shared>,
}

impl Writer {
    fn start(dir: &Path, next_seq: u64, segment_bytes_max: u64, shared: Arc<Shared>) -> Result<Writer, WalError> {
        let (file, _) = Writer::new_segment(dir, next_seq, &shared)?;
        Ok(Writer { dir: dir.to_path_buf(), file, size: 0, next_seq, segment_bytes_max, shared })
    }

    fn new_segment(dir: &Path, first_seq: u64, shared: &Shared) -> Result<(File, PathBuf), WalError> {
        let path = segment_path(dir, first_seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("create {}", path.display())))?;
        sync_dir(dir).map_err(io("sync WAL directory"))?;
        let mut segments = shared.segments.lock_or_recover();
        for segment in segments.iter_mut() {
            segment.open = false;
        }
        segments.push(Segment { path: path.clone(), last_seq: first_seq - 1, open: true });
        Ok((file, path))
    }

    fn run(mut self, receiver: mpsc::Receiver<Pending>) {
        let mut buffer = Vec::new();
        while let Ok(first) = receiver.recv() {
            let group = gather(first, &receiver);
            match self.commit(&group, &mut buffer) {
                Ok(first_seq) => self.apply(group, first_seq),
                Err(failure) => {
                    for pending in group {
                        let _ = pending.done.send(Err(failure.error()));
                    }
                }
            }
        }
    }

    /// Writes the group's records with one `write` and one `fdatasync`.
    /// Returns the first record's sequence.
    fn commit(&mut self, group: &[Pending], buffer: &mut Vec<u8>) -> Result<u64, GroupFailure> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(GroupFailure::Poisoned);
        }
        if self.size >= self.segment_bytes_max
            && let Err(error) = self.rotate()
        {
            tracing::error!(%error, "cannot start a new WAL segment");
            return Err(GroupFailure::Rotate(error.to_string()));
        }
        let first_seq = self.next_seq;
        encode_records(group, first_seq, buffer);
        if let Err(source) = self.file.write_all(buffer) {
            // Cut the partial record off so the segment stays well-formed.
            let _ = self.file.set_len(self.size);
            return Err(GroupFailure::Append(source));
        }
        crate::failpoint::hit("wal.before_fsync");
        if let Err(source) = self.file.sync_data() {
            // After a failed fsync the page cache state is unknown; refuse
            // everything until an operator restarts and the WAL is replayed.
            tracing::error!(error = %source, "WAL fsync failed; refusing writes until restart");
            self.shared.poisoned.store(true, Ordering::Release);
            return Err(GroupFailure::Poisoned);
        }
        self.size += buffer.len() as u64;
        let last_seq = first_seq + group.len() as u64 - 1;
        self.next_seq = last_seq + 1;
        if let Some(segment) = self.shared.segments.lock_or_recover().iter_mut().find(|s| s.open) {
            segment.last_seq = last_seq;
        }
        Ok(first_seq)
    }

    /// Runs each durable entry's `apply` in sequence order and wakes its request.
    fn apply(&self, group: Vec<Pending>, first_seq: u64) {
        for (i, pending) in group.into_iter().enumerate() {
            let seq = first_seq + i as u64;
            let applied = self.shared.applied_through.load(Ordering::Acquire);
            assert!(
                seq == applied + 1,
                "the WAL writer applies entries in sequence order: entry {seq} after {applied}"
            );
            (pending.apply)(seq);
            self.shared.applied_through.store(seq, Ordering::Release);
            let _ = pending.done.send(Ok(seq));
        }
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        let (file, _) = Writer::new_segment(&self.dir, self.next_seq, &self.shared)?;
        self.file = file;
        self.size = 0;
        Ok(())
    }
}

/// Takes `first` and whatever else is queued, up to a group's byte budget.
fn gather(first: Pending, receiver: &mpsc::Receiver<Pending>) -> Vec<Pending> {
    const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;
    let mut bytes = first.payload.len();
    let mut group = vec![first];
    while bytes < GROUP_BYTES_MAX {
        match receiver.try_recv() {
            Ok(next) => {
                bytes += next.payload.len();
                group.push(next);
            }
            Err(_) => break,
        }
    }
    group
}

/// Encodes the group's records into `buffer`, numbered from `first_seq`.
fn encode_records(group: &[Pending], first_seq: u64, buffer: &mut Vec<u8>) {
    buffer.clear();
    for (i, pending) in group.iter().enumerate() {
        let seq = first_seq + i as u64;
        let mut crc = crc32c::crc32c(&seq.to_le_bytes());
        crc = crc32c::crc32c_append(crc, &pending.payload);
        buffer.extend_from_slice(&(pending.payload.len() as u32).to_le_bytes());
        buffer.extend_from_slice(&crc.to_le_bytes());
        buffer.extend_from_slice(&seq.to_le_bytes());
        buffer.extend_from_slice(&pending.payload);
    }
}

/// Why a group was not committed. Every request of the group is told, each
/// with its own [`WalError`].
enum GroupFailure {
    /// The log refuses writes (an earlier or this fsync failed).
    Poisoned,
    /// A new segment could not be started.
    Rotate(String),
    /// The `write` failed; the partial record was cut off.
    Append(std::io::Error),
}

impl GroupFailure {
    fn error(&self) -> WalError {
        match self {
            GroupFailure::Poisoned => WalError::Poisoned,
            GroupFailure::Rotate(message) => {
                WalError::Io { context: "rotate WAL".into(), source: std::io::Error::other(message.clone()) }
            }
            GroupFailure::Append(source) => {
                let error = match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                };
                WalError::Io { context: "append to WAL".into(), source: error }
            }
        }
    }
}

/// One request's rows as logged.
#[derive(Debug, Clone)]
pub(crate) struct WalEntry {
    /// The dataset's catalog id.
    pub dataset_id: i64,
    /// The idempotency key and the response first given, if any.
    pub idempotency: Option<(String, IdempotencyRecord)>,
    /// The rows, per partition.
    pub rows: LoggedRows,
}

/// How an entry's rows are logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoggedRows {
    /// Entry version 1: `(partition id, Arrow IPC stream)` per partition.
    /// Still read (a WAL written before version 2); no longer written.
    PerPartition(Vec<(i64, Vec<u8>)>),
    /// Entry version 2: `(partition id, rows)` per partition, whose rows
    /// follow one another in that order in one Arrow IPC stream: one schema
    /// and one dictionary per column for the whole request, so a request
    /// spread over thousands of partitions logs about its rows' size.
    Shared {
        /// `(partition id, rows)`, in the stream's order.
        parts: Vec<(i64, u32)>,
        /// Every part's rows as one Arrow IPC stream.
        ipc: Vec<u8>,
    },
}

const ENTRY_VERSION_PER_PARTITION: u8 = 1;
const ENTRY_VERSION_SHARED: u8 = 2;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WalError> {
        if self.0.len() < n {
            return Err(WalError::Corrupt("entry ends early".into()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WalError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WalError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, WalError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64, WalError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], WalError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, WalError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| WalError::Corrupt("invalid UTF-8".into()))
    }
}

impl WalEntry {
    /// The binary form.
    pub fn encode(&self) -> Vec<u8> {
        let rows_bytes = match &self.rows {
            LoggedRows::PerPartition(parts) => parts.iter().map(|(_, ipc)| ipc.len() + 12).sum(),
            LoggedRows::Shared { parts, ipc } => parts.len() * 12 + ipc.len() + 4,
        };
        let mut out = Vec::with_capacity(64 + rows_bytes);
        out.push(match self.rows {
            LoggedRows::PerPartition(_) => ENTRY_VERSION_PER_PARTITION,
            LoggedRows::Shared { .. } => ENTRY_VERSION_SHARED,
        });
        out.extend_from_slice(&self.dataset_id.to_le_bytes());
        match &self.idempotency {
            None => out.push(0),
            Some((key, record)) => {
                out.push(1);
                put_bytes(&mut out, key.as_bytes());
                out.extend_from_slice(&record.request_sha256);
                out.extend_from_slice(&record.status.to_le_bytes());
                put_bytes(&mut out, record.response.as_bytes());
            }
        }
        match &self.rows {
            LoggedRows::PerPartition(parts) => {
                out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
                for (partition_id, ipc) in parts {
                    out.extend_from_slice(&partition_id.to_le_bytes());
                    put_bytes(&mut out, ipc);
                }
            }
            LoggedRows::Shared { parts, ipc } => {
                out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
                for (partition_id, rows) in parts {
                    out.extend_from_slice(&partition_id.to_le_bytes());
                    out.extend_from_slice(&rows.to_le_bytes());
                }
                put_bytes(&mut out, ipc);
            }
        }
        out
    }

    /// Decodes [`WalEntry::encode`]'s output (either version).
    pub fn decode(bytes: &[u8]) -> Result<WalEntry, WalError> {
        let mut cursor = Cursor(bytes);
        let version = cursor.u8()?;
        if version != ENTRY_VERSION_PER_PARTITION && version != ENTRY_VERSION_SHARED {
            return Err(WalError::Corrupt(format!("unknown entry version {version}")));
        }
        let dataset_id = cursor.i64()?;
        let idempotency = match cursor.u8()? {
            0 => None,
            _ => {
                let key = cursor.string()?;
                let request_sha256 = cursor.take(32)?.try_into().expect("32 bytes");
                let status = cursor.u16()?;
                let response = cursor.string()?;
                Some((key, IdempotencyRecord { request_sha256, status, response }))
            }
        };
        let count = cursor.u32()? as usize;
        let rows = if version == ENTRY_VERSION_PER_PARTITION {
            let mut parts = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                let partition_id = cursor.i64()?;
                parts.push((partition_id, cursor.bytes()?.to_vec()));
            }
            LoggedRows::PerPartition(parts)
        } else {
            let mut parts = Vec::with_capacity(count.min(1 << 16));
            for _ in 0..count {
                parts.push((cursor.i64()?, cursor.u32()?));
            }
            LoggedRows::Shared { parts, ipc: cursor.bytes()?.to_vec() }
        };
        Ok(WalEntry { dataset_id, idempotency, rows })
    }
}

impl WalEntry {
    /// The partitions of the entry's rows, in order.
    pub fn partition_ids(&self) -> Vec<i64> {
        match &self.rows {
            LoggedRows::PerPartition(parts) => parts.iter().map(|(id, _)| *id).collect(),
            LoggedRows::Shared { parts, .. } => parts.iter().map(|(id, _)| *id).collect(),
        }
    }

    /// Each partition's rows, decoded where `wanted[i]` is `Some` (as
    /// batches of their own, never views of the shared stream), in order.
    pub fn partition_batches<T>(&self, wanted: &[Option<T>]) -> Result<Vec<(i64, Option<RecordBatch>)>, WalError> {
        match &self.rows {
            LoggedRows::PerPartition(parts) => parts
                .iter()
                .zip(wanted)
                .map(|((id, ipc), want)| Ok((*id, if want.is_some() { Some(decode_batch(ipc)?) } else { None })))
                .collect(),
            LoggedRows::Shared { parts, ipc } => {
                let all = decode_batch(ipc)?;
                let total: u64 = parts.iter().map(|(_, rows)| u64::from(*rows)).sum();
                if total != all.num_rows() as u64 {
                    return Err(WalError::Corrupt(format!(
                        "entry parts count {total} rows, its stream {}",
                        all.num_rows()
                    )));
                }
                let mut offset = 0u32;
                let mut out = Vec::with_capacity(parts.len());
                for ((id, rows), want) in parts.iter().zip(wanted) {
                    let batch = want.as_ref().map(|_| {
                        crate::ingest::take_rows(
                            &all,
                            &arrow::array::UInt32Array::from_iter_values(offset..offset + rows),
                        )
                    });
                    out.push((*id, batch));
                    offset += rows;
                }
                Ok(out)
            }
        }
    }
}

/// Encodes a batch as an Arrow IPC stream.
pub(crate) fn encode_batch(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2);
    {
        let mut writer = StreamWriter::try_new(&mut out, &batch.schema()).expect("in-memory IPC writer");
        writer.write(batch).expect("in-memory IPC write");
        writer.finish().expect("in-memory IPC finish");
    }
    out
}

/// Decodes [`encode_batch`]'s output.
pub(crate) fn decode_batch(bytes: &[u8]) -> Result<RecordBatch, WalError> {
    let reader = StreamReader::try_new(bytes, None).map_err(|e| WalError::Corrupt(format!("IPC: {e}")))?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> =
        reader.collect::<Result<_, _>>().map_err(|e| WalError::Corrupt(format!("IPC: {e}")))?;
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| WalError::Corrupt(format!("IPC: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-wal-{}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn replayed(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let mut seen = Vec::new();
        let wal = Wal::open(dir, 1 << 20, |seq, payload| {
            seen.push((seq, payload.to_vec()));
            Ok(())
        })
        .unwrap();
        wal.close();
        seen
    }

    #[test]
    #[should_panic(expected = "the WAL truncation watermark never decreases")]
    fn a_truncation_watermark_below_an_earlier_one_stops_the_caller() {
        let wal = Wal::open(&temp_dir(), 64, |_, _| Ok(())).unwrap();
        wal.remove_segments_below(10).unwrap();
        let _ = wal.remove_segments_below(9);
    }

    #[tokio::test]
    async fn entries_survive_reopen_in_order_and_torn_tails_are_cut() {
        let dir = temp_dir();
        let wal = Wal::open(&dir, 64, |_, _| Ok(())).unwrap();
        let applied = Arc::new(Mutex::new(Vec::new()));
        for i in 0..5u8 {
            let applied = applied.clone();
            let seq = wal.append(vec![i; 40], Box::new(move |seq| applied.lock().unwrap().push(seq))).await.unwrap();
            assert_eq!(seq, u64::from(i) + 1);
        }
        assert_eq!(*applied.lock().unwrap(), vec![1, 2, 3, 4, 5]);
        assert!(wal.segment_count() > 1, "small segments rotate");
        wal.close();
        // Append half a record to the newest segment, as a crash mid-write would.
        let newest = list_segments(&dir).unwrap().pop().unwrap().1;
        OpenOptions::new().append(true).open(&newest).unwrap().write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let seen = replayed(&dir);
        assert_eq!(seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(seen[2].1, vec![2; 40]);
        // The next open continues the sequence after the torn tail was cut.
        let wal = Wal::open(&dir, 64, |_, _| Ok(())).unwrap();
        assert_eq!(wal.append(vec![7], Box::new(|_| {})).await.unwrap(), 6);
        wal.close();
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn corruption_before_the_tail_refuses_to_start() {
        let dir = temp_dir();
        let wal = Wal::open(&dir, 1 << 20, |_, _| Ok(())).unwrap();
        for i in 0..3u8 {
            wal.append(vec![i; 10], Box::new(|_| {})).await.unwrap();
        }
        wal.close();
        let path = list_segments(&dir).unwrap()[0].1.clone();
        let mut bytes = fs::read(&path).unwrap();
        let second_payload = HEADER_BYTES + 10 + HEADER_BYTES;
        bytes[second_payload] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let error = Wal::open(&dir, 1 << 20, |_, _| Ok(())).unwrap_err();
        assert!(matches!(error, WalError::Corrupt(_)), "{error}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn segments_below_the_watermark_are_removed() {
        let dir = temp_dir();
        let wal = Wal::open(&dir, 10, |_, _| Ok(())).unwrap();
        for _ in 0..4 {
            wal.append(vec![0; 20], Box::new(|_| {})).await.unwrap();
        }
        let before = wal.segment_count();
        assert_eq!(wal.remove_segments_below(3).unwrap(), 2);
        assert_eq!(wal.segment_count(), before - 2);
        wal.close();
        let seen = replayed(&dir);
        assert_eq!(seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn entries_round_trip() {
        let entry = WalEntry {
            dataset_id: 7,
            idempotency: Some((
                "k-1".into(),
                IdempotencyRecord { request_sha256: [1; 32], status: 204, response: "{}".into() },
            )),
            rows: LoggedRows::PerPartition(vec![(3, vec![1, 2, 3]), (4, vec![])]),
        };
        let decoded = WalEntry::decode(&entry.encode()).unwrap();
        assert_eq!(decoded.dataset_id, 7);
        assert_eq!(decoded.idempotency, entry.idempotency);
        assert_eq!(decoded.rows, entry.rows);
        assert!(WalEntry::decode(&entry.encode()[..10]).is_err());

        let shared = WalEntry {
            dataset_id: 8,
            idempotency: None,
            rows: LoggedRows::Shared { parts: vec![(3, 2), (9, 1)], ipc: vec![5, 6, 7] },
        };
        let bytes = shared.encode();
        assert_eq!(bytes[0], ENTRY_VERSION_SHARED);
        let decoded = WalEntry::decode(&bytes).unwrap();
        assert_eq!((decoded.dataset_id, decoded.rows), (8, shared.rows));
        assert!(WalEntry::decode(&bytes[..bytes.len() - 1]).is_err(), "a cut stream is corrupt");
    }

    /// Both entry versions give back each partition's own rows, and only
    /// the partitions asked for.
    #[test]
    fn both_versions_give_each_partition_its_rows() {
        use arrow::array::{Array, Int64Array};
        let batch = |values: &[i64]| {
            let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
                "v",
                arrow::datatypes::DataType::Int64,
                false,
            )]));
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
        };
        let (a, b, c) = (batch(&[1, 2]), batch(&[3]), batch(&[4, 5, 6]));
        let all = arrow::compute::concat_batches(&a.schema(), [&a, &b, &c]).unwrap();
        let shared = LoggedRows::Shared { parts: vec![(10, 2), (11, 1), (12, 3)], ipc: encode_batch(&all) };
        let per_partition =
            LoggedRows::PerPartition(vec![(10, encode_batch(&a)), (11, encode_batch(&b)), (12, encode_batch(&c))]);
        for rows in [shared, per_partition] {
            let entry = WalEntry::decode(&WalEntry { dataset_id: 1, idempotency: None, rows }.encode()).unwrap();
            assert_eq!(entry.partition_ids(), [10, 11, 12]);
            let got = entry.partition_batches(&[Some(()), None, Some(())]).unwrap();
            assert_eq!(got[0], (10, Some(a.clone())));
            assert_eq!(got[1], (11, None));
            assert_eq!(got[2], (12, Some(c.clone())));
            assert_eq!(got[2].1.as_ref().unwrap().column(0).len(), 3);
        }
    }
}
