//! The WebAssembly sandbox: the one module that imports wasmtime.
//!
//! **Invariant:** nothing outside this file names a wasmtime type. The rest
//! of the policy runtime talks to it through [`Sandbox`],
//! [`CompiledComponent`] and the plain values of [`super::facts`].
//!
//! - One [`Engine`] with epoch interruption (a ticker thread advances the
//!   epoch every millisecond) and fuel metering, shared by every policy.
//! - Components are compiled once and cached on disk by the sha256 of their
//!   bytes (`<cache_dir>/<sha256>.cwasm`); each loaded version keeps an
//!   `InstancePre`, so an evaluation is "new Store + instantiate + call".
//! - Every call gets a fresh [`Store`] with the policy's limits: a memory
//!   cap, an epoch deadline, optional fuel. Exceeding one is a typed
//!   [`SandboxError`] naming the limit; the host thread always returns.
//! - WASI is linked with no capabilities: only `wasi:io`, `wasi:cli` (empty
//!   environment and arguments, empty stdin, stdout and stderr captured into
//!   the log, capped) and `wasi:random/insecure-seed` (a constant, so Rust's
//!   `HashMap` works and stays deterministic). A component importing anything
//!   else — filesystem, sockets, clocks, random bytes — is refused at load,
//!   before it is ever instantiated.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::definition::{PolicyKind, PolicyLimits};
use super::facts::{
    ArchiveDecision, ColumnBatch, ColumnValues, DatasetFacts, PartitionFacts, RetentionAction, RetentionDecision,
    TierDecision,
};
use super::files::truncate_at_char_boundary;
use crate::digest::sha256_hex;
use crate::schema::ColumnKind;
use crate::tier::Tier;

#[allow(missing_docs, dead_code, clippy::all)] // Generated code.
mod bindings {
    //! `ownership: Borrowing` lets the facts handed to a guest be lowered
    //! straight from the host's values, without a deep copy per call. The
    //! shared `types` and `host` interfaces are generated once, from a
    //! host-only world that uses every type (bindgen cannot generate a
    //! borrowed type that its world does not use), and the four policy
    //! worlds refer to them with `with`.
    pub mod shared {
        wasmtime::component::bindgen!({
            path: "wit",
            inline: "
                package strata:host-bindings;
                world every-type {
                    import strata:policy/host@0.1.0;
                    use strata:policy/types@0.1.0.{dataset-info, partitions, column};
                    use strata:policy/types@0.1.0.{retention-answer, tiering-answer, archival-answer, batch-keys};
                    export every-type: func(dataset: dataset-info, partitions: partitions, columns: list<column>)
                        -> tuple<retention-answer, tiering-answer, archival-answer, batch-keys>;
                }
            ",
            world: "every-type",
            ownership: Borrowing { duplicate_if_necessary: false },
        });
    }
    pub mod retention {
        wasmtime::component::bindgen!({
            path: "wit",
            world: "retention",
            ownership: Borrowing { duplicate_if_necessary: false },
            with: {
                "strata:policy/types": super::shared::strata::policy::types,
                "strata:policy/host": super::shared::strata::policy::host,
            },
        });
    }
    pub mod tiering {
        wasmtime::component::bindgen!({
            path: "wit",
            world: "tiering",
            ownership: Borrowing { duplicate_if_necessary: false },
            with: {
                "strata:policy/types": super::shared::strata::policy::types,
                "strata:policy/host": super::shared::strata::policy::host,
            },
        });
    }
    pub mod archival {
        wasmtime::component::bindgen!({
            path: "wit",
            world: "archival",
            ownership: Borrowing { duplicate_if_necessary: false },
            with: {
                "strata:policy/types": super::shared::strata::policy::types,
                "strata:policy/host": super::shared::strata::policy::host,
            },
        });
    }
    pub mod partitioner {
        wasmtime::component::bindgen!({
            path: "wit",
            world: "partitioner",
            ownership: Borrowing { duplicate_if_necessary: false },
            with: {
                "strata:policy/types": super::shared::strata::policy::types,
                "strata:policy/host": super::shared::strata::policy::host,
            },
        });
    }
}

use bindings::shared::strata::policy::host as wit_host;
use bindings::shared::strata::policy::types as wit;

/// How often the ticker thread advances the engine's epoch. Deadlines are
/// counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Bytes of guest stdout + stderr kept per call; the rest is dropped (and
/// the drop is logged).
const CAPTURED_OUTPUT_BYTES_MAX: usize = 16 * 1024;
/// `log` calls honoured per call; later ones are counted and dropped.
const LOG_MESSAGES_PER_CALL_MAX: u32 = 100;
/// Bytes of one `log` message; longer ones are cut.
const LOG_MESSAGE_BYTES_MAX: usize = 4 * 1024;
/// Table elements a guest may grow its tables to.
const TABLE_ELEMENTS_MAX: usize = 100_000;
/// Instances, tables and memories per Store: a component built by
/// wit-component has a handful of each.
const INSTANCES_MAX: usize = 100;
/// See [`INSTANCES_MAX`].
const TABLES_MAX: usize = 100;
/// See [`INSTANCES_MAX`].
const MEMORIES_MAX: usize = 10;
/// Native stack a guest may use before it traps with a stack overflow.
const WASM_STACK_BYTES_MAX: usize = 1024 * 1024;

/// Interfaces a policy may import, by `namespace:package/interface` (the
/// version is ignored). Everything else is refused at load.
const ALLOWED_IMPORT_PREFIXES: &[&str] = &["wasi:io/", "wasi:cli/", "strata:policy/"];
/// Single interfaces allowed outside [`ALLOWED_IMPORT_PREFIXES`].
const ALLOWED_IMPORTS: &[&str] = &["wasi:random/insecure-seed"];

