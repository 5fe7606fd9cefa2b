//! `strata bench partitions`: what many partitions cost against their
//! rows. One line-protocol request of `--rows` rows, one tenant per row
//! over `--keys` tenants, into a dataset keyed by `builtin:partition-by-field`
//! on `tenant`: timed while it creates the partitions, then (after a second
//! request) the `POST /v1/flush` of them all, then into the existing
//! partitions, 7 times, the median counting. The same rows with a single
//! tenant (one partition) are the baseline, and the report is their ratios.
//! `--server-binary` (repeatable) alternates servers round by round, so an
//! old and a new build compare within one run of a shared machine.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;

use super::bench::{Server, connect, post, proc_cpu_seconds, start_server_at, wait_until_up};

/// Arguments of `strata bench partitions`.
#[derive(Debug, clap::Args)]
pub struct PartitionsArgs {
    /// Distinct tenants (partitions) of the many-partition request.
    #[arg(long, default_value_t = 5_000)]
    pub keys: usize,
    /// Rows of each request (default: one per key).
    #[arg(long)]
    pub rows: Option<usize>,
    /// The `strata` executable to serve with; repeat to compare builds,
    /// alternated round by round (default: this executable).
    #[arg(long = "server-binary")]
    pub server_binary: Vec<PathBuf>,
    /// Rounds per server binary.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
}

/// 2026-01-15T10:00:00Z, in seconds.
const JAN: i64 = 1_768_471_200;

const POLICY: &str = "name = \"tenants\"\nkind = \"partitioner\"\nplugin = \"builtin:partition-by-field\"\n\
    datasets = [\"many\", \"one\"]\n[limits]\ndeadline_ms = 60000\n[config]\nfields = [\"tenant\"]\n";

const CONFIG: &str = "[ingest]\nflush_age_ms = 86400000\nflush_bytes = 1073741824\n\
    [limits]\nbuffer_bytes_max = 8589934592\nrows_per_request_max = 10000000\n\
    [datasets.many]\nperiod = \"month\"\n[datasets.one]\nperiod = \"month\"\n";

/// One phase's wall time and server CPU, in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Timed {
    wall: f64,
    cpu: f64,
}

/// One round's figures for one server.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    one_new: Timed,
    one_existing: Timed,
    one_flush: Timed,
    many_new: Timed,
    many_existing: Timed,
    many_flush: Timed,
}

/// `rows` lines into `dataset`, row `i` of tenant `t{i % keys}`.
fn body(dataset: &str, rows: usize, keys: usize) -> Bytes {
    let mut out = String::with_capacity(rows * 64);
    for i in 0..rows {
        let tenant = i % keys;
        let time = JAN + i as i64;
        out.push_str(&format!(
            "{dataset},tenant=t{tenant},region=r{} amount={}i,price={}.25 {time}\n",
            i % 7,
            i * 10,
            i % 1000
        ));
    }
    Bytes::from(out)
}

/// Runs the benchmark.
pub fn run(args: PartitionsArgs) -> anyhow::Result<()> {
    if args.keys == 0 || args.rounds == 0 {
        bail!("--keys and --rounds must be at least 1");
    }
    let rows = args.rows.unwrap_or(args.keys);
    let binaries = if args.server_binary.is_empty() {
        vec![std::env::current_exe().context("locating the strata binary")?]
    } else {
        args.server_binary.clone()
    };
    let many = body("many", rows, args.keys);
    let one = body("one", rows, 1);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let mut results: Vec<(usize, usize, Round)> = Vec::new();
    let mut kept = Vec::new();
    for round in 0..args.rounds {
        for (b, binary) in binaries.iter().enumerate() {
            eprintln!("round {}: {} ({} rows, {} keys)…", round + 1, binary.display(), rows, args.keys);
            let server = start_server_at(binary, Some((CONFIG, &[("policies/tenants.toml", POLICY)])))?;
            let measured =
                runtime.block_on(measure(&server, &many, &one)).with_context(|| binary.display().to_string())?;
            kept.push(keep_data(server)?);
            results.push((b, round, measured));
        }
    }
    for dir in kept {
        let _ = std::fs::remove_dir_all(dir);
    }
    print_report(&binaries, rows, args.keys, &results);
    Ok(())
}

/// Stops `server` and sets its directory aside until the run ends: on ext4
/// without a journal the inode allocator skips, one by one, inodes freed in
/// the last minutes, so removing a round's 10,000 files would slow the next
/// round's flush by an amount that depends only on the bench.
fn keep_data(mut server: Server) -> anyhow::Result<PathBuf> {
    let _ = server.child.kill();
    let _ = server.child.wait();
    let kept = server.data_dir.with_extension(format!("kept-{:016x}", rand::random::<u64>()));
    std::fs::rename(&server.data_dir, &kept).context("setting a round's data aside")?;
    Ok(kept)
}

