//! The WebAssembly sandbox: the one module that imports wasmtime.
//!
//! **Invariant:** nothing outside `sandbox/` names a wasmtime type, and the
//! sandbox knows nothing of policies beyond their world and limits. The
//! policy runtime talks to it through [`Sandbox`], [`CompiledComponent`]
//! and the plain values of [`crate::facts`].
//!
//! - One [`Engine`] with epoch interruption (a ticker thread advances the
//!   epoch every millisecond while a call is in progress) and fuel metering, shared by every policy.
//! - Components are compiled once and cached on disk by the sha256 of their
//!   bytes (`cache`); each loaded version keeps an `InstancePre`, so an
//!   evaluation is "new Store + instantiate + call" (`component`).
//! - Every call gets a fresh `Store` with the policy's limits: a memory
//!   cap, an epoch deadline, optional fuel. Exceeding one is a typed
//!   [`SandboxError`] naming the limit; the host thread always returns
//!   (`limits`).
//! - WASI is linked with no capabilities (`wasi`). A component importing
//!   anything outside the allow-list below — filesystem, sockets, clocks,
//!   random bytes — is refused at load, before it is ever instantiated.
//! - Facts and answers cross the boundary as plain values, converted and
//!   index-checked in `convert`; the generated bindings live in `bindings`.

#[allow(missing_docs, dead_code, clippy::all)] // Generated code.
mod bindings;
mod cache;
mod component;
mod convert;
mod error;
mod limits;
mod wasi;

use std::path::PathBuf;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine};

use crate::digest::sha256_hex;
use cache::CompileCache;
use component::prepare_world;
pub use component::{CallContext, CompileSource, CompiledComponent, PolicyKind};
use error::Result;
pub use error::SandboxError;
pub use limits::PolicyLimits;
use limits::{EpochTicker, WASM_STACK_BYTES_MAX};
pub use wasi::GuestLogLevel;
use wasi::{GuestLogLevels, GuestState};

/// Interfaces a policy may import, by `namespace:package/interface` (the
/// version is ignored). Everything else is refused at load.
const ALLOWED_IMPORT_PREFIXES: &[&str] = &["wasi:io/", "wasi:cli/", "strata:policy/"];
/// Single interfaces allowed outside [`ALLOWED_IMPORT_PREFIXES`].
const ALLOWED_IMPORTS: &[&str] = &["wasi:random/insecure-seed"];

/// What `strata policy check` prints about a component.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentReport {
    /// sha256 of the component bytes, hex.
    pub sha256: String,
    /// Every import, full name.
    pub imports: Vec<String>,
    /// Every export, by name.
    pub exports: Vec<String>,
    /// The policy worlds the component implements.
    pub worlds: Vec<PolicyKind>,
}

