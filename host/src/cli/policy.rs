//! `strata policy check` and `strata policy new`: the plugin author's tools.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::policy::definition::check_policy_name;
use crate::sandbox::{CallContext, PolicyKind, PolicyLimits, Sandbox};

/// `strata policy …`
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Type-check a component against the policy worlds, run its
    /// `validate-config`, and print its imports, exports and world.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// The config to validate, as a JSON object (the policy file's `[config]` table).
        #[arg(long, default_value = "{}")]
        config: String,
        /// The kind it must implement (default: whichever it implements).
        #[arg(long)]
        kind: Option<String>,
    },
    /// Scaffold a new plugin from the template (or the built-in of the kind).
    New {
        /// Package name of the plugin, e.g. `keep-weekdays`.
        name: String,
        /// partitioner, retention, tiering or archival.
        #[arg(long, default_value = "retention")]
        kind: String,
        /// The plugins workspace to create it in.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
    },
    /// The installed policies, through the server's admin API.
    #[command(flatten)]
    Server(super::policy_remote::ServerPolicyCommand),
}

/// Runs a `strata policy` command.
pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { file, config, kind } => check(&file, &config, kind.as_deref()),
        PolicyCommand::New { name, kind, dir } => scaffold(&name, &kind, &dir),
        PolicyCommand::Server(command) => super::policy_remote::run(command),
    }
}

fn parse_kind(raw: &str) -> anyhow::Result<PolicyKind> {
    PolicyKind::parse(raw)
        .with_context(|| format!("kind {raw:?} must be one of partitioner, retention, tiering, archival"))
}

