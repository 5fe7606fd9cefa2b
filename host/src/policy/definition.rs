//! Policy files: `policies/*.toml`, one policy per file, parsed into an
//! immutable [`PolicyDefinition`]. Pure: reading the file and the component
//! is the registry's job.
//!
//! ```toml
//! name = "retention-default"          # optional, defaults to the file name
//! kind = "retention"                  # partitioner | retention | tiering | archival
//! plugin = "builtin:retention-by-age" # or a path to a .wasm, relative to this file
//! datasets = ["orders", "logs-*"]     # names or globs (`*`, `?`)
//! schedule = "every 1h"               # not for partitioners
//! log_level = "info"                  # guest `log` messages shown: debug | info | warn | error
//!
//! [limits]                            # all optional
//! deadline_ms = 1000
//!
//! [config]                            # handed to the plugin as a JSON object
//! max_age = "400d"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sandbox::{GuestLogLevel, PolicyKind, PolicyLimits};
use crate::text::elide;

/// Where a policy's component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginSource {
    /// A component embedded in the binary (`builtin:NAME`).
    Builtin(String),
    /// A `.wasm` file (absolute, resolved against the policy file's directory).
    File(PathBuf),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Builtin(name) => write!(f, "builtin:{name}"),
            PluginSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// When a scheduled policy runs: at a fixed interval (`every 10m`) or on a
/// cron pattern evaluated in UTC (`0 3 * * *`, `@daily`, or six fields with
/// seconds first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Schedule {
    /// Runs when this long has passed since the last run (or start-up).
    Every(Duration),
    /// Runs at each time the pattern matches.
    Cron(Box<CronPattern>),
}

/// A parsed cron pattern; equal when its text is.
#[derive(Debug, Clone)]
pub struct CronPattern {
    text: String,
    cron: croner::Cron,
}

impl PartialEq for CronPattern {
    fn eq(&self, other: &CronPattern) -> bool {
        self.text == other.text
    }
}

impl Eq for CronPattern {}

/// The shortest schedule interval.
const SCHEDULE_SECONDS_MIN: u64 = 1;

impl Schedule {
    /// Parses `every N<unit>` with a unit of `s`, `m`, `h` or `d`, or a cron
    /// pattern: five fields (minute hour day-of-month month day-of-week),
    /// six with seconds first, or an alias such as `@hourly`.
    pub fn parse(raw: &str) -> Result<Schedule, String> {
        let raw = raw.trim();
        match raw.strip_prefix("every") {
            Some(amount) => Self::parse_every(raw, amount),
            None => Self::parse_cron(raw),
        }
    }

    fn parse_every(raw: &str, amount: &str) -> Result<Schedule, String> {
        let invalid = || format!("schedule {raw:?} must look like \"every 10m\" (units s, m, h, d)");
        let amount = amount.trim();
        let unit_start = amount.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        let (digits, unit) = amount.split_at(unit_start);
        let count: u64 = digits.parse().map_err(|_| invalid())?;
        let unit_seconds = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(invalid()),
        };
        let seconds = count.checked_mul(unit_seconds).ok_or_else(invalid)?;
        if seconds < SCHEDULE_SECONDS_MIN {
            return Err(format!("schedule {raw:?} must be at least {SCHEDULE_SECONDS_MIN}s"));
        }
        Ok(Schedule::Every(Duration::from_secs(seconds)))
    }

    fn parse_cron(raw: &str) -> Result<Schedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(raw)
            .map_err(|e| {
                format!(
                    "schedule {raw:?} is neither \"every N<s|m|h|d>\" nor a cron pattern \
                     (\"minute hour day month weekday\", e.g. \"0 3 * * *\"): {e}"
                )
            })?;
        // A pattern that never matches (e.g. 30 February) would silently
        // never run; refuse it.
        let probe = chrono::DateTime::<chrono::Utc>::from_timestamp(0, 0).unwrap_or_default();
        cron.find_next_occurrence(&probe, false).map_err(|e| format!("schedule {raw:?} never matches: {e}"))?;
        Ok(Schedule::Cron(Box::new(CronPattern { text: raw.to_string(), cron })))
    }

    /// The first time, in ns since the epoch, strictly after `after_ns` at
    /// which the schedule is due; `None` when a cron pattern has no further
    /// match.
    pub fn next_after(&self, after_ns: i64) -> Option<i64> {
        match self {
            Schedule::Every(every) => {
                Some(after_ns.saturating_add(i64::try_from(every.as_nanos()).unwrap_or(i64::MAX)))
            }
            Schedule::Cron(pattern) => {
                let after = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(after_ns);
                let next = pattern.cron.find_next_occurrence(&after, false).ok()?;
                next.timestamp_nanos_opt()
            }
        }
    }
}

