//! `test`: a component evaluated against a facts fixture, offline, with
//! every decision and its reason printed (or as JSON).

use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Value, json};
use strata_sandbox::facts::{DatasetFacts, PartitionFacts};
use strata_sandbox::sandbox::{CallContext, CompiledComponent, PolicyKind, PolicyLimits, Sandbox};

use crate::fixture::{Fixture, rfc3339, time_ns};

/// `test COMPONENT --facts FILE [--now TIME] [--config JSON] [--format text|json]`
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The component: a `.wasm` file, or `builtin:NAME`.
    pub file: String,
    /// The facts fixture (JSON; see plugins/README.md, "Testing against facts").
    #[arg(long)]
    pub facts: PathBuf,
    /// The evaluation time, RFC 3339 or epoch ns (default: the fixture's `now`, else the current time).
    #[arg(long)]
    pub now: Option<String>,
    /// The config, a JSON object (default: the fixture's `config`, else `{}`).
    #[arg(long)]
    pub config: Option<String>,
    /// The kind to evaluate it as (default: whichever world it implements).
    #[arg(long)]
    pub kind: Option<String>,
    /// `text` (a table) or `json`.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Deadline per call in milliseconds (the server's default `deadline_ms` otherwise).
    #[arg(long)]
    pub deadline_ms: Option<u64>,
}

pub(crate) fn run(args: &TestArgs) -> anyhow::Result<()> {
    let json = match args.format.as_str() {
        "text" => false,
        "json" => true,
        other => anyhow::bail!("--format {other:?} must be text or json"),
    };
    let fixture = Fixture::read(&args.facts)?;
    let now_ns = match &args.now {
        Some(now) => {
            time_ns(&now.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(now.clone())), "--now")?
        }
        None => fixture.now_ns()?.unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)),
    };
    let config = args.config.clone().or_else(|| fixture.config()).unwrap_or_else(|| "{}".to_string());
    let bytes = super::read_component(&args.file)?;
    let sandbox = Sandbox::new(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = sandbox.inspect(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", args.file))?;
    let wanted = args.kind.as_deref().map(super::parse_kind).transpose()?;
    let (component, kind) = crate::check::load(&sandbox, &bytes, &args.file, wanted, &report.worlds)?;
    crate::check::validate(&component, &config)?;
    let mut limits = PolicyLimits::default();
    if let Some(deadline_ms) = args.deadline_ms {
        limits.deadline_ms = deadline_ms;
    }
    let answer = evaluate(&component, kind, &limits, now_ns, &config, &fixture)?;
    let answer = json!({
        "component": args.file,
        "sha256": report.sha256,
        "kind": kind.as_str(),
        "now": rfc3339(now_ns),
        "config": serde_json::from_str::<Value>(&config).unwrap_or(Value::Null),
        "decisions": answer,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_table(&answer);
    }
    Ok(())
}

/// The decisions as JSON objects, one per decision (or per record).
fn evaluate(
    component: &CompiledComponent,
    kind: PolicyKind,
    limits: &PolicyLimits,
    now_ns: i64,
    config: &str,
    fixture: &Fixture,
) -> anyhow::Result<Vec<Value>> {
    let call = CallContext { policy: "test", limits };
    let dataset: DatasetFacts = fixture.dataset();
    let partitions: Vec<PartitionFacts> = fixture.partitions()?;
    let failed = |e| anyhow::anyhow!("evaluate: {e}");
    let decisions = match kind {
        PolicyKind::Retention => component
            .evaluate_retention(call, now_ns, config, &dataset, &partitions)
            .map_err(failed)?
            .into_iter()
            .map(|d| json!({ "partition": d.partition_id, "action": d.action, "reason": d.reason }))
            .collect(),
        PolicyKind::Tiering => component
            .evaluate_tiering(call, now_ns, config, &dataset, &partitions)
            .map_err(failed)?
            .into_iter()
            .map(|d| json!({ "partition": d.partition_id, "action": d.target, "reason": d.reason }))
            .collect(),
        PolicyKind::Archival => component
            .evaluate_archival(call, now_ns, config, &dataset, &partitions)
            .map_err(failed)?
            .into_iter()
            .map(|d| {
                json!({ "partition": d.partition_id, "action": "archive", "reason": d.reason, "target": d.target,
                        "delete_source_after": d.delete_source_after, "compression_level": d.compression_level })
            })
            .collect(),
        PolicyKind::Partitioner => partition(component, call, config, fixture)?,
    };
    Ok(decisions)
}

fn partition(
    component: &CompiledComponent,
    call: CallContext<'_>,
    config: &str,
    fixture: &Fixture,
) -> anyhow::Result<Vec<Value>> {
    if !fixture.has_records() {
        anyhow::bail!("a partitioner is tested on `records`; the fixture has none");
    }
    let columns = component.partitioner_columns(call, config).map_err(|e| anyhow::anyhow!("columns: {e}"))?;
    let (batch, rows) = fixture.batch(&columns).context("the fixture's records")?;
    let keys = component.partition(call, config, &batch, rows).map_err(|e| anyhow::anyhow!("partition: {e}"))?;
    Ok(keys
        .into_iter()
        .enumerate()
        .map(|(row, key)| match key {
            Ok(key) => json!({ "record": row, "action": "key", "key": key, "reason": "" }),
            Err(message) => json!({ "record": row, "action": "reject", "reason": message }),
        })
        .collect())
}

fn print_table(answer: &Value) {
    println!(
        "{} ({} policy) at {}",
        answer["component"].as_str().unwrap_or(""),
        answer["kind"].as_str().unwrap_or(""),
        answer["now"].as_str().unwrap_or("")
    );
    let decisions = answer["decisions"].as_array().cloned().unwrap_or_default();
    if decisions.is_empty() {
        println!("no decisions (every partition left alone)");
    }
    for decision in &decisions {
        let subject = match decision.get("partition") {
            Some(partition) => partition.as_str().unwrap_or("").to_string(),
            None => format!("record {}", decision["record"]),
        };
        let action = match decision.get("key") {
            Some(key) => format!("key {key}"),
            None => decision["action"].as_str().unwrap_or("").to_string(),
        };
        println!("{subject:<32} {action:<10} {}", decision["reason"].as_str().unwrap_or(""));
    }
}
