//! Storage targets: where Parquet files live. Only this module does file or
//! object IO for data files.
//!
//! Every target offers the same small contract — create-only put, get, ranged
//! get, head, delete, list — so callers never see local paths unless they ask
//! for [`StorageTarget::local_path`] (DuckDB reads local files in place).
//! [`Targets`] holds the configured targets and the target of each tier;
//! callers hold `Arc<dyn StorageTarget>`, never a concrete backend.
//! [`Faulty`] wraps a target to inject the faults `STRATA_FAILPOINTS` asks for.

mod cache;
mod faulty;
mod health;
mod s3;
mod staging;
mod targets;

pub use cache::{CachedFile, ReadCache, metrics_without_cache};
pub use faulty::Faulty;
pub use health::TargetHealth;
pub use s3::S3Target;
pub use staging::{LocalFile, StagedFile, check_footer, verify_file};
pub use targets::{Readable, Targets};

#[cfg(test)]
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::Mutex;

/// A validated object key: `/`-separated segments of `[A-Za-z0-9._-]`, no
/// empty, `.` or `..` segments. Keys are built from ids, never from user text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates a key.
    pub fn parse(raw: &str) -> Result<ObjectKey, StorageError> {
        let ok = !raw.is_empty()
            && raw.len() <= 1024
            && raw.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        if ok { Ok(ObjectKey(raw.to_string())) } else { Err(StorageError::InvalidKey(raw.chars().take(200).collect())) }
    }

    /// The key of a data file: `data/{dataset_id}/{partition_id}/{file_id}.parquet`.
    pub fn data_file(dataset_id: i64, partition_id: i64, file_id: &str) -> ObjectKey {
        ObjectKey::parse(&format!("data/{dataset_id}/{partition_id}/{file_id}.parquet")).expect("ids make valid keys")
    }

    /// The key for a new version of this data file (a re-encoded copy):
    /// the same directory, the same name but for a fresh random suffix, so
    /// it never collides with the file it replaces and names stay short.
    pub fn new_version(&self) -> ObjectKey {
        let (directory, file) = self.0.rsplit_once('/').unwrap_or(("", &self.0));
        let stem = file.strip_suffix(".parquet").unwrap_or(file);
        let base = match stem.rsplit_once('-') {
            Some((base, suffix)) if suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()) => base,
            _ => stem,
        };
        let name = format!("{base}-{:016x}.parquet", rand::random::<u64>());
        let key = if directory.is_empty() { name } else { format!("{directory}/{name}") };
        ObjectKey::parse(&key).expect("a valid key with a hex suffix is valid")
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, ns since the epoch, where the
    /// backend says (the orphan sweep's grace period needs it).
    pub last_modified_ns: Option<i64>,
}

/// What a stored object must be: its size and CRC32C, and its MD5 (which
/// object stores report as the ETag of a single-part upload). Computed
/// while a file is written or staged, checked against what a target holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Size in bytes.
    pub size: u64,
    /// CRC32C of the bytes.
    pub crc32c: u32,
    /// MD5 of the bytes.
    pub md5: [u8; 16],
}

impl Fingerprint {
    /// The fingerprint of `bytes`.
    pub fn of(bytes: &[u8]) -> Fingerprint {
        let mut hasher = FingerprintWriter::default();
        hasher.update(bytes);
        hasher.finish()
    }

    /// The fingerprint of a local file, read in bounded chunks.
    pub fn of_file(path: &Path) -> std::io::Result<Fingerprint> {
        let mut hasher = FingerprintWriter::default();
        std::io::copy(&mut File::open(path)?, &mut hasher)?;
        Ok(hasher.finish())
    }
}

/// A writer that only fingerprints what passes through it.
#[derive(Default)]
pub struct FingerprintWriter {
    size: u64,
    crc32c: u32,
    md5: md5::Md5,
}

impl FingerprintWriter {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        use md5::Digest as _;
        self.size += bytes.len() as u64;
        self.crc32c = crc32c::crc32c_append(self.crc32c, bytes);
        self.md5.update(bytes);
    }

    /// The fingerprint of everything added.
    pub fn finish(self) -> Fingerprint {
        use md5::Digest as _;
        Fingerprint { size: self.size, crc32c: self.crc32c, md5: self.md5.finalize().into() }
    }
}

