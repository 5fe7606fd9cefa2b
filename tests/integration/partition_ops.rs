//! Operating on partitions without a policy, against the real binary:
//! paged and filtered listings that stay stable while partitions change, a
//! period's manifest, manual move / archive / delete with their dry runs,
//! the guard rails refusing them, a kill -9 inside each losing nothing, and
//! the built-in range partitioner against a reference table.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::lifecycle::{DAY, START, all_rows, load, manifest, totals};
use crate::support::{Server, client};

/// Runs only when asked, superseded files swept within 100 ms, deletes
/// only of archived partitions.
const CONFIG: &str = "[lifecycle]\nscheduler = false\ngrace_ms = 0\norphan_grace_ms = 0\nsweep_interval_ms = 100\n\
     min_retention_ms = 0\nmax_delete_fraction = 1.0\nrequire_archive_before_delete = true\n";

/// Every page of `path` (which has a query string) with `limit`, as
/// `(ids in order, pages)`; `between` runs after each page.
fn walk(server: &Server, path: &str, limit: usize, mut between: impl FnMut(usize)) -> (Vec<String>, usize) {
    let (mut ids, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let mut url = format!("{path}&limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let (status, body) = server.get(&url);
        assert_eq!(status, 200, "{body}");
        let page = body["partitions"].as_array().unwrap();
        assert!(page.len() <= limit);
        ids.extend(page.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        pages += 1;
        between(pages);
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return (ids, pages),
        }
    }
}

fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    server.post(path, body.to_string())
}

fn partition<'a>(partitions: &'a [Value], id: &str) -> Option<&'a Value> {
    partitions.iter().find(|p| p["id"] == id)
}

