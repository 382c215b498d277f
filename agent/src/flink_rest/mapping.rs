//! How Flink's metrics, read from the Flink REST API, are named and labelled for Prometheus.
//!
//! The goal is that Grafana dashboards written for Flink's own `PrometheusReporter` work unchanged
//! against the agent, so the names follow that reporter (Flink 2.x, default options):
//!
//! * **Name** = `flink_` + logical scope + `_` + metric name, where every character outside
//!   `[a-zA-Z0-9:_]` is replaced by `_`. User metric groups (`getMetricGroup().addGroup("demo")`)
//!   are part of the name, as in the reporter.
//! * **Label values** are filtered like the reporter's default (`filterLabelValueCharacters: true`)
//!   with the same pattern as names: every character outside `[a-zA-Z0-9:_]` becomes `_` (e.g.
//!   `tm_id="127_0_0_1:6122_6d1794"`, `task_name="Source:_src____map"`; checked against the real
//!   reporter's output in `tests/fixtures/flink-rest-2tm/`).
//! * **Types**: Flink counters, gauges and meters are all exported as gauges (no `_total` suffix);
//!   histograms (the REST API splits them into `<name>_median`, `_p75`, `_p95`, `_p98`, `_p99`,
//!   `_p999`, `_count`, `_min`, `_max`, `_mean`, `_stddev`) become a summary `<name>{quantile=..}`
//!   plus `<name>_count`, as in the reporter; `_min`, `_max`, `_mean` and `_stddev`, which the
//!   reporter does not export, are kept as gauges `<name>_min` etc.
//! * **Values**: `?get=` values arrive as strings, aggregated values as JSON numbers (or the string
//!   `"NaN"`). Booleans become 1/0 and `NaN`/`Infinity` are kept, as in the reporter; a
//!   text-valued gauge (`lastCheckpointExternalPath`) is 0, which is what the reporter exports for
//!   a gauge that is neither a number nor a boolean, so the family exists wherever it does there.
//! * **Key/value groups** (`addGroup("split", id)`), which the reporter turns into a label, arrive
//!   over REST as plain name segments: the keys Flink and its Kafka connector use (`split`, `topic`,
//!   `partition`) become labels again (`..._operator_split_watermark_currentWatermark{split="0"}`).
//!   A user's own key/value group cannot be told from a plain group and stays in the name.
//!   Latency tracking's histograms (`metrics.latency.interval`) are a task-level group of such
//!   pairs: `latency.source_id.<id>.operator_id.<id>.operator_subtask_index.<n>.latency` becomes
//!   `flink_taskmanager_job_task_latency_source_id_operator_id_operator_subtask_index_latency`
//!   with those three labels, not one family per source and operator.
//! * **What the REST API lacks:** a histogram's count (`<name>_count` of the reporter's summary;
//!   the REST API has every other statistic); and of a counter that Flink registers under two names
//!   only one name (its metric query service keeps counters by object): the sink writer's
//!   `numRecordsSend`/`numRecordsOut`, `numBytesSend`/`numBytesOut` and
//!   `numRecordsSendErrors`/`numRecordsOutErrors` are one counter each, so the missing name is
//!   exported with the other's value.
//!
//! | REST source | Prometheus name | labels |
//! |---|---|---|
//! | `/jobmanager/metrics` | `flink_jobmanager_<metric>` (e.g. `flink_jobmanager_Status_JVM_Memory_Heap_Used`) | `host` (`jobmanager.rpc.address` of `/jobmanager/config`) |
//! | `/taskmanagers/<tm>/metrics` | `flink_taskmanager_<metric>` | `host`, `tm_id` |
//! | `/jobs/<jid>/metrics` | `flink_jobmanager_job_<metric>` (e.g. `flink_jobmanager_job_uptime`, `_numRestarts`) | `host`, `job_id`, `job_name` |
//! | `/jobs/<jid>/vertices/<vid>/jm-operator-metrics` (`<operator>.<metric>`) | `flink_jobmanager_job_operator_<metric>` (e.g. `..._coordinator_enumerator_unassignedSplits`) | the job's + `task_id`, `task_name`, `operator_id`, `operator_name` |
//! | `/jobs/<jid>/vertices/<vid>/subtasks/<i>/metrics` task metrics | `flink_taskmanager_job_task_<metric>` | `host`, `tm_id`, `job_id`, `job_name`, `task_id`, `task_name`, `subtask_index`, `task_attempt_num`, `task_attempt_id` |
//! | same, operator metrics (`<operator>.<metric>`) | `flink_taskmanager_job_task_operator_<metric>` | the above + `operator_id`, `operator_name` |
//! | `/jobs/overview` (agent's own) | `flink_job_state{state}` = 1 | `job_id`, `job_name`, `state` |
//!
//! **Task and operator metrics are per subtask** (the default, `--flink-task-metrics per-subtask`),
//! with the reporter's labels. Two of them are not in the REST API, and get stand-ins:
//! * `task_attempt_id`: the reporter's value is Flink's `ExecutionAttemptID`,
//!   `<execution graph id>_<vertex id>_<subtask>_<attempt>`; the execution graph id is in no REST
//!   answer, so the agent exports `<vertex id>_<subtask>_<attempt>`, the same value without its first
//!   part: unique per attempt and new with each attempt, as the reporter's.
//! * `operator_id`: the REST API names operators, it does not identify them. The first operator of
//!   a chain has the vertex's id (Flink derives the vertex id from it), and gets it; a chained
//!   operator after it gets `<vertex id>_<position in the chain>`, which no real operator id looks
//!   like (those are 32 hex digits).
//!
//! `operator_name` is the operator's name as the reporter has it: the REST API replaced `:`, `.`,
//! `,` and spaces in it by `_`, so the name is taken back from the vertex name (`A -> B`) where
//! one of its parts matches.
//!
//! **Or aggregated per vertex** (`--flink-task-metrics per-vertex`, fewer series, exported by the
//! JobManager pod's agent): Flink aggregates over the vertex's subtasks
//! (`subtasks/metrics?agg=min,max,sum`), one series per job vertex, without the `subtask_index`,
//! `tm_id`, `host`, `task_attempt_*` and `operator_id` labels. The
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use serde::Deserialize;
use serde_json::Value;