impl Write for FingerprintWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Create-only put found the key taken.
    #[error("object {0} already exists")]
    AlreadyExists(ObjectKey),
    /// No such object.
    #[error("object {0} not found")]
    NotFound(ObjectKey),
    /// The key is not valid.
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// The targets cannot be set up as configured.
    #[error("{0}")]
    Misconfigured(String),
    /// A local target's directory is locked by another process, or by this
    /// one as its data directory.
    #[error(
        "storage target {target} at {} is in use by {}; each server needs its own storage directories",
        .directory.display(),
        .holder_pid.map_or_else(|| "another process (pid unknown)".to_string(), |pid| format!("the strata process with pid {pid}"))
    )]
    TargetLocked {
        /// The target's name.
        target: String,
        /// The target's directory.
        directory: PathBuf,
        /// The pid the holder recorded, if it could be read.
        holder_pid: Option<u32>,
    },
    /// A remote target could not be reached or answered an error; the
    /// operation may succeed later. `reason` never holds credentials.
    #[error("storage target {target} is unavailable: {reason}")]
    Unavailable {
        /// The target's name.
        target: String,
        /// What failed, for operators.
        reason: String,
    },
    /// A stored object is not what was written (size, checksum).
    #[error("object {key} on {target} does not match what was written: {detail}")]
    Mismatch {
        /// The target's name.
        target: String,
        /// The object.
        key: ObjectKey,
        /// What differs.
        detail: String,
    },
    /// An IO error on one object.
    #[error("{key}: {source}")]
    Io {
        /// The object.
        key: String,
        /// The error.
        source: std::io::Error,
    },
}

impl crate::error::Coded for StorageError {
    fn code(&self) -> crate::error::ErrorCode {
        match self {
            _ if self.is_disk_full() => crate::error::ErrorCode::StorageFull,
            StorageError::Unavailable { .. } => crate::error::ErrorCode::StorageUnavailable,
            _ => crate::error::ErrorCode::Internal,
        }
    }

    fn message(&self) -> String {
        format!("storage: {self}")
    }

    fn retry_after_seconds(&self) -> Option<u32> {
        matches!(self, StorageError::Unavailable { .. }).then_some(5)
    }
}

