//! `strata token create|list|revoke`: manage access tokens offline, straight
//! in a data directory's catalog, so the first admin token exists before
//! the server listens. SQLite's WAL mode lets this run beside a running
//! server, which picks the change up within a second.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::time::now_ns;
use crate::token;

/// Where the catalog is: the data directory of `--config`, or `--data-dir`.
#[derive(Debug, Args)]
pub struct Location {
    /// Data directory (overrides the configuration's `server.data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML configuration file whose `server.data_dir` to use.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Location {
    fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        let config = match &self.config {
            Some(path) => Config::read(path)?,
            None => Config::default(),
        };
        Ok(config.server.data_dir)
    }

    /// Opens (creating when needed) the catalog.
    fn open(&self, create: bool) -> anyhow::Result<Catalog> {
        let data_dir = self.data_dir()?;
        if create {
            std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        }
        let path = Catalog::path_in(&data_dir);
        if !create && !path.exists() {
            anyhow::bail!("no catalog at {} (no token was ever created there)", path.display());
        }
        Catalog::open(&path).with_context(|| format!("opening {}", path.display()))
    }
}

/// `strata token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once, alone on the first line of stdout.
    Create {
        /// A unique name, e.g. `grafana` (shown in the audit log).
        #[arg(long)]
        name: String,
        /// `admin`, `read:<dataset|prefix*|*>` or `write:<dataset|prefix*|*>`; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime, e.g. `30d` or `12h` (default: no expiry).
        #[arg(long)]
        expires_in: Option<String>,
        /// Where the catalog is.
        #[command(flatten)]
        location: Location,
    },
    /// List tokens: name, status, scopes, times (never the tokens).
    List {
        /// Where the catalog is.
        #[command(flatten)]
        location: Location,
    },
    /// Revoke a token by name; it stops working at once (within a second
    /// for a running server).
    Revoke {
        /// The token's name.
        name: String,
        /// Where the catalog is.
        #[command(flatten)]
        location: Location,
    },
}

/// Runs a `strata token` command.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { name, scopes, expires_in, location } => {
            let now = now_ns();
            let expires_at_ns = match expires_in {
                Some(raw) => Some(now.saturating_add(token::parse_lifetime(&raw).map_err(anyhow::Error::msg)?)),
                None => None,
            };
            // Checked before the data directory is created for it.
            token::Scopes::parse(&scopes).map_err(anyhow::Error::msg)?;
            token::check_name(&name).map_err(anyhow::Error::msg)?;
            let catalog = location.open(true)?;
            let (secret, record) = token::issue(&catalog, &name, &scopes, expires_at_ns, now)?;
            println!("{secret}");
            let expiry = record.expires_at_ns.map_or("never".to_string(), crate::time::rfc3339);
            eprintln!(
                "created token {:?} with scopes {} (expires: {expiry}); it is shown only this once",
                record.name,
                record.scopes.join(" ")
            );
            Ok(())
        }
        TokenCommand::List { location } => {
            let now = now_ns();
            println!("{:<24} {:<8} {:<32} {:<30} EXPIRES", "NAME", "STATUS", "SCOPES", "CREATED");
            for record in location.open(false)?.tokens()? {
                println!(
                    "{:<24} {:<8} {:<32} {:<30} {}",
                    record.name,
                    token::status(&record, now),
                    record.scopes.join(","),
                    crate::time::rfc3339(record.created_at_ns),
                    record.expires_at_ns.map_or("never".to_string(), crate::time::rfc3339),
                );
            }
            Ok(())
        }
        TokenCommand::Revoke { name, location } => {
            let record = location
                .open(false)?
                .revoke_token(&name, now_ns())?
                .ok_or_else(|| anyhow::anyhow!("no token named {name:?}"))?;
            let at = record.revoked_at_ns.map(crate::time::rfc3339).unwrap_or_default();
            println!("revoked {} at {at}", record.name);
            Ok(())
        }
    }
}
