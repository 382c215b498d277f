//! The agent's own metrics (`flink_agent_*`), registered in a prometheus-client registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabel {
    pub path: String,
}

/// Why a send failed: `stage` is `enqueue` (librdkafka refused the message) or `delivery`
/// (Kafka or librdkafka failed it later); `kind` is librdkafka's error code, e.g.
/// `MessageTimedOut`, so a dashboard can tell an outage from a misconfiguration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SendErrorLabel {
    pub stage: &'static str,
    pub kind: String,
}

/// A client-level Kafka error (not tied to one message): `kind` is librdkafka's error code,
/// e.g. `AllBrokersDown`, `Authentication`, `BrokerTransportFailure`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    pub version: &'static str,
}

/// Every metric the agent updates; cheap to clone (all handles are Arcs inside).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub lines_read: Counter,
    pub bytes_read: Counter,
    pub events_sent: Counter,
    pub bytes_sent: Counter,
    pub send_errors: Family<SendErrorLabel, Counter>,
    pub events_in_flight: Gauge,
    pub bytes_in_flight: Gauge,
    pub unshipped_bytes: Family<FileLabel, Gauge>,
    pub last_ack_timestamp: Gauge<f64, AtomicU64>,
    pub files_tailed: Gauge,
    pub rotations: Counter,
    pub truncations: Counter,
    pub lost_bytes: Counter,
    pub lines_split: Counter,
    pub checkpoint_writes: Counter,
    pub checkpoint_failures: Counter,
    pub producer_restarts: Counter,
    pub read_errors: Counter,
    pub files_skipped: Counter,
    pub files_deferred: Counter,
    pub events_truncated: Counter,
    pub kafka_client_errors: Family<KindLabel, Counter>,
    pub kafka_brokers_up: Gauge,
    pub kafka_brokers_known: Gauge,
}

impl Metrics {
    /// Creates the metrics and a registry holding them under the `flink_agent` prefix.
    pub fn new() -> (Self, Registry) {
        let m = Metrics::default();
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("flink_agent");
        r.register(
            "lines_read",
            "Lines read from log files",
            m.lines_read.clone(),
        );
        r.register(
            "bytes_read",
            "Bytes read from log files",
            m.bytes_read.clone(),
        );
        r.register(
            "events_sent",
            "Events acknowledged by Kafka",
            m.events_sent.clone(),
        );
        r.register(
            "bytes_sent",
            "Bytes of events acknowledged by Kafka",
            m.bytes_sent.clone(),
        );
        r.register(
            "send_errors",
            "Failed Kafka sends and deliveries by stage and librdkafka error (each is retried)",
            m.send_errors.clone(),
        );
        r.register(
            "events_in_flight",
            "Events sent to Kafka and not yet acknowledged",
            m.events_in_flight.clone(),
        );
        r.register(
            "bytes_in_flight",
            "Bytes sent to Kafka and not yet acknowledged",
            m.bytes_in_flight.clone(),
        );
        r.register(
            "unshipped_bytes",
            "Bytes of a file not yet acknowledged by Kafka",
            m.unshipped_bytes.clone(),
        );
        r.register(
            "last_ack_timestamp_seconds",
            "Unix time of the last Kafka acknowledgement (to the second)",
            m.last_ack_timestamp.clone(),
        );
        r.register(
            "files_tailed",
            "Files open for reading",
            m.files_tailed.clone(),
        );
        r.register(
            "rotations",
            "Tailed files renamed or deleted (rotation)",
            m.rotations.clone(),
        );
        r.register(
            "truncations",
            "Tailed files truncated or rewritten",
            m.truncations.clone(),
        );
        r.register(
            "lost_bytes",
            "Bytes of files that disappeared before they were shipped",
            m.lost_bytes.clone(),
        );
        r.register(
            "lines_split",
            "Lines longer than --max-line-bytes, split into pieces",
            m.lines_split.clone(),
        );
        r.register(
            "checkpoint_writes",
            "State file writes",
            m.checkpoint_writes.clone(),
        );
        r.register(
            "checkpoint_failures",
            "Failed state file writes",
            m.checkpoint_failures.clone(),
        );
        r.register(
            "producer_restarts",
            "Kafka producers recreated after a fatal error",
            m.producer_restarts.clone(),
        );
        r.register(
            "read_errors",
            "Errors reading or listing log files",
            m.read_errors.clone(),
        );
        r.register(
            "events_truncated",
            "Events whose message was cut to fit Kafka's message.max.bytes (flagged log.flags: truncated)",
            m.events_truncated.clone(),
        );
        r.register(
            "files_skipped",
            "Entries of the log dir with an included name that are not regular files (symlinks, directories, FIFOs): never read",
            m.files_skipped.clone(),
        );
        r.register(
            "files_deferred",
            "New log files not opened at a scan because --max-files were open and none of them was released (looked at again at the next scan)",
            m.files_deferred.clone(),
        );
        r.register(
            "kafka_client_errors",
            "Kafka client errors not tied to one message (connection, authentication, all brokers down), by librdkafka error code",
            m.kafka_client_errors.clone(),
        );
        r.register(
            "kafka_brokers_up",
            "Kafka brokers the producer is connected to (librdkafka state UP); 0 while Kafka is unreachable",
            m.kafka_brokers_up.clone(),
        );
        r.register(
            "kafka_brokers_known",
            "Kafka brokers the producer learned from cluster metadata",
            m.kafka_brokers_known.clone(),
        );
        let build: Family<BuildLabel, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "The agent's version", build);
        (m, root)
    }

    /// Counts one failed send.
    pub fn send_error(&self, stage: &'static str, kind: String) {
        self.send_errors
            .get_or_create(&SendErrorLabel { stage, kind })
            .inc();
    }
}
