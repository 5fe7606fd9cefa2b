//! The HTTP edge against the real binary: connection limits, timeouts,
//! file-descriptor exhaustion, Host/Origin checks, HTTP/2 and TLS.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Launch, Server, serve_until_exit, temp_dir};

/// A response read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_string())
        })
    }
}

fn authority(server: &Server) -> String {
    server.url.split("://").nth(1).unwrap().to_string()
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(authority(server)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Reads one response: the head, then `Content-Length` bytes (or to EOF).
/// `None` when the connection closed (or reset) before a status line.
fn read_response(stream: &mut TcpStream) -> Option<Raw> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut raw = Raw { status, head, body: buffer[head_end..].to_vec() };
    let length = raw.header("content-length").and_then(|v| v.parse::<usize>().ok());
    while length.is_none_or(|length| raw.body.len() < length) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.body.extend_from_slice(&chunk[..n]),
        }
    }
    Some(raw)
}

/// Sends one request with `headers` (a `Host` naming the server unless
/// given) on a fresh connection and reads the answer.
fn send(server: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Raw {
    let mut stream = connect(server);
    let mut request = format!("{method} {path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {}\r\n", authority(server)));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    read_response(&mut stream).unwrap_or_else(|| panic!("{method} {path}: no answer"))
}

/// Whether the server closed `stream` (EOF or reset) within `wait`.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

fn health_on(stream: &mut TcpStream, server: &Server) -> Option<Raw> {
    let request = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", authority(server));
    stream.write_all(request.as_bytes()).ok()?;
    read_response(stream)
}

