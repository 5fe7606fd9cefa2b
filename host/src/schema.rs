//! Dataset schemas: column kinds, additive evolution, the Arrow form.

mod change;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

/// Column kinds live beside the policy facts that carry them.
pub use strata_sandbox::schema::{ColumnKind, time_type};

pub use change::{ChangeRefused, SchemaChange};

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
    /// Renames, drops and casts so far: how stored data maps to `columns`.
    #[serde(default, skip_serializing_if = "Alterations::is_empty")]
    pub alterations: Alterations,
}

/// How the columns in files and buffers (physical names, the types they
/// were written with) map to a schema's columns after renames, drops and
/// casts. A column keeps the name it was first written under inside files
/// and buffers; reads project physical names to the schema's names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alterations {
    /// Column name → the physical name its values are stored under, for
    /// columns whose two names differ.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stored_as: BTreeMap<String, String>,
    /// A name a column had before a rename → its name now. Writes to the old
    /// name are refused (`column_renamed`), never mapped silently.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub renamed: BTreeMap<String, String>,
    /// Physical names of dropped columns: still inside older files, never
    /// read, never reused by a new column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    /// Whether a column's type was ever changed (reads then cast).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cast: bool,
    /// The change that made this version, as the API names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

impl Alterations {
    /// Whether nothing was ever renamed, dropped or cast.
    pub fn is_empty(&self) -> bool {
        self.stored_as.is_empty() && self.renamed.is_empty() && self.dropped.is_empty() && !self.cast
    }
}

/// Why a request's columns do not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaConflict {
    /// A value's kind differs from the stored column kind.
    #[error("column {column:?} is {existing} but the request has a {incoming} value")]
    Kind {
        /// The column.
        column: String,
        /// The stored kind.
        existing: &'static str,
        /// The kind in the request.
        incoming: &'static str,
    },
    /// A new column's name differs from another column's only in letter
    /// case. SQL identifiers are case-insensitive (DuckDB reads `Amount`
    /// and `amount` as one name), so queries could not tell them apart.
    #[error(
        "column {column:?} differs from column {other:?} only in letter case; SQL cannot tell them apart, \
         so the new column is refused"
    )]
    Case {
        /// The new column.
        column: String,
        /// The stored column, the time column or another new column.
        other: String,
    },
    /// The request uses a name a column had before it was renamed.
    #[error("column {column:?} was renamed to {now:?}; write {now:?} instead")]
    Renamed {
        /// The old name.
        column: String,
        /// The column's name now.
        now: String,
    },
}

impl SchemaConflict {
    /// The column of the request that conflicts.
    pub fn column(&self) -> &str {
        match self {
            SchemaConflict::Kind { column, .. }
            | SchemaConflict::Case { column, .. }
            | SchemaConflict::Renamed { column, .. } => column,
        }
    }

    /// The other column of a case conflict, the new name of a renamed one.
    pub fn other_column(&self) -> Option<&str> {
        match self {
            SchemaConflict::Kind { .. } => None,
            SchemaConflict::Case { other, .. } | SchemaConflict::Renamed { now: other, .. } => Some(other),
        }
    }
}

/// A column name as SQL compares it, or stricter: Unicode lowercase (DuckDB
/// folds ASCII only; folding more refuses a few more pairs, never fewer).
pub fn folded_name(name: &str) -> String {
    name.to_lowercase()
}

