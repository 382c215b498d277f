//! `flink-logs` reads a cluster's logs back from Kafka after real agents shipped real Flink log
//! files (the fixtures) and the bench corpus for several pods into the local broker: as Flink
//! wrote them, stack traces whole, pods merged in time order across partitions, copies
//! dropped, only the window fetched, followed live including a pod that starts later.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use flink_injector_tests::agent::{
    default_state_file, flink_record_at, flink_timestamp, start_agent_as, AgentProc, PodIdentity,
};
use flink_injector_tests::broker::{create_topic_with, Broker};
use flink_injector_tests::corpus::generate_timed;
use flink_injector_tests::logs::{flink_logs, flink_time, now_ms, rfc3339, wait_shipped, Follower};

const PARTITIONS: i32 = 3;

fn scene(topic: &str) -> Result<(tempfile::TempDir, Broker)> {
    let work = tempfile::tempdir()?;
    let broker = Broker::start(work.path())?;
    create_topic_with(&broker.bootstrap(), topic, PARTITIONS)?;
    Ok((work, broker))
}

/// A fixture without its first line (which says where it was recorded).
fn fixture(name: &str) -> Result<String> {
    let raw = String::from_utf8(flink_injector_tests::fixture(&format!(
        "flink-logs/{name}"
    ))?)?;
    Ok(raw
        .split_once('\n')
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// A pod's log dir holding `files`, its agent started and everything shipped.
fn ship(
    work: &Path,
    bootstrap: &str,
    topic: &str,
    pod: &PodIdentity,
    files: &[(String, String)],
) -> Result<AgentProc> {
    let dir = work.join(&pod.pod);
    std::fs::create_dir_all(&dir)?;
    let mut lines = 0;
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
        lines += text.lines().count();
    }
    let agent = start_agent_as(pod, &dir, work, bootstrap, topic, &[])?;
    wait_shipped(&agent, lines)?;
    Ok(agent)
}

/// The lines of text output, by pod (each line starts with its pod's name), in order.
fn by_pod(stdout: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::<String, String>::new();
    for line in stdout.split_inclusive('\n') {
        let (pod, rest) = line.split_once(' ').unwrap_or(("", line));
        out.entry(pod.to_string()).or_default().push_str(rest);
    }
    out
}

fn corpus(lines: usize, ts: impl Fn(usize) -> String) -> String {
    let mut s = String::new();
    generate_timed(lines, &mut s, ts);
    s
}

/// Real Flink logs of a JobManager (in Asia/Shanghai) and two TaskManagers, plus the bench
/// corpus, and a pod of another cluster in the same topic: the cluster's output is each
/// file as Flink wrote it, in file order, stack traces whole, in each pod's own zone.
#[test]
fn a_cluster_reads_back_as_flink_wrote_it() -> Result<()> {
    let topic = "logs-readback";
    let (work, broker) = scene(topic)?;
    let bs = broker.bootstrap();
    let jm_log: String = [
        "jobmanager-standalonesession.log.head30.txt",
        "jobmanager-standalonesession.log.stacktrace30.txt",
        "jobmanager-standalonesession.log.jobfailed30.txt",
        "jobmanager-standalonesession.log.cancel30.txt",
    ]
    .iter()
    .map(|f| fixture(f))
    .collect::<Result<_>>()?;
    // The two TaskManagers' records interleave in time (even and odd milliseconds).
    let tm1_log = corpus(3000, |i| flink_timestamp(2 * i))
        + &fixture("taskexecutor.log.head30.txt")?
        + &fixture("taskexecutor.log.stacktrace30.txt")?;
    let tm1_out = fixture("taskexecutor.out.head30.txt")?;
    let tm2_log = corpus(3000, |i| flink_timestamp(2 * i + 1));

    let jm = PodIdentity::new(
        "wordcount-5f8b9c-x7k2p",
        "wordcount",
        "jobmanager",
        "Asia/Shanghai",
    );
    let tm1 = PodIdentity::new(
        "wordcount-taskmanager-1-1",
        "wordcount",
        "taskmanager",
        "UTC",
    );
    let tm2 = PodIdentity::new(
        "wordcount-taskmanager-1-2",
        "wordcount",
        "taskmanager",
        "UTC",
    );
    let other = PodIdentity::new("other-taskmanager-1-1", "other", "taskmanager", "UTC");
    let log = |p: &PodIdentity| format!("flink--kubernetes-taskmanager-0-{}.log", p.pod);
    let _agents = [
        ship(work.path(), &bs, topic, &jm, &[(log(&jm), jm_log.clone())])?,
        ship(
            work.path(),
            &bs,
            topic,
            &tm1,
            &[
                (log(&tm1), tm1_log.clone()),
                (log(&tm1).replace(".log", ".out"), tm1_out.clone()),
            ],
        )?,
        ship(
            work.path(),
            &bs,
            topic,
            &tm2,
            &[(log(&tm2), tm2_log.clone())],
        )?,
        ship(
            work.path(),
            &bs,
            topic,
            &other,
            &[(log(&other), tm2_log.clone())],
        )?,
    ];

    // Log files: each pod's lines are its file, byte for byte.
    let run = flink_logs(
        &bs,
        topic,
        &["-c", "wordcount", "--since", "all", "--file", "*.log"],
    )?;
    run.expect_code(0)?;
    let pods = by_pod(&run.stdout);
    ensure!(
        pods.keys().collect::<Vec<_>>() == [&jm.pod, &tm1.pod, &tm2.pod],
        "pods printed: {:?}",
        pods.keys()
    );
    for (pod, want) in [(&jm, &jm_log), (&tm1, &tm1_log), (&tm2, &tm2_log)] {
        let got = &pods[&pod.pod];
        if got != want {
            let at = got
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            anyhow::bail!(
                "{}: output differs from its file at line {at}: {:?} vs {:?}",
                pod.pod,
                got.lines().nth(at),
                want.lines().nth(at)
            );
        }
    }
    ensure!(
        run.duplicates()? == 0 && run.not_agent()? == 0,
        "{}",
        run.stderr
    );

    // stdout of the TaskManager (no timestamps of its own), one pod named: no prefix.
    let run = flink_logs(
        &bs,
        topic,
        &[
            "-c",
            "wordcount",
            "--since",
            "all",
            "-p",
            &tm1.pod,
            "--file",
            "*.out",
        ],
    )?;
    run.expect_code(0)?;
    ensure!(run.stdout == tm1_out, "{:?}", run.stdout);

    // JSON: the stored documents, of this cluster only, each file in offset order.
    let run = flink_logs(
        &bs,
        topic,
        &["-c", "wordcount", "--since", "all", "-o", "json"],
    )?;
    run.expect_code(0)?;
    let mut last_offset = std::collections::HashMap::new();
    let mut n = 0;
    for line in run.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).context("a stored document")?;
        ensure!(v["flink"]["cluster_id"] == "wordcount", "{v}");
        let file = (
            v["kubernetes"]["pod"]["name"].to_string(),
            v["log"]["file"]["path"].to_string(),
        );
        let offset = v["log"]["offset"].as_u64().context("log.offset")?;
        if let Some(prev) = last_offset.insert(file.clone(), offset) {
            ensure!(offset > prev, "{file:?}: offset {offset} after {prev}");
        }
        n += 1;
    }
    ensure!(n == run.printed()?, "{n} lines, {}", run.stderr);
    // The JobManager's stack trace, whole, with its outermost exception.
    ensure!(run.stdout.contains(r#""error":{"type":"#), "no error field");
    Ok(())
}

/// Pods logging at the same time, their events spread over three partitions: the output is
/// in `@timestamp` order across pods (zones included), each file in its own order.
#[test]
fn pods_are_merged_in_time_order() -> Result<()> {
    let topic = "logs-order";
    let (work, broker) = scene(topic)?;
    let bs = broker.bootstrap();
    let pods = [
        PodIdentity::new("order-5f8b9c-x7k2p", "order", "jobmanager", "Asia/Shanghai"),
        PodIdentity::new("order-taskmanager-1-1", "order", "taskmanager", "UTC"),
        PodIdentity::new("order-taskmanager-1-2", "order", "taskmanager", "UTC"),
        PodIdentity::new("order-taskmanager-1-3", "order", "taskmanager", "UTC"),
    ];
    let mut agents = Vec::new();
    let mut files = Vec::new();
    for pod in &pods {
        let dir = work.path().join(&pod.pod);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("flink.log");
        files.push(std::fs::File::create(&path)?);
        agents.push(start_agent_as(pod, &dir, work.path(), &bs, topic, &[])?);
    }
    // Flink writing live: each record stamped with the wall clock in its pod's zone.
    let rounds = 40;
    let per_round = 25;
    let mut lines = vec![0usize; pods.len()];
    for round in 0..rounds {
        for (k, (pod, f)) in pods.iter().zip(&mut files).enumerate() {
            let offset = if pod.tz == "UTC" { 0 } else { 8 };
            let mut chunk = String::new();
            for j in 0..per_round {
                let i = round * per_round + j;
                chunk.push_str(&flink_record_at(&pod.pod, i, &flink_time(now_ms(), offset)));
            }
            lines[k] += chunk.lines().count();
            f.write_all(chunk.as_bytes())?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (agent, n) in agents.iter().zip(&lines) {
        wait_shipped(agent, *n)?;
    }

    // A loaded 2-core machine can delay an agent: a wide window keeps the test about order.
    let args = [
        "-c",
        "order",
        "--since",
        "10m",
        "-o",
        "json",
        "--order-window",
        "10s",
    ];
    let run = flink_logs(&bs, topic, &args)?;
    run.expect_code(0)?;
    let mut prev_ts = i64::MIN;
    let mut count = std::collections::HashMap::<String, usize>::new();
    for line in run.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let ts = v["@timestamp"].as_str().unwrap_or_default();
        let ms = flink_logs::time::timestamp_millis(ts).context("@timestamp")?;
        ensure!(ms >= prev_ts, "{ts} printed after a later event");
        prev_ts = ms;
        let pod = v["kubernetes"]["pod"]["name"].as_str().unwrap_or_default();
        let msg = v["message"].as_str().unwrap_or_default();
        let i = count.entry(pod.to_string()).or_default();
        ensure!(
            msg.starts_with(&format!("rec {pod}:{i} ")),
            "{pod}: record {i} expected, got {msg:?}"
        );
        if matches!(*i % 10, 0) {
            ensure!(msg.lines().count() == 9, "stack trace not whole: {msg:?}");
        }
        *i += 1;
    }
    for pod in &pods {
        ensure!(
            count.get(&pod.pod) == Some(&(rounds * per_round)),
            "{count:?}"
        );
    }
    ensure!(!run.stderr.contains("after newer ones"), "{}", run.stderr);
    Ok(())
}

/// At-least-once: the agent restarted without its checkpoint ships every event again, with
/// the same `event.id`. Each is printed once, and stderr says how many copies were dropped.
#[test]
fn copies_shipped_again_are_dropped_and_counted() -> Result<()> {
    let topic = "logs-dup";
    let (work, broker) = scene(topic)?;
    let bs = broker.bootstrap();
    let pod = PodIdentity::new("dup-taskmanager-1-1", "dup", "taskmanager", "UTC");
    let text = corpus(2000, flink_timestamp) + &fixture("taskexecutor.log.stacktrace30.txt")?;
    let files = [("flink.log".to_string(), text.clone())];
    let mut agent = ship(work.path(), &bs, topic, &pod, &files)?;
    agent.guard.signal(9)?;
    agent.guard.wait_timeout(Duration::from_secs(10))?;
    std::fs::remove_file(default_state_file(&work.path().join(&pod.pod)))?;
    let dir = work.path().join(&pod.pod);
    let again = start_agent_as(&pod, &dir, work.path(), &bs, topic, &[])?;
    wait_shipped(&again, text.lines().count())?;

    let run = flink_logs(&bs, topic, &["-c", "dup", "--since", "all", "-p", &pod.pod])?;
    run.expect_code(0)?;
    ensure!(run.stdout == text, "output is not the file once");
    let events = run.printed()?;
    ensure!(run.fetched()? == 2 * events, "{}", run.stderr);
    ensure!(run.duplicates()? == events, "{}", run.stderr);
    Ok(())
}

/// Two bursts of logs 3 s apart: a window that starts between them fetches the second burst
/// only (Kafka's offsets-for-times per partition), with `--from` and with `--since`; `--to`
/// ends the window at the first burst.
#[test]
fn a_window_fetches_only_its_messages() -> Result<()> {
    let topic = "logs-window";
    let (work, broker) = scene(topic)?;
    let bs = broker.bootstrap();
    let pods: Vec<PodIdentity> = (1..=3)
        .map(|k| {
            PodIdentity::new(
                &format!("win-taskmanager-1-{k}"),
                "win",
                "taskmanager",
                "UTC",
            )
        })
        .collect();
    let burst = |start: i64, tag: &str, n: usize| -> String {
        (0..n)
            .map(|i| flink_record_at(tag, i, &flink_time(start + i as i64, 0)))
            .collect()
    };
    let first_start = now_ms() - 60_000;
    let mut agents = Vec::new();
    let mut paths = Vec::new();
    for pod in &pods {
        let text = burst(first_start, &pod.pod, 500);
        let dir = work.path().join(&pod.pod);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("flink.log");
        std::fs::write(&path, &text)?;
        let agent = start_agent_as(pod, &dir, work.path(), &bs, topic, &[])?;
        wait_shipped(&agent, text.lines().count())?;
        agents.push(agent);
        paths.push(path);
    }
    std::thread::sleep(Duration::from_secs(3));
    let t = now_ms();
    let mut second = std::collections::BTreeMap::new();
    for ((pod, path), agent) in pods.iter().zip(&paths).zip(&agents) {
        let text = burst(t, &pod.pod, 300);
        let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
        f.write_all(text.as_bytes())?;
        wait_shipped(
            agent,
            (burst(first_start, &pod.pod, 500) + &text).lines().count(),
        )?;
        second.insert(pod.pod.clone(), text);
    }
    let events_per_burst = |n: u64| n * pods.len() as u64;

    let run = flink_logs(&bs, topic, &["-c", "win", "--from", &rfc3339(t)])?;
    run.expect_code(0)?;
    ensure!(run.fetched()? == events_per_burst(300), "{}", run.stderr);
    ensure!(run.printed()? == events_per_burst(300), "{}", run.stderr);
    let printed = by_pod(&run.stdout);
    ensure!(
        printed == second,
        "the second burst, each pod's in file order"
    );

    let since = format!("{}s", (now_ms() - t) / 1000 + 1);
    let run = flink_logs(&bs, topic, &["-c", "win", "--since", &since])?;
    run.expect_code(0)?;
    ensure!(run.fetched()? == events_per_burst(300), "{}", run.stderr);

    let run = flink_logs(
        &bs,
        topic,
        &[
            "-c",
            "win",
            "--from",
            &rfc3339(first_start),
            "--to",
            &rfc3339(t),
            "--max-lag",
            "0s",
        ],
    )?;
    run.expect_code(0)?;
    ensure!(run.fetched()? == events_per_burst(500), "{}", run.stderr);
    ensure!(run.printed()? == events_per_burst(500), "{}", run.stderr);

    let run = flink_logs(&bs, topic, &["-c", "win", "--since", "all"])?;
    run.expect_code(0)?;
    ensure!(run.fetched()? == events_per_burst(800), "{}", run.stderr);
    Ok(())
}

/// `--follow`: a line Flink appends after the command started, and the file of a
/// TaskManager that starts after it, are printed; Ctrl-C ends it with its summary.
#[test]
fn follow_prints_new_lines_and_new_pods() -> Result<()> {
    let topic = "logs-follow";
    let (work, broker) = scene(topic)?;
    let bs = broker.bootstrap();
    let tm1 = PodIdentity::new("live-taskmanager-1-1", "live", "taskmanager", "UTC");
    let first: String = (0..50)
        .map(|i| flink_record_at("first", i, &flink_time(now_ms(), 0)))
        .collect();
    let a1 = ship(
        work.path(),
        &bs,
        topic,
        &tm1,
        &[("flink.log".into(), first.clone())],
    )?;

    let mut follower = Follower::start(&bs, topic, &["-c", "live", "--since", "10m"], work.path())?;
    follower.wait_line("rec first:49 ", Duration::from_secs(60))?;

    let appended = flink_record_at("appended", 0, &flink_time(now_ms(), 0));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(work.path().join(&tm1.pod).join("flink.log"))?;
    f.write_all(appended.as_bytes())?;
    follower.wait_line("rec appended:0 ", Duration::from_secs(60))?;
    wait_shipped(&a1, first.lines().count() + appended.lines().count())?;

    let tm2 = PodIdentity::new("live-taskmanager-1-2", "live", "taskmanager", "UTC");
    let late: String = (0..20)
        .map(|i| flink_record_at("late", i, &flink_time(now_ms(), 0)))
        .collect();
    let _a2 = ship(work.path(), &bs, topic, &tm2, &[("flink.log".into(), late)])?;
    follower.wait_line("rec late:19 ", Duration::from_secs(60))?;

    let (code, stderr) = follower.interrupt()?;
    ensure!(code == Some(0), "exit {code:?}: {stderr}");
    ensure!(stderr.contains("printed 71 events of 2 pods"), "{stderr}");
    let lines = follower.lines();
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("live-taskmanager-1-2 ") && l.contains("rec late:0 ")),
        "the new pod's lines are prefixed with its name: {lines:#?}"
    );
    Ok(())
}