impl StorageError {
    /// Whether the device is out of space.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}

/// One storage backend. Every method blocks (callers run them off the
/// async runtime); a remote backend drives its own runtime inside.
///
/// Whole-object methods (`put`, `get`) are for small objects: manifests,
/// tests. Data files go through the streaming ones (`put_file`, `get_to`,
/// `verify`), which hold a bounded buffer whatever the file's size.
pub trait StorageTarget: Send + Sync + fmt::Debug {
    /// The target's configured name.
    fn name(&self) -> &str;
    /// The backend: `local`, `s3`, `memory` (unit tests).
    fn kind(&self) -> &'static str;
    /// Where the objects live, for operators: a directory, a bucket URL.
    /// Never holds credentials.
    fn location(&self) -> String;
    /// Stores `bytes` under `key` durably; fails if `key` exists.
    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError>;
    /// Stores the local file at `path` under `key` durably, streaming it;
    /// fails with [`StorageError::AlreadyExists`] if `key` exists. Keys of
    /// data files are unique and never reused, so a backend that cannot make
    /// a large upload conditional (multipart) checks existence first.
    fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<(), StorageError> {
        let bytes = fs::read(path).map_err(|source| StorageError::Io { key: key.to_string(), source })?;
        self.put(key, &bytes)
    }
    /// The whole object.
    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StorageError>;
    /// Streams the whole object into `out` in bounded chunks; returns its size.
    fn get_to(&self, key: &ObjectKey, out: &mut dyn Write) -> Result<u64, StorageError> {
        let bytes = self.get(key)?;
        out.write_all(&bytes).map_err(|source| StorageError::Io { key: key.to_string(), source })?;
        Ok(bytes.len() as u64)
    }
    /// Checks that the stored object is `expected`, reading it back in
    /// bounded chunks (a backend may use a cheaper proof it trusts, such as
    /// a content MD5 the store computed on receipt).
    fn verify(&self, key: &ObjectKey, expected: &Fingerprint) -> Result<(), StorageError> {
        let mut checksum = ChecksumWriter::default();
        self.get_to(key, &mut checksum)?;
        compare(self.name(), key, checksum.size, checksum.crc32c, expected)
    }
    /// Checks that the stored object is `expected` (as [`StorageTarget::verify`])
    /// and a Parquet file whose footer counts `rows` rows, read by ranged
    /// reads. A backend may answer both from fewer requests.
    fn verify_parquet(&self, key: &ObjectKey, expected: &Fingerprint, rows: i64) -> Result<(), StorageError> {
        self.verify(key, expected)?;
        check_footer(self, key, expected.size, rows)
    }
    /// Whether the backend answers now: `Err(Unavailable)` with the reason
    /// if not. Cheap; run by the health checks, never on the write path.
    fn probe(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Bytes `range` of the object.
    fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Vec<u8>, StorageError>;
    /// The object's size.
    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError>;
    /// Removes the object; removing a missing object is not an error.
    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;
    /// Every object whose key starts with `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;
    /// A local path DuckDB can read directly, when the target is local.
    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf>;
    /// The directory every `local_path` lies under, when the target is local.
    fn local_root(&self) -> Option<PathBuf> {
        None
    }
    /// Removes what puts interrupted by a crash left behind (temporary
    /// files, unfinished uploads); returns how many. Run at start-up only.
    fn remove_temporaries(&self) -> Result<usize, StorageError> {
        Ok(0)
    }
    /// Starts a batch of puts that become durable together: objects stored
    /// by [`StorageTarget::put_in`] are durable once
    /// [`StorageTarget::seal_batch`] returns `Ok` for the batch, and not
    /// before. The default batch is no batch: each put is durable on its own.
    fn begin_batch(&self) -> Result<PutBatch, StorageError> {
        Ok(PutBatch::default())
    }
    /// Stores `bytes` under `key` create-only, as part of `batch`: readable
    /// at once, durable once the batch is sealed. A crash before then may
    /// leave the object missing or partial; its key was never committed
    /// anywhere, so it is an orphan the start-up sweep removes.
    fn put_in(&self, batch: &PutBatch, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
        let _ = batch;
        self.put(key, bytes)
    }
    /// Makes every object `put_in` stored in `batch` durable, or fails (and
    /// then none of them may be relied on).
    fn seal_batch(&self, batch: PutBatch) -> Result<(), StorageError> {
        drop(batch);
        Ok(())
    }
    /// Whether a successful put stores exactly the bytes it was given, so a
    /// read-back would prove nothing more (a local directory: the read
    /// comes from the very page cache the write filled, and the durability
    /// step reports any writeback error). Remote stores answer `false`.
    fn puts_are_exact(&self) -> bool {
        false
    }
    /// Copies an object into another target (create-only there).
    fn copy_to(
        &self,
        key: &ObjectKey,
        destination: &dyn StorageTarget,
        destination_key: &ObjectKey,
    ) -> Result<(), StorageError> {
        let bytes = self.get(key)?;
        destination.put(destination_key, &bytes)
    }
}

/// A batch of puts made durable together ([`StorageTarget::begin_batch`]).
/// A local directory's batch holds a descriptor of its root opened before
/// the batch's first write; the batch's seal syncs the whole file system
/// through it (`syncfs(2)`), which on Linux 5.8+ reports every writeback
/// error since that descriptor was opened, so a failed write of any file of
/// the batch fails the seal.
#[derive(Debug, Default)]
pub struct PutBatch {
    root: Option<File>,
}

/// A writer that only counts and CRC32Cs what passes through it: the
/// read-back of `verify`, which needs no MD5.
#[derive(Default)]
struct ChecksumWriter {
    size: u64,
    crc32c: u32,
}

impl Write for ChecksumWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.size += buf.len() as u64;
        self.crc32c = crc32c::crc32c_append(self.crc32c, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `Ok` if `size` and `crc32c` are `expected`'s, else a
/// [`StorageError::Mismatch`] saying how they differ.
fn compare(target: &str, key: &ObjectKey, size: u64, crc32c: u32, expected: &Fingerprint) -> Result<(), StorageError> {
    if size != expected.size || crc32c != expected.crc32c {
        return Err(StorageError::Mismatch {
            target: target.to_string(),
            key: key.clone(),
            detail: format!(
                "{size} bytes with CRC32C {crc32c:08x} stored, {} bytes with CRC32C {:08x} expected",
                expected.size, expected.crc32c
            ),
        });
    }
    Ok(())
}

/// A target in a local directory. Writes go to a temporary file that is
/// fsync'd, hard-linked into place (which fails if the name is taken, giving
/// create-only semantics atomically) and unlinked, then the directory is fsync'd.
#[derive(Debug)]
pub struct LocalDirectory {
    name: String,
    root: PathBuf,
}

impl LocalDirectory {
    /// A target rooted at `root`, created if missing.
    pub fn open(name: &str, root: &Path) -> Result<LocalDirectory, StorageError> {
        fs::create_dir_all(root).map_err(|source| StorageError::Io { key: root.display().to_string(), source })?;
        Ok(LocalDirectory { name: name.to_string(), root: root.to_path_buf() })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// Creates the object at `key` durably and create-only: `write` fills a
    /// temporary file in the key's directory, which is fsync'd and
    /// hard-linked into place (failing if the name is taken), then the
    /// directory is fsync'd.
    fn create(
        &self,
        key: &ObjectKey,
        write: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<(), StorageError> {
        let path = self.path(key);
        let dir = path.parent().expect("keys have a file name");
        if !dir.exists() {
            self.create_dirs(key, dir)?;
        }
        let tmp = dir.join(format!(".tmp-{}", rand::random::<u64>()));
        let result = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            write(&mut file)?;
            file.sync_all()?;
            fs::hard_link(&tmp, &path)
        })();
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::AlreadyExists(key.clone()));
            }
            Err(e) => return Err(io(key)(e)),
        }
        crate::failpoint::hit("local.put.before_dir_sync");
        sync_dir(dir).map_err(io(key))
    }

