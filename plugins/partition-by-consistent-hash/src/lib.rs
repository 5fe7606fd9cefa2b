//! Built-in partitioner `partition-by-consistent-hash`: assigns records to
//! named nodes on a consistent-hash ring, so adding or removing a node moves
//! only the records of that node.
//!
//! ```toml
//! fields = ["host"]            # required, at least one
//! nodes = ["n1", "n2", "n3"]   # required; names from [a-z0-9_-], 1 to 63 chars
//! virtual_nodes = 64           # points per node on the ring; default 64, at most 1024
//! ```
//!
//! The ring holds, for each node and each `i` in `0..virtual_nodes`, the
//! 64-bit FNV-1a hash of `"{node}#{i}"`. A record is hashed like
//! `partition-by-hash` does (FNV-1a over the fields' values joined with 0x1f,
//! null as the empty string) and belongs to the first ring point at or after
//! its hash, wrapping around. The key is that point's node name. Points with
//! equal hashes are ordered by node name, so the order of `nodes` does not
//! matter.

// Native builds exist only for the unit tests and export nothing, so all but
// the tested code looks unused there; the WebAssembly build still reports
// real dead code.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::collections::HashMap;

use serde::Deserialize;
use strata_guest::fnv1a_64;

#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated code.
mod wit {
    wit_bindgen::generate!({ world: "partitioner", path: "../../wit" });
}

use wit::strata::policy::types::{BatchKeys, Column, ColumnValues, RejectedRecord, TextValues};

/// Node names become partition keys, which the host caps at 63 characters.
const NODE_NAME_CHARS_MAX: usize = 63;
/// Bounds the ring: nodes × virtual nodes points, built on every call.
const NODES_MAX: usize = 1024;
const VIRTUAL_NODES_MAX: u32 = 1024;

/// Joins field values before hashing (ASCII unit separator).
const FIELD_SEPARATOR: u8 = 0x1f;

/// The config as written in the policy's TOML table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    fields: Vec<String>,
    nodes: Vec<String>,
    #[serde(default = "default_virtual_nodes")]
    virtual_nodes: u32,
}

fn default_virtual_nodes() -> u32 {
    64
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
        if !(1..=NODES_MAX).contains(&config.nodes.len()) {
            errors.push(format!("nodes: name between 1 and {NODES_MAX} nodes"));
        }
        for (index, node) in config.nodes.iter().enumerate() {
            let valid_chars = node.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'));
            if !valid_chars || node.is_empty() || node.len() > NODE_NAME_CHARS_MAX {
                errors.push(format!(
                    "nodes: `{node}` is not 1 to {NODE_NAME_CHARS_MAX} characters from a-z, 0-9, `_` and `-`"
                ));
            }
            if config.nodes[..index].contains(node) {
                errors.push(format!("nodes: `{node}` is listed twice"));
            }
        }
        if !(1..=VIRTUAL_NODES_MAX).contains(&config.virtual_nodes) {
            errors.push(format!("virtual_nodes: {} is not between 1 and {VIRTUAL_NODES_MAX}", config.virtual_nodes));
        }
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }
}

/// The hash ring: points sorted by hash, each owned by a node.
struct Ring<'a> {
    points: Vec<(u64, &'a str)>,
}

impl<'a> Ring<'a> {
    fn new(config: &'a Config) -> Ring<'a> {
        let mut points = Vec::with_capacity(config.nodes.len() * config.virtual_nodes as usize);
        for node in &config.nodes {
            for i in 0..config.virtual_nodes {
                points.push((fnv1a_64(format!("{node}#{i}").as_bytes()), node.as_str()));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The node owning `hash`: the first point at or after it, wrapping around.
    fn owner(&self, hash: u64) -> &'a str {
        let index = self.points.partition_point(|(point, _)| *point < hash);
        self.points[index % self.points.len()].1
    }
}

/// The policy itself: one node name per record.
fn partition(config: &Config, columns: &[Column], rows: usize) -> Vec<Result<String, String>> {
    if let Some(bad) = columns.iter().find(|column| value_count(&column.values) != rows) {
        let error = format!("column `{}` has {} values for {rows} records", bad.name, value_count(&bad.values));
        return vec![Err(error); rows];
    }
    let find = |name: &str| columns.iter().find(|c| c.name == name).map(|c| &c.values);
    let fields: Vec<Option<&ColumnValues>> = config.fields.iter().map(|name| find(name)).collect();
    let ring = Ring::new(config);

    let mut bytes = Vec::new();
    (0..rows)
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
            Ok(ring.owner(fnv1a_64(&bytes)).to_string())
        })
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
            parse(&config).fields
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

    fn hosts(count: usize) -> Column {
        let values: Vec<Option<String>> = (0..count).map(|i| Some(format!("host-{i}"))).collect();
        Column { name: "host".to_string(), values: ColumnValues::Text(text_values(&values)) }
    }

    fn config(json: &str) -> Config {
        Config::parse(json).unwrap()
    }

    #[test]
    fn validates_config() {
        assert_eq!(config(r#"{"fields": ["host"], "nodes": ["n1"]}"#).virtual_nodes, 64);
        let cases: &[(&str, usize)] = &[
            (r#"{"fields": ["host"]}"#, 1),
            (r#"{"fields": ["host"], "nodes": []}"#, 1),
            (r#"{"fields": ["host"], "nodes": ["n1", "n1"]}"#, 1),
            (r#"{"fields": ["host"], "nodes": ["N1", ""]}"#, 2),
            (r#"{"fields": [], "nodes": ["n1"], "virtual_nodes": 0}"#, 2),
            (r#"{"fields": ["host"], "nodes": ["n1"], "replicas": 2}"#, 1),
        ];
        for (json, error_count) in cases {
            let errors = Config::parse(json).unwrap_err();
            assert_eq!(errors.len(), *error_count, "{json}: {errors:?}");
        }
    }

    #[test]
    fn wraps_around_the_ring() {
        let config = config(r#"{"fields": ["host"], "nodes": ["n1", "n2"], "virtual_nodes": 1}"#);
        let ring = Ring::new(&config);
        let (first_hash, first_node) = ring.points[0];
        let (last_hash, _) = ring.points[1];
        assert_eq!(ring.owner(0), first_node);
        assert_eq!(ring.owner(first_hash), first_node);
        assert_eq!(ring.owner(last_hash.wrapping_add(1)), first_node);
    }

    #[test]
    fn uses_every_node_and_ignores_their_order() {
        let forward = config(r#"{"fields": ["host"], "nodes": ["n1", "n2", "n3"]}"#);
        let backward = config(r#"{"fields": ["host"], "nodes": ["n3", "n2", "n1"]}"#);
        let keys = partition(&forward, &[hosts(1000)], 1000);
        assert_eq!(keys, partition(&backward, &[hosts(1000)], 1000));
        for node in ["n1", "n2", "n3"] {
            let share = keys.iter().filter(|key| key.as_deref() == Ok(node)).count();
            assert!((150..=550).contains(&share), "{node} owns {share} of 1000");
        }
    }

    #[test]
    fn adding_a_node_moves_only_records_to_that_node() {
        let before = config(r#"{"fields": ["host"], "nodes": ["n1", "n2", "n3"]}"#);
        let after = config(r#"{"fields": ["host"], "nodes": ["n1", "n2", "n3", "n4"]}"#);
        let old = partition(&before, &[hosts(1000)], 1000);
        let new = partition(&after, &[hosts(1000)], 1000);
        for (old, new) in old.iter().zip(&new) {
            assert!(old == new || new.as_deref() == Ok("n4"), "{old:?} moved to {new:?}");
        }
    }
}
