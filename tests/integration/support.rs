//! Starts the real `strata` binary on port 0 with its own data directory,
//! waits for `/ready`, and kills it on drop; dumps its log if a test failed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampNanosecondType, UInt64Type};
use serde_json::{Value, json};

pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    keep_dir: bool,
    open_files_max: Option<u32>,
    tls_root: Option<Vec<u8>>,
}

/// How to start a server beyond its configuration.
#[derive(Default)]
pub struct Launch<'a> {
    /// Environment variables (fail points).
    pub env: &'a [(&'a str, &'a str)],
    /// Files written next to `strata.toml` first.
    pub files: &'a [(&'a str, &'a [u8])],
    /// `ulimit -n` for the server process.
    pub open_files_max: Option<u32>,
    /// The PEM certificate test clients trust (an `https` server's).
    pub tls_root: Option<Vec<u8>>,
}

/// Every file under `dir`, recursively (nothing when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

pub use strata::cli::bench_storage::MotoServer;

/// A `moto_server` on a free loopback port (killed on drop); a missing
/// `moto_server` fails the test, naming how to install it.
pub fn moto() -> MotoServer {
    MotoServer::start().unwrap_or_else(|error| panic!("{error:#}"))
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-test-{name}-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `strata serve ARGS` in `dir` for a server expected to refuse to
/// start: waits for it to exit (at most 30 s; past that it is killed and
/// the test fails with `refusal`, what it should have refused) and returns
/// its output.
pub fn serve_until_exit(dir: &Path, args: &[&std::ffi::OsStr], refusal: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(dir)
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the server started: it should have refused {refusal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

impl Server {
    /// Starts a server with `config` (TOML) in a fresh data directory.
    pub fn start(name: &str, config: &str) -> Server {
        Server::start_with_env(name, config, &[])
    }

    pub fn start_with_env(name: &str, config: &str, env: &[(&str, &str)]) -> Server {
        Server::start_with_files(name, config, env, &[])
    }

    /// Starts a server after writing `files` (paths relative to the root
    /// directory that holds `strata.toml`, e.g. `policies/keep.toml`).
    pub fn start_with_files(name: &str, config: &str, env: &[(&str, &str)], files: &[(&str, &[u8])]) -> Server {
        Server::launch(name, config, Launch { env, files, ..Launch::default() })
    }

    /// A server with its configuration written but not started, so a test
    /// can prepare its data directory (e.g. `strata token create`) first;
    /// `start_again` starts it.
    pub fn prepare(name: &str, config: &str) -> Server {
        Server::prepare_launch(name, config, Launch::default())
    }

    /// Starts a server as `launch` says.
    pub fn launch(name: &str, config: &str, launch: Launch) -> Server {
        let mut server = Server::prepare_launch(name, config, launch);
        server.spawn();
        server.wait_ready();
        server
    }

    fn prepare_launch(name: &str, config: &str, launch: Launch) -> Server {
        let (env, files) = (launch.env, launch.files);
        let root = temp_dir(name);
        for (path, contents) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        let config_path = root.join("strata.toml");
        std::fs::write(&config_path, config).unwrap();
        Server {
            child: None,
            url: String::new(),
            data_dir: root.join("data"),
            config_path,
            log_path: root.join("server.log"),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            keep_dir: false,
            open_files_max: launch.open_files_max,
            tls_root: launch.tls_root,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).unwrap();
        let binary = env!("CARGO_BIN_EXE_strata");
        let mut command = match self.open_files_max {
            // `exec` keeps the process id: kill and pid() reach the server.
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(binary);
                shell
            }
            None => Command::new(binary),
        };
        // The root is the working directory, so `./policies` is the test's
        // own (usually absent) directory, never the repository's.
        command
            .current_dir(self.root())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("STRATA_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn strata");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        self.url = line
            .trim()
            .strip_prefix("strata listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", self.log()))
            .to_string();
        std::thread::spawn(move || for _ in reader.lines() {});
        self.child = Some(child);
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = self.client().get(format!("{}/ready", self.url)).send()
                && response.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sets fail points for the next start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Waits for the process to exit on its own (e.g. a fail point aborted it).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
        assert!(status.success());
        self.wait_exit()
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready();
    }

    /// Starts again after the process has exited.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
        self.wait_ready();
    }

    /// The directory holding `strata.toml`, the data directory and the log.
    pub fn root(&self) -> PathBuf {
        self.data_dir.parent().unwrap().to_path_buf()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A client for this server: trusts its certificate when it serves https.
    pub fn client(&self) -> reqwest::blocking::Client {
        match &self.tls_root {
            None => client(),
            Some(pem) => reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
                .build()
                .unwrap(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client().get(format!("{}{path}", self.url)).send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    pub fn get_text(&self, path: &str) -> String {
        self.client().get(format!("{}{path}", self.url)).send().unwrap().text().unwrap()
    }

    pub fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
        self.post_within(path, body, Duration::from_secs(60))
    }

    /// [`Server::post`] with its own client timeout, for a request a loaded
    /// machine may take longer than a minute to answer.
    pub fn post_within(&self, path: &str, body: impl Into<reqwest::blocking::Body>, timeout: Duration) -> (u16, Value) {
        let request = self.client().post(format!("{}{path}", self.url)).timeout(timeout);
        let response = request.body(body).send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// Sends `method path` with extra `headers`, and returns the status, the
    /// response headers and the body (JSON, else `Null`).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::blocking::Body>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = client().request(method, format!("{}{path}", self.url)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        (status, headers, response.json().unwrap_or(Value::Null))
    }

    /// Sends `method path` over a raw socket, exactly as written (HTTP clients
    /// normalise paths like `/%2e%2e/`), and returns the status and body.
    pub fn raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        use std::io::{Read, Write};
        let authority = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(authority).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let json = response.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
        (status, json)
    }

    pub fn flush(&self) {
        let (status, body) = self.post("/v1/flush", "");
        assert_eq!(status, 200, "{body}");
    }

    /// Every committed row of a dataset, read from its Parquet files through
    /// the manifest, each as `{column: value}` with time as epoch ns.
    pub fn committed_rows(&self, dataset: &str) -> Vec<BTreeMap<String, Value>> {
        let (status, manifest) = self.get(&format!("/v1/datasets/{dataset}/partitions"));
        assert_eq!(status, 200, "{manifest}");
        let mut rows = Vec::new();
        for partition in manifest["partitions"].as_array().unwrap() {
            for file in partition["files"].as_array().unwrap() {
                rows.extend(read_parquet(Path::new(file["path"].as_str().unwrap())));
            }
        }
        rows
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- strata log ({}) ----\n{}", self.log_path.display(), self.log());
        } else if !self.keep_dir {
            let _ = std::fs::remove_dir_all(self.data_dir.parent().unwrap());
        }
    }
}

/// A store opened in this process on a stopped server's data directory
/// (default configuration), its configuration, and a runtime to drive
/// queries on it.
pub fn open_store(
    data_dir: &Path,
) -> (std::sync::Arc<strata::config::Config>, tokio::runtime::Runtime, std::sync::Arc<strata::store::Store>) {
    let mut config = strata::config::Config::default();
    config.server.data_dir = data_dir.to_path_buf();
    config.validate().unwrap();
    let config = std::sync::Arc::new(config);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (store, _) = strata::store::Store::open(config.clone()).unwrap();
    (config, runtime, std::sync::Arc::new(store))
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// Reads a Parquet file into rows.
pub fn read_parquet(path: &Path) -> Vec<BTreeMap<String, Value>> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        for row in 0..batch.num_rows() {
            let mut out = BTreeMap::new();
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                if column.is_null(row) {
                    continue;
                }
                let value = match column.data_type() {
                    DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                        json!(column.as_primitive::<TimestampNanosecondType>().value(row))
                    }
                    DataType::Float64 => json!(column.as_primitive::<Float64Type>().value(row)),
                    DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(row)),
                    DataType::UInt64 => json!(column.as_primitive::<UInt64Type>().value(row)),
                    DataType::Boolean => json!(column.as_boolean().value(row)),
                    DataType::Dictionary(_, _) => {
                        let dict = column.as_dictionary::<Int32Type>();
                        let key = dict.keys().value(row) as usize;
                        json!(dict.values().as_string::<i32>().value(key))
                    }
                    other => panic!("unexpected column type {other}"),
                };
                out.insert(field.name().clone(), value);
            }
            rows.push(out);
        }
    }
    rows
}

/// Each column's kind (`tag`, `integer`, `float` …) by name, from a
/// `GET /v1/datasets/{ds}` answer.
pub fn column_kinds(dataset: &Value) -> BTreeMap<String, String> {
    dataset["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["kind"].as_str().unwrap().to_string()))
        .collect()
}

/// The TOML of storage target `remote`: bucket `bucket` of `moto` under
/// prefix `strata`, with moto's test credentials and short timeouts.
pub fn remote_target_toml(moto: &MotoServer, bucket: &str) -> String {
    use strata::cli::bench_storage::{MOTO_ACCESS_KEY_ID, MOTO_SECRET_ACCESS_KEY};
    format!(
        "[storage.targets.remote]\nkind = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"strata\"\nendpoint = \"{}\"\n\
         allow_http = true\naccess_key_id = \"{MOTO_ACCESS_KEY_ID}\"\nsecret_access_key = \"{MOTO_SECRET_ACCESS_KEY}\"\n\
         retries = 1\nconnect_timeout_ms = 500\nrequest_timeout_ms = 5000\n",
        moto.endpoint(),
    )
}