/// The one engine and linker every policy runs in.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: Option<CompileCache>,
    log_levels: GuestLogLevels,
    ticker: EpochTicker,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache_dir = self.cache.as_ref().map(CompileCache::dir);
        f.debug_struct("Sandbox").field("cache_dir", &cache_dir).finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Creates the engine, the linker and the epoch ticker. Compiled
    /// components are cached in `cache_dir` when given (created if missing).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Sandbox> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(true);
        config.max_wasm_stack(WASM_STACK_BYTES_MAX);
        config.parallel_compilation(true);
        let engine = Engine::new(&config).map_err(|e| SandboxError::Internal(format!("engine: {e}")))?;
        let mut linker = Linker::<GuestState>::new(&engine);
        wasi::link_capability_free_wasi(&mut linker)
            .map_err(|e| SandboxError::Internal(format!("linking WASI: {e}")))?;
        wasi::link_host_interface(&mut linker)
            .map_err(|e| SandboxError::Internal(format!("linking strata:policy/host: {e}")))?;
        let cache = match cache_dir {
            Some(dir) => Some(
                CompileCache::create(dir.clone())
                    .map_err(|e| SandboxError::Internal(format!("cannot create {}: {e}", dir.display())))?,
            ),
            None => None,
        };
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| SandboxError::Internal(format!("cannot start the epoch thread: {e}")))?;
        Ok(Sandbox { engine, linker, cache, log_levels: GuestLogLevels::default(), ticker })
    }

    /// Sets the least severe guest `log` level shown for `policy` (see
    /// [`GuestLogLevel`]); every component of the policy, loaded or not,
    /// follows it from its next call.
    pub fn set_log_level(&self, policy: &str, level: GuestLogLevel) {
        self.log_levels.set(policy, level);
    }

    /// Compiles `bytes` (or loads the cached compilation), checks its
    /// imports against the allow-list and its exports against the world of
    /// `kind`, and prepares it for instantiation. Blocking: Cranelift can
    /// take seconds on a cold cache.
    pub fn load(&self, bytes: &[u8], kind: PolicyKind) -> Result<CompiledComponent> {
        self.load_with(bytes, kind, true)
    }

    /// Like [`Sandbox::load`] but never writes the cache: for uploaded
    /// candidates, which would otherwise fill the disk one upload at a time.
    pub fn load_uncached(&self, bytes: &[u8], kind: PolicyKind) -> Result<CompiledComponent> {
        self.load_with(bytes, kind, false)
    }

    fn load_with(&self, bytes: &[u8], kind: PolicyKind, write_cache: bool) -> Result<CompiledComponent> {
        let sha256 = sha256_hex(bytes);
        let (component, source) = self.compile(bytes, &sha256, write_cache)?;
        check_imports(&component, &self.engine)?;
        let instance_pre = self.instance_pre(&component)?;
        let pre = prepare_world(instance_pre, kind)?;
        Ok(CompiledComponent::new(kind, sha256, pre, source, self.log_levels.clone(), self.ticker.ticking()))
    }

    /// Compiles `bytes` and reports its imports, exports and the policy
    /// worlds it implements (for `strata policy check`).
    pub fn inspect(&self, bytes: &[u8]) -> Result<ComponentReport> {
        let sha256 = sha256_hex(bytes);
        let (component, _) = self.compile(bytes, &sha256, true)?;
        let component_type = component.component_type();
        let imports = component_type.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let exports = component_type.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let mut worlds = Vec::new();
        if check_imports(&component, &self.engine).is_ok()
            && let Ok(instance_pre) = self.instance_pre(&component)
        {
            for kind in PolicyKind::ALL {
                if prepare_world(instance_pre.clone(), kind).is_ok() {
                    worlds.push(kind);
                }
            }
        }
        Ok(ComponentReport { sha256, imports, exports, worlds })
    }

    /// Keeps the original component bytes next to the compiled form
    /// (`<cache_dir>/<sha256>.wasm`), so that a rollback or a restart can
    /// load a version whose file has since changed.
    pub fn keep_source(&self, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
        match &self.cache {
            Some(cache) => cache.keep_source(sha256, bytes),
            None => Ok(()),
        }
    }

    /// The component bytes kept by [`Sandbox::keep_source`], if they are
    /// still there and still hash to `sha256`.
    pub fn kept_source(&self, sha256: &str) -> Option<Vec<u8>> {
        self.cache.as_ref()?.kept_source(sha256)
    }

    fn instance_pre(&self, component: &Component) -> Result<InstancePre<GuestState>> {
        // Imports were checked against the allow-list first, so a failure
        // here is an allowed interface used with a signature we do not offer.
        self.linker
            .instantiate_pre(component)
            .map_err(|e| SandboxError::InvalidComponent(format!("its imports cannot be satisfied: {e:#}")))
    }

    /// The compiled form of `bytes`: from the cache when a valid entry
    /// exists, else compiled now and written to the cache.
    fn compile(&self, bytes: &[u8], sha256: &str, write_cache: bool) -> Result<(Component, CompileSource)> {
        if let Some(component) = self.cache.as_ref().and_then(|cache| cache.load(&self.engine, sha256)) {
            return Ok((component, CompileSource::Cache));
        }
        if !looks_like_component(bytes) {
            return Err(SandboxError::InvalidComponent(
                "the bytes do not start with the WebAssembly component header (a core module or garbage?)".into(),
            ));
        }
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| SandboxError::InvalidComponent(format!("{e:#}")))?;
        if let Some(cache) = self.cache.as_ref().filter(|_| write_cache) {
            cache.store(sha256, &component);
        }
        Ok((component, CompileSource::Compiled))
    }
}

/// The component-model preamble: `\0asm`, version 0x0d, layer 1.
fn looks_like_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