#[test]
fn pages_list_every_partition_present_throughout_exactly_once_while_partitions_change() {
    let server = Server::start("partition-pages", CONFIG);
    load(&server, 40);
    let before: Vec<String> = manifest(&server).iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    assert!(before.len() >= 40, "{before:?}");
    // Between pages: partitions appear before and after the cursor, and
    // one not listed yet moves to another tier.
    let (listed, pages) = walk(&server, "/v1/datasets/metrics/partitions?", 6, |page| {
        if page == 1 {
            let early = json!([{"time": START - 5 * DAY, "v": -5}, {"time": START + 100 * DAY, "v": 100}]);
            assert_eq!(server.post("/v1/datasets/metrics/records", early.to_string()).0, 200);
            server.flush();
            let (status, body) =
                post(&server, "/v1/datasets/metrics/partitions/2025-01-30/move", json!({"tier": "warm"}));
            assert_eq!(status, 200, "{body}");
        }
    });
    assert!(pages >= 7, "{pages} pages");
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "an entry was listed twice: {listed:?}");
    for id in &before {
        assert!(unique.contains(id), "{id} was skipped");
    }
    assert!(unique.contains(&"metrics/2025-04-11".to_string()), "a partition created after the cursor is listed");

    // Filters run in the catalog and combine.
    let (warm, _) = walk(&server, "/v1/datasets/metrics/partitions?tier=warm", 10, |_| {});
    assert_eq!(warm, ["metrics/2025-01-30"]);
    let (sealed, _) = walk(&server, "/v1/datasets/metrics/partitions?read_only=true&tier=hot", 10, |_| {});
    assert!(sealed.is_empty(), "{sealed:?}");
    let range = "/v1/datasets/metrics/partitions?from=2025-01-03T12:00:00Z&to=2025-01-06T00:00:00Z";
    assert_eq!(walk(&server, range, 2, |_| {}).0, ["metrics/2025-01-03", "metrics/2025-01-04", "metrics/2025-01-05"]);
    let (none, _) = walk(&server, "/v1/datasets/metrics/partitions?key=nope", 10, |_| {});
    assert!(none.is_empty());

    for (query, code) in [
        ("cursor=bm90LWEtY3Vyc29y", "invalid_cursor"),
        ("cursor=%25%25", "invalid_cursor"),
        ("limit=0", "bad_request"),
        ("limit=10001", "bad_request"),
        ("tier=tepid", "bad_request"),
        ("read_only=maybe", "bad_request"),
        ("from=yesterday", "invalid_timestamp"),
    ] {
        let (status, body) = server.get(&format!("/v1/datasets/metrics/partitions?{query}"));
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{query}: {body}");
    }

    // The audit log and the runs page the same way: pages of one, joined,
    // are the whole listing.
    let (_, all) = server.get("/v1/audit?dataset=metrics");
    let all: Vec<i64> = all["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(all.len() >= 2, "{all:?}");
    let (mut paged, mut cursor) = (Vec::new(), String::new());
    loop {
        let (status, page) = server.get(&format!("/v1/audit?dataset=metrics&limit=1{cursor}"));
        assert_eq!(status, 200, "{page}");
        paged.extend(page["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(paged, all);
    let (status, runs) = server.get("/v1/lifecycle/runs?limit=5");
    assert_eq!((status, runs["next_cursor"].clone()), (200, Value::Null), "{runs}");
}

#[test]
fn a_manifest_lists_the_files_of_one_period_with_checksums_and_tiers() {
    let server = Server::start("partition-manifest", &format!("{CONFIG}[datasets.monthly]\nperiod = \"month\"\n"));
    load(&server, 5);
    let (status, by_date) = server.get("/v1/datasets/metrics/manifest?period=2025-01-03");
    assert_eq!(status, 200, "{by_date}");
    assert_eq!(by_date["period"]["label"], "2025-01-03");
    assert_eq!((by_date["rows"].as_i64(), by_date["files"].as_i64()), (Some(1), Some(1)), "{by_date}");
    let file = &by_date["partitions"][0]["files"][0];
    let bytes = std::fs::read(file["path"].as_str().unwrap()).unwrap();
    assert_eq!(format!("{:08x}", crc32c::crc32c(&bytes)), file["checksum_crc32c"], "{file}");
    assert_eq!(
        (file["storage_target"].as_str(), by_date["partitions"][0]["tier"].as_str()),
        (Some("hot"), Some("hot"))
    );
    assert_eq!(by_date["bytes"].as_i64(), Some(bytes.len() as i64));
    let (_, by_time) = server.get("/v1/datasets/metrics/manifest?period=2025-01-03T23:59:59Z");
    assert_eq!(by_date["partitions"], by_time["partitions"]);
    let month = json!([{"time": START + 3 * DAY, "v": 1}, {"time": START + 40 * DAY, "v": 2}]).to_string();
    assert_eq!(server.post("/v1/datasets/monthly/records", month).0, 200);
    let (status, by_label) = server.get("/v1/datasets/monthly/manifest?period=2025-01");
    assert_eq!((status, by_label["period"]["label"].as_str()), (200, Some("2025-01")), "{by_label}");
    let ids: Vec<&str> = by_label["partitions"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["monthly/2025-01"]);
    assert_eq!(by_label["partitions"][0]["buffered_rows"], 1, "buffered rows show before their flush");
    let (status, empty) = server.get("/v1/datasets/metrics/manifest?period=2030-06-01");
    assert_eq!(
        (status, empty["partitions"].clone(), empty["period"]["label"].clone()),
        (200, json!([]), json!("2030-06-01"))
    );
    let (status, body) = server.get("/v1/datasets/metrics/manifest");
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));
}

#[test]
fn manual_moves_archives_and_deletes_are_dry_runnable_guarded_and_audited() {
    let config = format!("{CONFIG}\n[datasets.tiny]\nperiod = \"day\"\n");
    let server =
        Server::start("partition-manual", &config.replace("max_delete_fraction = 1.0", "max_delete_fraction = 0.1"));
    load(&server, 12);
    let before = totals(&server);
    let base = "/v1/datasets/metrics/partitions";

    let (status, dry) = post(&server, &format!("{base}/2025-01-01/move"), json!({"tier": "cold", "dry": true}));
    assert_eq!(
        (status, dry["outcome"].as_str(), dry["verdict"].as_str()),
        (200, Some("planned"), Some("accept")),
        "{dry}"
    );
    assert_eq!((dry["from_tier"].as_str(), dry["rows"].as_i64()), (Some("hot"), Some(1)), "{dry}");
    assert_eq!(partition(&manifest(&server), "metrics/2025-01-01").unwrap()["tier"], "hot");
    let (status, moved) = post(&server, &format!("{base}/2025-01-01/move"), json!({"tier": "cold"}));
    assert_eq!((status, moved["outcome"].as_str()), (200, Some("executed")), "{moved}");
    assert!(moved["bytes_moved"].as_u64().unwrap() > 0);
    let cold = partition(&manifest(&server), "metrics/2025-01-01").unwrap().clone();
    assert_eq!((cold["tier"].as_str(), cold["read_only"].as_bool()), (Some("cold"), Some(true)), "{cold}");
    assert!(cold["files"][0]["path"].as_str().unwrap().contains("/storage/cold/"), "{cold}");
    let (status, again) = post(&server, &format!("{base}/2025-01-01/move"), json!({"tier": "cold"}));
    assert_eq!((status, again["outcome"].as_str()), (200, Some("noop")), "{again}");
    assert_eq!(totals(&server), before);

    // Deletes name what they delete, and only archived partitions go.
    let (status, body) = post(&server, &format!("{base}/2025-01-02/delete"), json!({}));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("confirmation_required")), "{body}");
    let (status, body) = post(&server, &format!("{base}/2025-01-02/delete"), json!({"confirm": "metrics/2025-01-02"}));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("guard_rail_refused")), "{body}");
    assert!(body["error"]["why"].as_str().unwrap().contains("not archived"), "{body}");
    let (status, dry) = post(&server, &format!("{base}/2025-01-02/archive"), json!({"dry": true}));
    assert_eq!((status, dry["outcome"].as_str()), (200, Some("planned")), "{dry}");
    let (status, archived) = post(&server, &format!("{base}/2025-01-02/archive"), json!({"delete_source_after": true}));
    assert_eq!((status, archived["outcome"].as_str()), (200, Some("executed")), "{archived}");
    assert_eq!(partition(&manifest(&server), "metrics/2025-01-02").unwrap()["tier"], "archived");
    assert_eq!(totals(&server), before, "an archived partition stays queryable");
    let (status, dry) = post(&server, &format!("{base}/2025-01-02/delete"), json!({"dry": true}));
    assert_eq!((status, dry["outcome"].as_str()), (200, Some("planned")), "{dry}");
    assert_eq!(totals(&server), before);
    let (status, deleted) = post(&server, &format!("{base}/2025-01-02/delete"), json!({"confirm": "2025-01-02"}));
    assert_eq!((status, deleted["outcome"].as_str()), (200, Some("executed")), "{deleted}");
    assert!(partition(&manifest(&server), "metrics/2025-01-02").is_none());
    assert_eq!(totals(&server), (before.0 - 1, before.1 - 1));

    // The open period, an unknown partition, a move into the archive and
    // the delete budget (a tenth of two partitions is none) are refused.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let today = json!([{"time": now, "v": 0}]).to_string();
    assert_eq!(server.post("/v1/datasets/tiny/records", today).0, 200);
    let label = chrono::DateTime::from_timestamp_nanos(now).format("%Y-%m-%d").to_string();
    let (status, body) = post(&server, &format!("/v1/datasets/tiny/partitions/{label}/move"), json!({"tier": "warm"}));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("guard_rail_refused")), "{body}");
    assert!(body["error"]["why"].as_str().unwrap().contains("still open"), "{body}");
    let old = json!([{"time": START, "v": 0}]).to_string();
    assert_eq!(server.post("/v1/datasets/tiny/records", old).0, 200);
    let (status, body) =
        post(&server, "/v1/datasets/tiny/partitions/2025-01-01/archive", json!({"delete_source_after": true}));
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        post(&server, "/v1/datasets/tiny/partitions/2025-01-01/delete", json!({"confirm": "tiny/2025-01-01"}));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("guard_rail_refused")), "{body}");
    assert!(body["error"]["why"].as_str().unwrap().contains("more than 0 deletes"), "{body}");
    let (status, body) = post(&server, &format!("{base}/2025-01-05/move"), json!({"tier": "archived"}));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("guard_rail_refused")), "{body}");
    let (status, body) = post(&server, &format!("{base}/1999-01-01/move"), json!({"tier": "warm"}));
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = post(&server, &format!("{base}/2025-01-05/move"), json!({"tier": "warm", "extra": 1}));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_json")), "{body}");

    // Each decision is audited with its source and actor.
    let (_, audit) = server.get("/v1/audit?dataset=metrics&kind=lifecycle_decision");
    let manual: Vec<(String, String, bool)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"]["source"] == "manual")
        .map(|e| {
            assert_eq!(e["actor"], "anonymous", "{e}");
            let d = &e["detail"];
            (d["action"].as_str().unwrap().into(), d["outcome"].as_str().unwrap().into(), d["dry"].as_bool().unwrap())
        })
        .collect();
    let expected = [
        ("move", "planned", true),
        ("move", "executed", false),
        ("delete", "rejected", false),
        ("archive", "planned", true),
        ("archive", "executed", false),
        ("delete", "planned", true),
        ("delete", "executed", false),
        ("move", "rejected", false),
    ];
    let expected: Vec<(String, String, bool)> =
        expected.iter().map(|(a, o, d)| (a.to_string(), o.to_string(), *d)).collect();
    assert_eq!(manual, expected);
}

