//! DuckDB execution, off the async runtime, with a timeout, a memory limit
//! and a cap on concurrent queries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use duckdb::Connection;
use duckdb::types::Value;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use super::native::{self, NativePlan, Outcome};
use super::output::{Encoder, OutputFormat};
use super::plan::{KeyFilter, Param, PlannedQuery, QueryRequest, plan, prunable_by_key, quote};
use super::watchdog::{self, FinishOnDrop, Watch};
use super::{DatasetFilter, sql_guard};
use crate::catalog::FileRecord;
use crate::config::QueryConfig;
use crate::error::{ErrorCode, Failure};
use crate::parquet_file::conform;
use crate::schema::{ColumnKind, DatasetSchema};
use crate::storage::{Readable, Targets};
use crate::store::{DatasetSnapshot, DatasetState, Store};
use crate::sync::Recover as _;

/// What a query looked at.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueryStats {
    /// Partitions of the dataset in the snapshot.
    pub partitions_considered: usize,
    /// Partitions skipped because they lie outside the time range.
    pub partitions_pruned: usize,
    /// Partitions skipped because their key is outside the filters (see
    /// `plan::prunable_by_key`).
    pub partitions_pruned_by_key: usize,
    /// Parquet files read.
    pub files_scanned: usize,
    /// Bytes of those files.
    pub bytes_scanned: u64,
    /// Of which: bytes of remote targets' files that the read cache held.
    pub bytes_from_cache: u64,
    /// Of which: bytes of remote targets' files fetched into the read cache
    /// for this query (by it, or by a query it waited for).
    pub bytes_from_remote: u64,
    /// Rows taken from ingest buffers.
    pub rows_from_buffers: u64,
    /// Archived partitions in range that were not read (`query.read_archived = false`).
    pub archived_skipped: Vec<String>,
    /// Rows returned.
    pub rows_returned: u64,
    /// Wall time, ms.
    pub elapsed_ms: f64,
    /// Of which: the snapshot, the database and its views, and planning,
    /// until DuckDB (or the native executor) starts executing, ms.
    pub setup_ms: f64,
    /// What computed the answer: `duckdb`, or `native` for a selective
    /// downsample the server answers itself (see `query::native`).
    pub executor: &'static str,
}

/// A running query's output: a stream of encoded chunks.
#[derive(Debug)]
pub struct QueryResult {
    /// The response content type.
    pub content_type: &'static str,
    /// Encoded chunks; the last one closes the document. An `Err` means
    /// the query failed after its answer started and the format has no
    /// way to say so in band: the response must be aborted, not ended.
    pub chunks: mpsc::Receiver<Result<Bytes, Failure>>,
}

/// The query engine.
#[derive(Debug)]
pub struct QueryEngine {
    config: QueryConfig,
    targets: Arc<Targets>,
    /// Where the databases of SQL queries spill (`query-tmp/sql`).
    sql_spill_dir: PathBuf,
    /// Where the structured-query database spills (`query-tmp/structured`).
    structured_spill_dir: PathBuf,
    permits: Arc<Semaphore>,
    /// Fresh databases for SQL queries, opened ahead of the queries that
    /// will use them (opening one costs ~10 ms) with the settings every
    /// query shares, and not yet locked down or used.
    spares: std::sync::Mutex<Vec<Connection>>,
    /// Locked-down SQL databases kept after their query, most recently
    /// used last, by the exact set of files each may open (see
    /// [`QueryEngine::connect`]).
    locked: std::sync::Mutex<Vec<LockedDatabase>>,
    /// The database structured queries share, and when it was opened.
    shared: std::sync::Mutex<Option<(Connection, Instant)>>,
    /// Connections to the shared database between queries, each keeping
    /// DuckDB's parsed statements (`prepare_cached`), tagged with when
    /// their database was opened. Only a connection that answered cleanly
    /// and holds no temporary table comes back.
    idle: std::sync::Mutex<Vec<(Instant, Connection)>>,
    /// The footers and bloom filters the native executor read.
    native: native::Caches,
}

/// Statements each pooled connection keeps parsed. A query's text names
/// its files, so a statement is reused while the files it reads stay the
/// same.
const STATEMENTS_PER_CONNECTION: usize = 16;

/// Files of one query fetched into the read cache at once.
const FILLS_PER_QUERY_MAX: usize = 4;

/// Fresh databases kept ready for SQL queries.
const SPARE_DATABASES: usize = 1;

/// Locked-down SQL databases kept for the next query over the same files.
const LOCKED_DATABASES_KEPT: usize = 4;

/// A locked-down SQL database: the files it may open (sorted, distinct),
/// a connection to it, and when it was opened.
#[derive(Debug)]
struct LockedDatabase {
    files: Vec<String>,
    connection: Connection,
    opened: Instant,
}

/// The shared database is replaced this often, and a kept locked-down SQL
/// database lives no longer, which bounds their caches of Parquet footers
/// to the files read meanwhile.
const SHARED_DATABASE_AGE_MAX: Duration = Duration::from_secs(600);

