//! Built-in partitioner `partition-by-range`: the partition key is the
//! configured range a field's value falls in.
//!
//! ```toml
//! field = "temperature"   # required
//! default = "other"       # optional: the key of a record in no range (or null)
//! ranges = [              # required, at least one; half-open [from, to)
//!   { key = "cold", to = 0 },
//!   { key = "mild", from = 0, to = 25 },
//!   { key = "hot", from = 25 },
//! ]
//! ```
//!
//! Bounds are all numbers or all strings; a missing `from` or `to` is
//! unbounded on that side. Ranges must not overlap, and `from` must be below
//! `to`. Number ranges compare integers, unsigned integers, floats, times
//! (epoch ns) and text that parses as a number; string ranges compare the
//! value's text (numbers and booleans as their decimal text) byte by byte,
//! so `"a" <= "apple" < "b"`. A record whose value is null, missing, in no
//! range, or not a number for number ranges gets `default`, or is rejected
//! when there is none. Keys, the default included, use only `a-z`, `0-9`,
//! `_` and `-`, at most 63 characters. Validation reports every error.

// Native builds exist only for the unit tests and export nothing, so all but
// the tested code looks unused there; the WebAssembly build still reports
// real dead code.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Deserialize;

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "partitioner", path: "../../wit" });
}

use wit::strata::policy::types::{BatchKeys, Column, ColumnValues, RejectedRecord, TextValues};

/// Keys longer than this are refused; the host accepts no longer key.
const KEY_CHARS_MAX: usize = 63;

/// One bound of a range: a number or a string.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum Bound {
    Number(f64),
    Text(String),
}

/// One configured range.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    key: String,
    from: Option<Bound>,
    to: Option<Bound>,
}

/// The config as written in the policy's TOML table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: String,
    ranges: Vec<Range>,
    default: Option<String>,
}

/// What the ranges compare: numbers or strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Text,
}

/// A record's value, as the ranges compare it.
#[derive(Debug, PartialEq)]
enum Value<'a> {
    Number(f64),
    Text(std::borrow::Cow<'a, str>),
}

fn compare(a: &Bound, b: &Bound) -> Option<Ordering> {
    match (a, b) {
        (Bound::Number(a), Bound::Number(b)) => a.partial_cmp(b),
        (Bound::Text(a), Bound::Text(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

fn key_error(what: &str, key: &str) -> Option<String> {
    if key.len() > KEY_CHARS_MAX {
        return Some(format!("{what}: `{key}` is longer than {KEY_CHARS_MAX} characters"));
    }
    if !key.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-')) {
        return Some(format!("{what}: `{key}` has characters other than a-z, 0-9, `_` and `-`"));
    }
    None
}

impl Config {
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let config: Config = serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
        let mut errors = Vec::new();
        if config.field.is_empty() {
            errors.push("field: name the field whose value is ranged".to_string());
        }
        if config.ranges.is_empty() {
            errors.push("ranges: configure at least one range".to_string());
        }
        errors.extend(config.default.as_deref().and_then(|key| key_error("default", key)));
        let kinds: Vec<Kind> = config.ranges.iter().flat_map(|r| r.from.iter().chain(&r.to)).map(kind_of).collect();
        if kinds.windows(2).any(|pair| pair[0] != pair[1]) {
            errors.push("ranges: bounds are all numbers or all strings, not a mix".to_string());
        }
        for (i, range) in config.ranges.iter().enumerate() {
            let what = format!("ranges[{i}] (`{}`)", range.key);
            if range.key.is_empty() {
                errors.push(format!("{what}: key cannot be empty"));
            }
            errors.extend(key_error(&format!("{what}.key"), &range.key));
            if let (Some(from), Some(to)) = (&range.from, &range.to)
                && compare(from, to).is_some_and(|o| o != Ordering::Less)
            {
                errors.push(format!("{what}: from {} is not below to {}", show(from), show(to)));
            }
        }
        if kinds.windows(2).all(|pair| pair[0] == pair[1]) {
            errors.extend(overlaps(&config.ranges));
        }
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }

    /// What the ranges compare (numbers when no range has a bound).
    fn kind(&self) -> Kind {
        self.ranges.iter().flat_map(|r| r.from.iter().chain(&r.to)).map(kind_of).next().unwrap_or(Kind::Number)
    }
}

fn kind_of(bound: &Bound) -> Kind {
    match bound {
        Bound::Number(_) => Kind::Number,
        Bound::Text(_) => Kind::Text,
    }
}

fn show(bound: &Bound) -> String {
    match bound {
        Bound::Number(n) => n.to_string(),
        Bound::Text(t) => format!("{t:?}"),
    }
}

/// Every pair of ranges that share a value (ranges sorted by `from`, an
/// unbounded `from` first; each must start at or after the previous end).
fn overlaps(ranges: &[Range]) -> Vec<String> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by(|&a, &b| match (&ranges[a].from, &ranges[b].from) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => compare(x, y).unwrap_or(Ordering::Equal),
    });
    let mut errors = Vec::new();
    for pair in order.windows(2) {
        let (a, b) = (&ranges[pair[0]], &ranges[pair[1]]);
        let disjoint = match (&a.to, &b.from) {
            (Some(end), Some(start)) => compare(start, end).is_some_and(|o| o != Ordering::Less),
            _ => false,
        };
        if !disjoint {
            errors.push(format!("ranges[{}] (`{}`) and ranges[{}] (`{}`) overlap", pair[0], a.key, pair[1], b.key));
        }
    }
    errors
}

