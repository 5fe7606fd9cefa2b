//! `{{name}}`: an archival policy. As scaffolded it archives partitions
//! whose period ended more than `after` ago and that are not archived yet.
//!
//! ```toml
//! [config]
//! after = "180d"               # 30s, 15m, 12h, 90d, 2w
//! target = ""                  # storage target; "" = the default archive target
//! delete_source_after = false  # delete the hot copy once the archive is verified
//! ```
//!
//! Edit the places marked `EDIT:`. The contract is `wit/policy.wit`; the
//! helpers (durations, ages, reasons, config checks) are in `src/guest.rs`.
//! Archival answers only for the partitions to archive.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

// The guest helpers (a copy of plugins/guest); a policy uses some of them.
#[allow(dead_code)]
mod guest;

use guest::{Age, ConfigReader, Reasons};

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "archival", path: "wit" });
}

use wit::strata::policy::types::{ArchivalAnswer, ArchiveDecision, DatasetInfo, Partitions};

/// EDIT: the config: the keys of the policy file's `[config]` table.
#[derive(Debug)]
struct Config {
    /// `after` as written (quoted in reasons) and in nanoseconds.
    after: (String, i64),
    target: String,
    delete_source_after: bool,
}

impl Config {
    /// Reads and checks the config, reporting every problem at once
    /// (unknown keys included).
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let mut config = ConfigReader::new(json)?;
        // EDIT: read your keys; `config.problem(…)` reports a bad value.
        let after = config.duration("after", Some("180d"));
        let target: String = config.or("target", String::new());
        let delete_source_after: bool = config.or("delete_source_after", false);
        config.finish()?;
        Ok(Config { after: after.expect("checked by finish"), target, delete_source_after })
    }
}

/// EDIT: the policy: a plain function of its inputs, one request (with a
/// reason) per partition to archive; the others are left alone.
fn evaluate(now_ns: i64, config: &Config, _dataset: &DatasetInfo, partitions: &Partitions) -> ArchivalAnswer {
    let (after, after_ns) = (&config.after.0, config.after.1);
    let mut reasons = Reasons::default();
    let mut decisions = Vec::new();
    for i in 0..partitions.period_end_ns.len() {
        let age_ns = now_ns.saturating_sub(partitions.period_end_ns[i]);
        if partitions.archived[i] || age_ns <= after_ns {
            continue;
        }
        let age = Age::of(age_ns);
        let reason = reasons.index_of(age, || format!("period ended {age} ago, more than after {after}"));
        decisions.push(ArchiveDecision {
            partition: i as u32,
            target: config.target.clone(),
            compression_level: None,
            row_group_rows: None,
            delete_source_after: config.delete_source_after,
            reason,
        });
    }
    ArchivalAnswer { decisions, reasons: reasons.into_texts() }
}

/// Glue between the `archival` world and the functions above.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::types::{ArchivalAnswer, DatasetInfo, Partitions};
    use super::{Config, evaluate};

    struct Policy;

    impl super::wit::Guest for Policy {
        fn validate_config(config: String) -> Result<(), Vec<String>> {
            Config::parse(&config).map(|_| ())
        }

        fn evaluate(now_ns: i64, config: String, dataset: DatasetInfo, partitions: Partitions) -> ArchivalAnswer {
            // The host never calls `evaluate` with a rejected config.
            let config = Config::parse(&config).unwrap_or_else(|errors| panic!("invalid config: {}", errors.join("; ")));
            evaluate(now_ns, &config, &dataset, &partitions)
        }
    }

    #[cfg(target_arch = "wasm32")]
    super::wit::export!(Policy with_types_in super::wit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::strata::policy::types::{Texts, Tier};

    const DAY_NS: i64 = guest::DAY_NS;
    const NOW_NS: i64 = 20_000 * DAY_NS;

    fn dataset() -> DatasetInfo {
        DatasetInfo { name: "cpu".into(), period: "day".into(), time_column: "time".into(), columns: Vec::new() }
    }

    /// Daily partitions whose periods ended `days` days before `NOW_NS`.
    fn partitions(days: &[i64]) -> Partitions {
        let ends: Vec<i64> = days.iter().map(|d| NOW_NS - d * DAY_NS).collect();
        let n = ends.len();
        Partitions {
            period_start_ns: ends.iter().map(|end| end - DAY_NS).collect(),
            period_end_ns: ends.clone(),
            period_label: Texts { text: String::new(), ends: vec![0; n] },
            key: Texts { text: String::new(), ends: vec![0; n] },
            tier: vec![Tier::Hot; n],
            read_only: vec![false; n],
            rows: vec![10; n],
            bytes: vec![1_000; n],
            min_time_ns: vec![None; n],
            max_time_ns: vec![None; n],
            created_at_ns: ends.iter().map(|end| end - DAY_NS).collect(),
            last_written_at_ns: ends,
            file_count: vec![1; n],
            archived: vec![false; n],
        }
    }

    #[test]
    fn every_config_problem_is_reported() {
        assert_eq!(Config::parse("{}").unwrap().after.0, "180d");
        let errors = Config::parse(r#"{"after": "later", "target": 7, "delete_source": true}"#).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn archives_what_is_older_than_after() {
        let config = Config::parse(r#"{"after": "30d"}"#).unwrap();
        let answer = evaluate(NOW_NS, &config, &dataset(), &partitions(&[-1, 10, 100]));
        let archived: Vec<u32> = answer.decisions.iter().map(|d| d.partition).collect();
        assert_eq!(archived, [2]);
        assert_eq!(answer.reasons[answer.decisions[0].reason as usize], "period ended 100d ago, more than after 30d");
    }
}
