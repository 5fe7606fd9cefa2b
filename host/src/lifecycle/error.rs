//! What can go wrong while the lifecycle changes where data lives.
//!
//! A failed step's error becomes its run entry's `error` text (and so its
//! audit event's), a compaction checkpoint's `last_error`, or a log line:
//! the `Display` of each variant is that text, word for word. Catalog and
//! storage errors show through unchanged; the variants around them name the
//! step that failed.

use std::sync::Arc;

use crate::catalog::CatalogError;
use crate::error::{Coded, ErrorCode, Failure};
use crate::parquet_file::ParquetFileError;
use crate::storage::{ObjectKey, StorageError};

/// Why a move, archive, restore, delete, sweep or compaction chunk failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The catalog refused a read or a commit.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A whole batch of moves could not be committed (shared by each move of
    /// the batch).
    #[error("committing the moves: {0}")]
    CommitMoves(Arc<CatalogError>),
    /// A storage target refused a read, a listing or a delete.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The blocking work of a step panicked or was cancelled.
    #[error("worker: {0}")]
    Task(String),
    /// The partitions could not be sealed before the run's steps.
    #[error("sealing: {0}")]
    Seal(Failure),
    /// The flush before the steps left rows of the partition in the buffers.
    #[error("{rows} rows still buffered; retried on the next run")]
    StillBuffered {
        /// Rows still buffered.
        rows: u64,
    },
    /// The catalog names a target the server does not have.
    #[error("file {file_id} is on unknown target {target}")]
    UnknownTarget {
        /// The file's catalog id.
        file_id: i64,
        /// The target the catalog names.
        target: String,
    },
    /// A file about to be copied or archived does not verify where it is.
    #[error("source {key} on {target}: {source}")]
    SourceUnverified {
        /// The file.
        key: ObjectKey,
        /// Its target.
        target: String,
        /// What the verification found.
        source: ParquetFileError,
    },
    /// A file could not be re-encoded for the tier it moves to.
    #[error("re-encoding {key} for {tier}: {source}")]
    Reencode {
        /// The file.
        key: ObjectKey,
        /// The tier it moves to.
        tier: &'static str,
        /// The encoder's error.
        source: ParquetFileError,
    },
    /// The destination refused the copy.
    #[error("copying {key} to {target}: {source}")]
    Copy {
        /// The copy's key.
        key: ObjectKey,
        /// The destination.
        target: String,
        /// The target's error.
        source: StorageError,
    },
    /// The copy did not read back as written.
    #[error("copy of {key} on {target} does not verify: {source}")]
    CopyUnverified {
        /// The copy's key.
        key: ObjectKey,
        /// The destination.
        target: String,
        /// The failed read or verification.
        source: Box<LifecycleError>,
    },
    /// An archive decision reached execution without its options.
    #[error("an archive decision without options")]
    MissingArchiveOptions,
    /// An archive decision names a target the server does not have.
    #[error("unknown archive target {target:?}; the storage targets are {targets:?}")]
    UnknownArchiveTarget {
        /// The decision's target.
        target: String,
        /// Every configured target.
        targets: Vec<String>,
    },
    /// The partition has no live file.
    #[error("the partition has no files to archive")]
    NothingToArchive,
    /// The archive could not be encoded.
    #[error("re-encoding: {0}")]
    ArchiveEncode(ParquetFileError),
    /// The archive does not hold the rows of the files it replaces.
    #[error("re-encoded {encoded} rows, the files hold {expected}")]
    ArchiveRows {
        /// Rows encoded.
        encoded: i64,
        /// Rows of the source files.
        expected: i64,
    },
    /// The archive target refused the archive or its manifest.
    #[error("writing {key}: {source}")]
    Write {
        /// The object.
        key: ObjectKey,
        /// The target's error.
        source: StorageError,
    },
    /// The archive did not read back as written.
    #[error("archive {key} on {target} does not verify: {source}")]
    ArchiveUnverified {
        /// The archive's key.
        key: ObjectKey,
        /// The archive target.
        target: String,
        /// What the verification found.
        source: ParquetFileError,
    },
    /// The manifest did not read back as written.
    #[error("manifest {key} on {target} does not read back")]
    ManifestUnverified {
        /// The manifest's key.
        key: ObjectKey,
        /// The archive target.
        target: String,
    },
    /// A tombstoned file could not be deleted.
    #[error("{key} on {target}: {source}")]
    Sweep {
        /// The file.
        key: ObjectKey,
        /// Its target.
        target: String,
        /// The target's error.
        source: StorageError,
    },
    /// A compaction input does not verify.
    #[error("input {key} on {target}: {source}")]
    InputUnverified {
        /// The input.
        key: ObjectKey,
        /// Its target.
        target: String,
        /// What the verification found.
        source: ParquetFileError,
    },
    /// A compaction chunk could not be encoded.
    #[error("merging: {0}")]
    Merge(ParquetFileError),
    /// The merged file does not hold what its inputs held.
    #[error(
        "merged {rows} rows over [{min_time_ns}, {max_time_ns}], the inputs hold {input_rows} over [{input_min_time_ns}, {input_max_time_ns}]"
    )]
    MergeMismatch {
        /// Rows merged.
        rows: i64,
        /// Earliest time merged, ns.
        min_time_ns: i64,
        /// Latest time merged, ns.
        max_time_ns: i64,
        /// Rows of the inputs.
        input_rows: i64,
        /// Earliest time of the inputs, ns.
        input_min_time_ns: i64,
        /// Latest time of the inputs, ns.
        input_max_time_ns: i64,
    },
    /// The merged file read back shorter or longer than written.
    #[error("{key} holds {stored} bytes, {written} were written")]
    MergedSize {
        /// The merged file.
        key: ObjectKey,
        /// Bytes read back.
        stored: usize,
        /// Bytes written.
        written: usize,
    },
    /// The merged file did not verify as read back.
    #[error("{key} on {target} does not verify: {source}")]
    MergedUnverified {
        /// The merged file.
        key: ObjectKey,
        /// Its target.
        target: String,
        /// What the verification found.
        source: ParquetFileError,
    },
    /// A compaction chunk failed (the checkpoint records this text).
    #[error("chunk {index}: {source}")]
    Chunk {
        /// The chunk's index in the plan.
        index: usize,
        /// What failed.
        source: Box<LifecycleError>,
    },
    /// A restore's move failed.
    #[error("restore of {partition} failed: {source}")]
    Restore {
        /// The partition's public id.
        partition: String,
        /// What failed.
        source: Box<LifecycleError>,
    },
}

impl Coded for LifecycleError {
    fn code(&self) -> ErrorCode {
        match self {
            // A failed restore is the server's failure, whatever the cause.
            LifecycleError::Restore { .. } => ErrorCode::Internal,
            LifecycleError::Catalog(error) => error.code(),
            LifecycleError::Storage(error) => error.code(),
            LifecycleError::Seal(failure) => failure.code,
            _ => ErrorCode::Internal,
        }
    }

    fn message(&self) -> String {
        match self {
            LifecycleError::Catalog(error) => error.message(),
            LifecycleError::Storage(error) => error.message(),
            _ => self.to_string(),
        }
    }
}
