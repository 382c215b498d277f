//! Failure injection: the agent keeps running, loses nothing, and says what happened in its
//! metrics and logs, when its checkpoint volume fills up or turns read-only, Kafka rejects its
//! authentication, its topic does not exist, the broker is not there at start-up, the log dir
//! is missing at start-up, or a log file is replaced by a directory or a FIFO.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use flink_injector_tests::agent::{
    checkpoint_offset, default_state_file, flink_record, shipped_once, start_agent,
    start_agent_under, AgentProc,
};
use flink_injector_tests::broker::Broker;
use flink_injector_tests::{free_port, wait_for};

const MINUTE: Duration = Duration::from_secs(60);

/// A work dir with an empty log dir, and a broker.
fn scene() -> Result<(tempfile::TempDir, PathBuf, Broker)> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    Ok((work, log_dir, broker))
}

fn append_records(path: &Path, tag: &str, range: std::ops::Range<usize>) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let s: String = range.map(|i| flink_record(tag, i)).collect();
    f.write_all(s.as_bytes())?;
    Ok(())
}

fn healthy(agent: &mut AgentProc) -> Result<()> {
    ensure!(
        agent.guard.is_running(),
        "agent exited\n{}",
        agent.log_tail()
    );
    let (code, _) = flink_injector_tests::agent::http_get(agent.metrics_port, "/healthz")?;
    ensure!(code == 200, "healthz {code}\n{}", agent.log_tail());
    Ok(())
}

fn stop(agent: &mut AgentProc) -> Result<()> {
    agent.guard.signal(15)?;
    let status = agent.guard.wait_timeout(MINUTE)?;
    ensure!(
        status.success(),
        "agent exit {status}\n{}",
        agent.log_tail()
    );
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The state file lives on a 64 KiB tmpfs in the agent's own mount namespace. The test fills
/// it up, then remounts it read-only, then writable again: shipping goes on throughout, every
/// failed write is counted and logged, the last good state file stays intact (writes are
/// atomic), and once the volume is writable the checkpoint catches up with what Kafka holds.
#[test]
fn checkpoint_volume_full_then_read_only_then_writable() -> Result<()> {
    let (work, log_dir, broker) = scene()?;
    let state_dir = work.path().join("state");
    std::fs::create_dir_all(&state_dir)?;
    let topic = "agent-fault-checkpoint";
    let log = log_dir.join("tm.log");
    let state_file = state_dir.join("positions.json");
    let mount = format!(
        "mount -t tmpfs -o size=64k tmpfs '{}' && exec \"$@\"",
        state_dir.display()
    );
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &mount,
        "agent",
    ];
    let state_arg = state_file.to_string_lossy().into_owned();
    let mut agent = start_agent_under(
        &wrapper,
        &log_dir,
        work.path(),
        &broker.bootstrap(),
        topic,
        &["--state-file", &state_arg],
    )?;
    // The agent's view of its state dir (the tmpfs), from outside its mount namespace.
    let inside = |p: &Path| {
        let rel = p.strip_prefix("/").unwrap_or(p);
        Path::new(&format!("/proc/{}/root", agent.guard.pid())).join(rel)
    };
    let ns = format!("--mount=/proc/{}/ns/mnt", agent.guard.pid());
    let seen_state = inside(&state_file);

    append_records(&log, "cp", 0..500)?;
    let size = std::fs::metadata(&log)?.len();
    let first = wait_for("the first checkpoint", MINUTE, || {
        Ok(checkpoint_offset(&seen_state, &log)?.filter(|&o| o == size))
    })
    .with_context(|| agent.log_tail())?;

    // Full: a filler takes every free block.
    let filler = inside(&state_dir.join("filler"));
    {
        let mut f = std::fs::File::create(&filler)?;
        let block = vec![b'x'; 4096];
        while f.write_all(&block).is_ok() {}
    }
    let failures = agent.metric_sum("flink_agent_checkpoint_failures_total")?;
    append_records(&log, "cp", 500..1500)?;
    agent.wait_metric("flink_agent_checkpoint_failures_total", MINUTE, |v| {
        v >= failures + 2.0
    })?;
    ensure!(
        agent.logged("cannot save the checkpoint"),
        "{}",
        agent.log_tail()
    );
    // The old state survives the failed writes, and no temp file is left behind to fill the
    // volume further.
    ensure!(checkpoint_offset(&seen_state, &log)? == Some(first));
    let leftovers: Vec<_> = std::fs::read_dir(inside(&state_dir))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "filler" && n != "positions.json")
        .collect();
    ensure!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    healthy(&mut agent)?;

    // Read-only.
    std::fs::remove_file(&filler)?;
    run(Command::new("nsenter")
        .arg(&ns)
        .args(["mount", "-o", "remount,ro"])
        .arg(&state_dir))?;
    let failures = agent.metric_sum("flink_agent_checkpoint_failures_total")?;
    append_records(&log, "cp", 1500..2500)?;
    agent.wait_metric("flink_agent_checkpoint_failures_total", MINUTE, |v| {
        v >= failures + 2.0
    })?;
    ensure!(checkpoint_offset(&seen_state, &log)? == Some(first));
    healthy(&mut agent)?;

    // Writable again: the checkpoint catches up with everything Kafka acknowledged.
    run(Command::new("nsenter")
        .arg(&ns)
        .args(["mount", "-o", "remount,rw"])
        .arg(&state_dir))?;
    append_records(&log, "cp", 2500..3000)?;
    let size = std::fs::metadata(&log)?.len();
    wait_for("the checkpoint to catch up", MINUTE, || {
        Ok(checkpoint_offset(&seen_state, &log)?.filter(|&o| o == size))
    })
    .with_context(|| agent.log_tail())?;

    shipped_once(&broker, topic, "cp", 3000, &agent)?;
    stop(&mut agent)
}

