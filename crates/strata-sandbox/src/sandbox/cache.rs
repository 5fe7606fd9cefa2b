//! The on-disk compile cache: the sandbox's only file I/O.
//!
//! A component is compiled once and kept by the sha256 of its bytes:
//! `<dir>/<sha256>.cwasm` holds the output of `Component::serialize` and
//! `<dir>/<sha256>.cwasm.sha256` a checksum of it, written last (an entry
//! without one is ignored). `<dir>/<sha256>.wasm` keeps the component bytes
//! themselves, so that a rollback or a restart can load a version whose
//! file has since changed. Every file is written to a temporary name,
//! fsync'd and renamed into place; any failure to read an entry means "not
//! cached", never an error.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::digest::sha256_hex;

/// The cache directory of one sandbox.
#[derive(Debug)]
pub(super) struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Uses `dir`, creating it if missing.
    pub(super) fn create(dir: PathBuf) -> std::io::Result<CompileCache> {
        std::fs::create_dir_all(&dir)?;
        Ok(CompileCache { dir })
    }

    /// The directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads `<dir>/<sha256>.cwasm` if it exists, its checksum file
    /// matches and this engine accepts it. Any failure means "not cached".
    pub(super) fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.dir.join(format!("{sha256}.cwasm"));
        let serialized = std::fs::read(&path).ok()?;
        let expected = std::fs::read_to_string(self.dir.join(format!("{sha256}.cwasm.sha256"))).ok()?;
        if expected.trim() != sha256_hex(&serialized) {
            tracing::warn!(path = %path.display(), "compiled-policy cache entry does not match its checksum; recompiling");
            return None;
        }
        match deserialize_verified(engine, &serialized) {
            Ok(component) => Some(component),
            Err(error) => {
                // Typically a cache written by another wasmtime version.
                tracing::info!(%error, path = %path.display(), "compiled-policy cache entry not usable; recompiling");
                None
            }
        }
    }

    /// Writes the compiled `component` of the bytes with `sha256`. A
    /// failure is logged: the component works, only the next load compiles
    /// again.
    pub(super) fn store(&self, sha256: &str, component: &Component) {
        match component.serialize() {
            Ok(serialized) => {
                if let Err(error) = self.write_entry(sha256, &serialized) {
                    tracing::warn!(%error, sha256, "cannot write the compiled-policy cache; continuing without it");
                }
            }
            Err(error) => tracing::warn!(%error, sha256, "cannot serialize a compiled policy"),
        }
    }

    fn write_entry(&self, sha256: &str, serialized: &[u8]) -> std::io::Result<()> {
        // The checksum goes last: an entry without one is ignored.
        self.write_atomically(format!("{sha256}.cwasm"), serialized)?;
        self.write_atomically(format!("{sha256}.cwasm.sha256"), sha256_hex(serialized).as_bytes())
    }

    /// Keeps the component bytes as `<dir>/<sha256>.wasm` (once).
    pub(super) fn keep_source(&self, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
        if self.dir.join(format!("{sha256}.wasm")).exists() {
            return Ok(());
        }
        self.write_atomically(format!("{sha256}.wasm"), bytes)
    }

    /// The bytes kept by [`CompileCache::keep_source`], if they are still
    /// there and still hash to `sha256`.
    pub(super) fn kept_source(&self, sha256: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.dir.join(format!("{sha256}.wasm"))).ok()?;
        (sha256_hex(&bytes) == sha256).then_some(bytes)
    }

    fn write_atomically(&self, name: String, contents: &[u8]) -> std::io::Result<()> {
        let temporary = self.dir.join(format!("{name}.tmp-{}", std::process::id()));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, self.dir.join(name))
    }
}

/// Deserializes a compiled component read from our cache.
#[allow(unsafe_code)]
fn deserialize_verified(engine: &Engine, serialized: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be the output of
    // `Component::serialize` (it is native code). The bytes come from
    // `<dir>/<sha256>.cwasm`, which only `CompileCache::write_entry`
    // creates: it writes the output of `serialize` for a component that
    // Cranelift compiled from bytes with that sha256, to a temporary file
    // that is fsync'd and renamed into place, next to a checksum of the
    // serialized bytes. The caller has just verified that checksum, so the
    // bytes are exactly what we wrote; wasmtime itself rejects output of
    // another version or configuration.
    unsafe { Component::deserialize(engine, serialized) }
}

#[cfg(test)]
mod tests {
    use crate::sandbox::tests::{evaluate, limits, retention_fixture};
    use crate::sandbox::{CompileSource, PolicyKind, Sandbox};

    #[test]
    fn compiled_components_are_cached_by_sha256() {
        let dir = std::env::temp_dir().join(format!("strata-sandbox-cache-{}", rand::random::<u64>()));
        let sandbox = Sandbox::new(Some(dir.clone())).unwrap();
        let bytes = retention_fixture("");
        let first = sandbox.load(&bytes, PolicyKind::Retention).unwrap();
        assert_eq!(first.source(), CompileSource::Compiled);
        let second = sandbox.load(&bytes, PolicyKind::Retention).unwrap();
        assert_eq!(second.source(), CompileSource::Cache);
        assert_eq!(first.sha256(), second.sha256());
        // A damaged entry is detected by its checksum and recompiled.
        let entry = dir.join(format!("{}.cwasm", first.sha256()));
        let mut damaged = std::fs::read(&entry).unwrap();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        std::fs::write(&entry, damaged).unwrap();
        let third = sandbox.load(&bytes, PolicyKind::Retention).unwrap();
        assert_eq!(third.source(), CompileSource::Compiled);
        // Uploaded candidates are compiled but never cached.
        let candidate = retention_fixture("unreachable");
        let loaded = sandbox.load_uncached(&candidate, PolicyKind::Retention).unwrap();
        assert!(!dir.join(format!("{}.cwasm", loaded.sha256())).exists());
        assert_eq!(evaluate(&third, &limits()).unwrap(), []);
        // Kept sources round-trip and are checked.
        sandbox.keep_source(first.sha256(), &bytes).unwrap();
        assert_eq!(sandbox.kept_source(first.sha256()), Some(bytes));
        assert_eq!(sandbox.kept_source(&"0".repeat(64)), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
