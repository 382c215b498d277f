//! Per-subtask metrics over the answers of a real Flink 2.3 with two TaskManagers
//! (`tests/fixtures/flink-rest-2tm/`, and `flink-rest-latency/` with latency tracking on),
//! compared with what Flink's own PrometheusReporter exported from the same cluster at the same
//! moment (`reporter-*.prom` there).

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const TM_A: &str = "127.0.0.1:16200-5fe7b6";
const TM_B: &str = "127.0.0.1:16201-a941c5";
const JOB: &str = "8aac99feb443489a7a04a1ea49955797";
const SOURCE_VERTEX: &str = "cbc357ccb763df2852fee8c4fc7d55f2";

const TWO_TMS: &str = "flink-rest-2tm";
const LATENCY: &str = "flink-rest-latency";

fn dir() -> PathBuf {
    recorded(TWO_TMS)
}

fn recorded(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// The recorded answers, with some replaced (a failover moves a subtask).
struct Recorded {
    fixtures: FixtureSource,
    replaced: HashMap<String, Value>,
}

impl RestSource for Recorded {
    async fn get(&self, path_and_query: &str) -> Result<Bytes, RestError> {
        if let Some(v) = self.replaced.get(&decode(path_and_query)) {
            return Ok(Bytes::from(v.to_string()));
        }
        self.fixtures.get(path_and_query).await
    }
}

async fn render(mode: Mode, task_metrics: TaskMetrics, replaced: HashMap<String, Value>) -> String {
    render_from(TWO_TMS, mode, task_metrics, replaced).await
}

async fn render_from(
    fixtures: &str,
    mode: Mode,
    task_metrics: TaskMetrics,
    replaced: HashMap<String, Value>,
) -> String {
    let src = Recorded {
        fixtures: FixtureSource::load(&recorded(fixtures)),
        replaced,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let c = collect(&src, &mode, task_metrics, deadline, Some("test-cluster")).await;
    assert!(c.up, "{:?}", c.first_error);
    assert_eq!(c.errors, 0, "{:?}", c.first_error);
    let mut text = String::new();
    c.expo.render(&mut text);
    assert_valid_text(&text);
    text
}

fn tm(id: &str) -> Mode {
    Mode::TaskManager(Some(id.to_string()))
}

/// Family name -> its series' labels (a summary's `_count` is a family of its own here).
type Families = BTreeMap<String, Vec<BTreeMap<String, String>>>;

/// Parses the text format, as the reporter writes it (trailing comma in the labels) or the agent.
fn families(text: &str) -> Families {
    let mut out = Families::new();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, _) = l.rsplit_once(' ').expect("a value");
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let labels = labels.trim_end_matches('}');
        let mut map = BTreeMap::new();
        for kv in labels.split("\",").filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        out.entry(name.to_string()).or_default().push(map);
    }
    out
}

fn reporter(file: &str) -> Families {
    reporter_from(TWO_TMS, file)
}

fn reporter_from(fixtures: &str, file: &str) -> Families {
    let text = std::fs::read_to_string(recorded(fixtures).join(file)).expect("reporter fixture");
    families(&text)
}

/// Label values that the REST API cannot give exactly (see the mapping's module docs), blanked
/// on both sides before values are compared.
fn comparable(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut l = labels.clone();
    if let Some(v) = l.get_mut("task_attempt_id") {
        // Both end in <vertex id>_<subtask>_<attempt>; the reporter's starts with the execution
        // graph id, which the REST API does not have.
        *v = v.rsplitn(4, '_').take(3).collect::<Vec<_>>().join("_");
    }
    if let (Some(op), Some(task), true) = (
        l.get("operator_id"),
        l.get("task_id"),
        l.contains_key("operator_name"),
    ) {
        // Only a chain's first operator has a known id (the vertex's). Latency histograms have
        // the real id of every operator (from the group's name) and no operator_name.
        if op != task {
            l.insert("operator_id".into(), "(chained)".into());
        }
    }
    l
}

/// A series the reporter exports and the agent cannot: (family, operator_name) or (family, "").
type Gap = (String, String);

