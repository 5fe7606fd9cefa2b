//! The `s3` storage target against a real S3-protocol server (`moto_server`,
//! installed by `.ci/run`): the target contract at library level, and a
//! `strata` server whose cold tier is a bucket, healthy and during an outage.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{Value, json};
use strata::storage::{Fingerprint, ObjectKey, S3Target, StorageError, StorageTarget};

use crate::lifecycle::{DAY, START, TIERING, load, manifest, run, totals};
use crate::support::{MotoServer, Server, moto, remote_target_toml, temp_dir};

const SECRET: &str = strata::cli::bench_storage::MOTO_SECRET_ACCESS_KEY;

fn key(raw: &str) -> ObjectKey {
    ObjectKey::parse(raw).unwrap()
}

/// A target on a fresh bucket of `server`, with its journal in a temporary directory.
fn target(server: &MotoServer, bucket: &str, prefix: &str) -> S3Target {
    server.create_bucket(bucket).unwrap();
    S3Target::open("remote", &server.settings(bucket, prefix), &temp_dir("s3-journal").join("remote")).unwrap()
}

/// In-progress multipart uploads of `bucket` (ListMultipartUploads).
fn uploads_in_progress(server: &MotoServer, bucket: &str) -> usize {
    let body = reqwest::blocking::get(format!("{}/{bucket}?uploads", server.endpoint())).unwrap().text().unwrap();
    body.matches("<UploadId>").count()
}

#[test]
fn the_s3_target_meets_the_contract_under_its_prefix() {
    let server = moto();
    let target = target(&server, "contract", "tenant/a");
    let data = key("data/1/2/f-0000000000000001.parquet");
    target.put(&data, b"hello world").unwrap();
    assert!(matches!(target.put(&data, b"again"), Err(StorageError::AlreadyExists(_))));
    assert_eq!(target.get(&data).unwrap(), b"hello world");
    assert_eq!(target.get_range(&data, 6..11).unwrap(), b"world");
    let head = target.head(&data).unwrap();
    assert_eq!(head.size, 11);
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let age_ns = now_ns - head.last_modified_ns.expect("S3 says when");
    assert!((-60_000_000_000..60_000_000_000).contains(&age_ns), "written just now: {age_ns} ns ago");
    let mut streamed = Vec::new();
    assert_eq!(target.get_to(&data, &mut streamed).unwrap(), 11);
    assert_eq!(streamed, b"hello world");
    target.verify(&data, &Fingerprint::of(b"hello world")).unwrap();
    let wrong = target.verify(&data, &Fingerprint::of(b"hello there")).unwrap_err();
    assert!(matches!(wrong, StorageError::Mismatch { .. }), "{wrong}");

    // Listing is by string prefix, keys come back relative to the target's
    // prefix, and another prefix of the bucket is not this target's.
    target.put(&key("data/10/1/g.parquet"), b"x").unwrap();
    let other = S3Target::open("other", &server.settings("contract", "tenant/b"), &temp_dir("s3-journal")).unwrap();
    other.put(&key("data/1/3/h.parquet"), b"y").unwrap();
    let listed =
        |prefix: &str| -> Vec<String> { target.list(prefix).unwrap().into_iter().map(|o| o.key.to_string()).collect() };
    assert_eq!(listed("data/1/"), ["data/1/2/f-0000000000000001.parquet"]);
    assert_eq!(listed("data/1"), ["data/1/2/f-0000000000000001.parquet", "data/10/1/g.parquet"]);
    assert_eq!(listed("").len(), 2);
    assert_eq!(target.list("data/9/").unwrap().len(), 0);
    target.probe().unwrap();
    assert!(target.location().starts_with("s3://contract/tenant/a at http://127.0.0.1:"), "{}", target.location());

    target.delete(&data).unwrap();
    target.delete(&data).unwrap();
    assert!(matches!(target.get(&data), Err(StorageError::NotFound(_))));
    assert!(matches!(target.head(&data), Err(StorageError::NotFound(_))));
    assert_eq!(other.list("data/").unwrap().len(), 1, "untouched");
}

