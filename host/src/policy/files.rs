//! Reading the files of the policy directory (`*.toml`) and the plugin
//! files they point at, without trusting what sits at those paths.
//!
//! A path may name anything the operator, a deployment tool or a mistake
//! put there: a FIFO (opening it for reading blocks until a writer comes,
//! which would hang every reload and, at start-up, `/ready`), a device
//! (`/dev/zero` never ends), or a file of gigabytes. So a file is read only
//! when it is a regular file (symlinks to one are followed, as deployment
//! tools use them) of at most a configured size: the type and size are
//! checked before opening, the open never blocks (`O_NONBLOCK`), the type
//! is checked again on the opened file (the path may have been swapped in
//! between), and the read stops one byte past the cap (the file may have
//! grown in between).
//!
//! Kernel pseudo-files pass as regular files of size 0 (`/proc/self/environ`,
//! `/proc/self/mem`, `/sys/...`) yet expose the server's environment and
//! memory, which an error message quoting the "file" would publish. So a
//! path that resolves into `/proc` or `/sys` is refused before it is opened,
//! the opened file's own path is checked again, and a file that says it is
//! empty but reads bytes (procfs, sysfs or debugfs mounted elsewhere) is
//! refused without its contents.
//!
//! The listing of the policy directory and the check that a file lies in
//! it are here too: this is the only file I/O of the policy runtime.

use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Where the kernel mounts its pseudo file systems; nothing under them is
/// a policy or plugin file.
const PSEUDO_FILE_ROOTS: [&str; 2] = ["/proc", "/sys"];

/// Bytes of a bad file quoted in an error message, at most.
pub const QUOTE_BYTES_MAX: usize = 200;

/// Why a policy or plugin file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileReadError {
    /// The path names something other than a regular file.
    #[error("is a {0}, not a regular file")]
    NotRegular(&'static str),
    /// The file is larger than its cap.
    #[error("is larger than {limit} = {bytes_max} bytes ({bytes} bytes or more)")]
    TooLarge {
        /// The TOML key of the cap.
        limit: &'static str,
        /// The cap.
        bytes_max: u64,
        /// The size seen (a lower bound when the file grew while read).
        bytes: u64,
    },
    /// The path resolves to a kernel pseudo-file (procfs, sysfs, ...).
    #[error("is a kernel pseudo-file ({}), not a regular file", .0.display())]
    PseudoFile(PathBuf),
    /// The file reports a size of 0 yet reads bytes: a pseudo-file on a
    /// file system mounted elsewhere. Its contents are not quoted.
    #[error("reports a size of 0 but is not empty (a kernel pseudo-file?), not a regular file")]
    SizeMismatch,
    /// The file system refused.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The contents of the regular file at `path`, refused when larger than
/// `bytes_max` (whose TOML key is `limit`). Never blocks on a FIFO or
/// reads from a device.
pub fn read_regular_file(path: &Path, bytes_max: u64, limit: &'static str) -> Result<Vec<u8>, FileReadError> {
    check_not_pseudo(&std::fs::canonicalize(path)?)?;
    check_regular(&std::fs::metadata(path)?, bytes_max, limit)?;
    // Non-blocking, so that a FIFO swapped in after the check cannot hang
    // the open; the opened file is checked again below.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    // The path may have been pointed elsewhere since it was resolved: ask
    // the kernel what was opened (when /proc is mounted to answer).
    if let Ok(opened) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        check_not_pseudo(&opened)?;
    }
    let metadata = file.metadata()?;
    check_regular(&metadata, bytes_max, limit)?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(bytes_max.saturating_add(1)).read_to_end(&mut bytes)?;
    if metadata.len() == 0 && !bytes.is_empty() {
        return Err(FileReadError::SizeMismatch);
    }
    if bytes.len() as u64 > bytes_max {
        return Err(FileReadError::TooLarge { limit, bytes_max, bytes: bytes.len() as u64 });
    }
    Ok(bytes)
}

/// The policy files of `directory`, sorted: every name ending in `.toml`,
/// also when it is not a regular file (reading it then fails, visibly);
/// only a name whose target is gone (deleted meanwhile, a dangling
/// symlink) is no file. A missing directory has none.
pub(crate) fn policy_files(directory: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .filter(|path| !matches!(std::fs::metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound))
        .collect();
    files.sort();
    Ok(files)
}