/// A sandbox failure. Messages name the limit (and its TOML key) that was
/// exceeded, or what is wrong with the component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid WebAssembly component: {0}")]
    InvalidComponent(String),
    /// The component imports an interface policies may not use.
    #[error(
        "the component imports `{import}`; policies may import only wasi:io, wasi:cli, wasi:random/insecure-seed and strata:policy interfaces (no filesystem, sockets, clocks or random bytes)"
    )]
    ForbiddenImport {
        /// The import's full name.
        import: String,
    },
    /// The component does not implement the world its policy kind needs.
    #[error("the component does not implement the `{world}` world of strata:policy@0.1.0: {reason}")]
    WrongWorld {
        /// The expected world.
        world: &'static str,
        /// What did not match.
        reason: String,
    },
    /// The call ran past its deadline and was interrupted.
    #[error("exceeded its deadline of {deadline_ms} ms (limits.deadline_ms)")]
    DeadlineExceeded {
        /// The deadline.
        deadline_ms: u64,
    },
    /// The guest tried to grow its memory past the cap.
    #[error("tried to grow its memory to {requested_bytes} bytes, over limits.memory_bytes_max = {memory_bytes_max}")]
    MemoryLimitExceeded {
        /// The cap.
        memory_bytes_max: u64,
        /// What the guest asked for.
        requested_bytes: u64,
    },
    /// The guest ran out of fuel.
    #[error("ran out of fuel (limits.fuel = {fuel})")]
    FuelExhausted {
        /// The fuel it was given.
        fuel: u64,
    },
    /// The guest overflowed its stack.
    #[error("overflowed its stack ({stack_bytes_max} bytes)")]
    StackOverflow {
        /// The stack size.
        stack_bytes_max: usize,
    },
    /// The guest trapped (panic, `unreachable`, out-of-bounds access, exit).
    #[error("trapped: {0}")]
    Trap(String),
    /// The answer was larger than a limit allows.
    #[error("returned {actual} {what}, over limits.{limit} = {maximum}")]
    OutputTooLarge {
        /// What was counted: "decisions", "bytes of output", "results".
        what: &'static str,
        /// The TOML key of the limit.
        limit: &'static str,
        /// The limit.
        maximum: u64,
        /// What the guest returned.
        actual: u64,
    },
    /// The answer breaks the contract in a way that cannot be represented
    /// as decisions: it refers to a partition, reason, key or record that
    /// does not exist.
    #[error("broke the contract: {0}")]
    BrokenContract(String),
    /// The engine itself failed (never the guest's fault).
    #[error("sandbox: {0}")]
    Internal(String),
}

impl SandboxError {
    /// True for failures caused by a per-policy limit (deadline, memory,
    /// fuel, stack, output size).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            SandboxError::DeadlineExceeded { .. }
                | SandboxError::MemoryLimitExceeded { .. }
                | SandboxError::FuelExhausted { .. }
                | SandboxError::StackOverflow { .. }
                | SandboxError::OutputTooLarge { .. }
        )
    }

    /// True when the component itself was refused (it never ran).
    pub fn is_invalid_component(&self) -> bool {
        matches!(
            self,
            SandboxError::InvalidComponent(_) | SandboxError::ForbiddenImport { .. } | SandboxError::WrongWorld { .. }
        )
    }
}

type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new().name("strata-policy-epoch".into()).spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompileSource {
    /// Compiled by Cranelift now (and written to the cache).
    Compiled,
    /// Loaded from the on-disk cache.
    Cache,
}

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
    cache_dir: Option<PathBuf>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("cache_dir", &self.cache_dir).finish_non_exhaustive()
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
        link_capability_free_wasi(&mut linker).map_err(|e| SandboxError::Internal(format!("linking WASI: {e}")))?;
        // Every world imports `host`; the built-ins do not call it, so their
        // components do not import it, and an unused definition is fine.
        wit_host::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)
            .map_err(|e| SandboxError::Internal(format!("linking strata:policy/host: {e}")))?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| SandboxError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| SandboxError::Internal(format!("cannot start the epoch thread: {e}")))?;
        Ok(Sandbox { engine, linker, cache_dir, _ticker: ticker })
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
        Ok(CompiledComponent { kind, sha256, pre, source })
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
        let Some(dir) = &self.cache_dir else { return Ok(()) };
        if dir.join(format!("{sha256}.wasm")).exists() {
            return Ok(());
        }
        let temporary = dir.join(format!("{sha256}.wasm.tmp-{}", std::process::id()));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, dir.join(format!("{sha256}.wasm")))
    }

    /// The component bytes kept by [`Sandbox::keep_source`], if they are
    /// still there and still hash to `sha256`.
    pub fn kept_source(&self, sha256: &str) -> Option<Vec<u8>> {
        let dir = self.cache_dir.as_ref()?;
        let bytes = std::fs::read(dir.join(format!("{sha256}.wasm"))).ok()?;
        (sha256_hex(&bytes) == sha256).then_some(bytes)
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
        if let Some(component) = self.cached(sha256) {
            return Ok((component, CompileSource::Cache));
        }
        if !looks_like_component(bytes) {
            return Err(SandboxError::InvalidComponent(
                "the bytes do not start with the WebAssembly component header (a core module or garbage?)".into(),
            ));
        }
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| SandboxError::InvalidComponent(format!("{e:#}")))?;
        if let Some(dir) = self.cache_dir.as_ref().filter(|_| write_cache) {
            match component.serialize() {
                Ok(serialized) => {
                    if let Err(error) = write_cache_entry(dir, sha256, &serialized) {
                        tracing::warn!(%error, sha256, "cannot write the compiled-policy cache; continuing without it");
                    }
                }
                Err(error) => tracing::warn!(%error, sha256, "cannot serialize a compiled policy"),
            }
        }
        Ok((component, CompileSource::Compiled))
    }

    /// Loads `<cache_dir>/<sha256>.cwasm` if it exists, its checksum file
    /// matches and this engine accepts it. Any failure means "not cached".
    fn cached(&self, sha256: &str) -> Option<Component> {
        let dir = self.cache_dir.as_ref()?;
        let path = dir.join(format!("{sha256}.cwasm"));
        let serialized = std::fs::read(&path).ok()?;
        let expected = std::fs::read_to_string(dir.join(format!("{sha256}.cwasm.sha256"))).ok()?;
        if expected.trim() != sha256_hex(&serialized) {
            tracing::warn!(path = %path.display(), "compiled-policy cache entry does not match its checksum; recompiling");
            return None;
        }
        match deserialize_verified(&self.engine, &serialized) {
            Ok(component) => Some(component),
            Err(error) => {
                // Typically a cache written by another wasmtime version.
                tracing::info!(%error, path = %path.display(), "compiled-policy cache entry not usable; recompiling");
                None
            }
        }
    }
}

