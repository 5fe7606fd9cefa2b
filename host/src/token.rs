//! Access tokens, as plain data: generation, hashing, names, scopes and
//! expiry. The CLI (`strata token`) and the HTTP layer both build on this.
//!
//! A token is `strata_` followed by 64 hex digits: 32 bytes from the
//! operating-system-seeded CSPRNG. Only its SHA-512 is stored; a presented
//! token is hashed and the hash looked up, so the plaintext is never kept
//! or compared.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha512};

use crate::catalog::{Catalog, CatalogError, NewToken, TokenRecord};

/// Every token starts with this, so a leaked one is recognisable (secret
/// scanners) and a wrong credential (a password, a JWT) is told apart early.
pub const TOKEN_PREFIX: &str = "strata_";

/// Random bytes in a token: 256 bits, beyond guessing.
const TOKEN_RANDOM_BYTES: usize = 32;

/// The longest token name, in bytes.
pub const TOKEN_NAME_BYTES_MAX: usize = 64;

/// The most scopes one token may carry.
pub const TOKEN_SCOPES_MAX: usize = 64;

/// The longest scope, in bytes (`write:` and a dataset name fit easily).
const SCOPE_BYTES_MAX: usize = 80;

/// A credential longer than this cannot be a token; it is refused without
/// hashing (a client cannot make the server hash megabytes per request).
pub const TOKEN_BYTES_MAX: usize = 128;

/// A fresh token, to be shown once and then forgotten.
pub fn generate() -> String {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The stored form of a token: SHA-512, lower-case hex. A plain hash (no
/// salt, no slow KDF) is enough because tokens carry 256 random bits, and
/// it lets a request find its token by one lookup.
pub fn hash(token: &str) -> String {
    hex::encode(Sha512::digest(token.as_bytes()))
}

/// Checks a token name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most
/// [`TOKEN_NAME_BYTES_MAX`] bytes. Names appear in URLs
/// (`DELETE /v1/tokens/{name}`) and in the audit log, so nothing else.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let valid = name.len() <= TOKEN_NAME_BYTES_MAX
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(valid_char);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "token name {name:?} must be 1 to {TOKEN_NAME_BYTES_MAX} characters of A-Z a-z 0-9 _ . -, starting with a letter or digit"
        ))
    }
}

/// Which datasets a `read:` or `write:` scope covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetPattern {
    /// `*`: every dataset.
    All,
    /// One dataset by name.
    Exact(String),
    /// `prefix*`: every dataset whose name starts with the prefix.
    Prefix(String),
}

impl DatasetPattern {
    /// Parses `*`, `name` or `prefix*`; the name or prefix must be (the
    /// start of) a valid dataset name, `[a-z0-9][a-z0-9_-]{0,62}`.
    fn parse(raw: &str) -> Result<DatasetPattern, String> {
        if raw == "*" {
            return Ok(DatasetPattern::All);
        }
        let (stem, prefix) = match raw.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (raw, false),
        };
        let valid = !stem.is_empty()
            && stem.len() <= 63
            && stem.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && stem.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid {
            return Err(format!(
                "{raw:?} is not a dataset name, `prefix*` or `*` (names are [a-z0-9][a-z0-9_-]{{0,62}}; `*` only at the end)"
            ));
        }
        Ok(if prefix { DatasetPattern::Prefix(stem.to_string()) } else { DatasetPattern::Exact(stem.to_string()) })
    }

    /// Whether the pattern covers `dataset` (compared as the request spells it).
    pub fn matches(&self, dataset: &str) -> bool {
        match self {
            DatasetPattern::All => true,
            DatasetPattern::Exact(name) => name == dataset,
            DatasetPattern::Prefix(prefix) => dataset.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for DatasetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetPattern::All => f.write_str("*"),
            DatasetPattern::Exact(name) => f.write_str(name),
            DatasetPattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// One permission of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Operations: policies, lifecycle runs, seal/unseal, compaction, flush,
    /// restore, tokens, storage targets, audit. Also reads and writes every
    /// dataset (like an InfluxDB operator token).
    Admin,
    /// Query and inspect the matching datasets.
    Read(DatasetPattern),
    /// Write rows into the matching datasets.
    Write(DatasetPattern),
}

impl Scope {
    /// Parses `admin`, `read:<pattern>` or `write:<pattern>`, strictly:
    /// anything else (other verbs, spaces, upper case) is refused.
    pub fn parse(raw: &str) -> Result<Scope, String> {
        if raw.len() > SCOPE_BYTES_MAX {
            return Err(format!("a scope is at most {SCOPE_BYTES_MAX} bytes"));
        }
        if raw == "admin" {
            return Ok(Scope::Admin);
        }
        let refuse = |why: String| format!("invalid scope {raw:?}: {why}");
        match raw.split_once(':') {
            Some(("read", pattern)) => DatasetPattern::parse(pattern).map(Scope::Read).map_err(refuse),
            Some(("write", pattern)) => DatasetPattern::parse(pattern).map(Scope::Write).map_err(refuse),
            _ => Err(refuse("scopes are admin, read:<dataset|prefix*|*> and write:<dataset|prefix*|*>".into())),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Read(pattern) => write!(f, "read:{pattern}"),
            Scope::Write(pattern) => write!(f, "write:{pattern}"),
        }
    }
}

/// The scopes of one token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Parses a token's scope list: at least one, at most
    /// [`TOKEN_SCOPES_MAX`], each valid; duplicates are dropped.
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Scopes, String> {
        if raw.is_empty() {
            return Err("a token needs at least one scope (admin, read:<dataset>, write:<dataset>)".into());
        }
        if raw.len() > TOKEN_SCOPES_MAX {
            return Err(format!("a token has at most {TOKEN_SCOPES_MAX} scopes"));
        }
        let mut scopes: Vec<Scope> = Vec::with_capacity(raw.len());
        for scope in raw {
            let scope = Scope::parse(scope.as_ref())?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(Scopes(scopes))
    }

    /// Whether the token has `admin`.
    pub fn is_admin(&self) -> bool {
        self.0.contains(&Scope::Admin)
    }

    /// Whether the token may read `dataset` (`admin` may read everything).
    pub fn may_read(&self, dataset: &str) -> bool {
        self.0.iter().any(|s| match s {
            Scope::Admin => true,
            Scope::Read(pattern) => pattern.matches(dataset),
            Scope::Write(_) => false,
        })
    }

    /// Whether the token may write `dataset` (`admin` may write everything).
    pub fn may_write(&self, dataset: &str) -> bool {
        self.0.iter().any(|s| match s {
            Scope::Admin => true,
            Scope::Write(pattern) => pattern.matches(dataset),
            Scope::Read(_) => false,
        })
    }

    /// The scopes as their strings, in the order given.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Scope::to_string).collect()
    }
}

