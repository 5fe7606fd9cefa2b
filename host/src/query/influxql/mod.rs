//! InfluxQL: the subset Grafana's InfluxDB data source and the `influx` 1.x
//! shell send, parsed (`parse`) and translated onto the structured query
//! (`plan::QueryRequest`); answers are shaped as InfluxDB's series (`series`).
//!
//! **Invariant:** no InfluxQL text becomes SQL text: a SELECT becomes a
//! `QueryRequest`, whose identifiers the planner checks and whose values
//! it binds.
//!
//! Measurement mapping: a statement reads the dataset named by `db` when
//! that dataset exists, else the dataset named like the measurement. When
//! the dataset has a `_measurement` column (line protocol writes one), only
//! rows whose `_measurement` is the measurement are read.

mod parse;
pub mod series;

use serde_json::{Value as Json, json};

use super::plan::{Aggregation, Downsample, Fill, Filter, Order, QueryRequest, TimeRange};
use crate::schema::{ColumnKind, DatasetSchema};

pub use parse::parse;

/// The column line protocol stores a point's measurement in.
pub const MEASUREMENT_COLUMN: &str = "_measurement";

/// One InfluxQL statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `SHOW DATABASES`.
    ShowDatabases,
    /// `SHOW RETENTION POLICIES [ON db]`.
    ShowRetentionPolicies,
    /// `SHOW MEASUREMENTS [ON db] [WITH MEASUREMENT = m | =~ /re/] [LIMIT n]`.
    ShowMeasurements {
        /// Which names to list.
        matching: Option<NameMatch>,
        /// At most this many.
        limit: Option<u64>,
    },
    /// `SHOW TAG KEYS [FROM m]`.
    ShowTagKeys {
        /// The measurement.
        from: Option<String>,
    },
    /// `SHOW FIELD KEYS [FROM m]`.
    ShowFieldKeys {
        /// The measurement.
        from: Option<String>,
    },
    /// `SHOW TAG VALUES [FROM m] WITH KEY = k | IN (…) [WHERE …]`.
    ShowTagValues {
        /// The measurement.
        from: Option<String>,
        /// The tag keys.
        keys: Vec<String>,
        /// Row condition.
        condition: Option<Cond>,
    },
    /// A SELECT.
    Select(Select),
}

/// `WITH MEASUREMENT = "m"` or `=~ /[(?i)]text/` (Grafana's typeahead).
#[derive(Debug, Clone, PartialEq)]
pub struct NameMatch {
    /// The text.
    pub text: String,
    /// The whole name (`=`, `/^m$/`), else a substring.
    pub exact: bool,
    /// `(?i)`: letters match either case.
    pub case_insensitive: bool,
}

impl NameMatch {
    /// From a regex of literals, `(?i)` and `^…$` allowed; `None` otherwise.
    pub fn from_regex(re: &str) -> Option<NameMatch> {
        let (case_insensitive, re) = match re.strip_prefix("(?i)") {
            Some(rest) => (true, rest),
            None => (false, re),
        };
        if let Some(values) = anchored_literals(re) {
            let [text] = values.as_slice() else { return None };
            return Some(NameMatch { text: text.clone(), exact: true, case_insensitive });
        }
        let values = anchored_literals(&format!("^{re}$"))?;
        let [text] = values.as_slice() else { return None };
        Some(NameMatch { text: text.clone(), exact: false, case_insensitive })
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let (name, text) = if self.case_insensitive {
            (name.to_lowercase(), self.text.to_lowercase())
        } else {
            (name.to_string(), self.text.clone())
        };
        if self.exact { name == text } else { name.contains(&text) }
    }
}

/// One selected field: `fn(column[, argument]) [AS alias]` or `column`.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The aggregate, lowercased; `None` for a raw column.
    pub function: Option<String>,
    /// The column, or `*`.
    pub column: String,
    /// `percentile`'s N.
    pub argument: Option<f64>,
    /// `AS` name.
    pub alias: Option<String>,
}

