//! `strata bench`: reproducible benchmarks against a real server.
//!
//! `strata bench ingest` starts `strata serve` on a temporary data directory
//! (unless `--url` points at a running server), generates a seeded TSBS-like
//! `cpu` dataset (hostname + 9 tags, 10 float fields, 10 s interval), sends it
//! as line protocol in fixed-size batches over N keep-alive connections, and
//! reports rows/s to acknowledgement, server CPU-seconds per million rows,
//! bytes on disk per row and the server's peak RSS.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Line-protocol ingest throughput with the WAL fsync on.
    Ingest(IngestArgs),
    /// Query latency against DuckDB reading the same Parquet files directly.
    Query(QueryArgs),
    /// Policy runtime: compile, cached load, swap, evaluations, partitioner vs native.
    Policy(super::bench_policy::PolicyBenchArgs),
    /// Lifecycle: a tier transition of many partitions against a plain file
    /// copy, and a run over 100,000 partitions that changes nothing.
    Lifecycle(LifecycleArgs),
    /// Object storage: the S3 target's streaming put/get against plain
    /// `object_store` requests, on a local moto server.
    Storage(super::bench_storage::StorageBenchArgs),
    /// Memory of a move: one partition of one large Parquet file of random
    /// floats, hot → warm re-encoded, and the server's peak RSS during it.
    Move(MoveArgs),
    /// `strata import` of the ingest data as a file against `bench ingest`.
    Import(super::bench_import::ImportBenchArgs),
    /// One request whose rows fall into `--keys` partitions (new, then
    /// existing) and their flush, against the same rows in one partition.
    Partitions(super::bench_partitions::PartitionsArgs),
    /// Strata against the peers installed here (InfluxDB 1.x, VictoriaMetrics):
    /// the same data through each one's line-protocol endpoint, ingest rate,
    /// CPU and memory, and the same queries; `--hosts` sweeps cardinality.
    Peers(super::bench_peers::PeersArgs),
}

/// Arguments of `strata bench move`.
#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    /// Rows of the partition (10 random float fields each, ~90 bytes a row in Parquet).
    #[arg(long, default_value_t = 12_000_000)]
    pub rows: usize,
    /// Rows per write request.
    #[arg(long, default_value_t = 50_000)]
    pub batch: usize,
}

