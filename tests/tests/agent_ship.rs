//! The agent ships a growing Flink log to a real broker: every line exactly once, in order,
//! grouped into events, with the ECS fields; and the edge cases of single lines.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flink_injector_tests::agent::{
    check_records, checkpoint_offset, default_state_file, flink_record, start_agent,
    start_agent_under,
};
use flink_injector_tests::broker::{Broker, TopicReader};

/// Records whose lines add up to just over 200,000 (every tenth record has 9 lines).
const RECORDS: usize = 111_112;

#[test]
fn ships_200k_lines_exactly_once_in_order() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    let topic = "agent-ship-big";
    let agent = start_agent(&log_dir, work.path(), &broker.bootstrap(), topic, &[])?;

    // Flink writes while the agent tails: the file grows in 50 bursts.
    let path = log_dir.join("flink--taskmanager-0-test.log");
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || -> Result<Vec<u64>> {
            let mut f = std::fs::File::create(&path)?;
            let mut offsets = Vec::with_capacity(RECORDS);
            let mut pos = 0u64;
            let mut chunk = String::new();
            for i in 0..RECORDS {
                let r = flink_record("big", i);
                offsets.push(pos);
                pos += r.len() as u64;
                chunk.push_str(&r);
                if i % (RECORDS / 50) == 0 {
                    f.write_all(chunk.as_bytes())?;
                    chunk.clear();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            f.write_all(chunk.as_bytes())?;
            Ok(offsets)
        })
    };

    let started = Instant::now();
    let mut reader = TopicReader::new(&broker.bootstrap(), topic)?;
    let mut events = Vec::new();
    reader.read_until(
        &mut events,
        Duration::from_secs(60),
        Duration::from_secs(900),
        |evs| evs.len() >= RECORDS,
    )?;
    let offsets = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    reader.settle(&mut events)?;
    let elapsed = started.elapsed();

    let check = check_records(&events, "big", RECORDS).with_context(|| agent.log_tail())?;
    eprintln!(
        "shipped {} events ({} lines) in {elapsed:?}; duplicates {}",
        events.len(),
        200_008,
        check.duplicates
    );
    assert!(
        check.missing.is_empty(),
        "{} records missing, first {:?}\n{}",
        check.missing.len(),
        &check.missing[..check.missing.len().min(10)],
        agent.log_tail()
    );
    assert_eq!(check.duplicates, 0, "normal operation must not duplicate");
    assert_eq!(
        check.out_of_order, 0,
        "events of a file arrive in file order"
    );
    assert_eq!(events.len(), RECORDS, "no event other than the records");

    // ECS fields, offsets and ids.
    let path_s = path.to_string_lossy().to_string();
    let mut ids = std::collections::HashSet::new();
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["log"]["offset"], offsets[i], "offset of record {i}");
        assert_eq!(ev["log"]["file"]["path"], path_s.as_str());
        assert!(ids.insert(ev["event"]["id"].as_str().unwrap_or("").to_string()));
    }
    let e = &events[1];
    assert_eq!(e["@timestamp"], "2026-11-22T00:00:00.001+00:00");
    assert_eq!(e["log"]["level"], "INFO");
    assert_eq!(
        e["log"]["logger"],
        "org.apache.flink.runtime.checkpoint.CheckpointCoordinator"
    );
    assert_eq!(e["kubernetes"]["pod"]["name"], "test-pod");
    assert_eq!(e["kubernetes"]["pod"]["ip"], "127.0.0.1");
    assert_eq!(e["kubernetes"]["namespace"], "test-ns");
    assert_eq!(e["kubernetes"]["node"]["name"], "test-node");
    assert_eq!(e["kubernetes"]["container"]["name"], "flink-main-container");
    assert_eq!(e["flink"]["cluster_id"], "test-cluster");
    assert_eq!(e["flink"]["component"], "taskmanager");
    assert!(e.get("error").is_none());

    // The checkpoint catches up with the whole file.
    let size = std::fs::metadata(&path)?.len();
    let state_file = default_state_file(&log_dir);
    flink_injector_tests::wait_for(
        "the checkpoint to reach the end",
        Duration::from_secs(10),
        || Ok(checkpoint_offset(&state_file, &path)?.filter(|&o| o == size)),
    )?;
    assert_eq!(
        agent.metric("flink_agent_events_sent_total")?,
        RECORDS as f64
    );
    assert_eq!(agent.metric("flink_agent_lines_read_total")?, 200_008.0);
    assert_eq!(agent.metric_sum("flink_agent_send_errors_total")?, 0.0);
    // The lag a dashboard alerts on is back to zero once the checkpoint reached the end.
    assert_eq!(agent.metric_sum("flink_agent_unshipped_bytes")?, 0.0);
    assert_eq!(agent.metric("flink_agent_events_in_flight")?, 0.0);
    assert_eq!(agent.metric_sum("flink_agent_build_info")?, 1.0);
    // librdkafka reports statistics every 5 s.
    flink_injector_tests::wait_for(
        "flink_agent_kafka_brokers_up 1",
        Duration::from_secs(15),
        || Ok((agent.metric("flink_agent_kafka_brokers_up")? >= 1.0).then_some(())),
    )?;
    Ok(())
}

