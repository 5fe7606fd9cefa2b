//! Dataset schemas: column kinds, additive evolution, the Arrow form.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// What a column holds. `Tag` and `Text` are both strings and interchangeable;
/// the distinction only records where a column came from (a line-protocol tag
/// or a string field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// The dataset's time column: nanoseconds since the epoch, UTC.
    Time,
    /// A string dimension (line-protocol tag).
    Tag,
    /// A string value.
    Text,
    /// A 64-bit float.
    Float,
    /// A signed 64-bit integer.
    Integer,
    /// An unsigned 64-bit integer.
    Unsigned,
    /// A boolean.
    Boolean,
}

impl ColumnKind {
    /// Whether a value of kind `incoming` may be stored in a column of kind `self`.
    pub fn accepts(self, incoming: ColumnKind) -> bool {
        self == incoming || (self.is_text() && incoming.is_text())
    }

    /// Tag or text.
    pub fn is_text(self) -> bool {
        matches!(self, ColumnKind::Tag | ColumnKind::Text)
    }

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnKind::Time => "time",
            ColumnKind::Tag => "tag",
            ColumnKind::Text => "text",
            ColumnKind::Float => "float",
            ColumnKind::Integer => "integer",
            ColumnKind::Unsigned => "unsigned",
            ColumnKind::Boolean => "boolean",
        }
    }

    /// The Arrow type of the column in buffers and Parquet files.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnKind::Time => time_type(),
            // Strings are dictionary-encoded: tags repeat, and so do most string
            // values in event data. Parquet keeps the dictionary encoding.
            ColumnKind::Tag | ColumnKind::Text => {
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
            }
            ColumnKind::Float => DataType::Float64,
            ColumnKind::Integer => DataType::Int64,
            ColumnKind::Unsigned => DataType::UInt64,
            ColumnKind::Boolean => DataType::Boolean,
        }
    }
}

/// The Arrow type of every time column: nanoseconds since the epoch.
///
/// Times are always UTC, but the type carries no timezone: Parquet then marks
/// the column `TIMESTAMP(NANOS, isAdjustedToUTC=false)`, which DuckDB reads
/// as `TIMESTAMP_NS` with full precision (a UTC-adjusted column would be read
/// as `TIMESTAMPTZ`, truncated to microseconds).
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, None)
}

/// One non-time column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// The column name.
    pub name: String,
    /// Its kind.
    pub kind: ColumnKind,
}

/// A dataset's schema at one version. Columns are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSchema {
    /// Increases by one with every evolution; 0 means no columns yet.
    pub version: u32,
    /// The name of the time column.
    pub time_column: String,
    /// Non-time columns in the order they were added.
    pub columns: Vec<ColumnDef>,
}

/// A value's kind differs from the stored column kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column:?} is {existing} but the request has a {incoming} value")]
pub struct SchemaConflict {
    /// The column.
    pub column: String,
    /// The stored kind.
    pub existing: &'static str,
    /// The kind in the request.
    pub incoming: &'static str,
}

impl DatasetSchema {
    /// An empty schema with the given time column.
    pub fn empty(time_column: &str) -> DatasetSchema {
        DatasetSchema { version: 0, time_column: time_column.to_string(), columns: Vec::new() }
    }

    /// The kind of `name`, if the column exists.
    pub fn kind_of(&self, name: &str) -> Option<ColumnKind> {
        if name == self.time_column {
            return Some(ColumnKind::Time);
        }
        self.columns.iter().find(|column| column.name == name).map(|column| column.kind)
    }

    /// Checks `incoming` columns against this schema and returns the evolved
    /// schema when new columns must be added, `None` when nothing changes.
    pub fn evolve(&self, incoming: &[ColumnDef]) -> Result<Option<DatasetSchema>, SchemaConflict> {
        let mut added = Vec::new();
        for column in incoming {
            match self.kind_of(&column.name) {
                Some(existing) if existing.accepts(column.kind) => {}
                Some(existing) => {
                    return Err(SchemaConflict {
                        column: column.name.clone(),
                        existing: existing.as_str(),
                        incoming: column.kind.as_str(),
                    });
                }
                None => added.push(column.clone()),
            }
        }
        if added.is_empty() {
            return Ok(None);
        }
        let mut next = self.clone();
        next.version += 1;
        next.columns.extend(added);
        Ok(Some(next))
    }

    /// The Arrow schema: the time column first, then every column in order.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields = Vec::with_capacity(self.columns.len() + 1);
        fields.push(Field::new(&self.time_column, time_type(), false));
        for column in &self.columns {
            fields.push(Field::new(&column.name, column.kind.arrow_type(), true));
        }
        Arc::new(Schema::new(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, kind: ColumnKind) -> ColumnDef {
        ColumnDef { name: name.to_string(), kind }
    }

    #[test]
    fn evolution_is_additive_and_conflicts_name_the_column() {
        let schema = DatasetSchema::empty("time");
        let v1 = schema.evolve(&[def("host", ColumnKind::Tag), def("cpu", ColumnKind::Float)]).unwrap().unwrap();
        assert_eq!(v1.version, 1);
        assert_eq!(v1.evolve(&[def("cpu", ColumnKind::Float)]).unwrap(), None);
        // Tags and text are both strings.
        assert_eq!(v1.evolve(&[def("host", ColumnKind::Text)]).unwrap(), None);
        let v2 = v1.evolve(&[def("mem", ColumnKind::Integer)]).unwrap().unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(v2.columns.len(), 3);
        let conflict = v2.evolve(&[def("cpu", ColumnKind::Integer)]).unwrap_err();
        assert_eq!(conflict.column, "cpu");
        assert_eq!(conflict.existing, "float");
        let conflict = v2.evolve(&[def("time", ColumnKind::Float)]).unwrap_err();
        assert_eq!(conflict.column, "time");
    }

    #[test]
    fn arrow_schema_puts_time_first() {
        let schema = DatasetSchema::empty("ts").evolve(&[def("a", ColumnKind::Boolean)]).unwrap().unwrap();
        let arrow = schema.arrow_schema();
        assert_eq!(arrow.field(0).name(), "ts");
        assert_eq!(arrow.field(1).data_type(), &DataType::Boolean);
    }
}