fn query_error(error: duckdb::Error) -> Failure {
    let message = error.to_string();
    if message.contains("INTERRUPT") || message.contains("Interrupted") {
        Failure::new(ErrorCode::QueryTimeout, "the query ran past query.timeout_ms and was stopped")
    } else if message.contains("Permission Error") || message.contains("disabled") || message.contains("not allowed") {
        Failure::new(ErrorCode::QueryRefused, format!("refused: {message}"))
    } else if message.contains("max_temp_directory_size") {
        Failure::new(ErrorCode::QueryTooLarge, "the query needs more than query.spill_bytes_max of spill space")
    } else if message.contains("Out of Memory") {
        Failure::new(ErrorCode::QueryTooLarge, format!("the query needs more than query.memory_bytes_max: {message}"))
    } else {
        Failure::new(ErrorCode::InvalidQuery, message)
    }
}

fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn duck_type(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Time => "TIMESTAMP_NS",
        ColumnKind::Tag | ColumnKind::Text => "VARCHAR",
        ColumnKind::Float => "DOUBLE",
        ColumnKind::Integer => "BIGINT",
        ColumnKind::Unsigned => "UBIGINT",
        ColumnKind::Boolean => "BOOLEAN",
    }
}

fn param_value(param: &Param) -> Value {
    match param {
        Param::Text(s) => Value::Text(s.clone()),
        Param::Float(f) => Value::Double(*f),
        Param::Integer(i) => Value::BigInt(*i),
        Param::Unsigned(u) => Value::UBigInt(*u),
        Param::Boolean(b) => Value::Boolean(*b),
    }
}

/// The files and buffered rows of one dataset that a query reads.
struct Source {
    name: String,
    schema: Arc<DatasetSchema>,
    files: Vec<String>,
    /// Each file's partition label and object key, for errors.
    file_names: Vec<(String, String)>,
    /// Where `files` are read: the read cache's copies stay pinned (safe
    /// from eviction) until the query's answer has been produced.
    readable: Vec<Readable>,
    buffered: Vec<RecordBatch>,
    /// Every partition read lies wholly inside the query's time range.
    within_range: bool,
    /// The catalog says every file has every column of `schema`.
    files_complete: bool,
}

impl QueryEngine {
    /// An engine reading the files of `targets` and spilling under
    /// `temp_dir`, which it empties: spill files of an earlier process are
    /// of no use, and a crash leaves them behind.
    pub fn new(config: QueryConfig, targets: Arc<Targets>, temp_dir: &Path) -> QueryEngine {
        let permits = Arc::new(Semaphore::new(config.concurrent_max));
        super::spill::empty(temp_dir);
        QueryEngine {
            config,
            targets,
            sql_spill_dir: temp_dir.join("sql"),
            structured_spill_dir: temp_dir.join("structured"),
            permits,
            spares: std::sync::Mutex::default(),
            locked: std::sync::Mutex::default(),
            shared: std::sync::Mutex::new(None),
            idle: std::sync::Mutex::default(),
            native: native::Caches::default(),
        }
    }

    /// Opens the shared database and the first spare on a thread of its own.
    pub fn warm_up(self: &Arc<Self>) {
        let engine = self.clone();
        let _ = std::thread::Builder::new().name("strata-query-warm-up".into()).spawn(move || {
            if let Err(error) = engine.shared_connection() {
                tracing::warn!(%error, "opening the structured-query database failed; the first query tries again");
            }
            engine.refill_spares();
        });
    }

    /// A fresh in-memory database with the settings all queries share.
    /// The Parquet metadata cache is safe because a file's key never names
    /// other bytes (writes are create-only; a rewrite gets a new key), and it
    /// saves reading each footer twice (binding the view, then the query).
    /// It is set globally, so every connection to the database uses it, and
    /// without revalidation: DuckDB would otherwise re-read the footer of
    /// any file modified in the last 10 s, which every fresh flush is.
    /// It spills to `spill_dir`, at most `spill_bytes_max`; DuckDB writes
    /// its spill files itself, so the directory needs no grant in
    /// `allowed_directories` (and gets none: SQL cannot read or write it).
    fn open_database(config: &QueryConfig, spill_dir: &Path) -> Result<Connection, Failure> {
        let connection = Connection::open_in_memory().map_err(query_error)?;
        super::spill::prepare(spill_dir);
        let settings = format!(
            "SET memory_limit = {memory}; SET threads = {threads}; SET temp_directory = {temp}; \
             SET max_temp_directory_size = {spill}; \
             SET autoinstall_known_extensions = false; SET autoload_known_extensions = false; \
             SET GLOBAL parquet_metadata_cache = true; SET GLOBAL enable_external_file_cache = false; \
             SET GLOBAL cache_local_files = true; SET GLOBAL validate_external_file_cache = 'NO_VALIDATION';",
            memory = sql_string(&format!("{}B", config.memory_bytes_max)),
            threads = config.threads,
            temp = sql_string(&spill_dir.display().to_string()),
            spill = sql_string(&format!("{}B", config.spill_bytes_max)),
        );
        connection.execute_batch(&settings).map_err(query_error)?;
        Ok(connection)
    }

    /// Opens databases until `SPARE_DATABASES` are ready. Blocking.
    fn refill_spares(&self) {
        while self.spares.lock_or_recover().len() < SPARE_DATABASES {
            match QueryEngine::open_database(&self.config, &self.sql_spill_dir) {
                Ok(connection) => self.spares.lock_or_recover().push(connection),
                Err(error) => {
                    tracing::warn!(%error, "opening a spare query database failed");
                    break;
                }
            }
        }
    }

