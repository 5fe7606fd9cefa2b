//! The store: ties the catalog, the WAL, the buffers and storage together into
//! the write path, flushing and start-up recovery.
//!
//! Write path: parse → schema check → route → WAL (group commit, fsync) →
//! buffers → acknowledge. Flush: buffer → Parquet → storage (create-only,
//! fsync) → verify → catalog commit → drop buffered rows → WAL truncation.
//! Start-up: sweep orphans → load catalog → replay WAL → ready.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::buffer::Buffers;
use crate::catalog::{Catalog, DatasetRecord, IdempotencyRecord, NewFile, PartitionRecord};
use crate::config::{Config, LateRows};
use crate::error::{ErrorCode, Failure};
use crate::ingest::batch::{BatchBuilder, ParsedBatch};
use crate::ingest::line_protocol::{self, BodyError, LineError};
use crate::ingest::{self, Precision};
use crate::names::{DatasetName, partition_label};
use crate::parquet_file;
use crate::period::Bucket;
use crate::policy::facts::is_valid_partition_key;
use crate::policy::{BoundPartitioner, PolicyRuntime};
use crate::schema::DatasetSchema;
use crate::storage::{ObjectKey, StorageTarget, Targets};
use crate::tier::Tier;
use crate::time::now_ns;
use crate::wal::{Wal, WalEntry, decode_batch, encode_batch};

/// The body format of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON array of objects, or NDJSON.
    Json,
    /// InfluxDB line protocol.
    LineProtocol,
}

/// One write request.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// The dataset name as given (validated here).
    pub dataset: String,
    /// The (decoded) body.
    pub body: Bytes,
    /// Its format.
    pub format: Format,
    /// Unit of epoch timestamps.
    pub precision: Precision,
    /// Keep the good lines of a line-protocol body when some are bad.
    pub accept_partial: bool,
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

/// The response to a write: the status and JSON body first given for it.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResponse {
    /// HTTP status (200 written, 400 partial write).
    pub status: u16,
    /// The JSON body.
    pub body: Json,
    /// Whether this is the stored response of an earlier identical request.
    pub replayed: bool,
}

/// The longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// Rejected lines listed in a partial-write response.
const LINE_ERRORS_LISTED_MAX: usize = 100;

#[derive(Debug, Clone)]
struct PartitionHandle {
    id: i64,
    read_only: bool,
    /// The catalog's `key_field` as last seen (see `Catalog::note_key_field`).
    key_field: Option<Arc<str>>,
}

/// A dataset as the store keeps it in memory.
#[derive(Debug)]
pub struct DatasetState {
    /// Its catalog row.
    pub record: DatasetRecord,
    /// Its validated name.
    pub name: DatasetName,
    schema: RwLock<Arc<DatasetSchema>>,
    evolve: tokio::sync::Mutex<()>,
    partitions: Mutex<HashMap<(String, String), PartitionHandle>>,
    /// Held shared by a write from its check of the partitions' read-only
    /// flags until its rows are in the buffers, and exclusively by a seal:
    /// once a seal returns, every write either saw the partition sealed or
    /// has its rows buffered, where the sealer's flush finds them.
    sealing: tokio::sync::RwLock<()>,
}

impl DatasetState {
    /// The current schema.
    pub fn schema(&self) -> Arc<DatasetSchema> {
        self.schema.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug, Default)]
struct IdempotencyMemory {
    /// Keys whose WAL entry is not yet truncated: `(dataset, key) → (seq, record)`.
    recent: HashMap<(i64, String), (u64, IdempotencyRecord)>,
    in_flight: HashSet<(i64, String)>,
}

/// Removes an idempotency key from the in-flight set when the request ends.
struct InFlight {
    memory: Arc<Mutex<IdempotencyMemory>>,
    key: (i64, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).in_flight.remove(&self.key);
    }
}

/// The store.
#[derive(Debug)]
pub struct Store {
    config: Arc<Config>,
    catalog: Arc<Catalog>,
    /// Every storage target, and the target of each tier.
    targets: Arc<Targets>,
    /// The hot tier's target: flushes write here.
    hot: Arc<dyn StorageTarget>,
    wal: Wal,
    buffers: Arc<Buffers>,
    datasets: RwLock<HashMap<String, Arc<DatasetState>>>,
    create_dataset: tokio::sync::Mutex<()>,
    idempotency: Arc<Mutex<IdempotencyMemory>>,
    /// Held for writing while a flush commits and drops its buffered rows, and
    /// for reading while a reader snapshots files plus buffers, so a reader
    /// never sees rows twice or not at all.
    visibility: RwLock<()>,
    flush_lock: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    /// The policy runtime, once loaded: the partitioners of the write path.
    policies: OnceLock<Arc<PolicyRuntime>>,
    /// Counters for `/metrics`.
    counters: IngestCounters,
}

/// What the write path has done since start-up, for `/metrics`.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Rows acknowledged (in the WAL, and answered).
    pub rows_written: std::sync::atomic::AtomicU64,
    /// Rows refused because of sealed partitions: the late rows of a
    /// request that wrote the rest (`late_rows = "refuse_rows"`), or every
    /// row of a request refused whole (409 `partition_read_only`).
    pub rows_refused_sealed: std::sync::atomic::AtomicU64,
    /// Lines or records rejected (unparseable, or refused by a partitioner)
    /// in requests that wrote the rest (`accept_partial`).
    pub records_rejected: std::sync::atomic::AtomicU64,
}