/// Deserializes a compiled component read from our cache.
#[allow(unsafe_code)]
fn deserialize_verified(engine: &Engine, serialized: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be the output of
    // `Component::serialize` (it is native code). The bytes come from
    // `<cache_dir>/<sha256>.cwasm`, which only `write_cache_entry` creates:
    // it writes the output of `serialize` for a component that Cranelift
    // compiled from bytes with that sha256, to a temporary file that is
    // fsync'd and renamed into place, next to a checksum of the serialized
    // bytes. The caller has just verified that checksum, so the bytes are
    // exactly what we wrote; wasmtime itself rejects output of another
    // version or configuration.
    unsafe { Component::deserialize(engine, serialized) }
}

fn write_cache_entry(dir: &Path, sha256: &str, serialized: &[u8]) -> std::io::Result<()> {
    let write_atomically = |name: String, contents: &[u8]| -> std::io::Result<()> {
        let temporary = dir.join(format!("{name}.tmp-{}", std::process::id()));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, dir.join(name))
    };
    // The checksum goes last: an entry without one is ignored.
    write_atomically(format!("{sha256}.cwasm"), serialized)?;
    write_atomically(format!("{sha256}.cwasm.sha256"), sha256_hex(serialized).as_bytes())
}

/// The component-model preamble: `\0asm`, version 0x0d, layer 1.
fn looks_like_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

fn check_imports(component: &Component, engine: &Engine) -> Result<()> {
    for (name, _) in component.component_type().imports(engine) {
        let interface = name.split('@').next().unwrap_or(name);
        let allowed = ALLOWED_IMPORT_PREFIXES.iter().any(|prefix| interface.starts_with(prefix))
            || ALLOWED_IMPORTS.contains(&interface);
        if !allowed {
            return Err(SandboxError::ForbiddenImport { import: name.to_string() });
        }
    }
    Ok(())
}

/// Links the WASI interfaces std guests import, with no capabilities:
/// streams and polling, the cli interfaces (empty environment, arguments
/// and stdin; stdout/stderr captured) and a constant insecure seed.
fn link_capability_free_wasi(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{cli, io, random, sync};
    io::error::add_to_linker::<GuestState, HasResourceTable>(linker, |state| &mut state.table)?;
    sync::io::poll::add_to_linker::<GuestState, HasResourceTable>(linker, |state| &mut state.table)?;
    sync::io::streams::add_to_linker::<GuestState, HasResourceTable>(linker, |state| &mut state.table)?;
    cli::environment::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::exit::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::stdin::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::stdout::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::stderr::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::terminal_input::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::terminal_output::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::terminal_stdin::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::terminal_stdout::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    cli::terminal_stderr::add_to_linker::<GuestState, WasiCli>(linker, GuestState::cli_view)?;
    random::insecure_seed::add_to_linker::<GuestState, WasiRandom>(linker, |state| state.wasi.random())?;
    Ok(())
}

/// `HasData` for the `wasi:io` interfaces, which only need the resource table.
struct HasResourceTable;

impl wasmtime::component::HasData for HasResourceTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// The prepared instance of one world.
enum WorldPre {
    Partitioner(bindings::partitioner::PartitionerPre<GuestState>),
    Retention(bindings::retention::RetentionPre<GuestState>),
    Tiering(bindings::tiering::TieringPre<GuestState>),
    Archival(bindings::archival::ArchivalPre<GuestState>),
}

fn prepare_world(instance_pre: InstancePre<GuestState>, kind: PolicyKind) -> Result<WorldPre> {
    let wrong_world = |e: wasmtime::Error| SandboxError::WrongWorld { world: kind.as_str(), reason: format!("{e:#}") };
    Ok(match kind {
        PolicyKind::Partitioner => {
            WorldPre::Partitioner(bindings::partitioner::PartitionerPre::new(instance_pre).map_err(wrong_world)?)
        }
        PolicyKind::Retention => {
            WorldPre::Retention(bindings::retention::RetentionPre::new(instance_pre).map_err(wrong_world)?)
        }
        PolicyKind::Tiering => {
            WorldPre::Tiering(bindings::tiering::TieringPre::new(instance_pre).map_err(wrong_world)?)
        }
        PolicyKind::Archival => {
            WorldPre::Archival(bindings::archival::ArchivalPre::new(instance_pre).map_err(wrong_world)?)
        }
    })
}

/// A component compiled, checked against its world and ready to be
/// instantiated. Cheap to share: evaluations only read it.
pub struct CompiledComponent {
    kind: PolicyKind,
    sha256: String,
    pre: WorldPre,
    source: CompileSource,
}

impl std::fmt::Debug for CompiledComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledComponent")
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Who is calling, with which limits: names the policy in logs and errors.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The policy's name.
    pub policy: &'a str,
    /// Its limits.
    pub limits: &'a PolicyLimits,
}

impl CompiledComponent {
    /// The world it implements.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// sha256 of the component bytes, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether it was compiled now or loaded from the cache.
    pub fn source(&self) -> CompileSource {
        self.source
    }

    fn engine(&self) -> &Engine {
        match &self.pre {
            WorldPre::Partitioner(pre) => pre.engine(),
            WorldPre::Retention(pre) => pre.engine(),
            WorldPre::Tiering(pre) => pre.engine(),
            WorldPre::Archival(pre) => pre.engine(),
        }
    }

    /// Calls `validate-config`: `Ok(Err(problems))` when the guest rejects
    /// the config.
    pub fn validate_config(&self, call: CallContext<'_>, config: &str) -> Result<Result<(), Vec<String>>> {
        let answer = self.run(call, |store, pre| match pre {
            WorldPre::Partitioner(pre) => pre.instantiate(&mut *store)?.call_validate_config(&mut *store, config),
            WorldPre::Retention(pre) => pre.instantiate(&mut *store)?.call_validate_config(&mut *store, config),
            WorldPre::Tiering(pre) => pre.instantiate(&mut *store)?.call_validate_config(&mut *store, config),
            WorldPre::Archival(pre) => pre.instantiate(&mut *store)?.call_validate_config(&mut *store, config),
        })?;
        if let Err(problems) = &answer {
            let bytes: usize = problems.iter().map(String::len).sum();
            check_output(call.limits, problems.len(), bytes)?;
        }
        Ok(answer)
    }

