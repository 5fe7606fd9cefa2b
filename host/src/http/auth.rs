//! Authentication and authorization of every request.
//!
//! **Invariant:** every route has a required scope by construction.
//! [`required_scope`] mirrors `route()`; a request it does not map is
//! answered 404/405 here and never reaches a handler, so a route added to
//! `route()` without a scope is refused rather than open.
//!
//! Authentication is on as soon as the catalog holds a token (revoked and
//! expired ones count: it never switches itself off again) or when
//! `auth.required` is set. While it is off every request is allowed — the
//! server then listens on loopback only (`server::run` checks).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response};
use serde_json::json;

use super::{AppState, Body, error_response, param, query_params};
use crate::catalog::Catalog;
use crate::error::{ErrorCode, Failure};
use crate::query::DatasetFilter;
use crate::time::now_ns;
use crate::token::{Scopes, TOKEN_BYTES_MAX};

/// How often the cache asks whether another process (`strata token`
/// against a running server) changed the catalog, and re-reads the token
/// table if so: such changes apply within this time. Changes through the
/// API apply at once.
const TOKEN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// A token's `last_used_at_ns` is written at most this often (each write is
/// a catalog commit), in ns.
const TOKEN_USE_RECORD_INTERVAL_NS: i64 = 60_000_000_000;

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    /// Nothing: `/health` and `/ready`.
    Open,
    /// `/metrics` and `/health/lifecycle`: any valid token, or nothing with
    /// `auth.metrics_open`.
    Monitoring,
    /// Any valid token; the handler shows only what the token may read
    /// (`GET /v1/datasets`, `POST /v1/sql`), or refuses the request for a
    /// missing dataset parameter.
    AnyToken,
    /// `read:` covering the dataset (as the request spells it).
    Read(String),
    /// `write:` covering the dataset.
    Write(String),
    /// `admin`.
    Admin,
    /// A known path, not with this method: 405 (after authentication).
    MethodNotAllowed,
    /// No such route: 404 (after authentication).
    NotFound,
}

