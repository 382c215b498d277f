//! The Kafka sink: a FutureProducer whose delivery futures drive the checkpoint.
//!
//! librdkafka drops a message whose delivery fails or times out; the caller re-sends it, so a
//! failed delivery is never counted as sent. An idempotent producer can hit a fatal error
//! (e.g. a broker that lost its producer state); the producer is then recreated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
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
#[derive(Clone, Debug, Default)]
pub struct AgentContext {
    metrics: Metrics,
}

impl AgentContext {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl ClientContext for AgentContext {
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
        tracing::warn!(target: "librdkafka", %error, reason, "Kafka client error");
    }
}

struct Current {
    producer: Arc<FutureProducer<AgentContext>>,
    generation: u64,
}

/// A producer that can be replaced after a fatal error.
pub struct Sink {
    config: ClientConfig,
    topic: String,
    key: String,
    current: Mutex<Current>,
    metrics: Metrics,
}

impl Sink {
    pub fn new(
        config: ClientConfig,
        topic: String,
        key: String,
        metrics: Metrics,
    ) -> Result<Self, SinkError> {
        let producer: FutureProducer<AgentContext> =
            config.create_with_context(AgentContext::new(metrics.clone()))?;
        Ok(Self {
            config,
            topic,
            key,
            current: Mutex::new(Current {
                producer: Arc::new(producer),
                generation: 0,
            }),
            metrics,
        })
    }

    fn current(&self) -> (Arc<FutureProducer<AgentContext>>, u64) {
        let c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (c.producer.clone(), c.generation)
    }

    /// Queues one message; waits while librdkafka's queue is full and retries other enqueue
    /// errors (they are transient or fixed by recreating the producer).
    pub async fn enqueue(&self, payload: &[u8]) -> (DeliveryFuture, u64) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let (producer, generation) = self.current();
            let record = FutureRecord::to(&self.topic)
                .key(self.key.as_str())
                .payload(payload);
            match producer.send_result(record) {
                Ok(f) => return (f, generation),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    self.metrics.send_error("enqueue", error_kind(&e));
                    tracing::warn!(error = %e, "cannot queue a message to Kafka; retrying");
                    self.recover(generation);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// After a failed delivery: recreates the producer if it is in a fatal state (once per
    /// generation, however many deliveries report it).
    pub fn recover(&self, generation: u64) {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if c.generation != generation {
            return;
        }
        let Some((code, reason)) = c.producer.client().fatal_error() else {
            return;
        };
        tracing::error!(?code, %reason, "Kafka producer hit a fatal error; recreating it");
        if let Some(old) = self.replace_locked(&mut c) {
            // Dropping a producer purges its queue (every pending delivery fails and is
            // re-sent through the new one) and joins its thread: not on the runtime.
            std::thread::spawn(move || drop(old));
        }
    }

    /// Replaces the producer whatever its state: used when deliveries stall although events
    /// are in flight (e.g. a broker that lost its idempotent-producer state answers
    /// UNKNOWN_PRODUCER_ID forever and librdkafka keeps retrying).
    ///
    /// Returns the old producer: dropping it purges its queue, failing every pending delivery
    /// (so they are re-sent), and joins its thread, so the caller drops it off the runtime.
    pub fn replace(&self, why: &str) -> Option<Arc<FutureProducer<AgentContext>>> {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        tracing::warn!(reason = why, "recreating the Kafka producer");
        self.replace_locked(&mut c)
    }

    fn replace_locked(&self, c: &mut Current) -> Option<Arc<FutureProducer<AgentContext>>> {
        match self
            .config
            .create_with_context(AgentContext::new(self.metrics.clone()))
        {
            Ok(p) => {
                let old = std::mem::replace(&mut c.producer, Arc::new(p));
                c.generation += 1;
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
