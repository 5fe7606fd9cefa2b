//! Built-in archival policy `archive-after`: archives every partition whose
//! period ended more than `after` ago and that is not archived yet.
//!
//! ```toml
//! after = "180d"              # required: 30s, 15m, 12h, 90d, 2w
//! target = ""                 # storage target; "" = the default archive target
//! delete_source_after = true  # default false
//! compression_level = 9       # zstd 1..=22; default: the host's
//! row_group_rows = 1000000    # default: the host's
//! ```
//!
//! Only partitions to archive are answered for; the others are left alone.

// Native builds exist only for the unit tests and export nothing, so all but
// the tested code looks unused there; the WebAssembly build still reports
// real dead code.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use serde::Deserialize;
use strata_guest::{Age, Reasons, parse_duration_ns};

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "archival", path: "../../wit" });
}

use wit::strata::policy::types::{ArchivalAnswer, ArchiveDecision, Partitions};

/// The config as written in the policy's TOML table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    after: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    delete_source_after: bool,
    compression_level: Option<u8>,
    row_group_rows: Option<u32>,
}

/// The validated config.
#[derive(Debug)]
struct Config {
    /// Partitions whose period ended more than this long ago are archived.
    after_ns: i64,
    /// `after` as the operator wrote it, quoted in reasons.
    after: String,
    target: String,
    delete_source_after: bool,
    compression_level: Option<u8>,
    row_group_rows: Option<u32>,
}

impl Config {
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let file: ConfigFile = serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
        let mut errors = Vec::new();
        let after_ns = parse_duration_ns(&file.after).unwrap_or_else(|error| {
            errors.push(format!("after: {error}"));
            0
        });
        if let Some(level) = file.compression_level
            && !(1..=22).contains(&level)
        {
            errors.push(format!("compression_level: {level} is not a zstd level (1 to 22)"));
        }
        if file.row_group_rows == Some(0) {
            errors.push("row_group_rows: must be greater than zero".to_string());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Config {
            after_ns,
            after: file.after,
            target: file.target,
            delete_source_after: file.delete_source_after,
            compression_level: file.compression_level,
            row_group_rows: file.row_group_rows,
        })
    }
}

/// The policy itself: a decision for each partition to archive.
fn evaluate(now_ns: i64, config: &Config, partitions: &Partitions) -> ArchivalAnswer {
    let mut reasons = Reasons::default();
    let decisions = partitions
        .period_end_ns
        .iter()
        .zip(&partitions.archived)
        .enumerate()
        .filter(|(_, (_, archived))| !**archived)
        .filter_map(|(index, (&period_end_ns, _))| {
            let age_ns = now_ns.saturating_sub(period_end_ns);
            if age_ns <= config.after_ns {
                return None;
            }
            let age = Age::of(age_ns);
            let reason = reasons.index_of(age, || {
                format!("period ended {age} ago, more than after {}, and not archived yet", config.after)
            });
            Some(ArchiveDecision {
                partition: index as u32,
                target: config.target.clone(),
                compression_level: config.compression_level,
                row_group_rows: config.row_group_rows,
                delete_source_after: config.delete_source_after,
                reason,
            })
        })
        .collect();
    ArchivalAnswer { decisions, reasons: reasons.into_texts() }
}

/// Glue between the `archival` world and the functions above. It compiles on
/// every target, but only the WebAssembly build exports it.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::types::{ArchivalAnswer, DatasetInfo, Partitions};
    use super::{Config, evaluate};

    struct Policy;

    impl super::wit::Guest for Policy {
        fn validate_config(config: String) -> Result<(), Vec<String>> {
            Config::parse(&config).map(|_| ())
        }

        fn evaluate(now_ns: i64, config: String, _dataset: DatasetInfo, partitions: Partitions) -> ArchivalAnswer {
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

    /// Cold daily partitions `(days since the period ended, archived)`.
    fn partitions(cases: &[(i64, bool)]) -> Partitions {
        let ends: Vec<i64> = cases.iter().map(|(days, _)| NOW_NS - days * DAY_NS).collect();
        let count = ends.len();
        let empty = || Texts { text: String::new(), ends: vec![0; count] };
        Partitions {
            period_start_ns: ends.iter().map(|end| end - DAY_NS).collect(),
            period_end_ns: ends.clone(),
            period_label: empty(),
            key: empty(),
            tier: vec![Tier::Cold; count],
            read_only: vec![true; count],
            rows: vec![10; count],
            bytes: vec![1_000; count],
            min_time_ns: vec![None; count],
            max_time_ns: vec![None; count],
            created_at_ns: ends.iter().map(|end| end - DAY_NS).collect(),
            last_written_at_ns: ends,
            file_count: vec![1; count],
            archived: cases.iter().map(|(_, archived)| *archived).collect(),
        }
    }

    #[test]
    fn validates_config() {
        let config = Config::parse(r#"{"after": "180d"}"#).unwrap();
        assert_eq!(config.target, "");
        assert!(!config.delete_source_after);
        assert_eq!(config.compression_level, None);
        let cases: &[(&str, usize)] = &[
            (r#"{}"#, 1),
            (r#"{"after": "180d", "compression_level": 0}"#, 1),
            (r#"{"after": "180d", "compression_level": 300}"#, 1),
            (r#"{"after": "soon", "compression_level": 23, "row_group_rows": 0}"#, 3),
            (r#"{"after": "180d", "delete_source": true}"#, 1),
        ];
        for (json, error_count) in cases {
            let errors = Config::parse(json).unwrap_err();
            assert_eq!(errors.len(), *error_count, "{json}: {errors:?}");
        }
    }

    #[test]
    fn archives_old_partitions_not_archived_yet() {
        let config = Config::parse(
            r#"{"after": "180d", "target": "glacier", "delete_source_after": true,
                "compression_level": 9}"#,
        )
        .unwrap();
        // open, young, boundary, old, old and archived
        let partitions = partitions(&[(-1, false), (30, false), (180, false), (181, false), (400, true)]);
        let answer = evaluate(NOW_NS, &config, &partitions);
        assert_eq!(answer.decisions.len(), 1);
        let decision = &answer.decisions[0];
        assert_eq!(decision.partition, 3);
        assert_eq!(decision.target, "glacier");
        assert_eq!(decision.compression_level, Some(9));
        assert_eq!(decision.row_group_rows, None);
        assert!(decision.delete_source_after);
        assert_eq!(
            answer.reasons[decision.reason as usize],
            "period ended 181d ago, more than after 180d, and not archived yet"
        );
    }
}
