//! The `strata` command.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use strata::config::Config;

/// Keeps freed memory in the process. By default glibc serves every request
/// buffer and column above 128 KiB with a fresh mmap and returns it on free,
/// so each request faults (and zeroes) its memory in again: that was a third
/// of ingest CPU. Buffers up to 32 MiB now come from the heap and the heap is
/// trimmed only past 512 MiB of free space.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator tuning parameters; it is called
    // first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 * 1024 * 1024);
    }
}

#[derive(Parser)]
#[command(name = "strata", version, about = "A time-series and event store whose data lifecycle is code")]
struct Cli {
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
        command: strata::policy_command::PolicyCommand,
    },
    /// Create, list and revoke access tokens (offline, in the data directory).
    Token {
        #[command(subcommand)]
        command: strata::token_command::TokenCommand,
    },
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        which: strata::bench::Bench,
    },
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
            strata::failpoint::check().map_err(anyhow::Error::msg)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
            runtime.block_on(strata::server::run(config))
        }
        Command::Policy { command } => strata::policy_command::run(command),
        Command::Token { command } => strata::token_command::run(command),
        Command::Bench { which } => strata::bench::run(which),
    }
}