/// Refuses a component importing anything outside the allow-list, naming
/// every refused import (not only the first).
fn check_imports(component: &Component, engine: &Engine) -> Result<()> {
    let refused: Vec<String> = component
        .component_type()
        .imports(engine)
        .filter(|(name, _)| {
            let interface = name.split('@').next().unwrap_or(name);
            !(ALLOWED_IMPORT_PREFIXES.iter().any(|prefix| interface.starts_with(prefix))
                || ALLOWED_IMPORTS.contains(&interface))
        })
        .map(|(name, _)| name.to_string())
        .collect();
    if refused.is_empty() { Ok(()) } else { Err(SandboxError::ForbiddenImport { imports: refused }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtins;
    use crate::facts::{ColumnBatch, ColumnValues, DatasetFacts, PartitionFacts, RetentionAction, RetentionDecision};
    use crate::schema::ColumnKind;
    use crate::tier::Tier;

    const FIXTURE: &str = include_str!("../../../../tests/fixtures/retention.wat");
    const DAY_NS: i64 = 86_400 * 1_000_000_000;
    const NOW_NS: i64 = 20_000 * DAY_NS;

    pub(super) fn retention_fixture(behaviour: &str) -> Vec<u8> {
        wat::parse_str(FIXTURE.replace(";;BEHAVIOUR", behaviour)).expect("fixture parses")
    }

    pub(super) fn fixture_importing(imports: &str) -> Vec<u8> {
        wat::parse_str(FIXTURE.replace(";;IMPORTS", imports)).expect("fixture parses")
    }

    pub(super) fn sandbox() -> Sandbox {
        Sandbox::new(None).unwrap()
    }

    pub(super) fn limits() -> PolicyLimits {
        PolicyLimits { deadline_ms: 200, memory_bytes_max: 64 * 1024 * 1024, ..PolicyLimits::default() }
    }

    pub(super) fn dataset() -> DatasetFacts {
        DatasetFacts {
            name: "cpu".into(),
            period: "day".into(),
            time_column: "time".into(),
            columns: vec![("time".into(), ColumnKind::Time), ("host".into(), ColumnKind::Tag)],
        }
    }

    /// Daily partitions that ended `ended_days_ago` days before `NOW_NS`.
    pub(super) fn partitions(ended_days_ago: &[i64]) -> Vec<PartitionFacts> {
        ended_days_ago
            .iter()
            .map(|days| {
                let end = NOW_NS - days * DAY_NS;
                PartitionFacts {
                    id: format!("cpu/{days}"),
                    dataset: "cpu".into(),
                    period_label: format!("{days}"),
                    period_start_ns: end - DAY_NS,
                    period_end_ns: end,
                    key: String::new(),
                    tier: Tier::Hot,
                    read_only: false,
                    rows: 10,
                    bytes: 1_000,
                    min_time_ns: Some(end - DAY_NS),
                    max_time_ns: Some(end - 1),
                    created_at_ns: end - DAY_NS,
                    last_written_at_ns: end,
                    file_count: 1,
                    archived: false,
                }
            })
            .collect()
    }

    pub(super) fn evaluate(component: &CompiledComponent, limits: &PolicyLimits) -> Result<Vec<RetentionDecision>> {
        let call = CallContext { policy: "test", limits };
        component.evaluate_retention(call, NOW_NS, "{}", &dataset(), &partitions(&[1, 2, 3]))
    }

    #[test]
    fn builtin_retention_decides_with_reasons() {
        let sandbox = sandbox();
        let bytes = builtins::component("retention-by-age").unwrap();
        let component = sandbox.load(bytes, PolicyKind::Retention).unwrap();
        let limits = limits();
        let call = CallContext { policy: "keep-90d", limits: &limits };
        assert_eq!(component.validate_config(call, r#"{"max_age": "90d"}"#).unwrap(), Ok(()));
        let problems = component.validate_config(call, r#"{"max_age": "soon"}"#).unwrap().unwrap_err();
        assert!(problems[0].contains("max_age"), "{problems:?}");
        let decisions = component
            .evaluate_retention(call, NOW_NS, r#"{"max_age": "90d"}"#, &dataset(), &partitions(&[-1, 10, 100]))
            .unwrap();
        let actions: Vec<RetentionAction> = decisions.iter().map(|d| d.action).collect();
        assert_eq!(actions, [RetentionAction::Keep, RetentionAction::Keep, RetentionAction::Delete]);
        assert_eq!(decisions[2].partition_id, "cpu/100");
        assert_eq!(decisions[2].reason, "period ended 100d ago, more than max_age 90d");
    }

    #[test]
    fn builtin_partitioner_keys_a_batch() {
        let sandbox = sandbox();
        let component =
            sandbox.load(builtins::component("partition-by-hash").unwrap(), PolicyKind::Partitioner).unwrap();
        let limits = limits();
        let call = CallContext { policy: "hash", limits: &limits };
        let config = r#"{"fields": ["host"], "buckets": 4}"#;
        assert_eq!(component.partitioner_columns(call, config).unwrap(), ["host"]);
        let hosts = ColumnBatch {
            name: "host".into(),
            values: ColumnValues::Text(vec![Some("a".into()), Some("b".into()), Some("a".into()), None]),
        };
        let keys = component.partition(call, config, &[hosts], 4).unwrap();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[0], keys[2], "the same host gets the same key");
        assert!(keys.iter().all(|k| k.as_ref().is_ok_and(|k| k.starts_with('b'))), "{keys:?}");
    }

    #[test]
    fn the_partitioner_fixture_keys_rejects_and_misbehaves_on_demand() {
        const PARTITIONER: &str = include_str!("../../../../tests/fixtures/partitioner.wat");
        // One sandbox for all: its epoch ticker is what stops the loop.
        let sandbox = sandbox();
        let load = |behaviour: &str| {
            let bytes = wat::parse_str(PARTITIONER.replace(";;BEHAVIOUR", behaviour)).expect("fixture parses");
            sandbox.load(&bytes, PolicyKind::Partitioner).unwrap()
        };
        let limits = limits();
        let call = CallContext { policy: "fixture", limits: &limits };
        let tenants = ColumnBatch {
            name: "tenant".into(),
            values: ColumnValues::Text(vec![Some("a".into()), None, Some("c".into())]),
        };
        let plain = load("");
        assert_eq!(plain.partitioner_columns(call, "{}").unwrap(), ["tenant"]);
        assert_eq!(plain.partition(call, "{}", std::slice::from_ref(&tenants), 3).unwrap(), vec![Ok(String::new()); 3]);
        let keys = load("(call $bad_key)").partition(call, "{}", std::slice::from_ref(&tenants), 3).unwrap();
        assert_eq!(keys[1], Ok("Bad/Key".to_string()), "the host's contract check refuses it, not the sandbox");
        assert_eq!(load("(call $bad_key)").partition(call, "{}", &[], 1).unwrap(), [Ok(String::new())]);
        let keys = load("(call $reject_first)").partition(call, "{}", std::slice::from_ref(&tenants), 3).unwrap();
        assert_eq!(keys[0], Err("no tenant in this record".to_string()));
        assert_eq!(keys[2], Ok(String::new()));
        let trap = load("unreachable").partition(call, "{}", std::slice::from_ref(&tenants), 3).unwrap_err();
        assert!(matches!(trap, SandboxError::Trap(_)), "{trap}");
        let spin =
            load("(loop $forever (br $forever))").partition(call, "{}", std::slice::from_ref(&tenants), 3).unwrap_err();
        assert!(matches!(spin, SandboxError::DeadlineExceeded { .. }), "{spin}");
    }

    /// The panicking fixture: writes `text` to stderr, then traps where
    /// `placement` (`;;ON_VALIDATE`, `;;ON_EVALUATE`, `;;ON_PARTITIONS`) says.
    pub(super) fn panicking_fixture(text: &str, placement: &str) -> Vec<u8> {
        const PANICKING: &str = include_str!("../../../../tests/fixtures/panicking.wat");
        let wat = PANICKING
            .replace("PANIC_TEXT", &text.escape_default().to_string())
            .replace("PANIC_LEN", &text.len().to_string())
            .replace(placement, "(call $panic)");
        wat::parse_str(wat).expect("fixture parses")
    }

    #[test]
    fn a_trap_quotes_what_the_guest_wrote_to_stderr() {
        let sandbox = sandbox();
        let text = "thread '<unnamed>' panicked at src/lib.rs:12:5:\nboom: no tier for\tpartition\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        let component = sandbox.load(&panicking_fixture(text, ";;ON_PARTITIONS"), PolicyKind::Retention).unwrap();
        let limits = limits();
        let call = CallContext { policy: "test", limits: &limits };
        let empty = component.evaluate_retention(call, NOW_NS, "{}", &dataset(), &[]).unwrap();
        assert!(empty.is_empty(), "no partitions, no panic");
        let error = evaluate(&component, &limits).unwrap_err();
        let SandboxError::Trap(message) = &error else { panic!("{error:?}") };
        assert!(message.starts_with("panicked at src/lib.rs:12:5: boom: no tier forpartition ("), "{message}");
        assert!(message.contains("unreachable") && !message.contains("RUST_BACKTRACE"), "{message}");

        let component = sandbox.load(&panicking_fixture(text, ";;ON_VALIDATE"), PolicyKind::Retention).unwrap();
        let error = component.validate_config(call, "{}").unwrap_err();
        assert!(error.to_string().contains("boom"), "{error}");
    }

    #[test]
    fn every_builtin_loads_as_its_world() {
        let sandbox = sandbox();
        let expected = [
            ("archive-after", PolicyKind::Archival),
            ("partition-by-consistent-hash", PolicyKind::Partitioner),
            ("partition-by-field", PolicyKind::Partitioner),
            ("partition-by-hash", PolicyKind::Partitioner),
            ("partition-by-range", PolicyKind::Partitioner),
            ("retention-by-age", PolicyKind::Retention),
            ("tier-by-age", PolicyKind::Tiering),
        ];
        assert_eq!(builtins::names().collect::<Vec<_>>(), expected.map(|(name, _)| name));
        for (name, kind) in expected {
            let report = sandbox.inspect(builtins::component(name).unwrap()).unwrap();
            assert_eq!(report.worlds, [kind], "{name}: {report:?}");
        }
    }

    #[test]
    fn forbidden_imports_are_refused_at_load() {
        let sandbox = sandbox();
        for import in ["wasi:filesystem/types@0.2.6", "wasi:sockets/tcp@0.2.6", "wasi:clocks/wall-clock@0.2.6"] {
            let bytes = fixture_importing(&format!("(import \"{import}\" (instance))"));
            let error = sandbox.load(&bytes, PolicyKind::Retention).unwrap_err();
            assert_eq!(error, SandboxError::ForbiddenImport { imports: vec![import.to_string()] });
            assert!(sandbox.inspect(&bytes).unwrap().worlds.is_empty());
        }
        // Every refused import is named, not only the first.
        let bytes = fixture_importing(
            "(import \"wasi:filesystem/types@0.2.6\" (instance)) (import \"wasi:clocks/wall-clock@0.2.6\" (instance))",
        );
        let error = sandbox.load(&bytes, PolicyKind::Retention).unwrap_err();
        let refused = ["wasi:filesystem/types@0.2.6", "wasi:clocks/wall-clock@0.2.6"].map(String::from).to_vec();
        assert_eq!(error, SandboxError::ForbiddenImport { imports: refused });
        let message = error.to_string();
        assert!(message.contains("`wasi:filesystem/types@0.2.6`, `wasi:clocks/wall-clock@0.2.6`"), "{message}");
        assert!(message.contains("--stub-wasi"), "{message}");
        // Allowed interfaces pass the check.
        let bytes = fixture_importing("(import \"wasi:cli/environment@0.2.6\" (instance))");
        sandbox.load(&bytes, PolicyKind::Retention).unwrap();
    }

    #[test]
    fn wrong_worlds_and_garbage_are_refused() {
        let sandbox = sandbox();
        let error = sandbox.load(builtins::component("partition-by-hash").unwrap(), PolicyKind::Retention).unwrap_err();
        assert!(matches!(&error, SandboxError::WrongWorld { world: "retention", .. }), "{error:?}");
        assert!(error.to_string().contains("evaluate"), "names the missing export: {error}");

        let error = sandbox.load(&retention_fixture(""), PolicyKind::Tiering).unwrap_err();
        assert!(matches!(error, SandboxError::WrongWorld { world: "tiering", .. }), "{error:?}");

        for garbage in [&b"not wasm at all"[..], b"", &[0, b'a', b's', b'm', 1, 0, 0, 0], b"\0asm\x0d\0\x01\0\xff\xff"]
        {
            assert!(matches!(sandbox.load(garbage, PolicyKind::Retention), Err(SandboxError::InvalidComponent(_))));
        }
    }
}
