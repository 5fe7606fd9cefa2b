//! The lexical view of user SQL that the checks of `/v1/sql` need: which
//! names it uses, which of them it calls, and where its last token ends.
//!
//! This is a port of DuckDB's own tokenizer (`parser/peg/tokenizer/
//! base_tokenizer.cpp`, with the Unicode-space normalisation of
//! `Parser::NormalizeSQLString` in front), so a name hidden from it is hidden
//! from DuckDB too: strings (`'…'`, `E'…'` with backslash escapes, `$tag$…$tag$`),
//! quoted identifiers (`"…"` and `` `…` ``) and nested block comments end
//! exactly where DuckDB ends them. Pure and table-tested. The statement
//! count never comes from here: DuckDB's parser counts (see `sql_guard`).

use std::borrow::Cow;

/// A token's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A bare word: a keyword or an identifier.
    Word,
    /// `"…"` or `` `…` ``.
    QuotedIdentifier,
    /// Any string literal, terminated or not.
    String,
    /// A numeric literal (and a lone `.`).
    Number,
    /// An operator or punctuation, e.g. `(`.
    Operator,
    /// `;`.
    Terminator,
}

/// One token: its class and byte range in the (normalised) text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    /// The class.
    pub kind: TokenKind,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Token {
    /// The name a word or quoted identifier stands for, lower-cased (DuckDB
    /// matches names case-insensitively, quoted or not); `None` for the rest.
    pub(crate) fn name(&self, sql: &str) -> Option<String> {
        let text = &sql[self.start..self.end];
        match self.kind {
            TokenKind::Word => Some(text.to_ascii_lowercase()),
            TokenKind::QuotedIdentifier => {
                let delimiter = &text[..1];
                let inner = text.strip_prefix(delimiter)?.strip_suffix(delimiter).unwrap_or(&text[1..]);
                Some(inner.replace(&delimiter.repeat(2), delimiter).to_ascii_lowercase())
            }
            _ => None,
        }
    }
}

/// DuckDB's reserved keywords: a bare one is never a table name.
const RESERVED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "default",
    "deferrable",
    "desc",
    "describe",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lambda",
    "lateral",
    "leading",
    "limit",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "pivot",
    "pivot_longer",
    "pivot_wider",
    "placing",
    "primary",
    "qualify",
    "references",
    "returning",
    "select",
    "show",
    "some",
    "summarize",
    "symmetric",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "unpivot",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// The names (words and quoted identifiers) `sql` uses, lower-cased, in
/// order; bare reserved keywords excluded.
pub(crate) fn referenced_names(sql: &str, tokens: &[Token]) -> Vec<String> {
    tokens
        .iter()
        .filter_map(|token| {
            let name = token.name(sql)?;
            let reserved = token.kind == TokenKind::Word && RESERVED_KEYWORDS.contains(&name.as_str());
            (!reserved).then_some(name)
        })
        .collect()
}

/// The names `sql` calls: a word or quoted identifier followed by `(`
/// (comments in between are not tokens), lower-cased.
pub(crate) fn called_names(sql: &str, tokens: &[Token]) -> Vec<String> {
    tokens
        .windows(2)
        .filter(|pair| pair[1].kind == TokenKind::Operator && &sql[pair[1].start..pair[1].end] == "(")
        .filter_map(|pair| pair[0].name(sql))
        .collect()
}

/// `sql` without its trailing `;`s and trailing comments (the end of its
/// last other token), so that it fits inside a subquery.
pub(crate) fn without_terminators<'a>(sql: &'a str, tokens: &[Token]) -> &'a str {
    let end = tokens.iter().rev().find(|t| t.kind != TokenKind::Terminator).map_or(0, |t| t.end);
    &sql[..end]
}