    /// A connection to the database structured queries share. Their SQL is
    /// Strata's own (identifiers checked and quoted, values bound), so the
    /// database may read the storage targets' directories (and the read
    /// cache's) and nothing else, with its configuration locked. Each
    /// connection has its own temporary views and tables, and its own
    /// interrupt. Sharing keeps
    /// the Parquet footers cached between queries (a key never names other
    /// bytes: writes are create-only) and saves opening a database.
    /// Returns the connection and when its database was opened.
    fn shared_connection(&self) -> Result<(Connection, Instant), Failure> {
        let mut shared = self.shared.lock_or_recover();
        if shared.as_ref().is_none_or(|(_, opened)| opened.elapsed() > SHARED_DATABASE_AGE_MAX) {
            let connection = QueryEngine::open_database(&self.config, &self.structured_spill_dir)?;
            let cache = self.targets.cache().map(|cache| cache.dir().to_path_buf());
            let directories: Vec<String> = self
                .targets
                .all()
                .filter_map(|t| t.local_root())
                .chain(cache)
                .map(|root| sql_string(&format!("{}/", root.display())))
                .collect();
            connection
                .execute_batch(&format!(
                    "SET allowed_directories = [{}]; SET enable_external_access = false; SET lock_configuration = true;",
                    directories.join(", ")
                ))
                .map_err(query_error)?;
            *shared = Some((connection, Instant::now()));
            self.idle.lock_or_recover().clear();
        }
        let (connection, opened) = shared.as_ref().expect("opened above");
        let mut idle = self.idle.lock_or_recover();
        while let Some((tag, pooled)) = idle.pop() {
            if tag == *opened {
                return Ok((pooled, tag));
            }
        }
        let connection = connection.try_clone().map_err(query_error)?;
        connection.set_prepared_statement_cache_capacity(STATEMENTS_PER_CONNECTION);
        Ok((connection, *opened))
    }

    /// Takes back a connection to the shared database after a clean answer
    /// (no temporary table, no interrupt pending), unless its database has
    /// been replaced meanwhile or enough connections are idle.
    fn give_back(&self, opened: Instant, connection: Connection) {
        let current = self.shared.lock_or_recover().as_ref().map(|(_, at)| *at);
        let mut idle = self.idle.lock_or_recover();
        if current == Some(opened) && idle.len() < self.config.concurrent_max {
            idle.push((opened, connection));
        }
    }

    /// A connection to an in-memory database locked down for this query:
    /// it may open exactly `files` (the query's snapshot) and nothing else —
    /// no directory, not its own spill directory — load no extension and
    /// change no setting. DuckDB's grants do not tell reading from writing,
    /// so `sql_guard` keeps every statement but one query away from it. Its
    /// tables and views (the buffered rows, the dataset views) are
    /// temporary, so private to the connection and gone with it.
    ///
    /// The database is kept for the next query over exactly the same files
    /// (a dashboard refreshing between flushes): one query never gains a
    /// file another query's snapshot had and its own has not, and the
    /// footers parsed stay cached (a key never names other bytes). A
    /// spare is used for a new set of files when one is ready.
    fn connect(&self, files: &[&str]) -> Result<Connection, Failure> {
        let mut wanted: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        {
            let mut locked = self.locked.lock_or_recover();
            locked.retain(|db| db.opened.elapsed() <= SHARED_DATABASE_AGE_MAX);
            if let Some(at) = locked.iter().position(|db| db.files == wanted) {
                let db = locked.remove(at);
                let connection = db.connection.try_clone().map_err(query_error);
                locked.push(db);
                return connection;
            }
        }
        let spare = self.spares.lock_or_recover().pop();
        let connection = match spare {
            Some(connection) => connection,
            None => QueryEngine::open_database(&self.config, &self.sql_spill_dir)?,
        };
        let allowed: Vec<String> = wanted.iter().map(|f| sql_string(f)).collect();
        let settings = format!(
            "SET allowed_paths = [{allowed}]; SET enable_external_access = false; SET lock_configuration = true;",
            allowed = allowed.join(", "),
        );
        connection.execute_batch(&settings).map_err(query_error)?;
        let query_connection = connection.try_clone().map_err(query_error)?;
        let mut locked = self.locked.lock_or_recover();
        locked.push(LockedDatabase { files: wanted, connection, opened: Instant::now() });
        if locked.len() > LOCKED_DATABASES_KEPT {
            locked.remove(0);
        }
        Ok(query_connection)
    }

