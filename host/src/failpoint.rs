//! Fail points: named places where a test can make the process die, to prove
//! that a crash at that exact step loses nothing.
//!
//! Enabled only through the `STRATA_FAILPOINTS` environment variable (a
//! comma-separated list of names), read once at start. In production the list
//! is empty and [`hit`] and [`active`] are one relaxed load.
//!
//! [`hit`] kills the process (a crash at that step); [`active`] lets the code
//! at a step fail as a faulty storage target would, without dying.

use std::sync::OnceLock;

static ENABLED: OnceLock<Vec<String>> = OnceLock::new();

fn enabled() -> &'static [String] {
    ENABLED.get_or_init(|| {
        std::env::var("STRATA_FAILPOINTS")
            .map(|raw| raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    })
}

/// Aborts the process (as `kill -9` would) if fail point `name` is enabled.
pub fn hit(name: &str) {
    let enabled = enabled();
    if !enabled.is_empty() && enabled.iter().any(|n| n == name) {
        eprintln!("strata: fail point {name} reached; aborting");
        std::process::abort();
    }
}

/// Whether fail point `name` is enabled: the caller then fails its step the
/// way a faulty storage target would (an error, not a crash).
pub fn active(name: &str) -> bool {
    let enabled = enabled();
    !enabled.is_empty() && enabled.iter().any(|n| n == name)
}