#[test]
fn long_empty_and_invalid_utf8_lines() -> Result<()> {
    let work = tempfile::tempdir()?;
    let log_dir = work.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let broker = Broker::start(work.path())?;
    let topic = "agent-ship-edge";
    let agent = start_agent(
        &log_dir,
        work.path(),
        &broker.bootstrap(),
        topic,
        &["--max-line-bytes", "1000"],
    )?;

    let mut data: Vec<u8> = Vec::new();
    data.extend(flink_record("e", 1).as_bytes());
    // An empty line continues the event before it (Flink prints blank lines in messages).
    data.extend(b"\n");
    let long_start = data.len();
    let long = format!(
        "2026-11-22 10:00:00,000 WARN  {:<60} [] - rec e:2 {}",
        "org.example.Long",
        "x".repeat(4500)
    );
    data.extend(long.as_bytes());
    data.extend(b"\n");
    let bad_start = data.len();
    data.extend(b"2026-11-22 10:00:01,000 INFO  org.example.Bad [] - rec e:3 bad \xff\xfe bytes\n");
    data.extend(flink_record("e", 4).as_bytes());
    std::fs::write(log_dir.join("edge.log"), &data)?;

    let mut reader = TopicReader::new(&broker.bootstrap(), topic)?;
    let mut events = Vec::new();
    reader.read_until(
        &mut events,
        Duration::from_secs(30),
        Duration::from_secs(60),
        |evs| {
            evs.iter()
                .any(|e| e["message"].as_str().unwrap_or("").starts_with("rec e:4"))
        },
    )?;
    let msgs: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap_or(""))
        .collect();
    // record 1 + its blank line; 5 pieces of the long line; the invalid line; record 4.
    assert_eq!(events.len(), 8, "{msgs:#?}\n{}", agent.log_tail());
    assert!(
        msgs[0].starts_with("rec e:1 ") && msgs[0].ends_with('\n'),
        "{:?}",
        msgs[0]
    );
    assert_eq!(msgs[0].lines().count(), 1);

    // The long line, split at 1000 bytes, arrives whole once its pieces are joined.
    let header_len = long.find(" - ").map(|i| i + 3).unwrap_or(0);
    let mut joined = long[..header_len].to_string();
    for (k, ev) in events[1..6].iter().enumerate() {
        assert_eq!(ev["log"]["offset"], (long_start + k * 1000) as u64);
        joined.push_str(ev["message"].as_str().unwrap_or(""));
    }
    assert_eq!(joined, long);
    assert_eq!(agent.metric("flink_agent_lines_split_total")?, 1.0);

    // Invalid UTF-8 is shipped, with replacement characters, not dropped.
    assert_eq!(events[6]["log"]["offset"], bad_start as u64);
    assert_eq!(msgs[6], "rec e:3 bad \u{fffd}\u{fffd} bytes");
    assert!(msgs[7].starts_with("rec e:4 "));
    Ok(())
}

/// Flink's timestamps have no zone: the agent attaches the pod's `TZ`, read from the system
/// tzdb, or from the copy built into the agent where the system's lacks the zone (a `TZDIR`
/// holding no zones stands for an old or stripped tzdb; an empty or missing one would send
/// jiff on to /usr/share/zoneinfo).
#[test]
fn timestamps_get_the_offset_of_the_pods_zone() -> Result<()> {
    let work = tempfile::tempdir()?;
    let broker = Broker::start(work.path())?;
    let lines = "2026-01-15 10:00:00,000 INFO  org.example.Zone [] - winter\n\
                 2026-07-15 10:00:00,000 INFO  org.example.Zone [] - summer\n";
    let no_tzdb = work.path().join("zoneinfo-without-zones");
    std::fs::create_dir(&no_tzdb)?;
    std::fs::write(no_tzdb.join("README"), "no zones here\n")?;
    let no_tzdb_env = format!("TZDIR={}", no_tzdb.display());
    for (topic, env, expected) in [
        (
            "zone-system",
            vec!["TZ=Europe/Berlin"],
            [
                "2026-01-15T10:00:00.000+01:00",
                "2026-07-15T10:00:00.000+02:00",
            ],
        ),
        (
            "zone-bundled",
            vec!["TZ=Asia/Shanghai", no_tzdb_env.as_str()],
            [
                "2026-01-15T10:00:00.000+08:00",
                "2026-07-15T10:00:00.000+08:00",
            ],
        ),
    ] {
        let log_dir = work.path().join(topic);
        std::fs::create_dir(&log_dir)?;
        std::fs::write(log_dir.join("flink--taskmanager-0-zone.log"), lines)?;
        let wrapper: Vec<&str> = std::iter::once("env").chain(env).collect();
        let agent = start_agent_under(
            &wrapper,
            &log_dir,
            work.path(),
            &broker.bootstrap(),
            topic,
            &[],
        )?;
        let mut reader = TopicReader::new(&broker.bootstrap(), topic)?;
        let mut events = Vec::new();
        reader.read_until(
            &mut events,
            Duration::from_secs(30),
            Duration::from_secs(60),
            |evs| evs.len() >= 2,
        )?;
        let got: Vec<&str> = events
            .iter()
            .map(|e| e["@timestamp"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(got, expected, "{topic}\n{}", agent.log_tail());
    }
    Ok(())
}
