//! Flink's metrics, read by the agent from a REAL local Flink 2.3 (JobManager + TaskManager
//! started from `.tools/flink`) running real streaming jobs, parsed back with a Prometheus text
//! parser: names and labels as Flink's PrometheusReporter makes them, and `flink_up 0` once
//! Flink is gone.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flink_agent::flink_rest::{FlinkMetrics, FlinkRestConfig};
use flink_injector_tests::agent::start_agent_beside;
use flink_injector_tests::flink::{reporter_label as sanitize, LocalFlink, CLUSTER_ID};
use flink_injector_tests::wait_for;
use prometheus_parse::{LineInfo, Sample, Scrape, Value};

/// Parses the text with a real parser, and rejects any line the parser does not recognise
/// (prometheus-parse skips those silently).
fn parse(text: &str) -> Result<Scrape> {
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Ignored | LineInfo::Empty => bail!("not Prometheus text: {line:?}"),
            LineInfo::Sample { value, .. } if value.parse::<f64>().is_err() => {
                bail!("not a sample value: {line:?}")
            }
            _ => {}
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok::<_, io::Error>(l.to_string())))
        .context("parsing the exposition")?;
    Ok(scrape)
}

fn gauge(s: &Sample) -> Option<f64> {
    match s.value {
        Value::Gauge(v) | Value::Untyped(v) | Value::Counter(v) => Some(v),
        _ => None,
    }
}

/// The samples named `name` whose labels include `labels`.
fn find<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

fn one(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match find(scrape, name, labels).as_slice() {
        [s] => gauge(s),
        _ => None,
    }
}

fn render(rt: &tokio::runtime::Runtime, m: &FlinkMetrics) -> String {
    rt.block_on(m.render())
        .iter()
        .map(|chunk| String::from_utf8_lossy(chunk))
        .collect()
}

