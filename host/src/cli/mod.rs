//! The `strata` command line: the server, the plugin author's tools, offline
//! token management and the benchmarks. Commands may read and write files
//! (a component, a data directory's catalog); the server's modules do not.

pub mod bench;
pub mod bench_import;
pub mod bench_partitions;
pub mod bench_peers;
pub mod bench_policy;
pub mod bench_storage;
pub mod client;
pub mod import;
mod import_progress;
pub mod import_read;
pub mod output;
pub mod policy;
pub mod policy_remote;
pub mod remote;
pub mod token;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;

/// The command line.
#[derive(Parser)]
#[command(name = "strata", version, about = "A time-series and event store whose data lifecycle is code")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// TOML configuration file (every setting has a default).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides `server.data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Listen address (overrides `server.listen`), e.g. 127.0.0.1:8086 or 127.0.0.1:0.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Write and check policy plugins.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Create, list and revoke access tokens (offline, in the data directory).
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
    #[command(flatten)]
    Remote(remote::RemoteCommand),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config: config_file, data_dir, listen } => {
            // Validated once, after the command line's overrides: a storage
            // target is checked against the data directory actually used.
            let mut config = match &config_file {
                Some(path) => Config::read(path)?,
                None => Config::default(),
            };
            config.resolve_policy_directory(config_file.as_deref());
            if let Some(data_dir) = data_dir {
                config.server.data_dir = data_dir;
            }
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            config.validate()?;
            crate::failpoint::check().map_err(anyhow::Error::msg)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
            runtime.block_on(crate::server::run(config))
        }
        Command::Policy { command } => policy::run(command),
        Command::Token { command } => token::run(command),
        Command::Bench { which } => bench::run(which),
        Command::Remote(command) => remote::run(command),
    }
}
