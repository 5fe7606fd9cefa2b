//! The read-through cache of remote data files. DuckDB reads local files
//! only, so a query over a file on an object-store target reads a verified
//! local copy kept here (`[storage.cache]`).
//!
//! **Invariants:** an entry is named by a digest of (target, object key,
//! size, CRC32C), so a changed object can never be served from an old copy;
//! a file gets its entry's name only once it has been fsync'd and matched
//! the size and CRC32C the catalog recorded; an entry a reader holds (a
//! [`CachedFile`]) is never evicted; readers of one missing entry share one
//! fill. The cache outlives the process: at open, finished entries are
//! adopted (least recently used first by modification time, which a hit
//! renews) and the temporary files of fills a crash interrupted are removed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::{ObjectKey, StorageError, StorageTarget, sync_dir};
use crate::data_dir::DirectoryLock;
use crate::sync::Recover as _;

/// Temporary files of fills start with this; anything so named at open is
/// what a crash left behind.
const TEMPORARY_PREFIX: &str = ".tmp-";

/// The cache's running totals, for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fill_bytes: AtomicU64,
    evictions: AtomicU64,
    fill_errors: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    /// The LRU clock at the last use.
    last_used: u64,
    /// Readers holding the file; a pinned entry is never evicted.
    pins: usize,
}

/// One fill in flight: its outcome (`Err` holds the reason) once it ends.
#[derive(Debug, Default)]
struct Fill {
    outcome: Mutex<Option<Result<(), String>>>,
    ended: Condvar,
}

impl Fill {
    fn end(&self, outcome: Result<(), String>) {
        *self.outcome.lock_or_recover() = Some(outcome);
        self.ended.notify_all();
    }

    /// Waits for the fill to end, at most `timeout` when one is set.
    fn wait(&self, timeout: Option<Duration>) -> Result<(), String> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut outcome = self.outcome.lock_or_recover();
        loop {
            if let Some(outcome) = outcome.as_ref() {
                return outcome.clone();
            }
            outcome = match deadline {
                None => self.ended.wait(outcome).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err("the fill did not finish within storage.cache.fill_timeout_ms".to_string());
                    }
                    self.ended.wait_timeout(outcome, left).unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Resident entries by file name.
    entries: HashMap<String, Entry>,
    /// Fills in flight by file name.
    filling: HashMap<String, Arc<Fill>>,
    /// Bytes of the resident entries.
    bytes: u64,
    /// The LRU clock: ticks once per use.
    clock: u64,
    /// Requests waiting for another request's fill.
    waiting: usize,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    bytes_max: u64,
    fill_timeout: Option<Duration>,
    state: Mutex<State>,
    counters: Counters,
    /// The lock on `dir`: two servers sharing a cache would delete each
    /// other's fills as leftovers and evict each other's pinned files.
    _lock: Arc<DirectoryLock>,
}

/// The read-through cache of remote data files, bounded by `bytes_max`
/// (least recently used entries go first). Blocking.
#[derive(Debug, Clone)]
pub struct ReadCache {
    inner: Arc<Inner>,
}

/// A file in the cache, pinned while this value lives: eviction skips it,
/// so a query can read it until its answer is produced.
#[derive(Debug)]
pub struct CachedFile {
    inner: Arc<Inner>,
    name: String,
    path: PathBuf,
    size: u64,
    fetched: bool,
}

impl CachedFile {
    /// The local copy.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the file was not resident when asked for: this request (or
    /// one it waited for) read it from the remote target.
    pub fn fetched(&self) -> bool {
        self.fetched
    }
}

impl Drop for CachedFile {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock_or_recover();
        if let Some(entry) = state.entries.get_mut(&self.name) {
            entry.pins = entry.pins.saturating_sub(1);
        }
        // Entries pinned while the cache was over its budget go now.
        self.inner.evict(&mut state);
    }
}

