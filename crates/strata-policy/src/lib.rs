//! The policy author's tools, shared by the light `strata-policy` binary
//! and `strata policy …` in the server's binary: `new` (scaffold a policy
//! in Rust, Python or JavaScript), `check` (a component against the
//! contract), `test` (a component against a facts fixture, offline) and
//! `simulate` (a candidate against a live server's real partitions).
//!
//! It depends on `strata-sandbox` only — no DuckDB, SQLite or HTTP server —
//! so `cargo install --path crates/strata-policy` builds in minutes.

mod check;
mod fixture;
mod harness;
mod languages;
mod scaffold;
mod simulate;

use std::path::PathBuf;

use anyhow::Context;
use strata_sandbox::sandbox::PolicyKind;

pub use fixture::Fixture;
pub use scaffold::printed_commands;

/// The author's commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Scaffold a new policy: a small project with `EDIT:` markers, the WIT
    /// contract, an example facts fixture, and the next steps to run.
    New(scaffold::NewArgs),
    /// Type-check a component against the policy worlds, run its
    /// `validate-config`, and print its imports, exports and world.
    Check(check::CheckArgs),
    /// Evaluate a component against a facts fixture and print every
    /// decision with its reason (offline: no server).
    Test(harness::TestArgs),
    /// Run a candidate component against a live server's partitions of a
    /// dataset and print its plan and the diff against the installed version.
    Simulate(simulate::SimulateArgs),
}

/// The offline commands, which `strata policy` also has (its `simulate` is
/// the server client's, which takes a candidate with `--candidate`).
#[derive(Debug, clap::Subcommand)]
pub enum LocalCommand {
    /// Scaffold a new policy (Rust or Python) that builds and checks as printed.
    New(scaffold::NewArgs),
    /// Type-check a component against the policy worlds and run its `validate-config`.
    Check(check::CheckArgs),
    /// Run a component against a facts fixture and print its decisions with reasons.
    Test(harness::TestArgs),
}

impl From<LocalCommand> for Command {
    fn from(command: LocalCommand) -> Command {
        match command {
            LocalCommand::New(args) => Command::New(args),
            LocalCommand::Check(args) => Command::Check(args),
            LocalCommand::Test(args) => Command::Test(args),
        }
    }
}

/// Runs a command; `program` is how the user invoked the tool
/// (`strata-policy` or `strata policy`), quoted in printed next steps.
pub fn run(command: Command, program: &str) -> anyhow::Result<()> {
    match command {
        Command::New(args) => scaffold::run(&args, program),
        Command::Check(args) => check::run(&args),
        Command::Test(args) => harness::run(&args),
        Command::Simulate(args) => simulate::run(&args),
    }
}

/// The largest component the tools read (the server's default
/// `policies.plugin_bytes_max`).
const COMPONENT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The bytes of a component: a `.wasm` file, or `builtin:NAME`.
fn read_component(source: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(name) = source.strip_prefix("builtin:") {
        let names: Vec<&str> = strata_sandbox::builtins::names().collect();
        return strata_sandbox::builtins::component(name)
            .map(<[u8]>::to_vec)
            .with_context(|| format!("{source:?} is not a built-in; built-ins are {}", names.join(", ")));
    }
    let path = PathBuf::from(source);
    let size = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?.len();
    if size > COMPONENT_BYTES_MAX {
        anyhow::bail!("{} is {size} bytes, more than the {COMPONENT_BYTES_MAX} a server accepts", path.display());
    }
    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
}

fn parse_kind(raw: &str) -> anyhow::Result<PolicyKind> {
    PolicyKind::parse(raw)
        .with_context(|| format!("kind {raw:?} must be one of partitioner, retention, tiering, archival"))
}
