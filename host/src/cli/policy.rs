//! `strata policy …`: the plugin author's offline tools (`new`, `check`,
//! `test`), the same code as the light `strata-policy` binary
//! (crates/strata-policy), and the installed policies through the server's
//! admin API (`list`, `show`, `versions`, `reload`, `run`, `rollback`,
//! `simulate`, which also takes a candidate component).

/// `strata policy …`
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// The author's offline tools, shared with `strata-policy`.
    #[command(flatten)]
    Author(strata_policy::LocalCommand),
    /// The installed policies, through the server's admin API.
    #[command(flatten)]
    Server(super::policy_remote::ServerPolicyCommand),
}

/// Runs a `strata policy` command.
pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Author(command) => strata_policy::run(command.into(), "strata policy"),
        PolicyCommand::Server(command) => super::policy_remote::run(command),
    }
}
