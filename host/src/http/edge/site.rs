//! Which sites may talk to the server, judged from the request head alone.
//!
//! - `Host` against `server.allowed_hosts`: a page on `evil.example` whose
//!   DNS name is re-pointed at 127.0.0.1 (DNS rebinding) still sends
//!   `Host: evil.example`, so it is refused before any handler runs.
//! - `Origin`, when present, must be this server's own origin or listed in
//!   `server.allowed_origins`. Browsers send it on every cross-origin
//!   request and every POST; scripts and command-line clients do not.
//! - `Sec-Fetch-Site: cross-site|same-site` (sent by browsers on every
//!   request) is refused unless an allowed `Origin` came with it.
//! - Without `Origin`, a state-changing request with a body type an HTML
//!   form or a no-CORS `fetch` can send (`text/plain`, form encodings, or
//!   none) is refused when its `Referer` names another site. Telegraf and
//!   Influx clients post `text/plain` too, but send neither header.
//! - CORS preflights get a grant only for listed origins.

use std::net::SocketAddr;

use hyper::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, CONTENT_TYPE, HeaderMap, HeaderValue, VARY,
};
use hyper::http::uri::Authority;
use hyper::{Method, Response, StatusCode, Uri};

use crate::error::{ErrorCode, Failure};
use crate::http::Body;

/// A `Host` pattern: a host name or address, any port unless one is given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    host: String,
    port: Option<u16>,
}

/// A list of allowed values, or `"*"`.
#[derive(Debug, Clone)]
enum Allowed<T> {
    Any,
    Only(Vec<T>),
}

/// The configured hosts and origins, with the server's own scheme.
#[derive(Debug, Clone)]
pub(super) struct SiteRules {
    hosts: Allowed<HostPattern>,
    origins: Allowed<String>,
    scheme: &'static str,
}

/// What to do with a request the rules let through.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Route it; add a CORS grant for this origin to the response.
    Proceed {
        /// The listed origin the request came from, if cross-origin.
        cors_origin: Option<HeaderValue>,
    },
    /// A CORS preflight, answered here.
    Preflight(Response<Body>),
}

impl SiteRules {
    /// The rules for a server listening on `listen` (`allowed_hosts` unset:
    /// the loopback names when `listen` is loopback, else any host).
    pub(super) fn new(
        allowed_hosts: Option<&[String]>,
        allowed_origins: &[String],
        listen: SocketAddr,
        tls: bool,
    ) -> Self {
        let hosts = match allowed_hosts {
            Some(list) if list.iter().any(|h| h == "*") => Allowed::Any,
            Some(list) => Allowed::Only(list.iter().filter_map(|h| parse_host(h)).collect()),
            None if listen.ip().is_loopback() => {
                let own = match listen {
                    SocketAddr::V4(v4) => v4.ip().to_string(),
                    SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
                };
                let names = ["localhost", "127.0.0.1", "[::1]", own.as_str()];
                Allowed::Only(names.iter().map(|host| HostPattern { host: host.to_string(), port: None }).collect())
            }
            None => Allowed::Any,
        };
        let origins = if allowed_origins.iter().any(|o| o == "*") {
            Allowed::Any
        } else {
            Allowed::Only(allowed_origins.iter().filter_map(|o| normalize_origin(o)).collect())
        };
        SiteRules { hosts, origins, scheme: if tls { "https" } else { "http" } }
    }

    /// Refuses a request from a site that may not call the server; answers
    /// CORS preflights.
    pub(super) fn judge(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Verdict, Failure> {
        let authority = self.check_host(uri, headers)?;
        let origin = single(headers, "origin")?;
        let cors_origin = match origin {
            Some(origin) => self.check_origin(origin, authority.as_deref())?,
            None => None,
        };
        if origin.is_none() {
            check_fetch_site(headers)?;
            self.check_referer(method, headers, authority.as_deref())?;
        }
        if method == Method::OPTIONS && origin.is_some() && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            return Ok(Verdict::Preflight(preflight(cors_origin, headers)));
        }
        Ok(Verdict::Proceed { cors_origin })
    }