impl TryFrom<String> for Schedule {
    type Error = String;

    fn try_from(raw: String) -> Result<Schedule, String> {
        Schedule::parse(&raw)
    }
}

impl From<Schedule> for String {
    fn from(schedule: Schedule) -> String {
        schedule.to_string()
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(every) => match every.as_secs() {
                s if s % 86_400 == 0 => write!(f, "every {}d", s / 86_400),
                s if s % 3_600 == 0 => write!(f, "every {}h", s / 3_600),
                s if s % 60 == 0 => write!(f, "every {}m", s / 60),
                s => write!(f, "every {s}s"),
            },
            Schedule::Cron(pattern) => f.write_str(&pattern.text),
        }
    }
}

/// The schedule of retention, tiering and archival policies that name none.
pub const DEFAULT_SCHEDULE: Schedule = Schedule::Every(Duration::from_secs(3_600));

/// A parsed and validated policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDefinition {
    /// `[a-z0-9][a-z0-9_-]{0,62}`; unique among loaded policies.
    pub name: String,
    /// The world it implements.
    pub kind: PolicyKind,
    /// The component.
    pub plugin: PluginSource,
    /// Dataset names or globs it binds to.
    pub datasets: Vec<String>,
    /// When it runs (none for partitioners, which run on the write path).
    pub schedule: Option<Schedule>,
    /// Its limits.
    pub limits: PolicyLimits,
    /// The least severe guest `log` level shown in the server log (`debug`
    /// shows the guest's debug messages, tagged with policy and version).
    /// Not part of the version: changing it takes effect at the next reload.
    #[serde(default)]
    pub log_level: GuestLogLevel,
    /// The `[config]` table as a JSON object string.
    pub config_json: String,
    /// The file it was read from (none for an uploaded candidate).
    pub file: Option<PathBuf>,
}

/// The file as written; converted into a [`PolicyDefinition`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    name: Option<String>,
    kind: String,
    plugin: String,
    datasets: Vec<String>,
    schedule: Option<String>,
    #[serde(default)]
    limits: PolicyLimits,
    #[serde(default)]
    log_level: GuestLogLevel,
    #[serde(default)]
    config: toml::Table,
}

/// A policy file that cannot be used; the message names the file and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct DefinitionError {
    /// The policy file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// Bytes of a [`DefinitionError`] message, at most.
const DEFINITION_MESSAGE_BYTES_MAX: usize = 600;

/// A TOML error in one line: where, what, and a short quote of the text
/// from there. The crate's own rendering repeats the whole offending line
/// and pads up to the column, which for a file of one long line is the
/// whole file.
fn describe_toml_error(error: &toml::de::Error, text: &str) -> String {
    use super::files::QUOTE_BYTES_MAX;
    let what = error.message().trim_end();
    let Some(start) = error.span().map(|span| span.start).filter(|start| text.is_char_boundary(*start)) else {
        return what.to_string();
    };
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    let rest = text[start..].split('\n').next().unwrap_or_default();
    let quote = elide(rest.trim_end(), QUOTE_BYTES_MAX / 2);
    format!("line {line}, column {column}: {} (at {quote:?})", elide(what, QUOTE_BYTES_MAX))
}