/// What start-up recovery did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Recovery {
    /// WAL entries replayed into buffers.
    pub wal_entries_replayed: u64,
    /// Rows replayed into buffers.
    pub rows_replayed: u64,
    /// Unreferenced data files deleted.
    pub orphan_files_removed: usize,
    /// Temporary files of interrupted writes deleted.
    pub temporary_files_removed: usize,
}

fn internal(context: &str) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Failure + '_ {
    move |error| Failure::new(ErrorCode::Internal, format!("{context}: {error}"))
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::new(ErrorCode::Internal, format!("background task failed: {e}")))
}

impl Store {
    /// Opens the store in `config.server.data_dir`: sweeps orphans, loads the
    /// catalog and replays the WAL. Blocking.
    pub fn open(config: Arc<Config>) -> anyhow::Result<(Store, Recovery)> {
        let data_dir = &config.server.data_dir;
        std::fs::create_dir_all(data_dir)?;
        let catalog = Arc::new(Catalog::open(&Catalog::path_in(data_dir))?);
        let targets = Arc::new(Targets::open(&config)?);
        // A file on a target the configuration no longer names would be
        // unreadable, and its copies unsweepable: refuse to start instead.
        for name in catalog.storage_targets_in_use()? {
            if targets.named(&name).is_none() {
                anyhow::bail!(
                    "the catalog has files on storage target {name:?}, which is not configured; \
                     declare [storage.targets.{name}] with its location"
                );
            }
        }
        let hot = targets.tier(Tier::Hot).clone();
        let mut recovery = Recovery { temporary_files_removed: hot.remove_temporaries()?, ..Recovery::default() };

        // Files a crash left between their write and their catalog commit are
        // invisible (the catalog never listed them); delete them.
        let referenced = catalog.referenced_keys(hot.name())?;
        for object in hot.list("data/")? {
            if !referenced.contains(object.key.as_str()) {
                hot.delete(&object.key)?;
                recovery.orphan_files_removed += 1;
            }
        }

        let mut datasets = HashMap::new();
        for record in catalog.datasets()? {
            let schema = catalog.schema(record.id)?;
            let name = DatasetName::parse(&record.name).map_err(anyhow::Error::msg)?;
            datasets.insert(
                record.name.clone(),
                Arc::new(DatasetState {
                    name,
                    record,
                    schema: RwLock::new(Arc::new(schema)),
                    evolve: tokio::sync::Mutex::new(()),
                    partitions: Mutex::new(HashMap::new()),
                    sealing: tokio::sync::RwLock::new(()),
                }),
            );
        }
        let flushed: HashMap<i64, (i64, u64)> =
            catalog.all_partitions()?.into_iter().map(|p| (p.id, (p.dataset_id, p.flushed_wal_seq))).collect();

        let buffers = Arc::new(Buffers::default());
        let idempotency = Arc::new(Mutex::new(IdempotencyMemory::default()));
        let wal = Wal::open(&data_dir.join("wal"), config.ingest.wal_segment_bytes_max, |seq, payload| {
            let entry = WalEntry::decode(payload)?;
            let mut replayed = false;
            for (partition_id, ipc) in &entry.parts {
                let Some((dataset_id, flushed_seq)) = flushed.get(partition_id) else {
                    return Err(crate::wal::WalError::Corrupt(format!(
                        "entry {seq} names unknown partition {partition_id}"
                    )));
                };
                if seq > *flushed_seq {
                    let batch = decode_batch(ipc)?;
                    recovery.rows_replayed += batch.num_rows() as u64;
                    buffers.insert(*dataset_id, *partition_id, seq, batch);
                    replayed = true;
                }
            }
            if let Some((key, record)) = entry.idempotency {
                idempotency.lock().expect("not poisoned").recent.insert((entry.dataset_id, key), (seq, record));
            }
            recovery.wal_entries_replayed += u64::from(replayed);
            Ok(())
        })?;
        let store = Store {
            config,
            catalog,
            targets,
            hot,
            wal,
            buffers,
            datasets: RwLock::new(datasets),
            create_dataset: tokio::sync::Mutex::new(()),
            idempotency,
            visibility: RwLock::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            policies: OnceLock::new(),
            counters: IngestCounters::default(),
        };
        Ok((store, recovery))
    }

    /// The configuration snapshot.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The buffers.
    pub fn buffers(&self) -> &Arc<Buffers> {
        &self.buffers
    }

    /// The hot tier's storage target.
    pub fn hot(&self) -> &Arc<dyn StorageTarget> {
        &self.hot
    }

    /// Every storage target, and the target of each tier.
    pub fn targets(&self) -> &Arc<Targets> {
        &self.targets
    }

