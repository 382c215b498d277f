//! flink-logs: a Flink cluster's log events read back from the Kafka topic that flink-agent
//! ships them to, printed as Flink wrote them, for pods that may no longer exist.
//!
//! Pure core (no I/O): [`time`], [`doc`], [`filter`], [`dedup`], [`merge`], [`progress`],
//! [`render`], [`summary`]. I/O at the edges: [`source`] (Kafka) and [`run`] (the read loop,
//! writing to the output); [`cli`] validates the command line.

pub mod cli;
pub mod dedup;
pub mod doc;
pub mod filter;
pub mod merge;
pub mod progress;
pub mod render;
pub mod run;
pub mod source;
pub mod summary;
pub mod time;
