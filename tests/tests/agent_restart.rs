//! Failures around the agent: SIGKILL and restart, SIGTERM with events in flight, the broker
//! stopped for 20 s and started again (empty: memory storage). Nothing is lost.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use flink_injector_tests::agent::{
    check_records, checkpoint_offset, default_state_file, flink_record, read_records, start_agent,
};
use flink_injector_tests::broker::{Broker, TopicReader};

/// Writes records `0..n` of `tag` to `path` in bursts of `burst`, pausing `pause` between.
fn slow_writer(
    path: PathBuf,
    tag: &'static str,
    n: usize,
    burst: usize,
    pause: Duration,
) -> JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        let mut f = std::fs::File::create(&path)?;
        let mut i = 0;
        while i < n {
            let end = (i + burst).min(n);
            let s: String = (i..end).map(|k| flink_record(tag, k)).collect();
            f.write_all(s.as_bytes())?;
            i = end;
            std::thread::sleep(pause);
        }
        Ok(())
    })
}

fn count_tag(evs: &[serde_json::Value], tag: &str) -> usize {
    let prefix = format!("rec {tag}:");
    evs.iter()
        .filter(|e| e["message"].as_str().unwrap_or("").starts_with(&prefix))
        .count()
}

#[test]
fn sigkill_and_restart_loses_nothing() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    let topic = "agent-sigkill";
    let in_flight = "2000";
    let args = ["--max-in-flight-events", in_flight];
    let mut agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &args)?;
    let n = 40_000;
    let writer = slow_writer(
        log_dir.join("kill.log"),
        "kill",
        n,
        500,
        Duration::from_millis(25),
    );

    let mut reader = TopicReader::new(&broker.bootstrap(), topic)?;
    let mut events = Vec::new();
    reader.read_until(
        &mut events,
        Duration::from_secs(30),
        Duration::from_secs(120),
        |evs| count_tag(evs, "kill") >= n / 3,
    )?;
    agent.guard.signal(9)?;
    agent.guard.wait_timeout(Duration::from_secs(10))?;
    let before_kill = events.len();
    std::thread::sleep(Duration::from_secs(1));
    let agent2 = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &args)?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    // Every record, in order (read_records checks both); duplicates are judged below.
    let (_, check) = read_records(&broker.bootstrap(), topic, "kill", n, &agent2)?;
    eprintln!(
        "SIGKILL after {before_kill} events: {} records, {} duplicates (in-flight bound {in_flight}, checkpoint every 200ms)",
        check.seen, check.duplicates
    );
    // Duplicates come only from events in flight or acknowledged after the last checkpoint.
    assert!(
        check.duplicates <= 2 * 2000 + 5000,
        "{} duplicates",
        check.duplicates
    );
    Ok(())
}

#[test]
fn sigterm_ships_everything_in_flight_then_exits_0() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    let topic = "agent-sigterm";
    let path = log_dir.join("term.log");
    let n = 30_000;
    let s: String = (0..n).map(|i| flink_record("term", i)).collect();
    std::fs::write(&path, s)?;
    let mut agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;
    let mut reader = TopicReader::new(&broker.bootstrap(), topic)?;
    let mut events = Vec::new();
    reader.read_until(
        &mut events,
        Duration::from_secs(30),
        Duration::from_secs(60),
        |evs| !evs.is_empty(),
    )?;
    let in_flight = agent.metric("flink_agent_events_in_flight")?;
    agent.guard.signal(15)?;
    let t = Instant::now();
    let status = agent.guard.wait_timeout(Duration::from_secs(40))?;
    eprintln!(
        "SIGTERM with {in_flight} events in flight: exited {status} after {:?}",
        t.elapsed()
    );
    assert!(status.success(), "{status}\n{}", agent.log_tail());
    // Everything was acknowledged before the exit, and the checkpoint says so.
    let size = std::fs::metadata(&path)?.len();
    let state_file = default_state_file(&log_dir);
    assert_eq!(
        checkpoint_offset(&state_file, &path)?,
        Some(size),
        "{}",
        agent.log_tail()
    );
    let (_, check) = read_records(&broker.bootstrap(), topic, "term", n, &agent)?;
    assert_eq!(check.duplicates, 0);
    Ok(())
}