    /// Calls a retention policy's `evaluate`.
    pub fn evaluate_retention(
        &self,
        call: CallContext<'_>,
        now_ns: i64,
        config: &str,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Vec<RetentionDecision>> {
        let WorldPre::Retention(pre) = &self.pre else { return Err(self.not_a(PolicyKind::Retention)) };
        let columns = column_infos_to_wit(dataset);
        let facts = PartitionColumns::new(partitions)?;
        let (dataset, facts) = (dataset_to_wit(dataset, &columns), facts.to_wit());
        let answer = self.run(call, |store, _| {
            pre.instantiate(&mut *store)?.call_evaluate(&mut *store, now_ns, config, dataset, facts)
        })?;
        check_output(call.limits, answer.decisions.len(), string_bytes(&answer.reasons))?;
        let answer_facts = AnswerFacts { partitions, reasons: &answer.reasons };
        answer
            .decisions
            .iter()
            .map(|d| {
                Ok(RetentionDecision {
                    partition_id: answer_facts.partition_id(d.partition)?,
                    action: match d.action {
                        wit::RetentionAction::Keep => RetentionAction::Keep,
                        wit::RetentionAction::Delete => RetentionAction::Delete,
                    },
                    reason: answer_facts.reason(d.reason)?,
                })
            })
            .collect()
    }

    /// Calls a tiering policy's `evaluate`.
    pub fn evaluate_tiering(
        &self,
        call: CallContext<'_>,
        now_ns: i64,
        config: &str,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Vec<TierDecision>> {
        let WorldPre::Tiering(pre) = &self.pre else { return Err(self.not_a(PolicyKind::Tiering)) };
        let columns = column_infos_to_wit(dataset);
        let facts = PartitionColumns::new(partitions)?;
        let (dataset, facts) = (dataset_to_wit(dataset, &columns), facts.to_wit());
        let answer = self.run(call, |store, _| {
            pre.instantiate(&mut *store)?.call_evaluate(&mut *store, now_ns, config, dataset, facts)
        })?;
        check_output(call.limits, answer.decisions.len(), string_bytes(&answer.reasons))?;
        let answer_facts = AnswerFacts { partitions, reasons: &answer.reasons };
        answer
            .decisions
            .iter()
            .map(|d| {
                Ok(TierDecision {
                    partition_id: answer_facts.partition_id(d.partition)?,
                    target: tier_from_wit(d.target),
                    reason: answer_facts.reason(d.reason)?,
                })
            })
            .collect()
    }

    /// Calls an archival policy's `evaluate`.
    pub fn evaluate_archival(
        &self,
        call: CallContext<'_>,
        now_ns: i64,
        config: &str,
        dataset: &DatasetFacts,
        partitions: &[PartitionFacts],
    ) -> Result<Vec<ArchiveDecision>> {
        let WorldPre::Archival(pre) = &self.pre else { return Err(self.not_a(PolicyKind::Archival)) };
        let columns = column_infos_to_wit(dataset);
        let facts = PartitionColumns::new(partitions)?;
        let (dataset, facts) = (dataset_to_wit(dataset, &columns), facts.to_wit());
        let answer = self.run(call, |store, _| {
            pre.instantiate(&mut *store)?.call_evaluate(&mut *store, now_ns, config, dataset, facts)
        })?;
        let targets: usize = answer.decisions.iter().map(|d| d.target.len()).sum();
        check_output(call.limits, answer.decisions.len(), string_bytes(&answer.reasons) + targets)?;
        let answer_facts = AnswerFacts { partitions, reasons: &answer.reasons };
        answer
            .decisions
            .into_iter()
            .map(|d| {
                Ok(ArchiveDecision {
                    partition_id: answer_facts.partition_id(d.partition)?,
                    target: d.target,
                    compression_level: d.compression_level,
                    row_group_rows: d.row_group_rows,
                    delete_source_after: d.delete_source_after,
                    reason: answer_facts.reason(d.reason)?,
                })
            })
            .collect()
    }

    /// Calls a partitioner's `columns`: the columns `partition` needs.
    pub fn partitioner_columns(&self, call: CallContext<'_>, config: &str) -> Result<Vec<String>> {
        let WorldPre::Partitioner(pre) = &self.pre else { return Err(self.not_a(PolicyKind::Partitioner)) };
        let columns = self.run(call, |store, _| pre.instantiate(&mut *store)?.call_columns(&mut *store, config))?;
        check_output(call.limits, columns.len(), string_bytes(&columns))?;
        Ok(columns)
    }

    /// Calls a partitioner's `partition` on a batch of `rows` records: one
    /// result per record, its key or why it cannot be keyed.
    pub fn partition(
        &self,
        call: CallContext<'_>,
        config: &str,
        columns: &[ColumnBatch],
        rows: u32,
    ) -> Result<Vec<Result<String, String>>> {
        let WorldPre::Partitioner(pre) = &self.pre else { return Err(self.not_a(PolicyKind::Partitioner)) };
        let texts = columns.iter().map(TextColumn::new).collect::<Result<Vec<_>>>()?;
        let columns: Vec<wit::Column<'_>> =
            columns.iter().zip(&texts).map(|(column, texts)| column_to_wit(column, texts)).collect();
        let answer = self
            .run(call, |store, _| pre.instantiate(&mut *store)?.call_partition(&mut *store, config, &columns, rows))?;
        let messages: usize = answer.rejected.iter().map(|r| r.message.len()).sum();
        let results = answer.record_keys.len().max(answer.rejected.len());
        check_output(call.limits, results, string_bytes(&answer.keys) + messages)?;
        keys_from_wit(answer, rows as usize)
    }

    fn not_a(&self, wanted: PolicyKind) -> SandboxError {
        SandboxError::Internal(format!("a {} component was called as a {} policy", self.kind.as_str(), wanted.as_str()))
    }

    /// Runs `body` in a fresh Store with the call's limits, classifies any
    /// failure, and forwards what the guest printed to the log.
    fn run<T>(
        &self,
        call: CallContext<'_>,
        body: impl FnOnce(&mut Store<GuestState>, &WorldPre) -> wasmtime::Result<T>,
    ) -> Result<T> {
        let captured = CapturedOutput::new(CAPTURED_OUTPUT_BYTES_MAX);
        let wasi = WasiCtx::builder().stdout(captured.clone()).stderr(captured.clone()).insecure_random_seed(0).build();
        let memory_bytes_max = usize::try_from(call.limits.memory_bytes_max).unwrap_or(usize::MAX);
        let state = GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter: GuestLimiter { memory_bytes_max, memory_requested_bytes: None },
            policy: call.policy.to_string(),
            log_messages: 0,
        };
        let mut store = Store::new(self.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // Ticks of EPOCH_TICK (1 ms) from now; at least one.
        store.set_epoch_deadline(call.limits.deadline_ms.max(1));
        store.epoch_deadline_trap();
        let fuel = call.limits.fuel.unwrap_or(u64::MAX);
        store.set_fuel(fuel).map_err(|e| SandboxError::Internal(format!("fuel: {e}")))?;

        let started = Instant::now();
        let outcome = body(&mut store, &self.pre);
        let elapsed = started.elapsed();
        captured.forward_to_log(call.policy);
        let dropped_logs = store.data().log_messages.saturating_sub(LOG_MESSAGES_PER_CALL_MAX);
        if dropped_logs > 0 {
            tracing::warn!(policy = call.policy, dropped_logs, "policy logged too much; messages dropped");
        }
        outcome.map_err(|error| classify(error, store.data(), call.limits, elapsed))
    }
}

/// Turns a wasmtime error into the limit or trap that caused it.
fn classify(error: wasmtime::Error, state: &GuestState, limits: &PolicyLimits, elapsed: Duration) -> SandboxError {
    if let Some(requested_bytes) = state.limiter.memory_requested_bytes {
        return SandboxError::MemoryLimitExceeded {
            memory_bytes_max: limits.memory_bytes_max,
            requested_bytes: requested_bytes as u64,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => SandboxError::DeadlineExceeded { deadline_ms: limits.deadline_ms },
        Some(Trap::OutOfFuel) => SandboxError::FuelExhausted { fuel: limits.fuel.unwrap_or(u64::MAX) },
        Some(Trap::StackOverflow) => SandboxError::StackOverflow { stack_bytes_max: WASM_STACK_BYTES_MAX },
        Some(trap) => SandboxError::Trap(format!("{trap} after {} ms", elapsed.as_millis())),
        None => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => SandboxError::Trap(format!("the guest called exit({})", exit.0)),
            // Lifting a malformed answer (string out of bounds, bad enum
            // discriminant) lands here too: it is the guest's fault.
            None => SandboxError::Trap(format!("{error:#}")),
        },
    }
}

fn check_output(limits: &PolicyLimits, count: usize, bytes: usize) -> Result<()> {
    if count as u64 > limits.decisions_max {
        return Err(SandboxError::OutputTooLarge {
            what: "results",
            limit: "decisions_max",
            maximum: limits.decisions_max,
            actual: count as u64,
        });
    }
    if bytes as u64 > limits.output_bytes_max {
        return Err(SandboxError::OutputTooLarge {
            what: "bytes of strings",
            limit: "output_bytes_max",
            maximum: limits.output_bytes_max,
            actual: bytes as u64,
        });
    }
    Ok(())
}

/// The host state of one Store (one call).
struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
    policy: String,
    log_messages: u32,
}

impl GuestState {
    fn cli_view(&mut self) -> wasmtime_wasi::cli::WasiCliCtxView<'_> {
        wasmtime_wasi::cli::WasiCliCtxView { ctx: self.wasi.cli(), table: &mut self.table }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wit_host::Host for GuestState {
    fn log(&mut self, level: wit_host::LogLevel, message: String) {
        self.log_messages = self.log_messages.saturating_add(1);
        if self.log_messages > LOG_MESSAGES_PER_CALL_MAX {
            return;
        }
        let message = truncate_at_char_boundary(&message, LOG_MESSAGE_BYTES_MAX);
        let policy = self.policy.as_str();
        match level {
            wit_host::LogLevel::Debug => tracing::debug!(target: "strata::policy::guest", policy, "{message}"),
            wit_host::LogLevel::Info => tracing::info!(target: "strata::policy::guest", policy, "{message}"),
            wit_host::LogLevel::Warn => tracing::warn!(target: "strata::policy::guest", policy, "{message}"),
            wit_host::LogLevel::Error => tracing::error!(target: "strata::policy::guest", policy, "{message}"),
        }
    }
}

impl wit::Host for GuestState {}

/// Caps linear memory and tables. Growing a memory past the cap traps at
/// once (rather than returning -1 to the guest), and the request is
/// remembered so the error names `memory_bytes_max`.
struct GuestLimiter {
    memory_bytes_max: usize,
    memory_requested_bytes: Option<usize>,
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes_max {
            self.memory_requested_bytes = Some(desired);
            return Err(wasmtime::format_err!("memory limit of {} bytes exceeded", self.memory_bytes_max));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }

