//! The SQLite catalog: the single commit point of Strata.
//!
//! **Invariant:** a file is visible to queries if and only if this catalog
//! lists it as `live`. Nothing answers a query by listing directories.
//! Only this module touches rusqlite. All calls block; callers run them off
//! the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::period::{Bucket, Period};
use crate::schema::DatasetSchema;

/// A catalog failure.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be decoded.
    #[error("corrupt catalog value: {0}")]
    Corrupt(String),
    /// A commit found the catalog changed under it; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The blocking task running a catalog call panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

impl crate::error::Coded for CatalogError {
    fn code(&self) -> crate::error::ErrorCode {
        crate::error::ErrorCode::Internal
    }

    fn message(&self) -> String {
        format!("catalog: {self}")
    }
}

type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// Schema migrations, applied in order; the index + 1 is the version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE datasets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    period TEXT NOT NULL,
    time_column TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL
);
CREATE TABLE dataset_schemas (
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    version INTEGER NOT NULL,
    schema_json TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    PRIMARY KEY (dataset_id, version)
);
CREATE TABLE partitions (
    id INTEGER PRIMARY KEY,
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    period_label TEXT NOT NULL,
    period_start_ns INTEGER NOT NULL,
    period_end_ns INTEGER NOT NULL,
    key TEXT NOT NULL,
    tier TEXT NOT NULL DEFAULT 'hot',
    read_only INTEGER NOT NULL DEFAULT 0,
    row_count INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    min_time_ns INTEGER,
    max_time_ns INTEGER,
    created_at_ns INTEGER NOT NULL,
    last_written_at_ns INTEGER NOT NULL,
    flushed_wal_seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (dataset_id, period_label, key)
);
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    partition_id INTEGER NOT NULL REFERENCES partitions(id),
    storage_target TEXT NOT NULL,
    object_key TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    min_time_ns INTEGER NOT NULL,
    max_time_ns INTEGER NOT NULL,
    checksum_crc32c INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('live', 'tombstoned')),
    created_at_ns INTEGER NOT NULL,
    tombstoned_at_ns INTEGER,
    UNIQUE (storage_target, object_key)
);
CREATE INDEX files_by_partition ON files(partition_id, state);
CREATE TABLE idempotency_keys (
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    key TEXT NOT NULL,
    request_sha256 BLOB NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    PRIMARY KEY (dataset_id, key)
);
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY,
    at_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    dataset TEXT,
    partition TEXT,
    detail_json TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit_events(at_ns);
"#,
    r#"
CREATE TABLE policy_versions (
    policy TEXT NOT NULL,
    seq INTEGER NOT NULL,
    component_sha256 TEXT NOT NULL,
    definition_sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    definition_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'superseded', 'failed')),
    last_error TEXT,
    loaded_at_ns INTEGER NOT NULL,
    activated_at_ns INTEGER,
    PRIMARY KEY (policy, seq),
    UNIQUE (policy, component_sha256, definition_sha256)
);
"#,
    r#"
ALTER TABLE partitions ADD COLUMN deleted_at_ns INTEGER;
CREATE TABLE lifecycle_runs (
    id INTEGER PRIMARY KEY,
    policy TEXT NOT NULL,
    dataset TEXT NOT NULL,
    started_at_ns INTEGER NOT NULL,
    report_json TEXT NOT NULL
);
CREATE INDEX audit_by_dataset ON audit_events(dataset, at_ns);
CREATE INDEX files_tombstoned ON files(state, tombstoned_at_ns);
"#,
    r#"
CREATE TABLE archives (
    id INTEGER PRIMARY KEY,
    partition_id INTEGER NOT NULL REFERENCES partitions(id),
    storage_target TEXT NOT NULL,
    object_key TEXT NOT NULL,
    manifest_key TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    checksum_crc32c INTEGER NOT NULL,
    created_at_ns INTEGER NOT NULL,
    UNIQUE (storage_target, object_key)
);
CREATE INDEX archives_by_partition ON archives(partition_id);
"#,
    r#"
CREATE TABLE compaction_checkpoints (
    partition_id INTEGER PRIMARY KEY REFERENCES partitions(id),
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    plan_json TEXT NOT NULL,
    cursor INTEGER NOT NULL DEFAULT 0,
    completed_chunks INTEGER NOT NULL DEFAULT 0,
    skipped_chunks INTEGER NOT NULL DEFAULT 0,
    total_chunks INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    files_merged INTEGER NOT NULL DEFAULT 0,
    bytes_read INTEGER NOT NULL DEFAULT 0,
    bytes_written INTEGER NOT NULL DEFAULT 0,
    started_at_ns INTEGER NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    finished_at_ns INTEGER
);
CREATE INDEX compaction_by_status ON compaction_checkpoints(status, finished_at_ns);
"#,
    // Which field, if any, keys a partition's rows verbatim (query pruning by
    // key). Partitions from before are of unknown keying: never pruned.
    r#"
ALTER TABLE partitions ADD COLUMN key_field TEXT;
UPDATE partitions SET key_field = '';
"#,
    // A dataset's partitions in period order without a sort (every
    // lifecycle run reads them all).
    r#"
CREATE INDEX partitions_by_period ON partitions(dataset_id, period_start_ns, key);
"#,
    // Each partition's live file count and whether it has an archive, kept
    // by triggers on every path that changes them, so reading a dataset's
    // partitions needs no subquery per row.
    r#"
ALTER TABLE partitions ADD COLUMN live_files INTEGER NOT NULL DEFAULT 0;
ALTER TABLE partitions ADD COLUMN has_archive INTEGER NOT NULL DEFAULT 0;
UPDATE partitions SET
    live_files = (SELECT COUNT(*) FROM files f WHERE f.partition_id = partitions.id AND f.state = 'live'),
    has_archive = EXISTS (SELECT 1 FROM archives a WHERE a.partition_id = partitions.id);
CREATE TRIGGER files_live_inserted AFTER INSERT ON files WHEN NEW.state = 'live' BEGIN
    UPDATE partitions SET live_files = live_files + 1 WHERE id = NEW.partition_id;
END;
CREATE TRIGGER files_live_deleted AFTER DELETE ON files WHEN OLD.state = 'live' BEGIN
    UPDATE partitions SET live_files = live_files - 1 WHERE id = OLD.partition_id;
END;
CREATE TRIGGER files_state_changed AFTER UPDATE OF state, partition_id ON files
WHEN (OLD.state = 'live') != (NEW.state = 'live') OR OLD.partition_id != NEW.partition_id BEGIN
    UPDATE partitions SET live_files = live_files - 1 WHERE id = OLD.partition_id AND OLD.state = 'live';
    UPDATE partitions SET live_files = live_files + 1 WHERE id = NEW.partition_id AND NEW.state = 'live';
END;
CREATE TRIGGER archives_inserted AFTER INSERT ON archives BEGIN
    UPDATE partitions SET has_archive = 1 WHERE id = NEW.partition_id;
END;
CREATE TRIGGER archives_deleted AFTER DELETE ON archives BEGIN
    UPDATE partitions SET has_archive = EXISTS (SELECT 1 FROM archives a WHERE a.partition_id = OLD.partition_id)
    WHERE id = OLD.partition_id;
END;
"#,
    // How many columns each file holds (the time column included). Columns
    // are only ever added, so a file with as many as the dataset's schema
    // has all of them. Files from before: unknown (NULL).
    r#"
ALTER TABLE files ADD COLUMN column_count INTEGER;
ALTER TABLE archives ADD COLUMN column_count INTEGER;
"#,
    // A number per dataset that changes with every change to any of its
    // partition rows (file and archive changes reach them through the
    // triggers above), so a reader can tell that a copy it keeps is current.
    r#"
ALTER TABLE datasets ADD COLUMN partitions_seq INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER partitions_inserted_seq AFTER INSERT ON partitions BEGIN
    UPDATE datasets SET partitions_seq = partitions_seq + 1 WHERE id = NEW.dataset_id;
END;
CREATE TRIGGER partitions_updated_seq AFTER UPDATE ON partitions BEGIN
    UPDATE datasets SET partitions_seq = partitions_seq + 1 WHERE id IN (OLD.dataset_id, NEW.dataset_id);
END;
CREATE TRIGGER partitions_deleted_seq AFTER DELETE ON partitions BEGIN
    UPDATE datasets SET partitions_seq = partitions_seq + 1 WHERE id = OLD.dataset_id;
END;
"#,
    // Access tokens, stored only as their SHA-512 (the token module hashes them), and
    // who did what: the token name on audit events of admin requests.
    r#"
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL UNIQUE,
    scopes_json TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    expires_at_ns INTEGER,
    revoked_at_ns INTEGER,
    last_used_at_ns INTEGER
);
ALTER TABLE audit_events ADD COLUMN actor TEXT;
"#,
];

/// A dataset row.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetRecord {
    /// Catalog id.
    pub id: i64,
    /// The validated name.
    pub name: String,
    /// Partition period.
    pub period: Period,
    /// The time column.
    pub time_column: String,
    /// Creation time, ns.
    pub created_at_ns: i64,
}

/// A partition row.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionRecord {
    /// Catalog id (internal).
    #[serde(skip)]
    pub id: i64,
    /// Owning dataset id.
    #[serde(skip)]
    pub dataset_id: i64,
    /// Period label.
    pub period_label: String,
    /// Inclusive start, ns.
    pub period_start_ns: i64,
    /// Exclusive end, ns.
    pub period_end_ns: i64,
    /// Partition key ("" for none).
    pub key: String,
    /// hot | warm | cold | archived.
    pub tier: String,
    /// Sealed partitions accept no writes.
    pub read_only: bool,
    /// Rows in committed files.
    pub rows: i64,
    /// Bytes of committed files.
    pub bytes: i64,
    /// Earliest committed row time, ns.
    pub min_time_ns: Option<i64>,
    /// Latest committed row time, ns.
    pub max_time_ns: Option<i64>,
    /// Creation time, ns.
    pub created_at_ns: i64,
    /// Last flush into this partition, ns.
    pub last_written_at_ns: i64,
    /// Highest WAL sequence whose rows for this partition are in committed files.
    #[serde(skip)]
    pub flushed_wal_seq: u64,
    /// Live files.
    pub file_count: i64,
    /// A verified archive copy exists.
    pub archived: bool,
    /// How the partition's rows were keyed: `None` before its first write,
    /// `Some(field)` when every row's key is the value of `field` verbatim
    /// (the built-in `partition-by-field` on one field), `Some("")` for
    /// anything else — another partitioner, none, or a mix. Only a
    /// partition with a field can be pruned by a filter on that field.
    #[serde(skip)]
    pub key_field: Option<String>,
}