/// SASL configured against a broker that has none: nothing is acknowledged, so nothing is
/// checkpointed; the agent keeps running and reports the failure. Restarted with the right
/// settings, it ships every record.
#[test]
fn kafka_rejecting_authentication_loses_nothing() -> Result<()> {
    let (work, log_dir, broker) = scene()?;
    let topic = "agent-fault-sasl";
    let log = log_dir.join("tm.log");
    append_records(&log, "sasl", 0..300)?;
    let mut agent = start_agent(
        &log_dir,
        work.path(),
        &broker.bootstrap(),
        topic,
        &[
            "--kafka-property",
            "security.protocol=SASL_PLAINTEXT",
            "--kafka-property",
            "sasl.mechanism=PLAIN",
            "--kafka-property",
            "sasl.username=flink",
            "--kafka-property",
            "sasl.password=not-a-secret",
            "--kafka-property",
            "message.timeout.ms=5000",
        ],
    )?;
    agent.wait_metric("flink_agent_kafka_client_errors_total", MINUTE, |v| {
        v >= 1.0
    })?;
    agent.wait_metric("flink_agent_send_errors_total", MINUTE, |v| v >= 1.0)?;
    ensure!(agent.metric_sum("flink_agent_events_sent_total")? == 0.0);
    ensure!(agent.metric_sum("flink_agent_unshipped_bytes")? > 0.0);
    ensure!(agent.metric("flink_agent_kafka_brokers_up")? == 0.0);
    ensure!(
        checkpoint_offset(&default_state_file(&log_dir), &log)? == Some(0),
        "no checkpoint entry at 0: missing, or moved without acknowledgements"
    );
    // The password never reaches the log.
    ensure!(!agent.logged("not-a-secret"), "{}", agent.log_tail());
    healthy(&mut agent)?;
    stop(&mut agent)?;

    let agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;
    shipped_once(&broker, topic, "sasl", 300, &agent)?;
    Ok(())
}

