//! The write path, as its steps: admit the request → idempotency lookup →
//! parse → key the rows (partitioner) → evolve the schema → route into
//! partitions → check seals (`late_rows`) → note how partitions are keyed →
//! the outcome and its idempotency record → WAL append, whose `apply` puts
//! the rows in the buffers → answer.
//!
//! The request is all or nothing per line: a refusal at any step before the
//! WAL append writes nothing. The dataset's `sealing` lock is held shared
//! from the seal check until `apply` has buffered the rows (see `seal.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::UInt32Array;
use arrow::record_batch::RecordBatch;

use bytes::Bytes;
use serde_json::{Value as Json, json};

use super::idempotency::{Claim, check_key_shape, request_digest};
use super::keys::Keyed;
use super::outcome::{WriteAnswer, WriteOutcome};
use super::{DatasetState, PartitionHandle, Store, on_blocking_pool};
use crate::buffer::{PackedBatch, SHARED_PART_ROWS_MAX};
use crate::catalog::IdempotencyRecord;
use crate::config::LateRows;
use crate::error::{ErrorCode, Failure};
use crate::facts::is_valid_partition_key;
use crate::ingest::batch::{BatchBuilder, ParsedBatch};
use crate::ingest::line_protocol::{self, LineError};
use crate::ingest::{self, IngestLimits, PartitionRows, Precision, Routed};
use crate::names::{DatasetName, partition_label};
use crate::period::{Bucket, Periods};
use crate::policy::PolicyRuntime;
use crate::schema::{DatasetSchema, SchemaConflict};
use crate::sync::{Recover as _, RecoverRw as _};
use crate::time::now_ns;
use crate::wal::{LoggedRows, WalEntry, encode_batch};

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

/// The longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// Rejected lines (and refused rows) listed in an answer.
pub(super) const LINE_ERRORS_LISTED_MAX: usize = 100;

/// One partition's rows in the buffers' form: a range of a packed chunk
/// (its own, or one the request's small parts share).
struct PackedPart {
    chunk: Arc<PackedBatch>,
    /// Where the part's rows start in `chunk`.
    start: usize,
}

/// One partition's rows, ready for the WAL.
struct WritablePart {
    part: PartitionRows,
    packed: PackedPart,
    handle: PartitionHandle,
}

/// The rows refused because their partitions are sealed.
struct SealedRows {
    /// Per sealed partition: its label and the parsed batch's row indexes.
    parts: Vec<(String, Vec<u32>)>,
    /// The body's record number of each parsed row (empty: row `i` is `i + 1`).
    record_numbers: Vec<u32>,
    /// `line_number` (line protocol) or `record` (JSON).
    row_field: &'static str,
}

impl SealedRows {
    fn rows(&self) -> usize {
        self.parts.iter().map(|(_, rows)| rows.len()).sum()
    }

    fn labels(&self) -> Vec<&str> {
        self.parts.iter().map(|(label, _)| label.as_str()).collect()
    }

    /// The first refused rows by record number, each with its partition.
    fn listed(&self) -> Vec<Json> {
        let number_of = |row: u32| self.record_numbers.get(row as usize).map_or(row as usize + 1, |n| *n as usize);
        let mut listed: Vec<(usize, &str)> = self
            .parts
            .iter()
            .flat_map(|(label, rows)| rows.iter().map(move |row| (number_of(*row), label.as_str())))
            .collect();
        listed.sort_unstable();
        listed.truncate(LINE_ERRORS_LISTED_MAX);
        listed.into_iter().map(|(number, label)| json!({ self.row_field: number, "partition": label })).collect()
    }
}