/// Warms both datasets up (created, schema known, in another month), then
/// times the one-partition and the many-partition phases.
async fn measure(server: &Server, many: &Bytes, one: &Bytes) -> anyhow::Result<Round> {
    let authority = server.authority();
    wait_until_up(&authority).await?;
    let pid = server.child.id();
    let mut sender = connect(&authority).await?;
    for dataset in ["many", "one"] {
        let warm = format!("{dataset},tenant=warm,region=r0 amount=1i,price=1.25 1735725600\n");
        timed(&mut sender, &authority, pid, &write_path(dataset), Bytes::from(warm)).await?;
    }
    timed(&mut sender, &authority, pid, "/v1/flush", Bytes::new()).await?;
    let mut round = Round {
        one_new: timed(&mut sender, &authority, pid, &write_path("one"), one.clone()).await?,
        ..Round::default()
    };
    timed(&mut sender, &authority, pid, &write_path("one"), one.clone()).await?;
    round.one_flush = timed(&mut sender, &authority, pid, "/v1/flush", Bytes::new()).await?;
    round.many_new = timed(&mut sender, &authority, pid, &write_path("many"), many.clone()).await?;
    timed(&mut sender, &authority, pid, &write_path("many"), many.clone()).await?;
    round.many_flush = timed(&mut sender, &authority, pid, "/v1/flush", Bytes::new()).await?;
    round.one_existing = median_of(&mut sender, &authority, pid, &write_path("one"), one).await?;
    round.many_existing = median_of(&mut sender, &authority, pid, &write_path("many"), many).await?;
    Ok(round)
}

/// Requests into existing partitions: the one with the median wall time of
/// [`EXISTING_REPEATS`] (a single request is a few milliseconds, so one
/// sample is mostly the machine's noise).
async fn median_of(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    pid: u32,
    path: &str,
    body: &Bytes,
) -> anyhow::Result<Timed> {
    let mut samples = Vec::with_capacity(EXISTING_REPEATS);
    for _ in 0..EXISTING_REPEATS {
        samples.push(timed(sender, authority, pid, path, body.clone()).await?);
    }
    samples.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    Ok(samples[EXISTING_REPEATS / 2])
}

/// Requests timed into existing partitions, per phase.
const EXISTING_REPEATS: usize = 7;

fn write_path(dataset: &str) -> String {
    format!("/api/v2/write?bucket={dataset}&precision=s")
}

/// Posts `body` to `path`, expecting 204 (a write) or 200 (a flush).
async fn timed(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: &str,
    pid: u32,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Timed> {
    let cpu_before = proc_cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    let status = post(sender, authority, path, body).await?;
    let wall = started.elapsed().as_secs_f64();
    if status != 204 && status != 200 {
        bail!("{path} answered {status}");
    }
    Ok(Timed { wall, cpu: proc_cpu_seconds(pid).unwrap_or(0.0) - cpu_before })
}

fn print_report(binaries: &[PathBuf], rows: usize, keys: usize, results: &[(usize, usize, Round)]) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nbench partitions: {rows} rows into {keys} partitions vs the same rows into 1 (load average {})",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("wall seconds (server CPU seconds); ratio = many / one, in the same server's round\n");
    println!(
        "{:<3} {:>5}  {:>17} {:>17} {:>7}  {:>17} {:>17} {:>7}  {:>17} {:>17}",
        "bin",
        "round",
        "1 key, new",
        "many, new",
        "ratio",
        "1 key, existing*",
        "many, existing*",
        "ratio",
        "flush 1 key",
        "flush many"
    );
    let cell = |t: Timed| format!("{:.3} ({:.2})", t.wall, t.cpu);
    for (b, round, r) in results {
        println!(
            "{:<3} {:>5}  {:>17} {:>17} {:>6.2}x  {:>17} {:>17} {:>6.2}x  {:>17} {:>17}",
            b,
            round + 1,
            cell(r.one_new),
            cell(r.many_new),
            r.many_new.wall / r.one_new.wall.max(1e-6),
            cell(r.one_existing),
            cell(r.many_existing),
            r.many_existing.wall / r.one_existing.wall.max(1e-6),
            cell(r.one_flush),
            cell(r.many_flush),
        );
    }
    for (b, binary) in binaries.iter().enumerate() {
        println!("bin {b}: {}", binary.display());
    }
    println!("* median of {EXISTING_REPEATS} requests");
    println!("goals: many-partition request ≤ 2x the one-partition request; flush of the many < 2 s");
}
