//! The metadata Flight SQL clients ask for on connecting: server facts,
//! one catalog (`strata`) with one schema (`main`), and the datasets the
//! caller may read as its tables.

use std::sync::OnceLock;

use arrow::array::RecordBatch;
use arrow_flight::sql::metadata::{GetCatalogsBuilder, SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, SqlInfo};

use crate::error::{ErrorCode, Failure};
use crate::query::DatasetFilter;
use crate::store::Store;

/// The catalog every dataset is listed in.
pub const CATALOG: &str = "strata";
/// The schema every dataset is listed in.
pub const SCHEMA: &str = "main";

fn internal(error: impl std::fmt::Display) -> Failure {
    Failure::new(ErrorCode::Internal, format!("building Flight SQL metadata failed: {error}"))
}

fn info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut builder = SqlInfoDataBuilder::new();
        builder.append(SqlInfo::FlightSqlServerName, "Strata");
        builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        builder.append(SqlInfo::FlightSqlServerArrowVersion, "60");
        builder.append(SqlInfo::FlightSqlServerReadOnly, true);
        builder.append(SqlInfo::FlightSqlServerSql, true);
        builder.append(SqlInfo::FlightSqlServerSubstrait, false);
        builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        builder.append(SqlInfo::FlightSqlServerCancel, false);
        builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        builder.build().expect("static SQL info")
    })
}

/// `GetSqlInfo`: the facts asked for (all when none are named).
pub fn sql_info(query: CommandGetSqlInfo) -> Result<RecordBatch, Failure> {
    query.into_builder(info()).build().map_err(internal)
}

/// `GetCatalogs`.
pub fn catalogs() -> Result<RecordBatch, Failure> {
    let mut builder = GetCatalogsBuilder::new();
    builder.append(CATALOG);
    builder.build().map_err(internal)
}

/// `GetDbSchemas`, filtered as asked.
pub fn schemas(query: CommandGetDbSchemas) -> Result<RecordBatch, Failure> {
    let mut builder = query.into_builder();
    builder.append(CATALOG, SCHEMA);
    builder.build().map_err(internal)
}

/// `GetTableTypes`: datasets are tables.
pub fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch, Failure> {
    let mut builder = query.into_builder();
    builder.append("TABLE");
    builder.build().map_err(internal)
}

/// `GetTables`: the datasets `readable` accepts, with their Arrow schemas
/// when asked, filtered as asked.
pub fn tables(store: &Store, query: CommandGetTables, readable: &DatasetFilter) -> Result<RecordBatch, Failure> {
    let mut builder = query.into_builder();
    let mut datasets = store.datasets();
    datasets.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    for dataset in datasets.iter().filter(|d| readable(d.name.as_str())) {
        let schema = dataset.schema().arrow_schema();
        builder.append(CATALOG, SCHEMA, dataset.name.as_str(), "TABLE", &schema).map_err(internal)?;
    }
    builder.build().map_err(internal)
}
