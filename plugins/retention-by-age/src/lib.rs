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

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "retention", path: "../../wit" });
}

use wit::strata::policy::types::{PartitionInfo, RetentionAction, RetentionDecision};

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
        let file: ConfigFile =
            serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
        let max_age_ns =
            parse_duration_ns(&file.max_age).map_err(|error| vec![format!("max_age: {error}")])?;
        Ok(Config {
            max_age_ns,
            max_age: file.max_age,
        })
    }
}

/// The policy itself: one decision per partition.
fn evaluate(now_ns: i64, config: &Config, partitions: &[PartitionInfo]) -> Vec<RetentionDecision> {
    partitions
        .iter()
        .map(|partition| {
            let age_ns = now_ns.saturating_sub(partition.period_end_ns);
            let (action, reason) = if age_ns <= 0 {
                (
                    RetentionAction::Keep,
                    "period has not ended yet".to_string(),
                )
            } else if age_ns > config.max_age_ns {
                let reason = format!(
                    "period ended {} ago, more than max_age {}",
                    format_duration(age_ns),
                    config.max_age
                );
                (RetentionAction::Delete, reason)
            } else {
                let reason = format!(
                    "period ended {} ago, within max_age {}",
                    format_duration(age_ns),
                    config.max_age
                );
                (RetentionAction::Keep, reason)
            };
            RetentionDecision {
                partition_id: partition.id.clone(),
                action,
                reason,
            }
        })
        .collect()
}

/// Glue between the `retention` world and the functions above. It compiles on
/// every target, but only the WebAssembly build exports it.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
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
            _dataset: DatasetInfo,
            partitions: Vec<PartitionInfo>,
        ) -> Vec<RetentionDecision> {
            // The host never calls `evaluate` with a config that
            // `validate-config` rejected, so this trap is a host bug.
            let config = Config::parse(&config)
                .unwrap_or_else(|errors| panic!("invalid config: {}", errors.join("; ")));
            evaluate(now_ns, &config, &partitions)
        }
    }

    #[cfg(target_arch = "wasm32")]
    super::wit::export!(Policy with_types_in super::wit);
}

/// Parses a duration such as `30s`, `15m`, `12h`, `90d` or `2w` (a positive
/// whole number and one unit) into nanoseconds.
fn parse_duration_ns(text: &str) -> Result<i64, String> {
    const SECOND_NS: i64 = 1_000_000_000;
    let unit_start = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(unit_start);
    let unit_ns = match unit {
        "s" => SECOND_NS,
        "m" => 60 * SECOND_NS,
        "h" => 3_600 * SECOND_NS,
        "d" => 86_400 * SECOND_NS,
        "w" => 7 * 86_400 * SECOND_NS,
        _ => {
            return Err(format!(
                "`{text}` is not a duration like 30s, 15m, 12h, 90d or 2w"
            ));
        }
    };
    let count: i64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 15m, 12h, 90d or 2w"))?;
    if count == 0 {
        return Err(format!("`{text}` must be longer than zero"));
    }
    count
        .checked_mul(unit_ns)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// Formats nanoseconds for a reason, truncated to the largest whole unit:
/// `95d`, `5h`, `42s`.
fn format_duration(ns: i64) -> String {
    const SECOND_NS: i64 = 1_000_000_000;
    let seconds = ns / SECOND_NS;
    match seconds {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::strata::policy::types::Tier;

    const DAY_NS: i64 = 86_400 * 1_000_000_000;
    const NOW_NS: i64 = 20_000 * DAY_NS;

    /// A daily partition whose period ended `ended_days_ago` days before now.
    fn partition(id: &str, ended_days_ago: i64) -> PartitionInfo {
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
            rows: 10,
            bytes: 1_000,
            min_time_ns: None,
            max_time_ns: None,
            created_at_ns: period_end_ns - DAY_NS,
            last_written_at_ns: period_end_ns,
            file_count: 1,
            archived: false,
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
        let partitions = [
            partition("open", -1),
            partition("fresh", 1),
            partition("boundary", 90),
            partition("old", 91),
            partition("ancient", 400),
        ];
        let decisions = evaluate(NOW_NS, &config(r#"{"max_age": "90d"}"#), &partitions);
        let actions: Vec<(&str, RetentionAction)> = decisions
            .iter()
            .map(|d| (d.partition_id.as_str(), d.action))
            .collect();
        assert_eq!(
            actions,
            [
                ("open", RetentionAction::Keep),
                ("fresh", RetentionAction::Keep),
                ("boundary", RetentionAction::Keep),
                ("old", RetentionAction::Delete),
                ("ancient", RetentionAction::Delete),
            ]
        );
        assert_eq!(
            decisions[3].reason,
            "period ended 91d ago, more than max_age 90d"
        );
        assert_eq!(
            decisions[1].reason,
            "period ended 1d ago, within max_age 90d"
        );
        assert_eq!(decisions[0].reason, "period has not ended yet");
    }

    #[test]
    fn survives_extreme_timestamps() {
        let mut far_past = partition("far-past", 0);
        far_past.period_end_ns = i64::MIN;
        let decisions = evaluate(i64::MAX, &config(r#"{"max_age": "1s"}"#), &[far_past]);
        assert_eq!(decisions[0].action, RetentionAction::Delete);
    }
}
