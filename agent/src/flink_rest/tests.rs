//! The mapping over real Flink 2.3 REST answers (`tests/fixtures/flink-rest/`), served by a
//! fake [`RestSource`] that answers each request with the fixture recorded for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::{json, Value};

use super::mapping::*;
use super::*;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/flink-rest")
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Answers like the Flink REST API that the fixtures were recorded from: a request without a
/// query gets the recorded answer of that path; `?get=ids` gets the recorded `?get=` answer of
/// that path, filtered to the ids asked for (Flink leaves out ids it does not know).
struct FixtureSource {
    /// path (decoded) -> (file without query, file with get=)
    by_path: HashMap<String, (Option<PathBuf>, Option<PathBuf>)>,
}

impl FixtureSource {
    fn load(dir: &Path) -> Self {
        let index = std::fs::read_to_string(dir.join("INDEX.md"))
            .unwrap_or_else(|e| panic!("reading {}/INDEX.md: {e}", dir.display()));
        let mut by_path: HashMap<String, (Option<PathBuf>, Option<PathBuf>)> = HashMap::new();
        for line in index.lines() {
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            if cols.len() < 4 || !cols[2].starts_with("`GET ") {
                continue;
            }
            let request = cols[2].trim_matches('`').trim_start_matches("GET ");
            let (path, query) = match request.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (request, None),
            };
            let entry = by_path.entry(decode(path)).or_default();
            let file = dir.join(cols[1]);
            match query {
                None => entry.0 = Some(file),
                Some(q) if q.starts_with("get=") => entry.1 = Some(file),
                Some(_) => {}
            }
        }
        Self { by_path }
    }
}

impl RestSource for FixtureSource {
    async fn get(&self, path_and_query: &str) -> Result<Bytes, RestError> {
        self.get_json(path_and_query)
            .await
            .map(|v| Bytes::from(v.to_string()))
    }
}

impl FixtureSource {
    async fn get_json(&self, path_and_query: &str) -> Result<Value, RestError> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let not_found = || RestError::Status(path_and_query.to_string(), 404, String::new());
        let entry = self.by_path.get(&decode(path)).ok_or_else(not_found)?;
        let file = match query {
            None => entry.0.as_ref(),
            Some(_) => entry.1.as_ref(),
        }
        .ok_or_else(not_found)?;
        let text = std::fs::read_to_string(file).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let Some(q) = query else { return Ok(value) };
        let wanted: Vec<String> = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("get="))
            .unwrap_or("")
            .split(',')
            .map(decode)
            .collect();
        let items = value.as_array().cloned().unwrap_or_default();
        Ok(Value::Array(
            items
                .into_iter()
                .filter(|i| wanted.iter().any(|w| Some(w.as_str()) == i["id"].as_str()))
                .collect(),
        ))
    }
}

/// What a scrape of the agent's `/metrics` gets from `metrics`.
async fn scrape(metrics: &FlinkMetrics) -> String {
    metrics
        .render()
        .await
        .iter()
        .map(|chunk| String::from_utf8_lossy(chunk))
        .collect()
}

async fn render_fixtures(dir: &Path, mode: Mode) -> (Collected, String) {
    let src = FixtureSource::load(dir);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let collected = collect(&src, &mode, TaskMetrics::PerVertex, deadline, None).await;
    let mut text = String::new();
    collected.expo.render(&mut text);
    (collected, text)
}

/// `name{labels} value` lines of the text, as (name, sorted labels, value text).
/// (name, sorted labels, value text).
type Sample = (String, Vec<(String, String)>, String);

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels closed");
                    let mut labels: Vec<(String, String)> = body
                        .split(',')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label k=v");
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    labels.sort();
                    (n.to_string(), labels)
                }
                None => (series.to_string(), Vec::new()),
            };
            (name, labels, value.to_string())
        })
        .collect()
}

fn find<'a>(all: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    all.iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .collect()
}