impl PolicyDefinition {
    /// Parses the TOML text of `file`. Unknown keys, a bad name, kind,
    /// plugin, dataset pattern, schedule or limit are errors naming the key.
    pub fn parse(file: &Path, text: &str) -> Result<PolicyDefinition, DefinitionError> {
        // Values quoted in messages come from the file: bound them.
        let error = |message: String| DefinitionError {
            file: file.display().to_string(),
            message: elide(&message, DEFINITION_MESSAGE_BYTES_MAX),
        };
        let parsed: PolicyFile = toml::from_str(text).map_err(|e| error(describe_toml_error(&e, text)))?;
        let name = match parsed.name {
            Some(name) => name,
            None => file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string(),
        };
        check_policy_name(&name).map_err(|m| error(format!("name: {m}")))?;
        let kind = PolicyKind::parse(&parsed.kind).ok_or_else(|| {
            error(format!("kind = {:?} must be one of partitioner, retention, tiering, archival", parsed.kind))
        })?;
        let directory = file.parent().unwrap_or(Path::new("."));
        let plugin = parse_plugin(&parsed.plugin, directory).map_err(|m| error(format!("plugin: {m}")))?;
        if parsed.datasets.is_empty() {
            return Err(error("datasets must name at least one dataset or glob, e.g. [\"*\"]".into()));
        }
        for pattern in &parsed.datasets {
            check_dataset_pattern(pattern).map_err(|m| error(format!("datasets: {m}")))?;
        }
        let schedule = match (kind, parsed.schedule) {
            (PolicyKind::Partitioner, Some(_)) => {
                return Err(error("schedule: partitioners run on the write path and take no schedule".into()));
            }
            (PolicyKind::Partitioner, None) => None,
            (_, Some(raw)) => Some(Schedule::parse(&raw).map_err(error)?),
            (_, None) => Some(DEFAULT_SCHEDULE),
        };
        parsed.limits.validate().map_err(error)?;
        let config = toml_to_json(toml::Value::Table(parsed.config)).map_err(|m| error(format!("config: {m}")))?;
        Ok(PolicyDefinition {
            name,
            kind,
            plugin,
            datasets: parsed.datasets,
            schedule,
            limits: parsed.limits,
            log_level: parsed.log_level,
            config_json: config.to_string(),
            file: Some(file.to_path_buf()),
        })
    }

    /// Whether this policy binds to `dataset`.
    pub fn applies_to(&self, dataset: &str) -> bool {
        self.datasets.iter().any(|pattern| glob_matches(pattern, dataset))
    }

    /// A digest of everything that changes behaviour except the component
    /// bytes (kind, datasets, schedule, limits, config): two loads with the
    /// same component and the same digest are the same version.
    pub fn digest(&self) -> String {
        let canonical = serde_json::json!({
            "kind": self.kind,
            "datasets": self.datasets,
            "schedule": self.schedule.as_ref().map(|s| s.to_string()),
            "limits": self.limits,
            "config": self.config_json,
        });
        crate::digest::sha256_hex(canonical.to_string().as_bytes())
    }
}

/// Checks a policy name: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn check_policy_name(name: &str) -> Result<(), String> {
    crate::names::DatasetName::parse(name)
        .map(|_| ())
        .map_err(|_| format!("{name:?} must match [a-z0-9][a-z0-9_-]{{0,62}}"))
}

fn parse_plugin(raw: &str, directory: &Path) -> Result<PluginSource, String> {
    if let Some(name) = raw.strip_prefix("builtin:") {
        if super::builtins::component(name).is_none() {
            return Err(format!(
                "{raw:?} is not a built-in; built-ins are {}",
                super::builtins::names().map(|n| format!("builtin:{n}")).collect::<Vec<_>>().join(", ")
            ));
        }
        return Ok(PluginSource::Builtin(name.to_string()));
    }
    if raw.is_empty() {
        return Err("empty; use builtin:NAME or a path to a .wasm component".into());
    }
    let path = Path::new(raw);
    Ok(PluginSource::File(if path.is_absolute() { path.to_path_buf() } else { directory.join(path) }))
}

fn check_dataset_pattern(pattern: &str) -> Result<(), String> {
    let valid = !pattern.is_empty()
        && pattern.len() <= 63
        && pattern.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*?".contains(&b));
    if valid { Ok(()) } else { Err(format!("{pattern:?} is not a dataset name or a glob of [a-z0-9_-*?]")) }
}