/// The scope every route needs. Mirrors `route()` arm by arm (keep them in
/// step: a route missing here is refused). Writes name their dataset in
/// the path or in the `bucket`/`db` parameter; `params` are the decoded
/// query parameters, read with the same `param` the handlers use.
pub fn required_scope(method: &Method, segments: &[&str], params: &[(String, String)]) -> Required {
    use Required::*;
    let write_param = |name: &str| param(params, name).map_or(AnyToken, |d| Write(d.to_string()));
    let read_param = |name: &str| param(params, name).map_or(AnyToken, |d| Read(d.to_string()));
    match (method, segments) {
        (&Method::GET, ["health" | "ready"]) => Open,
        // The console's static files: the page asks for a token itself.
        (&Method::GET | &Method::HEAD, _) if super::console::is_console_path(segments) => Open,
        (&Method::GET | &Method::HEAD, ["ping"] | ["health"]) => Open,
        (&Method::GET, ["api", "v2", "buckets"]) => AnyToken,
        (&Method::GET | &Method::POST, ["api", "v3", "query_influxql"]) => read_param("db"),
        (&Method::GET, ["metrics"] | ["health", "lifecycle"]) => Monitoring,
        (&Method::POST, ["v1", "datasets", dataset, "records"]) => Write(dataset.to_string()),
        (&Method::POST, ["api", "v2", "write"]) => write_param("bucket"),
        (&Method::POST, ["api", "v3", "write_lp"]) => write_param("db"),
        // The InfluxDB v1 endpoints (dataset = `db`).
        (&Method::POST, ["write"]) => write_param("db"),
        (&Method::GET | &Method::POST, ["query"]) => read_param("db"),
        (&Method::GET, ["v1", "datasets"]) => AnyToken,
        (&Method::GET, ["v1", "datasets", dataset]) => Read(dataset.to_string()),
        (&Method::GET, ["v1", "datasets", dataset, "partitions"]) => Read(dataset.to_string()),
        (&Method::GET, ["v1", "datasets", dataset, "partitions", rest @ ..])
            if rest.len() >= 2 && rest.last() == Some(&"explain") =>
        {
            Read(dataset.to_string())
        }
        (&Method::GET, ["v1", "datasets", dataset, "compaction"]) => Read(dataset.to_string()),
        (&Method::GET, ["v1", "datasets", dataset, "timeline"]) => Read(dataset.to_string()),
        (&Method::GET, ["v1", "datasets", dataset, "manifest" | "routing"]) => Read(dataset.to_string()),
        (&Method::POST, ["v1", "datasets", dataset, "query"]) => Read(dataset.to_string()),
        // Restore, seal, unseal, move, archive and delete.
        (&Method::POST, ["v1", "datasets", _, "partitions", rest @ ..]) if rest.len() >= 2 => Admin,
        (&Method::POST, ["v1", "datasets", _, "compact"]) => Admin,
        (&Method::POST, ["v1", "datasets", _, "schema"]) => Admin,
        (&Method::PUT | &Method::PATCH | &Method::DELETE, ["v1", "datasets", _]) => Admin,
        (&Method::POST, ["v1", "sql"]) => AnyToken,
        // The handler checks `db` and every dataset the SQL reads.
        (&Method::GET | &Method::POST, ["api", "v3", "query_sql"]) => read_param("db"),
        (&Method::POST, ["v1", "flush"]) => Admin,
        (&Method::GET, ["v1", "policies"] | ["v1", "policies", _] | ["v1", "policies", _, "versions"]) => Admin,
        (&Method::POST, ["v1", "policies", "reload"]) => Admin,
        (&Method::POST, ["v1", "policies", _, "rollback" | "run" | "simulate"]) => Admin,
        (&Method::GET, ["v1", "lifecycle", "runs"] | ["v1", "lifecycle", "runs", _]) => Admin,
        (&Method::GET, ["v1", "storage-targets"] | ["v1", "audit"]) => Admin,
        (&Method::GET | &Method::POST, ["v1", "tokens"]) => Admin,
        (&Method::DELETE, ["v1", "tokens", _]) => Admin,
        (_, ["health" | "ready" | "metrics" | "write" | "query" | "ping"])
        | (_, ["api", "v2", "buckets"] | ["api", "v3", "query_influxql"])
        | (_, ["health", "lifecycle"])
        | (_, ["v1", "datasets", ..])
        | (_, ["api", "v2", "write"])
        | (_, ["api", "v3", "write_lp" | "query_sql"])
        | (_, ["v1", "flush" | "sql"])
        | (_, ["v1", "policies" | "lifecycle" | "audit" | "storage-targets" | "tokens", ..]) => MethodNotAllowed,
        _ => NotFound,
    }
}

/// Whether the path is one of the InfluxDB v1 endpoints, which also take
/// Basic authentication and `?u=&p=` (the password is the token).
fn is_v1(segments: &[&str]) -> bool {
    matches!(segments, ["write" | "query"])
}

/// Why a presented credential cannot be used (never containing it).
type Malformed = &'static str;

/// The token a request presents: `Authorization: Bearer <token>` or
/// `Token <token>` anywhere; on the v1 endpoints also `Basic` (the
/// password is the token, the user is ignored) and the `p` parameter.
/// Tokens in any other query parameter are ignored: URLs end up in logs.
pub fn credential(headers: &HeaderMap, params: &[(String, String)], v1: bool) -> Result<Option<String>, Malformed> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(if v1 { param(params, "p").map(str::to_string) } else { None });
    };
    if values.next().is_some() {
        return Err("send one Authorization header");
    }
    let value = value.to_str().map_err(|_| "the Authorization header is not visible ASCII")?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        if rest.is_empty() {
            return Err("the Authorization header names no token");
        }
        return Ok(Some(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        if !v1 {
            return Err(
                "Basic authentication is accepted on the InfluxDB v1 endpoints only; send Authorization: Bearer <token>",
            );
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| "the Basic credentials are not valid base64")?;
        let decoded = String::from_utf8(decoded).map_err(|_| "the Basic credentials are not UTF-8")?;
        let (_user, password) = decoded.split_once(':').ok_or("the Basic credentials hold no user:password pair")?;
        return Ok(Some(password.to_string()));
    }
    Err("unsupported Authorization scheme; send Authorization: Bearer <token> (or Token <token>)")
}

