//! `kind = "s3"`: a bucket (under a key prefix) of an S3-protocol object
//! store, through `object_store`.
//!
//! The [`StorageTarget`] contract is blocking; the target owns a small
//! tokio runtime and runs each request there, handing the answer back over a
//! std channel, so any thread (an async worker, tokio's blocking pool, a
//! plain thread) may call it. Opening contacts nothing: a sick store never
//! blocks start-up, its first request says so.
//!
//! Writes are create-only. A single-part put sends `If-None-Match: *`;
//! objects of `multipart_threshold_bytes` or more go up in parts of
//! `part_bytes` (two parts in memory at most) after a `HEAD` finds the key
//! free (data keys are unique and never reused). Every multipart upload
//! is journaled in a local directory until it completes or is aborted, so
//! [`StorageTarget::remove_temporaries`] aborts what a crash interrupted.
//! Errors never carry a credential: reasons are scrubbed of every secret
//! the target knows (configured or from `AWS_*` variables).

use std::fmt;
use std::fs::{self, File};
use std::future::Future;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};

use super::{Fingerprint, FingerprintWriter, ObjectKey, ObjectMeta, StorageError, StorageTarget};
use crate::config::S3Settings;

/// The longest reason an error carries (object stores answer XML bodies).
const REASON_CHARS_MAX: usize = 400;
/// Chunks of a download in flight between the runtime and the writer.
const DOWNLOAD_CHUNKS_IN_FLIGHT: usize = 4;
/// The end of a copy read to verify it: the whole of a small file, the
/// footer of most others.
const VERIFY_TAIL_BYTES: u64 = 64 * 1024;
/// The suffix of an upload journal entry.
const JOURNAL_SUFFIX: &str = ".upload";

/// A bucket of an S3-protocol store, as one storage target.
pub struct S3Target {
    name: String,
    bucket: String,
    /// Without leading or trailing `/`; "" for none.
    prefix: String,
    /// `scheme://host[:port]` of a configured endpoint.
    endpoint: Option<String>,
    store: Arc<AmazonS3>,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    multipart_threshold_bytes: u64,
    part_bytes: usize,
    /// Where unfinished multipart uploads are journaled.
    journal: PathBuf,
    /// The journal's entries when the target was opened: uploads of an
    /// earlier process, which a crash interrupted (this process's own are
    /// never aborted behind their back).
    interrupted: Vec<PathBuf>,
    /// Every credential this target may send, scrubbed from reasons.
    secrets: Vec<String>,
}

impl fmt::Debug for S3Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Target").field("name", &self.name).field("location", &self.location()).finish()
    }
}

