//! Request bodies that must keep arriving, and response bodies that mark
//! their request finished when they are sent.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper::http::Extensions;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::connection::RequestGuard;
use crate::error::{ErrorCode, Failure};
use crate::http::Body;

/// How fast a request body must arrive; the edge puts it in every
/// request's extensions for `read_body`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyPacing {
    /// The longest pause between two frames (also the grace period before
    /// the minimum rate applies).
    pub idle: Duration,
    /// The average rate a body must keep once `idle` has passed (0: none).
    pub bytes_per_second_min: u64,
}

/// The bytes of request bodies being read, shared by every connection:
/// one permit per KiB, up to `server.body_bytes_in_flight_max`.
#[derive(Debug, Clone)]
pub(crate) struct BodyBudget(Arc<Semaphore>);

/// Permits are KiB: a semaphore counts in `u32`-sized chunks.
const BUDGET_UNIT_BYTES: u64 = 1024;

impl BodyBudget {
    pub(crate) fn new(bytes_max: u64) -> BodyBudget {
        let permits = (bytes_max / BUDGET_UNIT_BYTES).clamp(1, Semaphore::MAX_PERMITS as u64) as usize;
        BodyBudget(Arc::new(Semaphore::new(permits)))
    }
}

/// Reads a body frame by frame, refusing one that stalls or crawls with 408
/// `request_timeout`. Without pacing in the request (a request that did not
/// come through the edge) it just reads.
#[derive(Debug)]
pub(crate) struct BodyReader {
    pacing: Option<BodyPacing>,
    budget: Option<BodyBudget>,
    /// What this body holds of the budget; returned when the reader drops.
    held: Option<OwnedSemaphorePermit>,
    started: Instant,
    last_frame: Instant,
    bytes: u64,
}

impl BodyReader {
    /// A reader for the body of the request with these extensions.
    pub(crate) fn new(extensions: &Extensions) -> BodyReader {
        let now = Instant::now();
        BodyReader {
            pacing: extensions.get::<BodyPacing>().copied(),
            budget: extensions.get::<BodyBudget>().cloned(),
            held: None,
            started: now,
            last_frame: now,
            bytes: 0,
        }
    }

    /// Holds `bytes` of the shared body budget for this body (what it has
    /// buffered or reserved so far), or refuses the request with 503
    /// `buffer_full` when the other bodies being read leave too little.
    pub(crate) fn reserve(&mut self, bytes: u64) -> Result<(), Failure> {
        let Some(budget) = &self.budget else { return Ok(()) };
        let wanted = bytes.div_ceil(BUDGET_UNIT_BYTES);
        let held = self.held.as_ref().map_or(0, |p| p.num_permits() as u64);
        if wanted <= held {
            return Ok(());
        }
        let more = u32::try_from(wanted - held).unwrap_or(u32::MAX);
        let permit = budget.0.clone().try_acquire_many_owned(more).map_err(|_| {
            Failure::new(
                ErrorCode::BufferFull,
                "the server is reading as many request bodies as server.body_bytes_in_flight_max allows; retry shortly",
            )
            .with_retry_after(1)
        })?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }

    /// The next frame, as `BodyExt::frame` returns it, unless the client
    /// took too long to send it.
    pub(crate) async fn frame<B>(&mut self, body: &mut B) -> Result<Option<Result<Frame<Bytes>, B::Error>>, Failure>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
    {
        let Some(pacing) = self.pacing else { return Ok(body.frame().await) };
        let (deadline, stalled) = self.deadline(pacing);
        let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
            return Err(timeout_error(pacing, stalled));
        };
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            self.bytes += data.map_or(0, |d| d.len() as u64);
        }
        self.last_frame = Instant::now();
        Ok(frame)
    }

    /// When the next frame must have arrived, and whether that deadline is
    /// the pause limit (`true`) or the minimum rate (`false`).
    fn deadline(&self, pacing: BodyPacing) -> (Instant, bool) {
        let stall = self.last_frame + pacing.idle;
        if pacing.bytes_per_second_min == 0 {
            return (stall, true);
        }
        // The bytes received so far are enough until this point.
        let covered = Duration::from_secs_f64(self.bytes as f64 / pacing.bytes_per_second_min as f64);
        let crawl = self.started + covered.max(pacing.idle);
        if stall <= crawl { (stall, true) } else { (crawl, false) }
    }
}

