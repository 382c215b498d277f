//! admission.k8s.io/v1 AdmissionReview in, AdmissionReview out. Decoding and the decision about
//! what to answer live here; the HTTP server only moves bytes.

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;

use crate::metrics::{self, AdmissionLabels, Metrics, PartLabels, SkipLabels};
use crate::patch::{self, MutationContext, Outcome};
use crate::policy::Policy;

/// The HTTP status and JSON body to send back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A review the webhook cannot answer: 400 with the reason in an AdmissionReview body, so the API
/// server's error (and the user's event) says what was wrong.
fn invalid(reason: String) -> Reply {
    let review = AdmissionResponse::invalid(&reason).into_review();
    Reply {
        status: 400,
        body: serde_json::to_vec(&review).unwrap_or_else(|_| reason.into_bytes()),
    }
}

fn respond(mut response: AdmissionResponse) -> Reply {
    // kube-core serializes the patch as an array of numbers; the API server's Go decoder takes that,
    // but the documented wire form (and what every other webhook sends) is a base64 string.
    let patch = response.patch.take();
    let encoded = serde_json::to_value(response.into_review()).map(|mut review| {
        if let (Some(patch), Some(resp)) = (
            patch,
            review.get_mut("response").and_then(|r| r.as_object_mut()),
        ) {
            use base64::Engine as _;
            resp.insert(
                "patch".into(),
                serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(patch)),
            );
        }
        review
    });
    match encoded.and_then(|review| serde_json::to_vec(&review)) {
        Ok(body) => Reply { status: 200, body },
        Err(e) => Reply {
            status: 500,
            body: format!("{{\"error\":\"encoding response: {e}\"}}").into_bytes(),
        },
    }
}

/// Decodes `body`, runs the patch engine and encodes the answer. Never panics on any input.
pub fn review(
    body: &[u8],
    policy: &Policy,
    ctx: &MutationContext,
    metrics: &Metrics,
) -> (Reply, &'static str) {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "malformed AdmissionReview");
            count(metrics, "unknown", metrics::Outcome::Invalid);
            return (
                invalid(format!("malformed AdmissionReview JSON: {e}")),
                "unknown",
            );
        }
    };
    if review.types.kind != "AdmissionReview" {
        count(metrics, "unknown", metrics::Outcome::Invalid);
        return (
            invalid(format!(
                "expected kind AdmissionReview (admission.k8s.io/v1), got {:?}",
                review.types.kind
            )),
            "unknown",
        );
    }
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            count(metrics, "unknown", metrics::Outcome::Invalid);
            return (
                invalid("AdmissionReview has no request".to_string()),
                "unknown",
            );
        }
    };
    let mut response = AdmissionResponse::from(&req);
    let namespace = req.namespace.clone().unwrap_or_default();
    let uid = req.uid.clone();

    // A webhook configuration that sends more than Pod CREATEs is a mistake to point out, not a
    // reason to block the cluster: allow, and say so.
    if req.kind.kind != "Pod" || !req.kind.group.is_empty() {
        response.warnings = Some(vec![format!(
            "flink-webhook only mutates core/v1 Pods, got {}/{}: check the webhook configuration's rules",
            req.kind.group, req.kind.kind
        )]);
        count(metrics, "other", metrics::Outcome::Unchanged);
        skip(metrics, "pod", "not_a_pod");
        return (respond(response), "other");
    }
    if req.operation != Operation::Create {
        count(metrics, "other", metrics::Outcome::Unchanged);
        return (respond(response), "other");
    }
    let Some(object) = req.object.as_ref() else {
        response.warnings = Some(vec!["AdmissionReview request carries no object".into()]);
        count(metrics, "other", metrics::Outcome::Unchanged);
        return (respond(response), "other");
    };
    let pod = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return (invalid(format!("re-encoding the pod: {e}")), "other"),
    };
    let component = component_label(&pod);
    let pod_name = pod_display_name(&pod, &req.name);

    let outcome = patch::mutate(policy, &namespace, &pod, ctx);
    let (response, result) = match outcome {
        Outcome::NotFlink => {
            skip(metrics, "pod", "not_flink_pod");
            (response, metrics::Outcome::Unchanged)
        }
        Outcome::OptedOut => {
            skip(metrics, "pod", "opted_out");
            (response, metrics::Outcome::Unchanged)
        }
        Outcome::Denied { message } => {
            let mut denied = response.deny(&message);
            denied.result.code = 403;
            denied.result.reason = "Forbidden".into();
            (denied, metrics::Outcome::Denied)
        }
        Outcome::Mutated {
            patch,
            injected,
            skipped,
            warnings,
        } => {
            for part in &injected {
                metrics
                    .parts_injected
                    .get_or_create(&PartLabels {
                        part: part.as_str().to_string(),
                    })
                    .inc();
            }
            for (part, reason) in &skipped {
                skip(metrics, part.as_str(), reason.label());
                if let patch::SkipReason::Conflict(why) = reason {
                    tracing::warn!(uid = %uid, namespace = %namespace, pod = %pod_name,
                        part = part.as_str(), conflict = %why, "part skipped: conflict");
                }
            }
            let mut response = response;
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            if patch.0.is_empty() {
                (response, metrics::Outcome::Unchanged)
            } else {
                match response.with_patch(patch) {
                    Ok(r) => (r, metrics::Outcome::Mutated),
                    Err(e) => {
                        return (
                            invalid(format!("encoding the patch: {e}")),
                            component_static(component),
                        )
                    }
                }
            }
        }
    };
    count(metrics, component, result);
    tracing::info!(uid = %uid, namespace = %namespace, pod = %pod_name, component,
        result = result.as_str(), allowed = response.allowed, "admission");
    (respond(response), component_static(component))
}

fn count(metrics: &Metrics, component: &str, outcome: metrics::Outcome) {
    metrics
        .admissions
        .get_or_create(&AdmissionLabels {
            component: component.to_string(),
            outcome: outcome.as_str().to_string(),
        })
        .inc();
}

fn skip(metrics: &Metrics, part: &str, reason: &str) {
    metrics
        .skipped
        .get_or_create(&SkipLabels {
            part: part.to_string(),
            reason: reason.to_string(),
        })
        .inc();
}

/// Bounded label values: a pod's labels must not create unbounded metric series.
fn component_label(pod: &serde_json::Value) -> &'static str {
    component_static(patch::component(pod))
}

fn component_static(c: &str) -> &'static str {
    match c {
        "jobmanager" => "jobmanager",
        "taskmanager" => "taskmanager",
        _ => "other",
    }
}

/// JobManager pods arrive without a name (the ReplicaSet sets only generateName).
fn pod_display_name(pod: &serde_json::Value, request_name: &str) -> String {
    if !request_name.is_empty() {
        return request_name.to_string();
    }
    match pod
        .pointer("/metadata/generateName")
        .and_then(|v| v.as_str())
    {
        Some(g) => format!("{g}<generated>"),
        None => "<unnamed>".to_string(),
    }
}