impl S3Target {
    /// A target for `settings`, journaling multipart uploads in `journal`
    /// (created on first use). Contacts nothing.
    pub fn open(name: &str, settings: &S3Settings, journal: &Path) -> Result<S3Target, StorageError> {
        // The HTTP client finds its TLS provider as the process default
        // (ring, as everywhere in Strata); an earlier install stands.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let misconfigured = |reason: String| StorageError::Misconfigured(format!("storage target {name}: {reason}"));
        let mut secrets: Vec<String> = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
            .into_iter()
            .filter_map(|variable| std::env::var(variable).ok())
            .collect();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(settings.virtual_hosted_style)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(settings.allow_http)
                    .with_timeout(settings.request_timeout)
                    .with_connect_timeout(settings.connect_timeout),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: settings.backoff_initial,
                    max_backoff: settings.backoff_max,
                    base: 2.0,
                },
                max_retries: settings.retries,
                retry_timeout: (settings.request_timeout * 2).max(Duration::from_secs(30)),
            });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret.expose());
            secrets.push(secret.expose().to_string());
        }
        if let Some(token) = &settings.session_token {
            builder = builder.with_token(token.expose());
            secrets.push(token.expose().to_string());
        }
        secrets.retain(|secret| secret.len() >= 4);
        let store = builder.build().map_err(|e| misconfigured(scrub(&e.to_string(), &secrets)))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("strata-s3-{name}"))
            .enable_all()
            .build()
            .map_err(|e| misconfigured(format!("cannot start its runtime: {e}")))?;
        Ok(S3Target {
            name: name.to_string(),
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            endpoint: settings.endpoint.as_deref().map(endpoint_origin),
            store: Arc::new(store),
            runtime: Some(runtime),
            multipart_threshold_bytes: settings.multipart_threshold_bytes,
            part_bytes: usize::try_from(settings.part_bytes).unwrap_or(usize::MAX),
            journal: journal.to_path_buf(),
            interrupted: journal_entries(journal).into_iter().map(|(entry, _, _)| entry).collect(),
            secrets,
        })
    }

    /// The multipart uploads journaled as unfinished (a crash interrupted
    /// them, or one is running now).
    pub fn unfinished_uploads(&self) -> usize {
        journal_entries(&self.journal).len()
    }

    /// A plain, unconditional `object_store` upload of `bytes` already in
    /// memory — one put, or from the multipart threshold `object_store`'s
    /// own multipart writer with the same part size and two parts in
    /// flight: the baseline `strata bench storage` measures `put_file` against.
    pub fn baseline_put(&self, key: &ObjectKey, bytes: Vec<u8>) -> Result<(), StorageError> {
        let (store, at) = (self.store.clone(), self.path(key));
        if (bytes.len() as u64) < self.multipart_threshold_bytes {
            return self.block(Some(key), async move { store.put(&at, PutPayload::from(bytes)).await }).map(|_| ());
        }
        let part_bytes = self.part_bytes;
        let upload = async move {
            let mut writer = WriteMultipart::new_with_chunk_size(store.put_multipart(&at).await?, part_bytes);
            for part in bytes.chunks(part_bytes) {
                writer.wait_for_capacity(2).await?;
                writer.write(part);
            }
            writer.finish().await
        };
        self.block(Some(key), upload).map(|_| ())
    }

    /// A plain `object_store` get of the whole object into memory: the
    /// baseline `strata bench storage` measures `get_to` against.
    pub fn baseline_get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        let (store, at) = (self.store.clone(), self.path(key));
        self.block(Some(key), async move { store.get(&at).await?.bytes().await })
    }

    /// The store's path of `key`: under the prefix.
    fn path(&self, key: &ObjectKey) -> StorePath {
        self.store_path(key.as_str())
    }

    fn store_path(&self, relative: &str) -> StorePath {
        if self.prefix.is_empty() {
            StorePath::from(relative)
        } else {
            StorePath::from(format!("{}/{relative}", self.prefix))
        }
    }

    /// Starts `future` on the target's runtime; the receiver yields its output.
    fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Receiver<T> {
        let (sender, receiver) = sync_channel(1);
        let runtime = self.runtime.as_ref().expect("the runtime lives until the target is dropped");
        runtime.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver
    }

    /// Waits for what [`S3Target::spawn`] started.
    fn wait<T>(&self, receiver: Receiver<object_store::Result<T>>, key: Option<&ObjectKey>) -> Result<T, StorageError> {
        match receiver.recv() {
            Ok(result) => result.map_err(|e| self.error(key, e)),
            Err(_) => Err(self.unavailable("the request was dropped (the target is shutting down)")),
        }
    }

    /// Runs one request to completion.
    fn block<T: Send + 'static>(
        &self,
        key: Option<&ObjectKey>,
        future: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.wait(self.spawn(future), key)
    }

    fn unavailable(&self, reason: &str) -> StorageError {
        let at = self.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default();
        let mut reason = scrub(&format!("bucket {}{at}: {reason}", self.bucket), &self.secrets);
        if let Some((cut, _)) = reason.char_indices().nth(REASON_CHARS_MAX) {
            reason.truncate(cut);
            reason.push('…');
        }
        StorageError::Unavailable { target: self.name.clone(), reason }
    }

    /// Maps an `object_store` error: a missing object or a taken key is
    /// the caller's answer; everything else (refused connections,
    /// timeouts, 5xx, a missing bucket, denied access) is the store's.
    fn error(&self, key: Option<&ObjectKey>, error: object_store::Error) -> StorageError {
        let text = error.to_string();
        if text.contains("NoSuchBucket") {
            return self.unavailable(&format!("the bucket does not exist ({text})"));
        }
        match (error, key) {
            (object_store::Error::NotFound { .. }, Some(key)) => StorageError::NotFound(key.clone()),
            (
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotModified { .. },
                Some(key),
            ) => StorageError::AlreadyExists(key.clone()),
            _ => self.unavailable(&text),
        }
    }

    /// Checks the object `meta` describes against `expected`: the size, then
    /// the ETag as the proof when it is the MD5 written, else a streamed
    /// read-back comparing size and CRC32C.
    fn verify_stored(
        &self,
        key: &ObjectKey,
        expected: &Fingerprint,
        meta: &object_store::ObjectMeta,
    ) -> Result<(), StorageError> {
        let mismatch = |detail: String| StorageError::Mismatch { target: self.name.clone(), key: key.clone(), detail };
        if meta.size != expected.size {
            return Err(mismatch(format!("{} bytes stored, {} bytes expected", meta.size, expected.size)));
        }
        let md5: String = expected.md5.iter().map(|b| format!("{b:02x}")).collect();
        if meta.e_tag.as_deref().map(|tag| tag.trim_matches('"').to_ascii_lowercase()) == Some(md5) {
            return Ok(());
        }
        let mut hasher = FingerprintWriter::default();
        self.get_to(key, &mut hasher)?;
        let stored = hasher.finish();
        if stored.size != expected.size || stored.crc32c != expected.crc32c {
            return Err(mismatch(format!(
                "{} bytes with CRC32C {:08x} stored, {} bytes with CRC32C {:08x} expected",
                stored.size, stored.crc32c, expected.size, expected.crc32c
            )));
        }
        Ok(())
    }

    /// One conditional put (`If-None-Match: *`) of `bytes`.
    fn put_create(&self, key: &ObjectKey, bytes: Vec<u8>) -> Result<(), StorageError> {
        let (store, at) = (self.store.clone(), self.path(key));
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        self.block(Some(key), async move { store.put_opts(&at, PutPayload::from(bytes), options).await }).map(|_| ())
    }

    /// Uploads what `source` reads in parts under `key`, which must be free.
    fn put_multipart(&self, key: &ObjectKey, source: &mut dyn Read) -> Result<(), StorageError> {
        match self.head(key) {
            Ok(_) => return Err(StorageError::AlreadyExists(key.clone())),
            Err(StorageError::NotFound(_)) => {}
            Err(other) => return Err(other),
        }
        let location = self.path(key);
        let (store, at) = (self.store.clone(), location.clone());
        let id = self.block(Some(key), async move { store.create_multipart(&at).await })?;
        let entry = match self.journal_add(key, &id) {
            Ok(entry) => entry,
            Err(error) => {
                self.abort(&location, &id);
                return Err(error);
            }
        };
        let result = self.upload_parts(key, &location, &id, source).and_then(|parts| {
            let (store, at, upload) = (self.store.clone(), location.clone(), id.clone());
            self.block(Some(key), async move { store.complete_multipart(&at, &upload, parts).await })
        });
        // The entry goes once the upload is complete or aborted; an upload
        // whose abort failed keeps it, so the next start aborts it again.
        if result.is_ok() || self.abort(&location, &id) {
            let _ = fs::remove_file(entry);
        }
        result.map(|_| ())
    }

    /// Streams `source` up in `part_bytes` parts, reading the next part
    /// while the previous one uploads; returns the parts in order.
    fn upload_parts(
        &self,
        key: &ObjectKey,
        location: &StorePath,
        id: &str,
        source: &mut dyn Read,
    ) -> Result<Vec<PartId>, StorageError> {
        let io = |source| StorageError::Io { key: key.to_string(), source };
        let mut parts = Vec::new();
        let mut pending: Option<Receiver<object_store::Result<PartId>>> = None;
        for index in 0.. {
            let chunk = read_up_to(source, self.part_bytes).map_err(io)?;
            if chunk.is_empty() {
                break;
            }
            let last = chunk.len() < self.part_bytes;
            let (store, at, upload) = (self.store.clone(), location.clone(), id.to_string());
            let payload = PutPayload::from(Bytes::from(chunk));
            let next = self.spawn(async move { store.put_part(&at, &upload, index, payload).await });
            if let Some(previous) = pending.replace(next) {
                parts.push(self.wait(previous, Some(key))?);
            }
            if last {
                break;
            }
        }
        if let Some(previous) = pending {
            parts.push(self.wait(previous, Some(key))?);
        }
        Ok(parts)
    }

    /// Aborts an upload, best effort; whether the store took the abort.
    fn abort(&self, location: &StorePath, id: &str) -> bool {
        let (store, at, upload) = (self.store.clone(), location.clone(), id.to_string());
        match self.block(None, async move { store.abort_multipart(&at, &upload).await }) {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(target = %self.name, %error, "could not abort a multipart upload; the next start retries");
                false
            }
        }
    }

    /// Records an upload as unfinished (durably); returns its entry.
    fn journal_add(&self, key: &ObjectKey, id: &str) -> Result<PathBuf, StorageError> {
        let io = |source| StorageError::Io { key: self.journal.display().to_string(), source };
        fs::create_dir_all(&self.journal).map_err(io)?;
        let entry = self.journal.join(format!("{:016x}{JOURNAL_SUFFIX}", rand::random::<u64>()));
        let mut file = File::create(&entry).map_err(io)?;
        file.write_all(format!("{key}\n{id}\n").as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        super::sync_dir(&self.journal).map_err(io)?;
        Ok(entry)
    }
}

