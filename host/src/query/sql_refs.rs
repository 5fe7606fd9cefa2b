//! What user SQL reads, from its tokens (see `sql_text`): the tables it
//! references (names in `FROM`, `JOIN`, `TABLE`, `DESCRIBE`, … positions,
//! not every word), and the time range a dataset's rows are restricted to
//! by simple predicates of the top-level `WHERE`, for partition pruning.
//!
//! **Invariant:** a range is only ever wider than what the SQL keeps: it
//! is taken only when the dataset is read once, directly by the top-level
//! `FROM` (no join, no set operation), from conjuncts of `time <op>
//! 'literal'` and `BETWEEN` ANDed at the top of the `WHERE` (any top-level
//! `OR` gives no range), and widened by a margin, so pruning never drops a
//! row the query would keep.

use chrono::NaiveDateTime;

use super::sql_text::{Token, TokenKind};

/// A table the SQL references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableRef {
    /// Its name (the last part of a dotted name), lower-cased.
    pub name: String,
    /// Parentheses around it.
    pub depth: usize,
    /// The index of its first token.
    pub first: usize,
    /// One past the index of its last token.
    pub end: usize,
}

/// Words after which a table name follows.
const TABLE_BEFORE: &[&str] = &["from", "join", "table", "describe", "summarize", "pivot", "unpivot"];

/// Words that end a `FROM` list (commas after them are not between tables).
const CLAUSES: &[&str] = &[
    "select",
    "with",
    "where",
    "group",
    "having",
    "order",
    "limit",
    "offset",
    "qualify",
    "window",
    "union",
    "except",
    "intersect",
    "values",
    "returning",
    "using",
    "on",
];

fn text<'a>(sql: &'a str, token: &Token) -> &'a str {
    &sql[token.start..token.end]
}

fn is_operator(sql: &str, token: Option<&Token>, operator: &str) -> bool {
    token.is_some_and(|t| matches!(t.kind, TokenKind::Operator | TokenKind::Number) && text(sql, t) == operator)
}

fn word(sql: &str, token: &Token) -> Option<String> {
    (token.kind == TokenKind::Word).then(|| text(sql, token).to_ascii_lowercase())
}

/// The tables `sql` references, in order. A name after `FROM`, `JOIN`,
/// `TABLE`, `DESCRIBE`, `SUMMARIZE`, `PIVOT`, `UNPIVOT` or a comma of a
/// `FROM` list (also inside parentheses there: `FROM (a JOIN b …)`) that is
/// not called (`FROM range(3)` is a function).
pub(crate) fn table_references(sql: &str, tokens: &[Token]) -> Vec<TableRef> {
    let mut references = Vec::new();
    let mut from_list = vec![false];
    let mut expect_table = false;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let depth = from_list.len() - 1;
        match token.kind {
            TokenKind::Operator if text(sql, token) == "(" => from_list.push(expect_table),
            TokenKind::Operator if text(sql, token) == ")" => {
                if from_list.len() > 1 {
                    from_list.pop();
                }
                expect_table = false;
            }
            TokenKind::Operator if text(sql, token) == "," => expect_table = from_list[depth],
            TokenKind::Word | TokenKind::QuotedIdentifier => {
                let keyword = word(sql, token);
                if let Some(keyword) = keyword.as_deref() {
                    if TABLE_BEFORE.contains(&keyword) {
                        expect_table = true;
                        from_list[depth] |= keyword == "from" || keyword == "join";
                        i += 1;
                        continue;
                    }
                    if CLAUSES.contains(&keyword) {
                        expect_table = false;
                        from_list[depth] &= keyword == "on" || keyword == "using";
                        i += 1;
                        continue;
                    }
                    if keyword == "lateral" && expect_table {
                        i += 1;
                        continue;
                    }
                }
                if expect_table {
                    let (name, end) = dotted_name(sql, tokens, i);
                    if !is_operator(sql, tokens.get(end), "(") {
                        references.push(TableRef { name, depth, first: i, end });
                    }
                    expect_table = false;
                    i = end;
                    continue;
                }
            }
            _ => expect_table = false,
        }
        i += 1;
    }
    references
}