    /// Where DuckDB reads each of `chosen`, in order: a local target's file
    /// in place, a remote target's through the read cache (fetched now,
    /// `FILLS_PER_QUERY_MAX` at a time, if not there; a failed fetch is
    /// `storage_unavailable`, naming the target). Blocking.
    fn resolve_all(&self, chosen: &[&FileRecord], stats: &mut QueryStats) -> Result<Vec<Readable>, Failure> {
        let remote =
            chosen.iter().any(|f| self.targets.named(&f.storage_target).is_some_and(|t| t.local_root().is_none()));
        let workers = if remote { FILLS_PER_QUERY_MAX.min(chosen.len()) } else { 1 };
        let (next, failed) = (AtomicUsize::new(0), AtomicBool::new(false));
        let work = || {
            let mut done = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(file) = chosen.get(index) else { break };
                let size = u64::try_from(file.bytes).unwrap_or_default();
                let result = self.targets.readable(&file.storage_target, &file.object_key, size, file.checksum_crc32c);
                failed.fetch_or(result.is_err(), Ordering::Relaxed);
                done.push((index, result));
            }
            done
        };
        let mut done = if workers <= 1 {
            work()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers).map(|_| scope.spawn(work)).collect();
                let joined =
                    handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
                joined.flatten().collect::<Vec<_>>()
            })
        };
        done.sort_by_key(|(index, _)| *index);
        let mut readable = Vec::with_capacity(done.len());
        for (_, result) in done {
            let file = result?;
            stats.bytes_from_cache += file.bytes_from_cache();
            stats.bytes_from_remote += file.bytes_from_remote();
            readable.push(file);
        }
        Ok(readable)
    }

    fn source(
        &self,
        dataset: &DatasetState,
        snapshot: &DatasetSnapshot,
        range: Option<(i64, i64)>,
        key_filters: &[KeyFilter],
        stats: &mut QueryStats,
    ) -> Result<Source, Failure> {
        let schema = dataset.schema();
        let mut chosen = Vec::new();
        let mut file_names = Vec::new();
        let mut live = std::collections::HashSet::new();
        let mut within_range = range.is_some();
        let mut files_complete = true;
        let columns = schema.columns.len() as i64 + 1;
        stats.partitions_considered += snapshot.partitions_total;
        stats.partitions_pruned += snapshot.partitions_total.saturating_sub(snapshot.partitions.len());
        // The snapshot holds only the partitions whose periods meet `range`.
        for (partition, partition_files) in snapshot.partitions.iter().zip(&snapshot.files) {
            if prunable_by_key(partition.key_field.as_deref(), &partition.key, key_filters) {
                stats.partitions_pruned_by_key += 1;
                continue;
            }
            if !self.config.read_archived && partition.tier == crate::tier::Tier::Archived {
                stats.archived_skipped.push(crate::names::partition_label(
                    &dataset.name,
                    &partition.period_label,
                    &partition.key,
                ));
                continue;
            }
            live.insert(partition.id);
            if let Some((start, end)) = range {
                within_range &= partition.period_start_ns >= start && partition.period_end_ns <= end;
            }
            for file in partition_files {
                if let Some((start, end)) = range
                    && (file.max_time_ns < start || file.min_time_ns >= end)
                {
                    continue;
                }
                files_complete &= file.column_count == Some(columns);
                stats.files_scanned += 1;
                stats.bytes_scanned += file.bytes as u64;
                chosen.push(file);
                let label = crate::names::partition_label(&dataset.name, &partition.period_label, &partition.key);
                file_names.push((label, file.object_key.clone()));
            }
        }
        let readable = self.resolve_all(&chosen, stats)?;
        let files = readable.iter().map(|r| r.path().display().to_string()).collect();
        let buffered: Vec<RecordBatch> =
            snapshot.buffered.iter().filter(|(id, _)| live.contains(id)).map(|(_, b)| b.clone()).collect();
        stats.rows_from_buffers += buffered.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        Ok(Source {
            name: dataset.name.to_string(),
            schema,
            files,
            file_names,
            readable,
            buffered,
            within_range,
            files_complete,
        })
    }

    /// The SQL of a relation over a source's files and buffered rows (which
    /// go into a temporary table of `connection` first).
    /// Also says whether it created a temporary table on `connection`.
    fn relation(connection: &Connection, source: &Source) -> Result<(String, bool), Failure> {
        let (stored, temporary) = Self::stored_relation(connection, source)?;
        let Some(projection) = source.schema.projection() else { return Ok((stored, temporary)) };
        // Renamed, dropped or cast columns: files and buffers keep each
        // column's physical name and stored type; one projection gives every
        // query the schema's names and types.
        let columns: Vec<String> = projection
            .iter()
            .map(|(physical, name, kind)| match kind {
                Some(kind) => format!("CAST({} AS {}) AS {}", quote(physical), duck_type(*kind), quote(name)),
                None => format!("{} AS {}", quote(physical), quote(name)),
            })
            .collect();
        Ok((format!("SELECT {} FROM ({stored})", columns.join(", ")), temporary))
    }

    /// The relation over the stored data, under physical names, and
    /// whether it needed a temporary table.
    fn stored_relation(connection: &Connection, source: &Source) -> Result<(String, bool), Failure> {
        let schema = &source.schema;
        let list: Vec<String> = source.files.iter().map(|f| sql_string(f)).collect();
        // Union by name: binding every file's footer up front is what lets
        // DuckDB answer a count from Parquet statistics (footers are cached).
        let files = format!("SELECT * FROM read_parquet([{}], union_by_name = true)", list.join(", "));
        // With nothing buffered, files that have every column are the whole
        // relation: the catalog's column counts say so, or (for files from
        // before it counted) a probe of the files' columns.
        if source.buffered.is_empty()
            && !source.files.is_empty()
            && (source.files_complete || Self::has_every_column(connection, &files, schema)?)
        {
            return Ok((files, false));
        }
        let buffer_table = format!("__buffered_{}", source.name.replace('-', "_"));
        let columns: Vec<String> = std::iter::once(format!("{} TIMESTAMP_NS", quote(&schema.time_column)))
            .chain(
                schema
                    .columns
                    .iter()
                    .map(|c| format!("{} {}", quote(schema.physical_name(&c.name)), duck_type(c.kind))),
            )
            .collect();
        connection
            .execute_batch(&format!("CREATE TEMP TABLE {} ({})", quote(&buffer_table), columns.join(", ")))
            .map_err(query_error)?;
        if !source.buffered.is_empty() {
            let mut appender = connection.appender(&buffer_table).map_err(query_error)?;
            for batch in &source.buffered {
                let full = conform(batch, schema).map_err(|e| Failure::new(ErrorCode::Internal, e.to_string()))?;
                appender.append_record_batch(plain_strings(&full)?).map_err(query_error)?;
            }
            appender.flush().map_err(query_error)?;
        }
        let relation = if source.files.is_empty() {
            format!("SELECT * FROM {}", quote(&buffer_table))
        } else {
            // Columns added after the last flush (or only in partitions
            // this query pruned) exist only in the buffer table; UNION ALL
            // BY NAME fills them with NULL for the files.
            format!("{files} UNION ALL BY NAME SELECT * FROM {}", quote(&buffer_table))
        };
        Ok((relation, true))
    }

    /// Whether the relation `files` has every column of `schema`.
    fn has_every_column(connection: &Connection, files: &str, schema: &DatasetSchema) -> Result<bool, Failure> {
        let mut statement = connection.prepare(&format!("DESCRIBE {files}")).map_err(query_error)?;
        let names: std::collections::HashSet<String> = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(query_error)?
            .collect::<Result<_, _>>()
            .map_err(query_error)?;
        Ok(names.contains(&schema.time_column)
            && schema.columns.iter().all(|c| names.contains(schema.physical_name(&c.name))))
    }

    /// Runs a structured query.
    pub async fn structured(
        self: &Arc<Self>,
        store: &Arc<Store>,
        dataset: Arc<DatasetState>,
        request: QueryRequest,
        format: OutputFormat,
    ) -> Result<QueryResult, Failure> {
        let schema = dataset.schema();
        let planned = plan(&request, &schema)?;
        let native = if self.config.native { NativePlan::new(&request, &schema, &planned) } else { None };
        let range = Some((planned.start_ns, planned.end_ns));
        self.run(store, vec![(dataset, "src".to_string())], range, planned, native, format).await
    }

    /// Runs read-only SQL over views named after the datasets it reads as
    /// tables (see `sql_refs`) and `readable` accepts, each pruned by the
    /// SQL's top-level time predicates where they bound it. SQL reading a
    /// dataset `readable` refuses is refused (403 `forbidden`);
    /// anything but exactly one query is refused before a database sees it
    /// (see `sql_guard`).
    pub async fn sql(
        self: &Arc<Self>,
        store: &Arc<Store>,
        sql: &str,
        format: OutputFormat,
        readable: DatasetFilter,
    ) -> Result<QueryResult, Failure> {
        if sql.len() > self.config.sql_bytes_max {
            return Err(Failure::new(
                ErrorCode::LimitExceeded,
                format!("SQL longer than {} bytes (query.sql_bytes_max)", self.config.sql_bytes_max),
            ));
        }
        let text = sql.to_string();
        let checked = tokio::task::spawn_blocking(move || sql_guard::check(&text))
            .await
            .map_err(|e| Failure::new(ErrorCode::Internal, format!("checking the SQL failed: {e}")))??;
        let mut datasets: Vec<(Arc<DatasetState>, String)> = Vec::new();
        let mut dataset_ranges = Vec::new();
        for dataset in store.datasets() {
            let name = dataset.name.to_string();
            if !checked.tables.contains(&name) {
                continue;
            }
            if !readable(&name) {
                return Err(Failure::new(
                    ErrorCode::Forbidden,
                    format!("reading dataset {name} needs scope read:{name}"),
                )
                .with_detail(json!({ "scope": format!("read:{name}") })));
            }
            dataset_ranges.push(checked.time_range(&name, &dataset.schema().time_column));
            datasets.push((dataset, name));
        }
        let planned = PlannedQuery {
            start_ns: i64::MIN,
            end_ns: i64::MAX,
            sql: checked.sql,
            sql_within_range: String::new(),
            params: Vec::new(),
            time_columns: Vec::new(),
            key_filters: Vec::new(),
            dataset_ranges,
        };
        self.run(store, datasets, None, planned, None, format).await
    }

    async fn run(
        self: &Arc<Self>,
        store: &Arc<Store>,
        datasets: Vec<(Arc<DatasetState>, String)>,
        range: Option<(i64, i64)>,
        planned: PlannedQuery,
        native: Option<NativePlan>,
        format: OutputFormat,
    ) -> Result<QueryResult, Failure> {
        let started = Instant::now();
        let permit =
            tokio::time::timeout(Duration::from_millis(self.config.timeout_ms), self.permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    Failure::new(ErrorCode::QueryBusy, "too many queries are running (query.concurrent_max)")
                        .with_retry_after(1)
                })?
                .map_err(|_| Failure::new(ErrorCode::NotReady, "shutting down"))?;
        let (first_sender, first_receiver) = tokio::sync::oneshot::channel::<Result<(), Failure>>();
        let (sender, chunks) = mpsc::channel::<Result<Bytes, Failure>>(16);
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let watch = Arc::new(Watch::default());
        // The watchdog starts first, so its baseline predates the query.
        tokio::spawn(watchdog::run(watch.clone(), timeout, self.config.memory_bytes_max));
        let job = QueryJob {
            engine: self.clone(),
            store: store.clone(),
            datasets,
            range,
            planned,
            native,
            format,
            started,
            watch,
        };
        tokio::task::spawn_blocking(move || job.answer(permit, FirstAnswer(Some(first_sender)), sender));
        let first =
            first_receiver.await.unwrap_or_else(|_| Err(Failure::new(ErrorCode::Internal, "query worker ended early")));
        first?;
        // The watchdog keeps running until the worker finishes.
        Ok(QueryResult { content_type: format.content_type(), chunks })
    }
}