impl Drop for S3Target {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids on its own threads.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl StorageTarget for S3Target {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "s3"
    }

    fn location(&self) -> String {
        let mut location = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            location = format!("{location}/{}", self.prefix);
        }
        match &self.endpoint {
            Some(endpoint) => format!("{location} at {endpoint}"),
            None => location,
        }
    }

    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StorageError> {
        if bytes.len() as u64 >= self.multipart_threshold_bytes {
            return self.put_multipart(key, &mut &bytes[..]);
        }
        self.put_create(key, bytes.to_vec())
    }

    fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<(), StorageError> {
        let io = |source| StorageError::Io { key: key.to_string(), source };
        let size = fs::metadata(path).map_err(io)?.len();
        if size >= self.multipart_threshold_bytes {
            return self.put_multipart(key, &mut File::open(path).map_err(io)?);
        }
        // Below the threshold: one conditional request (bounded by it).
        self.put_create(key, fs::read(path).map_err(io)?)
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, StorageError> {
        let (store, at) = (self.store.clone(), self.path(key));
        let bytes = self.block(Some(key), async move { store.get(&at).await?.bytes().await })?;
        Ok(bytes.to_vec())
    }

    fn get_to(&self, key: &ObjectKey, out: &mut dyn Write) -> Result<u64, StorageError> {
        let (store, at) = (self.store.clone(), self.path(key));
        let (sender, mut receiver) = tokio::sync::mpsc::channel(DOWNLOAD_CHUNKS_IN_FLIGHT);
        let _done = self.spawn(async move {
            let mut stream = match store.get(&at).await {
                Ok(result) => result.into_stream(),
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                // The reader gone (its writer failed) ends the download.
                if sender.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut written = 0u64;
        // `futures`' executor, not tokio's `blocking_recv`: callers may be
        // on a runtime thread.
        while let Some(chunk) = futures::executor::block_on(receiver.recv()) {
            let chunk = chunk.map_err(|e| self.error(Some(key), e))?;
            out.write_all(&chunk).map_err(|source| StorageError::Io { key: key.to_string(), source })?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// A single-part object whose ETag is the MD5 written proves itself;
    /// any other answer (a multipart or encrypted object's ETag, or one
    /// that differs) is settled by reading the object back.
    fn verify(&self, key: &ObjectKey, expected: &Fingerprint) -> Result<(), StorageError> {
        let (store, at) = (self.store.clone(), self.path(key));
        let meta = self.block(Some(key), async move { store.head(&at).await })?;
        self.verify_stored(key, expected, &meta)
    }

    /// One suffix read answers the size, the ETag and (for all but large
    /// footers) the footer: two requests per copy with the put, where a
    /// `HEAD` and two ranged reads made four. An ETag that is not the MD5
    /// written falls back to reading the object back.
    fn verify_parquet(&self, key: &ObjectKey, expected: &Fingerprint, rows: i64) -> Result<(), StorageError> {
        let (store, at) = (self.store.clone(), self.path(key));
        let options = GetOptions { range: Some(GetRange::Suffix(VERIFY_TAIL_BYTES)), ..GetOptions::default() };
        let (meta, tail) = self.block(Some(key), async move {
            let result = store.get_opts(&at, options).await?;
            let meta = result.meta.clone();
            Ok::<_, object_store::Error>((meta, result.bytes().await?))
        })?;
        self.verify_stored(key, expected, &meta)?;
        let mismatch = |detail: String| StorageError::Mismatch { target: self.name.clone(), key: key.clone(), detail };
        let tail_start = meta.size.saturating_sub(tail.len() as u64);
        let read = |range: Range<u64>| match range.start.checked_sub(tail_start) {
            Some(offset) if range.end <= meta.size => {
                Ok(tail[offset as usize..(offset + range.end - range.start) as usize].to_vec())
            }
            _ => self.get_range(key, range),
        };
        let invalid = |error: crate::parquet_file::ParquetFileError| mismatch(error.to_string());
        let stored = crate::parquet_file::footer_rows(meta.size, read, invalid)?;
        if stored != rows {
            return Err(mismatch(format!("footer says {stored} rows, expected {rows}")));
        }
        Ok(())
    }

    /// Lists a key no object has: one request, answered by any reachable
    /// bucket, refused by a missing one.
    fn probe(&self) -> Result<(), StorageError> {
        let (store, at) = (self.store.clone(), self.store_path(".strata-probe"));
        self.block(None, async move { store.list_with_delimiter(Some(&at)).await }).map(|_| ())
    }

    fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let (store, at) = (self.store.clone(), self.path(key));
        let bytes = self.block(Some(key), async move { store.get_range(&at, range).await })?;
        Ok(bytes.to_vec())
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        let (store, at) = (self.store.clone(), self.path(key));
        let meta = self.block(Some(key), async move { store.head(&at).await })?;
        Ok(ObjectMeta { key: key.clone(), size: meta.size, last_modified_ns: meta.last_modified.timestamp_nanos_opt() })
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let (store, at) = (self.store.clone(), self.path(key));
        match self.block(Some(key), async move { store.delete(&at).await }) {
            Err(StorageError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        // The store lists whole path segments; the contract is a string
        // prefix, so list the enclosing directory and filter.
        let directory = prefix.rsplit_once('/').map_or("", |(directory, _)| directory);
        let at = match (self.prefix.is_empty(), directory.is_empty()) {
            (true, true) => None,
            (false, true) => Some(StorePath::from(self.prefix.as_str())),
            _ => Some(self.store_path(directory)),
        };
        let store = self.store.clone();
        let listed = self
            .block(None, async move { store.list(at.as_ref()).try_collect::<Vec<object_store::ObjectMeta>>().await })?;
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut out: Vec<ObjectMeta> = listed
            .into_iter()
            .filter_map(|meta| {
                let relative = meta.location.as_ref().strip_prefix(strip.as_str())?.to_string();
                let key = ObjectKey::parse(&relative).ok().filter(|key| key.as_str().starts_with(prefix))?;
                Some(ObjectMeta { key, size: meta.size, last_modified_ns: meta.last_modified.timestamp_nanos_opt() })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn local_path(&self, _key: &ObjectKey) -> Option<PathBuf> {
        None
    }

    /// Aborts every multipart upload journaled when the target was opened
    /// (a crash interrupted it); an upload the store no longer knows counts
    /// as aborted. Uploads this process started are not touched.
    fn remove_temporaries(&self) -> Result<usize, StorageError> {
        let mut aborted = 0;
        let journaled =
            journal_entries(&self.journal).into_iter().filter(|(entry, _, _)| self.interrupted.contains(entry));
        for (entry, key, id) in journaled {
            let (store, at) = (self.store.clone(), self.path(&key));
            match self.block(Some(&key), async move { store.abort_multipart(&at, &id).await }) {
                Ok(()) | Err(StorageError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
            fs::remove_file(&entry).map_err(|source| StorageError::Io { key: entry.display().to_string(), source })?;
            aborted += 1;
        }
        Ok(aborted)
    }
}

/// The entries of the upload journal in `directory`: `(entry, key, upload id)`.
fn journal_entries(directory: &Path) -> Vec<(PathBuf, ObjectKey, String)> {
    let Ok(entries) = fs::read_dir(directory) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.to_string_lossy().ends_with(JOURNAL_SUFFIX) {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else { continue };
        let mut lines = text.lines();
        match (lines.next().map(ObjectKey::parse), lines.next()) {
            (Some(Ok(key)), Some(id)) if !id.is_empty() => out.push((path, key, id.to_string())),
            // Torn by a crash before its fsync: the upload id never
            // reached the disk, so nothing can be aborted by it.
            _ => {
                let _ = fs::remove_file(&path);
            }
        }
    }
    out
}

/// Reads until `limit` bytes or the end of `source`.
fn read_up_to(source: &mut dyn Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(limit);
    source.take(limit as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
}

/// `scheme://host[:port]` of an endpoint URL: no user info, no path.
fn endpoint_origin(endpoint: &str) -> String {
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
}

/// `text` with every secret replaced.
fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_string(), |text, secret| text.replace(secret.as_str(), "<redacted>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_lose_user_info_and_paths() {
        assert_eq!(endpoint_origin("http://user:pw@127.0.0.1:9000/x?y"), "http://127.0.0.1:9000");
        assert_eq!(endpoint_origin("https://s3.example.com"), "https://s3.example.com");
    }

    #[test]
    fn an_unreachable_store_is_unavailable_without_its_secret() {
        // Nothing listens on port 1 of the loopback: refused at once.
        let mut config = crate::config::Config::parse(
            "[storage.targets.r]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:1\"\nallow_http = true\n\
             access_key_id = \"AKID\"\nsecret_access_key = \"very-secret-value\"\nretries = 0\n",
        )
        .unwrap();
        config.server.data_dir = std::env::temp_dir().join(format!("strata-s3-{}", rand::random::<u64>()));
        let resolved = config.storage_targets().into_iter().find(|t| t.name.as_str() == "r").unwrap();
        let target = S3Target::open("r", resolved.s3.as_ref().unwrap(), &resolved.path).unwrap();
        assert_eq!(target.location(), "s3://b at http://127.0.0.1:1");
        let error = target.probe().unwrap_err();
        let shown = format!("{error} {error:?} {target:?}");
        assert!(matches!(error, StorageError::Unavailable { .. }), "{shown}");
        assert!(shown.contains("bucket b at http://127.0.0.1:1") && !shown.contains("very-secret-value"), "{shown}");
        let error = target.put(&ObjectKey::parse("data/1/1/a").unwrap(), b"x").unwrap_err();
        assert!(!format!("{error} {error:?}").contains("very-secret-value"));
    }

    #[test]
    fn reasons_are_scrubbed_of_secrets() {
        assert_eq!(
            scrub("signed with abcdSECRET and TOKEN1", &["abcdSECRET".into(), "TOKEN1".into()]),
            "signed with <redacted> and <redacted>"
        );
    }
}