/// Replaces every character the reporter does not allow in a metric name by `_`.
pub fn sanitize_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_sanitized(&mut out, s);
    out
}

/// The reporter's default label-value filter, the same as for names: every character outside
/// `[a-zA-Z0-9:_]` becomes `_`.
pub fn sanitize_label_value(s: &str) -> String {
    sanitize_name(s)
}

/// Appends `s` with every character outside `[a-zA-Z0-9:_]` as `_`.
fn push_sanitized(out: &mut String, s: &str) {
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
}

/// What Flink's metric query service does to the names in metric ids (its `FILTER`): space, `.`,
/// `:` and `,` become `_`. `Source: src` is `Source__src` in a REST id.
fn rest_filtered(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, ' ' | '.' | ':' | ',') {
                '_'
            } else {
                c
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

/// Appends a value the way the Prometheus text format reads it.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Integral values (counters, bytes) print without a trailing ".0".
        let _ = write!(out, "{}", v as i64);
    } else {
        // Debug gives the shortest round-trip form and uses an exponent for extreme values.
        let _ = write!(out, "{v:?}");
    }
}

/// Appends `key="value"` (comma-separated from what `out` holds), the value escaped as the text
/// format wants: backslash, double quote and newline.
fn push_label(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `k="v",...` for `labels` (see [`push_label`]), without braces.
fn render_labels(labels: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (k, v) in labels {
        push_label(&mut out, k, v);
    }
    out
}

/// A job vertex (Flink's "task") as the REST API describes it.
#[derive(Debug, Clone)]
pub struct JobVertex {
    pub job_id: String,
    pub job_name: String,
    pub task_id: String,
    /// The vertex name, e.g. `Source: src -> map`: the names of its chained operators.
    pub task_name: String,
}

/// Flink truncates an operator's name in its metric group to this many characters
/// (`MetricUtils.METRICS_OPERATOR_NAME_MAX_LENGTH`), in the REST API and the reporter alike.
const OPERATOR_NAME_MAX: usize = 80;

impl JobVertex {
    /// The operator names of a chain in order: `A -> B -> (C, D)` gives A, B, C, D.
    fn chain(&self) -> impl Iterator<Item = &str> {
        self.task_name.split(" -> ").flat_map(|part| {
            let inner = part
                .strip_prefix('(')
                .and_then(|p| p.strip_suffix(')'))
                .filter(|_| part.contains(", "));
            match inner {
                Some(list) => list.split(", ").collect::<Vec<_>>(),
                None => vec![part],
            }
        })
    }

    /// `(operator_id, operator_name)` of the operator a REST id calls `rest_name` (see the module
    /// docs for what the id is where the REST API has none).
    pub fn operator(&self, rest_name: &str) -> (String, String) {
        let cut = |name: &'_ str| match name.char_indices().nth(OPERATOR_NAME_MAX) {
            Some((end, _)) => name[..end].to_string(),
            None => name.to_string(),
        };
        // The JobManager's side of a chain (its coordinator) is named after the whole vertex and
        // has the vertex's id, in the reporter too.
        let whole = cut(&self.task_name);
        if rest_filtered(&whole) == rest_name {
            return (self.task_id.clone(), whole);
        }
        for (i, part) in self.chain().enumerate() {
            let part = cut(part);
            if rest_filtered(&part) == rest_name {
                let id = match i {
                    0 => self.task_id.clone(),
                    i => format!("{}_{i}", self.task_id),
                };
                return (id, part);
            }
        }
        (
            format!("{}_{rest_name}", self.task_id),
            rest_name.to_string(),
        )
    }

    fn labels(&self) -> Labels {
        vec![
            ("job_id", sanitize_label_value(&self.job_id)),
            ("job_name", sanitize_label_value(&self.job_name)),
            ("task_id", sanitize_label_value(&self.task_id)),
            ("task_name", sanitize_label_value(&self.task_name)),
        ]
    }
}