    fn instances(&self) -> usize {
        INSTANCES_MAX
    }

    fn tables(&self) -> usize {
        TABLES_MAX
    }

    fn memories(&self) -> usize {
        MEMORIES_MAX
    }
}

/// Guest stdout and stderr of one call: kept up to a cap, later bytes are
/// counted and dropped (never an error for the guest, which would make a
/// chatty `println!` panic).
#[derive(Clone)]
struct CapturedOutput {
    inner: Arc<Mutex<CapturedBytes>>,
}

struct CapturedBytes {
    kept: Vec<u8>,
    dropped: usize,
    bytes_max: usize,
}

impl CapturedOutput {
    fn new(bytes_max: usize) -> CapturedOutput {
        CapturedOutput { inner: Arc::new(Mutex::new(CapturedBytes { kept: Vec::new(), dropped: 0, bytes_max })) }
    }

    fn append(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = inner.bytes_max.saturating_sub(inner.kept.len());
        let kept = bytes.len().min(room);
        inner.kept.extend_from_slice(&bytes[..kept]);
        inner.dropped += bytes.len() - kept;
    }

    fn forward_to_log(&self, policy: &str) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for line in String::from_utf8_lossy(&inner.kept).lines().filter(|line| !line.trim().is_empty()) {
            tracing::info!(target: "strata::policy::guest", policy, "{line}");
        }
        if inner.dropped > 0 {
            tracing::warn!(
                target: "strata::policy::guest",
                policy,
                dropped_bytes = inner.dropped,
                "policy printed more than {CAPTURED_OUTPUT_BYTES_MAX} bytes; the rest was dropped"
            );
        }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(bytes);
        std::task::Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn tier_to_wit(tier: Tier) -> wit::Tier {
    match tier {
        Tier::Hot => wit::Tier::Hot,
        Tier::Warm => wit::Tier::Warm,
        Tier::Cold => wit::Tier::Cold,
        Tier::Archived => wit::Tier::Archived,
    }
}

fn tier_from_wit(tier: wit::Tier) -> Tier {
    match tier {
        wit::Tier::Hot => Tier::Hot,
        wit::Tier::Warm => Tier::Warm,
        wit::Tier::Cold => Tier::Cold,
        wit::Tier::Archived => Tier::Archived,
    }
}

fn column_infos_to_wit(dataset: &DatasetFacts) -> Vec<wit::ColumnInfo<'_>> {
    dataset
        .columns
        .iter()
        .map(|(name, kind)| wit::ColumnInfo {
            name,
            kind: match kind {
                ColumnKind::Time => wit::ColumnKind::Time,
                ColumnKind::Tag => wit::ColumnKind::Tag,
                ColumnKind::Text => wit::ColumnKind::Text,
                ColumnKind::Float => wit::ColumnKind::Float,
                ColumnKind::Integer => wit::ColumnKind::Integer,
                ColumnKind::Unsigned => wit::ColumnKind::Unsigned,
                ColumnKind::Boolean => wit::ColumnKind::Boolean,
            },
        })
        .collect()
}

fn dataset_to_wit<'a>(dataset: &'a DatasetFacts, columns: &'a [wit::ColumnInfo<'a>]) -> wit::DatasetInfo<'a> {
    wit::DatasetInfo { name: &dataset.name, period: &dataset.period, time_column: &dataset.time_column, columns }
}

