//! `{{name}}`: a partitioner. As scaffolded it keys each record by the value
//! of one field, lowercased, with characters outside `[a-z0-9_-]` turned
//! into `_`; a record without the field goes to the unkeyed partition.
//!
//! ```toml
//! [config]
//! field = "tenant"
//! ```
//!
//! Edit the places marked `EDIT:`. The contract is `wit/policy.wit`; the
//! helpers (text access, config checks) are in `src/guest.rs`. A partitioner
//! runs on the write path, once per write request: keep it linear.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

// The guest helpers (a copy of plugins/guest); a policy uses some of them.
#[allow(dead_code)]
mod guest;

use std::collections::HashMap;

use guest::ConfigReader;

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "partitioner", path: "wit" });
}

use wit::strata::policy::types::{BatchKeys, Column, ColumnValues, RejectedRecord};

/// Keys longer than this are cut; the host accepts no longer key.
const KEY_CHARS_MAX: usize = 63;

/// EDIT: the config: the keys of the policy file's `[config]` table.
#[derive(Debug)]
struct Config {
    field: String,
}

impl Config {
    /// Reads and checks the config, reporting every problem at once
    /// (unknown keys included).
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let mut config = ConfigReader::new(json)?;
        // EDIT: read your keys; `config.problem(…)` reports a bad value.
        let field: String = config.or("field", "tenant".to_string());
        if field.is_empty() {
            config.problem("field: name a column");
        }
        config.finish()?;
        Ok(Config { field })
    }

    /// EDIT: the columns `partition` reads (asked once per version).
    fn columns(&self) -> Vec<String> {
        vec![self.field.clone()]
    }
}

/// EDIT: the policy: the key of each record, or why it has none. Columns
/// the batch lacks are absent: treat them as null in every record.
fn partition(config: &Config, columns: &[Column], rows: usize) -> Vec<Result<String, String>> {
    let field = columns.iter().find(|c| c.name == config.field);
    (0..rows).map(|row| Ok(field.and_then(|c| value_text(&c.values, row)).map(sanitise).unwrap_or_default())).collect()
}

/// Lowercases ASCII letters, keeps `[a-z0-9_-]`, replaces any other character
/// with `_` and cuts the key to [`KEY_CHARS_MAX`] characters.
fn sanitise(value: String) -> String {
    value
        .chars()
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
        ColumnValues::Text(values) => {
            let null = values.nulls.binary_search(&(row as u32)).is_ok();
            (!null).then(|| guest::text(&values.values.text, &values.values.ends, row).to_string())
        }
        ColumnValues::Float(values) => values[row].map(|value| value.to_string()),
        ColumnValues::Integer(values) => values[row].map(|value| value.to_string()),
        ColumnValues::Unsigned(values) => values[row].map(|value| value.to_string()),
        ColumnValues::Boolean(values) => values[row].map(|value| value.to_string()),
        ColumnValues::Time(values) => Some(values[row].to_string()),
    }
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

/// Glue between the `partitioner` world and the functions above.
#[allow(unsafe_code)] // `export!` expands to the component's ABI functions.
mod component {
    use super::wit::strata::policy::types::{BatchKeys, Column};
    use super::{Config, batch_keys, partition};

    struct Policy;

    /// The host never calls `columns` or `partition` with a rejected config.
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
    use crate::wit::strata::policy::types::{TextValues, Texts};

    fn text_column(name: &str, values: &[Option<&str>]) -> Column {
        let mut texts = TextValues { values: Texts { text: String::new(), ends: Vec::new() }, nulls: Vec::new() };
        for (row, value) in values.iter().enumerate() {
            match value {
                Some(value) => texts.values.text.push_str(value),
                None => texts.nulls.push(row as u32),
            }
            texts.values.ends.push(texts.values.text.len() as u32);
        }
        Column { name: name.to_string(), values: ColumnValues::Text(texts) }
    }

    #[test]
    fn every_config_problem_is_reported() {
        assert_eq!(Config::parse("{}").unwrap().field, "tenant");
        let errors = Config::parse(r#"{"field": "", "fields": ["a"]}"#).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn keys_records_by_the_field() {
        let config = Config::parse(r#"{"field": "tenant"}"#).unwrap();
        let columns = [text_column("tenant", &[Some("Acme Corp"), None, Some("acme corp")])];
        let keys = partition(&config, &columns, 3);
        assert_eq!(keys, [Ok("acme_corp".to_string()), Ok(String::new()), Ok("acme_corp".to_string())]);
        let answer = batch_keys(keys);
        assert_eq!(answer.keys, ["acme_corp", ""]);
        assert_eq!(answer.record_keys, [0, 1, 0]);
    }
}
