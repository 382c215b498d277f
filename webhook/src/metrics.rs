//! The webhook's Prometheus metrics. Every skip carries a `reason` so an on-call engineer can tell
//! "the policy switched it off" from "the pod already had a volume of that name".

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with a non-empty patch.
    Mutated,
    /// Allowed with no patch: nothing to do, already injected, not a Flink pod or opted out.
    Unchanged,
    Denied,
    /// The request could not be read; answered 4xx.
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Mutated => "mutated",
            Outcome::Unchanged => "unchanged",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub component: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    pub component: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartLabels {
    pub part: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    /// The part, or `pod` when the whole pod was left alone.
    pub part: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Why a request got no AdmissionReview answer: `body_too_large`, `body_timeout`,
/// `body_error` or `overloaded`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

/// `flink_webhook_uninjected_pods`: pods of one namespace and component.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodGroupLabels {
    pub namespace: String,
    pub component: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub latency: Family<ComponentLabels, Histogram>,
    pub parts_injected: Family<PartLabels, Counter>,
    pub skipped: Family<SkipLabels, Counter>,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub tls_reloads: Family<ResultLabels, Counter>,
    pub native_sidecar: Gauge,
    pub certificate_expiry: Gauge,
    pub in_flight: Gauge,
    pub rejected: Family<RejectLabels, Counter>,
    /// No series until the detector's first full list: absent means "not known", not "none".
    pub uninjected: Family<PodGroupLabels, Gauge>,
    pub detector_synced: Gauge,
    pub detector_pods: Gauge,
    pub detector_leader: Gauge,
    pub detector_events: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flink_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "AdmissionReviews answered, by pod component and outcome",
            admissions.clone(),
        );
        let latency = Family::<ComponentLabels, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~1.6 s: the API server gives up after timeoutSeconds anyway.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "admission_duration_seconds",
            "Time from request received to response ready",
            latency.clone(),
        );
        let parts_injected = Family::<PartLabels, Counter>::default();
        registry.register(
            "parts_injected",
            "Parts injected into pods (usrlib, host-aliases, timezone, agent)",
            parts_injected.clone(),
        );
        let skipped = Family::<SkipLabels, Counter>::default();
        registry.register(
            "skipped",
            "Parts or whole pods left alone, by reason (opted_out, not_flink_pod, conflict, disabled_by_policy, already_injected)",
            skipped.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy file reloads by result (success, failure); a failure keeps the last good policy",
            policy_reloads.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Serving certificate reloads by result (success, failure)",
            tls_reloads.clone(),
        );
        let native_sidecar = Gauge::default();
        registry.register(
            "native_sidecar",
            "1 when the cluster-wide policy puts the agent in as a native sidecar (init container, restartPolicy Always)",
            native_sidecar.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (notAfter, Unix time); alert well before it",
            certificate_expiry.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Admission requests being handled",
            in_flight.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "requests_rejected",
            "Admission requests answered with an HTTP error instead of a review (body too large, too slow, unreadable; webhook overloaded)",
            rejected.clone(),
        );
        let uninjected = Family::<PodGroupLabels, Gauge>::default();
        registry.register(
            "uninjected_pods",
            "Flink pods in opted-in namespaces running without the injection the policy would give them (admitted while the webhook was unreachable)",
            uninjected.clone(),
        );
        let detector_synced = Gauge::default();
        registry.register(
            "detector_synced",
            "1 while the missed-injection detector has a current list of Flink pods and namespaces; 0 before the first list and while the API server refuses or is unreachable",
            detector_synced.clone(),
        );
        let detector_pods = Gauge::default();
        registry.register(
            "detector_pods",
            "Flink pods the detector knows of (all namespaces)",
            detector_pods.clone(),
        );
        let detector_leader = Gauge::default();
        registry.register(
            "detector_leader",
            "1 on the replica that holds the detector Lease and sends NotInjected Events",
            detector_leader.clone(),
        );
        let detector_events = Family::<ResultLabels, Counter>::default();
        registry.register(
            "detector_events",
            "NotInjected Events sent, by result (success, failure)",
            detector_events.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        );
        Self {
            registry,
            admissions,
            latency,
            parts_injected,
            skipped,
            policy_reloads,
            tls_reloads,
            native_sidecar,
            certificate_expiry,
            in_flight,
            rejected,
            uninjected,
            detector_synced,
            detector_pods,
            detector_leader,
            detector_events,
        }
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail; an empty body is the worst case.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn reload(family: &Family<ResultLabels, Counter>, ok: bool) {
        family
            .get_or_create(&ResultLabels {
                result: if ok { "success" } else { "failure" }.to_string(),
            })
            .inc();
    }
}
