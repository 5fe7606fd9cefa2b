//! The remote commands on the HTTP API: `strata datasets`, `partitions`,
//! `explain`, `query`, `sql`, `import`, `runs`, `audit` and `health`.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{Value as Json, json};

use super::client::{CliError, Client, Remote, encode, runtime};
use super::output::{self, ListFormat, column, print, print_json, table};

/// `--format` of `strata query` and `strata sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryFormat {
    /// An aligned text table.
    Table,
    /// `{"columns":[…],"rows":[…],"stats":{…}}`.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// An Arrow IPC stream (binary).
    Arrow,
}

/// The remote commands.
#[derive(Debug, clap::Subcommand)]
pub enum RemoteCommand {
    /// List the datasets with their rows and bytes.
    Datasets {
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// List a dataset's partitions (all pages of the listing).
    Partitions {
        /// The dataset.
        dataset: String,
        /// Only partitions in this tier.
        #[arg(long)]
        tier: Option<String>,
        /// At most this many partitions.
        #[arg(long)]
        limit: Option<usize>,
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Explain a partition: its policies, last decisions and files.
    Explain {
        /// The dataset.
        dataset: String,
        /// The partition, e.g. `2026-01-01` or `tenant-7/2026-01-01`.
        partition: String,
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table (an outline) or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// A structured query: a time range, downsampling and grouping.
    Query(QueryArgs),
    /// Read-only SQL over the datasets.
    Sql {
        /// The statement, e.g. `SELECT host, avg(usage) FROM cpu GROUP BY host`.
        sql: String,
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table, json, csv, ndjson or arrow.
        #[arg(long, value_enum, default_value = "table")]
        format: QueryFormat,
    },
    /// Import files (line protocol, CSV, NDJSON, Parquet) into a dataset.
    Import(super::import::ImportArgs),
    /// Lifecycle runs, newest first; with an id, one run and its decisions.
    Runs {
        /// A run id.
        id: Option<i64>,
        /// Only runs of this policy.
        #[arg(long)]
        policy: Option<String>,
        /// Only runs over this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// At most this many runs (1..=10000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// The audit log, oldest first.
    Audit {
        /// Only events of this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// Only events of this partition.
        #[arg(long)]
        partition: Option<String>,
        /// Only events of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only events at or after this time (RFC 3339 or epoch ns).
        #[arg(long)]
        since: Option<String>,
        /// At most this many events (1..=10000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// The server's health and the lifecycle's problems (exit 1 when unhealthy).
    Health {
        /// The server and token.
        #[command(flatten)]
        remote: Remote,
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
}

/// Arguments of `strata query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The dataset.
    pub dataset: String,
    /// Start of the range (RFC 3339 or epoch ns), inclusive.
    #[arg(long)]
    pub from: String,
    /// End of the range (RFC 3339 or epoch ns), exclusive.
    #[arg(long)]
    pub to: String,
    /// Downsample into buckets of this width, e.g. `1m`, `1h`.
    #[arg(long)]
    pub every: Option<String>,
    /// An aggregation `FN:COLUMN` (e.g. `avg:usage`, `max:usage`); repeatable.
    #[arg(long = "agg")]
    pub aggregations: Vec<String>,
    /// Group by these columns (repeatable, or comma-separated).
    #[arg(long = "group-by", value_delimiter = ',')]
    pub group_by: Vec<String>,
    /// Only these columns of raw rows (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Empty buckets: none, null or previous.
    #[arg(long)]
    pub fill: Option<String>,
    /// asc or desc.
    #[arg(long)]
    pub order: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<u64>,
    /// The server and token.
    #[command(flatten)]
    pub remote: Remote,
    /// table, json, csv, ndjson or arrow.
    #[arg(long, value_enum, default_value = "table")]
    pub format: QueryFormat,
}

/// Runs a remote command.
pub fn run(command: RemoteCommand) -> anyhow::Result<()> {
    if let RemoteCommand::Import(args) = command {
        return super::import::run(args);
    }
    runtime()?.block_on(dispatch(command))?;
    Ok(())
}

async fn dispatch(command: RemoteCommand) -> Result<(), CliError> {
    match command {
        RemoteCommand::Datasets { remote, format } => datasets(&Client::new(&remote)?, format).await,
        RemoteCommand::Partitions { dataset, tier, limit, remote, format } => {
            partitions(&Client::new(&remote)?, &dataset, tier.as_deref(), limit, format).await
        }
        RemoteCommand::Explain { dataset, partition, remote, format } => {
            let segments: Vec<String> = partition.split('/').map(encode).collect();
            let path = format!("/v1/datasets/{}/partitions/{}/explain", encode(&dataset), segments.join("/"));
            let answer = Client::new(&remote)?.get_json(&path).await?;
            show(&answer, format);
            Ok(())
        }
        RemoteCommand::Query(args) => {
            let client = Client::new(&args.remote)?;
            let body = query_body(&args)?;
            let path = format!("/v1/datasets/{}/query", encode(&args.dataset));
            run_query(&client, &path, body, args.format).await
        }
        RemoteCommand::Sql { sql, remote, format } => {
            run_query(&Client::new(&remote)?, "/v1/sql", json!({ "sql": sql }), format).await
        }
        RemoteCommand::Import(_) => unreachable!("handled by run"),
        RemoteCommand::Runs { id, policy, dataset, limit, remote, format } => {
            let client = Client::new(&remote)?;
            if let Some(id) = id {
                let run = client.get_json(&format!("/v1/lifecycle/runs/{id}")).await?;
                show(&run, format);
                return Ok(());
            }
            let query = query_string(&[("policy", policy), ("dataset", dataset), ("limit", Some(limit.to_string()))]);
            let answer = client.get_json(&format!("/v1/lifecycle/runs{query}")).await?;
            list(&answer, "runs", format, &RUN_COLUMNS);
            Ok(())
        }
        RemoteCommand::Audit { dataset, partition, kind, since, limit, remote, format } => {
            let query = query_string(&[
                ("dataset", dataset),
                ("partition", partition),
                ("kind", kind),
                ("since", since),
                ("limit", Some(limit.to_string())),
            ]);
            let answer = Client::new(&remote)?.get_json(&format!("/v1/audit{query}")).await?;
            list(&answer, "events", format, &AUDIT_COLUMNS);
            Ok(())
        }
        RemoteCommand::Health { remote, format } => health(&Client::new(&remote)?, format).await,
    }
}

const RUN_COLUMNS: [output::Column; 8] = [
    column("ID", "id"),
    column("POLICY", "policy"),
    column("DATASET", "dataset"),
    column("STATUS", "status"),
    column("STARTED", "started_at"),
    column("NOW", "now"),
    column("DECISIONS", "decisions"),
    column("ERROR", "error"),
];

const AUDIT_COLUMNS: [output::Column; 6] = [
    column("ID", "id"),
    column("AT_NS", "at_ns"),
    column("KIND", "kind"),
    column("DATASET", "dataset"),
    column("PARTITION", "partition"),
    column("ACTOR", "actor"),
];

/// `?a=1&b=2` from the parameters that are set (empty when none is).
pub fn query_string(params: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> =
        params.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v)))).collect();
    if set.is_empty() { String::new() } else { format!("?{}", set.join("&")) }
}

/// Prints `answer[key]` (an array of objects) as a table, or the answer as JSON.
pub fn list(answer: &Json, key: &str, format: ListFormat, columns: &[output::Column]) {
    match format {
        ListFormat::Json => print_json(answer),
        ListFormat::Table => {
            let items = answer[key].as_array().cloned().unwrap_or_default();
            print(&table(&items, columns));
        }
    }
}

/// Prints a single object as an indented outline, or as JSON.
pub fn show(answer: &Json, format: ListFormat) {
    match format {
        ListFormat::Json => print_json(answer),
        ListFormat::Table => print(&outline(answer, 0)),
    }
}

/// An object as `key: value` lines, nested objects and arrays indented.
pub fn outline(value: &Json, depth: usize) -> String {
    let indent = "  ".repeat(depth);
    let mut out = String::new();
    match value {
        Json::Object(map) => {
            for (key, value) in map {
                match value {
                    Json::Object(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{indent}{key}:\n{}", outline(value, depth + 1)))
                    }
                    Json::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                        out.push_str(&format!("{indent}{key}:\n"));
                        for item in items {
                            let inner = outline(item, depth + 2);
                            out.push_str(&format!("{indent}  -{}\n", &inner.trim_end()[(depth + 2) * 2 - 1..]));
                        }
                    }
                    scalar => out.push_str(&format!("{indent}{key}: {}\n", output::cell(scalar))),
                }
            }
        }
        scalar => out.push_str(&format!("{indent}{}\n", output::cell(scalar))),
    }
    out
}

