//! Built-in partitioner `partition-by-hash`: spreads records over a fixed
//! number of buckets by a hash of some fields.
//!
//! ```toml
//! fields = ["host"]   # required, at least one
//! buckets = 16        # 1 to 4096
//! ```
//!
//! The hash is 64-bit FNV-1a over the fields' values as UTF-8 text, joined
//! with the byte 0x1f (unit separator). Numbers and booleans are hashed as
//! their decimal text (`42`, `0.5`, `true`); a null or missing value is
//! hashed as the empty string. The key is `b` followed by the hash modulo
//! `buckets`, zero-padded to the width of `buckets - 1`: `b00` to `b15` for
//! 16 buckets. Changing `buckets` moves most records to another key.

// Native builds exist only for the unit tests and export nothing, so all but
// the tested code looks unused there; the WebAssembly build still reports
// real dead code.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::borrow::Cow;

use serde::Deserialize;
use strata_guest::fnv1a_64;

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "partitioner", path: "../../wit" });
}

use wit::strata::policy::types::{BatchKeys, Column, ColumnValues, RejectedRecord, TextValues};

/// More buckets than this is a configuration mistake, not a partitioning.
const BUCKETS_MAX: u32 = 4096;

/// Joins field values before hashing (ASCII unit separator).
const FIELD_SEPARATOR: u8 = 0x1f;

/// The config as written in the policy's TOML table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    fields: Vec<String>,
    buckets: u32,
}

impl Config {
    fn parse(json: &str) -> Result<Config, Vec<String>> {
        let config: Config = serde_json::from_str(json).map_err(|error| vec![format!("config: {error}")])?;
        let mut errors = Vec::new();
        if config.fields.is_empty() {
            errors.push("fields: name at least one field".to_string());
        }
        if config.fields.iter().any(String::is_empty) {
            errors.push("fields: a field name cannot be empty".to_string());
        }
        if !(1..=BUCKETS_MAX).contains(&config.buckets) {
            errors.push(format!("buckets: {} is not between 1 and {BUCKETS_MAX}", config.buckets));
        }
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }
}

/// The policy itself: one bucket key per record. Each bucket's key is
/// formatted once, the first time a record lands in it.
fn partition(config: &Config, columns: &[Column], rows: usize) -> BatchKeys {
    if let Some(bad) = columns.iter().find(|column| value_count(&column.values) != rows) {
        let message = format!("column `{}` has {} values for {rows} records", bad.name, value_count(&bad.values));
        return BatchKeys {
            keys: Vec::new(),
            record_keys: vec![0; rows],
            rejected: (0..rows as u32).map(|row| RejectedRecord { row, message: message.clone() }).collect(),
        };
    }
    let find = |name: &str| columns.iter().find(|c| c.name == name).map(|c| &c.values);
    let fields: Vec<Option<&ColumnValues>> = config.fields.iter().map(|name| find(name)).collect();
    let width = (config.buckets - 1).to_string().len();

    let mut keys = Vec::new();
    // The index in `keys` of each bucket's key, once it has one.
    let mut key_of_bucket: Vec<Option<u32>> = vec![None; config.buckets as usize];
    let mut bytes = Vec::new();
    let record_keys = (0..rows)
        .map(|row| {
            bytes.clear();
            for (index, values) in fields.iter().enumerate() {
                if index > 0 {
                    bytes.push(FIELD_SEPARATOR);
                }
                if let Some(text) = values.and_then(|values| value_text(values, row)) {
                    bytes.extend_from_slice(text.as_bytes());
                }
            }
            let bucket = fnv1a_64(&bytes) % u64::from(config.buckets);
            *key_of_bucket[bucket as usize].get_or_insert_with(|| {
                keys.push(format!("b{bucket:0width$}"));
                (keys.len() - 1) as u32
            })
        })
        .collect();
    BatchKeys { keys, record_keys, rejected: Vec::new() }
}