/// One admitted query, answered on a blocking thread: prepare the sources
/// and the statement, stream the encoded batches, end the answer.
struct QueryJob {
    engine: Arc<QueryEngine>,
    store: Arc<Store>,
    datasets: Vec<(Arc<DatasetState>, String)>,
    /// The structured query's time range; `None` for SQL.
    range: Option<(i64, i64)>,
    planned: PlannedQuery,
    /// The plan of the native executor, when it may answer.
    native: Option<NativePlan>,
    format: OutputFormat,
    started: Instant,
    watch: Arc<Watch>,
}

/// The query's first outcome, awaited by the request before the answer's
/// status is chosen: an error before the first batch is an error status,
/// one after it ends the body.
struct FirstAnswer(Option<tokio::sync::oneshot::Sender<Result<(), Failure>>>);

impl FirstAnswer {
    fn started(&mut self) {
        if let Some(first) = self.0.take() {
            let _ = first.send(Ok(()));
        }
    }

    fn pending(&self) -> bool {
        self.0.is_some()
    }

    fn fail(&mut self, watch: &Watch, error: Failure) {
        if let Some(first) = self.0.take() {
            let _ = first.send(Err(watch.explain(error)));
        }
    }
}

/// What `QueryJob::prepare` readies: the connection, whether it is a
/// pooled one (and of which opening of the shared database), each
/// dataset's source and its relation.
struct Prepared {
    connection: Connection,
    pooled: Option<Instant>,
    sources: Vec<Source>,
    relations: Vec<String>,
}

