//! Directory locks: one process at a time owns a data directory, and each
//! local storage target directory.
//!
//! Two servers on one directory would both append to the same WAL segment,
//! flush the same partitions and sweep each other's files as orphans; a
//! server whose storage target points into another server's target would
//! sweep that server's committed files as its own orphans. So the data
//! directory, and every local target directory, is locked with an exclusive
//! `flock` on the directory itself (not on a file in it: deleting a file
//! would drop the lock's meaning, a directory cannot be deleted while it
//! holds files) and kept open for as long as the process works there; the
//! kernel drops the lock when the process exits, however it exits, so a
//! crash never leaves a stale lock behind. The `LOCK` file beside it only
//! records the owner's pid, for the message another process gets.

use crate::sync::Recover as _;
use std::fs::{File, TryLockError};
use std::io::Write;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// Creates the data directory (and its parents) if it does not exist yet.
/// The store opens its catalog and WAL inside it.
pub fn create_data_dir(directory: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(directory)
}

/// The name of the file that records the holder's pid inside a locked
/// directory. Storage listings skip it at a target's root.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Which directory a lock guards: it chooses the wording an operator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockedDirectory {
    /// A server's data directory (catalog and WAL), locked at start-up.
    DataDirectory,
    /// Any other directory, such as a local storage target's.
    Other,
}

impl LockedDirectory {
    /// How a message names `directory`.
    fn name(self, directory: &Path) -> String {
        match self {
            LockedDirectory::DataDirectory => format!("the data directory {}", directory.display()),
            LockedDirectory::Other => directory.display().to_string(),
        }
    }

    /// What a message says when another process holds the lock.
    fn held(self, directory: &Path, holder_pid: Option<u32>) -> String {
        match (self, holder_pid) {
            (LockedDirectory::DataDirectory, pid) => format!(
                "{} is in use by another strata process ({}); stop that process or use another data directory",
                self.name(directory),
                pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
            ),
            (LockedDirectory::Other, Some(pid)) => format!("{} is locked by pid {pid}", self.name(directory)),
            (LockedDirectory::Other, None) => {
                format!("{} is locked by another process (pid unknown)", self.name(directory))
            }
        }
    }
}

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryLockError {
    /// Another process (or another lock in this one) holds the lock.
    #[error("{}", .what.held(.directory, *.holder_pid))]
    Held {
        /// Which directory it is.
        what: LockedDirectory,
        /// The directory.
        directory: PathBuf,
        /// The pid the holder wrote into the lock file, if it could be read.
        holder_pid: Option<u32>,
    },
    /// The directory could not be created or opened, or its pid file written.
    #[error("cannot lock {}: {source}", .what.name(.directory))]
    Io {
        /// Which directory it is.
        what: LockedDirectory,
        /// The directory.
        directory: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// An exclusive lock on a directory, held until this value is dropped.
#[derive(Debug)]
pub struct DirectoryLock {
    /// The locked directory (shown by `Debug`).
    _directory: PathBuf,
    /// The directory, open for the lock's lifetime: closing it releases the `flock`.
    _handle: File,
}

#[cfg(test)]
impl DirectoryLock {
    /// The locked directory.
    pub fn directory(&self) -> &Path {
        &self._directory
    }
}

/// Locks `directory` (created if missing) exclusively, or says who holds
/// it. A second call for the same directory conflicts even within one
/// process (`flock` locks belong to the open directory). Never blocks.
pub fn lock_directory(directory: &Path) -> Result<DirectoryLock, DirectoryLockError> {
    lock(directory, LockedDirectory::Other)
}

/// [`lock_directory`], with errors worded for `what`.
fn lock(directory: &Path, what: LockedDirectory) -> Result<DirectoryLock, DirectoryLockError> {
    let io = |source| DirectoryLockError::Io { what, directory: directory.to_path_buf(), source };
    std::fs::create_dir_all(directory).map_err(io)?;
    // flock works on a read-only directory descriptor (Linux, the BSDs).
    let handle = File::open(directory).map_err(io)?;
    match handle.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder_pid = holder_pid(&directory.join(LOCK_FILE_NAME));
            return Err(DirectoryLockError::Held { what, directory: directory.to_path_buf(), holder_pid });
        }
        Err(TryLockError::Error(source)) => return Err(io(source)),
    }
    // Only once the lock is ours: until then the pid in it is the holder's.
    let mut pid_file = File::create(directory.join(LOCK_FILE_NAME)).map_err(io)?;
    writeln!(pid_file, "{}", std::process::id()).map_err(io)?;
    Ok(DirectoryLock { _directory: directory.to_path_buf(), _handle: handle })
}

/// A directory's identity whatever the path to it: (device, inode).
type DirectoryId = (u64, u64);