fn value_of(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let all = samples(text);
    let found = find(&all, name, labels);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {name}{labels:?}, found {found:?} in:\n{text}"
    );
    match found[0].2.as_str() {
        "NaN" => f64::NAN,
        v => v.parse().unwrap(),
    }
}

/// Structural check of the text format: every family has HELP then TYPE before its samples,
/// appears once, and every sample belongs to the family announced last.
fn assert_valid_text(text: &str) {
    let mut seen = std::collections::HashSet::new();
    let mut current: Option<(String, String)> = None;
    let mut series = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(seen.insert(name.clone()), "family {name} announced twice");
            current = None;
            let _ = name;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(kind == "gauge" || kind == "summary", "type {kind}");
            current = Some((name.to_string(), kind.to_string()));
        } else {
            let (fam, kind) = current.clone().expect("sample before # TYPE");
            let name = line.split(['{', ' ']).next().unwrap();
            let ok = name == fam || (kind == "summary" && name == format!("{fam}_count"));
            assert!(ok, "sample {line} outside its family {fam}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad name {name}"
            );
            let (s, v) = line.rsplit_once(' ').unwrap();
            assert!(series.insert(s.to_string()), "duplicate series {s}");
            assert!(
                v == "NaN" || v == "+Inf" || v == "-Inf" || v.parse::<f64>().is_ok(),
                "bad value in {line}"
            );
        }
    }
}

const SQL_JOB: &str = "68353e942cf2218f78fcca81d3bd12dc";
const HEALTHY_JOB: &str = "a4bbcbdfdeac1d241450fcd68f207039";
const FAILING_JOB: &str = "48642206bd12556f840945af4b3c4024";
const V0: &str = "cbc357ccb763df2852fee8c4fc7d55f2";

#[tokio::test]
async fn jobmanager_metrics_named_like_the_reporter() {
    let (collected, text) = render_fixtures(&fixtures_dir(), Mode::JobManager).await;
    assert!(collected.up);
    assert_valid_text(&text);
    // String values of ?get= become numbers.
    assert_eq!(
        value_of(&text, "flink_jobmanager_Status_JVM_Memory_Heap_Used", &[]),
        56835672.0
    );
    assert_eq!(value_of(&text, "flink_jobmanager_numRunningJobs", &[]), 3.0);
    assert_eq!(
        value_of(&text, "flink_jobmanager_Status_JVM_CPU_Load", &[]),
        0.041800000000000004
    );
    assert!(text.contains("# TYPE flink_jobmanager_Status_JVM_Memory_Heap_Used gauge\n"));
    // No TaskManager series in a JobManager pod: the TaskManager's own agent reports them.
    assert!(!text.contains("flink_taskmanager_Status"), "{text}");
    // Counters are gauges, with no `_total` suffix.
    assert!(samples(&text)
        .iter()
        .all(|(n, _, _)| !n.ends_with("_total")));
}

#[tokio::test]
async fn job_metrics_carry_job_id_and_name() {
    let (_, text) = render_fixtures(&fixtures_dir(), Mode::JobManager).await;
    let healthy = [("job_id", HEALTHY_JOB), ("job_name", "demo_healthy")];
    assert_eq!(
        value_of(&text, "flink_jobmanager_job_uptime", &healthy),
        298700.0
    );
    assert_eq!(
        value_of(&text, "flink_jobmanager_job_numRestarts", &healthy),
        0.0
    );
    assert_eq!(
        value_of(&text, "flink_jobmanager_job_lastCheckpointSize", &healthy),
        3240.0
    );
    assert_eq!(
        value_of(
            &text,
            "flink_job_state",
            &[("job_id", HEALTHY_JOB), ("state", "RUNNING")]
        ),
        1.0
    );
    // A failed job: its state, but no job metrics (the reporter has dropped them too).
    assert_eq!(
        value_of(
            &text,
            "flink_job_state",
            &[("job_name", "demo_failing"), ("state", "FAILED")]
        ),
        1.0
    );
    let all = samples(&text);
    assert!(find(
        &all,
        "flink_jobmanager_job_uptime",
        &[("job_id", FAILING_JOB)]
    )
    .is_empty());
}

