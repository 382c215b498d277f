//! The missed-injection detector: with `failurePolicy: Ignore`, a Flink pod admitted while the
//! webhook was unreachable runs without its injection. `serve` watches for such pods (metadata
//! only) and reports each (gauge, Event, log line); `audit` gives the same judgement once, from a
//! terminal.

pub mod audit;
pub mod events;
pub mod inventory;
pub mod judge;
pub mod lease;
pub mod watch;
