//! Pod shutdown on a real node: the kubelet sends SIGTERM to every container of the pod at the
//! same moment, and Flink writes its shutdown (`RECEIVED SIGNAL 15: SIGTERM`, the stop of its
//! services) after the signal. A real local Flink (JobManager and TaskManager from
//! `.tools/flink`) writes into the agent's log dir; Flink and the agent get SIGTERM in one
//! kill(1) call; once all have exited, every event of the final files must be in Kafka. Repeated,
//! because the loss it guards against depends on timing (before the fix: 1 to 22 records lost in
//! every pod of every run on a real node).

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use flink_injector_tests::agent::start_agent;
use flink_injector_tests::broker::{Broker, TopicReader};
use flink_injector_tests::flink::{expected_events, log_files, LocalFlink};

/// Rounds of start, SIGTERM, compare (FLINK_SHUTDOWN_ROUNDS overrides, e.g. 1 while iterating).
fn rounds() -> usize {
    std::env::var("FLINK_SHUTDOWN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// What one round saw of Flink's shutdown, for choosing the agent's quiet period.
struct Shutdown {
    events: usize,
    after_signal: usize,
    /// From the signal's record to the last record, by Flink's timestamps (ms).
    span_ms: u64,
    /// The longest pause between two records from the signal on (ms).
    max_gap_ms: u64,
}

/// Milliseconds since midnight of a record's `yyyy-MM-dd HH:mm:ss,SSS` (shutdowns do not cross
/// midnight in a test).
fn record_ms(raw: &str) -> Option<u64> {
    let t = raw.get(11..23)?;
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<u64>().ok();
    Some(((n(0..2)? * 60 + n(3..5)?) * 60 + n(6..8)?) * 1000 + n(9..12)?)
}

/// One round.
fn round(broker: &Broker, work: &std::path::Path, i: usize) -> Result<Shutdown> {
    let log_dir = work.join(format!("round-{i}"));
    std::fs::create_dir(&log_dir)?;
    let topic = format!("shutdown-{i}");
    // Started first, as a native sidecar starts before Flink.
    let mut agent = start_agent(&log_dir, work, &broker.bootstrap(), &topic, &[])?;
    let mut flink = LocalFlink::start(&log_dir)?;

    // What the kubelet does: one SIGTERM to every container of the pod, at once.
    let mut pids = flink.pids();
    pids.push(agent.guard.pid());
    let status = Command::new("kill")
        .arg("-TERM")
        .args(pids.iter().map(u32::to_string))
        .status()?;
    ensure!(status.success(), "kill -TERM {pids:?} failed");
    let exit = agent.guard.wait_timeout(Duration::from_secs(60))?;
    ensure!(
        exit.success(),
        "the agent exited {exit}\n{}",
        agent.log_tail()
    );
    flink.wait_exited(Duration::from_secs(60))?;

    let mut expected: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    let (mut after_signal, mut span_ms, mut max_gap_ms) = (0, 0, 0);
    for f in log_files(&log_dir)? {
        let events = expected_events(&std::fs::read(&f)?);
        if let Some(at) = events
            .iter()
            .position(|(_, raw)| raw.contains("RECEIVED SIGNAL 15: SIGTERM"))
        {
            after_signal += events.len() - at;
            let times: Vec<u64> = events[at..]
                .iter()
                .filter_map(|(_, r)| record_ms(r))
                .collect();
            if let (Some(first), Some(last)) = (times.first(), times.last()) {
                span_ms = span_ms.max(last.saturating_sub(*first));
            }
            for w in times.windows(2) {
                max_gap_ms = max_gap_ms.max(w[1].saturating_sub(w[0]));
            }
        }
        expected.insert(f.to_string_lossy().into_owned(), events);
    }
    let total: usize = expected.values().map(Vec::len).sum();
    // Otherwise the round would prove nothing about the shutdown.
    ensure!(
        after_signal > 0,
        "round {i}: Flink wrote no shutdown after the signal: {:?}",
        expected.keys()
    );

    // The agent has exited: what is in Kafka now is all there will ever be.
    let mut reader = TopicReader::new(&broker.bootstrap(), &topic)?;
    let mut events = Vec::new();
    reader.read_until(
        &mut events,
        Duration::from_secs(10),
        Duration::from_secs(60),
        |evs| evs.len() >= total,
    )?;
    reader.settle(&mut events)?;
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    for ev in &events {
        let path = ev["log"]["file"]["path"].as_str().unwrap_or("").to_string();
        let offset = ev["log"]["offset"]
            .as_u64()
            .context("event without offset")?;
        got.entry(path).or_default().push(offset);
    }
    for (path, want) in &expected {
        let have = got.get(path).cloned().unwrap_or_default();
        let missing: Vec<&(u64, String)> = want
            .iter()
            .filter(|(offset, _)| !have.contains(offset))
            .collect();
        ensure!(
            missing.is_empty(),
            "round {i}: {} of {} events of {path} never reached Kafka, the first: {:?}\n{}",
            missing.len(),
            want.len(),
            missing.first(),
            agent.log_tail()
        );
    }
    Ok(Shutdown {
        events: total,
        after_signal,
        span_ms,
        max_gap_ms,
    })
}

#[test]
fn every_line_flink_writes_after_sigterm_reaches_kafka() -> Result<()> {
    let work = tempfile::tempdir()?;
    let broker = Broker::start(work.path())?;
    let n = rounds();
    for i in 0..n {
        let r = round(&broker, work.path(), i)?;
        eprintln!(
            "round {i}: {} events, {} from the signal on (over {} ms, longest pause {} ms), all in Kafka",
            r.events, r.after_signal, r.span_ms, r.max_gap_ms
        );
    }
    Ok(())
}
