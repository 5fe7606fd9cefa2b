//! `strata policy list|show|versions|reload|run|rollback|simulate`: the
//! installed policies, through the admin API.

use std::path::PathBuf;

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value as Json, json};

use super::client::{CliError, Client, Remote, encode, runtime};
use super::output::{ListFormat, column, print, print_json, table};
use super::remote::{list, query_string, show};

/// The server-side policy commands.
#[derive(Debug, clap::Subcommand)]
pub enum ServerPolicyCommand {
    /// The installed policies: status, active version, counters.
    List {
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// One policy: its active version, limits, config and errors.
    Show {
        /// The policy.
        name: String,
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table (an outline) or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// A policy's versions, newest first.
    Versions {
        /// The policy.
        name: String,
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Reload the policy directory.
    Reload {
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table (an outline) or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Run a policy now.
    Run {
        /// The policy.
        name: String,
        /// Only this dataset (default: every dataset it binds).
        #[arg(long)]
        dataset: Option<String>,
        /// Decide and judge, execute nothing.
        #[arg(long)]
        dry: bool,
        /// The `now` the policy sees (RFC 3339 or epoch ns).
        #[arg(long)]
        now: Option<String>,
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Return a policy to an earlier version (default: the previous good one).
    Rollback {
        /// The policy.
        name: String,
        /// The version's sequence number.
        #[arg(long)]
        version: Option<i64>,
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// What a policy would decide for a dataset at a given `now`, and how
    /// that differs from the active version; changes nothing.
    Simulate {
        /// The policy.
        name: String,
        /// The dataset.
        #[arg(long)]
        dataset: String,
        /// The `now` it sees (RFC 3339 or epoch ns; default: the server's clock).
        #[arg(long)]
        now: Option<String>,
        /// An installed version (sequence number or sha256 prefix; default: the active one).
        #[arg(long, conflicts_with = "candidate")]
        version: Option<String>,
        /// A candidate component (`.wasm`) to evaluate with the policy's settings.
        #[arg(long)]
        candidate: Option<PathBuf>,
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
}

/// Runs a server-side policy command.
pub fn run(command: ServerPolicyCommand) -> anyhow::Result<()> {
    runtime()?.block_on(dispatch(command))?;
    Ok(())
}

fn policy_path(name: &str, verb: &str) -> String {
    match verb {
        "" => format!("/v1/policies/{}", encode(name)),
        verb => format!("/v1/policies/{}/{verb}", encode(name)),
    }
}

async fn dispatch(command: ServerPolicyCommand) -> Result<(), CliError> {
    match command {
        ServerPolicyCommand::List { remote, format } => {
            let answer = Client::new(&remote)?.get_json("/v1/policies").await?;
            print_list(&answer, format);
            Ok(())
        }
        ServerPolicyCommand::Show { name, remote, format } => {
            let mut answer = Client::new(&remote)?.get_json(&policy_path(&name, "")).await?;
            if format == ListFormat::Table
                && let Some(object) = answer.as_object_mut()
            {
                // `strata policy versions` lists them.
                object.remove("versions");
            }
            show(&answer, format);
            Ok(())
        }
        ServerPolicyCommand::Versions { name, remote, format } => {
            let answer = Client::new(&remote)?.get_json(&policy_path(&name, "")).await?;
            let columns = [
                column("SEQ", "seq"),
                column("STATUS", "status"),
                column("SHA256", "component_sha256"),
                column("SOURCE", "source"),
                column("LOADED", "loaded_at"),
                column("ACTIVATED", "activated_at"),
                column("ERROR", "last_error"),
            ];
            list(&answer, "versions", format, &columns);
            Ok(())
        }
        ServerPolicyCommand::Reload { remote, format } => {
            let answer = Client::new(&remote)?.post_json("/v1/policies/reload", &json!({})).await?;
            show(&answer, format);
            Ok(())
        }
        ServerPolicyCommand::Run { name, dataset, dry, now, remote, format } => {
            let mut body = json!({ "dry": dry });
            if let Some(dataset) = dataset {
                body["dataset"] = json!(dataset);
            }
            if let Some(now) = now {
                body["now"] = time_value(&now);
            }
            let answer = Client::new(&remote)?.post_json(&policy_path(&name, "run"), &body).await?;
            print_runs(&answer, format);
            Ok(())
        }
        ServerPolicyCommand::Rollback { name, version, remote, format } => {
            let body = version.map_or_else(|| json!({}), |v| json!({ "version": v }));
            let answer = Client::new(&remote)?.post_json(&policy_path(&name, "rollback"), &body).await?;
            match format {
                ListFormat::Json => print_json(&answer),
                ListFormat::Table => print(&format!(
                    "{}: rolled back from version {} to version {}\n",
                    name,
                    super::output::cell(&answer["from"]),
                    super::output::cell(&answer["to"])
                )),
            }
            Ok(())
        }
        ServerPolicyCommand::Simulate { name, dataset, now, version, candidate, remote, format } => {
            let client = Client::new(&remote)?;
            let answer = simulate(&client, &name, &dataset, now, version, candidate).await?;
            print_simulation(&answer, format);
            Ok(())
        }
    }
}

fn time_value(raw: &str) -> Json {
    raw.parse::<i64>().map(Json::from).unwrap_or_else(|_| Json::String(raw.to_string()))
}

async fn simulate(
    client: &Client,
    name: &str,
    dataset: &str,
    now: Option<String>,
    version: Option<String>,
    candidate: Option<PathBuf>,
) -> Result<Json, CliError> {
    if let Some(file) = candidate {
        let bytes = std::fs::read(&file).map_err(|e| CliError::Local(format!("{}: {e}", file.display())))?;
        let query = query_string(&[("dataset", Some(dataset.to_string())), ("now", now)]);
        let path = format!("{}{query}", policy_path(name, "simulate"));
        let headers = [("content-type", "application/wasm")];
        return Ok(client.call(Method::POST, &path, &headers, Bytes::from(bytes)).await?.json());
    }
    let mut body = json!({ "dataset": dataset });
    if let Some(now) = now {
        body["now"] = time_value(&now);
    }
    if let Some(version) = version {
        body["version"] = time_value(&version);
    }
    client.post_json(&policy_path(name, "simulate"), &body).await
}

fn print_list(answer: &Json, format: ListFormat) {
    if format == ListFormat::Json {
        return print_json(answer);
    }
    let columns = [
        column("NAME", "name"),
        column("KIND", "kind"),
        column("STATUS", "status"),
        column("ACTIVE", "active_seq"),
        column("DATASETS", "datasets"),
        column("SCHEDULE", "schedule"),
        column("CALLS", "invocations"),
        column("FAILURES", "failures"),
        column("LOAD_ERROR", "load_error/message"),
    ];
    let items = answer["policies"].as_array().cloned().unwrap_or_default();
    let mut text = table(&items, &columns);
    for error in answer["file_errors"].as_array().into_iter().flatten() {
        text.push_str(&format!("file error: {}\n", super::output::cell(error)));
    }
    print(&text);
}

fn print_runs(answer: &Json, format: ListFormat) {
    if format == ListFormat::Json {
        return print_json(answer);
    }
    let mut text = String::new();
    for run in answer["runs"].as_array().into_iter().flatten() {
        text.push_str(&super::remote::outline(run, 0));
        text.push('\n');
    }
    print(&text);
}

fn print_simulation(answer: &Json, format: ListFormat) {
    if format == ListFormat::Json {
        return print_json(answer);
    }
    let mut text = format!(
        "policy {} ({}) version {} on {} at {}\n",
        super::output::cell(&answer["policy"]),
        super::output::cell(&answer["kind"]),
        super::output::cell(&answer["version"]),
        super::output::cell(&answer["dataset"]),
        super::output::cell(&answer["now"]),
    );
    for (action, counts) in answer["summary"].as_object().into_iter().flatten() {
        text.push_str(&format!(
            "  {action}: {} partition(s), {} row(s), {} byte(s)\n",
            counts["partitions"], counts["rows"], counts["bytes"]
        ));
    }
    let plan = answer["plan"].as_array().cloned().unwrap_or_default();
    let columns = [
        column("PARTITION", "partition"),
        column("TIER", "tier"),
        column("ACTION", "action"),
        column("TARGET", "target"),
        column("ROWS", "rows"),
        column("BYTES", "bytes"),
        column("REASON", "reason"),
    ];
    text.push_str(&table(&plan, &columns));
    let diff = answer["diff"].as_array().cloned().unwrap_or_default();
    if !diff.is_empty() {
        text.push_str(&format!("differs from the active version on {} partition(s):\n", diff.len()));
        for change in &diff {
            text.push_str(&format!("  {}\n", change));
        }
    }
    print(&text);
}
