//! The prober: asks every remote storage target whether it answers, at
//! start and every `lifecycle.target_probe_interval_ms`, and records the
//! answer in the targets' health ([`crate::storage::TargetHealth`]). A
//! change is logged once, not at every probe.

use std::sync::Arc;
use std::time::Duration;

use super::{Lifecycle, off_runtime};
use crate::time::now_ns;

impl Lifecycle {
    /// Probes the remote targets until shutdown. Does nothing when every
    /// target is local.
    pub async fn run_prober(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.targets.all().all(|t| t.local_root().is_some()) {
            return;
        }
        let every = Duration::from_millis(self.config.lifecycle.target_probe_interval_ms.max(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let targets = self.targets.clone();
            let Ok(changed) = off_runtime(move || targets.health().probe_all(&targets, now_ns())).await else {
                continue;
            };
            for (target, state) in changed {
                match state.reason {
                    None => tracing::info!(target, "storage target reachable"),
                    Some(reason) => tracing::warn!(target, reason, "storage target unreachable"),
                }
            }
        }
    }
}
