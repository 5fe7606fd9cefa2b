//! The facts fixture `test` evaluates a component against: a JSON file in
//! the shape of the server's `GET /v1/datasets/{ds}/partitions` answer, so
//! `curl …/partitions > facts.json` is a fixture. Documented, with an
//! example, in plugins/README.md.
//!
//! ```json
//! {
//!   "now": "2026-06-01T00:00:00Z",
//!   "config": {"max_age": "90d"},
//!   "dataset": {"name": "cpu", "period": "day", "columns": [{"name": "host", "kind": "tag"}]},
//!   "partitions": [{"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-01-02T00:00:00Z", "rows": 10}],
//!   "records": [{"host": "a", "time": "2026-06-01T00:00:00Z"}]
//! }
//! ```
//!
//! Times are RFC 3339 or nanoseconds since the epoch. Every partition field
//! but `period_start` and `period_end` has a default; fields the fixture
//! does not know (`files`, `buffered_rows`) are ignored.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use strata_sandbox::facts::{ColumnBatch, ColumnValues, DatasetFacts, PartitionFacts};
use strata_sandbox::schema::ColumnKind;
use strata_sandbox::tier::Tier;

/// A parsed fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// The evaluation time (RFC 3339 or epoch ns); `--now` overrides it.
    #[serde(default)]
    now: Option<Value>,
    /// The policy's config; `--config` overrides it.
    #[serde(default)]
    config: Option<serde_json::Map<String, Value>>,
    /// The dataset: its name, or an object like `GET /v1/datasets/{ds}`'s.
    dataset: DatasetEntry,
    /// The partitions, for retention, tiering and archival.
    #[serde(default)]
    partitions: Vec<PartitionEntry>,
    /// The records of one write, for a partitioner: one object per record.
    #[serde(default)]
    records: Vec<serde_json::Map<String, Value>>,
    /// `GET …/partitions` answers carry a cursor; a fixture ignores it.
    #[serde(default, rename = "next_cursor")]
    _next_cursor: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DatasetEntry {
    Name(String),
    Full(DatasetObject),
}

#[derive(Debug, Deserialize)]
struct DatasetObject {
    name: String,
    #[serde(default = "default_period")]
    period: String,
    #[serde(default = "default_time_column")]
    time_column: String,
    #[serde(default)]
    columns: Vec<ColumnEntry>,
}

#[derive(Debug, Deserialize)]
struct ColumnEntry {
    name: String,
    kind: ColumnKind,
}

fn default_period() -> String {
    "day".to_string()
}

fn default_time_column() -> String {
    "time".to_string()
}

/// One partition, as the server lists it (unknown fields ignored).
#[derive(Debug, Deserialize)]
struct PartitionEntry {
    id: Option<String>,
    period_label: Option<String>,
    period_start: Value,
    period_end: Value,
    #[serde(default)]
    key: String,
    #[serde(default = "default_tier")]
    tier: String,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    rows: u64,
    #[serde(default)]
    bytes: u64,
    min_time: Option<Value>,
    max_time: Option<Value>,
    created_at: Option<Value>,
    last_written_at: Option<Value>,
    file_count: Option<u32>,
    files: Option<Vec<Value>>,
    #[serde(default)]
    archived: bool,
}

fn default_tier() -> String {
    "hot".to_string()
}

/// Nanoseconds since the epoch from an RFC 3339 string or an integer.
pub(crate) fn time_ns(value: &Value, what: &str) -> anyhow::Result<i64> {
    match value {
        Value::Number(number) => number.as_i64().with_context(|| format!("{what}: {number} is not an integer")),
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .and_then(|time| time.timestamp_nanos_opt())
            .with_context(|| format!("{what}: {text:?} is not an RFC 3339 time like 2026-06-01T00:00:00Z")),
        other => bail!("{what}: {other} is neither an RFC 3339 time nor nanoseconds"),
    }
}