impl Store {
    /// Writes one request. Returns once the rows are durable.
    pub async fn write(self: &Arc<Self>, request: WriteRequest) -> Result<WriteAnswer, Failure> {
        let (name, policies) = self.admit(&request)?;
        let dataset = self.dataset_or_create(&name).await?;
        let request_sha256 = request_digest(&request);
        let _in_flight = match self.claim_idempotency_key(&dataset, &request, &request_sha256).await? {
            Claim::Replay(answer) => return Ok(answer),
            Claim::Proceed(in_flight) => in_flight,
        };
        let (parsed, mut line_errors) = self.parse(&dataset, &request).await?;
        if parsed.rows() == 0 {
            return Ok(WriteAnswer { outcome: WriteOutcome::Written { rows: 0, partitions: 0 }, replayed: false });
        }
        let Keyed { mut parsed, keys, key_field } =
            self.key_rows(&policies, &dataset, parsed, &request, &mut line_errors).await?;
        let record_numbers = std::mem::take(&mut parsed.record_numbers);
        let schema = self.evolve_schema(&dataset, &parsed).await?;
        let rows = parsed.rows();
        let (grouped, parts) = route_and_pack(parsed, schema, dataset.periods(), keys).await?;

        let late_rows = self.late_rows(&dataset);
        let _not_sealing = dataset.sealing.read().await;
        dataset.refuse_if_deleted()?;
        let (mut writable, sealed) = self.check_seals(&dataset, parts, rows, late_rows, &key_field).await?;
        if let Some(delay) = crate::failpoint::delay("ingest.after_seal_check") {
            tokio::time::sleep(delay).await;
        }
        let row_field = if request.format == Format::LineProtocol { "line_number" } else { "record" };
        let sealed = SealedRows { parts: sealed, record_numbers, row_field };
        if writable.is_empty() {
            self.counters.rows_refused_sealed.fetch_add(sealed.rows() as u64, Ordering::Relaxed);
            return Err(every_row_sealed(&sealed));
        }
        self.note_key_fields(&dataset, &mut writable, &key_field).await?;

        let outcome = outcome_of(rows, writable.len(), &sealed, &line_errors);
        let idempotency = request.idempotency_key.clone().map(|key| (key, outcome.to_record(request_sha256)));
        let logged = if sealed.rows() == 0 { grouped } else { rows_of(&grouped, &writable) };
        let routed: Vec<(String, u64)> =
            writable.iter_mut().map(|w| (std::mem::take(&mut w.part.key), w.part.rows.len() as u64)).collect();
        let logged_bytes = self.append(&dataset, logged, writable, idempotency).await?;
        // The parts share one logged stream: each is counted its rows' share.
        let logged_rows = routed.iter().map(|(_, rows)| rows).sum::<u64>().max(1);
        dataset.routing.record(
            now_ns(),
            routed.iter().map(|(key, rows)| (key.as_str(), *rows, logged_bytes * rows / logged_rows)),
        );
        self.counters.rows_written.fetch_add((rows - sealed.rows()) as u64, Ordering::Relaxed);
        self.counters.rows_refused_sealed.fetch_add(sealed.rows() as u64, Ordering::Relaxed);
        self.counters.records_rejected.fetch_add(line_errors.len() as u64, Ordering::Relaxed);
        Ok(WriteAnswer { outcome, replayed: false })
    }

