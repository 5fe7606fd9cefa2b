//! How the remote commands print answers: aligned text tables for people,
//! the server's JSON for programs.

use std::io::Write;

use serde_json::Value as Json;

/// `--format` of a listing command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// An aligned text table.
    Table,
    /// The server's JSON answer.
    Json,
}

/// One column of a table: its heading and the JSON key (a `/`-separated
/// path for nested values) it shows.
pub struct Column {
    /// The heading.
    pub heading: &'static str,
    /// The key, e.g. `rows` or `summary/delete`.
    pub key: &'static str,
}

/// Shorthand for a [`Column`].
pub const fn column(heading: &'static str, key: &'static str) -> Column {
    Column { heading, key }
}

/// A JSON value as a table cell: strings bare, `null` empty, numbers as
/// written, anything nested as compact JSON.
pub fn cell(value: &Json) -> String {
    match value {
        Json::Null => String::new(),
        Json::String(text) => text.replace('\n', "\\n").replace('\r', "\\r"),
        Json::Bool(_) | Json::Number(_) => value.to_string(),
        nested => nested.to_string(),
    }
}

/// The value at a `/`-separated path.
pub fn lookup<'a>(value: &'a Json, path: &str) -> &'a Json {
    path.split('/').fold(value, |value, key| &value[key])
}

/// Renders rows of cells under headings, columns padded to their widest
/// cell; numbers are right-aligned.
pub fn render(headings: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headings.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..headings.len())
        .map(|i| {
            rows.iter().any(|row| !row[i].is_empty())
                && rows.iter().all(|row| row[i].is_empty() || row[i].parse::<f64>().is_ok())
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let pad = " ".repeat(widths[i] - cell.chars().count());
                if numeric[i] { format!("{pad}{cell}") } else { format!("{cell}{pad}") }
            })
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(headings);
    for row in rows {
        line(row);
    }
    out
}

/// A table of `items` (JSON objects) showing `columns`.
pub fn table(items: &[Json], columns: &[Column]) -> String {
    let headings: Vec<String> = columns.iter().map(|c| c.heading.to_string()).collect();
    let rows: Vec<Vec<String>> =
        items.iter().map(|item| columns.iter().map(|c| cell(lookup(item, c.key))).collect()).collect();
    render(&headings, &rows)
}

/// Prints text to stdout; a closed pipe (`strata … | head`) is not an error.
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints a JSON value, pretty.
pub fn print_json(value: &Json) {
    print(&format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default()));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let items =
            vec![json!({"name": "cpu", "rows": 1200, "tier": {"name": "hot"}}), json!({"name": "memory", "rows": 7})];
        let text = table(&items, &[column("NAME", "name"), column("ROWS", "rows"), column("TIER", "tier/name")]);
        assert_eq!(text, "NAME    ROWS  TIER\ncpu     1200  hot\nmemory     7\n");
    }
}
