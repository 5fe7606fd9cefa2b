//! The limits of one call into a guest and how they are enforced.
//!
//! Every call gets a fresh Store with the policy's [`PolicyLimits`]: a
//! memory cap (a [`GuestLimiter`] that traps on the growth past it), an
//! epoch deadline counted in ticks of [`EPOCH_TICK`] (the [`EpochTicker`]
//! thread advances the engine's epoch while any call is in progress), and optional fuel. Exceeding one
//! is classified into the [`SandboxError`] naming the limit, so the host
//! thread always returns with a reason. Answers are then measured against
//! the output limits ([`check_output`]) before anything reads them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::{Engine, Store, Trap};

use super::error::{Result, SandboxError};

/// Per-policy limits, from the `[limits]` table. Each names its unit last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyLimits {
    /// Wall-clock time one call may run, in milliseconds (epoch interruption).
    pub deadline_ms: u64,
    /// Linear memory the component may grow to, in bytes.
    pub memory_bytes_max: u64,
    /// WebAssembly fuel (roughly, instructions) one call may use; none = unlimited.
    pub fuel: Option<u64>,
    /// Entries in one answer (decisions, keys, config problems).
    pub decisions_max: u64,
    /// Bytes of strings in one answer (ids, reasons, keys).
    pub output_bytes_max: u64,
}

impl Default for PolicyLimits {
    fn default() -> PolicyLimits {
        PolicyLimits {
            deadline_ms: 1_000,
            memory_bytes_max: 256 * 1024 * 1024,
            fuel: None,
            decisions_max: 1_000_000,
            output_bytes_max: 64 * 1024 * 1024,
        }
    }
}

/// Bounds on the limits themselves.
const DEADLINE_MS_MAX: u64 = 10 * 60 * 1_000;
const MEMORY_BYTES_MIN: u64 = 1024 * 1024;
const MEMORY_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

impl PolicyLimits {
    /// Checks every limit against its bounds; the message names the TOML key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=DEADLINE_MS_MAX).contains(&self.deadline_ms) {
            return Err(format!("limits.deadline_ms = {} must be within 1..={DEADLINE_MS_MAX}", self.deadline_ms));
        }
        if !(MEMORY_BYTES_MIN..=MEMORY_BYTES_MAX).contains(&self.memory_bytes_max) {
            return Err(format!(
                "limits.memory_bytes_max = {} must be within {MEMORY_BYTES_MIN}..={MEMORY_BYTES_MAX}",
                self.memory_bytes_max
            ));
        }
        if self.fuel == Some(0) {
            return Err("limits.fuel must be greater than 0 (leave it out for no fuel limit)".into());
        }
        if self.decisions_max == 0 {
            return Err("limits.decisions_max must be greater than 0".into());
        }
        if self.output_bytes_max == 0 {
            return Err("limits.output_bytes_max must be greater than 0".into());
        }
        Ok(())
    }
}

/// How often the ticker thread advances the engine's epoch. Deadlines are
/// counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Table elements a guest may grow its tables to.
const TABLE_ELEMENTS_MAX: usize = 100_000;
/// Instances, tables and memories per Store: a component built by
/// wit-component has a handful of each.
const INSTANCES_MAX: usize = 100;
/// See [`INSTANCES_MAX`].
const TABLES_MAX: usize = 100;
/// See [`INSTANCES_MAX`].
const MEMORIES_MAX: usize = 10;
/// Native stack a guest may use before it traps with a stack overflow.
pub(super) const WASM_STACK_BYTES_MAX: usize = 1024 * 1024;

/// The calls in progress, shared by the [`EpochTicker`] and every
/// component: the epoch advances only while a guest runs, so an idle
/// server's sandbox does not wake a thousand times a second.
#[derive(Default)]
pub(super) struct Ticking {
    calls: Mutex<usize>,
    changed: Condvar,
    stop: AtomicBool,
    /// Epoch increments so far.
    ticks: AtomicU64,
}

impl Ticking {
    /// Marks a call in progress until the guard is dropped; the ticker
    /// starts within a tick. Deadlines count ticks from the call's own
    /// start, so a paused ticker never shortens or lengthens one.
    pub(super) fn call(self: &Arc<Self>) -> CallTicking {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        *calls += 1;
        if *calls == 1 {
            self.changed.notify_all();
        }
        CallTicking(self.clone())
    }

    /// Waits until a call is in progress; false once stopping.
    fn wait_for_a_call(&self) -> bool {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        while *calls == 0 && !self.stop.load(Ordering::Relaxed) {
            calls = self.changed.wait(calls).unwrap_or_else(PoisonError::into_inner);
        }
        !self.stop.load(Ordering::Relaxed)
    }
}

/// A call in progress (see [`Ticking::call`]).
pub(super) struct CallTicking(Arc<Ticking>);