#[test]
fn broker_down_for_20s_loses_nothing() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let mut broker = Broker::start(work.path())?;
    let port = broker.port;
    let topic = "agent-broker-down";
    let agent = start_agent(
        &log_dir,
        work.path(),
        &broker.bootstrap(),
        topic,
        &["--stall-timeout", "10s"],
    )?;
    let n = 20_000;
    let paused = Arc::new(AtomicBool::new(false));
    let writer = {
        let paused = paused.clone();
        let path = log_dir.join("down.log");
        std::thread::spawn(move || -> Result<()> {
            let mut f = std::fs::File::create(&path)?;
            let mut i = 0;
            while i < n {
                if paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let end = (i + 100).min(n);
                let s: String = (i..end).map(|k| flink_record("down", k)).collect();
                f.write_all(s.as_bytes())?;
                i = end;
                std::thread::sleep(Duration::from_millis(150));
            }
            Ok(())
        })
    };

    // First broker lifetime. Memory storage dies with the broker, so what it acknowledged is
    // read before it is stopped: the writer pauses and the agent drains first. Then the
    // writer resumes at once and the broker is stopped: the agent reads and sends into the
    // outage.
    let mut events = Vec::new();
    {
        let mut reader = TopicReader::new(&broker.bootstrap(), topic)?;
        reader.read_until(
            &mut events,
            Duration::from_secs(30),
            Duration::from_secs(8),
            |_| false,
        )?;
        paused.store(true, Ordering::Relaxed);
        // The last record leaves the agent after the multi-line idle flush (300 ms here).
        std::thread::sleep(Duration::from_secs(1));
        flink_injector_tests::wait_for("the agent to drain", Duration::from_secs(60), || {
            Ok((agent.metric("flink_agent_events_in_flight")? == 0.0).then_some(()))
        })?;
        let sent = agent.metric("flink_agent_events_sent_total")? as usize;
        reader.read_until(
            &mut events,
            Duration::from_secs(30),
            Duration::from_secs(60),
            |evs| evs.len() >= sent,
        )?;
        // librdkafka 2.12 has crashed (NULL topic name in its metadata cache) when tansu came
        // back without the topic: this consumer is closed before the broker goes away.
    }
    let sent_before = agent.metric("flink_agent_events_sent_total")?;
    paused.store(false, Ordering::Relaxed);
    broker.stop();
    let outage = std::time::Instant::now();
    // The on-call view of the outage: no broker connected, send errors by kind.
    flink_injector_tests::wait_for(
        "flink_agent_kafka_brokers_up 0",
        Duration::from_secs(15),
        || Ok((agent.metric("flink_agent_kafka_brokers_up")? == 0.0).then_some(())),
    )
    .with_context(|| agent.log_tail())?;
    std::thread::sleep(Duration::from_secs(20).saturating_sub(outage.elapsed()));
    let sent_during = agent.metric("flink_agent_events_sent_total")?;
    let in_flight = agent.metric("flink_agent_events_in_flight")?;
    let _broker2 = Broker::start_on(port, work.path())?;
    // The agent's next delivery re-creates the topic; the second consumer starts after that.
    flink_injector_tests::wait_for(
        "deliveries to the restarted broker",
        Duration::from_secs(120),
        || Ok((agent.metric("flink_agent_events_sent_total")? > sent_during).then_some(())),
    )
    .with_context(|| agent.log_tail())?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let mut reader = TopicReader::new(&format!("127.0.0.1:{port}"), topic)?;
    reader.read_until(
        &mut events,
        Duration::from_secs(60),
        Duration::from_secs(240),
        |evs| {
            check_records(evs, "down", n)
                .map(|c| c.missing.is_empty())
                .unwrap_or(false)
        },
    )?;
    reader.settle(&mut events)?;
    let check = check_records(&events, "down", n).with_context(|| agent.log_tail())?;
    eprintln!(
        "broker down 20 s: sent {sent_before} before, {sent_during} at the end of the outage ({in_flight} in flight); \
         {} records, {} duplicates, {} out of order, send errors {}, producer restarts {}",
        check.seen,
        check.duplicates,
        check.out_of_order,
        agent.metric_sum("flink_agent_send_errors_total")?,
        agent.metric("flink_agent_producer_restarts_total")?
    );
    assert!(
        check.missing.is_empty(),
        "{} of {n} missing, first {:?}\n{}",
        check.missing.len(),
        &check.missing[..check.missing.len().min(10)],
        agent.log_tail()
    );
    flink_injector_tests::wait_for(
        "flink_agent_kafka_brokers_up 1 again",
        Duration::from_secs(15),
        || Ok((agent.metric("flink_agent_kafka_brokers_up")? >= 1.0).then_some(())),
    )?;
    // Failed deliveries are re-sent in their first-send order, ahead of new events.
    assert_eq!(check.out_of_order, 0);
    Ok(())
}

