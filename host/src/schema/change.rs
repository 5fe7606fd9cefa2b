//! Schema changes: a column renamed, dropped or cast to a type that holds
//! every value of the old one, each a new schema version. Nothing stored is
//! rewritten: a column keeps its physical name and stored type inside files
//! and buffers, and reads project them to the schema's names and types.

use serde::Deserialize;

use super::{ColumnKind, DatasetSchema, folded_name};

/// One change, as `POST /v1/datasets/{ds}/schema` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum SchemaChange {
    /// The column `from` is called `to` from now on.
    Rename {
        /// The column's name now.
        from: String,
        /// Its new name.
        to: String,
    },
    /// The column disappears from the schema and from every read.
    Drop {
        /// The column.
        column: String,
        /// Refuse unless every partition holding rows has an archive copy.
        #[serde(default)]
        archive: bool,
    },
    /// The column's values are read (and new ones stored) as `kind`.
    Cast {
        /// The column.
        column: String,
        /// The new kind.
        #[serde(rename = "type")]
        kind: ColumnKind,
    },
}

impl SchemaChange {
    /// The change in words, as schema versions record it.
    pub fn describe(&self) -> String {
        match self {
            SchemaChange::Rename { from, to } => format!("rename {from:?} to {to:?}"),
            SchemaChange::Drop { column, .. } => format!("drop {column:?}"),
            SchemaChange::Cast { column, kind } => format!("cast {column:?} to {}", kind.as_str()),
        }
    }
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefused {
    /// The time column sorts and prunes every file: it never changes.
    #[error("column {0:?} is the time column; it cannot be renamed, dropped or cast")]
    TimeColumn(String),
    /// No such column.
    #[error("the dataset has no column {0:?}")]
    NoColumn(String),
    /// The new name is taken (SQL compares names ignoring case).
    #[error("cannot rename to {to:?}: column {other:?} exists and SQL cannot tell the two apart")]
    Exists {
        /// The new name.
        to: String,
        /// The column (or time column) it collides with.
        other: String,
    },
    /// The cast could change or lose values.
    #[error(
        "column {column:?} cannot be cast from {from} to {to}: not every {from} value has an exact {to} value \
         (only casts to text are lossless here)"
    )]
    Lossy {
        /// The column.
        column: String,
        /// Its kind.
        from: &'static str,
        /// The kind asked for.
        to: &'static str,
    },
}

/// Whether every value of kind `from` has exactly one value of kind `to`
/// that reads back as the same value. Every stored kind is 64-bit, so no
/// integer widening exists; integer to float rounds above 2^53, unsigned to
/// integer wraps above 2^63. Text renders any value exactly.
pub fn lossless(from: ColumnKind, to: ColumnKind) -> bool {
    from.accepts(to) || (to.is_text() && from != ColumnKind::Time)
}

impl DatasetSchema {
    /// The index of column `name`, refusing the time column.
    fn column_index(&self, name: &str) -> Result<usize, ChangeRefused> {
        if name == self.time_column {
            return Err(ChangeRefused::TimeColumn(name.to_string()));
        }
        self.columns.iter().position(|c| c.name == name).ok_or_else(|| ChangeRefused::NoColumn(name.to_string()))
    }

    /// The schema after `change`, as the next version; `None` when it
    /// changes nothing (a rename to the same name, a cast to the same kind).
    pub fn change(&self, change: &SchemaChange) -> Result<Option<DatasetSchema>, ChangeRefused> {
        let mut next = self.clone();
        next.version += 1;
        match change {
            SchemaChange::Rename { from, to } => {
                let index = self.column_index(from)?;
                if from == to {
                    return Ok(None);
                }
                let names = std::iter::once(&self.time_column).chain(self.columns.iter().map(|c| &c.name));
                if let Some(other) = names.filter(|n| *n != from).find(|n| folded_name(n) == folded_name(to)) {
                    return Err(ChangeRefused::Exists { to: to.clone(), other: other.clone() });
                }
                let physical = self.physical_name(from).to_string();
                let alterations = &mut next.alterations;
                alterations.stored_as.remove(from);
                if physical != *to {
                    alterations.stored_as.insert(to.clone(), physical);
                }
                alterations.renamed.remove(to);
                alterations.renamed.values_mut().filter(|now| *now == from).for_each(|now| now.clone_from(to));
                alterations.renamed.insert(from.clone(), to.clone());
                next.columns[index].name.clone_from(to);
            }
            SchemaChange::Drop { column, .. } => {
                let index = self.column_index(column)?;
                let physical = self.physical_name(column).to_string();
                let alterations = &mut next.alterations;
                alterations.stored_as.remove(column);
                alterations.renamed.retain(|_, now| now != column);
                alterations.dropped.push(physical);
                next.columns.remove(index);
            }
            SchemaChange::Cast { column, kind } => {
                let index = self.column_index(column)?;
                let from = self.columns[index].kind;
                if from.accepts(*kind) {
                    return Ok(None);
                }
                if !lossless(from, *kind) {
                    return Err(ChangeRefused::Lossy {
                        column: column.clone(),
                        from: from.as_str(),
                        to: kind.as_str(),
                    });
                }
                next.columns[index].kind = *kind;
                next.alterations.cast = true;
            }
        }
        next.alterations.change = Some(change.describe());
        Ok(Some(next))
    }