/// A file row.
#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    /// Catalog id.
    pub id: i64,
    /// Owning partition.
    #[serde(skip)]
    pub partition_id: i64,
    /// Storage target name.
    pub storage_target: String,
    /// Object key within the target.
    pub object_key: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Rows.
    pub rows: i64,
    /// Earliest row time, ns.
    pub min_time_ns: i64,
    /// Latest row time, ns.
    pub max_time_ns: i64,
    /// CRC32C of the whole file.
    pub checksum_crc32c: u32,
    /// Columns in the file, the time column included (unknown for files
    /// from before the catalog counted them).
    pub column_count: Option<i64>,
}

/// A file about to be committed by a flush.
#[derive(Debug, Clone)]
pub struct NewFile {
    /// Storage target name.
    pub storage_target: String,
    /// Object key.
    pub object_key: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Rows.
    pub rows: i64,
    /// Earliest row time, ns.
    pub min_time_ns: i64,
    /// Latest row time, ns.
    pub max_time_ns: i64,
    /// CRC32C of the whole file.
    pub checksum_crc32c: u32,
    /// Columns in the file, the time column included.
    pub column_count: i64,
}

impl NewFile {
    /// The catalog row of `encoded`, stored under `object_key` on `storage_target`.
    pub fn encoded(storage_target: &str, object_key: String, encoded: &crate::parquet_file::EncodedFile) -> NewFile {
        NewFile {
            storage_target: storage_target.to_string(),
            object_key,
            bytes: encoded.bytes.len() as i64,
            rows: encoded.rows,
            min_time_ns: encoded.min_time_ns,
            max_time_ns: encoded.max_time_ns,
            checksum_crc32c: encoded.checksum_crc32c,
            column_count: encoded.columns as i64,
        }
    }
}

/// A stored idempotency record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// SHA-256 of what identifies the request (body and parameters).
    pub request_sha256: [u8; 32],
    /// HTTP status of the first response.
    pub status: u16,
    /// Body of the first response.
    pub response: String,
}

/// The state of one policy version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyVersionStatus {
    /// The version evaluations use (at most one per policy).
    Active,
    /// Was active once, replaced by another; a rollback target.
    Superseded,
    /// Failed to load (compile, type-check, validate-config or smoke test).
    Failed,
}

impl PolicyVersionStatus {
    fn as_str(self) -> &'static str {
        match self {
            PolicyVersionStatus::Active => "active",
            PolicyVersionStatus::Superseded => "superseded",
            PolicyVersionStatus::Failed => "failed",
        }
    }

    fn parse(raw: &str) -> Option<PolicyVersionStatus> {
        match raw {
            "active" => Some(PolicyVersionStatus::Active),
            "superseded" => Some(PolicyVersionStatus::Superseded),
            "failed" => Some(PolicyVersionStatus::Failed),
            _ => None,
        }
    }
}

/// A policy version row: one distinct (component, definition) pair of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVersionRecord {
    /// Policy name.
    pub policy: String,
    /// Per-policy sequence number, from 1.
    pub seq: i64,
    /// sha256 of the component bytes, hex.
    pub component_sha256: String,
    /// Digest of the definition (kind, datasets, schedule, limits, config).
    pub definition_sha256: String,
    /// Where the component came from (`builtin:NAME`, a path, `upload`).
    pub source: String,
    /// The policy definition as JSON.
    #[serde(skip)]
    pub definition_json: String,
    /// Active, superseded or failed.
    pub status: PolicyVersionStatus,
    /// Why the last load of this version failed.
    pub last_error: Option<String>,
    /// Last load attempt, ns.
    pub loaded_at_ns: i64,
    /// Last activation, ns.
    pub activated_at_ns: Option<i64>,
}

/// A load attempt to record.
#[derive(Debug, Clone)]
pub struct PolicyVersionAttempt<'a> {
    /// Policy name.
    pub policy: &'a str,
    /// sha256 of the component bytes.
    pub component_sha256: &'a str,
    /// Digest of the definition.
    pub definition_sha256: &'a str,
    /// Where the component came from.
    pub source: &'a str,
    /// The definition as JSON.
    pub definition_json: &'a str,
    /// `None` when it loaded and becomes active; the error otherwise.
    pub error: Option<&'a str>,
}

const POLICY_VERSION_COLUMNS: &str = "policy, seq, component_sha256, definition_sha256, source, definition_json, status, \
     last_error, loaded_at_ns, activated_at_ns";

fn policy_version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyVersionRecord> {
    let status: String = row.get(6)?;
    Ok(PolicyVersionRecord {
        policy: row.get(0)?,
        seq: row.get(1)?,
        component_sha256: row.get(2)?,
        definition_sha256: row.get(3)?,
        source: row.get(4)?,
        definition_json: row.get(5)?,
        status: PolicyVersionStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                6,
                rusqlite::types::Type::Text,
                format!("status {status:?}").into(),
            )
        })?,
        last_error: row.get(7)?,
        loaded_at_ns: row.get(8)?,
        activated_at_ns: row.get(9)?,
    })
}

/// The catalog.
#[derive(Debug)]
pub struct Catalog {
    connection: Mutex<Connection>,
}

const PARTITION_COLUMNS: &str = "p.id, p.dataset_id, p.period_label, p.period_start_ns, p.period_end_ns, p.key, p.tier, p.read_only, \
     p.row_count, p.bytes, p.min_time_ns, p.max_time_ns, p.created_at_ns, p.last_written_at_ns, p.flushed_wal_seq, \
     p.live_files, p.has_archive, p.key_field";

fn partition_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PartitionRecord> {
    Ok(PartitionRecord {
        id: row.get(0)?,
        dataset_id: row.get(1)?,
        period_label: row.get(2)?,
        period_start_ns: row.get(3)?,
        period_end_ns: row.get(4)?,
        key: row.get(5)?,
        tier: row.get(6)?,
        read_only: row.get(7)?,
        rows: row.get(8)?,
        bytes: row.get(9)?,
        min_time_ns: row.get(10)?,
        max_time_ns: row.get(11)?,
        created_at_ns: row.get(12)?,
        last_written_at_ns: row.get(13)?,
        flushed_wal_seq: row.get::<_, i64>(14)? as u64,
        file_count: row.get(15)?,
        archived: row.get(16)?,
        key_field: row.get(17)?,
    })
}

/// Adds `file` as a live file of the partition; returns its id.
fn insert_live_file(tx: &Connection, partition_id: i64, file: &NewFile, now_ns: i64) -> Result<i64> {
    tx.execute(
        "INSERT INTO files (partition_id, storage_target, object_key, bytes, row_count, min_time_ns, max_time_ns, checksum_crc32c, state, created_at_ns, column_count) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'live', ?9, ?10)",
        params![partition_id, file.storage_target, file.object_key, file.bytes, file.rows, file.min_time_ns, file.max_time_ns, i64::from(file.checksum_crc32c), now_ns, file.column_count],
    )?;
    Ok(tx.last_insert_rowid())
}

fn file_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        id: row.get(0)?,
        partition_id: row.get(1)?,
        storage_target: row.get(2)?,
        object_key: row.get(3)?,
        bytes: row.get(4)?,
        rows: row.get(5)?,
        min_time_ns: row.get(6)?,
        max_time_ns: row.get(7)?,
        checksum_crc32c: row.get::<_, i64>(8)? as u32,
        column_count: row.get(9)?,
    })
}

/// A stored run report with its catalog id filled in.
fn with_id(id: i64, text: &str) -> serde_json::Value {
    let mut value: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("id".into(), id.into());
    }
    value
}

/// Which audit events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// Only this dataset.
    pub dataset: Option<&'a str>,
    /// Only this partition (its public id).
    pub partition: Option<&'a str>,
    /// Only this kind.
    pub kind: Option<&'a str>,
    /// Only events at or after this time, ns.
    pub since_ns: i64,
    /// At most this many.
    pub limit: usize,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

/// Partitions and bytes per tier, and the oldest hot period's end.
#[derive(Debug, Clone, Default)]
pub struct TierCounts {
    /// `(tier, partitions, bytes)`.
    pub tiers: Vec<(String, i64, i64)>,
    /// The end of the oldest hot partition's period, ns.
    pub oldest_hot_period_end_ns: Option<i64>,
}

/// What one storage target holds according to the catalog.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetUsage {
    /// Target name.
    pub target: String,
    /// Live files.
    pub files: i64,
    /// Bytes of live files.
    pub bytes: i64,
    /// Tombstoned files not yet swept.
    pub tombstoned_files: i64,
    /// Bytes of those.
    pub tombstoned_bytes: i64,
    /// Archives (an archive that replaced its partition's files is also a
    /// live file).
    pub archives: i64,
    /// Bytes of those.
    pub archive_bytes: i64,
}

/// A file's verified copy on the destination of a move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedFile {
    /// The id of the file that was copied.
    pub id: i64,
    /// The copy's key on the destination target.
    pub object_key: String,
    /// The copy's size.
    pub bytes: i64,
    /// The copy's CRC32C.
    pub checksum_crc32c: u32,
}

/// One partition's verified move, for [`Catalog::commit_moves`].
#[derive(Debug, Clone)]
pub struct MoveCommit {
    /// The partition.
    pub partition_id: i64,
    /// Its copied files.
    pub copies: Vec<MovedFile>,
    /// The storage target holding the copies.
    pub target: String,
    /// The partition's new tier.
    pub tier: String,
}

/// A verified archive about to be committed.
#[derive(Debug, Clone)]
pub struct NewArchive {
    /// The re-encoded Parquet file.
    pub file: NewFile,
    /// Its manifest (checksums, rows, sources), on the same target.
    pub manifest_key: String,
}

/// Where a partition's compaction job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactionStatus {
    /// Planned, or interrupted (a crash or a shutdown); the next pass resumes it.
    Pending,
    /// A chunk is being merged now.
    Running,
    /// Every chunk was merged or skipped.
    Completed,
    /// The last attempt failed; retried until `max_attempts`.
    Failed,
}

impl CompactionStatus {
    /// The catalog's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CompactionStatus::Pending => "pending",
            CompactionStatus::Running => "running",
            CompactionStatus::Completed => "completed",
            CompactionStatus::Failed => "failed",
        }
    }

    fn parse(raw: &str) -> Option<CompactionStatus> {
        match raw {
            "pending" => Some(CompactionStatus::Pending),
            "running" => Some(CompactionStatus::Running),
            "completed" => Some(CompactionStatus::Completed),
            "failed" => Some(CompactionStatus::Failed),
            _ => None,
        }
    }
}

