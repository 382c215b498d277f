//! How Flink's metrics, read from the Flink REST API, are named and labelled for Prometheus.
//!
//! The goal is that Grafana dashboards written for Flink's own `PrometheusReporter` work unchanged
//! against the agent, so the names follow that reporter (Flink 2.x, default options):
//!
//! * **Name** = `flink_` + logical scope + `_` + metric name, where every character outside
//!   `[a-zA-Z0-9:_]` is replaced by `_`. User metric groups (`getMetricGroup().addGroup("demo")`)
//!   are part of the name, as in the reporter.
//! * **Label values** are filtered like the reporter's default (`filterLabelValueCharacters: true`):
//!   every character outside `[a-zA-Z0-9_]` becomes `_` (e.g. `tm_id="127_0_0_1_6122_6d1794"`,
//!   `job_name="demo_failing"`).
//! * **Types**: Flink counters, gauges and meters are all exported as gauges (no `_total` suffix);
//!   histograms (the REST API splits them into `<name>_median`, `_p75`, `_p95`, `_p98`, `_p99`,
//!   `_p999`, `_count`, `_min`, `_max`, `_mean`, `_stddev`) become a summary `<name>{quantile=..}`
//!   plus `<name>_count`, as in the reporter; `_min`, `_max`, `_mean` and `_stddev`, which the
//!   reporter does not export, are kept as gauges `<name>_min` etc.
//! * **Values**: `?get=` values arrive as strings, aggregated values as JSON numbers (or the string
//!   `"NaN"`). Booleans become 1/0 (as in the reporter); `NaN`/`Infinity` are kept; any other
//!   text-valued gauge (e.g. `lastCheckpointExternalPath`) has no number and is skipped.
//!
//! | REST source | Prometheus name | labels |
//! |---|---|---|
//! | `/jobmanager/metrics` | `flink_jobmanager_<metric>` (e.g. `flink_jobmanager_Status_JVM_Memory_Heap_Used`) | none (the reporter's `host` is not known over REST) |
//! | `/taskmanagers/<tm>/metrics` | `flink_taskmanager_<metric>` | `host`, `tm_id` |
//! | `/jobs/<jid>/metrics` | `flink_jobmanager_job_<metric>` (e.g. `flink_jobmanager_job_uptime`, `_numRestarts`) | `job_id`, `job_name` |
//! | `/jobs/<jid>/vertices/<vid>/subtasks/metrics?agg=` task metrics | `flink_taskmanager_job_task_<metric>` | `job_id`, `job_name`, `task_id`, `task_name` |
//! | same, operator metrics (`<operator>.<metric>`) | `flink_taskmanager_job_task_operator_<metric>` | the above + `operator_name` |
//! | `/jobs/overview` (agent's own) | `flink_job_state{state}` = 1 | `job_id`, `job_name`, `state` |
//!
//! **Vertex (task) metrics are aggregated over the vertex's subtasks** by Flink
//! (`subtasks/metrics?agg=min,max,sum`): one series per job vertex instead of one per subtask, so
//! there is no `subtask_index`, `tm_id`, `host`, `task_attempt_*` or `operator_id` label. The
//! aggregate is chosen per metric so that the usual dashboard queries (`sum by (task_name)` of
//! rates, `max` of busy/back-pressure time, `min` of watermarks) give the same answer as over the
//! reporter's per-subtask series:
//! * `min` for watermarks (a name containing `Watermark`) and histogram `_min`;
//! * `max` for times per second (`...TimeMsPerSecond`), `isBackPressured`, buffer usages (`...Usage`),
//!   lags, latencies, `...Nanos` and the other histogram statistics;
//! * `sum` for everything else (record, byte and buffer counts and rates, user counters).
//!
//! A vertex id is only unique within its job (the same ids repeat across jobs), so vertices are
//! always keyed on job id + vertex id. In a vertex's metric ids, a first dotted segment other than
//! `Shuffle`/`buffers` (task-level groups) is the operator name, which Flink already sanitised
//! (`Source: src[1]` is `Source__src[1]`).
//!
//! Jobs in a globally terminal state (FINISHED, CANCELED, FAILED) only get `flink_job_state`: the
//! reporter drops a job's metrics when the job ends, and the REST API has none for them either.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