#[tokio::test]
async fn restarting_job_reports_its_restarts() {
    let dir = fixtures_dir().join("snapshot-1-failing-job-RESTARTING");
    let (collected, text) = render_fixtures(&dir, Mode::JobManager).await;
    assert!(collected.up);
    assert_valid_text(&text);
    let failing = [("job_id", FAILING_JOB), ("job_name", "demo_failing")];
    assert_eq!(
        value_of(&text, "flink_jobmanager_job_numRestarts", &failing),
        3.0,
        "{text}"
    );
    assert_eq!(
        value_of(
            &text,
            "flink_job_state",
            &[("job_id", FAILING_JOB), ("state", "RESTARTING")]
        ),
        1.0
    );
    // While restarting, the job still has vertex metrics.
    let all = samples(&text);
    assert!(!find(
        &all,
        "flink_taskmanager_job_task_numRecordsOut",
        &[("job_id", FAILING_JOB)]
    )
    .is_empty());
}

#[tokio::test]
async fn vertex_metrics_are_keyed_on_job_and_vertex() {
    let (_, text) = render_fixtures(&fixtures_dir(), Mode::JobManager).await;
    // A vertex's records-in rate, summed over its subtasks.
    let sink = [
        ("job_id", SQL_JOB),
        ("job_name", "demo_sql_datagen_blackhole"),
        ("task_id", "90bea66de1c231edf33913ecd54406c1"),
        ("task_name", "GroupAggregate_4_____sink_5_:_Writer"),
    ];
    assert_eq!(
        value_of(
            &text,
            "flink_taskmanager_job_task_numRecordsInPerSecond",
            &sink
        ),
        50.0
    );
    // The same vertex id in two jobs is two series.
    let all = samples(&text);
    let v0 = find(
        &all,
        "flink_taskmanager_job_task_numRecordsOut",
        &[("task_id", V0)],
    );
    let jobs: std::collections::HashSet<_> = v0
        .iter()
        .map(|(_, l, _)| l.iter().find(|(k, _)| k == "job_id").unwrap().1.clone())
        .collect();
    assert_eq!(jobs.len(), 2, "{v0:?}");
    // Two subtasks: counts are summed...
    assert_eq!(
        value_of(
            &text,
            "flink_taskmanager_job_task_numRecordsOut",
            &[("task_id", V0), ("job_id", HEALTHY_JOB)]
        ),
        59620.0
    );
    // ...busy time is the busiest subtask's...
    assert_eq!(
        value_of(
            &text,
            "flink_taskmanager_job_task_busyTimeMsPerSecond",
            &[("task_id", V0), ("job_id", HEALTHY_JOB)]
        ),
        10.0
    );
    // ...and a watermark is the lowest (Long.MIN_VALUE here: no watermark yet).
    let wm = value_of(
        &text,
        "flink_taskmanager_job_task_currentInputWatermark",
        &[("task_id", "90bea66de1c231edf33913ecd54406c1")],
    );
    assert_eq!(wm, -9.223372036854776e18);
    // Aggregates that Flink reports as the string "NaN" stay NaN, a valid sample value.
    assert!(value_of(
        &text,
        "flink_taskmanager_job_task_busyTimeMsPerSecond",
        &[("task_id", V0), ("job_id", SQL_JOB)]
    )
    .is_nan());
    // Vertex series have the documented label set, nothing per subtask.
    let (_, labels, _) = find(
        &all,
        "flink_taskmanager_job_task_numRecordsInPerSecond",
        &sink,
    )[0];
    let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["job_id", "job_name", "task_id", "task_name"]);
}

#[tokio::test]
async fn operator_metrics_get_operator_name_and_user_groups_in_the_name() {
    let (_, text) = render_fixtures(&fixtures_dir(), Mode::JobManager).await;
    let v = value_of(
        &text,
        "flink_taskmanager_job_task_operator_demo_eventsPerSecond",
        &[
            ("job_id", HEALTHY_JOB),
            ("task_id", V0),
            ("operator_name", "instrumented_map"),
        ],
    );
    assert_eq!(v, 200.01666666666665);
}