impl Range {
    fn contains(&self, value: &Value<'_>) -> bool {
        let at_or_after = |bound: &Bound| match (bound, value) {
            (Bound::Number(b), Value::Number(v)) => v >= b,
            (Bound::Text(b), Value::Text(v)) => v.as_ref() >= b.as_str(),
            _ => false,
        };
        self.from.as_ref().is_none_or(at_or_after) && self.to.as_ref().is_none_or(|to| !at_or_after(to))
    }
}

/// The policy itself: one key, or one reason why there is none, per record.
fn partition(config: &Config, columns: &[Column], rows: usize) -> Vec<Result<String, String>> {
    if let Some(bad) = columns.iter().find(|column| value_count(&column.values) != rows) {
        let error = format!("column `{}` has {} values for {rows} records", bad.name, value_count(&bad.values));
        return vec![Err(error); rows];
    }
    let values = columns.iter().find(|c| c.name == config.field).map(|c| &c.values);
    let kind = config.kind();
    (0..rows)
        .map(|row| {
            let value = values.and_then(|values| value_of(values, row, kind));
            let found = value.as_ref().and_then(|v| config.ranges.iter().find(|r| r.contains(v)));
            match (found, &config.default) {
                (Some(range), _) => Ok(range.key.clone()),
                (None, Some(default)) => Ok(default.clone()),
                (None, None) if value.is_some() => {
                    Err(format!("record's `{}` is in no configured range, and no default is configured", config.field))
                }
                (None, None) => Err(format!(
                    "record has no `{}`{}, and no default is configured",
                    config.field,
                    if kind == Kind::Number { " that is a number" } else { "" }
                )),
            }
        })
        .collect()
}

/// Record `row`'s value as `kind` compares it; `None` when null (or, for
/// numbers, not a number).
fn value_of(values: &ColumnValues, row: usize, kind: Kind) -> Option<Value<'_>> {
    let number = |n: f64| match kind {
        Kind::Number => Some(Value::Number(n)),
        Kind::Text => Some(Value::Text(n.to_string().into())),
    };
    match values {
        ColumnValues::Text(values) => {
            let text = text_value(values, row)?;
            match kind {
                Kind::Number => text.trim().parse::<f64>().ok().filter(|n| !n.is_nan()).map(Value::Number),
                Kind::Text => Some(Value::Text(text.into())),
            }
        }
        ColumnValues::Float(values) => values[row].filter(|n| !n.is_nan()).and_then(number),
        ColumnValues::Integer(values) => values[row].and_then(|n| match kind {
            Kind::Number => Some(Value::Number(n as f64)),
            Kind::Text => Some(Value::Text(n.to_string().into())),
        }),
        ColumnValues::Unsigned(values) => values[row].and_then(|n| match kind {
            Kind::Number => Some(Value::Number(n as f64)),
            Kind::Text => Some(Value::Text(n.to_string().into())),
        }),
        ColumnValues::Boolean(values) => match kind {
            Kind::Number => None,
            Kind::Text => values[row].map(|b| Value::Text(b.to_string().into())),
        },
        ColumnValues::Time(values) => match kind {
            Kind::Number => Some(Value::Number(values[row] as f64)),
            Kind::Text => Some(Value::Text(values[row].to_string().into())),
        },
    }
}