/// Whether `file`, symlinks resolved, lies in `directory`; false when
/// either cannot be resolved.
pub(crate) fn lies_inside(file: &Path, directory: &Path) -> bool {
    match (std::fs::canonicalize(file), std::fs::canonicalize(directory)) {
        (Ok(file), Ok(directory)) => file.starts_with(directory),
        _ => false,
    }
}

/// Refuses a resolved path under a pseudo file system's mount point.
fn check_not_pseudo(resolved: &Path) -> Result<(), FileReadError> {
    if PSEUDO_FILE_ROOTS.iter().any(|root| resolved.starts_with(root)) {
        return Err(FileReadError::PseudoFile(resolved.to_path_buf()));
    }
    Ok(())
}

fn check_regular(metadata: &std::fs::Metadata, bytes_max: u64, limit: &'static str) -> Result<(), FileReadError> {
    let file_type = metadata.file_type();
    let kind = if file_type.is_file() {
        None
    } else if file_type.is_fifo() {
        Some("FIFO")
    } else if file_type.is_dir() {
        Some("directory")
    } else if file_type.is_char_device() {
        Some("character device")
    } else if file_type.is_block_device() {
        Some("block device")
    } else if file_type.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    };
    if let Some(kind) = kind {
        return Err(FileReadError::NotRegular(kind));
    }
    if metadata.len() > bytes_max {
        return Err(FileReadError::TooLarge { limit, bytes_max, bytes: metadata.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-policy-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regular_files_within_the_cap_are_read_others_are_refused() {
        let dir = temp_dir("caps");
        let file = dir.join("p.toml");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular_file(&file, 10, "k").unwrap(), b"0123456789");
        let error = read_regular_file(&file, 9, "policies.definition_bytes_max").unwrap_err();
        assert!(matches!(error, FileReadError::TooLarge { bytes: 10, bytes_max: 9, .. }), "{error}");
        assert!(error.to_string().contains("policies.definition_bytes_max"), "{error}");

        std::os::unix::fs::symlink(&file, dir.join("link.toml")).unwrap();
        assert_eq!(read_regular_file(&dir.join("link.toml"), 10, "k").unwrap().len(), 10, "symlinks are followed");
        let error = read_regular_file(&dir, 10, "k").unwrap_err();
        assert!(matches!(error, FileReadError::NotRegular("directory")), "{error}");
        let error = read_regular_file(Path::new("/dev/zero"), 10, "k").unwrap_err();
        assert!(matches!(error, FileReadError::NotRegular("character device")), "{error}");
        assert!(matches!(read_regular_file(&dir.join("missing"), 10, "k"), Err(FileReadError::Io(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kernel_pseudo_files_are_refused_unread_under_any_name() {
        let dir = temp_dir("procfs");
        std::os::unix::fs::symlink("/proc/self/environ", dir.join("env.toml")).unwrap();
        for path in [dir.join("env.toml").as_path(), Path::new("/proc/self/mem"), Path::new("/proc/self/status")] {
            let error = read_regular_file(path, 1 << 20, "k").unwrap_err();
            assert!(matches!(error, FileReadError::PseudoFile(_)), "{}: {error}", path.display());
            assert!(error.to_string().starts_with("is a kernel pseudo-file (/proc/"), "{error}");
        }
        if Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            let error =
                read_regular_file(Path::new("/sys/kernel/mm/transparent_hugepage/enabled"), 1 << 20, "k").unwrap_err();
            assert!(matches!(error, FileReadError::PseudoFile(_)), "{error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_regular_file_is_read() {
        let dir = temp_dir("empty");
        std::fs::write(dir.join("empty.toml"), b"").unwrap();
        assert_eq!(read_regular_file(&dir.join("empty.toml"), 10, "k").unwrap(), b"");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = temp_dir("fifo");
        let fifo = dir.join("x.wasm");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        // Without the checks this open would block forever: no writer comes.
        let error = read_regular_file(&fifo, 10, "k").unwrap_err();
        assert!(matches!(error, FileReadError::NotRegular("FIFO")), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