/// Where a set of metrics comes from: decides the name prefix and the labels.
#[derive(Debug, Clone)]
pub enum Scope {
    /// `host`: the JobManager's RPC address, as the reporter has it.
    JobManager {
        host: String,
    },
    TaskManager {
        tm_id: String,
        host: String,
    },
    Job {
        host: String,
        job_id: String,
        job_name: String,
    },
    /// The JobManager's side of a vertex's operators (source enumerators and other
    /// coordinators), from `jm-operator-metrics`.
    JobOperator {
        host: String,
        vertex: JobVertex,
    },
    /// One subtask of a vertex, where it runs now.
    Subtask {
        vertex: JobVertex,
        subtask_index: u32,
        attempt: u32,
        tm_id: String,
        host: String,
    },
    /// A job vertex, aggregated over its subtasks (`--flink-task-metrics per-vertex`).
    Vertex(JobVertex),
}

/// The task-level and operator-level name prefixes (and logical scopes, for `# HELP`) of a scope.
type Prefixes = (
    (&'static str, &'static str),
    Option<(&'static str, &'static str)>,
);

impl Scope {
    fn prefixes(&self) -> Prefixes {
        const TASK: (&str, &str) = ("flink_taskmanager_job_task", "taskmanager.job.task");
        const OPERATOR: (&str, &str) = (
            "flink_taskmanager_job_task_operator",
            "taskmanager.job.task.operator",
        );
        const JM_OPERATOR: (&str, &str) =
            ("flink_jobmanager_job_operator", "jobmanager.job.operator");
        match self {
            Scope::JobManager { .. } => (("flink_jobmanager", "jobmanager"), None),
            Scope::TaskManager { .. } => (("flink_taskmanager", "taskmanager"), None),
            Scope::Job { .. } => (("flink_jobmanager_job", "jobmanager.job"), None),
            Scope::JobOperator { .. } => (JM_OPERATOR, Some(JM_OPERATOR)),
            Scope::Subtask { .. } | Scope::Vertex(_) => (TASK, Some(OPERATOR)),
        }
    }

    fn vertex(&self) -> Option<&JobVertex> {
        match self {
            Scope::JobOperator { vertex, .. } | Scope::Subtask { vertex, .. } => Some(vertex),
            Scope::Vertex(vertex) => Some(vertex),
            _ => None,
        }
    }

