//! DuckDB's spill directories: private to the query engine, emptied at
//! start-up, never granted to SQL (DuckDB writes its spill files itself).

use std::path::Path;

/// Empties `dir`: spill files of an earlier process are of no use, and a
/// crash leaves them behind.
pub(super) fn empty(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, dir = %dir.display(), "emptying the query spill directory failed");
    }
}

/// Creates `dir` for a database about to spill into it. A failure shows up
/// later as DuckDB's own error when (and only if) a query needs to spill.
pub(super) fn prepare(dir: &Path) {
    let _ = std::fs::create_dir_all(dir);
}
