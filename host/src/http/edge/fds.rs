//! File descriptors: the open-file limit raised at start-up, and accept
//! that keeps working when descriptors run out.
//!
//! When `accept` fails with EMFILE/ENFILE the pending connection stays in
//! the kernel's backlog, so the listener stays readable and a naive loop
//! spins on the same error while clients hang. The classic remedy: keep one
//! spare descriptor; when they run out, close the spare, accept the
//! pending connection, answer 503 and close it, then reopen the spare.

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::error::{ErrorCode, Failure};

/// Wait after an accept error that shedding did not resolve.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// At most one log line per this interval for accept errors.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Descriptors the server keeps for itself beyond its connections: the
/// catalog, the WAL, Parquet files being written or read, DuckDB (which
/// aborts the process when it cannot open one), the policy watcher.
const DESCRIPTORS_RESERVED: u64 = 256;

/// The connections the server admits: `configured`, lowered when the
/// open-file limit would otherwise let connections take the descriptors
/// the rest of the server needs. A limit too small to keep the reserve
/// leaves `configured` (shedding on EMFILE still applies).
pub(super) fn connection_capacity(configured: usize, open_file_limit: Option<u64>) -> usize {
    match open_file_limit {
        Some(limit) if limit >= 2 * DESCRIPTORS_RESERVED => {
            let spare = usize::try_from(limit - DESCRIPTORS_RESERVED).unwrap_or(usize::MAX);
            configured.min(spare)
        }
        _ => configured,
    }
}

/// Raises the soft open-file limit to the hard limit, so a busy server is
/// limited by `server.connections_max` rather than by the descriptors a
/// shell happened to grant. Returns the soft limit before and after.
#[allow(unsafe_code)]
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the `rlimit` we
    // pass by pointer, which lives on this stack frame for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok((before, limit.rlim_cur))
    }
}

/// The spare descriptor and the throttled log of accept errors.
#[derive(Debug)]
pub(super) struct Reserve {
    spare: Option<File>,
    log: Throttle,
}

impl Reserve {
    pub(super) fn new() -> Reserve {
        Reserve { spare: open_spare(), log: Throttle::default() }
    }

    /// Handles a failed accept without spinning: sheds the pending
    /// connection when descriptors ran out, else waits a moment.
    pub(super) async fn on_accept_error(&mut self, listener: &TcpListener, error: std::io::Error) {
        let exhausted = matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        if let Some(suppressed) = self.log.ready() {
            if exhausted {
                tracing::warn!(%error, suppressed, "out of file descriptors: answering new connections 503 until some close");
            } else {
                tracing::warn!(%error, suppressed, "accept failed");
            }
        }
        if !(exhausted && self.shed(listener).await) {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
    }

    /// Frees the spare to accept one pending connection, answers it 503 and
    /// closes it. Returns whether a connection was shed.
    async fn shed(&mut self, listener: &TcpListener) -> bool {
        let Some(spare) = self.spare.take() else {
            self.spare = open_spare();
            return false;
        };
        drop(spare);
        let accepted = tokio::time::timeout(Duration::from_millis(10), listener.accept()).await;
        let shed = match accepted {
            Ok(Ok((stream, _))) => {
                // A fresh socket's send buffer is empty: one non-blocking
                // write of a short answer goes through without waiting.
                if let Ok(mut stream) = stream.into_std() {
                    let _ = stream.write(&exhausted_response());
                }
                true
            }
            _ => false,
        };
        self.spare = open_spare();
        shed
    }
}

fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

fn exhausted_response() -> Vec<u8> {
    let error = Failure::new(
        ErrorCode::TooManyConnections,
        "the server is out of file descriptors; retry shortly (raise its open-file limit: ulimit -n)",
    )
    .with_retry_after(1);
    super::raw_response(&error)
}

/// Lets one event through per `LOG_INTERVAL` and counts the rest.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(events suppressed since the last one let through)` when this
    /// event may be logged.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < LOG_INTERVAL) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_lets_one_event_through_per_interval() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        throttle.last = Some(Instant::now() - LOG_INTERVAL);
        assert_eq!(throttle.ready(), Some(2), "the suppressed events are counted");
        assert_eq!(throttle.ready(), None);
    }

    #[test]
    fn connections_leave_descriptors_for_the_rest_of_the_server() {
        assert_eq!(connection_capacity(1024, Some(1_048_576)), 1024);
        assert_eq!(connection_capacity(1024, Some(1024)), 768);
        assert_eq!(connection_capacity(1024, Some(128)), 1024, "too small to keep a reserve: shedding covers it");
        assert_eq!(connection_capacity(1024, None), 1024);
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let (before, after) = raise_open_file_limit().unwrap();
        assert!(after >= before);
    }
}
