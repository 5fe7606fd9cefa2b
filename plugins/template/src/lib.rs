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

use wit::strata::policy::types::{DatasetInfo, Partitions, RetentionAction, RetentionAnswer, RetentionDecision, Texts};

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
        let config: Config = serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
        // EDIT: check values here, e.g. `if config.x == 0 { errors.push(...) }`.
        let errors: Vec<String> = Vec::new();
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }
}

/// EDIT: the policy itself. A plain function of its inputs (no clock, files,
/// network or environment) that gives every decision a reason.
///
/// The facts come column by column: partition `i` is entry `i` of every
/// list in `partitions`, and a decision names it by `i`. Reasons are listed
/// once in the answer and decisions refer to them by index.
fn evaluate(now_ns: i64, config: &Config, _dataset: &DatasetInfo, partitions: &Partitions) -> RetentionAnswer {
    const DELETE_EMPTY: u32 = 0;
    const KEEP: u32 = 1;
    let reasons = vec![
        "period has ended and the partition has no rows".to_string(),
        "the template policy keeps everything else".to_string(),
    ];
    let decisions = (0..partitions.period_end_ns.len())
        .map(|i| {
            let period_ended = partitions.period_end_ns[i] <= now_ns;
            let (action, reason) = if config.delete_empty && period_ended && partitions.rows[i] == 0 {
                (RetentionAction::Delete, DELETE_EMPTY)
            } else {
                (RetentionAction::Keep, KEEP)
            };
            RetentionDecision { partition: i as u32, action, reason }
        })
        .collect();
    RetentionAnswer { decisions, reasons }
}

#[allow(dead_code)] // A helper to copy: this policy reads no text column.
/// String `i` of a `texts` list (e.g. `partitions.key`): the host
/// guarantees that the offsets are in order and on character boundaries.
fn text(texts: &Texts, i: usize) -> &str {
    let start = if i == 0 { 0 } else { texts.ends[i - 1] as usize };
    &texts.text[start..texts.ends[i] as usize]
}

/// Glue between the `retention` world and the functions above. It compiles on
/// every target, but only the WebAssembly build exports it.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::host::{LogLevel, log};
    use super::wit::strata::policy::types::{DatasetInfo, Partitions, RetentionAnswer};
    use super::{Config, evaluate};

    struct Policy;

    impl super::wit::Guest for Policy {
        fn validate_config(config: String) -> Result<(), Vec<String>> {
            Config::parse(&config).map(|_| ())
        }

        fn evaluate(now_ns: i64, config: String, dataset: DatasetInfo, partitions: Partitions) -> RetentionAnswer {
            // The host never calls `evaluate` with a config that
            // `validate-config` rejected, so this trap is a host bug.
            let config =
                Config::parse(&config).unwrap_or_else(|errors| panic!("invalid config: {}", errors.join("; ")));
            let count = partitions.period_end_ns.len();
            let message = format!("{}: {count} partitions", dataset.name);
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

    /// Daily partitions `(key, days since the period ended, rows)`.
    fn partitions(cases: &[(&str, i64, u64)]) -> Partitions {
        let ends: Vec<i64> = cases.iter().map(|(_, days, _)| NOW_NS - days * DAY_NS).collect();
        let count = ends.len();
        let mut key = Texts { text: String::new(), ends: Vec::new() };
        for (name, _, _) in cases {
            key.text.push_str(name);
            key.ends.push(key.text.len() as u32);
        }
        Partitions {
            period_start_ns: ends.iter().map(|end| end - DAY_NS).collect(),
            period_end_ns: ends.clone(),
            period_label: Texts { text: String::new(), ends: vec![0; count] },
            key,
            tier: vec![Tier::Hot; count],
            read_only: vec![false; count],
            rows: cases.iter().map(|(_, _, rows)| *rows).collect(),
            bytes: cases.iter().map(|(_, _, rows)| rows * 100).collect(),
            min_time_ns: vec![None; count],
            max_time_ns: vec![None; count],
            created_at_ns: ends.iter().map(|end| end - DAY_NS).collect(),
            last_written_at_ns: ends,
            file_count: vec![1; count],
            archived: vec![false; count],
        }
    }

    #[test]
    fn validates_config() {
        assert!(!Config::parse("{}").unwrap().delete_empty);
        assert!(Config::parse(r#"{"delete_empty": true}"#).unwrap().delete_empty);
        assert!(Config::parse(r#"{"delete_empty": "yes"}"#).is_err());
        assert!(Config::parse(r#"{"delete_emtpy": true}"#).is_err());
    }

    #[test]
    fn keeps_everything_by_default() {
        let partitions = partitions(&[("empty", 3, 0), ("full", 3, 10)]);
        let answer = evaluate(NOW_NS, &Config::parse("{}").unwrap(), &dataset(), &partitions);
        assert!(answer.decisions.iter().all(|d| d.action == RetentionAction::Keep));
        assert_eq!(text(&partitions.key, 1), "full");
    }

    #[test]
    fn deletes_empty_ended_partitions_when_asked() {
        let config = Config::parse(r#"{"delete_empty": true}"#).unwrap();
        let partitions = partitions(&[("empty", 3, 0), ("full", 3, 10), ("open", -1, 0)]);
        let actions: Vec<RetentionAction> =
            evaluate(NOW_NS, &config, &dataset(), &partitions).decisions.iter().map(|d| d.action).collect();
        assert_eq!(actions, [RetentionAction::Delete, RetentionAction::Keep, RetentionAction::Keep]);
    }
}
