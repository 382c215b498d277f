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
use flink_injector_tests::broker::{create_topic, Broker, TopicReader};
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
            .envs(flink_injector_tests::AGENT_ALLOCATOR_ENV)
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

/// The corpus, cut into the chunks a writer appends every [`TICK`] at a fixed line rate, and
/// where each record (event) starts, for finding the record an event read from Kafka is.
struct LiveCorpus {
    text: String,
    lines: usize,
    /// Byte ranges of `text`, one per tick, ending on line ends.
    chunks: Vec<std::ops::Range<usize>>,
    /// Each record's first byte, ascending.
    starts: Vec<u64>,
    /// The index in `starts` of the first record of each chunk (and the total at the end).
    first_record: Vec<usize>,
}

const TICK: Duration = Duration::from_millis(10);

impl LiveCorpus {
    fn new(rate: usize, seconds: u64) -> LiveCorpus {
        let mut text = String::new();
        corpus::generate(rate * seconds as usize, &mut text);
        let per_tick = (rate as f64 * TICK.as_secs_f64()).max(1.0) as usize;
        let (mut chunks, mut starts, mut first_record) = (Vec::new(), Vec::new(), Vec::new());
        let (mut chunk_start, mut in_chunk, mut pos, mut lines) = (0, 0, 0, 0);
        for line in text.split_inclusive('\n') {
            if in_chunk == 0 {
                first_record.push(starts.len());
            }
            // Every record of the corpus starts with its timestamp; no trace line does.
            if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                starts.push(pos as u64);
            }
            pos += line.len();
            lines += 1;
            in_chunk += 1;
            if in_chunk == per_tick {
                chunks.push(chunk_start..pos);
                (chunk_start, in_chunk) = (pos, 0);
            }
        }
        if in_chunk > 0 {
            chunks.push(chunk_start..pos);
        }
        first_record.push(starts.len());
        LiveCorpus {
            text,
            lines,
            chunks,
            starts,
            first_record,
        }
    }

    /// The record that starts at `offset` bytes into the corpus.
    fn record_at(&self, offset: u64) -> Option<usize> {
        self.starts.binary_search(&offset).ok()
    }
}

/// What a live run measured: latencies in µs, sorted, and the shipper's own costs.
struct LiveRun {
    shipper: &'static str,
    latencies: Vec<u64>,
    /// From the first chunk written to the last event but one read: the file's last record
    /// waits for the multi-line idle time, which is in the max latency, not the rate.
    secs: f64,
    cpu: Option<f64>,
    rss: Option<f64>,
}

