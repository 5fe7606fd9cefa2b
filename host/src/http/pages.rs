//! Pagination of listings: `?limit=` (default 1000, at most 10000) and an
//! opaque `?cursor=` — the URL-safe base64 of the last listed entry's sort
//! key as JSON — answered as `next_cursor` (`null` on the last page).
//!
//! **Invariant:** a cursor is only ever decoded into the sort key of the
//! listing that made it; anything else is `invalid_cursor`, never a page
//! from somewhere else.

use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use super::param;
use crate::error::{ErrorCode, Failure};

/// Entries per page unless `?limit=` says otherwise.
pub(super) const DEFAULT_LIMIT: usize = 1000;
/// The largest `?limit=`.
pub(super) const MAX_LIMIT: usize = 10_000;

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `?limit=`: 1..=10000, default 1000.
pub(super) fn limit(params: &[(String, String)]) -> Result<usize, Failure> {
    match param(params, "limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => raw.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
            Failure::new(ErrorCode::BadRequest, format!("limit {raw:?} must be an integer within 1..={MAX_LIMIT}"))
        }),
    }
}

/// `?cursor=`, decoded into the listing's sort key.
pub(super) fn cursor<T: DeserializeOwned>(params: &[(String, String)]) -> Result<Option<T>, Failure> {
    let Some(raw) = param(params, "cursor") else { return Ok(None) };
    let invalid = || {
        Failure::new(
            ErrorCode::InvalidCursor,
            format!("cursor {raw:?} is not one this listing answered (give back a next_cursor unchanged)"),
        )
    };
    let bytes = ENGINE.decode(raw.as_bytes()).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map(Some).map_err(|_| invalid())
}

/// The `next_cursor` continuing after `last` when more entries follow.
pub(super) fn next_cursor<T: Serialize>(last: Option<T>, more: bool) -> Json {
    match last {
        Some(key) if more => Json::String(ENGINE.encode(serde_json::to_vec(&key).expect("a sort key serializes"))),
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused_with_a_stable_code() {
        let next = next_cursor(Some((5_i64, "a/b".to_string(), 7_i64)), true);
        let given = params(&[("cursor", next.as_str().unwrap())]);
        assert_eq!(cursor::<(i64, String, i64)>(&given).unwrap(), Some((5, "a/b".into(), 7)));
        assert_eq!(next_cursor(Some(1_i64), false), Json::Null);
        for bad in ["%%%", "bm90IGpzb24", "WzEsMl0"] {
            let error = cursor::<(i64, String, i64)>(&params(&[("cursor", bad)])).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidCursor, "{bad}");
        }
        assert_eq!(limit(&[]).unwrap(), DEFAULT_LIMIT);
        for bad in ["0", "10001", "ten", "-1"] {
            assert_eq!(limit(&params(&[("limit", bad)])).unwrap_err().code, ErrorCode::BadRequest);
        }
    }
}