/// Parses a lifetime such as `30d`, `12h`, `90m`, `3600s` or `2w` into
/// nanoseconds (positive, at most ~292 years): a duration in whole seconds
/// or coarser units.
pub fn parse_lifetime(raw: &str) -> Result<i64, String> {
    crate::time::parse_duration_ns(raw, crate::time::SECOND_NS)
        .map_err(|_| format!("lifetime {raw:?} must be a positive number and a unit s, m, h, d or w, like 30d or 12h"))
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A name, scope or lifetime is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken (by an active, expired or revoked token).
    #[error("a token named {0:?} exists already; revoked names are not reused")]
    Exists(String),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(CatalogError),
}

impl crate::error::Coded for TokenError {
    fn code(&self) -> crate::error::ErrorCode {
        match self {
            TokenError::Invalid(_) => crate::error::ErrorCode::BadRequest,
            TokenError::Exists(_) => crate::error::ErrorCode::TokenExists,
            TokenError::Catalog(error) => error.code(),
        }
    }

    fn message(&self) -> String {
        match self {
            TokenError::Catalog(error) => error.message(),
            _ => self.to_string(),
        }
    }
}

/// Checks the name and scopes, makes a token and stores its hash. Returns
/// the token — the only time it exists outside the client — and its row.
pub fn issue(
    catalog: &Catalog,
    name: &str,
    scopes: &[String],
    expires_at_ns: Option<i64>,
    now_ns: i64,
) -> Result<(String, TokenRecord), TokenError> {
    check_name(name).map_err(TokenError::Invalid)?;
    let scopes = Scopes::parse(scopes).map_err(TokenError::Invalid)?.to_strings();
    let token = generate();
    let record = catalog
        .create_token(&NewToken { name, hash: &hash(&token), scopes: &scopes, expires_at_ns }, now_ns)
        .map_err(|error| match error {
            CatalogError::Conflict(_) => TokenError::Exists(name.to_string()),
            other => TokenError::Catalog(other),
        })?;
    Ok((token, record))
}

