//! The HTTP edge: everything between the listening socket and `handle`.
//!
//! It bounds what a client can hold: connections (`connections_max`), time
//! to send a request head, pauses in a body, idle connections, HTTP/2
//! streams, and file descriptors (accept keeps working when they run out).
//! It refuses requests a browser was tricked into sending (`site`), speaks
//! HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN over TLS) and terminates
//! TLS (`tls`).

mod body;
mod connection;
mod fds;
mod site;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

pub(crate) use body::BodyReader;
pub use fds::raise_open_file_limit;
pub use tls::TlsError;

use super::AppState;
use crate::config::ServerConfig;
use crate::error::{ErrorCode, Failure};
use body::{BodyBudget, BodyPacing};
use site::SiteRules;

/// Connections being answered 503 and closed at once; past this, extra
/// connections are closed without an answer (each holds a descriptor for
/// up to `REFUSAL_LINGER`).
const REFUSALS_IN_FLIGHT_MAX: usize = 64;

/// How long a refused connection is given to read its answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The listening side of the server, configured once at start-up.
pub struct Edge {
    site: SiteRules,
    pacing: BodyPacing,
    budget: BodyBudget,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    connections_max: usize,
    connections: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
}

impl Edge {
    /// The edge for a server listening on `listen` (the bound address, so
    /// port 0 is resolved) with `open_file_limit` descriptors: loads the TLS
    /// certificate and key if `[server.tls]` is set.
    pub fn new(config: &ServerConfig, listen: SocketAddr, open_file_limit: Option<u64>) -> Result<Edge, TlsError> {
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let connections_max = fds::connection_capacity(config.connections_max, open_file_limit);
        if connections_max < config.connections_max {
            tracing::warn!(
                connections_max,
                open_file_limit,
                "server.connections_max lowered to leave descriptors for files and queries; raise the open-file limit (ulimit -n)"
            );
        } else if open_file_limit.is_some_and(|limit| limit < config.connections_max as u64 * 2) {
            tracing::warn!(
                open_file_limit,
                connections_max,
                "the open-file limit is low for server.connections_max; when it runs out new connections are answered 503"
            );
        }
        let header_read_timeout = Duration::from_millis(config.header_read_timeout_ms);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's header timer also runs while a kept-alive connection waits
        // for its next request, so it closes idle HTTP/1.1 connections too.
        builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
        builder.http2().timer(TokioTimer::new()).max_concurrent_streams(config.streams_per_connection_max);
        Ok(Edge {
            site: SiteRules::new(config.allowed_hosts.as_deref(), &config.allowed_origins, listen, tls.is_some()),
            pacing: BodyPacing {
                idle: Duration::from_millis(config.body_read_timeout_ms),
                bytes_per_second_min: config.body_bytes_per_second_min,
            },
            budget: BodyBudget::new(config.body_bytes_in_flight_max),
            header_read_timeout,
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            connections_max,
            connections: Arc::new(Semaphore::new(connections_max)),
            refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT_MAX)),
            tls,
            builder,
        })
    }

    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Accepts connections until `shutdown` fires, then asks every
    /// connection to finish its request and close, and waits for them (at
    /// most `shutdown_timeout`).
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        state: Arc<AppState>,
        mut shutdown: watch::Receiver<bool>,
        shutdown_timeout: Duration,
    ) {
        let mut descriptors = fds::Reserve::new();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        descriptors.on_accept_error(&listener, error).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            self.admit(stream, &state, &shutdown);
        }
        drop(listener);
        let all = u32::try_from(self.connections_max).unwrap_or(u32::MAX);
        if tokio::time::timeout(shutdown_timeout, self.connections.acquire_many(all)).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the shutdown timeout");
        }
    }

    /// Serves `stream` on its own task if a connection slot is free, else
    /// answers 503 and closes it.
    fn admit(self: &Arc<Self>, stream: TcpStream, state: &Arc<AppState>, shutdown: &watch::Receiver<bool>) {
        let _ = stream.set_nodelay(true);
        let Ok(slot) = self.connections.clone().try_acquire_owned() else {
            let error = Failure::new(
                ErrorCode::TooManyConnections,
                format!(
                    "the server has {} connections open (server.connections_max); retry shortly",
                    self.connections_max
                ),
            )
            .with_retry_after(1);
            self.refuse(stream, raw_response(&error));
            return;
        };
        let (edge, state, shutdown) = (self.clone(), state.clone(), shutdown.clone());
        tokio::spawn(async move {
            edge.run(stream, state, shutdown).await;
            drop(slot);
        });
    }

    /// Answers `response` on a task and closes the connection; without a
    /// free refusal slot, closes it at once.
    fn refuse(&self, stream: TcpStream, response: Vec<u8>) {
        match self.refusals.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(async move {
                    answer_and_close(stream, &response).await;
                    drop(slot);
                });
            }
            Err(_) => drop(stream),
        }
    }
}

/// An answer written straight to the socket, for connections never handed
/// to hyper: a whole `HTTP/1.1` response that closes the connection.
fn raw_response(error: &Failure) -> Vec<u8> {
    let status = super::status::for_code(error.code);
    let body = error.body().to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(seconds) = error.retry_after_seconds {
        head.push_str(&format!("retry-after: {seconds}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

/// Writes `response`, then reads (and drops) what the client sent until it
/// closes, for at most `REFUSAL_LINGER`: closing a socket with unread data
/// resets it, and a reset can destroy the answer before the client reads it.
async fn answer_and_close(mut stream: TcpStream, response: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(response).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
