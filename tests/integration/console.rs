//! The web console in a real browser: headless Chromium driven over W3C
//! WebDriver (chromedriver, plain HTTP JSON) against the real binary. Pages
//! load with data, the timeline shows the tiers the catalog has, a simulate
//! shows the plan's moves, the rollback button changes the active version,
//! a read token sees no admin buttons, and no page throws. Each page's
//! screenshot is written under `$CARGO_TARGET_TMPDIR/console-screenshots/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::lifecycle::{DAY, START, TIERING, load, manifest, run};
use crate::support::{Server, temp_dir};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process and one browser session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: PathBuf,
    http: reqwest::blocking::Client,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    /// A missing chromedriver or Chromium fails loudly: `.ci/run` installs them.
    fn start(name: &str) -> Browser {
        for tool in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{base}/status")).send().map(|r| !r.status().is_success()).unwrap_or(true) {
            assert!(Instant::now() < deadline, "chromedriver did not answer on {base}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = temp_dir(&format!("{name}-chromium"));
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let mut browser = Browser { driver, base, session: String::new(), profile, http };
        let answer = browser.call("POST", "/session", capabilities);
        browser.session = answer["sessionId"].as_str().expect("a session id").to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let response = request.send().unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let body: Value = response.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {method} {path}: {status} {body}");
        body["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn run(&self, script: &str, args: Value) -> Value {
        self.session_call("POST", "/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Waits until `script` returns something truthy, and returns it.
    fn wait(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.run(script, json!([]));
            if !matches!(value, Value::Null | Value::Bool(false)) && value != json!("") && value != json!(0) {
                return value;
            }
            let errors = self.errors();
            assert!(errors.is_empty(), "page errors while waiting for {what}: {errors:?}");
            assert!(Instant::now() < deadline, "timed out waiting for {what}; page: {}", self.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the router to finish rendering `page`.
    fn wait_page(&self, page: &str) {
        self.wait(page, &format!("return document.body.dataset.page === {page:?}"));
    }

    fn click(&self, selector: &str) {
        let clicked = self.run(
            "const e = document.querySelector(arguments[0]); if (!e) return false; e.dispatchEvent(new MouseEvent('click', {bubbles: true})); return true;",
            json!([selector]),
        );
        assert_eq!(clicked, json!(true), "nothing matches {selector}; page: {}", self.text());
    }

    fn text(&self) -> String {
        self.run("return document.body.innerText", json!([])).as_str().unwrap_or_default().chars().take(2000).collect()
    }

    /// Errors the page caught (uncaught exceptions, unhandled rejections).
    fn errors(&self) -> Vec<Value> {
        self.run("return window.__strataErrors || []", json!([])).as_array().cloned().unwrap_or_default()
    }

    /// Writes a PNG screenshot as `name.png` into the artefact directory.
    fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.session_call("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Where the screenshots go: `$CARGO_TARGET_TMPDIR/console-screenshots/`.
fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

const CONFIG: &str = "[datasets.metrics]\nperiod = \"week\"\n[lifecycle]\nscheduler = false\ngrace_ms = 0\nsweep_interval_ms = 100\nmin_retention_ms = 0\nmax_delete_fraction = 1.0\n[ingest]\nflush_age_ms = 3600000\n";

/// Partitions per tier, as the API lists them.
fn tiers_of(partitions: &[Value]) -> BTreeMap<String, u64> {
    let mut tiers = BTreeMap::new();
    for partition in partitions {
        *tiers.entry(partition["tier"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    tiers
}

/// Partitions per tier, as the timeline's bars say (`data-tier`, `data-partitions`).
fn drawn_tiers(browser: &Browser, selector: &str) -> BTreeMap<String, u64> {
    let drawn = browser.run(
        "return [...document.querySelectorAll(arguments[0])].map(e => [e.dataset.tier, Number(e.dataset.partitions)])",
        json!([selector]),
    );
    let mut tiers = BTreeMap::new();
    for pair in drawn.as_array().unwrap() {
        *tiers.entry(pair[0].as_str().unwrap().to_string()).or_insert(0) += pair[1].as_u64().unwrap();
    }
    tiers
}

#[test]
fn the_console_draws_the_catalog_simulates_plans_and_rolls_back_policies() {
    let server =
        Server::start_with_files("console-pages", CONFIG, &[], &[("policies/tiering.toml", TIERING.as_bytes())]);
    load(&server, 200);
    run(&server, "tiering", json!({"dataset": "metrics", "now": START + 200 * DAY}));
    let tiers = tiers_of(&manifest(&server));
    assert!(tiers.len() >= 2, "the fixture should span tiers: {tiers:?}");

    // `/` is open, and says how it may be cached and what it may load.
    let response = server.client().get(format!("{}/", server.url)).send().unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let again = server.client().get(format!("{}/", server.url)).header("If-None-Match", &etag).send().unwrap();
    assert_eq!(again.status(), 304);

    let browser = Browser::start("console-pages");
    browser.open(&format!("{}/#/overview", server.url));
    browser.wait_page("overview");
    assert_eq!(
        browser.run("return document.querySelectorAll('tr[data-name=\"metrics\"]').length", json!([])),
        json!(1)
    );
    browser.screenshot("overview");

    // The timeline's bars add up to the catalog's partitions, tier by tier.
    browser.open(&format!("{}/#/dataset/metrics", server.url));
    browser.wait_page("dataset");
    assert_eq!(drawn_tiers(&browser, "#timeline rect.cell"), tiers);
    browser.screenshot("dataset");
    // A bar of one partition explains that partition.
    let id = browser
        .run("return document.querySelector('#timeline rect.cell[data-tier=\"cold\"]').dataset.partition", json!([]));
    let id = id.as_str().expect("one partition per bar at this size").to_string();
    browser.click(&format!("#timeline rect.cell[data-partition=\"{id}\"]"));
    let tier = browser.wait(
        "the explanation",
        "const e = document.querySelector('#explain .explain-tier'); return e && e.dataset.tier",
    );
    assert_eq!(tier, "cold");
    browser.screenshot("dataset-explain");

    // A second version of the policy, then the simulate panel at a later now.
    std::fs::write(
        server.root().join("policies/tiering.toml"),
        TIERING.replace("warm_after = \"30d\"", "warm_after = \"20d\""),
    )
    .unwrap();
    let (status, body) = server.post("/v1/policies/reload", "");
    assert_eq!(status, 200, "{body}");
    let (_, policy) = server.get("/v1/policies/tiering");
    assert_eq!(policy["active_seq"], 2, "{policy}");
    browser.open(&format!("{}/#/policy/tiering", server.url));
    browser.wait_page("policy");
    browser.run("document.querySelector('input[name=now]').value = '2025-12-01'", json!([]));
    browser.click("#simulate");
    let changes = browser.wait(
        "the simulation",
        "const e = document.querySelector('#simulation [data-changes]'); return e && e.dataset.changes",
    );
    let (status, expected) = server.post(
        "/v1/policies/tiering/simulate",
        json!({"dataset": "metrics", "now": "2025-12-01T00:00:00Z"}).to_string(),
    );
    assert_eq!(status, 200, "{expected}");
    let moves: Vec<&Value> = expected["plan"].as_array().unwrap().iter().filter(|e| e["action"] == "move").collect();
    assert!(!moves.is_empty(), "{expected}");
    assert_eq!(changes, moves.len().to_string());
    // The plan drawn: the same partitions, now in the tiers the moves name.
    let mut after = tiers.clone();
    for entry in &moves {
        *after.get_mut(entry["tier"].as_str().unwrap()).unwrap() -= 1;
        *after.entry(entry["target"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    after.retain(|_, n| *n > 0);
    assert_eq!(drawn_tiers(&browser, "#simulation .planned rect.cell"), after);
    browser.screenshot("policy-simulate");

    // Roll back to version 1 through the button and its confirmation.
    browser.click("button.rollback[data-seq=\"1\"]");
    browser.wait("the confirmation", "return document.getElementById('confirm').open");
    browser.click("#confirm-ok");
    browser.wait("the new active version", "return document.getElementById('active-seq').textContent === '1'");
    let (_, policy) = server.get("/v1/policies/tiering");
    assert_eq!(policy["active_seq"], 1, "{policy}");
    browser.screenshot("policy-rolled-back");

    for (page, hash) in [("runs", "#/runs"), ("audit", "#/audit"), ("query", "#/query")] {
        browser.open(&format!("{}/{hash}", server.url));
        browser.wait_page(page);
        browser.screenshot(page);
    }
    let (_, runs) = server.get("/v1/lifecycle/runs");
    let run_id = runs["runs"][0]["id"].as_i64().unwrap();
    browser.open(&format!("{}/#/run/{run_id}", server.url));
    browser.wait_page("run");
    assert!(browser.text().contains("Decisions"));
    browser.screenshot("run");

    // SQL answers as a table and a chart.
    browser.open(&format!("{}/#/query", server.url));
    browser.wait_page("query");
    browser.run(
        "document.querySelector('textarea[name=sql]').value = 'SELECT time, v FROM metrics ORDER BY time'",
        json!([]),
    );
    browser.click("#run-sql");
    let rows = browser
        .wait("the SQL answer", "const t = document.querySelector('#results .vtable'); return t && t.dataset.rows");
    assert_eq!(rows, "200");
    assert_eq!(browser.run("return document.querySelectorAll('#results svg.chart path').length", json!([])), json!(1));
    browser.screenshot("query-sql");
    assert_eq!(browser.errors(), Vec::<Value>::new());
}

#[test]
fn a_read_token_signs_in_and_sees_no_admin_buttons() {
    let mut server = Server::prepare("console-auth", CONFIG);
    let admin = crate::auth::create_offline(&server.data_dir, "admin", &["admin"]);
    let reader = crate::auth::create_offline(&server.data_dir, "reader", &["read:*"]);
    server.start_again();
    let bearer = format!("Bearer {admin}");
    let (status, _, body) = server.request(
        "POST",
        "/v1/datasets/metrics/records",
        &[("Authorization", &bearer)],
        json!([{"time": START, "v": 1}]).to_string(),
    );
    assert_eq!(status, 200, "{body}");

    let browser = Browser::start("console-auth");
    browser.open(&format!("{}/#/overview", server.url));
    browser.wait("the sign-in dialog", "return document.getElementById('login').open");
    browser.run("document.getElementById('login-token').value = arguments[0]", json!([reader]));
    browser.click("#login-submit");
    browser.wait_page("overview");
    assert_eq!(browser.run("return document.body.classList.contains('admin')", json!([])), json!(false));
    browser.open(&format!("{}/#/dataset/metrics", server.url));
    browser.wait_page("dataset");
    assert_eq!(drawn_tiers(&browser, "#timeline rect.cell"), BTreeMap::from([("hot".to_string(), 1)]));
    browser.open(&format!("{}/#/policies", server.url));
    browser.wait_page("policies");
    assert!(browser.text().contains("need an admin token"), "{}", browser.text());
    browser.screenshot("read-token-policies");
    assert_eq!(browser.errors(), Vec::<Value>::new());
}

/// Partitions in the large fixture: 1,000 days × 100 keys.
const LARGE_PARTITIONS: i64 = 100_000;

/// Adds `days` × `keys` partitions to dataset `name` straight into the
/// catalog of a stopped server (writing 100,000 partitions' files through
/// the API would take longer than the test is about): older days cold and
/// sealed, then warm, then hot; every tenth cold one archived.
fn add_partitions(data_dir: &Path, name: &str, days: i64, keys: i64) {
    let mut catalog = rusqlite::Connection::open(data_dir.join("catalog.sqlite")).unwrap();
    let dataset: i64 = catalog.query_row("SELECT id FROM datasets WHERE name = ?1", [name], |r| r.get(0)).unwrap();
    let tx = catalog.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO partitions (dataset_id, period_label, period_start_ns, period_end_ns, key, tier, read_only, \
                 row_count, bytes, created_at_ns, last_written_at_ns, key_field, has_archive) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?3, ?3, 'host', ?10)",
            )
            .unwrap();
        for day in 0..days {
            let start = START - (days - day) * DAY;
            let label = chrono::DateTime::from_timestamp_nanos(start).format("%Y-%m-%d").to_string();
            let tier = if day < days * 7 / 10 {
                "cold"
            } else if day < days * 9 / 10 {
                "warm"
            } else {
                "hot"
            };
            for key in 0..keys {
                let bytes = 10_000 + (key * 7_919 + day * 104_729) % 1_000_000;
                let archived = tier == "cold" && day % 10 == 0;
                insert
                    .execute(rusqlite::params![
                        dataset,
                        label,
                        start,
                        start + DAY,
                        format!("host-{key:03}"),
                        tier,
                        tier != "hot",
                        bytes / 10,
                        bytes,
                        archived
                    ])
                    .unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

/// The dataset page with 100,000 partitions draws from the aggregated
/// timeline (a few thousand cells at most), never fetches the partition
/// listing, and its bars still add up to every partition. Prints the time
/// to first render (the `strata-first-render` mark, from navigation start)
/// of three loads: `cargo test --release --test integration
/// console_with_100k -- --nocapture` (README, "The web console").
#[test]
fn console_with_100k_partitions_renders_the_dataset_from_the_aggregate() {
    let config = "[datasets.big]\nperiod = \"day\"\n[lifecycle]\nscheduler = false\n";
    let mut server = Server::start("console-100k", config);
    let (status, body) =
        server.post("/v1/datasets/big/records", json!([{"time": START, "host": "host-000", "v": 1}]).to_string());
    assert_eq!(status, 200, "{body}");
    server.terminate();
    add_partitions(&server.data_dir, "big", 1_000, 100);
    server.start_again();
    let (_, shown) = server.get("/v1/datasets/big");
    assert_eq!(shown["partitions"], LARGE_PARTITIONS + 1, "{shown}");

    let browser = Browser::start("console-100k");
    let mut first_render_ms = Vec::new();
    for _ in 0..3 {
        browser.open("about:blank");
        browser.open(&format!("{}/#/dataset/big", server.url));
        browser.wait_page("dataset");
        let timing = browser.run(
            "const mark = performance.getEntriesByName('strata-first-render')[0];\
             const resources = performance.getEntriesByType('resource').map(r => r.name + ' ' + Math.round(r.duration) + ' ms');\
             const fetched = performance.getEntriesByName('strata-timeline-fetched')[0];\
             const navigation = performance.getEntriesByType('navigation')[0];\
             return {first_render_ms: mark.startTime, fetched_ms: fetched.startTime, dom_ms: navigation.domContentLoadedEventEnd, resources, cells: document.querySelectorAll('#timeline rect.cell').length}",
            json!([]),
        );
        let resources: Vec<&str> =
            timing["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        assert!(resources.iter().all(|r| !r.contains("/partitions")), "{resources:?}");
        assert!(timing["cells"].as_u64().unwrap() <= 400 * 21 * 4, "{timing}");
        first_render_ms.push(timing["first_render_ms"].as_f64().unwrap());
        println!("load: {timing}");
    }
    let drawn: u64 = drawn_tiers(&browser, "#timeline rect.cell").values().sum();
    assert_eq!(drawn as i64, LARGE_PARTITIONS + 1);
    browser.screenshot("dataset-100k");
    assert_eq!(browser.errors(), Vec::<Value>::new());
    first_render_ms.sort_by(f64::total_cmp);
    println!(
        "console first render, dataset page with {} partitions: {first_render_ms:?} ms (median {:.0} ms)",
        LARGE_PARTITIONS + 1,
        first_render_ms[1]
    );
}
