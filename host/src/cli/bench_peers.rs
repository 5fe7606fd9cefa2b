//! `strata bench peers`: the same TSBS-like cpu data, sent by the same
//! client as line protocol, into Strata and into the peers installed on
//! this machine (InfluxDB 1.x `influxd`, VictoriaMetrics
//! `victoria-metrics`), each started on a temporary directory and a
//! loopback port; then the same questions asked of each (InfluxQL for
//! InfluxDB, the structured query for Strata). A benchmark, not a test: a
//! peer that is not installed is skipped and named.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

use super::bench::{
    connect, free_port, generate_cpu, median_ms, post, post_json, proc_cpu_seconds, proc_peak_rss_bytes, send_bodies,
    start_server,
};

/// Arguments of `strata bench peers`.
#[derive(Debug, clap::Args)]
pub struct PeersArgs {
    /// Rows to load into each server.
    #[arg(long, default_value_t = 4_000_000)]
    pub rows: usize,
    /// Host counts to sweep (the data's cardinality), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub hosts: Vec<usize>,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Lines per request.
    #[arg(long, default_value_t = 5_000)]
    pub batch: usize,
    /// Timed runs of each query (the median is reported).
    #[arg(long, default_value_t = 9)]
    pub runs: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Strata,
    InfluxDb,
    VictoriaMetrics,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Strata => "Strata",
            Peer::InfluxDb => "InfluxDB",
            Peer::VictoriaMetrics => "VictoriaMetrics",
        }
    }

    /// The peer's program, looked up on PATH.
    fn program(self) -> Option<&'static str> {
        match self {
            Peer::Strata => None,
            Peer::InfluxDb => Some("influxd"),
            Peer::VictoriaMetrics => Some("victoria-metrics"),
        }
    }

    /// Where line protocol goes (timestamps in seconds).
    fn write_path(self) -> &'static str {
        match self {
            Peer::Strata => "/api/v2/write?bucket=cpu&precision=s",
            Peer::InfluxDb => "/write?db=cpu&precision=s",
            Peer::VictoriaMetrics => "/write?precision=s",
        }
    }
}

