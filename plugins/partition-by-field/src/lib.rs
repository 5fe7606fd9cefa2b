//! Built-in partitioner `partition-by-field`: the partition key is the values
//! of some fields, joined.
//!
//! ```toml
//! fields = ["tenant"]   # required, at least one
//! fallback = "region"   # optional: used for a field that is null
//! separator = "-"       # default "-"; only characters from [a-z0-9_-]
//! default = ""          # optional: used when the fallback is null too
//! ```
//!
//! For each field of a record: its value, or else the fallback field's value,
//! or else `default`; when there is no default, the record is rejected. The
//! joined key is then sanitised: ASCII letters are lowercased, `a-z`, `0-9`,
//! `_` and `-` are kept, every other character becomes `_`, and the key is
//! cut to its first 63 characters. Different values can therefore share a
//! key (`EU.west` and `eu west` both give `eu_west`). Numbers and booleans
//! are keyed by their decimal text (`42`, `0.5`, `true`).

// Native builds exist only for the unit tests and export nothing, so all but
// the tested code looks unused there; the WebAssembly build still reports
// real dead code.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::collections::HashMap;

use serde::Deserialize;

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "partitioner", path: "../../wit" });
}

use wit::strata::policy::types::{BatchKeys, Column, ColumnValues, RejectedRecord, TextValues};

/// Keys longer than this are cut; the host accepts no longer key.
const KEY_CHARS_MAX: usize = 63;

/// The config as written in the policy's TOML table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    fields: Vec<String>,
    fallback: Option<String>,
    #[serde(default = "default_separator")]
    separator: String,
    default: Option<String>,
}

fn default_separator() -> String {
    "-".to_string()
}

impl Config {
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let config: Config = serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
        let mut errors = Vec::new();
        if config.fields.is_empty() {
            errors.push("fields: name at least one field".to_string());
        }
        if config.fields.iter().chain(&config.fallback).any(|name| name.is_empty()) {
            errors.push("fields, fallback: a field name cannot be empty".to_string());
        }
        if sanitise(&config.separator) != config.separator {
            errors.push(format!("separator: `{}` has characters other than a-z, 0-9, `_` and `-`", config.separator));
        }
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }

    /// The columns `partition` reads: the fields, then the fallback.
    fn columns(&self) -> Vec<String> {
        let mut columns = self.fields.clone();
        if let Some(fallback) = &self.fallback
            && !columns.contains(fallback)
        {
            columns.push(fallback.clone());
        }
        columns
    }
}

/// The policy itself: one key, or one reason why there is none, per record.
fn partition(config: &Config, columns: &[Column], rows: usize) -> Vec<Result<String, String>> {
    if let Some(bad) = columns.iter().find(|column| value_count(&column.values) != rows) {
        let error = format!("column `{}` has {} values for {rows} records", bad.name, value_count(&bad.values));
        return vec![Err(error); rows];
    }
    let find = |name: &str| columns.iter().find(|c| c.name == name).map(|c| &c.values);
    let fields: Vec<Option<&ColumnValues>> = config.fields.iter().map(|name| find(name)).collect();
    let fallback = config.fallback.as_deref().and_then(find);

    (0..rows)
        .map(|row| {
            let mut parts = Vec::with_capacity(fields.len());
            for (name, values) in config.fields.iter().zip(&fields) {
                let part = values
                    .and_then(|values| value_text(values, row))
                    .or_else(|| fallback.and_then(|values| value_text(values, row)))
                    .or_else(|| config.default.clone())
                    .ok_or_else(|| missing_value_error(config, name))?;
                parts.push(part);
            }
            Ok(sanitise(&parts.join(&config.separator)))
        })
        .collect()
}

fn missing_value_error(config: &Config, field: &str) -> String {
    match &config.fallback {
        Some(fallback) => {
            format!("record has no `{field}` and no `{fallback}`, and no default is configured")
        }
        None => format!("record has no `{field}`, and no default is configured"),
    }
}

/// Lowercases ASCII letters, keeps `[a-z0-9_-]`, replaces any other character
/// with `_` and cuts the result to [`KEY_CHARS_MAX`] characters.
fn sanitise(key: &str) -> String {
    key.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '_',
        })
        .take(KEY_CHARS_MAX)
        .collect()
}

