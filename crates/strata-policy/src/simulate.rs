//! `simulate`: a candidate component run against a live server's
//! partitions of one dataset (`POST /v1/policies/{name}/simulate` with the
//! component as the body); nothing is changed on the server.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// `simulate --url URL --token TOKEN --policy NAME --dataset DS [--now TIME] COMPONENT`
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The candidate component (`.wasm`).
    pub file: PathBuf,
    /// The server, e.g. http://localhost:8086.
    #[arg(long, env = "STRATA_URL")]
    pub url: String,
    /// An admin token.
    #[arg(long, env = "STRATA_TOKEN")]
    pub token: Option<String>,
    /// The installed policy the candidate would replace (its config, limits and bindings are used).
    #[arg(long)]
    pub policy: String,
    /// The dataset whose partitions it is run against.
    #[arg(long)]
    pub dataset: String,
    /// The evaluation time, RFC 3339 (default: the server's now).
    #[arg(long)]
    pub now: Option<String>,
    /// `text` (the plan, one line per partition) or `json` (the server's answer).
    #[arg(long, default_value = "text")]
    pub format: String,
}

pub(crate) fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let bytes = super::read_component(&args.file.to_string_lossy())?;
    let mut url = reqwest::Url::parse(args.url.trim_end_matches('/'))
        .with_context(|| format!("--url {:?} is not a URL like http://localhost:8086", args.url))?;
    url.path_segments_mut().map_err(|()| anyhow::anyhow!("--url {:?} cannot take a path", args.url))?.extend([
        "v1",
        "policies",
        &args.policy,
        "simulate",
    ]);
    url.query_pairs_mut().append_pair("dataset", &args.dataset);
    if let Some(now) = &args.now {
        url.query_pairs_mut().append_pair("now", now);
    }
    let client = reqwest::blocking::Client::builder().build().context("HTTP client")?;
    let mut request = client.post(url.clone()).header("content-type", "application/wasm").body(bytes);
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text().context("reading the answer")?;
    if !status.is_success() {
        bail!("the server answered {status}: {text}");
    }
    let answer: serde_json::Value = serde_json::from_str(&text).context("the server's answer is not JSON")?;
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!("{} on {} at {}", args.policy, args.dataset, answer["now"].as_str().unwrap_or(""));
    for entry in answer["plan"].as_array().into_iter().flatten() {
        let partition = entry["partition"].as_str().or(entry["partition_id"].as_str()).unwrap_or("");
        println!(
            "{partition:<32} {:<10} {}",
            entry["action"].as_str().unwrap_or(""),
            entry["reason"].as_str().unwrap_or("")
        );
    }
    let diff = answer["diff"].as_array().cloned().unwrap_or_default();
    println!("{} partition(s) change against the installed version", diff.len());
    for change in &diff {
        let outcome = |o: &serde_json::Value| match o["target"].as_str() {
            Some(target) => format!("{} {target}", o["action"].as_str().unwrap_or("")),
            None => o["action"].as_str().unwrap_or("").to_string(),
        };
        println!(
            "  {:<30} {} -> {}",
            change["partition"].as_str().unwrap_or(""),
            outcome(&change["before"]),
            outcome(&change["after"])
        );
    }
    Ok(())
}