    fn labels(&self) -> Labels {
        let l = |k: &'static str, v: &str| (k, sanitize_label_value(v));
        match self {
            Scope::JobManager { host } => vec![l("host", host)],
            Scope::TaskManager { tm_id, host } => vec![l("host", host), l("tm_id", tm_id)],
            Scope::Job {
                host,
                job_id,
                job_name,
            } => vec![
                l("host", host),
                l("job_id", job_id),
                l("job_name", job_name),
            ],
            Scope::JobOperator { host, vertex } => {
                let mut labels = vec![l("host", host)];
                labels.extend(vertex.labels());
                labels
            }
            Scope::Subtask {
                vertex,
                subtask_index,
                attempt,
                tm_id,
                host,
            } => {
                let mut labels = vec![l("host", host), l("tm_id", tm_id)];
                labels.extend(vertex.labels());
                labels.push(("subtask_index", subtask_index.to_string()));
                labels.push(("task_attempt_num", attempt.to_string()));
                labels.push((
                    "task_attempt_id",
                    sanitize_label_value(&format!("{}_{subtask_index}_{attempt}", vertex.task_id)),
                ));
                labels
            }
            Scope::Vertex(vertex) => vertex.labels(),
        }
    }
}

/// Counters a sink writer registers under two names (Flink's `InternalSinkWriterMetricGroup`):
/// the same counter object is `numRecordsSend` and `numRecordsOut`, and so on. Flink's metric query
/// service keeps its counters by object, so the REST API has only one of the two names; the
/// reporter exports both.
const SINK_ALIASES: &[(&str, &str)] = &[
    (".numRecordsSend", ".numRecordsOut"),
    (".numBytesSend", ".numBytesOut"),
    (".numRecordsSendErrors", ".numRecordsOutErrors"),
];

/// `values` plus the name of [`SINK_ALIASES`] the REST API left out, with the same value; `None`
/// when nothing is missing.
fn with_sink_aliases(values: &[(String, f64)]) -> Option<Vec<(String, f64)>> {
    let ids: HashSet<&str> = values.iter().map(|(id, _)| id.as_str()).collect();
    let mut added = Vec::new();
    for (id, value) in values {
        for (send, out) in SINK_ALIASES {
            if let Some(operator) = id.strip_suffix(send) {
                let alias = format!("{operator}{out}");
                if !ids.contains(alias.as_str()) {
                    added.push((alias, *value));
                }
            }
        }
    }
    if added.is_empty() {
        return None;
    }
    let mut all = values.to_vec();
    all.extend(added);
    Some(all)
}

/// Keys of key/value metric groups (`addGroup(key, value)`) that Flink and its Kafka connector
/// use at operator scope: the reporter makes the value a label (see the module docs).
const OPERATOR_KEY_VALUE_GROUPS: &[&str] = &["split", "topic", "partition"];

/// The keys of latency tracking's groups (`metrics.latency.interval`), which Flink 2 registers
/// at task scope: `latency.source_id.<id>.operator_id.<id>.operator_subtask_index.<n>.latency`
/// (granularity `operator`, the default; `subtask` adds `source_subtask_index`, `single` has no
/// `source_id`).
const LATENCY_KEY_VALUE_GROUPS: &[&str] = &[
    "source_id",
    "source_subtask_index",
    "operator_id",
    "operator_subtask_index",
];

/// The key/value group keys that apply to a metric (without its operator prefix) at task scope
/// (`operator` false) or operator scope.
fn key_value_keys(metric: &str, operator: bool) -> &'static [&'static str] {
    if operator {
        OPERATOR_KEY_VALUE_GROUPS
    } else if is_latency_group(metric) {
        LATENCY_KEY_VALUE_GROUPS
    } else {
        &[]
    }
}

/// `latency.source_id.…` or `latency.operator_id.…`: latency tracking's histograms, a task-level
/// group (an operator that happens to be named `latency` is followed by a metric name instead).
fn is_latency_group(id: &str) -> bool {
    id.strip_prefix("latency.")
        .is_some_and(|rest| rest.starts_with("source_id.") || rest.starts_with("operator_id."))
}

/// `split.3.watermark.currentWatermark` -> name `split.watermark.currentWatermark` and the label
/// `split="3"` (appended to `labels`), for the keys in `keys`. A key needs a value and a metric
/// name after it.
fn key_value_groups(metric: &str, keys: &[&str], labels: &mut String) -> Option<String> {
    if !keys.iter().any(|k| metric.contains(k)) {
        return None;
    }
    let segments: Vec<&str> = metric.split('.').collect();
    let mut name: Vec<&str> = Vec::with_capacity(segments.len());
    let mut found = false;
    let mut i = 0;
    while i < segments.len() {
        let seg = segments[i];
        if keys.contains(&seg) && i + 2 < segments.len() {
            push_label(labels, seg, &sanitize_label_value(segments[i + 1]));
            name.push(seg);
            found = true;
            i += 2;
        } else {
            name.push(seg);
            i += 1;
        }
    }
    found.then(|| name.join("."))
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
    /// Already escaped for the `# HELP` line.
    help: String,
    /// The samples, rendered as they arrive (`name{labels} value\n`), in insertion order.
    lines: String,
    /// Where each sample's series (`name{labels}`) lies in `lines`. Two REST ids can sanitise to
    /// the same series and only the first is kept; comparing against `lines` itself spares a
    /// second copy of every series (and its allocations) per refresh.
    series: HashTable<(usize, usize)>,
}