/// The checkpoint of one partition's compaction job: one row per partition,
/// replaced when a new job starts after a completed one.
#[derive(Debug, Clone, Serialize)]
pub struct CompactionCheckpoint {
    /// The partition (internal id).
    #[serde(skip)]
    pub partition_id: i64,
    /// The partition's period label.
    #[serde(skip)]
    pub period_label: String,
    /// The partition's key.
    #[serde(skip)]
    pub key: String,
    /// Pending, running, completed or failed.
    pub status: CompactionStatus,
    /// The chunks: the file ids each one merges into one file.
    #[serde(skip)]
    pub plan: Vec<Vec<i64>>,
    /// Index of the next chunk to process.
    pub cursor: i64,
    /// Chunks merged and committed.
    pub completed_chunks: i64,
    /// Chunks passed over because an input was no longer live (a move or a
    /// delete came first).
    pub skipped_chunks: i64,
    /// Chunks in the plan.
    pub total_chunks: i64,
    /// Runs that started or resumed the job.
    pub attempts: i64,
    /// Why the last attempt failed; cleared when the job completes.
    pub last_error: Option<String>,
    /// Input files merged so far.
    pub files_merged: i64,
    /// Bytes of those inputs.
    pub bytes_read: i64,
    /// Bytes of the files written.
    pub bytes_written: i64,
    /// When the job was planned, ns.
    pub started_at_ns: i64,
    /// Last change, ns.
    pub updated_at_ns: i64,
    /// When the job completed, ns.
    pub finished_at_ns: Option<i64>,
}

const CHECKPOINT_COLUMNS: &str = "c.partition_id, p.period_label, p.key, c.status, c.plan_json, c.cursor, c.completed_chunks, \
     c.skipped_chunks, c.total_chunks, c.attempts, c.last_error, c.files_merged, c.bytes_read, c.bytes_written, \
     c.started_at_ns, c.updated_at_ns, c.finished_at_ns";

fn checkpoint_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CompactionCheckpoint> {
    let corrupt = |index: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, what.into())
    };
    let status: String = row.get(3)?;
    let plan: String = row.get(4)?;
    Ok(CompactionCheckpoint {
        partition_id: row.get(0)?,
        period_label: row.get(1)?,
        key: row.get(2)?,
        status: CompactionStatus::parse(&status).ok_or_else(|| corrupt(3, format!("status {status:?}")))?,
        plan: serde_json::from_str(&plan).map_err(|e| corrupt(4, format!("plan: {e}")))?,
        cursor: row.get(5)?,
        completed_chunks: row.get(6)?,
        skipped_chunks: row.get(7)?,
        total_chunks: row.get(8)?,
        attempts: row.get(9)?,
        last_error: row.get(10)?,
        files_merged: row.get(11)?,
        bytes_read: row.get(12)?,
        bytes_written: row.get(13)?,
        started_at_ns: row.get(14)?,
        updated_at_ns: row.get(15)?,
        finished_at_ns: row.get(16)?,
    })
}

/// One merged chunk to commit.
#[derive(Debug, Clone)]
pub struct CompactedChunk<'a> {
    /// The chunk's index in the plan; the checkpoint's cursor must be here.
    pub chunk_index: i64,
    /// The target the inputs are on and the output was written to.
    pub storage_target: &'a str,
    /// The input files, all of which must still be live.
    pub inputs: &'a [i64],
    /// The verified output file.
    pub file: &'a NewFile,
}

/// A lifecycle run to record.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Policy name.
    pub policy: String,
    /// Dataset name.
    pub dataset: String,
    /// Start, ns.
    pub started_at_ns: i64,
    /// The whole report.
    pub report: serde_json::Value,
}

