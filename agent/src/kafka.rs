//! The Kafka sink: a producer whose delivery reports drive the checkpoint.
//!
//! Each message carries a token of the caller's; librdkafka's delivery report hands it back to
//! a [`DeliveryHandler`] in [`Sink::serve_reports`]. No task or channel per message: with one
//! per message, waking tokio for every acknowledgement cost more CPU than reading, parsing and
//! encoding together (see BENCHMARKS.md).
//!
//! Reports are served on the thread that queues the messages (the runtime's one thread), not
//! on a thread of their own: librdkafka mallocs its copy of a message where it is queued and
//! frees it where its report is served, and glibc's arena lock, taken by both threads for
//! every message, was what made shipping runs fast or slow at random (BENCHMARKS.md).
//!
//! librdkafka drops a message whose delivery fails or times out; the handler gets it back
//! with its payload and the caller re-sends it, so a failed delivery is never counted as sent.
//! An idempotent producer can hit a fatal error (e.g. a broker that lost its producer state);
//! the producer is then recreated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::statistics::Statistics;

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("creating the Kafka producer")]
    Create(#[from] KafkaError),
}

/// The librdkafka settings: safe defaults, then the user's properties, which win.
pub fn client_config(brokers: &str, user: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        // 0 = never give up: the log file is the buffer, and backpressure stops reading while
        // Kafka is away. A user who sets a timeout still loses nothing: failures are re-sent.
        .set("message.timeout.ms", "0")
        .set("linger.ms", "20")
        .set("client.id", "flink-agent")
        // Feeds flink_agent_kafka_brokers_up (AgentContext::stats); cheap at this interval.
        .set("statistics.interval.ms", "5000");
    for (k, v) in user {
        c.set(k, v);
    }
    c
}

/// A short, stable name for a Kafka error, for the `kind` label of send errors: the
/// librdkafka error code when there is one (`MessageTimedOut`, `TopicAuthorizationFailed`).
pub fn error_kind(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => "Other".to_string(),
    }
}

/// Routes librdkafka's logs to tracing and its statistics to the broker gauges. A broker that
/// cannot be reached is something the agent rides out (it stops reading and retries), so
/// librdkafka's errors are warnings here.
pub struct AgentContext<H> {
    metrics: Metrics,
    handler: Arc<H>,
    /// Delivery reports handed to the handler: tells [`Sink::serve_reports`] whether a poll
    /// found any (rdkafka's poll does not say).
    reports: AtomicU64,
}

/// Receives delivery reports, in [`Sink::serve_reports`] (or on the thread that drops a
/// replaced producer): keep it short and non-blocking.
pub trait DeliveryHandler: Send + Sync + 'static {
    /// What the caller attaches to a message and gets back with its report.
    type Token: Send + Sync + 'static;
    fn acknowledged(&self, token: Self::Token);
    /// Called after each [`Sink::serve_reports`]: the latest moment to apply what
    /// `acknowledged` gathered.
    fn reports_done(&self) {}
    /// The message was not delivered (failed, timed out, or purged with its producer).
    fn failed(&self, token: Self::Token, error: &KafkaError, payload: &[u8]);
}

impl<H: DeliveryHandler> ProducerContext for AgentContext<H> {
    type DeliveryOpaque = Box<H::Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Self::DeliveryOpaque) {
        self.reports.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => self.handler.acknowledged(*token),
            Err((error, message)) => {
                self.handler
                    .failed(*token, error, message.payload().unwrap_or_default())
            }
        }
    }
}

impl<H: DeliveryHandler> ClientContext for AgentContext<H> {
    fn stats(&self, statistics: Statistics) {
        // librdkafka lists its bootstrap, internal and logical handles as brokers too (node id
        // -1); only the brokers learned from metadata say whether Kafka is reachable. With
        // sparse connections a broker that leads none of our partitions may stay unconnected.
        let real = statistics.brokers.values().filter(|b| b.nodeid >= 0);
        let (mut known, mut up) = (0i64, 0i64);
        for b in real {
            known += 1;
            if b.state == "UP" {
                up += 1;
            }
        }
        self.metrics.kafka_brokers_known.set(known);
        self.metrics.kafka_brokers_up.set(up);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", facility = fac, "{log_message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let kind = error_kind(&error);
        tracing::warn!(target: "librdkafka", %error, kind, reason, "Kafka client error");
        self.metrics
            .kafka_client_errors
            .get_or_create(&crate::metrics::KindLabel { kind })
            .inc();
    }
}

/// At most this many polls in one [`Sink::serve_reports`]: one poll serves one batch of
/// reports (a produce response's worth), and the runtime's other tasks wait meanwhile.
const MAX_POLLS_PER_SERVE: usize = 64;

type AgentProducer<H> = BaseProducer<AgentContext<H>>;

/// A producer that can be replaced after a fatal error.
pub struct Sink<H: DeliveryHandler> {
    config: ClientConfig,
    topic: String,
    key: String,
    current: Mutex<Arc<AgentProducer<H>>>,
    metrics: Metrics,
    handler: Arc<H>,
}

impl<H: DeliveryHandler> Sink<H> {
    pub fn new(
        config: ClientConfig,
        topic: String,
        key: String,
        metrics: Metrics,
        handler: Arc<H>,
    ) -> Result<Self, SinkError> {
        let producer = Arc::new(Self::create(&config, &metrics, &handler)?);
        prime(&producer, &topic);
        Ok(Self {
            config,
            topic,
            key,
            current: Mutex::new(producer),
            metrics,
            handler,
        })
    }

