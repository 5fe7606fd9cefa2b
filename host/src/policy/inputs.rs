//! The facts a policy is given, built from what the host holds: catalog
//! records for the scheduled policies, and a parsed request's Arrow
//! columns for a partitioner.

use crate::facts::{ColumnBatch, ColumnValues, DatasetFacts, PartitionFacts};

/// The facts of a dataset, from its catalog record and schema.
pub fn dataset_facts(record: &crate::catalog::DatasetRecord, schema: &crate::schema::DatasetSchema) -> DatasetFacts {
    let mut columns = vec![(schema.time_column.clone(), crate::schema::ColumnKind::Time)];
    columns.extend(schema.columns.iter().map(|c| (c.name.clone(), c.kind)));
    DatasetFacts {
        name: record.name.clone(),
        period: record.period.as_str().to_string(),
        time_column: schema.time_column.clone(),
        columns,
    }
}

/// The facts of one partition, from its catalog record.
pub fn partition_facts(
    dataset: &crate::names::DatasetName,
    record: &crate::catalog::PartitionRecord,
) -> PartitionFacts {
    PartitionFacts {
        id: crate::names::partition_label(dataset, &record.period_label, &record.key),
        dataset: dataset.as_str().to_string(),
        period_label: record.period_label.clone(),
        period_start_ns: record.period_start_ns,
        period_end_ns: record.period_end_ns,
        key: record.key.clone(),
        tier: record.tier,
        read_only: record.read_only,
        rows: record.rows.max(0) as u64,
        bytes: record.bytes.max(0) as u64,
        min_time_ns: record.min_time_ns,
        max_time_ns: record.max_time_ns,
        created_at_ns: record.created_at_ns,
        last_written_at_ns: record.last_written_at_ns,
        file_count: record.file_count.clamp(0, i64::from(u32::MAX)) as u32,
        archived: record.archived,
    }
}

/// The input of a partitioner for one parsed request: the columns it asked
/// for that the batch has (a column the batch lacks is left out, as the
/// contract says), converted from Arrow. This is what the write path hands
/// to [`super::PolicyRuntime::partition_batch`] before `ingest::route`.
pub fn partitioner_input(
    parsed: &crate::ingest::batch::ParsedBatch,
    time_column: &str,
    wanted: &[String],
) -> Vec<ColumnBatch> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, UInt64Type};

    fn texts(array: &dyn Array) -> Option<Vec<Option<String>>> {
        if let Some(dictionary) = array.as_dictionary_opt::<Int32Type>() {
            let values = dictionary.values().as_string_opt::<i32>()?;
            return Some(
                (0..array.len())
                    .map(|row| {
                        dictionary
                            .is_valid(row)
                            .then(|| values.value(dictionary.keys().value(row) as usize).to_string())
                    })
                    .collect(),
            );
        }
        let strings = array.as_string_opt::<i32>()?;
        Some(strings.iter().map(|value| value.map(str::to_string)).collect())
    }

    let mut out = Vec::with_capacity(wanted.len());
    for name in wanted {
        if name == time_column {
            out.push(ColumnBatch { name: name.clone(), values: ColumnValues::Time(parsed.times.clone()) });
            continue;
        }
        let Some(index) = parsed.columns.iter().position(|column| &column.name == name) else { continue };
        let array = parsed.arrays[index].as_ref();
        let values = match array.data_type() {
            DataType::Float64 => ColumnValues::Float(array.as_primitive::<Float64Type>().iter().collect()),
            DataType::Int64 => ColumnValues::Integer(array.as_primitive::<Int64Type>().iter().collect()),
            DataType::UInt64 => ColumnValues::Unsigned(array.as_primitive::<UInt64Type>().iter().collect()),
            DataType::Boolean => ColumnValues::Boolean(array.as_boolean().iter().collect()),
            _ => match texts(array) {
                Some(values) => ColumnValues::Text(values),
                None => continue,
            },
        };
        out.push(ColumnBatch { name: name.clone(), values });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, DictionaryArray, Float64Array};
    use arrow::datatypes::Int32Type;

    use super::*;
    use crate::ingest::batch::ParsedBatch;
    use crate::schema::{ColumnDef, ColumnKind};

    #[test]
    fn requested_columns_are_converted_and_missing_ones_left_out() {
        let hosts: DictionaryArray<Int32Type> = vec![Some("a"), None, Some("a")].into_iter().collect();
        let parsed = ParsedBatch {
            times: vec![1, 2, 3],
            columns: vec![
                ColumnDef { name: "host".into(), kind: ColumnKind::Tag },
                ColumnDef { name: "usage".into(), kind: ColumnKind::Float },
            ],
            arrays: vec![
                Arc::new(hosts) as ArrayRef,
                Arc::new(Float64Array::from(vec![Some(0.5), Some(1.0), None])) as ArrayRef,
            ],
            record_numbers: Vec::new(),
        };
        let wanted = ["usage", "missing", "host", "time"].map(String::from);
        let columns = partitioner_input(&parsed, "time", &wanted);
        assert_eq!(
            columns,
            [
                ColumnBatch { name: "usage".into(), values: ColumnValues::Float(vec![Some(0.5), Some(1.0), None]) },
                ColumnBatch {
                    name: "host".into(),
                    values: ColumnValues::Text(vec![Some("a".into()), None, Some("a".into())])
                },
                ColumnBatch { name: "time".into(), values: ColumnValues::Time(vec![1, 2, 3]) },
            ]
        );
    }
}
