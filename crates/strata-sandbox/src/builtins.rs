//! The built-in policy components, built from `plugins/` by `crates/strata-sandbox/build.rs`
//! and embedded in the binary: `plugin = "builtin:retention-by-age"`.

include!(concat!(env!("OUT_DIR"), "/builtin_policies.rs"));

/// The component bytes of the built-in `name`.
pub fn component(name: &str) -> Option<&'static [u8]> {
    BUILTIN_COMPONENTS.iter().find(|(builtin, _)| *builtin == name).map(|(_, bytes)| *bytes)
}

/// The names of every built-in.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN_COMPONENTS.iter().map(|(name, _)| *name)
}
