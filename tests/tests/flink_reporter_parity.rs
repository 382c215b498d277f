//! The agents as a drop-in for Flink's PrometheusReporter, checked by a REAL Prometheus (Debian's
//! `prometheus`) beside a REAL Flink 2.3 (JobManager + 2 TaskManagers) that runs a job of 21
//! vertices x 8 subtasks with long operator names, its own PrometheusReporter switched on:
//! * Prometheus scrapes the reporter on each Flink process and one agent per process in the role
//!   the webhook gives it (the JobManager pod's, each TaskManager pod's), and the two are compared
//!   family by family through Prometheus' HTTP API: names, label names and values, series counts;
//! * no series comes from two agents, and each TaskManager's agent exports only its own
//!   TaskManager's subtasks;
//! * every PromQL expression of the shipped Flink job dashboard has data in that Prometheus, and
//!   every other shipped expression (agent dashboard, alert rules) evaluates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use flink_agent::flink_rest::client::encode;
use flink_injector_tests::agent::{start_agent_beside, AgentProc};
use flink_injector_tests::flink::{http_get, reporter_label as sanitize, LocalFlink};
use flink_injector_tests::{free_port, wait_for, wait_for_port, workspace_root, ChildGuard};
use serde_json::Value;

/// A scrape target: (job, address, extra labels).
type Target<'a> = (&'a str, String, Vec<(&'a str, String)>);

struct Prometheus {
    _guard: ChildGuard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every 5 s: (job, address, extra labels).
    fn start(targets: &[Target]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut jobs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (job, addr, labels) in targets {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}: {}", serde_json::to_string(v).unwrap_or_default()))
                .collect();
            jobs.entry(job).or_default().push(format!(
                "      - targets: [\"{addr}\"]\n        labels: {{{}}}\n",
                labels.join(", ")
            ));
        }
        let mut config =
            String::from("global:\n  scrape_interval: 5s\n  scrape_timeout: 5s\nscrape_configs:\n");
        for (job, statics) in jobs {
            config.push_str(&format!("  - job_name: {job}\n    static_configs:\n"));
            for s in statics {
                config.push_str(&s);
            }
        }
        std::fs::write(dir.path().join("prometheus.yml"), &config)?;
        let port = free_port()?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log"))?);
        let guard = ChildGuard::spawn("prometheus", &mut cmd)
            .context("starting prometheus (Debian package prometheus)")?;
        wait_for_port(port, Duration::from_secs(60))?;
        Ok(Self {
            _guard: guard,
            port,
            _dir: dir,
        })
    }

    /// `GET /api/v1/query`: the instant vector's samples as (labels, value), or an error with
    /// Prometheus' own message for an expression it rejects.
    fn query(&self, expr: &str) -> Result<Vec<(BTreeMap<String, String>, String)>> {
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", encode(expr, false)),
        )?;
        let v: Value = serde_json::from_slice(&body).context("Prometheus answer")?;
        if status != 200 || v["status"] != "success" {
            bail!("{expr}: HTTP {status}: {}", v["error"]);
        }
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        Ok(result
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    labels,
                    s["value"][1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }
}

/// The port each Flink process' reporter announced (`Started PrometheusReporter HTTP server on
/// port N.`), one per log file.
fn reporter_ports(log_dir: &Path) -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    for f in flink_injector_tests::flink::log_files(log_dir)? {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if let Some(port) = text
            .lines()
            .filter_map(|l| l.split_once("Started PrometheusReporter HTTP server on port "))
            .filter_map(|(_, p)| p.trim().trim_end_matches('.').parse().ok())
            .next_back()
        {
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Latency tracking's histograms: key/value groups the reporter makes labels of.
const LATENCY: &str =
    "flink_taskmanager_job_task_latency_source_id_operator_id_operator_subtask_index_latency";

/// Labels that say where a series was scraped, not what it is.
const TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod", "expected_tm"];

type Families = BTreeMap<String, BTreeSet<BTreeMap<String, String>>>;

/// The series of a scrape job by family, with the label values the REST API cannot give exactly
/// reduced to what both sides have (see agent/src/flink_rest/mapping.rs).
fn families(prom: &Prometheus, job: &str) -> Result<Families> {
    let mut out = Families::new();
    for (mut labels, _) in prom.query(&format!("{{job=\"{job}\",__name__=~\"flink_.+\"}}"))? {
        let name = labels.remove("__name__").unwrap_or_default();
        for l in TARGET_LABELS {
            labels.remove(*l);
        }
        if let Some(v) = labels.get_mut("task_attempt_id") {
            // <execution graph id>_<vertex>_<subtask>_<attempt>: the first part is not in REST.
            let parts: Vec<&str> = v.rsplitn(4, '_').take(3).collect();
            *v = parts.join("_");
        }
        // A chained operator's id is a stand-in (only a chain's first operator has a known id);
        // latency histograms name every operator's real id and have no operator_name.
        if let (Some(op), Some(task), true) = (
            labels.get("operator_id"),
            labels.get("task_id"),
            labels.contains_key("operator_name"),
        ) {
            if op != task {
                labels.insert("operator_id".into(), "(chained)".into());
            }
        }
        out.entry(name).or_default().insert(labels);
    }
    Ok(out)
}

/// Differences that a team dropping the reporter would notice: families, series and label values
/// the reporter has and the agents do not, or the other way round (beyond the agent's own series
/// and the histogram statistics the REST API has in addition).
fn differences(reporter: &Families, agents: &Families) -> Vec<String> {
    let mut diffs = Vec::new();
    for (name, series) in reporter {
        // The REST API has every statistic of a histogram but its count.
        if name
            .strip_suffix("_count")
            .is_some_and(|b| reporter.contains_key(b))
        {
            continue;
        }
        let Some(ours) = agents.get(name) else {
            diffs.push(format!(
                "{name}: only the reporter has it ({} series)",
                series.len()
            ));
            continue;
        };
        let keys = |s: &BTreeSet<BTreeMap<String, String>>| -> BTreeSet<Vec<String>> {
            s.iter().map(|l| l.keys().cloned().collect()).collect()
        };
        if keys(series) != keys(ours) {
            diffs.push(format!(
                "{name}: label names {:?} vs the agents' {:?}",
                keys(series),
                keys(ours)
            ));
            continue;
        }
        let (only_reporter, only_agents) = (
            series.difference(ours).count(),
            ours.difference(series).count(),
        );
        if only_reporter + only_agents > 0 {
            diffs.push(format!(
                "{name}: {} series, the agents {}; {only_reporter} only the reporter's (e.g. {:?}), {only_agents} only the agents' (e.g. {:?})",
                series.len(),
                ours.len(),
                series.difference(ours).next(),
                ours.difference(series).next()
            ));
        }
    }
    let agent_own = [
        "flink_agent_",
        "flink_up",
        "flink_down_reason",
        "flink_scrape_",
        "flink_job_state",
    ];
    for name in agents.keys().filter(|n| !reporter.contains_key(*n)) {
        let own = agent_own.iter().any(|p| name.starts_with(p));
        let histogram_stat = ["_min", "_max", "_mean", "_stddev", "_p90"]
            .iter()
            .any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|b| reporter.contains_key(b))
            });
        if !own && !histogram_stat {
            diffs.push(format!("{name}: only the agents have it"));
        }
    }
    diffs
}