/// Compares family by family: label names, series counts and label values. Returns the series
/// only the reporter has (as gaps) and the families only the agent has.
fn compare(agent: &Families, reporter: &Families) -> (BTreeSet<Gap>, BTreeSet<String>) {
    let mut gaps = BTreeSet::new();
    for (name, series) in reporter {
        // The REST API has every statistic of a histogram but its count.
        if name
            .strip_suffix("_count")
            .is_some_and(|base| reporter.contains_key(base))
        {
            continue;
        }
        let ours: BTreeSet<_> = agent
            .get(name)
            .into_iter()
            .flatten()
            .map(comparable)
            .collect();
        let theirs: BTreeSet<_> = series.iter().map(comparable).collect();
        let only_ours: Vec<_> = ours.difference(&theirs).collect();
        assert!(
            only_ours.is_empty(),
            "{name}: series the reporter does not have: {only_ours:?}"
        );
        for missing in theirs.difference(&ours) {
            let op = missing.get("operator_name").cloned().unwrap_or_default();
            gaps.insert((name.clone(), op));
        }
    }
    let extra = agent
        .keys()
        .filter(|k| !reporter.contains_key(*k))
        .cloned()
        .collect();
    (gaps, extra)
}

/// What the agent may export beyond the reporter: its own gauges, and the histogram statistics
/// the REST API has and the reporter's summary leaves out.
/// `reporter` is what the reporter exported.
fn assert_only_known_extras(extra: &BTreeSet<String>, reporter: &Families) {
    let unexpected: Vec<&String> = extra
        .iter()
        .filter(|n| !n.starts_with("flink_job_state"))
        .filter(|n| {
            !["_min", "_max", "_mean", "_stddev", "_p90"]
                .iter()
                .any(|s| {
                    n.strip_suffix(s)
                        .is_some_and(|base| reporter.contains_key(&format!("{base}_count")))
                })
        })
        .collect();
    assert!(unexpected.is_empty(), "not in the reporter: {unexpected:?}");
}

#[tokio::test]
async fn a_taskmanagers_agent_exports_what_the_reporter_on_that_taskmanager_does() {
    let text = render(tm(TM_A), TaskMetrics::PerSubtask, HashMap::new()).await;
    let agent = families(&text);
    let theirs = reporter("reporter-taskmanager-a.prom");
    let (gaps, extra) = compare(&agent, &theirs);
    assert_eq!(gaps, BTreeSet::new());
    assert_only_known_extras(&extra, &theirs);
    // Per subtask, where the REST API says it runs, with the reporter's tm_id.
    let busy = &agent["flink_taskmanager_job_task_busyTimeMsPerSecond"];
    assert_eq!(busy.len(), 2, "one series per subtask (two vertices x 1)");
    assert!(busy.iter().all(|l| l["tm_id"] == "127_0_0_1:16200_5fe7b6"
        && l["subtask_index"] == "0"
        && l["task_attempt_num"] == "0"));
    // The operator names come back with the `:` the REST ids lost.
    let names: BTreeSet<&str> = agent["flink_taskmanager_job_task_operator_numRecordsIn"]
        .iter()
        .map(|l| l["operator_name"].as_str())
        .collect();
    assert!(
        names.contains("Source:_e2e_source") && names.contains("discard:_Writer"),
        "{names:?}"
    );

    // The other TaskManager runs none of the subtasks: its TaskManager scope only, as its reporter.
    let text = render(tm(TM_B), TaskMetrics::PerSubtask, HashMap::new()).await;
    let agent = families(&text);
    let (gaps, extra) = compare(&agent, &reporter("reporter-taskmanager-b.prom"));
    assert_eq!(gaps, BTreeSet::new());
    assert!(extra.is_empty(), "{extra:?}");
    assert!(!text.contains("flink_taskmanager_job_"), "{text}");
}

#[tokio::test]
async fn the_jobmanagers_agent_exports_what_the_reporter_on_the_jobmanager_does() {
    let text = render(Mode::JobManager, TaskMetrics::PerSubtask, HashMap::new()).await;
    let agent = families(&text);
    let theirs = reporter("reporter-jobmanager.prom");
    let (gaps, extra) = compare(&agent, &theirs);
    assert_eq!(gaps, BTreeSet::new());
    assert_only_known_extras(&extra, &theirs);
    // The two the aggregated version lacked: a text gauge (0, as the reporter has it) and the
    // source enumerator's backlog.
    assert!(agent.contains_key("flink_jobmanager_job_lastCheckpointExternalPath"));
    let splits = &agent["flink_jobmanager_job_operator_coordinator_enumerator_unassignedSplits"];
    assert_eq!(splits[0]["operator_id"], SOURCE_VERTEX);
    // No task series from the JobManager pod: the TaskManagers' agents export them.
    assert!(!text.contains("flink_taskmanager_"), "{text}");
}