/// A statement parsed for this query, or kept parsed by a pooled
/// connection for the next query with the same text.
enum Statement<'c> {
    Cached(duckdb::CachedStatement<'c>),
    Plain(duckdb::Statement<'c>),
}

impl<'c> Statement<'c> {
    /// Parses `sql`; on a pooled connection (`keep`) the parsed statement
    /// is kept for the next query with the same text (DuckDB still binds
    /// it afresh each time: file readers cannot be cached).
    fn parse(connection: &'c Connection, sql: &str, keep: bool) -> duckdb::Result<Statement<'c>> {
        if keep {
            connection.prepare_cached(sql).map(Statement::Cached)
        } else {
            connection.prepare(sql).map(Statement::Plain)
        }
    }
}

impl<'c> std::ops::Deref for Statement<'c> {
    type Target = duckdb::Statement<'c>;

    fn deref(&self) -> &duckdb::Statement<'c> {
        match self {
            Statement::Cached(statement) => statement,
            Statement::Plain(statement) => statement,
        }
    }
}

impl<'c> std::ops::DerefMut for Statement<'c> {
    fn deref_mut(&mut self) -> &mut duckdb::Statement<'c> {
        match self {
            Statement::Cached(statement) => statement,
            Statement::Plain(statement) => statement,
        }
    }
}

/// The result chunks of a stream that ran to its end (or to a failure).
struct Streamed {
    pending: Vec<Bytes>,
    failure: Option<Failure>,
}

