//! Selective downsamples answered in Rust, without DuckDB.
//!
//! A structured query that pins tag columns (`=` or `in`) and aggregates
//! per time bucket reads one series, or a few: because files are sorted by
//! their tags, then time, those rows sit in a few pages of a few row
//! groups. DuckDB's fixed cost per query (binding the files, planning,
//! starting its scan) is then most of the answer's time. This executor
//! skips row groups by their statistics and pages by the page index,
//! decodes only the pages left and only the columns used, and aggregates
//! the matching rows in one pass; each file's footer and page index are
//! parsed once and kept, and so are the bloom filters read ([`Caches`]).
//!
//! It answers only what it answers exactly as the SQL plan would: the same
//! columns, types, bucket labels, order, paging and nulls (the
//! differential test in `tests/integration/native_query.rs` holds it to
//! that).
//! Any other query, and any file or buffer whose columns are not the plain
//! types it expects, is left to DuckDB ([`Outcome::Declined`]).

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, UInt64Type};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::reader::ChunkReader;
use parquet::file::statistics::Statistics;
use rustc_hash::FxHashMap;
use serde_json::Value as Json;

use super::plan::{Buckets, Fill, Filter, Order, PlannedQuery, QueryRequest};
use super::watchdog::Watch;
use crate::error::{ErrorCode, Failure};
use crate::schema::{ColumnKind, DatasetSchema};
use crate::storage::Readable;
use crate::sync::Recover as _;

/// Buckets a native answer may have at most; a finer downsample of a long
/// range is DuckDB's (it can spill).
const BUCKETS_MAX: i128 = 1 << 20;

/// Rows decoded per batch.
const BATCH_ROWS: usize = 8192;

/// Files whose parsed footers are kept.
const FOOTERS_KEPT: usize = 1024;

/// An aggregate function the executor computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Avg,
    Sum,
    Min,
    Max,
    Count,
}

/// One output column after the time: what, over which column (of which
/// kind), named how.
#[derive(Debug, Clone)]
struct Aggregate {
    function: Function,
    column: String,
    kind: ColumnKind,
    alias: String,
}

/// A structured query the executor can answer.
#[derive(Debug, Clone)]
pub(crate) struct NativePlan {
    time_column: String,
    /// Every row must hold, in each column, one of its values.
    filters: Vec<(String, Vec<String>)>,
    /// Tag columns to group by, in order.
    groups: Vec<String>,
    aggregates: Vec<Aggregate>,
    start_ns: i64,
    end_ns: i64,
    /// The label of the first bucket, and the bucket width.
    first_ns: i64,
    width_ns: i64,
    /// The whole range is one bucket, labelled `first_ns`.
    single: bool,
    desc: bool,
    /// Gap filling.
    fill: Fill,
    limit: Option<u64>,
    offset: Option<u64>,
}

impl NativePlan {
    /// The plan of `request`, if the executor answers it: a downsample
    /// (gap-filled or not), grouped by tags if at all, at least one tag
    /// pinned by `=` or `in` (only such conditions, joined by `and`),
    /// aggregations it computes over columns stored under their own names.
    /// `request` has already been planned as SQL (`planned`), so it is
    /// valid and its range parsed.
    pub(crate) fn new(request: &QueryRequest, schema: &DatasetSchema, planned: &PlannedQuery) -> Option<NativePlan> {
        let downsample = request.downsample.as_ref()?;
        if schema.projection().is_some() {
            return None;
        }
        let mut groups: Vec<String> = Vec::new();
        for column in &request.group_by {
            if schema.kind_of(column)? != ColumnKind::Tag || groups.contains(column) || groups.len() == GROUPS_MAX {
                return None;
            }
            groups.push(column.clone());
        }
        let mut filters = Vec::new();
        tag_conditions(request.filters.as_ref()?, schema, &mut filters)?;
        if filters.is_empty() {
            return None;
        }
        let (start_ns, end_ns) = (planned.start_ns, planned.end_ns);
        if end_ns <= start_ns {
            return None;
        }
        let buckets = Buckets::new(downsample.interval.as_deref(), start_ns, end_ns).ok()?;
        let count = (i128::from(buckets.end_ns) - i128::from(buckets.first_ns)) / i128::from(buckets.width_ns);
        if !buckets.single && count >= BUCKETS_MAX {
            return None;
        }
        let mut aggregates = Vec::new();
        for aggregation in &downsample.aggregations {
            let kind = schema.kind_of(&aggregation.column)?;
            let number = matches!(kind, ColumnKind::Integer | ColumnKind::Unsigned | ColumnKind::Float);
            let function = match aggregation.function.as_str() {
                // DuckDB's integer sums and averages go through 128-bit
                // integers; only float ones are summed here.
                "avg" if kind == ColumnKind::Float => Function::Avg,
                "sum" if kind == ColumnKind::Float => Function::Sum,
                "min" if number => Function::Min,
                "max" if number => Function::Max,
                "count" if kind != ColumnKind::Time => Function::Count,
                _ => return None,
            };
            let alias =
                aggregation.alias.clone().unwrap_or_else(|| format!("{}_{}", aggregation.function, aggregation.column));
            aggregates.push(Aggregate { function, column: aggregation.column.clone(), kind, alias });
        }
        Some(NativePlan {
            time_column: schema.time_column.clone(),
            filters,
            groups,
            aggregates,
            start_ns,
            end_ns,
            first_ns: buckets.first_ns,
            width_ns: buckets.width_ns,
            single: buckets.single,
            desc: request.order == Order::Desc,
            fill: downsample.fill,
            limit: request.limit,
            offset: request.offset,
        })
    }

