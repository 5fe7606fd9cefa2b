//! What user SQL must be before a query database sees it: exactly one
//! statement, which is a query, calling nothing that reveals the server.
//!
//! DuckDB's own parser does the counting (see `parser`): the text alone must
//! be one statement that starts like a query (`SELECT`, `WITH`, `FROM`, …),
//! and the text wrapped as `SELECT * FROM (\n{text}\n) AS _q` — what runs —
//! must be one statement too, so it is one `SELECT`. No `COPY`, `ATTACH`,
//! `SET`, `INSTALL`, `CREATE`, `PRAGMA` or second statement ever reaches a
//! connection, whose `prepare` would execute all statements but the last.
//! The names the text uses come from `sql_text`, a port of DuckDB's
//! tokenizer.

use std::collections::BTreeSet;

use super::parser::{Parsed, parse};
use super::sql_text::{called_names, normalize, referenced_names, tokenize, without_terminators};
use crate::error::{ErrorCode, Failure};

/// User SQL that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedSql {
    /// The text to prepare: one statement, the user's query as a subquery.
    pub sql: String,
    /// Every name the text uses (words and quoted identifiers, lower-cased;
    /// bare reserved keywords left out).
    pub names: BTreeSet<String>,
    /// The tables the text references (see `sql_refs`): a dataset is read
    /// iff its name is one of them.
    pub tables: BTreeSet<String>,
    /// The user's text as checked (normalised, without terminators).
    pub text: String,
}

impl CheckedSql {
    /// The time range rows of `dataset` can have and still count (see
    /// `sql_refs::time_range`); `None` means any time.
    pub fn time_range(&self, dataset: &str, time_column: &str) -> Option<(i64, i64)> {
        super::sql_refs::time_range(&self.text, &tokenize(&self.text), dataset, time_column)
    }
}

/// Functions user SQL may not call. DuckDB's configuration (no external
/// access, `allowed_paths` = the query's files, locked settings) already
/// stops them from reading or changing anything else; these are refused by
/// name because they would reveal the server (settings, paths, environment,
/// temporary files, extensions, secrets), raw file bytes, or run SQL text
/// that the checks here never saw (`query`, `query_table`).
const FUNCTIONS_REFUSED: &[&str] = &[
    "current_setting",
    "getenv",
    "getvariable",
    "read_text",
    "read_blob",
    "glob",
    "which_secret",
    "query",
    "query_table",
    "json_execute_serialized_sql",
    "checkpoint",
    "force_checkpoint",
    "enable_logging",
    "disable_logging",
    "truncate_duckdb_logs",
    "enable_profiling",
    "disable_profiling",
    "create_external_resource",
    "register_external_resource",
    "destroy_external_resource",
];

/// Prefixes of refused function names: DuckDB's catalog and system views
/// as functions (`duckdb_settings()`, `duckdb_temporary_files()`,
/// `duckdb_extensions()`, `duckdb_secrets()`, …) and `pragma_*`.
const FUNCTION_PREFIXES_REFUSED: &[&str] = &["duckdb_", "pragma_"];

/// Views refused wherever they are named (no call needed).
const VIEWS_REFUSED: &[&str] = &["pg_settings"];

/// The words a query starts with (after any opening parentheses);
/// `DESCRIBE` and `SUMMARIZE` of a relation are queries too. The wrapper
/// alone would also take a statement that reads as a table reference
/// (`INSTALL httpfs` is the table `install` aliased `httpfs`), which would
/// only fail later, as an unknown table.
const QUERY_STARTS: &[&str] =
    &["select", "with", "from", "values", "table", "pivot", "unpivot", "describe", "summarize"];

/// The one refusal message for anything but a single query.
const ONE_QUERY: &str = "only exactly one read-only SELECT statement can run";

fn refused(message: String) -> Failure {
    Failure::new(ErrorCode::QueryRefused, message)
}

