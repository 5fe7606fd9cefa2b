//! One connection: the TLS handshake (if any), the HTTP/1.1 or HTTP/2
//! protocol, the site check in front of `handle`, and a watchdog that closes
//! the connection once it has been idle too long.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, CONNECTION, HeaderValue, VARY};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::body::Tracked;
use super::site::Verdict;
use super::{Edge, raw_response};
use crate::error::{ErrorCode, Failure};
use crate::http::{AppState, Body, error_response, handle};
use crate::sync::Recover as _;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

impl Edge {
    /// Serves one accepted connection to its end.
    pub(super) async fn run(self: Arc<Self>, stream: TcpStream, state: Arc<AppState>, shutdown: watch::Receiver<bool>) {
        let Some(acceptor) = self.tls.clone() else {
            return self.serve_io(stream, state, shutdown).await;
        };
        // A plain HTTP request on the TLS port gets a readable answer
        // instead of a handshake failure the client cannot explain.
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.header_read_timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] != TLS_HANDSHAKE => {
                let error =
                    Failure::new(ErrorCode::BadRequest, "this port serves HTTPS only; use an https:// URL".to_string());
                return super::answer_and_close(stream, &raw_response(&error)).await;
            }
            Ok(Ok(1)) => {}
            _ => return,
        }
        match tokio::time::timeout(self.header_read_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.serve_io(tls, state, shutdown).await,
            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
    }

    /// Runs HTTP on `io` until the client closes, the server shuts down, or
    /// the connection has been idle too long.
    async fn serve_io<I>(self: Arc<Self>, io: I, state: Arc<AppState>, mut shutdown: watch::Receiver<bool>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let service = {
            let (edge, activity) = (self.clone(), activity.clone());
            service_fn(move |request| {
                let (edge, state, guard) = (edge.clone(), state.clone(), activity.begin());
                async move { Ok::<_, Infallible>(edge.respond(state, request).await.map(|body| Tracked::new(body, guard))) }
            })
        };
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut closing = false;
        let mut hard_stop: Option<Instant> = None;
        loop {
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                _ = shutdown.changed(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = activity.idle(self.header_read_timeout, self.idle_timeout), if !closing => {
                    closing = true;
                    // A client in the middle of a request head gets the
                    // header timeout to finish it, then the socket closes.
                    hard_stop = Some(Instant::now() + self.header_read_timeout);
                    connection.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(hard_stop.unwrap_or(far)), if hard_stop.is_some() => return,
            }
        }
    }

    /// The site check, then the route; a request refused by the site rules
    /// never reaches a handler.
    async fn respond(&self, state: Arc<AppState>, mut request: Request<Incoming>) -> Response<Body> {
        let cors_origin = match self.site.judge(request.method(), request.uri(), request.headers()) {
            Err(error) => return error_response(&error),
            Ok(Verdict::Preflight(response)) => return response,
            Ok(Verdict::Proceed { cors_origin }) => cors_origin,
        };
        request.extensions_mut().insert(self.pacing);
        request.extensions_mut().insert(self.budget.clone());
        let Ok(mut response) = handle(state, request).await;
        let closes = response.status() == StatusCode::REQUEST_TIMEOUT;
        let headers = response.headers_mut();
        if closes {
            // The rest of a stalled body is never read: close rather than
            // let the connection carry on past unread bytes.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(origin) = cors_origin {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after, idempotent-replayed"));
            headers.append(VARY, HeaderValue::from_static("origin"));
        }
        response
    }
}

/// What a connection is doing, for the idle watchdog: requests in flight
/// (until their response body is sent or dropped), when that count last
/// changed, and whether any request has started.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
struct ActivityState {
    in_flight: usize,
    since: Instant,
    served: bool,
}

impl Activity {
    fn new() -> Activity {
        let state = ActivityState { in_flight: 0, since: Instant::now(), served: false };
        Activity { state: Mutex::new(state), changed: Notify::new() }
    }

    fn update(&self, change: impl FnOnce(&mut ActivityState)) {
        let mut state = self.state.lock_or_recover();
        change(&mut state);
        state.since = Instant::now();
        drop(state);
        self.changed.notify_waiters();
    }

    fn snapshot(&self) -> ActivityState {
        *self.state.lock_or_recover()
    }

    /// A request started; the guard ends it when dropped.
    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.update(|state| {
            state.in_flight += 1;
            state.served = true;
        });
        RequestGuard(self.clone())
    }

    /// Resolves once no request has been in flight for `idle` (for
    /// `first_request` before the first request: the client has that long
    /// to send one).
    async fn idle(&self, first_request: Duration, idle: Duration) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let state = self.snapshot();
            if state.in_flight > 0 {
                notified.await;
                continue;
            }
            let deadline = state.since + if state.served { idle } else { first_request };
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// Counts one request as in flight while it lives.
#[derive(Debug)]
pub(super) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.update(|state| state.in_flight -= 1);
    }
}
