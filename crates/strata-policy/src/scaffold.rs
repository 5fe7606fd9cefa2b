//! `new`: a policy project scaffolded from a template of its kind and
//! language — a standalone project that builds wherever it is created,
//! with `EDIT:` markers, the WIT contract beside it, an example facts
//! fixture, and next steps that each work as printed.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use strata_sandbox::sandbox::PolicyKind;

/// `new NAME [--kind KIND] [--lang LANG] [--dir DIR]`
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The policy's name, e.g. `keep-weekdays`: a directory `DIR/NAME`.
    pub name: String,
    /// partitioner, retention, tiering or archival.
    #[arg(long, default_value = "retention")]
    pub kind: String,
    /// rust, python or js (python and js: a retention policy, built by
    /// componentize-py or componentize-js).
    #[arg(long, default_value = "rust")]
    pub lang: String,
    /// Where to create it.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// The WIT contract every scaffold carries in `wit/policy.wit`.
const WIT: &str = include_str!("../../../wit/policy.wit");
/// The guest helpers, copied into Rust scaffolds as `src/guest.rs`.
const GUEST: &str = include_str!("../../../plugins/guest/src/lib.rs");
/// The plugins workspace's lock file: a scaffold resolves the versions the
/// built-ins are tested with (and builds offline once they are fetched).
const PLUGINS_LOCK: &str = include_str!("../../../plugins/Cargo.lock");
const RUST_CARGO: &str = include_str!("../templates/rust/Cargo.toml");
const RUST_CARGO_CONFIG: &str = include_str!("../templates/rust/config.toml");
const PARTITIONS_FIXTURE: &str = include_str!("../templates/facts/partitions.json");
const RECORDS_FIXTURE: &str = include_str!("../templates/facts/records.json");

fn rust_source(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Retention => include_str!("../templates/rust/retention.rs"),
        PolicyKind::Tiering => include_str!("../templates/rust/tiering.rs"),
        PolicyKind::Archival => include_str!("../templates/rust/archival.rs"),
        PolicyKind::Partitioner => include_str!("../templates/rust/partitioner.rs"),
    }
}

/// A config each template accepts, printed in the next steps.
fn example_config(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Retention => r#"{"max_age": "90d"}"#,
        PolicyKind::Tiering => r#"{"cold_after": "30d"}"#,
        PolicyKind::Archival => r#"{"after": "180d"}"#,
        PolicyKind::Partitioner => r#"{"field": "tenant"}"#,
    }
}