/// Whether `name` is an entry's file name: 64 hex digits, `.parquet`.
fn is_entry_name(name: &str) -> bool {
    name.strip_suffix(".parquet").is_some_and(|stem| stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The file name of the entry holding object `key` of `target` with this
/// size and CRC32C.
fn entry_name(target: &str, key: &ObjectKey, size: u64, crc32c: u32) -> String {
    let identity = format!("{target}\n{key}\n{size}\n{crc32c:08x}");
    format!("{}.parquet", crate::digest::sha256_hex(identity.as_bytes()))
}

impl ReadCache {
    /// Opens (creating) the cache in `dir`, locks it, removes temporary
    /// files of interrupted fills, adopts the finished entries and evicts
    /// down to `bytes_max`. `fill_timeout` bounds each fill (and each wait
    /// for another request's fill).
    pub fn open(dir: &Path, bytes_max: u64, fill_timeout: Option<Duration>) -> Result<ReadCache, StorageError> {
        let io = |source| StorageError::Io { key: dir.display().to_string(), source };
        let lock = crate::data_dir::lock_directory_once(dir)
            .map_err(|error| StorageError::Misconfigured(format!("read cache storage.cache.dir: {error}")))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().map_err(io)?;
            if name.starts_with(TEMPORARY_PREFIX) && meta.is_file() {
                fs::remove_file(entry.path()).map_err(io)?;
            } else if is_entry_name(&name) && meta.is_file() {
                found.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), name, meta.len()));
            }
        }
        found.sort();
        let mut state = State::default();
        for (_, name, size) in found {
            let last_used = state.tick();
            state.bytes += size;
            state.entries.insert(name, Entry { size, last_used, pins: 0 });
        }
        let inner = Inner {
            dir: dir.to_path_buf(),
            bytes_max,
            fill_timeout,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            _lock: lock,
        };
        inner.evict(&mut state);
        *inner.state.lock_or_recover() = state;
        Ok(ReadCache { inner: Arc::new(inner) })
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Bytes of the resident entries. Above `bytes_max` only while the
    /// entries that would go are pinned by running readers.
    pub fn bytes(&self) -> u64 {
        self.inner.state.lock_or_recover().bytes
    }

    /// Resident entries.
    pub fn entries(&self) -> usize {
        self.inner.state.lock_or_recover().entries.len()
    }

    /// Requests waiting now for a fill another request runs.
    pub fn waiting(&self) -> usize {
        self.inner.state.lock_or_recover().waiting
    }

    /// A pinned local copy of object `key` of `target`, which the catalog
    /// says has `size` bytes with CRC32C `crc32c`: resident, or fetched now
    /// (streamed to a temporary file, fsync'd, checked, renamed into place).
    /// Concurrent requests for one missing entry wait for a single fill; a
    /// failed fill fails each of them with [`StorageError::Unavailable`]
    /// naming the target, and leaves nothing behind.
    pub fn get(
        &self,
        target: &dyn StorageTarget,
        key: &ObjectKey,
        size: u64,
        crc32c: u32,
    ) -> Result<CachedFile, StorageError> {
        let name = entry_name(target.name(), key, size, crc32c);
        let unavailable = |reason: String| StorageError::Unavailable { target: target.name().to_string(), reason };
        let mut fetched = false;
        loop {
            let (fill, owner) = {
                let mut state = self.inner.state.lock_or_recover();
                if let Some(file) = self.pin(&mut state, &name, fetched) {
                    drop(state);
                    if !fetched {
                        touch(file.path());
                    }
                    return Ok(file);
                }
                if !fetched {
                    fetched = true;
                    self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
                }
                match state.filling.get(&name) {
                    Some(fill) => (fill.clone(), false),
                    None => {
                        let fill = Arc::new(Fill::default());
                        state.filling.insert(name.clone(), fill.clone());
                        (fill, true)
                    }
                }
            };
            if !owner {
                // Another request fills the entry; its failure is ours.
                self.inner.state.lock_or_recover().waiting += 1;
                let outcome = fill.wait(self.inner.fill_timeout);
                self.inner.state.lock_or_recover().waiting -= 1;
                outcome.map_err(unavailable)?;
                continue;
            }
            let outcome = self.fill(target, key, size, crc32c, &name);
            fill.end(outcome.as_ref().map(|_| ()).map_err(String::clone));
            return outcome.map_err(unavailable);
        }
    }

    /// Pins the resident entry `name`, if there is one.
    fn pin(&self, state: &mut State, name: &str, fetched: bool) -> Option<CachedFile> {
        let now = state.tick();
        let entry = state.entries.get_mut(name)?;
        entry.pins += 1;
        entry.last_used = now;
        if !fetched {
            self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
        }
        Some(CachedFile {
            inner: self.inner.clone(),
            name: name.to_string(),
            path: self.inner.dir.join(name),
            size: entry.size,
            fetched,
        })
    }

    /// Fetches and publishes entry `name`, pinned for the caller; the
    /// reason on failure (counted; the temporary file removed).
    fn fill(
        &self,
        target: &dyn StorageTarget,
        key: &ObjectKey,
        size: u64,
        crc32c: u32,
        name: &str,
    ) -> Result<CachedFile, String> {
        let tmp = self.inner.dir.join(format!("{TEMPORARY_PREFIX}{:016x}", rand::random::<u64>()));
        let fetched = self.fetch(target, key, size, crc32c, &tmp);
        let mut state = self.inner.state.lock_or_recover();
        state.filling.remove(name);
        let published = fetched.and_then(|()| {
            fs::rename(&tmp, self.inner.dir.join(name)).map_err(|e| format!("the read cache could not keep {key}: {e}"))
        });
        if let Err(reason) = published {
            drop(state);
            let _ = fs::remove_file(&tmp);
            self.inner.counters.fill_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target = target.name(), %key, %reason, "read cache fill failed");
            return Err(reason);
        }
        self.inner.counters.fill_bytes.fetch_add(size, Ordering::Relaxed);
        let last_used = state.tick();
        state.bytes += size;
        state.entries.insert(name.to_string(), Entry { size, last_used, pins: 0 });
        let file = self.pin(&mut state, name, true).expect("inserted above");
        self.inner.evict(&mut state);
        drop(state);
        // The entry's name is durable for the next start; its bytes already are.
        let _ = sync_dir(&self.inner.dir);
        Ok(file)
    }

    /// Streams the object into `tmp`, fsyncs it and checks it against the
    /// catalog's size and CRC32C.
    fn fetch(
        &self,
        target: &dyn StorageTarget,
        key: &ObjectKey,
        size: u64,
        crc32c: u32,
        tmp: &Path,
    ) -> Result<(), String> {
        let local = |e: std::io::Error| format!("the read cache could not write {}: {e}", tmp.display());
        let file = OpenOptions::new().write(true).create_new(true).open(tmp).map_err(local)?;
        let deadline = self.inner.fill_timeout.map(|t| Instant::now() + t);
        let mut sink = FillSink {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            size: 0,
            crc32c: 0,
            size_max: size,
            deadline,
        };
        let result = target.get_to(key, &mut sink);
        let (written, written_crc) = (sink.size, sink.crc32c);
        result.map_err(|error| match error {
            StorageError::Unavailable { reason, .. } => reason,
            other => other.to_string(),
        })?;
        let file = sink.file.into_inner().map_err(|e| local(e.into_error()))?;
        file.sync_all().map_err(local)?;
        if written != size || written_crc != crc32c {
            return Err(format!(
                "object {key} read back as {written} bytes with CRC32C {written_crc:08x}; \
                 the catalog recorded {size} bytes with CRC32C {crc32c:08x}"
            ));
        }
        Ok(())
    }

    /// The `strata_cache_*` metric families, in the Prometheus text format.
    pub fn metrics(&self) -> String {
        let counters = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        render_metrics([
            load(&counters.hits),
            load(&counters.misses),
            self.bytes(),
            load(&counters.fill_bytes),
            load(&counters.evictions),
            load(&counters.fill_errors),
        ])
    }
}

