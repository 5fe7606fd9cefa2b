//! What a write did ([`WriteOutcome`]), and its stored form in an
//! idempotency record.
//!
//! The record (catalog `idempotency_keys.status/response`, and the WAL
//! entry's copy) holds a tag and the answer's JSON body. The tags are the
//! HTTP statuses the first answer was sent with (200, 400, 409), because
//! records on disk hold exactly those; here they are only tags, decoded back
//! into a [`WriteOutcome`] that `http` renders, so a replay is the same
//! bytes as the first answer.

use serde_json::{Value as Json, json};

use crate::catalog::IdempotencyRecord;
use crate::error::{ErrorCode, Failure};

/// Record tag: every row was written.
const RECORD_WRITTEN: u16 = 200;
/// Record tag: some lines or records were rejected, the rest written.
const RECORD_PARTIAL_WRITE: u16 = 400;
/// Record tag: rows for sealed partitions were refused, the rest written.
const RECORD_LATE_ROWS_REFUSED: u16 = 409;

/// What a write did. The two partial outcomes carry the [`Failure`] that
/// describes what was not written (`partial_write`, `late_rows_refused`):
/// its detail holds the counts and the rejected lines or refused rows.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// Every row was written.
    Written {
        /// Rows written.
        rows: u64,
        /// Partitions written into.
        partitions: u64,
    },
    /// Some lines or records were rejected (unparseable, or refused by the
    /// partitioner); the others were written.
    PartialWrite(Failure),
    /// With `late_rows = "refuse_rows"`: the rows for sealed partitions were
    /// refused and listed; the others were written.
    LateRowsRefused(Failure),
}

/// The answer to a write: what it did, and whether this is the stored first
/// answer of an earlier request with the same idempotency key.
#[derive(Debug, Clone)]
pub struct WriteAnswer {
    /// What the write did.
    pub outcome: WriteOutcome,
    /// Whether this replays an earlier identical request's answer.
    pub replayed: bool,
}

impl WriteOutcome {
    /// The JSON body of a `Written` answer.
    pub(crate) fn written_body(rows: u64, partitions: u64) -> Json {
        json!({ "rows": rows, "partitions": partitions })
    }

    /// The stored form: the record's tag and response JSON.
    pub(super) fn to_record(&self, request_sha256: [u8; 32]) -> IdempotencyRecord {
        let (status, body) = match self {
            WriteOutcome::Written { rows, partitions } => (RECORD_WRITTEN, Self::written_body(*rows, *partitions)),
            WriteOutcome::PartialWrite(failure) => (RECORD_PARTIAL_WRITE, failure.body()),
            WriteOutcome::LateRowsRefused(failure) => (RECORD_LATE_ROWS_REFUSED, failure.body()),
        };
        IdempotencyRecord { request_sha256, status, response: body.to_string() }
    }

    /// Decodes [`WriteOutcome::to_record`]'s form, as written by every
    /// version that stored these tags.
    pub(super) fn from_record(record: &IdempotencyRecord) -> Result<WriteOutcome, Failure> {
        let decoded = match record.status {
            RECORD_WRITTEN => written_from(&record.response),
            RECORD_PARTIAL_WRITE => {
                failure_from(ErrorCode::PartialWrite, &record.response).map(WriteOutcome::PartialWrite)
            }
            RECORD_LATE_ROWS_REFUSED => {
                failure_from(ErrorCode::LateRowsRefused, &record.response).map(WriteOutcome::LateRowsRefused)
            }
            _ => None,
        };
        decoded.ok_or_else(|| {
            Failure::new(
                ErrorCode::Internal,
                format!("the stored answer for this Idempotency-Key (tag {}) cannot be read", record.status),
            )
        })
    }
}

fn written_from(response: &str) -> Option<WriteOutcome> {
    let Json::Object(body) = serde_json::from_str(response).ok()? else { return None };
    if body.len() != 2 {
        return None;
    }
    let rows = body.get("rows")?.as_u64()?;
    let partitions = body.get("partitions")?.as_u64()?;
    Some(WriteOutcome::Written { rows, partitions })
}

/// Reads `{"error":{"code","message",…detail}}` back into the failure that
/// [`Failure::body`] rendered it from.
fn failure_from(code: ErrorCode, response: &str) -> Option<Failure> {
    let Json::Object(mut body) = serde_json::from_str(response).ok()? else { return None };
    let Json::Object(mut error) = body.remove("error")? else { return None };
    if !body.is_empty() || error.remove("code")? != code.as_str() {
        return None;
    }
    let Json::String(message) = error.remove("message")? else { return None };
    let failure = Failure::new(code, message);
    Some(if error.is_empty() { failure } else { failure.with_detail(Json::Object(error)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(status: u16, response: &str) -> IdempotencyRecord {
        IdempotencyRecord { request_sha256: [7; 32], status, response: response.to_string() }
    }

    fn body_of(outcome: &WriteOutcome) -> String {
        match outcome {
            WriteOutcome::Written { rows, partitions } => WriteOutcome::written_body(*rows, *partitions).to_string(),
            WriteOutcome::PartialWrite(failure) | WriteOutcome::LateRowsRefused(failure) => failure.body().to_string(),
        }
    }

    #[test]
    fn records_on_disk_decode_to_the_same_answer_bytes() {
        let records = [
            stored(200, r#"{"partitions":2,"rows":5}"#),
            stored(
                400,
                r#"{"error":{"code":"partial_write","lines":[{"error_message":"bad","line_number":2,"original_line":"x"}],"message":"1 line(s) written, 1 rejected","rows":1}}"#,
            ),
            stored(
                409,
                r#"{"error":{"code":"late_rows_refused","message":"1 row(s) written, 1 refused: sealed partition(s) d/p accept no writes","partitions":1,"refused":[{"line_number":2,"partition":"d/p"}],"refused_rows":1,"rows":1,"sealed_partitions":["d/p"]}}"#,
            ),
        ];
        for record in records {
            let outcome = WriteOutcome::from_record(&record).unwrap();
            assert_eq!(body_of(&outcome), record.response);
            assert_eq!(outcome.to_record([7; 32]), record);
        }
    }

    #[test]
    fn a_record_that_does_not_decode_is_an_internal_failure() {
        for record in [stored(200, "null"), stored(400, r#"{"error":{"code":"late_rows_refused","message":"m"}}"#)] {
            assert_eq!(WriteOutcome::from_record(&record).unwrap_err().code, ErrorCode::Internal);
        }
    }
}
