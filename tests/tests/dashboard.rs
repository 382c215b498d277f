//! The Grafana dashboard for the agent's shipping health asks only for metrics that a real
//! agent serves, and is a dashboard Grafana can import (unique panel ids, every panel placed,
//! every query on the dashboard's Prometheus variable).

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use flink_injector_tests::agent::{flink_record, http_get, start_agent};
use flink_injector_tests::broker::Broker;
use flink_injector_tests::wait_for;
use serde_json::Value;

fn dashboard() -> Result<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/dashboards/flink-agent.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

/// Every metric name a PromQL expression mentions (identifiers starting with `flink_`).
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let re = regex::Regex::new(r"\bflink_[a-zA-Z0-9_]+").expect("static regex");
    for m in re.find_iter(expr) {
        out.insert(m.as_str().to_string());
    }
}

/// Sample names on /metrics: from the `# TYPE` lines, so that labelled families with no
/// sample yet count too (counters are sampled with a `_total` suffix).
fn served_names(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        let mut f = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (f.next(), f.next(), f.next(), f.next())
        {
            if kind == "counter" {
                names.insert(format!("{name}_total"));
            } else {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn dashboard_queries_only_metrics_the_agent_serves() -> Result<()> {
    let dash = dashboard()?;
    let mut wanted = BTreeSet::new();
    let panels = dash["panels"].as_array().context("panels")?;
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            metric_names(t["expr"].as_str().context("expr")?, &mut wanted);
        }
    }
    ensure!(
        wanted.len() >= 15,
        "too few metrics on the dashboard: {wanted:?}"
    );

    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let mut broker = Broker::start(work.path())?;
    let agent = start_agent(
        &log_dir,
        work.path(),
        &broker.bootstrap(),
        "dash",
        &["--kafka-property", "message.timeout.ms=1000"],
    )?;
    // Labelled families appear once they have a sample: a shipped file gives
    // unshipped_bytes{path}, a delivery that times out while Kafka is away gives
    // send_errors_total{stage,kind}.
    let log = log_dir.join("flink--taskmanager-0-dash.log");
    std::fs::write(&log, flink_record("dash", 1))?;
    wait_for("the first event", Duration::from_secs(20), || {
        Ok((agent.metric("flink_agent_events_sent_total")? >= 1.0).then_some(()))
    })?;
    broker.stop();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)?
        .write_all(flink_record("dash", 2).as_bytes())?;
    wait_for("a delivery timeout", Duration::from_secs(30), || {
        let (_, body) = http_get(agent.metrics_port, "/metrics")?;
        Ok(body
            .contains(r#"flink_agent_send_errors_total{stage="delivery",kind="MessageTimedOut"}"#)
            .then_some(()))
    })
    .with_context(|| agent.log_tail())?;
    let (code, body) = http_get(agent.metrics_port, "/metrics")?;
    ensure!(code == 200);
    let served = served_names(&body);
    let missing: Vec<&String> = wanted.difference(&served).collect();
    ensure!(
        missing.is_empty(),
        "the dashboard queries metrics the agent does not serve: {missing:?}\nserved: {served:?}"
    );
    Ok(())
}

#[test]
fn dashboard_is_importable() -> Result<()> {
    let dash = dashboard()?;
    ensure!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .context("templating")?
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    ensure!(vars.contains(&"datasource") && vars.contains(&"namespace"));
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().context("panels")? {
        let id = p["id"].as_u64().context("panel id")?;
        ensure!(ids.insert(id), "panel id {id} used twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().context("x")?, g["w"].as_u64().context("w")?);
        ensure!(x + w <= 24, "panel {id} is wider than the grid");
        for t in p["targets"].as_array().into_iter().flatten() {
            ensure!(
                t["datasource"]["uid"] == "${datasource}",
                "panel {id} bypasses the datasource variable"
            );
            let expr = t["expr"].as_str().context("expr")?;
            ensure!(
                expr.matches('(').count() == expr.matches(')').count(),
                "unbalanced parentheses in {expr}"
            );
        }
    }
    Ok(())
}
