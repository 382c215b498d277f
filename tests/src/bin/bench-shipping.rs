//! Log-shipping benchmark: flink-agent shipping a corpus written ahead of time, against a bare
//! rdkafka producer sending the same events, already split and encoded, from memory (the
//! ceiling, two ways: rdkafka's `ThreadedProducer`, and a `BaseProducer` whose reports are
//! served on the sending thread, as the agent does), to the same local broker, interleaved in
//! one run. Prints a Markdown table.
//!
//! Usage: bench-shipping AGENT_BIN [LINES] [ROUNDS] [--throughput-only|--live-only]
//!                                                      (run by scripts/bench.sh)
//!        bench-shipping --write-corpus FILE [LINES]   (the same corpus, for another shipper)

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flink_agent::config::MultilineConfig;
use flink_agent::encode::{Encoder, Origin};
use flink_agent::multiline::{Grouper, Line};
use flink_agent::parse::{parse_cached, TsCache};
use flink_injector_tests::agent::http_get;
use flink_injector_tests::broker::{create_topic, Broker};
use flink_injector_tests::procfs::{cpu_seconds, status_mib};
use flink_injector_tests::{corpus, free_port, ChildGuard};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientContext;

/// Delivery reports counted, and when the first one came.
#[derive(Default)]
struct Counting {
    ok: AtomicU64,
    failed: AtomicU64,
    first: OnceLock<Instant>,
}
#[derive(Clone, Default)]
struct CountingRef(Arc<Counting>);
impl ClientContext for CountingRef {}
impl ProducerContext for CountingRef {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        self.0.first.get_or_init(Instant::now);
        match r {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// How the bare producer serves its delivery reports.
#[derive(Clone, Copy)]
enum Ceiling {
    /// rdkafka's `ThreadedProducer`: a thread of its own polls.
    Threaded,
    /// A `BaseProducer` polled on the thread that sends (what the agent does).
    Inline,
}

impl Ceiling {
    fn name(self) -> &'static str {
        match self {
            Ceiling::Threaded => "bare rdkafka producer, reports on a thread (ThreadedProducer)",
            Ceiling::Inline => "bare rdkafka producer, reports on the sending thread",
        }
    }
}

struct Run {
    secs: f64,
    /// From the start to the first acknowledgement: mostly librdkafka getting its idempotent
    /// producer id, which takes 0.5 or 1 s at random (its retry timer) for every shipper.
    first_ack: Option<f64>,
    cpu: f64,
    rss: Option<f64>,
    /// The broker's CPU seconds during the run: with the shipper's, whether the two cores
    /// were the limit.
    broker_cpu: f64,
}

impl Run {
    /// Seconds from the first acknowledgement to the end: the run without its start-up.
    fn after_first_ack(&self) -> Option<f64> {
        self.first_ack.map(|f| self.secs - f)
    }
}

fn events_in_memory(text: &str) -> Result<Vec<Vec<u8>>> {
    let cfg = MultilineConfig {
        start: flink_agent::config::StartPattern::new(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")?,
        max_lines: 500,
        max_bytes: 512 * 1024,
        flush_after: Duration::from_secs(1),
    };
    let mut grouper = Grouper::new(cfg);
    let pod = flink_agent::config::PodMeta {
        pod_name: "bench-pod".into(),
        namespace: "bench".into(),
        node_name: "node".into(),
        pod_ip: "127.0.0.1".into(),
        container: "flink-main-container".into(),
        cluster_id: "bench".into(),
        component: "taskmanager".into(),
    };
    let tz = flink_agent::zone::Zone::UTC;
    let encoder = Encoder::new(&pod);
    let mut ts_cache = TsCache::default();
    let now = Instant::now();
    let mut events = Vec::new();
    let mut push = |ev: flink_agent::multiline::GroupedEvent| {
        let origin = Origin {
            path: "/opt/flink/log/flink--taskmanager-0-bench.log",
            offset: ev.start,
            dev: 64768,
            ino: 42,
            fingerprint: 7,
        };
        events.push(encoder.encode(
            &parse_cached(&ev.text, &tz, &mut ts_cache),
            &origin,
            "2026-11-23T00:00:00Z",
        ));
    };
    let mut pos = 0u64;
    for line in text.split_inclusive('\n') {
        let bytes = line.trim_end_matches('\n').as_bytes();
        let end = pos + line.len() as u64;
        if let Some(ev) = grouper.push(
            Line {
                bytes,
                start: pos,
                end,
                force_start: false,
            },
            now,
        ) {
            push(ev);
        }
        pos = end;
    }
    if let Some(ev) = grouper.flush() {
        push(ev);
    }
    Ok(events)
}

fn run_ceiling(bootstrap: &str, topic: &str, events: &[Vec<u8>], how: Ceiling) -> Result<Run> {
    let counts = CountingRef::default();
    let pid = std::process::id();
    let cpu0 = cpu_seconds(pid)?;
    // From nothing, as the agent's clock starts before its process does.
    let t0 = Instant::now();
    let config = flink_agent::kafka::client_config(bootstrap, &Default::default());
    match how {
        Ceiling::Threaded => {
            let producer: Arc<ThreadedProducer<CountingRef>> = Arc::new(
                ThreadedProducer::from_config_and_context(&config, counts.clone())?,
            );
            flink_agent::kafka::prime(&producer, topic);
            send_all(
                events,
                topic,
                |r| producer.send(r).err().map(|(_, r)| r),
                || {},
            )?;
            producer.flush(Duration::from_secs(300))?;
        }
        Ceiling::Inline => {
            let producer: Arc<BaseProducer<CountingRef>> = Arc::new(
                BaseProducer::from_config_and_context(&config, counts.clone())?,
            );
            flink_agent::kafka::prime(&producer, topic);
            // Every 256 sends: a poll serves one produce response's reports at a time.
            let mut sent = 0usize;
            let serve = || producer.poll(Duration::ZERO);
            send_all(
                events,
                topic,
                |r| {
                    sent += 1;
                    if sent.is_multiple_of(256) {
                        producer.poll(Duration::ZERO);
                    }
                    producer.send(r).err().map(|(_, r)| r)
                },
                serve,
            )?;
            producer.flush(Duration::from_secs(300))?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let c = &counts.0;
    if c.ok.load(Ordering::Relaxed) != events.len() as u64 {
        bail!(
            "ceiling: {} of {} delivered, {} failed",
            c.ok.load(Ordering::Relaxed),
            events.len(),
            c.failed.load(Ordering::Relaxed)
        );
    }
    Ok(Run {
        secs,
        first_ack: c.first.get().map(|t| (*t - t0).as_secs_f64()),
        cpu,
        rss: None,
        broker_cpu: 0.0,
    })
}

type Record<'a> = BaseRecord<'a, str, [u8], ()>;

/// Queues every event through `send`, which hands a record it could not queue back; on a full
/// queue, `full` runs and the send is tried again 1 ms later (the same backpressure the agent
/// sees).
fn send_all<'a>(
    events: &'a [Vec<u8>],
    topic: &'a str,
    mut send: impl FnMut(Record<'a>) -> Option<Record<'a>>,
    full: impl Fn(),
) -> Result<()> {
    for ev in events {
        let mut record = BaseRecord::to(topic)
            .key("bench-pod")
            .payload(ev.as_slice());
        loop {
            match send(record) {
                None => break,
                Some(r) => {
                    full();
                    std::thread::sleep(Duration::from_millis(1));
                    record = r;
                }
            }
        }
    }
    Ok(())
}

fn run_agent(
    agent_bin: &str,
    bootstrap: &str,
    topic: &str,
    text: &str,
    events: usize,
) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let log_dir = dir.path().join("log");
    std::fs::create_dir(&log_dir)?;
    std::fs::write(log_dir.join("flink--taskmanager-0-bench.log"), text)?;
    let port = free_port()?;
    let t0 = Instant::now();
    let agent = spawn_agent(agent_bin, bootstrap, topic, &log_dir, port)?;
    let pid = agent.pid();
    // Polled every 10 ms (wait_for's 100 ms would add up to 100 ms to a run of seconds).
    let mut first_ack = None;
    loop {
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("the agent did not ship the corpus in 600 s");
        }
        let sent = match http_get(port, "/metrics") {
            Ok((200, body)) => body
                .lines()
                .find_map(|l| l.strip_prefix("flink_agent_events_sent_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0),
            _ => 0.0,
        };
        if sent > 0.0 && first_ack.is_none() {
            first_ack = Some(t0.elapsed().as_secs_f64());
        }
        // The file's last event stays open for the multi-line idle time (1 s: a stack trace
        // could still follow), which is latency, not throughput: the clock stops when every
        // other event is acknowledged. The live run below includes that wait.
        if sent as usize + 1 >= events {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)?;
    let rss = status_mib(agent.pid(), "VmHWM")?;
    Ok(Run {
        secs,
        first_ack,
        cpu,
        rss: Some(rss),
        broker_cpu: 0.0,
    })
}

fn spawn_agent(
    agent_bin: &str,
    bootstrap: &str,
    topic: &str,
    log_dir: &std::path::Path,
    port: u16,
) -> Result<ChildGuard> {
    ChildGuard::spawn(
        "flink-agent",
        Command::new(agent_bin)
            .arg("--log-dir")
            .arg(log_dir)
            .args(["--brokers", bootstrap, "--topic", topic])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args([
                "--flink-rest",
                "http://127.0.0.1:1",
                "--pod-name",
                "bench-pod",
            ])
            .envs(flink_injector_tests::ALLOCATOR_ENV)
            .env("TZ", "UTC")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Lines appended at a fixed rate while the agent runs; latency = written (time in the line)
/// to readable from Kafka. One line per record: a record is closed when the next one starts,
/// so the gap between lines is part of what is measured, as it is for any multi-line shipper.
fn run_live(agent_bin: &str, bootstrap: &str, rate: usize, seconds: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log_dir = dir.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let port = free_port()?;
    let topic = "live";
    // Auto-creation would hold the first 0.06-1 s of lines back and decide the p99; so
    // would the reader's own start.
    create_topic(bootstrap, topic)?;
    let mut reader =
        flink_injector_tests::broker::TopicReader::with_fetch_wait(bootstrap, topic, 5)?;
    reader.wait_ready(Duration::from_secs(20))?;
    let agent = spawn_agent(agent_bin, bootstrap, topic, &log_dir, port)?;
    let path = log_dir.join("flink--taskmanager-0-live.log");
    // One line first, read back before the clock starts: the agent's producer needs its
    // idempotent producer id before it sends anything (librdkafka retries that on a 500 ms
    // timer), which is start-up, not latency. It ships after the 1 s multi-line idle time.
    std::fs::write(
        &path,
        "2026-11-22 00:00:00,000 INFO  org.apache.flink.runtime.taskmanager.Task [] - warm-up\n",
    )?;
    if reader.next_message(Duration::from_secs(30)).is_none() {
        bail!("live: the warm-up line did not arrive in 30 s");
    }
    let total = rate * seconds as usize;
    let writer = std::thread::spawn(move || -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
        let per_tick = (rate / 100).max(1);
        let start = Instant::now();
        let mut n = 0usize;
        let mut tick = 0u32;
        while n < total {
            let mut chunk = String::new();
            for _ in 0..per_tick.min(total - n) {
                chunk.push_str(&format!(
                    "2026-11-22 00:00:00,000 INFO  org.apache.flink.runtime.taskmanager.Task{:>32} [] - live seq={n} t={}\n",
                    "",
                    unix_micros()
                ));
                n += 1;
            }
            f.write_all(chunk.as_bytes())?;
            tick += 1;
            let next = start + Duration::from_millis(10) * tick;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok(())
    });
    let mut lat = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    while lat.len() < total && Instant::now() < deadline {
        // One at a time: the time read is when this message arrived, not its batch.
        if let Some(p) = reader.next_message(Duration::from_millis(100)) {
            let now = unix_micros();
            let v: serde_json::Value = serde_json::from_slice(&p)?;
            let t = v["message"]
                .as_str()
                .and_then(|m| m.rsplit_once(" t="))
                .and_then(|(_, t)| t.parse::<u64>().ok())
                .context("no t= in a live event")?;
            lat.push(now.saturating_sub(t));
        }
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    if lat.len() < total {
        bail!("live: {} of {total} events arrived", lat.len());
    }
    let cpu = cpu_seconds(agent.pid())?;
    let peak = status_mib(agent.pid(), "VmHWM")?;
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!("| lines/s written | seconds | events | p50 ms | p99 ms | max ms | agent CPU % of a core | peak RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {rate} | {seconds} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {peak:.1} |",
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        cpu / seconds as f64 * 100.0
    );
    Ok(())
}

/// The sidecar with nothing to ship: CPU and RSS over `seconds`, then the same with /metrics
/// scraped every 15 s (Flink unreachable here, so only the agent's own metrics and flink_up).
fn run_idle(agent_bin: &str, bootstrap: &str, seconds: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log_dir = dir.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let port = free_port()?;
    let agent = spawn_agent(agent_bin, bootstrap, "idle", &log_dir, port)?;
    let pid = agent.pid();
    std::thread::sleep(Duration::from_secs(5));
    println!("| phase | seconds | CPU % of a core | RSS MiB |");
    println!("|---|---:|---:|---:|");
    for (phase, scrape) in [
        ("idle, no scrapes", false),
        ("idle, /metrics every 15 s", true),
    ] {
        let c0 = cpu_seconds(pid)?;
        let t0 = Instant::now();
        let mut next_scrape = Instant::now();
        while t0.elapsed() < Duration::from_secs(seconds) {
            if scrape && Instant::now() >= next_scrape {
                http_get(port, "/metrics")?;
                next_scrape += Duration::from_secs(15);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let cpu = cpu_seconds(pid)? - c0;
        println!(
            "| {phase} | {seconds} | {:.2} | {:.1} |",
            cpu / t0.elapsed().as_secs_f64() * 100.0,
            status_mib(agent.pid(), "VmRSS")?
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--write-corpus") {
        args.next();
        let file = args.next().context("--write-corpus FILE [LINES]")?;
        let lines: usize = args
            .next()
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(1_000_000);
        let mut text = String::new();
        let records = corpus::generate(lines, &mut text);
        std::fs::write(&file, &text)?;
        println!("{file}: {} lines, {records} events", text.lines().count());
        return Ok(());
    }
    let agent_bin = args
        .next()
        .context("usage: bench-shipping AGENT_BIN [LINES] [ROUNDS]")?;
    let lines: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2);
    // For profiling sessions: the interleaved rounds only, or the live run only.
    let only = args.next();
    let throughput_only = only.as_deref() == Some("--throughput-only");
    let live_only = only.as_deref() == Some("--live-only");

    let mut text = String::new();
    let records = corpus::generate(lines, &mut text);
    let real_lines = text.lines().count();
    let mb = text.len() as f64 / 1e6;
    let t_mem = Instant::now();
    let events = events_in_memory(&text)?;
    let in_memory_secs = t_mem.elapsed().as_secs_f64();
    if events.len() != records {
        bail!(
            "grouping gave {} events for {records} records",
            events.len()
        );
    }
    let work = tempfile::tempdir()?;
    let broker = Broker::start(work.path())?;
    let bootstrap = broker.bootstrap();
    let broker_pid = broker.pid().context("the broker has no process")?;
    println!(
        "corpus: {real_lines} lines, {records} events, {mb:.1} MB ({:.0} bytes/line), {:.0} MB encoded",
        text.len() as f64 / real_lines as f64,
        events.iter().map(Vec::len).sum::<usize>() as f64 / 1e6
    );
    println!(
        "the agent's grouping, parsing and encoding alone, in memory on one core: {in_memory_secs:.2} s"
    );
    println!();
    println!(
        "| round | shipper | seconds | first ack s | after it s | lines/s | MB/s (log) | CPU s | CPU s/GB | peak RSS MiB | broker CPU s | cores busy |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    let mut steady_ratios = Vec::new();
    for round in (1..=rounds).filter(|_| !live_only) {
        let mut runs = Vec::new();
        for (name, how) in [
            (Ceiling::Threaded.name(), Some(Ceiling::Threaded)),
            (Ceiling::Inline.name(), Some(Ceiling::Inline)),
            ("flink-agent", None),
        ] {
            // Created ahead, so no run's time includes topic auto-creation (0.06-1 s here,
            // at random).
            let topic = format!("round-{round}-{}", runs.len());
            create_topic(&bootstrap, &topic)?;
            let b = cpu_seconds(broker_pid)?;
            let mut run = match how {
                Some(how) => run_ceiling(&bootstrap, &topic, &events, how)?,
                None => run_agent(&agent_bin, &bootstrap, &topic, &text, records)?,
            };
            run.broker_cpu = cpu_seconds(broker_pid)? - b;
            runs.push((name, run));
        }
        for (name, r) in &runs {
            let after = r.after_first_ack();
            println!(
                "| {round} | {name} | {:.2} | {} | {} | {:.0} | {:.1} | {:.2} | {:.1} | {} | {:.2} | {:.2} |",
                r.secs,
                r.first_ack.map_or("n/a".into(), |f| format!("{f:.2}")),
                after.map_or("n/a".into(), |a| format!("{a:.2}")),
                real_lines as f64 / r.secs,
                mb / r.secs,
                r.cpu,
                r.cpu / (mb / 1000.0),
                r.rss
                    .map(|m| format!("{m:.1}"))
                    .unwrap_or_else(|| "n/a (corpus in memory)".into()),
                r.broker_cpu,
                (r.cpu + r.broker_cpu) / r.secs
            );
        }
        // Against the faster ceiling of the round, whichever it was.
        let agent = &runs[2].1;
        let best = |f: &dyn Fn(&Run) -> Option<f64>| {
            runs[..2]
                .iter()
                .filter_map(|(_, r)| f(r))
                .fold(f64::INFINITY, f64::min)
        };
        ratios.push(best(&|r| Some(r.secs)) / agent.secs);
        if let Some(a) = agent.after_first_ack() {
            steady_ratios.push(best(&Run::after_first_ack) / a);
        }
    }
    println!();
    let pct = |v: &[f64]| -> String {
        v.iter()
            .map(|r| format!("{:.0}%", r * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "agent throughput / the faster ceiling's, per round: {} from the start; {} after the first acknowledgement",
        pct(&ratios),
        pct(&steady_ratios)
    );
    if throughput_only {
        return Ok(());
    }
    println!();
    println!(
        "Live: the same kind of lines appended at a fixed rate (written to readable from Kafka)"
    );
    println!();
    run_live(&agent_bin, &bootstrap, 20_000, 10)?;
    if live_only {
        return Ok(());
    }
    println!();
    println!("Idle cost of the sidecar");
    println!();
    run_idle(&agent_bin, &bootstrap, 30)?;
    Ok(())
}
