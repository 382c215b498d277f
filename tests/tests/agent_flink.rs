//! Real Flink logs: a real local Flink 2.3 (JobManager + TaskManager from `.tools/flink`) writes
//! its logs, including a failing job's stack traces, into the agent's log dir; what reaches Kafka
//! must match the files event by event (offsets, grouping, text).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use flink_injector_tests::agent::start_agent;
use flink_injector_tests::broker::{Broker, TopicReader};
use flink_injector_tests::flink::{expected_events, log_files, LocalFlink};

#[test]
fn real_flink_logs_arrive_as_written() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    let topic = "agent-real-flink";
    // Started first, as a native sidecar starts before Flink.
    let agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;

    let mut flink = LocalFlink::start(&log_dir)?;
    flink.submit_failing_job("agent-e2e-failing")?;
    flink_injector_tests::wait_for(
        "the failing job's stack trace in the logs",
        Duration::from_secs(240),
        || {
            for f in log_files(&log_dir)? {
                let s = std::fs::read_to_string(&f).unwrap_or_default();
                if s.contains("java.lang.IllegalStateException") {
                    return Ok(Some(()));
                }
            }
            Ok(None)
        },
    )?;
    flink.stop()?;
    // The files are final now; the agent ships their last events after its idle flush.
    let files = log_files(&log_dir)?;
    let mut expected: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for f in &files {
        expected.insert(
            f.to_string_lossy().into_owned(),
            expected_events(&std::fs::read(f)?),
        );
    }
    let total: usize = expected.values().map(Vec::len).sum();
    anyhow::ensure!(total > 50, "Flink wrote only {total} events: {files:?}");

    let mut reader = TopicReader::new(&broker.bootstrap(), topic)?;
    let mut events = Vec::new();
    reader.read_until(
        &mut events,
        Duration::from_secs(30),
        Duration::from_secs(180),
        |evs| evs.len() >= total,
    )?;
    reader.settle(&mut events)?;

    let mut got: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
    for ev in &events {
        let path = ev["log"]["file"]["path"].as_str().unwrap_or("").to_string();
        got.entry(path).or_default().push(ev);
    }
    let mut with_error = 0;
    for (path, want) in &expected {
        let have = got.get(path).map(Vec::as_slice).unwrap_or(&[]);
        let offsets: Vec<u64> = have
            .iter()
            .map(|e| e["log"]["offset"].as_u64().unwrap_or(u64::MAX))
            .collect();
        let want_offsets: Vec<u64> = want.iter().map(|w| w.0).collect();
        assert_eq!(
            offsets,
            want_offsets,
            "{path}: events (by offset) differ from the file\n{}",
            agent.log_tail()
        );
        for (ev, (offset, raw)) in have.iter().zip(want) {
            let msg = ev["message"].as_str().unwrap_or("");
            assert!(
                raw.ends_with(msg),
                "{path}@{offset}: message {msg:?} is not the end of {raw:?}"
            );
            if ev["log"]["level"].is_string() {
                // A parsed record: its whole first line is timestamp, level, logger, message.
                assert!(raw.len() - msg.len() >= 24, "{path}@{offset}: {raw:?}");
            }
            if ev.get("error").is_some() {
                with_error += 1;
            }
        }
    }
    assert_eq!(events.len(), total, "no event from outside the files");
    let failing = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("java.lang.IllegalStateException")
        })
        .context("no event carries the failing job's exception")?;
    assert!(failing.get("error").is_some(), "{failing}");
    assert!(
        failing["message"]
            .as_str()
            .unwrap_or("")
            .contains("\n\tat "),
        "the stack trace is in the same event: {failing}"
    );
    eprintln!(
        "real Flink: {} files, {total} events, {with_error} with error fields",
        files.len()
    );
    Ok(())
}