    /// Creates the object at `key` create-only (`O_EXCL` on its final name)
    /// without syncing anything: a batch's seal makes it durable. A failed
    /// write removes what it wrote.
    fn create_unsynced(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.path(key);
        let open = || OpenOptions::new().write(true).create_new(true).open(&path);
        let opened = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(path.parent().expect("keys have a file name")).map_err(io(key))?;
                open()
            }
            other => other,
        };
        let mut file = opened.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => StorageError::AlreadyExists(key.clone()),
            _ => io(key)(e),
        })?;
        if let Err(e) = file.write_all(bytes) {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(io(key)(e));
        }
        Ok(())
    }

    /// Creates `dir` (a key's directory) and makes the new directories'
    /// entries durable: each new directory's parent, up to the one that existed.
    fn create_dirs(&self, key: &ObjectKey, dir: &Path) -> Result<(), StorageError> {
        // The deepest directory that exists gains the first new entry.
        let mut existing = dir;
        while let Some(parent) = existing.parent() {
            existing = parent;
            if existing == self.root || existing.exists() {
                break;
            }
        }
        fs::create_dir_all(dir).map_err(io(key))?;
        let mut up = dir;
        while let Some(parent) = up.parent() {
            sync_dir(parent).map_err(io(key))?;
            if parent == existing {
                break;
            }
            up = parent;
        }
        Ok(())
    }
}

fn io(key: &ObjectKey) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            StorageError::NotFound(key.clone())
        } else {
            StorageError::Io { key: key.to_string(), source }
        }
    }
}

/// Whether a directory below a target's root is another lock's: a data
/// directory or storage target (of this or another server) nested inside
/// this target. Listings and sweeps never enter one, so that nesting can
/// never make one server delete another's files as its orphans.
fn holds_a_lock(dir: &Path) -> bool {
    dir.join(crate::data_dir::LOCK_FILE_NAME).exists()
}

