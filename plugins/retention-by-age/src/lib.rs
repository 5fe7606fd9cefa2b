//! Built-in retention policy `retention-by-age`: deletes every partition whose
//! period ended more than `max_age` ago and keeps the others.
//!
//! ```toml
//! max_age = "90d"   # 30s, 15m, 12h, 90d, 2w
//! ```
//!
//! It answers for every partition, `keep` included, so that the reason a
//! partition is kept shows up when it is explained or the policy simulated.
//! The partition of the open period is always kept: its period has not ended.

// Native builds exist only for the unit tests and export nothing, so all but
// the tested code looks unused there; the WebAssembly build still reports
// real dead code.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use serde::Deserialize;
use strata_guest::{Age, Reasons, parse_duration_ns};

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "retention", path: "../../wit" });
}

use wit::strata::policy::types::{Partitions, RetentionAction, RetentionAnswer, RetentionDecision};

/// The config as written in the policy's TOML table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    max_age: String,
}

/// The validated config.
#[derive(Debug)]
struct Config {
    /// Partitions whose period ended more than this long ago are deleted.
    max_age_ns: i64,
    /// `max_age` as the operator wrote it, quoted in reasons.
    max_age: String,
}

impl Config {
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let file: ConfigFile = serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
        let max_age_ns = parse_duration_ns(&file.max_age).map_err(|error| vec![format!("max_age: {error}")])?;
        Ok(Config { max_age_ns, max_age: file.max_age })
    }
}

/// What a reason depends on. Partitions of the same age (in whole units)
/// get the same reason, which is formatted once and shared in the answer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Why {
    NotEnded,
    Older(Age),
    Within(Age),
}

/// The policy itself: one decision per partition.
fn evaluate(now_ns: i64, config: &Config, partitions: &Partitions) -> RetentionAnswer {
    let mut reasons = Reasons::default();
    let decisions = partitions
        .period_end_ns
        .iter()
        .enumerate()
        .map(|(index, &period_end_ns)| {
            let age_ns = now_ns.saturating_sub(period_end_ns);
            let (action, why) = if age_ns <= 0 {
                (RetentionAction::Keep, Why::NotEnded)
            } else if age_ns > config.max_age_ns {
                (RetentionAction::Delete, Why::Older(Age::of(age_ns)))
            } else {
                (RetentionAction::Keep, Why::Within(Age::of(age_ns)))
            };
            let reason = reasons.index_of(why, || match why {
                Why::NotEnded => "period has not ended yet".to_string(),
                Why::Older(age) => {
                    format!("period ended {age} ago, more than max_age {}", config.max_age)
                }
                Why::Within(age) => {
                    format!("period ended {age} ago, within max_age {}", config.max_age)
                }
            });
            RetentionDecision { partition: index as u32, action, reason }
        })
        .collect();
    RetentionAnswer { decisions, reasons: reasons.into_texts() }
}

