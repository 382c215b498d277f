//! The Kafka side: one consumer that reads the topic's partitions by assignment, from the
//! offsets Kafka's time index gives for the window's start (offsets-for-times), never
//! through a consumer group (no offsets are committed, nothing is shared with other readers).
//!
//! Every call that waits on Kafka has a deadline (`--timeout`): a broker that is down, a
//! wrong address or a refused login ends in an error naming the brokers and librdkafka's
//! last complaint, not in a hang.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, Timestamp};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    /// The user's librdkafka properties (`--kafka-secret-dir`, then `--kafka-property`).
    pub properties: BTreeMap<String, String>,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("creating the Kafka consumer: {0}")]
    Create(String),
    #[error("Kafka at {brokers} did not answer within {timeout:?} ({error}){detail}")]
    Unreachable {
        brokers: String,
        timeout: Duration,
        error: String,
        detail: String,
    },
    #[error("topic {topic:?} does not exist on {brokers}{known}")]
    UnknownTopic {
        topic: String,
        brokers: String,
        known: String,
    },
    #[error("Kafka refused to describe topic {topic:?}: {error}")]
    Refused { topic: String, error: String },
    #[error("looking up the offsets of {topic:?} partition {partition}: {error}{detail}")]
    Offsets {
        topic: String,
        partition: i32,
        error: String,
        detail: String,
    },
}

/// librdkafka's logs go to tracing at debug level (`FLINK_LOGS_LOG=debug` shows them): a
/// broker that is down makes it log every reconnection, and the reader says what matters
/// once, in its error. The last error is kept for that message.
#[derive(Default, Clone)]
pub struct ReaderContext {
    last_error: Arc<Mutex<Option<String>>>,
}

impl ReaderContext {
    fn remember(&self, what: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(what);
        }
    }

    /// `; last error from librdkafka: ...`, or nothing.
    pub fn detail(&self) -> String {
        self.last_error
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .map(|e| format!("; last error from librdkafka: {e}"))
            .unwrap_or_default()
    }
}

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
        ) {
            self.remember(log_message.to_string());
        }
        tracing::debug!(target: "librdkafka", facility = fac, ?level, "{log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.remember(format!("{error}: {reason}"));
        tracing::debug!(target: "librdkafka", %error, reason, "Kafka client error");
    }
}

impl ConsumerContext for ReaderContext {}

/// One thing a poll brought.
pub enum Polled<'a> {
    Message {
        partition: i32,
        offset: i64,
        /// When the agent shipped it (Kafka's CreateTime, or LogAppendTime), in ms.
        kafka_ts: Option<i64>,
        key: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    /// Read to the end of the partition.
    End {
        partition: i32,
    },
    Error(KafkaError),
    Nothing,
}

/// Where one partition's reading starts and, with `--to`, the first offset past the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub partition: i32,
    pub start: i64,
    pub until: Option<i64>,
}

pub struct Source {
    config: ClientConfig,
    consumer: BaseConsumer<ReaderContext>,
    context: ReaderContext,
    settings: KafkaSettings,
}