/// The `strata_cache_*` metric families of a server without a read cache
/// (no remote target): every value 0.
pub fn metrics_without_cache() -> String {
    render_metrics([0; 6])
}

fn render_metrics(values: [u64; 6]) -> String {
    const FAMILIES: [(&str, &str, &str); 6] = [
        ("strata_cache_hits_total", "counter", "Reads of remote files served by the read cache."),
        ("strata_cache_misses_total", "counter", "Reads of remote files that were not in the read cache."),
        ("strata_cache_bytes", "gauge", "Bytes of the files in the read cache."),
        ("strata_cache_fill_bytes_total", "counter", "Bytes fetched from remote targets into the read cache."),
        ("strata_cache_evictions_total", "counter", "Files evicted from the read cache."),
        ("strata_cache_fill_errors_total", "counter", "Fetches into the read cache that failed or did not match."),
    ];
    let mut text = String::new();
    for ((name, kind, help), value) in FAMILIES.iter().zip(values) {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    text
}

impl Inner {
    /// Evicts least recently used entries that no reader holds until the
    /// cache fits `bytes_max`. Under the state lock, so that a fill of the
    /// same name cannot land between the entry's removal and its unlink.
    fn evict(&self, state: &mut State) {
        while state.bytes > self.bytes_max {
            let victim = state
                .entries
                .iter()
                .filter(|(_, entry)| entry.pins == 0)
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(name, _)| name.clone());
            // Everything left is pinned: over budget until readers let go.
            let Some(name) = victim else { break };
            let entry = state.entries.remove(&name).expect("found above");
            state.bytes -= entry.size;
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = fs::remove_file(self.dir.join(&name))
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = name, %error, "removing an evicted read cache file failed");
            }
        }
    }
}