/// The value of one record in a column as text, or `None` when null.
fn value_text(values: &ColumnValues, row: usize) -> Option<Cow<'_, str>> {
    match values {
        ColumnValues::Text(values) => text_value(values, row).map(Cow::Borrowed),
        ColumnValues::Float(values) => values[row].map(|value| value.to_string().into()),
        ColumnValues::Integer(values) => values[row].map(|value| value.to_string().into()),
        ColumnValues::Unsigned(values) => values[row].map(|value| value.to_string().into()),
        ColumnValues::Boolean(values) => values[row].map(|value| value.to_string().into()),
        ColumnValues::Time(values) => Some(values[row].to_string().into()),
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
    use super::{Config, partition};

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
            parse(&config).fields
        }

        fn partition(config: String, columns: Vec<Column>, rows: u32) -> BatchKeys {
            partition(&parse(&config), &columns, rows as usize)
        }
    }

    #[cfg(target_arch = "wasm32")]
    super::wit::export!(Policy with_types_in super::wit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::strata::policy::types::Texts;

    fn text(name: &str, values: &[Option<&str>]) -> Column {
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

    /// The key of every record, in order.
    fn keys(config: &Config, columns: &[Column], rows: usize) -> Vec<String> {
        let answer = partition(config, columns, rows);
        assert!(answer.rejected.is_empty());
        answer.record_keys.iter().map(|&key| answer.keys[key as usize].clone()).collect()
    }

    fn config(json: &str) -> Config {
        Config::parse(json).unwrap()
    }

    #[test]
    fn validates_config() {
        assert_eq!(config(r#"{"fields": ["host"], "buckets": 16}"#).buckets, 16);
        for bad in [
            r#"{"fields": ["host"]}"#,
            r#"{"fields": [], "buckets": 16}"#,
            r#"{"fields": ["host"], "buckets": 0}"#,
            r#"{"fields": ["host"], "buckets": 5000}"#,
            r#"{"fields": ["host"], "buckets": -1}"#,
            r#"{"fields": ["host"], "buckets": 16, "seed": 1}"#,
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_with_fnv1a_64() {
        // Reference values of the FNV-1a specification.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn formats_zero_padded_bucket_keys() {
        let columns = [text("host", &[Some("a")])];
        let key = |buckets: u32| {
            let config = config(&format!(r#"{{"fields": ["host"], "buckets": {buckets}}}"#));
            keys(&config, &columns, 1).remove(0)
        };
        // fnv1a_64("a") = 0xaf63dc4c8601ec8c = 12638187200555641996.
        assert_eq!(key(1), "b0");
        assert_eq!(key(10), format!("b{}", 12_638_187_200_555_641_996u64 % 10));
        assert_eq!(key(16), "b12");
        assert_eq!(key(100), "b96");
        assert_eq!(key(101).len(), 4);
    }

    #[test]
    fn hashes_several_fields_joined_with_unit_separator() {
        let columns = [text("host", &[Some("a"), None]), text("dc", &[Some("b"), Some("b")])];
        let config = config(r#"{"fields": ["host", "dc"], "buckets": 4096}"#);
        let keys = keys(&config, &columns, 2);
        assert_eq!(keys[0], format!("b{:04}", fnv1a_64(b"a\x1fb") % 4096));
        assert_eq!(keys[1], format!("b{:04}", fnv1a_64(b"\x1fb") % 4096));
    }

    #[test]
    fn spreads_records_over_all_buckets() {
        let hosts: Vec<String> = (0..1000).map(|i| format!("host-{i}")).collect();
        let values = hosts.iter().map(|host| Some(host.as_str())).collect::<Vec<_>>();
        let config = config(r#"{"fields": ["host"], "buckets": 16}"#);
        let mut keys: Vec<String> = keys(&config, &[text("host", &values)], 1000);
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 16);
        assert_eq!((keys.first().unwrap().as_str(), keys.last().unwrap().as_str()), ("b00", "b15"));
    }
}
