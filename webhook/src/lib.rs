//! flink-webhook: a mutating admission webhook that gives stock Flink pods user JARs from NFS or a
//! PVC, hostAliases, the company timezone and a log-shipping sidecar. The pure core (policy,
//! annotations, patch engine) does no I/O; admission decoding, the servers, TLS and reloading are
//! the edges.

pub mod admission;
pub mod allow;
pub mod annotations;
pub mod certs;
pub mod cluster;
pub mod detect;
pub mod metrics;
pub mod patch;
pub mod policy;
pub mod preview;
pub mod reload;
pub mod review;
pub mod server;
pub mod state;
pub mod tls;