/// Replaces every character the reporter does not allow in a metric name by `_`.
pub fn sanitize_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The reporter's default label-value filter: every character outside `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_label_value(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A metric value from the REST API: a JSON string for `?get=`, a number (or `"NaN"`) for
/// aggregates. `None` for text-valued gauges, which have no number.
pub fn parse_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => {
            let s = s.trim();
            match s {
                "true" => Some(1.0),
                "false" => Some(0.0),
                // Java prints NaN, Infinity and -Infinity; Rust's parser reads all three.
                _ if s.is_empty() => None,
                _ => s.parse::<f64>().ok(),
            }
        }
        _ => None,
    }
}

/// Formats a value the way the Prometheus text format reads it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Integral values (counters, bytes) print without a trailing ".0".
        format!("{}", v as i64)
    } else {
        // Debug gives the shortest round-trip form and uses an exponent for extreme values.
        format!("{v:?}")
    }
}

fn escape_label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Where a set of metrics comes from: decides the name prefix and the labels.
#[derive(Debug, Clone)]
pub enum Scope {
    JobManager,
    TaskManager {
        tm_id: String,
        host: String,
    },
    Job {
        job_id: String,
        job_name: String,
    },
    /// A job vertex (Flink's "task"), aggregated over its subtasks.
    Vertex {
        job_id: String,
        job_name: String,
        task_id: String,
        task_name: String,
    },
}