fn parse_or_internal(sql: &str) -> Result<Parsed, Failure> {
    parse(sql).map_err(|e| Failure::new(ErrorCode::Internal, e))
}

/// Checks `sql` and wraps it as a subquery.
pub(crate) fn check(sql: &str) -> Result<CheckedSql, Failure> {
    let normalized = normalize(sql);
    let tokens = tokenize(&normalized);
    let text = without_terminators(&normalized, &tokens).trim();
    if text.is_empty() {
        return Err(Failure::new(ErrorCode::InvalidQuery, "empty SQL"));
    }
    match parse_or_internal(text)? {
        Parsed::SyntaxError(message) => return Err(Failure::new(ErrorCode::InvalidQuery, message)),
        Parsed::Statements(1) => {}
        Parsed::Statements(n) => return Err(refused(format!("{ONE_QUERY}; this text holds {n} statements"))),
    }
    let first = tokens.iter().find(|t| &normalized[t.start..t.end] != "(").map(|t| &normalized[t.start..t.end]);
    let first = first.unwrap_or_default();
    if !QUERY_STARTS.contains(&first.to_ascii_lowercase().as_str()) {
        return Err(refused(format!("{ONE_QUERY}; {first} is not a query")));
    }
    // The user's text ends before the newline, so a trailing `--` comment
    // cannot swallow the closing parenthesis.
    let wrapped = normalize(&format!("SELECT * FROM (\n{text}\n) AS _q")).into_owned();
    if parse_or_internal(&wrapped)? != Parsed::Statements(1) {
        return Err(refused(format!("{ONE_QUERY} (SELECT, WITH, FROM, VALUES …); this statement is not a query")));
    }
    let tokens = tokenize(&wrapped);
    for name in called_names(&wrapped, &tokens) {
        if FUNCTIONS_REFUSED.contains(&name.as_str()) || FUNCTION_PREFIXES_REFUSED.iter().any(|p| name.starts_with(p)) {
            return Err(refused(format!("{name}() is not available to SQL queries")));
        }
    }
    let names: BTreeSet<String> = referenced_names(&wrapped, &tokens).into_iter().collect();
    if let Some(view) = VIEWS_REFUSED.iter().find(|v| names.contains(**v)) {
        return Err(refused(format!("{view} is not available to SQL queries")));
    }
    let text_tokens = tokenize(text);
    let tables = super::sql_refs::table_references(text, &text_tokens).into_iter().map(|t| t.name).collect();
    Ok(CheckedSql { sql: wrapped, names, tables, text: text.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(sql: &str) -> &'static str {
        match check(sql) {
            Ok(_) => "ok",
            Err(error) => error.code.as_str(),
        }
    }

    #[test]
    fn only_one_query_passes() {
        let table = [
            ("SELECT 1", "ok"),
            ("SELECT 1;", "ok"),
            ("SELECT 1 ; ; -- done\n", "ok"),
            ("SELECT ';' AS s -- ; \n", "ok"),
            ("WITH a AS (SELECT 1 AS x) SELECT x FROM a", "ok"),
            ("FROM range(3)", "ok"),
            ("VALUES (1), (2)", "ok"),
            ("(SELECT 1) UNION ALL (SELECT 2)", "ok"),
            ("TABLE x", "ok"),
            ("SUMMARIZE x", "ok"),
            ("SHOW TABLES", "query_refused"),
            ("SELECT $$;$$, E'\\';', \"a;b\" FROM (SELECT 1 AS \"a;b\")", "ok"),
            ("SELECT 1 /* ; */", "ok"),
            ("", "invalid_query"),
            (" ;; -- nothing\n", "invalid_query"),
            ("SELEC 1", "invalid_query"),
            ("SELECT 1; SELECT 2", "query_refused"),
            ("SELECT 1) AS q; COPY (SELECT 42) TO '/tmp/x.parquet'; SELECT * FROM (SELECT 1", "invalid_query"),
            ("SELECT 1) AS q UNION ALL (SELECT 2", "invalid_query"),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "query_refused"),
            ("ATTACH '/tmp/x.db' AS x", "query_refused"),
            ("EXPORT DATABASE '/tmp/x'", "query_refused"),
            ("INSTALL httpfs", "query_refused"),
            ("LOAD httpfs", "query_refused"),
            ("SET threads = 1", "query_refused"),
            ("PRAGMA database_list", "query_refused"),
            ("CALL pragma_version()", "query_refused"),
            ("CHECKPOINT", "query_refused"),
            ("CREATE TABLE t AS SELECT 1", "query_refused"),
            ("SELECT 1 -- \n; DROP VIEW x", "query_refused"),
            ("SELECT current_setting('temp_directory')", "query_refused"),
            ("SELECT \"CURRENT_SETTING\"('temp_directory')", "query_refused"),
            ("SELECT system.main.current_setting /* x */ ('temp_directory')", "query_refused"),
            ("SELECT * FROM duckdb_settings()", "query_refused"),
            ("SELECT * FROM pg_settings", "query_refused"),
            ("SELECT * FROM read_text('/etc/passwd')", "query_refused"),
            ("SELECT * FROM query('SELECT 1')", "query_refused"),
            ("SELECT E'\\'' AS a, current_setting('x') AS b", "query_refused"),
            ("SELECT 'current_setting(' AS a", "ok"),
        ];
        for (sql, expected) in table {
            assert_eq!(code(sql), expected, "{sql}");
        }
    }

    #[test]
    fn names_are_tokens_not_substrings() {
        let names =
            check("SELECT 'orders' AS a, \"Events\".x FROM \"Events\", cpu_2 JOIN `other` USING (t)").unwrap().names;
        assert!(!names.contains("orders"));
        for name in ["events", "cpu_2", "other", "t", "x", "a"] {
            assert!(names.contains(name), "{name}: {names:?}");
        }
        assert!(!names.contains("select") && !names.contains("from"));
    }
}