/// A file's modification time, ns since the epoch.
fn modified_ns(meta: &fs::Metadata) -> Option<i64> {
    let since_epoch = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_nanos()).ok()
}

/// Syncs the whole file system holding `file`: every dirty page and inode,
/// and the journal. Linux 5.8+ reports through it every writeback error of
/// the file system since `file` was opened.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn syncfs(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: the descriptor is open for the whole call (`file` is
    // borrowed) and `syncfs` takes nothing else.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// fsyncs a directory so that a rename or link inside it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl StorageTarget for LocalDirectory {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
        self.create(key, |file| file.write_all(bytes))
    }

    /// Copies the file in bounded chunks into a temporary file, then links
    /// it into place as `put` does (create-only).
    fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<(), StorageError> {
        let mut source =
            File::open(path).map_err(|source| StorageError::Io { key: path.display().to_string(), source })?;
        self.create(key, |file| std::io::copy(&mut source, file).map(|_| ()))
    }

    /// On Linux a batch holds the root's descriptor for `syncfs`; elsewhere
    /// each put is durable on its own.
    fn begin_batch(&self) -> Result<PutBatch, StorageError> {
        if !cfg!(target_os = "linux") {
            return Ok(PutBatch::default());
        }
        let root = File::open(&self.root).map_err(|source| StorageError::Io { key: self.location(), source })?;
        Ok(PutBatch { root: Some(root) })
    }

    /// Writes the file under its final name with no fsync: thousands of
    /// small files then cost one sync of the file system (the seal), not
    /// three fsyncs each.
    fn put_in(&self, batch: &PutBatch, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
        match batch.root {
            Some(_) => self.create_unsynced(key, bytes),
            None => self.put(key, bytes),
        }
    }

    /// One `syncfs` makes the batch's file contents, inodes and directory
    /// entries (new directories included) durable.
    fn seal_batch(&self, batch: PutBatch) -> Result<(), StorageError> {
        let Some(root) = batch.root else { return Ok(()) };
        #[cfg(target_os = "linux")]
        syncfs(&root).map_err(|source| StorageError::Io { key: self.location(), source })?;
        drop(root);
        Ok(())
    }

    fn puts_are_exact(&self) -> bool {
        true
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StorageError> {
        fs::read(self.path(key)).map_err(io(key))
    }

    fn get_to(&self, key: &ObjectKey, out: &mut dyn Write) -> Result<u64, StorageError> {
        let mut file = File::open(self.path(key)).map_err(io(key))?;
        std::io::copy(&mut file, out).map_err(io(key))
    }

    fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        let mut file = File::open(self.path(key)).map_err(io(key))?;
        file.seek(SeekFrom::Start(range.start)).map_err(io(key))?;
        let mut out = vec![0; (range.end - range.start) as usize];
        file.read_exact(&mut out).map_err(io(key))?;
        Ok(out)
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        let meta = fs::metadata(self.path(key)).map_err(io(key))?;
        Ok(ObjectMeta { key: key.clone(), size: meta.len(), last_modified_ns: modified_ns(&meta) })
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(key)(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(StorageError::Io { key: dir.display().to_string(), source }),
            };
            for entry in entries {
                let entry = entry.map_err(|source| StorageError::Io { key: dir.display().to_string(), source })?;
                let path = entry.path();
                let meta =
                    entry.metadata().map_err(|source| StorageError::Io { key: path.display().to_string(), source })?;
                if meta.is_dir() {
                    if !holds_a_lock(&path) {
                        stack.push(path);
                    }
                    continue;
                }
                let Ok(relative) = path.strip_prefix(&self.root) else { continue };
                let Some(relative) = relative.to_str() else { continue };
                // The target's lock records its holder's pid; it is no object.
                if relative == crate::data_dir::LOCK_FILE_NAME {
                    continue;
                }
                // Temporary files of interrupted puts are not objects.
                if let Ok(key) = ObjectKey::parse(relative)
                    && key.as_str().starts_with(prefix)
                    && !relative.rsplit('/').next().unwrap_or("").starts_with(".tmp-")
                {
                    out.push(ObjectMeta { key, size: meta.len(), last_modified_ns: modified_ns(&meta) });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        Some(self.path(key))
    }

    fn local_root(&self) -> Option<PathBuf> {
        Some(self.root.clone())
    }

    /// Removes the `.tmp-*` files of puts interrupted by a crash.
    fn remove_temporaries(&self) -> Result<usize, StorageError> {
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if !holds_a_lock(&path) {
                        stack.push(path);
                    }
                } else if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    fs::remove_file(&path)
                        .map_err(|source| StorageError::Io { key: path.display().to_string(), source })?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// A target in memory, for unit tests of code above storage.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct InMemory {
    name: String,
    objects: Mutex<BTreeMap<ObjectKey, Vec<u8>>>,
}

#[cfg(test)]
impl InMemory {
    /// An empty in-memory target.
    pub fn new(name: &str) -> InMemory {
        InMemory { name: name.to_string(), objects: Mutex::default() }
    }
}

#[cfg(test)]
impl StorageTarget for InMemory {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn location(&self) -> String {
        format!("memory:{}", self.name)
    }

    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
        let mut objects = self.objects.lock().expect("not poisoned");
        if objects.contains_key(key) {
            return Err(StorageError::AlreadyExists(key.clone()));
        }
        objects.insert(key.clone(), bytes.to_vec());
        Ok(())
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StorageError> {
        self.objects.lock().expect("not poisoned").get(key).cloned().ok_or_else(|| StorageError::NotFound(key.clone()))
    }

    fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        let bytes = self.get(key)?;
        bytes
            .get(range.start as usize..range.end as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StorageError::Io { key: key.to_string(), source: std::io::ErrorKind::UnexpectedEof.into() })
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        Ok(ObjectMeta { key: key.clone(), size: self.get(key)?.len() as u64, last_modified_ns: None })
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.objects.lock().expect("not poisoned").remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let objects = self.objects.lock().expect("not poisoned");
        Ok(objects
            .iter()
            .filter(|(key, _)| key.as_str().starts_with(prefix))
            .map(|(key, bytes)| ObjectMeta { key: key.clone(), size: bytes.len() as u64, last_modified_ns: None })
            .collect())
    }

    fn local_path(&self, _key: &ObjectKey) -> Option<PathBuf> {
        None
    }
}