/// Arguments of `strata bench lifecycle`.
#[derive(Debug, clap::Args)]
pub struct LifecycleArgs {
    /// Partitions to move (one per day).
    #[arg(long, default_value_t = 1_000)]
    pub partitions: usize,
    /// Rows per moved partition (10 random float fields each).
    #[arg(long, default_value_t = 2_000)]
    pub rows_per_partition: usize,
    /// Partitions of the run that changes nothing (one per hour).
    #[arg(long, default_value_t = 100_000)]
    pub idle_partitions: usize,
    /// Runs of the idle policy; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// Arguments of `strata bench query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Rows to load.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: usize,
    /// Distinct hosts.
    #[arg(long, default_value_t = 100)]
    pub hosts: usize,
    /// Days the rows span.
    #[arg(long, default_value_t = 3)]
    pub days: usize,
    /// Runs of each query; the median is reported.
    #[arg(long, default_value_t = 9)]
    pub runs: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Arguments of `strata bench ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Concurrent connections.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Rows to send.
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: usize,
    /// Lines per request.
    #[arg(long, default_value_t = 5_000)]
    pub batch: usize,
    /// Distinct hosts (series).
    #[arg(long, default_value_t = 100)]
    pub hosts: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use a running server instead of starting one (CPU and RSS are then not reported).
    #[arg(long)]
    pub url: Option<String>,
}

/// Runs a benchmark and prints its report.
pub fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Ingest(args) => ingest(args),
        Bench::Query(args) => query(args),
        Bench::Policy(args) => super::bench_policy::run(args),
        Bench::Lifecycle(args) => lifecycle(args),
        Bench::Move(args) => move_partition(args),
        Bench::Storage(args) => super::bench_storage::run(args),
        Bench::Import(args) => super::bench_import::run(args),
        Bench::Partitions(args) => super::bench_partitions::run(args),
        Bench::Peers(args) => super::bench_peers::run(args),
    }
}

const REGIONS: [&str; 9] = [
    "us-east-1",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
];
const OSES: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
const ARCHES: [&str; 2] = ["x64", "x86"];
const TEAMS: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
const ENVIRONMENTS: [&str; 3] = ["production", "staging", "test"];
pub(super) const FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

/// The seeded cpu dataset as line-protocol bodies of `batch` lines, with
/// timestamps in seconds starting 2026-01-01T00:00:00Z.
pub fn generate_cpu(rows: usize, batch: usize, hosts: usize, seed: u64) -> Vec<Bytes> {
    generate_cpu_every(rows, batch, hosts, seed, 10)
}

/// [`generate_cpu`] with a chosen interval between a host's rows, in seconds.
pub fn generate_cpu_every(rows: usize, batch: usize, hosts: usize, seed: u64, interval_s: i64) -> Vec<Bytes> {
    let mut rng = StdRng::seed_from_u64(seed);
    let series: Vec<String> = (0..hosts)
        .map(|i| {
            let region = REGIONS[rng.random_range(0..REGIONS.len())];
            format!(
                "cpu,hostname=host_{i},region={region},datacenter={region}{zone},rack={rack},os={os},arch={arch},team={team},service={service},service_version={version},service_environment={env}",
                zone = ["a", "b", "c"][rng.random_range(0..3)],
                rack = rng.random_range(0..100),
                os = OSES[rng.random_range(0..OSES.len())],
                arch = ARCHES[rng.random_range(0..ARCHES.len())],
                team = TEAMS[rng.random_range(0..TEAMS.len())],
                service = rng.random_range(0..20),
                version = rng.random_range(0..2),
                env = ENVIRONMENTS[rng.random_range(0..ENVIRONMENTS.len())],
            )
        })
        .collect();
    let mut values: Vec<[f64; 10]> =
        (0..hosts).map(|_| std::array::from_fn(|_| rng.random_range(0.0..100.0))).collect();
    let start_s: i64 = 1_767_225_600;
    let mut bodies = Vec::with_capacity(rows.div_ceil(batch));
    let mut body = String::with_capacity(batch * 330);
    let mut in_body = 0;
    for row in 0..rows {
        let host = row % hosts;
        let time = start_s + (row / hosts) as i64 * interval_s;
        body.push_str(&series[host]);
        for (f, name) in FIELDS.iter().enumerate() {
            let step: f64 = rng.random_range(-1.0..1.0);
            let v = (values[host][f] + step).clamp(0.0, 100.0);
            values[host][f] = v;
            body.push(if f == 0 { ' ' } else { ',' });
            body.push_str(name);
            body.push('=');
            body.push_str(&format!("{v:.2}"));
        }
        body.push(' ');
        body.push_str(&time.to_string());
        body.push('\n');
        in_body += 1;
        if in_body == batch {
            bodies.push(Bytes::from(std::mem::take(&mut body)));
            in_body = 0;
        }
    }
    if in_body > 0 {
        bodies.push(Bytes::from(body));
    }
    bodies
}

/// A `strata serve` child on a temporary data directory, removed on drop.
pub(super) struct Server {
    pub(super) child: Child,
    pub(super) url: String,
    pub(super) data_dir: PathBuf,
    /// The `strata` executable serving.
    pub(super) exe: PathBuf,
}

impl Server {
    /// Stops the server (SIGTERM, so it flushes and exits cleanly) and
    /// starts a fresh process on the same directory.
    pub(super) fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_without(None)
    }

    /// [`Server::restart`], deleting `remove` (a directory) while no server runs.
    pub(super) fn restart_without(&mut self, remove: Option<&Path>) -> anyhow::Result<()> {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        self.child.wait()?;
        if let Some(dir) = remove {
            let _ = std::fs::remove_dir_all(dir);
        }
        (self.child, self.url) = spawn_server(&self.exe, &self.data_dir)?;
        Ok(())
    }

    /// `host:port` of the server.
    pub(super) fn authority(&self) -> String {
        self.url.trim_start_matches("http://").trim_end_matches('/').to_string()
    }

    /// The storage directory (all tiers).
    pub(super) fn storage(&self) -> PathBuf {
        self.data_dir.join("data").join("storage")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub(super) fn start_server() -> anyhow::Result<Server> {
    start_server_with(None)
}

/// Starts `strata serve` on a fresh directory; `config` (TOML) goes into
/// `strata.toml` there, with `files` (relative path, contents) beside it.
pub(super) fn start_server_with(config: Option<(&str, &[(&str, &str)])>) -> anyhow::Result<Server> {
    let exe = std::env::current_exe().context("locating the strata binary")?;
    start_server_at(&exe, config)
}

/// [`start_server_with`], serving with the `strata` executable at `exe`.
pub(super) fn start_server_at(exe: &Path, config: Option<(&str, &[(&str, &str)])>) -> anyhow::Result<Server> {
    let data_dir = std::env::temp_dir().join(format!("strata-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir)?;
    if let Some((text, files)) = config {
        for (path, contents) in files {
            let path = data_dir.join(path);
            std::fs::create_dir_all(path.parent().expect("relative path"))?;
            std::fs::write(path, contents)?;
        }
        std::fs::write(data_dir.join("strata.toml"), text)?;
    }
    let (child, url) = spawn_server(exe, &data_dir)?;
    Ok(Server { child, url, data_dir, exe: exe.to_path_buf() })
}

/// Runs `strata serve` on `data_dir` (with its `strata.toml`, if any);
/// returns the child and the URL it printed.
fn spawn_server(exe: &Path, data_dir: &Path) -> anyhow::Result<(Child, String)> {
    let mut command = Command::new(exe);
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir.join("data"));
    if data_dir.join("strata.toml").exists() {
        command.arg("--config").arg(data_dir.join("strata.toml"));
    }
    let mut child = command
        .env("STRATA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting strata serve")?;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line.trim().strip_prefix("strata listening on ").context("server did not print its address")?.to_string();
    Ok((child, url))
}

pub(super) fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

pub(super) fn proc_peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => stack.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

pub(super) async fn post(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    path: &str,
    body: Bytes,
) -> anyhow::Result<u16> {
    let request = Request::post(path).header("host", authority).body(Full::new(body))?;
    // The connection task may not have taken the previous response's end
    // yet (it runs on another worker): wait for it rather than fail.
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await?;
    Ok(status)
}

/// Posts a line-protocol body; anything but 204 is an error.
pub(super) async fn write(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    path: &str,
    body: Bytes,
) -> anyhow::Result<()> {
    let status = post(sender, authority, path, body).await?;
    if status != 204 {
        bail!("write answered {status}");
    }
    Ok(())
}

/// Opens a new connection in place of `sender` if the server has closed
/// it (it may close an idle keep-alive connection).
pub(super) async fn reconnect_if_closed(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
) -> anyhow::Result<()> {
    if sender.ready().await.is_err() {
        *sender = connect(authority).await?;
    }
    Ok(())
}

/// Waits until the server answers `GET /ready` with 200: writes before
/// that (WAL replay, policy loading) would get 503 `not_ready`.
pub(super) async fn wait_until_up(authority: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut sender) = connect(authority).await {
            let request = Request::get("/ready").header("host", authority).body(Full::new(Bytes::new()))?;
            if let Ok(response) = sender.send_request(request).await
                && response.status().is_success()
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("server at {authority} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn connect(authority: &str) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let server = match &args.url {
        Some(_) => None,
        None => Some(start_server()?),
    };
    let url = args.url.clone().or_else(|| server.as_ref().map(|s| s.url.clone())).expect("one of them");
    let authority = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    eprintln!("generating {} rows ({} hosts, seed {})…", args.rows, args.hosts, args.seed);
    let bodies = Arc::new(generate_cpu(args.rows, args.batch, args.hosts, args.seed));
    let body_bytes: usize = bodies.iter().map(Bytes::len).sum();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async {
        wait_until_up(&authority).await?;
        let pid = server.as_ref().map(|s| s.child.id());
        let cpu_before = pid.and_then(proc_cpu_seconds);
        let started = Instant::now();
        send_concurrently(&bodies, &authority, args.connections).await?;
        let elapsed = started.elapsed();
        let cpu_after = pid.and_then(proc_cpu_seconds);
        let mut sender = connect(&authority).await?;
        let buffered = buffered_at(&mut sender, &authority).await?;
        let flushing = Instant::now();
        let flush_status = post(&mut sender, &authority, "/v1/flush", Bytes::new()).await?;
        let flush_elapsed = flushing.elapsed();
        let cpu_flushed = pid.and_then(proc_cpu_seconds);
        let report = IngestReport {
            body_bytes,
            elapsed,
            cpu_seconds: cpu_before.zip(cpu_after).map(|(before, after)| after - before),
            flush: (flush_elapsed, cpu_after.zip(cpu_flushed).map(|(before, after)| after - before)),
            disk_bytes: server.as_ref().map(|s| dir_bytes(&s.storage())),
            flush_status,
            peak_rss_bytes: pid.and_then(proc_peak_rss_bytes),
            buffered,
        };
        report.print(&args);
        anyhow::Ok(())
    })
}

/// `(strata_buffered_rows, strata_buffered_bytes)` from the server's `/metrics`.
async fn buffered_at(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
) -> anyhow::Result<(u64, u64)> {
    let request = Request::get("/metrics").header("host", authority).body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let text = String::from_utf8(response.into_body().collect().await?.to_bytes().to_vec())?;
    let gauge = |name: &str| {
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok()).unwrap_or(0)
    };
    Ok((gauge("strata_buffered_rows"), gauge("strata_buffered_bytes")))
}

/// Sends every body as line protocol over `connections` keep-alive
/// connections, each taking the next unsent body until none is left.
async fn send_concurrently(bodies: &Arc<Vec<Bytes>>, authority: &str, connections: usize) -> anyhow::Result<()> {
    send_bodies(bodies, authority, "/api/v2/write?bucket=cpu&precision=s", connections).await
}

/// Sends every body as line protocol to `path` over `connections`
/// keep-alive connections, each taking the next unsent body until none is
/// left; anything but 204 is an error.
pub(super) async fn send_bodies(
    bodies: &Arc<Vec<Bytes>>,
    authority: &str,
    path: &str,
    connections: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (bodies, next, authority, path) = (bodies.clone(), next.clone(), authority.to_string(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&authority).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return anyhow::Ok(()) };
                write(&mut sender, &authority, &path, body.clone()).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// What `strata bench ingest` measured.
struct IngestReport {
    /// Line protocol sent.
    body_bytes: usize,
    /// From the first write to the last acknowledgement.
    elapsed: Duration,
    /// Server CPU time spent meanwhile (a server this command started).
    cpu_seconds: Option<f64>,
    /// The final flush of the rows still buffered: its wall time and the
    /// server's CPU time (a server this command started).
    flush: (Duration, Option<f64>),
    /// Parquet on disk after the flush (a server this command started).
    disk_bytes: Option<u64>,
    /// The status `POST /v1/flush` answered.
    flush_status: u16,
    /// The server's peak RSS (a server this command started).
    peak_rss_bytes: Option<u64>,
    /// `(rows, bytes)` buffered at the last acknowledgement, from `/metrics`.
    buffered: (u64, u64),
}

impl IngestReport {
    fn print(&self, args: &IngestArgs) {
        let body_bytes = self.body_bytes as f64;
        let rows_per_second = args.rows as f64 / self.elapsed.as_secs_f64();
        println!(
            "strata bench ingest — {} rows, {} hosts, batches of {}, {} connections, WAL fsync on",
            args.rows, args.hosts, args.batch, args.connections
        );
        println!(
            "  line protocol sent        {:.1} MB ({:.0} bytes/row)",
            body_bytes / 1e6,
            body_bytes / args.rows as f64
        );
        println!("  elapsed to last ack       {:.3} s", self.elapsed.as_secs_f64());
        println!("  throughput                {:.0} rows/s", rows_per_second);
        if let Some(cpu) = self.cpu_seconds {
            println!(
                "  server CPU                {:.2} s ({:.2} CPU-s per million rows)",
                cpu,
                cpu / (args.rows as f64 / 1e6)
            );
        }
        let (rows, bytes) = self.buffered;
        let (flush_elapsed, flush_cpu) = self.flush;
        if let (Some(cpu), Some(flush_cpu)) = (self.cpu_seconds, flush_cpu) {
            println!(
                "  final flush               {rows} rows in {:.3} s, {flush_cpu:.2} CPU-s",
                flush_elapsed.as_secs_f64()
            );
            // Every row is parsed, logged and buffered in the window and
            // flushed once, in it or in the final flush: this figure does not
            // depend on how many flushes the window happened to hold.
            println!(
                "  server CPU, every row flushed {:.2} CPU-s per million rows",
                (cpu + flush_cpu) / (args.rows as f64 / 1e6)
            );
        }
        if let Some(disk) = self.disk_bytes {
            println!(
                "  Parquet on disk           {:.1} MB ({:.2} bytes/row, flush answered {})",
                disk as f64 / 1e6,
                disk as f64 / args.rows as f64,
                self.flush_status
            );
        }
        if let Some(rss) = self.peak_rss_bytes {
            println!("  server peak RSS           {:.0} MB", rss as f64 / 1e6);
        }
        println!(
            "  buffered at the last ack  {rows} rows, {:.1} MB ({:.1} bytes per buffered row)",
            bytes as f64 / 1e6,
            bytes as f64 / rows.max(1) as f64
        );
    }
}

pub(super) fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// A port free at this moment, for the Flight SQL listener of the server
/// the benchmark starts.
pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Milliseconds per run of `sql` over Flight SQL: GetFlightInfo, then DoGet
/// until the last record batch is decoded.
async fn time_flight(port: u16, sql: &str, runs: usize) -> anyhow::Result<Vec<f64>> {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))?.connect().await?;
    let mut client = FlightSqlServiceClient::new(channel);
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let info = client.execute(sql.to_string(), None).await.context("Flight SQL GetFlightInfo")?;
        let ticket = info.endpoint.first().and_then(|e| e.ticket.clone()).context("a FlightInfo without a ticket")?;
        let batches: Vec<_> = client.do_get(ticket).await?.try_collect().await.context("Flight SQL DoGet")?;
        std::hint::black_box(batches);
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

fn query(args: QueryArgs) -> anyhow::Result<()> {
    let flight_port = free_port()?;
    let config = format!("[server]\nflight_listen = \"127.0.0.1:{flight_port}\"\n");
    let server = start_server_with(Some((&config, &[])))?;
    let authority = server.url.trim_start_matches("http://").to_string();
    let interval_s = ((args.days * 86_400 * args.hosts) as f64 / args.rows as f64).max(1.0) as i64;
    eprintln!("generating {} rows ({} hosts, one row per host every {interval_s} s)…", args.rows, args.hosts);
    let bodies = generate_cpu_every(args.rows, 5_000, args.hosts, args.seed, interval_s);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        wait_until_up(&authority).await?;
        let loading = Instant::now();
        let mut sender = connect(&authority).await?;
        for body in bodies.iter() {
            write(&mut sender, &authority, "/api/v2/write?bucket=cpu&precision=s", body.clone()).await?;
        }
        post(&mut sender, &authority, "/v1/flush", Bytes::new()).await?;
        eprintln!("loaded and flushed in {:.1} s", loading.elapsed().as_secs_f64());
        let start = "2026-01-01T00:00:00Z";
        let noon = "2026-01-01T12:00:00Z";
        let hour = "2026-01-01T01:00:00Z";
        let end = format!("2026-01-{:02}T00:00:00Z", args.days + 1);
        let influxql = |condition: &str, end: &str, by: &str| {
            format!(
                "SELECT mean(usage_user), max(usage_user) FROM cpu WHERE {condition}time >= '{start}' AND time < '{end}' GROUP BY time(1m){by} fill(none)"
            )
        };
        let influxql_a = Some(influxql("hostname = 'host_7' AND ", noon, ""));
        let influxql_b = Some(influxql("", hour, ", hostname"));
        let cases: Vec<(&str, serde_json::Value, String, Option<String>)> = vec![
            (
                "(a) 1-minute avg/max of one host over 12 h",
                serde_json::json!({"time_range": {"start": start, "end": noon}, "filters": {"column": "hostname", "op": "=", "value": "host_7"},
                    "downsample": {"interval": "1m", "aggregations": [{"fn": "avg", "column": "usage_user"}, {"fn": "max", "column": "usage_user"}]}}),
                format!("SELECT time_bucket(INTERVAL 1 minute, time) AS t, avg(usage_user), max(usage_user) FROM cpu WHERE hostname = 'host_7' AND time >= TIMESTAMP '{start}' AND time < TIMESTAMP '{noon}' GROUP BY t ORDER BY t"),
                influxql_a,
            ),
            (
                "(b) 1-minute avg/max of all hosts by host over 1 h",
                serde_json::json!({"time_range": {"start": start, "end": hour}, "group_by": ["hostname"],
                    "downsample": {"interval": "1m", "aggregations": [{"fn": "avg", "column": "usage_user"}, {"fn": "max", "column": "usage_user"}]}}),
                format!("SELECT time_bucket(INTERVAL 1 minute, time) AS t, hostname, avg(usage_user), max(usage_user) FROM cpu WHERE time >= TIMESTAMP '{start}' AND time < TIMESTAMP '{hour}' GROUP BY ALL ORDER BY hostname, t"),
                influxql_b,
            ),
            (
                "(c) count over everything",
                serde_json::json!({"time_range": {"start": start, "end": end},
                    "downsample": {"aggregations": [{"fn": "count", "column": "usage_user"}]}}),
                "SELECT count(usage_user) FROM cpu".to_string(),
                None,
            ),
        ];
        let files = parquet_files(&server.storage());
        println!("strata bench query — {} rows, {} hosts, {} days, {} Parquet files, median of {} runs", args.rows, args.hosts, args.days, files.len(), args.runs);
        println!(
            "  {:<52} {:>10} {:>8} {:>14} {:>8} {:>18} {:>10} {:>14}",
            "query", "strata ms", "by", "duckdb ms", "ratio", "of which setup ms", "flight ms", "flight/strata"
        );
        for (name, body, sql, influxql) in cases {
            let (mut strata, mut setup, mut executor) = (Vec::new(), Vec::new(), String::new());
            for _ in 0..args.runs {
                let started = Instant::now();
                let answer = post_json(&mut sender, &authority, "/v1/datasets/cpu/query", body.clone())
                    .await
                    .with_context(|| name.to_string())?;
                strata.push(started.elapsed().as_secs_f64() * 1000.0);
                setup.push(answer["stats"]["setup_ms"].as_f64().unwrap_or(0.0));
                executor = answer["stats"]["executor"].as_str().unwrap_or_default().to_string();
            }
            let direct = crate::query::time_direct(&files, &sql, args.runs)?;
            // The same SQL text as DuckDB's, through Flight SQL.
            let flight = median_ms(time_flight(flight_port, &sql, args.runs).await?);
            let (s, d) = (median_ms(strata), median_ms(direct));
            println!(
                "  {:<52} {:>10.1} {:>8} {:>14.1} {:>8.2} {:>18.1} {:>10.1} {:>14.2}",
                name,
                s,
                executor,
                d,
                s / d,
                median_ms(setup),
                flight,
                flight / s
            );
            if executor == "native" {
                // The same question DuckDB answers: a one-part `or` means
                // the same and is not the native executor's.
                let mut through_duckdb = body.clone();
                through_duckdb["filters"] = serde_json::json!({"or": [body["filters"].clone()]});
                let mut runs = Vec::new();
                for _ in 0..args.runs {
                    let started = Instant::now();
                    let answer = post_json(&mut sender, &authority, "/v1/datasets/cpu/query", through_duckdb.clone())
                        .await
                        .with_context(|| name.to_string())?;
                    if answer["stats"]["executor"] != "duckdb" {
                        bail!("{name}: the one-part `or` was not answered by DuckDB");
                    }
                    runs.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                let d = median_ms(runs);
                println!(
                    "    {:<50} {:>10.1}   native {:.2}x of it",
                    "the same through DuckDB (filters as a one-part or)",
                    d,
                    s / d
                );
            }
            if let Some(influxql) = influxql {
                let path = format!(
                    "/query?db=cpu&epoch=ns&q={}",
                    form_urlencoded::byte_serialize(influxql.as_bytes()).collect::<String>()
                );
                let mut runs = Vec::new();
                for _ in 0..args.runs {
                    let started = Instant::now();
                    let answer = get_json(&mut sender, &authority, &path).await.with_context(|| name.to_string())?;
                    if let Some(error) = answer["results"][0]["error"].as_str() {
                        bail!("{name} via InfluxQL: {error}");
                    }
                    runs.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                let i = median_ms(runs);
                let verdict = if i <= 1.2 * s + 5.0 { "within" } else { "OUTSIDE" };
                println!(
                    "    {:<50} {:>10.1}   {:.2}x the structured query ({verdict} 1.2x + 5 ms)",
                    "the same in InfluxQL (GET /query)",
                    i,
                    i / s
                );
            }
        }
        anyhow::Ok(())
    })
}

pub(super) async fn post_json(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let request = Request::post(path).header("host", authority).body(Full::new(Bytes::from(body.to_string())))?;
    send_for_json(sender, authority, request).await
}

async fn get_json(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    let request = Request::get(path).header("host", authority).body(Full::new(Bytes::new()))?;
    send_for_json(sender, authority, request).await
}

/// Sends `request` (reconnecting first if the server closed the
/// connection) and answers its JSON body; anything but 200 is an error.
async fn send_for_json(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<serde_json::Value> {
    let path = request.uri().to_string();
    reconnect_if_closed(sender, authority).await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if status != 200 {
        bail!("{path} answered {status}: {value}");
    }
    Ok(value)
}

/// Copies `files` into `into`, each fsync'd, then fsyncs the directory: what
/// a durable copy costs without Strata.
fn plain_copy(files: &[PathBuf], into: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(into)?;
    let mut bytes = 0;
    for (i, file) in files.iter().enumerate() {
        let destination = into.join(format!("{i}.parquet"));
        bytes += std::fs::copy(file, &destination)?;
        std::fs::File::open(&destination)?.sync_all()?;
    }
    std::fs::File::open(into)?.sync_all()?;
    Ok(bytes)
}

/// Seconds in a day.
pub(super) const DAY_S: i64 = 86_400;

/// 2020-01-01T00:00:00Z, in seconds: the lifecycle benchmark's first row.
pub(super) const LIFECYCLE_START_S: i64 = 1_577_836_800;

fn lifecycle(args: LifecycleArgs) -> anyhow::Result<()> {
    let moving = "name = \"move-all\"\nkind = \"tiering\"\nplugin = \"builtin:tier-by-age\"\ndatasets = [\"moving\"]\n[config]\nwarm_after = \"1d\"\n";
    let idle = "name = \"idle\"\nkind = \"tiering\"\nplugin = \"builtin:tier-by-age\"\ndatasets = [\"idle\"]\n[config]\nwarm_after = \"36500d\"\n";
    let config = "[datasets.moving]\nperiod = \"day\"\n[datasets.idle]\nperiod = \"hour\"\n[ingest]\nflush_age_ms = 86400000\nflush_bytes = 1073741824\n\
         [limits]\nbuffer_bytes_max = 4294967296\nrows_per_request_max = 1000000\n[lifecycle]\nscheduler = false\nprecreate_lead_ms = 0\n";
    let server =
        start_server_with(Some((config, &[("policies/move-all.toml", moving), ("policies/idle.toml", idle)])))?;
    let authority = server.url.trim_start_matches("http://").to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        wait_until_up(&authority).await?;
        let mut sender = connect(&authority).await?;
        load_daily_partitions(&mut sender, &authority, &args).await?;
        reconnect_if_closed(&mut sender, &authority).await?;
        post(&mut sender, &authority, "/v1/flush", Bytes::new()).await?;
        let transition = time_transition(&mut sender, &authority, &server, args.partitions).await?;
        load_hourly_partitions(&mut sender, &authority, args.idle_partitions).await?;
        let (idle_ms, idle_report) = time_idle_runs(&mut sender, &authority, &args).await?;
        print_lifecycle_report(&args, &transition, idle_ms, &idle_report["runs"][0]);
        anyhow::Ok(())
    })
}

/// Writes `args.partitions` days of random rows into `moving`, one request a day.
pub(super) async fn load_daily_partitions(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    args: &LifecycleArgs,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(7);
    eprintln!("loading {} partitions × {} rows…", args.partitions, args.rows_per_partition);
    for day in 0..args.partitions as i64 {
        let mut body = String::with_capacity(args.rows_per_partition * 200);
        for row in 0..args.rows_per_partition as i64 {
            body.push_str("m ");
            for (i, field) in FIELDS.iter().enumerate() {
                let _ = write!(body, "{}{field}={}", if i == 0 { "" } else { "," }, rng.random::<f64>());
            }
            let step_s = DAY_S / args.rows_per_partition.max(1) as i64;
            let _ = writeln!(body, " {}", LIFECYCLE_START_S + day * DAY_S + row * step_s);
        }
        reconnect_if_closed(sender, authority).await?;
        let status = post(sender, authority, "/api/v2/write?bucket=moving&precision=s", Bytes::from(body))
            .await
            .with_context(|| format!("writing day {day}"))?;
        if status != 204 {
            bail!("write answered {status}");
        }
    }
    Ok(())
}

/// A tier transition of every hot file, timed against a plain copy of the same files.
struct Transition {
    /// Hot files before the transition.
    files: usize,
    /// Their bytes.
    hot_bytes: u64,
    /// Seconds the policy run took.
    move_s: f64,
    /// The run's report.
    run: serde_json::Value,
    /// Bytes the run moved.
    moved_bytes: u64,
    /// Seconds the plain copy took.
    copy_s: f64,
    /// Bytes it copied.
    copied_bytes: u64,
}

/// Runs `move-all` over the `partitions` loaded days, then copies the same
/// files plainly.
async fn time_transition(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    server: &Server,
    partitions: usize,
) -> anyhow::Result<Transition> {
    let hot_files = parquet_files(&server.storage().join("hot"));
    let hot_bytes: u64 = hot_files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    let now_ns = (LIFECYCLE_START_S + (partitions as i64 + 30) * DAY_S) * 1_000_000_000;
    let started = Instant::now();
    let report = post_json(sender, authority, "/v1/policies/move-all/run", serde_json::json!({"now": now_ns})).await?;
    let move_s = started.elapsed().as_secs_f64();
    let run = report["runs"][0].clone();
    let moved_bytes = run["bytes_moved"].as_u64().unwrap_or(0);
    let started = Instant::now();
    let copied_bytes = plain_copy(&hot_files, &server.data_dir.join("plain-copy"))?;
    let copy_s = started.elapsed().as_secs_f64();
    Ok(Transition { files: hot_files.len(), hot_bytes, move_s, run, moved_bytes, copy_s, copied_bytes })
}

/// Writes one row an hour for `partitions` hours into `idle`.
async fn load_hourly_partitions(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    partitions: usize,
) -> anyhow::Result<()> {
    eprintln!("loading {partitions} idle partitions…");
    let hours: Vec<i64> = (0..partitions as i64).collect();
    for chunk in hours.chunks(50_000) {
        reconnect_if_closed(sender, authority).await?;
        let body: String = chunk.iter().map(|h| format!("m v=1i {}\n", LIFECYCLE_START_S + h * 3_600)).collect();
        write(sender, authority, "/api/v2/write?bucket=idle&precision=s", Bytes::from(body)).await?;
    }
    Ok(())
}

/// Runs `idle` (which changes nothing) `args.runs` times: each run's
/// milliseconds, and the last run's report.
async fn time_idle_runs(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    args: &LifecycleArgs,
) -> anyhow::Result<(Vec<f64>, serde_json::Value)> {
    let idle_now = (LIFECYCLE_START_S + args.idle_partitions as i64 * 3_600 + DAY_S) * 1_000_000_000;
    let mut idle_ms = Vec::new();
    let mut idle_report = serde_json::Value::Null;
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        idle_report =
            post_json(sender, authority, "/v1/policies/idle/run", serde_json::json!({"now": idle_now})).await?;
        idle_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((idle_ms, idle_report))
}

fn print_lifecycle_report(
    args: &LifecycleArgs,
    transition: &Transition,
    idle_ms: Vec<f64>,
    idle_run: &serde_json::Value,
) {
    let Transition { files, hot_bytes, move_s, run, moved_bytes, copy_s, copied_bytes } = transition;
    let (moved, copied) = (*moved_bytes as f64, *copied_bytes as f64);
    println!("strata bench lifecycle");
    println!(
        "  transition: {} partitions, {} files, {:.1} MB hot → warm: {:.2} s ({:.1} MB/s), executed {}, failed {}",
        args.partitions,
        files,
        *hot_bytes as f64 / 1e6,
        move_s,
        moved / 1e6 / move_s,
        run["executed"],
        run["failed"],
    );
    println!(
        "  plain copy of the same files (fsync each + dir): {:.2} s ({:.1} MB/s) → Strata at {:.2}× copy speed",
        copy_s,
        copied / 1e6 / copy_s,
        (moved / move_s) / (copied / copy_s),
    );
    let runs = idle_ms.len();
    println!(
        "  run that changes nothing over {} partitions: median {:.1} ms of {} (last run: catalog and facts {:.1} ms, evaluation {:.1} ms, judging {:.1} ms; unchanged {})",
        args.idle_partitions,
        median_ms(idle_ms),
        runs,
        idle_run["snapshot_ms"].as_f64().unwrap_or(0.0),
        idle_run["evaluation_ms"].as_f64().unwrap_or(0.0),
        idle_run["execution_ms"].as_f64().unwrap_or(0.0),
        idle_run["unchanged"],
    );
}

/// Loads one day of `args.rows` random rows, flushes it as one file,
/// restarts the server (so ingest's memory is not counted), moves the
/// partition hot → warm with a re-encode, and reports the peak RSS of that
/// server process, from its start through the move.
fn move_partition(args: MoveArgs) -> anyhow::Result<()> {
    let policy = "name = \"move-all\"\nkind = \"tiering\"\nplugin = \"builtin:tier-by-age\"\ndatasets = [\"moving\"]\n[config]\nwarm_after = \"1d\"\n";
    let config =
        format!("{}[storage.tiers.warm]\nzstd_level = 3\nrow_group_rows_max = 1048576\n", BIG_PARTITION_CONFIG);
    let mut server = start_server_with(Some((&config, &[("policies/move-all.toml", policy)])))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    load_big_partition(&mut server, &runtime, args.rows, args.batch)?;
    let moved = time_big_move(&server, &runtime, "move-all")?;
    println!("strata bench move");
    println!(
        "  {} hot file(s), {:.1} MiB → warm re-encoded (zstd 3) in {:.1} s: executed {}, failed {}, {} bytes moved",
        moved.files,
        moved.hot_bytes as f64 / 1048576.0,
        moved.move_s,
        moved.run["executed"],
        moved.run["failed"],
        moved.run["bytes_moved"],
    );
    println!(
        "  fresh server: peak RSS {:.1} MiB before the move, {:.1} MiB through it",
        moved.rss_before as f64 / 1048576.0,
        moved.rss_peak as f64 / 1048576.0
    );
    Ok(())
}

/// Configuration of a server that keeps every row of dataset `moving`
/// (daily partitions) buffered until `/v1/flush`, so one partition becomes
/// one file; tables for the destination tier may follow.
pub(super) const BIG_PARTITION_CONFIG: &str = "[datasets.moving]\nperiod = \"day\"\n[ingest]\nflush_age_ms = 86400000\nflush_bytes = 68719476736\n\
     [limits]\nbuffer_bytes_max = 68719476736\nrows_per_request_max = 1000000\nbody_bytes_max = 67108864\n\
     [lifecycle]\nscheduler = false\nprecreate_lead_ms = 0\n";

/// Writes `rows` random rows (10 float fields) into one day of `moving`,
/// flushes them as one file and restarts the server, so the memory ingest
/// took is not counted in what follows.
pub(super) fn load_big_partition(
    server: &mut Server,
    runtime: &tokio::runtime::Runtime,
    rows: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let authority = server.authority();
    runtime.block_on(async {
        wait_until_up(&authority).await?;
        let mut sender = connect(&authority).await?;
        let mut rng = StdRng::seed_from_u64(11);
        eprintln!("loading {rows} rows into one partition…");
        let step_ns = DAY_S * 1_000_000_000 / rows.max(1) as i64;
        for first in (0..rows).step_by(batch.max(1)) {
            let mut body = String::with_capacity(batch * 220);
            for row in first..(first + batch).min(rows) {
                body.push_str("m ");
                for (i, field) in FIELDS.iter().enumerate() {
                    let _ = write!(body, "{}{field}={}", if i == 0 { "" } else { "," }, rng.random::<f64>());
                }
                let _ = writeln!(body, " {}", LIFECYCLE_START_S * 1_000_000_000 + row as i64 * step_ns);
            }
            reconnect_if_closed(&mut sender, &authority).await?;
            write(&mut sender, &authority, "/api/v2/write?bucket=moving&precision=ns", Bytes::from(body)).await?;
        }
        reconnect_if_closed(&mut sender, &authority).await?;
        post(&mut sender, &authority, "/v1/flush", Bytes::new()).await?;
        anyhow::Ok(())
    })?;
    server.restart()
}

/// What moving the one large partition measured.
pub(super) struct BigMove {
    /// Hot files before the move.
    pub(super) files: usize,
    /// Their bytes.
    pub(super) hot_bytes: u64,
    /// Seconds the policy run took.
    pub(super) move_s: f64,
    /// The run's report.
    pub(super) run: serde_json::Value,
    /// The server's peak RSS from its start until the move began.
    pub(super) rss_before: u64,
    /// … and through the move.
    pub(super) rss_peak: u64,
}

/// Runs the tiering policy `policy` over the partition
/// [`load_big_partition`] wrote, and reads the server's peak RSS around it.
pub(super) fn time_big_move(
    server: &Server,
    runtime: &tokio::runtime::Runtime,
    policy: &str,
) -> anyhow::Result<BigMove> {
    let authority = server.authority();
    let pid = server.child.id();
    runtime.block_on(async {
        wait_until_up(&authority).await?;
        let mut sender = connect(&authority).await?;
        let hot = parquet_files(&server.storage().join("hot"));
        let hot_bytes: u64 = hot.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
        let rss_before = proc_peak_rss_bytes(pid).unwrap_or(0);
        let now_ns = (LIFECYCLE_START_S + 30 * DAY_S) * 1_000_000_000;
        let started = Instant::now();
        let path = format!("/v1/policies/{policy}/run");
        let report = post_json(&mut sender, &authority, &path, serde_json::json!({"now": now_ns})).await?;
        let move_s = started.elapsed().as_secs_f64();
        let rss_peak = proc_peak_rss_bytes(pid).unwrap_or(0);
        let run = report["runs"][0].clone();
        Ok(BigMove { files: hot.len(), hot_bytes, move_s, run, rss_before, rss_peak })
    })
}

/// Every Parquet file under `dir`, for benchmarks that read them directly.
pub(super) fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_seeded() {
        let a = generate_cpu(250, 100, 10, 7);
        let b = generate_cpu(250, 100, 10, 7);
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        let first = std::str::from_utf8(&a[0]).unwrap().lines().next().unwrap().to_string();
        assert!(first.starts_with("cpu,hostname=host_0,region="), "{first}");
        assert_eq!(first.split(' ').nth(1).unwrap().split(',').count(), 10);
        assert_ne!(a, generate_cpu(250, 100, 10, 8));
    }
}