#[test]
fn a_kill_9_inside_each_manual_operation_loses_nothing() {
    let mut server = Server::start("partition-manual-crash", CONFIG);
    load(&server, 6);
    let rows = all_rows(&server);
    let crash = |server: &mut Server, failpoint: &str, path: &str, body: Value| {
        server.set_env(&[("STRATA_FAILPOINTS", failpoint)]);
        server.restart();
        let _ = client().post(format!("{}{path}", server.url)).body(body.to_string()).send();
        assert!(!server.wait_exit().success(), "{failpoint} should have aborted the server");
        server.set_env(&[]);
        server.start_again();
    };
    let base = "/v1/datasets/metrics/partitions";
    crash(&mut server, "lifecycle.move.after_copy", &format!("{base}/2025-01-01/move"), json!({"tier": "warm"}));
    assert_eq!(all_rows(&server), rows, "a copy before its commit");
    assert_eq!(partition(&manifest(&server), "metrics/2025-01-01").unwrap()["tier"], "hot");
    crash(&mut server, "lifecycle.move.after_commit", &format!("{base}/2025-01-01/move"), json!({"tier": "warm"}));
    assert_eq!(all_rows(&server), rows, "a move after its commit");
    assert_eq!(partition(&manifest(&server), "metrics/2025-01-01").unwrap()["tier"], "warm");
    let archive = json!({"delete_source_after": true});
    crash(&mut server, "lifecycle.archive.after_write", &format!("{base}/2025-01-02/archive"), archive.clone());
    assert_eq!(all_rows(&server), rows, "an archive before its commit");
    assert_eq!(partition(&manifest(&server), "metrics/2025-01-02").unwrap()["tier"], "hot");
    crash(&mut server, "lifecycle.archive.after_commit", &format!("{base}/2025-01-02/archive"), archive);
    assert_eq!(all_rows(&server), rows, "an archive after its commit");
    assert_eq!(partition(&manifest(&server), "metrics/2025-01-02").unwrap()["tier"], "archived");
    let confirm = json!({"confirm": "metrics/2025-01-02"});
    crash(&mut server, "lifecycle.delete.after_commit", &format!("{base}/2025-01-02/delete"), confirm);
    assert!(partition(&manifest(&server), "metrics/2025-01-02").is_none(), "the delete stands");
    assert_eq!(totals(&server), (5, (0..6).sum::<i64>() - 1), "only the deleted day is gone");
    let (status, moved) = post(&server, &format!("{base}/2025-01-03/move"), json!({"tier": "cold"}));
    assert_eq!((status, moved["outcome"].as_str()), (200, Some("executed")), "{moved}");
}

