//! InfluxQL text into statements: a tokenizer and a recursive-descent
//! parser for the subset Strata answers (see `influxql`).
//!
//! **Invariant:** every construct outside that subset is refused with an
//! error naming it; nothing is silently dropped from a statement.

use super::{Cond, Field, FillMode, NameMatch, Select, Statement, TimeExpr};

/// One token.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A bare or double-quoted identifier (quoted ones never match keywords).
    Ident(String, bool),
    /// A single-quoted string.
    Str(String),
    /// A number without unit.
    Number(String),
    /// A duration literal, in ns.
    Duration(i64),
    /// A `/regex/`.
    Regex(String),
    /// Punctuation or an operator.
    Punct(&'static str),
}

const PUNCTS: [&str; 16] = ["=~", "!~", "!=", "<>", "<=", ">=", "=", "<", ">", "(", ")", ",", ";", "*", "+", "-"];

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let (value, next) = quoted(&chars, i)?;
            tokens.push(if c == '"' { Token::Ident(value, true) } else { Token::Str(value) });
            i = next;
        } else if c == '/' && regex_may_start(tokens.last()) {
            let (value, next) = quoted(&chars, i)?;
            tokens.push(Token::Regex(value));
            i = next;
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let number: String = chars[start..i].iter().collect();
            let unit_start = i;
            while i < chars.len() && (chars[i].is_ascii_alphabetic() || chars[i] == 'µ') {
                i += 1;
            }
            let unit: String = chars[unit_start..i].iter().collect();
            if unit.is_empty() {
                tokens.push(Token::Number(number));
            } else {
                tokens.push(Token::Duration(duration_ns(&number, &unit)?));
            }
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect(), false));
        } else if c == '.' {
            // `db.rp.measurement`: the qualifiers are dropped by the parser.
            tokens.push(Token::Punct("."));
            i += 1;
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            if c == ':' {
                return Err("::type casts are not supported".into());
            }
            let punct = PUNCTS
                .iter()
                .find(|p| rest.starts_with(**p))
                .ok_or_else(|| format!("unexpected character {c:?} at offset {i}"))?;
            tokens.push(Token::Punct(punct));
            i += punct.chars().count();
        }
    }
    Ok(tokens)
}

/// A `/` starts a regex after an operator or FROM / BY, not after a value.
fn regex_may_start(previous: Option<&Token>) -> bool {
    match previous {
        Some(Token::Punct(p)) => matches!(*p, "=~" | "!~" | "(" | ","),
        Some(Token::Ident(word, false)) => word.eq_ignore_ascii_case("FROM") || word.eq_ignore_ascii_case("BY"),
        _ => false,
    }
}

/// A quoted run from `chars[start]` (the quote) to its closing quote,
/// with backslash escapes; returns the value and the index after it.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                if quote == '/' && chars[i + 1] != '/' {
                    value.push('\\');
                }
                value.push(chars[i + 1]);
                i += 2;
            }
            c if c == quote => return Ok((value, i + 1)),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    Err(format!("unterminated {quote} quoted text at offset {start}"))
}

fn duration_ns(number: &str, unit: &str) -> Result<i64, String> {
    let scale: i64 = match unit {
        "ns" => 1,
        "u" | "us" | "µ" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "w" => 604_800_000_000_000,
        _ => return Err(format!("unknown duration unit {unit:?} in {number}{unit}")),
    };
    let count: i64 = number.parse().map_err(|_| format!("duration {number}{unit} must be a whole number"))?;
    count.checked_mul(scale).ok_or_else(|| format!("duration {number}{unit} is out of range"))
}

