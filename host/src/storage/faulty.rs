//! A storage target that misbehaves on purpose, for fault-injection tests.
//!
//! [`Targets::open`](super::Targets::open) wraps a target in [`Faulty`] only
//! when `STRATA_FAILPOINTS` names one of its operations
//! (`storage.<put|get|delete>.<target>=<action>`); otherwise the target is
//! used as it is and this code never runs. The streaming operations fail
//! alike: `put_file` as `put`, `get_to`, `verify` and `get_range` as `get`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Fingerprint, ObjectKey, ObjectMeta, PutBatch, StorageError, StorageTarget};
use crate::failpoint::{Action, StorageOp};

/// Wraps a target; each faulty operation errors, moves half the bytes,
/// flips a byte or aborts the process, every time it is called.
#[derive(Debug)]
pub struct Faulty {
    inner: Arc<dyn StorageTarget>,
    faults: Vec<(StorageOp, Action)>,
}

impl Faulty {
    /// Wraps `inner` with `faults`.
    pub fn new(inner: Arc<dyn StorageTarget>, faults: Vec<(StorageOp, Action)>) -> Faulty {
        Faulty { inner, faults }
    }

    /// The enabled faults as fail point names with their actions.
    pub fn describe(&self) -> Vec<String> {
        self.faults.iter().map(|(op, action)| format!("{}={action:?}", self.point(*op)).to_lowercase()).collect()
    }

    fn point(&self, op: StorageOp) -> String {
        format!("storage.{}.{}", op.as_str(), self.inner.name())
    }

    /// The fault of `op`, after handling the ones that need no bytes: an
    /// error is returned, an abort aborts.
    fn fault(&self, op: StorageOp, key: &ObjectKey) -> Result<Option<Action>, StorageError> {
        match self.faults.iter().find(|(o, _)| *o == op).map(|(_, action)| *action) {
            Some(Action::Abort) => crate::failpoint::abort(&self.point(op)),
            Some(Action::Error) => Err(StorageError::Io {
                key: key.to_string(),
                source: std::io::Error::other(format!("injected by fail point {}", self.point(op))),
            }),
            other => Ok(other),
        }
    }
}

/// Half of `bytes` (`short`), or `bytes` with the middle byte flipped (`corrupt`).
fn damage(mut bytes: Vec<u8>, action: Action) -> Vec<u8> {
    match action {
        Action::Short => bytes.truncate(bytes.len() / 2),
        Action::Corrupt if !bytes.is_empty() => {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
        }
        _ => {}
    }
    bytes
}

/// Writes a damaged copy of the file at `path` next to it, named as a
/// temporary (`.tmp-`) so no listing takes it for an object (`short`: its
/// first half; `corrupt`: its middle byte flipped), in bounded chunks;
/// returns the copy's path, which the caller removes.
fn damaged_copy(path: &Path, action: Action) -> std::io::Result<PathBuf> {
    let len = fs::metadata(path)?.len();
    let copy = path.with_file_name(format!(".tmp-faulty-{:016x}", rand::random::<u64>()));
    let mut out = DamagingWriter::new(OpenOptions::new().write(true).create_new(true).open(&copy)?, len, action);
    std::io::copy(&mut File::open(path)?.take(len), &mut out)?;
    out.out.sync_all()?;
    Ok(copy)
}

/// A writer passing on what `damage` would leave of an object of `len`
/// bytes: the first half (`short`), or all with the middle byte flipped
/// (`corrupt`).
struct DamagingWriter<W> {
    out: W,
    at: u64,
    keep: u64,
    flip: Option<u64>,
}

impl<W: Write> DamagingWriter<W> {
    fn new(out: W, len: u64, action: Action) -> DamagingWriter<W> {
        match action {
            Action::Short => DamagingWriter { out, at: 0, keep: len / 2, flip: None },
            Action::Corrupt if len > 0 => DamagingWriter { out, at: 0, keep: len, flip: Some(len / 2) },
            _ => DamagingWriter { out, at: 0, keep: len, flip: None },
        }
    }
}