#[tokio::test]
async fn after_a_failover_a_subtasks_series_move_with_it() {
    // The source vertex's subtask 0 now runs on TaskManager B, in its second attempt.
    let path = format!("/jobs/{JOB}/vertices/{SOURCE_VERTEX}");
    let mut detail: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("16-v0.json")).expect("fixture"))
            .expect("json");
    detail["subtasks"][0]["taskmanager-id"] = json!(TM_B);
    detail["subtasks"][0]["attempt"] = json!(1);
    let moved = HashMap::from([(path, detail)]);

    let a = render(tm(TM_A), TaskMetrics::PerSubtask, moved.clone()).await;
    let b = render(tm(TM_B), TaskMetrics::PerSubtask, moved).await;
    let on = |text: &str| -> BTreeSet<String> {
        families(text)
            .get("flink_taskmanager_job_task_busyTimeMsPerSecond")
            .into_iter()
            .flatten()
            .map(|l| format!("{}@{}#{}", l["task_id"], l["tm_id"], l["task_attempt_num"]))
            .collect()
    };
    assert_eq!(
        on(&a),
        BTreeSet::from(["90bea66de1c231edf33913ecd54406c1@127_0_0_1:16200_5fe7b6#0".to_string()])
    );
    assert_eq!(
        on(&b),
        BTreeSet::from([format!("{SOURCE_VERTEX}@127_0_0_1:16201_a941c5#1")])
    );
    assert!(
        b.contains(&format!("task_attempt_id=\"{SOURCE_VERTEX}_0_1\"")),
        "{b}"
    );
}

#[tokio::test]
async fn per_vertex_aggregates_stay_available_from_the_jobmanager() {
    let jm = render(Mode::JobManager, TaskMetrics::PerVertex, HashMap::new()).await;
    let agent = families(&jm);
    let busy = &agent["flink_taskmanager_job_task_busyTimeMsPerSecond"];
    assert_eq!(busy.len(), 2, "one series per vertex");
    assert!(busy
        .iter()
        .all(|l| !l.contains_key("subtask_index") && !l.contains_key("tm_id")));
    // ... and then the TaskManagers' agents export no task series.
    let a = render(tm(TM_A), TaskMetrics::PerVertex, HashMap::new()).await;
    assert!(!a.contains("flink_taskmanager_job_"), "{a}");
    assert!(a.contains("flink_taskmanager_Status_JVM_Memory_Heap_Used"));
}

#[tokio::test]
async fn latency_histograms_are_one_family_labelled_as_the_reporter_does() {
    const TM: &str = "127.0.0.1:16201-87f65c";
    let text = render_from(LATENCY, tm(TM), TaskMetrics::PerSubtask, HashMap::new()).await;
    let agent = families(&text);
    let theirs = reporter_from(LATENCY, "reporter-taskmanager-b.prom");
    let (gaps, extra) = compare(&agent, &theirs);
    assert_eq!(gaps, BTreeSet::new());
    assert_only_known_extras(&extra, &theirs);
    let latency = &agent
        ["flink_taskmanager_job_task_latency_source_id_operator_id_operator_subtask_index_latency"];
    // Every operator but the source (the one chained behind it and both of the second vertex),
    // each from the one source, 6 quantiles each: one series per operator and quantile.
    let operators: BTreeSet<&str> = latency.iter().map(|l| l["operator_id"].as_str()).collect();
    assert_eq!(operators.len(), 3, "{operators:?}");
    assert_eq!(latency.len(), 18);
    assert!(latency
        .iter()
        .all(|l| l["source_id"] == "cbc357ccb763df2852fee8c4fc7d55f2"
            && l["operator_subtask_index"] == "0"
            && !l.contains_key("operator_name")));
    // No family per source and operator.
    assert!(!text.contains("source_id_cbc357"), "{text}");
}

#[test]
fn operators_are_named_and_identified_from_the_chain() {
    let v = JobVertex {
        job_id: "j".into(),
        job_name: "job".into(),
        task_id: "abc".into(),
        task_name: "Source: my src -> map.x -> (Sink: a, b)".into(),
    };
    assert_eq!(
        v.operator("Source__my_src"),
        ("abc".to_string(), "Source: my src".to_string())
    );
    assert_eq!(
        v.operator("map_x"),
        ("abc_1".to_string(), "map.x".to_string())
    );
    assert_eq!(v.operator("b"), ("abc_3".to_string(), "b".to_string()));
    // Not in the vertex name (a name Flink shortened): kept as the REST API has it.
    assert_eq!(
        v.operator("other"),
        ("abc_other".to_string(), "other".to_string())
    );
    // Flink cuts operator names at 80 characters in metric groups.
    let long = "x".repeat(100);
    let v = JobVertex {
        task_name: format!("Source: s -> {long}"),
        ..v
    };
    assert_eq!(v.operator(&"x".repeat(80)).0, "abc_1");
}
