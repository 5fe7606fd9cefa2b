//! `strata bench import`: `strata import` of the `bench ingest` data written
//! as a line-protocol file, against `strata bench ingest` on the same data
//! in the same run (each against a fresh server of its own).

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use super::bench::{generate_cpu, start_server_with, wait_until_up};

/// Arguments of `strata bench import`.
#[derive(Debug, clap::Args)]
pub struct ImportBenchArgs {
    /// Rows in the file.
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: usize,
    /// Rows per request, for both.
    #[arg(long, default_value_t = 5_000)]
    pub batch: usize,
    /// Concurrent connections, for both.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Distinct hosts (series).
    #[arg(long, default_value_t = 100)]
    pub hosts: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs the comparison and prints it.
pub fn run(args: ImportBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("strata-bench-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("cpu.lp");
    eprintln!("writing {} rows to {}…", args.rows, file.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
    for body in generate_cpu(args.rows, args.batch, args.hosts, args.seed) {
        out.write_all(&body)?;
    }
    // On disk before anything is timed: flushing 700 MB of dirty pages
    // would otherwise slow the WAL's fsyncs of whichever run comes first.
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let file_bytes = std::fs::metadata(&file)?.len();
    let exe = std::env::current_exe().context("locating the strata binary")?;

    let before = bench_ingest(&exe, &args)?;
    let server = start_server_with(None)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(wait_until_up(&server.authority()))?;
    let started = Instant::now();
    let import = Command::new(&exe)
        .arg("import")
        .arg(&file)
        .args(["--dataset", "cpu", "--precision", "s", "--quiet", "--url", &server.url])
        .args(["--batch-rows", &args.batch.to_string(), "--connections", &args.connections.to_string()])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .context("running strata import")?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    if !import.status.success() {
        bail!("strata import failed: {}", String::from_utf8_lossy(&import.stderr));
    }
    let import_rate = args.rows as f64 / elapsed;
    drop(server);
    // Ingest before and after the import: the machine's load drifts.
    let after = bench_ingest(&exe, &args)?;
    let ingest_rate = (before + after) / 2.0;
    println!(
        "strata bench import — {} rows ({:.1} MB of line protocol), batches of {}, {} connections, WAL fsync on",
        args.rows,
        file_bytes as f64 / 1e6,
        args.batch,
        args.connections
    );
    println!("  bench ingest (bodies in memory)   {ingest_rate:.0} rows/s (before {before:.0}, after {after:.0})");
    println!("  strata import (file, keyed, CLI)  {import_rate:.0} rows/s ({elapsed:.3} s, process start to exit)");
    println!("  ratio                             {:.2}x (goal ≥ 0.8x)", import_rate / ingest_rate);
    Ok(())
}

/// Runs `strata bench ingest` on the same data; its throughput in rows/s.
fn bench_ingest(exe: &std::path::Path, args: &ImportBenchArgs) -> anyhow::Result<f64> {
    let ingest = Command::new(exe)
        .args(["bench", "ingest", "--rows", &args.rows.to_string(), "--batch", &args.batch.to_string()])
        .args(["--connections", &args.connections.to_string(), "--hosts", &args.hosts.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .output()
        .context("running strata bench ingest")?;
    let report = String::from_utf8_lossy(&ingest.stdout).into_owned();
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix("throughput")?.trim().strip_suffix("rows/s")?.trim().parse::<f64>().ok())
        .with_context(|| format!("no throughput in the bench ingest report:\n{report}"))
}