    /// The checks before any work: the server is open, the dataset name and
    /// idempotency key are well-formed, the buffers have room, and the
    /// policies are loaded. Returns the name and the policy runtime.
    fn admit(&self, request: &WriteRequest) -> Result<(DatasetName, Arc<PolicyRuntime>), Failure> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Failure::new(ErrorCode::NotReady, "the server is shutting down").with_retry_after(1));
        }
        let name = DatasetName::parse(&request.dataset).map_err(|m| Failure::new(ErrorCode::InvalidDatasetName, m))?;
        check_key_shape(request.idempotency_key.as_deref())?;
        if self.buffers.unpacked_bytes() >= self.config.limits.buffer_bytes_max {
            return Err(Failure::new(
                ErrorCode::BufferFull,
                format!(
                    "{} bytes are waiting to be flushed (limits.buffer_bytes_max); retry shortly",
                    self.buffers.unpacked_bytes()
                ),
            )
            .with_retry_after(1));
        }
        // Until the policies are loaded nobody knows how a dataset's records
        // are keyed, so writes wait (503, like WAL replay at start-up).
        let policies = self.policies.get().cloned().ok_or_else(|| {
            Failure::new(ErrorCode::NotReady, "the server is still loading its policies").with_retry_after(1)
        })?;
        Ok((name, policies))
    }

    /// Parses the body off the async runtime. Returns the rows and the
    /// lines that did not parse, or refuses the request when it may not
    /// lose them (`accept_partial=false`, or no line is left).
    async fn parse(
        &self,
        dataset: &DatasetState,
        request: &WriteRequest,
    ) -> Result<(ParsedBatch, Vec<LineError>), Failure> {
        let schema = dataset.schema();
        let limits = self.config.limits.ingest();
        let (format, precision, body) = (request.format, request.precision, request.body.clone());
        let (parsed, line_errors) =
            on_blocking_pool(move || parse_body(&body, format, precision, &schema, &limits)).await??;
        let parse_rejected = line_errors.len();
        if parse_rejected > 0 && (!request.accept_partial || parsed.rows() == 0) {
            return Err(Failure::new(
                ErrorCode::InvalidLineProtocol,
                format!("{parse_rejected} line(s) could not be parsed; nothing was written"),
            )
            .with_detail(json!({ "lines": &line_errors[..parse_rejected.min(LINE_ERRORS_LISTED_MAX)] })));
        }
        Ok((parsed, line_errors))
    }

    /// Adds the request's new columns to the dataset's schema (saved in the
    /// catalog first), or refuses a conflicting type.
    async fn evolve_schema(
        &self,
        dataset: &Arc<DatasetState>,
        parsed: &ParsedBatch,
    ) -> Result<Arc<DatasetSchema>, Failure> {
        let current = dataset.schema();
        if current.evolve(&parsed.columns).map_err(schema_conflict)?.is_none() {
            return Ok(current);
        }
        let _guard = dataset.evolve.lock().await;
        let current = dataset.schema();
        let Some(next) = current.evolve(&parsed.columns).map_err(schema_conflict)? else {
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
        let dataset_id = dataset.record.id;
        let next = Arc::new(next);
        let saved = next.clone();
        self.catalog.call(move |c| c.save_schema(dataset_id, &saved, now_ns())).await?;
        *dataset.schema.write_or_recover() = next.clone();
        tracing::info!(dataset = %dataset.name, version = next.version, columns = next.columns.len(), "schema evolved");
        Ok(next)
    }

    /// Splits the routed parts by their partitions' seal flags: writable
    /// ones, and the sealed ones' labels and rows. A sealed partition
    /// refuses the whole request unless `late_rows = "refuse_rows"`.
    async fn check_seals(
        &self,
        dataset: &Arc<DatasetState>,
        parts: Vec<(PartitionRows, PackedPart)>,
        rows: usize,
        late_rows: LateRows,
        key_field: &str,
    ) -> Result<(Vec<WritablePart>, Vec<(String, Vec<u32>)>), Failure> {
        let mut writable = Vec::with_capacity(parts.len());
        let mut sealed = Vec::new();
        if let Some((part, _)) = parts.iter().find(|(part, _)| !is_valid_partition_key(&part.key)) {
            // The runtime checked every key; this is the pair assertion
            // before a key reaches the catalog, ids and URLs.
            return Err(Failure::new(ErrorCode::Internal, format!("refusing invalid partition key {:?}", part.key)));
        }
        let handles = self.partition_handles(dataset, &parts, key_field).await?;
        for ((part, packed), handle) in parts.into_iter().zip(handles) {
            if !handle.read_only {
                writable.push(WritablePart { part, packed, handle });
                continue;
            }
            let label = partition_label(&dataset.name, &part.bucket.label, &part.key);
            if late_rows == LateRows::RefuseRequest {
                self.counters.rows_refused_sealed.fetch_add(rows as u64, Ordering::Relaxed);
                return Err(Failure::new(
                    ErrorCode::PartitionReadOnly,
                    format!("partition {label} is sealed and accepts no writes; nothing of this request was written"),
                )
                .with_detail(json!({ "partition": label })));
            }
            sealed.push((label, part.rows));
        }
        Ok((writable, sealed))
    }

    /// The handle of each part's partition: from the dataset's cache, and
    /// those missing from the catalog in one call (one transaction creates
    /// every new partition of the request, keyed by `key_field`).
    async fn partition_handles(
        &self,
        dataset: &Arc<DatasetState>,
        parts: &[(PartitionRows, PackedPart)],
        key_field: &str,
    ) -> Result<Vec<PartitionHandle>, Failure> {
        let mut handles: Vec<Option<PartitionHandle>> = Vec::with_capacity(parts.len());
        let mut missing: Vec<(Bucket, String)> = Vec::new();
        {
            let cache = dataset.partitions.lock_or_recover();
            for (part, _) in parts {
                let handle = cache.get(&part.bucket.label, &part.key).cloned();
                if handle.is_none() {
                    missing.push((part.bucket.clone(), part.key.clone()));
                }
                handles.push(handle);
            }
        }
        if !missing.is_empty() {
            let dataset_id = dataset.record.id;
            let key_field = key_field.to_string();
            let records =
                self.catalog.call(move |c| c.partitions_for(dataset_id, &missing, &key_field, now_ns())).await?;
            let mut cache = dataset.partitions.lock_or_recover();
            let mut records = records.into_iter();
            for slot in handles.iter_mut().filter(|h| h.is_none()) {
                let record = records.next().expect("one record per missing partition");
                let handle = PartitionHandle {
                    id: record.id,
                    read_only: record.read_only,
                    key_field: record.key_field.map(Arc::from),
                };
                cache.insert(&record.period_label, &record.key, handle.clone());
                *slot = Some(handle);
            }
        }
        Ok(handles.into_iter().map(|h| h.expect("every handle found")).collect())
    }

    /// Records in the catalog how the rows about to be written into each
    /// part are keyed (`key_field`: a field name, or "" for anything else),
    /// where it differs from what the partition's handle last saw.
    async fn note_key_fields(
        &self,
        dataset: &Arc<DatasetState>,
        writable: &mut [WritablePart],
        key_field: &str,
    ) -> Result<(), Failure> {
        let stale: Vec<usize> =
            (0..writable.len()).filter(|i| writable[*i].handle.key_field.as_deref() != Some(key_field)).collect();
        if stale.is_empty() {
            return Ok(());
        }
        let (ids, owned): (Vec<i64>, String) =
            (stale.iter().map(|i| writable[*i].handle.id).collect(), key_field.into());
        let now = self.catalog.call(move |c| c.note_key_fields(&ids, &owned)).await?;
        let mut cache = dataset.partitions.lock_or_recover();
        for (i, now) in stale.into_iter().zip(now) {
            let WritablePart { part, handle, .. } = &mut writable[i];
            handle.key_field = Some(Arc::from(now));
            if let Some(cached) = cache.get_mut(&part.bucket.label, &part.key) {
                cached.key_field = handle.key_field.clone();
            }
        }
        Ok(())
    }

    /// Logs the parts (and the idempotency record) and waits for the fsync;
    /// the WAL writer then runs `apply`, in sequence order, which puts the
    /// rows in the buffers and the record in memory. `logged` holds the
    /// writable parts' rows, part after part. Returns the size of the logged
    /// rows' Arrow IPC stream.
    async fn append(
        &self,
        dataset: &DatasetState,
        logged: RecordBatch,
        writable: Vec<WritablePart>,
        idempotency: Option<(String, IdempotencyRecord)>,
    ) -> Result<u64, Failure> {
        let parts: Vec<(i64, u32)> = writable.iter().map(|w| (w.handle.id, w.part.rows.len() as u32)).collect();
        let packed: Vec<(i64, Arc<PackedBatch>, usize, usize)> = writable
            .into_iter()
            .map(|WritablePart { part, packed, handle }| (handle.id, packed.chunk, packed.start, part.rows.len()))
            .collect();
        let ipc = on_blocking_pool(move || encode_batch(&logged)).await?;
        let logged_bytes = ipc.len() as u64;
        let dataset_id = dataset.record.id;
        let rows = LoggedRows::Shared { parts, ipc };
        let payload = WalEntry { dataset_id, idempotency: idempotency.clone(), rows }.encode();
        let buffers = self.buffers.clone();
        let memory = self.idempotency.clone();
        let apply = Box::new(move |seq: u64| {
            buffers.insert_ranges(dataset_id, seq, packed);
            if let Some((key, record)) = idempotency {
                memory.lock_or_recover().recent.insert((dataset_id, key), (seq, record));
            }
        });
        self.wal.append(payload, apply).await.map_err(|e| {
            if e.is_disk_full() {
                Failure::new(ErrorCode::StorageFull, format!("write-ahead log: {e}"))
            } else {
                Failure::from(e)
            }
        })?;
        Ok(logged_bytes)
    }
}