impl Scope {
    fn prefix(&self) -> &'static str {
        match self {
            Scope::JobManager => "flink_jobmanager",
            Scope::TaskManager { .. } => "flink_taskmanager",
            Scope::Job { .. } => "flink_jobmanager_job",
            Scope::Vertex { .. } => "flink_taskmanager_job_task",
        }
    }

    fn logical_scope(&self) -> &'static str {
        match self {
            Scope::JobManager => "jobmanager",
            Scope::TaskManager { .. } => "taskmanager",
            Scope::Job { .. } => "jobmanager.job",
            Scope::Vertex { .. } => "taskmanager.job.task",
        }
    }

    fn labels(&self) -> Labels {
        let l = |k: &'static str, v: &str| (k, sanitize_label_value(v));
        match self {
            Scope::JobManager => Vec::new(),
            Scope::TaskManager { tm_id, host } => vec![l("host", host), l("tm_id", tm_id)],
            Scope::Job { job_id, job_name } => vec![l("job_id", job_id), l("job_name", job_name)],
            Scope::Vertex {
                job_id,
                job_name,
                task_id,
                task_name,
            } => vec![
                l("job_id", job_id),
                l("job_name", job_name),
                l("task_id", task_id),
                l("task_name", task_name),
            ],
        }
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Summary,
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    help: String,
    /// (sample name, labels, value), in insertion order.
    samples: Vec<(String, Labels, f64)>,
    seen: HashSet<(String, Vec<(&'static str, String)>)>,
}

/// Metric families collected during one scrape of the REST API, rendered as Prometheus text
/// format 0.0.4. Families are kept by name because the same metric arrives once per job, vertex
/// or TaskManager, and the text format wants all samples of a family together.
#[derive(Debug, Default)]
pub struct Exposition {
    families: BTreeMap<String, Family>,
}

/// The histogram statistics the REST API exposes as separate ids, and the reporter's quantile
/// for each (`None`: not a quantile).
const HISTOGRAM_STATS: &[(&str, Option<&str>)] = &[
    ("_median", Some("0.5")),
    ("_p75", Some("0.75")),
    ("_p95", Some("0.95")),
    ("_p98", Some("0.98")),
    ("_p99", Some("0.99")),
    ("_p999", Some("0.999")),
    ("_count", None),
    ("_min", None),
    ("_max", None),
    ("_mean", None),
    ("_stddev", None),
];

/// Splits `mailboxLatencyMs_p99` into (`mailboxLatencyMs`, `_p99`) when the base
/// is a histogram (`has` finds its `_median` and `_p99`: a plain metric that happens to end in
/// `_max` is not split).
fn histogram_split(id: &str, has: impl Fn(&str) -> bool) -> Option<(&str, &'static str)> {
    for (suffix, _) in HISTOGRAM_STATS {
        if let Some(base) = id.strip_suffix(suffix) {
            if has(&format!("{base}_median")) && has(&format!("{base}_p99")) {
                return Some((base, suffix));
            }
        }
    }
    None
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// Number of samples, for logs.
    pub fn len(&self) -> usize {
        self.families.values().map(|f| f.samples.len()).sum()
    }

    fn push(
        &mut self,
        family: &str,
        kind: Kind,
        help: &str,
        sample: String,
        labels: Labels,
        value: f64,
    ) {
        let fam = self
            .families
            .entry(family.to_string())
            .or_insert_with(|| Family {
                kind,
                help: help.to_string(),
                samples: Vec::new(),
                seen: HashSet::new(),
            });
        if fam.kind != kind {
            // Same name from a histogram and a plain metric: keep the first, never emit an
            // exposition that a Prometheus server would reject.
            return;
        }
        // Two REST ids can sanitise to the same name (`a.b` and `a_b`): keep the first series.
        if fam.seen.insert((sample.clone(), labels.clone())) {
            fam.samples.push((sample, labels, value));
        }
    }

    /// Adds a gauge that is not one of Flink's metrics (`flink_job_state`, ...).
    pub fn add_gauge(&mut self, name: &str, help: &str, labels: Labels, value: f64) {
        self.push(name, Kind::Gauge, help, name.to_string(), labels, value);
    }

    /// Adds the metrics of one scope: `(metric id, value)` pairs as read from the REST API.
    /// Ids whose value has no number are skipped.
    pub fn add_scope(&mut self, scope: &Scope, values: &[(String, f64)]) {
        let ids: HashSet<&str> = values.iter().map(|(id, _)| id.as_str()).collect();
        let base_labels = scope.labels();
        for (id, value) in values {
            let (prefix, logical, metric, extra) = match scope {
                Scope::Vertex { .. } => match split_operator(id) {
                    Some((operator, metric)) => (
                        "flink_taskmanager_job_task_operator",
                        "taskmanager.job.task.operator",
                        metric,
                        Some(("operator_name", sanitize_label_value(operator))),
                    ),
                    None => (scope.prefix(), scope.logical_scope(), id.as_str(), None),
                },
                _ => (scope.prefix(), scope.logical_scope(), id.as_str(), None),
            };
            let mut labels = base_labels.clone();
            labels.extend(extra);
            // Histogram detection looks at the same operator's ids only ("" for task metrics).
            let op_prefix = &id[..id.len() - metric.len()];
            let hist =
                histogram_split(metric, |m| ids.contains(format!("{op_prefix}{m}").as_str()));
            match hist {
                Some((base, suffix)) => {
                    let family = format!("{prefix}_{}", sanitize_name(base));
                    let quantile = HISTOGRAM_STATS
                        .iter()
                        .find(|(s, _)| *s == suffix)
                        .and_then(|(_, q)| *q);
                    let help = format!("{base} (scope: {logical})");
                    match (quantile, suffix) {
                        (Some(q), _) => {
                            labels.push(("quantile", q.to_string()));
                            self.push(
                                &family,
                                Kind::Summary,
                                &help,
                                family.clone(),
                                labels,
                                *value,
                            );
                        }
                        (None, "_count") => {
                            let sample = format!("{family}_count");
                            self.push(&family, Kind::Summary, &help, sample, labels, *value);
                        }
                        (None, _) => {
                            let name = format!("{prefix}_{}", sanitize_name(metric));
                            let help = format!("{metric} (scope: {logical})");
                            self.push(&name, Kind::Gauge, &help, name.clone(), labels, *value);
                        }
                    }
                }
                None => {
                    let name = format!("{prefix}_{}", sanitize_name(metric));
                    let help = format!("{metric} (scope: {logical})");
                    self.push(&name, Kind::Gauge, &help, name.clone(), labels, *value);
                }
            }
        }
    }

    /// Appends the text format: `# HELP`, `# TYPE` and the samples of each family.
    pub fn render(&self, out: &mut String) {
        for (name, fam) in &self.families {
            if fam.samples.is_empty() {
                continue;
            }
            let kind = match fam.kind {
                Kind::Gauge => "gauge",
                Kind::Summary => "summary",
            };
            // HELP text escapes only backslash and newline.
            let help = fam.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (sample, labels, value) in &fam.samples {
                out.push_str(sample);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", format_value(*value));
            }
        }
    }
}

/// Task-level metric groups whose ids contain a dot but are not operator metrics.
const TASK_GROUPS: &[&str] = &["Shuffle", "buffers"];

/// `Source__src[1].numRecordsIn` -> (`Source__src[1]`, `numRecordsIn`); `numRecordsIn` and
/// `Shuffle.Netty...` (task-level) -> `None`.
pub fn split_operator(id: &str) -> Option<(&str, &str)> {
    let (first, rest) = id.split_once('.')?;
    if TASK_GROUPS.contains(&first) || first.is_empty() || rest.is_empty() {
        return None;
    }
    Some((first, rest))
}

/// Which aggregate over a vertex's subtasks represents a metric (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Min,
    Max,
    Sum,
}

pub fn aggregate_for(id: &str) -> Agg {
    // The metric's own name, without operator or group prefix.
    let name = id.rsplit('.').next().unwrap_or(id);
    if name.contains("Watermark") || name.ends_with("_min") {
        return Agg::Min;
    }
    let max_suffixes = [
        "TimeMsPerSecond",
        "Usage",
        "Lag",
        "Nanos",
        "_median",
        "_p75",
        "_p95",
        "_p98",
        "_p99",
        "_p999",
        "_max",
        "_mean",
        "_stddev",
    ];
    if name == "isBackPressured"
        || name.contains("Latency")
        || max_suffixes.iter().any(|s| name.ends_with(s))
    {
        return Agg::Max;
    }
    Agg::Sum
}

/// `[{"id": ".."}]`, the answer to a metrics request without `get`.
#[derive(Debug, Deserialize)]
pub struct MetricId {
    pub id: String,
}

/// `[{"id": "..", "value": ".."}]`, the answer to `?get=`.
#[derive(Debug, Deserialize)]
pub struct MetricValue {
    pub id: String,
    #[serde(default)]
    pub value: Value,
}

/// `[{"id": "..", "min": .., "max": .., "sum": ..}]`, the answer to `?get=..&agg=`.
#[derive(Debug, Deserialize)]
pub struct AggregatedValue {
    pub id: String,
    #[serde(default)]
    pub min: Value,
    #[serde(default)]
    pub max: Value,
    #[serde(default)]
    pub sum: Value,
}

/// Numeric `(id, value)` pairs of a `?get=` answer; text values are dropped.
pub fn numeric_values(items: &[MetricValue]) -> Vec<(String, f64)> {
    items
        .iter()
        .filter_map(|m| parse_value(&m.value).map(|v| (m.id.clone(), v)))
        .collect()
}

/// Numeric `(id, value)` pairs of an aggregated answer, each with its aggregate (see [`aggregate_for`]).
pub fn aggregated_values(items: &[AggregatedValue]) -> Vec<(String, f64)> {
    items
        .iter()
        .filter_map(|m| {
            let v = match aggregate_for(&m.id) {
                Agg::Min => &m.min,
                Agg::Max => &m.max,
                Agg::Sum => &m.sum,
            };
            parse_value(v).map(|v| (m.id.clone(), v))
        })
        .collect()
}

/// `/jobs/overview`.
#[derive(Debug, Deserialize)]
pub struct JobsOverview {
    #[serde(default)]
    pub jobs: Vec<JobOverview>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct JobOverview {
    pub jid: String,
    pub name: String,
    pub state: String,
}

impl JobOverview {
    /// Globally terminal: the job's metrics are gone (see the module docs).
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "FINISHED" | "CANCELED" | "FAILED")
    }
}

/// `/jobs/<jid>`: only the vertices matter here.
#[derive(Debug, Deserialize)]
pub struct JobDetail {
    #[serde(default)]
    pub vertices: Vec<VertexInfo>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct VertexInfo {
    pub id: String,
    pub name: String,
}

/// `/taskmanagers`.
#[derive(Debug, Deserialize)]
pub struct TaskManagers {
    #[serde(default)]
    pub taskmanagers: Vec<TaskManagerInfo>,
}

/// An entry of `/taskmanagers`, or `/taskmanagers/<id>`.
#[derive(Debug, Deserialize, Clone)]
pub struct TaskManagerInfo {
    pub id: String,
    #[serde(default)]
    pub path: String,
}

impl TaskManagerInfo {
    /// The TaskManager's host, from its RPC path `pekko.tcp://flink@HOST:PORT/user/rpc/...`
    /// (the reporter's `host` label); empty when the path has no host.
    pub fn host(&self) -> String {
        self.path
            .split_once('@')
            .map(|(_, rest)| rest)
            .and_then(|rest| rest.split('/').next())
            .map(|hp| match hp.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
                None => hp,
            })
            .unwrap_or("")
            .to_string()
    }
}