/// Metric families collected during one scrape of the REST API, rendered as Prometheus text
/// format 0.0.4. Families are kept by name because the same metric arrives once per job, vertex
/// or TaskManager, and the text format wants all samples of a family together.
#[derive(Debug, Default)]
pub struct Exposition {
    families: BTreeMap<String, Family>,
    hasher: RandomState,
    samples: usize,
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
        self.samples
    }

    /// One sample `<family><suffix>{labels} value` (`labels` rendered, without braces; empty:
    /// none). `help` is only called for a family's first sample.
    fn push(
        &mut self,
        family: &str,
        kind: Kind,
        help: impl FnOnce() -> String,
        suffix: &str,
        labels: &str,
        value: f64,
    ) {
        if !self.families.contains_key(family) {
            self.families.insert(
                family.to_string(),
                Family {
                    kind,
                    // HELP text escapes only backslash and newline.
                    help: help().replace('\\', "\\\\").replace('\n', "\\n"),
                    lines: String::new(),
                    series: HashTable::new(),
                },
            );
        }
        let Some(Family {
            kind: family_kind,
            lines,
            series,
            ..
        }) = self.families.get_mut(family)
        else {
            return;
        };
        if *family_kind != kind {
            // Same name from a histogram and a plain metric: keep the first, never emit an
            // exposition that a Prometheus server would reject.
            return;
        }
        let start = lines.len();
        lines.push_str(family);
        lines.push_str(suffix);
        if !labels.is_empty() {
            lines.push('{');
            lines.push_str(labels);
            lines.push('}');
        }
        let end = lines.len();
        let hasher = &self.hasher;
        let text = lines.as_str();
        let hash = hasher.hash_one(&text[start..end]);
        if series
            .find(hash, |&(s, e)| text[s..e] == text[start..end])
            .is_some()
        {
            lines.truncate(start);
            return;
        }
        series.insert_unique(hash, (start, end), |&(s, e)| hasher.hash_one(&text[s..e]));
        lines.push(' ');
        write_value(lines, value);
        lines.push('\n');
        self.samples += 1;
    }

    /// Adds a gauge that is not one of Flink's metrics (`flink_job_state`, ...).
    pub fn add_gauge(&mut self, name: &str, help: &str, labels: Labels, value: f64) {
        let rendered = render_labels(&labels);
        self.push(name, Kind::Gauge, || help.to_string(), "", &rendered, value);
    }

    /// Adds the metrics of one scope: `(metric id, value)` pairs as read from the REST API.
    pub fn add_scope(&mut self, scope: &Scope, values: &[(String, f64)]) {
        let aliased;
        let values = match scope {
            Scope::Subtask { .. } | Scope::Vertex(_) => {
                aliased = with_sink_aliases(values);
                aliased.as_deref().unwrap_or(values)
            }
            _ => values,
        };
        let ids: HashSet<&str> = values.iter().map(|(id, _)| id.as_str()).collect();
        let base_labels = render_labels(&scope.labels());
        let ((task_prefix, task_logical), operator_prefix) = scope.prefixes();
        // The aggregate over a vertex has no operator id (it spans all of its subtasks' operators).
        let with_operator_id = !matches!(scope, Scope::Vertex(_));
        // (operator_id, operator_name) per operator, worked out once per scope.
        let mut operators: HashMap<&str, (String, String)> = HashMap::new();
        // Reused for every sample: a refresh renders thousands.
        let (mut labels, mut name) = (String::new(), String::new());
        for (id, value) in values {
            labels.clear();
            labels.push_str(&base_labels);
            let operator = operator_prefix
                .zip(scope.vertex())
                .and_then(|(prefix, vertex)| {
                    split_operator(id).map(|(operator, metric)| (prefix, vertex, operator, metric))
                });
            let (prefix, logical, metric) = match operator {
                Some(((prefix, logical), vertex, operator, metric)) => {
                    let (op_id, op_name) = operators
                        .entry(operator)
                        .or_insert_with(|| vertex.operator(operator));
                    if with_operator_id {
                        push_label(&mut labels, "operator_id", &sanitize_label_value(op_id));
                    }
                    push_label(&mut labels, "operator_name", &sanitize_label_value(op_name));
                    (prefix, logical, metric)
                }
                None => (task_prefix, task_logical, id.as_str()),
            };
            // Histogram detection looks at the same operator's ids only ("" for task metrics).
            let op_prefix = &id[..id.len() - metric.len()];
            let hist =
                histogram_split(metric, |m| ids.contains(format!("{op_prefix}{m}").as_str()));
            let (family_of, suffix, kind) = match hist {
                Some((base, suffix)) => {
                    let quantile = HISTOGRAM_STATS
                        .iter()
                        .find(|(s, _)| *s == suffix)
                        .and_then(|(_, q)| *q);
                    match (quantile, suffix) {
                        (Some(q), _) => {
                            push_label(&mut labels, "quantile", q);
                            (base, "", Kind::Summary)
                        }
                        (None, "_count") => (base, "_count", Kind::Summary),
                        (None, _) => (metric, "", Kind::Gauge),
                    }
                }
                None => (metric, "", Kind::Gauge),
            };
            let keys = key_value_keys(family_of, prefix != task_prefix);
            let regrouped = key_value_groups(family_of, keys, &mut labels);
            let family_of = regrouped.as_deref().unwrap_or(family_of);
            name.clear();
            name.push_str(prefix);
            name.push('_');
            push_sanitized(&mut name, family_of);
            let help = || format!("{family_of} (scope: {logical})");
            self.push(&name, kind, help, suffix, &labels, *value);
        }
    }

    /// Appends the text format: `# HELP`, `# TYPE` and the samples of each family.
    pub fn render(&self, out: &mut String) {
        // Sized up front: the rendered series are the largest allocation of a refresh, and
        // growing by doubling would hold up to three times their size at once.
        let size: usize = self
            .families
            .iter()
            .map(|(name, fam)| 2 * name.len() + fam.help.len() + fam.lines.len() + 32)
            .sum();
        out.reserve(size);
        for (name, fam) in &self.families {
            if fam.lines.is_empty() {
                continue;
            }
            let kind = match fam.kind {
                Kind::Gauge => "gauge",
                Kind::Summary => "summary",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            out.push_str(&fam.lines);
        }
    }
}

