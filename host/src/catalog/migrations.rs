//! The catalog's schema, as the migrations that build it.
//!
//! Each migration runs once, in its own transaction with the
//! `user_version` pragma bump, so a crash leaves the schema at a whole
//! version. Migrations are only ever appended: a catalog written by an
//! older release opens by running the ones it lacks.

use rusqlite::Connection;

use super::Result;

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
    // Dataset administration: the settings an operator set through the API
    // (they win over `[datasets.X]` and the defaults), and each change of
    // period as a partition spec effective from a bucket boundary (the
    // dataset row's `period` is spec 0, effective from the beginning); a
    // deleted dataset keeps its row (and name) until its files are swept,
    // then its name becomes `name~id` so the name can be used again.
    r#"
CREATE TABLE dataset_settings (
    dataset_id INTEGER PRIMARY KEY REFERENCES datasets(id),
    settings_json TEXT NOT NULL,
    updated_at_ns INTEGER NOT NULL
);
CREATE TABLE partition_specs (
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    version INTEGER NOT NULL,
    period TEXT NOT NULL,
    effective_from_ns INTEGER NOT NULL,
    created_at_ns INTEGER NOT NULL,
    PRIMARY KEY (dataset_id, version)
);
ALTER TABLE datasets ADD COLUMN deleted_at_ns INTEGER;
"#,
    // Idempotency keys are forgotten after `ingest.idempotency_retention_hours`.
    r#"
CREATE INDEX idempotency_keys_by_age ON idempotency_keys(created_at_ns);
"#,
    // A request can create thousands of partitions in one statement: the
    // statements that create partitions move `partitions_seq` once per
    // transaction themselves, rather than a trigger once per row.
    r#"
DROP TRIGGER partitions_inserted_seq;
"#,
];

/// Brings the schema of `connection` up to the last migration.
pub(super) fn migrate(connection: &mut Connection) -> Result<()> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = connection.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