#[test]
fn connections_past_the_limit_get_a_prompt_503_and_capacity_returns() {
    let server = Server::start("edge-connections", "[server]\nconnections_max = 4\nheader_read_timeout_ms = 60000\n");
    // Let the readiness probe's connection close on the server's side too.
    std::thread::sleep(Duration::from_millis(300));
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect(&server)).collect();
    let health = health_on(&mut held[0], &server).expect("a connection within the limit is served");
    assert_eq!(health.status, 200);

    let mut extra = connect(&server);
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let refused = read_response(&mut extra).expect("the extra connection is answered, not left hanging");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "too_many_connections", "{refused:?}");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert!(closed_within(&mut extra, Duration::from_secs(5)), "the refused connection is closed");

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut fresh = connect(&server);
        if health_on(&mut fresh, &server).is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "no connection was served after the others closed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn slow_request_heads_are_cut_off_while_health_keeps_answering() {
    let server = Server::start("edge-slowloris", "[server]\nheader_read_timeout_ms = 500\n");
    let partial = format!("GET /health HTTP/1.1\r\nHost: {}\r\n", authority(&server));
    let mut slow: Vec<(TcpStream, bool)> = (0..200)
        .map(|_| {
            let mut stream = connect(&server);
            stream.write_all(partial.as_bytes()).unwrap();
            (stream, false)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while slow.iter().any(|(_, closed)| !closed) && Instant::now() < deadline {
        // A header line every 100 ms: trickling does not extend the deadline.
        for (stream, closed) in slow.iter_mut().filter(|(_, closed)| !closed) {
            *closed = stream.write_all(b"X-Slow: 1\r\n").is_err();
        }
        let (status, _) = server.get("/health");
        assert_eq!(status, 200, "/health answers while the slow clients wait");
        std::thread::sleep(Duration::from_millis(100));
    }
    let open =
        slow.iter_mut().map(|(stream, _)| closed_within(stream, Duration::from_millis(500))).filter(|c| !c).count();
    assert_eq!(open, 0, "every connection that never finished its head is closed");
}

#[test]
fn a_stalled_or_crawling_body_gets_408_and_a_closed_connection() {
    let server = Server::start(
        "edge-stall",
        "[server]\nbody_read_timeout_ms = 500\nbody_bytes_per_second_min = 200000\nheader_read_timeout_ms = 60000\n",
    );
    // Half of an 8 MB body, then nothing.
    let mut stalled = connect(&server);
    let head = format!(
        "POST /v1/datasets/stall/records HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 8000000\r\n\r\n[",
        authority(&server)
    );
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&vec![b' '; 4_000_000]).unwrap();
    let answer = read_response(&mut stalled);
    if let Some(answer) = &answer {
        assert_eq!(answer.status, 408, "{answer:?}");
        assert_eq!(answer.json()["error"]["code"], "request_timeout", "{answer:?}");
        assert!(answer.json()["error"]["message"].as_str().unwrap().contains("body_read_timeout_ms"), "{answer:?}");
    }
    assert!(closed_within(&mut stalled, Duration::from_secs(10)), "the stalled connection is closed");

    // 10 bytes every 50 ms: never a long pause, but far below the minimum rate.
    let mut crawling = connect(&server);
    let head = head.replace("8000000", "1000");
    crawling.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    crawling.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(10) {
        if crawling.write_all(b"          ").is_err() {
            break;
        }
        match crawling.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_bytes_per_second_min"), "{text}");
    assert!(closed_within(&mut crawling, Duration::from_secs(10)), "the crawling connection is closed");
    let (status, _) = server.get("/health");
    assert_eq!(status, 200);
}

/// The number of descriptors process `pid` holds once it has stopped
/// opening more: unchanged for a second (at most 60 s).
#[test]
fn bodies_being_read_share_a_memory_budget() {
    let server = Server::start(
        "edge-body-budget",
        "[limits]\nbody_bytes_max = 1048576\n[server]\nbody_bytes_in_flight_max = 2162688\n\
         body_read_timeout_ms = 60000\nheader_read_timeout_ms = 60000\n",
    );
    // Two uploads announce 1 MiB each, send a little and stall: together
    // they hold all but 64 KiB of the budget.
    let head = |length: usize| {
        format!(
            "POST /v1/datasets/budget/records HTTP/1.1\r\nHost: {}\r\nContent-Length: {length}\r\n\r\n[",
            authority(&server)
        )
    };
    let upload = || {
        let mut stream = connect(&server);
        stream.write_all(head(1_048_576).as_bytes()).unwrap();
        stream
    };
    let mut stalled = vec![upload(), upload()];
    // An upload is refused if a probe holds part of the budget when it
    // arrives; it is replaced, so that both end up holding their share.
    let answered = |stream: &mut TcpStream| {
        stream.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut byte = [0u8; 1];
        !matches!(stream.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = format!("[{}]", r#"{"v":1},"#.repeat(10).trim_end_matches(','));
    let padded = format!("{body}{}", " ".repeat(600_000));
    let mut written = 0;
    let refused = loop {
        for stream in &mut stalled {
            if answered(stream) {
                *stream = upload();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let answer = send(&server, "POST", "/v1/datasets/budget/records", &[], &padded);
        if answer.status == 503 {
            break answer;
        }
        assert_eq!(answer.status, 200, "{answer:?}");
        written += 10;
        assert!(Instant::now() < deadline, "two stalled uploads never held the budget");
    };
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "buffer_full", "{refused:?}");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"), "{refused:?}");
    assert!(
        refused.json()["error"]["message"].as_str().unwrap().contains("server.body_bytes_in_flight_max"),
        "{refused:?}"
    );
    // A small body still fits in what is left.
    assert_eq!(send(&server, "POST", "/v1/datasets/budget/records", &[], &body).status, 200);
    // One upload gone: its share returns.
    drop(stalled.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = send(&server, "POST", "/v1/datasets/budget/records", &[], &padded);
        if answer.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the budget came back: {answer:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.get("/v1/datasets/budget").1["rows"], written + 20);
}

fn settled_descriptors(pid: u32) -> usize {
    let count = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut since) = (count(), Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        assert!(Instant::now() < deadline, "the server keeps opening descriptors");
        std::thread::sleep(Duration::from_millis(100));
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

#[test]
fn running_out_of_file_descriptors_sheds_connections_and_recovers() {
    let config = "[server]\nconnections_max = 100000\nheader_read_timeout_ms = 60000\nidle_timeout_ms = 60000\n";
    let server = Server::launch("edge-fds", config, Launch { open_files_max: Some(128), ..Launch::default() });
    // DuckDB aborts the process when it cannot open a descriptor, so the
    // query engine's background warm-up must be done before they run out.
    let open_fds = settled_descriptors(server.pid());
    assert!(open_fds < 100, "the server needs {open_fds} descriptors before any connection");
    let mut kept_alive = connect(&server);
    assert_eq!(health_on(&mut kept_alive, &server).map(|r| r.status), Some(200));

    let started = Instant::now();
    let mut clients: Vec<TcpStream> = (0..300).map(|_| connect(&server)).collect();
    std::thread::sleep(Duration::from_secs(1));
    let (mut shed, mut held) = (Vec::new(), 0);
    for client in &mut clients {
        client.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 4096];
        match client.read(&mut buffer) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => held += 1,
            Ok(n) => shed.push(String::from_utf8_lossy(&buffer[..n]).to_string()),
            Err(e) => shed.push(e.to_string()),
        }
    }
    assert!(held > 0 && !shed.is_empty(), "held {held}, shed {}", shed.len());
    assert!(
        shed.iter().any(|answer| answer.starts_with("HTTP/1.1 503") && answer.contains("file descriptors")),
        "shed connections are told why: {:?}",
        &shed[..shed.len().min(3)]
    );
    // Connections already open keep being served.
    assert_eq!(health_on(&mut kept_alive, &server).map(|r| r.status), Some(200));

    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answered = server.client().get(format!("{}/health", server.url)).send().map(|r| r.status().as_u16());
        if answered.as_ref().is_ok_and(|status| *status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "/health did not recover: {answered:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let logged = server.log().matches("out of file descriptors").count() as u64;
    assert!(logged >= 1, "the condition is logged");
    assert!(logged <= started.elapsed().as_secs() + 1, "logged {logged} times: at most once per second");
}

#[test]
fn idle_connections_do_not_pin_descriptors() {
    let config = "[server]\nheader_read_timeout_ms = 60000\nidle_timeout_ms = 2000\n";
    let server = Server::start("edge-idle", config);
    let baseline = settled_descriptors(server.pid());
    let count = || std::fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap().count();
    // HTTP/1.1 keep-alive and HTTP/2 connections, each idle after one request.
    let mut kept: Vec<TcpStream> = (0..10).map(|_| connect(&server)).collect();
    for stream in &mut kept {
        assert_eq!(health_on(stream, &server).map(|r| r.status), Some(200));
    }
    let h2: Vec<reqwest::blocking::Client> = (0..10)
        .map(|_| {
            let client = reqwest::blocking::Client::builder().http2_prior_knowledge().build().unwrap();
            assert_eq!(client.get(format!("{}/health", server.url)).send().unwrap().status().as_u16(), 200);
            client
        })
        .collect();
    assert!(count() >= baseline + 20, "{} descriptors, {baseline} before", count());
    let deadline = Instant::now() + Duration::from_secs(10);
    while count() > baseline {
        assert!(Instant::now() < deadline, "idle connections stay open: {} descriptors, {baseline} before", count());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(kept.iter_mut().all(|stream| closed_within(stream, Duration::from_secs(1))));
    drop(h2);
}

#[test]
fn host_and_origin_checks_refuse_rebinding_and_cross_site_requests() {
    let server = Server::start("edge-site", "[server]\nallowed_origins = [\"http://dashboard.test:3000\"]\n");
    let port = authority(&server).rsplit(':').next().unwrap().to_string();
    let local = format!("localhost:{port}");
    let own_origin = format!("http://{}", authority(&server));
    let code = |raw: &Raw| raw.json()["error"]["code"].as_str().unwrap_or("").to_string();

    // DNS rebinding: the page's own name arrives as the Host.
    let rebound = send(&server, "GET", "/v1/datasets", &[("Host", "evil.example:8086")], "");
    assert_eq!((rebound.status, code(&rebound).as_str()), (403, "host_not_allowed"));
    assert_eq!(send(&server, "GET", "/health", &[("Host", &local)], "").status, 200);

    let sql = "SELECT 1 AS one";
    let evil = ("Origin", "http://evil.example");
    let refused = send(&server, "POST", "/v1/sql", &[evil, ("Content-Type", "text/plain")], sql);
    assert_eq!((refused.status, code(&refused).as_str()), (403, "cross_site_refused"));
    let seal = "/v1/datasets/cpu/partitions/cpu/2026-01-01/seal";
    let refused = send(&server, "POST", seal, &[evil], "");
    assert_eq!((refused.status, code(&refused).as_str()), (403, "cross_site_refused"));
    assert_ne!(send(&server, "POST", seal, &[("Origin", &own_origin)], "").status, 403, "same origin passes the edge");
    assert_eq!(send(&server, "POST", "/v1/sql", &[("Origin", &own_origin)], sql).status, 200, "same origin");
    assert_eq!(send(&server, "POST", "/v1/sql", &[], sql).status, 200, "no Origin: not a browser");
    let navigation = send(&server, "GET", "/v1/datasets", &[("Sec-Fetch-Site", "cross-site")], "");
    assert_eq!((navigation.status, code(&navigation).as_str()), (403, "cross_site_refused"));

    // A form post from another page (Referer) is refused; Telegraf's
    // text/plain line protocol, with neither header, is written.
    let line = "cpu,host=a usage=1 1767225600000000000";
    let write = "/api/v2/write?bucket=cpu";
    let form =
        send(&server, "POST", write, &[("Content-Type", "text/plain"), ("Referer", "http://evil.example/x")], line);
    assert_eq!((form.status, code(&form).as_str()), (403, "cross_site_refused"));
    assert_eq!(send(&server, "POST", write, &[("Content-Type", "text/plain; charset=utf-8")], line).status, 204);

    // Preflights: no grant for others, a grant for the listed origin.
    let asks = ("Access-Control-Request-Method", "POST");
    let preflight = send(&server, "OPTIONS", "/v1/sql", &[evil, asks], "");
    assert_eq!(preflight.status, 403);
    assert_eq!(preflight.header("access-control-allow-origin"), None);
    let dashboard = ("Origin", "http://dashboard.test:3000");
    let preflight = send(&server, "OPTIONS", "/v1/sql", &[dashboard, asks], "");
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin").as_deref(), Some("http://dashboard.test:3000"));
    let granted = send(&server, "POST", "/v1/sql", &[dashboard, ("Content-Type", "text/plain")], sql);
    assert_eq!(granted.status, 200);
    assert_eq!(granted.header("access-control-allow-origin").as_deref(), Some("http://dashboard.test:3000"));
}

#[test]
fn http2_with_prior_knowledge_is_served() {
    let server = Server::start("edge-h2", "");
    let client = reqwest::blocking::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = client.get(format!("{}/health", server.url)).send().unwrap();
    assert_eq!((response.version(), response.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    let body = json!([{"time": "2026-01-01T00:00:00Z", "host": "a", "usage": 1.5}]).to_string();
    let written = client.post(format!("{}/v1/datasets/cpu/records", server.url)).body(body).send().unwrap();
    assert_eq!(written.status().as_u16(), 200, "{:?}", written.text());

    // The bare preface gets the server's SETTINGS frame, not a closed socket.
    let mut stream = connect(&server);
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut frame = [0u8; 9];
    stream.read_exact(&mut frame).unwrap();
    assert_eq!(frame[3], 0x4, "a SETTINGS frame: {frame:?}");
}

fn certificate() -> (String, String) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

#[test]
fn tls_serves_writes_and_queries_and_explains_plain_http() {
    let (cert, key) = certificate();
    let files: &[(&str, &[u8])] = &[("cert.pem", cert.as_bytes()), ("key.pem", key.as_bytes())];
    let config = "[server.tls]\ncert_path = \"cert.pem\"\nkey_path = \"key.pem\"\n";
    let launch = Launch { files, tls_root: Some(cert.as_bytes().to_vec()), ..Launch::default() };
    let server = Server::launch("edge-tls", config, launch);
    assert!(server.url.starts_with("https://"), "{}", server.url);

    let client = server.client();
    let body = json!([{"time": "2026-01-01T00:00:00Z", "host": "a", "usage": 1.5}]).to_string();
    let written = client.post(format!("{}/v1/datasets/cpu/records", server.url)).body(body).send().unwrap();
    assert_eq!(written.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
    assert_eq!(written.status().as_u16(), 200);
    let (status, rows) = server.post("/v1/sql", "SELECT host, usage FROM cpu");
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows["rows"], json!([{"host": "a", "usage": 1.5}]), "{rows}");
    let http1 = reqwest::blocking::Client::builder()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = http1.get(format!("{}/health", server.url)).send().unwrap();
    assert_eq!((response.version(), response.status().as_u16()), (reqwest::Version::HTTP_11, 200));

    let plain = format!("http://{}/health", authority(&server));
    let answer = crate::support::client().get(plain).send().unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let error: Value = answer.json().unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("https"), "{error}");
    let (status, _) = server.get("/health");
    assert_eq!(status, 200, "the server keeps serving TLS");
}

/// `strata serve` in `dir` with `config`, which must refuse to start:
/// whether it succeeded, and its stderr.
fn run_to_exit(dir: &Path, config: &str) -> (bool, String) {
    std::fs::write(dir.join("strata.toml"), config).unwrap();
    let args = ["--listen", "127.0.0.1:0", "--config", "strata.toml", "--data-dir", "data"].map(std::ffi::OsStr::new);
    let output = serve_until_exit(dir, &args, &format!("the configuration {config:?}"));
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn unusable_tls_files_stop_the_server_with_a_clear_message() {
    let dir = temp_dir("edge-bad-tls");
    let (cert, _) = certificate();
    std::fs::write(dir.join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.join("garbage.pem"), "not a pem file\n").unwrap();
    for (cert_path, key_path, needle) in [
        ("missing.pem", "key.pem", "server.tls.cert_path missing.pem: cannot be read"),
        ("garbage.pem", "key.pem", "server.tls.cert_path garbage.pem: holds no PEM certificate"),
        ("cert.pem", "garbage.pem", "server.tls.key_path garbage.pem: holds no PEM private key"),
    ] {
        let config = format!("[server.tls]\ncert_path = \"{cert_path}\"\nkey_path = \"{key_path}\"\n");
        let (success, stderr) = run_to_exit(&dir, &config);
        assert!(!success && stderr.contains(needle), "{config}: {stderr}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