fn dashboard_exprs(file: &str) -> Result<Vec<String>> {
    let path = workspace_root().join("manifests/dashboards").join(file);
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.extend(t["expr"].as_str().map(str::to_string));
        }
    }
    // A variable's label_values(<selector>, label) asks for the selector's series.
    let re = regex::Regex::new(r"^label_values\((.+), *[a-z_]+\)$")?;
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(c) = v["query"].as_str().and_then(|q| re.captures(q)) {
            exprs.push(c[1].to_string());
        }
    }
    Ok(exprs)
}

/// Grafana's variables as a dashboard user with "All" selected has them.
fn grafana(expr: &str) -> String {
    expr.replace("$namespace", ".*")
        .replace("$job_name", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace("$__interval", "15s")
}

#[test]
fn the_agents_export_what_flinks_prometheus_reporter_does() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let base = free_port()?;
    let range = format!("{base}-{}", base + 40);
    let flink = LocalFlink::start_cluster(
        logs.path(),
        &[
            (
                "metrics.reporter.prom.factory.class",
                "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
            ),
            ("metrics.reporter.prom.port", &range),
            ("taskmanager.numberOfTaskSlots", "5"),
            // Off by default in Flink; on here because its histograms are key/value groups the
            // reporter turns into labels.
            ("metrics.latency.interval", "1000"),
        ],
        2,
    )?;
    // 21 vertices x 8 subtasks (the source, its watermark assigner, 18 maps, the sink), 4
    // subtasks of each on each TaskManager, plus the chained two-vertex job.
    let wide = flink.submit_job_with("wide", "parity-wide", &["8"])?;
    let healthy = flink.submit_job("healthy", "parity-healthy")?;
    flink.wait_job_state(&wide, "RUNNING", Duration::from_secs(180))?;
    flink.wait_job_state(&healthy, "RUNNING", Duration::from_secs(180))?;
    let tms = flink.taskmanager_ids()?;
    ensure!(tms.len() == 2, "TaskManagers: {tms:?}");
    let ports = wait_for("three reporters", Duration::from_secs(60), || {
        let p = reporter_ports(logs.path())?;
        Ok((p.len() == 3).then_some(p))
    })?;

    // The agents tail an empty directory: only their metrics matter here.
    let work = tempfile::tempdir()?;
    let empty = work.path().join("log");
    std::fs::create_dir(&empty)?;
    let start = |component, pod| start_agent_beside(&flink, &empty, work.path(), component, pod);
    let jm_agent = start("jobmanager", "parity-jobmanager")?;
    let tm_agents: Vec<(String, AgentProc)> = tms
        .iter()
        .map(|id| Ok((id.clone(), start("taskmanager", id)?)))
        .collect::<Result<_>>()?;
    let ns = || ("namespace", "e2e".to_string());
    let mut targets: Vec<Target> = ports
        .iter()
        .map(|p| ("reporter", format!("127.0.0.1:{p}"), vec![ns()]))
        .collect();
    targets.push((
        "agent",
        format!("127.0.0.1:{}", jm_agent.metrics_port),
        vec![ns(), ("pod", "parity-jobmanager".into())],
    ));
    for (id, agent) in &tm_agents {
        targets.push((
            "agent",
            format!("127.0.0.1:{}", agent.metrics_port),
            vec![ns(), ("pod", id.clone()), ("expected_tm", sanitize(id))],
        ));
    }
    let prom = Prometheus::start(&targets)?;

    // Both sides need a few scrapes and the JobManager a few metric fetches before every subtask
    // is there: compare until nothing differs, and show what still did otherwise.
    let mut last = Vec::new();
    let compared = wait_for(
        "the agents to match the reporter",
        Duration::from_secs(300),
        || {
            let up = prom.query("up == 1")?.len();
            if up < 6 {
                return Ok(None);
            }
            let (reporter, agents) = (families(&prom, "reporter")?, families(&prom, "agent")?);
            let subtasks = reporter
                .get("flink_taskmanager_job_task_busyTimeMsPerSecond")
                .map_or(0, BTreeSet::len);
            // All 21 x 8 + 2 subtasks reported by the reporter before comparing, and the latency
            // histograms of the 20 x 8 past the source (they appear with the first marker).
            let latency = reporter.get(LATENCY).map_or(0, BTreeSet::len);
            if subtasks < 21 * 8 + 2 || latency < 20 * 8 {
                return Ok(None);
            }
            last = differences(&reporter, &agents);
            Ok(last.is_empty().then_some((reporter, agents)))
        },
    );
    let (reporter, agents) =
        compared.with_context(|| format!("still different:\n{}", last.join("\n")))?;
    ensure!(
        reporter.len() > 150,
        "only {} reporter families",
        reporter.len()
    );
    let operators = &agents["flink_taskmanager_job_task_operator_numRecordsIn"];
    ensure!(
        operators.len() >= 21 * 8,
        "{} operator series",
        operators.len()
    );

    // No series from two agents: each name and label set comes from one target.
    let flink_series =
        prom.query(r#"{job="agent", __name__=~"flink_(jobmanager|taskmanager)_.+"}"#)?;
    let mut seen = BTreeMap::new();
    for (mut labels, _) in flink_series {
        let from = labels.remove("instance").unwrap_or_default();
        labels.remove("pod");
        labels.remove("expected_tm");
        if let Some(other) = seen.insert(labels.clone(), from.clone()) {
            bail!("exported by two agents ({other} and {from}): {labels:?}");
        }
    }
    ensure!(seen.len() > 10_000, "only {} Flink series", seen.len());
    // Each TaskManager's agent exports its own TaskManager's subtasks, and there are some.
    let by_agent = prom.query(r#"count by (expected_tm, tm_id) (flink_taskmanager_job_task_busyTimeMsPerSecond{job="agent"})"#)?;
    ensure!(by_agent.len() == 2, "{by_agent:?}");
    for (labels, count) in &by_agent {
        ensure!(
            labels.get("expected_tm") == labels.get("tm_id"),
            "{labels:?}"
        );
        ensure!(
            count.parse::<f64>().unwrap_or(0.0) >= 40.0,
            "{labels:?}: {count} subtasks"
        );
    }

    // The shipped Flink job dashboard: every query has data here.
    let exprs = dashboard_exprs("flink-job.json")?;
    ensure!(exprs.len() >= 12, "{exprs:?}");
    for expr in &exprs {
        let q = grafana(expr);
        let got = wait_for(&format!("data for {q}"), Duration::from_secs(60), || {
            let r = prom.query(&q)?;
            Ok((!r.is_empty()).then_some(r))
        })?;
        ensure!(!got.is_empty(), "{q}");
    }
    // The agent dashboard and the alert rules: each expression evaluates (their series need
    // Kafka and a webhook, which are tested elsewhere).
    let rules: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(
        workspace_root().join("manifests/monitoring/rules.yaml"),
    )?)?;
    let mut others = dashboard_exprs("flink-agent.json")?;
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            others.extend(rule["expr"].as_str().map(str::to_string));
        }
    }
    ensure!(others.len() >= 20, "{others:?}");
    for expr in &others {
        prom.query(&grafana(expr))?;
    }
    drop(flink);
    Ok(())
}