impl<W: Write> Write for DamagingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let kept = usize::try_from(self.keep.saturating_sub(self.at)).unwrap_or(usize::MAX).min(buf.len());
        let mut chunk = buf[..kept].to_vec();
        if let Some(flip) = self.flip
            && (self.at..self.at + kept as u64).contains(&flip)
        {
            chunk[(flip - self.at) as usize] ^= 0xff;
        }
        self.out.write_all(&chunk)?;
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl StorageTarget for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
        match self.fault(StorageOp::Put, key)? {
            Some(action) => self.inner.put(key, &damage(bytes.to_vec(), action)),
            None => self.inner.put(key, bytes),
        }
    }

    fn begin_batch(&self) -> Result<PutBatch, StorageError> {
        self.inner.begin_batch()
    }

    fn put_in(&self, batch: &PutBatch, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
        match self.fault(StorageOp::Put, key)? {
            Some(action) => self.inner.put_in(batch, key, &damage(bytes.to_vec(), action)),
            None => self.inner.put_in(batch, key, bytes),
        }
    }

    fn seal_batch(&self, batch: PutBatch) -> Result<(), StorageError> {
        self.inner.seal_batch(batch)
    }

    /// A target with faults lies about its puts or reads: they are checked.
    fn puts_are_exact(&self) -> bool {
        self.faults.is_empty() && self.inner.puts_are_exact()
    }

    fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<(), StorageError> {
        match self.fault(StorageOp::Put, key)? {
            Some(action) => {
                let copy =
                    damaged_copy(path, action).map_err(|source| StorageError::Io { key: key.to_string(), source })?;
                let result = self.inner.put_file(key, &copy);
                let _ = fs::remove_file(&copy);
                result
            }
            None => self.inner.put_file(key, path),
        }
    }

    fn get_to(&self, key: &ObjectKey, out: &mut dyn Write) -> Result<u64, StorageError> {
        match self.fault(StorageOp::Get, key)? {
            Some(action) => {
                let len = self.inner.head(key)?.size;
                let mut damaging = DamagingWriter::new(out, len, action);
                self.inner.get_to(key, &mut damaging)?;
                Ok(damaging.keep.min(damaging.at))
            }
            None => self.inner.get_to(key, out),
        }
    }

    /// With a `get` fault, the object is read back through the fault;
    /// otherwise the inner target proves it its own way.
    fn verify(&self, key: &ObjectKey, expected: &Fingerprint) -> Result<(), StorageError> {
        match self.fault(StorageOp::Get, key)? {
            Some(_) => {
                let mut checksum = super::ChecksumWriter::default();
                self.get_to(key, &mut checksum)?;
                super::compare(self.name(), key, checksum.size, checksum.crc32c, expected)
            }
            None => self.inner.verify(key, expected),
        }
    }

    fn probe(&self) -> Result<(), StorageError> {
        self.inner.probe()
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StorageError> {
        let fault = self.fault(StorageOp::Get, key)?;
        let bytes = self.inner.get(key)?;
        Ok(match fault {
            Some(action) => damage(bytes, action),
            None => bytes,
        })
    }

    fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        let fault = self.fault(StorageOp::Get, key)?;
        let bytes = self.inner.get_range(key, range)?;
        Ok(match fault {
            Some(action) => damage(bytes, action),
            None => bytes,
        })
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        self.inner.head(key)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.fault(StorageOp::Delete, key)?;
        self.inner.delete(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.inner.list(prefix)
    }

    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        self.inner.local_path(key)
    }

    fn local_root(&self) -> Option<PathBuf> {
        self.inner.local_root()
    }

    fn remove_temporaries(&self) -> Result<usize, StorageError> {
        self.inner.remove_temporaries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::InMemory;

    #[test]
    fn each_fault_does_what_it_says_and_reports_success_when_it_lies() {
        let key = ObjectKey::parse("data/1/2/f.parquet").unwrap();
        let bytes = b"0123456789".to_vec();
        let faulty = |op, action| {
            let inner: Arc<dyn StorageTarget> = Arc::new(InMemory::new("warm"));
            (inner.clone(), Faulty::new(inner, vec![(op, action)]))
        };

        let (_, target) = faulty(StorageOp::Put, Action::Error);
        let error = target.put(&key, &bytes).unwrap_err().to_string();
        assert!(error.contains("storage.put.warm"), "{error}");
        assert!(matches!(target.get(&key), Err(StorageError::NotFound(_))), "nothing was stored");

        let (inner, target) = faulty(StorageOp::Put, Action::Short);
        target.put(&key, &bytes).unwrap();
        assert_eq!(inner.get(&key).unwrap(), b"01234");

        let (inner, target) = faulty(StorageOp::Put, Action::Corrupt);
        target.put(&key, &bytes).unwrap();
        let stored = inner.get(&key).unwrap();
        assert_eq!(stored.len(), bytes.len());
        assert_eq!(stored.iter().zip(&bytes).filter(|(a, b)| a != b).count(), 1);

        let (inner, target) = faulty(StorageOp::Get, Action::Corrupt);
        inner.put(&key, &bytes).unwrap();
        assert_ne!(target.get(&key).unwrap(), bytes);
        assert_eq!(inner.get(&key).unwrap(), bytes, "the stored object is intact");

        let (inner, target) = faulty(StorageOp::Delete, Action::Error);
        inner.put(&key, &bytes).unwrap();
        assert!(target.delete(&key).is_err());
        assert_eq!(target.get(&key).unwrap(), bytes, "other operations are untouched");
        assert_eq!(target.describe(), ["storage.delete.warm=error"]);
    }

    #[test]
    fn the_streaming_operations_fail_as_their_whole_object_twins() {
        let dir = std::env::temp_dir().join(format!("strata-faulty-{}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        let source = dir.join("source");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&source, &bytes).unwrap();
        let key = ObjectKey::parse("data/1/2/f.parquet").unwrap();
        let faulty = |op, action| {
            let inner: Arc<dyn StorageTarget> = Arc::new(InMemory::new("warm"));
            (inner.clone(), Faulty::new(inner, vec![(op, action)]))
        };
        let whole = Fingerprint::of(&bytes);

        let (inner, target) = faulty(StorageOp::Put, Action::Error);
        assert!(target.put_file(&key, &source).unwrap_err().to_string().contains("storage.put.warm"));
        assert!(inner.list("").unwrap().is_empty(), "nothing was stored");

        let (inner, target) = faulty(StorageOp::Put, Action::Short);
        target.put_file(&key, &source).unwrap();
        assert_eq!(inner.get(&key).unwrap(), &bytes[..bytes.len() / 2]);
        assert!(matches!(target.verify(&key, &whole), Err(StorageError::Mismatch { .. })));

        let (inner, target) = faulty(StorageOp::Put, Action::Corrupt);
        target.put_file(&key, &source).unwrap();
        let stored = inner.get(&key).unwrap();
        assert_eq!(stored.iter().zip(&bytes).filter(|(a, b)| a != b).count(), 1);
        assert_eq!(stored.len(), bytes.len());

        let (inner, target) = faulty(StorageOp::Get, Action::Corrupt);
        inner.put(&key, &bytes).unwrap();
        let mut read = Vec::new();
        assert_eq!(target.get_to(&key, &mut read).unwrap(), bytes.len() as u64);
        assert_eq!(read.iter().zip(&bytes).filter(|(a, b)| a != b).count(), 1);
        assert!(
            matches!(target.verify(&key, &whole), Err(StorageError::Mismatch { .. })),
            "read back through the fault"
        );
        inner.verify(&key, &whole).unwrap();

        let (inner, target) = faulty(StorageOp::Get, Action::Short);
        inner.put(&key, &bytes).unwrap();
        let mut read = Vec::new();
        assert_eq!(target.get_to(&key, &mut read).unwrap(), bytes.len() as u64 / 2);
        assert_eq!(read, &bytes[..bytes.len() / 2]);

        let (inner, target) = faulty(StorageOp::Get, Action::Error);
        inner.put(&key, &bytes).unwrap();
        assert!(target.verify(&key, &whole).unwrap_err().to_string().contains("storage.get.warm"));
        assert!(fs::read_dir(&dir).unwrap().count() == 1, "no damaged copy is left behind");
        fs::remove_dir_all(dir).unwrap();
    }
}
