//! `check`: a component against the contract — its world, imports and
//! exports, and its `validate-config` on a config.

use anyhow::bail;
use strata_sandbox::sandbox::{CallContext, CompiledComponent, PolicyKind, PolicyLimits, Sandbox};

/// `check COMPONENT [--config JSON] [--kind KIND]`
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The component: a `.wasm` file, or `builtin:NAME`.
    pub file: String,
    /// The config to validate, as a JSON object (the policy file's `[config]` table).
    #[arg(long, default_value = "{}")]
    pub config: String,
    /// The kind it must implement (default: whichever it implements).
    #[arg(long)]
    pub kind: Option<String>,
}

pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let wanted = args.kind.as_deref().map(super::parse_kind).transpose()?;
    let bytes = super::read_component(&args.file)?;
    let sandbox = Sandbox::new(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = sandbox.inspect(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", args.file))?;
    println!("component  {}", args.file);
    println!("sha256     {}", report.sha256);
    println!(
        "imports    {}",
        if report.imports.is_empty() { "(none)".to_string() } else { report.imports.join("\n           ") }
    );
    println!("exports    {}", report.exports.join("\n           "));
    let (component, kind) = load(&sandbox, &bytes, &args.file, wanted, &report.worlds)?;
    println!("world      strata:policy/{}@0.1.0", kind.as_str());
    validate(&component, &args.config)?;
    println!("config     {} is valid", args.config);
    Ok(())
}

/// Loads a component as the kind asked for, or the one world it implements.
pub(crate) fn load(
    sandbox: &Sandbox,
    bytes: &[u8],
    name: &str,
    wanted: Option<PolicyKind>,
    worlds: &[PolicyKind],
) -> anyhow::Result<(CompiledComponent, PolicyKind)> {
    let kind = match (wanted, worlds) {
        (Some(kind), _) => kind,
        (None, [kind]) => *kind,
        (None, []) => {
            // Explain with the load error of every world.
            let mut why = Vec::new();
            for kind in PolicyKind::ALL {
                if let Err(error) = sandbox.load(bytes, kind) {
                    why.push(format!("  {:<11} {error}", kind.as_str()));
                }
            }
            bail!("{name} implements no strata:policy world:\n{}", why.join("\n"));
        }
        (None, several) => bail!("{name} implements several worlds ({several:?}); pick one with --kind"),
    };
    let component = sandbox.load(bytes, kind).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    Ok((component, kind))
}

/// Runs `validate-config`; every problem it reports is printed and fails.
pub(crate) fn validate(component: &CompiledComponent, config: &str) -> anyhow::Result<()> {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(config)
        .map_err(|e| anyhow::anyhow!("--config must be a JSON object, e.g. '{{\"max_age\": \"90d\"}}': {e}"))?;
    let limits = PolicyLimits::default();
    let call = CallContext { policy: "check", limits: &limits };
    match component.validate_config(call, config).map_err(|e| anyhow::anyhow!("validate-config {e}"))? {
        Ok(()) => Ok(()),
        Err(problems) => {
            println!("config     {config} is rejected:");
            for problem in &problems {
                println!("           - {problem}");
            }
            bail!("the component rejected the config ({} problem(s))", problems.len())
        }
    }
}
