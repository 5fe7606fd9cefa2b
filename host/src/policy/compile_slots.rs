//! Admission of compiles that a request asks for (an uploaded candidate, a
//! recorded version that is not active): Cranelift cannot be interrupted
//! once it starts and compiles a component on every core, so the bound is
//! a size cap on what is compiled and a cap on how many compile at once.
//! Reloads are not admitted here: they already run one at a time.
//!
//! Waiting happens on the async side, before any blocking thread is taken,
//! so requests queued for a slot cost no thread.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::PolicyError;

/// The compile slots of one runtime.
#[derive(Debug)]
pub(super) struct CompileSlots {
    permits: Arc<Semaphore>,
    concurrent_max: usize,
    wait: Duration,
    plugin_bytes_max: u64,
}

/// One compile slot, held until dropped.
#[derive(Debug)]
pub struct CompileSlot {
    _permit: OwnedSemaphorePermit,
}

/// An uploaded component admitted for a simulation: within
/// `policies.plugin_bytes_max`, holding a compile slot until dropped.
#[derive(Debug)]
pub struct Candidate {
    bytes: Vec<u8>,
    _slot: CompileSlot,
}

impl Candidate {
    /// The component bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl CompileSlots {
    pub(super) fn new(concurrent_max: usize, wait: Duration, plugin_bytes_max: u64) -> CompileSlots {
        CompileSlots { permits: Arc::new(Semaphore::new(concurrent_max)), concurrent_max, wait, plugin_bytes_max }
    }

    /// A slot, waiting at most the configured time for one.
    pub(super) async fn acquire(&self) -> Result<CompileSlot, PolicyError> {
        let busy = || PolicyError::CompileBusy {
            compile_concurrent_max: self.concurrent_max,
            waited_ms: self.wait.as_millis() as u64,
        };
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        Ok(CompileSlot { _permit: permit })
    }

    /// Checks the size of an upload, then waits for a slot for it.
    pub(super) async fn admit(&self, bytes: Vec<u8>) -> Result<Candidate, PolicyError> {
        if bytes.len() as u64 > self.plugin_bytes_max {
            return Err(PolicyError::CandidateTooLarge {
                bytes: bytes.len() as u64,
                plugin_bytes_max: self.plugin_bytes_max,
            });
        }
        let slot = self.acquire().await?;
        Ok(Candidate { bytes, _slot: slot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_past_the_cap_waits_then_is_refused_and_a_freed_slot_is_reused() {
        let slots = CompileSlots::new(1, Duration::from_millis(20), 8);
        let first = slots.admit(vec![0; 8]).await.unwrap();
        let refused = slots.admit(vec![0; 8]).await.unwrap_err();
        assert!(matches!(refused, PolicyError::CompileBusy { compile_concurrent_max: 1, waited_ms: 20 }), "{refused}");
        assert!(refused.to_string().contains("policies.compile_concurrent_max"), "{refused}");
        drop(first);
        slots.admit(vec![0; 8]).await.expect("the slot was given back");
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_slot_when_it_is_freed() {
        let slots = Arc::new(CompileSlots::new(1, Duration::from_secs(30), 8));
        let held = slots.acquire().await.unwrap();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        drop(held);
        waiting.await.unwrap().expect("served once the slot was freed");
    }

    #[tokio::test]
    async fn an_oversized_upload_is_refused_without_taking_a_slot() {
        let slots = CompileSlots::new(1, Duration::ZERO, 8);
        let error = slots.admit(vec![0; 9]).await.unwrap_err();
        assert!(matches!(error, PolicyError::CandidateTooLarge { bytes: 9, plugin_bytes_max: 8 }), "{error}");
        slots.admit(vec![0; 8]).await.expect("no slot was taken");
    }
}
