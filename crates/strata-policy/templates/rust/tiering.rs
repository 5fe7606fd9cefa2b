//! `{{name}}`: a tiering policy. As scaffolded it moves partitions whose
//! period ended more than `cold_after` ago to the cold tier, and says why
//! every other partition stays where it is.
//!
//! ```toml
//! [config]
//! cold_after = "30d"   # 30s, 15m, 12h, 90d, 2w
//! ```
//!
//! Edit the places marked `EDIT:`. The contract is `wit/policy.wit`; the
//! helpers (durations, ages, reasons, config checks) are in `src/guest.rs`.
//! Tiers only move colder: hot, warm, cold, archived.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

// The guest helpers (a copy of plugins/guest); a policy uses some of them.
#[allow(dead_code)]
mod guest;

use guest::{Age, ConfigReader, Reasons};

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "tiering", path: "wit" });
}

use wit::strata::policy::types::{DatasetInfo, Partitions, Tier, TierDecision, TieringAnswer};

/// EDIT: the config: the keys of the policy file's `[config]` table.
#[derive(Debug)]
struct Config {
    /// `cold_after` as written (quoted in reasons) and in nanoseconds.
    cold_after: (String, i64),
}

impl Config {
    /// Reads and checks the config, reporting every problem at once
    /// (unknown keys included).
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let mut config = ConfigReader::new(json)?;
        // EDIT: read your keys; `config.problem(…)` reports a bad value.
        let cold_after = config.duration("cold_after", Some("30d"));
        config.finish()?;
        Ok(Config { cold_after: cold_after.expect("checked by finish") })
    }
}

/// What a reason depends on: partitions in the same situation share it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Why {
    NotEnded,
    Older(Age),
    Within(Age),
    AlreadyColder,
}

/// Position of a tier from the hottest (0) to the coldest.
fn depth(tier: Tier) -> u8 {
    match tier {
        Tier::Hot => 0,
        Tier::Warm => 1,
        Tier::Cold => 2,
        Tier::Archived => 3,
    }
}

/// EDIT: the policy: a plain function of its inputs, one decision (with a
/// reason) per partition. A target equal to the current tier means "stays".
fn evaluate(now_ns: i64, config: &Config, _dataset: &DatasetInfo, partitions: &Partitions) -> TieringAnswer {
    let (cold_after, cold_after_ns) = (&config.cold_after.0, config.cold_after.1);
    let mut reasons = Reasons::default();
    let decisions = (0..partitions.period_end_ns.len())
        .map(|i| {
            let current = partitions.tier[i];
            let age_ns = now_ns.saturating_sub(partitions.period_end_ns[i]);
            let (target, why) = if age_ns <= 0 {
                (current, Why::NotEnded)
            } else if depth(current) > depth(Tier::Cold) {
                (current, Why::AlreadyColder)
            } else if age_ns > cold_after_ns {
                (Tier::Cold, Why::Older(Age::of(age_ns)))
            } else {
                (current, Why::Within(Age::of(age_ns)))
            };
            let reason = reasons.index_of(why, || match why {
                Why::NotEnded => "period has not ended yet".to_string(),
                Why::Older(age) => format!("period ended {age} ago, more than cold_after {cold_after}"),
                Why::Within(age) => format!("period ended {age} ago, within cold_after {cold_after}"),
                Why::AlreadyColder => "already colder than cold; tiers never move back".to_string(),
            });
            TierDecision { partition: i as u32, target, reason }
        })
        .collect();
    TieringAnswer { decisions, reasons: reasons.into_texts() }
}

/// Glue between the `tiering` world and the functions above.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::types::{DatasetInfo, Partitions, TieringAnswer};
    use super::{Config, evaluate};

    struct Policy;

    impl super::wit::Guest for Policy {
        fn validate_config(config: String) -> Result<(), Vec<String>> {
            Config::parse(&config).map(|_| ())
        }

        fn evaluate(now_ns: i64, config: String, dataset: DatasetInfo, partitions: Partitions) -> TieringAnswer {
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
    use crate::wit::strata::policy::types::Texts;

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
        assert_eq!(Config::parse("{}").unwrap().cold_after.0, "30d");
        let errors = Config::parse(r#"{"cold_after": 3, "warm_after": "7d"}"#).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn moves_old_partitions_to_cold() {
        let config = Config::parse(r#"{"cold_after": "30d"}"#).unwrap();
        let answer = evaluate(NOW_NS, &config, &dataset(), &partitions(&[-1, 10, 100]));
        let targets: Vec<Tier> = answer.decisions.iter().map(|d| d.target).collect();
        assert_eq!(targets, [Tier::Hot, Tier::Hot, Tier::Cold]);
        assert_eq!(answer.reasons[answer.decisions[2].reason as usize], "period ended 100d ago, more than cold_after 30d");
    }
}
