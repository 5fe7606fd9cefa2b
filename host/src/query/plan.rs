//! Structured queries: the JSON request and its translation into SQL.
//!
//! Pure functions: a request plus a dataset schema become SQL text with bound
//! parameters. Identifiers are checked against the schema and quoted; values
//! are never spliced into the text, only bound.

use serde::Deserialize;
use serde_json::Value as Json;

use crate::error::{ErrorCode, Failure};
use crate::facts::is_valid_partition_key;
use crate::schema::{ColumnKind, DatasetSchema};
use crate::time::DurationError;

/// `POST /v1/datasets/{ds}/query`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// Required time range; `end` is exclusive.
    pub time_range: TimeRange,
    /// Columns to return (default: all). Ignored with `downsample`.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Row filter.
    #[serde(default)]
    pub filters: Option<Filter>,
    /// Tag (or any) columns to group by; with `downsample` only.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Time buckets and aggregations.
    #[serde(default)]
    pub downsample: Option<Downsample>,
    /// `asc` (default) or `desc` by time.
    #[serde(default)]
    pub order: Order,
    /// At most this many rows.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Skip this many rows.
    #[serde(default)]
    pub offset: Option<u64>,
    /// `json` (default), `ndjson`, `csv` or `arrow`; the `Accept` header also works.
    #[serde(default)]
    pub format: Option<String>,
}

/// A time range: RFC 3339 strings or epoch integers in `precision`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    /// Inclusive start.
    pub start: Json,
    /// Exclusive end.
    pub end: Json,
    /// The unit of epoch integers: `ns` (default), `us`, `ms` or `s`.
    #[serde(default)]
    pub precision: Option<String>,
}

/// Sort order by time.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// A filter: a condition or an `and` / `or` of filters.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Filter {
    /// All must hold.
    And {
        /// The parts.
        and: Vec<Filter>,
    },
    /// One must hold.
    Or {
        /// The parts.
        or: Vec<Filter>,
    },
    /// One comparison.
    Condition {
        /// The column.
        column: String,
        /// `=`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `is_null`, `is_not_null`.
        op: String,
        /// The operand (an array for `in`; absent for the null tests).
        #[serde(default)]
        value: Option<Json>,
    },
}

/// Time buckets and aggregations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Downsample {
    /// Bucket width: `10s`, `1m`, `1h`, `1d`, `500ms` …; buckets start at
    /// multiples of it since the epoch. Absent: the whole time range is one
    /// bucket, labelled with its start.
    #[serde(default)]
    pub interval: Option<String>,
    /// What to compute per bucket (and group).
    pub aggregations: Vec<Aggregation>,
    /// Empty buckets: `none` (default, omitted), `null` or `previous`.
    #[serde(default)]
    pub fill: Fill,
}

/// Gap filling.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    /// Buckets without rows are omitted.
    #[default]
    None,
    /// Buckets without rows appear with nulls.
    Null,
    /// Buckets without rows repeat the previous bucket's values.
    Previous,
}

/// One aggregation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregation {
    /// avg, min, max, sum, count, median, count_distinct, percentile, first, last.
    #[serde(rename = "fn")]
    pub function: String,
    /// The input column.
    pub column: String,
    /// The output name (default `{fn}_{column}`).
    #[serde(default)]
    pub alias: Option<String>,
    /// For `percentile`: in [0, 1].
    #[serde(default)]
    pub p: Option<f64>,
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// Text.
    Text(String),
    /// Float.
    Float(f64),
    /// Signed integer.
    Integer(i64),
    /// Unsigned integer.
    Unsigned(u64),
    /// Boolean.
    Boolean(bool),
}

/// The planned SQL over a relation named `src`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedQuery {
    /// Inclusive start, ns.
    pub start_ns: i64,
    /// Exclusive end, ns.
    pub end_ns: i64,
    /// SQL selecting from `src`.
    pub sql: String,
    /// The same query without the time-range predicate, for a snapshot
    /// whose partitions all lie inside the range (every row qualifies, so
    /// DuckDB need not read the time column to check).
    pub sql_within_range: String,
    /// Parameters, in order.
    pub params: Vec<Param>,
    /// Output columns holding epoch-ns times (rendered as timestamps).
    pub time_columns: Vec<String>,
    /// What the filters say about tag and text columns, for pruning
    /// partitions by key.
    pub key_filters: Vec<KeyFilter>,
    /// SQL only: per dataset read (in order), the time range its rows must
    /// lie in to count, from the SQL's top-level time predicates, for
    /// pruning partitions; `None` reads every time.
    pub dataset_ranges: Vec<Option<(i64, i64)>>,
}

/// A condition every row of a query's answer meets: `column` holds one of
/// `values`. Taken from the `=` and `in` filters on tag and text columns
/// that the whole filter requires (the top level, or inside `and`s only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    /// The column.
    pub column: String,
    /// Its possible values.
    pub values: Vec<String>,
}

fn key_filters(filter: &Filter, schema: &DatasetSchema, out: &mut Vec<KeyFilter>) {
    match filter {
        Filter::And { and } => and.iter().for_each(|part| key_filters(part, schema, out)),
        Filter::Or { .. } => {}
        Filter::Condition { column, op, value } => {
            if !matches!(schema.kind_of(column), Some(ColumnKind::Tag | ColumnKind::Text)) {
                return;
            }
            let values: Option<Vec<String>> = match (op.as_str(), value) {
                ("=", Some(Json::String(value))) => Some(vec![value.clone()]),
                ("in", Some(Json::Array(values))) => {
                    values.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()
                }
                _ => None,
            };
            if let Some(values) = values {
                out.push(KeyFilter { column: column.clone(), values });
            }
        }
    }
}

