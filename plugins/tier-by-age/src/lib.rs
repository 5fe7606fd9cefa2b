//! Built-in tiering policy `tier-by-age`: moves each partition to the deepest
//! tier whose age threshold it has passed.
//!
//! ```toml
//! warm_after = "7d"       # each optional, at least one required,
//! cold_after = "30d"      # increasing from top to bottom
//! archive_after = "365d"
//! ```
//!
//! A partition's age is the time since its period ended. Partitions never
//! move back to a hotter tier, and the open period is never moved. It answers
//! for every partition; a target equal to the current tier means "stays", with
//! the reason why.

// Native builds exist only for the unit tests and export nothing, so all but
// the tested code looks unused there; the WebAssembly build still reports
// real dead code.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use serde::Deserialize;

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "tiering", path: "../../wit" });
}

use wit::strata::policy::types::{PartitionInfo, Tier, TierDecision};

/// The config as written in the policy's TOML table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    warm_after: Option<String>,
    cold_after: Option<String>,
    archive_after: Option<String>,
}

/// One configured threshold: partitions older than `after_ns` belong in `tier`.
#[derive(Debug)]
struct Threshold {
    tier: Tier,
    after_ns: i64,
    /// The config key and value as the operator wrote them, quoted in reasons:
    /// `cold_after 30d`.
    described: String,
}

/// The validated config: thresholds from the hottest tier to the coldest,
/// with strictly increasing ages.
#[derive(Debug)]
struct Config {
    thresholds: Vec<Threshold>,
}

impl Config {
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let file: ConfigFile =
            serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
        let mut errors = Vec::new();
        let mut thresholds: Vec<Threshold> = Vec::new();
        let keys = [
            ("warm_after", Tier::Warm, file.warm_after),
            ("cold_after", Tier::Cold, file.cold_after),
            ("archive_after", Tier::Archived, file.archive_after),
        ];
        for (key, tier, value) in keys {
            let Some(value) = value else { continue };
            match parse_duration_ns(&value) {
                Err(error) => errors.push(format!("{key}: {error}")),
                Ok(after_ns) => {
                    if let Some(previous) = thresholds.last()
                        && after_ns <= previous.after_ns
                    {
                        errors.push(format!(
                            "{key}: {value} must be longer than {}",
                            previous.described
                        ));
                    }
                    thresholds.push(Threshold {
                        tier,
                        after_ns,
                        described: format!("{key} {value}"),
                    });
                }
            }
        }
        if thresholds.is_empty() && errors.is_empty() {
            errors.push("config: set at least one of warm_after, cold_after, archive_after".into());
        }
        if errors.is_empty() {
            Ok(Config { thresholds })
        } else {
            Err(errors)
        }
    }
}

/// The policy itself: one decision per partition.
fn evaluate(now_ns: i64, config: &Config, partitions: &[PartitionInfo]) -> Vec<TierDecision> {
    partitions
        .iter()
        .map(|partition| {
            let (target, reason) = decide(now_ns, config, partition);
            TierDecision {
                partition_id: partition.id.clone(),
                target,
                reason,
            }
        })
        .collect()
}

fn decide(now_ns: i64, config: &Config, partition: &PartitionInfo) -> (Tier, String) {
    let current = partition.tier;
    let age_ns = now_ns.saturating_sub(partition.period_end_ns);
    if age_ns <= 0 {
        return (current, "period has not ended yet".to_string());
    }
    let age = format_duration(age_ns);
    // The deepest tier whose threshold the partition has passed, if any.
    let Some(passed) = config.thresholds.iter().rev().find(|t| age_ns > t.after_ns) else {
        let first = &config.thresholds[0];
        return (
            current,
            format!("period ended {age} ago, within {}", first.described),
        );
    };
    let because = format!("period ended {age} ago, more than {}", passed.described);
    if depth(passed.tier) > depth(current) {
        (passed.tier, because)
    } else if passed.tier == current {
        (current, format!("{because}; already {}", name(current)))
    } else {
        (
            current,
            format!(
                "{because}; already {}, tiers never move back",
                name(current)
            ),
        )
    }
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

fn name(tier: Tier) -> &'static str {
    match tier {
        Tier::Hot => "hot",
        Tier::Warm => "warm",
        Tier::Cold => "cold",
        Tier::Archived => "archived",
    }
}