/// Writes the corpus chunk by chunk at the tick rate through `emit` (which appends to the log
/// file, or hands the chunk's events to a producer), noting when each record was released;
/// meanwhile reads the topic and times every event from its record's release to its arrival.
/// Latency is keyed on `log.offset` (`base` is where the corpus starts in the shipper's file),
/// so a multi-line record is timed from its first line, as a person waiting for it would.
fn live_run(
    corpus: &Arc<LiveCorpus>,
    reader: &mut TopicReader,
    base: u64,
    mut emit: impl FnMut(usize) -> Result<()> + Send + 'static,
) -> Result<(Vec<u64>, f64)> {
    let released: Arc<Vec<AtomicU64>> = Arc::new(
        (0..corpus.starts.len())
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let writer = {
        let (corpus, released) = (corpus.clone(), released.clone());
        std::thread::spawn(move || -> Result<()> {
            let start = Instant::now();
            for tick in 0..corpus.chunks.len() {
                emit(tick)?;
                let now = unix_micros();
                for r in corpus.first_record[tick]..corpus.first_record[tick + 1] {
                    released[r].store(now, Ordering::Release);
                }
                let next = start + TICK * (tick as u32 + 1);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            Ok(())
        })
    };
    let total = corpus.starts.len();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut seen = vec![false; total];
    let mut lat = Vec::with_capacity(total);
    let mut secs = None;
    while lat.len() < total && Instant::now() < deadline {
        // One at a time: the time read is when this message arrived, not its batch.
        let Some(p) = reader.next_message(Duration::from_millis(100)) else {
            continue;
        };
        let now = unix_micros();
        let v: serde_json::Value = serde_json::from_slice(&p)?;
        let offset = v["log"]["offset"]
            .as_u64()
            .and_then(|o| o.checked_sub(base))
            .context("a live event without log.offset")?;
        let record = corpus
            .record_at(offset)
            .with_context(|| format!("no record starts at offset {offset}"))?;
        if std::mem::replace(&mut seen[record], true) {
            continue; // at-least-once: a duplicate is not a second latency
        }
        let written = released[record].load(Ordering::Acquire);
        lat.push(now.saturating_sub(written));
        if lat.len() + 1 == total {
            secs = Some(started.elapsed().as_secs_f64());
        }
    }
    let secs = secs.unwrap_or_else(|| started.elapsed().as_secs_f64());
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    if lat.len() < total {
        bail!("live: {} of {total} events arrived", lat.len());
    }
    lat.sort_unstable();
    Ok((lat, secs))
}

/// A reader on a new topic, assigned and fetching before anything is sent. Auto-creation would
/// hold the first 0.06-1 s of events back and decide the p99; so would the reader's own start.
fn fresh_reader(bootstrap: &str, topic: &str) -> Result<TopicReader> {
    create_topic(bootstrap, topic)?;
    let mut reader = TopicReader::with_fetch_wait(bootstrap, topic, 5)?;
    reader.wait_ready(Duration::from_secs(20))?;
    Ok(reader)
}

/// The latency at quantile `q` of sorted µs, in ms.
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1000.0
}

/// The agent tailing the corpus as a writer appends it at `rate` lines/s.
fn live_agent(
    agent_bin: &str,
    bootstrap: &str,
    corpus: &Arc<LiveCorpus>,
    topic: &str,
) -> Result<LiveRun> {
    let dir = tempfile::tempdir()?;
    let log_dir = dir.path().join("log");
    std::fs::create_dir(&log_dir)?;
    let port = free_port()?;
    let mut reader = fresh_reader(bootstrap, topic)?;
    let agent = spawn_agent(agent_bin, bootstrap, topic, &log_dir, port)?;
    let path = log_dir.join("flink--taskmanager-0-live.log");
    // One line first, read back before the clock starts: the producer's id and the first
    // connection are start-up, not latency. It ships after the 1 s multi-line idle time.
    let warm_up =
        "2026-11-22 00:00:00,000 INFO  org.apache.flink.runtime.taskmanager.Task [] - warm-up\n";
    std::fs::write(&path, warm_up)?;
    if reader.next_message(Duration::from_secs(30)).is_none() {
        bail!("live: the warm-up line did not arrive in 30 s");
    }
    let cpu0 = cpu_seconds(agent.pid())?;
    let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
    let text = corpus.clone();
    let (latencies, secs) = live_run(corpus, &mut reader, warm_up.len() as u64, move |tick| {
        use std::io::Write;
        Ok(file.write_all(text.text[text.chunks[tick].clone()].as_bytes())?)
    })?;
    Ok(LiveRun {
        shipper: "flink-agent",
        latencies,
        secs,
        cpu: Some(cpu_seconds(agent.pid())? - cpu0),
        rss: Some(status_mib(agent.pid(), "VmHWM")?),
    })
}

/// The bare producer sending each chunk's events, grouped and encoded ahead, as the agent
/// would have read them: the latency floor of the broker, librdkafka's linger and the reader.
fn live_ceiling(bootstrap: &str, corpus: &Arc<LiveCorpus>, topic: &str) -> Result<LiveRun> {
    let mut reader = fresh_reader(bootstrap, topic)?;
    let events = Arc::new(events_in_memory(&corpus.text)?);
    if events.len() != corpus.starts.len() {
        bail!(
            "live: {} events for {} records",
            events.len(),
            corpus.starts.len()
        );
    }
    let config = flink_agent::kafka::client_config(bootstrap, &Default::default());
    let producer: Arc<ThreadedProducer<CountingRef>> = Arc::new(
        ThreadedProducer::from_config_and_context(&config, CountingRef::default())?,
    );
    flink_agent::kafka::prime(&producer, topic);
    // The same warm-up as the agent's: one event through before the clock starts.
    producer
        .send(
            BaseRecord::to(topic)
                .key("bench-pod")
                .payload(b"{}".as_slice()),
        )
        .map_err(|(e, _)| e)?;
    if reader.next_message(Duration::from_secs(30)).is_none() {
        bail!("live ceiling: the warm-up event did not arrive in 30 s");
    }
    let (sender, topic_owned, c) = (producer.clone(), topic.to_string(), corpus.clone());
    let (latencies, secs) = live_run(corpus, &mut reader, 0, move |tick| {
        let records = c.first_record[tick]..c.first_record[tick + 1];
        send_all(
            &events[records],
            &topic_owned,
            |r| sender.send(r).err().map(|(_, r)| r),
            || {},
        )
    })?;
    producer.flush(Duration::from_secs(30))?;
    Ok(LiveRun {
        shipper: "bare rdkafka producer (events from memory)",
        latencies,
        secs,
        cpu: None,
        rss: None,
    })
}

/// The corpus appended at a fixed rate: first the bare producer, then the agent.
fn run_live(agent_bin: &str, bootstrap: &str, rate: usize, seconds: u64) -> Result<()> {
    let corpus = Arc::new(LiveCorpus::new(rate, seconds));
    let runs = [
        live_ceiling(bootstrap, &corpus, "live-ceiling")?,
        live_agent(agent_bin, bootstrap, &corpus, "live-agent")?,
    ];
    let mb = corpus.text.len() as f64 / 1e6;
    println!(
        "{} lines ({} events, {mb:.1} MB) in {} chunks of {} ms, {rate} lines/s",
        corpus.lines,
        corpus.starts.len(),
        corpus.chunks.len(),
        TICK.as_millis()
    );
    println!();
    println!("| shipper | seconds | lines/s | MB/s (log) | p50 ms | p99 ms | max ms | CPU s | CPU s/GB | CPU % of a core | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        let pct = |q: f64| quantile_ms(&r.latencies, q);
        let or_na = |v: Option<String>| v.unwrap_or_else(|| "n/a".into());
        println!(
            "| {} | {:.2} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            r.shipper,
            r.secs,
            corpus.lines as f64 / r.secs,
            mb / r.secs,
            pct(0.5),
            pct(0.99),
            pct(1.0),
            or_na(r.cpu.map(|c| format!("{c:.2}"))),
            or_na(r.cpu.map(|c| format!("{:.1}", c / (mb / 1000.0)))),
            or_na(r.cpu.map(|c| format!("{:.1}", c / r.secs * 100.0))),
            or_na(r.rss.map(|m| format!("{m:.1}"))),
        );
    }
    let (floor, agent) = (&runs[0].latencies, &runs[1].latencies);
    let gap = |q: f64| quantile_ms(agent, q) - quantile_ms(floor, q);
    println!();
    println!(
        "the agent's latency less the bare producer's: p50 {:+.1} ms, p99 {:+.1} ms",
        gap(0.5),
        gap(0.99)
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
        "Live: the same corpus appended at a fixed rate (record written to event readable from Kafka)"
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