impl Source {
    pub fn new(settings: KafkaSettings) -> Result<Self, SourceError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &settings.brokers)
            .set("client.id", "flink-logs")
            // librdkafka assigns partitions only in a consumer with a group; the group is
            // never joined (no subscribe) and nothing is committed to it.
            .set("group.id", "flink-logs")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            // Data deleted by retention while it is being read: go on from what is left.
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "false")
            // What librdkafka fetches ahead of the reader: bounds its memory (64 MiB by default).
            .set("queued.max.messages.kbytes", "16384")
            // Once that is full, fetch again as soon as the reader has made room: librdkafka
            // waits a second by default, and reading a topic then took 3 times as long
            // (BENCHMARKS.md).
            .set("fetch.queue.backoff.ms", "10")
            // Followed partitions are asked again this often when there is nothing new.
            .set("fetch.wait.max.ms", "200")
            .set(
                "socket.timeout.ms",
                settings.timeout.as_millis().max(1000).to_string(),
            );
        for (k, v) in &settings.properties {
            c.set(k, v);
        }
        let context = ReaderContext::default();
        let consumer: BaseConsumer<ReaderContext> = c
            .create_with_context(context.clone())
            .map_err(|e| SourceError::Create(e.to_string()))?;
        Ok(Self {
            config: c,
            consumer,
            context,
            settings,
        })
    }

    fn unreachable(&self, error: KafkaError) -> SourceError {
        SourceError::Unreachable {
            brokers: self.settings.brokers.clone(),
            timeout: self.settings.timeout,
            error: error.to_string(),
            detail: self.context.detail(),
        }
    }

    /// The topic's partitions; a clear error if Kafka cannot be reached in time or the topic
    /// does not exist.
    pub fn partitions(&self) -> Result<Vec<i32>, SourceError> {
        let topic = self.settings.topic.as_str();
        let md = self
            .consumer
            .fetch_metadata(Some(topic), self.settings.timeout)
            .map_err(|e| self.unreachable(e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(self.unknown_topic());
        };
        match t.error() {
            None => {}
            Some(code) => {
                let code = RDKafkaErrorCode::from(code);
                if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                    return Err(self.unknown_topic());
                }
                return Err(SourceError::Refused {
                    topic: topic.to_string(),
                    error: code.to_string(),
                });
            }
        }
        let mut parts: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        if parts.is_empty() {
            return Err(self.unknown_topic());
        }
        parts.sort_unstable();
        Ok(parts)
    }

    fn unknown_topic(&self) -> SourceError {
        // The topics that do exist, to spot a typo (a short list; Kafka may hold thousands).
        let known = self
            .consumer
            .fetch_metadata(None, self.settings.timeout)
            .map(|md| {
                let mut names: Vec<&str> = md
                    .topics()
                    .iter()
                    .map(|t| t.name())
                    .filter(|n| !n.starts_with("__"))
                    .collect();
                names.sort_unstable();
                match names.len() {
                    0 => " (it has no topics)".to_string(),
                    n if n <= 20 => format!(" (topics there: {})", names.join(", ")),
                    n => format!(" ({n} topics there, e.g. {})", names[..20].join(", ")),
                }
            })
            .unwrap_or_default();
        SourceError::UnknownTopic {
            topic: self.settings.topic.clone(),
            brokers: self.settings.brokers.clone(),
            known,
        }
    }

    /// Where to read each partition: from the first message written at or after `from`
    /// (ms; the beginning without it) to the first written at or after `until` (None: to
    /// the end).
    pub fn plan(
        &self,
        partitions: &[i32],
        from: Option<i64>,
        until: Option<i64>,
    ) -> Result<Vec<Range>, SourceError> {
        let mut marks = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.settings.topic, p, self.settings.timeout)
                .map_err(|e| self.offsets_error(p, e))?;
            marks.push((p, low, high));
        }
        let starts = from
            .map(|ts| self.offsets_for(partitions, ts))
            .transpose()?;
        let ends = until
            .map(|ts| self.offsets_for(partitions, ts))
            .transpose()?;

        // Kafka answers "no message at or after that time" with -1. tansu (the test broker)
        // answers 0 instead, which would read a partition whose messages are all older from
        // its start, or end a window before it begins. An answer at a partition's first
        // offset is therefore checked against the time of its last message.
        let mut doubtful = Vec::new();
        for &(p, low, high) in &marks {
            let at_low = |found: &Option<BTreeMap<i32, Option<i64>>>| {
                found
                    .as_ref()
                    .and_then(|f| f.get(&p).copied().flatten())
                    .is_some_and(|o| o <= low)
            };
            if low < high && (at_low(&starts) || at_low(&ends)) {
                doubtful.push((p, high - 1));
            }
        }
        let last = self.timestamps_at(&doubtful)?;
        let resolve = |found: &Option<BTreeMap<i32, Option<i64>>>, ts: Option<i64>, p: i32| {
            let o = found.as_ref().and_then(|f| f.get(&p).copied().flatten())?;
            match (last.get(&p), ts) {
                (Some(&last_ts), Some(ts)) if last_ts < ts => None,
                _ => Some(o),
            }
        };
        Ok(marks
            .into_iter()
            .map(|(partition, low, high)| {
                let start = match from {
                    Some(_) => resolve(&starts, from, partition).unwrap_or(high),
                    None => low,
                };
                Range {
                    partition,
                    start: start.max(low),
                    until: resolve(&ends, until, partition).map(|u| u.max(low)),
                }
            })
            .collect())
    }

    fn offsets_error(&self, partition: i32, error: KafkaError) -> SourceError {
        SourceError::Offsets {
            topic: self.settings.topic.clone(),
            partition,
            error: error.to_string(),
            detail: self.context.detail(),
        }
    }

    /// Kafka's time index: per partition, the first offset written at or after `ts` (ms),
    /// None when there is none.
    fn offsets_for(
        &self,
        partitions: &[i32],
        ts: i64,
    ) -> Result<BTreeMap<i32, Option<i64>>, SourceError> {
        let topic = self.settings.topic.as_str();
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(ts))
                .map_err(|e| self.offsets_error(p, e))?;
        }
        let found = self
            .consumer
            .offsets_for_times(tpl, self.settings.timeout)
            .map_err(|e| self.offsets_error(partitions.first().copied().unwrap_or(0), e))?;
        let mut out = BTreeMap::new();
        for e in found.elements() {
            tracing::debug!(partition = e.partition(), ts, offset = ?e.offset(), "offset for time");
            if let Some(err) = e.error().err() {
                return Err(self.offsets_error(e.partition(), err));
            }
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            out.insert(e.partition(), offset);
        }
        Ok(out)
    }

    /// The Kafka timestamps of the messages at these (partition, offset)s, read by a
    /// short-lived consumer of their own.
    fn timestamps_at(&self, at: &[(i32, i64)]) -> Result<BTreeMap<i32, i64>, SourceError> {
        let mut out = BTreeMap::new();
        if at.is_empty() {
            return Ok(out);
        }
        let consumer: BaseConsumer<ReaderContext> = self
            .config
            .create_with_context(self.context.clone())
            .map_err(|e| SourceError::Create(e.to_string()))?;
        let mut tpl = TopicPartitionList::new();
        for &(p, offset) in at {
            tpl.add_partition_offset(&self.settings.topic, p, Offset::Offset(offset))
                .map_err(|e| self.offsets_error(p, e))?;
        }
        consumer.assign(&tpl).map_err(|e| self.unreachable(e))?;
        let deadline = std::time::Instant::now() + self.settings.timeout;
        while out.len() < at.len() {
            if std::time::Instant::now() >= deadline {
                let p = at
                    .iter()
                    .find(|(p, _)| !out.contains_key(p))
                    .map_or(0, |a| a.0);
                return Err(self.offsets_error(p, KafkaError::NoMessageReceived));
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if let Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) = m.timestamp() {
                        out.insert(m.partition(), t);
                    } else {
                        // No time to compare with: keep the broker's answer.
                        out.insert(m.partition(), i64::MAX);
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "reading a partition's last message"),
                None => {}
            }
        }
        Ok(out)
    }

    /// Starts reading these partitions at these offsets (besides any already assigned).
    pub fn assign(&self, starts: &[(i32, i64)]) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        for &(p, offset) in starts {
            tpl.add_partition_offset(&self.settings.topic, p, Offset::Offset(offset))
                .map_err(|e| self.unreachable(e))?;
        }
        self.consumer
            .incremental_assign(&tpl)
            .map_err(|e| self.unreachable(e))
    }

    /// Waits up to `wait` for the next message or event and hands it to `f`.
    pub fn poll<R>(&self, wait: Duration, f: impl FnOnce(Polled<'_>) -> R) -> R {
        match self.consumer.poll(wait) {
            None => f(Polled::Nothing),
            Some(Ok(m)) => {
                let kafka_ts = match m.timestamp() {
                    Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) if t >= 0 => Some(t),
                    _ => None,
                };
                f(Polled::Message {
                    partition: m.partition(),
                    offset: m.offset(),
                    kafka_ts,
                    key: m.key(),
                    payload: m.payload().unwrap_or_default(),
                })
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => f(Polled::End { partition }),
            Some(Err(e)) => f(Polled::Error(e)),
        }
    }

    /// librdkafka's last complaint, for error messages.
    pub fn detail(&self) -> String {
        self.context.detail()
    }

    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }
}