/// Renews a file's modification time, which orders entries adopted at the
/// next start. Best effort: a stale time only makes the file look older.
fn touch(path: &Path) {
    if let Ok(file) = File::open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Where a fill streams: the temporary file, checksummed on the way, that
/// refuses more bytes than the catalog recorded (a longer object fails the
/// fill instead of filling the disk) and any byte after the fill's deadline.
struct FillSink {
    file: std::io::BufWriter<File>,
    size: u64,
    crc32c: u32,
    size_max: u64,
    deadline: Option<Instant>,
}

impl Write for FillSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size + buf.len() as u64 > self.size_max {
            return Err(std::io::Error::other(format!(
                "the object is longer than the {} bytes recorded",
                self.size_max
            )));
        }
        if self.deadline.is_some_and(|deadline| Instant::now() > deadline) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the fill did not finish within storage.cache.fill_timeout_ms",
            ));
        }
        let written = self.file.write(buf)?;
        self.size += written as u64;
        self.crc32c = crc32c::crc32c_append(self.crc32c, &buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::InMemory;
    use std::ops::Range;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    /// An in-memory target that counts `get_to` calls and, when gated,
    /// holds each one until the test opens the gate.
    #[derive(Debug)]
    struct Counting {
        inner: InMemory,
        gets: AtomicUsize,
        gate: Mutex<Option<mpsc::Receiver<()>>>,
    }

    impl Counting {
        fn new() -> Counting {
            Counting { inner: InMemory::new("remote"), gets: AtomicUsize::new(0), gate: Mutex::new(None) }
        }

        fn gated(self) -> (Counting, mpsc::Sender<()>) {
            let (open, gate) = mpsc::channel();
            *self.gate.lock().unwrap() = Some(gate);
            (self, open)
        }

        fn gets(&self) -> usize {
            self.gets.load(Ordering::SeqCst)
        }
    }

    impl StorageTarget for Counting {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn kind(&self) -> &'static str {
            "memory"
        }
        fn location(&self) -> String {
            self.inner.location()
        }
        fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
            self.inner.put(key, bytes)
        }
        fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StorageError> {
            self.inner.get(key)
        }
        fn get_to(&self, key: &ObjectKey, out: &mut dyn Write) -> Result<u64, StorageError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = self.gate.lock().unwrap().as_ref() {
                gate.recv().unwrap();
            }
            self.inner.get_to(key, out)
        }
        fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
            self.inner.get_range(key, range)
        }
        fn head(&self, key: &ObjectKey) -> Result<super::super::ObjectMeta, StorageError> {
            self.inner.head(key)
        }
        fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
            self.inner.delete(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<super::super::ObjectMeta>, StorageError> {
            self.inner.list(prefix)
        }
        fn local_path(&self, _key: &ObjectKey) -> Option<PathBuf> {
            None
        }
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("strata-read-cache-{}", rand::random::<u64>()))
    }

    /// Stores `bytes` under `data/1/2/{name}.parquet`; returns the key and CRC32C.
    fn object(target: &dyn StorageTarget, name: &str, bytes: &[u8]) -> (ObjectKey, u32) {
        let key = ObjectKey::parse(&format!("data/1/2/{name}.parquet")).unwrap();
        target.put(&key, bytes).unwrap();
        (key, crc32c::crc32c(bytes))
    }

    /// The names in the cache's directory, the lock's pid file aside.
    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != crate::data_dir::LOCK_FILE_NAME)
            .collect();
        names.sort();
        names
    }

    fn metric(cache: &ReadCache, name: &str) -> u64 {
        let text = cache.metrics();
        let line = text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("{name}: {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn a_miss_fills_a_checked_copy_and_the_next_read_hits() {
        let dir = temp_dir();
        let cache = ReadCache::open(&dir, 1 << 20, None).unwrap();
        let remote = Counting::new();
        let (key, crc) = object(&remote, "a", b"parquet bytes");

        let first = cache.get(&remote, &key, 13, crc).unwrap();
        assert!(first.fetched());
        assert_eq!(fs::read(first.path()).unwrap(), b"parquet bytes");
        assert!(first.path().starts_with(&dir));
        let second = cache.get(&remote, &key, 13, crc).unwrap();
        assert!(!second.fetched());
        assert_eq!(second.path(), first.path());
        assert_eq!(remote.gets(), 1, "the hit read nothing remote");
        assert_eq!(files_in(&dir).len(), 1, "no temporary file is left");
        assert_eq!((metric(&cache, "strata_cache_hits_total"), metric(&cache, "strata_cache_misses_total")), (1, 1));
        assert_eq!(metric(&cache, "strata_cache_bytes"), 13);
        assert_eq!(metric(&cache, "strata_cache_fill_bytes_total"), 13);
        assert!(cache.metrics().contains("# TYPE strata_cache_hits_total counter"));

        // Another size or checksum is another entry: a changed object is
        // never served from the old copy.
        remote.delete(&key).unwrap();
        remote.put(&key, b"other bytes!!").unwrap();
        let changed = cache.get(&remote, &key, 13, crc32c::crc32c(b"other bytes!!")).unwrap();
        assert_ne!(changed.path(), first.path());
        assert_eq!(fs::read(changed.path()).unwrap(), b"other bytes!!");
        drop((first, second, changed, cache));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_copy_that_does_not_match_the_catalog_is_refused_and_removed() {
        let dir = temp_dir();
        let cache = ReadCache::open(&dir, 1 << 20, None).unwrap();
        let remote = Counting::new();
        let (key, crc) = object(&remote, "a", b"0123456789");
        for (size, crc32c) in [(10, crc ^ 1), (9, crc), (11, crc)] {
            match cache.get(&remote, &key, size, crc32c) {
                Err(StorageError::Unavailable { target, reason }) => {
                    assert_eq!(target, "remote");
                    assert!(reason.contains(key.as_str()) || reason.contains("longer"), "{reason}");
                }
                other => panic!("expected Unavailable, got {other:?}"),
            }
        }
        assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
        assert_eq!(cache.entries(), 0);
        assert_eq!(metric(&cache, "strata_cache_fill_errors_total"), 3);
        assert_eq!(metric(&cache, "strata_cache_bytes"), 0);
        let missing = ObjectKey::parse("data/1/2/gone.parquet").unwrap();
        let error = cache.get(&remote, &missing, 1, 0).unwrap_err().to_string();
        assert!(error.contains("storage target remote is unavailable") && error.contains("gone"), "{error}");
        assert!(cache.get(&remote, &key, 10, crc).is_ok(), "the right expectation still fills");
        drop(cache);
        fs::remove_dir_all(dir).unwrap();
    }

    /// Ten readers of one missing file: `gated` holds the single fetch
    /// until the other nine wait for it.
    fn ten_readers(bytes: &[u8], size: u64) -> (Counting, Vec<Result<CachedFile, StorageError>>, ReadCache, PathBuf) {
        let dir = temp_dir();
        let cache = ReadCache::open(&dir, 1 << 20, None).unwrap();
        let (remote, open) = Counting::new().gated();
        let (key, crc) = object(&remote, "a", bytes);
        let results = std::thread::scope(|scope| {
            let readers: Vec<_> = (0..10).map(|_| scope.spawn(|| cache.get(&remote, &key, size, crc))).collect();
            // Until nine wait for the one fetch (or, were fills not
            // shared, a second fetch starts).
            while remote.gets() < 2 && (remote.gets() == 0 || cache.waiting() < 9) {
                std::thread::yield_now();
            }
            for _ in 0..10 {
                open.send(()).unwrap();
            }
            readers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        (remote, results, cache, dir)
    }

    #[test]
    fn ten_readers_of_one_missing_file_share_one_fetch() {
        let (remote, results, cache, dir) = ten_readers(b"shared file", 11);
        assert_eq!(remote.gets(), 1);
        let files: Vec<CachedFile> = results.into_iter().map(Result::unwrap).collect();
        assert!(files.iter().all(|f| f.path() == files[0].path() && f.fetched()));
        assert_eq!(metric(&cache, "strata_cache_misses_total"), 10);
        assert_eq!(metric(&cache, "strata_cache_fill_bytes_total"), 11);
        drop((files, cache));
        fs::remove_dir_all(dir).unwrap();

        // A failed fetch fails every reader waiting for it, with its reason.
        let (remote, results, cache, dir) = ten_readers(b"shared file", 12);
        assert_eq!(remote.gets(), 1);
        for result in results {
            let error = result.unwrap_err();
            assert!(matches!(&error, StorageError::Unavailable { target, .. } if target == "remote"), "{error}");
            assert!(error.to_string().contains("12 bytes"), "{error}");
        }
        assert_eq!(metric(&cache, "strata_cache_fill_errors_total"), 1);
        drop(cache);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_fill_past_its_timeout_fails_its_waiters_and_itself() {
        let dir = temp_dir();
        let cache = ReadCache::open(&dir, 1 << 20, Some(Duration::from_millis(50))).unwrap();
        let (remote, open) = Counting::new().gated();
        let (key, crc) = object(&remote, "a", b"slow bytes");
        std::thread::scope(|scope| {
            let filler = scope.spawn(|| cache.get(&remote, &key, 10, crc));
            while remote.gets() == 0 {
                std::thread::yield_now();
            }
            // The fetch is stuck until the waiter has given up.
            let waited = cache.get(&remote, &key, 10, crc).unwrap_err().to_string();
            assert!(waited.contains("storage target remote") && waited.contains("fill_timeout_ms"), "{waited}");
            open.send(()).unwrap();
            let filled = filler.join().unwrap().unwrap_err().to_string();
            assert!(filled.contains("fill_timeout_ms"), "{filled}");
        });
        assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
        assert_eq!(metric(&cache, "strata_cache_fill_errors_total"), 1);
        drop(cache);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn eviction_takes_the_least_recently_used_and_never_a_pinned_file() {
        let dir = temp_dir();
        let cache = ReadCache::open(&dir, 250, None).unwrap();
        let remote = Counting::new();
        let objects: Vec<(ObjectKey, u32)> =
            ["a", "b", "c", "d"].iter().map(|n| object(&remote, n, &[b'x'; 100])).collect();
        let get = |i: usize| cache.get(&remote, &objects[i].0, 100, objects[i].1).unwrap();
        let path_a = get(0).path().to_path_buf();
        let path_b = get(1).path().to_path_buf();
        drop(get(0)); // a is now more recent than b
        let c = get(2);
        assert!(!path_b.exists(), "b was the least recently used");
        assert!(path_a.exists() && c.path().exists());
        assert_eq!((cache.bytes(), metric(&cache, "strata_cache_evictions_total")), (200, 1));

        // A "query" holds a and c; fetching d passes the budget, and nothing
        // held may go.
        let a = get(0);
        let d = get(3);
        assert_eq!(cache.bytes(), 300, "over budget while every file is held");
        assert!(a.path().exists() && c.path().exists() && d.path().exists());
        assert_eq!(fs::read(a.path()).unwrap(), vec![b'x'; 100]);
        drop(c); // c is least recently used of the three and now free
        assert_eq!(cache.bytes(), 200);
        assert!(a.path().exists() && d.path().exists());
        assert_eq!(files_in(&dir).len(), 2);
        drop((a, d));
        assert_eq!(cache.bytes(), 200, "within budget, nothing more goes");
        drop(cache);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_reopened_cache_adopts_its_files_and_removes_interrupted_fills() {
        let dir = temp_dir();
        let remote = Counting::new();
        let objects: Vec<(ObjectKey, u32)> = ["a", "b", "c"].iter().map(|n| object(&remote, n, &[b'y'; 100])).collect();
        let cache = ReadCache::open(&dir, 1 << 20, None).unwrap();
        let paths: Vec<PathBuf> =
            objects.iter().map(|(key, crc)| cache.get(&remote, key, 100, *crc).unwrap().path().to_path_buf()).collect();
        drop(cache);
        // A kill -9 during a fill leaves its temporary file; b was used last.
        fs::write(dir.join(".tmp-00000000000000ff"), b"half a file").unwrap();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (path, offset) in paths.iter().zip([1, 3, 2]) {
            File::open(path).unwrap().set_modified(base + Duration::from_secs(offset)).unwrap();
        }

        let cache = ReadCache::open(&dir, 1 << 20, None).unwrap();
        assert_eq!((cache.entries(), cache.bytes()), (3, 300));
        assert!(!dir.join(".tmp-00000000000000ff").exists());
        assert!(!cache.get(&remote, &objects[2].0, 100, objects[2].1).unwrap().fetched(), "adopted: a hit");
        assert_eq!(remote.gets(), 3, "only the first fills fetched");
        drop(cache);

        // Reopened with a smaller budget: the least recently used go first.
        File::open(&paths[2]).unwrap().set_modified(base + Duration::from_secs(2)).unwrap();
        let cache = ReadCache::open(&dir, 150, None).unwrap();
        assert_eq!(cache.bytes(), 100);
        assert!(!paths[0].exists() && paths[1].exists() && !paths[2].exists());
        drop(cache);
        fs::remove_dir_all(dir).unwrap();
    }
}
