//! Queries: structured JSON queries and read-only SQL, answered by DuckDB over
//! the Parquet files of one catalog snapshot plus the rows still buffered.
//!
//! **Invariant:** only this module imports duckdb. The file list comes from
//! one catalog snapshot taken together with the buffers (see
//! `Store::snapshot`), so a query sees every row exactly once even while a
//! flush commits.

mod engine;
pub mod influxql;
mod native;
pub mod output;
mod parser;
pub mod plan;
mod spill;
mod sql_guard;
mod sql_refs;
mod sql_text;
mod watchdog;

pub use engine::{QueryEngine, QueryResult, QueryStats};

/// Which datasets a caller may read: `POST /v1/sql` creates views only for
/// the datasets this accepts, and refuses SQL that reads any other as a
/// table (403 `forbidden`, naming the scope).
pub type DatasetFilter = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Times `sql` run by DuckDB directly over a view `cpu` of `files`, in the
/// same process, `runs` times; returns milliseconds per run.
pub fn time_direct(files: &[std::path::PathBuf], sql: &str, runs: usize) -> Result<Vec<f64>, duckdb::Error> {
    let connection = duckdb::Connection::open_in_memory()?;
    let list: Vec<String> =
        files.iter().map(|f| format!("'{}'", f.display().to_string().replace('\'', "''"))).collect();
    connection.execute_batch(&format!(
        "SET threads = 2; CREATE VIEW cpu AS SELECT * FROM read_parquet([{}], union_by_name = true)",
        list.join(", ")
    ))?;
    let mut out = Vec::new();
    for _ in 0..runs {
        let started = std::time::Instant::now();
        let mut statement = connection.prepare(sql)?;
        let batches: Vec<arrow::record_batch::RecordBatch> = statement.query_arrow([])?.collect();
        std::hint::black_box(batches);
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}