/// The store decides (S3 makes `If-None-Match: *` atomic); the target must
/// relay its verdict: one success, one `AlreadyExists`. moto checks and then
/// writes without a lock, so under heavy CPU load it may very rarely let both
/// through; the message then shows two `Ok`s.
#[test]
fn of_two_concurrent_create_only_puts_exactly_one_wins() {
    let server = MotoServer::start_serial().unwrap_or_else(|error| panic!("{error:#}"));
    let target = Arc::new(target(&server, "race", ""));
    for round in 0..5 {
        let contested = key(&format!("data/1/{round}/f.parquet"));
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [b"first".as_slice(), b"second".as_slice()]
            .into_iter()
            .map(|bytes| {
                let (target, barrier, contested) = (target.clone(), barrier.clone(), contested.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    target.put(&contested, bytes).map(|()| bytes)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<&[u8]> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(results.iter().any(|r| matches!(r, Err(StorageError::AlreadyExists(_)))), "{results:?}");
        assert_eq!(target.get(&contested).unwrap(), winners[0], "the winner's bytes are stored");
    }
}

#[test]
fn a_large_file_goes_up_in_parts_and_leaves_no_upload_behind() {
    let server = moto();
    server.create_bucket("parts").unwrap();
    let mut settings = server.settings("parts", "p");
    settings.multipart_threshold_bytes = 5 * 1024 * 1024;
    settings.part_bytes = 5 * 1024 * 1024;
    let target = S3Target::open("remote", &settings, &temp_dir("s3-journal").join("remote")).unwrap();
    let dir = temp_dir("s3-parts");
    let file = dir.join("big.parquet");
    let bytes: Vec<u8> = (0..6 * 1024 * 1024 + 123).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let big = key("data/1/2/big-00000000000000ab.parquet");

    target.put_file(&big, &file).unwrap();
    assert_eq!(target.unfinished_uploads(), 0, "the journal is empty once the upload completed");
    assert_eq!(uploads_in_progress(&server, "parts"), 0);
    assert_eq!(target.head(&big).unwrap().size, bytes.len() as u64);
    let mut back = Vec::new();
    target.get_to(&big, &mut back).unwrap();
    assert!(back == bytes, "the parts reassemble the file");
    target.verify(&big, &Fingerprint::of(&bytes)).unwrap();
    assert!(matches!(target.put_file(&big, &file), Err(StorageError::AlreadyExists(_))), "create-only in parts too");
    // A large object put from memory goes up in parts alike.
    let from_memory = key("data/1/2/mem-00000000000000cd.parquet");
    target.put(&from_memory, &bytes).unwrap();
    assert!(target.get(&from_memory).unwrap() == bytes);
    assert!(matches!(target.put(&from_memory, b"x"), Err(StorageError::AlreadyExists(_))));
    assert_eq!(target.unfinished_uploads(), 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_upload_a_crash_interrupted_is_aborted_at_the_next_start() {
    let mut server = moto();
    server.create_bucket("crash").unwrap();
    let journal = temp_dir("s3-journal").join("remote");
    let mut settings = server.settings("crash", "");
    settings.multipart_threshold_bytes = 5 * 1024 * 1024;
    settings.part_bytes = 5 * 1024 * 1024;
    let open = || S3Target::open("remote", &settings, &journal).unwrap();
    let before_the_crash = open();

    // A crash as the store sees it: an upload started, then nothing more
    // (begun by hand, journaled as the target journals its own).
    let started = reqwest::blocking::Client::new()
        .post(format!("{}/crash/data/1/2/a.parquet?uploads", server.endpoint()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let id = started.split("<UploadId>").nth(1).and_then(|s| s.split("</UploadId>").next()).unwrap();
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join("0000000000000001.upload"), format!("data/1/2/a.parquet\n{id}\n")).unwrap();
    assert_eq!(uploads_in_progress(&server, "crash"), 1);
    assert_eq!(before_the_crash.remove_temporaries().unwrap(), 0, "a running process's uploads are its own");
    assert_eq!(uploads_in_progress(&server, "crash"), 1);

    // The next start aborts it.
    let next_start = open();
    assert_eq!(next_start.unfinished_uploads(), 1);
    assert_eq!(next_start.remove_temporaries().unwrap(), 1);
    assert_eq!(uploads_in_progress(&server, "crash"), 0, "the interrupted upload is gone");
    assert_eq!(next_start.unfinished_uploads(), 0);

    // With the store down nothing is aborted and the journal keeps the
    // upload for the start after; a restarted (empty) store no longer knows
    // it, which counts as aborted.
    std::fs::write(journal.join("0000000000000002.upload"), format!("data/1/2/b.parquet\n{id}-2\n")).unwrap();
    let next_start = open();
    server.stop();
    let error = next_start.remove_temporaries().unwrap_err();
    assert!(matches!(error, StorageError::Unavailable { .. }), "{error}");
    assert_eq!(next_start.unfinished_uploads(), 1);
    let file = temp_dir("s3-crash").join("big.parquet");
    std::fs::write(&file, vec![7u8; 11 * 1024 * 1024]).unwrap();
    let error = next_start.put_file(&key("data/1/2/c.parquet"), &file).unwrap_err();
    assert!(matches!(error, StorageError::Unavailable { .. }), "{error}");
    assert_eq!(next_start.unfinished_uploads(), 1, "a failed upload leaves no entry of its own");
    server.restart().unwrap();
    server.create_bucket("crash").unwrap();
    assert_eq!(open().remove_temporaries().unwrap(), 1);
    assert_eq!(next_start.unfinished_uploads(), 0);
}

#[test]
fn a_missing_bucket_or_a_stopped_store_is_unavailable_and_names_no_secret() {
    let mut server = moto();
    let missing = S3Target::open("remote", &server.settings("no-such-bucket", ""), &temp_dir("s3-journal")).unwrap();
    for error in [missing.probe().unwrap_err(), missing.put(&key("data/1/1/a.parquet"), b"x").unwrap_err()] {
        let text = error.to_string();
        assert!(matches!(error, StorageError::Unavailable { .. }), "{text}");
        assert!(text.contains("no-such-bucket") && !text.contains(SECRET), "{text}");
    }

    let target = target(&server, "outage", "");
    target.put(&key("data/1/1/a.parquet"), b"x").unwrap();
    server.stop();
    let started = std::time::Instant::now();
    for error in [
        target.probe().unwrap_err(),
        target.get(&key("data/1/1/a.parquet")).unwrap_err(),
        target.put(&key("data/1/1/b.parquet"), b"y").unwrap_err(),
        target.list("data/").unwrap_err(),
    ] {
        let text = error.to_string();
        assert!(matches!(error, StorageError::Unavailable { .. }), "{text}");
        assert!(text.contains("outage") && text.contains("storage target remote"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(!format!("{error:?}").contains(SECRET));
    }
    assert!(started.elapsed() < Duration::from_secs(30), "refused connections fail fast: {:?}", started.elapsed());
    assert!(!format!("{target:?}").contains(SECRET));
}

/// A server whose cold tier is bucket `bucket` of `moto`.
fn cold_on_s3(moto: &MotoServer, bucket: &str) -> String {
    format!(
        "[lifecycle]\nscheduler = false\n\
         {}\
         [storage.tiers.cold]\ntarget = \"remote\"\n",
        remote_target_toml(moto, bucket),
    )
}

#[test]
fn partitions_move_into_a_bucket_and_the_secret_is_never_shown() {
    let moto = moto();
    moto.create_bucket("cold").unwrap();
    let tiering = TIERING.replace("warm_after = \"30d\"\ncold_after = \"180d\"", "cold_after = \"2d\"");
    let server = Server::start_with_files(
        "s3-move",
        &cold_on_s3(&moto, "cold"),
        &[],
        &[("policies/tiering.toml", tiering.as_bytes())],
    );
    load(&server, 6);
    let before = totals(&server);
    let report = run(&server, "tiering", json!({"now": START + 5 * DAY + 12 * 3_600_000_000_000}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(3), Some(0)), "{report}");
    let cold: Vec<_> = manifest(&server).into_iter().filter(|p| p["tier"] == "cold").collect();
    assert_eq!(cold.len(), 3);

    // Each moved file is an object of the bucket, under the prefix.
    let target = S3Target::open("check", &moto.settings("cold", "strata"), &temp_dir("s3-journal")).unwrap();
    let objects = target.list("data/").unwrap();
    assert_eq!(objects.len(), 3, "{objects:?}");
    for partition in &cold {
        for file in partition["files"].as_array().unwrap() {
            assert_eq!(file["storage_target"], "remote", "{file}");
            assert!(objects.iter().any(|o| o.key.as_str() == file["object_key"].as_str().unwrap()), "{file}");
        }
    }
    let (status, targets) = server.get("/v1/storage-targets");
    assert_eq!(status, 200);
    let remote = targets["storage_targets"].as_array().unwrap().iter().find(|t| t["name"] == "remote").unwrap().clone();
    assert_eq!((remote["kind"].as_str(), remote["files"].as_u64()), (Some("s3"), Some(3)), "{remote}");
    assert!(remote["location"].as_str().unwrap().starts_with("s3://cold/strata"), "{remote}");
    assert_eq!(remote["reachable"], true, "{remote}");
    assert!(!targets.to_string().contains(SECRET));
    assert!(!server.log().contains(SECRET));
    assert_eq!(before, (6, 15));
}

#[test]
fn with_its_store_down_the_server_starts_ingests_and_queries_hot_data() {
    let mut moto = moto();
    moto.create_bucket("down").unwrap();
    let tiering = TIERING.replace("warm_after = \"30d\"\ncold_after = \"180d\"", "cold_after = \"2d\"");
    let mut server = Server::start_with_files(
        "s3-outage",
        &cold_on_s3(&moto, "down"),
        &[],
        &[("policies/tiering.toml", tiering.as_bytes())],
    );
    moto.stop();
    server.restart();
    load(&server, 6);
    assert_eq!(totals(&server), (6, 15), "hot data is written and queried with the store down");

    // A move into the sick store fails per partition; the hot copies stay.
    let report = run(&server, "tiering", json!({"now": START + 5 * DAY + 12 * 3_600_000_000_000}));
    assert_eq!((report["executed"].as_u64(), report["failed"].as_u64()), (Some(0), Some(3)), "{report}");
    let errors: Vec<&str> = report["entries"].as_array().unwrap().iter().filter_map(|e| e["error"].as_str()).collect();
    assert!(errors.iter().all(|e| e.contains("remote") && !e.contains(SECRET)), "{errors:?}");
    assert!(manifest(&server).iter().all(|p| p["tier"] == "hot"));
    assert_eq!(totals(&server), (6, 15), "nothing lost");
    // The prober's verdict (it probes at start, off the start-up path).
    let remote_target = |targets: &Value| {
        targets["storage_targets"].as_array().unwrap().iter().find(|t| t["name"] == "remote").unwrap().clone()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let targets = loop {
        let (status, targets) = server.get("/v1/storage-targets");
        assert_eq!(status, 200);
        if remote_target(&targets)["reachable"] == false || std::time::Instant::now() > deadline {
            break targets;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let remote = remote_target(&targets);
    assert_eq!(remote["reachable"], false, "{remote}");
    let (_, health) = server.get("/health/lifecycle");
    assert_eq!(health["status"], "degraded", "{health}");
    let problem = health["problems"].as_array().unwrap().iter().find(|p| p["storage_target"] == "remote");
    assert!(problem.is_some_and(|p| p["problem"].as_str().unwrap().contains("unreachable")), "{health}");
    assert!(!health.to_string().contains(SECRET));
    let reason = remote["unreachable_reason"].as_str().unwrap();
    assert!(reason.contains("bucket down at http://127.0.0.1:") && !reason.contains(SECRET), "{reason}");
    let hot = targets["storage_targets"].as_array().unwrap().iter().find(|t| t["name"] == "hot").unwrap().clone();
    assert_eq!(hot["reachable"], true, "{hot}");
    assert!(!server.log().contains(SECRET));
}

/// A Parquet file of `rows` rows of one Int64 column, padded with a
/// random string column so that it is `padding` bytes larger.
fn parquet_bytes(rows: i64, padding: usize) -> Vec<u8> {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    let schema =
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false), Field::new("pad", DataType::Utf8, false)]));
    let noise: String = (0..padding).map(|i| char::from(b'a' + ((i * 7919) % 26) as u8)).collect();
    let pads: Vec<&str> = (0..rows).map(|i| if i == 0 { noise.as_str() } else { "" }).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..rows)), Arc::new(StringArray::from(pads))],
    )
    .unwrap();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

#[test]
fn a_copy_is_verified_by_size_checksum_and_footer_small_or_large() {
    let server = moto();
    let target = target(&server, "verify", "");
    // One file the verifying read holds whole, one whose footer it holds.
    for (name, padding) in [("small", 0), ("large", 200_000)] {
        let bytes = parquet_bytes(100, padding);
        let at = key(&format!("data/1/2/{name}-000000000000000a.parquet"));
        target.put(&at, &bytes).unwrap();
        let fingerprint = Fingerprint::of(&bytes);
        target.verify_parquet(&at, &fingerprint, 100).unwrap();
        let wrong_rows = target.verify_parquet(&at, &fingerprint, 99).unwrap_err();
        assert!(matches!(&wrong_rows, StorageError::Mismatch { .. }), "{name}: {wrong_rows}");
        assert!(wrong_rows.to_string().contains("100 rows"), "{name}: {wrong_rows}");
        // Other bytes of the same size: the ETag differs, the read-back settles it.
        let mut other = bytes.clone();
        other[4] ^= 0xff;
        let wrong_bytes = target.verify_parquet(&at, &Fingerprint::of(&other), 100).unwrap_err();
        assert!(matches!(&wrong_bytes, StorageError::Mismatch { .. }), "{name}: {wrong_bytes}");
        let shorter = Fingerprint::of(&bytes[..bytes.len() - 1]);
        assert!(matches!(target.verify_parquet(&at, &shorter, 100), Err(StorageError::Mismatch { .. })));
    }
    // Not Parquet at all.
    let junk = key("data/1/2/junk-000000000000000b.parquet");
    target.put(&junk, &[7u8; 5000]).unwrap();
    assert!(matches!(
        target.verify_parquet(&junk, &Fingerprint::of(&[7u8; 5000]), 1),
        Err(StorageError::Mismatch { .. })
    ));
}