/// The last part of the dotted name starting at `tokens[first]`, and one
/// past its last token.
fn dotted_name(sql: &str, tokens: &[Token], first: usize) -> (String, usize) {
    let mut name = tokens[first].name(sql).unwrap_or_default();
    let mut end = first + 1;
    while is_operator(sql, tokens.get(end), ".")
        && let Some(part) = tokens.get(end + 1).and_then(|t| t.name(sql))
    {
        name = part;
        end += 2;
    }
    (name, end)
}

/// Every token's depth in parentheses (a parenthesis counts as outside).
fn depths(sql: &str, tokens: &[Token]) -> Vec<usize> {
    let mut depth = 0usize;
    tokens
        .iter()
        .map(|token| match (token.kind, text(sql, token)) {
            (TokenKind::Operator, "(") => {
                depth += 1;
                depth - 1
            }
            (TokenKind::Operator, ")") => {
                depth = depth.saturating_sub(1);
                depth
            }
            _ => depth,
        })
        .collect()
}

/// Literal types and the margin each needs: DuckDB may compare a coarser
/// timestamp with the column at that type's precision, and the range must
/// only ever be wider. A bare string is cast to the column's type
/// (`TIMESTAMP_NS`) and compared exactly, as are `TIMESTAMP_NS` and `DATE`
/// (midnight) literals: no margin.
const TYPED_MARGINS_NS: &[(&str, i64)] = &[
    ("timestamp_ns", 0),
    ("date", 0),
    ("timestamp", 1_000),
    ("timestamp_us", 1_000),
    ("timestamp_ms", 1_000_000),
    ("timestamp_s", 1_000_000_000),
];
/// Margin around a bound with a UTC offset, whichever way it is applied.
const OFFSET_MARGIN_NS: i64 = 86_400 * 1_000_000_000;

/// The range `[start, end)` of times that rows of `dataset` (time column
/// `time_column`) can have and still pass the top-level `WHERE` of `sql`,
/// when the module's rules allow one; `None` means every time.
pub(crate) fn time_range(sql: &str, tokens: &[Token], dataset: &str, time_column: &str) -> Option<(i64, i64)> {
    let references = table_references(sql, tokens);
    let [only] = references.iter().filter(|r| r.name == dataset).collect::<Vec<_>>()[..] else { return None };
    let depths = depths(sql, tokens);
    let top: Vec<usize> = (0..tokens.len()).filter(|&i| depths[i] == 0).collect();
    let top_word = |i: usize| tokens.get(i).and_then(|t| word(sql, t));
    if only.depth != 0
        || only.first == 0
        || top_word(only.first - 1).as_deref() != Some("from")
        || top.iter().any(|&i| matches!(top_word(i).as_deref(), Some("union" | "except" | "intersect")))
    {
        return None;
    }
    // After the table: an optional alias, then WHERE.
    let mut next = only.end;
    let mut alias = None;
    if top_word(next).as_deref() == Some("as") {
        next += 1;
    }
    if let Some(token) = tokens.get(next)
        && matches!(token.kind, TokenKind::Word | TokenKind::QuotedIdentifier)
        && top_word(next).as_deref() != Some("where")
    {
        alias = token.name(sql);
        next += 1;
    }
    if tokens.get(next).and_then(|t| word(sql, t)).as_deref() != Some("where") {
        return None;
    }
    let clause_end = top
        .iter()
        .copied()
        .filter(|&i| i > next)
        .find(|&i| {
            matches!(
                top_word(i).as_deref(),
                Some("group" | "having" | "order" | "limit" | "offset" | "qualify" | "window")
            )
        })
        .unwrap_or(tokens.len());
    let column = TimeColumn { sql, dataset, alias: alias.as_deref(), name: &time_column.to_ascii_lowercase() };
    let mut range = (i64::MIN, i64::MAX);
    for conjunct in conjuncts(sql, tokens, &depths, next + 1, clause_end)? {
        if let Some((start, end)) = column.bounds(&tokens[conjunct.0..conjunct.1]) {
            range = (range.0.max(start), range.1.min(end));
        }
    }
    (range != (i64::MIN, i64::MAX)).then_some(range)
}