/// Whether a partition can be skipped by key: its rows were all keyed by
/// the value of one field verbatim (`key_field`, see
/// `catalog::PartitionRecord::key_field`), a filter restricts that field to
/// values that are all valid keys (so each is its own key), and the
/// partition's key is none of them. Anything less certain keeps the
/// partition: pruning must never drop a row the filter would keep.
pub fn prunable_by_key(key_field: Option<&str>, key: &str, filters: &[KeyFilter]) -> bool {
    let Some(field) = key_field.filter(|field| !field.is_empty()) else { return false };
    filters.iter().any(|filter| {
        filter.column == field
            && filter.values.iter().all(|value| is_valid_partition_key(value))
            && !filter.values.iter().any(|value| value == key)
    })
}

/// Rows a query may return at most, whatever `limit` says.
pub const QUERY_ROWS_DEFAULT_MAX: u64 = u64::MAX;

/// Anything wrong with a query is `invalid_query`.
fn bad(message: impl Into<String>) -> Failure {
    Failure::new(ErrorCode::InvalidQuery, message)
}

/// A BIGINT literal. The parentheses matter: `-9223372036854775808::BIGINT`
/// parses as the negation of a cast that does not fit.
fn bigint(value: i64) -> String {
    format!("({value})::BIGINT")
}

/// A TIMESTAMP_NS literal of epoch ns. DuckDB reserves the two extremes
/// past `i64::MIN` as the infinities, which `make_timestamp_ns` refuses.
fn timestamp_ns(value: i64) -> String {
    match value {
        i64::MAX => "'infinity'::TIMESTAMP_NS".to_string(),
        v if v == i64::MIN + 1 => "'-infinity'::TIMESTAMP_NS".to_string(),
        v => format!("make_timestamp_ns({})", bigint(v)),
    }
}

/// Quotes an identifier for DuckDB.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Parses a time bound: an RFC 3339 string or an integer of epoch ns.
pub fn time_bound(value: &Json, what: &str) -> Result<i64, Failure> {
    match value {
        Json::String(text) => crate::time::parse_rfc3339(text)
            .map_err(|m| Failure::new(ErrorCode::InvalidTimestamp, format!("{what}: {m}"))),
        Json::Number(n) => n.as_i64().ok_or_else(|| {
            Failure::new(ErrorCode::InvalidTimestamp, format!("{what} must be integer epoch nanoseconds"))
        }),
        _ => Err(Failure::new(ErrorCode::InvalidTimestamp, format!("{what} must be RFC 3339 or epoch ns"))),
    }
}

/// The units an epoch integer in `time_range` may be in, with their ns.
const PRECISIONS: [(&str, i64, &str); 4] = [
    ("ns", 1, "nanoseconds"),
    ("us", 1_000, "microseconds"),
    ("ms", 1_000_000, "milliseconds"),
    ("s", 1_000_000_000, "seconds"),
];

/// Epoch times a bound is expected between, in seconds (2000-01-01 to
/// 2100-01-01): an integer that lands here only when read in another unit
/// than the one chosen was written in that other unit. The window spans
/// less than a factor 1000, so at most one unit lands in it.
const PLAUSIBLE_SECONDS: std::ops::Range<i64> = 946_684_800..4_102_444_800;

/// The range's bounds in epoch ns. Epoch integers are read in
/// `precision` (default `ns`); one that lies outside 2000–2100 in that
/// unit but inside it in another unit is refused, naming the unit, rather
/// than answered with an empty range.
pub fn time_range_ns(range: &TimeRange) -> Result<(i64, i64), Failure> {
    let unit = range.precision.as_deref().unwrap_or("ns");
    let (_, scale, unit_name) = PRECISIONS
        .iter()
        .find(|(name, ..)| *name == unit)
        .copied()
        .ok_or_else(|| bad(format!("time_range.precision {unit:?} must be ns, us, ms or s")))?;
    let bound = |value: &Json, what: &str| -> Result<i64, Failure> {
        let Json::Number(n) = value else { return time_bound(value, what) };
        let Some(raw) = n.as_i64() else { return time_bound(value, what) };
        let ns = raw.checked_mul(scale);
        let plausible =
            |ns: Option<i64>| ns.is_some_and(|ns| PLAUSIBLE_SECONDS.contains(&ns.div_euclid(1_000_000_000)));
        if !plausible(ns)
            && let Some((other, other_ns)) = PRECISIONS
                .iter()
                .map(|(name, other_scale, _)| (*name, raw.checked_mul(*other_scale)))
                .find(|(_, other_ns)| plausible(*other_ns))
        {
            let shown = |ns: Option<i64>| ns.map_or_else(|| "out of range".to_string(), crate::time::rfc3339);
            return Err(bad(format!(
                "{what} {raw} read as epoch {unit_name} is {}; as {other} it is {}: set \"precision\": \"{other}\" \
                 in time_range (or send RFC 3339 text)",
                shown(ns),
                shown(other_ns)
            )));
        }
        ns.ok_or_else(|| bad(format!("{what} {raw} epoch {unit_name} is outside the representable times")))
    };
    Ok((bound(&range.start, "time_range.start")?, bound(&range.end, "time_range.end")?))
}

/// Parses `10s`, `1m`, `1h`, `1d`, `1w`, `500ms`, `100us`, `10ns` into ns.
pub fn interval_ns(raw: &str) -> Result<i64, Failure> {
    crate::time::parse_duration_ns(raw, 1).map_err(|error| {
        bad(match error {
            DurationError::Count => format!("interval {raw:?} must be a number and a unit, like 1m"),
            DurationError::Unit => format!("interval {raw:?}: unit must be ns, us, ms, s, m, h, d or w"),
            DurationError::Range => format!("interval {raw:?} must be positive and at most ~292 years"),
        })
    })
}

