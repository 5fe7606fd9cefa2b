//! Whether each remote storage target answers: the last probe's result per
//! target, for `/v1/storage-targets`, `/health/lifecycle` and `/metrics`.
//!
//! Probes run in the background (`lifecycle`'s prober), never on the write
//! or start-up path: a sick object store shows here, while hot ingest and
//! queries of local data go on. Local targets are not probed (a failing
//! disk shows as failing writes, with their own codes).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{StorageError, Targets};
use crate::sync::Recover as _;

/// The last probe of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// Whether the target answered.
    pub reachable: bool,
    /// Why not, when it did not (never holds credentials).
    pub reason: Option<String>,
    /// When the probe ran, ns since the epoch.
    pub checked_at_ns: i64,
    /// Since when the target has been in this state, ns since the epoch.
    pub since_ns: i64,
}

/// The last probe of every probed target, by name.
#[derive(Debug, Default)]
pub struct TargetHealth {
    by_target: Mutex<BTreeMap<String, Reachability>>,
}

impl TargetHealth {
    /// Probes every target that is not local and records the answers;
    /// returns the targets whose state changed. Blocking: a probe waits at
    /// most the target's request timeout.
    pub fn probe_all(&self, targets: &Targets, now_ns: i64) -> Vec<(String, Reachability)> {
        let mut changed = Vec::new();
        for target in targets.all().filter(|t| t.local_root().is_none()) {
            let reason = match target.probe() {
                Ok(()) => None,
                Err(StorageError::Unavailable { reason, .. }) => Some(reason),
                Err(other) => Some(other.to_string()),
            };
            if let Some(state) = self.record(target.name(), reason, now_ns) {
                changed.push((target.name().to_string(), state));
            }
        }
        changed
    }

    /// Records one probe; returns the new state if it differs from the last.
    pub fn record(&self, target: &str, reason: Option<String>, now_ns: i64) -> Option<Reachability> {
        let mut by_target = self.by_target.lock_or_recover();
        let reachable = reason.is_none();
        let previous = by_target.get(target);
        let changed = previous.is_none_or(|p| p.reachable != reachable);
        let since_ns = match previous {
            Some(p) if !changed => p.since_ns,
            _ => now_ns,
        };
        let state = Reachability { reachable, reason, checked_at_ns: now_ns, since_ns };
        by_target.insert(target.to_string(), state.clone());
        changed.then_some(state)
    }

    /// The last probe of `target`; `None` if it was never probed (local
    /// targets, or before the first probe).
    pub fn of(&self, target: &str) -> Option<Reachability> {
        self.by_target.lock_or_recover().get(target).cloned()
    }

    /// Every probed target's last state, by name.
    pub fn all(&self) -> BTreeMap<String, Reachability> {
        self.by_target.lock_or_recover().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_keeps_its_since_until_it_changes() {
        let health = TargetHealth::default();
        assert!(health.of("s3").is_none());
        let first = health.record("s3", Some("connection refused".into()), 10).expect("first probe is a change");
        assert!(!first.reachable);
        assert!(health.record("s3", Some("timed out".into()), 20).is_none(), "still unreachable");
        let now = health.of("s3").unwrap();
        assert_eq!((now.since_ns, now.checked_at_ns, now.reason.as_deref()), (10, 20, Some("timed out")));
        let back = health.record("s3", None, 30).expect("reachable again is a change");
        assert_eq!((back.reachable, back.since_ns, back.reason), (true, 30, None));
    }
}
