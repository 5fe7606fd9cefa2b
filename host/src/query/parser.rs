//! DuckDB's parser on its own: how many statements a text holds, counted by
//! the parser that will run it, before any of it reaches a query database.
//!
//! duckdb-rs's `Connection::prepare` executes every statement of a text but
//! the last, so counting has to happen elsewhere: on a private in-memory
//! database, opened once and shared behind a mutex, on which nothing is ever
//! executed (only `duckdb_extract_statements`, which parses). duckdb-rs does
//! not expose a connection's raw handle, hence the C API and its `unsafe`.

use std::ffi::{CStr, CString, c_char};
use std::ptr;
use std::sync::{Mutex, OnceLock};

use crate::sync::Recover as _;
use duckdb::ffi;

/// What the parser made of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// It parses, as this many statements.
    Statements(usize),
    /// It does not parse; DuckDB's message.
    SyntaxError(String),
}

/// The parser-only database and its one connection.
struct ParserDatabase {
    database: ffi::duckdb_database,
    connection: ffi::duckdb_connection,
}

// SAFETY: DuckDB's database and connection handles are not tied to the
// thread that opened them; the mutex around the only value of this type
// makes sure one thread at a time uses the connection.
#[allow(unsafe_code)]
unsafe impl Send for ParserDatabase {}

static PARSER: OnceLock<Result<Mutex<ParserDatabase>, String>> = OnceLock::new();

/// Settings of the parser database: it is never asked to read, load or run
/// anything, and these make sure it could not if it were.
const PARSER_SETTINGS: [(&str, &str); 4] = [
    ("enable_external_access", "false"),
    ("autoinstall_known_extensions", "false"),
    ("autoload_known_extensions", "false"),
    ("threads", "1"),
];

/// Counts the statements of `sql` with DuckDB's parser. `Err` only when the
/// parser database cannot be opened.
pub(crate) fn parse(sql: &str) -> Result<Parsed, String> {
    let Ok(text) = CString::new(sql) else {
        return Ok(Parsed::SyntaxError("SQL must not contain a NUL character".into()));
    };
    let parser = PARSER.get_or_init(|| ParserDatabase::open().map(Mutex::new)).as_ref().map_err(Clone::clone)?;
    let parser = parser.lock_or_recover();
    Ok(parser.extract(&text))
}

impl ParserDatabase {
    #[allow(unsafe_code)]
    fn open() -> Result<ParserDatabase, String> {
        let settings: Vec<(CString, CString)> = PARSER_SETTINGS
            .iter()
            .map(|(name, value)| (CString::new(*name).expect("no NUL"), CString::new(*value).expect("no NUL")))
            .collect();
        // SAFETY: every pointer handed to DuckDB is either a valid
        // NUL-terminated string that outlives the call or an out-parameter
        // owned by this frame; each handle DuckDB gives back is destroyed
        // exactly once on the failure paths and kept for good on success.
        unsafe {
            let mut config: ffi::duckdb_config = ptr::null_mut();
            if ffi::duckdb_create_config(&mut config) != ffi::DuckDBSuccess {
                return Err("creating the SQL parser's configuration failed".into());
            }
            for (name, value) in &settings {
                if ffi::duckdb_set_config(config, name.as_ptr(), value.as_ptr()) != ffi::DuckDBSuccess {
                    ffi::duckdb_destroy_config(&mut config);
                    return Err(format!("setting {name:?} of the SQL parser failed"));
                }
            }
            let mut database: ffi::duckdb_database = ptr::null_mut();
            let mut error: *mut c_char = ptr::null_mut();
            let opened = ffi::duckdb_open_ext(ptr::null(), &mut database, config, &mut error);
            ffi::duckdb_destroy_config(&mut config);
            if opened != ffi::DuckDBSuccess {
                let message = if error.is_null() {
                    "unknown error".to_string()
                } else {
                    let message = CStr::from_ptr(error).to_string_lossy().into_owned();
                    ffi::duckdb_free(error.cast());
                    message
                };
                return Err(format!("opening the SQL parser failed: {message}"));
            }
            let mut connection: ffi::duckdb_connection = ptr::null_mut();
            if ffi::duckdb_connect(database, &mut connection) != ffi::DuckDBSuccess {
                ffi::duckdb_close(&mut database);
                return Err("connecting to the SQL parser failed".into());
            }
            Ok(ParserDatabase { database, connection })
        }
    }

    /// Parses `sql` (no statement is prepared or executed).
    #[allow(unsafe_code)]
    fn extract(&self, sql: &CStr) -> Parsed {
        debug_assert!(!self.database.is_null());
        // SAFETY: the connection is open for the life of the process and
        // used by one thread at a time (the caller holds the mutex); `sql`
        // is NUL-terminated and outlives the call; the extracted statements
        // are read before they are destroyed, once, and the error text is
        // copied out before that.
        unsafe {
            let mut extracted: ffi::duckdb_extracted_statements = ptr::null_mut();
            let count = ffi::duckdb_extract_statements(self.connection, sql.as_ptr(), &mut extracted);
            let parsed = if count > 0 {
                Parsed::Statements(count as usize)
            } else if extracted.is_null() {
                Parsed::SyntaxError("the SQL could not be parsed".into())
            } else {
                let error = ffi::duckdb_extract_statements_error(extracted);
                if error.is_null() {
                    Parsed::Statements(0)
                } else {
                    Parsed::SyntaxError(CStr::from_ptr(error).to_string_lossy().into_owned())
                }
            };
            if !extracted.is_null() {
                ffi::duckdb_destroy_extracted(&mut extracted);
            }
            parsed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_counts_statements_and_never_runs_them() {
        assert_eq!(parse("SELECT 1"), Ok(Parsed::Statements(1)));
        assert_eq!(parse("SELECT 1; SELECT 2"), Ok(Parsed::Statements(2)));
        assert_eq!(parse("SELECT ';' -- ;\n/* ; */"), Ok(Parsed::Statements(1)));
        assert_eq!(parse("CREATE TABLE t AS SELECT 1; SELECT * FROM t"), Ok(Parsed::Statements(2)));
        assert!(matches!(parse("SELEC 1"), Ok(Parsed::SyntaxError(_))));
        assert!(matches!(parse("SELECT 1\0"), Ok(Parsed::SyntaxError(_))));
    }
}