fn column_kind(schema: &DatasetSchema, name: &str) -> Result<ColumnKind, Failure> {
    schema.kind_of(name).ok_or_else(|| bad(format!("no column {name:?} in the dataset")))
}

fn param_for(kind: ColumnKind, column: &str, value: &Json) -> Result<Param, Failure> {
    let mismatch = || bad(format!("filter value {value} does not fit column {column:?} ({})", kind.as_str()));
    Ok(match kind {
        ColumnKind::Tag | ColumnKind::Text => Param::Text(value.as_str().ok_or_else(mismatch)?.to_string()),
        ColumnKind::Float => Param::Float(value.as_f64().ok_or_else(mismatch)?),
        // Numbers compare numerically whatever the column's number kind,
        // as in SQL: `n > 500000.5` on an integer column is a float comparison.
        ColumnKind::Integer | ColumnKind::Unsigned => number_param(value).ok_or_else(mismatch)?,
        ColumnKind::Boolean => Param::Boolean(value.as_bool().ok_or_else(mismatch)?),
        ColumnKind::Time => Param::Integer(time_bound(value, "filter")?),
    })
}

/// A JSON number as the parameter that holds it exactly: a signed or
/// unsigned integer when it is one, else a float.
fn number_param(value: &Json) -> Option<Param> {
    let Json::Number(n) = value else { return None };
    if let Some(i) = n.as_i64() {
        Some(Param::Integer(i))
    } else if let Some(u) = n.as_u64() {
        Some(Param::Unsigned(u))
    } else {
        n.as_f64().filter(|f| f.is_finite()).map(Param::Float)
    }
}

/// The placeholder of `param` compared with a column of `kind`. DuckDB
/// gives a bare `?` the column's type, which would round a float compared
/// with an integer column; a number of another kind is cast to its own
/// type, so the comparison is numeric.
fn placeholder(kind: ColumnKind, param: &Param) -> &'static str {
    match (kind, param) {
        (ColumnKind::Integer | ColumnKind::Unsigned, Param::Float(_)) => "CAST(? AS DOUBLE)",
        (ColumnKind::Unsigned, Param::Integer(_)) => "CAST(? AS BIGINT)",
        (ColumnKind::Integer, Param::Unsigned(_)) => "CAST(? AS UBIGINT)",
        _ => "?",
    }
}

/// A tag value compared by `=` or `in`, as a SQL string literal (quotes
/// doubled; a value holding NUL stays a parameter). DuckDB folds a
/// literal into the Parquet scan, which skips row groups by their
/// statistics and tag bloom filters; a bound parameter is compared only
/// after every row is read. Files are sorted by their tags, so one
/// series' rows sit in a few row groups.
fn tag_literal(kind: ColumnKind, param: &Param) -> Option<String> {
    match (kind, param) {
        (ColumnKind::Tag, Param::Text(text)) if !text.contains('\0') => Some(format!("'{}'", text.replace('\'', "''"))),
        _ => None,
    }
}

/// Filters nest at most this deep.
const FILTER_DEPTH_MAX: usize = 16;
/// Conditions and `in` values in one query.
const FILTER_TERMS_MAX: usize = 10_000;

fn filter_sql(
    filter: &Filter,
    schema: &DatasetSchema,
    params: &mut Vec<Param>,
    depth: usize,
) -> Result<String, Failure> {
    if depth > FILTER_DEPTH_MAX {
        return Err(bad(format!("filters nest deeper than {FILTER_DEPTH_MAX}")));
    }
    if params.len() > FILTER_TERMS_MAX {
        return Err(bad(format!("more than {FILTER_TERMS_MAX} filter values")));
    }
    let join = |parts: &[Filter], word: &str, params: &mut Vec<Param>| -> Result<String, Failure> {
        if parts.is_empty() {
            return Err(bad(format!("an empty {word} filter")));
        }
        let sql: Vec<String> =
            parts.iter().map(|p| filter_sql(p, schema, params, depth + 1)).collect::<Result<_, _>>()?;
        Ok(format!("({})", sql.join(&format!(" {} ", word.to_uppercase()))))
    };
    match filter {
        Filter::And { and } => join(and, "and", params),
        Filter::Or { or } => join(or, "or", params),
        Filter::Condition { column, op, value } => {
            let kind = column_kind(schema, column)?;
            let left = if kind == ColumnKind::Time { format!("epoch_ns({})", quote(column)) } else { quote(column) };
            let operator = match op.as_str() {
                "is_null" => return Ok(format!("{left} IS NULL")),
                "is_not_null" => return Ok(format!("{left} IS NOT NULL")),
                "in" => {
                    let values =
                        value.as_ref().and_then(Json::as_array).ok_or_else(|| bad("`in` takes an array value"))?;
                    if values.is_empty() {
                        return Ok("FALSE".to_string());
                    }
                    let mut placeholders = Vec::with_capacity(values.len());
                    for v in values {
                        let param = param_for(kind, column, v)?;
                        placeholders.push(tag_literal(kind, &param).unwrap_or_else(|| {
                            let placeholder = placeholder(kind, &param).to_string();
                            params.push(param);
                            placeholder
                        }));
                    }
                    return Ok(format!("{left} IN ({})", placeholders.join(", ")));
                }
                "=" | "!=" | "<" | "<=" | ">" | ">=" => op.as_str(),
                other => return Err(bad(format!("unknown filter op {other:?}"))),
            };
            let value = value.as_ref().ok_or_else(|| bad(format!("filter on {column:?} needs a value")))?;
            let param = param_for(kind, column, value)?;
            if operator == "="
                && let Some(literal) = tag_literal(kind, &param)
            {
                return Ok(format!("{left} = {literal}"));
            }
            let placeholder = placeholder(kind, &param);
            params.push(param);
            Ok(format!("{left} {operator} {placeholder}"))
        }
    }
}