    fn create(
        config: &ClientConfig,
        metrics: &Metrics,
        handler: &Arc<H>,
    ) -> Result<AgentProducer<H>, KafkaError> {
        config.create_with_context(AgentContext {
            metrics: metrics.clone(),
            handler: handler.clone(),
            reports: AtomicU64::new(0),
        })
    }

    fn current(&self) -> Arc<AgentProducer<H>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queues one message (librdkafka copies the payload); waits while librdkafka's queue is
    /// full and retries other enqueue errors (they are transient or fixed by recreating the
    /// producer). Its delivery report reaches the handler with `token`.
    pub async fn enqueue(&self, payload: &[u8], token: H::Token) {
        let mut backoff = Duration::from_millis(100);
        let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(token))
            .key(self.key.as_str())
            .payload(payload);
        loop {
            let producer = self.current();
            match producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, r)) => {
                    record = r;
                    self.metrics.send_error("enqueue", error_kind(&e));
                    tracing::warn!(error = %e, "cannot queue a message to Kafka; retrying");
                    self.recover_if_fatal();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Serves the delivery reports (and librdkafka's logs, statistics and errors) that have
    /// arrived, without waiting, then lets the handler apply what it gathered. Call it often
    /// while messages are in flight (their window only moves here) and now and then when none
    /// are.
    pub fn serve_reports(&self) {
        let producer = self.current();
        let reports = &producer.context().reports;
        for _ in 0..MAX_POLLS_PER_SERVE {
            let seen = reports.load(Ordering::Relaxed);
            producer.poll(Duration::ZERO);
            if reports.load(Ordering::Relaxed) == seen {
                break;
            }
        }
        self.handler.reports_done();
    }

    /// Fails every message still waiting in librdkafka's queues (not those already sent to a
    /// broker, which keep their order ahead of the queue): their reports come back as
    /// failures. Blocks briefly while librdkafka's threads let go of their queues; call it off
    /// the runtime.
    pub fn purge_queued(&self) {
        self.current().purge(PurgeConfig::default().queue());
    }

    /// Recreates the producer if it is in a fatal state. A new producer is not, so however
    /// many failed deliveries lead here, a fatal producer is replaced once.
    pub fn recover_if_fatal(&self) {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some((code, reason)) = c.client().fatal_error() else {
            return;
        };
        tracing::error!(?code, %reason, "Kafka producer hit a fatal error; recreating it");
        if let Some(old) = self.replace_locked(&mut c) {
            // Dropping a producer purges its queue (every pending delivery fails and is
            // re-sent through the new one) and waits up to 500 ms for those reports: not on
            // the runtime.
            std::thread::spawn(move || drop(old));
        }
    }

    /// Replaces the producer whatever its state: used when deliveries stall although events
    /// are in flight (e.g. a broker that lost its idempotent-producer state answers
    /// UNKNOWN_PRODUCER_ID forever and librdkafka keeps retrying).
    ///
    /// Returns the old producer: dropping it purges its queue, failing every pending delivery
    /// (so they are re-sent), and serves those reports for up to 500 ms, so the caller drops it
    /// off the runtime.
    pub fn replace(&self, why: &str) -> Option<Arc<AgentProducer<H>>> {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        tracing::warn!(reason = why, "recreating the Kafka producer");
        self.replace_locked(&mut c)
    }

    fn replace_locked(&self, c: &mut Arc<AgentProducer<H>>) -> Option<Arc<AgentProducer<H>>> {
        match Self::create(&self.config, &self.metrics, &self.handler) {
            Ok(p) => {
                let p = Arc::new(p);
                prime(&p, &self.topic);
                let old = std::mem::replace(c, p);
                self.metrics.producer_restarts.inc();
                Some(old)
            }
            Err(e) => {
                tracing::error!(error = %e, "recreating the Kafka producer failed");
                None
            }
        }
    }
}

/// Metadata requests made right after a producer is created; see [`prime`].
const PRIME_REQUESTS: usize = 3;
const PRIME_TIMEOUT: Duration = Duration::from_secs(10);

/// Gets the idempotent producer its id as soon as a broker is up. librdkafka asks for one when
/// a metadata response arrives, else on a 500 ms timer; the first response comes over the
/// bootstrap connection, which librdkafka then closes for the broker the response named, so
/// that ask finds no broker up and nothing is sent for 0.5 s, often 1 s. A later request
/// travels over the named broker once it is up (librdkafka waits for one), and its response
/// repeats the ask; the first may still go over the bootstrap connection, hence three.
///
/// On a thread of its own (the requests block) holding only a weak reference, so a producer
/// replaced meanwhile is not kept alive; an unreachable Kafka just ends it at the timeout.
///
/// Public so that the benchmark's bare producer starts as the agent does.
pub fn prime<C, P>(producer: &Arc<P>, topic: &str)
where
    C: ProducerContext + 'static,
    P: Producer<C> + Send + Sync + 'static,
{
    let weak = Arc::downgrade(producer);
    let topic = topic.to_string();
    let spawned = std::thread::Builder::new()
        .name("kafka-prime".into())
        .spawn(move || {
            for _ in 0..PRIME_REQUESTS {
                let Some(producer) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = producer
                    .client()
                    .fetch_metadata(Some(&topic), PRIME_TIMEOUT)
                {
                    tracing::debug!(error = %e, "metadata request at start-up failed");
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "cannot start the metadata request at start-up");
    }
}
