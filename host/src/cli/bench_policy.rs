//! `strata bench policy`: the policy runtime's costs, measured in-process.
//!
//! - cold compile and cached load of every built-in component;
//! - swap latency: policy file written → new version serving, through the
//!   real watcher (debounce included), for a config edit and for a new build;
//! - a no-op evaluation (an empty partition list);
//! - a retention evaluation over 100,000 partitions, by the built-in and,
//!   with `--languages`, by the Python and JavaScript templates (scaffolded
//!   and built with the toolchains `.ci/policy-languages` installs);
//! - a partitioner call on a 5,000-record batch against the same logic in
//!   native Rust, and what the write path adds around it (the declared
//!   columns out of the parsed Arrow batch, the key checks, routing by key),
//!   next to parsing the same batch of line protocol for scale.
//!
//! Goals: cached load < 5 ms, swap < 100 ms, 100k-partition evaluation
//! < 50 ms, partitioner within 1.5× of native.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::catalog::Catalog;
use crate::facts::{ColumnBatch, ColumnValues, DatasetFacts, PartitionFacts};
use crate::ingest::batch::{BatchBuilder, ParsedBatch};
use crate::ingest::{IngestLimits, Precision, line_protocol, route};
use crate::period::Period;
use crate::policy::builtins;
use crate::policy::watcher::PolicyWatcher;
use crate::policy::{PolicyRuntime, PolicySettings, partitioner_input};
use crate::sandbox::{CallContext, CompiledComponent, PolicyKind, PolicyLimits, Sandbox};
use crate::schema::{ColumnKind, DatasetSchema};
use crate::tier::Tier;

/// Arguments of `strata bench policy`.
#[derive(Debug, clap::Args)]
pub struct PolicyBenchArgs {
    /// Repetitions of each timed step (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub repetitions: usize,
    /// Partitions in the retention evaluation.
    #[arg(long, default_value_t = 100_000)]
    pub partitions: usize,
    /// Records in the partitioner batch.
    #[arg(long, default_value_t = 5_000)]
    pub rows: usize,
    /// Run only one part: compile, swap, evaluations or partitioner.
    #[arg(long)]
    pub only: Option<String>,
    /// Also evaluate the Python and JavaScript retention templates, built
    /// with componentize-py and componentize-js (found on PATH or where
    /// `.ci/policy-languages` installs them).
    #[arg(long)]
    pub languages: bool,
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn max(samples: &[Duration]) -> Duration {
    samples.iter().copied().max().unwrap_or_default()
}

fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1_000.0)
}