#[tokio::test]
async fn empty_answers_give_no_series_and_no_error() {
    // The canceled job's and the finished job's `?get=` answers are `[]`, like every metrics
    // request right after Flink started.
    let (collected, text) = render_fixtures(&fixtures_dir(), Mode::JobManager).await;
    assert!(collected.up);
    assert!(!text.contains("95a2788f43e71362c4fdab24de11de96\",job_name=\"demo_to_cancel\",task"));
    // Nothing but /overview answers: up, and no Flink series at all.
    struct OnlyOverview;
    impl RestSource for OnlyOverview {
        async fn get(&self, p: &str) -> Result<Bytes, RestError> {
            let v = match p {
                "/overview" => json!({"taskmanagers": 0}),
                "/jobs/overview" => json!({"jobs": []}),
                _ => json!([]),
            };
            Ok(Bytes::from(v.to_string()))
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let c = collect(
        &OnlyOverview,
        &Mode::All,
        TaskMetrics::PerSubtask,
        deadline,
        None,
    )
    .await;
    assert!(c.up);
    assert!(c.expo.is_empty());
    assert_eq!(c.errors, 0);
}

#[tokio::test]
async fn taskmanager_mode_reports_only_that_taskmanager() {
    let tm = "127.0.0.1:6122-6d1794";
    let (collected, text) =
        render_fixtures(&fixtures_dir(), Mode::TaskManager(Some(tm.to_string()))).await;
    assert!(collected.up);
    assert_valid_text(&text);
    let labels = [("host", "127_0_0_1"), ("tm_id", "127_0_0_1:6122_6d1794")];
    assert_eq!(
        value_of(
            &text,
            "flink_taskmanager_Status_JVM_Memory_Heap_Used",
            &labels
        ),
        142807552.0
    );
    assert_eq!(
        value_of(
            &text,
            "flink_taskmanager_Status_Shuffle_Netty_AvailableMemorySegments",
            &labels
        ),
        3675.0
    );
    assert!(!text.contains("flink_jobmanager"), "{text}");

    // An unknown TaskManager (not registered yet) is an error, not a panic, and Flink is up.
    let (c, text) = render_fixtures(&fixtures_dir(), Mode::TaskManager(Some("nope".into()))).await;
    assert!(c.up);
    assert!(c.errors >= 1);
    assert!(text.is_empty());
}

#[test]
fn text_values_are_zero_as_in_the_reporter_booleans_are_numbers() {
    assert_eq!(parse_value(&json!("42")), Some(42.0));
    assert_eq!(parse_value(&json!(1.5)), Some(1.5));
    assert_eq!(parse_value(&json!("true")), Some(1.0));
    assert_eq!(parse_value(&json!("false")), Some(0.0));
    assert!(parse_value(&json!("NaN")).unwrap().is_nan());
    assert_eq!(parse_value(&json!("-Infinity")), Some(f64::NEG_INFINITY));
    assert_eq!(parse_value(&json!("n/a")), None);
    assert_eq!(parse_value(&json!("s3://bucket/chk-7")), None);
    assert_eq!(parse_value(&json!("")), None);
    assert_eq!(parse_value(&Value::Null), None);

    let items: Vec<MetricValue> = serde_json::from_value(json!([
        {"id": "lastCheckpointExternalPath", "value": "file:/tmp/chk-3"},
        {"id": "numRestarts", "value": "2"}
    ]))
    .unwrap();
    let values = numeric_values(&items);
    assert_eq!(
        values,
        vec![
            ("lastCheckpointExternalPath".to_string(), 0.0),
            ("numRestarts".to_string(), 2.0)
        ]
    );
}

#[test]
fn names_and_label_values_are_sanitised_like_the_reporter() {
    assert_eq!(
        sanitize_name("Status.JVM.Memory.Heap.Used"),
        "Status_JVM_Memory_Heap_Used"
    );
    assert_eq!(sanitize_name("a-b:c d"), "a_b:c_d");
    assert_eq!(
        sanitize_label_value("Source: src[1] -> Calc[2]"),
        "Source:_src_1_____Calc_2_"
    );
    assert_eq!(sanitize_label_value("a:b.c"), "a:b_c");
    let format_value = |v: f64| {
        let mut s = String::new();
        write_value(&mut s, v);
        s
    };
    assert_eq!(format_value(56835672.0), "56835672");
    assert_eq!(format_value(0.25), "0.25");
    assert_eq!(format_value(f64::INFINITY), "+Inf");
    assert_eq!(format_value(f64::NAN), "NaN");
    assert_eq!(format_value(-9.223372036854776e18), "-9.223372036854776e18");
}

#[test]
fn one_series_per_name_and_labels_and_one_type_per_family() {
    let scope = Scope::Job {
        host: "h".into(),
        job_id: "j1".into(),
        job_name: "demo".into(),
    };
    let values: Vec<(String, f64)> = [
        ("a.b", 1.0),
        // Sanitises to the series of `a.b`: the first one is kept.
        ("a_b", 2.0),
        ("uptime", 3.0),
        // A histogram `lat` makes `flink_jobmanager_job_lat` a summary...
        ("lat_median", 4.0),
        ("lat_p99", 5.0),
    ]
    .iter()
    .map(|(id, v)| (id.to_string(), *v))
    .collect();
    let mut expo = Exposition::new();
    expo.add_scope(&scope, &values);
    // ...so a plain gauge of that name (another scope's) is dropped, not announced twice.
    expo.add_scope(&scope, &[("lat".to_string(), 6.0)]);
    // The same job again (a second refresh's worth): nothing new.
    expo.add_scope(&scope, &values);
    expo.add_gauge(
        "flink_job_state",
        "state",
        vec![("state", "odd \"state\"\\\n".to_string())],
        1.0,
    );
    let mut text = String::new();
    expo.render(&mut text);
    assert_valid_text(&text);
    assert_eq!(expo.len(), 5, "{text}");
    let ab: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("flink_jobmanager_job_a_b{"))
        .collect();
    assert_eq!(
        ab,
        ["flink_jobmanager_job_a_b{host=\"h\",job_id=\"j1\",job_name=\"demo\"} 1"]
    );
    assert!(text.contains("# TYPE flink_jobmanager_job_lat summary\n"));
    assert!(!text.contains("} 6\n"), "{text}");
    assert!(
        text.contains("flink_job_state{state=\"odd \\\"state\\\"\\\\\\n\"} 1\n"),
        "{text}"
    );
}

#[test]
fn aggregates_chosen_per_metric() {
    assert_eq!(aggregate_for("numRecordsInPerSecond"), Agg::Sum);
    assert_eq!(aggregate_for("Calc[2].numRecordsOut"), Agg::Sum);
    assert_eq!(aggregate_for("busyTimeMsPerSecond"), Agg::Max);
    assert_eq!(aggregate_for("isBackPressured"), Agg::Max);
    assert_eq!(
        aggregate_for("Shuffle.Netty.Input.Buffers.inPoolUsage"),
        Agg::Max
    );
    assert_eq!(aggregate_for("mailboxLatencyMs_p99"), Agg::Max);
    assert_eq!(
        aggregate_for("GroupAggregate[4].currentInputWatermark"),
        Agg::Min
    );
    assert_eq!(
        split_operator("Source__src[1].numRecordsIn"),
        Some(("Source__src[1]", "numRecordsIn"))
    );
    assert_eq!(split_operator("Shuffle.Netty.Input.numBytesInLocal"), None);
    assert_eq!(split_operator("numRecordsIn"), None);
}

#[test]
fn histograms_become_summaries() {
    let scope = Scope::Vertex(JobVertex {
        job_id: "j".into(),
        job_name: "job".into(),
        task_id: "t".into(),
        task_name: "task".into(),
    });
    let stats = [
        ("_median", 1.0),
        ("_p75", 2.0),
        ("_p95", 3.0),
        ("_p98", 4.0),
        ("_p99", 5.0),
        ("_p999", 6.0),
        ("_count", 7.0),
        ("_max", 8.0),
    ];
    let mut values: Vec<(String, f64)> = stats
        .iter()
        .map(|(s, v)| (format!("mailboxLatencyMs{s}"), *v))
        .collect();
    // A plain gauge whose name happens to end like a histogram statistic stays a gauge.
    values.push(("foo_max".into(), 9.0));
    let mut expo = Exposition::new();
    expo.add_scope(&scope, &values);
    let mut text = String::new();
    expo.render(&mut text);
    assert_valid_text(&text);
    assert!(text.contains("# TYPE flink_taskmanager_job_task_mailboxLatencyMs summary\n"));
    assert_eq!(
        value_of(
            &text,
            "flink_taskmanager_job_task_mailboxLatencyMs",
            &[("quantile", "0.99")]
        ),
        5.0
    );
    assert_eq!(
        value_of(
            &text,
            "flink_taskmanager_job_task_mailboxLatencyMs_count",
            &[]
        ),
        7.0
    );
    assert_eq!(
        value_of(
            &text,
            "flink_taskmanager_job_task_mailboxLatencyMs_max",
            &[]
        ),
        8.0
    );
    assert!(text.contains("# TYPE flink_taskmanager_job_task_foo_max gauge\n"));
}

#[test]
fn default_rest_urls() {
    assert_eq!(
        default_rest_url(Some("taskmanager"), Some("my-job"), Some("team-a")).as_deref(),
        Some("http://my-job-rest.team-a:8081")
    );
    assert_eq!(
        default_rest_url(Some("taskmanager"), None, Some("ns")),
        None
    );
    assert_eq!(
        default_rest_url(Some("jobmanager"), Some("my-job"), Some("ns")).as_deref(),
        Some("http://localhost:8081")
    );
}

#[tokio::test]
async fn flink_down_is_flink_up_0_quickly() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let metrics = FlinkMetrics::new(FlinkRestConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        component: Some("jobmanager".into()),
        taskmanager_id: None,
        timeout: Duration::from_secs(2),
        cluster_id: None,
        learn_from_log: false,
        task_metrics: Default::default(),
    });
    let started = Instant::now();
    let out = scrape(&metrics).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_valid_text(&out);
    assert_eq!(value_of(&out, "flink_up", &[]), 0.0);
    assert!(value_of(&out, "flink_scrape_duration_seconds", &[]) < 2.0);
}

