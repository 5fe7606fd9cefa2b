//! The staging directory: local files a copy works on while it streams
//! data between targets — downloads of remote objects, re-encoded and
//! merged files on their way to a target.
//!
//! Every staged file is a [`StagedFile`], removed when it is dropped, so a
//! failed step leaves nothing behind; what a crash leaves is removed when
//! [`Staging::open`] empties the directory at the next start. A file on a
//! local target is read in place ([`LocalFile::InPlace`]), never staged.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Fingerprint, FingerprintWriter, ObjectKey, StorageError, StorageTarget};
use crate::parquet_file::ParquetFileError;

/// The staging directory (`<data_dir>/staging`).
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    /// Remove the whole directory on drop (private directories of unit tests).
    owned: bool,
}

impl Staging {
    /// Opens `dir`, created if missing and emptied of what an earlier run left.
    pub fn open(dir: &Path) -> Result<Staging, StorageError> {
        let io = |source| StorageError::Io { key: dir.display().to_string(), source };
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        fs::create_dir_all(dir).map_err(io)?;
        Ok(Staging { dir: dir.to_path_buf(), owned: false })
    }

    /// A private staging directory under the system's temporary directory,
    /// removed on drop (targets built from parts, in tests).
    pub fn private() -> Result<Staging, StorageError> {
        let dir = std::env::temp_dir().join(format!("strata-staging-{:016x}", rand::random::<u64>()));
        let mut staging = Staging::open(&dir)?;
        staging.owned = true;
        Ok(staging)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new empty staged file to write, fingerprinted as it is written.
    pub fn create(&self) -> Result<StagedWriter, StorageError> {
        let path = self.dir.join(format!("{:016x}.staged", rand::random::<u64>()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| StorageError::Io { key: path.display().to_string(), source })?;
        Ok(StagedWriter {
            out: BufWriter::with_capacity(COPY_BUFFER_BYTES, file),
            hasher: FingerprintWriter::default(),
            staged: StagedFile { path },
        })
    }

    /// The object `key` of `target` as a local file: in place when the
    /// target is local (and `in_place` allows it), else downloaded in
    /// bounded chunks into a staged file.
    pub fn fetch(
        &self,
        target: &dyn StorageTarget,
        key: &ObjectKey,
        in_place: bool,
    ) -> Result<LocalFile, StorageError> {
        if in_place && let Some(path) = target.local_path(key) {
            return match fs::metadata(&path) {
                Ok(_) => Ok(LocalFile::InPlace(path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NotFound(key.clone())),
                Err(source) => Err(StorageError::Io { key: key.to_string(), source }),
            };
        }
        let mut writer = self.create()?;
        target.get_to(key, &mut writer)?;
        let (staged, _) = writer.finish()?;
        Ok(LocalFile::Staged(staged))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.owned {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The buffer between a staged file and its writer.
const COPY_BUFFER_BYTES: usize = 1 << 20;

/// A file in the staging directory, removed on drop.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
}

impl StagedFile {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens it for reading.
    pub fn open(&self) -> std::io::Result<File> {
        File::open(&self.path)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A staged file being written; [`StagedWriter::finish`] gives the file
/// and the fingerprint of what was written.
pub struct StagedWriter {
    out: BufWriter<File>,
    hasher: FingerprintWriter,
    staged: StagedFile,
}

impl StagedWriter {
    /// Flushes the file; returns it with its fingerprint.
    pub fn finish(mut self) -> Result<(StagedFile, Fingerprint), StorageError> {
        self.out.flush().map_err(|source| StorageError::Io { key: self.staged.path.display().to_string(), source })?;
        Ok((self.staged, self.hasher.finish()))
    }
}

impl Write for StagedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A data file as a local file: in place on a local target, or staged.
#[derive(Debug)]
pub enum LocalFile {
    /// The target's own file (never written or removed through this).
    InPlace(PathBuf),
    /// A staged download, removed on drop.
    Staged(StagedFile),
}

impl LocalFile {
    /// Its path.
    pub fn path(&self) -> &Path {
        match self {
            LocalFile::InPlace(path) => path,
            LocalFile::Staged(staged) => staged.path(),
        }
    }

    /// Opens it for reading.
    pub fn open(&self) -> std::io::Result<File> {
        File::open(self.path())
    }

    /// Checks it is the Parquet file the catalog records: its CRC32C
    /// (streamed) and its footer's row count (the footer only is read).
    /// Returns its fingerprint.
    pub fn verify_parquet(&self, rows: i64, checksum_crc32c: u32) -> Result<Fingerprint, ParquetFileError> {
        verify_file(self.path(), rows, checksum_crc32c)
    }
}

/// Checks the Parquet file at `path`: its CRC32C, streamed in bounded
/// chunks, and its footer's row count (only the footer is read). Returns
/// its fingerprint.
pub fn verify_file(path: &Path, rows: i64, checksum_crc32c: u32) -> Result<Fingerprint, ParquetFileError> {
    let fingerprint = Fingerprint::of_file(path)?;
    if fingerprint.crc32c != checksum_crc32c {
        return Err(ParquetFileError::Verify(format!(
            "checksum {:08x}, expected {checksum_crc32c:08x}",
            fingerprint.crc32c
        )));
    }
    crate::parquet_file::check_footer(&File::open(path)?, rows)?;
    Ok(fingerprint)
}

/// Checks the Parquet footer of object `key` (`size` bytes) on `target`
/// with ranged reads — the last 8 bytes, then the footer — without
/// reading the data: it must parse and count `rows` rows.
pub fn check_footer<T: StorageTarget + ?Sized>(
    target: &T,
    key: &ObjectKey,
    size: u64,
    rows: i64,
) -> Result<(), StorageError> {
    let mismatch = |error: ParquetFileError| StorageError::Mismatch {
        target: target.name().to_string(),
        key: key.clone(),
        detail: error.to_string(),
    };
    let stored = crate::parquet_file::footer_rows(size, |range| target.get_range(key, range), mismatch)?;
    if stored != rows {
        return Err(mismatch(ParquetFileError::Verify(format!("footer says {stored} rows, expected {rows}"))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{InMemory, LocalDirectory};

    #[test]
    fn staged_files_are_removed_on_drop_and_downloads_are_fingerprinted() {
        let staging = Staging::private().unwrap();
        let remote = InMemory::new("remote");
        let key = ObjectKey::parse("data/1/2/f.parquet").unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        remote.put(&key, &bytes).unwrap();
        let fetched = staging.fetch(&remote, &key, true).unwrap();
        assert!(matches!(fetched, LocalFile::Staged(_)), "a target without paths is downloaded");
        assert_eq!(Fingerprint::of_file(fetched.path()).unwrap(), Fingerprint::of(&bytes));
        let path = fetched.path().to_path_buf();
        drop(fetched);
        assert!(!path.exists(), "a staged download is removed on drop");

        let mut writer = staging.create().unwrap();
        writer.write_all(&bytes).unwrap();
        let (staged, fingerprint) = writer.finish().unwrap();
        assert_eq!(fingerprint, Fingerprint::of(&bytes));
        assert_eq!(fs::read(staged.path()).unwrap(), bytes);

        let local = LocalDirectory::open("local", &staging.dir().join("target")).unwrap();
        local.put(&key, b"in place").unwrap();
        let in_place = staging.fetch(&local, &key, true).unwrap();
        assert_eq!(in_place.path(), local.local_path(&key).unwrap());
        drop(in_place);
        assert!(local.local_path(&key).unwrap().exists(), "a file read in place stays");
        assert!(matches!(staging.fetch(&local, &key, false).unwrap(), LocalFile::Staged(_)));
        let missing = ObjectKey::parse("data/1/2/gone.parquet").unwrap();
        assert!(matches!(staging.fetch(&local, &missing, true), Err(StorageError::NotFound(_))));

        let dir = staging.dir().to_path_buf();
        drop((staged, staging));
        assert!(!dir.exists());
    }

    #[test]
    fn opening_empties_what_an_earlier_run_left() {
        let dir = std::env::temp_dir().join(format!("strata-staging-open-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("0123.staged"), b"left by a crash").unwrap();
        let staging = Staging::open(&dir).unwrap();
        assert_eq!(fs::read_dir(staging.dir()).unwrap().count(), 0);
        fs::remove_dir_all(dir).unwrap();
    }
}
