//! `strata import FILE… --dataset DS`: files streamed to the server in
//! batches over a few keep-alive connections.
//!
//! Every batch is sent with an `Idempotency-Key` derived from the file's
//! identity (its size and first and last 64 KiB, with the format and
//! precision) and the batch's start, so sending a batch twice — a retry
//! after a lost answer, or an import run again — writes it once: the server
//! answers the second time with the first answer (`Idempotent-Replayed`).
//! A state file (`--state-dir`, else `$XDG_STATE_HOME/strata/import` or
//! `~/.local/state/strata/import`) records where the acknowledged prefix
//! of the file ends; `--resume` continues after it, cutting the rest into
//! the same batches. Rows the server rejects are reported as `FILE:LINE:
//! message` and left out; the rest of their batch is written.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, mpsc};

use super::client::{Answer, CliError, Client, Connection, Remote, encode, runtime, server_error};
use super::import_progress::Progress;
use super::import_read::{Batch, Cut, ImportFormat, Position, Reader, parquet_rows};

/// Arguments of `strata import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The files (line protocol, CSV with a header, NDJSON or Parquet).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The dataset to write into.
    #[arg(long)]
    pub dataset: String,
    /// The files' format (default: from each file's extension).
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// Unit of epoch timestamps in the files: ns, us, ms or s (Parquet
    /// timestamps carry their own).
    #[arg(long, default_value = "ns")]
    pub precision: String,
    /// Rows per request.
    #[arg(long, default_value_t = 5_000)]
    pub batch_rows: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Continue an interrupted import after its last acknowledged batch.
    #[arg(long)]
    pub resume: bool,
    /// Where the import state files are kept.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Attempts per batch when the connection breaks or the server is busy.
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
    /// No progress on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// The server and token.
    #[command(flatten)]
    pub remote: Remote,
}

/// A batch closes early past this many bytes (the server's default body
/// limit is 32 MiB).
const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Rows per batch the server accepts by default at most.
const BATCH_ROWS_MAX: usize = 100_000;

/// What an import records in its state file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ImportState {
    file: String,
    dataset: String,
    file_id: String,
    batch_rows: usize,
    /// The end of the acknowledged prefix.
    acked: Position,
    /// The number of the first unacknowledged batch.
    next_batch: u64,
    rows_rejected: u64,
    complete: bool,
}

/// One file to import.
struct FilePlan {
    path: PathBuf,
    format: ImportFormat,
    precision: String,
    state_path: PathBuf,
    state: ImportState,
    /// Bytes (text formats) or rows (Parquet) of the whole file.
    size: u64,
}

/// What importing everything did.
#[derive(Debug, Default)]
struct Totals {
    rows_written: u64,
    rows_rejected: u64,
    batches_replayed: u64,
    bytes_sent: u64,
}

/// Runs `strata import`.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.remote)?;
    if !(1..=BATCH_ROWS_MAX).contains(&args.batch_rows) {
        return Err(CliError::Usage(format!("--batch-rows must be within 1..={BATCH_ROWS_MAX}")).into());
    }
    if !(1..=64).contains(&args.connections) {
        return Err(CliError::Usage("--connections must be within 1..=64".into()).into());
    }
    if !["ns", "us", "ms", "s"].contains(&args.precision.as_str()) {
        return Err(CliError::Usage(format!("--precision {:?} must be ns, us, ms or s", args.precision)).into());
    }
    let state_dir = state_dir(args.state_dir.as_deref())?;
    let mut plans = Vec::new();
    for path in &args.files {
        plans.push(plan(path, &args, &state_dir)?);
    }
    let bytes = plans.iter().all(|p| p.format != ImportFormat::Parquet);
    let progress = Progress::new(plans.iter().map(|p| p.size).sum(), bytes, args.quiet);
    let started = Instant::now();
    let totals = runtime()?.block_on(import_all(&client, &args, plans, &progress))?;
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "imported {} rows into {} from {} file(s) in {:.2} s ({:.0} rows/s, {:.1} MB sent); {} rejected; {} batch(es) already imported",
        totals.rows_written,
        args.dataset,
        args.files.len(),
        seconds,
        totals.rows_written as f64 / seconds.max(1e-9),
        totals.bytes_sent as f64 / 1e6,
        totals.rows_rejected,
        totals.batches_replayed,
    );
    if totals.rows_rejected > 0 {
        return Err(CliError::Local(format!(
            "rows_rejected: {} row(s) were not imported (listed above)",
            totals.rows_rejected
        ))
        .into());
    }
    Ok(())
}