/// Directory locks this process holds through [`lock_directory_once`], by
/// identity, so that every path to one directory finds the same lock.
static HELD_ONCE: Mutex<Vec<(DirectoryId, Weak<DirectoryLock>)>> = Mutex::new(Vec::new());

/// Like [`lock_directory`], but a directory this process already locked
/// through this function (under any path) is shared rather than refused:
/// each distinct directory is locked once per process.
pub fn lock_directory_once(directory: &Path) -> Result<Arc<DirectoryLock>, DirectoryLockError> {
    let what = LockedDirectory::Other;
    let io = |source| DirectoryLockError::Io { what, directory: directory.to_path_buf(), source };
    std::fs::create_dir_all(directory).map_err(io)?;
    let metadata = std::fs::metadata(directory).map_err(io)?;
    let identity = (metadata.dev(), metadata.ino());
    let mut held = HELD_ONCE.lock_or_recover();
    held.retain(|(_, lock)| lock.strong_count() > 0);
    if let Some(lock) = held.iter().find(|(id, _)| *id == identity).and_then(|(_, lock)| lock.upgrade()) {
        return Ok(lock);
    }
    let lock = Arc::new(lock_directory(directory)?);
    held.push((identity, Arc::downgrade(&lock)));
    Ok(lock)
}

/// An exclusive lock on a data directory, held until this value is dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _lock: DirectoryLock,
}

#[cfg(test)]
impl DataDirLock {
    /// The locked directory.
    pub fn directory(&self) -> &Path {
        self._lock.directory()
    }
}

/// Locks `directory` (created if missing) for this process, or says who
/// holds it. Call it before opening the WAL or the catalog, and keep the
/// returned lock for as long as either is open. Never blocks.
pub fn lock_data_dir(directory: &Path) -> Result<DataDirLock, DirectoryLockError> {
    lock(directory, LockedDirectory::DataDirectory).map(|lock| DataDirLock { _lock: lock })
}

/// The pid in the lock file at `path` (it may be mid-write, deleted or not
/// Strata's: then none).
pub fn holder_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("strata-lock-{}-{}", std::process::id(), rand::random::<u32>()))
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_granted_after_release() {
        let directory = temp_dir();
        let first = lock_data_dir(&directory).unwrap();
        assert_eq!(first.directory(), directory);
        let pid = std::fs::read_to_string(directory.join(LOCK_FILE_NAME)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // flock locks belong to the open file, so a second open in this
        // process conflicts like another process would.
        match lock_data_dir(&directory) {
            Err(DirectoryLockError::Held { holder_pid, .. }) => assert_eq!(holder_pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = lock_data_dir(&directory).unwrap();
        drop(again);
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn deleting_the_pid_file_does_not_release_the_lock() {
        let directory = temp_dir();
        let first = lock_data_dir(&directory).unwrap();
        std::fs::remove_file(directory.join(LOCK_FILE_NAME)).unwrap();
        match lock_data_dir(&directory) {
            Err(DirectoryLockError::Held { holder_pid: None, .. }) => {}
            other => panic!("expected Held with no pid, got {other:?}"),
        }
        drop(first);
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn a_directory_locked_once_is_shared_under_any_path_and_refused_to_others() {
        let directory = temp_dir();
        std::fs::create_dir_all(&directory).unwrap();
        let alias = directory.with_extension("alias");
        std::os::unix::fs::symlink(&directory, &alias).unwrap();
        let first = lock_directory_once(&directory).unwrap();
        let second = lock_directory_once(&alias).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "one lock per directory per process");
        assert!(matches!(lock_directory(&directory), Err(DirectoryLockError::Held { .. })));
        drop((first, second));
        drop(lock_directory_once(&alias).unwrap());
        std::fs::remove_file(&alias).unwrap();
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn the_data_directory_is_named_as_such() {
        let directory = Path::new("/srv/strata");
        let held = |what, holder_pid| DirectoryLockError::Held { what, directory: directory.into(), holder_pid };
        let io =
            |what| DirectoryLockError::Io { what, directory: directory.into(), source: std::io::Error::other("no") };
        let data = LockedDirectory::DataDirectory;
        let cases = [
            (
                held(data, Some(7)),
                "the data directory /srv/strata is in use by another strata process (pid 7); stop that process or use another data directory",
            ),
            (
                held(data, None),
                "the data directory /srv/strata is in use by another strata process (pid unknown); stop that process or use another data directory",
            ),
            (io(data), "cannot lock the data directory /srv/strata: no"),
            (held(LockedDirectory::Other, Some(7)), "/srv/strata is locked by pid 7"),
            (held(LockedDirectory::Other, None), "/srv/strata is locked by another process (pid unknown)"),
            (io(LockedDirectory::Other), "cannot lock /srv/strata: no"),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }
}
