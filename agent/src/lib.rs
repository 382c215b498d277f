//! flink-agent: ships Flink's log files to Kafka with no loss, and serves metrics.
//!
//! Pure core (no I/O): [`lines`], [`multiline`], [`parse`], [`encode`], and the ordering part of
//! [`checkpoint`]. I/O at the edges: [`tail`] (files), [`kafka`] (producer), [`http`]
//! (listener), [`pipeline`] (wiring, shutdown), with
//! [`inflight`] (backpressure), [`quiet`] (when Flink's files are quiet after SIGTERM) and
//! [`zone`] (the pod's time zone).

pub mod checkpoint;
pub mod config;
pub mod encode;
pub mod flink_rest;
pub mod http;
pub mod inflight;
pub mod kafka;
pub mod lines;
pub mod metrics;
pub mod multiline;
pub mod parse;
pub mod pipeline;
pub mod quiet;
pub mod tail;
pub mod zone;