/// Glue between the `tiering` world and the functions above. It compiles on
/// every target, but only the WebAssembly build exports it.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::types::{DatasetInfo, PartitionInfo, TierDecision};
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
        ) -> Vec<TierDecision> {
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

    const DAY_NS: i64 = 86_400 * 1_000_000_000;
    const NOW_NS: i64 = 20_000 * DAY_NS;

    /// A daily partition in `tier` whose period ended `ended_days_ago` days
    /// before now.
    fn partition(ended_days_ago: i64, tier: Tier) -> PartitionInfo {
        let period_end_ns = NOW_NS - ended_days_ago * DAY_NS;
        PartitionInfo {
            id: format!("p{ended_days_ago}"),
            dataset: "cpu".to_string(),
            period_label: String::new(),
            period_start_ns: period_end_ns - DAY_NS,
            period_end_ns,
            key: String::new(),
            tier,
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

    const ALL: &str = r#"{"warm_after": "7d", "cold_after": "30d", "archive_after": "365d"}"#;

    #[test]
    fn validates_config() {
        assert_eq!(Config::parse(ALL).unwrap().thresholds.len(), 3);
        assert_eq!(
            Config::parse(r#"{"cold_after": "30d"}"#)
                .unwrap()
                .thresholds
                .len(),
            1
        );
        let cases: &[(&str, usize)] = &[
            (r#"{}"#, 1),
            (r#"{"warm_after": "7d", "cold_after": "7d"}"#, 1),
            (r#"{"warm_after": "30d", "archive_after": "2w"}"#, 1),
            (r#"{"warm_after": "x", "cold_after": "y"}"#, 2),
            (r#"{"warm_after": "7d", "hot_after": "1d"}"#, 1),
        ];
        for (json, error_count) in cases {
            let errors = Config::parse(json).unwrap_err();
            assert_eq!(errors.len(), *error_count, "{json}: {errors:?}");
        }
    }

    #[test]
    fn moves_to_the_deepest_passed_tier_and_never_back() {
        let config = Config::parse(ALL).unwrap();
        // (days since the period ended, current tier, expected target)
        let cases = [
            (-1, Tier::Hot, Tier::Hot),
            (0, Tier::Hot, Tier::Hot),
            (3, Tier::Hot, Tier::Hot),
            (7, Tier::Hot, Tier::Hot),
            (8, Tier::Hot, Tier::Warm),
            (40, Tier::Hot, Tier::Cold),
            (40, Tier::Warm, Tier::Cold),
            (40, Tier::Cold, Tier::Cold),
            (40, Tier::Archived, Tier::Archived),
            (3, Tier::Cold, Tier::Cold),
            (400, Tier::Hot, Tier::Archived),
        ];
        for (days, current, expected) in cases {
            let decisions = evaluate(NOW_NS, &config, &[partition(days, current)]);
            assert_eq!(
                decisions[0].target,
                expected,
                "{days}d in {}",
                name(current)
            );
        }
    }

    #[test]
    fn never_touches_the_open_period() {
        let config = Config::parse(r#"{"warm_after": "1s"}"#).unwrap();
        let mut open = partition(0, Tier::Hot);
        open.period_end_ns = NOW_NS + 1;
        let decision = &evaluate(NOW_NS, &config, &[open])[0];
        assert_eq!(decision.target, Tier::Hot);
        assert_eq!(decision.reason, "period has not ended yet");
    }

    #[test]
    fn explains_every_decision() {
        let config = Config::parse(ALL).unwrap();
        let partitions = [
            partition(3, Tier::Hot),
            partition(40, Tier::Hot),
            partition(3, Tier::Cold),
        ];
        let reasons: Vec<String> = evaluate(NOW_NS, &config, &partitions)
            .into_iter()
            .map(|d| d.reason)
            .collect();
        assert_eq!(
            reasons,
            [
                "period ended 3d ago, within warm_after 7d",
                "period ended 40d ago, more than cold_after 30d",
                "period ended 3d ago, within warm_after 7d",
            ]
        );
        let reason = &evaluate(NOW_NS, &config, &[partition(10, Tier::Cold)])[0].reason;
        assert_eq!(
            reason,
            "period ended 10d ago, more than warm_after 7d; already cold, tiers never move back"
        );
    }
}
