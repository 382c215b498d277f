//! Reading logs back: `flink-logs` against a topic that real agents filled from the bench
//! corpus for many pods of one cluster. Prints Markdown tables: events fetched from Kafka
//! and printed per second, CPU and peak memory, for one pod's last 2 hours, the same as
//! JSON, the whole cluster merged, and a window holding a third of the topic (what
//! offsets-for-times saves).
//!
//! Usage: bench-logs AGENT_BIN FLINK_LOGS_BIN [LINES_PER_POD] [PODS] [ROUNDS]
//!                                                      (run by scripts/bench.sh)

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flink_injector_tests::agent::http_get;
use flink_injector_tests::broker::{create_topic_with, Broker};
use flink_injector_tests::logs::{flink_time, now_ms, rfc3339};
use flink_injector_tests::procfs::cpu_seconds;
use flink_injector_tests::{corpus, free_port, ChildGuard};

const TOPIC: &str = "bench-logs";
const CLUSTER: &str = "bench";
const PARTITIONS: i32 = 6;
/// Agents shipping at once while the topic is filled.
const WAVE: usize = 5;
const HOUR_MS: i64 = 3_600_000;

struct Pod {
    name: String,
    dir: PathBuf,
    /// The corpus, split where the second fill starts.
    first: String,
    second: String,
    events_first: usize,
    events_second: usize,
}