/// `program`'s path if it is on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// A server this benchmark started, stopped (and its directory removed)
/// on drop.
struct Running {
    /// A peer's process (a Strata server is its own `Server`).
    child: Option<Child>,
    /// The server's process id (for CPU and RSS).
    pid: u32,
    authority: String,
    dir: Option<PathBuf>,
    _strata: Option<super::bench::Server>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn start(peer: Peer, program: &Path) -> anyhow::Result<Running> {
    let dir =
        std::env::temp_dir().join(format!("strata-peers-{}-{}", std::process::id(), peer.program().unwrap_or("")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let authority = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("log"))?;
    let mut command = Command::new(program);
    match peer {
        Peer::InfluxDb => {
            let config = format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  max-series-per-database = 0\n  \
                 max-values-per-tag = 0\n  query-log-enabled = false\n[http]\n  bind-address = \"{authority}\"\n  \
                 log-enabled = false\n[monitor]\n  store-enabled = false\n",
                rpc = free_port()?,
                d = dir.display(),
            );
            std::fs::write(dir.join("influxdb.conf"), config)?;
            command.arg("-config").arg(dir.join("influxdb.conf"));
        }
        Peer::VictoriaMetrics => {
            command
                .arg(format!("-storageDataPath={}", dir.join("data").display()))
                .arg(format!("-httpListenAddr={authority}"))
                .arg("-retentionPeriod=100y");
        }
        Peer::Strata => unreachable!("Strata starts through bench::start_server"),
    }
    let child = command.stdout(log.try_clone()?).stderr(log).stdin(Stdio::null()).spawn()?;
    Ok(Running { pid: child.id(), child: Some(child), authority, dir: Some(dir), _strata: None })
}

fn start_strata() -> anyhow::Result<Running> {
    let server = start_server()?;
    Ok(Running { child: None, pid: server.child.id(), authority: server.authority(), dir: None, _strata: Some(server) })
}

/// A request and its status and body; any status.
async fn request(authority: &str, method: &str, path: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
    let mut sender = connect(authority).await?;
    let request = Request::builder().method(method).uri(path).header("host", authority).body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// Waits until `GET path` answers 2xx.
async fn wait_for(authority: &str, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((status, _)) = request(authority, "GET", path, Bytes::new()).await
            && (200..300).contains(&status)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{authority} did not answer {path}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one peer measured at one cardinality.
#[derive(Default, Clone)]
struct Measured {
    rows_per_s: f64,
    cpu_s_per_million: Option<f64>,
    peak_rss_bytes: Option<u64>,
    query_a_ms: Option<f64>,
    count_ms: Option<f64>,
    count: Option<i64>,
}

/// Loads the bodies into `peer`, then times the queries.
async fn measure(
    peer: Peer,
    running: &Running,
    bodies: &Arc<Vec<Bytes>>,
    rows: usize,
    args: &PeersArgs,
    end: &str,
) -> anyhow::Result<Measured> {
    let authority = running.authority.as_str();
    match peer {
        Peer::Strata => super::bench::wait_until_up(authority).await?,
        Peer::InfluxDb => {
            wait_for(authority, "/ping").await?;
            let (status, body) = request(authority, "POST", "/query?q=CREATE%20DATABASE%20cpu", Bytes::new()).await?;
            if status != 200 {
                bail!("InfluxDB refused CREATE DATABASE: {status} {}", String::from_utf8_lossy(&body));
            }
        }
        Peer::VictoriaMetrics => wait_for(authority, "/health").await?,
    }
    let pid = running.pid;
    let cpu_before = proc_cpu_seconds(pid);
    let started = Instant::now();
    send_bodies(bodies, authority, peer.write_path(), args.connections).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = proc_cpu_seconds(pid).zip(cpu_before).map(|(after, before)| after - before);
    let mut measured = Measured {
        rows_per_s: rows as f64 / elapsed,
        cpu_s_per_million: cpu.map(|cpu| cpu / (rows as f64 / 1e6)),
        peak_rss_bytes: proc_peak_rss_bytes(pid),
        ..Measured::default()
    };
    match peer {
        Peer::Strata => {
            let mut sender = connect(authority).await?;
            post(&mut sender, authority, "/v1/flush", Bytes::new()).await?;
            let a = timed(args.runs, || strata_query(authority, query_a_structured())).await?;
            let (count_ms, count) = timed_count(args.runs, || strata_query(authority, count_structured(end))).await?;
            (measured.query_a_ms, measured.count_ms, measured.count) = (Some(a), Some(count_ms), count);
        }
        Peer::InfluxDb => {
            let a = timed(args.runs, || influxql(authority, QUERY_A_INFLUXQL.to_string())).await?;
            let (count_ms, count) =
                timed_count(args.runs, || influxql(authority, "SELECT count(usage_user) FROM cpu".to_string())).await?;
            (measured.query_a_ms, measured.count_ms, measured.count) = (Some(a), Some(count_ms), count);
        }
        Peer::VictoriaMetrics => {}
    }
    Ok(measured)
}

const START: &str = "2026-01-01T00:00:00Z";
const NOON: &str = "2026-01-01T12:00:00Z";
const QUERY_A_INFLUXQL: &str = "SELECT mean(usage_user), max(usage_user) FROM cpu WHERE hostname = 'host_7' AND \
     time >= '2026-01-01T00:00:00Z' AND time < '2026-01-01T12:00:00Z' GROUP BY time(1m) fill(none)";

fn query_a_structured() -> serde_json::Value {
    serde_json::json!({"time_range": {"start": START, "end": NOON},
        "filters": {"column": "hostname", "op": "=", "value": "host_7"},
        "downsample": {"interval": "1m", "aggregations": [{"fn": "avg", "column": "usage_user"}, {"fn": "max", "column": "usage_user"}]}})
}

fn count_structured(end: &str) -> serde_json::Value {
    serde_json::json!({"time_range": {"start": START, "end": end},
        "downsample": {"aggregations": [{"fn": "count", "column": "usage_user"}]}})
}

/// A structured query's answer: its rows, and the first row's `count…`
/// column, if any.
async fn strata_query(authority: &str, body: serde_json::Value) -> anyhow::Result<(usize, Option<i64>)> {
    let mut sender = connect(authority).await?;
    let answer = post_json(&mut sender, authority, "/v1/datasets/cpu/query", body).await?;
    let rows = answer["rows"].as_array().map_or(0, Vec::len);
    let count = answer["rows"][0]
        .as_object()
        .and_then(|row| row.iter().find(|(name, _)| name.starts_with("count")).and_then(|(_, value)| value.as_i64()));
    Ok((rows, count))
}

/// An InfluxQL query's answer: its values, and the first value's last
/// column as an integer (a count).
async fn influxql(authority: &str, q: String) -> anyhow::Result<(usize, Option<i64>)> {
    let path =
        format!("/query?db=cpu&epoch=ns&q={}", form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>());
    let (status, body) = request(authority, "GET", &path, Bytes::new()).await?;
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status != 200 || answer["results"][0]["error"].is_string() {
        bail!("InfluxDB answered {status}: {answer}");
    }
    let values = &answer["results"][0]["series"][0]["values"];
    let count = values[0].as_array().and_then(|row| row.last()).and_then(serde_json::Value::as_i64);
    Ok((values.as_array().map_or(0, Vec::len), count))
}

/// The median time of `runs` runs of `query` (after one warm-up run), which
/// must answer rows.
async fn timed<F, Fut>(runs: usize, query: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(usize, Option<i64>)>>,
{
    Ok(timed_count(runs, query).await?.0)
}

async fn timed_count<F, Fut>(runs: usize, query: F) -> anyhow::Result<(f64, Option<i64>)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(usize, Option<i64>)>>,
{
    let (rows, count) = query().await?;
    if rows == 0 {
        bail!("the query answered no rows");
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        query().await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median_ms(samples), count))
}

/// Runs the benchmark.
pub fn run(args: PeersArgs) -> anyhow::Result<()> {
    let mut peers = vec![(Peer::Strata, PathBuf::new())];
    for peer in [Peer::VictoriaMetrics, Peer::InfluxDb] {
        let program = peer.program().expect("a peer has a program");
        match on_path(program) {
            Some(path) => peers.push((peer, path)),
            None => eprintln!(
                "{} skipped: `{program}` is not on PATH (install it: apt-get install influxdb victoria-metrics)",
                peer.name()
            ),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    for hosts in &args.hosts {
        eprintln!("generating {} rows ({hosts} hosts, seed {})…", args.rows, args.seed);
        let bodies = Arc::new(generate_cpu(args.rows, args.batch, *hosts, args.seed));
        let last_s = 1_767_225_600 + (args.rows / hosts) as i64 * 10 + 10;
        let end = crate::time::rfc3339(last_s * 1_000_000_000);
        let mut results = Vec::new();
        for (peer, program) in &peers {
            eprintln!("{}: loading…", peer.name());
            let running = if *peer == Peer::Strata { start_strata()? } else { start(*peer, program)? };
            let measured = runtime
                .block_on(measure(*peer, &running, &bodies, args.rows, &args, &end))
                .with_context(|| peer.name())?;
            drop(running);
            results.push((*peer, measured));
        }
        print_table(&args, *hosts, &results);
    }
    Ok(())
}

fn print_table(args: &PeersArgs, hosts: usize, results: &[(Peer, Measured)]) {
    println!(
        "\nstrata bench peers — {} rows, {hosts} hosts, 10 tags, 10 fields, 10 s interval, {}-line batches, {} connections; queries: median of {}",
        args.rows, args.batch, args.connections, args.runs
    );
    let header: Vec<String> = results.iter().map(|(peer, _)| peer.name().to_string()).collect();
    println!("  {:<44} {}", "", header.iter().map(|h| format!("{h:>22}")).collect::<String>());
    let strata = &results[0].1;
    let row = |label: &str, value: &dyn Fn(&Measured) -> Option<f64>, unit: &str, lower_is_better: bool| {
        let cells: String = results
            .iter()
            .map(|(peer, m)| match value(m) {
                None => format!("{:>22}", "—"),
                Some(v) if *peer == Peer::Strata => format!("{:>22}", format!("{v:.1} {unit}")),
                Some(v) => {
                    let ratio = value(strata).map(|s| if lower_is_better { s / v } else { v / s });
                    let ratio = ratio.map_or(String::new(), |r| format!(" ({r:.2}x)"));
                    format!("{:>22}", format!("{v:.1} {unit}{ratio}"))
                }
            })
            .collect();
        println!("  {label:<44} {cells}");
    };
    row("ingest (thousand rows/s)", &|m| Some(m.rows_per_s / 1e3), "k", false);
    row("server CPU per million rows (s)", &|m| m.cpu_s_per_million, "s", true);
    row("server peak RSS (MB)", &|m| m.peak_rss_bytes.map(|b| b as f64 / 1e6), "MB", true);
    row("query (a): 1-min mean/max, one host, 12 h", &|m| m.query_a_ms, "ms", true);
    row("count of a field over all rows", &|m| m.count_ms, "ms", true);
    let counts: Vec<String> =
        results.iter().filter_map(|(peer, m)| Some(format!("{} {}", peer.name(), m.count?))).collect();
    println!("  counted rows: {} (ratios: Strata's figure over the peer's, < 1 is Strata ahead)", counts.join(", "));
}
