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

/// Every metric the agent updates; cheap to clone (all handles are Arcs inside).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub lines_read: Counter,
    pub bytes_read: Counter,
    pub events_sent: Counter,
    pub bytes_sent: Counter,
    pub send_errors: Counter,
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
            "Failed Kafka sends and deliveries (each is retried)",
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
            "Unix time of the last Kafka acknowledgement",
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
        (m, root)
    }
}