/// The writable parts' rows of `grouped`, part after part: the WAL's
/// [`LoggedRows::Shared`] stream when some parts were refused as sealed.
fn rows_of(grouped: &RecordBatch, writable: &[WritablePart]) -> RecordBatch {
    let rows = writable.iter().flat_map(|w| w.part.range()).map(|row| row as u32);
    ingest::take_batch(grouped, &UInt32Array::from_iter_values(rows))
}

/// Parses `body` into Arrow columns against `schema`. Returns the rows and
/// the lines (line protocol only) that did not parse.
fn parse_body(
    body: &[u8],
    format: Format,
    precision: Precision,
    schema: &DatasetSchema,
    limits: &IngestLimits,
) -> Result<(ParsedBatch, Vec<LineError>), Failure> {
    let expected_rows = match format {
        Format::LineProtocol => memchr::memchr_iter(b'\n', body).count() + 1,
        Format::Json => 0,
    };
    let mut builder = BatchBuilder::with_capacity(schema, limits.columns_per_dataset_max, expected_rows);
    let now = now_ns();
    let errors = match format {
        Format::Json => {
            ingest::json::parse(body, precision, now, limits, &mut builder)?;
            Vec::new()
        }
        Format::LineProtocol => line_protocol::parse(body, precision, now, limits, &mut builder)?,
    };
    Ok((builder.finish(), errors))
}