    /// A dataset, if it exists.
    pub fn dataset(&self, name: &str) -> Option<Arc<DatasetState>> {
        self.datasets.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Every dataset, by name.
    pub fn datasets(&self) -> Vec<Arc<DatasetState>> {
        let mut all: Vec<_> = self.datasets.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        all
    }

    async fn dataset_or_create(self: &Arc<Self>, name: &DatasetName) -> Result<Arc<DatasetState>, Failure> {
        if let Some(dataset) = self.dataset(name.as_str()) {
            return Ok(dataset);
        }
        let _guard = self.create_dataset.lock().await;
        if let Some(dataset) = self.dataset(name.as_str()) {
            return Ok(dataset);
        }
        let count = self.datasets.read().unwrap_or_else(|p| p.into_inner()).len();
        if count >= self.config.limits.datasets_max {
            return Err(Failure::new(
                ErrorCode::LimitExceeded,
                format!("the store holds {count} datasets, the most allowed (limits.datasets_max)"),
            ));
        }
        let (period, time_column) = self.config.dataset_settings(name);
        let catalog = self.catalog.clone();
        let owned = name.clone();
        let record = blocking(move || catalog.create_dataset(owned.as_str(), period, &time_column, now_ns())).await??;
        let schema = DatasetSchema::empty(&record.time_column);
        let state = Arc::new(DatasetState {
            name: name.clone(),
            record,
            schema: RwLock::new(Arc::new(schema)),
            evolve: tokio::sync::Mutex::new(()),
            partitions: Mutex::new(HashMap::new()),
            sealing: tokio::sync::RwLock::new(()),
        });
        self.datasets.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), state.clone());
        tracing::info!(dataset = %name, "created dataset");
        Ok(state)
    }

    /// Writes one request. Returns once the rows are durable.
    pub async fn write(self: &Arc<Self>, request: WriteRequest) -> Result<WriteResponse, Failure> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Failure::new(ErrorCode::NotReady, "the server is shutting down").with_retry_after(1));
        }
        let name = DatasetName::parse(&request.dataset).map_err(|m| Failure::new(ErrorCode::InvalidDatasetName, m))?;
        if let Some(key) = &request.idempotency_key
            && (key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX || key.chars().any(char::is_control))
        {
            return Err(Failure::new(
                ErrorCode::BadRequest,
                format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes without control characters"),
            ));
        }
        if self.buffers.bytes() >= self.config.limits.buffer_bytes_max {
            return Err(Failure::new(
                ErrorCode::BufferFull,
                format!(
                    "{} bytes are waiting to be flushed (limits.buffer_bytes_max); retry shortly",
                    self.buffers.bytes()
                ),
            )
            .with_retry_after(1));
        }
        // Until the policies are loaded nobody knows how a dataset's records
        // are keyed, so writes wait (503, like WAL replay at start-up).
        let policies = self.policies.get().cloned().ok_or_else(|| {
            Failure::new(ErrorCode::NotReady, "the server is still loading its policies").with_retry_after(1)
        })?;
        let dataset = self.dataset_or_create(&name).await?;

        // Idempotency: answer a retry with the first response.
        // Hashing the body costs ~7% of ingest CPU; only keyed requests need it.
        let request_sha256 = if request.idempotency_key.is_some() { request_digest(&request) } else { [0; 32] };
        let _in_flight = match &request.idempotency_key {
            None => None,
            Some(key) => {
                // Order matters: a finished request's key is always in `recent`
                // or in the catalog (it is stored there before leaving
                // `recent`), so checking `recent` and then the catalog cannot
                // miss it.
                let id = (dataset.record.id, key.clone());
                {
                    let mut memory = self.idempotency.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some((_, record)) = memory.recent.get(&id) {
                        return replay_record(record, &request_sha256);
                    }
                    if !memory.in_flight.insert(id.clone()) {
                        return Err(Failure::new(
                            ErrorCode::IdempotencyKeyInFlight,
                            "a request with this Idempotency-Key is still being processed",
                        )
                        .with_retry_after(1));
                    }
                }
                let guard = InFlight { memory: self.idempotency.clone(), key: id };
                let catalog = self.catalog.clone();
                let (dataset_id, owned_key) = (dataset.record.id, key.clone());
                if let Some(record) = blocking(move || catalog.idempotency(dataset_id, &owned_key)).await?? {
                    return replay_record(&record, &request_sha256);
                }
                Some(guard)
            }
        };

        // Parse and route off the async runtime.
        let schema = dataset.schema();
        let limits = self.config.limits.ingest();
        let period = dataset.record.period;
        let format = request.format;
        let precision = request.precision;
        let body = request.body.clone();
        let parsed = blocking(move || -> Result<(ParsedBatch, Vec<LineError>), Failure> {
            let expected_rows = match format {
                Format::LineProtocol => memchr::memchr_iter(b'\n', &body).count() + 1,
                Format::Json => 0,
            };
            let mut builder = BatchBuilder::with_capacity(&schema, limits.columns_per_dataset_max, expected_rows);
            let now = now_ns();
            let errors = match format {
                Format::Json => {
                    ingest::json::parse(&body, precision, now, &limits, &mut builder)?;
                    Vec::new()
                }
                Format::LineProtocol => match line_protocol::parse(&body, precision, now, &limits, &mut builder) {
                    Ok(errors) => errors,
                    Err(BodyError::TooManyLines(max)) => {
                        return Err(Failure::new(
                            ErrorCode::LimitExceeded,
                            format!("more than {max} lines in one request (rows_per_request_max)"),
                        ));
                    }
                    Err(BodyError::Limit { line_number, limit, message }) => {
                        return Err(Failure::new(
                            ErrorCode::LimitExceeded,
                            format!("line {line_number}: {message}; nothing was written"),
                        )
                        .with_detail(json!({ "line_number": line_number, "limit": limit })));
                    }
                    Err(BodyError::Conflict(error)) => {
                        let column = match &error {
                            crate::ingest::batch::RowError::Conflict { column, .. } => column.clone(),
                            _ => String::new(),
                        };
                        return Err(Failure::new(ErrorCode::SchemaConflict, error.to_string())
                            .with_detail(json!({ "column": column })));
                    }
                },
            };
            Ok((builder.finish(), errors))
        })
        .await??;
        let (parsed, mut line_errors) = parsed;

        let parse_rejected = line_errors.len();
        if parse_rejected > 0 && (!request.accept_partial || parsed.rows() == 0) {
            return Err(Failure::new(
                ErrorCode::InvalidLineProtocol,
                format!("{parse_rejected} line(s) could not be parsed; nothing was written"),
            )
            .with_detail(json!({ "lines": &line_errors[..parse_rejected.min(LINE_ERRORS_LISTED_MAX)] })));
        }
        if parsed.rows() == 0 {
            return Ok(WriteResponse { status: 200, body: json!({ "rows": 0, "partitions": 0 }), replayed: false });
        }

        // Partition keys: one batched call into the dataset's partitioner
        // (pinned to the version active now), off the async runtime.
        let (mut parsed, keys, key_field) = match policies.partitioner_for(name.as_str())? {
            None => (parsed, None, String::new()),
            Some(partitioner) => {
                let keyed = self.partition_keys(&partitioner, &dataset, parsed, &request, &mut line_errors).await?;
                (keyed.0, Some(keyed.1), partitioner.verbatim_field().unwrap_or_default())
            }
        };
        let record_numbers = std::mem::take(&mut parsed.record_numbers);
        let number_of = |row: u32| record_numbers.get(row as usize).map_or(row as usize + 1, |n| *n as usize);

        let rejected = line_errors.len();
        let line_errors_listed = &line_errors[..rejected.min(LINE_ERRORS_LISTED_MAX)];
        let schema = self.evolve_schema(&dataset, &parsed).await?;
        let rows = parsed.rows();
        let parts = blocking(move || {
            ingest::route(parsed, &schema, period, keys.as_deref())
                .into_iter()
                .map(|part| {
                    let ipc = encode_batch(&part.batch);
                    (part, ipc)
                })
                .collect::<Vec<_>>()
        })
        .await?;

        // Sealed partitions: refuse the request, or (late_rows = refuse_rows)
        // just their rows.
        let late_rows = self.config.late_rows(&name);
        let _not_sealing = dataset.sealing.read().await;
        let mut writable = Vec::with_capacity(parts.len());
        let mut sealed: Vec<(String, Vec<u32>)> = Vec::new();
        for (part, ipc) in parts {
            if !is_valid_partition_key(&part.key) {
                // The runtime checked every key; this is the pair assertion
                // before a key reaches the catalog, ids and URLs.
                return Err(Failure::new(
                    ErrorCode::Internal,
                    format!("refusing invalid partition key {:?}", part.key),
                ));
            }
            let handle = self.partition_handle(&dataset, &part.bucket, &part.key).await?;
            if handle.read_only {
                let label = partition_label(&dataset.name, &part.bucket.label, &part.key);
                if late_rows == LateRows::RefuseRequest {
                    self.counters.rows_refused_sealed.fetch_add(rows as u64, Ordering::Relaxed);
                    return Err(Failure::new(
                        ErrorCode::PartitionReadOnly,
                        format!(
                            "partition {label} is sealed and accepts no writes; nothing of this request was written"
                        ),
                    )
                    .with_detail(json!({ "partition": label })));
                }
                sealed.push((label, part.rows));
                continue;
            }
            writable.push((part, ipc, handle));
        }
        if let Some(delay) = crate::failpoint::delay("ingest.after_seal_check") {
            tokio::time::sleep(delay).await;
        }
        let row_field = if request.format == Format::LineProtocol { "line_number" } else { "record" };
        let refused_rows: usize = sealed.iter().map(|(_, rows)| rows.len()).sum();
        let refused = || {
            let mut listed: Vec<(usize, &str)> = sealed
                .iter()
                .flat_map(|(label, rows)| rows.iter().map(|row| (number_of(*row), label.as_str())))
                .collect();
            listed.sort_unstable();
            listed.truncate(LINE_ERRORS_LISTED_MAX);
            listed
                .into_iter()
                .map(|(number, label)| json!({ row_field: number, "partition": label }))
                .collect::<Vec<_>>()
        };
        let sealed_labels: Vec<&str> = sealed.iter().map(|(label, _)| label.as_str()).collect();
        if writable.is_empty() {
            self.counters.rows_refused_sealed.fetch_add(refused_rows as u64, Ordering::Relaxed);
            return Err(Failure::new(
                ErrorCode::PartitionReadOnly,
                format!(
                    "every row of this request is for a sealed partition ({}); nothing was written",
                    sealed_labels.join(", ")
                ),
            )
            .with_detail(json!({
                "partition": sealed_labels[0],
                "partitions": sealed_labels,
                "refused_rows": refused_rows,
                "refused": refused(),
            })));
        }
        for (part, _, handle) in &mut writable {
            if handle.key_field.as_deref() != Some(key_field.as_str()) {
                self.note_key_field(&dataset, part, handle, &key_field).await?;
            }
        }

        let written = rows - refused_rows;
        let partitions = writable.len();
        let (status, response_body) = if refused_rows > 0 {
            let mut detail = json!({
                "rows": written,
                "partitions": partitions,
                "refused_rows": refused_rows,
                "refused": refused(),
                "sealed_partitions": sealed_labels,
            });
            if rejected > 0 {
                detail["lines"] = json!(line_errors_listed);
            }
            let error = Failure::new(
                ErrorCode::LateRowsRefused,
                format!(
                    "{written} row(s) written, {refused_rows} refused: sealed partition(s) {} accept no writes",
                    sealed_labels.join(", ")
                ),
            )
            .with_detail(detail);
            (ErrorCode::LateRowsRefused.status().as_u16(), error.body())
        } else if rejected > 0 {
            let error =
                Failure::new(ErrorCode::PartialWrite, format!("{written} line(s) written, {rejected} rejected"))
                    .with_detail(json!({ "rows": written, "lines": line_errors_listed }));
            (ErrorCode::PartialWrite.status().as_u16(), error.body())
        } else {
            (200u16, json!({ "rows": written, "partitions": partitions }))
        };
        let idempotency = request
            .idempotency_key
            .clone()
            .map(|key| (key, IdempotencyRecord { request_sha256, status, response: response_body.to_string() }));
        let mut wal_parts = Vec::with_capacity(writable.len());
        let mut batches: Vec<(i64, RecordBatch)> = Vec::with_capacity(writable.len());
        for (part, ipc, handle) in writable {
            wal_parts.push((handle.id, ipc));
            batches.push((handle.id, part.batch));
        }
        let dataset_id = dataset.record.id;
        let entry = WalEntry { dataset_id, idempotency: idempotency.clone(), parts: wal_parts };
        let payload = entry.encode();
        let buffers = self.buffers.clone();
        let memory = self.idempotency.clone();
        let apply = Box::new(move |seq: u64| {
            for (partition_id, batch) in batches {
                buffers.insert(dataset_id, partition_id, seq, batch);
            }
            if let Some((key, record)) = idempotency {
                memory.lock().unwrap_or_else(|p| p.into_inner()).recent.insert((dataset_id, key), (seq, record));
            }
        });
        self.wal.append(payload, apply).await.map_err(|e| {
            if e.is_disk_full() {
                Failure::new(ErrorCode::StorageFull, format!("write-ahead log: {e}"))
            } else {
                Failure::from(e)
            }
        })?;
        self.counters.rows_written.fetch_add(written as u64, Ordering::Relaxed);
        self.counters.rows_refused_sealed.fetch_add(refused_rows as u64, Ordering::Relaxed);
        self.counters.records_rejected.fetch_add(rejected as u64, Ordering::Relaxed);
        Ok(WriteResponse { status, body: response_body, replayed: false })
    }

    async fn evolve_schema(
        &self,
        dataset: &Arc<DatasetState>,
        parsed: &ParsedBatch,
    ) -> Result<Arc<DatasetSchema>, Failure> {
        let conflict = |e: crate::schema::SchemaConflict| {
            let mut detail = json!({ "column": e.column() });
            if let Some(other) = e.other_column() {
                detail["conflicts_with"] = json!(other);
            }
            Failure::new(ErrorCode::SchemaConflict, format!("{e}; nothing was written")).with_detail(detail)
        };
        let current = dataset.schema();
        if current.evolve(&parsed.columns).map_err(conflict)?.is_none() {
            return Ok(current);
        }
        let _guard = dataset.evolve.lock().await;
        let current = dataset.schema();
        let Some(next) = current.evolve(&parsed.columns).map_err(conflict)? else {
            return Ok(current);
        };
        if next.columns.len() > self.config.limits.columns_per_dataset_max {
            return Err(Failure::new(
                ErrorCode::LimitExceeded,
                format!(
                    "dataset would have {} columns; at most {} are allowed (limits.columns_per_dataset_max)",
                    next.columns.len(),
                    self.config.limits.columns_per_dataset_max
                ),
            ));
        }
        let catalog = self.catalog.clone();
        let dataset_id = dataset.record.id;
        let next = Arc::new(next);
        let saved = next.clone();
        blocking(move || catalog.save_schema(dataset_id, &saved, now_ns())).await??;
        *dataset.schema.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        tracing::info!(dataset = %dataset.name, version = next.version, columns = next.columns.len(), "schema evolved");
        Ok(next)
    }

    async fn partition_handle(
        &self,
        dataset: &Arc<DatasetState>,
        bucket: &Bucket,
        key: &str,
    ) -> Result<PartitionHandle, Failure> {
        let cache_key = (bucket.label.clone(), key.to_string());
        if let Some(handle) = dataset.partitions.lock().unwrap_or_else(|p| p.into_inner()).get(&cache_key) {
            return Ok(handle.clone());
        }
        let catalog = self.catalog.clone();
        let (dataset_id, owned_bucket, owned_key) = (dataset.record.id, bucket.clone(), key.to_string());
        let record = blocking(move || catalog.partition(dataset_id, &owned_bucket, &owned_key, now_ns())).await??;
        let handle =
            PartitionHandle { id: record.id, read_only: record.read_only, key_field: record.key_field.map(Arc::from) };
        dataset.partitions.lock().unwrap_or_else(|p| p.into_inner()).insert(cache_key, handle.clone());
        Ok(handle)
    }

    /// Records in the catalog how the rows about to be written into `part`
    /// are keyed (`key_field`: a field name, or "" for anything else), and
    /// caches the partition's resulting keying in `handle`.
    async fn note_key_field(
        &self,
        dataset: &Arc<DatasetState>,
        part: &ingest::PartitionRows,
        handle: &mut PartitionHandle,
        key_field: &str,
    ) -> Result<(), Failure> {
        let catalog = self.catalog.clone();
        let (id, owned) = (handle.id, key_field.to_string());
        let now = blocking(move || catalog.note_key_field(id, &owned)).await??;
        handle.key_field = Some(Arc::from(now));
        let cache_key = (part.bucket.label.clone(), part.key.clone());
        if let Some(cached) = dataset.partitions.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&cache_key) {
            cached.key_field = handle.key_field.clone();
        }
        Ok(())
    }

    /// Runs the dataset's partitioner over `parsed` (one call, off the async
    /// runtime) and returns the rows that got a key, with their keys.
    ///
    /// A failed call (trap, limit, invalid key) refuses the request. Records
    /// the partitioner rejects refuse it too — except in a line-protocol
    /// request with `accept_partial`, where their lines are dropped and
    /// reported in `line_errors` like lines that do not parse, as long as
    /// some line is left.
    async fn partition_keys(
        &self,
        partitioner: &BoundPartitioner,
        dataset: &Arc<DatasetState>,
        parsed: ParsedBatch,
        request: &WriteRequest,
        line_errors: &mut Vec<LineError>,
    ) -> Result<(ParsedBatch, Vec<String>), Failure> {
        let policies = self.policies.get().cloned().expect("checked by write");
        let (bound, time_column) = (partitioner.clone(), dataset.record.time_column.clone());
        let (parsed, results) = blocking(move || {
            let results = policies.partition_batch(&bound, &parsed, &time_column);
            (parsed, results)
        })
        .await?;
        let name = partitioner.name();
        let results = results.map_err(|error| {
            let error = Failure::from(error);
            Failure::new(
                error.code,
                format!("the partitioner failed, nothing of this request was written: {}", error.message),
            )
            .with_detail(json!({ "policy": name }))
        })?;
        let rejected: Vec<(usize, &str)> = results
            .iter()
            .enumerate()
            .filter_map(|(row, result)| result.as_ref().err().map(|m| (row, m.as_str())))
            .collect();
        if rejected.is_empty() {
            let keys = results.into_iter().map(|key| key.expect("no rejected record")).collect();
            return Ok((parsed, keys));
        }

        let line_protocol = request.format == Format::LineProtocol;
        if line_protocol {
            let numbers: Vec<usize> = rejected.iter().map(|(row, _)| parsed.record_number(*row)).collect();
            let texts = line_texts(&request.body, &numbers);
            for ((number, (_, message)), text) in numbers.iter().zip(&rejected).zip(texts) {
                line_errors.push(LineError {
                    line_number: *number,
                    original_line: text,
                    error_message: format!("partitioner {name}: {message}"),
                });
            }
            line_errors.sort_by_key(|error| error.line_number);
        }
        if !(line_protocol && request.accept_partial) || rejected.len() == parsed.rows() {
            let count = rejected.len();
            let (first_row, first_message) = rejected[0];
            let first = parsed.record_number(first_row);
            let unit = if line_protocol { "line" } else { "record" };
            let detail = if line_protocol {
                json!({ "policy": name, "lines": &line_errors[..line_errors.len().min(LINE_ERRORS_LISTED_MAX)] })
            } else {
                let records: Vec<Json> = rejected
                    .iter()
                    .take(LINE_ERRORS_LISTED_MAX)
                    .map(|(row, message)| json!({ "record": parsed.record_number(*row), "error_message": message }))
                    .collect();
                json!({ "policy": name, "records": records })
            };
            return Err(Failure::new(
                ErrorCode::PolicyFailed,
                format!(
                    "partitioner {name} could not key {count} {unit}(s) ({unit} {first}: {first_message}); nothing was written"
                ),
            )
            .with_detail(detail));
        }
        let keep: Vec<bool> = results.iter().map(Result::is_ok).collect();
        let keys = results.into_iter().filter_map(Result::ok).collect();
        Ok((parsed.retain_rows(&keep), keys))
    }

    /// Gives the write path the policy runtime (the partitioners). Until
    /// this is called, writes answer 503 `not_ready`.
    pub fn attach_policies(&self, policies: Arc<PolicyRuntime>) {
        let _ = self.policies.set(policies);
    }

    /// Seals (or unseals) a partition: a sealed partition refuses writes with
    /// `partition_read_only`. Only a hot partition without an archive may
    /// be unsealed (409 `partition_not_hot` otherwise): the next flush
    /// writes to the hot target, and an archive would no longer hold
    /// every row. The caller keeps lifecycle runs out meanwhile (see
    /// `Lifecycle::unseal`), so the tier cannot change under the check.
    pub async fn set_read_only(
        &self,
        dataset: &Arc<DatasetState>,
        label: &str,
        key: &str,
        read_only: bool,
    ) -> Result<PartitionRecord, Failure> {
        let partition = self.find_partition(dataset, label, key).await?;
        if !read_only && (partition.tier != Tier::Hot || partition.archived) {
            let id = partition_label(&dataset.name, label, key);
            let why = if partition.archived {
                "it has an archive copy".to_string()
            } else {
                format!("it is {}", partition.tier)
            };
            return Err(Failure::new(
                ErrorCode::PartitionNotHot,
                format!(
                    "partition {id} cannot be unsealed: {why}; only hot partitions without an archive accept writes"
                ),
            )
            .with_detail(json!({ "partition": id, "tier": partition.tier })));
        }
        self.mark_read_only(dataset, std::slice::from_ref(&partition), read_only).await?;
        Ok(PartitionRecord { read_only, ..partition })
    }

    /// Seals partitions of `dataset` (read-only: writes into them get 409)
    /// in one catalog transaction, each with its audit event.
    pub async fn seal(&self, dataset: &Arc<DatasetState>, partitions: &[PartitionRecord]) -> Result<(), Failure> {
        self.mark_read_only(dataset, partitions, true).await
    }

    /// Sets partitions' read-only flag in the catalog (one transaction, an
    /// audit event each) and in the write path's handles, holding the
    /// dataset's `sealing` lock exclusively so no write is between its
    /// check and its buffers meanwhile.
    async fn mark_read_only(
        &self,
        dataset: &Arc<DatasetState>,
        partitions: &[PartitionRecord],
        read_only: bool,
    ) -> Result<(), Failure> {
        if partitions.is_empty() {
            return Ok(());
        }
        let _sealing = dataset.sealing.write().await;
        let catalog = self.catalog.clone();
        let labelled: Vec<(i64, String)> =
            partitions.iter().map(|p| (p.id, partition_label(&dataset.name, &p.period_label, &p.key))).collect();
        let name = dataset.name.to_string();
        blocking(move || catalog.set_read_only(&name, &labelled, read_only, now_ns())).await??;
        let mut handles = dataset.partitions.lock().unwrap_or_else(|p| p.into_inner());
        for partition in partitions {
            handles
                .entry((partition.period_label.clone(), partition.key.clone()))
                .and_modify(|handle| handle.read_only = read_only)
                .or_insert(PartitionHandle {
                    id: partition.id,
                    read_only,
                    key_field: partition.key_field.as_deref().map(Arc::from),
                });
        }
        Ok(())
    }

    async fn find_partition(
        &self,
        dataset: &Arc<DatasetState>,
        label: &str,
        key: &str,
    ) -> Result<PartitionRecord, Failure> {
        let catalog = self.catalog.clone();
        let dataset_id = dataset.record.id;
        let partitions = blocking(move || catalog.partitions(dataset_id)).await??;
        partitions.into_iter().find(|p| p.period_label == label && p.key == key).ok_or_else(|| {
            Failure::new(ErrorCode::NotFound, format!("no partition {}", partition_label(&dataset.name, label, key)))
        })
    }

    /// Flushes due partitions (by size and age, or everything) and truncates
    /// the WAL. Returns how many partitions were flushed.
    pub async fn flush(self: &Arc<Self>, everything: bool) -> Result<usize, Failure> {
        let _guard = self.flush_lock.lock().await;
        let ingest = &self.config.ingest;
        let mut due = self.buffers.due(ingest.flush_bytes, Duration::from_millis(ingest.flush_age_ms), everything);
        // Under memory pressure, relieve the largest partitions first.
        let high_water = self.config.limits.buffer_bytes_max / 2;
        if due.is_empty() && self.buffers.bytes() > high_water {
            due = self.buffers.largest(self.buffers.bytes() - high_water);
        }
        let mut flushed = 0;
        let mut first_error = None;
        for partition_id in due {
            let store = self.clone();
            match blocking(move || store.flush_partition(partition_id)).await? {
                Ok(true) => flushed += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(partition_id, %error, "flush failed; rows stay buffered and in the WAL");
                    first_error.get_or_insert(error);
                }
            }
        }
        let store = self.clone();
        blocking(move || store.truncate_wal()).await??;
        match first_error {
            Some(error) if flushed == 0 => Err(error),
            _ => Ok(flushed),
        }
    }

    fn flush_partition(&self, partition_id: i64) -> Result<bool, Failure> {
        let Some(snapshot) = self.buffers.begin_flush(partition_id) else { return Ok(false) };
        let mut written: Option<ObjectKey> = None;
        let result = self.flush_snapshot(partition_id, &snapshot, &mut written);
        match result {
            Ok(()) => Ok(true),
            Err(error) => {
                self.buffers.abort_flush(partition_id);
                if let Some(key) = written {
                    // Never committed, so unreferenced: safe to remove now.
                    let _ = self.hot.delete(&key);
                }
                Err(error)
            }
        }
    }

    fn flush_snapshot(
        &self,
        partition_id: i64,
        snapshot: &crate::buffer::FlushSnapshot,
        written: &mut Option<ObjectKey>,
    ) -> Result<(), Failure> {
        let dataset = self.datasets().into_iter().find(|d| d.record.id == snapshot.dataset_id).ok_or_else(|| {
            Failure::new(ErrorCode::Internal, format!("flush of unknown dataset {}", snapshot.dataset_id))
        })?;
        let schema = dataset.schema();
        let ingest = &self.config.ingest;
        let file = parquet_file::encode(&snapshot.batches, &schema, ingest.row_group_rows_max, ingest.zstd_level)
            .map_err(|e| internal("encode Parquet")(Box::new(e)))?;
        let file_name = format!("{:020}-{:016x}", snapshot.max_seq, rand::random::<u64>());
        let key = ObjectKey::data_file(snapshot.dataset_id, partition_id, &file_name);
        self.hot.put(&key, &file.bytes)?;
        *written = Some(key.clone());
        crate::failpoint::hit("flush.after_file_write");
        // Pair assertion across the IO: what storage holds is what we encoded.
        let stored = self.hot.get(&key)?;
        parquet_file::verify(&stored, file.rows, file.checksum_crc32c)
            .map_err(|e| internal("verify flushed file")(Box::new(e)))?;
        let new_file = NewFile::encoded(self.hot.name(), key.to_string(), &file);
        let _visible = self.visibility.write().unwrap_or_else(|p| p.into_inner());
        self.catalog.commit_flush(partition_id, &new_file, snapshot.max_seq, now_ns())?;
        *written = None;
        crate::failpoint::hit("flush.after_commit");
        self.buffers.finish_flush(partition_id, snapshot.max_seq);
        Ok(())
    }

    /// Persists the idempotency keys of WAL entries about to be deleted, then
    /// deletes WAL segments whose rows are all in committed files.
    fn truncate_wal(&self) -> Result<(), Failure> {
        let applied = self.wal.applied_through();
        let low = self.buffers.low_watermark().unwrap_or(u64::MAX).min(applied + 1);
        let leaving: Vec<(i64, String, IdempotencyRecord)> = {
            let memory = self.idempotency.lock().unwrap_or_else(|p| p.into_inner());
            memory
                .recent
                .iter()
                .filter(|(_, (seq, _))| *seq < low)
                .map(|((dataset, key), (_, record))| (*dataset, key.clone(), record.clone()))
                .collect()
        };
        if !leaving.is_empty() {
            self.catalog.save_idempotency(&leaving, now_ns())?;
            let mut memory = self.idempotency.lock().unwrap_or_else(|p| p.into_inner());
            for (dataset, key, _) in &leaving {
                memory.recent.remove(&(*dataset, key.clone()));
            }
        }
        self.wal.remove_segments_below(low)?;
        Ok(())
    }

    /// Runs the flush loop until `shutdown` fires.
    pub async fn run_flusher(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(error) = self.flush(false).await {
                tracing::error!(%error, "flush round failed");
            }
        }
    }

    /// Flushes everything, truncates the WAL and stops the WAL writer.
    pub async fn close(self: &Arc<Self>) -> Result<(), Failure> {
        self.closed.store(true, Ordering::Release);
        let result = self.flush(true).await;
        let store = self.clone();
        blocking(move || store.wal.close()).await?;
        result.map(|_| ())
    }

    /// A snapshot of one dataset for readers: committed partitions and files
    /// plus buffered rows, taken atomically with respect to flush commits.
    pub fn snapshot(&self, dataset: &DatasetState) -> Result<DatasetSnapshot, Failure> {
        let _visible = self.visibility.read().unwrap_or_else(|p| p.into_inner());
        let partitions = self.catalog.partitions(dataset.record.id)?;
        let mut files = Vec::new();
        for partition in &partitions {
            files.push(self.catalog.files(partition.id)?);
        }
        let buffered = self.buffers.dataset_batches(dataset.record.id);
        Ok(DatasetSnapshot { partitions, files, buffered })
    }

    /// The write path's counters.
    pub fn counters(&self) -> &IngestCounters {
        &self.counters
    }

    /// Statistics of buffered rows of one partition `(rows, bytes)`.
    pub fn buffered(&self, partition_id: i64) -> (u64, u64) {
        self.buffers.partition_stats(partition_id)
    }
}

