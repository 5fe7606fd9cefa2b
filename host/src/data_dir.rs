//! The data directory's lock: one process at a time owns a data directory.
//!
//! Two servers on one directory would both append to the same WAL segment,
//! flush the same partitions and sweep each other's files as orphans. So
//! whoever opens the WAL or the catalog first takes an exclusive `flock` on
//! `<data_dir>/LOCK` and keeps the file open for as long as it works there;
//! the kernel drops the lock when the process exits, however it exits, so a
//! crash never leaves a stale lock behind. The file holds the owner's pid,
//! for the message another process gets.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    /// Another process holds the lock.
    #[error(
        "the data directory {} is in use by another strata process ({}); stop that process or use another data directory",
        .directory.display(),
        .holder_pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    Held {
        /// The data directory.
        directory: PathBuf,
        /// The pid the holder wrote into the lock file, if it could be read.
        holder_pid: Option<u32>,
    },
    /// The directory or its lock file could not be created, opened or written.
    #[error("cannot lock the data directory {}: {source}", .directory.display())]
    Io {
        /// The data directory.
        directory: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// An exclusive lock on a data directory, held until this value is dropped.
#[derive(Debug)]
pub struct DataDirLock {
    directory: PathBuf,
    /// Open for the lock's lifetime: closing it releases the `flock`.
    _file: File,
}

impl DataDirLock {
    /// The locked directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

/// Locks `directory` (created if missing) for this process, or says who
/// holds it. Call it before opening the WAL or the catalog, and keep the
/// returned lock for as long as either is open. Never blocks.
pub fn lock_data_dir(directory: &Path) -> Result<DataDirLock, DataDirLockError> {
    let io = |source| DataDirLockError::Io { directory: directory.to_path_buf(), source };
    std::fs::create_dir_all(directory).map_err(io)?;
    let path = directory.join(LOCK_FILE_NAME);
    // Not truncated on open: until we hold the lock, the pid in it is the
    // holder's.
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(DataDirLockError::Held { directory: directory.to_path_buf(), holder_pid: holder_pid(&path) });
        }
        Err(TryLockError::Error(source)) => return Err(io(source)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(DataDirLock { directory: directory.to_path_buf(), _file: file })
}

/// The pid in a lock file someone else holds (it may be mid-write: then none).
fn holder_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_granted_after_release() {
        let directory =
            std::env::temp_dir().join(format!("strata-lock-{}-{}", std::process::id(), rand::random::<u32>()));
        let first = lock_data_dir(&directory).unwrap();
        assert_eq!(first.directory(), directory);
        let pid = std::fs::read_to_string(directory.join(LOCK_FILE_NAME)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // flock locks belong to the open file, so a second open in this
        // process conflicts like another process would.
        match lock_data_dir(&directory) {
            Err(DataDirLockError::Held { holder_pid, .. }) => assert_eq!(holder_pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = lock_data_dir(&directory).unwrap();
        drop(again);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