#[test]
fn flink_metrics_from_a_real_flink() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let mut flink = LocalFlink::start(logs.path())?;
    let job_name = "e2e-streaming";
    let failing_name = "e2e-failing";
    let job_id = flink.submit_streaming_job(job_name)?;
    let failing_id = flink.submit_failing_job(failing_name)?;
    flink.wait_job_state(&job_id, "RUNNING", Duration::from_secs(90))?;
    let tm_id = flink
        .taskmanager_ids()?
        .into_iter()
        .next()
        .context("no TaskManager")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs(5);
    let jm = FlinkMetrics::new(FlinkRestConfig {
        base_url: flink.rest_url(),
        component: Some("jobmanager".into()),
        taskmanager_id: None,
        timeout,
        cluster_id: Some(CLUSTER_ID.into()),
        learn_from_log: false,
        task_metrics: Default::default(),
    })
    .with_min_interval(Duration::ZERO);
    let tm = FlinkMetrics::new(FlinkRestConfig {
        base_url: flink.rest_url(),
        component: Some("taskmanager".into()),
        taskmanager_id: Some(tm_id.clone()),
        timeout,
        cluster_id: Some(CLUSTER_ID.into()),
        learn_from_log: false,
        task_metrics: Default::default(),
    })
    .with_min_interval(Duration::ZERO);

    let job_labels = [("job_id", job_id.as_str()), ("job_name", "e2e_streaming")];
    let failing_labels = [("job_id", failing_id.as_str()), ("job_name", "e2e_failing")];
    // The REST API's metrics appear only after the JobManager fetched them (the first request
    // answers `[]`), and rates need a few seconds of records: poll like Prometheus would.
    let (text, scrape) = wait_for(
        "the job's metrics over REST",
        Duration::from_secs(120),
        || {
            let text = render(&rt, &jm);
            let scrape = parse(&text)?;
            let heap = one(&scrape, "flink_jobmanager_Status_JVM_Memory_Heap_Used", &[]);
            let uptime = one(&scrape, "flink_jobmanager_job_uptime", &job_labels);
            let restarts = one(&scrape, "flink_jobmanager_job_numRestarts", &failing_labels);
            let ready = heap.is_some_and(|v| v > 0.0)
                && uptime.is_some_and(|v| v > 0.0)
                && restarts.is_some_and(|v| v >= 1.0);
            Ok(ready.then_some((text, scrape)))
        },
    )?;

    assert_eq!(one(&scrape, "flink_up", &[]), Some(1.0), "{text}");
    assert!(one(&scrape, "flink_scrape_duration_seconds", &[]).is_some_and(|v| v < 5.0));
    assert!(
        one(&scrape, "flink_jobmanager_numRegisteredTaskManagers", &[]) == Some(1.0),
        "{text}"
    );
    assert_eq!(
        one(
            &scrape,
            "flink_job_state",
            &[("job_id", job_id.as_str()), ("state", "RUNNING")]
        ),
        Some(1.0)
    );
    // Job-scope counters are gauges, with no _total.
    assert!(text.contains("# TYPE flink_jobmanager_job_numRestarts gauge\n"));
    assert!(scrape.samples.iter().all(|s| !s.metric.ends_with("_total")));
    // The JobManager pod reports neither TaskManager nor task series: each TaskManager's agent
    // reports its own and those of the subtasks running on it.
    assert!(!text.contains("flink_taskmanager_"), "{text}");

    // The TaskManager's agent: the vertex with records in (the one after the keyBy), per
    // subtask, on this TaskManager.
    let (tm_text, tm_scrape) =
        wait_for("records in, per subtask", Duration::from_secs(120), || {
            let text = render(&rt, &tm);
            let scrape = parse(&text)?;
            let busy = find(
                &scrape,
                "flink_taskmanager_job_task_numRecordsInPerSecond",
                &job_labels,
            )
            .iter()
            .filter_map(|s| gauge(s))
            .fold(0.0, f64::max);
            Ok((busy > 0.0).then_some((text, scrape)))
        })?;
    let vertex = find(
        &tm_scrape,
        "flink_taskmanager_job_task_numRecordsInPerSecond",
        &job_labels,
    )
    .into_iter()
    .find(|s| gauge(s).is_some_and(|v| v > 0.0))
    .context("a vertex with records in")?;
    let task_name = vertex.labels.get("task_name").unwrap_or_default();
    assert!(task_name.starts_with("double"), "{task_name}");
    assert_eq!(vertex.labels.get("task_id").map(str::len), Some(32));
    assert_eq!(vertex.labels.get("subtask_index"), Some("0"), "{tm_text}");
    assert_eq!(
        vertex.labels.get("tm_id").map(str::to_string),
        Some(sanitize(&tm_id))
    );

    // A TaskManager pod's agent: that TaskManager's metrics, labelled like the reporter does.
    let tm_labels = [
        ("tm_id", sanitize(&tm_id)),
        ("host", "127_0_0_1".to_string()),
    ];
    let tm_labels: Vec<(&str, &str)> = tm_labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (tm_text, tm_scrape) =
        wait_for("the TaskManager's metrics", Duration::from_secs(60), || {
            let text = render(&rt, &tm);
            let scrape = parse(&text)?;
            Ok(one(
                &scrape,
                "flink_taskmanager_Status_JVM_Memory_Heap_Used",
                &tm_labels,
            )
            .is_some_and(|v| v > 0.0)
            .then_some((text, scrape)))
        })?;
    assert_eq!(one(&tm_scrape, "flink_up", &[]), Some(1.0));
    assert!(
        one(
            &tm_scrape,
            "flink_taskmanager_Status_Shuffle_Netty_TotalMemorySegments",
            &tm_labels
        )
        .is_some_and(|v| v > 0.0),
        "{tm_text}"
    );
    assert!(
        !tm_text.contains("flink_jobmanager_"),
        "a TaskManager's agent reports only its TaskManager"
    );
    // Every sample of a family has the same label names (the text format allows otherwise,
    // Prometheus queries and dashboards do not expect it).
    let mut label_sets: HashMap<&str, Vec<String>> = HashMap::new();
    for s in &scrape.samples {
        let mut keys: Vec<String> = s.labels.keys().map(|k| k.to_string()).collect();
        keys.sort();
        let prev = label_sets
            .entry(s.metric.as_str())
            .or_insert_with(|| keys.clone());
        assert_eq!(*prev, keys, "label names of {}", s.metric);
    }

    // The real agent binary in a JobManager pod's shape: its /metrics serves its own
    // metrics and Flink's.
    let work = tempfile::tempdir()?;
    let agent = start_agent_beside(
        &flink,
        flink.log_dir(),
        work.path(),
        "jobmanager",
        "e2e-jobmanager-pod",
    )?;
    let (agent_text, agent_scrape) = wait_for(
        "Flink's metrics on the agent's /metrics",
        Duration::from_secs(60),
        || {
            let text = agent.scrape()?;
            let scrape = parse_flink_part(&text)?;
            Ok(one(&scrape, "flink_jobmanager_job_uptime", &job_labels)
                .is_some_and(|v| v > 0.0)
                .then_some((text, scrape)))
        },
    )
    .with_context(|| agent.log_tail())?;
    assert_eq!(one(&agent_scrape, "flink_up", &[]), Some(1.0));
    assert!(one(
        &agent_scrape,
        "flink_jobmanager_Status_JVM_Memory_Heap_Used",
        &[]
    )
    .is_some_and(|v| v > 0.0));
    assert!(
        agent_text.lines().any(|l| l.starts_with("flink_agent_")),
        "the agent's own metrics are there too:\n{agent_text}"
    );

    // Flink gone: flink_up 0, quickly, and still valid text.
    flink.stop()?;
    let started = Instant::now();
    let text = render(&rt, &jm);
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    let scrape = parse(&text)?;
    assert_eq!(one(&scrape, "flink_up", &[]), Some(0.0), "{text}");
    assert!(find(&scrape, "flink_jobmanager_Status_JVM_Memory_Heap_Used", &[]).is_empty());

    // The agent's endpoint too: answers within the timeout, its own metrics still there.
    let started = Instant::now();
    let text = agent.scrape()?;
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    let scrape = parse_flink_part(&text)?;
    assert_eq!(one(&scrape, "flink_up", &[]), Some(0.0), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("flink_agent_")),
        "{text}"
    );
    Ok(())
}

/// The lines about Flink's metrics (everything but the agent's own `flink_agent_*`, which
/// prometheus-client writes in OpenMetrics style and other tests check), parsed strictly.
fn parse_flink_part(text: &str) -> Result<Scrape> {
    let flink: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("flink_agent_") && *l != "# EOF")
        .collect();
    parse(&flink.join("\n"))
}
