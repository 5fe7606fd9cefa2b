//! `strata bench storage`: the S3 target against plain `object_store`
//! requests of the same bytes, on a real S3-protocol server (`moto_server`,
//! which this module also starts for the integration tests).
//!
//! One function per scenario; each takes the [`Bench`] context (the server,
//! the files) and prints its own lines, so a tier-move or a query scenario
//! is one more function called from [`run`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::RngCore;

use super::bench::{self, LifecycleArgs};
use crate::config::{S3Settings, Secret};
use crate::storage::{ObjectKey, S3Target, StorageTarget};

/// The moto release the project installs (`.ci/run`).
pub const MOTO_VERSION: &str = "5.2.5";
/// The access key moto is given (it accepts any).
pub const MOTO_ACCESS_KEY_ID: &str = "strata-test-key";
/// The secret moto is given (it accepts any).
pub const MOTO_SECRET_ACCESS_KEY: &str = "strata-test-secret-0123456789";

/// A `moto_server` on a free loopback port, killed on drop.
pub struct MotoServer {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    serial: bool,
}

/// moto's own server with one request at a time (`threaded=False`): its
/// conditional writes check then store, so only a serial server makes
/// `If-None-Match` atomic, as S3's is.
const SERIAL_MOTO: &str = "import sys\n\
from werkzeug.serving import run_simple\n\
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app\n\
run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False, \
request_handler=MotoRequestHandler)\n";