/// Who is making a request and what they may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's name; `None` without a token.
    token: Option<String>,
    /// `None`: authentication is off, everything is allowed.
    scopes: Option<Arc<Scopes>>,
}

impl Grant {
    /// Everything is allowed (authentication is off).
    fn unrestricted() -> Grant {
        Grant { token: None, scopes: None }
    }

    /// Nothing is allowed (an open route with authentication on).
    fn nothing() -> Grant {
        Grant { token: None, scopes: Some(Arc::new(Scopes::default())) }
    }

    /// The actor the audit names: the token's name, or `anonymous`.
    pub fn actor(&self) -> &str {
        self.token.as_deref().unwrap_or("anonymous")
    }

    /// Whether the request may read `dataset`.
    pub fn may_read(&self, dataset: &str) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.may_read(dataset))
    }

    fn may_write(&self, dataset: &str) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.may_write(dataset))
    }

    fn is_admin(&self) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.is_admin())
    }

    /// The datasets this request may read, for the query engine.
    pub fn readable(&self) -> DatasetFilter {
        let grant = self.clone();
        Arc::new(move |dataset: &str| grant.may_read(dataset))
    }
}

/// The grant `authorize` attached to a request; nothing is allowed when
/// there is none (a handler reached some other way).
pub fn grant_of(request: &Request<Incoming>) -> Grant {
    request.extensions().get::<Grant>().cloned().unwrap_or_else(Grant::nothing)
}

/// One token as the request path needs it.
#[derive(Debug)]
struct CachedToken {
    id: i64,
    name: String,
    scopes: Arc<Scopes>,
    expires_at_ns: Option<i64>,
    last_used_at_ns: AtomicI64,
}

/// The token table as last read: active and expired tokens by hash.
#[derive(Debug, Default)]
struct TokenTable {
    by_hash: HashMap<String, Arc<CachedToken>>,
    /// The catalog holds at least one token row (authentication is on).
    any: bool,
}

/// The catalog's tokens, held in memory and looked up by hash. Re-read at
/// once after a change through the API, and within
/// [`TOKEN_REFRESH_INTERVAL`] after another process changed the catalog
/// (SQLite's `data_version`, asked in the background, tells; an idle
/// server reads no table).
#[derive(Debug)]
pub struct TokenCache {
    catalog: Arc<Catalog>,
    table: ArcSwap<TokenTable>,
    /// Held from a reload's read to its store, so reloads store in the
    /// order they read: a background refresh that read before a revoke
    /// can never replace the table read after it.
    reloading: tokio::sync::Mutex<()>,
    required: bool,
    /// The catalog's `foreign_changes` the table is current for.
    read_at: AtomicI64,
    /// How often the table was read.
    reads: AtomicU64,
}