#[test]
fn the_range_partitioner_keys_records_as_the_reference_table_says() {
    let policy = "name = \"bands\"\nkind = \"partitioner\"\nplugin = \"builtin:partition-by-range\"\n\
         datasets = [\"readings\"]\n[config]\nfield = \"temp\"\ndefault = \"unknown\"\n\
         ranges = [\n  { key = \"freezing\", to = 0 },\n  { key = \"mild\", from = 0, to = 25.5 },\n\
         { key = \"hot\", from = 25.5 },\n]\n";
    let broken = "name = \"broken\"\nkind = \"partitioner\"\nplugin = \"builtin:partition-by-range\"\n\
         datasets = [\"other\"]\n[config]\nfield = \"\"\nranges = [{ key = \"A\", from = 3, to = 1 }]\n";
    let server = Server::start_with_files(
        "partition-range",
        CONFIG,
        &[],
        &[("policies/bands.toml", policy.as_bytes()), ("policies/broken.toml", broken.as_bytes())],
    );
    // value → the key the reference table gives it.
    let table: [(Value, &str); 9] = [
        (json!(-40.0), "freezing"),
        (json!(-0.001), "freezing"),
        (json!(0.0), "mild"),
        (json!(12.5), "mild"),
        (json!(25.49), "mild"),
        (json!(25.5), "hot"),
        (json!(1000.0), "hot"),
        (Value::Null, "unknown"),
        (json!(3.0), "mild"),
    ];
    let records: Vec<Value> = table
        .iter()
        .enumerate()
        .map(|(i, (temp, _))| json!({"time": START + i as i64, "temp": temp, "n": i}))
        .collect();
    let (status, body) = server.post("/v1/datasets/readings/records", Value::Array(records).to_string());
    assert_eq!(status, 200, "{body}");
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (_, key) in &table {
        *expected.entry(format!("readings/2025-01-01/{key}")).or_default() += 1;
    }
    let (_, listed) = server.get("/v1/datasets/readings/partitions");
    let got: BTreeMap<String, u64> = listed["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["id"].as_str().unwrap().to_string(), p["rows"].as_u64().unwrap() + p["buffered_rows"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(got, expected);
    // Every configuration error is reported at once.
    let text = server.get_text("/v1/policies");
    for needle in ["field:", "from 3 is not below to 1", "ranges[0] (`A`).key"] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn the_routing_report_counts_rows_per_key_and_names_the_hot_ones() {
    let policy = "name = \"tenants\"\nkind = \"partitioner\"\nplugin = \"builtin:partition-by-field\"\n\
         datasets = [\"orders\"]\n[config]\nfields = [\"tenant\"]\n";
    let server =
        Server::start_with_files("partition-routing", CONFIG, &[], &[("policies/tenants.toml", policy.as_bytes())]);
    // Three requests per tenant mix; the test's own count per key.
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (request, mix) in
        [[("a", 30), ("b", 10), ("c", 5)], [("a", 30), ("b", 5), ("c", 5)], [("a", 10), ("b", 5), ("c", 0)]]
            .iter()
            .enumerate()
    {
        let mut records = Vec::new();
        for (tenant, rows) in mix {
            *expected.entry(tenant).or_default() += *rows as u64;
            records.extend((0..*rows).map(|i| json!({"time": START + i, "tenant": tenant, "request": request})));
        }
        let (status, body) = server.post("/v1/datasets/orders/records", Value::Array(records).to_string());
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(expected, BTreeMap::from([("a", 70), ("b", 20), ("c", 10)]));
    server.flush();
    let (status, report) = server.get("/v1/datasets/orders/routing");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["hot_ratio"], 1.5);
    let mean = 100.0 / 3.0;
    for view in report["windows"].as_array().unwrap().iter().chain([&report["totals"]]) {
        let keys = view["keys"].as_array().unwrap();
        let got: BTreeMap<&str, u64> =
            keys.iter().map(|k| (k["key"].as_str().unwrap(), k["rows"].as_u64().unwrap())).collect();
        assert_eq!(got, expected, "{view}");
        assert_eq!(view["rows"], 100, "{view}");
        assert_eq!(keys[0]["key"], "a", "sorted by rows: {view}");
        assert!((keys[0]["share"].as_f64().unwrap() - 0.7).abs() < 1e-9, "{view}");
        assert!((view["imbalance"].as_f64().unwrap() - 70.0 / mean).abs() < 1e-9, "{view}");
        assert_eq!(view["hot_keys"], json!(["a"]), "{view}");
        assert!(keys.iter().all(|k| k["bytes"].as_u64().unwrap() > 0), "{view}");
    }
    assert_eq!(report["totals"]["keys"][0]["partitions"], 1);
    // A threshold above the imbalance names no key; one of 1 or less is refused.
    let (_, high) = server.get("/v1/datasets/orders/routing?hot_ratio=2.2");
    assert_eq!(high["windows"][1]["hot_keys"], json!([]), "{high}");
    let (status, body) = server.get("/v1/datasets/orders/routing?hot_ratio=1");
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let metrics = server.get_text("/metrics");
    assert!(metrics.contains("strata_routing_hot_keys{dataset=\"orders\"} 1\n"), "{metrics}");
    let imbalance = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_routing_imbalance{dataset=\"orders\"} "))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!((imbalance.parse::<f64>().unwrap() - 2.1).abs() < 1e-9, "{imbalance}");

    // A policy's versions page newest first.
    let changed = policy.replace("fields = [\"tenant\"]", "fields = [\"tenant\"]\nseparator = \"_\"");
    std::fs::write(server.root().join("policies/tenants.toml"), changed).unwrap();
    assert_eq!(server.post("/v1/policies/reload", "").0, 200);
    let (status, first) = server.get("/v1/policies/tenants/versions?limit=1");
    assert_eq!((status, first["versions"][0]["seq"].as_i64()), (200, Some(2)), "{first}");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = server.get(&format!("/v1/policies/tenants/versions?limit=1&cursor={cursor}"));
    assert_eq!(
        (second["versions"][0]["seq"].as_i64(), second["next_cursor"].clone()),
        (Some(1), Value::Null),
        "{second}"
    );
    let (status, body) = server.get("/v1/policies/nope/versions");
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("policy_not_found")), "{body}");
}