/// The top-level conjuncts of the tokens `start..end` as index ranges;
/// `None` if a top-level `OR` joins them.
fn conjuncts(sql: &str, tokens: &[Token], depths: &[usize], start: usize, end: usize) -> Option<Vec<(usize, usize)>> {
    let mut parts = Vec::new();
    let mut first = start;
    let mut between = false;
    for i in start..end {
        if depths[i] != 0 {
            continue;
        }
        match word(sql, &tokens[i]).as_deref() {
            Some("or") => return None,
            Some("between") => between = true,
            Some("and") if between => between = false,
            Some("and") => {
                parts.push((first, i));
                first = i + 1;
            }
            _ => {}
        }
    }
    parts.push((first, end));
    Some(parts)
}

/// How the query names the time column of the dataset.
struct TimeColumn<'a> {
    sql: &'a str,
    dataset: &'a str,
    alias: Option<&'a str>,
    name: &'a str,
}

impl TimeColumn<'_> {
    /// How many tokens at the start of `tokens` name the time column.
    fn named_by(&self, tokens: &[Token]) -> Option<usize> {
        let name = |i: usize| tokens.get(i).and_then(|t| t.name(self.sql));
        if is_operator(self.sql, tokens.get(1), ".") {
            let qualifier = name(0)?;
            // An alias hides the table's own name.
            let known = self.alias.map_or(qualifier == self.dataset, |alias| qualifier == alias);
            (known && name(2).as_deref() == Some(self.name)).then_some(3)
        } else {
            (name(0).as_deref() == Some(self.name)).then_some(1)
        }
    }

    /// The range one conjunct allows, if it is a simple time predicate.
    fn bounds(&self, tokens: &[Token]) -> Option<(i64, i64)> {
        let sql = self.sql;
        if let Some(n) = self.named_by(tokens) {
            let rest = &tokens[n..];
            if rest.first().and_then(|t| word(sql, t)).as_deref() == Some("between") {
                let and = (1..rest.len()).find(|&i| word(sql, &rest[i]).as_deref() == Some("and"))?;
                let (low, low_margin) = literal(sql, &rest[1..and])?;
                let (high, high_margin) = literal(sql, &rest[and + 1..])?;
                return Some((low.saturating_sub(low_margin), high.saturating_add(high_margin + 1)));
            }
            let operator = text(sql, rest.first()?);
            let (value, margin) = literal(sql, &rest[1..])?;
            return bounded(operator, value, margin);
        }
        // `'literal' <op> time`: the operator points the other way.
        let at = (1..tokens.len()).find(|&i| {
            tokens[i].kind == TokenKind::Operator && matches!(text(sql, &tokens[i]), "<" | "<=" | ">" | ">=" | "=")
        })?;
        if self.named_by(&tokens[at + 1..])? != tokens.len() - at - 1 {
            return None;
        }
        let (value, margin) = literal(sql, &tokens[..at])?;
        let flipped = match text(sql, &tokens[at]) {
            "<" => ">",
            "<=" => ">=",
            ">" => "<",
            ">=" => "<=",
            other => other,
        };
        bounded(flipped, value, margin)
    }
}