/// A WHERE condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Both.
    And(Box<Cond>, Box<Cond>),
    /// Either.
    Or(Box<Cond>, Box<Cond>),
    /// `time op expr`.
    Time(&'static str, TimeExpr),
    /// `column op value`.
    Compare(String, &'static str, Json),
    /// `column =~ /re/` (true) or `!~` (false).
    Regex(String, bool, String),
}

/// `now() ± d` or an absolute time ± d.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeExpr {
    /// Relative to the statement's `now`.
    pub now: bool,
    /// Epoch ns (absolute) or offset from now.
    pub offset_ns: i64,
}

/// `fill(…)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FillMode {
    /// Empty buckets are null (InfluxQL's default).
    Null,
    /// Empty buckets are left out.
    None,
    /// Empty buckets repeat the previous value.
    Previous,
    /// Empty buckets hold this number.
    Value(f64),
}

/// A SELECT statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// The fields.
    pub fields: Vec<Field>,
    /// The measurement.
    pub measurement: String,
    /// WHERE.
    pub condition: Option<Cond>,
    /// `GROUP BY time(d)`.
    pub interval_ns: Option<i64>,
    /// `GROUP BY tag, …`.
    pub group_tags: Vec<String>,
    /// `GROUP BY *`.
    pub group_all_tags: bool,
    /// `fill(…)`.
    pub fill: Option<FillMode>,
    /// `ORDER BY time DESC`.
    pub descending: bool,
    /// `LIMIT`.
    pub limit: Option<u64>,
    /// `OFFSET`.
    pub offset: Option<u64>,
}

impl Select {
    fn new(fields: Vec<Field>, measurement: String) -> Select {
        Select {
            fields,
            measurement,
            condition: None,
            interval_ns: None,
            group_tags: Vec::new(),
            group_all_tags: false,
            fill: None,
            descending: false,
            limit: None,
            offset: None,
        }
    }

    /// Whether the statement aggregates.
    pub fn aggregates(&self) -> bool {
        self.fields.iter().any(|f| f.function.is_some())
    }
}

/// Output columns: (result column, InfluxQL name).
pub type OutputColumns = Vec<(String, String)>;

/// A SELECT translated: the structured request and how to shape its answer.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The structured query.
    pub request: QueryRequest,
    /// Output columns of the answer, in order, after `time`: (result
    /// column, InfluxQL name).
    pub columns: OutputColumns,
    /// Tag columns that split the answer into series.
    pub series_tags: Vec<String>,
    /// A number replacing nulls (`fill(<value>)`).
    pub fill_value: Option<f64>,
    /// The time every row is labelled with (an aggregate over all time is
    /// labelled with the epoch, as InfluxDB does).
    pub fixed_time: Option<i64>,
    /// Rows per series (LIMIT), applied when shaping.
    pub limit: Option<u64>,
    /// Rows skipped per series (OFFSET), applied when shaping.
    pub offset: u64,
}

/// InfluxQL's aggregate names onto the structured query's.
fn aggregate_name(function: &str) -> Option<&'static str> {
    Some(match function {
        "mean" => "avg",
        "median" => "median",
        "count" => "count",
        "sum" => "sum",
        "min" => "min",
        "max" => "max",
        "first" => "first",
        "last" => "last",
        "percentile" => "percentile",
        _ => return None,
    })
}