/// `active`, `expired` or `revoked`, as of `now_ns`.
pub fn status(record: &TokenRecord, now_ns: i64) -> &'static str {
    if record.revoked_at_ns.is_some() {
        "revoked"
    } else if record.expires_at_ns.is_some_and(|at| at <= now_ns) {
        "expired"
    } else {
        "active"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_stored_as_sha512() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 2 * TOKEN_RANDOM_BYTES);
        assert!(a[TOKEN_PREFIX.len()..].chars().all(|c| c.is_ascii_hexdigit()));
        assert!(a.len() <= TOKEN_BYTES_MAX);
        let stored = hash(&a);
        assert_eq!(stored.len(), 128);
        assert_eq!(stored, hash(&a));
        assert_ne!(stored, hash(&b));
        assert!(!stored.contains(&a[TOKEN_PREFIX.len()..]));
        // A known vector: SHA-512 of "abc".
        assert!(hash("abc").starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn scopes_parse_strictly() {
        for (raw, parsed) in [
            ("admin", Some(Scope::Admin)),
            ("read:*", Some(Scope::Read(DatasetPattern::All))),
            ("read:orders", Some(Scope::Read(DatasetPattern::Exact("orders".into())))),
            ("write:logs-*", Some(Scope::Write(DatasetPattern::Prefix("logs-".into())))),
            ("write:a", Some(Scope::Write(DatasetPattern::Exact("a".into())))),
            ("Admin", None),
            ("admin:*", None),
            ("read", None),
            ("read:", None),
            ("read:**", None),
            ("read:*orders", None),
            ("read:ord*ers", None),
            ("read:Orders", None),
            ("read: orders", None),
            ("read:orders ", None),
            ("read:_orders", None),
            ("read:orders/x", None),
            ("delete:orders", None),
            ("write:orders,read:x", None),
            ("", None),
        ] {
            assert_eq!(Scope::parse(raw).ok(), parsed, "{raw}");
            if let Some(scope) = parsed {
                assert_eq!(scope.to_string(), raw);
            }
        }
        assert!(Scope::parse(&format!("read:{}", "a".repeat(64))).is_err());
        assert!(Scopes::parse::<&str>(&[]).is_err());
        assert!(Scopes::parse(&vec!["admin"; TOKEN_SCOPES_MAX + 1]).is_err());
        assert_eq!(Scopes::parse(&["admin", "admin"]).unwrap().to_strings(), ["admin"]);
    }

    #[test]
    fn scopes_match_datasets_and_admin_covers_everything() {
        let scopes = Scopes::parse(&["read:orders", "read:logs-*", "write:metrics"]).unwrap();
        assert!(scopes.may_read("orders"));
        assert!(!scopes.may_read("orders2"));
        assert!(scopes.may_read("logs-eu"));
        assert!(scopes.may_read("logs-"));
        assert!(!scopes.may_read("logs"));
        assert!(!scopes.may_read("metrics"));
        assert!(scopes.may_write("metrics"));
        assert!(!scopes.may_write("orders"));
        assert!(!scopes.is_admin());
        let all = Scopes::parse(&["read:*"]).unwrap();
        assert!(all.may_read("anything") && !all.may_write("anything"));
        let admin = Scopes::parse(&["admin"]).unwrap();
        assert!(admin.is_admin() && admin.may_read("x") && admin.may_write("y"));
    }

    #[test]
    fn issued_tokens_are_stored_only_as_their_hash() {
        let dir = std::env::temp_dir().join(format!("strata-token-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = Catalog::path_in(&dir);
        let catalog = Catalog::open(&path).unwrap();
        assert!(!catalog.has_tokens().unwrap());
        let (token, record) = issue(&catalog, "ci", &["write:logs-*".into(), "read:*".into()], None, 5).unwrap();
        assert_eq!(record.hash, hash(&token));
        assert_eq!(record.scopes, ["write:logs-*", "read:*"]);
        assert_eq!(status(&record, 6), "active");
        assert!(catalog.has_tokens().unwrap());
        assert!(matches!(issue(&catalog, "ci", &["admin".into()], None, 6), Err(TokenError::Exists(_))));
        assert!(matches!(issue(&catalog, "x", &["root".into()], None, 6), Err(TokenError::Invalid(_))));
        assert!(matches!(issue(&catalog, "a b", &["admin".into()], None, 6), Err(TokenError::Invalid(_))));
        let (_, expiring) = issue(&catalog, "short", &["admin".into()], Some(10), 6).unwrap();
        assert_eq!(status(&expiring, 9), "active");
        assert_eq!(status(&expiring, 10), "expired");
        let revoked = catalog.revoke_token("ci", 7).unwrap().unwrap();
        assert_eq!((revoked.revoked_at_ns, status(&revoked, 8)), (Some(7), "revoked"));
        // Revoking again keeps the first time; an unknown name is None.
        assert_eq!(catalog.revoke_token("ci", 9).unwrap().unwrap().revoked_at_ns, Some(7));
        assert!(catalog.revoke_token("nope", 9).unwrap().is_none());
        catalog.touch_token(expiring.id, 11).unwrap();
        drop(catalog);
        // Nothing in the catalog file holds the token itself.
        let bytes: Vec<u8> =
            std::fs::read_dir(&dir).unwrap().flat_map(|entry| std::fs::read(entry.unwrap().path()).unwrap()).collect();
        let secret = &token.as_bytes()[TOKEN_PREFIX.len()..];
        assert!(!bytes.windows(secret.len()).any(|w| w == secret));
        let reopened = Catalog::open(&path).unwrap();
        let names: Vec<_> = reopened.tokens().unwrap().into_iter().map(|t| (t.name, t.last_used_at_ns)).collect();
        assert_eq!(names, [("ci".to_string(), None), ("short".to_string(), Some(11))]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_and_lifetimes() {
        for good in ["a", "ci-bot", "Grafana.reader_2", &"n".repeat(TOKEN_NAME_BYTES_MAX)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "a%2f", "ä", &"n".repeat(TOKEN_NAME_BYTES_MAX + 1)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_lifetime("30d"), Ok(30 * 86_400_000_000_000));
        assert_eq!(parse_lifetime("12h"), Ok(12 * 3_600_000_000_000));
        assert_eq!(parse_lifetime("1s"), Ok(1_000_000_000));
        assert_eq!(parse_lifetime("2w"), Ok(2 * 604_800_000_000_000));
        for bad in ["", "d", "0d", "-1d", "1", "1y", "1.5h", "99999999999w", " 1d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }
}
