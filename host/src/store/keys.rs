//! Partition keys on the write path: one batched call into the dataset's
//! partitioner (pinned to the version active when the request arrived), off
//! the async runtime.
//!
//! A failed call (trap, limit, invalid key) refuses the request. Records the
//! partitioner rejects refuse it too — except in a line-protocol request
//! with `accept_partial`, where their lines are dropped and reported like
//! lines that do not parse, as long as some line is left.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::write::{Format, LINE_ERRORS_LISTED_MAX, WriteRequest};
use super::{DatasetState, Store, on_blocking_pool};
use crate::error::{ErrorCode, Failure};
use crate::ingest::batch::ParsedBatch;
use crate::ingest::line_protocol::LineError;
use crate::policy::{BoundPartitioner, PolicyRuntime};

/// The rows that got a partition key, and how they were keyed.
pub(super) struct Keyed {
    /// The rows (without those the partitioner rejected).
    pub parsed: ParsedBatch,
    /// One key per row, or `None` when the dataset has no partitioner.
    pub keys: Option<Vec<String>>,
    /// The field every key was taken from verbatim, or "".
    pub key_field: String,
}

impl Store {
    /// Keys `parsed` with the dataset's partitioner, if it has one.
    pub(super) async fn key_rows(
        &self,
        policies: &Arc<PolicyRuntime>,
        dataset: &Arc<DatasetState>,
        parsed: ParsedBatch,
        request: &WriteRequest,
        line_errors: &mut Vec<LineError>,
    ) -> Result<Keyed, Failure> {
        let Some(partitioner) = policies.partitioner_for(dataset.name.as_str())? else {
            return Ok(Keyed { parsed, keys: None, key_field: String::new() });
        };
        let (parsed, keys) = partition_keys(policies, &partitioner, dataset, parsed, request, line_errors).await?;
        Ok(Keyed { parsed, keys: Some(keys), key_field: partitioner.verbatim_field().unwrap_or_default() })
    }
}

/// Runs the partitioner over `parsed` (one call, off the async runtime) and
/// returns the rows that got a key, with their keys.
async fn partition_keys(
    policies: &Arc<PolicyRuntime>,
    partitioner: &BoundPartitioner,
    dataset: &Arc<DatasetState>,
    parsed: ParsedBatch,
    request: &WriteRequest,
    line_errors: &mut Vec<LineError>,
) -> Result<(ParsedBatch, Vec<String>), Failure> {
    let (runtime, bound, time_column) = (policies.clone(), partitioner.clone(), dataset.record.time_column.clone());
    let (parsed, results) = on_blocking_pool(move || {
        let results = runtime.partition_batch(&bound, &parsed, &time_column);
        (parsed, results)
    })
    .await?;
    let name = partitioner.name();
    let results = results.map_err(|error| {
        let error = Failure::from(error);
        Failure::new(
            error.code,
            format!("the partitioner failed, nothing of this request was written: {}", error.message),
        )
        .with_detail(json!({ "policy": name }))
    })?;
    if results.iter().all(Result::is_ok) {
        let keys = results.into_iter().map(|key| key.expect("no rejected record")).collect();
        return Ok((parsed, keys));
    }
    drop_rejected_records(name, parsed, results, request, line_errors)
}

/// Drops the records the partitioner rejected when the request allows it
/// (their lines go into `line_errors`), or refuses the request.
fn drop_rejected_records(
    name: &str,
    parsed: ParsedBatch,
    results: Vec<Result<String, String>>,
    request: &WriteRequest,
    line_errors: &mut Vec<LineError>,
) -> Result<(ParsedBatch, Vec<String>), Failure> {
    let rejected: Vec<(usize, &str)> = results
        .iter()
        .enumerate()
        .filter_map(|(row, result)| result.as_ref().err().map(|m| (row, m.as_str())))
        .collect();
    let line_protocol = request.format == Format::LineProtocol;
    if line_protocol {
        let numbers: Vec<usize> = rejected.iter().map(|(row, _)| parsed.record_number(*row)).collect();
        let texts = line_texts(&request.body, &numbers);
        for ((number, (_, message)), text) in numbers.iter().zip(&rejected).zip(texts) {
            line_errors.push(LineError {
                line_number: *number,
                original_line: text,
                error_message: format!("partitioner {name}: {message}"),
            });
        }
        line_errors.sort_by_key(|error| error.line_number);
    }
    if !(line_protocol && request.accept_partial) || rejected.len() == parsed.rows() {
        return Err(unkeyable(name, &parsed, &rejected, line_protocol.then_some(line_errors.as_slice())));
    }
    let keep: Vec<bool> = results.iter().map(Result::is_ok).collect();
    let keys = results.into_iter().filter_map(Result::ok).collect();
    Ok((parsed.retain_rows(&keep), keys))
}

/// The refusal of a request with records the partitioner could not key;
/// `line_errors` is set for line protocol, which lists lines, not records.
fn unkeyable(
    name: &str,
    parsed: &ParsedBatch,
    rejected: &[(usize, &str)],
    line_errors: Option<&[LineError]>,
) -> Failure {
    let count = rejected.len();
    let (first_row, first_message) = rejected[0];
    let first = parsed.record_number(first_row);
    let unit = if line_errors.is_some() { "line" } else { "record" };
    let detail = match line_errors {
        Some(lines) => json!({ "policy": name, "lines": &lines[..lines.len().min(LINE_ERRORS_LISTED_MAX)] }),
        None => {
            let records: Vec<Json> = rejected
                .iter()
                .take(LINE_ERRORS_LISTED_MAX)
                .map(|(row, message)| json!({ "record": parsed.record_number(*row), "error_message": message }))
                .collect();
            json!({ "policy": name, "records": records })
        }
    };
    Failure::new(
        ErrorCode::PolicyFailed,
        format!(
            "partitioner {name} could not key {count} {unit}(s) ({unit} {first}: {first_message}); nothing was written"
        ),
    )
    .with_detail(detail)
}

/// The text of each line `numbers` (1-based, ascending or not) names in
/// `body`, cut to 256 bytes like a parse error's `original_line`. One pass.
fn line_texts(body: &[u8], numbers: &[usize]) -> Vec<String> {
    let wanted: HashSet<usize> = numbers.iter().copied().collect();
    let last = numbers.iter().copied().max().unwrap_or(0);
    let mut found: HashMap<usize, String> = HashMap::with_capacity(wanted.len());
    for (index, line) in body.split(|b| *b == b'\n').enumerate().take(last) {
        if wanted.contains(&(index + 1)) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            found.insert(index + 1, String::from_utf8_lossy(&line[..line.len().min(256)]).into_owned());
        }
    }
    numbers.iter().map(|number| found.get(number).cloned().unwrap_or_default()).collect()
}
