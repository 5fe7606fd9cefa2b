//! The `strata` command.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use strata::config::Config;

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
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        which: strata::bench::Bench,
    },
}

fn main() -> anyhow::Result<()> {
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
            let mut config = match &config_file {
                Some(path) => Config::load(path)?,
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
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
            runtime.block_on(strata::server::run(config))
        }
        Command::Policy { command } => strata::policy_command::run(command),
        Command::Bench { which } => strata::bench::run(which),
    }
}
