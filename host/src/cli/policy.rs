//! `strata policy …`: the plugin author's tools (`new`, `check`, `test`,
//! `simulate`), the same code as the light `strata-policy` binary
//! (crates/strata-policy).

/// `strata policy …`
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// The author's tools, shared with `strata-policy`.
    #[command(flatten)]
    Author(strata_policy::Command),
}

/// Runs a `strata policy` command.
pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Author(command) => strata_policy::run(command, "strata policy"),
    }
}