async fn datasets(client: &Client, format: ListFormat) -> Result<(), CliError> {
    let answer = client.get_json("/v1/datasets").await?;
    let columns = [
        column("NAME", "name"),
        column("PERIOD", "period"),
        column("PARTITIONS", "partitions"),
        column("ROWS", "rows"),
        column("BUFFERED", "buffered_rows"),
        column("BYTES", "bytes"),
        column("CREATED", "created_at"),
    ];
    list(&answer, "datasets", format, &columns);
    Ok(())
}

/// Pages through `GET /v1/datasets/{ds}/partitions` while the server hands
/// out a `next_cursor` (a server without pagination answers everything at
/// once, without one).
async fn partitions(
    client: &Client,
    dataset: &str,
    tier: Option<&str>,
    limit: Option<usize>,
    format: ListFormat,
) -> Result<(), CliError> {
    let mut all: Vec<Json> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = limit.map(|l| l.saturating_sub(all.len()).clamp(1, 10_000).to_string());
        let query = query_string(&[("tier", tier.map(str::to_string)), ("limit", page), ("cursor", cursor.clone())]);
        let answer = client.get_json(&format!("/v1/datasets/{}/partitions{query}", encode(dataset))).await?;
        let items = answer["partitions"].as_array().cloned().unwrap_or_default();
        // A server that ignores `tier` still lists only what was asked for.
        all.extend(items.into_iter().filter(|p| tier.is_none_or(|t| p["tier"] == t)));
        cursor = answer["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() || limit.is_some_and(|l| all.len() >= l) {
            break;
        }
    }
    if let Some(limit) = limit {
        all.truncate(limit);
    }
    let answer = json!({ "dataset": dataset, "partitions": all });
    let columns = [
        column("ID", "id"),
        column("PERIOD_START", "period_start"),
        column("KEY", "key"),
        column("TIER", "tier"),
        column("READ_ONLY", "read_only"),
        column("ROWS", "rows"),
        column("BYTES", "bytes"),
        column("BUFFERED", "buffered_rows"),
    ];
    list(&answer, "partitions", format, &columns);
    Ok(())
}