/// Glue between the `retention` world and the functions above. It compiles on
/// every target, but only the WebAssembly build exports it.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::types::{DatasetInfo, Partitions, RetentionAnswer};
    use super::{Config, evaluate};

    struct Policy;

    impl super::wit::Guest for Policy {
        fn validate_config(config: String) -> Result<(), Vec<String>> {
            Config::parse(&config).map(|_| ())
        }

        fn evaluate(now_ns: i64, config: String, _dataset: DatasetInfo, partitions: Partitions) -> RetentionAnswer {
            // The host never calls `evaluate` with a config that
            // `validate-config` rejected, so this trap is a host bug.
            let config =
                Config::parse(&config).unwrap_or_else(|errors| panic!("invalid config: {}", errors.join("; ")));
            evaluate(now_ns, &config, &partitions)
        }
    }

    #[cfg(target_arch = "wasm32")]
    super::wit::export!(Policy with_types_in super::wit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::strata::policy::types::{Texts, Tier};

    const DAY_NS: i64 = 86_400 * 1_000_000_000;
    const NOW_NS: i64 = 20_000 * DAY_NS;

    /// Daily partitions whose periods ended `ended_days_ago` days before now.
    fn partitions(ended_days_ago: &[i64]) -> Partitions {
        let ends: Vec<i64> = ended_days_ago.iter().map(|days| NOW_NS - days * DAY_NS).collect();
        let count = ends.len();
        let empty = || Texts { text: String::new(), ends: vec![0; count] };
        Partitions {
            period_start_ns: ends.iter().map(|end| end - DAY_NS).collect(),
            period_end_ns: ends.clone(),
            period_label: empty(),
            key: empty(),
            tier: vec![Tier::Hot; count],
            read_only: vec![false; count],
            rows: vec![10; count],
            bytes: vec![1_000; count],
            min_time_ns: vec![None; count],
            max_time_ns: vec![None; count],
            created_at_ns: ends.iter().map(|end| end - DAY_NS).collect(),
            last_written_at_ns: ends,
            file_count: vec![1; count],
            archived: vec![false; count],
        }
    }

    fn config(json: &str) -> Config {
        Config::parse(json).unwrap()
    }

    #[test]
    fn parses_durations() {
        let cases: &[(&str, Result<i64, ()>)] = &[
            ("30s", Ok(30 * 1_000_000_000)),
            ("15m", Ok(15 * 60 * 1_000_000_000)),
            ("12h", Ok(12 * 3_600 * 1_000_000_000)),
            ("90d", Ok(90 * DAY_NS)),
            ("2w", Ok(14 * DAY_NS)),
            ("0d", Err(())),
            ("", Err(())),
            ("d", Err(())),
            ("90", Err(())),
            ("90 d", Err(())),
            ("-5d", Err(())),
            ("1.5d", Err(())),
            ("90D", Err(())),
            ("999999999999w", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration_ns(text).map_err(|_| ()), *expected, "{text}");
        }
    }

    #[test]
    fn validates_config() {
        assert_eq!(config(r#"{"max_age": "90d"}"#).max_age_ns, 90 * DAY_NS);
        for bad in [
            r#"{}"#,
            r#"{"max_age": "ninety days"}"#,
            r#"{"max_age": 90}"#,
            r#"{"max_age": "90d", "maxage": "1d"}"#,
            r#"not json"#,
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deletes_partitions_whose_period_ended_more_than_max_age_ago() {
        let partitions = partitions(&[-1, 1, 90, 91, 400, 91]);
        let answer = evaluate(NOW_NS, &config(r#"{"max_age": "90d"}"#), &partitions);
        let decisions: Vec<(u32, RetentionAction, &str)> = answer
            .decisions
            .iter()
            .map(|d| (d.partition, d.action, answer.reasons[d.reason as usize].as_str()))
            .collect();
        assert_eq!(
            decisions,
            [
                (0, RetentionAction::Keep, "period has not ended yet"),
                (1, RetentionAction::Keep, "period ended 1d ago, within max_age 90d"),
                (2, RetentionAction::Keep, "period ended 90d ago, within max_age 90d"),
                (3, RetentionAction::Delete, "period ended 91d ago, more than max_age 90d"),
                (4, RetentionAction::Delete, "period ended 400d ago, more than max_age 90d"),
                (5, RetentionAction::Delete, "period ended 91d ago, more than max_age 90d"),
            ]
        );
        assert_eq!(answer.reasons.len(), 5, "equal reasons are shared");
    }

    #[test]
    fn survives_extreme_timestamps() {
        let mut far_past = partitions(&[0]);
        far_past.period_end_ns[0] = i64::MIN;
        let answer = evaluate(i64::MAX, &config(r#"{"max_age": "1s"}"#), &far_past);
        assert_eq!(answer.decisions[0].action, RetentionAction::Delete);
    }
}
