//! `[server]`: the listener, the edge's limits and timeouts, the sites
//! allowed to call, TLS.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Only loopback addresses are allowed while
    /// authentication is off (no token in the catalog, `auth.required` unset).
    pub listen: SocketAddr,
    /// Where the catalog, the WAL and the local storage targets live.
    pub data_dir: PathBuf,
    /// How long a graceful shutdown waits for in-flight requests, in ms.
    pub shutdown_timeout_ms: u64,
    /// Connections open at once; more are answered 503
    /// `too_many_connections` and closed.
    pub connections_max: usize,
    /// Time a client has to send a request head, from the connection's
    /// start or the end of the previous response, in ms.
    pub header_read_timeout_ms: u64,
    /// Longest pause between two pieces of a request body, in ms; past it
    /// the request gets 408 `request_timeout` and the connection is closed.
    pub body_read_timeout_ms: u64,
    /// After `body_read_timeout_ms`, a body must have arrived at this
    /// average rate at least, in bytes per second (0: no minimum).
    pub body_bytes_per_second_min: u64,
    /// Request bodies all connections together may hold while they are
    /// being read, in bytes (at least `limits.body_bytes_max`); a body that
    /// would pass it gets 503 `buffer_full` with `Retry-After`. Bounds the
    /// memory that many slow or stalled uploads pin at once.
    pub body_bytes_in_flight_max: u64,
    /// A connection with no request in flight is closed after this long, in ms.
    pub idle_timeout_ms: u64,
    /// Concurrent requests (streams) on one HTTP/2 connection.
    pub streams_per_connection_max: u32,
    /// `Host` values served (DNS-rebinding protection): names or addresses,
    /// optionally with `:port`; `"*"` allows any. Default: when listening
    /// on loopback, `localhost`, `127.0.0.1`, `[::1]` and the listen
    /// address; otherwise any.
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins (`scheme://host[:port]`) whose browser pages may call the
    /// API and get a CORS grant; `"*"` allows any. Same-origin pages are
    /// always allowed.
    pub allowed_origins: Vec<String>,
    /// `[server.tls]`: serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN).
    pub tls: Option<TlsConfig>,
    /// Address of the Arrow Flight SQL listener (gRPC, plaintext); off
    /// unless set. Port 0 picks a free port, printed at start-up. Refused
    /// together with `[server.tls]` (Flight would bypass it), and beyond
    /// loopback while authentication is off, as `listen` is.
    pub flight_listen: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:8086".parse().expect("valid address"),
            data_dir: PathBuf::from("strata-data"),
            shutdown_timeout_ms: 10_000,
            connections_max: 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            body_bytes_per_second_min: 1024,
            body_bytes_in_flight_max: 512 * 1024 * 1024,
            idle_timeout_ms: 60_000,
            streams_per_connection_max: 100,
            allowed_hosts: None,
            allowed_origins: Vec::new(),
            tls: None,
            flight_listen: None,
        }
    }
}

/// `[server.tls]`: a PEM certificate chain and its private key. Relative
/// paths are taken relative to the working directory, like `data_dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert_path: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

impl ServerConfig {
    /// The connection limit fits a semaphore; host and origin entries are
    /// well-formed (a typo would otherwise lock every browser out, or in).
    pub(super) fn validate_edge(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.connections_max > CONNECTIONS_MAX_LIMIT {
            return invalid(format!(
                "server.connections_max = {} must be at most {CONNECTIONS_MAX_LIMIT}",
                self.connections_max
            ));
        }
        for host in self.allowed_hosts.iter().flatten() {
            let bad = host.is_empty() || host.contains(['/', '@', ' ', ',']) || host.contains("://");
            if bad || (host != "*" && host.parse::<hyper::http::uri::Authority>().is_err()) {
                return invalid(format!(
                    "server.allowed_hosts: {host:?} is not a host name or address with an optional :port, or \"*\""
                ));
            }
        }
        if let (Some(flight), Some(_)) = (self.flight_listen, &self.tls) {
            return invalid(format!(
                "server.flight_listen = {flight} with [server.tls]: Flight SQL is served without TLS, which would \
                 bypass it; unset flight_listen or serve Flight through a TLS-terminating proxy"
            ));
        }
        for origin in &self.allowed_origins {
            if origin != "*" && !is_origin(origin) {
                return invalid(format!(
                    "server.allowed_origins: {origin:?} is not an origin like \"https://app.example.com\" (scheme://host[:port], no path), or \"*\""
                ));
            }
        }
        Ok(())
    }
}

/// The largest `server.connections_max` (a semaphore's permits).
pub const CONNECTIONS_MAX_LIMIT: usize = 1 << 20;

/// Whether `text` is an `http` or `https` origin: scheme, host, optional
/// port, and nothing else.
fn is_origin(text: &str) -> bool {
    let Some((scheme, authority)) = text.split_once("://") else { return false };
    matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && !authority.contains(['/', '@', '?', '#'])
        && authority.parse::<hyper::http::uri::Authority>().is_ok()
}