impl DatasetSchema {
    /// An empty schema with the given time column.
    pub fn empty(time_column: &str) -> DatasetSchema {
        DatasetSchema {
            version: 0,
            time_column: time_column.to_string(),
            columns: Vec::new(),
            alterations: Alterations::default(),
        }
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
                    return Err(SchemaConflict::Kind {
                        column: column.name.clone(),
                        existing: existing.as_str(),
                        incoming: column.kind.as_str(),
                    });
                }
                None => match self.alterations.renamed.get(&column.name) {
                    Some(now) => return Err(SchemaConflict::Renamed { column: column.name.clone(), now: now.clone() }),
                    None => added.push(column.clone()),
                },
            }
        }
        if added.is_empty() {
            return Ok(None);
        }
        self.refuse_case_twins(&added)?;
        let mut next = self.clone();
        next.version += 1;
        next.alterations.change = None;
        for column in &added {
            // A dropped column's values stay in older files under its
            // physical name: a new column of that name is stored apart.
            let taken = |name: &str| {
                let name = folded_name(name);
                self.alterations
                    .dropped
                    .iter()
                    .chain(self.alterations.stored_as.values())
                    .any(|p| folded_name(p) == name)
            };
            if taken(&column.name) {
                let physical = format!("{}~{}", column.name, next.version);
                next.alterations.stored_as.insert(column.name.clone(), physical);
            }
        }
        next.columns.extend(added);
        Ok(Some(next))
    }

    /// Refuses a new column whose name folds to the time column's, a stored
    /// column's or another new column's. Only new columns are checked: a
    /// dataset that got such a pair before this rule keeps accepting writes
    /// to both.
    fn refuse_case_twins(&self, added: &[ColumnDef]) -> Result<(), SchemaConflict> {
        let stored = std::iter::once(self.time_column.as_str()).chain(self.columns.iter().map(|c| c.name.as_str()));
        let mut seen: std::collections::HashMap<String, &str> = stored.map(|name| (folded_name(name), name)).collect();
        for column in added {
            match seen.entry(folded_name(&column.name)) {
                std::collections::hash_map::Entry::Occupied(twin) => {
                    return Err(SchemaConflict::Case { column: column.name.clone(), other: twin.get().to_string() });
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(&column.name);
                }
            }
        }
        Ok(())
    }

    /// The name column `name`'s values are stored under in files and buffers.
    pub fn physical_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.alterations.stored_as.get(name).map_or(name, String::as_str)
    }

    /// The Arrow schema of files and buffers: the time column first, then
    /// every column in order, under its physical name.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields = Vec::with_capacity(self.columns.len() + 1);
        fields.push(Field::new(&self.time_column, time_type(), false));
        for column in &self.columns {
            fields.push(Field::new(self.physical_name(&column.name), column.kind.arrow_type(), true));
        }
        Arc::new(Schema::new(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;

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
        assert_eq!(conflict.column(), "cpu");
        assert!(matches!(conflict, SchemaConflict::Kind { existing: "float", .. }), "{conflict:?}");
        let conflict = v2.evolve(&[def("time", ColumnKind::Float)]).unwrap_err();
        assert_eq!(conflict.column(), "time");
    }

    #[test]
    fn a_new_column_may_not_differ_from_another_only_in_case() {
        let v1 = DatasetSchema::empty("time").evolve(&[def("amount", ColumnKind::Float)]).unwrap().unwrap();
        let twin = |new: &[ColumnDef]| v1.evolve(new).unwrap_err();
        assert_eq!(
            twin(&[def("Amount", ColumnKind::Float)]),
            SchemaConflict::Case { column: "Amount".into(), other: "amount".into() }
        );
        assert_eq!(twin(&[def("TIME", ColumnKind::Text)]).other_column(), Some("time"));
        assert_eq!(twin(&[def("Host", ColumnKind::Tag), def("host", ColumnKind::Text)]).other_column(), Some("Host"));
        assert_eq!(twin(&[def("ÉTÉ", ColumnKind::Text), def("été", ColumnKind::Text)]).column(), "été");
        // Stored twins from before the rule stay writable, and other columns may still be added.
        let legacy = DatasetSchema { columns: vec![def("a", ColumnKind::Float), def("A", ColumnKind::Float)], ..v1 };
        assert_eq!(legacy.evolve(&[def("A", ColumnKind::Float)]).unwrap(), None);
        assert_eq!(legacy.evolve(&[def("b", ColumnKind::Float)]).unwrap().unwrap().columns.len(), 3);
    }

    #[test]
    fn arrow_schema_puts_time_first() {
        let schema = DatasetSchema::empty("ts").evolve(&[def("a", ColumnKind::Boolean)]).unwrap().unwrap();
        let arrow = schema.arrow_schema();
        assert_eq!(arrow.field(0).name(), "ts");
        assert_eq!(arrow.field(1).data_type(), &DataType::Boolean);
    }
}
