//! Validated names. Paths and object keys are only ever built from these.

use std::fmt;

/// A dataset name: `[a-z0-9][a-z0-9_-]{0,62}`.
///
/// [`DatasetName::parse`] is the only way to obtain one, so a value of this
/// type can never carry `..`, `/`, NUL or anything else that could escape a
/// directory when used in a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetName(String);

/// The longest dataset name, in bytes.
pub const DATASET_NAME_BYTES_MAX: usize = 63;

impl DatasetName {
    /// Validates `raw` as a dataset name.
    pub fn parse(raw: &str) -> Result<DatasetName, String> {
        let bytes = raw.as_bytes();
        if bytes.is_empty() {
            return Err("dataset name is empty".to_string());
        }
        if bytes.len() > DATASET_NAME_BYTES_MAX {
            return Err(format!("dataset name is {} bytes; at most {DATASET_NAME_BYTES_MAX} are allowed", bytes.len()));
        }
        let first_ok = bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit();
        let rest_ok = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
        if !first_ok || !rest_ok {
            return Err(format!(
                "dataset name {:?} must match [a-z0-9][a-z0-9_-]{{0,62}}",
                raw.chars().take(80).collect::<String>()
            ));
        }
        Ok(DatasetName(raw.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A storage target name: `[a-z0-9][a-z0-9_-]{0,62}`, like a dataset name.
///
/// [`TargetName::parse`] is the only way to obtain one. Target names are
/// stored in the catalog next to every file, and the default local target of
/// a name is the directory `<data_dir>/storage/<name>`, so a name can never
/// carry a separator, `..` or anything else a path could be tricked with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetName(String);

/// The longest storage target name, in bytes.
pub const TARGET_NAME_BYTES_MAX: usize = 63;

impl TargetName {
    /// Validates `raw` as a storage target name.
    pub fn parse(raw: &str) -> Result<TargetName, String> {
        let bytes = raw.as_bytes();
        let first_ok = bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
        if !first_ok || !rest_ok || bytes.len() > TARGET_NAME_BYTES_MAX {
            return Err(format!(
                "storage target name {:?} must match [a-z0-9][a-z0-9_-]{{0,62}}",
                raw.chars().take(80).collect::<String>()
            ));
        }
        Ok(TargetName(raw.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest column name, in bytes.
pub const COLUMN_NAME_BYTES_MAX: usize = 128;

/// Why a column name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnNameError {
    /// The name is empty.
    #[error("column name is empty")]
    Empty,
    /// The name has this many bytes, more than [`COLUMN_NAME_BYTES_MAX`].
    #[error("column name is {0} bytes; at most {COLUMN_NAME_BYTES_MAX} are allowed")]
    TooLong(usize),
    /// The name (quoted) holds a control character.
    #[error("column name {0:?} contains a control character")]
    ControlCharacter(String),
}

/// Checks a column (tag or field) name: non-empty, at most
/// [`COLUMN_NAME_BYTES_MAX`] bytes, no control characters.
pub fn check_column_name(name: &str) -> Result<(), ColumnNameError> {
    if name.is_empty() {
        return Err(ColumnNameError::Empty);
    }
    if name.len() > COLUMN_NAME_BYTES_MAX {
        return Err(ColumnNameError::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(ColumnNameError::ControlCharacter(name.to_string()));
    }
    Ok(())
}

/// The public id of a partition: `dataset/label` or `dataset/label/key`.
pub fn partition_label(dataset: &DatasetName, label: &str, key: &str) -> String {
    if key.is_empty() { format!("{dataset}/{label}") } else { format!("{dataset}/{label}/{key}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names() {
        for good in ["a", "cpu", "orders_2026", "web-logs", "0", &"x".repeat(63)] {
            assert!(DatasetName::parse(good).is_ok(), "{good} should be accepted");
        }
        for bad in [
            "",
            "../x",
            "/etc",
            "%2e%2e",
            "a\0b",
            "Cpu",
            "_x",
            "-x",
            "a.b",
            "a/b",
            "a b",
            "é",
            &"x".repeat(64),
            &"y".repeat(10_000),
        ] {
            assert!(DatasetName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn target_names() {
        for good in ["hot", "big-disk", "ssd_1", "0", &"t".repeat(63)] {
            assert!(TargetName::parse(good).is_ok(), "{good} should be accepted");
        }
        for bad in ["", ".", "..", "../x", "a/b", "/mnt", "Hot", "-x", "_x", "a.b", "a b", "a\0b", &"t".repeat(64)] {
            assert!(TargetName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn column_names() {
        assert!(check_column_name("usage_user").is_ok());
        assert!(check_column_name("with space and ünïcode").is_ok());
        assert!(check_column_name("").is_err());
        assert!(check_column_name("a\nb").is_err());
        assert!(check_column_name(&"c".repeat(129)).is_err());
    }
}
