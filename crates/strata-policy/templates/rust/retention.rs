//! `{{name}}`: a retention policy. As scaffolded it deletes partitions whose
//! period ended more than `max_age` ago and keeps the others, saying why.
//!
//! ```toml
//! [config]
//! max_age = "90d"   # 30s, 15m, 12h, 90d, 2w
//! ```
//!
//! Edit the places marked `EDIT:`. The contract is `wit/policy.wit`; the
//! helpers (durations, ages, reasons, config checks) are in `src/guest.rs`.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

// The guest helpers (a copy of plugins/guest); a policy uses some of them.
#[allow(dead_code)]
mod guest;

use guest::{Age, ConfigReader, Reasons};

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "retention", path: "wit" });
}

use wit::strata::policy::types::{DatasetInfo, Partitions, RetentionAction, RetentionAnswer, RetentionDecision};

/// EDIT: the config: the keys of the policy file's `[config]` table.
#[derive(Debug)]
struct Config {
    /// `max_age` as written (quoted in reasons) and in nanoseconds.
    max_age: (String, i64),
}

impl Config {
    /// Reads and checks the config, reporting every problem at once
    /// (unknown keys included).
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let mut config = ConfigReader::new(json)?;
        // EDIT: read your keys; `config.problem(…)` reports a bad value.
        let max_age = config.duration("max_age", Some("90d"));
        config.finish()?;
        Ok(Config { max_age: max_age.expect("checked by finish") })
    }
}

/// What a reason depends on: partitions in the same situation share it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Why {
    NotEnded,
    Older(Age),
    Within(Age),
}

/// EDIT: the policy: a plain function of its inputs, one decision (with a
/// reason) per partition. Partition `i` is entry `i` of every list.
fn evaluate(now_ns: i64, config: &Config, _dataset: &DatasetInfo, partitions: &Partitions) -> RetentionAnswer {
    let (max_age, max_age_ns) = (&config.max_age.0, config.max_age.1);
    let mut reasons = Reasons::default();
    let decisions = (0..partitions.period_end_ns.len())
        .map(|i| {
            let age_ns = now_ns.saturating_sub(partitions.period_end_ns[i]);
            let (action, why) = if age_ns <= 0 {
                (RetentionAction::Keep, Why::NotEnded)
            } else if age_ns > max_age_ns {
                (RetentionAction::Delete, Why::Older(Age::of(age_ns)))
            } else {
                (RetentionAction::Keep, Why::Within(Age::of(age_ns)))
            };
            let reason = reasons.index_of(why, || match why {
                Why::NotEnded => "period has not ended yet".to_string(),
                Why::Older(age) => format!("period ended {age} ago, more than max_age {max_age}"),
                Why::Within(age) => format!("period ended {age} ago, within max_age {max_age}"),
            });
            RetentionDecision { partition: i as u32, action, reason }
        })
        .collect();
    RetentionAnswer { decisions, reasons: reasons.into_texts() }
}

/// Glue between the `retention` world and the functions above.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::types::{DatasetInfo, Partitions, RetentionAnswer};
    use super::{Config, evaluate};

    struct Policy;

    impl super::wit::Guest for Policy {
        fn validate_config(config: String) -> Result<(), Vec<String>> {
            Config::parse(&config).map(|_| ())
        }

        fn evaluate(now_ns: i64, config: String, dataset: DatasetInfo, partitions: Partitions) -> RetentionAnswer {
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
        assert_eq!(Config::parse("{}").unwrap().max_age.0, "90d");
        let errors = Config::parse(r#"{"max_age": "soon", "typo": 1}"#).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn deletes_what_is_older_than_max_age() {
        let config = Config::parse(r#"{"max_age": "30d"}"#).unwrap();
        let answer = evaluate(NOW_NS, &config, &dataset(), &partitions(&[-1, 10, 100]));
        let actions: Vec<RetentionAction> = answer.decisions.iter().map(|d| d.action).collect();
        assert_eq!(actions, [RetentionAction::Keep, RetentionAction::Keep, RetentionAction::Delete]);
        assert_eq!(answer.reasons[answer.decisions[2].reason as usize], "period ended 100d ago, more than max_age 30d");
    }
}