fn string_bytes(strings: &[String]) -> usize {
    strings.iter().map(String::len).sum()
}

/// A list of strings in the `texts` form: one buffer and end offsets.
#[derive(Default)]
struct TextsBuffer {
    text: String,
    ends: Vec<u32>,
}

impl TextsBuffer {
    fn with_capacity(count: usize) -> TextsBuffer {
        TextsBuffer { text: String::with_capacity(count * 16), ends: Vec::with_capacity(count) }
    }

    fn push(&mut self, value: &str) -> Result<()> {
        self.text.push_str(value);
        let end = u32::try_from(self.text.len())
            .map_err(|_| SandboxError::Internal("more than 4 GiB of strings in one call".into()))?;
        self.ends.push(end);
        Ok(())
    }

    fn to_wit(&self) -> wit::Texts<'_> {
        wit::Texts { text: &self.text, ends: &self.ends }
    }
}

/// The partition facts of one call, column by column (the WIT `partitions`
/// record): lowering a few flat lists costs a handful of copies, where a
/// list of records with strings cost an allocation in the guest per string.
struct PartitionColumns {
    period_start_ns: Vec<i64>,
    period_end_ns: Vec<i64>,
    period_label: TextsBuffer,
    key: TextsBuffer,
    tier: Vec<wit::Tier>,
    read_only: Vec<bool>,
    rows: Vec<u64>,
    bytes: Vec<u64>,
    min_time_ns: Vec<Option<i64>>,
    max_time_ns: Vec<Option<i64>>,
    created_at_ns: Vec<i64>,
    last_written_at_ns: Vec<i64>,
    file_count: Vec<u32>,
    archived: Vec<bool>,
}

impl PartitionColumns {
    fn new(partitions: &[PartitionFacts]) -> Result<PartitionColumns> {
        let count = partitions.len();
        let mut columns = PartitionColumns {
            period_start_ns: Vec::with_capacity(count),
            period_end_ns: Vec::with_capacity(count),
            period_label: TextsBuffer::with_capacity(count),
            key: TextsBuffer::with_capacity(count),
            tier: Vec::with_capacity(count),
            read_only: Vec::with_capacity(count),
            rows: Vec::with_capacity(count),
            bytes: Vec::with_capacity(count),
            min_time_ns: Vec::with_capacity(count),
            max_time_ns: Vec::with_capacity(count),
            created_at_ns: Vec::with_capacity(count),
            last_written_at_ns: Vec::with_capacity(count),
            file_count: Vec::with_capacity(count),
            archived: Vec::with_capacity(count),
        };
        // One pass over the facts: each partition is read once, while it is
        // in cache.
        for p in partitions {
            columns.period_start_ns.push(p.period_start_ns);
            columns.period_end_ns.push(p.period_end_ns);
            columns.period_label.push(&p.period_label)?;
            columns.key.push(&p.key)?;
            columns.tier.push(tier_to_wit(p.tier));
            columns.read_only.push(p.read_only);
            columns.rows.push(p.rows);
            columns.bytes.push(p.bytes);
            columns.min_time_ns.push(p.min_time_ns);
            columns.max_time_ns.push(p.max_time_ns);
            columns.created_at_ns.push(p.created_at_ns);
            columns.last_written_at_ns.push(p.last_written_at_ns);
            columns.file_count.push(p.file_count);
            columns.archived.push(p.archived);
        }
        Ok(columns)
    }

    fn to_wit(&self) -> wit::Partitions<'_> {
        wit::Partitions {
            period_start_ns: &self.period_start_ns,
            period_end_ns: &self.period_end_ns,
            period_label: self.period_label.to_wit(),
            key: self.key.to_wit(),
            tier: &self.tier,
            read_only: &self.read_only,
            rows: &self.rows,
            bytes: &self.bytes,
            min_time_ns: &self.min_time_ns,
            max_time_ns: &self.max_time_ns,
            created_at_ns: &self.created_at_ns,
            last_written_at_ns: &self.last_written_at_ns,
            file_count: &self.file_count,
            archived: &self.archived,
        }
    }
}

/// Resolves the indexes of an answer: partitions by their position in the
/// input, reasons by their position in the answer's `reasons`.
struct AnswerFacts<'a> {
    partitions: &'a [PartitionFacts],
    reasons: &'a [String],
}

