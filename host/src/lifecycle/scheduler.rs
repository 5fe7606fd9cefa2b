//! The scheduler: every second, pre-creates next-period partitions and runs
//! the scheduled policies that are due.
//!
//! Pre-creation: once the current period of a live dataset (one with a
//! partition for the current period) ends within
//! `lifecycle.precreate_lead_ms`, the next period's partitions are created
//! for the same keys, so the first write of a period never waits for its
//! partition row (and `/health/lifecycle` can say when one is missing).
//!
//! Runs (with `lifecycle.scheduler` on): each retention, tiering or archival
//! policy with an active version runs over each dataset it binds when its
//! schedule (`schedule`, else the default) says it is due. The first run of
//! a (policy, dataset) is one schedule step after start-up, or after the
//! dataset appeared, never at once.

use std::sync::Arc;
use std::time::Duration;

use super::{Lifecycle, ms_to_ns};
use crate::error::Failure;
use crate::policy::definition::{DEFAULT_SCHEDULE, Schedule};
use crate::sandbox::PolicyKind;
use crate::sync::Recover as _;
use crate::time::now_ns;

impl Lifecycle {
    /// Runs due scheduled policies until `shutdown` fires.
    pub async fn run_scheduler(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = now_ns();
            if let Err(error) = self.precreate(now).await {
                tracing::warn!(%error, "pre-creating partitions failed");
            }
            if self.config.lifecycle.scheduler {
                self.run_due_policies(now).await;
            }
        }
    }

    /// Runs every scheduled policy over every dataset it is due for.
    async fn run_due_policies(&self, now: i64) {
        for summary in self.policies.list().0 {
            if !matches!(summary.kind, Some(PolicyKind::Retention | PolicyKind::Tiering | PolicyKind::Archival))
                || summary.active_seq.is_none()
            {
                continue;
            }
            let schedule =
                summary.schedule.as_deref().and_then(|s| Schedule::parse(s).ok()).unwrap_or(DEFAULT_SCHEDULE);
            for dataset in self.store.datasets() {
                if !self.policies.binds(&summary.name, dataset.name.as_str())
                    || !self.due(&summary.name, dataset.name.as_str(), &schedule, now)
                {
                    continue;
                }
                match self.run_policy(&summary.name, Some(dataset.name.as_str()), now, false).await {
                    Ok(reports) => {
                        for r in reports {
                            tracing::info!(policy = %r.policy, dataset = %r.dataset, executed = r.executed, rejected = r.rejected, failed = r.failed, "scheduled run");
                        }
                    }
                    Err(error) => tracing::warn!(policy = %summary.name, %error, "scheduled run failed"),
                }
            }
        }
    }

    /// Whether `policy` is due over `dataset` at `now`; if so, records `now`
    /// as its last scheduled run.
    fn due(&self, policy: &str, dataset: &str, schedule: &Schedule, now: i64) -> bool {
        let mut last = self.last_scheduled.lock_or_recover();
        let last = last.entry((policy.to_string(), dataset.to_string())).or_insert(now);
        // The first run is one schedule step after start-up (or after the
        // dataset appeared), never at once.
        if schedule.next_after(*last).is_some_and(|due| now >= due) {
            *last = now;
            true
        } else {
            false
        }
    }

    /// When `(policy, dataset)` next runs on schedule, if the scheduler has
    /// seen it run or start.
    pub(super) fn next_scheduled(&self, policy: &str, dataset: &str, schedule: &Schedule) -> Option<i64> {
        let last_scheduled = self.last_scheduled.lock_or_recover();
        let last_run = last_scheduled.get(&(policy.to_string(), dataset.to_string())).copied();
        last_run.and_then(|t| schedule.next_after(t))
    }

    /// Creates the next period's partitions of every live dataset once the
    /// current period ends within `lifecycle.precreate_lead_ms`. Returns how
    /// many partitions it asked for (existing ones are left as they are).
    async fn precreate(&self, now: i64) -> Result<usize, Failure> {
        let lead_ns = ms_to_ns(self.config.lifecycle.precreate_lead_ms);
        if lead_ns == 0 {
            return Ok(0);
        }
        let ending: Vec<_> = self
            .store
            .datasets()
            .into_iter()
            .filter_map(|dataset| {
                let current = dataset.periods().bucket(now);
                if now.saturating_add(lead_ns) < current.end_ns {
                    return None;
                }
                let next = dataset.periods().bucket(current.end_ns);
                Some((dataset.record.id, current.label, next))
            })
            .collect();
        let created = self
            .catalog()
            .call(move |c| {
                let mut created = 0;
                for (dataset_id, current, next) in &ending {
                    for key in c.period_keys(*dataset_id, current)? {
                        c.partition(*dataset_id, next, &key, now)?;
                        created += 1;
                    }
                }
                Ok::<_, crate::catalog::CatalogError>(created)
            })
            .await?;
        Ok(created)
    }
}