/// The value of one record in a column as text, or `None` when null.
fn value_text(values: &ColumnValues, row: usize) -> Option<String> {
    match values {
        ColumnValues::Text(values) => text_value(values, row).map(str::to_string),
        ColumnValues::Float(values) => values[row].map(|value| value.to_string()),
        ColumnValues::Integer(values) => values[row].map(|value| value.to_string()),
        ColumnValues::Unsigned(values) => values[row].map(|value| value.to_string()),
        ColumnValues::Boolean(values) => values[row].map(|value| value.to_string()),
        ColumnValues::Time(values) => Some(values[row].to_string()),
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
            parse(&config).columns()
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
    use crate::wit::strata::policy::types::Texts;

    /// A text column in the `text-values` form.
    fn text_values(values: &[Option<String>]) -> TextValues {
        let mut texts = TextValues { values: Texts { text: String::new(), ends: Vec::new() }, nulls: Vec::new() };
        for (row, value) in values.iter().enumerate() {
            match value {
                Some(value) => texts.values.text.push_str(value),
                None => texts.nulls.push(row as u32),
            }
            texts.values.ends.push(texts.values.text.len() as u32);
        }
        texts
    }

    fn text(name: &str, values: &[Option<&str>]) -> Column {
        let values: Vec<Option<String>> = values.iter().map(|value| value.map(str::to_string)).collect();
        Column { name: name.to_string(), values: ColumnValues::Text(text_values(&values)) }
    }

    fn config(json: &str) -> Config {
        Config::parse(json).unwrap()
    }

    #[test]
    fn validates_config() {
        let parsed = config(r#"{"fields": ["tenant"], "fallback": "region"}"#);
        assert_eq!(parsed.separator, "-");
        assert_eq!(parsed.columns(), ["tenant", "region"]);
        for bad in [
            r#"{}"#,
            r#"{"fields": []}"#,
            r#"{"fields": [""]}"#,
            r#"{"fields": ["tenant"], "separator": "/"}"#,
            r#"{"fields": ["tenant"], "separator": "-", "fallbak": "region"}"#,
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_by_field_then_fallback_then_default() {
        let columns = [text("tenant", &[Some("acme"), None, None]), text("region", &[Some("eu"), Some("us"), None])];
        let with_default = config(r#"{"fields": ["tenant"], "fallback": "region", "default": "shared"}"#);
        assert_eq!(partition(&with_default, &columns, 3), [Ok("acme".into()), Ok("us".into()), Ok("shared".into())]);
        let without_default = config(r#"{"fields": ["tenant"], "fallback": "region"}"#);
        assert_eq!(
            partition(&without_default, &columns, 3)[2],
            Err("record has no `tenant` and no `region`, and no default is configured".into())
        );
        let empty_default = config(r#"{"fields": ["tenant"], "default": ""}"#);
        assert_eq!(partition(&empty_default, &columns, 3)[1], Ok(String::new()));
    }

    #[test]
    fn joins_several_fields_of_any_kind() {
        let columns = [
            text("tenant", &[Some("acme")]),
            Column { name: "shard".into(), values: ColumnValues::Unsigned(vec![Some(7)]) },
            Column { name: "beta".into(), values: ColumnValues::Boolean(vec![Some(true)]) },
        ];
        let config = config(r#"{"fields": ["tenant", "shard", "beta"], "separator": "_"}"#);
        assert_eq!(partition(&config, &columns, 1), [Ok("acme_7_true".into())]);
    }

    #[test]
    fn treats_a_missing_column_as_null() {
        let config = config(r#"{"fields": ["tenant"], "fallback": "region"}"#);
        let columns = [text("region", &[Some("eu")])];
        assert_eq!(partition(&config, &columns, 1), [Ok("eu".into())]);
    }

    #[test]
    fn rejects_every_record_when_a_column_has_the_wrong_length() {
        let config = config(r#"{"fields": ["tenant"]}"#);
        let keys = partition(&config, &[text("tenant", &[Some("a")])], 2);
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(Result::is_err));
    }

    #[test]
    fn sanitises_keys() {
        let cases = [
            ("acme", "acme"),
            ("ACME Corp.", "acme_corp_"),
            ("eu-west_1", "eu-west_1"),
            ("zürich", "z_rich"),
            ("a/b\\c", "a_b_c"),
            ("", ""),
        ];
        for (raw, expected) in cases {
            assert_eq!(sanitise(raw), expected, "{raw}");
        }
        assert_eq!(sanitise(&"x".repeat(100)).len(), KEY_CHARS_MAX);
    }
}