pub(crate) fn run(args: &NewArgs, program: &str) -> anyhow::Result<()> {
    let kind = super::parse_kind(&args.kind)?;
    check_name(&args.name)?;
    let project = args.dir.join(&args.name);
    if project.exists() {
        bail!("{} already exists", project.display());
    }
    let fixture = if kind == PolicyKind::Partitioner { RECORDS_FIXTURE } else { PARTITIONS_FIXTURE };
    let fill = |text: &str| text.replace("{{name}}", &args.name).replace("{{kind}}", kind.as_str());
    let files: Vec<(&str, String)> = match args.lang.as_str() {
        "rust" => vec![
            ("Cargo.toml", fill(RUST_CARGO)),
            ("Cargo.lock", PLUGINS_LOCK.to_string()),
            (".cargo/config.toml", RUST_CARGO_CONFIG.to_string()),
            ("src/lib.rs", fill(rust_source(kind))),
            ("src/guest.rs", GUEST.to_string()),
            ("wit/policy.wit", WIT.to_string()),
            ("facts.json", fixture.to_string()),
        ],
        "python" | "js" => crate::languages::files(&args.lang, kind, &fill, WIT, fixture)?,
        other => bail!("--lang {other:?} must be rust, python or js"),
    };
    for (path, contents) in &files {
        let path = project.join(path);
        let parent = path.parent().expect("files are inside the project");
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("created {} ({} policy in {})", project.display(), kind.as_str(), args.lang);
    println!();
    println!("next, each step from {}:", project.display());
    let steps = match args.lang.as_str() {
        "rust" => rust_steps(&args.name, kind, program),
        lang => crate::languages::steps(lang, &args.name, kind, program, example_config(kind)),
    };
    print_steps(&project, &steps, &args.name, kind);
    Ok(())
}

/// One printed step: what it does, and the shell command.
pub(crate) struct Step {
    pub(crate) what: &'static str,
    pub(crate) command: String,
}

fn rust_steps(name: &str, kind: PolicyKind, program: &str) -> Vec<Step> {
    let wasm = format!("\"${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{}.wasm\"", name.replace('-', "_"));
    let mut steps = vec![Step { what: "edit src/lib.rs where it says EDIT:", command: String::new() }];
    if let Some(host) = native_target() {
        steps.push(Step { what: "run its unit tests natively", command: format!("cargo test --target {host}") });
    }
    steps.extend([
        Step { what: "build the component", command: "cargo build --release".to_string() },
        Step {
            what: "check it against the contract",
            command: format!("{program} check {wasm} --config '{}'", example_config(kind)),
        },
        Step {
            what: "see its decisions on the example facts",
            command: format!("{program} test {wasm} --facts facts.json --config '{}'", example_config(kind)),
        },
    ]);
    steps
}

fn print_steps(project: &Path, steps: &[Step], name: &str, kind: PolicyKind) {
    println!("  cd {}", project.display());
    for (number, step) in steps.iter().enumerate() {
        println!("  {}. {}", number + 1, step.what);
        if !step.command.is_empty() {
            println!("     {}", step.command);
        }
    }
    println!("  {}. point a policy file at the .wasm, e.g. policies/{name}.toml:", steps.len() + 1);
    println!();
    println!("     kind = \"{}\"", kind.as_str());
    println!("     plugin = \"/path/to/{name}.wasm\"   # relative to the policy file");
    println!("     datasets = [\"*\"]");
    if kind != PolicyKind::Partitioner {
        println!("     schedule = \"every 1h\"");
    }
    println!("     [config]");
}

/// The printed commands of a scaffold, for the tests that run them.
pub fn printed_commands(output: &str) -> Vec<String> {
    let mut lines = output.lines().skip_while(|line| !line.starts_with("next"));
    let mut commands = Vec::new();
    let mut previous_was_step = false;
    for line in lines.by_ref() {
        if line.trim_start().starts_with("cd ") && commands.is_empty() {
            commands.push(line.trim().to_string());
            continue;
        }
        let is_step = line.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit());
        if previous_was_step && line.starts_with("     ") && !line.trim().is_empty() {
            commands.push(line.trim().to_string());
        }
        previous_was_step = is_step && !line.contains("point a policy file");
    }
    commands
}

/// The native target triple for `cargo test`, when it is a known one.
fn native_target() -> Option<String> {
    match (std::env::consts::ARCH, std::env::consts::OS) {
        (arch, "linux") => Some(format!("{arch}-unknown-linux-gnu")),
        ("aarch64", "macos") => Some("aarch64-apple-darwin".to_string()),
        ("x86_64", "macos") => Some("x86_64-apple-darwin".to_string()),
        _ => None,
    }
}

/// A policy name: `[a-z0-9][a-z0-9_-]{0,62}`, as the server names policies.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        bail!("policy name {name:?} must match [a-z0-9][a-z0-9_-]{{0,62}}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_server() {
        assert!(check_name("keep-weekdays").is_ok());
        assert!(check_name("Keep").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn printed_commands_are_found() {
        let output = "created x\n\nnext, each step from x:\n  cd /tmp/x\n  1. edit src/lib.rs\n  2. build\n     cargo build --release\n  3. point a policy file at the .wasm:\n\n     kind = \"retention\"\n";
        assert_eq!(printed_commands(output), ["cd /tmp/x", "cargo build --release"]);
    }
}
