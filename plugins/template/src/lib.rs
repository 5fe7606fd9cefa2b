//! A retention policy to copy: it keeps every partition, and with
//! `delete_empty = true` deletes partitions with no rows whose period has
//! ended.
//!
//! ```toml
//! delete_empty = false   # optional, default false
//! ```
//!
//! To write your own policy, edit the three places marked `EDIT:` below: the
//! config, its checks, and `evaluate`. After `evaluate` come the glue, which
//! you can leave alone, and the tests. For another kind of policy (tiering,
//! archival, partitioner) change the world name too and follow one of the
//! built-ins.

// Native builds exist only for the unit tests and export nothing, so all but
// the tested code looks unused there; the WebAssembly build still reports
// real dead code.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use serde::Deserialize;

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    // The world this component implements: `retention`, `tiering`,
    // `archival` or `partitioner`, from wit/policy.wit.
    wit_bindgen::generate!({ world: "retention", path: "../../wit" });
}

use wit::strata::policy::types::{DatasetInfo, PartitionInfo, RetentionAction, RetentionDecision};

/// EDIT: the policy's config: the keys of its TOML table. Unknown keys are
/// rejected, so a typo in the policy file is an error, not a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Delete partitions that have no rows once their period has ended.
    #[serde(default)]
    delete_empty: bool,
}

impl Config {
    /// Parses and checks the config. Return every problem, one message each.
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let config: Config =
            serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
        // EDIT: check values here, e.g. `if config.x == 0 { errors.push(...) }`.
        let errors: Vec<String> = Vec::new();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }
}

/// EDIT: the policy itself. A plain function of its inputs (no clock, files,
/// network or environment) that gives every decision a reason.
fn evaluate(
    now_ns: i64,
    config: &Config,
    _dataset: &DatasetInfo,
    partitions: &[PartitionInfo],
) -> Vec<RetentionDecision> {
    partitions
        .iter()
        .map(|partition| {
            let period_ended = partition.period_end_ns <= now_ns;
            let (action, reason) = if config.delete_empty && period_ended && partition.rows == 0 {
                (
                    RetentionAction::Delete,
                    "period has ended and the partition has no rows",
                )
            } else {
                (
                    RetentionAction::Keep,
                    "the template policy keeps everything else",
                )
            };
            RetentionDecision {
                partition_id: partition.id.clone(),
                action,
                reason: reason.to_string(),
            }
        })
        .collect()
}

/// Glue between the `retention` world and the functions above. It compiles on
/// every target, but only the WebAssembly build exports it.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::host::{LogLevel, log};
    use super::wit::strata::policy::types::{DatasetInfo, PartitionInfo, RetentionDecision};
    use super::{Config, evaluate};

    struct Policy;

    impl super::wit::Guest for Policy {
        fn validate_config(config: String) -> Result<(), Vec<String>> {
            Config::parse(&config).map(|_| ())
        }

        fn evaluate(
            now_ns: i64,
            config: String,
            dataset: DatasetInfo,
            partitions: Vec<PartitionInfo>,
        ) -> Vec<RetentionDecision> {
            // The host never calls `evaluate` with a config that
            // `validate-config` rejected, so this trap is a host bug.
            let config = Config::parse(&config)
                .unwrap_or_else(|errors| panic!("invalid config: {}", errors.join("; ")));
            let message = format!("{}: {} partitions", dataset.name, partitions.len());
            log(LogLevel::Debug, &message);
            evaluate(now_ns, &config, &dataset, &partitions)
        }
    }

    #[cfg(target_arch = "wasm32")]
    super::wit::export!(Policy with_types_in super::wit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::strata::policy::types::Tier;

    const DAY_NS: i64 = 86_400 * 1_000_000_000;
    const NOW_NS: i64 = 20_000 * DAY_NS;

    fn dataset() -> DatasetInfo {
        DatasetInfo {
            name: "cpu".to_string(),
            period: "day".to_string(),
            time_column: "time".to_string(),
            columns: Vec::new(),
        }
    }

    /// A daily partition with `rows` rows whose period ended
    /// `ended_days_ago` days before now.
    fn partition(id: &str, ended_days_ago: i64, rows: u64) -> PartitionInfo {
        let period_end_ns = NOW_NS - ended_days_ago * DAY_NS;
        PartitionInfo {
            id: id.to_string(),
            dataset: "cpu".to_string(),
            period_label: id.to_string(),
            period_start_ns: period_end_ns - DAY_NS,
            period_end_ns,
            key: String::new(),
            tier: Tier::Hot,
            read_only: false,
            rows,
            bytes: rows * 100,
            min_time_ns: None,
            max_time_ns: None,
            created_at_ns: period_end_ns - DAY_NS,
            last_written_at_ns: period_end_ns,
            file_count: 1,
            archived: false,
        }
    }

    #[test]
    fn validates_config() {
        assert!(!Config::parse("{}").unwrap().delete_empty);
        assert!(
            Config::parse(r#"{"delete_empty": true}"#)
                .unwrap()
                .delete_empty
        );
        assert!(Config::parse(r#"{"delete_empty": "yes"}"#).is_err());
        assert!(Config::parse(r#"{"delete_emtpy": true}"#).is_err());
    }

    #[test]
    fn keeps_everything_by_default() {
        let partitions = [partition("empty", 3, 0), partition("full", 3, 10)];
        let decisions = evaluate(
            NOW_NS,
            &Config::parse("{}").unwrap(),
            &dataset(),
            &partitions,
        );
        assert!(decisions.iter().all(|d| d.action == RetentionAction::Keep));
    }

    #[test]
    fn deletes_empty_ended_partitions_when_asked() {
        let config = Config::parse(r#"{"delete_empty": true}"#).unwrap();
        let partitions = [
            partition("empty", 3, 0),
            partition("full", 3, 10),
            partition("open", -1, 0),
        ];
        let actions: Vec<RetentionAction> = evaluate(NOW_NS, &config, &dataset(), &partitions)
            .iter()
            .map(|d| d.action)
            .collect();
        assert_eq!(
            actions,
            [
                RetentionAction::Delete,
                RetentionAction::Keep,
                RetentionAction::Keep
            ]
        );
    }
}