fn spawn_agent(bin: &str, bootstrap: &str, pod: &Pod, port: u16) -> Result<ChildGuard> {
    ChildGuard::spawn(
        "flink-agent",
        Command::new(bin)
            .arg("--log-dir")
            .arg(&pod.dir)
            .args(["--brokers", bootstrap, "--topic", TOPIC])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(["--flink-rest", "http://127.0.0.1:1"])
            .args(["--pod-name", &pod.name, "--namespace", "bench"])
            .args(["--cluster-id", CLUSTER, "--component", "taskmanager"])
            .args(["--multiline-flush", "200ms"])
            .envs(flink_injector_tests::AGENT_ALLOCATOR_ENV)
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// The sum of a metric's samples on an agent's /metrics (0 when it does not answer).
fn metric(port: u16, name: &str) -> f64 {
    match http_get(port, "/metrics") {
        Ok((200, body)) => body
            .lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse::<f64>().ok())
            .sum(),
        _ => 0.0,
    }
}

/// Ships what the pods' files hold, `WAVE` agents at a time, each until it has read
/// `lines(pod)` lines and Kafka acknowledged all of it; agents are stopped with SIGTERM
/// (their checkpoints saved, so the next fill ships only what was appended).
fn fill(agent: &str, bootstrap: &str, pods: &[Pod], lines: impl Fn(&Pod) -> usize) -> Result<()> {
    for wave in pods.chunks(WAVE) {
        let mut running = Vec::new();
        for pod in wave {
            let port = free_port()?;
            running.push((spawn_agent(agent, bootstrap, pod, port)?, port, lines(pod)));
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        for (guard, port, want) in &mut running {
            loop {
                let read = metric(*port, "flink_agent_lines_read_total");
                let unshipped = metric(*port, "flink_agent_unshipped_bytes");
                let in_flight = metric(*port, "flink_agent_events_in_flight");
                if read >= *want as f64 && unshipped == 0.0 && in_flight == 0.0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("an agent read {read} of {want} lines in 300 s, {unshipped} bytes unshipped");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            guard.signal(15)?;
            guard.wait_timeout(Duration::from_secs(30))?;
        }
    }
    Ok(())
}

/// One run of flink-logs, measured from outside.
struct Measured {
    secs: f64,
    cpu: f64,
    peak_rss_mib: f64,
    out_bytes: u64,
    fetched: u64,
    printed: u64,
    /// Events printed after newer ones of other files (shipped later than the order window).
    late: u64,
    broker_cpu: f64,
}

fn figure(stderr: &str, before: &str, after: &str) -> Result<u64> {
    let re = regex::Regex::new(&format!(r"{before} (\d+) {after}"))?;
    let caps = re
        .captures(stderr)
        .with_context(|| format!("no '{before} N {after}' in: {stderr}"))?;
    Ok(caps[1].parse()?)
}

/// Field 3 of /proc/PID/stat: `Z` once the process has exited and is not reaped yet (its
/// CPU times are then final).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .ok()
}

fn run_logs(bin: &str, bootstrap: &str, broker_pid: u32, args: &[&str]) -> Result<Measured> {
    let broker_cpu0 = cpu_seconds(broker_pid)?;
    let t0 = Instant::now();
    let mut guard = ChildGuard::spawn(
        "flink-logs",
        Command::new(bin)
            .args(["--brokers", bootstrap, "--topic", TOPIC])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let pid = guard.pid();
    let mut stdout = guard.child.stdout.take().context("stdout")?;
    let counter = std::thread::spawn(move || -> u64 {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        while let Ok(k) = stdout.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    let mut stderr = guard.child.stderr.take().context("stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Sampled until it exits: VmHWM is gone from a process that has exited.
    let mut peak = 0u64;
    let cpu = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
        }
        if state(pid) == Some('Z') {
            break cpu_seconds(pid)?;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("flink-logs {args:?} ran over 600 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = t0.elapsed().as_secs_f64();
    let status = guard.child.wait()?;
    let out_bytes = counter
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let err = err_reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    if !status.success() {
        bail!("flink-logs {args:?} failed: {status}: {err}");
    }
    Ok(Measured {
        secs,
        cpu,
        peak_rss_mib: peak as f64 / 1024.0,
        out_bytes,
        fetched: figure(&err, "fetched", "messages")?,
        printed: figure(&err, "printed", "events")?,
        late: figure(&err, ";", "events printed after newer ones").unwrap_or(0),
        broker_cpu: cpu_seconds(broker_pid)? - broker_cpu0,
    })
}

fn make_pods(root: &Path, pods: usize, lines: usize, start: i64) -> Result<Vec<Pod>> {
    let mut out = Vec::new();
    for k in 0..pods {
        let name = format!("{CLUSTER}-taskmanager-1-{}", k + 1);
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)?;
        // Two thirds of the lines in the first fill, stamped over the 3 hours before it:
        // a cluster that has been logging for a while.
        let mut first = String::new();
        let first_lines = lines * 2 / 3;
        let mut probe = String::new();
        let records = corpus::generate(first_lines, &mut probe);
        let step = (3 * HOUR_MS) / records.max(1) as i64;
        let events_first = corpus::generate_timed(first_lines, &mut first, |i| {
            flink_time(start - 3 * HOUR_MS + i as i64 * step, 0)
        });
        std::fs::write(
            dir.join(format!("flink--kubernetes-taskmanager-0-{name}.log")),
            &first,
        )?;
        out.push(Pod {
            name,
            dir,
            first,
            second: String::new(),
            events_first,
            events_second: 0,
        });
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench-logs AGENT_BIN FLINK_LOGS_BIN [LINES_PER_POD] [PODS] [ROUNDS]";
    let agent = args.first().context(usage)?.clone();
    let logs = args.get(1).context(usage)?.clone();
    let lines: usize = args.get(2).map_or(Ok(20_000), |s| s.parse())?;
    let pods_n: usize = args.get(3).map_or(Ok(50), |s| s.parse())?;
    let rounds: usize = args.get(4).map_or(Ok(3), |s| s.parse())?;

    let work = tempfile::tempdir()?;
    let broker = Broker::start(work.path())?;
    let bs = broker.bootstrap();
    let broker_pid = broker.pid().context("broker pid")?;
    create_topic_with(&bs, TOPIC, PARTITIONS)?;

    let filled = Instant::now();
    let mut pods = make_pods(work.path(), pods_n, lines, now_ms())?;
    fill(&agent, &bs, &pods, |p| p.first.lines().count())?;
    // A pause, then the last third, stamped as it is written: a window that starts in the
    // pause holds only the second fill.
    std::thread::sleep(Duration::from_secs(5));
    let second_from = now_ms();
    for pod in &mut pods {
        let rest = lines - lines * 2 / 3;
        let t = now_ms();
        pod.events_second =
            corpus::generate_timed(rest, &mut pod.second, |i| flink_time(t + i as i64, 0));
        let path = pod
            .dir
            .join(format!("flink--kubernetes-taskmanager-0-{}.log", pod.name));
        let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
        std::io::Write::write_all(&mut f, pod.second.as_bytes())?;
    }
    fill(&agent, &bs, &pods, |p| p.second.lines().count())?;
    let fill_secs = filled.elapsed().as_secs_f64();
    let total_events: usize = pods.iter().map(|p| p.events_first + p.events_second).sum();
    let total_bytes: usize = pods.iter().map(|p| p.first.len() + p.second.len()).sum();
    println!(
        "topic: {PARTITIONS} partitions, {pods_n} pods of cluster {CLUSTER:?}, {lines} corpus lines each \
         ({total_events} events, {:.1} MB of log), shipped by {pods_n} real agents in {fill_secs:.1} s \
         (two fills 5 s apart; the first fill's records stamped over the 3 hours before it)",
        total_bytes as f64 / 1e6
    );
    println!();
    println!("| case | round | seconds | fetched | printed | fetched/s | printed/s | output MB | CPU s | peak RSS MiB | broker CPU s | printed after newer |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let pod = pods
        .get(pods.len() / 2)
        .map(|p| p.name.clone())
        .context("no pods")?;
    let from = rfc3339(second_from);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "one pod, --since 2h, text",
            vec!["-c", CLUSTER, "-p", &pod, "--since", "2h"],
        ),
        (
            "one pod, --since 2h, json",
            vec!["-c", CLUSTER, "-p", &pod, "--since", "2h", "-o", "json"],
        ),
        (
            "whole cluster, --since 2h, text (merged, prefixed)",
            vec!["-c", CLUSTER, "--since", "2h"],
        ),
        (
            "one pod, --from the second fill (a third of the topic)",
            vec!["-c", CLUSTER, "-p", &pod, "--from", &from],
        ),
    ];
    for (name, args) in &cases {
        for round in 1..=rounds {
            let m = run_logs(&logs, &bs, broker_pid, args)?;
            println!(
                "| {name} | {round} | {:.2} | {} | {} | {:.0} | {:.0} | {:.1} | {:.2} | {:.1} | {:.2} | {} |",
                m.secs,
                m.fetched,
                m.printed,
                m.fetched as f64 / m.secs,
                m.printed as f64 / m.secs,
                m.out_bytes as f64 / 1e6,
                m.cpu,
                m.peak_rss_mib,
                m.broker_cpu,
                m.late
            );
        }
    }
    Ok(())
}