/// Task-level metric groups whose ids contain a dot but are not operator metrics.
const TASK_GROUPS: &[&str] = &["Shuffle", "buffers"];

/// `Source__src[1].numRecordsIn` -> (`Source__src[1]`, `numRecordsIn`); `numRecordsIn`,
/// `Shuffle.Netty...` and `latency.source_id...` (task-level) -> `None`.
pub fn split_operator(id: &str) -> Option<(&str, &str)> {
    let (first, rest) = id.split_once('.')?;
    if TASK_GROUPS.contains(&first) || first.is_empty() || rest.is_empty() || is_latency_group(id) {
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

/// `(id, value)` pairs of a `?get=` answer; a text value is 0, as the reporter exports a gauge
/// that is neither a number nor a boolean.
pub fn numeric_values(items: &[MetricValue]) -> Vec<(String, f64)> {
    items
        .iter()
        .map(|m| (m.id.clone(), parse_value(&m.value).unwrap_or(0.0)))
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

/// `/jobs/<jid>/vertices/<vid>`: where each subtask runs, and its attempt.
#[derive(Debug, Deserialize)]
pub struct VertexDetail {
    #[serde(default)]
    pub subtasks: Vec<SubtaskInfo>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct SubtaskInfo {
    pub subtask: u32,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub attempt: u32,
    /// The TaskManager's resource id (the pod name in native Kubernetes mode); `(unassigned)`
    /// before the subtask is scheduled.
    #[serde(default, rename = "taskmanager-id")]
    pub taskmanager_id: String,
}

impl SubtaskInfo {
    /// Deployed to a TaskManager and not finished: the states in which the TaskManager has the
    /// subtask's metrics, and the reporter exports them.
    pub fn is_deployed(&self) -> bool {
        matches!(
            self.status.as_str(),
            "DEPLOYING" | "INITIALIZING" | "RUNNING"
        )
    }
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
