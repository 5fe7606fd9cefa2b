//! Access tokens: the `tokens` table. Only the auth layer and `strata
//! token` use it.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Catalog, CatalogError, Result, corrupt};

/// A token row. The hash is the SHA-512 of the token; the token itself is
/// never stored.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Row id.
    pub id: i64,
    /// Unique name, e.g. `grafana`.
    pub name: String,
    /// SHA-512 of the token, lower-case hex.
    pub hash: String,
    /// Scope strings, as validated by `token::Scopes::parse`.
    pub scopes: Vec<String>,
    /// When it was created, ns.
    pub created_at_ns: i64,
    /// When it stops working, ns; `None` for never.
    pub expires_at_ns: Option<i64>,
    /// When it was revoked, ns.
    pub revoked_at_ns: Option<i64>,
    /// When it was last used (recorded at most once a minute), ns.
    pub last_used_at_ns: Option<i64>,
}

/// A token about to be stored.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    /// Unique name.
    pub name: &'a str,
    /// SHA-512 of the token, hex.
    pub hash: &'a str,
    /// Validated scope strings.
    pub scopes: &'a [String],
    /// Expiry, ns.
    pub expires_at_ns: Option<i64>,
}

const TOKEN_COLUMNS: &str = "id, name, hash, scopes_json, created_at_ns, expires_at_ns, revoked_at_ns, last_used_at_ns";

fn token_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let scopes: String = row.get(3)?;
    Ok(TokenRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        hash: row.get(2)?,
        scopes: serde_json::from_str(&scopes).map_err(|e| corrupt(3, format!("token scopes: {e}")))?,
        created_at_ns: row.get(4)?,
        expires_at_ns: row.get(5)?,
        revoked_at_ns: row.get(6)?,
        last_used_at_ns: row.get(7)?,
    })
}

/// Whether `error` is the violation of the UNIQUE constraint on `column`
/// (`table.column`, as SQLite names it).
fn violates_unique(error: &rusqlite::Error, column: &str) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(failure, Some(message)) => {
            failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && message.strip_prefix("UNIQUE constraint failed: ") == Some(column)
        }
        _ => false,
    }
}

impl Catalog {
    /// Stores a new token; a name already taken is a `Conflict`. The
    /// UNIQUE constraint decides, not a look-up first: another connection
    /// (`strata token create` beside a running server) may store the same
    /// name at any moment.
    pub fn create_token(&self, token: &NewToken<'_>, now_ns: i64) -> Result<TokenRecord> {
        let connection = self.lock();
        let scopes = serde_json::to_string(token.scopes).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        connection
            .execute(
                "INSERT INTO tokens (name, hash, scopes_json, created_at_ns, expires_at_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token.name, token.hash, scopes, now_ns, token.expires_at_ns],
            )
            .map_err(|error| match error {
                error if violates_unique(&error, "tokens.name") => {
                    CatalogError::Conflict(format!("a token named {:?} exists already", token.name))
                }
                other => CatalogError::from(other),
            })?;
        let id = connection.last_insert_rowid();
        Ok(connection.query_row(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"), [id], token_from_row)?)
    }

    /// Every token, revoked and expired ones too, by name.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        Ok(Self::tokens_in(&self.lock())?)
    }

    fn tokens_in(connection: &Connection) -> rusqlite::Result<Vec<TokenRecord>> {
        let mut statement = connection.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name"))?;
        let rows = statement.query_map([], token_from_row)?;
        rows.collect()
    }

    /// A number that changes whenever another connection — another
    /// process, such as `strata token` beside a running server — commits
    /// to the catalog. Commits through this catalog do not move it
    /// (SQLite's `PRAGMA data_version`); reading it touches no table.
    pub fn foreign_changes(&self) -> Result<i64> {
        Ok(self.lock().pragma_query_value(None, "data_version", |row| row.get(0))?)
    }

    /// [`Catalog::tokens`] with the [`Catalog::foreign_changes`] they are
    /// current for, read under one lock.
    pub fn tokens_at_foreign_changes(&self) -> Result<(i64, Vec<TokenRecord>)> {
        let connection = self.lock();
        let version = connection.pragma_query_value(None, "data_version", |row| row.get(0))?;
        Ok((version, Self::tokens_in(&connection)?))
    }

    /// Whether any token row exists (revoked and expired ones count: once
    /// a catalog has had a token, it never serves without authentication).
    pub fn has_tokens(&self) -> Result<bool> {
        Ok(self.lock().query_row("SELECT EXISTS (SELECT 1 FROM tokens)", [], |row| row.get(0))?)
    }

    /// Revokes a token by name; returns it (with its first revocation time
    /// when it was revoked before), or `None` when no token has that name.
    pub fn revoke_token(&self, name: &str, now_ns: i64) -> Result<Option<TokenRecord>> {
        let connection = self.lock();
        connection.execute(
            "UPDATE tokens SET revoked_at_ns = ?2 WHERE name = ?1 AND revoked_at_ns IS NULL",
            params![name, now_ns],
        )?;
        Ok(connection
            .query_row(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE name = ?1"), [name], token_from_row)
            .optional()?)
    }

    /// Records that a token was used.
    pub fn touch_token(&self, id: i64, now_ns: i64) -> Result<()> {
        self.lock().execute("UPDATE tokens SET last_used_at_ns = ?2 WHERE id = ?1", params![id, now_ns])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::catalog;

    fn new_token<'a>(name: &'a str, hash: &'a str, scopes: &'a [String]) -> NewToken<'a> {
        NewToken { name, hash, scopes, expires_at_ns: None }
    }

    #[test]
    fn a_name_taken_between_the_check_and_the_insert_is_a_conflict() {
        let (catalog, dir) = catalog();
        // Another connection (`strata token create` against a running
        // server) stores the same name just before this insert: a trigger
        // plays its part (and is rolled back with the failed statement).
        catalog
            .lock()
            .execute_batch(
                "CREATE TEMP TRIGGER racing_writer BEFORE INSERT ON tokens WHEN NEW.name = 'ci' BEGIN \
                   INSERT INTO tokens (name, hash, scopes_json, created_at_ns) VALUES ('ci', 'other', '[]', 1); \
                 END;",
            )
            .unwrap();
        let scopes = ["admin".to_string()];
        let raced = catalog.create_token(&new_token("ci", "mine", &scopes), 2);
        assert!(matches!(raced, Err(CatalogError::Conflict(_))), "{raced:?}");
        catalog.lock().execute_batch("DROP TRIGGER racing_writer;").unwrap();
        catalog.create_token(&new_token("ci", "first", &scopes), 3).unwrap();
        assert!(matches!(catalog.create_token(&new_token("ci", "again", &scopes), 3), Err(CatalogError::Conflict(_))));
        assert_eq!(catalog.create_token(&new_token("cd", "third", &scopes), 4).unwrap().name, "cd");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