impl MotoServer {
    /// Where `moto_server` is: `$STRATA_MOTO_SERVER`, else the virtualenv
    /// `.ci/run` creates.
    pub fn binary() -> anyhow::Result<PathBuf> {
        let path = match std::env::var_os("STRATA_MOTO_SERVER") {
            Some(path) => PathBuf::from(path),
            None => {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/strata-venv/bin/moto_server")
            }
        };
        if !path.is_file() {
            bail!(
                "moto_server not found: run .ci/run (installs moto[server]=={MOTO_VERSION} into ~/.cache/strata-venv); \
                 looked at {} ($STRATA_MOTO_SERVER overrides)",
                path.display()
            );
        }
        Ok(path)
    }

    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> anyhow::Result<MotoServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = MotoServer { child: None, port, binary: MotoServer::binary()?, serial: false };
        server.spawn()?;
        Ok(server)
    }

    /// Starts a server that answers one request at a time, for races whose
    /// outcome depends on the server's atomicity (moto's threaded server
    /// checks `If-None-Match` and stores in two steps).
    pub fn start_serial() -> anyhow::Result<MotoServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = MotoServer { child: None, port, binary: MotoServer::binary()?, serial: true };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = if self.serial {
            let mut python = Command::new(self.binary.with_file_name("python"));
            python.args(["-c", SERIAL_MOTO, &self.port.to_string()]);
            python
        } else {
            let mut moto = Command::new(&self.binary);
            moto.args(["-H", "127.0.0.1", "-p", &self.port.to_string()]);
            moto
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.request("GET", "/").is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("moto_server exited with {status} before answering on port {}", self.port);
            }
            if Instant::now() > deadline {
                bail!("moto_server did not answer on port {} within 60 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (`PUT /bucket`).
    pub fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let status = self.request("PUT", &format!("/{bucket}"))?;
        if status != 200 {
            bail!("creating bucket {bucket} answered {status}");
        }
        Ok(())
    }

    /// Kills the server (an outage); [`MotoServer::restart`] brings it back
    /// on the same port, empty.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (its buckets are gone).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Settings of an `s3` target on `bucket` of this server, with the test keys.
    pub fn settings(&self, bucket: &str, prefix: &str) -> S3Settings {
        S3Settings {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: Some(self.endpoint()),
            region: "us-east-1".to_string(),
            allow_http: true,
            virtual_hosted_style: false,
            access_key_id: Some(MOTO_ACCESS_KEY_ID.to_string()),
            secret_access_key: Some(Secret::new(MOTO_SECRET_ACCESS_KEY)),
            session_token: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            retries: 1,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            multipart_threshold_bytes: 64 * 1024 * 1024,
            part_bytes: 16 * 1024 * 1024,
        }
    }

    /// An unsigned request; the status code.
    fn request(&self, method: &str, path: &str) -> anyhow::Result<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        response.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no HTTP status in moto's answer")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Arguments of `strata bench storage`.
#[derive(Debug, clap::Args)]
pub struct StorageBenchArgs {
    /// Files to upload and download.
    #[arg(long, default_value_t = 20)]
    pub files: usize,
    /// Size of each file, MiB.
    #[arg(long, default_value_t = 32)]
    pub file_mib: u64,
    /// Part size of the multipart scenario, MiB (at least 5).
    #[arg(long, default_value_t = 8)]
    pub part_mib: u64,
    /// Partitions of the tier move to the bucket (one per day).
    #[arg(long, default_value_t = 1_000)]
    pub partitions: usize,
    /// Rows per partition of the tier move (10 random float fields each).
    #[arg(long, default_value_t = 2_000)]
    pub rows_per_partition: usize,
    /// Rows of the query scenario (`bench query`'s generator: 100 hosts, 3 days).
    #[arg(long, default_value_t = 10_000_000)]
    pub query_rows: usize,
    /// Runs of the query on local files, from a cold cache and from a warm
    /// one; medians are reported.
    #[arg(long, default_value_t = 9)]
    pub runs: usize,
    /// Bytes of the one partition whose move to the bucket is watched for
    /// the server's peak RSS (~81 bytes a row of 10 random floats).
    #[arg(long, default_value_t = 2 << 30)]
    pub big_partition_bytes: u64,
    /// Re-encode the large partition (zstd 3) instead of copying its bytes.
    #[arg(long)]
    pub reencode: bool,
    /// Only these scenarios (comma-separated: throughput, move, query, rss).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// What every scenario gets.
struct Bench {
    moto: MotoServer,
    files: Vec<PathBuf>,
    bytes_total: u64,
    /// The report: figure, goal, measured.
    table: Vec<[String; 3]>,
}

impl Bench {
    fn row(&mut self, figure: impl Into<String>, goal: &str, measured: impl Into<String>) {
        self.table.push([figure.into(), goal.to_string(), measured.into()]);
    }
}

/// Runs every scenario (or those `--only` names) and prints one table.
pub fn run(args: StorageBenchArgs) -> anyhow::Result<()> {
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let moto = MotoServer::start()?;
    let dir = std::env::temp_dir().join(format!("strata-bench-storage-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut bench = Bench { moto, files: Vec::new(), bytes_total: 0, table: Vec::new() };
    let result = (|| {
        if wanted("throughput") {
            bench.files = write_files(&dir, args.files, args.file_mib)?;
            bench.bytes_total = args.files as u64 * args.file_mib * 1024 * 1024;
            throughput(&mut bench, "single-part", u64::MAX, 16)?;
            throughput(&mut bench, "multipart", 0, args.part_mib)?;
        }
        if wanted("move") {
            tier_move(&mut bench, &args)?;
        }
        if wanted("query") {
            remote_query(&mut bench, &args)?;
        }
        if wanted("rss") {
            big_move_rss(&mut bench, &args)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "strata bench storage — moto_server {MOTO_VERSION} on loopback; MB/s are 10^6 bytes/s; {} files × {} MiB for throughput",
        args.files, args.file_mib
    );
    print_table(&bench.table);
    result
}

fn print_table(table: &[[String; 3]]) {
    let widths: Vec<usize> =
        (0..3).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0).max(8)).collect();
    let line = |cells: [&str; 3]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("| {} |", padded.join(" | "));
    };
    line(["figure", "goal", "measured"]);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for row in table {
        line([&row[0], &row[1], &row[2]]);
    }
}

/// Writes `count` files of random (incompressible, Parquet-like) bytes.
fn write_files(dir: &Path, count: usize, mib: u64) -> anyhow::Result<Vec<PathBuf>> {
    let mut rng = rand::rng();
    let mut buffer = vec![0u8; 1024 * 1024];
    (0..count)
        .map(|i| {
            let path = dir.join(format!("file-{i}.parquet"));
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            for _ in 0..mib {
                rng.fill_bytes(&mut buffer);
                file.write_all(&buffer)?;
            }
            file.flush()?;
            Ok(path)
        })
        .collect()
}

/// Upload and download throughput through `put_file`/`get_to` against
/// plain `object_store` requests of the same bytes on a fresh bucket. The
/// two alternate file by file, so neither gains from going second.
fn throughput(bench: &mut Bench, label: &str, threshold: u64, part_mib: u64) -> anyhow::Result<()> {
    let bucket = format!("bench-{label}");
    bench.moto.create_bucket(&bucket)?;
    let mut settings = bench.moto.settings(&bucket, "strata");
    settings.multipart_threshold_bytes = threshold;
    settings.part_bytes = part_mib * 1024 * 1024;
    let journal = std::env::temp_dir().join(format!("strata-bench-storage-journal-{}", std::process::id()));
    let target = S3Target::open("bench", &settings, &journal)?;
    let mut timed = Timings::default();
    for (i, file) in bench.files.iter().enumerate() {
        let (key, baseline) = (ObjectKey::data_file(1, i as i64, "f"), ObjectKey::data_file(2, i as i64, "f"));
        let started = Instant::now();
        target.put_file(&key, file)?;
        timed.put += started.elapsed();
        let bytes = std::fs::read(file)?;
        let started = Instant::now();
        target.baseline_put(&baseline, bytes)?;
        timed.raw_put += started.elapsed();

        let started = Instant::now();
        target.get_to(&key, &mut std::io::sink())?;
        timed.get += started.elapsed();
        let started = Instant::now();
        std::hint::black_box(target.baseline_get(&baseline)?);
        timed.raw_get += started.elapsed();
        target.delete(&key)?;
        target.delete(&baseline)?;
    }
    let _ = std::fs::remove_dir_all(&journal);
    let mbs = |elapsed: Duration| bench.bytes_total as f64 / 1e6 / elapsed.as_secs_f64();
    let parts = if threshold == 0 { format!(", parts of {part_mib} MiB both") } else { String::new() };
    let (put, raw_put) = (mbs(timed.put), mbs(timed.raw_put));
    let (get, raw_get) = (mbs(timed.get), mbs(timed.raw_get));
    bench.row(
        format!("{label} upload: put_file vs object_store put{parts}"),
        "",
        format!("{put:.1} vs {raw_put:.1} MB/s ({:.2}×)", put / raw_put),
    );
    bench.row(
        format!("{label} download: get_to vs object_store get"),
        "",
        format!("{get:.1} vs {raw_get:.1} MB/s ({:.2}×)", get / raw_get),
    );
    Ok(())
}

/// Time spent by the target and by the plain requests.
#[derive(Default)]
struct Timings {
    put: Duration,
    raw_put: Duration,
    get: Duration,
    raw_get: Duration,
}

/// `lifecycle.move_concurrency` of the tier-move server, and the threads
/// of the plain copy it is compared with.
const MOVE_CONCURRENCY: usize = 8;

/// `strata.toml` tables that put the cold tier on `bucket` of the moto
/// server; `target` and `tier` are more keys of the two tables.
fn cold_on_s3(moto: &MotoServer, bucket: &str, target: &str, tier: &str) -> String {
    format!(
        "[storage.targets.remote]\nkind = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"strata\"\nendpoint = \"{}\"\n\
         region = \"us-east-1\"\nallow_http = true\naccess_key_id = \"{MOTO_ACCESS_KEY_ID}\"\n\
         secret_access_key = \"{MOTO_SECRET_ACCESS_KEY}\"\n{target}[storage.tiers.cold]\ntarget = \"remote\"\n{tier}",
        moto.endpoint()
    )
}

/// A tiering policy moving `dataset`'s partitions older than a day to cold.
fn to_cold_policy(dataset: &str) -> String {
    format!(
        "name = \"to-cold\"\nkind = \"tiering\"\nplugin = \"builtin:tier-by-age\"\ndatasets = [\"{dataset}\"]\n[config]\ncold_after = \"1d\"\n"
    )
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Runs `to-cold` at `now_ns`; its run report, which must have moved
/// something and failed nothing.
async fn run_to_cold(authority: &str, now_ns: i64) -> anyhow::Result<serde_json::Value> {
    let mut sender = bench::connect(authority).await?;
    let body = serde_json::json!({"now": now_ns});
    let report = bench::post_json(&mut sender, authority, "/v1/policies/to-cold/run", body).await?;
    let run = report["runs"][0].clone();
    if run["failed"].as_u64() != Some(0) || run["executed"].as_u64().unwrap_or(0) == 0 {
        bail!("the move to the bucket did not complete: {run}");
    }
    Ok(run)
}

/// A tier move of `args.partitions` daily partitions hot → cold on the
/// bucket, against a plain `object_store` copy of the same hot files
/// (read, then one put each) into another bucket by as many threads as
/// the server moves partitions at once. The plain copy runs first.
fn tier_move(bench: &mut Bench, args: &StorageBenchArgs) -> anyhow::Result<()> {
    bench.moto.create_bucket("bench-move")?;
    let config = format!(
        "[datasets.moving]\nperiod = \"day\"\n[ingest]\nflush_age_ms = 86400000\nflush_bytes = 1073741824\n\
         [limits]\nbuffer_bytes_max = 4294967296\nrows_per_request_max = 1000000\n\
         [lifecycle]\nscheduler = false\nprecreate_lead_ms = 0\nmove_concurrency = {MOVE_CONCURRENCY}\n{}",
        cold_on_s3(&bench.moto, "bench-move", "", "")
    );
    let policy = to_cold_policy("moving");
    let server = bench::start_server_with(Some((&config, &[("policies/to-cold.toml", &policy)])))?;
    let authority = server.authority();
    let runtime = runtime()?;
    let load = LifecycleArgs {
        partitions: args.partitions,
        rows_per_partition: args.rows_per_partition,
        idle_partitions: 0,
        runs: 1,
    };
    runtime.block_on(async {
        bench::wait_until_up(&authority).await?;
        let mut sender = bench::connect(&authority).await?;
        bench::load_daily_partitions(&mut sender, &authority, &load).await?;
        bench::reconnect_if_closed(&mut sender, &authority).await?;
        bench::post(&mut sender, &authority, "/v1/flush", bytes::Bytes::new()).await?;
        anyhow::Ok(())
    })?;
    let hot = bench::parquet_files(&server.storage().join("hot"));
    let (raw_s, raw_bytes) = plain_copy(&bench.moto, &hot)?;
    let now_ns = (bench::LIFECYCLE_START_S + (args.partitions as i64 + 30) * bench::DAY_S) * 1_000_000_000;
    let started = Instant::now();
    let run = runtime.block_on(run_to_cold(&authority, now_ns))?;
    let move_s = started.elapsed().as_secs_f64();
    let moved = run["bytes_moved"].as_u64().unwrap_or(0) as f64;
    let (strata, raw) = (moved / 1e6 / move_s, raw_bytes as f64 / 1e6 / raw_s);
    bench.row(
        format!(
            "tier move hot → cold (s3) of {} partitions, {} files, {:.1} MB, move_concurrency {MOVE_CONCURRENCY}",
            args.partitions,
            hot.len(),
            moved / 1e6
        ),
        "",
        format!("{move_s:.2} s, {strata:.1} MB/s (executed {})", run["executed"]),
    );
    bench.row(
        format!("plain object_store copy of the same files ({MOVE_CONCURRENCY} threads: read, put)"),
        "",
        format!("{raw_s:.2} s, {raw:.1} MB/s"),
    );
    bench.row("tier move / plain copy", "≥ 0.8×", format!("{:.2}×", strata / raw));
    Ok(())
}

/// Reads each file and puts it with plain `object_store` calls into a
/// fresh bucket, [`MOVE_CONCURRENCY`] files at a time: seconds and bytes.
fn plain_copy(moto: &MotoServer, files: &[PathBuf]) -> anyhow::Result<(f64, u64)> {
    moto.create_bucket("bench-plain-copy")?;
    let journal = std::env::temp_dir().join(format!("strata-bench-plain-copy-{}", std::process::id()));
    let target = S3Target::open("plain", &moto.settings("bench-plain-copy", "plain"), &journal)?;
    let (next, bytes) = (AtomicUsize::new(0), AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..MOVE_CONCURRENCY)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = files.get(i) else { return Ok(()) };
                        let data = std::fs::read(file)?;
                        bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        target.baseline_put(&ObjectKey::data_file(1, i as i64, "plain"), data)?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().expect("a copy thread panicked"))
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    drop(target);
    let _ = std::fs::remove_dir_all(&journal);
    Ok((elapsed, bytes.into_inner()))
}

/// 2026-01-01T00:00:00Z, in seconds: `bench query`'s first row.
const CPU_START_S: i64 = 1_767_225_600;

/// Query (a) of `bench query` — 1-minute avg/max of one host over 12 h.
fn query_a() -> serde_json::Value {
    serde_json::json!({
        "time_range": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T12:00:00Z"},
        "filters": {"column": "hostname", "op": "=", "value": "host_7"},
        "downsample": {"interval": "1m", "aggregations": [{"fn": "avg", "column": "usage_user"}, {"fn": "max", "column": "usage_user"}]}
    })
}

/// Times query (a) once: milliseconds and the answer's `stats`.
async fn time_query_a(authority: &str) -> anyhow::Result<(f64, serde_json::Value)> {
    let mut sender = bench::connect(authority).await?;
    let started = Instant::now();
    let answer = bench::post_json(&mut sender, authority, "/v1/datasets/cpu/query", query_a()).await?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, answer["stats"].clone()))
}

/// Query (a) on local files, then — the partitions moved to the bucket —
/// from a cold read cache (server restarted on an emptied cache directory
/// before each run) and from a warm one; medians of `args.runs`.
fn remote_query(bench: &mut Bench, args: &StorageBenchArgs) -> anyhow::Result<()> {
    bench.moto.create_bucket("bench-query")?;
    let config = format!(
        "[lifecycle]\nscheduler = false\nprecreate_lead_ms = 0\n{}",
        cold_on_s3(&bench.moto, "bench-query", "", "")
    );
    let policy = to_cold_policy("cpu");
    let mut server = bench::start_server_with(Some((&config, &[("policies/to-cold.toml", &policy)])))?;
    let (hosts, days) = (100, 3);
    let interval_s = ((days * 86_400 * hosts) as f64 / args.query_rows as f64).max(1.0) as i64;
    eprintln!("generating {} rows ({hosts} hosts, one row per host every {interval_s} s)…", args.query_rows);
    let bodies = bench::generate_cpu_every(args.query_rows, 5_000, hosts, 1, interval_s);
    let runtime = runtime()?;
    let authority = server.authority();
    let runs = args.runs.max(1);
    let local = runtime.block_on(async {
        bench::wait_until_up(&authority).await?;
        let mut sender = bench::connect(&authority).await?;
        for body in bodies {
            bench::reconnect_if_closed(&mut sender, &authority).await?;
            bench::write(&mut sender, &authority, "/api/v2/write?bucket=cpu&precision=s", body).await?;
        }
        bench::post(&mut sender, &authority, "/v1/flush", bytes::Bytes::new()).await?;
        let mut local = Vec::new();
        for _ in 0..runs {
            local.push(time_query_a(&authority).await?.0);
        }
        run_to_cold(&authority, (CPU_START_S + 30 * bench::DAY_S) * 1_000_000_000).await?;
        anyhow::Ok(local)
    })?;
    let cache = server.data_dir.join("data").join("cache");
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let mut fetched = 0;
    for _ in 0..runs {
        server.restart_without(Some(&cache))?;
        let authority = server.authority();
        let (ms, stats) = runtime.block_on(async {
            bench::wait_until_up(&authority).await?;
            time_query_a(&authority).await
        })?;
        fetched = stats["bytes_from_remote"].as_u64().unwrap_or(0);
        if fetched == 0 {
            bail!("a query from an empty cache fetched nothing: {stats}");
        }
        cold.push(ms);
    }
    let authority = server.authority();
    for _ in 0..runs {
        let (ms, stats) = runtime.block_on(time_query_a(&authority))?;
        if stats["bytes_from_remote"].as_u64() != Some(0) {
            bail!("a query from a warm cache fetched from the bucket: {stats}");
        }
        warm.push(ms);
    }
    let (local, cold, warm) = (bench::median_ms(local), bench::median_ms(cold), bench::median_ms(warm));
    let name = format!("query (a) over {} rows, median of {runs}", args.query_rows);
    bench.row(format!("{name}: local files (before the move)"), "", format!("{local:.1} ms"));
    bench.row(
        format!("{name}: on s3, cold cache (fresh server, empty cache)"),
        "",
        format!("{cold:.1} ms ({:.1}× local; {:.1} MB fetched)", cold / local, fetched as f64 / 1e6),
    );
    bench.row(
        format!("{name}: on s3, warm cache"),
        "≤ 1.1× local",
        format!("{warm:.1} ms ({:.2}× local)", warm / local),
    );
    Ok(())
}

/// Loads one partition of about `args.big_partition_bytes`, restarts the
/// server, moves the partition to cold on the bucket (multipart; bytes
/// copied, or re-encoded with `--reencode`) and reads the peak RSS.
fn big_move_rss(bench: &mut Bench, args: &StorageBenchArgs) -> anyhow::Result<()> {
    bench.moto.create_bucket("bench-big")?;
    let reencode = if args.reencode { "zstd_level = 3\nrow_group_rows_max = 1048576\n" } else { "" };
    let multipart = "multipart_threshold_bytes = 67108864\npart_bytes = 16777216\n";
    let config =
        format!("{}{}", bench::BIG_PARTITION_CONFIG, cold_on_s3(&bench.moto, "bench-big", multipart, reencode));
    let policy = to_cold_policy("moving");
    let mut server = bench::start_server_with(Some((&config, &[("policies/to-cold.toml", &policy)])))?;
    let runtime = runtime()?;
    let rows = (args.big_partition_bytes / BYTES_PER_RANDOM_ROW).max(1) as usize;
    bench::load_big_partition(&mut server, &runtime, rows, 50_000)?;
    let moved = bench::time_big_move(&server, &runtime, "to-cold")?;
    if moved.run["failed"].as_u64() != Some(0) || moved.run["executed"].as_u64() != Some(1) {
        bail!("the large partition did not move: {}", moved.run);
    }
    let how = if args.reencode { "re-encoded (zstd 3)" } else { "byte copy" };
    bench.row(
        format!(
            "peak RSS moving one partition of {:.1} MiB ({} file(s), {rows} rows) to s3, {how}, parts of 16 MiB",
            moved.hot_bytes as f64 / 1048576.0,
            moved.files
        ),
        "< 256 MiB",
        format!(
            "{:.1} MiB ({:.1} MiB before the move), {:.1} s",
            moved.rss_peak as f64 / 1048576.0,
            moved.rss_before as f64 / 1048576.0,
            moved.move_s
        ),
    );
    Ok(())
}

/// Parquet bytes of a row of 10 random floats as the hot tier writes it
/// (`bench move`: 1,853.5 MiB for 24,000,000 rows).
const BYTES_PER_RANDOM_ROW: u64 = 81;