    /// The request's authority (normalized) once every authority it names
    /// (`Host`, an absolute URI's) is allowed.
    fn check_host(&self, uri: &Uri, headers: &HeaderMap) -> Result<Option<String>, Failure> {
        let host = single(headers, "host")?;
        let named = host.into_iter().map(str::to_string).chain(uri.authority().map(|a| a.as_str().to_string()));
        let mut authority = None;
        for value in named {
            if !self.host_allowed(&value) {
                return Err(Failure::new(
                    ErrorCode::HostNotAllowed,
                    format!("Host {value:?} is not served here (server.allowed_hosts)"),
                ));
            }
            authority.get_or_insert(normalize_authority(&value, self.scheme));
        }
        Ok(authority.flatten())
    }

    fn host_allowed(&self, value: &str) -> bool {
        let Allowed::Only(patterns) = &self.hosts else { return true };
        let Some(requested) = parse_host(value) else { return false };
        patterns.iter().any(|p| p.host == requested.host && (p.port.is_none() || p.port == requested.port))
    }

    /// Whether a normalized origin is the server's own (its scheme and the
    /// request's authority).
    fn is_own(&self, origin: Option<&str>, authority: Option<&str>) -> bool {
        origin.zip(authority).is_some_and(|(origin, authority)| {
            origin.strip_prefix(self.scheme).and_then(|rest| rest.strip_prefix("://")) == Some(authority)
        })
    }

    /// Whether a normalized origin is in `server.allowed_origins`.
    fn is_listed(&self, origin: Option<&str>) -> bool {
        match &self.origins {
            Allowed::Any => true,
            Allowed::Only(list) => origin.is_some_and(|o| list.iter().any(|l| l == o)),
        }
    }

    /// `Ok(Some(origin))` for a listed cross-origin caller (it gets a CORS
    /// grant), `Ok(None)` for the server's own origin.
    fn check_origin(&self, origin: &str, authority: Option<&str>) -> Result<Option<HeaderValue>, Failure> {
        let normalized = normalize_origin(origin);
        if self.is_own(normalized.as_deref(), authority) {
            return Ok(None);
        }
        match HeaderValue::from_str(origin) {
            Ok(value) if self.is_listed(normalized.as_deref()) => Ok(Some(value)),
            _ => Err(Failure::new(
                ErrorCode::CrossSiteRefused,
                format!("requests from Origin {origin:?} are refused (server.allowed_origins)"),
            )),
        }
    }

    /// A form post or no-CORS fetch from another site, detected by its
    /// `Referer` (for browsers that send no `Origin`).
    fn check_referer(&self, method: &Method, headers: &HeaderMap, authority: Option<&str>) -> Result<(), Failure> {
        if is_safe(method) || !has_simple_content_type(headers) {
            return Ok(());
        }
        let Some(referer) = single(headers, "referer")? else { return Ok(()) };
        let from = normalize_origin(referer);
        if self.is_own(from.as_deref(), authority) || self.is_listed(from.as_deref()) {
            return Ok(());
        }
        Err(Failure::new(
            ErrorCode::CrossSiteRefused,
            "a form-like request from another site (Referer) is refused; send Content-Type: application/json or call from an allowed origin",
        ))
    }
}

/// A browser's cross-site request without an `Origin` (navigations,
/// subresources): refused.
fn check_fetch_site(headers: &HeaderMap) -> Result<(), Failure> {
    match single(headers, "sec-fetch-site")? {
        Some(site) if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") => {
            Err(Failure::new(
                ErrorCode::CrossSiteRefused,
                format!("a browser request from another site (Sec-Fetch-Site: {site}) is refused"),
            ))
        }
        _ => Ok(()),
    }
}

/// The answer to a preflight: a grant only for a listed origin; otherwise
/// no CORS headers, so the browser does not send the request.
fn preflight(cors_origin: Option<HeaderValue>, headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let out = response.headers_mut();
    out.insert(VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = cors_origin {
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        if let Some(requested) = headers.get(hyper::header::ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
    }
    response
}

/// The one value of a header, if present; several are refused (they could
/// be read differently by a proxy and by us).
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Failure> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Failure::new(ErrorCode::BadRequest, format!("more than one {name} header")));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| Failure::new(ErrorCode::BadRequest, format!("the {name} header must be visible ASCII")))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A body type a page can send cross-site without a preflight.
fn has_simple_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else { return true };
    let Ok(value) = value.to_str() else { return false };
    let essence = value.split(';').next().unwrap_or("").trim();
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
        .iter()
        .any(|simple| essence.eq_ignore_ascii_case(simple))
}