fn schema_conflict(error: SchemaConflict) -> Failure {
    let mut detail = json!({ "column": error.column() });
    if let Some(other) = error.other_column() {
        detail["conflicts_with"] = json!(other);
    }
    let code = match error {
        SchemaConflict::Renamed { .. } => ErrorCode::ColumnRenamed,
        _ => ErrorCode::SchemaConflict,
    };
    Failure::new(code, format!("{error}; nothing was written")).with_detail(detail)
}

/// Groups the rows by partition and packs them for the buffers, off the
/// async runtime. Returns every row, part after part (the WAL's form), and
/// each part with its packed rows.
async fn route_and_pack(
    parsed: ParsedBatch,
    schema: Arc<DatasetSchema>,
    period: Periods,
    keys: Option<Vec<String>>,
) -> Result<(RecordBatch, Vec<(PartitionRows, PackedPart)>), Failure> {
    on_blocking_pool(move || {
        let routed = ingest::route(parsed, &schema, period, keys.as_deref());
        let packed = pack_parts(&routed);
        (routed.batch, routed.parts.into_iter().zip(packed).collect())
    })
    .await
}

/// The buffers' form of each part. A part of [`SHARED_PART_ROWS_MAX`] rows
/// or more is packed alone; the smaller ones, which come last (parts come
/// largest first), share one chunk, so a request into thousands of
/// partitions packs a few chunks rather than one per partition.
fn pack_parts(routed: &Routed) -> Vec<PackedPart> {
    let parts = &routed.parts;
    if let [_] = parts.as_slice() {
        return vec![PackedPart { chunk: Arc::new(PackedBatch::pack(&routed.batch)), start: 0 }];
    }
    let alone = parts.partition_point(|p| p.rows.len() >= SHARED_PART_ROWS_MAX);
    let mut packed: Vec<PackedPart> = parts[..alone]
        .iter()
        .map(|part| PackedPart { chunk: Arc::new(PackedBatch::pack(&routed.part_batch(part))), start: 0 })
        .collect();
    if let Some(first) = parts.get(alone) {
        let tail = first.offset..routed.batch.num_rows();
        let rows = UInt32Array::from_iter_values(tail.start as u32..tail.end as u32);
        let chunk = Arc::new(PackedBatch::pack(&ingest::take_rows(&routed.batch, &rows)));
        packed.extend(
            parts[alone..].iter().map(|part| PackedPart { chunk: chunk.clone(), start: part.offset - tail.start }),
        );
    }
    packed
}

/// The refusal of a request whose every row is for a sealed partition.
fn every_row_sealed(sealed: &SealedRows) -> Failure {
    let labels = sealed.labels();
    Failure::new(
        ErrorCode::PartitionReadOnly,
        format!("every row of this request is for a sealed partition ({}); nothing was written", labels.join(", ")),
    )
    .with_detail(json!({
        "partition": labels[0],
        "partitions": labels,
        "refused_rows": sealed.rows(),
        "refused": sealed.listed(),
    }))
}

/// What a write that reaches the WAL did: everything written, or the rest
/// after refused late rows, or after rejected lines.
fn outcome_of(rows: usize, partitions: usize, sealed: &SealedRows, line_errors: &[LineError]) -> WriteOutcome {
    let refused_rows = sealed.rows();
    let written = rows - refused_rows;
    let rejected = line_errors.len();
    let lines_listed = &line_errors[..rejected.min(LINE_ERRORS_LISTED_MAX)];
    if refused_rows > 0 {
        let labels = sealed.labels();
        let mut detail = json!({
            "rows": written,
            "partitions": partitions,
            "refused_rows": refused_rows,
            "refused": sealed.listed(),
            "sealed_partitions": labels,
        });
        if rejected > 0 {
            detail["lines"] = json!(lines_listed);
        }
        let message = format!(
            "{written} row(s) written, {refused_rows} refused: sealed partition(s) {} accept no writes",
            labels.join(", ")
        );
        WriteOutcome::LateRowsRefused(Failure::new(ErrorCode::LateRowsRefused, message).with_detail(detail))
    } else if rejected > 0 {
        let failure = Failure::new(ErrorCode::PartialWrite, format!("{written} line(s) written, {rejected} rejected"))
            .with_detail(json!({ "rows": written, "lines": lines_listed }));
        WriteOutcome::PartialWrite(failure)
    } else {
        WriteOutcome::Written { rows: written as u64, partitions: partitions as u64 }
    }
}