impl Catalog {
    /// Opens (creating and migrating) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Catalog> {
        let connection = Connection::open(path)?;
        // WAL journal with synchronous=FULL: a committed transaction survives
        // power loss, which the "acknowledged means durable" guarantee needs.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let catalog = Catalog { connection: Mutex::new(connection) };
        catalog.migrate()?;
        Ok(catalog)
    }

    /// Runs `work` with the catalog on tokio's blocking pool: the one way
    /// async code calls the catalog, whose calls block on SQLite.
    pub async fn call<T, E>(
        self: &Arc<Self>,
        work: impl FnOnce(&Catalog) -> std::result::Result<T, E> + Send + 'static,
    ) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<CatalogError> + Send + 'static,
    {
        let catalog = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&catalog))
            .await
            .map_err(|e| E::from(CatalogError::Task(e.to_string())))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut connection = self.lock();
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = connection.transaction()?;
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Every dataset, by name.
    pub fn datasets(&self) -> Result<Vec<DatasetRecord>> {
        let connection = self.lock();
        let mut statement =
            connection.prepare("SELECT id, name, period, time_column, created_at_ns FROM datasets ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, period, time_column, created_at_ns) = row?;
            let period = Period::parse(&period).ok_or_else(|| CatalogError::Corrupt(format!("period {period:?}")))?;
            out.push(DatasetRecord { id, name, period, time_column, created_at_ns });
        }
        Ok(out)
    }

    /// Creates a dataset with an empty schema, or returns the existing one.
    pub fn create_dataset(&self, name: &str, period: Period, time_column: &str, now_ns: i64) -> Result<DatasetRecord> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO datasets (name, period, time_column, created_at_ns) VALUES (?1, ?2, ?3, ?4)",
            params![name, period.as_str(), time_column, now_ns],
        )?;
        let (id, period, time_column, created_at_ns): (i64, String, String, i64) = tx.query_row(
            "SELECT id, period, time_column, created_at_ns FROM datasets WHERE name = ?1",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )?;
        let schema = DatasetSchema::empty(&time_column);
        tx.execute(
            "INSERT OR IGNORE INTO dataset_schemas (dataset_id, version, schema_json, created_at_ns) VALUES (?1, 0, ?2, ?3)",
            params![id, serde_json::to_string(&schema).expect("schemas serialize"), now_ns],
        )?;
        tx.commit()?;
        let period = Period::parse(&period).ok_or_else(|| CatalogError::Corrupt(format!("period {period:?}")))?;
        Ok(DatasetRecord { id, name: name.to_string(), period, time_column, created_at_ns })
    }

    /// The latest schema of a dataset.
    pub fn schema(&self, dataset_id: i64) -> Result<DatasetSchema> {
        let connection = self.lock();
        let json: String = connection.query_row(
            "SELECT schema_json FROM dataset_schemas WHERE dataset_id = ?1 ORDER BY version DESC LIMIT 1",
            [dataset_id],
            |row| row.get(0),
        )?;
        serde_json::from_str(&json).map_err(|e| CatalogError::Corrupt(format!("schema: {e}")))
    }

    /// Records a new schema version.
    pub fn save_schema(&self, dataset_id: i64, schema: &DatasetSchema, now_ns: i64) -> Result<()> {
        self.lock().execute(
            "INSERT INTO dataset_schemas (dataset_id, version, schema_json, created_at_ns) VALUES (?1, ?2, ?3, ?4)",
            params![dataset_id, schema.version, serde_json::to_string(schema).expect("schemas serialize"), now_ns],
        )?;
        Ok(())
    }

    /// The partition for `(bucket, key)`, created if missing.
    pub fn partition(&self, dataset_id: i64, bucket: &Bucket, key: &str, now_ns: i64) -> Result<PartitionRecord> {
        let connection = self.lock();
        connection.execute(
            "INSERT OR IGNORE INTO partitions (dataset_id, period_label, period_start_ns, period_end_ns, key, created_at_ns, last_written_at_ns) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![dataset_id, bucket.label, bucket.start_ns, bucket.end_ns, key, now_ns],
        )?;
        Ok(connection.query_row(
            &format!("SELECT {PARTITION_COLUMNS} FROM partitions p WHERE p.dataset_id = ?1 AND p.period_label = ?2 AND p.key = ?3"),
            params![dataset_id, bucket.label, key],
            partition_from_row,
        )?)
    }

    /// Records that rows keyed by `key_field` (a field name, or "" for any
    /// other keying) are about to be written into a partition, and returns
    /// the partition's keying afterwards: the first write sets it, a write
    /// keyed another way turns it into "" for good. One statement, so two
    /// writers keyed differently cannot both win.
    pub fn note_key_field(&self, partition_id: i64, key_field: &str) -> Result<String> {
        Ok(self.lock().query_row(
            "UPDATE partitions SET key_field = CASE WHEN key_field IS NULL OR key_field = ?2 THEN ?2 ELSE '' END \
             WHERE id = ?1 RETURNING key_field",
            params![partition_id, key_field],
            |row| row.get(0),
        )?)
    }

    /// The keys of a dataset's partitions in one period.
    pub fn period_keys(&self, dataset_id: i64, label: &str) -> Result<Vec<String>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT key FROM partitions WHERE dataset_id = ?1 AND period_label = ?2 AND deleted_at_ns IS NULL ORDER BY key",
        )?;
        let rows = statement.query_map(params![dataset_id, label], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every partition of a dataset, oldest period first.
    pub fn partitions(&self, dataset_id: i64) -> Result<Vec<PartitionRecord>> {
        Self::partitions_in(&self.lock(), dataset_id)
    }

    fn partitions_in(connection: &Connection, dataset_id: i64) -> Result<Vec<PartitionRecord>> {
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {PARTITION_COLUMNS} FROM partitions p WHERE p.dataset_id = ?1 AND p.deleted_at_ns IS NULL \
             ORDER BY p.period_start_ns, p.key"
        ))?;
        let rows = statement.query_map([dataset_id], partition_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The dataset's partition sequence: it changes whenever any of the
    /// dataset's partition rows changes, and only then (triggers keep it).
    pub fn partitions_seq(&self, dataset_id: i64) -> Result<i64> {
        Ok(self
            .lock()
            .query_row("SELECT partitions_seq FROM datasets WHERE id = ?1", [dataset_id], |row| row.get(0))?)
    }

    /// [`Catalog::partitions`] together with the [`Catalog::partitions_seq`]
    /// they are current for, read under one lock.
    pub fn partitions_at_seq(&self, dataset_id: i64) -> Result<(i64, Vec<PartitionRecord>)> {
        let connection = self.lock();
        let seq = connection
            .query_row("SELECT partitions_seq FROM datasets WHERE id = ?1", [dataset_id], |row| row.get(0))?;
        Ok((seq, Self::partitions_in(&connection, dataset_id)?))
    }

    /// Every partition of every dataset.
    pub fn all_partitions(&self) -> Result<Vec<PartitionRecord>> {
        let connection = self.lock();
        let mut statement =
            connection.prepare(&format!("SELECT {PARTITION_COLUMNS} FROM partitions p ORDER BY p.id"))?;
        let rows = statement.query_map([], partition_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Live files of a partition.
    pub fn files(&self, partition_id: i64) -> Result<Vec<FileRecord>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT id, partition_id, storage_target, object_key, bytes, row_count, min_time_ns, max_time_ns, checksum_crc32c, column_count \
             FROM files WHERE partition_id = ?1 AND state = 'live' ORDER BY id",
        )?;
        let rows = statement.query_map([partition_id], file_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every object key the catalog references (live or tombstoned) in a target.
    pub fn referenced_keys(&self, storage_target: &str) -> Result<std::collections::HashSet<String>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT object_key FROM files WHERE storage_target = ?1 \
             UNION SELECT object_key FROM archives WHERE storage_target = ?1 \
             UNION SELECT manifest_key FROM archives WHERE storage_target = ?1",
        )?;
        let rows = statement.query_map([storage_target], |row| row.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Commits a flushed file: one transaction adds the file, updates the
    /// partition's statistics and records the WAL sequence it covers.
    pub fn commit_flush(&self, partition_id: i64, file: &NewFile, flushed_wal_seq: u64, now_ns: i64) -> Result<i64> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let file_id = insert_live_file(&tx, partition_id, file, now_ns)?;
        tx.execute(
            "UPDATE partitions SET row_count = row_count + ?2, bytes = bytes + ?3, \
               min_time_ns = MIN(COALESCE(min_time_ns, ?4), ?4), max_time_ns = MAX(COALESCE(max_time_ns, ?5), ?5), \
               last_written_at_ns = ?6, flushed_wal_seq = MAX(flushed_wal_seq, ?7) WHERE id = ?1",
            params![
                partition_id,
                file.rows,
                file.bytes,
                file.min_time_ns,
                file.max_time_ns,
                now_ns,
                flushed_wal_seq as i64
            ],
        )?;
        tx.commit()?;
        Ok(file_id)
    }

    /// A stored idempotency record.
    pub fn idempotency(&self, dataset_id: i64, key: &str) -> Result<Option<IdempotencyRecord>> {
        let connection = self.lock();
        let row = connection
            .query_row(
                "SELECT request_sha256, status, response FROM idempotency_keys WHERE dataset_id = ?1 AND key = ?2",
                params![dataset_id, key],
                |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, u16>(1)?, row.get::<_, String>(2)?)),
            )
            .optional()?;
        row.map(|(hash, status, response)| {
            let request_sha256 =
                hash.try_into().map_err(|_| CatalogError::Corrupt("idempotency hash length".into()))?;
            Ok(IdempotencyRecord { request_sha256, status, response })
        })
        .transpose()
    }

    /// Stores idempotency records (existing keys are kept).
    pub fn save_idempotency(&self, records: &[(i64, String, IdempotencyRecord)], now_ns: i64) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        {
            let mut statement = tx.prepare(
                "INSERT OR IGNORE INTO idempotency_keys (dataset_id, key, request_sha256, status, response, created_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (dataset_id, key, record) in records {
                statement.execute(params![
                    dataset_id,
                    key,
                    &record.request_sha256[..],
                    record.status,
                    record.response,
                    now_ns
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a policy load attempt and returns the version's sequence
    /// number. The same (component, definition) pair keeps its number. A
    /// success makes it the policy's only active version (the previous one
    /// becomes superseded); a failure marks it failed with the error and
    /// leaves the active version alone.
    pub fn record_policy_version(&self, attempt: &PolicyVersionAttempt<'_>, now_ns: i64) -> Result<i64> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT seq FROM policy_versions WHERE policy = ?1 AND component_sha256 = ?2 AND definition_sha256 = ?3",
                params![attempt.policy, attempt.component_sha256, attempt.definition_sha256],
                |row| row.get(0),
            )
            .optional()?;
        let seq = match existing {
            Some(seq) => seq,
            None => tx.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM policy_versions WHERE policy = ?1",
                [attempt.policy],
                |row| row.get(0),
            )?,
        };
        let (status, activated_at_ns) = match attempt.error {
            None => {
                tx.execute(
                    "UPDATE policy_versions SET status = 'superseded' WHERE policy = ?1 AND status = 'active' AND seq != ?2",
                    params![attempt.policy, seq],
                )?;
                (PolicyVersionStatus::Active, Some(now_ns))
            }
            Some(_) => (PolicyVersionStatus::Failed, None),
        };
        tx.execute(
            "INSERT INTO policy_versions (policy, seq, component_sha256, definition_sha256, source, definition_json, status, last_error, loaded_at_ns, activated_at_ns) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (policy, seq) DO UPDATE SET source = ?5, definition_json = ?6, status = ?7, last_error = ?8, \
               loaded_at_ns = ?9, activated_at_ns = COALESCE(?10, activated_at_ns)",
            params![
                attempt.policy,
                seq,
                attempt.component_sha256,
                attempt.definition_sha256,
                attempt.source,
                attempt.definition_json,
                status.as_str(),
                attempt.error,
                now_ns,
                activated_at_ns
            ],
        )?;
        tx.commit()?;
        Ok(seq)
    }

    /// Makes version `seq` of `policy` the active one (a rollback); the
    /// current active version becomes superseded.
    pub fn activate_policy_version(&self, policy: &str, seq: i64, now_ns: i64) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "UPDATE policy_versions SET status = 'superseded' WHERE policy = ?1 AND status = 'active' AND seq != ?2",
            params![policy, seq],
        )?;
        tx.execute(
            "UPDATE policy_versions SET status = 'active', last_error = NULL, activated_at_ns = ?3 WHERE policy = ?1 AND seq = ?2",
            params![policy, seq, now_ns],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks the active version of a policy superseded (its file was removed).
    pub fn deactivate_policy(&self, policy: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE policy_versions SET status = 'superseded' WHERE policy = ?1 AND status = 'active'",
            [policy],
        )?;
        Ok(())
    }

    /// Every version of a policy, newest first.
    pub fn policy_versions(&self, policy: &str) -> Result<Vec<PolicyVersionRecord>> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!(
            "SELECT {POLICY_VERSION_COLUMNS} FROM policy_versions WHERE policy = ?1 ORDER BY seq DESC"
        ))?;
        let rows = statement.query_map([policy], policy_version_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Swaps the listed live files of a partition to their copies on
    /// `target` and tombstones their old rows, and sets the partition's
    /// tier, in one transaction. The partition becomes read-only. A copy
    /// keeps its file's rows and time range; its key, size and checksum are
    /// the copy's own (a re-encoded copy differs from its source). A file
    /// that changed meanwhile (compaction merged it) is a conflict and
    /// nothing is written.
    pub fn commit_move(
        &self,
        partition_id: i64,
        copies: &[MovedFile],
        target: &str,
        tier: &str,
        now_ns: i64,
    ) -> Result<()> {
        let commit =
            MoveCommit { partition_id, copies: copies.to_vec(), target: target.to_string(), tier: tier.to_string() };
        self.commit_moves(std::slice::from_ref(&commit), now_ns)?.remove(0)
    }

    /// Commits many verified moves in one transaction (one fsync). Each
    /// partition's part sits in a savepoint: a conflict rolls back that
    /// partition alone, reported in its slot of the answer; the others
    /// commit. An SQLite error fails the whole batch and writes nothing.
    pub fn commit_moves(&self, moves: &[MoveCommit], now_ns: i64) -> Result<Vec<Result<()>>> {
        let mut connection = self.lock();
        let mut tx = connection.transaction()?;
        let mut outcomes = Vec::with_capacity(moves.len());
        for commit in moves {
            let savepoint = tx.savepoint()?;
            match Self::move_in(&savepoint, commit, now_ns) {
                Ok(()) => {
                    savepoint.commit()?;
                    outcomes.push(Ok(()));
                }
                Err(CatalogError::Conflict(message)) => {
                    savepoint.finish()?; // rolls back this partition's part
                    outcomes.push(Err(CatalogError::Conflict(message)));
                }
                Err(error) => return Err(error),
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    fn move_in(tx: &rusqlite::Connection, commit: &MoveCommit, now_ns: i64) -> Result<()> {
        let partition_id = commit.partition_id;
        for copy in &commit.copies {
            let file_id = copy.id;
            let inserted = tx.execute(
                "INSERT INTO files (partition_id, storage_target, object_key, bytes, row_count, min_time_ns, max_time_ns, checksum_crc32c, state, created_at_ns, column_count) \
                 SELECT partition_id, ?2, ?5, ?6, row_count, min_time_ns, max_time_ns, ?7, 'live', ?3, column_count \
                 FROM files WHERE id = ?1 AND partition_id = ?4 AND state = 'live'",
                params![file_id, commit.target, now_ns, partition_id, copy.object_key, copy.bytes, i64::from(copy.checksum_crc32c)],
            )?;
            if inserted != 1 {
                return Err(CatalogError::Conflict(format!("file {file_id} changed during the move")));
            }
            tx.execute(
                "UPDATE partitions SET bytes = bytes + ?3 - (SELECT bytes FROM files WHERE id = ?2) WHERE id = ?1",
                params![partition_id, file_id, copy.bytes],
            )?;
            let tombstoned = tx.execute(
                "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = ?2 WHERE id = ?1 AND state = 'live'",
                params![file_id, now_ns],
            )?;
            if tombstoned != 1 {
                return Err(CatalogError::Conflict(format!("file {file_id} changed during the move")));
            }
        }
        tx.execute("UPDATE partitions SET tier = ?2, read_only = 1 WHERE id = ?1", params![partition_id, commit.tier])?;
        Ok(())
    }

    /// Marks partitions read-only (sealed: they take no more rows) or
    /// writable again, with one audit event each, in one transaction.
    /// `partitions` holds each partition's id and label.
    pub fn set_read_only(
        &self,
        dataset: &str,
        partitions: &[(i64, String)],
        read_only: bool,
        now_ns: i64,
    ) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        {
            let mut update = tx.prepare_cached("UPDATE partitions SET read_only = ?2 WHERE id = ?1")?;
            let mut audit = tx.prepare_cached(
                "INSERT INTO audit_events (at_ns, kind, dataset, partition, detail_json) VALUES (?1, 'partition_read_only', ?2, ?3, ?4)",
            )?;
            let detail = serde_json::json!({ "read_only": read_only }).to_string();
            for (id, label) in partitions {
                update.execute(params![id, read_only])?;
                audit.execute(params![now_ns, dataset, label, detail])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a verified archive of a partition. With `replace_source` the
    /// archive becomes the partition's only live file (tier `archived`) and
    /// the other files are tombstoned, in the same transaction.
    pub fn commit_archive(
        &self,
        partition_id: i64,
        archive: &NewArchive,
        replace_source: bool,
        now_ns: i64,
    ) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "INSERT INTO archives (partition_id, storage_target, object_key, manifest_key, bytes, row_count, checksum_crc32c, created_at_ns, column_count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                partition_id,
                archive.file.storage_target,
                archive.file.object_key,
                archive.manifest_key,
                archive.file.bytes,
                archive.file.rows,
                i64::from(archive.file.checksum_crc32c),
                now_ns,
                archive.file.column_count
            ],
        )?;
        if replace_source {
            let live_rows: i64 = tx.query_row(
                "SELECT COALESCE(SUM(row_count), 0) FROM files WHERE partition_id = ?1 AND state = 'live'",
                [partition_id],
                |row| row.get(0),
            )?;
            if live_rows != archive.file.rows {
                return Err(CatalogError::Conflict(format!(
                    "the partition holds {live_rows} rows, the archive {}",
                    archive.file.rows
                )));
            }
            tx.execute(
                "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = ?2 WHERE partition_id = ?1 AND state = 'live'",
                params![partition_id, now_ns],
            )?;
            insert_live_file(&tx, partition_id, &archive.file, now_ns)?;
            // The archive is now the partition's only live file.
            tx.execute(
                "UPDATE partitions SET tier = 'archived', read_only = 1, bytes = ?2 WHERE id = ?1",
                params![partition_id, archive.file.bytes],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a partition: its files are tombstoned (invisible at once) and
    /// the partition is hidden and refuses writes. One transaction.
    pub fn delete_partition(&self, partition_id: i64, now_ns: i64) -> Result<()> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = ?2 WHERE partition_id = ?1 AND state = 'live'",
            params![partition_id, now_ns],
        )?;
        tx.execute(
            "UPDATE partitions SET read_only = 1, deleted_at_ns = ?2 WHERE id = ?1 AND deleted_at_ns IS NULL",
            params![partition_id, now_ns],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Files tombstoned before `before_ns`, and live files of deleted
    /// partitions (rows that were still buffered when the partition went).
    pub fn expired_tombstones(&self, before_ns: i64) -> Result<Vec<FileRecord>> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = \
               (SELECT deleted_at_ns FROM partitions p WHERE p.id = files.partition_id) \
             WHERE state = 'live' AND partition_id IN (SELECT id FROM partitions WHERE deleted_at_ns IS NOT NULL)",
            [],
        )?;
        // A tombstoned row whose object is an archive copy (a restored
        // partition's former location) is forgotten; the archive stays.
        tx.execute(
            "DELETE FROM files WHERE state = 'tombstoned' AND tombstoned_at_ns < ?1 AND EXISTS \
               (SELECT 1 FROM archives a WHERE a.storage_target = files.storage_target AND a.object_key = files.object_key)",
            [before_ns],
        )?;
        let files = {
            let mut statement = tx.prepare(
                "SELECT id, partition_id, storage_target, object_key, bytes, row_count, min_time_ns, max_time_ns, checksum_crc32c, column_count \
                 FROM files WHERE state = 'tombstoned' AND tombstoned_at_ns < ?1 ORDER BY id LIMIT 10000",
            )?;
            let rows = statement.query_map([before_ns], file_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        Ok(files)
    }

    /// Forgets a tombstoned file once it is deleted from its target.
    pub fn forget_file(&self, file_id: i64) -> Result<()> {
        self.lock().execute("DELETE FROM files WHERE id = ?1 AND state = 'tombstoned'", [file_id])?;
        Ok(())
    }

    /// Partitions and bytes per tier (deleted partitions excluded).
    pub fn tier_counts(&self) -> Result<TierCounts> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT tier, COUNT(*), COALESCE(SUM(bytes), 0) FROM partitions WHERE deleted_at_ns IS NULL GROUP BY tier ORDER BY tier",
        )?;
        let tiers = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let oldest_hot_period_end_ns = connection.query_row(
            "SELECT MIN(period_end_ns) FROM partitions WHERE deleted_at_ns IS NULL AND tier = 'hot'",
            [],
            |row| row.get(0),
        )?;
        Ok(TierCounts { tiers, oldest_hot_period_end_ns })
    }

    /// Every storage target a file row or an archive names.
    pub fn storage_targets_in_use(&self) -> Result<Vec<String>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT storage_target FROM files UNION SELECT storage_target FROM archives ORDER BY storage_target",
        )?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Files and bytes per storage target, live and tombstoned.
    pub fn target_usage(&self) -> Result<Vec<TargetUsage>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT storage_target, SUM(live), SUM(live_bytes), SUM(dead), SUM(dead_bytes), SUM(archive), SUM(archive_bytes) \
             FROM (SELECT storage_target, state = 'live' AS live, CASE WHEN state = 'live' THEN bytes ELSE 0 END AS live_bytes, \
                     state = 'tombstoned' AS dead, CASE WHEN state = 'tombstoned' THEN bytes ELSE 0 END AS dead_bytes, \
                     0 AS archive, 0 AS archive_bytes FROM files \
                   UNION ALL SELECT storage_target, 0, 0, 0, 0, 1, bytes FROM archives) \
             GROUP BY storage_target ORDER BY storage_target",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(TargetUsage {
                target: row.get(0)?,
                files: row.get(1)?,
                bytes: row.get(2)?,
                tombstoned_files: row.get(3)?,
                tombstoned_bytes: row.get(4)?,
                archives: row.get(5)?,
                archive_bytes: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records a lifecycle run and the audit events `events(run id)` makes
    /// for it, in one transaction; returns the run's id.
    pub fn record_run(
        &self,
        run: &RunRecord,
        events: impl FnOnce(i64) -> Vec<(String, serde_json::Value)>,
        now_ns: i64,
    ) -> Result<i64> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "INSERT INTO lifecycle_runs (policy, dataset, started_at_ns, report_json) VALUES (?1, ?2, ?3, ?4)",
            params![run.policy, run.dataset, run.started_at_ns, run.report.to_string()],
        )?;
        let id = tx.last_insert_rowid();
        {
            let mut insert = tx.prepare(
                "INSERT INTO audit_events (at_ns, kind, dataset, partition, detail_json) \
                 VALUES (?1, 'lifecycle_decision', ?2, ?3, ?4)",
            )?;
            for (partition, detail) in events(id) {
                insert.execute(params![now_ns, run.dataset, partition, detail.to_string()])?;
            }
        }
        // A run whose policy could not be evaluated or broke the contract
        // decided nothing; the refusal of its whole answer is audited too.
        if let Some(error) = run.report.get("error").and_then(|e| e.as_str()) {
            let detail = serde_json::json!({
                "run": id,
                "policy": run.policy,
                "component_sha256": run.report.get("component_sha256"),
                "input_sha256": run.report.get("input_sha256"),
                "now_ns": run.report.get("now_ns"),
                "error": error,
                "outcome": "refused",
            });
            tx.execute(
                "INSERT INTO audit_events (at_ns, kind, dataset, partition, detail_json) \
                 VALUES (?1, 'lifecycle_run_refused', ?2, NULL, ?3)",
                params![now_ns, run.dataset, detail.to_string()],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// The compaction checkpoint of a partition.
    pub fn compaction_checkpoint(&self, partition_id: i64) -> Result<Option<CompactionCheckpoint>> {
        let connection = self.lock();
        Ok(connection
            .query_row(
                &format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM compaction_checkpoints c JOIN partitions p ON p.id = c.partition_id \
                     WHERE c.partition_id = ?1"
                ),
                [partition_id],
                checkpoint_from_row,
            )
            .optional()?)
    }

    /// The compaction checkpoints of a dataset's partitions, oldest period first.
    pub fn compaction_checkpoints(&self, dataset_id: i64) -> Result<Vec<CompactionCheckpoint>> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM compaction_checkpoints c JOIN partitions p ON p.id = c.partition_id \
             WHERE p.dataset_id = ?1 AND p.deleted_at_ns IS NULL ORDER BY p.period_start_ns, p.key"
        ))?;
        let rows = statement.query_map([dataset_id], checkpoint_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records a new compaction job (status `pending`, cursor 0) for a
    /// partition. It replaces a completed checkpoint; an unfinished one is a
    /// conflict (resume it instead).
    pub fn plan_compaction(&self, partition_id: i64, plan: &[Vec<i64>], now_ns: i64) -> Result<()> {
        let changed = self.lock().execute(
            "INSERT INTO compaction_checkpoints (partition_id, status, plan_json, total_chunks, started_at_ns, updated_at_ns) \
             VALUES (?1, 'pending', ?2, ?3, ?4, ?4) \
             ON CONFLICT (partition_id) DO UPDATE SET status = 'pending', plan_json = ?2, cursor = 0, \
               completed_chunks = 0, skipped_chunks = 0, total_chunks = ?3, attempts = 0, last_error = NULL, \
               files_merged = 0, bytes_read = 0, bytes_written = 0, started_at_ns = ?4, updated_at_ns = ?4, \
               finished_at_ns = NULL \
             WHERE compaction_checkpoints.status = 'completed'",
            params![
                partition_id,
                serde_json::to_string(plan).expect("plans serialize"),
                plan.len() as i64,
                now_ns
            ],
        )?;
        if changed != 1 {
            return Err(CatalogError::Conflict(format!("partition {partition_id} has an unfinished compaction job")));
        }
        Ok(())
    }

    /// Starts (or resumes) an attempt at an unfinished compaction job: status
    /// `running`, one more attempt. Returns the checkpoint.
    pub fn begin_compaction_attempt(&self, partition_id: i64, now_ns: i64) -> Result<CompactionCheckpoint> {
        let changed = self.lock().execute(
            "UPDATE compaction_checkpoints SET status = 'running', attempts = attempts + 1, updated_at_ns = ?2 \
             WHERE partition_id = ?1 AND status != 'completed'",
            params![partition_id, now_ns],
        )?;
        if changed != 1 {
            return Err(CatalogError::Conflict(format!("partition {partition_id} has no unfinished compaction job")));
        }
        self.compaction_checkpoint(partition_id)?
            .ok_or_else(|| CatalogError::Conflict(format!("the compaction job of partition {partition_id} vanished")))
    }

    /// Commits one merged chunk in one transaction: the output becomes a
    /// live file, the inputs are tombstoned, the partition's bytes are
    /// adjusted and the checkpoint advances (completing the job after its
    /// last chunk). A conflict — an input no longer live on the target, the
    /// rows not adding up, the checkpoint elsewhere, the partition deleted —
    /// writes nothing. Returns the new file's id.
    pub fn commit_compaction_chunk(&self, partition_id: i64, chunk: &CompactedChunk<'_>, now_ns: i64) -> Result<i64> {
        let mut connection = self.lock();
        let tx = connection.transaction()?;
        let at: Option<(String, i64)> = tx
            .query_row(
                "SELECT status, cursor FROM compaction_checkpoints WHERE partition_id = ?1",
                [partition_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if at != Some(("running".to_string(), chunk.chunk_index)) {
            return Err(CatalogError::Conflict(format!(
                "the compaction checkpoint of partition {partition_id} is not at chunk {} ({at:?})",
                chunk.chunk_index
            )));
        }
        let deleted: Option<i64> =
            tx.query_row("SELECT deleted_at_ns FROM partitions WHERE id = ?1", [partition_id], |row| row.get(0))?;
        if deleted.is_some() {
            return Err(CatalogError::Conflict(format!("partition {partition_id} was deleted")));
        }
        let (mut input_rows, mut input_bytes) = (0i64, 0i64);
        for file_id in chunk.inputs {
            let input: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT row_count, bytes FROM files \
                     WHERE id = ?1 AND partition_id = ?2 AND storage_target = ?3 AND state = 'live'",
                    params![file_id, partition_id, chunk.storage_target],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let Some((rows, bytes)) = input else {
                return Err(CatalogError::Conflict(format!(
                    "file {file_id} is no longer live on {}",
                    chunk.storage_target
                )));
            };
            tx.execute(
                "UPDATE files SET state = 'tombstoned', tombstoned_at_ns = ?2 WHERE id = ?1",
                params![file_id, now_ns],
            )?;
            input_rows += rows;
            input_bytes += bytes;
        }
        let file = chunk.file;
        if input_rows != file.rows || file.storage_target != chunk.storage_target {
            return Err(CatalogError::Conflict(format!(
                "the inputs hold {input_rows} rows on {}, the output {} on {}",
                chunk.storage_target, file.rows, file.storage_target
            )));
        }
        let file_id = insert_live_file(&tx, partition_id, file, now_ns)?;
        tx.execute(
            "UPDATE partitions SET bytes = bytes - ?2 + ?3 WHERE id = ?1",
            params![partition_id, input_bytes, file.bytes],
        )?;
        tx.execute(
            "UPDATE compaction_checkpoints SET cursor = cursor + 1, completed_chunks = completed_chunks + 1, \
               files_merged = files_merged + ?2, bytes_read = bytes_read + ?3, bytes_written = bytes_written + ?4, \
               updated_at_ns = ?5, \
               status = CASE WHEN cursor + 1 >= total_chunks THEN 'completed' ELSE status END, \
               last_error = CASE WHEN cursor + 1 >= total_chunks THEN NULL ELSE last_error END, \
               finished_at_ns = CASE WHEN cursor + 1 >= total_chunks THEN ?5 END \
             WHERE partition_id = ?1",
            params![partition_id, chunk.inputs.len() as i64, input_bytes, file.bytes, now_ns],
        )?;
        tx.commit()?;
        Ok(file_id)
    }

    /// Passes over chunk `chunk_index` of a running job (an input is no
    /// longer live), completing the job after its last chunk.
    pub fn skip_compaction_chunk(&self, partition_id: i64, chunk_index: i64, now_ns: i64) -> Result<()> {
        let changed = self.lock().execute(
            "UPDATE compaction_checkpoints SET cursor = cursor + 1, skipped_chunks = skipped_chunks + 1, \
               updated_at_ns = ?3, \
               status = CASE WHEN cursor + 1 >= total_chunks THEN 'completed' ELSE status END, \
               last_error = CASE WHEN cursor + 1 >= total_chunks THEN NULL ELSE last_error END, \
               finished_at_ns = CASE WHEN cursor + 1 >= total_chunks THEN ?3 END \
             WHERE partition_id = ?1 AND cursor = ?2 AND status = 'running'",
            params![partition_id, chunk_index, now_ns],
        )?;
        if changed != 1 {
            return Err(CatalogError::Conflict(format!(
                "the compaction checkpoint of partition {partition_id} is not at chunk {chunk_index}"
            )));
        }
        Ok(())
    }

    /// Completes a running job whose cursor is already past its last chunk.
    pub fn finish_compaction(&self, partition_id: i64, now_ns: i64) -> Result<()> {
        self.lock().execute(
            "UPDATE compaction_checkpoints SET status = 'completed', last_error = NULL, updated_at_ns = ?2, \
               finished_at_ns = ?2 WHERE partition_id = ?1 AND status = 'running' AND cursor >= total_chunks",
            params![partition_id, now_ns],
        )?;
        Ok(())
    }

    /// Marks a running job failed with `error`; its cursor stays where the
    /// last committed chunk left it.
    pub fn fail_compaction(&self, partition_id: i64, error: &str, now_ns: i64) -> Result<()> {
        self.lock().execute(
            "UPDATE compaction_checkpoints SET status = 'failed', last_error = ?2, updated_at_ns = ?3 \
             WHERE partition_id = ?1 AND status = 'running'",
            params![partition_id, error, now_ns],
        )?;
        Ok(())
    }

    /// Sets a running job back to `pending` (a shutdown between chunks); the
    /// next pass resumes it at its cursor.
    pub fn pause_compaction(&self, partition_id: i64, now_ns: i64) -> Result<()> {
        self.lock().execute(
            "UPDATE compaction_checkpoints SET status = 'pending', updated_at_ns = ?2 \
             WHERE partition_id = ?1 AND status = 'running'",
            params![partition_id, now_ns],
        )?;
        Ok(())
    }

    /// At start-up: a job still `running` was cut short by a crash or a kill,
    /// which counts as a failed attempt (so a chunk that kills the process
    /// is not retried forever). Returns how many.
    pub fn fail_interrupted_compactions(&self, now_ns: i64) -> Result<usize> {
        Ok(self.lock().execute(
            "UPDATE compaction_checkpoints SET status = 'failed', updated_at_ns = ?1, \
               last_error = 'interrupted: the server stopped during chunk ' || cursor || ' (crash or kill)' \
             WHERE status = 'running'",
            [now_ns],
        )?)
    }

    /// Deletes completed checkpoints that finished before `before_ns`.
    pub fn prune_compaction_checkpoints(&self, before_ns: i64) -> Result<usize> {
        Ok(self.lock().execute(
            "DELETE FROM compaction_checkpoints WHERE status = 'completed' AND finished_at_ns < ?1",
            [before_ns],
        )?)
    }

    /// Compaction jobs per status.
    pub fn compaction_status_counts(&self) -> Result<Vec<(String, i64)>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT status, COUNT(*) FROM compaction_checkpoints GROUP BY status ORDER BY status")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Recent lifecycle runs, newest first, optionally of one policy or dataset.
    pub fn runs(
        &self,
        policy: Option<&str>,
        dataset: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(i64, serde_json::Value)>> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT id, report_json FROM lifecycle_runs WHERE (?1 IS NULL OR policy = ?1) AND (?2 IS NULL OR dataset = ?2) \
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = statement.query_map(params![policy, dataset, limit as i64], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?;
        rows.map(|r| {
            let (id, text) = r?;
            Ok((id, with_id(id, &text)))
        })
        .collect()
    }

    /// One lifecycle run.
    pub fn run(&self, id: i64) -> Result<Option<serde_json::Value>> {
        let connection = self.lock();
        let text: Option<String> = connection
            .query_row("SELECT report_json FROM lifecycle_runs WHERE id = ?1", [id], |row| row.get(0))
            .optional()?;
        Ok(text.map(|t| with_id(id, &t)))
    }

    /// Audit events, oldest first, filtered by dataset, kind and time.
    pub fn audit_events(&self, filter: &AuditFilter<'_>) -> Result<Vec<serde_json::Value>> {
        let connection = self.lock();
        let order = if filter.newest_first { "DESC" } else { "ASC" };
        let mut statement = connection.prepare(&format!(
            "SELECT id, at_ns, kind, dataset, partition, detail_json, actor FROM audit_events \
             WHERE (?1 IS NULL OR dataset = ?1) AND (?2 IS NULL OR kind = ?2) AND at_ns >= ?3 \
               AND (?5 IS NULL OR partition = ?5) ORDER BY id {order} LIMIT ?4"
        ))?;
        let parameters = params![filter.dataset, filter.kind, filter.since_ns, filter.limit as i64, filter.partition];
        let rows = statement.query_map(parameters, |row| {
            let detail: String = row.get(5)?;
            Ok(serde_json::json!({
                "id": row.get::<_, i64>(0)?,
                "at_ns": row.get::<_, i64>(1)?,
                "kind": row.get::<_, String>(2)?,
                "dataset": row.get::<_, Option<String>>(3)?,
                "partition": row.get::<_, Option<String>>(4)?,
                "detail": serde_json::from_str::<serde_json::Value>(&detail).unwrap_or(serde_json::Value::Null),
                "actor": row.get::<_, Option<String>>(6)?,
            }))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Appends an audit event.
    pub fn audit(
        &self,
        kind: &str,
        dataset: Option<&str>,
        partition: Option<&str>,
        detail: &serde_json::Value,
        now_ns: i64,
    ) -> Result<()> {
        self.lock().execute(
            "INSERT INTO audit_events (at_ns, kind, dataset, partition, detail_json) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now_ns, kind, dataset, partition, detail.to_string()],
        )?;
        Ok(())
    }
}

// ---- Access tokens -------------------------------------------------------
//
// The `tokens` table and the actor of audit events. Kept apart from the rest
// of the catalog: only the auth layer and `strata token` use it.

/// A token row. The hash is the SHA-512 of the token; the token itself is
/// never stored.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Row id.
    pub id: i64,
    /// Unique name, e.g. `grafana`.
    pub name: String,
    /// SHA-512 of the token, lower-case hex.
    pub hash: String,
    /// Scope strings, as validated by `token::Scopes::parse`.
    pub scopes: Vec<String>,
    /// When it was created, ns.
    pub created_at_ns: i64,
    /// When it stops working, ns; `None` for never.
    pub expires_at_ns: Option<i64>,
    /// When it was revoked, ns.
    pub revoked_at_ns: Option<i64>,
    /// When it was last used (recorded at most once a minute), ns.
    pub last_used_at_ns: Option<i64>,
}

/// A token about to be stored.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    /// Unique name.
    pub name: &'a str,
    /// SHA-512 of the token, hex.
    pub hash: &'a str,
    /// Validated scope strings.
    pub scopes: &'a [String],
    /// Expiry, ns.
    pub expires_at_ns: Option<i64>,
}

const TOKEN_COLUMNS: &str = "id, name, hash, scopes_json, created_at_ns, expires_at_ns, revoked_at_ns, last_used_at_ns";

fn token_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let scopes: String = row.get(3)?;
    Ok(TokenRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        hash: row.get(2)?,
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e)))?,
        created_at_ns: row.get(4)?,
        expires_at_ns: row.get(5)?,
        revoked_at_ns: row.get(6)?,
        last_used_at_ns: row.get(7)?,
    })
}