/// The topic does not exist and the agent may not create it: deliveries fail and are retried
/// until the topic appears, then every record arrives.
#[test]
fn missing_topic_is_waited_for() -> Result<()> {
    let (work, log_dir, broker) = scene()?;
    let topic = "agent-fault-no-topic";
    let log = log_dir.join("tm.log");
    append_records(&log, "notopic", 0..300)?;
    let mut agent = start_agent(
        &log_dir,
        work.path(),
        &broker.bootstrap(),
        topic,
        &[
            "--kafka-property",
            "allow.auto.create.topics=false",
            "--kafka-property",
            "message.timeout.ms=5000",
        ],
    )?;
    agent.wait_metric("flink_agent_send_errors_total", MINUTE, |v| v >= 1.0)?;
    ensure!(agent.metric_sum("flink_agent_events_sent_total")? == 0.0);
    healthy(&mut agent)?;
    flink_injector_tests::broker::create_topic(&broker.bootstrap(), topic)?;
    append_records(&log, "notopic", 300..600)?;
    shipped_once(&broker, topic, "notopic", 600, &agent)?;
    stop(&mut agent)
}

/// No broker at start-up: the agent starts, reads, waits, and ships everything once a broker
/// comes up where it was told to look.
#[test]
fn broker_unreachable_at_start() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let port = free_port()?;
    let bootstrap = format!("127.0.0.1:{port}");
    let topic = "agent-fault-late-broker";
    let log = log_dir.join("tm.log");
    append_records(&log, "late", 0..300)?;
    let mut agent = start_agent(&log_dir, work.path(), &bootstrap, topic, &[])?;
    agent.wait_metric("flink_agent_kafka_client_errors_total", MINUTE, |v| {
        v >= 1.0
    })?;
    ensure!(agent.metric("flink_agent_kafka_brokers_up")? == 0.0);
    ensure!(agent.metric_sum("flink_agent_unshipped_bytes")? > 0.0);
    healthy(&mut agent)?;
    let broker = Broker::start_on(port, work.path())?;
    append_records(&log, "late", 300..600)?;
    shipped_once(&broker, topic, "late", 600, &agent)?;
    agent.wait_metric("flink_agent_kafka_brokers_up", MINUTE, |v| v == 1.0)?;
    stop(&mut agent)
}

/// The log dir does not exist yet (the volume is mounted but Flink has not created its
/// sub-directory): the agent says so, keeps looking, and tails it once it appears.
#[test]
fn log_dir_missing_then_appearing() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    let broker = Broker::start(work.path())?;
    let topic = "agent-fault-late-dir";
    let mut agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;
    agent.wait_metric("flink_agent_read_errors_total", MINUTE, |v| v >= 1.0)?;
    ensure!(
        agent.logged("cannot list the log dir"),
        "{}",
        agent.log_tail()
    );
    healthy(&mut agent)?;
    std::fs::create_dir(&log_dir)?;
    append_records(&log_dir.join("tm.log"), "latedir", 0..300)?;
    shipped_once(&broker, topic, "latedir", 300, &agent)?;
    stop(&mut agent)
}

/// A tailed file is deleted and a directory takes its name; a FIFO appears under an included
/// name; a symlink points out of the log dir. The agent reads the deleted file to its end,
/// never opens the FIFO (an open would block until a writer comes), never follows the link,
/// skips all three with a log line and a count, and goes on with the other files.
#[test]
fn log_file_replaced_by_a_directory_and_a_fifo() -> Result<()> {
    let (work, log_dir, broker) = scene()?;
    let topic = "agent-fault-odd-files";
    let mut agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;
    let a = log_dir.join("a.log");
    append_records(&a, "odd-a", 0..200)?;
    shipped_once(&broker, topic, "odd-a", 200, &agent)?;

    // The last lines are written, and at once the file is deleted and a directory takes its
    // name: the agent reads them through its open descriptor. (What a writer adds to a deleted
    // file after the agent released it is not seen: nobody can read it by name either.)
    append_records(&a, "odd-a", 200..300)?;
    std::fs::remove_file(&a)?;
    std::fs::create_dir(&a)?;
    run(Command::new("mkfifo").arg(log_dir.join("b.log")))?;
    // A link to something only the agent can read (its Kafka credentials) is not followed.
    let secret = work.path().join("sasl.password");
    std::fs::write(&secret, "2026-11-22 10:00:00,000 INFO  x [] - s3cr3t\n")?;
    std::os::unix::fs::symlink(&secret, log_dir.join("s.log"))?;
    agent.wait_metric("flink_agent_files_skipped_total", MINUTE, |v| v >= 3.0)?;
    ensure!(agent.logged("not a regular file"), "{}", agent.log_tail());

    append_records(&log_dir.join("c.log"), "odd-c", 0..300)?;
    let events = shipped_once(&broker, topic, "odd-c", 300, &agent)?;
    shipped_once(&broker, topic, "odd-a", 300, &agent)?;
    ensure!(
        !events.iter().any(|e| e.to_string().contains("s3cr3t")),
        "the symlinked file was shipped"
    );
    healthy(&mut agent)?;
    // Skips are counted once per file, not at every rescan.
    std::thread::sleep(Duration::from_secs(1));
    ensure!(agent.metric_sum("flink_agent_files_skipped_total")? == 3.0);
    stop(&mut agent)
}