/// The time bounds a condition's top-level `AND`s impose, `[start, end)`.
fn time_bounds(cond: &Cond, now: i64, bounds: &mut (Option<i64>, Option<i64>)) -> Result<(), String> {
    match cond {
        Cond::And(a, b) => {
            time_bounds(a, now, bounds)?;
            time_bounds(b, now, bounds)
        }
        Cond::Time(op, expr) => {
            let at = if expr.now { now.saturating_add(expr.offset_ns) } else { expr.offset_ns };
            let (start, end) = match *op {
                ">" => (Some(at.saturating_add(1)), None),
                ">=" => (Some(at), None),
                "<" => (None, Some(at)),
                "<=" => (None, Some(at.saturating_add(1))),
                "=" => (Some(at), Some(at.saturating_add(1))),
                other => return Err(format!("time {other} … is not supported: use <, <=, >, >= or =")),
            };
            if let Some(start) = start {
                bounds.0 = Some(bounds.0.map_or(start, |s: i64| s.max(start)));
            }
            if let Some(end) = end {
                bounds.1 = Some(bounds.1.map_or(end, |e: i64| e.min(end)));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The non-time part of a condition as a structured filter.
fn filter(cond: &Cond, schema: &DatasetSchema) -> Result<Option<Filter>, String> {
    Ok(match cond {
        Cond::And(a, b) => match (filter(a, schema)?, filter(b, schema)?) {
            (Some(a), Some(b)) => Some(Filter::And { and: vec![a, b] }),
            (one, other) => one.or(other),
        },
        Cond::Or(a, b) => {
            if contains_time(a) || contains_time(b) {
                return Err("time conditions inside OR are not supported".into());
            }
            match (filter(a, schema)?, filter(b, schema)?) {
                (Some(a), Some(b)) => Some(Filter::Or { or: vec![a, b] }),
                _ => None,
            }
        }
        Cond::Time(..) => None,
        Cond::Compare(column, op, value) => {
            if schema.kind_of(column).is_none() {
                return Err(format!("no tag or field {column:?} in the measurement"));
            }
            // An empty tag value in InfluxQL means "the tag is absent".
            if value.as_str() == Some("") && matches!(schema.kind_of(column), Some(ColumnKind::Tag)) {
                let op = if *op == "=" { "is_null" } else { "is_not_null" };
                return Ok(Some(Filter::Condition { column: column.clone(), op: op.into(), value: None }));
            }
            Some(Filter::Condition { column: column.clone(), op: (*op).into(), value: Some(value.clone()) })
        }
        Cond::Regex(column, matches, re) => {
            if schema.kind_of(column).is_none() {
                return Err(format!("no tag or field {column:?} in the measurement"));
            }
            let values = anchored_literals(re).ok_or_else(|| {
                format!("regex /{re}/ is not supported: only /^value$/ and /^(a|b)$/ (Grafana's variables) are")
            })?;
            let value = |v: &String| Some(Json::String(v.clone()));
            let condition =
                |op: &str, v: &String| Filter::Condition { column: column.clone(), op: op.into(), value: value(v) };
            Some(match (matches, values.as_slice()) {
                (true, [one]) => condition("=", one),
                (true, _) => Filter::Condition {
                    column: column.clone(),
                    op: "in".into(),
                    value: Some(Json::Array(values.iter().map(|v| Json::String(v.clone())).collect())),
                },
                (false, [one]) => condition("!=", one),
                (false, _) => Filter::And { and: values.iter().map(|v| condition("!=", v)).collect() },
            })
        }
    })
}

/// The values an anchored regex of literals matches: `^a$` or `^(a|b)$`,
/// backslash escapes allowed (Grafana escapes its variables' values).
/// `None` for anything else.
fn anchored_literals(re: &str) -> Option<Vec<String>> {
    let inner = re.strip_prefix('^')?.strip_suffix('$')?;
    let inner = match inner.strip_prefix('(').and_then(|i| i.strip_suffix(')')) {
        Some(group) => group,
        None => inner,
    };
    let mut values = vec![String::new()];
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let escaped = chars.next()?;
                if escaped.is_ascii_alphanumeric() {
                    return None; // \d, \w …: a class, not a literal
                }
                values.last_mut()?.push(escaped);
            }
            '|' => values.push(String::new()),
            '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' => return None,
            c => values.last_mut()?.push(c),
        }
    }
    Some(values)
}

fn contains_time(cond: &Cond) -> bool {
    match cond {
        Cond::And(a, b) | Cond::Or(a, b) => contains_time(a) || contains_time(b),
        Cond::Time(..) => true,
        _ => false,
    }
}

/// The filter selecting the measurement's rows, when the dataset keeps
/// line protocol's measurement column.
fn measurement_filter(schema: &DatasetSchema, measurement: &str) -> Option<Filter> {
    schema.kind_of(MEASUREMENT_COLUMN).map(|_| Filter::Condition {
        column: MEASUREMENT_COLUMN.into(),
        op: "=".into(),
        value: Some(Json::String(measurement.into())),
    })
}

/// Tag columns of a schema, line protocol's measurement column aside.
pub fn tag_columns(schema: &DatasetSchema) -> Vec<String> {
    schema
        .columns
        .iter()
        .filter(|c| c.kind == ColumnKind::Tag && c.name != MEASUREMENT_COLUMN)
        .map(|c| c.name.clone())
        .collect()
}

/// Field columns (everything but tags and time).
pub fn field_columns(schema: &DatasetSchema) -> Vec<(String, ColumnKind)> {
    schema.columns.iter().filter(|c| c.kind != ColumnKind::Tag).map(|c| (c.name.clone(), c.kind)).collect()
}

/// The combined WHERE filter of a statement: its own, and the measurement's.
pub fn where_filter(
    condition: Option<&Cond>,
    schema: &DatasetSchema,
    measurement: &str,
) -> Result<Option<Filter>, String> {
    let own = condition.map(|c| filter(c, schema)).transpose()?.flatten();
    Ok(match (own, measurement_filter(schema, measurement)) {
        (Some(a), Some(b)) => Some(Filter::And { and: vec![a, b] }),
        (one, other) => one.or(other),
    })
}

/// A time range of epoch ns as the structured query takes it.
pub fn range(start: i64, end: i64) -> TimeRange {
    TimeRange { start: json!(start), end: json!(end), precision: Some("ns".into()) }
}

/// Translates a SELECT over a dataset of `schema`, `now` being epoch ns.
pub fn translate(select: &Select, schema: &DatasetSchema, now: i64) -> Result<Translated, String> {
    let mut bounds = (None, None);
    if let Some(cond) = &select.condition {
        time_bounds(cond, now, &mut bounds)?;
    }
    let filters = where_filter(select.condition.as_ref(), schema, &select.measurement)?;
    let aggregates = select.aggregates();
    if aggregates && select.fields.iter().any(|f| f.function.is_none()) {
        return Err("mixing aggregate and non-aggregate fields is not supported".into());
    }
    let mut series_tags = if select.group_all_tags { tag_columns(schema) } else { Vec::new() };
    for tag in &select.group_tags {
        match schema.kind_of(tag) {
            Some(ColumnKind::Tag) if !series_tags.contains(tag) => series_tags.push(tag.clone()),
            Some(ColumnKind::Tag) => {}
            _ => return Err(format!("GROUP BY {tag}: not a tag of the measurement")),
        }
    }
    if !aggregates {
        if select.interval_ns.is_some() {
            return Err("GROUP BY time() needs an aggregate function in SELECT".into());
        }
        return raw(select, schema, bounds, filters, series_tags);
    }
    if select.interval_ns.is_some() && bounds.0.is_none() {
        return Err("GROUP BY time() needs a lower time bound in WHERE (time > …)".into());
    }
    // Without a lower bound, an aggregate covers all time: a start far
    // before any plausible row that still renders as a time.
    let start = bounds.0.unwrap_or(i64::MIN / 2);
    let end = bounds.1.unwrap_or(if select.interval_ns.is_some() { now } else { i64::MAX });
    let (aggregations, columns) = aggregations(select, schema)?;
    let (fill, fill_value) = match select.fill.unwrap_or(FillMode::Null) {
        _ if select.interval_ns.is_none() => (Fill::None, None),
        FillMode::Null => (Fill::Null, None),
        FillMode::None => (Fill::None, None),
        FillMode::Previous => (Fill::Previous, None),
        FillMode::Value(v) => (Fill::Null, Some(v)),
    };
    let interval = select.interval_ns.map(|ns| format!("{ns}ns"));
    let request = QueryRequest {
        time_range: range(start, end),
        columns: None,
        filters,
        group_by: series_tags.clone(),
        downsample: Some(Downsample { interval, aggregations, fill }),
        order: if select.descending { Order::Desc } else { Order::Asc },
        limit: None,
        offset: None,
        format: Some("json".into()),
    };
    let fixed_time = if select.interval_ns.is_none() { Some(bounds.0.unwrap_or(0)) } else { None };
    let (limit, offset) = (select.limit, select.offset.unwrap_or(0));
    Ok(Translated { request, columns, series_tags, fill_value, fixed_time, limit, offset })
}

/// The structured aggregations of an aggregate SELECT, each aliased
/// `c{i}`, and the output columns: (alias, InfluxQL name).
fn aggregations(select: &Select, schema: &DatasetSchema) -> Result<(Vec<Aggregation>, OutputColumns), String> {
    let mut aggregations = Vec::new();
    let mut columns = Vec::new();
    for (i, field) in select.fields.iter().enumerate() {
        let function = field.function.as_deref().unwrap_or_default();
        let (name, column) = match (function, field.column.as_str()) {
            ("count", column) if column.eq_ignore_ascii_case("distinct") => {
                return Err("count(distinct(…)) is not supported".into());
            }
            (_, "*") => return Err(format!("{function}(*) is not supported: name a field")),
            (function, column) => {
                (aggregate_name(function).ok_or_else(|| format!("function {function}() is not supported"))?, column)
            }
        };
        if schema.kind_of(column).is_none() {
            return Err(format!("no field {column:?} in the measurement"));
        }
        let p = match (name, field.argument) {
            ("percentile", Some(n)) => Some(n / 100.0),
            ("percentile", None) => return Err("percentile(field, N) needs N".into()),
            (_, Some(_)) => return Err(format!("{function}() takes one argument")),
            _ => None,
        };
        let alias = format!("c{i}");
        let shown = field.alias.clone().unwrap_or_else(|| function.to_string());
        columns.push((alias.clone(), shown));
        aggregations.push(Aggregation { function: name.into(), column: column.into(), alias: Some(alias), p });
    }
    dedupe(&mut columns);
    Ok((aggregations, columns))
}

/// InfluxDB names repeated columns `mean`, `mean_1`, ….
fn dedupe(columns: &mut [(String, String)]) {
    for i in 1..columns.len() {
        let base = columns[i].1.clone();
        let mut n = 0;
        while columns[..i].iter().any(|(_, shown)| *shown == columns[i].1) {
            n += 1;
            columns[i].1 = format!("{base}_{n}");
        }
    }
}

fn raw(
    select: &Select,
    schema: &DatasetSchema,
    bounds: (Option<i64>, Option<i64>),
    filters: Option<Filter>,
    series_tags: Vec<String>,
) -> Result<Translated, String> {
    let mut columns: Vec<(String, String)> = Vec::new();
    for field in &select.fields {
        if field.column == "*" {
            for column in schema.columns.iter().filter(|c| c.name != MEASUREMENT_COLUMN) {
                if !series_tags.contains(&column.name) {
                    columns.push((column.name.clone(), column.name.clone()));
                }
            }
        } else if field.column.eq_ignore_ascii_case("time") {
            continue;
        } else if schema.kind_of(&field.column).is_none() {
            return Err(format!("no field {:?} in the measurement", field.column));
        } else {
            columns.push((field.column.clone(), field.alias.clone().unwrap_or_else(|| field.column.clone())));
        }
    }
    let mut wanted = vec![schema.time_column.clone()];
    wanted.extend(columns.iter().map(|(c, _)| c.clone()));
    wanted.extend(series_tags.iter().cloned());
    wanted.dedup();
    let request = QueryRequest {
        time_range: range(bounds.0.unwrap_or(i64::MIN + 1), bounds.1.unwrap_or(i64::MAX)),
        columns: Some(wanted),
        filters,
        group_by: Vec::new(),
        downsample: None,
        order: if select.descending { Order::Desc } else { Order::Asc },
        // With series, LIMIT is per series: applied when shaping.
        limit: if series_tags.is_empty() { select.limit } else { None },
        offset: if series_tags.is_empty() { select.offset } else { None },
        format: Some("json".into()),
    };
    let per_series = !series_tags.is_empty();
    let (limit, offset) = if per_series { (select.limit, select.offset.unwrap_or(0)) } else { (None, 0) };
    Ok(Translated { request, columns, series_tags, fill_value: None, fixed_time: None, limit, offset })
}

#[cfg(test)]
mod tests;