impl TokenCache {
    /// Reads the token table and starts refreshing it in the background
    /// until the cache is dropped.
    pub async fn open(catalog: Arc<Catalog>, required: bool) -> Result<Arc<TokenCache>, Failure> {
        let cache = Arc::new(TokenCache {
            catalog,
            table: ArcSwap::from_pointee(TokenTable::default()),
            reloading: tokio::sync::Mutex::new(()),
            required,
            read_at: AtomicI64::new(i64::MIN),
            reads: AtomicU64::new(0),
        });
        cache.reload().await?;
        let weak: Weak<TokenCache> = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOKEN_REFRESH_INTERVAL).await;
                let Some(cache) = weak.upgrade() else { return };
                if let Err(error) = cache.refresh().await {
                    tracing::warn!(%error, "re-reading the token table failed; the last one stays in use");
                }
            }
        });
        Ok(cache)
    }

    /// Re-reads the token table if another process changed the catalog
    /// since the last read.
    async fn refresh(&self) -> Result<(), Failure> {
        let now = self.catalog.call(|catalog| catalog.foreign_changes()).await?;
        if now == self.read_at.load(Ordering::Acquire) {
            return Ok(());
        }
        self.reload().await
    }

    /// Re-reads the token table from the catalog.
    pub async fn reload(&self) -> Result<(), Failure> {
        let _reloading = self.reloading.lock().await;
        let (read_at, records) = self.catalog.call(|catalog| catalog.tokens_at_foreign_changes()).await?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut table = TokenTable { by_hash: HashMap::new(), any: !records.is_empty() };
        for record in records.into_iter().filter(|r| r.revoked_at_ns.is_none()) {
            // Scopes were checked when stored; one that no longer parses
            // (a hand-edited catalog) leaves the token without permissions.
            let scopes = Scopes::parse(&record.scopes).unwrap_or_else(|problem| {
                tracing::warn!(token = %record.name, %problem, "a stored token has an invalid scope; it grants nothing");
                Scopes::default()
            });
            let cached = CachedToken {
                id: record.id,
                name: record.name,
                scopes: Arc::new(scopes),
                expires_at_ns: record.expires_at_ns,
                last_used_at_ns: AtomicI64::new(record.last_used_at_ns.unwrap_or(i64::MIN)),
            };
            table.by_hash.insert(record.hash, Arc::new(cached));
        }
        self.table.store(Arc::new(table));
        self.read_at.store(read_at, Ordering::Release);
        Ok(())
    }

    /// Whether requests need a token.
    pub fn enabled(&self) -> bool {
        self.required || self.table.load().any
    }

    /// The datasets the bearer of `headers`' credential may read, for
    /// callers that arrive by another door than the HTTP routes (Flight
    /// SQL's `authorization` metadata): everything while authentication is
    /// off, else what a known, unexpired, unrevoked token grants.
    pub fn readable_by(&self, headers: &HeaderMap) -> Result<DatasetFilter, Failure> {
        if !self.enabled() {
            return Ok(Grant::unrestricted().readable());
        }
        let token = credential(headers, &[], false)
            .map_err(|why| Failure::new(ErrorCode::Unauthorized, why))?
            .ok_or_else(|| Failure::new(ErrorCode::Unauthorized, "a token is needed: authorization: Bearer <token>"))?;
        let grant = self
            .authenticate(&token)
            .ok_or_else(|| Failure::new(ErrorCode::Unauthorized, "the token is unknown, expired or revoked"))?;
        Ok(grant.readable())
    }

    /// The grant of a presented token, if it is known, not revoked and not
    /// expired. The lookup is by hash: the plaintext is compared with nothing.
    fn authenticate(&self, token: &str) -> Option<Grant> {
        if token.len() > TOKEN_BYTES_MAX {
            return None;
        }
        let cached = self.table.load().by_hash.get(&crate::token::hash(token)).cloned()?;
        let now = now_ns();
        if cached.expires_at_ns.is_some_and(|expires| expires <= now) {
            return None;
        }
        self.note_use(&cached, now);
        Some(Grant { token: Some(cached.name.clone()), scopes: Some(cached.scopes.clone()) })
    }

    /// Records the use in the catalog, at most once a minute per token, off
    /// the request's path.
    fn note_use(&self, token: &CachedToken, now: i64) {
        let last = token.last_used_at_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) < TOKEN_USE_RECORD_INTERVAL_NS
            || token.last_used_at_ns.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let (catalog, id) = (self.catalog.clone(), token.id);
        tokio::spawn(async move {
            if let Err(error) = catalog.call(move |catalog| catalog.touch_token(id, now)).await {
                tracing::warn!(%error, "recording a token's last use failed");
            }
        });
    }
}

