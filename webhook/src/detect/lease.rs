//! One replica gives missed pods their Events: the holder of a `coordination.k8s.io/v1` Lease.
//! A small lease of our own rather than a crate: it is three calls (get, create, replace with the
//! resourceVersion read), and the API server's optimistic concurrency does the rest: of two
//! replicas racing, one gets `409 Conflict`/`AlreadyExists` and stays a follower.
//!
//! The Lease is never deleted, so its `creationTimestamp` is the detector's install time: pods
//! created before it could not have been injected and are not reported as missed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

pub const NAME: &str = "flink-injector-detector";
pub const DURATION_SECONDS: i32 = 15;
/// A third of the duration, as client-go's leader election does: two renewals may fail in a row.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading Lease {namespace}/{NAME}: {source}")]
    Get {
        namespace: String,
        source: kube::Error,
    },
    #[error("writing Lease {namespace}/{NAME}: {source}")]
    Write {
        namespace: String,
        source: kube::Error,
    },
}

/// Holding or not, and when the Lease was created (the install time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub leader: bool,
    pub created: Option<i64>,
}

pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    identity: String,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Elector {
    pub fn new(client: kube::Client, namespace: &str, identity: &str) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(DURATION_SECONDS),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: (transitions > 0).then_some(transitions),
            ..Default::default()
        }
    }

    /// One round: take the Lease if it is free or expired, renew it if ours.
    pub async fn try_acquire(&self) -> Result<Standing, LeaseError> {
        let now = Timestamp::now();
        let get_err = |source| LeaseError::Get {
            namespace: self.namespace.clone(),
            source,
        };
        let write_err = |source| LeaseError::Write {
            namespace: self.namespace.clone(),
            source,
        };
        let current = match self.api.get(NAME).await {
            Ok(lease) => lease,
            Err(e) if is_not_found(&e) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(NAME.to_string()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(made) => Ok(Standing {
                        leader: true,
                        created: created(&made),
                    }),
                    // Another replica created it between our get and create.
                    Err(e) if is_conflict(&e) => Ok(Standing {
                        leader: false,
                        created: None,
                    }),
                    Err(e) => Err(write_err(e)),
                };
            }
            Err(e) => return Err(get_err(e)),
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => {
                renewed.0.as_second() + i64::from(secs) < now.as_second()
            }
            _ => true,
        };
        let created_at = created(&current);
        if !ours && !holder.is_empty() && !expired {
            return Ok(Standing {
                leader: false,
                created: created_at,
            });
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.clone()
        } else {
            None
        };
        let mut next = current.clone();
        next.spec = Some(self.spec(now, acquired, transitions));
        // `replace` sends the resourceVersion we read: a replica that wrote in between makes
        // this a 409, and it keeps the Lease.
        match self.api.replace(NAME, &PostParams::default(), &next).await {
            Ok(_) => Ok(Standing {
                leader: true,
                created: created_at,
            }),
            Err(e) if is_conflict(&e) => Ok(Standing {
                leader: false,
                created: created_at,
            }),
            Err(e) => Err(write_err(e)),
        }
    }

    /// Renews or contends every `RENEW_EVERY`, publishing the standing in `leader`. A failed
    /// round (no RBAC, API server away) makes this replica a follower until one succeeds:
    /// better no Events than Events from two replicas.
    pub async fn run(
        self,
        leader: Arc<AtomicBool>,
        install_time: tokio::sync::watch::Sender<Option<i64>>,
    ) {
        let mut failing = false;
        loop {
            match self.try_acquire().await {
                Ok(standing) => {
                    if failing {
                        tracing::info!(lease = NAME, "detector lease reachable again");
                        failing = false;
                    }
                    let was = leader.swap(standing.leader, Ordering::SeqCst);
                    if was != standing.leader {
                        tracing::info!(lease = NAME, identity = %self.identity,
                            leader = standing.leader, "detector lease standing changed");
                    }
                    if let Some(t) = standing.created {
                        install_time.send_if_modified(|old| {
                            let changed = *old != Some(t);
                            *old = Some(t);
                            changed
                        });
                    }
                }
                Err(e) => {
                    leader.store(false, Ordering::SeqCst);
                    if !failing {
                        tracing::warn!(error = %e,
                            "detector lease failed; this replica sends no NotInjected Events until it works (RBAC: leases get/create/update in this namespace)");
                        failing = true;
                    }
                }
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }
}

fn created(lease: &Lease) -> Option<i64> {
    lease
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
}
