//! Stops a running query past its deadline or when the process grows by
//! more than the query's memory allowance.
//!
//! DuckDB's `memory_limit` covers its buffer pool, not every allocation:
//! string vectors and constant folding (`length(repeat('ab', 500000000))`)
//! allocate outside it. So the watchdog also reads the process's resident
//! set every `WATCH_INTERVAL` and interrupts the query once it is more than
//! `query.memory_bytes_max` plus `RESIDENT_HEADROOM_BYTES` above what it was
//! when the query started. The process is shared, so concurrent queries
//! share that growth too: a query may be stopped for memory another one
//! took, never let past its own. DuckDB checks for an interrupt between
//! chunks of work, so one allocation already under way (a single huge
//! string) still completes; its query is refused all the same.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{ErrorCode, Failure};
use crate::sync::Recover as _;

/// How often the watchdog looks.
const WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Growth allowed beyond `query.memory_bytes_max`: what DuckDB and Strata
/// use outside DuckDB's buffer pool for any query (thread stacks, result
/// chunks, their Arrow and encoded copies), so that only a query that
/// escapes the pool is stopped.
pub(crate) const RESIDENT_HEADROOM_BYTES: u64 = 256 * 1024 * 1024;

const RUNNING: u8 = 0;
const STOPPED_TIMEOUT: u8 = 1;
const STOPPED_MEMORY: u8 = 2;

/// What a query's worker and its watchdog share.
#[derive(Default)]
pub(crate) struct Watch {
    handle: Mutex<Option<Arc<duckdb::InterruptHandle>>>,
    stopped: AtomicU8,
    finished: AtomicBool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("stopped", &self.stopped).field("finished", &self.finished).finish()
    }
}

impl Watch {
    /// The query now runs on the connection `handle` interrupts.
    pub(crate) fn attach(&self, handle: Arc<duckdb::InterruptHandle>) {
        *self.handle.lock_or_recover() = Some(handle);
    }

    /// The query is done; the watchdog ends. Once this returns no
    /// interrupt reaches the connection any more (`interrupt` holds the
    /// handle's lock while it interrupts), so the connection may serve
    /// another query.
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.handle.lock_or_recover().take();
    }

    /// Whether the watchdog stopped (interrupted) the query.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire) != RUNNING
    }

    /// The error to answer when the watchdog stopped the query for memory
    /// (whatever DuckDB reported when interrupted); `None` otherwise.
    pub(crate) fn memory_error(&self) -> Option<Failure> {
        (self.stopped.load(Ordering::Acquire) == STOPPED_MEMORY).then(|| {
            Failure::new(
                ErrorCode::QueryTooLarge,
                "the query needed more than query.memory_bytes_max (the process grew by more while it ran) and was stopped",
            )
        })
    }

    /// `error`, or the memory error when that is why the query stopped.
    pub(crate) fn explain(&self, error: Failure) -> Failure {
        self.memory_error().unwrap_or(error)
    }

    fn interrupt(&self) {
        if let Some(handle) = self.handle.lock_or_recover().as_ref() {
            handle.interrupt();
        }
    }
}

/// Sets `watch` finished when dropped, however the worker ends.
pub(crate) struct FinishOnDrop(pub Arc<Watch>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// The process's resident set, in bytes (Linux; `None` elsewhere).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Watches one query until it finishes. Once it is stopped, the interrupt
/// is repeated every tick: DuckDB clears the flag when a statement starts,
/// and the query may still be setting up.
pub(crate) async fn run(watch: Arc<Watch>, timeout: Duration, memory_bytes_max: u64) {
    let started = Instant::now();
    let baseline = resident_bytes();
    let mut ticker = tokio::time::interval(WATCH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        if watch.finished.load(Ordering::Acquire) {
            return;
        }
        if watch.stopped.load(Ordering::Acquire) == RUNNING {
            if started.elapsed() >= timeout {
                watch.stopped.store(STOPPED_TIMEOUT, Ordering::Release);
            } else if let (Some(baseline), Some(now)) = (baseline, resident_bytes())
                && now.saturating_sub(baseline) > memory_bytes_max.saturating_add(RESIDENT_HEADROOM_BYTES)
            {
                tracing::warn!(
                    baseline,
                    now,
                    memory_bytes_max,
                    "stopping a query: the process grew past its allowance"
                );
                watch.stopped.store(STOPPED_MEMORY, Ordering::Release);
            }
        }
        if watch.stopped.load(Ordering::Acquire) != RUNNING {
            watch.interrupt();
        }
    }
}
