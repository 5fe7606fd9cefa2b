//! The token admin API: `POST /v1/tokens` (the token is shown once),
//! `GET /v1/tokens` (never hashes) and `DELETE /v1/tokens/{name}` (revoke).

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::auth::TokenCache;
use super::{Body, json_response};
use crate::catalog::{Catalog, TokenRecord};
use crate::error::{ErrorCode, Failure};
use crate::time::now_ns;
use crate::time::rfc3339;
use crate::token;

/// `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    scopes: Vec<String>,
    /// RFC 3339 or epoch ns; may lie in the past (the token is then dead).
    expires_at: Option<Json>,
    /// A lifetime such as `30d` or `12h`.
    expires_in: Option<String>,
}

/// The JSON view of a token: never its hash.
fn view(record: &TokenRecord, now: i64) -> Json {
    let time = |ns: Option<i64>| ns.map(rfc3339);
    json!({
        "name": record.name,
        "scopes": record.scopes,
        "status": token::status(record, now),
        "created_at": rfc3339(record.created_at_ns),
        "expires_at": time(record.expires_at_ns),
        "revoked_at": time(record.revoked_at_ns),
        "last_used_at": time(record.last_used_at_ns),
    })
}

pub(super) async fn create(catalog: &Arc<Catalog>, cache: &TokenCache, body: Bytes) -> Result<Response<Body>, Failure> {
    let request: CreateRequest = serde_json::from_slice(&body)
        .map_err(|e| Failure::new(ErrorCode::InvalidJson, format!("invalid token request: {e}")))?;
    let now = now_ns();
    let expires_at_ns = match (&request.expires_at, &request.expires_in) {
        (Some(_), Some(_)) => {
            return Err(Failure::new(ErrorCode::BadRequest, "give expires_at or expires_in, not both"));
        }
        (Some(at), None) => Some(crate::query::plan::time_bound(at, "expires_at")?),
        (None, Some(lifetime)) => Some(now.saturating_add(token::parse_lifetime(lifetime).map_err(bad)?)),
        (None, None) => None,
    };
    let (secret, record) = catalog
        .call(move |catalog| -> Result<_, Failure> {
            Ok(token::issue(catalog, &request.name, &request.scopes, expires_at_ns, now)?)
        })
        .await?;
    cache.reload().await?;
    let mut answer = view(&record, now);
    answer["token"] = Json::String(secret);
    Ok(json_response(StatusCode::CREATED, &answer))
}

pub(super) async fn list(catalog: &Arc<Catalog>) -> Result<Response<Body>, Failure> {
    let records = catalog.call(|catalog| catalog.tokens()).await?;
    let now = now_ns();
    let tokens: Vec<Json> = records.iter().map(|r| view(r, now)).collect();
    Ok(json_response(StatusCode::OK, &json!({ "tokens": tokens })))
}

pub(super) async fn revoke(catalog: &Arc<Catalog>, cache: &TokenCache, name: &str) -> Result<Response<Body>, Failure> {
    let owned = name.to_string();
    let now = now_ns();
    let record = catalog
        .call(move |catalog| catalog.revoke_token(&owned, now))
        .await?
        .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no token named {name:?}")))?;
    // Before answering: the token must not work for one more request.
    cache.reload().await?;
    Ok(json_response(StatusCode::OK, &view(&record, now)))
}

fn bad(message: String) -> Failure {
    Failure::new(ErrorCode::BadRequest, message)
}