impl QueryJob {
    fn answer(
        self,
        permit: tokio::sync::OwnedSemaphorePermit,
        mut first: FirstAnswer,
        sender: mpsc::Sender<Result<Bytes, Failure>>,
    ) {
        let _finished = FinishOnDrop(self.watch.clone());
        let abort_on_panic = AbortOnPanic(sender.clone());
        let mut stats = QueryStats { executor: "duckdb", ..QueryStats::default() };
        let sources = match self.sources(&mut stats) {
            Ok(sources) => sources,
            Err(error) => return first.fail(&self.watch, error),
        };
        if let Some(plan) = &self.native {
            stats.setup_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            let source = &sources[0];
            match native::answer(plan, &source.readable, &source.buffered, &self.engine.native, &self.watch) {
                Ok(Outcome::Answered(batch)) => {
                    stats.executor = "native";
                    return self.answer_with(batch, stats, permit, first, &sender);
                }
                Ok(Outcome::Declined) => {}
                Err(error) => return first.fail(&self.watch, missing_file(&sources, error)),
            }
        }
        let Prepared { connection, pooled, sources, relations } = match self.prepare(sources) {
            Ok(prepared) => prepared,
            Err(error) => return first.fail(&self.watch, error),
        };
        let sql = match self.statement_sql(&connection, &sources, &relations) {
            Ok(sql) => sql,
            Err(error) => return first.fail(&self.watch, error),
        };
        let mut statement = match Statement::parse(&connection, &sql, pooled.is_some()) {
            Ok(statement) => statement,
            Err(error) => return first.fail(&self.watch, missing_file(&sources, query_error(error))),
        };
        // Constant folding during `prepare` runs functions the watchdog
        // cannot interrupt; their result is refused all the same.
        if let Some(error) = self.watch.memory_error() {
            return first.fail(&self.watch, error);
        }
        stats.setup_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let params: Vec<Value> = self.planned.params.iter().map(param_value).collect();
        let mut batches = match statement.stream_arrow(duckdb::params_from_iter(params)) {
            Ok(batches) => batches,
            Err(error) => return first.fail(&self.watch, missing_file(&sources, query_error(error))),
        };
        let mut encoder = Encoder::new(self.format, self.planned.time_columns.clone());
        let Some(streamed) = self.stream(&mut batches, &mut encoder, &sources, &mut first, &sender) else {
            return; // the client went away
        };
        let clean = streamed.failure.is_none();
        if !self.conclude(streamed, &mut encoder, stats, &mut first, &sender) {
            return;
        }
        // The answer is complete; an SQL query over new files opened a
        // spare, so another is opened before the next one needs it.
        drop(sender);
        drop(abort_on_panic);
        drop(batches);
        drop(statement);
        self.watch.finish();
        match pooled {
            Some(opened) if clean && !self.watch.stopped() => self.engine.give_back(opened, connection),
            _ => drop(connection),
        }
        drop(permit);
        if self.range.is_none() {
            self.engine.refill_spares();
        }
    }

    /// Sends `batch`, the whole answer the native executor computed.
    fn answer_with(
        &self,
        batch: RecordBatch,
        stats: QueryStats,
        permit: tokio::sync::OwnedSemaphorePermit,
        mut first: FirstAnswer,
        sender: &mpsc::Sender<Result<Bytes, Failure>>,
    ) {
        let mut encoder = Encoder::new(self.format, self.planned.time_columns.clone());
        let mut pending = vec![Bytes::from(encoder.begin(&batch.schema()))];
        let failure = match encoder.batch(&batch) {
            Ok(bytes) => {
                pending.push(Bytes::from(bytes));
                None
            }
            Err(error) => Some(error),
        };
        self.conclude(Streamed { pending, failure }, &mut encoder, stats, &mut first, sender);
        self.watch.finish();
        drop(permit);
    }

    /// Ends an answer whose batches are all encoded. A failure before
    /// anything was sent becomes the request's error status (`false`);
    /// otherwise the rest goes out with the statistics (`true`).
    fn conclude(
        &self,
        streamed: Streamed,
        encoder: &mut Encoder,
        mut stats: QueryStats,
        first: &mut FirstAnswer,
        sender: &mpsc::Sender<Result<Bytes, Failure>>,
    ) -> bool {
        if let (Some(error), true) = (&streamed.failure, first.pending()) {
            first.fail(&self.watch, error.clone());
            return false;
        }
        first.started();
        stats.rows_returned = encoder.rows();
        stats.elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.end(streamed, encoder, &stats, sender);
        true
    }

    /// Each dataset's snapshot as a source (files resolved, buffered rows
    /// taken), counted in `stats`.
    fn sources(&self, stats: &mut QueryStats) -> Result<Vec<Source>, Failure> {
        let mut sources = Vec::new();
        for (i, (dataset, _)) in self.datasets.iter().enumerate() {
            let range = self.range.or(self.planned.dataset_ranges.get(i).copied().flatten());
            let snapshot = self.store.snapshot(dataset, range)?;
            sources.push(self.engine.source(dataset, &snapshot, range, &self.planned.key_filters, stats)?);
        }
        Ok(sources)
    }

    /// The connection for `sources` and each source's relation.
    fn prepare(&self, sources: Vec<Source>) -> Result<Prepared, Failure> {
        let files: Vec<&str> = sources.iter().flat_map(|s| s.files.iter().map(String::as_str)).collect();
        // A time range means a structured query.
        let (connection, mut pooled) = if self.range.is_some() {
            let (connection, opened) = self.engine.shared_connection()?;
            (connection, Some(opened))
        } else {
            (self.engine.connect(&files)?, None)
        };
        self.watch.attach(connection.interrupt_handle());
        let mut relations = Vec::new();
        for source in &sources {
            let relation = QueryEngine::relation(&connection, source);
            let (relation, temporary) = relation.map_err(|error| missing_file(&sources, error))?;
            if temporary {
                pooled = None;
            }
            relations.push(relation);
        }
        Ok(Prepared { connection, pooled, sources, relations })
    }

    /// The text to prepare. A structured query names its one relation `src`
    /// in a common table expression: DuckDB binds the files once, where a
    /// view would bind them when created and again when used. User SQL may
    /// use a dataset several times: views, which are never materialized.
    fn statement_sql(
        &self,
        connection: &Connection,
        sources: &[Source],
        relations: &[String],
    ) -> Result<String, Failure> {
        if self.range.is_some() {
            let planned_sql =
                if sources.iter().all(|s| s.within_range) { &self.planned.sql_within_range } else { &self.planned.sql };
            return Ok(with_relation(planned_sql, &self.datasets[0].1, &relations[0]));
        }
        for ((_, view), relation) in self.datasets.iter().zip(relations) {
            connection
                .execute_batch(&format!("CREATE TEMP VIEW {} AS {relation}", quote(view)))
                .map_err(|error| missing_file(sources, view_error(view, error)))?;
        }
        Ok(self.planned.sql.clone())
    }