    /// The answer's schema: the bucket label as epoch ns, the group
    /// columns, then each aggregate, all nullable, as DuckDB types them.
    fn output_schema(&self) -> Schema {
        let mut fields = vec![Field::new(&self.time_column, DataType::Int64, true)];
        fields.extend(self.groups.iter().map(|group| Field::new(group, DataType::Utf8, true)));
        for aggregate in &self.aggregates {
            let data_type = match Cell::empty(aggregate) {
                Cell::Float(_) => DataType::Float64,
                Cell::Integer(_) => DataType::Int64,
                Cell::Unsigned(_) => DataType::UInt64,
            };
            fields.push(Field::new(&aggregate.alias, data_type, true));
        }
        Schema::new(fields)
    }

    /// The columns a file or buffer must be read for.
    fn columns(&self) -> Vec<&str> {
        let mut columns = vec![self.time_column.as_str()];
        let used = self.filters.iter().map(|(c, _)| c.as_str()).chain(self.groups.iter().map(String::as_str));
        let used = used.chain(self.aggregates.iter().map(|a| a.column.as_str()));
        for column in used {
            if !columns.contains(&column) {
                columns.push(column);
            }
        }
        columns
    }
}

/// Collects the conditions of `filter` if it is only `=` and `in` on tag
/// columns with text values, joined by `and`.
fn tag_conditions(filter: &Filter, schema: &DatasetSchema, out: &mut Vec<(String, Vec<String>)>) -> Option<()> {
    match filter {
        Filter::And { and } => and.iter().try_for_each(|part| tag_conditions(part, schema, out)),
        Filter::Or { .. } => None,
        Filter::Condition { column, op, value } => {
            if schema.kind_of(column)? != ColumnKind::Tag {
                return None;
            }
            let values = match (op.as_str(), value.as_ref()?) {
                ("=", Json::String(value)) => vec![value.clone()],
                ("in", Json::Array(values)) => {
                    values.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()?
                }
                _ => return None,
            };
            out.push((column.clone(), values));
            Some(())
        }
    }
}

/// What the executor keeps between queries: footers and bloom filters.
#[derive(Debug, Default)]
pub(crate) struct Caches {
    footers: Footers,
    blooms: Blooms,
}

/// A map that forgets its oldest entries once their costs pass `budget`.
#[derive(Debug)]
struct Kept<K, V> {
    entries: FxHashMap<K, V>,
    order: VecDeque<(K, u64)>,
    cost: u64,
    budget: u64,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Kept<K, V> {
    fn new(budget: u64) -> Kept<K, V> {
        Kept { entries: FxHashMap::default(), order: VecDeque::new(), cost: 0, budget }
    }

    fn get<Q: std::hash::Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: K, value: V, cost: u64) {
        if self.entries.insert(key.clone(), value).is_some() {
            return;
        }
        self.order.push_back((key, cost));
        self.cost += cost;
        while self.cost > self.budget {
            let Some((oldest, cost)) = self.order.pop_front() else { break };
            self.entries.remove(&oldest);
            self.cost -= cost;
        }
    }
}

/// Each file's parsed footer with its page index, by path, the oldest
/// forgotten first past `FOOTERS_KEPT`. Safe to keep: a key never names
/// other bytes (files are written create-only; a rewrite gets a new key).
#[derive(Debug)]
struct Footers(Mutex<Kept<PathBuf, ArrowReaderMetadata>>);

impl Default for Footers {
    fn default() -> Footers {
        Footers(Mutex::new(Kept::new(FOOTERS_KEPT as u64)))
    }
}

impl Footers {
    fn get<R: ChunkReader>(&self, path: &Path, reader: &R) -> parquet::errors::Result<ArrowReaderMetadata> {
        if let Some(found) = self.0.lock_or_recover().get(path) {
            return Ok(found);
        }
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let loaded = ArrowReaderMetadata::load(reader, options.clone())?;
        // Text as dictionaries: decoding keeps each page's dictionary
        // instead of copying a string per row, and a filter or a group
        // looks at each distinct value once.
        let fields: Vec<Field> = loaded
            .schema()
            .fields()
            .iter()
            .map(|field| match field.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Field::new(
                    field.name(),
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    field.is_nullable(),
                ),
                _ => field.as_ref().clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, loaded.schema().metadata().clone()));
        let loaded = ArrowReaderMetadata::try_new(loaded.metadata().clone(), options.with_schema(schema))?;
        self.0.lock_or_recover().insert(path.to_path_buf(), loaded.clone(), 1);
        Ok(loaded)
    }
}

/// Bytes of bloom filters kept between queries.
const BLOOM_BYTES_KEPT: u64 = 64 * 1024 * 1024;

/// A row group's column: file, row group, leaf column.
type BloomKey = (PathBuf, usize, usize);

/// Bloom filters read so far (`None`: the column chunk has none), the
/// oldest forgotten first past `BLOOM_BYTES_KEPT`. A query for one series
/// of a high-cardinality dataset checks one per row group in range; kept,
/// a check is a hash and a few bit tests instead of a 32 KiB read.
#[derive(Debug)]
struct Blooms(Mutex<Kept<BloomKey, Option<Arc<Sbbf>>>>);

impl Default for Blooms {
    fn default() -> Blooms {
        Blooms(Mutex::new(Kept::new(BLOOM_BYTES_KEPT)))
    }
}

impl Blooms {
    fn get<R: ChunkReader>(
        &self,
        key: BloomKey,
        column: &parquet::file::metadata::ColumnChunkMetaData,
        reader: &R,
    ) -> parquet::errors::Result<Option<Arc<Sbbf>>> {
        if let Some(found) = self.0.lock_or_recover().get(&key) {
            return Ok(found);
        }
        let read = Sbbf::read_from_column_chunk(column, reader)?.map(Arc::new);
        let size = u64::try_from(column.bloom_filter_length().unwrap_or(0)).unwrap_or(0) + 64;
        self.0.lock_or_recover().insert(key, read.clone(), size);
        Ok(read)
    }
}