impl Drop for CallTicking {
    fn drop(&mut self) {
        let mut calls = self.0.calls.lock().unwrap_or_else(PoisonError::into_inner);
        *calls -= 1;
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while a call is in
/// progress, until dropped.
pub(super) struct EpochTicker {
    ticking: Arc<Ticking>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub(super) fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let ticking = Arc::new(Ticking::default());
        let state = ticking.clone();
        let thread = std::thread::Builder::new().name("strata-policy-epoch".into()).spawn(move || {
            while state.wait_for_a_call() {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
                state.ticks.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        Ok(EpochTicker { ticking, thread: Some(thread) })
    }

    /// What components mark their calls in.
    pub(super) fn ticking(&self) -> Arc<Ticking> {
        self.ticking.clone()
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        {
            let _calls = self.ticking.calls.lock().unwrap_or_else(PoisonError::into_inner);
            self.ticking.stop.store(true, Ordering::Relaxed);
            self.ticking.changed.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Caps linear memory and tables. Growing a memory past the cap traps at
/// once (rather than returning -1 to the guest), and the request is
/// remembered so the error names `memory_bytes_max`.
pub(super) struct GuestLimiter {
    memory_bytes_max: usize,
    memory_requested_bytes: Option<usize>,
}

impl GuestLimiter {
    pub(super) fn new(limits: &PolicyLimits) -> GuestLimiter {
        let memory_bytes_max = usize::try_from(limits.memory_bytes_max).unwrap_or(usize::MAX);
        GuestLimiter { memory_bytes_max, memory_requested_bytes: None }
    }
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes_max {
            self.memory_requested_bytes = Some(desired);
            return Err(wasmtime::format_err!("memory limit of {} bytes exceeded", self.memory_bytes_max));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }

    fn instances(&self) -> usize {
        INSTANCES_MAX
    }

    fn tables(&self) -> usize {
        TABLES_MAX
    }

    fn memories(&self) -> usize {
        MEMORIES_MAX
    }
}

/// Puts a call's limits on its fresh `store`: the memory cap of the
/// limiter that `limiter` finds in the store's state, the epoch deadline
/// and the fuel.
pub(super) fn limit_store<T: 'static>(
    store: &mut Store<T>,
    limits: &PolicyLimits,
    limiter: fn(&mut T) -> &mut GuestLimiter,
) -> Result<()> {
    store.limiter(move |state| limiter(state) as &mut dyn wasmtime::ResourceLimiter);
    // Ticks of EPOCH_TICK (1 ms) from now; at least one.
    store.set_epoch_deadline(limits.deadline_ms.max(1));
    store.epoch_deadline_trap();
    let fuel = limits.fuel.unwrap_or(u64::MAX);
    store.set_fuel(fuel).map_err(|e| SandboxError::Internal(format!("fuel: {e}")))
}

/// Turns a wasmtime error into the limit or trap that caused it.
pub(super) fn classify(
    error: wasmtime::Error,
    limiter: &GuestLimiter,
    limits: &PolicyLimits,
    elapsed: Duration,
) -> SandboxError {
    if let Some(requested_bytes) = limiter.memory_requested_bytes {
        return SandboxError::MemoryLimitExceeded {
            memory_bytes_max: limits.memory_bytes_max,
            requested_bytes: requested_bytes as u64,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => SandboxError::DeadlineExceeded { deadline_ms: limits.deadline_ms },
        Some(Trap::OutOfFuel) => SandboxError::FuelExhausted { fuel: limits.fuel.unwrap_or(u64::MAX) },
        Some(Trap::StackOverflow) => SandboxError::StackOverflow { stack_bytes_max: WASM_STACK_BYTES_MAX },
        Some(trap) => SandboxError::Trap(format!("{trap} after {} ms", elapsed.as_millis())),
        None => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => SandboxError::Trap(format!("the guest called exit({})", exit.0)),
            // Lifting a malformed answer (string out of bounds, bad enum
            // discriminant) lands here too: it is the guest's fault.
            None => SandboxError::Trap(format!("{error:#}")),
        },
    }
}

/// Refuses an answer of more than `limits.decisions_max` entries or
/// `limits.output_bytes_max` bytes of strings.
pub(super) fn check_output(limits: &PolicyLimits, count: usize, bytes: usize) -> Result<()> {
    if count as u64 > limits.decisions_max {
        return Err(SandboxError::OutputTooLarge {
            what: "results",
            limit: "decisions_max",
            maximum: limits.decisions_max,
            actual: count as u64,
        });
    }
    if bytes as u64 > limits.output_bytes_max {
        return Err(SandboxError::OutputTooLarge {
            what: "bytes of strings",
            limit: "output_bytes_max",
            maximum: limits.output_bytes_max,
            actual: bytes as u64,
        });
    }
    Ok(())
}

/// The bytes of `strings`, as [`check_output`] counts them.
pub(super) fn string_bytes(strings: &[String]) -> usize {
    strings.iter().map(String::len).sum()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::sandbox::PolicyKind;
    use crate::sandbox::tests::{evaluate, limits, retention_fixture, sandbox};

    #[test]
    fn the_epoch_advances_only_while_a_call_is_in_progress() {
        let sandbox = sandbox();
        let ticking = sandbox.ticker.ticking();
        // A fresh sandbox, and one after a finished call, stay asleep.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ticking.ticks.load(Ordering::Relaxed), 0);
        let component = sandbox.load(&retention_fixture(""), PolicyKind::Retention).unwrap();
        evaluate(&component, &limits()).unwrap();
        let after_call = ticking.ticks.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        // At most the tick that was sleeping when the call ended.
        let settled = ticking.ticks.load(Ordering::Relaxed);
        assert!(settled <= after_call + 1, "{after_call} → {settled}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ticking.ticks.load(Ordering::Relaxed), settled, "the ticker kept waking with no call");
        // While a call is in progress it ticks.
        let call = ticking.call();
        let waited = Instant::now();
        while ticking.ticks.load(Ordering::Relaxed) < settled + 5 {
            assert!(waited.elapsed() < Duration::from_secs(10), "the ticker did not start for a call");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(call);
    }

    #[test]
    fn an_infinite_loop_is_stopped_at_the_deadline() {
        let sandbox = sandbox();
        let component =
            sandbox.load(&retention_fixture("(loop $forever (br $forever))"), PolicyKind::Retention).unwrap();
        let limits = limits();
        let started = Instant::now();
        let error = evaluate(&component, &limits).unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(error, SandboxError::DeadlineExceeded { deadline_ms: 200 });
        assert!(error.to_string().contains("limits.deadline_ms"), "{error}");
        assert!(elapsed >= Duration::from_millis(190) && elapsed < Duration::from_secs(2), "{elapsed:?}");
        // The component is not poisoned: the next call fails the same way, on time.
        let started = Instant::now();
        assert!(matches!(evaluate(&component, &limits), Err(SandboxError::DeadlineExceeded { .. })));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn fuel_stops_a_loop_before_the_deadline() {
        let sandbox = sandbox();
        let component =
            sandbox.load(&retention_fixture("(loop $forever (br $forever))"), PolicyKind::Retention).unwrap();
        let limits = PolicyLimits { fuel: Some(1_000_000), deadline_ms: 60_000, ..limits() };
        assert_eq!(evaluate(&component, &limits).unwrap_err(), SandboxError::FuelExhausted { fuel: 1_000_000 });
    }

    #[test]
    fn a_memory_bomb_hits_the_memory_cap() {
        let sandbox = sandbox();
        let bomb = "(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 256)) (i32.const -1))))";
        let component = sandbox.load(&retention_fixture(bomb), PolicyKind::Retention).unwrap();
        let error = evaluate(&component, &limits()).unwrap_err();
        assert!(
            matches!(error, SandboxError::MemoryLimitExceeded { memory_bytes_max, requested_bytes }
                if memory_bytes_max == 64 * 1024 * 1024 && requested_bytes > memory_bytes_max),
            "{error:?}"
        );
        assert!(error.to_string().contains("limits.memory_bytes_max"), "{error}");
    }

    #[test]
    fn traps_and_stack_overflows_are_errors() {
        let sandbox = sandbox();
        let component = sandbox.load(&retention_fixture("unreachable"), PolicyKind::Retention).unwrap();
        let error = evaluate(&component, &limits()).unwrap_err();
        assert!(matches!(&error, SandboxError::Trap(message) if message.contains("unreachable")), "{error:?}");

        let component =
            sandbox.load(&retention_fixture("(drop (call $recurse (i32.const 0)))"), PolicyKind::Retention).unwrap();
        assert!(matches!(evaluate(&component, &limits()), Err(SandboxError::StackOverflow { .. })));
    }

    #[test]
    fn a_huge_answer_is_refused_by_count() {
        let sandbox = sandbox();
        // 200,000 zeroed decisions (12 bytes each) above the first page,
        // and no reasons.
        let huge = "(drop (memory.grow (i32.const 64)))
                    (i32.store (i32.const 16) (i32.const 65536))
                    (i32.store (i32.const 20) (i32.const 200000))
                    (return (i32.const 16))";
        let component = sandbox.load(&retention_fixture(huge), PolicyKind::Retention).unwrap();
        let limits = PolicyLimits { decisions_max: 1_000, ..limits() };
        let error = evaluate(&component, &limits).unwrap_err();
        assert_eq!(
            error,
            SandboxError::OutputTooLarge { what: "results", limit: "decisions_max", maximum: 1_000, actual: 200_000 }
        );
    }
}