/// `sql` as DuckDB's parser sees it: the Unicode spaces DuckDB replaces with
/// a plain space outside quotes (U+00A0, U+2000–U+200B, U+202F, U+205F,
/// U+2060, U+3000, U+FEFF) replaced the same way. A port of
/// `Parser::StripUnicodeSpaces`, quirks included (its own, simpler view of
/// quotes and comments, and bounds that skip the last two bytes).
pub(crate) fn normalize(sql: &str) -> Cow<'_, str> {
    let bytes = sql.as_bytes();
    let size = bytes.len();
    let mut spaces: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    'regular: loop {
        while pos + 2 < size {
            let c = bytes[pos];
            match c {
                0xC2 if bytes[pos + 1] == 0xA0 => spaces.push((pos, 2)),
                0xE2 if bytes[pos + 1] == 0x80
                    && ((0x80..=0x8B).contains(&bytes[pos + 2]) || bytes[pos + 2] == 0xAF) =>
                {
                    spaces.push((pos, 3))
                }
                0xE2 if bytes[pos + 1] == 0x81 && (bytes[pos + 2] == 0x9F || bytes[pos + 2] == 0xA0) => {
                    spaces.push((pos, 3))
                }
                0xE3 if bytes[pos + 1] == 0x80 && bytes[pos + 2] == 0x80 => spaces.push((pos, 3)),
                0xEF if bytes[pos + 1] == 0xBB && bytes[pos + 2] == 0xBF => spaces.push((pos, 3)),
                b'"' | b'\'' => {
                    let quote = c;
                    pos += 1;
                    while pos + 1 < size {
                        if bytes[pos] == quote {
                            if bytes[pos + 1] == quote {
                                pos += 2;
                                continue;
                            }
                            pos += 1;
                            continue 'regular;
                        }
                        pos += 1;
                    }
                    break 'regular;
                }
                b'$' if bytes[pos + 1] == b'$' || is_dollar_tag_first(bytes[pos + 1]) => {
                    pos += 1;
                    let start = pos;
                    while pos + 2 < size {
                        if bytes[pos] == b'$' {
                            let tag = &bytes[start..pos];
                            // In the dollar-quoted string: look for `$tag$`.
                            while pos + 2 < size {
                                if bytes[pos] == b'$'
                                    && size - (pos + 1) > tag.len()
                                    && bytes[pos + tag.len() + 1] == b'$'
                                    && &bytes[pos + 1..pos + 1 + tag.len()] == tag
                                {
                                    // On the closing `$`, which is looked at again.
                                    pos += tag.len() + 1;
                                    continue 'regular;
                                }
                                pos += 1;
                            }
                            break 'regular;
                        }
                        if !is_dollar_tag_subsequent(bytes[pos]) {
                            continue 'regular;
                        }
                        pos += 1;
                    }
                    break 'regular;
                }
                b'-' if bytes[pos + 1] == b'-' => {
                    while pos < size {
                        if bytes[pos] == b'\n' || bytes[pos] == b'\r' {
                            continue 'regular;
                        }
                        pos += 1;
                    }
                    break 'regular;
                }
                _ => {}
            }
            pos += 1;
        }
        break;
    }
    if spaces.is_empty() {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(size);
    let mut previous = 0;
    for (at, length) in spaces {
        out.push_str(&sql[previous..at]);
        out.push(' ');
        previous = at + length;
    }
    out.push_str(&sql[previous..]);
    Cow::Owned(out)
}