#[tokio::test]
async fn a_silent_flink_is_cut_off_at_the_timeout() {
    // Accepts connections but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    let metrics = FlinkMetrics::new(FlinkRestConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        component: None,
        taskmanager_id: None,
        timeout: Duration::from_millis(300),
        cluster_id: None,
        learn_from_log: false,
        task_metrics: Default::default(),
    });
    let started = Instant::now();
    let out = scrape(&metrics).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(value_of(&out, "flink_up", &[]), 0.0);
    hold.abort();
}

/// The fixtures served over real HTTP (one request per connection), counting requests; `down`
/// makes it answer 503 like a JobManager that is going away.
async fn serve_fixtures(
    dir: PathBuf,
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let src = Arc::new(FixtureSource::load(&dir));
    let (c, d) = (count.clone(), down.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (src, c, d) = (src.clone(), c.clone(), d.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf).to_string();
                let target = head.split(' ').nth(1).unwrap_or("/").to_string();
                let (status, body) = if d.load(Ordering::SeqCst) {
                    ("503 Service Unavailable", "{}".to_string())
                } else {
                    match src.get_json(&target).await {
                        Ok(v) => ("200 OK", v.to_string()),
                        Err(_) => ("404 Not Found", r#"{"errors":["Not found"]}"#.to_string()),
                    }
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, count, down)
}

/// The agent of the fixtures' TaskManager, reading the REST API at `base_url`.
fn fixture_taskmanager(base_url: &str) -> FlinkMetrics {
    FlinkMetrics::new(FlinkRestConfig {
        base_url: base_url.to_string(),
        component: Some("taskmanager".into()),
        taskmanager_id: Some("127.0.0.1:6122-6d1794".into()),
        timeout: Duration::from_secs(5),
        cluster_id: None,
        learn_from_log: false,
        task_metrics: Default::default(),
    })
}

#[tokio::test]
async fn over_http_with_a_shared_snapshot_and_an_honest_flink_up() {
    let (port, count, down) = serve_fixtures(fixtures_dir()).await;
    let metrics = fixture_taskmanager(&format!("http://127.0.0.1:{port}/"))
        .with_min_interval(Duration::from_secs(60));
    let first = scrape(&metrics).await;
    assert_valid_text(&first);
    assert_eq!(value_of(&first, "flink_up", &[]), 1.0);
    // The TaskManager id went into the path percent-encoded, and came back as labels.
    assert_eq!(
        value_of(
            &first,
            "flink_taskmanager_Status_JVM_Memory_Heap_Used",
            &[("tm_id", "127_0_0_1:6122_6d1794")]
        ),
        142807552.0
    );
    let full = count.load(Ordering::SeqCst);
    assert!(full >= 4, "overview, detail, ids, values: {full}");

    // Within the interval: the same series, and only the liveness probe hits Flink.
    let second = scrape(&metrics).await;
    assert_eq!(count.load(Ordering::SeqCst), full + 1);
    assert!(second.contains("flink_taskmanager_Status_JVM_Memory_Heap_Used{"));
    assert_eq!(value_of(&second, "flink_up", &[]), 1.0);

    // Flink goes away: flink_up 0 at once and no stale series, despite the interval.
    down.store(true, Ordering::SeqCst);
    let third = scrape(&metrics).await;
    assert_valid_text(&third);
    assert_eq!(value_of(&third, "flink_up", &[]), 0.0);
    assert!(!third.contains("flink_taskmanager_Status"), "{third}");

    // Back: a full refresh again.
    down.store(false, Ordering::SeqCst);
    let fourth = scrape(&metrics).await;
    assert_eq!(value_of(&fourth, "flink_up", &[]), 1.0);
    assert!(fourth.contains("flink_taskmanager_Status_JVM_Memory_Heap_Used{"));
}

#[tokio::test]
async fn the_snapshot_is_dropped_once_too_old_to_serve() {
    let (port, _count, _down) = serve_fixtures(fixtures_dir()).await;
    let metrics = fixture_taskmanager(&format!("http://127.0.0.1:{port}"))
        .with_min_interval(Duration::from_millis(200));
    let text = scrape(&metrics).await;
    assert!(text.contains("flink_taskmanager_Status_JVM_Memory_Heap_Used{"));
    assert!(metrics.snapshot.lock().await.is_some());
    let waited = Instant::now();
    while metrics.snapshot.lock().await.is_some() {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the snapshot is still held after its 200 ms"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next scrape reads Flink again and serves the same series.
    assert!(scrape(&metrics)
        .await
        .contains("flink_taskmanager_Status_JVM_Memory_Heap_Used{"));
}

#[tokio::test]
async fn the_flink_host_is_resolved_by_name() {
    // In a TaskManager pod the REST URL is the JobManager service's DNS name; the lookup runs in
    // the refresh thread's own runtime.
    let (port, _count, _down) = serve_fixtures(fixtures_dir()).await;
    let text = scrape(&fixture_taskmanager(&format!("http://localhost:{port}"))).await;
    assert_eq!(value_of(&text, "flink_up", &[]), 1.0, "{text}");
    assert!(text.contains("flink_taskmanager_Status_JVM_Memory_Heap_Used{"));
}

mod subtasks;