impl AnswerFacts<'_> {
    fn partition_id(&self, index: u32) -> Result<String> {
        match self.partitions.get(index as usize) {
            Some(partition) => Ok(partition.id.clone()),
            None => Err(SandboxError::BrokenContract(format!(
                "a decision refers to partition {index}, but only {} were given",
                self.partitions.len()
            ))),
        }
    }

    fn reason(&self, index: u32) -> Result<String> {
        match self.reasons.get(index as usize) {
            Some(reason) => Ok(reason.clone()),
            None => Err(SandboxError::BrokenContract(format!(
                "a decision refers to reason {index}, but the answer has {} reasons",
                self.reasons.len()
            ))),
        }
    }
}

/// A text column of a batch in the WIT `text-values` form; `None` for the
/// other kinds, whose values are lowered as they are.
struct TextColumn {
    values: TextsBuffer,
    nulls: Vec<u32>,
}

impl TextColumn {
    fn new(column: &ColumnBatch) -> Result<Option<TextColumn>> {
        let ColumnValues::Text(values) = &column.values else { return Ok(None) };
        let mut texts = TextsBuffer::with_capacity(values.len());
        let mut nulls = Vec::new();
        for (row, value) in values.iter().enumerate() {
            if value.is_none() {
                nulls.push(u32::try_from(row).map_err(|_| SandboxError::Internal("batch too large".into()))?);
            }
            texts.push(value.as_deref().unwrap_or(""))?;
        }
        Ok(Some(TextColumn { values: texts, nulls }))
    }
}

fn column_to_wit<'a>(column: &'a ColumnBatch, text: &'a Option<TextColumn>) -> wit::Column<'a> {
    wit::Column {
        name: &column.name,
        values: match (&column.values, text) {
            (ColumnValues::Text(_), Some(text)) => {
                wit::ColumnValues::Text(wit::TextValues { values: text.values.to_wit(), nulls: &text.nulls })
            }
            (ColumnValues::Text(_), None) => {
                wit::ColumnValues::Text(wit::TextValues { values: wit::Texts { text: "", ends: &[] }, nulls: &[] })
            }
            (ColumnValues::Float(values), _) => wit::ColumnValues::Float(values),
            (ColumnValues::Integer(values), _) => wit::ColumnValues::Integer(values),
            (ColumnValues::Unsigned(values), _) => wit::ColumnValues::Unsigned(values),
            (ColumnValues::Boolean(values), _) => wit::ColumnValues::Boolean(values),
            (ColumnValues::Time(values), _) => wit::ColumnValues::Time(values),
        },
    }
}