fn bounded(operator: &str, value: i64, margin: i64) -> Option<(i64, i64)> {
    let low = value.saturating_sub(margin);
    // The end is exclusive: `< v` ends at v, `<= v` just after it.
    let high = value.saturating_add(margin);
    match operator {
        // `> v` at the column's precision, exact: from just after v.
        ">" if margin == 0 => Some((value.saturating_add(1), i64::MAX)),
        ">" | ">=" => Some((low, i64::MAX)),
        "<" => Some((i64::MIN, high)),
        "<=" => Some((i64::MIN, high.saturating_add(1))),
        "=" | "==" => Some((low, high.saturating_add(1))),
        _ => None,
    }
}

/// A time literal: `'…'`, `TIMESTAMP '…'`, `TIMESTAMP_NS '…'`, `DATE '…'`
/// or `'…'::` one of those types, as epoch ns and the margin it needs.
fn literal(sql: &str, tokens: &[Token]) -> Option<(i64, i64)> {
    let typed = |kind: &Token| {
        let kind = word(sql, kind)?;
        TYPED_MARGINS_NS.iter().find(|(name, _)| *name == kind).map(|(_, margin)| *margin)
    };
    let (string, type_margin) = match tokens {
        [string] => (string, 0),
        [kind, string] => (string, typed(kind)?),
        [string, cast, kind] if is_operator(sql, Some(cast), "::") => (string, typed(kind)?),
        _ => return None,
    };
    let quoted = text(sql, string);
    if string.kind != TokenKind::String || !quoted.starts_with('\'') || !quoted.ends_with('\'') || quoted.len() < 2 {
        return None;
    }
    let (value, margin) = parse_time(&quoted[1..quoted.len() - 1].replace("''", "'"))?;
    Some((value, margin.max(type_margin)))
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.f]]][Z|±HH[:MM]]` as epoch ns read as UTC,
/// with the margin it needs (none; a day when it has an offset).
fn parse_time(text: &str) -> Option<(i64, i64)> {
    let text = text.trim();
    let (text, margin) = match text.strip_suffix(['Z', 'z']) {
        Some(rest) => (rest, 0),
        None => match text.get(10..).and_then(|time| time.rfind(['+', '-'])) {
            Some(at) => (&text[..10 + at], OFFSET_MARGIN_NS),
            None => (text, 0),
        },
    };
    let text = text.replacen('T', " ", 1);
    let parsed = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(&text, format).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0))?;
    Some((parsed.and_utc().timestamp_nanos_opt()?, margin))
}

#[cfg(test)]
mod tests {
    use super::super::sql_text::tokenize;
    use super::*;

    fn tables(sql: &str) -> Vec<String> {
        table_references(sql, &tokenize(sql)).into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn tables_are_names_in_table_positions() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT host FROM cpu", &["cpu"]),
            ("SELECT cpu.host AS mem FROM cpu WHERE mem > 1", &["cpu"]),
            (
                "SELECT * FROM a, b AS x, main.c JOIN \"D\" ON a.id = d.id LEFT JOIN e USING (id)",
                &["a", "b", "c", "d", "e"],
            ),
            ("SELECT o.v FROM orders o JOIN customers c ON o.id = c.id, third", &["orders", "customers", "third"]),
            ("SELECT * FROM (SELECT * FROM inner_t) q WHERE x IN (SELECT y FROM other)", &["inner_t", "other"]),
            ("FROM cpu SELECT host", &["cpu"]),
            ("SELECT count(*) FROM range(10) a, cpu", &["cpu"]),
            ("SELECT * FROM (a JOIN b ON a.x = b.x)", &["a", "b"]),
            ("WITH w AS (SELECT * FROM src) SELECT * FROM w", &["src", "w"]),
            ("TABLE t", &["t"]),
            ("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) q", &["x"]),
            ("DESCRIBE t", &["t"]),
            ("SUMMARIZE SELECT * FROM t", &["t"]),
            ("SELECT 'orders' AS orders, f(x, y) FROM cpu, LATERAL (SELECT 1) l", &["cpu"]),
            ("SELECT * FROM cpu UNION ALL SELECT * FROM mem ORDER BY 1", &["cpu", "mem"]),
            ("SELECT * FROM memory.main.cpu", &["cpu"]),
            ("SELECT 1 AS x", &[]),
            ("SELECT * FROM 'file.csv'", &[]),
        ];
        for (sql, expected) in cases {
            assert_eq!(tables(sql), *expected, "{sql}");
        }
    }

    fn range(sql: &str) -> Option<(i64, i64)> {
        time_range(sql, &tokenize(sql), "cpu", "time")
    }

    #[test]
    fn simple_top_level_time_predicates_give_a_range() {
        let day = 86_400 * 1_000_000_000i64;
        let jan2 = 19_724 * day; // 2024-01-02
        let m = 1_000;
        let cases: &[(&str, Option<(i64, i64)>)] = &[
            ("SELECT * FROM cpu WHERE time >= '2024-01-02'", Some((jan2, i64::MAX))),
            ("SELECT * FROM cpu WHERE time < '2024-01-02T00:00:00Z' AND v > 1", Some((i64::MIN, jan2))),
            (
                "SELECT * FROM cpu WHERE time > '2024-01-02 00:00:00.5' AND time <= '2024-01-03'",
                Some((jan2 + 500_000_001, jan2 + day + 1)),
            ),
            (
                "SELECT * FROM cpu c WHERE c.time BETWEEN '2024-01-02' AND TIMESTAMP '2024-01-03' ORDER BY 1",
                Some((jan2, jan2 + day + m + 1)),
            ),
            (
                "SELECT * FROM cpu AS c WHERE '2024-01-02'::TIMESTAMP <= time AND c.time < '2024-01-03 00:00:00'",
                Some((jan2 - m, jan2 + day)),
            ),
            (
                "SELECT count(*) FROM cpu WHERE host = 'a' AND time = '2024-01-02 00:00' GROUP BY host",
                Some((jan2, jan2 + 1)),
            ),
            ("SELECT * FROM cpu WHERE time > '2024-01-02T00:00:00+02:00'", Some((jan2 - OFFSET_MARGIN_NS, i64::MAX))),
            // Nothing certain: no range.
            ("SELECT * FROM cpu WHERE time >= '2024-01-02' OR v > 1", None),
            ("SELECT * FROM cpu WHERE NOT time >= '2024-01-02'", None),
            ("SELECT * FROM cpu WHERE time >= now() - INTERVAL 1 HOUR", None),
            ("SELECT * FROM cpu JOIN mem USING (time) WHERE time >= '2024-01-02'", None),
            ("SELECT * FROM cpu, mem WHERE time >= '2024-01-02'", None),
            ("SELECT * FROM cpu WHERE time >= '2024-01-02' UNION ALL SELECT * FROM mem", None),
            ("SELECT * FROM cpu WHERE other.time >= '2024-01-02'", None),
            ("SELECT * FROM cpu AS c WHERE cpu.time >= '2024-01-02'", None),
            ("SELECT * FROM cpu WHERE cpu.time >= '2024-01-02'", Some((jan2, i64::MAX))),
            ("SELECT * FROM cpu WHERE time >= 'yesterday'", None),
            ("SELECT (SELECT max(time) FROM cpu) FROM cpu WHERE time >= '2024-01-02'", None),
            ("SELECT * FROM (SELECT * FROM cpu) WHERE time >= '2024-01-02'", None),
            ("SELECT * FROM cpu WHERE (time >= '2024-01-02')", None),
            ("SELECT * FROM mem WHERE time >= '2024-01-02'", None),
            ("SELECT * FROM cpu", None),
            ("SELECT * FROM cpu c", None),
            ("SELECT * FROM cpu WHERE", None),
            ("SELECT * FROM cpu WHERE time >", None),
            ("SELECT * FROM cpu WHERE time BETWEEN '2024-01-02' AND", None),
        ];
        for (sql, expected) in cases {
            assert_eq!(range(sql), *expected, "{sql}");
        }
    }
}