/// Whether the file at `path` is gone (not merely unreadable). For a reader
/// that failed and wants to say whether a committed file disappeared.
pub fn is_missing(path: &Path) -> bool {
    std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(target: &dyn StorageTarget) {
        let key = ObjectKey::parse("data/1/2/f.parquet").unwrap();
        target.put(&key, b"hello world").unwrap();
        assert!(matches!(target.put(&key, b"again"), Err(StorageError::AlreadyExists(_))));
        assert_eq!(target.get(&key).unwrap(), b"hello world");
        assert_eq!(target.get_range(&key, 6..11).unwrap(), b"world");
        assert_eq!(target.head(&key).unwrap().size, 11);
        assert_eq!(target.list("data/1/").unwrap().len(), 1);
        assert_eq!(target.list("data/9/").unwrap().len(), 0);
        target.delete(&key).unwrap();
        target.delete(&key).unwrap();
        assert!(matches!(target.get(&key), Err(StorageError::NotFound(_))));
    }

    #[test]
    fn local_directory_meets_the_contract() {
        let dir = std::env::temp_dir().join(format!("strata-storage-{}", rand::random::<u64>()));
        let target = LocalDirectory::open("hot", &dir).unwrap();
        contract(&target);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_local_batch_stores_create_only_and_seals_durable() {
        let dir = std::env::temp_dir().join(format!("strata-batch-{}", rand::random::<u64>()));
        let target = LocalDirectory::open("hot", &dir).unwrap();
        assert!(target.puts_are_exact());
        let taken = ObjectKey::parse("data/1/2/taken.parquet").unwrap();
        target.put(&taken, b"first").unwrap();
        let batch = target.begin_batch().unwrap();
        let keys: Vec<ObjectKey> =
            (0..20).map(|i| ObjectKey::parse(&format!("data/1/{}/f{i}.parquet", 100 + i % 4)).unwrap()).collect();
        for (i, key) in keys.iter().enumerate() {
            target.put_in(&batch, key, format!("file {i}").as_bytes()).unwrap();
        }
        assert!(matches!(target.put_in(&batch, &taken, b"second"), Err(StorageError::AlreadyExists(_))));
        assert!(matches!(target.put_in(&batch, &keys[3], b"again"), Err(StorageError::AlreadyExists(_))));
        assert!(matches!(target.put(&keys[3], b"again"), Err(StorageError::AlreadyExists(_))));
        target.seal_batch(batch).unwrap();
        assert_eq!(target.get(&taken).unwrap(), b"first", "a taken key keeps its object");
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(target.get(key).unwrap(), format!("file {i}").as_bytes());
        }
        assert_eq!(target.list("data/").unwrap().len(), 21, "no temporary files, nothing else");
        assert_eq!(target.remove_temporaries().unwrap(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_batch_of_a_target_without_batches_is_each_put() {
        let target = InMemory::new("mem");
        assert!(!target.puts_are_exact());
        let batch = target.begin_batch().unwrap();
        let key = ObjectKey::parse("data/1/2/f.parquet").unwrap();
        target.put_in(&batch, &key, b"x").unwrap();
        assert_eq!(target.get(&key).unwrap(), b"x", "stored before the seal");
        assert!(matches!(target.put_in(&batch, &key, b"y"), Err(StorageError::AlreadyExists(_))));
        target.seal_batch(batch).unwrap();
    }

    #[test]
    fn in_memory_meets_the_contract() {
        contract(&InMemory::new("mem"));
    }

    #[test]
    fn keys_cannot_escape() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a\0b", "a b", "%2e%2e/x"] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ObjectKey::parse("data/1/2/abc-1.parquet").is_ok());
    }

    #[test]
    fn a_new_version_of_a_file_gets_a_fresh_sibling_key() {
        let flushed = ObjectKey::parse("data/1/2/00000000000000000042-00000000deadbeef.parquet").unwrap();
        let again = flushed.new_version();
        assert_ne!(again, flushed);
        assert!(again.as_str().starts_with("data/1/2/00000000000000000042-"), "{again}");
        assert_eq!(again.as_str().len(), flushed.as_str().len());
        assert_eq!(again.new_version().as_str().len(), flushed.as_str().len(), "names do not grow");
        let archive = ObjectKey::parse("data/1/2/archive-0123456789abcdef.parquet").unwrap().new_version();
        assert!(archive.as_str().starts_with("data/1/2/archive-") && archive.as_str().ends_with(".parquet"));
        assert!(ObjectKey::parse("data/1/2/odd.parquet").unwrap().new_version().as_str().starts_with("data/1/2/odd-"));
    }

    #[test]
    fn listings_and_sweeps_never_enter_a_nested_lock() {
        let root = std::env::temp_dir().join(format!("strata-nested-{}", rand::random::<u64>()));
        let outer = LocalDirectory::open("outer", &root).unwrap();
        outer.put(&ObjectKey::parse("data/1/2/a.parquet").unwrap(), b"a").unwrap();
        // Another server's target (or data directory) inside this one's data/.
        let nested = root.join("data/other");
        let lock = crate::data_dir::lock_directory(&nested).unwrap();
        let inner = LocalDirectory::open("inner", &nested).unwrap();
        inner.put(&ObjectKey::parse("data/1/2/b.parquet").unwrap(), b"b").unwrap();
        std::fs::write(nested.join("data/1/2/.tmp-1"), b"in flight").unwrap();

        let keys: Vec<String> = outer.list("data/").unwrap().into_iter().map(|o| o.key.to_string()).collect();
        assert_eq!(keys, ["data/1/2/a.parquet"], "the nested target's files are not this target's orphans");
        assert_eq!(outer.remove_temporaries().unwrap(), 0);
        assert!(nested.join("data/1/2/.tmp-1").exists());
        assert_eq!(inner.list("").unwrap().len(), 1, "its own listing skips only its pid file");
        drop(lock);
        std::fs::remove_dir_all(root).unwrap();
    }
}
