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
use strata_guest::{Age, Reasons, parse_duration_ns};

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "tiering", path: "../../wit" });
}

use wit::strata::policy::types::{Partitions, Tier, TierDecision, TieringAnswer};

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
        let file: ConfigFile = serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
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
                        errors.push(format!("{key}: {value} must be longer than {}", previous.described));
                    }
                    thresholds.push(Threshold { tier, after_ns, described: format!("{key} {value}") });
                }
            }
        }
        if thresholds.is_empty() && errors.is_empty() {
            errors.push("config: set at least one of warm_after, cold_after, archive_after".into());
        }
        if errors.is_empty() { Ok(Config { thresholds }) } else { Err(errors) }
    }
}

/// The policy itself: one decision per partition.
fn evaluate(now_ns: i64, config: &Config, partitions: &Partitions) -> TieringAnswer {
    let mut reasons = Reasons::default();
    let decisions = partitions
        .period_end_ns
        .iter()
        .zip(&partitions.tier)
        .enumerate()
        .map(|(index, (&period_end_ns, &current))| {
            let situation = Situation::of(now_ns, config, period_end_ns, current);
            TierDecision {
                partition: index as u32,
                target: situation.target(config),
                reason: reasons.index_of(situation, || situation.reason(config)),
            }
        })
        .collect();
    TieringAnswer { decisions, reasons: reasons.into_texts() }
}

/// Everything a decision and its reason depend on, so that partitions in
/// the same situation share one reason, formatted once.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Situation {
    /// The partition's current tier, by `depth`.
    current: u8,
    /// Time since the period ended; `None` while it has not ended.
    age: Option<Age>,
    /// The deepest threshold passed, by index into `Config::thresholds`.
    passed: Option<usize>,
}

impl Situation {
    fn of(now_ns: i64, config: &Config, period_end_ns: i64, current: Tier) -> Situation {
        let age_ns = now_ns.saturating_sub(period_end_ns);
        if age_ns <= 0 {
            return Situation { current: depth(current), age: None, passed: None };
        }
        let passed = config.thresholds.iter().rposition(|t| age_ns > t.after_ns);
        Situation { current: depth(current), age: Some(Age::of(age_ns)), passed }
    }

    fn target(&self, config: &Config) -> Tier {
        let current = TIERS[self.current as usize];
        match self.passed.map(|index| config.thresholds[index].tier) {
            Some(passed) if depth(passed) > self.current => passed,
            _ => current,
        }
    }

    fn reason(&self, config: &Config) -> String {
        let current = TIERS[self.current as usize];
        let Some(age) = self.age else {
            return "period has not ended yet".to_string();
        };
        let Some(passed) = self.passed.map(|index| &config.thresholds[index]) else {
            let first = &config.thresholds[0];
            return format!("period ended {age} ago, within {}", first.described);
        };
        let because = format!("period ended {age} ago, more than {}", passed.described);
        if depth(passed.tier) > self.current {
            because
        } else if passed.tier == current {
            format!("{because}; already {}", name(current))
        } else {
            format!("{because}; already {}, tiers never move back", name(current))
        }
    }
}

/// Every tier, by `depth`.
const TIERS: [Tier; 4] = [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archived];

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
    use super::wit::strata::policy::types::{DatasetInfo, Partitions, TieringAnswer};
    use super::{Config, evaluate};

    struct Policy;

    impl super::wit::Guest for Policy {
        fn validate_config(config: String) -> Result<(), Vec<String>> {
            Config::parse(&config).map(|_| ())
        }

        fn evaluate(now_ns: i64, config: String, _dataset: DatasetInfo, partitions: Partitions) -> TieringAnswer {
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
    use crate::wit::strata::policy::types::Texts;

    const DAY_NS: i64 = 86_400 * 1_000_000_000;
    const NOW_NS: i64 = 20_000 * DAY_NS;

    /// Daily partitions `(days since the period ended, current tier)`.
    fn partitions(cases: &[(i64, Tier)]) -> Partitions {
        let ends: Vec<i64> = cases.iter().map(|(days, _)| NOW_NS - days * DAY_NS).collect();
        let count = ends.len();
        let empty = || Texts { text: String::new(), ends: vec![0; count] };
        Partitions {
            period_start_ns: ends.iter().map(|end| end - DAY_NS).collect(),
            period_end_ns: ends.clone(),
            period_label: empty(),
            key: empty(),
            tier: cases.iter().map(|(_, tier)| *tier).collect(),
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

    /// `(target, reason)` of every decision, in order.
    fn decide(config: &Config, partitions: &Partitions) -> Vec<(Tier, String)> {
        let answer = evaluate(NOW_NS, config, partitions);
        answer.decisions.iter().map(|d| (d.target, answer.reasons[d.reason as usize].clone())).collect()
    }

    const ALL: &str = r#"{"warm_after": "7d", "cold_after": "30d", "archive_after": "365d"}"#;

    #[test]
    fn validates_config() {
        assert_eq!(Config::parse(ALL).unwrap().thresholds.len(), 3);
        assert_eq!(Config::parse(r#"{"cold_after": "30d"}"#).unwrap().thresholds.len(), 1);
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
            let decisions = decide(&config, &partitions(&[(days, current)]));
            assert_eq!(decisions[0].0, expected, "{days}d in {}", name(current));
        }
    }

    #[test]
    fn never_touches_the_open_period() {
        let config = Config::parse(r#"{"warm_after": "1s"}"#).unwrap();
        let mut open = partitions(&[(0, Tier::Hot)]);
        open.period_end_ns[0] = NOW_NS + 1;
        let decision = &decide(&config, &open)[0];
        assert_eq!(decision.0, Tier::Hot);
        assert_eq!(decision.1, "period has not ended yet");
    }

    #[test]
    fn explains_every_decision() {
        let config = Config::parse(ALL).unwrap();
        let three = partitions(&[(3, Tier::Hot), (40, Tier::Hot), (3, Tier::Cold)]);
        let reasons: Vec<String> = decide(&config, &three).into_iter().map(|(_, reason)| reason).collect();
        assert_eq!(
            reasons,
            [
                "period ended 3d ago, within warm_after 7d",
                "period ended 40d ago, more than cold_after 30d",
                "period ended 3d ago, within warm_after 7d",
            ]
        );
        let reason = &decide(&config, &partitions(&[(10, Tier::Cold)]))[0].1;
        assert_eq!(reason, "period ended 10d ago, more than warm_after 7d; already cold, tiers never move back");
    }
}