/// What the executor made of a query.
pub(crate) enum Outcome {
    /// The whole answer.
    Answered(RecordBatch),
    /// Something it does not read exactly as DuckDB would: DuckDB answers.
    Declined,
}

/// Why a scan ended early.
enum Stop {
    Declined,
    Failed(Failure),
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Stop {
        Stop::Failed(failure)
    }
}

/// Answers `plan` over `files` and `buffered` (the query's snapshot), or
/// declines. Blocking; checks `watch` before each file, between a file's
/// batches and before each buffered batch.
pub(crate) fn answer(
    plan: &NativePlan,
    files: &[Readable],
    buffered: &[RecordBatch],
    caches: &Caches,
    watch: &Watch,
) -> Result<Outcome, Failure> {
    let answered = (|| -> Result<RecordBatch, Stop> {
        let mut accumulator = Accumulator::new(plan);
        for file in files {
            crate::failpoint::hit("query.native.before_file");
            if let Some(delay) = crate::failpoint::delay("query.native.before_file") {
                std::thread::sleep(delay);
            }
            check(watch)?;
            let reader = file.open().map_err(|e| internal(file.path(), e))?;
            scan_file(plan, file.path(), reader, caches, watch, &mut accumulator)?;
        }
        for batch in buffered {
            check(watch)?;
            accumulator.add(batch)?;
        }
        accumulator.finish()
    })();
    match answered {
        Ok(batch) => Ok(Outcome::Answered(batch)),
        Err(Stop::Declined) => Ok(Outcome::Declined),
        Err(Stop::Failed(failure)) => Err(failure),
    }
}

/// A data file that could not be read: logged with its path, answered
/// without it (the answer names no server path).
fn internal(path: &Path, error: impl std::fmt::Display) -> Failure {
    tracing::warn!(path = %path.display(), %error, "reading a data file failed");
    Failure::new(ErrorCode::Internal, format!("storage: reading a data file failed: {error}"))
}

/// The stop that `watch` calls for, if any.
fn check(watch: &Watch) -> Result<(), Stop> {
    if !watch.stopped() {
        return Ok(());
    }
    let timeout = Failure::new(ErrorCode::QueryTimeout, "the query ran past query.timeout_ms and was stopped");
    Err(Stop::Failed(watch.explain(timeout)))
}

/// Reads the rows of one file that may match, into `accumulator`.
fn scan_file<R: ChunkReader + 'static>(
    plan: &NativePlan,
    path: &Path,
    reader: R,
    caches: &Caches,
    watch: &Watch,
    accumulator: &mut Accumulator<'_>,
) -> Result<(), Stop> {
    let metadata = caches.footers.get(path, &reader).map_err(|e| internal(path, e))?;
    let parquet = metadata.metadata().clone();
    let descriptor = parquet.file_metadata().schema_descr();
    // Files are flat: each top-level field is one leaf, in order.
    let leaf = |name: &str| {
        (0..descriptor.num_columns())
            .find(|&i| descriptor.column(i).path().parts().len() == 1 && descriptor.column(i).name() == name)
    };
    let Some(time) = leaf(&plan.time_column) else { return Err(Stop::Declined) };
    let mut filters = Vec::with_capacity(plan.filters.len());
    for (column, values) in &plan.filters {
        // A file without the column holds nulls there: no row matches.
        let Some(index) = leaf(column) else { return Ok(()) };
        filters.push((index, values.as_slice()));
    }
    let mut groups = Vec::new();
    let mut selectors = Vec::new();
    for group in 0..parquet.num_row_groups() {
        let rows = parquet.row_group(group).num_rows().max(0) as usize;
        if !group_may_match(&parquet, group, plan, time, &filters)
            || !blooms_may_match(&parquet, group, (path, &reader, &caches.blooms), &filters)
                .map_err(|e| internal(path, e))?
        {
            continue;
        }
        let kept = pages_that_may_match(&parquet, group, rows, plan, time, &filters);
        if kept.is_empty() {
            continue;
        }
        groups.push(group);
        let mut at = 0;
        for range in kept {
            if range.start > at {
                selectors.push(RowSelector::skip(range.start - at));
            }
            selectors.push(RowSelector::select(range.end - range.start));
            at = range.end;
        }
        if rows > at {
            selectors.push(RowSelector::skip(rows - at));
        }
    }
    if groups.is_empty() {
        return Ok(());
    }
    let wanted: Vec<usize> = plan.columns().iter().filter_map(|c| leaf(c)).collect();
    let projection = ProjectionMask::leaves(descriptor, wanted);
    let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(reader, metadata)
        .with_row_groups(groups)
        .with_row_selection(RowSelection::from(selectors))
        .with_projection(projection)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| internal(path, e))?;
    for batch in batches {
        check(watch)?;
        accumulator.add(&batch.map_err(|e| internal(path, e))?)?;
    }
    Ok(())
}