#[test]
fn file_deleted_while_the_agent_is_down_is_counted_as_lost() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    let topic = "agent-lost";
    // A small in-flight window keeps the agent behind the file.
    let args = ["--max-in-flight-events", "20"];
    let mut agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &args)?;
    let path = log_dir.join("lost.log");
    let s: String = (0..40_000).map(|i| flink_record("lost", i)).collect();
    std::fs::write(&path, &s)?;
    let state_file = default_state_file(&log_dir);
    // Wait for a checkpoint that knows the file's size but not all of it is shipped.
    flink_injector_tests::wait_for("a partial checkpoint", Duration::from_secs(30), || {
        Ok(checkpoint_offset(&state_file, &path)?
            .filter(|&o| o > 0)
            .map(|_| ()))
    })?;
    agent.guard.signal(9)?;
    agent.guard.wait_timeout(Duration::from_secs(10))?;
    let offset = checkpoint_offset(&state_file, &path)?.context("checkpoint")?;
    anyhow::ensure!(
        offset < s.len() as u64,
        "the agent shipped it all before the kill"
    );
    std::fs::remove_file(&path)?;
    let agent2 = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;
    let lost =
        flink_injector_tests::wait_for("lost bytes counted", Duration::from_secs(20), || {
            Ok(Some(agent2.metric("flink_agent_lost_bytes_total")?).filter(|&l| l > 0.0))
        })
        .with_context(|| agent2.log_tail())?;
    eprintln!(
        "file of {} bytes deleted with {offset} acknowledged: {lost} bytes counted as lost",
        s.len()
    );
    assert!(lost <= (s.len() as u64 - offset) as f64);
    Ok(())
}

/// The read positions move out of Flink's log volume: an agent given a `--state-file` elsewhere
/// takes a state file it finds in the log dir once (no re-shipping), removes it, and never reads
/// that place again, even when something writes a file there later.
#[test]
fn state_left_in_the_log_volume_is_taken_once_then_never_again() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    let state_dir = work.path().join("state");
    std::fs::create_dir(&log_dir)?;
    std::fs::create_dir(&state_dir)?;
    let broker = Broker::start(work.path())?;
    let topic = "agent-state-move";
    let path = log_dir.join("move.log");
    let first: String = (0..500).map(|i| flink_record("move", i)).collect();
    std::fs::write(&path, &first)?;

    // The old layout: positions in the log dir.
    let mut old = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;
    read_records(&broker.bootstrap(), topic, "move", 500, &old)?;
    old.guard.signal(15)?;
    ensure!(old.guard.wait_timeout(Duration::from_secs(40))?.success());
    let legacy = default_state_file(&log_dir);
    ensure!(checkpoint_offset(&legacy, &path)? == Some(first.len() as u64));
    drop(old);

    // The new layout: positions taken from there once.
    let state = state_dir.join("checkpoints.json");
    let state_arg = state.to_string_lossy().into_owned();
    let args = ["--state-file", state_arg.as_str()];
    let mut new = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &args)?;
    ensure!(
        !legacy.exists(),
        "the old state file is still in the log volume"
    );
    let more: String = (500..800).map(|i| flink_record("move", i)).collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)?
        .write_all(more.as_bytes())?;
    let (_, check) = read_records(&broker.bootstrap(), topic, "move", 800, &new)?;
    ensure!(
        check.duplicates == 0,
        "re-shipped after the move: {check:?}"
    );
    new.guard.signal(15)?;
    ensure!(new.guard.wait_timeout(Duration::from_secs(40))?.success());
    drop(new);

    // A forged state file in the log volume (Flink can write there) claims nothing was read.
    std::fs::write(&legacy, r#"{"version":1,"files":[]}"#)?;
    let again = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &args)?;
    let last: String = (800..900).map(|i| flink_record("move", i)).collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)?
        .write_all(last.as_bytes())?;
    let (_, check) = read_records(&broker.bootstrap(), topic, "move", 900, &again)?;
    ensure!(check.duplicates == 0, "the forged file was read: {check:?}");
    ensure!(legacy.exists(), "the agent touched a file it must ignore");
    Ok(())
}
