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
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::RngCore;

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
}

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
        let mut server = MotoServer { child: None, port, binary: MotoServer::binary()? };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.binary)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
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
}

/// What every scenario gets.
struct Bench {
    moto: MotoServer,
    files: Vec<PathBuf>,
    bytes_total: u64,
}

/// Runs every scenario and prints the report.
pub fn run(args: StorageBenchArgs) -> anyhow::Result<()> {
    let moto = MotoServer::start()?;
    let dir = std::env::temp_dir().join(format!("strata-bench-storage-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let files = write_files(&dir, args.files, args.file_mib)?;
        let bench = Bench { moto, files, bytes_total: args.files as u64 * args.file_mib * 1024 * 1024 };
        println!(
            "strata bench storage — {} files × {} MiB on moto_server {MOTO_VERSION} (loopback), MB/s (10^6 bytes)",
            args.files, args.file_mib
        );
        throughput(&bench, "single-part", u64::MAX, 16)?;
        throughput(&bench, "multipart", 0, args.part_mib)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
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
fn throughput(bench: &Bench, label: &str, threshold: u64, part_mib: u64) -> anyhow::Result<()> {
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
    let parts = if threshold == 0 { format!(" (parts of {part_mib} MiB, both)") } else { String::new() };
    println!(
        "  {label:<12} upload   put_file {:>7.1} MB/s   object_store {:>7.1} MB/s   ratio {:.2}{parts}",
        mbs(timed.put),
        mbs(timed.raw_put),
        timed.raw_put.as_secs_f64() / timed.put.as_secs_f64()
    );
    println!(
        "  {label:<12} download get_to   {:>7.1} MB/s   object_store {:>7.1} MB/s   ratio {:.2}",
        mbs(timed.get),
        mbs(timed.raw_get),
        timed.raw_get.as_secs_f64() / timed.get.as_secs_f64()
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