/// `host[:port]` lower-cased, a trailing dot dropped; `None` when it is not
/// a bare authority.
fn parse_host(value: &str) -> Option<HostPattern> {
    if value.contains('@') {
        return None;
    }
    let authority: Authority = value.parse().ok()?;
    let raw_host = authority.host();
    // `Authority::port` is `None` for a malformed port; read it ourselves.
    let port = match &authority.as_str()[raw_host.len()..] {
        "" => None,
        rest => Some(rest.strip_prefix(':')?.parse::<u16>().ok()?),
    };
    let host = raw_host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some(HostPattern { host, port })
}

/// `host[:port]` lower-cased without the scheme's default port.
fn normalize_authority(value: &str, scheme: &str) -> Option<String> {
    let host = parse_host(value)?;
    let default = if scheme == "https" { 443 } else { 80 };
    Some(match host.port {
        Some(port) if port != default => format!("{}:{port}", host.host),
        _ => host.host,
    })
}

/// `scheme://host[:port]` of an origin or URL, lower-cased, without the
/// default port; `None` for `null` and anything not http(s).
fn normalize_origin(value: &str) -> Option<String> {
    let uri: Uri = value.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = normalize_authority(uri.authority()?.as_str(), &scheme)?;
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderName;

    fn rules(hosts: Option<&[&str]>, origins: &[&str]) -> SiteRules {
        let hosts: Option<Vec<String>> = hosts.map(|h| h.iter().map(|s| s.to_string()).collect());
        let origins: Vec<String> = origins.iter().map(|s| s.to_string()).collect();
        SiteRules::new(hosts.as_deref(), &origins, "127.0.0.1:8086".parse().unwrap(), false)
    }

    /// The verdict's code for `method` with `headers`, or "ok" / "ok+cors" /
    /// "preflight" / "preflight+cors".
    fn judge(rules: &SiteRules, method: &str, headers: &[(&str, &str)]) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        match rules.judge(&method, &Uri::from_static("/v1/sql"), &map) {
            Err(error) => error.code.as_str().to_string(),
            Ok(Verdict::Proceed { cors_origin: None }) => "ok".to_string(),
            Ok(Verdict::Proceed { cors_origin: Some(_) }) => "ok+cors".to_string(),
            Ok(Verdict::Preflight(r)) if r.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN) => {
                "preflight+cors".to_string()
            }
            Ok(Verdict::Preflight(_)) => "preflight".to_string(),
        }
    }

    #[test]
    fn loopback_servers_answer_only_loopback_names() {
        let rules = rules(None, &[]);
        for (host, expected) in [
            ("localhost:8086", "ok"),
            ("LOCALHOST", "ok"),
            ("localhost.:9", "ok"),
            ("127.0.0.1:8086", "ok"),
            ("[::1]:8086", "ok"),
            ("evil.example", "host_not_allowed"),
            ("evil.example:8086", "host_not_allowed"),
            ("127.0.0.1.evil.example", "host_not_allowed"),
            ("localhost@evil.example", "host_not_allowed"),
            ("localhost:99999", "host_not_allowed"),
            ("", "host_not_allowed"),
        ] {
            assert_eq!(judge(&rules, "GET", &[("host", host)]), expected, "Host: {host}");
        }
        assert_eq!(judge(&rules, "GET", &[]), "ok", "no Host: not a browser");
        assert_eq!(judge(&rules, "GET", &[("host", "localhost"), ("host", "evil.example")]), "bad_request");
    }

    #[test]
    fn configured_hosts_replace_the_defaults_and_may_pin_a_port() {
        let rules = rules(Some(&["strata.internal", "10.0.0.5:8086"]), &[]);
        assert_eq!(judge(&rules, "GET", &[("host", "strata.internal:1234")]), "ok");
        assert_eq!(judge(&rules, "GET", &[("host", "10.0.0.5:8086")]), "ok");
        assert_eq!(judge(&rules, "GET", &[("host", "10.0.0.5:8087")]), "host_not_allowed");
        assert_eq!(judge(&rules, "GET", &[("host", "localhost")]), "host_not_allowed");
        let any = super::SiteRules::new(Some(&["*".to_string()]), &[], "127.0.0.1:1".parse().unwrap(), false);
        assert_eq!(judge(&any, "GET", &[("host", "anything.example")]), "ok");
        let public = super::SiteRules::new(None, &[], "10.0.0.5:8086".parse().unwrap(), false);
        assert_eq!(judge(&public, "GET", &[("host", "strata.example.com")]), "ok", "not loopback: any host");
    }

    #[test]
    fn origins_must_be_the_servers_own_or_listed() {
        let rules = rules(None, &["https://dash.example", "http://localhost:3000"]);
        let host = ("host", "localhost:8086");
        for (origin, expected) in [
            ("http://localhost:8086", "ok"),
            ("HTTP://LOCALHOST:8086", "ok"),
            ("https://localhost:8086", "cross_site_refused"),
            ("http://localhost:8087", "cross_site_refused"),
            ("http://evil.example", "cross_site_refused"),
            ("null", "cross_site_refused"),
            ("https://dash.example", "ok+cors"),
            ("https://dash.example:443", "ok+cors"),
            ("http://localhost:3000", "ok+cors"),
        ] {
            assert_eq!(judge(&rules, "POST", &[host, ("origin", origin)]), expected, "Origin: {origin}");
        }
        let any = super::SiteRules::new(None, &["*".to_string()], "127.0.0.1:1".parse().unwrap(), false);
        assert_eq!(judge(&any, "POST", &[host, ("origin", "http://evil.example")]), "ok+cors");
    }

    #[test]
    fn browsers_cross_site_requests_need_an_allowed_origin() {
        let rules = rules(None, &["http://localhost:3000"]);
        let host = ("host", "localhost:8086");
        assert_eq!(judge(&rules, "GET", &[host, ("sec-fetch-site", "cross-site")]), "cross_site_refused");
        assert_eq!(judge(&rules, "GET", &[host, ("sec-fetch-site", "same-site")]), "cross_site_refused");
        assert_eq!(judge(&rules, "GET", &[host, ("sec-fetch-site", "same-origin")]), "ok");
        assert_eq!(judge(&rules, "GET", &[host, ("sec-fetch-site", "none")]), "ok", "typed into the address bar");
        let listed = [host, ("sec-fetch-site", "same-site"), ("origin", "http://localhost:3000")];
        assert_eq!(judge(&rules, "POST", &listed), "ok+cors");
    }

    #[test]
    fn form_like_posts_from_another_sites_page_are_refused_but_telegraf_is_not() {
        let rules = rules(None, &[]);
        let host = ("host", "localhost:8086");
        let evil = ("referer", "http://evil.example/page");
        for content_type in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let headers = [host, ("content-type", content_type), evil];
            assert_eq!(judge(&rules, "POST", &headers), "cross_site_refused", "{content_type}");
            // Telegraf and curl: no Referer, no Origin.
            assert_eq!(judge(&rules, "POST", &[host, ("content-type", content_type)]), "ok", "{content_type}");
        }
        assert_eq!(judge(&rules, "POST", &[host, evil]), "cross_site_refused", "no Content-Type is simple too");
        assert_eq!(
            judge(&rules, "POST", &[host, ("content-type", "application/json"), evil]),
            "ok",
            "needs a preflight"
        );
        assert_eq!(judge(&rules, "GET", &[host, evil]), "ok", "reads change nothing");
        let own = ("referer", "http://localhost:8086/ui");
        assert_eq!(judge(&rules, "POST", &[host, ("content-type", "text/plain"), own]), "ok");
        assert_eq!(judge(&rules, "POST", &[host, ("referer", "not a url")]), "cross_site_refused");
    }

    #[test]
    fn preflights_are_granted_only_to_listed_origins() {
        let rules = rules(None, &["http://localhost:3000"]);
        let host = ("host", "localhost:8086");
        let asks = ("access-control-request-method", "POST");
        assert_eq!(judge(&rules, "OPTIONS", &[host, asks, ("origin", "http://localhost:3000")]), "preflight+cors");
        assert_eq!(judge(&rules, "OPTIONS", &[host, asks, ("origin", "http://evil.example")]), "cross_site_refused");
        assert_eq!(judge(&rules, "OPTIONS", &[host, asks, ("origin", "http://localhost:8086")]), "preflight");
        assert_eq!(judge(&rules, "OPTIONS", &[host]), "ok", "not a preflight: routed");
    }
}