/// Parses `text` into its `;`-separated statements.
pub fn parse(text: &str) -> Result<Vec<Statement>, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, at: 0 };
    let mut statements = Vec::new();
    loop {
        while parser.eat_punct(";") {}
        if parser.at >= parser.tokens.len() {
            break;
        }
        statements.push(parser.statement()?);
        if parser.at < parser.tokens.len() && !parser.eat_punct(";") {
            return Err(format!("unexpected {} after the statement", parser.describe()));
        }
    }
    if statements.is_empty() {
        return Err("empty query".into());
    }
    Ok(statements)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "end of query".into(),
            Some(Token::Ident(s, _)) | Some(Token::Number(s)) => format!("{s:?}"),
            Some(Token::Str(s)) => format!("'{s}'"),
            Some(Token::Regex(s)) => format!("/{s}/"),
            Some(Token::Duration(ns)) => format!("duration {ns}ns"),
            Some(Token::Punct(p)) => format!("{p:?}"),
        }
    }

    fn is_keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(s, false)) if s.eq_ignore_ascii_case(word))
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        let found = self.is_keyword(word);
        self.at += usize::from(found);
        found
    }

    fn keyword(&mut self, word: &str) -> Result<(), String> {
        if self.eat_keyword(word) { Ok(()) } else { Err(format!("expected {word}, found {}", self.describe())) }
    }

    fn eat_punct(&mut self, punct: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Punct(p)) if *p == punct);
        self.at += usize::from(found);
        found
    }

    fn punct(&mut self, punct: &str) -> Result<(), String> {
        if self.eat_punct(punct) { Ok(()) } else { Err(format!("expected {punct:?}, found {}", self.describe())) }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.peek().cloned() {
            Some(Token::Ident(name, _)) => {
                self.at += 1;
                Ok(name)
            }
            _ => Err(format!("expected a name, found {}", self.describe())),
        }
    }

    /// A name possibly qualified as `db.rp.name`: the last part.
    fn measurement(&mut self) -> Result<String, String> {
        if matches!(self.peek(), Some(Token::Regex(_))) {
            return Err("FROM /regex/ is not supported: name one measurement".into());
        }
        let mut name = self.ident()?;
        while self.eat_punct(".") {
            name = self.ident()?;
        }
        Ok(name)
    }

    fn statement(&mut self) -> Result<Statement, String> {
        if self.eat_keyword("SELECT") {
            return self.select().map(Statement::Select);
        }
        if self.eat_keyword("SHOW") {
            return self.show();
        }
        Err(match self.peek() {
            Some(Token::Ident(word, false)) => format!("{} statements are not supported", word.to_uppercase()),
            _ => format!("expected SELECT or SHOW, found {}", self.describe()),
        })
    }

    fn show(&mut self) -> Result<Statement, String> {
        if self.eat_keyword("DATABASES") {
            return Ok(Statement::ShowDatabases);
        }
        if self.eat_keyword("RETENTION") {
            self.keyword("POLICIES")?;
            self.optional_on()?;
            return Ok(Statement::ShowRetentionPolicies);
        }
        if self.eat_keyword("MEASUREMENTS") {
            self.optional_on()?;
            let matching = if self.eat_keyword("WITH") { Some(self.measurement_match()?) } else { None };
            let limit = if self.eat_keyword("LIMIT") { Some(self.unsigned("LIMIT")?) } else { None };
            self.refuse_rest("SHOW MEASUREMENTS")?;
            return Ok(Statement::ShowMeasurements { matching, limit });
        }
        let (tag, field) = (self.eat_keyword("TAG"), !self.is_keyword("TAG") && self.eat_keyword("FIELD"));
        if tag && self.eat_keyword("KEYS") || field && self.eat_keyword("KEYS") {
            self.optional_on()?;
            let from = self.optional_from()?;
            self.refuse_rest(if tag { "SHOW TAG KEYS" } else { "SHOW FIELD KEYS" })?;
            return Ok(if tag { Statement::ShowTagKeys { from } } else { Statement::ShowFieldKeys { from } });
        }
        if tag && self.eat_keyword("VALUES") {
            self.optional_on()?;
            let from = self.optional_from()?;
            self.keyword("WITH")?;
            self.keyword("KEY")?;
            let keys = if self.eat_keyword("IN") {
                self.punct("(")?;
                let mut keys = vec![self.ident()?];
                while self.eat_punct(",") {
                    keys.push(self.ident()?);
                }
                self.punct(")")?;
                keys
            } else if self.eat_punct("=") {
                vec![self.ident()?]
            } else {
                return Err("SHOW TAG VALUES supports WITH KEY = \"k\" and WITH KEY IN (...) only".into());
            };
            let condition = if self.eat_keyword("WHERE") { Some(self.condition()?) } else { None };
            self.refuse_rest("SHOW TAG VALUES")?;
            return Ok(Statement::ShowTagValues { from, keys, condition });
        }
        Err(format!("SHOW {} is not supported", self.describe().trim_matches('"').to_uppercase()))
    }

    /// `MEASUREMENT = name` or `MEASUREMENT =~ /re/` after WITH.
    fn measurement_match(&mut self) -> Result<NameMatch, String> {
        self.keyword("MEASUREMENT")?;
        if self.eat_punct("=") {
            let text = match self.peek().cloned() {
                Some(Token::Str(text)) => {
                    self.at += 1;
                    text
                }
                _ => self.ident()?,
            };
            return Ok(NameMatch { text, exact: true, case_insensitive: false });
        }
        self.punct("=~")?;
        match self.peek().cloned() {
            Some(Token::Regex(re)) => {
                self.at += 1;
                NameMatch::from_regex(&re).ok_or_else(|| {
                    format!("WITH MEASUREMENT =~ /{re}/ is not supported: only literal text, (?i) and ^…$ are")
                })
            }
            _ => Err(format!("expected a /regex/, found {}", self.describe())),
        }
    }

    fn optional_on(&mut self) -> Result<(), String> {
        if self.eat_keyword("ON") {
            self.ident()?;
        }
        Ok(())
    }

    fn optional_from(&mut self) -> Result<Option<String>, String> {
        if self.eat_keyword("FROM") { self.measurement().map(Some) } else { Ok(None) }
    }

    /// Refuses clauses the statement does not support (WHERE, LIMIT …).
    fn refuse_rest(&self, statement: &str) -> Result<(), String> {
        match self.peek() {
            None | Some(Token::Punct(";")) => Ok(()),
            Some(Token::Ident(word, false)) => {
                Err(format!("{statement} with {} is not supported", word.to_uppercase()))
            }
            _ => Err(format!("unexpected {} in {statement}", self.describe())),
        }
    }

    fn select(&mut self) -> Result<Select, String> {
        let mut fields = vec![self.field()?];
        while self.eat_punct(",") {
            fields.push(self.field()?);
        }
        if self.is_keyword("INTO") {
            return Err("SELECT ... INTO is not supported".into());
        }
        self.keyword("FROM")?;
        if self.eat_punct("(") {
            return Err("subqueries (FROM (SELECT ...)) are not supported".into());
        }
        let measurement = self.measurement()?;
        if self.eat_punct(",") {
            return Err("SELECT from several measurements is not supported: name one".into());
        }
        let mut select = Select::new(fields, measurement);
        if self.eat_keyword("WHERE") {
            select.condition = Some(self.condition()?);
        }
        if self.eat_keyword("GROUP") {
            self.keyword("BY")?;
            self.group_by(&mut select)?;
        }
        if self.eat_keyword("FILL") {
            select.fill = Some(self.fill()?);
        }
        if self.eat_keyword("ORDER") {
            self.keyword("BY")?;
            let column = self.ident()?;
            if !column.eq_ignore_ascii_case("time") {
                return Err(format!("ORDER BY {column} is not supported: only ORDER BY time [ASC|DESC]"));
            }
            select.descending = self.eat_keyword("DESC");
            if !select.descending {
                self.eat_keyword("ASC");
            }
        }
        for (word, slot) in [("LIMIT", 0), ("OFFSET", 1), ("SLIMIT", 2), ("SOFFSET", 3)] {
            if self.eat_keyword(word) {
                if slot >= 2 {
                    return Err(format!("{word} is not supported"));
                }
                let value = self.unsigned(word)?;
                if slot == 0 { select.limit = Some(value) } else { select.offset = Some(value) }
            }
        }
        if self.is_keyword("TZ") {
            return Err("tz() is not supported: times are UTC".into());
        }
        Ok(select)
    }

    fn unsigned(&mut self, what: &str) -> Result<u64, String> {
        match self.peek().cloned() {
            Some(Token::Number(n)) => {
                self.at += 1;
                n.parse().map_err(|_| format!("{what} must be a whole number, not {n}"))
            }
            _ => Err(format!("{what} must be a whole number, found {}", self.describe())),
        }
    }

    fn field(&mut self) -> Result<Field, String> {
        if self.eat_punct("*") {
            return Ok(Field { function: None, column: "*".into(), argument: None, alias: None });
        }
        let (name, quoted) = match self.peek().cloned() {
            Some(Token::Ident(name, quoted)) => (name, quoted),
            _ => return Err(format!("expected a field, found {}", self.describe())),
        };
        self.at += 1;
        let mut field = if !quoted && self.eat_punct("(") {
            let function = name.to_lowercase();
            let column = if self.eat_punct("*") {
                "*".to_string()
            } else if self.is_keyword("DISTINCT") || matches!(self.peek(), Some(Token::Ident(_, false))) {
                let inner = self.ident()?;
                if self.eat_punct("(") {
                    return Err(format!("nested functions ({function}({inner}(...))) are not supported"));
                }
                inner
            } else {
                self.ident()?
            };
            let argument = if self.eat_punct(",") {
                match self.peek().cloned() {
                    Some(Token::Number(n)) => {
                        self.at += 1;
                        Some(n.parse::<f64>().map_err(|_| format!("bad number {n}"))?)
                    }
                    _ => return Err(format!("{function}() takes a number as its second argument")),
                }
            } else {
                None
            };
            self.punct(")")?;
            Field { function: Some(function), column, argument, alias: None }
        } else {
            Field { function: None, column: name, argument: None, alias: None }
        };
        if let Some(Token::Punct(op @ ("+" | "-" | "*"))) = self.peek() {
            return Err(format!("arithmetic in SELECT ({op}) is not supported"));
        }
        if self.eat_keyword("AS") {
            field.alias = Some(self.ident()?);
        }
        Ok(field)
    }

    fn group_by(&mut self, select: &mut Select) -> Result<(), String> {
        loop {
            if self.eat_punct("*") {
                select.group_all_tags = true;
            } else if self.is_keyword("time") && matches!(self.tokens.get(self.at + 1), Some(Token::Punct("("))) {
                self.at += 2;
                let Some(Token::Duration(ns)) = self.peek().cloned() else {
                    return Err(format!("GROUP BY time() needs a duration such as 1m, found {}", self.describe()));
                };
                self.at += 1;
                if self.eat_punct(",") {
                    return Err("GROUP BY time() with an offset is not supported".into());
                }
                self.punct(")")?;
                select.interval_ns = Some(ns);
            } else {
                if matches!(self.peek(), Some(Token::Regex(_))) {
                    return Err("GROUP BY /regex/ is not supported: name the tags".into());
                }
                select.group_tags.push(self.ident()?);
            }
            if !self.eat_punct(",") {
                return Ok(());
            }
        }
    }

    fn fill(&mut self) -> Result<FillMode, String> {
        self.punct("(")?;
        let mode = match self.peek().cloned() {
            Some(Token::Ident(word, false)) => {
                self.at += 1;
                match word.to_lowercase().as_str() {
                    "null" => FillMode::Null,
                    "none" => FillMode::None,
                    "previous" => FillMode::Previous,
                    other => {
                        return Err(format!("fill({other}) is not supported: use null, none, previous or a number"));
                    }
                }
            }
            _ => FillMode::Value(self.signed_number()?),
        };
        self.punct(")")?;
        Ok(mode)
    }

    fn signed_number(&mut self) -> Result<f64, String> {
        let negative = self.eat_punct("-");
        match self.peek().cloned() {
            Some(Token::Number(n)) => {
                self.at += 1;
                let value: f64 = n.parse().map_err(|_| format!("bad number {n}"))?;
                Ok(if negative { -value } else { value })
            }
            _ => Err(format!("expected a number, found {}", self.describe())),
        }
    }

    /// `a OR b`, `a AND b`, `(…)`, comparisons.
    fn condition(&mut self) -> Result<Cond, String> {
        let mut left = self.conjunction()?;
        while self.eat_keyword("OR") {
            left = Cond::Or(Box::new(left), Box::new(self.conjunction()?));
        }
        Ok(left)
    }

    fn conjunction(&mut self) -> Result<Cond, String> {
        let mut left = self.comparison()?;
        while self.eat_keyword("AND") {
            left = Cond::And(Box::new(left), Box::new(self.comparison()?));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Cond, String> {
        if self.eat_punct("(") {
            let inner = self.condition()?;
            self.punct(")")?;
            return Ok(inner);
        }
        let column = self.ident()?;
        let op = match self.peek().cloned() {
            Some(Token::Punct(op @ ("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=" | "=~" | "!~"))) => {
                self.at += 1;
                if op == "<>" { "!=" } else { op }
            }
            _ => return Err(format!("expected a comparison after {column}, found {}", self.describe())),
        };
        if column.eq_ignore_ascii_case("time") {
            return Ok(Cond::Time(op, self.time_expr()?));
        }
        let value = match self.peek().cloned() {
            Some(Token::Str(s)) => serde_json::Value::String(s),
            Some(Token::Regex(re)) => {
                self.at += 1;
                return Ok(Cond::Regex(column, op == "=~", re));
            }
            Some(Token::Ident(word, false)) if word.eq_ignore_ascii_case("true") => serde_json::Value::Bool(true),
            Some(Token::Ident(word, false)) if word.eq_ignore_ascii_case("false") => serde_json::Value::Bool(false),
            Some(Token::Number(_) | Token::Punct("-")) => {
                let value = self.signed_number()?;
                return Ok(Cond::Compare(column, op, number_json(value)));
            }
            _ => return Err(format!("expected a value after {column} {op}, found {}", self.describe())),
        };
        self.at += 1;
        if op == "=~" || op == "!~" {
            return Err(format!("{op} needs a /regex/"));
        }
        Ok(Cond::Compare(column, op, value))
    }

    /// `now()`, `'rfc3339'`, an epoch integer (ns) or duration literal,
    /// each `+`/`-` durations.
    fn time_expr(&mut self) -> Result<TimeExpr, String> {
        let mut expr = match self.peek().cloned() {
            Some(Token::Ident(word, false)) if word.eq_ignore_ascii_case("now") => {
                self.at += 1;
                self.punct("(")?;
                self.punct(")")?;
                TimeExpr { now: true, offset_ns: 0 }
            }
            Some(Token::Str(text)) => {
                self.at += 1;
                TimeExpr { now: false, offset_ns: parse_time_text(&text)? }
            }
            Some(Token::Duration(ns)) => {
                self.at += 1;
                TimeExpr { now: false, offset_ns: ns }
            }
            Some(Token::Number(n)) => {
                self.at += 1;
                TimeExpr { now: false, offset_ns: n.parse().map_err(|_| format!("time {n} must be epoch ns"))? }
            }
            _ => return Err(format!("expected a time (now(), 'RFC 3339', epoch), found {}", self.describe())),
        };
        loop {
            let sign = if self.eat_punct("+") {
                1
            } else if self.eat_punct("-") {
                -1
            } else {
                return Ok(expr);
            };
            let Some(Token::Duration(ns)) = self.peek().cloned() else {
                return Err(format!(
                    "expected a duration after {}, found {}",
                    if sign > 0 { '+' } else { '-' },
                    self.describe()
                ));
            };
            self.at += 1;
            expr.offset_ns = expr.offset_ns.saturating_add(sign * ns);
        }
    }
}

fn number_json(value: f64) -> serde_json::Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        serde_json::Value::from(value as i64)
    } else {
        serde_json::Value::from(value)
    }
}

/// RFC 3339, or InfluxQL's `YYYY-MM-DD[ HH:MM:SS[.f]]` (UTC).
fn parse_time_text(text: &str) -> Result<i64, String> {
    if let Ok(ns) = crate::time::parse_rfc3339(text) {
        return Ok(ns);
    }
    let normalized =
        if text.len() == 10 { format!("{text}T00:00:00Z") } else { format!("{}Z", text.replacen(' ', "T", 1)) };
    crate::time::parse_rfc3339(&normalized).map_err(|_| format!("time '{text}' is not RFC 3339"))
}