/// Whether a row group's statistics allow a row in the time range that
/// holds one of each filter's values.
fn group_may_match(
    parquet: &ParquetMetaData,
    group: usize,
    plan: &NativePlan,
    time: usize,
    filters: &[(usize, &[String])],
) -> bool {
    let group = parquet.row_group(group);
    if let Some(Statistics::Int64(stats)) = group.column(time).statistics()
        && let (Some(min), Some(max)) = (stats.min_opt(), stats.max_opt())
        && (*max < plan.start_ns || *min >= plan.end_ns)
    {
        return false;
    }
    filters.iter().all(|(index, values)| {
        let column = group.column(*index);
        let Some(stats) = column.statistics() else { return true };
        if stats.null_count_opt().is_some_and(|nulls| nulls as i64 >= group.num_rows()) {
            return false;
        }
        match (stats, stats.min_bytes_opt(), stats.max_bytes_opt()) {
            (Statistics::ByteArray(_), Some(min), Some(max)) => {
                values.iter().any(|v| min <= v.as_bytes() && v.as_bytes() <= max)
            }
            _ => true,
        }
    })
}

/// Whether a row group's bloom filters (tag columns have them) allow one
/// of each filter's values. Statistics seldom rule a tag value out, as
/// text ranges are wide (`host_7` lies between `host_1` and `host_90`).
fn blooms_may_match<R: ChunkReader>(
    parquet: &ParquetMetaData,
    group: usize,
    (path, reader, blooms): (&Path, &R, &Blooms),
    filters: &[(usize, &[String])],
) -> parquet::errors::Result<bool> {
    for (index, values) in filters {
        let column = parquet.row_group(group).column(*index);
        if let Some(bloom) = blooms.get((path.to_path_buf(), group, *index), column, reader)?
            && !values.iter().any(|value| bloom.check(value.as_str()))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The row ranges of a row group whose pages, by the page index, may hold
/// a matching row: for the time column and each filter column, the pages
/// whose bounds admit the range or a value, intersected.
fn pages_that_may_match(
    parquet: &ParquetMetaData,
    group: usize,
    rows: usize,
    plan: &NativePlan,
    time: usize,
    filters: &[(usize, &[String])],
) -> Vec<Range<usize>> {
    let index = parquet.page_index_for_row_group(group);
    let mut kept: Vec<Range<usize>> = std::iter::once(0..rows).collect();
    let columns = std::iter::once((time, None)).chain(filters.iter().map(|(i, values)| (*i, Some(*values))));
    for (column, values) in columns {
        let (Some(pages), Some(offsets)) = (index.column_index(column), index.offset_index(column)) else { continue };
        let locations = offsets.page_locations();
        let mut ranges = Vec::with_capacity(locations.len());
        for (page, location) in locations.iter().enumerate() {
            let start = location.first_row_index.max(0) as usize;
            let end = locations.get(page + 1).map_or(rows, |next| next.first_row_index.max(0) as usize);
            if page_may_match(pages, page, plan, values) {
                ranges.push(start.min(rows)..end.min(rows));
            }
        }
        kept = intersect(&kept, &ranges);
    }
    kept
}

/// Whether one page may hold a matching row: for the time column
/// (`values` is `None`) a time in the range, for a filter column one of
/// `values`. Anything the index does not say keeps the page.
fn page_may_match(pages: &ColumnIndexMetaData, page: usize, plan: &NativePlan, values: Option<&[String]>) -> bool {
    if page >= pages.num_pages() as usize {
        return true;
    }
    match (pages, values) {
        (ColumnIndexMetaData::INT64(index), None) => match (index.min_value(page), index.max_value(page)) {
            (Some(min), Some(max)) => *max >= plan.start_ns && *min < plan.end_ns,
            _ => !index.is_null_page(page),
        },
        (ColumnIndexMetaData::BYTE_ARRAY(index), Some(values)) => {
            if index.is_null_page(page) {
                return false;
            }
            match (index.min_value(page), index.max_value(page)) {
                (Some(min), Some(max)) => values.iter().any(|v| min <= v.as_bytes() && v.as_bytes() <= max),
                _ => true,
            }
        }
        _ => true,
    }
}

/// The intersection of two sorted lists of disjoint ranges.
fn intersect(a: &[Range<usize>], b: &[Range<usize>]) -> Vec<Range<usize>> {
    let (mut i, mut j, mut out) = (0, 0, Vec::<Range<usize>>::new());
    while i < a.len() && j < b.len() {
        let start = a[i].start.max(b[j].start);
        let end = a[i].end.min(b[j].end);
        if start < end {
            match out.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => out.push(start..end),
            }
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// An aggregate's running state in one bucket.
#[derive(Debug, Clone, Copy)]
enum State {
    Count(i64),
    /// The sum of the non-null values and their number (avg and sum).
    Sum(f64, i64),
    /// The least or greatest value so far (`true`: greatest).
    Float(Option<f64>, bool),
    Integer(Option<i64>, bool),
    Unsigned(Option<u64>, bool),
}

/// An aggregate's input column in one batch.
enum Input<'a> {
    /// Count only: nulls are what matter.
    Any(&'a dyn Array),
    Float(&'a Float64Array),
    Integer(&'a Int64Array),
    Unsigned(&'a UInt64Array),
    /// The batch lacks the column: every value is null.
    Missing,
}

/// Whether `a` sorts after `b` the way DuckDB orders doubles: NaN above
/// everything, and equal values (`-0.0`, `0.0`) not after each other.
fn float_after(a: f64, b: f64) -> bool {
    match (a.is_nan(), b.is_nan()) {
        (true, nan) => !nan,
        (false, true) => false,
        _ => a > b,
    }
}

/// Group columns a native answer may have: a group is its columns' value
/// ids packed into one `u128`.
const GROUPS_MAX: usize = 4;

/// Distinct (bucket, group) pairs a native answer may hold; past it,
/// DuckDB (which can spill) answers.
const SLOTS_MAX: usize = 1 << 20;

/// The id of a null group value.
const NULL_VALUE: u32 = u32::MAX;

/// The values one group column has taken, each with an id.
#[derive(Default)]
struct GroupValues {
    ids: FxHashMap<String, u32>,
    texts: Vec<String>,
    /// The last dictionary seen and its values' ids.
    seen: Option<(ArrayRef, Vec<u32>)>,
}

impl GroupValues {
    /// Each row's value id; `None` for a column that is not text.
    fn ids_of(&mut self, array: &dyn Array) -> Option<Vec<u32>> {
        let (ids, texts) = (&mut self.ids, &mut self.texts);
        let mut id = |text: &str| {
            *ids.entry(text.to_string()).or_insert_with(|| {
                texts.push(text.to_string());
                texts.len() as u32 - 1
            })
        };
        per_row(array, NULL_VALUE, &mut id, &mut self.seen)
    }

    fn text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }
}

/// The buckets (and groups) seen so far and their states.
struct Accumulator<'p> {
    plan: &'p NativePlan,
    /// Per group column, its values.
    values: Vec<GroupValues>,
    /// Each group's value ids (packed, 32 bits per column), and the
    /// group's id.
    groups: FxHashMap<u128, u32>,
    group_keys: Vec<u128>,
    /// (bucket label, group) → slot.
    slots: FxHashMap<(i64, u32), usize>,
    /// Per slot: its bucket label and group.
    labels: Vec<i64>,
    slot_groups: Vec<u32>,
    /// `aggregates.len()` states per slot.
    states: Vec<State>,
    /// The last slot hit: rows of a series come in time order.
    last: Option<((i64, u32), usize)>,
    /// Per filter, the last dictionary matched and its answer.
    dictionaries: Vec<Option<(ArrayRef, Vec<bool>)>>,
}

impl<'p> Accumulator<'p> {
    fn new(plan: &'p NativePlan) -> Accumulator<'p> {
        Accumulator {
            plan,
            values: plan.groups.iter().map(|_| GroupValues::default()).collect(),
            groups: FxHashMap::default(),
            group_keys: Vec::new(),
            slots: FxHashMap::default(),
            labels: Vec::new(),
            slot_groups: Vec::new(),
            states: Vec::new(),
            last: None,
            dictionaries: plan.filters.iter().map(|_| None).collect(),
        }
    }

    fn initial(aggregate: &Aggregate) -> State {
        let greatest = aggregate.function == Function::Max;
        match (aggregate.function, aggregate.kind) {
            (Function::Count, _) => State::Count(0),
            (Function::Avg | Function::Sum, _) => State::Sum(0.0, 0),
            (_, ColumnKind::Float) => State::Float(None, greatest),
            (_, ColumnKind::Unsigned) => State::Unsigned(None, greatest),
            _ => State::Integer(None, greatest),
        }
    }

    /// The group of the packed value ids `key`.
    fn group(&mut self, key: u128) -> u32 {
        if let Some(group) = self.groups.get(&key) {
            return *group;
        }
        let group = self.group_keys.len() as u32;
        self.groups.insert(key, group);
        self.group_keys.push(key);
        group
    }

    fn slot(&mut self, label: i64, group: u32) -> Result<usize, Stop> {
        if let Some((last, slot)) = self.last
            && last == (label, group)
        {
            return Ok(slot);
        }
        let next = self.labels.len();
        let slot = *self.slots.entry((label, group)).or_insert(next);
        if slot == next {
            if next >= SLOTS_MAX {
                return Err(Stop::Declined);
            }
            self.labels.push(label);
            self.slot_groups.push(group);
            self.states.extend(self.plan.aggregates.iter().map(Accumulator::initial));
        }
        self.last = Some(((label, group), slot));
        Ok(slot)
    }

    /// Adds the rows of `batch` in the range that pass the filters.
    fn add(&mut self, batch: &RecordBatch) -> Result<(), Stop> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let plan = self.plan;
        let Some(times) = batch.column_by_name(&plan.time_column) else { return Err(Stop::Declined) };
        let times: &[i64] = match times.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, _) if times.null_count() == 0 => {
                times.as_primitive::<arrow::datatypes::TimestampNanosecondType>().values()
            }
            DataType::Int64 if times.null_count() == 0 => times.as_primitive::<Int64Type>().values(),
            _ => return Err(Stop::Declined),
        };
        let mut keep: Vec<bool> = times.iter().map(|t| *t >= plan.start_ns && *t < plan.end_ns).collect();
        for (filter, (column, values)) in plan.filters.iter().enumerate() {
            let Some(array) = batch.column_by_name(column) else { return Ok(()) };
            let seen = &mut self.dictionaries[filter];
            let Some(matching) = matching(array.as_ref(), values, seen) else { return Err(Stop::Declined) };
            keep.iter_mut().zip(matching).for_each(|(k, m)| *k &= m);
        }
        let columns: Vec<Option<&ArrayRef>> = plan.aggregates.iter().map(|a| batch.column_by_name(&a.column)).collect();
        let mut inputs = Vec::with_capacity(plan.aggregates.len());
        for (aggregate, column) in plan.aggregates.iter().zip(&columns) {
            inputs.push(match (column, aggregate.function, aggregate.kind) {
                (None, ..) => Input::Missing,
                (Some(array), Function::Count, _) => Input::Any(array.as_ref()),
                (Some(array), _, ColumnKind::Float) if *array.data_type() == DataType::Float64 => {
                    Input::Float(array.as_primitive::<Float64Type>())
                }
                (Some(array), _, ColumnKind::Integer) if *array.data_type() == DataType::Int64 => {
                    Input::Integer(array.as_primitive::<Int64Type>())
                }
                (Some(array), _, ColumnKind::Unsigned) if *array.data_type() == DataType::UInt64 => {
                    Input::Unsigned(array.as_primitive::<UInt64Type>())
                }
                _ => return Err(Stop::Declined),
            });
        }
        let mut group_ids = Vec::with_capacity(plan.groups.len());
        for (values, column) in self.values.iter_mut().zip(&plan.groups) {
            group_ids.push(match batch.column_by_name(column) {
                None => vec![NULL_VALUE; rows],
                Some(array) => values.ids_of(array.as_ref()).ok_or(Stop::Declined)?,
            });
        }
        let width = plan.width_ns;
        let mut last_group = None;
        for (row, time) in times.iter().enumerate() {
            if !keep[row] {
                continue;
            }
            let label = if plan.single { plan.first_ns } else { time - time.rem_euclid(width) };
            let key = group_ids.iter().enumerate().fold(0u128, |key, (c, ids)| key | u128::from(ids[row]) << (32 * c));
            let group = match last_group {
                Some((last, group)) if last == key => group,
                _ => self.group(key),
            };
            last_group = Some((key, group));
            let base = self.slot(label, group)? * inputs.len();
            for (j, input) in inputs.iter().enumerate() {
                update(&mut self.states[base + j], input, row);
            }
        }
        Ok(())
    }

    /// A slot's value of aggregate `j`, as the SQL finalizes it.
    fn cell(&self, slot: usize, j: usize) -> Cell {
        let aggregate = &self.plan.aggregates[j];
        match self.states[slot * self.plan.aggregates.len() + j] {
            State::Count(n) => Cell::Integer(Some(n)),
            State::Sum(sum, n) if n > 0 => {
                Cell::Float(Some(if aggregate.function == Function::Avg { sum / n as f64 } else { sum }))
            }
            State::Sum(..) => Cell::Float(None),
            State::Float(v, _) => Cell::Float(v),
            State::Integer(v, _) => Cell::Integer(v),
            State::Unsigned(v, _) => Cell::Unsigned(v),
        }
    }

    /// The answer's rows, unordered: one per (bucket, group) with rows,
    /// or, gap-filled, one per bucket of the range for every group (the
    /// one group of an ungrouped query even without rows), empty buckets
    /// null, or with `previous` each group's last non-null value so far.
    fn rows(&mut self) -> Result<Vec<Row>, Stop> {
        let plan = self.plan;
        let empty = || plan.aggregates.iter().map(Cell::empty).collect::<Vec<_>>();
        if plan.fill == Fill::None {
            return Ok((0..self.labels.len())
                .map(|slot| Row {
                    label: self.labels[slot],
                    group: self.slot_groups[slot],
                    cells: (0..plan.aggregates.len()).map(|j| self.cell(slot, j)).collect(),
                })
                .collect());
        }
        if plan.groups.is_empty() {
            self.group(0);
        }
        let mut buckets = Vec::new();
        let mut label = Some(plan.first_ns);
        while let Some(at) = label.filter(|at| *at < plan.end_ns) {
            if buckets.len().saturating_mul(self.group_keys.len().max(1)) >= SLOTS_MAX {
                return Err(Stop::Declined);
            }
            buckets.push(at);
            label = if plan.single { None } else { at.checked_add(plan.width_ns) };
        }
        let mut rows = Vec::with_capacity(buckets.len() * self.group_keys.len());
        for group in 0..self.group_keys.len() as u32 {
            let mut carried = empty();
            for &label in &buckets {
                let mut cells = match self.slots.get(&(label, group)) {
                    Some(&slot) => (0..plan.aggregates.len()).map(|j| self.cell(slot, j)).collect(),
                    None => empty(),
                };
                if plan.fill == Fill::Previous {
                    for (cell, last) in cells.iter_mut().zip(carried.iter_mut()) {
                        if cell.is_null() {
                            *cell = *last;
                        } else {
                            *last = *cell;
                        }
                    }
                }
                rows.push(Row { label, group, cells });
            }
        }
        Ok(rows)
    }

    /// The answer: by bucket label in the plan's order, then by each
    /// group column ascending (nulls last, as DuckDB sorts), paged.
    fn finish(mut self) -> Result<RecordBatch, Stop> {
        let plan = self.plan;
        let mut rows = self.rows()?;
        let group_text = |group: u32, column: usize| {
            let id = (self.group_keys[group as usize] >> (32 * column)) as u32;
            self.values[column].text(id)
        };
        rows.sort_unstable_by(|a, b| {
            let by_time = a.label.cmp(&b.label);
            let by_time = if plan.desc { by_time.reverse() } else { by_time };
            (0..plan.groups.len()).fold(by_time, |order, column| {
                order.then_with(|| match (group_text(a.group, column), group_text(b.group, column)) {
                    (Some(x), Some(y)) => x.as_bytes().cmp(y.as_bytes()),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                })
            })
        });
        let skip = usize::try_from(plan.offset.unwrap_or(0)).unwrap_or(usize::MAX);
        let take = plan.limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let chosen: Vec<&Row> = rows.iter().skip(skip).take(take).collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(chosen.iter().map(|r| r.label)))];
        for column in 0..plan.groups.len() {
            columns.push(Arc::new(StringArray::from_iter(chosen.iter().map(|r| group_text(r.group, column)))));
        }
        for (j, aggregate) in plan.aggregates.iter().enumerate() {
            let cells = chosen.iter().map(|r| r.cells[j]);
            let column: ArrayRef = match Cell::empty(aggregate) {
                Cell::Float(_) => Arc::new(Float64Array::from_iter(cells.map(|c| match c {
                    Cell::Float(v) => v,
                    _ => None,
                }))),
                Cell::Unsigned(_) => Arc::new(UInt64Array::from_iter(cells.map(|c| match c {
                    Cell::Unsigned(v) => v,
                    _ => None,
                }))),
                Cell::Integer(_) => Arc::new(Int64Array::from_iter(cells.map(|c| match c {
                    Cell::Integer(v) => v,
                    _ => None,
                }))),
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(Arc::new(plan.output_schema()), columns).expect("columns match the output schema"))
    }
}

/// One row of the answer before it is ordered.
struct Row {
    label: i64,
    group: u32,
    cells: Vec<Cell>,
}

/// One aggregate's value in a row of the answer.
#[derive(Debug, Clone, Copy)]
enum Cell {
    Float(Option<f64>),
    Integer(Option<i64>),
    Unsigned(Option<u64>),
}

impl Cell {
    /// The null of `aggregate`'s output type (which is DuckDB's type of
    /// the aggregate).
    fn empty(aggregate: &Aggregate) -> Cell {
        match (aggregate.function, aggregate.kind) {
            (Function::Count, _) => Cell::Integer(None),
            (Function::Avg | Function::Sum, _) | (_, ColumnKind::Float) => Cell::Float(None),
            (_, ColumnKind::Unsigned) => Cell::Unsigned(None),
            _ => Cell::Integer(None),
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Cell::Float(None) | Cell::Integer(None) | Cell::Unsigned(None))
    }
}

/// Folds row `row` of `input` into `state`.
fn update(state: &mut State, input: &Input<'_>, row: usize) {
    match (state, input) {
        (State::Count(n), Input::Any(array)) => *n += i64::from(array.is_valid(row)),
        (State::Count(n), Input::Float(array)) => *n += i64::from(array.is_valid(row)),
        (State::Count(n), Input::Integer(array)) => *n += i64::from(array.is_valid(row)),
        (State::Count(n), Input::Unsigned(array)) => *n += i64::from(array.is_valid(row)),
        (State::Sum(sum, n), Input::Float(array)) if array.is_valid(row) => {
            *sum += array.value(row);
            *n += 1;
        }
        (State::Float(best, greatest), Input::Float(array)) if array.is_valid(row) => {
            let v = array.value(row);
            let replace = match *best {
                None => true,
                Some(b) if *greatest => float_after(v, b),
                Some(b) => float_after(b, v),
            };
            if replace {
                *best = Some(v);
            }
        }
        (State::Integer(best, greatest), Input::Integer(array)) if array.is_valid(row) => {
            let v = array.value(row);
            if best.is_none_or(|b| if *greatest { v > b } else { v < b }) {
                *best = Some(v);
            }
        }
        (State::Unsigned(best, greatest), Input::Unsigned(array)) if array.is_valid(row) => {
            let v = array.value(row);
            if best.is_none_or(|b| if *greatest { v > b } else { v < b }) {
                *best = Some(v);
            }
        }
        _ => {}
    }
}

/// For each row of a text column, whether it holds one of `values`
/// (null: no); `None` for a column that is not text.
fn matching(array: &dyn Array, values: &[String], seen: &mut Option<(ArrayRef, Vec<bool>)>) -> Option<Vec<bool>> {
    per_row(array, false, &mut |text| values.iter().any(|v| v == text), seen)
}

/// Each row of a text column through `each`, `null` for a null row;
/// `None` for a column that is not text. A dictionary's values go through
/// `each` once, and `seen` keeps the last dictionary's results: the
/// batches of one column chunk share its dictionary, which can hold
/// thousands of values. It holds the dictionary itself, so the pointer
/// compared cannot be reused by another.
fn per_row<T: Copy>(
    array: &dyn Array,
    null: T,
    each: &mut dyn FnMut(&str) -> T,
    seen: &mut Option<(ArrayRef, Vec<T>)>,
) -> Option<Vec<T>> {
    let mut texts =
        |strings: &mut dyn Iterator<Item = Option<&str>>| strings.map(|t| t.map_or(null, &mut *each)).collect();
    Some(match array.data_type() {
        DataType::Utf8 => texts(&mut array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => texts(&mut array.as_string::<i64>().iter()),
        DataType::Utf8View => texts(&mut array.as_string_view().iter()),
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_any_dictionary_opt()?;
            let values = dictionary.values();
            if !seen.as_ref().is_some_and(|(kept, _)| Arc::ptr_eq(kept, values)) {
                let mapped = per_row(values.as_ref(), null, each, &mut None)?;
                *seen = Some((values.clone(), mapped));
            }
            let mapped = &seen.as_ref().expect("set above").1;
            let keys = dictionary.normalized_keys();
            let value = |row: usize| mapped.get(keys[row]).copied().filter(|_| array.is_valid(row));
            (0..array.len()).map(|row| value(row).unwrap_or(null)).collect()
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, Int32Array};
    use arrow::datatypes::Int32Type;

    use super::*;
    use crate::schema::ColumnDef;

    fn schema() -> DatasetSchema {
        let mut schema = DatasetSchema::empty("time");
        for (name, kind) in [
            ("host", ColumnKind::Tag),
            ("note", ColumnKind::Text),
            ("f", ColumnKind::Float),
            ("i", ColumnKind::Integer),
        ] {
            schema.columns.push(ColumnDef { name: name.to_string(), kind });
        }
        schema
    }

    fn request(query: Json) -> QueryRequest {
        serde_json::from_value(query).unwrap()
    }

    /// The native plan of `query`, planned as SQL first as the engine
    /// does (a query the SQL plan refuses never reaches the executor).
    fn native(query: Json) -> Option<NativePlan> {
        let request = request(query);
        let planned = super::super::plan::plan(&request, &schema()).ok()?;
        NativePlan::new(&request, &schema(), &planned)
    }

    #[test]
    fn only_downsamples_pinning_tags_are_native() {
        let with = |filters: Json, aggregations: Json, extra: Json| {
            let mut query = serde_json::json!({"time_range": {"start": 0, "end": 1_000_000},
                "filters": filters, "downsample": {"interval": "1s", "aggregations": aggregations}});
            for (key, value) in extra.as_object().unwrap() {
                query[key] = value.clone();
            }
            native(query).is_some()
        };
        let host = serde_json::json!({"column": "host", "op": "=", "value": "a"});
        let avg = serde_json::json!([{"fn": "avg", "column": "f"}]);
        let none = serde_json::json!({});
        assert!(with(host.clone(), avg.clone(), none.clone()));
        let both = serde_json::json!({"and": [host, {"column": "host", "op": "in", "value": ["a", "b"]}]});
        assert!(with(both, avg.clone(), none.clone()));
        // Not a tag, not `=`/`in`, an `or`, a number value.
        for filters in [
            serde_json::json!({"column": "note", "op": "=", "value": "a"}),
            serde_json::json!({"column": "host", "op": "!=", "value": "a"}),
            serde_json::json!({"or": [{"column": "host", "op": "=", "value": "a"}]}),
            serde_json::json!({"column": "host", "op": "in", "value": ["a", 1]}),
            serde_json::json!({"and": [{"column": "host", "op": "=", "value": "a"}, {"column": "f", "op": ">", "value": 1}]}),
        ] {
            assert!(!with(filters.clone(), avg.clone(), none.clone()), "{filters}");
        }
        // Integer sums and averages, medians: DuckDB's.
        for aggregations in [
            serde_json::json!([{"fn": "avg", "column": "i"}]),
            serde_json::json!([{"fn": "sum", "column": "i"}]),
            serde_json::json!([{"fn": "median", "column": "f"}]),
            serde_json::json!([{"fn": "min", "column": "note"}]),
        ] {
            assert!(!with(host.clone(), aggregations.clone(), none.clone()), "{aggregations}");
        }
        assert!(with(
            host.clone(),
            serde_json::json!([{"fn": "min", "column": "i"}, {"fn": "count", "column": "note"}]),
            none
        ));
        assert!(with(host.clone(), avg.clone(), serde_json::json!({"group_by": ["host"]})));
        assert!(!with(host.clone(), avg.clone(), serde_json::json!({"group_by": ["note"]})));
        assert!(!with(host.clone(), avg.clone(), serde_json::json!({"group_by": ["host", "host"]})));
        let mut filled = serde_json::json!({"time_range": {"start": 0, "end": 1_000_000}, "filters": host,
            "downsample": {"interval": "1s", "aggregations": avg, "fill": "null"}});
        assert!(native(filled.clone()).is_some());
        // More buckets than it keeps.
        filled["downsample"]["fill"] = Json::from("none");
        filled["downsample"]["interval"] = Json::from("1ns");
        filled["time_range"]["end"] = Json::from(1i64 << 40);
        assert!(native(filled).is_none());
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of one range are the point
    fn ranges_intersect() {
        assert_eq!(intersect(&[0..10, 20..30], &[5..25]), vec![5..10, 20..25]);
        assert_eq!(intersect(&[0..10], &[0..4, 4..8]), vec![0..8]);
        assert_eq!(intersect(&[0..10], &[10..20]), Vec::<Range<usize>>::new());
    }

    #[test]
    fn kept_entries_are_forgotten_oldest_first_past_the_budget() {
        let mut kept = Kept::new(10);
        kept.insert("a", 1, 4);
        kept.insert("b", 2, 4);
        kept.insert("a", 9, 4); // already kept: counted once, value replaced
        assert_eq!((kept.get(&"a"), kept.get(&"b"), kept.cost), (Some(9), Some(2), 8));
        kept.insert("c", 3, 4);
        assert_eq!((kept.get(&"a"), kept.get(&"b"), kept.get(&"c"), kept.cost), (None, Some(2), Some(3), 8));
    }

    #[test]
    fn doubles_order_as_duckdb_orders_them() {
        assert!(float_after(f64::NAN, f64::INFINITY));
        assert!(!float_after(f64::INFINITY, f64::NAN));
        assert!(!float_after(f64::NAN, f64::NAN));
        assert!(!float_after(0.0, -0.0) && !float_after(-0.0, 0.0));
        assert!(float_after(1.0, -1.0));
    }

    #[test]
    fn text_matches_plain_and_dictionary_columns() {
        let plain = StringArray::from(vec![Some("a"), None, Some("b"), Some("c")]);
        let values = ["a".to_string(), "c".to_string()];
        assert_eq!(matching(&plain, &values, &mut None), Some(vec![true, false, false, true]));
        let dictionary: DictionaryArray<Int32Type> = vec![Some("c"), Some("b"), None, Some("a")].into_iter().collect();
        let mut seen = None;
        assert_eq!(matching(&dictionary, &values, &mut seen), Some(vec![true, false, false, true]));
        // The same dictionary again (as the next batch of a column chunk
        // has it), with other keys: the kept answer is reused, rightly.
        let again = DictionaryArray::<Int32Type>::try_new(Int32Array::from(vec![2, 0, 1]), dictionary.values().clone())
            .unwrap();
        assert!(seen.as_ref().is_some_and(|(kept, _)| Arc::ptr_eq(kept, again.values())));
        assert_eq!(matching(&again, &values, &mut seen), Some(vec![true, true, false]));
        // Another dictionary with the same values is matched afresh.
        let other: DictionaryArray<Int32Type> = vec![Some("a"), Some("x")].into_iter().collect();
        assert_eq!(matching(&other, &values, &mut seen), Some(vec![true, false]));
        assert_eq!(matching(&Int64Array::from(vec![1]), &values, &mut None), None);
    }
}