/// A time bound as the API takes it: epoch nanoseconds as a number, else
/// the text (RFC 3339).
fn time_value(raw: &str) -> Json {
    raw.parse::<i64>().map(Json::from).unwrap_or_else(|_| Json::String(raw.to_string()))
}

/// The structured query body for `strata query`'s flags.
pub fn query_body(args: &QueryArgs) -> Result<Json, CliError> {
    let mut body = json!({ "time_range": { "start": time_value(&args.from), "end": time_value(&args.to) } });
    if !args.aggregations.is_empty() || args.every.is_some() {
        let mut aggregations = Vec::new();
        for raw in &args.aggregations {
            let (function, column) = raw
                .split_once(':')
                .filter(|(f, c)| !f.is_empty() && !c.is_empty())
                .ok_or_else(|| CliError::Usage(format!("--agg {raw:?} must be FN:COLUMN, e.g. avg:usage")))?;
            aggregations.push(json!({ "fn": function, "column": column, "alias": format!("{function}_{column}") }));
        }
        if aggregations.is_empty() {
            return Err(CliError::Usage("--every needs at least one --agg FN:COLUMN".into()));
        }
        let mut downsample = json!({ "aggregations": aggregations });
        if let Some(every) = &args.every {
            downsample["interval"] = json!(every);
        }
        if let Some(fill) = &args.fill {
            downsample["fill"] = json!(fill);
        }
        body["downsample"] = downsample;
    }
    if !args.group_by.is_empty() {
        body["group_by"] = json!(args.group_by);
    }
    if !args.columns.is_empty() {
        body["columns"] = json!(args.columns);
    }
    if let Some(order) = &args.order {
        body["order"] = json!(order);
    }
    if let Some(limit) = args.limit {
        body["limit"] = json!(limit);
    }
    Ok(body)
}

/// Runs a query: a table from its JSON answer, or the server's bytes in
/// the chosen format streamed to stdout.
async fn run_query(client: &Client, path: &str, mut body: Json, format: QueryFormat) -> Result<(), CliError> {
    let name = match format {
        QueryFormat::Table | QueryFormat::Json => "json",
        QueryFormat::Csv => "csv",
        QueryFormat::Ndjson => "ndjson",
        QueryFormat::Arrow => "arrow",
    };
    body["format"] = json!(name);
    let headers = [("content-type", "application/json")];
    let request = client.request(Method::POST, path, &headers, Bytes::from(body.to_string()))?;
    let response = client.stream(request).await?;
    if format == QueryFormat::Table {
        let bytes = response.into_body().collect().await.map_err(|e| CliError::Connection(e.to_string()))?;
        let answer: Json = serde_json::from_slice(&bytes.to_bytes())
            .map_err(|e| CliError::Local(format!("the server's answer is not JSON: {e}")))?;
        print(&query_table(&answer));
        return in_band_error(&answer);
    }
    let mut body = response.into_body();
    let mut stdout = std::io::stdout().lock();
    let mut tail: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CliError::Connection(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if std::io::Write::write_all(&mut stdout, &data).is_err() {
                return Ok(());
            }
            if format == QueryFormat::Json {
                tail = data.to_vec();
            }
        }
    }
    let _ = std::io::Write::flush(&mut stdout);
    // A JSON answer carries a failure after its rows in `"error"`.
    if format == QueryFormat::Json && tail.windows(8).any(|w| w == b"\"error\":") {
        return Err(CliError::Local("the query failed after some rows were sent (see \"error\" in the output)".into()));
    }
    Ok(())
}