/// RFC 3339 in UTC, for printing.
pub(crate) fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl Fixture {
    /// Reads a fixture file.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Fixture> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a facts fixture", path.display()))
    }

    /// The evaluation time in the fixture, if any.
    pub fn now_ns(&self) -> anyhow::Result<Option<i64>> {
        self.now.as_ref().map(|now| time_ns(now, "now")).transpose()
    }

    /// The config in the fixture, as JSON text.
    pub fn config(&self) -> Option<String> {
        self.config.as_ref().map(|config| Value::Object(config.clone()).to_string())
    }

    /// The dataset's facts.
    pub fn dataset(&self) -> DatasetFacts {
        match &self.dataset {
            DatasetEntry::Name(name) => DatasetFacts {
                name: name.clone(),
                period: default_period(),
                time_column: default_time_column(),
                columns: vec![(default_time_column(), ColumnKind::Time)],
            },
            DatasetEntry::Full(dataset) => {
                let mut columns = vec![(dataset.time_column.clone(), ColumnKind::Time)];
                columns.extend(
                    dataset.columns.iter().filter(|c| c.name != dataset.time_column).map(|c| (c.name.clone(), c.kind)),
                );
                DatasetFacts {
                    name: dataset.name.clone(),
                    period: dataset.period.clone(),
                    time_column: dataset.time_column.clone(),
                    columns,
                }
            }
        }
    }

    /// The partitions' facts, in fixture order; every problem is reported.
    pub fn partitions(&self) -> anyhow::Result<Vec<PartitionFacts>> {
        let dataset = self.dataset().name;
        let mut problems = Vec::new();
        let mut facts = Vec::new();
        for (index, entry) in self.partitions.iter().enumerate() {
            match entry.facts(&dataset) {
                Ok(partition) => facts.push(partition),
                Err(error) => problems.push(format!("partitions[{index}]: {error:#}")),
            }
        }
        if !problems.is_empty() {
            bail!("the fixture's partitions are invalid:\n  {}", problems.join("\n  "));
        }
        Ok(facts)
    }

    /// The records as a batch of the named columns, and the record count.
    pub fn batch(&self, wanted: &[String]) -> anyhow::Result<(Vec<ColumnBatch>, u32)> {
        let dataset = self.dataset();
        let kinds: BTreeMap<&str, ColumnKind> = dataset.columns.iter().map(|(n, k)| (n.as_str(), *k)).collect();
        let mut columns = Vec::new();
        for name in wanted {
            let values: Vec<&Value> = self.records.iter().map(|r| r.get(name).unwrap_or(&Value::Null)).collect();
            let kind = kinds.get(name.as_str()).copied().unwrap_or_else(|| infer_kind(&values));
            let values = column_values(name, kind, &values)?;
            columns.push(ColumnBatch { name: name.clone(), values });
        }
        Ok((columns, self.records.len() as u32))
    }

    /// True when the fixture has records (a partitioner's input).
    pub fn has_records(&self) -> bool {
        !self.records.is_empty()
    }
}

impl PartitionEntry {
    fn facts(&self, dataset: &str) -> anyhow::Result<PartitionFacts> {
        let period_start_ns = time_ns(&self.period_start, "period_start")?;
        let period_end_ns = time_ns(&self.period_end, "period_end")?;
        let optional = |value: &Option<Value>, what: &str| -> anyhow::Result<Option<i64>> {
            value.as_ref().filter(|v| !v.is_null()).map(|v| time_ns(v, what)).transpose()
        };
        let tier = Tier::parse(&self.tier)
            .with_context(|| format!("tier {:?} must be hot, warm, cold or archived", self.tier))?;
        let period_label = self.period_label.clone().unwrap_or_else(|| rfc3339(period_start_ns)[..10].to_string());
        let id = self.id.clone().unwrap_or_else(|| match self.key.as_str() {
            "" => format!("{dataset}/{period_label}"),
            key => format!("{dataset}/{period_label}/{key}"),
        });
        Ok(PartitionFacts {
            id,
            dataset: dataset.to_string(),
            period_label,
            period_start_ns,
            period_end_ns,
            key: self.key.clone(),
            tier,
            read_only: self.read_only,
            rows: self.rows,
            bytes: self.bytes,
            min_time_ns: optional(&self.min_time, "min_time")?,
            max_time_ns: optional(&self.max_time, "max_time")?,
            created_at_ns: optional(&self.created_at, "created_at")?.unwrap_or(period_start_ns),
            last_written_at_ns: optional(&self.last_written_at, "last_written_at")?.unwrap_or(period_end_ns),
            file_count: self.file_count.or(self.files.as_ref().map(|f| f.len() as u32)).unwrap_or(1),
            archived: self.archived || tier == Tier::Archived,
        })
    }
}

fn infer_kind(values: &[&Value]) -> ColumnKind {
    match values.iter().find(|v| !v.is_null()) {
        Some(Value::Bool(_)) => ColumnKind::Boolean,
        Some(Value::Number(n)) if n.is_i64() => ColumnKind::Integer,
        Some(Value::Number(n)) if n.is_u64() => ColumnKind::Unsigned,
        Some(Value::Number(_)) => ColumnKind::Float,
        _ => ColumnKind::Text,
    }
}

fn column_values(name: &str, kind: ColumnKind, values: &[&Value]) -> anyhow::Result<ColumnValues> {
    let wrong = |row: usize| anyhow::anyhow!("records[{row}].{name}: not a {} value", kind.as_str());
    Ok(match kind {
        ColumnKind::Tag | ColumnKind::Text => ColumnValues::Text(
            values
                .iter()
                .map(|v| v.as_str().map(str::to_string).or_else(|| (!v.is_null()).then(|| v.to_string())))
                .collect(),
        ),
        ColumnKind::Float => ColumnValues::Float(collect(values, Value::as_f64, wrong)?),
        ColumnKind::Integer => ColumnValues::Integer(collect(values, Value::as_i64, wrong)?),
        ColumnKind::Unsigned => ColumnValues::Unsigned(collect(values, Value::as_u64, wrong)?),
        ColumnKind::Boolean => ColumnValues::Boolean(collect(values, Value::as_bool, wrong)?),
        ColumnKind::Time => ColumnValues::Time(
            values
                .iter()
                .enumerate()
                .map(|(row, v)| time_ns(v, &format!("records[{row}].{name}")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn collect<T>(
    values: &[&Value],
    get: impl Fn(&Value) -> Option<T>,
    wrong: impl Fn(usize) -> anyhow::Error,
) -> anyhow::Result<Vec<Option<T>>> {
    values
        .iter()
        .enumerate()
        .map(|(row, v)| if v.is_null() { Ok(None) } else { get(v).map(Some).ok_or_else(|| wrong(row)) })
        .collect()
}
