//! `strata-policy`: scaffold, check, test and simulate Strata policy
//! components without building the server.

use clap::Parser;

/// The policy author's tool.
#[derive(Parser)]
#[command(name = "strata-policy", version, about = "Scaffold, check, test and simulate Strata policy components")]
struct Cli {
    #[command(subcommand)]
    command: strata_policy::Command,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match strata_policy::run(cli.command, "strata-policy") {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