/// The rows of a JSON query answer as a table, with the row count.
fn query_table(answer: &Json) -> String {
    let headings: Vec<String> = answer["columns"]
        .as_array()
        .map(|columns| columns.iter().map(|c| output::cell(&c["name"])).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = answer["rows"]
        .as_array()
        .map(|rows| rows.iter().map(|row| headings.iter().map(|h| output::cell(&row[h])).collect()).collect())
        .unwrap_or_default();
    let mut text = output::render(&headings, &rows);
    text.push_str(&format!("({} row{})\n", rows.len(), if rows.len() == 1 { "" } else { "s" }));
    text
}

fn in_band_error(answer: &Json) -> Result<(), CliError> {
    match (answer["error"]["code"].as_str(), answer["error"]["message"].as_str()) {
        (Some(code), Some(message)) => {
            Err(CliError::Server { status: 200, code: code.to_string(), message: message.to_string() })
        }
        _ => Ok(()),
    }
}

async fn health(client: &Client, format: ListFormat) -> Result<(), CliError> {
    client.call(Method::GET, "/health", &[], Bytes::new()).await?;
    let mut connection = client.connect().await?;
    let answer = connection.send(client.request(Method::GET, "/health/lifecycle", &[], Bytes::new())?).await?;
    // 503 carries the report of an unhealthy lifecycle; other errors are errors.
    let report = if answer.status == 503 && answer.json()["status"].is_string() {
        answer.json()
    } else {
        super::client::check(answer)?.json()
    };
    match format {
        ListFormat::Json => print_json(&report),
        ListFormat::Table => {
            let problems = report["problems"].as_array().cloned().unwrap_or_default();
            let mut text = format!("status  {}\n", output::cell(&report["status"]));
            if problems.is_empty() {
                text.push_str("no problems\n");
            }
            for problem in &problems {
                text.push_str(&format!("- {}", outline(problem, 1).trim_start()));
            }
            print(&text);
        }
    }
    if report["status"] == "unhealthy" {
        return Err(CliError::Server {
            status: 503,
            code: "unhealthy".into(),
            message: format!("{} problem(s)", report["problems"].as_array().map_or(0, Vec::len)),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> QueryArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: QueryArgs,
        }
        let mut argv = vec!["strata", "cpu", "--from", "2026-01-01T00:00:00Z", "--to", "1767312000000000000"];
        argv.extend_from_slice(extra);
        Wrapper::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn query_flags_build_the_structured_query() {
        let body = query_body(&args(&["--every", "1m", "--agg", "avg:usage", "--group-by", "host,region"])).unwrap();
        assert_eq!(
            body,
            json!({
                "time_range": {"start": "2026-01-01T00:00:00Z", "end": 1767312000000000000i64},
                "downsample": {"interval": "1m", "aggregations": [{"fn": "avg", "column": "usage", "alias": "avg_usage"}]},
                "group_by": ["host", "region"],
            })
        );
        assert!(matches!(query_body(&args(&["--agg", "avg"])), Err(CliError::Usage(_))));
        assert!(matches!(query_body(&args(&["--every", "1m"])), Err(CliError::Usage(_))));
        let raw = query_body(&args(&["--columns", "host,usage", "--limit", "5", "--order", "desc"])).unwrap();
        assert_eq!(raw["columns"], json!(["host", "usage"]));
        assert_eq!((raw["limit"].as_u64(), raw["order"].as_str()), (Some(5), Some("desc")));
    }

    #[test]
    fn outlines_nest_objects_and_lists() {
        let text = outline(&json!({"a": 1, "b": {"c": "x"}, "d": [{"e": 2, "f": 3}], "g": [1, 2]}), 0);
        assert_eq!(text, "a: 1\nb:\n  c: x\nd:\n  - e: 2\n    f: 3\ng: [1,2]\n");
    }
}