impl Catalog {
    /// The catalog file of a data directory.
    pub fn path_in(data_dir: &Path) -> std::path::PathBuf {
        data_dir.join("catalog.sqlite")
    }

    /// Stores a new token; a name already taken is a `Conflict`.
    pub fn create_token(&self, token: &NewToken<'_>, now_ns: i64) -> Result<TokenRecord> {
        let connection = self.lock();
        let taken: bool =
            connection
                .query_row("SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1)", [token.name], |row| row.get(0))?;
        if taken {
            return Err(CatalogError::Conflict(format!("a token named {:?} exists already", token.name)));
        }
        let scopes = serde_json::to_string(token.scopes).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        connection.execute(
            "INSERT INTO tokens (name, hash, scopes_json, created_at_ns, expires_at_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token.name, token.hash, scopes, now_ns, token.expires_at_ns],
        )?;
        let id = connection.last_insert_rowid();
        Ok(connection.query_row(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"), [id], token_from_row)?)
    }

    /// Every token, revoked and expired ones too, by name.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name"))?;
        let rows = statement.query_map([], token_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether any token row exists (revoked and expired ones count: once
    /// a catalog has had a token, it never serves without authentication).
    pub fn has_tokens(&self) -> Result<bool> {
        Ok(self.lock().query_row("SELECT EXISTS (SELECT 1 FROM tokens)", [], |row| row.get(0))?)
    }

    /// Revokes a token by name; returns it (with its first revocation time
    /// when it was revoked before), or `None` when no token has that name.
    pub fn revoke_token(&self, name: &str, now_ns: i64) -> Result<Option<TokenRecord>> {
        let connection = self.lock();
        connection.execute(
            "UPDATE tokens SET revoked_at_ns = ?2 WHERE name = ?1 AND revoked_at_ns IS NULL",
            params![name, now_ns],
        )?;
        Ok(connection
            .query_row(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE name = ?1"), [name], token_from_row)
            .optional()?)
    }

    /// Records that a token was used.
    pub fn touch_token(&self, id: i64, now_ns: i64) -> Result<()> {
        self.lock().execute("UPDATE tokens SET last_used_at_ns = ?2 WHERE id = ?1", params![id, now_ns])?;
        Ok(())
    }

    /// Appends the audit event of an admin request, naming who made it.
    pub fn audit_request(
        &self,
        actor: &str,
        dataset: Option<&str>,
        detail: &serde_json::Value,
        now_ns: i64,
    ) -> Result<()> {
        self.lock().execute(
            "INSERT INTO audit_events (at_ns, kind, dataset, partition, detail_json, actor) \
             VALUES (?1, 'admin_request', ?2, NULL, ?3, ?4)",
            params![now_ns, dataset, detail.to_string(), actor],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small live file on the hot target, named `key`.
    fn file(key: &str) -> NewFile {
        NewFile {
            storage_target: "hot".into(),
            object_key: format!("data/1/1/{key}.parquet"),
            bytes: 10,
            rows: 2,
            min_time_ns: 1,
            max_time_ns: 2,
            checksum_crc32c: 3,
            column_count: 3,
        }
    }

    fn catalog() -> (Catalog, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("strata-catalog-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        (Catalog::open(&dir.join("catalog.sqlite")).unwrap(), dir)
    }

    #[test]
    fn flush_commit_updates_partition_statistics() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        assert_eq!(
            catalog.create_dataset("cpu", Period::Hour, "ts", 2).unwrap().id,
            dataset.id,
            "creation is idempotent"
        );
        let bucket = Period::Day.bucket(0);
        let partition = catalog.partition(dataset.id, &bucket, "", 5).unwrap();
        assert_eq!(partition.tier, "hot");
        let file = NewFile {
            storage_target: "hot".into(),
            object_key: "data/1/1/a.parquet".into(),
            bytes: 100,
            rows: 10,
            min_time_ns: 3,
            max_time_ns: 9,
            checksum_crc32c: 7,
            column_count: 3,
        };
        catalog.commit_flush(partition.id, &file, 42, 6).unwrap();
        let file = NewFile { object_key: "data/1/1/b.parquet".into(), min_time_ns: 1, max_time_ns: 4, ..file };
        catalog.commit_flush(partition.id, &file, 40, 7).unwrap();
        let partition = catalog.partition(dataset.id, &bucket, "", 8).unwrap();
        assert_eq!((partition.rows, partition.bytes, partition.file_count), (20, 200, 2));
        assert_eq!((partition.min_time_ns, partition.max_time_ns), (Some(1), Some(9)));
        assert_eq!(partition.flushed_wal_seq, 42, "the covered WAL sequence never goes back");
        assert_eq!(catalog.referenced_keys("hot").unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_compaction_chunk_commits_whole_or_not_at_all_and_moves_the_checkpoint() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let bucket = Period::Day.bucket(0);
        let partition = catalog.partition(dataset.id, &bucket, "", 1).unwrap();
        let ids: Vec<i64> = (0..4)
            .map(|i| {
                let file = NewFile {
                    storage_target: "hot".into(),
                    object_key: format!("data/1/1/{i}.parquet"),
                    bytes: 10,
                    rows: 2,
                    min_time_ns: i,
                    max_time_ns: i + 1,
                    checksum_crc32c: 0,
                    column_count: 3,
                };
                catalog.commit_flush(partition.id, &file, 1, 2).unwrap()
            })
            .collect();
        let plan = vec![vec![ids[0], ids[1]], vec![ids[2], ids[3]]];
        catalog.plan_compaction(partition.id, &plan, 3).unwrap();
        assert!(
            matches!(catalog.plan_compaction(partition.id, &plan, 3), Err(CatalogError::Conflict(_))),
            "one unfinished job per partition"
        );
        let running = catalog.begin_compaction_attempt(partition.id, 4).unwrap();
        assert_eq!((running.status, running.attempts, running.plan.clone()), (CompactionStatus::Running, 1, plan));
        let merged = NewFile {
            storage_target: "hot".into(),
            object_key: "data/1/1/merged.parquet".into(),
            bytes: 15,
            rows: 4,
            min_time_ns: 0,
            max_time_ns: 2,
            checksum_crc32c: 0,
            column_count: 3,
        };
        let chunk = |index: i64, inputs: &'static [usize]| {
            let inputs: Vec<i64> = inputs.iter().map(|i| ids[*i]).collect();
            (index, inputs)
        };
        let commit = |(index, inputs): (i64, Vec<i64>), file: &NewFile| {
            catalog.commit_compaction_chunk(
                partition.id,
                &CompactedChunk { chunk_index: index, storage_target: "hot", inputs: &inputs, file },
                5,
            )
        };
        // The checkpoint is at chunk 0, not 1; rows must add up; the target must match.
        assert!(matches!(commit(chunk(1, &[0, 1]), &merged), Err(CatalogError::Conflict(_))));
        assert!(matches!(
            commit(chunk(0, &[0, 1]), &NewFile { rows: 5, ..merged.clone() }),
            Err(CatalogError::Conflict(_))
        ));
        let elsewhere = NewFile { storage_target: "warm".into(), ..merged.clone() };
        assert!(matches!(commit(chunk(0, &[0, 1]), &elsewhere), Err(CatalogError::Conflict(_))));
        assert_eq!(catalog.files(partition.id).unwrap().len(), 4, "a refused commit writes nothing");
        commit(chunk(0, &[0, 1]), &merged).unwrap();
        let after = catalog.partition(dataset.id, &bucket, "", 6).unwrap();
        assert_eq!((after.file_count, after.rows, after.bytes), (3, 8, 40 - 20 + 15));
        let checkpoint = catalog.compaction_checkpoint(partition.id).unwrap().unwrap();
        assert_eq!((checkpoint.cursor, checkpoint.completed_chunks, checkpoint.files_merged), (1, 1, 2));
        assert_eq!((checkpoint.bytes_read, checkpoint.bytes_written), (20, 15));

        // A move got to file 2 first: the chunk cannot commit, and is skipped.
        let third = catalog.files(partition.id).unwrap().into_iter().find(|f| f.id == ids[2]).unwrap();
        let moved = MovedFile {
            id: third.id,
            object_key: third.object_key,
            bytes: third.bytes,
            checksum_crc32c: third.checksum_crc32c,
        };
        catalog.commit_move(partition.id, &[moved], "warm", "hot", 7).unwrap();
        let second = NewFile { object_key: "data/1/1/merged-2.parquet".into(), ..merged.clone() };
        assert!(matches!(commit(chunk(1, &[2, 3]), &second), Err(CatalogError::Conflict(_))));
        assert_eq!(catalog.files(partition.id).unwrap().len(), 3);
        catalog.skip_compaction_chunk(partition.id, 1, 8).unwrap();
        let done = catalog.compaction_checkpoint(partition.id).unwrap().unwrap();
        assert_eq!((done.status, done.skipped_chunks, done.finished_at_ns), (CompactionStatus::Completed, 1, Some(8)));

        // A completed job may be replaced; a crash mid-attempt counts as a failure.
        catalog.plan_compaction(partition.id, &[vec![ids[3], 99]], 9).unwrap();
        catalog.begin_compaction_attempt(partition.id, 10).unwrap();
        assert_eq!(catalog.fail_interrupted_compactions(11).unwrap(), 1);
        let interrupted = catalog.compaction_checkpoint(partition.id).unwrap().unwrap();
        assert_eq!(interrupted.status, CompactionStatus::Failed);
        assert!(interrupted.last_error.unwrap().contains("chunk 0"));
        assert_eq!(catalog.begin_compaction_attempt(partition.id, 12).unwrap().attempts, 2);
        catalog.skip_compaction_chunk(partition.id, 0, 13).unwrap();
        assert_eq!(catalog.prune_compaction_checkpoints(13).unwrap(), 0, "kept for the retention period");
        assert_eq!(catalog.prune_compaction_checkpoints(14).unwrap(), 1);
        assert!(catalog.compaction_checkpoint(partition.id).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_batch_of_moves_commits_together_and_a_conflict_fails_only_its_partition() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let mut partitions = Vec::new();
        for day in 0..3i64 {
            let bucket = Period::Day.bucket(day * 86_400_000_000_000);
            let partition = catalog.partition(dataset.id, &bucket, "", 1).unwrap();
            let file = NewFile { bytes: 100, rows: 10, min_time_ns: day, max_time_ns: day, ..file(&format!("{day}")) };
            catalog.commit_flush(partition.id, &file, 1, 2).unwrap();
            partitions.push((bucket, partition.id, catalog.files(partition.id).unwrap().remove(0)));
        }
        let commits: Vec<MoveCommit> = partitions
            .iter()
            .map(|(_, id, file)| MoveCommit {
                partition_id: *id,
                copies: vec![MovedFile {
                    // The middle partition's file id is stale: someone else changed it.
                    id: if *id == partitions[1].1 { file.id + 1000 } else { file.id },
                    object_key: file.object_key.clone(),
                    bytes: 90,
                    checksum_crc32c: 8,
                }],
                target: "warm".into(),
                tier: "warm".into(),
            })
            .collect();
        catalog
            .set_read_only("cpu", &[(partitions[0].1, "p0".into()), (partitions[1].1, "p1".into())], true, 3)
            .unwrap();
        let outcomes = catalog.commit_moves(&commits, 4).unwrap();
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(matches!(outcomes[1], Err(CatalogError::Conflict(_))), "{outcomes:?}");
        let tiers: Vec<(String, bool, i64, String)> = partitions
            .iter()
            .map(|(bucket, id, _)| {
                let p = catalog.partition(dataset.id, bucket, "", 5).unwrap();
                let files = catalog.files(*id).unwrap();
                assert_eq!(files.len(), 1);
                (p.tier, p.read_only, p.bytes, files[0].storage_target.clone())
            })
            .collect();
        assert_eq!(
            tiers,
            [
                ("warm".to_string(), true, 90, "warm".to_string()),
                ("hot".to_string(), true, 100, "hot".to_string()),
                ("warm".to_string(), true, 90, "warm".to_string())
            ],
            "the conflicting partition is untouched (but sealed); the others moved"
        );
        let sealed = catalog
            .audit_events(&AuditFilter {
                dataset: Some("cpu"),
                partition: None,
                kind: Some("partition_read_only"),
                since_ns: 0,
                limit: 10,
                newest_first: false,
            })
            .unwrap();
        assert_eq!(sealed.len(), 2, "one audit event per sealed partition");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn live_file_counts_and_archive_flags_follow_every_change() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let bucket = Period::Day.bucket(0);
        let partition = catalog.partition(dataset.id, &bucket, "", 1).unwrap();
        let counts = || {
            let p = catalog.partition(dataset.id, &bucket, "", 1).unwrap();
            let live = catalog.files(partition.id).unwrap().len() as i64;
            assert_eq!(p.file_count, live, "the kept count equals a count of the live rows");
            (p.file_count, p.archived)
        };
        catalog.commit_flush(partition.id, &file("a"), 1, 2).unwrap();
        catalog.commit_flush(partition.id, &file("b"), 2, 2).unwrap();
        assert_eq!(counts(), (2, false));
        let first = catalog.files(partition.id).unwrap().remove(0);
        let moved = MovedFile { id: first.id, object_key: first.object_key.clone(), bytes: 10, checksum_crc32c: 3 };
        catalog.commit_move(partition.id, &[moved], "warm", "warm", 3).unwrap();
        assert_eq!(counts(), (2, false), "a move replaces files one for one");
        let archive = NewArchive {
            file: NewFile {
                storage_target: "archive".into(),
                object_key: "data/1/1/archive.parquet".into(),
                bytes: 15,
                rows: 4,
                min_time_ns: 1,
                max_time_ns: 2,
                checksum_crc32c: 4,
                column_count: 3,
            },
            manifest_key: "data/1/1/archive.json".into(),
        };
        catalog.commit_archive(partition.id, &archive, true, 4).unwrap();
        assert_eq!(counts(), (1, true), "the archive replaced the source files");
        let archived = catalog.partition(dataset.id, &bucket, "", 1).unwrap();
        assert_eq!((archived.tier.as_str(), archived.bytes), ("archived", 15), "its size is the archive's");
        for tombstone in catalog.expired_tombstones(i64::MAX).unwrap() {
            catalog.forget_file(tombstone.id).unwrap();
        }
        assert_eq!(counts(), (1, true), "sweeping tombstones leaves the live count alone");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_partition_sequence_moves_with_every_partition_change_and_nothing_else() {
        let (catalog, dir) = catalog();
        let cpu = catalog.create_dataset("cpu", Period::Day, "time", 1).unwrap();
        let mem = catalog.create_dataset("mem", Period::Day, "time", 1).unwrap();
        let bucket = Period::Day.bucket(0);
        let seq = || catalog.partitions_seq(cpu.id).unwrap();
        let mut last = seq();
        let mut changed = |what: &str, expect: bool| {
            let now = catalog.partitions_seq(cpu.id).unwrap();
            assert_eq!(now != last, expect, "{what}");
            let (at, records) = catalog.partitions_at_seq(cpu.id).unwrap();
            let ids =
                |records: Vec<PartitionRecord>| records.iter().map(|r| (r.id, r.tier.clone())).collect::<Vec<_>>();
            assert_eq!((at, ids(records)), (now, ids(catalog.partitions(cpu.id).unwrap())), "{what}: read together");
            last = now;
        };
        let partition = catalog.partition(cpu.id, &bucket, "", 1).unwrap();
        changed("a new partition", true);
        catalog.commit_flush(partition.id, &file("a"), 1, 2).unwrap();
        changed("a flush", true);
        let other = catalog.partition(mem.id, &bucket, "", 1).unwrap();
        catalog.commit_flush(other.id, &file("b"), 2, 2).unwrap();
        catalog.audit("test", Some("cpu"), None, &serde_json::json!({}), 3).unwrap();
        changed("another dataset's flush and an audit event", false);
        catalog.set_read_only("cpu", &[(partition.id, "cpu/x".into())], true, 4).unwrap();
        changed("a seal", true);
        let live = catalog.files(partition.id).unwrap().remove(0);
        let moved = MovedFile { id: live.id, object_key: "data/1/1/c.parquet".into(), bytes: 10, checksum_crc32c: 3 };
        catalog.commit_move(partition.id, &[moved], "warm", "warm", 5).unwrap();
        changed("a move", true);
        for tombstone in catalog.expired_tombstones(i64::MAX).unwrap() {
            catalog.forget_file(tombstone.id).unwrap();
        }
        changed("sweeping a tombstone (no partition row changes)", false);
        catalog.delete_partition(partition.id, 6).unwrap();
        changed("a delete", true);
        assert!(seq() > 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_partition_remembers_one_key_field_until_a_write_keys_it_another_way() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("orders", Period::Day, "time", 1).unwrap();
        let bucket = Period::Day.bucket(0);
        let partition = catalog.partition(dataset.id, &bucket, "acme", 5).unwrap();
        assert_eq!(partition.key_field, None, "nothing written yet");
        assert_eq!(catalog.note_key_field(partition.id, "tenant").unwrap(), "tenant");
        assert_eq!(catalog.note_key_field(partition.id, "tenant").unwrap(), "tenant");
        assert_eq!(catalog.note_key_field(partition.id, "region").unwrap(), "", "mixed keying");
        assert_eq!(catalog.note_key_field(partition.id, "tenant").unwrap(), "", "mixed for good");
        assert_eq!(catalog.partition(dataset.id, &bucket, "acme", 6).unwrap().key_field.as_deref(), Some(""));
        let unkeyed = catalog.partition(dataset.id, &bucket, "", 5).unwrap();
        assert_eq!(catalog.note_key_field(unkeyed.id, "").unwrap(), "");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn policy_versions_keep_one_active_and_reuse_numbers() {
        let (catalog, dir) = catalog();
        let attempt = |component: &'static str, error: Option<&'static str>| PolicyVersionAttempt {
            policy: "keep",
            component_sha256: component,
            definition_sha256: "d",
            source: "builtin:x",
            definition_json: "{}",
            error,
        };
        assert_eq!(catalog.record_policy_version(&attempt("a", None), 1).unwrap(), 1);
        assert_eq!(catalog.record_policy_version(&attempt("b", Some("boom")), 2).unwrap(), 2);
        assert_eq!(catalog.record_policy_version(&attempt("c", None), 3).unwrap(), 3);
        assert_eq!(catalog.record_policy_version(&attempt("a", None), 4).unwrap(), 1, "same content, same number");
        let versions = catalog.policy_versions("keep").unwrap();
        let statuses: Vec<(i64, PolicyVersionStatus)> = versions.iter().map(|v| (v.seq, v.status)).collect();
        assert_eq!(
            statuses,
            [(3, PolicyVersionStatus::Superseded), (2, PolicyVersionStatus::Failed), (1, PolicyVersionStatus::Active)]
        );
        assert_eq!(versions[1].last_error.as_deref(), Some("boom"));
        catalog.activate_policy_version("keep", 3, 5).unwrap();
        let active: Vec<i64> = catalog
            .policy_versions("keep")
            .unwrap()
            .iter()
            .filter(|v| v.status == PolicyVersionStatus::Active)
            .map(|v| v.seq)
            .collect();
        assert_eq!(active, [3]);
        catalog.deactivate_policy("keep").unwrap();
        assert!(catalog.policy_versions("keep").unwrap().iter().all(|v| v.status != PolicyVersionStatus::Active));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn schemas_and_idempotency_round_trip() {
        let (catalog, dir) = catalog();
        let dataset = catalog.create_dataset("ev", Period::Day, "time", 1).unwrap();
        assert_eq!(catalog.schema(dataset.id).unwrap().version, 0);
        let next = catalog
            .schema(dataset.id)
            .unwrap()
            .evolve(&[crate::schema::ColumnDef { name: "a".into(), kind: crate::schema::ColumnKind::Float }])
            .unwrap()
            .unwrap();
        catalog.save_schema(dataset.id, &next, 2).unwrap();
        assert_eq!(catalog.schema(dataset.id).unwrap(), next);
        let record = IdempotencyRecord { request_sha256: [3; 32], status: 200, response: "{}".into() };
        catalog.save_idempotency(&[(dataset.id, "k".into(), record.clone())], 3).unwrap();
        assert_eq!(catalog.idempotency(dataset.id, "k").unwrap(), Some(record));
        assert_eq!(catalog.idempotency(dataset.id, "other").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