/// Record `row`'s value in a text column: string `row` of the buffer,
/// unless the record is listed as null.
fn text_value(values: &TextValues, row: usize) -> Option<&str> {
    if values.nulls.binary_search(&(row as u32)).is_ok() {
        return None;
    }
    let ends = &values.values.ends;
    let start = if row == 0 { 0 } else { ends[row - 1] as usize };
    Some(&values.values.text[start..ends[row] as usize])
}

/// The answer for a batch: each distinct key once, and per record the
/// index of its key (or why it has none).
fn batch_keys(results: Vec<Result<String, String>>) -> BatchKeys {
    let mut keys: Vec<String> = Vec::new();
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut rejected = Vec::new();
    let record_keys = results
        .into_iter()
        .enumerate()
        .map(|(row, result)| match result {
            Ok(key) => *index.entry(key).or_insert_with_key(|key| {
                keys.push(key.clone());
                (keys.len() - 1) as u32
            }),
            Err(message) => {
                rejected.push(RejectedRecord { row: row as u32, message });
                0
            }
        })
        .collect();
    BatchKeys { keys, record_keys, rejected }
}

fn value_count(values: &ColumnValues) -> usize {
    match values {
        ColumnValues::Text(values) => values.values.ends.len(),
        ColumnValues::Float(values) => values.len(),
        ColumnValues::Integer(values) => values.len(),
        ColumnValues::Unsigned(values) => values.len(),
        ColumnValues::Boolean(values) => values.len(),
        ColumnValues::Time(values) => values.len(),
    }
}

/// Glue between the `partitioner` world and the functions above. It compiles on
/// every target, but only the WebAssembly build exports it.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::types::{BatchKeys, Column};
    use super::{Config, batch_keys, partition};

    struct Policy;

    /// The host never calls `columns` or `partition` with a config that
    /// `validate-config` rejected, so this trap is a host bug.
    fn parse(config: &str) -> Config {
        Config::parse(config).unwrap_or_else(|errors| panic!("invalid config: {}", errors.join("; ")))
    }

    impl super::wit::Guest for Policy {
        fn validate_config(config: String) -> Result<(), Vec<String>> {
            Config::parse(&config).map(|_| ())
        }

        fn columns(config: String) -> Vec<String> {
            vec![parse(&config).field]
        }

        fn partition(config: String, columns: Vec<Column>, rows: u32) -> BatchKeys {
            batch_keys(partition(&parse(&config), &columns, rows as usize))
        }
    }

    #[cfg(target_arch = "wasm32")]
    super::wit::export!(Policy with_types_in super::wit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Config {
        Config::parse(json).unwrap()
    }

    #[test]
    fn validation_reports_every_error() {
        let errors = Config::parse(
            r#"{"field": "", "default": "Other!", "ranges": [
                {"key": "a", "from": 5, "to": 1},
                {"key": "B", "from": 0, "to": 10},
                {"key": "", "from": 10}
            ]}"#,
        )
        .unwrap_err();
        let all = errors.join("\n");
        for needle in ["field:", "default:", "from 5 is not below to 1", "ranges[1] (`B`).key", "key cannot be empty"] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
        let mixed = Config::parse(r#"{"field": "f", "ranges": [{"key": "a", "to": 1}, {"key": "b", "from": "x"}]}"#);
        assert!(mixed.unwrap_err().join("").contains("not a mix"));
        let overlap = Config::parse(r#"{"field": "f", "ranges": [{"key": "a", "to": 2}, {"key": "b", "from": 1}]}"#);
        assert!(overlap.unwrap_err().join("").contains("overlap"));
        assert!(Config::parse(r#"{"field": "f", "ranges": []}"#).is_err());
    }

    #[test]
    fn numbers_and_strings_land_in_their_range_or_the_default() {
        let numbers = config(
            r#"{"field": "t", "default": "other", "ranges": [
                {"key": "cold", "to": 0}, {"key": "mild", "from": 0, "to": 25}, {"key": "hot", "from": 25}
            ]}"#,
        );
        let column = Column { name: "t".into(), values: ColumnValues::Float(vec![Some(-3.0), Some(0.0), Some(25.0), None]) };
        let keys = partition(&numbers, &[column], 4);
        assert_eq!(keys, [Ok("cold".into()), Ok("mild".into()), Ok("hot".into()), Ok("other".into())]);
        let strings = config(r#"{"field": "n", "ranges": [{"key": "a-m", "from": "a", "to": "n"}]}"#);
        let column = Column { name: "n".into(), values: ColumnValues::Integer(vec![Some(7)]) };
        assert!(partition(&strings, &[column], 1)[0].as_ref().unwrap_err().contains("no configured range"));
    }
}