fn check(file: &Path, config: &str, kind: Option<&str>) -> anyhow::Result<()> {
    let wanted = kind.map(parse_kind).transpose()?;
    let bytes_max = crate::config::PoliciesConfig::default().plugin_bytes_max;
    let bytes = crate::policy::files::read_regular_file(file, bytes_max, "policies.plugin_bytes_max")
        .with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(config)
        .context("--config must be a JSON object, e.g. '{\"max_age\": \"90d\"}'")?;
    let sandbox = Sandbox::new(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = sandbox.inspect(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    println!("component  {}", file.display());
    println!("sha256     {}", report.sha256);
    println!(
        "imports    {}",
        if report.imports.is_empty() { "(none)".to_string() } else { report.imports.join("\n           ") }
    );
    println!("exports    {}", report.exports.join("\n           "));
    let kind = match (wanted, report.worlds.as_slice()) {
        (Some(kind), _) => kind,
        (None, [kind]) => *kind,
        (None, []) => {
            // Explain with the load error of every world.
            for kind in PolicyKind::ALL {
                if let Err(error) = sandbox.load(&bytes, kind) {
                    println!("{:<10} {error}", kind.as_str());
                }
            }
            bail!("{} implements no strata:policy world", file.display());
        }
        (None, several) => bail!("{} implements several worlds ({several:?}); pick one with --kind", file.display()),
    };
    let component = sandbox.load(&bytes, kind).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    println!("world      strata:policy/{}@0.1.0", kind.as_str());
    let limits = PolicyLimits::default();
    let call = CallContext { policy: "check", limits: &limits };
    match component.validate_config(call, config).map_err(|e| anyhow::anyhow!("validate-config {e}"))? {
        Ok(()) => println!("config     {config} is valid"),
        Err(problems) => {
            println!("config     {config} is rejected:");
            for problem in &problems {
                println!("           - {problem}");
            }
            bail!("the component rejected the config");
        }
    }
    Ok(())
}

/// The source each kind's scaffold starts from.
fn template(kind: PolicyKind) -> (&'static str, &'static str) {
    match kind {
        PolicyKind::Retention => ("template", include_str!("../../../plugins/template/src/lib.rs")),
        PolicyKind::Tiering => ("tier-by-age", include_str!("../../../plugins/tier-by-age/src/lib.rs")),
        PolicyKind::Archival => ("archive-after", include_str!("../../../plugins/archive-after/src/lib.rs")),
        PolicyKind::Partitioner => {
            ("partition-by-field", include_str!("../../../plugins/partition-by-field/src/lib.rs"))
        }
    }
}

const CARGO_TEMPLATE: &str = include_str!("../../../plugins/template/Cargo.toml");

fn scaffold(name: &str, kind: &str, dir: &Path) -> anyhow::Result<()> {
    let kind = parse_kind(kind)?;
    check_policy_name(name).map_err(|e| anyhow::anyhow!("plugin name: {e}"))?;
    let workspace = dir.join("Cargo.toml");
    if !workspace.is_file() {
        bail!(
            "{} is not the plugins workspace (no Cargo.toml); run from the repository root or pass --dir",
            dir.display()
        );
    }
    let package = dir.join(name);
    if package.exists() {
        bail!("{} already exists", package.display());
    }
    let (origin, source) = template(kind);
    let cargo = CARGO_TEMPLATE.replacen("name = \"template\"", &format!("name = \"{name}\""), 1).replacen(
        "description = \"A retention policy to copy when writing your own\"",
        &format!("description = \"A {} policy\"", kind.as_str()),
        1,
    );
    let source = format!("// Scaffolded by `strata policy new` from plugins/{origin}.\n{source}");
    std::fs::create_dir_all(package.join("src")).with_context(|| format!("cannot create {}", package.display()))?;
    std::fs::write(package.join("Cargo.toml"), cargo)?;
    std::fs::write(package.join("src/lib.rs"), source)?;

    let manifest = std::fs::read_to_string(&workspace)?;
    let added = add_workspace_member(&manifest, name);
    match &added {
        Some(updated) => std::fs::write(&workspace, updated)?,
        None => println!("add \"{name}\" to `members` in {} by hand", workspace.display()),
    }
    let artifact = name.replace('-', "_");
    println!("created {} ({} policy, from plugins/{origin})", package.display(), kind.as_str());
    println!();
    println!("next:");
    println!("  1. edit {}/src/lib.rs", package.display());
    println!("  2. cargo test --manifest-path {} --target x86_64-unknown-linux-gnu -p {name}", workspace.display());
    println!("     (cd {} && cargo build --release -p {name})", dir.display());
    println!("  3. strata policy check {}/target/wasm32-wasip2/release/{artifact}.wasm --config '{{}}'", dir.display());
    println!("  4. point a policy file at it, e.g. policies/{name}.toml:");
    println!();
    println!("     kind = \"{}\"", kind.as_str());
    println!("     plugin = \"../{}/target/wasm32-wasip2/release/{artifact}.wasm\"", dir.display());
    println!("     datasets = [\"*\"]");
    if kind != PolicyKind::Partitioner {
        println!("     schedule = \"every 1h\"");
    }
    println!("     [config]");
    Ok(())
}

/// Adds `name` to the `members` array of a workspace manifest; `None` when
/// the array cannot be found (or already lists it).
fn add_workspace_member(manifest: &str, name: &str) -> Option<String> {
    let members = manifest.find("members = [")?;
    let close = members + manifest[members..].find(']')?;
    if manifest[members..close].contains(&format!("\"{name}\"")) {
        return None;
    }
    Some(format!("{}    \"{name}\",\n{}", &manifest[..close], &manifest[close..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_appended_to_the_workspace() {
        let manifest = "[workspace]\nmembers = [\n    \"a\",\n]\nresolver = \"3\"\n";
        let updated = add_workspace_member(manifest, "mine").unwrap();
        assert_eq!(updated, "[workspace]\nmembers = [\n    \"a\",\n    \"mine\",\n]\nresolver = \"3\"\n");
        assert_eq!(add_workspace_member(&updated, "mine"), None);
        assert_eq!(add_workspace_member("[package]\n", "mine"), None);
    }
}