/// An event that JSON escaping makes bigger than Kafka's message size (control characters
/// become six bytes each): librdkafka would refuse it for good and stop its file. It ships
/// cut to fit, flagged `log.flags: ["truncated"]`, and the records after it follow.
#[test]
fn an_event_too_big_for_kafka_is_cut_and_the_file_goes_on() -> Result<()> {
    let (work, log_dir, broker) = scene()?;
    let topic = "agent-fault-big-event";
    let log = log_dir.join("tm.log");
    append_records(&log, "big", 0..100)?;
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log)?;
        let body = "\u{1}".repeat(100_000);
        writeln!(f, "2026-11-22 10:00:00,000 WARN  x.Y [] - huge {body}")?;
    }
    append_records(&log, "big2", 0..100)?;
    let mut agent = start_agent(
        &log_dir,
        work.path(),
        &broker.bootstrap(),
        topic,
        &["--kafka-property", "message.max.bytes=200000"],
    )?;
    let events = shipped_once(&broker, topic, "big2", 100, &agent)?;
    let huge: Vec<_> = events
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("huge "))
        })
        .collect();
    ensure!(huge.len() == 1, "{} huge events", huge.len());
    ensure!(
        huge[0]["log"]["flags"] == serde_json::json!(["truncated"]),
        "{}",
        huge[0]["log"]
    );
    ensure!(huge[0].to_string().len() <= 200_000);
    ensure!(agent.metric_sum("flink_agent_events_truncated_total")? == 1.0);
    shipped_once(&broker, topic, "big", 100, &agent)?;
    healthy(&mut agent)?;
    stop(&mut agent)
}

/// A job that writes more files than `--max-files`: the extra file waits (counted, logged)
/// instead of opening without bound, and gets its turn once a tailed file is renamed away and
/// read to its end. Nothing of the files that were read is lost.
#[test]
fn more_files_than_max_files_wait_for_a_released_one() -> Result<()> {
    let (work, log_dir, broker) = scene()?;
    let topic = "agent-max-files";
    for name in ["a.log", "b.log", "c.log"] {
        append_records(&log_dir.join(name), name, 0..50)?;
    }
    let agent = start_agent(
        &log_dir,
        work.path(),
        &broker.bootstrap(),
        topic,
        &["--max-files", "2"],
    )?;
    agent.wait_metric("flink_agent_files_deferred_total", MINUTE, |v| v >= 1.0)?;
    ensure!(agent.metric("flink_agent_files_tailed")? <= 2.0);
    ensure!(
        agent.logged("too many files open (--max-files)"),
        "{}",
        agent.log_tail()
    );
    // Which one waits depends on the listing's order (sorted by name): c.log.
    let waiting = "c.log";
    let events = shipped_once(&broker, topic, "a.log", 50, &agent)?;
    ensure!(!events.is_empty());
    shipped_once(&broker, topic, "b.log", 50, &agent)?;
    // log4j's rotation: a.log becomes an archive, read to its end, then let go for c.log.
    std::fs::rename(log_dir.join("a.log"), log_dir.join("a.log.1"))?;
    shipped_once(&broker, topic, waiting, 50, &agent)?;
    ensure!(agent.metric("flink_agent_files_tailed")? <= 2.0);
    ensure!(
        agent.metric("flink_agent_lost_bytes_total")? == 0.0,
        "{}",
        agent.log_tail()
    );
    Ok(())
}
