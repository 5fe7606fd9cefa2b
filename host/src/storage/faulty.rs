//! A storage target that misbehaves on purpose, for fault-injection tests.
//!
//! [`Targets::open`](super::Targets::open) wraps a target in [`Faulty`] only
//! when `STRATA_FAILPOINTS` names one of its operations
//! (`storage.<put|get|delete>.<target>=<action>`); otherwise the target is
//! used as it is and this code never runs.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use super::{ObjectKey, ObjectMeta, StorageError, StorageTarget};
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

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StorageError> {
        let fault = self.fault(StorageOp::Get, key)?;
        let bytes = self.inner.get(key)?;
        Ok(match fault {
            Some(action) => damage(bytes, action),
            None => bytes,
        })
    }

    /// Streams when no fault applies; a short or corrupt read is damaged
    /// whole, like `get`.
    fn get_to(&self, key: &ObjectKey, out: &mut dyn std::io::Write) -> Result<u64, StorageError> {
        match self.fault(StorageOp::Get, key)? {
            None => self.inner.get_to(key, out),
            Some(action) => {
                let bytes = damage(self.inner.get(key)?, action);
                out.write_all(&bytes).map_err(|source| StorageError::Io { key: key.to_string(), source })?;
                Ok(bytes.len() as u64)
            }
        }
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
}