fn aggregation_sql(aggregation: &Aggregation, schema: &DatasetSchema, time: &str) -> Result<(String, String), Failure> {
    let kind = column_kind(schema, &aggregation.column)?;
    let column = quote(&aggregation.column);
    let numeric = matches!(kind, ColumnKind::Float | ColumnKind::Integer | ColumnKind::Unsigned);
    let need_numeric = |f: &str| {
        if numeric {
            Ok(())
        } else {
            Err(bad(format!("{f} needs a numeric column; {:?} is {}", aggregation.column, kind.as_str())))
        }
    };
    let sql = match aggregation.function.as_str() {
        "avg" => {
            need_numeric("avg")?;
            format!("avg({column})")
        }
        "sum" => {
            need_numeric("sum")?;
            format!("sum({column})")
        }
        "median" => {
            need_numeric("median")?;
            format!("quantile_cont({column}, 0.5)")
        }
        "percentile" => {
            need_numeric("percentile")?;
            let p = aggregation.p.ok_or_else(|| bad("percentile needs p in [0, 1]"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(bad(format!("percentile p = {p} is outside [0, 1]")));
            }
            format!("quantile_cont({column}, {p:?})")
        }
        "min" => format!("min({column})"),
        "max" => format!("max({column})"),
        "count" => format!("count({column})"),
        "count_distinct" => format!("count(DISTINCT {column})"),
        "first" => format!("arg_min({column}, {time}) FILTER (WHERE {column} IS NOT NULL)"),
        "last" => format!("arg_max({column}, {time}) FILTER (WHERE {column} IS NOT NULL)"),
        other => {
            return Err(bad(format!(
                "unknown aggregation {other:?}; use avg, min, max, sum, count, median, count_distinct, percentile, first or last"
            )));
        }
    };
    let alias = aggregation.alias.clone().unwrap_or_else(|| format!("{}_{}", aggregation.function, aggregation.column));
    crate::names::check_column_name(&alias).map_err(|error| bad(error.to_string()))?;
    Ok((sql, alias))
}

/// Plans `request` over the relation `src` with `schema`.
pub fn plan(request: &QueryRequest, schema: &DatasetSchema) -> Result<PlannedQuery, Failure> {
    let (start_ns, end_ns) = time_range_ns(&request.time_range)?;
    if end_ns < start_ns {
        return Err(bad("time_range.end is before time_range.start"));
    }
    let time = quote(&schema.time_column);
    let mut params = Vec::new();
    // The bounds are integers parsed above, so they are written into the
    // text: a constant comparison on the bare column is what lets DuckDB
    // skip Parquet row groups by their statistics, and a bound timestamp
    // parameter would lose the nanoseconds.
    let in_range = format!("{time} >= {} AND {time} < {}", timestamp_ns(start_ns), timestamp_ns(end_ns));
    let mut filter = None;
    let mut key_filter_list = Vec::new();
    if let Some(request_filter) = &request.filters {
        filter = Some(filter_sql(request_filter, schema, &mut params, 0)?);
        key_filters(request_filter, schema, &mut key_filter_list);
    }
    for column in &request.group_by {
        let kind = column_kind(schema, column)?;
        if kind == ColumnKind::Time {
            return Err(bad("group_by the time column: use downsample"));
        }
    }
    let render = |time_predicate: Option<&str>| -> Result<String, Failure> {
        let predicate = match (time_predicate, &filter) {
            (Some(t), Some(f)) => format!("{t} AND {f}"),
            (Some(t), None) => t.to_string(),
            (None, Some(f)) => f.clone(),
            (None, None) => "TRUE".to_string(),
        };
        match &request.downsample {
            None => raw_sql(request, schema, &predicate),
            Some(downsample) => downsample_sql(request, downsample, schema, &predicate, start_ns, end_ns),
        }
    };
    let sql = render(Some(&in_range))?;
    let sql_within_range = render(None)?;
    Ok(PlannedQuery {
        start_ns,
        end_ns,
        sql,
        sql_within_range,
        params,
        time_columns: vec![schema.time_column.clone()],
        key_filters: key_filter_list,
        dataset_ranges: Vec::new(),
    })
}

fn paging(request: &QueryRequest) -> (&'static str, String) {
    let direction = if request.order == Order::Desc { "DESC" } else { "ASC" };
    // DuckDB takes BIGINT counts; no answer has more rows than that, so a
    // larger limit or offset means the same as the largest BIGINT.
    let count = |value: u64| value.min(i64::MAX as u64);
    let mut paging = String::new();
    if let Some(limit) = request.limit {
        paging.push_str(&format!(" LIMIT {}", count(limit)));
    }
    if let Some(offset) = request.offset {
        paging.push_str(&format!(" OFFSET {}", count(offset)));
    }
    (direction, paging)
}

/// Rows as stored, time as epoch ns.
fn raw_sql(request: &QueryRequest, schema: &DatasetSchema, predicate: &str) -> Result<String, Failure> {
    if !request.group_by.is_empty() {
        return Err(bad("group_by needs downsample (aggregations per group)"));
    }
    let time = quote(&schema.time_column);
    let (direction, paging) = paging(request);
    let columns: Vec<String> = match &request.columns {
        None => {
            std::iter::once(schema.time_column.clone()).chain(schema.columns.iter().map(|c| c.name.clone())).collect()
        }
        Some(columns) => {
            let mut out = vec![schema.time_column.clone()];
            for column in columns {
                column_kind(schema, column)?;
                if !out.contains(column) {
                    out.push(column.clone());
                }
            }
            out
        }
    };
    let select: Vec<String> = columns
        .iter()
        .map(|c| if *c == schema.time_column { format!("epoch_ns({time}) AS {time}") } else { quote(c) })
        .collect();
    Ok(format!("SELECT {} FROM src WHERE {predicate} ORDER BY {time} {direction}{paging}", select.join(", ")))
}

/// The start of the bucket of width `interval` holding `time_ns` (buckets
/// start at multiples of `interval`), if it is a representable time.
fn bucket_of(time_ns: i64, interval: i64) -> Option<i64> {
    time_ns.checked_sub(time_ns.rem_euclid(interval))
}

/// Aggregations per time bucket (and group), with optional gap filling.
fn downsample_sql(
    request: &QueryRequest,
    downsample: &Downsample,
    schema: &DatasetSchema,
    predicate: &str,
    start_ns: i64,
    end_ns: i64,
) -> Result<String, Failure> {
    let time = quote(&schema.time_column);
    let (direction, paging) = paging(request);
    if downsample.aggregations.is_empty() {
        return Err(bad("downsample needs at least one aggregation"));
    }
    let groups: Vec<String> = request.group_by.iter().map(|g| quote(g)).collect();
    let (aggregates, aliases) = output_aggregates(request, downsample, schema, &time)?;
    let buckets = Buckets::new(downsample.interval.as_deref(), start_ns, end_ns)?;
    let aggregated = aggregated_sql(&buckets, &time, &groups, &aggregates, predicate);
    // By time, then group: the latest rows across groups come first with
    // `desc`, and a limit takes them.
    let order_groups: String = groups.iter().map(|g| format!(", {g} ASC")).collect();
    let order = format!("{time} {direction}{order_groups}{paging}");
    Ok(match downsample.fill {
        Fill::None => format!("SELECT * FROM ({aggregated}) ORDER BY {order}"),
        Fill::Null | Fill::Previous => {
            filled_sql(&aggregated, &buckets, &time, &groups, &aliases, downsample.fill, &order)
        }
    })
}

/// Each aggregation as `sql AS alias`, and the aliases: output columns,
/// so no two of them, the time column or a group column may share a name.
fn output_aggregates(
    request: &QueryRequest,
    downsample: &Downsample,
    schema: &DatasetSchema,
    time: &str,
) -> Result<(Vec<String>, Vec<String>), Failure> {
    let mut aggregates = Vec::new();
    let mut aliases: Vec<String> = Vec::new();
    for aggregation in &downsample.aggregations {
        let (sql, alias) = aggregation_sql(aggregation, schema, time)?;
        if aliases.contains(&alias) || alias == schema.time_column || request.group_by.contains(&alias) {
            return Err(bad(format!("output column {alias:?} appears twice; set distinct aliases")));
        }
        aggregates.push(format!("{sql} AS {}", quote(&alias)));
        aliases.push(alias);
    }
    Ok((aggregates, aliases))
}

/// The time buckets a downsampled range covers.
pub(super) struct Buckets {
    /// The start of the first bucket (the range's start without an interval).
    pub(super) first_ns: i64,
    /// The end of the range (exclusive).
    pub(super) end_ns: i64,
    /// The bucket width (the range's width, at least 1, without an interval).
    pub(super) width_ns: i64,
    /// Whether the whole range lies in one bucket.
    pub(super) single: bool,
    /// Whether the range holds no time at all.
    pub(super) empty: bool,
}

impl Buckets {
    /// The buckets of width `interval` (none: one bucket) over `start_ns..end_ns`.
    pub(super) fn new(interval: Option<&str>, start_ns: i64, end_ns: i64) -> Result<Buckets, Failure> {
        let (first_ns, width_ns, single) = match interval {
            Some(raw) => {
                let width = interval_ns(raw)?;
                let first = bucket_of(start_ns, width).ok_or_else(|| {
                    Failure::new(
                        ErrorCode::InvalidQuery,
                        format!(
                            "time_range.start {start_ns} lies in a {raw} bucket that starts before the earliest time"
                        ),
                    )
                })?;
                // `end_ns > start_ns` keeps `end_ns - 1` in range.
                (first, width, end_ns > start_ns && bucket_of(end_ns - 1, width) == Some(first))
            }
            None => (start_ns, end_ns.saturating_sub(start_ns).max(1), true),
        };
        Ok(Buckets { first_ns, end_ns, width_ns, single, empty: end_ns <= start_ns })
    }

    /// A relation of every bucket's start, one row each, named `time`.
    fn rows_sql(&self, time: &str) -> String {
        // One bucket is written out: a range's width may not fit the
        // BIGINT step `range` needs.
        if self.single {
            let empty = if self.empty { " WHERE FALSE" } else { "" };
            format!("SELECT {} AS {time}{empty}", bigint(self.first_ns))
        } else {
            format!(
                "SELECT range AS {time} FROM range({}, {}, {})",
                bigint(self.first_ns),
                bigint(self.end_ns),
                bigint(self.width_ns)
            )
        }
    }
}

/// The aggregates per bucket (and group) of the rows matching `predicate`,
/// each bucket labelled `time` with its start.
fn aggregated_sql(buckets: &Buckets, time: &str, groups: &[String], aggregates: &[String], predicate: &str) -> String {
    let group_select: String = groups.iter().map(|g| format!("{g}, ")).collect();
    if buckets.single {
        // The whole range is one bucket: a plain aggregate, with no
        // per-row bucket arithmetic and no grouping by time. HAVING keeps
        // an empty range empty, as the bucketed form is.
        let grouping = if groups.is_empty() { String::new() } else { format!(" GROUP BY {}", groups.join(", ")) };
        format!(
            "SELECT {} AS {time}, {group_select}{} FROM src WHERE {predicate}{grouping} HAVING count(*) > 0",
            bigint(buckets.first_ns),
            aggregates.join(", ")
        )
    } else {
        // Floor division, so times before 1970 land in the right bucket,
        // written so no step overflows: `t - t % i` truncates toward zero,
        // and a negative remainder moves one bucket down, to a bucket at or
        // after the first one (checked in `Buckets::new`).
        let t = format!("epoch_ns({time})");
        let interval = bigint(buckets.width_ns);
        let bucket = format!("({t} - {t} % {interval} - CASE WHEN {t} % {interval} < 0 THEN {interval} ELSE 0 END)");
        format!(
            "SELECT {bucket} AS {time}, {group_select}{} FROM src WHERE {predicate} GROUP BY ALL",
            aggregates.join(", ")
        )
    }
}

/// Every bucket for every group (`k`), joined with the aggregates (`agg`)
/// where a bucket has rows (`j`, whose columns are the output's, so no
/// name is ambiguous): the others hold nulls (`Fill::Null`) or the group's
/// last non-null values so far (`Fill::Previous`).
fn filled_sql(
    aggregated: &str,
    buckets: &Buckets,
    time: &str,
    groups: &[String],
    aliases: &[String],
    fill: Fill,
    order: &str,
) -> String {
    let bucket_rows = buckets.rows_sql(time);
    let keys = if groups.is_empty() {
        "SELECT 1 AS __all".to_string()
    } else {
        format!("SELECT DISTINCT {} FROM agg", groups.join(", "))
    };
    let joined: Vec<String> = std::iter::once(format!("b.{time} AS {time}"))
        .chain(groups.iter().map(|g| format!("k.{g} AS {g}")))
        .chain(aliases.iter().map(|a| format!("agg.{0} AS {0}", quote(a))))
        .collect();
    let join_on: Vec<String> = std::iter::once(format!("agg.{time} = b.{time}"))
        .chain(groups.iter().map(|g| format!("agg.{g} IS NOT DISTINCT FROM k.{g}")))
        .collect();
    let output: Vec<String> = std::iter::once(time.to_string())
        .chain(groups.iter().cloned())
        .chain(aliases.iter().map(|alias| filled_value(alias, fill, time, groups)))
        .collect();
    format!(
        "WITH agg AS ({aggregated}), b AS ({bucket_rows}), k AS ({keys}), \
         j AS (SELECT {} FROM b CROSS JOIN k LEFT JOIN agg ON {}) \
         SELECT {} FROM j ORDER BY {order}",
        joined.join(", "),
        join_on.join(" AND "),
        output.join(", ")
    )
}

/// The output column `alias` of a gap-filled bucket, from `j`.
fn filled_value(alias: &str, fill: Fill, time: &str, groups: &[String]) -> String {
    let alias = quote(alias);
    if fill != Fill::Previous {
        return alias;
    }
    let partition = if groups.is_empty() { String::new() } else { format!("PARTITION BY {} ", groups.join(", ")) };
    format!(
        "last_value({alias} IGNORE NULLS) OVER ({partition}ORDER BY {time} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {alias}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnDef;

    fn schema() -> DatasetSchema {
        DatasetSchema::empty("time")
            .evolve(&[
                ColumnDef { name: "host".into(), kind: ColumnKind::Tag },
                ColumnDef { name: "usage".into(), kind: ColumnKind::Float },
                ColumnDef { name: "we\"ird".into(), kind: ColumnKind::Integer },
            ])
            .unwrap()
            .unwrap()
    }

    fn request(json: Json) -> QueryRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn intervals() {
        assert_eq!(interval_ns("10s").unwrap(), 10_000_000_000);
        assert_eq!(interval_ns("1m").unwrap(), 60_000_000_000);
        assert_eq!(interval_ns("500ms").unwrap(), 500_000_000);
        for bad in ["", "m", "10", "1y", "0s", "-1s", "99999999999999d"] {
            assert!(interval_ns(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_bound_and_identifiers_quoted() {
        let planned = plan(
            &request(serde_json::json!({
                "time_range": {"start": 0, "end": 100},
                "filters": {"and": [{"column": "host", "op": "in", "value": ["a", "b'; DROP TABLE x; --"]},
                                     {"or": [{"column": "we\"ird", "op": ">", "value": 3}, {"column": "usage", "op": "is_null"}]}]},
                "limit": 5
            })),
            &schema(),
        )
        .unwrap();
        assert!(planned.sql.contains("\"we\"\"ird\" > ?"), "{}", planned.sql);
        assert!(
            planned.sql.contains("\"host\" IN ('a', 'b''; DROP TABLE x; --')"),
            "tag values compared for equality are escaped literals: {}",
            planned.sql
        );
        assert_eq!(planned.params.len(), 1, "the other filter values; the time bounds are planner integers");
        assert!(planned.sql.ends_with("LIMIT 5"));
        assert!(
            planned
                .sql
                .contains("\"time\" >= make_timestamp_ns((0)::BIGINT) AND \"time\" < make_timestamp_ns((100)::BIGINT)"),
            "{}",
            planned.sql
        );
        assert!(!planned.sql_within_range.contains("make_timestamp_ns"), "{}", planned.sql_within_range);
        assert!(planned.sql_within_range.contains("\"we\"\"ird\" > ?"), "the filters stay");
    }

    #[test]
    fn a_range_inside_one_bucket_is_a_plain_aggregate() {
        let day = 86_400_000_000_000i64;
        let query = |start: i64, end: i64| {
            plan(
                &request(serde_json::json!({
                    "time_range": {"start": start, "end": end},
                    "downsample": {"interval": "1d", "aggregations": [{"fn": "count", "column": "usage"}]}
                })),
                &schema(),
            )
            .unwrap()
            .sql
        };
        let inside = query(day + 5, 2 * day);
        assert!(inside.contains(&format!("SELECT ({day})::BIGINT AS")), "{inside}");
        assert!(inside.contains("HAVING count(*) > 0") && !inside.contains("GROUP BY"), "{inside}");
        let across = query(day + 5, 2 * day + 1);
        assert!(across.contains("GROUP BY ALL") && across.contains("% (86400000000000)::BIGINT"), "{across}");
        let empty = query(day, day);
        assert!(empty.contains("GROUP BY ALL"), "an empty range keeps the general form: {empty}");
        let whole = plan(
            &request(serde_json::json!({
                "time_range": {"start": day + 5, "end": 9 * day},
                "downsample": {"aggregations": [{"fn": "count", "column": "usage"}]}
            })),
            &schema(),
        )
        .unwrap()
        .sql;
        assert!(
            whole.contains(&format!("SELECT ({})::BIGINT AS", day + 5)),
            "no interval: one bucket at the start: {whole}"
        );
    }

    #[test]
    fn key_filters_come_from_required_equalities_on_text_columns() {
        let planned = plan(
            &request(serde_json::json!({
                "time_range": {"start": 0, "end": 100},
                "filters": {"and": [
                    {"column": "host", "op": "in", "value": ["a", "b"]},
                    {"and": [{"column": "host", "op": "=", "value": "a"}]},
                    {"or": [{"column": "host", "op": "=", "value": "c"}, {"column": "usage", "op": "is_null"}]},
                    {"column": "host", "op": "!=", "value": "d"},
                    {"column": "usage", "op": "=", "value": 1.5}
                ]}
            })),
            &schema(),
        )
        .unwrap();
        let values: Vec<Vec<&str>> =
            planned.key_filters.iter().map(|f| f.values.iter().map(String::as_str).collect()).collect();
        assert_eq!(values, [vec!["a", "b"], vec!["a"]], "`or`, `!=` and number columns say nothing");
        assert!(planned.key_filters.iter().all(|f| f.column == "host"));
    }

    #[test]
    fn partitions_are_pruned_by_key_only_when_certain() {
        let filter = |values: &[&str]| {
            vec![KeyFilter { column: "tenant".into(), values: values.iter().map(|v| v.to_string()).collect() }]
        };
        let cases: &[(Option<&str>, &str, Vec<KeyFilter>, bool)] = &[
            (Some("tenant"), "t9", filter(&["t7"]), true),
            (Some("tenant"), "t7", filter(&["t7"]), false),
            (Some("tenant"), "t9", filter(&["t7", "t9"]), false),
            (Some("tenant"), "", filter(&["t7"]), true),
            (Some("tenant"), "t9", filter(&[]), true),
            // "T7" is sanitised to the key "t7": the key says nothing certain.
            (Some("tenant"), "t9", filter(&["T7"]), false),
            (Some("tenant"), "t7", filter(&["T7"]), false),
            (Some("region"), "t9", filter(&["t7"]), false),
            (Some(""), "t9", filter(&["t7"]), false),
            (None, "t9", filter(&["t7"]), false),
            (Some("tenant"), "t9", vec![], false),
        ];
        for (key_field, key, filters, expected) in cases {
            assert_eq!(prunable_by_key(*key_field, key, filters), *expected, "{key_field:?} {key:?} {filters:?}");
        }
    }

    #[test]
    fn unknown_columns_functions_and_bad_values_are_refused() {
        let cases = [
            serde_json::json!({"time_range": {"start": 0, "end": 1}, "columns": ["nope"]}),
            serde_json::json!({"time_range": {"start": 0, "end": 1}, "filters": {"column": "usage", "op": "=", "value": "x"}}),
            serde_json::json!({"time_range": {"start": 0, "end": 1}, "filters": {"column": "usage", "op": "like", "value": 1}}),
            serde_json::json!({"time_range": {"start": 0, "end": 1}, "downsample": {"interval": "1m", "aggregations": [{"fn": "avg", "column": "host"}]}}),
            serde_json::json!({"time_range": {"start": 0, "end": 1}, "downsample": {"interval": "1m", "aggregations": [{"fn": "percentile", "column": "usage", "p": 2}]}}),
            serde_json::json!({"time_range": {"start": 0, "end": 1}, "downsample": {"interval": "1m", "aggregations": [{"fn": "mode", "column": "usage"}]}}),
            serde_json::json!({"time_range": {"start": 5, "end": 1}}),
            serde_json::json!({"time_range": {"start": 0, "end": 1}, "group_by": ["host"]}),
        ];
        for case in cases {
            let error = plan(&request(case.clone()), &schema()).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidQuery, "one code for a wrong query: {case}: {error}");
        }
    }

    #[test]
    fn epoch_integers_are_read_in_the_precision_and_implausible_ones_refused() {
        let range = |start: Json, end: Json, precision: Option<&str>| {
            time_range_ns(&TimeRange { start, end, precision: precision.map(str::to_string) })
        };
        let ms = 1_700_000_000_000i64;
        let ns = ms * 1_000_000;
        assert_eq!(range(ms.into(), (ms + 1).into(), Some("ms")).unwrap(), (ns, ns + 1_000_000));
        assert_eq!(range((ms / 1000).into(), (ns / 1000).into(), Some("s")).unwrap_err().code, ErrorCode::InvalidQuery);
        assert_eq!(range((ns / 1000).into(), (ns / 1000 + 1).into(), Some("us")).unwrap(), (ns, ns + 1000));
        assert_eq!(range(ns.into(), (ns + 1).into(), None).unwrap(), (ns, ns + 1));
        assert_eq!(range("2023-11-14T22:13:20Z".into(), ms.into(), Some("ms")).unwrap(), (ns, ns));
        // Milliseconds read as nanoseconds land in 1970: refused, naming the unit.
        let error = range(ms.into(), (ms + 1).into(), None).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidQuery);
        assert!(error.message.contains("\"precision\": \"ms\""), "{error}");
        let error = range(ns.into(), (ns + 1).into(), Some("ms")).unwrap_err();
        assert!(error.message.contains("\"precision\": \"ns\""), "{error}");
        let error = range((ms / 1000).into(), (ms / 1000 + 1).into(), Some("ns")).unwrap_err();
        assert!(error.message.contains("\"precision\": \"s\""), "{error}");
        // Numbers no unit makes plausible are taken as they are.
        for (start, end) in [(0, 100), (i64::MIN, i64::MAX), (0, 7_200_000_000_000), (i64::MIN + 1, i64::MAX - 1)] {
            assert_eq!(range(start.into(), end.into(), None).unwrap(), (start, end));
        }
        assert!(range(0.into(), 1.into(), Some("minutes")).is_err());
        assert!(range(i64::MAX.into(), 1.into(), Some("s")).is_err(), "overflow is refused");
    }

    #[test]
    fn numbers_compare_numerically_with_integer_columns() {
        let planned = plan(
            &request(serde_json::json!({
                "time_range": {"start": 0, "end": 1},
                "filters": {"or": [{"column": "we\"ird", "op": ">", "value": 500000.5},
                                   {"column": "we\"ird", "op": "in", "value": [500000.0, 3, u64::MAX]}]}
            })),
            &schema(),
        )
        .unwrap();
        assert!(planned.sql.contains("\"we\"\"ird\" > CAST(? AS DOUBLE)"), "{}", planned.sql);
        assert!(planned.sql.contains("IN (CAST(? AS DOUBLE), ?, CAST(? AS UBIGINT))"), "{}", planned.sql);
        assert_eq!(
            planned.params,
            [Param::Float(500000.5), Param::Float(500000.0), Param::Integer(3), Param::Unsigned(u64::MAX)]
        );
    }

    #[test]
    fn grouped_downsamples_order_by_time_then_group() {
        let planned = plan(
            &request(serde_json::json!({
                "time_range": {"start": 0, "end": 7_200_000_000_000i64},
                "group_by": ["host"], "order": "desc", "limit": 30,
                "downsample": {"interval": "1h", "aggregations": [{"fn": "count", "column": "usage"}]}
            })),
            &schema(),
        )
        .unwrap();
        assert!(planned.sql.ends_with("ORDER BY \"time\" DESC, \"host\" ASC LIMIT 30"), "{}", planned.sql);
    }

    #[test]
    fn extreme_time_ranges_plan_without_overflow() {
        let downsample = |start: i64, end: i64, interval: Option<&str>, fill: &str| {
            let mut downsample =
                serde_json::json!({"aggregations": [{"fn": "count", "column": "usage"}], "fill": fill});
            if let Some(interval) = interval {
                downsample["interval"] = serde_json::json!(interval);
            }
            plan(
                &request(serde_json::json!({"time_range": {"start": start, "end": end}, "downsample": downsample})),
                &schema(),
            )
        };
        // The bucket of i64::MIN would start before the earliest time.
        let error = downsample(i64::MIN, 0, Some("1s"), "none").unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidQuery, "{error}");
        assert!(downsample(i64::MIN, i64::MIN, Some("1s"), "null").is_err());
        // A bucket boundary at the earliest time is fine, as is the latest end.
        let earliest = i64::MIN + (1_000_000_000 - i64::MIN.rem_euclid(1_000_000_000));
        for fill in ["none", "null", "previous"] {
            let planned = downsample(earliest, i64::MAX, Some("1s"), fill).unwrap();
            assert!(planned.sql.contains("'infinity'::TIMESTAMP_NS"), "{}", planned.sql);
            let whole = downsample(i64::MIN, i64::MAX, None, fill).unwrap();
            assert!(whole.sql.contains("(-9223372036854775808)::BIGINT AS"), "{}", whole.sql);
            assert!(!whole.sql.contains("range("), "one bucket needs no range of buckets: {}", whole.sql);
        }
        assert!(timestamp_ns(i64::MIN + 1).contains("-infinity"));
    }

    #[test]
    fn huge_limits_and_offsets_are_bigints() {
        let planned = plan(
            &request(serde_json::json!({"time_range": {"start": 0, "end": 1}, "limit": u64::MAX, "offset": u64::MAX})),
            &schema(),
        )
        .unwrap();
        assert!(planned.sql.ends_with(&format!(" LIMIT {} OFFSET {}", i64::MAX, i64::MAX)), "{}", planned.sql);
    }

    #[test]
    fn fill_previous_partitions_by_the_key_columns() {
        let planned = plan(
            &request(serde_json::json!({
                "time_range": {"start": 0, "end": 7_200_000_000_000i64},
                "group_by": ["host"],
                "downsample": {"interval": "1h", "fill": "previous", "aggregations": [{"fn": "count", "column": "usage"}]}
            })),
            &schema(),
        )
        .unwrap();
        assert!(planned.sql.contains("PARTITION BY \"host\" "), "{}", planned.sql);
    }
}