/// A request that may proceed, with what to audit once it is answered.
#[derive(Debug)]
pub struct Admission {
    grant: Grant,
    /// Admin requests: `(method, path, dataset)` to record.
    audit: Option<(Method, String, Option<String>)>,
}

impl Admission {
    /// Records an admin request's outcome (see [`status_of`]) in the audit
    /// log, naming the token. The path is recorded without its query string.
    pub async fn audit(self, state: &AppState, status: u16) {
        let Some((method, path, dataset)) = self.audit else { return };
        record_admin_request(state, self.grant.actor(), &method, &path, dataset, status).await;
    }
}

/// The status a handler's answer is sent with.
pub fn status_of(response: &Result<Response<Body>, Failure>) -> u16 {
    match response {
        Ok(response) => response.status().as_u16(),
        Err(error) => super::status::for_code(error.code).as_u16(),
    }
}

async fn record_admin_request(
    state: &AppState,
    actor: &str,
    method: &Method,
    path: &str,
    dataset: Option<String>,
    status: u16,
) {
    let Some(store) = state.store.get() else { return };
    let detail = json!({ "method": method.as_str(), "path": path, "status": status });
    let actor = actor.to_string();
    let recorded =
        store.catalog().call(move |catalog| catalog.audit_request(&actor, dataset.as_deref(), &detail, now_ns())).await;
    if recorded.is_err() {
        tracing::warn!(%method, %path, "recording an admin request in the audit log failed");
    }
}

/// Authenticates and authorizes a request before any handler sees it: the
/// refusal (401, 403, 404, 405, 503) is the `Err` response. On success the
/// request carries its [`Grant`] (see [`grant_of`]).
pub async fn authorize(state: &AppState, request: &mut Request<Incoming>) -> Result<Admission, Response<Body>> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let params = query_params(request);
    let mut required = required_scope(request.method(), &segments, &params);
    if required == Required::Monitoring && state.config.auth.metrics_open {
        required = Required::Open;
    }
    if required == Required::Open {
        return Ok(Admission { grant: Grant::nothing(), audit: None });
    }
    let tokens = state.token_cache().map_err(|starting| error_response(&starting))?;
    let v1 = is_v1(&segments);
    let grant = if tokens.enabled() {
        let presented = credential(request.headers(), &params, v1).map_err(|why| unauthorized(why, v1))?;
        let token =
            presented.ok_or_else(|| unauthorized("this endpoint needs a token: Authorization: Bearer <token>", v1))?;
        tokens.authenticate(&token).ok_or_else(|| unauthorized("the token is unknown, expired or revoked", v1))?
    } else {
        Grant::unrestricted()
    };
    let audit = (required == Required::Admin).then(|| {
        let dataset = match segments.as_slice() {
            ["v1", "datasets", dataset, ..] => Some(dataset.to_string()),
            _ => None,
        };
        (request.method().clone(), path.clone(), dataset)
    });
    let refusal = match &required {
        Required::Open | Required::Monitoring | Required::AnyToken => None,
        Required::Read(dataset) => (!grant.may_read(dataset)).then(|| forbidden(format!("read:{dataset}"))),
        Required::Write(dataset) => (!grant.may_write(dataset)).then(|| forbidden(format!("write:{dataset}"))),
        Required::Admin => (!grant.is_admin()).then(|| forbidden("admin".to_string())),
        Required::MethodNotAllowed => {
            Some(Failure::new(ErrorCode::MethodNotAllowed, format!("{} is not allowed on {path}", request.method())))
        }
        Required::NotFound => Some(Failure::new(ErrorCode::NotFound, format!("no route {} {path}", request.method()))),
    };
    let mut admission = Admission { grant: grant.clone(), audit };
    if let Some(refusal) = refusal {
        admission.audit(state, super::status::for_code(refusal.code).as_u16()).await;
        return Err(error_response(&refusal));
    }
    // An admin read that was let through changes nothing: recording it
    // would only grow the log with its own reading.
    if request.method() == Method::GET {
        admission.audit = None;
    }
    request.extensions_mut().insert(grant);
    Ok(admission)
}