/// One result per record from a partitioner's `batch-keys`. Indexes that
/// point nowhere, a record rejected twice or a key list of the wrong length
/// break the contract; the keys themselves are checked by
/// `plan::check_keys`.
fn keys_from_wit(answer: wit::BatchKeys, rows: usize) -> Result<Vec<Result<String, String>>> {
    if answer.record_keys.len() != rows {
        return Err(SandboxError::BrokenContract(format!(
            "record-keys has {} entries for {rows} records",
            answer.record_keys.len()
        )));
    }
    let mut rejected: Vec<Option<String>> = vec![None; rows];
    for record in answer.rejected {
        let slot = rejected.get_mut(record.row as usize).ok_or_else(|| {
            SandboxError::BrokenContract(format!("rejects record {}, but the batch has {rows} records", record.row))
        })?;
        if slot.replace(record.message).is_some() {
            return Err(SandboxError::BrokenContract(format!("rejects record {} more than once", record.row)));
        }
    }
    answer
        .record_keys
        .iter()
        .zip(rejected)
        .enumerate()
        .map(|(row, (&key, rejected))| match rejected {
            Some(message) => Ok(Err(message)),
            None => match answer.keys.get(key as usize) {
                Some(key) => Ok(Ok(key.clone())),
                None => Err(SandboxError::BrokenContract(format!(
                    "record {row} has key {key}, but the answer has {} keys",
                    answer.keys.len()
                ))),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtins;

    const FIXTURE: &str = include_str!("../../../tests/fixtures/retention.wat");
    const DAY_NS: i64 = 86_400 * 1_000_000_000;
    const NOW_NS: i64 = 20_000 * DAY_NS;

    fn retention_fixture(behaviour: &str) -> Vec<u8> {
        wat::parse_str(FIXTURE.replace(";;BEHAVIOUR", behaviour)).expect("fixture parses")
    }

    fn fixture_importing(imports: &str) -> Vec<u8> {
        wat::parse_str(FIXTURE.replace(";;IMPORTS", imports)).expect("fixture parses")
    }

    fn sandbox() -> Sandbox {
        Sandbox::new(None).unwrap()
    }

    fn limits() -> PolicyLimits {
        PolicyLimits { deadline_ms: 200, memory_bytes_max: 64 * 1024 * 1024, ..PolicyLimits::default() }
    }

    fn dataset() -> DatasetFacts {
        DatasetFacts {
            name: "cpu".into(),
            period: "day".into(),
            time_column: "time".into(),
            columns: vec![("time".into(), ColumnKind::Time), ("host".into(), ColumnKind::Tag)],
        }
    }

    /// Daily partitions that ended `ended_days_ago` days before `NOW_NS`.
    fn partitions(ended_days_ago: &[i64]) -> Vec<PartitionFacts> {
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

    fn evaluate(component: &CompiledComponent, limits: &PolicyLimits) -> Result<Vec<RetentionDecision>> {
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
        const PARTITIONER: &str = include_str!("../../../tests/fixtures/partitioner.wat");
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

    #[test]
    fn every_builtin_loads_as_its_world() {
        let sandbox = sandbox();
        let expected = [
            ("archive-after", PolicyKind::Archival),
            ("partition-by-consistent-hash", PolicyKind::Partitioner),
            ("partition-by-field", PolicyKind::Partitioner),
            ("partition-by-hash", PolicyKind::Partitioner),
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
    fn an_infinite_loop_is_stopped_at_the_deadline() {
        let sandbox = sandbox();
        let component =
            sandbox.load(&retention_fixture("(loop $forever (br $forever))"), PolicyKind::Retention).unwrap();
        let limits = limits();
        let started = Instant::now();
        let error = evaluate(&component, &limits).unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(error, SandboxError::DeadlineExceeded { deadline_ms: 200 });
        assert!(error.to_string().contains("limits.deadline_ms"), "{error}");
        assert!(elapsed >= Duration::from_millis(190) && elapsed < Duration::from_secs(2), "{elapsed:?}");
        // The component is not poisoned: the next call fails the same way, on time.
        let started = Instant::now();
        assert!(matches!(evaluate(&component, &limits), Err(SandboxError::DeadlineExceeded { .. })));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn fuel_stops_a_loop_before_the_deadline() {
        let sandbox = sandbox();
        let component =
            sandbox.load(&retention_fixture("(loop $forever (br $forever))"), PolicyKind::Retention).unwrap();
        let limits = PolicyLimits { fuel: Some(1_000_000), deadline_ms: 60_000, ..limits() };
        assert_eq!(evaluate(&component, &limits).unwrap_err(), SandboxError::FuelExhausted { fuel: 1_000_000 });
    }

    #[test]
    fn a_memory_bomb_hits_the_memory_cap() {
        let sandbox = sandbox();
        let bomb = "(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 256)) (i32.const -1))))";
        let component = sandbox.load(&retention_fixture(bomb), PolicyKind::Retention).unwrap();
        let error = evaluate(&component, &limits()).unwrap_err();
        assert!(
            matches!(error, SandboxError::MemoryLimitExceeded { memory_bytes_max, requested_bytes }
                if memory_bytes_max == 64 * 1024 * 1024 && requested_bytes > memory_bytes_max),
            "{error:?}"
        );
        assert!(error.to_string().contains("limits.memory_bytes_max"), "{error}");
    }

    #[test]
    fn traps_and_stack_overflows_are_errors() {
        let sandbox = sandbox();
        let component = sandbox.load(&retention_fixture("unreachable"), PolicyKind::Retention).unwrap();
        let error = evaluate(&component, &limits()).unwrap_err();
        assert!(matches!(&error, SandboxError::Trap(message) if message.contains("unreachable")), "{error:?}");

        let component =
            sandbox.load(&retention_fixture("(drop (call $recurse (i32.const 0)))"), PolicyKind::Retention).unwrap();
        assert!(matches!(evaluate(&component, &limits()), Err(SandboxError::StackOverflow { .. })));
    }

    #[test]
    fn a_huge_answer_is_refused_by_count() {
        let sandbox = sandbox();
        // 200,000 zeroed decisions (12 bytes each) above the first page,
        // and no reasons.
        let huge = "(drop (memory.grow (i32.const 64)))
                    (i32.store (i32.const 16) (i32.const 65536))
                    (i32.store (i32.const 20) (i32.const 200000))
                    (return (i32.const 16))";
        let component = sandbox.load(&retention_fixture(huge), PolicyKind::Retention).unwrap();
        let limits = PolicyLimits { decisions_max: 1_000, ..limits() };
        let error = evaluate(&component, &limits).unwrap_err();
        assert_eq!(
            error,
            SandboxError::OutputTooLarge { what: "results", limit: "decisions_max", maximum: 1_000, actual: 200_000 }
        );
    }

    #[test]
    fn an_answer_pointing_nowhere_breaks_the_contract() {
        let sandbox = sandbox();
        // One decision for partition 99 (of 3) with reason 0, and one empty reason.
        let nowhere = "(i32.store (i32.const 512) (i32.const 99))
                       (i32.store (i32.const 16) (i32.const 512))
                       (i32.store (i32.const 20) (i32.const 1))
                       (i32.store (i32.const 24) (i32.const 600))
                       (i32.store (i32.const 28) (i32.const 1))
                       (return (i32.const 16))";
        let component = sandbox.load(&retention_fixture(nowhere), PolicyKind::Retention).unwrap();
        let error = evaluate(&component, &limits()).unwrap_err();
        assert!(
            matches!(&error, SandboxError::BrokenContract(message) if message.contains("partition 99")),
            "{error:?}"
        );
        // The same decision for partition 2 refers to a reason that exists.
        let fine = nowhere.replace("(i32.const 99)", "(i32.const 2)");
        let component = sandbox.load(&retention_fixture(&fine), PolicyKind::Retention).unwrap();
        let decisions = evaluate(&component, &limits()).unwrap();
        assert_eq!(
            decisions,
            [RetentionDecision { partition_id: "cpu/3".into(), action: RetentionAction::Keep, reason: String::new() }]
        );
        // A reason index past the end is refused too.
        let no_reason =
            fine.replace("(i32.store (i32.const 28) (i32.const 1))", "(i32.store (i32.const 28) (i32.const 0))");
        let component = sandbox.load(&retention_fixture(&no_reason), PolicyKind::Retention).unwrap();
        assert!(matches!(evaluate(&component, &limits()), Err(SandboxError::BrokenContract(_))));
    }

    #[test]
    fn forbidden_imports_are_refused_at_load() {
        let sandbox = sandbox();
        for import in ["wasi:filesystem/types@0.2.6", "wasi:sockets/tcp@0.2.6", "wasi:clocks/wall-clock@0.2.6"] {
            let bytes = fixture_importing(&format!("(import \"{import}\" (instance))"));
            let error = sandbox.load(&bytes, PolicyKind::Retention).unwrap_err();
            assert_eq!(error, SandboxError::ForbiddenImport { import: import.to_string() });
            assert!(sandbox.inspect(&bytes).unwrap().worlds.is_empty());
        }
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

    #[test]
    fn guest_output_is_capped_without_failing_the_guest() {
        let captured = CapturedOutput::new(10);
        let mut stream = captured.clone();
        stream.write(bytes::Bytes::from_static(b"hello ")).unwrap();
        stream.write(bytes::Bytes::from_static(b"world, and more")).unwrap();
        assert!(stream.check_write().unwrap() > 0, "a full buffer never blocks or closes the stream");
        let inner = captured.inner.lock().unwrap();
        assert_eq!(inner.kept, b"hello worl");
        assert_eq!(inner.dropped, 11);
        assert_eq!(truncate_at_char_boundary("héllo", 2), "h");
        assert_eq!(truncate_at_char_boundary("héllo", 3), "hé");
    }

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
