//! A real Kafka-protocol broker (tansu, memory storage) on 127.0.0.1, and a reader of a topic.
//!
//! tansu's consumer groups are unreliable, so the reader uses partition assignment: it assigns
//! every partition of the topic from the beginning and re-checks the metadata as it polls (the
//! topic may be created by the agent's first message, or again after a broker restart, since
//! memory storage starts empty).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::{free_port, tool, wait_for_port, ChildGuard};

/// A tansu broker process; killed when dropped.
pub struct Broker {
    pub port: u16,
    child: Option<ChildGuard>,
    log: PathBuf,
}

impl Broker {
    /// Starts a broker on a free port.
    pub fn start(log_dir: &std::path::Path) -> Result<Self> {
        Self::start_on(free_port()?, log_dir)
    }

    /// Starts a broker on `port` (to restart one where clients expect it).
    pub fn start_on(port: u16, log_dir: &std::path::Path) -> Result<Self> {
        let log = log_dir.join(format!("tansu-{port}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new(tool("bin/tansu")?);
        cmd.arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = ChildGuard::spawn("tansu", &mut cmd)?;
        wait_for_port(port, Duration::from_secs(20))?;
        Ok(Self {
            port,
            child: Some(child),
            log,
        })
    }

    /// The broker's process id (None once stopped): the benchmarks count its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (its memory storage is lost with it).
    pub fn stop(&mut self) {
        self.child.take();
    }

    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }
}

/// Creates a topic with one partition (for brokers or tests that do not auto-create).
pub fn create_topic(bootstrap: &str, topic: &str) -> Result<()> {
    create_topic_with(bootstrap, topic, 1)
}

/// Creates a topic with `partitions` partitions.
pub fn create_topic_with(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// Reads a topic from the beginning, all partitions, by assignment.
pub struct TopicReader {
    consumer: BaseConsumer,
    topic: String,
    assigned: HashSet<i32>,
    last_refresh: Option<Instant>,
}

impl TopicReader {
    pub fn new(bootstrap: &str, topic: &str) -> Result<Self> {
        Self::with_fetch_wait(bootstrap, topic, 500)
    }

    /// A reader whose fetches return after at most `fetch_wait_ms` (librdkafka's default 500 ms
    /// would dominate a latency measurement: tansu answers a fetch at its max wait).
    pub fn with_fetch_wait(bootstrap: &str, topic: &str, fetch_wait_ms: u32) -> Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
            .set("group.id", "flink-injector-tests")
            .set("enable.auto.commit", "false")
            // After a broker restart the topic is new and starts at offset 0 again.
            .set("auto.offset.reset", "earliest")
            .create()
            .context("creating the test consumer")?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            assigned: HashSet::new(),
            last_refresh: None,
        })
    }

    fn refresh(&mut self) {
        // Metadata is asked for only until the topic exists: librdkafka 2.12 has crashed
        // (strcmp on a NULL topic name in its metadata cache) on a tansu metadata answer
        // around a broker restart, so the test client keeps those requests to a minimum.
        if !self.assigned.is_empty()
            || self
                .last_refresh
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_refresh = Some(Instant::now());
        let Ok(md) = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(2))
        else {
            return;
        };
        let mut parts: Vec<i32> = Vec::new();
        for t in md.topics() {
            if t.name() == self.topic && t.error().is_none() {
                parts.extend(t.partitions().iter().map(|p| p.id()));
            }
        }
        if parts.iter().all(|p| self.assigned.contains(p)) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Beginning);
        }
        if self.consumer.assign(&tpl).is_ok() {
            self.assigned = parts.into_iter().collect();
        }
    }

    /// Waits until the topic's partitions are assigned and fetching has begun, so that a
    /// latency measurement does not include the reader's own start (~0.5 s).
    pub fn wait_ready(&mut self, max: Duration) -> Result<()> {
        let deadline = Instant::now() + max;
        while self.assigned.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "topic {} has no partitions",
                self.topic
            );
            self.refresh();
            std::thread::sleep(Duration::from_millis(50));
        }
        // The first polls connect and start fetching; the topic is empty, so nothing is lost.
        while Instant::now() < deadline {
            if self.consumer.poll(Duration::from_millis(100)).is_some() {
                anyhow::bail!("wait_ready on a topic that already holds messages");
            }
            if self
                .last_refresh
                .is_some_and(|t| t.elapsed() > Duration::from_secs(1))
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The next message, waiting up to `wait` for it: for timing each message as it arrives
    /// (`poll_for` hands over a batch).
    pub fn next_message(&mut self, wait: Duration) -> Option<Vec<u8>> {
        self.refresh();
        match self.consumer.poll(wait) {
            Some(Ok(m)) => Some(m.payload().map(<[u8]>::to_vec).unwrap_or_default()),
            Some(Err(_)) | None => None,
        }
    }

    /// Polls for up to `max_wait`; returns the payloads received.
    pub fn poll_for(&mut self, max_wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + max_wait;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            self.refresh();
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(m.payload().map(<[u8]>::to_vec).unwrap_or_default()),
                Some(Err(_)) | None => {
                    if !out.is_empty() {
                        // Return what arrived so the caller can check progress.
                        break;
                    }
                }
            }
        }
        out
    }

    /// After the messages waited for arrived: a duplicate or a stray message would come right
    /// behind them, so read on until 2 s pass with nothing new (5 s at most).
    pub fn settle(&mut self, all: &mut Vec<serde_json::Value>) -> Result<()> {
        self.read_until(all, Duration::from_secs(2), Duration::from_secs(5), |_| {
            false
        })
    }

    /// Reads until `done(all so far)` is true or nothing new arrived for `idle`;
    /// gives up after `max`. Returns everything read, parsed as JSON.
    pub fn read_until(
        &mut self,
        all: &mut Vec<serde_json::Value>,
        idle: Duration,
        max: Duration,
        mut done: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last_new = Instant::now();
        loop {
            if done(all) {
                return Ok(());
            }
            if last_new.elapsed() > idle || start.elapsed() > max {
                return Ok(());
            }
            let batch = self.poll_for(Duration::from_millis(500));
            if !batch.is_empty() {
                last_new = Instant::now();
            }
            for p in batch {
                let v: serde_json::Value = serde_json::from_slice(&p).with_context(|| {
                    format!("message is not JSON: {}", String::from_utf8_lossy(&p))
                })?;
                all.push(v);
            }
        }
    }
}