fn time<T>(repetitions: usize, mut body: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<Vec<Duration>> {
    (0..repetitions.max(1))
        .map(|_| {
            let started = Instant::now();
            body()?;
            Ok(started.elapsed())
        })
        .collect()
}

/// Runs the benchmark and prints a report.
pub fn run(args: PolicyBenchArgs) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("strata-bench-policy-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let outcome = run_in(&root, &args);
    let _ = std::fs::remove_dir_all(&root);
    outcome
}

fn run_in(root: &Path, args: &PolicyBenchArgs) -> anyhow::Result<()> {
    println!(
        "strata bench policy ({} build, {} repetitions)",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        args.repetitions
    );
    let wanted = |part: &str| args.only.as_deref().is_none_or(|only| only == part);
    if let Some(only) = args.only.as_deref()
        && !["compile", "swap", "evaluations", "partitioner"].contains(&only)
    {
        bail!("--only {only:?} must be compile, swap, evaluations or partitioner");
    }
    if wanted("compile") {
        compile_and_load(root, args)?;
    }
    if wanted("swap") {
        swap_latency(root, args)?;
    }
    if wanted("evaluations") {
        evaluations(root, args)?;
    }
    if wanted("partitioner") {
        partitioner(root, args)?;
    }
    Ok(())
}

fn compile_and_load(root: &Path, args: &PolicyBenchArgs) -> anyhow::Result<()> {
    println!("\ncompile (Cranelift, cold cache) and cached load (disk cache → InstancePre), per built-in:");
    for name in builtins::names() {
        let bytes = builtins::component(name).context("built-in")?;
        let kind = Sandbox::new(None)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .inspect(bytes)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .worlds
            .first()
            .copied()
            .context("a built-in implements a world")?;
        let cache = root.join(format!("cache-{name}"));
        let sandbox = Sandbox::new(Some(cache)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let started = Instant::now();
        sandbox.load(bytes, kind).map_err(|e| anyhow::anyhow!("{e}"))?;
        let cold = started.elapsed();
        let cached = time(args.repetitions, || sandbox.load(bytes, kind).map_err(|e| anyhow::anyhow!("{e}")))?;
        println!(
            "  {name:<30} {:>7} KiB   cold {:>12}   cached {:>10} (max {})",
            bytes.len() / 1024,
            ms(cold),
            ms(median(cached.clone())),
            ms(max(&cached))
        );
    }
    Ok(())
}

fn retention_file(plugin: &str, max_age: &str) -> String {
    format!(
        "kind = \"retention\"\nplugin = \"{plugin}\"\ndatasets = [\"*\"]\n[limits]\ndeadline_ms = 10000\n[config]\nmax_age = \"{max_age}\"\n"
    )
}

/// A built-in with a custom section appended: the same code, a new sha256.
fn rebuilt(bytes: &[u8], nonce: u32) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let name = b"strata-bench-nonce";
    let mut content = vec![name.len() as u8];
    content.extend_from_slice(name);
    content.extend_from_slice(&nonce.to_le_bytes());
    out.push(0);
    out.push(content.len() as u8);
    out.extend(content);
    out
}

fn swap_latency(root: &Path, args: &PolicyBenchArgs) -> anyhow::Result<()> {
    let policies = root.join("policies");
    std::fs::create_dir_all(&policies)?;
    let builtin = builtins::component("retention-by-age").context("built-in")?;
    std::fs::write(policies.join("swap.wasm"), rebuilt(builtin, 0))?;
    std::fs::write(policies.join("swap.toml"), retention_file("swap.wasm", "1d"))?;
    let catalog = Arc::new(Catalog::open(&root.join("catalog.sqlite"))?);
    let debounce = Duration::from_millis(50);
    let settings = PolicySettings {
        directory: Some(policies.clone()),
        cache_dir: root.join("swap-cache"),
        debounce,
        limits: (&crate::config::PoliciesConfig::default()).into(),
    };
    let runtime = Arc::new(PolicyRuntime::open(settings, catalog)?);
    let watcher = PolicyWatcher::start(runtime.clone())?;
    /// The active version's (sequence number, component sha256).
    type Serving = (Option<i64>, Option<String>);
    let serving = |runtime: &PolicyRuntime| -> anyhow::Result<Serving> {
        let detail = runtime.detail("swap")?;
        Ok((detail.summary.active_seq, detail.summary.component_sha256))
    };
    let wait_for = |check: &dyn Fn(&Serving) -> bool| -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if check(&serving(&runtime)?) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the new version never became active");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    };

    let mut config_edits = Vec::new();
    for round in 0..args.repetitions {
        let before = serving(&runtime)?.0;
        std::fs::write(policies.join("swap.toml"), retention_file("swap.wasm", &format!("{}d", round + 2)))?;
        config_edits.push(wait_for(&|now| now.0.is_some() && now.0 != before)?);
    }
    let mut new_builds = Vec::new();
    for round in 1..=args.repetitions.min(5) as u32 {
        let bytes = rebuilt(builtin, round);
        let sha = crate::digest::sha256_hex(&bytes);
        std::fs::write(policies.join("swap.wasm"), &bytes)?;
        new_builds.push(wait_for(&|now| now.1.as_deref() == Some(sha.as_str()))?);
    }
    let started = Instant::now();
    runtime.reload();
    let explicit_reload = started.elapsed();
    drop(watcher);
    println!(
        "\nswap latency, file written → new version serving (watcher debounce {} ms included):",
        debounce.as_millis()
    );
    println!(
        "  config edit, cached component      median {:>10}   max {}",
        ms(median(config_edits.clone())),
        ms(max(&config_edits))
    );
    println!(
        "  new component build (Cranelift)    median {:>10}   max {}",
        ms(median(new_builds.clone())),
        ms(max(&new_builds))
    );
    println!("  POST /v1/policies/reload, nothing changed: {}", ms(explicit_reload));
    Ok(())
}

fn partitions(count: usize, now_ns: i64) -> Vec<PartitionFacts> {
    const HOUR_NS: i64 = 3_600 * 1_000_000_000;
    (0..count)
        .map(|i| {
            let end = now_ns - (i as i64) * HOUR_NS;
            PartitionFacts {
                id: format!("cpu/h{i}/tenant-{}", i % 100),
                dataset: "cpu".into(),
                period_label: format!("h{i}"),
                period_start_ns: end - HOUR_NS,
                period_end_ns: end,
                key: format!("tenant-{}", i % 100),
                tier: Tier::Hot,
                read_only: false,
                rows: 1_000,
                bytes: 100_000,
                min_time_ns: Some(end - HOUR_NS),
                max_time_ns: Some(end - 1),
                created_at_ns: end - HOUR_NS,
                last_written_at_ns: end,
                file_count: 1,
                archived: false,
            }
        })
        .collect()
}

fn evaluations(root: &Path, args: &PolicyBenchArgs) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(Some(root.join("eval-cache"))).map_err(|e| anyhow::anyhow!("{e}"))?;
    let component = sandbox
        .load(builtins::component("retention-by-age").context("built-in")?, PolicyKind::Retention)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let limits = PolicyLimits { deadline_ms: 60_000, ..PolicyLimits::default() };
    let call = CallContext { policy: "bench", limits: &limits };
    let config = r#"{"max_age": "400d"}"#;
    let dataset = DatasetFacts {
        name: "cpu".into(),
        period: "hour".into(),
        time_column: "time".into(),
        columns: vec![("time".into(), ColumnKind::Time)],
    };
    let now_ns = 1_800_000_000_000_000_000;
    let noop = time(args.repetitions * 10, || {
        component.evaluate_retention(call, now_ns, config, &dataset, &[]).map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    println!("\nevaluations (fresh Store + instantiate + call each time):");
    println!(
        "  no-op (empty partition list)               median {:>10}   max {}",
        ms(median(noop.clone())),
        ms(max(&noop))
    );
    let facts = partitions(args.partitions, now_ns);
    let large = Large { call, now_ns, config, dataset: &dataset, facts: &facts, repetitions: args.repetitions.min(10) };
    large.time("retention-by-age", &component)?;
    let checked = time(large.repetitions, || {
        let decisions = crate::policy::plan::Decisions::Retention(
            component.evaluate_retention(call, now_ns, config, &dataset, &facts).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        crate::policy::plan::check_decisions(&decisions, &facts).map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    println!("    … plus the host's contract checks         median {:>10}", ms(median(checked)));
    if args.languages {
        for lang in ["python", "js"] {
            let bytes = build_template(root, lang)?;
            let component = sandbox.load(&bytes, PolicyKind::Retention).map_err(|e| anyhow::anyhow!("{lang}: {e}"))?;
            large.time(&format!("{lang} template ({} KiB)", bytes.len() / 1024), &component)?;
        }
        println!("    (the default deadline_ms is {})", PolicyLimits::default().deadline_ms);
    }
    Ok(())
}

/// A retention evaluation over many partitions, the same for every component.
struct Large<'a> {
    call: CallContext<'a>,
    now_ns: i64,
    config: &'a str,
    dataset: &'a DatasetFacts,
    facts: &'a [PartitionFacts],
    repetitions: usize,
}

impl Large<'_> {
    /// Times `component` and prints its median, max and number of deletes.
    fn time(&self, label: &str, component: &CompiledComponent) -> anyhow::Result<()> {
        let mut deleted = 0;
        let samples = time(self.repetitions, || {
            let decisions = component
                .evaluate_retention(self.call, self.now_ns, self.config, self.dataset, self.facts)
                .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
            deleted = decisions.iter().filter(|d| d.action == crate::facts::RetentionAction::Delete).count();
            Ok(())
        })?;
        println!(
            "  {label}, {} partitions   median {:>10}   max {}   ({deleted} deletes)",
            self.facts.len(),
            ms(median(samples.clone())),
            ms(max(&samples))
        );
        Ok(())
    }
}

/// Scaffolds the `lang` retention template with `strata policy new` and
/// runs its printed build step; the toolchain is looked up on PATH, then
/// where `.ci/policy-languages` installs it.
fn build_template(root: &Path, lang: &str) -> anyhow::Result<Vec<u8>> {
    let name = format!("bench-{lang}");
    let dir = root.join("templates");
    std::fs::create_dir_all(&dir)?;
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["policy", "new", &name, "--kind", "retention", "--lang", lang, "--dir"])
        .arg(&dir)
        .output()?;
    if !output.status.success() {
        bail!("strata policy new --lang {lang}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let commands = strata_policy::printed_commands(&String::from_utf8_lossy(&output.stdout));
    let build = commands.get(1).context("the scaffold prints a build step")?;
    let home = std::env::var("HOME").unwrap_or_default();
    let path = format!(
        "{}:{home}/.cache/strata-componentize-venv/bin:{home}/.cache/strata-componentize-js/node_modules/.bin",
        std::env::var("PATH").unwrap_or_default()
    );
    let project = dir.join(&name);
    let started = Instant::now();
    let built =
        std::process::Command::new("sh").args(["-c", build]).current_dir(&project).env("PATH", path).output()?;
    if !built.status.success() {
        bail!("`{build}` failed (run .ci/policy-languages):\n{}", String::from_utf8_lossy(&built.stderr));
    }
    println!("  ({lang} template built in {:.1} s: {build})", started.elapsed().as_secs_f64());
    Ok(std::fs::read(project.join(format!("{name}.wasm")))?)
}

/// The same logic as the `partition-by-hash` built-in, natively.
fn native_partition_by_hash(
    columns: &[ColumnBatch],
    fields: &[&str],
    buckets: u64,
    rows: usize,
) -> Vec<Result<String, String>> {
    let find = |name: &str| columns.iter().find(|c| c.name == name).map(|c| &c.values);
    let values: Vec<Option<&ColumnValues>> = fields.iter().map(|name| find(name)).collect();
    let width = (buckets - 1).to_string().len();
    let mut bytes = Vec::new();
    (0..rows)
        .map(|row| {
            bytes.clear();
            for (index, column) in values.iter().enumerate() {
                if index > 0 {
                    bytes.push(0x1f);
                }
                if let Some(ColumnValues::Text(texts)) = column
                    && let Some(text) = texts[row].clone()
                {
                    bytes.extend_from_slice(text.as_bytes());
                }
            }
            let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
                (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            Ok(format!("b{:0width$}", hash % buckets))
        })
        .collect()
}

/// The `partition-by-hash` configuration every partitioner measurement uses.
const PARTITION_CONFIG: &str = r#"{"fields": ["host"], "buckets": 16}"#;

fn partitioner(root: &Path, args: &PolicyBenchArgs) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(Some(root.join("partition-cache"))).map_err(|e| anyhow::anyhow!("{e}"))?;
    let component = sandbox
        .load(builtins::component("partition-by-hash").context("built-in")?, PolicyKind::Partitioner)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let limits = PolicyLimits::default();
    let call = CallContext { policy: "bench", limits: &limits };
    partitioner_against_native(&component, call, args)?;
    partitioner_on_the_write_path(&component, call, args)
}

/// One call of the component against the same logic in native Rust, after
/// checking that both give the same keys.
fn partitioner_against_native(
    component: &CompiledComponent,
    call: CallContext<'_>,
    args: &PolicyBenchArgs,
) -> anyhow::Result<()> {
    let config = PARTITION_CONFIG;
    let hosts = ColumnBatch {
        name: "host".into(),
        values: ColumnValues::Text((0..args.rows).map(|i| Some(format!("host_{}", i % 100))).collect()),
    };
    let columns = [hosts];
    let rows = args.rows;
    let expected = native_partition_by_hash(&columns, &["host"], 16, rows);
    let wasm_keys = component.partition(call, config, &columns, rows as u32).map_err(|e| anyhow::anyhow!("{e}"))?;
    if wasm_keys != expected {
        bail!("the native port of partition-by-hash disagrees with the component");
    }
    let repetitions = args.repetitions * 5;
    let wasm = time(repetitions, || {
        let keys = component.partition(call, config, &columns, rows as u32).map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::policy::plan::check_keys(&keys, rows).map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    let native =
        time(repetitions, || Ok(std::hint::black_box(native_partition_by_hash(&columns, &["host"], 16, rows))))?;
    let (wasm, native) = (median(wasm), median(native));
    println!("\npartitioner, partition-by-hash on a {rows}-record batch (one call):");
    println!("  component (Store + instantiate + lower + call + lift + checks)  median {:>10}", ms(wasm));
    println!("  native Rust, same logic                                        median {:>10}", ms(native));
    println!("  ratio {:.2}×", wasm.as_secs_f64() / native.as_secs_f64().max(1e-9));
    Ok(())
}

/// The same call as the write path makes it, from a parsed request, with
/// routing by its keys, next to parsing the request for scale.
fn partitioner_on_the_write_path(
    component: &CompiledComponent,
    call: CallContext<'_>,
    args: &PolicyBenchArgs,
) -> anyhow::Result<()> {
    let (rows, repetitions) = (args.rows, args.repetitions * 5);
    let schema = DatasetSchema::empty("time");
    let limits_ingest = IngestLimits::default();
    let body: String = (0..rows)
        .map(|i| format!("cpu,host=host_{} usage={}.5 {}\n", i % 100, i % 97, 1_768_471_200_000_000_000i64 + i as i64))
        .collect();
    let parse = || -> anyhow::Result<ParsedBatch> {
        let mut builder = BatchBuilder::with_capacity(&schema, 1_000, rows);
        line_protocol::parse(body.as_bytes(), Precision::Nanoseconds, 0, &limits_ingest, &mut builder)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(builder.finish())
    };
    let parsed = parse()?;
    let wanted = ["host".to_string()];
    let keys_of = |parsed: &ParsedBatch| -> anyhow::Result<Vec<String>> {
        let columns = partitioner_input(parsed, "time", &wanted);
        let keys =
            component.partition(call, PARTITION_CONFIG, &columns, rows as u32).map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::policy::plan::check_keys(&keys, rows).map_err(|e| anyhow::anyhow!("{e}"))?;
        keys.into_iter().map(|key| key.map_err(|e| anyhow::anyhow!("{e}"))).collect()
    };
    let keys = keys_of(&parsed)?;
    let write_path = time(repetitions, || keys_of(&parsed))?;
    let evolved = schema.evolve(&parsed.columns).map_err(|e| anyhow::anyhow!("{e}"))?.unwrap_or(schema.clone());
    // Routing consumes the batch; a copy of it (Arc'd arrays) is cheap.
    let copy = |parsed: &ParsedBatch| ParsedBatch {
        times: parsed.times.clone(),
        columns: parsed.columns.clone(),
        arrays: parsed.arrays.clone(),
        record_numbers: parsed.record_numbers.clone(),
    };
    let route_keyed =
        time(repetitions, || Ok(std::hint::black_box(route(copy(&parsed), &evolved, Period::Day, Some(&keys)))))?;
    let route_unkeyed =
        time(repetitions, || Ok(std::hint::black_box(route(copy(&parsed), &evolved, Period::Day, None))))?;
    let parsing = time(repetitions, || Ok(std::hint::black_box(parse()?)))?;
    let (write_path, parsing) = (median(write_path), median(parsing));
    let (route_keyed, route_unkeyed) = (median(route_keyed), median(route_unkeyed));
    println!("\nthe write path's partitioner cost for one {rows}-line request:");
    println!("  declared columns from Arrow + call + key checks               median {:>10}", ms(write_path));
    println!("  routing into 16 keyed partitions                               median {:>10}", ms(route_keyed));
    println!("  routing into one unkeyed partition                             median {:>10}", ms(route_unkeyed));
    println!("  for scale: parsing the {rows} lines of line protocol             median {:>10}", ms(parsing));
    Ok(())
}
