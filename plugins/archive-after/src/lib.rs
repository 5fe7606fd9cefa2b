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

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "archival", path: "../../wit" });
}

use wit::strata::policy::types::{ArchiveDecision, PartitionInfo};

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
        let file: ConfigFile =
            serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
        let mut errors = Vec::new();
        let after_ns = parse_duration_ns(&file.after).unwrap_or_else(|error| {
            errors.push(format!("after: {error}"));
            0
        });
        if let Some(level) = file.compression_level
            && !(1..=22).contains(&level)
        {
            errors.push(format!(
                "compression_level: {level} is not a zstd level (1 to 22)"
            ));
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
fn evaluate(now_ns: i64, config: &Config, partitions: &[PartitionInfo]) -> Vec<ArchiveDecision> {
    partitions
        .iter()
        .filter(|partition| !partition.archived)
        .filter_map(|partition| {
            let age_ns = now_ns.saturating_sub(partition.period_end_ns);
            if age_ns <= config.after_ns {
                return None;
            }
            let reason = format!(
                "period ended {} ago, more than after {}, and not archived yet",
                format_duration(age_ns),
                config.after
            );
            Some(ArchiveDecision {
                partition_id: partition.id.clone(),
                target: config.target.clone(),
                compression_level: config.compression_level,
                row_group_rows: config.row_group_rows,
                delete_source_after: config.delete_source_after,
                reason,
            })
        })
        .collect()
}

/// Glue between the `archival` world and the functions above. It compiles on
/// every target, but only the WebAssembly build exports it.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::types::{ArchiveDecision, DatasetInfo, PartitionInfo};
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
        ) -> Vec<ArchiveDecision> {
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
    fn partition(id: &str, ended_days_ago: i64, archived: bool) -> PartitionInfo {
        let period_end_ns = NOW_NS - ended_days_ago * DAY_NS;
        PartitionInfo {
            id: id.to_string(),
            dataset: "cpu".to_string(),
            period_label: id.to_string(),
            period_start_ns: period_end_ns - DAY_NS,
            period_end_ns,
            key: String::new(),
            tier: Tier::Cold,
            read_only: true,
            rows: 10,
            bytes: 1_000,
            min_time_ns: None,
            max_time_ns: None,
            created_at_ns: period_end_ns - DAY_NS,
            last_written_at_ns: period_end_ns,
            file_count: 1,
            archived,
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
            (
                r#"{"after": "soon", "compression_level": 23, "row_group_rows": 0}"#,
                3,
            ),
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
        let partitions = [
            partition("open", -1, false),
            partition("young", 30, false),
            partition("boundary", 180, false),
            partition("old", 181, false),
            partition("old-archived", 400, true),
        ];
        let decisions = evaluate(NOW_NS, &config, &partitions);
        assert_eq!(decisions.len(), 1);
        let decision = &decisions[0];
        assert_eq!(decision.partition_id, "old");
        assert_eq!(decision.target, "glacier");
        assert_eq!(decision.compression_level, Some(9));
        assert_eq!(decision.row_group_rows, None);
        assert!(decision.delete_source_after);
        assert_eq!(
            decision.reason,
            "period ended 181d ago, more than after 180d, and not archived yet"
        );
    }
}