/// What a reader sees of a dataset at one instant.
#[derive(Debug)]
pub struct DatasetSnapshot {
    /// Partitions, oldest first.
    pub partitions: Vec<PartitionRecord>,
    /// Live files of each partition (same order).
    pub files: Vec<Vec<crate::catalog::FileRecord>>,
    /// Buffered rows: `(partition id, batch)`.
    pub buffered: Vec<(i64, RecordBatch)>,
}

/// The text of each line `numbers` (1-based, ascending or not) names in
/// `body`, cut to 256 bytes like a parse error's `original_line`. One pass.
fn line_texts(body: &[u8], numbers: &[usize]) -> Vec<String> {
    let wanted: HashSet<usize> = numbers.iter().copied().collect();
    let last = numbers.iter().copied().max().unwrap_or(0);
    let mut found: HashMap<usize, String> = HashMap::with_capacity(wanted.len());
    for (index, line) in body.split(|b| *b == b'\n').enumerate().take(last) {
        if wanted.contains(&(index + 1)) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            found.insert(index + 1, String::from_utf8_lossy(&line[..line.len().min(256)]).into_owned());
        }
    }
    numbers.iter().map(|number| found.get(number).cloned().unwrap_or_default()).collect()
}

fn request_digest(request: &WriteRequest) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(match request.format {
        Format::Json => b"json".as_slice(),
        Format::LineProtocol => b"lp".as_slice(),
    });
    hasher.update(request.precision.nanos_per_unit().to_le_bytes());
    hasher.update([u8::from(request.accept_partial)]);
    hasher.update(&request.body);
    hasher.finalize().into()
}

fn replay_record(record: &IdempotencyRecord, digest: &[u8; 32]) -> Result<WriteResponse, Failure> {
    if record.request_sha256 != *digest {
        return Err(Failure::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used with a different request body",
        ));
    }
    let body = serde_json::from_str(&record.response).unwrap_or(Json::Null);
    Ok(WriteResponse { status: record.status, body, replayed: true })
}
