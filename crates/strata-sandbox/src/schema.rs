//! Column kinds: what a column holds, as the host and the policy contract
//! name it, and the Arrow type it is stored as.

use arrow_schema::{DataType, TimeUnit};
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
    /// A string value (`string` is read as `text`).
    #[serde(alias = "string")]
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