    /// How reads see stored data when a column was ever renamed, dropped or
    /// cast: for the time column and each column, its physical name, its
    /// name and the kind to cast to (`None`: no cast needed). `None` when
    /// stored names and types are the schema's.
    pub fn projection(&self) -> Option<Vec<(&str, &str, Option<ColumnKind>)>> {
        if self.alterations.is_empty() {
            return None;
        }
        let cast = self.alterations.cast;
        let time = (self.time_column.as_str(), self.time_column.as_str(), None);
        let columns =
            self.columns.iter().map(|c| (self.physical_name(&c.name), c.name.as_str(), cast.then_some(c.kind)));
        Some(std::iter::once(time).chain(columns).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnDef, SchemaConflict};

    fn schema() -> DatasetSchema {
        let def = |name: &str, kind| ColumnDef { name: name.into(), kind };
        let columns = [def("a", ColumnKind::Float), def("n", ColumnKind::Integer), def("c", ColumnKind::Tag)];
        DatasetSchema::empty("time").evolve(&columns).unwrap().unwrap()
    }

    fn rename(from: &str, to: &str) -> SchemaChange {
        SchemaChange::Rename { from: from.into(), to: to.into() }
    }

    #[test]
    fn a_rename_keeps_the_physical_name_and_refuses_the_old_one() {
        let v2 = schema().change(&rename("a", "b")).unwrap().unwrap();
        assert_eq!((v2.version, v2.columns[0].name.as_str(), v2.physical_name("b")), (2, "b", "a"));
        assert_eq!(v2.arrow_schema().field(1).name(), "a", "files and buffers keep the first name");
        let old = [ColumnDef { name: "a".into(), kind: ColumnKind::Float }];
        assert_eq!(v2.evolve(&old).unwrap_err(), SchemaConflict::Renamed { column: "a".into(), now: "b".into() });
        // Renaming back restores the plain mapping.
        let v3 = v2.change(&rename("b", "a")).unwrap().unwrap();
        assert_eq!((v3.physical_name("a"), v3.alterations.renamed.get("b").map(String::as_str)), ("a", Some("a")));
        assert_eq!(v3.projection().unwrap()[1], ("a", "a", None));
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let v1 = schema();
        assert_eq!(v1.change(&rename("time", "t")).unwrap_err(), ChangeRefused::TimeColumn("time".into()));
        assert_eq!(v1.change(&rename("zz", "t")).unwrap_err(), ChangeRefused::NoColumn("zz".into()));
        assert!(
            matches!(v1.change(&rename("a", "N")).unwrap_err(), ChangeRefused::Exists { other, .. } if other == "n")
        );
        assert!(matches!(v1.change(&rename("a", "TIME")).unwrap_err(), ChangeRefused::Exists { .. }));
        let cast = |column: &str, kind| v1.change(&SchemaChange::Cast { column: column.into(), kind });
        assert!(matches!(
            cast("n", ColumnKind::Float).unwrap_err(),
            ChangeRefused::Lossy { from: "integer", to: "float", .. }
        ));
        assert!(matches!(cast("a", ColumnKind::Integer).unwrap_err(), ChangeRefused::Lossy { .. }));
        assert_eq!(cast("c", ColumnKind::Text).unwrap(), None, "tags and text are both strings");
        let parsed: SchemaChange = serde_json::from_str(r#"{"op":"cast","column":"n","type":"string"}"#).unwrap();
        assert_eq!(parsed, SchemaChange::Cast { column: "n".into(), kind: ColumnKind::Text });
        let v2 = cast("n", ColumnKind::Text).unwrap().unwrap();
        assert_eq!(v2.projection().unwrap()[2], ("n", "n", Some(ColumnKind::Text)));
    }

    #[test]
    fn a_dropped_name_comes_back_as_a_new_column_stored_apart() {
        let v2 = schema().change(&SchemaChange::Drop { column: "a".into(), archive: false }).unwrap().unwrap();
        assert_eq!(v2.columns.len(), 2);
        assert_eq!(v2.projection().unwrap().len(), 3);
        let v3 = v2.evolve(&[ColumnDef { name: "A".into(), kind: ColumnKind::Text }]).unwrap().unwrap();
        assert_eq!(v3.physical_name("A"), "A~3", "the dropped values stay unread");
        assert_eq!(schema().projection(), None, "an unaltered schema reads files as they are");
    }
}
