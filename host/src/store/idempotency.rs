//! Idempotency keys: a retried request with the same key and body gets the
//! first answer again instead of writing twice.
//!
//! A finished request's record is always in memory (`recent`, until its WAL
//! entry is truncated) or in the catalog (saved there before it leaves
//! `recent`), so looking in memory first and then in the catalog cannot miss
//! it. A key being processed is `in_flight`; a second request with it is
//! told to retry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::outcome::{WriteAnswer, WriteOutcome};
use super::write::{Format, IDEMPOTENCY_KEY_BYTES_MAX, WriteRequest};
use super::{DatasetState, IdempotencyMemory, Store};
use crate::catalog::IdempotencyRecord;
use crate::error::{ErrorCode, Failure};
use crate::sync::Recover as _;
use crate::time::now_ns;

/// How often the flusher forgets idempotency keys past their retention.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Keys forgotten per catalog call.
const PRUNE_BATCH: usize = 10_000;

/// Removes an idempotency key from the in-flight set when the request ends.
pub(super) struct InFlight {
    memory: Arc<Mutex<IdempotencyMemory>>,
    key: (i64, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.memory.lock_or_recover().in_flight.remove(&self.key);
    }
}

/// What the idempotency check decided for a request.
pub(super) enum Claim {
    /// No key, or a fresh one now held in flight until the guard drops.
    Proceed(Option<InFlight>),
    /// The key answered before: this is its first answer.
    Replay(WriteAnswer),
}

/// Refuses a key that is empty, too long or holds control characters.
pub(super) fn check_key_shape(key: Option<&str>) -> Result<(), Failure> {
    match key {
        Some(key) if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX || key.chars().any(char::is_control) => {
            Err(Failure::new(
                ErrorCode::BadRequest,
                format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes without control characters"),
            ))
        }
        _ => Ok(()),
    }
}

impl Store {
    /// Looks the request's key up (memory, then the catalog) and either
    /// replays the first answer or holds the key in flight.
    pub(super) async fn claim_idempotency_key(
        &self,
        dataset: &DatasetState,
        request: &WriteRequest,
        request_sha256: &[u8; 32],
    ) -> Result<Claim, Failure> {
        let Some(key) = &request.idempotency_key else { return Ok(Claim::Proceed(None)) };
        let id = (dataset.record.id, key.clone());
        {
            let mut memory = self.idempotency.lock_or_recover();
            if let Some((_, record)) = memory.recent.get(&id) {
                return replay_record(record, request_sha256).map(Claim::Replay);
            }
            if !memory.in_flight.insert(id.clone()) {
                return Err(Failure::new(
                    ErrorCode::IdempotencyKeyInFlight,
                    "a request with this Idempotency-Key is still being processed",
                )
                .with_retry_after(1));
            }
        }
        let guard = InFlight { memory: self.idempotency.clone(), key: id };
        let (dataset_id, owned_key) = (dataset.record.id, key.clone());
        if let Some(record) = self.catalog.call(move |c| c.idempotency(dataset_id, &owned_key)).await? {
            return replay_record(&record, request_sha256).map(Claim::Replay);
        }
        Ok(Claim::Proceed(Some(guard)))
    }
}

impl Store {
    /// Forgets up to [`PRUNE_BATCH`] of the idempotency keys stored more
    /// than `ingest.idempotency_retention_hours` ago (a key lives in memory
    /// until its WAL entry is truncated and is stored then, so each is kept
    /// at least that long after its write). Returns how many, and whether
    /// more may be waiting (a full batch).
    pub(super) async fn prune_idempotency_keys(&self) -> Result<(usize, bool), Failure> {
        let retention_ns = self.config.ingest.idempotency_retention_hours as i64 * 3_600_000_000_000;
        let before_ns = now_ns().saturating_sub(retention_ns);
        let pruned = self.catalog.call(move |c| c.prune_idempotency(before_ns, PRUNE_BATCH)).await?;
        Ok((pruned, pruned == PRUNE_BATCH))
    }
}

/// The digest a key's record holds of its request. Hashing the body costs
/// ~7% of ingest CPU; only keyed requests need it.
pub(super) fn request_digest(request: &WriteRequest) -> [u8; 32] {
    if request.idempotency_key.is_none() {
        return [0; 32];
    }
    let mut hasher = Sha256::new();
    hasher.update(match request.format {
        Format::Json => b"json".as_slice(),
        Format::LineProtocol => b"lp".as_slice(),
    });
    hasher.update(request.precision.nanos_per_unit().to_le_bytes());
    hasher.update([u8::from(request.accept_partial)]);
    hasher.update(&request.body);
    hasher.finalize().into()
}

fn replay_record(record: &IdempotencyRecord, digest: &[u8; 32]) -> Result<WriteAnswer, Failure> {
    if record.request_sha256 != *digest {
        return Err(Failure::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used with a different request body",
        ));
    }
    Ok(WriteAnswer { outcome: WriteOutcome::from_record(record)?, replayed: true })
}
