//! A structured query's JSON answer reshaped as InfluxDB's series:
//! `{"name","tags","columns","values"}`, one series per distinct value of
//! the grouping tags, times as RFC 3339 or epoch integers (`epoch=`).
//!
//! **Invariant:** rows keep the order the query gave them within a series;
//! series are ordered by their tag values, as InfluxDB orders them.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json, json};

use super::Translated;

/// How times are written: RFC 3339 text, or epoch integers in a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(pub Option<i64>);

impl Epoch {
    /// From `epoch=` (`ns`, `u`/`µ`, `ms`, `s`, `m`, `h`); absent = RFC 3339.
    pub fn parse(raw: Option<&str>) -> Result<Epoch, String> {
        Ok(Epoch(match raw {
            None | Some("") => None,
            Some("ns" | "n") => Some(1),
            Some("u" | "µ" | "us") => Some(1_000),
            Some("ms") => Some(1_000_000),
            Some("s") => Some(1_000_000_000),
            Some("m") => Some(60_000_000_000),
            Some("h") => Some(3_600_000_000_000),
            Some(other) => return Err(format!("epoch={other} is not one of ns, u, µ, ms, s, m, h")),
        }))
    }

    /// The time `ns` as this format writes it.
    pub fn time(self, ns: i64) -> Json {
        match self.0 {
            None => Json::String(crate::time::rfc3339(ns)),
            Some(unit) => Json::from(ns.div_euclid(unit)),
        }
    }
}

/// Options of the reshaping.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// The series name (the measurement).
    pub name: &'a str,
    /// The time column of the dataset.
    pub time_column: &'a str,
    /// How times are written.
    pub epoch: Epoch,
    /// Write this time instead of every row's (an aggregate over all time).
    pub fixed_time: Option<i64>,
    /// Rows per series, after skipping `offset`.
    pub limit: Option<u64>,
    /// Rows skipped per series.
    pub offset: u64,
}

fn row_time(row: &Map<String, Json>, column: &str) -> Option<i64> {
    match row.get(column)? {
        Json::String(text) => crate::time::parse_rfc3339(text).ok(),
        Json::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// The series of `rows` (the structured answer's `rows`).
pub fn series(rows: &[Json], translated: &Translated, shape: Shape<'_>) -> Vec<Json> {
    let mut groups: BTreeMap<Vec<String>, Vec<Json>> = BTreeMap::new();
    for row in rows {
        let Some(row) = row.as_object() else { continue };
        let key: Vec<String> = translated
            .series_tags
            .iter()
            .map(|tag| row.get(tag).and_then(Json::as_str).unwrap_or_default().to_string())
            .collect();
        let time =
            shape.fixed_time.or_else(|| row_time(row, shape.time_column)).map_or(Json::Null, |ns| shape.epoch.time(ns));
        let mut values = vec![time];
        for (column, _) in &translated.columns {
            let value = row.get(column).cloned().unwrap_or(Json::Null);
            values.push(match (value, translated.fill_value) {
                (Json::Null, Some(fill)) if fill.fract() == 0.0 && fill.abs() < 9.0e15 => json!(fill as i64),
                (Json::Null, Some(fill)) => json!(fill),
                (value, _) => value,
            });
        }
        groups.entry(key).or_default().push(Json::Array(values));
    }
    let mut columns = vec![Json::from("time")];
    columns.extend(translated.columns.iter().map(|(_, shown)| Json::from(shown.as_str())));
    groups
        .into_iter()
        .map(|(key, values)| {
            let values: Vec<Json> = values
                .into_iter()
                .skip(shape.offset as usize)
                .take(shape.limit.map_or(usize::MAX, |l| l as usize))
                .collect();
            let mut series = json!({ "name": shape.name, "columns": columns, "values": values });
            if !translated.series_tags.is_empty() {
                let tags: Map<String, Json> =
                    translated.series_tags.iter().cloned().zip(key.into_iter().map(Json::from)).collect();
                series["tags"] = Json::Object(tags);
            }
            series
        })
        .filter(|series| series["values"].as_array().is_some_and(|v| !v.is_empty()))
        .collect()
}

/// A series of one column of names (SHOW DATABASES, SHOW MEASUREMENTS …).
pub fn names(name: &str, column: &str, values: impl IntoIterator<Item = String>) -> Json {
    let values: Vec<Json> = values.into_iter().map(|v| json!([v])).collect();
    if values.is_empty() {
        return json!({ "name": name, "columns": [column] });
    }
    json!({ "name": name, "columns": [column], "values": values })
}
