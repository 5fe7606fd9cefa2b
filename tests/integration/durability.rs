//! Acknowledged writes survive kill -9, crashes inside a flush, and shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::support::{Server, client};

/// Rows per dataset id across committed files: every id must appear once.
fn id_counts(server: &Server, dataset: &str) -> HashMap<i64, usize> {
    let mut counts = HashMap::new();
    for row in server.committed_rows(dataset) {
        let id = row["id"].as_i64().unwrap_or_else(|| panic!("id is an integer: {row:?}"));
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Several clients write concurrently; the server is killed with SIGKILL at a
/// seeded moment (with small flush thresholds so flushes and WAL truncation
/// happen during the run). After restart every acknowledged row is present
/// exactly once and no row is present twice. `STRATA_KILL_ROUNDS` runs more.
#[test]
fn kill_9_during_concurrent_writes_loses_no_acknowledged_row() {
    let rounds: u64 = std::env::var("STRATA_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let config = "[ingest]\nflush_bytes = 200000\nflush_age_ms = 200\nwal_segment_bytes_max = 100000\n";
    let mut server = Server::start("kill9", config);
    // Fix the column types first: JSON numbers then go into the integer column.
    assert_eq!(server.post("/api/v2/write?bucket=crash", "m,client=x id=-1i,v=0.5 1").0, 204);
    let acknowledged: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut next_id = 0i64;
    for round in 0..rounds {
        let mut rng = StdRng::seed_from_u64(round);
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for client_index in 0..4 {
            let (url, stop, acknowledged) = (server.url.clone(), stop.clone(), acknowledged.clone());
            let base = next_id + client_index * 10_000_000;
            let format_lp = client_index % 2 == 0;
            clients.push(std::thread::spawn(move || {
                let http = client();
                let mut id = base;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<i64> = (id..id + 50).collect();
                    id += 50;
                    let result = if format_lp {
                        let body: String = ids.iter().map(|i| format!("m,client={client_index} id={i}i,v=1.5 {}\n", 1_767_225_600_000_000_000 + i * 1_000_000)).collect();
                        http.post(format!("{url}/api/v2/write?bucket=crash")).body(body).send()
                    } else {
                        let rows: Vec<Value> = ids.iter().map(|i| serde_json::json!({ "time": 1_767_225_600_000_000_000i64 + i * 1_000_000, "id": i, "client": client_index.to_string(), "v": 1.5 })).collect();
                        http.post(format!("{url}/v1/datasets/crash/records")).body(serde_json::to_string(&rows).unwrap()).send()
                    };
                    match result {
                        Ok(response) if response.status().is_success() => acknowledged.lock().unwrap().extend(ids),
                        // A refusal other than "shutting down" is a bug, not a crash effect.
                        Ok(response) if response.status().is_client_error() => {
                            panic!("write refused: {} {}", response.status(), response.text().unwrap_or_default())
                        }
                        _ => return,
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        next_id += 100_000_000;
        server.start_again();
    }
    server.flush();
    let counts = id_counts(&server, "crash");
    let acknowledged = acknowledged.lock().unwrap();
    assert!(acknowledged.len() > 1000, "the clients wrote too little to prove anything: {}", acknowledged.len());
    for id in acknowledged.iter() {
        assert_eq!(counts.get(id), Some(&1), "acknowledged id {id}");
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "rows stored twice: {twice:?}");
}

fn crash_in_flush(failpoint: &str) {
    let config = "[ingest]\nflush_age_ms = 3600000\n";
    let mut server = Server::start_with_env(failpoint, config, &[("STRATA_FAILPOINTS", failpoint)]);
    let body: String = (0..100).map(|i| format!("m id={i}i {}\n", 1_767_225_600 + i)).collect();
    assert_eq!(server.post("/api/v2/write?bucket=fp&precision=s", body).0, 204);
    // The flush dies at the fail point, taking the process with it.
    let _ = client().post(format!("{}/v1/flush", server.url)).send();
    let status = server.wait_exit();
    assert!(!status.success(), "the fail point should have aborted the server");
    server.set_env(&[]);
    server.start_again();
    let (_, ready) = server.get("/ready");
    server.flush();
    let counts = id_counts(&server, "fp");
    assert_eq!(counts.len(), 100, "after {failpoint}: {ready}");
    assert!(counts.values().all(|n| *n == 1), "after {failpoint}: duplicates");
    let (_, partitions) = server.get("/v1/datasets/fp/partitions");
    let files = partitions["partitions"][0]["files"].as_array().unwrap().len();
    assert_eq!(files, 1, "after {failpoint}: exactly one committed file");
    // Only committed files remain in storage.
    let mut on_disk = 0;
    let mut stack = vec![server.data_dir.join("storage")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else if entry.file_name() != "LOCK" {
                // Each target's LOCK holds the pid of the server that locked it.
                on_disk += 1;
            }
        }
    }
    assert_eq!(on_disk, 1, "after {failpoint}: orphans were swept");
    if failpoint != "flush.after_commit" {
        assert_eq!(ready["recovery"]["orphan_files_removed"], 1, "{ready}");
    }
}

#[test]
fn crash_between_parquet_write_and_catalog_commit_leaves_nothing_visible_twice() {
    crash_in_flush("flush.after_file_write");
}

#[test]
fn crash_between_file_writes_and_their_durability_seal_loses_nothing_acknowledged() {
    crash_in_flush("flush.before_seal");
}

#[test]
fn crash_after_catalog_commit_does_not_replay_committed_rows() {
    crash_in_flush("flush.after_commit");
}

#[test]
fn sigterm_flushes_and_exits_cleanly() {
    let config = "[ingest]\nflush_age_ms = 3600000\n";
    let mut server = Server::start("sigterm", config);
    assert_eq!(server.post("/api/v2/write?bucket=t", "m v=1 1\nm v=2 2\n").0, 204);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}; log:\n{}", server.log());
    // Everything is in Parquet: the WAL holds nothing to replay.
    server.start_again();
    let (_, ready) = server.get("/ready");
    assert_eq!(ready["recovery"]["rows_replayed"], 0, "{ready}");
    let (_, dataset) = server.get("/v1/datasets/t");
    assert_eq!((dataset["committed_rows"].as_i64(), dataset["buffered_rows"].as_i64()), (Some(2), Some(0)));
}

#[test]
fn restart_replays_unflushed_rows() {
    let config = "[ingest]\nflush_age_ms = 3600000\n";
    let mut server = Server::start("replay", config);
    assert_eq!(server.post("/api/v2/write?bucket=r", "m id=1i 1\nm id=2i 2\n").0, 204);
    server.restart();
    let (_, ready) = server.get("/ready");
    assert_eq!(ready["recovery"]["rows_replayed"], 2, "{ready}");
    server.flush();
    assert_eq!(id_counts(&server, "r").len(), 2);
}