    /// Encodes and sends batches until the stream ends or fails; `None` when
    /// the client went away.
    fn stream(
        &self,
        batches: &mut duckdb::ArrowStream<'_>,
        encoder: &mut Encoder,
        sources: &[Source],
        first: &mut FirstAnswer,
        sender: &mpsc::Sender<Result<Bytes, Failure>>,
    ) -> Option<Streamed> {
        let schema = batches.get_schema();
        let mut pending = vec![Bytes::from(encoder.begin(&schema))];
        for item in batches.by_ref() {
            // An interrupt (the timeout) or a runtime error ends the
            // stream with an error item.
            let batch = match (item, self.watch.memory_error()) {
                (_, Some(error)) => return Some(Streamed { pending, failure: Some(error) }),
                (Ok(batch), None) => batch,
                (Err(error), None) => {
                    let failure = Some(missing_file(sources, query_error(error)));
                    return Some(Streamed { pending, failure });
                }
            };
            match encoder.batch(&batch) {
                Ok(bytes) => pending.push(Bytes::from(bytes)),
                Err(error) => return Some(Streamed { pending, failure: Some(error) }),
            }
            first.started();
            for chunk in pending.drain(..) {
                sender.blocking_send(Ok(chunk)).ok()?;
            }
        }
        Some(Streamed { pending, failure: None })
    }

    /// Sends what is left and the answer's end: the statistics and any
    /// error in band for JSON; for CSV, NDJSON and Arrow, which cannot carry
    /// an error, an aborted body, since a cleanly ended one would pass a
    /// truncated answer off as whole.
    fn end(
        &self,
        streamed: Streamed,
        encoder: &mut Encoder,
        stats: &QueryStats,
        sender: &mpsc::Sender<Result<Bytes, Failure>>,
    ) {
        let mut chunks: Vec<Result<Bytes, Failure>> = streamed.pending.into_iter().map(Ok).collect();
        match streamed.failure {
            Some(error) if !encoder.reports_errors_in_band() => {
                tracing::warn!(%error, rows = stats.rows_returned, "query failed mid-answer; response aborted");
                chunks.push(Err(self.watch.explain(error)));
            }
            failure => {
                let failure = failure.map(|error| self.watch.explain(error));
                chunks.push(Ok(Bytes::from(encoder.finish(&json!(stats), failure.as_ref()))));
            }
        }
        for chunk in chunks {
            if sender.blocking_send(chunk).is_err() {
                break;
            }
        }
    }
}

/// Aborts the answer if the worker panics: without it, the dropped sender
/// would end a truncated body as if it were whole.
struct AbortOnPanic(mpsc::Sender<Result<Bytes, Failure>>);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.blocking_send(Err(Failure::new(ErrorCode::Internal, "the query worker failed")));
        }
    }
}

/// `error`, unless a committed file the query reads is gone: that is a
/// storage fault, not the query's, and the answer says which partition
/// (and never the SQL Strata generated over the file paths). Checked only
/// once something failed, so a query that succeeds costs no extra stat.
fn missing_file(sources: &[Source], error: Failure) -> Failure {
    let missing = sources
        .iter()
        .flat_map(|s| s.files.iter().zip(&s.file_names))
        .find(|(path, _)| crate::storage::is_missing(Path::new(path)));
    match missing {
        Some((_, (partition, key))) => Failure::new(
            ErrorCode::Internal,
            format!("storage: file {key} of partition {partition} is missing; the query cannot read it"),
        ),
        None => error,
    }
}

/// The error of a dataset view that could not be created: Strata's SQL
/// over Strata's files, so never the caller's fault, and the SQL (with the
/// file paths) stays out of the answer.
fn view_error(view: &str, error: duckdb::Error) -> Failure {
    let message = error.to_string();
    let mapped = query_error(error);
    if matches!(mapped.code, ErrorCode::QueryTimeout | ErrorCode::QueryTooLarge) {
        return mapped;
    }
    let first = message.lines().next().unwrap_or_default();
    Failure::new(ErrorCode::Internal, format!("reading dataset {view} failed: {first}"))
}

/// `sql` with `relation` as a common table expression named `name` in front
/// (joining the `WITH` that `sql` may start with).
fn with_relation(sql: &str, name: &str, relation: &str) -> String {
    let cte = format!("{} AS NOT MATERIALIZED ({relation})", quote(name));
    match sql.strip_prefix("WITH ") {
        Some(rest) => format!("WITH {cte}, {rest}"),
        None => format!("WITH {cte} {sql}"),
    }
}

/// DuckDB's appender takes plain strings; buffers hold dictionary strings.
fn plain_strings(batch: &RecordBatch) -> Result<RecordBatch, Failure> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if let DataType::Dictionary(_, _) = field.data_type() {
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(cast(column, &DataType::Utf8).map_err(|e| Failure::new(ErrorCode::Internal, e.to_string()))?);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Failure::new(ErrorCode::Internal, e.to_string()))
}