fn forbidden(scope: String) -> Failure {
    Failure::new(ErrorCode::Forbidden, format!("the token lacks the scope {scope}"))
        .with_detail(json!({ "scope": scope }))
}

/// 401 with the challenges a client needs: Bearer everywhere, Basic too on
/// the v1 endpoints (the InfluxDB 1.x clients answer it).
fn unauthorized(why: &str, v1: bool) -> Response<Body> {
    let mut response = error_response(&Failure::new(ErrorCode::Unauthorized, why));
    let headers = response.headers_mut();
    headers.append(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"strata\""));
    if v1 {
        headers.append(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"strata\""));
    }
    response
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn params(query: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(query.as_bytes()).into_owned().collect()
    }

    fn required(method: Method, path_and_query: &str) -> Required {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        required_scope(&method, &segments, &params(query))
    }

    /// Every route of `route()`, with the scope it needs.
    #[test]
    fn every_route_has_its_scope() {
        use Required::*;
        let read = |d: &str| Read(d.to_string());
        let write = |d: &str| Write(d.to_string());
        for (method, path, expected) in [
            (Method::GET, "/health", Open),
            (Method::GET, "/ready", Open),
            (Method::GET, "/metrics", Monitoring),
            (Method::GET, "/health/lifecycle", Monitoring),
            (Method::POST, "/v1/datasets/orders/records", write("orders")),
            (Method::POST, "/api/v2/write?bucket=orders&precision=s", write("orders")),
            (Method::POST, "/api/v2/write?org=x", AnyToken),
            (Method::POST, "/api/v2/write?bucket=a&bucket=b", write("a")),
            (Method::POST, "/api/v2/write?bucket=%6Frders", write("orders")),
            (Method::POST, "/api/v3/write_lp?db=orders", write("orders")),
            (Method::POST, "/api/v3/write_lp", AnyToken),
            (Method::POST, "/write?db=orders&u=x&p=y", write("orders")),
            (Method::GET, "/query?db=orders&q=SELECT", read("orders")),
            (Method::GET, "/ping", Open),
            (Method::HEAD, "/ping", Open),
            (Method::HEAD, "/health", Open),
            (Method::GET, "/api/v2/buckets", AnyToken),
            (Method::GET, "/api/v3/query_influxql?db=orders&q=SELECT", read("orders")),
            (Method::POST, "/api/v3/query_influxql", AnyToken),
            (Method::POST, "/query?db=orders", read("orders")),
            (Method::GET, "/v1/datasets", AnyToken),
            (Method::GET, "/v1/datasets/orders", read("orders")),
            (Method::GET, "/v1/datasets/orders/partitions", read("orders")),
            (Method::GET, "/v1/datasets/orders/partitions/orders/2026-01-01/explain", read("orders")),
            (Method::GET, "/v1/datasets/orders/compaction", read("orders")),
            (Method::GET, "/v1/datasets/orders/timeline?buckets=10", read("orders")),
            (Method::POST, "/v1/datasets/orders/query", read("orders")),
            (Method::POST, "/v1/datasets/orders/partitions/2026-01-01/restore", Admin),
            (Method::POST, "/v1/datasets/orders/partitions/2026-01-01/seal", Admin),
            (Method::POST, "/v1/datasets/orders/partitions/2026-01-01/unseal", Admin),
            (Method::POST, "/v1/datasets/orders/partitions/2026-01-01/tenant-7/seal", Admin),
            (Method::POST, "/v1/datasets/orders/compact", Admin),
            (Method::PUT, "/v1/datasets/orders", Admin),
            (Method::PATCH, "/v1/datasets/orders", Admin),
            (Method::POST, "/v1/datasets/orders/schema", Admin),
            (Method::POST, "/v1/sql", AnyToken),
            (Method::GET, "/api/v3/query_sql?db=orders&q=SELECT", read("orders")),
            (Method::POST, "/api/v3/query_sql", AnyToken),
            (Method::POST, "/v1/flush", Admin),
            (Method::GET, "/v1/policies", Admin),
            (Method::GET, "/v1/policies/keep", Admin),
            (Method::POST, "/v1/policies/reload", Admin),
            (Method::POST, "/v1/policies/keep/rollback", Admin),
            (Method::POST, "/v1/policies/keep/run", Admin),
            (Method::POST, "/v1/policies/keep/simulate", Admin),
            (Method::GET, "/v1/lifecycle/runs", Admin),
            (Method::GET, "/v1/lifecycle/runs/7", Admin),
            (Method::GET, "/v1/storage-targets", Admin),
            (Method::GET, "/v1/audit?since=0", Admin),
            (Method::POST, "/v1/tokens", Admin),
            (Method::GET, "/v1/tokens", Admin),
            (Method::DELETE, "/v1/tokens/grafana", Admin),
            // Known paths with another method, and unknown paths.
            (Method::GET, "/v1/datasets/orders/records", MethodNotAllowed),
            (Method::DELETE, "/v1/datasets/orders", Admin),
            (Method::POST, "/v1/datasets/orders/partitions/2026-01-01", MethodNotAllowed),
            (Method::GET, "/v1/datasets/orders/partitions/2026-01-01/seal", MethodNotAllowed),
            (Method::PUT, "/v1/tokens", MethodNotAllowed),
            (Method::DELETE, "/v1/tokens", MethodNotAllowed),
            (Method::GET, "/v1/tokens/grafana", MethodNotAllowed),
            (Method::POST, "/health", MethodNotAllowed),
            (Method::POST, "/metrics", MethodNotAllowed),
            (Method::GET, "/v1/sql", MethodNotAllowed),
            (Method::PUT, "/api/v3/query_sql", MethodNotAllowed),
            (Method::GET, "/v1/flush", MethodNotAllowed),
            (Method::GET, "/api/v2/write", MethodNotAllowed),
            (Method::POST, "/v1/policies", MethodNotAllowed),
            (Method::GET, "/v1/policies/keep/run", MethodNotAllowed),
            (Method::GET, "/", Open),
            (Method::GET, "/console/app.js", Open),
            (Method::HEAD, "/console/style.css", Open),
            (Method::POST, "/", NotFound),
            (Method::GET, "/console/a/b", NotFound),
            (Method::GET, "/v2/datasets", NotFound),
            (Method::GET, "/v1/nothing", NotFound),
            (Method::GET, "/admin", NotFound),
        ] {
            assert_eq!(required(method.clone(), path), expected, "{method} {path}");
        }
    }

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in authorization {
            headers.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_schemes_influx_clients_send_are_understood() {
        let basic = |pair: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
        let token = |t: &str| -> Result<Option<String>, Malformed> { Ok(Some(t.to_string())) };
        let (user, empty_user, colon) = (basic("user:strata_abc"), basic(":strata_abc"), basic("user:pa:ss"));
        for (authorization, query, v1, expected) in [
            (vec!["Bearer strata_abc"], "", false, token("strata_abc")),
            (vec!["bearer   strata_abc  "], "", false, token("strata_abc")),
            (vec!["Token strata_abc"], "", false, token("strata_abc")),
            (vec!["TOKEN strata_abc"], "", true, token("strata_abc")),
            (vec![user.as_str()], "", true, token("strata_abc")),
            (vec![empty_user.as_str()], "", true, token("strata_abc")),
            (vec![colon.as_str()], "", true, token("pa:ss")),
            (vec![], "u=user&p=strata_abc", true, token("strata_abc")),
            (vec![], "p=strata_abc", true, token("strata_abc")),
            // The header wins over the parameter.
            (vec!["Bearer strata_h"], "p=strata_p", true, token("strata_h")),
            (vec![], "", true, Ok(None)),
            (vec![], "", false, Ok(None)),
            // Tokens in URLs are taken on the v1 endpoints only, and only as `p`.
            (vec![], "p=strata_abc", false, Ok(None)),
            (vec![], "token=strata_abc", false, Ok(None)),
            (vec![], "token=strata_abc", true, Ok(None)),
        ] {
            assert_eq!(credential(&headers(&authorization), &params(query), v1), expected, "{authorization:?} {query}");
        }
        for (authorization, v1) in [
            (vec!["Bearer"], false),
            (vec!["Bearer "], false),
            (vec!["Basic dXNlcjpzdHJhdGFfYWJj"], false),
            (vec!["Basic !!!"], true),
            (vec!["Basic dXNlcg=="], true),
            (vec!["Digest abc"], false),
            (vec!["strata_abc"], false),
            (vec!["Bearer a", "Bearer b"], false),
        ] {
            assert!(credential(&headers(&authorization), &[], v1).is_err(), "{authorization:?}");
        }
    }

    #[test]
    fn refusals_never_repeat_the_credential() {
        for (authorization, v1) in
            [("Basic c2VjcmV0LXRva2Vu", false), ("Digest secret-token", false), ("Basic secret-token", true)]
        {
            let why = credential(&headers(&[authorization]), &[], v1).unwrap_err();
            assert!(!why.contains("secret") && !why.contains("c2VjcmV0"), "{why}");
        }
    }

    #[test]
    fn grants_follow_their_scopes() {
        let grant = Grant { token: Some("t".into()), scopes: Some(Arc::new(Scopes::parse(&["read:a*"]).unwrap())) };
        assert!(grant.may_read("ab") && !grant.may_read("b") && !grant.may_write("ab") && !grant.is_admin());
        assert!((grant.readable())("ab") && !(grant.readable())("b"));
        assert_eq!(grant.actor(), "t");
        let open = Grant::unrestricted();
        assert!(open.may_read("x") && open.may_write("x") && open.is_admin());
        assert_eq!(open.actor(), "anonymous");
        let nothing = Grant::nothing();
        assert!(!nothing.may_read("x") && !nothing.may_write("x") && !nothing.is_admin());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_token_table_is_read_again_only_after_another_process_changed_the_catalog() {
        let dir = std::env::temp_dir().join(format!("strata-token-cache-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = Catalog::path_in(&dir);
        let catalog = Arc::new(Catalog::open(&path).unwrap());
        let cache = TokenCache::open(catalog.clone(), false).await.unwrap();
        assert_eq!(cache.reads.load(Ordering::Relaxed), 1);
        tokio::time::sleep(TOKEN_REFRESH_INTERVAL * 2 + Duration::from_millis(500)).await;
        assert_eq!(cache.reads.load(Ordering::Relaxed), 1, "nothing changed, nothing was read again");

        // `strata token create` beside the running server: another connection.
        let other = Catalog::open(&path).unwrap();
        let (secret, _) = crate::token::issue(&other, "ci", &["admin".into()], None, now_ns()).unwrap();
        let deadline = std::time::Instant::now() + TOKEN_REFRESH_INTERVAL * 3;
        while cache.authenticate(&secret).is_none() {
            assert!(std::time::Instant::now() < deadline, "the new token was not picked up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(cache.enabled());
        assert_eq!(cache.reads.load(Ordering::Relaxed), 2);
        drop(cache);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