#[cfg(test)]
mod parity {
    use super::super::sql_text::{TokenKind, normalize, tokenize};
    use super::*;

    /// Expressions that hide `;`, quotes and comment markers from a naive
    /// reader; each parses as one expression.
    const TRICKY: &[&str] = &[
        "';'",
        "'a''b;'",
        "E'\\';'",
        "e'\\\\'",
        "'\\'",
        "$$;$$",
        "$t$ ; $ $$ $t$",
        "\"x;y\"",
        "`a;b`",
        "\"a\"\"b;\"",
        "1 /* ; /* ; */ ; */",
        "1 -- ; '\n",
        "x\u{a0}",
        "'\u{3000};'",
        "$1",
        "x::INT",
        "1e5",
        "U&'x'",
        "'/*'",
        "'--'",
        "\"--\"",
    ];

    /// What this module's tokenizer sees: the number of statements.
    fn statements_by_tokens(sql: &str) -> usize {
        let sql = normalize(sql);
        let mut count = 0;
        let mut open = false;
        for token in tokenize(&sql) {
            if token.kind == TokenKind::Terminator {
                count += usize::from(open);
                open = false;
            } else {
                open = true;
            }
        }
        count + usize::from(open)
    }

    #[test]
    fn the_tokenizer_splits_statements_where_duckdb_does() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..400 {
            let statements = 1 + next(3);
            let text: Vec<String> = (0..statements)
                .map(|_| {
                    let expressions: Vec<&str> = (0..1 + next(4)).map(|_| TRICKY[next(TRICKY.len())]).collect();
                    format!("SELECT {}\n", expressions.join(", "))
                })
                .collect();
            let sql = text.join(["; ", ";\n", " ;/* ; */ ", "; -- ;\n"][next(4)]);
            match parse(&sql).unwrap() {
                Parsed::Statements(n) => assert_eq!(statements_by_tokens(&sql), n, "{sql:?}"),
                Parsed::SyntaxError(message) => panic!("{sql:?}: {message}"),
            }
        }
    }
}