/// Glob matching with `*` (any run, including empty) and `?` (one byte).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.as_bytes(), name.as_bytes());
    let (mut p, mut n) = (0, 0);
    // Position after the last `*` and the name position it was tried at.
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            backtrack = Some((p + 1, n));
            p += 1;
        } else if let Some((star_p, star_n)) = backtrack {
            p = star_p;
            n = star_n + 1;
            backtrack = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// Converts the `[config]` table to JSON: tables become objects, arrays
/// arrays, datetimes RFC 3339 strings. Non-finite floats have no JSON form.
fn toml_to_json(value: toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as Json;
    Ok(match value {
        toml::Value::String(s) => Json::String(s),
        toml::Value::Integer(i) => Json::from(i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(f).map(Json::Number).ok_or_else(|| format!("{f} has no JSON form"))?
        }
        toml::Value::Boolean(b) => Json::Bool(b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => Json::Array(items.into_iter().map(toml_to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(table) => {
            Json::Object(table.into_iter().map(|(k, v)| Ok((k, toml_to_json(v)?))).collect::<Result<_, String>>()?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PolicyDefinition, DefinitionError> {
        PolicyDefinition::parse(Path::new("/etc/strata/policies/keep.toml"), text)
    }

    const MINIMAL: &str = "kind = \"retention\"\nplugin = \"builtin:retention-by-age\"\ndatasets = [\"*\"]\n";

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let definition = parse(&format!("{MINIMAL}[config]\nmax_age = \"400d\"\n")).unwrap();
        assert_eq!(definition.name, "keep", "the name defaults to the file name");
        assert_eq!(definition.kind, PolicyKind::Retention);
        assert_eq!(definition.plugin, PluginSource::Builtin("retention-by-age".into()));
        assert_eq!(definition.schedule, Some(DEFAULT_SCHEDULE));
        assert_eq!(definition.limits, PolicyLimits::default());
        assert_eq!(definition.log_level, GuestLogLevel::Info);
        assert_eq!(definition.config_json, r#"{"max_age":"400d"}"#);
    }

    #[test]
    fn log_level_is_one_of_four_and_not_part_of_the_version() {
        let debug = parse(&format!("log_level = \"debug\"\n{MINIMAL}")).unwrap();
        assert_eq!(debug.log_level, GuestLogLevel::Debug);
        assert_eq!(debug.digest(), parse(MINIMAL).unwrap().digest());
        let error = parse(&format!("log_level = \"verbose\"\n{MINIMAL}")).unwrap_err();
        assert!(error.message.contains("log_level") || error.message.contains("verbose"), "{error}");
        let old: PolicyDefinition =
            serde_json::from_str(&serde_json::to_string(&debug).unwrap().replace(r#""log_level":"debug","#, ""))
                .unwrap();
        assert_eq!(old.log_level, GuestLogLevel::Info, "versions recorded before log_level still load");
    }

    #[test]
    fn config_tables_become_json_objects() {
        let definition = parse(&format!(
            "{MINIMAL}[config]\nn = 3\nx = 1.5\nflag = true\nlist = [\"a\", \"b\"]\nwhen = 2026-01-02T03:04:05Z\n[config.nested]\nk = \"v\"\n"
        ))
        .unwrap();
        let config: serde_json::Value = serde_json::from_str(&definition.config_json).unwrap();
        assert_eq!(
            config,
            serde_json::json!({"n": 3, "x": 1.5, "flag": true, "list": ["a", "b"], "when": "2026-01-02T03:04:05Z", "nested": {"k": "v"}})
        );
    }

    #[test]
    fn mistakes_are_errors_naming_the_key() {
        let cases = [
            (format!("{MINIMAL}shedule = \"every 1h\"\n"), "shedule"),
            (format!("{MINIMAL}[limits]\ndeadline = 5\n"), "deadline"),
            (format!("{MINIMAL}[limits]\ndeadline_ms = 0\n"), "deadline_ms"),
            (format!("{MINIMAL}[limits]\nmemory_bytes_max = 10\n"), "memory_bytes_max"),
            (format!("{MINIMAL}[limits]\nfuel = 0\n"), "fuel"),
            (format!("{MINIMAL}schedule = \"hourly\"\n"), "schedule"),
            (format!("{MINIMAL}name = \"Bad Name\"\n"), "name"),
            (MINIMAL.replace("retention\"", "compaction\""), "kind"),
            (MINIMAL.replace("builtin:retention-by-age", "builtin:nope"), "plugin"),
            (MINIMAL.replace("[\"*\"]", "[]"), "datasets"),
            (MINIMAL.replace("[\"*\"]", "[\"../x\"]"), "datasets"),
            (MINIMAL.replace("kind = \"retention\"\n", ""), "kind"),
            ("kind = \"partitioner\"\nplugin = \"builtin:partition-by-hash\"\ndatasets = [\"*\"]\nschedule = \"every 1m\"\n".into(), "schedule"),
        ];
        for (text, key) in cases {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
            assert!(error.starts_with("/etc/strata/policies/keep.toml"), "{error}");
        }
    }

    #[test]
    fn errors_quote_little_of_a_huge_file() {
        let long = "x".repeat(1 << 20);
        let cases = [
            format!("{MINIMAL}{long}"),
            format!("{MINIMAL}[config]\nv = \"{long}"),
            MINIMAL.replace("[\"*\"]", &format!("\"{long}\"")),
            MINIMAL.replace("\"retention\"", &format!("\"{long}\"")),
            format!("{MINIMAL}schedule = \"{long}\"\n"),
        ];
        for text in cases {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.len() < 1024, "{} bytes: {}", error.len(), &error[..2048.min(error.len())]);
        }
        let error = parse(&format!("{MINIMAL}\n\nshedule = \"every 1h\"\n")).unwrap_err().to_string();
        assert!(error.contains("line 6, column 1") && error.contains("unknown field `shedule`"), "{error}");
    }

    #[test]
    fn plugin_paths_are_relative_to_the_policy_file() {
        let definition = parse(&MINIMAL.replace("builtin:retention-by-age", "../plugins/mine.wasm")).unwrap();
        assert_eq!(definition.plugin, PluginSource::File(PathBuf::from("/etc/strata/policies/../plugins/mine.wasm")));
        let definition = parse(&MINIMAL.replace("builtin:retention-by-age", "/opt/p.wasm")).unwrap();
        assert_eq!(definition.plugin, PluginSource::File(PathBuf::from("/opt/p.wasm")));
    }

    #[test]
    fn the_shipped_policy_files_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut parsed = Vec::new();
        for directory in [root.clone(), root.join("examples")] {
            for entry in std::fs::read_dir(&directory).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let definition = PolicyDefinition::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
                    parsed.push((definition.name, definition.kind));
                }
            }
        }
        parsed.sort();
        assert!(parsed.contains(&("tiering".into(), PolicyKind::Tiering)), "{parsed:?}");
        assert!(parsed.contains(&("retention-400d".into(), PolicyKind::Retention)), "{parsed:?}");
    }

    #[test]
    fn schedules_parse_and_print() {
        assert_eq!(Schedule::parse("every 10m").unwrap(), Schedule::Every(Duration::from_secs(600)));
        assert_eq!(Schedule::parse("every 2d").unwrap().to_string(), "every 2d");
        assert_eq!(Schedule::parse(" every 90s ").unwrap().to_string(), "every 90s");
        assert_eq!(Schedule::parse("0 3 * * *").unwrap().to_string(), "0 3 * * *");
        assert_eq!(Schedule::parse("@hourly").unwrap().to_string(), "@hourly");
        for bad in [
            "10m",
            "every",
            "every m",
            "every 0s",
            "every 5y",
            "every -1h",
            "every 99999999999999999999d",
            "61 * * * *",
            "* * *",
            "0 0 30 2 *",
            "",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schedules_say_when_they_are_next_due() {
        let hour_ns = 3_600 * 1_000_000_000_i64;
        // 2026-01-15T10:20:00Z
        let t = 1_768_472_400 * 1_000_000_000_i64;
        let cases = [
            ("every 1h", t, t + hour_ns),
            ("0 * * * *", t, t + 40 * 60 * 1_000_000_000),
            // Strictly after: a run at exactly 11:00 is next due at 12:00.
            ("0 * * * *", t + 40 * 60 * 1_000_000_000, t + 40 * 60 * 1_000_000_000 + hour_ns),
            // UTC, whatever the machine's zone: 03:00 the next day.
            ("0 3 * * *", t, t + (24 + 3) * hour_ns - (10 * 60 + 20) * 60 * 1_000_000_000),
            ("*/15 * * * * *", t, t + 15 * 1_000_000_000),
        ];
        for (raw, after, expected) in cases {
            assert_eq!(Schedule::parse(raw).unwrap().next_after(after), Some(expected), "{raw}");
        }
    }

    #[test]
    fn dataset_globs() {
        let cases = [
            ("orders", "orders", true),
            ("orders", "orders2", false),
            ("logs-*", "logs-web", true),
            ("logs-*", "logs-", true),
            ("logs-*", "log", false),
            ("*", "anything", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("cpu-?", "cpu-1", true),
            ("cpu-?", "cpu-12", false),
            ("*-eu", "shop-eu", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn the_digest_changes_with_behaviour_only() {
        let a = parse(MINIMAL).unwrap();
        let mut b = a.clone();
        b.file = None;
        assert_eq!(a.digest(), b.digest(), "where the file lives is not behaviour");
        b.limits.deadline_ms = 5;
        assert_ne!(a.digest(), b.digest());
    }
}