/// `--state-dir`, else `$XDG_STATE_HOME/strata/import`, else
/// `~/.local/state/strata/import`.
fn state_dir(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    let dir = match explicit {
        Some(dir) => dir.to_path_buf(),
        None => match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
            (Some(state), _) if !state.is_empty() => PathBuf::from(state).join("strata/import"),
            (_, Some(home)) => PathBuf::from(home).join(".local/state/strata/import"),
            _ => return Err(CliError::Usage("neither XDG_STATE_HOME nor HOME is set: pass --state-dir".into())),
        },
    };
    std::fs::create_dir_all(&dir).map_err(|e| CliError::Local(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// A file's identity: its size and its first and last 64 KiB, with how it
/// is read (format, precision), as 32 hex digits.
fn file_id(path: &Path, format: ImportFormat, precision: &str) -> Result<String, CliError> {
    use std::io::{Seek, SeekFrom};
    let error = |e: std::io::Error| CliError::Local(format!("{}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(error)?;
    let size = file.metadata().map_err(error)?.len();
    let mut hasher = Sha256::new();
    hasher.update(format!("{format:?}/{precision}/{size}/"));
    let mut window = vec![0u8; 64 * 1024];
    let read = file.read(&mut window).map_err(error)?;
    hasher.update(&window[..read]);
    file.seek(SeekFrom::Start(size.saturating_sub(window.len() as u64))).map_err(error)?;
    let read = file.read(&mut window).map_err(error)?;
    hasher.update(&window[..read]);
    Ok(hex::encode(&hasher.finalize()[..16]))
}

fn plan(path: &Path, args: &ImportArgs, state_dir: &Path) -> Result<FilePlan, CliError> {
    let format = match args.format {
        Some(format) => format,
        None => ImportFormat::of(path)?,
    };
    let precision = if format == ImportFormat::Parquet { "ns".to_string() } else { args.precision.clone() };
    let size = match format {
        ImportFormat::Parquet => parquet_rows(path)?,
        _ => std::fs::metadata(path).map_err(|e| CliError::Local(format!("{}: {e}", path.display())))?.len(),
    };
    let file_id = file_id(path, format, &precision)?;
    let state_path = state_dir.join(format!("{}-{file_id}.json", args.dataset));
    let found = std::fs::read(&state_path).ok().and_then(|bytes| serde_json::from_slice::<ImportState>(&bytes).ok());
    // The same file is always cut into the same batches, so that batches
    // sent before carry the keys they were sent with.
    let batch_rows = found.as_ref().map_or(args.batch_rows, |s| s.batch_rows);
    if batch_rows != args.batch_rows {
        eprintln!("note: {} was imported before with --batch-rows {batch_rows}; keeping it", path.display());
    }
    let fresh = ImportState {
        file: path.display().to_string(),
        dataset: args.dataset.clone(),
        file_id,
        batch_rows,
        acked: Position::default(),
        next_batch: 0,
        rows_rejected: 0,
        complete: false,
    };
    let state = match found {
        Some(found) if args.resume => found,
        Some(found) if !found.complete => {
            eprintln!(
                "note: an earlier import of {} stopped after line {}; starting over (batches already written are \
                 not written twice); --resume continues where it stopped",
                path.display(),
                found.acked.line.saturating_sub(1)
            );
            fresh
        }
        _ => fresh,
    };
    Ok(FilePlan { path: path.to_path_buf(), format, precision, state_path, state, size })
}

fn save_state(plan: &FilePlan) -> Result<(), CliError> {
    let temporary = plan.state_path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(&plan.state).unwrap_or_default();
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, &plan.state_path))
        .map_err(|e| CliError::Local(format!("{}: {e}", plan.state_path.display())))
}

async fn import_all(
    client: &Client,
    args: &ImportArgs,
    plans: Vec<FilePlan>,
    progress: &Progress,
) -> Result<Totals, CliError> {
    let mut totals = Totals::default();
    for mut plan in plans {
        if plan.state.complete {
            eprintln!("{}: already imported (state {})", plan.path.display(), plan.state_path.display());
            progress.skip(plan.size);
            continue;
        }
        if plan.state.acked.offset > 0 {
            eprintln!("{}: resuming after line {}", plan.path.display(), plan.state.acked.line.saturating_sub(1));
        }
        import_file(client, args, &mut plan, progress, &mut totals).await?;
    }
    Ok(totals)
}

/// What sending one batch did.
struct Sent {
    rows_written: u64,
    rows_rejected: u64,
    replayed: bool,
    bytes: u64,
}

/// Reads batches on a blocking thread, sends them over `connections`
/// workers and advances the state file as the acknowledged prefix grows.
async fn import_file(
    client: &Client,
    args: &ImportArgs,
    plan: &mut FilePlan,
    progress: &Progress,
    totals: &mut Totals,
) -> Result<(), CliError> {
    let cut = Cut { rows: plan.state.batch_rows, bytes: BATCH_BYTES_MAX };
    let reader = Reader::open(&plan.path, plan.format, cut, plan.state.acked, plan.state.next_batch)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (batches, receiver) = mpsc::channel::<Batch>(args.connections * 2);
    let producer = spawn_reader(reader, plan.path.clone(), batches, stop.clone());
    let receiver = Arc::new(Mutex::new(receiver));
    // Once every worker has stopped, the reader's next send fails and it ends.
    let (done, mut results) = mpsc::unbounded_channel::<(Batch, Result<Sent, CliError>)>();
    let job = Arc::new(Job {
        client: client.clone(),
        path: plan.path.clone(),
        write_path: write_path(&args.dataset, plan.format, &plan.precision),
        key_prefix: format!("strata-import/{}/{}", plan.state.file_id, plan.state.batch_rows),
        retries: args.retries,
        progress: progress.clone(),
    });
    for _ in 0..args.connections {
        let (job, receiver, done, stop) = (job.clone(), receiver.clone(), done.clone(), stop.clone());
        tokio::spawn(async move { worker(job, receiver, done, stop).await });
    }
    drop((done, receiver));
    let mut pending: BTreeMap<u64, (Position, u64)> = BTreeMap::new();
    let mut failure: Option<CliError> = None;
    while let Some((batch, result)) = results.recv().await {
        match result {
            Ok(sent) => {
                totals.rows_written += sent.rows_written;
                totals.rows_rejected += sent.rows_rejected;
                totals.bytes_sent += sent.bytes;
                totals.batches_replayed += u64::from(sent.replayed);
                pending.insert(batch.index, (batch.end, sent.rows_rejected));
                advance(plan, &mut pending)?;
                progress.advance(batch.end.offset.saturating_sub(batch.start.offset), sent.rows_written);
            }
            Err(error) if failure.is_none() => {
                stop.store(true, Ordering::Relaxed);
                let last = batch.end.line.saturating_sub(1).max(batch.start.line);
                failure = Some(CliError::Local(format!(
                    "{}:{}-{}: {error}",
                    plan.path.display(),
                    batch.start.line.max(1),
                    last
                )));
            }
            Err(_) => {}
        }
    }
    let read = producer.await.map_err(|e| CliError::Local(format!("reader: {e}")))?;
    match (failure, read) {
        (Some(error), _) | (None, Err(error)) => {
            progress.finish();
            Err(error)
        }
        (None, Ok(())) => {
            plan.state.complete = true;
            save_state(plan)
        }
    }
}

/// Moves the acknowledged prefix over every batch acknowledged in order,
/// and saves the state when it moved.
fn advance(plan: &mut FilePlan, pending: &mut BTreeMap<u64, (Position, u64)>) -> Result<(), CliError> {
    let mut moved = false;
    while let Some((end, rejected)) = pending.remove(&plan.state.next_batch) {
        plan.state.acked = end;
        plan.state.rows_rejected += rejected;
        plan.state.next_batch += 1;
        moved = true;
    }
    if moved { save_state(plan) } else { Ok(()) }
}

fn spawn_reader(
    mut reader: Reader,
    path: PathBuf,
    batches: mpsc::Sender<Batch>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<(), CliError>> {
    tokio::task::spawn_blocking(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(batch) = reader.next_batch(&path)? else { break };
            if batches.blocking_send(batch).is_err() {
                break;
            }
        }
        Ok(())
    })
}

/// The write endpoint of a format: line protocol to the InfluxDB v2 write,
/// everything else as NDJSON records.
fn write_path(dataset: &str, format: ImportFormat, precision: &str) -> String {
    match format {
        ImportFormat::Lp => format!("/api/v2/write?bucket={}&precision={precision}", encode(dataset)),
        _ => format!("/v1/datasets/{}/records?precision={precision}", encode(dataset)),
    }
}

/// What every worker of one file shares.
struct Job {
    client: Client,
    path: PathBuf,
    write_path: String,
    key_prefix: String,
    retries: u32,
    progress: Progress,
}

async fn worker(
    job: Arc<Job>,
    receiver: Arc<Mutex<mpsc::Receiver<Batch>>>,
    done: mpsc::UnboundedSender<(Batch, Result<Sent, CliError>)>,
    stop: Arc<AtomicBool>,
) {
    let mut connection: Option<Connection> = None;
    loop {
        let next = receiver.lock().await.recv().await;
        let Some(batch) = next else { return };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let result = send_batch(&job, &mut connection, &batch).await;
        if done.send((batch, result)).is_err() {
            return;
        }
    }
}

/// Sends a batch until the server has taken it: retries what may succeed
/// later with the same key, and leaves out the rows the server rejects.
async fn send_batch(job: &Job, connection: &mut Option<Connection>, batch: &Batch) -> Result<Sent, CliError> {
    let mut body = batch.body.clone();
    let mut dropped: Vec<u64> = Vec::new();
    let mut attempt = 0;
    loop {
        let key = batch_key(&job.key_prefix, batch, &dropped);
        let answer = match send_once(job, connection, &key, body.clone()).await {
            Ok(answer) => answer,
            Err(error) if error.is_retryable() && attempt < job.retries => {
                attempt += 1;
                *connection = None;
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let bytes = body.len() as u64;
        if (200..300).contains(&answer.status) {
            let json = answer.json();
            let written = json["rows"].as_u64().unwrap_or(batch.rows - dropped.len() as u64);
            let rejected = dropped.len() as u64;
            return Ok(Sent { rows_written: written, rows_rejected: rejected, replayed: answer.replayed, bytes });
        }
        let error = server_error(&answer);
        if error.is_retryable() && attempt < job.retries {
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
            continue;
        }
        let json = answer.json();
        let partial = matches!(json["error"]["code"].as_str(), Some("partial_write" | "late_rows_refused"));
        let lines = json["error"]["lines"].as_array().map(Vec::as_slice);
        if let Some(lines) = lines.or(partial.then_some(&[][..])) {
            let sent = rejected_lines(job, batch, &json["error"], lines, dropped.len() as u64, &answer);
            return Ok(Sent { bytes, ..sent });
        }
        match rejected_record(&json["error"]) {
            Some(number) if number >= 1 && !dropped.contains(&number) && dropped.len() < batch.rows as usize => {
                job.progress.message(&format!("{}:{}: {error}", job.path.display(), batch.origin(number)));
                body = blank_line(&body, number);
                dropped.push(number);
            }
            _ => return Err(error),
        }
    }
}

async fn send_once(job: &Job, connection: &mut Option<Connection>, key: &str, body: Bytes) -> Result<Answer, CliError> {
    if connection.as_ref().is_none_or(Connection::is_closed) {
        *connection = Some(job.client.connect().await?);
    }
    let headers = [("idempotency-key", key), ("content-type", "text/plain; charset=utf-8")];
    let request = job.client.request(Method::POST, &job.write_path, &headers, body)?;
    let result = connection.as_mut().expect("connected above").send(request).await;
    if result.is_err() {
        *connection = None;
    }
    result
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(6))
}

/// The batch's idempotency key: the file, the batch's start, and the
/// lines left out of it (a changed body needs a key of its own).
fn batch_key(prefix: &str, batch: &Batch, dropped: &[u64]) -> String {
    let mut key = format!("{prefix}/{}/{}", batch.index, batch.start.offset);
    if !dropped.is_empty() {
        let mut hasher = Sha256::new();
        for line in dropped {
            hasher.update(line.to_le_bytes());
        }
        key.push_str(&format!("/-{}", hex::encode(&hasher.finalize()[..8])));
    }
    key
}

/// A partial write: the server lists the rejected lines (by their number
/// in the body) and says how many rows it wrote.
fn rejected_lines(job: &Job, batch: &Batch, error: &Json, lines: &[Json], dropped: u64, answer: &Answer) -> Sent {
    for line in lines {
        let number = line["line_number"].as_u64().unwrap_or(0);
        let message = line["error_message"].as_str().unwrap_or("rejected");
        job.progress.message(&format!("{}:{}: {message}", job.path.display(), batch.origin(number)));
    }
    let code = error["code"].as_str().unwrap_or("");
    let sent_rows = batch.rows - dropped;
    let written = match error["rows"].as_u64() {
        Some(rows) => rows,
        None if code == "invalid_line_protocol" => 0,
        None => sent_rows.saturating_sub(lines.len() as u64),
    };
    let unlisted = sent_rows.saturating_sub(written).saturating_sub(lines.len() as u64);
    if unlisted > 0 {
        let message = error["message"].as_str().unwrap_or("");
        job.progress.message(&format!(
            "{}:{}-{}: {unlisted} more row(s) not written: {code}: {message}",
            job.path.display(),
            batch.start.line,
            batch.end.line.saturating_sub(1)
        ));
    }
    Sent { rows_written: written, rows_rejected: sent_rows - written + dropped, replayed: answer.replayed, bytes: 0 }
}

/// The body line (1-based) an all-or-nothing refusal names: `record`
/// in its detail, or `record N` / `line N` in its message.
fn rejected_record(error: &Json) -> Option<u64> {
    if let Some(record) = error["record"].as_u64().or_else(|| error["line"].as_u64()) {
        return Some(record);
    }
    let message = error["message"].as_str()?;
    for marker in ["record ", "line "] {
        if let Some(at) = message.find(marker) {
            let digits: String = message[at + marker.len()..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(number) = digits.parse() {
                return Some(number);
            }
        }
    }
    None
}

/// The body with its line `number` (1-based) emptied, so every other line
/// keeps its number.
fn blank_line(body: &Bytes, number: u64) -> Bytes {
    let mut out = Vec::with_capacity(body.len());
    for (index, line) in body.split_inclusive(|b| *b == b'\n').enumerate() {
        if index as u64 + 1 == number {
            out.push(b'\n');
        } else {
            out.extend_from_slice(line);
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn refusals_name_the_record() {
        assert_eq!(rejected_record(&json!({"message": "record 7: bad", "record": 7})), Some(7));
        assert_eq!(rejected_record(&json!({"message": "invalid JSON on line 3: expected value"})), Some(3));
        assert_eq!(rejected_record(&json!({"message": "record 12: timestamp out of range"})), Some(12));
        assert_eq!(rejected_record(&json!({"message": "the server is busy"})), None);
    }

    #[test]
    fn a_blanked_line_keeps_the_others_numbers() {
        let body = Bytes::from_static(b"a\nb\nc\n");
        assert_eq!(&blank_line(&body, 2)[..], b"a\n\nc\n");
        assert_eq!(&blank_line(&body, 9)[..], b"a\nb\nc\n");
    }

    #[test]
    fn keys_are_deterministic_and_change_with_the_body() {
        let batch = Batch {
            index: 3,
            start: Position { offset: 4096, line: 50, rows: 40 },
            end: Position::default(),
            body: Bytes::new(),
            origins: Vec::new(),
            rows: 10,
        };
        let key = batch_key("strata-import/ab", &batch, &[]);
        assert_eq!(key, "strata-import/ab/3/4096");
        assert_eq!(key, batch_key("strata-import/ab", &batch, &[]));
        let amended = batch_key("strata-import/ab", &batch, &[2]);
        assert!(amended.starts_with("strata-import/ab/3/4096/-") && amended != key);
    }
}