fn timeout_error(pacing: BodyPacing, stalled: bool) -> Failure {
    let message = if stalled {
        format!(
            "the request body stalled: nothing arrived for {} ms (server.body_read_timeout_ms)",
            pacing.idle.as_millis()
        )
    } else {
        format!(
            "the request body arrived slower than {} bytes/s (server.body_bytes_per_second_min)",
            pacing.bytes_per_second_min
        )
    };
    Failure::new(ErrorCode::RequestTimeout, message)
}

/// A response body that holds its request's place in the connection's
/// in-flight count until it has been sent (or dropped).
#[derive(Debug)]
pub(super) struct Tracked {
    body: Body,
    _guard: RequestGuard,
}

impl Tracked {
    pub(super) fn new(body: Body, guard: RequestGuard) -> Tracked {
        Tracked { body, _guard: guard }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    /// A query that fails mid-answer aborts its body (see `http::Body`).
    type Error = Failure;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: u64, since_start: Duration, since_frame: Duration) -> (BodyReader, Instant) {
        let now = Instant::now();
        let reader = BodyReader {
            pacing: None,
            budget: None,
            held: None,
            started: now - since_start,
            last_frame: now - since_frame,
            bytes,
        };
        (reader, now)
    }

    #[test]
    fn a_pause_or_a_crawl_sets_the_deadline() {
        let pacing = BodyPacing { idle: Duration::from_secs(10), bytes_per_second_min: 1000 };
        // Early on, the grace period: only the pause limit counts.
        let (r, now) = reader(0, Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(r.deadline(pacing), (now + Duration::from_secs(9), true));
        // 100 kB after 60 s covers 100 s of the minimum rate: the pause decides.
        let (r, now) = reader(100_000, Duration::from_secs(60), Duration::from_secs(2));
        assert_eq!(r.deadline(pacing), (now + Duration::from_secs(8), true));
        // 20 kB after 15 s covers only 20 s: the rate decides, 5 s from now.
        let (r, now) = reader(20_000, Duration::from_secs(15), Duration::from_secs(1));
        assert_eq!(r.deadline(pacing), (now + Duration::from_secs(5), false));
        // Without a minimum rate, only pauses count.
        let (r, now) = reader(0, Duration::from_secs(500), Duration::from_secs(3));
        let pauses_only = BodyPacing { bytes_per_second_min: 0, ..pacing };
        assert_eq!(r.deadline(pauses_only), (now + Duration::from_secs(7), true));
    }

    #[test]
    fn bodies_share_the_budget_and_return_it_when_read() {
        let budget = BodyBudget::new(10 * 1024);
        let mut extensions = Extensions::new();
        extensions.insert(budget.clone());
        let mut first = BodyReader::new(&extensions);
        first.reserve(4 * 1024).unwrap();
        // Growing past what is held takes only the difference.
        first.reserve(6 * 1024).unwrap();
        first.reserve(5 * 1024).unwrap();
        let mut second = BodyReader::new(&extensions);
        let refused = second.reserve(5 * 1024).unwrap_err();
        assert_eq!((refused.code, refused.retry_after_seconds), (ErrorCode::BufferFull, Some(1)));
        assert!(refused.message.contains("server.body_bytes_in_flight_max"), "{}", refused.message);
        second.reserve(4 * 1024).unwrap();
        drop(first);
        second.reserve(10 * 1024).unwrap();
        // A request that did not come through the edge has no budget.
        BodyReader::new(&Extensions::new()).reserve(u64::MAX).unwrap();
    }
}