fn is_dollar_tag_first(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_dollar_tag_subsequent(c: u8) -> bool {
    is_dollar_tag_first(c) || c.is_ascii_digit()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Standard,
    Numeric,
    Operator,
    Keyword,
    StringLiteral,
    QuotedIdentifier,
    LineComment,
    BlockComment,
    DollarQuoted,
}

/// DuckDB's `Tokenizer::CharacterIsOperator`.
fn is_operator_continuation(c: u8) -> bool {
    matches!(c, b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'~' | b'!' | b'@' | b'&' | b'|')
}

/// DuckDB's `StringUtil::CharacterIsOperator`: ASCII punctuation but `_`.
fn is_punctuation(c: u8) -> bool {
    c != b'_' && c.is_ascii_punctuation()
}

fn is_single_byte_operator(c: u8) -> bool {
    matches!(c, b'(' | b')' | b'{' | b'}' | b'[' | b']' | b',' | b':' | b'?' | b'$' | b'#')
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn is_initial_number(c: u8) -> bool {
    c.is_ascii_digit() || c == b'.'
}

fn is_keyword_character(c: u8) -> bool {
    !is_single_byte_operator(c) && !is_punctuation(c) && !is_space(c) && !matches!(c, b'\'' | b';' | b'"' | b'.')
}

fn is_dollar_tag_character(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// The tokens of `sql` (normalise it first with [`normalize`]), comments
/// left out. A port of `Tokenizer::TokenizeInputInternal`.
pub(crate) fn tokenize(sql: &str) -> Vec<Token> {
    let bytes = sql.as_bytes();
    let size = bytes.len();
    let mut tokens = Vec::new();
    let mut push = |kind: TokenKind, start: usize, end: usize| {
        if start < end {
            tokens.push(Token { kind, start, end });
        }
    };
    let mut state = State::Standard;
    let mut last = 0;
    let mut escape_string = false;
    let mut quote = b'"';
    let mut dollar_tag: &[u8] = &[];
    let mut comment_depth = 0usize;
    let mut i = 0;
    while i < size {
        let c = bytes[i];
        match state {
            State::Standard => {
                if c == b'\'' {
                    (state, last, escape_string) = (State::StringLiteral, i, false);
                } else if c == b'"' || c == b'`' {
                    (state, quote, last) = (State::QuotedIdentifier, c, i);
                } else if c == b';' {
                    push(TokenKind::Terminator, i, i + 1);
                    last = i + 1;
                } else if c == b'$' {
                    if i + 1 < size {
                        if bytes[i + 1].is_ascii_digit() {
                            push(TokenKind::Operator, i, i + 1);
                        } else {
                            let next_dollar = bytes[i + 1..]
                                .iter()
                                .position(|&b| b == b'$' || !is_dollar_tag_character(b))
                                .map(|p| i + 1 + p)
                                .filter(|&p| bytes[p] == b'$');
                            match next_dollar {
                                None => push(TokenKind::Operator, i, i + 1),
                                Some(end) => {
                                    dollar_tag = &bytes[i + 1..end];
                                    (state, last) = (State::DollarQuoted, i);
                                    i = end;
                                }
                            }
                        }
                    }
                } else if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
                    i += 1;
                    state = State::LineComment;
                } else if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
                    i += 1;
                    (state, comment_depth) = (State::BlockComment, 1);
                } else if is_space(c) {
                    last = i + 1;
                } else if c == b':' && matches!(bytes.get(i + 1), Some(b':' | b'=')) {
                    if bytes.get(i + 2).is_some_and(|&b| is_operator_continuation(b)) {
                        (state, last) = (State::Operator, i);
                    } else {
                        push(TokenKind::Operator, i, i + 2);
                        i += 1;
                        last = i + 1;
                    }
                } else if is_single_byte_operator(c) {
                    push(TokenKind::Operator, i, i + 1);
                    last = i + 1;
                } else if is_initial_number(c) {
                    (state, last) = (State::Numeric, i);
                } else if matches!(c, b'N' | b'n' | b'X' | b'x' | b'E' | b'e' | b'B' | b'b')
                    && bytes.get(i + 1) == Some(&b'\'')
                {
                    (state, last, escape_string) = (State::StringLiteral, i, c == b'E' || c == b'e');
                    i += 1;
                } else if is_punctuation(c) {
                    (state, last) = (State::Operator, i);
                } else {
                    (state, last) = (State::Keyword, i);
                }
            }
            State::Numeric => {
                let digit_separator =
                    c == b'_' && bytes[i - 1].is_ascii_digit() && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit());
                let exponent = matches!(c, b'e' | b'E')
                    && !matches!(bytes[i - 1], b'e' | b'E')
                    && (bytes[last].is_ascii_digit() || bytes[i - 1].is_ascii_digit());
                let exponent_sign = matches!(c, b'+' | b'-') && matches!(bytes[i - 1], b'e' | b'E');
                if !(is_initial_number(c) || digit_separator || exponent || exponent_sign) {
                    while !is_initial_number(bytes[i - 1]) {
                        i -= 1;
                    }
                    push(TokenKind::Number, last, i);
                    (state, last) = (State::Standard, i);
                    continue;
                }
            }
            State::Operator => {
                let comment =
                    (c == b'-' && bytes.get(i + 1) == Some(&b'-')) || (c == b'/' && bytes.get(i + 1) == Some(&b'*'));
                if comment || !is_operator_continuation(c) {
                    push(TokenKind::Operator, last, i);
                    (state, last) = (State::Standard, i);
                    continue;
                }
            }
            State::Keyword => {
                if c != b'$' && !is_keyword_character(c) {
                    push(TokenKind::Word, last, i);
                    (state, last) = (State::Standard, i);
                    continue;
                }
            }
            State::StringLiteral => {
                if escape_string && c == b'\\' && i + 1 < size {
                    i += 1;
                } else if c == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        push(TokenKind::String, last, i + 1);
                        (state, last, escape_string) = (State::Standard, i + 1, false);
                    }
                }
            }
            State::QuotedIdentifier => {
                if c == quote {
                    if bytes.get(i + 1) == Some(&quote) {
                        i += 1;
                    } else {
                        push(TokenKind::QuotedIdentifier, last, i + 1);
                        (state, last) = (State::Standard, i + 1);
                    }
                }
            }
            State::LineComment => {
                if c == b'\n' || c == b'\r' {
                    (state, last) = (State::Standard, i + 1);
                }
            }
            State::BlockComment => {
                if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
                    i += 1;
                    comment_depth += 1;
                } else if c == b'*' && bytes.get(i + 1) == Some(&b'/') {
                    i += 1;
                    comment_depth -= 1;
                    if comment_depth == 0 {
                        (state, last) = (State::Standard, i + 1);
                    }
                }
            }
            State::DollarQuoted => {
                if c == b'$' && i + 1 < size {
                    let start = i + 1;
                    if let Some(end) = bytes[start..].iter().position(|&b| b == b'$').map(|p| start + p)
                        && &bytes[start..end] == dollar_tag
                    {
                        push(TokenKind::String, last, end + 1);
                        state = State::Standard;
                        i = end;
                        last = i + 1;
                    }
                }
            }
        }
        i += 1;
    }
    match state {
        State::LineComment | State::BlockComment => {}
        State::Operator => push(TokenKind::Operator, last, size),
        State::DollarQuoted | State::StringLiteral => push(TokenKind::String, last, size),
        State::QuotedIdentifier => push(TokenKind::QuotedIdentifier, last, size),
        State::Numeric => push(TokenKind::Number, last, size),
        State::Keyword | State::Standard => push(TokenKind::Word, last, size),
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<String> {
        let sql = normalize(sql);
        referenced_names(&sql, &tokenize(&sql))
    }

    fn calls(sql: &str) -> Vec<String> {
        let sql = normalize(sql);
        called_names(&sql, &tokenize(&sql))
    }

    #[test]
    fn strings_comments_and_quotes_end_where_duckdb_ends_them() {
        let table: &[(&str, &[&str])] = &[
            ("SELECT a FROM b", &["a", "b"]),
            ("SELECT 'a' , \"B\" , `c` FROM d", &["b", "c", "d"]),
            ("SELECT 'it''s', x", &["x"]),
            ("SELECT E'\\'', x -- '", &["x"]),
            ("SELECT '\\', x -- '", &["x"]),
            ("SELECT $$ a ; $$, $t$ $$ b $t$, x", &["x"]),
            ("SELECT /* a /* nested */ b */ x", &["x"]),
            ("SELECT x -- y\nFROM z", &["x", "z"]),
            ("SELECT \"a\"\"b\" FROM t", &["a\"b", "t"]),
            ("SELECT x::int, y:=1, z.w FROM t", &["x", "int", "y", "z", "w", "t"]),
            ("SELECT 1e5, 1_000, .5, x1", &["x1"]),
            ("SELECT n'a', x'00', b'1', e'\\n', no", &["no"]),
            ("SELECT a\u{a0}b", &["a", "b"]),
            ("SELECT 'a\u{a0}b'", &[]),
            ("SELECT 'unterminated", &[]),
            ("SELECT \u{3000}cpu", &["cpu"]),
        ];
        for (sql, expected) in table {
            assert_eq!(names(sql), *expected, "{sql}");
        }
    }

    #[test]
    fn calls_are_names_before_a_parenthesis() {
        assert_eq!(calls("SELECT f(1), g /* c */ (2), \"H\"(3), s.t(4), 'k'(5), x + (1)"), ["f", "g", "h", "t"]);
        assert_eq!(calls("SELECT current_setting\u{a0}('x')"), ["current_setting"]);
    }

    #[test]
    fn trailing_terminators_and_comments_are_cut() {
        for (sql, expected) in [
            ("SELECT 1;", "SELECT 1"),
            ("SELECT 1 ; ;\n -- c", "SELECT 1"),
            ("SELECT ';'", "SELECT ';'"),
            ("SELECT 1; SELECT 2;", "SELECT 1; SELECT 2"),
            (";", ""),
        ] {
            assert_eq!(without_terminators(sql, &tokenize(sql)), expected, "{sql}");
        }
    }
}
